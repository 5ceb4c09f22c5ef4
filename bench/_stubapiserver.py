"""A stub apiserver for the shard benchmark: answers a shard's requests at once, in its own process.

:mod:`bench.shard` runs one shard (``kubemock-fleet shard --id 0``) against
this server, so what it measures is the *shard's* cost. It serves a generated
population and only what a shard sends:

- LIST (paged with ``limit``/``continue``) and WATCH of the MockStatus and NodeScript CRs
  (none) and of the Node CRs (all
  labelled for shard 0, finalizer already on, so no CR write is needed before
  registration) and of the pods bound to them (``creationTimestamp`` = the
  stub's start, no lifecycle annotations: a pod goes Running at once); watches
  stay open (a BOOKMARK every :data:`BOOKMARK_EVERY` s, ended at the client's
  ``timeoutSeconds``);
- Node GET/POST and status PATCH (strategic merge, the sandbox's
  implementation, so the answer holds the merged status as a real server's
  does), Node metadata PATCH, Lease GET/POST/PUT and JSON patch (test, add,
  replace of ``/spec/<field>``: a shard's own Lease renewal; any namespace), Node CR
  status PATCH, pod status PATCH (strategic merge, uid precondition), Event
  POST. A pod status PATCH comes back on the pod watches as a MODIFIED event, as a
  real apiserver sends it;
- what the ``kubelet`` traffic profile adds (``shards._traffic``): LIST and WATCH of
  RuntimeClasses and CSIDrivers (none), Services (the ``kubernetes`` one), a node's
  own Node (``fieldSelector=metadata.name=``), its pods (``spec.nodeName=``: only
  that node's, and only they come back on its watch) and the ``kube-root-ca.crt``
  ConfigMap of a namespace; CSINode GET (404 until POSTed) and POST. Their watches
  send a BOOKMARK every :data:`KUBE_BOOKMARK_EVERY` s when asked
  (``allowWatchBookmarks``), as kube-apiserver's watch cache does, and end at
  ``timeoutSeconds``.

It counts requests by kind, the pods PATCHed to Running, and the gap between
successive PUTs of each Lease (its renewal lateness, seen from outside: the
gap minus the longest interval the jitter allows). Control endpoints, on the
same port: ``GET /_stub/stats`` (JSON), ``POST /_stub/reset`` (start a new
measurement window), ``POST /_stub/inject?pods=N`` (N new pods bound to the
nodes, created now, sent as ADDED events on every pod watch).

HTTP/1.1 is framed by hand on asyncio's Protocol API (as
:mod:`bench._httpserver`), heads parsed by :func:`fleet.machinery.parse_request_head`
(the project's one HTTP/1.1 parser): keep-alive, ``Content-Length`` request bodies,
``Content-Length`` answers, chunked watch streams. A connection that opens with the
HTTP/2 preface (``PRI * HTTP/2.0``: h2c with prior knowledge, what
:class:`fleet.kube.Http2Connection` sends over ``http://``) is served by the ``h2``
state machine instead (:class:`_H2`): each stream one request, answered with the same
bytes as over HTTP/1.1, watches as DATA frames, within the client's flow-control
windows. ``python -m bench._stubapiserver --nodes N --pods M [--mockstatuses FILE]``
prints the bound port on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import msgspec

from fleet.machinery import parse_request_head, strategic_merge_patch
from fleet.wire import API_VERSION, FINALIZER, SHARD_LABEL

__all__ = ["BOOKMARK_EVERY", "KUBE_BOOKMARK_EVERY", "Population", "StubServer", "serve"]

_TICK = 0.01
"""Seconds between the stub's loop-delay probes."""
BOOKMARK_EVERY = 30.0
"""Seconds between BOOKMARK events on an open watch (well within the client's 150 s
inactivity timeout)."""
KUBE_BOOKMARK_EVERY = 60.0
"""Seconds between BOOKMARK events on a watch of the kubelet profile's, when the client
allows them: kube-apiserver's watch cache sends one a minute (its ``bookmarkFrequency``)."""
NAMESPACE = "default"
MOCKSTATUSES_ENV = "KUBEMOCK_FLEET_STUB_MOCKSTATUSES"
_CR_PREFIX = f"/apis/{API_VERSION}/"
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""How an h2c client with prior knowledge opens its connection (RFC 9113 3.4)."""
_CSINODES = "/apis/storage.k8s.io/v1/csinodes"
_KUBELET_COLLECTIONS = {
    "/apis/node.k8s.io/v1/runtimeclasses": "runtimeclasses",
    "/apis/storage.k8s.io/v1/csidrivers": "csidrivers",
    "/api/v1/services": "services",
}
"""The cluster-wide informers a kubelet starts, by path."""
_KIND = {
    "pods": "Pod",
    "pods_node": "Pod",
    "crs": "Node",
    "nodes": "Node",
    "node_own": "Node",
    "nodescripts": "NodeScript",
    "runtimeclasses": "RuntimeClass",
    "csidrivers": "CSIDriver",
    "services": "Service",
    "configmaps": "ConfigMap",
}
"""A watch's object kind, for its BOOKMARKs (MockStatus otherwise)."""
_LEASE_PREFIX = "/apis/coordination.k8s.io/v1/namespaces/"
_encode = msgspec.json.Encoder().encode
_Stored = TypeVar("_Stored")
"""How a store of :class:`StubServer` holds its objects: decoded (Nodes, patched), or encoded."""
_decode = msgspec.json.Decoder(dict[str, Any]).decode
_REASONS = {200: b"OK", 201: b"Created", 404: b"Not Found", 409: b"Conflict", 422: b"Unprocessable"}


_ROOT_CA = "kube-root-ca.crt"
_KUBERNETES_SERVICE = {
    "kind": "Service",
    "apiVersion": "v1",
    "metadata": {
        "name": "kubernetes",
        "namespace": "default",
        "uid": "svc-kubernetes",
        "resourceVersion": "5",
    },
    "spec": {
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
        "type": "ClusterIP",
    },
}


def _root_ca(namespace: str) -> dict[str, Any]:
    """The ``kube-root-ca.crt`` ConfigMap kube-controller-manager publishes in every namespace
    (a short stand-in for the CA bundle)."""
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": _ROOT_CA,
            "namespace": namespace,
            "uid": f"cm-root-ca-{namespace}",
            "resourceVersion": "6",
        },
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nstub\n-----END CERTIFICATE-----\n"},
    }


def _status(code: int, reason: str, message: str) -> bytes:
    return _encode(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


def _answer(code: int, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (code, _REASONS.get(code, b"X"), len(body))
        + body
    )


class Population:
    """The generated Node CRs and pods: node ``i`` is ``node-<i>``, pod ``j`` is on node ``j % N``."""

    def __init__(self, nodes: int, pods: int, mock_statuses: Path | None = None) -> None:
        self.nodes = nodes
        self.pods = pods
        self.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pod_created: dict[int, str] = {}
        """Creation time of pods added after the start (``inject``)."""
        self.mock_statuses: list[Any] = []
        """MockStatuses to list (to measure lifecycle policies that match every pod): a JSON
        list in ``mock_statuses`` (``bench shard --policy``), else in the file named by
        ``MOCKSTATUSES_ENV``; none by default."""
        path = mock_statuses or os.environ.get(MOCKSTATUSES_ENV)
        if path:
            self.mock_statuses = json.loads(Path(path).read_text(encoding="utf-8"))

    def node_name(self, i: int) -> str:
        return f"node-{i:05d}"

    def node_index(self, name: str) -> int:
        """``i`` of ``node-<i>``; -1 for a name not of the population."""
        try:
            i = int(name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return -1
        return i if 0 <= i < self.nodes and name == self.node_name(i) else -1

    def pods_of(self, i: int) -> range:
        """The pods on node ``i``."""
        return range(i, self.pods, self.nodes)

    def cr(self, i: int) -> dict[str, Any]:
        name = self.node_name(i)
        return {
            "apiVersion": API_VERSION,
            "kind": "Node",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"cr-{i:08d}",
                "resourceVersion": "10",
                "generation": 1,
                "creationTimestamp": self.created,
                "labels": {SHARD_LABEL: "0"},
                "finalizers": [FINALIZER],
            },
            "spec": {"nodeConfig": {"labels": {"bench": "shard"}}},
        }

    def pod(self, j: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
        """Pod ``j`` as the apiserver returns it (about 1 KiB of JSON)."""
        name = f"pod-{j:06d}"
        created = self.pod_created.get(j, self.created)
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"pod-uid-{j:08d}",
                "resourceVersion": "20",
                "creationTimestamp": created,
                "labels": {"app": "bench", "pod-template-hash": "5d4f8b7c9"},
                "annotations": {"bench.kubemock/index": str(j)},
            },
            "spec": {
                "nodeName": self.node_name(j % self.nodes),
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.9",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        "terminationMessagePath": "/dev/termination-log",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "schedulerName": "default-scheduler",
                "priority": 0,
                "tolerations": [
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    },
                ],
            },
            "status": status
            if status is not None
            else {
                "phase": "Pending",
                "qosClass": "Burstable",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": created,
                    }
                ],
            },
        }


class _Watch:
    """One open watch stream: an answer kept open, bookmarks, ended at its timeout.

    ``conn`` frames it (:class:`_Http`: chunked; :class:`_H2Stream`: DATA frames).
    ``node``: the node whose pods it watches (``spec.nodeName=``), -1 for all.
    ``bookmarks``: seconds between BOOKMARKs, 0 for none."""

    def __init__(
        self,
        server: StubServer,
        conn: _Http | _H2Stream,
        kind: str,
        timeout: float,
        node: int = -1,
        bookmarks: float = BOOKMARK_EVERY,
    ) -> None:
        self.conn = conn
        self.kind = kind
        self.node = node
        self._every = bookmarks
        loop = asyncio.get_running_loop()
        self._bookmark = loop.call_later(bookmarks, self._tick) if bookmarks else None
        self._end = loop.call_later(timeout, self.close)
        self._server = server

    def send(self, lines: list[bytes]) -> None:
        self.conn.watch_data(b"".join(line + b"\n" for line in lines))

    def _tick(self) -> None:
        kind = _KIND.get(self.kind, "MockStatus")
        self.send(
            [
                _encode(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind,
                            "metadata": {"resourceVersion": str(self._server.rv)},
                        },
                    }
                )
            ]
        )
        self._bookmark = asyncio.get_running_loop().call_later(self._every, self._tick)

    def discard(self) -> None:
        """Forget it (its connection or stream is gone, or it ended)."""
        if self._bookmark is not None:
            self._bookmark.cancel()
        self._end.cancel()
        self._server.forget(self)
        self.conn.watch = None

    def close(self) -> None:
        """End it, as the server does at ``timeoutSeconds``."""
        self.discard()
        self.conn.watch_end()


class _Window:
    """What the stub counts between two resets."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests: dict[str, int] = {}
        self.gaps: list[float] = []
        """Gaps between successive PUTs of one Lease (node Leases only)."""
        self.first_running: float | None = None
        self.last_running: float | None = None
        self.running = 0
        self.busy: dict[str, float] = {}
        """Seconds the stub spent handling requests, by kind (its own CPU, roughly)."""
        self.stall_max = 0.0
        """The longest delay of the event loop's 10 ms tick: how long a request could wait."""
        self.stalled_s = 0.0
        """Total tick delay past 50 ms: time every waiting request was stuck behind others."""
        self.stalls: dict[str, int] = {"0.1": 0, "0.25": 0, "0.5": 0, "1": 0, "2": 0}
        """Ticks delayed by more than each bound (seconds)."""


class StubServer:
    """Everything the stub holds; one instance per process."""

    def __init__(self, population: Population, interval: float) -> None:
        self.population = population
        self.interval = interval
        self.rv = 1000
        self.leases: dict[str, bytes] = {}
        self.lease_put_at: dict[str, float] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pod_status: dict[int, dict[str, Any]] = {}
        self.running: set[int] = set()
        self.watches: set[_Watch] = set()
        self.pod_watches: dict[int, set[_Watch]] = {}
        """Pod watches by the node they watch (-1: every pod), what a pod event goes to."""
        self.csinodes: dict[str, bytes] = {}
        self.connections = {"http/1.1": 0, "h2": 0}
        """Connections open now, by protocol."""
        self.window = _Window()
        self.totals: dict[str, int] = {}
        self.unknown: list[str] = []
        self.kind = "other"
        """The kind of the request being handled (set by :meth:`count`)."""

    def monitor(self) -> None:
        """Start the loop-delay tick (see :class:`_Window`'s ``stall_*``)."""
        loop = asyncio.get_running_loop()
        expected = time.monotonic() + _TICK

        def tick() -> None:
            nonlocal expected
            now = time.monotonic()
            delay = now - expected
            window = self.window
            if delay > window.stall_max:
                window.stall_max = delay
            if delay > 0.05:
                window.stalled_s += delay - 0.05
                for bound in window.stalls:
                    if delay > float(bound):
                        window.stalls[bound] += 1
            expected = now + _TICK
            loop.call_later(_TICK, tick)

        loop.call_later(_TICK, tick)

    def forget(self, watch: _Watch) -> None:
        self.watches.discard(watch)
        if watch.kind in ("pods", "pods_node"):
            self.pod_watches.get(watch.node, set()).discard(watch)

    def busy(self, seconds: float) -> None:
        busy = self.window.busy
        busy[self.kind] = busy.get(self.kind, 0.0) + seconds

    def count(self, kind: str) -> None:
        self.kind = kind
        self.totals[kind] = self.totals.get(kind, 0) + 1
        requests = self.window.requests
        requests[kind] = requests.get(kind, 0) + 1

    # -- routing ---------------------------------------------------------------------------

    def handle(
        self, conn: _Http | _H2Stream, method: str, target: str, body: bytes
    ) -> bytes | None:
        parts = urlsplit(target)
        path = parts.path
        query = dict(parse_qsl(parts.query))
        if path.startswith(_LEASE_PREFIX) and "/leases" in path:
            return self._lease(method, path, body)
        if path == "/api/v1/nodes" and method == "GET":  # the shards' node list and watch
            if "fieldSelector" in query:  # a kubelet's informer of its own Node
                return self._collection(conn, "node_own", query)
            return self._collection(conn, "nodes", query)
        if path.startswith("/api/v1/nodes"):
            return self._node(method, path, body)
        if path == "/api/v1/pods":
            if query.get("fieldSelector", "").startswith("spec.nodeName="):  # one node's
                return self._collection(conn, "pods_node", query)
            return self._collection(conn, "pods", query)
        if path.startswith("/api/v1/namespaces/") and "/pods/" in path and path.endswith("/status"):
            return self._pod_status(path, body)
        if path.startswith("/api/v1/namespaces/") and "/pods/" in path and method == "GET":
            return self._pod_get(path)  # a shard reading back a status it let go
        if path.startswith(_CR_PREFIX):
            if method == "GET" and path.rstrip("/").endswith("v1alpha1/nodes"):
                return self._collection(conn, "crs", query)
            if method == "GET" and path.rstrip("/").endswith("v1alpha1/mockstatuses"):
                return self._collection(conn, "mockstatuses", query)
            if method == "GET" and path.rstrip("/").endswith("v1alpha1/nodescripts"):
                return self._collection(conn, "nodescripts", query)  # none: listed, watched
            return self._cr(method, path, body)
        if path.startswith("/api/v1/namespaces/") and path.endswith("/events") and method == "POST":
            self.count("event_post")
            return _answer(201, body)
        if path.startswith("/api/v1/namespaces/") and "/events/" in path and method == "PATCH":
            self.count("event_patch")  # a repeat counted in its series (not stored: answered)
            return _answer(200, body)
        if path.startswith("/_stub/"):
            return self._control(method, path, query)
        if method == "GET" and path in _KUBELET_COLLECTIONS:
            return self._collection(conn, _KUBELET_COLLECTIONS[path], query)
        if (
            method == "GET"
            and path.startswith("/api/v1/namespaces/")
            and path.endswith("/configmaps")
        ):
            return self._collection(conn, "configmaps", query, path.split("/")[4])
        if path.startswith(_CSINODES):
            return self._csinode(method, path, body)
        self.count("other")
        if len(self.unknown) < 20:
            self.unknown.append(f"{method} {target}")
        return _answer(404, _status(404, "NotFound", f"stub: {method} {path}"))

    def _lease(self, method: str, path: str, body: bytes) -> bytes:
        # ['', apis, coordination.k8s.io, v1, namespaces, ns, leases, name?]
        segments = path.split("/")
        namespace = segments[5]
        name = segments[7] if len(segments) > 7 else ""
        node = namespace == "kube-node-lease"
        if method == "GET":
            self.count("lease_get")
            stored = self.leases.get(f"{namespace}/{name}")
            if stored is None:
                return _answer(404, _status(404, "NotFound", f"leases {name!r} not found"))
            return _answer(200, stored)
        if method == "POST":
            self.count("lease_post" if node else "shard_lease_write")
            obj = _decode(body)
            meta = obj.setdefault("metadata", {})
            key = f"{namespace}/{meta.get('name')}"
            if key in self.leases:
                return _answer(409, _status(409, "AlreadyExists", "exists"))
            self.rv += 1
            meta.update(uid=f"lease-{self.rv}", resourceVersion=str(self.rv), namespace=namespace)
            stored = self.leases[key] = _encode(obj)
            return _answer(201, stored)
        if method == "PUT":
            self.count("lease_put" if node else "shard_lease_write")
            key = f"{namespace}/{name}"
            if node:
                now = time.monotonic()
                last = self.lease_put_at.get(key)
                self.lease_put_at[key] = now
                if last is not None:
                    self.window.gaps.append(now - last)
            self.leases[key] = body
            return _answer(200, body)
        if method == "PATCH":
            self.count("lease_patch" if node else "shard_lease_write")
            return self._lease_json_patch(f"{namespace}/{name}", name, body)
        self.count("other")
        return _answer(404, _status(404, "NotFound", path))

    def _lease_json_patch(self, key: str, name: str, body: bytes) -> bytes:
        """A JSON patch (RFC 6902) of a Lease's spec fields, as a shard renews its own; or a
        merge patch of them (a JSON object), as a shard takes a node's Lease over when its
        fence reopens."""
        stored = self.leases.get(key)
        if stored is None:
            return _answer(404, _status(404, "NotFound", f"leases {name!r} not found"))
        lease = _decode(stored)
        spec = lease.setdefault("spec", {})
        if body.lstrip()[:1] == b"{":
            spec.update(_decode(body).get("spec") or {})
            self.rv += 1
            lease.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            stored = self.leases[key] = _encode(lease)
            return _answer(200, stored)
        for op in msgspec.json.decode(body, type=list[dict[str, Any]]):
            field = str(op.get("path", "")).removeprefix("/spec/")
            if op.get("op") == "test" and spec.get(field) != op.get("value"):
                return _answer(422, _status(422, "Invalid", f"test of /spec/{field} failed"))
            if op.get("op") in ("add", "replace"):
                spec[field] = op.get("value")
        self.rv += 1
        lease.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        stored = self.leases[key] = _encode(lease)
        return _answer(200, stored)

    def _node(self, method: str, path: str, body: bytes) -> bytes:
        segments = path.split("/")  # ['', api, v1, nodes, name?, status?]
        name = segments[4] if len(segments) > 4 else ""
        if method == "GET":
            self.count("node_get")
            node = self.nodes.get(name)
            if node is None:
                return _answer(404, _status(404, "NotFound", f'nodes "{name}" not found'))
            return _answer(200, _encode(node))
        if method == "POST":
            self.count("node_post")
            return self._create(self.nodes, body, "node-uid", lambda obj: obj)
        if method == "PATCH":
            node = self.nodes.get(name)
            if node is None:
                self.count("other")
                return _answer(404, _status(404, "NotFound", name))
            patch = _decode(body)
            if len(segments) > 5 and segments[5] == "status":
                self.count("node_status_patch")
                merged = strategic_merge_patch({"status": node.get("status") or {}}, patch, "Node")
                node["status"] = merged.get("status") or {}
            else:
                self.count("node_patch")
                patch.get("metadata", {}).pop("resourceVersion", None)
                node.update(strategic_merge_patch(node, patch, "Node"))
            self.rv += 1
            node["metadata"]["resourceVersion"] = str(self.rv)
            return _answer(200, _encode(node))
        self.count("other")
        return _answer(404, _status(404, "NotFound", path))

    def _csinode(self, method: str, path: str, body: bytes) -> bytes:
        name = path[len(_CSINODES) :].strip("/")
        if method == "GET" and name:
            self.count("csinode_get")
            stored = self.csinodes.get(name)
            if stored is None:
                return _answer(
                    404, _status(404, "NotFound", f'csinodes.storage.k8s.io "{name}" not found')
                )
            return _answer(200, stored)
        if method == "POST" and not name:
            self.count("csinode_post")
            return self._create(self.csinodes, body, "csinode-uid", _encode)
        self.count("other")
        return _answer(404, _status(404, "NotFound", path))

    def _create(
        self,
        store: dict[str, _Stored],
        body: bytes,
        uid_prefix: str,
        keep: Callable[[dict[str, Any]], _Stored],
    ) -> bytes:
        """POST of a cluster-scoped object named in ``body``: 409 AlreadyExists if ``store``
        holds that name, as kube-apiserver answers a kubelet registering again; else given a
        uid and resourceVersion, kept in ``store`` as ``keep`` makes it, and answered 201."""
        obj = _decode(body)
        meta = obj.setdefault("metadata", {})
        name = str(meta.get("name"))
        if name in store:
            return _answer(409, _status(409, "AlreadyExists", "exists"))
        self.rv += 1
        meta.update(uid=f"{uid_prefix}-{self.rv}", resourceVersion=str(self.rv))
        store[name] = keep(obj)
        return _answer(201, _encode(obj))

    def _pod_index(self, name: str) -> int | None:
        try:
            j = int(name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return None
        return j if 0 <= j < self.population.pods else None

    def _pod_get(self, path: str) -> bytes:
        self.count("pod_get")
        name = path.split("/")[6]  # ['', api, v1, namespaces, ns, pods, name]
        j = self._pod_index(name)
        if j is None:
            return _answer(404, _status(404, "NotFound", f'pods "{name}" not found'))
        return _answer(200, _encode(self.population.pod(j, self.pod_status.get(j))))

    def _pod_status(self, path: str, body: bytes) -> bytes:
        self.count("pod_status_patch")
        name = path.split("/")[6]  # ['', api, v1, namespaces, ns, pods, name, status]
        j = self._pod_index(name)
        if j is None:
            return _answer(404, _status(404, "NotFound", name))
        patch = _decode(body)
        uid = (patch.pop("metadata", None) or {}).get("uid")
        if uid is not None and uid != f"pod-uid-{j:08d}":
            return _answer(409, _status(409, "Conflict", "uid precondition"))
        base = self.pod_status.get(j)
        if base is None:
            base = self.population.pod(j)["status"]
        status = strategic_merge_patch({"status": base}, patch, "Pod").get("status") or {}
        self.pod_status[j] = status
        if status.get("phase") == "Running" and j not in self.running:
            self.running.add(j)
            now = time.monotonic()
            window = self.window
            window.running += 1
            if window.first_running is None:
                window.first_running = now
            window.last_running = now
        self.rv += 1
        pod = self.population.pod(j, status)
        pod["metadata"]["resourceVersion"] = str(self.rv)
        body = _encode(pod)
        # As a real apiserver does: the writer's own watch sees its write come back.
        line = b'{"type":"MODIFIED","object":%s}' % body
        watches = self.pod_watches
        for watch in watches.get(-1, ()):
            watch.send([line])
        for watch in watches.get(j % self.population.nodes, ()):
            watch.send([line])
        return _answer(200, body)

    def _cr(self, method: str, path: str, body: bytes) -> bytes:
        # ['', apis, group, v1alpha1, namespaces, ns, nodes, name, status?]
        segments = path.split("/")
        name = segments[7] if len(segments) > 7 else ""
        try:
            i = int(name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            i = -1
        if not 0 <= i < self.population.nodes:
            self.count("other")
            return _answer(404, _status(404, "NotFound", name))
        cr = self.population.cr(i)
        if method == "PATCH":
            self.count("cr_status_patch" if path.endswith("/status") else "cr_patch")
            patch = _decode(body)
            if "status" in patch:
                cr["status"] = patch["status"]
        else:
            self.count("cr_get")
        return _answer(200, _encode(cr))

    # -- lists and watches ------------------------------------------------------------------

    def _collection(
        self, conn: _Http | _H2Stream, kind: str, query: dict[str, str], namespace: str = ""
    ) -> bytes | None:
        node = -1
        if kind == "pods_node":
            node = self.population.node_index(query["fieldSelector"].partition("=")[2])
        if query.get("watch") in ("true", "1"):
            self.count(f"{kind}_watch")
            timeout = float(query.get("timeoutSeconds") or 1800)
            conn.watch_start()
            bookmarks = BOOKMARK_EVERY  # the lean shard's watches: as before
            if kind not in ("pods", "crs", "nodes", "mockstatuses", "nodescripts"):
                bookmarks = KUBE_BOOKMARK_EVERY if query.get("allowWatchBookmarks") == "true" else 0
            watch = _Watch(self, conn, kind, timeout, node, bookmarks)
            conn.watch = watch
            self.watches.add(watch)
            if kind in ("pods", "pods_node"):
                self.pod_watches.setdefault(node, set()).add(watch)
            return None
        self.count(f"{kind}_list")
        if kind in ("node_own", "services", "configmaps", "runtimeclasses", "csidrivers"):
            return self._small_list(kind, query, namespace)
        total = {
            "crs": self.population.nodes,
            "pods": self.population.pods,
            "pods_node": len(self.population.pods_of(node)) if node >= 0 else 0,
            "nodes": len(self.nodes),
        }.get(kind, 0)
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or total
        stop = min(total, start + limit)
        if kind == "crs":
            items = [self.population.cr(i) for i in range(start, stop)]
        elif kind == "mockstatuses":
            items = self.population.mock_statuses
        elif kind == "nodescripts":
            items = []
        elif kind == "nodes":
            items = list(self.nodes.values())[start:stop]
        elif kind == "pods_node":
            indices = self.population.pods_of(node)[start:stop]
            items = [self.population.pod(j, self.pod_status.get(j)) for j in indices]
        else:
            items = [self.population.pod(j, self.pod_status.get(j)) for j in range(start, stop)]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if stop < total:
            meta["continue"] = str(stop)
        listing = {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": items}
        return _answer(200, _encode(listing))

    def _small_list(self, kind: str, query: dict[str, str], namespace: str) -> bytes:
        """What a kubelet's informers list: nothing, the one Service, its own Node, the CA."""
        items: list[Any] = []
        selected = query.get("fieldSelector", "").partition("=")[2]
        if kind == "node_own":
            node = self.nodes.get(selected)
            items = [] if node is None else [node]
        elif kind == "services":
            items = [_KUBERNETES_SERVICE]
        elif kind == "configmaps" and selected in ("", _ROOT_CA):
            items = [_root_ca(namespace)]
        meta = {"resourceVersion": str(self.rv)}
        return _answer(
            200, _encode({"kind": "List", "apiVersion": "v1", "metadata": meta, "items": items})
        )

    # -- control -----------------------------------------------------------------------------

    def _control(self, method: str, path: str, query: dict[str, str]) -> bytes:
        if path == "/_stub/stats":
            return _answer(200, _encode(self.stats()))
        if path == "/_stub/reset" and method == "POST":
            self.window = _Window()
            return _answer(200, b"{}")
        if path == "/_stub/inject" and method == "POST":
            count = int(query.get("pods") or 0)
            self.inject(count)
            return _answer(200, _encode({"injected": count}))
        return _answer(404, _status(404, "NotFound", path))

    def inject(self, count: int) -> None:
        population = self.population
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        first = population.pods
        population.pods += count
        lines = []
        for j in range(first, first + count):
            population.pod_created[j] = now
            self.rv += 1
            pod = population.pod(j)
            pod["metadata"]["resourceVersion"] = str(self.rv)
            lines.append(_encode({"type": "ADDED", "object": pod}))
        for watch in self.pod_watches.get(-1, ()):
            for at in range(0, len(lines), 200):
                watch.send(lines[at : at + 200])
        nodes = population.nodes
        for node, watches in self.pod_watches.items():
            if node >= 0 and watches:
                mine = [line for k, line in enumerate(lines) if (first + k) % nodes == node]
                for watch in watches:
                    watch.send(mine)

    def stats(self) -> dict[str, Any]:
        window = self.window
        elapsed = time.monotonic() - window.started
        late_after = self.interval
        lateness = sorted(max(0.0, gap - late_after) for gap in window.gaps)
        writes = sum(
            n
            for kind, n in window.requests.items()
            if kind
            in (
                "lease_put",
                "lease_post",
                "lease_patch",
                "node_status_patch",
                "pod_status_patch",
                "node_post",
                "node_patch",
                "cr_status_patch",
                "cr_patch",
                "event_post",
                "shard_lease_write",
            )
        )
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] if lateness else 0.0
        return {
            "window_s": elapsed,
            "requests": window.requests,
            "totals": self.totals,
            "writes": writes,
            "writes_per_s": writes / elapsed if elapsed > 0 else 0.0,
            "nodes_registered": len(self.nodes),
            "node_leases": sum(1 for key in self.leases if key.startswith("kube-node-lease/")),
            "pods": self.population.pods,
            "pods_running": len(self.running),
            "window_running": window.running,
            "window_running_span_s": (
                window.last_running - window.first_running
                if window.first_running is not None and window.last_running is not None
                else None
            ),
            "renewals": len(lateness),
            "lateness_max_s": lateness[-1] if lateness else 0.0,
            "lateness_p99_s": p99,
            "renewals_late_2s": len(lateness) - bisect.bisect_right(lateness, 2.0),
            "open_watches": len(self.watches),
            "connections": dict(self.connections),
            "busy_s": {kind: round(t, 3) for kind, t in window.busy.items()},
            "busy_fraction": sum(window.busy.values()) / elapsed if elapsed > 0 else 0.0,
            "stall_max_s": window.stall_max,
            "stalled_s": window.stalled_s,
            "stalls": dict(window.stalls),
            "unknown": self.unknown,
        }


class _Http(asyncio.Protocol):
    """One connection: requests answered in order; a watch takes the connection over. One
    that opens with the HTTP/2 preface is handed to :class:`_H2`."""

    server: StubServer

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self.watch: _Watch | None = None
        self._h2: _H2 | None = None
        self._protocol = ""
        """"http/1.1" or "h2" once the first bytes told which."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.watch is not None:
            self.watch.discard()
        if self._h2 is not None:
            self._h2.lost()
        if self._protocol:
            self.server.connections[self._protocol] -= 1
        self._transport = None

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def watch_start(self) -> None:
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

    def watch_data(self, data: bytes) -> None:
        self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def watch_end(self) -> None:
        self.write(b"0\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        if self._h2 is not None:
            self._h2.receive(data)
            return
        self._buf += data
        if not self._protocol:
            if _PREFACE.startswith(bytes(self._buf[: len(_PREFACE)])):
                if len(self._buf) < len(_PREFACE):
                    return  # the rest of the preface, or of a request, is on its way
                self._protocol = "h2"
                self.server.connections["h2"] += 1
                self._h2 = _H2(self)
                data, self._buf = bytes(self._buf), bytearray()
                self._h2.receive(data)
                return
            self._protocol = "http/1.1"
            self.server.connections["http/1.1"] += 1
        out: list[bytes] = []
        while self.watch is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = parse_request_head(bytes(self._buf[:end]))
            total = end + 4 + (head.content_length or 0)
            if len(self._buf) < total:
                break
            body = bytes(self._buf[end + 4 : total])
            del self._buf[:total]
            method, target = head.method, head.target.decode("latin-1")
            if out:
                self.write(b"".join(out))
                out.clear()
            began = time.perf_counter()
            answer = self.server.handle(self, method, target, body)
            self.server.busy(time.perf_counter() - began)
            if answer is not None:
                out.append(answer)
        if out:
            self.write(b"".join(out))


class _H2Stream:
    """One HTTP/2 stream: a request's answer, or a watch kept open on it."""

    def __init__(self, h2c: _H2, stream_id: int) -> None:
        self._h2 = h2c
        self.id = stream_id
        self.watch: _Watch | None = None
        self.pending = bytearray()
        """Answer bytes waiting for the client's flow-control window."""
        self.ending = False
        """Ends once ``pending`` is sent."""

    def answer(self, raw: bytes) -> None:
        """Send an answer framed as HTTP/1.1 (what :meth:`StubServer.handle` returns)."""
        head, _, body = raw.partition(b"\r\n\r\n")
        self._h2.head(self.id, head[9:12], len(body))
        self.send(body, end=True)

    def watch_start(self) -> None:
        self._h2.head(self.id, b"200", None)
        self._h2.flush()

    def watch_data(self, data: bytes) -> None:
        self.send(data)

    def watch_end(self) -> None:
        self.send(b"", end=True)

    def send(self, data: bytes, *, end: bool = False) -> None:
        self.pending += data
        self.ending = self.ending or end
        self._h2.pump(self)
        self._h2.flush()


class _H2:
    """A connection speaking HTTP/2 (h2c with prior knowledge), by the ``h2`` state machine.

    Each stream carries one request; its body is gathered until the stream ends, then
    :meth:`StubServer.handle` answers it as over HTTP/1.1. A stream the client resets (a
    watch it stopped reading) is forgotten; data past a window waits for WINDOW_UPDATE."""

    def __init__(self, owner: _Http) -> None:
        self._owner = owner
        self._server = owner.server
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self._conn.initiate_connection()
        self._requests: dict[int, tuple[str, str, bytearray]] = {}
        self._streams: dict[int, _H2Stream] = {}
        self._blocked: set[_H2Stream] = set()
        """Streams with answer bytes waiting for a window."""

    def receive(self, data: bytes) -> None:
        conn = self._conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.H2Error:
            self.flush()
            self._owner.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                fields = dict(event.headers or ())
                method = bytes(fields.get(b":method", b"GET")).decode("latin-1")
                target = bytes(fields.get(b":path", b"/")).decode("latin-1")
                self._requests[event.stream_id] = (method, target, bytearray())
            elif isinstance(event, h2.events.DataReceived):
                request = self._requests.get(event.stream_id)
                if request is not None and event.data:
                    request[2].extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                request = self._requests.pop(event.stream_id, None)
                if request is not None:
                    self._dispatch(event.stream_id, *request)
            elif isinstance(event, h2.events.StreamReset):
                self._requests.pop(event.stream_id, None)
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    self._blocked.discard(stream)
                    if stream.watch is not None:
                        stream.watch.discard()
            elif isinstance(event, h2.events.WindowUpdated):
                for stream in list(self._blocked):
                    self.pump(stream)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.flush()
                self._owner.close()
                return
        self.flush()

    def _dispatch(self, stream_id: int, method: str, target: str, body: bytearray) -> None:
        stream = self._streams[stream_id] = _H2Stream(self, stream_id)
        began = time.perf_counter()
        answer = self._server.handle(stream, method, target, bytes(body))
        self._server.busy(time.perf_counter() - began)
        if answer is not None:
            stream.answer(answer)

    def head(self, stream_id: int, status: bytes, length: int | None) -> None:
        fields = [(b":status", status), (b"content-type", b"application/json")]
        if length is not None:
            fields.append((b"content-length", b"%d" % length))
        try:
            self._conn.send_headers(stream_id, fields)
        except h2.exceptions.H2Error:
            self._forget(stream_id)  # reset by the client meanwhile

    def pump(self, stream: _H2Stream) -> None:
        """Send what the windows allow of ``stream``'s answer; end it once all is sent."""
        conn = self._conn
        try:
            while stream.pending:
                size = min(
                    len(stream.pending),
                    conn.local_flow_control_window(stream.id),
                    conn.max_outbound_frame_size,
                )
                if size <= 0:
                    self._blocked.add(stream)
                    return
                conn.send_data(stream.id, bytes(stream.pending[:size]))
                del stream.pending[:size]
            self._blocked.discard(stream)
            if stream.ending:
                conn.end_stream(stream.id)
                self._streams.pop(stream.id, None)
        except h2.exceptions.H2Error:
            self._forget(stream.id)

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            self._blocked.discard(stream)
            stream.pending.clear()
            if stream.watch is not None:
                stream.watch.discard()

    def flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._owner.write(data)

    def lost(self) -> None:
        """The connection is gone: its watches end."""
        for stream in list(self._streams.values()):
            if stream.watch is not None:
                stream.watch.discard()
        self._streams.clear()
        self._blocked.clear()


async def serve(population: Population, interval: float, port: int = 0) -> None:
    """Serve on 127.0.0.1 until cancelled; print the bound port on stdout first."""
    state = StubServer(population, interval)

    def factory() -> _Http:
        conn = _Http()
        conn.server = state
        return conn

    loop = asyncio.get_running_loop()
    # The stub must answer at once: no cyclic GC passes (hundreds of ms over its
    # hundred thousand stored statuses, measured as event-loop stalls of up to 0.66 s
    # during a 5,000-node start-up). Its garbage is freed by reference counting; the
    # few cycles asyncio makes are bounded by the life of a bench run.
    gc.disable()
    state.monitor()
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._stubapiserver")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--pods", type=int, required=True)
    parser.add_argument(
        "--interval",
        type=float,
        default=10.4,
        help="Longest Lease renewal interval the jitter allows (lateness is past it).",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--mockstatuses",
        type=Path,
        default=None,
        help=f"A JSON list of MockStatus objects to list (else ${MOCKSTATUSES_ENV}'s file).",
    )
    args = parser.parse_args()
    population = Population(args.nodes, args.pods, args.mockstatuses)
    try:
        asyncio.run(serve(population, args.interval, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":  # pragma: no cover - run as a subprocess by bench.shard
    _main()
