"""Whether the HorizontalPodAutoscaler can compute its metric, and whether it is held at its maximum, read from
its own status (pure).

An HPA whose metric cannot be read (no metrics-server for cpu/memory, no custom-metrics adapter for inFlight)
keeps the replicas where they are and says why in ``ScalingActive=False`` (``FailedGetResourceMetric``,
``FailedGetPodsMetric``, ...), or ``AbleToScale=False`` when it cannot read or change the Deployment's scale.
The ModelAPI's ``Autoscaling`` condition carries that reason and the HPA's message; ``Ready`` does not change
(the model serves at its current size).

An HPA that wants more replicas than ``maxReplicas`` says ``ScalingLimited=True`` reason ``TooManyReplicas`` and
runs ``maxReplicas``. Once that has lasted a while (``sustain`` seconds: load that peaks for a moment is not a
capacity problem), the ``Autoscaling`` condition says ``AutoscalingLimited`` with the desired count (estimated as
the HPA controller computes it: the ready replicas times the ratio of the metric to its target, beyond a 10 %
tolerance) and what raising the limit costs (the replicas times one pod's requests). It clears at once when the
HPA has room again (a raised maximum, or fewer replicas), and otherwise only once the HPA has stopped asking for
more for ``sustain`` seconds too, so that a load hovering at the limit does not make it flap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from modelapi_operator import names
from modelapi_operator.api.patterns import quantity_value
from modelapi_operator.api.status import ConditionStatus
from modelapi_operator.reasons import (
    AUTOSCALING_ACTIVE,
    AUTOSCALING_INACTIVE,
    AUTOSCALING_LIMITED,
    AUTOSCALING_PENDING,
    HPA_SCALING_DISABLED,
    HPA_TOO_MANY_REPLICAS,
)
from modelapi_operator.timestamps import parse_rfc3339

DEFAULT_LIMITED_SECONDS: Final = 60.0
# The HPA controller's default tolerance (--horizontal-pod-autoscaler-tolerance): within it, no change is wanted.
_TOLERANCE: Final = Decimal("0.1")
# One pod's requests that a replica costs, in this order.
_COSTED: Final = ("cpu", "memory", names.GPU_RESOURCE, "ephemeral-storage")
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[A-Za-z]*)$")

_WHAT_TO_INSTALL: Final = {
    "cpu": "The resource metrics API (metrics.k8s.io) is served by metrics-server: install it in the cluster",
    "memory": "The resource metrics API (metrics.k8s.io) is served by metrics-server: install it in the cluster",
    "inFlight": (
        "The custom metrics API (custom.metrics.k8s.io) must serve the pods metric "
        f"{names.INFLIGHT_METRIC}: install Prometheus (scraping the model's pods) and prometheus-adapter with the "
        "chart's rule (README, Autoscaling)"
    ),
}

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class AutoscalingView:
    """The HPA of the stable revision, as far as its metric goes."""

    hpa: str
    metric: str  # cpu, memory or inFlight
    active: bool | None  # None: the HPA has not computed its metric yet
    reason: str  # the HPA's reason for the condition that decided
    message: str  # the HPA's message
    max_replicas: int = 0
    at_max: bool = False  # the HPA asks for maxReplicas (status.desiredReplicas): it has no room left
    limited: bool | None = None  # ScalingLimited: True (reason TooManyReplicas), False, None (absent, other reason)
    limited_changed: datetime | None = None  # ScalingLimited's lastTransitionTime
    wanted: int | None = None  # the desired count before maxReplicas caps it, estimated from its metrics
    requests: Sequence[tuple[str, str]] = field(default=())  # one pod's requests (resource, quantity)


def _metric_of(hpa: Manifest) -> str:
    metrics = hpa.get("spec", {}).get("metrics") or [{}]
    first = metrics[0]
    if first.get("type") == "Pods" and first.get("pods", {}).get("metric", {}).get("name") == names.INFLIGHT_METRIC:
        return "inFlight"
    return str(first.get("resource", {}).get("name", "cpu"))


def _hpa_condition(hpa: Manifest, kind: str) -> Mapping[str, Any] | None:
    return next((c for c in hpa.get("status", {}).get("conditions") or [] if c.get("type") == kind), None)


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing."""
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _ratio(spec_metric: Manifest, status_metrics: Sequence[Manifest]) -> Decimal | None:
    """The metric's current value over its target (a Resource's utilization, a Pods metric's average value), from
    the HPA's status.currentMetrics; None without a reading."""
    kind = spec_metric.get("type")
    if kind == "Resource":
        name = _dig(spec_metric, "resource", "name")
        reading = next((m for m in status_metrics if _dig(m, "resource", "name") == name), None)
        target = _dig(spec_metric, "resource", "target", "averageUtilization")
        current = _dig(reading, "resource", "current", "averageUtilization")
        if isinstance(target, int) and target > 0 and isinstance(current, int):
            return Decimal(current) / Decimal(target)
        return None
    if kind == "Pods":
        name = _dig(spec_metric, "pods", "metric", "name")
        reading = next((m for m in status_metrics if _dig(m, "pods", "metric", "name") == name), None)
        try:
            target_value = quantity_value(str(_dig(spec_metric, "pods", "target", "averageValue")))
            current_value = quantity_value(str(_dig(reading, "pods", "current", "averageValue")))
        except (ValueError, KeyError, InvalidOperation):
            return None
        return current_value / target_value if target_value > 0 else None
    return None


def wanted_replicas(hpa: Manifest) -> int | None:
    """The replicas the HPA's metrics ask for, before minReplicas and maxReplicas: for each metric the current
    replicas times (current / target), unchanged within the tolerance; the largest over the metrics. An estimate
    (the controller counts ready pods with metrics only): None when the status has no usable reading."""
    status = hpa.get("status") or {}
    current = status.get("currentReplicas")
    if not isinstance(current, int) or current < 1:
        return None
    readings = status.get("currentMetrics") or []
    proposals = []
    for spec_metric in (hpa.get("spec") or {}).get("metrics") or []:
        ratio = _ratio(spec_metric, readings)
        if ratio is None:
            continue
        proposals.append(current if abs(ratio - 1) <= _TOLERANCE else math.ceil(ratio * current))
    return max(proposals) if proposals else None


def pod_requests(deployment: Manifest | None) -> tuple[tuple[str, str], ...]:
    """The requests of one pod of the Deployment that a replica costs (cpu, memory, GPUs, disk), summed over its
    containers when they share a unit."""
    if deployment is None:
        return ()
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    found: dict[str, str] = {}
    for container in containers:
        for resource, amount in ((container.get("resources") or {}).get("requests") or {}).items():
            found[resource] = _add(found[resource], str(amount)) if resource in found else str(amount)
    return tuple((resource, found[resource]) for resource in _COSTED if resource in found)


def _split(quantity: str) -> tuple[Decimal, str] | None:
    match = _QUANTITY.match(quantity)
    if match is None or match.group("suffix")[:1] in ("e", "E"):
        return None
    return Decimal(match.group("number")), match.group("suffix")


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _add(first: str, second: str) -> str:
    a, b = _split(first), _split(second)
    if a is None or b is None or a[1] != b[1]:
        return f"{first} + {second}"
    return f"{_number(a[0] + b[0])}{a[1]}"


def times(quantity: str, count: int) -> str:
    """A quantity times a count in the quantity's own unit (100m x 3 = 300m, 384Mi x 3 = 1152Mi)."""
    split = _split(quantity)
    if split is None:
        return f"{count} x {quantity}"
    return f"{_number(split[0] * count)}{split[1]}"


def read_hpa(hpa: Manifest | None, deployment: Manifest | None = None) -> AutoscalingView | None:
    """None when there is nothing to say: no HPA, a fixed size (min == max), or a Deployment at zero replicas.
    ``deployment``: the one the HPA scales, for the cost of a replica."""
    if hpa is None:
        return None
    spec = hpa.get("spec", {})
    if spec.get("minReplicas", 1) == spec.get("maxReplicas"):
        return None
    name, metric = hpa["metadata"]["name"], _metric_of(hpa)
    able, scaling = _hpa_condition(hpa, "AbleToScale"), _hpa_condition(hpa, "ScalingActive")
    for condition in (able, scaling):
        if condition is not None and condition.get("status") == "False":
            if condition.get("reason") == HPA_SCALING_DISABLED:
                return None
            return AutoscalingView(name, metric, False, str(condition.get("reason")), str(condition.get("message")))
    if scaling is not None and scaling.get("status") == "True":
        maximum = int(spec.get("maxReplicas") or 0)
        limit = _hpa_condition(hpa, "ScalingLimited") or {}
        limited = {"True": True, "False": False}.get(str(limit.get("status")))
        if limited and limit.get("reason") != HPA_TOO_MANY_REPLICAS:
            limited = None  # limited by its scale-up rate or minReplicas: not a ceiling
        return AutoscalingView(
            name,
            metric,
            True,
            str(scaling.get("reason")),
            str(scaling.get("message")),
            max_replicas=maximum,
            at_max=int((hpa.get("status") or {}).get("desiredReplicas") or 0) >= maximum > 0,
            limited=limited,
            limited_changed=parse_rfc3339(limit.get("lastTransitionTime")),
            wanted=wanted_replicas(hpa),
            requests=pod_requests(deployment),
        )
    return AutoscalingView(name, metric, None, "", "")


def _lasted(view: AutoscalingView, now: datetime) -> float:
    """Seconds since ScalingLimited last changed (0 when it does not say)."""
    if view.limited_changed is None:
        return 0.0
    return max((now - view.limited_changed).total_seconds(), 0.0)


def is_limited(view: AutoscalingView, *, was_limited: bool, now: datetime, sustain: float) -> bool:
    """Whether the ModelAPI says ``AutoscalingLimited``: the HPA at maxReplicas has wanted more for ``sustain``
    seconds; once said, it holds while the HPA stays at its maximum and has wanted no more for less than
    ``sustain`` seconds. It clears at once when the HPA has room again (a raised maxReplicas, fewer replicas)."""
    if view.active is not True or not view.at_max:
        return False
    if view.limited is True:
        return was_limited or _lasted(view, now) >= sustain
    return was_limited and view.limited is False and _lasted(view, now) < sustain


def recheck_in(view: AutoscalingView | None, *, was_limited: bool, now: datetime, sustain: float) -> float | None:
    """Seconds until ``is_limited`` changes by time alone (nothing else may happen to trigger a reconcile)."""
    if view is None or view.active is not True or not view.at_max or view.limited is None:
        return None
    if view.limited is was_limited:
        return None
    remaining = sustain - _lasted(view, now)
    return remaining if remaining > 0 else None


def _cost(view: AutoscalingView, extra: int) -> str:
    each = ", ".join(f"{resource} {amount}" for resource, amount in view.requests)
    total = ", ".join(f"{resource} {times(amount, extra)}" for resource, amount in view.requests)
    if not each:
        return ""
    return f" costs {extra} more replica{'s' if extra > 1 else ''}: {total} (each requests {each})"


def limited_message(view: AutoscalingView) -> str:
    since = f" since {view.limited_changed.isoformat().replace('+00:00', 'Z')}" if view.limited_changed else ""
    maximum = view.max_replicas
    if view.wanted is not None and view.wanted > maximum:
        desired, raise_to = f"desired {view.wanted}", view.wanted
    else:
        desired, raise_to = f"desired more than {maximum}", maximum + 1
    cost = _cost(view, raise_to - maximum)
    advice = (
        f" Raising spec.autoscaling.maxReplicas to {raise_to}{cost}."
        if cost
        else f" Raise spec.autoscaling.maxReplicas to {raise_to} or more."
    )
    return (
        f"HorizontalPodAutoscaler {view.hpa} wants more replicas on {view.metric} than maxReplicas allows "
        f"({desired}, max {maximum}){since}: the model is capacity-bound and its requests may queue or slow down."
        f"{advice} Or lower the load, or make each replica faster."
    )


def autoscaling_condition(
    view: AutoscalingView, *, was_limited: bool = False, now: datetime | None = None, sustain: float = 0.0
) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of the ModelAPI's ``Autoscaling`` condition; ``was_limited``: its previous reason
    was ``AutoscalingLimited``."""
    if view.active is None:
        return "Unknown", AUTOSCALING_PENDING, f"HorizontalPodAutoscaler {view.hpa} has not read its metric yet"
    if view.active and now is not None and is_limited(view, was_limited=was_limited, now=now, sustain=sustain):
        return "True", AUTOSCALING_LIMITED, limited_message(view)
    if view.active:
        up_to = f" up to maxReplicas {view.max_replicas}" if view.max_replicas else ""
        return "True", AUTOSCALING_ACTIVE, f"HorizontalPodAutoscaler {view.hpa} scales on {view.metric}{up_to}"
    return (
        "False",
        AUTOSCALING_INACTIVE,
        f"HorizontalPodAutoscaler {view.hpa} cannot scale on {view.metric}, replicas stay as they are "
        f"({view.reason}: {view.message}). {_WHAT_TO_INSTALL.get(view.metric, '')}",
    )
