"""The coordinator: makes many shard processes one fleet.

It assigns each Node CR to a live shard by writing the shard label
(rendezvous hashing), moves a dead shard's CRs once its Lease has expired by
the coordinator's own observation, rebalances at a bounded rate when a shard
returns, and runs as one elected leader among replicas. The fencing rule is
spelled out in ``_coordinator``'s docstring. :func:`serve_coordinator` (``_serve``) is
the coordinator process's composition root: every command that runs one calls it. The names it shares with the
shards (label, Lease names) are :mod:`fleet.wire`'s. Everything else here is
private.
"""

from __future__ import annotations

from fleet.coordinator._coordinator import Coordinator as Coordinator
from fleet.coordinator._election import LeaderElector as LeaderElector
from fleet.coordinator._hashing import owner as owner
from fleet.coordinator._liveness import LeaseRecord as LeaseRecord
from fleet.coordinator._liveness import Liveness as Liveness
from fleet.coordinator._planner import Move as Move
from fleet.coordinator._planner import Planner as Planner
from fleet.coordinator._serve import serve_coordinator as serve_coordinator

__all__ = [
    "Coordinator",
    "LeaderElector",
    "LeaseRecord",
    "Liveness",
    "Move",
    "Planner",
    "owner",
    "serve_coordinator",
]
