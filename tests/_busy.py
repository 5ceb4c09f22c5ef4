"""A busy event loop for tests: a task always runnable beside the code under test.

On a busy shard every ``await`` that checkpoints waits for the next round of trio's event
loop, and a round is tens of ms. :class:`Spinner` stands for the rest of the shard: it
runs once per round and counts them, so a test can tell how many rounds a piece of code
took (one per item, or one per batch). With it running the mock clock's autojump never
fires (something is always runnable): cancel it before sleeping.
"""

from __future__ import annotations

import trio

__all__ = ["Spinner"]


class Spinner:
    """Counts the rounds of the event loop while :meth:`spin` runs (in a nursery)."""

    def __init__(self) -> None:
        self.rounds = 0

    async def spin(self) -> None:
        while True:
            self.rounds += 1
            await trio.lowlevel.checkpoint()
