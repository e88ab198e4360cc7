"""Capacity policies (capacity.py) on pod and Deployment status shaped like the API server's, and how status shows
them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelapi_operator import capacity
from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.diagnose import Failure
from modelapi_operator.status import Observation, RevisionView, compute_status

NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)
NODE_SELECTOR = (
    "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are "
    "available: 2 Preemption is not helpful for scheduling."
)
CPU = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims."
QUOTA = (
    'pods "iris-abc-x1" is forbidden: exceeded quota: small, requested: requests.cpu=1, used: requests.cpu=0, '
    "limited: requests.cpu=500m"
)


def _pending(name: str, message: str, seconds_ago: float) -> dict[str, Any]:
    since = (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastTransitionTime": since,
                }
            ],
        },
    }


def _evicted(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi.",
        },
    }


def _deployment(replicas: int = 2, ready: int = 0, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-abc"},
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, "conditions": conditions or []},
    }


def _replica_failure(message: str) -> dict[str, Any]:
    return {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}


def test_within_the_grace_nothing_is_reported_and_the_recheck_is_due_when_it_ends() -> None:
    pods = [_pending("iris-abc-1", NODE_SELECTOR, 5), _pending("iris-abc-2", NODE_SELECTOR, 12)]
    assert capacity.diagnose_revision(_deployment(), pods, now=NOW, grace=20) is None
    assert capacity.grace_remaining(pods, NOW, 20) == pytest.approx(8)


def test_past_the_grace_unschedulable_quotes_the_scheduler_and_names_the_field() -> None:
    pods = [_pending("iris-abc-2", NODE_SELECTOR, 30), _pending("iris-abc-1", NODE_SELECTOR, 25)]
    failure = capacity.diagnose_revision(_deployment(), pods, now=NOW, grace=20)
    assert failure is not None
    assert failure.reason == "Unschedulable"
    assert "2 node(s) didn't match Pod's node affinity/selector" in failure.message
    assert "spec.runtime.nodeSelector" in failure.message
    assert "pod iris-abc-1" in failure.message  # the first by name: the message does not depend on list order
    assert capacity.grace_remaining(pods, NOW, 20) is None


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (CPU, "spec.runtime.resources.cpu"),
        ("0/1 nodes are available: 1 Insufficient memory.", "spec.runtime.resources.memory"),
        ("0/2 nodes are available: 2 node(s) had untolerated taint {dedicated: ml}.", "spec.runtime.tolerations"),
    ],
)
def test_the_field_to_change_follows_the_scheduler(message: str, field: str) -> None:
    failure = capacity.scheduling_failure([_pending("iris-abc-1", message, 60)], NOW, 20)
    assert failure is not None
    assert failure.reason == "Unschedulable"
    assert field in failure.message


def test_a_node_without_the_disk_is_insufficient_storage_naming_the_cache_size() -> None:
    message = "0/2 nodes are available: 2 Insufficient ephemeral-storage. preemption: 0/2 nodes are available."
    failure = capacity.scheduling_failure([_pending("iris-abc-1", message, 60)], NOW, 20)
    assert failure is not None
    assert failure.reason == "InsufficientStorage"
    assert "Insufficient ephemeral-storage" in failure.message
    assert "spec.storage.cacheSize" in failure.message
    both = "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient ephemeral-storage."
    mixed = capacity.scheduling_failure([_pending("iris-abc-1", both, 60)], NOW, 20)
    assert mixed is not None
    assert mixed.reason == "Unschedulable", "more than disk is missing: the generic reason names every field"


def test_a_triggered_scale_up_is_waiting_for_capacity_not_a_failure() -> None:
    pods = [_pending("iris-abc-1", CPU, 60), _pending("iris-abc-2", CPU, 60)]
    failure = capacity.diagnose_revision(_deployment(), pods, now=NOW, grace=20, scaling_up={"iris-abc-2"})
    assert failure is not None
    assert failure.reason == "WaitingForCapacity"
    status, events = compute_status(_observe(failure))
    conditions = {c.type: (c.status, c.reason) for c in status.conditions}
    assert conditions == {
        "Ready": ("False", "WaitingForCapacity"),
        "Progressing": ("True", "WaitingForCapacity"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.last_failure is None
    assert not [event for event in events if event.type == "Warning"]


def test_gpu_pods_keep_their_reason_and_the_gpu_field() -> None:
    gpu = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    failure = capacity.diagnose_revision(_deployment(), [_pending("iris-abc-1", gpu, 60)], now=NOW)
    assert failure is not None
    assert failure.reason == "InsufficientGPU"


def test_quota_refusal_is_quota_exceeded_with_the_quota_message() -> None:
    failure = capacity.diagnose_revision(_deployment(conditions=[_replica_failure(QUOTA)]), [], now=NOW)
    assert failure is not None
    assert failure.reason == "QuotaExceeded"
    assert "exceeded quota: small" in failure.message
    assert "spec.runtime.resources" in failure.message


def test_limit_range_refusal_is_quota_exceeded_and_other_refusals_pod_creation_failed() -> None:
    limit = 'pods "iris-abc-x" is forbidden: maximum cpu usage per Container is 500m, but limit is 1'
    failure = capacity.creation_failure(_deployment(conditions=[_replica_failure(limit)]))
    assert failure is not None
    assert failure.reason == "QuotaExceeded"
    other = 'pods "iris-abc-x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true'
    failure = capacity.creation_failure(_deployment(conditions=[_replica_failure(other)]))
    assert failure is not None
    assert failure.reason == "PodCreationFailed"


def test_a_missing_service_account_keeps_its_own_reason() -> None:
    message = (
        'pods "iris-abc-x" is forbidden: error looking up service account ml/reader: serviceaccount "reader" not found'
    )
    failure = capacity.diagnose_revision(_deployment(conditions=[_replica_failure(message)]), [], now=NOW)
    assert failure is not None
    assert failure.reason == "ServiceAccountNotFound"


def test_evicted_only_while_the_revision_is_short_of_ready_replicas() -> None:
    pods = [_evicted("iris-abc-9")]
    failure = capacity.diagnose_revision(_deployment(replicas=2, ready=1), pods, now=NOW)
    assert failure is not None
    assert failure.reason == "Evicted"
    assert "ephemeral-storage" in failure.message
    assert "1/2 replicas ready" in failure.message
    # the replacement is ready: the evicted pod lingers until garbage-collected, but nothing is wrong any more
    assert capacity.diagnose_revision(_deployment(replicas=2, ready=2), pods, now=NOW) is None


def test_secret_looking_text_in_a_message_is_redacted() -> None:
    leaky = CPU + " password=hunter2"
    failure = capacity.scheduling_failure([_pending("iris-abc-1", leaky, 60)], NOW, 20)
    assert failure is not None
    assert "hunter2" not in failure.message


def test_an_unchanged_cause_keeps_its_reason_and_posts_no_second_event() -> None:
    pods = [_pending("iris-abc-1", NODE_SELECTOR, 30)]
    first = capacity.diagnose_revision(_deployment(), pods, now=NOW)
    later = capacity.diagnose_revision(_deployment(), pods, now=NOW + timedelta(minutes=5))
    assert first == later
    status, events = compute_status(_observe(first))
    assert [(e.type, e.reason) for e in events] == [("Warning", "Unschedulable")]
    assert status.last_failure is not None
    assert status.last_failure.reason == "Unschedulable"
    _, again = compute_status(_observe(later, previous=status))
    assert again == []
    # fixed: Degraded returns to AsExpected with an Event that says so
    fixed, events = compute_status(_observe(None, previous=status))
    assert ("Normal", "AsExpected") in [(e.type, e.reason) for e in events]
    assert {c.type: c.reason for c in fixed.conditions}["Degraded"] == "AsExpected"


def _observe(failure: Failure | None, previous: ModelAPIStatus | None = None) -> Observation:
    view = RevisionView(
        name="iris-abc",
        revision="abc",
        role="stable",
        model_uri="s3://models/iris/1/model.onnx",
        sha256=None,
        desired=2,
        ready=0,
        failure=failure,
    )
    return Observation(
        generation=1,
        desired_revision="abc",
        invalid=None,
        revisions=[view],
        url="http://iris.ml.svc.cluster.local",
        previous=previous or ModelAPIStatus(),
        now="2026-11-30T09:00:00Z",
    )
