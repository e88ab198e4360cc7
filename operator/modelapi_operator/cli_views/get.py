"""``modelapi get``: one row a ModelAPI, with what its owner looks at first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelapi_operator.cli_views.common import NONE, age, condition, revisions_summary, status_of, table

HEADERS = ("NAME", "READY", "REASON", "URL", "REVISIONS", "REPLICAS", "AGE")


def _replicas(status: Mapping[str, Any]) -> str:
    """Ready/desired of the stable revision."""
    if status.get("replicas") is None and status.get("readyReplicas") is None:
        return NONE
    return f"{status.get('readyReplicas') or 0}/{status.get('replicas') or 0}"


def _row(model: Mapping[str, Any], now: datetime, *, with_namespace: bool) -> list[str]:
    meta = model.get("metadata", {})
    status = status_of(model)
    ready = condition(model, "Ready")
    row = [
        str(meta.get("name", "")),
        str(ready.get("status", "Unknown")),
        str(ready.get("reason", NONE)),
        str(status.get("url") or NONE),
        revisions_summary(model),
        _replicas(status),
        age(meta.get("creationTimestamp"), now),
    ]
    return [str(meta.get("namespace", "")), *row] if with_namespace else row


def models_table(models: Sequence[Mapping[str, Any]], now: datetime, *, all_namespaces: bool) -> str:
    """The table, sorted by namespace and name; an empty string for no ModelAPI (the caller says so)."""
    if not models:
        return ""
    ordered = sorted(models, key=lambda m: (m.get("metadata", {}).get("namespace", ""), m["metadata"]["name"]))
    headers = ("NAMESPACE", *HEADERS) if all_namespaces else HEADERS
    return table(headers, [_row(model, now, with_namespace=all_namespaces) for model in ordered])
