"""Keep each package's public surface honest (trio's test_exports habit).

Every name a package's ``__init__`` re-exports must exist, be public, and be
defined in one of that package's private modules, so the surface is a curated
view of the implementation and not an accident of imports.
"""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["fleet.kube", "fleet.api"]


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_come_from_private_modules(name: str) -> None:
    package = importlib.import_module(name)
    public = [n for n in vars(package) if not n.startswith("_")]
    assert public, f"{name} exports nothing"
    for attr in public:
        obj = getattr(package, attr)
        module = getattr(obj, "__module__", None)
        if module is None or isinstance(obj, type(importlib)):
            continue
        assert module.startswith(name + "._"), f"{name}.{attr} comes from {module}"


def test_kube_surface_has_the_seam_and_its_implementations() -> None:
    kube = importlib.import_module("fleet.kube")
    for implementation in (kube.Client, kube.HotTransport, kube.FakeApiserver):
        for method in ("request", "stream"):
            assert callable(getattr(implementation, method, None)), (implementation, method)
