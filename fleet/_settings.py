"""The fleet's configuration: small frozen pydantic sections, loaded from four sources.

Precedence, highest first::

    command-line flags  >  environment (KUBEMOCK_FLEET_...)  >  YAML file (--config)  >  defaults

* The YAML file uses the camelCase names ``config show`` prints
  (``shard: {renewInterval: 10s}``); unknown keys are errors (typos must not
  pass silently).
* The environment uses ``KUBEMOCK_FLEET_`` plus the snake_case field path,
  sections joined by ``__``: ``KUBEMOCK_FLEET_SHARD__RENEW_INTERVAL=5s``,
  ``KUBEMOCK_FLEET_COORDINATOR__NAMESPACES=a,b``. Variables whose first
  segment names no setting are ignored (the prefix is shared with the shard
  id and others' tooling).
* Flags are passed in by the CLI as a dict keyed by field path.

Durations take Go syntax (``10s``, ``1m30s``, ``500ms``) or a number of
seconds, and print in Go syntax. Every bad value becomes one line naming its
source and its field path, and all of them together one
:class:`fleet.errors.ConfigError`::

    config.yaml: shard.renewInterval: invalid duration "ten"

Defaults follow the kubelet and client-go where the fleet imitates them, and
are justified beside each field.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from fleet.api import format_go_duration, parse_go_duration
from fleet.errors import ConfigError, InputError
from fleet.wire import FLEET_NAMESPACE

__all__ = [
    "ENV_PREFIX",
    "CoordinatorSettings",
    "Duration",
    "FleetSettings",
    "ShardSettings",
    "format_duration",
    "load_settings",
    "render_settings",
]

ENV_PREFIX = "KUBEMOCK_FLEET_"
"""Environment variables for settings start with this; ``__`` separates sections."""


# --- durations ---------------------------------------------------------------------------------


def _invalid_duration(value: Any, why: str = "") -> PydanticCustomError:
    detail = f": {why}" if why else ""
    return PydanticCustomError("duration", 'invalid duration "{value}"' + detail, {"value": value})


def _to_seconds(value: Any) -> float:
    """A number of seconds, or a Go duration string, to float seconds (never negative)."""
    if isinstance(value, bool):
        raise _invalid_duration(value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # a bare number means seconds
        except ValueError:
            try:
                seconds = parse_go_duration(text) / 1e9
            except InputError as exc:
                raise _invalid_duration(value) from exc
    else:
        raise _invalid_duration(value)
    if seconds < 0 or seconds != seconds:  # negative or NaN
        raise _invalid_duration(value, "must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Go syntax for a number of seconds: ``40s``, ``1m30s``, ``500ms``, ``0s``."""
    return format_go_duration(round(seconds * 1e9))


Duration = Annotated[
    float,
    BeforeValidator(_to_seconds),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Non-negative seconds as a float; parsed from Go syntax or a number, printed in Go syntax."""


def _split_list(value: Any) -> Any:
    """Environment lists come as ``a,b`` (or a JSON array)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


# --- sections ----------------------------------------------------------------------------------


class ShardSettings(_Section):
    """How one shard process imitates its kubelets and talks to the apiserver."""

    node_lease_duration: Duration = 40.0
    """Node Lease ``leaseDurationSeconds``: the kubelet's default (40 s)."""
    node_lease_renew_interval: Duration = 10.0
    """How often a node Lease is renewed: the kubelet renews at 1/4 of the duration (10 s)."""
    renew_jitter: float = Field(default=0.04, ge=0.0, le=1.0)
    """Fraction by which each renewal interval is jittered: the kubelet's lease controller uses 0.04."""
    status_report_interval: Duration = 300.0
    """Node status PATCH when nothing changed: the kubelet's nodeStatusReportFrequency (5 min)."""
    pod_watch: Literal["shard", "per-node"] = "shard"
    """One pod watch for the whole shard (cheap for the apiserver), or one per node as a kubelet does."""
    traffic_profile: Literal["lean", "kubelet"] = "lean"
    """What each node sends beside its heartbeat. ``lean``: Leases, status PATCHes, pod
    status, Events, one pod watch for the shard (podWatch): the least a control plane must
    see. ``kubelet``: also what a real kubelet reads (apiserver-transcripts/kubelet-requests.md,
    ``shards._traffic``): its Node GET every 10 s, watches of its Node, of Services,
    RuntimeClasses and CSIDrivers, of the kube-root-ca.crt ConfigMap of each namespace its
    pods are in, its CSINode, and a pod watch of its own (podWatch per-node is implied).
    Costs the shard 5+ connections per node (docs/performance.md)."""
    events: bool = True
    """Post the Events a kubelet posts (node Starting, NodeHasSufficient*, NodeReady; pod
    Pulling, Pulled, Created, Started, Killing), counted in series as client-go does: a
    large share of a real cluster's writes. They go after every status write, and never
    before a Lease renewal; false posts none (Warnings about bad CRs and pods still go)."""
    pod_deletion_delay: Duration = 0.0
    """Wait between a pod's deletionTimestamp and its final DELETE: a kubelet whose containers exit at once (0 s)."""
    node_ip_range: ipaddress.IPv4Network = ipaddress.IPv4Network("240.0.0.0/8")
    """Node InternalIPs are drawn from here (each shard from its part). 16M addresses in
    240.0.0.0/4, which IANA reserves and no installer uses by default: clear of every usual
    Service range (10.96.0.0/12 kubeadm and kind, 10.43.0.0/16 k3s, 172.30.0.0/16 OpenShift,
    100.64.0.0/13 kops), pod range (10.244.0.0/16, 10.0.0.0/8, 10.42.0.0/16, 192.168.0.0/16
    Calico, 100.96.0.0/11 kops) and node network (RFC 1918, 100.64.0.0/10 CGNAT), so a fake
    node never shares an address with anything real (the default once gave shard 1 of 2
    the ``kubernetes`` Service's 10.96.0.1)."""
    pod_cidr_range: ipaddress.IPv4Network = ipaddress.IPv4Network("244.0.0.0/6")
    """Where the shard gives podCIDRs (podCidrAllocation), each node's is carved from here:
    244.0.0.0-247.255.255.255, 262,144 node /24s, in 240.0.0.0/4 beside nodeIpRange and
    clear of the same real ranges, so fake pod IPs never collide with real pods' or
    Services' in a cluster whose own pods get theirs elsewhere (Calico, Cilium IPAM)."""
    pod_cidr_allocation: Literal["auto", "shard", "cluster"] = "auto"
    """Who gives each Node its ``spec.podCIDR(s)`` (a CR's own ``podCIDR`` is always written).
    ``cluster``: kube-controller-manager (``--allocate-node-cidrs``); the shard writes none and
    reads them back for pod IPs. ``shard``: carved from podCidrRange at registration (where
    nobody allocates: the sandbox). ``auto``: registered without; a node still without one
    podCidrWait later takes pod IPs from the shard's share of podCidrRange but writes no
    podCIDR (a kube-controller-manager allocating node CIDRs refuses to start over one
    outside its --cluster-cidr), and from then on every node at once; a podCIDR the
    cluster writes settles it the other way. The first node decides: a
    controller-manager that has only just started may miss the wait, so say ``cluster``
    where it is known (``up`` says ``shard`` on the sandbox, ``cluster`` on a real control
    plane with its controller-manager)."""
    pod_cidr_wait: Duration = 5.0
    """How long ``auto`` waits for the cluster's podCIDR: kube-controller-manager's range
    allocator writes it within a second of the Node's creation."""
    node_pod_cidr_prefix: int = Field(default=24, ge=8, le=30)
    """Prefix length of each node's podCIDR: kube-controller-manager's --node-cidr-mask-size (24, so 32k nodes fit the range)."""
    writers: int = Field(default=16, ge=1, le=1024)
    """Concurrent write workers: 16 in flight is where the h11 transport was cheapest per request (DESIGN.md)."""
    qps: float = Field(default=2000.0, gt=0)
    """Sustained writes per second: 10,000 nodes renewing every 10 s need 1,000, with room for pod work."""
    burst: int = Field(default=400, ge=1)
    """Writes that may go at once above the QPS (a status-report wave after a restart)."""
    write_queue_bound: int = Field(default=10_000, ge=1)
    """Writes that may wait before producers block: one pending write per node at 10,000 nodes."""
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    """Base /metrics port: shard K listens on metricsPort + K when shards share a host; 0 picks a free port."""
    kubelet_api: bool = False
    """Serve the kubelet API (kubectl logs, nodes/proxy, stats) for the driven nodes on one HTTPS port; their InternalIP and kubelet port then point at the shard. Off by default: it needs the apiserver's kubelet client CA."""
    kubelet_port: int = Field(default=10250, ge=0, le=65535)
    """Base kubelet API port (the kubelet's own): shard K listens on kubeletPort + K where shards share an address (run, on loopback); a shard advertising its own $POD_IP (deploy/) takes kubeletPort itself; 0 picks a free port."""
    kubelet_address: str = ""
    """Address the nodes advertise (InternalIP); empty: $POD_IP (the shard pod's, by the downward API)."""
    kubelet_bind: str = ""
    """Address the kubelet API binds; empty: where the nodes are reached (kubeletAddress or $POD_IP; with kubeletAddressPerNode every loopback address, no other interface). 0.0.0.0 opens it on every interface, as deploy/ sets it (kubectl port-forward dials the pod's loopback)."""
    kubelet_address_per_node: bool = False
    """Each node advertises an address of its own, 127.(K+1).x.y for shard K, all served by the one listener (on the loopback device alone): kube-apiserver's nodes/<n>/proxy/stats/summary then reaches the right node. For shards on one machine (run and up turn it on); the kubelet API's port is still kubeletPort (+ K)."""
    kubelet_client_ca_file: str = ""
    """CA of the apiserver's --kubelet-client-certificate (a kubelet's --client-ca-file); empty: the cluster's client-ca-file (kube-system/extension-apiserver-authentication, kubeadm's and kind's kubelet client CA too)."""
    kubelet_authorization: Literal["auto", "webhook", "always-allow"] = "auto"
    """Kubelet API authorization: SubjectAccessReview where the cluster serves it (auto), always (webhook), or none (always-allow); bearer tokens are checked by TokenReview."""
    kubelet_cert_file: str = ""
    """Serving certificate of the kubelet API; empty: a throwaway self-signed one (kube-apiserver without --kubelet-certificate-authority does not verify it)."""
    kubelet_key_file: str = ""
    """Key of kubeletCertFile."""

    @model_validator(mode="after")
    def _check(self) -> ShardSettings:
        if self.node_lease_renew_interval <= 0:
            raise ValueError("nodeLeaseRenewInterval must be positive")
        if self.node_lease_renew_interval >= self.node_lease_duration:
            raise ValueError("nodeLeaseRenewInterval must be shorter than nodeLeaseDuration")
        if self.status_report_interval <= 0:
            raise ValueError("statusReportInterval must be positive")
        if self.node_pod_cidr_prefix < self.pod_cidr_range.prefixlen:
            raise ValueError("nodePodCidrPrefix must be at least podCidrRange's prefix length")
        return self


class CoordinatorSettings(_Section):
    """How the coordinator splits Node CRs across shards and elects its leader."""

    namespaces: Annotated[list[str], BeforeValidator(_split_list)] = []
    """Namespaces whose Node CRs the fleet drives; empty means all namespaces (kube-mock's behaviour)."""
    shard_lease_duration: Duration = 15.0
    """Shard Lease duration: well under the node Lease's 40 s, so a dead shard's nodes move before they go NotReady."""
    shard_renew_interval: Duration = 2.0
    """How often a shard renews its Lease: client-go's retryPeriod (2 s)."""
    shard_renew_deadline: Duration = 10.0
    """A shard that has not renewed within this stops driving its nodes (the fence): client-go's renewDeadline (10 s)."""
    leader_lease_duration: Duration = 15.0
    """Coordinator leader-election Lease duration: client-go's default (15 s)."""
    leader_renew_deadline: Duration = 10.0
    """The leader steps down if it could not renew for this long: client-go's default (10 s)."""
    leader_retry_period: Duration = 2.0
    """Interval between leader-election attempts: client-go's default (2 s)."""
    max_moves_per_second: float = Field(default=50.0, gt=0)
    """Rebalance label writes per second when a shard returns: 1,000 CRs move in 20 s, never a storm."""
    max_writes_in_flight: int = Field(default=32, ge=1, le=256)
    """Label PATCHes in flight at once: a dead shard's 3,000 CRs move in about a second at
    ~3 ms each on an idle apiserver; on a loaded one each takes hundreds of ms (8 in flight
    moved 481 CRs in 22 s on the bench's sandbox at load 10, past the 15 s a failover has),
    and the moves gate every takeover, so they get a larger share of the apiserver."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """The coordinator's /metrics port (Prometheus' conventional first port); 0 picks a free port."""

    @model_validator(mode="after")
    def _check(self) -> CoordinatorSettings:
        if (
            not self.shard_lease_duration
            > self.shard_renew_deadline
            > self.shard_renew_interval
            > 0
        ):
            raise ValueError(
                "need shardLeaseDuration > shardRenewDeadline > shardRenewInterval > 0"
            )
        if (
            not self.leader_lease_duration
            > self.leader_renew_deadline
            > self.leader_retry_period
            > 0
        ):
            raise ValueError(
                "need leaderLeaseDuration > leaderRenewDeadline > leaderRetryPeriod > 0"
            )
        return self


class FleetSettings(_Section):
    """Everything a fleet process reads at start: where the cluster is, and both sections."""

    namespace: str = FLEET_NAMESPACE
    """The fleet namespace: shard and coordinator Leases (docs/architecture.md)."""
    kubeconfig: str | None = None
    """Kubeconfig path as given; unset means $KUBECONFIG, then ~/.kube/config, then in-cluster."""
    context: str | None = None
    """Kubeconfig context; unset means the current context."""
    metrics_address: str = "127.0.0.1"
    """Address /metrics, /healthz and /readyz bind: loopback, since they are unauthenticated;
    deploy/ sets ``0.0.0.0`` so Prometheus and the kubelet's probes reach the pod."""
    shards: int = Field(default=1, ge=0, le=1024)
    """Shard processes ``run`` starts: one per core is the sweet spot; 0 runs the coordinator alone."""
    shard: ShardSettings = ShardSettings()
    """Shard settings."""
    coordinator: CoordinatorSettings = CoordinatorSettings()
    """Coordinator settings."""

    @model_validator(mode="after")
    def _takeover_fits(self) -> FleetSettings:
        """The failover rule (docs/architecture.md, "Timings"): a dead shard's node Leases
        were last renewed up to a renew interval before it died, its CRs move once its
        shard Lease has expired, and another shard must renew them before the node Lease
        duration has passed since. So shardLeaseDuration + nodeLeaseRenewInterval must stay
        under nodeLeaseDuration, with room to spare for the moves and the takeover (the
        defaults: 15 s + 10 s of 40 s leave 15 s). Only where a shard can take over (2 or
        more shards): one alone keeps its nodes through a restart."""
        shard_lease = self.coordinator.shard_lease_duration
        renew = self.shard.node_lease_renew_interval
        node_lease = self.shard.node_lease_duration
        if self.shards >= 2 and shard_lease + renew >= node_lease:
            raise ValueError(
                f"coordinator.shardLeaseDuration ({format_duration(shard_lease)}) + "
                f"shard.nodeLeaseRenewInterval ({format_duration(renew)}) must be under "
                f"shard.nodeLeaseDuration ({format_duration(node_lease)}): a dead shard's "
                "nodes would go NotReady before another shard could take them over"
            )
        return self

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"not an IP address: {value!r}") from None
        return value


# --- loading -----------------------------------------------------------------------------------


_SECTIONS: dict[str, type[_Section]] = {"shard": ShardSettings, "coordinator": CoordinatorSettings}


def _alias(model: type[BaseModel], name: str) -> str | None:
    """The camelCase alias of field ``name`` (snake_case, any case) in ``model``, or None."""
    field = model.model_fields.get(name.lower())
    if field is None:
        return None
    return to_camel(name.lower())


def _env_layer(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Environment variables → {camelCase dotted path: (value, source)}."""
    out: dict[str, tuple[Any, str]] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        parts = var[len(ENV_PREFIX) :].split("__")
        head = _alias(FleetSettings, parts[0])
        if head is None:
            continue  # not ours: KUBEMOCK_FLEET_SHARD_ID and the like
        path = [head]
        section = _SECTIONS.get(parts[0].lower())
        for part in parts[1:]:
            alias = _alias(section, part) if section is not None else None
            path.append(alias if alias is not None else part.lower())
        out[".".join(path)] = (value, f"${var}")
    return out


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and key in ("shard", "coordinator") and not prefix:
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def _file_layer(path: Path) -> dict[str, tuple[Any, str]]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{source}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    return {key: (value, source) for key, value in _flatten(data).items()}


def _flag_layer(flags: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """Flags keyed by field path (``kubeconfig``, ``shard.writers``); None means not given."""
    out: dict[str, tuple[Any, str]] = {}
    for key, value in flags.items():
        if value is None:
            continue
        parts = key.split(".")
        path = ".".join(to_camel(p) for p in parts)
        out[path] = (value, "--" + parts[-1].replace("_", "-"))
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *heads, last = path.split(".")
        for head in heads:
            child = node.setdefault(head, {})
            if not isinstance(child, dict):  # "shard: 3" in a file, then shard.x elsewhere
                child = node[head] = {}
            node = child
        node[last] = value
    return out


def _source_for(loc: tuple[int | str, ...], sources: Mapping[str, str]) -> str:
    """The source that set the field at ``loc``, or those that set anything under it."""
    for end in range(len(loc), 0, -1):
        path = ".".join(str(p) for p in loc[:end])
        if path in sources:
            return sources[path]
    prefix = ".".join(str(p) for p in loc)
    under = sorted({src for p, src in sources.items() if not prefix or p.startswith(prefix + ".")})
    return ", ".join(under) if under else "defaults"


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown setting"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def load_settings(
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> FleetSettings:
    """The effective settings from flags > environment > ``config_file`` > defaults.

    ``environ`` defaults to ``os.environ``. Raises :class:`ConfigError` with
    one line per bad field: ``<source>: <field path>: <problem>``.
    """
    layers: list[dict[str, tuple[Any, str]]] = []
    if config_file is not None:
        layers.append(_file_layer(Path(config_file)))
    layers.append(_env_layer(os.environ if environ is None else environ))
    layers.append(_flag_layer(flags or {}))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:  # lowest precedence first; later layers overwrite
        for path, (value, source) in layer.items():
            values[path] = value
            sources[path] = source
    try:
        return FleetSettings.model_validate(_nest(values))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(p) for p in loc) or "(settings)"
            lines.append(f"{_source_for(loc, sources)}: {field}: {_message(error)}")
        raise ConfigError("\n".join(lines)) from None


def render_settings(settings: FleetSettings, output: Literal["yaml", "json"] = "yaml") -> str:
    """The settings as ``config show`` prints them: camelCase keys, Go durations."""
    data = settings.model_dump(mode="json", by_alias=True)
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False)
