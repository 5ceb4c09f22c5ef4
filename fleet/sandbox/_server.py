"""Serving the sandbox: a lean HTTP/1.1 server and hypercorn on trio, a kubeconfig, the data file.

:func:`serve_sandbox` runs the ASGI app (``_asgi.SandboxApp``) in the
caller's nursery, HTTP/1.1 and HTTP/2 (h2 over TLS by ALPN, h2c in clear):
HTTP/1.1 by the lean server of ``_http1``, HTTP/2 handed to hypercorn (or
everything by hypercorn with ``lean_http1=False``). It writes a kubeconfig carrying a freshly generated bearer token, and reports a
:class:`RunningSandbox` through ``task_status.started``. With
``settings.data_file`` the store is loaded at start and saved when the
server stops (cancellation is a clean stop). The temporary directory holding
the server's key (and the kubeconfig, unless ``kubeconfig_out`` names one) is
removed when the server stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from fleet.errors import ConfigError
from fleet.kube import write_kubeconfig
from fleet.sandbox._asgi import SandboxApp
from fleet.sandbox._http1 import Http1Server, open_listeners, url_of
from fleet.sandbox._kubeletproxy import KubeletClientCert
from fleet.sandbox._settings import SandboxSettings

IDENTITY_SUFFIX = ".identity"
"""With ``--data FILE``, the CA, its key and the token are kept in ``FILE.identity/`` (0700,
files 0600): a restarted sandbox serves the same identity, so a fleet or kubectl holding
the old kubeconfig keeps working across the restart."""
GRACEFUL_SHUTDOWN_SECONDS = 1.0
"""How long open requests (watches) may run on after a stop is asked for."""
CONTEXT_NAME = "kubemock-fleet-sandbox"

log = logging.getLogger("fleet.sandbox")


@dataclass(frozen=True)
class RunningSandbox:
    """What a started sandbox reports: where it is and how to reach it."""

    url: str
    """Base URL, e.g. ``http://127.0.0.1:38211``."""
    token: str
    """The bearer token clients must send."""
    kubeconfig: Path
    """A kubeconfig (mode 0600) for this sandbox, as its current context."""
    ca_pem: bytes | None
    """The CA that signed the server certificate (TLS only)."""
    app: SandboxApp
    """The application itself (in-process tests may inspect its store)."""
    kubelet_client_ca: Path | None = None
    """The CA of the sandbox's kubelet client certificate (PEM file): kubelets (the fleet's
    shards, ``shard.kubeletClientCaFile``) accept ``pods/log`` and ``nodes/proxy`` from the
    sandbox by it."""


class _Metadata(msgspec.Struct):
    name: str
    namespace: str = ""
    resourceVersion: str = ""  # the wire name


class _Object(msgspec.Struct):
    metadata: _Metadata


class _Collection(msgspec.Struct):
    group: str
    resource: str
    objects: list[_Object]


class _DataFile(msgspec.Struct):
    """The shape of a data file (``Store.dump``), checked before anything is loaded."""

    resourceVersion: int  # the wire name
    collections: list[_Collection]


def _load(path: Path | None) -> dict[str, Any] | None:
    """The data file's contents, checked; every fault is one :class:`ConfigError` line."""
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot load sandbox data ({exc})") from exc
    if not isinstance(data, dict) or "collections" not in data:
        raise ConfigError(f"{path}: not a kubemock-fleet sandbox data file")
    try:
        shape = msgspec.convert(data, _DataFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: not a kubemock-fleet sandbox data file: {exc}") from exc
    for i, collection in enumerate(shape.collections):
        for j, obj in enumerate(collection.objects):
            rv = obj.metadata.resourceVersion
            if not rv.isdigit():
                raise ConfigError(
                    f"{path}: not a kubemock-fleet sandbox data file: resourceVersion {rv!r} "
                    f"is not a number - at `$.collections[{i}].objects[{j}].metadata`"
                )
    return data


def _save(path: Path, app: SandboxApp) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(app.dump(), fh, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def identity_dir(data_file: Path) -> Path:
    """Where the identity kept with ``data_file`` lives (:data:`IDENTITY_SUFFIX`)."""
    return data_file.with_name(data_file.name + IDENTITY_SUFFIX)


def _kept_identity(settings: SandboxSettings) -> tuple[SandboxSettings, Any]:
    """The token (in the returned settings) and the CA (or None) kept with the data file.

    Read when there, made and written when not. A token given in the settings wins and is
    not written.
    """
    import trustme

    assert settings.data_file is not None
    directory = identity_dir(settings.data_file)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        token_file = directory / "token"
        if settings.token is None:
            if token_file.exists():
                token = token_file.read_text(encoding="ascii").strip()
            else:
                token = secrets.token_urlsafe(32)
                _write_secret(token_file, token.encode("ascii"))
            if not token:
                raise ConfigError(f"{token_file}: empty token; delete the file for a new one")
            settings = dataclasses.replace(settings, token=token)
        if not settings.tls:
            return settings, None
        cert, key = directory / "ca.crt", directory / "ca.key"
        if cert.exists() and key.exists():
            try:
                return settings, trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
            except ValueError as exc:
                raise ConfigError(
                    f"{directory}: unreadable CA ({exc}); delete the directory for a new identity"
                ) from exc
        ca = trustme.CA(organization_name="kubemock-fleet sandbox")
        _write_secret(key, ca.private_key_pem.bytes())
        _write_secret(cert, ca.cert_pem.bytes())
        return settings, ca
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{directory}: cannot keep the sandbox identity ({exc})") from exc


def tls_files(directory: Path, host: str, ca: Any = None) -> tuple[Path, Path, bytes]:
    """A CA (``ca``, or a throwaway one) and a server certificate for ``host`` (and loopback)
    in ``directory``.

    Returns the certificate and key paths and the CA's PEM, for clients to trust.
    """
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("--tls needs the 'trustme' package (pip install trustme)") from exc
    if ca is None:
        ca = trustme.CA(organization_name="kubemock-fleet sandbox")
    names = sorted({host, "127.0.0.1", "localhost", "::1"})
    cert = ca.issue_cert(*names)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    os.chmod(key_path, 0o600)
    return cert_path, key_path, ca.cert_pem.bytes()


async def _expire_events(app: SandboxApp, settings: SandboxSettings) -> None:
    """Sweep expired Events every tenth of the TTL (at most once a minute)."""
    period = min(60.0, settings.event_ttl / 10)
    while True:
        await trio.sleep(period)
        gone = app.expire_events(settings.wall_clock())
        if gone:
            log.debug("%d expired events removed", gone)


async def serve_sandbox(
    settings: SandboxSettings,
    *,
    task_status: trio.TaskStatus[RunningSandbox] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the sandbox apiserver until cancelled; report a :class:`RunningSandbox` once it listens."""
    ca = None
    if settings.data_file is not None:
        settings, ca = _kept_identity(settings)
    app = SandboxApp(settings, data=_load(settings.data_file))
    # The server's key (and the default kubeconfig) live here while it runs; removed on the way out.
    workdir = Path(tempfile.mkdtemp(prefix="kubemock-fleet-sandbox-"))
    try:
        await _serve(settings, app, workdir, ca, task_status=task_status)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _serve(
    settings: SandboxSettings,
    app: SandboxApp,
    workdir: Path,
    ca: Any,
    *,
    task_status: trio.TaskStatus[RunningSandbox],
) -> None:
    if app.kubelet_client is None:
        app.kubelet_client = KubeletClientCert.generate()
    kubelet_client_ca = workdir / "kubelet-client-ca.crt"
    kubelet_client_ca.write_bytes(app.kubelet_client.ca_pem)
    config = Config()
    config.bind = [
        f"[{settings.host}]:{settings.port}"
        if ":" in settings.host
        else f"{settings.host}:{settings.port}"
    ]
    config.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    config.errorlog = logging.getLogger("fleet.sandbox.http")
    config.accesslog = None
    config.keep_alive_timeout = 75
    ca_pem: bytes | None = None
    if settings.tls:
        cert, key, ca_pem = tls_files(workdir, settings.host, ca)
        config.certfile, config.keyfile = str(cert), str(key)
    try:
        async with trio.open_nursery() as nursery:
            if settings.lean_http1:
                listeners = await open_listeners(settings.host, settings.port)
                server = Http1Server(
                    app,
                    config,
                    tls=config.create_ssl_context() if settings.tls else None,
                    header_read_timeout=settings.header_read_timeout,
                    body_read_timeout=settings.body_read_timeout,
                    max_connections=settings.max_connections,
                    upgrade=app.upgrade,
                )
                await nursery.start(server.serve, listeners)
                url = url_of(listeners[0], "https" if settings.tls else "http")
            else:
                binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]  # hypercorn types an ASGI app by its TypedDict scopes, which no MutableMapping-typed app matches
                url = binds[0]
            app.server_address = url.split("://", 1)[1]
            app.publish_endpoints(app.server_address)
            if settings.event_ttl > 0:
                nursery.start_soon(_expire_events, app, settings)
            kubeconfig = settings.kubeconfig_out or workdir / "kubeconfig"
            write_kubeconfig(
                Path(kubeconfig),
                server=url,
                token=app.token,
                ca_data=ca_pem,
                context_name=CONTEXT_NAME,
                namespace="default",
            )
            log.info("sandbox apiserver on %s, kubeconfig %s", url, kubeconfig)
            task_status.started(
                RunningSandbox(url, app.token, Path(kubeconfig), ca_pem, app, kubelet_client_ca)
            )
    finally:
        if settings.data_file is not None:
            _save(settings.data_file, app)
