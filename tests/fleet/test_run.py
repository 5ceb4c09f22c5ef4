"""``kubemock-fleet run --shards 2`` against the sandbox and the real control plane: a whole
local fleet in one command.

It starts the coordinator and two shard children, prefixes every child line
``[shard K]``, turns a Node CR into a Ready node, and on SIGTERM stops
everything (no child left behind) and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio
import yaml

from fleet._settings import FleetSettings, ShardSettings
from fleet.cli import kubelet_api_env, kubelet_api_wanted
from fleet.kube import Client, FakeApiserver, load_config
from fleet.wire import SHARD_LABEL
from tests._apiserver import Apiserver
from tests.fleet._fleet import FLEET_NS, cr_body, cr_path, prepare, ready, wait_for, write_config


def _children_of(config: Path) -> list[int]:
    """Pids of live processes whose command line names ``config`` (the run's shards)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if str(config).encode() in cmdline and b"\0shard\0" in cmdline and state != b"Z":
            pids.append(int(entry))
    return pids


def _fleet_size(pid: int) -> bytes | None:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        for var in fh.read().split(b"\0"):
            if var.startswith(b"KUBEMOCK_FLEET_SHARDS="):
                return var.partition(b"=")[2]
    return None


def _two_free_ports() -> int:
    """A port p with p + 1 free too: the kubelet API ports of shards 0 and 1."""
    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


async def test_run_two_shards(nursery: trio.Nursery, apiserver: Apiserver, tmp_path: Path) -> None:
    config = write_config(tmp_path / "fleet.yaml")
    kubelet_port = _two_free_ports()
    settings = yaml.safe_load(config.read_text())
    settings["shard"]["kubeletPort"] = kubelet_port
    config.write_text(yaml.safe_dump(settings))
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    async with Client(load_config(apiserver.kubeconfig)) as client:
        await prepare(client)
        command = [
            sys.executable, "-m", "fleet", "run", "--shards", "2",
            "--config", str(config), "--kubeconfig", str(apiserver.kubeconfig),
        ]  # fmt: skip
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o600)
        err = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    check=False,
                )
            )
        finally:
            os.close(out)
            os.close(err)

        def output() -> str:
            return out_path.read_text(errors="replace") + err_path.read_text(errors="replace")

        try:
            await client.create(cr_path(FLEET_NS), cr_body("run-node"))

            async def node_ready() -> bool:
                response = await client.request("GET", "/api/v1/nodes/run-node")
                return response.status == 200 and ready(await client.get("/api/v1/nodes/run-node"))

            await wait_for(node_ready, 15, "the CR's node Ready", interval=0.1)

            async def cr_reported() -> bool:
                # The CR's status is the shard's last write for a new node, after the Node's.
                got = await client.get(cr_path(FLEET_NS, "run-node"))
                return len((got.get("status") or {}).get("conditions") or []) == 2

            await wait_for(cr_reported, 10, "the CR's status", interval=0.1)
            cr = await client.get(cr_path(FLEET_NS, "run-node"))
            shard = cr["metadata"]["labels"][SHARD_LABEL]
            assert shard in ("0", "1")
            # The kubelet API: on by default where the apiserver is local and publishes its
            # client CA (the real one), shard K on kubeletPort + K, reached through it.
            node = await client.get("/api/v1/nodes/run-node")
            internal = [a for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
            port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            if apiserver.is_real:
                # the node's own address: 127.(K+1).x.y, so unprefixed node paths are its own
                assert internal[0]["address"].startswith(f"127.{int(shard) + 1}.")
                assert port == kubelet_port + int(shard)
                health = await client.request("GET", "/api/v1/nodes/run-node/proxy/healthz")
                assert (health.status, health.content) == (200, b"ok"), health
                pods = await client.request("GET", "/api/v1/nodes/run-node/proxy/pods")
                assert pods.status == 200, pods
            else:  # the sandbox publishes no client CA
                assert port != kubelet_port + int(shard)
            assert {c["type"]: c["status"] for c in cr["status"]["conditions"]} == {
                "Registered": "True",
                "Ready": "True",
            }
            await wait_for(
                lambda: all(f"[shard {k}] " in output() for k in (0, 1)),
                5,
                "a line from each shard",
            )
            children = _children_of(config)
            assert len(children) == 2, output()
            # Each shard knows the fleet's size: its node address range hangs on it.
            assert all(_fleet_size(pid) == b"2" for pid in children), output()

            process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                code = await process.wait()
            assert code == 0, output()
            assert _children_of(config) == []
        except BaseException:
            print(output())
            raise
    lines = output().splitlines()
    shard_lines = [line for line in lines if line.startswith("[shard ")]
    assert {line[: len("[shard 0]")] for line in shard_lines} == {"[shard 0]", "[shard 1]"}
    # The coordinator's own lines are unprefixed; everything else comes from a shard.
    others = [line for line in lines if not line.startswith("[shard ")]
    assert all(" fleet." in line or line.startswith("[run] ") for line in others), others


async def test_kubelet_api_stays_off_for_an_apiserver_elsewhere() -> None:
    # A remote apiserver could not reach loopback: nothing is even asked.
    fake = FakeApiserver()
    assert await kubelet_api_wanted(fake, "https://10.0.0.1:6443") is None
    assert fake.requests == []
    assert await kubelet_api_wanted(fake, "https://127.0.0.1:6443") is None  # no ConfigMap
    assert kubelet_api_env(FleetSettings(), False) == {"KUBEMOCK_FLEET_SHARD__KUBELET_API": "false"}
    assert kubelet_api_env(FleetSettings(), True) == {
        "KUBEMOCK_FLEET_SHARD__KUBELET_API": "true",
        "KUBEMOCK_FLEET_SHARD__KUBELET_ADDRESS": "127.0.0.1",
        "KUBEMOCK_FLEET_SHARD__KUBELET_ADDRESS_PER_NODE": "true",
    }
    chosen = FleetSettings(shard=ShardSettings(kubelet_address="192.0.2.7"))
    assert kubelet_api_env(chosen, True) == {"KUBEMOCK_FLEET_SHARD__KUBELET_API": "true"}
