"""``Http2Connection``: many watches and requests as streams of ONE HTTP/2 connection.

Against the sandbox (HTTP/2 by hypercorn, ALPN h2 over TLS) and the real
kube-apiserver: what a kubelet's client does. Real delays of a second or two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import msgspec
import trio

from fleet.errors import ConnectError, ProtocolError
from fleet.kube import Client, ClusterConfig, Http2Connection, Http2Settings, load_config
from fleet.machinery import JSON
from tests._apiserver import Apiserver, unique

WATCHES = 12


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    with trio.fail_after(within):
        while True:
            if check():
                return
            await trio.sleep(0.05)


async def _events(
    conn: Http2Connection, path: str, params: dict[str, str], into: list[Any]
) -> None:
    async with conn.stream("GET", path, params=params) as response:
        assert response.status == 200
        buf = b""
        async for piece in response.aiter_bytes():
            buf += piece
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                into.append(msgspec.json.decode(line))


async def test_watches_and_requests_share_one_connection(
    nursery: trio.Nursery, apiserver: Apiserver
) -> None:
    config = load_config(apiserver.kubeconfig)
    namespace = unique("h2")
    async with Client(config) as client:
        await client.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    conn = Http2Connection(config)
    await nursery.start(conn.run)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    listed = await conn.request("GET", path)
    assert listed.status == 200
    rv = msgspec.json.decode(listed.content)["metadata"]["resourceVersion"]
    seen: list[list[Any]] = [[] for _ in range(WATCHES)]
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "30"}
    async with trio.open_nursery() as watches:
        for i in range(WATCHES):
            watches.start_soon(_events, conn, path, params, seen[i])
        await _until(lambda: conn.streams >= WATCHES)
        body = {"metadata": {"name": "cm"}, "data": {"k": "v"}}
        created = await conn.request(
            "POST", path, body=msgspec.json.encode(body), content_type=JSON
        )
        assert created.status == 201
        await _until(lambda: all(any(e["type"] == "ADDED" for e in s) for s in seen))
        watches.cancel_scope.cancel()
    assert conn.opened == 1  # every watch and request on one connection
    await _until(lambda: conn.streams == 0)  # the cancelled watches reset and forgotten
    again = await conn.request("GET", f"{path}/cm")
    assert again.status == 200


async def test_a_server_without_http2_is_a_connect_error(nursery: trio.Nursery) -> None:
    # A listener that closes every connection: no HTTP/2, no connection.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def refuse(stream: trio.SocketStream) -> None:
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, refuse, listeners)
    port = listeners[0].socket.getsockname()[1]
    conn = Http2Connection(
        ClusterConfig(server=f"http://127.0.0.1:{port}"),
        Http2Settings(connect_timeout=0.5, request_timeout=0.5),
    )
    await nursery.start(conn.run)
    try:
        await conn.request("GET", "/version")
    except (ConnectError, ProtocolError):
        pass
    else:
        raise AssertionError("a request over a refused connection succeeded")


async def _h2_server(stream: trio.SocketStream, goaway_after: int, served: list[int]) -> None:
    """A minimal HTTP/2 server: answers each request 200 with a line of JSON and keeps the
    stream open (a watch); after ``goaway_after`` requests on this connection, GOAWAY."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    await stream.send_all(conn.data_to_send())
    requests = 0
    while data := await stream.receive_some(65536):
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                requests += 1
                served.append(event.stream_id)
                conn.send_headers(event.stream_id, [(":status", "200")])
                conn.send_data(event.stream_id, b'{"type":"ADDED"}\n')
                if requests >= goaway_after:
                    conn.close_connection(last_stream_id=event.stream_id)
        await stream.send_all(conn.data_to_send())


async def test_goaway_ends_the_streams_and_the_next_connection_takes_new_ones(
    nursery: trio.Nursery,
) -> None:
    served: list[int] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, lambda s: _h2_server(s, 2, served), listeners)
    port = listeners[0].socket.getsockname()[1]
    conn = Http2Connection(ClusterConfig(server=f"http://127.0.0.1:{port}"))
    await nursery.start(conn.run)
    first: list[Any] = []
    ended: list[Exception] = []

    async def watch(path: str) -> None:
        try:
            await _events(conn, path, {}, first)
        except ProtocolError as exc:
            ended.append(exc)

    async with trio.open_nursery() as watches:
        watches.start_soon(watch, "/w")
        await _until(lambda: len(first) == 1)
        watches.start_soon(watch, "/w2")  # the second request: then GOAWAY
    assert len(ended) == 2 and all("GOAWAY" in str(e) for e in ended)
    assert first == [{"type": "ADDED"}] * 2
    await _until(lambda: conn.opened == 2)  # connected again
    again: list[Any] = []
    async with trio.open_nursery() as watches:
        watches.start_soon(_events, conn, "/w", {}, again)
        await _until(lambda: bool(again))
        watches.cancel_scope.cancel()
    assert served == [1, 3, 1]  # a fresh connection numbers its streams from 1 again


async def test_a_request_waits_for_its_connections_turn_to_connect(
    nursery: trio.Nursery,
) -> None:
    """Connections made a few at a time (a shard's 10,000 nodes, 16 at once): a request
    waits for its connection's turn however long the queue, then connect_timeout."""
    served: list[int] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, lambda s: _h2_server(s, 100, served), listeners)
    port = listeners[0].socket.getsockname()[1]
    connecting = trio.CapacityLimiter(1)
    conn = Http2Connection(
        ClusterConfig(server=f"http://127.0.0.1:{port}"),
        Http2Settings(connect_timeout=0.5, request_timeout=0.5),
        connecting=connecting,
    )
    turn = object()
    await connecting.acquire_on_behalf_of(turn)  # the turns ahead of it take 1.5 s
    await nursery.start(conn.run)
    got: list[Any] = []

    async def release() -> None:
        await trio.sleep(1.5)
        connecting.release_on_behalf_of(turn)

    nursery.start_soon(release)
    start = trio.current_time()
    with trio.fail_after(5):
        async with conn.stream("GET", "/w") as response:
            assert response.status == 200
            got.append(await response.__anext__())
    assert got == [b'{"type":"ADDED"}\n']
    assert trio.current_time() - start >= 1.5  # three connect_timeouts in the queue
    assert conn.opened == 1 and served == [1]
