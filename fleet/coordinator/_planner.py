"""From assignments and live shards to the shard-label writes to make, at a bounded rate.

The planner is pure apart from the clock its token bucket reads. Given the
current assignment of every Node CR (key ``namespace/name`` → shard label, or
``None``) and the set of live shards, each CR's *target* is its rendezvous
owner among the live shards (``_hashing.owner``). Three kinds of move follow:

* ``assign``: the CR has no shard label, or a label naming no known shard
  (its shard is dead): it moves **at once**. Nobody drives it, so waiting
  only delays the node.
* ``failover``: the CR's shard is dead (its Lease expired by the
  coordinator's observation, ``_liveness``): it moves **at once** too.
* ``rebalance``: the CR's shard is alive but is not the target (a shard came
  back or joined). Moving it is optional and costs a handover, so these
  moves draw on a token bucket of ``max_moves_per_second``: a returning shard
  gets its share over seconds, never as a write storm. A rebalance move
  begins a handover (the coordinator marks the CR, the labelled shard lets go
  and says so, docs/architecture.md); a CR so marked and not yet let go
  (``moving``) is left alone while its shard lives.
* ``handover``: the labelled shard has let go of a marked CR (``released``):
  nobody drives it, so it moves **at once**, to its target now (which may be
  that same shard again, if the target died meanwhile: the label write clears
  the marks and the shard drives it again).

With no live shard at all nothing moves: CRs keep their labels (a label
naming a dead shard drives nothing) until a shard is alive again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from fleet.coordinator._hashing import owner

__all__ = ["Move", "Planner", "TokenBucket", "plan"]

MoveReason = Literal["assign", "failover", "rebalance", "handover"]


@dataclass(frozen=True, slots=True)
class Move:
    """Relabel one Node CR."""

    key: str
    """``namespace/name`` of the CR."""
    source: str | None
    """The shard label it has now (``None``: unlabelled)."""
    target: str
    """The shard label to write."""
    reason: MoveReason


def plan(
    assignments: Mapping[str, str | None],
    live: Collection[str],
    target_of: Callable[[str], str | None] | None = None,
    *,
    moving: Collection[str] = (),
    released: Collection[str] = (),
) -> tuple[list[Move], list[Move]]:
    """The moves to make now and the rebalance moves that may wait, each sorted by key.

    ``target_of`` maps a key to its owner among ``live`` (default: compute it);
    ``moving``: keys being handed over, waiting for their shard to let go;
    ``released``: keys whose shard has let go (see the module docstring).
    """
    urgent: list[Move] = []
    optional: list[Move] = []
    if not live:
        return urgent, optional
    for key in sorted(assignments):
        current = assignments[key]
        target = target_of(key) if target_of is not None else owner(key, live)
        assert target is not None  # live is not empty
        if key in released:
            urgent.append(Move(key, current, target, "handover"))
            continue
        if current == target:
            continue
        if current is None or current == "":
            urgent.append(Move(key, None, target, "assign"))
        elif current not in live:
            urgent.append(Move(key, current, target, "failover"))
        elif key not in moving:
            optional.append(Move(key, current, target, "rebalance"))
    return urgent, optional


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; reads an injected clock.

    Unlike ``fleet.kube._ratelimit.TokenBucket`` (one awaited token per
    request) this one is synchronous and hands out a batch at once, which is
    what a pure planner called in a loop needs.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = burst  # start full
        self._stamp: float | None = None  # read lazily: trio's clock needs a running loop

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self, limit: int) -> int:
        """Take up to ``limit`` whole tokens; return how many were taken."""
        self._refill()
        taken = max(0, min(limit, int(self._tokens)))
        self._tokens -= taken
        return taken

    def wait_time(self) -> float:
        """Seconds until the next whole token."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self._rate)


class Planner:
    """``plan`` plus the rate limit on rebalance moves.

    ``next_moves`` returns every urgent move and as many rebalance moves as
    the bucket allows; ``wake_in`` says when to call again for the rest.
    """

    def __init__(self, max_moves_per_second: float, clock: Callable[[], float]) -> None:
        # One second's worth of moves may go at once; the rest follow at the rate.
        self._bucket = TokenBucket(max_moves_per_second, max(1.0, max_moves_per_second), clock)
        self._pending = 0
        self._live: frozenset[str] = frozenset()
        self._targets: dict[str, str | None] = {}
        """Each key's owner among ``_live``: hashing runs once per key per live set."""

    def _target(self, key: str) -> str | None:
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = owner(key, self._live)
        return target

    def next_moves(
        self,
        assignments: Mapping[str, str | None],
        live: Collection[str],
        *,
        moving: Collection[str] = (),
        released: Collection[str] = (),
    ) -> list[Move]:
        live = frozenset(live)
        if live != self._live:
            self._live, self._targets = live, {}
        elif len(self._targets) > 2 * len(assignments) + 1024:
            self._targets = {}  # deleted CRs: do not let the cache outgrow the fleet
        urgent, optional = plan(assignments, live, self._target, moving=moving, released=released)
        allowed = self._bucket.take(len(optional)) if optional else 0
        self._pending = len(optional) - allowed
        return urgent + optional[:allowed]

    def wake_in(self) -> float | None:
        """Seconds until more rebalance moves may go, or None when none are waiting."""
        return self._bucket.wait_time() if self._pending else None
