"""One live ``up`` per kubeconfig: a lock file beside it, held while ``up`` runs.

Two ``up`` in one directory used to write the same kubeconfig, the second over
the first, so the first terminal's kubectl talked to the wrong cluster. Now
``up`` takes an exclusive ``flock`` on ``<kubeconfig>.lock`` before it writes
anything and keeps it until it exits; the kernel drops the lock when the
process dies, however it dies, so a stale file never blocks a new ``up``. A
second ``up`` for the same kubeconfig finds the lock held and stops with one
line naming the holder's pid and how to run another cluster (``--name``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fleet.errors import ConfigError

__all__ = ["claim_kubeconfig", "lock_path"]


def lock_path(kubeconfig: Path) -> Path:
    """The lock file of ``kubeconfig``: beside it, ``<name>.lock``."""
    return kubeconfig.with_name(kubeconfig.name + ".lock")


@contextlib.contextmanager
def claim_kubeconfig(kubeconfig: Path) -> Iterator[None]:
    """Hold ``kubeconfig`` for this process; :class:`ConfigError` when a live ``up`` holds it."""
    path = lock_path(kubeconfig)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the lock file ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ConfigError(
                f"{kubeconfig}: in use by a running `kubemock-fleet up` (pid {holder}); "
                "stop it, or pass --name NAME to run another cluster beside it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)  # still locked: no other `up` holds it between unlink and close
    finally:
        os.close(fd)
