"""An apiserver restart with a new CA and token: clients re-read the kubeconfig.

The sandbox without ``--data`` makes a new CA and token on every start and rewrites
its kubeconfig. A running fleet holds the old ones; as client-go re-reads rotated
tokens and certificates, the fleet's clients re-read the kubeconfig when TLS or auth
starts failing, and carry on.
"""

from __future__ import annotations

import json
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


async def test_a_running_fleet_survives_an_apiserver_restart_with_a_new_identity(
    tmp_path: Path,
) -> None:
    """The issue's story: the apiserver restarts with a new CA and token; the shard's node
    keeps renewing its Lease (it re-read the kubeconfig) instead of going NotReady."""
    import shutil
    import socket
    from datetime import datetime

    from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
    from fleet.api import crd_manifests
    from fleet.cli import run_coordinator, run_shard
    from fleet.sandbox import identity_dir

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    kubeconfig, data = tmp_path / "kubeconfig", tmp_path / "state.json"
    sandbox_settings = SandboxSettings(port=port, kubeconfig_out=kubeconfig, data_file=data)
    fleet = FleetSettings(
        kubeconfig=str(kubeconfig),
        shard=ShardSettings(
            metrics_port=0, node_lease_renew_interval=1.0, node_lease_duration=10.0
        ),
        coordinator=CoordinatorSettings(metrics_port=0),
    )
    lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/survivor"

    async def renewed_after(client: Client, when: datetime) -> None:
        with trio.fail_after(30):
            while True:
                answer = await client.request("GET", lease)
                if answer.status == 200:
                    renew = json.loads(answer.content)["spec"].get("renewTime")
                    if renew and datetime.fromisoformat(renew.replace("Z", "+00:00")) > when:
                        return
                await trio.sleep(0.2)

    async with trio.open_nursery() as outer:
        first_scope = trio.CancelScope()

        async def first_sandbox(task_status: trio.TaskStatus[RunningSandbox]) -> None:
            with first_scope:
                await serve_sandbox(sandbox_settings, task_status=task_status)

        await outer.start(first_sandbox)
        async with Client(load_config(kubeconfig)) as client:
            for crd in crd_manifests():
                await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            await client.create("/api/v1/namespaces", {"metadata": {"name": fleet.namespace}})
            outer.start_soon(run_shard, fleet, 0)
            outer.start_soon(run_coordinator, fleet)
            cr = {
                "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
                "kind": "Node",
                "metadata": {"name": "survivor", "namespace": "default"},
                "spec": {},
            }
            await client.create("/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes", cr)
            await renewed_after(client, datetime.fromtimestamp(0).astimezone())
        first_scope.cancel()  # the apiserver stops (state saved) ...
        await trio.sleep(0.2)
        shutil.rmtree(identity_dir(data))  # ... and comes back with a new CA and token
        restarted = datetime.now().astimezone()
        second: RunningSandbox = await outer.start(serve_sandbox, sandbox_settings)
        assert second.kubeconfig == kubeconfig
        async with Client(load_config(kubeconfig)) as client:
            await renewed_after(client, restarted)
        outer.cancel_scope.cancel()
