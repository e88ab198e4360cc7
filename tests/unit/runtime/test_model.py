"""Thread counts from the cgroup quota, provider choice, and the loud failure for CUDA on a CPU box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelapi_runtime import model as model_mod
from modelapi_runtime.exceptions import GPUUnavailable, InferenceFailed, ModelLoadFailed
from modelapi_runtime.model import CPU, CUDA, Model, choose_providers, cpu_quota, derive_threads, gpu_visible


def test_cpu_quota_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None


def test_cpu_quota_cgroup_v1(tmp_path: Path) -> None:
    d = tmp_path / "cpu"
    d.mkdir()
    (d / "cpu.cfs_quota_us").write_text("250000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(tmp_path) == 2.5
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None
    assert cpu_quota(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(
    ("requested", "quota", "affinity", "expected"),
    [
        (3, 1.0, 64, 3),  # explicit wins
        (0, 2.0, 64, 2),  # the quota, not the host's 64 cores
        (0, 1.5, 64, 1),  # rounded down: 2 threads on 1.5 CPUs get throttled
        (0, 0.5, 64, 1),  # at least one
        (0, None, 4, 4),  # unlimited: the CPUs this process may run on
        (0, 8.0, 2, 2),  # quota above the affinity mask
    ],
)
def test_derive_threads(requested: int, quota: float | None, affinity: int, expected: int) -> None:
    assert derive_threads(requested, quota, affinity) == expected


def test_gpu_visible(tmp_path: Path) -> None:
    assert not gpu_visible({}, tmp_path)
    (tmp_path / "nvidia0").touch()
    assert gpu_visible({}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path)
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": "0"}, tmp_path)


def test_choose_providers() -> None:
    both = [CUDA, CPU]
    assert choose_providers("cpu", both, gpu=True) == [CPU]
    assert choose_providers("auto", [CPU], gpu=True) == [CPU]
    assert choose_providers("auto", both, gpu=False) == [CPU]
    auto = choose_providers("auto", both, gpu=True)
    assert auto[0][0] == CUDA
    assert auto[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"  # type: ignore[index]
    assert auto[-1] == CPU
    with pytest.raises(GPUUnavailable, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU], gpu=True)
    with pytest.raises(GPUUnavailable, match="no GPU is visible"):
        choose_providers("cuda", both, gpu=False)


def test_verify_device_never_falls_back_silently() -> None:
    assert model_mod.verify_device("auto", [CPU]) == "cpu"
    assert model_mod.verify_device("auto", [CUDA, CPU]) == "cuda"
    with pytest.raises(GPUUnavailable, match="not active after session creation"):
        model_mod.verify_device("cuda", [CPU])


def test_device_cuda_on_this_cpu_machine_fails_loudly(model_dir: Path) -> None:
    with pytest.raises(GPUUnavailable):
        Model(model_dir / "affine.onnx", device="cuda")


def test_cuda_requested_but_inactive_after_creation_fails(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu whose CUDA provider cannot start (no cuDNN, no driver) falls back to the CPU
    on its own: the runtime must notice and refuse, not serve on the CPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(model_mod, "gpu_visible", lambda: True)
    real_session = ort.InferenceSession

    def cpu_only_session(path: str, sess_options: object = None, providers: object = None) -> object:
        return real_session(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "InferenceSession", cpu_only_session)
    with pytest.raises(GPUUnavailable, match="CPUExecutionProvider"):
        Model(model_dir / "affine.onnx", device="cuda")
    m = Model(model_dir / "affine.onnx", device="auto")  # auto accepts the CPU, and says so
    assert m.device == "cpu"


def test_model_metadata_threads_warmup_and_iobinding(model_dir: Path) -> None:
    m = Model(model_dir / "two_io.onnx", threads=1, device="cpu")
    assert m.threads == 1
    assert [s.name for s in m.inputs] == ["a", "b"]
    assert m.inputs[0].shape == (None, 2)
    assert m.batchable
    assert m.warm_up() > 0
    feeds = {"a": np.ones((2, 2), np.float32), "b": np.full((2, 2), 3, np.float32)}
    plain = m.run(feeds)
    m.use_iobinding = True  # the GPU path's binding code, exercised on the CPU provider
    bound = m.run(feeds)
    for name in ("sum", "prod"):
        np.testing.assert_array_equal(plain[name], bound[name])
    with pytest.raises(InferenceFailed):
        m.run({"a": np.ones((2, 3), np.float32), "b": np.ones((2, 2), np.float32)})


def test_fixed_shape_model_is_not_batchable(model_dir: Path) -> None:
    assert not Model(model_dir / "fixed.onnx", device="cpu").batchable


def test_not_an_onnx_file_is_model_load_failed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelLoadFailed, match="could not load"):
        Model(bad, device="cpu")
