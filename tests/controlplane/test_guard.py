"""One object's error is a log line and a retry: work queues and informers survive it."""

from __future__ import annotations

import logging

import pytest
import trio

from fleet.controlplane._guard import RetryBackoff
from fleet.controlplane._informer import Informer
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import PODS, KObject
from fleet.errors import ConfigError
from fleet.kube import MemoryApiserver, WatchEvent
from tests.controlplane._helpers import eventually, pod


def test_backoff_doubles_to_its_cap() -> None:
    backoff = RetryBackoff(initial=0.5, maximum=3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.delay(10_000) == 3.0
    with pytest.raises(ConfigError, match="initial <= maximum"):
        RetryBackoff(initial=2.0, maximum=1.0)


async def test_a_failing_key_is_retried_with_backoff_and_others_go_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = WorkQueue("test", backoff=RetryBackoff(initial=1.0, maximum=4.0))
    seen: list[tuple[str, float]] = []

    async def process(key: str) -> None:
        seen.append((key, trio.current_time()))
        if key == "bad" and sum(k == "bad" for k, _ in seen) <= 4:
            raise KeyError("gone from the graph")

    nursery.start_soon(queue.run_timer)
    nursery.start_soon(queue.work, process)
    with caplog.at_level(logging.WARNING, logger="fleet.controlplane"):
        await queue.add("bad")
        await queue.add("good")
        await eventually(lambda: sum(k == "bad" for k, _ in seen) == 5, within=30)
    assert ("good", 0.0) in seen
    assert [round(t, 3) for k, t in seen if k == "bad"] == [0.0, 1.0, 3.0, 7.0, 11.0]
    stats = queue.statistics()
    assert stats.failures == 4 and stats.failing == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "test: bad: KeyError: 'gone from the graph' (retrying in 1.0s)"
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)


async def test_an_informer_survives_a_handler_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver()
    informer = Informer(api, PODS, KObject)
    got: list[str] = []

    async def handler(event: WatchEvent[KObject]) -> None:
        if event.obj.metadata.name == "poison":
            raise ValueError("bad object")
        got.append(event.obj.metadata.name)

    informer.subscribe(handler)
    await nursery.start(informer.run)
    api.create("/api/v1/pods", pod("first"))
    api.create("/api/v1/pods", pod("poison"))
    api.create("/api/v1/pods", pod("after"))
    await eventually(lambda: "after" in got)
    assert sorted(got) == ["after", "first"]
    assert informer.handler_errors == 1


async def test_a_priority_queue_hands_out_highest_first_fifo_among_equals() -> None:
    priorities = {"a": 0, "b": 5, "c": 5, "d": 9}
    queue = WorkQueue("test", priority=priorities.__getitem__)
    for key in "abcd":
        await queue.add(key)
    assert [await queue.get() for _ in range(4)] == ["d", "b", "c", "a"]
