"""``kubemock-fleet run --shards N``: the coordinator in-process plus N shard child processes.

The coordinator is :func:`fleet.coordinator.serve_coordinator` (its process's
composition root, as the ``coordinator`` command runs it, ``/metrics``
included); each child runs the ``shard`` command.

The children are supervised by :class:`fleet.supervise.Supervisor` (restarts
with backoff, output prefixed ``[shard K] ``); SIGINT or SIGTERM to ``run`` is
passed on to every child and ends the coordinator. Each child's command line
is :func:`fleet.supervise.shard_command`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio
import typer

from fleet._settings import ENV_PREFIX, FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption, MetricsAddressOption
from fleet.supervise import Supervisor, configure_logging, shard_command

__all__ = ["run_fleet"]

log = logging.getLogger(__name__)


async def _forward_signals(supervisor: Supervisor, cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %s: stopping the fleet", signal.Signals(signum).name)
            supervisor.stop(signum)
            cancel.cancel()  # stop the coordinator; the supervisor waits for the children
            return


async def run_fleet(
    settings: FleetSettings,
    children: Mapping[str, Sequence[str]],
    *,
    with_coordinator: bool = True,
) -> None:
    """The ``run`` command's body: coordinator (in-process) and supervised shard children."""
    from fleet.coordinator import serve_coordinator
    from fleet.kube import load_config

    # Every shard must know the fleet's size: each takes its own part of the node address
    # and pod CIDR ranges by it (shards._kubelets), and parts must not overlap.
    env = {
        **os.environ,
        f"{ENV_PREFIX}SHARDS": str(len(children)),
        f"{ENV_PREFIX}METRICS_ADDRESS": settings.metrics_address,  # --metrics-address, passed on
    }
    # A kubeconfig that cannot be used fails here, in one line, before any child starts.
    config = load_config(settings.kubeconfig, settings.context) if with_coordinator else None
    supervisor = Supervisor(children, env=env)
    async with trio.open_nursery() as nursery:
        coordinator_scope = trio.CancelScope()
        nursery.start_soon(_forward_signals, supervisor, coordinator_scope)
        await nursery.start(supervisor.run)
        if config is not None:
            with coordinator_scope:
                await serve_coordinator(settings, config, serve_metrics=True)
        # The supervisor returns once every child has exited.


@app.command()
def run(
    shards: int | None = typer.Option(
        None, "--shards", min=0, help="Shard processes to start (0: the coordinator alone)."
    ),
    config: Path | None = typer.Option(
        None, "--config", dir_okay=False, help="YAML settings file (see `config show`)."
    ),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    metrics_address: MetricsAddressOption = None,
) -> None:
    """Run the coordinator and N shard processes on this machine."""
    settings = load_settings(
        config_file=config,
        flags={
            "shards": shards,
            "kubeconfig": str(kubeconfig) if kubeconfig is not None else None,
            "context": context,
            "metrics_address": metrics_address,
        },
    )
    configure_logging()
    children = {
        f"shard {k}": shard_command(k, config=config, kubeconfig=kubeconfig, context=context)
        for k in range(settings.shards)
    }
    trio.run(run_fleet, settings, children)
