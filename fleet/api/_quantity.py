"""Kubernetes resource quantities: exact parsing and the apiserver's canonical form.

A quantity is what a Node's capacity or a container's request holds: ``"100m"``,
``"20"``, ``"100Gi"``, ``"1e3"``. This module parses one to an exact
:class:`fractions.Fraction` with the semantics of apimachinery's
``resource.ParseQuantity`` (values round *up* to the nearest nano unit; binary
values below one fall back to decimal; binary values cap at 2^63-1), and
prints it as ``Quantity.String()`` does (``"1.5"`` -> ``"1500m"``,
``"0.5Gi"`` -> ``"512Mi"``, ``"1e3"`` stays ``"1e3"``). Input is checked
against the same pattern the apiserver puts on int-or-string quantity fields
(:data:`QUANTITY_PATTERN`), so a value this module accepts is one a real
apiserver stores.

Deliberate limits: exponents (``e``/``E`` notation) must be integers (Go
rejects ``1e1.5`` too) between -1000 and 1000; Go formats a decimal value
above 999E with no suffix at all (its suffix table ends at ``E``), we keep
the ``E`` suffix and a larger mantissa instead.

This is the bottom layer (``fleet.api``): it imports only ``fleet.errors``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from fleet.errors import InputError

__all__ = ["INT64_MAX", "QUANTITY_PATTERN", "Quantity", "QuantityFormat", "parse_quantity"]

#: The pattern the apiserver puts on quantity fields of CRDs (apimachinery's
#: ``Quantity.OpenAPISchemaFormat`` / controller-gen output), verbatim.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
# Split of an accepted value into sign, number and suffix.
_SPLIT_RE = re.compile(r"^([+-]?)([0-9]*\.?[0-9]*)(.*)$")

QuantityFormat = Literal["DecimalSI", "BinarySI", "DecimalExponent"]

_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_BY_EXPONENT = {e: s for s, e in _DECIMAL_SUFFIXES.items()}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BINARY_BY_EXPONENT = {e: s for s, e in _BINARY_SUFFIXES.items()}

_NANO = Fraction(1, 10**9)
#: The largest value Go's ``Quantity.Value()`` / ``MilliValue()`` can return: what a
#: kubelet can report and a scheduler can count. A larger quantity parses (the
#: apiserver stores ``1e400`` as typed) but no int64 holds it.
INT64_MAX = 2**63 - 1
_MAX_BINARY = Fraction(INT64_MAX)  # apimachinery's maxAllowed for BinarySI
_MAX_EXPONENT = 1000
_HINT = "want a number with an optional suffix (n u m k M G T P E Ki Mi Gi Ti Pi Ei) or exponent, e.g. 500m, 2, 100Gi, 1e3"


def _invalid(raw: object, why: str = _HINT) -> InputError:
    shown = f'"{raw}"' if isinstance(raw, str) else repr(raw)
    return InputError(f"invalid quantity {shown}: {why}")


def _round_up_to_nano(value: Fraction) -> Fraction:
    """Round away from zero to a multiple of 1n, as ParseQuantity does (inf.RoundUp)."""
    if value == 0:
        return value
    scaled = value / _NANO
    magnitude = math.ceil(abs(scaled))
    return Fraction(magnitude if scaled > 0 else -magnitude) * _NANO


def _strip_tens(mantissa: int, exponent: int) -> tuple[int, int]:
    """Move every factor of ten of ``mantissa`` into ``exponent``."""
    if mantissa == 0:
        return 0, 0
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    return mantissa, exponent


@functools.total_ordering
@dataclass(frozen=True, eq=False, slots=True)
class Quantity:
    """An exact Kubernetes quantity and the format it prints in.

    Compares, hashes and orders by value only (``Quantity.Cmp`` in Go), so
    ``parse_quantity("1Ki") == parse_quantity("1024")``. ``str()`` gives the
    apiserver's canonical form.
    """

    value: Fraction
    """The exact amount, already rounded up to a multiple of 1n."""
    format: QuantityFormat = "DecimalSI"
    """How :meth:`__str__` prints it (kept from the input, as Go does)."""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value == other.value
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self.value < other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"

    @classmethod
    def from_int(cls, value: int, format: QuantityFormat = "DecimalSI") -> Quantity:
        """A whole quantity (``resource.NewQuantity``)."""
        return cls(Fraction(value), format)

    @classmethod
    def from_milli(cls, milli: int) -> Quantity:
        """A quantity of ``milli`` thousandths, DecimalSI (``resource.NewMilliQuantity``)."""
        return cls(Fraction(milli, 1000), "DecimalSI")

    def milli_value(self) -> int:
        """The value in thousandths, rounded up (Go ``MilliValue``): ``"1.5"`` -> 1500.

        Held to the int64 range, as Go's result is; Go wraps a value beyond it
        (``"1e400"``), this saturates at :data:`INT64_MAX` instead, so no caller's
        arithmetic meets an unbounded integer.
        """
        return _saturate(math.ceil(self.value * 1000))

    def int_value(self) -> int:
        """The value as a whole number, rounded up (Go ``Value``): ``"100m"`` -> 1.

        Saturates at the int64 range as :meth:`milli_value` does.
        """
        return _saturate(math.ceil(self.value))

    def fits_int64(self, *, milli: bool = False) -> bool:
        """Whether Go's ``Value()`` (or ``MilliValue()``) holds this quantity exactly."""
        scaled = self.value * 1000 if milli else self.value
        return -INT64_MAX - 1 <= math.ceil(scaled) <= INT64_MAX

    def is_integer(self) -> bool:
        """Whether the value is a whole number (extended resources must be)."""
        return self.value.denominator == 1

    def __str__(self) -> str:
        value = self.value
        if value == 0:
            return "0"
        fmt = self.format
        if fmt == "BinarySI":
            if -1024 < value < 1024 or value.denominator != 1:
                fmt = "DecimalSI"  # avoids rounding, as CanonicalizeBytes does
            else:
                amount = abs(value.numerator)
                exponent = 0
                while amount % 1024 == 0 and exponent < 60:
                    amount //= 1024
                    exponent += 10
                sign = "-" if value < 0 else ""
                return f"{sign}{amount}{_BINARY_BY_EXPONENT.get(exponent, '')}"
        # DecimalSI and DecimalExponent: mantissa * 10**exponent, exponent a multiple of 3.
        # The value is a multiple of 1n, so value * 10**9 is an integer.
        scaled = value * 10**9
        if scaled.denominator != 1:  # only constructed Quantities can get here
            scaled = Fraction(math.ceil(scaled))
        mantissa, exponent = _strip_tens(int(scaled), -9)
        while exponent % 3 != 0:  # Python's % is a floor: this lowers the exponent, as Go's loop
            mantissa *= 10
            exponent -= 1
        if fmt == "DecimalExponent":
            return f"{mantissa}" if exponent == 0 else f"{mantissa}e{exponent}"
        while exponent > 18:
            mantissa *= 1000
            exponent -= 3
        return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"


def _saturate(value: int) -> int:
    return max(-INT64_MAX - 1, min(INT64_MAX, value))


def parse_quantity(raw: str | int) -> Quantity:
    """Parse a quantity as the apiserver does; :class:`InputError` names the value.

    Accepts what an int-or-string quantity field accepts: a string matching
    :data:`QUANTITY_PATTERN`, or an integer. Floats and booleans are refused
    (the CRD schema refuses them too: quote the value).
    """
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        if isinstance(raw, float):
            raise _invalid(raw, f'must be an integer or a string (quote it: "{raw}")')
        raise _invalid(raw, f"must be an integer or a string, not {type(raw).__name__}")
    if isinstance(raw, int):
        return Quantity(Fraction(raw), "DecimalSI")
    if not _QUANTITY_RE.match(raw) or raw != raw.strip():
        raise _invalid(raw)
    match = _SPLIT_RE.match(raw)
    assert match is not None  # the pattern above guarantees the shape
    sign, number, suffix = match.groups()
    whole, _, frac = number.partition(".")
    amount = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)

    fmt: QuantityFormat
    if suffix in _BINARY_SUFFIXES:
        fmt = "BinarySI"
        amount *= 2 ** _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        fmt = "DecimalSI"
        amount *= Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    else:  # e/E exponent
        fmt = "DecimalExponent"
        text = suffix[1:]
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise _invalid(raw, "the exponent must be a whole number")
        exponent = int(text)
        if abs(exponent) > _MAX_EXPONENT:
            raise _invalid(raw, f"exponent out of range (at most {_MAX_EXPONENT} either way)")
        amount *= Fraction(10) ** exponent

    amount = _round_up_to_nano(amount)
    if fmt == "BinarySI":
        amount = min(amount, _MAX_BINARY)
        if 0 < amount < 1:
            fmt = "DecimalSI"
    if sign == "-":
        amount = -amount
    return Quantity(amount, fmt)
