"""`kubemock-fleet config show`, and the commands registered on the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fleet.cli import app


def test_config_show_yaml_merges_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text("shard:\n  writers: 4\n")
    result = CliRunner().invoke(
        app, ["config", "show", "--config", str(config)], env={"KUBEMOCK_FLEET_SHARDS": "3"}
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["shards"] == 3 and shown["shard"]["writers"] == 4
    assert shown["shard"]["nodeLeaseDuration"] == "40s"


def test_config_show_json() -> None:
    result = CliRunner().invoke(app, ["config", "show", "-o", "json"], env={})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["namespace"] == "kube-mock-system"


def test_config_show_bad_file_is_a_config_error(tmp_path: Path) -> None:
    from fleet.errors import ConfigError

    config = tmp_path / "config.yaml"
    config.write_text("shard:\n  nodeLeaseRenewInterval: ten\n")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(config)])
    assert isinstance(result.exception, ConfigError)
    assert (
        str(result.exception) == f'{config}: shard.nodeLeaseRenewInterval: invalid duration "ten"'
    )


@pytest.mark.parametrize("command", ["run", "coordinator", "config"])
def test_commands_are_registered(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
