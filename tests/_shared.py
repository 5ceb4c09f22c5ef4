"""Find the project's ``shared/`` folder beside the clone, or skip (fail under CI).

Some tests read files that live outside the repository, in ``../shared`` (the
recorded apiserver transcripts, the replay tool). A developer's checkout has it;
a user's fresh clone does not, and those tests skip there with one clear reason.
CI lays ``shared/`` next to the clone and sets ``CI=true``: there its absence
fails the test, so it can never pass by skipping.

    from tests._shared import shared_path

    @pytest.fixture
    def tool() -> Path:
        return shared_path("tools", "replay-transcripts.py")

Call it from a sync fixture or test: a skip raised inside an async (trio) test
loses its reason on the way out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SHARED", "shared_path"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
"""``shared/`` beside the repository's root."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_path(*parts: str) -> Path:
    """``SHARED/<parts>``; skips the calling test when it is missing (fails with ``CI=true``)."""
    path = SHARED.joinpath(*parts)
    if path.exists():
        return path
    reason = f"needs {path} (the project's shared/ folder beside the clone), which is missing"
    if _in_ci():
        pytest.fail(f"{reason}; CI=true: it must be there", pytrace=False)
    pytest.skip(reason)
