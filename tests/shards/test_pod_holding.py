"""What the shard holds of its pods, and how it gets back what it let go (autojump clock).

A settled pod's status is not held (100,000 Running pods would cost ~100 MB);
the pods of other shards' nodes are not held at all. These tests check that
nothing is lost by it: an evaluation without a status reads the pod first, a
node that moves in has its pods listed, and the echo of the shard's own PATCH
costs no evaluation.
"""

from __future__ import annotations

from typing import Any

import trio

from fleet.errors import ConnectError
from fleet.kube import MemoryApiserver
from fleet.wire import SHARD_LABEL
from shards import ShardEngine
from shards._pods import PodDriver
from tests.shards.test_engine import CRS, NODES, PODS, SHARD_LEASE, node_cr, phase, pod, start


def statuses(api: MemoryApiserver, name: str) -> list[Any]:
    return [c.body for c in api.log("PATCH", f"{PODS}/{name}/status")]


async def test_a_settled_pods_status_is_let_go_and_read_back_before_it_is_needed(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(PODS, pod("settled", "n1"))
    api.create(PODS, pod("waiting", "n1", delayRunning="100s"))
    cut = [False]
    api.fail = lambda method, path: (
        ConnectError("cannot reach the apiserver (test)")
        if cut[0] and path == SHARD_LEASE
        else None
    )
    engine, _ = await start(api, nursery)
    await trio.sleep(5)
    held = engine.pods.pods
    assert phase(api, "settled") == "Running" and held["default/settled"].raw_status == b""
    assert held["default/settled"].phase == "Running"
    # Its next step is over STATUS_HOLD_LIMIT away: let go too, read back before then.
    assert held["default/waiting"].raw_status == b""
    assert engine.pods.phases() == {"Running": 1, "Pending": 1}
    before = api.get(f"{PODS}/settled")
    assert before is not None
    # The fence closes and opens again: the pods are driven afresh, without their status.
    cut[0] = True
    await trio.sleep(40)
    assert not engine.lease.fresh()
    cut[0] = False
    back = trio.current_time()
    await trio.sleep(30)
    assert [c.at for c in api.log("GET", f"{PODS}/settled") if c.at > back]
    assert [c for c in api.log("PATCH", f"{PODS}/settled/status") if c.at > back] == []
    after = api.get(f"{PODS}/settled")
    assert after is not None and after["status"] == before["status"]
    assert held["default/settled"].raw_status == b""
    assert engine.pods.phases() == {"Running": 1, "Pending": 1}
    await trio.sleep(60)
    assert phase(api, "waiting") == "Running"


async def test_a_status_read_that_fails_is_tried_again(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(PODS, pod("p", "n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(5)
    record = engine.pods.pods["default/p"]
    assert record.raw_status == b""
    failing = [2]

    def flaky(method: str, path: str) -> BaseException | None:
        if method == "GET" and path == f"{PODS}/p" and failing[0]:
            failing[0] -= 1
            return ConnectError("reset (test)")
        return None

    api.fail = flaky
    # Someone else's change to the pod's status is reverted from a fresh read.
    mark = trio.current_time()
    engine.ctx.timers.schedule(("pod", "default/p"), engine.ctx.clock())
    await trio.sleep(10)
    reads = [c.at for c in api.log("GET", f"{PODS}/p") if c.at >= mark]
    assert len(reads) == 3 and reads[1] - reads[0] >= 1.0
    assert [c for c in api.log("PATCH", f"{PODS}/p/status") if c.at >= mark] == []
    assert record.raw_status == b"" and record.phase == "Running"


async def test_the_echo_of_the_shards_own_patch_is_not_evaluated(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, monkeypatch: Any
) -> None:
    evaluated: list[str] = []
    original = PodDriver._evaluate

    async def counting(self: PodDriver, key: str) -> None:
        evaluated.append(key)
        await original(self, key)

    monkeypatch.setattr(PodDriver, "_evaluate", counting)
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(5)
    assert phase(api, "p") == "Running"
    assert evaluated == ["default/p"]  # ADDED; the MODIFIED echo of the PATCH is skipped
    # A change to the status by someone else is evaluated (and mended).
    api.patch(f"{PODS}/p/status", {"status": {"phase": "Pending"}})
    await trio.sleep(2)
    assert evaluated == ["default/p", "default/p"]
    assert phase(api, "p") == "Running"
    # A change to parts the shard does not drive is not.
    api.patch(f"{PODS}/p", {"metadata": {"labels": {"tier": "web"}, "annotations": {"x": "y"}}})
    await trio.sleep(2)
    assert len(evaluated) == 2


async def test_pods_of_other_shards_nodes_are_not_held_and_are_listed_when_a_node_moves_in(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2", shard="1"))
    api.create(PODS, pod("mine", "n1"))
    api.create(PODS, pod("moving", "n2", delayRunning="10s"))
    api.create(PODS, pod("elsewhere", "n9"))
    lists_fail = [1]

    def flaky(method: str, path: str) -> BaseException | None:
        if method == "GET" and path == "/api/v1/pods" and lists_fail[0] and engine_started[0]:
            lists_fail[0] -= 1
            return ConnectError("reset (test)")
        return None

    engine_started = [False]
    api.fail = flaky
    engine: ShardEngine
    engine, _ = await start(api, nursery)
    engine_started[0] = True
    await trio.sleep(3)
    driver = engine.pods
    assert set(driver.pods) == {"default/mine"}
    assert set(driver._seen) == set() and driver._by_node.keys() == {"n1"}
    assert phase(api, "moving") == "Pending"
    # n2 comes to this shard: registered here, its pod listed (once the list succeeds).
    api.patch(f"{CRS}/n2", {"metadata": {"labels": {SHARD_LABEL: "0"}}})
    await trio.sleep(5)
    assert api.get(f"{NODES}/n2") is not None
    selectors = [c.params.get("fieldSelector") for c in api.log("GET", "/api/v1/pods")]
    assert selectors.count("spec.nodeName=n2") == 2  # failed once, then listed
    assert set(driver.pods) == {"default/mine", "default/moving"}
    await trio.sleep(10)
    assert phase(api, "moving") == "Running"
    assert phase(api, "elsewhere") == "Pending"
    # n2 goes back to shard 1: its pods are let go, not parked.
    api.patch(f"{CRS}/n2", {"metadata": {"labels": {SHARD_LABEL: "1"}}})
    await trio.sleep(3)
    assert set(driver.pods) == {"default/mine"} and "default/moving" not in driver._seen
    assert "n2" not in driver._by_node


class SlowStatusAnswers(MemoryApiserver):
    """Answers pod status PATCHes a second late: their watch echo comes first."""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await super().request(method, path, **kwargs)
        if method == "PATCH" and path.startswith(PODS) and path.endswith("/status"):
            await trio.sleep(1)
        return response


async def test_an_echo_that_overtakes_its_answer_is_not_evaluated_but_others_changes_are(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, monkeypatch: Any
) -> None:
    evaluated: list[float] = []
    original = PodDriver._evaluate

    async def counting(self: PodDriver, key: str) -> None:
        evaluated.append(trio.current_time())
        await original(self, key)

    monkeypatch.setattr(PodDriver, "_evaluate", counting)
    api = SlowStatusAnswers()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(5)
    assert phase(api, "p") == "Running" and len(evaluated) == 1
    assert engine.pods.pods["default/p"].writes_out == 0
    # Someone else writes while our PATCH's answer is on its way: evaluated when it is in.
    api.create(PODS, pod("q", "n1"))
    await trio.sleep(0.5)  # our PATCH of q applied, its answer delayed
    assert engine.pods.pods["default/q"].writes_out == 1
    api.patch(f"{PODS}/q/status", {"status": {"phase": "Pending"}})
    await trio.sleep(5)
    assert len(evaluated) == 3 and phase(api, "q") == "Running"
    assert len(statuses(api, "q")) == 2  # ours, then ours again over theirs


async def test_a_deleted_crs_pods_are_let_go(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2"))
    api.create(PODS, pod("a", "n1"))
    api.create(PODS, pod("b", "n2"))
    engine, _ = await start(api, nursery)
    await trio.sleep(3)
    driver = engine.pods
    assert set(driver.pods) == {"default/a", "default/b"}
    api.delete(f"{CRS}/n1")  # held by the finalizer until the shard has cleaned up
    await trio.sleep(5)
    assert api.get(f"{CRS}/n1") is None and api.get(f"{NODES}/n1") is None
    assert set(driver.pods) == {"default/b"}
    assert "default/a" not in driver._seen and "n1" not in driver._by_node


class SlowNodeLists(MemoryApiserver):
    """Answers a list of one node's pods a second late (the list is taken, then delayed)."""

    def __init__(self) -> None:
        super().__init__()
        self.listed = trio.Event()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await super().request(method, path, **kwargs)
        params = kwargs.get("params") or {}
        if (
            method == "GET"
            and path == "/api/v1/pods"
            and params.get("fieldSelector") == ("spec.nodeName=n2")
        ):
            self.listed.set()
            await trio.sleep(1)
        return response


async def test_a_pod_deleted_while_its_nodes_list_is_out_is_not_brought_back(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = SlowNodeLists()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2", shard="1"))
    api.create(PODS, pod("stays", "n2"))
    api.create(PODS, pod("goes", "n2"))
    engine, _ = await start(api, nursery)
    await trio.sleep(3)
    driver = engine.pods
    api.patch(f"{CRS}/n2", {"metadata": {"labels": {SHARD_LABEL: "0"}}})
    with trio.fail_after(30):
        await api.listed.wait()
    api.delete(f"{PODS}/goes", grace=0)  # the list holds it; the watch says it is gone
    await trio.sleep(5)
    assert set(driver.pods) == {"default/stays"}
    assert phase(api, "stays") == "Running" and api.get(f"{PODS}/goes") is None
