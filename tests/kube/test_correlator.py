"""client-go's event aggregator and spam filter (fleet.kube._correlator), on their own."""

from __future__ import annotations

from fleet.kube import (
    AGGREGATE_MAX,
    AGGREGATE_WINDOW,
    SPAM_BURST,
    SPAM_REFILL,
    EventAggregator,
    SpamFilter,
)


def test_the_tenth_distinct_message_and_later_ones_are_combined() -> None:
    agg = EventAggregator()
    verdicts = [agg.combine("g", f"m{i}", float(i)) for i in range(AGGREGATE_MAX + 2)]
    assert verdicts == [False] * (AGGREGATE_MAX - 1) + [True] * 3
    # A message already among the nine kept is not new: it goes as itself (client-go keeps
    # max-1 after popping one).
    assert agg.combine("g", f"m{AGGREGATE_MAX + 1}", 20.0) is False
    assert agg.combine("other", "m0", 20.0) is False  # groups are apart


def test_a_group_lasts_ten_minutes_from_its_last_event_not_its_first() -> None:
    agg = EventAggregator()
    t = 0.0
    for i in range(AGGREGATE_MAX - 1):
        agg.combine("g", f"m{i}", t)
        t += AGGREGATE_WINDOW - 1  # each within the window of the one before
    assert agg.combine("g", "late", t) is True
    assert agg.combine("g", "after a silence", t + AGGREGATE_WINDOW + 1) is False


def test_the_aggregator_forgets_the_least_recently_used_group() -> None:
    agg = EventAggregator(max_events=2, cache=2)
    agg.combine("a", "x", 0.0)
    agg.combine("b", "x", 0.0)
    agg.combine("a", "x", 1.0)  # a used last: b goes when c comes
    agg.combine("c", "x", 2.0)
    assert agg.combine("a", "y", 3.0) is True  # a still holds x
    assert agg.combine("b", "y", 3.0) is False  # b started over


def test_the_spam_filter_gives_a_burst_then_one_per_refill() -> None:
    spam = SpamFilter()
    assert all(spam.allow("obj", 0.0) for _ in range(SPAM_BURST))
    assert spam.allow("obj", 1.0) is False
    assert spam.allow("other", 1.0) is True
    assert spam.allow("obj", SPAM_REFILL - 1) is False  # the refill is not yet a token
    assert spam.allow("obj", SPAM_REFILL + 1) is True
    assert spam.allow("obj", SPAM_REFILL + 2) is False


def test_the_spam_filter_forgets_the_least_recently_used_bucket() -> None:
    spam = SpamFilter(burst=1, cache=1)
    assert spam.allow("a", 0.0) and not spam.allow("a", 0.0)
    assert spam.allow("b", 0.0)  # a forgotten
    assert spam.allow("a", 0.0)  # a fresh bucket
