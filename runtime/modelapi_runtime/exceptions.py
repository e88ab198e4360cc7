"""The runtime's error hierarchy, shared by every layer; mapped to HTTP in :mod:`errors` only.

::

    ModelAPIError
    ├── StartupError                 the pod cannot serve: exit non-zero, the reason reaches the operator
    │   ├── ArtifactError
    │   │   ├── ArtifactNotFound     (reason ArtifactNotFound)
    │   │   ├── ArtifactAccessDenied (reason ArtifactAccessDenied)
    │   │   ├── ArtifactUnavailable  (reason ArtifactUnavailable: timeouts, 5xx, network)
    │   │   ├── ChecksumMismatch     (reason ChecksumMismatch)
    │   │   ├── ArtifactTooLarge     (reason ArtifactTooLarge: over the bound, known from the HEAD)
    │   │   └── InsufficientStorage  (reason InsufficientStorage: the node's disk cannot hold it)
    │   ├── InvalidArtifactSpec      (reason InvalidSpec: unsupported scheme, malformed sha256)
    │   ├── ModelLoadFailed          (reason ModelLoadFailed; also a handler module that does not import)
    │   └── GPUUnavailable           (reason GPUUnavailable: --device cuda without an active CUDA provider)
    └── RequestError                 one request fails; the server keeps serving
        ├── BadRequest               400: malformed JSON or framing
        ├── ModelNotFound            404
        ├── RequestTimeout           408: the head or the body did not arrive in time (the connection closes)
        ├── PayloadTooLarge          413: body over the limit, or JSON with too many values
        ├── HeaderTooLarge           431: request head over the limit (the connection closes)
        ├── InvalidInput             422: valid JSON that does not fit the model's inputs
        ├── HandlerFailed            500: the data scientist's handler raised
        ├── InferenceFailed          500: onnxruntime rejected the inputs at run time
        ├── Overloaded               503 + Retry-After: the queue is full
        └── NotReady                 503: loading, or shutting down

Messages never contain credentials: storage errors name the URI (without userinfo or query) and a
short cause, never headers or keys.
"""

from __future__ import annotations


class ModelAPIError(Exception):
    """Base of every error the runtime raises on purpose."""

    reason: str = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StartupError(ModelAPIError):
    """The runtime cannot become ready; ``reason`` is a condition reason of docs/conditions.md. The runtime may not
    import the operator: tests/unit/project/test_docs_reasons.py checks that these reasons are the operator's
    ``RUNTIME_REASONS`` (operator/modelapi_operator/reasons.py), string for string."""


EXIT_STARTUP_FAILED = 3  # the runtime's exit status after a StartupError (its reason is in the termination log)


class ArtifactError(StartupError):
    """The artifact could not be fetched or verified."""


class ArtifactNotFound(ArtifactError):
    reason = "ArtifactNotFound"


class ArtifactAccessDenied(ArtifactError):
    reason = "ArtifactAccessDenied"


class ArtifactUnavailable(ArtifactError):
    reason = "ArtifactUnavailable"


class ChecksumMismatch(ArtifactError):
    reason = "ChecksumMismatch"


class ArtifactTooLarge(ArtifactError):
    reason = "ArtifactTooLarge"


class InsufficientStorage(ArtifactError):
    reason = "InsufficientStorage"


class InvalidArtifactSpec(StartupError):
    """A URI or digest that cannot be right (bad scheme, malformed sha256)."""

    reason = "InvalidSpec"


class ModelLoadFailed(StartupError):
    reason = "ModelLoadFailed"


class GPUUnavailable(StartupError):
    reason = "GPUUnavailable"


class RequestError(ModelAPIError):
    """One request fails with ``status``; nothing else is affected."""

    status: int = 500
    reason = "InternalError"


class BadRequest(RequestError):
    status = 400
    reason = "BadRequest"


class ModelNotFound(RequestError):
    status = 404
    reason = "ModelNotFound"


class RequestTimeout(RequestError):
    status = 408
    reason = "RequestTimeout"


class PayloadTooLarge(RequestError):
    status = 413
    reason = "PayloadTooLarge"


class HeaderTooLarge(RequestError):
    status = 431
    reason = "HeaderTooLarge"


class InvalidInput(RequestError):
    status = 422
    reason = "InvalidInput"


class HandlerFailed(RequestError):
    status = 500
    reason = "HandlerFailed"


class InferenceFailed(RequestError):
    status = 500
    reason = "InferenceFailed"


class Overloaded(RequestError):
    status = 503
    reason = "Overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(RequestError):
    status = 503
    reason = "NotReady"
