"""Key pairs from PEM bytes and the kubelet client context, end to end over real TLS."""

from __future__ import annotations

import os
import ssl
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from fleet.kube import kubelet_client_context, load_pem_cert_chain

GREETING = b"kubelet"


@pytest.fixture
def spy_mkdtemp(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args: Any, **kwargs: Any) -> str:
        path: str = real_mkdtemp(*args, **kwargs)
        made.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    return made


def test_a_key_pair_is_loaded_through_a_private_temp_dir_removed_after(
    spy_mkdtemp: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    leaf = trustme.CA().issue_cert("kube-apiserver-kubelet-client")
    modes: list[int] = []
    real_load = ssl.SSLContext.load_cert_chain

    def load(self: ssl.SSLContext, certfile: str, keyfile: str, **kw: Any) -> None:
        modes.extend(stat.S_IMODE(os.stat(p).st_mode) for p in (certfile, keyfile))
        modes.append(stat.S_IMODE(os.stat(os.path.dirname(keyfile)).st_mode))
        real_load(self, certfile, keyfile, **kw)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", load)
    context = ssl.create_default_context()
    load_pem_cert_chain(context, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    assert modes == [0o600, 0o600, 0o700]
    assert len(spy_mkdtemp) == 1 and not spy_mkdtemp[0].exists()


def test_a_key_that_does_not_load_leaves_no_file(spy_mkdtemp: list[Path]) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("a").cert_chain_pems[0].bytes()
    other_key = ca.issue_cert("b").private_key_pem.bytes()
    with pytest.raises(ssl.SSLError):
        load_pem_cert_chain(ssl.create_default_context(), cert, other_key)
    assert len(spy_mkdtemp) == 1 and not spy_mkdtemp[0].exists()


async def test_the_kubelet_client_presents_its_certificate_and_trusts_any_kubelet() -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert(
        "kube-apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client"
    )
    # The kubelet's serving certificate is from a CA the client has never seen.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("kubelet.invalid").configure_cert(server)
    server.verify_mode = ssl.CERT_REQUIRED
    client_ca.configure_trust(server)
    peers: list[Any] = []

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.do_handshake()
        peers.append(stream.getpeercert())
        await stream.send_all(GREETING)
        await stream.aclose()

    context = kubelet_client_context(
        client.cert_chain_pems[0].bytes(), client.private_key_pem.bytes()
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_ssl_over_tcp, handler, 0, server)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
        await stream.do_handshake()
        assert await stream.receive_some(len(GREETING)) == GREETING
        await stream.aclose()
        nursery.cancel_scope.cancel()
    subject = dict(item[0] for item in peers[0]["subject"])
    assert subject["commonName"] == "kube-apiserver-kubelet-client"
