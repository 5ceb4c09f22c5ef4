"""Leader election between two electors on an in-memory Lease store (autojump clock)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from fleet.coordinator._election import LeaderElector
from fleet.coordinator._leases import lease_path
from fleet.kube import MemoryApiserver, MemoryClient, Response
from fleet.wire import COORDINATOR_LEASE, FLEET_NAMESPACE

NS = FLEET_NAMESPACE
LEASE = COORDINATOR_LEASE
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def wall() -> datetime:
    """A wall clock that moves with trio's (and is far from the real one: never compared)."""
    return EPOCH + timedelta(seconds=trio.current_time())


def elector(client: MemoryClient, name: str, seed: int) -> LeaderElector:
    return LeaderElector(
        client,
        namespace=NS,
        name=LEASE,
        identity=name,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        wall=wall,
        rng=random.Random(seed),
    )


@dataclass
class Term:
    identity: str
    start: float
    end: float | None = None


class Terms:
    """Who led when."""

    def __init__(self) -> None:
        self.terms: list[Term] = []

    def lead(self, identity: str) -> Callable[[], Awaitable[None]]:
        async def lead() -> None:
            term = Term(identity, trio.current_time())
            self.terms.append(term)
            try:
                await trio.sleep_forever()
            finally:
                term.end = trio.current_time()

        return lead

    def leaders_at(self, t: float) -> list[str]:
        return [x.identity for x in self.terms if x.start <= t and (x.end is None or t < x.end)]

    def assert_never_two(self) -> None:
        for term in self.terms:
            assert len(self.leaders_at(term.start)) <= 1, self.terms


def test_timings_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        LeaderElector(
            MemoryApiserver().client(), namespace=NS, name=LEASE, identity="a",
            lease_duration=10, renew_deadline=10, retry_period=2,
        )  # fmt: skip


async def test_one_leads_and_the_other_takes_over_after_it_stops_renewing(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = MemoryApiserver()
    a_client, b_client = server.client(), server.client()
    a, b = elector(a_client, "a", 1), elector(b_client, "b", 2)
    terms = Terms()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run, terms.lead("a"))
        await nursery.start(b.run, terms.lead("b"))  # same instant: they race for the create
        await trio.sleep(60)
        assert [t.identity for t in terms.terms] == ["a"]
        assert a.is_leader and not b.is_leader
        assert a.leading.is_set() and not b.leading.is_set()
        lease = server.get(lease_path(NS, LEASE))
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        assert lease["spec"]["leaseDurationSeconds"] == 15

        cut = trio.current_time()
        a_client.broken = True  # a can no longer reach the apiserver
        with trio.fail_after(30):
            await b.leading.wait()
        took_over = trio.current_time() - cut
        await trio.testing.wait_all_tasks_blocked()  # b's lead() has begun
        assert not a.is_leader
        a_term, b_term = terms.terms
        # a stepped down within renewDeadline of its last successful renewal...
        assert a_term.end is not None and a_term.end - cut <= 10
        # ...before b took over, and b waited out the lease as it observed it.
        assert a_term.end <= b_term.start
        assert 15 - 2 <= took_over <= 15 + 2 * 2.2 + 0.1
        lease = server.get(lease_path(NS, LEASE))
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1

        a_client.broken = False  # a comes back: it must not take over from a live b
        await trio.sleep(60)
        assert b.is_leader and not a.is_leader
        terms.assert_never_two()
        nursery.cancel_scope.cancel()


async def test_release_on_cancel_hands_over_quickly(autojump_clock: trio.abc.Clock) -> None:
    server = MemoryApiserver()
    a, b = elector(server.client(), "a", 1), elector(server.client(), "b", 2)
    terms = Terms()
    async with trio.open_nursery() as nursery:
        a_scope = trio.CancelScope()

        async def run_a() -> None:
            with a_scope:
                await a.run(terms.lead("a"))

        nursery.start_soon(run_a)
        await trio.sleep(1)
        await nursery.start(b.run, terms.lead("b"))
        await trio.sleep(30)
        stopped = trio.current_time()
        a_scope.cancel()
        with trio.fail_after(10):
            await b.leading.wait()
        # Released: b needs only its next retry, not the 15 s lease.
        assert trio.current_time() - stopped <= 2 * 2.2 + 0.1
        terms.assert_never_two()
        nursery.cancel_scope.cancel()


class _Hangs(MemoryClient):
    """A connection whose requests never get an answer while ``hanging``."""

    hanging = False

    async def request(self, *args: Any, **kwargs: Any) -> Response:
        if self.hanging:
            await trio.sleep_forever()
        return await super().request(*args, **kwargs)


async def test_losing_leadership_says_why(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """ "lost leadership" alone left a loaded bench run unexplained: the warning names the
    deadline and what the last attempt met."""
    server = MemoryApiserver()
    broken, hangs = server.client(), _Hangs(server)
    terms = Terms()
    async with trio.open_nursery() as nursery:
        await nursery.start(elector(broken, "a", 1).run, terms.lead("a"))
        await nursery.start(elector(hangs, "b", 2).run, terms.lead("b"))
        await trio.sleep(5)
        broken.broken = True
        await trio.sleep(30)  # a steps down: its requests fail; b takes over
        lost = [r.getMessage() for r in caplog.records if "lost leadership" in r.getMessage()]
        assert lost == [lost[0]] and lost[0].startswith(
            "a: lost leadership: not renewed within 10 s"
        )
        assert "last failure: " in lost[0] and "last failure: none" not in lost[0]
        hangs.hanging = True
        await trio.sleep(30)
        lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("b: lost")]
        assert lost and "was still unanswered" in lost[0], lost
        nursery.cancel_scope.cancel()
