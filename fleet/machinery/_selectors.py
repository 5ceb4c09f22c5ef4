"""Label and field selectors, parsed, validated and evaluated as the apiserver does.

Pure library used by the sandbox apiserver to filter lists and watches
(``labelSelector``/``fieldSelector`` query parameters) and to evaluate
Deployment/ReplicaSet ``spec.selector``. Ports k8s.io/apimachinery
``pkg/labels/selector.go`` (lexer, parser, ``NewRequirement`` validation,
``Requirement.Matches``), ``pkg/apis/meta/v1/helpers.go``
(``LabelSelectorAsSelector``) and ``pkg/fields/selector.go`` (``ParseSelector``
with its ``\\``-escaping of ``,`` ``=`` and ``\\``).

Bad input raises :class:`fleet.errors.InputError` whose message is the text
the apiserver puts in its 400 ``Status`` (e.g. ``unable to parse requirement:
found '', expected: ',' or ')'``). Which field names a resource supports is the
server's business: :meth:`FieldSelector.fields` lists the names used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.errors import InputError
from fleet.machinery._gofmt import go_quote
from fleet.machinery._labels import label_value_errors, qualified_name_errors

__all__ = [
    "FieldSelector",
    "FieldTerm",
    "LabelSelector",
    "Requirement",
    "escape_field_value",
    "label_selector_from_dict",
    "parse_field_selector",
    "parse_label_selector",
]


def _invalid(path: str, value: str | list[str], detail: str) -> str:
    """``field.Invalid(path, value, detail).Error()``."""
    shown = (
        go_quote(value)
        if isinstance(value, str)
        else "[]string{" + ", ".join(go_quote(v) for v in value) + "}"
    )
    return f"{path}: Invalid value: {shown}: {detail}"


# --- label selectors -------------------------------------------------------------

_OPERATORS = ("in", "notin", "=", "==", "!=", "gt", "lt")
"""``binaryOperators`` in the order the parser's error message lists them."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a label selector: ``key``, an operator and its values.

    ``operator`` is one of ``in notin = == != exists !`` (``!`` is does-not-exist)
    ``gt lt``; ``values`` are kept sorted, as ``sets.String.List()`` does.
    """

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in ("in", "=", "=="):
            return self.key in labels and labels[self.key] in self.values
        if op in ("notin", "!="):
            return self.key not in labels or labels[self.key] not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("gt", "lt"):
            if self.key not in labels:
                return False
            have = _parse_int64(labels[self.key])
            want = _parse_int64(self.values[0]) if len(self.values) == 1 else None
            if have is None or want is None:
                return False
            return have > want if op == "gt" else have < want
        return False

    def __str__(self) -> str:
        if self.operator == "!":
            return "!" + self.key
        if self.operator == "exists":
            return self.key
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        sym = {"gt": ">", "lt": "<"}.get(self.operator, self.operator)
        return f"{self.key}{sym}{','.join(self.values)}"


def _parse_int64(s: str) -> int | None:
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        return None
    v = int(s)
    return v if -(2**63) <= v < 2**63 else None


class LabelSelector:
    """A parsed label selector: the conjunction of its :attr:`requirements`.

    ``str()`` renders it as the apiserver does (requirements sorted by key);
    parsing that string gives an equal selector.
    """

    __slots__ = ("_nothing", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(
            sorted(requirements, key=lambda r: r.key)
        )
        self._nothing = nothing

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        """``labels.Nothing()``: what a nil metav1.LabelSelector selects."""
        return cls(nothing=True)

    @property
    def empty(self) -> bool:
        """True when the selector selects everything (no requirements)."""
        return not self._nothing and not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self._nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(nothing)" if self._nothing else f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self._nothing == other._nothing and self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash((self._nothing, self.requirements))


# Lexer tokens
_EOS, _IDENT, _ERROR = "EOS", "IDENT", "ERROR"
_SPECIAL = frozenset("=!(),><")
_SYMBOLS = {
    ")": ")",
    ",": ",",
    "!": "!",
    "==": "==",
    "=": "=",
    ">": "gt",
    "<": "lt",
    "!=": "!=",
    "(": "(",
}
_KEYWORDS = {"in": "in", "notin": "notin"}
_WHITESPACE = frozenset(" \t\r\n")


def _lex(s: str) -> list[tuple[str, str]]:
    """Tokens of ``s`` as ``(token, literal)``, ending with the end-of-string token."""
    items: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in _WHITESPACE:
            i += 1
        if i >= n or s[i] == "\0":
            items.append((_EOS, ""))
            return items
        if s[i] in _SPECIAL:
            buf = ""
            last: tuple[str, str] | None = None
            while i < n and s[i] in _SPECIAL:
                buf += s[i]
                if buf in _SYMBOLS:
                    last = (_SYMBOLS[buf], buf)
                    i += 1
                elif last is not None:
                    break
                else:
                    i += 1
            if last is None:
                items.append((_ERROR, f"error expected: keyword found '{buf}'"))
            else:
                items.append(last)
            continue
        start = i
        while i < n and s[i] not in _WHITESPACE and s[i] not in _SPECIAL and s[i] != "\0":
            i += 1
        word = s[start:i]
        items.append((_KEYWORDS.get(word, _IDENT), word))


class _LabelParser:
    def __init__(self, s: str) -> None:
        self.items = _lex(s)
        self.pos = 0

    def lookahead(self, values: bool = True) -> tuple[str, str]:
        tok, lit = self.items[self.pos]
        if values and tok in ("in", "notin"):
            tok = _IDENT
        return tok, lit

    def consume(self, values: bool = True) -> tuple[str, str]:
        item = self.lookahead(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_IDENT, "!"):
                try:
                    reqs.append(self.requirement())
                except _ParseError as exc:
                    raise InputError(f"unable to parse requirement: {exc}") from None
                tok, lit = self.consume()
                if tok == _EOS:
                    return reqs
                if tok == ",":
                    tok2, lit2 = self.lookahead()
                    if tok2 not in (_IDENT, "!"):
                        raise InputError(f"found '{lit2}', expected: identifier after ','")
                else:
                    raise InputError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _EOS:
                return reqs
            else:
                raise InputError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        key, op = self.key_and_inferred_operator()
        if op in ("exists", "!"):
            return _new_requirement(key, op, [])
        op = self.operator()
        if op in ("in", "notin"):
            values = self.values_list()
        else:
            values = self.exact_value()
        return _new_requirement(key, op, sorted(set(values)))

    def key_and_inferred_operator(self) -> tuple[str, str]:
        op = ""
        tok, lit = self.consume()
        if tok == "!":
            op = "!"
            tok, lit = self.consume()
        if tok != _IDENT:
            raise _ParseError(f"found '{lit}', expected: identifier")
        errs = qualified_name_errors(lit)
        if errs:
            raise _ParseError(_invalid("<nil>", lit, "; ".join(errs)))
        if self.lookahead()[0] in (_EOS, ",") and op != "!":
            op = "exists"
        return lit, op

    def operator(self) -> str:
        tok, lit = self.consume(values=False)
        if tok in ("in", "notin", "=", "==", "!=", "gt", "lt"):
            return tok
        raise _ParseError(f"found '{lit}', expected: {', '.join(_OPERATORS)}")

    def values_list(self) -> list[str]:
        tok, lit = self.consume()
        if tok != "(":
            raise _ParseError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_IDENT, ","):
            s = self.identifiers()
            if self.consume()[0] != ")":
                raise _ParseError(f"found '{lit}', expected: ')'")
            return s
        if tok == ")":
            self.consume()
            return [""]
        raise _ParseError(f"found '{lit}', expected: ',', ')' or identifier")

    def identifiers(self) -> list[str]:
        s: list[str] = []
        while True:
            tok, lit = self.consume()
            if tok == _IDENT:
                s.append(lit)
                tok2, lit2 = self.lookahead()
                if tok2 == ",":
                    continue
                if tok2 == ")":
                    return s
                raise _ParseError(f"found '{lit2}', expected: ',' or ')'")
            if tok == ",":
                if not s:
                    s.append("")
                tok2, _ = self.lookahead()
                if tok2 == ")":
                    s.append("")
                    return s
                if tok2 == ",":
                    self.consume()
                    s.append("")
                continue
            raise _ParseError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        tok, _ = self.lookahead()
        if tok in (_EOS, ","):
            return [""]
        tok, lit = self.consume()
        if tok == _IDENT:
            return [lit]
        raise _ParseError(f"found '{lit}', expected: identifier")


class _ParseError(Exception):
    pass


def _new_requirement(key: str, op: str, values: list[str]) -> Requirement:
    """``labels.NewRequirement``: validate and build (errors joined as an aggregate)."""
    errs: list[str] = []
    key_errs = qualified_name_errors(key)
    if key_errs:
        errs.append(_invalid("key", key, "; ".join(key_errs)))
    if op in ("in", "notin"):
        if not values:
            errs.append(
                _invalid("values", values, "for 'in', 'notin' operators, values set can't be empty")
            )
    elif op in ("=", "==", "!="):
        if len(values) != 1:
            errs.append(
                _invalid("values", values, "exact-match compatibility requires one single value")
            )
    elif op in ("exists", "!"):
        if values:
            errs.append(
                _invalid("values", values, "values set must be empty for exists and does not exist")
            )
    elif op in ("gt", "lt"):
        if len(values) != 1:
            errs.append(
                _invalid(
                    "values", values, "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            )
        for i, v in enumerate(values):
            if _parse_int64(v) is None:
                errs.append(
                    _invalid(
                        f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer"
                    )
                )
    else:
        supported = ", ".join(
            go_quote(o) for o in ("!", "!=", "=", "==", "gt", "in", "lt", "notin", "exists")
        )
        errs.append(f"operator: Unsupported value: {go_quote(op)}: supported values: {supported}")
    for i, v in enumerate(values):
        value_errs = label_value_errors(v)
        if value_errs:
            errs.append(_invalid(f"values[{i}][{key}]", v, "; ".join(value_errs)))
    if errs:
        raise _ParseError(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    return Requirement(key, op, tuple(values))


def parse_label_selector(s: str) -> LabelSelector:
    """``labels.Parse``: parse a ``labelSelector`` query parameter.

    ``""`` selects everything. Raises :class:`InputError` with the apiserver's text.
    """
    return LabelSelector(_LabelParser(s).parse())


_EXPRESSION_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """``metav1.LabelSelectorAsSelector``: a Deployment's/ReplicaSet's ``spec.selector``.

    ``None`` selects nothing; ``{}`` (no matchLabels, no matchExpressions)
    selects everything.
    """
    if sel is None:
        return LabelSelector.nothing()
    match_labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise InputError(
            "invalid label selector: matchLabels must be a map, matchExpressions a list"
        )
    if not match_labels and not expressions:
        return LabelSelector.everything()
    reqs: list[Requirement] = []
    try:
        for k, v in match_labels.items():
            reqs.append(_new_requirement(str(k), "=", [str(v)]))
        for expr in expressions:
            if not isinstance(expr, Mapping):
                raise InputError("invalid label selector: matchExpressions items must be maps")
            op = _EXPRESSION_OPERATORS.get(str(expr.get("operator", "")))
            if op is None:
                raise InputError(
                    f"{go_quote(str(expr.get('operator', '')))} is not a valid label selector operator"
                )
            values = [str(v) for v in expr.get("values") or []]
            if op in ("in", "notin"):
                values = sorted(set(values))
            reqs.append(_new_requirement(str(expr.get("key", "")), op, values))
    except _ParseError as exc:
        raise InputError(str(exc)) from None
    return LabelSelector(reqs)


# --- field selectors -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldTerm:
    """``field=value`` (``op`` ``"="``; ``==`` parses to it) or ``field!=value``."""

    field: str
    op: str
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        have = fields.get(self.field, "")
        return have == self.value if self.op == "=" else have != self.value

    def __str__(self) -> str:
        return f"{self.field}{self.op}{escape_field_value(self.value)}"


class FieldSelector:
    """A parsed field selector: the conjunction of its :attr:`terms`.

    A field missing from the mapping given to :meth:`matches` counts as ``""``
    (``fields.Set.Get``), so ``spec.nodeName=`` selects unscheduled pods.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: Iterable[FieldTerm] = ()) -> None:
        self.terms: tuple[FieldTerm, ...] = tuple(terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def fields(self) -> set[str]:
        """The field names used, for the server to reject unsupported ones."""
        return {t.field for t in self.terms}

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(t.matches(fields) for t in self.terms)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self.terms == other.terms

    def __hash__(self) -> int:
        return hash(self.terms)


def escape_field_value(s: str) -> str:
    """``fields.EscapeValue``: escape ``\\``, ``,`` and ``=`` in a field selector value."""
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(s: str) -> str:
    if not any(c in s for c in "\\,="):
        return s
    out: list[str] = []
    in_slash = False
    for c in s:
        if in_slash:
            if c in "\\,=":
                out.append(c)
            else:
                raise InputError(f"invalid field selector: invalid escape sequence: \\{c}")
            in_slash = False
            continue
        if c == "\\":
            in_slash = True
        elif c in ",=":
            # Go formats the rune with %v: its code point.
            raise InputError(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if in_slash:
        raise InputError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(s: str) -> list[str]:
    if not s:
        return []
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, c in enumerate(s):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(s[start:i])
            start = i + 1
    terms.append(s[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(s: str) -> FieldSelector:
    """``fields.ParseSelector``: parse a ``fieldSelector`` query parameter.

    Terms are sorted as the apiserver sorts them; ``==`` is stored as ``=``.
    Raises :class:`InputError` with the apiserver's text.
    """
    terms: list[FieldTerm] = []
    for part in sorted(_split_terms(s)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise InputError(f"invalid selector: '{s}'; can't understand '{part}'")
        lhs, op, rhs = split
        value = _unescape_field_value(rhs)
        terms.append(FieldTerm(lhs, "!=" if op == "!=" else "=", value))
    return FieldSelector(terms)
