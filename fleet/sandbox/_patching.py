"""PATCH bodies: JSON Patch, JSON merge patch, strategic merge patch, apply patch.

Pure functions from (current object, body, content type) to the patched
object, with the apiserver's errors for malformed bodies and failed
operations. Strategic merge patch comes from ``_smp`` (built-in kinds only:
custom resources answer 415 as the real apiserver does).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import msgspec
import yaml

from fleet.errors import InputError
from fleet.machinery import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from fleet.sandbox import _libs
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._status import StatusError, bad_request, unsupported_media

PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

_decoder = msgspec.json.Decoder()


def _decode(body: bytes) -> Any:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from exc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _rejected() -> StatusError:
    return StatusError(
        422, "Invalid", "the server rejected our request due to an error in our request", {}
    )


def apply_patch(
    rt: ResourceType, current: dict[str, Any], body: bytes, content_type: str
) -> dict[str, Any]:
    """The object after the patch; raises :class:`StatusError` as the apiserver answers.

    ``current`` is consumed: callers pass a fresh clone of the stored object, which
    the patch may change in place.
    """
    if content_type not in PATCH_TYPES or (content_type == STRATEGIC_MERGE_PATCH and rt.is_custom):
        if rt.is_custom and content_type == STRATEGIC_MERGE_PATCH:
            raise unsupported_media(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            )
        raise unsupported_media(details={})
    if content_type == JSON_PATCH:
        try:
            ops = _decode(body)
        except ValueError:
            raise bad_request("unexpected end of JSON input") from None
        if not isinstance(ops, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = jsonpatch.JsonPatch(ops).apply(current)
        except (
            jsonpatch.JsonPatchException,
            jsonpatch.JsonPointerException,
            KeyError,
            IndexError,
            TypeError,
        ):
            raise _rejected() from None
        if not isinstance(result, dict):
            raise _rejected()
        return result
    if content_type == MERGE_PATCH:
        try:
            patch = _decode(body)
        except ValueError:
            raise bad_request("Invalid JSON Patch") from None
        if not isinstance(patch, dict):
            raise bad_request("Invalid JSON Patch")
        merged: dict[str, Any] = merge_patch(current, patch)
        return merged
    if content_type == STRATEGIC_MERGE_PATCH:
        try:
            patch = _decode(body)
        except ValueError:
            raise bad_request("unexpected end of JSON input") from None
        if not isinstance(patch, dict):
            raise bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        try:
            return _libs.strategic_merge_patch(current, patch, rt.kind, copy=False)
        except InputError as exc:
            raise bad_request(str(exc)) from exc
    # Server-side apply, simplified: the applied configuration is merged into the live
    # object (strategic for built-ins, merge for custom resources); no field ownership.
    try:
        applied = yaml.safe_load(body.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from exc
    if not isinstance(applied, dict):
        raise bad_request("error decoding YAML: the applied configuration is not an object")
    if rt.is_custom:
        applied_merged: dict[str, Any] = merge_patch(current, applied)
        return applied_merged
    try:
        return _libs.strategic_merge_patch(current, applied, rt.kind)
    except InputError as exc:
        raise bad_request(str(exc)) from exc
