"""The root typer app and the error boundary every command runs behind.

:func:`main` is that boundary: a :class:`~fleet.errors.FleetError` — raised
directly, or the one meaningful error inside the (nested) ``ExceptionGroup``
a trio nursery wraps it in — is printed as one line on stderr with exit code
1. The traceback is printed only with ``--debug`` (or ``KUBEMOCK_FLEET_DEBUG=1``),
or when the root logger is set to DEBUG. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import typer

from fleet import __version__
from fleet.errors import one_error

__all__ = ["DEBUG_ENV", "app", "main"]

DEBUG_ENV = "KUBEMOCK_FLEET_DEBUG"
"""Environment variable that turns on ``--debug`` (so child processes inherit it)."""

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
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar=DEBUG_ENV,
        help="Print the full traceback of an error, not just its one line.",
    ),
) -> None:
    """kubemock-fleet: fake kubelets at scale, driven by Node custom resources."""
    if debug:
        os.environ[DEBUG_ENV] = "1"  # shard children started by `run` inherit it


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in (
        "",
        "0",
        "false",
    ) or logging.getLogger().isEnabledFor(logging.DEBUG)


def main() -> None:
    """Console entry point: one clear line per fault, never a traceback for a FleetError."""
    try:
        app()
    except BaseException as exc:  # the boundary: one line, or re-raise
        error = one_error(exc)
        if error is None:
            raise
        if _debugging():
            traceback.print_exception(exc)
        print(f"kubemock-fleet: error: {error}", file=sys.stderr)
        sys.exit(1)
