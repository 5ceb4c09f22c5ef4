"""Defaulting and validation of the built-in kinds, the part clients can see.

A small port of k8s.io/kubernetes ``pkg/apis/*/v1/defaults.go``,
``validation.go`` and the registry strategies' ``PrepareForCreate``: only the
defaults and rules a client of the fleet can observe (pod phase and QoS
class, container defaults, Deployment strategy, namespace finalizers, the
immutable parts of a pod spec, MicroTime formats). Anything not listed is
stored as sent; docs/sandbox.md keeps the list.
"""

from __future__ import annotations

import re
from typing import Any

from fleet.machinery import TOTAL_ANNOTATION_SIZE, label_value_errors, qualified_name_errors
from fleet.sandbox import _batch, _cluster_kinds, _objects
from fleet.sandbox._registry import ResourceType
from fleet.sandbox._status import (
    bad_request,
    field_forbidden,
    field_invalid,
    field_required,
    invalid,
)

DEFAULT_GRACE_SECONDS = 30
"""terminationGracePeriodSeconds when the pod names none (k8s default)."""
NOT_READY_TOLERATION_SECONDS = 300
"""DefaultTolerationSeconds admission: pods tolerate not-ready/unreachable nodes this long."""

_MICRO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
_MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"


# --- defaults ---------------------------------------------------------------------------
def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in c:
        image = str(c.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _qos_class(spec: dict[str, Any]) -> str:
    requests_seen = limits_seen = False
    guaranteed = True
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        requests_seen |= bool(req)
        limits_seen |= bool(lim)
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and req[r] != lim[r]):
                guaranteed = False
    if not requests_seen and not limits_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION_SECONDS = 3607
"""The service account admission plugin's projected token lifetime (1 h + 7 s)."""


def _mount_token(spec: dict[str, Any]) -> None:
    """ServiceAccount admission: a projected token volume mounted into every container."""
    if spec.get("automountServiceAccountToken") is False:
        return
    for c in spec.get("containers") or []:
        for m in c.get("volumeMounts") or []:
            if isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH:
                return
    name = _objects.generated_name("kube-api-access-")
    spec.setdefault("volumes", []).append(
        {
            "name": name,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                            "path": "token",
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {
                                        "apiVersion": "v1",
                                        "fieldPath": "metadata.namespace",
                                    },
                                }
                            ]
                        }
                    },
                ],
                "defaultMode": 420,
            },
        }
    )
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                c.setdefault("volumeMounts", []).append(
                    {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
                )


def _default_pod(obj: dict[str, Any], creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    status = obj.get("status")
    if isinstance(status, dict):
        # A PodCondition's times are metav1.Time structs, which Go's omitempty never
        # omits: kube-apiserver answers "lastProbeTime": null for one nobody set.
        for cond in status.get("conditions") or ():
            if isinstance(cond, dict):
                cond.setdefault("lastProbeTime", None)
                cond.setdefault("lastTransitionTime", None)
    if creating:
        _mount_token(spec)
        spec.setdefault("serviceAccountName", "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(isinstance(t, dict) and t.get("key") == key for t in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": NOT_READY_TOLERATION_SECONDS,
                    }
                )
        # priority and preemptionPolicy: the Priority admission plugin's (_priority).
        spec.setdefault("enableServiceLinks", True)


def _default_template(spec: dict[str, Any]) -> None:
    tmpl = spec.get("template")
    if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
        default_pod_spec(tmpl["spec"])
        tmpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)


def _default_statefulset(spec: dict[str, Any]) -> None:
    """SetDefaults_StatefulSet (the PVC retention policy is on by default since 1.27)."""
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy["type"] = strategy.get("type") or "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")


def default(rt: ResourceType, obj: dict[str, Any], *, creating: bool) -> None:
    """Fill the defaults of built-in kinds in place (create and update)."""
    key = rt.key
    if key == ("", "pods"):
        _default_pod(obj, creating)
    elif key == ("apps", "deployments"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})  # kubectl's generators send "strategy": {}
        if isinstance(strategy, dict):
            strategy["type"] = strategy.get("type") or "RollingUpdate"
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.get("rollingUpdate") or {}
                strategy["rollingUpdate"] = rolling
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(spec)
    elif key in (("apps", "replicasets"), ("apps", "statefulsets"), ("", "replicationcontrollers")):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        _default_template(spec)
        if key == ("apps", "statefulsets"):
            _default_statefulset(spec)
    elif key == ("apps", "daemonsets"):
        spec = obj.setdefault("spec", {})
        strategy = spec.setdefault("updateStrategy", {})
        strategy["type"] = strategy.get("type") or "RollingUpdate"
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
        spec.setdefault("revisionHistoryLimit", 10)
        _default_template(spec)
    elif key == ("", "namespaces"):
        name = obj["metadata"].get("name", "")
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if creating:
            obj["status"] = {"phase": "Active"}
    elif key == ("", "services"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
    elif key == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif key == ("autoscaling", "horizontalpodautoscalers"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("minReplicas", 1)
        if not spec.get("metrics"):  # autoscaling/v2 SetDefaults: CPU at 80 % utilisation
            spec["metrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ]
    elif key == ("networking.k8s.io", "networkpolicies"):
        spec = obj.setdefault("spec", {})
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress", *(["Egress"] if spec.get("egress") else [])]
        for rule in [*(spec.get("ingress") or []), *(spec.get("egress") or [])]:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    elif key == ("storage.k8s.io", "storageclasses"):
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")
    elif key == ("scheduling.k8s.io", "priorityclasses"):
        obj.setdefault("preemptionPolicy", "PreemptLowerPriority")
    elif key == ("batch", "jobs"):
        _batch.default_job(obj, creating=creating)
        _default_template(obj["spec"])
    elif key == ("batch", "cronjobs"):
        _batch.default_cronjob(obj)
        _default_template(((obj["spec"].get("jobTemplate") or {}).get("spec")) or {})
    elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        obj.setdefault("spec", {}).setdefault("conversion", {"strategy": "None"})
    elif key in _cluster_kinds.KEYS:
        _cluster_kinds.default(key, rt.version, obj)


def initial_status(rt: ResourceType, obj: dict[str, Any]) -> None:
    """What a create does with the body's status (PrepareForCreate)."""
    if rt.key in _cluster_kinds.KEYS:
        _cluster_kinds.prepare_create(rt.key, obj)
    if rt.key == ("", "pods"):
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}
    elif rt.create_keeps_status:
        return
    elif rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        storage = [
            v.get("name") for v in (obj.get("spec") or {}).get("versions") or [] if v.get("storage")
        ]
        obj["status"] = {
            "conditions": None,
            "acceptedNames": {"plural": "", "kind": ""},
            "storedVersions": storage,
        }
    elif rt.has_status():
        if rt.is_custom:
            obj.pop("status", None)
        elif rt.key == ("", "services"):
            obj["status"] = {"loadBalancer": {}}  # a struct, never omitted in the JSON
        else:
            obj["status"] = {}


# --- validation -------------------------------------------------------------------------
def check_decodable(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Errors the real apiserver reports while decoding (400), before validation."""
    if rt.key == ("coordination.k8s.io", "leases"):
        for f in ("renewTime", "acquireTime"):
            v = (obj.get("spec") or {}).get(f)
            if isinstance(v, str) and not _MICRO_RE.match(v):
                raise bad_request(
                    f'Lease in version "{rt.version}" cannot be handled as a Lease: '
                    f"{_micro_error(v)}"
                )


def _micro_error(v: str) -> str:
    m = re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", v)
    rest = v[m.end() :] if m else v
    return f'parsing time "{v}" as "{_MICRO_LAYOUT}": cannot parse "{rest}" as ".000000"'


def micro_time_causes(rt: ResourceType, obj: dict[str, Any]) -> str | None:
    if rt.key != ("coordination.k8s.io", "leases"):
        return None
    for f in ("renewTime", "acquireTime"):
        v = (obj.get("spec") or {}).get(f)
        if isinstance(v, str) and not _MICRO_RE.match(v):
            return _micro_error(v)
    return None


def validate_metadata(obj: dict[str, Any]) -> list[dict[str, str]]:
    """``ValidateObjectMeta``'s labels and annotations rules, for every kind (422 causes)."""
    meta = obj.get("metadata") or {}
    causes: list[dict[str, str]] = []
    labels = meta.get("labels") or {}
    if isinstance(labels, dict):
        for key in sorted(labels):
            value = labels[key]
            causes += [field_invalid("metadata.labels", key, m) for m in qualified_name_errors(key)]
            if isinstance(value, str):
                causes += [
                    field_invalid("metadata.labels", value, m) for m in label_value_errors(value)
                ]
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        size = 0
        for key in sorted(annotations):
            causes += [
                field_invalid("metadata.annotations", key, m)
                for m in qualified_name_errors(key.lower())
            ]
            size += len(key.encode()) + len(str(annotations[key] or "").encode())
        if size > TOTAL_ANNOTATION_SIZE:
            causes.append(
                {
                    "reason": "FieldValueTooLong",
                    "message": f"Too long: may not be more than {TOTAL_ANNOTATION_SIZE} bytes",
                    "field": "metadata.annotations",
                }
            )
    return causes


def validate_name(rt: ResourceType, name: str) -> list[dict[str, str]]:
    if rt.key == ("", "namespaces"):
        if not _objects.is_label(name):
            return [field_invalid("metadata.name", name, _objects.LABEL_MSG)]
        return []
    if not _objects.is_subdomain(name):
        return [field_invalid("metadata.name", name, _objects.SUBDOMAIN_MSG)]
    return []


def _validate_containers(spec: dict[str, Any], prefix: str) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [field_required(f"{prefix}.containers")]
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            path = f"{prefix}.{key}[{i}]"
            if not isinstance(c, dict):
                causes.append(field_invalid(path, c, "must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append(field_required(f"{path}.name"))
            elif not _objects.is_label(str(name)):
                causes.append(field_invalid(f"{path}.name", name, _objects.LABEL_MSG))
            if not c.get("image"):
                causes.append(field_required(f"{path}.image"))
    return causes


def validate(rt: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Validation of a built-in object about to be stored; 422 causes."""
    causes: list[dict[str, str]] = []
    key = rt.key
    if key == ("", "pods"):
        causes += _validate_containers(obj.get("spec") or {}, "spec")
    elif key in (
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    ):
        spec = obj.get("spec") or {}
        sel = spec.get("selector")
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not isinstance(sel, dict) or not sel:
            causes.append(field_required("spec.selector"))
        else:
            ml = sel.get("matchLabels") or {}
            if ml and any(tmpl_labels.get(k) != v for k, v in ml.items()):
                causes.append(
                    field_invalid(
                        "spec.template.metadata.labels",
                        tmpl_labels,
                        "`selector` does not match template `labels`",
                    )
                )
        tmpl_spec = (spec.get("template") or {}).get("spec")
        causes += _validate_containers(
            tmpl_spec if isinstance(tmpl_spec, dict) else {}, "spec.template.spec"
        )
        policy = tmpl_spec.get("restartPolicy") if isinstance(tmpl_spec, dict) else None
        if policy not in (None, "Always"):
            causes.append(
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.template.spec.restartPolicy",
                    "message": f'Unsupported value: "{policy}": supported values: "Always"',
                }
            )
        if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
            causes.append(
                field_invalid(
                    "spec.replicas", spec["replicas"], "must be greater than or equal to 0"
                )
            )
    elif key == ("apiextensions.k8s.io", "customresourcedefinitions"):
        causes += validate_crd(obj)
    elif key == ("batch", "jobs"):
        tmpl_spec = ((obj.get("spec") or {}).get("template") or {}).get("spec")
        causes += _validate_containers(
            tmpl_spec if isinstance(tmpl_spec, dict) else {}, "spec.template.spec"
        )
        causes += _batch.validate_job(obj)
    elif key == ("batch", "cronjobs"):
        job_spec = ((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        tmpl_spec = (job_spec.get("template") or {}).get("spec")
        causes += _validate_containers(
            tmpl_spec if isinstance(tmpl_spec, dict) else {}, "spec.jobTemplate.spec.template.spec"
        )
        causes += _batch.validate_cronjob(obj)
    elif key in _cluster_kinds.KEYS:
        causes += _cluster_kinds.validate(key, obj)
    return causes


def validate_crd(obj: dict[str, Any]) -> list[dict[str, str]]:
    """The CRD rules a user meets first: names, group, versions."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[dict[str, str]] = []
    name = (obj.get("metadata") or {}).get("name", "")
    if not spec.get("group"):
        causes.append(
            {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.group"}
        )
    if not names.get("plural"):
        causes.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.names.plural",
            }
        )
    if not names.get("kind"):
        causes.append(
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": "spec.names.kind",
            }
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            {
                "reason": "FieldValueNotSupported",
                "field": "spec.scope",
                "message": f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                '"Cluster", "Namespaced"',
            }
        )
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        causes.append(
            field_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.versions"}
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            field_invalid(
                "spec.versions", "", "must have exactly one version marked as storage version"
            )
        )
    return causes


_POD_MUTABLE = ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations")


def validate_update(
    rt: ResourceType, old: dict[str, Any], new: dict[str, Any]
) -> list[dict[str, str]]:
    """The immutable parts of an update (pod specs, selectors)."""
    if rt.key == ("", "pods"):
        o, n = old.get("spec") or {}, new.get("spec") or {}
        for key in ("containers", "initContainers"):
            if len(o.get(key) or []) != len(n.get(key) or []):
                return [
                    field_forbidden(f"spec.{key}", "pod updates may not add or remove containers")
                ]

        def strip(spec: dict[str, Any]) -> dict[str, Any]:
            s = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
            for key in ("containers", "initContainers"):
                if key in s:
                    s[key] = [{k: v for k, v in c.items() if k != "image"} for c in s[key]]
            return s

        if strip(o) != strip(n):
            return [
                field_forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`, "
                    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                    "(only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` "
                    "(allow it to be set to 1 if it was previously negative)",
                )
            ]
    if rt.key == ("batch", "jobs"):
        return _batch.validate_job_update(old, new)
    if rt.key in (
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
    ):
        if (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get("selector"):
            return [
                field_invalid(
                    "spec.selector", (new.get("spec") or {}).get("selector"), "field is immutable"
                )
            ]
    return []


def raise_if(causes: list[dict[str, str]], rt: ResourceType, name: str) -> None:
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)
