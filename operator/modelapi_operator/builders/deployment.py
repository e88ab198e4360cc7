"""The Deployment of one revision: the runtime container per the runtime contract of docs/api.md."""

from __future__ import annotations

import math
from typing import Any

from modelapi_operator import names
from modelapi_operator.api import ModelAPISpec, RolloutSpec
from modelapi_operator.api.patterns import quantity_value
from modelapi_operator.builders.arms import ARMS_DIR, arms_mount, arms_volume
from modelapi_operator.builders.common import (
    Manifest,
    Owner,
    RuntimeImages,
    canonical_labels,
    object_meta,
    revision_selector,
)
from modelapi_operator.redaction import redact_uri
from modelapi_operator.revision_record import RevisionRecord
from modelapi_runtime.limits import MAX_READY_WAIT_S
from modelapi_runtime.settings import RuntimeSettings, env_var_name

MODEL_DIR = "/models"
RUNTIME_UID = 10001
# The startup probe asks /v2/health/ready?wait=4: the runtime holds a not-ready answer up to 4 s and answers 200 the
# moment its model is ready, and the kubelet runs the readiness probe at once when the startup probe passes, so a pod
# is Ready a few hundred ms after its model (asked every second without the wait, the ready model waited up to a
# second for the probe's next tick; with a 10 s period on /v2/health/live it took up to 10 s more). A failed probe
# takes the wait (4 s) while the server answers, 1 s before it listens: 225 failures are a 15-minute budget before a
# restart, for a 5 GB artifact at a slow 10 MB/s (~9 minutes).
STARTUP_PERIOD_SECONDS = 1
STARTUP_WAIT_SECONDS = int(MAX_READY_WAIT_S)
STARTUP_PROBE_PATH = f"/v2/health/ready?wait={STARTUP_WAIT_SECONDS}"
STARTUP_BUDGET_SECONDS = 900
STARTUP_FAILURE_THRESHOLD = STARTUP_BUDGET_SECONDS // max(STARTUP_PERIOD_SECONDS, STARTUP_WAIT_SECONDS)
# Longer than the startup budget, so a slow download is not reported as a stuck rollout.
PROGRESS_DEADLINE_SECONDS = 1200
# Endpoints and proxies drop a terminating pod within a few seconds; keep serving until then.
PRE_STOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 45

# /tmp is scratch space only (the runtime's read-only root needs one writable place); the artifact goes to MODEL_DIR.
TMP_VOLUME_SIZE = "512Mi"
MiB = 1024 * 1024
# A model volume sized from a known artifact: its size plus a tenth (at least 64 MiB) for the download's small files
# (its reference record, a partial file is the artifact itself), never more than spec.storage.cacheSize.
ARTIFACT_HEADROOM_SHARE = 0.1
ARTIFACT_HEADROOM_MIN = 64 * MiB

# The node's address (status.hostIP), where the node cache agent listens; not a runtime setting itself: the
# runtime reads MODELAPI_NODE_CACHE_URL, which Kubernetes expands from it.
NODE_IP_ENV = "MODELAPI_NODE_IP"


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


def effective_surge_and_unavailable(rollout: RolloutSpec, gpus: int) -> tuple[int | str, int | str]:
    """Rollout bounds with the defaults of docs/api.md.

    On GPUs a surge pod would wait for a GPU that only the old pod frees, so GPU models replace
    one pod at a time (0 / 1). When the user pins one bound to 0, the other defaults to 1 so the
    rollout can always move.
    """
    surge = rollout.max_surge
    unavailable = rollout.max_unavailable
    if surge is None and unavailable is not None and _is_zero(unavailable):
        surge = 1
    elif surge is None:
        surge = 0 if gpus > 0 else "25%"
    if unavailable is None:
        unavailable = 1 if gpus > 0 or _is_zero(surge) else 0
    return surge, unavailable


def runtime_image(spec: ModelAPISpec, images: RuntimeImages) -> str:
    if spec.runtime.image:
        return spec.runtime.image
    return images.gpu if spec.runtime.resources.gpu > 0 else images.cpu


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def _node_cache_env(port: int) -> list[dict[str, Any]]:
    """The node cache agent at this pod's node address (the downward API), or nothing without one."""
    if not port:
        return []
    return [
        {"name": NODE_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        _env(env_var_name("node_cache_url"), f"http://$({NODE_IP_ENV}):{port}"),
        # the agent places a cached artifact straight into this pod's emptyDir, found by the pod's UID
        {"name": env_var_name("pod_uid"), "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]


def _prediction_log_env(spec: ModelAPISpec) -> list[dict[str, Any]]:
    """spec.monitoring.predictionLog as the runtime's prediction_log_* settings (nothing when it is not set)."""
    log = spec.monitoring.prediction_log
    if log is None:
        return []
    env = [
        _env(env_var_name("prediction_log_sample_rate"), f"{log.sample_rate:g}"),
        _env(env_var_name("prediction_log_record"), log.record),
        _env(env_var_name("prediction_log_max_record_bytes"), str(log.max_record_bytes)),
        _env(env_var_name("prediction_log_sink"), log.sink),
        _env(env_var_name("prediction_log_arms_dir"), ARMS_DIR),
    ]
    if log.sink == "s3" and log.s3_prefix:
        env += [
            _env(env_var_name("prediction_log_s3_prefix"), log.s3_prefix),
            _env(env_var_name("prediction_log_batch_records"), str(log.batch_records)),
            _env(env_var_name("prediction_log_batch_seconds"), str(log.batch_seconds)),
        ]
    return env


def tracing_env(spec: ModelAPISpec, owner: Owner, images: RuntimeImages) -> list[dict[str, Any]]:
    """The runtime's standard OpenTelemetry variables: spec.monitoring.tracing over the operator's collector
    (nothing when neither names one, or the spec turns tracing off: the pod template stays as it was)."""
    tracing = spec.monitoring.tracing
    if tracing is not None and not tracing.enabled:
        return []
    endpoint = (tracing.endpoint if tracing is not None else None) or images.tracing_endpoint
    if not endpoint:
        return []
    rate = tracing.sample_rate if tracing is not None else images.tracing_sample_rate
    return [
        _env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        _env("OTEL_SERVICE_NAME", owner.name),
        _env("OTEL_RESOURCE_ATTRIBUTES", f"k8s.namespace.name={owner.namespace}"),
        _env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        _env("OTEL_TRACES_SAMPLER_ARG", f"{rate / 100:g}"),
    ]


def _runtime_env(
    spec: ModelAPISpec, model_name: str, revision: str, node_cache_port: int = 0, log_format: str = "text"
) -> list[dict[str, Any]]:
    model, runtime, storage = spec.model, spec.runtime, spec.storage
    env: list[dict[str, Any]] = [
        _env(env_var_name("model_uri"), model.uri),
        _env(env_var_name("name"), model_name),
        _env(env_var_name("revision"), revision),
    ]
    if model.sha256:
        env.append(_env(env_var_name("sha256"), model.sha256.lower()))
    if model.handler:
        env.append(_env(env_var_name("handler"), model.handler))
    if model.handler_sha256:
        env.append(_env(env_var_name("handler_sha256"), model.handler_sha256.lower()))
    env += [
        _env(env_var_name("port"), str(names.RUNTIME_PORT)),
        _env(env_var_name("max_batch_size"), str(runtime.batching.max_batch_size)),
        _env(env_var_name("max_latency_ms"), str(runtime.batching.max_latency_ms)),
        _env(env_var_name("threads"), str(runtime.threads)),
        # Explicit: a GPU pod without a working CUDA provider must fail, never serve slowly on CPU.
        _env(env_var_name("device"), "cuda" if runtime.resources.gpu > 0 else "cpu"),
        _env(env_var_name("model_dir"), MODEL_DIR),
        *_node_cache_env(node_cache_port),
    ]
    if runtime.batching.fill_when_idle:  # only when set: a default spec's pod template (and revision) stays the same
        env.append(_env(env_var_name("batch_fill_when_idle"), "true"))
    if storage.endpoint:
        env.append(_env(env_var_name("s3_endpoint"), storage.endpoint))
    if storage.region:
        env += [_env(env_var_name("s3_region"), storage.region), _env("AWS_REGION", storage.region)]
    if storage.credentials_secret:
        for key, optional in (
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_SESSION_TOKEN", True),
        ):
            ref: dict[str, Any] = {"name": storage.credentials_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    # spec.runtime.limits: set only where they differ from the runtime's defaults (which are theirs too), so a
    # ModelAPI that leaves them alone keeps its revision
    for field, value in runtime.limits.model_dump(by_alias=False).items():
        if value != RuntimeSettings.model_fields[field].default:
            env.append(_env(env_var_name(field), str(value)))
    if log_format != "text":  # only when set: the default keeps every pod template (and revision) as it was
        env.append(_env(env_var_name("log_format"), log_format))
    env += _prediction_log_env(spec)
    env += [item.model_dump(by_alias=True, exclude_none=True) for item in runtime.env]
    return env


def _probe(path: str, *, period: int, timeout: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def model_volume_bytes(spec: ModelAPISpec, artifact_bytes: int | None = None) -> int:
    """The model volume's size limit: spec.storage.cacheSize, or, when the artifact's size is known, that size plus
    headroom (whole MiB), never more than cacheSize."""
    bound = int(quantity_value(spec.storage.cache_size))
    if artifact_bytes is None:
        return bound
    sized = artifact_bytes + max(math.ceil(artifact_bytes * ARTIFACT_HEADROOM_SHARE), ARTIFACT_HEADROOM_MIN)
    return min(bound, math.ceil(sized / MiB) * MiB)


def _model_volume_limit(spec: ModelAPISpec, artifact_bytes: int | None) -> str:
    """cacheSize as written when the artifact is unknown (so templates of older revisions never change), else MiB."""
    if artifact_bytes is None:
        return spec.storage.cache_size
    return f"{model_volume_bytes(spec, artifact_bytes) // MiB}Mi"


def _resources(spec: ModelAPISpec, artifact_bytes: int | None = None) -> Manifest:
    resources = spec.runtime.resources
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu > 0:
        amounts[names.GPU_RESOURCE] = str(resources.gpu)
    # requests == limits: Guaranteed QoS, and the CPU quota the runtime derives its threads from. Disk is requested
    # (both volumes at their size limits), never limited: a container limit would also count its logs.
    requests = {**amounts, "ephemeral-storage": ephemeral_storage_request(spec, artifact_bytes)}
    return {"requests": requests, "limits": dict(amounts)}


def max_artifact_bytes(spec: ModelAPISpec, default: str, artifact_bytes: int | None = None) -> int:
    """The bound the runtime checks before a download: spec.storage.maxArtifactSize, else the operator's default,
    never more than the model volume (a larger artifact would get the pod evicted while it downloads)."""
    volume = model_volume_bytes(spec, artifact_bytes)
    bound = spec.storage.max_artifact_size or default
    return min(volume, int(quantity_value(bound))) if bound else volume


def ephemeral_storage_request(spec: ModelAPISpec, artifact_bytes: int | None = None) -> str:
    """The model volume's and /tmp's size limits together, in whole MiB."""
    total = model_volume_bytes(spec, artifact_bytes) + quantity_value(TMP_VOLUME_SIZE)
    return f"{math.ceil(total / MiB)}Mi"


def _tolerations(spec: ModelAPISpec) -> list[Manifest]:
    tolerations = [item.model_dump(by_alias=True, exclude_none=True) for item in spec.runtime.tolerations]
    if spec.runtime.resources.gpu > 0:
        tolerations.append({"key": names.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def build_pod_template(
    spec: ModelAPISpec, owner: Owner, revision: str, images: RuntimeImages, artifact_bytes: int | None = None
) -> Manifest:
    """The pod template of one revision. Pure: the same inputs give the same template. ``artifact_bytes``: the
    artifact's size when known (the model volume and the ephemeral-storage request are sized from it)."""
    container: Manifest = {
        "name": names.RUNTIME_CONTAINER,
        "image": runtime_image(spec, images),
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve"],
        "env": [
            *_runtime_env(spec, owner.name, revision, images.node_cache_port, images.log_format),
            *tracing_env(spec, owner, images),
            _env(
                env_var_name("max_artifact_bytes"),
                str(max_artifact_bytes(spec, images.max_artifact_size, artifact_bytes)),
            ),
        ],
        "ports": [{"name": "http", "containerPort": names.RUNTIME_PORT, "protocol": "TCP"}],
        "resources": _resources(spec, artifact_bytes),
        "startupProbe": _probe(
            STARTUP_PROBE_PATH, period=STARTUP_PERIOD_SECONDS, timeout=5, failures=STARTUP_FAILURE_THRESHOLD
        ),
        "readinessProbe": _probe("/v2/health/ready", period=5, timeout=2, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, timeout=5, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
        ],
    }
    pod_spec: Manifest = {
        "containers": [container],
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": _model_volume_limit(spec, artifact_bytes)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_VOLUME_SIZE}},
        ],
    }
    if spec.storage.service_account_name:
        pod_spec["serviceAccountName"] = spec.storage.service_account_name
    if images.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in images.pull_secrets]
    if spec.runtime.node_selector:
        pod_spec["nodeSelector"] = dict(spec.runtime.node_selector)
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.monitoring.prediction_log is not None:  # the arm of each record (builders/arms.py)
        container["volumeMounts"].append(arms_mount())
        pod_spec["volumes"].append(arms_volume(owner))
    return {
        "metadata": {
            "labels": canonical_labels(owner, revision),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(names.RUNTIME_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod_spec,
    }


def build_deployment(
    spec: ModelAPISpec,
    owner: Owner,
    revision: str,
    images: RuntimeImages,
    *,
    replicas: int | None = None,
    artifact_bytes: int | None = None,
) -> Manifest:
    """The Deployment ``<name>-<revision>``.

    ``replicas`` is left out when the HorizontalPodAutoscaler owns the count (the stable revision),
    so the operator's server-side apply never fights the autoscaler; it is set for a canary or a
    last-known-good revision whose size the operator decides.
    """
    surge, unavailable = effective_surge_and_unavailable(spec.rollout, spec.runtime.resources.gpu)
    # Redacted: a presigned URL's query is a credential (the pod's env has the whole URI, and the revision hash
    # covers it, so a new query still rolls out).
    record = RevisionRecord(
        model_uri=redact_uri(spec.model.uri), model_sha256=spec.model.sha256.lower() if spec.model.sha256 else None
    )
    deployment_spec: Manifest = {
        "selector": {"matchLabels": revision_selector(owner, revision)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
        },
        "revisionHistoryLimit": 1,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "template": build_pod_template(spec, owner, revision, images, artifact_bytes),
    }
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(names.revision_name(owner.name, revision), owner, revision, record.encode()),
        "spec": deployment_spec,
    }
