"""``kubemock-fleet bench``: what its command line does with signals."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


async def test_a_signal_cancels_the_scenario_alone_and_lets_its_cleanup_run() -> None:
    # Ctrl-C must not tear down the bench's own apiserver under the scenario's feet: the
    # signal cancels the scenario, its shielded cleanup runs, then the CLI exits 130.
    import os
    import signal

    import trio

    from fleet.cli._bench import _Interrupted, _until_signal

    started = trio.Event()
    cleaned_up: list[bool] = []

    async def scenario() -> None:
        try:
            started.set()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)  # the cleanup still gets to talk to the apiserver
                cleaned_up.append(True)

    async def interrupt() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGINT)

    interrupted = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupt)
            await _until_signal(scenario)
    except* _Interrupted:
        interrupted = True
    assert interrupted
    assert cleaned_up == [True]


async def test_a_scenario_that_ends_returns_its_result_and_installs_nothing_after() -> None:
    import signal

    from fleet.cli._bench import _until_signal

    async def scenario() -> str:
        return "report"

    before = signal.getsignal(signal.SIGINT)
    assert await _until_signal(scenario) == "report"
    assert signal.getsignal(signal.SIGINT) is before


def test_the_interrupted_line_says_what_the_cleanup_did(tmp_path: Path) -> None:
    """It once said "objects deleted; partial report in DIR" while 3,805 were left and DIR
    did not exist: the line now comes from the partial report, or says there is none."""
    import msgspec

    from bench import write_report
    from fleet.cli._bench import _interrupted
    from tests.bench.test_report import _report

    assert _interrupted(tmp_path / "none", "cafe") == (
        f"interrupted: no report was written to {tmp_path / 'none'}; "
        "objects of run cafe may be left"
    )
    base = msgspec.structs.replace(_report(), completed=False)
    cleanup = type(base.cleanup)
    for result, said in (
        (cleanup(deleted=10, leftover=0), "interrupted: 10 objects of run cafe deleted, none left"),
        (
            cleanup(deleted=7, leftover=3805, errors=("cleanup did not finish within 120 s",)),
            "interrupted: 7 objects of run cafe deleted, 3805 left (`kubectl delete ... -l "
            "bench.kubemock-fleet.io/run=cafe` deletes them)",
        ),
        (
            cleanup(deleted=0, leftover=0, state="running"),
            "interrupted in the cleanup, which wrote no outcome: objects of run cafe may be left",
        ),
    ):
        write_report(msgspec.structs.replace(base, cleanup=result), tmp_path / "report.json")
        assert _interrupted(tmp_path, "cafe") == f"{said}; partial report in {tmp_path}"
    # Steps done, the cleanup stopped by the signal: the report is whole, its cleanup is not.
    stopped = cleanup(deleted=5, leftover=2, errors=("the cleanup was interrupted (a signal)",))
    stopped = msgspec.structs.replace(stopped, state="interrupted")
    write_report(msgspec.structs.replace(_report(), cleanup=stopped), tmp_path / "report.json")
    assert _interrupted(tmp_path, "cafe") == (
        "interrupted in the cleanup: 5 objects of run cafe deleted, 2 left (`kubectl delete ... "
        f"-l bench.kubemock-fleet.io/run=cafe` deletes them); report in {tmp_path}"
    )


STARTUP_WAIT = 120.0
"""Seconds the bench may take to start kube-apiserver (binaries decompressed on a first run)."""
STOP_WAIT = 60.0
"""Seconds it may take to stop everything after SIGTERM (etcd and kube-apiserver get their
SIGTERM grace)."""


def _descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root`` (from /proc), with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            command = _command(pid)
            if command is not None:
                out[pid] = command
                todo.append(pid)
    return out


def _command(pid: int) -> str | None:
    """``pid``'s command line, or None when it is gone (or a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return None if state == "Z" else command


def test_sigterm_while_the_real_control_plane_starts_stops_all_it_started(tmp_path: Path) -> None:
    """``bench --control-plane real`` told to stop (SIGTERM) while kube-apiserver is starting:
    it exits 130 and leaves no process behind. Its components run in sessions of their own
    (a terminal's Ctrl-C reaches only the bench), so nothing but the bench stops them: it
    once died of the SIGTERM at once and left etcd and kube-apiserver running."""
    import signal
    import subprocess
    import sys
    import time

    from tests._apiserver import real_binaries

    binaries = real_binaries()
    command = [
        sys.executable, "-m", "fleet", "bench", "node-density", "--nodes", "1", "--shards", "0",
        "--control-plane", "real", "--binaries", str(binaries),
        "--no-progress", "--no-plots", "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    log = tmp_path / "bench.log"
    seen: dict[int, str] = {}
    with log.open("wb") as out:
        bench = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_WAIT
        while not any("kube-apiserver" in c for c in seen.values()):
            assert bench.poll() is None, f"the bench exited first: {log.read_text()}"
            assert time.monotonic() < deadline, f"no kube-apiserver started: {log.read_text()}"
            seen.update(_descendants(bench.pid))
            time.sleep(0.02)
        assert any("etcd" in c for c in seen.values()), seen
        bench.send_signal(signal.SIGTERM)
        code = bench.wait(timeout=STOP_WAIT)
        survivors = {pid: c for pid, c in seen.items() if _command(pid) == c}
        assert not survivors, f"left running: {survivors}"
        assert code == 130, log.read_text()
        assert "interrupted before the scenario started" in log.read_text()
    finally:
        for pid, c in seen.items():
            if _command(pid) == c:  # not another process that got the pid since
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if bench.poll() is None:
            bench.kill()
            bench.wait()
