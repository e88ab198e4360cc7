"""The ModelAPI spec: what a data scientist writes. Field names are the contract of docs/api.md.

Every field's description is what ``kubectl explain modelapi.spec.<field>`` prints, and every
rule is a :class:`CelRule` enforced both by the API server and by ``modelapi render``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from modelapi_operator.api import patterns as p
from modelapi_operator.api.base import ApiModel
from modelapi_operator.api.rules import RULE_ERROR_TYPE, CelRule
from modelapi_runtime.settings import (
    MAX_QUEUE_RANGE,
    MAX_REQUEST_BYTES_RANGE,
    PREDICTION_LOG_BATCH_RECORDS_RANGE,
    PREDICTION_LOG_BATCH_SECONDS_RANGE,
    PREDICTION_LOG_RECORD_BYTES_RANGE,
    RuntimeSettings,
)

URI_MAX = 2048
NAME_MAX = 253
SCALE_TO_ZERO_MIN_SECONDS = 30
SCALE_TO_ZERO_MAX_SECONDS = 86_400
SCALE_TO_ZERO_DEFAULT_SECONDS = 300
MAX_LAST_KNOWN_GOOD_REPLICAS = 10  # warm replicas of a revision that serves nothing: a cost bound, not a scaling one

ArtifactScheme = CelRule(
    cel=p.cel_matches(p.ARTIFACT_SCHEME),
    message="must start with s3://, https:// or file:/// (e.g. s3://models/iris/1/model.onnx)",
    check=lambda v: p.search(p.ARTIFACT_SCHEME, v),
)
NoCredentialsInUri = CelRule(
    cel=f"!{p.cel_matches(p.URI_WITH_CREDENTIALS)}",
    message="must not contain credentials (user:password@); "
    "put them in the Secret named by spec.storage.credentialsSecret",
    check=lambda v: not p.search(p.URI_WITH_CREDENTIALS, v),
)
S3BucketAndKey = CelRule(
    cel=f"!self.startsWith('s3://') || {p.cel_matches(p.S3_BUCKET_AND_KEY)}",
    message="an s3 URI needs a bucket and a key: s3://BUCKET/KEY",
    check=lambda v: not v.startswith("s3://") or p.search(p.S3_BUCKET_AND_KEY, v),
)
HttpsHostAndPath = CelRule(
    cel=f"!self.startsWith('https://') || {p.cel_matches(p.HTTPS_HOST_AND_PATH)}",
    message="an https URI needs a host and a path: https://HOST/PATH",
    check=lambda v: not v.startswith("https://") or p.search(p.HTTPS_HOST_AND_PATH, v),
)
NoWhitespace = p.regex_rule(p.NO_WHITESPACE, "must not be empty or contain whitespace")

ArtifactUri = Annotated[
    str,
    Field(max_length=URI_MAX),
    NoWhitespace,
    ArtifactScheme,
    NoCredentialsInUri,
    S3BucketAndKey,
    HttpsHostAndPath,
]
HandlerUri = Annotated[
    ArtifactUri,
    p.regex_rule(p.PYTHON_MODULE, "must name a Python module ending in .py (e.g. s3://models/iris/1/handler.py)"),
]
Sha256 = Annotated[
    str,
    Field(max_length=64),
    p.regex_rule(p.SHA256_HEX, "must be 64 hexadecimal characters: the SHA-256 of the artifact (sha256sum FILE)"),
]
ObjectName = Annotated[
    str,
    Field(max_length=NAME_MAX),
    p.regex_rule(
        p.DNS1123_SUBDOMAIN,
        "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a "
        "letter or digit",
    ),
]
Quantity = Annotated[
    str,
    Field(max_length=64),
    CelRule(
        cel="isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
        message='must be a positive Kubernetes quantity such as "500m", "2" or "4Gi"',
        check=p.quantity_is_positive,
    ),
]
IntOrPercent = Annotated[
    int | str,
    CelRule(
        cel=f"type(self) == int ? int(self) >= 0 : {p.cel_matches(p.PERCENT, 'string(self)')}",
        message='must be a whole number of pods (0 or more) or a percentage such as "25%"',
        check=lambda v: v >= 0 if isinstance(v, int) else p.search(p.PERCENT, v),
    ),
]


class ModelSpec(ApiModel):
    """The model artifact to serve."""

    uri: ArtifactUri = Field(
        description="Where the model is: s3://BUCKET/KEY (any S3-compatible store), https://HOST/PATH, or "
        "file:///PATH on a volume mounted into the pod. Changing it starts a new revision and a rollout."
    )
    sha256: Sha256 | None = Field(
        default=None,
        description="Optional SHA-256 of the artifact. When set, an artifact that does not match is never "
        "served (condition reason ChecksumMismatch).",
    )
    format: Literal["onnx"] = Field(default="onnx", description="Model format. Only onnx for now.")
    handler: HandlerUri | None = Field(
        default=None,
        description="Optional pre/post-processing Python module (same URI schemes as uri) with preprocess(payload) "
        "and/or postprocess(outputs, payload).",
    )
    handler_sha256: Sha256 | None = Field(
        default=None, description="Optional SHA-256 of the handler module; a mismatch is never loaded."
    )

    __rules__ = (
        CelRule(
            cel="!has(self.handlerSha256) || has(self.handler)",
            message="handlerSha256 needs handler",
            check=lambda s: s.handler_sha256 is None or s.handler is not None,
            field="handlerSha256",
        ),
    )


class StorageSpec(ApiModel):
    """How the runtime reaches the artifact."""

    endpoint: (
        Annotated[
            str,
            Field(max_length=URI_MAX),
            p.regex_rule(
                p.ENDPOINT_URL,
                "must be an http:// or https:// URL without credentials, e.g. http://minio:9000",
            ),
        ]
        | None
    ) = Field(default=None, description="S3 endpoint override for S3-compatible stores (MinIO, versitygw, Ceph...).")
    region: (
        Annotated[
            str,
            Field(max_length=64),
            p.regex_rule(p.REGION, "must be an S3 region name such as us-east-1"),
        ]
        | None
    ) = Field(default=None, description="S3 region. Defaults to the store's or the SDK's default.")
    credentials_secret: ObjectName | None = Field(
        default=None,
        description="Optional Secret in the same namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(and optionally AWS_SESSION_TOKEN). Referenced by name only; the operator never reads its values.",
    )
    cache_size: Quantity = Field(
        default="5Gi",
        description="Size limit of the pod's model volume (an emptyDir that holds the downloaded artifact and "
        "handler): the pod is evicted if they outgrow it. It is also the pod's ephemeral-storage request (plus "
        "512Mi for /tmp), so the scheduler places it where the disk fits. Raise it for artifacts above ~4.5 GiB. "
        "A new revision of an artifact a revision already loaded (same model.sha256, no handler) gets the "
        "artifact's size plus a tenth (at least 64Mi) instead, never more than this.",
    )
    max_artifact_size: Quantity | None = Field(
        default=None,
        description="Largest artifact the pods accept, checked against the store's HEAD before any download: a "
        "larger one fails with reason ArtifactTooLarge naming its size, and a serving revision keeps serving. "
        "Unset: the operator's default (chart value maxArtifactSize); never more than cacheSize.",
    )
    service_account_name: ObjectName | None = Field(
        default=None,
        description="Optional ServiceAccount for the model pods, e.g. one bound to a cloud role (IRSA, workload "
        "identity) instead of static credentials.",
    )


class ResourcesSpec(ApiModel):
    """Compute for each replica. Requests equal limits (Guaranteed QoS) so latency is predictable."""

    cpu: Quantity = Field(default="1", description="CPU per replica (request = limit), e.g. 500m or 2.")
    memory: Quantity = Field(default="2Gi", description="Memory per replica (request = limit), e.g. 2Gi.")
    gpu: int = Field(
        default=0,
        ge=0,
        le=16,
        description="NVIDIA GPUs per replica. Above 0: an nvidia.com/gpu limit, the GPU runtime image, a GPU "
        "toleration, and rollout defaults maxSurge 0 / maxUnavailable 1.",
    )


class BatchingSpec(ApiModel):
    """Dynamic batching: concurrent requests are merged into one model call (a request that finds the model idle runs
    at once, unless fillWhenIdle; those that arrive while it is busy form the next batch)."""

    max_batch_size: int = Field(default=1, ge=1, le=4096, description="Largest batch; 1 turns batching off.")
    max_latency_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Longest time a batch stays open for more requests while the model is busy, in ms; a request "
        "that finds the model idle is never held back (unless fillWhenIdle).",
    )
    fill_when_idle: bool = Field(
        default=False,
        description="Hold every batch open for up to maxLatencyMs, even when the model is idle, to run fuller "
        "batches (for an accelerator that runs a full batch in about the time of one row); at low load each request "
        "then waits up to the window.",
    )


def _runtime_default(field: str) -> int:
    default = RuntimeSettings.model_fields[field].default
    assert isinstance(default, int)
    return default


class LimitsSpec(ApiModel):
    """Per-replica limits of the runtime against heavy or hostile clients; its other limits keep their defaults."""

    max_request_bytes: int = Field(
        default=_runtime_default("max_request_bytes"),
        ge=MAX_REQUEST_BYTES_RANGE[0],
        le=MAX_REQUEST_BYTES_RANGE[1],
        description="Largest inference request body, in bytes (1024 to 1073741824; default 16777216, 16 MiB). A "
        "larger body gets 413 before it is read, and its connection is closed.",
    )
    max_queue: int = Field(
        default=_runtime_default("max_queue"),
        ge=MAX_QUEUE_RANGE[0],
        le=MAX_QUEUE_RANGE[1],
        description="Inference requests in progress per replica, counted once their body is received (1 to 65536; "
        "default 256). Beyond it a request gets 503 with Retry-After.",
    )


class SecretKeySelector(ApiModel):
    """A key of a Secret in the pod's namespace."""

    name: ObjectName = Field(description="Secret name.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Key within the Secret.")
    optional: bool | None = Field(default=None, description="Start the pod even when the key is missing.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the pod's namespace."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(description="Key within the ConfigMap.")
    optional: bool | None = Field(default=None, description="Start the pod even when the key is missing.")


class FieldSelector(ApiModel):
    """A field of the pod, e.g. metadata.name or status.podIP."""

    field_path: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Path of the pod field.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: FieldSelector | None = Field(default=None, description="A field of the pod.")

    __rules__ = (
        CelRule(
            cel="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)].filter(x, x).size() == 1",
            message="valueFrom needs exactly one of secretKeyRef, configMapKeyRef or fieldRef",
            check=lambda s: sum(x is not None for x in (s.secret_key_ref, s.config_map_key_ref, s.field_ref)) == 1,
        ),
    )


class EnvVar(ApiModel):
    """An extra environment variable for the runtime container (e.g. for the handler)."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=256),
        p.regex_rule(p.ENV_NAME, "must be an environment variable name: letters, digits, '_', '.', '-'"),
    ] = Field(description="Variable name. MODELAPI_* and the AWS credential variables are set by the operator.")
    value: Annotated[str, Field(max_length=32_768)] | None = Field(
        default=None, description="Plain value. Never a secret: use valueFrom.secretKeyRef for those."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret, ConfigMap or field."
    )

    __rules__ = (
        CelRule(
            cel=f"!{p.cel_matches(p.RESERVED_ENV_NAME, 'self.name')}",
            message="MODELAPI_* and AWS credential variables are set by the operator: use spec.model, spec.runtime "
            "or spec.storage.credentialsSecret instead",
            check=lambda s: not p.search(p.RESERVED_ENV_NAME, s.name),
            field="name",
        ),
        CelRule(
            cel=f"!has(self.value) || !{p.cel_matches(p.SECRET_LIKE_ENV_NAME, 'self.name')}",
            message="this variable looks like a secret: use valueFrom.secretKeyRef, never a plain value",
            check=lambda s: s.value is None or not p.search(p.SECRET_LIKE_ENV_NAME, s.name),
            field="value",
        ),
        CelRule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="set either value or valueFrom, not both",
            check=lambda s: not (s.value is not None and s.value_from is not None),
            field="valueFrom",
        ),
    )


class Toleration(ApiModel):
    """A pod toleration (same fields as core/v1 Toleration)."""

    key: Annotated[str, Field(max_length=316)] | None = Field(default=None, description="Taint key; empty = all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: Annotated[str, Field(max_length=63)] | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty = all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )

    __rules__ = (
        CelRule(
            cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
            message="a toleration with operator Exists must not set value",
            check=lambda s: s.operator != "Exists" or not s.value,
            field="value",
        ),
    )


class RuntimeSpec(ApiModel):
    """The serving container."""

    @model_validator(mode="after")
    def _env_names_unique(self) -> Self:
        # The CRD refuses duplicates through x-kubernetes-list-type: map ("Duplicate value").
        seen: set[str] = set()
        for index, variable in enumerate(self.env):
            if variable.name in seen:
                raise PydanticCustomError(
                    RULE_ERROR_TYPE, f'Duplicate value: "{variable.name}"', {"field": f"env[{index}]"}
                )
            seen.add(variable.name)
        return self

    image: Annotated[
        str,
        Field(max_length=512),
        CelRule(
            cel=f"self == '' || {p.cel_matches(p.NO_WHITESPACE)}",
            message="must be an image reference without whitespace, e.g. registry.example/modelapi-runtime:1.0",
            check=lambda v: v == "" or p.search(p.NO_WHITESPACE, v),
        ),
    ] = Field(
        default="",
        description="Override of the operator's default runtime image (CPU or GPU by resources.gpu).",
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description=ResourcesSpec.__doc__)
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description=BatchingSpec.__doc__)
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description=LimitsSpec.__doc__)
    threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="onnxruntime intra-op threads; 0 derives them from the container's CPU limit.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables for the runtime container; secrets only through valueFrom.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63, description="Label value.")]] = Field(
        default_factory=dict, description="Node labels the model pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations for the model pods (a GPU one is added for gpu > 0).",
    )


class AutoscalingSpec(ApiModel):
    """Horizontal autoscaling of the stable revision (a HorizontalPodAutoscaler)."""

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest replicas. 0 scales the model to zero after scaleToZeroAfterSeconds without requests; the "
        "next request is held by the activator (installed with the chart) until a replica is ready.",
    )
    max_replicas: int = Field(default=5, ge=1, le=1000, description="Most replicas.")
    metric: Literal["cpu", "memory", "inFlight"] = Field(
        default="cpu",
        description="What to scale on: cpu or memory utilization, or inFlight (concurrent requests per replica, "
        "from the runtime's modelapi_inflight_requests metric through a metrics adapter).",
    )
    target: int = Field(
        default=70,
        ge=1,
        le=10_000,
        description="Target per replica: percent of the request for cpu/memory, requests in flight for inFlight.",
    )
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="How long scale-up recommendations are smoothed."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="How long load must stay low before replicas are removed."
    )

    scale_to_zero_after_seconds: int | None = Field(
        default=None,
        description=f"With minReplicas 0: how long the model must receive no request before it goes to zero "
        f"replicas ({SCALE_TO_ZERO_MIN_SECONDS}..{SCALE_TO_ZERO_MAX_SECONDS}; default "
        f"{SCALE_TO_ZERO_DEFAULT_SECONDS}).",
    )

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0

    @property
    def idle_seconds(self) -> int:
        """How long without a request before the model goes to zero (the default when unset)."""
        return self.scale_to_zero_after_seconds or SCALE_TO_ZERO_DEFAULT_SECONDS

    __rules__ = (
        CelRule(
            cel="!has(self.scaleToZeroAfterSeconds) || self.minReplicas == 0",
            message="scaleToZeroAfterSeconds needs minReplicas: 0 (scale to zero)",
            check=lambda s: s.scale_to_zero_after_seconds is None or s.min_replicas == 0,
            field="scaleToZeroAfterSeconds",
        ),
        CelRule(
            cel=f"!has(self.scaleToZeroAfterSeconds) || (self.scaleToZeroAfterSeconds >= {SCALE_TO_ZERO_MIN_SECONDS} "
            f"&& self.scaleToZeroAfterSeconds <= {SCALE_TO_ZERO_MAX_SECONDS})",
            message=f"scaleToZeroAfterSeconds must be between {SCALE_TO_ZERO_MIN_SECONDS} and "
            f"{SCALE_TO_ZERO_MAX_SECONDS} seconds (a shorter idle time would scale a model down between two "
            "requests; Prometheus needs a few scrapes to see it idle)",
            check=lambda s: (
                s.scale_to_zero_after_seconds is None
                or SCALE_TO_ZERO_MIN_SECONDS <= s.scale_to_zero_after_seconds <= SCALE_TO_ZERO_MAX_SECONDS
            ),
            field="scaleToZeroAfterSeconds",
        ),
        CelRule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field="minReplicas",
        ),
    )


class CanaryStep(ApiModel):
    """One step of a canary: send `weight` percent of traffic to the new revision, then wait."""

    weight: int = Field(ge=1, le=100, description="Percent of traffic for the canary during this step (1..100).")
    pause_seconds: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="How long to hold this step (and analyse it) before the next.",
    )


class AnalysisSpec(ApiModel):
    """Metric checks of the canary, read from Prometheus every interval."""

    interval_seconds: int = Field(default=30, ge=10, le=3600, description="How often the canary is checked.")
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Highest tolerated share of server faults over an interval (0..1): 5xx answers other than 503 "
        "(overload, not ready); client errors (4xx) never count.",
    )
    max_latency_p99_ms: float = Field(
        default=500, gt=0, le=600_000, description="Highest tolerated p99 latency over an interval, in ms."
    )
    failure_limit: int = Field(
        default=3, ge=1, le=100, description="Consecutive failed checks that roll the canary back."
    )


class GatewayRef(ApiModel):
    """The Gateway (Gateway API) the HTTPRoute attaches to."""

    name: ObjectName = Field(description="Gateway name.")
    namespace: ObjectName | None = Field(default=None, description="Gateway namespace; defaults to the ModelAPI's.")
    section_name: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Listener of the Gateway to attach to."
    )


class ExposeSpec(ApiModel):
    """An address outside the cluster: an HTTPRoute `<name>-expose` on a Gateway's listener that routes this
    model's paths (`/v1/models/<name>`, `/v2/models/<name>`, after `pathPrefix`) on `hostname`. Several ModelAPIs
    may share a hostname; status.url becomes this address once the route is accepted."""

    hostname: Annotated[
        str,
        Field(max_length=253),
        p.regex_rule(
            p.HOSTNAME,
            "must be a DNS host name (lowercase letters, digits, '-' and '.'; no wildcard, no port), e.g. "
            "models.example.com",
        ),
    ] = Field(description="Host name the route matches (the HTTP Host header, or the TLS server name).")
    path_prefix: (
        Annotated[
            str,
            Field(max_length=200),
            p.regex_rule(
                p.PATH_PREFIX,
                "must be a path such as /team-a: '/' then letters, digits, '.', '_', '~' or '-' per segment, no "
                "trailing '/'",
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="Path before the model's paths (/team-a -> /team-a/v1/models/<name>); removed before the "
        "request reaches the model.",
    )
    gateway: GatewayRef = Field(description="The Gateway (and optionally its listener) the route attaches to.")


class CanarySpec(ApiModel):
    """Canary settings: used when rollout.strategy is Canary."""

    steps: list[CanaryStep] = Field(
        default_factory=list,
        max_length=20,
        description="Traffic steps, with strictly increasing weights. After the last one the canary is promoted.",
    )
    analysis: AnalysisSpec | None = Field(
        default=None, description="Metric checks; without them steps advance on readiness and time."
    )
    traffic_routing: Literal["auto", "gatewayAPI", "replicas"] = Field(
        default="auto",
        description="How traffic is split: gatewayAPI (HTTPRoute weights), replicas (replica ratio behind one "
        "Service), or auto (gatewayAPI when its CRDs exist and a gateway is named).",
    )
    gateway: GatewayRef | None = Field(default=None, description="parentRef of the HTTPRoute (gatewayAPI routing).")

    __rules__ = (
        CelRule(
            cel="self.trafficRouting != 'gatewayAPI' || has(self.gateway)",
            message="trafficRouting gatewayAPI needs gateway (the Gateway the HTTPRoute attaches to)",
            check=lambda s: s.traffic_routing != "gatewayAPI" or s.gateway is not None,
            field="gateway",
        ),
        CelRule(
            cel="self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1)",
            message="step weights must be strictly increasing",
            check=lambda s: all(a.weight < b.weight for a, b in zip(s.steps, s.steps[1:], strict=False)),
            field="steps",
        ),
    )


def _is_zero(value: int | str | None) -> bool:
    return value in (0, "0%")


class RolloutSpec(ApiModel):
    """How a new revision replaces the current one."""

    strategy: Literal["RollingUpdate", "Canary"] = Field(
        default="RollingUpdate",
        description="RollingUpdate replaces the stable revision once the new one is available; Canary shifts "
        "traffic in steps and promotes or rolls back from metrics.",
    )
    max_surge: IntOrPercent | None = Field(
        default=None,
        description="Extra pods allowed during a rollout (number or percent). Default 25%, or 0 when gpu > 0 "
        "(a surge pod would wait forever for a GPU), or 1 when maxUnavailable is set to 0.",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    max_unavailable: IntOrPercent | None = Field(
        default=None,
        description="Pods that may be unavailable during a rollout. Default 0, or 1 when gpu > 0 or maxSurge is 0.",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    )
    canary: CanarySpec | None = Field(default=None, description=CanarySpec.__doc__)
    last_known_good_replicas: int = Field(
        default=0,
        ge=0,
        le=MAX_LAST_KNOWN_GOOD_REPLICAS,
        description="Warm replicas of the last-known-good revision (the stable one before the last promotion, kept "
        "after either strategy for a rollback). 0 keeps it at zero replicas: a rollback starts its pods (from the "
        "node cache when the artifact is still there). Each warm replica costs what one pod of that revision "
        "requests (cpu, memory, gpu, ephemeral-storage) and serves no traffic. Needs autoscaling.minReplicas >= 1.",
    )

    __rules__ = (
        CelRule(
            cel="self.strategy != 'Canary' || (has(self.canary) && size(self.canary.steps) > 0)",
            message="strategy Canary needs canary.steps (at least one step)",
            check=lambda s: s.strategy != "Canary" or (s.canary is not None and len(s.canary.steps) > 0),
            field="canary",
        ),
        CelRule(
            cel="!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] && "
            "string(self.maxUnavailable) in ['0', '0%'])",
            message="maxSurge and maxUnavailable must not both be 0: the rollout could never make progress",
            check=lambda s: not (_is_zero(s.max_surge) and _is_zero(s.max_unavailable)),
            field="maxUnavailable",
        ),
    )


class PredictionLogSpec(ApiModel):
    """A sample of inference requests recorded with their payloads (docs/api.md "Prediction log"): to the runtime's
    stdout as JSON lines, or to S3 as batched newline-delimited JSON. Never in a request's way: records that cannot
    be queued are dropped and counted."""

    sample_rate: float = Field(
        ge=0,
        le=100,
        description="Percent of inference requests recorded (0 to 100; 0 records none, 100 every one).",
    )
    record: Literal["inputs", "outputs", "both"] = Field(
        default="both", description="What a record holds besides its metadata: inputs, outputs, or both."
    )
    max_record_bytes: int = Field(
        default=_runtime_default("prediction_log_max_record_bytes"),
        ge=PREDICTION_LOG_RECORD_BYTES_RANGE[0],
        le=PREDICTION_LOG_RECORD_BYTES_RANGE[1],
        description="Most payload bytes in one record (256 to 1048576; default 16384); longer payloads are cut and "
        "the record says truncated.",
    )
    sink: Literal["stdout", "s3"] = Field(
        default="stdout",
        description="stdout: one JSON object per line on the runtime's stdout (its log lines are on stderr; every "
        "record has kind prediction), for the cluster's log pipeline. s3: newline-delimited JSON objects under "
        "s3Prefix, written with the model's own spec.storage endpoint and credentials.",
    )
    s3_prefix: (
        Annotated[
            str,
            Field(max_length=URI_MAX),
            p.regex_rule(p.S3_PREFIX, "must be s3://BUCKET/ or s3://BUCKET/PATH/ (ending with /)"),
        ]
        | None
    ) = Field(default=None, description="Where the s3 sink writes: s3://BUCKET/PATH/ (needed by sink s3).")
    batch_records: int = Field(
        default=_runtime_default("prediction_log_batch_records"),
        ge=PREDICTION_LOG_BATCH_RECORDS_RANGE[0],
        le=PREDICTION_LOG_BATCH_RECORDS_RANGE[1],
        description="The s3 sink writes an object once it holds this many records (1 to 100000; default 1000)...",
    )
    batch_seconds: int = Field(
        default=60,
        ge=PREDICTION_LOG_BATCH_SECONDS_RANGE[0],
        le=PREDICTION_LOG_BATCH_SECONDS_RANGE[1],
        description="...or once its oldest record is this many seconds old (1 to 3600; default 60).",
    )

    __rules__ = (
        CelRule(
            cel="!has(self.sink) || self.sink != 's3' || has(self.s3Prefix)",
            message="sink s3 needs s3Prefix (s3://BUCKET/PATH/)",
            check=lambda s: s.sink != "s3" or s.s3_prefix is not None,
            field="s3Prefix",
        ),
    )


class TracingSpec(ApiModel):
    """Traces of inference requests (docs/api.md "Tracing"): the runtime honours a caller's W3C traceparent and sends
    a span per request and per phase (decode, queue, inference, encode) to an OpenTelemetry collector over OTLP/HTTP.
    Without this field, models are traced when the operator has a collector (the chart's tracing.otlpEndpoint)."""

    enabled: bool = Field(
        default=True, description="false: this model is never traced, even when the operator has a collector."
    )
    sample_rate: float = Field(
        default=100,
        ge=0,
        le=100,
        description="Percent of the requests without a caller's trace that start one (0 to 100; default 100). A "
        "request whose caller's traceparent says sampled is always traced, one that says not sampled never is.",
    )
    endpoint: (
        Annotated[
            str,
            Field(max_length=URI_MAX),
            p.regex_rule(
                p.ENDPOINT_URL,
                "must be an http:// or https:// URL without credentials: the collector's OTLP/HTTP address, e.g. "
                "http://otel-collector.observability:4318",
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="The collector's OTLP/HTTP base URL (spans are POSTed to ENDPOINT/v1/traces); unset: the "
        "operator's (the chart's tracing.otlpEndpoint).",
    )


class MonitoringSpec(ApiModel):
    """What the model's pods record beyond their metrics."""

    prediction_log: PredictionLogSpec | None = Field(default=None, description=PredictionLogSpec.__doc__)
    tracing: TracingSpec | None = Field(default=None, description=TracingSpec.__doc__)


def _keeps_warm_at_zero(spec: ModelAPISpec) -> bool:
    return spec.rollout.last_known_good_replicas > 0 and spec.autoscaling.min_replicas == 0


class ModelAPISpec(ApiModel):
    """A model served as an autoscaled, monitored, zero-downtime HTTP API."""

    model: ModelSpec = Field(description=ModelSpec.__doc__)
    storage: StorageSpec = Field(default_factory=StorageSpec, description=StorageSpec.__doc__)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description=RuntimeSpec.__doc__)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description=AutoscalingSpec.__doc__)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description=RolloutSpec.__doc__)
    expose: ExposeSpec | None = Field(default=None, description=ExposeSpec.__doc__)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description=MonitoringSpec.__doc__)

    __rules__ = (
        CelRule(
            cel="!has(self.rollout) || !has(self.rollout.lastKnownGoodReplicas) || "
            "self.rollout.lastKnownGoodReplicas == 0 || !has(self.autoscaling) || "
            "!has(self.autoscaling.minReplicas) || self.autoscaling.minReplicas > 0",
            message="rollout.lastKnownGoodReplicas needs autoscaling.minReplicas >= 1: a model that scales to zero "
            "keeps no warm replica of an older revision",
            check=lambda s: not _keeps_warm_at_zero(s),
            field="rollout",
        ),
    )
