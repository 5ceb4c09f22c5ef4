"""The few JSON verbs the control-plane loops use, over the transport seam.

:class:`Rest` wraps any :class:`~fleet.kube.Requester` (the httpx
:class:`~fleet.kube._client.Client`, the h11 transport, or a test fake) so the
loops never depend on which one runs them. Every verb raises the mapped
:class:`~fleet.errors.ApiError` for an error answer; callers decide which
ones are expected (404 on a delete that lost a race, 409 on a stale write).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from fleet.errors import ProtocolError
from fleet.kube import Requester
from fleet.machinery import JSON, MERGE_PATCH

__all__ = ["MERGE_PATCH", "Rest"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


class Rest:
    """JSON verbs over a requester."""

    def __init__(self, requester: Requester) -> None:
        self.requester = requester

    async def _send(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = JSON,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        payload = None if body is None else _encoder.encode(body)
        response = await self.requester.request(
            method, path, params=params, body=payload,
            content_type=content_type if payload is not None else None,
        )  # fmt: skip
        response.raise_for_status()
        if not response.content:
            return {}
        try:
            return _decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"{method} {path}: answer is not a JSON object: {exc}") from exc

    async def get(self, path: str) -> dict[str, Any]:
        return await self._send("GET", path)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to a collection (or a subresource such as ``pods/x/binding``)."""
        return await self._send("POST", path, body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._send("PUT", path, body)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """An RFC 7386 merge patch; a ``metadata.resourceVersion`` in it makes it conditional."""
        return await self._send("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(
        self,
        path: str,
        *,
        uid: str | None = None,
        propagation: str | None = None,
        grace_seconds: int | None = None,
    ) -> dict[str, Any]:
        """DELETE with DeleteOptions: a uid precondition, propagation policy, grace period."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            options["preconditions"] = {"uid": uid}
        if propagation:
            options["propagationPolicy"] = propagation
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        return await self._send("DELETE", path, options)
