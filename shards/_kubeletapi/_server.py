"""A shard's kubelet API: one HTTPS listener for every node the shard drives.

The apiserver reaches a node's kubelet at the node's address and
``daemonEndpoints.kubeletEndpoint.Port``; a shard writes its own there for every node it
drives (``_kubelets``), so ``kubectl logs`` (``pods/log``) and ``nodes/proxy`` land here.

=====================================================  =======================================
path                                                   answer
=====================================================  =======================================
``/healthz``                                           ``ok``
``/containerLogs/{ns}/{pod}/{container}``              the container's log (``_logs``), cut
                                                       by the query; streamed with ``follow``
``/pods``                                              the node's pods (a ``PodList``)
``/configz``                                           the node's ``KubeletConfiguration``
``/exec/..``, ``/attach/..`` (WebSocket, SPDY)          ``_exec`` (``_commands``, ``_spdy``)
``/portForward/{ns}/{pod}`` (SPDY)                     ``_portforward``
``/stats/summary``, ``/metrics/resource``,             usage (``_usage``, ``_stats``)
``/metrics/cadvisor``
=====================================================  =======================================

Pod paths name their pod, so one listener serves them for every node. Node paths
(``/pods``, ``/configz``, stats) do not: the apiserver's ``nodes/{n}/proxy/pods`` becomes
``/pods`` on the node's address, the same for every node of a shard. They are therefore
also served under ``/nodes/{node}/...`` (the sandbox's ``nodes/proxy`` and the
``metrics.k8s.io/resource-metrics-path`` node annotation, which KWOK-aware metrics-server
follows, use that form); unprefixed, they answer for the node whose own address the
connection was made to (``_addresses``: under ``run``/``up`` each node has one), else for
the shard's only node, or 400 when it drives several.

Authentication and authorization as a kubelet with ``--anonymous-auth=false``: a client
certificate signed by the client CA (the apiserver's ``--kubelet-client-certificate``), or a
bearer token, reviewed by the cluster; then a SubjectAccessReview where the cluster serves
one (``_auth``).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import trio

from fleet.errors import ConfigError, InputError
from fleet.kube import load_pem_cert_chain
from fleet.machinery import format_time, utc_now
from shards._kubeletapi._addresses import NodeAddresses
from shards._kubeletapi._auth import Identity, WebhookAuth, attributes
from shards._kubeletapi._exec import Streams
from shards._kubeletapi._http import Reply, Request, Streamed, Upgrade, serve_connection
from shards._kubeletapi._listener import open_listeners
from shards._kubeletapi._logs import (
    LogOptions,
    LogScript,
    log_script,
    parse_log_options,
    select,
)
from shards._kubeletapi._settings import KubeletApiSettings
from shards._kubeletapi._stats import Stats
from shards._kubeletapi._view import ContainerRuns, NodeInfo, PodInfo, ShardView

__all__ = ["KubeletEndpoint", "KubeletServer"]

log = logging.getLogger("shards.kubeletapi")

_JSON = "application/json"
_encode = msgspec.json.Encoder().encode
_TERMINAL = frozenset({"Succeeded", "Failed"})
CLIENT_CA_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
"""Where a cluster publishes its client CA (``client-ca-file``): on kubeadm and kind clusters
the CA that also signed the apiserver's kubelet client certificate."""
NODE_PATHS = frozenset(
    {"pods", "configz", "stats/summary", "metrics/resource", "metrics/cadvisor", "healthz"}
)
"""Paths that answer for one node, also served under ``/nodes/{node}/``."""


class KubeletEndpoint(msgspec.Struct, frozen=True):
    """Where a started server listens, as the nodes advertise it."""

    address: str
    port: int
    per_node: NodeAddresses | None = None
    """Each node its own address on this listener (``_addresses``); None: all ``address``."""

    def address_of(self, node: str) -> str:
        """The InternalIP ``node`` advertises: its own address, else the shared one."""
        if self.per_node is not None:
            return self.per_node.address_of(node) or self.address
        return self.address


def _local(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getsockname()[0])
    except (OSError, IndexError, TypeError):
        return ""


def _text(status: int, message: str) -> Reply:
    return Reply(status, (message.rstrip("\n") + "\n").encode())


def server_context(settings: KubeletApiSettings, client_ca_pem: bytes) -> ssl.SSLContext:
    """TLS as a kubelet serves it: its certificate, client certificates from the client CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_OPTIONAL  # none: a token, or 401 from the handler
    context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    context.set_alpn_protocols(["http/1.1"])
    if settings.cert_pem is not None and settings.key_pem is not None:
        load_pem_cert_chain(context, settings.cert_pem, settings.key_pem)
    else:
        import trustme

        ca = trustme.CA(organization_name="kubemock-fleet kubelet")
        ca.issue_cert(settings.advertise_address, "localhost").configure_cert(context)
    return context


class KubeletServer:
    """The kubelet API of one shard (see the module docstring)."""

    def __init__(
        self,
        settings: KubeletApiSettings,
        view: ShardView,
        *,
        wall: Callable[[], datetime] = utc_now,
        auth: WebhookAuth | None = None,
        give_way: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._give_way = give_way
        """Awaited before each request: the shard's Lease lane, when renewals are overdue
        (trio has no priorities; metrics-server's scrape of 10,000 nodes in 4 s is a CPU
        flood that made nearly every renewal late)."""
        self.view = view
        self._wall = wall
        self.auth = auth
        """Token reviews, access reviews and the cluster's client CA; None: client
        certificates only, every holder allowed everything."""
        self._limiter = trio.CapacityLimiter(settings.max_connections)
        self.port = settings.port
        """The port listened on (the one chosen, once running, when the settings say 0)."""
        self.stats: Stats | None = Stats(view, wall)
        """The stats endpoints; None: 404."""
        self.exec: Streams | None = Streams(view, wall)
        """``/exec`` and ``/attach`` (WebSocket); None: 404."""
        self.per_node = (
            NodeAddresses(ipaddress.IPv4Network(settings.node_network))
            if settings.node_network
            else None
        )
        """Each node's own address, when the settings give a network for them."""

    async def run(
        self, *, task_status: trio.TaskStatus[KubeletEndpoint] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled; report the :class:`KubeletEndpoint` the nodes advertise."""
        s = self.settings
        context = server_context(s, s.client_ca_pem or await self._cluster_client_ca())

        per_node = self.per_node

        async def connection(stream: trio.SocketStream) -> None:
            if per_node is not None and not per_node.accepts(_local(stream)):
                await stream.aclose()  # opened wider (kubeletBind 0.0.0.0): loopback only
                return
            async with self._limiter:
                try:
                    await serve_connection(stream, context, self.handle)
                except Exception:  # one connection's fault never takes the listener down
                    log.exception("kubelet API: a connection failed")

        host = s.host or ("0.0.0.0" if per_node is not None else s.advertise_address)
        listeners = await open_listeners(
            host, s.port, loopback_device=per_node is not None and not s.host
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, connection, listeners)
            port = self.port = listeners[0].socket.getsockname()[1]
            log.info(
                "kubelet API on %s:%d (advertised as %s)",
                "loopback" if per_node is not None and not s.host else host,
                port,
                s.advertise_address,
            )
            task_status.started(KubeletEndpoint(s.advertise_address, port, per_node))

    # -- routing ---------------------------------------------------------------------------

    async def _cluster_client_ca(self) -> bytes:
        """The apiserver's client CA, as the cluster publishes it for its extension servers."""
        if self.auth is None:
            raise ConfigError("kubelet API: no client CA given, and no cluster to read it from")
        response = await self.auth.requester.request("GET", CLIENT_CA_CONFIGMAP)
        if response.ok:
            data = msgspec.json.decode(response.content).get("data") or {}
            if data.get("client-ca-file"):
                return str(data["client-ca-file"]).encode()
        raise ConfigError(
            f"kubelet API: shard.kubeletClientCaFile is empty and {CLIENT_CA_CONFIGMAP} "
            f"gives no client-ca-file (HTTP {response.status})"
        )

    async def _allowed(self, request: Request, parts: list[str]) -> Reply | None:
        """None when the request may go on; else the 401 or 403 to answer."""
        token = False
        if request.user is not None:
            identity = Identity(request.user, request.groups)
        else:
            bearer = request.headers.get("authorization", "")
            if self.auth is None or not bearer.lower().startswith("bearer "):
                return _text(401, "Unauthorized")
            found = await self.auth.authenticate(bearer[7:].strip())
            if found is None:
                return _text(401, "Unauthorized")
            identity, token = found, True
        if self.auth is None:
            return None
        verb, subresource = attributes(request.method, request.path)
        if await self.auth.authorize(
            identity, verb, subresource, self._node_of(parts, request.local), token=token
        ):
            return None
        return _text(
            403,
            f"Forbidden (user={identity.user}, verb={verb}, resource=nodes, "
            f"subresource={subresource})",
        )

    def _node_of(self, parts: list[str], local: str = "") -> str:
        """The node a request concerns (the name a SubjectAccessReview asks about)."""
        if len(parts) >= 3 and parts[0] in ("containerLogs", "exec", "attach", "portForward"):
            pod = self.view.pod(parts[1], parts[2])
            return pod.node if pod is not None else ""
        if len(parts) >= 2 and parts[0] == "nodes":
            return parts[1]
        if self.per_node is not None and (own := self.per_node.node_at(local)) is not None:
            return own
        names = self.view.nodes()
        return names[0] if len(names) == 1 else ""

    async def handle(self, request: Request) -> Reply | Streamed | Upgrade:
        if self._give_way is not None:
            await self._give_way()
        path = request.path
        parts = [p for p in path.split("/") if p]
        refused = await self._allowed(request, parts)
        if refused is not None:
            return refused
        if parts and parts[0] == "containerLogs":
            if request.method != "GET":
                return _text(405, "Method Not Allowed")
            if len(parts) != 4:
                return _text(404, "404 page not found")
            return self._logs(parts[1], parts[2], parts[3], request)
        if parts and parts[0] in ("exec", "attach", "portForward", "run"):
            if self.exec is None:
                return _text(404, "404 page not found")
            return await self.exec.handle(parts, request)
        node_name: str | None = None
        if len(parts) >= 3 and parts[0] == "nodes":
            node_name, parts = parts[1], parts[2:]
        elif self.per_node is not None:  # the address dialed names the node
            node_name = self.per_node.node_at(request.local)
        rest = "/".join(parts)
        if rest not in NODE_PATHS:
            return _text(404, "404 page not found")
        if request.method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed")
        if rest == "healthz" and node_name is None:
            return Reply(200, b"ok")
        node = self._node(node_name)
        if isinstance(node, Reply):
            return node
        if rest == "healthz":
            return Reply(200, b"ok")
        if rest == "pods":
            return Reply(200, _encode(self._pod_list(node)), _JSON)
        if rest == "configz":
            return Reply(200, _encode(self._configz(node)), _JSON)
        if self.stats is None:
            return _text(404, "404 page not found")
        return self.stats.handle(rest, node, request)

    def _node(self, name: str | None) -> NodeInfo | Reply:
        if name is None:
            names = self.view.nodes()
            if len(names) != 1:
                return _text(
                    400,
                    f"this kubelet endpoint serves {len(names)} nodes (a kubemock-fleet shard): "
                    "ask for /nodes/<node>/<path>",
                )
            name = names[0]
        node = self.view.node(name)
        if node is None:
            return _text(404, f'node "{name}" is not served here')
        return node

    # -- /pods, /configz -------------------------------------------------------------------

    def _pod_list(self, node: NodeInfo) -> dict[str, Any]:
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": [_pod_json(p) for p in self.view.pods_on(node.name)],
        }

    def _configz(self, node: NodeInfo) -> dict[str, Any]:
        return {
            "kubeletconfig": {
                "enableServer": True,
                "port": self.port,
                "maxPods": int(node.capacity.get("pods", "110") or 110),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": False},
                    "x509": {"clientCAFile": "(kubemock-fleet client CA)"},
                },
                "authorization": {"mode": "AlwaysAllow"},
                "nodeStatusUpdateFrequency": "10s",
                "nodeStatusReportFrequency": "5m0s",
                "nodeLeaseDurationSeconds": 40,
                "kind": "KubeletConfiguration",
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
            }
        }

    # -- /containerLogs --------------------------------------------------------------------

    def _logs(
        self, namespace: str, name: str, container: str, request: Request
    ) -> Reply | Streamed:
        try:
            options = parse_log_options(request.args())
        except InputError as exc:
            return _text(400, str(exc))
        pod = self.view.pod(namespace, name)
        if pod is None:
            return _text(404, f'pod "{name}" in namespace "{namespace}" not found')
        if pod.container(container) is None:
            return _text(400, f'container "{container}" in pod "{name}" is not available')
        if pod.runs is not None:
            runs = pod.runs(container, self._wall())
        elif pod.phase == "Pending":
            runs = ContainerRuns(None)
        else:
            runs = ContainerRuns((pod.created, None))
        run: tuple[datetime, datetime | None] | None = runs.current
        if options.previous:
            run = runs.previous
            if run is None:
                return _text(
                    400,
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
        elif run is None:
            return _text(
                400,
                f'container "{container}" in pod "{name}" is waiting to start: {runs.waiting}',
            )
        script = log_script(pod, container, self.settings.default_log_interval, run)
        return Streamed(partial(self._log_chunks, pod, container, script, options))

    async def _log_chunks(
        self, pod: PodInfo, container: str, script: LogScript, options: LogOptions
    ) -> AsyncIterator[bytes]:
        now = self._wall()
        start, stop = select(script, options, now, self.settings.max_log_lines)
        budget = options.limit_bytes
        chunk = script.render(start, stop, timestamps=options.timestamps)
        while True:
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            if chunk:
                yield chunk
            if not options.follow or budget == 0 or pod.phase in _TERMINAL:
                return
            if script.end is not None:  # a run that ended: its log is complete
                return
            current = self.view.pod(pod.namespace, pod.name)
            if current is None or current.uid != pod.uid:
                return
            pod = current
            wait = self.settings.follow_poll
            if script.interval is not None and script.lines:
                due = (script.at(stop) - self._wall()).total_seconds()
                wait = min(wait, max(due, 0.0))
            await trio.sleep(wait)
            now = self._wall()
            if pod.runs is not None:
                script = replace(script, end=_ended(pod.runs(container, now), script.start))
            start, stop = stop, script.count_until(now)
            chunk = script.render(start, stop, timestamps=options.timestamps)


def _ended(runs: ContainerRuns, start: datetime) -> datetime | None:
    """When the run that began at ``start`` ended, as of ``runs``; None: it still runs.
    A follow ends with its container (the kubelet's log stream ends at the exit)."""
    for run in (runs.current, runs.previous):
        if run is not None and run[0] == start:
            return run[1]
    return start  # restarted more than once meanwhile: nothing more of this run is known


def _container_json(c: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if c.requests:
        resources["requests"] = dict(c.requests)
    if c.limits:
        resources["limits"] = dict(c.limits)
    return {"name": c.name, "resources": resources}


def _pod_json(pod: PodInfo) -> dict[str, Any]:
    return {
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "creationTimestamp": format_time(pod.created),
            "annotations": dict(pod.annotations),
        },
        "spec": {
            "nodeName": pod.node,
            "containers": [_container_json(c) for c in pod.containers],
            "initContainers": [_container_json(c) for c in pod.init_containers],
        },
        "status": {"phase": pod.phase},
    }
