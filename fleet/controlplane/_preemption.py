"""Preemption: which lower-priority pods to evict so a pending pod fits (the scheduler's part).

kube-scheduler's ``DefaultPreemption`` PostFilter, run when a pod fits on no node:

1. The pod may preempt unless its ``preemptionPolicy`` is ``Never``, or it already has a
   ``nominatedNodeName`` on which a lower-priority pod is still terminating (its earlier
   preemption is under way: ``PodEligibleToPreemptOthers``).
2. Candidates are the nodes that failed on resources alone (a node failing on taints,
   affinity or ``unschedulable`` is "Preemption is not helpful for scheduling"). On each,
   every pod of lower priority is taken away; if the pod then fits, victims are reprieved one
   by one, highest priority first (earliest started first among equals), as long as the pod
   still fits (``selectVictimsOnNode``).
3. Of the candidates, one is picked by kube-scheduler's ``pickOneNodeForPreemption`` order:
   the lowest highest-victim priority, then the smallest sum of victim priorities, then the
   fewest victims, then the latest start of the highest-priority victim, then the first found.

Left out: PodDisruptionBudgets (the real one first prefers victims and nodes that violate
fewer; here every lower-priority pod is as good a victim), inter-pod affinity and the
``minCandidateNodes`` sampling (every node is looked at).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["Victim", "no_victims_message", "pick_node", "select_victims"]

REASON_NO_VICTIMS = "No preemption victims found for incoming pod"
REASON_NOT_HELPFUL = "Preemption is not helpful for scheduling"


@dataclass(frozen=True, slots=True)
class Victim:
    """A pod that could make room: its key, priority and start time (seconds)."""

    key: str
    priority: int
    started: float


def select_victims(
    priority: int, pods: Iterable[Victim], fits_without: Callable[[frozenset[str]], bool]
) -> list[Victim] | None:
    """The fewest lower-priority pods to remove from one node so the pod fits, or None.

    ``fits_without(keys)``: whether the pod fits on the node with those pods gone.
    """
    lower = [p for p in pods if p.priority < priority]
    if not lower:
        return None
    gone = frozenset(p.key for p in lower)
    if not fits_without(gone):
        return None
    # Reprieve the most important first: highest priority, then the longest running.
    victims: list[Victim] = []
    for p in sorted(lower, key=lambda v: (-v.priority, v.started)):
        if fits_without(gone - {p.key}):
            gone = gone - {p.key}
        else:
            victims.append(p)
    return victims


def pick_node(candidates: dict[str, list[Victim]]) -> str | None:
    """The node to preempt on (``pickOneNodeForPreemption`` without the PDB criterion)."""
    best: tuple[int, int, int, float] | None = None
    chosen: str | None = None
    for node, victims in candidates.items():
        if not victims:
            return node  # nothing to evict: the pod fits there now
        top = max(v.priority for v in victims)
        latest_top_start = max(v.started for v in victims if v.priority == top)
        rank = (top, sum(v.priority for v in victims), len(victims), -latest_top_start)
        if best is None or rank < best:
            best, chosen = rank, node
    return chosen


def no_victims_message(total: int, not_helpful: int) -> str:
    """kube-scheduler's PostFilter text when no node can be freed, appended to the fit error."""
    counts = {REASON_NOT_HELPFUL: not_helpful, REASON_NO_VICTIMS: total - not_helpful}
    histogram = sorted(f"{n} {reason}" for reason, n in counts.items() if n)
    return f"preemption: 0/{total} nodes are available: {', '.join(histogram)}."
