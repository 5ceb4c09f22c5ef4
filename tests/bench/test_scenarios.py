"""Scenarios: the built-in ones, YAML files users write, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import BUILTIN, ScenarioSpec, load_scenario
from fleet.errors import ConfigError, InputError


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


def _bench_spec(monkeypatch: pytest.MonkeyPatch, *args: str) -> ScenarioSpec:
    """What ``kubemock-fleet bench ARGS`` would run (the run itself left out)."""
    from typer.testing import CliRunner

    from fleet.cli import _bench, app

    ran: list[ScenarioSpec] = []

    class _Report:
        completed = slo_passed = True

    def run(spec: ScenarioSpec, **_: object) -> _Report:
        ran.append(spec)
        return _Report()

    monkeypatch.setattr(_bench, "_run_scenario", run)
    result = CliRunner().invoke(app, ["bench", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return ran[0]


def test_outage_is_a_bench_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--outage`` as the YAML's ``outage``: a Go duration or seconds; it wins over a file."""
    assert _bench_spec(monkeypatch, "faults", "--outage", "2.5").outage == 2.5
    assert _bench_spec(monkeypatch, "faults", "--outage", "1m").outage == 60.0
    path = tmp_path / "mine.yaml"
    path.write_text("type: faults\nnodes: 10\noutage: 3s\n")
    assert _bench_spec(monkeypatch, str(path), "--outage", "4s").outage == 4.0
    assert _bench_spec(monkeypatch, "faults").outage == 8.0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (
            ["faults", "--outage", "0"],
            ConfigError,
            "scenario faults: --outage 0.0: .*greater than 0",
        ),
        (["faults", "--outage", "ten"], ConfigError, '--outage ten: invalid duration "ten"'),
        (["faults", "--outage", "-3s"], ConfigError, "--outage -3s: "),
        (["faults", "--outage", "20m"], ConfigError, "outage < timeout"),
        (["node-density", "--outage", "3s"], InputError, "only the faults scenario has outages"),
    ],
)
def test_a_bad_outage_is_one_line_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch, args: list[str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        _bench_spec(monkeypatch, *args)
    assert "\n" not in str(caught.value)
