"""Shard benchmark: one shard process, N nodes and M pods, against a stub apiserver.

What it answers: can one shard process carry 10,000
nodes (Lease every 10 s) and 100,000 pods in steady state in <= 30 % of one
core and <= 500 MB RSS, with no Lease renewal later than 2 s past due; and
does it take 10,000 pods from bound to Running (PATCH sent) in <= 10 s of
shard CPU. docs/performance.md keeps the figures.

How, so that the figures are the shard's:

- the apiserver is :mod:`bench._stubapiserver`, in its own process, answering
  at once from a generated population (its CPU is never counted);
- the shard is the real command, ``kubemock-fleet shard --id 0`` with a
  kubeconfig pointing at the stub, in its own process; its CPU (utime +
  stime) and RSS are read from ``/proc/<pid>``; peak RSS is ``VmHWM``;
- each case (``steady``: start-up then steady state; ``running``: bound to
  Running) runs in a fresh stub + shard pair;
- Lease lateness is taken twice: by the stub (the gap between successive PUTs
  of each node Lease, minus the longest interval the jitter allows: 10.4 s)
  and by the shard itself (``kubemock_fleet_lease_renewals_late_total``,
  renewals finished > 2 s past due, and ``..._missed_total``, from its
  ``/metrics``).

``steady``: the shard starts against N CRs and M bound pods; the bench notes
wall time and shard CPU until every Node is registered (POSTed, Lease created)
and until every pod was PATCHed Running, waits ``settle`` seconds, then
measures ``duration`` seconds of steady state: CPU % of one core, peak RSS,
writes/s, Lease lateness.

``running``: a shard with ``running_nodes`` nodes and no pods settles; then,
``repeats`` times, the stub adds ``running_pods`` pods bound to its nodes in
one burst on the pod watch, and the bench measures the shard CPU until the
last of them is PATCHed Running; the minimum over repeats is reported, raw and
net of the Lease work the shard does meanwhile (its idle rate measured just
before).

``traffic_profile``: the shard's ``trafficProfile``. With ``kubelet`` every node also
sends what a real kubelet reads (``shards._traffic``: informers of RuntimeClasses,
CSIDrivers, Services, its Node, its pods, ``kube-root-ca.crt``, CSINode, a Node GET
every 10 s), each node over one HTTP/2 connection of its own (h2c: the stub serves
both); the steady case then also reports the shard's sockets (``/proc/<pid>/fd``) and
the stub's requests by kind per node per minute. ``policy``: MockStatus objects (a
YAML or JSON file, :func:`load_policy`) the stub lists, to measure lifecycle policies.

Entry points: :func:`run` (used by ``kubemock-fleet bench shard``),
:func:`load_policy` and :func:`format_report`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "METRIC_RESOLUTION",
    "TRAFFIC_PROFILES",
    "BenchResult",
    "RunningCase",
    "ScrapeCase",
    "SteadyCase",
    "format_report",
    "load_policy",
    "run",
]

METRIC_RESOLUTION = 15.0
"""metrics-server's default ``--metric-resolution``: the scrape case's round interval unless
told otherwise (the report's command then names it)."""
_TICKS = os.sysconf("SC_CLK_TCK")
_POLL = 0.5
"""Seconds between progress polls of the stub during start-up."""
SOCKETS_EVERY = 10.0
"""Seconds between counts of the shard's sockets in the steady window (reading 10,000
``/proc/<pid>/fd`` links is not free: the bench shares the box with what it measures)."""
TRAFFIC_PROFILES = ("lean", "kubelet")


@dataclass(frozen=True, slots=True)
class SteadyCase:
    """Start-up and steady state of one shard with ``nodes`` nodes and ``pods`` pods."""

    nodes: int
    pods: int
    registered_s: float
    """Wall seconds from the shard's start until every Node was POSTed and its Lease created."""
    registered_cpu_s: float
    """Shard CPU seconds (process start, imports included) until then."""
    running_s: float
    """Wall seconds from the shard's start until every pod was PATCHed Running."""
    running_cpu_s: float
    """Shard CPU seconds until then."""
    duration_s: float
    """Length of the steady-state window."""
    cpu_percent: float
    """Shard CPU over the window, % of one core."""
    cpu_percent_max_10s: float
    """The busiest 10 s of the window, % of one core."""
    rss_mib: float
    """Shard RSS at the end of the window."""
    peak_rss_mib: float
    """Shard peak RSS (VmHWM) over the whole run, start-up included."""
    writes_per_s: float
    """Writes the stub received per second over the window."""
    requests: dict[str, int]
    """Requests the stub received over the window, by kind."""
    renewals: int
    """Node Lease renewals (PUT after PUT) the stub saw over the window."""
    lateness_max_s: float
    """Stub-observed: the largest gap between two PUTs of one Lease, past 10.4 s."""
    lateness_p99_s: float
    renewals_late_stub: int
    """Stub-observed renewals more than 2 s past 10.4 s after the previous one."""
    renewals_late_shard: int
    """The shard's own count over the window: renewals finished > 2 s past due."""
    renewals_missed_shard: int
    """The shard's own count over the window: Leases that expired before renewal."""
    loadavg: tuple[float, float, float]
    """The machine's load average at the end of the window (others' jobs included)."""
    renewals_late_startup_shard: int = 0
    """The shard's own count from its start until every pod was Running."""
    lane_startup: dict[str, dict[str, float]] = field(default_factory=dict)
    """The shard's Lease lane from its start until every pod was Running, by stage
    (``due_to_sent``: its backlog; ``sent_to_answered``: the stub + reading the answer):
    count, mean, p99 (a bucket's upper bound), over_1s, over_2s."""
    lane_steady: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same over the steady-state window."""
    stub_startup: dict[str, Any] = field(default_factory=dict)
    """The stub's own delays until every pod was Running: busy fraction, loop stalls."""
    stub_steady: dict[str, Any] = field(default_factory=dict)
    """The same over the steady-state window."""
    sockets: int = 0
    """The shard's open sockets at the end of the window (``/proc/<pid>/fd``)."""
    sockets_max: int = 0
    """The most counted over the window (every :data:`SOCKETS_EVERY` s)."""
    per_node_per_minute: dict[str, float] = field(default_factory=dict)
    """The stub's requests over the window, by kind, per node per minute."""
    stub_connections: dict[str, int] = field(default_factory=dict)
    """Connections open on the stub at the end of the window, by protocol."""


@dataclass(frozen=True, slots=True)
class ScrapeCase:
    """metrics-server's scrape (``/metrics/resource`` of every node every ``interval_s``)
    against one shard's kubelet API, beside its Lease work."""

    nodes: int
    pods: int
    interval_s: float
    rounds: int
    connections: int
    idle_cpu_percent: float
    """Shard CPU, % of one core, in the window before scraping."""
    scrape_cpu_percent: float
    """Shard CPU while scraped (the rounds after the first, whose TLS handshakes are not
    steady state)."""
    cpu_per_scrape_s: float
    """Shard CPU of one round, net of the idle rate: what a scrape of every node costs."""
    cpu_per_request_ms: float
    round_wall_s: tuple[float, ...]
    """First request to last answer, each round (the first includes the TLS handshakes)."""
    bytes_per_node: int
    failed: int
    client_cpu_s_per_round: float
    renewals_idle: int
    late_idle_shard: int
    lateness_max_idle_s: float
    renewals_scraped: int
    late_scraped_shard: int
    late_scraped_stub: int
    lateness_max_scraped_s: float
    lateness_p99_scraped_s: float
    peak_rss_mib: float
    loadavg: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class RunningCase:
    """``pods`` pods bound at once to ``nodes`` nodes, to Running (PATCH sent)."""

    nodes: int
    pods: int
    repeats: int
    cpu_s: float
    """Shard CPU seconds from the burst until the last PATCH, minimum over repeats."""
    cpu_net_s: float
    """The same, less the shard's idle rate (Leases) over that time; minimum over repeats."""
    wall_s: float
    """Wall seconds of the repeat with the least CPU."""
    idle_cpu_percent: float
    """The shard's CPU before the burst (its Lease work), % of one core."""
    peak_rss_mib: float
    all_cpu_s: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BenchResult:
    machine: str
    python: str
    command: str
    load: str
    steady: SteadyCase | None
    running: RunningCase | None
    scrape: ScrapeCase | None = None
    traffic_profile: str = "lean"
    """The shard's ``trafficProfile`` in every case."""
    policy: str | None = None
    """The file of MockStatus objects the stub listed, if any."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# -- processes -----------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _sockets(pid: int) -> int:
    """Sockets ``pid`` holds open (its ``/proc/<pid>/fd`` links to ``socket:[...]``)."""
    count = 0
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed meanwhile
    return count


def load_policy(path: Path) -> list[dict[str, Any]]:
    """The MockStatus objects of a YAML or JSON file: one object, a list, a ``kind: List``
    or several YAML documents. Raises :class:`ValueError` with one line naming the fault."""
    import pydantic
    import yaml

    from fleet.api import MockStatus

    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ValueError(f"--policy {path}: cannot read it: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"--policy {path}: not YAML or JSON{at}") from exc
    objects: list[Any] = []
    for document in documents:
        if isinstance(document, list):
            objects += document
        elif isinstance(document, dict) and document.get("kind") == "List":
            objects += document.get("items") or []
        elif document is not None:
            objects.append(document)
    if not objects:
        raise ValueError(f"--policy {path}: no MockStatus in it")
    for n, obj in enumerate(objects, 1):
        if not isinstance(obj, dict) or obj.get("kind") != "MockStatus":
            what = (
                f"a {obj.get('kind')}" if isinstance(obj, dict) and obj.get("kind") else "no kind"
            )
            raise ValueError(f"--policy {path}: object {n} is {what}, not a MockStatus")
        try:
            MockStatus.model_validate(obj)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            spot = ".".join(str(part) for part in error["loc"])
            raise ValueError(f"--policy {path}: object {n}: {spot}: {error['msg']}") from exc
    return objects


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Pair:
    """A stub apiserver and a shard pointed at it, each in its own process."""

    def __init__(
        self,
        nodes: int,
        pods: int,
        *,
        shard_code: str = "from fleet.cli import main; main()",
        shard_env: dict[str, str] | None = None,
        shard_config: str = "",
        traffic_profile: str = "lean",
        policy: list[dict[str, Any]] | None = None,
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="kubemock-fleet-bench-shard-"))
        stub_args = ["--nodes", str(nodes), "--pods", str(pods)]
        if policy is not None:
            listed = self._dir / "mockstatuses.json"
            listed.write_text(json.dumps(policy))
            stub_args += ["--mockstatuses", str(listed)]
        if traffic_profile != "lean":
            shard_config += f"  trafficProfile: {traffic_profile}\n"
        self.stub = subprocess.Popen(
            [sys.executable, "-m", "bench._stubapiserver", *stub_args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.stub.stdout is not None
        line = self.stub.stdout.readline()
        if not line.strip().isdigit():
            self.stub.kill()
            raise RuntimeError("stub apiserver did not start")
        self.port = int(line)
        self.metrics_port = _free_port()
        kubeconfig = self._dir / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: stub\n"
            f"clusters:\n- name: stub\n  cluster:\n    server: http://127.0.0.1:{self.port}\n"
            "contexts:\n- name: stub\n  context:\n    cluster: stub\n    user: stub\n"
            "users:\n- name: stub\n  user: {}\n"
        )
        config = self._dir / "fleet.yaml"
        config.write_text(f"shard:\n  metricsPort: {self.metrics_port}\n{shard_config}")
        self.log = (self._dir / "shard.log").open("wb")
        self.started = time.monotonic()
        self.shard = subprocess.Popen(
            [
                sys.executable,
                "-c",
                shard_code,
                "shard",
                "--id",
                "0",
                "--config",
                str(config),
                "--kubeconfig",
                str(kubeconfig),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=None if shard_env is None else {**os.environ, **shard_env},
        )

    def stub_call(self, path: str, method: str = "GET") -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def shard_metric(self, name: str) -> float:
        """Sum of a shard counter over its label sets (node Leases), from /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and 'lease="node"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def lane_lag(self) -> dict[str, dict[str, float]]:
        """``kubemock_fleet_lease_lane_seconds`` by stage: cumulative buckets, sum, count."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        out: dict[str, dict[str, float]] = {}
        prefix = "kubemock_fleet_lease_lane_seconds"
        for line in text.splitlines():
            if not line.startswith(prefix):
                continue
            head, value = line.rsplit(" ", 1)
            name, _, labels = head.partition("{")
            fields = dict(
                part.split("=", 1) for part in labels.rstrip("}").split(",") if "=" in part
            )
            stage = fields.get("stage", "").strip('"')
            row = out.setdefault(stage, {})
            if name.endswith("_bucket"):
                row["le=" + fields["le"].strip('"')] = float(value)
            elif name.endswith("_sum"):
                row["sum"] = float(value)
            elif name.endswith("_count"):
                row["count"] = float(value)
        return out

    def cpu(self) -> float:
        self.check()
        return _cpu_s(self.shard.pid)

    def check(self) -> None:
        if self.shard.poll() is not None:
            raise RuntimeError(f"shard exited with {self.shard.returncode}; log: {self.log.name}")

    def wait_for(
        self, done: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            stats = self.stub_call("/_stub/stats")
            if done(stats):
                return stats
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}: {stats}")
            time.sleep(_POLL)

    def stop(self) -> None:
        for proc in (self.shard, self.stub):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.stub.stdout is not None:
            self.stub.stdout.close()
        self.log.close()


# -- cases ---------------------------------------------------------------------------------------


def _lag_summary(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per stage between two scrapes: count, mean, p99 (bucket bound), over 1 s, over 2 s."""
    out: dict[str, dict[str, float]] = {}
    for stage, row in after.items():
        base = before.get(stage, {})
        delta = {k: v - base.get(k, 0.0) for k, v in row.items()}
        count = delta.get("count", 0.0)
        bounds = sorted(
            (float(k[3:]), v) for k, v in delta.items() if k.startswith("le=") and k != "le=+Inf"
        )
        p99 = math.inf
        for bound, cumulative in bounds:
            if cumulative >= 0.99 * count:
                p99 = bound
                break
        under = dict(bounds)
        out[stage] = {
            "count": count,
            "mean_s": round(delta.get("sum", 0.0) / count, 4) if count else 0.0,
            "p99_le_s": p99 if count else 0.0,
            "over_1s": count - under.get(1.0, count),
            "over_2s": count - under.get(2.0, count),
        }
    return out


def _stub_delays(stats: dict[str, Any]) -> dict[str, Any]:
    busy = sorted(stats.get("busy_s", {}).items(), key=lambda kv: -kv[1])[:4]
    return {
        "busy_fraction": round(stats.get("busy_fraction", 0.0), 3),
        "busiest": dict(busy),
        "stall_max_s": round(stats.get("stall_max_s", 0.0), 3),
        "stalled_s": round(stats.get("stalled_s", 0.0), 2),
        "stalls_over": stats.get("stalls", {}),
    }


def _steady(
    nodes: int,
    pods: int,
    duration: float,
    settle: float,
    timeout: float,
    traffic_profile: str = "lean",
    policy: list[dict[str, Any]] | None = None,
) -> SteadyCase:
    pair = _Pair(nodes, pods, traffic_profile=traffic_profile, policy=policy)
    try:
        pid = pair.shard.pid
        pair.wait_for(
            lambda s: s["nodes_registered"] >= nodes and s["node_leases"] >= nodes,
            timeout,
            "nodes registered",
        )
        registered_s, registered_cpu = time.monotonic() - pair.started, pair.cpu()
        startup = pair.wait_for(lambda s: s["pods_running"] >= pods, timeout, "pods Running")
        running_s, running_cpu = time.monotonic() - pair.started, pair.cpu()
        lane_startup = _lag_summary({}, pair.lane_lag())
        late_startup = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        time.sleep(settle)
        lag0 = pair.lane_lag()
        late0 = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        missed0 = pair.shard_metric("kubemock_fleet_lease_renewals_missed_total")
        pair.stub_call("/_stub/reset", "POST")
        cpu0, t0 = pair.cpu(), time.monotonic()
        samples = [(t0, cpu0)]
        sockets_max, counted = _sockets(pid), t0
        while time.monotonic() - t0 < duration:
            time.sleep(min(1.0, max(0.0, duration - (time.monotonic() - t0))))
            samples.append((time.monotonic(), pair.cpu()))
            if samples[-1][0] - counted >= SOCKETS_EVERY:
                sockets_max, counted = max(sockets_max, _sockets(pid)), samples[-1][0]
        cpu1, t1 = samples[-1][1], samples[-1][0]
        stats = pair.stub_call("/_stub/stats")
        sockets = _sockets(pid)
        lane_steady = _lag_summary(lag0, pair.lane_lag())
        late = pair.shard_metric("kubemock_fleet_lease_renewals_late_total") - late0
        missed = pair.shard_metric("kubemock_fleet_lease_renewals_missed_total") - missed0
        rss = _status_kib(pid, "VmRSS:")
        peak = _status_kib(pid, "VmHWM:")
        busiest = 0.0
        for i, (ta, ca) in enumerate(samples):
            for tb, cb in samples[i + 1 :]:
                if tb - ta >= 10.0:
                    busiest = max(busiest, (cb - ca) / (tb - ta))
                    break
        load = os.getloadavg()
    finally:
        pair.stop()
    minutes = stats["window_s"] / 60
    return SteadyCase(
        nodes=nodes,
        pods=pods,
        registered_s=round(registered_s, 1),
        registered_cpu_s=round(registered_cpu, 1),
        running_s=round(running_s, 1),
        running_cpu_s=round(running_cpu, 1),
        duration_s=round(t1 - t0, 1),
        cpu_percent=round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        cpu_percent_max_10s=round(100 * busiest, 1),
        rss_mib=round(rss / 1024, 1),
        peak_rss_mib=round(peak / 1024, 1),
        writes_per_s=round(stats["writes_per_s"], 1),
        requests=stats["requests"],
        renewals=stats["renewals"],
        lateness_max_s=round(stats["lateness_max_s"], 3),
        lateness_p99_s=round(stats["lateness_p99_s"], 3),
        renewals_late_stub=stats["renewals_late_2s"],
        renewals_late_shard=int(late),
        renewals_missed_shard=int(missed),
        loadavg=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        renewals_late_startup_shard=int(late_startup),
        lane_startup=lane_startup,
        lane_steady=lane_steady,
        stub_startup=_stub_delays(startup),
        stub_steady=_stub_delays(stats),
        sockets=sockets,
        sockets_max=max(sockets_max, sockets),
        per_node_per_minute={
            kind: round(count / nodes / minutes, 3)
            for kind, count in sorted(stats["requests"].items())
        },
        stub_connections=stats.get("connections", {}),
    )


def _running(
    nodes: int,
    pods: int,
    repeats: int,
    settle: float,
    timeout: float,
    traffic_profile: str = "lean",
    policy: list[dict[str, Any]] | None = None,
) -> RunningCase:
    pair = _Pair(nodes, 0, traffic_profile=traffic_profile, policy=policy)
    best: tuple[float, float, float] | None = None
    all_cpu: list[float] = []
    idle_rate = 0.0
    try:
        pair.wait_for(
            lambda s: s["nodes_registered"] >= nodes and s["node_leases"] >= nodes,
            timeout,
            "nodes registered",
        )
        time.sleep(settle)
        for round_ in range(repeats):
            c0, t0 = pair.cpu(), time.monotonic()
            time.sleep(min(5.0, max(1.0, settle)))
            c1, t1 = pair.cpu(), time.monotonic()
            idle_rate = (c1 - c0) / (t1 - t0)
            pair.stub_call(f"/_stub/inject?pods={pods}", "POST")
            want = (round_ + 1) * pods

            def all_running(stats: dict[str, Any], want: int = want) -> bool:
                return bool(stats["pods_running"] >= want)

            pair.wait_for(all_running, timeout, "injected pods Running")
            cpu, wall = pair.cpu() - c1, time.monotonic() - t1
            all_cpu.append(round(cpu, 2))
            net = max(0.0, cpu - idle_rate * wall)
            if best is None or cpu < best[0]:
                best = (cpu, net, wall)
        peak = _status_kib(pair.shard.pid, "VmHWM:")
    finally:
        pair.stop()
    assert best is not None
    return RunningCase(
        nodes=nodes,
        pods=pods,
        repeats=repeats,
        cpu_s=round(best[0], 2),
        cpu_net_s=round(best[1], 2),
        wall_s=round(best[2], 2),
        idle_cpu_percent=round(100 * idle_rate, 1),
        peak_rss_mib=round(peak / 1024, 1),
        all_cpu_s=all_cpu,
    )


def _scrape(
    nodes: int,
    pods: int,
    rounds: int,
    interval: float,
    connections: int,
    settle: float,
    timeout: float,
) -> ScrapeCase:
    import trustme

    ca = trustme.CA(organization_name="kubemock-fleet bench")
    workdir = Path(tempfile.mkdtemp(prefix="kubemock-fleet-bench-scrape-"))
    ca_file = workdir / "client-ca.crt"
    ca_file.write_bytes(ca.cert_pem.bytes())
    client = ca.issue_cert("metrics-server", common_name="system:metrics-server")
    cert, key = workdir / "client.crt", workdir / "client.key"
    cert.write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    key.write_bytes(client.private_key_pem.bytes())
    port = _free_port()
    pair = _Pair(
        nodes,
        pods,
        shard_config=(
            f"  kubeletApi: true\n  kubeletPort: {port}\n  kubeletBind: 127.0.0.1\n"
            f"  kubeletAddress: 127.0.0.1\n  kubeletClientCaFile: {ca_file}\n"
            # the stub serves no SubjectAccessReview: certificates alone, as "auto" would
            # decide against it (a real cluster's reviews are cached for 5 minutes)
            "  kubeletAuthorization: always-allow\n"
        ),
    )
    scraper: subprocess.Popen[str] | None = None
    try:
        pair.wait_for(
            lambda s: s["nodes_registered"] >= nodes and s["node_leases"] >= nodes,
            timeout,
            "nodes registered",
        )
        pair.wait_for(lambda s: s["pods_running"] >= pods, timeout, "pods Running")
        time.sleep(settle)
        # the idle window: as long as the scraped one, Leases only
        window = interval * (rounds - 1)
        late0 = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        pair.stub_call("/_stub/reset", "POST")
        c0, t0 = pair.cpu(), time.monotonic()
        time.sleep(window)
        c1, t1 = pair.cpu(), time.monotonic()
        idle = pair.stub_call("/_stub/stats")
        late1 = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        idle_rate = (c1 - c0) / (t1 - t0)
        scraper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._kubeletscrape",
                f"--port={port}",
                f"--nodes={nodes}",
                f"--cert={cert}",
                f"--key={key}",
                f"--interval={interval:g}",
                f"--rounds={rounds}",
                f"--connections={connections}",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert scraper.stdout is not None
        first = json.loads(scraper.stdout.readline())  # TLS handshakes: not steady state
        pair.stub_call("/_stub/reset", "POST")
        late2 = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        c2, t2 = pair.cpu(), time.monotonic()
        later = [json.loads(line) for line in scraper.stdout]
        scraper.wait(timeout=60)
        c3, t3 = pair.cpu(), time.monotonic()
        scraped = pair.stub_call("/_stub/stats")
        late3 = pair.shard_metric("kubemock_fleet_lease_renewals_late_total")
        peak = _status_kib(pair.shard.pid, "VmHWM:")
        load = os.getloadavg()
    finally:
        if scraper is not None:
            if scraper.poll() is None:
                scraper.kill()
                scraper.wait()
            if scraper.stdout is not None:
                scraper.stdout.close()
        pair.stop()
    rows = [first, *later]
    steady_rounds = len(later)
    cpu = c3 - c2
    net = max(0.0, cpu - idle_rate * (t3 - t2))
    ok = sum(r["ok"] for r in later)
    return ScrapeCase(
        nodes=nodes,
        pods=pods,
        interval_s=interval,
        rounds=rounds,
        connections=connections,
        idle_cpu_percent=round(100 * idle_rate, 1),
        scrape_cpu_percent=round(100 * cpu / (t3 - t2), 1),
        cpu_per_scrape_s=round(net / max(steady_rounds, 1), 2),
        cpu_per_request_ms=round(1000 * net / max(ok, 1), 3),
        round_wall_s=tuple(r["wall_s"] for r in rows),
        bytes_per_node=int(sum(r["bytes"] for r in later) / max(ok, 1)),
        failed=sum(r["failed"] for r in rows),
        client_cpu_s_per_round=round(
            sum(r["client_cpu_s"] for r in later) / max(steady_rounds, 1), 2
        ),
        renewals_idle=idle["renewals"],
        late_idle_shard=int(late1 - late0),
        lateness_max_idle_s=round(idle["lateness_max_s"], 3),
        renewals_scraped=scraped["renewals"],
        late_scraped_shard=int(late3 - late2),
        late_scraped_stub=scraped["renewals_late_2s"],
        lateness_max_scraped_s=round(scraped["lateness_max_s"], 3),
        lateness_p99_scraped_s=round(scraped["lateness_p99_s"], 3),
        peak_rss_mib=round(peak / 1024, 1),
        loadavg=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
    )


def run(
    *,
    nodes: int = 10_000,
    pods: int = 100_000,
    duration: float = 600.0,
    settle: float = 20.0,
    running_nodes: int = 1_000,
    running_pods: int = 10_000,
    repeats: int = 3,
    scrape_rounds: int = 9,
    scrape_interval: float = METRIC_RESOLUTION,
    scrape_connections: int = 64,
    cases: tuple[str, ...] = ("steady", "running"),
    timeout: float = 1800.0,
    progress: Callable[[str], None] | None = None,
    traffic_profile: str = "lean",
    policy: Path | None = None,
) -> BenchResult:
    """Run the chosen cases, each against its own stub and shard processes.

    ``progress`` is told of each case as it starts, with how long it measures.
    ``traffic_profile`` is every case's shard's; ``policy`` a file of MockStatus objects
    the stub lists (:func:`load_policy`; ``scrape`` lists none).
    """
    if pods < 1 or nodes < 1 or running_pods < 1 or running_nodes < 1 or repeats < 1:
        raise ValueError("bench shard: nodes, pods and repeats must be >= 1")
    if traffic_profile not in TRAFFIC_PROFILES:
        raise ValueError(f"bench shard: no traffic profile {traffic_profile!r}")
    policies = None if policy is None else load_policy(policy)
    say = progress if progress is not None else (lambda _: None)
    steady = None
    if "steady" in cases:
        say(
            f"steady: {nodes:,} nodes, {pods:,} pods: start-up, then {duration:g} s measured "
            f"(until about {time.strftime('%H:%M:%S', time.localtime(time.time() + duration))} "
            "plus start-up)"
        )
        steady = _steady(nodes, pods, duration, settle, timeout, traffic_profile, policies)
    running = None
    if "running" in cases:
        say(
            f"running: {running_pods:,} pods bound -> Running on {running_nodes:,} nodes, {repeats} times"
        )
        running = _running(
            running_nodes,
            running_pods,
            repeats,
            min(settle, 15.0),
            timeout,
            traffic_profile,
            policies,
        )
    scrape = None
    if "scrape" in cases:
        say(
            f"scrape: {nodes:,} nodes, {pods:,} pods: {scrape_rounds} rounds of /metrics/resource "
            f"every {scrape_interval:g} s, after as long a window without"
        )
        scrape = _scrape(
            nodes, pods, scrape_rounds, scrape_interval, scrape_connections, settle, timeout
        )
    load = os.getloadavg()
    return BenchResult(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        python=platform.python_version(),
        command=(
            f"kubemock-fleet bench shard-scrape --nodes {nodes} --pods {pods} "
            f"--duration {scrape_interval * (scrape_rounds - 1):g}"
            + (
                ""
                if scrape_interval == METRIC_RESOLUTION
                else f" --scrape-interval {scrape_interval:g}"
            )
            if cases == ("scrape",)
            else f"kubemock-fleet bench shard --nodes {nodes} --pods {pods} --duration {duration:g}"
            + (f" --traffic-profile {traffic_profile}" if traffic_profile != "lean" else "")
            + (f" --policy {policy}" if policy is not None else "")
        ),
        load=f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end",
        steady=steady,
        running=running,
        scrape=scrape,
        traffic_profile=traffic_profile,
        policy=None if policy is None else str(policy),
    )


def format_report(result: BenchResult) -> str:
    """Markdown rows: the figures against the shard's targets."""
    lines = ["| figure | measured | target |", "|---|---|---|"]
    lines.append(
        f"| traffic profile{' / policy' if result.policy else ''} | `{result.traffic_profile}`"
        + (f" / {result.policy}" if result.policy else "")
        + " | |"
    )
    s = result.steady
    if s is not None:
        lines += [
            f"| nodes registered (from shard start) | {s.registered_s:.1f} s, {s.registered_cpu_s:.1f} s CPU | |",
            f"| all {s.pods:,} pods Running (from shard start) | {s.running_s:.1f} s, {s.running_cpu_s:.1f} s CPU | |",
            f"| steady CPU ({s.nodes:,} nodes, {s.pods:,} pods, {s.duration_s:.0f} s) | {s.cpu_percent:.1f} % "
            f"(busiest 10 s: {s.cpu_percent_max_10s:.1f} %) | <= 30 % |",
            f"| RSS end / peak | {s.rss_mib:.0f} / {s.peak_rss_mib:.0f} MiB | <= 500 MB |",
            f"| Lease renewals > 2 s late (stub / shard) | {s.renewals_late_stub} / {s.renewals_late_shard}"
            f" of {s.renewals:,}; missed {s.renewals_missed_shard} | 0 |",
            f"| Lease lateness max / p99 (stub) | {s.lateness_max_s:.2f} / {s.lateness_p99_s:.2f} s | <= 2 s |",
            f"| writes/s | {s.writes_per_s:,.0f} | |",
            f"| shard sockets end / max (stub connections) | {s.sockets:,} / {s.sockets_max:,} "
            f"({', '.join(f'{k} {v:,}' for k, v in s.stub_connections.items())}) | |",
        ]
        if s.per_node_per_minute:
            rates = ", ".join(f"{k} {v:g}" for k, v in s.per_node_per_minute.items() if v)
            lines.append(f"| stub requests per node per minute (steady) | {rates} | |")
        lines.append(
            f"| Lease renewals > 2 s late during start-up (shard) | {s.renewals_late_startup_shard:,} | 0 |"
        )
        for when, lane, stub in (
            ("start-up", s.lane_startup, s.stub_startup),
            ("steady", s.lane_steady, s.stub_steady),
        ):
            for stage in ("due_to_sent", "sent_to_answered"):
                row = lane.get(stage)
                if row:
                    lines.append(
                        f"| lane {stage} ({when}): mean / p99 <= / > 1 s / > 2 s | "
                        f"{row['mean_s']:.3f} / {row['p99_le_s']:g} s / {row['over_1s']:,.0f} / "
                        f"{row['over_2s']:,.0f} of {row['count']:,.0f} | |"
                    )
            if stub:
                lines.append(
                    f"| stub ({when}): busy / longest stall / stalled | "
                    f"{100 * stub['busy_fraction']:.0f} % / {stub['stall_max_s']:.2f} s / "
                    f"{stub['stalled_s']:.1f} s | |"
                )
    r = result.running
    if r is not None:
        lines.append(
            f"| {r.pods:,} pods bound -> Running ({r.nodes:,} nodes, min of {r.repeats}) | "
            f"{r.cpu_s:.2f} s CPU ({r.cpu_net_s:.2f} s net of Leases), {r.wall_s:.1f} s wall | <= 10 s CPU |"
        )
    c = result.scrape
    if c is not None:
        walls = ", ".join(f"{w:.1f}" for w in c.round_wall_s)
        lines += [
            f"| scrape of {c.nodes:,} nodes' /metrics/resource ({c.pods:,} pods), shard CPU net of "
            f"Leases | **{c.cpu_per_scrape_s:.2f} s** a round ({c.cpu_per_request_ms:.3f} ms a node, "
            f"{c.bytes_per_node:,} B) | |",
            f"| shard CPU, every {c.interval_s:g} s scraped / not | {c.scrape_cpu_percent:.1f} % / "
            f"{c.idle_cpu_percent:.1f} % of a core | <= 30 % |",
            f"| round wall (first has the TLS handshakes, {c.connections} connections) | {walls} s | "
            f"< {c.interval_s:g} s |",
            f"| Lease renewals > 2 s late, scraped (shard / stub) | {c.late_scraped_shard} / "
            f"{c.late_scraped_stub} of {c.renewals_scraped:,}; max {c.lateness_max_scraped_s:.2f} s, "
            f"p99 {c.lateness_p99_scraped_s:.2f} s | 0 |",
            f"| the same, not scraped (shard) | {c.late_idle_shard} of {c.renewals_idle:,}; max "
            f"{c.lateness_max_idle_s:.2f} s | 0 |",
            f"| failed requests / scraper CPU a round / shard peak RSS | {c.failed} / "
            f"{c.client_cpu_s_per_round:.2f} s / {c.peak_rss_mib:.0f} MiB | 0 / / <= 500 MB |",
        ]
    return "\n".join(lines)
