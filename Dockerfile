# syntax=docker/dockerfile:1
# modelapi images, one file, three targets:
#   operator      the kopf operator             docker build --target operator    -t modelapi/operator:0.1.0 .
#   runtime       the model server (CPU)        docker build --target runtime     -t modelapi/runtime:0.1.0 .
#   runtime-gpu   the model server (CUDA 13)    docker build --target runtime-gpu -t modelapi/runtime-gpu:0.1.0 .
# (buildah: `buildah bud --target runtime -t modelapi/runtime:0.1.0 .`)
#
# Base images are build arguments, so a mirror, a pinned digest or a debootstrap-made base can stand in:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
# The Python of PYTHON_IMAGE must be 3.11+ on glibc 2.28+ (the onnxruntime-gpu and NVIDIA wheels' manylinux tag). Every
# target builds on it: the CUDA libraries of `runtime-gpu` come from wheels too (see there), not from a CUDA base image.
#
# Every final stage runs as the numeric non-root user 10001 (Pod Security "restricted" can verify a number, not a
# name), holds one virtualenv copied from a build stage (no compiler, no pip cache, no wheel files), and starts its
# program in exec form: the Python process is PID 1 and receives SIGTERM itself, so the runtime drains and exits 0.
#
# The virtualenvs' bytecode is compiled with --invalidation-mode unchecked-hash: pip's .pyc files name their source's
# modification time, which a copy between stages may round to another second (buildah did, for 1428 of 2087
# files); Python then compiles those modules again at every start, and cannot save them on the read-only root. That
# cost a model pod about 1 s of its start under a 250m CPU limit (benchmarks/autoscaling/RESULTS.md).
# The base image's standard library is compiled the same way (stage `python-base`): the official python images delete
# every .pyc under /usr/local, so each start compiled the ~200 standard modules the runtime imports again (0.35 CPU-s
# measured, about 0.7 s of a model pod's start under a 500m CPU limit: benchmarks/coldstart/RESULTS.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- the base of every final stage: PYTHON_IMAGE with its standard library byte-compiled ------------------------
# Without -f, .pyc files that are already valid (a Debian-made base ships them) are kept; the test folders a base may
# carry are not modules anyone imports.
FROM ${PYTHON_IMAGE} AS python-base
RUN python -m compileall -q --invalidation-mode unchecked-hash -x '/(test|tests|idle_test)/' \
    "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

# ---- the project's wheel (one distribution with both packages) --------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
COPY runtime/ runtime/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Every stage installs the wheel with the dependencies its metadata declares (pyproject.toml) for that part, at the
# versions of constraints.txt (the pins CI tests): no version or package list is repeated here.

# ---- operator ---------------------------------------------------------------------------------------------------
# The operator needs only the wheel's own dependencies (kopf, aiohttp, pydantic, PyYAML): no onnxruntime, no
# FastAPI, no boto3.
FROM ${PYTHON_IMAGE} AS operator-venv
COPY --from=wheel /wheels/ /wheels/
COPY --from=wheel /src/constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/modelapi \
 && /opt/modelapi/bin/pip install --no-cache-dir -c /tmp/constraints.txt /wheels/*.whl \
 && /opt/modelapi/bin/pip uninstall -y pip \
 && /opt/modelapi/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/modelapi/lib

FROM python-base AS operator
COPY --from=operator-venv /opt/modelapi /opt/modelapi
ENV PATH=/opt/modelapi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# kopf's liveness endpoint: the chart's probes call it.
EXPOSE 8080
ENTRYPOINT ["/opt/modelapi/bin/modelapi-operator"]
CMD ["--liveness", "http://0.0.0.0:8080/healthz"]

# ---- runtime (CPU) ----------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-venv
COPY --from=wheel /wheels/ /wheels/
COPY --from=wheel /src/constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/modelapi \
 && wheel="$(echo /wheels/*.whl)" \
 && /opt/modelapi/bin/pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[runtime]" \
 && /opt/modelapi/bin/pip uninstall -y pip \
 && /opt/modelapi/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/modelapi/lib

FROM python-base AS runtime
COPY --from=runtime-venv /opt/modelapi /opt/modelapi
# /models is the artifact cache; in a pod an emptyDir is mounted there (the root filesystem is read-only).
RUN mkdir -p /models && chown 10001:10001 /models
ENV PATH=/opt/modelapi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELAPI_MODEL_DIR=/models
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/modelapi/bin/modelapi-runtime"]
CMD ["serve"]

# ---- runtime (CUDA) ---------------------------------------------------------------------------------------------
# No CUDA base image: the [gpu] extra brings onnxruntime-gpu with its `cuda` and `cudnn` extras, so the CUDA runtime,
# cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN libraries its CUDA provider was built against come as NVIDIA's wheels, at the
# versions of constraints.txt (onnxruntime-gpu 1.31: CUDA 13, cuDNN 9). Only the driver's libcuda.so.1 is not in the
# image: on a GPU node the NVIDIA container toolkit (or GKE's driver mount under /usr/local/nvidia) provides it, and
# CUDA 13 needs a driver of the 580 series or newer (NVIDIA_REQUIRE_CUDA makes the toolkit refuse an older one at
# container start instead of a CUDA error at the first session).
FROM ${PYTHON_IMAGE} AS runtime-gpu-venv
COPY --from=wheel /wheels/ /wheels/
COPY --from=wheel /src/constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/modelapi \
 && wheel="$(echo /wheels/*.whl)" \
 && /opt/modelapi/bin/pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[gpu]" \
 && /opt/modelapi/bin/pip uninstall -y pip \
 && /opt/modelapi/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/modelapi/lib

FROM python-base AS runtime-gpu
COPY --from=runtime-gpu-venv /opt/modelapi /opt/modelapi
# The dynamic loader learns the wheels' library folders (site-packages/nvidia/*/lib) from ld.so.conf.d, so every
# process finds them as the CUDA provider does, `ldd` included; /usr/local/nvidia/lib64 is where GKE mounts the
# driver (the CUDA images' LD_LIBRARY_PATH, kept for it).
RUN find /opt/modelapi/lib -type d -path '*/site-packages/nvidia/*/lib' | sort >/etc/ld.so.conf.d/modelapi-nvidia.conf \
 && test -s /etc/ld.so.conf.d/modelapi-nvidia.conf \
 && ldconfig \
 && mkdir -p /models && chown 10001:10001 /models
ENV PATH=/opt/modelapi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELAPI_MODEL_DIR=/models \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=cuda>=13.0
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/modelapi/bin/modelapi-runtime"]
CMD ["serve"]
