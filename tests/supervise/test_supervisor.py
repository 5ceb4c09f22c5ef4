"""The `run` supervisor with real child processes: prefixing, restart with backoff, signals."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from fleet.supervise import RESTART_POLICY, Supervisor, shard_command

# A stand-in shard: prints (one line split across writes, one on stderr), crashes on its
# first run (a marker file remembers), then runs until SIGTERM, which it reports and obeys.
CHILD = r"""
import os, signal, sys, time
marker = sys.argv[1]
def on_term(signum, frame):
    print("got signal", signum, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
sys.stdout.write("hello "); sys.stdout.flush(); time.sleep(0.05)
sys.stdout.write("world\nsecond line\n"); sys.stdout.flush()
print("to stderr", file=sys.stderr, flush=True)
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(3)
print("running", flush=True)
while True:
    time.sleep(0.1)
"""


class Lines:
    """A sink that records lines and wakes waiters on each one."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._changed = trio.Event()

    def __call__(self, line: bytes) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[list[bytes]], bool]) -> None:
        while not predicate(self.lines):
            await self._changed.wait()


def test_shard_command_is_one_function() -> None:
    command = shard_command(2, config=Path("f.yaml"), context="kind")
    assert command[:2] == [sys.executable, "-m"]
    assert command[2:] == ["fleet", "shard", "--id", "2", "--config", "f.yaml", "--context", "kind"]


def test_restart_policy_is_the_documented_one() -> None:
    backoff = RESTART_POLICY.start(clock=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


async def test_prefixes_restarts_and_passes_signals(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out_sink, err_sink = Lines(), Lines()
    out, err = out_sink.lines, err_sink.lines
    children = {
        f"shard {k}": [sys.executable, str(script), str(tmp_path / f"marker-{k}")] for k in (0, 1)
    }
    supervisor = Supervisor(children, stdout=out_sink, stderr=err_sink, grace=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with trio.fail_after(10):
            await out_sink.wait_until(
                lambda lines: sum(1 for line in lines if line.endswith(b"running\n")) == 2
            )
        assert supervisor.starts == {"shard 0": 2, "shard 1": 2}
        pids = supervisor.pids()
        supervisor.stop(signal.SIGTERM)
    assert set(pids) == {"shard 0", "shard 1"}
    for k in (0, 1):
        prefix = f"[shard {k}] ".encode()
        mine = [line for line in out if line.startswith(prefix)]
        # Each line whole, even when written in pieces; twice (crash, then restart).
        assert mine.count(prefix + b"hello world\n") == 2
        assert mine.count(prefix + b"second line\n") == 2
        assert prefix + b"running\n" in mine
        assert prefix + b"got signal 15\n" in mine  # SIGTERM passed on
        assert err.count(prefix + b"to stderr\n") == 2
        assert f"[run] shard {k} exited with code 3; restarting in 0.5 s\n".encode() in err
    # Everything on stdout is prefixed.
    assert all(line.startswith(b"[shard ") and line.endswith(b"\n") for line in out)


async def test_a_child_that_ignores_the_signal_is_killed_after_the_grace(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\nwhile True: time.sleep(0.1)\n"
    )
    out = Lines()
    supervisor = Supervisor(
        {"shard 0": [sys.executable, str(script)]}, stdout=out, stderr=out, grace=0.5
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        with trio.fail_after(10):
            await out.wait_until(lambda lines: b"[shard 0] up\n" in lines)
        stopped = trio.current_time()
        supervisor.stop()
    assert trio.current_time() - stopped < 3
    assert supervisor.pids() == {}
