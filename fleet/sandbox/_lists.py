"""LIST: resourceVersion and resourceVersionMatch semantics, limit/continue paging, selectors.

Follows the apiserver's documented rules: ``resourceVersion`` unset is the most
recent state (paged with ``limit``); ``0`` is "any" (served whole, limit
ignored, as the watch cache does); ``N`` is "not older than N" (a future N
waits, then 504); ``resourceVersionMatch=Exact`` is the state at N, rebuilt
from the history (410 once N has left it). A continue token pins the
resourceVersion of the first page, so pages are consistent; it expires with
the history.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import trio

from fleet.sandbox._api import Api, Call
from fleet.sandbox._fields import Filter
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._status import StatusError, bad_request, gone

CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)


def parse_rv(value: str) -> int:
    """A resourceVersion query value; the apiserver's 500 for one that is not a number."""
    try:
        n = int(value)
        if n < 0:
            raise ValueError(value)
        return n
    except ValueError:
        raise StatusError(
            500,
            None,
            f'resourceVersion: Invalid value: "{value}": strconv.ParseUint: parsing "{value}": invalid syntax',
        ) from None


def _list_options_invalid(message: str, field_name: str) -> StatusError:
    c = {"reason": "FieldValueForbidden", "message": f"Forbidden: {message}", "field": field_name}
    return StatusError(
        422,
        "Invalid",
        f'ListOptions.meta.k8s.io "" is invalid: {field_name}: Forbidden: {message}',
        {"group": "meta.k8s.io", "kind": "ListOptions", "causes": [c]},
    )


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=False)
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        bad = raw[:1] if "raw" in locals() and raw else b"?"
        raise bad_request(
            "invalid continue token: continue key is not valid: "
            f"invalid character {bad.decode('latin-1')!r} looking for beginning of value"
        ) from None


def sort_key(rt: ResourceType, obj: dict[str, Any], all_namespaces: bool) -> str:
    meta = obj["metadata"]
    if rt.namespaced and all_namespaces:
        return f"{meta.get('namespace', '')}/{meta['name']}"
    return str(meta["name"])


def list_item(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A list entry: built-in lists leave out each item's kind and apiVersion."""
    if rt.is_custom:
        return obj
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


async def list_objects(api: Api, call: Call) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The selected objects and the ListMeta to send with them."""
    rt, q = call.rt, call.query
    flt = Filter(rt, q.get("labelSelector", ""), q.get("fieldSelector", ""))
    rv_s = q.get("resourceVersion", "")
    match = q.get("resourceVersionMatch", "")
    token = q.get("continue", "")
    limit = 0
    if q.get("limit"):
        try:
            limit = max(0, int(q["limit"]))
        except ValueError:
            raise bad_request(f'strconv.ParseInt: parsing "{q["limit"]}": invalid syntax') from None
    limit = min(limit, api.settings.max_list_limit)
    if match and not rv_s:
        raise _list_options_invalid(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
            "resourceVersionMatch",
        )
    if token and rv_s and rv_s != "0":
        raise _list_options_invalid(
            "specifying resource version is not allowed when using continue", "resourceVersion"
        )
    if match not in ("", "Exact", "NotOlderThan"):
        raise _list_options_invalid(
            f'"{match}" is not a valid resourceVersionMatch', "resourceVersionMatch"
        )
    coll = api.store.collection(rt.key)
    start = ""
    if token:
        at, start = decode_continue(token)
        if at < coll.window_start:
            raise gone(CONTINUE_EXPIRED)
        state = coll.snapshot(at)
    elif rv_s and rv_s != "0":
        want = parse_rv(rv_s)
        if match == "Exact" and want == 0:
            raise _list_options_invalid(
                'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                "resourceVersionMatch",
            )
        if want > api.store.rv:
            with trio.move_on_after(api.settings.too_large_rv_wait):
                await api.store.wait_for_rv(want)
            if want > api.store.rv:
                raise StatusError(
                    504,
                    "Timeout",
                    f"Timeout: Too large resource version: {want}, current: {api.store.rv}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                    headers=[("retry-after", "1")],
                )
        if match == "Exact":
            if want < coll.window_start:
                raise gone("The resourceVersion for the provided list is too old.")
            at, state = want, coll.snapshot(want)
        else:
            at, state = api.store.rv, coll.objects  # nothing awaited below: no copy
    else:
        at, state = api.store.rv, coll.objects
        if rv_s == "0":
            limit = 0  # served from the watch cache: the limit is ignored
    all_ns = call.namespace is None
    wanted = None if coll.index_field is None else flt.equals(coll.index_field)
    if wanted is not None and state is coll.objects:
        # The index's candidates only (a kubelet's list of its pods); the filter below
        # still applies every term. A snapshot (paging, Exact) is scanned whole.
        candidates = coll.indexed(wanted)
    else:
        candidates = list(state.values())
    objs = [
        o for o in candidates if all_ns or (o["metadata"].get("namespace") or "") == call.namespace
    ]
    keyed = sorted(((sort_key(rt, o, all_ns), o) for o in objs), key=lambda p: p[0])
    if start:
        keyed = [p for p in keyed if p[0] >= start]
    selected = [(k, o) for k, o in keyed if flt(o)]
    meta: dict[str, Any] = {"resourceVersion": str(at)}
    if limit and len(selected) > limit:
        page = selected[:limit]
        last = page[-1][0]
        meta["continue"] = encode_continue(at, last + "\x00")
        if flt.empty:
            meta["remainingItemCount"] = len(selected) - limit
        selected = page
    return [o for _k, o in selected], meta


def list_body(
    rt: ResourceType, items: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "kind": rt.list_kind,
        "apiVersion": rt.api_version,
        "metadata": meta,
        "items": [list_item(rt, o) for o in items],
    }
