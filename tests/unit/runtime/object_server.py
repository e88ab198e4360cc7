"""A real local HTTP(S) object server for the runtime's download tests: objects by path, HEAD with length and ETag,
GET with a single byte range (206) when ``ranges``, served on a free port by a thread.

A test subclasses ``ObjectHandler`` through ``fresh()`` (its own objects and records) and may answer a request
before the object is looked up by overriding ``refused`` (a redirect, an error status, a bad signature)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

H = TypeVar("H", bound="ObjectHandler")


class ObjectHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}  # path (without the query) -> the object's bytes
    requests: list[str] = []  # "METHOD PATH RANGE" of every request
    sent: dict[str, int] = {}  # GET body bytes sent, per path
    ranges = True  # Accept-Ranges, and 206 for a Range request
    stall_s = 0.0  # before a GET's answer

    @classmethod
    def fresh(cls: type[H], **attributes: Any) -> type[H]:
        """A subclass with empty objects and records of its own (one per test), and these class attributes."""
        return type(cls.__name__, (cls,), {"files": {}, "requests": [], "sent": {}, **attributes})

    def log_message(self, *args: Any) -> None:
        pass

    def answer_empty(self, status: int, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def refused(self) -> bool:
        """Answer the request here instead of with the object (return True once answered); no by default."""
        return False

    def _object(self) -> bytes | None:
        type(self).requests.append(f"{self.command} {self.path} {self.headers.get('Range', '')}")
        if self.refused():
            return None
        data = self.files.get(self.path.partition("?")[0])
        if data is None:
            self.answer_empty(404)
        return data

    def do_HEAD(self) -> None:
        data = self._object()
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        data = self._object()
        if data is None:
            return
        if self.stall_s:
            time.sleep(self.stall_s)
        rng = self.headers.get("Range")
        if rng and self.ranges:
            start, end = (int(v) for v in rng.removeprefix("bytes=").split("-"))
            part = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            part = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)
        path = self.path.partition("?")[0]
        type(self).sent[path] = type(self).sent.get(path, 0) + len(part)


def start_serving(server: http.server.HTTPServer) -> threading.Thread:
    """serve_forever in a daemon thread."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """handler on a free port of 127.0.0.1 (over TLS with tls) until the block ends: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    start_serving(server)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
