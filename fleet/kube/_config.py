"""Kubeconfig and in-cluster loading: turns credentials into a :class:`ClusterConfig`.

This is where every command that talks to a cluster gets its connection
settings, loaded the way kubectl loads them (client-go ``clientcmd``):

1. an explicit ``--kubeconfig`` file, which must exist; else
2. ``$KUBECONFIG``, a ``:``-separated list merged as client-go merges it: for
   clusters, users and contexts the first file that names an entry wins (the
   whole entry), ``current-context`` comes from the first file that sets it,
   missing files are skipped; else
3. ``~/.kube/config``; and when none of these exist (or all are empty) but
   ``KUBERNETES_SERVICE_HOST``/``PORT`` are set, the in-cluster service account.

Relative paths in an entry resolve against the directory of the file that
defined it. The result carries a verifying :class:`ssl.SSLContext` (``None``
for ``http://``) and an :class:`~fleet.kube._cluster.Auth` from
``fleet.kube._auth``. Choices where kubectl does more than the fleet can:
``proxy-url``, impersonation (``as``...) and ``auth-provider`` are refused with
a :class:`ConfigError` rather than ignored, because ignoring them would
connect somewhere else or as someone else than the user asked.

Every fault is one :class:`ConfigError` line naming the file and the fault,
never a secret. :func:`write_kubeconfig` writes the one-cluster kubeconfig the
sandbox apiserver hands its users.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from fleet.errors import ConfigError
from fleet.kube._auth import BasicAuth, ExecCredentialPlugin, StaticToken, TokenFile
from fleet.kube._cluster import Auth, ClusterConfig, NoAuth
from fleet.kube._tls import pem_files

__all__ = [
    "IN_CLUSTER_CA_PATH",
    "IN_CLUSTER_NAMESPACE_PATH",
    "IN_CLUSTER_TOKEN_PATH",
    "in_cluster_config",
    "load_config",
    "write_kubeconfig",
]

log = logging.getLogger(__name__)

_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN_PATH = _SERVICE_ACCOUNT_DIR / "token"
IN_CLUSTER_CA_PATH = _SERVICE_ACCOUNT_DIR / "ca.crt"
IN_CLUSTER_NAMESPACE_PATH = _SERVICE_ACCOUNT_DIR / "namespace"

_EXEC_CLUSTER_EXTENSION = "client.authentication.k8s.io/exec"
"""The cluster extension whose value reaches an exec plugin as ``spec.cluster.config``."""

_IMPERSONATION_KEYS = ("as", "as-uid", "as-groups", "as-user-extra")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Servers already warned about for insecure-skip-tls-verify: once per process is enough.
_warned_insecure: set[str] = set()


# --------------------------------------------------------------------------- reading files


@dataclass(frozen=True)
class _Entry:
    """One named cluster, user or context, and the file that defined it."""

    kind: str  # "cluster", "user", "context": for messages
    name: str
    body: Mapping[str, Any]
    origin: Path

    @property
    def where(self) -> str:
        return f"{self.origin}: {self.kind} {self.name!r}"

    def fail(self, fault: str) -> NoReturn:
        raise ConfigError(f"{self.where}: {fault}")

    def string(self, key: str) -> str | None:
        value = self.body.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.fail(f"{key} must be a string")
        return value

    def flag(self, key: str) -> bool:
        value = self.body.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false")
        return value

    def path(self, key: str) -> Path | None:
        """A file reference, resolved against the directory of the defining file (client-go)."""
        value = self.string(key)
        return None if value is None else _resolve(self.origin, value)


@dataclass
class _Merged:
    """The kubeconfig files read, merged as client-go merges them."""

    files: list[Path] = field(default_factory=list)
    clusters: dict[str, _Entry] = field(default_factory=dict)
    users: dict[str, _Entry] = field(default_factory=dict)
    contexts: dict[str, _Entry] = field(default_factory=dict)
    current_context: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.clusters or self.users or self.contexts or self.current_context)

    def describe(self) -> str:
        if len(self.files) == 1:
            return str(self.files[0])
        return "KUBECONFIG (" + ", ".join(str(f) for f in self.files) + ")"

    def add(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.files.append(path)
        for section, kind, target in (
            ("clusters", "cluster", self.clusters),
            ("users", "user", self.users),
            ("contexts", "context", self.contexts),
        ):
            for entry in _entries(path, doc, section, kind):
                target.setdefault(entry.name, entry)  # the first file to name an entry wins
        current = doc.get("current-context")
        if current is not None and not isinstance(current, str):
            raise ConfigError(f"{path}: current-context must be a string")
        if current and self.current_context is None:
            self.current_context = current


def _resolve(origin: Path, value: str) -> Path:
    path = Path(value)
    if path.is_absolute():
        return path
    return Path(os.path.abspath(origin.parent)) / path


def _entries(path: Path, doc: Mapping[str, Any], section: str, kind: str) -> Iterator[_Entry]:
    items = doc.get(section)
    if items is None:
        return
    if not isinstance(items, list):
        raise ConfigError(f"{path}: {section} must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: {section}[{index}] must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: {section}[{index}] has no name")
        body = item.get(kind)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {kind} {name!r}: {kind} must be a mapping")
        yield _Entry(kind, name, body, path)


def _read_kubeconfig(path: Path, *, must_exist: bool) -> Mapping[str, Any] | None:
    """The parsed file; ``None`` for a missing file that may be missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        if not must_exist:
            return None
        raise ConfigError(f"{path}: kubeconfig file does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: kubeconfig is a directory, not a file") from exc
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read kubeconfig ({exc.strerror or type(exc).__name__})"
        ) from exc
    try:
        doc = yaml.load(data, Loader=_Loader)  # _Loader is a safe loader
    except yaml.MarkedYAMLError as exc:
        # Only the problem and the line: the snippet YAML quotes could hold a token.
        mark = exc.problem_mark or exc.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}: YAML syntax error{line}: {exc.problem or 'invalid YAML'}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not a YAML file ({type(exc).__name__})") from exc
    if doc is None:
        return {}  # an empty file is an empty config, as in client-go
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path}: not a kubeconfig (the top level is a {type(doc).__name__}, not a mapping)"
        )
    return doc


def _candidate_files(
    kubeconfig: str | os.PathLike[str] | None, env: Mapping[str, str], home: Path
) -> tuple[list[Path], bool]:
    """The files to read in precedence order, and whether they must exist."""
    if kubeconfig is not None and os.fspath(kubeconfig) != "":
        return [Path(kubeconfig)], True
    listed = env.get("KUBECONFIG", "")
    if listed:
        seen: dict[str, None] = {}  # client-go deduplicates, keeping the first occurrence
        for item in listed.split(os.pathsep):
            if item:
                seen.setdefault(item, None)
        return [Path(item) for item in seen], False
    return [home / ".kube" / "config"], False


# --------------------------------------------------------------------------- loading


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> ClusterConfig:
    """Load the cluster, TLS settings, credentials and namespace of one context, as kubectl does.

    ``kubeconfig`` is ``--kubeconfig`` (must exist), ``context`` is ``--context``
    (default: the ``current-context``). ``environ`` and ``home`` default to the
    process's; tests pass their own. Raises :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    candidates, must_exist = _candidate_files(kubeconfig, env, home or Path.home())
    merged = _Merged()
    for path in candidates:
        doc = _read_kubeconfig(path, must_exist=must_exist)
        if doc is not None:
            merged.add(path, doc)

    if merged.empty and not must_exist and _in_cluster_possible(env):
        return in_cluster_config(environ=env)
    if not merged.files:
        if len(candidates) == 1:
            raise ConfigError(
                f"{candidates[0]}: no kubeconfig found (and not running in a cluster); pass --kubeconfig"
            )
        listed = ", ".join(str(c) for c in candidates)
        raise ConfigError(
            f"KUBECONFIG ({listed}): none of these files exist (and not running in a cluster)"
        )

    name = context or merged.current_context
    if not name:
        raise ConfigError(f"{merged.describe()}: no current-context is set; pass --context")
    ctx = merged.contexts.get(name)
    if ctx is None:
        raise ConfigError(f"{merged.describe()}: context {name!r} not found")

    # Name the other files only when the entry could have come from one of them.
    elsewhere = "" if len(merged.files) == 1 else f" in {merged.describe()}"
    cluster_name = ctx.string("cluster")
    if cluster_name is None:
        ctx.fail("names no cluster")
    cluster = merged.clusters.get(cluster_name)
    if cluster is None:
        ctx.fail(f"cluster {cluster_name!r} not found{elsewhere}")
    user_name = ctx.string("user")
    user: _Entry | None = None
    if user_name is not None:
        user = merged.users.get(user_name)
        if user is None:
            ctx.fail(f"user {user_name!r} not found{elsewhere}")

    config = _build(
        cluster,
        user,
        namespace=ctx.string("namespace") or "default",
        source=f"{ctx.origin} (context {name!r})",
    )

    def reload() -> ClusterConfig:
        return load_config(kubeconfig, context, environ=environ, home=home)

    # Read again by the transports when TLS or auth starts failing (fleet.kube._cluster).
    return dataclasses.replace(config, reload=reload)


def _build(cluster: _Entry, user: _Entry | None, *, namespace: str, source: str) -> ClusterConfig:
    if cluster.string("proxy-url") is not None:
        cluster.fail(
            "proxy-url is not supported (kubemock-fleet connects to the apiserver directly); "
            "remove it or use a kubeconfig without a proxy"
        )
    insecure = cluster.flag("insecure-skip-tls-verify")
    tls_server_name = cluster.string("tls-server-name")
    ca = _material(cluster, "certificate-authority", "certificate-authority-data")
    if insecure and ca is not None:
        # client-go: "specifying a root certificates file with the insecure flag is not allowed"
        cluster.fail("certificate-authority and insecure-skip-tls-verify cannot both be set")
    cert = key = None
    if user is not None:
        cert = _material(user, "client-certificate", "client-certificate-data")
        key = _material(user, "client-key", "client-key-data")
        if (cert is None) != (key is None):
            missing = "client-key" if key is None else "client-certificate"
            user.fail(
                f"{missing} (or {missing}-data) must be set with the other half of the client certificate"
            )

    server = _server_url(cluster, tls=bool(ca or cert or insecure))
    ssl_context: ssl.SSLContext | None = None
    http2_context: ssl.SSLContext | None = None
    if server.startswith("https://"):
        ssl_context, http2_context = _ssl_contexts(
            cluster, user, ca=ca, cert=cert, key=key, insecure=insecure
        )
        if insecure and server not in _warned_insecure:
            _warned_insecure.add(server)
            log.warning(
                "%s: insecure-skip-tls-verify is set: the server certificate of %s is not verified",
                cluster.where,
                server,
            )

    auth: Auth = NoAuth()
    if user is not None:
        auth = _auth(
            user, cluster, server=server, ca=ca, insecure=insecure, tls_server_name=tls_server_name
        )
    return ClusterConfig(
        server=server,
        ssl_context=ssl_context,
        http2_context=http2_context,
        tls_server_name=tls_server_name,
        auth=auth,
        source=source,
        namespace=namespace,
    )


def _server_url(cluster: _Entry, *, tls: bool) -> str:
    server = cluster.string("server")
    if server is None:
        cluster.fail("has no server")
    server = server.strip()
    parts = urlsplit(server)
    if not parts.scheme or not parts.netloc:
        # client-go DefaultServerURL: a bare host:port gets https when TLS is configured.
        server = ("https://" if tls else "http://") + server
        parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        cluster.fail(f"server {server!r} is not an http:// or https:// URL")
    return server.rstrip("/")


@dataclass(frozen=True)
class _Material:
    """Certificate or key bytes and where they came from (for messages)."""

    data: bytes
    what: str  # e.g. "client-key /abs/path" or "client-key-data"
    path: Path | None


def _material(entry: _Entry, file_key: str, data_key: str) -> _Material | None:
    path = entry.path(file_key)
    encoded = entry.string(data_key)
    if path is not None and encoded is not None:
        # client-go refuses this too ("...-data will override" is a validation error).
        entry.fail(f"{file_key} and {data_key} are both set; keep one")
    if encoded is not None:
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{entry.where}: {data_key} is not valid base64") from exc
        return _Material(data, data_key, None)
    if path is not None:
        try:
            return _Material(path.read_bytes(), f"{file_key} {path}", path)
        except OSError as exc:
            raise ConfigError(
                f"{entry.where}: cannot read {file_key} {path} ({exc.strerror or type(exc).__name__})"
            ) from exc
    return None


class _EncryptedKey(Exception):
    """Raised from the password callback: an encrypted key would otherwise prompt on a tty."""


def _no_password() -> NoReturn:
    raise _EncryptedKey


def _ssl_contexts(
    cluster: _Entry,
    user: _Entry | None,
    *,
    ca: _Material | None,
    cert: _Material | None,
    key: _Material | None,
    insecure: bool,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The verifying context, and the same offering HTTP/2 (ALPN h2; see
    ``ClusterConfig.http2_context``)."""
    plain = _client_context(cluster, ca=ca, insecure=insecure)
    http2 = _client_context(cluster, ca=ca, insecure=insecure)
    if cert is not None and key is not None and user is not None:
        _load_client_cert((plain, http2), cert, key, user)  # one private temp dir for both
    http2.set_alpn_protocols(["h2"])
    return plain, http2


def _client_context(cluster: _Entry, *, ca: _Material | None, insecure: bool) -> ssl.SSLContext:
    """A context verifying the server (the system CAs unless a CA is given)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # system CAs unless a CA is given
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca is not None:
        ctx = _verifying_context(ca, cluster.where)
    return ctx


def _verifying_context(ca: _Material, where: str) -> ssl.SSLContext:
    """A context trusting only ``ca`` (as client-go does when a CA is configured)."""
    if b"-----BEGIN CERTIFICATE-----" not in ca.data:
        raise ConfigError(f"{where}: {ca.what} is not a PEM certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks hostnames by default
    try:
        ctx.load_verify_locations(cadata=ca.data.decode("utf-8", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where}: {ca.what} is not a valid PEM certificate") from exc
    return ctx


def _load_client_cert(
    contexts: Sequence[ssl.SSLContext], cert: _Material, key: _Material, user: _Entry
) -> None:
    if b"-----BEGIN CERTIFICATE-----" not in cert.data:
        user.fail(f"{cert.what} is not a PEM certificate")
    if b"PRIVATE KEY-----" not in key.data:
        user.fail(f"{key.what} is not a PEM private key")
    try:
        with _cert_files(cert, key) as (cert_path, key_path):
            for ctx in contexts:
                ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    except _EncryptedKey as exc:
        raise ConfigError(
            f"{user.where}: {key.what} is encrypted; kubectl cannot use it either"
        ) from exc
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            fault = f"{key.what} does not match {cert.what}"
        else:
            fault = f"cannot load {cert.what} with {key.what} ({exc.reason or 'not valid PEM'})"
        raise ConfigError(f"{user.where}: {fault}") from exc
    except OSError as exc:
        raise ConfigError(
            f"{user.where}: cannot prepare the client certificate ({exc.strerror or type(exc).__name__})"
        ) from exc


@contextlib.contextmanager
def _cert_files(cert: _Material, key: _Material) -> Iterator[tuple[str, str]]:
    """Paths ssl can load: the files named, or the data in a private temp dir
    (:func:`~fleet.kube._tls.pem_files`), deleted right after."""
    if cert.path is not None and key.path is not None:
        yield str(cert.path), str(key.path)
        return
    with pem_files(cert.data, key.data) as paths:
        yield paths


def _auth(
    user: _Entry,
    cluster: _Entry,
    *,
    server: str,
    ca: _Material | None,
    insecure: bool,
    tls_server_name: str | None,
) -> Auth:
    provider = user.body.get("auth-provider")
    if provider:
        name = provider.get("name") if isinstance(provider, dict) else None
        label = f"auth-provider {name!r}" if isinstance(name, str) else "auth-provider"
        user.fail(
            f"{label} is not supported (removed from kubectl in 1.26); use an exec credential "
            "plugin instead (e.g. gke-gcloud-auth-plugin, kubelogin)"
        )
    for key in _IMPERSONATION_KEYS:
        if user.body.get(key):
            user.fail(
                f"impersonation ({key}) is not supported; use the impersonated user's own credentials"
            )

    token = user.string("token")
    token_file = user.path("tokenFile")
    username = user.string("username")
    password = user.string("password")
    exec_conf = user.body.get("exec")
    methods = [
        name
        for name, present in (
            ("token", token is not None or token_file is not None),
            ("basic auth", username is not None or password is not None),
            ("exec", exec_conf is not None),
        )
        if present
    ]
    if len(methods) > 1:
        user.fail(f"more than one authentication method ({', '.join(methods)}); keep one")

    if token_file is not None:
        fallback = token
        if fallback is None:  # fail at load time, as client-go does, not on the first request
            fallback = _read_token(token_file, user.where)
        return TokenFile(token_file, fallback=fallback, source=user.where)
    if token is not None:
        return StaticToken(token)
    if username is not None or password is not None:
        return BasicAuth(username or "", password or "")
    if exec_conf is not None:
        return _exec_plugin(
            user,
            cluster,
            exec_conf,
            server=server,
            ca=ca,
            insecure=insecure,
            tls_server_name=tls_server_name,
        )
    return NoAuth()


def _read_token(path: Path, where: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read token file {path} ({exc.strerror or type(exc).__name__})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: token file {path} is not UTF-8 text") from exc
    if not token:
        raise ConfigError(f"{where}: token file {path} is empty")
    return token


def _exec_plugin(
    user: _Entry,
    cluster: _Entry,
    conf: Any,
    *,
    server: str,
    ca: _Material | None,
    insecure: bool,
    tls_server_name: str | None,
) -> ExecCredentialPlugin:
    if not isinstance(conf, dict):
        user.fail("exec must be a mapping")
    command = conf.get("command")
    if not isinstance(command, str) or not command:
        user.fail("exec has no command")
    if "/" in command and not os.path.isabs(command):
        command = str(_resolve(user.origin, command))  # client-go resolves only path-like commands
    args = conf.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        user.fail("exec args must be a list of strings")
    env: dict[str, str] = {}
    for item in conf.get("env") or []:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("value", ""), str)
        ):
            user.fail("exec env must be a list of {name, value} strings")
        env[item["name"]] = item.get("value", "")
    api_version = conf.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        user.fail("exec has no apiVersion")
    interactive = conf.get("interactiveMode")
    hint = conf.get("installHint") or ""
    provide = conf.get("provideClusterInfo", False)
    if not isinstance(provide, bool):
        user.fail("exec provideClusterInfo must be true or false")
    cluster_info: dict[str, Any] | None = None
    if provide:
        cluster_info = {"server": server}
        if tls_server_name:
            cluster_info["tls-server-name"] = tls_server_name
        if insecure:
            cluster_info["insecure-skip-tls-verify"] = True
        if ca is not None:
            cluster_info["certificate-authority-data"] = base64.b64encode(ca.data).decode("ascii")
        for ext in cluster.body.get("extensions") or []:
            if isinstance(ext, dict) and ext.get("name") == _EXEC_CLUSTER_EXTENSION:
                cluster_info["config"] = ext.get("extension")
    return ExecCredentialPlugin(
        command,
        args=args,
        env=env,
        api_version=api_version,
        interactive_mode=interactive if isinstance(interactive, str) else None,
        install_hint=hint if isinstance(hint, str) else "",
        cluster_info=cluster_info,
        source=user.where,
    )


# --------------------------------------------------------------------------- in-cluster


def _in_cluster_possible(env: Mapping[str, str]) -> bool:
    return bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"))


def in_cluster_config(
    *,
    token_path: Path | None = None,
    ca_path: Path | None = None,
    namespace_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """The pod's service account, as client-go's ``rest.InClusterConfig``.

    Server ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``; the
    token file is re-read as the kubelet rotates it; the CA is the mounted
    ``ca.crt`` (system CAs, with a warning, when it is absent, as client-go
    does); the namespace is ``$POD_NAMESPACE``, else the mounted file, else
    ``default``. Paths default to the standard mount, looked up at call time.
    """
    env = os.environ if environ is None else environ
    token_path = token_path or IN_CLUSTER_TOKEN_PATH
    ca_path = ca_path or IN_CLUSTER_CA_PATH
    namespace_path = namespace_path or IN_CLUSTER_NAMESPACE_PATH
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (not running in a pod?)"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    server = f"https://{host}:{port}"
    token = _read_token(token_path, "in-cluster")

    try:
        ca_data: bytes | None = ca_path.read_bytes()
    except FileNotFoundError:
        ca_data = None
        log.warning(
            "in-cluster: %s not found; verifying the apiserver against the system CAs", ca_path
        )
    except OSError as exc:
        raise ConfigError(
            f"in-cluster: cannot read {ca_path} ({exc.strerror or type(exc).__name__})"
        ) from exc

    def context() -> ssl.SSLContext:
        if ca_data is None:
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        return _verifying_context(_Material(ca_data, str(ca_path), ca_path), "in-cluster")

    ssl_context = context()
    http2_context = context()
    http2_context.set_alpn_protocols(["h2"])

    namespace = env.get("POD_NAMESPACE", "").strip()
    if not namespace:
        try:
            namespace = namespace_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            namespace = ""  # client-go falls back to "default" silently
    return ClusterConfig(
        server=server,
        ssl_context=ssl_context,
        http2_context=http2_context,
        auth=TokenFile(token_path, fallback=token, source="in-cluster"),
        source="in-cluster",
        namespace=namespace or "default",
    )


# --------------------------------------------------------------------------- writing


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    token: str | None = None,
    ca_data: bytes | None = None,
    insecure: bool = False,
    context_name: str = "kubemock-fleet",
    namespace: str | None = None,
    client_cert_data: bytes | None = None,
    client_key_data: bytes | None = None,
) -> Path:
    """Write a one-cluster kubeconfig (mode 0600) that kubectl and :func:`load_config` accept.

    The file is written beside ``path`` and renamed over it, so a reader never
    sees half a kubeconfig. ``ca_data`` is the PEM of the CA to trust;
    ``client_cert_data`` and ``client_key_data`` (PEM) a client certificate.
    """
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{path}: server {server!r} is not an http:// or https:// URL")
    if insecure and ca_data is not None:
        raise ConfigError(f"{path}: a CA and insecure-skip-tls-verify cannot both be set")
    cluster: dict[str, Any] = {"server": server.rstrip("/")}
    if ca_data is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode("ascii")
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if (client_cert_data is None) != (client_key_data is None):
        raise ConfigError(f"{path}: a client certificate needs its key, and a key its certificate")
    if client_cert_data is not None and client_key_data is not None:
        user["client-certificate-data"] = base64.b64encode(client_cert_data).decode("ascii")
        user["client-key-data"] = base64.b64encode(client_key_data).decode("ascii")
    context: dict[str, Any] = {"cluster": context_name, "user": context_name}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context_name, "cluster": cluster}],
        "users": [{"name": context_name, "user": user}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
        "preferences": {},
    }
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write kubeconfig ({exc.strerror or type(exc).__name__})"
        ) from exc
    return path
