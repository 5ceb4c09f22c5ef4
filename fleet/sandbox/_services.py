"""Services' allocated fields: cluster IPs from the service range, node ports, IP families.

What the real apiserver's service REST storage does on create and update
(``pkg/registry/core/service/storage``, its IP and port allocators):

- ``clusterIP`` (and ``clusterIPs``) from the service range — ``10.96.0.0/16``
  by default, kind's — with the ``kubernetes`` Service of ``default`` at the
  range's first address (``.1``); dynamic addresses come from the upper part
  of the range, as since 1.25 (``ServiceIPStaticSubrange``); a requested one
  must be in the range and free, with the real messages; ``None`` makes a
  headless Service; ExternalName Services get none;
- ``ipFamilies: [IPv4]``, ``ipFamilyPolicy: SingleStack``,
  ``internalTrafficPolicy: Cluster``; for NodePort and LoadBalancer a
  ``nodePort`` per port from 30000-32767 and ``externalTrafficPolicy:
  Cluster``, ``allocateLoadBalancerNodePorts: true`` for LoadBalancer;
- an update that leaves the allocated fields out keeps them
  (``patchAllocatedValues``), one that changes the cluster IP is refused
  ("may not change once set").

Addresses are free again once their Service is gone: the allocator looks at
the stored Services, so a restart from ``--data`` keeps every allocation.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any, NoReturn

from fleet.sandbox._status import cause, invalid
from fleet.sandbox._store import Store

__all__ = ["DEFAULT_SERVICE_CIDR", "NODE_PORT_RANGE", "ServiceAllocator"]

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
"""kind's service range (kube-apiserver's own default, 10.0.0.0/24, is small for tests)."""
NODE_PORT_RANGE = (30000, 32767)
"""``--service-node-port-range``'s default."""
_KEY = ("", "services")

Obj = dict[str, Any]


class ServiceAllocator:
    """Fills and keeps the allocated fields of Services in one store."""

    def __init__(self, store: Store, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self._store = store
        self.network = ipaddress.IPv4Network(cidr)
        self._rng = random.Random()

    @property
    def first(self) -> str:
        """The ``kubernetes`` Service's address: the range's first usable one."""
        return str(self.network.network_address + 1)

    def _used_ips(self) -> set[str]:
        used: set[str] = set()
        for svc in self._store.collection(_KEY).objects.values():
            used.update(str(ip) for ip in (svc.get("spec") or {}).get("clusterIPs") or ())
        return used

    def _used_ports(self) -> set[int]:
        used: set[int] = set()
        for svc in self._store.collection(_KEY).objects.values():
            for port in (svc.get("spec") or {}).get("ports") or ():
                if isinstance(port, dict) and isinstance(port.get("nodePort"), int):
                    used.add(port["nodePort"])
        return used

    def _allocate_ip(self, name: str, requested: str | None) -> str:
        used = self._used_ips()
        if requested:
            try:
                ip = ipaddress.IPv4Address(requested)
            except ValueError:
                self._refuse(
                    name, "spec.clusterIPs", [requested],
                    f"failed to allocate IP {requested}: must be a valid IP address",
                )  # fmt: skip
            if ip not in self.network or ip in (
                self.network.network_address,
                self.network.broadcast_address,
            ):
                self._refuse(
                    name, "spec.clusterIPs", [requested],
                    f"failed to allocate IP {requested}: the provided IP ({requested}) is not in "
                    f"the valid range. The range of valid IPs is {self.network}",
                )  # fmt: skip
            if requested in used:
                self._refuse(
                    name, "spec.clusterIPs", [requested],
                    f"failed to allocate IP {requested}: provided IP is already allocated",
                )  # fmt: skip
            return requested
        size = self.network.num_addresses
        # The lower sixteenth (at least 16, at most 256 addresses) is kept for static choices.
        static = max(16, min(256, size // 16))
        low, high = static, size - 2
        for _ in range(64):
            candidate = str(self.network.network_address + self._rng.randint(low, high))
            if candidate not in used:
                return candidate
        for offset in range(1, size - 1):
            candidate = str(self.network.network_address + offset)
            if candidate not in used:
                return candidate
        self._refuse(name, "spec.clusterIPs", [], "range is full")

    def _allocate_node_port(self, used: set[int]) -> int:
        lo, hi = NODE_PORT_RANGE
        for _ in range(64):
            port = self._rng.randint(lo, hi)
            if port not in used:
                return port
        for port in range(lo, hi + 1):
            if port not in used:
                return port
        raise invalid(
            "Service", "", "", [cause("FieldValueInvalid", "spec.ports", "range is full")]
        )

    @staticmethod
    def _refuse(name: str, field: str, value: list[str], detail: str) -> NoReturn:
        shown = "[]string{" + ", ".join(f'"{v}"' for v in value) + "}"
        raise invalid(
            "Service",
            "",
            name,
            [cause("FieldValueInvalid", field, f"Invalid value: {shown}: {detail}")],
        )

    def prepare(self, old: Obj | None, new: Obj) -> None:
        """Fill (create) or keep (update) the allocated fields of ``new`` in place."""
        spec = new.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        name = (new.get("metadata") or {}).get("name", "")
        svc_type = spec.get("type") or "ClusterIP"
        if old is not None:
            self._keep(old, new)
        if svc_type == "ExternalName":
            return
        if old is None or not spec.get("clusterIPs"):
            requested = spec.get("clusterIP") or None
            if not requested and spec.get("clusterIPs"):
                requested = spec["clusterIPs"][0]
            if requested == "None":
                ip = "None"
            else:
                ip = self._allocate_ip(name, requested)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if svc_type in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            if svc_type == "LoadBalancer":
                spec.setdefault("allocateLoadBalancerNodePorts", True)
            used = self._used_ports()
            if old is not None:
                used -= {p.get("nodePort") for p in (old.get("spec") or {}).get("ports") or ()}
            for port in spec.get("ports") or ():
                if isinstance(port, dict) and not port.get("nodePort"):
                    port["nodePort"] = self._allocate_node_port(used)
                    used.add(port["nodePort"])

    def _keep(self, old: Obj, new: Obj) -> None:
        """``patchAllocatedValues`` and the cluster IP's immutability."""
        ospec, spec = old.get("spec") or {}, new["spec"]
        if (ospec.get("type") or "ClusterIP") == "ExternalName" or spec.get(
            "type"
        ) == "ExternalName":
            return
        old_ips = ospec.get("clusterIPs") or []
        if not spec.get("clusterIP") and not spec.get("clusterIPs"):
            if ospec.get("clusterIP"):
                spec["clusterIP"] = ospec["clusterIP"]
            if old_ips:
                spec["clusterIPs"] = list(old_ips)
        elif spec.get("clusterIP") and (
            not spec.get("clusterIPs") or spec.get("clusterIPs") == old_ips
        ):
            # normalizeClusterIPs: a changed clusterIP is the first of clusterIPs
            spec["clusterIPs"] = [spec["clusterIP"], *list(spec.get("clusterIPs") or [])[1:]]
        if old_ips and spec.get("clusterIPs") and spec["clusterIPs"][0] != old_ips[0]:
            self._refuse(
                (new.get("metadata") or {}).get("name", ""), "spec.clusterIPs[0]",
                list(spec["clusterIPs"]), "may not change once set",
            )  # fmt: skip
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if key not in spec and key in ospec:
                spec[key] = ospec[key]
        old_ports = {
            (p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
            for p in ospec.get("ports") or ()
            if isinstance(p, dict)
        }
        for port in spec.get("ports") or ():
            if isinstance(port, dict) and not port.get("nodePort"):
                kept = old_ports.get((port.get("port"), port.get("protocol") or "TCP"))
                if kept:
                    port["nodePort"] = kept
