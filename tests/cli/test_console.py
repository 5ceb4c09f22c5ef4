"""Logs and the live status never share a line."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import trio
from rich.console import Console
from rich.live import Live
from rich.text import Text

from fleet.cli._console import console_sink, logs_through
from fleet.up import Up, UpSettings

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATUS = "nodes 3/3 Ready · pods 0"


def _lines(raw: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", _ANSI.sub("\n", raw)) if line.strip()]


def test_log_records_and_child_lines_print_above_the_live_status() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    sink = console_sink(console)
    with Live(Text(STATUS), console=console, auto_refresh=False, transient=True) as live:
        live.refresh()
        with logs_through(console):
            logging.getLogger("fleet.test").warning("a shard is late")
        sink(b"[shard 0] 2026-12-06 INFO shards: registered 5 nodes\n")
        live.refresh()
    lines = _lines(out.getvalue())
    assert any(line.endswith("WARNING fleet.test: a shard is late") for line in lines), lines
    assert "[shard 0] 2026-12-06 INFO shards: registered 5 nodes" in lines, lines
    for line in lines:  # never glued: a line is the status or a log line, not both
        assert not (STATUS in line and ("late" in line or "[shard 0]" in line)), lines


def test_logs_through_puts_the_handlers_back() -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    with logs_through(Console(file=io.StringIO())):
        assert len(root.handlers) == 1
    assert root.handlers == before


CHATTY_SHARD = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("shard says hello", flush=True)
print("shard warns", file=sys.stderr, flush=True)
time.sleep(60)
"""


async def test_up_sends_the_shard_children_lines_to_its_sink(tmp_path: Path) -> None:
    script = tmp_path / "shard.py"
    script.write_text(CHATTY_SHARD)
    lines: list[bytes] = []
    up = Up(
        UpSettings(
            port=0,
            kubeconfig_out=tmp_path / "kc",
            shards=2,
            shard_command=lambda k, kc: [sys.executable, str(script)],
            output=lines.append,
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(up.run)
        with trio.fail_after(10):
            while len(lines) < 4:  # noqa: ASYNC110 - lines from child processes
                await trio.sleep(0.05)
        up.stop()
    assert sorted(lines)[:4] == [
        b"[shard 0] shard says hello\n",
        b"[shard 0] shard warns\n",
        b"[shard 1] shard says hello\n",
        b"[shard 1] shard warns\n",
    ]
