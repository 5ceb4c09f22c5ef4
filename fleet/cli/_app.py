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

import trio
import typer

from fleet import __version__
from fleet.errors import FleetError

__all__ = ["DEBUG_ENV", "app", "main", "one_error"]

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


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def one_error(exc: BaseException) -> FleetError | None:
    """The one meaningful :class:`FleetError` behind ``exc``, or None when there is none.

    ``exc`` itself when it is one; inside (nested) exception groups, the first
    FleetError when every other leaf is a FleetError too or a cancellation the
    failure caused (sibling tasks cancelled on the way out). A group holding
    anything else is a bug: None, so it keeps its traceback.
    """
    leaves = _leaves(exc)
    errors = [leaf for leaf in leaves if isinstance(leaf, FleetError)]
    rest = [
        leaf
        for leaf in leaves
        if not isinstance(leaf, FleetError | trio.Cancelled | KeyboardInterrupt)
    ]
    if not errors or rest:
        return None
    return errors[0]


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
