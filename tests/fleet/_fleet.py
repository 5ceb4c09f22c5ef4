"""What the whole-fleet tests share: short settings, real processes, and a record of writes.

The sandbox runs in the test's own trio loop (the ``sandbox`` fixture); the
coordinator and the shards run as real ``kubemock-fleet`` processes against it.

:class:`WriteLog` wraps the sandbox application's request handler and records
every successful write with the ``fieldManager`` its client named: shards name
themselves ``kubemock-fleet-shard-<K>`` (``shards._context.FencedRequester``),
which is how the tests tell which shard drove a node at every moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trio
import yaml

from fleet.api import crd_manifests
from fleet.errors import AlreadyExists, NotFound
from fleet.kube import Client, MetaOnly, Reflector, WatchEvent
from fleet.sandbox import RunningSandbox
from fleet.wire import COORDINATOR_LEASE, FLEET_NAMESPACE, SHARD_LABEL, SHARD_LEASE_PREFIX
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
    start = trio.current_time()
    deadline = start + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return trio.current_time() - start
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await trio.sleep(interval)


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
        command = [
            sys.executable, "-m", "fleet", *args,
            "--config", str(self._config), "--kubeconfig", str(self._kubeconfig),
        ]  # fmt: skip
        self._count += 1
        fd = os.open(self.log_path(f"{name}.{self._count}"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            process: trio.Process = await self._nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
        finally:
            os.close(fd)  # the child has its own copy
        return process

    async def shard(self, shard: int) -> trio.Process:
        return await self.start(f"shard-{shard}", "shard", "--id", str(shard))

    async def coordinator(self, name: str = "coordinator") -> trio.Process:
        return await self.start(name, "coordinator")

    def logs(self) -> str:
        """Every process's log, for failure messages."""
        out = []
        for path in sorted(self._tmp.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)


async def kill9(process: trio.Process) -> None:
    process.kill()
    with trio.fail_after(5):
        await process.wait()


# --- what the apiserver saw ----------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    time: float
    method: str
    path: str
    manager: str
    status: int
    name: str
    """``metadata.name`` of the object written (from the reply: POSTs have none in the path)."""


class WriteLog:
    """Every successful write the sandbox served, in the order it finished, with its writer."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.writes: list[Written] = []
        app = sandbox.app
        inner = app._handle

        async def handle(scope: Any, receive: Any, labels: dict[str, str]) -> Any:
            reply = await inner(scope, receive, labels)
            method = scope["method"]
            status = getattr(reply, "status", 0)
            body = getattr(reply, "body", b"")
            if method in ("POST", "PUT", "PATCH", "DELETE") and 200 <= status < 300:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                self.writes.append(
                    Written(
                        time=trio.current_time(),
                        method=method,
                        path=scope["path"],
                        manager=query.get("fieldManager", ""),
                        status=status,
                        name=_name_of(body),
                    )
                )
            return reply

        app._handle = handle  # type: ignore[method-assign]

    def node_writes(self) -> dict[str, list[Written]]:
        """Writes that drive a node (its Lease, the v1.Node, its status) by node name, in order."""
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes:
            if w.path.startswith(NODE_LEASES) or w.path.startswith("/api/v1/nodes"):
                if w.name:
                    out[w.name].append(w)
        return out

    def lease_writes(self, since: float = 0.0) -> dict[str, list[Written]]:
        """Successful node Lease creates and renewals since ``since``, by node name."""
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes:
            if w.time >= since and w.path.startswith(NODE_LEASES) and w.method in ("POST", "PUT"):
                out[w.name].append(w)
        return out


def _name_of(body: bytes) -> str:
    try:
        obj = json.loads(body)
    except ValueError:
        return ""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


def shard_of(written: Written) -> str:
    assert written.manager.startswith(SHARD_MANAGER), f"a node write with no shard: {written}"
    return written.manager[len(SHARD_MANAGER) :]


@dataclass(frozen=True)
class LabelChange:
    time: float
    key: str
    old: str | None
    new: str | None


class LabelWatch:
    """A watch on every Node CR recording each change of its shard label, with the time seen."""

    def __init__(self) -> None:
        self.labels: dict[str, str | None] = {}
        self.changes: list[LabelChange] = []
        self.created: dict[str, float] = {}

    async def run(self, client: Client, *, task_status: trio.TaskStatus[None]) -> None:
        reflector = Reflector(client, cr_path(), MetaOnly)
        send, receive = trio.open_memory_channel[WatchEvent[MetaOnly]](10_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            await nursery.start(reflector.run, send)
            task_status.started()

    async def _consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[MetaOnly]]) -> None:
        async with receive:
            async for event in receive:
                meta = event.obj.metadata
                key = f"{meta.namespace}/{meta.name}"
                if event.type == "DELETED":
                    self.labels.pop(key, None)
                    continue
                label = meta.labels.get(SHARD_LABEL) or None
                old = self.labels.get(key)
                if key not in self.labels:
                    self.created.setdefault(key, trio.current_time())
                self.labels[key] = label
                if label != old:
                    self.changes.append(LabelChange(trio.current_time(), key, old, label))

    def moves_of(self, key: str) -> int:
        """Label changes from one shard to another (the first assignment not counted)."""
        return sum(1 for c in self.changes if c.key == key and c.old is not None)


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
