# syntax=docker/dockerfile:1
# modelapi images, one file, three targets:
#   operator      the kopf operator             docker build --target operator    -t modelapi/operator:0.1.0 .
#   runtime       the model server (CPU)        docker build --target runtime     -t modelapi/runtime:0.1.0 .
#   runtime-gpu   the model server (CUDA)       docker build --target runtime-gpu -t modelapi/runtime-gpu:0.1.0 .
# (buildah: `buildah bud --target runtime -t modelapi/runtime:0.1.0 .`)
#
# Base images are build arguments, so a mirror, a pinned digest or a debootstrap-made base can stand in:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
# The Python of PYTHON_IMAGE must be 3.11+; CUDA_IMAGE must bring CUDA 12 + cuDNN 9 (what the onnxruntime-gpu wheels
# on the package index are built against) and a Python 3.11+ from its distribution.
#
# Every final stage runs as the numeric non-root user 10001 (Pod Security "restricted" can verify a number, not a
# name), holds one virtualenv copied from a build stage (no compiler, no pip cache, no wheel files), and starts its
# program in exec form: the Python process is PID 1 and receives SIGTERM itself, so the runtime drains and exits 0.
#
# The virtualenvs' bytecode is compiled with --invalidation-mode unchecked-hash: pip's .pyc files name their source's
# modification time, which a copy between stages may round to another second (buildah did, for 1428 of 2087
# files); Python then compiles those modules again at every start, and cannot save them on the read-only root. That
# cost a model pod about 1 s of its start under a 250m CPU limit (benchmarks/autoscaling/RESULTS.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

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

FROM ${PYTHON_IMAGE} AS operator
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

FROM ${PYTHON_IMAGE} AS runtime
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
# The [gpu] extra brings onnxruntime-gpu instead of the CPU wheel (both install the `onnxruntime` module).
FROM ${CUDA_IMAGE} AS runtime-gpu-venv
# The distribution's python3 follows the base image, which is the pinned thing here (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels/ /wheels/
COPY --from=wheel /src/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/modelapi \
 && wheel="$(echo /wheels/*.whl)" \
 && /opt/modelapi/bin/pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[gpu]" \
 && /opt/modelapi/bin/pip uninstall -y pip \
 && /opt/modelapi/bin/python -m compileall -q -f --invalidation-mode unchecked-hash /opt/modelapi/lib

FROM ${CUDA_IMAGE} AS runtime-gpu
# The virtualenv links to the distribution's python3: the same package as in the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=runtime-gpu-venv /opt/modelapi /opt/modelapi
ENV PATH=/opt/modelapi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELAPI_MODEL_DIR=/models
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/modelapi/bin/modelapi-runtime"]
CMD ["serve"]
