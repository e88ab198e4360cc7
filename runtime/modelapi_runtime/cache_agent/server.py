"""The agent's HTTP server: ``POST /v1/fetch`` (protocol.py), ``GET /healthz`` and ``GET /metrics``, a thread per
request.

Every pod on the node can connect (the agent listens on the node's address), so requests are bounded: a small JSON
body read within a timeout, at most ``max_connections`` at once (the rest get 503 at once), and nothing but a
presigned URL to an allowed endpoint is ever called.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import threading
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from modelapi_runtime.cache_agent.cache import Answer, Busy, DigestMismatch, NodeCache, StreamAborted, TooLarge
from modelapi_runtime.cache_agent.index import NoRoom
from modelapi_runtime.cache_agent.placement import PlacementRefused, check_request
from modelapi_runtime.cache_agent.presigned import EndpointNotAllowed
from modelapi_runtime.cache_agent.protocol import (
    CHECKSUM_MISMATCH,
    ENDPOINT_NOT_ALLOWED,
    ETAG_HEADER,
    FETCH_PATH,
    HEALTH_PATH,
    MAX_REQUEST_BYTES,
    METRICS_PATH,
    ORIGIN_HEADER,
    PLACED_HEADER,
    SHA256_HEADER,
    SIZE_HEADER,
    TOO_LARGE,
)
from modelapi_runtime.exceptions import (
    ArtifactAccessDenied,
    ArtifactError,
    ArtifactNotFound,
    InvalidArtifactSpec,
)
from modelapi_runtime.storage import SHA256_RE

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0  # to send the request, and for each write of the answer to be taken


def error_status(exc: Exception) -> tuple[int, str]:
    """The HTTP status and reason of a refusal (the one error map of the agent)."""
    if isinstance(exc, InvalidArtifactSpec):
        return 400, "BadRequest"
    if isinstance(exc, EndpointNotAllowed):
        return 403, ENDPOINT_NOT_ALLOWED
    if isinstance(exc, ArtifactAccessDenied):
        return 403, "Forbidden"
    if isinstance(exc, ArtifactNotFound):
        return 404, "NotFound"
    if isinstance(exc, DigestMismatch):
        return 409, CHECKSUM_MISMATCH
    if isinstance(exc, TooLarge):
        return 413, TOO_LARGE
    if isinstance(exc, ArtifactError):
        return 502, "StoreUnavailable"
    if isinstance(exc, Busy):
        return 503, "Busy"
    if isinstance(exc, NoRoom):
        return 507, "InsufficientStorage"
    return 500, "InternalError"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "modelapi-cache"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S
    cache: NodeCache  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, body: dict[str, str | int]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, {"status": "ok"})
        elif self.path == METRICS_PATH:
            self._send_metrics()
        else:
            self._reply(404, {"reason": "NotFound", "message": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != FETCH_PATH:
            self._reply(404, {"reason": "NotFound", "message": f"no route {self.path}"})
            return
        try:
            head, get, sha256, pod, max_bytes = self._read_request()
            answer = self.cache.open(head, get, sha256, pod, max_bytes)
        except (ArtifactError, InvalidArtifactSpec, Busy, NoRoom, DigestMismatch, TooLarge) as exc:
            status, reason = error_status(exc)
            message = exc.message if isinstance(exc, ArtifactError | InvalidArtifactSpec) else str(exc)
            log.info("refused %s: %s %s", self.address_string(), status, message)
            self.cache.metrics.refusals.labels(reason).inc()
            body: dict[str, str | int] = {"reason": reason, "message": message}
            if isinstance(exc, DigestMismatch):
                body["sha256"] = exc.actual
            if isinstance(exc, TooLarge):
                body["size"] = exc.size
            self._reply(status, body)
            return
        self._send(answer)

    def _send_metrics(self) -> None:
        data = self.cache.metrics.exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_request(self) -> tuple[str, str, str | None, tuple[str, str] | None, int | None]:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
            raise InvalidArtifactSpec(f"a JSON body of at most {MAX_REQUEST_BYTES} bytes with its Content-Length")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except ValueError:
            raise InvalidArtifactSpec("the body is not JSON") from None
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("head", "get")):
            raise InvalidArtifactSpec('expected {"head": URL, "get": URL, "sha256": HEX (optional)}')
        sha256 = body.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and SHA256_RE.match(sha256)):
            raise InvalidArtifactSpec("sha256 must be 64 lowercase hexadecimal characters")
        max_bytes = body.get("max_bytes")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < -1):
            raise InvalidArtifactSpec("max_bytes must be an integer of at least -1 (-1: nothing fits)")
        return body["head"], body["get"], sha256, _pod(body.get("pod")), max_bytes

    def _send(self, answer: Answer) -> None:
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "0" if answer.placed else str(answer.size))
            if answer.placed:
                self.send_header(PLACED_HEADER, answer.placed)
            self.send_header(ORIGIN_HEADER, answer.origin)
            self.send_header(SIZE_HEADER, str(answer.size))
            if answer.etag:
                self.send_header(ETAG_HEADER, answer.etag)
            if answer.sha256:
                self.send_header(SHA256_HEADER, answer.sha256)
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in answer.chunks:
                self.wfile.write(chunk)
                sent += len(chunk)
        except StreamAborted as exc:
            log.warning(
                "answer to %s cut short after %d of %d bytes: %s", self.address_string(), sent, answer.size, exc
            )
        except OSError as exc:  # the pod went away or stopped reading
            log.info("answer to %s ended after %d of %d bytes: %s", self.address_string(), sent, answer.size, exc)
        finally:
            answer.close()
            self.close_connection = True
            self.cache.metrics.served_bytes.labels(answer.origin).inc(sent)
        if sent == answer.size and not answer.placed:
            log.info("served %d bytes (%s) to %s", sent, answer.origin, self.address_string())


def _pod(value: object) -> tuple[str, str] | None:
    """The request's ``pod`` (UID, token), checked; None without one."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("uid", "token")):
        raise InvalidArtifactSpec('pod must be {"uid": UID, "token": HEX}')
    try:
        check_request(value["uid"], value["token"])
    except PlacementRefused as exc:
        raise InvalidArtifactSpec(str(exc)) from None
    return value["uid"], value["token"]


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[Handler], max_connections: int) -> None:
        super().__init__(address, handler)
        self.metrics = handler.cache.metrics
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.metrics.refusals.labels("Busy").inc()
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b'Content-Length: 61\r\n\r\n{"reason": "Busy", "message": "too many requests; try again"}'
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(cache: NodeCache, host: str, port: int, max_connections: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"cache": cache})
    return Server((host, port), handler, max_connections)
