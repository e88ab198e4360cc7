"""The ModelAPI status: what users (and Argo CD) read. Written only by the operator."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelapi_operator.api.base import StatusModel

ConditionType = Literal["Ready", "Progressing", "Degraded", "Autoscaling", "Exposed", "PredictionLog"]
ConditionStatus = Literal["True", "False", "Unknown"]
RevisionRole = Literal["stable", "next", "canary", "lastKnownGood"]


class Condition(StatusModel):
    """A metav1.Condition: the state of one aspect of the ModelAPI."""

    type: ConditionType = Field(
        description="Ready, Progressing, Degraded, Autoscaling (whether the HorizontalPodAutoscaler can read its "
        "metric, and reason AutoscalingLimited when it is held at maxReplicas; absent for a fixed size), Exposed "
        "(with spec.expose: whether requests reach the model through its Gateway), or PredictionLog (with "
        "spec.monitoring.predictionLog and the operator's Prometheus URL: whether its records are written)."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="A CamelCase reason from the documented set.")
    message: str = Field(default="", max_length=32_768, description="What happened and what to do, for humans.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The ModelAPI generation this condition was computed from."
    )


class RevisionStatus(StatusModel):
    """One revision (Deployment) of the model."""

    name: str = Field(description="The revision's Deployment name, <name>-<revision>.")
    role: RevisionRole = Field(
        description="stable (serves traffic), next (replacing stable in a RollingUpdate), canary, or lastKnownGood "
        "(the stable one before the last promotion, kept for a rollback at rollout.lastKnownGoodReplicas, 0 by "
        "default; it takes no traffic)."
    )
    weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic this revision receives.")
    model_uri: str = Field(description="The model URI of this revision.")
    sha256: str | None = Field(default=None, description="The model checksum of this revision, when set.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas of this revision that are ready.")


class CanaryStatus(StatusModel):
    """The canary in progress."""

    revision: str = Field(description="The canary revision's name.")
    step: int = Field(ge=0, description="Index of the current step (0-based).")
    weight: int = Field(ge=0, le=100, description="Traffic percent the canary actually receives now.")
    error_rate: float | None = Field(
        default=None, description="Canary share of server faults (5xx but overload 503s) over the last interval."
    )
    latency_p99_ms: float | None = Field(default=None, description="Canary p99 latency over the last interval.")
    stable_error_rate: float | None = Field(
        default=None, description="Stable share of server faults (5xx but overload 503s) over the last interval."
    )
    stable_latency_p99_ms: float | None = Field(default=None, description="Stable p99 over the last interval.")
    failed_checks: int = Field(default=0, ge=0, description="Consecutive failed analysis intervals.")
    analysis: str | None = Field(default=None, description="How the last step was judged, e.g. that no analysis ran.")


class LastFailure(StatusModel):
    """The most recent failure that needed a human."""

    reason: str = Field(description="A failure reason, e.g. ChecksumMismatch.")
    message: str = Field(description="What happened and what to do.")
    revision: str | None = Field(default=None, description="The revision that failed.")
    time: str = Field(description="When it happened (RFC 3339).")


class ColdStart(StatusModel):
    """How long the stable revision's slowest replica took to become ready, by phase (from the runtime's
    modelapi_cold_start_* metrics in Prometheus; absent without a Prometheus URL)."""

    revision: str | None = Field(default=None, description="The revision these timings are from.")
    download_seconds: float | None = Field(default=None, description="Artifact download (0 when cached).")
    load_seconds: float | None = Field(default=None, description="Model load into onnxruntime.")
    warmup_seconds: float | None = Field(default=None, description="The warm-up inference.")
    source: Literal["cache", "store"] | None = Field(
        default=None,
        description="Where the revision's replicas got the artifact: store when any of them downloaded it from the "
        "store, cache when every one read it from a cache (the node cache, or the pod's own).",
    )
    store_bytes: int | None = Field(
        default=None, ge=0, description="Bytes the revision's replicas downloaded from the store, all together."
    )
    artifact_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Size of the revision's artifacts (model and handler) as its replicas found them; a later "
        "revision of the same artifact (same model.uri and model.sha256, no handler) sizes its model volume from it.",
    )


class LastKnownGood(StatusModel):
    """The revision a rollback returns to: the stable one before the last promotion (after a RollingUpdate or a
    canary), kept with rollout.lastKnownGoodReplicas warm replicas (0 by default)."""

    revision: str = Field(description="Its Deployment name, <name>-<revision>.")
    model_uri: str = Field(description="Its model URI (a presigned URL's query string is left out).")
    sha256: str | None = Field(default=None, description="Its model checksum, when set.")
    last_served: str | None = Field(
        default=None, description="When it last served traffic: when a newer revision replaced it (RFC 3339)."
    )
    replicas: int = Field(default=0, ge=0, description="Its warm replicas (rollout.lastKnownGoodReplicas).")
    ready_replicas: int = Field(default=0, ge=0, description="Its warm replicas that are ready.")


class ModelAPIStatus(StatusModel):
    """Observed state of the ModelAPI."""

    observed_generation: int | None = Field(
        default=None, description="The ModelAPI's own metadata.generation that this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and Degraded; Autoscaling when minReplicas < maxReplicas; Exposed with "
        "spec.expose.",
    )
    url: str | None = Field(
        default=None,
        description="Base URL of the model: its address through the Gateway (spec.expose) once the route is "
        "accepted, else the in-cluster URL of its Service.",
    )
    replicas: int | None = Field(default=None, description="Desired replicas of the stable revision.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas of the stable revision.")
    revisions: list[RevisionStatus] = Field(
        default_factory=list, description="Newest first: at most stable, canary and last-known-good."
    )
    canary: CanaryStatus | None = Field(default=None, description="The canary in progress, if any.")
    last_known_good: LastKnownGood | None = Field(
        default=None,
        description="The revision the rollback annotation (serving.modelapi.io/rollback) returns to; absent when none "
        "is kept.",
    )
    last_failure: LastFailure | None = Field(default=None, description="The most recent failure.")
    cold_start: ColdStart | None = Field(default=None, description="Cold-start timings of the newest replica.")
    scaled_to_zero_at: str | None = Field(
        default=None,
        description="When the model went to zero replicas (minReplicas 0, idle); absent while its own replicas serve. "
        "Requests meanwhile are held by the activator until a replica is ready.",
    )
