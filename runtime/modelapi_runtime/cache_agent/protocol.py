"""The wire contract between a model pod (``modelapi_runtime.node_cache``) and its node's cache agent.

``GET /metrics``: the agent's Prometheus metrics (docs/metrics.md).

``POST /v1/fetch`` with a JSON body ``{"head": URL, "get": URL, "sha256": HEX, "max_bytes": N, "pod": {"uid": UID,
"token": HEX}}``: presigned URLs of one object (for an https:// artifact URI, the URI itself twice) and, optionally,
the digest the pod's spec expects, the largest artifact the pod admits (its bound and its volume's free space) and
the pod's UID with the token of the proof it wrote into its volume (placement.py). Every 200 carries the object's
size and ETag from the store's HEAD with the pod's URL (``X-Modelapi-Size``, ``X-Modelapi-Etag``): the pod sends no
HEAD of its own. Answers:

- 200 with ``X-Modelapi-Placed: link | copy`` and an empty body: a verified entry was put into the pod's volume as
  ``.node-cache-placed-<token>`` (only for a request with ``pod``, to an agent that sees the kubelet's pods
  directory, for an entry that is complete; otherwise the bytes are streamed as below). ``X-Modelapi-Sha256`` is the
  entry's digest, checked by the agent (placement.py, cache.py ``_intact``).
- 200: the artifact's bytes (``Content-Length``), header ``X-Modelapi-Origin: cache | store`` (whether this answer
  made the agent download from the store) and, when the agent vouches for the digest, ``X-Modelapi-Sha256``: the
  stream then completes only if its bytes have that digest (an entry is hashed again as it is served, a fill is
  hashed as it arrives from the store, and the last bytes are withheld until the digest is known to match), so the
  pod need not hash it again. A stream that ends short means the agent found the entry corrupt, the fill failed or
  its digest is not the requested one: ask again.
- 400 a malformed request, 403 the store's 401/403 (reason ``Forbidden``) or an endpoint the agent may not call
  (reason ``EndpointNotAllowed``), 404 the store's 404, 409 a cached object whose digest is not the requested one
  (reason ``ChecksumMismatch``, the body names the object's ``sha256``), 413 an object larger than the request's
  ``max_bytes`` (reason ``TooLarge``, the body names its ``size``; nothing was filled or placed),
  502 the store failed or could not be reached, 503 the agent is busy, 507 the artifact does not fit the cache
  (or everything that would have to go is in use): a JSON body ``{"reason": ..., "message": ...}``.
"""

from __future__ import annotations

FETCH_PATH = "/v1/fetch"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"  # Prometheus text format (cache_agent.metrics)
ORIGIN_HEADER = "X-Modelapi-Origin"
SHA256_HEADER = "X-Modelapi-Sha256"
PLACED_HEADER = "X-Modelapi-Placed"
SIZE_HEADER = "X-Modelapi-Size"  # the object's size, from the store's HEAD with the pod's presigned URL
ETAG_HEADER = "X-Modelapi-Etag"  # its ETag, from the same HEAD
PROOF_PREFIX = ".node-cache-proof-"  # the pod's proof in its volume: PROOF_PREFIX + token (placement.py)
PLACED_PREFIX = ".node-cache-placed-"  # where the agent places the artifact: PLACED_PREFIX + token
MAX_REQUEST_BYTES = 64 * 1024  # two presigned URLs fit many times over
ENDPOINT_NOT_ALLOWED = "EndpointNotAllowed"
CHECKSUM_MISMATCH = "ChecksumMismatch"
TOO_LARGE = "TooLarge"
