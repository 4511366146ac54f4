# HECKTOR 2025 algorithm containers for Grand Challenge: the one runtime image definition of every task of the
# registry (shared/hecktor/tasks.py). The build argument TASK_DIR names the task's container folder, whose
# inference.py the image runs; everything else is the same for every task.
#
# The build context is the repository root (only what .dockerignore lets through is sent):
#     ./build.sh --task 2          (or: docker build --build-arg TASK_DIR=task2_container -t hecktor-task2 .)
#     ./build.sh --task 1          (or: docker build --build-arg TASK_DIR=task1_container --build-arg WITH_MAMBA=1 \
#                                           -t hecktor-task1 .)
#     ./build.sh --task 1 --no-mamba   (no CUDA kernels: the pure-PyTorch selective scan runs)
# Task 1's image compiles mamba-ssm in the builder stage below: build.sh passes WITH_MAMBA=1 to the tasks whose
# container folder has a build-args file that asks for it (task1_container/build-args).
# The image holds no model by default: the platform extracts the model tarball (./build.sh --save writes it) into
# /opt/ml/model, where the container looks first. BUNDLE_IN_IMAGE=1 (./build.sh --bundle-in-image) copies the exported
# bundle TASK_DIR/resources/bundle into the image instead (./build.sh --help lists each task's export command).
#
# Build arguments:
#   TASK_DIR           the task's container folder (task1_container, task2_container, ...); required.
#   BASE_IMAGE         runtime image with Python >= 3.10 and a CUDA build of PyTorch (the organisers' template's).
#   WITH_MAMBA         1: compile and install mamba-ssm (fused selective-scan kernel; Task 1); 0 (default): no
#                      builder stage.
#   BUNDLE_IN_IMAGE    1: copy TASK_DIR/resources/bundle into the image (a self-contained image); 0 (default): an
#                      empty resources/bundle, the model comes from /opt/ml/model at run time.
#   BUILDER_IMAGE      the matching -devel image (nvcc, CUDA headers) in which mamba-ssm's kernels are compiled.
#   MAMBA_SSM_VERSION  the mamba-ssm release compiled from source.
#   TORCH_CUDA_ARCH_LIST  compute capabilities of the kernels: 7.5 is the platform's T4, the rest cover newer cards.
#   MAX_JOBS           parallel nvcc jobs in the builder (each can take several GB of RAM).
#   TORCH_REQUIREMENT  only for a base image without PyTorch (local smoke tests on a bare Debian), e.g. torch==2.13.0.
#   PIP_EXTRA_ARGS     extra pip options for every install, e.g. "--find-links /wheels" for a local wheel folder.

ARG BASE_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
ARG BUILDER_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel
ARG WITH_MAMBA=0

# ---------------------------------------------------------------------------------------------- mamba-ssm wheels
# Compiled here, in the -devel image, so that the runtime image carries no compiler. Only selective_scan_fn is used
# (hecktor.scan); causal-conv1d is an optional extra of mamba-ssm that this network never calls, so it is not built.
FROM ${BUILDER_IMAGE} AS mamba-1
ARG WITH_MAMBA=0
ARG MAMBA_SSM_VERSION=2.2.4
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
ARG MAX_JOBS=4
ARG PIP_EXTRA_ARGS=""
# MAMBA_FORCE_BUILD (mamba-ssm's spelling) stops setup.py from fetching a prebuilt wheel: that one is compiled for
# other torch versions and architectures than this image's. Note that torch applies TORCH_CUDA_ARCH_LIST only to
# extensions that pass no -gencode flags of their own; mamba-ssm's setup.py passes its list (sm_70, sm_80, sm_90 and
# more), whose binaries also run on 7.5, 8.6 and 8.9 (same major version), so every card of the list is covered.
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    MAMBA_FORCE_BUILD=TRUE \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# --no-build-isolation: the extension must compile against the image's own torch, not a fresh one pip would fetch.
# The constraints file keeps pip from touching that torch while it installs the build tools.
RUN set -eu; \
    if [ "${WITH_MAMBA}" != "1" ]; then mkdir -p /wheels; exit 0; fi; \
    python -m pip list --format=freeze | grep -iE '^(torch|triton)==' > /tmp/torch-constraints.txt; \
    python -m pip install --no-cache-dir ${PIP_EXTRA_ARGS} -c /tmp/torch-constraints.txt packaging ninja wheel setuptools; \
    python -m pip wheel --no-cache-dir ${PIP_EXTRA_ARGS} --no-build-isolation --no-deps -w /wheels \
        "mamba-ssm==${MAMBA_SSM_VERSION}"; \
    ls -l /wheels

# With WITH_MAMBA=0 this empty stage stands in for the builder, which is then never built by Docker's BuildKit. Podman
# 4.3 does not build a stage picked through a build argument: there, --skip-unused-stages=false builds every stage,
# and the builder above then makes no wheel (scripts/podman_smoke.sh).
FROM ${BASE_IMAGE} AS mamba-0
RUN mkdir -p /wheels

FROM mamba-${WITH_MAMBA} AS mamba-wheels

# ------------------------------------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
ARG WITH_MAMBA=0
ARG TORCH_REQUIREMENT=""
ARG PIP_EXTRA_ARGS=""

# Nothing may be written outside /output and /tmp at run time (the platform mounts the rest read-only), and nothing
# may be fetched (no network): every cache points into /tmp and the Hugging Face stack (imported by mamba_ssm) is
# told that it is offline.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    MPLCONFIGDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/inductor \
    NUMBA_CACHE_DIR=/tmp/.cache/numba \
    HF_HOME=/tmp/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1

RUN groupadd -r user && useradd -m --no-log-init -r -g user user

# Pin the image's torch (and triton) so that no later pip step replaces the CUDA build with another one.
RUN set -eu; \
    if [ -n "${TORCH_REQUIREMENT}" ]; then \
        python -m pip install --no-cache-dir ${PIP_EXTRA_ARGS} "${TORCH_REQUIREMENT}"; \
    fi; \
    python -c "import torch" 2>/dev/null || { \
        echo "error: BASE_IMAGE has no PyTorch; use a PyTorch image or pass --build-arg TORCH_REQUIREMENT=torch==X" >&2; \
        exit 1; }; \
    python -m pip list --format=freeze | grep -iE '^(torch|triton)==' > /etc/hecktor-constraints.txt; \
    cat /etc/hecktor-constraints.txt

# mamba-ssm and its Python dependencies (einops, transformers, ...). The wheels are bind-mounted from the builder
# stage, so they add no layer of their own. `import mamba_ssm` imports transformers' old generation-output classes,
# which transformers 5 removed: keep it below 5 (checked by the import test further down).
RUN --mount=type=bind,from=mamba-wheels,source=/wheels,target=/tmp/mamba-wheels \
    set -eu; \
    if [ "${WITH_MAMBA}" = "1" ]; then \
        python -m pip install --no-cache-dir ${PIP_EXTRA_ARGS} -c /etc/hecktor-constraints.txt \
            /tmp/mamba-wheels/*.whl "transformers<5"; \
    fi

# The shared library, from the repository, with the dependency versions the test suite runs on. MONAI is the one
# that follows torch (1.6 needs torch >= 2.8, 1.5.2 runs on 2.4+); the constraints file makes pip pick the right one.
# Every task's predictor module is imported, whichever task this image runs: one check for all.
COPY shared /tmp/hecktor-src
RUN set -eu; \
    python -m pip install --no-cache-dir ${PIP_EXTRA_ARGS} -c /etc/hecktor-constraints.txt \
        /tmp/hecktor-src \
        "numpy==2.4.6" "SimpleITK==2.5.7" "scipy==1.17.1" "scikit-survival==0.28.0" "tqdm==4.70.1" "einops==0.8.2" \
        "monai>=1.5.2,<1.7"; \
    rm -rf /tmp/hecktor-src; \
    python -c "import hecktor.container, hecktor.case, hecktor.segment, hecktor.prognosis, hecktor.diagnosis"; \
    if [ "${WITH_MAMBA}" = "1" ]; then \
        python -c "import sys; from hecktor.scan import mamba_ssm_selective_scan as f; \
                   sys.exit(0 if f() else 'error: mamba_ssm does not import (see the pip output above)')"; \
    fi

# The task comes last: every layer above is the same for every task without mamba-ssm, so those images share them
# (a RUN after an ARG sees its value, and a different value is another layer).
ARG TASK_DIR
RUN set -eu; \
    if [ -z "${TASK_DIR}" ]; then \
        echo "error: no task; pass --build-arg TASK_DIR=taskN_container (or use ./build.sh --task N)" >&2; \
        exit 1; \
    fi
WORKDIR /opt/app
COPY --chmod=0755 ${TASK_DIR}/inference.py /opt/app/inference.py
# The model: an empty resources/bundle by default (the platform mounts the model at /opt/ml/model), the task's exported
# bundle with BUNDLE_IN_IMAGE=1. A bind mount of the task's folder rather than a COPY, because a COPY fails when the
# bundle does not exist, and a stage picked through a build argument is not built by Podman 4.3 (its buildah skips
# such a stage as unused; seen 2026-12-07). The bundle folder is private to its owner (0700): it is made readable in
# the same RUN, so the weights are stored once.
ARG BUNDLE_IN_IMAGE=0
RUN --mount=type=bind,source=${TASK_DIR},target=/tmp/task-dir \
    set -eu; \
    mkdir -p /opt/app/resources; \
    if [ "${BUNDLE_IN_IMAGE}" = "1" ]; then \
        if [ ! -f /tmp/task-dir/resources/bundle/manifest.json ]; then \
            echo "error: BUNDLE_IN_IMAGE=1 but ${TASK_DIR}/resources/bundle holds no bundle; export one first" >&2; \
            exit 1; \
        fi; \
        cp -R /tmp/task-dir/resources/bundle /opt/app/resources/bundle; \
        chmod -R a+rX,go-w /opt/app/resources/bundle; \
    else \
        mkdir -p /opt/app/resources/bundle; \
    fi

USER user
ENTRYPOINT ["python", "inference.py"]
