"""fleet.api's public surface: every exported name exists and nothing private leaks."""

from __future__ import annotations

import fleet.api


def test_all_names_resolve() -> None:
    for name in fleet.api.__all__:
        assert getattr(fleet.api, name) is not None, name


def test_all_is_complete() -> None:
    public = {name for name in vars(fleet.api) if not name.startswith("_")}
    assert public == set(fleet.api.__all__)
    assert len(fleet.api.__all__) == len(set(fleet.api.__all__))


def test_exports_come_from_private_modules() -> None:
    for name in fleet.api.__all__:
        module = getattr(getattr(fleet.api, name), "__module__", None)
        if module is not None and module.startswith("fleet.api"):
            assert module.split(".")[2].startswith("_"), (name, module)
