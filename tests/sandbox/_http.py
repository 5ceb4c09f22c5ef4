"""A small httpx client for a running sandbox (tests only)."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from fleet.sandbox import RunningSandbox


def client(sb: RunningSandbox, *, token: str | None = None) -> httpx.AsyncClient:
    verify: ssl.SSLContext | bool = True
    if sb.ca_pem is not None:
        verify = ssl.create_default_context(cadata=sb.ca_pem.decode())
    return httpx.AsyncClient(
        base_url=sb.url,
        verify=verify,
        timeout=10,
        headers={"Authorization": f"Bearer {token if token is not None else sb.token}"},
    )


def pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    node: str | None = None,
    finalizers: list[str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if finalizers:
        meta["finalizers"] = finalizers
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


async def make_namespace(c: httpx.AsyncClient, name: str) -> None:
    r = await c.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    assert r.status_code == 201, r.text
