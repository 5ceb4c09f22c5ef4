"""Node scripts (``shards._nodescripts``, NodeScript CRs): nodes chosen by selector change by script.

Timelines alone, then the shard against the in-memory apiserver on the autojump
clock: conditions with the kubelet's wording and Events, taints and capacity,
a NotReady window (no Lease, no status), a Lease flap, a kubelet restart
(re-registration, pods listed again), and an invalid script (condition Valid
False, a Warning Event, the shard going on).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from fleet.api import load_node_script
from fleet.errors import InputError
from fleet.kube import MemoryApiserver, MemoryClient, Response
from shards import ShardEngine
from shards._nodescripts import NodeScriptLibrary, compile_node_script
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
    start,
    wall,
)

NODE_SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodescripts"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node_script(name: str, *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "NodeScript",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"steps": list(steps), **spec},
    }


def _timeline(raw: dict[str, Any]) -> Any:
    return compile_node_script(load_node_script(raw), T0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_steps_flaps_and_restarts_from_the_scripts_creation() -> None:
    timeline = _timeline(
        node_script(
            "s",
            {"after": "10s", "conditions": [{"type": "DiskPressure", "status": "True"}]},
            {"after": "1m", "flap": {"period": "1m", "pausedFor": "45s"}},
            {"after": "5m", "kubeletRestart": True},
            selector={},
        )
    )
    overlay, following = timeline.state_at("n1", at(5))
    assert overlay.conditions == () and following == 5.0
    overlay, following = timeline.state_at("n1", at(20))
    assert overlay.conditions == (
        ("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
    )
    assert following == 40.0 and not overlay.paused
    # The flap: renewing for 15 s of every minute from 1m, paused for the last 45 s.
    assert not timeline.state_at("n1", at(70))[0].paused
    assert timeline.state_at("n1", at(70))[1] == 5.0
    assert timeline.state_at("n1", at(80))[0].paused
    assert timeline.state_at("n1", at(80))[1] == 40.0
    assert not timeline.state_at("n1", at(125))[0].paused
    restart, following = timeline.state_at("n1", at(301))
    assert restart.restart == ("default/s", 2) and restart.restart_at == 300.0
    assert following is None and not restart.paused


def test_percent_and_jitter_are_drawn_per_node_and_replay() -> None:
    timeline = _timeline(
        node_script("s", {"after": "10s", "jitter": "20s", "lease": "Paused"}, percent=25)
    )
    nodes = [f"node-{i}" for i in range(2000)]
    chosen = [n for n in nodes if timeline.applies(n)]
    assert 400 < len(chosen) < 600
    assert chosen == [n for n in nodes if timeline.applies(n)]  # the same every time
    starts = {n: 9.5 + (timeline.state_at(n, at(9.5))[1] or 0) for n in nodes[:200]}
    assert all(10 <= s <= 30 for s in starts.values()) and len(set(starts.values())) > 10
    assert timeline.state_at("node-1", at(31))[0].paused


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"after": "0s", "conditions": [{"type": "Ready", "status": "False"}] * 2}],
            "Ready given twice",
        ),
        ([{"after": "5s"}, {"after": "5s"}], 'step 1: after "5s" must be later'),
        (
            [{"after": "0s", "flap": {"period": "10s", "pausedFor": "10s"}}],
            "pausedFor must be more than 0 and less than period",
        ),
        (
            [{"after": "0s", "lease": "Paused", "flap": {"period": "1m", "pausedFor": "5s"}}],
            "flap needs lease: Renewing",
        ),
        ([{"after": "0s", "capacity": {"pods": "lots"}}], 'invalid quantity "lots"'),
        ([{"after": "0s", "conditions": [{"type": "Happy", "status": "True"}]}], "type"),
    ],
)
def test_bad_node_scripts(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_node_script(node_script("bad", *steps))


def test_the_annotation_wins_then_priority_then_percent() -> None:
    library = NodeScriptLibrary(MemoryApiserver())
    from fleet.kube import ObjectMeta, WatchEvent
    from shards._library import MockStatusView

    def add(name: str, **spec: Any) -> None:
        raw = node_script(name, {"after": "0s", "lease": "Paused"}, **spec)["spec"]
        import msgspec

        view = MockStatusView(
            metadata=ObjectMeta(name=name, namespace="default", creation_timestamp=T0),
            spec=msgspec.Raw(msgspec.json.encode(raw)),
        )
        library.on_event(WatchEvent("ADDED", view))

    add("low", selector={"matchLabels": {"pool": "a"}}, priority=1)
    add("high", selector={"matchLabels": {"pool": "a"}}, priority=5, percent=0)
    add("named")
    labels = {"pool": "a"}
    found = library.match("default", "n1", labels, {})
    assert found is not None and not isinstance(found, Exception)
    assert found.key == "default/low"  # "high" takes 0 % of its nodes
    named = library.match("default", "n1", labels, {"zhizuqiu.github.com/nodeScript": "named"})
    assert named is not None and not isinstance(named, Exception) and named.key == "default/named"
    missing = library.match("default", "n1", labels, {"zhizuqiu.github.com/nodeScript": "nope"})
    assert isinstance(missing, InputError) and "no NodeScript default/nope" in str(missing)
    assert library.match("other", "n1", labels, {}) is None  # its own namespace only


# -- on the shard ------------------------------------------------------------------------------


def node_events(api: MemoryApiserver, name: str = "n1") -> dict[str, int]:
    """Reason -> count of the Events about node ``name`` (a repeat is a series: count + 1)."""
    out: dict[str, int] = {}
    for call in api.log("POST", EVENTS):
        involved = call.body["involvedObject"]
        if involved.get("kind") == "Node" and involved.get("name") == name:
            stored = api.get(f"{EVENTS}/{call.body['metadata']['name']}")
            assert stored is not None
            out[stored["reason"]] = out.get(stored["reason"], 0) + int(stored.get("count") or 1)
    return out


def conditions(api: MemoryApiserver, name: str = "n1") -> dict[str, dict[str, Any]]:
    node = api.get(f"{NODES}/{name}")
    assert node is not None
    return {c["type"]: c for c in node["status"]["conditions"]}


async def test_conditions_taints_and_capacity_follow_the_script(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", nodeConfig={"labels": {"pool": "a"}}))
    api.create(CRS, node_cr("n2"))
    await start(api, nursery)
    await trio.sleep(5)
    api.create(
        NODE_SCRIPTS,
        node_script(
            "disk",
            {
                "after": "10s",
                "conditions": [{"type": "DiskPressure", "status": "True"}],
                "taints": [{"key": "example.com/disk", "effect": "NoSchedule"}],
                "capacity": {"pods": "7"},
            },
            {"after": "30s"},
            selector={"matchLabels": {"pool": "a"}},
        ),
    )
    await trio.sleep(5)
    assert conditions(api)["DiskPressure"]["status"] == "False"
    await trio.sleep(10)  # 15 s in: DiskPressure
    disk = conditions(api)["DiskPressure"]
    assert (disk["status"], disk["reason"], disk["message"]) == (
        "True",
        "KubeletHasDiskPressure",
        "kubelet has disk pressure",
    )
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert {"key": "example.com/disk", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["status"]["capacity"]["pods"] == "7"
    assert node["status"]["allocatable"]["pods"] == "7"
    assert node_events(api)["NodeHasDiskPressure"] == 1
    assert conditions(api, "n2")["DiskPressure"]["status"] == "False"  # not selected
    await trio.sleep(20)  # 35 s in: the last step names nothing: the node as its CR says
    assert conditions(api)["DiskPressure"]["status"] == "False"
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert not node["spec"].get("taints")
    assert node["status"]["capacity"]["pods"] == "200"
    assert node_events(api)["NodeHasNoDiskPressure"] == 2  # at registration, and now
    # The node watch does not take the script's conditions for someone else's.
    assert engine_restores_none(api)


def engine_restores_none(api: MemoryApiserver) -> bool:
    return len(api.log("PATCH", f"{NODES}/n1/status")) <= 4


class _WritesBetween(MemoryClient):
    """A shard's connection after whose every GET of a Node another write to that Node
    lands before the shard's next request: the node's own status report (each once cost
    the taint write its resourceVersion: a 409), or once, a taint of another writer's."""

    def __init__(self, server: MemoryApiserver) -> None:
        super().__init__(server)
        self.armed = False
        self.foreign_taint: dict[str, str] | None = None
        self.reports = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        response = await super().request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )
        if self.armed and method == "GET" and path == f"{NODES}/n1":
            if self.foreign_taint is not None:  # kube-controller-manager's, say
                node = self.server.get(f"{NODES}/n1")
                assert node is not None
                taints = [*(node["spec"].get("taints") or []), self.foreign_taint]
                self.server.patch(f"{NODES}/n1", {"spec": {"taints": taints}})
                self.foreign_taint = None
            self.reports += 1
            self.server.patch(
                f"{NODES}/n1/status", {"status": {"nodeInfo": {"bootID": f"boot-{self.reports}"}}}
            )
        return response


async def test_a_scripted_taint_lands_through_status_writes_and_keeps_anothers(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A script step's taint write met the node's own status report, landed between its
    read and its write, every time (a warm kube-controller-manager on the real control
    plane): the resourceVersion-guarded PATCH got 409 five times and the taint never came.
    The write now tests the taints it read, which a status write does not touch; a taint
    another writer added meanwhile fails the test, is read again and kept."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", nodeConfig={"taints": [{"key": "own", "effect": "NoSchedule"}]}))
    connection = _WritesBetween(api)
    engine = ShardEngine(settings(), "0", control=connection, wall=wall, rng=random.Random(7))
    await nursery.start(engine.run)
    await trio.sleep(5)
    connection.armed = True
    connection.foreign_taint = {"key": "node.kubernetes.io/other", "effect": "NoSchedule"}
    disk = {"key": "example.com/disk", "effect": "NoSchedule"}
    api.create(
        NODE_SCRIPTS,
        node_script("disk", {"after": "5s", "taints": [disk]}, {"after": "30s"}, selector={}),
    )
    await trio.sleep(15)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    taints = node["spec"]["taints"]
    assert disk in taints and connection.foreign_taint is None, taints
    assert {"key": "node.kubernetes.io/other", "effect": "NoSchedule"} in taints
    assert {"key": "own", "effect": "NoSchedule"} in taints
    await trio.sleep(30)  # the script's last step: its taint goes, the others stay
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert sorted(t["key"] for t in node["spec"]["taints"]) == ["node.kubernetes.io/other", "own"]
    assert connection.reports >= 2


async def test_a_notready_window_stops_lease_and_status_then_returns(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(5)
    created = trio.current_time()
    api.create(
        NODE_SCRIPTS,
        node_script(
            "partition", {"after": "10s", "lease": "Paused"}, {"after": "70s"}, selector={}
        ),
    )
    await trio.sleep(30)
    # A change of its CR meanwhile (a sync) does not bring the kubelet back.
    api.patch(f"{CRS}/n1", {"spec": {"nodeConfig": {"labels": {"zone": "b"}}}})
    await trio.sleep(60)
    renewals = [c.at - created for c in api.log("PUT", f"{NODE_LEASES}/n1")]
    assert renewals and not [t for t in renewals if 11 < t < 70]
    assert [t for t in renewals if t >= 70]  # renewing again
    reports = [c.at - created for c in api.log("PATCH", f"{NODES}/n1/status")]
    assert not [t for t in reports if 11 < t < 70]


async def test_a_kubelet_restart_reregisters_and_relists_its_pods(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(3)
    assert phase(api, "p") == "Running"
    assert node_events(api)["Starting"] == 1
    lists = len([c for c in api.log("GET", "/api/v1/pods") if c.params.get("fieldSelector")])
    api.create(
        NODE_SCRIPTS, node_script("restart", {"after": "5s", "kubeletRestart": True}, selector={})
    )
    await trio.sleep(10)
    events = node_events(api)
    assert (events["Starting"], events["NodeHasSufficientMemory"]) == (2, 2)
    posts = api.log("POST", NODES)
    assert len(posts) == 2  # registration, and the restart's (409)
    assert len(api.log("GET", f"{NODES}/n1")) >= 1
    relists = [c for c in api.log("GET", "/api/v1/pods") if c.params.get("fieldSelector")]
    assert len(relists) == lists + 1
    assert relists[-1].params["fieldSelector"] == "spec.nodeName=n1"
    # Once: the restart is not done again at each evaluation.
    await trio.sleep(60)
    assert len(api.log("POST", NODES)) == 2
    assert phase(api, "p") == "Running"


async def test_an_invalid_node_script_is_reported_and_nothing_stops(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(NODE_SCRIPTS, node_script("bad", {"after": "5s"}, {"after": "1s"}, selector={}))
    await trio.sleep(3)
    stored = api.get(f"{NODE_SCRIPTS}/bad")
    assert stored is not None
    valid = {c["type"]: c for c in stored["status"]["conditions"]}["Valid"]
    assert (valid["status"], valid["reason"]) == ("False", "InvalidNodeScript")
    assert 'step 1: after "1s" must be later' in valid["message"]
    warnings = [c.body for c in api.log("POST", EVENTS) if c.body["type"] == "Warning"]
    assert [w["reason"] for w in warnings] == ["InvalidNodeScript"]
    assert warnings[0]["involvedObject"]["kind"] == "NodeScript"
    await trio.sleep(20)
    assert len(api.log("PUT", f"{NODE_LEASES}/n1")) >= 2  # the node goes on as its CR says


async def test_a_lease_flap_pauses_renewals_on_its_period(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(5)
    created = trio.current_time()
    api.create(
        NODE_SCRIPTS,
        node_script(
            "flap", {"after": "0s", "flap": {"period": "2m", "pausedFor": "50s"}}, selector={}
        ),
    )
    await trio.sleep(365)
    renewals = [c.at - created for c in api.log("PUT", f"{NODE_LEASES}/n1")]
    # Renewing for the first 70 s of every 2 minutes, paused for the last 50 s.
    for cycle in (0, 120, 240):
        assert [t for t in renewals if cycle + 2 < t < cycle + 68]
        assert not [t for t in renewals if cycle + 71 < t < cycle + 120]
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert sum(1 for gap in gaps if gap > 40) == 3  # each pause outlasts the Lease
