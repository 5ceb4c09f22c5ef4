"""The content types of the Kubernetes API: one definition each, used by every layer.

Request bodies (``Content-Type``) and the PATCH flavours the apiserver tells
apart by media type: RFC 6902 JSON patch, RFC 7386 merge patch, strategic
merge patch (built-in kinds only) and server-side apply.
"""

from __future__ import annotations

__all__ = [
    "APPLY_PATCH",
    "JSON",
    "JSON_PATCH",
    "MERGE_PATCH",
    "PROTOBUF",
    "STRATEGIC_MERGE_PATCH",
    "YAML",
]

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
