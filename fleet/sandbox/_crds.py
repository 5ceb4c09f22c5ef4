"""CustomResourceDefinitions: serving, naming and cleaning up custom resources.

Watches the commit stream for CRDs. A created or changed CRD is marked
NamesAccepted and Established (the apiextensions controllers' work, done at
once) and each served version becomes a :class:`ResourceType` in the
registry, with its schema, printer columns and subresources; a deleted CRD
takes its custom resources with it and leaves discovery.
"""

from __future__ import annotations

from typing import Any

from fleet.sandbox._api import Api
from fleet.sandbox._objects import rfc3339
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._store import Event, Key, clone

CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
_CR_VERBS = ("delete", "deletecollection", "get", "list", "patch", "create", "update", "watch")


def types_for(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    namespaced = spec.get("scope") == "Namespaced"
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs: dict[str, dict[str, Any]] = {}
        for sub in v.get("subresources") or {}:
            if sub in ("status", "scale"):
                entry: dict[str, Any] = {
                    "name": f"{names['plural']}/{sub}",
                    "singularName": "",
                    "namespaced": namespaced,
                    "kind": names["kind"],
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1", kind="Scale")
                subs[sub] = entry
        out.append(
            ResourceType(
                group=spec["group"],
                version=v["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=namespaced,
                verbs=_CR_VERBS,
                subresources=subs,
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                singular=names.get("singular") or names["kind"].lower(),
                has_generation=True,
                crd=dict(v, names=names),
            )
        )
    return out


class Crds:
    """Keeps the registry in step with the stored CRDs."""

    def __init__(self, api: Api) -> None:
        self.api = api
        api.store.on_commit.append(self._on_commit)

    def _on_commit(self, key: Key, ev: Event) -> None:
        if key != CRD_KEY:
            return
        if ev.type == "DELETED":
            self._unserve(ev.obj)
            return
        self.serve(ev.obj)
        self._establish(ev.obj)

    def serve(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        if ev_prev := self._served_plural(crd):
            self.api.registry.remove_group_resource(spec.get("group", ""), ev_prev)
        for i, rt in enumerate(types_for(crd)):
            self.api.registry.add(rt, preferred=i == 0)
        del names

    def _served_plural(self, crd: dict[str, Any]) -> str:
        spec = crd.get("spec") or {}
        return str((spec.get("names") or {}).get("plural", ""))

    def _establish(self, crd: dict[str, Any]) -> None:
        status = crd.get("status") or {}
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        names = dict((crd.get("spec") or {}).get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", names.get("kind", "") + "List")
        storage = [v["name"] for v in (crd["spec"].get("versions") or []) if v.get("storage")]
        if (
            conds.get("Established", {}).get("status") == "True"
            and status.get("acceptedNames") == names
            and set(storage) <= set(status.get("storedVersions") or [])
        ):
            return
        now = rfc3339(self.api.now())
        new = clone(crd)
        new["status"] = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": now,
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": names,
            "storedVersions": sorted(set(status.get("storedVersions") or []) | set(storage)),
        }
        self.api.store.commit(CRD_KEY, "MODIFIED", new, crd)

    def _unserve(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), self._served_plural(crd))
        rt = self.api.registry.by_key(key)
        coll = self.api.store.collection(key)
        for obj in list(coll.objects.values()):
            final = clone(obj)
            if rt is not None:
                self.api.remove(rt, final, obj)
            else:
                self.api.store.commit(key, "DELETED", final, obj)
        self.api.registry.remove_group_resource(key[0], key[1])
