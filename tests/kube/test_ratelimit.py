"""Token bucket: burst at once, then exactly 1/qps apart, FIFO, reservations returned on cancel."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from fleet.errors import ConfigError
from fleet.kube._ratelimit import TokenBucket
from tests._busy import Spinner


async def test_n_acquires_take_n_minus_burst_over_qps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(qps=10.0, burst=5)
    start = trio.current_time()
    times: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        times.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(25):
            nursery.start_soon(take)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.1 * i for i in range(1, 21)])
    assert max(times) == pytest.approx((25 - 5) / 10.0)
    assert bucket.statistics().acquired == 25


async def test_sequential_acquires_are_fifo_and_exact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(qps=2.0, burst=1)
    start = trio.current_time()
    for i in range(4):
        await bucket.acquire()
        assert trio.current_time() - start == pytest.approx(0.5 * i)


async def test_tokens_bank_up_to_burst_only(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(qps=100.0, burst=3)
    await bucket.acquire()
    await trio.sleep(1000.0)
    assert bucket.statistics().tokens == pytest.approx(3.0)
    start = trio.current_time()
    for _ in range(3):
        await bucket.acquire()
    assert trio.current_time() == start
    await bucket.acquire()
    assert trio.current_time() - start == pytest.approx(0.01)


async def test_cancelled_waiter_gives_its_token_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(qps=1.0, burst=1)
    await bucket.acquire()  # empty now
    start = trio.current_time()
    with trio.move_on_after(0.5):
        await bucket.acquire()  # reserved the token due at +1.0, then cancelled
    assert bucket.statistics().waiting == 0
    await bucket.acquire()  # gets that token at +1.0, not +2.0
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_waiting_is_observable(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(qps=1.0, burst=1)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(bucket.acquire)
        await trio.sleep(0.25)
        stats = bucket.statistics()
        assert stats.waiting == 2
        assert stats.tokens == pytest.approx(-1.75)


def test_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        TokenBucket(qps=0.0, burst=1)
    with pytest.raises(ConfigError):
        TokenBucket(qps=1.0, burst=0)


async def test_a_batch_takes_its_tokens_in_one_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A batch waits one scheduler round for tokens banked (not one per request), and
    exactly until its last token when the bank is short."""
    bucket = TokenBucket(qps=10.0, burst=50)
    spinner = Spinner()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spinner.spin)
        await trio.lowlevel.checkpoint()
        before = spinner.rounds
        await bucket.acquire(40)
        assert spinner.rounds - before <= 2
        nursery.cancel_scope.cancel()  # a busy loop would keep the mock clock still
    start = trio.current_time()
    await bucket.acquire(20)  # 10 banked, 10 more at 10 a second
    assert trio.current_time() - start == pytest.approx(1.0)
    assert bucket.statistics().acquired == 60


async def test_a_cancelled_batch_gives_all_its_tokens_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = TokenBucket(qps=10.0, burst=5)
    with trio.move_on_after(0.5):
        await bucket.acquire(30)  # 25 short: 2.5 s
    stats = bucket.statistics()
    assert stats.acquired == 0
    assert stats.tokens == pytest.approx(5.0)
