"""Strategic merge patch for the built-in kinds the sandbox serves.

Pure library called by the sandbox apiserver for
``application/strategic-merge-patch+json``. It ports the apply half of
k8s.io/apimachinery ``pkg/util/strategicpatch/patch.go`` (``mergeMap``,
``mergeSlice``, ``mergePatchIntoOriginal``, ``normalizeElementOrder``): the
same merge, deletion and ordering rules, including where patched list items
land when no ``$setElementOrder`` is sent.

The Go code finds each field's patch strategy in the struct tags of k8s.io/api
(``patchStrategy:"merge" patchMergeKey:"name"``). Here those tags are written
out once, as a tree per kind (:data:`_KINDS`). A field the tree does not know
has no strategy: maps merge, lists are replaced (what Go does for an untagged
field). Go fails on a field missing from the struct; the sandbox validates the
result afterwards instead, so unknown fields pass through here.

Directives: ``$patch: replace|delete`` in a map, ``$patch: replace|delete`` as
a list item (``merge`` is rejected there as in Go), ``$setElementOrder/<list>``,
``$deleteFromPrimitiveList/<list>``, ``$retainKeys``; ``null`` deletes a key.
Malformed directives raise :class:`fleet.errors.InputError` with the message
k8s.io/apimachinery's ``mergepatch`` errors carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.errors import InputError

__all__ = ["KNOWN_KINDS", "strategic_merge_patch"]

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList"

# Messages of k8s.io/apimachinery/pkg/util/mergepatch/errors.go.
_ERR_PRIMITIVE_LIST = "invalid patch format of primitive list"
_ERR_RETAIN_KEYS = "invalid patch format of retainKeys"
_ERR_SET_ORDER = "invalid patch format of setElementOrder list"
_ERR_LIST_OF_LISTS = "lists of lists are not supported"


@dataclass(frozen=True, slots=True)
class _Field:
    """Patch metadata of one field: its strategy, merge key and element/value type."""

    strategy: str = ""  # "" (replace lists, merge maps), "merge" or "replace"
    merge_key: str = ""
    type: _Struct | None = None  # the struct the field (or each list item) holds


@dataclass(frozen=True, slots=True)
class _Struct:
    fields: dict[str, _Field] = field(default_factory=dict)

    def lookup(self, name: str) -> _Field:
        return self.fields.get(name, _NO_META)


_NO_META = _Field()
_EMPTY = _Struct()


def _merge(key: str, t: _Struct | None = None) -> _Field:
    return _Field("merge", key, t)


def _nested(t: _Struct) -> _Field:
    return _Field("", "", t)


# --- the struct tags of k8s.io/api, for the kinds below ----------------------

_OBJECT_META = _Struct(
    {
        "finalizers": _merge(""),  # patchStrategy:"merge" on a []string
        "ownerReferences": _merge("uid"),
    }
)
_CONTAINER = _Struct(
    {
        "ports": _merge("containerPort"),
        "env": _merge("name"),
        "volumeMounts": _merge("mountPath"),
        "volumeDevices": _merge("devicePath"),
    }
)
_POD_SPEC = _Struct(
    {
        "volumes": _merge("name"),  # "merge,retainKeys"
        "initContainers": _merge("name", _CONTAINER),
        "containers": _merge("name", _CONTAINER),
        "ephemeralContainers": _merge("name", _CONTAINER),
        "imagePullSecrets": _merge("name"),
        "hostAliases": _merge("ip"),
        "topologySpreadConstraints": _merge("topologyKey"),
        "resourceClaims": _merge("name"),  # "merge,retainKeys"
        "schedulingGates": _merge("name"),
        # tolerations, readinessGates: no strategy (replaced)
    }
)
_POD_STATUS = _Struct(
    {
        "conditions": _merge("type"),
        "podIPs": _merge("ip"),
        "hostIPs": _merge("ip"),
        "resourceClaimStatuses": _merge("name"),  # "merge,retainKeys"
        # containerStatuses, initContainerStatuses, ephemeralContainerStatuses: replaced
    }
)
_POD_TEMPLATE = _Struct({"metadata": _nested(_OBJECT_META), "spec": _nested(_POD_SPEC)})
_CONDITIONS_STATUS = _Struct({"conditions": _merge("type")})
_WORKLOAD = _Struct(
    {
        "metadata": _nested(_OBJECT_META),
        "spec": _nested(_Struct({"template": _nested(_POD_TEMPLATE)})),  # strategy: retainKeys
        "status": _nested(_CONDITIONS_STATUS),
    }
)

_KINDS: dict[str, _Struct] = {
    "Pod": _Struct(
        {
            "metadata": _nested(_OBJECT_META),
            "spec": _nested(_POD_SPEC),
            "status": _nested(_POD_STATUS),
        }
    ),
    "Node": _Struct(
        {
            "metadata": _nested(_OBJECT_META),
            # taints: no strategy (replaced); podCIDRs: patchStrategy:"merge" on []string
            "spec": _nested(_Struct({"podCIDRs": _merge("")})),
            # images, volumesInUse, volumesAttached: no strategy (replaced)
            "status": _nested(_Struct({"conditions": _merge("type"), "addresses": _merge("type")})),
        }
    ),
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,  # volumeClaimTemplates: no strategy (replaced)
    "Job": _WORKLOAD,
    "CronJob": _Struct(
        {
            "metadata": _nested(_OBJECT_META),
            "spec": _nested(
                _Struct(
                    {
                        "jobTemplate": _nested(
                            _Struct(
                                {"spec": _nested(_Struct({"template": _nested(_POD_TEMPLATE)}))}
                            )
                        )
                    }
                )
            ),
            # status.active: atomic (replaced)
        }
    ),
    "Service": _Struct(
        {
            "metadata": _nested(_OBJECT_META),
            "spec": _nested(_Struct({"ports": _merge("port")})),
            "status": _nested(_CONDITIONS_STATUS),
        }
    ),
    "ConfigMap": _Struct({"metadata": _nested(_OBJECT_META)}),
    "Secret": _Struct({"metadata": _nested(_OBJECT_META)}),
    "Namespace": _Struct(
        {"metadata": _nested(_OBJECT_META), "status": _nested(_CONDITIONS_STATUS)}
    ),
    "Lease": _Struct({"metadata": _nested(_OBJECT_META)}),
    "Event": _Struct({"metadata": _nested(_OBJECT_META)}),
    "ServiceAccount": _Struct({"metadata": _nested(_OBJECT_META), "secrets": _merge("name")}),
}

KNOWN_KINDS: frozenset[str] = frozenset(_KINDS)
"""Kinds :func:`strategic_merge_patch` has the patch metadata of."""


def strategic_merge_patch(
    original: dict[str, Any], patch: dict[str, Any], kind: str, *, copy: bool = True
) -> dict[str, Any]:
    """Return ``original`` with the strategic merge ``patch`` applied.

    Neither argument is modified, unless ``copy=False``: then both are the
    caller's fresh copies, consumed (the result shares and changes them; the
    apiserver path passes a clone of the stored object and a just-decoded
    patch, and saves a third of a pod status patch's cost). ``kind`` selects the merge keys
    (:data:`KNOWN_KINDS`); an unknown kind raises :class:`InputError`, as the
    apiserver answers 415 for kinds it has no strategy for (custom resources).
    """
    schema = _KINDS.get(kind)
    if schema is None:
        raise InputError(f"strategic merge patch is not supported for kind {kind!r}")
    if not isinstance(patch, dict):
        raise InputError(_bad_arg_type({}, patch))
    if copy:
        original, patch = _copy_json(original), _copy_json(patch)
    return _merge_map(original, patch, schema)


def _copy_json(v: Any) -> Any:
    """A deep copy of a decoded JSON/YAML value: new dicts and lists, leaves shared.

    copy.deepcopy did this at ~20x the cost (its memo dict and dispatch, per
    node) and was most of a pod status PATCH's CPU; decoded documents have no
    shared sub-objects or cycles for a memo to matter, and the leaves (str,
    int, float, bool, None, datetime from YAML) are immutable.
    """
    if isinstance(v, dict):
        return {k: _copy_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy_json(x) for x in v]
    return v


# --- Go-style formatting for error messages ----------------------------------


def _go_fmt(v: Any) -> str:
    """Render like Go's ``%v`` of a decoded JSON value (maps sort their keys)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_fmt(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_fmt(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _go_type(v: Any) -> str:
    if isinstance(v, dict):
        return "map[string]interface {}"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "float64"
    if isinstance(v, str):
        return "string"
    return "<nil>"


def _bad_arg_type(expected: Any, actual: Any) -> str:
    return f"expected a {_go_type(expected)}, but received a {_go_type(actual)}"


def _no_merge_key(m: dict[str, Any], key: str) -> str:
    return f"map: {_go_fmt(m)} does not contain declared merge key: {key}"


def _bad_patch_type(t: Any, m: dict[str, Any]) -> str:
    return f"unknown patch type: {_go_fmt(t)} in map: {_go_fmt(m)}"


# --- the algorithm (patch.go) --------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Go's ``==`` on decoded JSON values: same JSON type and value (``1 != true``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], t: _Struct) -> dict[str, Any]:
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            del patch[_DIRECTIVE]
            replaced: dict[str, Any] = _clean(patch, t)
            return replaced
        if directive == "delete":
            return {}
        raise InputError(_bad_patch_type(directive, patch))

    _apply_retain_keys(original, patch)
    _merge_set_element_order(original, patch, t)

    for k, patch_v in list(patch.items()):
        is_delete_list = False
        if k.startswith(_DELETE_PRIMITIVE):
            k = _extract_key(k, _DELETE_PRIMITIVE, _ERR_PRIMITIVE_LIST)
            is_delete_list = True
        if patch_v is None:
            original.pop(k, None)
            continue
        meta = t.lookup(k)
        if k not in original:
            if is_delete_list:
                continue  # nothing to delete from
            original[k] = _clean(patch_v, meta.type, meta)
            continue
        orig_v = original[k]
        if _go_type(orig_v) != _go_type(patch_v):
            original[k] = _clean(patch_v, meta.type, meta)
            continue
        if isinstance(orig_v, dict):
            if meta.strategy == "replace":
                original[k] = _clean(patch_v, meta.type, meta)
            else:
                original[k] = _merge_map(orig_v, patch_v, meta.type or _EMPTY)
        elif isinstance(orig_v, list):
            original[k] = _merge_slice_handler(orig_v, patch_v, meta, is_delete_list)
        else:
            original[k] = patch_v
    return original


def _clean(value: Any, t: _Struct | None, meta: _Field | None = None) -> Any:
    """A patch value taken where the original has none: apply it to an empty value.

    Go takes such values verbatim and the typed decoder then drops directive
    keys and nulls; the sandbox stores plain dicts, so process them here.
    """
    if isinstance(value, dict):
        return _merge_map({}, value, t or _EMPTY)
    if isinstance(value, list) and meta is not None and meta.strategy == "merge":
        return _merge_slice([], value, meta.merge_key, t or _EMPTY, False)
    return value


def _extract_key(s: str, prefix: str, error: str) -> str:
    head, sep, tail = s.partition("/")
    if not sep or head != prefix:
        raise InputError(error)
    return tail


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise InputError(_ERR_RETAIN_KEYS)
    keep = {_json_key(v) for v in retain}
    for k, v in patch.items():
        if v is None or k.startswith(_DELETE_PRIMITIVE) or k.startswith(_SET_ORDER):
            continue
        if _json_key(k) not in keep:
            raise InputError(_ERR_RETAIN_KEYS)
    for k in list(original):
        if _json_key(k) not in keep:
            del original[k]


def _json_key(v: Any) -> tuple[str, Any]:
    """Hashable identity of a decoded JSON scalar, distinguishing ``1`` from ``True``."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        return ("num", float(v))
    if isinstance(v, (dict, list)):
        return ("json", repr(v))
    return (type(v).__name__, v)


def _merge_set_element_order(original: dict[str, Any], patch: dict[str, Any], t: _Struct) -> None:
    for key in [k for k in patch if k.startswith(_SET_ORDER)]:
        order = patch.pop(key)
        if not isinstance(order, list):
            raise InputError(_bad_arg_type([], order))
        original_key = _extract_key(key, _SET_ORDER, _ERR_SET_ORDER)
        found_original = original_key in original
        found_patch = original_key in patch
        original_list: list[Any] = []
        patch_list: list[Any] = []
        if found_original:
            if not isinstance(original[original_key], list):
                raise InputError(_bad_arg_type([], original[original_key]))
            original_list = original[original_key]
        if found_patch:
            if not isinstance(patch[original_key], list):
                raise InputError(_bad_arg_type([], patch[original_key]))
            patch_list = patch[original_key]
        meta = t.lookup(original_key)
        merge_key = meta.merge_key
        _validate_patch_with_set_order_list(patch_list, order, merge_key)
        if found_original and not found_patch:
            merged = original_list
        elif not found_original and found_patch:
            merged = patch_list
        elif found_original and found_patch:
            merged = _merge_slice_handler(original_list, patch_list, meta, False)
        else:
            continue
        if merge_key:
            patch_items, server_only = _partition_maps(merged, order, merge_key)
        else:
            patch_items, server_only = _partition_primitives(merged, order)
        if not original_list and not patch_list:
            # Go fails here ("no elements in any of the given slices"); an empty
            # list in the right order is the useful answer.
            original[original_key] = merged
            patch.pop(original_key, None)
            continue
        is_map = _element_is_map(original_list, patch_list)
        original[original_key] = _normalize_element_order(
            patch_items, server_only, order, original_list, merge_key, is_map
        )
        patch.pop(original_key, None)


def _validate_patch_with_set_order_list(
    patch_list: list[Any], order: list[Any], merge_key: str
) -> None:
    if not order or not patch_list:
        return
    if merge_key:
        non_delete, _ = _extract_to_delete_items(patch_list)
    else:
        non_delete = patch_list
    pi = oi = 0
    while pi < len(non_delete) and oi < len(order):
        item = non_delete[pi]
        if isinstance(item, dict) and _DIRECTIVE in item:
            pi += 1
            continue
        if _merge_key_value_equal(item, order[oi], merge_key):
            pi += 1
        oi += 1
    if pi < len(non_delete) and oi >= len(order):
        raise InputError(
            f"The order in patch list:\n{_go_fmt(patch_list)}\n doesn't match "
            f"{_SET_ORDER} list:\n{_go_fmt(order)}\n"
        )


def _merge_key_value_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _same(left, right)
    if not isinstance(left, dict):
        raise InputError(_bad_arg_type({}, left))
    if not isinstance(right, dict):
        raise InputError(_bad_arg_type({}, right))
    if merge_key not in left:
        raise InputError(_no_merge_key(left, merge_key))
    if merge_key not in right:
        raise InputError(_no_merge_key(right, merge_key))
    return _same(left[merge_key], right[merge_key])


def _merge_slice_handler(
    original: list[Any], patch: Any, meta: _Field, is_delete_list: bool
) -> list[Any]:
    if not isinstance(patch, list):
        raise InputError(_bad_arg_type([], patch))
    if meta.strategy == "merge":
        return _merge_slice(original, patch, meta.merge_key, meta.type or _EMPTY, is_delete_list)
    return [_clean(v, meta.type) for v in patch]


def _element_is_map(*lists: list[Any]) -> bool:
    """``sliceElementType``: all items share one JSON type, never a list."""
    kind = ""
    for items in lists:
        for v in items:
            t = _go_type(v)
            if not kind:
                if t == "[]interface {}":
                    raise InputError(_ERR_LIST_OF_LISTS)
                kind = t
            elif kind != t:
                raise InputError(
                    f"list element types are not identical: {' '.join(_go_fmt(x) for x in lists)}"
                )
    if not kind:
        raise InputError("no elements in any of the given slices")
    return kind == "map[string]interface {}"


def _merge_slice(
    original: list[Any], patch: list[Any], merge_key: str, t: _Struct, is_delete_list: bool
) -> list[Any]:
    if not original and not patch:
        return original
    is_map = _element_is_map(original, patch)
    if not is_map:
        if is_delete_list:
            drop = {_json_key(v) for v in patch}
            return [v for v in original if _json_key(v) not in drop]
        merged = _dedupe_scalars(original + patch)
    else:
        if not merge_key:
            raise InputError("cannot merge lists without merge key for type map")
        original, patch = _merge_slice_with_special_elements(original, patch, merge_key)
        merged = _merge_slice_without_special_elements(original, patch, merge_key, t)
    if merge_key:
        patch_items, server_only = _partition_maps(merged, patch, merge_key)
    else:
        patch_items, server_only = _partition_primitives(merged, patch)
    return _normalize_element_order(patch_items, server_only, patch, original, merge_key, is_map)


def _dedupe_scalars(s: list[Any]) -> list[Any]:
    """``deduplicateScalars``: Go's swap-with-last dedupe (order is then normalised)."""
    s = list(s)
    length = len(s) - 1
    i = 0
    while i < length:
        j = i + 1
        while j <= length:
            if _same(s[i], s[j]):
                s[j] = s[length]
                s = s[:length]
                length -= 1
                j -= 1
            j += 1
        i += 1
    return s


def _merge_slice_with_special_elements(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    without: list[Any] = []
    replace = False
    for v in patch:
        if _DIRECTIVE not in v:
            without.append(v)
            continue
        directive = v[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in v:
                raise InputError(_no_merge_key(v, merge_key))
            original = _delete_matching(original, merge_key, v[merge_key])
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise InputError("merging lists cannot yet be specified in the patch")
        else:
            raise InputError(_bad_patch_type(directive, v))
    if replace:
        return without, []
    return original, without


def _find(items: list[Any], key: str, value: Any) -> int:
    for i, v in enumerate(items):
        if not isinstance(v, dict):
            raise InputError(f"value for key {i} is not a map.")
        if key in v and _same(v[key], value):
            return i
    return -1


def _delete_matching(original: list[Any], key: str, value: Any) -> list[Any]:
    out = list(original)
    while (i := _find(out, key, value)) >= 0:
        del out[i]
    return out


def _merge_slice_without_special_elements(
    original: list[Any], patch: list[Any], merge_key: str, t: _Struct
) -> list[Any]:
    out = list(original)
    for v in patch:
        if merge_key not in v:
            raise InputError(_no_merge_key(v, merge_key))
        i = _find(out, merge_key, v[merge_key])
        if i >= 0:
            out[i] = _merge_map(out[i], v, t)
        else:
            out.append(_merge_map({}, v, t))
    return out


def _partition_primitives(items: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    present = {_json_key(v) for v in by}
    inside = [v for v in items if _json_key(v) in present]
    outside = [v for v in items if _json_key(v) not in present]
    return inside, outside


def _partition_maps(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    inside: list[Any] = []
    outside: list[Any] = []
    for v in items:
        if not isinstance(v, dict):
            raise InputError(_bad_arg_type({}, v))
        if merge_key not in v:
            raise InputError(_no_merge_key(v, merge_key))
        (inside if _find(by, merge_key, v[merge_key]) >= 0 else outside).append(v)
    return inside, outside


def _index(items: list[Any], value: Any, merge_key: str, is_map: bool) -> int:
    def get(item: Any) -> Any:
        if is_map:
            return item.get(merge_key) if isinstance(item, dict) else None
        return item

    wanted = get(value)
    for i, v in enumerate(items):
        if _same(wanted, get(v)):
            return i
    return -1


def _extract_to_delete_items(items: list[Any]) -> tuple[list[Any], list[Any]]:
    keep: list[Any] = []
    drop: list[Any] = []
    for v in items:
        if not isinstance(v, dict):
            raise InputError(_bad_arg_type({}, v))
        (drop if v.get(_DIRECTIVE) == "delete" else keep).append(v)
    return keep, drop


def _normalize_slice_order(
    to_sort: list[Any], order: list[Any], merge_key: str, is_map: bool
) -> list[Any]:
    to_delete: list[Any] = []
    if is_map:
        for lst in (to_sort, order):
            for item in lst:
                if not isinstance(item, dict):
                    raise InputError(_bad_arg_type({}, item))
                if merge_key not in item:
                    raise InputError(_no_merge_key(item, merge_key))
        to_sort, to_delete = _extract_to_delete_items(to_sort)

    def less(a: Any, b: Any) -> bool:
        ia = _index(order, a, merge_key, is_map)
        if ia >= 0:
            ib = _index(order, b, merge_key, is_map)
            if ib >= 0:
                return ia < ib
        return True

    # sort.SliceStable: an insertion sort per block of 20, then SymMerge. The
    # comparator above is not a strict order for items missing from `order`,
    # so emulate Go's insertion sort; lists with more than 20 items that need
    # this are not something a client sends.
    s = list(to_sort)
    for i in range(1, len(s)):
        j = i
        while j > 0 and less(s[j], s[j - 1]):
            s[j], s[j - 1] = s[j - 1], s[j]
            j -= 1
    return s + to_delete


def _normalize_element_order(
    patch: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    is_map: bool,
) -> list[Any]:
    patch = _normalize_slice_order(patch, patch_order, merge_key, is_map)
    server_only = _normalize_slice_order(server_only, server_order, merge_key, is_map)
    return _merge_sorted_slice(server_only, patch, server_order, merge_key, is_map)


def _merge_sorted_slice(
    left: list[Any], right: list[Any], server_order: list[Any], merge_key: str, is_map: bool
) -> list[Any]:
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key, is_map)
            ri = _index(server_order, right[j], merge_key, is_map)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out
