"""Rendezvous (highest-random-weight) hashing of Node CR keys over live shards.

Every CR key (``namespace/name``) scores each live shard id with a stable
64-bit hash of the pair; the highest score owns the key. When a shard leaves,
only the keys it owned move (each to its own second choice, spread evenly over
the rest); when a shard joins, it takes about ``1/N`` of the keys and nothing
else moves. The hash is ``blake2b`` with an 8-byte digest: stable across
processes and Python versions (unlike ``hash()``), and fast enough that a
coordinator scores tens of thousands of keys per second per shard.

Ties (64-bit collisions) break on the shard id, so the choice is a pure
function of its inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["owner", "weight"]


def weight(key: str, shard: str) -> int:
    """The score of ``shard`` for ``key``: a stable 64-bit integer."""
    # NUL cannot occur in a label value or an object name, so the pair is unambiguous.
    digest = hashlib.blake2b(f"{shard}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, shards: Iterable[str]) -> str | None:
    """The shard that owns ``key`` among ``shards``; ``None`` when there are none."""
    best: str | None = None
    best_score = -1
    for shard in shards:
        score = weight(key, shard)
        if score > best_score or (score == best_score and best is not None and shard > best):
            best, best_score = shard, score
    return best
