"""The kubelet API's listening socket: bound where the nodes are reached, no wider.

The API answers ``exec`` and logs to whoever holds a client certificate or token the
cluster vouches for; it has no business on interfaces no apiserver dials. So, unless
``shard.kubeletBind`` says otherwise:

- it binds the address the nodes advertise (``127.0.0.1`` under ``run``/``up``, the pod's
  IP in a cluster);
- with an address per node (``_addresses``: ``127.(K+1).x.y``, every node of the shard on
  one listener) it binds the wildcard on the loopback device alone (``SO_BINDTODEVICE
  lo``): every loopback address answers, the machine's other addresses refuse the
  connection. It bound the bare wildcard before, open on every interface, and closed
  what did not come in on loopback only after accepting it.

``shard.kubeletBind: 0.0.0.0`` opens it on every interface: deploy/ sets it, so that the
pod's port answers on whatever address reaches the pod (``kubectl port-forward`` dials the
pod's loopback). A port that cannot be bound is one :class:`~fleet.errors.ConfigError`
naming it (as ``/metrics``'s, ``fleet._metrics``).
"""

from __future__ import annotations

import errno
import socket

import trio

from fleet.errors import ConfigError

__all__ = ["LOOPBACK_DEVICE", "open_listeners"]

LOOPBACK_DEVICE = b"lo"
"""Linux's loopback interface, where every 127.0.0.0/8 address lives."""
BACKLOG = socket.SOMAXCONN
"""Connections the kernel queues before the listener accepts them (trio's default too)."""


async def open_listeners(
    host: str, port: int, *, loopback_device: bool
) -> list[trio.SocketListener]:
    """Listeners on ``host:port`` (``loopback_device``: the wildcard, loopback alone)."""
    where = "every loopback address" if loopback_device else host
    try:
        if not loopback_device:
            return await trio.open_tcp_listeners(port, host=host, backlog=BACKLOG)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, LOOPBACK_DEVICE)
            await sock.bind(("0.0.0.0", port))
            sock.listen(BACKLOG)
        except BaseException:
            sock.close()
            raise
        return [trio.SocketListener(sock)]
    except OSError as exc:
        hint = (
            " (another fleet on this host? pick another shard.kubeletPort, or 0)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(
            f"cannot serve the kubelet API on {where}, port {port}: {exc.strerror or exc}{hint}"
        ) from exc
