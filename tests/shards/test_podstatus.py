"""Pod status and its PATCH as a real kubelet writes them (shards._podstatus).

Expected bodies are the ones in apiserver-transcripts/kubelet-requests.md
(recorded from the v1.24 kubelet with kubemark's fake runtime), with times
normalised to ``<time>`` as there; the pods use the uid ``<uid>`` so the fake
runtime's container IDs come out exactly as recorded.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet.machinery import format_micro_time, format_time, parse_time, two_way_merge_patch
from shards._plan import (
    ANNOTATION_DELAY_FAILED,
    ANNOTATION_DELAY_RUNNING,
    ANNOTATION_DELAY_SUCCEEDED,
    compile_plan,
)
from shards._podstatus import (
    ContainerSpec,
    PodView,
    RuntimeStyle,
    adopt_status,
    build_status,
    container_id,
    encode_patch,
    image_id,
    normalise_image,
    pod_status_patch,
    qos_class,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
FAKE = RuntimeStyle(runtime="fakeRuntime", normalise_images=False)
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        return "<time>"
    return value


def scheduled(qos: str) -> dict[str, Any]:
    """A pod's status as the apiserver holds it once the scheduler has bound it."""
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": format_time(T0),
            }
        ],
        "qosClass": qos,
    }


def apply(status: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver holds after the patch: the kubelet's desired status."""
    held: dict[str, Any] = json.loads(json.dumps(desired))
    return held


BESTEFFORT = PodView(
    uid="<uid>",
    name="besteffort",
    namespace="default",
    containers=(ContainerSpec("nginx", "nginx:1.25"),),
)
_GUARANTEED = {"cpu": "100m", "memory": "64Mi"}
WEB_NOINIT = PodView(
    uid="<uid>",
    name="web-noinit-5785f76d54-<suffix>",
    namespace="default",
    containers=(ContainerSpec("nginx", "nginx:1.25", _GUARANTEED, _GUARANTEED),),
)
WEB_INIT = PodView(
    uid="<uid>",
    name="web-77549465cc-<suffix>",
    namespace="default",
    containers=(ContainerSpec("nginx", "nginx:1.25", _GUARANTEED, _GUARANTEED),),
    init_containers=(ContainerSpec("init", "busybox:1.36", _GUARANTEED, _GUARANTEED),),
)
SET_ORDER = [
    {"type": "Initialized"},
    {"type": "Ready"},
    {"type": "ContainersReady"},
    {"type": "PodScheduled"},
]

# kubelet-requests.md: `besteffort` status PATCH #1 and #2.
BESTEFFORT_PATCH_1 = {
    "metadata": {"uid": "<uid>"},
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "status": "True",
                "type": "Initialized",
            },
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "Ready",
            },
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "ContainersReady",
            },
        ],
        "containerStatuses": [
            {
                "image": "nginx:1.25",
                "imageID": "",
                "lastState": {},
                "name": "nginx",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ],
        "hostIP": "192.0.2.2",
        "startTime": "<time>",
    },
}
BESTEFFORT_PATCH_2 = {
    "metadata": {"uid": "<uid>"},
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {
                "lastTransitionTime": "<time>",
                "message": None,
                "reason": None,
                "status": "True",
                "type": "Ready",
            },
            {
                "lastTransitionTime": "<time>",
                "message": None,
                "reason": None,
                "status": "True",
                "type": "ContainersReady",
            },
        ],
        "containerStatuses": [
            {
                "containerID": "fakeRuntime://besteffort_default_<uid>_0_nginx_0",
                "image": "nginx:1.25",
                "imageID": "nginx:1.25",
                "lastState": {},
                "name": "nginx",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": "<time>"}},
            }
        ],
        "phase": "Running",
        "podIP": "192.168.192.168",
        "podIPs": [{"ip": "192.168.192.168"}],
    },
}
# `web-77549465cc-<suffix>` status PATCH #1 (init container, pod Pending).
WEB_INIT_PATCH_1 = {
    "metadata": {"uid": "<uid>"},
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "message": "containers with incomplete status: [init]",
                "reason": "ContainersNotInitialized",
                "status": "False",
                "type": "Initialized",
            },
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "Ready",
            },
            {
                "lastProbeTime": None,
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "ContainersReady",
            },
        ],
        "containerStatuses": [
            {
                "image": "nginx:1.25",
                "imageID": "",
                "lastState": {},
                "name": "nginx",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
        ],
        "hostIP": "192.0.2.2",
        "initContainerStatuses": [
            {
                "image": "busybox:1.36",
                "imageID": "",
                "lastState": {},
                "name": "init",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
        ],
        "startTime": "<time>",
    },
}
# `web-noinit-5785f76d54-<suffix>` deletion: status PATCH (the fake runtime reports no
# terminated reason; containerd reports "Completed" for exit code 0, as we do).
WEB_NOINIT_DELETION_PATCH = {
    "metadata": {"uid": "<uid>"},
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "Ready",
            },
            {
                "lastTransitionTime": "<time>",
                "message": "containers with unready status: [nginx]",
                "reason": "ContainersNotReady",
                "status": "False",
                "type": "ContainersReady",
            },
        ],
        "containerStatuses": [
            {
                "containerID": "fakeRuntime://web-noinit-5785f76d54-<suffix>_default_<uid>_0_nginx_0",
                "image": "nginx:1.25",
                "imageID": "nginx:1.25",
                "lastState": {},
                "name": "nginx",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "containerID": "fakeRuntime://web-noinit-5785f76d54-<suffix>_default_<uid>_0_nginx_0",
                        "exitCode": 0,
                        "finishedAt": "<time>",
                        "reason": "Completed",
                        "startedAt": "<time>",
                    }
                },
            }
        ],
    },
}


def step_patch(
    pod: PodView,
    plan_annotations: dict[str, str],
    elapsed: float,
    original: dict[str, Any],
    **kw: Any,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    step = compile_plan(plan_annotations).state_at(elapsed)
    desired = build_status(
        pod,
        step,
        original=original,
        creation=T0,
        now=T0 + timedelta(seconds=elapsed + 0.5),
        pod_ips=("192.168.192.168",),
        host_ips=("192.0.2.2",),
        style=kw.pop("style", FAKE),
        **kw,
    )
    return pod_status_patch(pod.uid, original, desired), desired


def test_besteffort_pod_patches_as_recorded() -> None:
    annotations = {ANNOTATION_DELAY_RUNNING: "3s"}
    patch1, desired1 = step_patch(BESTEFFORT, annotations, 0.0, scheduled("BestEffort"))
    assert normalised(patch1) == BESTEFFORT_PATCH_1
    current = apply(scheduled("BestEffort"), desired1)
    patch2, desired2 = step_patch(BESTEFFORT, annotations, 3.0, current)
    assert normalised(patch2) == BESTEFFORT_PATCH_2
    # nothing changes later in the same step: no request at all
    later, _ = step_patch(BESTEFFORT, annotations, 60.0, apply(current, desired2))
    assert later is None


def test_init_container_pod_pending_as_recorded() -> None:
    patch, desired = step_patch(
        WEB_INIT, {ANNOTATION_DELAY_RUNNING: "5s"}, 0.0, scheduled("Guaranteed")
    )
    assert normalised(patch) == WEB_INIT_PATCH_1
    # once running: init container terminated (Completed, ready), Initialized True
    patch, desired = step_patch(WEB_INIT, {ANNOTATION_DELAY_RUNNING: "5s"}, 5.0, apply({}, desired))
    assert patch is not None
    init = desired["initContainerStatuses"][0]
    assert init["ready"] is True and "started" not in init
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c for c in desired["conditions"]}
    assert (conditions["Initialized"]["status"], conditions["Ready"]["status"]) == ("True", "True")
    assert "reason" not in conditions["Initialized"]


def test_deletion_patch_as_recorded() -> None:
    annotations: dict[str, str] = {}
    _, running = step_patch(WEB_NOINIT, annotations, 0.0, scheduled("Guaranteed"))
    current = apply({}, running)
    step = compile_plan(annotations).state_at(13.0).stopped(13.0)
    desired = build_status(
        WEB_NOINIT,
        step,
        original=current,
        creation=T0,
        now=T0 + timedelta(seconds=13),
        pod_ips=("192.168.192.168",),
        host_ips=("192.0.2.2",),
        style=FAKE,
    )
    patch = pod_status_patch(WEB_NOINIT.uid, current, desired)
    assert normalised(patch) == WEB_NOINIT_DELETION_PATCH
    assert patch is not None
    terminated = patch["status"]["containerStatuses"][0]["state"]["terminated"]
    # the container keeps its start time; it finished at the deletion
    assert (
        terminated["startedAt"] == current["containerStatuses"][0]["state"]["running"]["startedAt"]
    )
    assert terminated["finishedAt"] == format_time(T0 + timedelta(seconds=13))


def test_succeeded_and_failed() -> None:
    annotations = {ANNOTATION_DELAY_RUNNING: "10s", ANNOTATION_DELAY_SUCCEEDED: "30s"}
    _, done = step_patch(
        BESTEFFORT, annotations, 40.0, scheduled("BestEffort"), style=RuntimeStyle()
    )
    assert done["phase"] == "Succeeded"
    status = done["containerStatuses"][0]
    assert (status["ready"], status["started"]) == (False, False)
    terminated = status["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    # timeline times: started at creation+10s, finished at creation+30s
    assert (
        terminated["startedAt"] == "2024-05-01T12:00:40Z"
    )  # clamped: the pod was first seen at +40.5s
    conditions = {
        c["type"]: (c["status"], c.get("reason"), c.get("message")) for c in done["conditions"]
    }
    assert conditions == {
        "Initialized": ("True", "PodCompleted", None),
        "Ready": ("False", "PodCompleted", None),
        "ContainersReady": ("False", "PodCompleted", None),
        "PodScheduled": ("True", None, None),
    }

    failed_annotations = {ANNOTATION_DELAY_RUNNING: "10s", ANNOTATION_DELAY_FAILED: "30s"}
    _, running = step_patch(
        BESTEFFORT, failed_annotations, 10.0, scheduled("BestEffort"), style=RuntimeStyle()
    )
    _, failed = step_patch(
        BESTEFFORT, failed_annotations, 30.0, apply({}, running), style=RuntimeStyle()
    )
    assert failed["phase"] == "Failed"
    terminated = failed["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert "delayFailed=30s" in terminated["message"]
    assert terminated["startedAt"] == "2024-05-01T12:00:10Z"
    assert terminated["finishedAt"] == "2024-05-01T12:00:30Z"
    assert failed["podIP"] == "192.168.192.168"  # a finished pod keeps its IPs
    failed_conditions = {c["type"]: (c["status"], c.get("reason")) for c in failed["conditions"]}
    assert failed_conditions["Ready"] == ("False", "ContainersNotReady")


def test_late_seen_pod_goes_straight_to_running_with_sane_times() -> None:
    now = T0 + timedelta(hours=1)
    step = compile_plan({ANNOTATION_DELAY_RUNNING: "10s"}).state_at(3600.0)
    desired = build_status(
        BESTEFFORT,
        step,
        original=scheduled("BestEffort"),
        creation=T0,
        now=now,
        pod_ips=("10.244.0.2",),
        host_ips=("10.0.0.1",),
    )
    assert desired["phase"] == "Running"
    assert desired["startTime"] == format_time(now)
    # never before startTime: the shard was not there at creation+10s
    assert desired["containerStatuses"][0]["state"]["running"]["startedAt"] == format_time(now)


def test_restarted_shard_adopts_and_changes_nothing() -> None:
    annotations = {ANNOTATION_DELAY_RUNNING: "10s"}
    _, first = step_patch(
        BESTEFFORT, annotations, 12.0, scheduled("BestEffort"), style=RuntimeStyle()
    )
    current = apply({}, first)
    adopted = adopt_status(current)
    assert adopted.pod_ips == ("192.168.192.168",)
    assert adopted.host_ips == ("192.0.2.2",)
    assert adopted.start_time == current["startTime"]
    assert adopted.phase == "Running"
    assert adopted.container_started == {
        "nginx": current["containerStatuses"][0]["state"]["running"]["startedAt"]
    }
    # an hour later, a new shard with a different allocation: nothing is rewritten
    step = compile_plan(annotations).state_at(3600.0)
    desired = build_status(
        BESTEFFORT,
        step,
        original=current,
        creation=T0,
        now=T0 + timedelta(hours=1),
        pod_ips=("10.9.9.9",),
        host_ips=("192.0.2.2",),
    )
    assert pod_status_patch(BESTEFFORT.uid, current, desired) is None


def test_readiness_gates_left_to_their_owners() -> None:
    pod = PodView(
        uid="u1",
        name="gated",
        namespace="ns",
        containers=(ContainerSpec("app", "app:1"),),
        readiness_gates=("example.com/lb",),
    )
    step = compile_plan({}).state_at(0.0)
    original = scheduled("BestEffort")
    desired = build_status(
        pod,
        step,
        original=original,
        creation=T0,
        now=T0,
        pod_ips=("10.0.0.2",),
        host_ips=("10.1.0.1",),
    )
    ready = next(c for c in desired["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "ReadinessGatesNotReady"
    assert (
        ready["message"]
        == 'corresponding condition of pod readiness gate "example.com/lb" does not exist.'
    )

    gate = {
        "type": "example.com/lb",
        "status": "False",
        "lastProbeTime": None,
        "lastTransitionTime": format_time(T0),
    }
    original["conditions"].append(gate)
    desired = build_status(
        pod,
        step,
        original=original,
        creation=T0,
        now=T0,
        pod_ips=("10.0.0.2",),
        host_ips=("10.1.0.1",),
    )
    assert [c["type"] for c in desired["conditions"]] == [
        "example.com/lb",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    assert desired["conditions"][0] == gate  # untouched
    ready = next(c for c in desired["conditions"] if c["type"] == "Ready")
    assert (
        ready["message"]
        == 'the status of pod readiness gate "example.com/lb" is not "True", but "False"'
    )

    gate["status"] = "True"
    desired = build_status(
        pod,
        step,
        original=original,
        creation=T0,
        now=T0,
        pod_ips=("10.0.0.2",),
        host_ips=("10.1.0.1",),
    )
    ready = next(c for c in desired["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and "reason" not in ready


def test_newer_kubelet_style() -> None:
    style = RuntimeStyle.for_kubelet("v1.30.2", "containerd://1.7.13")
    assert style == RuntimeStyle(
        runtime="containerd", normalise_images=True, host_ips=True, ready_to_start_condition=True
    )
    assert RuntimeStyle.for_kubelet("v1.24.0-alpha.1.0+e5f3f020084e", "fakeRuntime://0.1.0") == FAKE
    pod = PodView(
        uid="u2",
        name="p",
        namespace="ns",
        containers=(ContainerSpec("b", "busybox"), ContainerSpec("a", "nginx")),
    )
    pending = compile_plan({ANNOTATION_DELAY_RUNNING: "5s"}).state_at(0.0)
    desired = build_status(
        pod,
        pending,
        original={},
        creation=T0,
        now=T0,
        pod_ips=("10.0.0.2", "fd00::2"),
        host_ips=("10.1.0.1", "fd01::1"),
        style=style,
    )
    assert [c["type"] for c in desired["conditions"]] == [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    assert desired["conditions"][0]["status"] == "False"  # no sandbox while ContainerCreating
    assert "podIP" not in desired
    assert desired["hostIPs"] == [{"ip": "10.1.0.1"}, {"ip": "fd01::1"}]
    assert [c["name"] for c in desired["containerStatuses"]] == [
        "a",
        "b",
    ]  # sorted by name, as the kubelet does
    assert desired["containerStatuses"][0]["image"] == "docker.io/library/nginx:latest"
    running = compile_plan({ANNOTATION_DELAY_RUNNING: "5s"}).state_at(5.0)
    desired = build_status(
        pod,
        running,
        original=desired,
        creation=T0,
        now=T0 + timedelta(seconds=5),
        pod_ips=("10.0.0.2", "fd00::2"),
        host_ips=("10.1.0.1",),
        style=style,
    )
    assert desired["podIPs"] == [{"ip": "10.0.0.2"}, {"ip": "fd00::2"}]
    assert desired["conditions"][0]["status"] == "True"
    status = desired["containerStatuses"][0]
    assert re.fullmatch(r"containerd://[0-9a-f]{64}", status["containerID"])
    assert status["containerID"] == container_id(pod, "a", 0, style)
    assert status["imageID"].startswith("docker.io/library/nginx@sha256:")


def test_host_network_pod_uses_host_ips() -> None:
    pod = PodView(
        uid="u3",
        name="hn",
        namespace="kube-system",
        containers=(ContainerSpec("c", "k8s.gcr.io/pause:3.9"),),
        host_network=True,
    )
    pending = compile_plan({ANNOTATION_DELAY_RUNNING: "5s"}).state_at(0.0)
    desired = build_status(
        pod,
        pending,
        original={},
        creation=T0,
        now=T0,
        pod_ips=("10.244.0.9",),
        host_ips=("10.0.0.7",),
    )
    assert desired["podIPs"] == [{"ip": "10.0.0.7"}]
    assert desired["containerStatuses"][0]["image"] == "k8s.gcr.io/pause:3.9"


@pytest.mark.parametrize(
    ("image", "reported"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/bitnami/redis", "docker.io/bitnami/redis:latest"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("nginx@sha256:abc", "docker.io/library/nginx@sha256:abc"),
        ("nginx:1.25@sha256:abc", "docker.io/library/nginx:1.25@sha256:abc"),
    ],
)
def test_normalise_image(image: str, reported: str) -> None:
    assert normalise_image(image) == reported


def test_image_id_forms() -> None:
    style = RuntimeStyle()
    assert image_id("nginx@sha256:abc", style) == "docker.io/library/nginx@sha256:abc"
    assert image_id("nginx:1.25@sha256:abc", style) == "docker.io/library/nginx@sha256:abc"
    assert image_id("nginx:1.25", style) == image_id("docker.io/library/nginx:1.25", style)
    assert image_id("nginx", RuntimeStyle(runtime="docker")).startswith(
        "docker-pullable://docker.io/library/nginx@sha256:"
    )
    assert image_id("nginx:1.25", FAKE) == "nginx:1.25"


def _pod(*containers: ContainerSpec, init: tuple[ContainerSpec, ...] = ()) -> PodView:
    return PodView(uid="u", name="p", namespace="ns", containers=containers, init_containers=init)


@pytest.mark.parametrize(
    ("pod", "qos"),
    [
        (_pod(ContainerSpec("a", "i")), "BestEffort"),
        (_pod(ContainerSpec("a", "i", {"cpu": "0", "memory": "0"})), "BestEffort"),
        (
            _pod(ContainerSpec("a", "i", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"})),
            "BestEffort",
        ),
        (_pod(ContainerSpec("a", "i", {"cpu": "100m"})), "Burstable"),
        (_pod(ContainerSpec("a", "i", _GUARANTEED, _GUARANTEED)), "Guaranteed"),
        (
            _pod(
                ContainerSpec(
                    "a",
                    "i",
                    {"cpu": "0.1", "memory": "67108864"},
                    {"cpu": "100m", "memory": "64Mi"},
                )
            ),
            "Guaranteed",
        ),
        (
            _pod(
                ContainerSpec(
                    "a", "i", {"cpu": "1", "memory": "1Gi"}, {"cpu": "2", "memory": "1Gi"}
                )
            ),
            "Burstable",
        ),
        (_pod(ContainerSpec("a", "i", {}, {"cpu": "1"})), "Burstable"),  # cpu limit only
        (
            _pod(ContainerSpec("a", "i", _GUARANTEED, _GUARANTEED), ContainerSpec("b", "i")),
            "Burstable",
        ),
        (
            _pod(
                ContainerSpec("a", "i", _GUARANTEED, _GUARANTEED), init=(ContainerSpec("x", "i"),)
            ),
            "Burstable",
        ),
        (
            _pod(
                ContainerSpec("a", "i", _GUARANTEED, _GUARANTEED),
                init=(ContainerSpec("x", "i", _GUARANTEED, _GUARANTEED),),
            ),
            "Guaranteed",
        ),
        (
            _pod(
                ContainerSpec(
                    "a",
                    "i",
                    {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                    {"cpu": "1", "memory": "1Gi"},
                )
            ),
            "Guaranteed",
        ),
    ],
)
def test_qos_class(pod: PodView, qos: str) -> None:
    assert qos_class(pod) == qos


def test_qos_class_never_overwritten() -> None:
    step = compile_plan({}).state_at(0.0)
    desired = build_status(
        BESTEFFORT, step, original={"qosClass": "Burstable"}, creation=T0, now=T0
    )
    assert desired["qosClass"] == "Burstable"
    assert (
        build_status(BESTEFFORT, step, original={}, creation=T0, now=T0)["qosClass"] == "BestEffort"
    )


def test_merge_patch_rules() -> None:
    original = {
        "keep": 1,
        "gone": "x",
        "nested": {"a": 1, "b": 2},
        "conditions": [
            {"type": "A", "status": "True"},
            {"type": "B", "status": "True"},
            {"type": "C", "status": "True"},
        ],
        "atomic": [1, 2],
        "absent-null": None,
    }
    modified = {
        "keep": 1,
        "nested": {"a": 1, "b": 3},
        "conditions": [{"type": "C", "status": "True"}, {"type": "A", "status": "False"}],
        "atomic": [1, 2, 3],
        "new": {"x": 1},
        "null-absent": None,
    }
    assert two_way_merge_patch(original, modified) == {
        "gone": None,
        "nested": {"b": 3},
        "$setElementOrder/conditions": [{"type": "C"}, {"type": "A"}],
        "conditions": [{"type": "A", "status": "False"}, {"$patch": "delete", "type": "B"}],
        "atomic": [1, 2, 3],
        "new": {"x": 1},
    }
    reordered = {"conditions": [{"type": "B"}, {"type": "A"}]}
    assert two_way_merge_patch({"conditions": [{"type": "A"}, {"type": "B"}]}, reordered) == {
        "$setElementOrder/conditions": [{"type": "B"}, {"type": "A"}]
    }
    assert two_way_merge_patch(original, original) == {}


def test_encoding_is_go_ordered_json() -> None:
    patch = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "$setElementOrder/conditions": [{"type": "Ready"}],
        },
        "metadata": {"uid": "u"},
    }
    assert encode_patch(patch) == (
        b'{"metadata":{"uid":"u"},"status":{"$setElementOrder/conditions":[{"type":"Ready"}],'
        b'"conditions":[{"status":"True","type":"Ready"}],"phase":"Running"}}'
    )
    assert json.loads(encode_patch(BESTEFFORT_PATCH_1)) == BESTEFFORT_PATCH_1


def test_times() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_time(moment) == "2024-05-01T12:00:00Z"
    assert format_micro_time(moment) == "2024-05-01T12:00:00.123456Z"
    assert format_micro_time(T0) == "2024-05-01T12:00:00.000000Z"
    assert parse_time("2024-05-01T12:00:00Z") == T0
    assert parse_time("2024-05-01T14:00:00+02:00") == T0
