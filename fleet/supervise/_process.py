"""What every long-running process of the fleet shares: its identity, its logging, its command line.

:func:`process_identity` is the holder identity a process writes into the
Leases it holds (``<role>@<host>/<pid>``); :func:`configure_logging` sets up
the one-line-per-record stderr log of the long-running commands;
:func:`shard_command` and :func:`control_plane_command` are the one place a
shard child's and a control-plane child's command lines are spelled.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "LOG_FORMAT",
    "configure_logging",
    "control_plane_command",
    "process_identity",
    "sandbox_command",
    "shard_command",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """INFO and up to stderr, one line per record, for the long-running commands.

    Without it only warnings reach stderr (Python's last-resort handler), so a
    shard's or the coordinator's progress (Lease acquired, CRs moved) is lost
    and ``run`` has nothing to prefix. httpx's one line per request stays quiet.
    A no-op when logging is already configured (an embedding program, pytest).
    """
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def process_identity(role: str) -> str:
    """``<role>@<host>/<pid>``: who holds a Lease, as client-go's leader election writes it."""
    return f"{role}@{socket.gethostname()}/{os.getpid()}"


def shard_command(
    shard: int,
    *,
    config: Path | None = None,
    kubeconfig: Path | None = None,
    context: str | None = None,
) -> list[str]:
    """The command line of shard ``shard``'s child process: the one place it is spelled."""
    command = [sys.executable, "-m", "fleet", "shard", "--id", str(shard)]
    if config is not None:
        command += ["--config", str(config)]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    if context is not None:
        command += ["--context", context]
    return command


def control_plane_command(kubeconfig: Path, *, disabled: Iterable[str] = ()) -> list[str]:
    """The command line of ``up``'s control-plane child (``kubemock-fleet control-plane``):
    the loops of :mod:`fleet.controlplane` except ``disabled``, against ``kubeconfig``."""
    command = [sys.executable, "-m", "fleet", "control-plane", "--kubeconfig", str(kubeconfig)]
    for name in sorted(disabled):
        command += ["--disable", name]
    return command


def sandbox_command(
    kubeconfig: Path, *, host: str, port: int, max_connections: int | None = None
) -> list[str]:
    """The command line of ``up``'s sandbox child (``kubemock-fleet sandbox``), writing its
    kubeconfig to ``kubeconfig``; ``max_connections``: its connection cap (None: its default)."""
    cap = [] if max_connections is None else ["--max-connections", str(max_connections)]
    return [
        sys.executable, "-m", "fleet", "sandbox",
        "--host", host, "--port", str(port), "--kubeconfig-out", str(kubeconfig), *cap,
    ]  # fmt: skip
