"""Label and field selectors as the apiserver parses and evaluates them.

Pure library used by the sandbox apiserver (list/watch filtering, Deployment
and ReplicaSet selectors). Ports the grammar and validation of
k8s.io/apimachinery pkg/labels/selector.go and pkg/fields/selector.go; bad
input raises :class:`fleet.errors.InputError` with the apiserver's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.errors import InputError

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "label_selector_from_dict",
    "parse_field_selector",
    "parse_label_selector",
]


class LabelSelector:
    """A parsed label selector: a conjunction of requirements."""

    @property
    def empty(self) -> bool:
        raise NotImplementedError

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError


class FieldSelector:
    """A parsed field selector: a conjunction of ``=``/``!=`` terms."""

    @property
    def empty(self) -> bool:
        raise NotImplementedError

    def fields(self) -> set[str]:
        raise NotImplementedError

    def matches(self, fields: Mapping[str, str]) -> bool:
        raise NotImplementedError


def parse_label_selector(s: str) -> LabelSelector:
    raise InputError(s)


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    raise InputError(str(sel))


def parse_field_selector(s: str) -> FieldSelector:
    raise InputError(s)
