"""The model server's process: uvicorn with the runtime's HTTP protocols and Kubernetes-friendly SIGTERM handling.

Imported by ``modelapi-runtime serve`` after it has started the artifacts' pull (cli.py): these imports (uvicorn,
Starlette, onnxruntime, numpy) are the heavy part of a start.
"""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future
from types import FrameType
from typing import Any

import uvicorn

from modelapi_runtime.app import RuntimeApp, create_app
from modelapi_runtime.exceptions import EXIT_STARTUP_FAILED, StartupError
from modelapi_runtime.http_guard import GuardedHttpProtocol
from modelapi_runtime.http_protocol import InferenceHttpProtocol
from modelapi_runtime.lifecycle import Runtime, load
from modelapi_runtime.pull import Artifacts, report_failure
from modelapi_runtime.settings import RuntimeSettings

log = logging.getLogger("modelapi_runtime")


def uvicorn_config(app: RuntimeApp, settings: RuntimeSettings) -> uvicorn.Config:
    """How ``serve`` runs ``app`` (the tests start their live servers with the same)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # fast: inference requests are answered from the HTTP parser's callbacks (see http_protocol).
        # uvicorn: uvicorn's httptools protocol with the same read timeouts and limits (see http_guard).
        http=InferenceHttpProtocol if settings.http == "fast" else GuardedHttpProtocol,
        loop="uvloop",
        access_log=settings.log_requests,
        # X-Forwarded-For only feeds the access log's client address: without that log, the
        # proxy-headers middleware is one more ASGI layer per request for nothing.
        proxy_headers=settings.log_requests,
        server_header=False,
        log_config=None,  # keep our logging (logs.configure)
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        timeout_keep_alive=75,  # above common load-balancer idle timeouts (60 s): no reset races
    )


def run_server(settings: RuntimeSettings, pulling: Future[Artifacts] | None = None) -> int:
    """Serves until SIGTERM (0) or a start-up failure (EXIT_STARTUP_FAILED, its reason reported); ``pulling``: the
    artifacts' pull ``serve`` started before importing this module."""
    failed: list[StartupError] = []
    server: DrainingServer | None = None

    def on_fatal(exc: StartupError) -> None:
        failed.append(exc)
        report_failure(settings, exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal, loader=functools.partial(load, pulling=pulling), freeze_gc=True)
    config = uvicorn_config(app, settings)
    server = DrainingServer(config, app.state.runtime, settings.drain_seconds)
    server.run()
    return EXIT_STARTUP_FAILED if failed else 0


class DrainingServer:
    """uvicorn's Server with Kubernetes-friendly SIGTERM handling.

    First SIGTERM/SIGINT: readiness turns false at once, the listener stays open for
    ``drain_seconds`` (endpoints need that long to drop the pod), then uvicorn's own graceful
    shutdown closes the listener and waits for in-flight requests. A second signal exits now.
    """

    def __init__(self, config: Any, runtime: Runtime, drain_seconds: float) -> None:
        outer = self

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                outer.on_signal(sig, frame)

        self._server = _Server(config)
        self._runtime = runtime
        self._drain = drain_seconds
        self._signalled = False

    @property
    def should_exit(self) -> bool:
        return bool(self._server.should_exit)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._server.should_exit = value

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        # The signal is handled here, not recorded for uvicorn to re-raise after shutdown: a
        # completed drain exits 0.
        if self._signalled:
            log.warning("signal %d again: exiting now", sig)
            self._server.force_exit = True
            self._server.should_exit = True
            return
        self._signalled = True
        self._runtime.begin_drain()
        log.info("signal %d: readiness false, draining for %.1fs before closing", sig, self._drain)
        if self._drain <= 0:
            self._server.should_exit = True
            return
        timer = threading.Timer(self._drain, setattr, args=(self._server, "should_exit", True))
        timer.daemon = True
        timer.start()

    def run(self) -> None:
        self._server.run()
