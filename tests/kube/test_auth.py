"""The Auth implementations: static headers, rotating token files, exec credential plugins.

The exec plugin is a real Python script run with ``sys.executable``; it counts
its runs in a file and records what it received (``KUBERNETES_EXEC_INFO``,
args, env), so caching, re-runs and the protocol are observed from outside.
Token file re-reads run on the autojump clock.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.errors import ConfigError
from fleet.kube._auth import (
    EXEC_API_V1,
    EXEC_API_V1BETA1,
    BasicAuth,
    ExecCredentialPlugin,
    StaticToken,
    TokenFile,
)

SECRET = "s3cr3t-plugin-token"

# --------------------------------------------------------------------------- static


async def test_static_token() -> None:
    auth = StaticToken(SECRET)
    assert await auth.headers() == {"Authorization": f"Bearer {SECRET}"}
    (await auth.headers())["Authorization"] = "changed"  # callers get their own dict
    await auth.invalidate()
    assert await auth.headers() == {"Authorization": f"Bearer {SECRET}"}
    assert SECRET not in repr(auth)


async def test_basic_auth() -> None:
    auth = BasicAuth("admin", "p@ss:word")
    header = (await auth.headers())["Authorization"]
    assert header.startswith("Basic ")
    assert base64.b64decode(header.removeprefix("Basic ")) == b"admin:p@ss:word"
    assert "p@ss" not in repr(auth)


# --------------------------------------------------------------------------- token file


async def test_token_file_rereads_once_a_minute(tmp_path: Path, autojump_clock: Any) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    auth = TokenFile(path)
    start = trio.current_time()
    assert await auth.headers() == {"Authorization": "Bearer one"}
    path.write_text("two")
    await trio.sleep(30)
    assert await auth.headers() == {"Authorization": "Bearer one"}
    await trio.sleep(29.5)
    assert await auth.headers() == {"Authorization": "Bearer one"}
    await trio.sleep(0.5)
    assert await auth.headers() == {"Authorization": "Bearer two"}
    assert trio.current_time() - start == 60
    # The next re-read is a minute after this one, not after the first.
    path.write_text("three")
    await trio.sleep(59)
    assert await auth.headers() == {"Authorization": "Bearer two"}
    await trio.sleep(1)
    assert await auth.headers() == {"Authorization": "Bearer three"}


async def test_token_file_invalidate_forces_a_reread(tmp_path: Path, autojump_clock: Any) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    auth = TokenFile(path)
    assert await auth.headers() == {"Authorization": "Bearer one"}
    path.write_text("two")
    await auth.invalidate()
    assert await auth.headers() == {"Authorization": "Bearer two"}
    assert trio.current_time() == 0


async def test_token_file_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "token"
    path.write_text("one")
    auth = TokenFile(path, clock=lambda: now[0], reread_interval=5)
    assert await auth.headers() == {"Authorization": "Bearer one"}
    path.write_text("two")
    now[0] += 4.9
    assert await auth.headers() == {"Authorization": "Bearer one"}
    now[0] += 0.1
    assert await auth.headers() == {"Authorization": "Bearer two"}


async def test_token_file_keeps_the_last_token_when_a_reread_fails(
    tmp_path: Path, autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text("good-token")
    auth = TokenFile(path, source="in-cluster")
    assert await auth.headers() == {"Authorization": "Bearer good-token"}
    path.unlink()
    await trio.sleep(60)
    with caplog.at_level(logging.WARNING, logger="fleet.kube._auth"):
        assert await auth.headers() == {"Authorization": "Bearer good-token"}
    assert f"in-cluster: {path}: cannot read token file" in caplog.text
    assert "good-token" not in caplog.text
    path.write_text("   ")
    await auth.invalidate()
    assert await auth.headers() == {"Authorization": "Bearer good-token"}


async def test_token_file_fallback_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert await TokenFile(path, fallback="from-load").headers() == {
        "Authorization": "Bearer from-load"
    }
    with pytest.raises(ConfigError) as info:
        await TokenFile(path, source="/k/config: user 'u'").headers()
    assert str(info.value) == (
        f"/k/config: user 'u': {path}: cannot read token file (No such file or directory)"
    )
    path.write_text("\n")
    with pytest.raises(ConfigError, match="token file is empty"):
        await TokenFile(path).headers()
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        await TokenFile(path).headers()


async def test_token_file_concurrent_callers_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    reads = 0
    real = trio.Path.read_text

    async def counting(self: trio.Path, *args: Any, **kwargs: Any) -> str:
        nonlocal reads
        reads += 1
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(trio.Path, "read_text", counting)
    auth = TokenFile(path)
    results: list[dict[str, str]] = []

    async def call() -> None:
        results.append(await auth.headers())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(call)
    assert reads == 1
    assert results == [{"Authorization": "Bearer one"}] * 20


# --------------------------------------------------------------------------- exec plugin

PLUGIN = r"""
import json, os, sys

state = sys.argv[1]
with open(os.path.join(state, "behaviour.json")) as fh:
    behaviour = json.load(fh)
count_path = os.path.join(state, "count")
n = int(open(count_path).read()) + 1 if os.path.exists(count_path) else 1
with open(count_path, "w") as fh:
    fh.write(str(n))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(os.path.join(state, "call-%d.json" % n), "w") as fh:
    json.dump({"info": info, "args": sys.argv[2:], "env": {
        k: os.environ.get(k) for k in ("PLUGIN_REGION", "FROM_BASE", "OVERRIDDEN")
    }}, fh)

mode = behaviour.get("mode", "token")
if mode == "fail":
    sys.stderr.write("\n  error: refresh token expired for %s  \nsecond line\n" % behaviour.get("secret", ""))
    sys.exit(3)
if mode == "garbage":
    sys.stdout.write("token=" + behaviour.get("secret", "") + " not json")
    sys.exit(0)
status = {}
if mode in ("token", "both"):
    status["token"] = "%s-%d" % (behaviour.get("secret", "tok"), n)
if mode in ("cert", "both"):
    status["clientCertificateData"] = "-----BEGIN CERTIFICATE-----\n..."
    status["clientKeyData"] = "-----BEGIN PRIVATE KEY-----\n..."
if "expiry" in behaviour:
    status["expirationTimestamp"] = behaviour["expiry"]
json.dump({
    "apiVersion": behaviour.get("apiVersion", info["apiVersion"]),
    "kind": behaviour.get("kind", "ExecCredential"),
    "status": status,
}, sys.stdout)
"""


T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Plugin:
    """A real plugin script in tmp_path, its state dir and a settable wall clock."""

    dir: Path
    now: datetime = T0
    base_environ: dict[str, str] = field(default_factory=dict)

    def behave(self, **behaviour: Any) -> None:
        (self.dir / "behaviour.json").write_text(json.dumps(behaviour))

    @property
    def runs(self) -> int:
        path = self.dir / "count"
        return int(path.read_text()) if path.exists() else 0

    def call(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.dir / f"call-{n}.json").read_text())
        return result

    def make(self, **kwargs: Any) -> ExecCredentialPlugin:
        kwargs.setdefault("api_version", EXEC_API_V1)
        extra_args = kwargs.pop("extra_args", [])
        return ExecCredentialPlugin(
            sys.executable,
            args=[str(self.dir / "plugin.py"), str(self.dir), *extra_args],
            now=lambda: self.now,
            base_environ=self.base_environ,
            **kwargs,
        )


@pytest.fixture
def plugin(tmp_path: Path) -> Plugin:
    (tmp_path / "plugin.py").write_text(PLUGIN)
    p = Plugin(tmp_path, base_environ={"FROM_BASE": "base", "OVERRIDDEN": "base"})
    p.behave()
    return p


async def bearer(auth: ExecCredentialPlugin) -> str:
    return (await auth.headers())["Authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize("api_version", [EXEC_API_V1, EXEC_API_V1BETA1])
async def test_exec_protocol(plugin: Plugin, api_version: str) -> None:
    plugin.behave(secret="abc")
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority-data": "Q0E="}
    auth = plugin.make(
        api_version=api_version,
        env={"PLUGIN_REGION": "eu-1", "OVERRIDDEN": "mine"},
        extra_args=["get-token", "--cluster=dev"],
        cluster_info=cluster,
    )
    assert await bearer(auth) == "abc-1"
    call = plugin.call(1)
    assert call["info"] == {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False, "cluster": cluster},
    }
    assert call["args"] == ["get-token", "--cluster=dev"]
    assert call["env"] == {"PLUGIN_REGION": "eu-1", "FROM_BASE": "base", "OVERRIDDEN": "mine"}


async def test_exec_info_without_cluster_info(plugin: Plugin) -> None:
    auth = plugin.make(api_version=EXEC_API_V1BETA1, interactive_mode=None)
    await auth.headers()
    assert plugin.call(1)["info"]["spec"] == {"interactive": False}


async def test_exec_token_cached_until_expiry(plugin: Plugin) -> None:
    plugin.behave(expiry=(T0 + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    auth = plugin.make()
    assert await bearer(auth) == "tok-1"
    plugin.now = T0 + timedelta(minutes=9, seconds=59)
    assert await bearer(auth) == "tok-1"
    assert plugin.runs == 1
    plugin.now = T0 + timedelta(minutes=10)
    assert await bearer(auth) == "tok-2"
    assert plugin.runs == 2


async def test_exec_token_without_expiry_cached_until_invalidated(plugin: Plugin) -> None:
    auth = plugin.make()
    assert await bearer(auth) == "tok-1"
    plugin.now = T0 + timedelta(days=365)
    assert await bearer(auth) == "tok-1"
    await auth.invalidate()  # the server said 401
    assert await bearer(auth) == "tok-2"
    assert await bearer(auth) == "tok-2"
    assert plugin.runs == 2


async def test_exec_invalidate_reruns_before_expiry(plugin: Plugin) -> None:
    plugin.behave(expiry="2030-01-01T13:00:00.123456789+00:00")  # Go's nanoseconds
    auth = plugin.make()
    assert await bearer(auth) == "tok-1"
    await auth.invalidate()
    assert await bearer(auth) == "tok-2"
    assert plugin.runs == 2


async def test_exec_concurrent_callers_share_one_run(plugin: Plugin) -> None:
    auth = plugin.make()
    tokens: list[str] = []

    async def call() -> None:
        tokens.append(await bearer(auth))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(call)
    assert tokens == ["tok-1"] * 10
    assert plugin.runs == 1


async def test_exec_failure_names_command_and_first_stderr_line(plugin: Plugin) -> None:
    plugin.behave(mode="fail")
    auth = plugin.make(source="/k/config: user 'dev'")
    with pytest.raises(ConfigError) as info:
        await auth.headers()
    assert str(info.value) == (
        f"/k/config: user 'dev': exec plugin {sys.executable!r} failed (exit code 3): "
        "error: refresh token expired for"
    )
    # A failure is not cached: the next call runs the plugin again.
    plugin.behave()
    assert await bearer(auth) == "tok-2"


async def test_exec_command_not_found_gives_install_hint(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-plugin")
    auth = ExecCredentialPlugin(
        missing, install_hint="Install it:\n  brew install no-such-plugin", source="f: user 'u'"
    )
    with pytest.raises(ConfigError) as info:
        await auth.headers()
    assert str(info.value) == (
        f"f: user 'u': exec plugin {missing!r}: command not found "
        "(Install it: brew install no-such-plugin)"
    )


async def test_exec_command_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match="command is not executable"):
        await ExecCredentialPlugin(str(script)).headers()


@pytest.mark.parametrize(
    ("behaviour", "fault"),
    [
        ({"mode": "garbage"}, "output is not an ExecCredential (not JSON)"),
        (
            {"apiVersion": EXEC_API_V1BETA1},
            f"plugin returned apiVersion {EXEC_API_V1BETA1!r}, the kubeconfig asks for {EXEC_API_V1!r}",
        ),
        ({"kind": "Secret"}, "kind is not ExecCredential"),
        (
            {"mode": "cert"},
            "plugin returned a client certificate; kubemock-fleet supports only exec plugins that return a token",
        ),
        ({"mode": "none"}, "plugin returned neither a token nor a client certificate"),
        (
            {"expiry": "next tuesday"},
            "status.expirationTimestamp 'next tuesday' is not an RFC 3339 time",
        ),
    ],
)
async def test_exec_bad_output(plugin: Plugin, behaviour: dict[str, Any], fault: str) -> None:
    plugin.behave(secret=SECRET, **behaviour)
    with pytest.raises(ConfigError) as info:
        await plugin.make().headers()
    message = str(info.value)
    assert message.startswith(f"exec plugin {sys.executable!r}: ")
    assert fault in message
    assert SECRET not in message
    assert "\n" not in message


async def test_exec_token_with_certificate_uses_the_token(
    plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    plugin.behave(mode="both")
    auth = plugin.make()
    with caplog.at_level(logging.WARNING, logger="fleet.kube._auth"):
        assert await bearer(auth) == "tok-1"
        await auth.invalidate()
        assert await bearer(auth) == "tok-2"
    assert caplog.text.count("using the token only") == 1


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"interactive_mode": "Always"}, "interactiveMode Always needs a terminal"),
        ({"interactive_mode": None}, f"interactiveMode must be set for {EXEC_API_V1}"),
        ({"interactive_mode": "Sometimes"}, "unknown interactiveMode 'Sometimes'"),
        (
            {"api_version": "client.authentication.k8s.io/v1alpha1"},
            "v1alpha1 is no longer supported",
        ),
        ({"api_version": "v2"}, "unknown apiVersion 'v2'"),
    ],
)
def test_exec_configuration_errors(kwargs: dict[str, Any], fault: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExecCredentialPlugin("aws", source="/k/config: user 'u'", **kwargs)
    assert str(info.value).startswith("/k/config: user 'u': exec plugin 'aws': ")
    assert fault in str(info.value)
