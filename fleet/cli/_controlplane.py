"""``kubemock-fleet control-plane``: the loops of :mod:`fleet.controlplane` in a process of their own.

A thin shim over :func:`fleet.controlplane.serve_control_plane` (the control
plane's composition root): the scheduler and controllers (``fleet.up.LOOPS``,
each switchable off with ``--disable``) against the cluster of
``--kubeconfig``, until SIGINT or SIGTERM. ``up`` runs it as a child process
beside the sandbox apiserver (``UpSettings.control_plane_process``), so the
scheduler's Python work does not share a core, and a GIL, with the apiserver
it schedules through.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
import typer

from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption
from fleet.cli._signals import until_signal
from fleet.supervise import configure_logging


async def run_control_plane(
    kubeconfig: Path | None, context: str | None, disabled: frozenset[str]
) -> None:
    """The command's body: :func:`fleet.controlplane.serve_control_plane` (the control
    plane's composition root) with the loops not in ``disabled``, until SIGINT or SIGTERM."""
    from fleet.controlplane import serve_control_plane
    from fleet.kube import load_config
    from fleet.up import control_plane_settings

    config = load_config(kubeconfig, context)
    await until_signal(partial(serve_control_plane, config, control_plane_settings(disabled)))


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
