"""Conditions, transitions and Events computed from observations (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import pytest

from modelapi_operator.api import ModelAPIStatus
from modelapi_operator.diagnose import Failure
from modelapi_operator.reconcile import is_subset
from modelapi_operator.status import Observation, RevisionView, compute_status

T0, T1 = "2026-11-27T10:00:00Z", "2026-11-27T10:05:00Z"


def _view(
    revision: str, role: str = "stable", desired: int = 2, ready: int = 2, failure: Failure | None = None
) -> RevisionView:
    return RevisionView(
        name=f"iris-{revision}",
        revision=revision,
        role=role,  # type: ignore[arg-type]
        model_uri=f"s3://models/iris/{revision}/model.onnx",
        sha256=None,
        desired=desired,
        ready=ready,
        failure=failure,
    )


def _observe(
    *views: RevisionView,
    desired: str | None = "a",
    previous: ModelAPIStatus | None = None,
    invalid: Failure | None = None,
    generation: int = 3,
    now: str = T0,
) -> Observation:
    return Observation(
        generation=generation,
        desired_revision=desired,
        invalid=invalid,
        revisions=list(views),
        url="http://iris.ml.svc.cluster.local",
        previous=previous or ModelAPIStatus(),
        now=now,
    )


def _conditions(status: ModelAPIStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_serving_when_the_current_revision_is_stable_and_fully_ready() -> None:
    status, events = compute_status(_observe(_view("a")))
    assert _conditions(status) == {
        "Ready": ("True", "Serving"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.observed_generation == 3
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert (status.replicas, status.ready_replicas) == (2, 2)
    assert status.revisions[0].weight == 100
    assert events == [], "a condition's first value is not a transition"


def test_crash_looping_is_never_ready() -> None:
    crash = Failure("CrashLooping", "pod keeps crashing")
    status, events = compute_status(_observe(_view("a", ready=1, failure=crash)))
    assert _conditions(status)["Ready"] == ("False", "CrashLooping")
    assert _conditions(status)["Degraded"] == ("True", "CrashLooping")
    assert status.last_failure is not None
    assert status.last_failure.revision == "iris-a"
    assert any(e.type == "Warning" and e.reason == "CrashLooping" for e in events)


def test_rollout_in_progress_and_a_failing_new_revision_leaves_the_old_one_serving() -> None:
    stable = _view("a")
    rolling = _view("b", role="next", desired=2, ready=0)
    status, _ = compute_status(_observe(rolling, stable, desired="b"))
    assert _conditions(status)["Ready"] == ("False", "RollingOut")
    assert _conditions(status)["Progressing"] == ("True", "RollingOut")
    assert {r.name: (r.role, r.weight) for r in status.revisions} == {"iris-b": ("next", 0), "iris-a": ("stable", 100)}

    failing = _view("b", role="next", desired=2, ready=0, failure=Failure("ChecksumMismatch", "sha256 differs"))
    status, _ = compute_status(_observe(failing, stable, desired="b", previous=status, now=T1))
    assert _conditions(status)["Degraded"] == ("True", "ChecksumMismatch")
    assert status.last_failure is not None
    assert status.last_failure.revision == "iris-b"
    assert status.ready_replicas == 2, "the stable revision keeps serving"


def test_transition_time_moves_only_when_the_status_changes_and_events_only_on_transitions() -> None:
    first, _ = compute_status(_observe(_view("a")))
    again, events = compute_status(_observe(_view("a"), previous=first, now=T1))
    assert events == []
    assert [c.last_transition_time for c in again.conditions] == [T0, T0, T0]
    scaled, events = compute_status(_observe(_view("a", desired=3, ready=2), previous=again, now=T1))
    ready = next(c for c in scaled.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.last_transition_time) == ("False", "ReplicasNotReady", T1)
    assert any(e.type == "Warning" and e.reason == "ReplicasNotReady" for e in events)


def test_invalid_spec_one_event_and_no_more() -> None:
    invalid = Failure("InvalidSpec", "spec.autoscaling.minReplicas: scale to zero is not supported yet")
    status, events = compute_status(_observe(_view("a"), desired=None, invalid=invalid, generation=4))
    assert _conditions(status)["Ready"] == ("False", "InvalidSpec")
    assert [e.reason for e in events if e.type == "Warning"] == ["InvalidSpec"]
    _, again = compute_status(
        _observe(_view("a"), desired=None, invalid=invalid, generation=4, previous=status, now=T1)
    )
    assert again == []


def test_drift_check() -> None:
    desired = {"spec": {"ports": [{"port": 80}], "selector": {"a": "1"}}}
    observed = {"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"a": "1"}, "clusterIP": "10.0.0.1"}}
    assert is_subset(desired, observed)
    assert not is_subset(desired, {"spec": {"ports": [{"port": 81}], "selector": {"a": "1"}}})
    assert not is_subset(desired, {"spec": {"ports": [], "selector": {"a": "1"}}})
    assert not is_subset(desired, {"spec": {"ports": [{"port": 80}]}})


def test_selector_with_an_extra_label_is_fixed_by_removing_it() -> None:
    from modelapi_operator.reconcile import exact_map_fix

    desired = {"spec": {"selector": {"serving.modelapi.io/name": "iris"}}}
    hijacked = {"spec": {"selector": {"serving.modelapi.io/name": "iris", "app": "x"}}}
    assert exact_map_fix(desired, hijacked) == {"spec": {"selector": {"app": None}}}
    assert exact_map_fix(desired, desired) is None
    deployment = {"spec": {"selector": {"matchLabels": {"a": "1"}}}}
    assert exact_map_fix(deployment, {"spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}}}}) == {
        "spec": {"selector": {"matchLabels": {"b": None}}}
    }


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("invalid", "PolicyViolation"),
        ("forbidden", "PermissionDenied"),
        ("conflict", "NameConflict"),
        ("missing_reference", "ServiceAccountNotFound"),
    ],
)
def test_a_failure_of_the_modelapi_itself_wins_over_a_serving_revision(field: str, reason: str) -> None:
    """Each kind of failure of the ModelAPI itself has its own field; each stops everything the same way: Ready,
    Progressing and Degraded carry it, and lastFailure names no revision."""
    failure = Failure(reason, f"what went wrong: {field}")
    observation = replace(_observe(_view("a")), **cast(dict[str, Any], {field: failure}))
    assert observation.modelapi_failure == failure
    status, events = compute_status(observation)
    assert _conditions(status) == {
        "Ready": ("False", reason),
        "Progressing": ("False", reason),
        "Degraded": ("True", reason),
    }
    assert status.last_failure is not None
    assert (status.last_failure.reason, status.last_failure.revision) == (reason, None)
    assert [e.reason for e in events if e.type == "Warning"] == [reason]


def test_prediction_log_condition_only_when_it_is_checked() -> None:
    status, _ = compute_status(_observe(_view("a")))
    assert "PredictionLog" not in _conditions(status)  # no spec.monitoring.predictionLog, or no Prometheus
    status, events = compute_status(replace(_observe(_view("a")), prediction_log_failures=[]))
    assert _conditions(status)["PredictionLog"] == ("True", "PredictionLogWriting")
    assert events == []


def test_a_failing_prediction_log_is_a_warning_that_leaves_serving_alone() -> None:
    writing, _ = compute_status(replace(_observe(_view("a")), prediction_log_failures=[]))
    failing = replace(_observe(_view("a"), previous=writing), prediction_log_failures=[("a", "NoSuchBucket")])
    status, events = compute_status(failing)
    conditions = _conditions(status)
    assert conditions["PredictionLog"] == ("False", "PredictionLogFailing")
    assert conditions["Ready"] == ("True", "Serving")
    assert conditions["Degraded"] == ("False", "AsExpected")
    message = next(c.message for c in status.conditions if c.type == "PredictionLog")
    assert "revision a: NoSuchBucket" in message
    assert "s3Prefix" in message
    assert [(e.type, e.reason) for e in events] == [("Warning", "PredictionLogFailing")]
    fixed, events = compute_status(replace(_observe(_view("a"), previous=status), prediction_log_failures=[]))
    assert _conditions(fixed)["PredictionLog"] == ("True", "PredictionLogWriting")
    assert [(e.type, e.reason) for e in events] == [("Normal", "PredictionLogWriting")]
