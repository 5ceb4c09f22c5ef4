"""Pod status as a real kubelet writes it, and the PATCH that carries it.

Given a pod (a small resolved :class:`PodView`, not the whole object), the
:class:`~shards._plan.Step` its plan says it is in, and the status the
apiserver holds now, :func:`build_status` computes the status a kubelet would
want: phase; conditions Initialized, Ready, ContainersReady, PodScheduled
(PodReadyToStartContainers too for kubelets >= 1.29), with readiness-gate
conditions left to their owners and Ready true only when every gate's
condition is; container and init container statuses (sorted as the kubelet
sorts them), startTime, pod and host IPs, and qosClass (computed as
``qos.GetPodQOS`` only when the apiserver has not set it). The condition
logic is a port of kubelet's ``status.Generate*Condition``; the shape of every
field follows apiserver-transcripts/kubelet-requests.md.

What a kubelet already reported is kept: condition transition times whose
status did not change, startTime, pod IPs, container IDs and start times. So a
restarted shard, or a pod seen late, never rewrites history; :func:`adopt_status`
extracts the same facts for the engine (to mark IPs used in the pool).

:func:`pod_status_patch` turns (current, desired) into the kubelet's body: a
two-way strategic merge patch (``$setElementOrder/conditions``, only what
changed, ``null`` for removed fields, atomic container-status lists sent whole)
under ``metadata.uid`` (the kubelet's uid precondition), or None when nothing
would change (skip the request). :func:`encode_patch` encodes it with one reused
msgspec encoder, keys sorted as Go's encoding/json emits maps.

:func:`fleet.machinery.two_way_merge_patch` is the general diff (reused for
Node status in shards._nodeobj). Times are RFC 3339 strings
(:func:`fleet.machinery.format_time`) from a datetime the caller passes in
(its clock), so tests are deterministic. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import msgspec

from fleet.api import format_go_duration
from fleet.machinery import format_time, parse_time, two_way_merge_patch
from shards._plan import INIT_COMPLETED, ContainerState, Step

__all__ = [
    "KUBELET_POD_CONDITIONS",
    "Adopted",
    "ContainerSpec",
    "PodView",
    "RuntimeStyle",
    "adopt_status",
    "build_status",
    "container_id",
    "encode_patch",
    "image_id",
    "normalise_image",
    "pod_status_patch",
    "qos_class",
]

JSON = Any
"""A decoded JSON value (dict, list, str, int, float, bool, None)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    return _EMPTY


KUBELET_POD_CONDITIONS = frozenset(
    {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}
)
"""Condition types the kubelet owns; any other condition (readiness gates) is kept as found."""

# --- time -----------------------------------------------------------------------


# --- inputs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """The parts of a v1.Container the status needs."""

    name: str
    image: str
    requests: Mapping[str, str] = field(default_factory=_empty)
    limits: Mapping[str, str] = field(default_factory=_empty)
    restartable: bool = False
    """An init container with ``restartPolicy: Always``: a sidecar, which keeps running."""


@dataclass(frozen=True, slots=True)
class PodView:
    """The parts of a v1.Pod the status needs, resolved by the engine."""

    uid: str
    name: str
    namespace: str
    containers: tuple[ContainerSpec, ...]
    init_containers: tuple[ContainerSpec, ...] = ()
    readiness_gates: tuple[str, ...] = ()
    """``spec.readinessGates[].conditionType``."""
    host_network: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeStyle:
    """How the fake runtime and kubelet version show in a pod's status.

    The defaults are the recorded v1.24 kubelet's shapes with a containerd
    runtime; :meth:`for_kubelet` picks them from a node's nodeInfo.
    """

    runtime: str = "containerd"
    """Scheme of ``containerID`` (``containerd://<64 hex>``). ``fakeRuntime``
    reproduces kubemark's ids and images exactly, for comparison with the transcripts."""
    normalise_images: bool = True
    """Report ``docker.io/library/nginx:latest`` for ``nginx`` as containerd and CRI-O do;
    False reports the image as written in the spec (kubemark's fake runtime)."""
    host_ips: bool = False
    """Write ``status.hostIPs`` (kubelet >= 1.29: PodHostIPs on by default)."""
    ready_to_start_condition: bool = False
    """Write the PodReadyToStartContainers condition (kubelet >= 1.29)."""

    @classmethod
    def for_kubelet(cls, kubelet_version: str, container_runtime_version: str) -> RuntimeStyle:
        """The style of a node reporting these nodeInfo versions."""
        match = re.match(r"v?(\d+)\.(\d+)", kubelet_version)
        version = (int(match.group(1)), int(match.group(2))) if match else (1, 24)
        runtime = container_runtime_version.partition("://")[0] or "containerd"
        modern = version >= (1, 29)
        return cls(
            runtime=runtime,
            normalise_images=runtime != "fakeRuntime",
            host_ips=modern,
            ready_to_start_condition=modern,
        )


# --- images and ids ----------------------------------------------------------------


def normalise_image(image: str) -> str:
    """The image reference as containerd reports it: ``nginx`` -> ``docker.io/library/nginx:latest``."""
    name, _, digest = image.partition("@")
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif first in ("docker.io", "index.docker.io"):
        name = f"docker.io/{rest}" if "/" in rest else f"docker.io/library/{rest}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if digest:
        return f"{name}:{tag}@{digest}" if tag else f"{name}@{digest}"
    return f"{name}:{tag or 'latest'}"


def _reported_image(image: str, style: RuntimeStyle) -> str:
    return normalise_image(image) if style.normalise_images else image


def image_id(image: str, style: RuntimeStyle) -> str:
    """``imageID`` of a started container: ``repo@sha256:<digest>`` (a stable fake digest)."""
    if style.runtime == "fakeRuntime" or not style.normalise_images:
        return image
    reported = normalise_image(image)
    repository, _, digest = reported.partition("@")
    if not digest:
        colon = repository.rfind(":")
        repository = repository[:colon]
        digest = "sha256:" + hashlib.sha256(reported.encode()).hexdigest()
    else:
        colon = repository.rfind(":")
        if colon > repository.rfind("/"):
            repository = repository[:colon]
    ref = f"{repository}@{digest}"
    return f"docker-pullable://{ref}" if style.runtime == "docker" else ref


def container_id(pod: PodView, container: str, restart_count: int, style: RuntimeStyle) -> str:
    """A stable ``<runtime>://<id>`` for a container run, the same after a shard restart."""
    if style.runtime == "fakeRuntime":
        return f"fakeRuntime://{pod.name}_{pod.namespace}_{pod.uid}_0_{container}_{restart_count}"
    digest = hashlib.sha256(f"{pod.uid}/{container}/{restart_count}".encode()).hexdigest()
    return f"{style.runtime}://{digest}"


# --- QoS ----------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def _quantity(text: str) -> Decimal:
    """Just enough of ``resource.ParseQuantity`` to compare and add (the apiserver validated it)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        return Decimal(0)  # an unparseable value cannot raise QoS: count it as absent
    try:
        value = Decimal(match.group(1) + (match.group(2) or ""))
    except InvalidOperation:
        return Decimal(0)
    suffix = match.group(3)
    return value * _SUFFIX[suffix] if suffix else value


_QOS_RESOURCES = ("cpu", "memory")


def qos_class(pod: PodView) -> str:
    """``Guaranteed``, ``Burstable`` or ``BestEffort``, exactly as kubelet's ``qos.GetPodQOS``.

    Only cpu and memory count; zero values count as unset; every container
    (init containers included) must have both limits for Guaranteed, and the
    summed requests must equal the summed limits.
    """
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in (*pod.containers, *pod.init_containers):
        for name, raw in container.requests.items():
            if name in _QOS_RESOURCES:
                value = _quantity(raw)
                if value > 0:
                    requests[name] = requests.get(name, Decimal(0)) + value
        found: set[str] = set()
        for name, raw in container.limits.items():
            if name in _QOS_RESOURCES:
                value = _quantity(raw)
                if value > 0:
                    found.add(name)
                    limits[name] = limits.get(name, Decimal(0)) + value
        if not found.issuperset(_QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed:
        for name, value in requests.items():
            if limits.get(name) != value:
                guaranteed = False
                break
    if guaranteed and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


# --- adoption -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Adopted:
    """What a restarted shard takes over from a pod status a kubelet already wrote."""

    phase: str | None
    start_time: str | None
    pod_ips: tuple[str, ...]
    host_ips: tuple[str, ...]
    container_started: Mapping[str, str]
    """Container name -> ``startedAt`` of its running or terminated state (init included)."""


def _ips(status: Mapping[str, JSON], plural: str, singular: str) -> tuple[str, ...]:
    entries = status.get(plural) or []
    ips = tuple(
        str(entry["ip"]) for entry in entries if isinstance(entry, Mapping) and entry.get("ip")
    )
    if not ips and status.get(singular):
        ips = (str(status[singular]),)
    return ips


def adopt_status(status: Mapping[str, JSON]) -> Adopted:
    started: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key) or []:
            state = entry.get("state") or {}
            for kind in ("running", "terminated"):
                when = (state.get(kind) or {}).get("startedAt")
                if when:
                    started[entry["name"]] = when
    return Adopted(
        phase=status.get("phase"),
        start_time=status.get("startTime"),
        pod_ips=_ips(status, "podIPs", "podIP"),
        host_ips=_ips(status, "hostIPs", "hostIP"),
        container_started=MappingProxyType(started),
    )


# --- building the desired status ------------------------------------------------------


def _sandbox_up(step: Step) -> bool:
    if step.phase != "Pending":
        return True
    states: Iterable[ContainerState] = (
        step.containers,
        step.init_containers,
        *(state for _, state in step.overrides),
        *(state for _, state in step.init_overrides),
    )
    return any(
        state.kind != "waiting" or state.reason not in ("ContainerCreating", "PodInitializing")
        for state in states
    )


def _names(names: Sequence[str]) -> str:
    return "[" + " ".join(names) + "]"  # Go's %s of a []string


def _all_ready(
    names: Sequence[str],
    statuses: Mapping[str, Mapping[str, JSON]],
    phase: str,
    *,
    completed: str,
    unready: str,
    reason: str,
) -> tuple[str, str, str]:
    """(status, reason, message) of a condition that all ``names`` are ready, worded as the kubelet.

    Serves ContainersReady (``completed="False"``, ``"unready"``) and
    Initialized (``completed="True"``, ``"incomplete"``); a Succeeded pod
    whose containers all reported gives ``completed`` with reason PodCompleted.
    """
    unknown = [name for name in names if name not in statuses]
    not_ready = [name for name in names if name in statuses and not statuses[name]["ready"]]
    if phase == "Succeeded" and not unknown:
        return completed, "PodCompleted", ""
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_names(unknown)}")
    if not_ready:
        messages.append(f"containers with {unready} status: {_names(not_ready)}")
    if messages:
        return "False", reason, ", ".join(messages)
    return "True", "", ""


def _containers_ready(
    pod: PodView, statuses: Mapping[str, Mapping[str, JSON]], phase: str
) -> tuple[str, str, str]:
    names = [c.name for c in pod.containers]
    return _all_ready(
        names, statuses, phase, completed="False", unready="unready", reason="ContainersNotReady"
    )


def _pod_ready(
    pod: PodView,
    containers_ready: tuple[str, str, str],
    conditions: Mapping[str, Mapping[str, JSON]],
) -> tuple[str, str, str]:
    if containers_ready[0] != "True":
        return containers_ready
    messages = []
    for gate in pod.readiness_gates:
        condition = conditions.get(gate)
        if condition is None:
            messages.append(
                f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            )
        elif condition.get("status") != "True":
            messages.append(
                f'the status of pod readiness gate "{gate}" is not "True", but "{condition.get("status")}"'
            )
    if messages:
        return "False", "ReadinessGatesNotReady", ", ".join(messages)
    return "True", "", ""


def _initialized(
    pod: PodView, statuses: Mapping[str, Mapping[str, JSON]], phase: str
) -> tuple[str, str, str]:
    names = [c.name for c in pod.init_containers]
    return _all_ready(
        names,
        statuses,
        phase,
        completed="True",
        unready="incomplete",
        reason="ContainersNotInitialized",
    )


def _sidecar_state(step: Step) -> ContainerState:
    """A sidecar (restartable init container) once the init phase is over, as Kubernetes
    >= 1.29 reports it: running and ready beside the app containers (``started`` true);
    stopped with them when the pod ends (the kubelet terminates sidecars last)."""
    if step.phase in ("Succeeded", "Failed") or step.containers.kind == "terminated":
        return INIT_COMPLETED  # Initialized stays True, as for any completed init container
    return ContainerState("running", ready=True)


def _by_name(entries: JSON) -> dict[str, Mapping[str, JSON]]:
    return {
        entry["name"]: entry
        for entry in entries or []
        if isinstance(entry, Mapping) and "name" in entry
    }


def build_status(
    pod: PodView,
    step: Step,
    *,
    original: Mapping[str, JSON] | None,
    creation: datetime,
    now: datetime,
    pod_ips: Sequence[str] = (),
    host_ips: Sequence[str] = (),
    style: RuntimeStyle = RuntimeStyle(),
) -> dict[str, JSON]:
    """The full ``status`` a kubelet would want for ``pod`` in ``step`` at ``now``.

    ``original`` is the status the apiserver holds (``{}`` for a new pod); fields
    the kubelet does not own are carried over unchanged. ``pod_ips`` are the
    allocated IPs (written once the sandbox is up; IPs already in ``original``
    win); ``host_ips`` the node's InternalIPs. ``creation`` is the pod's
    creationTimestamp: container start/finish times follow its timeline, kept
    between ``startTime`` and ``now``.
    """
    original = original or {}
    now_text = format_time(now)
    status: dict[str, JSON] = dict(original)
    status["phase"] = step.phase
    if step.reason:
        status["reason"] = step.reason
    if step.message:
        status["message"] = step.message

    start_text = original.get("startTime") or now_text
    status["startTime"] = start_text
    start = parse_time(start_text)

    def at(offset: float | None) -> str:
        if offset is None:
            return now_text
        moment = creation + timedelta(seconds=offset)
        return format_time(min(max(moment, start), now))

    # IPs
    if host_ips:
        status["hostIP"] = host_ips[0]
        if style.host_ips:
            status["hostIPs"] = [{"ip": ip} for ip in host_ips]
    adopted_ips = _ips(original, "podIPs", "podIP")
    sandbox = _sandbox_up(step)
    if pod.host_network:
        ips: Sequence[str] = host_ips
    elif adopted_ips:
        ips = adopted_ips
    elif sandbox:
        ips = pod_ips
    else:
        ips = ()
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]

    # container statuses
    old_containers = _by_name(original.get("containerStatuses"))
    old_inits = _by_name(original.get("initContainerStatuses"))

    def container_status(
        spec: ContainerSpec, state: ContainerState, previous: Mapping[str, JSON] | None, init: bool
    ) -> dict[str, JSON]:
        entry: dict[str, JSON] = {
            "name": spec.name,
            "image": _reported_image(spec.image, style),
            "imageID": "",
            "lastState": {},
            "ready": state.ready and (init or state.kind == "running"),
            "restartCount": state.restart_count,
        }
        if not init or spec.restartable:
            entry["started"] = state.kind == "running"
        if previous is not None and previous.get("restartCount", 0) != state.restart_count:
            previous = None  # another run of the container: its id and times are its own
        if state.last is not None:
            last = state.last
            ended: dict[str, JSON] = {
                "containerID": container_id(pod, spec.name, last.restart_count, style),
                "exitCode": last.exit_code,
                "startedAt": at(last.started_at),
                "finishedAt": at(last.finished_at),
            }
            if last.reason:
                ended["reason"] = last.reason
            if last.message:
                ended["message"] = last.message
            entry["lastState"] = {"terminated": ended}
            entry["imageID"] = image_id(spec.image, style)
        if state.kind == "waiting":
            waiting: dict[str, JSON] = {"reason": state.reason} if state.reason else {}
            if state.message:
                waiting["message"] = state.message
            elif state.backoff:
                waiting["message"] = (
                    f"back-off {format_go_duration(int(state.backoff * 1e9))} restarting failed "
                    f"container={spec.name} pod={pod.name}_{pod.namespace}({pod.uid})"
                )
            entry["state"] = {"waiting": waiting}
            return entry
        old_state = (previous or {}).get("state") or {}
        cid = (previous or {}).get("containerID") or container_id(
            pod, spec.name, state.restart_count, style
        )
        entry["containerID"] = cid
        entry["imageID"] = image_id(spec.image, style)
        old_running = old_state.get("running") or {}
        old_terminated = old_state.get("terminated") or {}
        started = (
            old_running.get("startedAt")
            or old_terminated.get("startedAt")
            or at(step.started_at if state.started_at is None else state.started_at)
        )
        if state.kind == "running":
            entry["state"] = {"running": {"startedAt": started}}
            return entry
        finished = old_terminated.get("finishedAt") or (
            started
            if init and state.finished_at is None
            else max(started, at(step.at if state.finished_at is None else state.finished_at))
        )
        terminated: dict[str, JSON] = {
            "containerID": cid,
            "exitCode": state.exit_code,
            "startedAt": started,
            "finishedAt": finished,
        }
        if state.reason:
            terminated["reason"] = state.reason
        if state.message:
            terminated["message"] = state.message
        if state.signal is not None:
            terminated["signal"] = state.signal
        entry["state"] = {"terminated": terminated}
        return entry

    # The kubelet sorts app container statuses by name, init container statuses by spec order.
    container_statuses = [
        container_status(
            spec, step.container_state(spec.name), old_containers.get(spec.name), False
        )
        for spec in sorted(pod.containers, key=lambda c: c.name)
    ]
    status["containerStatuses"] = container_statuses
    init_statuses: list[dict[str, JSON]] = []
    if pod.init_containers:
        init_done = all(
            state.kind == "terminated" and state.exit_code == 0
            for state in (
                step.init_containers,
                *(
                    step.init_state(spec.name)
                    for spec in pod.init_containers
                    if not spec.restartable
                ),
            )
        )
        for spec in pod.init_containers:
            state = step.init_state(spec.name)
            if spec.restartable and init_done:
                state = _sidecar_state(step)
            init_statuses.append(container_status(spec, state, old_inits.get(spec.name), True))
        status["initContainerStatuses"] = init_statuses
        for entry in container_statuses:
            waiting = entry["state"].get("waiting")
            if waiting is None:
                continue
            if not init_done:
                # App containers wait for the init containers: kubelet reports PodInitializing.
                entry["state"] = {"waiting": {"reason": "PodInitializing"}}
            elif waiting.get("reason") == "ContainerCreating":
                # Not started yet: the kubelet's default waiting reason for a pod with init
                # containers is PodInitializing, also once they are done
                # (convertToAPIContainerStatuses); kubectl shows the pod so.
                entry["state"] = {"waiting": {"reason": "PodInitializing"}}

    # conditions
    by_name = {entry["name"]: entry for entry in container_statuses}
    inits_by_name = {entry["name"]: entry for entry in init_statuses}
    old_conditions: list[Mapping[str, JSON]] = [
        c for c in original.get("conditions") or [] if isinstance(c, Mapping)
    ]
    old_by_type = {str(c.get("type")): c for c in old_conditions}
    containers_ready = _containers_ready(pod, by_name, step.phase)
    wanted: list[tuple[str, tuple[str, str, str]]] = []
    if style.ready_to_start_condition:
        wanted.append(("PodReadyToStartContainers", ("True" if sandbox else "False", "", "")))
    wanted += [
        ("Initialized", _initialized(pod, inits_by_name, step.phase)),
        ("Ready", _pod_ready(pod, containers_ready, old_by_type)),
        ("ContainersReady", containers_ready),
        ("PodScheduled", ("True", "", "")),
    ]
    # kubelet mergePodStatus: conditions it does not own first, as found; then its own.
    conditions: list[JSON] = [
        c for c in old_conditions if c.get("type") not in KUBELET_POD_CONDITIONS
    ]
    for kind, (value, reason, message) in wanted:
        previous = old_by_type.get(kind)
        transition = (
            previous.get("lastTransitionTime")
            if previous is not None and previous.get("status") == value
            else None
        ) or now_text
        condition: dict[str, JSON] = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": transition,
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        conditions.append(condition)
    status["conditions"] = conditions

    if not original.get("qosClass"):
        status["qosClass"] = qos_class(pod)
    return status


def pod_status_patch(
    uid: str, original: Mapping[str, JSON] | None, desired: Mapping[str, JSON]
) -> dict[str, JSON] | None:
    """The kubelet's pod status PATCH body, or None when it would change nothing.

    ``{"metadata": {"uid": ...}, "status": {...}}``: the uid inside the body is
    the kubelet's precondition (the patch fails if the pod was recreated under
    the same name). Send it as ``application/strategic-merge-patch+json`` to
    ``pods/<name>/status``.
    """
    diff = two_way_merge_patch(original or {}, desired)
    if not diff:
        return None
    return {"metadata": {"uid": uid}, "status": diff}


_ENCODER = msgspec.json.Encoder(order="sorted")
encode_patch: Callable[[Any], bytes] = _ENCODER.encode
"""Encode a patch body to JSON bytes, keys sorted as Go emits them (one reused encoder)."""
