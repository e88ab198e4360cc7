"""Behaviour of the individual builders that users rely on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelapi_operator.api import ModelAPISpec, RolloutSpec
from modelapi_operator.builders import (
    Owner,
    RuntimeImages,
    build_deployment,
    build_hpa,
    build_httproute,
    build_pdb,
    compute_revision,
    effective_surge_and_unavailable,
    uses_gateway_api,
)
from modelapi_operator.plan import desired_children

OWNER = Owner(name="iris", namespace="ml", uid="uid-1")
IMAGES = RuntimeImages(cpu="cpu:1", gpu="gpu:1")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _spec(**parts: Any) -> ModelAPISpec:
    return ModelAPISpec.model_validate({"model": {"uri": "s3://models/iris/1/model.onnx"}, **parts})


def _container(spec: ModelAPISpec) -> dict[str, Any]:
    deployment = build_deployment(spec, OWNER, "abc", IMAGES)
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("rollout", "gpus", "expected"),
    [
        ({}, 0, ("25%", 0)),
        ({}, 1, (0, 1)),
        ({"maxUnavailable": 0}, 1, (1, 0)),
        ({"maxSurge": 0}, 0, (0, 1)),
        ({"maxSurge": "50%"}, 0, ("50%", 0)),
        ({"maxSurge": 2, "maxUnavailable": 1}, 1, (2, 1)),
    ],
)
def test_rollout_defaults_avoid_deadlocks(rollout: dict[str, Any], gpus: int, expected: tuple[Any, Any]) -> None:
    assert effective_surge_and_unavailable(RolloutSpec.model_validate(rollout), gpus) == expected


def test_gpu_model_gets_limit_toleration_gpu_image_and_cuda() -> None:
    spec = _spec(runtime={"resources": {"gpu": 2}})
    deployment = build_deployment(spec, OWNER, "abc", IMAGES)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "gpu:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "MODELAPI_DEVICE", "value": "cuda"} in container["env"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_cpu_model_never_asks_for_a_gpu() -> None:
    container = _container(_spec())
    assert container["image"] == "cpu:1"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "MODELAPI_DEVICE", "value": "cpu"} in container["env"]


def test_image_override_wins() -> None:
    assert _container(_spec(runtime={"image": "example/mine:2", "resources": {"gpu": 1}}))["image"] == "example/mine:2"


def test_pod_meets_pod_security_restricted() -> None:
    pod = build_deployment(_spec(), OWNER, "abc", IMAGES)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/models" in mounts, "the model needs a writable volume under a read-only root"


def test_probes_and_graceful_shutdown() -> None:
    container = _container(_spec())
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    # the kubelet probes readiness at once when the startup probe passes: passing the moment the model is ready (the
    # runtime holds the probe's not-ready answer up to `wait` seconds) makes the pod Ready right after the load (a
    # first answer from zero waits for exactly that)
    path, _, query = startup["httpGet"]["path"].partition("?")
    assert path == "/v2/health/ready"
    wait = float(query.removeprefix("wait="))
    from modelapi_runtime.limits import MAX_READY_WAIT_S

    assert 1 <= wait <= MAX_READY_WAIT_S
    assert wait < startup["timeoutSeconds"], "a held answer must come back before the probe gives up"
    assert startup["periodSeconds"] == 1
    # a failing probe takes the wait once the server answers: the budget for a large download is counted in waits
    budget = max(startup["periodSeconds"], wait) * startup["failureThreshold"]
    assert 600 <= budget <= 1200, "large downloads need minutes, a stuck start must not take hours"
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0


def test_credentials_are_only_secret_references() -> None:
    container = _container(_spec(storage={"credentialsSecret": "s3-creds"}))
    credentials = [env for env in container["env"] if env["name"].startswith("AWS_") and env["name"] != "AWS_REGION"]
    assert {env["name"] for env in credentials} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    for env in credentials:
        assert "value" not in env
        assert env["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"


def test_runtime_env_follows_the_runtime_settings_contract() -> None:
    from modelapi_runtime.settings import RuntimeSettings

    container = _container(_spec(model={"uri": "s3://models/iris/1/model.onnx", "sha256": "A" * 64}))
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    settings = RuntimeSettings.model_validate(
        {key.removeprefix("MODELAPI_").lower(): v for key, v in env.items() if key.startswith("MODELAPI_")}
    )
    assert settings.model_uri == "s3://models/iris/1/model.onnx"
    assert settings.sha256 == "a" * 64
    assert settings.revision == "abc"
    assert settings.name == "iris"


def test_runtime_limits_reach_the_runtime_settings_only_when_set() -> None:
    from modelapi_runtime.settings import RuntimeSettings

    def settings_of(spec: ModelAPISpec) -> RuntimeSettings:
        env = {item["name"]: item["value"] for item in _container(spec)["env"] if "value" in item}
        return RuntimeSettings.model_validate(
            {key.removeprefix("MODELAPI_").lower(): v for key, v in env.items() if key.startswith("MODELAPI_")}
        )

    default = _spec()
    assert not {"MODELAPI_MAX_REQUEST_BYTES", "MODELAPI_MAX_QUEUE"} & {e["name"] for e in _container(default)["env"]}
    assert (settings_of(default).max_request_bytes, settings_of(default).max_queue) == (16 * 1024 * 1024, 256)
    limited = _spec(runtime={"limits": {"maxRequestBytes": 1048576, "maxQueue": 32}})
    assert (settings_of(limited).max_request_bytes, settings_of(limited).max_queue) == (1048576, 32)


def test_stable_deployment_leaves_replicas_to_the_autoscaler() -> None:
    assert "replicas" not in build_deployment(_spec(), OWNER, "abc", IMAGES)["spec"]
    assert build_deployment(_spec(), OWNER, "abc", IMAGES, replicas=0)["spec"]["replicas"] == 0


def test_hpa_metrics() -> None:
    spec = _spec(autoscaling={"metric": "inFlight", "target": 8, "scaleDownStabilizationSeconds": 60})
    hpa = build_hpa(spec.autoscaling, OWNER, "abc")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-abc"
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "modelapi_inflight_requests"},
                "target": {"type": "AverageValue", "averageValue": "8"},
            },
        }
    ]
    assert hpa["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 60}
    memory = build_hpa(_spec(autoscaling={"metric": "memory"}).autoscaling, OWNER, "abc")
    assert memory["spec"]["metrics"][0]["resource"] == {
        "name": "memory",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }


def test_pdb_only_when_more_than_one_replica_is_possible() -> None:
    kinds_single = [
        c["kind"]
        for c in desired_children(
            _spec(autoscaling={"maxReplicas": 1}), OWNER, IMAGES, gateway_api_installed=False, now=NOW
        )
    ]
    kinds_many = [c["kind"] for c in desired_children(_spec(), OWNER, IMAGES, gateway_api_installed=False, now=NOW)]
    assert "PodDisruptionBudget" not in kinds_single
    assert "PodDisruptionBudget" in kinds_many
    assert build_pdb(OWNER, "abc")["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    ("routing", "gateway", "installed", "expected"),
    [
        ("auto", True, True, True),
        ("auto", True, False, False),
        ("auto", False, True, False),
        ("gatewayAPI", True, False, True),
        ("replicas", True, True, False),
    ],
)
def test_traffic_routing_choice(routing: str, gateway: bool, installed: bool, expected: bool) -> None:
    canary: dict[str, Any] = {"steps": [{"weight": 10}], "trafficRouting": routing}
    if gateway:
        canary["gateway"] = {"name": "public"}
    spec = _spec(rollout={"strategy": "Canary", "canary": canary})
    assert uses_gateway_api(spec, gateway_api_installed=installed) is expected
    kinds = [c["kind"] for c in desired_children(spec, OWNER, IMAGES, gateway_api_installed=installed, now=NOW)]
    assert ("HTTPRoute" in kinds) is expected


def test_httproute_weights_sum_to_100() -> None:
    from modelapi_operator.api import GatewayRef

    route = build_httproute(GatewayRef(name="public"), OWNER, "abc", canary_weight=30)
    backends = route["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [("iris-stable", 70), ("iris-canary", 30)]
    at_rest = build_httproute(GatewayRef(name="public"), OWNER, "abc", canary_weight=None)
    assert [(b["name"], b["weight"]) for b in at_rest["spec"]["rules"][0]["backendRefs"]] == [("iris-stable", 100)]


def test_revision_depends_on_the_resolved_image() -> None:
    spec = _spec()
    assert compute_revision(spec, OWNER, IMAGES) != compute_revision(
        spec, OWNER, RuntimeImages(cpu="cpu:2", gpu="gpu:1")
    )
    assert compute_revision(spec, OWNER, IMAGES) == compute_revision(
        spec, OWNER, RuntimeImages(cpu="cpu:1", gpu="gpu:2")
    )


def test_model_pods_pull_with_the_operators_pull_secrets() -> None:
    """Chart value runtimeImages.pullSecrets -> MODELAPI_OPERATOR_IMAGE_PULL_SECRETS -> the pod's imagePullSecrets."""
    spec = _spec(runtime={"image": "registry.example/team/runtime:2"})
    with_secrets = RuntimeImages(cpu="cpu:1", gpu="gpu:1", pull_secrets=("regcred", "mirror"))
    pod = build_deployment(spec, OWNER, "abc", with_secrets)["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    plain = build_deployment(spec, OWNER, "abc", IMAGES)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in plain, "no empty list: the pod template of an install without them is unchanged"
    # the pods change, so the revision does: a new secret rolls the model like any change of its pods
    assert compute_revision(spec, OWNER, with_secrets) != compute_revision(spec, OWNER, IMAGES)


def test_the_node_cache_is_reached_at_the_pods_node_address_without_anything_privileged() -> None:
    from modelapi_runtime.settings import RuntimeSettings

    images = RuntimeImages(cpu="cpu:1", gpu="gpu:1", node_cache_port=8089)
    pod = build_deployment(_spec(), OWNER, "abc", images)["spec"]["template"]["spec"]
    env = pod["containers"][0]["env"]
    names = [item["name"] for item in env]
    node_ip = env[names.index("MODELAPI_NODE_IP")]
    assert node_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    url = env[names.index("MODELAPI_NODE_CACHE_URL")]["value"]
    assert url == "http://$(MODELAPI_NODE_IP):8089"
    assert names.index("MODELAPI_NODE_IP") < names.index("MODELAPI_NODE_CACHE_URL"), "Kubernetes expands earlier ones"
    # the pod's UID, by which the agent finds its emptyDir to place a cached artifact in
    assert env[names.index("MODELAPI_POD_UID")]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert RuntimeSettings(model_uri="s3://b/k", node_cache_url=url.replace("$(MODELAPI_NODE_IP)", "10.0.0.7"))
    assert all("hostPath" not in volume for volume in pod["volumes"])
    assert "hostNetwork" not in pod

    without = build_deployment(_spec(), OWNER, "abc", IMAGES)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [item for item in without if item["name"].startswith(("MODELAPI_NODE", "MODELAPI_POD_UID"))]
    assert compute_revision(_spec(), OWNER, IMAGES) != compute_revision(_spec(), OWNER, images)


@pytest.mark.parametrize(
    ("storage", "default", "expected"),
    [
        ({}, "", 5 * 1024**3),  # cacheSize (5Gi): more would get the pod evicted while it downloads
        ({}, "2Gi", 2 * 1024**3),
        ({"maxArtifactSize": "1Gi"}, "2Gi", 1024**3),  # the spec wins over the chart's default
        ({"maxArtifactSize": "8Gi"}, "", 5 * 1024**3),  # never more than cacheSize
        ({"maxArtifactSize": "8Gi", "cacheSize": "10Gi"}, "", 8 * 1024**3),
    ],
)
def test_the_artifact_size_bound_reaches_the_runtime(storage: dict[str, str], default: str, expected: int) -> None:
    images = RuntimeImages(cpu="cpu:1", gpu="gpu:1", max_artifact_size=default)
    container = build_deployment(_spec(storage=storage), OWNER, "abc", images)["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in container["containers"][0]["env"]}
    assert env["MODELAPI_MAX_ARTIFACT_BYTES"] == str(expected)


def test_batching_fill_when_idle_reaches_the_runtime_only_when_set() -> None:
    from modelapi_runtime.settings import RuntimeSettings

    default = _spec(runtime={"batching": {"maxBatchSize": 8}})
    assert "MODELAPI_BATCH_FILL_WHEN_IDLE" not in {e["name"] for e in _container(default)["env"]}
    filled = _spec(runtime={"batching": {"maxBatchSize": 8, "maxLatencyMs": 100, "fillWhenIdle": True}})
    env = {item["name"]: item["value"] for item in _container(filled)["env"] if "value" in item}
    assert env["MODELAPI_BATCH_FILL_WHEN_IDLE"] == "true"
    assert RuntimeSettings.model_validate(
        {"model_uri": "s3://models/iris/1/model.onnx", "batch_fill_when_idle": env["MODELAPI_BATCH_FILL_WHEN_IDLE"]}
    ).batch_fill_when_idle


def test_the_log_format_reaches_model_pods_only_when_it_is_json() -> None:
    spec = _spec()

    def env(images: RuntimeImages) -> dict[str, Any]:
        container = build_deployment(spec, OWNER, "abc", images)["spec"]["template"]["spec"]["containers"][0]
        return {item["name"]: item.get("value") for item in container["env"]}

    assert "MODELAPI_LOG_FORMAT" not in env(IMAGES)  # text, the default: templates (and revisions) stay the same
    json_images = RuntimeImages(cpu="cpu:1", gpu="gpu:1", log_format="json")
    assert env(json_images)["MODELAPI_LOG_FORMAT"] == "json"
    assert compute_revision(spec, OWNER, json_images) != compute_revision(spec, OWNER, IMAGES)


def test_the_prediction_log_becomes_runtime_settings_the_runtime_accepts() -> None:
    from modelapi_runtime.settings import RuntimeSettings

    stdout = _spec(monitoring={"predictionLog": {"sampleRate": 2.5, "record": "outputs"}})
    env = {item["name"]: item["value"] for item in _container(stdout)["env"] if "value" in item}
    assert env["MODELAPI_PREDICTION_LOG_SAMPLE_RATE"] == "2.5"
    assert env["MODELAPI_PREDICTION_LOG_RECORD"] == "outputs"
    assert env["MODELAPI_PREDICTION_LOG_SINK"] == "stdout"
    assert "MODELAPI_PREDICTION_LOG_S3_PREFIX" not in env
    s3 = _spec(monitoring={"predictionLog": {"sampleRate": 10, "sink": "s3", "s3Prefix": "s3://logs/iris/"}})
    env = {item["name"]: item["value"] for item in _container(s3)["env"] if "value" in item}
    settings = RuntimeSettings(**{k.removeprefix("MODELAPI_").lower(): v for k, v in env.items() if "PREDICTION" in k},
                               model_uri="s3://models/iris/1/model.onnx")  # fmt: skip
    assert (settings.prediction_log_sink, settings.prediction_log_s3_prefix) == ("s3", "s3://logs/iris/")
    assert (settings.prediction_log_batch_records, settings.prediction_log_batch_seconds) == (1000, 60)
    assert _spec().monitoring.prediction_log is None
    assert not any("PREDICTION" in item["name"] for item in _container(_spec())["env"])


def _otel_env(spec: ModelAPISpec, images: RuntimeImages = IMAGES) -> dict[str, str]:
    container = build_deployment(spec, OWNER, "abc", images)["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"] if item["name"].startswith("OTEL_")}


def test_tracing_is_the_operators_collector_unless_the_spec_says_otherwise() -> None:
    from modelapi_runtime.tracing import TraceConfig

    collector = RuntimeImages(cpu="cpu:1", gpu="gpu:1", tracing_endpoint="http://otel.obs:4318", tracing_sample_rate=5)
    assert _otel_env(_spec()) == {}  # off by default: the pod template (and revision) stay as they were
    env = _otel_env(_spec(), collector)
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel.obs:4318",
        "OTEL_SERVICE_NAME": "iris",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=ml",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.05",
    }
    config = TraceConfig.from_env(env)  # what the runtime makes of them
    assert config is not None
    assert (config.url, config.ratio, config.service_name) == ("http://otel.obs:4318/v1/traces", 0.05, "iris")
    own = _spec(monitoring={"tracing": {"endpoint": "https://mine:4318", "sampleRate": 12.5}})
    assert _otel_env(own, collector)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://mine:4318"
    assert _otel_env(own, collector)["OTEL_TRACES_SAMPLER_ARG"] == "0.125"
    assert _otel_env(own)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://mine:4318"
    assert _otel_env(_spec(monitoring={"tracing": {"enabled": False}}), collector) == {}
    assert _otel_env(_spec(monitoring={"tracing": {"sampleRate": 1}})) == {}  # no collector anywhere: off
