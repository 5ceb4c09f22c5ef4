"""Scenarios end to end against the sandbox.

The async tests use ``MiniFleet`` (tests/bench/_minifleet.py: fast, in-process, no
child processes) for the fleet: Node CRs become Ready Nodes, bound pods become
Running, deletions complete. The CLI tests run the real stack (``up``: sandbox,
control plane, coordinator, shard processes).
These tests check the runner's plumbing and bookkeeping (figures non-zero and
consistent, schema valid, plots written, everything cleaned up), never timings.
"""

from __future__ import annotations

import gc
import json
import os
import ssl
import warnings
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from bench import RUN_LABEL, RunOptions, TargetInfo, load_scenario, read_report, run_scenario
from fleet.api import GROUP, VERSION, crd_manifests
from fleet.cli import app
from fleet.errors import ConfigError, InputError
from fleet.kube import Client, load_config
from fleet.sandbox import RunningSandbox
from tests._apiserver import real_binaries

from ._minifleet import MiniFleet

FAST = {
    "nodes": 3,
    "pods": 7,
    "placement": "direct",
    "scrapeInterval": 0.1,
    "timeout": 20,
    "rate": 200,
    "duration": 0.5,
}


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[Client]:
    config = load_config(sandbox.kubeconfig)
    async with Client(config) as c, Client(config) as fleet_client:
        for crd in crd_manifests():
            await c.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        await c.create("/api/v1/namespaces", {"metadata": {"name": "kube-mock-system"}})
        # The stand-in fleet lives in a nursery of this fixture's own, so its watches end
        # before its client closes (a watch outliving its client leaves a socket to the GC).
        async with trio.open_nursery() as fleet:
            await fleet.start(MiniFleet(fleet_client, "kube-mock-system").run)
            yield c
            fleet.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def _no_socket_left_to_the_collector() -> Iterator[None]:
    # A socket nobody closed is found by the collector, whose ResourceWarning is an error
    # (pyproject): collect after each test, so the test that left it fails, not a later one.
    yield
    gc.collect()


def _options(sandbox: RunningSandbox, output: Path | None) -> RunOptions:
    return RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="started"),
        output=output,
        ensure_crds=True,
    )


async def _labelled(client: Client, run_id: str) -> int:
    selector = f"{RUN_LABEL}={run_id}"
    paths = [
        "/api/v1/namespaces/kubemock-bench/pods",
        f"/apis/{GROUP}/{VERSION}/namespaces/kube-mock-system/nodes",
        "/api/v1/nodes",
    ]
    return sum([len((await client.list(p, label_selector=selector)).items) for p in paths])


async def test_kwok_ci_small(sandbox: RunningSandbox, client: Client, tmp_path: Path) -> None:
    spec = load_scenario("kwok-ci", FAST)
    report = await run_scenario(client, spec, _options(sandbox, tmp_path))

    assert report.completed and not report.notes
    assert [(s.name, s.target, s.reached, s.ok) for s in report.steps] == [
        ("nodes-ready", 3, 3, True),
        ("pods-running", 7, 7, True),
        ("pods-deleted", 7, 7, True),
    ]
    assert report.nodes_created == report.nodes_ready == 3
    assert report.pods_created == report.pods_running == report.pods_deleted == 7
    assert all(s.seconds > 0 for s in report.steps)
    assert {name: p.count for name, p in report.pod_startup.items()} == {
        "create_to_schedule": 7,
        "schedule_to_run": 7,
        "run_to_watch": 7,
        "pod_startup": 7,
        "create_to_watch_client": 7,
    }
    assert report.client_latency["create pods"].count == 7
    assert report.client_latency["delete pods"].count == 7
    assert report.client_latency[f"create nodes.{GROUP}"].count == 3
    assert report.writes_per_second > 0

    api = report.apiserver
    assert api is not None and api.latency_family == "apiserver_request_sli_duration_seconds"
    counts = {
        (r.verb, r.resource, r.subresource): r.count for r in api.requests if r.code.startswith("2")
    }
    assert counts[("POST", "pods", "")] == 7  # every create the bench made, seen by the apiserver
    assert counts[("POST", "nodes", "")] == 3  # the stand-in fleet's registrations
    assert counts[("PATCH", "pods", "status")] == 7
    assert api.requests_per_second > 0 and api.watches_peak >= 2
    rows = {row.subject: row for row in report.slo}
    assert rows["pods"].count == 7 and "POST pods" in rows and report.slo_passed

    assert report.cleanup.leftover == 0 and report.cleanup.errors == ()
    assert await _labelled(client, report.run_id) == 0
    assert read_report(tmp_path / "report.json") == report
    assert "## SLOs: PASS" in (tmp_path / "summary.md").read_text()
    # The bench's own /metrics scrapes are not load: no latency row for them.
    assert all(row.resource != "/metrics" for row in api.latency)
    assert report.plots.written == (
        "pods-by-phase.png",
        "apiserver-requests.png",
        "latency-percentiles.png",
    )
    for name in report.plots.written:
        assert (tmp_path / name).stat().st_size > 1000


async def test_churn_and_soak_small(sandbox: RunningSandbox, client: Client) -> None:
    churn = await run_scenario(
        client, load_scenario("churn", {**FAST, "rate": 40}), _options(sandbox, None)
    )
    assert churn.completed
    step = churn.steps[-1]
    assert step.name == "churn" and step.ok
    assert churn.pods_created == churn.pods_running == churn.pods_deleted == step.target > 0
    soak = await run_scenario(
        client, load_scenario("heartbeat-soak", FAST), _options(sandbox, None)
    )
    assert [(s.name, s.reached, s.ok) for s in soak.steps] == [
        ("nodes-ready", 3, True),
        ("heartbeat-soak", 3, True),
    ]
    assert soak.steps[-1].seconds >= 0.5
    assert len(soak.timeline) >= 3


async def test_failed_step_is_reported_and_cleaned_up(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    # No fleet at all: no node ever becomes Ready.
    config = load_config(sandbox.kubeconfig)
    spec = load_scenario("node-density", {**FAST, "timeout": 0.5})
    async with Client(config) as client:
        report = await run_scenario(client, spec, _options(sandbox, tmp_path))
        assert not report.completed
        assert report.steps[0].ok is False and report.steps[0].reached == 0
        reason = "0 of 3 reached within the 0.5 s timeout"
        assert report.steps[0].reason == reason
        assert report.notes[0] == f"step nodes-ready: {reason}"
        assert report.cleanup.deleted == 3 and report.cleanup.leftover == 0
        assert await _labelled(client, report.run_id) == 0
    assert json.loads((tmp_path / "report.json").read_text())["completed"] is False
    summary = (tmp_path / "summary.md").read_text()
    assert "## Result: FAIL (step nodes-ready failed" in summary, summary
    assert f"- step nodes-ready FAILED: {reason}" in summary


async def test_keep_leaves_the_evidence_and_says_how_to_delete_it(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    config = load_config(sandbox.kubeconfig)
    spec = load_scenario("node-density", {**FAST, "timeout": 0.5})
    options = RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="none"),
        output=tmp_path,
        run_id="cafe0002",
        ensure_crds=True,
        keep=True,
    )
    async with Client(config) as client:
        report = await run_scenario(client, spec, options)
        assert report.cleanup.deleted == 0 and report.cleanup.leftover == 3
        assert await _labelled(client, "cafe0002") == 3  # the Node CRs are still there
        assert any(
            note.startswith("kept (--keep): 3 objects of run cafe0002 left in place")
            for note in report.notes
        )


async def test_cancellation_still_cleans_up(
    sandbox: RunningSandbox, client: Client, tmp_path: Path
) -> None:
    spec = load_scenario("heartbeat-soak", {**FAST, "duration": 600})
    options = RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="started"),
        output=tmp_path,
        run_id="cafe0001",
    )
    with trio.move_on_after(1.5) as scope:  # Ctrl-C is a cancellation like this one
        await run_scenario(client, spec, options)
    assert scope.cancelled_caught
    assert await _labelled(client, "cafe0001") == 0
    partial = read_report(tmp_path / "report.json")
    assert not partial.completed and partial.nodes_ready == 3
    assert "the run was interrupted: figures are partial" in partial.notes


async def test_a_cleanup_stopped_by_a_signal_leaves_the_report_and_says_so(
    sandbox: RunningSandbox, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bench stopped (SIGTERM) in a long cleanup once wrote no report at all though its
    steps were done ("interrupted: no report was written"): the report is written when the
    steps are done, and again, ``interrupted`` with what is left, when the cleanup stops."""
    deleting = trio.Event()

    async def stuck(*args: object, **kwargs: object) -> None:
        deleting.set()
        await trio.sleep_forever()  # a delete-collection of thousands, on a slow apiserver

    monkeypatch.setattr(Client, "delete_collection", stuck)
    options = RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="started"),
        output=tmp_path,
        run_id="cafe0003",
    )
    with trio.CancelScope() as scope:  # the CLI's signal cancels the scenario like this
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_scenario, client, load_scenario("node-density", FAST), options)
            await deleting.wait()
            before = read_report(tmp_path / "report.json")
            assert before.completed and before.nodes_ready == 3
            assert [(s.name, s.ok) for s in before.steps] == [("nodes-ready", True)]
            assert before.cleanup.state == "running"
            assert "Cleanup: still running" in (tmp_path / "summary.md").read_text()
            scope.cancel()
    left = await _labelled(client, "cafe0003")
    assert left > 0  # the stuck cleanup deleted nothing
    after = read_report(tmp_path / "report.json")
    assert after.completed and after.steps == before.steps
    assert after.cleanup.state == "interrupted"
    assert (after.cleanup.deleted, after.cleanup.leftover) == (0, left)
    assert "the cleanup was interrupted (a signal)" in after.cleanup.errors
    summary = (tmp_path / "summary.md").read_text()
    assert f"Cleanup interrupted: 0 deleted, {left} left over." in summary


def test_cli_runs_pod_startup_on_up_with_the_real_fleet(tmp_path: Path) -> None:
    # No --kubeconfig: the bench starts what `kubemock-fleet up` does (sandbox, scheduler and
    # controllers, coordinator, one shard process) and measures the real fleet.
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "pod-startup",
            "--nodes",
            "2",
            "--pods",
            "5",
            "--no-progress",
            "--rate",
            "500",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = read_report(out / "report.json")
    assert report.parameters["rate"] == 500.0  # --rate overrides the scenario's 50 writes/s
    assert report.target.mode == "sandbox" and report.target.fleet == "started"
    assert report.completed and report.slo_passed
    assert report.nodes_created == report.nodes_ready == 2
    assert report.pods_created == report.pods_running == 5
    assert report.pod_startup["pod_startup"].count == 5
    assert report.fleet_usage is not None and report.fleet_usage.peak_rss_bytes > 0
    # Every process by component: the bench's own (holding the coordinator), the sandbox
    # and control-plane children, the shard; each step says what each spent, the summary
    # shows the table.
    names = {c.name for c in report.components}
    assert names == {"bench + coordinator", "sandbox", "control-plane", "shard 0"}
    shard = next(c for c in report.components if c.name == "shard 0")
    assert shard.pids == report.fleet_usage.pids  # the fleet's usage is the shard's alone
    assert all(step.cpu_seconds.keys() <= names for step in report.steps)
    assert sum(report.steps[0].cpu_seconds.values()) > 0
    assert "## CPU by component" in (out / "summary.md").read_text()
    assert report.cleanup.leftover == 0
    assert len(report.plots.written) == 3


@pytest.mark.real
def test_cli_runs_kwok_ci_on_a_real_control_plane_of_its_own(tmp_path: Path) -> None:
    # `bench --control-plane real`: etcd, kube-apiserver, kube-controller-manager and
    # kube-scheduler of its own, the fleet on them; every step ends, the cleanup counts what
    # is left from the apiserver. SLOs are not asserted: they are the benchmark's to
    # report, and a shared 2-core box misses them.
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "kwok-ci",
            "--nodes",
            "3",
            "--pods",
            "6",
            "--no-progress",
            "--no-plots",
            "--control-plane",
            "real",
            "--binaries",
            str(real_binaries()),
            "--output",
            str(out),
        ],
    )
    report = read_report(out / "report.json")
    # Exit 1 for failed SLOs alone (a POST pods p99 over 1 s at load 19), never for a step.
    assert result.exit_code == (0 if report.slo_passed else 1), result.output
    assert (report.target.mode, report.target.fleet) == ("real", "started")
    assert report.completed and not report.notes, report.notes
    assert [(s.name, s.reached, s.ok) for s in report.steps] == [
        ("nodes-ready", 3, True),
        ("pods-running", 6, True),
        ("pods-deleted", 6, True),
    ]
    names = {c.name for c in report.components}
    real = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    assert real <= names
    # Everything it started has stopped (kube-scheduler, which ignores SIGTERM, too).
    for component in report.components:
        if component.name in real:
            for pid in component.pids:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
    assert report.cleanup.leftover == 0 and report.cleanup.errors == ()
    assert report.cleanup.deleted >= 3


def test_cli_refuses_a_scenario_rate_given_twice(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "node-density",
            "--rate",
            "100",
            "--rate",
            "200",
            "--shards",
            "0",
            "--no-progress",
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert isinstance(result.exception, InputError), result.output
    assert "scenarios take one --rate" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_faults_on_a_cluster_of_a_kubeconfig(tmp_path: Path) -> None:
    """The faults scenario puts its own fleet behind its proxy: not on someone's cluster
    (refused before the kubeconfig is read)."""
    kubeconfig = tmp_path / "kubeconfig"
    result = CliRunner().invoke(
        app, ["bench", "faults", "--kubeconfig", str(kubeconfig), "--output", str(tmp_path)]
    )
    assert isinstance(result.exception, InputError), result.output
    assert "faults scenario runs on the bench's own apiserver only" in str(result.exception)


async def test_faults_without_its_own_apiserver_is_refused(client: Client) -> None:
    spec = load_scenario("faults", {"nodes": 2, "pods": 0})
    target = TargetInfo(server="https://127.0.0.1:1", mode="cluster", fleet="external")
    with pytest.raises(ConfigError, match="needs the bench's own apiserver"):
        await run_scenario(client, spec, RunOptions(target=target))


def test_cli_runs_a_yaml_scenario_on_its_own_sandbox(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text("type: node-density\nnodes: 2\ntimeout: 0.5s\nscrapeInterval: 0.1s\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(scenario),
            "--shards",
            "0",
            "--no-progress",
            "--output",
            str(out),
            "--no-plots",
        ],
    )
    # --shards 0: the sandbox alone, so the nodes step fails: exit 1, a partial report, nothing left.
    assert result.exit_code == 1, result.output
    assert "nodes-ready      0/2" in result.output
    report = read_report(out / "report.json")
    assert report.target.mode == "sandbox" and report.target.fleet == "none"
    assert report.scenario == "tiny" and not report.completed
    assert report.cleanup.leftover == 0
    assert report.plots.skipped == "plots not asked for (--no-plots)"


def test_cli_starts_its_fleet_with_the_settings_its_scenario_and_flags_ask_for(
    tmp_path: Path,
) -> None:
    # Both reach the shard child process (through `up`'s environment), in one fleet:
    # --traffic-profile kubelet: the apiserver serves each node's kubelet informers, and the
    # report says which ran; kwok-ci's ``kubeletEvents: false`` (KWOK's stages post no Events):
    # two registered kubelets would post ten (Starting, NodeHasSufficient*, NodeReady).
    scenario = tmp_path / "soak.yaml"
    scenario.write_text(
        "type: heartbeat-soak\nnodes: 2\nduration: 3s\nscrapeInterval: 0.5s\nkubeletEvents: false\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            str(scenario),
            "--traffic-profile",
            "kubelet",
            "--no-progress",
            "--no-plots",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = read_report(out / "report.json")
    assert report.target.traffic_profile == "kubelet"
    assert report.target.kubelet_events is False
    summary = (out / "summary.md").read_text()
    assert "traffic profile kubelet" in summary
    assert "kubelet Events off" in summary
    assert report.apiserver is not None
    served = {(r.verb, r.group, r.resource) for r in report.apiserver.requests}
    # Each informer LISTs, then WATCHes; a WATCH is counted when it ends (as kube-apiserver
    # counts it) and these are open till the fleet stops: their LISTs are what is counted.
    assert {
        ("LIST", "storage.k8s.io", "csidrivers"),
        ("LIST", "node.k8s.io", "runtimeclasses"),
        ("POST", "storage.k8s.io", "csinodes"),
    } <= served
    posted = sum(
        r.count
        for r in report.apiserver.requests
        if (r.verb, r.group, r.resource) == ("POST", "", "events")
    )
    assert posted < 5  # the control plane's own (RegisteredNode), not the kubelets'


def test_kwok_ci_runs_without_kubelet_events_as_kwok_does() -> None:
    assert load_scenario("kwok-ci").kubelet_events is False
    assert load_scenario("pod-startup").kubelet_events is None


def test_cli_refuses_a_traffic_profile_for_a_fleet_it_does_not_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "node-density",
            "--kubeconfig",
            str(tmp_path / "kc"),
            "--traffic-profile",
            "kubelet",
        ],
    )
    assert isinstance(result.exception, InputError), result.output
    assert "the bench sets it only on the fleet it starts" in str(result.exception)


@pytest.mark.parametrize("scenario", ["faults", "shard-scrape"])
def test_cli_refuses_the_kubelet_profile_where_only_lean_runs(
    scenario: str, tmp_path: Path
) -> None:
    """The faults scenario's own fleet, and bench shard-scrape (the kubelet API's scrape beside
    the Leases alone), run lean only; bench shard takes both profiles
    (tests/bench/test_shard_bench.py)."""
    result = CliRunner().invoke(
        app, ["bench", scenario, "--traffic-profile", "kubelet", "--output", str(tmp_path / "o")]
    )
    assert isinstance(result.exception, InputError), result.output
    assert "--traffic-profile lean" in str(result.exception)
    assert not (tmp_path / "o").exists()


async def test_a_scrape_cancelled_in_the_tls_handshake_closes_its_socket() -> None:
    # The runner cancels its /metrics sampler when a run ends; a scrape that was opening a
    # connection then is cancelled inside the TLS handshake. httpcore's trio backend closes
    # the socket only for an Exception there, not for a cancellation: the Client must.
    from bench._runner import _Run
    from fleet.kube import ClusterConfig

    in_handshake = trio.Event()

    async def silent_server(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()  # the ClientHello: the client waits for an answer
            in_handshake.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server = f"https://127.0.0.1:{port}"
        async with Client(
            ClusterConfig(server=server, ssl_context=ssl.create_default_context())
        ) as c:
            run = _Run(
                c,
                load_scenario("node-density", {"nodes": 1}),
                RunOptions(target=TargetInfo(server=server, mode="cluster", fleet="external")),
            )
            with trio.CancelScope() as scope:

                async def cancel_in_handshake() -> None:
                    await in_handshake.wait()
                    scope.cancel()

                nursery.start_soon(cancel_in_handshake)
                await run.scrape()
            assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_a_write_without_an_answer_counts_as_failed_not_fatal() -> None:
    # A cut connection (ProtocolError, not an ApiError) under load must not end the run.
    import httpx

    from bench._runner import _Run
    from fleet.kube import ClusterConfig

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection cut", request=request)

    async with Client(
        ClusterConfig(server="http://apiserver.test"), transport=httpx.MockTransport(cut)
    ) as c:
        spec = load_scenario("node-density", {"nodes": 3, "rate": 1000.0})
        run = _Run(
            c,
            spec,
            RunOptions(
                target=TargetInfo(server="http://apiserver.test", mode="cluster", fleet="external")
            ),
        )

        async def write(index: int) -> None:
            await c.create("/api/v1/namespaces/x/pods", {"metadata": {"name": f"p{index}"}})

        await run.write_pool(range(3), write, "create pods")
    assert (run.writes.ok, run.writes.failed) == (0, 3)
    assert "create pods" in run.writes.errors[0]


async def test_the_load_goes_through_the_writer_not_the_client() -> None:
    # run_scenario hands _Run a Rest over a HotTransport; any Rest will do here.
    import httpx

    from bench._runner import _Run
    from fleet.kube import ClusterConfig, FakeApiserver, FakeRequest, Response, Rest, json_response

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the load went through httpx: {request.method} {request.url}")

    def answer(request: FakeRequest) -> Response:
        return json_response({}, 201 if request.method == "POST" else 200)

    hot = FakeApiserver(answer)
    async with Client(
        ClusterConfig(server="http://apiserver.test"), transport=httpx.MockTransport(refuse)
    ) as c:
        spec = load_scenario("pod-startup", {"nodes": 1, "pods": 2, "placement": "direct"})
        run = _Run(
            c,
            spec,
            RunOptions(
                target=TargetInfo(server="http://apiserver.test", mode="cluster", fleet="external")
            ),
            writer=Rest(hot),
        )
        run.node_names = ["n0"]
        await run.write_pool(range(2), run.create_pod, "create pods")
        await run.write_pool([run.pod_name(0)], run.delete_pod, "delete pods")
    assert (run.writes.ok, run.writes.failed) == (3, 0)
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in hot.requests] == [
        ("POST", "pods"),
        ("POST", "pods"),
        ("DELETE", run.pod_name(0)),
    ]


async def test_a_step_recounts_from_a_list_what_its_watch_missed(
    sandbox: RunningSandbox, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch that lost events once left kwok-ci waiting 23 minutes on nodes long Ready."""
    from bench import _runner

    async def deaf(self: object, receive: trio.MemoryReceiveChannel[object]) -> None:
        async with receive:
            async for _ in receive:
                pass  # every event lost

    monkeypatch.setattr(_runner._NodeTracker, "consume", deaf)
    spec = load_scenario("node-density", FAST)
    options = RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="started"),
        output=tmp_path,
        resync_after=0.2,
    )
    report = await run_scenario(client, spec, options)
    assert report.completed and report.nodes_ready == 3
    assert any("recounted from a list" in note for note in report.notes), report.notes
    assert report.cleanup.leftover == 0


async def test_cleanup_deletes_one_by_one_when_delete_collection_fails(
    sandbox: RunningSandbox, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real apiserver answered 504 to a delete-collection of 5,000 CRs; the report then
    said 0 deleted and the cleanup waited for nothing. Counts come from the apiserver."""
    from fleet.errors import ServerError

    async def timeout(*args: object, **kwargs: object) -> None:
        raise ServerError(
            "the server was unable to return a response in time", status=504, reason="Timeout"
        )

    monkeypatch.setattr(Client, "delete_collection", timeout)
    spec = load_scenario("node-density", FAST)
    report = await run_scenario(client, spec, _options(sandbox, tmp_path))
    assert report.completed
    assert report.cleanup.deleted >= 3 and report.cleanup.leftover == 0
    assert await _labelled(client, report.run_id) == 0


def test_cli_runs_the_daemonset_scenario_on_up(tmp_path: Path) -> None:
    # The DaemonSet controller and scheduler of `up`'s control plane put a pod on every node.
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["bench", "daemonset", "--nodes", "3", "--no-progress", "--no-plots", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = read_report(out / "report.json")
    assert report.completed
    assert [(s.name, s.target, s.reached, s.ok) for s in report.steps] == [
        ("nodes-ready", 3, 3, True),
        ("pods-running", 3, 3, True),
    ]
    assert report.pods_created == report.pods_running == 3
    assert report.cleanup.leftover == 0
