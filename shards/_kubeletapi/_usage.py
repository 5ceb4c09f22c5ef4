"""Resource usage of fake pods and nodes: scripted by annotations, integrated for counters.

What ``kubectl top`` shows comes from here (through ``/stats/summary`` and
``/metrics/resource``, ``_stats``). Pod annotations (kept by the pod driver with the
lifecycle ones), each for the whole pod, shared among its containers in proportion to
their requests (equally without)::

    fleet.mock.zhizuqiu.cn/usage-cpu: 250m                  # fixed
    fleet.mock.zhizuqiu.cn/usage-cpu: 50%                   # of the pod's requests
    fleet.mock.zhizuqiu.cn/usage-memory: ramp(10%,90%,5m)   # linear over 5 min, then flat
    fleet.mock.zhizuqiu.cn/usage-cpu: sine(100m,900m,10m)   # low→high→low every 10 min

Curves run from the pod's creation. Without an annotation: cpu 10 % of requests (1m
without), memory 50 % of requests (16Mi without). A node uses the sum of its Running pods
plus a base, set by the same annotations on the Node (``spec.nodeConfig.annotations`` of
its CR; a percentage is of the node's capacity; curves run from the CR's creation):
100m and 512Mi by default. An annotation that does not parse counts as absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from fleet.api import parse_go_duration, parse_quantity
from fleet.errors import InputError
from shards._kubeletapi._view import ContainerInfo, NodeInfo, PodInfo

__all__ = [
    "ANNOTATION_USAGE_CPU",
    "ANNOTATION_USAGE_MEMORY",
    "Curve",
    "Usage",
    "container_usage",
    "node_base_usage",
    "node_usage",
    "parse_curve",
    "pod_usage",
]

ANNOTATION_USAGE_CPU = "fleet.mock.zhizuqiu.cn/usage-cpu"
ANNOTATION_USAGE_MEMORY = "fleet.mock.zhizuqiu.cn/usage-memory"
POD_DEFAULTS = {"cpu": ("10%", "1m"), "memory": ("50%", "16Mi")}
"""Per resource: the default with requests, and without (a pod that asks nothing still
shows a little, as any process does)."""
NODE_DEFAULTS = {"cpu": "100m", "memory": "512Mi"}
"""A node's own use (kubelet, runtime, system daemons) on top of its pods'."""
PARSED_CACHE = 4096
"""Distinct quantities and usage annotations whose parse is kept: a scrape reads every pod's
requests and annotations each time, and parsing a quantity exactly (fractions) was most of
the cost of a node's ``/metrics/resource`` (0.8 ms of 10 pods); a fleet has few distinct ones."""
_CALL = re.compile(r"^(ramp|sine)\(\s*([^,]+?)\s*,\s*([^,]+?)\s*,\s*([^,]+?)\s*\)$")


@dataclass(frozen=True, slots=True)
class Curve:
    """Usage over time since a start: ``fixed`` (low), ``ramp`` low→high over ``period``
    then high, ``sine`` low→high→low every ``period``."""

    kind: str
    low: float
    high: float = 0.0
    period: float = 1.0

    def at(self, t: float) -> float:
        t = max(t, 0.0)
        if self.kind == "ramp":
            return self.low + (self.high - self.low) * min(t / self.period, 1.0)
        if self.kind == "sine":
            phase = 2 * math.pi * t / self.period
            return self.low + (self.high - self.low) * (1 - math.cos(phase)) / 2
        return self.low

    def integral(self, t: float) -> float:
        """The area under the curve from 0 to ``t`` (core-seconds for cpu)."""
        t = max(t, 0.0)
        span = self.high - self.low
        if self.kind == "ramp":
            ramp = min(t, self.period)
            return self.low * t + span * ramp * ramp / (2 * self.period) + span * (t - ramp)
        if self.kind == "sine":
            w = 2 * math.pi / self.period
            return self.low * t + span / 2 * (t - math.sin(w * t) / w)
        return self.low * t


@lru_cache(maxsize=PARSED_CACHE)
def _quantity(text: str) -> float:
    return float(parse_quantity(text).value)


def _amount(text: str, resource: str, basis: float) -> float:
    text = text.strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100.0 * basis
    return _quantity(text)


@lru_cache(maxsize=PARSED_CACHE)
def parse_curve(text: str, resource: str, basis: float) -> Curve:
    """A usage annotation's value (InputError when it does not parse)."""
    try:
        call = _CALL.match(text.strip())
        if call is None:
            return Curve("fixed", _amount(text, resource, basis))
        period = parse_go_duration(call.group(4)) / 1e9
        if period <= 0:
            raise InputError(f"{text}: the period must be positive")
        return Curve(
            call.group(1),
            _amount(call.group(2), resource, basis),
            _amount(call.group(3), resource, basis),
            period,
        )
    except (ValueError, ZeroDivisionError) as exc:
        raise InputError(f"{text}: {exc}") from exc


def _requested(c: ContainerInfo, resource: str) -> float:
    for source in (c.requests, c.limits):
        raw = source.get(resource)
        if raw:
            try:
                return _quantity(raw)
            except InputError:
                return 0.0
    return 0.0


def _annotated(annotations: Mapping[str, str], resource: str, basis: float, default: str) -> Curve:
    key = ANNOTATION_USAGE_CPU if resource == "cpu" else ANNOTATION_USAGE_MEMORY
    text = annotations.get(key)
    if text is not None:
        try:
            return parse_curve(text, resource, basis)
        except InputError:
            pass
    return parse_curve(default, resource, basis)


@dataclass(frozen=True, slots=True)
class Usage:
    """One resource of one container or node at a moment."""

    now: float
    """cpu: cores; memory: bytes."""
    total: float
    """cpu: core-seconds since start (the counter); memory: same as ``now``."""


def _shares(pod: PodInfo, resource: str) -> tuple[list[float], Curve]:
    """Each container's share of the pod's usage of ``resource``, and the pod's curve."""
    containers = pod.containers
    if len(containers) == 1:  # most pods: no sum of requests to share by
        basis = _requested(containers[0], resource)
        shares = [1.0]
    else:
        requested = [_requested(c, resource) for c in containers]
        basis = sum(requested)
        shares = [r / basis for r in requested] if basis else [1 / len(requested)] * len(requested)
    with_requests, without = POD_DEFAULTS[resource]
    return shares, _annotated(pod.annotations, resource, basis, with_requests if basis else without)


def container_usage(pod: PodInfo, resource: str, at: datetime) -> list[tuple[str, Usage]]:
    """Each container's usage of ``resource`` at ``at`` (empty unless the pod is Running)."""
    if pod.phase != "Running" or not pod.containers:
        return []
    shares, curve = _shares(pod, resource)
    t = (at - pod.created).total_seconds()
    now, total = curve.at(t), curve.integral(t) if resource == "cpu" else curve.at(t)
    return [
        (c.name, Usage(now * share, total * share))
        for c, share in zip(pod.containers, shares, strict=True)
    ]


_Model = tuple[list[float], Curve, list[float], Curve]
_models: dict[tuple[int, int], tuple[object, object, _Model]] = {}
"""(``id(containers)``, ``id(annotations)``) -> (both, held so that their ids are not
reused; the pod's cpu and memory shares and curves). The pods of one template on one node
share both objects (the shard's view converts a spec's containers once, a template's pods
share their annotations), so a scrape works each model out once, not once a pod."""


def _model(pod: PodInfo) -> _Model:
    key = (id(pod.containers), id(pod.annotations))
    cached = _models.get(key)
    if cached is not None and cached[0] is pod.containers and cached[1] is pod.annotations:
        return cached[2]
    if len(_models) >= PARSED_CACHE:
        _models.clear()
    model = (*_shares(pod, "cpu"), *_shares(pod, "memory"))
    _models[key] = (pod.containers, pod.annotations, model)
    return model


def pod_usage(pod: PodInfo, at: datetime) -> list[tuple[str, float, float]]:
    """Each container's cpu counter (core-seconds) and memory working set (bytes) at ``at``,
    the figures ``/metrics/resource`` reports, in one pass (the scrape's hot path: the same
    numbers as :func:`container_usage`, without its per-resource objects); empty unless the
    pod is Running."""
    if pod.phase != "Running" or not pod.containers:
        return []
    t = (at - pod.created).total_seconds()
    cpu_shares, cpu, memory_shares, memory = _model(pod)
    cpu_total, memory_now = cpu.integral(t), memory.at(t)
    return [
        (c.name, cpu_total * cpu_share, memory_now * memory_share)
        for c, cpu_share, memory_share in zip(
            pod.containers, cpu_shares, memory_shares, strict=True
        )
    ]


def node_usage(node: NodeInfo, pods: Sequence[PodInfo], resource: str, at: datetime) -> Usage:
    """A node's usage: its base plus its Running pods'."""
    base = node_base_usage(node, resource, at)
    now, total = base.now, base.total
    for pod in pods:
        for _, usage in container_usage(pod, resource, at):
            now += usage.now
            total += usage.total
    return Usage(now, total)


def node_base_usage(node: NodeInfo, resource: str, at: datetime) -> Usage:
    """A node's own usage, without its pods'."""
    capacity = node.capacity.get(resource)
    try:
        basis = _quantity(capacity) if capacity else 0.0
    except InputError:
        basis = 0.0
    curve = _annotated(node.annotations, resource, basis, NODE_DEFAULTS[resource])
    t = (at - node.created).total_seconds() if node.created else 0.0
    now = curve.at(t)
    return Usage(now, curve.integral(t) if resource == "cpu" else now)
