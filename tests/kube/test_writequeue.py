"""The write queue: coalescing, per-key order, no-ops, the rate, and every retry rule, on the autojump clock."""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Callable

import pytest
import trio
import trio.testing

from fleet.errors import ConfigError, Conflict, ConnectError, ProtocolError, ReadTimeout
from fleet.kube._fake import FakeApiserver, FakeRequest, json_response, status_response
from fleet.kube._seam import Response
from fleet.kube._writequeue import Write, WriteQueue, WriteQueueSettings, WriteResult

OK = json_response({"kind": "Pod"})


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


def patch(name: str, body: bytes, **kwargs: object) -> Write:
    return Write(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{name}/status",
        body,
        content_type="application/strategic-merge-patch+json",
        **kwargs,  # type: ignore[arg-type]
    )


class Scripted:
    """A handler answering from a script (then OK), optionally taking ``delay`` per request."""

    def __init__(self, *answers: Response | Exception, delay: float = 0.0) -> None:
        self.answers: deque[Response | Exception] = deque(answers)
        self.delay = delay
        self.active: defaultdict[str, int] = defaultdict(int)
        self.max_active: defaultdict[str, int] = defaultdict(int)

    async def __call__(self, request: FakeRequest) -> Response:
        self.active[request.path] += 1
        self.max_active[request.path] = max(
            self.max_active[request.path], self.active[request.path]
        )
        try:
            await trio.sleep(self.delay)
            answer = self.answers.popleft() if self.answers else OK
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.active[request.path] -= 1


def make(
    handler: Scripted, **overrides: object
) -> tuple[FakeApiserver, WriteQueue, list[WriteResult], Callable[[WriteResult], None]]:
    api = FakeApiserver(handler)
    queue = WriteQueue(api, WriteQueueSettings(**overrides), rng=NoJitter())  # type: ignore[arg-type]
    results: list[WriteResult] = []
    return api, queue, results, results.append


async def test_ten_submits_for_one_key_send_only_the_newest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api, queue, results, record = make(Scripted())
    for i in range(10):
        await queue.submit("pod-a", patch("a", b'{"n":%d}' % i, on_result=record))
    assert queue.statistics().depth == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await queue.join()
        nursery.cancel_scope.cancel()
    assert [r.body for r in api.requests] == [b'{"n":9}']
    assert [r.outcome for r in results] == ["superseded"] * 9 + ["sent"]
    stats = queue.statistics()
    assert (stats.sent, stats.coalesced, stats.depth, stats.peak_depth) == (1, 9, 0, 1)


async def test_writes_to_one_key_never_overlap_or_reorder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = Scripted(delay=1.0)
    api, queue, _results, _record = make(handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await queue.submit("a", patch("a", b"1"))
        await queue.submit("b", patch("b", b"1"))
        await trio.sleep(0.5)  # a/1 and b/1 are in flight
        assert queue.statistics().in_flight == 2
        await queue.submit("a", patch("a", b"2"))
        await queue.submit("a", patch("a", b"3"))
        assert queue.statistics().depth == 1  # a/3 waits for a/1; a/2 was replaced
        await queue.join()
        nursery.cancel_scope.cancel()
    sent = [(r.path.split("/")[-2], r.body, r.at) for r in api.requests]
    assert sent == [("a", b"1", 0.0), ("b", b"1", 0.0), ("a", b"3", 1.0)]
    assert max(handler.max_active.values()) == 1


async def test_a_write_equal_to_the_last_sent_is_a_noop_unless_forced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api, queue, results, record = make(Scripted(delay=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        assert (await queue.write("a", patch("a", b"same"))).outcome == "sent"
        assert (await queue.write("a", patch("a", b"same"))).outcome == "noop"
        assert (await queue.write("a", patch("a", b"same", force=True))).outcome == "sent"
        # A forced write is not remembered: its caller diffs for itself.
        assert (await queue.write("a", patch("a", b"same"))).outcome == "sent"
        # Submitted while an equal write is in flight: dropped when its turn comes.
        await queue.submit("a", patch("a", b"new"))
        await trio.sleep(0.5)
        await queue.submit("a", patch("a", b"new", on_result=record))
        await queue.join()
        # A different request to the same key is not a no-op.
        assert (await queue.write("a", patch("a", b"new", params={"fieldManager": "x"}))).ok
        queue.forget("a")
        assert (
            await queue.write("a", patch("a", b"new", params={"fieldManager": "x"}))
        ).outcome == "sent"
        nursery.cancel_scope.cancel()
    assert [r.body for r in api.requests] == [b"same", b"same", b"same", b"new", b"new", b"new"]
    assert [r.outcome for r in results] == ["noop"]
    assert queue.statistics().noop_dropped == 2


async def test_a_write_no_longer_wanted_is_withdrawn_unsent_even_between_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A node's status write that waited in the queue (or between retries) while the node
    moved to another shard is not sent: it would land after the new owner's first write."""
    api, queue, results, record = make(
        Scripted(status_response(503, "ServiceUnavailable"), delay=1.0)
    )
    driving = {"a": True, "b": True}
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await queue.submit("a", patch("a", b"1", on_result=record, wanted=lambda: driving["a"]))
        await trio.sleep(1.1)  # answered 503: waiting to retry
        driving["a"] = False
        await queue.submit("b", patch("b", b"1", on_result=record, wanted=lambda: driving["b"]))
        driving["b"] = False  # before its turn
        await queue.join()
        nursery.cancel_scope.cancel()
    assert [r.path.split("/")[-2] for r in api.requests] == ["a"]  # the first attempt only
    assert sorted((r.key, r.outcome, r.attempts) for r in results) == [
        ("a", "withdrawn", 1),
        ("b", "withdrawn", 0),
    ]
    assert not results[0].ok


async def test_the_limiter_sets_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(Scripted(), qps=10.0, burst=5, workers=50)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(queue.run)
        for i in range(25):
            await queue.submit(f"k{i}", patch(f"p{i}", b"x"))
        await queue.join()
        # N writes at Q per second with a burst of B take (N - B) / Q seconds.
        assert trio.current_time() - start == pytest.approx((25 - 5) / 10.0)
        nursery.cancel_scope.cancel()
    times = sorted(r.at - start for r in api.requests)
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.1 * i for i in range(1, 21)])


async def test_429_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(
        Scripted(status_response(429, "TooManyRequests", headers={"Retry-After": "3"}))
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b"x"))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts) == ("sent", 2)
    assert [r.at for r in api.requests] == [0.0, 3.0]
    assert queue.statistics().retried == 1


async def test_5xx_and_transport_errors_back_off_then_succeed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api, queue, _results, _record = make(
        Scripted(
            status_response(503, "ServiceUnavailable"),
            ConnectError("refused"),
            ReadTimeout("no answer"),
            ProtocolError("closed mid-response"),
        ),
        max_attempts=5,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b"x"))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts) == ("sent", 5)
    # The write policy's backoff: 0.5 s doubling (no jitter here).
    assert [r.at for r in api.requests] == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5])
    assert queue.statistics().retried == 4


async def test_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(
        Scripted(*[status_response(500, "InternalError")] * 10), max_attempts=3
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b"x"))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts, result.ok) == ("failed", 3, False)
    assert len(api.requests) == 3
    assert queue.statistics().failed == 1


async def test_other_client_errors_fail_at_once(autojump_clock: trio.testing.MockClock) -> None:
    _api, queue, _results, _record = make(Scripted(status_response(422, "Invalid")))
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b"x"))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts) == ("failed", 1)


async def test_404_drops_the_write(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(Scripted(status_response(404, "NotFound")))
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b"x"))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts) == ("gone", 1)
    assert len(api.requests) == 1
    stats = queue.statistics()
    assert (stats.gone_dropped, stats.retried, stats.failed) == (1, 0, 0)


async def test_409_rereads_through_on_conflict(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(Scripted(status_response(409, "Conflict")))
    seen: list[Conflict] = []

    async def reread(exc: Conflict) -> Write | None:
        seen.append(exc)
        await trio.sleep(0.25)  # a GET of the fresh object
        return patch("a", b'{"rv":"2"}')

    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        result = await queue.write("a", patch("a", b'{"rv":"1"}', on_conflict=reread))
        nursery.cancel_scope.cancel()
    assert (result.outcome, result.attempts) == ("sent", 2)
    assert [(r.body, r.at) for r in api.requests] == [(b'{"rv":"1"}', 0.0), (b'{"rv":"2"}', 0.25)]
    assert len(seen) == 1 and seen[0].status == 409


async def test_409_without_a_fresh_write_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(
        Scripted(status_response(409, "Conflict"), status_response(409, "Conflict"))
    )

    async def give_up(exc: Conflict) -> Write | None:
        await trio.lowlevel.checkpoint()
        return None

    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        first = await queue.write("a", patch("a", b"x", on_conflict=give_up))
        second = await queue.write("b", patch("b", b"x"))  # no on_conflict at all
        nursery.cancel_scope.cancel()
    assert (first.outcome, second.outcome) == ("conflict", "conflict")
    assert len(api.requests) == 2
    assert queue.statistics().failed == 2


async def test_a_newer_write_replaces_a_retry(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, results, record = make(Scripted(status_response(503, "ServiceUnavailable")))
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await queue.submit("a", patch("a", b"old", on_result=record))
        await trio.sleep(0.1)  # old failed, waiting 0.5 s to retry
        await queue.submit("a", patch("a", b"new", on_result=record))
        await queue.join()
        nursery.cancel_scope.cancel()
    assert [(r.body, r.at) for r in api.requests] == [(b"old", 0.0), (b"new", 0.5)]
    assert [(r.outcome, r.attempts) for r in results] == [("superseded", 1), ("sent", 1)]


async def test_submit_waits_when_full(autojump_clock: trio.testing.MockClock) -> None:
    api, queue, _results, _record = make(Scripted(), max_pending=2)
    await queue.submit("a", patch("a", b"1"))
    await queue.submit("b", patch("b", b"1"))
    submitted = trio.Event()

    async def third() -> None:
        await queue.submit("c", patch("c", b"1"))
        submitted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.sleep(10.0)
        assert not submitted.is_set()
        assert queue.statistics().waiting_submitters == 1
        # A key already pending never waits: it is replaced in place.
        with trio.fail_after(0.001):
            await queue.submit("a", patch("a", b"2"))
        await nursery.start(queue.run)
        await submitted.wait()
        await queue.join()
        nursery.cancel_scope.cancel()
    assert sorted((r.path.split("/")[-2], r.body) for r in api.requests) == [
        ("a", b"2"),
        ("b", b"1"),
        ("c", b"1"),
    ]
    assert queue.statistics().peak_depth == 2


async def test_statistics_while_busy(autojump_clock: trio.testing.MockClock) -> None:
    _api, queue, _results, _record = make(Scripted(delay=2.0), workers=2)
    for i in range(5):
        await queue.submit(f"k{i}", patch(f"p{i}", b"x"))
    async with trio.open_nursery() as nursery:
        await nursery.start(queue.run)
        await trio.sleep(1.0)
        stats = queue.statistics()
        assert (stats.in_flight, stats.depth, stats.peak_depth, stats.sent) == (2, 3, 5, 0)
        await queue.join()
        assert trio.current_time() == pytest.approx(6.0)  # 5 writes, 2 workers, 2 s each
        stats = queue.statistics()
        assert (stats.in_flight, stats.depth, stats.sent) == (0, 0, 5)
        nursery.cancel_scope.cancel()


def test_settings_validation() -> None:
    with pytest.raises(ConfigError):
        WriteQueueSettings(workers=0)
    with pytest.raises(ConfigError):
        WriteQueueSettings(max_pending=0)
    with pytest.raises(ConfigError):
        WriteQueueSettings(max_attempts=0)
    with pytest.raises(ConfigError):
        WriteQueueSettings(qps=0.0)
