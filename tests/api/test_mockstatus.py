"""The MockStatus CR: a small, validated script of pod phases over time."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fleet.api import MockStatus, load_mock_status
from fleet.errors import InputError

SAMPLE = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: crash-then-fail, namespace: default}
spec:
  steps:
    - after: 0s
      phase: Pending
      containers: [{waiting: {reason: ErrImagePull}}]
    - after: 20s
      phase: Running
      containers: [{name: sidecar, ready: false, restartCount: 2}]
    - after: 2m
      phase: Failed
      reason: OOMKilled
      containers: [{terminated: {exitCode: 137, reason: OOMKilled, message: out of memory}}]
"""


def test_sample_parses() -> None:
    script = load_mock_status(yaml.safe_load(SAMPLE))
    assert isinstance(script, MockStatus)
    steps = script.spec.steps
    assert [s.phase for s in steps] == ["Pending", "Running", "Failed"]
    assert [s.after_seconds() for s in steps] == [0.0, 20.0, 120.0]
    waiting = steps[0].containers[0].waiting
    assert waiting is not None and waiting.reason == "ErrImagePull"
    sidecar = steps[1].containers[0]
    assert (sidecar.name, sidecar.ready, sidecar.restart_count) == ("sidecar", False, 2)
    terminated = steps[2].containers[0].terminated
    assert terminated is not None and (terminated.exit_code, terminated.reason) == (
        137,
        "OOMKilled",
    )
    assert (
        script.model_dump(mode="json", exclude_defaults=True)["spec"]
        == yaml.safe_load(SAMPLE)["spec"]
    )


def test_waiting_defaults_to_container_creating() -> None:
    script = load_mock_status(
        {
            "metadata": {"name": "s"},
            "spec": {
                "steps": [{"after": "1s", "phase": "Pending", "containers": [{"waiting": {}}]}]
            },
        }
    )
    waiting = script.spec.steps[0].containers[0].waiting
    assert waiting is not None and waiting.reason == "ContainerCreating"


def _script(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "MockStatus",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"steps": steps},
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "spec.steps: List should have at least 1 item"),
        (
            [{"after": "10s", "phase": "Running"}, {"after": "5s", "phase": "Failed"}],
            'spec.steps: step 1: after "5s" must be later than step 0\'s "10s"',
        ),
        (
            [{"after": "10s", "phase": "Succeeded"}, {"after": "20s", "phase": "Running"}],
            "spec.steps: step 1 follows the terminal step 0 (Succeeded): a terminal phase sticks",
        ),
        (
            [{"after": "-1s", "phase": "Running"}],
            'spec.steps[0].after: invalid duration "-1s": must not be negative',
        ),
        ([{"after": "soon", "phase": "Running"}], 'spec.steps[0].after: invalid duration "soon"'),
        ([{"phase": "Running"}], "spec.steps[0].after: required"),
        ([{"after": "1s", "phase": "Unknown"}], "spec.steps[0].phase: Input should be 'Pending'"),
        (
            [{"after": "1s", "phase": "Failed", "containers": [{"waiting": {}, "terminated": {}}]}],
            "spec.steps[0].containers[0]: a container is either waiting or terminated, not both",
        ),
        (
            [{"after": "1s", "phase": "Failed", "containers": [{"terminated": {"exitCode": 256}}]}],
            "spec.steps[0].containers[0].terminated.exitCode: Input should be less than or equal to 255",
        ),
    ],
)
def test_bad_scripts(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InputError) as info:
        load_mock_status(_script(steps))
    assert str(info.value).startswith(f"MockStatus ns/s: {message}")


def test_spec_is_required() -> None:
    with pytest.raises(InputError, match=r"^MockStatus s: spec: required$"):
        load_mock_status({"metadata": {"name": "s"}})


POLICY = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: web, namespace: default}
spec:
  selector:
    namespaces: ["*"]
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front]}]
    matchAnnotations: {team: a}
    ownerKinds: [ReplicaSet]
  priority: 10
  steps:
    - {after: 0s, phase: Pending}
    - {after: 5s, phase: Running, jitter: 10s}
  branches:
    - {name: done, weight: 95, steps: [{after: 1m, phase: Succeeded, jitter: 30s, distribution: normal}]}
    - {name: oom, weight: 5, steps: [{after: 20s, phase: Failed}]}
"""


def test_policy_fields_parse() -> None:
    script = load_mock_status(yaml.safe_load(POLICY))
    spec = script.spec
    assert spec.priority == 10
    assert spec.selector is not None
    assert spec.selector.namespaces == ["*"]
    assert spec.selector.match_labels == {"app": "web"}
    assert spec.selector.owner_kinds == ["ReplicaSet"]
    assert spec.steps[1].jitter_seconds() == 10.0
    assert spec.steps[0].jitter_seconds() == 0.0
    assert spec.branches is not None
    assert [(b.name, b.weight) for b in spec.branches] == [("done", 95), ("oom", 5)]
    assert spec.branches[0].steps[0].distribution == "normal"
    # Without the new fields a MockStatus is what it was: named by annotations only.
    plain = load_mock_status(yaml.safe_load(SAMPLE)).spec
    assert (plain.selector, plain.priority, plain.branches) == (None, 0, None)


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        ([], "spec: branches: give at least one branch, or omit branches"),
        (
            [{"weight": 0, "steps": [{"after": "1m", "phase": "Running"}]}],
            "spec: branches: the weights add up to 0",
        ),
        (
            [{"weight": 1, "steps": [{"after": "5s", "phase": "Running"}]}],
            'spec: branches[0]: step 2: after "5s" must be later than step 1\'s "10s"',
        ),
        ([{"weight": 1, "steps": []}], "spec.branches[0].steps: List should have at least 1 item"),
        (
            [{"weight": -1, "steps": [{"after": "1m", "phase": "Running"}]}],
            "spec.branches[0].weight: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_branches(branches: list[dict[str, Any]], message: str) -> None:
    raw = _script([{"after": "0s", "phase": "Pending"}, {"after": "10s", "phase": "Running"}])
    raw["spec"]["branches"] = branches
    with pytest.raises(InputError) as info:
        load_mock_status(raw)
    assert str(info.value).startswith(f"MockStatus ns/s: {message}")


def test_no_branch_after_a_terminal_step() -> None:
    raw = _script([{"after": "0s", "phase": "Succeeded"}])
    raw["spec"]["branches"] = [{"weight": 1, "steps": [{"after": "1m", "phase": "Running"}]}]
    with pytest.raises(InputError, match="follows the terminal step 0"):
        load_mock_status(raw)
