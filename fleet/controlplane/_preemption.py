"""Preemption: which lower-priority pods to evict so a pending pod fits (the scheduler's part).

kube-scheduler's ``DefaultPreemption`` PostFilter, run when a pod fits on no node:

1. The pod may preempt unless its ``preemptionPolicy`` is ``Never``, or it already has a
   ``nominatedNodeName`` on which a lower-priority pod is still terminating (its earlier
   preemption is under way: ``PodEligibleToPreemptOthers``).
2. Candidates are the nodes that failed on resources alone (a node failing on taints,
   affinity or ``unschedulable`` is "Preemption is not helpful for scheduling"). On each,
   every pod of lower priority is taken away; if the pod then fits, victims are reprieved one
   by one as long as the pod still fits (``SelectVictimsOnNode``): first those whose
   eviction would violate a PodDisruptionBudget, then the others, each group highest
   priority first (earliest started first among equals). A pod violates a budget when,
   counting down the budget's ``disruptionsAllowed`` over the node's lower-priority pods in
   that order, it takes the count below zero (``filterPodsWithPDBViolation``; a pod the
   budget's ``disruptedPods`` already lists does not count, a budget with an empty selector
   matches nothing). The victims left that violate a budget are the node's PDB violations.
3. Of the candidates, one is picked by kube-scheduler's ``pickOneNodeForPreemption`` order:
   the fewest PDB violations, then the lowest highest-victim priority, then the smallest sum
   of victim priorities (each raised by 2^31, so fewer victims weigh less), then the fewest
   victims, then the latest earliest start among the highest-priority victims, then the
   first found.

Budgets are best effort, as in the real one: a pod whose only victims violate budgets still
preempts them. Left out: inter-pod affinity and the ``minCandidateNodes`` sampling (every
node is looked at).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "Candidate",
    "Victim",
    "no_victims_message",
    "pick_node",
    "select_victims",
    "violating",
]

REASON_NO_VICTIMS = "No preemption victims found for incoming pod"
REASON_NOT_HELPFUL = "Preemption is not helpful for scheduling"
_PRIORITY_OFFSET = 2**31
"""``math.MaxInt32 + 1``, added to each victim's priority in the sum: every term positive."""


@dataclass(frozen=True, slots=True)
class Victim:
    """A pod that could make room: its key, priority and start time (seconds)."""

    key: str
    priority: int
    started: float
    budgets: tuple[str, ...] = ()
    """The PodDisruptionBudgets its eviction would take a disruption from: those of its
    namespace whose selector matches it and whose ``disruptedPods`` do not list it."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One node's victims, most important first, and how many of them violate a budget."""

    victims: list[Victim]
    pdb_violations: int = 0


def _importance(v: Victim) -> tuple[int, float]:
    """``MoreImportantPod`` as a sort key: higher priority, then earlier started, first."""
    return (-v.priority, v.started)


def violating(
    pods: Iterable[Victim], allowed: Mapping[str, int]
) -> tuple[list[Victim], list[Victim]]:
    """``filterPodsWithPDBViolation``: ``pods`` split, order kept, into those whose eviction
    would take a budget below zero (counting down ``allowed``, a budget's
    ``disruptionsAllowed``, in the order given) and the rest."""
    left = dict(allowed)
    bad: list[Victim] = []
    good: list[Victim] = []
    for pod in pods:
        violated = False
        for budget in pod.budgets:
            left[budget] = left.get(budget, 0) - 1
            if left[budget] < 0:
                violated = True
        (bad if violated else good).append(pod)
    return bad, good


def select_victims(
    priority: int,
    pods: Iterable[Victim],
    fits_without: Callable[[frozenset[str]], bool],
    allowed: Mapping[str, int] | None = None,
) -> Candidate | None:
    """The fewest lower-priority pods to remove from one node so the pod fits, or None.

    ``fits_without(keys)``: whether the pod fits on the node with those pods gone.
    ``allowed``: each budget's ``disruptionsAllowed`` (a budget absent counts as 0).
    """
    lower = sorted((p for p in pods if p.priority < priority), key=_importance)
    if not lower:
        return None
    gone = frozenset(p.key for p in lower)
    if not fits_without(gone):
        return None
    bad, good = violating(lower, allowed or {})
    victims: list[Victim] = []
    violations = 0
    # Reprieve the budget-violating pods first, then the others, each the most important
    # first: what stays a victim is what the pod cannot fit without.
    for group in (bad, good):
        for p in group:
            if fits_without(gone - {p.key}):
                gone = gone - {p.key}
            else:
                victims.append(p)
                violations += group is bad
    if bad and good:
        victims.sort(key=_importance)
    return Candidate(victims, violations)


def pick_node(candidates: Mapping[str, Candidate]) -> str | None:
    """The node to preempt on (``pickOneNodeForPreemption``)."""
    best: tuple[int, int, int, int, float] | None = None
    chosen: str | None = None
    for node, candidate in candidates.items():
        victims = candidate.victims
        if not victims:
            return node  # nothing to evict: the pod fits there now
        top = max(v.priority for v in victims)
        earliest_top_start = min(v.started for v in victims if v.priority == top)
        rank = (
            candidate.pdb_violations,
            top,
            sum(v.priority + _PRIORITY_OFFSET for v in victims),
            len(victims),
            -earliest_top_start,
        )
        if best is None or rank < best:
            best, chosen = rank, node
    return chosen


def no_victims_message(total: int, not_helpful: int) -> str:
    """kube-scheduler's PostFilter text when no node can be freed, appended to the fit error."""
    counts = {REASON_NOT_HELPFUL: not_helpful, REASON_NO_VICTIMS: total - not_helpful}
    histogram = sorted(f"{n} {reason}" for reason, n in counts.items() if n)
    return f"preemption: 0/{total} nodes are available: {', '.join(histogram)}."
