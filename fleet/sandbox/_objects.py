"""Object metadata chores: timestamps, uids, generated names, name rules, field order.

Small pure helpers the write paths share.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

# Alphabet of generated name suffixes (k8s.io/apimachinery pkg/util/rand: no vowels, no
# look-alike digits, so generated names never spell words).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_SUFFIX_LEN = 5
MAX_NAME_LEN = 253
MAX_GENERATE_PREFIX = MAX_NAME_LEN - GENERATED_SUFFIX_LEN

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def is_subdomain(name: str) -> bool:
    return len(name) <= MAX_NAME_LEN and bool(_DNS1123_SUBDOMAIN.match(name))


def is_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1123_LABEL.match(name))


def rfc3339(t: float) -> str:
    """Whole-second RFC 3339 in UTC, as metav1.Time serialises."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    return prefix[:MAX_GENERATE_PREFIX] + "".join(
        secrets.choice(_SUFFIX_ALPHABET) for _ in range(GENERATED_SUFFIX_LEN)
    )


_TOP_ORDER = ("kind", "apiVersion", "metadata")
_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


_OMITEMPTY_MAPS = ("labels", "annotations")


def _drop_empty_maps(meta: dict[str, Any]) -> None:
    """Go's ObjectMeta has ``omitempty`` maps: ``labels: {}`` is not stored."""
    for key in _OMITEMPTY_MAPS:
        if meta.get(key) == {}:
            del meta[key]


def _templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The metadata of the pod templates of a built-in workload (``spec.template``, a CronJob's);
    a custom resource's spec is kept as sent."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or "." in str(obj.get("apiVersion", "")).rpartition("/")[0]:
        return []
    out = []
    for holder in (spec, (spec.get("jobTemplate") or {}).get("spec")):
        template = holder.get("template") if isinstance(holder, dict) else None
        if isinstance(template, dict) and isinstance(template.get("metadata"), dict):
            out.append(template["metadata"])
    job = spec.get("jobTemplate")
    if isinstance(job, dict) and isinstance(job.get("metadata"), dict):
        out.append(job["metadata"])
    return out


def go_ordered_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its keys in Go's ObjectMeta field order, as the apiserver writes them;
    keys Go does not know after them."""
    out = {k: meta[k] for k in _META_ORDER if k in meta}
    out.update((k, v) for k, v in meta.items() if k not in out)
    return out


def ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with kind, apiVersion, metadata first and metadata keys in Go's field order."""
    out: dict[str, Any] = {k: obj[k] for k in _TOP_ORDER if k in obj}
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        _drop_empty_maps(meta)
        for template in _templates(obj):
            _drop_empty_maps(template)
        out["metadata"] = go_ordered_meta(meta)
    for k, v in obj.items():
        if k not in out:
            out[k] = v
    if "status" in out:  # status last, as Go structs declare it
        out["status"] = out.pop("status")
    return out


def dig(obj: Any, path: str) -> Any:
    """The value at a dotted path, or None."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_value(obj: Any, path: str) -> str:
    """The value at a dotted path as a field selector compares it (``fields.Set``): missing
    is "", a bool ``true``/``false``, a list (of IPs) joined by commas."""
    v = dig(obj, path)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, list):
        return ",".join(str(x.get("ip", x)) if isinstance(x, dict) else str(x) for x in v)
    return str(v)
