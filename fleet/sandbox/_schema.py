"""Validation, defaulting and pruning of custom resources against a CRD schema.

Pure library used by the sandbox apiserver for CR create/update/patch: ports
what apiextensions-apiserver does with a structural openAPIV3Schema
(pkg/apiserver/schema/pruning, defaulting, and the kube-openapi validator
messages). Returns causes shaped like the apiserver's 422 ``details.causes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Cause", "invalid_message", "validate_custom_resource"]


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of a 422 Status ``details.causes``."""

    field: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def validate_custom_resource(
    obj: dict[str, Any], schema: dict[str, Any], *, field_validation: str = "Ignore"
) -> tuple[dict[str, Any], list[Cause], list[str]]:
    raise NotImplementedError


def invalid_message(kind_group: str, name: str, causes: Iterable[Cause]) -> str:
    raise NotImplementedError
