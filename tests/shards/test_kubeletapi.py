"""The shard's kubelet API: TLS client-certificate auth, logs (cut and followed), /pods, node paths."""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
import trustme

from fleet.errors import ConfigError
from shards._behaviours import CrashLoop
from shards._kubeletapi import (
    ANNOTATION_LOG_INTERVAL,
    ANNOTATION_LOGS,
    ContainerInfo,
    KubeletApiSettings,
    KubeletEndpoint,
    KubeletServer,
    NodeInfo,
    PodInfo,
)
from shards._kubeletapi._http import Request, Streamed
from shards._kubeletview import pod_info
from shards._plan import RUNNING_READY, Plan, Step
from shards._pods import PodRecord, _Container, _PodSpec

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class View:
    def __init__(self) -> None:
        self.node_infos = {"n1": NodeInfo("n1", {"cpu": "4", "memory": "8Gi", "pods": "110"}, {})}
        self.pod_infos: dict[str, PodInfo] = {}

    def add(self, name: str, phase: str = "Running", **annotations: str) -> None:
        self.pod_infos[f"default/{name}"] = PodInfo(
            "default",
            name,
            f"uid-{name}",
            "n1",
            T0,
            phase,
            (ContainerInfo("app", {"cpu": "100m"}),),
            annotations=annotations,
        )

    def node(self, name: str) -> NodeInfo | None:
        return self.node_infos.get(name)

    def nodes(self) -> Sequence[str]:
        return sorted(self.node_infos)

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return self.pod_infos.get(f"{namespace}/{name}")

    def pods_on(self, node: str) -> Sequence[PodInfo]:
        return [p for p in self.pod_infos.values() if p.node == node]


def _settings(ca: trustme.CA, **kw: object) -> KubeletApiSettings:
    return KubeletApiSettings(
        advertise_address="127.0.0.1",
        client_ca_pem=ca.cert_pem.bytes(),
        host="127.0.0.1",
        port=0,
        **kw,  # type: ignore[arg-type]
    )


def _request(
    path: str, user: str | None = "kube-apiserver-kubelet-client", **query: str
) -> Request:
    return Request("GET", path, list(query.items()), {}, user)


async def _body(reply: object) -> bytes:
    assert isinstance(reply, Streamed)
    return b"".join([chunk async for chunk in reply.chunks()])


def test_settings_refuse_an_open_api() -> None:
    with pytest.raises(ConfigError, match="client CA"):
        KubeletApiSettings(advertise_address="127.0.0.1", client_ca_pem=b"")


async def test_tls_needs_a_client_certificate_from_the_ca(tmp_path: Path) -> None:
    ca, other = trustme.CA(), trustme.CA()
    view = View()
    view.add("web", **{ANNOTATION_LOGS: "hello\nworld"})
    server = KubeletServer(_settings(ca), view, wall=lambda: T0 + timedelta(minutes=1))
    async with trio.open_nursery() as nursery:
        endpoint: KubeletEndpoint = await nursery.start(server.run)
        url = f"https://127.0.0.1:{endpoint.port}"
        good = ca.issue_cert("client", common_name="kube-apiserver-kubelet-client")
        good.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "good.pem"))
        bad = other.issue_cert("client", common_name="mallory")
        bad.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "bad.pem"))

        def client(cert: str | None) -> httpx.AsyncClient:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if cert:
                context.load_cert_chain(str(tmp_path / cert))
            return httpx.AsyncClient(verify=context)

        async with client("good.pem") as http:
            answer = await http.get(f"{url}/containerLogs/default/web/app")
            assert answer.status_code == 200
            assert answer.text == "hello\nworld\n"
            answer = await http.get(f"{url}/healthz")  # the same connection, kept alive
            assert (answer.status_code, answer.text) == (200, "ok")
            pods = (await http.get(f"{url}/pods")).json()
            assert [p["metadata"]["name"] for p in pods["items"]] == ["web"]
            assert pods["items"][0]["spec"]["containers"][0]["resources"] == {
                "requests": {"cpu": "100m"}
            }
            assert (await http.get(f"{url}/nodes/n1/pods")).json() == pods
            assert (await http.get(f"{url}/nodes/n2/pods")).status_code == 404
        async with client(None) as http:
            answer = await http.get(f"{url}/containerLogs/default/web/app")
            assert (answer.status_code, answer.text) == (401, "Unauthorized\n")
        async with client("bad.pem") as http:
            with pytest.raises(httpx.HTTPError):  # the handshake refuses a foreign certificate
                await http.get(f"{url}/healthz")
        nursery.cancel_scope.cancel()


async def test_logs_are_cut_by_tail_since_timestamps_and_limit() -> None:
    view = View()
    view.add("web", **{ANNOTATION_LOGS: "a\nb\nc", ANNOTATION_LOG_INTERVAL: "10s"})
    now = T0 + timedelta(seconds=45)  # lines 0..4 at 0, 10, 20, 30, 40 s: a b c a b
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: now)
    path = "/containerLogs/default/web/app"
    assert await _body(await server.handle(_request(path))) == b"a\nb\nc\na\nb\n"
    assert await _body(await server.handle(_request(path, tailLines="2"))) == b"a\nb\n"
    assert await _body(await server.handle(_request(path, sinceSeconds="20"))) == b"a\nb\n"
    assert await _body(await server.handle(_request(path, limitBytes="3"))) == b"a\nb"
    stamped = await _body(await server.handle(_request(path, tailLines="1", timestamps="true")))
    assert stamped == b"2026-01-01T12:00:40.000000000Z b\n"
    since = await _body(await server.handle(_request(path, sinceTime="2026-01-01T12:00:30Z")))
    assert since == b"a\nb\n"


async def test_log_errors_are_the_kubelets() -> None:
    view = View()
    view.add("web")
    view.add("pending", phase="Pending")
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0)
    for path, query, status, text in [
        ("/containerLogs/default/nope/app", {}, 404, 'pod "nope" in namespace "default" not found'),
        (
            "/containerLogs/default/web/other",
            {},
            400,
            'container "other" in pod "web" is not available',
        ),
        (
            "/containerLogs/default/web/app",
            {"previous": "true"},
            400,
            "previous terminated container",
        ),
        ("/containerLogs/default/web/app", {"tailLines": "-1"}, 400, "tailLines"),
        ("/containerLogs/default/pending/app", {}, 400, "is waiting to start: ContainerCreating"),
        ("/pods/x", {}, 404, "404 page not found"),
    ]:
        reply = await server.handle(_request(path, **query))
        assert reply.status == status, path  # type: ignore[union-attr]
        assert text in reply.body.decode(), path  # type: ignore[union-attr]
    assert (await server.handle(_request("/healthz", user=None))).status == 401  # type: ignore[union-attr]


async def test_default_log_follows_on_the_clock(autojump_clock: trio.testing.MockClock) -> None:
    view = View()
    view.add("web")
    start = trio.current_time()

    def wall() -> datetime:
        return T0 + timedelta(seconds=15 + trio.current_time() - start)

    server = KubeletServer(_settings(trustme.CA(), default_log_interval=10.0), view, wall=wall)
    reply = await server.handle(_request("/containerLogs/default/web/app", follow="true"))
    assert isinstance(reply, Streamed)
    got: list[tuple[float, bytes]] = []
    async for chunk in reply.chunks():
        got.append((trio.current_time() - start, chunk))
        if len(got) == 3:
            del view.pod_infos["default/web"]  # the pod goes: the follow ends
    where = 'kubemock-fleet: container "app" of pod default/web on node n1: heartbeat'
    assert got == [
        (0.0, f"{where} 0\n{where} 1\n".encode()),
        (5.0, f"{where} 2\n".encode()),
        (15.0, f"{where} 3\n".encode()),
    ]
    assert trio.current_time() - start <= 15.0 + 1.0  # noticed within one poll


# --- usage and stats -----------------------------------------------------------------------


def test_usage_curves_and_their_integrals() -> None:
    from shards._kubeletapi._usage import parse_curve

    fixed = parse_curve("250m", "cpu", 0)
    assert (fixed.at(10), fixed.integral(10)) == (0.25, 2.5)
    half = parse_curve("50%", "cpu", 2.0)
    assert half.at(0) == 1.0
    ramp = parse_curve("ramp(0,1,10s)", "cpu", 0)
    assert (ramp.at(5), ramp.at(20)) == (0.5, 1.0)
    assert ramp.integral(10) == pytest.approx(5.0) and ramp.integral(20) == pytest.approx(15.0)
    sine = parse_curve("sine(100m,900m,1m)", "cpu", 0)
    assert sine.at(0) == pytest.approx(0.1) and sine.at(30) == pytest.approx(0.9)
    assert sine.integral(60) == pytest.approx(0.5 * 60)  # the mean over a whole period
    memory = parse_curve("ramp(10%,90%,5m)", "memory", 1024.0)
    assert memory.at(300) == pytest.approx(0.9 * 1024)


async def test_stats_summary_and_resource_metrics_follow_the_annotations() -> None:
    view = View()
    view.add(
        "busy",
        **{
            "fleet.mock.zhizuqiu.cn/usage-cpu": "50%",  # of the 100m requested
            "fleet.mock.zhizuqiu.cn/usage-memory": "64Mi",
        },
    )
    view.add("plain")  # defaults: 10 % of the 100m requested, 16Mi (no memory request)
    view.add("waiting", phase="Pending")  # no stats for containers not running
    now = T0 + timedelta(seconds=100)
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: now)
    reply = await server.handle(_request("/stats/summary"))
    summary = json.loads(reply.body)  # type: ignore[union-attr]
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert sorted(pods) == ["busy", "plain"]
    assert pods["busy"]["cpu"]["usageNanoCores"] == 50_000_000
    assert pods["busy"]["cpu"]["usageCoreNanoSeconds"] == 5_000_000_000  # 0.05 core x 100 s
    assert pods["busy"]["memory"]["workingSetBytes"] == 64 * 2**20
    assert pods["plain"]["containers"][0]["cpu"]["usageNanoCores"] == 10_000_000
    node = summary["node"]
    assert node["nodeName"] == "n1"
    assert node["cpu"]["usageNanoCores"] == 100_000_000 + 50_000_000 + 10_000_000  # base + pods
    assert node["memory"]["workingSetBytes"] == (512 + 64 + 16) * 2**20
    assert node["memory"]["availableBytes"] == (8 * 1024 - 512 - 64 - 16) * 2**20

    reply = await server.handle(_request("/nodes/n1/metrics/resource"))
    text = reply.body.decode()  # type: ignore[union-attr]
    ms = int(now.timestamp() * 1000)
    assert (
        f'container_cpu_usage_seconds_total{{container="app",namespace="default",pod="busy"}} 5.0 {ms}'
        in text
    )
    assert f"node_memory_working_set_bytes {float((512 + 64 + 16) * 2**20)!r} {ms}" in text
    assert "scrape_error 0" in text
    cadvisor = (await server.handle(_request("/metrics/cadvisor"))).body.decode()  # type: ignore[union-attr]
    assert 'container_memory_working_set_bytes{container="app"' in cadvisor


# --- exec: commands -------------------------------------------------------------------------


def test_commands_scripted_first_then_builtins() -> None:
    from shards._kubeletapi._commands import Outcome, run_argv, run_line
    from shards._kubeletapi._exec import exit_status

    view = View()
    view.add(
        "web",
        **{
            "fleet.mock.zhizuqiu.cn/exec": json.dumps(
                {"cat /etc/hostname": {"stdout": "web\n"}, "/check": {"exitCode": 3}}
            ),
            "fleet.mock.zhizuqiu.cn/exec.sidecar": json.dumps({"/check": "fine\n"}),
        },
    )
    pod = view.pod_infos["default/web"]

    def run(*argv: str, container: str = "app") -> Outcome:
        return run_argv(list(argv), pod, container, lambda: T0)

    assert run("cat", "/etc/hostname") == Outcome(stdout="web\n")
    assert run("/check").exit_code == 3
    assert run("/check", container="sidecar") == Outcome(stdout="fine\n")
    assert run("echo", "a", "b") == Outcome(stdout="a b\n")
    assert run("sh", "-c", "exit 7") == Outcome(exit_code=7, exit_shell=True)
    assert run("hostname") == Outcome(stdout="web\n")
    assert run("nosuch").missing
    assert run_line("nosuch --flag", pod, "app", lambda: T0) == Outcome(
        stderr="sh: nosuch: not found\n", exit_code=127
    )
    assert run("date").stdout == "Thu Jan 01 12:00:00 UTC 2026\n"
    assert exit_status(0, ["true"]) == {"metadata": {}, "status": "Success"}
    failed = exit_status(3, ["sh", "-c", "exit 3"])
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


# --- exec over SPDY/3.1: the frames, against a scripted client -------------------------------


async def test_spdy_exec_streams_output_status_and_stdin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import struct
    import zlib

    from shards._kubeletapi import _spdy
    from shards._kubeletapi._http import Upgrade

    view = View()
    view.add("web")
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0)
    request = Request(
        "POST",
        "/exec/default/web/app",
        [("command", "sh"), ("stdin", "1"), ("stdout", "1"), ("stderr", "1")],
        {"upgrade": "SPDY/3.1", "x-stream-protocol-version": "v4.channel.k8s.io,v3.channel.k8s.io"},
        "kube-apiserver-kubelet-client",
    )
    reply = await server.handle(request)
    assert isinstance(reply, Upgrade)
    assert ("x-stream-protocol-version", "v4.channel.k8s.io") in reply.headers
    client, kubelet = trio.testing.memory_stream_pair()
    deflate = zlib.compressobj(zdict=_spdy.DICTIONARY)
    inflate = zlib.decompressobj(zdict=_spdy.DICTIONARY)

    def syn(stream_id: int, kind: str) -> bytes:
        block = deflate.compress(_spdy.header_block({"streamType": kind})) + deflate.flush(
            zlib.Z_SYNC_FLUSH
        )
        return _spdy.control_frame(_spdy.SYN_STREAM, struct.pack(">IIH", stream_id, 0, 0) + block)

    received = bytearray()

    def parse() -> list[tuple[int, int, bytes]]:
        """(control type or -stream id, flags, payload) of every whole frame received."""
        out, pos = [], 0
        while pos + 8 <= len(received):
            head = received[pos : pos + 8]
            length = int.from_bytes(head[5:8], "big")
            if pos + 8 + length > len(received):
                break
            payload = bytes(received[pos + 8 : pos + 8 + length])
            kind = (
                int.from_bytes(head[2:4], "big")
                if head[0] & 0x80
                else -int.from_bytes(head[:4], "big")
            )
            out.append((kind, head[4], payload))
            pos += 8 + length
        return out

    async def frames() -> list[tuple[int, int, bytes]]:
        """Every frame up to the server's GOAWAY (its last word), as kubectl reads them."""
        while not any(kind == _spdy.GOAWAY for kind, _, _ in parse()):
            data = await client.receive_some(65536)
            assert data, "the server closed before its GOAWAY"
            received.extend(data)
        return parse()

    closed_at: list[float] = []

    async def serve() -> None:  # as the connection handler does: run, then close
        await reply.run(kubelet, b"")
        await kubelet.aclose()
        closed_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        opening = syn(1, "error") + syn(3, "stdin") + syn(5, "stdout") + syn(7, "stderr")
        await client.send_all(opening + _spdy.control_frame(_spdy.PING, struct.pack(">I", 1)))
        # the shell exits on its own line; stdin's end comes after (kubectl's FIN, racing)
        await client.send_all(_spdy.data_frame(3, b"echo hi\nnosuch\nexit 5\n"))
        got = await frames()
        await trio.sleep(1)
        # the server is still reading: stdin's late end is taken, not reset (a close on
        # unread bytes would discard the answer on its way)
        assert not closed_at
        await client.send_all(_spdy.data_frame(3, b"", _spdy.FLAG_FIN))
        closed = trio.current_time()
        await client.aclose()  # kubectl closes once it has the status
    assert closed_at and closed_at[0] - closed < 0.5
    replies = [p for kind, _, p in got if kind == _spdy.SYN_REPLY]
    assert [struct.unpack(">I", p[:4])[0] for p in replies] == [1, 3, 5, 7]
    assert _spdy.parse_header_block(inflate.decompress(replies[0][4:])) == {}
    assert (_spdy.PING, 0, struct.pack(">I", 1)) in got
    data = {-kind: b"" for kind, _, _ in got if kind < 0}
    fins = set()
    for kind, flags, payload in got:
        if kind < 0:
            data[-kind] += payload
            if flags & _spdy.FLAG_FIN:
                fins.add(-kind)
    assert data[5] == b"hi\n" and data[7] == b"sh: nosuch: not found\n"
    status = json.loads(data[1])
    assert (
        status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "5"
    )
    assert fins == {1, 5, 7}
    assert got[-1][0] == _spdy.GOAWAY


# --- tokens and access reviews ---------------------------------------------------------------


class Reviews:
    """A cluster's TokenReview and SubjectAccessReview endpoints, scripted."""

    def __init__(self, *, served: bool = True) -> None:
        self.served = served
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def request(self, method: str, path: str, **kw: object) -> object:
        from fleet.kube import Response

        body = json.loads(kw["body"])  # type: ignore[arg-type]
        self.calls.append((path, body))
        if not self.served:
            return Response(404, b"{}")
        if path.endswith("tokenreviews"):
            ok = body["spec"]["token"] == "good-token"
            user = {"username": "system:serviceaccount:kube-system:metrics-server", "groups": ["g"]}
            return Response(
                201, json.dumps({"status": {"authenticated": ok, "user": user}}).encode()
            )
        attrs = body["spec"]["resourceAttributes"]
        allowed = body["spec"]["user"] != "mallory" and attrs["subresource"] in ("metrics", "proxy")
        return Response(201, json.dumps({"status": {"allowed": allowed}}).encode())


async def test_tokens_are_reviewed_and_access_is_authorized() -> None:
    from shards._kubeletapi import WebhookAuth

    view = View()
    view.add("web")
    reviews = Reviews()
    auth = WebhookAuth(reviews)  # type: ignore[arg-type]
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0, auth=auth)

    def bearer(path: str, token: str) -> Request:
        return Request("GET", path, [], {"authorization": f"Bearer {token}"}, None)

    assert (await server.handle(bearer("/metrics/resource", "good-token"))).status == 200  # type: ignore[union-attr]
    assert (await server.handle(bearer("/metrics/resource", "bad-token"))).status == 401  # type: ignore[union-attr]
    forbidden = await server.handle(bearer("/stats/summary", "good-token"))
    assert forbidden.status == 403  # type: ignore[union-attr]
    assert forbidden.body == (  # type: ignore[union-attr]
        b"Forbidden (user=system:serviceaccount:kube-system:metrics-server, verb=get, "
        b"resource=nodes, subresource=stats)\n"
    )
    assert (await server.handle(_request("/pods", user="mallory"))).status == 403  # type: ignore[union-attr]
    access = [body for path, body in reviews.calls if path.endswith("subjectaccessreviews")]
    assert access[0]["spec"]["resourceAttributes"] == {  # type: ignore[index]
        "verb": "get",
        "resource": "nodes",
        "subresource": "metrics",
        "name": "n1",
    }
    calls = len(reviews.calls)
    assert (await server.handle(bearer("/metrics/resource", "good-token"))).status == 200  # type: ignore[union-attr]
    assert len(reviews.calls) == calls  # both answers cached


async def test_without_review_apis_a_certificate_is_enough_and_a_token_is_not() -> None:
    from shards._kubeletapi import WebhookAuth

    view = View()
    view.add("web")
    auth = WebhookAuth(Reviews(served=False))  # type: ignore[arg-type]
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0, auth=auth)
    assert (await server.handle(_request("/pods"))).status == 200  # type: ignore[union-attr]
    token = Request("GET", "/pods", [], {"authorization": "Bearer good-token"}, None)
    assert (await server.handle(token)).status == 401  # type: ignore[union-attr]


async def test_each_node_its_own_address_on_one_listener(tmp_path: Path) -> None:
    ca = trustme.CA()
    view = View()
    view.node_infos["n2"] = NodeInfo("n2", {"cpu": "2", "memory": "4Gi", "pods": "110"}, {})
    view.add("web")  # on n1
    settings = KubeletApiSettings(
        advertise_address="127.0.0.1",
        client_ca_pem=ca.cert_pem.bytes(),
        host="0.0.0.0",
        port=0,
        node_network="127.9.0.0/16",
    )
    server = KubeletServer(settings, view, wall=lambda: T0 + timedelta(minutes=1))
    async with trio.open_nursery() as nursery:
        endpoint: KubeletEndpoint = await nursery.start(server.run)
        assert [endpoint.address_of(n) for n in ("n1", "n2", "n1")] == [
            "127.9.0.1",
            "127.9.0.2",
            "127.9.0.1",
        ]
        cert = ca.issue_cert("client", common_name="kube-apiserver-kubelet-client")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(str(tmp_path / "client.pem"))
        async with httpx.AsyncClient(verify=context) as http:
            # what kube-apiserver sends for nodes/<n>/proxy/pods: no node name, its address
            for address, pods in (("127.9.0.1", ["web"]), ("127.9.0.2", [])):
                answer = await http.get(f"https://{address}:{endpoint.port}/pods")
                assert [p["metadata"]["name"] for p in answer.json()["items"]] == pods
            summary = await http.get(f"https://127.9.0.2:{endpoint.port}/stats/summary")
            assert summary.json()["node"]["nodeName"] == "n2"
            shared = await http.get(f"https://127.0.0.1:{endpoint.port}/pods")
            assert shared.status_code == 400  # the shared address: two nodes, ask by prefix
        nursery.cancel_scope.cancel()


def _outside_address() -> str | None:
    """One of this machine's addresses that is not loopback (the one its default route
    leaves from), or None when it has none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def _answers(address: str, port: int) -> bool:
    """Whether a TCP connection to ``address:port`` is accepted (and then kept open)."""
    try:
        stream = await trio.open_tcp_stream(address, port)
    except OSError:
        return False
    async with stream:
        with trio.move_on_after(0.5):
            # A listener wider than loopback took connections from elsewhere, then closed them.
            return await stream.receive_some(1) != b""
        return True


@pytest.mark.parametrize("network", ["", "127.9.0.0/16"])
async def test_the_listener_binds_where_the_nodes_are_reached_by_default(network: str) -> None:
    """Under run/up every node is reached on loopback, yet the listener was bound to
    0.0.0.0: open on every interface. By default it now binds what the nodes advertise (an
    address per node: every loopback address, on the loopback device alone); ``0.0.0.0``
    opens it (deploy/)."""
    outside = _outside_address()
    if outside is None:
        # What is proven is that another interface's address is refused: with no other
        # interface there is nothing to connect from. Not a CI skip: this machine, and any
        # with a network, has one (the CI run here runs it).
        pytest.skip("this machine has no address but loopback: nothing to refuse")
    ca = trustme.CA()
    view = View()
    settings = KubeletApiSettings(
        advertise_address="127.0.0.1", client_ca_pem=ca.cert_pem.bytes(), port=0,
        node_network=network,
    )  # fmt: skip
    inside = "127.9.0.1" if network else "127.0.0.1"
    for host, elsewhere in (("", False), ("0.0.0.0", not network)):
        server = KubeletServer(replace(settings, host=host), view, wall=lambda: T0)
        async with trio.open_nursery() as nursery:
            endpoint: KubeletEndpoint = await nursery.start(server.run)
            if network:
                assert endpoint.address_of("n1") == inside
            assert await _answers(inside, endpoint.port)
            assert await _answers(outside, endpoint.port) is elsewhere, (host, outside)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("network", ["", "127.9.0.0/16"])
async def test_a_kubelet_port_in_use_is_one_error_naming_it(network: str) -> None:
    import socket

    from fleet.errors import one_error

    ca = trustme.CA()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0" if network else "127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = KubeletApiSettings(
            advertise_address="127.0.0.1", client_ca_pem=ca.cert_pem.bytes(), port=port,
            node_network=network,
        )  # fmt: skip
        with pytest.raises(BaseException) as raised:
            async with trio.open_nursery() as nursery:
                await nursery.start(KubeletServer(settings, View(), wall=lambda: T0).run)
    where = "every loopback address" if network else "127.0.0.1"
    assert str(one_error(raised.value)) == (
        f"cannot serve the kubelet API on {where}, port {port}: Address already in use "
        "(another fleet on this host? pick another shard.kubeletPort, or 0)"
    )


async def test_websocket_close_after_ours_is_not_answered() -> None:
    # The kubelet closed first (the command ended); the client's Close is the answer, the
    # connection is then CLOSED and nothing more may be sent. Answering it raised and took
    # the whole listener down (kubectl 1.33 through kube-apiserver 1.24).
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import CloseConnection

    from shards._kubeletapi._exec import _Session

    client, kubelet = trio.testing.memory_stream_pair()
    session = _Session(kubelet, b"", "v5.channel.k8s.io")
    ws = Connection(ConnectionType.CLIENT)
    with trio.fail_after(5):
        await session.close()
        ws.receive_data(bytes(await client.receive_some(65536)))
        (event,) = ws.events()
        assert isinstance(event, CloseConnection)
        await client.send_all(ws.send(event.response()))
        await session.read()  # returns: no LocalProtocolError
    assert session.closed.is_set()


# --- port-forward over WebSocket: SPDY tunnelled (kubectl >= 1.31), the kubelet's channels ---


def _ws_request(path: str, protocols: str, query: list[tuple[str, str]]) -> Request:
    return Request(
        "GET",
        path,
        query,
        {
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
            "sec-websocket-protocol": protocols,
        },
        "kube-apiserver-kubelet-client",
    )


def _pf_server() -> KubeletServer:
    view = View()
    view.add("web", **{"fleet.mock.zhizuqiu.cn/port.7000": "echo"})
    return KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0)


async def test_port_forward_spdy_tunnelled_in_a_websocket() -> None:
    import struct
    import zlib

    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection

    from shards._kubeletapi import _spdy
    from shards._kubeletapi._http import Upgrade

    server = _pf_server()
    reply = await server.handle(
        _ws_request("/portForward/default/web", "SPDY/3.1+portforward.k8s.io", [])
    )
    assert isinstance(reply, Upgrade), reply
    assert ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io") in reply.headers
    assert ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in reply.headers  # RFC 6455
    client, kubelet = trio.testing.memory_stream_pair()
    ws = Connection(ConnectionType.CLIENT)
    deflate = zlib.compressobj(zdict=_spdy.DICTIONARY)

    def syn(stream_id: int, headers: dict[str, str]) -> bytes:
        block = deflate.compress(_spdy.header_block(headers)) + deflate.flush(zlib.Z_SYNC_FLUSH)
        return _spdy.control_frame(_spdy.SYN_STREAM, struct.pack(">IIH", stream_id, 0, 0) + block)

    async def serve() -> None:
        await reply.run(kubelet, b"")
        await kubelet.aclose()

    spdy = bytearray()
    closed = False

    def frames() -> list[tuple[bytes, int, bytes]]:
        out, pos = [], 0
        while pos + 8 <= len(spdy):
            length = int.from_bytes(spdy[pos + 5 : pos + 8], "big")
            out.append(
                (bytes(spdy[pos : pos + 4]), spdy[pos + 4], bytes(spdy[pos + 8 : pos + 8 + length]))
            )
            pos += 8 + length
        return out

    def fins() -> set[int]:
        return {int.from_bytes(h, "big") for h, f, _ in frames() if not h[0] & 0x80 and f & 1}

    async def receive() -> None:
        nonlocal closed
        ws.receive_data(bytes(await client.receive_some(65536)))
        for event in ws.events():
            if isinstance(event, BytesMessage):
                spdy.extend(event.data)
            elif isinstance(event, CloseConnection):
                closed = True

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            pair = {"port": "7000", "requestID": "0"}
            opening = syn(1, {"streamType": "error", **pair}) + syn(
                3, {"streamType": "data", **pair}
            )
            # SPDY cut across WebSocket messages anywhere, as client-go's tunnel may
            for piece in (opening[:5], opening[5:], _spdy.data_frame(3, b"ping", _spdy.FLAG_FIN)):
                await client.send_all(ws.send(BytesMessage(data=piece)))
            while fins() != {1, 3}:  # the responder is done: both streams of the pair end
                await receive()
            assert not closed  # the tunnel stays for kubectl's next connection
            await client.send_all(ws.send(CloseConnection(code=1000)))
            while not closed:  # the client's Close is answered, the tunnel ends
                await receive()
    frames_ = frames()
    replies = [p for head, _, p in frames_ if head[0] & 0x80 and head[3] == _spdy.SYN_REPLY]
    assert [struct.unpack(">I", p[:4])[0] for p in replies] == [1, 3]
    data = [(int.from_bytes(h, "big"), f, p) for h, f, p in frames_ if not h[0] & 0x80]
    assert (3, 0, b"ping") in data  # echoed on the data stream
    assert {(i, f) for i, f, p in data if not p} == {(3, _spdy.FLAG_FIN), (1, _spdy.FLAG_FIN)}


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"])
async def test_port_forward_over_the_kubelets_websocket_channels(protocol: str) -> None:
    import base64

    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection, TextMessage

    from shards._kubeletapi._http import Upgrade

    server = _pf_server()
    path = "/portForward/default/web"
    refused = await server.handle(_ws_request(path, protocol, []))
    assert refused.status == 400 and b'"port" is required' in refused.body  # type: ignore[union-attr]
    bad = await server.handle(_ws_request(path, protocol, [("port", "70000")]))
    assert bad.status == 400 and b'unable to parse "70000"' in bad.body  # type: ignore[union-attr]
    reply = await server.handle(_ws_request(path, protocol, [("port", "8080,7000")]))
    assert isinstance(reply, Upgrade), reply
    assert ("sec-websocket-protocol", protocol) in reply.headers
    text = ".base64." in protocol
    client, kubelet = trio.testing.memory_stream_pair()
    ws = Connection(ConnectionType.CLIENT)

    def message(channel: int, data: bytes) -> bytes:
        if text:
            return ws.send(
                TextMessage(data=chr(ord("0") + channel) + base64.b64encode(data).decode())
            )
        return ws.send(BytesMessage(data=bytes([channel]) + data))

    got: dict[int, list[bytes]] = {}

    async def until(count: int) -> None:
        while sum(len(v) for v in got.values()) < count:
            ws.receive_data(bytes(await client.receive_some(65536)))
            for event in ws.events():
                if isinstance(event, BytesMessage | TextMessage):
                    raw = event.data.encode() if isinstance(event.data, str) else event.data
                    channel = raw[0] - ord("0") if text else raw[0]
                    payload = base64.b64decode(raw[1:]) if text else bytes(raw[1:])
                    got.setdefault(channel, []).append(payload)
                elif isinstance(event, CloseConnection):
                    raise AssertionError("closed early")

    async def serve() -> None:
        await reply.run(kubelet, b"")
        await kubelet.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await until(4)  # the port, little-endian, first on each of the four channels
            assert got == {0: [b"\x90\x1f"], 1: [b"\x90\x1f"], 2: [b"\x58\x1b"], 3: [b"\x58\x1b"]}
            await client.send_all(message(2, b"hello"))
            await client.send_all(message(0, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
            await until(6)
            assert got[2] == [b"\x58\x1b", b"hello"]
            assert got[0][1].startswith(b"HTTP/1.1 200 OK\r\n")
            assert got[0][1].endswith(b"kubemock-fleet: default/web port 8080: GET /x\n")
            await client.send_all(ws.send(CloseConnection(code=1000)))
    assert not got.get(1)[1:] and not got.get(3)[1:]  # type: ignore[index]


async def test_requests_wait_while_lease_renewals_are_overdue() -> None:
    # The shard's Lease lane comes first (its give_way): a scrape of every node waits.
    view = View()
    clear = trio.Event()
    asked: list[int] = []

    async def give_way() -> None:
        asked.append(1)
        await clear.wait()

    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0, give_way=give_way)
    done: list[object] = []

    async def scrape() -> None:
        done.append(await server.handle(_request("/nodes/n1/metrics/resource")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scrape)
        await trio.testing.wait_all_tasks_blocked()
        assert asked and not done  # held while renewals are overdue
        clear.set()
    assert len(done) == 1 and done[0].status == 200  # type: ignore[attr-defined]


# --- logs of a restarted container -----------------------------------------------------------


def _crashing(view: View, run_for: float = 20.0) -> None:
    """Pod ``crash`` whose container exits every ``run_for`` s, restarted as the kubelet does
    (runs [0, 20), [20, 40), back-off 10 s, [50, 70), ...), its runs from its Plan."""
    record = PodRecord(
        key="default/crash",
        uid="uid-crash",
        node="n1",
        spec=_PodSpec(containers=[_Container(name="app")]),
        annotations={},
        creation=T0,
        plan=Plan(
            (
                Step(
                    0.0,
                    "Running",
                    RUNNING_READY,
                    started_at=0.0,
                    behaviours=((None, CrashLoop(run_for)),),
                ),
            )
        ),
        phase="Running",
    )
    view.pod_infos["default/crash"] = pod_info(record)


async def test_logs_of_the_current_and_the_previous_run_after_restarts() -> None:
    view = View()
    _crashing(view)
    now = T0
    server = KubeletServer(
        _settings(trustme.CA(), default_log_interval=5.0), view, wall=lambda: now
    )
    path = "/containerLogs/default/crash/app"
    line = 'kubemock-fleet: container "app" of pod default/crash on node n1: heartbeat {}\n'

    def lines(*numbers: int) -> bytes:
        return "".join(line.format(i) for i in numbers).encode()

    # first run: no previous container yet
    now = T0 + timedelta(seconds=12)
    assert await _body(await server.handle(_request(path))) == lines(0, 1, 2)
    refused = await server.handle(_request(path, previous="true"))
    assert refused.status == 400  # type: ignore[union-attr]
    assert b'previous terminated container "app" in pod "crash" not found' in refused.body  # type: ignore[union-attr]
    # second run (from 20 s): its own log, from its start; previous: the first run, whole
    now = T0 + timedelta(seconds=27)
    assert await _body(await server.handle(_request(path))) == lines(0, 1)
    assert await _body(await server.handle(_request(path, previous="true"))) == lines(0, 1, 2, 3, 4)
    stamped = await _body(await server.handle(_request(path, tailLines="1", timestamps="true")))
    assert stamped.startswith(b"2026-01-01T12:00:25.000000000Z ")
    # back-off after the second run (40-50 s): the last run is read, as the kubelet does
    now = T0 + timedelta(seconds=45)
    assert await _body(await server.handle(_request(path))) == lines(0, 1, 2, 3, 4)
    # third run (from 50 s)
    now = T0 + timedelta(seconds=56)
    assert await _body(await server.handle(_request(path))) == lines(0, 1)
    assert await _body(await server.handle(_request(path, previous="true"))) == lines(0, 1, 2, 3, 4)


async def test_a_follow_ends_when_its_container_exits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    view = View()
    _crashing(view)
    start = trio.current_time()

    def wall() -> datetime:
        return T0 + timedelta(seconds=32 + trio.current_time() - start)

    server = KubeletServer(_settings(trustme.CA(), default_log_interval=5.0), view, wall=wall)
    reply = await server.handle(_request("/containerLogs/default/crash/app", follow="true"))
    assert isinstance(reply, Streamed)
    got = [(trio.current_time() - start, chunk) async for chunk in reply.chunks()]
    line = 'kubemock-fleet: container "app" of pod default/crash on node n1: heartbeat {}\n'
    # the second run (20-40 s): lines at 20, 25, 30, then 35 and 40; nothing after its exit
    assert [(at, chunk.decode().count("\n")) for at, chunk in got] == [(0.0, 3), (3.0, 1), (8.0, 1)]
    assert got[-1][1] == line.format(4).encode()
    assert trio.current_time() - start <= 8.0 + 1.0  # ended at the exit, within a poll


def test_pod_info_converts_each_spec_once() -> None:
    import msgspec

    from shards._plan import RUNNING_NOW

    def spec(cpu: str) -> _PodSpec:
        body = {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]}
        return msgspec.json.decode(msgspec.json.encode(body), type=_PodSpec)

    def record(name: str, of: _PodSpec) -> PodRecord:
        return PodRecord(
            key=f"default/{name}",
            uid=name,
            node="n1",
            spec=of,
            annotations={},
            creation=T0,
            plan=RUNNING_NOW,
            phase="Running",
        )

    shared, other = spec("100m"), spec("2")
    first, second = pod_info(record("a", shared)), pod_info(record("b", shared))
    assert first.containers is second.containers  # one template's pods: converted once
    assert first.containers == (ContainerInfo("app", {"cpu": "100m"}, {}),)
    assert pod_info(record("c", other)).containers == (ContainerInfo("app", {"cpu": "2"}, {}),)


def test_prometheus_label_values_are_escaped() -> None:
    from shards._kubeletapi._stats import _labels

    assert _labels(pod="web-1", namespace="default") == '{pod="web-1",namespace="default"}'
    assert _labels(pod='a"b\\c\nd') == '{pod="a\\"b\\\\c\\nd"}'


def test_pod_usage_follows_its_pods_annotations() -> None:
    """The usage model is kept per (containers, annotations) pair: a pod whose annotations
    change (a new mapping, as the shard's view hands them) gets its new figures."""
    from shards._kubeletapi._usage import ANNOTATION_USAGE_CPU, pod_usage

    containers = (ContainerInfo("app", {"cpu": "1"}),)
    fixed = PodInfo("default", "p", "u", "n1", T0, "Running", containers, (), {})
    now = T0 + timedelta(seconds=10)
    assert pod_usage(fixed, now) == [("app", 1.0, 16 * 1024 * 1024)]  # 10 % of 1 core, 10 s
    busier = PodInfo(
        "default", "p", "u", "n1", T0, "Running", containers, (), {ANNOTATION_USAGE_CPU: "500m"}
    )
    assert pod_usage(busier, now)[0][1] == 5.0
    assert pod_usage(fixed, now)[0][1] == 1.0


async def test_a_websocket_exec_says_nothing_before_a_runtime_would_have_started_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """client-go registers its channels in a goroutine beside the one reading the
    connection: a status sent at once after the upgrade was dropped ("Unknown stream id 3")
    and kubectl 1.31 exited 1 for an `exit 3`. The command starts WEBSOCKET_START after."""
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection

    from shards._kubeletapi._exec import ERROR, WEBSOCKET_START
    from shards._kubeletapi._http import Upgrade

    view = View()
    view.add("web")
    server = KubeletServer(_settings(trustme.CA()), view, wall=lambda: T0)
    query = [("command", "sh"), ("command", "-c"), ("command", "exit 3"), ("stdout", "1")]
    reply = await server.handle(_ws_request("/exec/default/web/app", "v5.channel.k8s.io", query))
    assert isinstance(reply, Upgrade), reply
    client, kubelet = trio.testing.memory_stream_pair()
    ws = Connection(ConnectionType.CLIENT)
    start = trio.current_time()
    first: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply.run, kubelet, b"")
        with trio.fail_after(5):
            while not first:
                ws.receive_data(bytes(await client.receive_some(65536)))
                for event in ws.events():
                    if isinstance(event, BytesMessage):
                        first.append((trio.current_time() - start, bytes(event.data)))
        ((at, message),) = first
        assert at >= WEBSOCKET_START
        assert message[0] == ERROR and b"NonZeroExitCode" in message
        ws.receive_data(bytes(await client.receive_some(65536)))
        closing = [e for e in ws.events() if isinstance(e, CloseConnection)]
        if closing:
            await client.send_all(ws.send(closing[0].response()))
        nursery.cancel_scope.cancel()
