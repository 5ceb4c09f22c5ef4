"""``kubemock-fleet sandbox``: the sandbox apiserver alone, in the foreground.

Prints the URL and the kubeconfig path once it listens, serves until SIGINT
or SIGTERM, then (with ``--data``) saves its state.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from functools import partial
from pathlib import Path

import trio
import typer

from fleet.cli._app import app


async def _serve(settings: object) -> None:
    from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox

    assert isinstance(settings, SandboxSettings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running: RunningSandbox = await nursery.start(partial(serve_sandbox, settings))
            typer.echo(f"sandbox apiserver: {running.url}")
            typer.echo(f"kubeconfig: {running.kubeconfig}")
            typer.echo(f"  export KUBECONFIG={running.kubeconfig}")
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


@app.command()
def sandbox(
    port: int = typer.Option(6443, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    kubeconfig_out: Path | None = typer.Option(
        None,
        "--kubeconfig-out",
        dir_okay=False,
        help="Write the kubeconfig here (default: a temp dir).",
    ),
    data: Path | None = typer.Option(
        None, "--data", dir_okay=False, help="Load state from this file at start, save it on exit."
    ),
    tls: bool = typer.Option(
        True,
        "--tls/--no-tls",
        help="https with a throwaway CA (kubectl sends tokens only over TLS).",
    ),
    max_connections: int | None = typer.Option(
        None,
        "--max-connections",
        min=1,
        help="Connections served at once, more are closed at accept (default 4096; each "
        "costs a file descriptor: keep it under `ulimit -n`).",
    ),
) -> None:
    """Run the sandbox apiserver (a kubectl-compatible Kubernetes API) in the foreground."""
    from fleet.sandbox import SandboxSettings

    settings = SandboxSettings(
        host=host, port=port, tls=tls, kubeconfig_out=kubeconfig_out, data_file=data
    )
    if max_connections is not None:
        settings = replace(settings, max_connections=max_connections)
    trio.run(_serve, settings)
