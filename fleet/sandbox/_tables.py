"""meta.k8s.io/v1 Table responses (what ``kubectl get`` asks for) for the sandbox.

Pure library called by the sandbox apiserver when a list or get asks for
``application/json;as=Table;v=v1;g=meta.k8s.io``. It ports the column
definitions and cell logic of kubernetes ``pkg/printers/internalversion/
printers.go`` (always the wide variant: the apiserver serves every column and
kubectl hides priority > 0 ones unless ``-o wide``), the apiextensions
``tableconvertor`` for custom resources (``additionalPrinterColumns`` with
simple JSONPath, default Age column) and the default convertor
(Name, Created At) for CRDs and any resource without a printer.

Descriptions are the real ones where the transcripts recorded them (pods,
nodes, leases, custom resources); for the other kinds they are the Go field
docs as far as known — kubectl never shows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fleet.errors import InputError
from fleet.machinery import label_selector_from_dict
from fleet.sandbox._objects import go_ordered_meta

__all__ = ["human_duration", "jsonpath_find", "table_for"]

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: http://kubernetes.io/docs/user-guide/identifiers#names"
)
_CREATED_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_ADDRESSES_DESC = (
    "List of addresses reachable to the node. Queried from cloud provider, if available. More "
    "info: https://kubernetes.io/docs/concepts/nodes/node/#addresses Note: This field is "
    "declared as mergeable, but the merge key is not sufficiently unique, which can cause data "
    "corruption when it is merged. Callers should instead use a full-replacement patch. See "
    "http://pr.k8s.io/79391 for an example."
)
_CONTAINERS_DESC = "Names of each container in the template."
_IMAGES_DESC = "Images referenced by each container in the template."
_SELECTOR_DESC = (
    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the "
    "ones affected by this deployment. It must match the pod template's labels."
)

_Col = tuple[str, str, str, int, str]  # name, type, format, priority, description


_JOB_SELECTOR_DESC = (
    "A label query over pods that should match the pod count. Normally, the system sets this "
    "field for you. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"
)


def _c(name: str, desc: str, *, type: str = "string", fmt: str = "", priority: int = 0) -> _Col:
    return (name, type, fmt, priority, desc)


_NAME = _c("Name", _NAME_DESC, fmt="name")
_AGE = _c("Age", _CREATED_DESC)

_COLUMNS: dict[str, list[_Col]] = {
    "pods": [
        _NAME,
        _c("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        _c("Status", "The aggregate status of the containers in this pod."),
        _c(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the "
            "last container in this pod has restarted.",
        ),
        _AGE,
        _c(
            "IP",
            "IP address allocated to the pod. Routable at least within the cluster. Empty if "
            "not yet allocated.",
            priority=1,
        ),
        _c(
            "Node",
            "NodeName is a request to schedule this pod onto a specific node. If it is "
            "non-empty, the scheduler simply schedules this pod onto that node, assuming that it "
            "fits resource requirements.",
            priority=1,
        ),
        _c(
            "Nominated Node",
            "nominatedNodeName is set only when this pod preempts other pods on the node, but it "
            "cannot be scheduled right away as preemption victims receive their graceful "
            "termination periods. This field does not guarantee that the pod will be scheduled "
            "on this node. Scheduler may decide to place the pod elsewhere if other nodes become "
            "available sooner. Scheduler may also decide to give the resources on this node to a "
            "higher priority pod that is created after preemption. As a result, this field may "
            "be different than PodSpec.nodeName when the pod is scheduled.",
            priority=1,
        ),
        _c(
            "Readiness Gates",
            "If specified, all readiness gates will be evaluated for pod readiness. A pod is "
            "ready when all its containers are ready AND all conditions specified in the "
            'readiness gates have status equal to "True" More info: '
            "https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
            priority=1,
        ),
    ],
    "nodes": [
        _NAME,
        _c("Status", "The status of the node"),
        _c("Roles", "The roles of the node"),
        _AGE,
        _c("Version", "Kubelet Version reported by the node."),
        _c("Internal-IP", _ADDRESSES_DESC, priority=1),
        _c("External-IP", _ADDRESSES_DESC, priority=1),
        _c(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            priority=1,
        ),
        _c(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            priority=1,
        ),
        _c(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. "
            "docker://1.5.0).",
            priority=1,
        ),
    ],
    "deployments": [
        _NAME,
        _c("Ready", "Number of the pod with ready state"),
        _c(
            "Up-to-date",
            "Total number of non-terminated pods targeted by this deployment that have the "
            "desired template spec.",
            type="integer",
        ),
        _c(
            "Available",
            "Total number of available pods (ready for at least minReadySeconds) targeted by "
            "this deployment.",
            type="integer",
        ),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
        _c("Selector", _SELECTOR_DESC, priority=1),
    ],
    "replicasets": [
        _NAME,
        _c(
            "Desired",
            "Replicas is the number of desired replicas. This is a pointer to distinguish "
            "between explicit zero and unspecified. Defaults to 1. More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            type="integer",
        ),
        _c(
            "Current",
            "Replicas is the most recently observed number of replicas. More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller",
            type="integer",
        ),
        _c(
            "Ready",
            "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.",
            type="integer",
        ),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
        _c(
            "Selector",
            "Selector is a label query over pods that should match the replica count. Label "
            "keys and values that must match in order to be controlled by this replica set. It "
            "must match the pod template's labels. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            priority=1,
        ),
    ],
    "endpoints": [
        _NAME,
        _c(
            "Endpoints",
            "The set of all endpoints is the union of all subsets. Addresses are placed into "
            "subsets according to the IPs they share. A single address with multiple ports, "
            "some of which are ready and some of which are not (because they come from "
            "different containers) will result in the address being displayed in different "
            "subsets for the different ports. No address will appear in both Addresses and "
            "NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a "
            "service.",
        ),
        _AGE,
    ],
    "endpointslices": [
        _NAME,
        _c(
            "AddressType",
            "addressType specifies the type of address carried by this EndpointSlice. All "
            "addresses in this slice must be the same type. This field is immutable after "
            "creation. The following address types are currently supported: * IPv4: Represents "
            "an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully "
            "Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, "
            'and kube-proxy only processes, slices of addressType "IPv4" and "IPv6". No '
            'semantics are defined for the "FQDN" type.',
        ),
        _c(
            "Ports",
            "ports specifies the list of network ports exposed by each endpoint in this slice. "
            "Each port must have a unique name. Each slice may include a maximum of 100 ports. "
            "Services always have at least 1 port, so EndpointSlices generated by the "
            "EndpointSlice controller will likewise always have at least 1 port. "
            "EndpointSlices used for other purposes may have an empty ports list.",
        ),
        _c(
            "Endpoints",
            "endpoints is a list of unique endpoints in this slice. Each slice may include a "
            "maximum of 1000 endpoints.",
        ),
        _AGE,
    ],
    "daemonsets": [
        _NAME,
        _c(
            "Desired",
            "The total number of nodes that should be running the daemon pod (including nodes "
            "correctly running the daemon pod). More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            type="integer",
        ),
        _c(
            "Current",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run "
            "the daemon pod. More info: "
            "https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            type="integer",
        ),
        _c(
            "Ready",
            "numberReady is the number of nodes that should be running the daemon pod and have "
            "one or more of the daemon pod running with a Ready Condition.",
            type="integer",
        ),
        _c(
            "Up-to-date",
            "The total number of nodes that are running updated daemon pod",
            type="integer",
        ),
        _c(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of "
            "the daemon pod running and available (ready for at least spec.minReadySeconds)",
            type="integer",
        ),
        _c(
            "Node Selector",
            "NodeSelector is a selector which must be true for the pod to fit on a node. "
            "Selector which must match a node's labels for the pod to be scheduled on that node. "
            "More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
        ),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
        _c(
            "Selector",
            "A label query over pods that are managed by the daemon set. Must match in order to "
            "be controlled. It must match the pod template's labels. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            priority=1,
        ),
    ],
    "statefulsets": [
        _NAME,
        _c("Ready", "Number of the pod with ready state"),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
    ],
    "poddisruptionbudgets": [
        _NAME,
        _c(
            "Min Available",
            'The minimum number of pods that must be available simultaneously.  This can be either an integer or a string specifying a percentage, e.g. "28%".',
        ),
        _c(
            "Max Unavailable",
            'The maximum number of pods that may be unavailable simultaneously.  This can be either an integer or a string specifying a percentage, e.g. "28%".',
        ),
        _c(
            "Allowed Disruptions",
            "Number of pod disruptions that are currently allowed.",
            type="integer",
        ),
        _AGE,
    ],
    "horizontalpodautoscalers": [
        _NAME,
        _c(
            "Reference",
            "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
        ),
        _c(
            "Targets",
            "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).",
        ),
        _c(
            "MinPods",
            "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
        ),
        _c(
            "MaxPods",
            "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
        ),
        _c(
            "Replicas",
            "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
        ),
        _AGE,
    ],
    "ingresses": [
        _NAME,
        _c(
            "Class",
            "The name of the IngressClass resource that should be used for additional configuration",
        ),
        _c("Hosts", "Hosts that incoming requests are matched against before the ingress rule"),
        _c("Address", "Address is a list containing ingress points for the load-balancer"),
        _c("Ports", "Ports of TLS configurations that open"),
        _AGE,
    ],
    "ingressclasses": [
        _NAME,
        _c("Controller", "Controller that is responsible for handling this class"),
        _c("Parameters", "A reference to a resource with additional parameters"),
        _AGE,
    ],
    "networkpolicies": [
        _NAME,
        _c(
            "Pod-Selector",
            "podSelector selects the pods to which this NetworkPolicy object applies.",
        ),
        _AGE,
    ],
    "storageclasses": [
        _NAME,
        _c("Provisioner", "provisioner indicates the type of the provisioner."),
        _c(
            "ReclaimPolicy",
            "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
        ),
        _c(
            "VolumeBindingMode",
            "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
        ),
        _c(
            "AllowVolumeExpansion",
            "allowVolumeExpansion shows whether the storage class allow volume expand.",
        ),
        _AGE,
    ],
    "priorityclasses": [
        _NAME,
        _c(
            "Value",
            "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
            type="integer",
        ),
        _c(
            "Global-Default",
            "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
            type="boolean",
        ),
        _AGE,
        _c(
            "PreemptionPolicy",
            "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
        ),
    ],
    "jobs": [
        _NAME,
        _c("Status", "Status of the job."),
        _c(
            "Completions",
            "The number of pods which reached phase Succeeded. The value increases "
            "monotonically for a given spec. However, it may decrease in reaction to scale down "
            "of elastic indexed jobs.",
        ),
        _c("Duration", "Time required to complete the job."),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
        _c("Selector", _JOB_SELECTOR_DESC, priority=1),
    ],
    "cronjobs": [
        _NAME,
        _c("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        _c(
            "Timezone",
            "The time zone name for the given schedule, see "
            "https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, "
            "this will default to the time zone of the kube-controller-manager process.",
        ),
        _c(
            "Suspend",
            "This flag tells the controller to suspend subsequent executions, it does not apply "
            "to already started executions.  Defaults to false.",
            type="boolean",
        ),
        _c("Active", "A list of pointers to currently running jobs.", type="integer"),
        _c(
            "Last Schedule",
            "Information when was the last time the job was successfully scheduled.",
        ),
        _AGE,
        _c("Containers", _CONTAINERS_DESC, priority=1),
        _c("Images", _IMAGES_DESC, priority=1),
        _c("Selector", _JOB_SELECTOR_DESC, priority=1),
    ],
    "namespaces": [_NAME, _c("Status", "The status of the namespace"), _AGE],
    "leases": [
        _NAME,
        _c("Holder", "holderIdentity contains the identity of the holder of a current lease."),
        _AGE,
    ],
    "configmaps": [
        _NAME,
        _c(
            "Data",
            "Data contains the configuration data. Each key must consist of alphanumeric "
            "characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the "
            "BinaryData field. The keys stored in Data must not overlap with the keys in the "
            "BinaryData field, this is enforced during validation process.",
        ),
        _AGE,
    ],
    "secrets": [
        _NAME,
        _c("Type", "Used to facilitate programmatic handling of secret data."),
        _c(
            "Data",
            "Data contains the secret data. Each key must consist of alphanumeric characters, "
            "'-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, "
            "representing the arbitrary (possibly non-string) data value here. Described in "
            "https://tools.ietf.org/html/rfc4648#section-4",
        ),
        _AGE,
    ],
    "services": [
        _NAME,
        _c("Type", "type determines how the Service is exposed."),
        _c("Cluster-IP", "clusterIP is the IP address of the service."),
        _c(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also "
            "accept traffic for this service.",
        ),
        _c("Port(s)", "The list of ports that are exposed by this service."),
        _AGE,
        _c(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector.",
            priority=1,
        ),
    ],
    "serviceaccounts": [
        _NAME,
        _c(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this "
            "ServiceAccount are allowed to use.",
        ),
        _AGE,
    ],
    "events": [
        _c("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        _c("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
        _c(
            "Reason",
            "This should be a short, machine understandable string that gives the reason for "
            "the transition into the object's current status.",
        ),
        _c("Object", "The object that this event is about."),
        _c(
            "Subobject",
            "If referring to a piece of an object instead of an entire object, this string "
            "should contain a valid JSON/Go field access statement, such as "
            "desiredState.manifest.containers[2].",
            priority=1,
        ),
        _c(
            "Source",
            "The component reporting this event. Should be a short machine understandable string.",
            priority=1,
        ),
        _c("Message", "A human-readable description of the status of this operation."),
        _c(
            "First Seen",
            "The time at which the event was first recorded. (Time of server receipt is in "
            "TypeMeta.)",
            priority=1,
        ),
        _c("Count", "The number of times this event has occurred.", priority=1),
        _c("Name", _NAME_DESC, fmt="name", priority=1),
    ],
}
_DEFAULT_COLUMNS: list[_Col] = [_NAME, _c("Created At", _CREATED_DESC, type="date")]
_MANAGED_FIELDS_ORDER = (
    "manager",
    "operation",
    "apiVersion",
    "time",
    "fieldsType",
    "fieldsV1",
    "subresource",
)


# --- time -------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration`` of k8s.io/apimachinery (what the Age column shows)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _since(v: Any, now: datetime) -> str:
    """``translateTimestampSince``: ``<unknown>`` for a missing timestamp."""
    t = _parse_time(v)
    if t is None:
        return "<unknown>"
    return human_duration((now - t).total_seconds())


# --- helpers ------------------------------------------------------------------------------


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _format_labels(m: Any) -> str:
    if not isinstance(m, dict) or not m:
        return "<none>"
    return ",".join(f"{k}={m[k]}" for k in sorted(m))


def _selector_string(sel: Any) -> str:
    try:
        return str(label_selector_from_dict(sel if isinstance(sel, dict) else None))
    except InputError:
        return "<invalid>"


def _containers(spec: Any) -> tuple[str, str]:
    cs = [c for c in (_get(spec, "containers") or []) if isinstance(c, dict)]
    return ",".join(str(c.get("name", "")) for c in cs), ",".join(
        str(c.get("image", "")) for c in cs
    )


# --- printers ---------------------------------------------------------------------------


def _pod_row(pod: dict[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, str]]]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    last_restart: datetime | None = None
    reason = str(status.get("phase") or "")
    if status.get("reason"):
        reason = str(status["reason"])
    conditions: list[dict[str, str]] = []
    if status.get("phase") == "Succeeded":
        conditions = [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ]
    elif status.get("phase") == "Failed":
        conditions = [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Failed",
                "message": "The pod failed.",
            }
        ]

    def note_restart(cs: dict[str, Any]) -> None:
        nonlocal last_restart
        t = _parse_time(_get(cs, "lastState", "terminated", "finishedAt"))
        if t is not None and (last_restart is None or t > last_restart):
            last_restart = t

    initializing = False
    init_statuses = [c for c in (status.get("initContainerStatuses") or []) if isinstance(c, dict)]
    n_init = len(spec.get("initContainers") or [])
    for i, cs in enumerate(init_statuses):
        restarts += _int(cs.get("restartCount"))
        note_restart(cs)
        term = _get(cs, "state", "terminated")
        waiting = _get(cs, "state", "waiting")
        if isinstance(term, dict) and _int(term.get("exitCode")) == 0:
            continue
        if isinstance(term, dict):
            if not term.get("reason"):
                if _int(term.get("signal")):
                    reason = f"Init:Signal:{_int(term.get('signal'))}"
                else:
                    reason = f"Init:ExitCode:{_int(term.get('exitCode'))}"
            else:
                reason = f"Init:{term['reason']}"
        elif (
            isinstance(waiting, dict)
            and waiting.get("reason")
            and waiting["reason"] != "PodInitializing"
        ):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break
    if not initializing:
        restarts = 0
        has_running = False
        statuses = [c for c in (status.get("containerStatuses") or []) if isinstance(c, dict)]
        for cs in reversed(statuses):
            restarts += _int(cs.get("restartCount"))
            note_restart(cs)
            waiting = _get(cs, "state", "waiting")
            term = _get(cs, "state", "terminated")
            running = _get(cs, "state", "running")
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(term, dict) and term.get("reason"):
                reason = str(term["reason"])
            elif isinstance(term, dict):
                if _int(term.get("signal")):
                    reason = f"Signal:{_int(term.get('signal'))}"
                else:
                    reason = f"ExitCode:{_int(term.get('exitCode'))}"
            elif cs.get("ready") and isinstance(running, dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(
                isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            reason = "Running" if pod_ready else "NotReady"
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp"):
        reason = "Terminating"
    restarts_str = str(restarts)
    if last_restart is not None:
        restarts_str = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    pod_ips = status.get("podIPs") or []
    pod_ip = ""
    if pod_ips and isinstance(pod_ips[0], dict):
        pod_ip = str(pod_ips[0].get("ip") or "")
    gates = spec.get("readinessGates") or []
    gates_str = "<none>"
    if gates:
        true_conditions = 0
        for gate in gates:
            for c in status.get("conditions") or []:
                if isinstance(c, dict) and c.get("type") == _get(gate, "conditionType"):
                    if c.get("status") == "True":
                        true_conditions += 1
                    break
        gates_str = f"{true_conditions}/{len(gates)}"
    cells = [
        meta.get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_str,
        _since(meta.get("creationTimestamp"), now),
        pod_ip or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_str,
    ]
    return cells, conditions


def _node_row(node: dict[str, Any], now: datetime) -> list[Any]:
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    state: list[str] = []
    if "Ready" in conds:
        state.append("Ready" if conds["Ready"].get("status") == "True" else "NotReady")
    if not state:
        state.append("Unknown")
    if _get(node, "spec", "unschedulable"):
        state.append("SchedulingDisabled")
    roles: set[str] = set()
    for k, v in (meta.get("labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k.removeprefix("node-role.kubernetes.io/")
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(str(v))
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for a in status.get("addresses") or []:
            if isinstance(a, dict) and a.get("type") == kind:
                return str(a.get("address", ""))
        return "<none>"

    return [
        meta.get("name", ""),
        ",".join(state),
        ",".join(sorted(roles)) or "<none>",
        _since(meta.get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _service_row(svc: dict[str, Any], now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    svc_type = str(spec.get("type") or "")
    cluster_ips = spec.get("clusterIPs") or []
    internal_ip = str(cluster_ips[0]) if cluster_ips else "<none>"
    external_ips = [str(x) for x in spec.get("externalIPs") or []]
    if svc_type in ("ClusterIP", "NodePort"):
        external = ",".join(external_ips) or "<none>"
    elif svc_type == "LoadBalancer":
        ingress = _get(svc, "status", "loadBalancer", "ingress") or []
        lb = [str(i.get("ip") or i.get("hostname") or "") for i in ingress if isinstance(i, dict)]
        lb = [x for x in lb if x]
        external = ",".join(lb + external_ips) or "<pending>"
    elif svc_type == "ExternalName":
        external = str(spec.get("externalName") or "")
    else:
        external = "<unknown>"
    ports = []
    for p in spec.get("ports") or []:
        if not isinstance(p, dict):
            continue
        proto = p.get("protocol") or "TCP"
        if p.get("nodePort"):
            ports.append(f"{p.get('port')}:{p['nodePort']}/{proto}")
        else:
            ports.append(f"{p.get('port')}/{proto}")
    return [
        _get(svc, "metadata", "name") or "",
        svc_type,
        internal_ip,
        external,
        ",".join(ports) or "<none>",
        _since(_get(svc, "metadata", "creationTimestamp"), now),
        _format_labels(spec.get("selector")),
    ]


def _event_row(ev: dict[str, Any], now: datetime) -> list[Any]:
    first = _since(ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp"), now)
    if not (ev.get("firstTimestamp") or ev.get("deprecatedFirstTimestamp")):
        first = _since(ev.get("eventTime"), now)
    last_ts = ev.get("lastTimestamp") or ev.get("deprecatedLastTimestamp")
    last = _since(last_ts, now) if last_ts else first
    count = _int(ev.get("count") or ev.get("deprecatedCount"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    obj = ev.get("involvedObject") or ev.get("regarding") or {}
    kind = str(obj.get("kind") or "").lower()
    target = f"{kind}/{obj['name']}" if obj.get("name") else kind
    source = ev.get("source") or {}
    component, instance = source.get("component") or "", source.get("host") or ""
    if not component:
        component = ev.get("reportingController") or ev.get("reportingComponent") or ""
        instance = ev.get("reportingInstance") or ""
    src = "" if not component else (component if not instance else f"{component}, {instance}")
    return [
        last,
        ev.get("type", ""),
        ev.get("reason", ""),
        target,
        obj.get("fieldPath", ""),
        src,
        str(ev.get("message") or ev.get("note") or "").strip(),
        first,
        count,
        _get(ev, "metadata", "name") or "",
    ]


def _format_endpoints(ep: dict[str, Any]) -> str:
    """``formatEndpoints``: ``ip:port`` pairs, at most 3, then `` + N more...``."""
    pairs: list[str] = []
    count = 0
    for subset in ep.get("subsets") or []:
        for port in subset.get("ports") or [{}]:
            for addr in subset.get("addresses") or []:
                count += 1
                if len(pairs) < 3:
                    p = port.get("port")
                    pairs.append(f"{addr.get('ip')}:{p}" if p is not None else str(addr.get("ip")))
    if not pairs:
        return "<none>"
    more = f" + {count - 3} more..." if count > 3 else ""
    return ",".join(pairs) + more


def _slice_ports(es: dict[str, Any]) -> str:
    ports = [p for p in es.get("ports") or [] if isinstance(p, dict)]
    if not ports:
        return "<unset>"
    return ",".join(
        str(p.get("port", "")) if p.get("port") is not None else "<unset>" for p in ports
    )


def _slice_endpoints(es: dict[str, Any]) -> str:
    """``formatDiscoveryEndpoints``: at most 3 addresses, then `` + N more...``."""
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    more = f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
    return ",".join(addresses[:3]) + more


def _pdb_row(pdb: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    return [
        _get(pdb, "metadata", "name") or "",
        str(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A",
        str(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A",
        _int(status.get("disruptionsAllowed")),
        _since(_get(pdb, "metadata", "creationTimestamp"), now),
    ]


def _hpa_targets(hpa: dict[str, Any]) -> str:
    """``formatHPAMetrics`` for the common cases: resource utilisation or average value."""
    specs = _get(hpa, "spec", "metrics") or []
    current = _get(hpa, "status", "currentMetrics") or []
    parts = []
    for i, metric in enumerate(specs):
        if not isinstance(metric, dict) or metric.get("type") != "Resource":
            parts.append("<unknown>/<unknown>")
            continue
        resource = metric.get("resource") or {}
        target = resource.get("target") or {}
        now_metric = current[i] if i < len(current) and isinstance(current[i], dict) else {}
        now_value = (now_metric.get("resource") or {}).get("current") or {}
        if target.get("averageUtilization") is not None:
            have = now_value.get("averageUtilization")
            shown = f"{have}%" if have is not None else "<unknown>"
            parts.append(f"{resource.get('name')}: {shown}/{target['averageUtilization']}%")
        else:
            have = now_value.get("averageValue")
            want = target.get("averageValue") or target.get("value")
            parts.append(f"{resource.get('name')}: {have or '<unknown>'}/{want}")
    if not parts:
        return "<none>"
    if len(parts) > 2:
        return ", ".join(parts[:2]) + f" + {len(parts) - 2} more..."
    return ", ".join(parts)


def _hpa_row(hpa: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    return [
        _get(hpa, "metadata", "name") or "",
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _hpa_targets(hpa),
        str(spec["minReplicas"]) if spec.get("minReplicas") is not None else "<unset>",
        _int(spec.get("maxReplicas")),
        _int(status.get("currentReplicas")),
        _since(_get(hpa, "metadata", "creationTimestamp"), now),
    ]


def _ingress_row(ing: dict[str, Any], now: datetime) -> list[Any]:
    spec = ing.get("spec") or {}
    hosts = [
        str(r.get("host")) for r in spec.get("rules") or [] if isinstance(r, dict) and r.get("host")
    ]
    shown = ",".join(hosts[:3]) + (f" + {len(hosts) - 3} more..." if len(hosts) > 3 else "")
    lbs = _get(ing, "status", "loadBalancer", "ingress") or []
    address = ",".join(
        sorted({str(i.get("ip") or i.get("hostname")) for i in lbs if isinstance(i, dict)})
    )
    return [
        _get(ing, "metadata", "name") or "",
        spec.get("ingressClassName") or "<none>",
        shown or "*",
        address,
        "80, 443" if spec.get("tls") else "80",
        _since(_get(ing, "metadata", "creationTimestamp"), now),
    ]


def _ingressclass_row(ic: dict[str, Any], now: datetime) -> list[Any]:
    params = _get(ic, "spec", "parameters")
    shown = "<none>"
    if isinstance(params, dict):
        group = f".{params['apiGroup']}" if params.get("apiGroup") else ""
        shown = f"{params.get('kind', '')}{group}/{params.get('name', '')}"
    return [
        _get(ic, "metadata", "name") or "",
        _get(ic, "spec", "controller") or "",
        shown,
        _since(_get(ic, "metadata", "creationTimestamp"), now),
    ]


def _netpol_row(np: dict[str, Any], now: datetime) -> list[Any]:
    return [
        _get(np, "metadata", "name") or "",
        _selector_string(_get(np, "spec", "podSelector")) or "<none>",
        _since(_get(np, "metadata", "creationTimestamp"), now),
    ]


def _storageclass_row(sc: dict[str, Any], now: datetime) -> list[Any]:
    name = _get(sc, "metadata", "name") or ""
    annotations = _get(sc, "metadata", "annotations") or {}
    default = "true" in (
        annotations.get("storageclass.kubernetes.io/is-default-class"),
        annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
    )
    return [
        f"{name} (default)" if default else name,
        sc.get("provisioner", ""),
        sc.get("reclaimPolicy") or "Delete",
        sc.get("volumeBindingMode") or "Immediate",
        bool(sc.get("allowVolumeExpansion")),
        _since(_get(sc, "metadata", "creationTimestamp"), now),
    ]


def _priorityclass_row(pc: dict[str, Any], now: datetime) -> list[Any]:
    return [
        _get(pc, "metadata", "name") or "",
        _int(pc.get("value")),
        bool(pc.get("globalDefault")),
        _since(_get(pc, "metadata", "creationTimestamp"), now),
        pc.get("preemptionPolicy") or "",
    ]


# kube-apiserver v1.24's columns of the cluster-administration kinds (its Table answers).
_ADMIN_COLUMNS: dict[str, list[_Col]] = {
    "runtimeclasses": [
        _NAME,
        _c("Handler", ""),
        _AGE,
    ],
    "certificatesigningrequests": [
        _NAME,
        _AGE,
        _c(
            "SignerName",
            'Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`. If empty, it will be defaulted:\n 1. If it\'s a kubelet client certificate, it is assigned\n    "kubernetes.io/kube-apiserver-client-kubelet".\n 2. If it\'s a kubelet serving certificate, it is assigned\n    "kubernetes.io/kubelet-serving".\n 3. Otherwise, it is assigned "kubernetes.io/legacy-unknown".\nDistribution of trust for signers happens out of band. You can select on this field using `spec.signerName`.',
        ),
        _c("Requestor", "Base64-encoded PKCS#10 CSR data"),
        _c(
            "RequestedDuration",
            "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree\n     implementations prior to v1.22)\n  2. Signer whose configured maximum is shorter than the requested duration\n  3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes.\n\nAs of v1.22, this field is beta and is controlled via the CSRDuration feature gate.",
        ),
        _c("Condition", "Conditions applied to the request, such as approval or denial."),
    ],
    "mutatingwebhookconfigurations": [
        _NAME,
        _c(
            "Webhooks",
            "Webhooks indicates the number of webhooks registered in this configuration",
            type="integer",
        ),
        _AGE,
    ],
    "validatingwebhookconfigurations": [
        _NAME,
        _c(
            "Webhooks",
            "Webhooks indicates the number of webhooks registered in this configuration",
            type="integer",
        ),
        _AGE,
    ],
    "flowschemas": [
        _NAME,
        _c(
            "PriorityLevel",
            "`name` is the name of the priority level configuration being referenced Required.",
        ),
        _c(
            "MatchingPrecedence",
            "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request. The chosen FlowSchema is among those with the numerically lowest (which we take to be logically highest) MatchingPrecedence.  Each MatchingPrecedence value must be ranged in [1,10000]. Note that if the precedence is not specified, it will be set to 1000 as default.",
        ),
        _c(
            "DistinguisherMethod",
            "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema. `nil` specifies that the distinguisher is disabled and thus will always be the empty string.",
        ),
        _AGE,
        _c("MissingPL", "references a broken or non-existent PriorityLevelConfiguration"),
    ],
    "prioritylevelconfigurations": [
        _NAME,
        _c(
            "Type",
            '`type` indicates whether this priority level is subject to limitation on request execution.  A value of `"Exempt"` means that requests of this priority level are not subject to a limit (and thus are never queued) and do not detract from the capacity made available to other priority levels.  A value of `"Limited"` means that (a) requests of this priority level _are_ subject to limits and (b) some of the server\'s limited capacity is made available exclusively to this priority level. Required.',
        ),
        _c(
            "NominalConcurrencyShares",
            "`nominalConcurrencyShares` (NCS) configures the execution limit, which is a limit on the number of requests of this priority level that may be exeucting at a given time.  ACS must be a positive number. The server's concurrency limit (SCL) is divided among the concurrency-controlled priority levels in proportion to their assured concurrency shares. This produces the assured concurrency value (ACV) ",
        ),
        _c(
            "Queues",
            "`queues` is the number of queues for this priority level. The queues exist independently at each apiserver. The value must be positive.  Setting it to 1 effectively precludes shufflesharding and thus makes the distinguisher method of associated flow schemas irrelevant.  This field has a default value of 64.",
        ),
        _c(
            "HandSize",
            "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.  When enqueuing a request at this priority level the request's flow identifier (a string pair) is hashed and the hash value is used to shuffle the list of queues and deal a hand of the size specified here.  The request is put into one of the shortest queues in that hand. `handSize` must be no larger than `queues`, and should be significantly smaller (so that a few heavy flows do not saturate most of the queues).  See the user-facing documentation for more extensive guidance on setting this field.  This field has a default value of 8.",
        ),
        _c(
            "QueueLengthLimit",
            "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time; excess requests are rejected.  This value must be positive.  If not specified, it will be defaulted to 50.",
        ),
        _AGE,
    ],
}


def _webhooks_row(config: dict[str, Any], now: datetime) -> list[Any]:
    return [
        _get(config, "metadata", "name") or "",
        len(config.get("webhooks") or []),
        _since(_get(config, "metadata", "creationTimestamp"), now),
    ]


def _runtimeclass_row(rc: dict[str, Any], now: datetime) -> list[Any]:
    return [
        _get(rc, "metadata", "name") or "",
        rc.get("handler") or "",
        _since(_get(rc, "metadata", "creationTimestamp"), now),
    ]


def _csr_row(csr: dict[str, Any], now: datetime) -> list[Any]:
    """printCertificateSigningRequest: the conditions joined, else Pending."""
    spec, status = csr.get("spec") or {}, csr.get("status") or {}
    kinds = [
        str(c.get("type"))
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("type")
    ]
    if status.get("certificate"):
        kinds.append("Issued")
    seconds = spec.get("expirationSeconds")
    return [
        _get(csr, "metadata", "name") or "",
        _since(_get(csr, "metadata", "creationTimestamp"), now),
        spec.get("signerName") or "<none>",
        spec.get("username") or "",
        human_duration(float(seconds)) if isinstance(seconds, int) else "<none>",
        ",".join(kinds) or "Pending",
    ]


def _flowschema_row(fs: dict[str, Any], now: datetime) -> list[Any]:
    spec = fs.get("spec") or {}
    method = (spec.get("distinguisherMethod") or {}).get("type") or "<none>"
    missing = any(
        isinstance(c, dict) and c.get("type") == "Dangling" and c.get("status") == "True"
        for c in (fs.get("status") or {}).get("conditions") or []
    )
    return [
        _get(fs, "metadata", "name") or "",
        (spec.get("priorityLevelConfiguration") or {}).get("name") or "",
        _int(spec.get("matchingPrecedence")),
        method,
        _since(_get(fs, "metadata", "creationTimestamp"), now),
        "True" if missing else "False",
    ]


def _plc_row(plc: dict[str, Any], now: datetime) -> list[Any]:
    spec = plc.get("spec") or {}
    limited = spec.get("limited") or {}
    shares: Any = limited.get("nominalConcurrencyShares", limited.get("assuredConcurrencyShares"))
    queuing = (limited.get("limitResponse") or {}).get("queuing") or {}
    if spec.get("type") != "Limited":
        shares = "<none>"
    return [
        _get(plc, "metadata", "name") or "",
        spec.get("type") or "",
        shares,
        queuing.get("queues", "<none>"),
        queuing.get("handSize", "<none>"),
        queuing.get("queueLengthLimit", "<none>"),
        _since(_get(plc, "metadata", "creationTimestamp"), now),
    ]


_MORE_ROWS: dict[str, Callable[[dict[str, Any], datetime], list[Any]]] = {
    "poddisruptionbudgets": _pdb_row,
    "horizontalpodautoscalers": _hpa_row,
    "ingresses": _ingress_row,
    "ingressclasses": _ingressclass_row,
    "networkpolicies": _netpol_row,
    "storageclasses": _storageclass_row,
    "priorityclasses": _priorityclass_row,
    "runtimeclasses": _runtimeclass_row,
    "certificatesigningrequests": _csr_row,
    "mutatingwebhookconfigurations": _webhooks_row,
    "validatingwebhookconfigurations": _webhooks_row,
    "flowschemas": _flowschema_row,
    "prioritylevelconfigurations": _plc_row,
}


def _has_condition(status: dict[str, Any], kind: str) -> bool:
    return any(
        isinstance(c, dict) and c.get("type") == kind and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _job_row(job: dict[str, Any], now: datetime) -> list[Any]:
    """printJob: Status, Completions ``succeeded/completions``, Duration."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec['completions'])}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec['parallelism'])}"
    else:
        completions = f"{succeeded}/1"
    start = _parse_time(status.get("startTime"))
    end = _parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or now) - start).total_seconds())
    if _has_condition(status, "Complete"):
        state = "Complete"
    elif _has_condition(status, "Failed"):
        state = "Failed"
    elif _get(job, "metadata", "deletionTimestamp"):
        state = "Terminating"
    elif _has_condition(status, "Suspended"):
        state = "Suspended"
    elif _has_condition(status, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    containers, images = _containers(_get(spec, "template", "spec"))
    return [
        _get(job, "metadata", "name") or "",
        state,
        completions,
        duration,
        _since(_get(job, "metadata", "creationTimestamp"), now),
        containers,
        images,
        _selector_string(spec.get("selector")) or "<none>",
    ]


def _cronjob_row(cj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = cj.get("spec") or {}, cj.get("status") or {}
    last = status.get("lastScheduleTime")
    suspend = spec.get("suspend")
    job_spec = _get(spec, "jobTemplate", "spec") or {}
    containers, images = _containers(_get(job_spec, "template", "spec"))
    return [
        _get(cj, "metadata", "name") or "",
        spec.get("schedule") or "",
        spec.get("timeZone") or "<none>",
        "<unset>" if suspend is None else ("True" if suspend else "False"),
        len(status.get("active") or []),
        _since(last, now) if last else "<none>",
        _since(_get(cj, "metadata", "creationTimestamp"), now),
        containers,
        images,
        _selector_string(job_spec.get("selector")) or "<none>",
    ]


def _row_for(
    resource: str, obj: dict[str, Any], now: datetime
) -> tuple[list[Any], list[dict[str, str]]]:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    age = _since(meta.get("creationTimestamp"), now)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if resource == "pods":
        return _pod_row(obj, now)
    if resource == "nodes":
        return _node_row(obj, now), []
    if resource == "deployments":
        template_spec = _get(spec, "template", "spec")
        containers, images = _containers(template_spec)
        desired = spec.get("replicas", 1)
        return [
            name,
            f"{_int(status.get('readyReplicas'))}/{_int(desired)}",
            _int(status.get("updatedReplicas")),
            _int(status.get("availableReplicas")),
            age,
            containers,
            images,
            _selector_string(spec.get("selector")),
        ], []
    if resource == "replicasets":
        containers, images = _containers(_get(spec, "template", "spec"))
        return [
            name,
            _int(spec.get("replicas", 1)),
            _int(status.get("replicas")),
            _int(status.get("readyReplicas")),
            age,
            containers,
            images,
            _selector_string(spec.get("selector")),
        ], []
    if resource == "endpoints":
        return [name, _format_endpoints(obj), age], []
    if resource == "endpointslices":
        return [name, obj.get("addressType", ""), _slice_ports(obj), _slice_endpoints(obj), age], []
    if resource == "daemonsets":
        containers, images = _containers(_get(spec, "template", "spec"))
        return [
            name,
            _int(status.get("desiredNumberScheduled")),
            _int(status.get("currentNumberScheduled")),
            _int(status.get("numberReady")),
            _int(status.get("updatedNumberScheduled")),
            _int(status.get("numberAvailable")),
            _format_labels(_get(spec, "template", "spec", "nodeSelector")),
            age,
            containers,
            images,
            _selector_string(spec.get("selector")) or "<none>",
        ], []
    if resource == "statefulsets":
        containers, images = _containers(_get(spec, "template", "spec"))
        ready = f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas', 1))}"
        return [name, ready, age, containers, images], []
    if resource in _MORE_ROWS:
        return _MORE_ROWS[resource](obj, now), []
    if resource == "jobs":
        return _job_row(obj, now), []
    if resource == "cronjobs":
        return _cronjob_row(obj, now), []
    if resource == "namespaces":
        return [name, status.get("phase", ""), age], []
    if resource == "leases":
        return [name, spec.get("holderIdentity") or "", age], []
    if resource == "configmaps":
        return [name, len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age], []
    if resource == "secrets":
        return [name, obj.get("type", ""), len(obj.get("data") or {}), age], []
    if resource == "services":
        return _service_row(obj, now), []
    if resource == "serviceaccounts":
        return [name, len(obj.get("secrets") or []), age], []
    if resource == "events":
        return _event_row(obj, now), []
    created = meta.get("creationTimestamp")
    t = _parse_time(created)
    return [name, t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None], []


# --- JSONPath for printer columns ---------------------------------------------------------

_TOKEN = re.compile(
    r"""\.\.(?P<rec>[^.\[]+)|\.(?P<name>[^.\[]+)|\[(?P<bracket>'[^']*'|"[^"]*"|\*|-?\d+|\?\(.*?\))\]"""
)
_FILTER = re.compile(
    r"""^\?\(\s*@(?P<path>(?:\.[^\s=!<>]+)*)\s*(?:(?P<op>==|!=)\s*(?P<value>'[^']*'|"[^"]*"|-?\d+(?:\.\d+)?|true|false))?\s*\)$"""
)


def jsonpath_find(obj: Any, path: str) -> list[Any]:
    """Evaluate the simple JSONPath of an ``additionalPrinterColumns`` entry.

    Supports ``.a.b``, ``['a.b']``, ``[0]``, ``[*]``, ``..name`` and filters
    ``[?(@.type=="Ready")]`` / ``[?(@.x)]``; returns every match in order.
    """
    p = path.strip()
    if p.startswith("{") and p.endswith("}"):
        p = p[1:-1]
    p = p.removeprefix("$")
    current = [obj]
    pos = 0
    while pos < len(p):
        m = _TOKEN.match(p, pos)
        if m is None:
            return []
        pos = m.end()
        nxt: list[Any] = []
        if m["name"] is not None:
            key = m["name"]
            for c in current:
                if key == "*":
                    nxt.extend(
                        c.values() if isinstance(c, dict) else c if isinstance(c, list) else []
                    )
                elif isinstance(c, dict) and key in c:
                    nxt.append(c[key])
        elif m["rec"] is not None:
            for c in current:
                nxt.extend(_recursive(c, m["rec"]))
        else:
            b = m["bracket"]
            for c in current:
                nxt.extend(_bracket(c, b))
        current = nxt
    return current


def _recursive(v: Any, key: str) -> list[Any]:
    out: list[Any] = []
    if isinstance(v, dict):
        if key in v:
            out.append(v[key])
        for x in v.values():
            out.extend(_recursive(x, key))
    elif isinstance(v, list):
        for x in v:
            out.extend(_recursive(x, key))
    return out


def _bracket(c: Any, b: str) -> list[Any]:
    if b[0] in "'\"":
        key = b[1:-1]
        return [c[key]] if isinstance(c, dict) and key in c else []
    if b == "*":
        return list(c.values()) if isinstance(c, dict) else list(c) if isinstance(c, list) else []
    if b.startswith("?"):
        f = _FILTER.match(b)
        if f is None or not isinstance(c, list):
            return []
        sub = f["path"] or ""
        out = []
        for item in c:
            found = jsonpath_find(item, sub) if sub else [item]
            if f["op"] is None:
                if found:
                    out.append(item)
                continue
            raw = f["value"]
            want: Any = (
                raw[1:-1]
                if raw[0] in "'\""
                else raw == "true"
                if raw in ("true", "false")
                else float(raw)
            )
            have = found[0] if found else None
            if isinstance(want, float) and isinstance(have, (int, float)):
                equal = float(have) == want
            else:
                equal = have == want
            if equal == (f["op"] == "=="):
                out.append(item)
        return out
    if isinstance(c, list):
        i = int(b)
        if -len(c) <= i < len(c):
            return [c[i]]
    return []


def _jsonpath_text(v: Any) -> str:
    """How ``JSONPath.PrintResults`` writes one value."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, separators=(",", ":"))


def _crd_cell(col: dict[str, Any], obj: dict[str, Any], now: datetime) -> Any:
    results = jsonpath_find(obj, str(col.get("jsonPath", "")))
    if not results:
        return None
    value = results[0]
    kind = col.get("type", "string")
    if value is None:
        return None
    if kind == "string":
        return _jsonpath_text(value)
    if kind == "integer":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        return None
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "date":
        if not isinstance(value, str):
            return None
        t = _parse_time(value)
        if t is None:
            return "<invalid>"
        return human_duration((now - t).total_seconds())
    return None


# --- assembly -----------------------------------------------------------------------------


def _partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out = go_ordered_meta(meta)
    if isinstance(out.get("managedFields"), list):
        out["managedFields"] = [
            {k: mf[k] for k in _MANAGED_FIELDS_ORDER if k in mf}
            | {k: v for k, v in mf.items() if k not in _MANAGED_FIELDS_ORDER}
            if isinstance(mf, dict)
            else mf
            for mf in out["managedFields"]
        ]
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": out}


def table_for(
    resource: str,
    objects: list[dict[str, Any]],
    *,
    list_meta: dict[str, Any] | None = None,
    include_object: str = "Metadata",
    crd_columns: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build the ``Table`` the apiserver answers for ``resource`` (a plural name).

    ``crd_columns`` marks a custom resource: its version's
    ``additionalPrinterColumns`` (``[]`` or ``None`` with ``resource`` not a
    built-in gives the default Age column when ``crd_columns == []``).
    ``resource="customresourcedefinitions"`` and unknown built-ins get the
    default convertor's Name and Created At. ``include_object`` is the
    ``includeObject`` parameter: ``Metadata`` (PartialObjectMetadata),
    ``Object`` (the whole object) or ``None``. ``list_meta`` becomes the
    Table's metadata (``resourceVersion``, ``continue``, ...). ``now`` fixes the
    clock for the Age cells (default: the current time).
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    if crd_columns is not None:
        cols_in = crd_columns or [
            {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": _CREATED_DESC,
            }
        ]
        columns = [_NAME] + [
            (
                str(c.get("name", "")),
                str(c.get("type", "string")),
                str(c.get("format", "")),
                int(c.get("priority", 0)),
                str(
                    c.get("description")
                    or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath', '')}"
                ),
            )
            for c in cols_in
        ]
        for obj in objects:
            cells = [_get(obj, "metadata", "name") or ""]
            cells += [_crd_cell(c, obj, now) for c in cols_in]
            rows.append(_row(cells, [], obj, include_object))
    else:
        columns = _COLUMNS.get(resource) or _ADMIN_COLUMNS.get(resource, _DEFAULT_COLUMNS)
        for obj in objects:
            cells, conditions = _row_for(resource, obj, now)
            rows.append(_row(cells, conditions, obj, include_object))
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta or {}),
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": d, "priority": p}
            for n, t, f, p, d in columns
        ],
        "rows": rows,
    }


def _row(
    cells: list[Any], conditions: list[dict[str, str]], obj: dict[str, Any], include_object: str
) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": cells}
    if conditions:
        row["conditions"] = conditions
    if include_object == "Object":
        row["object"] = obj
    elif include_object == "None":
        row["object"] = None
    else:
        row["object"] = _partial_metadata(obj)
    return row
