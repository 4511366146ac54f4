#!/usr/bin/env bash
# Run the Grand-Challenge images the way the platform does, on synthetic test cases, and check their outputs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE="${ENGINE:-docker}"
MEMORY="${MEMORY:-16g}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

usage() {
    cat <<EOF
Usage: ./test_container.sh [options]

Runs each task's image (the tasks of the registry, shared/hecktor/tasks.py) as Grand Challenge does
(--network none, input mounted read-only, output mounted, a separate volume for /tmp, read-only root file system,
a $MEMORY memory cap, the image's non-root user, GPUs if present) on synthetic cases made by scripts/make_test_inputs.py (CT directions identity, flipped, oblique), then checks
each output with scripts/check_outputs.py: a mask exists, is UInt8, has labels in {0,1,2} and lies on the input
CT's grid; a JSON output holds one bare value of its kind (rfs.json: a finite number; hpv-status.json: true or
false); and each case ends within its task's platform limit. Exits non-zero if any run or check fails.

Options:
  --task N          test only this task (default: every task)
  --no-engine       no container: run python taskN_container/inference.py --input IN --output OUT directly
  --cases N         cases per task (default 3)
  --seed N          synthetic seed (default 0)
  --size small|realistic   case size (default small; realistic is a 512x512x200 CT)
  --work DIR        keep inputs and outputs in DIR (default: a temporary folder, removed on success)
  -h, --help        this text

Environment:
  ENGINE            docker (default) or podman
  TASK<N>_IMAGE     image of Task N (default: the registry's name, e.g. hecktor-task1:latest)
  PYTHON            Python with the hecktor library for making inputs and checking (default .venv/bin/python)
  MEMORY            container memory cap (default 16g, the platform's)
  ENGINE_RUN_ARGS   extra arguments for '\$ENGINE run' (word-split), e.g. ulimits an engine needs on this host
EOF
}

die() {
    echo "test_container.sh: error: $*" >&2
    exit 1
}

"$PYTHON" -c "import hecktor, SimpleITK" 2>/dev/null \
    || die "$PYTHON cannot import the hecktor library (needed to make inputs and check outputs); run 'make setup' or set PYTHON"
# The registry, one tab-separated line per task: number, container folder, image, output, kind, limit, export command.
TASK_TABLE="$("$PYTHON" -m hecktor.tasks --shell)" || die "cannot read the task registry with $PYTHON"
field_of() { awk -F'\t' -v n="$1" -v f="$2" '$1 == n { print $f }' <<<"$TASK_TABLE"; }
all_tasks=()
while IFS=$'\t' read -r n _; do all_tasks+=("$n"); done <<<"$TASK_TABLE"

tasks=("${all_tasks[@]}")
use_engine=1
cases=3
seed=0
size=small
work=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --task)
            [[ $# -ge 2 && -n "$(field_of "$2" 1)" ]] || die "--task must be one of ${all_tasks[*]}"
            tasks=("$2"); shift 2 ;;
        --no-engine) use_engine=0; shift ;;
        --cases)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--cases needs a positive whole number"
            cases="$2"; shift 2 ;;
        --seed)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--seed needs a non-negative whole number"
            seed="$2"; shift 2 ;;
        --size)
            [[ $# -ge 2 && ("$2" == small || "$2" == realistic) ]] || die "--size must be small or realistic"
            size="$2"; shift 2 ;;
        --work)
            [[ $# -ge 2 ]] || die "--work needs a folder"
            work="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see ./test_container.sh --help)" ;;
    esac
done

# TASK<N>_IMAGE overrides the registry's image name.
image_of() { local var="TASK$1_IMAGE"; echo "${!var:-$(field_of "$1" 3):latest}"; }

gpu_args=()
if [[ "$use_engine" == 1 ]]; then
    command -v "$ENGINE" >/dev/null 2>&1 || die "container engine '$ENGINE' not found; install it, set ENGINE, or use --no-engine"
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        if [[ "$(basename "$ENGINE")" == podman ]]; then
            # Podman reaches NVIDIA GPUs through a CDI spec (nvidia-ctk cdi generate); without one, run on the CPU.
            if [[ -e /etc/cdi/nvidia.yaml || -e /var/run/cdi/nvidia.yaml ]]; then
                gpu_args=(--device nvidia.com/gpu=all)
            else
                echo "note: a GPU is present but podman has no NVIDIA CDI spec; running on the CPU" >&2
            fi
        else
            gpu_args=(--gpus all)
        fi
    fi
    for task in "${tasks[@]}"; do
        image="$(image_of "$task")"
        "$ENGINE" image inspect "$image" >/dev/null 2>&1 || die "image $image not found; build it with ./build.sh --task $task"
        user="$("$ENGINE" image inspect -f '{{.Config.User}}' "$image")"
        [[ -n "$user" && "$user" != root && "${user%%:*}" != 0 ]] \
            || die "image $image runs as root (USER is '${user}'); the platform runs a non-root user"
    done
else
    for task in "${tasks[@]}"; do
        [[ -f "$REPO/$(field_of "$task" 2)/inference.py" ]] || die "$(field_of "$task" 2)/inference.py is missing"
    done
fi

if [[ -z "$work" ]]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/hecktor-container-test.XXXXXX")"
    remove_work=1
else
    mkdir -p "$work"
    remove_work=0
fi
volumes=()
cleanup() {
    for volume in ${volumes[@]+"${volumes[@]}"}; do "$ENGINE" volume rm -f "$volume" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

failures=()
for task in "${tasks[@]}"; do
    inputs="$work/task$task/inputs"
    outputs="$work/task$task/outputs"
    logs="$work/task$task/logs"
    rm -rf "$inputs" "$outputs" "$logs"
    mkdir -p "$outputs" "$logs"
    echo "==> Task $task: making $cases synthetic $size case(s) in $inputs"
    names="$("$PYTHON" "$REPO/scripts/make_test_inputs.py" --task "$task" --out "$inputs" --cases "$cases" \
        --seed "$seed" --size "$size")" || die "making the test inputs failed"
    # The container's user is not the caller: the input must be readable and the output writable by anyone.
    chmod -R a+rX "$inputs"
    image="$(image_of "$task")"
    user=""
    [[ "$use_engine" == 1 ]] && user="$("$ENGINE" image inspect -f '{{.Config.User}}' "$image")"
    for name in $names; do
        in="$inputs/$name"
        out="$outputs/$name"
        log="$logs/$name.log"
        mkdir -p "$out"
        chmod 777 "$out"
        start=$(date +%s.%N)
        if [[ "$use_engine" == 1 ]]; then
            volume="hecktor-tmp-$$-$task-$name"
            "$ENGINE" volume create "$volume" >/dev/null
            volumes+=("$volume")
            # As the platform: no network, read-only input, /output and a separate /tmp volume writable, all else
            # read-only (so a write anywhere else fails here, not on the platform), 16 GB without swap.
            # shellcheck disable=SC2206  # ENGINE_RUN_ARGS is a list of arguments on purpose
            cmd=("$ENGINE" run --rm --network none --read-only --memory "$MEMORY" --memory-swap "$MEMORY"
                --user "$user" ${gpu_args[@]+"${gpu_args[@]}"} ${ENGINE_RUN_ARGS:-}
                --volume "$in:/input:ro" --volume "$out:/output" --volume "$volume:/tmp" "$image")
        else
            cmd=("$PYTHON" "$REPO/$(field_of "$task" 2)/inference.py" --input "$in" --output "$out")
        fi
        status=0
        "${cmd[@]}" >"$log" 2>&1 || status=$?
        seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        if [[ "$status" != 0 ]]; then
            echo "--- last lines of $log:" >&2
            tail -n 20 "$log" >&2
            failures+=("task $task $name: the run exited with status $status after ${seconds} s")
            continue
        fi
        if ! "$PYTHON" "$REPO/scripts/check_outputs.py" --task "$task" --input "$in" --output "$out" \
            --expected "$inputs/expected.json"; then
            failures+=("task $task $name: output check failed (see the FAIL lines above)")
            continue
        fi
        echo "    $name: ${seconds} s"
        limit="$(field_of "$task" 6)"
        if awk -v s="$seconds" -v l="$limit" 'BEGIN { exit !(s > l) }'; then
            failures+=("task $task $name: took ${seconds} s, over the platform's ${limit} s limit")
        fi
    done
done

if [[ ${#failures[@]} -gt 0 ]]; then
    for failure in "${failures[@]}"; do echo "FAILED: $failure" >&2; done
    echo "test_container.sh: ${#failures[@]} failure(s); inputs, outputs and logs kept in $work" >&2
    exit 1
fi
echo "==> all checks passed (task(s) ${tasks[*]}, $cases case(s) each$([[ $use_engine == 1 ]] && echo ", $ENGINE" || echo ", no engine"))"
if [[ "$remove_work" == 1 ]]; then rm -rf "$work"; else echo "inputs, outputs and logs in $work"; fi
