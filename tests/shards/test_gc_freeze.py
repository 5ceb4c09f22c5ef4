"""The shard command freezes its objects out of the cyclic GC as start-up (and later growth) builds them."""

from __future__ import annotations

import gc
import random

import pytest
import trio

from fleet.kube import MemoryApiserver
from shards import ShardEngine
from shards._engine import FREEZE_AFTER, SETTLE_CHECK
from tests.shards.test_engine import CRS, PODS, node_cr, phase, pod, settings

wall = MemoryApiserver.wall


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_shards_objects_are_frozen_as_they_are_built(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    freeze: bool,
) -> None:
    calls: list[tuple[str, float]] = []

    def fake_collect(*args: object) -> int:
        calls.append(("collect", trio.current_time()))
        return 0

    def fake_freeze() -> None:
        calls.append(("freeze", trio.current_time()))

    oldest: list[object] = []
    monkeypatch.setattr(gc, "collect", fake_collect)
    monkeypatch.setattr(gc, "freeze", fake_freeze)
    monkeypatch.setattr(gc, "get_objects", lambda generation=None: oldest)
    api = MemoryApiserver()
    for i in range(3):
        api.create(CRS, node_cr(f"n{i}"))
    for j in range(60):
        api.create(PODS, pod(f"p{j}", f"n{j % 3}"))
    # 5 writes a second: the pods' Running PATCHes queue up for ~12 s after registration.
    engine = ShardEngine(
        settings(qps=5.0, burst=5, events=False),  # the status writes alone
        "0",
        control=api,
        wall=wall,
        rng=random.Random(7),
        freeze_gc=freeze,
    )
    await nursery.start(engine.run)
    await trio.sleep(200)
    patches = [c.at for c in api.log("PATCH", PODS) if c.path.endswith("/status")]
    assert len(patches) == 60 and all(phase(api, f"p{j}") == "Running" for j in range(60))
    assert max(patches) > 10  # the queue was busy that long
    if not freeze:
        assert calls == []
        return
    # A collection and a freeze every 5 s while start-up goes on (each collection walks
    # only what came since the last freeze) ...
    names = [name for name, _ in calls]
    assert names == ["collect", "freeze"] * (len(calls) // 2)
    times = [at for name, at in calls if name == "freeze"]
    assert times == [5.0 * (i + 1) for i in range(len(times))]
    # ... until three quiet looks, 5 s apart, once the queue had emptied; none after ...
    assert max(patches) + 10 <= times[-1] <= max(patches) + 20
    # The looks come at whole multiples of 5 s: the test acts half-way between two, never
    # at the same instant as one (which of two tasks due together runs first is not set).
    await trio.sleep(30 + SETTLE_CHECK / 2)
    assert len(calls) == 2 * len(times)
    # ... until the objects not frozen grow past FREEZE_AFTER (nodes applied later).
    oldest.extend([None] * (FREEZE_AFTER + 1))
    await trio.sleep(SETTLE_CHECK)
    assert [name for name, _ in calls[2 * len(times) :]] == ["collect", "freeze"]
