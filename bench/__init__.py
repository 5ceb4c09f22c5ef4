"""Benchmarks: load scenarios against a control plane, apiserver metrics, reports and plots.

What the CLI (``kubemock-fleet bench``) and tests may use is re-exported here;
the ``_``-prefixed modules are this package's own. ``bench.transport`` (the
client micro-benchmark) and ``bench.shard`` are separate, importable on
their own.

- Scenarios (``_scenarios``): :class:`ScenarioSpec`, :func:`load_scenario`, :data:`BUILTIN`.
- Running one (``_runner``): :func:`run_scenario`, :class:`RunOptions`, :class:`Progress`,
  :data:`RUN_LABEL`.
- The apiserver's /metrics (``_promtext``): :func:`parse_metrics`, :func:`diff`.
- Client-side latency (``_latency``): :class:`LatencyRecorder`; the SLO table (``_slo``).
- The fault suite (``_faultproxy``, ``_faults``, ``_faultcount``): :class:`FaultProxy` (a TCP
  proxy that cuts, pauses, refuses), :class:`FaultFleet`, :class:`Storm`, :class:`FaultSuite`,
  :func:`run_faults`, :data:`FAULTS` (:data:`STORMS` need the sandbox),
  :func:`start_fleet_process` and :func:`log_tails` (the fleet tests' processes too); the counting: :class:`FaultCounter`, :class:`WriteLog`,
  :class:`LeaseLog`, :class:`LabelWatch`, :class:`Seen`, :class:`Written`, :func:`shard_of`,
  :class:`Unsettled`; :class:`FaultTarget` is what the ``faults`` scenario runs against.
- The report (``_report``): :class:`Report`, :func:`write_report`, :func:`read_report`,
  :func:`report_schema`, :func:`summary_markdown`, :func:`verdict`, :func:`write_plots`.
"""

from bench._faultcount import FaultCounter as FaultCounter
from bench._faultcount import LabelWatch as LabelWatch
from bench._faultcount import LeaseLog as LeaseLog
from bench._faultcount import Seen as Seen
from bench._faultcount import Unsettled as Unsettled
from bench._faultcount import WriteLog as WriteLog
from bench._faultcount import Written as Written
from bench._faultcount import shard_of as shard_of
from bench._faultcount import wait_until as wait_until
from bench._faultproxy import FaultProxy as FaultProxy
from bench._faults import FAULTS as FAULTS
from bench._faults import STORMS as STORMS
from bench._faults import FaultFleet as FaultFleet
from bench._faults import FaultSuite as FaultSuite
from bench._faults import Storm as Storm
from bench._faults import log_tails as log_tails
from bench._faults import run_faults as run_faults
from bench._faults import start_fleet_process as start_fleet_process
from bench._latency import LatencyRecorder as LatencyRecorder
from bench._latency import PhaseStats as PhaseStats
from bench._procstat import child_pids as child_pids
from bench._promtext import MetricsDelta as MetricsDelta
from bench._promtext import Scrape as Scrape
from bench._promtext import diff as diff
from bench._promtext import histogram_quantile as histogram_quantile
from bench._promtext import parse_metrics as parse_metrics
from bench._report import SCHEMA_VERSION as SCHEMA_VERSION
from bench._report import FaultResult as FaultResult
from bench._report import Report as Report
from bench._report import TargetInfo as TargetInfo
from bench._report import read_report as read_report
from bench._report import report_schema as report_schema
from bench._report import summary_markdown as summary_markdown
from bench._report import verdict as verdict
from bench._report import write_plots as write_plots
from bench._report import write_report as write_report
from bench._runner import RUN_LABEL as RUN_LABEL
from bench._runner import FaultTarget as FaultTarget
from bench._runner import NullProgress as NullProgress
from bench._runner import Progress as Progress
from bench._runner import RunOptions as RunOptions
from bench._runner import run_scenario as run_scenario
from bench._scenarios import BUILTIN as BUILTIN
from bench._scenarios import ScenarioSpec as ScenarioSpec
from bench._scenarios import load_scenario as load_scenario
from bench._slo import SloRow as SloRow
from bench._slo import SloThresholds as SloThresholds
from bench._slo import slo_table as slo_table

__all__ = [
    "BUILTIN",
    "FAULTS",
    "RUN_LABEL",
    "SCHEMA_VERSION",
    "STORMS",
    "FaultCounter",
    "FaultFleet",
    "FaultProxy",
    "FaultResult",
    "FaultSuite",
    "FaultTarget",
    "LabelWatch",
    "LatencyRecorder",
    "LeaseLog",
    "MetricsDelta",
    "NullProgress",
    "PhaseStats",
    "Progress",
    "Report",
    "RunOptions",
    "ScenarioSpec",
    "Scrape",
    "Seen",
    "SloRow",
    "SloThresholds",
    "Storm",
    "TargetInfo",
    "Unsettled",
    "WriteLog",
    "Written",
    "child_pids",
    "diff",
    "histogram_quantile",
    "load_scenario",
    "log_tails",
    "parse_metrics",
    "read_report",
    "report_schema",
    "run_faults",
    "run_scenario",
    "shard_of",
    "slo_table",
    "start_fleet_process",
    "summary_markdown",
    "verdict",
    "wait_until",
    "write_plots",
    "write_report",
]
