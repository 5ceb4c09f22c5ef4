"""The bench runner on the session's real control plane, with the real shard engine.

``bench kwok-ci`` once sat 23 minutes on kube-apiserver in its nodes-ready step while
every Node was Ready: its node watch had missed the changes. Here the node tracker's
watch loses every event (as then, but always): the step still ends, recounted from a
list; and every delete-collection answers 504 (as kube-apiserver did for 5,000 CRs with
finalizers, while the report said "0 deleted"): the cleanup deletes one by one, counts
from the apiserver, and leaves nothing. The shard engine drives the bench's Node CRs; a
small task of the test gives them its shard label, as the coordinator would.
The same on the sandbox with a stand-in fleet: test_runner.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bench import RUN_LABEL, RunOptions, TargetInfo, load_scenario, run_scenario
from fleet._settings import FleetSettings, ShardSettings
from fleet.errors import AlreadyExists, NotFound, ServerError
from fleet.kube import Client, HotTransport, load_config
from fleet.realcp import RunningControlPlane
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine
from tests._apiserver import install_fleet_crds, unique

FAST = {"nodes": 3, "scrapeInterval": 0.2, "timeout": 30}


async def _label_crs(client: Client, namespace: str, shard: str) -> None:
    """What the coordinator does for these CRs: each with the run label gets ``shard``."""
    path = f"/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/{namespace}/nodes"
    while True:
        try:
            listed = await client.list(path, label_selector=RUN_LABEL)
        except NotFound:  # the namespace is not there yet
            listed = None
        for cr in listed.items if listed is not None else ():
            meta = cr["metadata"]
            if (meta.get("labels") or {}).get(SHARD_LABEL) != shard:
                try:
                    await client.patch(
                        f"{path}/{meta['name']}",
                        {"metadata": {"labels": {SHARD_LABEL: shard}}},
                        patch_type="merge",
                    )
                except NotFound:
                    pass
        await trio.sleep(0.2)


@pytest.mark.real
async def test_a_step_recounts_what_its_watch_missed_on_the_real_control_plane(
    real_control_plane: RunningControlPlane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import _runner

    async def deaf(self: object, receive: trio.MemoryReceiveChannel[object]) -> None:
        async with receive:
            async for _ in receive:
                pass  # every event lost

    monkeypatch.setattr(_runner._NodeTracker, "consume", deaf)

    async def timeout(*args: object, **kwargs: object) -> None:
        # What kube-apiserver answered a delete-collection of 5,000 CRs with finalizers.
        raise ServerError(
            "the server was unable to return a response in time", status=504, reason="Timeout"
        )

    monkeypatch.setattr(Client, "delete_collection", timeout)
    config = load_config(real_control_plane.kubeconfig)
    shard, node_namespace = unique("bench"), unique("bench-nodes")
    settings = FleetSettings(shard=ShardSettings(pod_cidr_allocation="cluster"))
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        await install_fleet_crds(client)
        try:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        except AlreadyExists:
            pass
        await nursery.start(ShardEngine(settings, shard, control=client, hot=hot).run)
        nursery.start_soon(_label_crs, client, node_namespace, shard)
        spec = load_scenario("node-density", {**FAST, "nodeNamespace": node_namespace})
        options = RunOptions(
            target=TargetInfo(server=real_control_plane.url, mode="cluster", fleet="external"),
            output=tmp_path,
            resync_after=0.5,
        )
        report = await run_scenario(client, spec, options)
        assert report.completed and report.nodes_ready == 3, report.notes
        assert any("recounted from a list" in note for note in report.notes), report.notes
        # Deleted one by one, each CR's finalizer lifted by the shard; counted from the
        # apiserver: 3 CRs, whose Nodes went with them.
        assert report.cleanup.leftover == 0 and report.cleanup.errors == ()
        assert report.cleanup.deleted >= 3
        nursery.cancel_scope.cancel()
