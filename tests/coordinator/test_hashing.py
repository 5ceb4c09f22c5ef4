"""Rendezvous hashing: even spread, stability, minimal movement."""

from __future__ import annotations

from collections import Counter

from fleet.coordinator._hashing import owner, weight

KEYS = [f"ns-{i % 7}/node-{i}" for i in range(3000)]


def test_weight_is_stable_across_processes() -> None:
    # A fixed value: blake2b, not Python's per-process salted hash().
    assert weight("default/node-0", "0") == weight("default/node-0", "0")
    assert weight("default/node-0", "0") != weight("default/node-0", "1")
    assert weight("a/b", "c") == int.from_bytes(
        __import__("hashlib").blake2b(b"c\0a/b", digest_size=8).digest(), "big"
    )


def test_spread_within_ten_percent_of_even() -> None:
    for shards in (["0", "1", "2"], [str(i) for i in range(5)]):
        counts = Counter(owner(key, shards) for key in KEYS)
        even = len(KEYS) / len(shards)
        assert set(counts) == set(shards)
        for shard, count in counts.items():
            assert abs(count - even) <= 0.1 * even, (shard, count, even)


def test_no_shards_no_owner() -> None:
    assert owner("a/b", []) is None


def test_a_leaving_shard_moves_only_its_keys_evenly() -> None:
    before = {key: owner(key, ["0", "1", "2", "3"]) for key in KEYS}
    after = {key: owner(key, ["0", "1", "3"]) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[key] == "2" for key in moved)
    assert len(moved) == sum(1 for v in before.values() if v == "2")
    spread = Counter(after[key] for key in moved)
    assert set(spread) == {"0", "1", "3"}
    for count in spread.values():
        assert abs(count - len(moved) / 3) <= 0.2 * len(moved) / 3


def test_a_joining_shard_takes_about_its_share_and_nothing_else_moves() -> None:
    before = {key: owner(key, ["0", "1", "2"]) for key in KEYS}
    after = {key: owner(key, ["0", "1", "2", "3"]) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "3" for key in moved)
    assert abs(len(moved) - len(KEYS) / 4) <= 0.1 * len(KEYS) / 4


def test_order_of_shards_does_not_matter() -> None:
    assert all(owner(k, ["0", "1", "2"]) == owner(k, ["2", "0", "1"]) for k in KEYS[:200])
