"""Kubernetes quantities: parsing, the apiserver's canonical form, milli helpers, errors."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.api import INT64_MAX, QUANTITY_PATTERN, Quantity, parse_quantity
from fleet.errors import InputError

# (input, canonical form as apimachinery's Quantity.String() prints it)
CANONICAL = [
    ("100m", "100m"),
    ("20", "20"),
    ("100Gi", "100Gi"),
    ("1e3", "1e3"),
    ("1E3", "1e3"),
    ("1.5", "1500m"),
    ("500M", "500M"),
    ("2Ki", "2Ki"),
    ("0.5Gi", "512Mi"),
    ("1.5Gi", "1536Mi"),
    ("1536Mi", "1536Mi"),
    ("0.5Ki", "512"),
    ("0.1Ki", "102400m"),
    ("1024", "1024"),
    ("1000m", "1"),
    ("1000000", "1M"),
    ("1000k", "1M"),
    ("1.5e3", "1500"),
    ("12e-1", "1200e-3"),
    ("0", "0"),
    ("0Gi", "0"),
    ("-0.0", "0"),
    ("-1", "-1"),
    ("+5", "5"),
    (".5", "500m"),
    ("1.", "1"),
    ("1n", "1n"),
    ("0.1n", "1n"),
    ("1.0000000001", "1000000001n"),
    ("1Ei", "1Ei"),
    ("8Ei", "9223372036854775807"),
    ("128", "128"),
    ("300Gi", "300Gi"),
]


@pytest.mark.parametrize(("raw", "canonical"), CANONICAL)
def test_canonical_form(raw: str, canonical: str) -> None:
    assert str(parse_quantity(raw)) == canonical


def test_exact_values() -> None:
    assert parse_quantity("100m").value == Fraction(1, 10)
    assert parse_quantity("100Gi").value == 100 * 2**30
    assert parse_quantity("500M").value == 500 * 10**6
    assert parse_quantity("1e3").value == 1000
    assert parse_quantity(20).value == 20
    assert parse_quantity("1Ki") == parse_quantity("1024") == Quantity.from_int(1024)
    assert parse_quantity("1") < parse_quantity("1001m")
    assert len({parse_quantity("1k"), parse_quantity("1000"), parse_quantity("1e3")}) == 1


def test_milli_and_int_values_round_up() -> None:
    assert parse_quantity("100m").milli_value() == 100
    assert parse_quantity("1.5").milli_value() == 1500
    assert parse_quantity("1n").milli_value() == 1
    assert parse_quantity("100m").int_value() == 1
    assert parse_quantity("2Ki").int_value() == 2048
    assert Quantity.from_milli(1500) == parse_quantity("1.5")
    assert str(Quantity.from_milli(250)) == "250m"
    assert parse_quantity("8").is_integer() and not parse_quantity("1.5").is_integer()


def test_values_saturate_at_the_int64_range() -> None:
    """Go's Value() is an int64; a larger quantity parses but its value saturates here
    (Go wraps), so no caller does arithmetic on a 400-digit integer."""
    huge = parse_quantity("1e400")
    assert str(huge) == "10e399"  # Go's canonical form: the exponent a multiple of 3
    assert huge.int_value() == huge.milli_value() == INT64_MAX
    assert parse_quantity("-1e400").int_value() == -INT64_MAX - 1
    assert not huge.fits_int64()
    assert parse_quantity("9223372036854775807").fits_int64()
    assert not parse_quantity("9223372036854775807").fits_int64(milli=True)
    assert parse_quantity("9223372036854775").fits_int64(milli=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", 'invalid quantity "abc": want a number'),
        ("", 'invalid quantity "": want a number'),
        (" 1", 'invalid quantity " 1"'),
        ("1 ", 'invalid quantity "1 "'),
        ("1.5.5", 'invalid quantity "1.5.5"'),
        ("1Kb", 'invalid quantity "1Kb"'),
        ("1e", 'invalid quantity "1e"'),
        ("Ki", 'invalid quantity "Ki"'),
        ("--1", 'invalid quantity "--1"'),
        ("1e1.5", 'invalid quantity "1e1.5": the exponent must be a whole number'),
        ("1e2000", 'invalid quantity "1e2000": exponent out of range'),
        (1.5, 'invalid quantity 1.5: must be an integer or a string (quote it: "1.5")'),
        (True, "invalid quantity True: must be an integer or a string, not bool"),
        (None, "invalid quantity None: must be an integer or a string, not NoneType"),
    ],
)
def test_bad_quantities_name_the_value(raw: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_quantity(raw)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


_SUFFIXES = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_SCALE = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
    "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}  # fmt: skip


@st.composite
def quantity_strings(draw: st.DrawFn) -> tuple[str, Fraction]:
    whole = draw(st.integers(min_value=0, max_value=10**6))
    frac = draw(st.one_of(st.none(), st.text(alphabet="0123456789", max_size=10)))
    sign = draw(st.sampled_from(["", "+", "-"]))
    exponent = draw(st.one_of(st.none(), st.integers(min_value=-12, max_value=12)))
    number = str(whole) if frac is None else f"{whole}.{frac}"
    value = Fraction(Decimal(number + ("0" if number.endswith(".") else "")))
    if exponent is not None:
        text = f"{sign}{number}e{exponent}"
        value *= Fraction(10) ** exponent
    else:
        suffix = draw(st.sampled_from(_SUFFIXES))
        text = f"{sign}{number}{suffix}"
        value *= _SCALE[suffix]
        if suffix.endswith("i"):
            value = min(value, Fraction(2**63 - 1))  # apimachinery caps binary values
    return text, -value if sign == "-" else value


@given(quantity_strings())
def test_generated_quantities_parse_exactly(case: tuple[str, Fraction]) -> None:
    text, exact = case
    assert re.match(QUANTITY_PATTERN, text)
    q = parse_quantity(text)
    # Rounded away from zero to the next nano unit, never by more than one nano unit.
    assert abs(q.value) >= abs(exact)
    assert abs(q.value - exact) < Fraction(1, 10**9)
    assert (q.value * 10**9).denominator == 1


@given(quantity_strings())
def test_canonical_form_is_a_fixed_point(case: tuple[str, Fraction]) -> None:
    q = parse_quantity(case[0])
    canonical = str(q)
    assert re.match(QUANTITY_PATTERN, canonical)
    again = parse_quantity(canonical)
    assert again == q
    assert str(again) == canonical


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_round_trip(n: int) -> None:
    q = parse_quantity(n)
    assert q.value == n
    assert parse_quantity(str(q)) == q
    assert parse_quantity(str(n)) == q


@given(st.text(max_size=8))
def test_pattern_and_parser_agree(text: str) -> None:
    """What the CRD pattern refuses, the parser refuses; what both accept, parses."""
    exponent_fraction = re.search(r"[eE][+-]?[0-9]*\.", text) is not None
    if re.match(QUANTITY_PATTERN, text) and text == text.strip() and not exponent_fraction:
        parse_quantity(text)
    elif not re.match(QUANTITY_PATTERN, text) or text != text.strip():
        with pytest.raises(InputError):
            parse_quantity(text)
