"""Shared fixtures. pytest-trio runs in trio mode (pyproject), so async tests need no marker.

The sandbox apiserver, two ways:

- ``sandbox`` (async tests): a fresh sandbox on a free port in the test's own
  nursery; yields a :class:`fleet.sandbox.RunningSandbox` (``url``, ``token``,
  ``kubeconfig``, ``app``). It stops when the test ends.
- ``shared_sandbox`` (sync tests, e.g. kubectl in a subprocess): one sandbox per
  session, served by ``trio.run`` in a background thread; yields the same
  ``RunningSandbox``. Tests share it, so each should work in its own namespace.

The real control plane (:mod:`fleet.realcp`: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler), the reference the sandbox is checked
against:

- ``real_control_plane``: ONE per session, started on first use in a background
  thread, with the fleet's CRDs installed; yields a
  :class:`fleet.realcp.RunningControlPlane`. The binaries come from
  ``$KUBEMOCK_FLEET_BINARIES``, else ``../shared/realk8s`` beside the checkout.
  Without them the tests marked ``real`` are left out, with one line saying
  why at the end of the run, except under ``CI=true``, where they fail.
- ``apiserver``: parametrized ``sandbox`` / ``real`` (the latter marked ``real``):
  a fresh sandbox in the test's nursery, or the session's real control plane, as an
  :class:`Apiserver` (kind, url, kubeconfig). Tests on the shared real one must use
  names no other test uses: ``tests._apiserver.unique`` makes them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from fleet.kube import Client, load_config
from fleet.realcp import RealControlPlaneSettings, RunningControlPlane, serve_real_control_plane
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from tests._apiserver import (
    REAL_START_TIMEOUT,
    Apiserver,
    install_fleet_crds,
    missing_real_binaries,
    real_binaries,
    serve_in_thread,
)

_left_out: list[tuple[int, str]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the real control plane's binaries, leave its tests out (not under CI=true)."""
    reason = missing_real_binaries()
    if reason is None or os.environ.get("CI") == "true":
        return
    real = [item for item in items if item.get_closest_marker("real") is not None]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if item.get_closest_marker("real") is None]
        _left_out.append((len(real), reason))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for count, reason in _left_out:
        terminalreporter.write_line(f"SKIPPED {count} tests marked real: {reason}", yellow=True)


@pytest.fixture
async def sandbox(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    settings = SandboxSettings(port=0, kubeconfig_out=tmp_path / "kubeconfig")
    running: RunningSandbox = await nursery.start(serve_sandbox, settings)
    yield running


@pytest.fixture(scope="session")
def real_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningControlPlane]:
    binaries = real_binaries()
    workdir = tmp_path_factory.mktemp("realcp")
    settings = RealControlPlaneSettings(
        binaries=binaries,
        workdir=workdir,
        # A namespace's "default" ServiceAccount appears a moment after the namespace
        # (kube-controller-manager makes it) and this admission plugin refuses pods until
        # then: tests create pods right after their namespace (docs/sandbox.md).
        apiserver_flags=("--disable-admission-plugins=ServiceAccount",),
        # Nor does every namespace get a "kube-root-ca.crt" ConfigMap a moment after it is
        # made: tests list and watch the ConfigMaps of their own namespaces.
        controller_manager_flags=("--controllers=*,-root-ca-cert-publisher",),
    )

    async def prepare(running: RunningControlPlane) -> None:
        async with Client(load_config(running.kubeconfig)) as client:
            await install_fleet_crds(client)

    yield from serve_in_thread(
        "real-control-plane", serve_real_control_plane, settings, REAL_START_TIMEOUT, prepare
    )


@pytest.fixture(params=["sandbox", pytest.param("real", marks=pytest.mark.real)])
def apiserver_kind(request: pytest.FixtureRequest) -> RunningControlPlane | None:
    """The real control plane for the ``real`` parameter (started on first use), else None."""
    if request.param == "real":
        real: RunningControlPlane = request.getfixturevalue("real_control_plane")
        return real
    return None


@pytest.fixture
async def apiserver(
    apiserver_kind: RunningControlPlane | None, nursery: trio.Nursery, tmp_path: Path
) -> Apiserver:
    if apiserver_kind is not None:
        return Apiserver("real", apiserver_kind.url, apiserver_kind.kubeconfig, real=apiserver_kind)
    settings = SandboxSettings(port=0, kubeconfig_out=tmp_path / "kubeconfig")
    running: RunningSandbox = await nursery.start(serve_sandbox, settings)
    return Apiserver("sandbox", running.url, running.kubeconfig, sandbox=running)


@pytest.fixture(scope="session")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    kubeconfig = tmp_path_factory.mktemp("sandbox") / "kubeconfig"
    yield from serve_in_thread(
        "shared-sandbox", serve_sandbox, SandboxSettings(port=0, kubeconfig_out=kubeconfig), 30
    )
