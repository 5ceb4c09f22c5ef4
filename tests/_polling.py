"""Waiting in real time for an apiserver to show something (cross-process tests).

In-process tests use the autojump clock instead; this is for tests whose other side is
another process (a real kube-apiserver, its controllers): they poll, with a bound.

    node = await eventually("the node Ready", 30, lambda: ready_node(client))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["POLL_INTERVAL", "eventually"]

POLL_INTERVAL = 0.1
"""Seconds between two looks: a tenth of a second costs a local apiserver nothing."""


async def eventually(
    what: str, within: float, check: Callable[[], Awaitable[Any]], *, every: float = POLL_INTERVAL
) -> Any:
    """The first truthy answer of ``check()``, polled every ``every`` seconds; an
    AssertionError saying ``what`` did not come when ``within`` seconds pass first."""
    try:
        with trio.fail_after(within):
            while True:
                got = await check()
                if got:
                    return got
                await trio.sleep(every)
    except trio.TooSlowError:
        raise AssertionError(f"{what}: not within {within:g} s") from None
