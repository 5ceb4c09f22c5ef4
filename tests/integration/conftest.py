"""Fixtures for the integration tests: the real fleet.kube stack against the real sandbox.

- ``start_sandbox(**settings)``: start a sandbox with some settings changed (bookmark
  interval, history size, plain http) in the test's nursery; returns ``RunningSandbox``.
- ``sb``: a sandbox over TLS (CA and bearer token from its kubeconfig) and one over
  plain http (``tls=False``), as a parametrized fixture.
- ``apiserver``: what most tests run against, parametrized: a sandbox over TLS
  (``sandbox``), one over plain http (``sandbox-plain``), and the session's real
  control plane (``real``, see ``tests/conftest.py``).
- ``config``: ``load_config(apiserver.kubeconfig)``, so the kubeconfig, TLS and credentials
  path is what every test goes through.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.kube import ClusterConfig, load_config
from fleet.realcp import RunningControlPlane
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from tests._apiserver import Apiserver

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


@pytest.fixture(params=["sandbox", "sandbox-plain", pytest.param("real", marks=pytest.mark.real)])
def apiserver_kind(request: pytest.FixtureRequest) -> RunningControlPlane | str:
    if request.param == "real":
        real: RunningControlPlane = request.getfixturevalue("real_control_plane")
        return real
    kind: str = request.param
    return kind


@pytest.fixture
async def apiserver(
    apiserver_kind: RunningControlPlane | str, start_sandbox: StartSandbox
) -> Apiserver:
    if isinstance(apiserver_kind, RunningControlPlane):
        real = apiserver_kind
        return Apiserver("real", real.url, real.kubeconfig, real=real)
    running = await start_sandbox(tls=apiserver_kind == "sandbox")
    return Apiserver("sandbox", running.url, running.kubeconfig, sandbox=running)


@pytest.fixture
def config(apiserver: Apiserver) -> ClusterConfig:
    return load_config(apiserver.kubeconfig)
