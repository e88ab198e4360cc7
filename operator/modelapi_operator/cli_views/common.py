"""Pieces every view shares: ages, aligned tables, conditions and revision names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelapi_operator.timestamps import parse_rfc3339

NONE = "<none>"


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d (``<unknown>`` without a timestamp)."""
    moment = parse_rfc3339(timestamp)
    if moment is None:
        return "<unknown>"
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart, like kubectl's."""
    widths = [max(len(str(row[index])) for row in (headers, *rows)) for index in range(len(headers))]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in (headers, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def status_of(model: Mapping[str, Any]) -> Mapping[str, Any]:
    status = model.get("status")
    return status if isinstance(status, dict) else {}


def condition(model: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The condition of type ``kind``, or an empty mapping."""
    for item in status_of(model).get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == kind:
            return item
    return {}


def short_revision(model_name: str, revision: str) -> str:
    """``iris-1a2b3c4d`` -> ``1a2b3c4d`` (the revision hash the pods' label carries)."""
    prefix = f"{model_name}-"
    return revision[len(prefix) :] if revision.startswith(prefix) else revision


def revisions_summary(model: Mapping[str, Any]) -> str:
    """``1a2b3c4d stable 90%, 5e6f7a8b canary 10%``; lastKnownGood revisions take no traffic and are left out."""
    name = str(model.get("metadata", {}).get("name", ""))
    parts = [
        f"{short_revision(name, str(item.get('name', '?')))} {item.get('role', '?')} {item.get('weight', 0)}%"
        for item in status_of(model).get("revisions") or []
        if isinstance(item, dict) and item.get("role") != "lastKnownGood"
    ]
    return ", ".join(parts) or NONE
