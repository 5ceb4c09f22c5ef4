"""``kubemock-fleet bench SCENARIO|FILE.yaml``: load scenarios and micro-benchmarks.

Two kinds of benchmark share the command:

- ``transport``: the client micro-benchmark of :mod:`bench.transport` (client
  CPU per PATCH, httpx's pool against the hot-path transport); its options are
  ``--requests``, ``--repeats``, ``--inflight``, ``--client``, ``--json``.
- ``sandbox``: the sandbox apiserver's PATCHes/s, server CPU per PATCH and
  watch fan-out (:mod:`bench.sandbox`); options ``--requests``,
  ``--repeats``, ``--inflight`` (default 16), ``--scheme``, ``--server``,
  ``--watchers``, ``--events``, ``--rate``, ``--json``, ``--output``.
- ``shard``: one shard process against a stub apiserver (:mod:`bench.shard`):
  start-up, steady-state CPU and RSS, Lease lateness, bound to
  Running; options ``--nodes`` (10000), ``--pods`` (100000), ``--duration``
  (600 s), ``--json``, ``--output``.
- Load scenarios against a control plane (:mod:`bench`): the built-in
  ``node-density``, ``pod-startup``, ``churn``, ``heartbeat-soak``,
  ``kwok-ci``, ``daemonset``, ``faults``, or a YAML file naming one of them as its ``type``
  (docs/bench.md); ``--nodes``, ``--pods`` and ``--rate`` override it. With ``--kubeconfig``/``--context`` the bench runs against
  that cluster, where a fleet must already run; without, it starts what
  ``kubemock-fleet up`` starts (sandbox apiserver in this process, the control
  plane and ``--shards N`` shards as child processes, no nodes). ``faults``
  runs only so, on a fleet of its own behind a fault proxy (``--shards``, at
  least 2, and 2 coordinators); on the sandbox the CLI puts the bench's write
  log and storm in front of the sandbox's handler. It writes ``report.json``, ``summary.md``
  and PNG plots into ``--output`` and exits 1 if a step failed or an SLO row
  failed.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio
import typer

from fleet.cli._app import app
from fleet.cli._console import console_sink, logs_through
from fleet.cli._options import ContextOption, KubeconfigOption, TrafficProfileOption
from fleet.errors import FleetError, InputError

TRANSPORT = "transport"
SANDBOX = "sandbox"
SHARD = "shard"
SHARD_SCRAPE = "shard-scrape"
SCRAPE_INTERVAL = 15.0
"""metrics-server's default --metric-resolution: the scrape case's round interval."""


@app.command()
def bench(
    scenario: str = typer.Argument(
        ...,
        help="'transport' (client CPU per PATCH), 'sandbox', 'shard', 'shard-scrape' "
        "(metrics-server's /metrics/resource scrape of every node of one shard), a load "
        "scenario (node-density, pod-startup, churn, heartbeat-soak, kwok-ci, daemonset, faults) or a "
        "scenario YAML file.",
    ),
    requests: int = typer.Option(
        5000, "--requests", min=1, help="transport: requests per timed repeat."
    ),
    repeats: int = typer.Option(
        5, "--repeats", min=1, help="transport: timed repeats; the minimum is reported."
    ),
    inflight: list[int] = typer.Option(
        [1, 16, 64], "--inflight", help="transport: in-flight levels (repeat the flag for several)."
    ),
    clients: list[str] | None = typer.Option(
        None,
        "--client",
        help="transport: clients to compare (repeat the flag): httpx, hot, h11 (the framing reference). "
        "Default: httpx and hot.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON instead of a table."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        help="transport: also write <scenario>.json here. Scenarios: the report "
        "directory (default ./bench-results/<scenario>-<run id>).",
    ),
    nodes: int | None = typer.Option(
        None, "--nodes", min=1, help="Scenarios: Node CRs (overrides the scenario)."
    ),
    pods: int | None = typer.Option(
        None, "--pods", min=0, help="Scenarios: pods (overrides the scenario)."
    ),
    shards: int = typer.Option(
        1,
        "--shards",
        min=0,
        help="Scenarios on the bench's own sandbox: fleet shards to start (0: none).",
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Scenarios: write PNG plots."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Scenarios: show a progress bar."
    ),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    schemes: list[str] | None = typer.Option(
        None, "--scheme", help="sandbox: http and/or https (repeat the flag; default both)."
    ),
    servers: list[str] | None = typer.Option(
        None, "--server", help="sandbox: lean (default) and/or hypercorn, the HTTP server in front."
    ),
    watchers: int = typer.Option(
        10, "--watchers", min=0, help="sandbox: concurrent watchers (0: no watch case)."
    ),
    events: int = typer.Option(
        20000, "--events", min=1, help="sandbox: changes per timed watch repeat."
    ),
    rates: list[int] | None = typer.Option(
        None,
        "--rate",
        help="sandbox: in-server writes/s of the watch case, 0 = as fast as it can "
        "(repeat the flag; default 10000 and 0). Scenarios: the bench's writes/s (once; overrides the "
        "scenario).",
    ),
    duration: float = typer.Option(
        600.0,
        "--duration",
        min=1,
        help="shard: seconds of steady state measured; shard-scrape: seconds scraped "
        "(a round every --scrape-interval), after as long a window without.",
    ),
    scrape_interval: float = typer.Option(
        SCRAPE_INTERVAL,
        "--scrape-interval",
        min=1,
        help="shard-scrape: seconds between rounds (metrics-server's --metric-resolution).",
    ),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Scenarios: leave the run's objects in place for inspection (the summary says how "
        "to delete them). Useful with --kubeconfig: the bench's own sandbox ends with the bench.",
    ),
    control_plane: str = typer.Option(
        "sandbox",
        "--control-plane",
        help="Scenarios without --kubeconfig: the bench's own apiserver, sandbox or real "
        "(etcd + kube-apiserver ... from --binaries, as `up --control-plane real`).",
    ),
    binaries: Path | None = typer.Option(
        None,
        "--binaries",
        file_okay=False,
        help="--control-plane real: the binaries directory (default: $KUBEMOCK_FLEET_BINARIES, "
        "else $KUBEBUILDER_ASSETS).",
    ),
    traffic_profile: TrafficProfileOption = None,
    policy: Path | None = typer.Option(
        None,
        "--policy",
        metavar="FILE",
        help="shard: MockStatus objects (YAML or JSON: one, a list, a List or several "
        "documents) the stub apiserver lists, so that the shard runs them as lifecycle policies.",
    ),
    outage: str | None = typer.Option(
        None,
        "--outage",
        metavar="DURATION",
        help="faults: how long each apiserver pause, restart and 429/410 storm lasts, as a Go "
        "duration or seconds (e.g. 8s, 1m, 2.5; overrides the scenario's 8 s, which is inside "
        "the fleet's 10 s renew deadlines: no CR should move; past them shards fence).",
    ),
) -> None:
    """Run a benchmark: the transport or sandbox micro-benchmark, or a load scenario against a control plane."""
    if policy is not None and scenario != SHARD:
        raise InputError(f"bench {scenario}: --policy is for bench shard only")
    if scenario == TRANSPORT:
        _transport(requests, repeats, inflight, clients, as_json, output)
        return
    if scenario == SANDBOX:
        _sandbox(
            requests, repeats, inflight, schemes, servers, watchers, events, rates, as_json, output
        )
        return
    if scenario in (SHARD, SHARD_SCRAPE):
        if scenario == SHARD_SCRAPE and traffic_profile not in (None, "lean"):
            # What it measures is the kubelet API's scrape, beside the Leases alone.
            raise InputError(f"bench {scenario}: only --traffic-profile lean")
        _shard(
            nodes,
            pods,
            duration,
            as_json,
            output,
            scrape=scenario == SHARD_SCRAPE,
            scrape_interval=scrape_interval,
            traffic_profile=traffic_profile or "lean",
            policy=policy,
        )
        return
    from bench import load_scenario  # heavy imports only when the command runs

    spec = load_scenario(
        scenario,
        {"nodes": nodes, "pods": pods, "rate": _scenario_rate(rates), "outage": _number_or(outage)},
        flags={"nodes": "--nodes", "pods": "--pods", "rate": "--rate", "outage": "--outage"},
    )
    if outage is not None and spec.type != "faults":
        raise InputError(f"--outage: only the faults scenario has outages, not {spec.type}")
    report = _run_scenario(
        spec,
        output=output,
        shards=shards,
        plots=plots,
        progress=progress,
        kubeconfig=kubeconfig,
        context=context,
        as_json=as_json,
        keep=keep,
        control_plane=control_plane,
        binaries=binaries.absolute() if binaries is not None else None,
        traffic_profile=traffic_profile,
    )
    if not (report.completed and report.slo_passed):
        raise typer.Exit(1)


def _scenario_rate(rates: list[int] | None) -> float | None:
    """A scenario's ``--rate`` override: at most one value, >= 1 (None: the scenario's own)."""
    if not rates:
        return None
    if len(rates) > 1 or rates[0] < 1:
        raise InputError("scenarios take one --rate, >= 1 (bench writes per second)")
    return float(rates[0])


class _Result(Protocol):
    """What every micro-benchmark's result has (``bench.transport``, ``.sandbox``, ``.shard``)."""

    @property
    def command(self) -> str: ...

    def to_json(self) -> str: ...


def _emit(
    result: _Result,
    path: Path | None,
    *,
    as_json: bool,
    header: str,
    report: Callable[[], str],
) -> None:
    """A micro-benchmark's result: written as JSON to ``path`` (if any), and printed as
    JSON or as ``header``, the command and the ``report``."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.to_json() + "\n")
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(header)
        typer.echo(f"command: {result.command}\n")
        typer.echo(report())


def _number_or(text: str | None) -> float | str | None:
    """A flag's duration: a bare number is seconds (as in a scenario file), else Go syntax."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


def _progress(message: str) -> None:
    """Progress of a micro-benchmark, on stderr: a run takes minutes (--json stays clean)."""
    typer.echo(f"bench: {message}", err=True)


def _transport(
    requests: int,
    repeats: int,
    inflight: list[int],
    clients: list[str] | None,
    as_json: bool,
    output: Path | None,
) -> None:
    from bench import transport

    if any(level < 1 for level in inflight):
        raise InputError(f"--inflight levels must be >= 1, got {inflight}")
    wanted = clients or transport.CLIENTS
    unknown = sorted(set(wanted) - set(transport.ALL_CLIENTS))
    if unknown:
        raise InputError(f"--client: unknown {unknown}; choose from {list(transport.ALL_CLIENTS)}")
    chosen = [name for name in transport.ALL_CLIENTS if name in wanted]
    result = transport.run(
        requests=requests,
        inflight=inflight,
        repeats=repeats,
        clients=chosen,
        progress=_progress,
    )
    _emit(
        result,
        output / f"{TRANSPORT}.json" if output is not None else None,
        as_json=as_json,
        header=f"{result.machine}, Python {result.python}",
        report=partial(transport.format_table, result),
    )


def _sandbox(
    requests: int,
    repeats: int,
    inflight: list[int],
    schemes: list[str] | None,
    servers: list[str] | None,
    watchers: int,
    events: int,
    rates: list[int] | None,
    as_json: bool,
    output: Path | None,
) -> None:
    """The sandbox apiserver's PATCH rate and watch fan-out (:mod:`bench.sandbox`)."""
    from bench import sandbox

    levels = [16] if inflight == [1, 16, 64] else inflight  # the transport's default levels: use 16
    if any(level < 1 for level in levels):
        raise InputError(f"--inflight levels must be >= 1, got {levels}")
    if not set(schemes or ()) <= {"http", "https"} or not set(servers or ()) <= set(
        sandbox.SERVERS
    ):
        raise InputError(f"--scheme: http or https; --server: one of {list(sandbox.SERVERS)}")
    if any(rate < 0 for rate in rates or ()):
        raise InputError("--rate must be >= 0")
    result = sandbox.run(
        requests=requests,
        repeats=repeats,
        inflight=levels,
        schemes=schemes or ("http", "https"),  # type: ignore[arg-type]
        servers=servers or ("lean",),  # type: ignore[arg-type]
        watchers=watchers,
        events=events,
        rates=rates or (10000, 0),
        progress=_progress,
    )
    _emit(
        result,
        output / f"{SANDBOX}.json" if output is not None else None,
        as_json=as_json,
        header=f"{result.machine}, Python {result.python}, {result.load}",
        report=partial(sandbox.format_report, result),
    )


@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM unwinds as Ctrl-C does (``KeyboardInterrupt``), so the stub apiserver and
    shard processes a synchronous bench started are stopped on the way out, not left
    running under init (Python's default for SIGTERM is to die on the spot)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _shard(
    nodes: int | None,
    pods: int | None,
    duration: float,
    as_json: bool,
    output: Path | None,
    *,
    scrape: bool = False,
    scrape_interval: float = SCRAPE_INTERVAL,
    traffic_profile: str = "lean",
    policy: Path | None = None,
) -> None:
    """One shard against a stub apiserver: steady-state CPU, RSS, Lease lateness; or, with
    ``scrape``, what metrics-server's scrape of its kubelet API costs (:mod:`bench.shard`)."""
    from bench import shard

    if traffic_profile not in shard.TRAFFIC_PROFILES:
        raise InputError(f"--traffic-profile {traffic_profile}: one of lean, kubelet")
    if policy is not None:
        try:
            shard.load_policy(policy)  # its fault named before any process starts
        except ValueError as exc:
            raise InputError(str(exc)) from exc
    nodes, pods = nodes or 10_000, pods if pods is not None else 100_000
    # Bound -> Running: 10,000 pods on 1,000 nodes (fewer in a small run); settle at most 20 s.
    with _terminate_unwinds():
        result = shard.run(
            nodes=nodes,
            pods=pods,
            duration=duration,
            settle=min(20.0, duration),
            running_nodes=min(nodes, 1_000),
            running_pods=min(pods, 10_000),
            scrape_rounds=max(2, round(duration / scrape_interval) + 1),
            scrape_interval=scrape_interval,
            cases=("scrape",) if scrape else ("steady", "running"),
            progress=_progress,
            traffic_profile=traffic_profile,
            policy=policy,
        )
    name = SHARD_SCRAPE if scrape else SHARD
    _emit(
        result,
        output / f"{name}.json" if output is not None else None,
        as_json=as_json,
        header=f"{result.machine}, Python {result.python}, {result.load}",
        report=partial(shard.format_report, result),
    )


# --------------------------------------------------------------------------- load scenarios


class _RichProgress:
    """The runner's progress, drawn as one rich bar per step."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def begin(self, step: str, total: int) -> None:
        self._tasks[step] = self._progress.add_task(step, total=max(total, 1))

    def update(self, step: str, completed: int) -> None:
        if step in self._tasks:
            self._progress.update(self._tasks[step], completed=completed)

    def end(self, step: str) -> None:
        if step in self._tasks:
            self._progress.stop_task(self._tasks[step])


async def _own_cluster(
    shards: int,
    output: Callable[[bytes], None] | None = None,
    control_plane: str = "sandbox",
    binaries: Path | None = None,
    traffic_profile: str | None = None,
    kubelet_events: bool | None = None,
    *,
    sandbox_here: bool = False,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``kubemock-fleet up`` as a task (``sandbox_here``: the sandbox in this process, as
    the faults scenario wants it, to reach its handler): sandbox (or a real control plane), control plane
    (scheduler, controllers: a child process), coordinator and ``shards`` shard child
    processes, no nodes;
    reports the ``Up`` and its ``RunningUp``. ``up.stop()`` ends it cleanly (shards first,
    then the apiserver)."""
    from fleet._settings import load_settings
    from fleet.up import Up, UpSettings

    workdir = Path(tempfile.mkdtemp(prefix="kubemock-fleet-bench-"))
    up = Up(
        UpSettings(
            port=0,
            kubeconfig_out=workdir / "kubeconfig",
            nodes=0,
            shards=shards,
            fleet=load_settings(
                flags={
                    "shards": shards,
                    "shard.traffic_profile": traffic_profile,
                    "shard.events": kubelet_events,
                }
            ),
            shard_processes=shards > 0,
            output=output,
            control_plane=control_plane,
            binaries=binaries,
            # The scheduler and controllers beside, not inside, the sandbox's process: in one
            # process they took 100 % of a core with it at kwok-ci load (docs/performance.md).
            control_plane_process=True,
            # The sandbox beside the bench too: in its process the bench's watch of 10,000
            # pods fell tens of seconds behind at kwok-ci load (docs/performance.md).
            # The faults scenario keeps it here: its write log and storms wrap its handler.
            sandbox_process=control_plane == "sandbox" and not sandbox_here,
            status_line=False,  # nothing draws it; on a real apiserver it lists everything
        )
    )
    try:
        async with trio.open_nursery() as inner:
            running = await inner.start(up.run)
            task_status.started((up, running))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # its kubeconfig: the token dies with the run


def _fault_target(running: Any, shards: int) -> Any:
    """The faults scenario's view of the bench's own apiserver: on the sandbox (in this
    process) the write log and the storm go in front of its handler."""
    from bench import FaultTarget, Storm, WriteLog

    size = max(shards, 2)  # one shard is killed and another takes its CRs
    if running.sandbox is None:
        return FaultTarget(running.kubeconfig, running.url, shards=size)
    from fleet.sandbox import gone, too_many_requests

    writes = WriteLog()
    storm = Storm(too_many_requests(1), gone("too old resource version: 1 (2)"))
    running.sandbox.app.wrap_handler(writes.wrap)
    running.sandbox.app.wrap_handler(storm.wrap)
    return FaultTarget(running.kubeconfig, running.url, writes, storm, shards=size)


def _began(exc: BaseException) -> bool:
    """Whether the interrupted run's scenario had started (an exception group: any of it)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_began(inner) for inner in exc.exceptions)
    return not isinstance(exc, _Interrupted) or exc.began


def _interrupted(out: Path, run_id: str, began: bool = True) -> str:
    """What an interrupted run's cleanup did, as its partial report says (never assumed)."""
    from bench import RUN_LABEL, read_report

    if not began:
        return "interrupted before the scenario started: what the bench started is stopped"

    try:
        report = read_report(out / "report.json")
    except FleetError:
        return f"interrupted: no report was written to {out}; objects of run {run_id} may be left"
    cleanup = report.cleanup
    where = f"{'report' if report.completed else 'partial report'} in {out}"
    if cleanup.state == "running":  # written before the cleanup, never rewritten
        return (
            f"interrupted in the cleanup, which wrote no outcome: objects of run {run_id} "
            f"may be left; {where}"
        )
    left = (
        f"{cleanup.leftover} left (`kubectl delete ... -l {RUN_LABEL}={run_id}` deletes them)"
        if cleanup.leftover or cleanup.errors
        else "none left"
    )
    when = "interrupted in the cleanup" if cleanup.state == "interrupted" else "interrupted"
    return f"{when}: {cleanup.deleted} objects of run {run_id} deleted, {left}; {where}"


def _self_component(own: bool, control_plane: str, shards: int, faults: bool = False) -> str:
    """What the bench's own process holds, as its component is named in the report."""
    if not own:
        return "bench"
    held = ["bench"]
    if faults:  # its fleet is child processes; the sandbox stays here, the proxy is here
        return " + ".join([*held, "sandbox apiserver"] if control_plane == "sandbox" else held) + (
            " + fault proxy"
        )
    if shards:
        held.append("coordinator")
    return " + ".join(held)


class _Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run; what it started is stopped, its scenario cleaned up.

    ``began``: the scenario had started (it may have created objects)."""

    def __init__(self, began: bool = True) -> None:
        super().__init__("interrupted")
        self.began = began


class _SignalStop:
    """SIGINT and SIGTERM for the whole of a bench run, from before its cluster starts.

    A signal while the scenario runs cancels the scenario alone (:meth:`scenario`), so its
    shielded cleanup runs while the bench's own apiserver still answers; at any other
    moment (the cluster starting, the cleanup after a first signal, the cluster stopping)
    it cancels everything: each part stops what it started as it unwinds (a real control
    plane's etcd and kube-apiserver included, ``fleet.realcp``). Without it a SIGTERM
    during start-up killed the bench outright and left them running.
    """

    def __init__(self) -> None:
        self.signalled = False
        self.began = False
        """The scenario started (:meth:`scenario`)."""
        self.everything: trio.CancelScope | None = None
        self._scenario: trio.CancelScope | None = None

    async def watch(self, signals: Any) -> None:
        async for _ in signals:
            self.signalled = True
            scenario = self._scenario
            if scenario is not None and not scenario.cancel_called:
                scenario.cancel()  # a second signal stops the rest too
            elif self.everything is not None:
                self.everything.cancel()

    async def scenario(self, run: Callable[[], Awaitable[Any]]) -> Any:
        """``run()``'s result; :class:`_Interrupted` if a signal cancelled it."""
        with trio.CancelScope() as scope:
            self._scenario = scope
            self.began = True
            try:
                return await run()
            finally:
                self._scenario = None
        raise _Interrupted


async def _stoppable(body: Callable[[_SignalStop], Awaitable[Any]]) -> Any:
    """``body(stop)`` with SIGINT and SIGTERM handled throughout (:class:`_SignalStop`);
    :class:`_Interrupted` once it has unwound after a signal."""
    stop = _SignalStop()
    result: Any = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stop.everything = nursery.cancel_scope
            nursery.start_soon(stop.watch, signals)
            result = await body(stop)
            nursery.cancel_scope.cancel()
    if stop.signalled:
        raise _Interrupted(stop.began)
    return result


async def _until_signal(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario`` until it ends or SIGINT/SIGTERM arrives (then :class:`_Interrupted`,
    after its cleanup: the signal cancels the scenario alone)."""
    return await _stoppable(lambda stop: stop.scenario(scenario))


def _run_scenario(
    spec: Any,
    *,
    output: Path | None,
    shards: int,
    plots: bool,
    progress: bool,
    kubeconfig: Path | None,
    context: str | None,
    as_json: bool,
    keep: bool = False,
    control_plane: str = "sandbox",
    binaries: Path | None = None,
    traffic_profile: str | None = None,
) -> Any:
    import secrets

    import msgspec
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench import NullProgress, RunOptions, TargetInfo, child_pids, run_scenario, verdict
    from fleet.kube import Client, load_config

    own = kubeconfig is None and context is None
    if traffic_profile is not None and not own:
        raise InputError(
            "--traffic-profile: the bench sets it only on the fleet it starts (without "
            "--kubeconfig/--context); an external fleet has its own"
        )
    if control_plane != "sandbox" and not own:
        raise InputError(
            "--control-plane: the bench starts its own only without --kubeconfig/--context"
        )
    faults = spec.type == "faults"
    if faults and not own:
        raise InputError(
            "the faults scenario runs on the bench's own apiserver only (no --kubeconfig/--context)"
        )
    if faults and traffic_profile not in (None, "lean"):
        raise InputError("the faults scenario's own fleet runs --traffic-profile lean only")
    run_id = secrets.token_hex(4)
    out = output if output is not None else Path("bench-results") / f"{spec.name}-{run_id}"
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )

    live = progress and console.is_terminal  # bars redrawn in place: logs go above them

    async def main(stop: _SignalStop) -> Any:
        before = child_pids()  # not the bench's own: not in its figures
        async with trio.open_nursery() as nursery:
            up = None
            fault_target = None
            etcd_metrics = None
            if not own:
                config = load_config(kubeconfig, context)
                target = TargetInfo(server=config.server, mode="cluster", fleet="external")
            else:
                # The shard children's lines print above the progress bars, not into them.
                up, running = await nursery.start(
                    partial(
                        _own_cluster,
                        0 if faults else shards,  # faults: a fleet of its own, behind its proxy
                        console_sink(console) if live else None,
                        control_plane,
                        binaries,
                        traffic_profile,
                        None if faults else spec.kubelet_events,
                        sandbox_here=faults,
                    )
                )
                config = load_config(running.kubeconfig)
                target = TargetInfo(
                    server=running.url,
                    mode="real" if control_plane == "real" else "sandbox",
                    fleet="started" if shards or faults else "none",
                    # The faults fleet is the scenario's own (bench._faults), always lean.
                    traffic_profile=(
                        "lean"
                        if faults
                        else up.settings.fleet.shard.traffic_profile
                        if shards
                        else None
                    ),
                    kubelet_events=up.settings.fleet.shard.events
                    if shards and not faults
                    else None,
                )
                fault_target = _fault_target(running, shards) if faults else None
                if running.real is not None:  # its etcd's memory, for the chaos section
                    etcd_metrics = f"{running.real.etcd_url}/metrics"
            options = RunOptions(
                target=target,
                output=out,
                plots=plots,
                run_id=run_id,
                progress=_RichProgress(bar) if progress else NullProgress(),
                # Every child: shards, the control-plane child, etcd, kube-apiserver ...
                fleet_children=own,
                not_our_children=before,
                self_component=_self_component(own, control_plane, shards, faults),
                ensure_crds=own,
                keep=keep,
                faults=fault_target,
                etcd_metrics_url=etcd_metrics,
            )
            try:
                async with Client(config) as client:
                    with bar:
                        report = await stop.scenario(partial(run_scenario, client, spec, options))
            finally:
                if up is not None:
                    up.stop()  # shards stop before the apiserver goes
        return report

    try:
        with logs_through(console) if live else contextlib.nullcontext():
            report = trio.run(_stoppable, main)
    except (_Interrupted, KeyboardInterrupt) as exc:
        console.print(_interrupted(out, run_id, _began(exc)))
        raise typer.Exit(130) from None
    except BaseExceptionGroup as group:
        # A nursery wraps what ended it; the CLI's error boundary wants one clear outcome.
        if (interrupted := group.subgroup((_Interrupted, KeyboardInterrupt))) is not None:
            console.print(_interrupted(out, run_id, _began(interrupted)))
            raise typer.Exit(130) from None
        # Anything else goes to the CLI's error boundary (fleet.cli._app.main): one line.
        raise
    if as_json:
        typer.echo(msgspec.json.encode(report).decode())
    else:
        for fault in report.faults:
            typer.echo(fault.line())
        for step in report.steps:
            typer.echo(
                f"{step.name:16} {step.reached}/{step.target} in {step.seconds:.2f} s"
                f"{'' if step.ok else f'  (FAILED: {step.reason})'}"
            )
        typer.echo(
            f"Result: {verdict(report)}; SLOs: {'PASS' if report.slo_passed else 'FAIL'} "
            f"({len(report.slo)} rows); report: {out / 'report.json'}"
        )
        for note in report.notes:
            typer.echo(f"note: {note}")
    return report
