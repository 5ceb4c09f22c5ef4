"""A kubelet restart asked for by a Node CR annotation (as a NodeScript kubeletRestart does it), on the autojump clock."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest
import trio

from fleet.kube import MemoryApiserver, MemoryClient, Response
from fleet.wire import KUBELET_RESTART_ANNOTATION
from shards import ShardEngine
from tests.shards.test_engine import (
    CRS,
    EVENTS,
    NODE_LEASES,
    NODES,
    PODS,
    node_cr,
    phase,
    pod,
    settings,
)

wall = MemoryApiserver.wall
POD_LISTS = "/api/v1/pods"


def _restart(api: MemoryApiserver, name: str, token: str) -> None:
    api.patch(f"{CRS}/{name}", {"metadata": {"annotations": {KUBELET_RESTART_ANNOTATION: token}}})


def _starting(api: MemoryApiserver) -> int:
    """Starting Events of the kubelets: POSTed, then PATCHed as a series (count 2, ...)."""
    posted = sum(1 for c in api.log("POST", EVENTS) if c.body["reason"] == "Starting")
    repeated = sum(
        1 for c in api.log("PATCH", EVENTS) if c.body.get("message") == "Starting kubelet."
    )
    return posted + repeated


async def _fleet(api: MemoryApiserver, nursery: trio.Nursery, **shard: object) -> ShardEngine:
    for name in ("n0", "n1"):
        cr = node_cr(name)
        cr["metadata"]["annotations"] = {KUBELET_RESTART_ANNOTATION: "first"}
        api.create(CRS, cr)
        api.create("/api/v1/namespaces/default/pods", pod(f"p-{name}", name))
    engine = ShardEngine(settings(**shard), "0", control=api, wall=wall, rng=random.Random(5))
    await nursery.start(engine.run)
    await trio.sleep(20)
    return engine


async def test_a_changed_annotation_restarts_that_kubelet_only(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    engine = await _fleet(api, nursery)
    assert engine.restarts.restarts == 0  # the value found at start restarts nothing
    assert phase(api, "p-n0") == "Running"
    started, since = _starting(api), len(api.calls)
    _restart(api, "n0", "storm-1")
    await trio.sleep(15)
    calls = api.calls[since:]
    assert engine.restarts.restarts == 1
    # As a starting kubelet (a node script's kubeletRestart, the one implementation): it
    # registers (POST, 409, GET), its whole status reported, its Lease renewed throughout ...
    posts = [c for c in calls if c.method == "POST" and c.path == NODES]
    assert [c.body["metadata"]["name"] for c in posts] == ["n0"]
    assert [c.method for c in calls if c.path == f"{NODES}/n0"] == ["GET"]
    assert set(c.method for c in calls if c.path == f"{NODE_LEASES}/n0") == {"PUT"}
    assert [c for c in calls if c.method == "PATCH" and c.path == f"{NODES}/n0/status"]
    assert _starting(api) > started
    # ... its pods listed again, and still Running.
    lists = [c for c in calls if c.path == "/api/v1/pods" and c.method == "GET"]
    assert [c.params["fieldSelector"] for c in lists] == ["spec.nodeName=n0"]
    assert phase(api, "p-n0") == "Running"
    # n1 was left alone.
    assert not [c for c in calls if c.path in (f"{NODES}/n1", f"{NODES}/n1/status")]
    # The same value again restarts nothing.
    api.patch(f"{CRS}/n0", {"metadata": {"labels": {"other": "change"}}})
    await trio.sleep(5)
    assert engine.restarts.restarts == 1


async def test_a_restart_with_per_node_pod_watches_lists_through_a_new_watch(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    await _fleet(api, nursery, pod_watch="per-node")
    since, restarted_at = len(api.calls), trio.current_time()
    _restart(api, "n1", "storm-1")
    await trio.sleep(15)
    calls = api.calls[since:]
    assert [c.method for c in calls if c.params.get("fieldSelector") == "spec.nodeName=n1"] == [
        "GET",
        "WATCH",
    ]
    lease_puts = [c.at for c in api.log("PUT", f"{NODE_LEASES}/n1")]
    assert len([at for at in lease_puts if at > restarted_at]) >= 1  # renewing again


class _Slow(MemoryClient):
    """A connection on which the requests ``slow(method, path)`` picks take ``delay`` seconds
    to answer (a distant or loaded apiserver); the rest are answered at once."""

    def __init__(
        self, server: MemoryApiserver, delay: float, slow: Callable[[str, str], bool]
    ) -> None:
        super().__init__(server)
        self.delay = delay
        self.slow = slow

    async def request(self, method: str, path: str, **kwargs: object) -> Response:
        if self.slow(method, path):
            await trio.sleep(self.delay)
        return await super().request(method, path, **kwargs)  # type: ignore[arg-type]


def _distant(api: MemoryApiserver) -> _Slow:
    """A connection whose every request takes ``RTT`` seconds to answer."""
    return _Slow(api, RTT, lambda method, path: True)


RTT = 0.1
STORM = 96


async def test_a_restart_storm_restarts_the_kubelets_side_by_side(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # Each restart is round trips in a row (POST, 409, GET): one after another on the eight
    # timer workers, 96 restarts took 12 rounds of them (5,000 nodes: 19 a second).
    api = MemoryApiserver()
    for i in range(STORM):
        api.create(CRS, node_cr(f"n{i}"))
    engine = ShardEngine(settings(), "0", control=_distant(api), wall=wall, rng=random.Random(5))
    await nursery.start(engine.run)
    await trio.sleep(60)
    since = len(api.calls)
    start = trio.current_time()
    for i in range(STORM):
        _restart(api, f"n{i}", "storm")
    await trio.sleep(30)
    gets = [
        c.at for c in api.calls[since:]
        if c.method == "GET" and c.path.startswith(f"{NODES}/n")
    ]  # fmt: skip
    assert len(gets) == STORM  # each registered again (POST, 409, GET)
    assert max(gets) - start < 8 * RTT  # side by side, not 12 rounds of 8 (~2.4 s)


POD_GET = 1.0
BUSY_NODES = 4
PODS_EACH = 16


async def test_a_node_status_report_does_not_wait_behind_pod_work(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # A restarted kubelet's pods are all evaluated at once, each read back with a GET (their
    # statuses unheld once settled): 64 GETs of 1 s on 8 workers. Its status report, due a
    # second later, waited behind them all in the one timer queue (8 s, not 1 s; 5,000
    # nodes: the storm took minutes to settle). A kubelet reports from a loop of its own.
    api = MemoryApiserver()
    for i in range(BUSY_NODES):
        api.create(CRS, node_cr(f"n{i}"))
        for j in range(PODS_EACH):
            api.create(PODS, pod(f"p{i}-{j}", f"n{i}"))
    client = _Slow(  # every GET of one pod takes POD_GET seconds (a loaded apiserver)
        api, POD_GET, lambda method, path: method == "GET" and path.startswith(PODS + "/")
    )
    engine = ShardEngine(settings(), "0", control=client, wall=wall, rng=random.Random(5))
    await nursery.start(engine.run)
    await trio.sleep(30)
    assert all(phase(api, f"p{i}-0") == "Running" for i in range(BUSY_NODES))
    since, now = len(api.calls), trio.current_time()
    timers = engine.ctx.timers
    for key in list(engine.pods.pods):
        timers.schedule(("pod", key), now)  # as PodDriver.kubelet_restarted did
    for key in list(engine.nodes.states):
        timers.schedule(("status", key), now + 0.5)
    await trio.sleep(15)
    calls = api.calls[since:]
    assert len([c for c in calls if c.method == "GET" and c.path.startswith(PODS + "/")]) == (
        BUSY_NODES * PODS_EACH
    )  # the pod work was there
    reports = [
        c.at - now
        for c in calls
        if c.method == "PATCH" and c.path.startswith(NODES + "/") and c.path.endswith("/status")
    ]
    assert len(reports) == BUSY_NODES
    assert max(reports) < 1.0  # due at 0.5 s, not after 8 s of pod reads


PROFILES = pytest.mark.parametrize("profile", ["lean", "kubelet"])
"""The shared pod watch (a restarted node's pods listed by the catch-up workers), and a pod
watch per node (the kubelet traffic profile: the restarted node's watch starts over)."""


@PROFILES
async def test_a_restarted_kubelet_checks_its_pods_against_the_statuses_it_listed(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, profile: str
) -> None:
    # Settled pods' statuses are unheld (memory); evaluated at once after a restart, each was
    # read back with a GET (10,000 GETs in a 5,000-node storm) when the relist brings them all
    # (lean: the catch-up list; kubelet: the list of the node's new pod watch).
    api = MemoryApiserver()
    for i in range(3):
        api.create(PODS, pod(f"p-n0-{i}", "n0"))
    engine = await _fleet(api, nursery, traffic_profile=profile)
    assert engine.pods.per_node == (profile == "kubelet")
    held = {key: bool(r.raw_status) for key, r in engine.pods.pods.items()}
    assert not any(held.values())  # all settled, their statuses let go
    since = len(api.calls)
    _restart(api, "n0", "storm-1")
    await trio.sleep(15)
    calls = api.calls[since:]
    lists = [c for c in calls if c.method == "GET" and c.path == POD_LISTS]
    if profile == "lean":
        # as a kubelet's reflector: from the watch cache (its spec.nodeName index)
        assert [c.params for c in lists] == [
            {"fieldSelector": "spec.nodeName=n0", "limit": "500", "resourceVersion": "0"}
        ]
    else:  # its new watch: a list, then the watch
        assert [
            c.method for c in calls
            if c.path == POD_LISTS and c.params.get("fieldSelector") == "spec.nodeName=n0"
        ] == ["GET", "WATCH"]  # fmt: skip
        assert len(lists) == 1
    assert not [c for c in calls if c.method == "GET" and c.path.startswith(PODS + "/")]
    assert all(phase(api, f"p-n0-{i}") == "Running" for i in range(3))
    # Evaluated with the statuses listed, and let go again (settled).
    assert not any(bool(r.raw_status) for r in engine.pods.pods.values())


@PROFILES
async def test_a_status_changed_behind_a_restarted_kubelets_back_is_put_right(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, profile: str
) -> None:
    # Evaluated after the relist (not at once): it must still be evaluated at all.
    api = MemoryApiserver()
    engine = await _fleet(api, nursery, traffic_profile=profile)
    record = engine.pods.pods["default/p-n0"]
    assert not record.raw_status
    # Changed where the shard's watch does not see it (as a change it missed)...
    stored = api.objects[("", "pods")][("default", "p-n0")]
    stored["status"] = {**stored["status"], "phase": "Pending"}
    since = len(api.calls)
    _restart(api, "n0", "storm-1")
    await trio.sleep(15)
    # ... and put right from the relist, without reading the pod.
    assert phase(api, "p-n0") == "Running"
    calls = api.calls[since:]
    assert [c for c in calls if c.method == "PATCH" and c.path == f"{PODS}/p-n0/status"]
    assert not [c for c in calls if c.method == "GET" and c.path.startswith(PODS + "/")]


async def test_a_pod_deleted_while_a_restarted_kubelets_watch_was_down_is_let_go(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # A pod watch per node: the restart's new watch starts afresh, so nothing tells of a pod
    # deleted while no watch of the node was open. Its relist lacks it: let go, as the
    # kubelet's pod manager drops it, not read back (404) and held for good.
    api = MemoryApiserver()
    engine = await _fleet(api, nursery, traffic_profile="kubelet")
    assert "default/p-n0" in engine.pods.pods
    del api.objects[("", "pods")][("default", "p-n0")]  # where no watch sees it
    since = len(api.calls)
    _restart(api, "n0", "storm-1")
    await trio.sleep(15)
    assert "default/p-n0" not in engine.pods.pods
    assert not engine.pods.on_node("n0")
    assert engine.pods.phases() == {"Running": 1}  # n1's
    assert not [c for c in api.calls[since:] if c.path.startswith(PODS + "/")]


LISTED = 48


RELISTS_AT_ONCE = 8
"""Restarted nodes whose pods are listed at once: the shard's ``CATCH_UP_LISTS``."""


@PROFILES
async def test_a_restart_storm_lists_the_nodes_pods_side_by_side(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, profile: str
) -> None:
    # Lean: one catch-up worker listed the restarted nodes' pods one node at a time, 48 lists
    # of one round trip each in a row (5,000 nodes: ~10 lists a second). Kubelet: every
    # restarted node's new pod watch listed at once (5,000 lists in the same second).
    api = MemoryApiserver()
    for i in range(LISTED):
        api.create(CRS, node_cr(f"n{i}"))
        api.create(PODS, pod(f"p{i}", f"n{i}"))
    engine = ShardEngine(
        settings(traffic_profile=profile),
        "0",
        control=_distant(api),
        wall=wall,
        rng=random.Random(5),
    )
    await nursery.start(engine.run)
    await trio.sleep(60)
    since, start = len(api.calls), trio.current_time()
    for i in range(LISTED):
        _restart(api, f"n{i}", "storm")
    await trio.sleep(30)
    calls = api.calls[since:]
    lists = [c for c in calls if c.method == "GET" and c.path == POD_LISTS]
    assert sorted(c.params["fieldSelector"] for c in lists) == sorted(
        f"spec.nodeName=n{i}" for i in range(LISTED)
    )
    # Each answered RTT after it was sent: those answered together were sent together ...
    together = Counter(round(c.at - start, 6) for c in lists)
    assert max(together.values()) <= RELISTS_AT_ONCE, together
    # ... and side by side, not 48 in a row (4.8 s).
    assert max(c.at for c in lists) - start < LISTED * RTT / 2
    assert all(phase(api, f"p{i}") == "Running" for i in range(LISTED))
    assert not [c for c in calls if c.method == "GET" and c.path.startswith(PODS + "/")]
