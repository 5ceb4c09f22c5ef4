"""batch/v1 Jobs and CronJobs: the defaults and validation the apiserver applies.

A port of the parts of k8s.io/kubernetes ``pkg/apis/batch/v1/defaults.go``,
``pkg/apis/batch/validation`` and the job strategy a client can see: the
generated selector and the ``batch.kubernetes.io/controller-uid`` /
``job-name`` template labels (plus the legacy unprefixed pair current
apiservers still write), ``completions``/``parallelism`` both 1 when neither
is set, ``backoffLimit`` 6, ``completionMode: NonIndexed``, ``suspend:
false``, ``podReplacementPolicy: TerminatingOrFailed``; a CronJob's
``concurrencyPolicy: Allow`` and history limits 3 and 1. Validation: the pod
template's ``restartPolicy`` (``OnFailure`` or ``Never``), the selector
matching the template, non-negative counts, a parsable schedule and time
zone, CronJob names of at most 52 characters; and on update the immutable
selector, template and completions of a Job.
"""

from __future__ import annotations

from typing import Any

from fleet.api import parse_cron, parse_time_zone
from fleet.errors import InputError
from fleet.sandbox._status import cause, field_invalid, field_required

__all__ = [
    "default_cronjob",
    "default_job",
    "validate_cronjob",
    "validate_job",
    "validate_job_update",
]

CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
DEFAULT_BACKOFF_LIMIT = 6
CRONJOB_NAME_MAX = 52
"""52 = 63 minus the 11 characters of the ``-<minutes>`` suffix of the Jobs it makes."""
_RESTART_POLICIES = ('"OnFailure"', '"Never"')

Obj = dict[str, Any]


def default_job(obj: Obj, *, creating: bool) -> None:
    """SetDefaults_Job and, on create, the strategy's generated selector and labels."""
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    if creating and not spec.get("manualSelector"):
        meta = obj["metadata"]
        uid, name = meta.get("uid", ""), meta.get("name", "")
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: uid}}
        template = spec.setdefault("template", {})
        tmeta = template.setdefault("metadata", {})
        labels = tmeta.get("labels") or {}
        tmeta["labels"] = {
            **labels,
            CONTROLLER_UID_LABEL: uid,
            JOB_NAME_LABEL: name,
            LEGACY_CONTROLLER_UID_LABEL: uid,
            LEGACY_JOB_NAME_LABEL: name,
        }


def default_cronjob(obj: Obj) -> None:
    """SetDefaults_CronJob."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = spec.setdefault("jobTemplate", {})
    if isinstance(job_template, dict):
        job_template.setdefault("metadata", {}).setdefault("creationTimestamp", None)


def _restart_policy(tmpl_spec: Obj, field: str) -> list[dict[str, str]]:
    policy = tmpl_spec.get("restartPolicy")
    if policy in ("OnFailure", "Never"):
        return []
    if not policy:
        return [field_required(field)]
    return [
        cause(
            "FieldValueNotSupported",
            field,
            f'Unsupported value: "{policy}": supported values: {", ".join(_RESTART_POLICIES)}',
        )
    ]


def _non_negative(spec: Obj, prefix: str, *names: str) -> list[dict[str, str]]:
    causes = []
    for name in names:
        value = spec.get(name)
        if isinstance(value, int) and value < 0:
            causes.append(
                field_invalid(f"{prefix}.{name}", value, "must be greater than or equal to 0")
            )
    return causes


def _job_spec(spec: Obj, prefix: str, *, check_selector: bool) -> list[dict[str, str]]:
    template = spec.get("template") or {}
    tmpl_spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    causes = _restart_policy(tmpl_spec or {}, f"{prefix}.template.spec.restartPolicy")
    causes += _non_negative(
        spec, prefix, "parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"
    )
    if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
        causes.append(
            cause(
                "FieldValueNotSupported",
                f"{prefix}.completionMode",
                f'Unsupported value: "{spec["completionMode"]}": supported values: '
                '"NonIndexed", "Indexed"',
            )
        )
    if check_selector:
        selector = spec.get("selector")
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not isinstance(selector, dict) or not selector:
            causes.append(field_required(f"{prefix}.selector"))
        else:
            wanted = selector.get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in wanted.items()):
                causes.append(
                    field_invalid(
                        f"{prefix}.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    )
                )
    return causes


def validate_job(obj: Obj) -> list[dict[str, str]]:
    return _job_spec(obj.get("spec") or {}, "spec", check_selector=True)


def validate_job_update(old: Obj, new: Obj) -> list[dict[str, str]]:
    """The fields of a Job that never change (the scheduling directives of a suspended one aside)."""
    o, n = old.get("spec") or {}, new.get("spec") or {}
    causes = []
    for name in ("selector", "completions", "completionMode"):
        if o.get(name) != n.get(name):
            causes.append(field_invalid(f"spec.{name}", n.get(name), "field is immutable"))
    if o.get("template") != n.get("template") and not (o.get("suspend") and n.get("suspend")):
        causes.append(field_invalid("spec.template", n.get("template"), "field is immutable"))
    return causes


def validate_cronjob(obj: Obj) -> list[dict[str, str]]:
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    causes: list[dict[str, str]] = []
    if len(name) > CRONJOB_NAME_MAX:
        causes.append(
            field_invalid(
                "metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX} characters"
            )
        )
    schedule = spec.get("schedule")
    if not schedule:
        causes.append(field_required("spec.schedule"))
    elif "TZ" in str(schedule):
        causes.append(
            field_invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            )
        )
    else:
        try:
            parse_cron(str(schedule))
        except InputError as exc:
            causes.append(field_invalid("spec.schedule", schedule, str(exc)))
    if spec.get("timeZone") is not None:
        try:
            parse_time_zone(str(spec["timeZone"]))
        except InputError as exc:
            causes.append(field_invalid("spec.timeZone", spec["timeZone"], str(exc)))
    if spec.get("concurrencyPolicy") not in ("Allow", "Forbid", "Replace"):
        causes.append(
            cause(
                "FieldValueNotSupported",
                "spec.concurrencyPolicy",
                f'Unsupported value: "{spec.get("concurrencyPolicy")}": supported values: '
                '"Allow", "Forbid", "Replace"',
            )
        )
    causes += _non_negative(
        spec,
        "spec",
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    )
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    causes += _job_spec(job_spec, "spec.jobTemplate.spec", check_selector=False)
    return causes
