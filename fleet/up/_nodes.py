"""``up --nodes N``: Node CRs stamped from one template.

The default template is the node of kube-mock's README, unchanged but for
its name (:data:`DEFAULT_TEMPLATE`, the same CR as ``examples/node-sample.yaml``).
``--node-template FILE`` names another: one Node CR in YAML, validated by
:func:`fleet.api.load_node`. Copy ``i`` is named ``fleet-node-<i>`` (from 0),
in the template's namespace or ``kube-mock-system``; identity fields of the
template's metadata (name, uid, resourceVersion, ...) and its status are
dropped, labels and annotations kept.

The CRs are created ``CREATE_IN_FLIGHT`` at a time; one that already exists
(a sandbox restarted with ``--data``) is left as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml

from fleet.api import GROUP, VERSION, load_node
from fleet.errors import AlreadyExists, ConfigError, InputError
from fleet.kube import Client, resource_path
from fleet.wire import FLEET_NAMESPACE, NODE_PLURAL

__all__ = [
    "CREATE_IN_FLIGHT",
    "DEFAULT_TEMPLATE",
    "NODE_NAME_PREFIX",
    "NodeTemplate",
    "create_nodes",
    "load_template",
]

NODE_NAME_PREFIX = "fleet-node-"
CREATE_IN_FLIGHT = 16
"""Concurrent creates: enough to keep a local apiserver busy, few enough not to queue on it."""

DEFAULT_TEMPLATE = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: Node
metadata:
  name: node-sample
  namespace: kube-mock-system
spec:
  suspend: false
  image: "zhizuqiu/kube-mock:v1alpha1"
  kubeconfigSecret: "kube-mock-node"
  nodeSelector:
    node-role.kubernetes.io/control-plane: ""
  tolerations:
    - key: node-role.kubernetes.io/control-plane
      operator: Exists
      effect: NoSchedule
  nodeConfig:
    cpu: '128'
    memory: '300Gi'
    pods: '50'
"""
"""The Node CR of kube-mock's README (its comments left out)."""

_IDENTITY_FIELDS = (
    "name",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
)


@dataclass(frozen=True)
class NodeTemplate:
    """A validated Node CR, ready to be stamped out under many names."""

    body: dict[str, Any]
    namespace: str

    def render(self, index: int) -> dict[str, Any]:
        """The CR of copy ``index``: ``fleet-node-<index>`` in the template's namespace."""
        body = copy.deepcopy(self.body)
        body["metadata"]["name"] = f"{NODE_NAME_PREFIX}{index}"
        return body


def _parse(text: str, source: str) -> NodeTemplate:
    try:
        docs = [
            d
            for d in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            if d
        ]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError(f"{source}: expected exactly one Node CR, found {len(docs)} documents")
    raw: dict[str, Any] = docs[0]
    if raw.get("apiVersion") != f"{GROUP}/{VERSION}" or raw.get("kind") != "Node":
        raise ConfigError(
            f"{source}: expected apiVersion {GROUP}/{VERSION}, kind Node; "
            f"got {raw.get('apiVersion')}, {raw.get('kind')}"
        )
    meta = dict(raw.get("metadata") or {})
    for field in _IDENTITY_FIELDS:
        meta.pop(field, None)
    namespace = str(meta.get("namespace") or FLEET_NAMESPACE)
    meta["namespace"] = namespace
    meta["name"] = f"{NODE_NAME_PREFIX}0"
    body = {
        "apiVersion": raw["apiVersion"],
        "kind": "Node",
        "metadata": meta,
        "spec": raw.get("spec") or {},
    }
    try:
        load_node(body)
    except InputError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return NodeTemplate(body, namespace)


def load_template(path: Path | None) -> NodeTemplate:
    """The template in ``path`` (one Node CR in YAML), or kube-mock's README node."""
    if path is None:
        return _parse(DEFAULT_TEMPLATE, "the default node template")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return _parse(text, str(path))


async def create_nodes(client: Client, template: NodeTemplate, count: int) -> tuple[int, int]:
    """Create ``fleet-node-0`` .. ``fleet-node-<count-1>``; returns (created, already there)."""
    path = resource_path(GROUP, VERSION, NODE_PLURAL, namespace=template.namespace)
    indexes = iter(range(count))
    created = existing = 0

    async def worker() -> None:  # a fixed pool of workers, not one task per node
        nonlocal created, existing
        for index in indexes:
            try:
                await client.create(path, template.render(index))
                created += 1
            except AlreadyExists:
                existing += 1

    async with trio.open_nursery() as nursery:
        for _ in range(min(CREATE_IN_FLIGHT, count)):
            nursery.start_soon(worker)
    return created, existing
