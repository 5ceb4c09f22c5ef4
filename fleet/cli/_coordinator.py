"""``kubemock-fleet coordinator``: one coordinator replica, as deploy/ runs it.

Loads the settings and the kubeconfig (in a pod: the service account), serves
``/metrics``, ``/healthz`` and ``/readyz`` on ``coordinator.metricsPort``, and
runs :class:`fleet.coordinator.Coordinator` (leader election included) until
SIGINT or SIGTERM, on which it steps down and releases its Lease.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import trio
import typer

from fleet._metrics import FleetMetrics, serve_metrics
from fleet._settings import FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption, MetricsAddressOption
from fleet.supervise import configure_logging, process_identity


async def run_coordinator(settings: FleetSettings) -> None:
    """Serve metrics and run the coordinator until a signal."""
    from fleet.coordinator import Coordinator
    from fleet.kube import Client, InstrumentedRequester, load_config

    config = load_config(settings.kubeconfig, settings.context)
    async with Client(config) as client, trio.open_nursery() as nursery:
        metrics = FleetMetrics()
        coordinator = Coordinator(
            InstrumentedRequester(client, metrics),
            settings,
            identity=process_identity("coordinator"),
            metrics=metrics,
        )
        await nursery.start(
            partial(
                serve_metrics,
                metrics.registry,
                settings.coordinator.metrics_port,
                coordinator.ready,
                host=settings.metrics_address,
            )
        )
        await nursery.start(coordinator.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()  # the elector releases its Lease on the way out


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
