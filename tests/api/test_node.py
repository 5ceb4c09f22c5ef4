"""The Node CR model: kube-mock's YAML unchanged, defaults, additions, precise errors."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fleet.api import MockNode, Quantity, load_node, parse_quantity
from fleet.errors import InputError

# The CR of kube-mock's README ("Getting Started"), verbatim (../shared/seed/kube-mock-README.md).
README_CR = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: Node
metadata:
  name: node-sample
  namespace: kube-mock-system
spec:
  suspend: false # 是否停止 kubelet
  image: "zhizuqiu/kube-mock:v1alpha1"
  kubeconfigSecret: "kube-mock-node" #  用于 kubelet 连接的 kubeconfig 文件
  nodeSelector:
    node-role.kubernetes.io/control-plane: ""
  tolerations:
    - key: node-role.kubernetes.io/control-plane
      operator: Exists
      effect: NoSchedule
  nodeConfig: # kubelet 配置
    cpu: '128'
    memory: '300Gi'
    pods: '50'
"""

# Every field of kube-mock's NodeSpec (api/v1alpha1/node_types.go), and its hack/cr labels.
FULL_KUBE_MOCK_CR: dict[str, Any] = {
    "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
    "kind": "Node",
    "metadata": {
        "name": "node-sample",
        "namespace": "kube-mock-system",
        "labels": {"app.kubernetes.io/name": "node", "app.kubernetes.io/part-of": "kube-mock"},
    },
    "spec": {
        "suspend": True,
        "image": "zhizuqiu/kube-mock:v1alpha1",
        "imagePullPolicy": "Always",
        "imagePullSecrets": [{"name": "regcred"}],
        "tolerations": [
            {
                "key": "k",
                "operator": "Equal",
                "value": "v",
                "effect": "NoExecute",
                "tolerationSeconds": 30,
            }
        ],
        "nodeSelector": {"disk": "ssd"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
            }
        },
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": True},
        "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "64Mi"}},
        "kubeconfigSecret": "kube-mock-node",
        "apiserverCertSecret": "cert",
        "apiserverKeySecret": "key",
        "statusUpdatesInterval": "1s",
        "nodeConfig": {
            "cpu": "128",
            "memory": "1000Gi",
            "pods": "500",
            "address": "192.168.1.1",
            "port": 10251,
            "startupTimeout": "10s",
            "logLevel": "debug",
            "kLogV": "2",
            "labels": {"zone": "a"},
            "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
        },
    },
}


def test_readme_cr_parses_unchanged() -> None:
    node = load_node(yaml.safe_load(README_CR))
    assert node.metadata.name == "node-sample"
    assert node.metadata.namespace == "kube-mock-system"
    assert node.spec.suspend is False
    assert node.spec.image == "zhizuqiu/kube-mock:v1alpha1"
    assert node.spec.kubeconfig_secret == "kube-mock-node"
    assert node.spec.node_selector == {"node-role.kubernetes.io/control-plane": ""}
    assert node.spec.tolerations[0].operator == "Exists"
    assert node.spec.tolerations[0].effect == "NoSchedule"
    config = node.spec.node_config
    assert config.cpu == parse_quantity(128)
    assert config.memory.value == 300 * 2**30
    assert config.pods.int_value() == 50
    # What was not written gets the fleet's defaults.
    assert config.ephemeral_storage == parse_quantity("100Gi")
    assert config.port == 10250
    assert config.os == "linux" and config.arch == "amd64"


def test_every_kube_mock_field_is_accepted() -> None:
    node = load_node(FULL_KUBE_MOCK_CR)
    spec = node.spec
    assert spec.image_pull_policy == "Always"
    assert spec.image_pull_secrets[0].name == "regcred"
    assert spec.tolerations[0].toleration_seconds == 30
    assert spec.affinity is not None and "nodeAffinity" in spec.affinity
    assert spec.security_context == {"runAsUser": 1000, "runAsNonRoot": True}
    assert spec.resources == {"limits": {"cpu": "1"}, "requests": {"memory": "64Mi"}}
    assert (spec.apiserver_cert_secret, spec.apiserver_key_secret) == ("cert", "key")
    assert spec.status_updates_interval == "1s"
    config = spec.node_config
    assert (config.address, config.port, config.startup_timeout) == ("192.168.1.1", 10251, "10s")
    assert (config.log_level, config.klog_v) == ("debug", "2")
    assert config.labels == {"zone": "a"}
    assert config.taints[0].key == "dedicated" and config.taints[0].effect == "NoSchedule"


def test_dump_uses_kube_mock_names_exactly() -> None:
    dumped = load_node(FULL_KUBE_MOCK_CR).model_dump(mode="json", exclude_defaults=True)
    assert dumped["spec"] == FULL_KUBE_MOCK_CR["spec"]
    assert dumped["metadata"] == FULL_KUBE_MOCK_CR["metadata"]
    assert load_node(dumped) == load_node(FULL_KUBE_MOCK_CR)


@pytest.mark.parametrize(
    "spec",
    [{}, {"nodeConfig": {}}, {"nodeConfig": None}, {"suspend": False}, None],
    ids=["no-spec-fields", "empty-nodeConfig", "null-nodeConfig", "no-nodeConfig", "null-spec"],
)
def test_omitted_values_get_the_defaults_not_zero(spec: dict[str, Any] | None) -> None:
    node = load_node({"kind": "Node", "metadata": {"name": "n"}, "spec": spec})
    config = node.spec.node_config
    assert str(config.cpu) == "20"
    assert str(config.memory) == "100Gi"
    assert str(config.pods) == "200"
    assert node.spec.suspend is False


def test_each_omitted_quantity_defaults_on_its_own() -> None:
    config = load_node(
        {"metadata": {"name": "n"}, "spec": {"nodeConfig": {"cpu": 4}}}
    ).spec.node_config
    assert (str(config.cpu), str(config.memory), str(config.pods)) == ("4", "100Gi", "200")


def test_quantities_are_int_or_string() -> None:
    raw = {
        "metadata": {"name": "n"},
        "spec": {"nodeConfig": {"cpu": 8, "memory": "16Gi", "pods": "110"}},
    }
    node = load_node(raw)
    assert node.spec.node_config.cpu == Quantity.from_int(8)
    dumped = node.model_dump(mode="json")["spec"]["nodeConfig"]
    assert (dumped["cpu"], dumped["memory"], dumped["pods"]) == ("8", "16Gi", "110")


def test_unknown_fields_are_ignored() -> None:
    raw = {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": "n", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"futureField": 1, "nodeConfig": {"somethingNew": "x", "cpu": "2"}},
        "status": {"phase": "Running", "pods": {}, "ready": True, "shard": "3"},
    }
    node = load_node(raw)
    assert str(node.spec.node_config.cpu) == "2"
    assert node.status.shard == "3"


def test_fleet_additions() -> None:
    raw = {
        "metadata": {"name": "gpu-1", "namespace": "fleet"},
        "spec": {
            "nodeConfig": {
                "cpu": "8",
                "ephemeralStorage": "500Gi",
                "extendedResources": {"nvidia.com/gpu": "8", "example.com/fpga": 2},
                "allocatable": {"cpu": "7910m", "memory": "90Gi", "nvidia.com/gpu": "7"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "podCIDR": "10.244.1.0/24",
                "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"],
                "providerID": "aws:///us-east-1a/i-0abc",
                "kubeletVersion": "v1.29.1-eks-5e0fdde",
                "os": "linux",
                "arch": "arm64",
                "containerRuntimeVersion": "containerd://1.7.11",
                "osImage": "Amazon Linux 2",
                "kernelVersion": "5.10.0",
            }
        },
    }
    config = load_node(raw).spec.node_config
    capacity = {name: str(q) for name, q in config.capacity().items()}
    assert capacity == {
        "cpu": "8",
        "memory": "100Gi",
        "pods": "200",
        "ephemeral-storage": "500Gi",
        "nvidia.com/gpu": "8",
        "example.com/fpga": "2",
    }
    allocatable = {name: str(q) for name, q in config.allocatable_resources().items()}
    assert allocatable == {**capacity, "cpu": "7910m", "memory": "90Gi", "nvidia.com/gpu": "7"}
    assert config.effective_pod_cidrs() == ["10.244.1.0/24", "fd00:1::/64"]
    assert config.provider_id == "aws:///us-east-1a/i-0abc"
    assert config.kubelet_version == "v1.29.1-eks-5e0fdde"


def test_status_model() -> None:
    raw = {
        "metadata": {"name": "n", "generation": 3},
        "status": {
            "shard": "2",
            "nodeName": "n",
            "observedGeneration": 3,
            "conditions": [
                {"type": "Registered", "status": "True", "reason": "Registered", "message": "",
                 "lastTransitionTime": "2024-05-01T10:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "Suspended", "message": "suspend: true"},
            ],
        },
    }  # fmt: skip
    status = load_node(raw).status
    assert (status.shard, status.node_name, status.observed_generation) == ("2", "n", 3)
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "False" and ready.reason == "Suspended"
    assert status.condition("Missing") is None
    dumped = status.model_dump(mode="json", exclude_none=True)
    assert dumped["conditions"][0]["lastTransitionTime"] == "2024-05-01T10:00:00Z"
    assert dumped["nodeName"] == "n"


def _bad(path: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    where = spec
    *parents, leaf = path.split(".")
    for part in parents:
        where = where.setdefault(part, {})
    where[leaf] = value
    return {
        "kind": "Node",
        "metadata": {"name": "node-sample", "namespace": "kube-mock-system"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("nodeConfig.cpu", "abc", 'spec.nodeConfig.cpu: invalid quantity "abc": want a number'),
        ("nodeConfig.memory", "100GB", 'spec.nodeConfig.memory: invalid quantity "100GB"'),
        (
            "nodeConfig.memory",
            1.5,
            "spec.nodeConfig.memory: invalid quantity 1.5: must be an integer or a string",
        ),
        (
            "nodeConfig.cpu",
            "-1",
            'spec.nodeConfig.cpu: invalid quantity "-1": must not be negative',
        ),
        (
            "nodeConfig.pods",
            "1.5",
            'spec.nodeConfig.pods: "1.5" is not a whole, non-negative number of pods',
        ),
        (
            "statusUpdatesInterval",
            "10",
            'spec.statusUpdatesInterval: invalid duration "10": missing unit',
        ),
        (
            "statusUpdatesInterval",
            "-1s",
            'spec.statusUpdatesInterval: invalid duration "-1s": must not be negative',
        ),
        (
            "statusUpdatesInterval",
            "0",
            'spec.statusUpdatesInterval: invalid duration "0": must be positive',
        ),
        (
            "nodeConfig.startupTimeout",
            "1d",
            'spec.nodeConfig.startupTimeout: invalid duration "1d": unknown unit "d"',
        ),
        (
            "nodeConfig.address",
            "10.0.0.300",
            "spec.nodeConfig.address: invalid IP address '10.0.0.300'",
        ),
        (
            "nodeConfig.port",
            70000,
            "spec.nodeConfig.port: Input should be less than or equal to 65535",
        ),
        (
            "nodeConfig.podCIDR",
            "10.0.0.0/33",
            'spec.nodeConfig.podCIDR: invalid CIDR "10.0.0.0/33"',
        ),
        (
            "nodeConfig.kubeletVersion",
            "1.29",
            "spec.nodeConfig.kubeletVersion: String should match pattern",
        ),
        (
            "nodeConfig.taints",
            [{"key": "a", "effect": "Sometimes"}],
            "spec.nodeConfig.taints[0].effect: Input should be",
        ),
        (
            "nodeConfig.taints",
            [{"effect": "NoSchedule"}],
            "spec.nodeConfig.taints[0].key: required",
        ),
        (
            "nodeConfig.extendedResources",
            {"gpu": "1"},
            'spec.nodeConfig.extendedResources: invalid extended resource name "gpu"',
        ),
        (
            "nodeConfig.extendedResources",
            {"kubernetes.io/gpu": "1"},
            'spec.nodeConfig.extendedResources: invalid extended resource name "kubernetes.io/gpu"',
        ),
        (
            "nodeConfig.extendedResources",
            {"nvidia.com/gpu": "abc"},
            'spec.nodeConfig.extendedResources["nvidia.com/gpu"]: invalid quantity "abc"',
        ),
        (
            "nodeConfig.allocatable",
            {"cpu": "21"},
            'spec.nodeConfig.allocatable: cpu: "21" exceeds the capacity "20"',
        ),
        (
            "nodeConfig.allocatable",
            {"nvidia.com/gpu": "1"},
            'spec.nodeConfig.allocatable: unknown resource "nvidia.com/gpu"',
        ),
        ("suspend", "maybe", "spec.suspend: Input should be a valid boolean"),
        # Beyond what a kubelet can report (an int64): the scheduler once crashed on these.
        (
            "nodeConfig.memory",
            "1e400",
            'spec.nodeConfig.memory: invalid quantity "1e400": larger than a kubelet can report',
        ),
        (
            "nodeConfig.cpu",
            "10E",
            'spec.nodeConfig.cpu: invalid quantity "10E": larger than a kubelet can report (at most 2^63-1 thousandths)',
        ),
        (
            "nodeConfig.pods",
            "1e19",
            'spec.nodeConfig.pods: invalid quantity "1e19": larger than a kubelet can report',
        ),
        (
            "nodeConfig.extendedResources",
            {"nvidia.com/gpu": "1e30"},
            'spec.nodeConfig.extendedResources: invalid quantity "1e30": larger than a kubelet can report',
        ),
    ],
)
def test_bad_fields_give_the_cr_and_the_path(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_node(_bad(path, value))
    assert str(info.value).startswith(f"Node kube-mock-system/node-sample: {message}")


def test_every_fault_is_reported_in_one_line() -> None:
    raw = _bad("nodeConfig.cpu", "abc")
    raw["spec"]["nodeConfig"]["memory"] = "xyz"
    with pytest.raises(InputError) as info:
        load_node(raw)
    message = str(info.value)
    assert "\n" not in message
    assert 'spec.nodeConfig.cpu: invalid quantity "abc"' in message
    assert 'spec.nodeConfig.memory: invalid quantity "xyz"' in message


def test_a_bad_capacity_does_not_also_blame_allocatable() -> None:
    raw = _bad("nodeConfig.cpu", "abc")
    raw["spec"]["nodeConfig"]["allocatable"] = {"cpu": "1"}
    with pytest.raises(InputError) as info:
        load_node(raw)
    assert "allocatable" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "Node: expected an object, got list"),
        ({"kind": "Node", "metadata": {}}, "Node <unnamed>: metadata.name"),
        ({"metadata": {"name": "x"}, "kind": "Pod"}, "Node x: kind: Input should be 'Node'"),
        (
            {"metadata": {"name": "x"}, "apiVersion": "v1"},
            "Node x: apiVersion: Input should be 'mock.zhizuqiu.cn/v1alpha1'",
        ),
    ],
)
def test_bad_objects(raw: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_node(raw)
    assert str(info.value).startswith(message)


def test_models_are_frozen() -> None:
    node = load_node(yaml.safe_load(README_CR))
    with pytest.raises(Exception, match="frozen"):
        node.spec.suspend = True
    assert MockNode.model_validate({"metadata": {"name": "n"}}).kind == "Node"
