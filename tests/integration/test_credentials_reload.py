"""An apiserver restart with a new CA and token: clients re-read the kubeconfig (issue 16 item 2).

The sandbox without ``--data`` makes a new CA and token on every start and rewrites
its kubeconfig. A running fleet holds the old ones; as client-go re-reads rotated
tokens and certificates, the fleet's clients re-read the kubeconfig when TLS or auth
starts failing, and carry on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from fleet.errors import ConnectError
from fleet.kube import Client, HotTransport, load_config
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox

NAMESPACE = "/api/v1/namespaces/default"


async def test_client_and_hot_transport_follow_a_new_ca_and_token(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    settings = SandboxSettings(port=0, kubeconfig_out=kubeconfig)
    async with trio.open_nursery() as nursery:
        first: RunningSandbox = await nursery.start(serve_sandbox, settings)
        port = int(first.url.rsplit(":", 1)[1])
        config = load_config(kubeconfig)
        async with Client(config) as client, HotTransport(config) as hot:
            assert (await client.get(NAMESPACE))["metadata"]["name"] == "default"
            assert (await hot.request("GET", NAMESPACE)).status == 200
            nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        second: RunningSandbox = await nursery.start(
            serve_sandbox, SandboxSettings(port=port, kubeconfig_out=kubeconfig)
        )
        assert second.ca_pem != first.ca_pem and second.token != first.token
        async with Client(config) as client, HotTransport(config) as hot:
            # Fresh connections: the old CA fails verification, the kubeconfig is re-read.
            assert (await client.get(NAMESPACE))["metadata"]["name"] == "default"
            assert (await hot.request("GET", NAMESPACE)).status == 200
            async with client.stream("GET", NAMESPACE) as answer:
                assert answer.status == 200
        nursery.cancel_scope.cancel()


async def test_a_new_token_alone_is_picked_up_on_401(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    data = tmp_path / "state.json"  # same CA on both starts; the token is forced to change
    settings = SandboxSettings(port=0, kubeconfig_out=kubeconfig, data_file=data, token="first")
    async with trio.open_nursery() as nursery:
        first: RunningSandbox = await nursery.start(serve_sandbox, settings)
        port = int(first.url.rsplit(":", 1)[1])
        config = load_config(kubeconfig)
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            serve_sandbox,
            SandboxSettings(port=port, kubeconfig_out=kubeconfig, data_file=data, token="second"),
        )
        async with Client(config) as client, HotTransport(config) as hot:
            assert (await client.request("GET", NAMESPACE)).status == 200
            assert (await hot.request("GET", NAMESPACE)).status == 200
        nursery.cancel_scope.cancel()


async def test_without_a_kubeconfig_to_re_read_tls_failure_stays_an_error(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    async with trio.open_nursery() as nursery:
        first: RunningSandbox = await nursery.start(
            serve_sandbox, SandboxSettings(port=0, kubeconfig_out=kubeconfig)
        )
        port = int(first.url.rsplit(":", 1)[1])
        config = load_config(kubeconfig)
        nursery.cancel_scope.cancel()
    stale = tmp_path / "stale"
    stale.write_bytes(kubeconfig.read_bytes())
    config = load_config(stale)  # a copy nobody rewrites: re-reading it changes nothing
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_sandbox, SandboxSettings(port=port, kubeconfig_out=kubeconfig))
        async with Client(config) as client:
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(NAMESPACE)
        nursery.cancel_scope.cancel()
