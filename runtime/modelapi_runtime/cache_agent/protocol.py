"""The wire contract between a model pod (``modelapi_runtime.node_cache``) and its node's cache agent.

``GET /metrics``: the agent's Prometheus metrics (docs/metrics.md).

``POST /v1/fetch`` with a JSON body ``{"head": URL, "get": URL}``: presigned URLs of one object (for an https://
artifact URI, the URI itself twice). Answers:

- 200: the artifact's bytes (``Content-Length``), header ``X-Modelapi-Origin: cache | store`` (whether this answer
  made the agent download from the store) and, when known at the start, ``X-Modelapi-Sha256``. A stream that ends
  short means the agent found the entry corrupt or the fill failed: ask again.
- 400 a malformed request, 403 the store's 401/403 (reason ``Forbidden``) or an endpoint the agent may not call
  (reason ``EndpointNotAllowed``), 404 the store's 404,
  502 the store failed or could not be reached, 503 the agent is busy, 507 the artifact does not fit the cache
  (or everything that would have to go is in use): a JSON body ``{"reason": ..., "message": ...}``.
"""

from __future__ import annotations

FETCH_PATH = "/v1/fetch"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"  # Prometheus text format (cache_agent.metrics)
ORIGIN_HEADER = "X-Modelapi-Origin"
SHA256_HEADER = "X-Modelapi-Sha256"
MAX_REQUEST_BYTES = 64 * 1024  # two presigned URLs fit many times over
ENDPOINT_NOT_ALLOWED = "EndpointNotAllowed"
