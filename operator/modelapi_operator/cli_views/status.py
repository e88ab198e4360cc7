"""``modelapi status NAME``: one screen with the conditions, revisions, canary analysis, cold start,
last-known-good revision, last failure and recent Events of a ModelAPI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelapi_operator.api.spec import AnalysisSpec
from modelapi_operator.cli_views.common import NONE, age, condition, status_of, table
from modelapi_operator.cli_views.events import events_table, related_events

DEFAULT_EVENTS = 10
_ANALYSIS_DEFAULTS = AnalysisSpec()


def _section(title: str, body: str) -> str:
    indented = "".join(f"  {line}\n" if line else "\n" for line in body.rstrip("\n").split("\n"))
    return f"\n{title}:\n{indented}"


def _header(model: Mapping[str, Any], now: datetime) -> str:
    meta, status = model.get("metadata", {}), status_of(model)
    spec = model.get("spec") or {}
    ready = condition(model, "Ready")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    stale = ""
    if observed is None:
        stale = " (the operator has not written a status yet)"
    elif observed != generation:
        stale = f" (status is of generation {observed}, spec is at {generation}: the operator is catching up)"
    strategy = (spec.get("rollout") or {}).get("strategy", "RollingUpdate")
    rows = [
        ("Name", f"{meta.get('name')}"),
        ("Namespace", f"{meta.get('namespace')}"),
        ("Ready", f"{ready.get('status', 'Unknown')} ({ready.get('reason', 'no condition yet')}){stale}"),
        ("URL", str(status.get("url") or NONE)),
        ("Model", str((spec.get("model") or {}).get("uri", NONE))),
        ("Replicas", f"{status.get('readyReplicas') or 0} ready of {status.get('replicas') or 0} (stable)"),
        ("Rollout", str(strategy)),
        ("Age", age(meta.get("creationTimestamp"), now)),
    ]
    if status.get("scaledToZeroAt"):
        rows.append(("Scaled to zero", f"{age(status['scaledToZeroAt'], now)} ago ({status['scaledToZeroAt']})"))
    return "".join(f"{key + ':':<16}{value}\n" for key, value in rows)


def _conditions(model: Mapping[str, Any], now: datetime) -> str:
    rows = [
        [
            str(item.get("type", "")),
            str(item.get("status", "")),
            str(item.get("reason", "")),
            age(item.get("lastTransitionTime"), now),
            " ".join(str(item.get("message", "")).split()),
        ]
        for item in status_of(model).get("conditions") or []
        if isinstance(item, dict)
    ]
    return table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows) if rows else "no conditions yet\n"


def _desired(children: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Desired replicas of every revision, from its Deployment."""
    return {
        str(item["metadata"]["name"]): int((item.get("spec") or {}).get("replicas") or 0)
        for item in children
        if item.get("kind") == "Deployment"
    }


def _revisions(model: Mapping[str, Any], children: Sequence[Mapping[str, Any]]) -> str:
    desired = _desired(children)
    rows = []
    for item in status_of(model).get("revisions") or []:
        name = str(item.get("name", ""))
        wanted = desired.get(name)
        ready = f"{item.get('readyReplicas') or 0}/{wanted if wanted is not None else '?'}"
        rows.append([name, str(item.get("role", "")), f"{item.get('weight') or 0}%", ready, str(item.get("modelUri"))])
    return table(("REVISION", "ROLE", "WEIGHT", "READY", "MODEL"), rows) if rows else "no revision yet\n"


def _percent(value: Any) -> str:
    return NONE if value is None else f"{float(value):.2%}"


def _ms(value: Any) -> str:
    return NONE if value is None else f"{float(value):.0f} ms"


def _canary(model: Mapping[str, Any]) -> str:
    canary = status_of(model).get("canary") or {}
    spec = ((model.get("spec") or {}).get("rollout") or {}).get("canary") or {}
    steps = spec.get("steps") or []
    lines = [
        f"revision {canary.get('revision')}: step {int(canary.get('step') or 0) + 1} of {len(steps) or '?'}, "
        f"{canary.get('weight', 0)}% of traffic"
    ]
    analysis = spec.get("analysis")
    if analysis is not None:
        max_errors = analysis.get("maxErrorRate", _ANALYSIS_DEFAULTS.max_error_rate)
        max_p99 = analysis.get("maxLatencyP99Ms", _ANALYSIS_DEFAULTS.max_latency_p99_ms)
        limit = analysis.get("failureLimit", _ANALYSIS_DEFAULTS.failure_limit)
        lines += [
            f"error rate   {_percent(canary.get('errorRate'))} (stable {_percent(canary.get('stableErrorRate'))}), "
            f"max {_percent(max_errors)}",
            f"p99 latency  {_ms(canary.get('latencyP99Ms'))} (stable {_ms(canary.get('stableLatencyP99Ms'))}), "
            f"max {_ms(max_p99)}",
            f"failed checks {canary.get('failedChecks') or 0} in a row, rollback at {limit}",
        ]
    else:
        lines.append("no analysis: steps advance on readiness and time")
    if canary.get("analysis"):
        lines.append(f"last step: {canary['analysis']}")
    return "\n".join(lines)


def _seconds(value: Any) -> str:
    return NONE if value is None else f"{float(value):.2f} s"


def _size(value: Any) -> str:
    """Bytes in binary units: 812 B, 1.5 KiB, 96.0 MiB."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _cold_start(cold: Mapping[str, Any]) -> str:
    lines = [
        f"revision {cold.get('revision') or NONE}",
        f"download {_seconds(cold.get('downloadSeconds'))}, load {_seconds(cold.get('loadSeconds'))}, "
        f"warm-up {_seconds(cold.get('warmupSeconds'))}",
    ]
    source = []
    if cold.get("source"):
        source.append(f"artifact from the {cold['source']}")
    if cold.get("storeBytes") is not None:
        source.append(f"{_size(cold['storeBytes'])} downloaded")
    if cold.get("artifactBytes") is not None:
        source.append(f"artifact size {_size(cold['artifactBytes'])}")
    if source:
        lines.append(", ".join(source))
    return "\n".join(lines)


def _last_known_good(good: Mapping[str, Any], now: datetime, name: str, namespace: str) -> str:
    served = good.get("lastServed")
    lines = [
        f"revision {good.get('revision')}: {good.get('modelUri')}",
        f"last served {age(served, now) + ' ago' if served else NONE}, "
        f"{good.get('readyReplicas') or 0} of {good.get('replicas') or 0} warm replicas ready",
        f"roll back: kubectl annotate mapi -n {namespace} {name} serving.modelapi.io/rollback=true",
    ]
    return "\n".join(lines)


def _failure(failure: Mapping[str, Any], now: datetime) -> str:
    revision = f", revision {failure['revision']}" if failure.get("revision") else ""
    return f"{failure.get('reason')} ({age(failure.get('time'), now)} ago{revision})\n{failure.get('message', '')}"


def _worst_condition(model: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The failure the conditions state now, when status.lastFailure does not: Ready False, else Degraded True."""
    ready = condition(model, "Ready")
    if ready.get("status") == "False":
        return ready
    degraded = condition(model, "Degraded")
    return degraded if degraded.get("status") == "True" else None


def status_screen(
    model: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    event_limit: int = DEFAULT_EVENTS,
    forbidden: Sequence[str] = (),
) -> str:
    """The screen; ``forbidden``: the kinds the user may not list (their part is missing, and the screen says so)."""
    status = status_of(model)
    meta = model.get("metadata", {})
    name, namespace = str(meta.get("name", "NAME")), str(meta.get("namespace", "NAMESPACE"))
    parts = [_header(model, now), _section("Conditions", _conditions(model, now))]
    parts.append(_section("Revisions", _revisions(model, children)))
    if status.get("canary"):
        parts.append(_section("Canary", _canary(model)))
    if status.get("coldStart"):
        parts.append(_section("Cold start", _cold_start(status["coldStart"])))
    if status.get("lastKnownGood"):
        parts.append(_section("Last known good", _last_known_good(status["lastKnownGood"], now, name, namespace)))
    if status.get("lastFailure"):
        parts.append(_section("Last failure", _failure(status["lastFailure"], now)))
    else:
        failing = _worst_condition(model)
        if failing is not None:
            parts.append(
                _section(
                    "Last failure",
                    f"{failing.get('reason')} ({failing.get('type')}, {age(failing.get('lastTransitionTime'), now)} "
                    f"ago)\n{failing.get('message', '')}",
                )
            )
    shown = events_table(related_events(model, children, events), now, limit=event_limit)
    parts.append(_section(f"Events (last {event_limit})", shown or "no recent events\n"))
    if forbidden:
        parts.append(
            f"\nNot shown: you may not list {', '.join(forbidden)} in {namespace} (kubectl auth can-i list ...).\n"
        )
    return "".join(parts)
