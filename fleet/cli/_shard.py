"""``kubemock-fleet shard --id K``: one shard process, as ``run`` and deploy/ start it.

Loads the settings and the kubeconfig (in a pod: the service account), opens
the general client (control traffic) and the hot-path transport (Lease PUTs,
status PATCHes, pod watches), serves ``/metrics``, ``/healthz`` and
``/readyz`` on ``shard.metricsPort + K`` (any free port when it is 0), and
runs :class:`shards.ShardEngine` until SIGINT or SIGTERM, then exits cleanly.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import trio
import typer

from fleet._metrics import FleetMetrics
from fleet._settings import FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import ContextOption, KubeconfigOption, MetricsAddressOption
from fleet.supervise import configure_logging, process_identity
from fleet.wire import shard_host

__all__ = ["resolve_shard_id", "run_shard"]

_ORDINAL = re.compile(r"-(\d+)$")


def resolve_shard_id(given: str, environ: Mapping[str, str]) -> int:
    """``--id``'s value; empty: the ordinal ending the pod's name (``POD_NAME``, else
    ``HOSTNAME``), as on clusters before 1.28, whose StatefulSet pods have no
    ``apps.kubernetes.io/pod-index`` label for the downward API to give."""
    text = given.strip()
    if text:
        if not text.isdigit():
            raise typer.BadParameter(f"{given!r} is not a whole number", param_hint="--id")
        return int(text)
    for var in ("POD_NAME", "HOSTNAME"):
        match = _ORDINAL.search(environ.get(var, ""))
        if match:
            return int(match.group(1))
    raise typer.BadParameter(
        "empty, and neither POD_NAME nor HOSTNAME ends in a StatefulSet ordinal (-<n>)",
        param_hint="--id",
    )


async def run_shard(settings: FleetSettings, shard_id: int) -> None:
    """Run shard ``shard_id`` until a signal."""
    from fleet.kube import (
        Client,
        HotTransport,
        HotTransportSettings,
        InstrumentedRequester,
        load_config,
    )
    from shards import ShardEngine, kubelet_api_settings

    config = load_config(settings.kubeconfig, settings.context)
    base = settings.shard.metrics_port
    port = base + shard_id if base else 0
    hot_settings = HotTransportSettings(connections=settings.shard.writers)
    async with (
        Client(config) as client,
        HotTransport(config, hot_settings) as hot,
        trio.open_nursery() as nursery,
    ):
        metrics = FleetMetrics()
        engine = ShardEngine(
            settings,
            str(shard_id),
            control=InstrumentedRequester(client, metrics),
            hot=InstrumentedRequester(hot, metrics),
            identity=process_identity(shard_host(shard_id)),
            metrics=metrics,
            freeze_gc=True,  # the process is the shard's alone
            kubelet_api=kubelet_api_settings(settings.shard, offset=shard_id),
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(
                lambda task_status: engine.run(metrics_port=port, task_status=task_status)
            )
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


@app.command()
def shard(
    shard_id: str = typer.Option(
        ...,
        "--id",
        help="This shard's id (K in shard-K); empty: the ordinal ending $POD_NAME or $HOSTNAME.",
    ),
    config: Path | None = typer.Option(
        None, "--config", dir_okay=False, help="YAML settings file (see `config show`)."
    ),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    metrics_address: MetricsAddressOption = None,
    pod_watch: str | None = typer.Option(
        None,
        "--pod-watch",
        help="One pod watch for the shard ('shard'), or one per node ('per-node').",
    ),
) -> None:
    """Run one shard: drive every Node CR labelled with its id, and their pods."""
    number = resolve_shard_id(shard_id, os.environ)
    watch: Literal["shard", "per-node"] | None = None
    if pod_watch is not None:
        if pod_watch not in ("shard", "per-node"):
            raise typer.BadParameter("must be 'shard' or 'per-node'", param_hint="--pod-watch")
        watch = "shard" if pod_watch == "shard" else "per-node"
    settings = load_settings(
        config_file=config,
        flags={
            "kubeconfig": str(kubeconfig) if kubeconfig is not None else None,
            "context": context,
            "metrics_address": metrics_address,
            "shard.pod_watch": watch,
        },
    )
    configure_logging()
    trio.run(run_shard, settings, number)
