"""The ModelAPI API: pydantic models that are the single source of the CRD and of spec validation."""

from modelapi_operator.api.errors import SpecError, format_validation_error
from modelapi_operator.api.resource import ModelAPI, ObjectMeta
from modelapi_operator.api.spec import (
    AnalysisSpec,
    AutoscalingSpec,
    BatchingSpec,
    CanarySpec,
    CanaryStep,
    EnvVar,
    ExposeSpec,
    GatewayRef,
    ModelAPISpec,
    ModelSpec,
    ResourcesSpec,
    RolloutSpec,
    RuntimeSpec,
    StorageSpec,
    Toleration,
)
from modelapi_operator.api.status import (
    CanaryStatus,
    ColdStart,
    Condition,
    LastFailure,
    LastKnownGood,
    ModelAPIStatus,
    RevisionStatus,
)

__all__ = [
    "AnalysisSpec",
    "AutoscalingSpec",
    "BatchingSpec",
    "CanarySpec",
    "CanaryStatus",
    "CanaryStep",
    "ColdStart",
    "Condition",
    "EnvVar",
    "ExposeSpec",
    "GatewayRef",
    "LastFailure",
    "LastKnownGood",
    "ModelAPI",
    "ModelAPISpec",
    "ModelAPIStatus",
    "ModelSpec",
    "ObjectMeta",
    "ResourcesSpec",
    "RevisionStatus",
    "RolloutSpec",
    "RuntimeSpec",
    "SpecError",
    "StorageSpec",
    "Toleration",
    "format_validation_error",
]
