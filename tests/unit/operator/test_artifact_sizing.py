"""The model volume sized from the artifact when its size is known: a later revision of an artifact a revision already
loaded (same sha256) gets its size plus headroom as the volume's sizeLimit and the ephemeral-storage request, fixed
when its Deployment is created; an unknown size keeps spec.storage.cacheSize; the revision hash never depends on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelapi_operator.api import ColdStart, ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.builders.deployment import MiB, model_volume_bytes
from modelapi_operator.plan import PlanInput, known_artifact_bytes, plan_children
from modelapi_operator.revision_record import ARTIFACT_BYTES_ANNOTATION, RevisionRecord

OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="cpu:1", gpu="gpu:1", max_artifact_size="50Gi")
SHA = "a" * 64
GiB = 1024 * MiB
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _spec(*, sha256: str | None = SHA, threads: int = 1, handler: str | None = None) -> ModelAPISpec:
    model: dict[str, Any] = {"uri": "s3://models/big/1/model.onnx"}
    if sha256:
        model["sha256"] = sha256
    if handler:
        model["handler"] = handler
    return ModelAPISpec.model_validate(
        {"model": model, "storage": {"cacheSize": "20Gi"}, "runtime": {"threads": threads}}
    )


def _pod(manifest: dict[str, Any]) -> tuple[str, str, str]:
    """(the model volume's sizeLimit, the ephemeral-storage request, MODELAPI_MAX_ARTIFACT_BYTES)."""
    pod = manifest["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")["emptyDir"]["sizeLimit"]
    container = pod["containers"][0]
    bound = next(e["value"] for e in container["env"] if e["name"] == "MODELAPI_MAX_ARTIFACT_BYTES")
    return volume, container["resources"]["requests"]["ephemeral-storage"], bound


def test_the_volume_is_the_artifact_plus_headroom_never_more_than_the_cache_size() -> None:
    spec = _spec()
    assert model_volume_bytes(spec) == 20 * GiB, "unknown: spec.storage.cacheSize"
    assert model_volume_bytes(spec, 4 * GiB) == 4 * GiB + 410 * MiB, "a tenth more, in whole MiB"
    assert model_volume_bytes(spec, 10 * MiB) == 74 * MiB, "at least 64 MiB more"
    assert model_volume_bytes(spec, 19 * GiB) == 20 * GiB, "never above cacheSize (the bound the spec sets)"


def test_a_known_size_sizes_the_template_but_not_the_revision() -> None:
    spec = _spec()
    revision = compute_revision(spec, OWNER, IMAGES)
    assert _pod(build_deployment(spec, OWNER, revision, IMAGES)) == ("20Gi", "20992Mi", str(20 * GiB))
    sized = build_deployment(spec, OWNER, revision, IMAGES, artifact_bytes=4 * GiB)
    assert _pod(sized) == ("4506Mi", "5018Mi", str(4506 * MiB))


def _measured(spec: ModelAPISpec, size: int = 4 * GiB) -> tuple[ColdStart, list[dict[str, Any]]]:
    revision = compute_revision(spec, OWNER, IMAGES)
    serving = build_deployment(spec, OWNER, revision, IMAGES)
    serving["metadata"]["annotations"] |= RevisionRecord(role="stable").encode()
    serving["metadata"]["creationTimestamp"] = "2026-11-29T12:00:00Z"
    serving["spec"] = {"replicas": 1, **serving["spec"]}
    serving["status"] = {"readyReplicas": 1}
    return ColdStart(revision=revision, artifact_bytes=size), [serving]


def test_the_size_is_known_only_for_the_same_content() -> None:
    cold_start, deployments = _measured(_spec())
    assert known_artifact_bytes(_spec(threads=2), cold_start, deployments) == 4 * GiB
    assert known_artifact_bytes(_spec(threads=2, sha256="b" * 64), cold_start, deployments) is None, "other content"
    assert known_artifact_bytes(_spec(threads=2, sha256=None), cold_start, deployments) is None, "no sha256"
    handler = "s3://models/big/1/handler.py"
    assert known_artifact_bytes(_spec(threads=2, handler=handler), cold_start, deployments) is None
    assert known_artifact_bytes(_spec(threads=2), None, deployments) is None, "nothing measured"
    assert known_artifact_bytes(_spec(threads=2), ColdStart(revision="gone", artifact_bytes=1), deployments) is None


def test_a_new_revision_of_a_measured_artifact_is_created_sized_and_stays_so() -> None:
    cold_start, deployments = _measured(_spec())
    spec = _spec(threads=2)  # a runtime change: a new revision of the same artifact
    given = PlanInput(
        spec=spec,
        owner=OWNER,
        revision=compute_revision(spec, OWNER, IMAGES),
        images=IMAGES,
        deployments=deployments,
        now=NOW,
        gateway_api_installed=False,
        artifact_bytes=known_artifact_bytes(spec, cold_start, deployments),
    )
    plan = plan_children(given)
    (created,) = plan.create
    assert created["metadata"]["annotations"][ARTIFACT_BYTES_ANNOTATION] == str(4 * GiB)
    assert _pod(created)[:2] == ("4506Mi", "5018Mi")
    applied = next(m for m in plan.apply if m["metadata"]["name"] == created["metadata"]["name"])
    assert _pod(applied) == _pod(created), "create and apply agree"

    # Later passes read the size from its own record, whatever is known now: its template never changes.
    observed = {**created, "status": {"readyReplicas": 0}}
    later = plan_children(PlanInput(**{**given.__dict__, "deployments": [*deployments, observed], "artifact_bytes": 1}))
    again = next(m for m in later.apply if m["metadata"]["name"] == created["metadata"]["name"])
    assert _pod(again) == _pod(created)
    assert compute_revision(spec, OWNER, IMAGES) == given.revision, "the hash is the spec's, not the size's"
