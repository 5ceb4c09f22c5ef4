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
    assert (got.advertise_address, got.host, got.port) == ("10.1.2.3", "0.0.0.0", 10250)
    with pytest.raises(ConfigError, match=r"no \$POD_IP"):
        kubelet_api_settings(ShardSettings(kubelet_api=True), offset=3, environ={})
