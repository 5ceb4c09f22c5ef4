"""The ``kubemock-fleet`` command line: one typer app, one module per command group.

Each ``_<command>.py`` module registers its commands on :data:`app`; importing
``_commands`` imports them all so ``kubemock-fleet --help`` lists them. The CLI
is the top layer: it may import anything, nothing imports it.
"""

from __future__ import annotations

from fleet.cli import _commands as _commands
from fleet.cli._app import app as app
from fleet.cli._app import main as main

__all__ = ["app", "main"]
