"""The ``kubemock-fleet`` command line: one typer app, one module per command group.

Each ``_<command>.py`` module registers its commands on :data:`app`; importing
``_commands`` imports them all so ``kubemock-fleet --help`` lists them. The CLI
is the top layer: it may import anything, nothing imports it.
:func:`run_shard` and :func:`run_coordinator` are the bodies of the ``shard``
and ``coordinator`` commands (what the metrics tests run in-process): each
runs its process kind's composition root (:func:`shards.serve_shard`,
:func:`fleet.coordinator.serve_coordinator`) until SIGINT or SIGTERM;
:func:`kubelet_api_wanted` and :func:`kubelet_api_env` are how ``run`` decides and passes on
whether its shards serve the kubelet API.
"""

from __future__ import annotations

from fleet.cli import _commands as _commands
from fleet.cli._app import app as app
from fleet.cli._app import main as main
from fleet.cli._coordinator import run_coordinator as run_coordinator
from fleet.cli._run import kubelet_api_env as kubelet_api_env
from fleet.cli._run import kubelet_api_wanted as kubelet_api_wanted
from fleet.cli._shard import run_shard as run_shard

__all__ = [
    "app",
    "kubelet_api_env",
    "kubelet_api_wanted",
    "main",
    "run_coordinator",
    "run_shard",
]
