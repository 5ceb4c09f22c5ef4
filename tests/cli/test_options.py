"""The ``--kubeconfig`` and ``--context`` options every command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer import Typer
from typer.testing import CliRunner

from fleet.cli._options import ContextOption, KubeconfigOption


def test_cli_options_parse_and_document_like_kubectl(tmp_path: Path) -> None:
    app = Typer()
    seen: dict[str, Any] = {}

    @app.command()
    def show(kubeconfig: KubeconfigOption = None, context: ContextOption = None) -> None:
        seen.update(kubeconfig=kubeconfig, context=context)

    runner = CliRunner()
    result = runner.invoke(app, ["--kubeconfig", str(tmp_path / "kc"), "--context", "prod"])
    assert result.exit_code == 0, result.output
    assert seen == {"kubeconfig": tmp_path / "kc", "context": "prod"}
    result = runner.invoke(app, [])
    assert result.exit_code == 0
    assert seen == {"kubeconfig": None, "context": None}
    help_text = runner.invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    assert "Path to the kubeconfig file to use for CLI requests." in help_text
    assert "The name of the kubeconfig context to use" in help_text
