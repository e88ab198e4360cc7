"""Properties of the builders over generated valid ModelAPIs (hypothesis)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelapi_operator import names
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders import Owner, RuntimeImages, compute_revision
from modelapi_operator.plan import desired_children

IMAGES = RuntimeImages(cpu="modelapi/runtime:test", gpu="modelapi/runtime-gpu:test")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

model_names = st.from_regex(r"[a-z]([-a-z0-9]{0,52}[a-z0-9])?", fullmatch=True)
keys = st.from_regex(r"[a-z0-9]{1,12}(/[a-z0-9]{1,12}){0,3}", fullmatch=True)
uris = st.one_of(
    keys.map(lambda key: f"s3://models/{key}/model.onnx"),
    keys.map(lambda key: f"https://models.example/{key}/model.onnx"),
    keys.map(lambda key: f"file:///mnt/{key}/model.onnx"),
)


@st.composite
def canary_rollouts(draw: st.DrawFn) -> dict[str, Any]:
    weights = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=5)))
    routing = draw(st.sampled_from(["auto", "gatewayAPI", "replicas"]))
    canary: dict[str, Any] = {
        "steps": [{"weight": weight, "pauseSeconds": draw(st.integers(0, 600))} for weight in weights],
        "trafficRouting": routing,
    }
    if routing == "gatewayAPI" or draw(st.booleans()):
        canary["gateway"] = {"name": "public", "namespace": "gateway"}
    if draw(st.booleans()):
        canary["analysis"] = {"maxErrorRate": draw(st.floats(0, 1)), "failureLimit": draw(st.integers(1, 5))}
    return {"strategy": "Canary", "canary": canary}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    min_replicas = draw(st.integers(1, 5))
    spec: dict[str, Any] = {
        "model": {"uri": draw(uris)},
        "runtime": {
            "resources": {
                "cpu": draw(st.sampled_from(["100m", "500m", "1", "2", "1.5"])),
                "memory": draw(st.sampled_from(["256Mi", "1Gi", "2Gi", "16Gi"])),
                "gpu": draw(st.integers(0, 2)),
            },
            "batching": {"maxBatchSize": draw(st.integers(1, 64)), "maxLatencyMs": draw(st.floats(0, 50))},
            "threads": draw(st.integers(0, 8)),
        },
        "autoscaling": {
            "minReplicas": min_replicas,
            "maxReplicas": draw(st.integers(min_replicas, 10)),
            "metric": draw(st.sampled_from(["cpu", "memory", "inFlight"])),
            "target": draw(st.integers(1, 100)),
        },
    }
    if draw(st.booleans()):
        spec["model"]["sha256"] = draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
    if draw(st.booleans()):
        spec["storage"] = {"endpoint": "http://s3.storage:9000", "credentialsSecret": "s3-creds"}
    if draw(st.booleans()):
        spec["rollout"] = draw(canary_rollouts())
    return spec


def _shuffled(value: Any, rng: random.Random) -> Any:
    """The same document with every mapping's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(child, rng) for key, child in items}
    if isinstance(value, list):
        return [_shuffled(child, rng) for child in value]
    return value


def _owner(name: str) -> Owner:
    return Owner(name=name, namespace="ml", uid="6f1c2a9e-1d2b-4c3d-8e9f-0a1b2c3d4e5f")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=specs(), name=model_names, gateway=st.booleans())
def test_every_child_is_owned_labelled_and_validly_named(raw: dict[str, Any], name: str, gateway: bool) -> None:
    owner = _owner(name)
    spec = ModelAPISpec.model_validate(raw)
    revision = compute_revision(spec, owner, IMAGES)
    children = desired_children(spec, owner, IMAGES, gateway_api_installed=gateway, now=NOW)
    assert {child["kind"] for child in children} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels[names.LABEL_APP_NAME] == names.APP_NAME
        assert labels[names.LABEL_NAME] == name
        assert labels[names.LABEL_REVISION] == revision
        assert len(meta["name"]) <= 63, meta["name"]
        assert DNS1035.match(meta["name"]), meta["name"]
    deployment = next(child for child in children if child["kind"] == "Deployment")
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


@settings(max_examples=100, deadline=None)
@given(raw=specs(), seed=st.integers(0, 2**32 - 1))
def test_revision_ignores_key_order(raw: dict[str, Any], seed: int) -> None:
    owner = _owner("model")
    first = compute_revision(ModelAPISpec.model_validate(raw), owner, IMAGES)
    again = compute_revision(ModelAPISpec.model_validate(_shuffled(raw, random.Random(seed))), owner, IMAGES)
    assert first == again
    assert re.fullmatch(rf"[0-9a-f]{{{names.REVISION_HASH_LENGTH}}}", first)


@settings(max_examples=100, deadline=None)
@given(raw=specs(), other=specs())
def test_revision_ignores_autoscaling_and_rollout(raw: dict[str, Any], other: dict[str, Any]) -> None:
    """Scaling or rollout settings never replace the pods."""
    owner = _owner("model")
    changed = {**raw, "autoscaling": other["autoscaling"], "rollout": other.get("rollout", {})}
    assert compute_revision(ModelAPISpec.model_validate(raw), owner, IMAGES) == compute_revision(
        ModelAPISpec.model_validate(changed), owner, IMAGES
    )


@settings(max_examples=100, deadline=None)
@given(raw=specs(), new_uri=uris)
def test_revision_changes_with_the_model(raw: dict[str, Any], new_uri: str) -> None:
    owner = _owner("model")
    changed = {**raw, "model": {**raw["model"], "uri": new_uri}}
    same = new_uri == raw["model"]["uri"]
    before = compute_revision(ModelAPISpec.model_validate(raw), owner, IMAGES)
    after = compute_revision(ModelAPISpec.model_validate(changed), owner, IMAGES)
    assert (before == after) is same


def test_revision_changes_with_each_pod_affecting_field() -> None:
    owner = _owner("model")
    base: dict[str, Any] = {"model": {"uri": "s3://models/a/model.onnx"}}
    variants: list[dict[str, Any]] = [
        {"model": {"uri": "s3://models/a/model.onnx", "sha256": "a" * 64}},
        {"model": {"uri": "s3://models/a/model.onnx", "handler": "s3://models/a/handler.py"}},
        {**base, "storage": {"endpoint": "http://minio:9000"}},
        {**base, "storage": {"credentialsSecret": "creds"}},
        {**base, "storage": {"serviceAccountName": "reader"}},
        {**base, "runtime": {"resources": {"cpu": "2"}}},
        {**base, "runtime": {"resources": {"gpu": 1}}},
        {**base, "runtime": {"batching": {"maxBatchSize": 8}}},
        {**base, "runtime": {"threads": 3}},
        {**base, "runtime": {"image": "example/custom:1"}},
        {**base, "runtime": {"env": [{"name": "MODE", "value": "fast"}]}},
        {**base, "runtime": {"nodeSelector": {"pool": "ml"}}},
    ]
    revisions = {compute_revision(ModelAPISpec.model_validate(spec), owner, IMAGES) for spec in [base, *variants]}
    assert len(revisions) == len(variants) + 1
    # Writing a default explicitly is not a change.
    explicit = {**base, "runtime": {"threads": 0, "resources": {"cpu": "1", "memory": "2Gi"}}}
    assert compute_revision(ModelAPISpec.model_validate(explicit), owner, IMAGES) == compute_revision(
        ModelAPISpec.model_validate(base), owner, IMAGES
    )
