"""Every reason the operator writes on a ModelAPI (condition reasons, ``status.lastFailure.reason``, Event reasons),
and the ones it reads from others, each with its meaning. docs/conditions.md has a row for each (what to do about
it); tests/unit/project/test_docs_reasons.py keeps the two, and the runtime's start-up reasons, the same.

No other module of the operator defines a reason: they import it from here.
"""

from __future__ import annotations

from typing import Final

# -- failures of the ModelAPI itself, found before anything is applied (Degraded=True, Ready=False) ------------
INVALID_SPEC: Final = "InvalidSpec"  # the spec breaks a rule (or a runtime refused its settings)
POLICY_VIOLATION: Final = "PolicyViolation"  # the cluster policy refuses the spec: nothing of it is applied
NAME_CONFLICT: Final = "NameConflict"  # a child's name is taken by an object this ModelAPI does not control
PERMISSION_DENIED: Final = "PermissionDenied"  # the operator's own identity lacks a permission (RBAC)
SECRET_NOT_FOUND: Final = "SecretNotFound"  # noqa: S105 - a reason, not a password; credentialsSecret is missing
SERVICE_ACCOUNT_NOT_FOUND: Final = "ServiceAccountNotFound"  # spec.storage.serviceAccountName is missing

# -- the runtime's start-up failures, read from a pod's termination message (Degraded=True) ---------------------
ARTIFACT_NOT_FOUND: Final = "ArtifactNotFound"  # no object at the model's (or handler's) URI
ARTIFACT_ACCESS_DENIED: Final = "ArtifactAccessDenied"  # the store refused the credentials
ARTIFACT_UNAVAILABLE: Final = "ArtifactUnavailable"  # the store timed out or answered 5xx
CHECKSUM_MISMATCH: Final = "ChecksumMismatch"  # the artifact's SHA-256 is not the one in the spec
ARTIFACT_TOO_LARGE: Final = "ArtifactTooLarge"  # the artifact is over maxArtifactSize or cacheSize
INSUFFICIENT_STORAGE: Final = "InsufficientStorage"  # the node's disk cannot hold the artifact
MODEL_LOAD_FAILED: Final = "ModelLoadFailed"  # onnxruntime could not load it, or the handler does not import
GPU_UNAVAILABLE: Final = "GPUUnavailable"  # a GPU model without an active CUDA provider
# The runtime's StartupError reasons (runtime/modelapi_runtime/exceptions.py; the runtime may not import the
# operator, so tests/unit/project/test_docs_reasons.py checks that both sets are the same strings).
RUNTIME_REASONS: Final = frozenset(
    {
        INVALID_SPEC,
        ARTIFACT_NOT_FOUND,
        ARTIFACT_ACCESS_DENIED,
        ARTIFACT_UNAVAILABLE,
        CHECKSUM_MISMATCH,
        ARTIFACT_TOO_LARGE,
        INSUFFICIENT_STORAGE,
        MODEL_LOAD_FAILED,
        GPU_UNAVAILABLE,
    }
)

# -- failures of a revision's pods and Deployment (Degraded=True) ---------------------------------------------
INSUFFICIENT_GPU: Final = "InsufficientGPU"  # no node has a free GPU for the revision's pods
IMAGE_PULL_FAILED: Final = "ImagePullFailed"  # the runtime image cannot be pulled
CRASH_LOOPING: Final = "CrashLooping"  # the runtime keeps restarting without a reason of its own (or OOMKilled)
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"  # a new revision missed its progress deadline
UNSCHEDULABLE: Final = "Unschedulable"  # pods stayed unschedulable past the grace, with no scale-up announced
QUOTA_EXCEEDED: Final = "QuotaExceeded"  # a ResourceQuota or LimitRange refused the pods
POD_CREATION_FAILED: Final = "PodCreationFailed"  # the ReplicaSet could not create pods for another cause
EVICTED: Final = "Evicted"  # pods were evicted for node pressure

# -- rollouts ------------------------------------------------------------------------------------------------
ROLLOUT_ABORTED: Final = "RolloutAborted"  # the canary failed its analysis and was rolled back
ROLLED_BACK: Final = "RolledBack"  # a requested rollback made the last-known-good revision stable
ROLLBACK_UNAVAILABLE: Final = "RollbackUnavailable"  # (Event) a rollback was asked for, with nothing to go back to
CANARY_PROMOTED: Final = "CanaryPromoted"  # (Event) the canary passed its last step and became stable
CANARY_STEP: Final = "CanaryStep"  # (Event) the canary moved to a step; Progressing says CanaryStep<n>

# -- normal operation ----------------------------------------------------------------------------------------
SERVING: Final = "Serving"  # Ready: the current revision serves with every desired replica ready
ROLLOUT_COMPLETE: Final = "RolloutComplete"  # Progressing=False: the current revision is stable and ready
AS_EXPECTED: Final = "AsExpected"  # Degraded=False: nothing is wrong
NO_REVISION: Final = "NoRevision"  # Ready=False: the current revision has no Deployment yet
REPLICAS_NOT_READY: Final = "ReplicasNotReady"  # Ready=False: the stable revision has fewer ready than desired
REPLICAS_STARTING: Final = "ReplicasStarting"  # Progressing=True: the current revision's replicas are starting
ROLLING_OUT: Final = "RollingOut"  # a new revision replaces the stable one (RollingUpdate)
CANARY_IN_PROGRESS: Final = "CanaryInProgress"  # Ready=False: a canary runs, the stable revision serves
ENDPOINTS_NOT_READY: Final = "EndpointsNotReady"  # Ready=False: ready pods not yet listed as ready endpoints
WAITING_FOR_CAPACITY: Final = "WaitingForCapacity"  # Progressing=True: a cluster autoscaler adds nodes

# -- scale to zero -------------------------------------------------------------------------------------------
SCALED_TO_ZERO: Final = "ScaledToZero"  # Ready=True: parked at zero, the activator holds requests
ACTIVATING: Final = "Activating"  # Ready=True, Progressing=True: woken by a request, a replica starts
SCALE_TO_ZERO_UNAVAILABLE: Final = "ScaleToZeroUnavailable"  # Ready=True: minReplicas 0, but it keeps 1 replica

# -- autoscaling (the Autoscaling condition) -----------------------------------------------------------------
AUTOSCALING_ACTIVE: Final = "AutoscalingActive"  # the HPA reads its metric and scales on it
AUTOSCALING_INACTIVE: Final = "AutoscalingInactive"  # the HPA cannot read its metric or change the Deployment
AUTOSCALING_PENDING: Final = "AutoscalingPending"  # the HPA has not read its metric yet
AUTOSCALING_LIMITED: Final = "AutoscalingLimited"  # the HPA has wanted more than maxReplicas for a while
# Read, not written: the HorizontalPodAutoscaler's own reasons.
HPA_TOO_MANY_REPLICAS: Final = "TooManyReplicas"  # its ScalingLimited reason: desired count above maxReplicas
HPA_SCALING_DISABLED: Final = "ScalingDisabled"  # its reason when the Deployment is at 0 replicas


def canary_step(step: int) -> str:
    """Progressing's reason while a canary is at ``step`` (counted from 1): CanaryStep1, CanaryStep2, ..."""
    return f"{CANARY_STEP}{step}"


# -- spec.monitoring.predictionLog (the PredictionLog condition, with a Prometheus URL) -----------------------
PREDICTION_LOG_WRITING: Final = "PredictionLogWriting"  # True: no replica's last write to the sink failed
PREDICTION_LOG_FAILING: Final = "PredictionLogFailing"  # False: a replica's writes fail (no bucket, no permission)


# -- spec.expose (the Exposed condition) ---------------------------------------------------------------------
EXPOSED: Final = "Exposed"  # True: the Gateway accepted the route; requests reach the model from outside
GATEWAY_NOT_FOUND: Final = "GatewayNotFound"  # the Gateway spec.expose names does not exist (or cannot be read)
LISTENER_NOT_FOUND: Final = "ListenerNotFound"  # the Gateway has no listener of that sectionName
HOST_PATH_TAKEN: Final = "HostPathTaken"  # another ModelAPI's route holds the same host and paths (the first keeps it)
ROUTE_PENDING: Final = "RoutePending"  # the route exists; the Gateway has not accepted it yet
ROUTE_NOT_ACCEPTED: Final = "RouteNotAccepted"  # the Gateway refused the route (its message says why)
GATEWAY_API_NOT_INSTALLED: Final = "GatewayAPINotInstalled"  # the cluster has no Gateway API CRDs
