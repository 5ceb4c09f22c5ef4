"""Imports every command module so each registers its commands on the app."""

from fleet.cli import _bench as _bench
from fleet.cli import _config_cmd as _config_cmd
from fleet.cli import _controlplane as _controlplane
from fleet.cli import _coordinator as _coordinator
from fleet.cli import _run as _run
from fleet.cli import _sandbox as _sandbox
from fleet.cli import _shard as _shard
from fleet.cli import _up as _up
