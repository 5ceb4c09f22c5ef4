"""``kubemock-fleet up``: sandbox apiserver, control plane and fleet on this machine.

The orchestration behind the ``up`` command (``fleet/cli/_up.py`` is its
command line). It sits at the top, beside the CLIs: it starts the sandbox,
the control-plane loops, the coordinator and the shards, and supervises
shard processes with :class:`fleet.supervise.Supervisor`. Nothing imports it
but the CLI and the tests. Public surface:

- :class:`UpSettings`, :class:`Up` (``await nursery.start(up.run)`` gives a
  :class:`RunningUp`; ``up.stop()`` ends it cleanly), ``up.status()``;
- :class:`Status` and :func:`render`: the live status line;
- :func:`load_template` and :data:`DEFAULT_TEMPLATE`: the ``--nodes`` template;
- :data:`LOOPS`: the control-plane loops ``--disable`` can switch off; :func:`check_loops`
  and :func:`control_plane_settings` (the ``control-plane`` command uses them too);
- :data:`CONTROL_PLANES`: what ``--control-plane`` takes (``sandbox``, ``real``).
"""

from fleet.up._claim import claim_kubeconfig as claim_kubeconfig
from fleet.up._claim import lock_path as lock_path
from fleet.up._controlplane import LOOPS as LOOPS
from fleet.up._controlplane import check_loops as check_loops
from fleet.up._controlplane import control_plane_settings as control_plane_settings
from fleet.up._nodes import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
from fleet.up._nodes import NodeTemplate as NodeTemplate
from fleet.up._nodes import load_template as load_template
from fleet.up._status import Status as Status
from fleet.up._status import render as render
from fleet.up._up import CONTROL_PLANES as CONTROL_PLANES
from fleet.up._up import RunningUp as RunningUp
from fleet.up._up import Up as Up
from fleet.up._up import UpSettings as UpSettings

__all__ = [
    "CONTROL_PLANES",
    "DEFAULT_TEMPLATE",
    "LOOPS",
    "NodeTemplate",
    "RunningUp",
    "Status",
    "Up",
    "UpSettings",
    "check_loops",
    "claim_kubeconfig",
    "control_plane_settings",
    "load_template",
    "lock_path",
    "render",
]
