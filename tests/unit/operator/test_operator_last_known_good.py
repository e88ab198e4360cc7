"""The last-known-good revision after either strategy: kept on promotion (only the newest), named in status, the
target of a rollback that creates no revision, and kept warm with rollout.lastKnownGoodReplicas without taking
traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from plan_given import plan_for

from modelapi_operator import names
from modelapi_operator.api import ModelAPISpec, ModelAPIStatus
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.plan import Plan
from modelapi_operator.revision_record import (
    LAST_SERVED_ANNOTATION,
    ROLE_ANNOTATION,
    Aborted,
    RevisionRecord,
    Role,
)
from modelapi_operator.status import Observation, RevisionView, compute_status
from modelapi_operator.timestamps import rfc3339

OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="cpu:1", gpu="gpu:1")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _spec(version: int, *, warm: int = 0, strategy: str = "RollingUpdate") -> ModelAPISpec:
    rollout: dict[str, Any] = {"strategy": strategy, "lastKnownGoodReplicas": warm}
    if strategy == "Canary":
        rollout["canary"] = {"steps": [{"weight": 50, "pauseSeconds": 60}]}
    return ModelAPISpec.model_validate(
        {
            "model": {"uri": f"s3://models/iris/{version}/model.onnx"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
            "rollout": rollout,
        }
    )


def _name(version: int) -> str:
    return names.revision_name(OWNER.name, compute_revision(_spec(version), OWNER, IMAGES))


def _deployment(version: int, record: RevisionRecord, replicas: int, ready: int, age: int) -> dict[str, Any]:
    """Revision ``version`` as the API server returns it; ``age`` in hours orders creation (older first)."""
    spec = _spec(version)
    manifest = build_deployment(spec, OWNER, compute_revision(spec, OWNER, IMAGES), IMAGES)
    manifest["metadata"]["annotations"] = {**manifest["metadata"]["annotations"], **record.encode()}
    manifest["metadata"]["creationTimestamp"] = rfc3339(T0 - timedelta(hours=age))
    manifest["spec"] = {"replicas": replicas, **manifest["spec"]}
    manifest["status"] = {"readyReplicas": ready}
    return manifest


def _role(role: Role) -> RevisionRecord:
    return RevisionRecord(role=role)


def _plan(spec: ModelAPISpec, deployments: list[dict[str, Any]], **extra: Any) -> Plan:
    return plan_for(spec, deployments, owner=OWNER, images=IMAGES, now=T0, **extra)


def _main_selector(plan: Plan) -> dict[str, str]:
    main = next(m for m in plan.apply if m["kind"] == "Service" and m["metadata"]["name"] == OWNER.name)
    return dict(main["spec"]["selector"])


def _apply(plan: Plan, deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Deployments after a plan, roughly as the API server would hold them (kept ones only, roles patched)."""
    after = []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        if name not in plan.keep_deployments:
            continue
        annotations = {**deployment["metadata"]["annotations"]}
        for key, value in plan.annotate.get(name, {}).items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        applied = next((m for m in plan.apply if m["kind"] == "Deployment" and m["metadata"]["name"] == name), None)
        if applied is not None:
            annotations[ROLE_ANNOTATION] = applied["metadata"]["annotations"][ROLE_ANNOTATION]
        replicas = plan.scale.get(name, deployment["spec"]["replicas"])
        after.append(
            {**deployment, "metadata": {**deployment["metadata"], "annotations": annotations}}
            | {"spec": {**deployment["spec"], "replicas": replicas}}
        )
    return after


def test_a_rolling_update_keeps_the_old_stable_and_deletes_the_older_last_known_good() -> None:
    deployments = [
        _deployment(1, _role("lastKnownGood"), 0, 0, age=48),
        _deployment(2, _role("stable"), 0, 0, age=24),
        _deployment(3, RevisionRecord(role="next", rollout_replicas=2), 2, 2, age=1),
    ]
    plan = _plan(_spec(3), deployments)
    assert plan.keep_deployments == {_name(2), _name(3)}, "only the newest last-known-good revision is kept"
    assert plan.annotate[_name(2)] == {ROLE_ANNOTATION: "lastKnownGood", LAST_SERVED_ANNOTATION: rfc3339(T0)}
    assert _name(2) not in plan.scale, "already at zero"


def test_a_rolling_update_in_progress_keeps_the_last_known_good_one() -> None:
    deployments = [
        _deployment(1, _role("lastKnownGood"), 0, 0, age=48),
        _deployment(2, _role("stable"), 2, 2, age=24),
        _deployment(3, RevisionRecord(role="next", rollout_replicas=2), 1, 0, age=1),
    ]
    plan = _plan(_spec(3), deployments)
    assert plan.keep_deployments == {_name(1), _name(2), _name(3)}


def test_a_rollback_after_a_rolling_update_restores_the_old_revision_without_a_new_one() -> None:
    deployments = [_deployment(1, _role("lastKnownGood"), 0, 0, age=24), _deployment(2, _role("stable"), 2, 2, age=1)]
    rolled = _plan(_spec(2), deployments, rollback_requested=True)
    assert not rolled.create
    assert rolled.stable_revision == compute_revision(_spec(1), OWNER, IMAGES)
    assert rolled.scale == {_name(1): 2}
    assert rolled.target_failure is not None
    assert rolled.target_failure.reason == "RolledBack"

    # Next pass, the restored revision still starting: the rolled-back one keeps its pods (the <name> Service
    # selects every revision and still reaches them); once the restored one is ready it goes to zero.
    after = _apply(rolled, deployments)
    starting = _plan(_spec(2), after)
    assert not starting.create
    assert starting.stable_revision == compute_revision(_spec(1), OWNER, IMAGES)
    assert _name(2) not in starting.scale
    for item in after:
        if item["metadata"]["name"] == _name(1):
            item["status"] = {"readyReplicas": 2}
    restored = _plan(_spec(2), after)
    assert restored.scale == {_name(2): 0}
    assert not restored.create
    assert restored.target_failure is not None
    assert restored.target_failure.reason == "RolledBack", "stays rolled back until the spec changes"


def test_a_second_rollback_has_nothing_to_return_to() -> None:
    deployments = [
        _deployment(1, _role("stable"), 2, 2, age=24),
        _deployment(2, RevisionRecord(role="canary", aborted=Aborted("RolledBack", "rolled back on request")), 0, 0, 1),
    ]
    plan = _plan(_spec(2), deployments, rollback_requested=True)
    assert [event.reason for event in plan.events] == ["RollbackUnavailable"]
    assert "rolling update" in plan.events[0].message


def test_a_spec_set_back_to_the_last_known_good_revision_rolls_out_its_deployment() -> None:
    deployments = [_deployment(1, _role("lastKnownGood"), 0, 0, age=24), _deployment(2, _role("stable"), 2, 2, age=1)]
    plan = _plan(_spec(1), deployments)
    assert not plan.create, "its Deployment is reused"
    roles = {
        m["metadata"]["name"]: m["metadata"]["annotations"][ROLE_ANNOTATION]
        for m in plan.apply
        if m["kind"] == "Deployment"
    }
    assert roles[_name(1)] == "next"


def test_warm_replicas_take_no_traffic_while_one_revision_serves() -> None:
    deployments = [_deployment(1, _role("lastKnownGood"), 0, 0, age=24), _deployment(2, _role("stable"), 2, 2, age=1)]
    cold = _plan(_spec(2), deployments)
    assert names.LABEL_REVISION not in _main_selector(cold), "no warm replica: <name> selects every revision"
    assert cold.scale == {}
    warm = _plan(_spec(2, warm=1), deployments)
    assert warm.scale == {_name(1): 1}
    assert _main_selector(warm)[names.LABEL_REVISION] == compute_revision(_spec(2), OWNER, IMAGES)


def test_warm_replicas_go_during_a_rollout_and_come_back_for_the_new_last_known_good() -> None:
    deployments = [
        _deployment(1, _role("lastKnownGood"), 1, 1, age=48),
        _deployment(2, _role("stable"), 2, 2, age=24),
        _deployment(3, RevisionRecord(role="next", rollout_replicas=2), 1, 0, age=1),
    ]
    rolling = _plan(_spec(3, warm=1), deployments)
    assert rolling.scale[_name(1)] == 0
    assert names.LABEL_REVISION not in _main_selector(rolling)
    deployments[2]["spec"]["replicas"], deployments[2]["status"] = 2, {"readyReplicas": 2}
    deployments[1]["spec"]["replicas"], deployments[1]["status"] = 0, {"readyReplicas": 0}
    promoted = _plan(_spec(3, warm=1), deployments)
    assert promoted.scale == {_name(2): 1}
    assert _name(1) not in promoted.keep_deployments
    assert _main_selector(promoted)[names.LABEL_REVISION] == compute_revision(_spec(3), OWNER, IMAGES)


def test_a_rollback_to_warm_replicas_serves_from_them_at_once() -> None:
    deployments = [_deployment(1, _role("lastKnownGood"), 1, 1, age=24), _deployment(2, _role("stable"), 2, 2, age=1)]
    plan = _plan(_spec(2, warm=1), deployments, rollback_requested=True)
    assert plan.scale == {_name(1): 2}
    assert _main_selector(plan)[names.LABEL_REVISION] == compute_revision(_spec(1), OWNER, IMAGES)


def test_a_canary_keeps_the_last_known_good_one_at_zero_while_it_runs() -> None:
    deployments = [
        _deployment(1, _role("lastKnownGood"), 1, 1, age=48),
        _deployment(2, _role("stable"), 2, 2, age=24),
    ]
    plan = _plan(_spec(3, warm=1, strategy="Canary"), deployments)
    assert plan.scale[_name(1)] == 0
    assert names.LABEL_REVISION not in _main_selector(plan), "a replica-ratio canary needs every revision"


def _view(name: str, role: Role, desired: int, ready: int, last_served: str | None = None) -> RevisionView:
    return RevisionView(
        name=name,
        revision=name.rsplit("-", 1)[1],
        role=role,
        model_uri=f"s3://models/{name}/model.onnx",
        sha256=None,
        desired=desired,
        ready=ready,
        last_served=last_served,
    )


def test_status_names_the_last_known_good_revision() -> None:
    observation = Observation(
        generation=1,
        desired_revision="bbb",
        invalid=None,
        revisions=[_view("iris-bbb", "stable", 2, 2), _view("iris-aaa", "lastKnownGood", 1, 1, "2026-11-30T11:00:00Z")],
        url="http://iris.ml.svc.cluster.local",
        previous=ModelAPIStatus(),
        now="2026-11-30T12:00:00Z",
    )
    status, _ = compute_status(observation)
    assert status.last_known_good is not None
    assert status.last_known_good.model_dump(by_alias=True) == {
        "revision": "iris-aaa",
        "modelUri": "s3://models/iris-aaa/model.onnx",
        "sha256": None,
        "lastServed": "2026-11-30T11:00:00Z",
        "replicas": 1,
        "readyReplicas": 1,
    }
    assert status.replicas == 2, "warm replicas are not serving replicas"
    alone = Observation(**{**observation.__dict__, "revisions": [_view("iris-bbb", "stable", 2, 2)]})
    assert compute_status(alone)[0].last_known_good is None


def test_a_rollback_during_a_rolling_update_rolls_that_rollout_back_and_never_restarts_it() -> None:
    deployments = [
        _deployment(1, _role("lastKnownGood"), 0, 0, age=48),
        _deployment(2, _role("stable"), 1, 1, age=24),
        _deployment(3, RevisionRecord(role="next", rollout_replicas=2), 2, 1, age=1),
    ]
    stopped = _plan(_spec(3), deployments, rollback_requested=True)
    assert stopped.clear_rollback_request
    assert stopped.stable_revision == compute_revision(_spec(2), OWNER, IMAGES), "what served before the change"
    assert stopped.scale == {_name(2): 2}, "back to the rollout's full size"
    assert not stopped.create
    assert stopped.keep_deployments == {_name(1), _name(2), _name(3)}, "the last-known-good one is untouched"
    assert stopped.target_failure is not None
    assert stopped.target_failure.reason == "RolledBack"

    after = _apply(stopped, deployments)
    for item in after:
        if item["metadata"]["name"] == _name(2):
            item["status"] = {"readyReplicas": 2}
    settled = _plan(_spec(3), after)
    assert settled.scale == {_name(3): 0}, "its pods go once the stable one is whole again"
    assert not settled.create
    assert settled.stable_revision == compute_revision(_spec(2), OWNER, IMAGES), "the same spec is not rolled again"


def test_a_rollback_during_a_canary_rolls_the_canary_back_not_the_stable() -> None:
    deployments = [_deployment(2, _role("stable"), 2, 2, age=24), _deployment(3, _role("canary"), 1, 1, age=1)]
    spec = _spec(3, strategy="Canary")
    stopped = _plan(spec, deployments, rollback_requested=True)
    assert stopped.stable_revision == compute_revision(_spec(2), OWNER, IMAGES)
    assert stopped.canary is None
    after = _apply(stopped, deployments)
    settled = _plan(spec, after)
    assert settled.canary is None, "the canary does not start over"
    assert settled.scale == {_name(3): 0}
