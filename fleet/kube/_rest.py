"""The verbs, once, over any :class:`~fleet.kube._seam.Requester`.

:class:`Rest` wraps a requester (the httpx :class:`~fleet.kube._client.Client`'s,
the :class:`~fleet.kube._transport.HotTransport`, a test fake) and adds the
verbs most callers want, each sending JSON, returning the decoded answer and
raising the mapped :class:`~fleet.errors.ApiError` for an error ``Status``
(``Response.raise_for_status``: the mapping lives in :mod:`fleet.errors`):

==============================  ==========================================
verb                            request
==============================  ==========================================
``get``                         GET one object (or any JSON document)
``list``                        GET a collection, following ``continue``
``create``                      POST to a collection (or ``pods/x/binding``)
``replace``                     PUT a whole object
``patch`` / ``merge_patch``     PATCH: json, merge, strategic or apply
``delete``                      DELETE with a ``DeleteOptions`` body
``delete_collection``           DELETE on a collection, with selectors
==============================  ==========================================

A :class:`Rest` is itself a :class:`~fleet.kube._seam.Requester` (it passes
``request``, ``stream`` and ``request_batch`` to the one it wraps), so code
that takes a requester takes it too; :class:`~fleet.kube._client.Client` is a
:class:`Rest` over httpx. Callers decide which errors are expected (404 on a
delete that lost a race, 409 on a stale write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from fleet.errors import InputError, ProtocolError, TransportError
from fleet.kube._seam import BaseRequester, BatchRequest, Requester, Response, StreamResponse
from fleet.machinery import APPLY_PATCH, JSON, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH

__all__ = ["PATCH_CONTENT_TYPES", "ListResult", "PatchType", "Rest"]

PatchType = Literal["json", "merge", "strategic", "apply"]
PATCH_CONTENT_TYPES: Mapping[PatchType, str] = {
    "json": JSON_PATCH,
    "merge": MERGE_PATCH,
    "strategic": STRATEGIC_MERGE_PATCH,
    # Server-side apply takes YAML; JSON is YAML, so the body is still JSON-encoded.
    "apply": APPLY_PATCH,
}
_PROPAGATION_POLICIES = ("Orphan", "Background", "Foreground")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class ListResult:
    """All items of a (paged) list and the list's resourceVersion, to watch from."""

    items: list[dict[str, Any]]
    resource_version: str
    kind: str = ""
    """The list kind (``PodList``), when the server said."""
    pages: int = field(default=1)
    """How many requests the list took."""


def _delete_options(
    *,
    grace_period_seconds: int | None,
    preconditions_uid: str | None,
    preconditions_resource_version: str | None,
    propagation_policy: str | None,
    dry_run: bool,
) -> dict[str, Any]:
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if grace_period_seconds is not None:
        if grace_period_seconds < 0:
            raise InputError(f"grace_period_seconds must be >= 0, got {grace_period_seconds}")
        options["gracePeriodSeconds"] = grace_period_seconds
    # An empty uid or resourceVersion names no object: no precondition (a view's default).
    preconditions = {}
    if preconditions_uid:
        preconditions["uid"] = preconditions_uid
    if preconditions_resource_version:
        preconditions["resourceVersion"] = preconditions_resource_version
    if preconditions:
        options["preconditions"] = preconditions
    if propagation_policy is not None:
        if propagation_policy not in _PROPAGATION_POLICIES:
            raise InputError(
                "propagation_policy must be Orphan, Background or Foreground, "
                f"got {propagation_policy!r}"
            )
        options["propagationPolicy"] = propagation_policy
    if dry_run:
        options["dryRun"] = ["All"]
    return options


class Rest(BaseRequester):
    """JSON verbs over ``requester``; see the module docstring."""

    def __init__(self, requester: Requester) -> None:
        self.requester = requester

    # -- the Requester seam, passed through --------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.requester.request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self.requester.stream(method, path, params=params, headers=headers)

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        return await self.requester.request_batch(requests)

    # -- verbs -------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        payload = None if body is None else _encoder.encode(body)
        response = await self.requester.request(
            method,
            path,
            params=params,
            body=payload,
            content_type=content_type if payload is not None else None,
        )
        response.raise_for_status()
        if not response.content:
            return {}
        try:
            return _decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            # A 2xx answer that is not a JSON object: the server broke the API contract.
            raise ProtocolError(f"{method} {path}: answer is not a JSON object: {exc}") from exc

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET one object (or any JSON document) and decode it."""
        return await self._json("GET", path, params=params)

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
        resource_version: str | None = None,
    ) -> ListResult:
        """Every item of a collection, following ``continue`` tokens page by page.

        ``limit=500`` is kubectl's and client-go's page size. The result's
        ``resource_version`` is the snapshot all pages come from, to watch from.
        An expired continue token (the snapshot was compacted) raises
        :class:`~fleet.errors.Gone`: list again from the start.
        """
        if limit < 0:
            raise InputError(f"limit must be >= 0, got {limit}")
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if limit:
            params["limit"] = str(limit)
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        items: list[dict[str, Any]] = []
        pages = 0
        while True:
            page = await self._json("GET", path, params=params)
            pages += 1
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                return ListResult(
                    items=items,
                    resource_version=str(metadata.get("resourceVersion") or ""),
                    kind=str(page.get("kind") or ""),
                    pages=pages,
                )
            # The token pins the snapshot; the apiserver rejects resourceVersion beside it.
            params.pop("resourceVersion", None)
            params["continue"] = str(token)

    async def create(
        self, path: str, body: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        """POST a new object to its collection path (or a subresource such as
        ``pods/x/binding``); returns the stored object."""
        params = {"fieldManager": field_manager} if field_manager else None
        return await self._json("POST", path, params=params, body=body)

    async def replace(
        self, path: str, body: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        """PUT a whole object (its ``metadata.resourceVersion`` makes it conditional)."""
        params = {"fieldManager": field_manager} if field_manager else None
        return await self._json("PUT", path, params=params, body=body)

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        patch_type: PatchType,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict[str, Any]:
        """PATCH with the Content-Type of ``patch_type``.

        ``json`` takes a list of RFC 6902 operations, the others an object.
        Server-side ``apply`` requires ``field_manager``; ``force`` is only
        meaningful for it (take fields owned by other managers).
        """
        content_type = PATCH_CONTENT_TYPES.get(patch_type)
        if content_type is None:
            raise InputError(
                f"unknown patch type {patch_type!r}: one of {sorted(PATCH_CONTENT_TYPES)}"
            )
        if patch_type == "apply" and not field_manager:
            raise InputError("a server-side apply patch needs field_manager")
        if patch_type == "json" and isinstance(body, Mapping):
            raise InputError("a JSON patch body is a list of operations")
        params: dict[str, str] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force is not None:
            params["force"] = "true" if force else "false"
        return await self._json(
            "PATCH", path, params=params or None, body=body, content_type=content_type
        )

    async def merge_patch(
        self, path: str, body: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        """An RFC 7386 merge patch; a ``metadata.resourceVersion`` in it makes it conditional."""
        return await self.patch(path, body, patch_type="merge", field_manager=field_manager)

    async def delete(
        self,
        path: str,
        *,
        grace_period_seconds: int | None = None,
        preconditions_uid: str | None = None,
        preconditions_resource_version: str | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE one object with a ``DeleteOptions`` body.

        Returns what the apiserver answers: the object (still present while
        finalizers or a grace period run) or a ``Status`` of success.
        """
        options = _delete_options(
            grace_period_seconds=grace_period_seconds,
            preconditions_uid=preconditions_uid,
            preconditions_resource_version=preconditions_resource_version,
            propagation_policy=propagation_policy,
            dry_run=dry_run,
        )
        return await self._json("DELETE", path, body=options)

    async def delete_collection(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE every object of a collection matching the selectors."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        options = _delete_options(
            grace_period_seconds=grace_period_seconds,
            preconditions_uid=None,
            preconditions_resource_version=None,
            propagation_policy=propagation_policy,
            dry_run=dry_run,
        )
        return await self._json("DELETE", path, params=params or None, body=options)
