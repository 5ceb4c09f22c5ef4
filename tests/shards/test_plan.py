"""Lifecycle plans compiled from kube-mock's annotations (shards._plan)."""

from __future__ import annotations

import pytest

from fleet.errors import InputError
from shards._plan import (
    ANNOTATION_DELAY_FAILED,
    ANNOTATION_DELAY_RUNNING,
    ANNOTATION_DELAY_SUCCEEDED,
    ANNOTATION_MOCK_STATUS,
    ANNOTATION_POD_IPS,
    COMPLETED,
    CONTAINER_CREATING,
    INIT_COMPLETED,
    POD_INITIALIZING,
    RUNNING_NOW,
    RUNNING_READY,
    ContainerState,
    Plan,
    Step,
    compile_plan,
    parse_pod_ips,
)

R, S, F = ANNOTATION_DELAY_RUNNING, ANNOTATION_DELAY_SUCCEEDED, ANNOTATION_DELAY_FAILED


def timeline(plan: Plan) -> list[tuple[float, str]]:
    return [(step.at, step.phase) for step in plan.steps]


def test_no_annotation_is_running_at_once() -> None:
    plan = compile_plan({"unrelated": "x"})
    assert plan is RUNNING_NOW
    step = plan.state_at(0.0)
    assert (step.phase, step.containers, step.started_at) == ("Running", RUNNING_READY, 0.0)
    assert plan.next_change_after(0.0) is None


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({R: "10s"}, [(0.0, "Pending"), (10.0, "Running")]),
        ({S: "10s"}, [(0.0, "Pending"), (10.0, "Succeeded")]),
        ({F: "10s"}, [(0.0, "Pending"), (10.0, "Failed")]),
        ({R: "10s", S: "30s"}, [(0.0, "Pending"), (10.0, "Running"), (30.0, "Succeeded")]),
        ({R: "10s", F: "1m"}, [(0.0, "Pending"), (10.0, "Running"), (60.0, "Failed")]),
        # the first terminal state sticks: nothing after it
        ({R: "20s", S: "10s"}, [(0.0, "Pending"), (10.0, "Succeeded")]),
        ({R: "20s", F: "10s"}, [(0.0, "Pending"), (10.0, "Failed")]),
        ({S: "10s", F: "20s"}, [(0.0, "Pending"), (10.0, "Succeeded")]),
        ({S: "20s", F: "10s"}, [(0.0, "Pending"), (10.0, "Failed")]),
        ({R: "5s", S: "20s", F: "10s"}, [(0.0, "Pending"), (5.0, "Running"), (10.0, "Failed")]),
        # equal delays: terminal beats Running, Succeeded beats Failed (kube-mock's order)
        ({R: "10s", S: "10s"}, [(0.0, "Pending"), (10.0, "Succeeded")]),
        ({S: "10s", F: "10s"}, [(0.0, "Pending"), (10.0, "Succeeded")]),
        ({R: "10s", F: "10s"}, [(0.0, "Pending"), (10.0, "Failed")]),
        # a zero delay means no Pending step
        ({R: "0s"}, [(0.0, "Running")]),
        ({R: "0", S: "1m30s"}, [(0.0, "Running"), (90.0, "Succeeded")]),
        ({F: "0s"}, [(0.0, "Failed")]),
        ({R: "500ms", S: "1.5h"}, [(0.0, "Pending"), (0.5, "Running"), (5400.0, "Succeeded")]),
    ],
)
def test_every_combination(annotations: dict[str, str], expected: list[tuple[float, str]]) -> None:
    assert timeline(compile_plan(annotations)) == expected


def test_state_at_and_next_change() -> None:
    plan = compile_plan({R: "10s", S: "30s"})
    pending = plan.state_at(0.0)
    assert pending.phase == "Pending"
    assert pending.containers == CONTAINER_CREATING
    assert pending.init_containers == POD_INITIALIZING
    assert pending.started_at is None
    assert plan.state_at(9.999).phase == "Pending"
    assert plan.state_at(10.0).phase == "Running"  # a delay has passed at its instant
    assert plan.state_at(29.0).containers == RUNNING_READY
    done = plan.state_at(30.0)
    assert (done.phase, done.containers, done.init_containers) == (
        "Succeeded",
        COMPLETED,
        INIT_COMPLETED,
    )
    assert done.started_at == 10.0  # containers ran from the Running step
    assert done.terminal and not plan.state_at(10.0).terminal
    assert plan.next_change_after(0.0) == 10.0
    assert plan.next_change_after(10.0) == 30.0
    assert plan.next_change_after(30.0) is None


def test_late_seen_pod_goes_straight_to_its_state() -> None:
    plan = compile_plan({R: "10s", F: "1m"})
    step = plan.state_at(3600.0)
    assert step.phase == "Failed"
    assert plan.next_change_after(3600.0) is None
    # a clock behind the apiserver's (negative elapsed) sees the first step
    assert plan.state_at(-5.0).phase == "Pending"
    assert plan.next_change_after(-5.0) == 10.0


def test_failed_step_has_a_real_message() -> None:
    step = compile_plan({F: "2m"}).final
    assert step.containers.kind == "terminated"
    assert (step.containers.exit_code, step.containers.reason) == (1, "Error")
    assert f"{F}=2m" in step.containers.message
    assert step.started_at == 120.0  # never ran before: started and ended at once
    assert step.source == F


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10", "missing unit"),
        ("ten", "expected a number"),
        ("-5s", "negative"),
        ("", "empty"),
        ("5x", "unknown unit"),
    ],
)
def test_bad_duration_names_annotation_and_value(value: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        compile_plan({R: "10s", S: value})
    message = str(info.value)
    assert S in message
    assert repr(value) in message
    assert fragment in message


def test_pod_ips() -> None:
    assert parse_pod_ips("10.1.2.3") == ("10.1.2.3",)
    assert parse_pod_ips(" fd00:0::5 , 10.1.2.3") == ("fd00::5", "10.1.2.3")
    plan = compile_plan({ANNOTATION_POD_IPS: "10.1.2.3,fd00::5"})
    assert plan.pod_ips == ("10.1.2.3", "fd00::5")
    assert plan.steps == RUNNING_NOW.steps
    assert compile_plan({ANNOTATION_POD_IPS: "10.1.2.3", R: "1s"}).pod_ips == ("10.1.2.3",)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("10.0.0.300", "not a valid IP"),
        ("10.0.0.1,10.0.0.2", "two IPv4"),
        ("fd00::1,fd00::2", "two IPv6"),
        ("10.0.0.1,", "empty entry"),
        ("", "empty entry"),
    ],
)
def test_bad_pod_ips(value: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        compile_plan({ANNOTATION_POD_IPS: value})
    assert ANNOTATION_POD_IPS in str(info.value)
    assert fragment in str(info.value)


def test_mock_status_plugs_in_a_scripted_plan() -> None:
    crash = ContainerState("waiting", reason="CrashLoopBackOff", restart_count=3)
    script = Plan(
        (
            Step(0.0, "Pending", ContainerState("waiting", reason="ErrImagePull")),
            Step(20.0, "Running", RUNNING_READY, started_at=20.0, overrides=(("sidecar", crash),)),
        )
    )
    scripts = {"crashy": script}
    plan = compile_plan({ANNOTATION_MOCK_STATUS: "crashy", R: "1s"}, scripts=scripts.get)
    assert plan is script  # delay annotations are ignored when a script is named
    assert plan.state_at(25.0).container_state("sidecar") == crash
    assert plan.state_at(25.0).container_state("main") == RUNNING_READY
    with_ips = compile_plan(
        {ANNOTATION_MOCK_STATUS: "crashy", ANNOTATION_POD_IPS: "10.9.9.9"}, scripts=scripts.get
    )
    assert with_ips.pod_ips == ("10.9.9.9",)
    assert with_ips.steps == script.steps
    with pytest.raises(InputError, match="mockStatus='nope': no MockStatus"):
        compile_plan({ANNOTATION_MOCK_STATUS: "nope"}, scripts=scripts.get)
    with pytest.raises(InputError, match="no MockStatus"):
        compile_plan({ANNOTATION_MOCK_STATUS: "crashy"})


def test_plan_must_start_at_zero_and_be_sorted() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Plan(
            (
                Step(0.0, "Pending", CONTAINER_CREATING),
                Step(5.0, "Running", RUNNING_READY),
                Step(1.0, "Failed", COMPLETED),
            )
        )
    with pytest.raises(ValueError, match="start at 0"):
        Plan((Step(1.0, "Running", RUNNING_READY),))
    with pytest.raises(ValueError, match="at least one"):
        Plan(())


def test_plans_are_shared_between_pods() -> None:
    first = compile_plan({R: "10s", "app": "a"})
    second = compile_plan({R: "10s", "app": "b"})
    assert first is second


def test_stopped_step_terminates_running_containers() -> None:
    running = compile_plan({R: "10s"}).state_at(20.0)
    stopped = running.stopped(25.0)
    assert stopped.phase == "Running"  # the kubelet keeps the phase while deleting
    assert stopped.containers == ContainerState("terminated", reason="Completed", exit_code=0)
    assert not stopped.containers.ready
    assert stopped.started_at == 10.0
    assert stopped.at == 25.0
    pending = compile_plan({R: "10s"}).state_at(0.0).stopped(1.0)
    assert pending.containers == CONTAINER_CREATING  # never started: nothing to stop
    init_running = Step(0.0, "Pending", POD_INITIALIZING, ContainerState("running"))
    assert init_running.stopped(3.0).init_containers == INIT_COMPLETED
