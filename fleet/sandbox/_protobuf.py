"""Kubernetes protobuf request bodies, decoded into the JSON-shaped objects the rest of the sandbox takes.

kubectl >= 1.33 sends the objects its ``create <kind>`` generators build (``create namespace``,
``configmap``, ``secret``, ``serviceaccount``, ``deployment``, ``service``, ``quota``) as
``application/vnd.kubernetes.protobuf``, while it still accepts JSON answers
(``Accept: application/vnd.kubernetes.protobuf,application/json``). So the sandbox decodes such a
body here and handles the request as if it had been JSON; the answers stay JSON.

The wire format (k8s.io/apimachinery pkg/runtime/serializer/protobuf): the magic prefix
``k8s\\x00``, then a ``runtime.Unknown`` message (pkg/runtime/generated.proto):
``typeMeta = 1`` (``apiVersion = 1``, ``kind = 2``), ``raw = 2`` (the object's own message),
``contentEncoding = 3``, ``contentType = 4``. ``raw`` is the generated.proto message of the kind
(k8s.io/api core/v1, apps/v1; meta/v1 for ObjectMeta and friends), decoded with a field-number
table per message (:data:`MESSAGES`) by a small hand-written reader of the protobuf wire format
(varint, 64-bit, length-delimited, 32-bit).

Go's types have no "unset" for plain (non-pointer) scalars, and gogo-protobuf writes them even
when zero; their JSON tags say ``omitempty``. So a zero string/number/bool is dropped unless the
Go field is a pointer (``ptr``), as ``replicas`` or ``immutable`` are: what comes out equals what
the client's JSON encoder would have sent. Nested structs stay (``"resources": {}``), a zero
``metav1.Time`` is dropped (JSON ``null``). Fields missing from the tables are skipped, as the Go
decoder skips unknown fields; a kind missing from them is answered 415.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleet.sandbox._status import StatusError, bad_request

MAGIC = b"k8s\x00"

# Scalar kinds of a field; any other kind is the name of a message in MESSAGES.
STRING, BYTES, BOOL, INT = "string", "bytes", "bool", "int"
# Messages with their own JSON form (k8s.io/apimachinery).
TIME, QUANTITY, INT_OR_STRING, FIELDS_V1 = "Time", "Quantity", "IntOrString", "FieldsV1"


@dataclass(frozen=True)
class Field:
    """One field of a generated.proto message: its JSON name and how its value is encoded."""

    name: str
    kind: str
    repeated: bool = False
    ptr: bool = False
    """The Go field is a pointer: a zero value was set on purpose and is kept."""
    map_value: str | None = None
    """For ``map<string, V>`` fields (entries: key = 1, value = 2): V's kind; ``kind`` is then "map"."""


def _f(name: str, kind: str, *, rep: bool = False, ptr: bool = False) -> Field:
    return Field(name, kind, repeated=rep, ptr=ptr)


def _map(name: str, value: str) -> Field:
    return Field(name, "map", map_value=value)


_META: dict[str, dict[int, Field]] = {
    "ObjectMeta": {
        1: _f("name", STRING),
        2: _f("generateName", STRING),
        3: _f("namespace", STRING),
        4: _f("selfLink", STRING),
        5: _f("uid", STRING),
        6: _f("resourceVersion", STRING),
        7: _f("generation", INT),
        8: _f("creationTimestamp", TIME),
        9: _f("deletionTimestamp", TIME),
        10: _f("deletionGracePeriodSeconds", INT, ptr=True),
        11: _map("labels", STRING),
        12: _map("annotations", STRING),
        13: _f("ownerReferences", "OwnerReference", rep=True),
        14: _f("finalizers", STRING, rep=True),
        17: _f("managedFields", "ManagedFieldsEntry", rep=True),
    },
    "OwnerReference": {
        1: _f("kind", STRING),
        3: _f("name", STRING),
        4: _f("uid", STRING),
        5: _f("apiVersion", STRING),
        6: _f("controller", BOOL, ptr=True),
        7: _f("blockOwnerDeletion", BOOL, ptr=True),
    },
    "ManagedFieldsEntry": {
        1: _f("manager", STRING),
        2: _f("operation", STRING),
        3: _f("apiVersion", STRING),
        4: _f("time", TIME),
        6: _f("fieldsType", STRING),
        7: _f("fieldsV1", FIELDS_V1),
        8: _f("subresource", STRING),
    },
    "LabelSelector": {
        1: _map("matchLabels", STRING),
        2: _f("matchExpressions", "LabelSelectorRequirement", rep=True),
    },
    "LabelSelectorRequirement": {
        1: _f("key", STRING),
        2: _f("operator", STRING),
        3: _f("values", STRING, rep=True),
    },
}

_CORE: dict[str, dict[int, Field]] = {
    "Namespace": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "NamespaceSpec"),
        3: _f("status", "NamespaceStatus"),
    },
    "NamespaceSpec": {1: _f("finalizers", STRING, rep=True)},
    "NamespaceStatus": {1: _f("phase", STRING)},
    "ConfigMap": {
        1: _f("metadata", "ObjectMeta"),
        2: _map("data", STRING),
        3: _map("binaryData", BYTES),
        4: _f("immutable", BOOL, ptr=True),
    },
    "Secret": {
        1: _f("metadata", "ObjectMeta"),
        2: _map("data", BYTES),
        3: _f("type", STRING),
        4: _map("stringData", STRING),
        5: _f("immutable", BOOL, ptr=True),
    },
    "ServiceAccount": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("secrets", "ObjectReference", rep=True),
        3: _f("imagePullSecrets", "LocalObjectReference", rep=True),
        4: _f("automountServiceAccountToken", BOOL, ptr=True),
    },
    "ObjectReference": {
        1: _f("kind", STRING),
        2: _f("namespace", STRING),
        3: _f("name", STRING),
        4: _f("uid", STRING),
        5: _f("apiVersion", STRING),
        6: _f("resourceVersion", STRING),
        7: _f("fieldPath", STRING),
    },
    "LocalObjectReference": {1: _f("name", STRING)},
    "Service": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "ServiceSpec"),
        3: _f("status", "ServiceStatus"),
    },
    "ServiceSpec": {
        1: _f("ports", "ServicePort", rep=True),
        2: _map("selector", STRING),
        3: _f("clusterIP", STRING),
        4: _f("type", STRING),
        5: _f("externalIPs", STRING, rep=True),
        7: _f("sessionAffinity", STRING),
        8: _f("loadBalancerIP", STRING),
        9: _f("loadBalancerSourceRanges", STRING, rep=True),
        10: _f("externalName", STRING),
        11: _f("externalTrafficPolicy", STRING),
        12: _f("healthCheckNodePort", INT),
        13: _f("publishNotReadyAddresses", BOOL),
        17: _f("ipFamilyPolicy", STRING, ptr=True),
        18: _f("clusterIPs", STRING, rep=True),
        19: _f("ipFamilies", STRING, rep=True),
        20: _f("allocateLoadBalancerNodePorts", BOOL, ptr=True),
        21: _f("loadBalancerClass", STRING, ptr=True),
        22: _f("internalTrafficPolicy", STRING, ptr=True),
    },
    "ServicePort": {
        1: _f("name", STRING),
        2: _f("protocol", STRING),
        3: _f("port", INT),
        4: _f("targetPort", INT_OR_STRING),
        5: _f("nodePort", INT),
        6: _f("appProtocol", STRING, ptr=True),
    },
    "ServiceStatus": {},
    "ResourceQuota": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "ResourceQuotaSpec"),
        3: _f("status", "ResourceQuotaStatus"),
    },
    "ResourceQuotaSpec": {1: _map("hard", QUANTITY), 2: _f("scopes", STRING, rep=True)},
    "ResourceQuotaStatus": {1: _map("hard", QUANTITY), 2: _map("used", QUANTITY)},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", rep=True),
        3: _f("restartPolicy", STRING),
        4: _f("terminationGracePeriodSeconds", INT, ptr=True),
        5: _f("activeDeadlineSeconds", INT, ptr=True),
        6: _f("dnsPolicy", STRING),
        7: _map("nodeSelector", STRING),
        8: _f("serviceAccountName", STRING),
        9: _f("serviceAccount", STRING),
        10: _f("nodeName", STRING),
        11: _f("hostNetwork", BOOL),
        12: _f("hostPID", BOOL),
        13: _f("hostIPC", BOOL),
        15: _f("imagePullSecrets", "LocalObjectReference", rep=True),
        16: _f("hostname", STRING),
        17: _f("subdomain", STRING),
        19: _f("schedulerName", STRING),
        20: _f("initContainers", "Container", rep=True),
        21: _f("automountServiceAccountToken", BOOL, ptr=True),
        24: _f("priorityClassName", STRING),
        25: _f("priority", INT, ptr=True),
        29: _f("runtimeClassName", STRING, ptr=True),
        30: _f("enableServiceLinks", BOOL, ptr=True),
        31: _f("preemptionPolicy", STRING, ptr=True),
    },
    "Container": {
        1: _f("name", STRING),
        2: _f("image", STRING),
        3: _f("command", STRING, rep=True),
        4: _f("args", STRING, rep=True),
        5: _f("workingDir", STRING),
        6: _f("ports", "ContainerPort", rep=True),
        7: _f("env", "EnvVar", rep=True),
        8: _f("resources", "ResourceRequirements"),
        13: _f("terminationMessagePath", STRING),
        14: _f("imagePullPolicy", STRING),
        16: _f("stdin", BOOL),
        17: _f("stdinOnce", BOOL),
        18: _f("tty", BOOL),
        20: _f("terminationMessagePolicy", STRING),
        24: _f("restartPolicy", STRING, ptr=True),
    },
    "ContainerPort": {
        1: _f("name", STRING),
        2: _f("hostPort", INT),
        3: _f("containerPort", INT),
        4: _f("protocol", STRING),
        5: _f("hostIP", STRING),
    },
    "EnvVar": {1: _f("name", STRING), 2: _f("value", STRING)},
    "ResourceRequirements": {1: _map("limits", QUANTITY), 2: _map("requests", QUANTITY)},
}

_APPS: dict[str, dict[int, Field]] = {
    "Deployment": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "DeploymentSpec"),
        3: _f("status", "DeploymentStatus"),
    },
    "DeploymentSpec": {
        1: _f("replicas", INT, ptr=True),
        2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"),
        4: _f("strategy", "DeploymentStrategy"),
        5: _f("minReadySeconds", INT),
        6: _f("revisionHistoryLimit", INT, ptr=True),
        7: _f("paused", BOOL),
        9: _f("progressDeadlineSeconds", INT, ptr=True),
    },
    "DeploymentStrategy": {
        1: _f("type", STRING),
        2: _f("rollingUpdate", "RollingUpdateDeployment"),
    },
    "RollingUpdateDeployment": {
        1: _f("maxUnavailable", INT_OR_STRING),
        2: _f("maxSurge", INT_OR_STRING),
    },
    "DeploymentStatus": {
        1: _f("observedGeneration", INT),
        2: _f("replicas", INT),
        3: _f("updatedReplicas", INT),
        4: _f("availableReplicas", INT),
        5: _f("unavailableReplicas", INT),
        7: _f("readyReplicas", INT),
        8: _f("collisionCount", INT, ptr=True),
    },
}

_BATCH: dict[str, dict[int, Field]] = {
    "Job": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "JobSpec"),
        3: _f("status", "JobStatus"),
    },
    "JobSpec": {
        1: _f("parallelism", INT, ptr=True),
        2: _f("completions", INT, ptr=True),
        3: _f("activeDeadlineSeconds", INT, ptr=True),
        4: _f("selector", "LabelSelector"),
        5: _f("manualSelector", BOOL, ptr=True),
        6: _f("template", "PodTemplateSpec"),
        7: _f("backoffLimit", INT, ptr=True),
        8: _f("ttlSecondsAfterFinished", INT, ptr=True),
        9: _f("completionMode", STRING, ptr=True),
        10: _f("suspend", BOOL, ptr=True),
        12: _f("backoffLimitPerIndex", INT, ptr=True),
        13: _f("maxFailedIndexes", INT, ptr=True),
        14: _f("podReplacementPolicy", STRING, ptr=True),
        15: _f("managedBy", STRING, ptr=True),
    },
    "JobStatus": {},
    "CronJob": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "CronJobSpec"),
        3: _f("status", "CronJobStatus"),
    },
    "CronJobSpec": {
        1: _f("schedule", STRING),
        2: _f("startingDeadlineSeconds", INT, ptr=True),
        3: _f("concurrencyPolicy", STRING),
        4: _f("suspend", BOOL, ptr=True),
        5: _f("jobTemplate", "JobTemplateSpec"),
        6: _f("successfulJobsHistoryLimit", INT, ptr=True),
        7: _f("failedJobsHistoryLimit", INT, ptr=True),
        8: _f("timeZone", STRING, ptr=True),
    },
    "JobTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "JobSpec")},
    "CronJobStatus": {},
}

_MORE: dict[str, dict[int, Field]] = {
    "PodDisruptionBudget": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "PodDisruptionBudgetSpec"),
        3: _f("status", "PodDisruptionBudgetStatus"),
    },
    "PodDisruptionBudgetSpec": {
        1: _f("minAvailable", INT_OR_STRING, ptr=True),
        2: _f("selector", "LabelSelector"),
        3: _f("maxUnavailable", INT_OR_STRING, ptr=True),
        4: _f("unhealthyPodEvictionPolicy", STRING, ptr=True),
    },
    "PodDisruptionBudgetStatus": {},
    "PriorityClass": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("value", INT),
        3: _f("globalDefault", BOOL),
        4: _f("description", STRING),
        5: _f("preemptionPolicy", STRING, ptr=True),
    },
    # kubectl certificate approve|deny: an update of the approval subresource.
    "CertificateSigningRequest": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "CertificateSigningRequestSpec"),
        3: _f("status", "CertificateSigningRequestStatus"),
    },
    "CertificateSigningRequestSpec": {
        1: _f("request", BYTES),
        2: _f("username", STRING),
        3: _f("uid", STRING),
        4: _f("groups", STRING, rep=True),
        5: _f("usages", STRING, rep=True),
        7: _f("signerName", STRING),
        8: _f("expirationSeconds", INT, ptr=True),
    },
    "CertificateSigningRequestStatus": {
        1: _f("conditions", "CertificateSigningRequestCondition", rep=True),
        2: _f("certificate", BYTES),
    },
    "CertificateSigningRequestCondition": {
        1: _f("type", STRING),
        2: _f("reason", STRING),
        3: _f("message", STRING),
        4: _f("lastUpdateTime", TIME),
        5: _f("lastTransitionTime", TIME),
        6: _f("status", STRING),
    },
    "Role": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", rep=True)},
    "ClusterRole": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", rep=True)},
    "PolicyRule": {
        1: _f("verbs", STRING, rep=True),
        2: _f("apiGroups", STRING, rep=True),
        3: _f("resources", STRING, rep=True),
        4: _f("resourceNames", STRING, rep=True),
        5: _f("nonResourceURLs", STRING, rep=True),
    },
    "RoleBinding": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("subjects", "Subject", rep=True),
        3: _f("roleRef", "RoleRef"),
    },
    "ClusterRoleBinding": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("subjects", "Subject", rep=True),
        3: _f("roleRef", "RoleRef"),
    },
    "Subject": {
        1: _f("kind", STRING),
        2: _f("apiGroup", STRING),
        3: _f("name", STRING),
        4: _f("namespace", STRING),
    },
    "RoleRef": {1: _f("apiGroup", STRING), 2: _f("kind", STRING), 3: _f("name", STRING)},
}

MESSAGES: dict[str, dict[int, Field]] = {**_META, **_CORE, **_APPS, **_BATCH, **_MORE}
"""Message name -> field number -> :class:`Field`, from k8s.io/api and k8s.io/apimachinery generated.proto."""

KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Service"): "Service",
    ("v1", "ResourceQuota"): "ResourceQuota",
    ("apps/v1", "Deployment"): "Deployment",
    ("batch/v1", "Job"): "Job",
    ("batch/v1", "CronJob"): "CronJob",
    ("policy/v1", "PodDisruptionBudget"): "PodDisruptionBudget",
    ("scheduling.k8s.io/v1", "PriorityClass"): "PriorityClass",
    ("certificates.k8s.io/v1", "CertificateSigningRequest"): "CertificateSigningRequest",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "ClusterRoleBinding",
}
"""(apiVersion, kind) of a body -> its message: the kinds kubectl's generators send that the sandbox serves."""


class _Malformed(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """The (field number, wire type, value) of a message in order: ints for varint/fixed, bytes for length-delimited."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if number == 0 or pos > len(buf):
            raise _Malformed("truncated field")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: str, wire: int, value: int | bytes) -> Any:
    if kind in (STRING, BYTES):
        if not isinstance(value, bytes):
            raise _Malformed(f"expected a length-delimited {kind}")
        return value.decode("utf-8") if kind == STRING else base64.b64encode(value).decode("ascii")
    if isinstance(value, bytes):
        raise _Malformed(f"expected a varint {kind}")
    return bool(value) if kind == BOOL else _signed(value)


def _zero(value: Any) -> bool:
    return isinstance(value, str | int) and not value


def _time(buf: bytes) -> str | None:
    """metav1.Time (seconds = 1, nanos = 2) as its JSON: RFC 3339 in whole seconds; zero is null."""
    parts = {n: v for n, _w, v in fields(buf) if isinstance(v, int)}
    seconds, nanos = _signed(parts.get(1, 0)), parts.get(2, 0)
    if seconds == 0 and nanos == 0:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(buf: bytes) -> int | str:
    """intstr.IntOrString: type = 1 (0 int, 1 string), intVal = 2, strVal = 3."""
    parts: dict[int, int | bytes] = {n: v for n, _w, v in fields(buf)}
    if parts.get(1, 0) == 1:
        text = parts.get(3, b"")
        return text.decode("utf-8") if isinstance(text, bytes) else ""
    number = parts.get(2, 0)
    return _signed(number) if isinstance(number, int) else 0


def _special(kind: str, buf: bytes) -> Any:
    if kind == TIME:
        return _time(buf)
    if kind == INT_OR_STRING:
        return _int_or_string(buf)
    first = next((v for n, _w, v in fields(buf) if n == 1 and isinstance(v, bytes)), None)
    if kind == QUANTITY:  # resource.Quantity: string = 1
        return first.decode("utf-8") if first is not None else "0"
    # FieldsV1: raw = 1, the JSON of the field set.
    return json.loads(first) if first is not None else {}


def _value(kind: str, wire: int, value: int | bytes) -> Any:
    if kind in (STRING, BYTES, BOOL, INT):
        return _scalar(kind, wire, value)
    if not isinstance(value, bytes):
        raise _Malformed(f"expected a length-delimited {kind}")
    if kind in (TIME, QUANTITY, INT_OR_STRING, FIELDS_V1):
        return _special(kind, value)
    return decode_message(kind, value)


def decode_message(name: str, buf: bytes) -> dict[str, Any]:
    """One generated.proto message as its JSON object (see the module docstring for zero values)."""
    table = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in fields(buf):
        spec = table.get(number)
        if spec is None:
            continue
        if spec.map_value is not None:
            if not isinstance(value, bytes):
                raise _Malformed(f"expected a map entry for {spec.name}")
            entry = {n: (w, v) for n, w, v in fields(value)}
            key = _scalar(STRING, *entry[1]) if 1 in entry else ""
            item = _value(spec.map_value, *entry[2]) if 2 in entry else _empty(spec.map_value)
            out.setdefault(spec.name, {})[key] = item
            continue
        if spec.repeated:
            if wire == 2 and spec.kind in (INT, BOOL) and isinstance(value, bytes):  # packed
                items = out.setdefault(spec.name, [])
                pos = 0
                while pos < len(value):
                    number_value, pos = _varint(value, pos)
                    items.append(_scalar(spec.kind, 0, number_value))
                continue
            out.setdefault(spec.name, []).append(_value(spec.kind, wire, value))
            continue
        decoded = _value(spec.kind, wire, value)
        if decoded is None or (not spec.ptr and _zero(decoded)):
            out.pop(spec.name, None)
            continue
        out[spec.name] = decoded
    return out


def _empty(kind: str) -> Any:
    return {STRING: "", BYTES: "", BOOL: False, INT: 0, QUANTITY: "0", INT_OR_STRING: 0}.get(
        kind, {}
    )


def decode(body: bytes, expected_kind: str) -> dict[str, Any]:
    """A ``application/vnd.kubernetes.protobuf`` request body as the object it carries.

    400 when it is not a Kubernetes protobuf envelope or does not parse; 415 for a kind whose
    message this module has no table for."""
    if not body.startswith(MAGIC):
        raise bad_request(
            f"the object provided is unrecognized (must be of type {expected_kind}): provided data does not "
            f"appear to be a protobuf message, expected prefix {list(MAGIC)}"
        )
    try:
        envelope = {n: v for n, _w, v in fields(body[len(MAGIC) :])}
        type_meta = envelope.get(1, b"")
        meta = {n: v for n, _w, v in fields(type_meta)} if isinstance(type_meta, bytes) else {}
        api_version = _scalar(STRING, 2, meta.get(1, b""))
        kind = _scalar(STRING, 2, meta.get(2, b""))
        encoding = envelope.get(3, b"")
        if encoding:
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"protobuf contentEncoding {encoding!r} is not supported by the kubemock-fleet sandbox",
            )
        message = KINDS.get((api_version, kind))
        if message is None:
            served = ", ".join(f"{k} ({v})" for v, k in sorted(KINDS))
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"the kubemock-fleet sandbox decodes protobuf bodies only for {served}, not {kind} ({api_version}): "
                "send application/json",
            )
        raw = envelope.get(2, b"")
        obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
        obj.update(decode_message(message, raw if isinstance(raw, bytes) else b""))
    except (
        _Malformed,
        UnicodeDecodeError,
        json.JSONDecodeError,
        OverflowError,
        OSError,
        ValueError,
    ) as exc:
        raise bad_request(
            f"the object provided is unrecognized (must be of type {expected_kind}): "
            f"unable to decode protobuf: {exc}"
        ) from exc
    return obj


def to_json(body: bytes, expected_kind: str) -> bytes:
    """The body re-encoded as JSON, for the JSON request path."""
    return json.dumps(decode(body, expected_kind), separators=(",", ":")).encode()
