"""``kubemock-fleet shard --id K``: one shard process, as ``run`` and deploy/ start it.

A thin shim: parses the flags, loads the settings and the kubeconfig (in a
pod: the service account) and runs :func:`shards.serve_shard` (the shard
process's composition root: clients, engine, ``/metrics``, ``/healthz`` and
``/readyz`` on ``shard.metricsPort + K``) until SIGINT or SIGTERM, then exits
cleanly. Errors are mapped to one line by :func:`fleet.cli.main`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Literal

import trio
import typer

from fleet._settings import FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import (
    ContextOption,
    KubeconfigOption,
    MetricsAddressOption,
    TrafficProfileOption,
)
from fleet.cli._signals import until_signal
from fleet.supervise import configure_logging

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
    """The ``shard`` command's body: :func:`shards.serve_shard` until SIGINT or SIGTERM.

    The command owns its process, so it asks the root for what only a process's owner
    may: ``/metrics`` on its port, and the GC freeze (``gc.freeze`` reaches every object
    in the process).
    """
    from fleet.kube import load_config
    from shards import serve_shard

    config = load_config(settings.kubeconfig, settings.context)
    await until_signal(
        partial(serve_shard, settings, shard_id, config, serve_metrics=True, freeze_gc=True)
    )


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
    traffic_profile: TrafficProfileOption = None,
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
            "shard.traffic_profile": traffic_profile,
        },
    )
    configure_logging()
    trio.run(run_shard, settings, number)
