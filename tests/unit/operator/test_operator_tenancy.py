"""Tenancy boundaries of the operator (pure parts and the reconciler's seams; the real API server is in
tests/e2e/test_tenancy.py): name conflicts, the cluster policy, redacted artifact URIs."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from kube_fakes import RecordingKube

from modelapi_operator import kube, names
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.api.resource import ModelAPI
from modelapi_operator.builders import Owner, RuntimeImages, build_deployment, compute_revision
from modelapi_operator.builders.common import owner_reference
from modelapi_operator.cluster_policy import ClusterPolicy, image_allowed, image_repository
from modelapi_operator.diagnose import redact
from modelapi_operator.reconcile import Observed, Reconciler
from modelapi_operator.redaction import RedactingFilter, redact_text, redact_uri
from modelapi_operator.revision_record import MODEL_URI_ANNOTATION
from modelapi_operator.settings import OperatorSettings

PRESIGNED = "https://bucket.example/models/iris.onnx?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2F1"
OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="registry.example/modelapi/runtime:1", gpu="registry.example/modelapi/runtime-gpu:1")


def _spec(**model: Any) -> ModelAPISpec:
    return ModelAPISpec.model_validate({"model": {"uri": "s3://models/iris/1/model.onnx", **model}})


# -- redaction ---------------------------------------------------------------------------------------------------
def test_redact_uri_keeps_scheme_host_and_path_only() -> None:
    assert redact_uri(PRESIGNED) == "https://bucket.example/models/iris.onnx?<redacted>"
    assert redact_uri("s3://models/iris/1/model.onnx") == "s3://models/iris/1/model.onnx"
    assert redact_uri("https://user:pw@host:8443/a.onnx#frag") == "https://host:8443/a.onnx"


def test_redact_text_finds_queries_inside_messages_and_reprs() -> None:
    text = f"pod p: ArtifactNotFound: {PRESIGNED}: HTTP 404; body {{'uri': '{PRESIGNED}'}}"
    redacted = redact_text(text)
    assert "abc123" not in redacted
    assert "AKIA" not in redacted
    assert redacted.count("https://bucket.example/models/iris.onnx?<redacted>") == 2
    assert "abc123" not in redact(text)


def test_the_annotation_is_redacted_and_the_revision_still_follows_the_query() -> None:
    first, second = _spec(uri=PRESIGNED), _spec(uri=PRESIGNED.replace("abc123", "def456"))
    deployment = build_deployment(first, OWNER, "r1", IMAGES)
    assert deployment["metadata"]["annotations"][MODEL_URI_ANNOTATION] == redact_uri(PRESIGNED)
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELAPI_MODEL_URI"] == PRESIGNED, "the pod needs the whole URI to download"
    assert compute_revision(first, OWNER, IMAGES) != compute_revision(second, OWNER, IMAGES)


def test_the_log_filter_redacts_rendered_messages(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("Creation is in progress: %r", {"spec": {"model": {"uri": PRESIGNED}}})
    assert "abc123" not in caplog.text
    assert "?<redacted>" in caplog.text


# -- names -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["iris-stable", "iris-canary", "iris-expose"])
def test_names_that_claim_another_modelapis_child_are_refused(name: str) -> None:
    manifest = {"apiVersion": "serving.modelapi.io/v1alpha1", "kind": "ModelAPI", "metadata": {"name": name}}
    with pytest.raises(ValueError, match="must not end with -stable, -canary or -expose"):
        ModelAPI.model_validate({**manifest, "spec": {"model": {"uri": "s3://models/iris/1/model.onnx"}}})


# -- cluster policy ----------------------------------------------------------------------------------------------
def test_default_image_prefixes_are_the_operators_own_repositories() -> None:
    settings = OperatorSettings(cpu_image="registry.example/modelapi/runtime:1", gpu_image="r.example/gpu@sha256:ab")
    policy = ClusterPolicy.from_settings(settings)
    assert policy.allowed_image_prefixes == ("registry.example/modelapi/runtime", "r.example/gpu")
    assert image_repository("registry:5000/team/runtime:1.2") == "registry:5000/team/runtime"


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example/team/x:1", True),
        ("registry.example/team:1", True),
        ("registry.example/team@sha256:00", True),
        ("registry.example/team", True),
        ("registry.example/team-evil/x:1", False),
        ("evil.example/registry.example/team:1", False),
    ],
)
def test_image_prefixes_match_at_a_name_boundary(image: str, allowed: bool) -> None:
    assert image_allowed(image, ["registry.example/team"]) is allowed
    assert image_allowed(image, ["*"]) is True


@pytest.mark.parametrize(
    ("policy", "spec", "rule", "value"),
    [
        (
            ClusterPolicy(allowed_image_prefixes=("registry.example/modelapi",)),
            {"runtime": {"image": "evil.example/miner:1"}},
            "policy.allowedImagePrefixes",
            "evil.example/miner:1",
        ),
        (
            ClusterPolicy(allow_handlers=False),
            {"model": {"handler": "s3://models/iris/h.py"}},
            "policy.allowHandlers",
            "handler",
        ),
        (ClusterPolicy(require_sha256=True), {}, "policy.requireSha256", "spec.model.sha256"),
        (
            ClusterPolicy(require_sha256=True),
            {"model": {"sha256": "a" * 64, "handler": "s3://models/iris/h.py"}},
            "policy.requireSha256",
            "handlerSha256",
        ),
        (
            ClusterPolicy(allowed_toleration_keys=("dedicated",)),
            {"runtime": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}},
            "policy.allowedTolerationKeys",
            "node-role.kubernetes.io/control-plane",
        ),
        (
            ClusterPolicy(allowed_toleration_keys=("dedicated",)),
            {"runtime": {"tolerations": [{"operator": "Exists"}]}},
            "policy.allowedTolerationKeys",
            "every taint",
        ),
        (
            ClusterPolicy(allowed_node_selector_keys=()),
            {"runtime": {"nodeSelector": {"kubernetes.io/hostname": "master-0"}}},
            "policy.allowedNodeSelectorKeys",
            "kubernetes.io/hostname",
        ),
    ],
)
def test_each_rule_names_itself_and_the_offending_value(
    policy: ClusterPolicy, spec: dict[str, Any], rule: str, value: str
) -> None:
    base: dict[str, Any] = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    for key, part in spec.items():
        base[key] = {**base.get(key, {}), **part}
    (violation,) = [v for v in policy.violations(ModelAPISpec.model_validate(base)) if rule in v]
    assert value in violation
    assert ClusterPolicy().violations(ModelAPISpec.model_validate(base)) == [], "the default allows everything"


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelapi.io/v1alpha1",
        "kind": "ModelAPI",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


async def test_a_policy_violation_applies_nothing_and_says_which_rule() -> None:
    client = RecordingKube()
    reconciler = Reconciler(
        client,
        IMAGES,
        gateway_api_installed=False,
        policy=ClusterPolicy(require_sha256=True),
    )
    status = await reconciler.reconcile(_body({"model": {"uri": "s3://models/iris/1/model.onnx"}}), Observed())
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "PolicyViolation")
    assert "policy.requireSha256" in degraded.message
    assert {name for name, _ in client.calls} == {"status", "event"}


# -- name conflicts ----------------------------------------------------------------------------------------------
class ClusterWithObjects(RecordingKube):
    """An API that already holds some objects (by kind and name)."""

    def __init__(self, objects: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        super().__init__()
        self.objects = dict(objects)

    def stored(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    async def get(self, kind: kube.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        await super().get(kind, namespace, name)
        return self.stored(kind.kind, name)


def _foreign(kind: str, name: str, **meta: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ml", "resourceVersion": "7", **meta}}


async def test_an_object_that_is_not_ours_is_left_untouched_and_named() -> None:
    client = ClusterWithObjects({("Service", "iris"): _foreign("Service", "iris")})
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    status = await Reconciler(client, IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed())
    assert ("apply_new", "Service/iris") in client.calls, "refused: the name is taken"
    assert ("apply", "Service/iris") not in client.calls, "never applied with force over someone else's object"
    applied = {args for name, args in client.calls if name == "apply_new"}
    assert {"Service/iris-stable", "HorizontalPodAutoscaler/iris"} <= applied
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "NameConflict")
    assert "Service ml/iris exists and is not controlled by this ModelAPI" in degraded.message
    events = [args for name, args in client.calls if name == "event"]
    assert any(reason == "NameConflict" and "Service ml/iris" in message for _, reason, message in events)


async def test_a_labelled_object_of_another_owner_in_the_cache_is_a_conflict_without_a_read() -> None:
    other = {"uid": "uid-2", "kind": "ModelAPI", "name": "other", "controller": True}
    hpa = {**_foreign("HorizontalPodAutoscaler", "iris", ownerReferences=[other]), "spec": {}}
    client = ClusterWithObjects({})
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    status = await Reconciler(client, IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed(hpas=[hpa]))
    assert ("get", "HorizontalPodAutoscaler/iris") not in client.calls
    assert ("apply", "HorizontalPodAutoscaler/iris") not in client.calls
    assert ("apply_new", "HorizontalPodAutoscaler/iris") not in client.calls
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.reason == "NameConflict"
    assert "ModelAPI other" in ready.message


async def test_a_deployment_name_taken_by_someone_else_is_neither_applied_nor_scaled() -> None:
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    revision = compute_revision(ModelAPISpec.model_validate(spec), OWNER, IMAGES)
    name = f"iris-{revision}"

    class Taken(ClusterWithObjects):
        async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            raise kube.KubeError(409, "AlreadyExists", f"deployments.apps {name} already exists")

    client = Taken({("Deployment", name): _foreign("Deployment", name)})
    status = await Reconciler(client, IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed())
    assert ("apply", f"Deployment/{name}") not in client.calls
    assert not [args for call, args in client.calls if call == "scale"]
    assert next(c for c in status.conditions if c.type == "Degraded").reason == "NameConflict"


async def test_an_arms_config_map_that_is_not_ours_is_left_untouched_and_named() -> None:
    client = ClusterWithObjects({("ConfigMap", "iris-arms"): _foreign("ConfigMap", "iris-arms")})
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}, "monitoring": {"predictionLog": {"sampleRate": 10}}}
    status = await Reconciler(client, IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed())
    assert ("apply_new", "ConfigMap/iris-arms") in client.calls, "refused: the name is taken"
    assert ("apply", "ConfigMap/iris-arms") not in client.calls
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "NameConflict")
    assert "ConfigMap ml/iris-arms exists and is not controlled by this ModelAPI" in degraded.message


async def test_the_arms_config_map_goes_with_the_prediction_log() -> None:
    logged = {"model": {"uri": "s3://models/iris/1/model.onnx"}, "monitoring": {"predictionLog": {"sampleRate": 10}}}
    first = RecordingKube()
    await Reconciler(first, IMAGES, gateway_api_installed=False).reconcile(_body(logged), Observed())
    deployment = next(m for m in first.created_manifests if m["kind"] == "Deployment")
    assert ("apply_new", "ConfigMap/iris-arms") in first.calls
    ours = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "iris-arms",
            "namespace": "ml",
            "uid": "cm-1",
            "ownerReferences": [owner_reference(OWNER)],
        },
        "data": {deployment["metadata"]["labels"][names.LABEL_REVISION]: "stable"},
    }
    plain = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    again = RecordingKube()
    await Reconciler(again, IMAGES, gateway_api_installed=False).reconcile(_body(plain), Observed(configmaps=[ours]))
    assert ("delete", "ConfigMap/iris-arms") in again.calls


async def test_children_the_operator_controls_are_never_read_again() -> None:
    """At 1,000 ModelAPIs: a reconcile of a ModelAPI whose children are all cached reads nothing from the API."""
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}, "monitoring": {"predictionLog": {"sampleRate": 10}}}
    first = RecordingKube()
    reconciler = Reconciler(first, IMAGES, gateway_api_installed=False)
    await reconciler.reconcile(_body(spec), Observed())
    applied: list[dict[str, Any]] = []

    class Remember(RecordingKube):
        async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            applied.append(dict(manifest))
            return await super().create(manifest)

        async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            applied.append(dict(manifest))
            return await super().apply(manifest)

        async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            applied.append(dict(manifest))
            return await super().apply_new(manifest)

    reconciler.kube = Remember()
    await reconciler.reconcile(_body(spec), Observed())
    observed = Observed(
        deployments=[m for m in applied if m["kind"] == "Deployment"],
        services=[m for m in applied if m["kind"] == "Service"],
        hpas=[m for m in applied if m["kind"] == "HorizontalPodAutoscaler"],
        pdbs=[m for m in applied if m["kind"] == "PodDisruptionBudget"],
        configmaps=[m for m in applied if m["kind"] == "ConfigMap"],
    )
    assert observed.configmaps, "the arms ConfigMap (spec.monitoring.predictionLog) is among the cached children"
    again = RecordingKube()
    reconciler.kube = again
    await reconciler.reconcile(_body(spec), observed)
    assert [call for call in again.calls if call[0] in ("get", "apply", "apply_new", "create")] == []


# -- disk ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cache_size", "wanted"), [(None, "5632Mi"), ("10Gi", "10752Mi"), ("1G", "1466Mi")])
def test_every_volume_has_a_size_limit_and_the_pod_requests_their_sum(cache_size: str | None, wanted: str) -> None:
    storage = {"storage": {"cacheSize": cache_size}} if cache_size else {}
    spec = ModelAPISpec.model_validate({"model": {"uri": "s3://models/iris/1/model.onnx"}, **storage})
    pod = build_deployment(spec, OWNER, "r1", IMAGES)["spec"]["template"]["spec"]
    limits = {volume["name"]: volume["emptyDir"]["sizeLimit"] for volume in pod["volumes"]}
    assert limits == {"models": cache_size or "5Gi", "tmp": "512Mi"}
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == wanted
    assert "ephemeral-storage" not in resources["limits"], "a limit would count the container's logs too"


def test_api_error_messages_are_redacted() -> None:
    """The API server may quote a field's value back (then it reaches kopf's log and a posted Event)."""
    body = json.dumps({"reason": "Invalid", "message": f'Deployment "iris-1" is invalid: value "{PRESIGNED}"'})
    error = kube._error(422, body)
    assert "abc123" not in error.message
    assert "?<redacted>" in error.message
    assert "abc123" not in kube._error(500, f"upstream said {PRESIGNED}").message


async def test_an_apply_refused_as_invalid_over_someone_elses_object_is_a_name_conflict() -> None:
    """Should an API server answer an apply merged into someone else's object as invalid (422) rather than by the
    precondition (409; v1.33 answers 409), the name's holder is read: a NameConflict, not an error."""

    class Invalid(ClusterWithObjects):
        async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            if self.stored(manifest["kind"], manifest["metadata"]["name"]) is not None:
                raise kube.KubeError(422, "Invalid", "Service iris is invalid: spec.clusterIPs: may not change")
            return await super().apply_new(manifest)

    client = Invalid({("Service", "iris"): _foreign("Service", "iris")})
    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    status = await Reconciler(client, IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed())
    assert ("apply", "Service/iris") not in client.calls
    assert next(c for c in status.conditions if c.type == "Degraded").reason == "NameConflict"


async def test_an_invalid_child_without_a_holder_is_an_error() -> None:
    class Invalid(RecordingKube):
        async def apply_new(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
            raise kube.KubeError(422, "Invalid", "Service iris is invalid")

    spec = {"model": {"uri": "s3://models/iris/1/model.onnx"}}
    with pytest.raises(kube.KubeError, match="invalid"):
        await Reconciler(Invalid(), IMAGES, gateway_api_installed=False).reconcile(_body(spec), Observed())
