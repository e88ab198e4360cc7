"""The onnxruntime session: thread counts from the cgroup quota, provider choice, warm-up, run.

Provider choice is split into a pure function (:func:`choose_providers`) and a check after the
session exists (:func:`verify_device`), because onnxruntime silently falls back to the CPU when the
CUDA provider cannot initialise (missing libcudnn, no driver): asking is not the same as getting.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelapi_runtime.exceptions import GPUUnavailable, InferenceFailed, ModelLoadFailed
from modelapi_runtime.settings import Device
from modelapi_runtime.tensors import ONNX_TO_V2, Array, Dim, TensorSpec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Serving-minded CUDA options: a heuristic cuDNN algorithm pick instead of the exhaustive
# benchmark on the first request of each new shape (dynamic batching makes many shapes), and an
# arena that grows by what is asked, not to the next power of two.
CUDA_OPTIONS: dict[str, Any] = {
    "device_id": 0,
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": True,
}

ProviderList = list[str | tuple[str, dict[str, Any]]]


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup's CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); None: unlimited."""
    try:
        quota_s, period_s = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota_s != "max":
            return int(quota_s) / int(period_s)
        return None
    except (OSError, ValueError):
        pass
    for v1 in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct", cgroup_root):
        try:
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            period = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def derive_threads(requested: int, quota: float | None, affinity: int) -> int:
    """Intra-op threads: ``requested`` when > 0, else the CPU limit rounded down (at least 1).

    The host's core count is the wrong answer in a pod: 64 threads on a 2-CPU quota are throttled
    most of each period.
    """
    if requested > 0:
        return requested
    cpus = float(affinity) if quota is None else min(quota, float(affinity))
    return max(1, math.floor(cpus))


def gpu_visible(environ: Mapping[str, str] = os.environ, dev: Path = Path("/dev")) -> bool:
    """A GPU is visible to this process (device node present and not hidden by CUDA_VISIBLE_DEVICES)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "void", "NoDevFiles"):
        return False
    return any(dev.glob("nvidia[0-9]*"))


def choose_providers(device: Device, available: Sequence[str], gpu: bool) -> ProviderList:
    """Providers to ask onnxruntime for. ``cuda`` fails here already when it cannot work."""
    cpu: ProviderList = [CPU]
    if device == "cpu":
        return cpu
    cuda_possible = CUDA in available and gpu
    if device == "cuda":
        if not cuda_possible:
            why = (
                "onnxruntime has no CUDA provider (install onnxruntime-gpu)"
                if CUDA not in available
                else ("no GPU is visible to this process (nvidia.com/gpu limit, CUDA_VISIBLE_DEVICES)")
            )
            raise GPUUnavailable(f"--device cuda was requested but {why}")
        return [(CUDA, dict(CUDA_OPTIONS)), CPU]
    return [(CUDA, dict(CUDA_OPTIONS)), CPU] if cuda_possible else cpu


def verify_device(device: Device, active: Sequence[str]) -> str:
    """The device really in use; ``cuda`` requested but not active is an error, never a fallback."""
    cuda_active = bool(active) and active[0] == CUDA
    if device == "cuda" and not cuda_active:
        raise GPUUnavailable(
            "--device cuda was requested but the CUDA provider is not active after session creation "
            f"(active providers: {', '.join(active) or 'none'}); check the CUDA/cuDNN libraries and the "
            "driver"
        )
    return "cuda" if cuda_active else "cpu"


def _dims(shape: Sequence[object]) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def _spec(node: Any) -> TensorSpec:
    datatype = ONNX_TO_V2.get(node.type)
    if datatype is None:
        raise ModelLoadFailed(f"tensor {node.name!r} has unsupported type {node.type} (tensors only)")
    return TensorSpec(name=node.name, datatype=datatype, shape=_dims(node.shape))


@dataclass(frozen=True, slots=True)
class LoadedInfo:
    device: str
    providers: tuple[str, ...]
    threads: int


class Model:
    """One onnxruntime session with its input/output specs."""

    def __init__(self, path: Path, *, threads: int = 0, device: Device = "auto") -> None:
        providers = choose_providers(device, ort.get_available_providers(), gpu_visible())
        self.threads = derive_threads(threads, cpu_quota(), len(os.sched_getaffinity(0)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the pod's CPU quota that the HTTP side needs between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadFailed(f"onnxruntime could not load the model: {_short(exc)}") from exc
        active = tuple(self._session.get_providers())
        self.device = verify_device(device, active)
        self.providers = active
        self.inputs = tuple(_spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self.output_names = [o.name for o in self.outputs]
        # IOBinding pays off where inputs cross to a device; on the CPU plain run() is leaner.
        self.use_iobinding = self.device == "cuda"
        # onnxruntime's Python InferenceSession.run() re-checks input names, OrtValue ownership and
        # graph-capture options in Python on every call (~2 µs, 40% of a tiny model's run). The codec
        # has validated the feeds against the same metadata, and we never want its CPU fallback, so
        # the CPU path calls the C++ session that run() wraps, when the binding exposes it.
        direct = getattr(getattr(self._session, "_sess", None), "run", None)
        self._run_direct: Callable[..., list[Any]] | None = (
            direct if self.device == "cpu" and callable(direct) else None
        )
        log.info("model loaded: device=%s providers=%s intra_op_threads=%d", self.device, active, self.threads)

    @property
    def batchable(self) -> bool:
        """Requests can be stacked along the first axis of every input and output."""
        return all(s.batched for s in self.inputs) and all(s.batched for s in self.outputs)

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        try:
            if self.use_iobinding:
                return self._run_bound(feeds)
            if self._run_direct is not None:
                results = self._run_direct(self.output_names, feeds if type(feeds) is dict else dict(feeds), None)
            else:
                results = self._session.run(self.output_names, dict(feeds))
        except Exception as exc:
            raise InferenceFailed(f"inference failed: {_short(exc)}") from exc
        return dict(zip(self.output_names, results, strict=True))

    def _run_bound(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name)
        self._session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def warm_up(self) -> float:
        """One inference on inputs synthesized from the metadata; returns its seconds."""
        started = time.perf_counter()
        try:
            self.run({s.name: s.synthesize() for s in self.inputs})
        except InferenceFailed as exc:
            raise ModelLoadFailed(f"warm-up inference failed: {exc.message}") from exc
        return time.perf_counter() - started


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:500]
