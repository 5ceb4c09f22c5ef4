"""Go ``time.Duration`` strings: parse and format exactly as Go does.

kube-mock's pod annotations (``zhizuqiu.github.com/delayRunning: 10s``), the
Node CR's ``statusUpdatesInterval`` and ``startupTimeout``, and the MockStatus
steps hold Go durations. :func:`parse_go_duration` is a line-for-line port of
``time.ParseDuration`` (units ns, us, µs, μs, ms, s, m, h; fractions; a sign;
a bare ``"0"``; int64 overflow refused; fractional digits beyond int64 precision
dropped, and the fraction scaled through a float64 exactly as Go does), giving
integer nanoseconds. :func:`format_go_duration` is ``Duration.String()``, so
``parse_go_duration(format_go_duration(n)) == n`` for every int64 ``n``.

The fleet's delays cannot be negative: :func:`parse_delay` refuses a negative
value with a message saying so, and returns float seconds (trio's clock unit).

This is the bottom layer (``fleet.api``): it imports only ``fleet.errors``.
"""

from __future__ import annotations

from fleet.errors import InputError

__all__ = [
    "GO_DURATION_PATTERN",
    "format_go_duration",
    "parse_delay",
    "parse_go_duration",
]

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # U+00B5 micro sign
    "\u03bcs": MICROSECOND,  # U+03BC Greek letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_INT64_LIMIT = 1 << 63

#: A (slightly looser than Go) pattern for non-negative Go durations, for CRD schemas.
#: The micro signs are literal: Go's RE2 has no \u escape, Python's re has no \x{...}.
GO_DURATION_PATTERN = r"^\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _invalid(orig: str, why: str = "") -> InputError:
    detail = f": {why}" if why else ""
    return InputError(f"invalid duration {_quote(orig)}{detail}")


def _leading_int(s: str, orig: str) -> tuple[int, str]:
    """Consume ``[0-9]*``; overflow of int64 is an error (Go ``leadingInt``)."""
    x = 0
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if x > _INT64_LIMIT // 10:
            raise _invalid(orig, "out of range")
        x = x * 10 + ord(s[i]) - ord("0")
        if x > _INT64_LIMIT:
            raise _invalid(orig, "out of range")
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Consume ``[0-9]*`` after a dot; digits past int64 precision are dropped (Go)."""
    x = 0
    scale = 1.0
    overflow = False
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            if x > (_INT64_LIMIT - 1) // 10:
                overflow = True
            else:
                y = x * 10 + ord(s[i]) - ord("0")
                if y > _INT64_LIMIT:
                    overflow = True
                else:
                    x = y
                    scale *= 10
        i += 1
    return x, scale, s[i:]


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds (``time.ParseDuration``).

    Signed: ``"-1.5s"`` -> ``-1_500_000_000``. Errors are :class:`InputError`
    quoting the value: ``invalid duration "10": missing unit``.
    """
    if not isinstance(text, str):
        raise InputError(f"invalid duration {text!r}: must be a string such as 10s or 1m30s")
    orig = text
    s = text
    neg = False
    if s and s[0] in "-+":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise _invalid(orig, "empty")
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise _invalid(orig, "expected a number, e.g. 10s, 1m30s, 500ms")
        before = len(s)
        v, s = _leading_int(s, orig)
        pre = before != len(s)
        post = False
        f, scale = 0, 1.0
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            f, scale, s = _leading_fraction(s)
            post = before != len(s)
        if not pre and not post:
            raise _invalid(orig, "no digits before the unit")
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise _invalid(orig, "missing unit (one of ns, us, ms, s, m, h)")
        unit_text, s = s[:i], s[i:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise _invalid(
                orig, f"unknown unit {_quote(unit_text)} (want one of ns, us, ms, s, m, h)"
            )
        if v > _INT64_LIMIT // unit:
            raise _invalid(orig, "out of range")
        v *= unit
        if f > 0:
            # Go: float64 is needed to be nanosecond accurate for fractions of hours.
            v += int(float(f) * (float(unit) / scale))
            if v > _INT64_LIMIT:
                raise _invalid(orig, "out of range")
        total += v
        if total > _INT64_LIMIT:
            raise _invalid(orig, "out of range")
    if neg:
        return -total
    if total > _INT64_LIMIT - 1:
        raise _invalid(orig, "out of range")
    return total


def parse_delay(text: str) -> float:
    """Parse a non-negative Go duration into float seconds; negative is an :class:`InputError`."""
    nanos = parse_go_duration(text)
    if nanos < 0:
        raise _invalid(text, "must not be negative (a delay counts from the pod's creation)")
    return nanos / SECOND


def _format_fraction(value: int, precision: int) -> tuple[str, int]:
    """Go ``fmtFrac``: the fractional digits of ``value / 10**precision``, trailing zeros dropped."""
    digits = ""
    printed = False
    for _ in range(precision):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    if printed:
        digits = "." + digits
    return digits, value


def format_go_duration(nanos: int) -> str:
    """Format integer nanoseconds as Go's ``Duration.String()``: ``"1h2m3.5s"``, ``"500ms"``, ``"0s"``."""
    if not -_INT64_LIMIT <= nanos < _INT64_LIMIT:
        raise InputError(f"duration {nanos}ns is out of the int64 range")
    if nanos == 0:
        return "0s"
    neg = nanos < 0
    u = -nanos if neg else nanos
    sign = "-" if neg else ""
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        if u < MILLISECOND:
            frac, whole = _format_fraction(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        frac, whole = _format_fraction(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, whole = _format_fraction(u, 9)
    out = f"{whole % 60}{frac}s"
    whole //= 60
    if whole > 0:
        out = f"{whole % 60}m{out}"
        whole //= 60
        if whole > 0:
            out = f"{whole}h{out}"
    return sign + out
