"""A pytest plugin for ``tests/test_real_group.py``: after collecting, write each test's id,
whether it may use the session's ``real_control_plane`` and whether it is marked ``real``
(JSON, to the file named by ``$REAL_GROUP_PROBE_OUT``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import on_the_session_real_control_plane

OUT_ENV = "REAL_GROUP_PROBE_OUT"


def pytest_collection_finish(session: pytest.Session) -> None:
    rows = [
        [item.nodeid, on_the_session_real_control_plane(item), item.get_closest_marker("real")]
        for item in session.items
    ]
    rows = [[nodeid, on, marked is not None] for nodeid, on, marked in rows]
    Path(os.environ[OUT_ENV]).write_text(json.dumps(rows), encoding="utf-8")
