"""Settings of a real control plane: which binaries, where its files go, how long to wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet.errors import ConfigError

__all__ = ["RealControlPlaneSettings"]


@dataclass(frozen=True)
class RealControlPlaneSettings:
    """How :func:`fleet.realcp.serve_real_control_plane` runs etcd, kube-apiserver and the rest."""

    binaries: Path
    """A directory with ``kube-apiserver`` (or ``.xz`` files and ``SHA256SUMS``), and optionally
    ``etcd``, ``kube-controller-manager``, ``kube-scheduler`` (see ``_binaries``)."""
    cache_dir: Path | None = None
    """Where ``.xz`` binaries are decompressed; None: ``~/.cache/kubemock-fleet``."""
    workdir: Path | None = None
    """PKI, etcd data, configs and logs; None: a fresh temporary directory, removed at stop.
    A given directory is kept (its ``logs/`` are what to read when a component fails)."""
    kubeconfig_out: Path | None = None
    """Where the admin kubeconfig is written; None: ``<workdir>/admin.kubeconfig``."""
    port: int = 0
    """kube-apiserver's secure port on 127.0.0.1; 0: a free one."""
    controller_manager: bool = True
    """Run kube-controller-manager when the directory has it."""
    scheduler: bool = True
    """Run kube-scheduler when the directory has it."""
    start_timeout: float = 120.0
    """Seconds etcd and kube-apiserver together may take to answer ``/readyz``. Measured
    5-15 s on 2 idle cores (``../shared/realk8s/README.md``); a shared CI box is slower."""
    stop_grace: float = 10.0
    """Seconds a component has after SIGTERM before SIGKILL."""
    scheduler_stop_grace: float = 1.0
    """The same for kube-scheduler, which does not exit on SIGTERM: a short wait, then SIGKILL."""
    client_qps: int = 500
    """kube-controller-manager's and kube-scheduler's client QPS (burst twice that): their
    defaults (20) starve a fleet of thousands of nodes."""
    cluster_cidr: str = "10.128.0.0/9"
    """kube-controller-manager's ``--cluster-cidr``: node podCIDRs are allocated from it.
    ``up --control-plane real`` passes the fleet's ``podCidrRange`` (244.0.0.0/6) instead,
    since kube-controller-manager exits at start when an existing Node's podCIDR lies
    outside this range (a shard carves one only where nobody allocates, but a Node kept
    from such a run would hold one)."""
    node_cidr_mask_size: int = 24
    """``--node-cidr-mask-size``: the fleet's default ``nodePodCidrPrefix``."""
    apiserver_flags: tuple[str, ...] = ()
    """Extra kube-apiserver flags, appended last (so they win)."""
    controller_manager_flags: tuple[str, ...] = ()
    """Extra kube-controller-manager flags, appended last (e.g. ``--controllers=...``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: must be between 0 and 65535, got {self.port}")
        for name in ("start_timeout", "stop_grace", "scheduler_stop_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be more than 0, got {getattr(self, name)}")
        if not 8 <= self.node_cidr_mask_size <= 30:
            raise ConfigError(
                f"node_cidr_mask_size: must be 8 to 30, got {self.node_cidr_mask_size}"
            )
        if self.client_qps < 1:
            raise ConfigError(f"client_qps: must be 1 or more, got {self.client_qps}")
