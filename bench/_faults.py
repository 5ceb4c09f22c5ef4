"""The fault suite: a fleet behind a fault proxy, and the faults injected into it one by one.

Used by the ``faults`` bench scenario (``bench._runner``) at large sizes and by
``tests/fleet/test_faults.py`` at 30 nodes; the counting is ``bench._faultcount``.

- :class:`FaultFleet`: a :class:`~bench._faultproxy.FaultProxy` in front of the
  apiserver and the fleet's processes behind it, each a child process reaching
  the apiserver through the proxy: ``shards`` shards (``kubemock-fleet shard
  --id K``) and ``coordinators`` coordinators (one leads), logging to files;
  :meth:`FaultFleet.kill9` and :meth:`FaultFleet.start_shard` for the faults
  that kill.
- :class:`Storm`: on the sandbox (``SandboxApp.wrap_handler``), every request
  (or every watch) answered with a given error while it is on: 429 and 410
  storms are answers inside the TLS stream, not the proxy's to forge.
- :func:`run_faults`: the faults in order, each followed by a settle wait and
  its counts (:meth:`~bench._faultcount.FaultCounter.case`):

  ========================  ===================================================
  ``watch-cut``             every connection cut, three times a second apart
  ``pause``                 no byte forwarded for ``outage`` s, new connections
                            held (what the clients of an apiserver under SIGSTOP see)
  ``restart``               connections cut and refused for ``outage`` s (an
                            apiserver restarting, its state kept)
  ``429-storm``             (sandbox) every request answered 429, Retry-After 1
  ``410-storm``             (sandbox) watches cut, then every watch answered 410
  ``malformed``             ``malformed`` Node CRs with cpu 1e400 (past int64) and
                            as many pods with a bad lifecycle annotation, at once;
                            each refused as it should be, then deleted
  ``shard-kill``            ``kill -9`` of the last shard; its CRs move; it
                            comes back and takes its share again
  ``coordinator-failover``  ``kill -9`` of the leading coordinator; three new
                            CRs still get their shard from the other
  ========================  ===================================================
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trio

from bench._faultcount import FaultCounter, Handler, Unsettled, shard_of, wait_until
from bench._faultproxy import FaultProxy
from bench._report import FaultResult
from fleet.errors import FleetError, NotFound
from fleet.kube import Client
from fleet.wire import COORDINATOR_LEASE, FLEET_NAMESPACE

__all__ = ["FaultFleet", "FaultSuite", "Storm", "log_tails", "run_faults", "start_fleet_process"]

LEADER_LEASE = (
    f"/apis/coordination.k8s.io/v1/namespaces/{FLEET_NAMESPACE}/leases/{COORDINATOR_LEASE}"
)
STOP_GRACE = 15.0
"""Seconds the fleet's processes get to exit on SIGTERM (a shard releases its Lease)."""
KILL_WAIT = 5.0
"""Seconds a ``kill -9`` may take to be reaped."""
CUTS = 3
"""Times ``watch-cut`` cuts every connection, :data:`CUT_INTERVAL` apart."""
CUT_INTERVAL = 1.0
FRESH_CRS = 3
"""New Node CRs created after a coordinator failover (the new leader must label them)."""
MALFORMED_CONCURRENCY = 16
"""Creates and deletes in flight in the ``malformed`` fault."""
STORM_RESOURCE = "(storm)"
"""The ``resource`` label of requests a :class:`Storm` answered (they never reach routing)."""
LOG_TAIL = 4000
"""Characters of each process's log that :meth:`FaultFleet.logs` gives."""


class FaultFleet:
    """The fleet's processes behind a fault proxy; ``await nursery.start(fleet.run)``.

    ``kubeconfig`` reaches the apiserver directly; the processes get a copy naming the
    proxy. ``config`` is the fleet's settings file (``--config``), its ``shards`` the
    fleet's size. Logs go to ``workdir``. :meth:`stop` ends the processes (SIGTERM).
    """

    def __init__(
        self,
        kubeconfig: Path,
        server: str,
        config: Path,
        workdir: Path,
        *,
        shards: int = 2,
        coordinators: int = 2,
    ) -> None:
        self.proxy = FaultProxy.before(server)
        self._kubeconfig = kubeconfig
        self._config = config
        self.workdir = workdir
        self.shard_count = shards
        self.coordinator_count = coordinators
        self.shards: dict[int, trio.Process] = {}
        self.coordinators: list[trio.Process] = []
        self.killed: set[int] = set()
        """Pids a fault killed (not crashes)."""
        self.shard_killed: dict[str, float] = {}
        """Shard id -> when its process was last killed (``FaultCounter(killed=...)``: what
        the apiserver serves of it just after is what it sent before)."""
        self.proxied = Path()
        """The kubeconfig naming the proxy: in a directory of its own, removed at the end
        (it holds the apiserver's credentials; the logs in ``workdir`` may be kept)."""
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self.stopped = trio.Event()
        """Set once every process has exited after :meth:`stop`."""
        self._count = 0

    async def run(self, *, task_status: trio.TaskStatus[FaultFleet]) -> None:
        secrets = Path(tempfile.mkdtemp(prefix="kubemock-fleet-faults-"))
        self.proxied = secrets / "proxied.kubeconfig"
        try:
            await self._run(task_status)
        finally:
            shutil.rmtree(secrets, ignore_errors=True)
            self.stopped.set()

    async def _run(self, task_status: trio.TaskStatus[FaultFleet]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.proxy.run)
            self.proxy.kubeconfig(self._kubeconfig, self.proxied)
            for k in range(self.shard_count):
                await self.start_shard(k)
            for i in range(self.coordinator_count):
                await self.start_coordinator(f"coordinator-{chr(ord('a') + i)}")
            task_status.started(self)
            await self._stop.wait()
            running = [p for p in self.processes() if p.returncode is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE):
                for process in running:
                    await process.wait()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        self._stop.set()

    def processes(self) -> list[trio.Process]:
        return [*self.shards.values(), *self.coordinators]

    def exited(self) -> int:
        """Fleet processes that exited, those a fault killed excepted: crashes."""
        return sum(
            1 for p in self.processes() if p.returncode is not None and p.pid not in self.killed
        )

    async def _start(self, name: str, *args: str) -> trio.Process:
        assert self._nursery is not None, "start the fleet first (nursery.start(fleet.run))"
        self._count += 1
        log = self.workdir / f"{name}.{self._count}.log"
        return await start_fleet_process(
            self._nursery, args, config=self._config, kubeconfig=self.proxied, log=log
        )

    async def start_shard(self, k: int) -> trio.Process:
        self.shards[k] = await self._start(f"shard-{k}", "shard", "--id", str(k))
        return self.shards[k]

    async def start_coordinator(self, name: str) -> trio.Process:
        process = await self._start(name, "coordinator")
        self.coordinators.append(process)
        return process

    async def kill9(self, process: trio.Process) -> None:
        """``kill -9`` (a fault: not counted as a crash)."""
        self.killed.add(process.pid)
        process.kill()
        for k, shard in self.shards.items():
            if shard is process:
                self.shard_killed[str(k)] = trio.current_time()
        with trio.fail_after(KILL_WAIT):
            await process.wait()

    def logs(self) -> str:
        """The tail of every process's log, for a failure message."""
        return log_tails(self.workdir)


async def start_fleet_process(
    nursery: trio.Nursery, args: Sequence[str], *, config: Path, kubeconfig: Path, log: Path
) -> trio.Process:
    """``kubemock-fleet ARGS --config CONFIG --kubeconfig KUBECONFIG`` as a child process in
    ``nursery``, its output into ``log``. Cancelled, it gets SIGTERM and, after trio's
    grace, SIGKILL."""
    command = [
        sys.executable, "-m", "fleet", *args,
        "--config", str(config), "--kubeconfig", str(kubeconfig),
    ]  # fmt: skip
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        process: trio.Process = await nursery.start(
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


def log_tails(directory: Path) -> str:
    """The tail of every ``*.log`` in ``directory``, for a failure message."""
    out = []
    for path in sorted(directory.glob("*.log")):
        out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-LOG_TAIL:]}")
    return "\n".join(out)


class Storm:
    """While on, the sandbox answers matching requests with ``answer`` instead of serving them.

    ``sandbox.app.wrap_handler(storm.wrap)`` puts it in; ``too_many`` and ``gone`` are
    the sandbox's own 429 and 410 (``fleet.sandbox.too_many_requests``, ``gone``).
    """

    def __init__(self, too_many: Exception, gone: Exception) -> None:
        self.too_many = too_many
        self.gone = gone
        self.answer: Exception | None = None
        self.watches_only = False
        self.answered = 0

    def wrap(self, inner: Handler) -> Handler:
        async def handle(scope: Any, receive: Any, labels: dict[str, str]) -> Any:
            answer = self.answer
            if answer is not None and scope["path"].startswith(("/api/", "/apis/")):
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                if not self.watches_only or query.get("watch") in ("1", "true"):
                    self.answered += 1
                    # Answered before routing: one metrics row for the storm, not one per path.
                    labels["resource"], labels["subresource"] = STORM_RESOURCE, ""
                    raise answer
            return await inner(scope, receive, labels)

        return handle


@dataclass
class FaultSuite:
    """What the faults act on, and their sizes.

    ``cr_body(name, **node_config)`` and ``pod_body(name, node, **annotations)`` make
    the objects the ``malformed`` and ``coordinator-failover`` faults create (the
    bench labels them with its run); new CRs are named ``fresh_name(i)``.
    """

    client: Client
    fleet: FaultFleet
    counter: FaultCounter
    storm: Storm | None
    outage: float
    malformed: int
    cr_body: Callable[..., dict[str, Any]]
    pod_body: Callable[..., dict[str, Any]]
    fresh_name: Callable[[int], str]


Fault = tuple[str, Callable[[FaultSuite], str], Callable[[FaultSuite], Awaitable[str]]]


async def _cuts(s: FaultSuite) -> str:
    cut = 0
    for _ in range(CUTS):
        cut += s.fleet.proxy.cut()
        await trio.sleep(CUT_INTERVAL)
    return f"{cut} connections cut"


async def _pause(s: FaultSuite) -> str:
    proxy = s.fleet.proxy
    before = proxy.connections
    proxy.pause()
    await trio.sleep(s.outage)
    proxy.resume()
    return f"{proxy.connections - before} connections opened and held meanwhile"


async def _restart(s: FaultSuite) -> str:
    proxy = s.fleet.proxy
    before = proxy.connections
    cut = proxy.down()
    await trio.sleep(s.outage)
    proxy.up()
    return f"{cut} connections cut, {proxy.connections - before} refused"


async def _too_many(s: FaultSuite) -> str:
    assert s.storm is not None
    before = s.storm.answered
    s.storm.answer = s.storm.too_many
    await trio.sleep(s.outage)
    s.storm.answer = None
    return f"{s.storm.answered - before} requests answered 429"


async def _gone(s: FaultSuite) -> str:
    assert s.storm is not None
    before = s.storm.answered
    s.storm.answer, s.storm.watches_only = s.storm.gone, True
    cut = s.fleet.proxy.cut()  # every watch starts again, into the storm
    await trio.sleep(s.outage)
    s.storm.answer, s.storm.watches_only = None, False
    return f"{cut} connections cut, {s.storm.answered - before} watches answered 410"


async def _malformed(s: FaultSuite) -> str:
    client, counter = s.client, s.counter
    bad_crs = [s.fresh_name(1_000_000 + i) for i in range(s.malformed)]
    bad_pods = [f"bad-pod-{i:05d}" for i in range(s.malformed)]
    limit = trio.CapacityLimiter(MALFORMED_CONCURRENCY)

    async def limited(call: Callable[[], Awaitable[Any]]) -> None:
        async with limit:
            try:
                await call()
            except NotFound:
                pass

    async with trio.open_nursery() as nursery:
        for name in bad_crs:
            body = s.cr_body(name, cpu="1e400")
            nursery.start_soon(limited, partial(client.create, counter.crs_path, body))
        for i, name in enumerate(bad_pods):
            body = s.pod_body(name, counter.nodes[i % len(counter.nodes)], delayRunning="soon")
            nursery.start_soon(limited, partial(client.create, counter.pods_path, body))

    async def all_refused() -> bool:
        pods = (await client.list(counter.pods_path, label_selector=counter.selector)).items
        reasons = {p["metadata"]["name"]: (p.get("status") or {}).get("reason") for p in pods}
        return all(reasons.get(n) == "InvalidLifecycleAnnotation" for n in bad_pods)

    await wait_until(
        all_refused, counter.settle_within, "every bad pod Pending with its reason", 0.5
    )
    nodes = await counter.names("/api/v1/nodes", None)
    registered = nodes & set(bad_crs)
    async with trio.open_nursery() as nursery:
        for name in bad_crs:
            nursery.start_soon(limited, partial(client.delete, f"{counter.crs_path}/{name}"))
        for name in bad_pods:
            nursery.start_soon(limited, partial(client.delete, f"{counter.pods_path}/{name}"))

    async def all_gone() -> bool:
        crs = await counter.names(counter.crs_path, counter.selector)
        pods = await counter.names(counter.pods_path, counter.selector)
        return not crs & set(bad_crs) and not pods & set(bad_pods)

    await wait_until(all_gone, counter.settle_within, "the bad CRs and pods deleted", 0.5)
    if registered:
        raise Unsettled(f"{len(registered)} Node CRs with cpu=1e400 registered a Node")
    return (
        f"{s.malformed} CRs never registered, {s.malformed} pods Pending with the reason, "
        "all deleted"
    )


async def _shard_kill(s: FaultSuite) -> str:
    fleet, counter = s.fleet, s.counter
    k = max(fleet.shards)
    victim, shard = fleet.shards[k], str(k)
    await fleet.kill9(victim)
    killed = fleet.shard_killed[shard]
    victims = [n for n in counter.nodes if counter.label_of(n) == shard]
    await wait_until(
        lambda: all(counter.label_of(n) not in (None, shard) for n in victims),
        counter.settle_within,
        f"shard {k}'s CRs moved",
        0.25,
    )
    moved = trio.current_time() - killed

    def taken_over() -> list[float]:
        """When each victim's node Lease was first renewed by another shard since the kill."""
        writes = counter.writes.lease_writes(since=killed)
        firsts = [
            min((w.time for w in writes.get(n, []) if shard_of(w) != shard), default=None)
            for n in victims
        ]
        return [t for t in firsts if t is not None]

    await wait_until(
        lambda: len(taken_over()) == len(victims),
        counter.settle_within,
        f"shard {k}'s node Leases renewed by another shard",
        0.25,
    )
    took = max(taken_over(), default=killed) - killed
    await fleet.start_shard(k)
    await wait_until(
        lambda: any(counter.label_of(n) == shard for n in counter.nodes),
        counter.settle_within,
        f"shard {k}'s share back",
        0.25,
    )
    # The failover's figure: the kill to the last victim's node Lease renewed by another
    # shard (as the write log or the Lease watch saw it), against the node Lease duration.
    return (
        f"{len(victims)} CRs moved off shard {k}, seen moved {moved:.1f} s after the kill, "
        f"their node Leases all renewed by another shard {took:.1f} s after it "
        f"(node Lease {counter.node_lease_duration:g} s); its share moved back"
    )


async def _coordinator_holder(client: Client) -> str | None:
    try:
        lease = await client.get(LEADER_LEASE)
    except NotFound:
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


async def _failover(s: FaultSuite) -> str:
    client, fleet, counter = s.client, s.fleet, s.counter
    holder = await _coordinator_holder(client)
    leaders = [p for p in fleet.coordinators if holder and holder.endswith(f"/{p.pid}")]
    if not leaders:
        raise Unsettled(f"the leader Lease is held by {holder!r}, none of the coordinators")
    await fleet.kill9(leaders[0])

    async def other_leads() -> bool:
        now = await _coordinator_holder(client)
        return now is not None and now != holder

    await wait_until(other_leads, counter.settle_within, "the other coordinator leading", 0.25)
    fresh = [s.fresh_name(len(counter.nodes) + i) for i in range(FRESH_CRS)]
    for name in fresh:
        await client.create(counter.crs_path, s.cr_body(name))
    counter.nodes.extend(fresh)
    await wait_until(
        lambda: all(counter.label_of(n) for n in fresh),
        counter.settle_within,
        "new CRs labelled by the new leader",
        0.25,
    )
    return f"leader {holder} killed, {await _coordinator_holder(client)} leads"


FAULTS: Sequence[Fault] = (
    ("watch-cut", lambda s: f"every connection cut {CUTS} times, {CUT_INTERVAL:g} s apart", _cuts),
    ("pause", lambda s: f"apiserver silent for {s.outage:g} s (SIGSTOP)", _pause),
    ("restart", lambda s: f"apiserver down {s.outage:g} s, state kept", _restart),
    ("429-storm", lambda s: f"every request 429 for {s.outage:g} s", _too_many),
    ("410-storm", lambda s: f"watches cut, every watch 410 for {s.outage:g} s", _gone),
    (
        "malformed",
        lambda s: (
            f"{s.malformed} Node CRs with cpu=1e400 (past int64) and {s.malformed} pods "
            "with delayRunning=soon at once"
        ),
        _malformed,
    ),
    ("shard-kill", lambda s: "kill -9 of the last shard, then it comes back", _shard_kill),
    (
        "coordinator-failover",
        lambda s: f"kill -9 of the leading coordinator; {FRESH_CRS} new CRs",
        _failover,
    ),
)
"""Every fault, in the order injected: name, what it tries, the fault itself."""
STORMS = ("429-storm", "410-storm")
"""Faults that need the sandbox (:class:`Storm`): a real apiserver's answers are its own."""


async def run_faults(
    suite: FaultSuite,
    on_result: Callable[[FaultResult], None] = lambda result: None,
    *,
    begin: Callable[[str], None] = lambda name: None,
) -> list[FaultResult]:
    """Every fault of :data:`FAULTS` (the storms only with a :class:`Storm`), one after
    another; stops after a fault the fleet did not settle from (the next would count its
    leftovers). Each result goes to ``on_result`` as it comes."""
    results: list[FaultResult] = []
    for name, tried, fault in FAULTS:
        if name in STORMS and suite.storm is None:
            continue
        begin(name)
        try:
            result = await suite.counter.case(name, tried(suite), partial(fault, suite))
        except FleetError as exc:  # a list of the counts failed: the apiserver is in trouble
            result = FaultResult(
                name=name, tried=tried(suite), did="", fault_seconds=0.0, settle_seconds=0.0,
                moves=0, crashes=0, not_ready=0, regressed=0, restarted=0, two_drivers=0,
                lost=0, ok=False, reason=f"counting failed: {exc}",
            )  # fmt: skip
        results.append(result)
        on_result(result)
        if result.reason.startswith(("not settled", "the fault did not", "counting failed")):
            break
    return results
