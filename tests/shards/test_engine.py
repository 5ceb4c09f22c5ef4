"""The shard engine against a stateful in-memory apiserver, on trio's autojump clock."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import trio

from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
from fleet.errors import ConnectError
from fleet.kube import MemoryApiserver, Response, status_response
from fleet.machinery import JSON
from fleet.wire import FINALIZER, NODE_CR_ANNOTATION, SHARD_LABEL
from shards import ShardEngine
from shards._nodelease import HANDOVER_WAIT

wall = MemoryApiserver.wall

CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
NODES = "/api/v1/nodes"
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
SHARD_LEASE = (
    "/apis/coordination.k8s.io/v1/namespaces/kube-mock-system/leases/kubemock-fleet-shard-0"
)
PODS = "/api/v1/namespaces/default/pods"
EVENTS = "/api/v1/namespaces/default/events"


def node_cr(name: str, shard: str = "0", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
        "spec": spec,
    }


def pod(name: str, node: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {f"zhizuqiu.github.com/{k}": v for k, v in annotations.items()},
        },
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "nginx:1.25"}]},
        "status": {
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": None}],
        },
    }


def settings(**shard: Any) -> FleetSettings:
    # The in-memory apiserver allocates no podCIDRs, like the sandbox: the shard does.
    shard.setdefault("pod_cidr_allocation", "shard")
    return FleetSettings(shard=ShardSettings(**shard), coordinator=CoordinatorSettings())


async def start(
    api: MemoryApiserver, nursery: trio.Nursery, **shard: Any
) -> tuple[ShardEngine, trio.CancelScope]:
    engine = ShardEngine(settings(**shard), "0", control=api, wall=wall, rng=random.Random(7))
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await engine.run(task_status=task_status)

    await nursery.start(run)
    return engine, scope


def puts(api: MemoryApiserver, path: str) -> list[float]:
    return [c.at for c in api.log("PUT", path)]


def warnings(api: MemoryApiserver, path: str = EVENTS) -> list[Any]:
    """The Warning Events POSTed to ``path`` (the kubelets' Normal ones aside)."""
    return [c.body for c in api.log("POST", path) if c.body["type"] == "Warning"]


def phase(api: MemoryApiserver, name: str) -> str | None:
    obj = api.get(f"{PODS}/{name}")
    return None if obj is None else obj["status"].get("phase")


# -- the shard's own Lease -----------------------------------------------------------------


async def test_shard_lease_created_and_renewed_with_changing_renew_time(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
) -> None:
    api = MemoryApiserver()
    await start(api, nursery)
    await trio.sleep(7)
    lease = api.get(SHARD_LEASE)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "shard-0"
    assert lease["spec"]["leaseDurationSeconds"] == 15
    assert [c.at for c in api.log("POST", SHARD_LEASE.rsplit("/", 1)[0])] == [0.0]
    times = [c.at for c in api.log("PATCH", SHARD_LEASE)]
    assert len(times) == 3  # created at 0, renewed at 2, 4, 6
    assert [round(b - a, 3) for a, b in itertools.pairwise(times)] == [2.0, 2.0]
    renewals = [
        op["value"]
        for c in api.log("PATCH", SHARD_LEASE)
        for op in c.body
        if op["path"] == "/spec/renewTime"
    ]
    assert len(set(renewals)) == len(renewals) == 3


# -- registration --------------------------------------------------------------------------


async def test_cr_registers_node_lease_finalizer_and_status(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", nodeConfig={"cpu": "8", "labels": {"zone": "a"}}))
    api.create(CRS, node_cr("other", shard="1"))
    await start(api, nursery)
    await trio.sleep(3)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert api.get(f"{NODES}/other") is None
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n1" and labels["type"] == "kubemock"
    assert labels["zone"] == "a"
    assert node["metadata"]["annotations"][NODE_CR_ANNOTATION] == "default/n1"
    assert node["status"]["capacity"]["cpu"] == "8"
    assert node["status"]["capacity"]["memory"] == "100Gi"
    assert node["status"]["capacity"]["pods"] == "200"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"].startswith("240.")  # shard.nodeIpRange
    assert node["spec"]["podCIDR"].endswith("/24")
    lease = api.get(f"{NODE_LEASES}/n1")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "n1"
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    assert cr["metadata"]["finalizers"] == [FINALIZER]
    status = cr["status"]
    assert status["shard"] == "0" and status["nodeName"] == "n1"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Registered": ("True", "Registered"), "Ready": ("True", "KubeletReady")}
    # CR status written only on change: once, however long we wait.
    await trio.sleep(60)
    assert len(api.log("PATCH", f"{CRS}/n1/status")) == 1


async def test_lease_cadence_10s_with_jitter(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(95)
    times = puts(api, f"{NODE_LEASES}/n1")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 7
    assert all(10.0 <= gap <= 10.4 + 1e-6 for gap in gaps), gaps
    assert len({round(gap, 4) for gap in gaps}) > 1  # jittered, not a fixed period
    renew_times = [c.body["spec"]["renewTime"] for c in api.log("PUT", f"{NODE_LEASES}/n1")]
    assert len(set(renew_times)) == len(renew_times)
    assert engine.metrics.lease_renewals_late.labels(lease="node")._value.get() == 0


async def test_late_lease_renewal_is_counted(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))

    def flaky(method: str, path: str) -> Response | None:
        if method == "PUT" and path.startswith(NODE_LEASES) and 30 < trio.current_time() < 34:
            return status_response(500, "InternalError", "etcd is slow")
        return None

    api.fail = flaky
    engine, _ = await start(api, nursery)
    await trio.sleep(60)
    late = engine.metrics.lease_renewals_late.labels(lease="node")._value.get()
    assert late == 1
    assert engine.metrics.lease_renewals_missed.labels(lease="node")._value.get() == 0


async def test_next_renewal_is_timed_from_the_due_time_not_the_late_finish(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))

    def flaky(method: str, path: str) -> Response | None:
        if method == "PUT" and path.startswith(NODE_LEASES) and 30 < trio.current_time() < 34:
            return status_response(500, "InternalError", "etcd is slow")
        return None

    api.fail = flaky
    await start(api, nursery)
    await trio.sleep(80)
    times = [c.at for c in api.log("PUT", f"{NODE_LEASES}/n1")]
    late = next(i for i, t in enumerate(times) if t >= 34)
    failed_from = max(t for t in times if t < 34 and t > 30)
    first_due = max(t for t in times if t <= 30)
    # The retried renewal went through after 34 s; the one after it is armed from the due
    # time of the failed one (<= 10.4 s after it), not 10 s after the late success.
    assert times[late + 1] - failed_from < 10.4 + 4
    assert times[late + 1] - first_due <= 2 * 10.4 + 1e-6
    gaps = [b - a for a, b in itertools.pairwise(times[late + 1 :])]
    assert all(10.0 <= gap <= 10.4 + 1e-6 for gap in gaps), gaps


async def test_lease_renewed_by_someone_else_is_left_a_moment_then_taken_up_again(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A 409 on a node Lease another writer renewed: most likely another shard taking the
    node over before this shard's watch says the CR moved. Renewing on top at once (as a
    lone kubelet does) drove the node from two shards; the node is left for
    HANDOVER_WAIT, then its sync (the CR still ours) reads the Lease and renews it."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(1)
    api.patch(f"{NODE_LEASES}/n1", {"spec": {"holderIdentity": "intruder"}})
    intruded = trio.current_time()
    await trio.sleep(21)
    puts = [c.at for c in api.log("PUT", f"{NODE_LEASES}/n1") if c.at > intruded]
    gets = [c.at for c in api.log("GET", f"{NODE_LEASES}/n1") if c.at > intruded]
    # The next renewal: 409, the re-read; then nothing for HANDOVER_WAIT; then the sync's
    # read, and the renewals go on at their cadence (the Lease was just renewed).
    assert len(puts) == 2 and len(gets) == 2, (puts, gets)
    assert puts[0] <= gets[0] < puts[0] + 0.1
    assert gets[1] >= gets[0] + HANDOVER_WAIT
    assert 10.0 <= puts[1] - puts[0] <= 10.4 + 1e-6
    lease = api.get(f"{NODE_LEASES}/n1")
    assert lease is not None and lease["spec"]["holderIdentity"] == "n1"
    await trio.sleep(11)
    assert engine.metrics.lease_renewals_missed.labels(lease="node")._value.get() == 0


async def test_our_own_renewal_landing_late_is_no_other_writer(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A renewal whose answer was lost landed all the same: the retry's 409 finds our own
    renewTime in the Lease, which is renewed; nothing is left alone."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(1)
    leases = engine.leases
    key = "default/n1"
    request = leases.lease_request(key, retry=True)
    assert request is not None and request.body is not None
    await api.request("PUT", request.path, body=request.body, content_type=JSON)  # landed
    conflict = await api.request("PUT", request.path, body=request.body, content_type=JSON)
    assert conflict.status == 409
    assert await leases.lease_answered(key, conflict) is False
    assert leases.lease_of(key) is not None  # renewed, not left alone
    before = len(api.log("PUT", f"{NODE_LEASES}/n1"))
    await trio.sleep(11)
    assert len(api.log("PUT", f"{NODE_LEASES}/n1")) == before + 1  # the regular cadence


async def test_status_on_change_and_every_5_minutes(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(10)
    assert api.log("PATCH", f"{NODES}/n1/status") == []  # registered with its status
    await trio.sleep(300)
    patches = api.log("PATCH", f"{NODES}/n1/status")
    assert len(patches) == 1
    # The first periodic report comes anywhere in 0.1-1 interval after registration
    # (spread, so a registration burst does not come back as a status burst).
    assert 30 <= patches[0].at <= 311
    # A change in the CR (capacity) is reported at once.
    api.patch(f"{CRS}/n1", {"spec": {"nodeConfig": {"cpu": "4"}}})
    await trio.sleep(1)
    node = api.get(f"{NODES}/n1")
    assert node is not None and node["status"]["capacity"]["cpu"] == "4"
    assert len(api.log("PATCH", f"{NODES}/n1/status")) == 2
    await trio.sleep(300)
    assert len(api.log("PATCH", f"{NODES}/n1/status")) == 3


async def test_status_updates_interval_from_the_cr(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", statusUpdatesInterval="1m"))
    await start(api, nursery)
    await trio.sleep(185)
    # The first periodic report 6-60 s after registration (spread), then every minute.
    assert len(api.log("PATCH", f"{NODES}/n1/status")) == 3


async def test_labels_and_taints_follow_the_cr_and_others_taints_stay(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
) -> None:
    api = MemoryApiserver()
    taint = {"key": "a", "effect": "NoSchedule"}
    api.create(CRS, node_cr("n1", nodeConfig={"labels": {"x": "1"}, "taints": [taint]}))
    await start(api, nursery)
    await trio.sleep(2)
    unreachable = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
    node = api.get(f"{NODES}/n1")
    assert node is not None
    api.patch(f"{NODES}/n1", {"spec": {"taints": [*node["spec"]["taints"], unreachable]}})
    new = {"key": "b", "value": "v", "effect": "NoExecute"}
    api.patch(
        f"{CRS}/n1", {"spec": {"nodeConfig": {"labels": {"x": None, "y": "2"}, "taints": [new]}}}
    )
    await trio.sleep(2)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert node["spec"]["taints"] == [unreachable, new]
    assert node["metadata"]["labels"]["y"] == "2"
    assert "x" not in node["metadata"]["labels"]


# -- suspend, delete, move -----------------------------------------------------------------


async def test_suspend_stops_lease_and_status_and_resume_restarts(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(15)
    api.patch(f"{CRS}/n1", {"spec": {"suspend": True}})
    await trio.sleep(1)
    before = len(api.log("PUT", f"{NODE_LEASES}/n1"))
    await trio.sleep(400)
    assert len(api.log("PUT", f"{NODE_LEASES}/n1")) == before
    assert all(c.at < 16 for c in api.log("PATCH", f"{NODES}/n1/status"))
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    ready = next(c for c in cr["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    resumed = trio.current_time()
    api.patch(f"{CRS}/n1", {"spec": {"suspend": False}})
    await trio.sleep(15)
    renewals = [t for t in puts(api, f"{NODE_LEASES}/n1") if t > resumed]
    assert renewals and renewals[0] - resumed <= 2.5
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    ready = next(c for c in cr["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


async def test_a_node_resumed_after_the_controller_marked_it_unknown_reports_ready(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # A partition: suspended past the grace period, the node-lifecycle controller writes
    # Ready=Unknown; the resumed kubelet's first report must set Ready=True again (it
    # diffed against the status from before the suspension, sent heartbeats only, and the
    # node stayed NotReady and tainted until its 5-minute report: bench partition).
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(15)
    api.patch(f"{CRS}/n1", {"spec": {"suspend": True}})
    await trio.sleep(45)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    unknown = [
        {**c, "status": "Unknown", "reason": "NodeStatusUnknown"} if c["type"] == "Ready" else c
        for c in node["status"]["conditions"]
    ]
    api.patch(f"{NODES}/n1/status", {"status": {"conditions": unknown}})
    await trio.sleep(5)
    resumed = trio.current_time()
    api.patch(f"{CRS}/n1", {"spec": {"suspend": False}})
    await trio.sleep(5)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    # By its first report, not by a later one that its own echo happened to set off (the
    # in-memory watch can deliver the echo before the write's answer is handled).
    first = next(c for c in api.log("PATCH", f"{NODES}/n1/status") if c.at >= resumed)
    sent = {c["type"]: c.get("status") for c in first.body["status"]["conditions"]}
    assert sent.get("Ready") == "True"


async def test_cr_deletion_removes_node_and_lease_then_finalizer(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(3)
    assert api.get(f"{NODES}/n1") is not None
    api.delete(f"{CRS}/n1")
    await trio.sleep(2)
    assert api.get(f"{CRS}/n1") is None
    assert api.get(f"{NODES}/n1") is None
    assert api.get(f"{NODE_LEASES}/n1") is None
    mark = trio.current_time()
    await trio.sleep(60)
    assert [c for c in api.calls if c.at > mark and "/n1" in c.path] == []


async def test_cr_moved_to_another_shard_stops_without_deleting(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(3)
    api.patch(f"{CRS}/n1", {"metadata": {"labels": {SHARD_LABEL: "1"}}})
    await trio.sleep(1)
    mark = trio.current_time()
    await trio.sleep(60)
    assert api.get(f"{NODES}/n1") is not None and api.get(f"{NODE_LEASES}/n1") is not None
    assert [c for c in api.calls if c.at > mark and c.method != "GET" and "/n1" in c.path] == []


async def test_same_name_in_two_namespaces_second_gets_conflict(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(3)
    api.create(CRS.replace("/default/", "/team-b/"), node_cr("n1"))
    await trio.sleep(3)
    cr = api.get(CRS.replace("/default/", "/team-b/") + "/n1")
    assert cr is not None
    registered = next(c for c in cr["status"]["conditions"] if c["type"] == "Registered")
    assert (registered["status"], registered["reason"]) == ("False", "NameConflict")
    events = warnings(api, "/api/v1/namespaces/team-b/events")
    assert [e["reason"] for e in events] == ["NameConflict"]
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert node["metadata"]["annotations"][NODE_CR_ANNOTATION] == "default/n1"


async def test_bad_cr_gets_event_and_condition_others_keep_going(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("bad", nodeConfig={"cpu": "lots"}))
    api.create(CRS, node_cr("good"))
    await start(api, nursery)
    await trio.sleep(3)
    assert api.get(f"{NODES}/good") is not None
    assert api.get(f"{NODES}/bad") is None
    cr = api.get(f"{CRS}/bad")
    assert cr is not None
    registered = next(c for c in cr["status"]["conditions"] if c["type"] == "Registered")
    assert (registered["status"], registered["reason"]) == ("False", "InvalidSpec")
    assert "cpu" in registered["message"]
    events = warnings(api)
    assert [(e["reason"], e["type"], e["involvedObject"]["name"]) for e in events] == [
        ("InvalidSpec", "Warning", "bad")
    ]


# -- fencing -------------------------------------------------------------------------------


async def test_fence_stops_all_writes_and_resumes_by_readoption(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2"))
    api.create(PODS, pod("p1", "n1", delayRunning="100s"))
    cut = [False]

    def partition(method: str, path: str) -> BaseException | None:
        if cut[0] and path == SHARD_LEASE:
            return ConnectError("cannot reach the apiserver (test)")
        return None

    api.fail = partition
    engine, _ = await start(api, nursery)
    await trio.sleep(20)
    cut[0] = True
    last_ok = max(c.at for c in api.log("PATCH", SHARD_LEASE))
    await trio.sleep(60)
    fenced_at = last_ok + 10
    writes = [
        c
        for c in api.calls
        if c.at > fenced_at + 1e-6 and c.method != "GET" and c.method != "WATCH"
    ]
    assert [c.path for c in writes if c.path != SHARD_LEASE] == []
    assert not engine.lease.fresh()
    assert phase(api, "p1") == "Pending"
    # The shard Lease comes back: the nodes are re-adopted, not re-created.
    cut[0] = False
    back = trio.current_time()
    await trio.sleep(50)
    assert len([t for t in puts(api, f"{NODE_LEASES}/n1") if t > back]) >= 3
    assert [c for c in api.log("POST", NODES) if c.at > back] == []
    assert phase(api, "p1") == "Running"


async def test_a_moment_of_a_late_shard_lease_puts_work_off_never_drops_it(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """On a saturated machine the shard Lease's renewal can answer past the renew deadline
    and still in time: ``fresh()`` is False for a moment while the fence never closes (no
    fence_lost, so no fence_regained). Renewals, syncs and status reports that came due in
    that moment were dropped for good, and their nodes' Leases expired."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2"))
    engine, _ = await start(api, nursery)
    await trio.sleep(20)
    late = [False]
    fresh = engine.ctx.fresh
    engine.ctx.fresh = lambda: fresh() and not late[0]
    late[0] = True
    api.create(CRS, node_cr("n3"))  # its sync comes due in the moment, too
    await trio.sleep(12)  # every node's renewal (10 s) comes due meanwhile
    assert engine.lease.active  # the fence never closed
    late[0] = False
    back = trio.current_time()
    await trio.sleep(40)
    for name in ("n1", "n2", "n3"):
        assert len([t for t in puts(api, f"{NODE_LEASES}/{name}") if t > back]) >= 3, name


# -- pods ----------------------------------------------------------------------------------

TIMELINES: list[tuple[dict[str, str], list[tuple[float, str]]]] = [
    ({}, [(0.5, "Running")]),
    ({"delayRunning": "5s"}, [(3, "Pending"), (6, "Running"), (100, "Running")]),
    ({"delaySucceeded": "5s"}, [(3, "Pending"), (6, "Succeeded")]),
    ({"delayFailed": "5s"}, [(3, "Pending"), (6, "Failed")]),
    (
        {"delayRunning": "5s", "delaySucceeded": "20s"},
        [(3, "Pending"), (6, "Running"), (19, "Running"), (21, "Succeeded"), (100, "Succeeded")],
    ),
    (
        {"delayRunning": "5s", "delayFailed": "10s", "delaySucceeded": "20s"},
        [(6, "Running"), (11, "Failed"), (25, "Failed")],
    ),
    (
        {"delayRunning": "30s", "delaySucceeded": "10s"},
        [(5, "Pending"), (11, "Succeeded"), (40, "Succeeded")],
    ),
    ({"delaySucceeded": "10s", "delayFailed": "10s"}, [(11, "Succeeded")]),
]


@pytest.mark.parametrize(("annotations", "expected"), TIMELINES)
async def test_annotations_drive_the_phase_at_the_right_time(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    annotations: dict[str, str],
    expected: list[tuple[float, str]],
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, pod("p", "n1", **annotations))
    for at, want in expected:
        await trio.sleep_until(created + at)
        assert phase(api, "p") == want, (at, annotations)


async def test_running_pod_status_is_kubelet_shaped(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(1)
    obj = api.get(f"{PODS}/p")
    assert obj is not None
    status = obj["status"]
    node = api.get(f"{NODES}/n1")
    assert node is not None
    cidr = node["spec"]["podCIDR"].rsplit(".", 1)[0]
    assert status["podIP"].startswith(cidr)
    assert status["hostIP"] == node["status"]["addresses"][0]["address"]
    assert status["qosClass"] == "BestEffort"
    main = status["containerStatuses"][0]
    assert main["ready"] and main["started"] and "running" in main["state"]
    patch = api.log("PATCH", f"{PODS}/p/status")[0]
    assert patch.body["metadata"]["uid"] == obj["metadata"]["uid"]
    assert "$setElementOrder/conditions" in patch.body["status"]


async def test_pod_seen_late_goes_straight_to_its_state(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(PODS, pod("p", "n1", delayRunning="5s", delaySucceeded="30s"))
    await trio.sleep(20)
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    patches = api.log("PATCH", f"{PODS}/p/status")
    assert [c.body["status"]["phase"] for c in patches] == ["Running"]
    await trio.sleep(10)
    assert phase(api, "p") == "Succeeded"


async def test_pod_deletion_grace_zero_with_uid_precondition(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(2)
    uid = api.get(f"{PODS}/p")["metadata"]["uid"]  # type: ignore[index]
    deleted_at = trio.current_time()
    api.delete(f"{PODS}/p", grace=30)
    await trio.sleep(1)
    assert api.get(f"{PODS}/p") is None
    stop = api.log("PATCH", f"{PODS}/p/status")[-1]
    container = stop.body["status"]["containerStatuses"][0]
    assert "terminated" in container["state"] and container["ready"] is False
    delete = [c for c in api.log("DELETE", f"{PODS}/p") if c.at >= deleted_at][-1]
    assert delete.body["gracePeriodSeconds"] == 0
    assert delete.body["preconditions"] == {"uid": uid}
    assert stop.at <= delete.at < deleted_at + 0.5


async def test_pod_deletion_delay_from_settings(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery, pod_deletion_delay=5.0)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(2)
    deleted_at = trio.current_time()
    api.delete(f"{PODS}/p", grace=30)
    await trio.sleep(4)
    assert api.get(f"{PODS}/p") is not None
    await trio.sleep(2)
    assert api.get(f"{PODS}/p") is None
    delete = api.log("DELETE", f"{PODS}/p")[-1]
    assert 5.0 <= delete.at - deleted_at <= 5.5


async def test_bad_annotation_event_and_pending_with_reason(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("bad", "n1", delayRunning="soon"))
    api.create(PODS, pod("good", "n1", delayRunning="1s"))
    await trio.sleep(3)
    assert phase(api, "good") == "Running"
    bad = api.get(f"{PODS}/bad")
    assert bad is not None
    assert bad["status"]["phase"] == "Pending"
    assert bad["status"]["reason"] == "InvalidLifecycleAnnotation"
    assert "delayRunning" in bad["status"]["message"]
    events = warnings(api)
    assert [(e["reason"], e["involvedObject"]["kind"]) for e in events] == [
        ("InvalidLifecycleAnnotation", "Pod")
    ]


async def test_pod_ips_from_annotation_and_released_on_delete(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", nodeConfig={"podCIDR": "10.9.0.0/29"}))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("fixed", "n1", podIPs="192.168.7.7,fd00::7"))
    for i in range(5):  # a /29 has 5 addresses to give (.2-.6)
        api.create(PODS, pod(f"p{i}", "n1"))
    await trio.sleep(2)
    fixed = api.get(f"{PODS}/fixed")
    assert fixed is not None
    assert fixed["status"]["podIPs"] == [{"ip": "192.168.7.7"}, {"ip": "fd00::7"}]
    ips = {api.get(f"{PODS}/p{i}")["status"]["podIP"] for i in range(5)}  # type: ignore[index]
    assert ips == {f"10.9.0.{i}" for i in range(2, 7)}
    api.delete(f"{PODS}/p0", grace=0)
    api.create(PODS, pod("late", "n1"))
    await trio.sleep(2)
    assert api.get(f"{PODS}/late")["status"]["podIP"] == "10.9.0.2"  # type: ignore[index]


async def test_restart_adopts_nodes_leases_and_pods(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    _, scope = await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", delayRunning="3s"))
    await trio.sleep(10)
    before = api.get(f"{PODS}/p")
    node_before = api.get(f"{NODES}/n1")
    assert before is not None and node_before is not None
    scope.cancel()
    await trio.sleep(5)
    mark = trio.current_time()
    await start(api, nursery)
    await trio.sleep(30)
    after = api.get(f"{PODS}/p")
    node_after = api.get(f"{NODES}/n1")
    assert after is not None and node_after is not None
    assert node_after["metadata"]["uid"] == node_before["metadata"]["uid"]
    assert [c for c in api.log("POST") if c.at > mark and c.path in (NODES, NODE_LEASES)] == []
    assert after["status"]["startTime"] == before["status"]["startTime"]
    assert after["status"]["podIPs"] == before["status"]["podIPs"]
    started = after["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert started == before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert [c for c in api.log("PATCH", f"{PODS}/p/status") if c.at > mark] == []
    assert len([t for t in puts(api, f"{NODE_LEASES}/n1") if t > mark]) >= 2
    assert node_after["status"]["addresses"] == node_before["status"]["addresses"]


async def test_per_node_pod_watch(autojump_clock: trio.abc.Clock, nursery: trio.Nursery) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2"))
    await start(api, nursery, pod_watch="per-node")
    await trio.sleep(2)
    api.create(PODS, pod("a", "n1"))
    api.create(PODS, pod("b", "n2"))
    api.create(PODS, pod("c", "elsewhere"))
    await trio.sleep(2)
    assert phase(api, "a") == phase(api, "b") == "Running"
    assert phase(api, "c") == "Pending"
    selectors = sorted(c.params.get("fieldSelector", "") for c in api.log("WATCH", "/api/v1/pods"))
    assert selectors == ["spec.nodeName=n1", "spec.nodeName=n2"]


async def test_metrics_nodes_pods_and_queue(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    for i in range(3):
        api.create(CRS, node_cr(f"n{i}"))
    engine, _ = await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("a", "n0"))
    api.create(PODS, pod("b", "n1", delayRunning="1h"))
    await trio.sleep(3)
    text = engine.metrics.scrape().decode()
    assert "kubemock_fleet_nodes 3.0" in text
    assert 'kubemock_fleet_pods{phase="Running"} 1.0' in text
    assert 'kubemock_fleet_pods{phase="Pending"} 1.0' in text
    assert "kubemock_fleet_write_queue_depth 0.0" in text
