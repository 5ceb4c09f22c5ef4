"""Stopping a child (the sandbox under `up` and `bench`): SIGTERM, then SIGKILL said in one line (real processes, a
one-second grace)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import trio

from fleet.supervise import terminate_then_kill

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
OBEDIENT = "import time; print('up', flush=True); time.sleep(60)"


async def _run_then_cancel(code: str) -> trio.Process:
    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        await trio.run_process(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            check=False,
            deliver_cancel=partial(terminate_then_kill, grace=1.0, name="the child"),
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(run)
        assert process.stdout is not None
        await process.stdout.receive_some(16)  # its SIGTERM handling is in place
        nursery.cancel_scope.cancel()
    return process


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = trio.current_time()
    process = await _run_then_cancel(STUBBORN)
    assert process.returncode == -9
    # Not killed before its grace (trio's default kills at 5 s; an immediate kill is under
    # 1 s), and killed at all (an unbounded wait would hang until the test's timeout).
    assert 1.0 <= trio.current_time() - started < 10
    (line,) = [r.getMessage() for r in caplog.records if "after SIGTERM" in r.getMessage()]
    assert line.startswith("the child (pid ") and line.endswith("1 s after SIGTERM: killed")


async def test_a_child_stopping_on_sigterm_is_not_killed(caplog: pytest.LogCaptureFixture) -> None:
    process = await _run_then_cancel(OBEDIENT)
    assert process.returncode == -15
    assert not [r for r in caplog.records if "after SIGTERM" in r.getMessage()]
