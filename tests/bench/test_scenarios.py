"""Scenarios: the built-in ones, YAML files users write, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import BUILTIN, load_scenario
from fleet.errors import ConfigError


def test_builtins_load_with_overrides() -> None:
    assert set(BUILTIN) == {
        "node-density",
        "pod-startup",
        "churn",
        "heartbeat-soak",
        "kwok-ci",
        "daemonset",
        "faults",
        "restart-storm",
        "node-flap",
        "partition",
        "pod-churn",
    }
    faults = load_scenario("faults", {"nodes": 5000})
    assert (faults.nodes, faults.pods, faults.outage, faults.malformed) == (5000, 5000, 8.0, 100)
    kwok = load_scenario("kwok-ci")
    assert (kwok.nodes, kwok.pods, kwok.type) == (5000, 10000, "kwok-ci")
    small = load_scenario("pod-startup", {"nodes": 3, "pods": None})
    assert (small.nodes, small.pods) == (3, 100)


def test_yaml_file_with_go_durations(tmp_path: Path) -> None:
    path = tmp_path / "soak.yaml"
    path.write_text(
        "type: heartbeat-soak\nnodes: 50\nduration: 1m30s\ntimeout: 2m\n"
        "nodeConfig: {cpu: '8'}\npodAnnotations: {zhizuqiu.github.com/delayRunning: 2s}\n"
        "slo: {podStartupP99: 10s}\n"
    )
    spec = load_scenario(str(path))
    assert (spec.name, spec.nodes, spec.duration, spec.timeout) == ("soak", 50, 90.0, 120.0)
    assert spec.node_config == {"cpu": "8"}
    assert spec.slo.pod_startup_p99 == 10.0
    assert spec.parameters()["podAnnotations"] == {"zhizuqiu.github.com/delayRunning": "2s"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type: pod-startup\npods: 10\nnodez: 3\n", "nodez"),
        ("type: warp-drive\n", "type: must be one of"),
        ("type: pod-startup\npods: 0\n", "needs pods >= 1"),
        ("type: pod-churn\npods: 0\n", "needs pods >= 1"),
        ("type: node-flap\ndown: 2m\nperiod: 1m\n", "needs down < period"),
        ("type: partition\nfraction: 1.5\n", "fraction"),
        ("type: churn\nduration: soon\n", "duration"),
        ("- not a mapping\n", "a scenario is a mapping"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_scenario(str(path))


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'warp'"):
        load_scenario("warp")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nodes": 1}, "nodes >= 2"),
        ({"workload": "deployment"}, "workload must be pods"),
        ({"outage": "10m"}, r"outage < timeout \(600 s\)"),
    ],
)
def test_faults_scenario_limits(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_scenario("faults", overrides)
