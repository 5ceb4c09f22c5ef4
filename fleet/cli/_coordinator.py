"""``kubemock-fleet coordinator``: one coordinator replica, as deploy/ runs it.

A thin shim: parses the flags, loads the settings and the kubeconfig (in a
pod: the service account) and runs :func:`fleet.coordinator.serve_coordinator`
(the coordinator process's composition root: leader election, ``/metrics``,
``/healthz`` and ``/readyz`` on ``coordinator.metricsPort``) until SIGINT or
SIGTERM, on which it steps down and releases its Lease.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
import typer

from fleet._settings import FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption, MetricsAddressOption
from fleet.cli._signals import until_signal
from fleet.supervise import configure_logging


async def run_coordinator(settings: FleetSettings) -> None:
    """The ``coordinator`` command's body: :func:`fleet.coordinator.serve_coordinator`
    (with ``/metrics``: the command owns its process) until SIGINT or SIGTERM."""
    from fleet.coordinator import serve_coordinator
    from fleet.kube import load_config

    config = load_config(settings.kubeconfig, settings.context)
    await until_signal(partial(serve_coordinator, settings, config, serve_metrics=True))


@app.command()
def coordinator(
    config: Path | None = typer.Option(
        None, "--config", dir_okay=False, help="YAML settings file (see `config show`)."
    ),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    metrics_address: MetricsAddressOption = None,
) -> None:
    """Run one coordinator replica (leader-elected), as deploy/ does."""
    settings = load_settings(
        config_file=config,
        flags={
            "kubeconfig": str(kubeconfig) if kubeconfig is not None else None,
            "context": context,
            "metrics_address": metrics_address,
        },
    )
    configure_logging()
    trio.run(run_coordinator, settings)
