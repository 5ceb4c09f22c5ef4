"""Shard 0 tells each MockStatus (and NodeScript) whether it validates: condition Valid, and a Warning Event.

Rules the CRD schema cannot state (``after`` increasing, nothing after a
terminal step, branch order, label selector syntax) are checked by the shard
when it compiles a MockStatus (``shards._scripts``). An invalid one never
crashes anything: pods naming it wait Pending with reason InvalidMockStatus,
and as a policy it matches no pod. So that its author sees why without
reading pods, :class:`ScriptReporter` writes on the MockStatus itself:

- ``status.conditions[type=Valid]`` (metav1.Condition): ``True`` / reason
  ``Valid``, or ``False`` / reason ``InvalidMockStatus`` with the fault as the
  message; ``observedGeneration`` the generation judged; merge PATCH on the
  status subresource, only when it changes (transition time kept otherwise);
- a Warning Event (reason InvalidMockStatus) on the MockStatus, once per fault
  (``EventRecorder`` de-duplicates).

A NodeScript (``shards._nodescripts``) is reported the same way by a
reporter of its own (``kind``, ``plural``, reason InvalidNodeScript).

Only shard 0 reports (wired by the engine): every shard judges alike, and N
shards writing one condition would only race. Reports wait in a dict keyed by
MockStatus (newest wins) for one task that sends them while the shard's Lease
is fresh; a failed write is logged and tried again at the MockStatus's next
change; nothing here can stop the watch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
import trio

from fleet.errors import FleetError
from fleet.kube import resource_path
from fleet.machinery import MERGE_PATCH, format_time
from fleet.wire import GROUP, MOCKSTATUS_PLURAL, NODESCRIPT_PLURAL, VERSION
from shards._context import ShardContext
from shards._library import MockStatusView, ScriptError
from shards._nodescripts import INVALID_NODE_SCRIPT
from shards._podstatus import encode_patch
from shards._scripts import INVALID_REASON

__all__ = ["VALID_CONDITION", "VALID_REASON", "ScriptReporter", "node_script_reporter"]

log = logging.getLogger(__name__)

VALID_CONDITION = "Valid"
VALID_REASON = "Valid"


class _Status(msgspec.Struct):
    conditions: list[dict[str, Any]] = []


_decode_status = msgspec.json.Decoder(_Status).decode


class ScriptReporter:
    """Writes the Valid condition and Warning Events on MockStatuses; see the module docstring."""

    FENCE_POLL = 1.0
    """Seconds between looks at the fence while the shard's Lease is not fresh."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        kind: str = "MockStatus",
        plural: str = MOCKSTATUS_PLURAL,
        invalid_reason: str = INVALID_REASON,
    ) -> None:
        self._ctx = ctx
        self._kind = kind
        self._plural = plural
        self._invalid = invalid_reason
        self._pending: dict[str, tuple[MockStatusView, ScriptError | None]] = {}
        self._wake = trio.Event()

    async def report(self, view: MockStatusView, problem: ScriptError | None) -> None:
        """Queue the report of one MockStatus (the ScriptLibrary's ``on_report``)."""
        meta = view.metadata
        self._pending[f"{meta.namespace}/{meta.name}"] = (view, problem)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send queued reports while the shard's Lease is fresh, until cancelled."""
        task_status.started()
        while True:
            if not self._pending:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            if not self._ctx.fresh():
                await trio.sleep(self.FENCE_POLL)
                continue
            key = next(iter(self._pending))
            view, problem = self._pending.pop(key)
            await self._send(view, problem)

    async def _send(self, view: MockStatusView, problem: ScriptError | None) -> None:
        meta = view.metadata
        try:
            held = _decode_status(bytes(view.status)).conditions
        except msgspec.DecodeError:
            held = []
        previous: Mapping[str, Any] = next(
            (c for c in held if isinstance(c, Mapping) and c.get("type") == VALID_CONDITION), {}
        )
        status, reason, message = (
            ("True", VALID_REASON, "the shards compiled it")
            if problem is None
            else ("False", self._invalid, str(problem))
        )
        generation = meta.generation or None
        if problem is not None:
            involved = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": self._kind,
                "namespace": meta.namespace,
                "name": meta.name,
                "uid": meta.uid,
            }
            await self._ctx.events.warn(involved, self._invalid, message)
        if (
            previous.get("status"),
            previous.get("reason"),
            previous.get("message"),
            previous.get("observedGeneration"),
        ) == (status, reason, message, generation):
            return
        condition: dict[str, Any] = {
            "type": VALID_CONDITION,
            "status": status,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": (
                previous.get("lastTransitionTime") if previous.get("status") == status else None
            )
            or format_time(self._ctx.wall()),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        others = [c for c in held if isinstance(c, Mapping) and c.get("type") != VALID_CONDITION]
        path = resource_path(
            GROUP,
            VERSION,
            self._plural,
            namespace=meta.namespace,
            name=meta.name,
            subresource="status",
        )
        body = encode_patch({"status": {"conditions": [*others, condition]}})
        try:
            response = await self._ctx.control.request(
                "PATCH", path, body=body, content_type=MERGE_PATCH
            )
            if response.status != 404:  # deleted meanwhile: nothing to report on
                response.raise_for_status()
        except FleetError as exc:
            log.warning(
                "%s %s/%s: reporting Valid=%s: %s",
                self._kind,
                meta.namespace,
                meta.name,
                status,
                exc,
            )


def node_script_reporter(ctx: ShardContext) -> ScriptReporter:
    """The reporter of NodeScripts (condition Valid, reason InvalidNodeScript)."""
    return ScriptReporter(
        ctx, kind="NodeScript", plural=NODESCRIPT_PLURAL, invalid_reason=INVALID_NODE_SCRIPT
    )
