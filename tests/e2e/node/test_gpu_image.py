"""The `runtime-gpu` image as a GPU user gets it, checked on a node without a GPU (`-k gpu_image`).

The harness builds the Dockerfile's `runtime-gpu` target with buildah (no CUDA base image: onnxruntime-gpu and the
NVIDIA wheels of its `cuda` and `cudnn` extras, at the versions of constraints.txt) and pushes it to its registry
(the gpu_image fixture does, when the tests' `up` left it out);
here containerd pulls it like any image and runs it as a pod under Pod Security "restricted". Inside, onnxruntime
must list the CUDA provider, and every shared library the provider needs, and every library the NVIDIA wheels bring
(cuDNN is opened by name at run time), must resolve through the image's loader configuration, except the driver's
libcuda.so.1: only a GPU node provides that one (the NVIDIA container toolkit mounts it). A GPU node itself is the
one thing this test cannot show; benchmarks/gpu/run.sh does, with the same pinned wheels.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from e2e.conftest import Cluster

from .test_real_node import _restricted_pod, _run_pod

pytestmark = pytest.mark.node

DRIVER = "libcuda.so.1"

# Runs in the image: what onnxruntime offers, what `ldd` cannot resolve for the provider and for each library of the
# NVIDIA wheels, what the dynamic loader says when it opens the provider, and what the loader's cache knows.
CHECK = r"""
import ctypes, glob, json, os, subprocess
import onnxruntime as ort
from onnxruntime.capi import build_and_package_info as info

capi = os.path.dirname(ort.capi.__file__)
provider = os.path.join(capi, "libonnxruntime_providers_cuda.so")
nvidia = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(ort.__file__)), "nvidia", "*", "lib", "*.so*")))

def unresolved(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if "not found" in line)

try:
    ctypes.CDLL(provider)
    opened = "loaded"
except OSError as exc:
    opened = str(exc)
cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
print(json.dumps({
    "version": ort.__version__,
    "cuda_version": info.cuda_version,
    "require_cuda": os.environ.get("NVIDIA_REQUIRE_CUDA", ""),
    "providers": ort.get_available_providers(),
    "provider_unresolved": unresolved(provider),
    "nvidia_unresolved": {os.path.basename(p): unresolved(p) for p in nvidia},
    "opened": opened,
    "cudnn_in_cache": "libcudnn.so.9 " in cache,
    "user": os.getuid(),
}))
"""


def _gpu_pod(image: str) -> dict[str, Any]:
    pod = _restricted_pod("gpu-image-check", image, ["python", "-c", CHECK])
    container = pod["spec"]["containers"][0]
    # pulled from the registry like a user's node does (the other real-node pods run images already present)
    container["imagePullPolicy"] = "IfNotPresent"
    container["resources"] = {"limits": {"cpu": "500m", "memory": "512Mi"}}
    return pod


def test_the_gpu_image_has_the_cuda_provider_and_every_library_it_needs_but_the_driver(
    cluster: Cluster, node: dict[str, str], gpu_image: str, restricted: str
) -> None:
    image = gpu_image
    # the image is a few GiB: its first pull and unpack take most of the time
    phase, log = _run_pod(cluster, restricted, _gpu_pod(image), timeout=600)
    print(f"[node] {image}: {phase}: {log[:2000]}")
    assert phase == "Succeeded", log
    # pulled by reference from the harness's registry
    status = cluster.get_json("pod", "gpu-image-check", namespace=restricted)["status"]
    image_id = status["containerStatuses"][0]["imageID"]
    assert image_id.startswith(f"{node['NODE_REGISTRY']}/modelapi/runtime-gpu@sha256:"), image_id
    found = json.loads(log.strip().splitlines()[-1])
    assert found["user"] == 10001
    assert "CUDAExecutionProvider" in found["providers"], found["providers"]
    # the provider needs cuBLAS(Lt), cuRAND, the CUDA runtime and the driver: only the driver is missing here
    assert found["provider_unresolved"] == [DRIVER], found["provider_unresolved"]
    # the loader itself, opening the provider as onnxruntime does, stops at the driver and nothing before it
    assert DRIVER in found["opened"], found["opened"]
    assert found["nvidia_unresolved"], "no library of the NVIDIA wheels in the image"
    assert any(name.startswith("libcudnn") for name in found["nvidia_unresolved"]), sorted(found["nvidia_unresolved"])
    others = {name: missing for name, missing in found["nvidia_unresolved"].items() if set(missing) - {DRIVER}}
    assert not others, f"libraries of the NVIDIA wheels with unresolved dependencies: {others}"
    # the provider opens cuDNN by name when a session starts: the loader's cache must know it
    assert found["cudnn_in_cache"]
    # the image asks the NVIDIA container toolkit for a driver of the CUDA major the wheel was built for
    major = found["cuda_version"].split(".")[0]
    assert re.fullmatch(rf"cuda>={major}\.\d+", found["require_cuda"]), (found["require_cuda"], found["cuda_version"])
