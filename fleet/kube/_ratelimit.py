"""A token bucket: caps how *fast* requests start, not how many run at once.

trio's ``CapacityLimiter`` bounds concurrency; this bounds the rate, as
client-go's ``util/flowcontrol`` token-bucket limiter (``qps``, ``burst``) does
for every Kubernetes client. The write queue puts one in front of its
workers so a shard never sends the apiserver more than ``qps`` writes a
second on average, with short bursts up to ``burst``.

Waiters take reservations in call order (golang.org/x/time/rate's
``Reserve``, which client-go uses): each caller takes a token now, possibly
driving the balance negative, and sleeps exactly until its token has
refilled. That makes waiting FIFO without a queue of its own, and costs one
sleep per caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from fleet.errors import ConfigError

__all__ = ["TokenBucket", "TokenBucketStatistics"]


@dataclass(frozen=True, slots=True)
class TokenBucketStatistics:
    tokens: float
    """Tokens available now; negative when callers hold reservations."""
    waiting: int
    """Callers sleeping until their token refills."""
    acquired: int
    """Tokens handed out since creation."""


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` banked; one token per request."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if qps <= 0:
            raise ConfigError(f"token bucket: qps must be > 0, got {qps}")
        if burst < 1:
            raise ConfigError(f"token bucket: burst must be >= 1, got {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)  # start full, as client-go does
        self._last: float | None = None  # clock read lazily: trio's clock needs a running loop
        self._waiting = 0
        self._acquired = 0

    def _refill(self) -> None:
        now = self._clock()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now

    async def acquire(self, tokens: int = 1) -> None:
        """Take ``tokens`` tokens (one per request of a batch), sleeping exactly until the
        last of them is available: one scheduler round or one sleep for the whole batch.

        Taken one at a time, a batch of 64 Lease renewals waited 64 rounds of a busy
        event loop (each a checkpoint): with thousands of watches runnable at once,
        10,000 kubelet-profile nodes saw renewals seconds late at half a core.
        """
        self._refill()
        self._tokens -= tokens
        self._acquired += tokens
        if self._tokens >= 0:
            await trio.lowlevel.checkpoint()
            return
        wait = -self._tokens / self.qps
        self._waiting += 1
        try:
            await trio.sleep(wait)
        except BaseException:
            # Cancelled while waiting: give the reservation back so the callers
            # behind this one are not delayed for requests that never go.
            self._refill()
            self._tokens = min(float(self.burst), self._tokens + tokens)
            self._acquired -= tokens
            raise
        finally:
            self._waiting -= 1

    def statistics(self) -> TokenBucketStatistics:
        self._refill()
        return TokenBucketStatistics(
            tokens=self._tokens, waiting=self._waiting, acquired=self._acquired
        )
