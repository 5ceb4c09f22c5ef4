"""The CronJob controller: makes a Job from a CronJob's template at each scheduled time.

As kube-controller-manager's ``cronjob`` controller (the v2 one), as an API
client, on an injected wall clock:

- the schedule (``spec.schedule``, standard cron, see :mod:`fleet.api`) is
  read in ``spec.timeZone`` (UTC when unset; the real controller uses its
  process's zone); the most recent scheduled time since ``lastScheduleTime``
  (or the CronJob's creation) is the one run, the others missed — with more
  than 100 missed the run still happens, as the real controller does it;
- ``startingDeadlineSeconds``: a time older than that is skipped;
- the Job is ``<cronjob>-<minutes since the epoch>`` (so one time makes one
  Job, whoever retries), with the template's labels and annotations, the
  ``batch.kubernetes.io/cronjob-scheduled-timestamp`` annotation and a
  controller ownerReference;
- ``concurrencyPolicy``: ``Allow``; ``Forbid`` skips a time while a Job is
  active; ``Replace`` deletes the active Jobs (``Background``) first;
- ``suspend``: nothing is started (times passed meanwhile are not caught up
  beyond the most recent, as above);
- status: ``active`` (references to unfinished Jobs), ``lastScheduleTime``,
  ``lastSuccessfulTime``; finished Jobs beyond ``successfulJobsHistoryLimit``
  and ``failedJobsHistoryLimit`` are deleted, oldest first;
- the CronJob is queued again for its next scheduled time (one delayed key in
  the work queue, no task per CronJob).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec
import trio

from fleet.api import CronSchedule, parse_cron, parse_time_zone
from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._jobs import merge_patch_body
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import (
    CRONJOBS,
    JOBS,
    KObject,
    condition,
    controlled,
    controller_of,
    parse_time,
    rfc3339,
)
from fleet.controlplane._rest import Rest
from fleet.errors import AlreadyExists, ConfigError, FleetError, InputError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = ["SCHEDULED_ANNOTATION", "CronJobController", "CronJobSettings"]

log = logging.getLogger(__name__)

CONTROLLER = "cronjob-controller"
"""The events' source component, as kube-controller-manager names this controller."""
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KObject)
TOO_MANY_MISSED = 100
"""Missed start times beyond which the real controller warns (``TooManyMissedTimes``)."""


@dataclass(frozen=True, slots=True)
class CronJobSettings:
    """How the CronJob controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """CronJobs synced at once (``--concurrent-cron-job-syncs``)."""
    requeue_slack: float = 0.1
    """Seconds after a scheduled time the CronJob is looked at again (the clock's rounding)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("cronjobs: workers must be >= 1")


def _finished(job: KObject) -> str | None:
    """``Complete`` or ``Failed`` once a Job has finished, else None."""
    for kind in ("Complete", "Failed"):
        cond = condition(job.status, kind)
        if cond is not None and cond.get("status") == "True":
            return kind
    return None


def _job_ref(job: KObject) -> dict[str, Any]:
    return {
        "kind": "Job",
        "namespace": job.metadata.namespace,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "apiVersion": JOBS.api_version,
        "resourceVersion": job.metadata.resource_version,
    }


def _created(job: KObject) -> float:
    ts = job.metadata.creation_timestamp
    return ts.timestamp() if ts is not None else 0.0


class CronJobController:
    """Starts CronJobs' Jobs on schedule, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: CronJobSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else CronJobSettings()
        self._rest = rest
        self._wall = wall_clock
        self._informers = informers
        self._cronjobs: Informer[KObject] = informers.get(CRONJOBS)
        self._jobs: Informer[KObject] = informers.get(JOBS)
        self._cronjobs.subscribe(self._on_cronjob)
        self._jobs.subscribe(self._on_job)
        self.queue = WorkQueue("cronjobs", max_keys=s.max_queue, clock=clock)
        self._owned: dict[str, set[str]] = defaultdict(set)
        """CronJob uid -> keys of the Jobs it controls."""

    async def _on_cronjob(self, event: WatchEvent[KObject]) -> None:
        if event.type == "DELETED":
            self._owned.pop(event.obj.metadata.uid, None)
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_job(self, event: WatchEvent[KObject]) -> None:
        job = event.obj
        ref = controller_of(job.metadata)
        if ref is None or ref.kind != "CronJob":
            return
        key = object_key(job.metadata)
        if event.type == "DELETED":
            self._owned[ref.uid].discard(key)
        else:
            self._owned[ref.uid].add(key)
        await self.queue.add(f"{job.metadata.namespace}/{ref.name}")

    async def _sync(self, key: str) -> None:
        cj = self._cronjobs.store.get(key)
        if cj is None:
            return
        try:
            await self._sync_cronjob(key, cj)
        except NotFound:
            return
        except FleetError as exc:
            log.info("cronjob %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def _sync_cronjob(self, key: str, cj: KObject) -> None:
        spec, meta = cj.spec, cj.metadata
        status: dict[str, Any] = dict(cj.status)
        jobs = controlled(meta.uid, self._owned.get(meta.uid, ()), self._jobs.store)
        by_name = {j.metadata.name: j for j in jobs}
        running = sorted((j for j in jobs if _finished(j) is None), key=_created)
        for job in jobs:
            if _finished(job) == "Complete":
                cond = condition(job.status, "Complete") or {}
                done = job.status.get("completionTime") or cond.get("lastTransitionTime")
                done_at, last = parse_time(done), parse_time(status.get("lastSuccessfulTime"))
                if done_at is not None and (last is None or done_at > last):
                    status["lastSuccessfulTime"] = rfc3339(done_at)
                    self._events.record(
                        cj, CRONJOBS, "Normal", "SawCompletedJob",
                        f"Saw completed job: {job.metadata.name}, condition: Complete", CONTROLLER,
                    )  # fmt: skip
        await self._clean_history(key, cj, jobs)
        if meta.deletion_timestamp is not None:
            await self._write_status(cj, status, running)
            return
        try:
            schedule = parse_cron(str(spec.get("schedule") or ""))
            tz = parse_time_zone(spec.get("timeZone"))
        except InputError as exc:
            log.info("cronjob %s: unusable schedule: %s", key, exc)
            await self._write_status(cj, status, running)
            return
        now = datetime.fromtimestamp(self._wall(), UTC)
        earliest = parse_time(status.get("lastScheduleTime"))
        if earliest is None:
            earliest = (
                meta.creation_timestamp.timestamp() if meta.creation_timestamp else now.timestamp()
            )
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int):
            earliest = max(earliest, now.timestamp() - deadline)
        start = datetime.fromtimestamp(earliest, UTC)
        if not spec.get("suspend"):
            scheduled, missed = _most_recent(schedule, start, now, tz)
            if missed > TOO_MANY_MISSED:
                log.info("cronjob %s: too many missed start times (%d)", key, missed)
            if scheduled is not None:
                name = f"{meta.name}-{int(scheduled.timestamp()) // 60}"
                if name not in by_name:
                    policy = spec.get("concurrencyPolicy") or "Allow"
                    # Forbid with a Job still running skips this time (it stays due).
                    if not (policy == "Forbid" and running):
                        if policy == "Replace":
                            for old in running:
                                await self._delete_job(key, old)
                            running = []
                        made = await self._create_job(key, cj, name, scheduled, tz)
                        if made is not None:
                            running.append(made)
                        status["lastScheduleTime"] = rfc3339(scheduled.timestamp())
        await self._write_status(cj, status, running)
        upcoming = schedule.next_after(now, tz)
        if upcoming is not None:
            wait = (upcoming - now).total_seconds() + self.settings.requeue_slack
            self.queue.add_after(key, wait)

    async def _create_job(
        self, key: str, cj: KObject, name: str, scheduled: datetime, tz: tzinfo
    ) -> KObject | None:
        template = cj.spec.get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        annotations = {
            **(tmeta.get("annotations") or {}),
            SCHEDULED_ANNOTATION: scheduled.astimezone(tz).isoformat().replace("+00:00", "Z"),
        }
        body: dict[str, Any] = {
            "apiVersion": JOBS.api_version,
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": cj.metadata.namespace,
                "annotations": annotations,
                "ownerReferences": [owner_reference(cj, CRONJOBS.api_version, "CronJob")],
            },
            "spec": template.get("spec") or {},
        }
        if tmeta.get("labels"):
            body["metadata"]["labels"] = dict(tmeta["labels"])
        try:
            created = await self._rest.create(JOBS.path(cj.metadata.namespace), body)
        except AlreadyExists:
            return None  # made already; the watch brings it
        except FleetError as exc:
            log.info("cronjob %s: creating job %s failed: %s", key, name, exc)
            self.queue.add_after(key, 1.0)
            return None
        self._events.record(
            cj, CRONJOBS, "Normal", "SuccessfulCreate", f"Created job {name}", CONTROLLER
        )
        return _view(created)

    async def _delete_job(self, key: str, job: KObject) -> None:
        try:
            await self._rest.delete(
                JOBS.path(job.metadata.namespace, job.metadata.name),
                preconditions_uid=job.metadata.uid,
                propagation_policy="Background",
            )
        except NotFound:
            return
        except FleetError as exc:
            log.info("cronjob %s: deleting job %s failed: %s", key, job.metadata.name, exc)
            return
        cj = self._cronjobs.store.get(key)
        if cj is not None:
            self._events.record(
                cj, CRONJOBS, "Normal", "SuccessfulDelete", f"Deleted job {job.metadata.name}",
                CONTROLLER,
            )  # fmt: skip

    async def _clean_history(self, key: str, cj: KObject, jobs: list[KObject]) -> None:
        for kind, field, default in (
            ("Complete", "successfulJobsHistoryLimit", 3),
            ("Failed", "failedJobsHistoryLimit", 1),
        ):
            limit = cj.spec.get(field, default)
            if not isinstance(limit, int):
                continue
            done = sorted((j for j in jobs if _finished(j) == kind), key=_created)
            for job in done[: max(0, len(done) - limit)]:
                await self._delete_job(key, job)

    async def _write_status(
        self, cj: KObject, status: dict[str, Any], running: list[KObject]
    ) -> None:
        if running:
            status["active"] = [_job_ref(j) for j in running]
        else:
            status.pop("active", None)
        if _comparable(status) == _comparable(cj.status):
            return
        await self._rest.merge_patch(
            CRONJOBS.path(cj.metadata.namespace, cj.metadata.name, "status"),
            {"status": merge_patch_body(cj.status, status)},
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._cronjobs, self._jobs)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)


def _most_recent(
    schedule: CronSchedule, start: datetime, now: datetime, tz: tzinfo
) -> tuple[datetime | None, int]:
    """The latest scheduled time in ``(start, now]`` and how many there are."""
    latest: datetime | None = None
    count = 0
    while True:
        batch = schedule.times_between(start, now, tz, limit=1000)
        count += len(batch)
        if not batch:
            return latest, count
        latest = start = batch[-1]
        if len(batch) < 1000:
            return latest, count


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status without the Jobs' resourceVersions (they change with every Job status write)."""
    out = dict(status)
    if out.get("active"):
        out["active"] = [
            {k: v for k, v in r.items() if k != "resourceVersion"} for r in out["active"]
        ]
    return out


def _view(obj: dict[str, Any]) -> KObject:
    return _decoder.decode(_encoder.encode(obj))
