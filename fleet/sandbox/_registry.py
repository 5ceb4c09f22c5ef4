"""What the sandbox serves: resource types, their behaviour flags, and discovery documents.

Built-in types come from ``_builtin_resources.json`` (the APIResourceLists a
v1.24 kube-apiserver publishes); custom resources are added and removed as
CRDs come and go (``fleet.sandbox._crds``). Everything else in the sandbox
asks the :class:`Registry` what a path names and how that type behaves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

# Field selector labels each built-in resource supports beyond metadata.name/namespace
# (k8s.io/kubernetes pkg/registry/*/strategy.go GetAttrs / AddFieldLabelConversionFunc).
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        }
    ),
    ("", "events"): frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    ("events.k8s.io", "events"): frozenset(
        {
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        }
    ),
    ("", "nodes"): frozenset({"spec.unschedulable"}),
    ("", "namespaces"): frozenset({"status.phase"}),
    ("", "secrets"): frozenset({"type"}),
    ("", "replicationcontrollers"): frozenset({"status.replicas"}),
    ("apps", "replicasets"): frozenset({"status.replicas"}),
}

# Types whose metadata.generation tracks spec changes (their strategies set it).
_WITH_GENERATION = {
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("", "replicationcontrollers"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("policy", "poddisruptionbudgets"),
}
# A write to /status of these also applies label and annotation changes (their status
# strategies do not reset metadata); for the others /status keeps only status.
_STATUS_KEEPS_META = {("", "pods"), ("", "nodes")}
# Types whose create keeps the status in the body (the others reset it).
_CREATE_KEEPS_STATUS = {("", "nodes"), ("", "namespaces"), ("", "persistentvolumes")}
# DELETE answers with the object rather than a Status (ReturnDeletedObject in their storage).
_RETURNS_DELETED = {
    ("", "pods"),
    ("", "namespaces"),
    ("", "services"),
    ("", "nodes"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("coordination.k8s.io", "leases"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
}


@dataclass(frozen=True)
class ResourceType:
    """One servable resource (e.g. ``pods`` in ``v1``) and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]
    subresources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Subresource name -> its discovery entry (``status``, ``scale``, ``binding``...)."""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    singular: str = ""
    storage_version_hash: str = ""
    has_generation: bool = False
    status_keeps_meta: bool = False
    create_keeps_status: bool = False
    returns_deleted: bool = False
    field_labels: frozenset[str] = frozenset()
    crd: dict[str, Any] | None = None
    """For a custom resource: the served version's entry of the CRD spec.versions plus
    ``names`` (schema, printer columns, subresources)."""

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: a type is stored once whatever version serves it."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def is_custom(self) -> bool:
        return self.crd is not None

    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery_entries(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        if self.storage_version_hash:
            main["storageVersionHash"] = self.storage_version_hash
        out = [main]
        for sub in sorted(self.subresources):
            out.append(dict(self.subresources[sub]))
        return out


def _builtin_types() -> list[ResourceType]:
    text = (
        importlib_resources.files("fleet.sandbox").joinpath("_builtin_resources.json").read_text()
    )
    data = json.loads(text)
    types: list[ResourceType] = []
    for doc in data["lists"]:
        gv = doc["groupVersion"]
        group, _, version = gv.rpartition("/")
        subs: dict[str, dict[str, dict[str, Any]]] = {}
        for r in doc["resources"]:
            if "/" in r["name"]:
                parent, sub = r["name"].split("/", 1)
                entry = dict(r)
                entry["singularName"] = ""
                subs.setdefault(parent, {})[sub] = entry
        for r in doc["resources"]:
            if "/" in r["name"]:
                continue
            key = (group, r["name"])
            types.append(
                ResourceType(
                    group=group,
                    version=version,
                    plural=r["name"],
                    kind=r["kind"],
                    namespaced=r["namespaced"],
                    verbs=tuple(r["verbs"]),
                    subresources=subs.get(r["name"], {}),
                    short_names=tuple(r.get("shortNames", ())),
                    categories=tuple(r.get("categories", ())),
                    singular=r["kind"].lower(),
                    storage_version_hash=r.get("storageVersionHash", ""),
                    has_generation=key in _WITH_GENERATION,
                    status_keeps_meta=key in _STATUS_KEEPS_META,
                    create_keeps_status=key in _CREATE_KEEPS_STATUS,
                    returns_deleted=key in _RETURNS_DELETED,
                    field_labels=_FIELD_LABELS.get(key, frozenset()),
                )
            )
    return types


class Registry:
    """The resource types currently served, by group-version and by storage key."""

    def __init__(self) -> None:
        self._by_gv: dict[str, dict[str, ResourceType]] = {}
        self._preferred: dict[str, str] = {}  # group -> preferred version
        self._group_order: list[str] = []
        for rt in _builtin_types():
            # A group's first listed version is its preferred (and storage) version.
            self.add(rt, preferred=rt.group not in self._preferred)

    def add(self, rt: ResourceType, *, preferred: bool = True) -> None:
        self._by_gv.setdefault(rt.api_version, {})[rt.plural] = rt
        if rt.group not in self._group_order:
            self._group_order.append(rt.group)
        if preferred or rt.group not in self._preferred:
            self._preferred[rt.group] = rt.version

    def remove_group_resource(self, group: str, plural: str) -> None:
        for gv in [gv for gv, m in self._by_gv.items() if plural in m and m[plural].group == group]:
            del self._by_gv[gv][plural]
            if not self._by_gv[gv]:
                del self._by_gv[gv]
        if not any(rt.group == group for rt in self.all()):
            self._preferred.pop(group, None)
            if group in self._group_order:
                self._group_order.remove(group)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        gv = f"{group}/{version}" if group else version
        return self._by_gv.get(gv, {}).get(plural)

    def group_version(self, group: str, version: str) -> dict[str, ResourceType] | None:
        return self._by_gv.get(f"{group}/{version}" if group else version)

    def all(self) -> Iterator[ResourceType]:
        for m in self._by_gv.values():
            yield from m.values()

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        group, plural = key
        version = self._preferred.get(group)
        if version is None:
            return None
        return self.get(group, version, plural)

    def versions(self, group: str) -> list[str]:
        vs = [
            gv.rpartition("/")[2]
            for gv, m in self._by_gv.items()
            if m and next(iter(m.values())).group == group
        ]
        pref = self._preferred.get(group)
        return sorted(vs, key=lambda v: (v != pref, v))

    # discovery documents ---------------------------------------------------------------
    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.versions(group)
        if not group or not versions:
            return None
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    def api_group_list(self) -> dict[str, Any]:
        groups = []
        for g in self._group_order:
            doc = self.api_group(g)
            if doc is not None:
                doc.pop("kind")
                doc.pop("apiVersion")
                groups.append(doc)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        m = self.group_version(group, version)
        if not m:
            return None
        resources: list[dict[str, Any]] = []
        for rt in sorted(m.values(), key=lambda r: r.plural):
            resources.extend(rt.discovery_entries())
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }
