"""The watch history keeps a time window beyond its count, as the real watch cache does."""

from __future__ import annotations

import time

import pytest

from fleet.sandbox import _store
from fleet.sandbox._store import Collection, Event


def _event(rv: int) -> Event:
    return Event(rv, "ADDED", {"metadata": {"name": f"p{rv}", "namespace": "ns"}}, None)


def test_fresh_events_stay_beyond_the_count_and_go_once_older_than_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    c = Collection(3, 0, history_window=75.0)
    for rv in range(1, 11):  # ten events within a second: all kept, a list from rv 1 holds
        c.record(_event(rv))
    assert [ev.rv for ev in c.history] == list(range(1, 11)) and c.window_start == 0
    now[0] += 76.0  # the window has passed: down to the count with the next event
    c.record(_event(11))
    assert [ev.rv for ev in c.history] == [9, 10, 11] and c.window_start == 8
    assert len(c.times) == len(c.history)


def test_without_a_window_the_count_alone_bounds_it() -> None:
    c = Collection(3, 0)
    for rv in range(1, 6):
        c.record(_event(rv))
    assert [ev.rv for ev in c.history] == [3, 4, 5] and c.window_start == 2


def test_the_cap_holds_whatever_the_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_store, "HISTORY_CAP", 5)
    c = Collection(2, 0, history_window=75.0)
    for rv in range(1, 9):
        c.record(_event(rv))
    assert [ev.rv for ev in c.history] == [4, 5, 6, 7, 8]
