"""What ``up`` puts into a fresh sandbox before the fleet starts: CRDs and namespaces.

The CRDs come from the models (:func:`fleet.api.crd_manifests`), the same
ones ``crdgen crd`` writes into ``deploy/``. They are created through the
API, as ``kubectl apply -f deploy/crds.yaml`` would on a real cluster, and an
existing one (a sandbox restarted with ``--data``) is replaced by the current
definition. :func:`install_crds` returns once every CRD reports
``Established``, so a ``kubectl apply`` of a Node CR right after ``up``
prints its kubeconfig finds the type served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from fleet.api import crd_manifests
from fleet.errors import AlreadyExists, ConfigError
from fleet.kube import Client, resource_path

__all__ = ["ESTABLISH_TIMEOUT", "ensure_namespace", "install_crds"]

ESTABLISH_TIMEOUT = 10.0
"""Seconds a CRD may take to report Established. The sandbox does it as it stores the
CRD; a real apiserver within a second or two. Past this something is broken."""
_POLL = 0.05
_CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


def _established(crd: Mapping[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


async def install_crds(client: Client, manifests: list[dict[str, Any]] | None = None) -> list[str]:
    """Create (or replace) the fleet's CRDs and wait until each is Established; returns their names."""
    names: list[str] = []
    for crd in manifests if manifests is not None else crd_manifests():
        name = crd["metadata"]["name"]
        try:
            await client.create(resource_path(*_CRDS), crd)
        except AlreadyExists:
            current = await client.get(resource_path(*_CRDS, name=name))
            replacement = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
            await client.replace(resource_path(*_CRDS, name=name), replacement)
        names.append(name)
    with trio.move_on_after(ESTABLISH_TIMEOUT):
        pending = list(names)
        while pending:
            crd = await client.get(resource_path(*_CRDS, name=pending[0]))
            if _established(crd):
                pending.pop(0)
            else:
                await trio.sleep(_POLL)
        return names
    raise ConfigError(f"CRDs not Established within {ESTABLISH_TIMEOUT:g} s: {', '.join(names)}")


async def ensure_namespace(client: Client, name: str) -> None:
    """Create namespace ``name`` unless it exists."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        await client.create(resource_path("", "v1", "namespaces"), body)
    except AlreadyExists:
        pass
