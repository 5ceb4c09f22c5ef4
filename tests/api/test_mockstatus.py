"""The MockStatus CR: a small, validated script of pod phases over time."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fleet.api import MockStatus, load_mock_status
from fleet.errors import InputError

SAMPLE = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: crash-then-fail, namespace: default}
spec:
  steps:
    - after: 0s
      phase: Pending
      containers: [{waiting: {reason: ErrImagePull}}]
    - after: 20s
      phase: Running
      containers: [{name: sidecar, ready: false, restartCount: 2}]
    - after: 2m
      phase: Failed
      reason: OOMKilled
      containers: [{terminated: {exitCode: 137, reason: OOMKilled, message: out of memory}}]
"""


def test_sample_parses() -> None:
    script = load_mock_status(yaml.safe_load(SAMPLE))
    assert isinstance(script, MockStatus)
    steps = script.spec.steps
    assert [s.phase for s in steps] == ["Pending", "Running", "Failed"]
    assert [s.after_seconds() for s in steps] == [0.0, 20.0, 120.0]
    waiting = steps[0].containers[0].waiting
    assert waiting is not None and waiting.reason == "ErrImagePull"
    sidecar = steps[1].containers[0]
    assert (sidecar.name, sidecar.ready, sidecar.restart_count) == ("sidecar", False, 2)
    terminated = steps[2].containers[0].terminated
    assert terminated is not None and (terminated.exit_code, terminated.reason) == (
        137,
        "OOMKilled",
    )
    assert (
        script.model_dump(mode="json", exclude_defaults=True)["spec"]
        == yaml.safe_load(SAMPLE)["spec"]
    )


def test_waiting_defaults_to_container_creating() -> None:
    script = load_mock_status(
        {
            "metadata": {"name": "s"},
            "spec": {
                "steps": [{"after": "1s", "phase": "Pending", "containers": [{"waiting": {}}]}]
            },
        }
    )
    waiting = script.spec.steps[0].containers[0].waiting
    assert waiting is not None and waiting.reason == "ContainerCreating"


def _script(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "MockStatus",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"steps": steps},
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "spec.steps: List should have at least 1 item"),
        (
            [{"after": "10s", "phase": "Running"}, {"after": "5s", "phase": "Failed"}],
            'spec.steps: step 1: after "5s" must be later than step 0\'s "10s"',
        ),
        (
            [{"after": "10s", "phase": "Succeeded"}, {"after": "20s", "phase": "Running"}],
            "spec.steps: step 1 follows the terminal step 0 (Succeeded): a terminal phase sticks",
        ),
        (
            [{"after": "-1s", "phase": "Running"}],
            'spec.steps[0].after: invalid duration "-1s": must not be negative',
        ),
        ([{"after": "soon", "phase": "Running"}], 'spec.steps[0].after: invalid duration "soon"'),
        ([{"phase": "Running"}], "spec.steps[0].after: required"),
        ([{"after": "1s", "phase": "Unknown"}], "spec.steps[0].phase: Input should be 'Pending'"),
        (
            [{"after": "1s", "phase": "Failed", "containers": [{"waiting": {}, "terminated": {}}]}],
            "spec.steps[0].containers[0]: a container is either waiting or terminated, not both",
        ),
        (
            [{"after": "1s", "phase": "Failed", "containers": [{"terminated": {"exitCode": 256}}]}],
            "spec.steps[0].containers[0].terminated.exitCode: Input should be less than or equal to 255",
        ),
    ],
)
def test_bad_scripts(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InputError) as info:
        load_mock_status(_script(steps))
    assert str(info.value).startswith(f"MockStatus ns/s: {message}")


def test_spec_is_required() -> None:
    with pytest.raises(InputError, match=r"^MockStatus s: spec: required$"):
        load_mock_status({"metadata": {"name": "s"}})
