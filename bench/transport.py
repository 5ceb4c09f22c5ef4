"""Client micro-benchmark: CPU per small PATCH, httpx's pool against the hot-path transport.

What it answers: how much *client* CPU one Lease-renewal-sized PATCH costs
through each transport at 1, 16 and 64 requests in flight (DESIGN.md,
"Measured facts to design by"; docs/performance.md keeps the figures).

How, so that the figure means what it says:

- the server (:mod:`bench._httpserver`, a trivial keep-alive responder) runs in
  its own process, so its CPU is never counted;
- each case (client x in-flight level) runs in a fresh process
  (``python -m bench.transport --case ...``), so one case's heap, caches and
  imports never colour another's, and its peak RSS is its own;
- in-flight level N means N tasks each sending requests back to back, over a
  client allowed exactly N connections (httpx ``Limits`` and
  :class:`HotTransportSettings` alike), so neither side queues or churns
  connections;
- CPU is ``time.process_time()`` around the timed requests after a warm-up,
  divided by the request count; the reported figure is the minimum over
  repeats (the least-disturbed run), as msgspec's benchmarks do.

Entry points: :func:`run` (used by ``kubemock-fleet bench transport``) and
:func:`format_table`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import trio

from fleet.machinery import MERGE_PATCH

__all__ = [
    "ALL_CLIENTS",
    "CLIENTS",
    "PATCH_BODY",
    "PATCH_PATH",
    "BenchResult",
    "CaseResult",
    "format_table",
    "run",
]

Client = Literal["httpx", "hot", "h11"]
CLIENTS: tuple[Client, ...] = ("httpx", "hot")
"""The default comparison: the general client's library against the hot path."""
ALL_CLIENTS: tuple[Client, ...] = ("httpx", "hot", "h11")
"""``h11`` is the reference the hot path's hand-written framing was chosen against:
h11 on bare trio streams, one connection per in-flight task, no pool, no auth."""

PATCH_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-00001"
# A Lease renewal as a kubelet sends it: the whole spec, ~200 bytes of JSON.
PATCH_BODY = (
    b'{"metadata":{"resourceVersion":"123455"},"spec":{"holderIdentity":"node-00001",'
    b'"leaseDurationSeconds":40,"acquireTime":"2024-01-01T00:00:00.000000Z",'
    b'"renewTime":"2024-01-01T00:00:10.000000Z","leaseTransitions":0}}'
)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One client at one in-flight level."""

    client: str
    inflight: int
    requests: int
    """Requests per timed repeat."""
    cpu_us_per_request: float
    """Client process CPU (user + system) per request, minimum over repeats."""
    peak_rss_mib: float
    """Peak resident memory of the case's process."""
    wall_s: float
    """Wall time of the fastest repeat (for orientation; not a target)."""


@dataclass(frozen=True, slots=True)
class BenchResult:
    machine: str
    python: str
    command: str
    cases: list[CaseResult]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


async def _drive(send: Callable[[], Awaitable[None]], inflight: int, requests: int) -> None:
    per_task, extra = divmod(requests, inflight)

    async def worker(count: int) -> None:
        for _ in range(count):
            await send()

    async with trio.open_nursery() as nursery:
        for i in range(inflight):
            nursery.start_soon(worker, per_task + (1 if i < extra else 0))


async def _case(
    client: Client, port: int, inflight: int, requests: int, repeats: int
) -> CaseResult:
    best_cpu = best_wall = float("inf")
    server = f"http://127.0.0.1:{port}"

    async def measure(send: Callable[[], Awaitable[None]]) -> None:
        nonlocal best_cpu, best_wall
        await _drive(send, inflight, max(inflight, requests // 10))  # warm-up: connect, caches
        for _ in range(repeats):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await _drive(send, inflight, requests)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)

    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
        async with httpx.AsyncClient(base_url=server, limits=limits, trust_env=False) as http:
            headers = {"Content-Type": MERGE_PATCH}

            async def send_httpx() -> None:
                response = await http.patch(PATCH_PATH, content=PATCH_BODY, headers=headers)
                response.raise_for_status()

            await measure(send_httpx)
    elif client == "h11":
        import h11

        idle = []
        for _ in range(inflight):
            idle.append((await trio.open_tcp_stream("127.0.0.1", port), h11.Connection(h11.CLIENT)))
        request = h11.Request(
            method="PATCH",
            target=PATCH_PATH,
            headers=[
                ("Host", f"127.0.0.1:{port}"),
                ("Content-Type", MERGE_PATCH),
                ("Content-Length", str(len(PATCH_BODY))),
            ],
        )

        async def send_h11() -> None:
            # One connection per in-flight task: never empty, as tasks <= connections.
            stream, conn = idle.pop()
            data = conn.send(request) or b""
            data += (conn.send(h11.Data(data=PATCH_BODY)) or b"") + (
                conn.send(h11.EndOfMessage()) or b""
            )
            await stream.send_all(data)
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
            conn.start_next_cycle()
            idle.append((stream, conn))
            if status != 200:
                raise RuntimeError(f"h11 case: HTTP {status}")

        await measure(send_h11)
        for stream, _ in idle:
            await stream.aclose()
    else:
        from fleet.kube import ClusterConfig, HotTransport, HotTransportSettings

        settings = HotTransportSettings(connections=inflight)
        async with HotTransport(ClusterConfig(server=server), settings) as hot:

            async def send_hot() -> None:
                response = await hot.request(
                    "PATCH", PATCH_PATH, body=PATCH_BODY, content_type=MERGE_PATCH
                )
                response.raise_for_status()

            await measure(send_hot)
    rss_kib = _peak_rss_kib()
    return CaseResult(
        client=client,
        inflight=inflight,
        requests=requests,
        cpu_us_per_request=round(best_cpu / requests * 1e6, 1),
        peak_rss_mib=round(rss_kib / 1024, 1),
        wall_s=round(best_wall, 3),
    )


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB.

    ``VmHWM`` first: Linux carries ``ru_maxrss`` across ``execve``, so a case
    process would report its (bigger) parent's peak; ``VmHWM`` belongs to the
    new address space. ``ru_maxrss`` (KiB on Linux) where /proc is missing.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _start_server() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._httpserver"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        _stop_server(proc)
        raise RuntimeError("benchmark server did not start")
    return proc, int(line)


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run(
    *,
    requests: int = 5000,
    inflight: Sequence[int] = (1, 16, 64),
    repeats: int = 5,
    clients: Sequence[Client] = CLIENTS,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run every (client, in-flight) case in its own process against one server process.

    ``progress`` is told of each case as it starts (the whole run takes minutes).
    """
    server, port = _start_server()
    cases: list[CaseResult] = []
    total = len(clients) * len(inflight)
    try:
        for client in clients:
            for level in inflight:
                if progress is not None:
                    progress(
                        f"case {len(cases) + 1}/{total}: {client}, {level} in flight "
                        f"({repeats} x {requests} requests)"
                    )
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.transport",
                        "--case",
                        client,
                        "--port",
                        str(port),
                        "--inflight",
                        str(level),
                        "--requests",
                        str(requests),
                        "--repeats",
                        str(repeats),
                    ],
                    check=True,
                    capture_output=True,
                    stdin=subprocess.DEVNULL,
                )
                cases.append(CaseResult(**json.loads(out.stdout)))
    finally:
        _stop_server(server)
    return BenchResult(
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        python=platform.python_version(),
        command=(
            f"kubemock-fleet bench transport --requests {requests} --repeats {repeats} "
            + " ".join(f"--inflight {level}" for level in inflight)
            + "".join(f" --client {name}" for name in clients if tuple(clients) != CLIENTS)
        ),
        cases=cases,
    )


def format_table(result: BenchResult) -> str:
    """A Markdown table, one row per client, one column per in-flight level."""
    levels = sorted({case.inflight for case in result.cases})
    by_key = {(case.client, case.inflight): case for case in result.cases}
    clients = list(dict.fromkeys(case.client for case in result.cases))
    lines = [
        "| client | " + " | ".join(f"{level} in flight" for level in levels) + " | peak RSS |",
        "|---|" + "---|" * len(levels) + "---|",
    ]
    for client in clients:
        cells = []
        for level in levels:
            case = by_key.get((client, level))
            cells.append(f"{case.cpu_us_per_request:,.0f} µs" if case else "")
        rss = max(case.peak_rss_mib for case in result.cases if case.client == client)
        lines.append(f"| {client} | " + " | ".join(cells) + f" | {rss:.0f} MiB |")
    if "httpx" in clients and "hot" in clients:
        ratios = [
            f"{level}: {by_key[('httpx', level)].cpu_us_per_request / by_key[('hot', level)].cpu_us_per_request:.1f}x"
            for level in levels
            if ("httpx", level) in by_key and ("hot", level) in by_key
        ]
        lines.append("")
        lines.append("httpx / hot CPU per request, by in-flight level: " + ", ".join(ratios))
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> None:
    """One case, in this process; prints its CaseResult as JSON (used by :func:`run`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.transport")
    parser.add_argument("--case", choices=ALL_CLIENTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inflight", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args(argv)
    result = trio.run(_case, args.case, args.port, args.inflight, args.requests, args.repeats)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":  # pragma: no cover - run as a subprocess by run()
    _main()
