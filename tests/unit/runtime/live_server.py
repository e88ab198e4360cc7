"""The runtime as ``serve`` runs it (uvicorn config, HTTP layer, uvloop) on a real socket, in a thread.

For tests that must see the bytes on the wire: the fast HTTP layer answers inference requests
from the parser's callbacks, which an ASGI test client never reaches.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import uvicorn

from modelapi_runtime.app import RuntimeApp, create_app
from modelapi_runtime.server import uvicorn_config
from modelapi_runtime.settings import RuntimeSettings


class LiveServer:
    def __init__(self, app: RuntimeApp, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as r:
            return str(r.read().decode())


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        e.close()
        return int(e.code)
    except OSError:
        return 0


@contextlib.contextmanager
def live_server(
    model_uri: str, model_dir: str, *, keep_alive_s: float | None = None, **overrides: Any
) -> Iterator[LiveServer]:
    """The app for these settings behind ``serve``'s uvicorn config, ready (model loaded) when yielded."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    settings = RuntimeSettings(
        model_uri=model_uri, name="m", model_dir=model_dir, host="127.0.0.1", port=port, **overrides
    )
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    config.timeout_graceful_shutdown = 2
    if keep_alive_s is not None:
        config.timeout_keep_alive = keep_alive_s  # type: ignore[assignment]  # an int in uvicorn's hints
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        live = LiveServer(app, port)
        deadline = time.monotonic() + 30
        while _status(f"{live.url}/v2/health/ready") != 200:
            assert thread.is_alive(), "the live server stopped"
            assert time.monotonic() < deadline, "the live server never became ready"
            time.sleep(0.02)
        yield live
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length from ``sock``: status, headers (lowercase), body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    _PENDING[sock.fileno()] = rest[length:]
    return status, headers, rest[:length]


_PENDING: dict[int, bytes] = {}  # bytes of the next pipelined response already received


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` pipelined responses, in order."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    buf = b""
    while len(out) < count:
        while True:
            if b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                length = int(headers["content-length"])
                if len(rest) >= length:
                    out.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
                    buf = rest[length:]
                    break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} responses")
            buf += chunk
    return out


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            version: str = "1.1") -> bytes:  # fmt: skip
    """The bytes of one request (Content-Length set unless the caller sets its own framing)."""
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    given = {k.lower() for k in headers or {}}
    if "content-length" not in given and "transfer-encoding" not in given and (body or method == "POST"):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
