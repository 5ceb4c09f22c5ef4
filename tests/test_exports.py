"""Keep each package's public surface honest (trio's test_exports habit).

- Every package and every bottom module has an ``__all__``, and every name in
  it exists.
- The classes and functions a package's ``__init__`` re-exports are defined in
  that package (in one of its private modules), so the surface is a curated
  view of the implementation and not an accident of imports.
- Nothing imports another package's private module: ``from fleet.kube import
  Client``, never ``from fleet.kube._client import Client``. Tests may reach
  the private modules of the package they test (``tests/<dir>`` is that
  package's; :data:`TESTS_OF`).
"""

from __future__ import annotations
import __future__

import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = [
    "fleet.kube",
    "fleet.api",
    "fleet.machinery",
    "fleet.sandbox",
    "fleet.realcp",
    "fleet.metricsapi",
    "fleet.controlplane",
    "fleet.coordinator",
    "fleet.supervise",
    "fleet.up",
    "fleet.cli",
    "shards",
    "crdgen",
    "bench",
]
"""The packages: each shows in its ``__init__`` what the others may use."""

MODULES = ["fleet.errors", "fleet.wire", "fleet._settings", "fleet._metrics"]
"""Single-module units of the layers; their names are public as they stand."""

UNITS = PACKAGES + MODULES
SOURCES = ["fleet", "shards", "crdgen", "bench"]

TESTS_OF = {
    "api": "fleet.api",
    "bench": "bench",
    "cli": "fleet.cli",
    "controlplane": "fleet.controlplane",
    "coordinator": "fleet.coordinator",
    "crdgen": "crdgen",
    "kube": "fleet.kube",
    "machinery": "fleet.machinery",
    "metricsapi": "fleet.metricsapi",
    "realcp": "fleet.realcp",
    "sandbox": "fleet.sandbox",
    "shards": "shards",
    "supervise": "fleet.supervise",
    "test_up.py": "fleet.up",
}
"""Which package's private modules the tests under ``tests/<key>`` may import."""


def unit_of(module: str) -> str | None:
    """The package or module of ``UNITS`` that ``module`` belongs to (the longest match)."""
    matches = [u for u in UNITS if module == u or module.startswith(u + ".")]
    return max(matches, key=len) if matches else None


@pytest.mark.parametrize("name", UNITS)
def test_every_name_in_all_exists(name: str) -> None:
    unit = importlib.import_module(name)
    exported = getattr(unit, "__all__", None)
    assert exported, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ names something twice"
    missing = [attr for attr in exported if not hasattr(unit, attr)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_in_all_and_come_from_the_package(name: str) -> None:
    package = importlib.import_module(name)
    public = {n for n, v in vars(package).items() if not n.startswith("_")}
    # submodules, and `from __future__ import annotations`
    public -= {
        n
        for n, v in vars(package).items()
        if inspect.ismodule(v) or isinstance(v, __future__._Feature)
    }
    assert public <= set(package.__all__), f"{name} has public names outside __all__"
    for attr in package.__all__:
        obj = getattr(package, attr)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants and instances say nothing about where they are defined
        module = obj.__module__
        assert module.startswith(name + "."), f"{name}.{attr} comes from {module}"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # ``from fleet.sandbox import _server`` reaches a private module too
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def _own_unit(path: Path) -> str | None:
    relative = path.relative_to(ROOT)
    if relative.parts[0] == "tests":
        key = relative.parts[1] if len(relative.parts) > 1 else ""
        return TESTS_OF.get(key)
    module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
    return unit_of(module)


def _reaches_a_private_module(own: str | None, module: str) -> bool:
    unit = unit_of(module)
    if unit is None or unit == own or (unit in MODULES and module == unit):
        return False
    rest = module[len(unit) :].split(".")
    return any(part.startswith("_") and part != "__main__" for part in rest if part)


def test_nothing_imports_another_packages_private_module() -> None:
    offences = []
    files = [p for source in [*SOURCES, "tests"] for p in sorted((ROOT / source).rglob("*.py"))]
    assert len(files) > 100
    for path in files:
        own = _own_unit(path)
        for line, module in _imports(path):
            if _reaches_a_private_module(own, module):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offences, "imports of another package's private module:\n" + "\n".join(offences)


def test_kube_surface_has_the_seam_and_its_implementations() -> None:
    kube = importlib.import_module("fleet.kube")
    for implementation in (
        kube.Client,
        kube.HotTransport,
        kube.FakeApiserver,
        kube.MemoryApiserver,
        kube.MemoryClient,
    ):
        assert issubclass(implementation, kube.BaseRequester), implementation
        for method in ("request", "stream", "request_batch"):
            assert callable(getattr(implementation, method, None)), (implementation, method)
