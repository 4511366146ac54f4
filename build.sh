#!/usr/bin/env bash
# Build the HECKTOR 2025 Grand-Challenge images (one per task of the registry, shared/hecktor/tasks.py) from this
# repository and, on request, save what the platform takes: the gzipped image archive and, apart from it, the model
# tarball (model.tar.gz, the bundle's files at its root) that the platform extracts into /opt/ml/model.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE="${ENGINE:-docker}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
# Platform limits (docs/reference/platform-interface.md): an image, and each uploaded file, at most 10 GB; the 2025
# phase's upload page took a saved image .tar.gz of at most 2 GB.
UPLOAD_LIMIT_BYTES=$((10 * 1000 * 1000 * 1000))
ARCHIVE_LIMIT_BYTES=$((2 * 1000 * 1000 * 1000))

usage() {
    cat <<EOF
Usage: ./build.sh [options]

Build the Grand-Challenge images (build context: the repository root), one per task of the registry
(shared/hecktor/tasks.py; 'PYTHONPATH=shared python3 -m hecktor.tasks' lists them), all from the one Dockerfile
with the task's container folder as build arg TASK_DIR (and the KEY=VALUE lines of the folder's build-args file):
$(task_lines | while IFS=$'\t' read -r n folder image _ _ _ export; do
    printf '  Task %s -> $TASK%s_IMAGE (default %s:latest), from Dockerfile with TASK_DIR=%s\n' "$n" "$n" "$image" \
        "$folder"; done)
The images hold no model: as on the platform, the container loads its bundle from /opt/ml/model, where the platform
extracts the model tarball that --save writes. --save and --bundle-in-image need each task's exported bundle, which
is first verified as a container loads it (checksums, task, plan, networks):
$(task_lines | while IFS=$'\t' read -r n folder _ _ _ _ export; do
    printf '  %-50s -> %s/resources/bundle\n' "$export" "$folder"; done)

Options:
  --task N              build this task's image (repeatable: --task 1 --task 2 builds both; default: every task)
  --no-mamba            images that compile mamba-ssm (WITH_MAMBA=1 in their folder's build-args: Task 1) without
                        its CUDA kernels (build arg WITH_MAMBA=0; the pure-PyTorch selective scan runs instead,
                        slower on a GPU, no CUDA compiler needed)
  --base-image IMAGE    build arg BASE_IMAGE (default in the Dockerfile: the organisers' PyTorch CUDA image)
  --build-arg KEY=VALUE extra build argument, passed on as is (repeatable)
  --save                also write the two files to upload per task: the image archive <image>.tar.gz ('ENGINE save
                        | gzip', e.g. hecktor-task1.tar.gz; Algorithm -> Containers) and the model tarball
                        <image>-model.tar.gz (the bundle's files at its root, read back and checked against the
                        bundle's manifest; Algorithm -> Models); each size is printed against the platform's 10 GB
  --save-dir DIR        where --save writes (default: the repository root)
  --bundle-in-image     a self-contained image: the bundle copied into resources/bundle (build arg BUNDLE_IN_IMAGE=1),
                        used when no model tarball is extracted into /opt/ml/model
  -h, --help            this text

Environment:
  ENGINE        container engine, docker (default) or podman (same commands)
  TASK<N>_IMAGE image name:tag of Task N (default: the registry's name, e.g. hecktor-task1:latest)
  PYTHON        Python with the hecktor library (default .venv/bin/python, else python3): it reads the task
                registry (that alone needs no package) and, for --save and --bundle-in-image, verifies the bundles
                and writes the model tarballs
  ENGINE_BUILD_ARGS  extra arguments for '\$ENGINE build' (word-split), e.g. ulimits or a build-time volume
EOF
}

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

# The registry, one tab-separated line per task: number, container folder, image, output, kind, limit, export command.
hecktor_python() { PYTHONPATH="$REPO/shared${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"; }
task_lines() { hecktor_python -m hecktor.tasks --shell; }
TASK_TABLE="$(task_lines)" || die "cannot read the task registry with $PYTHON (PYTHONPATH=$REPO/shared); set PYTHON"
field_of() { awk -F'\t' -v n="$1" -v f="$2" '$1 == n { print $f }' <<<"$TASK_TABLE"; }
all_tasks=()
while IFS=$'\t' read -r n _; do all_tasks+=("$n"); done <<<"$TASK_TABLE"

tasks=()
with_mamba=1
bundle_in_image=0
save=0
save_dir="$REPO"
extra_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --task)
            [[ $# -ge 2 ]] || die "--task needs a value (${all_tasks[*]})"
            [[ -n "$(field_of "$2" 1)" ]] || die "--task must be one of ${all_tasks[*]}, got '$2'"
            [[ " ${tasks[*]-} " == *" $2 "* ]] || tasks+=("$2")
            shift 2
            ;;
        --no-mamba) with_mamba=0; shift ;;
        --base-image)
            [[ $# -ge 2 ]] || die "--base-image needs an image name"
            extra_args+=(--build-arg "BASE_IMAGE=$2")
            shift 2
            ;;
        --build-arg)
            [[ $# -ge 2 && "$2" == *=* ]] || die "--build-arg needs KEY=VALUE"
            extra_args+=(--build-arg "$2")
            shift 2
            ;;
        --save) save=1; shift ;;
        --bundle-in-image) bundle_in_image=1; shift ;;
        --save-dir)
            [[ $# -ge 2 ]] || die "--save-dir needs a folder"
            save_dir="$2"
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see ./build.sh --help)" ;;
    esac
done
[[ ${#tasks[@]} -gt 0 ]] || tasks=("${all_tasks[@]}")

# TASK<N>_IMAGE overrides the registry's image name.
image_of() { local var="TASK$1_IMAGE"; echo "${!var:-$(field_of "$1" 3):latest}"; }

# A task's own build arguments, into task_args: the KEY=VALUE lines of its folder's build-args file, if it has one
# ('#' starts a comment line). Task 1's says WITH_MAMBA=1, which --no-mamba turns into WITH_MAMBA=0.
read_task_args() {
    local file="$REPO/$1/build-args" line
    task_args=()
    [[ -f "$file" ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        [[ -z "$line" || "$line" == \#* ]] && continue
        [[ "$line" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "$1/build-args: '$line' is not KEY=VALUE"
        if [[ "$line" == WITH_MAMBA=1 && "$with_mamba" == 0 ]]; then line="WITH_MAMBA=0"; fi
        task_args+=(--build-arg "$line")
    done <"$file"
}

# Everything the images need is checked before the first (long) build starts: the bundles too, when they are used.
[[ -f "$REPO/Dockerfile" ]] || die "$REPO/Dockerfile is missing"
for task in "${tasks[@]}"; do
    folder="$(field_of "$task" 2)"
    read_task_args "$folder"
    [[ -f "$REPO/$folder/inference.py" ]] || die "$folder/inference.py is missing"
    [[ "$save" == 1 || "$bundle_in_image" == 1 ]] || continue
    bundle="$folder/resources/bundle"
    [[ -f "$REPO/$bundle/manifest.json" ]] \
        || die "no Task $task model bundle ($bundle/manifest.json is missing); export one first: $(field_of "$task" 7)"
done
command -v "$ENGINE" >/dev/null 2>&1 || die "container engine '$ENGINE' not found; install Docker or set ENGINE=podman"
if [[ "$save" == 1 || "$bundle_in_image" == 1 ]]; then
    hecktor_python -c "import hecktor.model_tarball" 2>/dev/null \
        || die "$PYTHON cannot import the hecktor library, which verifies the bundles; run 'make setup' or set PYTHON"
    for task in "${tasks[@]}"; do
        bundle="$REPO/$(field_of "$task" 2)/resources/bundle"
        echo "==> Task $task: verifying $bundle as the container loads it"
        # One 'error: ...' line on failure (a changed file, another task's bundle, weights that do not fit).
        verified="$(hecktor_python -m hecktor.model_tarball verify "$bundle" --task "$task" 2>&1)" \
            || die "Task $task bundle refused: ${verified##*error: }"
    done
fi
if [[ "$save" == 1 ]]; then
    mkdir -p "$save_dir" || die "cannot create --save-dir $save_dir"
fi

engine_name="$(basename "$ENGINE")"
# Docker needs BuildKit for RUN --mount (the default builder since Docker 23; older versions need the variable).
export DOCKER_BUILDKIT=1

human_size() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }
# One line per file to upload: its size against the platform's 10 GB (a warning line too when over).
report_size() {
    local bytes
    bytes="$(wc -c < "$1" | tr -d ' ')"
    echo "==> $2 $1: $(human_size "$bytes") of the platform's 10 GB ($(awk -v b="$bytes" -v l="$UPLOAD_LIMIT_BYTES" \
        'BEGIN { printf "%.1f", 100 * b / l }') %)"
    if ((bytes > UPLOAD_LIMIT_BYTES)); then
        echo "build.sh: warning: $1 is $(human_size "$bytes"), over the platform's 10 GB upload limit" >&2
    fi
}

for task in "${tasks[@]}"; do
    image="$(image_of "$task")"
    folder="$(field_of "$task" 2)"
    read_task_args "$folder"
    # shellcheck disable=SC2206  # ENGINE_BUILD_ARGS is a list of arguments on purpose
    args=(build ${ENGINE_BUILD_ARGS:-} -f "$REPO/Dockerfile" -t "$image" --build-arg "TASK_DIR=$folder")
    # "${array[@]+...}" expands to nothing when the array is empty (bash < 4.4 treats that as unset under -u).
    [[ "$bundle_in_image" == 1 ]] && task_args+=(--build-arg BUNDLE_IN_IMAGE=1)
    args+=(${task_args[@]+"${task_args[@]}"} ${extra_args[@]+"${extra_args[@]}"} "$REPO")
    echo "==> Task $task: $ENGINE ${args[*]}"
    start=$SECONDS
    "$ENGINE" "${args[@]}" || die "building $image failed (see the $engine_name output above)"
    size="$("$ENGINE" image inspect -f '{{.Size}}' "$image")" || die "cannot inspect the image $image just built"
    echo "==> built $image in $((SECONDS - start)) s, $(human_size "$size")$([[ "$bundle_in_image" == 1 ]] \
        && echo ", its bundle inside" || echo ", no model inside (it loads /opt/ml/model)")"
    if [[ "$size" =~ ^[0-9]+$ ]] && ((size > UPLOAD_LIMIT_BYTES)); then
        echo "build.sh: warning: $image is $(human_size "$size"), over the platform's 10 GB image limit" >&2
    fi

    if [[ "$save" == 1 ]]; then
        archive="$save_dir/$(field_of "$task" 3).tar.gz"
        partial="$archive.partial"
        save_args=(save)
        # podman's default archive format is already docker-archive; saying so keeps the result loadable by both.
        [[ "$engine_name" == podman ]] && save_args+=(--format docker-archive)
        echo "==> saving $image to $archive"
        # Written under another name and renamed, so an interrupted save never leaves a truncated archive behind.
        trap 'rm -f "$partial"' EXIT
        "$ENGINE" "${save_args[@]}" "$image" | gzip -c > "$partial" || die "saving $image failed"
        mv -f "$partial" "$archive"
        trap - EXIT
        report_size "$archive" "image archive"
        if (($(wc -c < "$archive") > ARCHIVE_LIMIT_BYTES)); then
            echo "build.sh: warning: $archive is over the 2 GB that the 2025 phase's upload page took" >&2
        fi

        model="$save_dir/$(field_of "$task" 3)-model.tar.gz"
        echo "==> writing the model tarball $model"
        hecktor_python -m hecktor.model_tarball write "$REPO/$folder/resources/bundle" "$model" --task "$task" \
            || die "writing $model failed (see the line above)"
        report_size "$model" "model tarball"
    fi
done
