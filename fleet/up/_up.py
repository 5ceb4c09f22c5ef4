"""``up``: the sandbox apiserver, the control plane and the fleet, in one command.

:class:`Up` runs, in one nursery, bottom to top:

0. a claim on the kubeconfig (``_claim``): a second ``up`` writing the same
   one stops with one line instead of overwriting a live cluster's;
1. the sandbox apiserver (:func:`fleet.sandbox.serve_sandbox`: TLS, a bearer
   token, the kubeconfig written where asked; with ``sandbox_process`` the same as a
   child process, ``_sandboxchild``), or with ``control_plane="real"`` a
   real one (:func:`fleet.realcp.serve_real_control_plane`: etcd, kube-apiserver,
   and kube-controller-manager and kube-scheduler when the binaries directory has
   them; an admin kubeconfig written where asked);
2. over one httpx :class:`~fleet.kube.Client`: the fleet's CRDs (from the
   models) and the namespace ``kube-mock-system`` (``_bootstrap``);
3. the control-plane loops not switched off, in this process through
   :func:`fleet.controlplane.serve_control_plane` (its composition root, with a
   client of its own), or with ``control_plane_process`` in a child process,
   ``kubemock-fleet control-plane`` (the same root), supervised with the shard
   children; on a real control plane only those whose real component is missing
   (:data:`REAL_COMPONENT_LOOPS`), e.g. all of them beside envtest's binaries;
4. the fleet, unless ``shards == 0``: the coordinator in this process
   (:func:`fleet.coordinator.serve_coordinator`, its composition root), and
   the shards. One shard runs in this process, :func:`shards.serve_shard` as
   ``kubemock-fleet shard`` runs it, without ``/metrics`` or the GC freeze (no
   second Python start, nothing to supervise); several run as child processes under
   :class:`fleet.supervise.Supervisor`, each ``kubemock-fleet shard --id K
   --kubeconfig <the written kubeconfig>``, with ``/metrics`` on any free port
   unless the settings name one;
5. ``--nodes N`` Node CRs from a template (``_nodes``).

Shards serve the kubelet API on loopback (a free port each) and trust the apiserver's
kubelet client CA (the sandbox's, or the real control plane's), so ``kubectl logs``,
``exec``, ``port-forward`` and ``nodes/proxy`` reach them through either apiserver. The
sandbox serves ``metrics.k8s.io`` itself; beside a real kube-apiserver, ``up`` runs
``fleet.metricsapi`` and registers it as an APIService, so ``kubectl top`` works on both.

Then it reports a :class:`RunningUp` through ``task_status.started`` and
runs until :meth:`Up.stop`, which stops top to bottom: shard children get
SIGTERM and up to ``SHUTDOWN_GRACE`` (10 s) to exit, then the in-process
shard, the coordinator (it releases its leader Lease, shielded) and the
control plane are cancelled while the apiserver still answers, and the
sandbox goes last (it saves ``--data`` on the way out).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from tempfile import mkdtemp
from typing import Literal

import trio

from fleet._settings import ENV_PREFIX, FleetSettings, ShardSettings
from fleet.controlplane import serve_control_plane
from fleet.errors import ConfigError
from fleet.kube import Client, load_config
from fleet.metricsapi import MetricsApiSettings, serve_metrics_api
from fleet.realcp import (
    RealControlPlaneSettings,
    RunningControlPlane,
    default_binaries_dir,
    serve_real_control_plane,
)
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from fleet.supervise import Supervisor, control_plane_command, shard_command
from fleet.up._apistatus import ApiStatusSampler
from fleet.up._bootstrap import ensure_namespace, install_crds
from fleet.up._claim import claim_kubeconfig
from fleet.up._controlplane import LOOPS, check_loops, control_plane_settings
from fleet.up._nodes import NodeTemplate, create_nodes, load_template
from fleet.up._sandboxchild import serve_sandbox_child
from fleet.up._status import Status, StatusSampler

DEFAULT_SHARD_METRICS_PORT = ShardSettings().metrics_port

__all__ = ["CONTROL_PLANES", "REAL_COMPONENT_LOOPS", "RunningUp", "Up", "UpSettings"]

METRICS_USER = "kubemock-fleet-metrics"
"""Who the aggregated metrics.k8s.io server is to the kubelets (the shards)."""
CONTROL_PLANES = ("sandbox", "real")
"""What ``--control-plane`` takes: the embedded sandbox apiserver, or a real one."""
CONTROL_PLANE_CHILD = "control-plane"
"""The control-plane child's name under the supervisor (its output is prefixed so)."""
REAL_COMPONENT_LOOPS = {
    "kube-controller-manager": tuple(name for name in LOOPS if name != "scheduler"),
    "kube-scheduler": ("scheduler",),
}
"""The loops of ours each real component does itself: they run only where it is missing.
kube-controller-manager runs every controller of ours by default (``--controllers=*``):
ours beside it would act on the same objects twice (and at kwok-ci scale their informers
cost a Python process a core's worth of watch events)."""


@dataclass(frozen=True)
class UpSettings:
    """What ``up`` starts; the CLI builds one from its flags."""

    host: str = "127.0.0.1"
    """Address the sandbox binds. Loopback: it has one admin token and no RBAC."""
    port: int = 6443
    """The sandbox's port: kube-apiserver's own default; 0 picks a free one."""
    kubeconfig_out: Path | None = None
    """Where the kubeconfig is written; None: a fresh temporary directory."""
    data_file: Path | None = None
    """Sandbox state is loaded from here at start and saved here on a clean stop."""
    sandbox_max_connections: int = SandboxSettings().max_connections
    """Connections the sandbox serves at once (``SandboxSettings.max_connections``)."""
    nodes: int = 0
    """Node CRs to create from :attr:`node_template` (``fleet-node-0`` ...)."""
    node_template: NodeTemplate = field(default_factory=lambda: load_template(None))
    """The Node CR the ``--nodes`` copies are made from: kube-mock's README node by default."""
    shards: int = 1
    """Shards to run; 0: no fleet (no coordinator either), the apiserver and control plane alone."""
    disabled: frozenset[str] = frozenset()
    """Control-plane loops not to run (names from ``fleet.up.LOOPS``)."""
    fleet: FleetSettings = field(default_factory=FleetSettings)
    """Coordinator and shard settings (``--config``, KUBEMOCK_FLEET_* variables)."""
    config_file: Path | None = None
    """The ``--config`` file, handed on to shard child processes."""
    shard_processes: bool | None = None
    """Run shards as child processes; None: only when there is more than one (a single
    shard runs in this process)."""
    shard_command: Callable[[int, Path], Sequence[str]] | None = None
    """The command line of shard K's child process given the kubeconfig; None:
    :func:`fleet.supervise.shard_command`. Tests substitute a stand-in."""
    child_env: Mapping[str, str] | None = None
    """Environment of shard children; None: ours."""
    output: Callable[[bytes], None] | None = None
    """Where the shard children's output lines go, prefixed ``[shard K] ``; None: our
    stderr. A command drawing a live status passes a sink printing above it."""
    status_line: bool = True
    """Keep :meth:`Up.status` current. On a real control plane that lists every Node and
    Pod every 2 s: at kwok-ci scale half of a core in this process (py-spy) and load on the
    apiserver, so the bench, which draws no status line, turns it off."""
    control_plane_process: bool = False
    """Run the control-plane loops (scheduler, controllers) as a child process
    (``kubemock-fleet control-plane``) instead of in this one: they then have a core, and a
    GIL, of their own beside the sandbox. The bench runs its ``up`` so."""
    sandbox_process: bool = False
    """Run the sandbox apiserver as a child process (``kubemock-fleet sandbox``,
    ``_sandboxchild``) instead of in this one: a core of its own beside what runs here
    (the bench's client and trackers). No status line, kubelet API or ``data_file`` then."""
    control_plane_command: Callable[[Path, frozenset[str]], Sequence[str]] | None = None
    """The control-plane child's command line given the kubeconfig and the loops switched
    off; None: :func:`fleet.supervise.control_plane_command`. Tests substitute a stand-in."""
    control_plane: str = "sandbox"
    """``sandbox`` (embedded, in this process) or ``real`` (etcd, kube-apiserver ... as child
    processes, from :attr:`binaries`)."""
    binaries: Path | None = None
    """The real control plane's binaries directory; None: ``$KUBEMOCK_FLEET_BINARIES``, else
    ``$KUBEBUILDER_ASSETS`` (:func:`fleet.realcp.default_binaries_dir`)."""

    def __post_init__(self) -> None:
        if self.nodes < 0:
            raise ConfigError(f"--nodes: must be 0 or more, got {self.nodes}")
        if self.shards < 0:
            raise ConfigError(f"--shards: must be 0 or more, got {self.shards}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: must be between 0 and 65535, got {self.port}")
        check_loops(self.disabled)
        if self.control_plane not in CONTROL_PLANES:
            raise ConfigError(
                f"--control-plane: {self.control_plane!r} is not one of {', '.join(CONTROL_PLANES)}"
            )
        if self.sandbox_process and (self.control_plane != "sandbox" or self.data_file):
            raise ConfigError("a sandbox child process: the sandbox only, and without --data")
        if self.control_plane == "real":
            if self.data_file is not None:
                raise ConfigError("--data: only the sandbox keeps its state in a file")
            if self.host not in ("127.0.0.1", "localhost"):
                raise ConfigError(
                    f"--host {self.host}: the real control plane listens on 127.0.0.1"
                )


@dataclass(frozen=True)
class RunningUp:
    """What a started ``up`` reports."""

    sandbox: RunningSandbox | None
    """The sandbox apiserver; None on a real control plane."""
    kubeconfig: Path
    """The kubeconfig written for users (``export KUBECONFIG=...``)."""
    loops: tuple[str, ...]
    """The control-plane loops running."""
    nodes_created: int
    nodes_existing: int
    """Of the ``--nodes`` CRs: how many were created now, how many were there already."""
    real: RunningControlPlane | None = None
    """The real control plane (``control_plane="real"``)."""
    server: str | None = None
    """The apiserver's URL when it is neither of the above (a sandbox child process)."""

    @property
    def url(self) -> str:
        if self.real is not None:
            return self.real.url
        if self.sandbox is not None:
            return self.sandbox.url
        assert self.server is not None
        return self.server


def _bind_error(exc: BaseException) -> OSError | None:
    """The OSError of a failed bind, alone or as the only kind of error in nested groups."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(OSError)
        if matched is None or rest is not None:
            return None
        exc = matched
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


class Up:
    """The whole ``up`` stack; :meth:`run` in a nursery, :meth:`stop` to end it cleanly."""

    def __init__(self, settings: UpSettings) -> None:
        self.settings = settings
        self._stop = trio.Event()
        self._sampler: StatusSampler | ApiStatusSampler | None = None
        self.supervisor: Supervisor | None = None
        """The shard children's supervisor, when shards run as processes."""
        self._kubelet_ca: Path | None = None
        self._pod_cidrs: Literal["shard", "cluster"] = "shard"
        """Who gives podCIDRs here, for shards left at ``auto``: kube-controller-manager of a
        real control plane (``--allocate-node-cidrs``), else nobody but the shards."""

    def stop(self) -> None:
        """Ask for a clean stop (idempotent); :meth:`run` returns once everything has stopped."""
        self._stop.set()

    def status(self) -> Status:
        """The current reading for the status line (after :meth:`run` has started)."""
        if self._sampler is None:
            return Status()
        return self._sampler.sample()

    async def run(
        self, *, task_status: trio.TaskStatus[RunningUp] = trio.TASK_STATUS_IGNORED
    ) -> None:
        s = self.settings
        if s.kubeconfig_out is None:
            await self._run(task_status)
            return
        with claim_kubeconfig(s.kubeconfig_out):  # a live `up` for this kubeconfig: one line
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[RunningUp]) -> None:
        s = self.settings
        sandbox_settings = SandboxSettings(
            host=s.host,
            port=s.port,
            tls=True,
            kubeconfig_out=s.kubeconfig_out,
            data_file=s.data_file,
            max_connections=s.sandbox_max_connections,
        )
        async with trio.open_nursery() as outer:
            sandbox: RunningSandbox | None = None
            real: RunningControlPlane | None = None
            covered: set[str] = set()
            if s.control_plane == "real":
                real = await outer.start(serve_real_control_plane, self._real_settings())
                kubeconfig = real.kubeconfig
                if "kube-controller-manager" in real.components:
                    self._pod_cidrs = "cluster"  # it runs with --allocate-node-cidrs
                self._kubelet_ca = real.kubelet_client_ca
                for component, names in REAL_COMPONENT_LOOPS.items():
                    if component in real.components:
                        covered.update(names)
            elif s.sandbox_process:
                kubeconfig = s.kubeconfig_out or Path(mkdtemp(prefix="kubemock-fleet-up-")) / (
                    "kubeconfig"
                )
                await outer.start(
                    partial(
                        serve_sandbox_child,
                        kubeconfig,
                        host=s.host,
                        port=s.port,
                        max_connections=s.sandbox_max_connections,
                    )
                )
            else:
                try:
                    sandbox = await outer.start(partial(serve_sandbox, sandbox_settings))
                except (OSError, BaseExceptionGroup) as exc:  # hypercorn's bind error: in groups
                    bind_error = _bind_error(exc)
                    if bind_error is None:
                        raise
                    raise ConfigError(
                        f"--port {s.port}: cannot listen on {s.host}:{s.port}: "
                        f"{bind_error.strerror or bind_error}"
                    ) from exc
                kubeconfig = sandbox.kubeconfig
                self._kubelet_ca = sandbox.kubelet_client_ca
                self._sampler = StatusSampler(sandbox.app)
                self._sampler.sample()  # the first reading only starts the request-rate clock
            config = load_config(kubeconfig)
            async with Client(config) as client:
                await install_crds(client)
                for namespace in sorted({s.fleet.namespace, s.node_template.namespace}):
                    await ensure_namespace(client, namespace)
                async with trio.open_nursery() as fleet:
                    if real is not None:  # kubectl top: metrics.k8s.io, aggregated
                        await fleet.start(serve_metrics_api, client, self._metrics_settings(real))
                    if real is not None and s.status_line:
                        api_sampler = ApiStatusSampler(client)
                        self._sampler = api_sampler
                        await api_sampler.read()
                        fleet.start_soon(api_sampler.run)
                    loops = tuple(
                        name for name in LOOPS if name not in s.disabled and name not in covered
                    )
                    off = frozenset(s.disabled | covered)
                    in_child = bool(loops) and s.control_plane_process
                    if loops and not in_child:
                        await fleet.start(serve_control_plane, config, control_plane_settings(off))
                    children_done = await self._start_fleet(
                        fleet, client, kubeconfig, control_plane=off if in_child else None
                    )
                    created, existing = (0, 0)
                    if s.nodes:
                        created, existing = await create_nodes(client, s.node_template, s.nodes)
                    task_status.started(
                        RunningUp(
                            sandbox,
                            kubeconfig,
                            loops,
                            created,
                            existing,
                            real=real,
                            server=config.server,
                        )
                    )
                    await self._stop.wait()
                    if self.supervisor is not None:
                        self.supervisor.stop(signal.SIGTERM)
                        await children_done.wait()
                    fleet.cancel_scope.cancel()
            outer.cancel_scope.cancel()

    def _metrics_settings(self, real: RunningControlPlane) -> MetricsApiSettings:
        """The aggregated metrics.k8s.io's client certificate for the shards' kubelet API
        (``system:masters``, as kube-apiserver's own kubelet client: a throwaway control plane
        needs no finer grant). The request-header CA and allowed names it reads from the
        cluster, where kube-apiserver publishes them (``fleet.metricsapi``)."""
        pair = real.issue("metrics-api-kubelet-client", METRICS_USER, ("system:masters",))
        return MetricsApiSettings(
            kubelet_client_cert_pem=pair.cert_pem, kubelet_client_key_pem=pair.key_pem
        )

    def _real_settings(self) -> RealControlPlaneSettings:
        s = self.settings
        binaries = s.binaries or default_binaries_dir()
        if binaries is None:
            raise ConfigError(
                "--control-plane real: no binaries; pass --binaries DIR (e.g. ../shared/realk8s) "
                "or set KUBEMOCK_FLEET_BINARIES or KUBEBUILDER_ASSETS"
            )
        if s.port:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", s.port))
                except OSError as exc:
                    raise ConfigError(
                        f"--port {s.port}: cannot listen on 127.0.0.1:{s.port}: {exc.strerror or exc}"
                    ) from exc
        return RealControlPlaneSettings(
            binaries=binaries,
            kubeconfig_out=s.kubeconfig_out,
            port=s.port,
            scheduler="scheduler" not in s.disabled,
            # kube-controller-manager must allocate from the range the shards assign from.
            cluster_cidr=str(s.fleet.shard.pod_cidr_range),
            node_cidr_mask_size=s.fleet.shard.node_pod_cidr_prefix,
        )

    async def _run_shards_here(
        self, kubeconfig: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The shards in this process, each :func:`shards.serve_shard` (no /metrics, no GC
        freeze: the process is not the shard's alone)."""
        from shards import serve_shard

        s = self.settings
        fleet = s.fleet.model_copy(
            update={"shard": s.fleet.shard.model_copy(update=self._kubelet_settings())}
        )
        config = load_config(kubeconfig)
        if fleet.shard.pod_cidr_allocation == "auto":
            # Known here: no guess (the sandbox and our loops allocate none).
            shard = fleet.shard.model_copy(update={"pod_cidr_allocation": self._pod_cidrs})
            fleet = fleet.model_copy(update={"shard": shard})
        async with trio.open_nursery() as nursery:
            for k in range(s.shards):
                await nursery.start(serve_shard, fleet, k, config)
            task_status.started()

    def _kubelet_settings(self) -> dict[str, object]:
        """Shard settings for the kubelet API on loopback, trusting the apiserver's kubelet client CA:
        ``kubectl logs`` and ``nodes/proxy`` reach the shards (a free port each)."""
        if self._kubelet_ca is None:
            return {}
        return {
            "kubelet_api": True,
            "kubelet_address": "127.0.0.1",  # and bound there: loopback alone (kubeletBind)
            "kubelet_port": 0,
            "kubelet_client_ca_file": str(self._kubelet_ca),
            # Each node its own 127.(K+1).x.y: nodes/<n>/proxy/stats/summary reaches its node.
            "kubelet_address_per_node": True,
        }

    async def _start_fleet(
        self,
        nursery: trio.Nursery,
        client: Client,
        kubeconfig: Path,
        *,
        control_plane: frozenset[str] | None = None,
    ) -> trio.Event:
        """Start the coordinator, the shards and, when ``control_plane`` (the loops switched
        off) is given, the control-plane child; returns an event set once children are gone."""
        s = self.settings
        children_done = trio.Event()
        children: dict[str, Sequence[str]] = {}
        if control_plane is not None:
            children[CONTROL_PLANE_CHILD] = (
                s.control_plane_command(kubeconfig, control_plane)
                if s.control_plane_command is not None
                else control_plane_command(kubeconfig, disabled=control_plane)
            )
        processes = s.shard_processes if s.shard_processes is not None else s.shards > 1
        if s.shards:
            from fleet.coordinator import serve_coordinator

            await nursery.start(serve_coordinator, s.fleet, client.config)
            if not processes:
                await nursery.start(partial(self._run_shards_here, kubeconfig))
        if not children and not (s.shards and processes):
            children_done.set()
            return children_done

        def command(k: int) -> Sequence[str]:
            if s.shard_command is not None:
                return s.shard_command(k, kubeconfig)
            return shard_command(k, config=s.config_file, kubeconfig=kubeconfig)

        env = dict(os.environ if s.child_env is None else s.child_env)
        if s.fleet.shard.metrics_port == DEFAULT_SHARD_METRICS_PORT:
            # Nothing scrapes the shards of a local `up`; a fixed port would only collide.
            env.setdefault(f"{ENV_PREFIX}SHARD__METRICS_PORT", "0")
        # Each shard carves its node-IP and pod-CIDR share out of the ranges by the fleet
        # size: every shard must know it, or their shares overlap (as `run` does too).
        env[f"{ENV_PREFIX}SHARDS"] = str(s.shards)
        # `up --traffic-profile` and the Events setting as the children see them (after
        # --config and the environment: the bench sets both on the fleet it starts).
        env[f"{ENV_PREFIX}SHARD__TRAFFIC_PROFILE"] = s.fleet.shard.traffic_profile
        env[f"{ENV_PREFIX}SHARD__EVENTS"] = "true" if s.fleet.shard.events else "false"
        for name, value in self._kubelet_settings().items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"{ENV_PREFIX}SHARD__{name.upper()}"] = text
        if s.fleet.shard.pod_cidr_allocation == "auto":
            # Known here: no guess (the sandbox and our loops allocate none).
            env[f"{ENV_PREFIX}SHARD__POD_CIDR_ALLOCATION"] = self._pod_cidrs
        if s.shards and processes:
            children.update({f"shard {k}": command(k) for k in range(s.shards)})
        supervisor = Supervisor(
            children,
            env=env,
            stdout=s.output,
            stderr=s.output,
        )
        self.supervisor = supervisor

        async def supervise(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await supervisor.run(task_status=task_status)
            finally:
                children_done.set()

        await nursery.start(supervise)
        return children_done
