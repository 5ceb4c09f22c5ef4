"""The one exception hierarchy of kubemock-fleet.

Every error the fleet raises on purpose is a :class:`FleetError`. Library
errors (httpx, h11, ssl, OSError, yaml, pydantic, msgspec) are mapped into it
at the boundary where they arise, with ``raise ... from exc``, so callers
catch one family and the CLIs print one clear line per fault::

    FleetError
    ├── ConfigError            bad kubeconfig, settings, CLI input (names the file/field)
    ├── InputError             a malformed CR, duration, quantity or IP (names the field)
    ├── ComponentError         a process we started (etcd, kube-apiserver...) failed or hung
    ├── TransportError         the request did not get an HTTP answer
    │   ├── ConnectError       could not connect (refused, DNS, TLS handshake)
    │   ├── ReadTimeout        no (more) bytes within the timeout
    │   └── ProtocolError      the peer spoke broken HTTP or closed mid-response
    └── ApiError               the apiserver answered with a Status error (has .status)
        ├── BadRequest         400
        ├── Unauthorized       401
        ├── Forbidden          403
        ├── NotFound           404
        ├── MethodNotAllowed   405
        ├── NotAcceptable      406
        ├── Conflict           409 (stale resourceVersion, failed precondition)
        │   └── AlreadyExists  409 with reason AlreadyExists
        ├── Gone               410 (resourceVersion too old, expired continue token)
        ├── UnsupportedMediaType 415
        ├── Invalid            422 (has .causes)
        ├── TooManyRequests    429 (has .retry_after)
        └── ServerError        5xx (has .retry_after where the server sent one)

:func:`one_error` finds the one meaningful FleetError behind what a trio
nursery raised (nested ``ExceptionGroup`` s), so every command line prints it
as one line.

This module imports nothing of the project: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AlreadyExists",
    "ApiError",
    "BadRequest",
    "ComponentError",
    "ConfigError",
    "Conflict",
    "ConnectError",
    "FleetError",
    "Forbidden",
    "Gone",
    "InputError",
    "Invalid",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "ProtocolError",
    "ReadTimeout",
    "ServerError",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnsupportedMediaType",
    "api_error_from_status",
    "one_error",
]


class FleetError(Exception):
    """Base of every error kubemock-fleet raises on purpose."""


class ConfigError(FleetError):
    """Configuration that cannot be used: a kubeconfig, a settings file, a flag.

    The message names the source (file path or flag) and the fault, in one line.
    """


class ComponentError(FleetError):
    """A component process this program started exited or never got ready.

    The message names the component and ends with the last lines of its log.
    """


class InputError(FleetError):
    """A user-supplied value that does not parse: names the object and field."""


class TransportError(FleetError):
    """The request got no (complete) HTTP answer."""


class ConnectError(TransportError):
    """The connection could not be made: refused, unresolvable, TLS failure."""


class ReadTimeout(TransportError):
    """The peer sent nothing within the allowed time."""


class ProtocolError(TransportError):
    """The peer broke HTTP framing or closed the connection mid-response."""


class ApiError(FleetError):
    """The apiserver answered with an error ``Status``.

    ``status`` is the HTTP code, ``reason`` the Status reason (``NotFound``,
    ``Conflict``...), ``body`` the decoded Status object (or ``{}``).
    """

    code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reason: str = "",
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body: Mapping[str, Any] = body or {}
        self.retry_after = retry_after

    @property
    def causes(self) -> list[Mapping[str, Any]]:
        details = self.body.get("details") or {}
        return list(details.get("causes") or [])

    def __str__(self) -> str:
        return f"{self.status} {self.reason or type(self).__name__}: {self.message}"


class BadRequest(ApiError):
    code = 400


class Unauthorized(ApiError):
    code = 401


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError):
    code = 404


class MethodNotAllowed(ApiError):
    code = 405


class NotAcceptable(ApiError):
    code = 406


class Conflict(ApiError):
    code = 409


class AlreadyExists(Conflict):
    code = 409


class Gone(ApiError):
    code = 410


class UnsupportedMediaType(ApiError):
    code = 415


class Invalid(ApiError):
    code = 422


class TooManyRequests(ApiError):
    code = 429


class ServerError(ApiError):
    code = 500


_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    409: Conflict,
    410: Gone,
    415: UnsupportedMediaType,
    422: Invalid,
    429: TooManyRequests,
}


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: the apiserver never sends it; treat as absent


def api_error_from_status(
    status: int,
    body: Mapping[str, Any] | None,
    *,
    retry_after: str | None = None,
) -> ApiError:
    """Map an HTTP error answer (and its decoded ``Status`` body) to an :class:`ApiError`."""
    body = body if isinstance(body, Mapping) else {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or f"HTTP {status}")
    if status == 409 and reason == "AlreadyExists":
        cls: type[ApiError] = AlreadyExists
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_CODE.get(status, ApiError)
    # The apiserver also puts retryAfterSeconds in Status.details for 429/5xx.
    seconds = _parse_retry_after(retry_after)
    if seconds is None:
        details = body.get("details") or {}
        if isinstance(details, Mapping) and details.get("retryAfterSeconds") is not None:
            seconds = _parse_retry_after(str(details["retryAfterSeconds"]))
    return cls(message, status=status, reason=reason, body=body, retry_after=seconds)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def one_error(exc: BaseException) -> FleetError | None:
    """The one meaningful :class:`FleetError` behind ``exc``, or None when there is none.

    ``exc`` itself when it is one; inside (nested) exception groups, the first
    FleetError when every other leaf is a FleetError too or not an ``Exception`` at
    all (the cancellations of sibling tasks the failure caused, a KeyboardInterrupt).
    A group holding any other exception is a bug: None, so it keeps its traceback.
    """
    leaves = _leaves(exc)
    errors = [leaf for leaf in leaves if isinstance(leaf, FleetError)]
    rest = [
        leaf for leaf in leaves if isinstance(leaf, Exception) and not isinstance(leaf, FleetError)
    ]
    if not errors or rest:
        return None
    return errors[0]
