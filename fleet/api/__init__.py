"""The CR models of kubemock-fleet and the value types they are made of.

Layer 2, beside ``fleet.kube``: imports only ``fleet.errors`` and
``fleet.wire`` (the CR group and version). What the rest of the project may
use is re-exported here; the ``_``-prefixed modules are this package's own.

- Quantities (``_quantity``): :func:`parse_quantity`, :class:`Quantity`.
- Cron schedules (``_cron``): :func:`parse_cron`, :class:`CronSchedule`,
  :func:`parse_time_zone` (CronJob ``spec.schedule`` and ``spec.timeZone``).
- Go durations (``_duration``): :func:`parse_go_duration`, :func:`parse_delay`,
  :func:`format_go_duration`.
- The Node CR (``_node``): :class:`MockNode` and its parts; the MockStatus CR
  (``_mockstatus``): a scripted pod lifecycle.
- Loading raw CRs with one clear :class:`~fleet.errors.InputError` (``_load``).
- CRDs generated from the models (``_crd``): :func:`crd_manifests`.
"""

from ._crd import CRDS_MISSING_HINT as CRDS_MISSING_HINT
from ._crd import crd_manifests as crd_manifests
from ._crd import structural_schema as structural_schema
from ._cron import CronSchedule as CronSchedule
from ._cron import parse_cron as parse_cron
from ._cron import parse_time_zone as parse_time_zone
from ._duration import GO_DURATION_PATTERN as GO_DURATION_PATTERN
from ._duration import format_go_duration as format_go_duration
from ._duration import parse_delay as parse_delay
from ._duration import parse_go_duration as parse_go_duration
from ._load import load_mock_status as load_mock_status
from ._load import load_node as load_node
from ._load import load_node_script as load_node_script
from ._mockstatus import ContainerScript as ContainerScript
from ._mockstatus import InitContainerScript as InitContainerScript
from ._mockstatus import LabelSelectorRequirement as LabelSelectorRequirement
from ._mockstatus import MockStatus as MockStatus
from ._mockstatus import MockStatusBranch as MockStatusBranch
from ._mockstatus import MockStatusSpec as MockStatusSpec
from ._mockstatus import MockStatusStatus as MockStatusStatus
from ._mockstatus import MockStatusStep as MockStatusStep
from ._mockstatus import PodSelector as PodSelector
from ._mockstatus import ReadinessScript as ReadinessScript
from ._mockstatus import RestartsScript as RestartsScript
from ._mockstatus import TerminatedScript as TerminatedScript
from ._mockstatus import WaitingScript as WaitingScript
from ._node import API_VERSION as API_VERSION
from ._node import GROUP as GROUP
from ._node import VERSION as VERSION
from ._node import MockNode as MockNode
from ._node import MockNodeSpec as MockNodeSpec
from ._node import MockNodeStatus as MockNodeStatus
from ._node import NodeConfig as NodeConfig
from ._nodescript import NODE_SCRIPT_CONDITIONS as NODE_SCRIPT_CONDITIONS
from ._nodescript import LeaseFlapScript as LeaseFlapScript
from ._nodescript import NodeConditionScript as NodeConditionScript
from ._nodescript import NodeScript as NodeScript
from ._nodescript import NodeScriptSelector as NodeScriptSelector
from ._nodescript import NodeScriptSpec as NodeScriptSpec
from ._nodescript import NodeScriptStatus as NodeScriptStatus
from ._nodescript import NodeScriptStep as NodeScriptStep
from ._quantity import INT64_MAX as INT64_MAX
from ._quantity import QUANTITY_PATTERN as QUANTITY_PATTERN
from ._quantity import Quantity as Quantity
from ._quantity import parse_quantity as parse_quantity
from ._types import Condition as Condition
from ._types import LocalObjectReference as LocalObjectReference
from ._types import ObjectMeta as ObjectMeta
from ._types import Taint as Taint
from ._types import Toleration as Toleration

__all__ = [
    "API_VERSION",
    "CRDS_MISSING_HINT",
    "GO_DURATION_PATTERN",
    "GROUP",
    "INT64_MAX",
    "NODE_SCRIPT_CONDITIONS",
    "QUANTITY_PATTERN",
    "VERSION",
    "Condition",
    "ContainerScript",
    "CronSchedule",
    "InitContainerScript",
    "LabelSelectorRequirement",
    "LeaseFlapScript",
    "LocalObjectReference",
    "MockNode",
    "MockNodeSpec",
    "MockNodeStatus",
    "MockStatus",
    "MockStatusBranch",
    "MockStatusSpec",
    "MockStatusStatus",
    "MockStatusStep",
    "NodeConditionScript",
    "NodeConfig",
    "NodeScript",
    "NodeScriptSelector",
    "NodeScriptSpec",
    "NodeScriptStatus",
    "NodeScriptStep",
    "ObjectMeta",
    "PodSelector",
    "Quantity",
    "ReadinessScript",
    "RestartsScript",
    "Taint",
    "TerminatedScript",
    "Toleration",
    "WaitingScript",
    "crd_manifests",
    "format_go_duration",
    "load_mock_status",
    "load_node",
    "load_node_script",
    "parse_cron",
    "parse_delay",
    "parse_go_duration",
    "parse_quantity",
    "parse_time_zone",
    "structural_schema",
]
