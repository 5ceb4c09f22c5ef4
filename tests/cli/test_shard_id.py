"""``shard --id``: the pod's ordinal, from the pod-index label or, before 1.28, the pod's name."""

from __future__ import annotations

import pytest
import typer

from fleet.cli._shard import resolve_shard_id


def test_an_id_given_is_taken() -> None:
    assert resolve_shard_id("5", {"POD_NAME": "kubemock-fleet-shard-12"}) == 5


def test_an_empty_id_is_the_ordinal_ending_the_pod_name() -> None:
    # deploy/shards.yaml on a cluster older than 1.28: no apps.kubernetes.io/pod-index label,
    # so the downward API gives "" and the kubelet expands `--id $(SHARD_ID)` into --id "".
    assert resolve_shard_id("", {"POD_NAME": "kubemock-fleet-shard-12"}) == 12
    assert resolve_shard_id(" ", {"HOSTNAME": "kubemock-fleet-shard-3"}) == 3


@pytest.mark.parametrize(
    ("given", "environ"), [("", {}), ("", {"HOSTNAME": "box"}), ("x1", {"POD_NAME": "a-1"})]
)
def test_no_id_to_be_had_is_a_clear_error(given: str, environ: dict[str, str]) -> None:
    with pytest.raises(typer.BadParameter):
        resolve_shard_id(given, environ)
