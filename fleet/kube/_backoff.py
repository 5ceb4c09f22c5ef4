"""Retry policy as data: exponential backoff with jitter that forgets after a healthy spell.

Used by the reflector between failed lists and watches, and by the write
queue between attempts of one write. The defaults are client-go's reflector
values (``tools/cache/reflector.go``, ``wait.NewExponentialBackoffManager(800ms,
30s, 2min, 2.0, 1.0)``); the reasons are written beside each constant.

:class:`BackoffPolicy` is the frozen setting; :class:`Backoff` is the running
state made from it, with an injected clock and random source so tests drive
both (the autojump clock and a seeded or constant ``random.Random``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from fleet.errors import ConfigError

__all__ = [
    "FACTOR",
    "INITIAL",
    "JITTER",
    "MAXIMUM",
    "RESET_AFTER",
    "Backoff",
    "BackoffPolicy",
]

INITIAL = 0.8
"""First delay, seconds. client-go: short enough that a blip costs under a second."""

FACTOR = 2.0
"""Growth per consecutive failure. client-go: doubling reaches the cap in six steps."""

MAXIMUM = 30.0
"""Cap of the un-jittered delay, seconds. client-go: "backoff will stop at [30,60) sec
interval which is 0.22 QPS", a ~98% cut of the old 1-QPS retry load on a sick apiserver."""

JITTER = 1.0
"""Extra random fraction added to each delay: delay * (1 + JITTER * U[0,1)). client-go's
1.0 spreads thousands of clients that failed together over a whole doubling interval."""

RESET_AFTER = 120.0
"""Healthy seconds after which the next failure starts again at INITIAL. client-go:
"If we don't backoff for 2min, assume API server is healthy and we reset the backoff"."""


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait between attempts. Frozen: one policy is shared by many states."""

    initial: float = INITIAL
    """First delay, seconds (see :data:`INITIAL`)."""
    factor: float = FACTOR
    """Multiplier per consecutive failure (see :data:`FACTOR`)."""
    maximum: float = MAXIMUM
    """Cap of the un-jittered delay, seconds (see :data:`MAXIMUM`)."""
    jitter: float = JITTER
    """Random extra fraction, 0 for none (see :data:`JITTER`)."""
    reset_after: float = RESET_AFTER
    """Healthy seconds that reset the sequence (see :data:`RESET_AFTER`)."""

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial:
            raise ConfigError(
                f"backoff: need 0 < initial <= maximum, got {self.initial}, {self.maximum}"
            )
        if self.factor < 1.0:
            raise ConfigError(f"backoff: factor must be >= 1, got {self.factor}")
        if self.jitter < 0:
            raise ConfigError(f"backoff: jitter must be >= 0, got {self.jitter}")
        if self.reset_after < 0:
            raise ConfigError(f"backoff: reset_after must be >= 0, got {self.reset_after}")

    def start(
        self,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> Backoff:
        """A fresh running state following this policy."""
        return Backoff(
            initial=self.initial,
            factor=self.factor,
            maximum=self.maximum,
            jitter=self.jitter,
            reset_after=self.reset_after,
            clock=clock,
            rng=rng,
        )


class Backoff:
    """The running state of one retry sequence.

    Call :meth:`next_delay` after each failure and sleep that long; call
    :meth:`mark_healthy` when an attempt succeeded (a watch opened, a list
    came back). If the next failure comes at least ``reset_after`` seconds
    after the system became healthy, the sequence starts again at
    ``initial``; a failure right after a success keeps growing the delay, so
    a server that accepts and immediately drops connections is not hammered.
    """

    def __init__(
        self,
        initial: float = INITIAL,
        factor: float = FACTOR,
        maximum: float = MAXIMUM,
        jitter: float = JITTER,
        reset_after: float = RESET_AFTER,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = BackoffPolicy(initial, factor, maximum, jitter, reset_after)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._next = initial
        self.failures = 0
        """Consecutive failures since the last reset."""
        self.healthy_since: float | None = None
        """Clock time the current healthy spell began; None while failing."""

    def mark_healthy(self) -> None:
        """An attempt succeeded: start the healthy spell (keeps an earlier start)."""
        if self.healthy_since is None:
            self.healthy_since = self._clock()

    def reset(self) -> None:
        """Forget past failures: the next delay is ``initial`` again."""
        self._next = self.policy.initial
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; advances the sequence and ends the healthy spell."""
        if (
            self.healthy_since is not None
            and self._clock() - self.healthy_since >= self.policy.reset_after
        ):
            self.reset()
        self.healthy_since = None
        base = self._next
        self._next = min(base * self.policy.factor, self.policy.maximum)
        self.failures += 1
        return base * (1.0 + self.policy.jitter * self._rng.random())
