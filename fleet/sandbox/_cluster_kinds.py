"""Defaults and validation of the cluster-administration kinds no controller here acts on.

RuntimeClass (node.k8s.io/v1), CertificateSigningRequest (certificates.k8s.io/v1),
Mutating/ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1), FlowSchema and
PriorityLevelConfiguration (flowcontrol.apiserver.k8s.io): a port of their
``pkg/apis/*/v1*/defaults.go`` and the first rules of ``validation.go``, so they are stored
as a real apiserver stores them; nothing approves CSRs, calls webhooks or queues requests.
"""

from __future__ import annotations

import re
from typing import Any

from fleet.sandbox._status import cause, field_invalid, field_required
from fleet.sandbox._store import clone

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SIGNER = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9._-]+$")
WEBHOOK_TIMEOUT_SECONDS = 10
"""admissionregistration/v1 SetDefaults_ValidatingWebhook: timeoutSeconds."""
CSR_USAGES = (
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
)  # fmt: skip
_CSR_CONDITIONS = ("Approved", "Denied", "Failed")
QUEUING_DEFAULTS = {"queues": 64, "handSize": 8, "queueLengthLimit": 50}
"""flowcontrol SetDefaults_QueuingConfiguration."""
NOMINAL_SHARES_DEFAULT = 30
"""flowcontrol SetDefaults_LimitedPriorityLevelConfiguration: assured/nominal concurrency shares."""
MATCHING_PRECEDENCE_DEFAULT = 1000
"""flowcontrol SetDefaults_FlowSchemaSpec."""

NODE, CERTS, ADMISSION, FLOW = (
    "node.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
)
KEYS = frozenset(
    {
        (NODE, "runtimeclasses"),
        (CERTS, "certificatesigningrequests"),
        (ADMISSION, "mutatingwebhookconfigurations"),
        (ADMISSION, "validatingwebhookconfigurations"),
        (FLOW, "flowschemas"),
        (FLOW, "prioritylevelconfigurations"),
    }
)


def _default_rule(rule: dict[str, Any]) -> None:
    rule.setdefault("scope", "*")


def _default_webhook(hook: dict[str, Any], mutating: bool) -> None:
    hook.setdefault("failurePolicy", "Fail")
    hook.setdefault("matchPolicy", "Equivalent")
    hook.setdefault("namespaceSelector", {})
    hook.setdefault("objectSelector", {})
    hook.setdefault("timeoutSeconds", WEBHOOK_TIMEOUT_SECONDS)
    if mutating:
        hook.setdefault("reinvocationPolicy", "Never")
    service = (hook.get("clientConfig") or {}).get("service")
    if isinstance(service, dict):
        service.setdefault("port", 443)
    for rule in hook.get("rules") or []:
        if isinstance(rule, dict):
            _default_rule(rule)


def _default_limited(limited: dict[str, Any], shares: str) -> None:
    limited.setdefault(shares, NOMINAL_SHARES_DEFAULT)
    if shares == "nominalConcurrencyShares":
        limited.setdefault("lendablePercent", 0)
    response = limited.setdefault("limitResponse", {"type": "Reject"})
    queuing = response.get("queuing") if isinstance(response, dict) else None
    if isinstance(queuing, dict):  # a pointer in Go: defaulted only when sent
        for k, v in QUEUING_DEFAULTS.items():
            queuing.setdefault(k, v)


def default(key: tuple[str, str], version: str, obj: dict[str, Any]) -> None:
    """Fill the defaults of one of :data:`KEYS` in place (stored at ``version``)."""
    spec = obj.setdefault("spec", {}) if key[1] not in _NO_SPEC else None
    if key[1] in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for hook in obj.get("webhooks") or []:
            if isinstance(hook, dict):
                _default_webhook(hook, key[1].startswith("mutating"))
    elif key == (FLOW, "flowschemas") and spec is not None:
        spec.setdefault("matchingPrecedence", MATCHING_PRECEDENCE_DEFAULT)
    elif key == (FLOW, "prioritylevelconfigurations") and spec is not None:
        limited = spec.get("limited")
        if spec.get("type") == "Limited" and isinstance(limited, dict):
            shares = (
                "assuredConcurrencyShares" if version == "v1beta2" else "nominalConcurrencyShares"
            )
            _default_limited(limited, shares)


_NO_SPEC = frozenset(
    {"runtimeclasses", "mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
)


SANDBOX_USER = "kubemock-fleet-admin"
SANDBOX_GROUPS = ("system:masters", "system:authenticated")
"""Who the sandbox's one token is: the name ``fleet.realcp``'s admin certificate carries."""


def prepare_create(
    key: tuple[str, str],
    obj: dict[str, Any],
    user: str = SANDBOX_USER,
    groups: tuple[str, ...] = SANDBOX_GROUPS,
) -> None:
    """PrepareForCreate: a CSR names who asked for it, and starts without a status."""
    if key == (CERTS, "certificatesigningrequests"):
        spec = obj.setdefault("spec", {})
        spec["username"] = user
        spec["groups"] = list(groups)
        spec.pop("uid", None)
        spec.pop("extra", None)


def validate(key: tuple[str, str], obj: dict[str, Any]) -> list[dict[str, str]]:
    """The first rules of each kind's validation: what is required, what must be one of."""
    causes: list[dict[str, str]] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if key == (NODE, "runtimeclasses"):
        handler = obj.get("handler")
        if not handler:
            causes.append(field_required("handler"))
        elif not isinstance(handler, str) or not _DNS1123_LABEL.match(handler):
            causes.append(
                field_invalid(
                    "handler",
                    handler,
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character "
                    "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )
            )
    elif key == (CERTS, "certificatesigningrequests"):
        if not spec.get("request"):
            causes.append(field_required("spec.request"))
        signer = spec.get("signerName")
        if not signer:
            causes.append(field_required("spec.signerName"))
        elif not isinstance(signer, str) or not _SIGNER.match(signer):
            causes.append(
                field_invalid(
                    "spec.signerName",
                    signer,
                    "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                )
            )
        usages = spec.get("usages")
        if not usages:
            causes.append(field_required("spec.usages"))
        for i, usage in enumerate(usages or []):
            if usage not in CSR_USAGES:
                supported = ", ".join(f'"{u}"' for u in CSR_USAGES)
                causes.append(
                    cause(
                        "FieldValueNotSupported",
                        f"spec.usages[{i}]",
                        f'Unsupported value: "{usage}": supported values: {supported}',
                    )
                )
        for i, cond in enumerate((obj.get("status") or {}).get("conditions") or []):
            if isinstance(cond, dict) and not cond.get("type"):
                causes.append(field_required(f"status.conditions[{i}].type"))
    elif key[0] == ADMISSION:
        seen: set[str] = set()
        for i, hook in enumerate(obj.get("webhooks") or []):
            name = hook.get("name", "") if isinstance(hook, dict) else ""
            if not name:
                causes.append(field_required(f"webhooks[{i}].name"))
            elif name in seen:
                causes.append(
                    cause(
                        "FieldValueDuplicate", f"webhooks[{i}].name", f'Duplicate value: "{name}"'
                    )
                )
            seen.add(name)
            if isinstance(hook, dict):
                if hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
                    causes.append(
                        cause(
                            "FieldValueNotSupported"
                            if hook.get("sideEffects")
                            else "FieldValueRequired",
                            f"webhooks[{i}].sideEffects",
                            f'Unsupported value: "{hook["sideEffects"]}": supported values: "None", "NoneOnDryRun"'
                            if hook.get("sideEffects")
                            else "Required value: must specify one of None, NoneOnDryRun",
                        )
                    )
                if not hook.get("admissionReviewVersions"):
                    causes.append(
                        cause(
                            "FieldValueRequired",
                            f"webhooks[{i}].admissionReviewVersions",
                            "Required value: must specify one of v1, v1beta1",
                        )
                    )
    elif key == (FLOW, "flowschemas"):
        if not (spec.get("priorityLevelConfiguration") or {}).get("name"):
            causes.append(field_required("spec.priorityLevelConfiguration.name"))
    elif key == (FLOW, "prioritylevelconfigurations"):
        kind = spec.get("type")
        if kind not in ("Exempt", "Limited"):
            causes.append(
                cause(
                    "FieldValueNotSupported",
                    "spec.type",
                    f'Unsupported value: "{kind or ""}": supported values: "Exempt", "Limited"',
                )
            )
        elif kind == "Limited" and not isinstance(spec.get("limited"), dict):
            causes.append(field_required("spec.limited"))
        elif kind == "Limited":
            response = spec["limited"].get("limitResponse") or {}
            if response.get("type") == "Queue" and not response.get("queuing"):
                causes.append(
                    cause(
                        "FieldValueRequired",
                        "spec.limited.limitResponse.queuing",
                        "Required value: must not be empty if limited.limitResponse.type is Limited",
                    )
                )
    return causes


def approval(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``certificatesigningrequests/approval``: only the Approved/Denied conditions change."""
    merged: dict[str, Any] = clone(old)
    conditions = [
        c
        for c in (new.get("status") or {}).get("conditions") or []
        if isinstance(c, dict) and c.get("type") in _CSR_CONDITIONS
    ]
    for c in conditions:  # populateConditionTimestamps
        if c.get("lastUpdateTime") and not c.get("lastTransitionTime"):
            c["lastTransitionTime"] = c["lastUpdateTime"]
    merged.setdefault("status", {})["conditions"] = conditions
    return merged
