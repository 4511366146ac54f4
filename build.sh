#!/usr/bin/env bash
# Build the HECKTOR 2025 Grand-Challenge images (one per task of the registry, shared/hecktor/tasks.py) from this
# repository and, on request, save each as the gzipped image archive that the platform's upload page accepts.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE="${ENGINE:-docker}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
# Platform limits (docs/reference/platform-interface.md): image at most 10 GB, saved .tar.gz at most 2 GB.
IMAGE_LIMIT_BYTES=$((10 * 1000 * 1000 * 1000))
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
Each needs its exported model bundle first:
$(task_lines | while IFS=$'\t' read -r n folder _ _ _ _ export; do
    printf '  %-50s -> %s/resources/bundle\n' "$export" "$folder"; done)

Options:
  --task N              build only this task's image (default: every task)
  --no-mamba            images that compile mamba-ssm (WITH_MAMBA=1 in their folder's build-args: Task 1) without
                        its CUDA kernels (build arg WITH_MAMBA=0; the pure-PyTorch selective scan runs instead,
                        slower on a GPU, no CUDA compiler needed)
  --base-image IMAGE    build arg BASE_IMAGE (default in the Dockerfile: the organisers' PyTorch CUDA image)
  --build-arg KEY=VALUE extra build argument, passed on as is (repeatable)
  --save                also write <image>.tar.gz per task, e.g. hecktor-task1.tar.gz ('ENGINE save | gzip')
  --save-dir DIR        where --save writes (default: the repository root)
  -h, --help            this text

Environment:
  ENGINE        container engine, docker (default) or podman (same commands)
  TASK<N>_IMAGE image name:tag of Task N (default: the registry's name, e.g. hecktor-task1:latest)
  PYTHON        Python that reads the task registry (default .venv/bin/python, else python3; no packages needed)
  ENGINE_BUILD_ARGS  extra arguments for '\$ENGINE build' (word-split), e.g. ulimits or a build-time volume
EOF
}

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

# The registry, one tab-separated line per task: number, container folder, image, output, kind, limit, export command.
task_lines() { PYTHONPATH="$REPO/shared${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m hecktor.tasks --shell; }
TASK_TABLE="$(task_lines)" || die "cannot read the task registry with $PYTHON (PYTHONPATH=$REPO/shared); set PYTHON"
field_of() { awk -F'\t' -v n="$1" -v f="$2" '$1 == n { print $f }' <<<"$TASK_TABLE"; }
all_tasks=()
while IFS=$'\t' read -r n _; do all_tasks+=("$n"); done <<<"$TASK_TABLE"

tasks=("${all_tasks[@]}")
with_mamba=1
save=0
save_dir="$REPO"
extra_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --task)
            [[ $# -ge 2 ]] || die "--task needs a value (${all_tasks[*]})"
            [[ -n "$(field_of "$2" 1)" ]] || die "--task must be one of ${all_tasks[*]}, got '$2'"
            tasks=("$2")
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
        --save-dir)
            [[ $# -ge 2 ]] || die "--save-dir needs a folder"
            save_dir="$2"
            shift 2
            ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see ./build.sh --help)" ;;
    esac
done

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

# Everything the images need is checked before the first (long) build starts.
[[ -f "$REPO/Dockerfile" ]] || die "$REPO/Dockerfile is missing"
for task in "${tasks[@]}"; do
    folder="$(field_of "$task" 2)"
    read_task_args "$folder"
    bundle="$folder/resources/bundle"
    [[ -f "$REPO/$bundle/manifest.json" ]] \
        || die "no Task $task model bundle ($bundle/manifest.json is missing); export one first: $(field_of "$task" 7)"
    [[ -f "$REPO/$folder/inference.py" ]] || die "$folder/inference.py is missing"
done
command -v "$ENGINE" >/dev/null 2>&1 || die "container engine '$ENGINE' not found; install Docker or set ENGINE=podman"
if [[ "$save" == 1 ]]; then
    mkdir -p "$save_dir" || die "cannot create --save-dir $save_dir"
fi

engine_name="$(basename "$ENGINE")"
# Docker needs BuildKit for RUN --mount (the default builder since Docker 23; older versions need the variable).
export DOCKER_BUILDKIT=1

human_size() { awk -v b="$1" 'BEGIN { printf "%.2f GB", b / 1e9 }'; }

for task in "${tasks[@]}"; do
    image="$(image_of "$task")"
    folder="$(field_of "$task" 2)"
    read_task_args "$folder"
    # shellcheck disable=SC2206  # ENGINE_BUILD_ARGS is a list of arguments on purpose
    args=(build ${ENGINE_BUILD_ARGS:-} -f "$REPO/Dockerfile" -t "$image" --build-arg "TASK_DIR=$folder")
    # "${array[@]+...}" expands to nothing when the array is empty (bash < 4.4 treats that as unset under -u).
    args+=(${task_args[@]+"${task_args[@]}"} ${extra_args[@]+"${extra_args[@]}"} "$REPO")
    echo "==> Task $task: $ENGINE ${args[*]}"
    start=$SECONDS
    "$ENGINE" "${args[@]}" || die "building $image failed (see the $engine_name output above)"
    size="$("$ENGINE" image inspect -f '{{.Size}}' "$image")" || die "cannot inspect the image $image just built"
    echo "==> built $image in $((SECONDS - start)) s, $(human_size "$size")"
    if [[ "$size" =~ ^[0-9]+$ ]] && ((size > IMAGE_LIMIT_BYTES)); then
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
        bytes="$(wc -c < "$archive" | tr -d ' ')"
        echo "==> wrote $archive ($(human_size "$bytes"))"
        if ((bytes > ARCHIVE_LIMIT_BYTES)); then
            echo "build.sh: warning: $archive is $(human_size "$bytes"), over the platform's 2 GB upload limit" >&2
        fi
    fi
done
