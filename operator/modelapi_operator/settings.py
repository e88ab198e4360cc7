"""Operator settings (pydantic-settings): every field is an environment variable MODELAPI_OPERATOR_<FIELD>."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_CPU_IMAGE = "modelapi/runtime:0.1.0"
DEFAULT_GPU_IMAGE = "modelapi/runtime-gpu:0.1.0"
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class OperatorSettings(BaseSettings):
    """How the operator runs, e.g. MODELAPI_OPERATOR_CPU_IMAGE=registry.example/modelapi-runtime:1.2."""

    model_config = SettingsConfigDict(env_prefix="MODELAPI_OPERATOR_", extra="ignore", frozen=True)

    cpu_image: str = Field(default=DEFAULT_CPU_IMAGE, description="Default runtime image for CPU models.")
    gpu_image: str = Field(default=DEFAULT_GPU_IMAGE, description="Default runtime image for GPU models.")
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Secrets every model pod pulls its image with (comma-separated names; each must exist in the "
        "model's namespace); empty = none.",
    )
    metrics_address: str = Field(
        default="",
        pattern=r"^(|[^\s:]*:[0-9]{1,5}|\[[0-9a-fA-F:]+\]:[0-9]{1,5})$",
        description="HOST:PORT where the operator serves its Prometheus metrics at /metrics (the chart sets "
        "0.0.0.0:8081); empty = no metrics endpoint.",
    )
    prometheus_url: str | None = Field(default=None, description="Prometheus base URL (canary analysis, cold start).")
    prometheus_namespace_label: str = Field(
        default="namespace",
        description="Label that holds the pod's namespace on the runtime's metrics in Prometheus.",
    )
    activator_service: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The activator's Service as NAMESPACE/NAME (the chart sets it with activator.enabled): models "
        "with minReplicas 0 are sent there while at zero; unset = no scale to zero (they keep 1 replica).",
    )
    max_artifact_size: str = Field(
        default="",
        pattern=r"^$|^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Default bound on artifact size for ModelAPIs without spec.storage.maxArtifactSize (a quantity, "
        "e.g. 20Gi; chart value maxArtifactSize); empty: their cacheSize.",
    )
    node_cache_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the node cache agent on every node (the chart's nodeCache DaemonSet sets it): model pods "
        "fetch their artifact through the agent at their node's address; 0 = no node cache (each pod downloads).",
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch (comma-separated); empty = all namespaces."
    )
    peering: str | None = Field(
        default=None,
        description="kopf peering name for several replicas (one acts, the others stand by); unset = standalone.",
    )
    peering_priority: int | None = Field(
        default=None,
        ge=0,
        description="This replica's kopf peering priority (the highest acts, the others stand by); unset = random, "
        "so two replicas never tie (kopf pauses every replica of a tied priority).",
    )
    peering_lifetime_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="How long a replica's peering heartbeat counts: a standby replica takes over at most this long "
        "after the active one died without saying goodbye (SIGKILL, node loss).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of the operator and of every model pod (MODELAPI_LOG_FORMAT): text, or json (one "
        "object per line; chart value logFormat). Changing it starts a new revision of every model.",
    )
    tracing_endpoint: str = Field(
        default="",
        pattern=r"^$|^https?://[^/@\s]+(/[^@\s]*)?$",
        description="An OpenTelemetry collector's OTLP/HTTP base URL (chart value tracing.otlpEndpoint): every model "
        "pod sends its traces there unless its spec.monitoring.tracing says otherwise; empty: only models whose spec "
        "names an endpoint are traced. Changing it starts a new revision of every model.",
    )
    tracing_sample_rate: float = Field(
        default=100,
        ge=0,
        le=100,
        description="Percent of requests without a caller's trace that start one, for models without "
        "spec.monitoring.tracing.sampleRate (chart value tracing.sampleRate).",
    )
    resync_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="Every ModelAPI is reconciled at least this often (drift, status); one that serves with nothing "
        "under way and nothing it reads changed since, only every 10th time.",
    )
    canary_tick_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="How often a ModelAPI with a canary in progress, or with minReplicas 0 (idleness, activator "
        "endpoints), is reconciled.",
    )
    watch_server_timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="Server-side timeout of each watch request (it reconnects after)."
    )
    watch_client_timeout_seconds: int = Field(
        default=330, ge=10, le=3700, description="Client-side timeout of each watch request: a silent watch dies."
    )
    watch_inactivity_timeout_seconds: float = Field(
        default=70,
        ge=5,
        le=3600,
        description="A watch that delivers nothing, not even a bookmark (sent about every 60 s), for this long is "
        "dropped and re-established: a silent connection is not trusted.",
    )
    max_concurrent_reconciles: int = Field(
        default=16, ge=1, le=512, description="Reconciles that may run at once (the rest wait their turn)."
    )
    unschedulable_grace_seconds: float = Field(
        default=20,
        ge=0,
        le=3600,
        description="How long a model's pod may stay unschedulable before the ModelAPI reports it (Unschedulable, "
        "or WaitingForCapacity while a cluster autoscaler adds nodes): a scheduler often places a pod a moment later.",
    )
    autoscaling_limited_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="How long the HorizontalPodAutoscaler must want more replicas than maxReplicas before the "
        "ModelAPI says AutoscalingLimited (and how long it must want no more before that clears while at the max).",
    )
    request_timeout_seconds: float = Field(default=30, gt=0, le=300, description="Timeout of each API request.")
    posting_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING", description="Lowest kopf log level that is also posted as a Kubernetes Event."
    )

    # The cluster policy (chart values policy.*; see cluster_policy.py and SECURITY.md).
    policy_allowed_image_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Image prefixes spec.runtime.image may start with (comma-separated); empty = the repositories "
        "of cpu_image and gpu_image; * = any image.",
    )
    policy_allow_handlers: bool = Field(
        default=True, description="Whether a ModelAPI may name a handler (Python code run in its pods)."
    )
    policy_require_sha256: bool = Field(
        default=False, description="Whether spec.model.sha256 (and handlerSha256 with a handler) is required."
    )
    policy_allowed_toleration_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Taint keys spec.runtime.tolerations may name (comma-separated); * = any; empty = none.",
    )
    policy_allowed_node_selector_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Node label keys spec.runtime.nodeSelector may name (comma-separated); * = any; empty = none.",
    )

    @field_validator(
        "namespaces",
        "image_pull_secrets",
        "policy_allowed_image_prefixes",
        "policy_allowed_toleration_keys",
        "policy_allowed_node_selector_keys",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        wrong = [name for name in value if not _SECRET_NAME.fullmatch(name)]
        if wrong:
            raise ValueError(f"not Secret names (lower-case DNS subdomains): {', '.join(wrong)}")
        return value
