"""``kubemock-fleet run --shards N``: the coordinator in-process plus N shard child processes.

The coordinator is :func:`fleet.coordinator.serve_coordinator` (its process's
composition root, as the ``coordinator`` command runs it, ``/metrics``
included); each child runs the ``shard`` command.

The children are supervised by :class:`fleet.supervise.Supervisor` (restarts
with backoff, output prefixed ``[shard K] ``); SIGINT or SIGTERM to ``run`` is
passed on to every child and ends the coordinator. Each child's command line
is :func:`fleet.supervise.shard_command`.

The shards serve the kubelet API (``kubectl logs``, ``exec``, ``port-forward``, ``nodes/proxy``)
on loopback, shard K on ``shard.kubeletPort`` + K, when ``--kubelet-api`` says so, or by
default (:func:`kubelet_api_wanted`) when the apiserver is on this machine (it can reach
loopback) and publishes its client CA in ``kube-system/extension-apiserver-authentication``
(the shards trust it, as kubeadm's and kind's kubelets do).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import urllib.parse
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import trio
import typer

from fleet._settings import ENV_PREFIX, FleetSettings, load_settings
from fleet.cli._app import app
from fleet.cli._options import (
    ContextOption,
    KubeconfigOption,
    MetricsAddressOption,
    TrafficProfileOption,
)
from fleet.errors import FleetError
from fleet.kube import Requester
from fleet.supervise import Supervisor, configure_logging, shard_command

__all__ = ["kubelet_api_env", "kubelet_api_wanted", "run_fleet"]

log = logging.getLogger(__name__)

CLIENT_CA_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
"""Where a cluster publishes its client CA; the shards read it there when no CA file is given."""
LOOPBACK = "127.0.0.1"
"""Where ``run``'s shards serve and advertise the kubelet API: all on this machine."""


def _is_local(server: str) -> bool:
    host = urllib.parse.urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def kubelet_api_wanted(requester: Requester, server: str) -> str | None:
    """Why ``run`` turns the kubelet API on by default, or None (and a log line why not):
    the apiserver at ``server`` must reach the shards on loopback, and the shards must find
    its client CA (what they trust for its kubelet client certificate)."""
    if not _is_local(server):
        log.info(
            "kubelet API off: the apiserver (%s) is not on this machine and could not reach "
            "the shards on loopback (--kubelet-api with shard.kubeletAddress to turn it on)",
            server,
        )
        return None
    try:
        response = await requester.request("GET", CLIENT_CA_CONFIGMAP)
    except FleetError as exc:
        log.info("kubelet API off: %s not readable: %s", CLIENT_CA_CONFIGMAP, exc)
        return None
    if response.ok and b"client-ca-file" in response.content:
        return "the apiserver is local and publishes its client CA"
    log.info(
        "kubelet API off: %s gives no client-ca-file (HTTP %d)",
        CLIENT_CA_CONFIGMAP,
        response.status,
    )
    return None


def kubelet_api_env(settings: FleetSettings, on: bool) -> dict[str, str]:
    """The shard children's environment for the kubelet API: on, on loopback unless the
    settings name an address (shard K then listens on ``kubeletPort`` + K, each of its nodes
    on an address of its own); or off."""
    if not on:
        return {f"{ENV_PREFIX}SHARD__KUBELET_API": "false"}
    shard = settings.shard
    env = {f"{ENV_PREFIX}SHARD__KUBELET_API": "true"}
    if not shard.kubelet_address:
        env[f"{ENV_PREFIX}SHARD__KUBELET_ADDRESS"] = LOOPBACK
        # Each node its own 127.(K+1).x.y on the shard's one listener (docs/kubelet-api.md),
        # bound to every loopback address and no other interface (shard.kubeletBind empty).
        env[f"{ENV_PREFIX}SHARD__KUBELET_ADDRESS_PER_NODE"] = "true"
    return env


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
    kubelet_api: bool | None = None,
) -> None:
    """The ``run`` command's body: coordinator (in-process) and supervised shard children;
    ``kubelet_api`` None: on when the settings say so, else :func:`kubelet_api_wanted`."""
    from fleet.coordinator import serve_coordinator
    from fleet.kube import Client, load_config

    # Every shard must know the fleet's size: each takes its own part of the node address
    # and pod CIDR ranges by it (shards._kubelets), and parts must not overlap.
    env = {
        **os.environ,
        f"{ENV_PREFIX}SHARDS": str(len(children)),
        f"{ENV_PREFIX}METRICS_ADDRESS": settings.metrics_address,  # --metrics-address, passed on
        f"{ENV_PREFIX}SHARD__TRAFFIC_PROFILE": settings.shard.traffic_profile,  # and this
    }
    # A kubeconfig that cannot be used fails here, in one line, before any child starts.
    config = load_config(settings.kubeconfig, settings.context) if with_coordinator else None
    if kubelet_api is None and settings.shard.kubelet_api:
        kubelet_api = True
    if kubelet_api is None and config is not None and children:
        async with Client(config) as probe:
            why = await kubelet_api_wanted(probe, config.server)
        kubelet_api = why is not None
        if why is not None:
            log.info(
                "kubelet API on, on loopback from port %d: %s", settings.shard.kubelet_port, why
            )
    if kubelet_api is not None:
        env.update(kubelet_api_env(settings, kubelet_api))
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
    kubelet_api: bool | None = typer.Option(
        None,
        "--kubelet-api/--no-kubelet-api",
        help="Shards serve the kubelet API (kubectl logs/exec/port-forward) on loopback, "
        "shard K on shard.kubeletPort + K. Default: on when the apiserver is on this machine "
        "and publishes its client CA (kube-system/extension-apiserver-authentication).",
        show_default=False,
    ),
    traffic_profile: TrafficProfileOption = None,
) -> None:
    """Run the coordinator and N shard processes on this machine."""
    settings = load_settings(
        config_file=config,
        flags={
            "shards": shards,
            "kubeconfig": str(kubeconfig) if kubeconfig is not None else None,
            "context": context,
            "metrics_address": metrics_address,
            "shard.traffic_profile": traffic_profile,
        },
    )
    configure_logging()
    children = {
        f"shard {k}": shard_command(k, config=config, kubeconfig=kubeconfig, context=context)
        for k in range(settings.shards)
    }
    trio.run(partial(run_fleet, settings, children, kubelet_api=kubelet_api))
