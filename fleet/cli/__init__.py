"""The ``kubemock-fleet`` command line: one typer app, one module per command group.

Each ``_<command>.py`` module registers its commands on :data:`app`; this
module imports them so that ``kubemock-fleet --help`` lists them all. The CLI
is the top layer: it may import anything, nothing imports it.
"""

from __future__ import annotations

from fleet.cli._app import app, main

# Command modules register themselves on import.
from fleet.cli import _commands as _commands  # noqa: F401  (registration side effect)

__all__ = ["app", "main"]
