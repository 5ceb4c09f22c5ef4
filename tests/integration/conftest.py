"""Fixtures for the integration tests: the real fleet.kube stack against the real sandbox.

- ``start_sandbox(**settings)``: start a sandbox with some settings changed (bookmark
  interval, history size, plain http) in the test's nursery; returns ``RunningSandbox``.
- ``sb``: a sandbox over TLS (CA and bearer token from its kubeconfig) and one over
  plain http (``tls=False``), as a parametrized fixture.
- ``config``: ``load_config(sb.kubeconfig)``, so the kubeconfig, TLS and token path
  is what every test goes through.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.kube import ClusterConfig, load_config
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox

StartSandbox = Callable[..., Awaitable[RunningSandbox]]

_names = itertools.count()


@pytest.fixture
def start_sandbox(nursery: trio.Nursery, tmp_path: Path) -> StartSandbox:
    async def start(**changes: Any) -> RunningSandbox:
        out = tmp_path / f"kubeconfig-{next(_names)}"
        settings = SandboxSettings(port=0, kubeconfig_out=out, **changes)
        running: RunningSandbox = await nursery.start(serve_sandbox, settings)
        return running

    return start


@pytest.fixture(params=["tls", "plain"])
async def sb(request: pytest.FixtureRequest, start_sandbox: StartSandbox) -> RunningSandbox:
    return await start_sandbox(tls=request.param == "tls")


@pytest.fixture
def config(sb: RunningSandbox) -> ClusterConfig:
    return load_config(sb.kubeconfig)
