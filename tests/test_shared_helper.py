"""tests/_shared.py: skip in a clone without ../shared, fail under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import _shared


def test_missing_shared_skips_with_one_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_shared, "SHARED", tmp_path / "shared")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="shared/ folder beside the clone"):
        _shared.shared_path("tools", "replay-transcripts.py")


def test_missing_shared_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shared, "SHARED", tmp_path / "shared")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: it must be there"):
        _shared.shared_path("tools", "replay-transcripts.py")


def test_present_shared_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "shared" / "tools" / "replay-transcripts.py"
    tool.parent.mkdir(parents=True)
    tool.write_text("")
    monkeypatch.setattr(_shared, "SHARED", tmp_path / "shared")
    monkeypatch.setenv("CI", "true")
    assert _shared.shared_path("tools", "replay-transcripts.py") == tool


def test_a_fresh_clone_without_shared_skips_the_replay(tmp_path: Path) -> None:
    """The README's command in a clone with no ../shared: the replay skips, it does not fail."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    clone = tmp_path / "clone"
    shutil.copytree(root / "tests", clone / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", clone / "pyproject.toml")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "300"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/sandbox/test_replay.py",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "shared/ folder beside the clone" in result.stdout
    env["CI"] = "true"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/sandbox/test_replay.py",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:]  # an error at setup: never a skip
    assert "CI=true: it must be there" in result.stdout and "skipped" not in result.stdout
