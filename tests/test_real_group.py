"""The tests on the session's real control plane all go to one pytest-xdist worker.

The controller sends tests to workers by id alone (``tests/conftest.py``:
:func:`~tests.conftest.in_real_group`); which tests use the session's
``real_control_plane`` only their fixtures say. A test added on it but missing from the
group would start a second control plane in the other worker: this collects the whole
suite (in a child pytest, ``tests/_real_group_probe.py``) and catches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._apiserver import REPO
from tests._real_group_probe import OUT_ENV
from tests.conftest import in_real_group


def test_every_test_on_the_session_real_control_plane_and_no_other_is_in_its_group(
    tmp_path: Path,
) -> None:
    out = tmp_path / "collected.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update({"CI": "true", OUT_ENV: str(out)})  # CI=true: the real tests collected
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "--collect-only"]
    result = subprocess.run(
        [sys.executable, *argv, "-p", "tests._real_group_probe"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows: list[tuple[str, bool, bool]] = [(n, on, m) for n, on, m in json.loads(out.read_text())]
    on_it = [nodeid for nodeid, on, _marked in rows if on]
    assert len(on_it) > 30  # 43 when written: the parametrized ones and those taking it
    assert [nodeid for nodeid in on_it if not in_real_group(nodeid)] == []
    grouped_unmarked = [n for n, _on, marked in rows if in_real_group(n) and not marked]
    assert grouped_unmarked == []


@pytest.mark.parametrize(
    ("nodeid", "grouped"),
    [
        ("tests/a.py::test_x[real]", True),
        ("tests/a.py::test_x[hot-real]", True),
        ("tests/a.py::test_x[real-client]", True),
        ("tests/a.py::test_x[sandbox]", False),
        ("tests/a.py::test_x[sandbox-plain]", False),
        ("tests/a.py::test_on_a_real_control_plane_of_its_own", False),
        ("tests/a.py::test_x[unreal]", False),
    ],
)
def test_group_by_id(nodeid: str, grouped: bool) -> None:
    assert in_real_group(nodeid) is grouped
