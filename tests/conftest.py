"""Shared fixtures. pytest-trio runs in trio mode (pyproject), so async tests need no marker.

The sandbox apiserver, two ways:

- ``sandbox`` (async tests): a fresh sandbox on a free port in the test's own
  nursery; yields a :class:`fleet.sandbox.RunningSandbox` (``url``, ``token``,
  ``kubeconfig``, ``app``). It stops when the test ends.
- ``shared_sandbox`` (sync tests, e.g. kubectl in a subprocess): one sandbox per
  session, served by ``trio.run`` in a background thread; yields the same
  ``RunningSandbox``. Tests share it, so each should work in its own namespace.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox


@pytest.fixture
async def sandbox(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    settings = SandboxSettings(port=0, kubeconfig_out=tmp_path / "kubeconfig")
    running: RunningSandbox = await nursery.start(serve_sandbox, settings)
    yield running


@pytest.fixture(scope="session")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    kubeconfig = tmp_path_factory.mktemp("sandbox") / "kubeconfig"
    started: queue.Queue[RunningSandbox | BaseException] = queue.Queue(maxsize=1)
    stop: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    async def main() -> None:
        stop_event = trio.Event()
        stop.append((trio.lowlevel.current_trio_token(), stop_event))
        async with trio.open_nursery() as nursery:
            running = await nursery.start(
                serve_sandbox, SandboxSettings(port=0, kubeconfig_out=kubeconfig)
            )
            started.put(running)
            await stop_event.wait()
            nursery.cancel_scope.cancel()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the fixture, not lost in the thread
            if started.empty():
                started.put(exc)

    thread = threading.Thread(target=thread_main, name="shared-sandbox", daemon=True)
    thread.start()
    result = started.get(timeout=30)
    if isinstance(result, BaseException):
        raise result
    try:
        yield result
    finally:
        token, event = stop[0]
        trio.from_thread.run_sync(event.set, trio_token=token)
        thread.join(timeout=10)
