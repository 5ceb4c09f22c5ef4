"""Backoff: client-go's reflector sequence, jitter, and the reset after a healthy spell."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from fleet.errors import ConfigError
from fleet.kube._backoff import Backoff, BackoffPolicy


class FixedRandom(random.Random):
    """``random()`` always returns ``value``: jitter becomes a known factor."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_sequence_doubles_from_0_8_and_caps_at_30() -> None:
    backoff = Backoff(rng=FixedRandom(0.0), clock=lambda: 0.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0])
    assert backoff.failures == 9


def test_jitter_adds_a_random_fraction_of_the_delay() -> None:
    backoff = Backoff(rng=FixedRandom(0.5), clock=lambda: 0.0)
    assert backoff.next_delay() == pytest.approx(0.8 * 1.5)
    assert backoff.next_delay() == pytest.approx(1.6 * 1.5)
    # client-go's jitter 1.0: at the cap, delays fall in [30, 60).
    capped = Backoff(rng=FixedRandom(0.999), clock=lambda: 0.0)
    for _ in range(10):
        last = capped.next_delay()
    assert 30.0 <= last < 60.0


def test_reset_forgets_failures() -> None:
    backoff = Backoff(rng=FixedRandom(0.0), clock=lambda: 0.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.8)


async def test_resets_after_two_healthy_minutes(autojump_clock: trio.testing.MockClock) -> None:
    backoff = Backoff(rng=FixedRandom(0.0))
    assert [backoff.next_delay() for _ in range(3)] == pytest.approx([0.8, 1.6, 3.2])
    backoff.mark_healthy()
    await trio.sleep(119.0)
    assert backoff.next_delay() == pytest.approx(6.4)  # 119 s is not 2 minutes
    backoff.mark_healthy()
    start = trio.current_time()
    await trio.sleep(60.0)
    backoff.mark_healthy()  # a later success keeps the spell's start
    await trio.sleep(60.0)
    assert backoff.healthy_since == start
    assert backoff.next_delay() == pytest.approx(0.8)
    assert backoff.healthy_since is None
    assert backoff.next_delay() == pytest.approx(1.6)


def test_policy_makes_states_and_validates() -> None:
    policy = BackoffPolicy(initial=0.5, maximum=2.0, jitter=0.0)
    state = policy.start(clock=lambda: 0.0)
    assert [state.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    with pytest.raises(ConfigError):
        BackoffPolicy(initial=0.0)
    with pytest.raises(ConfigError):
        BackoffPolicy(initial=5.0, maximum=1.0)
    with pytest.raises(ConfigError):
        BackoffPolicy(factor=0.5)
    with pytest.raises(ConfigError):
        BackoffPolicy(jitter=-1.0)
