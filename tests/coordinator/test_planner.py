"""The planner: urgent moves at once, rebalance at the bounded rate (autojump clock)."""

from __future__ import annotations

import pytest
import trio

from fleet.coordinator._hashing import owner
from fleet.coordinator._planner import Planner, TokenBucket, plan

KEYS = [f"default/node-{i}" for i in range(600)]
ALL = ["0", "1", "2"]


def balanced(shards: list[str]) -> dict[str, str | None]:
    return {key: owner(key, shards) for key in KEYS}


def test_nothing_to_do_when_balanced() -> None:
    assert plan(balanced(ALL), ALL) == ([], [])


def test_unassigned_and_dead_shard_crs_move_at_once() -> None:
    assignments = balanced(ALL)
    assignments["default/new"] = None
    dead = [k for k, v in assignments.items() if v == "2"]
    urgent, optional = plan(assignments, ["0", "1"])
    assert optional == []
    assert {m.key for m in urgent} == {*dead, "default/new"}
    assert {m.reason for m in urgent if m.key != "default/new"} == {"failover"}
    assert next(m for m in urgent if m.key == "default/new").reason == "assign"
    assert all(m.target in ("0", "1") for m in urgent)
    # Only the dead shard's CRs move (rendezvous): live shards keep theirs.
    assert all(assignments[m.key] in (None, "2") for m in urgent)


def test_label_naming_an_unknown_shard_is_a_failover() -> None:
    urgent, _ = plan({"default/a": "9"}, ["0"])
    assert [(m.source, m.target, m.reason) for m in urgent] == [("9", "0", "failover")]


def test_no_live_shard_moves_nothing() -> None:
    assert plan({"default/a": "1", "default/b": None}, []) == ([], [])


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, trio.current_time)


async def test_returning_shard_gets_its_share_at_the_bounded_rate(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Shard 2 was dead: everything sits on 0 and 1. It comes back.
    assignments = balanced(["0", "1"])
    share = sum(1 for key in KEYS if owner(key, ALL) == "2")
    assert share > 150
    planner = Planner(max_moves_per_second=50, clock=trio.current_time)
    start = trio.current_time()
    moved_at: list[float] = []
    while True:
        moves = planner.next_moves(assignments, ALL)
        for move in moves:
            assert move.reason == "rebalance" and move.target == "2"
            assignments[move.key] = move.target
            moved_at.append(trio.current_time() - start)
        wait = planner.wake_in()
        if wait is None:
            break
        await trio.sleep(max(wait, 0.1))
    assert len(moved_at) == share
    assert assignments == balanced(ALL)
    # At most one second's burst plus 50/s: never a storm.
    for t in range(int(moved_at[-1]) + 1):
        in_window = sum(1 for m in moved_at if t <= m < t + 1)
        assert in_window <= 50 + (50 if t == 0 else 0) + 5
    expected = (share - 50) / 50
    assert expected - 0.5 <= moved_at[-1] <= expected + 0.5


async def test_urgent_moves_ignore_the_rate_limit(autojump_clock: trio.abc.Clock) -> None:
    planner = Planner(max_moves_per_second=1, clock=trio.current_time)
    assignments: dict[str, str | None] = dict.fromkeys(KEYS, None)
    moves = planner.next_moves(assignments, ALL)
    assert len(moves) == len(KEYS)
    assert planner.wake_in() is None


def test_a_handover_waits_for_its_shard_then_moves_at_once() -> None:
    """Marked and not let go: left alone while its shard lives (no second mark, no token);
    a failover if that shard dies; let go: relabelled at once, to the target now."""
    live = ["0", "1", "2"]
    key = next(k for k in KEYS if owner(k, live) == "2")
    assignments: dict[str, str | None] = {key: "0"}
    _, optional = plan(assignments, live)
    assert [(m.source, m.target, m.reason) for m in optional] == [("0", "2", "rebalance")]
    assert plan(assignments, live, moving={key}) == ([], [])
    urgent, _ = plan(assignments, ["1", "2"], moving={key})
    assert [(m.source, m.reason) for m in urgent] == [("0", "failover")]
    urgent, _ = plan(assignments, live, released={key})
    assert [(m.source, m.target, m.reason) for m in urgent] == [("0", "2", "handover")]
    # The target died before shard 0 let go, and 0 owns it again: the label write is
    # still made (it clears the marks, and shard 0 drives the node again).
    back = next(k for k in KEYS if owner(k, ["0", "1"]) == "0" and owner(k, live) == "2")
    urgent, _ = plan({back: "0"}, ["0", "1"], released={back})
    assert [(m.source, m.target, m.reason) for m in urgent] == [("0", "0", "handover")]
