"""The control-plane loops' verbs: :class:`fleet.kube.Rest`, which they share with every client.

The loops build ``Rest(requester)`` over whatever requester runs them (the
httpx :class:`~fleet.kube.Client`, the hot transport, a test's
:class:`~fleet.kube.MemoryApiserver`). This module's :class:`Rest` is
:class:`fleet.kube.Rest` and nothing more, except that ``delete`` still takes
the short keywords the loops used before the verbs were one layer (``uid``,
``propagation``, ``grace_seconds``), so branches written against them keep
working; new code uses the ``DeleteOptions`` names (``preconditions_uid``,
``propagation_policy``, ``grace_period_seconds``).
"""

from __future__ import annotations

from typing import Any

from fleet.kube import Rest as _Rest
from fleet.machinery import MERGE_PATCH

__all__ = ["MERGE_PATCH", "Rest"]


class Rest(_Rest):
    """:class:`fleet.kube.Rest`; ``delete`` also takes the old short keywords."""

    async def delete(
        self,
        path: str,
        *,
        grace_period_seconds: int | None = None,
        preconditions_uid: str | None = None,
        preconditions_resource_version: str | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
        uid: str | None = None,
        propagation: str | None = None,
        grace_seconds: int | None = None,
    ) -> dict[str, Any]:
        """:meth:`fleet.kube.Rest.delete`; ``uid``, ``propagation`` and ``grace_seconds``
        are the old names of ``preconditions_uid``, ``propagation_policy`` and
        ``grace_period_seconds``."""
        return await super().delete(
            path,
            grace_period_seconds=grace_seconds
            if grace_seconds is not None
            else grace_period_seconds,
            preconditions_uid=uid or preconditions_uid,
            preconditions_resource_version=preconditions_resource_version,
            propagation_policy=propagation or propagation_policy,
            dry_run=dry_run,
        )
