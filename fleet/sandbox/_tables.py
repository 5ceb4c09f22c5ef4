"""meta.k8s.io/v1 Table responses (``kubectl get``) for the sandbox's resources.

Pure library: ports the column definitions and cell logic of kubernetes
pkg/printers/internalversion/printers.go for the built-in resources, the
CRD default (NAME, CREATED AT) and custom resources' additionalPrinterColumns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["table_for"]


def table_for(
    resource: str,
    objects: list[dict[str, Any]],
    *,
    list_meta: dict[str, Any] | None = None,
    include_object: str = "Metadata",
    crd_columns: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    raise NotImplementedError
