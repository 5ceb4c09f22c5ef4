"""``kubemock-fleet up``: starts, tells where its kubeconfig is, answers kubectl, stops cleanly.

The process tests run the real command in a child process (``tests/_up_process``)
and drive it with kubectl and signals; the in-process tests run
:class:`fleet.up.Up` in the test's nursery, for what is easier to see from
inside (the status line, the shard children's supervision).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml

from fleet.cli import main
from fleet.errors import ComponentError
from fleet.kube import Client, load_config
from fleet.supervise import control_plane_command, sandbox_command
from fleet.up import (
    DEFAULT_TEMPLATE,
    LOOPS,
    RunningUp,
    Status,
    Up,
    UpSettings,
    load_template,
    render,
)
from fleet.up._controlplane import control_plane_settings
from tests._up_process import kubectl, kubectl_json, node_ready, up_process, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.kubectl


# --- the command, in a child process --------------------------------------------------------


def test_up_prints_kubeconfig_answers_kubectl_and_stops_on_sigterm(tmp_path: Path) -> None:
    with up_process(tmp_path, "--nodes", "2") as up:
        assert f"kubeconfig: {up.kubeconfig}" in up.stdout
        assert f"  export KUBECONFIG={up.kubeconfig}" in up.stdout
        assert up.kubeconfig.stat().st_mode & 0o077 == 0  # a bearer token inside: 0600
        assert any(line.startswith("apiserver: https://127.0.0.1:") for line in up.stdout)
        assert (
            "nodes: 2 Node CRs fleet-node-0..1 in kube-mock-system (2 created, 0 already there)"
            in up.stdout
        )

        crds = kubectl(up.kubeconfig, "get", "crd", "-o", "name").stdout.split()
        assert "customresourcedefinition.apiextensions.k8s.io/nodes.mock.zhizuqiu.cn" in crds
        assert "customresourcedefinition.apiextensions.k8s.io/mockstatuses.mock.zhizuqiu.cn" in crds
        crs = kubectl_json(up.kubeconfig, "get", "nodes.mock.zhizuqiu.cn", "-n", "kube-mock-system")
        assert sorted(item["metadata"]["name"] for item in crs["items"]) == [
            "fleet-node-0",
            "fleet-node-1",
        ]
        for name in ("fleet-node-0", "fleet-node-1"):
            wait_until(lambda n=name: node_ready(up.kubeconfig, n), 15, f"node {name} Ready")
        up.wait_for_line("nodes 2/2 Ready", 10)  # the status line (plain: stdout is a pipe)

        assert up.stop(signal.SIGTERM) == 0
    assert "SIGTERM: stopping (again to stop at once)" in up.stdout
    assert any(line.startswith("stopped; last status: nodes 2/2 Ready") for line in up.stdout)
    assert not [line for line in up.stderr if "Traceback" in line or "Error" in line], up.stderr


def test_sigint_stops_cleanly_and_data_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "state.json"
    with up_process(tmp_path, "--data", str(data), "--shards", "0") as up:
        kubectl(up.kubeconfig, "apply", "-f", str(EXAMPLES / "node-sample.yaml"))
        kubectl(up.kubeconfig, "create", "namespace", "kept")
        assert up.stop(signal.SIGINT) == 0
    assert f"state saved to {data}" in up.stdout
    saved = json.loads(data.read_text())
    names = {o["metadata"]["name"] for c in saved["collections"] for o in c["objects"]}
    assert {"node-sample", "kept"} <= names

    with up_process(tmp_path, "--data", str(data), "--shards", "0", "--nodes", "1") as up:
        assert (
            kubectl(up.kubeconfig, "get", "namespace", "kept", "-o", "name").stdout.strip()
            == "namespace/kept"
        )
        cr = kubectl_json(
            up.kubeconfig, "get", "nodes.mock.zhizuqiu.cn", "node-sample", "-n", "kube-mock-system"
        )
        assert cr["spec"]["nodeConfig"] == {"cpu": "128", "memory": "300Gi", "pods": "50"}
        assert up.stop() == 0
    assert (
        "nodes: 1 Node CRs fleet-node-0..0 in kube-mock-system (1 created, 0 already there)"
        in up.stdout
    )


def test_two_shard_processes_share_the_nodes_and_stop_on_sigterm(tmp_path: Path) -> None:
    with up_process(tmp_path, "--shards", "2", "--nodes", "6") as up:
        assert (
            "control plane: scheduler, deployment, replicaset, nodelifecycle, garbagecollector, job, cronjob, daemonset, statefulset, endpoint, endpointslice, disruption; fleet: coordinator + 2 shards"
            in up.stdout
        )
        for i in range(6):
            wait_until(
                lambda i=i: node_ready(up.kubeconfig, f"fleet-node-{i}"),
                20,
                f"fleet-node-{i} Ready",
            )
        crs = kubectl_json(
            up.kubeconfig, "get", "nodes.mock.zhizuqiu.cn", "-n", "kube-mock-system"
        )["items"]
        shards = {cr["metadata"]["labels"]["fleet.mock.zhizuqiu.cn/shard"] for cr in crs}
        assert shards == {"0", "1"}  # rendezvous hashing spreads 6 CRs over both (fixed names)
        leases = kubectl_json(up.kubeconfig, "get", "leases", "-n", "kube-mock-system")["items"]
        holders = {
            lease["metadata"]["name"]: lease["spec"].get("holderIdentity", "") for lease in leases
        }
        assert holders["kubemock-fleet-shard-0"].startswith("shard-0@")
        assert holders["kubemock-fleet-shard-1"].startswith("shard-1@")
        assert up.stop(signal.SIGTERM) == 0
    assert not [line for line in up.stderr if "Traceback" in line], up.stderr
    assert not [line for line in up.stderr if "restarting" in line], up.stderr


# --- bad flags: one clear line ---------------------------------------------------------------


def _run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["kubemock-fleet", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--disable", "bogus"], "unknown control-plane loop bogus (known: "),
        (
            ["--node-template", "missing.yaml"],
            "missing.yaml: cannot read: No such file or directory",
        ),
        (
            ["--node-template", "pod.yaml"],
            "pod.yaml: expected apiVersion mock.zhizuqiu.cn/v1alpha1, kind Node; got v1, Pod",
        ),
        (["--node-template", "bad-cpu.yaml"], "bad-cpu.yaml: "),
        (["--control-plane", "bogus"], "--control-plane: 'bogus' is not one of sandbox, real"),
        (
            ["--control-plane", "real", "--binaries", "nope"],
            "/nope: no such directory of control-plane binaries (want kube-apiserver",
        ),
        (["--control-plane", "real", "--data", "d.json"], "--data: only the sandbox keeps"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    bad = yaml.safe_load(DEFAULT_TEMPLATE)
    bad["spec"]["nodeConfig"]["cpu"] = "lots"
    (tmp_path / "bad-cpu.yaml").write_text(yaml.safe_dump(bad))
    code, err = _run_main(monkeypatch, capsys, "up", "--port", "0", *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kubemock-fleet: error: ")
    assert message in lines[0]


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    # In a child process: hypercorn leaks the socket whose bind failed (a ResourceWarning).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fleet", "up", "--port", str(port), "--kubeconfig-out", str(tmp_path / "kc")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"kubemock-fleet: error: --port {port}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize(
    "args", [["--nodes", "-1"], ["--shards", "-2"], ["--port", "70000"], ["--bogus"]]
)
def test_bad_flags_are_usage_errors(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run_main(monkeypatch, capsys, "up", *args)
    assert code == 2
    assert args[0] in err
    assert "Traceback" not in err


# --- in process ----------------------------------------------------------------------------

# Stopping an in-process fleet cancels its writes in flight; the tests collect garbage before
# they end so that anything such a cancellation left unfinished is reported inside them.


async def test_up_in_process_drives_nodes_and_reports_status(tmp_path: Path) -> None:
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=3))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        assert (running.nodes_created, running.nodes_existing) == (3, 0)
        assert running.kubeconfig == tmp_path / "kc"
        with trio.fail_after(15):
            while up.status().nodes_ready < 3:  # noqa: ASYNC110 - polling the store is the point
                await trio.sleep(0.1)
        status = up.status()
        assert (status.nodes, status.nodes_ready) == (3, 3)
        up.stop()
    gc.collect()
    # The coordinator released its leader Lease on the way out, while the apiserver still answered.
    assert running.sandbox is not None
    app = running.sandbox.app
    lease = app.store.get(
        ("coordination.k8s.io", "leases"), "kube-mock-system", "kubemock-fleet-coordinator"
    )
    assert lease is not None and not lease["spec"].get("holderIdentity")


@pytest.mark.parametrize("disabled", [frozenset(), frozenset({"scheduler"})])
async def test_shards_zero_means_no_fleet_and_loops_switch_off(
    tmp_path: Path, disabled: frozenset[str]
) -> None:
    up = Up(
        UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=1, shards=0, disabled=disabled)
    )
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        assert running.loops == tuple(name for name in LOOPS if name not in disabled)
        async with Client(load_config(running.kubeconfig)) as client:
            await client.create("/api/v1/namespaces/default/pods", pod)
            await trio.sleep(1.0)
            conditions = (await client.get("/api/v1/namespaces/default/pods/p"))["status"].get(
                "conditions", []
            )
        assert running.sandbox is not None
        store = running.sandbox.app.store
        assert store.count(("mock.zhizuqiu.cn", "nodes")) == 1  # the CR is there...
        assert store.count(("", "nodes")) == 0  # ...but nothing drives it
        assert store.count(("coordination.k8s.io", "leases")) == 0
        scheduled = [c for c in conditions if c["type"] == "PodScheduled"]
        if disabled:
            assert scheduled == []  # no scheduler looked at it
        else:
            assert scheduled[0]["status"] == "False" and scheduled[0]["reason"] == "Unschedulable"
        up.stop()
    gc.collect()


async def test_the_control_plane_runs_in_a_child_process_of_its_own(tmp_path: Path) -> None:
    """``control_plane_process``: the loops run in ``kubemock-fleet control-plane``, a child
    supervised beside the shards; the scheduler there still answers for the pods, and the
    child ends on ``stop()``."""
    up = Up(
        UpSettings(
            port=0,
            kubeconfig_out=tmp_path / "kc",
            shards=0,
            disabled=frozenset({"job", "cronjob"}),
            control_plane_process=True,
        )
    )
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        assert up.supervisor is not None
        with trio.fail_after(10):
            while not up.supervisor.pids():  # noqa: ASYNC110 - the child is being started
                await trio.sleep(0.05)
        assert list(up.supervisor.pids()) == ["control-plane"]
        assert "scheduler" in running.loops and "job" not in running.loops
        async with Client(load_config(running.kubeconfig)) as client:
            await client.create("/api/v1/namespaces/default/pods", pod)
            scheduled: list[dict[str, str]] = []
            with trio.fail_after(30):  # a Python start, then the informers' lists
                while not scheduled:
                    await trio.sleep(0.2)
                    got = await client.get("/api/v1/namespaces/default/pods/p")
                    scheduled = [
                        c
                        for c in got["status"].get("conditions", [])
                        if c["type"] == "PodScheduled"
                    ]
        assert scheduled[0]["reason"] == "Unschedulable"  # no nodes: the child's scheduler said so
        child = up.supervisor.pids()["control-plane"]
        up.stop()
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_the_sandbox_runs_in_a_child_process_of_its_own(tmp_path: Path) -> None:
    """``sandbox_process``: the apiserver is ``kubemock-fleet sandbox``, a child; ``up``
    reaches it by the kubeconfig the child wrote and stops it last. A child that cannot
    start is one error quoting its log."""
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", shards=0, sandbox_process=True))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        assert running.sandbox is None and running.url.startswith("https://127.0.0.1:")
        port = int(running.url.rpartition(":")[2])
        async with Client(load_config(running.kubeconfig)) as client:
            assert (await client.request("GET", "/readyz")).status == 200
        up.stop()
    with socket.socket() as probe:  # the child is gone: its port is free again
        probe.bind(("127.0.0.1", port))

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = Up(
            UpSettings(
                port=taken.getsockname()[1], kubeconfig_out=tmp_path / "kc2", shards=0,
                sandbox_process=True,
            )
        )  # fmt: skip
        with pytest.raises(BaseExceptionGroup) as caught:
            async with trio.open_nursery() as nursery:
                await nursery.start(busy.run)
    failed, _ = caught.value.split(ComponentError)
    assert failed is not None
    said = " ".join(str(e) for e in _leaves(failed))
    assert "the sandbox child exited with code" in said
    assert "address already in use" in said.lower()  # its log, quoted


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def test_control_plane_command_spells_the_loops_off() -> None:
    command = control_plane_command(Path("/k"), disabled={"job", "cronjob"})
    assert command[1:] == ["-m", "fleet", "control-plane", "--kubeconfig", "/k",
                           "--disable", "cronjob", "--disable", "job"]  # fmt: skip


def test_sandbox_command_hands_on_the_connection_cap() -> None:
    assert "--max-connections" not in sandbox_command(Path("/k"), host="h", port=1)
    command = sandbox_command(Path("/k"), host="h", port=1, max_connections=12_000)
    assert command[-2:] == ["--max-connections", "12000"]


def test_the_sandbox_closes_connections_past_its_cap(tmp_path: Path) -> None:
    """``kubemock-fleet sandbox --max-connections 2``: a third connection held at once is
    closed at accept, and the sandbox keeps serving the first two."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet", "sandbox", "--port", "0", "--no-tls",
         "--kubeconfig-out", str(tmp_path / "kc"), "--max-connections", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = ""
        for line in process.stdout:
            if line.startswith("sandbox apiserver: "):
                url = line.split(": ", 1)[1].strip()
                break
        host, _, port = url.removeprefix("http://").rpartition(":")
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
        third = socket.create_connection((host, int(port)), timeout=5)
        assert third.recv(1) == b""  # closed at accept
        third.close()
        held[0].sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(64).startswith(b"HTTP/1.1 ")
        for conn in held:
            conn.close()
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


STAND_IN_SHARD = """
import signal, sys, time
from pathlib import Path
shard, kubeconfig, marks = sys.argv[1], sys.argv[2], Path(sys.argv[3])
def stop(signum, frame):
    (marks / f"shard-{shard}.stopped").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(marks / f"shard-{shard}.started").write_text(kubeconfig)
print(f"shard {shard} up", flush=True)
while True:
    time.sleep(0.05)
"""


async def test_shard_children_get_the_kubeconfig_and_sigterm(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "shard.py"
    script.write_text(STAND_IN_SHARD)
    settings = UpSettings(
        port=0,
        kubeconfig_out=tmp_path / "kc",
        shards=2,
        shard_command=lambda k, kc: [sys.executable, str(script), str(k), str(kc), str(marks)],
    )
    up = Up(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(up.run)
        assert up.supervisor is not None
        with trio.fail_after(10):
            while len(list(marks.glob("*.started"))) < 2:  # noqa: ASYNC110 - files from children
                await trio.sleep(0.05)
        assert sorted(up.supervisor.pids()) == ["shard 0", "shard 1"]
        assert (marks / "shard-1.started").read_text() == str(tmp_path / "kc")
        up.stop()
    gc.collect()
    assert {p.name: p.read_text() for p in marks.glob("*.stopped")} == {
        "shard-0.stopped": "SIGTERM",
        "shard-1.stopped": "SIGTERM",
    }


def test_status_line() -> None:
    assert render(Status()) == "nodes 0/0 Ready · pods 0 · apiserver 0.0 req/s"
    status = Status(
        nodes=3,
        nodes_ready=2,
        pods={"Running": 8, "Pending": 12, "Terminating": 1},
        requests_per_second=14.24,
    )
    assert render(status) == (
        "nodes 2/3 Ready · pods 21: Pending 12, Running 8, Terminating 1 · apiserver 14.2 req/s"
    )


def test_default_template_is_the_example_node() -> None:
    example = yaml.safe_load((EXAMPLES / "node-sample.yaml").read_text())
    assert yaml.safe_load(DEFAULT_TEMPLATE) == example
    template = load_template(None)
    assert template.namespace == "kube-mock-system"
    copy = template.render(7)
    assert copy["metadata"] == {"name": "fleet-node-7", "namespace": "kube-mock-system"}
    assert copy["spec"] == example["spec"]


def test_template_drops_identity_and_keeps_labels(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_TEMPLATE)
    raw["metadata"].update(
        namespace="elsewhere", uid="u", resourceVersion="9", labels={"team": "a"}, finalizers=["x"]
    )
    raw["status"] = {"nodeName": "old"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    template = load_template(path)
    assert template.namespace == "elsewhere"
    assert template.render(0)["metadata"] == {
        "name": "fleet-node-0",
        "namespace": "elsewhere",
        "labels": {"team": "a"},
    }
    assert "status" not in template.render(0)


def test_loops_are_named() -> None:
    assert set(LOOPS) == {
        "scheduler",
        "deployment",
        "replicaset",
        "nodelifecycle",
        "garbagecollector",
        "job",
        "cronjob",
        "daemonset",
        "statefulset",
        "endpoint",
        "endpointslice",
        "disruption",
    }
    settings = control_plane_settings(frozenset({"scheduler", "garbagecollector"}))
    assert (settings.scheduler, settings.gc) == (False, False)
    assert settings.deployments and settings.replicasets and settings.node_lifecycle


def test_a_full_real_control_plane_leaves_no_loop_of_ours_running() -> None:
    """kube-controller-manager runs every controller of ours, kube-scheduler the scheduler:
    beside both, none of our loops acts on the same objects a second time."""
    from fleet.up._up import REAL_COMPONENT_LOOPS

    covered = [name for names in REAL_COMPONENT_LOOPS.values() for name in names]
    assert sorted(covered) == sorted(LOOPS)
    assert REAL_COMPONENT_LOOPS["kube-scheduler"] == ("scheduler",)
