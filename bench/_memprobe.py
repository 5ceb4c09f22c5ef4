"""Where a shard's memory goes: RSS over its start-up, and what holds it (tracemalloc).

``python -m bench._memprobe --nodes N --pods M [--trace FRAMES]`` runs the
shard benchmark's pair (:mod:`bench.shard`: a stub apiserver and a real shard,
each in its own process), waits until every node is registered and every pod
Running, lets the shard settle, and reports the shard's peak RSS (and when in
its start-up it came), its RSS at the end, the object types it holds most of,
and how many of each of the fleet's own types. With ``--trace`` the shard runs under tracemalloc (FRAMES frames a trace;
several times slower) and the live allocations are reported by the line that
made them, largest first: the diagnosis behind the memory figures in
``docs/performance.md``. A diagnostic, not a benchmark: the figures of record
come from ``kubemock-fleet bench shard``.

The shard learns to answer through :func:`install`, which the probe runs in
the shard process before the CLI: on SIGUSR1 it writes what it holds to the
file named by ``KUBEMOCK_FLEET_MEMPROBE``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["install", "main", "probe"]

OUT_ENV = "KUBEMOCK_FLEET_MEMPROBE"
TRACE_ENV = "KUBEMOCK_FLEET_MEMPROBE_FRAMES"
_SAMPLE_EVERY = 0.5
"""Seconds between RSS samples of the shard."""
_OWN = ("shards.", "fleet.")
"""Modules whose objects are counted one by one (the rest: the most common types only)."""
_DUMP_TIMEOUT = 900.0
"""Seconds to wait for the shard's dump (a traced snapshot of 100,000 pods takes minutes)."""


def install() -> None:
    """In the shard process: start tracing if asked, and dump on SIGUSR1."""
    frames = int(os.environ.get(TRACE_ENV, "0") or 0)
    if frames:
        tracemalloc.start(frames)
    signal.signal(signal.SIGUSR1, _dump)


def _dump(signum: int, frame: FrameType | None) -> None:
    out = Path(os.environ[OUT_ENV])
    gc.collect()
    types = Counter(type(o) for o in gc.get_objects())
    report: dict[str, Any] = {
        "types": [(t.__name__, n) for t, n in types.most_common(15)],
        "own_types": sorted(
            ((t.__name__, n) for t, n in types.items() if _module_of(t).startswith(_OWN)),
            key=lambda tn: -tn[1],
        ),
        "lines": [],
        "traced_mib": None,
    }
    if tracemalloc.is_tracing():
        stats = tracemalloc.take_snapshot().statistics("lineno")
        report["traced_mib"] = round(sum(s.size for s in stats) / 2**20, 1)
        report["lines"] = [
            (
                f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                round(s.size / 2**20, 2),
                s.count,
            )
            for s in stats[:40]
        ]
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    partial.rename(out)


def _module_of(kind: type) -> str:
    module = vars(kind).get("__module__", "")  # a class attribute, not a descriptor's
    return module if isinstance(module, str) else ""


def probe(nodes: int, pods: int, *, frames: int = 0, settle: float = 20.0) -> dict[str, Any]:
    """Run the pair, and return the shard's memory report (see the module docstring)."""
    from bench import shard as bench_shard

    out = Path(tempfile.mkdtemp(prefix="kubemock-fleet-memprobe-")) / "report.json"
    pair = bench_shard._Pair(
        nodes,
        pods,
        shard_code="import bench._memprobe as p; p.install(); from fleet.cli import main; main()",
        shard_env={OUT_ENV: str(out), TRACE_ENV: str(frames)},
    )
    peak = {"kib": 0, "at_s": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set() and pair.shard.poll() is None:
            try:
                rss = bench_shard._status_kib(pair.shard.pid, "VmRSS:")
            except OSError:
                return
            if rss > peak["kib"]:
                peak.update(kib=rss, at_s=round(time.monotonic() - pair.started, 1))
            done.wait(_SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timeout = 3600.0
    try:
        pair.wait_for(
            lambda s: s["nodes_registered"] >= nodes and s["node_leases"] >= nodes,
            timeout,
            "nodes registered",
        )
        registered_s = round(time.monotonic() - pair.started, 1)
        pair.wait_for(lambda s: s["pods_running"] >= pods, timeout, "pods Running")
        running_s = round(time.monotonic() - pair.started, 1)
        time.sleep(settle)
        end_kib = bench_shard._status_kib(pair.shard.pid, "VmRSS:")
        os.kill(pair.shard.pid, signal.SIGUSR1)
        deadline = time.monotonic() + _DUMP_TIMEOUT
        while not out.exists():
            pair.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the shard did not write its memory report")
            time.sleep(0.5)
        report: dict[str, Any] = json.loads(out.read_text())
    finally:
        done.set()
        pair.stop()
    report.update(
        nodes=nodes,
        pods=pods,
        traced_frames=frames,
        registered_s=registered_s,
        running_s=running_s,
        peak_rss_mib=round(peak["kib"] / 1024, 1),
        peak_at_s=peak["at_s"],
        end_rss_mib=round(end_kib / 1024, 1),
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memprobe", description=__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--pods", type=int, required=True)
    parser.add_argument("--trace", type=int, default=0, metavar="FRAMES")
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    if args.nodes < 1 or args.pods < 1 or args.trace < 0 or args.settle < 0:
        parser.error("--nodes and --pods must be >= 1, --trace and --settle >= 0")
    report = probe(args.nodes, args.pods, frames=args.trace, settle=args.settle)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
