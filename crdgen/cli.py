"""The ``crdgen`` command line: a typer app with one subcommand per job.

``crdgen crd`` writes the CRD manifests; ``crdgen clone`` (Node CRs from a real
cluster's nodes) is :func:`crdgen._clone.clone_command`, registered here. Every
command fails with one line on stderr and exit code 1 for a
:class:`~fleet.errors.FleetError`, never a traceback. Top layer: nothing
imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from fleet.errors import FleetError, one_error

from ._clone import clone_command
from ._crd import render_crds
from ._output import write_output

__all__ = ["app", "main"]

app = typer.Typer(
    name="crdgen",
    help="Clone a cluster's nodes into Node CRs, and write the CRD manifests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click output: a usage error is a "Usage:" line and one "Error:" line, not a panel.
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """crdgen: Node CRs and CRD manifests for kubemock-fleet."""


def fail(exc: FleetError) -> typer.Exit:
    """Print one line for ``exc`` on stderr; return the Exit(1) to raise."""
    typer.echo(f"crdgen: error: {exc}", err=True)
    return typer.Exit(1)


@app.command("crd")
def crd(
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Write to FILE (atomically) instead of stdout; '-' is stdout.",
        metavar="FILE",
    ),
) -> None:
    """Write the CustomResourceDefinitions (nodes, mockstatuses) as multi-document YAML."""
    try:
        write_output(render_crds(), output)
    except FleetError as exc:
        raise fail(exc) from exc


app.command("clone")(clone_command)


def main() -> None:
    """Console entry point (``crdgen = "crdgen.cli:main"``)."""
    try:
        app()
    except BaseException as exc:  # the boundary: one line, or re-raise
        error = one_error(exc)  # also inside the ExceptionGroups of trio nurseries
        if error is None:
            raise
        print(f"crdgen: error: {error}", file=sys.stderr)
        sys.exit(1)
