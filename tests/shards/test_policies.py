"""Lifecycle policies: MockStatuses chosen by selector and priority, jitter and branches by uid."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

import pytest
import trio

from fleet.api import PodSelector, load_mock_status
from fleet.errors import InputError
from fleet.kube import MemoryApiserver
from shards._policies import (
    PodFacts,
    Policy,
    PolicyIndex,
    compile_policy,
    jitter_draw,
    unit_draw,
)
from shards._scripts import compile_timeline
from tests.shards.test_engine import CRS, EVENTS, PODS, node_cr, phase, pod, start
from tests.shards.test_mockstatus import SCRIPTS, phases_until

OTHER_PODS = "/api/v1/namespaces/other/pods"


def policy(
    name: str,
    selector: dict[str, Any],
    *steps: dict[str, Any],
    priority: int = 0,
    branches: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "priority": priority, "steps": list(steps)}
    if branches is not None:
        spec["branches"] = branches
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "MockStatus",
        "metadata": {"name": name},
        "spec": spec,
    }


def labelled(name: str, node: str, labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    obj = pod(name, node, **annotations)
    obj["metadata"]["labels"] = labels
    return obj


def facts(namespace: str = "default", owners: tuple[str, ...] = (), **labels: str) -> PodFacts:
    return PodFacts(namespace, labels, {"team": "a"}, owners)


# -- matching ---------------------------------------------------------------------------------


def test_policies_match_by_namespace_labels_annotations_owners_then_priority() -> None:
    index = PolicyIndex()
    web = compile_policy("default", "web", PodSelector(matchLabels={"app": "web"}), 0)
    jobs = compile_policy("default", "jobs", PodSelector(ownerKinds=["Job"]), 5)
    team = compile_policy(
        "default", "team", PodSelector(namespaces=["*"], matchAnnotations={"team": "a"}), -1
    )
    expr = compile_policy(
        "default",
        "canary",
        PodSelector.model_validate(
            {"matchExpressions": [{"key": "track", "operator": "In", "values": ["canary"]}]}
        ),
        0,
    )
    for p in (web, jobs, team, expr):
        index.put(p)
    assert index.match(facts(app="web")) == "default/web"
    assert index.match(facts(owners=("Job",), app="web")) == "default/jobs"  # priority 5 wins
    assert index.match(facts(app="db")) == "default/team"  # only the low-priority catch-all
    assert index.match(facts("other", app="web")) == "default/team"  # web: own namespace only
    # Equal priorities: the alphabetically first namespace/name wins (canary < web).
    assert index.match(facts(app="web", track="canary")) == "default/canary"
    index.remove("default/team")
    assert index.match(facts("other", app="web")) == ""


def test_a_match_is_cached_on_the_shared_facts_until_the_policies_change() -> None:
    index = PolicyIndex()
    index.put(compile_policy("default", "web", PodSelector(matchLabels={"app": "web"}), 0))
    shared = facts(app="web")
    assert index.match(shared) == "default/web"
    assert (shared.generation, shared.match) == (index.generation, "default/web")
    shared.match = "cached"  # the cache answers, no selector runs again
    assert index.match(shared) == "cached"
    index.put(compile_policy("default", "all", PodSelector(), 9))
    assert index.match(shared) == "default/all"


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"matchLabels": {"bad key!": "x"}}, "spec.selector: "),
        ({"namespaces": []}, "spec.selector.namespaces: empty"),
        ({"namespaces": ["*", "a"]}, 'spec.selector.namespaces: "*" stands alone'),
    ],
)
def test_bad_selectors(selector: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("*", r"\*")):
        compile_policy("default", "p", PodSelector.model_validate(selector), 0)


# -- draws ------------------------------------------------------------------------------------

JITTERED = policy(
    "jit",
    {},
    {"after": "0s", "phase": "Pending"},
    {"after": "10s", "phase": "Running", "jitter": "20s"},
    {"after": "100s", "phase": "Succeeded", "jitter": "60s", "distribution": "normal"},
)

BRANCHING = policy(
    "fork",
    {},
    {"after": "0s", "phase": "Pending"},
    {"after": "5s", "phase": "Running"},
    branches=[
        {"name": "done", "weight": 95, "steps": [{"after": "1m", "phase": "Succeeded"}]},
        {
            "name": "crash",
            "weight": 5,
            "steps": [
                {
                    "after": "30s",
                    "phase": "Running",
                    "containers": [
                        {
                            "waiting": {"reason": "CrashLoopBackOff"},
                            "ready": False,
                            "restartCount": 3,
                        }
                    ],
                }
            ],
        },
    ],
)


def _with_namespace(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "metadata": {**raw["metadata"], "namespace": "default"}}


def test_draws_are_fixed_by_uid() -> None:
    assert unit_draw("uid-1", "x") == unit_draw("uid-1", "x")
    assert unit_draw("uid-1", "x") != unit_draw("uid-2", "x")
    assert 0 < unit_draw("uid-1", "x") < 1
    normal = [jitter_draw(f"u{i}", "s", "normal") for i in range(4000)]
    uniform = [jitter_draw(f"u{i}", "s", "uniform") for i in range(4000)]
    assert all(0 <= x <= 1 for x in normal + uniform)
    assert abs(statistics.mean(normal) - 0.5) < 0.01
    assert abs(statistics.stdev(normal) - 1 / 6) < 0.01
    assert abs(statistics.stdev(uniform) - (1 / 12) ** 0.5) < 0.01


def test_jittered_steps_are_drawn_per_pod_within_their_window() -> None:
    timeline = compile_timeline(load_mock_status(_with_namespace(JITTERED)))
    assert timeline.fixed is None
    plans = [timeline.plan_for(f"uid-{i}") for i in range(2000)]
    running = [plan.steps[1].at for plan in plans]
    done = [plan.steps[2].at for plan in plans]
    assert min(running) >= 10 and max(running) <= 30
    assert all(float(at).is_integer() for at in running + done)  # whole seconds
    assert len(set(running)) == 21  # every second of the window is drawn
    assert min(done) >= 100 and max(done) <= 160
    assert abs(statistics.mean(done) - 130) < 1
    # The same uid gets the same Plan (the same object, shared with its lookalikes).
    assert timeline.plan_for("uid-7") is plans[7]
    assert all(plan.steps[2].started_at == plan.steps[1].at for plan in plans)


def test_branches_are_taken_by_weight_and_uid() -> None:
    timeline = compile_timeline(load_mock_status(_with_namespace(BRANCHING)))
    finals = Counter(timeline.plan_for(f"pod-{i}").final.phase for i in range(4000))
    assert finals.keys() == {"Succeeded", "Running"}
    assert abs(finals["Running"] / 4000 - 0.05) < 0.015
    crash = next(
        timeline.plan_for(f"pod-{i}")
        for i in range(4000)
        if timeline.plan_for(f"pod-{i}").final.phase == "Running"
    )
    state = crash.final.containers
    assert (state.kind, state.reason, state.restart_count) == ("waiting", "CrashLoopBackOff", 3)
    # Two Plans in all: the pods of a branch share one.
    assert len({id(timeline.plan_for(f"pod-{i}")) for i in range(4000)}) == 2


def test_a_plain_mock_status_is_one_shared_plan() -> None:
    raw = policy("plain", {}, {"after": "0s", "phase": "Running"})
    timeline = compile_timeline(load_mock_status(_with_namespace(raw)))
    assert timeline.fixed is not None
    assert timeline.plan_for("a") is timeline.plan_for("b") is timeline.fixed


# -- end to end on the in-memory apiserver ----------------------------------------------------


async def test_pods_follow_the_policy_their_labels_select(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        policy(
            "web-slow",
            {"matchLabels": {"app": "web"}},
            {"after": "10s", "phase": "Running"},
            {"after": "30s", "phase": "Succeeded"},
        ),
    )
    api.create(
        SCRIPTS,
        policy(
            "web-fails",
            {"matchLabels": {"app": "web", "tier": "canary"}},
            {"after": "5s", "phase": "Failed"},
            priority=10,
        ),
    )
    api.create(
        SCRIPTS,
        {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "MockStatus",
            "metadata": {"name": "named"},
            "spec": {"steps": [{"after": "3s", "phase": "Failed"}]},
        },
    )
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, labelled("web", "n1", {"app": "web"}))
    api.create(PODS, labelled("canary", "n1", {"app": "web", "tier": "canary"}))
    api.create(PODS, labelled("db", "n1", {"app": "db"}))
    # A pod's own annotation wins over every policy: a MockStatus name, or delays.
    api.create(PODS, labelled("annotated", "n1", {"app": "web"}, mockStatus="named"))
    api.create(PODS, labelled("delayed", "n1", {"app": "web"}, delayRunning="1s"))
    await trio.sleep(1)
    assert phase(api, "db") == "Running"  # no policy: Running at once
    assert phase(api, "delayed") == "Pending"
    seen = await phases_until(api, "web", created + 35)
    assert [p for _, p in seen] == ["Pending", "Running", "Succeeded"]
    assert 10 <= seen[1][0] - created < 11
    assert 30 <= seen[2][0] - created < 31
    assert phase(api, "canary") == "Failed"  # the higher priority
    assert phase(api, "annotated") == "Failed"
    assert phase(api, "delayed") == "Running"


async def test_policies_created_changed_and_deleted_after_their_pods(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(OTHER_PODS, {**labelled("elsewhere", "n1", {"app": "batch"})})
    api.create(PODS, labelled("job", "n1", {"app": "batch"}))
    await trio.sleep(2)
    assert phase(api, "job") == "Running"
    # A policy created later applies from the pod's creation (no replay), in its own
    # namespace only unless it says otherwise.
    api.create(
        SCRIPTS,
        policy(
            "batch",
            {"matchLabels": {"app": "batch"}},
            {"after": "0s", "phase": "Running"},
            {"after": "20s", "phase": "Succeeded"},
        ),
    )
    seen = await phases_until(api, "job", created + 25)
    assert [p for _, p in seen] == ["Running", "Succeeded"]
    assert 20 <= seen[1][0] - created < 21
    other = api.get(f"{OTHER_PODS}/elsewhere")
    assert other is not None and other["status"]["phase"] == "Running"
    # Widened to every namespace: the other pod, 25 s old, is past its 20 s at once.
    api.patch(f"{SCRIPTS}/batch", {"spec": {"selector": {"namespaces": ["*"]}}})
    await trio.sleep(2)
    other = api.get(f"{OTHER_PODS}/elsewhere")
    assert other is not None and other["status"]["phase"] == "Succeeded"
    # Deleted: pods already following it keep its steps; new pods no longer match.
    api.create(
        SCRIPTS,
        policy(
            "late",
            {"matchLabels": {"app": "late"}},
            {"after": "0s", "phase": "Running"},
            {"after": "30s", "phase": "Failed"},
        ),
    )
    await trio.sleep(1)
    started = trio.current_time()
    api.create(PODS, labelled("follower", "n1", {"app": "late"}))
    await trio.sleep(2)
    api.delete(f"{SCRIPTS}/late")
    api.create(PODS, labelled("newcomer", "n1", {"app": "late"}))
    seen = await phases_until(api, "follower", started + 33)
    assert [p for _, p in seen] == ["Running", "Failed"]
    assert phase(api, "newcomer") == "Running"


async def test_an_invalid_policy_matches_nothing(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    # Out of order: the CRD schema cannot say so; the shard's validation does.
    api.create(
        SCRIPTS,
        policy(
            "broken",
            {"matchLabels": {"app": "web"}},
            {"after": "9s", "phase": "Running"},
            {"after": "3s", "phase": "Failed"},
            priority=100,
        ),
    )
    api.create(
        SCRIPTS,
        policy("fallback", {"matchLabels": {"app": "web"}}, {"after": "4s", "phase": "Failed"}),
    )
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, labelled("p", "n1", {"app": "web"}))
    await trio.sleep(6)
    assert phase(api, "p") == "Failed"  # the valid, lower-priority policy
    # Shard 0 says why on the MockStatus: condition Valid and a Warning Event.
    assert valid(api, "broken")[:3] == (
        "False",
        "InvalidMockStatus",
        'MockStatus default/broken: spec.steps: step 1: after "3s" must be later than '
        'step 0\'s "9s"',
    )
    assert valid(api, "fallback")[:2] == ("True", "Valid")
    events = [
        (e.body["involvedObject"]["kind"], e.body["involvedObject"]["name"], e.body["reason"])
        for e in api.log("POST", EVENTS)
        if e.body["type"] == "Warning"  # the kubelets' own Normal events aside
    ]
    assert events == [("MockStatus", "broken", "InvalidMockStatus")]
    # Fixed: Valid turns True, and the policy (priority 100) takes the pods from their creation.
    writes = len(api.log("PATCH", f"{SCRIPTS}/broken/status"))
    api.patch(f"{SCRIPTS}/broken", {"spec": {"steps": [{"after": "1s", "phase": "Succeeded"}]}})
    await trio.sleep(2)
    assert valid(api, "broken")[:2] == ("True", "Valid")
    assert len(api.log("PATCH", f"{SCRIPTS}/broken/status")) == writes + 1  # no echo loop
    api.create(PODS, labelled("q", "n1", {"app": "web"}))
    await trio.sleep(3)
    assert phase(api, "q") == "Succeeded"
    assert phase(api, "p") == "Failed"  # a terminal phase stays


def valid(api: MemoryApiserver, name: str) -> tuple[str, str, str, int]:
    obj = api.get(f"{SCRIPTS}/{name}")
    assert obj is not None
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "Valid"]
    return (
        condition["status"],
        condition["reason"],
        condition["message"],
        condition.get("observedGeneration", 0),
    )


async def test_jitter_and_branches_on_the_shard_are_deterministic_by_uid(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, policy("jit", {"matchLabels": {"app": "jit"}}, *JITTERED["spec"]["steps"]))
    engine, _scope = await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    for i in range(6):
        api.create(PODS, labelled(f"p{i}", "n1", {"app": "jit"}))
    await trio.sleep(1)
    records = {r.name: r for r in engine.pods.pods.values()}
    expected = {}
    timeline = compile_timeline(load_mock_status(_with_namespace(JITTERED)))
    for name, record in records.items():
        assert record.policy == "default/jit"
        assert record.plan == timeline.plan_for(record.uid)
        expected[name] = record.plan.steps[1].at
    assert len(set(expected.values())) > 1  # the pods do not move in lockstep
    first = min(expected, key=lambda n: expected[n])
    seen = await phases_until(api, first, created + expected[first] + 1)
    assert [p for _, p in seen] == ["Pending", "Running"]
    assert expected[first] <= seen[1][0] - created < expected[first] + 1


async def test_pods_of_one_template_are_matched_once(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Matching costs one walk over the policies per distinct set of pod facts, not per pod,
    and none per tick or status change."""
    calls: list[str] = []
    original = Policy.matches

    def counting(self: Policy, facts: PodFacts) -> bool:
        calls.append(self.key)
        return original(self, facts)

    monkeypatch.setattr(Policy, "matches", counting)
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    for name, app in (("a", "web"), ("b", "db"), ("c", "cache")):
        api.create(
            SCRIPTS,
            policy(
                name,
                {"matchLabels": {"app": app}},
                {"after": "0s", "phase": "Running"},
                {"after": "5m", "phase": "Succeeded"},
            ),
        )
    await start(api, nursery)
    await trio.sleep(2)
    for i in range(20):
        api.create(PODS, labelled(f"web-{i}", "n1", {"app": "web"}))
    await trio.sleep(40)
    assert all(phase(api, f"web-{i}") == "Running" for i in range(20))
    assert calls == ["default/a"]  # one template, matched by the first policy tried
    # A new policy: every pod re-matched, still once for the template.
    api.create(
        SCRIPTS, policy("z", {"matchLabels": {"app": "none"}}, {"after": "0s", "phase": "Running"})
    )
    await trio.sleep(1)
    assert calls == ["default/a", "default/a"]


async def test_match_annotations_and_owner_kinds_on_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        policy(
            "jobs",
            {"ownerKinds": ["Job"], "matchAnnotations": {"team": "batch"}},
            {"after": "0s", "phase": "Running"},
            {"after": "5s", "phase": "Succeeded"},
        ),
    )
    await start(api, nursery)
    await trio.sleep(2)

    def job_pod(name: str, team: str, kind: str = "Job") -> dict[str, Any]:
        obj = labelled(name, "n1", {"job-name": "j"})
        obj["metadata"]["annotations"] = {"team": team, "per-pod": name}
        obj["metadata"]["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": kind, "name": "j", "uid": "j-uid"}
        ]
        return obj

    api.create(PODS, job_pod("done", "batch"))
    api.create(PODS, job_pod("other-team", "web"))
    api.create(PODS, job_pod("not-a-job", "batch", kind="ReplicaSet"))
    await trio.sleep(8)
    assert phase(api, "done") == "Succeeded"
    assert phase(api, "other-team") == "Running"
    assert phase(api, "not-a-job") == "Running"
