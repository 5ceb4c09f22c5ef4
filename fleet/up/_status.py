"""The live status line of ``up``: nodes Ready, pods by phase, apiserver requests/s.

Read straight from the in-process sandbox (its store and its
``apiserver_request_total`` counter), so watching the status costs the
apiserver nothing and does not show up in the request rate it reports.
:class:`StatusSampler` turns two readings of the counter into a rate;
:func:`render` makes the one line both the terminal (a rich ``Live``) and a
log (a plain line) show::

    nodes 1/1 Ready · pods 20: Pending 12, Running 8 · apiserver 14.2 req/s
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from fleet.sandbox import SandboxApp

__all__ = ["PHASE_ORDER", "Status", "StatusSampler", "render"]

PHASE_ORDER = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
"""Pod phases in the order the line lists them (a pod being deleted counts as Terminating)."""
_NODES = ("", "nodes")
_PODS = ("", "pods")


@dataclass(frozen=True)
class Status:
    """One reading of the cluster as ``up`` shows it."""

    nodes: int = 0
    nodes_ready: int = 0
    pods: Mapping[str, int] = field(default_factory=dict)
    """Pods by phase; ``Terminating`` for those with a deletionTimestamp."""
    requests_per_second: float = 0.0
    """apiserver requests per second since the previous reading."""


def _ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _objects(app: SandboxApp, key: tuple[str, str]) -> list[dict[str, Any]]:
    return list(app.store.collection(key).objects.values())


def _requests_total(app: SandboxApp) -> float:
    total = 0.0
    for family in app.metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


class StatusSampler:
    """Reads a :class:`Status` from ``app``; the request rate is over the time since the last read."""

    def __init__(self, app: SandboxApp, *, clock: Callable[[], float] = trio.current_time) -> None:
        self._app = app
        self._clock = clock
        self._last: tuple[float, float] | None = None

    def sample(self) -> Status:
        app = self._app
        nodes = _objects(app, _NODES)
        phases: Counter[str] = Counter()
        for pod in _objects(app, _PODS):
            if pod["metadata"].get("deletionTimestamp"):
                phases["Terminating"] += 1
            else:
                phases[(pod.get("status") or {}).get("phase") or "Pending"] += 1
        now, total = self._clock(), _requests_total(app)
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (total - self._last[1]) / (now - self._last[0])
        self._last = (now, total)
        return Status(
            nodes=len(nodes),
            nodes_ready=sum(_ready(n) for n in nodes),
            pods=dict(phases),
            requests_per_second=rate,
        )


def render(status: Status) -> str:
    """The status as one line of plain text."""
    order = [p for p in PHASE_ORDER if p in status.pods] + sorted(
        p for p in status.pods if p not in PHASE_ORDER
    )
    total = sum(status.pods.values())
    pods = f"pods {total}" + (
        ": " + ", ".join(f"{p} {status.pods[p]}" for p in order) if order else ""
    )
    return (
        f"nodes {status.nodes_ready}/{status.nodes} Ready · {pods} · "
        f"apiserver {status.requests_per_second:.1f} req/s"
    )
