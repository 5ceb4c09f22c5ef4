"""``crdgen clone``'s mapping, without a cluster: golden files and the rules one by one.

Golden files (``data/<case>.input.yaml`` → ``data/<case>.output.yaml``) hold
hand-written Node lists shaped as kind, EKS and GKE list them; each case's
options are in :data:`CASES`. When the mapping changes on purpose, regenerate a
golden file with ``render(clone_nodes(items, options), fmt)`` and review the diff.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from crdgen._clone import (
    CLONED_FROM_ANNOTATION,
    LIFECYCLE_TAINTS,
    CloneOptions,
    OutputFormat,
    clone_node,
    clone_nodes,
    fake_provider_id,
    is_control_plane,
    render,
)
from fleet.api import load_node, parse_quantity
from fleet.errors import ConfigError, InputError

DATA = Path(__file__).parent / "data"

CASES: dict[str, tuple[CloneOptions, OutputFormat]] = {
    "kind": (CloneOptions(include_control_plane=True), "yaml"),
    "eks": (CloneOptions(copies=2, name_prefix="scale-"), "yaml"),
    "gke": (CloneOptions(namespace="clones"), "list"),
}


def nodes(case: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = yaml.safe_load((DATA / f"{case}.input.yaml").read_text())["items"]
    return items


def node(case: str, name: str) -> dict[str, Any]:
    return next(n for n in nodes(case) if n["metadata"]["name"] == name)


def config(cr: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = cr["spec"]["nodeConfig"]
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    options, fmt = CASES[case]
    expected = (DATA / f"{case}.output.yaml").read_text(encoding="utf-8")
    assert render(clone_nodes(nodes(case), options), fmt) == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_output_is_valid_node_crs(case: str) -> None:
    text = (DATA / f"{case}.output.yaml").read_text(encoding="utf-8")
    docs = list(yaml.safe_load_all(text))
    crs = docs[0]["items"] if CASES[case][1] == "list" else docs
    assert crs
    for cr in crs:
        load_node(cr)


def test_every_golden_input_has_an_output() -> None:
    inputs = {p.name.removesuffix(".input.yaml") for p in DATA.glob("*.input.yaml")}
    outputs = {p.name.removesuffix(".output.yaml") for p in DATA.glob("*.output.yaml")}
    assert inputs == outputs == set(CASES)


# -- which nodes -------------------------------------------------------------------------


def test_control_plane_nodes_are_left_out_unless_asked() -> None:
    names = [cr["metadata"]["name"] for cr in clone_nodes(nodes("kind"), CloneOptions())]
    assert names == ["kind-worker-0", "kind-worker2-0"]
    everything = clone_nodes(nodes("kind"), CloneOptions(include_control_plane=True))
    assert everything[0]["metadata"]["name"] == "kind-control-plane-0"


def test_a_label_named_node_does_not_make_a_control_plane_node() -> None:
    """kube-mock's `mock` dropped any node carrying a label named `node`."""
    worker = node("kind", "kind-worker2")
    assert worker["metadata"]["labels"]["node"] == "batch"
    assert not is_control_plane(worker)
    arm = node("eks", "ip-192-168-77-201.us-west-2.compute.internal")
    assert [cr["metadata"]["name"] for cr in clone_node(arm, CloneOptions())] == [
        "ip-192-168-77-201.us-west-2.compute.internal-0"
    ]


@pytest.mark.parametrize(
    ("labels", "taints", "expected"),
    [
        ({"node-role.kubernetes.io/control-plane": ""}, [], True),
        ({"node-role.kubernetes.io/master": ""}, [], True),
        ({"kubernetes.io/role": "master"}, [], True),
        ({}, [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}], True),
        ({}, [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}], True),
        ({"node": "master"}, [], False),
        ({"node-role.kubernetes.io/worker": ""}, [], False),
        ({"kubernetes.io/role": "node"}, [], False),
        ({"example.com/node-role.kubernetes.io/control-plane": ""}, [], False),
        ({}, [{"key": "node", "effect": "NoSchedule"}], False),
    ],
)
def test_is_control_plane(
    labels: dict[str, str], taints: list[dict[str, str]], expected: bool
) -> None:
    raw = {"metadata": {"name": "n", "labels": labels}, "spec": {"taints": taints}}
    assert is_control_plane(raw) is expected


# -- what each CR holds ------------------------------------------------------------------


def test_resources_capacity_allocatable_and_gpus() -> None:
    gpu = node("gke", "gke-prod-gpu-pool-3c4d5e6f-9qzt")
    (cr,) = clone_node(gpu, CloneOptions())
    got = load_node(cr).spec.node_config
    status = gpu["status"]
    for name in ("cpu", "memory", "pods", "ephemeral-storage", "nvidia.com/gpu"):
        assert got.capacity()[name] == parse_quantity(status["capacity"][name]), name
        assert got.allocatable_resources()[name] == parse_quantity(status["allocatable"][name]), (
            name
        )
    assert not any(name.startswith("hugepages-") for name in got.capacity())
    # Only what differs from capacity is written as allocatable.
    assert set(config(cr)["allocatable"]) == {"cpu", "memory", "ephemeral-storage"}


def test_equal_allocatable_is_not_written() -> None:
    (cr,) = clone_node(node("kind", "kind-worker"), CloneOptions())
    assert "allocatable" not in config(cr)
    assert "extendedResources" not in config(cr)


def test_non_extended_resource_names_are_skipped() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    raw["status"]["capacity"].update(
        {"attachable-volumes-aws-ebs": "25", "example.com/fpga": "2", "hugepages-2Mi": "1Gi"}
    )
    raw["status"]["allocatable"].update({"example.com/fpga": "1"})
    (cr,) = clone_node(raw, CloneOptions())
    assert config(cr)["extendedResources"] == {"example.com/fpga": "2"}
    assert config(cr)["allocatable"] == {"example.com/fpga": "1"}


def test_hostname_labels_are_rewritten_others_kept() -> None:
    worker = node("kind", "kind-worker2")
    crs = clone_node(worker, CloneOptions(copies=3))
    for index, cr in enumerate(crs):
        labels = config(cr)["labels"]
        assert labels["kubernetes.io/hostname"] == f"kind-worker2-{index}"
        assert labels["example.com/node-name"] == f"kind-worker2-{index}"
        assert labels["node"] == "batch"
        assert cr["metadata"]["annotations"] == {CLONED_FROM_ANNOTATION: "kind-worker2"}
    control_plane = node("kind", "kind-control-plane")
    (cr,) = clone_node(control_plane, CloneOptions())
    assert config(cr)["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] == ""


def test_hostname_label_that_differs_from_the_node_name_is_rewritten_too() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    raw["metadata"]["labels"]["kubernetes.io/hostname"] = "worker-short"
    (cr,) = clone_node(raw, CloneOptions())
    assert config(cr)["labels"]["kubernetes.io/hostname"] == "kind-worker-0"


def test_lifecycle_taints_are_dropped_with_time_added() -> None:
    arm = node("eks", "ip-192-168-77-201.us-west-2.compute.internal")
    assert {t["key"] for t in arm["spec"]["taints"]} & LIFECYCLE_TAINTS
    (cr,) = clone_node(arm, CloneOptions())
    assert config(cr)["taints"] == [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]


def test_node_without_taints_gets_none() -> None:
    (cr,) = clone_node(node("kind", "kind-worker"), CloneOptions())
    assert "taints" not in config(cr)


def test_node_info_is_copied() -> None:
    arm = node("eks", "ip-192-168-77-201.us-west-2.compute.internal")
    (cr,) = clone_node(arm, CloneOptions())
    info = arm["status"]["nodeInfo"]
    got = config(cr)
    assert got["kubeletVersion"] == info["kubeletVersion"] == "v1.29.0-eks-5e0fdde"
    assert (got["os"], got["arch"]) == ("linux", "arm64")
    assert got["osImage"] == info["osImage"]
    assert got["kernelVersion"] == info["kernelVersion"]
    assert got["containerRuntimeVersion"] == info["containerRuntimeVersion"]


def test_os_and_arch_fall_back_to_labels() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    del raw["status"]["nodeInfo"]
    raw["metadata"]["labels"]["kubernetes.io/arch"] = "arm64"
    (cr,) = clone_node(raw, CloneOptions())
    assert (config(cr)["os"], config(cr)["arch"]) == ("linux", "arm64")
    assert "kubeletVersion" not in config(cr)


def test_copies_have_distinct_names_and_provider_ids() -> None:
    crs = clone_nodes(nodes("eks"), CloneOptions(copies=5))
    assert len(crs) == 15
    assert len({cr["metadata"]["name"] for cr in crs}) == 15
    assert len({config(cr)["providerID"] for cr in crs}) == 15
    assert all(config(cr)["providerID"].startswith("aws:///us-west-2") for cr in crs)


def test_output_is_stable() -> None:
    first = render(clone_nodes(nodes("eks"), CloneOptions(copies=2)))
    assert render(clone_nodes(list(reversed(nodes("eks"))), CloneOptions(copies=2))) == first


@pytest.mark.parametrize(
    ("original", "old", "new", "expected"),
    [
        (
            "kind://docker/kind/kind-worker",
            "kind-worker",
            "kind-worker-0",
            "kind://docker/kind/kind-worker-0",
        ),
        (
            "gce://acme/us-central1-a/gke-a-b-c",
            "gke-a-b-c",
            "gke-a-b-c-1",
            "gce://acme/us-central1-a/gke-a-b-c-1",
        ),
        ("openstack:///8d8b1f6e", "n", "n-0", "openstack:///n-0"),
    ],
)
def test_fake_provider_id_names(original: str, old: str, new: str, expected: str) -> None:
    assert fake_provider_id(original, old_name=old, new_name=new, namespace="ns") == expected


def test_fake_provider_id_shapes() -> None:
    aws = fake_provider_id(
        "aws:///us-west-2a/i-0a1b2c3d4e5f67890", old_name="x", new_name="x-0", namespace="ns"
    )
    assert aws is not None and aws.startswith("aws:///us-west-2a/i-")
    assert len(aws.rsplit("/", 1)[1]) == len("i-0a1b2c3d4e5f67890")
    assert aws != "aws:///us-west-2a/i-0a1b2c3d4e5f67890"
    azure = "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/3"
    fake = fake_provider_id(azure, old_name="vmss000003", new_name="vmss000003-0", namespace="ns")
    assert fake is not None
    head, last = fake.rsplit("/", 1)
    assert head == azure.rsplit("/", 1)[0] and last.isdigit() and last != "3"
    other = fake_provider_id(azure, old_name="vmss000003", new_name="vmss000003-1", namespace="ns")
    assert other != fake
    assert fake_provider_id("i-0abc", old_name="x", new_name="x-0", namespace="ns") is None


def test_node_without_provider_id_gets_none() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    del raw["spec"]["providerID"]
    (cr,) = clone_node(raw, CloneOptions())
    assert "providerID" not in config(cr)


# -- output --------------------------------------------------------------------------------


def test_render_yaml_and_list() -> None:
    crs = clone_nodes(nodes("kind"), CloneOptions())
    docs = list(yaml.safe_load_all(render(crs)))
    assert docs == crs
    as_list = yaml.safe_load(render(crs, "list"))
    assert as_list == {"apiVersion": "v1", "kind": "List", "items": crs}


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"copies": 0}, "--copies"),
        ({"name_prefix": "Big-"}, "--name-prefix"),
        ({"name_prefix": "-x"}, "--name-prefix"),
        ({"namespace": "Kube_Mock"}, "--namespace"),
        ({"namespace": "a" * 64}, "--namespace"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag}: "):
        CloneOptions(**kwargs)


def test_copy_name_too_long_for_the_hostname_label() -> None:
    with pytest.raises(InputError, match=r"longer than 63 characters.*--name-prefix"):
        clone_node(
            node("eks", "ip-192-168-12-34.us-west-2.compute.internal"),
            CloneOptions(name_prefix="x" * 30),
        )


def test_bad_quantity_names_the_node_and_field() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    raw["status"]["capacity"]["cpu"] = "eight"
    with pytest.raises(InputError, match=r"Node kind-worker: status\.capacity\.cpu"):
        clone_node(raw, CloneOptions())


def test_a_cr_that_would_not_validate_is_refused() -> None:
    raw = copy.deepcopy(node("kind", "kind-worker"))
    raw["spec"]["taints"] = [{"key": "x", "effect": "Sometimes"}]
    with pytest.raises(
        InputError, match=r"Node kube-mock-system/kind-worker-0: spec\.nodeConfig\.taints"
    ):
        clone_node(raw, CloneOptions())


def test_node_without_name() -> None:
    with pytest.raises(InputError, match=r"metadata\.name"):
        clone_nodes([{"metadata": {}}], CloneOptions())
