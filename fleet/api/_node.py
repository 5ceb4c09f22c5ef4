"""The Node custom resource (``mock.zhizuqiu.cn/v1alpha1``, kind ``Node``, namespaced).

One CR per fake kubelet. The spec is kube-mock's, field for field (its Go json
tags, ``api/v1alpha1/node_types.go``), so its users' YAML parses unchanged;
the fleet adds what a scale tester needs under ``nodeConfig`` (ephemeral
storage, extended resources, allocatable, annotations, pod CIDRs, provider ID,
node info). kube-mock meant defaults of cpu 20, memory 100Gi, pods 200 but
turned an omitted value into 0: here an omitted value gets the default.

What every field means in a fleet, and what the pod-placement-only fields of
kube-mock do here (nothing: they are accepted and ignored), is written in
``docs/node-cr.md``. The status is the fleet's own (kube-mock's was empty).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fleet.machinery import LABEL_VALUE_MAX, label_value_errors, qualified_name_errors
from fleet.wire import API_VERSION, GROUP, VERSION

from ._quantity import Quantity, parse_quantity
from ._types import (
    CapacityQuantity,
    Condition,
    CRModel,
    GoDuration,
    IPAddress,
    LocalObjectReference,
    ObjectMeta,
    PreservedObject,
    QuantityValue,
    StringMap,
    Taint,
    Toleration,
    WholeQuantity,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "MockNode",
    "MockNodeSpec",
    "MockNodeStatus",
    "NodeConfig",
]


DEFAULT_CPU = "20"
DEFAULT_MEMORY = "100Gi"
DEFAULT_PODS = "200"
DEFAULT_EPHEMERAL_STORAGE = "100Gi"
DEFAULT_PORT = 10250

# Resource names the fleet reports on every node (core/v1 ResourceName).
_CORE_RESOURCES = ("cpu", "memory", "pods", "ephemeral-storage")
# A qualified name (apimachinery IsQualifiedName): DNS-subdomain prefix "/" name.
_QUALIFIED_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_KUBELET_VERSION = re.compile(r"^v[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$")

QuantityMap = dict[str, QuantityValue]


def _fail(reason: str) -> PydanticCustomError:
    return PydanticCustomError("invalid", "{reason}", {"reason": reason})


def _reportable(value: Quantity, *, milli: bool = False, typed: object = None) -> Quantity:
    """``value`` if a kubelet could report it: Go's int64 ``Value()`` (``MilliValue()`` for CPU).

    The apiserver stores ``1e400`` as typed, but a real kubelet's capacity is an
    int64 and every scheduler counts in int64: beyond that a node would report
    what no control plane can add up (ours once crashed on it).
    """
    if not value.fits_int64(milli=milli):
        limit = "2^63-1 thousandths" if milli else "2^63-1"
        raise _fail(
            f'invalid quantity "{value if typed is None else typed}": larger than a kubelet can report (at most {limit})'
        )
    return value


def _check_extended_resource_name(name: str) -> None:
    """apimachinery ``IsExtendedResourceName``: qualified, outside kubernetes.io, not ``requests.``."""
    if "kubernetes.io/" in name or not _QUALIFIED_NAME.match(name) or name.startswith("requests."):
        raise _fail(
            f'invalid extended resource name "{name}": want a domain-prefixed name outside '
            "kubernetes.io, e.g. nvidia.com/gpu"
        )
    if len(name.split("/", 1)[1]) > 63 or len(name.split("/", 1)[0]) > 253:
        raise _fail(f'invalid extended resource name "{name}": too long')


class NodeConfig(CRModel):
    """What the fake kubelet reports: capacity, identity, labels and taints."""

    # kube-mock's fields.
    cpu: CapacityQuantity = Field(
        default_factory=lambda: parse_quantity(DEFAULT_CPU),
        description="CPU capacity (quantity). Default 20.",
    )
    memory: CapacityQuantity = Field(
        default_factory=lambda: parse_quantity(DEFAULT_MEMORY),
        description="Memory capacity (quantity). Default 100Gi.",
    )
    pods: WholeQuantity = Field(
        default_factory=lambda: parse_quantity(DEFAULT_PODS),
        description="Pod capacity (whole number). Default 200.",
    )
    address: IPAddress | None = Field(
        default=None,
        description="InternalIP of the node. Default: a unique address from the shard's range.",
    )
    port: int = Field(
        default=DEFAULT_PORT,
        ge=1,
        le=65535,
        description="Kubelet port (daemonEndpoints). Default 10250.",
    )
    startup_timeout: GoDuration | None = Field(
        default=None, alias="startupTimeout", description="Accepted for kube-mock, ignored."
    )
    log_level: str | None = Field(
        default=None, alias="logLevel", description="Accepted for kube-mock, ignored."
    )
    klog_v: str | None = Field(
        default=None, alias="kLogV", description="Accepted for kube-mock, ignored."
    )
    labels: StringMap = Field(default_factory=dict, description="Labels of the registered Node.")
    taints: list[Taint] = Field(
        default_factory=list, description="Taints of the registered Node, kept in sync."
    )

    # The fleet's additions.
    ephemeral_storage: CapacityQuantity = Field(
        default_factory=lambda: parse_quantity(DEFAULT_EPHEMERAL_STORAGE),
        alias="ephemeralStorage",
        description="ephemeral-storage capacity (quantity). Default 100Gi.",
    )
    extended_resources: dict[str, WholeQuantity] = Field(
        default_factory=dict,
        alias="extendedResources",
        description="Extended resources by name, e.g. nvidia.com/gpu: 8 (whole numbers).",
    )
    allocatable: dict[str, CapacityQuantity] = Field(
        default_factory=dict,
        description="Allocatable per resource name where it differs from capacity (at most the capacity).",
    )
    annotations: StringMap = Field(
        default_factory=dict, description="Annotations of the registered Node."
    )
    pod_cidr: str | None = Field(
        default=None, alias="podCIDR", description="spec.podCIDR of the Node; pod IPs come from it."
    )
    pod_cidrs: list[str] = Field(
        default_factory=list,
        alias="podCIDRs",
        max_length=2,
        description="spec.podCIDRs (dual stack); the first equals podCIDR when both are set.",
    )
    provider_id: str | None = Field(
        default=None,
        alias="providerID",
        description="spec.providerID. Default: kubemock://<namespace>/<name>.",
    )
    kubelet_version: str | None = Field(
        default=None,
        alias="kubeletVersion",
        pattern=_KUBELET_VERSION.pattern,
        description="nodeInfo.kubeletVersion, e.g. v1.29.0. Default: the apiserver's version.",
    )
    os: str = Field(
        default="linux", description="kubernetes.io/os label and nodeInfo.operatingSystem."
    )
    arch: str = Field(
        default="amd64", description="kubernetes.io/arch label and nodeInfo.architecture."
    )
    container_runtime_version: str = Field(
        default="kubemock://0.1.0",
        alias="containerRuntimeVersion",
        description="nodeInfo.containerRuntimeVersion (<runtime>://<version>).",
    )
    os_image: str | None = Field(default=None, alias="osImage", description="nodeInfo.osImage.")
    kernel_version: str | None = Field(
        default=None, alias="kernelVersion", description="nodeInfo.kernelVersion."
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        """The apiserver would refuse the Node with these labels (422): say so here."""
        for key in sorted(value):
            if problems := qualified_name_errors(key):
                raise _fail(f'invalid label key "{key}": {problems[0]}')
            if problems := label_value_errors(value[key]):
                raise _fail(f'invalid label value "{value[key]}" of {key}: {problems[0]}')
        return value

    @field_validator("cpu", "memory", "ephemeral_storage", "pods", mode="wrap")
    @classmethod
    def _capacity_as_typed(
        cls, raw: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Quantity:
        # Wrapped, so that every message quotes the value as typed ("2.5", not "2500m").
        value: Quantity = handler(raw)
        if info.field_name == "pods":
            if value.value < 0 or not value.is_integer():
                raise _fail(f'"{raw}" is not a whole, non-negative number of pods')
        elif value.value < 0:
            raise _fail(f'invalid quantity "{raw}": must not be negative')
        return _reportable(value, milli=info.field_name == "cpu", typed=raw)

    @field_validator("extended_resources", mode="wrap")
    @classmethod
    def _extended(cls, raw: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, Quantity]:
        value: dict[str, Quantity] = handler(raw)
        for name, amount in value.items():
            _check_extended_resource_name(name)
            typed = raw[name] if isinstance(raw, dict) and name in raw else amount
            if amount.value < 0 or not amount.is_integer():
                raise _fail(
                    f'{name}: "{typed}" is not a whole, non-negative number (extended resources count devices)'
                )
            _reportable(amount, typed=typed)
        return value

    @field_validator("allocatable")
    @classmethod
    def _allocatable(cls, value: dict[str, Quantity], info: ValidationInfo) -> dict[str, Quantity]:
        capacity = _capacity_of(info.data)
        # A capacity field that failed its own validation is missing here: say nothing more of it.
        unchecked = {*_CORE_RESOURCES} - set(capacity)
        for name, amount in value.items():
            if name in unchecked or (
                "extended_resources" not in info.data and name not in _CORE_RESOURCES
            ):
                continue
            if name not in capacity:
                known = ", ".join(capacity)
                raise _fail(f'unknown resource "{name}": allocatable names one of {known}')
            if amount.value < 0:
                raise _fail(f'{name}: invalid quantity "{amount}": must not be negative')
            if amount > capacity[name]:
                raise _fail(f'{name}: "{amount}" exceeds the capacity "{capacity[name]}"')
        return value

    @field_validator("pod_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            _check_cidr(value)
        return value

    @field_validator("pod_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        families = set()
        for cidr in value:
            families.add(_check_cidr(cidr))
        if len(families) != len(value):
            raise _fail("podCIDRs holds at most one CIDR per IP family")
        first = info.data.get("pod_cidr")
        if value and first is not None and value[0] != first:
            raise _fail(f'podCIDRs[0] "{value[0]}" differs from podCIDR "{first}"')
        return value

    def capacity(self) -> dict[str, Quantity]:
        """The Node's ``status.capacity``: the core resources and every extended resource."""
        return _capacity_of(
            {
                "cpu": self.cpu,
                "memory": self.memory,
                "pods": self.pods,
                "ephemeral_storage": self.ephemeral_storage,
                "extended_resources": self.extended_resources,
            }
        )

    def allocatable_resources(self) -> dict[str, Quantity]:
        """The Node's ``status.allocatable``: capacity, with ``allocatable`` overrides applied."""
        return {**self.capacity(), **self.allocatable}

    def effective_pod_cidrs(self) -> list[str]:
        """``spec.podCIDRs`` as the Node should carry it (podCIDR first, when set)."""
        if self.pod_cidrs:
            return list(self.pod_cidrs)
        return [self.pod_cidr] if self.pod_cidr else []


def _check_cidr(value: str) -> int:
    try:
        return ipaddress.ip_network(value, strict=False).version
    except ValueError:
        raise _fail(f'invalid CIDR "{value}"') from None


def _capacity_of(data: dict[str, Any]) -> dict[str, Quantity]:
    out: dict[str, Quantity] = {}
    for name, key in zip(
        _CORE_RESOURCES, ("cpu", "memory", "pods", "ephemeral_storage"), strict=True
    ):
        if key in data:
            out[name] = data[key]
    out.update(data.get("extended_resources") or {})
    return out


class MockNodeSpec(CRModel):
    """NodeSpec of kube-mock. Pod-placement fields are accepted and ignored (docs/node-cr.md)."""

    suspend: bool = Field(
        default=False, description="Stop Lease and status renewal (the node goes NotReady)."
    )
    image: str | None = Field(default=None, description="Accepted for kube-mock, ignored.")
    image_pull_policy: str | None = Field(
        default=None, alias="imagePullPolicy", description="Accepted for kube-mock, ignored."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        alias="imagePullSecrets",
        description="Accepted for kube-mock, ignored.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Accepted for kube-mock, ignored."
    )
    node_selector: StringMap = Field(
        default_factory=dict, alias="nodeSelector", description="Accepted for kube-mock, ignored."
    )
    affinity: PreservedObject | None = Field(
        default=None, description="Accepted for kube-mock, ignored."
    )
    security_context: PreservedObject | None = Field(
        default=None, alias="securityContext", description="Accepted for kube-mock, ignored."
    )
    resources: PreservedObject | None = Field(
        default=None, description="Accepted for kube-mock, ignored."
    )
    kubeconfig_secret: str | None = Field(
        default=None, alias="kubeconfigSecret", description="Accepted for kube-mock, ignored."
    )
    apiserver_cert_secret: str | None = Field(
        default=None, alias="apiserverCertSecret", description="Accepted for kube-mock, ignored."
    )
    apiserver_key_secret: str | None = Field(
        default=None, alias="apiserverKeySecret", description="Accepted for kube-mock, ignored."
    )
    status_updates_interval: GoDuration | None = Field(
        default=None,
        alias="statusUpdatesInterval",
        description="Period of this node's status re-report. Default: the shard's (5m).",
    )
    node_config: NodeConfig = Field(
        default_factory=NodeConfig, alias="nodeConfig", description="What the fake kubelet reports."
    )

    @field_validator("status_updates_interval")
    @classmethod
    def _positive(cls, value: str | None) -> str | None:
        if value is not None and value.lstrip("+") == "0":
            raise _fail(f'invalid duration "{value}": must be positive')
        return value


class MockNodeStatus(CRModel):
    """What the shard driving the CR reports; written only on change."""

    shard: str | None = Field(default=None, description="Id of the shard driving this node.")
    node_name: str | None = Field(
        default=None, alias="nodeName", description="Name of the registered v1.Node."
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        ge=0,
        description="metadata.generation last acted on.",
    )
    conditions: list[Condition] = Field(default_factory=list, description="Registered and Ready.")

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if present."""
        return next((c for c in self.conditions if c.type == type_), None)


class MockNode(CRModel):
    """Node is a fake kubelet (kube-mock API)."""

    api_version: Literal["mock.zhizuqiu.cn/v1alpha1"] = Field(
        default="mock.zhizuqiu.cn/v1alpha1", alias="apiVersion"
    )
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: MockNodeSpec = Field(default_factory=MockNodeSpec)
    status: MockNodeStatus = Field(default_factory=MockNodeStatus)

    @model_validator(mode="after")
    def _hostname_label(self) -> MockNode:
        """The Node is labelled ``kubernetes.io/hostname=<name>``, as a kubelet labels its own:
        a name longer than a label value may be would get the Node refused (422) at
        registration, as a real kubelet's is; the CR is refused here instead, with the reason."""
        name = self.metadata.name
        if len(name) > LABEL_VALUE_MAX:
            raise _fail(
                f'metadata.name: "{name}" is {len(name)} characters long; a Node is labelled '
                f"kubernetes.io/hostname=<name>, and a label value holds at most "
                f"{LABEL_VALUE_MAX}"
            )
        return self
