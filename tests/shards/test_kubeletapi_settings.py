"""``kubelet_api_settings``: which address and port a shard's kubelet API takes."""

from __future__ import annotations

import pytest

from fleet._settings import ShardSettings
from fleet.errors import ConfigError
from shards import kubelet_api_settings


def test_off_unless_asked() -> None:
    assert kubelet_api_settings(ShardSettings(), offset=3, environ={}) is None


def test_shards_sharing_an_address_take_a_port_each() -> None:
    shard = ShardSettings(kubelet_api=True, kubelet_address="127.0.0.1")
    got = kubelet_api_settings(shard, offset=3, environ={"POD_IP": "10.1.2.3"})
    assert got is not None
    assert (got.advertise_address, got.port) == ("127.0.0.1", 10253)
    free = ShardSettings(kubelet_api=True, kubelet_address="127.0.0.1", kubelet_port=0)
    chosen = kubelet_api_settings(free, offset=3, environ={})
    assert chosen is not None and chosen.port == 0


def test_a_pod_advertises_its_own_ip_on_the_kubelet_port() -> None:
    # deploy/: every shard pod has its own address, so shard 3 listens on 10250 too.
    got = kubelet_api_settings(
        ShardSettings(kubelet_api=True), offset=3, environ={"POD_IP": "10.1.2.3"}
    )
    assert got is not None
    assert (got.advertise_address, got.host, got.port) == ("10.1.2.3", "", 10250)  # bound there
    with pytest.raises(ConfigError, match=r"no \$POD_IP"):
        kubelet_api_settings(ShardSettings(kubelet_api=True), offset=3, environ={})


def test_an_address_per_node_under_run_and_up() -> None:
    shard = ShardSettings(kubelet_api=True, kubelet_address="127.0.0.1", kubelet_port=0)
    per_node = shard.model_copy(update={"kubelet_address_per_node": True})
    got = kubelet_api_settings(per_node, offset=2, environ={})
    assert got is not None
    # shard 2's network; the one listener on every loopback address (the default bind)
    assert (got.node_network, got.host) == ("127.3.0.0/16", "")
    plain = kubelet_api_settings(shard, offset=2, environ={})
    assert plain is not None and (plain.node_network, plain.host) == ("", "")
    opened = per_node.model_copy(update={"kubelet_bind": "0.0.0.0"})
    wide = kubelet_api_settings(opened, offset=2, environ={})
    assert wide is not None and wide.host == "0.0.0.0"
    with pytest.raises(ConfigError, match="every loopback address"):
        kubelet_api_settings(
            per_node.model_copy(update={"kubelet_bind": "127.0.0.1"}), offset=2, environ={}
        )
    with pytest.raises(ConfigError, match="shards 0-253"):
        kubelet_api_settings(per_node, offset=254, environ={})
