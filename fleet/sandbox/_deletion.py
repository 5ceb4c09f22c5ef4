"""DELETE and deletecollection: grace periods, finalizers, preconditions, garbage collection.

Follows the apiserver's generic registry (``BeforeDelete``, graceful deletion,
``updateForGracefulDeletionAndFinalizers``): a pod bound to a node gets a
deletionTimestamp and deletionGracePeriodSeconds and stays until deleted with
grace 0 (what its kubelet does); an unbound pod goes at once; finalizers hold
any object with a deletionTimestamp until they are emptied. The garbage
collector's work (ownerReferences and ``propagationPolicy``) and the namespace
controller's (deleting a namespace's content) are done inline, at once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from fleet.sandbox._api import Api, Call
from fleet.sandbox._objects import rfc3339
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._status import StatusError, bad_request, success
from fleet.sandbox._store import Event, Key, ObjKey, clone

_decoder = msgspec.json.Decoder()
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def delete_options(call: Call) -> dict[str, Any]:
    """DeleteOptions from the body, overridden by query parameters."""
    opts: dict[str, Any] = {}
    if call.body.strip():
        try:
            decoded = _decoder.decode(call.body)
        except msgspec.DecodeError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc
        if isinstance(decoded, dict):
            opts = decoded
    q = call.query
    if "gracePeriodSeconds" in q:
        try:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        except ValueError:
            raise bad_request(
                f'strconv.ParseInt: parsing "{q["gracePeriodSeconds"]}": invalid syntax'
            ) from None
    if "propagationPolicy" in q:
        opts["propagationPolicy"] = q["propagationPolicy"]
    if "orphanDependents" in q:
        opts["orphanDependents"] = q["orphanDependents"] == "true"
    if q.get("dryRun") == "All":
        opts["dryRun"] = ["All"]
    return opts


class Deleter:
    """Deletion semantics over an :class:`Api`, with an index of ownerReferences."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._dependents: dict[str, set[tuple[Key, ObjKey]]] = defaultdict(set)
        self._ns_counts: dict[str, int] = defaultdict(int)
        self._pending_foreground: dict[str, tuple[ResourceType, str, str]] = {}
        api.store.on_commit.append(self._index)

    # --- indexes kept from the commit stream ---------------------------------------------
    def _index(self, key: Key, ev: Event) -> None:
        meta = ev.obj["metadata"]
        ok = (meta.get("namespace") or "", meta["name"])
        if ev.prev is not None:
            for ref in ev.prev["metadata"].get("ownerReferences") or []:
                self._dependents[ref.get("uid", "")].discard((key, ok))
        if ev.type != "DELETED":
            for ref in meta.get("ownerReferences") or []:
                self._dependents[ref.get("uid", "")].add((key, ok))
        else:
            for ref in meta.get("ownerReferences") or []:
                if ref.get("uid", "") in self._pending_foreground:
                    self._finish_foreground(ref.get("uid", ""))
        if ok[0]:
            if ev.type == "ADDED":
                self._ns_counts[ok[0]] += 1
            elif ev.type == "DELETED":
                self._ns_counts[ok[0]] -= 1
                if self._ns_counts[ok[0]] <= 0:
                    self._maybe_finish_namespace(ok[0])

    def rebuild(self) -> None:
        """Rebuild the indexes from the store (after loading it from a file)."""
        self._dependents.clear()
        self._ns_counts.clear()
        for key in self.api.store.keys():
            for (ns, name), obj in self.api.store.collection(key).objects.items():
                for ref in obj["metadata"].get("ownerReferences") or []:
                    self._dependents[ref.get("uid", "")].add((key, (ns, name)))
                if ns:
                    self._ns_counts[ns] += 1

    # --- delete ------------------------------------------------------------------------------
    def delete(self, call: Call) -> tuple[int, dict[str, Any]]:
        rt = call.rt
        assert call.name is not None
        opts = delete_options(call)
        obj = self.api.lookup(rt, call.ns(), call.name)
        self._check_preconditions(rt, obj, opts.get("preconditions") or {})
        dry = bool(opts.get("dryRun"))
        final, removed = self._delete_object(rt, obj, opts, dry=dry)
        if rt.returns_deleted:
            return 200, final
        meta = final["metadata"]
        details: dict[str, Any] = {"name": meta["name"]}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = meta.get("uid", "")
        if removed:
            status = success(200, details)
            status.pop("code")  # the apiserver's delete Status carries no code
            return 200, status
        return 200, final

    def _check_preconditions(
        self, rt: ResourceType, obj: dict[str, Any], pre: dict[str, Any]
    ) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        details = (
            {"name": name, "group": rt.group, "kind": rt.kind}
            if rt.group
            else {"name": name, "kind": rt.kind}
        )
        what = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise StatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {what} "{name}": the UID in the precondition '
                f"({pre['uid']}) does not match the UID in record ({meta.get('uid')}). "
                "The object might have been deleted and then recreated",
                details,
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise StatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {what} "{name}": the ResourceVersion in the precondition '
                f"({pre['resourceVersion']}) does not match the ResourceVersion in record "
                f"({meta.get('resourceVersion')}). The object might have been modified",
                details,
            )

    def _grace(self, rt: ResourceType, obj: dict[str, Any], opts: dict[str, Any]) -> int | None:
        """Grace period for types that delete gracefully (pods); None for the others."""
        if rt.key != ("", "pods"):
            return None
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        g = opts.get("gracePeriodSeconds")
        if g is None:
            g = spec.get("terminationGracePeriodSeconds", 30)
        return max(0, int(g))

    def _delete_object(
        self, rt: ResourceType, obj: dict[str, Any], opts: dict[str, Any], *, dry: bool
    ) -> tuple[dict[str, Any], bool]:
        """Returns (the state to answer with, whether the object is gone)."""
        now = self.api.now()
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is True:
            policy = "Orphan"
        if policy is None and rt.key == ("batch", "jobs"):
            # batch/v1 Jobs orphan their pods unless told otherwise (the job strategy's
            # DefaultGarbageCollectionPolicy); kubectl delete sends Background.
            policy = "Orphan"
        grace = self._grace(rt, obj, opts)
        meta = obj["metadata"]
        new = clone(obj)
        nmeta = new["metadata"]
        finalizers = list(nmeta.get("finalizers") or [])
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        changed = False
        if grace is not None:
            current = meta.get("deletionGracePeriodSeconds")
            if not meta.get("deletionTimestamp") or current is None or grace < current:
                nmeta["deletionTimestamp"] = rfc3339(now + grace)
                nmeta["deletionGracePeriodSeconds"] = grace
                changed = True
        elif finalizers and not meta.get("deletionTimestamp"):
            nmeta["deletionTimestamp"] = rfc3339(now)
            nmeta["deletionGracePeriodSeconds"] = 0
            changed = True
        if finalizers != list(meta.get("finalizers") or []):
            nmeta["finalizers"] = finalizers
            changed = True
        if rt.key == ("", "namespaces") and not meta.get("deletionTimestamp"):
            nmeta["deletionTimestamp"] = rfc3339(now)
            nmeta["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            changed = True
        gone_now = not finalizers and (grace is None or grace == 0) and rt.key != ("", "namespaces")
        if dry:
            return (new if changed or not gone_now else obj), gone_now
        state = obj
        if changed:
            state = self.api.store.commit(rt.key, "MODIFIED", new, obj)
        uid = meta.get("uid", "")
        if policy == "Orphan":
            self._orphan(uid)
        if rt.key == ("", "namespaces"):
            self._empty_namespace(meta["name"])
            current = self.api.store.get(rt.key, "", meta["name"])
            return (current or state), current is None
        if gone_now:
            final = clone(state)
            self.api.remove(rt, final, state)
            if policy != "Orphan":
                self._collect(uid)
            return final, True
        if policy == "Foreground":
            self._pending_foreground[uid] = (rt, meta.get("namespace") or "", meta["name"])
            self._collect(uid)
            self._finish_foreground(uid)
        return state, False

    # --- garbage collection ------------------------------------------------------------------
    def _has_dependents(self, uid: str) -> bool:
        return bool(self._dependents.get(uid))

    def _collect(self, owner_uid: str) -> None:
        for key, (ns, name) in list(self._dependents.get(owner_uid, ())):
            rt = self.api.registry.by_key(key)
            obj = self.api.store.get(key, ns, name)
            if rt is None or obj is None or obj["metadata"].get("deletionTimestamp"):
                continue
            self._delete_object(rt, obj, {"propagationPolicy": "Background"}, dry=False)

    def _orphan(self, owner_uid: str) -> None:
        for key, (ns, name) in list(self._dependents.get(owner_uid, ())):
            obj = self.api.store.get(key, ns, name)
            if obj is None:
                continue
            new = clone(obj)
            refs = [
                r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid
            ]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self.api.store.commit(key, "MODIFIED", new, obj)

    def _finish_foreground(self, uid: str) -> None:
        """Drop the foregroundDeletion finalizer once no dependents are left."""
        pending = self._pending_foreground.get(uid)
        if pending is None or self._has_dependents(uid):
            return
        rt, ns, name = pending
        del self._pending_foreground[uid]
        current = self.api.store.get(rt.key, ns, name)
        if current is None:
            return
        fins = [f for f in current["metadata"].get("finalizers") or [] if f != FOREGROUND]
        if fins == list(current["metadata"].get("finalizers") or []):
            return
        new = clone(current)
        if fins:
            new["metadata"]["finalizers"] = fins
            self.api.store.commit(rt.key, "MODIFIED", new, current)
        else:
            new["metadata"].pop("finalizers", None)
            grace = new["metadata"].get("deletionGracePeriodSeconds") or 0
            if grace == 0:
                self.api.remove(rt, new, current)
            else:
                self.api.store.commit(rt.key, "MODIFIED", new, current)

    # --- namespaces ------------------------------------------------------------------------------
    def _empty_namespace(self, ns: str) -> None:
        for key in self.api.store.keys():
            rt = self.api.registry.by_key(key)
            if rt is None or not rt.namespaced:
                continue
            for (ons, _name), obj in list(self.api.store.collection(key).objects.items()):
                if ons != ns:
                    continue
                self._delete_object(rt, obj, {"gracePeriodSeconds": 0}, dry=False)
        self._maybe_finish_namespace(ns)

    def _maybe_finish_namespace(self, ns: str) -> None:
        nso = self.api.store.get(("", "namespaces"), "", ns)
        if (
            nso is None
            or not nso["metadata"].get("deletionTimestamp")
            or self._ns_counts.get(ns, 0) > 0
        ):
            return
        rt = self.api.registry.by_key(("", "namespaces"))
        assert rt is not None
        final = clone(nso)
        final.setdefault("spec", {})["finalizers"] = []
        self.api.remove(rt, final, nso)

    # --- deletecollection -----------------------------------------------------------------------
    def delete_collection(self, call: Call, selected: list[dict[str, Any]]) -> dict[str, Any]:
        rt = call.rt
        opts = delete_options(call)
        items = []
        for obj in selected:
            final, _gone = self._delete_object(rt, obj, opts, dry=bool(opts.get("dryRun")))
            items.append(final)
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.api.store.rv)},
            "items": items,
        }
