"""The fault proxy in front of either apiserver: it passes TLS through, cuts, pauses, refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bench import FaultProxy
from fleet.errors import TransportError
from fleet.kube import Client, load_config
from tests._apiserver import Apiserver, unique


async def _get_retrying(client: Client, path: str) -> None:
    """A GET, once more if the first found its pooled connection cut."""
    try:
        await client.get(path)
    except TransportError:
        await client.get(path)


async def test_proxy_cuts_pauses_and_refuses(
    apiserver: Apiserver, nursery: trio.Nursery, tmp_path: Path
) -> None:
    proxy = FaultProxy.before(apiserver.url)
    await nursery.start(proxy.run)
    kubeconfig = proxy.kubeconfig(apiserver.kubeconfig, tmp_path / "proxied.kubeconfig")
    namespace = unique("faultproxy")
    path = f"/api/v1/namespaces/{namespace}"
    async with Client(load_config(kubeconfig)) as client:
        await client.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        assert proxy.connections >= 1  # TLS through the proxy, the server's certificate kept

        # pause: a request is held, not failed, and answered once the proxy resumes
        proxy.pause()
        answered = trio.Event()

        async def get() -> None:
            await client.get(path)
            answered.set()

        nursery.start_soon(get)
        await trio.sleep(1.0)
        assert not answered.is_set()
        proxy.resume()
        with trio.fail_after(30):
            await answered.wait()

        # cut: every open connection closed; the client connects again
        before = proxy.connections
        assert proxy.cut() >= 1
        await _get_retrying(client, path)
        assert proxy.connections > before

        # down: nothing gets through until up
        assert proxy.down() >= 0
        with pytest.raises(TransportError):
            await _get_retrying(client, path)
        proxy.up()
        await _get_retrying(client, path)
        await client.delete(path)
