"""Pod and node address pools (shards._ipam)."""

from __future__ import annotations

import ipaddress

import pytest

from fleet.errors import ConfigError, InputError
from shards._ipam import NodeAddressPool, PodIPPool, PoolExhausted, node_pod_cidr, subrange


def test_sequential_allocation_skips_network_and_gateway() -> None:
    pool = PodIPPool(["10.244.3.0/24"])
    assert pool.allocate("a") == ("10.244.3.2",)
    assert pool.allocate("b") == ("10.244.3.3",)
    assert pool.allocate("a") == ("10.244.3.2",)  # idempotent per key
    assert pool.ips_of("b") == ("10.244.3.3",)
    assert pool.statistics().capacity == 253  # .2 - .254
    assert len(pool) == 2


def test_exhaustion_and_reuse_after_release() -> None:
    pool = PodIPPool(["10.244.3.0/29"])  # .2 - .6
    got = [pool.allocate(i)[0] for i in range(5)]
    assert got == [f"10.244.3.{n}" for n in range(2, 7)]
    with pytest.raises(PoolExhausted, match=r"10\.244\.3\.0/29: all 5 are in use"):
        pool.allocate("more")
    assert isinstance(PoolExhausted("x"), ConfigError)
    pool.release(1)
    pool.release(3)
    pool.release("unknown")  # ignored
    assert pool.allocate("x") == ("10.244.3.3",)  # first released first
    assert pool.allocate("y") == ("10.244.3.5",)
    assert pool.statistics().in_use == 5


def test_released_address_is_not_reused_at_once() -> None:
    pool = PodIPPool(["10.244.0.0/24"])
    pool.allocate("a")
    pool.release("a")
    assert pool.allocate("b") == ("10.244.0.3",)  # the cursor moves on, as host-local does


def test_dual_stack() -> None:
    pool = PodIPPool(["fd00:10:244:3::/64", "10.244.3.0/24"])
    assert pool.allocate("a") == ("fd00:10:244:3::2", "10.244.3.2")
    tiny = PodIPPool(["10.0.0.0/30", "fd00::/64"])  # one IPv4 address: .2
    assert tiny.allocate("a") == ("10.0.0.2", "fd00::2")
    with pytest.raises(PoolExhausted):
        tiny.allocate("b")
    assert tiny.statistics().in_use == 1  # nothing is held for b
    tiny.release("a")
    assert tiny.allocate("c") == ("10.0.0.2", "fd00::3")
    v6_first = PodIPPool(["fd00::/64", "10.0.0.0/30"])
    v6_first.allocate("a")
    with pytest.raises(PoolExhausted):
        v6_first.allocate("b")  # takes fd00::3, then finds no IPv4 left
    assert v6_first.statistics().in_use == 1  # fd00::3 was given back
    v6_first.release("a")
    assert v6_first.allocate("c") == ("fd00::4", "10.0.0.2")


def test_adopt_marks_used() -> None:
    pool = PodIPPool(["10.244.3.0/24"])
    assert pool.adopt("old", ["10.244.3.2"]) == ("10.244.3.2",)
    assert pool.adopt("old", ["10.244.3.2"]) == ("10.244.3.2",)  # idempotent
    assert pool.adopt("annotated", ["192.168.1.1"]) == ("192.168.1.1",)  # outside: recorded only
    pool.adopt("far", ["10.244.3.10"])
    allocated = [pool.allocate(i)[0] for i in range(9)]
    assert "10.244.3.2" not in allocated and "10.244.3.10" not in allocated
    assert allocated[:3] == ["10.244.3.3", "10.244.3.4", "10.244.3.5"]
    with pytest.raises(InputError, match=r"10\.244\.3\.2 is already held by 'old'"):
        pool.adopt("thief", ["10.244.3.2"])
    # an adopted address ahead of the cursor, released, is found by the cursor
    fresh = PodIPPool(["10.0.0.0/24"])
    fresh.adopt("p", ["10.0.0.3"])
    fresh.release("p")
    assert [fresh.allocate(i)[0] for i in range(3)] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    with pytest.raises(InputError, match="not a valid IP"):
        pool.adopt("bad", ["10.0.0.300"])


def test_whole_range_once_each() -> None:
    pool = PodIPPool(["10.8.0.0/16"])
    ips = [pool.allocate(i)[0] for i in range(65_533)]
    assert len(set(ips)) == 65_533
    assert ips[-1] == "10.8.255.254"
    with pytest.raises(PoolExhausted):
        pool.allocate("one-more")


@pytest.mark.parametrize(
    ("cidrs", "fragment"),
    [
        ([], "want one"),
        (["10.0.0.0/24", "10.1.0.0/24"], "one IPv4 and one IPv6"),
        (["10.0.0.1/24"], "not a valid CIDR"),
        (["bogus"], "not a valid CIDR"),
        (["10.0.0.0/31"], "too small"),
    ],
)
def test_bad_pod_cidrs(cidrs: list[str], fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        PodIPPool(cidrs)


def test_node_pod_cidr() -> None:
    assert node_pod_cidr("10.244.0.0/16", 0) == "10.244.0.0/24"
    assert node_pod_cidr("10.244.0.0/16", 3) == "10.244.3.0/24"
    assert node_pod_cidr("10.244.0.0/16", 255) == "10.244.255.0/24"
    assert node_pod_cidr("10.0.0.0/8", 300, prefix=26) == "10.0.75.0/26"
    assert node_pod_cidr("fd00:10:244::/56", 5) == "fd00:10:244:5::/64"
    with pytest.raises(PoolExhausted, match="holds 256 /24 ranges"):
        node_pod_cidr("10.244.0.0/16", 256)
    with pytest.raises(ConfigError, match="does not fit"):
        node_pod_cidr("10.244.0.0/16", 0, prefix=8)


def test_node_addresses() -> None:
    pool = NodeAddressPool("10.0.0.0/8")
    assert pool.allocate("n1") == "10.0.0.1"
    assert pool.assign("fixed", "10.0.0.2") == "10.0.0.2"  # the CR's address, in range
    assert pool.allocate("n2") == "10.0.0.3"
    assert pool.allocate("n1") == "10.0.0.1"
    assert pool.assign("outside", "192.168.0.9") == "192.168.0.9"
    with pytest.raises(InputError, match="already held by 'fixed'"):
        pool.assign("other", "10.0.0.2")
    with pytest.raises(InputError, match="already held by 'outside'"):
        pool.assign("other", "192.168.0.9")
    # a node's address moves: the old one is freed
    pool.assign("n2", "10.0.0.50")
    assert pool.address_of("n2") == "10.0.0.50"
    pool.release("n1")
    pool.release("outside")
    assert pool.assign("other", "192.168.0.9") == "192.168.0.9"
    assert pool.statistics().in_use == 2  # fixed and n2
    small = NodeAddressPool("10.0.0.0/30")
    assert [small.allocate("a"), small.allocate("b")] == ["10.0.0.1", "10.0.0.2"]
    with pytest.raises(PoolExhausted):
        small.allocate("c")
    with pytest.raises(InputError, match="not a valid IP"):
        small.assign("d", "nope")


def test_subrange() -> None:
    assert subrange("10.0.0.0/8", 0, 4) == "10.0.0.0/10"
    assert subrange("10.0.0.0/8", 1, 4) == "10.64.0.0/10"
    assert subrange("10.0.0.0/8", 2, 3) == "10.128.0.0/10"  # rounded up to 4 parts
    assert subrange("10.0.0.0/8", 0, 1) == "10.0.0.0/8"
    with pytest.raises(ConfigError):
        subrange("10.0.0.0/8", 4, 4)


def test_a_pool_keeps_offsets_and_builds_text_on_demand() -> None:
    pool = PodIPPool(("10.244.3.0/24",))
    assert pool._ranges[0].free is None  # no free list until an address is released
    ips = pool.allocate("a")
    held = pool._by_key["a"]
    assert isinstance(held, int) and pool._ranges[0].owners[held] == "a"
    assert pool.ips_of("a") == ips == ("10.244.3.2",)
    assert pool.allocate("a") == ips
    pool.release("a")
    assert pool.ips_of("a") is None and list(pool._ranges[0].free or ()) == [2]
    # adopted: in the range, an offset; outside it, the text
    assert pool.adopt("in", ["10.244.3.9"]) == ("10.244.3.9",)
    assert isinstance(pool._by_key["in"], int)
    assert pool.adopt("out", ["192.168.1.1"]) == ("192.168.1.1",)
    assert pool._by_key["out"] == ("192.168.1.1",)
    assert pool.adopt("in", ["10.244.3.10"]) == ("10.244.3.10",)  # moved: the old one is freed
    assert pool.allocate("next") == ("10.244.3.3",)
    assert pool.statistics().in_use == 2
    dual = PodIPPool(["10.0.0.0/24", "fd00::/64"])
    assert dual.allocate("d") == ("10.0.0.2", "fd00::2")
    assert dual.ips_of("d") == ("10.0.0.2", "fd00::2")
    dual.release("d")
    assert dual.statistics().in_use == 0


def test_a_pool_shares_the_cidr_tuple_it_was_given() -> None:
    cidrs = ("10.244.3.0/24",)
    assert PodIPPool(cidrs).cidrs is cidrs
    assert PodIPPool(["10.244.3.0/24"]).cidrs == cidrs
    assert PodIPPool((" 10.244.3.0/24",)).cidrs == cidrs  # not canonical: its own


def test_ipv6_ranges_low_in_the_space_stay_ipv6() -> None:
    pool = PodIPPool(["::/120"])
    assert pool.allocate("a") == ("::2",)
    tiny = PodIPPool(["::/126"])  # ::2 and ::3 (IPv6 has no broadcast address)
    assert [tiny.allocate(i)[0] for i in range(2)] == ["::2", "::3"]
    with pytest.raises(PoolExhausted, match=r"left in ::/126: all 2"):
        tiny.allocate(2)


# -- the default ranges ----------------------------------------------------------------------

WELL_KNOWN = {
    "Service ClusterIPs (kubeadm, kind)": "10.96.0.0/12",
    "pods (flannel, kubeadm docs, kind)": "10.244.0.0/16",
    "pods and nodes (10/8: Cilium, GKE, AKS, k3s)": "10.0.0.0/8",
    "RFC 1918 172.16/12 (docker, OpenShift services)": "172.16.0.0/12",
    "RFC 1918 192.168/16 (Calico pods)": "192.168.0.0/16",
    "CGNAT 100.64/10 (kops, EKS custom networking)": "100.64.0.0/10",
}


def test_default_ranges_keep_clear_of_well_known_ones_whatever_the_fleet_size() -> None:
    from fleet._settings import ShardSettings

    settings = ShardSettings()
    node_range, pod_range = settings.node_ip_range, settings.pod_cidr_range
    assert not node_range.overlaps(pod_range)
    for name, cidr in WELL_KNOWN.items():
        known = ipaddress.ip_network(cidr)
        assert not node_range.overlaps(known), name
        assert not pod_range.overlaps(known), name
    for shards in (1, 2, 3, 4, 8, 16, 64):
        for k in range(shards):
            first = NodeAddressPool(subrange(str(node_range), k, shards)).allocate("n")
            assert first != "10.96.0.1"  # the `kubernetes` Service: shard 1 of 2 once had it
            assert ipaddress.ip_address(first) in node_range
            cidr = node_pod_cidr(subrange(str(pod_range), k, shards), 0)
            assert ipaddress.ip_network(cidr).subnet_of(pod_range)  # type: ignore[arg-type]
    # The design point: 10,000 nodes a shard, for up to 16 shards, fit both ranges.
    assert node_range.num_addresses // 16 > 10_000
    assert 2 ** (settings.node_pod_cidr_prefix - pod_range.prefixlen) // 16 > 10_000
