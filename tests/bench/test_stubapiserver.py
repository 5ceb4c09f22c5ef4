"""The bench's stub apiserver answers the shard Lease's renewal as kube-apiserver does: a
JSON patch whose ``test`` of the holder must pass (the shard renews by one since 8e3817c; a
stub without it fenced the bench's shard and bench shard-scrape failed every request)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import yaml

from bench._stubapiserver import KUBE_BOOKMARK_EVERY, Population, StubServer
from fleet.api import load_mock_status
from fleet.kube import ClusterConfig, Http2Connection

ROOT_CA = "kube-root-ca.crt"

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kubemock-fleet/leases"


def _reply(raw: bytes | None) -> tuple[int, dict[str, Any]]:
    assert raw is not None
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def _patch(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps(ops).encode()


def test_shard_lease_renewed_by_a_json_patch_that_tests_the_holder() -> None:
    stub = StubServer(Population(1, 1), 10.0)
    lease = {"metadata": {"name": "shard-0"}, "spec": {"holderIdentity": "shard-0-a"}}
    created, _ = _reply(stub.handle(None, "POST", LEASES, json.dumps(lease).encode()))  # type: ignore[arg-type]
    assert created == 201
    renew = [
        {"op": "test", "path": "/spec/holderIdentity", "value": "shard-0-a"},
        {"op": "add", "path": "/spec/renewTime", "value": "2026-01-01T00:00:00.000000Z"},
    ]
    code, renewed = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-0", _patch(renew)))  # type: ignore[arg-type]
    assert code == 200
    assert renewed["spec"] == {
        "holderIdentity": "shard-0-a",
        "renewTime": "2026-01-01T00:00:00.000000Z",
    }
    taken = [{"op": "test", "path": "/spec/holderIdentity", "value": "shard-0-b"}, *renew[1:]]
    code, refused = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-0", _patch(taken)))  # type: ignore[arg-type]
    assert (code, refused["reason"]) == (422, "Invalid")
    missing, _ = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-9", _patch(renew)))  # type: ignore[arg-type]
    assert missing == 404


def test_a_pod_is_read_back_with_the_status_written_and_event_repeats_are_answered() -> None:
    # A shard lets go of a settled pod's status and reads it back with a GET before its next
    # change (a crash loop's next restart); a stub answering 404 froze those pods' loops.
    stub = StubServer(Population(2, 4), 10.0)
    pods = "/api/v1/namespaces/default/pods"
    running = {"status": {"phase": "Running"}}
    patched, _ = _reply(
        stub.handle(None, "PATCH", f"{pods}/pod-000003/status", json.dumps(running).encode())  # type: ignore[arg-type]
    )
    assert patched == 200
    code, pod = _reply(stub.handle(None, "GET", f"{pods}/pod-000003", b""))  # type: ignore[arg-type]
    assert code == 200
    assert pod["metadata"]["uid"] == "pod-uid-00000003"
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "node-00001"
    missing, _ = _reply(stub.handle(None, "GET", f"{pods}/pod-000004", b""))  # type: ignore[arg-type]
    assert missing == 404
    repeat = {"count": 2, "lastTimestamp": "2026-01-01T00:00:00Z", "message": "m"}
    event = "/api/v1/namespaces/default/events/p.1"
    code, _ = _reply(stub.handle(None, "PATCH", event, json.dumps(repeat).encode()))  # type: ignore[arg-type]
    assert code == 200
    assert stub.totals["pod_get"] == 2 and stub.totals["event_patch"] == 1


def test_the_bench_policy_example_is_valid_and_matches_every_stub_pod() -> None:
    # examples/bench-policy.yaml is what docs/performance.md's "every pod matches a policy"
    # figure ran: it must select the stub's pods and name their container.
    path = Path(__file__).resolve().parents[2] / "examples" / "bench-policy.yaml"
    (raw,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    policy = load_mock_status(raw)
    assert policy.spec.selector is not None
    pod = Population(10, 100).pod(7)
    wanted = policy.spec.selector.match_labels or {}
    assert wanted and wanted.items() <= pod["metadata"]["labels"].items()
    named = {
        c["name"] for branch in raw["spec"]["branches"] for step in branch["steps"]
        for c in step.get("containers", [])
    }  # fmt: skip
    assert named == {c["name"] for c in pod["spec"]["containers"]}
    assert sum(branch["weight"] for branch in raw["spec"]["branches"]) == 100


# -- over HTTP/2: what the kubelet traffic profile sends ---------------------------------------


class _FakeTime:
    """An asyncio loop's clock, moved by hand (its timers fire as it passes them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 0.0
        setattr(loop, "time", lambda: self.now)  # noqa: B010 - a method, replaced on purpose

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def _stub_process(nodes: int, pods: int, *extra: str) -> Iterator[int]:
    """``python -m bench._stubapiserver`` in its own process (as bench shard runs it)."""
    args = ["--nodes", str(nodes), "--pods", str(pods), *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._stubapiserver", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _json(conn: Http2Connection, method: str, path: str, body: Any = None) -> Any:
    params = None
    if "?" in path:
        path, _, query = path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&"))
    answer = await conn.request(
        method,
        path,
        params=params,
        body=None if body is None else json.dumps(body).encode(),
        content_type=None if body is None else "application/json",
    )
    return answer.status, json.loads(answer.content)


async def _watch(conn: Http2Connection, path: str, params: dict[str, str], into: list[Any]) -> None:
    async with conn.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status == 200
        buf = b""
        async for piece in response.aiter_bytes():
            buf += piece
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                into.append(json.loads(line))


async def test_stub_serves_a_kubelets_reads_over_h2c(nursery: trio.Nursery) -> None:
    # Three nodes, six pods: node-00001 has pod-000001 and pod-000004. Everything goes over
    # ONE cleartext HTTP/2 connection with prior knowledge, as a node's connection does.
    with _stub_process(3, 6) as port:
        conn = Http2Connection(ClusterConfig(server=f"http://127.0.0.1:{port}"))
        await nursery.start(conn.run)
        for path, names in (
            ("/apis/node.k8s.io/v1/runtimeclasses?resourceVersion=0", []),
            ("/apis/storage.k8s.io/v1/csidrivers?resourceVersion=0", []),
            ("/api/v1/services?resourceVersion=0", ["kubernetes"]),
            (
                f"/api/v1/namespaces/team-a/configmaps?fieldSelector=metadata.name={ROOT_CA}",
                [ROOT_CA],
            ),
            ("/api/v1/pods?fieldSelector=spec.nodeName=node-00001", ["pod-000001", "pod-000004"]),
            ("/api/v1/nodes?fieldSelector=metadata.name=node-00001", []),
        ):
            code, listed = await _json(conn, "GET", path)
            assert code == 200, path
            assert [item["metadata"]["name"] for item in listed["items"]] == names, path
            assert int(listed["metadata"]["resourceVersion"]) > 0
        assert listed["items"] == []  # no Node yet; once POSTed, the informer lists it
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-00001"}}
        code, created = await _json(conn, "POST", "/api/v1/nodes", node)
        assert code == 201 and created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
        # registering again, as a restarted kubelet does: 409, the Node kept as it was
        assert (await _json(conn, "POST", "/api/v1/nodes", node))[0] == 409
        _, own = await _json(conn, "GET", "/api/v1/nodes?fieldSelector=metadata.name=node-00001")
        assert [item["metadata"]["name"] for item in own["items"]] == ["node-00001"]
        assert (await _json(conn, "GET", "/api/v1/nodes/node-00001?resourceVersion=0"))[0] == 200
        # CSINode: missing until POSTed, as on a new cluster
        csinode = "/apis/storage.k8s.io/v1/csinodes"
        assert (await _json(conn, "GET", f"{csinode}/node-00001"))[0] == 404
        body = {"kind": "CSINode", "metadata": {"name": "node-00001"}, "spec": {"drivers": []}}
        assert (await _json(conn, "POST", csinode, body))[0] == 201
        assert (await _json(conn, "POST", csinode, body))[0] == 409
        code, got = await _json(conn, "GET", f"{csinode}/node-00001")
        assert (code, got["metadata"]["name"]) == (200, "node-00001")
        assert got["metadata"]["uid"] and got["metadata"]["resourceVersion"]
        # a node's pod watch hears of its own pods' writes only, and ends at its timeoutSeconds
        events: list[Any] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as watching:
                watching.start_soon(
                    _watch,
                    conn,
                    "/api/v1/pods",
                    {"fieldSelector": "spec.nodeName=node-00001", "timeoutSeconds": "1"},
                    events,
                )
                await trio.sleep(0.3)  # the watch is open on the stub
                running = {"status": {"phase": "Running"}}
                for pod in ("pod-000002", "pod-000004"):
                    path = f"/api/v1/namespaces/default/pods/{pod}/status"
                    assert (await _json(conn, "PATCH", path, running))[0] == 200
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("MODIFIED", "pod-000004")
        ]
        _, stats = await _json(conn, "GET", "/_stub/stats")
    assert stats["connections"] == {"http/1.1": 0, "h2": 1}
    assert stats["unknown"] == []
    assert {k: v for k, v in stats["requests"].items() if k != "pod_status_patch"} == {
        "runtimeclasses_list": 1,
        "csidrivers_list": 1,
        "services_list": 1,
        "configmaps_list": 1,
        "pods_node_list": 1,
        "pods_node_watch": 1,
        "node_own_list": 2,
        "node_post": 2,
        "node_get": 1,
        "csinode_get": 2,
        "csinode_post": 2,
    }


async def test_stub_watches_of_a_kubelet_send_bookmarks_when_asked() -> None:
    # kube-apiserver's watch cache: a BOOKMARK a minute to a watch that allows them, none
    # to one that does not; the lean shard's watches keep theirs every 30 s.
    loop_ready = asyncio.Event()
    sent: dict[str, list[bytes]] = {}

    class Conn:
        watch: Any = None

        def __init__(self, name: str) -> None:
            self.name = name
            sent[name] = []

        def watch_start(self) -> None:
            loop_ready.set()

        def watch_data(self, data: bytes) -> None:
            sent[self.name].append(data)

        def watch_end(self) -> None:
            sent[self.name].append(b"<end>")

    async def main() -> StubServer:
        stub = StubServer(Population(2, 2), 10.0)
        for name, query in (
            ("asked", "allowWatchBookmarks=true&timeoutSeconds=90"),
            ("unasked", "timeoutSeconds=90"),
        ):
            conn: Any = Conn(name)  # frames nothing: keeps what the watch sends
            assert stub.handle(conn, "GET", f"/api/v1/services?watch=true&{query}", b"") is None
        assert len(stub.watches) == 2
        await asyncio.sleep(0)
        return stub

    loop = asyncio.new_event_loop()
    try:
        clock = _FakeTime(loop)
        stub = loop.run_until_complete(main())
        clock.advance(KUBE_BOOKMARK_EVERY + 1)
        loop.run_until_complete(asyncio.sleep(0))
        assert [json.loads(line)["type"] for line in sent["asked"]] == ["BOOKMARK"]
        assert sent["unasked"] == []
        clock.advance(90 - KUBE_BOOKMARK_EVERY)
        loop.run_until_complete(asyncio.sleep(0))
        assert sent["asked"][-1] == sent["unasked"][-1] == b"<end>"  # at timeoutSeconds
        assert stub.watches == set()
    finally:
        loop.close()


def test_stub_takes_a_node_lease_over_by_a_merge_patch() -> None:
    # A shard whose fence reopens takes each node's Lease over with one merge PATCH: the stub
    # failed the connection on it (it parsed JSON patches only), and a 10,000-node run of the
    # kubelet profile, fenced once on a loaded box, could not recover.
    stub = StubServer(Population(2, 4), 10.0)
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    lease = {"metadata": {"name": "node-00001"}, "spec": {"holderIdentity": "node-00001"}}
    created, _ = _reply(stub.handle(None, "POST", leases, json.dumps(lease).encode()))  # type: ignore[arg-type]
    assert created == 201
    take = {"spec": {"holderIdentity": "node-00001", "renewTime": "2026-01-01T00:00:00.000000Z"}}
    body = json.dumps(take).encode()
    code, taken = _reply(stub.handle(None, "PATCH", f"{leases}/node-00001", body))  # type: ignore[arg-type]
    assert (code, taken["spec"]["renewTime"]) == (200, "2026-01-01T00:00:00.000000Z")
    assert stub.totals["lease_patch"] == 1
