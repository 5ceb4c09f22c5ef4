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
  thread, with the fleet's CRDs installed (with ``pytest -n 2``, two pytest-xdist workers,
  each a session of its own, every test that may use it goes to one worker,
  :data:`REAL_GROUP`, and ``tests/test_real_group.py`` checks that none is missed); yields a
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
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
LEFT_OUT_KEY = "real_left_out"
"""Where a pytest-xdist worker tells the controller (``workeroutput``) which tests it left out."""
REAL_GROUP = "real-control-plane"
"""The tests that may use the session's ``real_control_plane``, which one pytest-xdist worker
runs, one after another, on one control plane (:func:`pytest_xdist_make_scheduler`): they
share its cluster-scoped names (the fleet's shard and leader Leases), so they must not run at
once; and one start, not one a worker, is what 2 cores can afford."""
SESSION_REAL_TESTS = (
    "tests/bench/test_chaos.py::test_restart_storm_on_the_real_control_plane_restarts_watches_and_reads_memory",
    "tests/bench/test_runner_real.py::test_a_step_recounts_what_its_watch_missed_on_the_real_control_plane",
    "tests/cli/test_deploy_real.py::test_deploy_keeps_the_fleet_off_its_own_nodes_on_a_real_scheduler",
    "tests/metricsapi/test_serve.py::test_the_real_clusters_published_names",
    "tests/realcp/test_realcp.py::test_users_by_client_certificate_and_rbac",
    "tests/sandbox/test_openapi.py::test_protobuf_writer_matches_kube_apiserver",
    "tests/shards/test_kubelet_real.py::test_a_kubelet_on_the_real_control_plane",
    "tests/shards/test_kubelet_real.py::test_a_restarted_shard_gives_no_new_node_an_address_in_use",
)
"""The tests that take ``real_control_plane`` as an argument. The others on it are
parametrized ``real`` (their ids: ``[real]``, ``[hot-real]``, ``[real-client]``). The
controller sees only test ids, never fixtures: ``tests/test_real_group.py`` checks that every
test on the session's control plane is in :data:`REAL_GROUP`."""
_REAL_PARAM = re.compile(r"\[(?:[^\]]*-)?real(?:-[^\]]*)?\]$")
_SESSION_REAL_PARAMS = ("apiserver_kind", "shared_apiserver")
"""Fixtures whose ``real`` parameter asks for ``real_control_plane`` through ``getfixturevalue``
(tests/conftest.py, tests/integration/): not in an item's fixture names."""


def in_real_group(nodeid: str) -> bool:
    """Whether pytest-xdist sends the test ``nodeid`` to the worker of :data:`REAL_GROUP`."""
    return nodeid.startswith(SESSION_REAL_TESTS) or _REAL_PARAM.search(nodeid) is not None


def on_the_session_real_control_plane(item: pytest.Item) -> bool:
    """Whether ``item`` may use the session's ``real_control_plane`` (by its fixtures)."""
    if item.get_closest_marker("real") is None:
        return False
    if "real_control_plane" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return any(params.get(name) == "real" for name in _SESSION_REAL_PARAMS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the real control plane's binaries, leave its tests out (not under CI=true)."""
    reason = missing_real_binaries()
    if reason is None or os.environ.get("CI") == "true":
        if hasattr(config, "workerinput"):
            # An xdist worker: the tests marked real first (the group, then the end-to-end
            # ones with a control plane of their own, up to two minutes each), so that no
            # long test starts last while the other worker has nothing left to do.
            items.sort(key=lambda item: item.get_closest_marker("real") is None)
        return
    real = [item for item in items if item.get_closest_marker("real") is not None]
    if real:
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if item.get_closest_marker("real") is None]
        _left_out.append((len(real), reason))
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[LEFT_OUT_KEY] = [len(real), reason]


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own, for --dist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's controller: each test to whichever worker is free (as ``--dist load``),
    except :data:`REAL_GROUP`, all to one worker. (``--dist loadgroup`` with an
    ``xdist_group`` mark would say the same, but pytest-xdist 3.8 tags the group onto
    ``item._nodeid``, which pytest 9.2 no longer reads: the mark is lost.)"""
    from xdist.scheduler import LoadScopeScheduling

    class RealGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return REAL_GROUP if in_real_group(nodeid) else nodeid

    return RealGroupScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: what a worker left out (each collects the same tests, so the
    first worker's count is the run's)."""
    got = getattr(node, "workeroutput", {}).get(LEFT_OUT_KEY)
    if got and not _left_out:
        _left_out.append((int(got[0]), str(got[1])))


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
