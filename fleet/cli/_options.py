"""Typer option aliases shared by every command that talks to a cluster.

kubectl's ``--kubeconfig`` and ``--context`` mean the same in every
kubemock-fleet command (DESIGN: "Every command that talks to a cluster takes
``--kubeconfig`` and ``--context``, as kubectl does"), so they are declared
once here and used as annotations::

    @app.command()
    def run(kubeconfig: KubeconfigOption = None, context: ContextOption = None) -> None:
        config = load_config(kubeconfig, context)

The values go to :func:`fleet.kube._config.load_config` unchecked: it gives
the one-line error for a missing or broken file, the same for every caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ContextOption", "KubeconfigOption", "MetricsAddressOption", "TrafficProfileOption"]

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Path to the kubeconfig file to use for CLI requests.",
        show_default=False,
        dir_okay=False,
    ),
]
"""``--kubeconfig FILE``: help text as kubectl's. Unset: $KUBECONFIG, then ~/.kube/config."""

ContextOption = Annotated[
    str | None,
    typer.Option(
        "--context",
        help="The name of the kubeconfig context to use",
        show_default=False,
    ),
]
"""``--context NAME``: help text as kubectl's. Unset: the kubeconfig's current-context."""

MetricsAddressOption = Annotated[
    str | None,
    typer.Option(
        "--metrics-address",
        help="Address /metrics, /healthz and /readyz bind (default 127.0.0.1; "
        "0.0.0.0 opens them to the network, as deploy/ does).",
        show_default=False,
    ),
]
"""``--metrics-address IP``: the ``metricsAddress`` setting. Unset: loopback (the endpoints are
unauthenticated)."""

TrafficProfileOption = Annotated[
    str | None,
    typer.Option(
        "--traffic-profile",
        help="What each fake kubelet sends: 'lean' (Leases, status, pod status, Events: the "
        "default) or 'kubelet' (also a real kubelet's watches, Node GETs every 10 s, CSINode; "
        "docs/performance.md).",
        show_default=False,
    ),
]
"""``--traffic-profile lean|kubelet``: the ``shard.trafficProfile`` setting (validated there)."""
