"""``kubemock-fleet up``: the README's first command — apiserver, control plane and fleet here.

Builds :class:`fleet.up.UpSettings` from the flags, runs :class:`fleet.up.Up`,
prints where the apiserver is and the ``export KUBECONFIG=...`` line once
everything is in place, then a status line (redrawn in place on a terminal,
a plain line on change otherwise) until SIGINT or SIGTERM. The first signal
stops everything cleanly (exit 0); a second one during that stop cancels at
once.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
from functools import partial
from pathlib import Path

import trio
import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from fleet._settings import load_settings
from fleet.cli._app import app
from fleet.cli._console import console_sink, logs_through
from fleet.cli._options import TrafficProfileOption
from fleet.up import CONTROL_PLANES, LOOPS, Up, UpSettings, load_template, render

__all__ = ["DEFAULT_KUBECONFIG", "PLAIN_STATUS_EVERY", "kubeconfig_for", "up"]

DEFAULT_KUBECONFIG = Path("kubemock-fleet.kubeconfig")
"""Where the kubeconfig goes by default: the working directory, so a second terminal in
the same directory finds it (``*.kubeconfig`` is git-ignored)."""
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A cluster name (``--name``): a DNS label, as kwokctl's cluster names, safe in a file name."""


def kubeconfig_for(name: str | None) -> Path:
    """The default kubeconfig of cluster ``name``: ``kubemock-fleet-<name>.kubeconfig``
    (unnamed: :data:`DEFAULT_KUBECONFIG`), in the working directory."""
    if name is None:
        return DEFAULT_KUBECONFIG
    if not _NAME.fullmatch(name):
        raise typer.BadParameter(
            "must be lower-case letters, digits and '-', starting and ending with a letter "
            "or digit (at most 63)",
            param_hint="--name",
        )
    return Path(f"kubemock-fleet-{name}.kubeconfig")


LIVE_REFRESH = 1.0
"""Seconds between redraws of the status line on a terminal."""
PLAIN_STATUS_EVERY = 5.0
"""Seconds between status lines when stdout is not a terminal (only when something changed)."""


def _say(text: str) -> None:
    print(text, flush=True)


async def _status(up: Up, console: Console) -> None:
    if console.is_terminal:
        with Live(
            Text(render(up.status())), console=console, auto_refresh=False, transient=True
        ) as live:
            try:
                while True:
                    await trio.sleep(LIVE_REFRESH)
                    live.update(Text(render(up.status())), refresh=True)
            finally:
                live.update(Text(""), refresh=True)
    else:
        last = ""
        while True:
            await trio.sleep(PLAIN_STATUS_EVERY)
            line = render(up.status())
            if line.split(" · apiserver")[0] != last.split(" · apiserver")[0]:
                _say(line)
            last = line


async def _signals(up: Up, cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                _say(f"{signal.Signals(signum).name}: stopping (again to stop at once)")
                up.stop()
            else:
                cancel.cancel()
                return


async def _main(settings: UpSettings) -> None:
    console = Console()
    if not console.is_terminal:
        await _run(settings, console)
        return
    # On a terminal the status line is redrawn in place: logs and the shard children's
    # lines go through the same console, which prints them above it (fleet.cli._console).
    with logs_through(console):
        await _run(dataclasses.replace(settings, output=console_sink(console)), console)


async def _run(settings: UpSettings, console: Console) -> None:
    up = Up(settings)
    async with trio.open_nursery() as nursery:

        async def run_up(task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await up.run(task_status=task_status)
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(_signals, up, nursery.cancel_scope)
        running = await nursery.start(run_up)
        from fleet.up import RunningUp

        assert isinstance(running, RunningUp)
        fleet = (
            "no fleet"
            if settings.shards == 0
            else f"coordinator + {settings.shards} shard{'s' if settings.shards > 1 else ''}"
        )
        _say(f"apiserver: {running.url}")
        plane = ", ".join(running.loops) or "off"
        if running.real is not None:
            real = ", ".join(running.real.components)
            plane = f"real ({real})" + (
                f" + loops {', '.join(running.loops)}" if running.loops else ""
            )
        _say(f"control plane: {plane}; fleet: {fleet}")
        if settings.nodes:
            _say(
                f"nodes: {settings.nodes} Node CRs fleet-node-0..{settings.nodes - 1} in "
                f"{settings.node_template.namespace} ({running.nodes_created} created, "
                f"{running.nodes_existing} already there)"
            )
        _say(f"kubeconfig: {running.kubeconfig}")
        _say(f"  export KUBECONFIG={running.kubeconfig}")
        nursery.start_soon(_status, up, console)
    _say(f"stopped; last status: {render(up.status())}")
    if settings.data_file is not None:
        _say(f"state saved to {settings.data_file}")


@app.command()
def up(
    nodes: int = typer.Option(
        0, "--nodes", min=0, help="Node CRs to create from the template (fleet-node-0 ...)."
    ),
    shards: int = typer.Option(
        1,
        "--shards",
        min=0,
        help="Shards to run (0: no fleet; more than 1 run as child processes).",
    ),
    port: int = typer.Option(
        6443, "--port", min=0, max=65535, help="Port of the apiserver (0: any free port)."
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Name of this cluster: its kubeconfig is kubemock-fleet-NAME.kubeconfig, so "
        "several run side by side in one directory (default: kubemock-fleet.kubeconfig).",
    ),
    kubeconfig_out: Path | None = typer.Option(
        None,
        "--kubeconfig-out",
        dir_okay=False,
        help="Write the kubeconfig here (default: by --name). Refused while another `up` uses it.",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        dir_okay=False,
        help="Load the apiserver's state from this file at start, save it on exit.",
    ),
    node_template: Path | None = typer.Option(
        None,
        "--node-template",
        dir_okay=False,
        help="A Node CR (YAML) for --nodes (default: kube-mock's README node).",
    ),
    disable: list[str] = typer.Option(
        [], "--disable", help=f"A control-plane loop not to run, repeatable: {', '.join(LOOPS)}."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        dir_okay=False,
        help="YAML settings file for the fleet (see `config show`).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the apiserver binds."),
    control_plane: str = typer.Option(
        "sandbox",
        "--control-plane",
        help=f"The apiserver: {' or '.join(CONTROL_PLANES)} (etcd, kube-apiserver and, when "
        "present, kube-controller-manager and kube-scheduler from --binaries).",
    ),
    binaries: Path | None = typer.Option(
        None,
        "--binaries",
        file_okay=False,
        help="--control-plane real: directory of kube-apiserver etc., plain or .xz with "
        "SHA256SUMS (default: $KUBEMOCK_FLEET_BINARIES, else $KUBEBUILDER_ASSETS).",
    ),
    control_plane_process: bool = typer.Option(
        False,
        "--control-plane-process/--control-plane-in-process",
        help="Run the scheduler and controllers in a child process of their own (a core of "
        "their own beside the sandbox, for large fleets) or in this one.",
    ),
    traffic_profile: TrafficProfileOption = None,
    sandbox_max_connections: int = typer.Option(
        4096,
        "--sandbox-max-connections",
        min=1,
        help="Connections the sandbox serves at once, more are closed at accept: under "
        "--traffic-profile kubelet every node holds one (each a file descriptor: keep it "
        "under `ulimit -n`).",
    ),
) -> None:
    """Run an apiserver, its control plane and a fleet of fake kubelets on this machine."""
    settings = UpSettings(
        host=host,
        port=port,
        kubeconfig_out=(kubeconfig_out or kubeconfig_for(name)).absolute(),
        data_file=data.absolute() if data is not None else None,
        sandbox_max_connections=sandbox_max_connections,
        nodes=nodes,
        node_template=load_template(node_template),
        shards=shards,
        disabled=frozenset(disable),
        fleet=load_settings(
            config_file=config,
            flags={"shards": shards, "shard.traffic_profile": traffic_profile},
        ),
        config_file=config.absolute() if config is not None else None,
        control_plane=control_plane,
        binaries=binaries.absolute() if binaries is not None else None,
        control_plane_process=control_plane_process,
    )
    trio.run(partial(_main, settings))  # errors: one line at the CLI's boundary (_app.main)
    sys.stdout.flush()
