"""The Events that concern a ModelAPI: its own and its children's (Deployments, ReplicaSets, pods, Services,
HorizontalPodAutoscaler, PodDisruptionBudget), newest last."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelapi_operator.cli_views.common import age, table


def _when(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def related_events(
    model: Mapping[str, Any], children: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Events whose object is the ModelAPI or one of ``children`` (by uid, or by kind and name for objects since
    deleted: a replaced pod's events outlive it), oldest first."""
    objects = [model, *children]
    uids = {str(item["metadata"]["uid"]) for item in objects if item.get("metadata", {}).get("uid")}
    named = {(str(item.get("kind")), str(item["metadata"]["name"])) for item in objects}
    model_name = str(model["metadata"]["name"])
    revisions = {str(item.get("name")) for item in model.get("status", {}).get("revisions") or []}

    def concerns(event: Mapping[str, Any]) -> bool:
        involved = event.get("involvedObject") or {}
        kind, name = str(involved.get("kind", "")), str(involved.get("name", ""))
        if involved.get("uid") in uids or (kind, name) in named:
            return True
        # the pods and ReplicaSets of a revision are named <name>-<revision>-...
        if kind in {"Pod", "ReplicaSet"} and any(name.startswith(f"{rev}-") for rev in revisions if rev):
            return True
        return kind == "ModelAPI" and name == model_name

    return sorted((event for event in events if concerns(event)), key=_when)


def events_table(events: Sequence[Mapping[str, Any]], now: datetime, *, limit: int) -> str:
    """The last ``limit`` events: AGE TYPE REASON OBJECT MESSAGE (``(x3)`` after the reason for repeats)."""
    rows = []
    for event in events[-limit:] if limit > 0 else []:
        involved = event.get("involvedObject") or {}
        count = int(event.get("count") or (event.get("series") or {}).get("count") or 1)
        reason = str(event.get("reason", "")) + (f" (x{count})" if count > 1 else "")
        message = " ".join(str(event.get("message") or event.get("note") or "").split())
        rows.append(
            [
                age(_when(event), now),
                str(event.get("type", "")),
                reason,
                f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                message,
            ]
        )
    return table(("AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"), rows) if rows else ""
