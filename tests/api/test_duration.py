"""Go durations: time.ParseDuration and Duration.String(), ported exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.api import format_go_duration, parse_delay, parse_go_duration
from fleet.errors import InputError

S = 10**9
MIN = 60 * S
H = 60 * MIN

# Cases from Go's time package tests (parseDurationTests), plus the brief's.
PARSED = [
    ("0", 0),
    ("-0", 0),
    ("+0", 0),
    ("5s", 5 * S),
    ("10s", 10 * S),
    ("1m30s", 90 * S),
    ("500ms", 500_000_000),
    ("1h", H),
    ("2h45m", 2 * H + 45 * MIN),
    ("1.5s", 1_500_000_000),
    ("300us", 300_000),
    ("300\u00b5s", 300_000),
    ("300\u03bcs", 300_000),
    ("1ns", 1),
    ("-1s", -S),
    ("+5s", 5 * S),
    ("-5s", -5 * S),
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600_000_000),
    ("5.s", 5 * S),
    (".5s", S // 2),
    ("1.0s", S),
    ("1.00s", S),
    ("1.004s", S + 4_000_000),
    ("1.0040s", S + 4_000_000),
    ("100.00100s", 100 * S + 1_000_000),
    ("3h30m", 3 * H + 30 * MIN),
    ("10.5s4m", 4 * MIN + 10 * S + 500_000_000),
    ("-2m3.4s", -(2 * MIN + 3 * S + 400_000_000)),
    ("1h2m3s4ms5us6ns", H + 2 * MIN + 3 * S + 4_000_000 + 5_000 + 6),
    ("39h9m14.425s", 39 * H + 9 * MIN + 14 * S + 425_000_000),
    ("52763797000ns", 52_763_797_000),
    ("0.3333333333333333333h", 20 * MIN),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", (1 << 63) - 1),
    ("9223372036854775.807us", (1 << 63) - 1),
    ("9223372036s854ms775us807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)),
    ("-9223372036854775.808us", -(1 << 63)),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("0.100000000000000000000h", 6 * MIN),
    ("0.830103483285477580700h", 49 * MIN + 48 * S + 372_539_827),
]


@pytest.mark.parametrize(("text", "nanos"), PARSED)
def test_parse_like_go(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'invalid duration "": empty'),
        ("3", 'invalid duration "3": missing unit'),
        ("10", 'invalid duration "10": missing unit'),
        ("-", 'invalid duration "-": empty'),
        ("s", 'invalid duration "s": expected a number'),
        (".", 'invalid duration ".": no digits before the unit'),
        ("-.", 'invalid duration "-.": no digits before the unit'),
        (".s", 'invalid duration ".s": no digits before the unit'),
        ("+.s", 'invalid duration "+.s": no digits before the unit'),
        ("1d", 'invalid duration "1d": unknown unit "d"'),
        ("10 s", 'invalid duration "10 s": unknown unit " s"'),
        ("\x85\x85", 'invalid duration "\x85\x85": expected a number'),
        ("9223372036854775808ns", 'invalid duration "9223372036854775808ns": out of range'),
        ("9223372036854775.808us", 'invalid duration "9223372036854775.808us": out of range'),
        (
            "9223372036s854ms775us808ns",
            'invalid duration "9223372036s854ms775us808ns": out of range',
        ),
        ("-9223372036854775809ns", 'invalid duration "-9223372036854775809ns": out of range'),
        ("3000000h", 'invalid duration "3000000h": out of range'),
    ],
)
def test_bad_durations_quote_the_value(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_go_duration(text)
    assert str(info.value).startswith(message)


def test_non_string_is_an_input_error() -> None:
    with pytest.raises(InputError, match="invalid duration 10: must be a string"):
        parse_go_duration(10)  # type: ignore[arg-type]


def test_delay_in_seconds_refuses_negative() -> None:
    assert parse_delay("10s") == 10.0
    assert parse_delay("1m30s") == 90.0
    assert parse_delay("500ms") == 0.5
    assert parse_delay("0") == 0.0
    with pytest.raises(InputError, match=r'^invalid duration "-1s": must not be negative'):
        parse_delay("-1s")


# Go's durationTests for Duration.String().
FORMATTED = [
    ("0s", 0),
    ("1ns", 1),
    ("1.1\u00b5s", 1100),
    ("2.2ms", 2_200_000),
    ("3.3s", 3_300_000_000),
    ("4m5s", 4 * MIN + 5 * S),
    ("4m5.001s", 4 * MIN + 5001 * 1_000_000),
    ("5h6m7.001s", 5 * H + 6 * MIN + 7001 * 1_000_000),
    ("8m0.000000001s", 8 * MIN + 1),
    ("2562047h47m16.854775807s", (1 << 63) - 1),
    ("-2562047h47m16.854775808s", -(1 << 63)),
    ("-1s", -S),
]


@pytest.mark.parametrize(("text", "nanos"), FORMATTED)
def test_format_like_go(text: str, nanos: int) -> None:
    assert format_go_duration(nanos) == text


def test_format_out_of_range() -> None:
    with pytest.raises(InputError, match="out of the int64 range"):
        format_go_duration(1 << 63)


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_round_trip_through_the_formatter(nanos: int) -> None:
    assert parse_go_duration(format_go_duration(nanos)) == nanos


_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "ms": 10**6, "s": S, "m": MIN, "h": H}


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(_UNITS))), min_size=1, max_size=6
    )
)
def test_whole_components_add_up(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * _UNITS[unit] for n, unit in parts)
    if total > 2**63 - 1:
        # Go's Duration is an int64: a sum past it is "out of range", never wrapped.
        with pytest.raises(InputError, match="out of range"):
            parse_go_duration(text)
        return
    assert parse_go_duration(text) == total
    assert parse_go_duration("-" + text) == -total
