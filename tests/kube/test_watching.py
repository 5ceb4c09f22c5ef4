"""The reflector against scripted streams: the watch contract, case by case, on the autojump clock."""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from fleet.errors import ConnectError, InputError, ProtocolError
from fleet.kube._fake import (
    HANG,
    FakeApiserver,
    FakeRequest,
    Pause,
    StreamScript,
    event_line,
    json_response,
    status_body,
    status_response,
)
from fleet.kube._seam import Response
from fleet.kube._views import ObjectMeta
from fleet.kube._watching import ObjectTooLarge, Reflector, WatchEvent, WatchSettings
from tests._busy import Spinner

PATH = "/api/v1/pods"


class PodSpec(msgspec.Struct, rename="camel", frozen=True):
    node_name: str = ""


class Pod(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: PodSpec = PodSpec()


class Strict(msgspec.Struct):
    metadata: ObjectMeta
    spec: dict[str, int]


class NoJitter(random.Random):
    """Jitter off (``random()`` is 0), so backoff delays are exact; randint still varies."""

    def __init__(self) -> None:
        super().__init__(7)

    def random(self) -> float:
        return 0.0


def pod(
    name: str, rv: str, *, uid: str | None = None, node: str = "n1", **annotations: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid or f"uid-{name}",
            "resourceVersion": rv,
            "annotations": annotations,
        },
        "spec": {"nodeName": node},
    }


def bookmark(rv: str) -> bytes:
    return event_line(
        "BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}}
    )


# Named scripted streams, kopf style.
STREAM_WITH_ERROR_410GONE = StreamScript(
    [event_line("ERROR", status_body(410, "Expired", "too old resource version: 1 (50)"))]
)
STREAM_410_STATUS = StreamScript(
    status=410, body=msgspec.json.encode(status_body(410, "Gone", "too old resource version"))
)
STREAM_429_RETRY_AFTER_7 = StreamScript(
    status=429,
    headers={"Retry-After": "7"},
    body=msgspec.json.encode(status_body(429, "TooManyRequests", "slow down")),
)
STREAM_503 = StreamScript(status=503, body=b"service unavailable")
STREAM_ERROR_EVENT_500 = StreamScript(
    [event_line("ERROR", status_body(500, "InternalError", "etcd"))]
)
STREAM_CUT = StreamScript([ProtocolError("connection reset by peer")])
STREAM_CUT_MID_LINE = StreamScript([b'{"type":"ADDED","object":{"meta'])
STREAM_ENDS_AT_ONCE = StreamScript([])
STREAM_HANGS = StreamScript([HANG])
REFUSED = ConnectError("connection refused")


class Lister:
    """A paged list handler serving successive snapshots: one per fresh (non-continue) list."""

    def __init__(self, *snapshots: tuple[str, Sequence[dict[str, Any]]]) -> None:
        self.snapshots = deque(snapshots)
        self.current = self.snapshots[0]
        self.errors: deque[Response] = deque()

    def __call__(self, request: FakeRequest) -> Response:
        assert request.method == "GET"
        assert request.path == PATH
        if self.errors:
            return self.errors.popleft()
        if "continue" not in request.params and self.snapshots:
            self.current = self.snapshots.popleft()
        rv, items = self.current
        limit = int(request.params["limit"])
        start = int(request.params.get("continue", "0"))
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        return json_response(
            {"kind": "PodList", "metadata": metadata, "items": items[start : start + limit]}
        )


def settings(**overrides: Any) -> WatchSettings:
    # A long inactivity timeout unless a test is about it: exhausted scripts hang.
    return WatchSettings(**{"inactivity_timeout": 10_000.0, **overrides})


def drain(receive: trio.MemoryReceiveChannel[WatchEvent[Pod]]) -> list[tuple[str, str, str]]:
    """Events waiting in the channel, as (type, name, resourceVersion)."""
    out: list[tuple[str, str, str]] = []
    while True:
        try:
            event = receive.receive_nowait()
        except trio.WouldBlock:
            return out
        out.append((event.type, event.obj.metadata.name, event.obj.metadata.resource_version))


def watch_times(api: FakeApiserver) -> list[float]:
    return [r.at for r in api.log(stream=True)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_paged_list_then_events(autojump_clock: trio.testing.MockClock) -> None:
    items = [pod(f"p{i}", str(i)) for i in range(7)]
    api = FakeApiserver(
        Lister(("10", items)),
        [
            StreamScript(
                [
                    Pause(1.0),
                    event_line("ADDED", pod("p8", "11")),
                    event_line("MODIFIED", pod("p1", "12", node="n2")),
                    event_line("DELETED", pod("p2", "13")),
                    HANG,
                ]
            )
        ],
    )
    reflector = Reflector(api, PATH, Pod, label_selector="shard=3", settings=settings(page_size=3))
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        # started() comes only once the whole first list is in the channel.
        assert drain(receive) == [("ADDED", f"p{i}", str(i)) for i in range(7)]
        lists = api.log(stream=False)
        assert [r.params for r in lists] == [
            {"limit": "3", "labelSelector": "shard=3"},
            {"limit": "3", "labelSelector": "shard=3", "continue": "3"},
            {"limit": "3", "labelSelector": "shard=3", "continue": "6"},
        ]
        await trio.sleep(2.0)
        assert drain(receive) == [
            ("ADDED", "p8", "11"),
            ("MODIFIED", "p1", "12"),
            ("DELETED", "p2", "13"),
        ]
        (watch,) = api.log(stream=True)
        assert watch.params["watch"] == "true"
        assert watch.params["allowWatchBookmarks"] == "true"
        assert watch.params["resourceVersion"] == "10"
        assert watch.params["labelSelector"] == "shard=3"
        assert reflector.objects["default/p1"].spec.node_name == "n2"
        assert "default/p2" not in reflector.objects
        stats = reflector.statistics()
        assert (stats.events, stats.objects, stats.resource_version) == (10, 7, "13")
        assert (stats.relists, stats.restarts, stats.watch_age) == (0, 0, 2.0)
        nursery.cancel_scope.cancel()


async def test_bookmark_only_moves_the_resource_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(("10", [pod("a", "5")])),
        [StreamScript([bookmark("20"), Pause(5.0)]), STREAM_HANGS],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        drain(receive)
        await trio.sleep(10.0)
        assert drain(receive) == []
        first, second = api.log(stream=True)
        assert first.params["resourceVersion"] == "10"
        assert second.params["resourceVersion"] == "20"
        # The server ended the first watch normally: the second follows at once.
        assert second.at - first.at == 5.0
        stats = reflector.statistics()
        assert (stats.bookmarks, stats.events, stats.relists, stats.restarts) == (1, 1, 0, 1)
        assert reflector.objects["default/a"].metadata.resource_version == "5"
        nursery.cancel_scope.cancel()


async def test_410_error_event_relists_and_hands_over_the_difference(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = [pod("same", "1"), pod("changed", "2"), pod("deleted", "3")]
    after = [pod("same", "1"), pod("changed", "40"), pod("new", "41")]
    api = FakeApiserver(
        Lister(("10", before), ("50", after)),
        [StreamScript([Pause(30.0), STREAM_WITH_ERROR_410GONE.steps[0]]), STREAM_HANGS],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        drain(receive)
        await trio.sleep(31.0)
        assert drain(receive) == [
            ("DELETED", "deleted", "3"),  # never missed, though no watch saw it
            ("MODIFIED", "changed", "40"),
            ("ADDED", "new", "41"),
        ]
        lists = api.log(stream=False)
        watches = api.log(stream=True)
        assert len(lists) == 2
        assert lists[1].at == 30.0 + lists[0].at  # relisted at once
        assert [w.params["resourceVersion"] for w in watches] == ["10", "50"]
        assert set(reflector.objects) == {"default/same", "default/changed", "default/new"}
        stats = reflector.statistics()
        assert stats.relists == 1
        assert stats.last_error is not None and "Gone" in stats.last_error
        nursery.cancel_scope.cancel()


async def test_410_status_relists_and_a_recreated_object_is_deleted_then_added(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(
            ("10", [pod("a", "1", uid="u1"), pod("b", "2")]), ("60", [pod("a", "55", uid="u2")])
        ),
        [STREAM_410_STATUS, STREAM_HANGS],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        drain(receive)
        await trio.sleep(1.0)
        events = []
        while True:
            try:
                events.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
        assert [(e.type, e.obj.metadata.name, e.obj.metadata.uid) for e in events] == [
            ("DELETED", "b", "uid-b"),
            ("DELETED", "a", "u1"),
            ("ADDED", "a", "u2"),
        ]
        assert api.log(stream=True)[-1].params["resourceVersion"] == "60"
        nursery.cancel_scope.cancel()


async def test_repeated_410_right_after_a_list_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(("10", []), ("11", []), ("12", [])),
        [STREAM_410_STATUS, STREAM_410_STATUS, STREAM_HANGS],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(5.0)
        assert gaps([r.at for r in api.log(stream=False)]) == [0.0, 0.8]
        nursery.cancel_scope.cancel()


async def test_410_on_the_list_lists_again(autojump_clock: trio.testing.MockClock) -> None:
    lister = Lister(("10", [pod("a", "1")]))
    lister.errors.append(status_response(410, "Expired", "continue token expired"))
    api = FakeApiserver(lister, [STREAM_HANGS])
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(reflector.run, send)
        assert trio.current_time() - start == 0.0  # a first 410 is relisted at once
        assert drain(receive) == [("ADDED", "a", "1")]
        assert len(api.log(stream=False)) == 2
        nursery.cancel_scope.cancel()


async def test_429_waits_retry_after_and_rewatches_without_listing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(("10", [pod("a", "1")])),
        [
            StreamScript([event_line("MODIFIED", pod("a", "15"))]),
            STREAM_429_RETRY_AFTER_7,
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(20.0)
        assert drain(receive) == [("ADDED", "a", "1"), ("MODIFIED", "a", "15")]
        watches = api.log(stream=True)
        assert [w.params["resourceVersion"] for w in watches] == ["10", "15", "15"]
        assert gaps([w.at for w in watches]) == [0.0, 7.0]
        assert len(api.log(stream=False)) == 1
        assert reflector.statistics().relists == 0
        nursery.cancel_scope.cancel()


async def test_failures_back_off_doubling_to_30s(autojump_clock: trio.testing.MockClock) -> None:
    api = FakeApiserver(
        Lister(("10", [])),
        [
            REFUSED,
            STREAM_CUT,
            STREAM_503,
            STREAM_ERROR_EVENT_500,
            STREAM_CUT_MID_LINE,
            *[REFUSED] * 5,
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(500.0)
        watches = api.log(stream=True)
        assert gaps([w.at for w in watches]) == pytest.approx(
            [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]
        )
        assert {w.params["resourceVersion"] for w in watches} == {"10"}
        assert len(api.log(stream=False)) == 1  # none of these is a reason to list
        assert reflector.statistics().restarts == 10
        nursery.cancel_scope.cancel()


async def test_backoff_resets_after_two_healthy_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(("10", [])),
        [
            REFUSED,
            REFUSED,
            REFUSED,
            StreamScript([Pause(121.0), ProtocolError("cut")]),  # healthy for 121 s
            REFUSED,
            StreamScript([Pause(60.0), ProtocolError("cut")]),  # healthy for only 60 s
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(500.0)
        assert gaps(watch_times(api)) == pytest.approx(
            [0.8, 1.6, 3.2, 121.0 + 0.8, 1.6, 60.0 + 3.2]
        )
        nursery.cancel_scope.cancel()


async def test_normal_end_rewatches_at_once_but_a_very_short_watch_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(
        Lister(("10", [])),
        [
            StreamScript([event_line("ADDED", pod("a", "11"))]),  # short, but delivered
            StreamScript([Pause(300.0)]),  # the server's timeoutSeconds ran out
            STREAM_ENDS_AT_ONCE,
            STREAM_ENDS_AT_ONCE,
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=NoJitter())
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(400.0)
        assert gaps(watch_times(api)) == pytest.approx([0.0, 300.0, 0.8, 1.6])
        assert [w.params["resourceVersion"] for w in api.log(stream=True)] == ["10"] + ["11"] * 4
        nursery.cancel_scope.cancel()


async def test_inactivity_timeout_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    api = FakeApiserver(
        Lister(("10", [])),
        # Bookmarks at 29 s and 59 s: periodic ones, so silence counts; then nothing at all.
        # Then the server's bookmarks are not trusted again: the next watch waits for its end.
        [
            StreamScript([Pause(29.0), bookmark("11"), Pause(30.0), bookmark("12"), HANG]),
            StreamScript([Pause(15.0), bookmark("13"), Pause(15.0), bookmark("13"), HANG]),
        ],
    )
    reflector = Reflector(
        api, PATH, Pod, settings=settings(inactivity_timeout=60.0), rng=NoJitter()
    )
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(900.0)
        first, second, third = api.log(stream=True)[:3]
        assert second.at - first.at == pytest.approx(59.0 + 60.0 + 0.8)
        assert second.params["resourceVersion"] == "12"
        # Its silence then lasts until the server's end (+ 30 s): a watch healthy for over
        # 2 min, so the backoff is back at its first step.
        timeout = int(second.params["timeoutSeconds"])
        assert third.at - second.at == pytest.approx(timeout + 30.0 + 0.8)
        assert third.params["resourceVersion"] == "13"
        last_error = reflector.statistics().last_error
        assert last_error is not None and "ReadTimeout" in last_error
        nursery.cancel_scope.cancel()


async def test_a_quiet_watch_of_a_server_without_bookmarks_lasts_until_the_server_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A custom resource on kube-apiserver 1.24: not one byte until timeoutSeconds.
    api = FakeApiserver(
        Lister(("10", [])),
        [StreamScript([Pause(300.0)]), StreamScript([Pause(300.0)]), STREAM_HANGS],
    )
    reflector = Reflector(
        api, PATH, Pod, settings=settings(inactivity_timeout=150.0), rng=random.Random(1)
    )
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(700.0)
        first, second, third = api.log(stream=True)
        # Ended by the server each time, re-watched at once: no timeout, no error, no backoff.
        assert second.at - first.at == pytest.approx(300.0)
        assert third.at - second.at == pytest.approx(300.0)
        assert reflector.statistics().last_error is None
        nursery.cancel_scope.cancel()


async def test_silence_past_the_servers_own_end_is_a_dead_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(Lister(("10", [])), [STREAM_HANGS, STREAM_HANGS])
    reflector = Reflector(
        api, PATH, Pod, settings=settings(inactivity_timeout=150.0), rng=NoJitter()
    )
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(1300.0)
        first, second = api.log(stream=True)[:2]
        timeout = int(first.params["timeoutSeconds"])
        assert second.at - first.at == pytest.approx(timeout + 30.0 + 0.8)
        last_error = reflector.statistics().last_error
        assert last_error is not None and "ReadTimeout" in last_error
        nursery.cancel_scope.cancel()


async def test_a_few_bookmarks_then_silence_cost_one_timeout_not_one_a_watch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A custom resource on kube-apiserver 1.24: two bookmarks a minute apart, then none.
    api = FakeApiserver(
        Lister(("10", [])),
        [
            StreamScript([Pause(60.0), bookmark("11"), Pause(60.0), bookmark("12"), HANG]),
            StreamScript([Pause(300.0)]),
            StreamScript([Pause(300.0)]),
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(
        api, PATH, Pod, settings=settings(inactivity_timeout=150.0), rng=NoJitter()
    )
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(1000.0)
        first, second, third, fourth = api.log(stream=True)
        assert second.at - first.at == pytest.approx(120.0 + 150.0 + 0.8)
        # Then the server's end is waited for: no more timeouts.
        assert (third.at - second.at, fourth.at - third.at) == pytest.approx((300.0, 300.0))
        nursery.cancel_scope.cancel()


async def test_a_bookmark_just_before_the_end_is_not_taken_for_periodic_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Some servers send one bookmark 2 s before the deadline, and nothing in between.
    api = FakeApiserver(
        Lister(("10", [])),
        [
            StreamScript([Pause(298.0), bookmark("11"), Pause(2.0)]),
            StreamScript([Pause(298.0), bookmark("12"), Pause(2.0)]),
            STREAM_HANGS,
        ],
    )
    reflector = Reflector(
        api, PATH, Pod, settings=settings(inactivity_timeout=150.0, max_watch_timeout=300)
    )
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(700.0)
        first, second, third = api.log(stream=True)
        assert (second.at - first.at, third.at - second.at) == pytest.approx((300.0, 300.0))
        assert third.params["resourceVersion"] == "12"
        assert reflector.statistics().last_error is None
        nursery.cancel_scope.cancel()


async def test_server_timeout_is_random_between_5_and_10_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scripts = [StreamScript([Pause(2.0)]) for _ in range(40)]
    api = FakeApiserver(Lister(("10", [])), [*scripts, STREAM_HANGS])
    reflector = Reflector(api, PATH, Pod, settings=settings(), rng=random.Random(3))
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        await trio.sleep(100.0)
        timeouts = [int(w.params["timeoutSeconds"]) for w in api.log(stream=True)]
        assert len(timeouts) == 41
        assert all(300 <= t <= 600 for t in timeouts)
        assert len(set(timeouts)) > 20  # spread, not one value
        nursery.cancel_scope.cancel()


async def test_two_megabyte_object_in_small_chunks(autojump_clock: trio.testing.MockClock) -> None:
    big = "x" * (2 * 1024 * 1024)
    data = event_line("ADDED", pod("big", "11", blob=big)) + event_line("ADDED", pod("small", "12"))
    chunks: list[bytes | Pause] = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    api = FakeApiserver(Lister(("10", [])), [StreamScript([*chunks, HANG])])
    reflector = Reflector(api, PATH, Pod, settings=settings())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        first = await receive.receive()
        second = await receive.receive()
        assert first.obj.metadata.annotations["blob"] == big
        assert second.obj.metadata.name == "small"
        nursery.cancel_scope.cancel()


async def test_line_split_inside_a_utf8_sequence(autojump_clock: trio.testing.MockClock) -> None:
    # U+2028 is a Unicode line break that text-line splitting would cut the JSON at.
    text = "näme \u2028 ☃ 🚀"
    line = event_line("ADDED", pod("u", "11", note=text))
    cut = line.index("☃".encode()) + 1  # inside the snowman's three bytes
    rocket = line.index("🚀".encode()) + 2
    api = FakeApiserver(
        Lister(("10", [])), [StreamScript([line[:cut], line[cut:rocket], line[rocket:], HANG])]
    )
    reflector = Reflector(api, PATH, Pod, settings=settings())
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        event = await receive.receive()
        assert event.obj.metadata.annotations["note"] == text
        nursery.cancel_scope.cancel()


async def test_a_line_over_max_object_size_is_a_clear_fatal_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    line = event_line("ADDED", pod("big", "11", blob="y" * 5000))
    api = FakeApiserver(
        Lister(("10", [])), [StreamScript([line[i : i + 100] for i in range(0, len(line), 100)])]
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(max_object_size=4096))
    send, _receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    with pytest.raises(ObjectTooLarge, match="max_object_size=4096"):
        await reflector.run(send)


async def test_an_object_that_does_not_fit_the_view_is_fatal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeApiserver(Lister(("10", [pod("a", "1")])), [STREAM_HANGS])
    reflector = Reflector(api, PATH, Strict, settings=settings())
    send, _receive = trio.open_memory_channel[WatchEvent[Strict]](10)
    with pytest.raises(InputError, match="does not fit the view"):
        await reflector.run(send)


async def test_bounded_channel_applies_backpressure(autojump_clock: trio.testing.MockClock) -> None:
    api = FakeApiserver(
        Lister(("10", [pod(f"p{i}", str(i)) for i in range(3)])),
        # A server that sends periodic bookmarks: its silence counts (see the next tests).
        [
            StreamScript(
                [bookmark("15"), bookmark("15")]
                + [event_line("ADDED", pod(f"w{i}", str(20 + i))) for i in range(3)]
                + [HANG]
            )
        ],
    )
    reflector = Reflector(api, PATH, Pod, settings=settings(inactivity_timeout=60.0))
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reflector.run, send)
        await trio.sleep(10.0)
        # One event buffered, the reflector blocked on the second; no watch opened yet.
        assert reflector.statistics().events == 1
        assert receive.statistics().tasks_waiting_send == 1
        assert api.log(stream=True) == []
        names = []
        watches = []
        for _ in range(6):
            # A slow consumer: 100 s between receives, longer than the inactivity timeout.
            await trio.sleep(100.0)
            watches.append(len(api.log(stream=True)))
            names.append((await receive.receive()).obj.metadata.name)
        assert names == ["p0", "p1", "p2", "w0", "w1", "w2"]
        # The watch opened once the list was taken (after p1), then stayed open for
        # 300 s while the reflector waited on the consumer: that is not inactivity.
        # Only once w2 was buffered did the server's silence count, and 60 s later
        # (before the last receive) the reflector reconnected.
        assert watches == [0, 0, 1, 1, 1, 2]
        nursery.cancel_scope.cancel()
    # The reflector closes its end when it stops.
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()


def test_settings_validation() -> None:
    from fleet.errors import ConfigError

    with pytest.raises(ConfigError):
        WatchSettings(min_watch_timeout=600, max_watch_timeout=300)
    with pytest.raises(ConfigError):
        WatchSettings(page_size=0)
    with pytest.raises(ConfigError):
        WatchSettings(inactivity_timeout=0)
    with pytest.raises(ConfigError):
        WatchSettings(max_object_size=10)


@pytest.mark.parametrize("keep_objects", [True, False])
async def test_relist_difference_without_keeping_objects(
    autojump_clock: trio.testing.MockClock, keep_objects: bool
) -> None:
    # keep_objects=False keeps (uid, resourceVersion) per key only: the same events come
    # out, a DELETED of an object not in the new list carrying its metadata alone.
    before = [pod("same", "1"), pod("changed", "2"), pod("deleted", "3"), pod("a", "4", uid="u1")]
    after = [pod("same", "1"), pod("changed", "40"), pod("new", "41"), pod("a", "55", uid="u2")]
    api = FakeApiserver(Lister(("10", before), ("50", after)), [STREAM_410_STATUS, STREAM_HANGS])
    reflector = Reflector(api, PATH, Pod, settings=settings(), keep_objects=keep_objects)
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        assert len(drain(receive)) == 4
        await trio.sleep(1.0)
        events = []
        while True:
            try:
                events.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
        # Without the objects, a list is handed over page by page: what no page held is
        # known (and DELETED) only at the end.
        gone = [("DELETED", "deleted", "uid-deleted")]
        changes = [
            ("MODIFIED", "changed", "uid-changed"),
            ("ADDED", "new", "uid-new"),
            ("DELETED", "a", "u1"),
            ("ADDED", "a", "u2"),
        ]
        assert [(e.type, e.obj.metadata.name, e.obj.metadata.uid) for e in events] == (
            gone + changes if keep_objects else changes + gone
        )
        deleted = events[0 if keep_objects else -1].obj
        assert (deleted.metadata.namespace, deleted.metadata.resource_version) == ("default", "3")
        assert reflector.statistics().objects == 4
        assert len(reflector.objects) == (4 if keep_objects else 0)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("keep_objects", [True, False])
async def test_a_list_is_handed_over_page_by_page_without_keeping_objects(
    autojump_clock: trio.testing.MockClock, keep_objects: bool
) -> None:
    # Without the objects, a list never holds more than one page of decoded objects.
    lister = Lister(("10", [pod("a", "1"), pod("b", "2"), pod("c", "3")]))
    handed_before_second_page: list[int] = []

    def handler(request: FakeRequest) -> Response:
        if "continue" in request.params:
            handed_before_second_page.append(receive.statistics().current_buffer_used)
        return lister(request)

    api = FakeApiserver(handler, [STREAM_HANGS])
    reflector = Reflector(api, PATH, Pod, settings=settings(page_size=2), keep_objects=keep_objects)
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(reflector.run, send)
        assert [name for _, name, _ in drain(receive)] == ["a", "b", "c"]
        assert handed_before_second_page == [0 if keep_objects else 2]
        nursery.cancel_scope.cancel()


async def test_a_resource_not_served_is_said_once_with_the_hint_then_waited_for_quietly(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster without the CRDs is one warning with the fix, not a 404 a minute."""
    lister = Lister(("5", [pod("a", "5")]))
    for _ in range(6):
        lister.errors.append(status_response(404, "NotFound", "404 page not found"))
    api = FakeApiserver(lister, [STREAM_HANGS])
    reflector = Reflector(
        api,
        PATH,
        Pod,
        rng=NoJitter(),
        missing_hint="install it with `crdgen crd | kubectl apply -f -`",
    )
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](10)
    with caplog.at_level(logging.INFO, logger="fleet.kube._watching"):
        async with trio.open_nursery() as nursery:
            await nursery.start(reflector.run, send)  # started once the CRD "is applied"
            assert [name for _, name, _ in drain(receive)] == ["a"]
            nursery.cancel_scope.cancel()
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            f"{PATH} is not served by the apiserver (404): install it with "
            "`crdgen crd | kubectl apply -f -`; waiting for it",
        ),
        ("WARNING", f"{PATH} is served now"),
    ]


@pytest.mark.parametrize("keep_objects", [True, False])
async def test_a_list_is_handed_over_in_a_round_or_two_of_a_busy_loop(
    autojump_clock: trio.testing.MockClock, keep_objects: bool
) -> None:
    """One ``send`` per listed object is one round of the event loop each: 10,000 per-node
    pod watches listing their pods on a busy shard waited a round per pod. The list goes
    into the channel's room at once."""
    items = [pod(f"p{i}", str(i)) for i in range(200)]
    api = FakeApiserver(Lister(("300", items)), [STREAM_HANGS])
    reflector = Reflector(
        api, PATH, Pod, settings=settings(page_size=500), keep_objects=keep_objects
    )
    send, receive = trio.open_memory_channel[WatchEvent[Pod]](1000)
    spinner = Spinner()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spinner.spin)
        await trio.lowlevel.checkpoint()
        before = spinner.rounds
        await nursery.start(reflector.run, send)
        assert spinner.rounds - before < 20, spinner.rounds - before
        assert len(drain(receive)) == 200
        nursery.cancel_scope.cancel()
