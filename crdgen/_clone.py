"""``crdgen clone``: Node CRs that make the fleet reproduce a real cluster's nodes.

Replaces kube-mock's ``mock`` command and keeps its flags (``-f/--from-kubeconfig``,
``-l/--selector``, ``--field-selector``, ``--disable-filter-master``, ``-o``).
Three steps, each its own function so the mapping is testable without a cluster:

1. :func:`fetch_nodes` lists ``v1.Node``s through the fleet's general client
   (:class:`fleet.kube._client.Client`, paged, with label and field selectors).
2. :func:`clone_nodes` drops control-plane nodes unless asked, and maps each
   remaining node to ``copies`` Node CRs with :func:`clone_node` (no I/O):
   capacity and allocatable (core resources and extended resources such as
   ``nvidia.com/gpu``; hugepages and other non-extended names skipped), labels
   (values naming the node rewritten to the copy's name, so copies do not
   collide), taints (less the node-lifecycle ones the control plane adds and
   removes by itself), node info, and the provider ID's scheme with a fake id.
   Every CR is validated against :class:`fleet.api.MockNode` before anything is
   written, so the output applies with ``kubectl apply -f`` as is.
3. :func:`render` writes multi-document YAML or a ``v1 List``; the command hands
   it to :func:`crdgen._output.write_output` (atomic: nothing half-written).

kube-mock's ``mock`` filtered masters by a label test that also matched any
label named ``node``, so such workers vanished from its output; here a node is
control-plane only by the exact role labels or taints in
:data:`CONTROL_PLANE_LABELS` / :data:`CONTROL_PLANE_TAINTS`.

Layer 4 (beside the coordinator and shards): imports ``fleet.api``,
``fleet.kube``, ``fleet.wire`` and ``fleet.errors``. :func:`clone_command` is the typer
command; ``crdgen.cli`` registers it on its app.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import trio
import typer
import yaml

from fleet.api import API_VERSION, load_node, parse_quantity
from fleet.errors import ConfigError, FleetError, InputError
from fleet.kube import Client, load_config
from fleet.wire import FLEET_NAMESPACE

from ._output import write_output

__all__ = [
    "CLONED_FROM_ANNOTATION",
    "CONTROL_PLANE_LABELS",
    "CONTROL_PLANE_TAINTS",
    "DEFAULT_NAMESPACE",
    "LIFECYCLE_TAINTS",
    "CloneOptions",
    "OutputFormat",
    "clone_command",
    "clone_node",
    "clone_nodes",
    "fake_provider_id",
    "fetch_nodes",
    "is_control_plane",
    "render",
]

DEFAULT_NAMESPACE = FLEET_NAMESPACE
"""kube-mock's namespace for its CRs, and the fleet's (docs/architecture.md)."""

CLONED_FROM_ANNOTATION = "mock.zhizuqiu.cn/cloned-from"
"""Annotation on each CR naming the real node it reproduces (an annotation, not a
label: node names may be up to 253 characters, label values only 63)."""

HOSTNAME_LABEL = "kubernetes.io/hostname"

CONTROL_PLANE_LABELS = (
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
)
"""Role labels kubeadm (and most installers) put on control-plane nodes."""
CONTROL_PLANE_TAINTS = CONTROL_PLANE_LABELS
"""Taint keys kubeadm puts on control-plane nodes (same names as the labels)."""
_LEGACY_ROLE = ("kubernetes.io/role", "master")
"""kops's pre-1.16 role label."""

LIFECYCLE_TAINTS = frozenset(
    {
        # The node lifecycle controller, from conditions and spec.unschedulable
        # (k8s.io/api/core/v1 well_known_taints.go).
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/network-unavailable",
        # The cloud node controller, until it has initialised the node / while it is off.
        "node.cloudprovider.kubernetes.io/uninitialized",
        "node.cloudprovider.kubernetes.io/shutdown",
        # The cluster autoscaler, while it scales the node down.
        "ToBeDeletedByClusterAutoscaler",
        "DeletionCandidateOfClusterAutoscaler",
    }
)
"""Taints a controller adds and removes as the node's state changes: a copy starts
healthy, so copying them would leave fake nodes tainted for good."""

# status.capacity name -> nodeConfig field.
_CORE_RESOURCES: Mapping[str, str] = {
    "cpu": "cpu",
    "memory": "memory",
    "pods": "pods",
    "ephemeral-storage": "ephemeralStorage",
}
# apimachinery IsQualifiedName, as fleet.api validates extended resource names.
_QUALIFIED_NAME = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9][-a-z0-9.]*$")
_AWS_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_DIGITS = re.compile(r"^[0-9]+$")
_MAX_LABEL_VALUE = 63

OutputFormat = Literal["yaml", "list"]


@dataclass(frozen=True, slots=True)
class CloneOptions:
    """How nodes become CRs; validated on construction (:class:`ConfigError` names the flag)."""

    copies: int = 1
    """CRs per real node, named ``<prefix><node>-<i>`` for i in 0..copies-1."""
    name_prefix: str = ""
    """Prepended to every CR name (a DNS-subdomain start: lower case, digits, ``-``, ``.``)."""
    namespace: str = DEFAULT_NAMESPACE
    """Namespace of the CRs."""
    include_control_plane: bool = False
    """Clone control-plane nodes too (kube-mock's ``--disable-filter-master``)."""

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ConfigError(f"--copies: must be at least 1, got {self.copies}")
        if self.name_prefix and not _PREFIX.match(self.name_prefix):
            raise ConfigError(
                f"--name-prefix: {self.name_prefix!r} must start with a lower-case letter or "
                "digit and hold only lower-case letters, digits, '-' and '.'"
            )
        if len(self.namespace) > 63 or not _DNS_LABEL.match(self.namespace):
            raise ConfigError(
                f"--namespace: {self.namespace!r} is not a valid namespace name (RFC 1123 label)"
            )


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((node.get("metadata") or {}).get("labels") or {}).items()}


def _taints(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, Mapping)]


def _node_name(node: Mapping[str, Any]) -> str:
    name = (node.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InputError("a Node without metadata.name")
    return name


def is_control_plane(node: Mapping[str, Any]) -> bool:
    """Whether ``node`` is a control-plane node: by its role labels or taints, exactly.

    Only the keys in :data:`CONTROL_PLANE_LABELS` (any value), kops's legacy
    ``kubernetes.io/role=master``, and the taints in :data:`CONTROL_PLANE_TAINTS`
    count: a label merely named ``node`` does not (kube-mock's bug).
    """
    labels = _labels(node)
    if any(key in labels for key in CONTROL_PLANE_LABELS):
        return True
    if labels.get(_LEGACY_ROLE[0]) == _LEGACY_ROLE[1]:
        return True
    return any(t.get("key") in CONTROL_PLANE_TAINTS for t in _taints(node))


def _is_extended_resource(name: str) -> bool:
    """apimachinery ``IsExtendedResourceName`` (hugepages-*, attachable-volumes-* are not)."""
    return (
        "kubernetes.io/" not in name
        and not name.startswith("requests.")
        and bool(_QUALIFIED_NAME.match(name))
    )


def _quantity_text(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{where}: {value!r} is not a quantity")
    text = str(value)
    try:
        parse_quantity(text)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    return text


def _resources(node: Mapping[str, Any], name: str) -> dict[str, Any]:
    status = node.get("status") or {}
    capacity = {str(k): v for k, v in (status.get("capacity") or {}).items()}
    allocatable = {str(k): v for k, v in (status.get("allocatable") or {}).items()}
    out: dict[str, Any] = {}
    kept: dict[str, str] = {}
    for resource, field_name in _CORE_RESOURCES.items():
        if resource in capacity:
            kept[resource] = out[field_name] = _quantity_text(
                capacity[resource], f"Node {name}: status.capacity.{resource}"
            )
    extended = {
        resource: _quantity_text(value, f"Node {name}: status.capacity[{resource!r}]")
        for resource, value in sorted(capacity.items())
        if _is_extended_resource(resource)
    }
    if extended:
        out["extendedResources"] = extended
        kept.update(extended)
    reserved: dict[str, str] = {}
    for resource, cap in kept.items():
        if resource not in allocatable:
            continue
        alloc = _quantity_text(
            allocatable[resource], f"Node {name}: status.allocatable[{resource!r}]"
        )
        if parse_quantity(alloc) != parse_quantity(cap):
            reserved[resource] = alloc
    if reserved:
        out["allocatable"] = reserved
    return out


def _copy_labels(labels: Mapping[str, str], old: str, new: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in sorted(labels):
        value = labels[key]
        if key == HOSTNAME_LABEL or value == old:
            if len(new) > _MAX_LABEL_VALUE:
                raise InputError(
                    f"Node {old}: copy name {new!r} is longer than {_MAX_LABEL_VALUE} characters, "
                    f"too long for the label {key!r}: use a shorter --name-prefix"
                )
            value = new
        out[key] = value
    return out


def _copy_taints(node: Mapping[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for taint in _taints(node):
        key = taint.get("key")
        if not isinstance(key, str) or key in LIFECYCLE_TAINTS:
            continue
        copied = {"key": key}
        if taint.get("value"):
            copied["value"] = str(taint["value"])
        copied["effect"] = str(taint.get("effect") or "")
        # timeAdded is dropped: it tells when the real node got the taint, not the copy.
        out.append(copied)
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fake_provider_id(original: str, *, old_name: str, new_name: str, namespace: str) -> str | None:
    """The real node's providerID with the same scheme and path, and a fake, unique id.

    The last path segment is the machine: an AWS instance id (``i-`` + hex)
    becomes another id of the same shape, a number (Azure scale-set index)
    another number, anything else (GCE and kind use the node name) the copy's
    name. The fake ids are derived from the copy's namespace and name, so they
    are stable from run to run and differ between copies. None for a value
    without a ``scheme://`` (the fleet then uses its own ``kubemock://``).
    """
    scheme, sep, rest = original.partition("://")
    if not sep or not scheme:
        return None
    head, slash, last = rest.rpartition("/")
    seed = _digest(f"{namespace}/{new_name}")
    if _AWS_INSTANCE_ID.match(last):
        fake = "i-" + seed[:17]
    elif _DIGITS.match(last):
        fake = str(int(seed[:15], 16))
    else:
        fake = new_name
    return f"{scheme}://{head}{slash}{fake}"


def _node_info(node: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    out: dict[str, str] = {}
    if info.get("kubeletVersion"):
        out["kubeletVersion"] = str(info["kubeletVersion"])
    os_name = info.get("operatingSystem") or labels.get("kubernetes.io/os")
    arch = info.get("architecture") or labels.get("kubernetes.io/arch")
    if os_name:
        out["os"] = str(os_name)
    if arch:
        out["arch"] = str(arch)
    for key in ("containerRuntimeVersion", "osImage", "kernelVersion"):
        if info.get(key):
            out[key] = str(info[key])
    return out


def clone_node(node: Mapping[str, Any], options: CloneOptions) -> list[dict[str, Any]]:
    """The ``options.copies`` Node CRs reproducing one ``v1.Node`` (validated, no I/O)."""
    name = _node_name(node)
    labels = _labels(node)
    resources = _resources(node, name)
    taints = _copy_taints(node)
    info = _node_info(node, labels)
    provider_id = str((node.get("spec") or {}).get("providerID") or "")
    crs: list[dict[str, Any]] = []
    for index in range(options.copies):
        new_name = f"{options.name_prefix}{name}-{index}"
        if len(new_name) > 253 or not _DNS_SUBDOMAIN.match(new_name):
            raise InputError(
                f"Node {name}: copy name {new_name!r} is not a valid object name "
                "(RFC 1123 subdomain, at most 253 characters)"
            )
        config: dict[str, Any] = dict(resources)
        config["labels"] = _copy_labels(labels, name, new_name)
        if taints:
            config["taints"] = [dict(t) for t in taints]
        if provider_id:
            fake = fake_provider_id(
                provider_id, old_name=name, new_name=new_name, namespace=options.namespace
            )
            if fake is not None:
                config["providerID"] = fake
        config.update(info)
        cr: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "Node",
            "metadata": {
                "name": new_name,
                "namespace": options.namespace,
                "annotations": {CLONED_FROM_ANNOTATION: name},
            },
            "spec": {"nodeConfig": config},
        }
        load_node(cr)  # InputError naming the CR and field: never write what would not apply
        crs.append(cr)
    return crs


def clone_nodes(nodes: Iterable[Mapping[str, Any]], options: CloneOptions) -> list[dict[str, Any]]:
    """CRs for every node (control-plane ones only if asked), sorted by node name."""
    chosen = [n for n in nodes if options.include_control_plane or not is_control_plane(n)]
    out: list[dict[str, Any]] = []
    for node in sorted(chosen, key=_node_name):
        out.extend(clone_node(node, options))
    return out


def render(crs: Sequence[Mapping[str, Any]], fmt: OutputFormat = "yaml") -> str:
    """Multi-document YAML (``---`` before each CR), or one ``v1 List`` holding them."""
    dump: dict[str, Any] = {
        "sort_keys": False,
        "allow_unicode": True,
        "default_flow_style": False,
        "width": 100,
    }
    if fmt == "list":
        text: str = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(crs)}, **dump)
    else:
        text = yaml.safe_dump_all(list(crs), explicit_start=True, **dump)
    return text


async def fetch_nodes(
    client: Client, *, label_selector: str | None = None, field_selector: str | None = None
) -> list[dict[str, Any]]:
    """Every ``v1.Node`` matching the selectors (list pages followed)."""
    result = await client.list(
        "/api/v1/nodes", label_selector=label_selector, field_selector=field_selector
    )
    return result.items


def _describe_selection(label_selector: str | None, field_selector: str | None) -> str:
    parts = []
    if label_selector:
        parts.append(f"label selector {label_selector!r}")
    if field_selector:
        parts.append(f"field selector {field_selector!r}")
    return f" matching {' and '.join(parts)}" if parts else ""


async def _clone_from_cluster(
    client: Client,
    options: CloneOptions,
    label_selector: str | None,
    field_selector: str | None,
) -> list[dict[str, Any]]:
    nodes = await fetch_nodes(client, label_selector=label_selector, field_selector=field_selector)
    where = _describe_selection(label_selector, field_selector)
    if not nodes:
        raise InputError(f"no nodes{where} in the cluster")
    crs = clone_nodes(nodes, options)
    if not crs:
        raise InputError(
            f"no worker nodes{where}: all {len(nodes)} are control-plane nodes "
            "(pass --disable-filter-master to clone them)"
        )
    return crs


async def _clone(
    kubeconfig: Path | None,
    context: str | None,
    options: CloneOptions,
    label_selector: str | None,
    field_selector: str | None,
) -> list[dict[str, Any]]:
    config = load_config(kubeconfig, context)
    async with Client(config) as client:
        return await _clone_from_cluster(client, options, label_selector, field_selector)


def clone_command(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            "-f",
            "--from-kubeconfig",
            help="Kubeconfig of the cluster to clone (kube-mock's -f/--from-kubeconfig).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context", help="The name of the kubeconfig context to use", show_default=False
        ),
    ] = None,
    selector: Annotated[
        str | None,
        typer.Option(
            "-l", "--selector", help="Label selector of the nodes to clone.", show_default=False
        ),
    ] = None,
    field_selector: Annotated[
        str | None,
        typer.Option(
            "--field-selector", help="Field selector of the nodes to clone.", show_default=False
        ),
    ] = None,
    disable_filter_master: Annotated[
        bool,
        typer.Option(
            "--disable-filter-master",
            help="Clone control-plane nodes too (left out by default).",
        ),
    ] = False,
    copies: Annotated[
        int, typer.Option("--copies", help="Node CRs per real node, named <prefix><node>-<i>.")
    ] = 1,
    name_prefix: Annotated[
        str, typer.Option("--name-prefix", help="Prefix of every CR name.")
    ] = "",
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="Namespace of the CRs.")
    ] = DEFAULT_NAMESPACE,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="yaml: one document per CR; list: a single v1 List.",
            metavar="yaml|list",
        ),
    ] = "yaml",
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Write to FILE (atomically) instead of stdout; '-' is stdout.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Clone the cluster's nodes into Node CRs that make the fleet reproduce them."""
    try:
        if output_format not in ("yaml", "list"):
            raise ConfigError(f"--format: {output_format!r} is not one of yaml, list")
        fmt: OutputFormat = "list" if output_format == "list" else "yaml"
        options = CloneOptions(
            copies=copies,
            name_prefix=name_prefix,
            namespace=namespace,
            include_control_plane=disable_filter_master,
        )
        crs = trio.run(_clone, kubeconfig, context, options, selector, field_selector)
        write_output(render(crs, fmt), output)
    except FleetError as exc:
        typer.echo(f"crdgen: error: {exc}", err=True)
        raise typer.Exit(1) from exc
