"""The sandbox's control plane: what kube-scheduler and kube-controller-manager would do.

Every loop is a client of the apiserver through the transport seam
(:class:`fleet.kube.Requester`), so it behaves the same against the
sandbox, a real apiserver, or the fakes of the unit tests. Layer 4: it uses
``fleet.kube``, ``fleet.api`` and ``fleet.machinery`` (label selectors);
only ``fleet.up`` and the CLI (``kubemock-fleet up``) sit above it.

- :class:`ControlPlane`, :class:`ControlPlaneSettings`, :func:`serve_control_plane`:
  run the enabled loops in one nursery over shared informers;
- the loops, each usable alone: :class:`Scheduler`, :class:`ReplicaSetController`,
  :class:`DeploymentController`, :class:`NodeLifecycleController`,
  :class:`GarbageCollector`, :class:`JobController`, :class:`CronJobController`, :class:`DaemonSetController`,
  :class:`StatefulSetController`, :class:`EndpointsController`,
  :class:`EndpointSliceController`, :class:`DisruptionController`, with their settings;
- :class:`EventRecorder`: the loops' Events, filtered, combined and deduplicated.
"""

from fleet.controlplane._cronjobs import CronJobController as CronJobController
from fleet.controlplane._cronjobs import CronJobSettings as CronJobSettings
from fleet.controlplane._daemonsets import DaemonSetController as DaemonSetController
from fleet.controlplane._daemonsets import DaemonSetSettings as DaemonSetSettings
from fleet.controlplane._daemonsets import DaemonSetStatistics as DaemonSetStatistics
from fleet.controlplane._deployments import DeploymentController as DeploymentController
from fleet.controlplane._deployments import DeploymentSettings as DeploymentSettings
from fleet.controlplane._deployments import pod_template_hash as pod_template_hash
from fleet.controlplane._disruption import DisruptionController as DisruptionController
from fleet.controlplane._disruption import DisruptionSettings as DisruptionSettings
from fleet.controlplane._endpoints import EndpointsController as EndpointsController
from fleet.controlplane._endpoints import EndpointsSettings as EndpointsSettings
from fleet.controlplane._endpointslices import EndpointSliceController as EndpointSliceController
from fleet.controlplane._endpointslices import EndpointSliceSettings as EndpointSliceSettings
from fleet.controlplane._events import EventRecorder as EventRecorder
from fleet.controlplane._events import EventSettings as EventSettings
from fleet.controlplane._gc import GarbageCollector as GarbageCollector
from fleet.controlplane._gc import GCSettings as GCSettings
from fleet.controlplane._informer import Informer as Informer
from fleet.controlplane._informer import Informers as Informers
from fleet.controlplane._jobs import JobController as JobController
from fleet.controlplane._jobs import JobSettings as JobSettings
from fleet.controlplane._manager import ControlPlane as ControlPlane
from fleet.controlplane._manager import ControlPlaneSettings as ControlPlaneSettings
from fleet.controlplane._manager import serve_control_plane as serve_control_plane
from fleet.controlplane._nodelifecycle import NodeLifecycleController as NodeLifecycleController
from fleet.controlplane._nodelifecycle import NodeLifecycleSettings as NodeLifecycleSettings
from fleet.controlplane._replicasets import ReplicaSetController as ReplicaSetController
from fleet.controlplane._replicasets import ReplicaSetSettings as ReplicaSetSettings
from fleet.controlplane._rest import Rest as Rest
from fleet.controlplane._scheduler import Scheduler as Scheduler
from fleet.controlplane._scheduler import SchedulerSettings as SchedulerSettings
from fleet.controlplane._statefulsets import StatefulSetController as StatefulSetController
from fleet.controlplane._statefulsets import StatefulSetSettings as StatefulSetSettings

__all__ = [
    "ControlPlane",
    "ControlPlaneSettings",
    "CronJobController",
    "CronJobSettings",
    "DaemonSetController",
    "DaemonSetSettings",
    "DaemonSetStatistics",
    "DeploymentController",
    "DeploymentSettings",
    "DisruptionController",
    "DisruptionSettings",
    "EndpointSliceController",
    "EndpointSliceSettings",
    "EndpointsController",
    "EndpointsSettings",
    "EventRecorder",
    "EventSettings",
    "GCSettings",
    "GarbageCollector",
    "Informer",
    "Informers",
    "JobController",
    "JobSettings",
    "NodeLifecycleController",
    "NodeLifecycleSettings",
    "ReplicaSetController",
    "ReplicaSetSettings",
    "Rest",
    "Scheduler",
    "SchedulerSettings",
    "StatefulSetController",
    "StatefulSetSettings",
    "pod_template_hash",
    "serve_control_plane",
]
