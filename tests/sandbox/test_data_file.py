"""The sandbox's files: its temporary directory, the --data file and the identity kept with it.

Issue 16 items 2, 5 and 6.
"""

from __future__ import annotations

from pathlib import Path

import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox


async def test_temporary_directory_with_the_server_key_is_removed(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        sb: RunningSandbox = await nursery.start(serve_sandbox, SandboxSettings())
        workdir = sb.kubeconfig.parent  # no kubeconfig_out: it is written beside the key
        assert (workdir / "server.key").exists()
        nursery.cancel_scope.cancel()
    assert not workdir.exists()
