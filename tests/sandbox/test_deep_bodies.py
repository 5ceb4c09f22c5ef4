"""A body nested 10,000 deep is a 400, never a 500 with a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from fleet.sandbox._asgi import MAX_BODY_DEPTH, too_deep
from tests.sandbox._http import client

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def _nested(depth: int) -> str:
    return "[" * (depth - 2) + "]" * (depth - 2)  # inside {"data": ...}: depth in all


def _object(depth: int, name: str = "deep") -> str:
    head = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"' + name + '"},"data":'
    return head + _nested(depth) + "}"


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body"),
    [
        ("POST", CONFIGMAPS, "application/json", _object(10_000)),
        ("PUT", f"{CONFIGMAPS}/x", "application/json", _object(10_000, "x")),
        ("PATCH", f"{CONFIGMAPS}/x", "application/merge-patch+json", _object(10_000)),
        ("PATCH", f"{CONFIGMAPS}/x", "application/strategic-merge-patch+json", _object(10_000)),
        (
            "PATCH",
            f"{CONFIGMAPS}/x",
            "application/json-patch+json",
            '[{"op":"add","path":"/data","value":' + _nested(10_000) + "}]",
        ),
        ("PATCH", f"{CONFIGMAPS}/x", "application/apply-patch+yaml", _object(10_000, "x")),
        (
            "POST",
            CONFIGMAPS,
            "application/yaml",
            "data:\n" + "".join(" " * i + "- \n" for i in range(1, 1200)),
        ),
    ],
)
async def test_deep_bodies_are_400_without_a_traceback(
    sandbox: RunningSandbox,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    content_type: str,
    body: str,
) -> None:
    async with client(sandbox) as c:
        await c.post(
            CONFIGMAPS, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
        )
        with caplog.at_level(logging.ERROR):
            r = await c.request(
                method,
                path,
                content=body,
                headers={"content-type": content_type},
                params={"fieldManager": "t"} if "apply" in content_type else None,
            )
    assert r.status_code == 400, r.text
    assert r.json()["reason"] == "BadRequest"
    assert "nested" in r.json()["message"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


async def test_depth_up_to_the_limit_is_served_and_saved(tmp_path: Path) -> None:
    settings = SandboxSettings(tls=False, data_file=tmp_path / "data.json")
    async with trio.open_nursery() as nursery:
        sb: RunningSandbox = await nursery.start(serve_sandbox, settings)
        async with client(sb) as c:
            r = await c.post(CONFIGMAPS, content=_object(MAX_BODY_DEPTH))
            assert r.status_code != 500, r.text
            r = await c.patch(
                f"{CONFIGMAPS}/deep",
                content=_object(MAX_BODY_DEPTH),
                headers={"content-type": "application/merge-patch+json"},
            )
            assert r.status_code != 500, r.text
        nursery.cancel_scope.cancel()
    assert (tmp_path / "data.json").exists()


def test_too_deep_ignores_brackets_in_strings() -> None:
    assert not too_deep(b'{"a": "' + b"[" * 500 + b'"}', 10)
    assert too_deep(b"[" * 11 + b"]" * 11, 10)
    assert not too_deep(b"[" * 10 + b"]" * 10, 10)
    assert not too_deep(b"[]" * 500, 10)
