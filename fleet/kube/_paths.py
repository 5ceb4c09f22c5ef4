"""Resource paths on the apiserver, built in one place.

Both transports take an absolute path (``/api/v1/namespaces/ns/pods/p``); this
module is the only code that spells those paths, so the core-group special case
(``/api/v1`` rather than ``/apis/<group>/<version>``) and the validation of
names live once. A name with a ``/`` would silently address a different
resource (``name="a/status"``), so such names are refused rather than escaped;
other characters outside the URL-safe set are percent-escaped.
"""

from __future__ import annotations

from urllib.parse import quote

from fleet.errors import InputError

__all__ = ["resource_path"]


def _segment(kind: str, value: str) -> str:
    """One validated, percent-escaped path segment."""
    if not value:
        raise InputError(f"{kind} must not be empty")
    if "/" in value or value in (".", ".."):
        # "." and ".." would be collapsed by proxies, "/" would re-route the request.
        raise InputError(f"{kind} {value!r} must not contain '/' or be '.' or '..'")
    return quote(value, safe="")


def resource_path(
    group: str,
    version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The absolute path of a collection, an object, or an object's subresource.

    ``group=""`` is the core group (``/api/v1/...``); any other group is under
    ``/apis/<group>/<version>/...``. A subresource needs a name.

    >>> resource_path("", "v1", "pods", namespace="default", name="web-0", subresource="status")
    '/api/v1/namespaces/default/pods/web-0/status'
    >>> resource_path("coordination.k8s.io", "v1", "leases", namespace="kube-node-lease")
    '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases'
    """
    if subresource is not None and name is None:
        raise InputError(f"subresource {subresource!r} needs an object name")
    parts = (
        ["/api", _segment("version", version)]
        if group == ""
        else [
            "/apis",
            _segment("group", group),
            _segment("version", version),
        ]
    )
    if namespace is not None:
        parts += ["namespaces", _segment("namespace", namespace)]
    parts.append(_segment("resource", plural))
    if name is not None:
        parts.append(_segment("name", name))
    if subresource is not None:
        parts.append(_segment("subresource", subresource))
    return "/".join(parts)
