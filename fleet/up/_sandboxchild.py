"""The sandbox apiserver as a child process of ``up`` (``kubemock-fleet sandbox``).

In ``up``'s own process the sandbox shares one core and one GIL with whatever
else runs there: at kwok-ci load the bench's client and trackers beside it took
that process to 100 % of a core and the bench saw pods Running late
(docs/performance.md). As a child it has a core of its own. What it gives up:
no status line (the sampler reads the in-process app), no kubelet API (the
kubelet client CA stays in the child's temporary directory) and no ``--data``.
"""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path

import trio

from fleet.errors import ComponentError, FleetError
from fleet.kube import Client, load_config
from fleet.supervise import sandbox_command, terminate_then_kill, wait_ready

__all__ = ["SANDBOX_START_TIMEOUT", "SANDBOX_STOP_GRACE", "serve_sandbox_child"]

SANDBOX_START_TIMEOUT = 30.0
"""Seconds the child may take to write its kubeconfig and answer ``/readyz`` (a Python
start and a TLS CA: about 2 s on a quiet machine)."""
POLL = 0.1
"""Seconds between readiness checks while it starts."""
SANDBOX_STOP_GRACE = 15.0
"""Seconds the child has after SIGTERM before it is killed. trio's default gives 5 and
warns with a RuntimeWarning on the bench's terminal: a sandbox holding a kwok-ci run's
objects, on a loaded machine, took longer than that to close its connections."""
LOG_TAIL = 2000
"""Characters of the child's log quoted when it fails."""


async def serve_sandbox_child(
    kubeconfig: Path,
    *,
    host: str,
    port: int,
    max_connections: int | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``kubemock-fleet sandbox`` until cancelled (then SIGTERM, as trio delivers it);
    report once it answers ``/readyz`` with the kubeconfig it wrote to ``kubeconfig``."""
    log_path = kubeconfig.with_name(kubeconfig.name + ".sandbox.log")
    # Readiness is the new file's, never a stale one's.
    await trio.Path(kubeconfig).unlink(missing_ok=True)
    with log_path.open("wb") as log_file:
        async with trio.open_nursery() as nursery:

            async def child(task_status: trio.TaskStatus[trio.Process]) -> None:
                done = await trio.run_process(
                    sandbox_command(
                        kubeconfig, host=host, port=port, max_connections=max_connections
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                    deliver_cancel=partial(
                        terminate_then_kill, grace=SANDBOX_STOP_GRACE, name="the sandbox child"
                    ),
                    task_status=task_status,
                )
                raise ComponentError(
                    f"the sandbox child exited with code {done.returncode}: {_tail(log_path)}"
                )

            await nursery.start(child)
            # The child dying raises in ``child`` and cancels the wait.
            await wait_ready(
                partial(_ready, kubeconfig),
                deadline=trio.current_time() + SANDBOX_START_TIMEOUT,
                interval=POLL,
                fail=lambda _last: ComponentError(
                    f"the sandbox child did not answer /readyz within {SANDBOX_START_TIMEOUT:g} s:"
                    f" {_tail(log_path)}"
                ),
            )
            task_status.started()


async def _ready(kubeconfig: Path) -> str | None:
    """A :data:`~fleet.supervise.Probe` of the child: None once it answers ``/readyz``."""
    if not await trio.Path(kubeconfig).exists():
        return "no kubeconfig yet"
    try:
        async with Client(load_config(kubeconfig)) as client:
            status = (await client.request("GET", "/readyz")).status
    except FleetError as exc:
        return f"{type(exc).__name__}: {exc}"  # half-written, or not listening yet
    return None if status == 200 else f"HTTP {status}"


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line for line in text[-LOG_TAIL:].splitlines() if line.strip())
