"""Waiting for a process we started to answer its readiness endpoint.

A child apiserver (the sandbox as ``up``'s child, kube-apiserver and etcd of
``fleet.realcp``) says nothing when it is ready but by answering: it is polled.
:func:`wait_ready` is that poll, once: a :data:`Probe` every ``interval`` seconds
until it answers ready; a liveness check before each probe, so a child that died
fails at once rather than at the deadline; at ``deadline`` (trio's clock, which
tests replace with the autojump clock) the probe in flight is cancelled and the
caller's ``fail`` turns the last answer into the error it raises (naming the
component and quoting its log).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

__all__ = ["NO_ANSWER", "Probe", "wait_ready"]

Probe = Callable[[], Awaitable[str | None]]
"""One readiness check: None when ready, else what was answered (``HTTP 503: ...``,
``ConnectError: ...``), quoted if it is the last before the deadline."""
NO_ANSWER = "no answer"
"""The last answer when the deadline came before any probe finished."""


async def wait_ready(
    probe: Probe,
    *,
    deadline: float,
    interval: float,
    fail: Callable[[str], BaseException],
    alive: Callable[[], None] | None = None,
) -> None:
    """Probe until ready; ``alive`` (raises when the process died) before each probe;
    ``fail(last answer)`` raised at ``deadline`` (``trio.current_time()`` terms)."""
    last = NO_ANSWER
    with trio.move_on_at(deadline):
        while True:
            if alive is not None:
                alive()
            answer = await probe()
            if answer is None:
                return
            last = answer
            await trio.sleep(interval)
    raise fail(last)
