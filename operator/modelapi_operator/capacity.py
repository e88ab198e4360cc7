"""Capacity problems of a revision, read from its Deployment and pods (pure).

A revision that cannot get capacity says so at once, with the cluster's own words and the field to change:

- ``Unschedulable``: pods have stayed ``PodScheduled=False`` (reason ``Unschedulable``) for longer than a grace
  (a scheduler often places a pod a moment after its first attempt failed); the message quotes the scheduler and
  names the spec field its complaint is about (resources, nodeSelector, tolerations, gpu); ``InsufficientStorage``
  when disk is all it lacks (``Insufficient ephemeral-storage``: no node has the model volume the pods request);
- ``WaitingForCapacity``: the same, but a cluster autoscaler announced a scale-up for those pods (its
  ``TriggeredScaleUp`` Event): capacity is being added, so this is progress, not a failure (``Degraded=False``);
- ``QuotaExceeded``: the ReplicaSet cannot create pods because a ResourceQuota or a LimitRange refuses them
  (``ReplicaFailure`` / ``FailedCreate``, copied onto the Deployment); ``PodCreationFailed`` for any other refusal;
- ``Evicted``: the kubelet evicted pods of the revision (node pressure, ephemeral storage) and the revision has fewer
  ready replicas than desired. Evicted pods stay listed until they are garbage-collected, so once replacements are
  ready the reason clears even though the evicted pods remain.

The precise causes of ``diagnose.diagnose_pods`` (image pulls, crash loops, the runtime's own reasons) win over
these; these win over the Deployment's progress deadline (the cause, not its consequence).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from modelapi_operator.diagnose import Failure, diagnose_deployment, diagnose_pods, redact
from modelapi_operator.reasons import (
    EVICTED,
    INSUFFICIENT_GPU,
    INSUFFICIENT_STORAGE,
    POD_CREATION_FAILED,
    QUOTA_EXCEEDED,
    UNSCHEDULABLE,
    WAITING_FOR_CAPACITY,
)

# Reasons that describe progress, not a failure: Progressing=True, Degraded=False.
PROGRESS_REASONS: Final = frozenset({WAITING_FOR_CAPACITY})
DEFAULT_GRACE_SECONDS: Final = 20.0
_MESSAGE_LIMIT = 600

Manifest = Mapping[str, Any]

# What a scheduler message is about -> the field of the ModelAPI to change.
_STORAGE_FIELD: Final = "spec.storage.cacheSize (each pod requests it plus 512Mi as ephemeral-storage)"
_FIELDS: Final = (
    ("nvidia.com/gpu", "spec.runtime.resources.gpu"),
    ("insufficient cpu", "spec.runtime.resources.cpu"),
    ("insufficient memory", "spec.runtime.resources.memory"),
    ("insufficient ephemeral-storage", _STORAGE_FIELD),
    ("node affinity/selector", "spec.runtime.nodeSelector (no node has those labels)"),
    ("untolerated taint", "spec.runtime.tolerations (the nodes' taints are not tolerated)"),
    ("had taint", "spec.runtime.tolerations (the nodes' taints are not tolerated)"),
    ("too many pods", "the replicas (spec.autoscaling): the nodes are full of pods"),
)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _name(pod: Manifest) -> str:
    return str((pod.get("metadata") or {}).get("name", "?"))


def _unschedulable_condition(pod: Manifest) -> Mapping[str, Any] | None:
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return dict(condition)
    return None


def unschedulable_for(pod: Manifest, now: datetime) -> float | None:
    """Seconds the pod has been unschedulable (by its PodScheduled condition's transition time), or None."""
    condition = _unschedulable_condition(pod)
    if condition is None:
        return None
    since = parse_time(condition.get("lastTransitionTime"))
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0


def unschedulable_pods(pods: Iterable[Manifest], now: datetime, grace: float) -> list[Manifest]:
    """Pods unschedulable for longer than the grace, by name (a stable order: the message does not flap)."""
    stuck = [pod for pod in pods if (since := unschedulable_for(pod, now)) is not None and since >= grace]
    return sorted(stuck, key=_name)


def grace_remaining(pods: Iterable[Manifest], now: datetime, grace: float) -> float | None:
    """Seconds until the first pod still within its grace passes it (when to look again), or None."""
    waits = [grace - since for pod in pods if (since := unschedulable_for(pod, now)) is not None and since < grace]
    return min(waits) if waits else None


def field_to_change(message: str) -> list[str]:
    lowered = message.lower()
    fields: list[str] = []
    for needle, field in _FIELDS:
        if needle in lowered and field not in fields:
            fields.append(field)
    return fields


def scheduling_failure(
    pods: Sequence[Manifest], now: datetime, grace: float, scaling_up: Collection[str] = ()
) -> Failure | None:
    """``WaitingForCapacity`` when an autoscaler announced a scale-up for any long-unschedulable pod, else
    ``Unschedulable`` with the scheduler's message and the fields it is about."""
    stuck = unschedulable_pods(pods, now, grace)
    if not stuck:
        return None
    first = stuck[0]
    condition = _unschedulable_condition(first) or {}
    said = redact(str(condition.get("message") or "no message from the scheduler"))[:_MESSAGE_LIMIT].rstrip(". ")
    count = f"{len(stuck)} pod{'s' if len(stuck) > 1 else ''}"
    if any(_name(pod) in scaling_up for pod in stuck):
        return Failure(
            WAITING_FOR_CAPACITY,
            f"{count} cannot be scheduled yet and the cluster autoscaler is adding nodes for them (TriggeredScaleUp); "
            f"the scheduler said for pod {_name(first)}: {said}",
        )
    fields = field_to_change(said)
    if fields == [_STORAGE_FIELD]:
        return Failure(
            INSUFFICIENT_STORAGE,
            f"{count} unschedulable for more than {grace:g} s: no node has the disk the pods request for the model "
            f"volume; the scheduler said for pod {_name(first)}: {said}. Lower {_STORAGE_FIELD} to what the artifact "
            "needs, or add nodes with more ephemeral storage. The pods wait unscheduled (never evicted half-way); a "
            "revision that serves keeps serving.",
        )
    change = (
        f" Change {' or '.join(fields)}." if fields else " Add capacity, or change the spec.runtime fields it names."
    )
    return Failure(
        UNSCHEDULABLE,
        f"{count} unschedulable for more than {grace:g} s; the scheduler said for pod {_name(first)}: {said}.{change}",
    )


def creation_failure(deployment: Manifest) -> Failure | None:
    """The Deployment's ``ReplicaFailure`` (the ReplicaSet's ``FailedCreate``) when a quota, a LimitRange or
    another admission refused the pods; a missing ServiceAccount is left to ``diagnose.diagnose_deployment``."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "ReplicaFailure" or condition.get("status") != "True":
            continue
        message = redact(str(condition.get("message") or ""))[:_MESSAGE_LIMIT].rstrip(". ")
        lowered = message.lower()
        if "serviceaccount" in lowered:
            return None
        if "quota" in lowered or "usage per container" in lowered or "usage per pod" in lowered:
            return Failure(
                QUOTA_EXCEEDED,
                f"pods cannot be created: {message}. Lower spec.runtime.resources or the replicas "
                "(spec.autoscaling), or ask for a larger ResourceQuota / LimitRange in the namespace.",
            )
        return Failure(POD_CREATION_FAILED, f"pods cannot be created: {message}")
    return None


def _evicted(pod: Manifest) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == "Evicted"


def eviction_failure(pods: Sequence[Manifest], *, desired: int, ready: int) -> Failure | None:
    """``Evicted`` while evicted pods exist and the revision has fewer ready replicas than desired."""
    evicted = sorted((pod for pod in pods if _evicted(pod)), key=_name)
    if not evicted or ready >= desired:
        return None
    said = redact(str((evicted[0].get("status") or {}).get("message") or "no message"))[:_MESSAGE_LIMIT].rstrip(". ")
    return Failure(
        EVICTED,
        f"{len(evicted)} pod{'s' if len(evicted) > 1 else ''} evicted by the kubelet; {ready}/{desired} replicas "
        f"ready (the others keep serving). Pod {_name(evicted[0])}: {said}. Raise spec.runtime.resources.memory, "
        "or free the node's disk or memory.",
    )


def _counts(deployment: Manifest | None) -> tuple[int, int]:
    if deployment is None:
        return 0, 0
    desired = (deployment.get("spec") or {}).get("replicas")
    ready = (deployment.get("status") or {}).get("readyReplicas") or 0
    return (int(desired) if desired is not None else 1), int(ready)


def diagnose_revision(
    deployment: Manifest | None,
    pods: Sequence[Manifest],
    *,
    now: datetime,
    grace: float = DEFAULT_GRACE_SECONDS,
    scaling_up: Collection[str] = (),
) -> Failure | None:
    """The cause of a revision's trouble: the pods' precise causes, then capacity, then the Deployment's own."""
    precise = diagnose_pods(pods)
    if precise is not None and not (precise.reason == INSUFFICIENT_GPU and scaling_up):
        return precise
    if deployment is not None:
        created = creation_failure(deployment)
        if created is not None:
            return created
    scheduling = scheduling_failure(pods, now, grace, scaling_up)
    if scheduling is not None and (precise is None or scheduling.reason == WAITING_FOR_CAPACITY):
        return scheduling
    if precise is not None:
        return precise
    desired, ready = _counts(deployment)
    evicted = eviction_failure(pods, desired=desired, ready=ready)
    if evicted is not None:
        return evicted
    return diagnose_deployment(deployment) if deployment is not None else None
