"""A TCP proxy on loopback in front of an apiserver, which a test tells to misbehave.

The fleet's processes are handed a kubeconfig naming the proxy
(:meth:`FaultProxy.kubeconfig`); TLS passes through untouched (the apiserver's
certificate names ``127.0.0.1`` whatever the port), so the same proxy stands
in front of the sandbox and of a real kube-apiserver. What it can do:

- :meth:`FaultProxy.cut`: close every open connection at once (both ends): every
  watch, every pooled keep-alive connection, requests in flight;
- :meth:`FaultProxy.pause` / :meth:`FaultProxy.resume`: forward no byte either way and
  hold new connections (accepted, as a stopped process's kernel still accepts
  them), which is what the clients of an apiserver under ``SIGSTOP`` see;
- :meth:`FaultProxy.down` / :meth:`FaultProxy.up`: every connection cut and new ones
  closed at once until ``up``: what the clients of a restarting apiserver see
  (its state kept, as etcd keeps a real one's).

Answers inside the TLS stream (429, 410) are not the proxy's to forge; on the
sandbox :class:`bench.Storm` wraps the app's handler instead. The fault suite
(``bench._faults``: the ``faults`` scenario and ``tests/fleet/test_faults.py``)
puts the fleet behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import yaml

BUFFER = 65536


class FaultProxy:
    """``run`` it in a nursery: ``await nursery.start(proxy.run)``; then ``port`` is bound."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self.cuts = 0
        """Connections closed by :meth:`cut`."""
        self._open: set[trio.CancelScope] = set()
        self._flowing = trio.Event()
        self._flowing.set()
        self._down = False

    @classmethod
    def before(cls, url: str) -> FaultProxy:
        """A proxy for the apiserver at ``https://host:port``."""
        host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        return cls(host, int(port))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._serve, listeners)
            task_status.started()

    def kubeconfig(self, source: Path, dest: Path) -> Path:
        """``source`` with every cluster's server pointed at the proxy."""
        config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
        for cluster in config.get("clusters") or []:
            scheme = str(cluster["cluster"]["server"]).partition("://")[0]
            cluster["cluster"]["server"] = f"{scheme}://127.0.0.1:{self.port}"
        dest.write_text(yaml.safe_dump(config), encoding="utf-8")
        dest.chmod(0o600)
        return dest

    def cut(self) -> int:
        """Close every open connection; returns how many."""
        n = len(self._open)
        for scope in list(self._open):
            scope.cancel()
        self.cuts += n
        return n

    def pause(self) -> None:
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    def down(self) -> int:
        """Refuse connections until :meth:`up`; returns how many open ones were cut."""
        self._down = True
        return self.cut()

    def up(self) -> None:
        self._down = False

    async def _serve(self, client: trio.SocketStream) -> None:
        self.connections += 1
        if self._down:
            await trio.aclose_forcefully(client)
            return
        with trio.CancelScope() as scope:
            self._open.add(scope)
            try:
                await self._flowing.wait()
                upstream = await trio.open_tcp_stream(*self.upstream)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
                finally:
                    await trio.aclose_forcefully(upstream)
            except OSError:
                pass  # the apiserver is down or a peer reset: the client sees a closed connection
            finally:
                self._open.discard(scope)
        await trio.aclose_forcefully(client)

    async def _pump(
        self, source: trio.SocketStream, dest: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        try:
            while data := await source.receive_some(BUFFER):
                if not self._flowing.is_set():
                    await self._flowing.wait()
                await dest.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()  # one side closed: close the other
