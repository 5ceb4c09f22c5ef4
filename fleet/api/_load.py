"""Turn a raw custom resource (a decoded dict) into its model, or one clear InputError.

The shard, the coordinator and crdgen read CRs from the apiserver or from YAML
files; a bad one must give a message that names the object and the field,
``Node kube-mock-system/a: spec.nodeConfig.cpu: invalid quantity "abc": ...``,
never a pydantic dump. pydantic's ValidationError is mapped here, at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fleet.errors import InputError

from ._mockstatus import MockStatus
from ._node import MockNode
from ._nodescript import NodeScript

__all__ = ["load_mock_status", "load_node"]

M = TypeVar("M", bound=BaseModel)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in part or "/" in part:
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "required"
    if error["type"] == "value_error":
        ctx = error.get("ctx") or {}
        if "error" in ctx:
            return str(ctx["error"])
    return str(error["msg"])


def _object_name(kind: str, raw: Mapping[str, Any]) -> str:
    meta = raw.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        return f"{kind} <unnamed>"
    ns = meta.get("namespace")
    return f"{kind} {ns}/{meta['name']}" if ns else f"{kind} {meta['name']}"


def _load(model: type[M], kind: str, raw: object) -> M:
    if not isinstance(raw, Mapping):
        raise InputError(f"{kind}: expected an object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        faults = []
        for error in exc.errors():
            where = _path(tuple(error["loc"]))
            faults.append(f"{where}: {_message(error)}" if where else _message(error))
        raise InputError(f"{_object_name(kind, raw)}: {'; '.join(faults)}") from exc


def load_node(raw: object) -> MockNode:
    """Validate a raw Node CR; :class:`InputError` names the CR and each bad field's path."""
    return _load(MockNode, "Node", raw)


def load_mock_status(raw: object) -> MockStatus:
    """Validate a raw MockStatus CR; :class:`InputError` names the CR and each bad field's path."""
    return _load(MockStatus, "MockStatus", raw)


def load_node_script(raw: object) -> NodeScript:
    """Validate a raw NodeScript CR; :class:`InputError` names the CR and each bad field's path."""
    return _load(NodeScript, "NodeScript", raw)
