"""Label and annotation rules of Kubernetes, with apimachinery's own messages.

``k8s.io/apimachinery/pkg/util/validation``: a label or annotation key is a
*qualified name* — an optional DNS-subdomain prefix (at most 253 characters)
and ``/``, then a name part of at most 63 alphanumerics, ``-``, ``_`` and
``.`` that starts and ends alphanumeric; a label value is empty or such a
name part; all annotations of an object together hold at most 256 KiB. The
messages are the apiserver's, word for word (a 422 quotes them), and are
shared by the sandbox apiserver, the label selectors (``_selectors``) and the CR
models whose fields end up as labels (``fleet.api``).
"""

from __future__ import annotations

import re

__all__ = [
    "LABEL_VALUE_MAX",
    "TOTAL_ANNOTATION_SIZE",
    "label_value_errors",
    "qualified_name_errors",
]

LABEL_VALUE_MAX = 63
"""``LabelValueMaxLength`` (also the name part of a qualified name)."""
TOTAL_ANNOTATION_SIZE = 256 * 1024
"""``TotalAnnotationSizeLimitB``: keys and values of all annotations of one object."""
_PREFIX_MAX = 253

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME = re.compile(f"^{_QNAME_FMT}$")
_VALUE_FMT = f"({_QNAME_FMT})?"
_VALUE = re.compile(f"^{_VALUE_FMT}$")
_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_SUBDOMAIN = re.compile(f"^{_SUBDOMAIN_FMT}$")

_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """``validation.RegexError``, double spaces and all."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    listed = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {listed}regex used for validation is '{fmt}')"


def _go_match(pattern: re.Pattern[str], value: str) -> bool:
    # Go's `$` matches only at the very end; Python's also before a final "\n".
    return "\n" not in value and pattern.match(value) is not None


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def qualified_name_errors(value: str) -> list[str]:
    """``validation.IsQualifiedName``: what is wrong with a label or annotation key."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > _PREFIX_MAX:
                errors.append("prefix part " + _max_len(_PREFIX_MAX))
            if not _go_match(_SUBDOMAIN, prefix):
                errors.append(
                    "prefix part " + _regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > LABEL_VALUE_MAX:
        errors.append("name part " + _max_len(LABEL_VALUE_MAX))
    if not _go_match(_QNAME, name):
        errors.append(
            "name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """``validation.IsValidLabelValue``."""
    errors: list[str] = []
    if len(value) > LABEL_VALUE_MAX:
        errors.append(_max_len(LABEL_VALUE_MAX))
    if not _go_match(_VALUE, value):
        errors.append(_regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors
