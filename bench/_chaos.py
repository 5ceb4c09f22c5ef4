"""The chaos scenarios: disturb the fleet's nodes through their Node CRs, time the settling.

Each runs after the usual ``nodes-ready`` and ``pods-running`` steps of
:class:`~bench._runner._Run` (``run``), then:

===============  ==============================================================
restart-storm    every Node CR gets a new kubelet-restart annotation
                 (:data:`~fleet.wire.KUBELET_RESTART_ANNOTATION`) at ``rate``:
                 its shard restarts that kubelet (re-registers, relists its
                 pods, rewrites its status). Settled: every node has reported
                 since its restart, all Ready, none tainted.
partition        ``fraction`` of the nodes (drawn from the run id) get
                 ``spec.suspend: true`` (their Leases and status stop), ``down``
                 seconds later ``false``. Settled: all Ready, none tainted.
node-flap        the same ``fraction`` suspended for ``down`` every ``period``,
                 for ``duration``; settled after the last resume.
pod-churn        a MockStatus policy puts ``fraction`` of the run's pods in
                 CrashLoopBackOff (``restarts``, the kubelet's back-off), then
                 ``churn`` creates and deletes pods at ``rate`` on top of them.
===============  ==============================================================

What the control plane did is :class:`~bench._report.ChaosResult`: the
apiserver's requests and latencies by verb from the disturbance's first write
to the settling (two ``/metrics`` scrapes), watches ended and started over that
window (kube-apiserver counts a WATCH request when it ends; those started are
the ended ones plus the change in open watches), the NotReady peak, nodes
tainted unreachable/not-ready (NoExecute), pods evicted (the bench deletes none
of the standing pods), restarts counted, and kube-apiserver's and etcd's memory
(peak RSS of the processes the bench started, and the peak of their
``process_resident_memory_bytes``; "not exposed" on the sandbox).

On kube-controller-manager the tainting is rate-limited: NotReady nodes get
the NoExecute taint at ``--node-eviction-rate`` (0.1 node/s), none at all while
a zone is fully disrupted, so a partition of many nodes taints only a few of
them within the 40 s grace period plus ``down``; ``nodes_tainted`` and
``pods_evicted`` count what the controller did, not what it could have done.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from bench._promtext import Scrape, diff
from bench._report import ChaosResult, ComponentMemory, StepResult
from fleet.api import GROUP, VERSION
from fleet.wire import KUBELET_RESTART_ANNOTATION

if TYPE_CHECKING:
    from bench._runner import _Run

__all__ = ["control_plane_memory", "run_chaos", "watch_restarts"]


def _cr_path(run: _Run, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{run.spec.node_namespace}/nodes/{name}"


def _chosen(run: _Run) -> list[str]:
    """The disturbed share of the nodes, drawn from the run id (a rerun draws others)."""
    count = max(1, round(run.spec.fraction * len(run.node_names)))
    return sorted(random.Random(run.run_id).sample(run.node_names, count))


async def _patch_all(
    run: _Run, names: Sequence[str], body: Callable[[str], dict[str, Any]]
) -> None:
    """Merge-patch each node's CR through the write pool (``rate``, ``concurrency``)."""

    async def patch(name: str) -> None:
        await run.writer.merge_patch(_cr_path(run, name), body(name))

    await run.write_pool(names, patch, f"patch nodes.{GROUP}")


async def _suspend(run: _Run, names: Sequence[str], value: bool) -> None:
    await _patch_all(run, names, lambda _: {"spec": {"suspend": value}})


async def _crash_policy(run: _Run) -> None:
    """A MockStatus over the run's pods: ``fraction`` of them crash-loop, the rest run."""
    crashing = round(run.spec.fraction * 100)
    branches = []
    if crashing < 100:
        branches.append(
            {
                "name": "steady",
                "weight": 100 - crashing,
                "steps": [{"after": "2s", "phase": "Running"}],
            }
        )
    if crashing > 0:
        restarts = {"runFor": f"{run.spec.crash_run_for:g}s", "exitCode": 1}
        branches.append(
            {
                "name": "crashing",
                "weight": crashing,
                "steps": [
                    {"after": "2s", "phase": "Running", "containers": [{"restarts": restarts}]}
                ],
            }
        )
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{run.spec.namespace}/mockstatuses"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MockStatus",
        "metadata": {"name": f"{run.prefix}crash", "labels": run.labels()},
        "spec": {
            "selector": {"matchLabels": run.labels()},
            "priority": 0,
            "steps": [{"after": "1s", "phase": "Running"}],
            "branches": branches,
        },
    }
    await run.client.create(path, body)
    run.cleanup_extra.append(path)


async def _settle(run: _Run, reported_after: dict[str, float] | None) -> float | None:
    """Seconds until every node is Ready and untainted (and has reported after the time
    given for it); None when the timeout passed first."""
    nodes = run.nodes
    names = set(run.node_names)

    def settled() -> int:
        if nodes.down_tainted & names or len(nodes.ready & names) < len(names):
            return 0
        if reported_after is not None and any(
            nodes.last_seen.get(name, -math.inf) <= when for name, when in reported_after.items()
        ):
            return 0
        return 1

    start = trio.current_time()
    run.progress.begin("settle", 1)
    with trio.move_on_after(run.spec.timeout):
        await nodes.wait_until(settled, 1, "settle", run.progress)
        run.progress.end("settle")
        return trio.current_time() - start
    run.progress.end("settle")
    return None


async def _disturb(run: _Run) -> tuple[int, dict[str, float] | None]:
    """The disturbance itself: nodes disturbed, and (restart-storm) when each was restarted."""
    kind = run.spec.type
    if kind == "restart-storm":
        restarted: dict[str, float] = {}
        token = f"{run.run_id}-{trio.current_time():.0f}"

        def body(name: str) -> dict[str, Any]:
            restarted[name] = trio.current_time()
            return {"metadata": {"annotations": {KUBELET_RESTART_ANNOTATION: token}}}

        await _patch_all(run, run.node_names, body)
        return len(restarted), restarted
    if kind == "partition":
        chosen = _chosen(run)
        await _suspend(run, chosen, True)
        await trio.sleep(run.spec.down)
        await _suspend(run, chosen, False)
        return len(chosen), None
    if kind == "node-flap":
        chosen = _chosen(run)
        end = trio.current_time() + run.spec.duration
        while True:
            cycle = trio.current_time()
            await _suspend(run, chosen, True)
            await trio.sleep(run.spec.down)
            await _suspend(run, chosen, False)
            if cycle + run.spec.period >= end:
                return len(chosen), None
            await trio.sleep_until(cycle + run.spec.period)
    # pod-churn: the churn is the disturbance; the nodes are left alone.
    await run.churn(first=run.spec.pods)
    return 0, None


def watch_restarts(first: Scrape, last: Scrape, ended: float) -> tuple[float, float]:
    """(watches ended, watches started) between two scrapes: ``ended`` is the WATCH
    count of ``apiserver_request_total`` between them, which kube-apiserver records when
    a watch returns; those started are the ended ones plus the change in open watches."""
    return ended, max(0.0, ended + last.watches() - first.watches())


def control_plane_memory(
    peaks: Mapping[str, int],
    apiserver_resident: Sequence[float | None],
    etcd_resident: Sequence[float],
) -> tuple[ComponentMemory, ...]:
    """kube-apiserver's and etcd's memory over the window: the peak RSS of their processes
    (``peaks``: the bench's sampler, by component) and the peak of each one's
    ``process_resident_memory_bytes`` (None: not exposed); the sandbox's process where the
    bench sampled one (the sandbox has no such gauge and no etcd)."""

    def peak(values: Iterable[float | None]) -> int | None:
        seen = [v for v in values if v is not None]
        return round(max(seen)) if seen else None

    out = [
        ComponentMemory(
            name="kube-apiserver",
            peak_rss_bytes=peaks.get("kube-apiserver"),
            metrics_peak_bytes=peak(apiserver_resident),
        ),
        ComponentMemory(
            name="etcd", peak_rss_bytes=peaks.get("etcd"), metrics_peak_bytes=peak(etcd_resident)
        ),
    ]
    if "sandbox" in peaks:
        out.append(ComponentMemory(name="sandbox", peak_rss_bytes=peaks["sandbox"]))
    return tuple(out)


async def run_chaos(run: _Run) -> bool:
    """The chaos scenario ``run.spec.type`` after its nodes are Ready (``run.scenario``);
    False when the cluster did not settle within the timeout."""
    if run.spec.type == "pod-churn":
        await _crash_policy(run)
    if run.spec.pods:
        await run.pods_running(run.spec.pods)
    standing = set(run.pods.phase)
    gone_before = (run.pods.deleted | run.pods.terminating) & standing
    run.nodes.mark()
    first: Scrape | None = await run.scrape()
    t_first = trio.current_time()
    window = run.now()
    run.sampler.mark_window()
    await run.scrape_etcd()
    mark = run.cpu_mark()
    start = trio.current_time()
    disturbed, reported_after = await _disturb(run)
    disturb_seconds = trio.current_time() - start
    if run.spec.type != "pod-churn":  # its churn step is its own
        run.steps.append(
            StepResult(
                name=run.spec.type,
                seconds=disturb_seconds,
                target=disturbed,
                reached=disturbed,
                ok=True,
                per_second=disturbed / disturb_seconds if disturb_seconds > 0 else 0.0,
                reason="",
                cpu_seconds=run.cpu_since(mark),
            )
        )
    mark = run.cpu_mark()
    settle = await _settle(run, reported_after)
    run.steps.append(
        StepResult(
            name="settle",
            seconds=settle if settle is not None else run.spec.timeout,
            target=len(run.node_names),
            reached=len(run.nodes.ready & set(run.node_names)),
            ok=settle is not None,
            per_second=0.0,
            reason=""
            if settle is not None
            else f"not settled within {run.spec.timeout:g} s (NotReady or tainted nodes left)",
            cpu_seconds=run.cpu_since(mark),
        )
    )
    last: Scrape | None = await run.scrape()
    await run.scrape_etcd()
    api = None
    ended = started = None
    if first is not None and last is not None:
        delta = diff(first, last, seconds=trio.current_time() - t_first)
        api = run.apiserver_summary(delta)
        ended, started = watch_restarts(first, last, api.requests_by_verb.get("WATCH", 0.0))
    scraped = [s for t, s in run.scrapes if t >= window] + [
        s for s in (first, last) if s is not None
    ]
    evicted = ((run.pods.deleted | run.pods.terminating) & standing) - gone_before
    run.chaos = ChaosResult(
        kind=run.spec.type,
        nodes_disturbed=disturbed,
        disturb_seconds=disturb_seconds,
        settle_seconds=settle,
        not_ready_peak=run.nodes.not_ready_peak,
        nodes_tainted=len(run.nodes.ever_tainted & set(run.node_names)),
        pods_evicted=len(evicted),
        container_restarts=sum(run.pods.restarts.values()),
        watch_requests=ended,
        watches_started=started,
        apiserver=api,
        memory=control_plane_memory(
            run.sampler.window_peaks(),
            [s.resident_bytes for s in scraped],
            [v for t, v in run.etcd_resident if t >= window],
        ),
    )
    if settle is None:
        run.notes.append(f"{run.spec.type}: the cluster did not settle within the timeout")
    return settle is not None
