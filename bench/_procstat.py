"""CPU and RSS of the processes on the machine under test, read from ``/proc`` (Linux).

The bench samples, at each timeline tick, the processes it started
(``roots`` and every descendant; with ``own_children`` every child of this
process: the shard children, ``up``'s control-plane child, and on a real
control plane etcd, kube-apiserver, kube-controller-manager and kube-scheduler)
and, with ``self_name``, its own process. Each process is named for what it
is (:func:`component_name`: the executable, or the ``kubemock-fleet``
command with a shard's id) and the figures are summed per name, so a report
shows the fleet's share of the machine beside the apiserver's: every
CPU-second the fleet and the bench spend is taken from the apiserver under
test.

CPU is cumulative (utime + stime), kept per pid at its highest reading so a
process that exits still counts; RSS is the sum over live processes, and the
peak of those sums is reported, per component and for the fleet (:attr:`pids`:
neither this process nor the control plane; it once summed kube-apiserver and
etcd in, 4.4 GB beside one shard's 162 MiB). On a system without ``/proc``
nothing is measured (None).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

__all__ = ["CONTROL_PLANE_COMPONENTS", "ProcessSampler", "child_pids", "component_name"]

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CONTROL_PLANE_COMPONENTS = frozenset(
    {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "control-plane",
        "sandbox",
    }
)
"""Components that are the cluster's control plane, not the fleet (``control-plane`` is
``up``'s child running the scheduler and controllers in Python, ``sandbox`` its sandbox
apiserver child)."""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in (_PROC / str(pid) / "task").iterdir():
            text = (task / "children").read_text()
            out.extend(int(x) for x in text.split())
    except OSError:
        pass
    return out


def child_pids() -> frozenset[int]:
    """This process's children now: taken before the bench starts its own, they are left
    out of its figures (a test session's real control plane is a child of pytest too)."""
    return frozenset(_children(os.getpid()))


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


def component_name(argv: list[str]) -> str:
    """What a process is, from its command line: a ``kubemock-fleet`` command (``python -m
    fleet shard --id 3`` → ``shard 3``, ``... control-plane`` → ``control-plane``), else the
    executable's name (``etcd``, ``kube-apiserver``)."""
    if not argv or not argv[0]:
        return "?"
    exe = os.path.basename(argv[0])
    args = argv[1:]
    if exe.startswith("python"):
        if args[:2] == ["-m", "fleet"]:
            args = args[2:]
        elif args and os.path.basename(args[0]) == "kubemock-fleet":
            args = args[1:]
        else:
            return exe
    elif exe != "kubemock-fleet":
        return exe
    if not args:
        return "kubemock-fleet"
    if args[0] == "shard" and "--id" in args[:-1]:
        return f"shard {args[args.index('--id') + 1]}"
    return args[0]


def _argv(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


class ProcessSampler:
    """Samples process trees: ``roots`` (pids the bench started), with ``own_children``
    every child process of this one at each sample (what ``up`` starts), and with
    ``self_name`` this process itself, under that name."""

    def __init__(
        self,
        roots: list[int],
        *,
        own_children: bool = False,
        self_name: str | None = None,
        not_ours: frozenset[int] = frozenset(),
    ) -> None:
        self.roots = list(roots)
        self.own_children = own_children
        self.not_ours = not_ours
        """Children (and their trees) that were running before the bench: not measured."""
        self.self_name = self_name
        self._cpu: dict[int, float] = {}
        self._baseline: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._peak_by_name: dict[str, int] = {}
        self._window_peak: dict[str, int] = {}
        self.peak_rss = 0
        """The peak of the fleet's summed RSS (the processes of :attr:`pids`)."""
        self.available = _PROC.is_dir()

    def sample(self) -> None:
        if not self.available:
            return
        total_rss = 0
        rss_by_name: dict[str, int] = defaultdict(int)
        me = os.getpid()
        children = _children(me) if self.own_children else []
        roots = self.roots + [pid for pid in children if pid not in self.not_ours]
        pids = _tree(roots)
        own_argv = _argv(me)
        if self.self_name is not None:
            pids.append(me)
        for pid in pids:
            got = _cpu_and_rss(pid)
            if got is None:
                continue
            cpu, rss = got
            if pid not in self._names:
                name = self.self_name if pid == me else None
                if name is None:
                    argv = _argv(pid)
                    if not argv or (pid != me and argv == own_argv):
                        continue  # exited (a zombie's is empty) or forked, not yet exec'd
                    name = component_name(argv)
                self._names[pid] = name
            self._baseline.setdefault(pid, cpu if not self._cpu else 0.0)
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), cpu)
            rss_by_name[self._names[pid]] += rss
            if self._fleet(pid):  # as :attr:`pids`: not the bench, not the control plane
                total_rss += rss
        for name, rss in rss_by_name.items():
            self._peak_by_name[name] = max(self._peak_by_name.get(name, 0), rss)
            self._window_peak[name] = max(self._window_peak.get(name, 0), rss)
        self.peak_rss = max(self.peak_rss, total_rss)

    def mark_window(self) -> None:
        """Start a window: :meth:`window_peaks` covers the samples from here on (the first
        taken now), e.g. a chaos scenario's disturbance and settling."""
        self._window_peak = {}
        self.sample()

    def window_peaks(self) -> dict[str, int]:
        """Per component, its peak RSS since :meth:`mark_window` (a last sample taken now);
        the whole run's without a mark."""
        self.sample()
        return dict(self._window_peak)

    def _fleet(self, pid: int) -> bool:
        """A pid of the fleet's own: not this process, not the control plane."""
        return pid != os.getpid() and self._names.get(pid) not in CONTROL_PLANE_COMPONENTS

    @property
    def pids(self) -> list[int]:
        """The fleet's processes seen (not this one, not the control plane's)."""
        return sorted(pid for pid in self._cpu if self._fleet(pid))

    @property
    def cpu_seconds(self) -> float:
        """The fleet's CPU since the first sample (processes born later count whole)."""
        return sum(
            cpu - self._baseline.get(pid, 0.0) for pid, cpu in self._cpu.items() if self._fleet(pid)
        )

    def totals(self) -> dict[str, float]:
        """Cumulative CPU-seconds per component, as last sampled (a process's whole life):
        the difference of two readings is what each component spent between them."""
        out: dict[str, float] = defaultdict(float)
        for pid, cpu in self._cpu.items():
            out[self._names[pid]] += cpu
        return dict(out)

    def usage(self) -> dict[str, tuple[list[int], float, int]]:
        """Per component: its pids, CPU-seconds since the first sample, peak RSS."""
        out: dict[str, tuple[list[int], float, int]] = {}
        for pid, cpu in sorted(self._cpu.items()):
            name = self._names[pid]
            pids, seconds, _ = out.get(name, ([], 0.0, 0))
            out[name] = (
                [*pids, pid],
                seconds + cpu - self._baseline.get(pid, 0.0),
                self._peak_by_name.get(name, 0),
            )
        return out
