"""The sandbox's files: its temporary directory, the --data file and the identity kept with it."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, identity_dir, serve_sandbox
from tests.sandbox._http import client


async def test_temporary_directory_with_the_server_key_is_removed(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        sb: RunningSandbox = await nursery.start(serve_sandbox, SandboxSettings())
        workdir = sb.kubeconfig.parent  # no kubeconfig_out: it is written beside the key
        assert (workdir / "server.key").exists()
        nursery.cancel_scope.cancel()
    assert not workdir.exists()


async def test_restart_with_data_serves_the_same_ca_and_token(tmp_path: Path) -> None:
    """A client holding the first start's kubeconfig still works after a restart (item 2)."""
    from fleet.kube import Client, load_config

    data = tmp_path / "state.json"
    settings = SandboxSettings(kubeconfig_out=tmp_path / "kc", data_file=data)
    async with trio.open_nursery() as nursery:
        first: RunningSandbox = await nursery.start(serve_sandbox, settings)
        nursery.cancel_scope.cancel()
    old = tmp_path / "old.kubeconfig"
    old.write_bytes(first.kubeconfig.read_bytes())
    async with trio.open_nursery() as nursery:
        second: RunningSandbox = await nursery.start(
            serve_sandbox, replace(settings, port=int(first.url.rsplit(":", 1)[1]))
        )
        assert (second.token, second.ca_pem) == (first.token, first.ca_pem)
        async with Client(load_config(old)) as client:
            assert (await client.get("/api/v1/namespaces/default"))["metadata"]["name"] == "default"
        nursery.cancel_scope.cancel()
    kept = identity_dir(data)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    for name in ("ca.crt", "ca.key", "token"):
        assert stat.S_IMODE((kept / name).stat().st_mode) == 0o600, name


DAMAGED = '{"collec'
WRONG_SHAPE = '{"collections": [{"group": ""}], "resourceVersion": 3}'
NOT_A_NUMBER = (
    '{"resourceVersion": 3, "collections": [{"group": "", "resource": "configmaps", "objects": '
    '[{"metadata": {"name": "a", "namespace": "default", "resourceVersion": "x"}}]}]}'
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (DAMAGED, "cannot load sandbox data (Unterminated string"),
        (WRONG_SHAPE, "Object missing required field `resource` - at `$.collections[0]`"),
        (NOT_A_NUMBER, "resourceVersion 'x' is not a number"),
    ],
)
def test_a_bad_data_file_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    data = tmp_path / "data.json"
    data.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "sandbox", "--port", "0", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kubemock-fleet: error: {data}: "), lines
    assert says in result.stderr
    assert data.read_text() == text  # a file that did not load is not overwritten


async def test_resource_versions_never_go_backwards(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "resourceVersion": 3,
                "collections": [
                    {
                        "group": "",
                        "resource": "configmaps",
                        "objects": [
                            {
                                "apiVersion": "v1",
                                "kind": "ConfigMap",
                                "metadata": {
                                    "name": "old",
                                    "namespace": "default",
                                    "resourceVersion": "50",
                                },
                            }
                        ],
                    }
                ],
            }
        )
    )
    settings = SandboxSettings(tls=False, data_file=data)
    async with trio.open_nursery() as nursery:
        sb: RunningSandbox = await nursery.start(serve_sandbox, settings)
        async with client(sb) as c:
            r = await c.post(
                "/api/v1/namespaces/default/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}},
            )
            assert int(r.json()["metadata"]["resourceVersion"]) > 50
        nursery.cancel_scope.cancel()
