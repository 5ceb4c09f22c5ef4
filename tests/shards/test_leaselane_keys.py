"""No node Lease is ever lost by the lane (autojump clock).

A shard on a loaded machine stopped renewing a few node Leases for good while it
renewed all the others (tests/fleet/test_failover.py, ~1 run in 3): the
last writes the apiserver served for such a node were two regular renewals and,
under a second later, a re-send after a 409, then nothing. Each test here plays
one interleaving of a regular renewal with a retry or a 409 re-send of the same
key, and asserts that regular renewals keep coming, one every interval, and that
every key the lane holds is accounted for (a timer armed, queued, or out with a
writer: :meth:`LeaseLane.lost`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import trio

from fleet.errors import FleetError, ReadTimeout, TransportError
from fleet.kube import BatchRequest, Response
from shards._leaselane import LeaseLane

INTERVAL = 2.0

Answer = Response | TransportError
Plan = Callable[[int, BatchRequest], tuple[float, Answer]]
"""``(n, request) -> (delay, answer)`` for the n-th PUT of the test (from 0)."""


def ok(_n: int, _r: BatchRequest) -> tuple[float, Answer]:
    return 0.01, Response(200, b"{}")


@dataclass
class Sent:
    at: float
    key: str
    retry: bool


class Server:
    """Answers each request of a batch as ``plan`` says, each after its own delay (the batch
    is answered when its slowest request is)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.puts = 0

    async def request_batch(self, requests: Sequence[BatchRequest]) -> list[Answer]:
        answers: list[Answer] = []
        delay = 0.0
        for request in requests:
            wait, answer = self.plan(self.puts, request)
            self.puts += 1
            delay = max(delay, wait)
            answers.append(answer)
        await trio.sleep(delay)
        return answers


class Kubelets:
    """A :class:`~shards._leaselane.LeaseOwner` renewing as NodeLeases does: a regular renewal
    arms the next one from its due time (from now if that has passed too), a 409 is re-read
    (``reread`` seconds) and sent again."""

    def __init__(self, plan: Plan = ok, *, reread: float = 0.05, writers: int = 4) -> None:
        self.lane = LeaseLane(Server(plan), self, writers=writers, rng=random.Random(0))
        self.due: dict[str, float] = {}
        self.sent: list[Sent] = []
        self.reread = reread
        self.renewing: set[str] = set()

    def start(self, key: str, when: float) -> None:
        self.renewing.add(key)
        self.due[key] = when
        self.lane.schedule(key, when)

    def stop(self, key: str) -> None:
        self.renewing.discard(key)
        self.lane.cancel(key)

    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
        if key not in self.renewing:
            return None
        now = trio.current_time()
        self.sent.append(Sent(now, key, retry))
        if not retry:
            due = self.due[key] + INTERVAL
            self.due[key] = due if due > now else now + INTERVAL
            self.lane.schedule(key, self.due[key])
        return BatchRequest("PUT", f"/leases/{key}", body=b"{}")

    async def lease_answered(self, key: str, answer: Response | FleetError) -> bool:
        if isinstance(answer, Response) and answer.status == 409:
            await trio.sleep(self.reread)  # the GET
            return True
        return False

    def regular(self, key: str, since: float = 0.0) -> list[float]:
        return [s.at for s in self.sent if s.key == key and not s.retry and s.at >= since]


async def renews_steadily(kubelets: Kubelets, key: str, *, after: float, span: float) -> None:
    """From ``after`` on, ``key`` gets a regular renewal every interval (a little late at most),
    and the lane accounts for every key it holds all along."""
    await trio.sleep_until(after)
    end = after + span
    while trio.current_time() < end:
        assert key in kubelets.lane and not kubelets.lane.lost(), kubelets.lane.lost()
        await trio.sleep(0.1)
    regular = kubelets.regular(key, since=after)
    assert len(regular) >= span / INTERVAL - 1, (regular, kubelets.sent)
    gaps = [b - a for a, b in pairwise(regular)]
    assert max(gaps) < INTERVAL + 0.5, (gaps, kubelets.sent)


async def test_a_regular_renewal_due_while_a_409_resend_is_out_arms_the_next(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """The failover test's lost key: renewal 1 gets a 409 (an earlier PUT was applied, its
    answer not read in time), is re-read and sent again; that re-send is slow, and the next
    regular renewal comes due while it is out. That renewal was sent as a retry (the key
    had an attempt count) so it armed nothing: the key was renewed twice more, then never."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        if n == 0:
            return 0.01, Response(409, b"{}")
        if n == 1:
            return 2.5, Response(200, b"{}")  # the re-send, out past the next due time
        return 0.01, Response(200, b"{}")

    kubelets = Kubelets(plan)
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await renews_steadily(kubelets, "a", after=5.0, span=30.0)


async def test_a_409_resend_queued_with_the_regular_renewal_arms_the_next(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """The re-read after a 409 ends after the next regular renewal came due, while it waits
    for the only writer (busy re-reading): the key is queued twice, and both copies were
    sent as retries."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        return (0.01, Response(409, b"{}")) if n == 0 else (0.01, Response(200, b"{}"))

    kubelets = Kubelets(plan, reread=2.2, writers=1)  # the GET ends at 2.21
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await renews_steadily(kubelets, "a", after=5.0, span=30.0)


async def test_a_failed_retry_while_the_regular_renewal_waits_keeps_the_key(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A 409 re-send fails (transport error) after the next regular renewal was taken from
    its timer: the failure found no timer and no saved due time ("cancelled meanwhile") and
    left the attempt count behind, so that renewal and every later one went as retries."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        if n == 0:
            return 0.01, Response(409, b"{}")
        if n == 1:
            return 2.5, ReadTimeout("no complete answer")  # the re-send: applied, unanswered
        return 0.01, Response(200, b"{}")

    kubelets = Kubelets(plan)
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await renews_steadily(kubelets, "a", after=5.0, span=30.0)


async def test_an_error_retry_then_a_409_keeps_the_key(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Renewal 1 fails (503), its retry gets a 409 (the first was applied after all), the
    re-send is slow and the regular renewal comes due meanwhile."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        if n == 0:
            return 0.01, Response(503, b"{}")
        if n == 1:
            return 0.01, Response(409, b"{}")
        if n == 2:
            return 2.5, Response(200, b"{}")
        return 0.01, Response(200, b"{}")

    kubelets = Kubelets(plan)
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await renews_steadily(kubelets, "a", after=6.0, span=30.0)


async def test_stop_and_resume_while_a_409_is_answered_keeps_the_key(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """The node is suspended and resumed while its renewal's 409 is being re-read: the
    re-send of the old renewal (slow) must not leave the key marked as retrying when the
    resumed key's next regular renewal comes due."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        if n == 0:
            return 0.01, Response(409, b"{}")
        if n == 2:
            return 2.5, Response(200, b"{}")  # the old renewal's re-send
        return 0.01, Response(200, b"{}")

    kubelets = Kubelets(plan, reread=0.5)
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await trio.sleep(0.2)  # renewal 1 out, its 409 being re-read
    kubelets.stop("a")
    kubelets.start("a", trio.current_time() + 0.1)
    await renews_steadily(kubelets, "a", after=6.0, span=30.0)


async def test_renewals_overlapping_a_slow_apiserver_keep_every_key(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Many keys, answers slower than the interval now and then, some applied-but-unanswered
    (ReadTimeout), some 409 (seeded): every key keeps renewing, none is ever unaccounted."""
    rng = random.Random(7)

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        if trio.current_time() > 60.0:
            return 0.01, Response(200, b"{}")
        roll = rng.random()
        delay = rng.choice((0.01, 0.3, 1.5, 2.5, 4.0))
        if roll < 0.15:
            return delay, Response(409, b"{}")
        if roll < 0.25:
            return delay, ReadTimeout("no complete answer")
        if roll < 0.3:
            return delay, Response(503, b"{}")
        return delay, Response(200, b"{}")

    kubelets = Kubelets(plan)
    await nursery.start(kubelets.lane.run)
    keys = [f"n{i}" for i in range(40)]
    for i, key in enumerate(keys):
        kubelets.start(key, i * INTERVAL / len(keys))
    while trio.current_time() < 70.0:
        assert not kubelets.lane.lost(), kubelets.lane.lost()
        await trio.sleep(0.25)
    await trio.sleep(10.0)  # a quiet apiserver again: every key renews every interval
    for key in keys:
        regular = kubelets.regular(key, since=75.0)
        assert len(regular) >= 2, (key, [s for s in kubelets.sent if s.key == key][-6:])


async def test_one_request_of_a_key_is_out_at_a_time(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A renewal due while the last one is out goes once that is answered (as a kubelet
    renews: one at a time), on top of what it returned, not racing it into a 409."""

    def plan(n: int, _r: BatchRequest) -> tuple[float, Answer]:
        return (5.0 if n == 0 else 0.01), Response(200, b"{}")

    kubelets = Kubelets(plan)
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await trio.sleep(4.9)
    assert [s.at for s in kubelets.sent] == [0.0]  # due at 2.0 and 4.0: waiting for it
    assert "a" in kubelets.lane and not kubelets.lane.lost()
    await trio.sleep(0.2)
    assert [(s.at, s.retry) for s in kubelets.sent] == [(0.0, False), (5.0, False)]
    await renews_steadily(kubelets, "a", after=6.0, span=20.0)


class PuttingOff(Kubelets):
    """Puts the first renewal off by a second (the shard's own Lease late for a moment)."""

    put_off = False

    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
        if not self.put_off:
            self.put_off = True
            self.due[key] = trio.current_time() + 1.0
            self.lane.schedule(key, self.due[key])
            return None
        return super().lease_request(key, retry=retry)


async def test_a_renewal_put_off_by_its_owner_stays_and_one_not_wanted_goes(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    kubelets = PuttingOff()
    await nursery.start(kubelets.lane.run)
    kubelets.start("a", 0.0)
    await trio.sleep(0.5)
    assert kubelets.sent == [] and "a" in kubelets.lane  # put off, still held
    await trio.sleep(1.0)
    assert [s.at for s in kubelets.sent] == [1.05]
    kubelets.renewing.discard("a")  # no longer renewed (as a released node), not cancelled
    await trio.sleep(2.5)
    assert "a" not in kubelets.lane and not kubelets.lane.lost()
    await trio.sleep(10.0)
    assert [s.at for s in kubelets.sent] == [1.05]
