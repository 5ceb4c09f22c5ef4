"""``kubemock-fleet control-plane``: the loops of :mod:`fleet.controlplane` in a process of their own.

The scheduler and controllers (``fleet.up.LOOPS``, each switchable off with
``--disable``) against the cluster of ``--kubeconfig``, until SIGINT or
SIGTERM. ``up`` runs it as a child process beside the sandbox apiserver
(``UpSettings.control_plane_process``), so the scheduler's Python work does
not share a core, and a GIL, with the apiserver it schedules through.
"""

from __future__ import annotations

import signal
from pathlib import Path

import trio
import typer

from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption
from fleet.supervise import configure_logging


async def run_control_plane(
    kubeconfig: Path | None, context: str | None, disabled: frozenset[str]
) -> None:
    """Run the loops not in ``disabled`` until a signal."""
    from fleet.controlplane import serve_control_plane
    from fleet.kube import load_config
    from fleet.up import control_plane_settings

    config = load_config(kubeconfig, context)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control_plane, config, control_plane_settings(disabled))
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


@app.command("control-plane")
def control_plane(
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    disable: list[str] = typer.Option(
        [], "--disable", help="A control-plane loop not to run, repeatable (see `up --help`)."
    ),
) -> None:
    """Run the scheduler and controllers (what `up` runs beside its apiserver) against a cluster."""
    from fleet.up import check_loops

    disabled = check_loops(disable)
    configure_logging()
    trio.run(run_control_plane, kubeconfig, context, disabled)
