"""CPU and RSS of the fleet's own processes, read from ``/proc`` (Linux).

The bench samples the processes it started (``kubemock-fleet run`` and every
descendant: the shard children) at each timeline tick. CPU is cumulative
(utime + stime), kept per pid at its highest reading so a shard that exits
still counts; RSS is the sum over live processes, and the peak of those sums
is reported. On a system without ``/proc`` nothing is measured (None).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ProcessSampler"]

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in (_PROC / str(pid) / "task").iterdir():
            text = (task / "children").read_text()
            out.extend(int(x) for x in text.split())
    except OSError:
        pass
    return out


def _tree(roots: list[int]) -> list[int]:
    seen: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(_children(pid))
    return seen


def _cpu_and_rss(pid: int) -> tuple[float, int] | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        status = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    # Fields after the command (which may hold spaces and parentheses) start at the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    return cpu, rss


class ProcessSampler:
    """Samples process trees: ``roots`` (pids the bench started), and with ``own_children``
    every child process of this one at each sample (the shard processes ``up`` starts)."""

    def __init__(self, roots: list[int], *, own_children: bool = False) -> None:
        self.roots = list(roots)
        self.own_children = own_children
        self._cpu: dict[int, float] = {}
        self._baseline: dict[int, float] = {}
        self.peak_rss = 0
        self.available = _PROC.is_dir()

    def sample(self) -> None:
        if not self.available:
            return
        total_rss = 0
        roots = self.roots + (_children(os.getpid()) if self.own_children else [])
        for pid in _tree(roots):
            got = _cpu_and_rss(pid)
            if got is None:
                continue
            cpu, rss = got
            self._baseline.setdefault(pid, cpu if not self._cpu else 0.0)
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), cpu)
            total_rss += rss
        self.peak_rss = max(self.peak_rss, total_rss)

    @property
    def pids(self) -> list[int]:
        return sorted(self._cpu)

    @property
    def cpu_seconds(self) -> float:
        """CPU used since the first sample (processes born later count whole)."""
        return sum(cpu - self._baseline.get(pid, 0.0) for pid, cpu in self._cpu.items())
