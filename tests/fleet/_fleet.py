"""What the whole-fleet tests share: short settings, real processes, and a record of writes.

The sandbox runs in the test's own trio loop (the ``sandbox`` fixture); the
coordinator and the shards run as real ``kubemock-fleet`` processes against it.

:class:`WriteLog` (the bench's, ``bench.WriteLog``) wraps the sandbox application's
request handler and records every successful write with the ``fieldManager`` its
client named: shards name themselves ``kubemock-fleet-shard-<K>``
(``shards._context.FencedRequester``), which is how the tests tell which shard
drove a node at every moment. :class:`LabelWatch` and :func:`shard_of` are the
bench's fault suite's too.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import trio
import yaml

import bench
from bench import LabelWatch as LabelWatch
from bench import Unsettled, log_tails, start_fleet_process, wait_until
from bench import shard_of as shard_of
from fleet.api import crd_manifests
from fleet.errors import AlreadyExists, NotFound
from fleet.kube import Client
from fleet.sandbox import RunningSandbox
from fleet.wire import COORDINATOR_LEASE, FLEET_NAMESPACE, SHARD_LEASE_PREFIX
from tests._apiserver import Apiserver

FLEET_NS = FLEET_NAMESPACE
OTHER_NS = "fleet-extra"
CR_GROUP_PATH = "/apis/mock.zhizuqiu.cn/v1alpha1"
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
FLEET_LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{FLEET_NS}/leases"
SHARD_MANAGER = SHARD_LEASE_PREFIX

# Short settings: every timing of the fleet scaled so a test takes seconds.
SHARD_LEASE_DURATION = 3.0
SHARD_RENEW_INTERVAL = 1.0
SHARD_RENEW_DEADLINE = 2.0
NODE_LEASE_DURATION = 10.0
NODE_RENEW_INTERVAL = 2.0
LEADER_LEASE_DURATION = 3.0
LEADER_RETRY_PERIOD = 0.5
MAX_MOVES_PER_SECOND = 25.0


def write_config(path: Path, *, shards: int = 1, **coordinator: Any) -> Path:
    """The YAML settings file every process of a test reads (``--config``).

    ``shards`` is the fleet's size: each shard process takes its part of the node
    address range by it, as ``run --shards N`` tells its children.
    """
    settings: dict[str, Any] = {
        "shards": shards,
        "shard": {
            "nodeLeaseDuration": f"{NODE_LEASE_DURATION:g}s",
            "nodeLeaseRenewInterval": f"{NODE_RENEW_INTERVAL:g}s",
            "metricsPort": 0,
        },
        "coordinator": {
            "shardLeaseDuration": f"{SHARD_LEASE_DURATION:g}s",
            "shardRenewInterval": f"{SHARD_RENEW_INTERVAL:g}s",
            "shardRenewDeadline": f"{SHARD_RENEW_DEADLINE:g}s",
            "leaderLeaseDuration": f"{LEADER_LEASE_DURATION:g}s",
            "leaderRenewDeadline": "2s",
            "leaderRetryPeriod": f"{LEADER_RETRY_PERIOD * 1000:g}ms",
            "maxMovesPerSecond": MAX_MOVES_PER_SECOND,
            "metricsPort": 0,
            **coordinator,
        },
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def cr_path(namespace: str | None = None, name: str | None = None) -> str:
    base = (
        f"{CR_GROUP_PATH}/namespaces/{namespace}/nodes" if namespace else f"{CR_GROUP_PATH}/nodes"
    )
    return f"{base}/{name}" if name else base


def cr_body(name: str, **node_config: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"nodeConfig": node_config},
    }


async def prepare(client: Client, namespaces: Iterable[str] = (FLEET_NS,)) -> None:
    """Install the CRDs and create the namespaces the fleet uses (the session's real control
    plane has the CRDs already, and may have the namespaces from another test), with no
    fleet Lease left from another test."""
    for crd in crd_manifests():
        with contextlib.suppress(AlreadyExists):
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for ns in namespaces:
        with contextlib.suppress(AlreadyExists):
            await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    # The fleet's Leases an earlier test left on the shared real apiserver (a shard killed,
    # or stopped behind a fault proxy already gone, keeps its Lease held): a coordinator
    # would count that shard alive for a lease duration and label CRs to it.
    for lease in (await client.list(FLEET_LEASES)).items:
        name = str(lease["metadata"]["name"])
        if name.startswith(SHARD_LEASE_PREFIX) or name == COORDINATOR_LEASE:
            with contextlib.suppress(NotFound):
                await client.delete(f"{FLEET_LEASES}/{name}")


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], within: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``check`` until true; return the seconds it took. Fails with ``what`` after ``within``."""
    try:
        return await wait_until(check, within, what, interval)
    except Unsettled as exc:
        raise AssertionError(str(exc)) from None


# --- processes -----------------------------------------------------------------------------


class Processes:
    """``kubemock-fleet`` commands as child processes of the test, each logging to a file.

    They run in ``nursery`` (the test's): cancelled at the end, each gets SIGTERM
    and, after trio's grace, SIGKILL.
    """

    def __init__(
        self, nursery: trio.Nursery, sandbox: RunningSandbox | Apiserver, tmp: Path, config: Path
    ):
        self._nursery = nursery
        self._kubeconfig = sandbox.kubeconfig
        self._tmp = tmp
        self._config = config
        self._count = 0

    def log_path(self, name: str) -> Path:
        return self._tmp / f"{name}.log"

    async def start(self, name: str, *args: str) -> trio.Process:
        self._count += 1
        return await start_fleet_process(
            self._nursery,
            args,
            config=self._config,
            kubeconfig=self._kubeconfig,
            log=self.log_path(f"{name}.{self._count}"),
        )

    async def shard(self, shard: int) -> trio.Process:
        return await self.start(f"shard-{shard}", "shard", "--id", str(shard))

    async def coordinator(self, name: str = "coordinator") -> trio.Process:
        return await self.start(name, "coordinator")

    def logs(self) -> str:
        """Every process's log, for failure messages."""
        return log_tails(self._tmp)


async def kill9(process: trio.Process) -> None:
    process.kill()
    with trio.fail_after(5):
        await process.wait()


# --- what the apiserver saw ----------------------------------------------------------------


class WriteLog(bench.WriteLog):
    """The bench's write log, put in front of ``sandbox``'s handler."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        super().__init__()
        sandbox.app.wrap_handler(self.wrap)


def assert_one_driver_at_a_time(writes: WriteLog, labels: LabelWatch) -> int:
    """No node driven by two shards at any moment; returns how many writes were checked.

    For each node, the shards that wrote its Lease, Node or Node status, in the
    order the apiserver served them, form runs; a new run may start only where
    the coordinator moved the CR, so there are never more runs than moves + 1:
    shard A writing again after B took over (A, B, A) is caught as an extra run.
    """
    checked = 0
    by_node = writes.node_writes()
    moves: dict[str, int] = defaultdict(int)
    for key in labels.labels:
        moves[key.rpartition("/")[2]] += labels.moves_of(key)
    for node, seq in by_node.items():
        shards = [shard_of(w) for w in seq]
        checked += len(shards)
        runs = [shards[0]] + [b for a, b in pairwise(shards) if a != b]
        assert len(runs) <= moves[node] + 1, (
            f"node {node} driven by {runs} with only {moves[node]} moves: "
            + ", ".join(f"{w.time:.3f} {w.method} {w.path} by {w.manager}" for w in seq[-20:])
        )
    return checked


async def coordinator_holder(client: Client) -> str | None:
    response = await client.request("GET", f"{FLEET_LEASES}/{COORDINATOR_LEASE}")
    if response.status == 404:
        return None
    holder = (await client.get(f"{FLEET_LEASES}/{COORDINATOR_LEASE}"))["spec"].get("holderIdentity")
    return str(holder) if holder else None


async def shard_leases(client: Client) -> set[str]:
    leases = await client.list(FLEET_LEASES)
    prefix = SHARD_LEASE_PREFIX
    return {
        item["metadata"]["name"][len(prefix) :]
        for item in leases.items
        if item["metadata"]["name"].startswith(prefix)
    }


def ready(node: Mapping[str, Any] | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
