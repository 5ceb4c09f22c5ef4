"""Lease objects on the wire: read, create and replace ``coordination.k8s.io/v1`` Leases.

Shared by leader election and shard liveness. A Lease is kept as the decoded
JSON object (a dict) so a PUT sends back every field the server returned
(labels, ownerReferences, fields this code does not know), changed only in
``spec``; ``metadata.resourceVersion`` rides along, so a PUT over a Lease
someone else changed since our GET fails with 409 (optimistic concurrency).

Times are written as MicroTime (``2006-01-02T15:04:05.000000Z``) from the
injected wall clock; they are informational: no decision compares them with
a local clock (see ``_liveness``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from fleet.coordinator._liveness import LeaseRecord
from fleet.kube import Requester, resource_path
from fleet.machinery import JSON

__all__ = [
    "LEASE_GROUP",
    "create_lease",
    "get_lease",
    "lease_path",
    "lease_record",
    "micro_time",
    "replace_lease",
]

LEASE_GROUP = "coordination.k8s.io"
_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()

WallClock = Callable[[], datetime]


def wall_clock() -> datetime:
    """The real UTC wall clock (the default; tests inject their own)."""
    return datetime.now(UTC)


def micro_time(when: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with exactly six fractional digits, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_path(namespace: str, name: str | None = None) -> str:
    return resource_path(LEASE_GROUP, "v1", "leases", namespace=namespace, name=name)


def lease_record(lease: dict[str, Any], default_duration: float) -> LeaseRecord:
    """The liveness-relevant part of a Lease object."""
    spec = lease.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration=float(duration) if duration else default_duration,
    )


async def get_lease(requester: Requester, namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease, or None when it does not exist. Other errors raise ``ApiError``."""
    response = await requester.request("GET", lease_path(namespace, name))
    if response.status == 404:
        return None
    response.raise_for_status()
    return _decoder.decode(response.content)


async def create_lease(
    requester: Requester, namespace: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """POST a new Lease; raises ``AlreadyExists`` if another got there first."""
    body = {
        "apiVersion": f"{LEASE_GROUP}/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    response = await requester.request(
        "POST", lease_path(namespace), body=_encoder.encode(body), content_type=JSON
    )
    return _decoder.decode(response.raise_for_status().content)


async def replace_lease(requester: Requester, lease: dict[str, Any]) -> dict[str, Any]:
    """PUT ``lease`` (carrying the resourceVersion read); raises ``Conflict`` when stale."""
    meta = lease["metadata"]
    response = await requester.request(
        "PUT",
        lease_path(meta["namespace"], meta["name"]),
        body=_encoder.encode(lease),
        content_type=JSON,
    )
    return _decoder.decode(response.raise_for_status().content)
