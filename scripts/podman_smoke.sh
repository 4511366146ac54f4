#!/usr/bin/env bash
# Smoke test of the container packaging with Podman, on a machine that cannot pull base images (no container
# registry, only the machine's own Python and Debian package sources): build the Dockerfile through build.sh from a
# locally bootstrapped Debian base image with the CPU PyTorch wheel, save the image and the model tarball as the
# platform takes them, then run them through test_container.sh as the platform does (the model tarball extracted and
# mounted read-only at /opt/ml/model, no network), which ends with the pre-flight report.
#
# Not part of the test suite: it needs root, installs Debian packages and takes minutes. What it proves is that the
# Dockerfile, .dockerignore, build.sh and test_container.sh work with a real engine; it does not exercise the CUDA
# base image or the mamba-ssm builder stage (those need Docker Hub and nvcc).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOKE_DIR="${SMOKE_DIR:-/tmp/hecktor-smoke}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_IMAGE="localhost/hecktor-base:$SUITE"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
die() {
    echo "podman_smoke.sh: error: $*" >&2
    exit 1
}
# The tasks, their container folders and how to make a tiny bundle come from the registry (shared/hecktor/tasks.py).
registry() { PYTHONPATH="$REPO/shared${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m hecktor.tasks "$@"; }
TASK_TABLE="$(registry --shell)" || die "cannot read the task registry with $PYTHON; run 'make setup' or set PYTHON"
field_of() { awk -F'\t' -v n="$1" -v f="$2" '$1 == n { print $f }' <<<"$TASK_TABLE"; }
all_tasks=()
while IFS=$'\t' read -r n _; do all_tasks+=("$n"); done <<<"$TASK_TABLE"
# runc here refuses containers whose default rlimits exceed what the host allows; these values work.
ULIMITS="--ulimit nofile=1024:20000 --ulimit nproc=1024:1024"

# The Debian mirror for debootstrap: $DEBIAN_MIRROR, else the first source of this machine's apt configuration that
# serves $SUITE (one-line entries in sources.list and sources.list.d/*.list, deb822 stanzas in sources.list.d/*.sources,
# under $APT_ETC, default /etc/apt). No mirror is named here: the machine's own configuration says where its packages
# are.
apt_mirror() {
    local file etc="${APT_ETC:-/etc/apt}"
    for file in "$etc/sources.list" "$etc"/sources.list.d/*.list; do
        [[ -f "$file" ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/\[[^]]*\]//' "$file" | awk -v suite="$SUITE" \
            '$1 == "deb" && $3 == suite { print $2; exit }'
    done
    for file in "$etc"/sources.list.d/*.sources; do
        [[ -f "$file" ]] || continue
        # Stanzas separated by blank lines; a stanza serves SUITE when its Types hold deb and its Suites the suite.
        awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
            { types = uris = suites = ""; enabled = 1
              for (i = 1; i <= NF; i++) {
                  if ($i ~ /^#/) continue
                  split($i, kv, /:[ \t]*/)
                  key = tolower(kv[1]); value = substr($i, length(kv[1]) + 2); gsub(/^[ \t]+/, "", value)
                  if (key == "types") types = value
                  else if (key == "uris") uris = value
                  else if (key == "suites") suites = value
                  else if (key == "enabled" && tolower(value) == "no") enabled = 0
              }
              if (enabled && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) {
                  split(uris, first, /[ \t]+/); print first[1]; exit
              } }' "$file"
    done
}

usage() {
    cat <<EOF
Usage: sudo scripts/podman_smoke.sh [--task N]... [--cases N]

  --task N     which container(s) to build and run, of the registry's tasks (${all_tasks[*]}; repeatable; default:
               every task). Task 1 is built with --no-mamba.
  --cases N    synthetic cases per task for test_container.sh (default 2)

Steps (each skipped when its result is already there, under \$SMOKE_DIR, default /tmp/hecktor-smoke):
  1. apt-get install podman debootstrap runc (if missing)
  2. debootstrap a minimal Debian \$DEBIAN_SUITE (default bookworm) with python3 + a venv at /opt/venv; import it
     as $BASE_IMAGE. The mirror: \$DEBIAN_MIRROR, else this machine's apt sources that serve the suite
     (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and deb822 *.sources)
  3. fetch the CPU torch==\$TORCH_VERSION wheel with the host's pip (default $TORCH_VERSION) for the build
  4. copy the build context (the files .dockerignore admits, plus build.sh, the Dockerfile and each container
     folder's build-args) to \$SMOKE_DIR/context; where the repository has no exported bundle, train a tiny one
     on a synthetic cohort (untrained-quality, packaging only) with the task's smoke_commands of the registry
     ('python -m hecktor.tasks --smoke N')
  5. ENGINE=podman build.sh --save on that copy: each image without its model, saved with the model tarball under
     \$SMOKE_DIR/upload; then every image under the platform's run restrictions (the bundle read-only at
     /opt/ml/model, --network none: the container must see no network interface but the loopback), and
     ENGINE=podman test_container.sh --save-dir \$SMOKE_DIR/upload (the model tarball extracted and mounted, the
     pre-flight report last), except where a container's inference.py does not exist yet
EOF
}

tasks=()
cases=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --task)
            [[ $# -ge 2 && -n "$(field_of "$2" 1)" ]] || die "--task must be one of ${all_tasks[*]}"
            tasks+=("$2"); shift 2 ;;
        --cases)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--cases needs a positive whole number"
            cases="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ ${#tasks[@]} -gt 0 ]] || tasks=("${all_tasks[@]}")
[[ "$(id -u)" == 0 ]] || die "run as root (podman here is rootful; debootstrap and apt-get need root)"
"$PYTHON" -c "import hecktor" 2>/dev/null || die "$PYTHON cannot import hecktor; run 'make setup' or set PYTHON"

step() { echo; echo "=== $* ($(date +%T))"; }
mkdir -p "$SMOKE_DIR"

step "1. tools"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null
fi
podman --version

step "2. base image $BASE_IMAGE"
rootfs="$SMOKE_DIR/rootfs"
if ! podman image exists "$BASE_IMAGE"; then
    if [[ ! -x "$rootfs/opt/venv/bin/python" ]]; then
        mirror="${DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}"
        [[ -n "$mirror" ]] || die "no apt source of this machine serves Debian $SUITE; set DEBIAN_MIRROR to a mirror's URL"
        echo "debootstrap $SUITE from $mirror"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            "$SUITE" "$rootfs" "$mirror" >"$SMOKE_DIR/debootstrap.log" 2>&1 \
            || die "debootstrap failed (see $SMOKE_DIR/debootstrap.log)"
        # Debian's python refuses pip installs into the system (PEP 668); the pytorch images' conda python does
        # not. A venv first on PATH makes 'python -m pip install' in the Dockerfile behave the same on both.
        chroot "$rootfs" python3 -m venv /opt/venv
    fi
    # Builds reach the package index through this host's network, which may re-sign TLS with its own CA: give the
    # image the host's CA bundle and point pip and Python at it.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . | podman import \
        --change "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
        --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        - "$BASE_IMAGE" >/dev/null
fi
# shellcheck disable=SC2086
podman run --rm $ULIMITS "$BASE_IMAGE" python -c "import sys; print('base image python', sys.version.split()[0])"

step "3. torch==$TORCH_VERSION CPU wheel"
wheels="$SMOKE_DIR/wheels"
mkdir -p "$wheels"
"$PYTHON" -m pip download --quiet --no-deps "torch==$TORCH_VERSION" -d "$wheels"
ls "$wheels"

step "4. build context"
context="$SMOKE_DIR/context"
rm -rf "$context"
mkdir -p "$context"
cp "$REPO/.dockerignore" "$REPO/build.sh" "$REPO/Dockerfile" "$context/"
cp -r "$REPO/shared" "$context/shared"
placeholder_tasks=()
for task in "${tasks[@]}"; do
    folder="$(field_of "$task" 2)"
    mkdir -p "$context/$folder/resources"
    if [[ -f "$REPO/$folder/build-args" ]]; then cp "$REPO/$folder/build-args" "$context/$folder/"; fi
    if [[ -f "$REPO/$folder/inference.py" ]]; then
        cp "$REPO/$folder/inference.py" "$context/$folder/"
    else
        # The Dockerfile COPYs inference.py; until the real one exists, an entry point that refuses to run stands
        # in, and step 5 checks only the image (build, imports, user, restrictions), not inference.
        placeholder_tasks+=("$task")
        printf '%s\n' "import sys" "import hecktor" \
            "sys.exit('podman_smoke.sh placeholder: $folder/inference.py does not exist yet')" \
            > "$context/$folder/inference.py"
    fi
    bundle="$REPO/$folder/resources/bundle"
    if [[ -f "$bundle/manifest.json" ]]; then
        cp -r "$bundle" "$context/$folder/resources/bundle"
        echo "Task $task: the repository's bundle"
        continue
    fi
    cohort="$SMOKE_DIR/cohort"
    # A cohort of an older generator, or one written without the 2026 layout, may lack a task's folder: made again
    # when its version is not the library's or the task's training folder is missing.
    if ! PYTHONPATH="$REPO/shared${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import json, sys, pathlib
import hecktor.synthetic as s, hecktor.tasks as t
cohort = pathlib.Path(sys.argv[1])
sys.exit(json.load(open(cohort / 'cohort.json'))['generator_version'] != s.GENERATOR_VERSION
         or not (cohort / t.get_task(sys.argv[2]).training_folder).is_dir())" "$cohort" "$task" 2>/dev/null
    then
        "$PYTHON" -m hecktor.synthetic --out "$cohort" --cases 24 --seed 0 --size small --edition-2026 \
            --overwrite >/dev/null
    fi
    run="$SMOKE_DIR/run-task$task"
    rm -rf "$run"
    echo "Task $task: no exported bundle in the repository; training a tiny one (packaging only)"
    log="$SMOKE_DIR/train-task$task.log"
    : >"$log"
    commands="$(registry --smoke "$task")" || die "cannot read Task $task's smoke commands from the registry"
    [[ -n "$commands" ]] || die "the registry gives Task $task no smoke_commands to make a tiny bundle"
    while IFS= read -r command; do
        # The registry's placeholders: the interpreter, the cohort, the run folder and the bundle folder (quoted).
        command="${command/#python /\"\$PYTHON\" }"
        command="${command//DATA/\"$cohort\"}"
        command="${command//RUN_DIR/\"$run\"}"
        command="${command//BUNDLE/\"$context/$folder/resources/bundle\"}"
        echo "+ $command" >>"$log"
        (cd "$REPO" && eval "$command") >>"$log" 2>&1 || die "tiny Task $task bundle failed (see $log)"
    done <<<"$commands"
done

step "5a. build.sh --save with podman"
upload="$SMOKE_DIR/upload"
rm -rf "$upload"
# Podman 4.3 does not build the stage that FROM mamba-${WITH_MAMBA} picks: every stage is built instead, the builder
# from the local base image (with WITH_MAMBA=0 it makes no wheel; see the Dockerfile).
build_flags=(--no-mamba --base-image "$BASE_IMAGE" --build-arg "BUILDER_IMAGE=$BASE_IMAGE"
    --build-arg "TORCH_REQUIREMENT=torch==$TORCH_VERSION" --build-arg "PIP_EXTRA_ARGS=--find-links /wheels")
image_of() { echo "hecktor-smoke-$(field_of "$1" 3):latest"; }
for task in "${tasks[@]}"; do
    start=$SECONDS
    # The image without its model, then the image archive and the model tarball (the bundle verified first).
    env ENGINE=podman PYTHON="$PYTHON" "TASK${task}_IMAGE=$(image_of "$task")" \
        ENGINE_BUILD_ARGS="$ULIMITS --skip-unused-stages=false --volume $wheels:/wheels:ro" \
        "$context/build.sh" --task "$task" --save --save-dir "$upload" "${build_flags[@]}"
    echo "Task $task image built and saved in $((SECONDS - start)) s"
done
podman images --filter reference='hecktor-smoke-*'
ls -l "$upload"

step "5b. the platform's run restrictions"
for task in "${tasks[@]}"; do
    image="$(image_of "$task")"
    echo "Task $task: $image with the bundle read-only at /opt/ml/model"
    work="$(mktemp -d "$SMOKE_DIR/run.XXXXXX")"
    mkdir -p "$work/input" "$work/output"
    chmod 777 "$work/output"
    podman volume create "hecktor-smoke-tmp-$$" >/dev/null
    # "No network" is proven without dialing anywhere: with --network none the container holds no network interface
    # but the loopback.
    # shellcheck disable=SC2086
    podman run --rm --network none --read-only --memory 16g --memory-swap 16g $ULIMITS \
        --user "$(podman image inspect -f '{{.Config.User}}' "$image")" \
        --volume "$context/$(field_of "$task" 2)/resources/bundle:/opt/ml/model:ro" \
        --volume "$work/input:/input:ro" --volume "$work/output:/output" --volume "hecktor-smoke-tmp-$$:/tmp" \
        --entrypoint python "$image" -c "
import os, sys, tempfile
import torch, SimpleITK, monai, hecktor, hecktor.case, hecktor.segment, hecktor.prognosis, hecktor.diagnosis
print('imports ok: torch', torch.__version__, 'monai', monai.__version__, 'hecktor', hecktor.__version__)
print('uid', os.getuid(), 'cwd', os.getcwd(), 'files', sorted(os.listdir('.')))
baked = sorted(os.listdir('resources/bundle'))
if baked:
    sys.exit('the image holds a bundle but must not: ' + ', '.join(baked[:3]))
print('no bundle in the image; /opt/ml/model holds', sorted(os.listdir('/opt/ml/model'))[:3], '...')
for path in ('/output/probe', tempfile.gettempdir() + '/probe'):
    open(path, 'w').close(); os.remove(path)
print('writable: /output and', tempfile.gettempdir())
for path in ('/input/probe', '/opt/app/probe', '/home/user/probe', '/opt/ml/model/probe'):
    try:
        open(path, 'w').close(); sys.exit('writable but must not be: ' + path)
    except OSError as error:
        print('read-only as required:', path, '(' + error.strerror + ')')
interfaces = sorted(os.listdir('/sys/class/net'))
if interfaces != ['lo']:
    sys.exit('network interfaces besides the loopback: ' + ', '.join(interfaces))
print('no network as required: the only interface is', interfaces[0])
"
    podman volume rm -f "hecktor-smoke-tmp-$$" >/dev/null
    rm -rf "$work"
done

step "5c. test_container.sh with the saved files"
for task in "${tasks[@]}"; do
    if [[ " ${placeholder_tasks[*]-} " == *" $task "* ]]; then
        echo "Task $task: inference.py does not exist yet; the image was checked under the restrictions only"
        continue
    fi
    env ENGINE=podman "TASK${task}_IMAGE=$(image_of "$task")" ENGINE_RUN_ARGS="$ULIMITS" PYTHON="$PYTHON" \
        "$REPO/test_container.sh" --task "$task" --cases "$cases" --save-dir "$upload"
done
step "done"
