"""IP address management for fake nodes and their pods, in memory.

A real cluster's pods get their IPs from the CNI plugin out of the node's
``spec.podCIDR(s)``; fake nodes have no CNI, so the shard hands them out:

- :class:`PodIPPool`: one per node, over the node's pod CIDR(s), one address
  per family (dual stack: an IPv4 and an IPv6 CIDR give each pod one of each,
  primary family first). Allocation is O(1) amortised: a cursor walks the range
  once (so a released address is not reused at once, as host-local IPAM does),
  then released addresses are recycled first-in first-out. Network address,
  gateway (``.1``, the bridge's address in a real node) and IPv4 broadcast are
  never handed out. A restarted shard re-adopts the IPs its pods already
  report (:meth:`PodIPPool.adopt`), so nothing is handed out twice; an empty
  pool raises :class:`PoolExhausted` naming the node's range.
- :func:`node_pod_cidr`: the per-node range carved from a cluster range when
  the node has no podCIDR (``10.244.0.0/16``, node 3 -> ``10.244.3.0/24``).
- :class:`NodeAddressPool`: unique InternalIPs per node from a configurable
  range (``240.0.0.0/8`` by default, ``shard.nodeIpRange``; network and broadcast skipped), or the fixed address
  the CR gives (recorded so the pool never hands it to another node).
  Uniqueness holds within one pool: shards drawing from one range need
  disjoint sub-ranges (:func:`subrange`), and a shard starting on a cluster
  that has Nodes already reserves their addresses first
  (:meth:`NodeAddressPool.reserve`), so that no new node is given the address
  of a Node not yet adopted.

Errors are :mod:`fleet.errors` types: :class:`PoolExhausted` is a
ConfigError (the range is too small for the configuration), a malformed CIDR
or IP, or an address held by another owner, is an InputError.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from fleet.errors import ConfigError, InputError

__all__ = [
    "NodeAddressPool",
    "PodIPPool",
    "PoolExhausted",
    "PoolStatistics",
    "node_pod_cidr",
    "subrange",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PoolExhausted(ConfigError):
    """Every address of a range is in use."""


def _network(cidr: str, what: str) -> Network:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise InputError(f"{what} {cidr!r} is not a valid CIDR: {exc}") from exc


def _address(ip: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(ip.strip())
    except ValueError as exc:
        raise InputError(f"{what} {ip!r} is not a valid IP address") from exc


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    capacity: int
    """Addresses the range can hand out (per family: the smallest family's)."""
    in_use: int


class _Range:
    """One contiguous range of offsets with owners: the O(1) amortised allocator.

    One per node (its pod CIDR), so it holds ints only: no ``ipaddress`` network
    (with its cached addresses) and no free-list deque until an address is released
    (an empty deque is ~0.6 KiB, and most nodes never release one between restarts).
    """

    __slots__ = ("base", "cursor", "first", "free", "last", "owners", "prefixlen", "version")

    def __init__(self, network: Network, reserve_low: int, reserve_high: int) -> None:
        self.version = network.version
        self.prefixlen = network.prefixlen
        self.base = int(network.network_address)
        self.first = reserve_low
        self.last = network.num_addresses - 1 - reserve_high
        if self.last < self.first:
            raise InputError(f"range {network} is too small to hand out addresses")
        self.cursor = self.first
        self.free: deque[int] | None = None
        self.owners: dict[int, Hashable] = {}

    @property
    def capacity(self) -> int:
        return self.last - self.first + 1

    @property
    def cidr(self) -> str:
        return f"{self.text(0)}/{self.prefixlen}"

    def offset(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
        """The offset of an address inside the allocatable part of the range, else None."""
        if address.version != self.version:
            return None
        offset = int(address) - self.base
        return offset if self.first <= offset <= self.last else None

    def text(self, offset: int) -> str:
        # By version, not ipaddress.ip_address(int): that reads a low IPv6 address as IPv4.
        if self.version == 4:
            return str(ipaddress.IPv4Address(self.base + offset))
        return str(ipaddress.IPv6Address(self.base + offset))

    def take(self, owner: Hashable) -> int:
        owners = self.owners
        while self.cursor <= self.last:
            offset = self.cursor
            self.cursor += 1
            if offset not in owners:
                owners[offset] = owner
                return offset
        free = self.free
        while free:
            offset = free.popleft()
            if offset not in owners:
                owners[offset] = owner
                return offset
        raise PoolExhausted(f"no free address left in {self.cidr}: all {self.capacity} are in use")

    def mark(self, offset: int, owner: Hashable) -> None:
        holder = self.owners.get(offset)
        if holder is not None and holder != owner:
            raise InputError(f"address {self.text(offset)} is already held by {holder!r}")
        self.owners[offset] = owner

    def release(self, offset: int, owner: Hashable) -> None:
        if self.owners.get(offset) != owner:
            return
        del self.owners[offset]
        if offset < self.cursor:  # the cursor has not passed it yet otherwise: it will find it
            if self.free is None:
                self.free = deque()
            self.free.append(offset)


def _pod_range(network: Network) -> _Range:
    # .0 network, .1 gateway, and (IPv4) the broadcast address.
    return _Range(network, 2, 1 if network.version == 4 else 0)


_Held = int | tuple[str, ...]
"""What a pool keeps per key: the offset in its one range (the common case: the very int
object the range's ``owners`` holds, so nothing more per pod), else the addresses as text
(dual stack, or adopted IPs outside the range). Text is built when asked for."""


class PodIPPool:
    """Pod IPs of one node: one address per family from the node's pod CIDR(s)."""

    __slots__ = ("_by_key", "_ranges", "cidrs")

    def __init__(self, cidrs: Sequence[str]) -> None:
        if not cidrs or len(cidrs) > 2:
            raise InputError(f"pod CIDRs {list(cidrs)!r}: want one, or two of different families")
        networks = [_network(cidr, "pod CIDR") for cidr in cidrs]
        if len(networks) == 2 and networks[0].version == networks[1].version:
            raise InputError(
                f"pod CIDRs {list(cidrs)!r}: dual stack needs one IPv4 and one IPv6 range"
            )
        texts = tuple(str(network) for network in networks)
        # The node's spec holds these strings already: share its tuple when it is canonical.
        self.cidrs: tuple[str, ...] = (
            cidrs if isinstance(cidrs, tuple) and cidrs == texts else texts
        )
        self._ranges = tuple(_pod_range(network) for network in networks)
        self._by_key: dict[Hashable, _Held] = {}

    def _texts(self, held: _Held) -> tuple[str, ...]:
        if isinstance(held, int):
            return (self._ranges[0].text(held),)
        return held

    def allocate(self, key: Hashable) -> tuple[str, ...]:
        """The key's IPs, one per family (primary first); the same ones if it has them."""
        existing = self._by_key.get(key)
        if existing is not None:
            return self._texts(existing)
        taken: list[tuple[_Range, int]] = []
        try:
            for ip_range in self._ranges:
                taken.append((ip_range, ip_range.take(key)))
        except PoolExhausted:
            for ip_range, offset in taken:
                ip_range.release(offset, key)
            raise
        if len(taken) == 1:
            self._by_key[key] = taken[0][1]
            return (taken[0][0].text(taken[0][1]),)
        ips = tuple(ip_range.text(offset) for ip_range, offset in taken)
        self._by_key[key] = ips
        return ips

    def adopt(self, key: Hashable, ips: Iterable[str]) -> tuple[str, ...]:
        """Record IPs a pod already reports (shard restart) so they are not handed out again.

        IPs outside this node's ranges (an annotation's, a host-network pod's)
        are recorded for the key but reserve nothing. An IP held by another key
        is an InputError.
        """
        addresses = tuple(str(_address(ip, "pod IP")) for ip in ips)
        marks: list[tuple[_Range, int]] = []
        for address in addresses:
            parsed = ipaddress.ip_address(address)
            for ip_range in self._ranges:
                offset = ip_range.offset(parsed)
                if offset is not None:
                    ip_range.mark(offset, key)
                    marks.append((ip_range, offset))
        previous = self._by_key.get(key)
        if previous is not None and self._texts(previous) != addresses:
            self._release_held(key, previous, keep=marks)
        one = len(self._ranges) == 1 and len(addresses) == 1 and len(marks) == 1
        self._by_key[key] = marks[0][1] if one else addresses
        return addresses

    def release(self, key: Hashable) -> None:
        """Free the key's IPs (pod deleted). Unknown keys are ignored."""
        held = self._by_key.pop(key, None)
        if held is not None:
            self._release_held(key, held, keep=())

    def _release_held(self, key: Hashable, held: _Held, keep: Sequence[tuple[_Range, int]]) -> None:
        if isinstance(held, int):
            if (self._ranges[0], held) not in keep:
                self._ranges[0].release(held, key)
            return
        for ip in held:
            parsed = ipaddress.ip_address(ip)
            for ip_range in self._ranges:
                offset = ip_range.offset(parsed)
                if offset is not None and (ip_range, offset) not in keep:
                    ip_range.release(offset, key)

    def ips_of(self, key: Hashable) -> tuple[str, ...] | None:
        """The key's IPs (built afresh: the pool keeps offsets), or None."""
        held = self._by_key.get(key)
        return None if held is None else self._texts(held)

    def __len__(self) -> int:
        return len(self._by_key)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            capacity=min(ip_range.capacity for ip_range in self._ranges),
            in_use=max(len(ip_range.owners) for ip_range in self._ranges),
        )


def node_pod_cidr(cluster_cidr: str, index: int, prefix: int | None = None) -> str:
    """The ``index``-th per-node range of ``cluster_cidr`` (/24 for IPv4, /64 for IPv6 by default).

    ``node_pod_cidr("10.244.0.0/16", 3) == "10.244.3.0/24"``. An index past the
    end of the cluster range is a ConfigError.
    """
    network = _network(cluster_cidr, "cluster CIDR")
    size = prefix if prefix is not None else (24 if network.version == 4 else 64)
    if not network.prefixlen <= size <= network.max_prefixlen:
        raise ConfigError(f"per-node prefix /{size} does not fit in cluster CIDR {network}")
    count = 1 << (size - network.prefixlen)
    if not 0 <= index < count:
        raise PoolExhausted(
            f"node index {index} is outside cluster CIDR {network}: it holds {count} /{size} ranges"
        )
    base = int(network.network_address) + (index << (network.max_prefixlen - size))
    return f"{ipaddress.ip_address(base)}/{size}"


def subrange(cidr: str, index: int, count: int) -> str:
    """Split ``cidr`` into ``count`` (rounded up to a power of two) equal parts; the ``index``-th.

    For giving each of several shards a disjoint part of one node address range.
    """
    network = _network(cidr, "address range")
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"subrange {index} of {count} of {network} does not exist")
    bits = (count - 1).bit_length()
    if network.prefixlen + bits > network.max_prefixlen:
        raise ConfigError(f"{network} cannot be split into {count} parts")
    size = network.prefixlen + bits
    base = int(network.network_address) + (index << (network.max_prefixlen - size))
    return f"{ipaddress.ip_address(base)}/{size}"


class NodeAddressPool:
    """Unique node InternalIPs from one range, or fixed ones the CRs give."""

    def __init__(self, cidr: str = "240.0.0.0/8") -> None:
        network = _network(cidr, "node address range")
        # Skip the network address and, for IPv4, the broadcast address.
        self.cidr = str(network)
        self._range = _Range(network, 1, 1 if network.version == 4 else 0)
        self._by_node: dict[str, str] = {}
        self._holders: dict[str, str] = {}  # fixed addresses outside the range -> node

    def allocate(self, node: str) -> str:
        """The node's address: the one it has, else the next free one."""
        existing = self._by_node.get(node)
        if existing is not None:
            return existing
        ip = self._range.text(self._range.take(node))
        self._by_node[node] = ip
        return ip

    def assign(self, node: str, ip: str) -> str:
        """Record a fixed address (the CR's ``nodeConfig.address``, or one adopted from a Node).

        An address held by another node is an InputError; the node's previous
        address, if different, is released.
        """
        address = _address(ip, f"address of node {node!r}")
        text = str(address)
        offset = self._range.offset(address)
        if offset is not None:
            self._range.mark(offset, node)
        else:
            holder = self._holders.get(text)
            if holder is not None and holder != node:
                raise InputError(f"address {text} is already held by {holder!r}")
            self._holders[text] = node
        previous = self._by_node.get(node)
        if previous is not None and previous != text:
            self._release(node, previous)
        self._by_node[node] = text
        return text

    adopt = assign

    def reserve(self, node: str, ip: str) -> bool:
        """Keep ``ip`` (an existing Node's) from being allocated; True if it is now ``node``'s.

        For a shard's start: the Nodes already on the cluster hold their addresses
        before any new node is given one, whether or not their CRs are ever adopted
        here. A later :meth:`assign` of the same address to ``node`` (its adoption)
        takes it over; addresses outside the range, or held already, are left alone.
        """
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return False
        offset = self._range.offset(address)
        if offset is None or self._range.owners.get(offset, node) != node:
            return False
        self._range.owners[offset] = node
        return True

    def release(self, node: str) -> None:
        ip = self._by_node.pop(node, None)
        if ip is not None:
            self._release(node, ip)

    def _release(self, node: str, ip: str) -> None:
        address = ipaddress.ip_address(ip)
        offset = self._range.offset(address)
        if offset is not None:
            self._range.release(offset, node)
        elif self._holders.get(ip) == node:
            del self._holders[ip]

    def address_of(self, node: str) -> str | None:
        return self._by_node.get(node)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(capacity=self._range.capacity, in_use=len(self._range.owners))
