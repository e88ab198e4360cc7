"""The runtime's configuration: the one definition of the operator <-> runtime contract.

Every field is a ``modelapi-runtime`` flag (``--model-uri``) and a ``MODELAPI_*`` environment
variable (``MODELAPI_MODEL_URI``). The operator builds the pod's environment from these field
names (see :func:`env_var_name`), so a rename here is a contract change seen by both sides.

This module must stay light: the operator imports it, and it must not pull onnxruntime, numpy,
boto3 or FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_PREFIX = "MODELAPI_"
# Bounds of the settings a model owner sets through the ModelAPI (spec.runtime.limits): the CRD uses the same.
MAX_REQUEST_BYTES_RANGE = (1024, 1024 * 1024 * 1024)
MAX_QUEUE_RANGE = (1, 65536)
# spec.monitoring.predictionLog's bounds (the CRD uses the same)
PREDICTION_LOG_RECORD_BYTES_RANGE = (256, 1024 * 1024)
PREDICTION_LOG_BATCH_RECORDS_RANGE = (1, 100_000)
PREDICTION_LOG_BATCH_SECONDS_RANGE = (1, 3600)

Device = Literal["auto", "cpu", "cuda"]
HttpLayer = Literal["fast", "uvicorn"]
PredictionLogRecord = Literal["inputs", "outputs", "both"]
PredictionLogSink = Literal["stdout", "s3"]
LogFormat = Literal["text", "json"]


class RuntimeSettings(BaseModel):
    """Settings of ``modelapi-runtime serve`` (and, for the artifact fields, ``pull``): the values given as arguments,
    else the ``MODELAPI_*`` environment variables (:func:`from_environment`), else the defaults.

    A plain pydantic model, not pydantic-settings' ``BaseSettings``: importing pydantic-settings (its sources for
    dotenv, CLI, cloud secrets) cost every model pod's start about 0.035 CPU-s, for what :func:`from_environment` does.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**from_environment(os.environ), **values})

    model_uri: str = Field(description="Artifact URI: s3://BUCKET/KEY, https://..., or file:///path.")
    name: str = Field(default="model", description="Model name used in the URL paths and metric labels.")
    revision: str = Field(default="", description="Revision label for metrics (set by the operator).")
    sha256: str | None = Field(default=None, description="Expected SHA-256 of the model artifact (64 hex).")
    handler: str | None = Field(default=None, description="Optional pre/post-processing module URI (.py).")
    handler_sha256: str | None = Field(default=None, description="Expected SHA-256 of the handler module.")
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port for inference, health and metrics.")
    host: str = Field(default="0.0.0.0", description="Address to bind.")  # noqa: S104 - a server in a pod
    max_batch_size: int = Field(default=1, ge=1, le=4096, description="Dynamic batching size; 1 = off.")
    max_latency_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Longest time a batch stays open while the model is busy, in ms (never a wait when idle).",
    )
    batch_fill_when_idle: bool = Field(
        default=False,
        description="Hold a batch open for up to max_latency_ms even when the model is idle (fuller batches for an "
        "accelerator that needs them; every request then waits up to the window at low load).",
    )
    threads: int = Field(default=0, ge=0, le=1024, description="onnxruntime intra-op threads; 0 = derived.")
    device: Device = Field(default="auto", description="auto (CUDA when active), cpu, or cuda (fail if absent).")
    model_dir: str = Field(default="/models", description="Writable directory for downloaded artifacts (the cache).")
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint override (MinIO, versitygw, ...).")
    s3_region: str | None = Field(default=None, description="S3 region.")
    # Added with the runtime (issue 4); all optional, the defaults are what a pod wants.
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=MAX_REQUEST_BYTES_RANGE[0],
        le=MAX_REQUEST_BYTES_RANGE[1],
        description="Largest request body; larger ones get 413 unread.",
    )
    max_queue: int = Field(
        default=256,
        ge=MAX_QUEUE_RANGE[0],
        le=MAX_QUEUE_RANGE[1],
        description="Inference requests in progress (body received) before new ones get 503 + Retry-After.",
    )
    # Limits against hostile or broken clients (runtime/README.md, "Limits against hostile clients").
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request's head (request line and headers) must arrive within this many seconds of its "
        "first byte, and a new connection must begin its first request as soon; else 408 and the connection is "
        "closed.",
    )
    body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A request's body must arrive within this many seconds after its head's deadline (the whole "
        "request within header + body timeouts of its first byte); else 408 and the connection is closed.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request head (request line and headers); larger ones get 431 and the connection "
        "is closed.",
    )
    max_inflight_bytes: int = Field(
        default=0,
        ge=0,
        description="Budget for the bytes of all requests in progress (bodies and an estimate of their decoded "
        "JSON); a request beyond it gets 503 + Retry-After. 0 = a quarter of the container's memory limit.",
    )
    max_json_values: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Most JSON values (counted by separators) in one request body; more get 413.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="After SIGTERM: seconds readiness is false while still serving.",
    )
    shutdown_grace_seconds: float = Field(
        default=20.0, ge=0, le=3600, description="After draining: longest wait for in-flight requests."
    )
    pod_uid: str | None = Field(
        default=None,
        description="This pod's UID (the downward API's metadata.uid, set by the operator with the node cache): the "
        "node's agent then places a cached artifact in model_dir (the pod's emptyDir) instead of streaming it.",
    )
    node_cache_url: str | None = Field(
        default=None,
        description="http://HOST:PORT of the node's cache agent (the operator sets it from the pod's status.hostIP "
        "when the chart's nodeCache is enabled); unset: download from the store directly.",
    )
    max_artifact_bytes: int = Field(
        default=0,
        ge=0,
        description="Largest artifact accepted, in bytes, checked against the store's HEAD before any download "
        "(the operator sets spec.storage.maxArtifactSize, capped by cacheSize); 0 = no bound.",
    )
    download_concurrency: int = Field(default=8, ge=1, le=64, description="Parallel ranged GETs per artifact.")
    download_part_mib: int = Field(default=16, ge=1, le=1024, description="Size of one ranged GET, in MiB.")
    http: HttpLayer = Field(
        default="fast",
        description="HTTP layer: fast (inference answered from the HTTP parser, all else via uvicorn) or uvicorn.",
    )
    log_requests: bool = Field(default=False, description="Log one access line per request (off: hot path).")
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
    log_format: LogFormat = Field(
        default="text",
        description="Log lines on stderr: text, or json (one object per line); a line about a request carries its "
        "request id.",
    )
    # The prediction log (spec.monitoring.predictionLog; docs/api.md "Prediction log").
    prediction_log_sample_rate: float = Field(
        default=0.0, ge=0, le=100, description="Percent of inference requests recorded in the prediction log; 0 = off."
    )
    prediction_log_record: PredictionLogRecord = Field(
        default="both", description="What a prediction record holds besides its metadata: inputs, outputs or both."
    )
    prediction_log_max_record_bytes: int = Field(
        default=16 * 1024,
        ge=PREDICTION_LOG_RECORD_BYTES_RANGE[0],
        le=PREDICTION_LOG_RECORD_BYTES_RANGE[1],
        description="Most payload bytes in one prediction record (the rest is cut, and the record says truncated).",
    )
    prediction_log_sink: PredictionLogSink = Field(
        default="stdout",
        description="Where prediction records go: stdout (JSON lines; log lines are on stderr) or s3 (batched "
        "newline-delimited JSON under prediction_log_s3_prefix).",
    )
    prediction_log_s3_prefix: str | None = Field(
        default=None, description="s3://BUCKET/PATH/ for the s3 sink (the model's S3 endpoint and credentials)."
    )
    prediction_log_batch_records: int = Field(
        default=1000,
        ge=PREDICTION_LOG_BATCH_RECORDS_RANGE[0],
        le=PREDICTION_LOG_BATCH_RECORDS_RANGE[1],
        description="The s3 sink writes an object once it holds this many records...",
    )
    prediction_log_batch_seconds: float = Field(
        default=60.0,
        ge=PREDICTION_LOG_BATCH_SECONDS_RANGE[0],
        le=PREDICTION_LOG_BATCH_SECONDS_RANGE[1],
        description="...or once its first record is this many seconds old.",
    )
    prediction_log_arms_dir: str | None = Field(
        default=None,
        description="A folder with one file per revision holding its role (the operator's <name>-arms ConfigMap): "
        "each prediction record's arm is this revision's (stable or canary); unset, records carry no arm.",
    )
    termination_log: str = Field(
        default="/dev/termination-log",
        description="Where a start-up failure's reason is written for Kubernetes.",
    )

    @model_validator(mode="after")
    def _s3_sink_has_a_prefix(self) -> Self:
        prefix = self.prediction_log_s3_prefix
        if self.prediction_log_sink == "s3" and not prefix:
            raise ValueError("prediction_log_sink s3 needs prediction_log_s3_prefix (s3://BUCKET/PATH/)")
        if prefix is not None and not (prefix.startswith("s3://") and len(prefix) > len("s3://")):
            raise ValueError(f"prediction_log_s3_prefix {prefix!r}: expected s3://BUCKET/PATH/")
        return self


def from_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The settings ``MODELAPI_*`` variables give, by field name; the variables' names match in any case, as
    pydantic-settings matched them (``MODELAPI_PORT`` and ``modelapi_port`` set ``port``). Values stay text: the
    model's validation parses them, with the same messages as for an argument."""
    prefix = ENV_PREFIX.lower()
    values = {}
    for key, value in env.items():
        name = key.lower()
        if name.startswith(prefix) and name[len(prefix) :] in RuntimeSettings.model_fields:
            values[name[len(prefix) :]] = value
    return values


def env_var_name(field: str) -> str:
    """``model_uri`` -> ``MODELAPI_MODEL_URI``; refuses names that are not settings fields."""
    if field not in RuntimeSettings.model_fields:
        raise KeyError(f"{field!r} is not a RuntimeSettings field")
    return ENV_PREFIX + field.upper()
