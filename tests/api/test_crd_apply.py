"""Invalid Node CRs are refused at apply time by the CRD schema.

Against the sandbox, which validates custom resources by their CRD's schema as the
real apiserver does: what the schema can express never gets as far as a READY
False condition.
"""

from __future__ import annotations

from typing import Any

import pytest

from fleet.api import crd_manifests
from fleet.errors import Invalid
from fleet.kube import Client, load_config
from fleet.sandbox import RunningSandbox

NODES = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"


def _node(name: str, **config: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"nodeConfig": config},
    }


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"memory": "-1Gi"}, "spec.nodeConfig.memory"),
        ({"cpu": -2}, "spec.nodeConfig.cpu"),
        ({"pods": "2.5"}, "spec.nodeConfig.pods"),
        ({"pods": -3}, "spec.nodeConfig.pods"),
        ({"extendedResources": {"example.com/gpu": "1.5"}}, "spec.nodeConfig.extendedResources"),
        ({"allocatable": {"memory": "-1"}}, "spec.nodeConfig.allocatable"),
    ],
)
async def test_the_crd_refuses_what_its_schema_can_express(
    sandbox: RunningSandbox, config: dict[str, Any], field: str
) -> None:
    async with Client(load_config(sandbox.kubeconfig)) as client:
        for crd in crd_manifests():
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        with pytest.raises(Invalid) as refused:
            await client.create(NODES, _node("bad", **config))
        assert any(cause.get("field", "").startswith(field) for cause in refused.value.causes), (
            refused.value.causes
        )
        for good in ({"memory": "1Gi", "cpu": 2, "pods": 3}, {"pods": "1.5k", "cpu": "500m"}):
            await client.create(NODES, _node(f"good-{len(good)}-{good['cpu']}", **good))
