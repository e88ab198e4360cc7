"""Names every layer agrees on: the API group, label keys and the names of a ModelAPI's children."""

from __future__ import annotations

from typing import Final

GROUP: Final = "serving.modelapi.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelAPI"
PLURAL: Final = "modelapis"
SINGULAR: Final = "modelapi"
SHORT_NAMES: Final = ("mapi",)
FIELD_MANAGER: Final = "modelapi-operator"

LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_APP_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_NAME: Final = f"{GROUP}/name"
LABEL_REVISION: Final = f"{GROUP}/revision"
APP_NAME: Final = "modelapi"

ROLLBACK_ANNOTATION: Final = f"{GROUP}/rollback"
# Written by the activator on a ModelAPI at zero when it holds a request (a timestamp); the operator wakes the model
# and clears it.
ACTIVATE_ANNOTATION: Final = f"{GROUP}/activate"

REVISION_HASH_LENGTH: Final = 8
# The longest child name suffix is "-canary"/"-stable" (7) or "-<revision>" (1 + 8); every child
# name must stay a DNS-1035 label (63 characters), so the ModelAPI's own name is capped here.
MAX_NAME_LENGTH: Final = 63 - 1 - REVISION_HASH_LENGTH

RUNTIME_CONTAINER: Final = "runtime"
RUNTIME_PORT: Final = 8080
SERVICE_PORT: Final = 80
GPU_RESOURCE: Final = "nvidia.com/gpu"
INFLIGHT_METRIC: Final = "modelapi_inflight_requests"


STABLE_SUFFIX: Final = "-stable"
CANARY_SUFFIX: Final = "-canary"
EXPOSE_SUFFIX: Final = "-expose"
# The ConfigMap ``<name>-arms`` (with spec.monitoring.predictionLog): each serving revision's role, read by its pods.
# One per ModelAPI and the only ConfigMap the operator writes, so two ModelAPIs can never claim the same one.
ARMS_SUFFIX: Final = "-arms"
# A ModelAPI's name may not end with these: its ``<name>`` Service would be another ModelAPI's stable or canary one,
# its ``<name>`` HTTPRoute (a Gateway API canary) another ModelAPI's expose route.
RESERVED_NAME_SUFFIXES: Final = (STABLE_SUFFIX, CANARY_SUFFIX, EXPOSE_SUFFIX)


def revision_name(model_name: str, revision: str) -> str:
    """The Deployment of one revision: ``<name>-<revision>``."""
    return f"{model_name}-{revision}"


def stable_service_name(model_name: str) -> str:
    return f"{model_name}{STABLE_SUFFIX}"


def canary_service_name(model_name: str) -> str:
    return f"{model_name}{CANARY_SUFFIX}"


def arms_name(model_name: str) -> str:
    return f"{model_name}{ARMS_SUFFIX}"
