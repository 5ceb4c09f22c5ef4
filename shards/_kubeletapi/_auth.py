"""Who may use a shard's kubelet API: client certificates, bearer tokens, authorization.

As a kubelet with ``--anonymous-auth=false``:

* **authentication**: a client certificate signed by the client CA (its common name is the
  user, its organizations the groups), else a bearer token the cluster vouches for
  (``TokenReview``, ``authentication.k8s.io/v1``: metrics-server sends its service
  account's), else 401 ``Unauthorized``;
* **authorization**: ``SubjectAccessReview`` (``authorization.k8s.io/v1``) for the user on
  ``nodes/<subresource>`` of the node concerned — the kubelet's attributes: verb from the
  method, subresource ``stats``, ``metrics``, ``log``, ``spec`` by path, ``proxy`` for
  everything else (``containerLogs``, ``exec``, ``pods``...) — else 403 ``Forbidden
  (user=..., verb=..., resource=nodes, subresource=...)``. Where the cluster does not serve
  the review APIs (the sandbox), a certificate is enough (the kubelet's ``AlwaysAllow``) and
  a token is refused. ``authorization="always-allow"`` skips the reviews.

Answers are cached as a kubelet caches them (``AUTHN_TTL``, ``ALLOWED_TTL``, ``DENIED_TTL``),
at most ``CACHE_ENTRIES`` each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from fleet.errors import FleetError
from fleet.kube import Requester

__all__ = ["Identity", "WebhookAuth", "attributes"]

log = logging.getLogger("shards.kubeletapi")

AUTHN_TTL = 120.0
"""Seconds a TokenReview answer is reused (the kubelet's authentication cache TTL, 2 min)."""
ALLOWED_TTL = 300.0
"""Seconds an allowed SubjectAccessReview is reused (the kubelet's: 5 min)."""
DENIED_TTL = 30.0
"""Seconds a denied one is reused (the kubelet's: 30 s)."""
CACHE_ENTRIES = 10_000
"""Entries per cache before it starts afresh (one per token or user and attributes)."""
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}
_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()


def attributes(method: str, path: str) -> tuple[str, str]:
    """The kubelet's ``(verb, subresource)`` for a request (its ``GetRequestAttributes``)."""
    verb = _VERBS.get(method, "delete" if method == "DELETE" else method.lower())
    first = path.strip("/").split("/", 1)[0]
    if first == "nodes":  # the fleet's /nodes/<node>/<path>
        parts = path.strip("/").split("/")
        first = parts[2] if len(parts) > 2 else ""
    subresource = {"stats": "stats", "metrics": "metrics", "logs": "log", "spec": "spec"}
    return verb, subresource.get(first, "proxy")


class _Cache:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            return False, None
        return True, entry[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self._entries) >= CACHE_ENTRIES:
            self._entries.clear()
        self._entries[key] = (self._clock() + ttl, value)


class WebhookAuth:
    """TokenReview and SubjectAccessReview through the shard's client (see the module)."""

    def __init__(
        self,
        requester: Requester,
        *,
        authorization: str = "auto",
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.requester = requester
        self.authorization = authorization
        """``auto`` (reviews where the cluster serves them), ``webhook``, ``always-allow``."""
        self._tokens = _Cache(clock)
        self._access = _Cache(clock)
        self._served: dict[str, bool] = {}
        """Review path -> whether the cluster serves it (learnt from a 404)."""

    async def _review(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The review's status; None when the cluster does not serve it or fails."""
        if self._served.get(path) is False:
            return None
        try:
            response = await self.requester.request(
                "POST", path, body=_encode(body), content_type="application/json"
            )
        except FleetError as exc:
            log.warning("kubelet API: %s: %s", path, exc)
            return None
        if response.status == 404:
            if path not in self._served:
                log.info("kubelet API: the cluster serves no %s", path)
            self._served[path] = False
            return None
        self._served[path] = True
        if not response.ok:
            log.warning("kubelet API: %s: HTTP %d", path, response.status)
            return None
        status = _decode(response.content).get("status")
        return status if isinstance(status, dict) else {}

    async def authenticate(self, token: str) -> Identity | None:
        found, cached = self._tokens.get(token)
        if found:
            return cached if isinstance(cached, Identity) else None
        status = await self._review(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        identity = None
        if status is not None and status.get("authenticated"):
            user = status.get("user") or {}
            identity = Identity(str(user.get("username", "")), tuple(user.get("groups") or ()))
        if status is not None:
            self._tokens.put(token, identity, AUTHN_TTL)
        return identity

    async def authorize(
        self, identity: Identity, verb: str, subresource: str, node: str, *, token: bool
    ) -> bool:
        """Whether ``identity`` may; a certificate is enough where no review is served."""
        if self.authorization == "always-allow":
            return True
        key = (identity, verb, subresource, node)
        found, cached = self._access.get(key)
        if found:
            return bool(cached)
        status = await self._review(
            ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": identity.user,
                    "groups": list(identity.groups),
                    "resourceAttributes": {
                        "verb": verb,
                        "resource": "nodes",
                        "subresource": subresource,
                        "name": node,
                    },
                },
            },
        )
        if status is None:
            if self.authorization == "webhook":
                return False
            return not token and self._served.get(ACCESS_REVIEWS) is False
        allowed = bool(status.get("allowed"))
        self._access.put(key, allowed, ALLOWED_TTL if allowed else DENIED_TTL)
        return allowed
