"""The sandbox's proxy to kubelets: ``pods/log`` and ``nodes/proxy``, as kube-apiserver does it.

kube-apiserver reaches a node's kubelet at the node's preferred address (here: InternalIP,
then Hostname, ExternalIP — kubeadm's ``--kubelet-preferred-address-types``) and
``status.daemonEndpoints.kubeletEndpoint.Port`` (10250 when unset), over TLS, presenting its
``--kubelet-client-certificate``; without ``--kubelet-certificate-authority`` it does not
verify the kubelet's serving certificate. The sandbox does the same with the client
certificate it generated (:class:`KubeletClientCert`, whose CA the fleet's shards trust).

=========================================  ==============================================
request                                    goes to
=========================================  ==============================================
``GET pods/{name}/log?container=c&...``    ``/containerLogs/{ns}/{name}/{c}?...`` (the log
                                           options only); a non-2xx answer becomes a
                                           Status (400 → BadRequest with the kubelet's
                                           text, as the apiserver's response checker
                                           does); the body is streamed (``follow``)
``* nodes/{name}/proxy/{path}``            ``/{path}``, status and body passed through;
                                           the kubelet paths that answer for one node
                                           (``pods``, ``stats/summary``, ...) go to
                                           ``/nodes/{name}/{path}``, since the fleet's
                                           nodes share one endpoint per shard
=========================================  ==============================================

What the apiserver checks before it proxies is checked here with its messages: a pod
with no node, an unknown container, a container to choose.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import trio

from fleet.kube import kubelet_client_context
from fleet.sandbox._status import StatusError

__all__ = ["KubeletClientCert", "Proxied", "log_location", "node_location", "proxy"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFERRED_ADDRESS_TYPES = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
"""kubeadm's order (kube-apiserver's own default puts Hostname first, which only a cluster
whose node names resolve can use)."""
DEFAULT_KUBELET_PORT = 10250
LOG_OPTIONS = (
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
)
"""The ``PodLogOptions`` the apiserver forwards (``container`` goes into the path)."""
NODE_PATHS = frozenset(
    {"pods", "configz", "healthz", "stats/summary", "metrics/resource", "metrics/cadvisor"}
)
"""Kubelet paths that answer for one node: the fleet's shards serve them under
``/nodes/{node}/`` (``shards._kubeletapi``), since a shard's nodes share its endpoint."""
CONNECT_TIMEOUT = 5.0
"""Seconds to reach a kubelet (the apiserver's dialer: 30 s; a local shard answers at once)."""
ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of a kubelet's error answer kept for the Status message."""


@dataclass(frozen=True)
class KubeletClientCert:
    """The sandbox's ``--kubelet-client-certificate``: a key pair and the CA that signed it."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    """Kubelets (the fleet's shards) verify clients against this."""

    @classmethod
    def generate(cls) -> KubeletClientCert:
        import trustme

        ca = trustme.CA(organization_name="kubemock-fleet sandbox kubelet-client CA")
        leaf = ca.issue_cert(
            "kube-apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organization_name="system:masters",
        )
        return cls(
            b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
            leaf.private_key_pem.bytes(),
            ca.cert_pem.bytes(),
        )

    def context(self) -> ssl.SSLContext:
        """TLS to a kubelet: this certificate, the kubelet's not verified (no CA given)."""
        return kubelet_client_context(self.cert_pem, self.key_pem)


def _bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def node_endpoint(node: dict[str, Any] | None, name: str) -> str:
    """``host:port`` of a node's kubelet."""
    if node is None:
        raise StatusError(
            404, "NotFound", f'nodes "{name}" not found', {"name": name, "kind": "nodes"}
        )
    status = node.get("status") or {}
    addresses = {
        a.get("type"): a.get("address")
        for a in reversed(status.get("addresses") or [])
        if isinstance(a, dict)
    }
    host = next((addresses[t] for t in PREFERRED_ADDRESS_TYPES if addresses.get(t)), None)
    if host is None:
        raise _bad_request(f"no preferred addresses found; known addresses: {[]}")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
    port = int(port) if int(port) > 0 else DEFAULT_KUBELET_PORT
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def log_location(
    pod: dict[str, Any], query: dict[str, str], lookup_node: Callable[[str], dict[str, Any] | None]
) -> str:
    """The kubelet URL of ``pods/log`` (the apiserver's ``LogLocation``)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    others = [
        c.get("name", "")
        for key in ("initContainers", "ephemeralContainers")
        for c in spec.get(key) or []
    ]
    container = query.get("container", "")
    if not container:
        if len(containers) == 1:
            container = containers[0]
        else:
            raise _bad_request(
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(containers)}]"
                + (f" or one of the init containers: [{' '.join(others)}]" if others else "")
            )
    elif container not in containers and container not in others:
        raise _bad_request(f"container {container} is not valid for pod {name}")
    node = spec.get("nodeName")
    if not node:
        raise _bad_request(f"pod {name} does not have a host assigned")
    params = [(k, query[k]) for k in LOG_OPTIONS if k in query]
    path = f"/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
    return f"https://{node_endpoint(lookup_node(node), node)}{path}" + (
        f"?{urlencode(params)}" if params else ""
    )


def node_location(node: dict[str, Any] | None, name: str, path: str, query_string: str) -> str:
    """The kubelet URL of ``nodes/{name}/proxy/{path}``."""
    rest = path.strip("/")
    if rest in NODE_PATHS:
        rest = f"nodes/{quote(name)}/{rest}"
    url = f"https://{node_endpoint(node, name)}/{rest}"
    return f"{url}?{query_string}" if query_string else url


@dataclass
class Proxied:
    """A request to forward to a kubelet; :meth:`respond` streams the answer to the client."""

    url: str
    cert: KubeletClientCert
    method: str = "GET"
    check: bool = False
    """Turn a non-2xx kubelet answer into a Status (``pods/log``); else pass it through."""
    resource: str = ""
    name: str = ""
    status: int = 0
    """The status sent (0 until the answer starts)."""

    async def respond(self, receive: Receive, send: Send) -> int:
        """Forward, stream the answer until it ends or the client leaves; the status sent."""
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT)
        async with (
            httpx.AsyncClient(verify=self.cert.context(), timeout=timeout) as client,
            trio.open_nursery() as nursery,
        ):

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_disconnect)
            try:
                self.status = await self._forward(client, send)
            finally:
                nursery.cancel_scope.cancel()
        return self.status

    async def _forward(self, client: httpx.AsyncClient, send: Send) -> int:
        try:
            async with client.stream(self.method, self.url) as answer:
                if self.check and not 200 <= answer.status_code <= 206:
                    body = b""
                    async for chunk in answer.aiter_raw():
                        body += chunk
                        if len(body) >= ERROR_BODY_LIMIT:
                            break
                    err = self._error(answer.status_code, body.decode("utf-8", "replace"))
                    await _send_status(send, err)
                    return err.code
                headers = [
                    (b"content-type", answer.headers.get("content-type", "text/plain").encode())
                ]
                self.status = answer.status_code  # a client leaving mid-stream ends it so
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status_code,
                        "headers": headers,
                    }
                )
                async for chunk in answer.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return answer.status_code
        except httpx.TransportError as exc:
            err = StatusError(
                500, "InternalError", f'Get "{self.url}": {exc or type(exc).__name__}'
            )
            await _send_status(send, err)
            return 500

    def _error(self, code: int, text: str) -> StatusError:
        if code == 400:
            return _bad_request(text)
        if code == 500:
            return StatusError(500, "InternalError", f"Internal error occurred: {text}")
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(code, "")
        return StatusError(
            code,
            reason or None,
            f"the server could not find the requested resource ( {self.resource} {self.name})"
            if code == 404
            else text,
            {
                "name": self.name,
                "kind": self.resource,
                "causes": [{"reason": "UnexpectedServerResponse", "message": text}],
            },
        )


async def _send_status(send: Send, err: StatusError) -> None:
    import json

    body = json.dumps(err.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": err.code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def proxy(url: str, cert: KubeletClientCert | None, **kw: Any) -> Proxied:
    if cert is None:
        raise StatusError(
            503,
            "ServiceUnavailable",
            "the sandbox has no kubelet client certificate (SandboxSettings.kubelet_client)",
        )
    return Proxied(url, cert, **kw)


# --- exec, attach, portforward: the upgraded connection, relayed -----------------------------

STREAM_SUBRESOURCES = {"exec": "exec", "attach": "attach", "portforward": "portForward"}
"""``pods/<sub>`` -> the kubelet's path segment."""
RELAY_BYTES = 64 * 1024
_DROPPED_HEADERS = frozenset({b"authorization", b"host", b"content-length"})


def stream_location(
    pod: dict[str, Any],
    sub: str,
    query: list[tuple[str, str]],
    lookup_node: Callable[[str], dict[str, Any] | None],
) -> tuple[str, str]:
    """``(host:port, path?query)`` of ``pods/{exec,attach,portforward}`` at the kubelet."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    path = f"/{STREAM_SUBRESOURCES[sub]}/{quote(namespace)}/{quote(name)}"
    if sub != "portforward":
        container = dict(query).get("container", "")
        containers = [c.get("name", "") for c in spec.get("containers") or []]
        others = [
            c.get("name", "")
            for key in ("initContainers", "ephemeralContainers")
            for c in spec.get(key) or []
        ]
        if not container:
            if len(containers) != 1:
                raise _bad_request(
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(containers)}]"
                )
            container = containers[0]
        elif container not in containers and container not in others:
            raise _bad_request(f"container {container} is not valid for pod {name}")
        path += f"/{quote(container)}"
    node = spec.get("nodeName")
    if not node:
        raise _bad_request(f"pod {name} does not have a host assigned")
    params = [(k, v) for k, v in query if k not in ("container", "ports")]
    # PodPortForwardOptions.ports becomes one ``port`` each at the kubelet (kube-apiserver's
    # PortForwardLocation); the kubelet's WebSocket port-forward reads only those
    params += [("port", p) for k, v in query if k == "ports" for p in v.split(",") if p]
    return node_endpoint(lookup_node(node), node), path + (
        f"?{urlencode(params)}" if params else ""
    )


async def write_status(stream: trio.abc.Stream, err: StatusError) -> None:
    """An error answer on a connection that was to be upgraded (then it closes)."""
    import json

    body = json.dumps(err.body()).encode()
    head = (
        f"HTTP/1.1 {err.code} {err.reason or ''}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def relay_upgrade(
    client: trio.abc.Stream,
    buffered: bytes,
    cert: KubeletClientCert,
    endpoint: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Send the upgrade request on to the kubelet and pipe both ways until either side ends
    (kube-apiserver's UpgradeAwareHandler: the 101, or the kubelet's refusal, goes back as is)."""
    host, _, port = endpoint.rpartition(":")
    context = cert.context()
    context.set_alpn_protocols(["http/1.1"])
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            kubelet = await trio.open_ssl_over_tcp_stream(
                host.strip("[]"), int(port), ssl_context=context
            )
            await kubelet.do_handshake()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        await write_status(
            client,
            StatusError(500, "InternalError", f"error dialing backend: {exc or 'timeout'}"),
        )
        return
    head = [f"GET {target} HTTP/1.1".encode(), b"Host: " + endpoint.encode()]
    head += [k + b": " + v for k, v in headers if k.lower() not in _DROPPED_HEADERS]
    try:
        async with trio.open_nursery() as nursery:

            async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
                try:
                    while data := await source.receive_some(RELAY_BYTES):
                        await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()

            await kubelet.send_all(b"\r\n".join(head) + b"\r\n\r\n" + buffered)
            nursery.start_soon(pipe, client, kubelet)
            nursery.start_soon(pipe, kubelet, client)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(kubelet)
