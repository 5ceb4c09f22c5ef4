"""Logs and a live status never share a line: both go through one rich console.

A command that draws a live status (``up``'s status line, ``bench``'s progress
bars) owns a :class:`rich.console.Console`; rich prints anything sent through
that console *above* the live display and redraws the display below it. Log
records and the shard children's output lines written straight to the
terminal would instead land in the middle of the status line. So, while the
live display runs:

- :func:`logs_through` routes the logging records to the console, and
- :func:`console_sink` is the sink the process supervisor writes the
  children's (already prefixed) lines to.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.text import Text

__all__ = ["ConsoleHandler", "console_sink", "logs_through"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _print(console: Console, line: str) -> None:
    # Text, not a str: no markup, no highlighting; soft_wrap: one record stays one line.
    console.print(Text(line), soft_wrap=True, highlight=False)


def console_sink(console: Console) -> Callable[[bytes], None]:
    """A supervisor sink: each output line is printed through ``console``."""

    def write(line: bytes) -> None:
        _print(console, line.decode("utf-8", "replace").rstrip("\n"))

    return write


class ConsoleHandler(logging.Handler):
    """A logging handler that prints each record through a rich console (above a live display)."""

    def __init__(self, console: Console, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _print(self.console, self.format(record))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def logs_through(console: Console, level: int = logging.WARNING) -> Iterator[ConsoleHandler]:
    """Send the root logger's records (``level`` and up) to ``console`` for the block.

    The handlers already there are set aside for the block and put back after it,
    so records never reach the terminal twice or around the console.
    """
    root = logging.getLogger()
    handler = ConsoleHandler(console)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(level)
    try:
        yield handler
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
