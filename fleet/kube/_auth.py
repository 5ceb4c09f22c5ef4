"""Request credentials: the :class:`~fleet.kube._cluster.Auth` implementations.

``fleet.kube._config`` picks one of these for the kubeconfig user (or the
in-cluster service account) and puts it in ``ClusterConfig.auth``; every
transport asks it for headers before a request and calls ``invalidate()``
when the apiserver answers 401. They behave as client-go's do:

- :class:`StaticToken`, :class:`BasicAuth`: fixed headers; nothing to refresh.
- :class:`TokenFile`: a bearer token read from a file that the kubelet rotates
  (projected service-account tokens); re-read at most once a minute, or at
  once after a 401 (client-go ``transport/token_source.go``).
- :class:`ExecCredentialPlugin`: runs a ``client.authentication.k8s.io``
  exec plugin (``v1`` or ``v1beta1``), caches its token until its
  ``expirationTimestamp``, runs it again after a 401; concurrent callers
  share one run (client-go ``plugin/pkg/client/auth/exec``).

Client certificates are not here: they live in the SSL context. Secrets
(tokens, passwords) never reach a log line, an exception message or a repr.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from fleet.errors import ConfigError

__all__ = [
    "EXEC_API_V1",
    "EXEC_API_V1BETA1",
    "TOKEN_FILE_REREAD_INTERVAL",
    "BasicAuth",
    "ExecCredentialPlugin",
    "StaticToken",
    "TokenFile",
]

log = logging.getLogger(__name__)

TOKEN_FILE_REREAD_INTERVAL = 60.0
"""Seconds between re-reads of a token file. client-go caches a file token for one
minute (``newCachedPathTokenSource``); the kubelet rotates projected tokens at 80 %
of a lifetime of at least ten minutes, so a minute-old token is always still valid."""

EXEC_API_V1 = "client.authentication.k8s.io/v1"
EXEC_API_V1BETA1 = "client.authentication.k8s.io/v1beta1"
_EXEC_API_VERSIONS = (EXEC_API_V1, EXEC_API_V1BETA1)
_EXEC_INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")

# A plugin's stderr line goes into an error message: keep the message one short line.
_STDERR_LINE_LIMIT = 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class StaticToken:
    """A bearer token that never changes (kubeconfig ``token``)."""

    def __init__(self, token: str) -> None:
        self._headers = _bearer(token)

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def invalidate(self) -> None:
        # Nothing to refresh: a static token stays what it is, and the 401 reaches the caller.
        return None

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"


class BasicAuth:
    """HTTP basic authentication (kubeconfig ``username``/``password``)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        raw = f"{username}:{password}".encode()
        self._headers = {"Authorization": f"Basic {base64.b64encode(raw).decode('ascii')}"}

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def invalidate(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<redacted>)"


class TokenFile:
    """A bearer token read from a file that rotates under us.

    The file is read on first use, then again when ``reread_interval`` seconds
    (of ``clock``, trio's clock by default, so tests run on the autojump clock)
    have passed since the last read, or at once after :meth:`invalidate`.
    When a re-read fails, the last good token (or ``fallback``, a token read
    or given at load time) stays in use and the failure is logged, as
    client-go does; with no token at all the failure is a :class:`ConfigError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fallback: str | None = None,
        clock: Callable[[], float] | None = None,
        reread_interval: float = TOKEN_FILE_REREAD_INTERVAL,
        source: str = "",
    ) -> None:
        self.path = os.fspath(path)
        self._token = fallback or None
        # Looked up lazily: construction may happen outside trio.run (load_config is sync).
        self._clock = clock or trio.current_time
        self._interval = reread_interval
        self._read_at: float | None = None
        self._lock = trio.Lock()
        self._source = source

    def _cached(self) -> str | None:
        if self._token is None or self._read_at is None:
            return None
        if self._clock() - self._read_at >= self._interval:
            return None
        return self._token

    async def headers(self) -> dict[str, str]:
        token = self._cached()
        if token is None:
            async with self._lock:  # one reader at a time; the others take its result
                token = self._cached()
                if token is None:
                    token = await self._reload()
        return _bearer(token)

    async def invalidate(self) -> None:
        self._read_at = None

    async def _reload(self) -> str:
        started = self._clock()
        fault: str
        try:
            text = await trio.Path(self.path).read_text(encoding="utf-8")
        except OSError as exc:
            fault = f"cannot read token file ({exc.strerror or type(exc).__name__})"
        except UnicodeDecodeError:
            fault = "token file is not UTF-8 text"
        else:
            token = text.strip()
            if token:
                self._token = token
                self._read_at = started
                return token
            fault = "token file is empty"
        where = f"{self._source}: " if self._source else ""
        if self._token is None:
            raise ConfigError(f"{where}{self.path}: {fault}")
        # Keep the last good token; retry after the interval rather than on every request.
        log.warning("%s%s: %s; keeping the previous token", where, self.path, fault)
        self._read_at = started
        return self._token

    def __repr__(self) -> str:
        return f"TokenFile(path={self.path!r})"


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp; Python 3.11 accepts at most microseconds, Go emits nanoseconds."""
    parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _first_line(data: bytes) -> str:
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line[:_STDERR_LINE_LIMIT]
    return "(no output on stderr)"


class ExecCredentialPlugin:
    """Bearer tokens from a kubeconfig ``exec`` credential plugin.

    The plugin runs with ``env`` merged over ``base_environ`` (``os.environ``
    by default) and ``KUBERNETES_EXEC_INFO`` set to an ``ExecCredential``
    (``spec.interactive`` false: there is never a terminal here; ``spec.cluster``
    is ``cluster_info`` when the kubeconfig sets ``provideClusterInfo``). Its
    token is cached until ``status.expirationTimestamp`` (by ``now``, an aware
    UTC wall clock) or forever when it gives none; :meth:`invalidate` (the
    server said 401) makes the next call run the plugin again.

    Only tokens are supported: the seam puts client certificates in the SSL
    context, fixed at load time, so a plugin that returns only
    ``clientCertificateData`` is a :class:`ConfigError`; one that returns a
    token as well is used for its token.
    """

    def __init__(
        self,
        command: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        api_version: str = EXEC_API_V1,
        interactive_mode: str | None = "Never",
        install_hint: str = "",
        cluster_info: Mapping[str, Any] | None = None,
        source: str = "",
        now: Callable[[], datetime] | None = None,
        base_environ: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self._where = f"{source}: exec plugin {command!r}" if source else f"exec plugin {command!r}"
        if api_version not in _EXEC_API_VERSIONS:
            if api_version == "client.authentication.k8s.io/v1alpha1":
                fault = "apiVersion client.authentication.k8s.io/v1alpha1 is no longer supported (removed in Kubernetes 1.24); use v1"
            else:
                fault = (
                    f"unknown apiVersion {api_version!r}; use {EXEC_API_V1} or {EXEC_API_V1BETA1}"
                )
            raise ConfigError(f"{self._where}: {fault}")
        if not interactive_mode:
            if api_version == EXEC_API_V1:  # client-go: required for v1, defaulted for v1beta1
                raise ConfigError(f"{self._where}: interactiveMode must be set for {EXEC_API_V1}")
            interactive_mode = "IfAvailable"
        if interactive_mode not in _EXEC_INTERACTIVE_MODES:
            raise ConfigError(
                f"{self._where}: unknown interactiveMode {interactive_mode!r}; "
                "use Never, IfAvailable or Always"
            )
        if interactive_mode == "Always":
            raise ConfigError(
                f"{self._where}: interactiveMode Always needs a terminal, and kubemock-fleet "
                "never has one; use a plugin that can run with interactiveMode Never or IfAvailable"
            )
        self.api_version = api_version
        self.args = tuple(args)
        self._env = dict(env or {})
        self._install_hint = " ".join(install_hint.split())
        self._cluster_info = dict(cluster_info) if cluster_info is not None else None
        self._now = now or (lambda: datetime.now(UTC))
        self._base_environ = base_environ
        self._token: str | None = None
        self._expiry: datetime | None = None
        self._lock = trio.Lock()
        self._warned_cert = False

    def _cached(self) -> str | None:
        if self._token is None:
            return None
        if self._expiry is not None and self._now() >= self._expiry:
            return None
        return self._token

    async def headers(self) -> dict[str, str]:
        token = self._cached()
        if token is None:
            async with self._lock:  # concurrent callers share one run of the plugin
                token = self._cached()
                if token is None:
                    token = await self._run()
        return _bearer(token)

    async def invalidate(self) -> None:
        self._token = None
        self._expiry = None

    def exec_info(self) -> dict[str, Any]:
        """The ``ExecCredential`` the plugin receives in ``KUBERNETES_EXEC_INFO``."""
        spec: dict[str, Any] = {"interactive": False}
        if self._cluster_info is not None:
            spec["cluster"] = self._cluster_info
        return {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}

    async def _run(self) -> str:
        env = dict(os.environ if self._base_environ is None else self._base_environ)
        env.update(self._env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(self.exec_info())
        log.debug("running %s", self._where)
        try:
            result = await trio.run_process(
                [self.command, *self.args],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        except FileNotFoundError as exc:
            hint = f" ({self._install_hint})" if self._install_hint else ""
            raise ConfigError(f"{self._where}: command not found{hint}") from exc
        except PermissionError as exc:
            raise ConfigError(f"{self._where}: command is not executable") from exc
        except OSError as exc:
            raise ConfigError(
                f"{self._where}: cannot run ({exc.strerror or type(exc).__name__})"
            ) from exc
        if result.returncode != 0:
            how = (
                f"killed by signal {-result.returncode}"
                if result.returncode < 0
                else f"exit code {result.returncode}"
            )
            raise ConfigError(f"{self._where} failed ({how}): {_first_line(result.stderr)}")
        return self._accept(result.stdout)

    def _accept(self, stdout: bytes) -> str:
        """Parse the plugin's ExecCredential, cache and return its token. Never echo the output."""
        try:
            cred = json.loads(stdout)
        except ValueError as exc:
            raise ConfigError(f"{self._where}: output is not an ExecCredential (not JSON)") from exc
        if not isinstance(cred, dict):
            raise ConfigError(f"{self._where}: output is not an ExecCredential (not a JSON object)")
        if cred.get("apiVersion") != self.api_version:
            raise ConfigError(
                f"{self._where}: plugin returned apiVersion {str(cred.get('apiVersion'))[:80]!r}, "
                f"the kubeconfig asks for {self.api_version!r}"
            )
        if cred.get("kind") != "ExecCredential":
            raise ConfigError(
                f"{self._where}: output is not an ExecCredential (kind is not ExecCredential)"
            )
        status = cred.get("status")
        if not isinstance(status, dict):
            raise ConfigError(f"{self._where}: ExecCredential has no status")
        token = status.get("token")
        has_cert = bool(status.get("clientCertificateData") or status.get("clientKeyData"))
        if token is not None and not isinstance(token, str):
            raise ConfigError(f"{self._where}: status.token is not a string")
        if not token:
            if has_cert:
                raise ConfigError(
                    f"{self._where}: plugin returned a client certificate; kubemock-fleet "
                    "supports only exec plugins that return a token"
                )
            raise ConfigError(
                f"{self._where}: plugin returned neither a token nor a client certificate"
            )
        if has_cert and not self._warned_cert:
            self._warned_cert = True
            log.warning(
                "%s returned a client certificate as well as a token; using the token only",
                self._where,
            )
        expiry: datetime | None = None
        raw_expiry = status.get("expirationTimestamp")
        if raw_expiry:
            if not isinstance(raw_expiry, str):
                raise ConfigError(f"{self._where}: status.expirationTimestamp is not a string")
            try:
                expiry = _parse_timestamp(raw_expiry)
            except ValueError as exc:
                raise ConfigError(
                    f"{self._where}: status.expirationTimestamp {raw_expiry[:40]!r} is not an RFC 3339 time"
                ) from exc
        self._token = token
        self._expiry = expiry
        return token

    def __repr__(self) -> str:
        return f"ExecCredentialPlugin(command={self.command!r}, api_version={self.api_version!r})"
