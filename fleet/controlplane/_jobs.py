"""The Job controller: runs a Job's pods to ``completions`` successes or to its failure.

As kube-controller-manager's ``job`` controller (v1.33), as an API client:

- pods are made from the template (``generateName: <job>-``; in ``Indexed``
  mode ``<job>-<index>-`` with the ``batch.kubernetes.io/job-completion-index``
  annotation and label, ``JOB_COMPLETION_INDEX`` env and hostname), with a
  controller ownerReference (so deleting the Job with ``Background`` takes
  them, through the apiserver or :mod:`~fleet.controlplane._gc`) and the
  ``batch.kubernetes.io/job-tracking`` finalizer;
- at most ``parallelism`` active pods, and no more than the completions still
  missing; a work queue Job (no ``completions``) stops creating pods after
  its first success;
- finished pods are counted the way the real controller does it since 1.26:
  a finished (or deleted) pod still holding the finalizer is first recorded
  in ``status.uncountedTerminatedPods``, then its finalizer is removed, then
  it moves into ``succeeded``/``failed``, each status write conditional on the
  resourceVersion read, so a pod is counted exactly once; and, as the real
  controller's expectations do, a Job is not synced again before the watch
  has shown its last status write, nor a pod counted again before the watch
  has shown its finalizer gone (a stale cache would otherwise make pods twice);
- failures: a pod that failed or was deleted before succeeding counts as
  failed; new pods wait an exponential back-off (10 s doubling, at most 6 min)
  after a failure; more failures than ``backoffLimit`` (for ``OnFailure``
  pods, container restarts count) or ``activeDeadlineSeconds`` past
  ``startTime`` give ``FailureTarget`` (BackoffLimitExceeded /
  DeadlineExceeded), the active pods are deleted, and once none is left
  ``Failed``;
- success: enough successes give ``SuccessCriteriaMet`` (CompletionsReached),
  the remaining pods are deleted, and once none is left ``Complete`` and
  ``completionTime``;
- ``suspend``: active pods deleted, ``Suspended`` True (JobSuspended); resumed
  it turns False (JobResumed) and ``startTime`` restarts;
- status: ``active``, ``ready``, ``terminating``, ``succeeded``, ``failed``
  (omitted at 0 as the Go structs do), ``startTime``, ``completionTime``,
  ``completedIndexes``, ``uncountedTerminatedPods``, ``conditions``;
- ``ttlSecondsAfterFinished`` (the ``ttl-after-finished`` controller): the
  finished Job is deleted with ``Background`` propagation once it has passed.

Left out: ``podFailurePolicy``, ``successPolicy``, ``backoffLimitPerIndex``,
``managedBy``, elastic Indexed Jobs, adoption of orphan pods.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podcontrol import Expectations, PodDeleter
from fleet.controlplane._podutil import is_ready
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import (
    JOBS,
    PODS,
    KObject,
    condition,
    controlled,
    controller_of,
    parse_time,
    rfc3339,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, Conflict, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = [
    "TRACKING_FINALIZER",
    "JobController",
    "JobSettings",
    "format_indexes",
    "merge_patch_body",
]

log = logging.getLogger(__name__)

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
_ORPHAN = "orphan-pod:"
"""Queue-key prefix of a pod holding the finalizer for a Job that is gone."""
CONTROLLER = "job-controller"
"""The events' source component, as kube-controller-manager names this controller."""
_MESSAGES = {
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
    "CompletionsReached": "Reached expected number of succeeded pods",
}


@dataclass(frozen=True, slots=True)
class JobSettings:
    """How the Job controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """Jobs synced at once (``--concurrent-job-syncs``)."""
    burst_pods: int = 500
    """Pods created or deleted per sync at most (the controller's ``MaxPodCreateDeletePerSync``)."""
    backoff_base: float = 10.0
    """Seconds before a pod replaces a failed one; doubles per failure (``DefaultJobPodFailureBackOff``)."""
    backoff_max: float = 360.0
    """The longest wait before a replacement (``MaxJobPodFailureBackOff``, 6 min)."""
    expectations_timeout: float = 300.0
    """Seconds after which unobserved creations/deletions are presumed lost (client-go)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1 or self.burst_pods < 1:
            raise ConfigError("jobs: workers and burst_pods must be >= 1")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ConfigError("jobs: need 0 <= backoff_base <= backoff_max")


def format_indexes(indexes: set[int]) -> str:
    """``completedIndexes``: sorted intervals, ``"0-2,5"``."""
    out: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_indexes(text: object) -> set[int]:
    found: set[int] = set()
    if not isinstance(text, str) or not text:
        return found
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            found.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return found


def _index_of(pod: KObject) -> int | None:
    value = pod.metadata.annotations.get(INDEX_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _finished_ok(pod: KObject) -> bool:
    return pod.status.get("phase") == "Succeeded"


def _done(pod: KObject) -> bool:
    """Finished, or deleted before it could finish (counts as a failure)."""
    return pod.status.get("phase") in ("Succeeded", "Failed") or (
        pod.metadata.deletion_timestamp is not None
    )


def _true(status: Mapping[str, Any], kind: str) -> bool:
    cond = condition(status, kind)
    return cond is not None and cond.get("status") == "True"


class JobController:
    """Reconciles Jobs against their pods, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: JobSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else JobSettings()
        self._rest = rest
        self._clock = clock
        self._wall = wall_clock
        self._informers = informers
        self._jobs: Informer[KObject] = informers.get(JOBS)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._jobs.subscribe(self._on_job)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("jobs", max_keys=s.max_queue, clock=clock)
        self.expectations = Expectations(s.expectations_timeout, clock)
        self._pod_deleter = PodDeleter(
            rest, self._jobs, JOBS, CONTROLLER, self.expectations, self.queue, events
        )
        self._owned: dict[str, set[str]] = defaultdict(set)
        """Job uid -> keys of the pods it controls."""
        self._last_failure: dict[str, tuple[int, float]] = {}
        """Job uid -> (failed count, clock time it was first seen at that count)."""
        self._doomed: set[str] = set()
        """Finished Jobs whose ``ttlSecondsAfterFinished`` has passed: deleted after the sync."""
        self._unseen_writes: dict[str, tuple[str, float]] = {}
        """Job uid -> (resourceVersion of its last status write, when) until the watch shows it."""
        self._released: dict[str, float] = {}
        """Pod uid -> when its finalizer was removed, until the watch shows it gone."""

    # --- events --------------------------------------------------------------------------
    async def _on_job(self, event: WatchEvent[KObject]) -> None:
        key = object_key(event.obj.metadata)
        unseen = self._unseen_writes.get(event.obj.metadata.uid)
        if unseen is not None and (
            event.type == "DELETED" or event.obj.metadata.resource_version == unseen[0]
        ):
            del self._unseen_writes[event.obj.metadata.uid]
        if event.type == "DELETED":
            self.expectations.forget(key)
            self._last_failure.pop(event.obj.metadata.uid, None)
            for pod_key in self._owned.pop(event.obj.metadata.uid, set()):
                await self.queue.add(_ORPHAN + pod_key)
        await self.queue.add(key)

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        ref = controller_of(pod.metadata)
        if ref is None or ref.kind != "Job":
            return
        key = object_key(pod.metadata)
        if event.type == "DELETED" or TRACKING_FINALIZER not in pod.metadata.finalizers:
            self._released.pop(pod.metadata.uid, None)
        owner_key = f"{pod.metadata.namespace}/{ref.name}"
        owned = self._owned[ref.uid]
        if event.type == "DELETED":
            if key in owned:
                owned.discard(key)
                self.expectations.observe(owner_key, deletes=1)
        else:
            if key not in owned:
                owned.add(key)
                self.expectations.observe(owner_key, adds=1)
            job = self._jobs.store.get(owner_key)
            if TRACKING_FINALIZER in pod.metadata.finalizers and (
                job is None or job.metadata.uid != ref.uid
            ):
                await self.queue.add(_ORPHAN + key)
        await self.queue.add(owner_key)

    # --- sync ----------------------------------------------------------------------------
    async def _sync(self, key: str) -> None:
        if key.startswith(_ORPHAN):
            await self._release_orphan(key[len(_ORPHAN) :])
            return
        job = self._jobs.store.get(key)
        if job is None:
            return
        try:
            await self._sync_job(key, job)
        except Conflict:
            self.queue.add_after(key, 0.5)  # the Job moved on; read it again
        except NotFound:
            return
        except FleetError as exc:
            log.info("job %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def _release_orphan(self, pod_key: str) -> None:
        pod = self._pods.store.get(pod_key)
        if pod is None or TRACKING_FINALIZER not in pod.metadata.finalizers:
            return
        ref = controller_of(pod.metadata)
        if ref is not None:
            job = self._jobs.store.get(f"{pod.metadata.namespace}/{ref.name}")
            if job is not None and job.metadata.uid == ref.uid:
                return
        await self._remove_finalizer(pod)

    async def _remove_finalizer(self, pod: KObject) -> None:
        self._released[pod.metadata.uid] = self._clock()
        rest = [f for f in pod.metadata.finalizers if f != TRACKING_FINALIZER]
        try:
            await self._rest.merge_patch(
                PODS.path(pod.metadata.namespace, pod.metadata.name),
                {"metadata": {"finalizers": rest or None}},
            )
        except NotFound:
            pass

    def _stale(self, job: KObject) -> bool:
        """Whether our last status write of ``job`` has not come back through the watch yet
        (then its event queues the Job again); presumed lost after ``expectations_timeout``."""
        unseen = self._unseen_writes.get(job.metadata.uid)
        if unseen is None:
            return False
        if self._clock() - unseen[1] > self.settings.expectations_timeout:
            del self._unseen_writes[job.metadata.uid]
            return False
        return True

    def _counted_already(self, pod: KObject) -> bool:
        since = self._released.get(pod.metadata.uid)
        if since is None:
            return False
        if self._clock() - since > self.settings.expectations_timeout:
            del self._released[pod.metadata.uid]
            return False
        return True

    async def _sync_job(self, key: str, job: KObject) -> None:
        if self._stale(job):
            return
        meta = job.metadata
        spec = job.spec
        pods = controlled(meta.uid, self._owned.get(meta.uid, ()), self._pods.store)
        status: dict[str, Any] = dict(job.status)
        base: Mapping[str, Any] = job.status
        # ``base``: the status as last stored, what a merge patch applies to.
        rv = meta.resource_version
        now = self._wall()
        finished = _true(status, "Complete") or _true(status, "Failed")

        # 1. Count finished pods exactly once (uncountedTerminatedPods, then the finalizer).
        uncounted = status.get("uncountedTerminatedPods") or {}
        pending_ok = list(uncounted.get("succeeded") or [])
        pending_bad = list(uncounted.get("failed") or [])
        pending = set(pending_ok) | set(pending_bad)
        newly = [
            p
            for p in pods
            if TRACKING_FINALIZER in p.metadata.finalizers
            and _done(p)
            and p.metadata.uid not in pending
            and not self._counted_already(p)
        ]
        indexed = spec.get("completionMode") == "Indexed"
        completed_indexes = parse_indexes(status.get("completedIndexes"))
        if newly and not finished:
            for p in newly:
                (pending_ok if _finished_ok(p) else pending_bad).append(p.metadata.uid)
            status["uncountedTerminatedPods"] = self._uncounted(pending_ok, pending_bad)
            answer = await self._write_status(job, base, status, rv)
            base = dict(answer.get("status") or {})
            rv = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        by_uid = {p.metadata.uid: p for p in pods}
        for p in [*newly, *(by_uid[u] for u in pending if u in by_uid)]:
            if TRACKING_FINALIZER in p.metadata.finalizers:
                await self._remove_finalizer(p)
        if pending_ok or pending_bad:
            for uid in pending_ok:
                pod = by_uid.get(uid)
                index = _index_of(pod) if pod is not None else None
                if indexed and index is not None:
                    completed_indexes.add(index)
            status["succeeded"] = int(status.get("succeeded") or 0) + len(pending_ok)
            status["failed"] = int(status.get("failed") or 0) + len(pending_bad)
            status["uncountedTerminatedPods"] = {}
            if indexed:
                status["completedIndexes"] = format_indexes(completed_indexes)

        succeeded = int(status.get("succeeded") or 0)
        failed = int(status.get("failed") or 0)
        active = [p for p in pods if not _done(p)]
        terminating = [
            p for p in pods if p.metadata.deletion_timestamp is not None and not _terminal(p)
        ]
        if finished:
            await self._write_changes(job, base, status, rv, active, terminating)
            self._expire(key, job, now)
            return

        # 2. Has the Job succeeded or failed?
        completions = spec.get("completions")
        target = _true(status, "FailureTarget") or _true(status, "SuccessCriteriaMet")
        if not target:
            reason = self._failure_reason(spec, status, failed, active, now)
            if reason is not None:
                self._set_condition(status, "FailureTarget", "True", reason, now)
            elif (completions is not None and succeeded >= int(completions)) or (
                completions is None and succeeded > 0 and not active
            ):
                self._set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached", now)
        if _true(status, "FailureTarget") or _true(status, "SuccessCriteriaMet"):
            await self._pod_deleter.delete(key, active)
            if not active and not terminating:
                if _true(status, "FailureTarget"):
                    cond = condition(status, "FailureTarget") or {}
                    self._set_condition(status, "Failed", "True", str(cond.get("reason")), now)
                else:
                    self._set_condition(status, "Complete", "True", "CompletionsReached", now)
                    status["completionTime"] = rfc3339(now)
            await self._write_changes(job, base, status, rv, active, terminating)
            if _true(status, "Complete") or _true(status, "Failed"):
                self._expire(key, job, now)
            return

        # 3. Suspended: no pods. Running: keep the right number of them.
        if spec.get("suspend"):
            await self._pod_deleter.delete(key, active)
            if not _true(status, "Suspended"):
                self._set_condition(status, "Suspended", "True", "JobSuspended", now)
            status.pop("startTime", None)
        else:
            if _true(status, "Suspended"):
                self._set_condition(status, "Suspended", "False", "JobResumed", now)
            if not status.get("startTime"):
                status["startTime"] = rfc3339(now)
            await self._scale(key, job, active, succeeded, failed, completed_indexes)
            deadline = spec.get("activeDeadlineSeconds")
            start = parse_time(status.get("startTime"))
            if isinstance(deadline, int) and start is not None:
                self.queue.add_after(key, max(0.0, start + deadline - now) + 0.5)
        await self._write_changes(job, base, status, rv, active, terminating)

    def _failure_reason(
        self,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        failed: int,
        active: list[KObject],
        now: float,
    ) -> str | None:
        restarts = 0
        if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(
                int(c.get("restartCount") or 0)
                for p in active
                for c in p.status.get("containerStatuses") or ()
            )
        if failed + restarts > int(spec.get("backoffLimit", 6)):
            return "BackoffLimitExceeded"
        deadline = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if isinstance(deadline, int) and start is not None and now - start >= deadline:
            return "DeadlineExceeded"
        return None

    async def _scale(
        self,
        key: str,
        job: KObject,
        active: list[KObject],
        succeeded: int,
        failed: int,
        completed_indexes: set[int],
    ) -> None:
        if not self.expectations.satisfied(key):
            return
        spec = job.spec
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        if completions is None:
            wanted = parallelism if succeeded == 0 else 0
        else:
            wanted = min(parallelism, max(0, int(completions) - succeeded))
        diff = wanted - len(active)
        if diff < 0:
            newest_first = sorted(
                active,
                key=lambda p: (
                    not p.spec.get("nodeName"),
                    p.metadata.creation_timestamp.timestamp()
                    if p.metadata.creation_timestamp
                    else 0.0,
                ),
                reverse=True,
            )
            await self._pod_deleter.delete(
                key, newest_first[: min(-diff, self.settings.burst_pods)]
            )
            return
        if diff == 0:
            return
        wait = self._backoff_wait(job, failed)
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        indexes: list[int | None] = [None] * min(diff, self.settings.burst_pods)
        if spec.get("completionMode") == "Indexed" and completions is not None:
            busy = {_index_of(p) for p in active}
            free = [
                i for i in range(int(completions)) if i not in completed_indexes and i not in busy
            ]
            indexes = list(free[: len(indexes)])
        await self._create_pods(key, job, indexes)

    def _backoff_wait(self, job: KObject, failed: int) -> float:
        """Seconds still to wait before replacing failed pods (0 when none failed)."""
        if failed == 0:
            return 0.0
        uid = job.metadata.uid
        seen = self._last_failure.get(uid)
        if seen is None or seen[0] != failed:
            seen = self._last_failure[uid] = (failed, self._clock())
        delay = min(self.settings.backoff_max, self.settings.backoff_base * 2.0 ** (failed - 1))
        return max(0.0, seen[1] + delay - self._clock())

    async def _create_pods(self, key: str, job: KObject, indexes: list[int | None]) -> None:
        template = job.spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        meta = job.metadata
        self.expectations.expect(key, len(indexes), 0)
        path = PODS.path(meta.namespace)
        for done, index in enumerate(indexes):
            pod_meta: dict[str, Any] = {
                "generateName": f"{meta.name}-",
                "namespace": meta.namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "ownerReferences": [owner_reference(job, JOBS.api_version, "Job")],
                "finalizers": [*(tmeta.get("finalizers") or []), TRACKING_FINALIZER],
            }
            annotations = dict(tmeta.get("annotations") or {})
            pod_spec = dict(template.get("spec") or {})
            if index is not None:
                pod_meta["generateName"] = f"{meta.name}-{index}-"
                annotations[INDEX_ANNOTATION] = str(index)
                pod_meta["labels"][INDEX_ANNOTATION] = str(index)
                pod_spec.setdefault("hostname", f"{meta.name}-{index}")
                pod_spec["containers"] = [
                    {**c, "env": [*(c.get("env") or []), _index_env()]}
                    for c in pod_spec.get("containers") or []
                ]
            if annotations:
                pod_meta["annotations"] = annotations
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}
            try:
                created = await self._rest.create(path, body)
            except FleetError as exc:
                log.info("job %s: creating a pod failed: %s", key, exc)
                self.expectations.observe(key, adds=len(indexes) - done)
                self.queue.add_after(key, 1.0)
                return
            name = (created.get("metadata") or {}).get("name", "")
            self._events.record(
                job, JOBS, "Normal", "SuccessfulCreate", f"Created pod: {name}", CONTROLLER
            )

    # --- status ---------------------------------------------------------------------------
    @staticmethod
    def _uncounted(ok: list[str], bad: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if ok:
            out["succeeded"] = ok
        if bad:
            out["failed"] = bad
        return out

    def _set_condition(
        self, status: dict[str, Any], kind: str, value: str, reason: str, now: float
    ) -> None:
        stamp = rfc3339(now)
        message = _MESSAGES.get(reason, "")
        if reason == "JobSuspended":
            message = "Job suspended"
        elif reason == "JobResumed":
            message = "Job resumed"
        conditions = [c for c in status.get("conditions") or () if c.get("type") != kind]
        old = condition(status, kind)

        transition = stamp
        if old is not None and old.get("status") == value:
            transition = str(old.get("lastTransitionTime") or stamp)
        cond = {
            "type": kind,
            "status": value,
            "lastProbeTime": stamp,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }
        if old is not None:
            conditions = [cond if c.get("type") == kind else c for c in status["conditions"]]
        else:
            conditions.append(cond)
        status["conditions"] = conditions

    async def _write_changes(
        self,
        job: KObject,
        base: Mapping[str, Any],
        status: dict[str, Any],
        rv: str | None,
        active: list[KObject],
        terminating: list[KObject],
    ) -> None:
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if is_ready(p))
        status["terminating"] = len(terminating)
        status.setdefault("uncountedTerminatedPods", {})
        for name in ("active", "succeeded", "failed"):
            if not status.get(name):
                status.pop(name, None)  # omitempty int32s
        if status != base:
            await self._write_status(job, base, status, rv)
            for cond in status.get("conditions") or ():
                before = condition(base, str(cond.get("type")))
                if before is None or before.get("status") != cond.get("status"):
                    self._tell(
                        job, str(cond.get("type")), str(cond.get("status")),
                        str(cond.get("reason")), str(cond.get("message")),
                    )  # fmt: skip

    def _tell(self, job: KObject, kind: str, value: str, reason: str, message: str) -> None:
        """The events the real controller gives a condition change."""
        if kind == "Complete":
            self._events.record(job, JOBS, "Normal", "Completed", "Job completed", CONTROLLER)
        elif kind == "Failed":
            self._events.record(job, JOBS, "Warning", reason, message, CONTROLLER)
        elif kind == "Suspended":
            event = (
                ("Suspended", "Job suspended") if value == "True" else ("Resumed", "Job resumed")
            )
            self._events.record(job, JOBS, "Normal", *event, CONTROLLER)

    async def _write_status(
        self, job: KObject, base: Mapping[str, Any], status: dict[str, Any], rv: str | None
    ) -> dict[str, Any]:
        """A merge patch of ``status`` over ``base``, conditional on ``rv``; the stored Job."""
        body: dict[str, Any] = {"status": merge_patch_body(base, status)}
        if rv:
            body["metadata"] = {"resourceVersion": rv}
        stored = await self._rest.merge_patch(
            JOBS.path(job.metadata.namespace, job.metadata.name, "status"), body
        )
        written = str((stored.get("metadata") or {}).get("resourceVersion") or "")
        if written and written != job.metadata.resource_version:
            self._unseen_writes[job.metadata.uid] = (written, self._clock())
        return stored

    def _expire(self, key: str, job: KObject, now: float) -> None:
        """ttlSecondsAfterFinished: requeue until due, then mark for deletion."""
        ttl = job.spec.get("ttlSecondsAfterFinished")
        if not isinstance(ttl, int):
            return
        finished_at = None
        for kind in ("Complete", "Failed"):
            cond = condition(job.status, kind)
            if cond is not None and cond.get("status") == "True":
                finished_at = parse_time(cond.get("lastTransitionTime"))
        if finished_at is None:
            self.queue.add_after(key, 1.0)
            return
        remaining = finished_at + ttl - now
        if remaining > 0:
            self.queue.add_after(key, remaining)
            return
        self._doomed.add(key)

    async def _sync_or_expire(self, key: str) -> None:
        await self._sync(key)
        if key in self._doomed:
            self._doomed.discard(key)
            job = self._jobs.store.get(key)
            if job is None:
                return
            try:
                await self._rest.delete(
                    JOBS.path(job.metadata.namespace, job.metadata.name),
                    preconditions_uid=job.metadata.uid,
                    propagation_policy="Background",
                )
            except NotFound:
                pass
            except FleetError as exc:
                log.info("job %s: TTL deletion failed: %s", key, exc)
                self.queue.add_after(key, 1.0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._jobs, self._pods)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync_or_expire)


def _terminal(pod: KObject) -> bool:
    return pod.status.get("phase") in ("Succeeded", "Failed")


def _index_env() -> dict[str, Any]:
    return {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {
            "fieldRef": {
                "fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']",
            }
        },
    }


def merge_patch_body(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch body: ``new`` plus ``None`` for the keys it dropped from ``old`` (nested)."""
    body = dict(new)
    for k, v in old.items():
        if k not in new:
            body[k] = None
        elif isinstance(v, Mapping) and isinstance(new[k], Mapping):
            body[k] = merge_patch_body(v, new[k])
    return body
