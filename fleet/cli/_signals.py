"""Run a composition root until SIGINT or SIGTERM: the one piece of process control the
long-running commands share (``shard``, ``coordinator``, ``control-plane``)."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["until_signal"]


async def until_signal(serve: Callable[..., Awaitable[Any]]) -> None:
    """Start ``serve`` (it takes ``task_status``), wait for SIGINT or SIGTERM, cancel it.

    Cancellation is the clean stop: a root releases what it holds on the way out (the
    coordinator's leader Lease, the shard's connections).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
