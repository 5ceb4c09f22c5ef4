"""Every command fails with one line on stderr (exit 1), the traceback only with --debug.

Nurseries wrap a FleetError in (nested) ExceptionGroups; the CLI's
boundary (:func:`fleet.cli._app.main`) unwraps them to the one meaningful error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from fleet.errors import ConfigError, ConnectError, one_error

UNREACHABLE = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBEMOCK_FLEET_DEBUG")}
    env["HOME"] = str(cwd)  # no ~/.kube/config
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str], *, contains: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kubemock-fleet: error: ") and contains in lines[0], lines


def test_run_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    _one_line(
        _cli("run", "--kubeconfig", str(tmp_path / "nope"), cwd=tmp_path),
        contains="kubeconfig file does not exist",
    )


def test_run_broken_kubeconfig_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("a: [")
    _one_line(_cli("run", "--kubeconfig", str(broken), cwd=tmp_path), contains="YAML syntax")


def test_run_missing_context_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kc"
    config.write_text(UNREACHABLE)
    _one_line(
        _cli("run", "--kubeconfig", str(config), "--context", "nope", cwd=tmp_path),
        contains="context 'nope' not found",
    )


def test_run_no_shards_no_kubeconfig_is_one_line(tmp_path: Path) -> None:
    _one_line(_cli("run", "--shards", "0", cwd=tmp_path), contains="no kubeconfig found")


def test_bench_against_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kc"
    config.write_text(UNREACHABLE)
    result = _cli(
        "bench",
        "node-density",
        "--no-progress",
        "--no-plots",
        "--kubeconfig",
        str(config),
        "--output",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    _one_line(result, contains="cannot connect")


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    result = _cli("--debug", "run", "--kubeconfig", str(tmp_path / "nope"), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("kubemock-fleet: error: ")


def test_one_error_unwraps_nested_groups_and_cancellations() -> None:
    inner = ConfigError("bad")
    group = BaseExceptionGroup(
        "outer",
        [ExceptionGroup("inner", [inner]), trio.Cancelled._create()],
    )
    assert one_error(group) is inner
    assert one_error(ConnectError("x")) is not None


@pytest.mark.parametrize(
    "exc",
    [
        ExceptionGroup("bug", [ConfigError("bad"), ValueError("bug")]),
        ValueError("bug"),
        SystemExit(0),
    ],
)
def test_one_error_keeps_bugs_visible(exc: BaseException) -> None:
    assert one_error(exc) is None
