"""The official ``kubernetes`` Python client (a client nobody here wrote) against the sandbox.

It reads the kubeconfig the sandbox wrote (TLS with its CA, bearer token) and
deserializes every answer into its generated models, so it checks the wire
format from the other side: field names, timestamps, list kinds, watch lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from fleet.api import crd_manifests
from fleet.realcp import RunningControlPlane
from fleet.sandbox import RunningSandbox

from .conftest import StartSandbox


@pytest.fixture(params=["sandbox", pytest.param("real", marks=pytest.mark.real)])
def shared_apiserver(request: pytest.FixtureRequest) -> RunningSandbox | RunningControlPlane:
    """The session's shared sandbox, or its real control plane: both live as long as the session."""
    name = "shared_sandbox" if request.param == "sandbox" else "real_control_plane"
    running: RunningSandbox | RunningControlPlane = request.getfixturevalue(name)
    return running


@pytest.fixture
def api_client(shared_apiserver: RunningSandbox | RunningControlPlane) -> Iterator[k8s.ApiClient]:
    kubeconfig = str(shared_apiserver.kubeconfig)
    with k8s_config.new_client_from_config(config_file=kubeconfig) as api:
        yield api


def make_namespace(core: Any, name: str) -> None:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))


def test_list_namespaces(
    api_client: k8s.ApiClient, shared_apiserver: RunningSandbox | RunningControlPlane
) -> None:
    assert api_client.configuration.host == shared_apiserver.url
    core: Any = k8s.CoreV1Api(api_client)  # its models type every field Optional
    make_namespace(core, "official-ns")
    namespaces = core.list_namespace()
    names = {ns.metadata.name for ns in namespaces.items}
    assert {"default", "kube-system", "official-ns"} <= names
    assert namespaces.metadata.resource_version
    created = core.read_namespace("official-ns")
    assert created.status.phase == "Active"
    assert created.metadata.creation_timestamp.tzinfo is not None


def test_pod_create_read_patch_delete(api_client: k8s.ApiClient) -> None:
    core: Any = k8s.CoreV1Api(api_client)  # its models type every field Optional
    make_namespace(core, "official-pods")
    body = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="busybox:1.36")]),
    )
    created = core.create_namespaced_pod("official-pods", body)
    assert created.metadata.uid and created.metadata.namespace == "official-pods"
    assert created.status.phase == "Pending"

    read = core.read_namespaced_pod("web", "official-pods")
    assert read.metadata.uid == created.metadata.uid
    assert read.spec.containers[0].image == "busybox:1.36"

    # The client sends a dict patch as a strategic merge patch for built-ins.
    patched = core.patch_namespaced_pod(
        "web",
        "official-pods",
        {
            "metadata": {"labels": {"tier": "front"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]},
        },
    )
    assert patched.metadata.labels == {"app": "web", "tier": "front"}
    assert [c.image for c in patched.spec.containers] == ["busybox:1.37"]
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    pods = core.list_namespaced_pod("official-pods", label_selector="tier=front")
    assert [p.metadata.name for p in pods.items] == ["web"]

    core.delete_namespaced_pod(
        "web", "official-pods", body=k8s.V1DeleteOptions(grace_period_seconds=0)
    )
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("web", "official-pods")
    assert missing.value.status == 404


def test_watch_events(api_client: k8s.ApiClient) -> None:
    core: Any = k8s.CoreV1Api(api_client)  # its models type every field Optional
    make_namespace(core, "official-watch")
    start = core.list_namespaced_config_map("official-watch").metadata.resource_version
    for name in ("a", "b"):
        core.create_namespaced_config_map(
            "official-watch", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name), data={"v": "1"})
        )
    watcher: Any = k8s_watch.Watch()
    seen: list[tuple[str, str, dict[str, str] | None]] = []
    for event in watcher.stream(
        core.list_namespaced_config_map, "official-watch", resource_version=start, timeout_seconds=5
    ):
        assert isinstance(event["object"], k8s.V1ConfigMap)  # deserialized into its model
        obj: Any = event["object"]
        seen.append((event["type"], obj.metadata.name, obj.data))
        if len(seen) == 2:
            # The stream is open: these arrive live, not from history.
            core.patch_namespaced_config_map("a", "official-watch", {"data": {"v": "2"}})
            core.delete_namespaced_config_map("b", "official-watch")
        if len(seen) == 4:
            watcher.stop()
    assert seen == [
        ("ADDED", "a", {"v": "1"}),
        ("ADDED", "b", {"v": "1"}),
        ("MODIFIED", "a", {"v": "2"}),
        ("DELETED", "b", {"v": "1"}),
    ]
    assert int(watcher.resource_version) > int(start)


async def test_custom_resource_through_custom_objects_api(start_sandbox: StartSandbox) -> None:
    # Its own sandbox: the CRDs are cluster-wide, and tests/test_deploy.py applies the
    # same ones to the shared sandbox. The blocking client runs in a worker thread while
    # this test's trio loop serves the sandbox.
    sb = await start_sandbox()
    await trio.to_thread.run_sync(custom_resource_round_trip, sb.kubeconfig)


def custom_resource_round_trip(kubeconfig: Path) -> None:
    with k8s_config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
        custom_resource_steps(api_client)


def custom_resource_steps(api_client: k8s.ApiClient) -> None:
    extensions: Any = k8s.ApiextensionsV1Api(api_client)
    crds = crd_manifests()
    for crd in crds:
        created = extensions.create_custom_resource_definition(crd)
        assert created.metadata.name == crd["metadata"]["name"]
    node_crd = extensions.read_custom_resource_definition("nodes.mock.zhizuqiu.cn")
    assert node_crd.spec.names.kind == "Node"

    core: Any = k8s.CoreV1Api(api_client)  # its models type every field Optional
    make_namespace(core, "official-cr")
    custom: Any = k8s.CustomObjectsApi(api_client)
    group, version, plural = "mock.zhizuqiu.cn", "v1alpha1", "nodes"
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": "Node",
        "metadata": {"name": "node-sample"},
        "spec": {"suspend": False, "nodeConfig": {"cpu": "128", "memory": "300Gi", "pods": "50"}},
    }
    created_cr = custom.create_namespaced_custom_object(group, version, "official-cr", plural, body)
    assert created_cr["metadata"]["uid"]
    got = custom.get_namespaced_custom_object(group, version, "official-cr", plural, "node-sample")
    assert got["spec"]["nodeConfig"] == {"cpu": "128", "memory": "300Gi", "pods": "50"}

    patched = custom.patch_namespaced_custom_object(
        group, version, "official-cr", plural, "node-sample", {"spec": {"suspend": True}}
    )
    assert patched["spec"]["suspend"] is True
    status = custom.patch_namespaced_custom_object_status(
        group, version, "official-cr", plural, "node-sample", {"status": {"shard": "shard-0"}}
    )
    assert status["status"]["shard"] == "shard-0"
    assert status["spec"]["suspend"] is True

    listed = custom.list_namespaced_custom_object(group, version, "official-cr", plural)
    assert listed["kind"] == "NodeList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["node-sample"]

    # The schema is enforced: a wrongly typed field is refused with 422.
    with pytest.raises(ApiException) as invalid:
        custom.patch_namespaced_custom_object(
            group, version, "official-cr", plural, "node-sample", {"spec": {"suspend": "yes"}}
        )
    assert invalid.value.status == 422

    custom.delete_namespaced_custom_object(group, version, "official-cr", plural, "node-sample")
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(group, version, "official-cr", plural, "node-sample")
    assert missing.value.status == 404
