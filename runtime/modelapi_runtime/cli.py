"""``modelapi-runtime serve`` and ``modelapi-runtime pull``.

Every flag mirrors a :class:`RuntimeSettings` field and its ``MODELAPI_*`` variable; a flag given
on the command line wins over the environment. ``pull --dest DIR`` is ``--model-dir`` under the
name docs/api.md uses: an init container that pulls into DIR leaves a cache that ``serve`` with the same
``--model-dir`` hits without downloading again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, get_args

from pydantic import ValidationError

from modelapi_runtime.logs import configure as configure_logging
from modelapi_runtime.settings import RuntimeSettings, env_var_name
from modelapi_runtime.tracing import TraceConfig, TracingConfigError

try:
    import uvicorn

    from modelapi_runtime.app import RuntimeApp, create_app
    from modelapi_runtime.exceptions import StartupError
    from modelapi_runtime.http_guard import GuardedHttpProtocol
    from modelapi_runtime.http_protocol import InferenceHttpProtocol
    from modelapi_runtime.lifecycle import Runtime, transfer_options
    from modelapi_runtime.storage import clear_partials, fetch
except ModuleNotFoundError as missing:
    # `pip install modelapi` (render, the operator, the activator) installs this command without the model server's
    # dependencies: say what to install instead of a traceback.
    if (missing.name or "").startswith("modelapi_runtime"):
        raise
    raise SystemExit(
        f"modelapi-runtime: {missing.name} is not installed: the model server needs the runtime extra, "
        "pip install 'modelapi[runtime]' (or 'modelapi[gpu]' for CUDA)"
    ) from None

log = logging.getLogger("modelapi_runtime")

PULL_FIELDS = (
    "model_uri",
    "sha256",
    "handler",
    "handler_sha256",
    "model_dir",
    "s3_endpoint",
    "s3_region",
    "download_concurrency",
    "download_part_mib",
    "max_artifact_bytes",
    "log_level",
    "log_format",
    "termination_log",
)
EXIT_STARTUP_FAILED = 3


def _add_setting(parser: argparse.ArgumentParser, field: str, flag: str | None = None) -> None:
    info = RuntimeSettings.model_fields[field]
    env = env_var_name(field)
    default = info.default if not info.is_required() else None
    help_text = f"{info.description} [env {env}]" + ("" if info.is_required() else f" (default: {default})")
    kwargs: dict[str, Any] = {"dest": field, "default": None, "help": help_text}
    annotation = info.annotation
    choices = get_args(annotation) if annotation is not None and "Literal" in repr(annotation) else None
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["metavar"] = field.upper().replace("_URI", "").replace("_", "-") if not choices else None
        if choices:
            kwargs["choices"] = choices
    parser.add_argument(flag or "--" + field.replace("_", "-"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelapi-runtime",
        description="Serve an ONNX model over KServe v1 and Open Inference Protocol v2. "
        "S3 credentials come from the standard AWS chain (AWS_* variables, web identity, profiles).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="pull the artifact (cache-aware), load, warm up and serve it")
    for field in RuntimeSettings.model_fields:
        _add_setting(serve, field)
    pull = sub.add_parser("pull", help="download and verify the artifact into a cache directory, then exit")
    for field in PULL_FIELDS:
        _add_setting(pull, field, "--dest" if field == "model_dir" else None)
    return parser


def settings_from(args: argparse.Namespace) -> RuntimeSettings:
    given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return RuntimeSettings(**given)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            print(f"modelapi-runtime: --{field.replace('_', '-')}: {error['msg']}", file=sys.stderr)
        return 2
    if args.command == "serve":
        try:  # tracing's standard OTEL_* variables (docs/api.md "Tracing"): checked before anything starts
            TraceConfig.from_env(os.environ)
        except TracingConfigError as exc:
            print(f"modelapi-runtime: tracing: {exc}", file=sys.stderr)
            return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "pull":
        return pull(settings)
    return serve(settings)


def _report_failure(settings: RuntimeSettings, exc: StartupError) -> None:
    print(f"modelapi-runtime: {exc.reason}: {exc.message}", file=sys.stderr)
    with contextlib.suppress(OSError):  # not in a pod, or not writable: stderr has it
        Path(settings.termination_log).write_text(f"{exc.reason}: {exc.message}\n")


def pull(settings: RuntimeSettings) -> int:
    cache = Path(settings.model_dir)
    options = transfer_options(settings)
    try:
        clear_partials(cache)
        results = [fetch(settings.model_uri, cache, sha256=settings.sha256, options=options)]
        if settings.handler:
            results.append(fetch(settings.handler, cache, sha256=settings.handler_sha256, options=options))
    except StartupError as exc:
        _report_failure(settings, exc)
        return EXIT_STARTUP_FAILED
    for r in results:
        print(json.dumps({"path": str(r.path), "sha256": r.sha256, "size": r.size,
                          "downloaded": r.downloaded, "seconds": round(r.seconds, 3)}))  # fmt: skip
    return 0


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


def serve(settings: RuntimeSettings) -> int:
    failed: list[StartupError] = []
    server: DrainingServer | None = None

    def on_fatal(exc: StartupError) -> None:
        failed.append(exc)
        _report_failure(settings, exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal, freeze_gc=True)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
