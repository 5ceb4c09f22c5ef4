"""``up``'s control plane: the loops of :mod:`fleet.controlplane`, each switchable off.

The loops are named as kube-controller-manager's ``--controllers`` names
them (and ``scheduler`` for kube-scheduler); ``up --disable NAME`` turns one
off. :func:`control_plane_settings` maps the names left on to
:class:`fleet.controlplane.ControlPlaneSettings`.
"""

from __future__ import annotations

from collections.abc import Iterable

from fleet.controlplane import ControlPlaneSettings
from fleet.errors import ConfigError

__all__ = ["LOOPS", "check_loops", "control_plane_settings"]

LOOPS = (
    "scheduler",
    "deployment",
    "replicaset",
    "nodelifecycle",
    "garbagecollector",
    "job",
    "cronjob",
    "daemonset",
    "statefulset",
    "endpoint",
    "endpointslice",
    "disruption",
)
"""The control-plane loops ``up`` runs, by the names ``--disable`` takes."""


def check_loops(names: Iterable[str]) -> frozenset[str]:
    """Validate loop names; one clear error naming the unknown ones and the known ones."""
    chosen = frozenset(names)
    unknown = sorted(chosen - set(LOOPS))
    if unknown:
        raise ConfigError(
            f"unknown control-plane loop {', '.join(unknown)} (known: {', '.join(LOOPS)})"
        )
    return chosen


def control_plane_settings(disabled: frozenset[str]) -> ControlPlaneSettings:
    """Every loop on, as in a real cluster, except those in ``disabled``."""
    return ControlPlaneSettings(
        scheduler="scheduler" not in disabled,
        deployments="deployment" not in disabled,
        replicasets="replicaset" not in disabled,
        node_lifecycle="nodelifecycle" not in disabled,
        gc="garbagecollector" not in disabled,
        jobs="job" not in disabled,
        cronjobs="cronjob" not in disabled,
        daemonsets="daemonset" not in disabled,
        statefulsets="statefulset" not in disabled,
        endpoints="endpoint" not in disabled,
        endpointslices="endpointslice" not in disabled,
        disruption="disruption" not in disabled,
    )
