"""``kubemock-fleet bench SCENARIO``: load scenarios and micro-benchmarks.

For now the one scenario is ``transport``, the client micro-benchmark of
:mod:`bench.transport` (client CPU per PATCH, httpx's pool against the hot-path
transport). Load scenarios against a control plane join it here as they land.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from fleet.cli._app import app
from fleet.errors import InputError


class Scenario(StrEnum):
    transport = "transport"


@app.command()
def bench(
    scenario: Scenario = typer.Argument(..., help="What to measure: 'transport' (client CPU per PATCH)."),
    requests: int = typer.Option(5000, "--requests", min=1, help="Requests per timed repeat."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed repeats; the minimum is reported."),
    inflight: list[int] = typer.Option(
        [1, 16, 64], "--inflight", help="In-flight levels (repeat the flag for several)."
    ),
    clients: list[str] | None = typer.Option(
        None,
        "--client",
        help="Clients to compare (repeat the flag): httpx, hot, h11 (the framing reference). "
        "Default: httpx and hot.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
    output: Path | None = typer.Option(
        None, "--output", help="Also write <scenario>.json into this directory."
    ),
) -> None:
    """Run a benchmark scenario and report it as a table (or JSON)."""
    from bench import transport  # heavy imports only when the command runs

    if any(level < 1 for level in inflight):
        raise InputError(f"--inflight levels must be >= 1, got {inflight}")
    wanted = clients or transport.CLIENTS
    unknown = sorted(set(wanted) - set(transport.ALL_CLIENTS))
    if unknown:
        raise InputError(f"--client: unknown {unknown}; choose from {list(transport.ALL_CLIENTS)}")
    chosen = [name for name in transport.ALL_CLIENTS if name in wanted]
    result = transport.run(requests=requests, inflight=inflight, repeats=repeats, clients=chosen)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / f"{scenario.value}.json").write_text(result.to_json() + "\n")
    if as_json:
        typer.echo(result.to_json())
    else:
        typer.echo(f"{result.machine}, Python {result.python}")
        typer.echo(f"command: {result.command}\n")
        typer.echo(transport.format_table(result))
