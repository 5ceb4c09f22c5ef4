"""``crdgen crd``: YAML on stdout or in a file written atomically, and the deploy/ golden file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crdgen import cli
from crdgen._crd import render_crds
from fleet.api import crd_manifests

GOLDEN = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "mock.zhizuqiu.cn.yaml"

runner = CliRunner()


def test_deploy_crds_are_the_generated_output() -> None:
    assert GOLDEN.read_text(encoding="utf-8") == render_crds(), (
        "deploy/crds drifted from the models: run `crdgen crd -o deploy/crds/mock.zhizuqiu.cn.yaml`"
    )


def test_rendered_yaml_is_the_manifests() -> None:
    docs = list(yaml.safe_load_all(render_crds()))
    assert docs == crd_manifests()
    assert [d["metadata"]["name"] for d in docs] == [
        "nodes.mock.zhizuqiu.cn",
        "mockstatuses.mock.zhizuqiu.cn",
        "nodescripts.mock.zhizuqiu.cn",
    ]


def test_crd_to_stdout() -> None:
    result = runner.invoke(cli.app, ["crd"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_crds()


def test_crd_dash_is_stdout() -> None:
    result = runner.invoke(cli.app, ["crd", "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout == render_crds()


def test_crd_to_file(tmp_path: Path) -> None:
    target = tmp_path / "crds.yaml"
    result = runner.invoke(cli.app, ["crd", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8") == render_crds()
    assert os.listdir(tmp_path) == ["crds.yaml"]


def test_crd_replaces_an_existing_file_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "crds.yaml"
    target.write_text("old\n")
    target.chmod(0o640)
    assert runner.invoke(cli.app, ["crd", "-o", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == render_crds()
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("where", ["missing-dir", "under-a-file", "a-directory"])
def test_unwritable_output_is_one_line_and_nothing_written(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    target = {
        "missing-dir": tmp_path / "nope" / "crds.yaml",
        "under-a-file": tmp_path / "file" / "crds.yaml",
        "a-directory": tmp_path / "dir",
    }[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = runner.invoke(cli.app, ["crd", "-o", str(target)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"crdgen: error: cannot write {target}: ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_failed_rename_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "crds.yaml"
    target.write_text("old\n")

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    result = runner.invoke(cli.app, ["crd", "-o", str(target)])
    assert result.exit_code == 1
    assert result.stderr == f"crdgen: error: cannot write {target}: Permission denied\n"
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["crds.yaml"]


def test_console_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["crdgen", "crd", "-o", str(tmp_path / "x" / "y.yaml")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("crdgen: error: cannot write ")


def test_help_lists_crd() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    assert "crd" in result.stdout
