"""Shared pieces of the CR models: the base model, field types, core/v1 shapes.

Every model reads custom resources written by people and other tools, so
unknown fields are ignored (forward compatibility) and JSON names are the
camelCase aliases, exactly as kube-mock's Go json tags spell them. Field types
here carry their own JSON schema, in the form apiextensions expects, so that
``fleet.api._crd`` can turn the pydantic schema into a structural CRD schema.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fleet.errors import InputError

from ._duration import GO_DURATION_PATTERN, parse_go_duration
from ._quantity import QUANTITY_PATTERN, Quantity, parse_quantity

__all__ = [
    "CRModel",
    "CapacityQuantity",
    "Condition",
    "GoDuration",
    "IPAddress",
    "LocalObjectReference",
    "ObjectMeta",
    "PreservedObject",
    "QuantityValue",
    "StringMap",
    "Taint",
    "Toleration",
    "WholeQuantity",
]


class CRModel(BaseModel):
    """Base of every CR model: frozen, aliases on the wire, unknown fields ignored."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, value: Any) -> Any:
        return _drop_nulls(value)


def _to_quantity(value: Any) -> Quantity:
    if isinstance(value, Quantity):
        return value
    try:
        return parse_quantity(value)
    except InputError as exc:
        raise PydanticCustomError("quantity", "{reason}", {"reason": str(exc)}) from None


QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": QUANTITY_PATTERN,
    "x-kubernetes-int-or-string": True,
}

#: A Kubernetes quantity field: int or string on the wire, :class:`Quantity` in Python,
#: written back in canonical string form.
QuantityValue = Annotated[
    Quantity,
    BeforeValidator(_to_quantity),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(QUANTITY_SCHEMA),
]

# What the CRD schema itself can refuse at apply time (kubectl apply answers 422), so
# that a Node CR like `memory: "-1Gi"` never gets as far as a READY False condition.
# The models check the rest (wholeness of "1.55e1", int64 bounds) and say it there.
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_WHOLE_SUFFIX = r"(([KMGTPE]i)|[kMGTPE]|([eE]\+?[0-9]+))"
CAPACITY_PATTERN = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
"""A quantity with no minus sign: a capacity is never negative."""
WHOLE_PATTERN = rf"^\+?(([0-9]+{_WHOLE_SUFFIX}?)|({_NUMBER}{_WHOLE_SUFFIX})|(([0-9]*000|0+)m))$"
"""A non-negative quantity with no fraction left (``2``, ``1.5k``, ``1Ki``, ``2000m``; not
``2.5``, ``500m``)."""

#: A capacity: a non-negative quantity (the CRD refuses ``-1Gi`` and ``-3``).
CapacityQuantity = Annotated[
    QuantityValue,
    WithJsonSchema({**QUANTITY_SCHEMA, "pattern": CAPACITY_PATTERN, "minimum": 0}),
]
#: A count (pods, devices): a whole, non-negative quantity (the CRD refuses ``2.5``).
WholeQuantity = Annotated[
    QuantityValue,
    WithJsonSchema({**QUANTITY_SCHEMA, "pattern": WHOLE_PATTERN, "minimum": 0}),
]


def _check_duration(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration",
            "{reason}",
            {"reason": f"invalid duration {value!r}: must be a string such as 10s"},
        )
    try:
        nanos = parse_go_duration(value)
    except InputError as exc:
        raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None
    if nanos < 0:
        raise PydanticCustomError(
            "duration", "{reason}", {"reason": f'invalid duration "{value}": must not be negative'}
        )
    return value


#: A non-negative Go duration string, kept as written (parse it with ``parse_delay``).
GoDuration = Annotated[
    str,
    BeforeValidator(_check_duration),
    WithJsonSchema({"type": "string", "pattern": GO_DURATION_PATTERN}),
]


def _check_ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise PydanticCustomError(
            "ip", "{reason}", {"reason": f"invalid IP address {value!r}"}
        ) from None


#: An IPv4 or IPv6 address, normalised.
IPAddress = Annotated[str, BeforeValidator(_check_ip), WithJsonSchema({"type": "string"})]

#: An arbitrary object kept as is (core/v1 shapes the fleet does not interpret).
PreservedObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

StringMap = Annotated[
    dict[str, str],
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
]


class ObjectMeta(CRModel):
    """The part of metav1.ObjectMeta the fleet reads."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None
    labels: StringMap = Field(default_factory=dict)
    annotations: StringMap = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(default=None, alias="deletionTimestamp")


class LocalObjectReference(CRModel):
    """core/v1 LocalObjectReference."""

    name: str = ""


class Toleration(CRModel):
    """core/v1 Toleration (kube-mock put it on its kubelet pod)."""

    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class Taint(CRModel):
    """core/v1 Taint, registered on the fake Node."""

    key: str = Field(min_length=1)
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: datetime | None = Field(default=None, alias="timeAdded")


class Condition(CRModel):
    """metav1.Condition: the shape of every condition in our CR statuses."""

    type: str = Field(min_length=1)
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(default=None, alias="observedGeneration", ge=0)
    last_transition_time: datetime | None = Field(default=None, alias="lastTransitionTime")
    reason: str = ""
    message: str = ""


def _drop_nulls(value: Any) -> Any:
    """The apiserver prunes ``null`` fields of CRs: treat them as absent."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return value
