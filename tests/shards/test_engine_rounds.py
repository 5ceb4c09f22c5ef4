"""The engine's consumers take what is buffered without a round of the event loop each.

On a busy shard a round of trio's event loop is tens of ms (10,000 kubelet-profile
nodes: 60,000 watches), so a consumer that ``receive``\\ s once per item moves a few
dozen a second. Each test runs a task spinning beside the consumer (always something
else runnable, as on a busy shard) and counts its rounds.
"""

from __future__ import annotations

import random

import trio
import trio.testing

from fleet.kube import MemoryApiserver, WatchEvent
from shards import ShardEngine
from shards._context import TimerKey
from shards._pods import PodObject
from tests._busy import Spinner
from tests.shards.test_engine import settings

ITEMS = 300


def _engine() -> ShardEngine:
    return ShardEngine(
        settings(events=False),
        "0",
        control=MemoryApiserver(),
        wall=MemoryApiserver.wall,
        rng=random.Random(5),
    )


async def _rounds_to_take(nursery: trio.Nursery, taken: list[object]) -> int:
    """Rounds of the spinner until ``ITEMS`` were taken (given up after ten a item)."""
    spinner = Spinner()
    nursery.start_soon(spinner.spin)
    await trio.lowlevel.checkpoint()
    before = spinner.rounds
    while len(taken) < ITEMS and spinner.rounds - before < 10 * ITEMS:
        await trio.lowlevel.checkpoint()
    assert len(taken) == ITEMS
    return spinner.rounds - before


async def test_a_timer_worker_runs_the_timers_buffered_in_a_row(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    engine = _engine()
    taken: list[object] = []

    async def run_timer(timer: TimerKey) -> None:
        taken.append(timer)

    engine._run_timer = run_timer  # type: ignore[method-assign]
    send, receive = trio.open_memory_channel[TimerKey](ITEMS)
    for i in range(ITEMS):
        send.send_nowait(("pod", f"default/p{i}"))
    nursery.start_soon(engine._worker, receive)
    rounds = await _rounds_to_take(nursery, taken)
    assert rounds < ITEMS / 10, rounds


async def test_the_pod_consumer_takes_the_events_buffered_in_a_row(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    engine = _engine()
    taken: list[object] = []
    engine.pods.on_event = taken.append  # type: ignore[method-assign,assignment]
    send, receive = trio.open_memory_channel[WatchEvent[PodObject]](ITEMS)
    event = WatchEvent("ADDED", PodObject())
    for _ in range(ITEMS):
        send.send_nowait(event)
    nursery.start_soon(engine.pods._consume, receive)
    rounds = await _rounds_to_take(nursery, taken)
    assert rounds < ITEMS / 10, rounds
