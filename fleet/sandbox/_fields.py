"""Label and field selection of objects, as list and watch filter them.

Parses the ``labelSelector``/``fieldSelector`` query parameters (through
``_libs``), checks the field labels against what the resource supports, and
evaluates both against stored objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet.errors import InputError
from fleet.sandbox import _libs
from fleet.sandbox._objects import field_value
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._status import bad_request

_ALWAYS = frozenset({"metadata.name", "metadata.namespace"})


def field_set(rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, str]:
    """The field-selector view of an object: every supported label as a string."""
    meta = obj.get("metadata") or {}
    out = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    for label in rt.field_labels:
        out[label] = field_value(obj, label)
    return out


class Filter:
    """A parsed label and field selector for one resource type; empty matches everything."""

    def __init__(self, rt: ResourceType, label_selector: str, field_selector: str) -> None:
        self.rt = rt
        self.empty = not label_selector.strip() and not field_selector.strip()
        try:
            self.labels = (
                _libs.parse_label_selector(label_selector) if label_selector.strip() else None
            )
            self.fields = (
                _libs.parse_field_selector(field_selector) if field_selector.strip() else None
            )
        except InputError as exc:
            raise bad_request(str(exc)) from exc
        if self.fields is not None:
            for name in sorted(self.fields.fields()):
                if name not in _ALWAYS and name not in rt.field_labels:
                    raise bad_request(f"field label not supported: {name}")

    def equals(self, name: str) -> str | None:
        """The value the field selector requires field ``name`` to equal, if it does."""
        if self.fields is None:
            return None
        return next((t.value for t in self.fields.terms if t.field == name and t.op == "="), None)

    def __call__(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.empty:
            return True
        if self.labels is not None and not self.labels.matches(
            (obj.get("metadata") or {}).get("labels") or {}
        ):
            return False
        return self.fields is None or self.fields.matches(field_set(self.rt, obj))
