"""Scale to zero, decided from the stable revision's Deployment and what the operator measured (pure).

The state is part of the stable revision's record (its Deployment), so a restarted operator carries on:

- warm: no ``scaled_to_zero_at`` in the record; the Services select the model's pods; the HPA owns the size;
- zero: ``scaled_to_zero_at`` set and 0 replicas; the Services have no selector and an EndpointSlice of activator
  pods each; no HPA;
- waking: ``scaled_to_zero_at`` set and replicas > 0 but none ready; traffic still goes through the activator,
  which holds it; once a replica is ready the field is cleared and the Services select the pods again.

docs/autoscaling.md has the whole design.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelapi_operator.api import AutoscalingSpec
from modelapi_operator.revision_record import Patch, RevisionRecord, patch
from modelapi_operator.timestamps import parse_rfc3339, rfc3339

ZeroState = Literal["warm", "zero", "waking"]


def parked_since(deployment: Mapping[str, Any] | None) -> str | None:
    """When the revision went to zero (its traffic goes through the activator since), or None while warm."""
    return RevisionRecord.of(deployment).scaled_to_zero_at


def up_since(deployment: Mapping[str, Any]) -> datetime | None:
    """When the revision last started: woken from zero, else created."""
    return RevisionRecord.of(deployment).active_since or parse_rfc3339(
        str(deployment.get("metadata", {}).get("creationTimestamp") or "")
    )


def idle_check_due(autoscaling: AutoscalingSpec, deployment: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether to ask Prometheus if the model is idle: it may go to zero, it is warm, and it has been up for at
    least the idle time (so a window of requests that Prometheus has not scraped yet is never read as idle)."""
    if not autoscaling.scales_to_zero or deployment is None or parked_since(deployment) is not None:
        return False
    since = up_since(deployment)
    return since is not None and (now - since).total_seconds() >= autoscaling.idle_seconds


@dataclass(frozen=True)
class ZeroInput:
    autoscaling: AutoscalingSpec
    parked_since: str | None  # the stable revision's record: scaled_to_zero_at
    replicas: int
    ready: int
    now: datetime
    demand: bool = False  # the activator asked for a replica (annotation on the ModelAPI)
    idle: bool | None = None  # Prometheus: no request over the idle time (None: not asked, or no answer)
    activator_ready: bool = False  # the activator has ready endpoints the Services can point at
    prometheus: bool = False  # the operator has a Prometheus URL (idleness can be measured)


@dataclass(frozen=True)
class ZeroDecision:
    state: ZeroState
    via_activator: bool  # the Services point at the activator (no selector)
    hpa: bool  # the HPA is applied (False: deleted while at zero)
    replicas: int | None = None  # scale the Deployment to this; None: leave it (to the HPA)
    record: Patch = field(default_factory=dict)  # merged onto the Deployment's revision record
    notice: str | None = None  # why a minReplicas: 0 model is not taken to zero


WARM = ZeroDecision(state="warm", via_activator=False, hpa=True)


def unavailable(given: ZeroInput) -> str | None:
    """Why scale to zero is off for a model that asks for it, or None when it can happen."""
    if not given.autoscaling.scales_to_zero:
        return None
    missing = []
    if not given.activator_ready:
        missing.append(
            "no ready activator (install the chart with activator.enabled=true; it holds requests while a model is "
            "at zero)"
        )
    if not given.prometheus:
        missing.append("no Prometheus URL (the chart's prometheusUrl): the operator cannot tell when the model is idle")
    if not missing:
        return None
    return "scale to zero is off: " + "; ".join(missing) + ". The model keeps 1 replica."


def decide(given: ZeroInput) -> ZeroDecision:
    notice = unavailable(given)
    if given.parked_since is None:
        if notice is not None:
            return ZeroDecision(state="warm", via_activator=False, hpa=True, notice=notice)
        if given.autoscaling.scales_to_zero and given.idle is True:
            return ZeroDecision(
                state="zero",
                via_activator=True,
                hpa=False,
                replicas=0,
                record=patch(RevisionRecord(scaled_to_zero_at=rfc3339(given.now))),
            )
        return WARM
    # At zero or waking. Woken by a request, by minReplicas raised above 0, or because nothing would hold requests.
    wake = given.demand or not given.autoscaling.scales_to_zero or not given.activator_ready
    if given.replicas == 0 and not wake:
        return ZeroDecision(state="zero", via_activator=True, hpa=False, notice=notice)
    if given.replicas > 0 and given.ready > 0:
        # A replica serves: traffic goes straight to the pods again.
        return ZeroDecision(
            state="warm", via_activator=False, hpa=True, record=patch(clear=["scaled_to_zero_at"]), notice=notice
        )
    return ZeroDecision(
        state="waking",
        via_activator=given.activator_ready,
        hpa=True,
        replicas=max(given.autoscaling.min_replicas, 1) if given.replicas == 0 else None,
        record=patch(RevisionRecord(active_since=given.now)) if given.replicas == 0 else {},
        notice=notice,
    )
