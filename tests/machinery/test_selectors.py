"""Label and field selectors: the apiserver's grammar, messages and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import InputError
from fleet.machinery import (
    FieldSelector,
    FieldTerm,
    LabelSelector,
    Requirement,
    escape_field_value,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)

# --- label selectors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {"a": "b"}, True),
        ("app=demo,tier=a", {"app": "demo", "tier": "a"}, True),
        ("app=demo,tier=a", {"app": "demo", "tier": "b"}, False),
        ("app==demo", {"app": "demo"}, True),
        ("app!=demo", {}, True),
        ("app!=demo", {"app": "demo"}, False),
        ("env in (prod, qa)", {"env": "qa"}, True),
        ("env in (prod,qa)", {"env": "dev"}, False),
        ("env notin (prod)", {}, True),
        ("env notin (prod)", {"env": "prod"}, False),
        ("env", {"env": ""}, True),
        ("env", {}, False),
        ("!env", {}, True),
        ("!env", {"env": "x"}, False),
        ("x=", {"x": ""}, True),
        ("n>3", {"n": "4"}, True),
        ("n<3", {"n": "4"}, False),
        ("n>3", {"n": "abc"}, False),
        ("example.com/role in (a)", {"example.com/role": "a"}, True),
    ],
)
def test_matching(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        # recorded: watch.json #30
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("=", "found '=', expected: !, identifier, or 'end of string'"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a=(b", "unable to parse requirement: found '(', expected: identifier"),
        ("a>b", "for 'Gt', 'Lt' operators, the value must be an integer"),
        (
            "A@=b",
            'unable to parse requirement: <nil>: Invalid value: "A@": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        ("a=b_", 'values[0][a]: Invalid value: "b_": a valid label must be an empty string'),
        ("Bad/a=b", "prefix part a lowercase RFC 1123 subdomain"),
    ],
)
def test_errors_carry_the_apiserver_text(selector: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_label_selector(selector)
    assert message in str(info.value)


def test_empty_and_rendering() -> None:
    assert parse_label_selector("").empty
    sel = parse_label_selector("z=1, a in (y,x), !b")
    assert not sel.empty
    assert str(sel) == "a in (x,y),!b,z=1"


def test_label_selector_from_dict() -> None:
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "d"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"app": "d", "tier": "b"})
    assert not sel.matches({"app": "d", "tier": "b", "gone": "1"})
    assert str(sel) == "app=d,!gone,tier in (a,b)"
    assert label_selector_from_dict({}).empty
    nothing = label_selector_from_dict(None)
    assert not nothing.empty and not nothing.matches({})
    with pytest.raises(InputError, match='"Bogus" is not a valid label selector operator'):
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
    with pytest.raises(InputError, match="values set can't be empty"):
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "In"}]})


_name = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,8}[a-z0-9])?", fullmatch=True)
_key = st.one_of(
    _name,
    st.builds(lambda p, n: f"{p}.io/{n}", st.from_regex(r"[a-z]{1,5}", fullmatch=True), _name),
)
_value = st.one_of(st.just(""), _name)
_requirement = st.one_of(
    st.builds(
        lambda k, v, op: Requirement(k, op, (v,)), _key, _value, st.sampled_from(["=", "==", "!="])
    ),
    st.builds(
        lambda k, vs, op: Requirement(k, op, tuple(sorted(set(vs)))),
        _key,
        st.lists(_value, min_size=1, max_size=3),
        st.sampled_from(["in", "notin"]),
    ),
    st.builds(lambda k, op: Requirement(k, op), _key, st.sampled_from(["exists", "!"])),
)
_labels = st.dictionaries(_key, _value, max_size=4)


@given(st.lists(_requirement, max_size=4))
def test_render_parse_round_trip(reqs: list[Requirement]) -> None:
    sel = LabelSelector(reqs)
    assert parse_label_selector(str(sel)) == sel


def _reference(r: Requirement, labels: dict[str, str]) -> bool:
    has = r.key in labels
    if r.operator in ("=", "==", "in"):
        return has and labels[r.key] in r.values
    if r.operator in ("!=", "notin"):
        return not has or labels[r.key] not in r.values
    return has if r.operator == "exists" else not has


@given(st.lists(_requirement, max_size=4), _labels, st.data())
def test_matches_agrees_with_reference(
    reqs: list[Requirement], labels: dict[str, str], data: st.DataObject
) -> None:
    # bias towards labels the requirements talk about
    for r in reqs:
        if data.draw(st.booleans()):
            labels[r.key] = data.draw(st.sampled_from([*r.values, "zz"]))
    sel = parse_label_selector(str(LabelSelector(reqs)))
    assert sel.matches(labels) == all(_reference(r, labels) for r in reqs)


# --- field selectors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "fields", "expected"),
    [
        ("spec.nodeName=fs-node-1", {"spec.nodeName": "fs-node-1"}, True),
        ("spec.nodeName!=", {"spec.nodeName": "n"}, True),
        ("spec.nodeName!=", {"spec.nodeName": ""}, False),
        ("spec.nodeName=", {}, True),
        ("spec.nodeName==n", {"spec.nodeName": "n"}, True),
        (
            "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName=",
            {"status.phase": "Pending", "spec.nodeName": ""},
            True,
        ),
        ("metadata.name=a\\,b", {"metadata.name": "a,b"}, True),
        ("", {"x": "y"}, True),
    ],
)
def test_field_matching(selector: str, fields: dict[str, str], expected: bool) -> None:
    assert parse_field_selector(selector).matches(fields) is expected


def test_field_names_used() -> None:
    sel = parse_field_selector("status.phase!=Succeeded,spec.foo=bar")
    assert sel.fields() == {"status.phase", "spec.foo"}
    assert str(sel) == "spec.foo=bar,status.phase!=Succeeded"


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("a", "invalid selector: 'a'; can't understand 'a'"),
        ("a=b=c", "invalid field selector: unescaped character in value: 61"),
        ("a=b\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_field_errors(selector: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_field_selector(selector)
    assert str(info.value) == message


_field_name = st.from_regex(r"[a-z][a-zA-Z.]{0,12}", fullmatch=True)
_field_term = st.builds(FieldTerm, _field_name, st.sampled_from(["=", "!="]), st.text(max_size=6))


@given(st.lists(_field_term, max_size=4))
def test_field_render_parse_round_trip(terms: list[FieldTerm]) -> None:
    rendered = ",".join(str(t) for t in terms)
    parsed = parse_field_selector(rendered)
    assert sorted(parsed.terms, key=str) == sorted(terms, key=str)


@given(st.text(max_size=10))
def test_escape_round_trip(value: str) -> None:
    assert parse_field_selector("f=" + escape_field_value(value)).terms == (
        FieldTerm("f", "=", value),
    )


@given(
    st.lists(_field_term, max_size=4), st.dictionaries(_field_name, st.text(max_size=3), max_size=4)
)
def test_field_matches_agrees_with_reference(
    terms: list[FieldTerm], fields: dict[str, str]
) -> None:
    sel = FieldSelector(terms)
    expected = all((fields.get(t.field, "") == t.value) == (t.op == "=") for t in terms)
    assert sel.matches(fields) is expected
    assert parse_field_selector(str(sel)).matches(fields) is expected
