"""Without the real control plane's binaries (a user's fresh clone): its tests are left out
with one line saying why; under ``CI=true`` they fail instead, never pass by skipping.

Each case runs pytest in a child process on one ``real`` test, with
``KUBEMOCK_FLEET_BINARIES`` pointing at an empty directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._apiserver import BINARIES_ENV, REPO

REAL_TEST = "tests/realcp/test_realcp.py::test_users_by_client_certificate_and_rbac"


def _pytest(tmp_path: Path, *args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "no-binaries"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env[BINARIES_ENV] = str(empty)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, REAL_TEST],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("-n", "2"), id="xdist"),  # the workers tell the controller
        pytest.param(("-n", "0"), id="one-process"),
    ],
)
def test_without_binaries_real_tests_are_left_out_with_one_reason(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = _pytest(tmp_path, *args, ci=False)
    reason = (
        f"SKIPPED 1 tests marked real: real control plane: no kube-apiserver in "
        f"{tmp_path / 'no-binaries'} (set {BINARIES_ENV}=DIR, e.g. an envtest KUBEBUILDER_ASSETS)"
    )
    assert reason in result.stdout, result.stdout
    assert result.stdout.count("SKIPPED") == 1
    # Left out, not run (pytest's exit code 5: no tests ran; xdist's controller does not count
    # what its workers deselected, so the summary line differs).
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout
    assert "passed" not in result.stdout and "failed" not in result.stdout


def test_without_binaries_under_ci_real_tests_fail(tmp_path: Path) -> None:
    result = _pytest(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout or "1 failed" in result.stdout, result.stdout
    assert "CI=true needs it" in result.stdout, result.stdout


def test_the_control_planes_ports_are_picked_together_and_distinct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kube-apiserver's port was picked after etcd had been started on one, before etcd
    listened: once it was etcd's own ("bind: address already in use", bench kwok-ci).
    etcd's two ports and kube-apiserver's are picked at once, distinct, none the one the
    user gave."""
    import random

    from fleet.realcp import _serve

    candidates = [31603, 31604, 25000, 25001]
    monkeypatch.setattr(random, "sample", lambda population, k: list(candidates))
    assert _serve._free_ports(3, taken=(31604,)) == [31603, 25000, 25001]
