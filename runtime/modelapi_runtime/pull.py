"""The artifacts of one start (the model, and the handler if any), pulled into the model directory.

``serve`` starts the pull before it imports the server (uvicorn, Starlette, onnxruntime, numpy: about 0.35 CPU-s), in
a thread of its own, so the imports run while the pull waits on the store or the node's agent; the loader takes the
result when it needs the files. This module imports none of those: only the transfer code (storage, node_cache).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from modelapi_runtime.exceptions import ModelLoadFailed, StartupError
from modelapi_runtime.node_cache import NodeCacheClient, Placement
from modelapi_runtime.settings import RuntimeSettings
from modelapi_runtime.storage import Artifact, TransferOptions, clear_partials, display_uri, fetch


@dataclass(frozen=True, slots=True)
class Artifacts:
    model: Artifact
    handler: Artifact | None
    seconds: float  # the pull's own duration, from its start to its last byte
    node_cache_fallback: bool  # the node cache was configured but could not be used

    @property
    def cache_hit(self) -> bool:
        return self.model.origin == "cache" and (self.handler is None or self.handler.origin == "cache")

    @property
    def store_bytes(self) -> int:
        return self.model.store_bytes + (self.handler.store_bytes if self.handler else 0)

    @property
    def size(self) -> int:
        return self.model.size + (self.handler.size if self.handler else 0)


def transfer_options(settings: RuntimeSettings) -> TransferOptions:
    return TransferOptions(
        concurrency=settings.download_concurrency,
        part_size=settings.download_part_mib * 1024 * 1024,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        max_bytes=settings.max_artifact_bytes,
    )


def pull_artifacts(settings: RuntimeSettings) -> Artifacts:
    """Blocking: the model's and the handler's artifacts as verified local files, through the node cache if set."""
    cache = Path(settings.model_dir)
    options = transfer_options(settings)
    placement = Placement(settings.pod_uid, cache) if settings.pod_uid else None
    node_cache = NodeCacheClient(settings.node_cache_url, placement) if settings.node_cache_url else None
    started = time.perf_counter()
    clear_partials(cache)  # this runtime owns model_dir: what a killed predecessor left would only take room
    model = fetch(settings.model_uri, cache, sha256=settings.sha256, options=options, remote=node_cache)
    handler: Artifact | None = None
    if settings.handler:
        if not settings.handler.lower().split("?")[0].endswith(".py"):
            raise ModelLoadFailed(f"{display_uri(settings.handler)}: the handler must be a .py module")
        handler = fetch(settings.handler, cache, sha256=settings.handler_sha256, options=options, remote=node_cache)
    fallback = node_cache is not None and node_cache.fallback is not None
    return Artifacts(model, handler, time.perf_counter() - started, fallback)


def start_pull(settings: RuntimeSettings) -> Future[Artifacts]:
    """``pull_artifacts`` in a daemon thread of its own, started now; its result or its error in the future."""
    pulling: Future[Artifacts] = Future()

    def run() -> None:
        if not pulling.set_running_or_notify_cancel():
            return
        try:
            pulling.set_result(pull_artifacts(settings))
        except BaseException as exc:
            pulling.set_exception(exc)

    threading.Thread(target=run, name="modelapi-pull", daemon=True).start()
    return pulling


def report_failure(settings: RuntimeSettings, exc: StartupError) -> None:
    """The start-up failure on stderr and in the termination log, where the operator reads its reason."""
    print(f"modelapi-runtime: {exc.reason}: {exc.message}", file=sys.stderr)
    with contextlib.suppress(OSError):  # not in a pod, or not writable: stderr has it
        Path(settings.termination_log).write_text(f"{exc.reason}: {exc.message}\n")
