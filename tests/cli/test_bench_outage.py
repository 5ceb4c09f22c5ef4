"""``kubemock-fleet bench --outage``: the faults scenario's outage from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ScenarioSpec
from fleet.errors import ConfigError, InputError


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
