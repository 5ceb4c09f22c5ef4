"""The apiserver's ``/metrics`` as a bench reads it: parse one scrape, diff two.

A scrape (Prometheus text exposition, parsed by ``prometheus_client.parser``)
is reduced to the families a capacity plan needs, summed over the labels it
does not (scope, version, component, dry_run):

==========================================  ============================================
family (first present wins)                 kept as
==========================================  ============================================
apiserver_request_total                     counts by verb, group, resource, subresource, code
apiserver_request_sli_duration_seconds,     cumulative buckets by verb, group, resource,
apiserver_request_slo_duration_seconds,     subresource (long-running WATCH and CONNECT
apiserver_request_duration_seconds          left out: their duration is the watch's life)
apiserver_current_inflight_requests         by request_kind (mutating, readOnly)
apiserver_longrunning_requests,             by verb, group, resource
apiserver_longrunning_gauge
apiserver_registered_watchers               by group, kind
apiserver_storage_objects, etcd_object_counts  by resource
process_resident_memory_bytes               the server process's RSS (a Go server's own
                                            process collector: kube-apiserver's, etcd's)
==========================================  ============================================

The SLI histogram (1.26+) excludes webhook and priority-and-fairness queue
time, which is what the Kubernetes API call latency SLO measures; the SLO
histogram (1.23-1.26, deprecated) is the same without the APF exclusion; the
plain duration histogram is the fallback of old servers. Which one was used is
recorded (:attr:`Scrape.latency_family`).

:func:`diff` subtracts a *before* scrape from an *after* one: counters and
histogram buckets become what the load cost (a counter that went down is a
restarted apiserver: the after value is taken whole, as Prometheus'
``increase`` does), gauges keep both ends. Percentiles are interpolated within
buckets exactly as PromQL ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client.samples import Sample

from fleet.errors import ProtocolError

__all__ = [
    "LATENCY_FAMILIES",
    "LONG_RUNNING_VERBS",
    "MUTATING_VERBS",
    "Buckets",
    "LatencyKey",
    "MetricsDelta",
    "RequestKey",
    "Scrape",
    "diff",
    "histogram_quantile",
    "parse_metrics",
]

LATENCY_FAMILIES = (
    "apiserver_request_sli_duration_seconds",
    "apiserver_request_slo_duration_seconds",
    "apiserver_request_duration_seconds",
)
"""Request latency histograms, preferred first."""
LONG_RUNNING_VERBS = frozenset({"WATCH", "CONNECT"})
"""Verbs whose duration is a stream's lifetime, not a latency (the SLO leaves them out)."""
MUTATING_VERBS = frozenset(
    {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE"}
)
"""Verbs the "mutating API call latency" SLO covers (the apiserver reports POST as CREATE
on some paths and server-side apply as APPLY)."""

_REQUESTS = "apiserver_request_total"
_INFLIGHT = "apiserver_current_inflight_requests"
_LONGRUNNING = ("apiserver_longrunning_requests", "apiserver_longrunning_gauge")
_WATCHERS = "apiserver_registered_watchers"
_STORAGE = ("apiserver_storage_objects", "etcd_object_counts")
_RESIDENT = "process_resident_memory_bytes"


@dataclass(frozen=True, order=True, slots=True)
class RequestKey:
    """What one request counter is about."""

    verb: str
    group: str
    resource: str
    subresource: str
    code: str


@dataclass(frozen=True, order=True, slots=True)
class LatencyKey:
    """What one latency histogram is about."""

    verb: str
    group: str
    resource: str
    subresource: str

    @property
    def label(self) -> str:
        """``PATCH pods/status``, ``PUT leases.coordination.k8s.io``, ``GET /metrics``: a row's name.

        A request for a non-resource URL has no resource; its path is in ``subresource``.
        """
        if not self.resource:
            return f"{self.verb} {self.subresource}"
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            resource += f"/{self.subresource}"
        return f"{self.verb} {resource}"


@dataclass(frozen=True, slots=True)
class Buckets:
    """One histogram: cumulative counts per upper bound (ascending, ``+Inf`` last)."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    count: float
    sum: float

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in seconds, as ``histogram_quantile``; None when empty."""
        return histogram_quantile(q, self.bounds, self.counts)

    def minus(self, before: Buckets | None) -> Buckets:
        """This histogram less an earlier one of the same series (a reset keeps this one)."""
        if before is None or before.bounds != self.bounds or self.count < before.count:
            return self
        return Buckets(
            self.bounds,
            tuple(a - b for a, b in zip(self.counts, before.counts, strict=True)),
            self.count - before.count,
            self.sum - before.sum,
        )


def histogram_quantile(
    q: float, bounds: tuple[float, ...], counts: tuple[float, ...]
) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative bucket counts.

    Linear interpolation inside the bucket that holds rank ``q * total``, the
    first bucket starting at 0; a rank that falls in the ``+Inf`` bucket gives
    the highest finite bound. None for an empty histogram.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not counts or counts[-1] <= 0:
        return None
    total = counts[-1]
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if math.isinf(bounds[index]):
        return bounds[-2] if len(bounds) > 1 else None
    start = 0.0 if index == 0 else bounds[index - 1]
    below = 0.0 if index == 0 else counts[index - 1]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return bounds[index]
    return start + (bounds[index] - start) * (rank - below) / in_bucket


@dataclass(frozen=True)
class Scrape:
    """The families a bench reads from one ``/metrics`` answer, summed to the keys it uses."""

    requests: Mapping[RequestKey, float] = field(default_factory=dict)
    latency_family: str | None = None
    """Which of :data:`LATENCY_FAMILIES` the latencies come from; None if none was exposed."""
    latencies: Mapping[LatencyKey, Buckets] = field(default_factory=dict)
    inflight: Mapping[str, float] = field(default_factory=dict)
    """``apiserver_current_inflight_requests`` by request_kind."""
    longrunning: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    """Open long-running requests (watches) by (verb, group, resource)."""
    watchers: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """``apiserver_registered_watchers`` by (group, kind); empty on servers without it."""
    storage: Mapping[str, float] = field(default_factory=dict)
    """Stored objects by resource (``pods``, ``leases.coordination.k8s.io``)."""
    resident_bytes: float | None = None
    """``process_resident_memory_bytes``: the server's RSS; None where it is not exposed
    (the sandbox)."""

    def requests_total(self) -> float:
        return sum(self.requests.values())

    def requests_by_verb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self.requests.items():
            out[key.verb] = out.get(key.verb, 0.0) + value
        return out

    def watches(self) -> float:
        """Open watches: the WATCH long-running requests (or registered watchers without those)."""
        open_watches = sum(v for (verb, _, _), v in self.longrunning.items() if verb == "WATCH")
        if not self.longrunning and self.watchers:
            return sum(self.watchers.values())
        return open_watches


_K = TypeVar("_K")


def _add(target: dict[_K, float], key: _K, value: float) -> None:
    target[key] = target.get(key, 0.0) + value


_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def _wanted_lines(text: str) -> str:
    """Only the lines of the families :func:`parse_metrics` reads, and of the latency
    histograms only the first family present (:data:`LATENCY_FAMILIES`).

    A real kube-apiserver's exposition is megabytes (a histogram per verb and resource
    for every family); parsed whole with the pure-Python parser every scrape it took
    ~40 % of a core in the bench's process at kwok-ci load (py-spy), CPU the bench took
    from the apiserver it measures. A line is kept by its metric name, so a family's
    ``# HELP``/``# TYPE`` lines and its samples go together.
    """
    latency = next(
        (name for name in LATENCY_FAMILIES if f"\n{name}_bucket" in text or text.startswith(name)),
        None,
    )
    wanted = {_REQUESTS, _REQUESTS.removesuffix("_total"), _INFLIGHT, _WATCHERS,
              *_LONGRUNNING, *_STORAGE, _RESIDENT}  # fmt: skip
    if latency is not None:
        wanted.add(latency)
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            name = parts[2] if len(parts) > 2 and parts[1] in ("HELP", "TYPE") else ""
        else:
            end = len(line)
            for sep in ("{", " "):
                at = line.find(sep)
                if 0 <= at < end:
                    end = at
            name = line[:end]
        if name in wanted or any(
            name.endswith(suffix) and name[: -len(suffix)] in wanted for suffix in _SUFFIXES
        ):
            kept.append(line)
    return "\n".join(kept) + "\n"


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
_NAME, _VALUE = r"[a-zA-Z_][a-zA-Z0-9_]*", r'"[^"\\]*(?:\\.[^"\\]*)*"'
_LABEL = re.compile(rf"({_NAME})[ \t]*=[ \t]*({_VALUE})")
"""One label: its name and its quoted value."""
_LABELS = re.compile(rf"[ \t]*(?:{_NAME}[ \t]*=[ \t]*{_VALUE}[ \t]*(?:,[ \t]*|$))*")
"""A whole label block, checked in one match before its labels are read."""
_ESCAPE = re.compile(r"\\(.)")
_FAMILY_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(block: str) -> dict[str, str]:
    if _LABELS.fullmatch(block) is None:
        raise ValueError(f"bad labels {{{block}}}")
    return {
        name: _unescape(value[1:-1]) if "\\" in value else value[1:-1]
        for name, value in _LABEL.findall(block)
    }


@dataclass(frozen=True, slots=True)
class _Family:
    samples: list[Sample]


def _families(text: str) -> dict[str, _Family]:
    """Families by name and their samples, as ``prometheus_client``'s text parser names
    them (a counter's family without ``_total``), for the lines :func:`parse_metrics`
    keeps. That parser reads a character at a time: ~0.3 ms a sample line here, a
    second or more for each scrape of kube-apiserver at kwok-ci load, every 5 s, in the
    bench's own process; this reads a line with two regular expressions."""
    families: dict[str, _Family] = {}
    family = ""  # the family of the last TYPE line
    suffixes: tuple[str, ...] = ()  # the suffixes of its samples' names
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                kind = parts[3].strip()
                family = parts[2].removesuffix("_total") if kind == "counter" else parts[2]
                suffixes = _FAMILY_SUFFIXES.get(kind, ())
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise ValueError(f"bad sample line {line[:80]!r}")
        name, block, raw = match.groups()
        if name != family and not (name.startswith(family) and name[len(family) :] in suffixes):
            family, suffixes = name, ()  # a sample of no TYPE: a family of its own
        samples = families.setdefault(family, _Family([])).samples
        samples.append(Sample(name, _labels(block) if block else {}, float(raw)))
    return families


def parse_metrics(text: str) -> Scrape:
    """Parse one Prometheus text exposition; raise ProtocolError if it is not one."""
    try:
        families = _families(_wanted_lines(text))
    except ValueError as exc:
        raise ProtocolError(f"/metrics: not Prometheus text exposition: {exc}") from exc

    requests: dict[RequestKey, float] = {}
    # The parser names a counter family without its _total suffix.
    for name in (_REQUESTS, _REQUESTS.removesuffix("_total")):
        family = families.get(name)
        if family is None:
            continue
        for s in family.samples:
            if s.name != _REQUESTS:
                continue
            lb = s.labels
            key = RequestKey(
                lb.get("verb", ""),
                lb.get("group", ""),
                lb.get("resource", ""),
                lb.get("subresource", ""),
                lb.get("code", ""),
            )
            _add(requests, key, s.value)
        break

    latency_family = next((name for name in LATENCY_FAMILIES if name in families), None)
    latencies: dict[LatencyKey, Buckets] = {}
    if latency_family is not None:
        latencies = _histograms(latency_family, families[latency_family].samples)

    inflight: dict[str, float] = {}
    if _INFLIGHT in families:
        for s in families[_INFLIGHT].samples:
            _add(inflight, s.labels.get("request_kind", ""), s.value)

    longrunning: dict[tuple[str, str, str], float] = {}
    long_family = next((n for n in _LONGRUNNING if n in families), None)
    if long_family is not None:
        for s in families[long_family].samples:
            lb = s.labels
            _add(
                longrunning,
                (lb.get("verb", ""), lb.get("group", ""), lb.get("resource", "")),
                s.value,
            )

    watchers: dict[tuple[str, str], float] = {}
    if _WATCHERS in families:
        for s in families[_WATCHERS].samples:
            _add(watchers, (s.labels.get("group", ""), s.labels.get("kind", "")), s.value)

    storage: dict[str, float] = {}
    storage_family = next((n for n in _STORAGE if n in families), None)
    if storage_family is not None:
        for s in families[storage_family].samples:
            _add(storage, s.labels.get("resource", ""), s.value)

    resident = families.get(_RESIDENT)
    return Scrape(
        requests=requests,
        latency_family=latency_family,
        latencies=latencies,
        inflight=inflight,
        longrunning=longrunning,
        watchers=watchers,
        storage=storage,
        resident_bytes=sum(s.value for s in resident.samples) if resident else None,
    )


def _histograms(family: str, samples: Iterable[Sample]) -> dict[LatencyKey, Buckets]:
    buckets: dict[LatencyKey, dict[float, float]] = {}
    sums: dict[LatencyKey, float] = {}
    counts: dict[LatencyKey, float] = {}
    for s in samples:
        name, lb, value = s.name, s.labels, s.value
        verb = lb.get("verb", "")
        if verb in LONG_RUNNING_VERBS:
            continue
        key = LatencyKey(
            verb, lb.get("group", ""), lb.get("resource", ""), lb.get("subresource", "")
        )
        if name == f"{family}_bucket":
            per = buckets.setdefault(key, {})
            le = float(lb["le"])
            per[le] = per.get(le, 0.0) + value
        elif name == f"{family}_sum":
            sums[key] = sums.get(key, 0.0) + value
        elif name == f"{family}_count":
            counts[key] = counts.get(key, 0.0) + value
    out: dict[LatencyKey, Buckets] = {}
    for key, per in buckets.items():
        bounds = tuple(sorted(per))
        out[key] = Buckets(
            bounds,
            tuple(per[b] for b in bounds),
            counts.get(key, per.get(math.inf, 0.0)),
            sums.get(key, 0.0),
        )
    return out


@dataclass(frozen=True)
class MetricsDelta:
    """What happened between two scrapes."""

    seconds: float
    """Wall time between the scrapes."""
    requests: Mapping[RequestKey, float]
    """Requests served in between, by key (zero rows left out)."""
    latency_family: str | None
    latencies: Mapping[LatencyKey, Buckets]
    """Latency histograms of the requests in between (empty ones left out)."""
    before: Scrape
    after: Scrape

    def requests_total(self) -> float:
        return sum(self.requests.values())

    def requests_by_verb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in self.requests.items():
            out[key.verb] = out.get(key.verb, 0.0) + value
        return out

    def storage_change(self) -> dict[str, tuple[float, float]]:
        """(before, after) object counts of every resource whose count changed."""
        names = set(self.before.storage) | set(self.after.storage)
        return {
            name: (self.before.storage.get(name, 0.0), self.after.storage.get(name, 0.0))
            for name in sorted(names)
            if self.before.storage.get(name, 0.0) != self.after.storage.get(name, 0.0)
        }


def diff(before: Scrape, after: Scrape, *, seconds: float = 0.0) -> MetricsDelta:
    """``after`` less ``before``: the requests and latencies the load in between cost."""
    requests: dict[RequestKey, float] = {}
    for key, value in after.requests.items():
        old = before.requests.get(key, 0.0)
        delta = value if value < old else value - old  # a reset: the counter restarted at 0
        if delta:
            requests[key] = delta
    latencies: dict[LatencyKey, Buckets] = {}
    same_family = before.latency_family == after.latency_family
    for lkey, hist in after.latencies.items():
        delta_hist = hist.minus(before.latencies.get(lkey) if same_family else None)
        if delta_hist.count > 0:
            latencies[lkey] = delta_hist
    return MetricsDelta(seconds, requests, after.latency_family, latencies, before, after)
