"""``crdgen clone`` end to end: against a scripted apiserver (httpx.MockTransport) and the sandbox.

The sandbox tests seed a fresh sandbox with the kind, EKS and GKE nodes of
``data/*.input.yaml`` and run the command line (CliRunner, in a worker thread:
the command calls ``trio.run`` itself while the sandbox serves on the test's
loop). The kubectl test applies the output, as is, with a real kubectl.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from typer.testing import CliRunner, Result

from crdgen import cli
from crdgen._clone import CloneOptions, _clone_from_cluster, clone_nodes, render
from crdgen._crd import render_crds
from fleet.errors import InputError
from fleet.kube import Client, ClusterConfig, load_config
from fleet.sandbox import RunningSandbox

DATA = Path(__file__).parent / "data"
KUBECTL = "/usr/bin/kubectl"

runner = CliRunner()


def all_input_nodes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for case in ("kind", "eks", "gke"):
        out.extend(yaml.safe_load((DATA / f"{case}.input.yaml").read_text())["items"])
    return out


def node_list(items: list[dict[str, Any]], **metadata: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "NodeList",
        "metadata": {"resourceVersion": "7", **metadata},
        "items": items,
    }


# -- a scripted apiserver ----------------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


async def clone_with(
    handler: Handler, options: CloneOptions, **selectors: str | None
) -> list[dict[str, Any]]:
    async with Client(
        ClusterConfig(server="http://apiserver.test"), transport=httpx.MockTransport(handler)
    ) as c:
        return await _clone_from_cluster(
            c, options, selectors.get("label_selector"), selectors.get("field_selector")
        )


async def test_pages_and_selectors_reach_the_apiserver() -> None:
    items = all_input_nodes()
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/nodes"
        params = dict(request.url.params)
        seen.append(params)
        if "continue" not in params:
            return httpx.Response(200, json=node_list(items[:4], **{"continue": "page2"}))
        return httpx.Response(200, json=node_list(items[4:]))

    crs = await clone_with(
        handler, CloneOptions(), label_selector="a=b", field_selector="spec.unschedulable=false"
    )
    assert crs == clone_nodes(items, CloneOptions())
    assert len(crs) == 7  # eight nodes, one control plane
    assert seen[0] == {
        "labelSelector": "a=b",
        "fieldSelector": "spec.unschedulable=false",
        "limit": "500",
    }
    assert seen[1]["continue"] == "page2"


async def test_no_nodes_match() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=node_list([]))

    with pytest.raises(
        InputError, match=r"^no nodes matching label selector 'pool=none' in the cluster$"
    ):
        await clone_with(handler, CloneOptions(), label_selector="pool=none")


async def test_only_control_plane_nodes_match() -> None:
    control_plane = [n for n in all_input_nodes() if n["metadata"]["name"] == "kind-control-plane"]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=node_list(control_plane))

    with pytest.raises(InputError, match=r"all 1 are control-plane nodes.*--disable-filter-master"):
        await clone_with(handler, CloneOptions())
    crs = await clone_with(handler, CloneOptions(include_control_plane=True))
    assert [cr["metadata"]["name"] for cr in crs] == ["kind-control-plane-0"]


# -- the command line, failures ------------------------------------------------------------


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crdgen: error: ")
    return lines[0]


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_unreachable_cluster(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    target = tmp_path / "out.yaml"
    result = runner.invoke(cli.app, ["clone", "-f", str(kubeconfig), "-o", str(target)])
    assert "cannot connect" in one_line_error(result)
    assert os.listdir(tmp_path) == ["kubeconfig"]


def test_missing_kubeconfig(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["clone", "--from-kubeconfig", str(tmp_path / "nope")])
    assert "nope" in one_line_error(result)


def test_bad_flags_are_one_line(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")
    assert "--copies" in one_line_error(
        runner.invoke(cli.app, ["clone", "-f", str(kubeconfig), "--copies", "0"])
    )
    assert "--format" in one_line_error(
        runner.invoke(cli.app, ["clone", "-f", str(kubeconfig), "--format", "json"])
    )


def test_help_lists_kube_mock_flags() -> None:
    result = runner.invoke(cli.app, ["clone", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in (
        "--from-kubeconfig",
        "-f",
        "--selector",
        "-l",
        "--field-selector",
        "--disable-filter-master",
        "--output",
        "--copies",
        "--name-prefix",
        "--namespace",
        "--format",
        "--context",
    ):
        assert flag in result.stdout, flag


# -- the command line against the sandbox --------------------------------------------------


async def seed(sandbox: RunningSandbox, items: list[dict[str, Any]]) -> None:
    async with Client(load_config(sandbox.kubeconfig)) as c:
        for item in items:
            body = {k: v for k, v in item.items()}
            body["metadata"] = {
                k: v
                for k, v in item["metadata"].items()
                if k not in ("uid", "resourceVersion", "creationTimestamp")
            }
            await c.create("/api/v1/nodes", body)


async def invoke(args: list[str]) -> Result:
    return await trio.to_thread.run_sync(lambda: runner.invoke(cli.app, args))


async def test_clone_from_the_sandbox(sandbox: RunningSandbox, tmp_path: Path) -> None:
    items = all_input_nodes()
    await seed(sandbox, items)
    kc = str(sandbox.kubeconfig)

    result = await invoke(["clone", "--kubeconfig", kc])
    assert result.exit_code == 0, result.output
    assert result.stdout == render(clone_nodes(items, CloneOptions()))

    target = tmp_path / "clones.yaml"
    result = await invoke(
        [
            "clone",
            "-f",
            kc,
            "--disable-filter-master",
            "--copies",
            "2",
            "--name-prefix",
            "big-",
            "--namespace",
            "scale",
            "--format",
            "list",
            "-o",
            str(target),
        ]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    options = CloneOptions(
        copies=2, name_prefix="big-", namespace="scale", include_control_plane=True
    )
    assert target.read_text() == render(clone_nodes(items, options), "list")


async def test_selectors_against_the_sandbox(sandbox: RunningSandbox) -> None:
    await seed(sandbox, all_input_nodes())
    kc = str(sandbox.kubeconfig)
    result = await invoke(["clone", "-f", kc, "-l", "cloud.google.com/gke-accelerator"])
    assert result.exit_code == 0, result.output
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)] == [
        "gke-prod-gpu-pool-3c4d5e6f-9qzt-0"
    ]

    result = await invoke(["clone", "-f", kc, "--field-selector", "metadata.name=kind-worker2"])
    assert result.exit_code == 0, result.output
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout)] == ["kind-worker2-0"]

    result = await invoke(["clone", "-f", kc, "-l", "node-role.kubernetes.io/control-plane"])
    assert "--disable-filter-master" in one_line_error(result)
    result = await invoke(["clone", "-f", kc, "-l", "pool=none"])
    assert (
        one_line_error(result)
        == "crdgen: error: no nodes matching label selector 'pool=none' in the cluster"
    )


async def test_unwritable_output_writes_nothing(sandbox: RunningSandbox, tmp_path: Path) -> None:
    await seed(sandbox, all_input_nodes()[:2])
    kc = str(sandbox.kubeconfig)
    out = tmp_path / "out"
    out.mkdir()
    result = await invoke(["clone", "-f", kc, "-o", str(out / "missing-dir" / "x.yaml")])
    assert "cannot write" in one_line_error(result)
    result = await invoke(["clone", "-f", kc, "-o", str(out)])  # a directory
    assert one_line_error(result) == f"crdgen: error: cannot write {out}: Is a directory"
    existing = out / "clones.yaml"
    existing.write_text("old\n")
    # A failed clone leaves an existing output file as it was.
    result = await invoke(["clone", "-f", kc, "-l", "pool=none", "-o", str(existing)])
    assert "no nodes matching" in one_line_error(result)
    assert existing.read_text() == "old\n"
    assert os.listdir(out) == ["clones.yaml"]
    result = await invoke(["clone", "-f", kc, "-o", str(existing)])
    assert result.exit_code == 0, result.output
    assert existing.read_text().startswith("---\napiVersion: mock.zhizuqiu.cn/v1alpha1\n")
    assert os.listdir(out) == ["clones.yaml"]


@pytest.mark.kubectl
async def test_output_applies_with_kubectl(sandbox: RunningSandbox, tmp_path: Path) -> None:
    await seed(sandbox, all_input_nodes())
    kc = str(sandbox.kubeconfig)
    out = tmp_path / "clones.yaml"
    crds = tmp_path / "crds.yaml"
    namespace = tmp_path / "namespace.yaml"
    crds.write_text(render_crds())
    result = await invoke(["clone", "-f", kc, "--copies", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, "--kubeconfig", kc, "--cache-dir", str(tmp_path / "cache"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc

    def apply_all() -> str:
        kubectl("apply", "-f", str(crds))
        # `kubectl create namespace` sends protobuf, which the sandbox does not decode.
        namespace.write_text(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-mock-system}\n"
        )
        kubectl("apply", "-f", str(namespace))
        kubectl("apply", "-f", str(out))
        return kubectl(
            "get", "nodes.mock.zhizuqiu.cn", "-n", "kube-mock-system", "-o", "json"
        ).stdout

    stored = json.loads(await trio.to_thread.run_sync(apply_all))["items"]
    expected = list(yaml.safe_load_all(out.read_text()))
    assert sorted(i["metadata"]["name"] for i in stored) == sorted(
        e["metadata"]["name"] for e in expected
    )
    by_name = {i["metadata"]["name"]: i for i in stored}
    for cr in expected:
        # Nothing pruned by the CRD's schema: the stored spec is the one written.
        assert by_name[cr["metadata"]["name"]]["spec"] == cr["spec"]
