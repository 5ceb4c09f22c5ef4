"""Lifecycle policies: which MockStatus a pod follows without naming one, and per-pod draws.

A MockStatus with ``spec.selector`` is a *policy* (fleet.api ``PodSelector``):
it applies to every pod the selector matches (namespaces, labels, annotations,
owner kinds, all ANDed) that carries no lifecycle annotation of its own; among
several matching policies the highest ``spec.priority`` wins, ties going to the
alphabetically first ``namespace/name``. The pieces, all pure (no clock, no I/O):

- :class:`PodFacts`: what a selector can look at, interned by the pod driver so
  that the pods of one template share one object. It also carries the last
  match result, so matching costs one walk over the policies per distinct set of
  facts and policy generation, not one per pod and never one per tick.
- :class:`Policy` (:func:`compile_policy`) and :class:`PolicyIndex`: the
  policies in order, and ``match(facts)``.
- :func:`unit_draw`, :func:`jitter_draw`, :func:`weighted_choice`,
  :func:`jittered_offsets`: the per-pod (and per-node: ``_nodescripts``)
  randomness of jittered steps and weighted branches, derived from the pod's
  uid with BLAKE2b (not ``random``, whose sequences are not promised across
  Python versions): a pod draws the same values on every shard, after every
  restart, in every replay of a run.

``shards._scripts`` compiles MockStatuses and keeps the index up to date;
``shards._pods`` asks it for a pod's policy once, when the pod arrives or its
facts change, and again only when the set of policies changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from fleet.api import PodSelector
from fleet.errors import InputError
from fleet.machinery import LabelSelector, label_selector_from_dict

__all__ = [
    "ALL_NAMESPACES",
    "PodFacts",
    "Policy",
    "PolicyIndex",
    "compile_policy",
    "jitter_draw",
    "jittered_offsets",
    "unit_draw",
    "weighted_choice",
]

ALL_NAMESPACES = "*"
"""``selector.namespaces: ["*"]``: every namespace."""

_SPREAD = NormalDist(0.5, 1 / 6)
"""A normal jitter: centred in its window, three standard deviations to either edge."""


class PodFacts:
    """What a policy selector can see of a pod; shared by the pods of one template.

    Read-only once built (the driver interns them); ``generation`` and ``match``
    cache :meth:`PolicyIndex.match`.
    """

    __slots__ = ("annotations", "generation", "labels", "match", "namespace", "owner_kinds")

    def __init__(
        self,
        namespace: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        owner_kinds: tuple[str, ...],
    ) -> None:
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
        self.owner_kinds = owner_kinds
        self.generation = -1
        self.match = ""

    @staticmethod
    def key(
        namespace: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        owner_kinds: tuple[str, ...],
    ) -> tuple[object, ...]:
        """The interning key of the facts these make."""
        return (
            namespace,
            tuple(sorted(labels.items())),
            tuple(sorted(annotations.items())),
            owner_kinds,
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled ``spec.selector`` with its priority."""

    key: str
    """``namespace/name`` of the MockStatus."""
    priority: int
    namespaces: frozenset[str] | None
    """None: every namespace."""
    labels: LabelSelector
    annotations: tuple[tuple[str, str], ...]
    owner_kinds: frozenset[str] | None

    def matches(self, facts: PodFacts) -> bool:
        if self.namespaces is not None and facts.namespace not in self.namespaces:
            return False
        if self.owner_kinds is not None and not self.owner_kinds.intersection(facts.owner_kinds):
            return False
        for name, value in self.annotations:
            if facts.annotations.get(name) != value:
                return False
        return self.labels.matches(facts.labels)

    def order(self) -> tuple[int, str]:
        """Sort key: highest priority first, then ``namespace/name``."""
        return (-self.priority, self.key)


def compile_policy(namespace: str, name: str, selector: PodSelector, priority: int) -> Policy:
    """The :class:`Policy` of MockStatus ``namespace/name``; InputError naming a bad selector."""
    where = "spec.selector"
    try:
        labels = label_selector_from_dict(
            {
                "matchLabels": dict(selector.match_labels or {}),
                "matchExpressions": [
                    {"key": e.key, "operator": e.operator, "values": list(e.values)}
                    for e in selector.match_expressions or ()
                ],
            }
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    namespaces: frozenset[str] | None = frozenset({namespace})
    if selector.namespaces is not None:
        if not selector.namespaces:
            raise InputError(f"{where}.namespaces: empty; omit it for the own namespace")
        if ALL_NAMESPACES in selector.namespaces:
            if len(selector.namespaces) > 1:
                raise InputError(f'{where}.namespaces: "*" stands alone')
            namespaces = None
        else:
            namespaces = frozenset(selector.namespaces)
    owners = None if selector.owner_kinds is None else frozenset(selector.owner_kinds)
    return Policy(
        key=f"{namespace}/{name}",
        priority=priority,
        namespaces=namespaces,
        labels=labels,
        annotations=tuple(sorted((selector.match_annotations or {}).items())),
        owner_kinds=owners,
    )


class PolicyIndex:
    """Every valid policy, in order; see the module docstring."""

    def __init__(self) -> None:
        self._policies: dict[str, Policy] = {}
        self._ordered: tuple[Policy, ...] = ()
        self.generation = 0
        """Bumped on every change: cached matches older than it are recomputed."""
        self.annotation_keys: frozenset[str] = frozenset()
        """Every annotation key a policy's ``matchAnnotations`` named since the start (it only
        grows): the only annotations pod facts keep, since pods often carry large or
        per-pod ones (a pod's facts would no longer be shared with its template's)."""

    def __len__(self) -> int:
        return len(self._policies)

    def put(self, policy: Policy) -> None:
        self._policies[policy.key] = policy
        keys = {name for name, _ in policy.annotations}
        if not keys <= self.annotation_keys:
            self.annotation_keys = self.annotation_keys | keys
        self._changed()

    def remove(self, key: str) -> bool:
        """Forget policy ``key``; whether there was one."""
        if self._policies.pop(key, None) is None:
            return False
        self._changed()
        return True

    def _changed(self) -> None:
        self._ordered = tuple(sorted(self._policies.values(), key=Policy.order))
        self.generation += 1

    def match(self, facts: PodFacts) -> str:
        """``namespace/name`` of the policy ``facts`` follow; ``""``: none."""
        if facts.generation == self.generation:
            return facts.match
        found = ""
        for policy in self._ordered:
            if policy.matches(facts):
                found = policy.key
                break
        facts.generation, facts.match = self.generation, found
        return found


# --- per-pod draws ----------------------------------------------------------------------


def unit_draw(uid: str, salt: str) -> float:
    """A number in (0, 1), the same for the same ``uid`` and ``salt`` everywhere, always."""
    digest = hashlib.blake2b(f"{uid}\x00{salt}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def jitter_draw(uid: str, salt: str, distribution: Literal["uniform", "normal"]) -> float:
    """Where in its jitter window (0 to 1) a pod's step falls."""
    unit = unit_draw(uid, salt)
    if distribution == "uniform":
        return unit
    return min(1.0, max(0.0, _SPREAD.inv_cdf(unit)))


def jittered_offsets(
    steps: Sequence[tuple[float, float]], draw: Callable[[int], float]
) -> list[float]:
    """The offset of each (after, jitter) step: ``after`` plus ``jitter`` times ``draw(index)``
    (0 to 1; drawn only for a step with jitter), in whole seconds for a window of a second or
    more (status times have one-second resolution, and objects drawing alike then share
    their plans), and never before the step it follows (a draw that would is moved up)."""
    offsets: list[float] = []
    previous = 0.0
    for index, (after, jitter) in enumerate(steps):
        at = after
        if jitter > 0:
            shift = jitter * draw(index)
            at += round(shift) if jitter >= 1 else round(shift, 3)
        previous = at = max(at, previous)
        offsets.append(at)
    return offsets


def weighted_choice(uid: str, salt: str, weights: Sequence[int]) -> int:
    """Index of the branch a pod takes: each with probability weight/sum (sum > 0)."""
    point = unit_draw(uid, salt) * sum(weights)
    total = 0.0
    last = 0
    for index, weight in enumerate(weights):
        if weight <= 0:
            continue
        total += weight
        last = index
        if point < total:
            return index
    return last
