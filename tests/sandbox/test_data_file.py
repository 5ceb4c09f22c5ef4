"""The sandbox's files: its temporary directory, the --data file and the identity kept with it.

Issue 16 items 2, 5 and 6.
"""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, identity_dir, serve_sandbox


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
