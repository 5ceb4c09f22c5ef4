"""``kubemock-fleet config show``: print the effective configuration.

Merges the same sources every fleet process reads (``--config`` file,
``KUBEMOCK_FLEET_*`` environment, defaults) and prints the result in the
file's own format, so its output is a valid ``--config`` file. Paths are
printed as given; the settings hold no secrets (credentials stay in the
kubeconfig).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from fleet._settings import load_settings, render_settings
from fleet.cli._app import app

config_app = typer.Typer(
    name="config", help="Inspect the fleet's configuration.", no_args_is_help=True
)
app.add_typer(config_app)


class OutputFormat(StrEnum):
    yaml = "yaml"
    json = "json"


@config_app.command("show")
def show(
    config: Path | None = typer.Option(
        None, "--config", dir_okay=False, help="YAML settings file to merge."
    ),
    output: OutputFormat = typer.Option(OutputFormat.yaml, "-o", "--output", help="yaml or json."),
) -> None:
    """Print the effective configuration: flags > environment > --config file > defaults."""
    settings = load_settings(config_file=config)
    typer.echo(render_settings(settings, output.value), nl=False)
