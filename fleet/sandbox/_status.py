"""meta/v1 ``Status`` answers: the errors the sandbox returns, shaped as the apiserver's.

Handlers raise :class:`StatusError`; the ASGI layer turns it into the JSON
body and HTTP code. The helpers build the exact messages the real apiserver
sends (recorded in ``apiserver-transcripts``) so clients that match on them
behave the same here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StatusError(Exception):
    """An error answer: HTTP ``code`` and the ``Status`` body to send."""

    def __init__(
        self,
        code: int,
        reason: str | None,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = list(headers)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def success(code: int = 200, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def qualified(resource: str, group: str) -> str:
    """``pods`` or ``leases.coordination.k8s.io``, as messages name a resource."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if group:
        out["group"] = group
    out["kind"] = kind
    return out


def not_found(resource: str, group: str, name: str) -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'{qualified(resource, group)} "{name}" not found',
        _details(name, group, resource),
    )


def already_exists(resource: str, group: str, name: str) -> StatusError:
    return StatusError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


def conflict(resource: str, group: str, name: str, why: str) -> StatusError:
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def stale(resource: str, group: str, name: str) -> StatusError:
    return conflict(resource, group, name, STALE)


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def internal_error(message: str) -> StatusError:
    """A 500 with no reason, as kube-apiserver sends an error it did not classify."""
    return StatusError(500, None, message)


def method_not_allowed() -> StatusError:
    return StatusError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def unsupported_media(
    message: str = "415: Unsupported Media Type", details: dict[str, Any] | None = None
) -> StatusError:
    return StatusError(415, "UnsupportedMediaType", message, details)


def gone(message: str) -> StatusError:
    return StatusError(410, "Expired", message)


def too_many_requests(retry_after: int = 1) -> StatusError:
    """429 as kube-apiserver's max-in-flight filter answers it (``Retry-After`` in seconds)."""
    return StatusError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": retry_after},
        headers=[("Retry-After", str(retry_after))],
    )


def forbidden(resource: str, group: str, name: str, why: str) -> StatusError:
    return StatusError(
        403,
        "Forbidden",
        f'{qualified(resource, group)} "{name}" is forbidden: {why}',
        _details(name, group, resource),
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> StatusError:
    """422 Invalid naming every bad field, as ``Kind "name" is invalid: [field: msg, ...]``."""
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    kind_group = f"{kind}.{group}" if group else kind
    details = _details(name, group, kind)
    details["causes"] = causes
    return StatusError(422, "Invalid", f'{kind_group} "{name}" is invalid: {summary}', details)


def cause(reason: str, field: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def field_invalid(field: str, value: Any, detail: str) -> dict[str, str]:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return cause("FieldValueInvalid", field, f"Invalid value: {shown}: {detail}")


def field_required(field: str) -> dict[str, str]:
    return cause("FieldValueRequired", field, "Required value")


def field_forbidden(field: str, detail: str) -> dict[str, str]:
    return cause("FieldValueForbidden", field, f"Forbidden: {detail}")
