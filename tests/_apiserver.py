"""What the tests need to run against either apiserver: the sandbox or the real control plane.

Used by ``tests/conftest.py`` (the ``real_control_plane`` and ``apiserver`` fixtures)
and by tests that start things of their own.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.api import crd_manifests
from fleet.errors import AlreadyExists
from fleet.kube import Client, resource_path
from fleet.realcp import RunningControlPlane
from fleet.sandbox import RunningSandbox

REPO = Path(__file__).resolve().parent.parent
SHARED_BINARIES = REPO.parent / "shared" / "realk8s"
"""Where the real control plane's binaries are: ``../shared/realk8s`` beside the checkout."""
BINARIES_ENV = "KUBEMOCK_FLEET_BINARIES"
REAL_START_TIMEOUT = 180.0
"""Seconds the session's real control plane may take to start (9 s measured on 2 idle cores;
first use decompresses the binaries into the cache, and CI boxes are shared)."""
_unique = itertools.count()


def unique(base: str) -> str:
    """``base`` made unique in this session (``base-7``): names on the shared real apiserver."""
    return f"{base}-{next(_unique)}"


@dataclass(frozen=True)
class Apiserver:
    """The apiserver a test runs against: a fresh sandbox, or the session's real one."""

    kind: str
    """``sandbox`` or ``real``."""
    url: str
    kubeconfig: Path
    sandbox: RunningSandbox | None = None
    real: RunningControlPlane | None = None

    @property
    def is_real(self) -> bool:
        return self.kind == "real"


def missing_real_binaries() -> str | None:
    """Why the real control plane cannot run here (one line), or None when it can."""
    chosen = os.environ.get(BINARIES_ENV)
    directory = Path(chosen) if chosen else SHARED_BINARIES
    if (directory / "kube-apiserver").is_file() or (directory / "kube-apiserver.xz").is_file():
        return None
    return (
        f"real control plane: no kube-apiserver in {directory} "
        f"(set {BINARIES_ENV}=DIR, e.g. an envtest KUBEBUILDER_ASSETS)"
    )


def real_binaries() -> Path:
    """The binaries directory for the real control plane; skips (fails under CI) without one."""
    reason = missing_real_binaries()
    if reason is None:
        chosen = os.environ.get(BINARIES_ENV)
        return Path(chosen) if chosen else SHARED_BINARIES
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI=true needs it", pytrace=False)
    pytest.skip(reason)


def serve_in_thread(
    name: str,
    serve: Callable[..., Awaitable[None]],
    settings: Any,
    timeout: float,
    after_start: Callable[[Any], Awaitable[None]] | None = None,
) -> Iterator[Any]:
    """Run ``serve(settings)`` under ``trio.run`` in a thread; yield what it started, stop at exit."""
    started: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    async def main() -> None:
        stop_event = trio.Event()
        stop.append((trio.lowlevel.current_trio_token(), stop_event))
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve, settings)
            if after_start is not None:
                await after_start(running)
            started.put(running)
            await stop_event.wait()
            nursery.cancel_scope.cancel()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the fixture, not lost in the thread
            if started.empty():
                started.put(exc)

    thread = threading.Thread(target=thread_main, name=name, daemon=True)
    thread.start()
    result = started.get(timeout=timeout)
    if isinstance(result, BaseException):
        raise result
    try:
        yield result
    finally:
        token, event = stop[0]
        trio.from_thread.run_sync(event.set, trio_token=token)
        thread.join(timeout=30)


async def install_fleet_crds(client: Client) -> None:
    """The fleet's CRDs, created if absent, once each is Established (a real apiserver
    serves a CRD's resource only from then on)."""
    crds = resource_path("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    for crd in crd_manifests():
        try:
            await client.create(crds, crd)
        except AlreadyExists:
            pass
    with trio.fail_after(30):
        for crd in crd_manifests():
            while True:
                got = await client.get(f"{crds}/{crd['metadata']['name']}")
                conditions = (got.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                await trio.sleep(0.1)
