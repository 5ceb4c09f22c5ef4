"""The root typer app and the error boundary every command runs behind."""

from __future__ import annotations

import sys

import typer

from fleet import __version__
from fleet.errors import FleetError

app = typer.Typer(
    name="kubemock-fleet",
    help="Make an apiserver believe thousands of kubelets exist, and measure what it costs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click output: a usage error is a "Usage:" line and one "Error:" line, not a panel.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kubemock-fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kubemock-fleet: fake kubelets at scale, driven by Node custom resources."""


def main() -> None:
    """Console entry point: one clear line per fault, never a traceback for a FleetError."""
    try:
        app()
    except FleetError as exc:
        print(f"kubemock-fleet: error: {exc}", file=sys.stderr)
        sys.exit(1)
