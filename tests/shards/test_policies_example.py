"""``examples/policies.yaml`` applied to ``kubemock-fleet up``: policies pick pods by selector.

The real command in a child process, driven with kubectl as a user would: the
policies report ``Valid``, the Deployment's pods follow the ``web`` policy (no
annotation on them) and the canary's the higher-priority ``canary`` one, each
pod's branch and jitter being the ones its uid draws.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.api import load_mock_status
from shards._scripts import compile_timeline
from tests._up_process import kubectl, kubectl_json, up_process, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policies.yaml"
pytestmark = pytest.mark.kubectl


def _documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8")))


def test_example_policies_validate_and_select_the_example_pods() -> None:
    docs = _documents()
    policies = {
        d["metadata"]["name"]: load_mock_status(d) for d in docs if d["kind"] == "MockStatus"
    }
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert set(policies) == {"web", "canary"}
    for deployment in deployments:
        template = deployment["spec"]["template"]["metadata"]
        assert "annotations" not in template  # chosen by selector, not named
    web = compile_timeline(policies["web"])
    assert web.policy is not None and web.fixed is None  # jitter and branches
    finals = {
        web.plan_for(f"uid-{i}").final.behaviours[0][1].__class__.__name__ for i in range(200)
    }
    assert finals == {"ReadinessFlap", "CrashLoop"}


def _ready(pod: dict[str, Any]) -> str:
    conditions = pod["status"].get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Ready"), "")


def test_example_on_up(tmp_path: Path) -> None:
    with up_process(tmp_path, "--nodes", "2") as up:
        kubectl(up.kubeconfig, "apply", "-f", str(EXAMPLE))

        def valid() -> bool:
            items = kubectl_json(up.kubeconfig, "get", "mockstatuses")["items"]
            return (
                len(items) == 2
                and all(
                    c["type"] == "Valid" and c["status"] == "True"
                    for item in items
                    for c in (item.get("status") or {}).get("conditions") or []
                )
                and all((item.get("status") or {}).get("conditions") for item in items)
            )

        wait_until(valid, 20, "both policies Valid=True")
        columns = kubectl(up.kubeconfig, "get", "mst").stdout.splitlines()[0].split()
        assert columns == ["NAME", "VALID", "PRIORITY", "AGE"]

        def pods() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = kubectl_json(
                up.kubeconfig, "get", "pods", "-l", "app=policy-example"
            )["items"]
            running = [p for p in items if p["status"].get("phase") == "Running"]
            return items if len(items) == 6 and len(running) == 6 else None

        items = wait_until(pods, 40, "6 example pods Running")
        web = compile_timeline(load_mock_status(_documents()[0]))
        for pod in items:
            labels = pod["metadata"]["labels"]
            if labels["track"] == "canary":
                assert _ready(pod) == "False"  # the canary policy (priority 10) wins
                continue
            # The web policy's start, jittered by the pod's uid: 2 to 5 s after creation.
            plan = web.plan_for(pod["metadata"]["uid"])
            running_at = plan.steps[1].at
            assert 2 <= running_at <= 5
            created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"])
            started = datetime.fromisoformat(
                pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            )
            assert abs((started - created).total_seconds() - running_at) <= 1.0
