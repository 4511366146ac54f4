#!/usr/bin/env bash
# Run the Grand-Challenge images the way the platform does (the model mounted read-only at /opt/ml/model), on
# synthetic test cases, check their outputs, and print the pre-flight report last.
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
(--network none, the model mounted read-only at /opt/ml/model, input mounted read-only, output mounted, a separate
volume for /tmp, read-only root file system, a $MEMORY memory cap, the image's non-root user, GPUs if present) on
synthetic cases made by scripts/make_test_inputs.py (CT directions identity, flipped, oblique), then checks each
output with scripts/check_outputs.py (the registry's output kind: a mask on the input CT's grid, one bare JSON
value, ...) and that each case ends within its task's platform limit. Last comes the pre-flight report
(python -m hecktor.preflight): each case's wall time against the task's limit, its peak memory against 16 GB, the
sizes of the files to upload against 10 GB. Exits non-zero if any run, check or limit fails.

The model of each task, mounted at /opt/ml/model (a model tarball is verified and extracted to a temporary folder
first, as the platform extracts it): --model N=PATH, else with --save-dir the <image>-model.tar.gz that
'build.sh --save' wrote there, else the exported bundle taskN_container/resources/bundle.

Options:
  --task N          test this task (repeatable; default: every task)
  --model N=PATH    Task N's model: a bundle folder or a model tarball (.tar.gz) (repeatable)
  --save-dir DIR    where 'build.sh --save' wrote <image>.tar.gz and <image>-model.tar.gz: the model tarball is the
                    model, and both sizes are in the report
  --bundle-in-image the images carry their bundle (build.sh --bundle-in-image): nothing is mounted at /opt/ml/model
  --no-engine       no container: run the task's inference.py (python FOLDER/inference.py --input IN --output OUT)
                    directly, the model folder given as HECKTOR_MODEL_DIR (which stands in for /opt/ml/model)
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

tasks=()
models=()
save_dir=""
bundle_in_image=0
use_engine=1
cases=3
seed=0
size=small
work=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --task)
            [[ $# -ge 2 && -n "$(field_of "$2" 1)" ]] || die "--task must be one of ${all_tasks[*]}"
            [[ " ${tasks[*]-} " == *" $2 "* ]] || tasks+=("$2")
            shift 2 ;;
        --model)
            [[ $# -ge 2 && "$2" == *=* && -n "$(field_of "${2%%=*}" 1)" ]] \
                || die "--model needs N=PATH with N one of ${all_tasks[*]}"
            [[ -e "${2#*=}" ]] || die "--model $2: ${2#*=} does not exist"
            models+=("$2"); shift 2 ;;
        --save-dir)
            [[ $# -ge 2 && -d "$2" ]] || die "--save-dir needs the folder that 'build.sh --save' wrote"
            save_dir="$2"; shift 2 ;;
        --bundle-in-image) bundle_in_image=1; shift ;;
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
[[ ${#tasks[@]} -gt 0 ]] || tasks=("${all_tasks[@]}")
[[ "$bundle_in_image" == 0 || ( ${#models[@]} == 0 && -z "$save_dir" ) ]] \
    || die "--bundle-in-image mounts no model: it excludes --model and --save-dir"

# Where Task N's model comes from: --model N=PATH, the model tarball in --save-dir, or the exported bundle folder.
model_source() {
    local entry
    for entry in ${models[@]+"${models[@]}"}; do
        [[ "${entry%%=*}" == "$1" ]] && { echo "${entry#*=}"; return; }
    done
    if [[ -n "$save_dir" ]]; then echo "$save_dir/$(field_of "$1" 3)-model.tar.gz"; return; fi
    echo "$REPO/$(field_of "$1" 2)/resources/bundle"
}
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

# Each task's model source must be there before anything runs.
if [[ "$bundle_in_image" == 0 ]]; then
    for task in "${tasks[@]}"; do
        source="$(model_source "$task")"
        if [[ -d "$source" ]]; then
            [[ -f "$source/manifest.json" ]] || die "no Task $task model: $source holds no manifest.json; export a \
bundle ($(field_of "$task" 7)), or pass --model $task=PATH"
        elif [[ "$source" != *.tar.gz || ! -f "$source" ]]; then
            die "no Task $task model: $source is neither a bundle folder nor a model tarball (.tar.gz); run \
./build.sh --save --task $task, or pass --model $task=PATH"
        fi
    done
fi

if [[ -z "$work" ]]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/hecktor-container-test.XXXXXX")"
    remove_work=1
else
    mkdir -p "$work"
    remove_work=0
fi
# The pre-flight records (python -m hecktor.preflight): one line per case run and per file to upload.
records="$work/preflight.jsonl"
: >"$records"
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
    # The model folder, as the platform fills /opt/ml/model: a tarball verified and extracted first. Nothing with
    # --bundle-in-image (an empty folder for --no-engine, so that only the baked bundle can be found).
    model="$work/task$task/model"
    rm -rf "$model"
    if [[ "$bundle_in_image" == 1 ]]; then
        mkdir -p "$model"
    else
        source="$(model_source "$task")"
        if [[ -d "$source" ]]; then
            model="$source"
            "$PYTHON" -m hecktor.preflight size "$records" --task "$task" --what "model folder (unpacked)" \
                "$source" --bytes "$(du -sb "$source" | cut -f1)"
        else
            "$PYTHON" -m hecktor.model_tarball extract "$source" "$model" >/dev/null \
                || die "Task $task model tarball $source refused (see the line above)"
            chmod -R a+rX "$model"
            "$PYTHON" -m hecktor.preflight size "$records" --task "$task" --what "model tarball" "$source"
        fi
        echo "==> Task $task: model $source, $([[ "$use_engine" == 1 ]] && echo "mounted read-only at /opt/ml/model" \
            || echo "given as HECKTOR_MODEL_DIR (for /opt/ml/model)")"
    fi
    if [[ -n "$save_dir" && -f "$save_dir/$(field_of "$task" 3).tar.gz" ]]; then
        "$PYTHON" -m hecktor.preflight size "$records" --task "$task" --what "image archive" \
            "$save_dir/$(field_of "$task" 3).tar.gz"
    elif [[ "$use_engine" == 1 ]]; then
        "$PYTHON" -m hecktor.preflight size "$records" --task "$task" --what "image (not saved; unpacked)" \
            "$image" --bytes "$("$ENGINE" image inspect -f '{{.Size}}' "$image")"
    fi
    for name in $names; do
        in="$inputs/$name"
        out="$outputs/$name"
        log="$logs/$name.log"
        mkdir -p "$out"
        chmod 777 "$out"
        start=$(date +%s.%N)
        measure=("$PYTHON" -m hecktor.preflight run "$records" --task "$task" --case "$name")
        if [[ "$use_engine" == 1 ]]; then
            volume="hecktor-tmp-$$-$task-$name"
            "$ENGINE" volume create "$volume" >/dev/null
            volumes+=("$volume")
            # As the platform: no network, the model and the input read-only, /output and a separate /tmp volume
            # writable, all else read-only (so a write anywhere else fails here, not on the platform), 16 GB
            # without swap. The name lets the pre-flight sample the container's memory.
            model_mount=()
            [[ "$bundle_in_image" == 1 ]] || model_mount=(--volume "$model:/opt/ml/model:ro")
            # shellcheck disable=SC2206  # ENGINE_RUN_ARGS is a list of arguments on purpose
            cmd=("$ENGINE" run --rm --name "$volume" --network none --read-only --memory "$MEMORY"
                --memory-swap "$MEMORY" --user "$user" ${gpu_args[@]+"${gpu_args[@]}"} ${ENGINE_RUN_ARGS:-}
                ${model_mount[@]+"${model_mount[@]}"} --volume "$in:/input:ro" --volume "$out:/output"
                --volume "$volume:/tmp" "$image")
            measure+=(--engine "$ENGINE" --container "$volume")
        else
            cmd=(env "HECKTOR_MODEL_DIR=$model" "$PYTHON" "$REPO/$(field_of "$task" 2)/inference.py" --input "$in"
                --output "$out")
        fi
        status=0
        "${measure[@]}" -- "${cmd[@]}" >"$log" 2>&1 || status=$?
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

# The pre-flight report comes last; a number over the platform's limit fails the test too.
report_status=0
report="$("$PYTHON" -m hecktor.preflight report "$records" 2>&1)" || report_status=$?
[[ "$report_status" == 0 ]] || failures+=("the pre-flight report finds a problem (below)")
if [[ ${#failures[@]} -gt 0 ]]; then
    for failure in "${failures[@]}"; do echo "FAILED: $failure" >&2; done
    echo "test_container.sh: ${#failures[@]} failure(s); inputs, outputs and logs kept in $work" >&2
    echo "$report"
    exit 1
fi
echo "==> all checks passed (task(s) ${tasks[*]}, $cases case(s) each$([[ $use_engine == 1 ]] && echo ", $ENGINE" || echo ", no engine"))"
if [[ "$remove_work" == 1 ]]; then rm -rf "$work"; else echo "inputs, outputs and logs in $work"; fi
echo "$report"
