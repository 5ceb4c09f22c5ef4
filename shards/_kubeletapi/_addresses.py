"""Each node its own loopback address on the shard's one kubelet API listener.

kube-apiserver proxies ``nodes/<n>/proxy/<path>`` to ``https://<InternalIP>:<port>/<path>``:
the node's name is not in the request, so when every node of a shard advertises the same
address and port, ``/stats/summary`` cannot tell which node is meant. Under ``run`` and
``up`` (everything on one machine) each node gets an address of its own from a loopback
network instead (Linux routes all of 127.0.0.0/8 to ``lo``, no configuration needed), and
the one listener, bound to the wildcard address, learns the node from the address a
connection was made to (``getsockname``). So unprefixed node paths answer for their node,
and a metrics-server scrapes ``/metrics/resource`` per node as on a real cluster.

Measured at 1,000 nodes (``trio.serve_tcp``, Python 3.11): a listener per node (a port
each) costs 1,000 file descriptors, about 10 MiB of RSS and 1,000 ports taken from the
ephemeral range; an address per node on one listener costs one descriptor and about
0.3 MiB (this module's two dicts). The price of the latter: the listener binds the
wildcard, on the loopback device alone (``_listener``), which is Linux's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from fleet.errors import ConfigError

__all__ = ["NodeAddresses", "shard_node_network"]

FIRST_OCTET = 127
SHARD_NETWORK_PREFIX = 16
"""Shard K's nodes take 127.(K+1).0.0/16: 65,534 addresses a shard, for up to 254 shards
on one machine (127.0.0.0/16, with 127.0.0.1, is left alone)."""


def shard_node_network(shard: int) -> ipaddress.IPv4Network:
    """The loopback network shard ``shard``'s nodes take their addresses from."""
    if not 0 <= shard < 254:
        raise ConfigError(
            f"shard.kubeletAddressPerNode: shard {shard}: only shards 0-253 have a loopback "
            "network of their own (127.1.0.0/16 ... 127.254.0.0/16)"
        )
    return ipaddress.IPv4Network(f"{FIRST_OCTET}.{shard + 1}.0.0/{SHARD_NETWORK_PREFIX}")


class NodeAddresses:
    """Node name ↔ address, handed out in order from ``network`` as nodes appear (kept for
    the life of the process: a node that comes back gets its address again)."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        if not network.is_loopback:
            raise ConfigError(f"kubelet API: node addresses must be loopback, not {network}")
        self.network = network
        self._free: Iterator[ipaddress.IPv4Address] = network.hosts()
        self._by_node: dict[str, str] = {}
        self._by_address: dict[str, str] = {}

    def address_of(self, node: str) -> str | None:
        """``node``'s address (a new one the first time); None once the network is used up."""
        found = self._by_node.get(node)
        if found is None:
            address = next(self._free, None)
            if address is None:
                return None
            found = str(address)
            self._by_node[node] = found
            self._by_address[found] = node
        return found

    def node_at(self, address: str) -> str | None:
        """The node that owns ``address``, if any."""
        return self._by_address.get(address)

    def accepts(self, address: str) -> bool:
        """Whether a connection made to ``address`` may be served (it came in on loopback)."""
        try:
            return ipaddress.ip_address(address).is_loopback
        except ValueError:
            return False
