"""Supervising child processes: the shards of ``run`` and ``up``.

The supervisor (:class:`Supervisor`) starts each child with
``trio.run_process`` in its own session (so a terminal's Ctrl-C reaches the
children only through us, once, in order), reads its stdout and stderr pipes
as bytes, line by line, and writes every line to our own stdout or stderr
prefixed ``[shard K] ``. A child that exits while the fleet is running is
started again after a backoff of 0.5 s doubling to 30 s, forgotten after 60 s
of healthy running (:data:`RESTART_POLICY`). On :meth:`Supervisor.stop` the
signal is passed on to every child; the supervisor then waits up to
:data:`SHUTDOWN_GRACE` for them to exit before killing them.

The supervisor takes any command (the shard's is :func:`fleet.supervise.shard_command`),
so tests run a stand-in script.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TextIO

import trio

from fleet.kube import Backoff, BackoffPolicy

__all__ = [
    "MAX_LINE",
    "RESTART_POLICY",
    "SHUTDOWN_GRACE",
    "Sink",
    "Supervisor",
    "terminate_then_kill",
]

log = logging.getLogger(__name__)

RESTART_POLICY = BackoffPolicy(initial=0.5, factor=2.0, maximum=30.0, jitter=0.0, reset_after=60.0)
"""Restart delays of a crashed child: 0.5 s (a quick crash costs under a second), doubling to
30 s (a child that cannot start does not spin), reset after 60 s of healthy running."""
SHUTDOWN_GRACE = 10.0
"""Seconds children get to exit after the signal is passed on, then they are killed.
A shard stops driving its nodes and releases its Lease well within this."""
MAX_LINE = 64 * 1024
"""Longest output line passed on whole; a longer one is cut into pieces of this size."""

Sink = Callable[[bytes], None]
"""Where prefixed output lines go (each ends in a newline)."""


def _write_to(stream: TextIO) -> Sink:
    buffer = stream.buffer  # lines are passed on as bytes, as the children wrote them

    def write(line: bytes) -> None:
        buffer.write(line)
        buffer.flush()

    return write


@dataclass
class _Child:
    name: str
    command: Sequence[str]
    process: trio.Process | None = None
    starts: int = 0


class Supervisor:
    """Runs named child commands, restarting each when it exits, until :meth:`stop`.

    ``stdout``/``stderr`` receive each child's lines prefixed ``[<name>] ``;
    ``env`` is the children's environment (default: ours). ``clock`` drives the
    backoff's healthy-spell reset.
    """

    def __init__(
        self,
        children: Mapping[str, Sequence[str]],
        *,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        env: Mapping[str, str] | None = None,
        policy: BackoffPolicy = RESTART_POLICY,
        grace: float = SHUTDOWN_GRACE,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._children = [_Child(name, list(cmd)) for name, cmd in children.items()]
        self._stdout = stdout or _write_to(sys.stdout)
        self._stderr = stderr or _write_to(sys.stderr)
        self._env = dict(env) if env is not None else None
        self._policy = policy
        self._grace = grace
        self._clock = clock
        self._stopping = trio.Event()
        self._all_exited = trio.Event()
        self._active = len(self._children)

    @property
    def starts(self) -> dict[str, int]:
        """How many times each child has been started."""
        return {child.name: child.starts for child in self._children}

    def pids(self) -> dict[str, int]:
        """Pids of the children running now."""
        return {c.name: c.process.pid for c in self._children if c.process is not None}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every child until :meth:`stop` and all have exited (or been killed)."""
        async with trio.open_nursery() as nursery:
            for child in self._children:
                nursery.start_soon(self._keep_running, child)
            if not self._children:
                self._all_exited.set()
            task_status.started()
            await self._stopping.wait()
            with trio.move_on_after(self._grace):
                await self._all_exited.wait()
            nursery.cancel_scope.cancel()  # kills the stragglers (deliver_cancel)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Pass ``signum`` to every running child and stop restarting them."""
        self._stopping.set()
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                child.process.send_signal(signum)

    async def _keep_running(self, child: _Child) -> None:
        backoff = self._policy.start(clock=self._clock)
        try:
            while not self._stopping.is_set():
                code = await self._run_once(child, backoff)
                if self._stopping.is_set():
                    break
                delay = backoff.next_delay()
                self._note(child, f"exited with code {code}; restarting in {delay:.1f} s")
                with trio.move_on_after(delay):
                    await self._stopping.wait()
        finally:
            self._active -= 1
            if self._active == 0:
                self._all_exited.set()

    async def _run_once(self, child: _Child, backoff: Backoff) -> int:
        prefix = f"[{child.name}] ".encode()
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    child.command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    env=self._env,
                    start_new_session=True,
                    deliver_cancel=_kill,
                )
            )
            child.process = process
            child.starts += 1
            backoff.mark_healthy()
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(_pump, process.stdout, prefix, self._stdout)
            nursery.start_soon(_pump, process.stderr, prefix, self._stderr)
            try:
                return await process.wait()
            finally:
                child.process = None

    def _note(self, child: _Child, message: str) -> None:
        self._stderr(f"[run] {child.name} {message}\n".encode())


async def terminate_then_kill(process: trio.Process, *, grace: float, name: str) -> None:
    """Cancellation of a child as trio's default delivers it (SIGTERM, then SIGKILL), with
    ``grace`` seconds between and the kill said in one log line naming ``name``, not
    trio's RuntimeWarning on the terminal."""
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await process.wait()
        return
    log.warning(
        "%s (pid %d) was still running %g s after SIGTERM: killed", name, process.pid, grace
    )
    process.kill()


async def _kill(process: trio.Process) -> None:
    """Cancellation of a child: it has had its signal and its grace; kill it."""
    process.kill()


async def _pump(stream: trio.abc.ReceiveStream, prefix: bytes, sink: Sink) -> None:
    """Copy ``stream`` to ``sink`` line by line (split on b"\\n"), each line prefixed."""
    pending = bytearray()
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if 0 <= end < MAX_LINE:
                sink(prefix + bytes(pending[: end + 1]))
                del pending[: end + 1]
            elif len(pending) >= MAX_LINE:  # an over-long line: pass it on in pieces
                sink(prefix + bytes(pending[:MAX_LINE]) + b"\n")
                del pending[:MAX_LINE]
            else:
                break
    if pending:
        sink(prefix + bytes(pending) + b"\n")
