"""Running a real control plane: etcd, kube-apiserver, and kube-controller-manager and
kube-scheduler when the binaries directory has them, on loopback, for as long as a nursery runs.

:func:`serve_real_control_plane` (``await nursery.start(serve_real_control_plane, settings)``):

1. finds the binaries (``_binaries``: ``.xz`` checked and decompressed into a cache, in a
   worker thread) and creates a PKI (``_pki``) in the work directory;
2. starts etcd on two free ports, waits for its ``/health``;
3. starts kube-apiserver on a free port (or the one asked for) with client-certificate
   authentication, ``Node,RBAC`` authorization and the flags ``../shared/realk8s/README.md``
   found to work on loopback; writes the admin kubeconfig (``O=system:masters``) and
   waits for ``/readyz``. Its kubelet client (``--kubelet-client-certificate/-key``:
   ``CN=kube-apiserver-kubelet-client, O=system:masters``, kubeadm's choice) comes from the
   same CA, and it reaches kubelets at their ``InternalIP``
   (``--kubelet-preferred-address-types``; its default tries the node name first, which
   does not resolve): the fleet's shards, trusting that CA, serve ``pods/log``, ``exec``,
   ``port-forward`` and ``nodes/proxy``;
4. starts kube-controller-manager and kube-scheduler, each with its own kubeconfig
   (``CN=system:kube-controller-manager``, ``CN=system:kube-scheduler``), when present
   and wanted;
5. reports a :class:`RunningControlPlane` through ``task_status.started``.

A component that exits while it should run ends the whole thing with a
:class:`~fleet.errors.ComponentError` naming it and quoting its log. On
cancellation everything started is stopped, last started first: SIGTERM, then
SIGKILL after ``stop_grace`` (``scheduler_stop_grace`` for kube-scheduler, which
ignores SIGTERM). Each component runs in its own session, so a terminal's
Ctrl-C reaches only this process, which stops them in order.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
import yaml

from fleet.errors import ComponentError, ConfigError
from fleet.kube import load_config, write_kubeconfig
from fleet.realcp._binaries import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    SCHEDULER,
    Binaries,
    find_binaries,
)
from fleet.realcp._pki import PKI, SERVING_NAMES, CertPair, create_pki
from fleet.realcp._settings import RealControlPlaneSettings
from fleet.supervise import wait_ready

__all__ = ["RunningControlPlane", "serve_real_control_plane"]

log = logging.getLogger("fleet.realcp")

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
"""The Services' range; its first address (10.96.0.1) is in the serving certificate."""
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT_NAME = "kubemock-fleet-real"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_GROUPS = ("system:masters",)
"""kube-apiserver's identity towards kubelets: kubeadm's common name, and the group that any
kubelet's SubjectAccessReview allows (kubeadm binds ``system:kubelet-api-admin`` instead;
a throwaway control plane needs no finer grant)."""
KUBELET_ADDRESS_TYPES = "InternalIP"
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The aggregator's client certificate's common name (kubeadm's)."""
POLL_INTERVAL = 0.2
"""Seconds between readiness probes."""
PROBE_TIMEOUT = 5.0
"""Seconds one readiness probe may take (a local process answers at once, or is not up)."""
LOG_TAIL_LINES = 5
"""Lines of a failed component's log quoted in the error."""
ETCD_QUOTA_BYTES = 8 * 1024**3
"""etcd's backend quota: the 2 GiB default fills up under a 5,000-node fleet's churn."""


@dataclass(frozen=True)
class RunningControlPlane:
    """What a started real control plane reports."""

    url: str
    """kube-apiserver's base URL, ``https://127.0.0.1:<port>``."""
    kubeconfig: Path
    """The admin kubeconfig (``O=system:masters``, mode 0600)."""
    ca_pem: bytes
    """The CA of the serving and client certificates."""
    kubelet_client_ca: Path
    """The CA of kube-apiserver's kubelet client certificate (the cluster CA's file): what a
    kubelet, and a shard serving the kubelet API, trusts for client certificates."""
    components: tuple[str, ...]
    """The components running, in start order (``etcd``, ``kube-apiserver``, ...)."""
    missing: tuple[str, ...]
    """kube-controller-manager and/or kube-scheduler when not running (absent or not wanted):
    what ``up`` fills in with the project's own control-plane loops."""
    binaries: Binaries
    workdir: Path
    etcd_url: str
    pki: PKI = field(repr=False)
    front_proxy_ca_pem: bytes = b""
    """The request-header CA: what an aggregated API server verifies kube-apiserver's
    proxy client certificate with."""
    front_proxy: PKI | None = field(default=None, repr=False)
    """The request-header CA itself (kube-apiserver's ``--requestheader-client-ca-file``)."""

    def issue(self, name: str, common_name: str, groups: Sequence[str] = ()) -> CertPair:
        """A client certificate of the cluster CA (which the kubelets, the shards, trust)."""
        return self.pki.issue(name, common_name=common_name, groups=groups)

    def issue_front_proxy(self, name: str, common_name: str) -> CertPair:
        """A client certificate of the request-header CA (a proxy's; kube-apiserver's own
        is ``front-proxy-client``, the one name ``--requestheader-allowed-names`` lets in)."""
        if self.front_proxy is None:
            raise ConfigError("this control plane has no request-header CA")
        return self.front_proxy.issue(name, common_name=common_name)

    def write_kubeconfig(self, path: Path, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for ``user`` in ``groups`` (a fresh client certificate from the CA)."""
        pair = self.pki.issue(f"user-{user.replace(':', '-')}", common_name=user, groups=groups)
        return write_kubeconfig(
            path,
            server=self.url,
            ca_data=self.ca_pem,
            context_name=CONTEXT_NAME,
            namespace="default",
            client_cert_data=pair.cert_pem,
            client_key_data=pair.key_pem,
        )


LISTEN_PORTS = (20000, 32768)
"""Where the control plane's listening ports are picked: below Linux's ephemeral range
(32768-60999 by default). A port the kernel hands out for ``bind(0)`` is one it also hands
out as the local port of outgoing connections: between this pick and kube-apiserver's
listen, a test's client connection took it once ("bind: address already in use")."""


def _free_ports(count: int, *, taken: tuple[int, ...] = ()) -> list[int]:
    """``count`` distinct ports free on loopback now, none of ``taken``. Picked together: a
    port picked after etcd was started but before it listened could be etcd's own
    (kube-apiserver then failed with "bind: address already in use" on etcd's port)."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port(avoid=[*taken, *ports])
        if port not in ports and port not in taken:
            ports.append(port)
    return ports


def _free_port(avoid: list[int] | None = None) -> int:
    """A port free on loopback now, outside the ephemeral range when one is."""
    low, high = LISTEN_PORTS
    for port in random.sample(range(low, high), 64):
        if avoid and port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    last = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(last) or "(empty log)"


@dataclass
class _Component:
    name: str
    process: trio.Process
    log: Path
    grace: float
    stopping: bool = False

    def failure(self, what: str) -> ComponentError:
        return ComponentError(f"{self.name} {what}; last lines of {self.log}: {_tail(self.log)}")


async def _stop(component: _Component) -> None:
    component.stopping = True
    process = component.process
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(component.grace):
        await process.wait()
        return
    log.info("%s did not exit %.0f s after SIGTERM: SIGKILL", component.name, component.grace)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


class _Plane:
    """The components started so far, their files, and how to reach the apiserver."""

    def __init__(self, settings: RealControlPlaneSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.components: list[_Component] = []

    async def start(
        self, nursery: trio.Nursery, name: str, argv: Sequence[str], grace: float
    ) -> _Component:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as out:
            process = await trio.lowlevel.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        component = _Component(name, process, log_path, grace)
        self.components.append(component)
        nursery.start_soon(self._watch, component)
        log.info("started %s (pid %d), log %s", name, process.pid, log_path)
        return component

    @staticmethod
    async def _watch(component: _Component) -> None:
        code = await component.process.wait()
        if not component.stopping:
            raise component.failure(f"exited with code {code}")

    async def stop_all(self) -> None:
        for component in reversed(self.components):
            await _stop(component)

    def check_alive(self) -> None:
        for component in self.components:
            code = component.process.returncode
            if code is not None and not component.stopping:
                raise component.failure(
                    f"exited with code {code} before the control plane was ready"
                )


async def _wait_ready(
    plane: _Plane,
    client: httpx.AsyncClient,
    url: str,
    what: str,
    component: _Component,
    deadline: float,
) -> None:
    """Poll ``url`` until it answers 200; fail fast when a component dies, or at ``deadline``."""

    async def probe() -> str | None:
        try:
            response = await client.get(url, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code == 200:
            return None
        return f"HTTP {response.status_code}: {response.text.strip()[-200:]}"

    await wait_ready(
        probe,
        deadline=deadline,
        interval=POLL_INTERVAL,
        fail=lambda last: component.failure(f"not ready ({what}) in time; last answer {last}"),
        alive=plane.check_alive,
    )


def _etcd_argv(etcd: Path, data: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        f"--quota-backend-bytes={ETCD_QUOTA_BYTES}",
        # A control plane for tests and benchmarks: its data dies with it, so waiting for
        # the disk on every commit buys nothing (and a disk shared by a busy box is slow).
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_argv(
    s: RealControlPlaneSettings,
    apiserver: Path,
    pki: PKI,
    serving_cert: Path,
    serving_key: Path,
    kubelet_client: CertPair,
    front_proxy: PKI,
    proxy_client: CertPair,
    port: int,
    etcd_url: str,
    *,
    controller_manager: bool,
) -> list[str]:
    argv = [
        str(apiserver),
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--etcd-servers={etcd_url}",
        f"--tls-cert-file={serving_cert}",
        f"--tls-private-key-file={serving_key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        # Otherwise it wants a routable advertise address for the kubernetes Endpoints.
        "--endpoint-reconciler-type=none",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        f"--kubelet-client-certificate={kubelet_client.cert}",
        f"--kubelet-client-key={kubelet_client.key}",
        # Its default puts Hostname first: the node's name, which resolves nowhere here.
        f"--kubelet-preferred-address-types={KUBELET_ADDRESS_TYPES}",
        # The aggregator (an APIService: fleet.metricsapi's metrics.k8s.io): its client
        # certificate towards extension servers, and the CA they verify it with (kubeadm's
        # front-proxy layout: a CA of its own, so no other client can pose as the proxy).
        f"--requestheader-client-ca-file={front_proxy.ca.cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={proxy_client.cert}",
        f"--proxy-client-key-file={proxy_client.key}",
    ]
    if not controller_manager:
        # The ServiceAccount admission plugin refuses pods until kube-controller-manager's
        # service-account controller created the namespace's "default" account: without it
        # (envtest's layout) no pod could ever be created.
        argv.append("--disable-admission-plugins=ServiceAccount")
    return [*argv, *s.apiserver_flags]


def _kubeconfig(
    path: Path, url: str, pki: PKI, name: str, user: str, groups: Sequence[str] = ()
) -> Path:
    pair = pki.issue(name, common_name=user, groups=groups)
    return write_kubeconfig(
        path,
        server=url,
        ca_data=pki.ca.cert_pem,
        context_name=CONTEXT_NAME,
        namespace="default",
        client_cert_data=pair.cert_pem,
        client_key_data=pair.key_pem,
    )


def _controller_manager_argv(
    s: RealControlPlaneSettings, binary: Path, pki: PKI, kubeconfig: Path
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        f"--root-ca-file={pki.ca.cert}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--cluster-signing-cert-file={pki.ca.cert}",
        f"--cluster-signing-key-file={pki.ca.key}",
        "--use-service-account-credentials",
        "--allocate-node-cidrs",
        f"--cluster-cidr={s.cluster_cidr}",
        f"--node-cidr-mask-size={s.node_cidr_mask_size}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--leader-elect=false",
        f"--kube-api-qps={s.client_qps}",
        f"--kube-api-burst={2 * s.client_qps}",
        *s.controller_manager_flags,
    ]


def _scheduler_argv(
    s: RealControlPlaneSettings, binary: Path, kubeconfig: Path, workdir: Path
) -> list[str]:
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1beta3",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {
            "kubeconfig": str(kubeconfig),
            "qps": s.client_qps,
            "burst": 2 * s.client_qps,
        },
        "leaderElection": {"leaderElect": False},
    }
    path = workdir / "kube-scheduler.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return [str(binary), f"--config={path}", "--bind-address=127.0.0.1", "--secure-port=0"]


async def serve_real_control_plane(
    settings: RealControlPlaneSettings,
    *,
    task_status: trio.TaskStatus[RunningControlPlane] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a real control plane until cancelled; report a :class:`RunningControlPlane` once
    kube-apiserver is ready (see the module docstring)."""
    s = settings
    began = time.monotonic()
    binaries = await trio.to_thread.run_sync(
        lambda: find_binaries(s.binaries, cache_dir=s.cache_dir)
    )
    own_workdir = s.workdir is None
    workdir = (
        Path(tempfile.mkdtemp(prefix="kubemock-fleet-realcp-")) if s.workdir is None else s.workdir
    )
    workdir.mkdir(parents=True, exist_ok=True)
    plane = _Plane(s, workdir)
    try:
        async with trio.open_nursery() as nursery:
            pki = await trio.to_thread.run_sync(create_pki, workdir / "pki")
            serving = pki.issue("apiserver", common_name="kube-apiserver", hosts=SERVING_NAMES)
            kubelet_client = pki.issue(
                "apiserver-kubelet-client",
                common_name=KUBELET_CLIENT_USER,
                groups=KUBELET_CLIENT_GROUPS,
            )
            front_proxy = await trio.to_thread.run_sync(create_pki, workdir / "pki" / "front-proxy")
            proxy_client = front_proxy.issue("front-proxy-client", common_name=FRONT_PROXY_CLIENT)
            deadline = trio.current_time() + s.start_timeout
            etcd_port, peer_port, free = _free_ports(3, taken=(s.port,) if s.port else ())
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            etcd = await plane.start(
                nursery,
                ETCD,
                _etcd_argv(binaries.etcd, workdir / "etcd", etcd_port, peer_port),
                s.stop_grace,
            )
            port = s.port or free
            url = f"https://127.0.0.1:{port}"
            kubeconfig = _kubeconfig(
                s.kubeconfig_out or workdir / "admin.kubeconfig",
                url,
                pki,
                "admin",
                "kubemock-fleet-admin",
                ("system:masters",),
            )
            ssl_context = load_config(kubeconfig).ssl_context
            assert isinstance(ssl_context, ssl.SSLContext)
            async with httpx.AsyncClient() as plain:
                await _wait_ready(plane, plain, f"{etcd_url}/health", "/health", etcd, deadline)
            want_cm = s.controller_manager and binaries.controller_manager is not None
            want_sched = s.scheduler and binaries.scheduler is not None
            apiserver = await plane.start(
                nursery,
                APISERVER,
                _apiserver_argv(
                    s,
                    binaries.apiserver,
                    pki,
                    serving.cert,
                    serving.key,
                    kubelet_client,
                    front_proxy,
                    proxy_client,
                    port,
                    etcd_url,
                    controller_manager=want_cm,
                ),
                s.stop_grace,
            )
            async with httpx.AsyncClient(verify=ssl_context) as admin:
                await _wait_ready(plane, admin, f"{url}/readyz", "/readyz", apiserver, deadline)
            if want_cm:
                assert binaries.controller_manager is not None
                cm_kubeconfig = _kubeconfig(
                    workdir / "controller-manager.kubeconfig",
                    url,
                    pki,
                    "controller-manager",
                    "system:kube-controller-manager",
                )
                await plane.start(
                    nursery,
                    CONTROLLER_MANAGER,
                    _controller_manager_argv(s, binaries.controller_manager, pki, cm_kubeconfig),
                    s.stop_grace,
                )
            if want_sched:
                assert binaries.scheduler is not None
                sched_kubeconfig = _kubeconfig(
                    workdir / "scheduler.kubeconfig", url, pki, "scheduler", "system:kube-scheduler"
                )
                await plane.start(
                    nursery,
                    SCHEDULER,
                    _scheduler_argv(s, binaries.scheduler, sched_kubeconfig, workdir),
                    s.scheduler_stop_grace,
                )
            running = RunningControlPlane(
                url=url,
                kubeconfig=kubeconfig,
                ca_pem=pki.ca.cert_pem,
                kubelet_client_ca=pki.ca.cert,
                components=tuple(c.name for c in plane.components),
                missing=tuple(
                    name
                    for name, on in ((CONTROLLER_MANAGER, want_cm), (SCHEDULER, want_sched))
                    if not on
                ),
                binaries=binaries,
                workdir=workdir,
                etcd_url=etcd_url,
                pki=pki,
                front_proxy_ca_pem=front_proxy.ca.cert_pem,
                front_proxy=front_proxy,
            )
            log.info(
                "real control plane on %s in %.1f s: %s",
                url,
                time.monotonic() - began,
                ", ".join(running.components),
            )
            task_status.started(running)
            await trio.sleep_forever()
    except BaseException as exc:
        if isinstance(exc, ComponentError) or (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(ComponentError) is not None
        ):
            own_workdir = False  # keep the logs the error points at
        raise
    finally:
        with trio.CancelScope(shield=True):
            await plane.stop_all()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
