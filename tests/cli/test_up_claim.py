"""Two `up` in one directory: the second never overwrites a live one's kubeconfig."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from fleet.cli._up import DEFAULT_KUBECONFIG, kubeconfig_for
from fleet.errors import ConfigError
from fleet.up import claim_kubeconfig, lock_path
from tests._up_process import up_process


def test_a_claimed_kubeconfig_is_refused_until_released(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubemock-fleet.kubeconfig"
    with claim_kubeconfig(kubeconfig):
        assert lock_path(kubeconfig).read_text().strip().isdigit()
        with pytest.raises(
            ConfigError, match=r"in use by a running `kubemock-fleet up` \(pid \d+\)"
        ):
            with claim_kubeconfig(kubeconfig):
                pass
    assert not lock_path(kubeconfig).exists()
    with claim_kubeconfig(kubeconfig):  # released: free again
        pass


def test_a_lock_file_left_by_a_dead_up_does_not_block(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    lock_path(kubeconfig).write_text("999999\n")  # the file is there, nobody holds the lock
    with claim_kubeconfig(kubeconfig):
        pass


def test_names_give_each_cluster_its_kubeconfig() -> None:
    assert kubeconfig_for(None) == DEFAULT_KUBECONFIG
    assert kubeconfig_for("b") == Path("kubemock-fleet-b.kubeconfig")
    with pytest.raises(typer.BadParameter):
        kubeconfig_for("../x")


def test_second_up_on_a_live_kubeconfig_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    with up_process(tmp_path, "--shards", "0") as first:
        before = first.kubeconfig.read_bytes()
        second = subprocess.run(
            [sys.executable, "-m", "fleet", "up", "--port", "0", "--shards", "0",
             "--kubeconfig-out", str(first.kubeconfig)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by a running `kubemock-fleet up`" in lines[0], lines
        assert f"(pid {first.process.pid})" in lines[0]
        assert first.kubeconfig.read_bytes() == before
