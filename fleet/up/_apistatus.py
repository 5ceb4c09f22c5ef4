"""The status line of ``up`` on an apiserver not in this process (``--control-plane real``).

The sandbox's status is read straight from its store (``_status.StatusSampler``);
a real kube-apiserver is asked: :class:`ApiStatusSampler` lists Nodes and Pods
(paged, :data:`PAGE`) every :data:`REFRESH` seconds in a task of its own and
reads the request rate from ``apiserver_request_total`` on ``/metrics``. The
status line's own requests show in that rate, a few per refresh.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from fleet.errors import FleetError
from fleet.kube import Client
from fleet.up._status import Status

__all__ = ["REFRESH", "ApiStatusSampler"]

REFRESH = 2.0
"""Seconds between two readings: the status line redraws every second, a reading costs a
list of every Node and Pod."""
PAGE = 500
"""Items per list page (kubectl's own chunk size)."""


def _ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


class ApiStatusSampler:
    """Keeps the latest :class:`Status` read through ``client``; :meth:`run` refreshes it."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._status = Status()
        self._last: tuple[float, float] | None = None

    def sample(self) -> Status:
        return self._status

    async def _requests_total(self) -> float:
        response = await self._client.request("GET", "/metrics")
        response.raise_for_status()
        total = 0.0
        for family in text_string_to_metric_families(response.content.decode("utf-8", "replace")):
            if family.name == "apiserver_request":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    async def read(self) -> Status:
        nodes = (await self._client.list("/api/v1/nodes", limit=PAGE)).items
        phases: Counter[str] = Counter()
        for pod in (await self._client.list("/api/v1/pods", limit=PAGE)).items:
            if pod["metadata"].get("deletionTimestamp"):
                phases["Terminating"] += 1
            else:
                phases[(pod.get("status") or {}).get("phase") or "Pending"] += 1
        now, total = trio.current_time(), await self._requests_total()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (total - self._last[1]) / (now - self._last[0])
        self._last = (now, total)
        self._status = Status(
            nodes=len(nodes),
            nodes_ready=sum(_ready(n) for n in nodes),
            pods=dict(phases),
            requests_per_second=rate,
        )
        return self._status

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.read()
            except FleetError:
                pass  # the line keeps its last reading; the next refresh tries again
            await trio.sleep(REFRESH)
