"""PriorityClasses as kube-apiserver serves them: the Priority admission plugin and the
system classes (k8s.io/kubernetes ``plugin/pkg/admission/priority``,
``pkg/apis/scheduling``).

A pod being created gets its ``priority`` (and ``preemptionPolicy``) from the class its
``priorityClassName`` names, or from the global-default class (the one of lowest value
when several claim it) with that class's name filled in, or 0 and
``PreemptLowerPriority`` when there is none. An unknown class, or a ``priority`` /
``preemptionPolicy`` sent that differs from the class's, is 403 Forbidden in the
plugin's words. A second global-default class is refused the same way; values above
one billion and names starting ``system-`` are reserved for the two system classes,
which exist from the start as in every cluster.
"""

from __future__ import annotations

from typing import Any

from fleet.sandbox._status import field_forbidden, forbidden, invalid
from fleet.sandbox._store import Key, Store

__all__ = ["PRIORITY_CLASSES", "SYSTEM_CLASSES", "PriorityAdmission"]

PRIORITY_CLASSES: Key = ("scheduling.k8s.io", "priorityclasses")
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
"""scheduling.HighestUserDefinablePriority."""
DEFAULT_PRIORITY = 0
"""scheduling.DefaultPriorityWhenNoDefaultClassExists."""
DEFAULT_PREEMPTION = "PreemptLowerPriority"
SYSTEM_CLASSES: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-node-critical"},
        "value": 2_000_001_000,
        "description": "Used for system critical pods that must not be moved from their current node.",
    },
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-cluster-critical"},
        "value": 2_000_000_000,
        "description": "Used for system critical pods that must run in the cluster, but can be "
        "moved to another node if necessary.",
    },
)
_SYSTEM_NAMES = frozenset(c["metadata"]["name"] for c in SYSTEM_CLASSES)


class PriorityAdmission:
    """The Priority admission plugin, as ``Api.before_write`` hooks of pods and classes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _classes(self) -> list[dict[str, Any]]:
        return list(self.store.collection(PRIORITY_CLASSES).objects.values())

    def pod(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Resolve a new pod's priority (updates keep theirs: it is immutable)."""
        if old is not None:
            return
        spec = new.setdefault("spec", {})
        name = new.get("metadata", {}).get("name", "")
        wanted = spec.get("priorityClassName") or ""
        if wanted:
            found = [c for c in self._classes() if c["metadata"]["name"] == wanted]
            if not found:
                raise forbidden("pods", "", name, f"no PriorityClass with name {wanted} was found")
            value, policy = found[0].get("value", 0), found[0].get("preemptionPolicy")
        else:
            defaults = [c for c in self._classes() if c.get("globalDefault")]
            if defaults:
                chosen = min(defaults, key=lambda c: int(c.get("value", 0)))
                spec["priorityClassName"] = chosen["metadata"]["name"]
                value, policy = chosen.get("value", 0), chosen.get("preemptionPolicy")
            else:
                value, policy = DEFAULT_PRIORITY, DEFAULT_PREEMPTION
        sent = spec.get("priority")
        if sent is not None and sent != value:
            raise forbidden(
                "pods",
                "",
                name,
                f"the integer value of priority ({sent}) must not be provided in pod spec; "
                f"priority admission controller computed {value} from the given PriorityClass name",
            )
        spec["priority"] = value
        policy = policy or DEFAULT_PREEMPTION
        sent_policy = spec.get("preemptionPolicy")
        if sent_policy is not None and sent_policy != policy:
            raise forbidden(
                "pods",
                "",
                name,
                f"the string value of PreemptionPolicy ({sent_policy}) must not be provided in "
                f"pod spec; priority admission controller computed {policy} from the given "
                "PriorityClass name",
            )
        spec["preemptionPolicy"] = policy

    def priority_class(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """One global default at most; reserved values and names; value immutable."""
        name = new.get("metadata", {}).get("name", "")
        value = new.get("value")
        causes = []
        if name not in _SYSTEM_NAMES:
            if name.startswith("system-"):
                causes.append(
                    field_forbidden(
                        "metadata.name",
                        "priority class names with 'system-' prefix are reserved for system "
                        f"use only. error: {name} is not a known system priority class",
                    )
                )
            elif isinstance(value, int) and value > HIGHEST_USER_DEFINABLE_PRIORITY:
                causes.append(
                    field_forbidden(
                        "value",
                        f"maximum allowed value of a user defined priority is "
                        f"{HIGHEST_USER_DEFINABLE_PRIORITY}",
                    )
                )
        if old is not None and old.get("value") != value:
            causes.append(field_forbidden("value", "may not be changed in an update."))
        if causes:
            raise invalid("PriorityClass", "scheduling.k8s.io", name, causes)
        if new.get("globalDefault"):
            for other in self._classes():
                if other.get("globalDefault") and other["metadata"]["name"] != name:
                    raise forbidden(
                        "priorityclasses",
                        "scheduling.k8s.io",
                        name,
                        f"PriorityClass {other['metadata']['name']} is already marked as default. "
                        "Only one default can exist",
                    )
