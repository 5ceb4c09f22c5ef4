"""Go's formatting of values, for error messages worded as the apiserver words them.

Shared by the selectors here and the sandbox's schema validation.
"""

from __future__ import annotations

__all__ = ["go_quote"]


def go_quote(s: str) -> str:
    """Go's ``%q`` for the strings that reach the apiserver's messages."""
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
