"""The shard's keyed delaying queue (shards._timers), under trio's autojump clock."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from shards._timers import LEASE_RENEW_JITTER, DelayQueue, TimerLanes, jitter, spread
from tests._busy import Spinner


async def collect(
    queue: DelayQueue[str], count: int, nursery: trio.Nursery, buffer: int = 16
) -> list[tuple[str, float]]:
    send, receive = trio.open_memory_channel[str](buffer)
    await nursery.start(queue.run, send)
    got: list[tuple[str, float]] = []
    async with receive:
        async for key in receive:
            got.append((key, trio.current_time()))
            if len(got) == count:
                break
    return got


async def test_delivers_in_due_order_at_due_times(autojump_clock: trio.testing.MockClock) -> None:
    queue: DelayQueue[str] = DelayQueue()
    queue.schedule("c", 3.0)
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    async with trio.open_nursery() as nursery:
        got = await collect(queue, 3, nursery)
        nursery.cancel_scope.cancel()
    assert got == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert len(queue) == 0


async def test_schedule_replaces_the_keys_timer(autojump_clock: trio.testing.MockClock) -> None:
    queue: DelayQueue[str] = DelayQueue()
    queue.schedule("a", 5.0)
    queue.schedule("a", 2.0)  # earlier replaces later
    queue.schedule("b", 1.0)
    queue.schedule("b", 4.0)  # later replaces earlier
    assert queue.due_time("a") == 2.0
    assert len(queue) == 2
    async with trio.open_nursery() as nursery:
        got = await collect(queue, 2, nursery)
        await trio.sleep(10.0)  # nothing else arrives
        assert queue.statistics().delivered == 2
        nursery.cancel_scope.cancel()
    assert got == [("a", 2.0), ("b", 4.0)]


async def test_cancel(autojump_clock: trio.testing.MockClock) -> None:
    queue: DelayQueue[str] = DelayQueue()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    assert queue.cancel("a") is True
    assert queue.cancel("a") is False
    assert "a" not in queue and "b" in queue
    async with trio.open_nursery() as nursery:
        got = await collect(queue, 1, nursery)
        nursery.cancel_scope.cancel()
    assert got == [("b", 2.0)]


async def test_earlier_timer_wakes_a_sleeping_runner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue: DelayQueue[str] = DelayQueue()
    queue.schedule("late", 100.0)
    seen: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run, lambda key: seen.append((key, trio.current_time())))
        await trio.sleep(1.0)
        queue.schedule_in("soon", 2.0)  # runner sleeps until 100: must wake for 3.0
        await trio.sleep(0.5)
        queue.schedule("empty-then", 50.0)
        await trio.sleep(200.0)
        nursery.cancel_scope.cancel()
    assert seen == [("soon", 3.0), ("empty-then", 50.0), ("late", 100.0)]


async def test_runner_waits_on_an_empty_queue(autojump_clock: trio.testing.MockClock) -> None:
    queue: DelayQueue[str] = DelayQueue()
    seen: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run, lambda key: seen.append((key, trio.current_time())))
        await trio.sleep(7.0)
        queue.schedule("x", 9.0)
        await trio.sleep(5.0)
        nursery.cancel_scope.cancel()
    assert seen == [("x", 9.0)]


async def test_ten_thousand_timers_fire_at_their_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(7)
    queue: DelayQueue[int] = DelayQueue()
    due = {i: round(rng.uniform(0.0, 10.0), 3) for i in range(10_000)}
    for key, when in due.items():
        queue.schedule(key, when)
    # replace a tenth of them, cancel another tenth
    for key in range(0, 10_000, 10):
        due[key] = due[key] + 5.0
        queue.schedule(key, due[key])
    for key in range(5, 10_000, 10):
        queue.cancel(key)
        del due[key]
    got: list[tuple[int, float]] = []
    send, receive = trio.open_memory_channel[int](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run, send)
        async with receive:
            async for key in receive:
                got.append((key, trio.current_time()))
                if len(got) == len(due):
                    break
        nursery.cancel_scope.cancel()
    assert len(got) == 9_000
    assert sorted(key for key, _ in got) == sorted(due)
    assert all(at == due[key] for key, at in got)
    times = [at for _, at in got]
    assert times == sorted(times)
    stats = queue.statistics()
    assert (stats.size, stats.delivered, stats.late, stats.max_lateness) == (0, 9_000, 0, 0.0)


async def test_backpressure_shows_as_lateness(autojump_clock: trio.testing.MockClock) -> None:
    queue: DelayQueue[str] = DelayQueue(late_after=2.0)
    for key in ("a", "b", "c"):
        queue.schedule(key, 1.0)
    received: list[tuple[str, float]] = []
    send, receive = trio.open_memory_channel[str](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run, send)
        async with receive:
            async for key in receive:
                received.append((key, trio.current_time()))
                if len(received) == 3:
                    break
                await trio.sleep(1.5)  # a slow worker
        stats = queue.statistics()
        nursery.cancel_scope.cancel()
    assert received == [("a", 1.0), ("b", 2.5), ("c", 4.0)]
    assert stats.delivered == 3
    assert stats.max_lateness == pytest.approx(3.0)
    assert stats.late == 1  # only c was more than 2 s late


def test_statistics_backlog_and_stale_entries() -> None:
    now = [0.0]
    queue: DelayQueue[str] = DelayQueue(clock=lambda: now[0])
    for i in range(10):
        queue.schedule(f"k{i}", float(i))
    queue.cancel("k1")
    queue.schedule("k2", 20.0)  # replaced: its old entry is stale
    now[0] = 4.5
    stats = queue.statistics()
    assert stats.size == 9
    assert stats.heap_entries == 11
    assert stats.due_backlog == 3  # k0, k3, k4
    assert stats.next_due == 0.0
    assert queue.pop_due() == [("k0", 0.0), ("k3", 3.0), ("k4", 4.0)]
    after = queue.statistics()
    assert (after.due_backlog, after.size, after.next_due) == (0, 6, 5.0)


def test_stale_entries_are_compacted() -> None:
    queue: DelayQueue[str] = DelayQueue(clock=lambda: 0.0)
    for i in range(20_000):
        queue.schedule("same", float(i))
    stats = queue.statistics()
    assert stats.size == 1
    assert stats.heap_entries <= 2 * 1 + 1024 + 1
    assert queue.pop_due(1e9) == [("same", 19_999.0)]


def test_jitter_and_spread() -> None:
    rng = random.Random(3)
    values = [jitter(10.0, rng=rng) for _ in range(1000)]
    assert all(10.0 <= v <= 10.0 * (1 + LEASE_RENEW_JITTER) for v in values)
    assert max(values) - min(values) > 0.3  # actually spread over the 0.4 s window
    assert jitter(10.0, 0.0) == 10.0
    offsets = [spread(10.0, rng) for _ in range(1000)]
    assert all(0.0 <= v < 10.0 for v in offsets)
    assert min(offsets) < 1.0 and max(offsets) > 9.0


async def test_due_keys_go_into_the_channels_room_without_a_round_each(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """``send`` per due key is a round of the event loop each: on a busy shard (rounds of
    tens of ms) 100,000 pods' timers came out at a few dozen a second."""
    queue: DelayQueue[str] = DelayQueue()
    send, receive = trio.open_memory_channel[str](1000)
    await nursery.start(queue.run, send)
    spinner = Spinner()

    now = trio.current_time()
    for i in range(500):
        queue.schedule(f"k{i}", now + 1.0)
    nursery.start_soon(spinner.spin)
    mock_clock.jump(2.0)
    before = spinner.rounds
    while receive.statistics().current_buffer_used < 500:
        await trio.lowlevel.checkpoint()
    assert spinner.rounds - before < 20, spinner.rounds - before
    # A full channel still holds the rest back (lateness shows).
    for i in range(800):
        queue.schedule(f"m{i}", now + 2.5)
    mock_clock.jump(1.0)
    while receive.statistics().current_buffer_used < 1000:
        await trio.lowlevel.checkpoint()
    assert receive.statistics().tasks_waiting_send == 1


async def test_a_lanes_backlog_does_not_hold_up_another_lane(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lanes: TimerLanes[str] = TimerLanes(
        ["slow", "quick"], lambda key: "slow" if key.startswith("s") else "quick"
    )
    for i in range(4):
        lanes.schedule(f"s{i}", 1.0)  # due first, each 1 s of work on the slow lane's one worker
    lanes.schedule("q", 1.5)
    assert "q" in lanes and "s0" in lanes and len(lanes) == 5
    assert lanes.due_time("q") == 1.5 and lanes.lane("q") is lanes.lanes["quick"]
    done: list[tuple[str, float]] = []

    async def worker(receive: trio.MemoryReceiveChannel[str], work: float) -> None:
        async for key in receive:
            await trio.sleep(work)
            done.append((key, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for name, work in (("slow", 1.0), ("quick", 0.0)):
            send, receive = trio.open_memory_channel[str](0)
            nursery.start_soon(worker, receive, work)
            await nursery.start(lanes.lanes[name].run, send)
        await trio.sleep(10)
        stats = lanes.statistics()
        nursery.cancel_scope.cancel()
    assert ("q", 1.5) in done  # at its time, not after the slow lane's 4 s
    assert [at for key, at in done if key.startswith("s")] == [2.0, 3.0, 4.0, 5.0]
    assert (stats.size, stats.delivered, stats.late) == (0, 5, 1)  # s3 handed over at 4.0
    assert stats.max_lateness == pytest.approx(3.0)
    assert lanes.cancel("q") is False and len(lanes) == 0
