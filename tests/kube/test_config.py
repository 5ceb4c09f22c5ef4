"""Kubeconfig loading as kubectl does it: precedence, merging, paths, fields, TLS, errors.

TLS is checked end to end: ``trustme`` certificates, a real trio TLS server on
127.0.0.1, and a handshake through the ``ssl_context`` that ``load_config``
produced. Every error case asserts the file and the fault are named and that
no secret leaks into the message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
import yaml

from fleet.errors import ConfigError
from fleet.kube import _config
from fleet.kube._auth import BasicAuth, ExecCredentialPlugin, StaticToken, TokenFile
from fleet.kube._cluster import ClusterConfig, NoAuth
from fleet.kube._config import in_cluster_config, load_config, write_kubeconfig

SECRET = "s3cr3t-token-value"
PASSWORD = "hunter2-password"
SERVER = "https://127.0.0.1:6443"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def doc(
    *,
    server: str | None = SERVER,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    name: str = "dev",
) -> dict[str, Any]:
    """A one-context kubeconfig; ``cluster``/``user``/``context`` add or override fields."""
    cluster_body: dict[str, Any] = {} if server is None else {"server": server}
    cluster_body.update(cluster or {})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster_body}],
        "users": [{"name": name, "user": {"token": SECRET} if user is None else user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, **(context or {})}}],
        "current-context": name,
    }


def write(path: Path, content: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else yaml.safe_dump(content)
    path.write_text(text)
    return path


async def auth_header(config: ClusterConfig) -> str | None:
    return (await config.auth.headers()).get("Authorization")


@pytest.fixture(autouse=True)
def _fresh_insecure_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The insecure warning is once per process; each test starts from none given.
    monkeypatch.setattr(_config, "_warned_insecure", set())


@pytest.fixture
def no_in_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the in-cluster mount at an empty dir, so a stray real mount cannot leak in."""
    sa = tmp_path / "no-sa"
    monkeypatch.setattr(_config, "IN_CLUSTER_TOKEN_PATH", sa / "token")
    monkeypatch.setattr(_config, "IN_CLUSTER_CA_PATH", sa / "ca.crt")
    monkeypatch.setattr(_config, "IN_CLUSTER_NAMESPACE_PATH", sa / "namespace")


# --------------------------------------------------------------------------- precedence


async def test_explicit_file_wins_over_kubeconfig_env_and_home(tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.yaml", doc(server="https://explicit:6443"))
    env_file = write(tmp_path / "env.yaml", doc(server="https://env:6443"))
    write(tmp_path / "home" / ".kube" / "config", doc(server="https://home:6443"))
    config = load_config(explicit, environ={"KUBECONFIG": str(env_file)}, home=tmp_path / "home")
    assert config.server == "https://explicit:6443"
    assert config.source == f"{explicit} (context 'dev')"
    assert config.namespace == "default"
    assert await auth_header(config) == f"Bearer {SECRET}"
    assert SECRET not in repr(config)


def test_explicit_file_must_exist_even_when_others_do(tmp_path: Path) -> None:
    write(tmp_path / "home" / ".kube" / "config", doc())
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, environ={}, home=tmp_path / "home")
    assert str(info.value) == f"{missing}: kubeconfig file does not exist"


def test_empty_explicit_path_means_unset(tmp_path: Path) -> None:
    write(tmp_path / "home" / ".kube" / "config", doc(server="https://home:6443"))
    assert load_config("", environ={}, home=tmp_path / "home").server == "https://home:6443"


def test_kubeconfig_env_wins_over_home(tmp_path: Path) -> None:
    env_file = write(tmp_path / "env.yaml", doc(server="https://env:6443"))
    write(tmp_path / "home" / ".kube" / "config", doc(server="https://home:6443"))
    config = load_config(environ={"KUBECONFIG": str(env_file)}, home=tmp_path / "home")
    assert config.server == "https://env:6443"


def test_home_config_when_kubeconfig_unset(tmp_path: Path) -> None:
    home_file = write(tmp_path / "home" / ".kube" / "config", doc(context={"namespace": "ns1"}))
    config = load_config(environ={}, home=tmp_path / "home")
    assert config.server == SERVER
    assert config.namespace == "ns1"
    assert config.source.startswith(str(home_file))


async def test_kubeconfig_merge_first_file_wins_each_entry(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a" / "first.yaml",
        {
            "clusters": [{"name": "shared", "cluster": {"server": "https://first:1"}}],
            "users": [{"name": "shared", "user": {"token": "first-token"}}],
            "contexts": [{"name": "ctx-a", "context": {"cluster": "shared", "user": "shared"}}],
            # no current-context here: the second file's applies
        },
    )
    second = write(
        tmp_path / "b" / "second.yaml",
        {
            "clusters": [
                # Same name: discarded whole, the extra field does not leak into "shared".
                {
                    "name": "shared",
                    "cluster": {"server": "https://second:2", "proxy-url": "http://p:1"},
                },
                {"name": "only-second", "cluster": {"server": "http://second-only:3"}},
            ],
            "users": [{"name": "shared", "user": {"username": "u", "password": PASSWORD}}],
            "contexts": [
                {"name": "ctx-a", "context": {"cluster": "only-second", "user": "shared"}},
                {"name": "ctx-b", "context": {"cluster": "only-second", "namespace": "nb"}},
            ],
            "current-context": "ctx-a",
        },
    )
    third = write(tmp_path / "third.yaml", {"current-context": "ctx-b"})
    env = {
        "KUBECONFIG": os.pathsep.join(
            [str(tmp_path / "missing.yaml"), str(first), "", str(second), str(first), str(third)]
        )
    }
    config = load_config(environ=env, home=tmp_path)
    # current-context from the first file that sets it (second, not third); ctx-a from first.
    assert config.server == "https://first:1"
    assert await auth_header(config) == "Bearer first-token"
    assert config.source == f"{first} (context 'ctx-a')"

    other = load_config(context="ctx-b", environ=env, home=tmp_path)
    assert other.server == "http://second-only:3"
    assert other.ssl_context is None
    assert other.namespace == "nb"
    assert isinstance(other.auth, NoAuth)


def test_kubeconfig_env_with_only_missing_files(tmp_path: Path, no_in_cluster: None) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(environ={"KUBECONFIG": f"{a}{os.pathsep}{b}"}, home=tmp_path)
    assert str(info.value) == (
        f"KUBECONFIG ({a}, {b}): none of these files exist (and not running in a cluster)"
    )


def test_no_kubeconfig_anywhere(tmp_path: Path, no_in_cluster: None) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={}, home=tmp_path)
    assert str(tmp_path / ".kube" / "config") in str(info.value)
    assert "no kubeconfig found" in str(info.value)
    assert "--kubeconfig" in str(info.value)


def test_unreadable_file_in_kubeconfig_env_is_an_error(tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", doc())
    bad = tmp_path / "bad.yaml"
    bad.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(environ={"KUBECONFIG": f"{good}{os.pathsep}{bad}"}, home=tmp_path)


# --------------------------------------------------------------------------- in-cluster


def make_service_account(
    root: Path, ca: trustme.CA | None, token: str = "sa-token-1", namespace: str | None = "team-a"
) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token + "\n")
    if ca is not None:
        ca.cert_pem.write_to_path(str(root / "ca.crt"))
    if namespace is not None:
        (root / "namespace").write_text(namespace)
    return {
        "token_path": root / "token",
        "ca_path": root / "ca.crt",
        "namespace_path": root / "namespace",
    }


IN_CLUSTER_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


async def test_in_cluster_config_and_token_rotation(tmp_path: Path, autojump_clock: Any) -> None:
    sa = make_service_account(tmp_path / "sa", trustme.CA())
    config = in_cluster_config(**sa, environ=IN_CLUSTER_ENV)
    assert config.server == "https://10.96.0.1:443"
    assert config.source == "in-cluster"
    assert config.namespace == "team-a"
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(config.auth, TokenFile)

    start = trio.current_time()
    assert await auth_header(config) == "Bearer sa-token-1"
    sa["token_path"].write_text("sa-token-2")  # the kubelet rotates the projected token
    await trio.sleep(59)
    assert await auth_header(config) == "Bearer sa-token-1"  # cached for a minute
    await trio.sleep(1)
    assert await auth_header(config) == "Bearer sa-token-2"
    assert trio.current_time() - start == 60

    sa["token_path"].write_text("sa-token-3")
    await config.auth.invalidate()  # a 401: re-read at once
    assert await auth_header(config) == "Bearer sa-token-3"
    assert trio.current_time() - start == 60


def test_in_cluster_ipv6_host_and_pod_namespace(tmp_path: Path) -> None:
    sa = make_service_account(tmp_path / "sa", trustme.CA(), namespace="from-file")
    env = {
        "KUBERNETES_SERVICE_HOST": "fd00:10:96::1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "POD_NAMESPACE": "from-env",
    }
    config = in_cluster_config(**sa, environ=env)
    assert config.server == "https://[fd00:10:96::1]:6443"
    assert config.namespace == "from-env"


def test_in_cluster_defaults_namespace_and_system_cas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sa = make_service_account(tmp_path / "sa", None, namespace=None)
    with caplog.at_level(logging.WARNING, logger="fleet.kube._config"):
        config = in_cluster_config(**sa, environ=IN_CLUSTER_ENV)
    assert config.namespace == "default"
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert "system CAs" in caplog.text


def test_in_cluster_errors(tmp_path: Path) -> None:
    sa = make_service_account(tmp_path / "sa", trustme.CA())
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        in_cluster_config(**sa, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    sa["token_path"].unlink()
    with pytest.raises(ConfigError) as info:
        in_cluster_config(**sa, environ=IN_CLUSTER_ENV)
    assert str(sa["token_path"]) in str(info.value)
    assert "cannot read token file" in str(info.value)
    sa["token_path"].write_text("x")
    sa["ca_path"].write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        in_cluster_config(**sa, environ=IN_CLUSTER_ENV)
    assert str(info.value) == f"in-cluster: {sa['ca_path']} is not a PEM certificate"


async def test_falls_back_to_in_cluster_when_no_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = make_service_account(tmp_path / "sa", trustme.CA())
    monkeypatch.setattr(_config, "IN_CLUSTER_TOKEN_PATH", sa["token_path"])
    monkeypatch.setattr(_config, "IN_CLUSTER_CA_PATH", sa["ca_path"])
    monkeypatch.setattr(_config, "IN_CLUSTER_NAMESPACE_PATH", sa["namespace_path"])
    env = {**IN_CLUSTER_ENV, "KUBECONFIG": str(tmp_path / "missing.yaml")}
    config = load_config(environ=env, home=tmp_path)
    assert config.source == "in-cluster"
    assert await auth_header(config) == "Bearer sa-token-1"
    # An existing, non-empty kubeconfig wins over the in-cluster account.
    write(tmp_path / ".kube" / "config", doc())
    assert load_config(environ=IN_CLUSTER_ENV, home=tmp_path).server == SERVER
    # An explicit --kubeconfig never falls back.
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", environ=IN_CLUSTER_ENV, home=tmp_path)


# --------------------------------------------------------------------------- paths and fields


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_cert(client_ca: trustme.CA) -> trustme.LeafCert:
    return client_ca.issue_cert("alice@example.com")


async def test_relative_paths_resolve_against_the_defining_file(
    tmp_path: Path, ca: trustme.CA, client_cert: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cluster comes from one file, the user from another in a different directory.
    cluster_dir, user_dir = tmp_path / "clusters", tmp_path / "users" / "deep"
    cluster_dir.mkdir()
    user_dir.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(cluster_dir / "ca.crt"))
    client_cert.cert_chain_pems[0].write_to_path(str(user_dir / "client.crt"))
    client_cert.private_key_pem.write_to_path(str(user_dir / "client.key"))
    (user_dir / "token").write_text("file-token\n")
    cluster_file = write(
        cluster_dir / "config",
        {
            "clusters": [
                {"name": "c", "cluster": {"server": SERVER, "certificate-authority": "ca.crt"}}
            ]
        },
    )
    user_file = write(
        user_dir / "config",
        {
            "users": [
                {
                    "name": "u",
                    "user": {
                        "client-certificate": "client.crt",
                        "client-key": "./client.key",
                        "tokenFile": "token",
                    },
                },
                {
                    "name": "plugin",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1",
                            "command": "bin/plugin",
                            "interactiveMode": "Never",
                        }
                    },
                },
                {
                    "name": "on-path",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1",
                            "command": "gke-gcloud-auth-plugin",
                            "interactiveMode": "IfAvailable",
                        }
                    },
                },
            ],
            "contexts": [
                {"name": "x", "context": {"cluster": "c", "user": "u"}},
                {"name": "p", "context": {"cluster": "c", "user": "plugin"}},
                {"name": "path", "context": {"cluster": "c", "user": "on-path"}},
            ],
            "current-context": "x",
        },
    )
    env = {"KUBECONFIG": f"{cluster_file}{os.pathsep}{user_file}"}
    # Load from another working directory: resolution must not depend on it.
    monkeypatch.chdir(tmp_path)
    config = load_config(environ=env, home=tmp_path)
    assert isinstance(config.auth, TokenFile)
    assert config.auth.path == str(user_dir / "token")
    assert await auth_header(config) == "Bearer file-token"
    assert config.ssl_context is not None
    assert len(config.ssl_context.get_ca_certs()) == 1  # only the configured CA

    plugin = load_config(context="p", environ=env, home=tmp_path).auth
    assert isinstance(plugin, ExecCredentialPlugin)
    assert plugin.command == str(user_dir / "bin" / "plugin")
    on_path = load_config(context="path", environ=env, home=tmp_path).auth
    assert isinstance(on_path, ExecCredentialPlugin)
    assert on_path.command == "gke-gcloud-auth-plugin"  # PATH lookup, left alone


async def test_basic_auth_static_token_and_no_user(tmp_path: Path) -> None:
    basic = load_config(
        write(tmp_path / "b.yaml", doc(user={"username": "admin", "password": PASSWORD})),
        environ={},
    )
    assert isinstance(basic.auth, BasicAuth)
    expected = "Basic " + b64(f"admin:{PASSWORD}".encode())
    assert await auth_header(basic) == expected
    assert PASSWORD not in repr(basic.auth)

    static = load_config(write(tmp_path / "t.yaml", doc()), environ={})
    assert isinstance(static.auth, StaticToken)
    assert SECRET not in repr(static.auth)

    no_user = doc()
    del no_user["contexts"][0]["context"]["user"]
    assert isinstance(load_config(write(tmp_path / "n.yaml", no_user), environ={}).auth, NoAuth)


async def test_token_file_wins_over_token(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file")
    path = write(tmp_path / "c.yaml", doc(user={"token": SECRET, "tokenFile": "tok"}))
    config = load_config(path, environ={})
    assert await auth_header(config) == "Bearer from-file"


def test_server_url_forms(tmp_path: Path, ca: trustme.CA) -> None:
    http = load_config(write(tmp_path / "h.yaml", doc(server="http://127.0.0.1:8080/")), environ={})
    assert http.server == "http://127.0.0.1:8080"
    assert http.ssl_context is None
    # A bare host:port: https when TLS is configured, http otherwise (client-go DefaultServerURL).
    bare = load_config(write(tmp_path / "b.yaml", doc(server="127.0.0.1:8080")), environ={})
    assert bare.server == "http://127.0.0.1:8080"
    with_ca = load_config(
        write(
            tmp_path / "c.yaml",
            doc(
                server="127.0.0.1:6443",
                cluster={"certificate-authority-data": b64(ca.cert_pem.bytes())},
            ),
        ),
        environ={},
    )
    assert with_ca.server == "https://127.0.0.1:6443"
    prefixed = load_config(
        write(tmp_path / "p.yaml", doc(server="https://rancher.example/k8s/clusters/c-1/")),
        environ={},
    )
    assert prefixed.server == "https://rancher.example/k8s/clusters/c-1"


def test_default_context_verifies_against_system_cas(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", doc()), environ={})
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert config.ssl_context.check_hostname is True


def test_insecure_warns_once_through_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", doc(cluster={"insecure-skip-tls-verify": True}))
    with caplog.at_level(logging.WARNING, logger="fleet.kube._config"):
        config = load_config(path, environ={})
        load_config(path, environ={})
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_NONE
    assert config.ssl_context.check_hostname is False
    warnings = [r for r in caplog.records if "insecure-skip-tls-verify" in r.getMessage()]
    assert len(warnings) == 1
    assert SERVER in warnings[0].getMessage()


def test_tls_server_name_and_namespace(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        doc(cluster={"tls-server-name": "kube.internal"}, context={"namespace": "ns"}),
    )
    config = load_config(path, environ={})
    assert config.tls_server_name == "kube.internal"
    assert config.namespace == "ns"


async def test_exec_user_gets_cluster_info(tmp_path: Path, ca: trustme.CA) -> None:
    path = write(
        tmp_path / "c.yaml",
        doc(
            cluster={
                "certificate-authority-data": b64(ca.cert_pem.bytes()),
                "tls-server-name": "kube.internal",
                "extensions": [
                    {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}
                ],
            },
            user={
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": "plugin",
                    "args": ["get-token"],
                    "env": [{"name": "A", "value": "1"}],
                    "provideClusterInfo": True,
                }
            },
        ),
    )
    plugin = load_config(path, environ={}).auth
    assert isinstance(plugin, ExecCredentialPlugin)
    assert plugin.args == ("get-token",)
    assert plugin.exec_info() == {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {
                "server": SERVER,
                "tls-server-name": "kube.internal",
                "certificate-authority-data": b64(ca.cert_pem.bytes()),
                "config": {"audience": "x"},
            },
        },
    }


def test_data_certificates_go_through_a_private_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_cert: trustme.LeafCert
) -> None:
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path: str = real_mkdtemp(*args, **kwargs)
        made.append(Path(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)  # the module _config uses
    user = {
        "client-certificate-data": b64(client_cert.cert_chain_pems[0].bytes()),
        "client-key-data": b64(client_cert.private_key_pem.bytes()),
    }
    config = load_config(write(tmp_path / "c.yaml", doc(user=user)), environ={})
    assert config.ssl_context is not None
    assert len(made) == 1
    assert not made[0].exists()  # deleted right after loading


# --------------------------------------------------------------------------- TLS, end to end


def server_context(
    cert: trustme.LeafCert, require_client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    if require_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        require_client_ca.configure_trust(ctx)
    return ctx


GREETING = b"hello"


async def serve_tls(nursery: trio.Nursery, ctx: ssl.SSLContext) -> int:
    """A TLS server on 127.0.0.1 that greets each client that completes a handshake."""

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            await stream.send_all(GREETING)
        except trio.BrokenResourceError:
            pass  # the client failed the handshake: that is what some tests want
        finally:
            await stream.aclose()

    listeners = await nursery.start(trio.serve_ssl_over_tcp, handler, 0, ctx)
    return int(listeners[0].transport_listener.socket.getsockname()[1])


async def greet(config: ClusterConfig, port: int) -> bytes:
    """Handshake through ``config.ssl_context`` and read the greeting."""
    assert config.ssl_context is not None
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(
        tcp,
        config.ssl_context,
        server_hostname=config.tls_server_name or "127.0.0.1",
        # Strict about the close: a server that drops us must not read as a clean EOF.
        https_compatible=False,
    )
    try:
        await stream.do_handshake()
        # TLS 1.3: a rejected client certificate shows only on the first read.
        return bytes(await stream.receive_some(len(GREETING)))
    finally:
        await stream.aclose()


@pytest.fixture
def mtls_files(
    tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA, client_cert: trustme.LeafCert
) -> Callable[[bool], Path]:
    def make(as_data: bool) -> Path:
        if as_data:
            cluster = {"certificate-authority-data": b64(ca.cert_pem.bytes())}
            user = {
                "client-certificate-data": b64(client_cert.cert_chain_pems[0].bytes()),
                "client-key-data": b64(client_cert.private_key_pem.bytes()),
            }
        else:
            ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
            client_cert.private_key_pem.write_to_path(str(tmp_path / "client-key.pem"))
            cluster = {"certificate-authority": "ca.pem"}
            user = {"client-certificate": "client.pem", "client-key": "client-key.pem"}
        return write(tmp_path / f"mtls-{as_data}.yaml", doc(cluster=cluster, user=user))

    return make


@pytest.mark.parametrize("as_data", [False, True], ids=["files", "data"])
async def test_mutual_tls_handshake(
    mtls_files: Callable[[bool], Path],
    ca: trustme.CA,
    client_ca: trustme.CA,
    as_data: bool,
) -> None:
    config = load_config(mtls_files(as_data), environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca.issue_cert("127.0.0.1"), client_ca))
        assert await greet(config, port) == GREETING
        nursery.cancel_scope.cancel()


async def test_mutual_tls_server_refuses_a_client_without_certificate(
    tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA
) -> None:
    # The counterpart of the test above: the server really does require the client cert.
    path = write(
        tmp_path / "c.yaml", doc(cluster={"certificate-authority-data": b64(ca.cert_pem.bytes())})
    )
    config = load_config(path, environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca.issue_cert("127.0.0.1"), client_ca))
        with pytest.raises(trio.BrokenResourceError):
            await greet(config, port)
        nursery.cancel_scope.cancel()


async def test_handshake_fails_with_the_wrong_ca(tmp_path: Path, ca: trustme.CA) -> None:
    other = trustme.CA()
    path = write(
        tmp_path / "c.yaml",
        doc(cluster={"certificate-authority-data": b64(other.cert_pem.bytes())}),
    )
    config = load_config(path, environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca.issue_cert("127.0.0.1")))
        with pytest.raises(trio.BrokenResourceError) as info:
            await greet(config, port)
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()


async def test_system_cas_do_not_trust_an_unknown_ca(tmp_path: Path, ca: trustme.CA) -> None:
    config = load_config(write(tmp_path / "c.yaml", doc()), environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca.issue_cert("127.0.0.1")))
        with pytest.raises(trio.BrokenResourceError):
            await greet(config, port)
        nursery.cancel_scope.cancel()


async def test_insecure_handshake_accepts_an_unknown_ca(tmp_path: Path) -> None:
    unknown = trustme.CA()
    path = write(tmp_path / "c.yaml", doc(cluster={"insecure-skip-tls-verify": True}))
    config = load_config(path, environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(unknown.issue_cert("not-this-host")))
        assert await greet(config, port) == GREETING
        nursery.cancel_scope.cancel()


async def test_tls_server_name_verifies_the_named_host(tmp_path: Path, ca: trustme.CA) -> None:
    cluster = {
        "certificate-authority-data": b64(ca.cert_pem.bytes()),
        "tls-server-name": "kube.internal",
    }
    config = load_config(write(tmp_path / "c.yaml", doc(cluster=cluster)), environ={})
    async with trio.open_nursery() as nursery:
        port = await serve_tls(nursery, server_context(ca.issue_cert("kube.internal")))
        assert await greet(config, port) == GREETING
        # Without the name, the certificate does not match 127.0.0.1.
        unnamed = ClusterConfig(server=config.server, ssl_context=config.ssl_context)
        with pytest.raises(trio.BrokenResourceError):
            await greet(unnamed, port)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- errors


def _encrypted_key(cert: trustme.LeafCert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )


def _with_file(path: Path, text: str, content: dict[str, Any]) -> dict[str, Any]:
    path.write_text(text)
    return content


def _with_extra_user(extra: dict[str, Any]) -> dict[str, Any]:
    d = doc()
    d["users"][0]["user"] = {**d["users"][0]["user"], **extra}
    return d


@pytest.fixture
def error_cases(
    tmp_path: Path, client_cert: trustme.LeafCert
) -> Iterator[dict[str, tuple[Callable[[Path], dict[str, Any] | str], str]]]:
    def d_path(relative: str) -> Path:
        """The resolved path of a file next to the kubeconfig under test."""
        return Path(os.path.abspath(tmp_path)) / relative

    other = trustme.CA().issue_cert("bob")
    cert_data = b64(client_cert.cert_chain_pems[0].bytes())
    key_data = b64(client_cert.private_key_pem.bytes())
    # name -> (content given the dir, expected fault)
    yield {
        "yaml syntax": (
            lambda d: f"clusters:\n- name: a\n  cluster: {{server: x\nusers: [token: {SECRET}\n",
            "YAML syntax error at line",
        ),
        "not a mapping": (
            lambda d: f"- {SECRET}\n- b\n",
            "not a kubeconfig (the top level is a list, not a mapping)",
        ),
        "clusters not a list": (
            lambda d: {**doc(), "clusters": {"a": 1}},
            "clusters must be a list",
        ),
        "entry without name": (
            lambda d: {**doc(), "users": [{"user": {"token": SECRET}}]},
            "users[0] has no name",
        ),
        "no current context": (
            lambda d: {**doc(), "current-context": ""},
            "no current-context is set; pass --context",
        ),
        "unknown context": (
            lambda d: {**doc(), "current-context": "prod"},
            "context 'prod' not found",
        ),
        "unknown cluster": (
            lambda d: doc(context={"cluster": "prod"}),
            "context 'dev': cluster 'prod' not found",
        ),
        "unknown user": (
            lambda d: doc(context={"user": "root"}),
            "context 'dev': user 'root' not found",
        ),
        "no server": (lambda d: doc(server=None), "cluster 'dev': has no server"),
        "bad scheme": (
            lambda d: doc(server="ftp://h:1"),
            "server 'ftp://h:1' is not an http:// or https:// URL",
        ),
        "bad base64": (
            lambda d: doc(cluster={"certificate-authority-data": "%%%not base64"}),
            "cluster 'dev': certificate-authority-data is not valid base64",
        ),
        "bad base64 key": (
            lambda d: _with_extra_user(
                {"client-certificate-data": cert_data, "client-key-data": "@@@"}
            ),
            "user 'dev': client-key-data is not valid base64",
        ),
        "missing ca file": (
            lambda d: doc(cluster={"certificate-authority": "nope/ca.crt"}),
            f"cannot read certificate-authority {d_path('nope/ca.crt')} (No such file or directory)",
        ),
        "ca not pem": (
            lambda d: doc(cluster={"certificate-authority-data": b64(b"just text")}),
            "certificate-authority-data is not a PEM certificate",
        ),
        "ca broken pem": (
            lambda d: doc(
                cluster={
                    "certificate-authority-data": b64(
                        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                    )
                }
            ),
            "certificate-authority-data is not a valid PEM certificate",
        ),
        "unreadable cert": (
            lambda d: _with_extra_user({"client-certificate": ".", "client-key": "k.pem"}),
            f"user 'dev': cannot read client-certificate {d_path('.')} (Is a directory)",
        ),
        "cert not pem": (
            lambda d: _with_extra_user(
                {"client-certificate-data": b64(b"garbage"), "client-key-data": key_data}
            ),
            "user 'dev': client-certificate-data is not a PEM certificate",
        ),
        "key not pem": (
            lambda d: _with_extra_user(
                {"client-certificate-data": cert_data, "client-key-data": b64(b"garbage")}
            ),
            "user 'dev': client-key-data is not a PEM private key",
        ),
        "wrong key": (
            lambda d: _with_extra_user(
                {
                    "client-certificate-data": cert_data,
                    "client-key-data": b64(other.private_key_pem.bytes()),
                }
            ),
            "user 'dev': client-key-data does not match client-certificate-data",
        ),
        "encrypted key": (
            lambda d: _with_extra_user(
                {
                    "client-certificate-data": cert_data,
                    "client-key-data": b64(_encrypted_key(client_cert)),
                }
            ),
            "user 'dev': client-key-data is encrypted",
        ),
        "cert without key": (
            lambda d: _with_extra_user({"client-certificate-data": cert_data}),
            "user 'dev': client-key (or client-key-data) must be set",
        ),
        "file and data": (
            lambda d: doc(
                cluster={"certificate-authority": "ca", "certificate-authority-data": "eA=="}
            ),
            "certificate-authority and certificate-authority-data are both set",
        ),
        "insecure with ca": (
            lambda d: doc(
                cluster={"certificate-authority-data": "eA==", "insecure-skip-tls-verify": True}
            ),
            "certificate-authority and insecure-skip-tls-verify cannot both be set",
        ),
        "insecure not bool": (
            lambda d: doc(cluster={"insecure-skip-tls-verify": "yes please"}),
            "insecure-skip-tls-verify must be true or false",
        ),
        "proxy": (
            lambda d: doc(cluster={"proxy-url": "http://proxy:3128"}),
            "proxy-url is not supported",
        ),
        "auth provider": (
            lambda d: doc(
                user={"auth-provider": {"name": "gcp", "config": {"access-token": SECRET}}}
            ),
            "user 'dev': auth-provider 'gcp' is not supported (removed from kubectl in 1.26); use an exec credential plugin",
        ),
        "impersonation": (
            lambda d: _with_extra_user({"as": "system:admin"}),
            "impersonation (as) is not supported",
        ),
        "two methods": (
            lambda d: _with_extra_user({"username": "u", "password": PASSWORD}),
            "more than one authentication method (token, basic auth)",
        ),
        "missing token file": (
            lambda d: doc(user={"tokenFile": "gone"}),
            f"user 'dev': cannot read token file {d_path('gone')}",
        ),
        "empty token file": (
            lambda d: _with_file(d / "empty", "  \n", doc(user={"tokenFile": "empty"})),
            f"user 'dev': token file {d_path('empty')} is empty",
        ),
        "exec without command": (
            lambda d: doc(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1"}}),
            "user 'dev': exec has no command",
        ),
        "exec always interactive": (
            lambda d: doc(
                user={
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": "x",
                        "interactiveMode": "Always",
                    }
                }
            ),
            "exec plugin 'x': interactiveMode Always needs a terminal",
        ),
    }


ERROR_CASES = [
    "yaml syntax",
    "not a mapping",
    "clusters not a list",
    "entry without name",
    "no current context",
    "unknown context",
    "unknown cluster",
    "unknown user",
    "no server",
    "bad scheme",
    "bad base64",
    "bad base64 key",
    "missing ca file",
    "ca not pem",
    "ca broken pem",
    "unreadable cert",
    "cert not pem",
    "key not pem",
    "wrong key",
    "encrypted key",
    "cert without key",
    "file and data",
    "insecure with ca",
    "insecure not bool",
    "proxy",
    "auth provider",
    "impersonation",
    "two methods",
    "missing token file",
    "empty token file",
    "exec without command",
    "exec always interactive",
]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_every_fault_is_one_clear_line(
    case: str,
    tmp_path: Path,
    error_cases: dict[str, tuple[Callable[[Path], dict[str, Any] | str], str]],
) -> None:
    make, fault = error_cases[case]
    path = write(tmp_path / "kubeconfig.yaml", make(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fault in message
    assert "\n" not in message
    assert SECRET not in message
    assert PASSWORD not in message


def test_error_cases_are_all_exercised(error_cases: dict[str, Any]) -> None:
    assert sorted(error_cases) == sorted(ERROR_CASES)


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "clusters:\n- name: a\n  cluster:\n    server: [oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}: YAML syntax error at line 5: ")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "c.yaml", doc())
    real = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real(self)

    # The tests run as root, where chmod 000 does not stop a read: fake the refusal.
    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: cannot read kubeconfig (Permission denied)"

    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(directory, environ={})
    assert str(info.value) == f"{directory}: kubeconfig is a directory, not a file"


def test_explicit_context_not_found_names_all_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", doc(name="a"))
    b = write(tmp_path / "b.yaml", doc(name="b"))
    with pytest.raises(ConfigError) as info:
        load_config(context="c", environ={"KUBECONFIG": f"{a}{os.pathsep}{b}"})
    assert str(info.value) == f"KUBECONFIG ({a}, {b}): context 'c' not found"


# --------------------------------------------------------------------------- writing


async def test_write_kubeconfig_round_trip(tmp_path: Path, ca: trustme.CA) -> None:
    path = tmp_path / "out" / "kubeconfig"
    returned = write_kubeconfig(
        path, server="https://127.0.0.1:7443", token=SECRET, ca_data=ca.cert_pem.bytes()
    )
    assert returned == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path, environ={})
    assert config.server == "https://127.0.0.1:7443"
    assert config.source == f"{path} (context 'kubemock-fleet')"
    assert await auth_header(config) == f"Bearer {SECRET}"
    assert config.ssl_context is not None
    assert len(config.ssl_context.get_ca_certs()) == 1

    # kubectl, a client no one here wrote, reads it the same way.
    result = await trio.run_process(
        ["kubectl", "config", "view", "--kubeconfig", str(path), "--minify", "--raw", "-o", "json"],
        capture_stdout=True,
        capture_stderr=True,
    )
    view = json.loads(result.stdout)
    assert view["current-context"] == "kubemock-fleet"
    assert view["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:7443"
    assert view["clusters"][0]["cluster"]["certificate-authority-data"] == b64(ca.cert_pem.bytes())
    assert view["users"][0]["user"]["token"] == SECRET


def test_write_kubeconfig_replaces_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text("old")
    path.chmod(0o644)
    write_kubeconfig(
        path, server="http://127.0.0.1:8080", insecure=False, context_name="sandbox", namespace="ns"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config(path, environ={})
    assert config.ssl_context is None
    assert config.namespace == "ns"
    assert config.source == f"{path} (context 'sandbox')"
    assert [p.name for p in tmp_path.iterdir()] == ["kc"]  # no temp file left behind

    write_kubeconfig(path, server="https://127.0.0.1:8443", insecure=True)
    insecure = load_config(path, environ={})
    assert insecure.ssl_context is not None
    assert insecure.ssl_context.verify_mode == ssl.CERT_NONE


def test_write_kubeconfig_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an http:// or https:// URL"):
        write_kubeconfig(tmp_path / "kc", server="127.0.0.1:80")
    with pytest.raises(ConfigError, match="cannot both be set"):
        write_kubeconfig(tmp_path / "kc", server="https://h:1", ca_data=b"x", insecure=True)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as info:
        write_kubeconfig(blocker / "kc", server="https://h:1", token=SECRET)
    assert str(info.value).startswith(f"{blocker / 'kc'}: cannot write kubeconfig")
    assert SECRET not in str(info.value)


def test_missing_cluster_across_files_names_the_defining_file_and_the_list(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", doc(name="a", context={"cluster": "nope"}))
    b = write(tmp_path / "b.yaml", doc(name="b"))
    with pytest.raises(ConfigError) as info:
        load_config(environ={"KUBECONFIG": f"{a}{os.pathsep}{b}"})
    assert str(info.value) == f"{a}: context 'a': cluster 'nope' not found in KUBECONFIG ({a}, {b})"
