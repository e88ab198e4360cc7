"""``modelapi-runtime serve`` and ``modelapi-runtime pull``.

Every flag mirrors a :class:`RuntimeSettings` field and its ``MODELAPI_*`` variable; a flag given
on the command line wins over the environment. ``pull --dest DIR`` is ``--model-dir`` under the
name docs/api.md uses: an init container that pulls into DIR leaves a cache that ``serve`` with the same
``--model-dir`` hits without downloading again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

from pydantic import ValidationError

from modelapi_runtime.exceptions import EXIT_STARTUP_FAILED, StartupError
from modelapi_runtime.logs import configure as configure_logging
from modelapi_runtime.settings import RuntimeSettings, env_var_name
from modelapi_runtime.tracing import TraceConfig, TracingConfigError


def _without_extra(missing: ModuleNotFoundError) -> NoReturn:
    # `pip install modelapi` (render, the operator, the activator) installs this command without the model server's
    # dependencies: say what to install instead of a traceback.
    if (missing.name or "").startswith("modelapi_runtime"):
        raise missing
    raise SystemExit(
        f"modelapi-runtime: {missing.name} is not installed: the model server needs the runtime extra, "
        "pip install 'modelapi[runtime]' (or 'modelapi[gpu]' for CUDA)"
    ) from None


try:
    from modelapi_runtime.pull import report_failure, start_pull, transfer_options
    from modelapi_runtime.storage import clear_partials, fetch
except ModuleNotFoundError as missing:
    _without_extra(missing)
if importlib.util.find_spec("boto3") is None:  # imported only where S3 is read or signed with botocore (storage.py)
    _without_extra(ModuleNotFoundError("No module named 'boto3'", name="boto3"))

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


def pull(settings: RuntimeSettings) -> int:
    cache = Path(settings.model_dir)
    options = transfer_options(settings)
    try:
        clear_partials(cache)
        results = [fetch(settings.model_uri, cache, sha256=settings.sha256, options=options)]
        if settings.handler:
            results.append(fetch(settings.handler, cache, sha256=settings.handler_sha256, options=options))
    except StartupError as exc:
        report_failure(settings, exc)
        return EXIT_STARTUP_FAILED
    for r in results:
        print(json.dumps({"path": str(r.path), "sha256": r.sha256, "size": r.size,
                          "downloaded": r.downloaded, "seconds": round(r.seconds, 3)}))  # fmt: skip
    return 0


def serve(settings: RuntimeSettings) -> int:
    # The artifacts' pull starts first, in a thread of its own: the server's imports (uvicorn, Starlette, onnxruntime,
    # numpy: about 0.35 CPU-s, 0.7 s of a start at a 500m CPU limit) run while it waits on the store or the node's
    # agent, instead of before it.
    pulling = start_pull(settings)
    try:
        from modelapi_runtime.server import run_server  # noqa: PLC0415 - after the pull started, on purpose
    except ModuleNotFoundError as missing:
        _without_extra(missing)
    return run_server(settings, pulling)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
