"""Strategic merge patch for the built-in kinds the sandbox serves.

Pure library: ports k8s.io/apimachinery pkg/util/strategicpatch (patch.go)
with a table of patch strategies and merge keys taken from the Go struct tags
of k8s.io/api. Bad directives raise :class:`fleet.errors.InputError`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KNOWN_KINDS", "strategic_merge_patch"]

KNOWN_KINDS: frozenset[str] = frozenset(
    {"Pod", "Node", "Deployment", "ReplicaSet", "Service", "ConfigMap", "Secret",
     "Namespace", "Lease", "Event", "ServiceAccount"}
)


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], kind: str) -> dict[str, Any]:
    """Return ``original`` with ``patch`` applied; neither argument is modified."""
    raise NotImplementedError
