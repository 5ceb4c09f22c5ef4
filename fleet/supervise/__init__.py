"""Process supervision and identity, shared by ``run`` (fleet.cli) and ``up`` (fleet.up).

Layer 3, beside the settings and metrics: it stands on ``fleet.kube`` (its
restart backoff) and nothing above, so ``fleet.up`` no longer reaches up into
the CLI for it.

- :class:`Supervisor`: run named child commands, restart each with backoff,
  pass their output on prefixed; :data:`RESTART_POLICY`, :data:`SHUTDOWN_GRACE`.
- :func:`shard_command`, :func:`control_plane_command`: a shard child's and ``up``'s
  control-plane child's command lines, spelled once.
- :func:`wait_ready`: poll a started process's readiness :data:`Probe` until it answers,
  it dies or a deadline passes (the sandbox child of ``up``, ``fleet.realcp``'s etcd and
  kube-apiserver).
- :func:`process_identity`: ``<role>@<host>/<pid>``, the holder of a Lease.
- :func:`configure_logging`: the long-running commands' stderr log.
- :func:`terminate_then_kill`: a child's cancellation, SIGTERM then SIGKILL after a grace.
"""

from fleet.supervise._process import LOG_FORMAT as LOG_FORMAT
from fleet.supervise._process import configure_logging as configure_logging
from fleet.supervise._process import control_plane_command as control_plane_command
from fleet.supervise._process import process_identity as process_identity
from fleet.supervise._process import sandbox_command as sandbox_command
from fleet.supervise._process import shard_command as shard_command
from fleet.supervise._readiness import NO_ANSWER as NO_ANSWER
from fleet.supervise._readiness import Probe as Probe
from fleet.supervise._readiness import wait_ready as wait_ready
from fleet.supervise._supervisor import MAX_LINE as MAX_LINE
from fleet.supervise._supervisor import RESTART_POLICY as RESTART_POLICY
from fleet.supervise._supervisor import SHUTDOWN_GRACE as SHUTDOWN_GRACE
from fleet.supervise._supervisor import Supervisor as Supervisor
from fleet.supervise._supervisor import terminate_then_kill as terminate_then_kill

__all__ = [
    "LOG_FORMAT",
    "MAX_LINE",
    "NO_ANSWER",
    "RESTART_POLICY",
    "SHUTDOWN_GRACE",
    "Probe",
    "Supervisor",
    "configure_logging",
    "control_plane_command",
    "process_identity",
    "sandbox_command",
    "shard_command",
    "terminate_then_kill",
    "wait_ready",
]
