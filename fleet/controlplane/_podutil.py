"""Pod and taint arithmetic shared by the loops: requests, readiness, tolerations.

Follows the Kubernetes helpers of the same names: a pod's effective request
is the sum of its containers' requests, at least the largest init
container's, plus ``overhead`` (``resource.PodRequests``); the scheduler's
scoring counts a container without requests as 100m CPU and 200 MiB
(``schedutil.GetNonzeroRequests``); a toleration matches a taint by
key, operator, value and effect (``Toleration.ToleratesTaint``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.api import Quantity, parse_quantity
from fleet.controlplane._resources import KObject, condition, parse_time
from fleet.errors import InputError

__all__ = [
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "Requests",
    "is_active",
    "is_ready",
    "is_terminal",
    "pod_requests",
    "quantity_milli",
    "quantity_value",
    "ready_since",
    "tolerates",
    "untolerated",
]

log = logging.getLogger(__name__)

DEFAULT_MILLI_CPU_REQUEST = 100
"""CPU the scheduler's scoring assumes for a container that requests none (kube-scheduler)."""
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
"""Memory the scheduler's scoring assumes for a container that requests none (kube-scheduler)."""

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class Requests:
    """What a pod asks of a node: for fitting (real requests) and for scoring (non-zero)."""

    milli_cpu: int = 0
    memory: int = 0
    nonzero_milli_cpu: int = 0
    nonzero_memory: int = 0


def _quantity(value: object) -> Quantity | None:
    """``value`` parsed; None for an absent or unparsable value (logged)."""
    if value is None:
        return None
    if not isinstance(value, str | int):
        log.debug("ignoring quantity %r: not a string or an integer", value)
        return None
    try:
        return parse_quantity(value)
    except InputError as exc:
        log.debug("ignoring quantity %r: %s", value, exc)
        return None


def quantity_milli(value: object) -> int:
    """A quantity in thousandths (CPU); 0 for an absent or unparsable value."""
    quantity = _quantity(value)
    return 0 if quantity is None else quantity.milli_value()


def quantity_value(value: object) -> int:
    """A quantity as a whole number (memory, pods); 0 for an absent or unparsable value."""
    quantity = _quantity(value)
    return 0 if quantity is None else quantity.int_value()


def _container_requests(container: Mapping[str, Any]) -> tuple[int, int, int, int]:
    requests = (container.get("resources") or {}).get("requests") or {}
    cpu = quantity_milli(requests.get("cpu"))
    mem = quantity_value(requests.get("memory"))
    nz_cpu = cpu if "cpu" in requests else DEFAULT_MILLI_CPU_REQUEST
    nz_mem = mem if "memory" in requests else DEFAULT_MEMORY_REQUEST
    return cpu, mem, nz_cpu, nz_mem


def pod_requests(spec: Mapping[str, Any]) -> Requests:
    """The effective requests of a pod spec."""
    total = [0, 0, 0, 0]
    for container in spec.get("containers") or ():
        for i, amount in enumerate(_container_requests(container)):
            total[i] += amount
    for container in spec.get("initContainers") or ():
        for i, amount in enumerate(_container_requests(container)):
            total[i] = max(total[i], amount)
    overhead = spec.get("overhead") or {}
    if overhead:
        cpu, mem = quantity_milli(overhead.get("cpu")), quantity_value(overhead.get("memory"))
        total = [total[0] + cpu, total[1] + mem, total[2] + cpu, total[3] + mem]
    return Requests(*total)


def is_terminal(pod: KObject) -> bool:
    return pod.status.get("phase") in TERMINAL


def is_active(pod: KObject) -> bool:
    """Neither finished nor being deleted (``controller.IsPodActive``)."""
    return not is_terminal(pod) and pod.metadata.deletion_timestamp is None


def is_ready(pod: KObject) -> bool:
    cond = condition(pod.status, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: KObject) -> float | None:
    """When the pod became Ready (its condition's lastTransitionTime), if it is."""
    cond = condition(pod.status, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """``Toleration.ToleratesTaint``: effect, key, then operator and value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated(
    taints: Iterable[Mapping[str, Any]],
    tolerations: Iterable[Mapping[str, Any]],
    effects: tuple[str, ...] = ("NoSchedule", "NoExecute"),
) -> Mapping[str, Any] | None:
    """The first taint with one of ``effects`` that no toleration matches."""
    tols = list(tolerations)
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tols):
            return taint
    return None
