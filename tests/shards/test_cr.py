"""Node CR -> KubeletSpec (shards._cr): what equal nodes share."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.api import load_node
from shards import _cr
from shards._cr import kubelet_spec
from shards._nodeobj import KubeletSpec


def cr(name: str, **node_config: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeConfig": node_config},
    }


def spec_of(name: str, **node_config: Any) -> KubeletSpec:
    return kubelet_spec(
        load_node(cr(name, **node_config)),
        key=f"default/{name}",
        internal_ips=("10.0.0.1",),
        pod_cidrs=(),
    )


def test_equal_capacity_and_labels_are_one_read_only_mapping() -> None:
    a = spec_of("a", cpu="8", labels={"zone": "a"}, allocatable={"cpu": "7"})
    b = spec_of("b", cpu="8", labels={"zone": "a"}, allocatable={"cpu": "7"})
    c = spec_of("c", cpu="4", labels={"zone": "a"})
    assert a.capacity is b.capacity and a.labels is b.labels and a.allocatable is b.allocatable
    assert c.capacity is not a.capacity and c.labels is a.labels
    assert dict(a.capacity)["cpu"] == "8" and dict(c.capacity)["cpu"] == "4"
    assert a.annotations is not b.annotations  # each names its own CR
    with pytest.raises(TypeError):
        a.labels["zone"] = "b"  # type: ignore[index]
    assert spec_of("d").labels == {}


def test_the_shared_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cr, "SHARED_MAPPINGS", 3)
    monkeypatch.setattr(_cr, "_shared", {})
    specs = [spec_of(f"n{i}", labels={"i": str(i)}) for i in range(10)]
    assert len(_cr._shared) <= 3
    assert [dict(s.labels) for s in specs] == [{"i": str(i)} for i in range(10)]
