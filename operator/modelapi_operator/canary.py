"""Canary policy (pure): how many canary replicas a step needs, and whether to hold, advance, promote or abort.

The canary's progress is part of its revision record (step, when the step started, failed checks,
last analysis), so a restarted operator resumes at the right step. Every interval with
analysis configured, the canary's share of server faults (5xx but 503 overload: the runtime's
``class="server_error"``; client errors never count) and p99 from Prometheus are compared with the limits;
``failureLimit`` consecutive failed intervals abort it. A step ends when its pause has passed, the
canary's replicas are ready and (with analysis) at least one check of the step passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from modelapi_operator.api import CanarySpec
from modelapi_operator.revision_record import CanaryProgress

Routing = Literal["gatewayAPI", "replicas"]
Action = Literal["hold", "advance", "promote", "abort"]


@dataclass(frozen=True)
class Measurement:
    """One analysis interval from Prometheus: None where there were no requests to measure."""

    canary_error_rate: float | None
    canary_latency_p99_ms: float | None
    stable_error_rate: float | None = None
    stable_latency_p99_ms: float | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    progress: CanaryProgress
    message: str
    checked: bool = False  # an analysis ran in this reconcile


def canary_replicas(stable_replicas: int, weight: int, routing: Routing) -> int:
    """Replicas of the canary for ``weight`` percent of the traffic.

    With Gateway API the route splits traffic, so the canary needs only its share of the capacity.
    With the replica ratio, the ``<name>`` Service spreads requests over every ready pod, so the
    canary's share of pods is its share of traffic: c / (s + c) = weight / 100.
    """
    stable_replicas = max(stable_replicas, 1)
    if routing == "gatewayAPI":
        return max(1, math.ceil(stable_replicas * weight / 100))
    if weight >= 100:
        return stable_replicas * 10  # as close to all traffic as a ratio gets while stable keeps serving
    return max(1, round(stable_replicas * weight / (100 - weight)))


def achieved_weight(stable_ready: int, canary_ready: int, weight: int, routing: Routing) -> int:
    """The share of traffic the canary really receives now (not the one asked for)."""
    if canary_ready == 0:
        return 0
    if routing == "gatewayAPI":
        return weight
    return round(100 * canary_ready / (stable_ready + canary_ready))


def _check(spec: CanarySpec, measurement: Measurement) -> tuple[bool, str]:
    analysis = spec.analysis
    assert analysis is not None
    problems = []
    error_rate, p99 = measurement.canary_error_rate, measurement.canary_latency_p99_ms
    if error_rate is not None and error_rate > analysis.max_error_rate:
        problems.append(f"error rate {error_rate:.2%} > {analysis.max_error_rate:.2%}")
    if p99 is not None and p99 > analysis.max_latency_p99_ms:
        problems.append(f"p99 {p99:.1f} ms > {analysis.max_latency_p99_ms:g} ms")
    if problems:
        return False, "; ".join(problems)
    if error_rate is None and p99 is None:
        return True, "no canary requests in the interval"
    return True, "within limits"


def decide(
    spec: CanarySpec,
    progress: CanaryProgress,
    *,
    now: datetime,
    canary_ready: bool,
    analysis_available: bool,
    measurement: Measurement | None,
) -> Decision:
    """The next move of a running canary. ``measurement`` is given only when an analysis is due."""
    if progress.step_started is None:
        progress = replace(progress, step_started=now)
    checked = False
    note = ""
    if spec.analysis is not None and analysis_available and measurement is not None:
        checked = True
        passed, note = _check(spec, measurement)
        failed = 0 if passed else progress.failed_checks + 1
        progress = replace(
            progress,
            failed_checks=failed,
            last_check=now,
            step_check_passed=progress.step_check_passed or passed,
        )
        if failed >= spec.analysis.failure_limit:
            return Decision("abort", progress, f"analysis failed {failed} times in a row: {note}", checked)
    step = spec.steps[min(progress.step, len(spec.steps) - 1)]
    elapsed = (now - progress.step_started).total_seconds() if progress.step_started else 0.0
    waiting = []
    if not canary_ready:
        waiting.append("canary replicas starting")
    if elapsed < step.pause_seconds:
        waiting.append(f"pause {elapsed:.0f}/{step.pause_seconds} s")
    needs_check = spec.analysis is not None and analysis_available and not progress.step_check_passed
    if needs_check:
        waiting.append("waiting for a passing analysis")
    if waiting:
        return Decision(
            "hold",
            progress,
            f"step {progress.step + 1}/{len(spec.steps)} at {step.weight}%: "
            + ", ".join(waiting)
            + (f" ({note})" if note else ""),
            checked,
        )
    if progress.step + 1 >= len(spec.steps):
        return Decision("promote", progress, f"all {len(spec.steps)} steps passed", checked)
    advanced = CanaryProgress(
        step=progress.step + 1,
        step_started=now,
        failed_checks=progress.failed_checks,
        last_check=progress.last_check,
        step_check_passed=False,
    )
    next_weight = spec.steps[advanced.step].weight
    return Decision(
        "advance", advanced, f"step {advanced.step + 1}/{len(spec.steps)}: {next_weight}% of traffic", checked
    )


def analysis_due(spec: CanarySpec, progress: CanaryProgress, now: datetime) -> bool:
    if spec.analysis is None:
        return False
    if progress.last_check is None:
        # the first check waits one interval after the step started, so there is traffic to measure
        started = progress.step_started or now
        return (now - started).total_seconds() >= spec.analysis.interval_seconds
    return (now - progress.last_check).total_seconds() >= spec.analysis.interval_seconds
