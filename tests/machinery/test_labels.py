"""Label and annotation rules with apimachinery's messages; Node CRs the apiserver would refuse."""

from __future__ import annotations

import pytest

from fleet.api import load_node
from fleet.errors import InputError
from fleet.machinery import label_value_errors, qualified_name_errors

QNAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


@pytest.mark.parametrize(
    ("key", "errors"),
    [
        ("app", []),
        ("example.com/app", []),
        ("kubernetes.io/hostname", []),
        ("-app", ["name part " + QNAME_RULE]),
        ("x" * 64, ["name part must be no more than 63 characters"]),
        ("/app", ["prefix part must be non-empty"]),
        ("example.com/", ["name part must be non-empty", "name part " + QNAME_RULE]),
        (
            "Example.com/app",
            [
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ],
        ),
        (f"{'a' * 254}/app", ["prefix part must be no more than 253 characters"]),
        (
            "a/b/c",
            [
                "a qualified name "
                + QNAME_RULE
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ],
        ),
    ],
)
def test_qualified_names(key: str, errors: list[str]) -> None:
    assert qualified_name_errors(key) == errors


def test_label_values() -> None:
    assert label_value_errors("") == []
    assert label_value_errors("v1.2_3-x") == []
    assert label_value_errors("x" * 64) == ["must be no more than 63 characters"]
    assert label_value_errors("a b") == [
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
        "'my_value',  or '12345', regex used for validation is "
        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    ]


def test_a_final_newline_is_refused_as_go_refuses_it() -> None:
    # Go's `$` matches only at the very end (Python's also before a final newline), and the
    # label selectors' validation, which checks the same rules, refused it already.
    assert qualified_name_errors("app\n") == ["name part " + QNAME_RULE]
    assert qualified_name_errors("example.com\n/app") != []
    assert label_value_errors("web\n") != []
    assert label_value_errors("web") == []


def _cr(name: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "namespace": "kube-mock-system"},
        "spec": {"nodeConfig": {"labels": labels or {}}},
    }


def test_a_node_name_too_long_for_the_hostname_label_is_refused() -> None:
    assert load_node(_cr("n" * 63)).metadata.name == "n" * 63
    with pytest.raises(InputError) as info:
        load_node(_cr("n" * 64))
    assert "is 64 characters long; a Node is labelled kubernetes.io/hostname=<name>" in str(
        info.value
    )


def test_node_labels_the_apiserver_would_refuse_are_refused() -> None:
    with pytest.raises(InputError, match='invalid label key "-bad": name part must consist'):
        load_node(_cr("n1", {"-bad": "x"}))
    with pytest.raises(InputError, match=r"invalid label value .* must be no more than 63"):
        load_node(_cr("n1", {"ok": "v" * 64}))
