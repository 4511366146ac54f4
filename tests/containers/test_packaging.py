"""Packaging: build.sh, test_container.sh, the output checker, the test-input maker, inference.py and the Dockerfile.

No container engine is needed: build.sh and test_container.sh run against a fake engine (a script that records its
arguments and, for ``run``, plays the container by calling the task's inference.py on the mounted folders), in a
scratch copy of the repository so that the real tree's bundles and inference.py files do not matter
(``helpers/packaging.py``). What the platform takes (the image without its model, the model tarball) and the
pre-flight report: test_platform_upload.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.datasets import write_gc_input
from hecktor.outputs import write_mask, write_json_boolean, write_json_number
from hecktor.tasks import get_task, task_numbers
from helpers.packaging import FAKE_TASKS, engine_calls, engine_env, scratch_repo
from helpers.paths import FIXTURE_BUNDLES, REPO
from helpers.phantoms import DIRECTIONS

SCRIPTS = ("build.sh", "test_container.sh", "scripts/podman_smoke.sh")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_outputs = _load_script("check_outputs")
MASK_PATH, RFS_PATH, HPV_PATH = get_task(1).output, get_task(2).output, get_task(3).output
TASKS = task_numbers()
make_test_inputs = _load_script("make_test_inputs")


# ------------------------------------------------------------------------------------------------ shell scripts


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_are_executable(script):
    path = REPO / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    assert "set -euo pipefail" in path.read_text()


@pytest.mark.parametrize("script", ["build.sh", "test_container.sh"])
def test_help_exits_zero(script):
    result = subprocess.run([str(REPO / script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage:")
    assert "ENGINE" in result.stdout


@pytest.mark.parametrize("flag", ["--save", "--bundle-in-image"])
@pytest.mark.parametrize("task", TASKS)
def test_build_fails_with_one_clear_line_when_a_bundle_it_needs_is_missing(tmp_path, task, flag):
    """The image alone needs no bundle; the model tarball (--save) and a self-contained image do."""
    repo = scratch_repo(tmp_path, bundles=[t for t in TASKS if t != task])
    result = subprocess.run([str(repo / "build.sh"), flag], capture_output=True, text=True,
                            env=engine_env(tmp_path, repo))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{get_task(task).container}/resources/bundle/manifest.json" in lines[0]
    assert get_task(task).export_command in lines[0]
    assert engine_calls(tmp_path) == []  # nothing was built before the check


def test_build_passes_context_dockerfile_tags_and_mamba_switch(tmp_path):
    repo = scratch_repo(tmp_path, bundles=[])  # the images hold no model: no bundle is needed to build them
    env = engine_env(tmp_path, repo)
    result = subprocess.run([str(repo / "build.sh"), "--no-mamba"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    builds = [c for c in engine_calls(tmp_path) if c[0] == "build"]
    assert builds == [
        ["build", "-f", f"{repo}/Dockerfile", "-t", f"{get_task(t).image}:latest", "--build-arg",
         f"TASK_DIR={get_task(t).container}",
         *(["--build-arg", "WITH_MAMBA=0"] if (REPO / get_task(t).container / "build-args").is_file() else []),
         str(repo)]
        for t in TASKS
    ]
    assert builds[0][:8] == ["build", "-f", f"{repo}/Dockerfile", "-t", "hecktor-task1:latest", "--build-arg",
                             "TASK_DIR=task1_container", "--build-arg"]
    assert result.stdout.count("no model inside (it loads /opt/ml/model)") == len(TASKS)

    (tmp_path / "engine.log").unlink()
    env.update(TASK1_IMAGE="registry.example/seg:v3")
    result = subprocess.run([str(repo / "build.sh"), "--task", "1", "--base-image", "my/base:1",
                             "--build-arg", "MAX_JOBS=2"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    builds = [c for c in engine_calls(tmp_path) if c[0] == "build"]
    assert builds == [["build", "-f", f"{repo}/Dockerfile", "-t", "registry.example/seg:v3",
                       "--build-arg", "TASK_DIR=task1_container", "--build-arg", "WITH_MAMBA=1",
                       "--build-arg", "BASE_IMAGE=my/base:1", "--build-arg", "MAX_JOBS=2", str(repo)]]

    # A task's build-args file holds KEY=VALUE lines only: anything else is one error line, before any build.
    (tmp_path / "engine.log").unlink()
    (repo / "task2_container" / "build-args").write_text("# comment\n\nWITH_MAMBA 1\n")
    result = subprocess.run([str(repo / "build.sh")], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert result.stderr.strip() == "build.sh: error: task2_container/build-args: 'WITH_MAMBA 1' is not KEY=VALUE"
    assert engine_calls(tmp_path) == []


def test_build_reports_a_failed_build_and_an_unknown_task(tmp_path):
    repo = scratch_repo(tmp_path)
    env = engine_env(tmp_path, repo)
    env.update(FAKE_BUILD_FAIL="1")
    result = subprocess.run([str(repo / "build.sh"), "--task", "2"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == \
        "build.sh: error: building hecktor-task2:latest failed (see the fake-docker output above)"

    result = subprocess.run([str(repo / "build.sh"), "--task", "9"], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "--task must be one of" in result.stderr and "got '9'" in result.stderr


def test_test_container_runs_like_the_platform_and_checks_outputs(tmp_path):
    repo = scratch_repo(tmp_path)
    env = engine_env(tmp_path, repo)
    task_flags = [arg for t in FAKE_TASKS for arg in ("--task", str(t))]
    result = subprocess.run([str(repo / "test_container.sh"), *task_flags, "--cases", "1",
                             "--work", str(tmp_path / "work")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    runs = [c for c in engine_calls(tmp_path) if c[0] == "run"]
    assert [r[-1] for r in runs] == [f"{get_task(t).image}:latest" for t in FAKE_TASKS]
    run = runs[0]
    for flag, value in (("--network", "none"), ("--memory", "16g"), ("--memory-swap", "16g"), ("--user", "user")):
        assert run[run.index(flag) + 1] == value
    assert "--read-only" in run and "--rm" in run
    volumes = [run[i + 1] for i, a in enumerate(run) if a == "--volume"]
    assert any(v.endswith(":/input:ro") for v in volumes)
    assert any(v.endswith(":/output") and not v.endswith(":ro") for v in volumes)
    tmp_volume = next(v for v in volumes if v.endswith(":/tmp"))
    assert not tmp_volume.startswith("/")  # a named volume of its own, not a host folder
    assert ["volume", "rm", "-f", tmp_volume.split(":")[0]] in engine_calls(tmp_path)
    # The model as the platform gives it: the exported bundle folder, read-only at /opt/ml/model.
    assert f"{repo}/{get_task(FAKE_TASKS[0]).container}/resources/bundle:/opt/ml/model:ro" in volumes
    assert run[run.index("--name") + 1] == tmp_volume.split(":")[0]


def test_test_container_fails_on_a_bad_output_or_a_root_image(tmp_path):
    repo = scratch_repo(tmp_path)
    result = subprocess.run([str(repo / "test_container.sh"), "--task", "2", "--cases", "1",
                             "--work", str(tmp_path / "work")], capture_output=True,
                            text=True, env=engine_env(tmp_path, repo, FAKE_DEFECT="object"), timeout=120)
    assert result.returncode != 0
    assert "must hold one bare number" in result.stderr
    assert "FAILED: task 2 case-000-identity: output check failed" in result.stderr

    result = subprocess.run([str(repo / "test_container.sh"), "--task", "2", "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, env=engine_env(tmp_path, repo, FAKE_USER="root"),
                            timeout=120)
    assert result.returncode != 0
    assert "runs as root" in result.stderr


def test_test_container_without_engine_runs_inference_py_directly(tmp_path):
    repo = scratch_repo(tmp_path)
    env = engine_env(tmp_path, repo, FAKE_DEFECT="label3")
    result = subprocess.run([str(repo / "test_container.sh"), "--no-engine", "--task", "1", "--cases", "1",
                             "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "mask labels [0, 3] are not within [0, 1, 2]" in result.stderr
    assert engine_calls(tmp_path) == []


# ----------------------------------------------------------------------------------------------- output checker


def _ct(direction="oblique") -> sitk.Image:
    ct = sitk.Image([9, 8, 7], sitk.sitkInt16)
    ct.SetSpacing([0.98, 0.98, 3.0])
    ct.SetOrigin([-40.5, 12.25, -300.0])
    ct.SetDirection(DIRECTIONS[direction])
    return ct


def _pet() -> sitk.Image:
    pet = sitk.Image([5, 5, 5], sitk.sitkFloat32)
    pet.SetSpacing([4.0, 4.0, 4.0])
    return pet


def _mask_like(ct: sitk.Image, labels=(1, 2)) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    array[1, 1, 1], array[3, 4, 5] = labels
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(ct)
    return mask


@pytest.fixture
def task1_case(tmp_path):
    ct = _ct()
    input_dir = write_gc_input(ct, _pet(), tmp_path / "input", ehr={"Age": 60}, seed=1)
    output_dir = tmp_path / "output"
    write_mask(_mask_like(ct), output_dir / MASK_PATH)
    return input_dir, output_dir, ct


def _rewrite_mask(output_dir, image, compress=True):
    sitk.WriteImage(image, str(output_dir / MASK_PATH), compress)


def test_checker_accepts_a_correct_mask(task1_case):
    input_dir, output_dir, ct = task1_case
    expected = make_test_inputs.image_geometry(ct)
    assert check_outputs.check_mask(input_dir, output_dir, MASK_PATH, expected) == []
    assert check_outputs.main(["--task", "1", "--input", str(input_dir), "--output", str(output_dir)]) == 0


def _shifted(ct):
    mask = _mask_like(ct)
    mask.SetOrigin([o + d for o, d in zip(ct.GetOrigin(), (0.5, 0.0, 0.0))])
    return mask


def _flipped(ct):
    mask = _mask_like(ct)
    d = np.asarray(ct.GetDirection()).reshape(3, 3)
    d[:, 0] *= -1  # the x axis reversed: a left-right mirrored mask
    mask.SetDirection(d.ravel().tolist())
    return mask


def _resized(ct):
    mask = sitk.Image([9, 8, 6], sitk.sitkUInt8)  # one slice short; spacing, origin and direction right
    mask.SetSpacing(ct.GetSpacing())
    mask.SetOrigin(ct.GetOrigin())
    mask.SetDirection(ct.GetDirection())
    return mask


@pytest.mark.parametrize(
    "defect, message",
    [
        (lambda ct: sitk.Cast(_mask_like(ct), sitk.sitkUInt16), "pixel type is 16-bit unsigned integer"),
        (lambda ct: sitk.Cast(_mask_like(ct), sitk.sitkFloat32), "pixel type is 32-bit float"),
        (lambda ct: _mask_like(ct, labels=(1, 3)), "mask labels [0, 1, 3] are not within [0, 1, 2]"),
        (_shifted, "mask origin"),
        (_flipped, "mask direction"),
        (_resized, "mask size [9, 8, 6] differs"),
    ],
    ids=["uint16", "float", "label3", "shifted-origin", "flipped-direction", "size"],
)
def test_checker_rejects_each_mask_defect(task1_case, defect, message):
    input_dir, output_dir, ct = task1_case
    _rewrite_mask(output_dir, defect(ct))
    problems = check_outputs.check_mask(input_dir, output_dir, MASK_PATH)
    assert len(problems) == 1 and message in problems[0], problems
    assert check_outputs.main(["--task", "1", "--input", str(input_dir), "--output", str(output_dir)]) == 1


def test_checker_rejects_missing_uncompressed_stray_and_off_expected_outputs(task1_case, tmp_path):
    input_dir, output_dir, ct = task1_case
    stray = output_dir / "images" / "tumor-lymph-node-segmentation" / ".output.abc123.mha"
    stray.write_bytes(b"partial")
    assert check_outputs.check_mask(input_dir, output_dir, MASK_PATH) == [
        f"unexpected file(s) in {output_dir}: images/tumor-lymph-node-segmentation/.output.abc123.mha"]
    stray.unlink()

    _rewrite_mask(output_dir, _mask_like(ct), compress=False)
    assert check_outputs.check_mask(input_dir, output_dir, MASK_PATH) == [
        f"mask is not compressed (CompressedData = True expected): {output_dir / MASK_PATH}"]

    # The CT in the input folder and the mask agree, but not with the grid recorded when the input was made.
    _rewrite_mask(output_dir, _mask_like(ct))
    other = make_test_inputs.image_geometry(_ct("flipped_z"))
    problems = check_outputs.check_mask(input_dir, output_dir, MASK_PATH, other)
    assert problems and all("expected CT (expected.json)" in p for p in problems)

    (output_dir / MASK_PATH).unlink()
    assert check_outputs.check_mask(input_dir, output_dir, MASK_PATH) == [f"mask missing: {output_dir / MASK_PATH}"]


def test_checker_task2_accepts_a_bare_number(tmp_path):
    write_json_number(-0.396, tmp_path / "rfs.json")
    assert check_outputs.check_json_output(tmp_path, RFS_PATH, "json-number") == []
    (tmp_path / "rfs.json").write_text("3")
    assert check_outputs.check_json_output(tmp_path, RFS_PATH, "json-number") == []


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"PatientID": "x", "Prediction": 0.3}', "must hold one bare number, got a JSON dict"),
        ("NaN", "is not valid JSON holding a finite number (NaN is not a finite number)"),
        ("-Infinity", "is not valid JSON holding a finite number"),
        ("[0.3]", "got a JSON list"),
        ('"0.3"', "got a JSON str"),
        ("true", "got a JSON bool"),
        ("1e999", "holds a non-finite number"),
        ("", "is not valid JSON"),
    ],
)
def test_checker_task2_rejects_each_defect(tmp_path, text, message):
    (tmp_path / "rfs.json").write_text(text)
    problems = check_outputs.check_json_output(tmp_path, RFS_PATH, "json-number")
    assert len(problems) == 1 and message in problems[0], problems


def test_checker_task3_accepts_exactly_true_or_false(tmp_path):
    for value in (True, False):
        write_json_boolean(value, tmp_path / "hpv-status.json")
        assert check_outputs.check_json_output(tmp_path, HPV_PATH, "json-boolean") == []
    assert check_outputs.main(["--task", "3", "--input", str(tmp_path), "--output", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("1", "must hold a bare true or false, got a JSON int"),
        ('"true"', "got a JSON str"),
        ("0.7", "got a JSON float"),
        ("null", "got a JSON NoneType"),
        ('{"hpv": true}', "got a JSON dict"),
        ("True", "is not valid JSON holding true or false"),
        ("", "is not valid JSON"),
    ],
)
def test_checker_task3_rejects_each_defect(tmp_path, text, message):
    (tmp_path / "hpv-status.json").write_text(text)
    problems = check_outputs.check_json_output(tmp_path, HPV_PATH, "json-boolean")
    assert len(problems) == 1 and message in problems[0], problems


def test_checker_task2_rejects_missing_file_and_cli_exit_code(tmp_path, capsys):
    assert check_outputs.check_json_output(tmp_path, RFS_PATH, "json-number") == [f"output file missing: {tmp_path / 'rfs.json'}"]
    assert check_outputs.main(["--task", "2", "--input", str(tmp_path), "--output", str(tmp_path)]) == 1
    assert f"FAIL {tmp_path.name}: output file missing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- test-input maker


def test_make_test_inputs_lays_out_platform_folders_with_an_independent_geometry_record(tmp_path):
    expected = make_test_inputs.make_test_inputs(tmp_path / "in", task=1, cases=3, seed=5)
    assert list(expected["cases"]) == ["case-000-identity", "case-001-flip", "case-002-oblique"]
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.mha$")
    for name, record in expected["cases"].items():
        folder = tmp_path / "in" / name
        for modality in ("ct", "pet"):
            files = list((folder / "images" / modality).iterdir())
            assert len(files) == 1 and uuid.match(files[0].name), files
        ehr = json.loads((folder / "ehr.json").read_text())
        assert "CenterID" not in ehr and "HPV Status" not in ehr  # Task 1's record, as on the platform
        ct = sitk.ReadImage(str(next((folder / "images" / "ct").iterdir())))
        assert make_test_inputs.image_geometry(ct) == record["ct"]
    directions = {n: np.asarray(r["ct"]["direction"]).reshape(3, 3) for n, r in expected["cases"].items()}
    assert np.array_equal(directions["case-000-identity"], np.eye(3))
    assert np.allclose(np.abs(directions["case-001-flip"]), np.eye(3)) and np.trace(directions["case-001-flip"]) < 3
    assert np.abs(directions["case-002-oblique"] - np.diag(np.diag(directions["case-002-oblique"]))).max() > 0.01
    assert json.loads((tmp_path / "in" / "expected.json").read_text()) == expected


def test_make_test_inputs_refuses_a_used_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "keep.txt").write_text("x")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_test_inputs.py"), "--task", "2", "--out",
                             str(tmp_path / "in")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"make_test_inputs.py: error: {tmp_path / 'in'} is not empty; choose a new folder"


# ------------------------------------------------------------------------------------------------ inference.py


def test_every_inference_py_is_the_same_few_lines():
    """The containers' inference.py differ in their docstring and their TASK only: main(argv=None, *, start_time=None)
    is one call to hecktor.container.main (a task's own options live there, in TASK_OPTIONS), and the docstring points
    to the bad-input page instead of restating it."""
    import ast

    shapes = set()
    for task in TASKS:
        path = REPO / get_task(task).container / "inference.py"
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree)
        assert "docs/reference/bad-inputs.md" in doc and len(doc.splitlines()) <= 6, path
        assert len(path.read_text().splitlines()) <= 30, path
        body = tree.body[1:]
        (task_line,) = [n for n in body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "TASK"]
        assert ast.literal_eval(task_line.value) == task
        (main,) = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert [a.arg for a in main.args.args] == ["argv"] and [a.arg for a in main.args.kwonlyargs] == ["start_time"]
        assert ast.unparse(main.body[-1]) == "return container.main(TASK, __file__, argv, start_time=start_time)"
        shapes.add(ast.dump(ast.Module(body=[n for n in body if n is not task_line], type_ignores=[])))
    assert len(shapes) == 1


# --------------------------------------------------------------------------------------------------- Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _build_args(tmp_path: Path, task: int, *flags: str) -> dict[str, str]:
    """The build arguments that build.sh passes for one task's image (to the fake engine, in a scratch repository);
    it always builds the repository's one Dockerfile, with the repository root as context."""
    repo = scratch_repo(tmp_path)
    if "--bundle-in-image" in flags:  # a bundle that loads: build.sh verifies it before building
        shutil.rmtree(repo / get_task(task).bundle_dir)
        shutil.copytree(FIXTURE_BUNDLES / f"task{task}", repo / get_task(task).bundle_dir)
    result = subprocess.run([str(repo / "build.sh"), "--task", str(task), *flags], capture_output=True, text=True,
                            env=engine_env(tmp_path, repo))
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in engine_calls(tmp_path) if c[0] == "build"]
    assert build[build.index("-f") + 1] == f"{repo}/Dockerfile" and build[-1] == str(repo)
    return dict(build[i + 1].split("=", 1) for i, a in enumerate(build) if a == "--build-arg")


def _stages(instructions: list[tuple[str, str]], build_args: dict[str, str]) -> list[tuple[str, str, list]]:
    """(name, base, instructions) of each stage as an engine builds it with ``build_args``: every ``${NAME}`` is the
    build argument, else its ARG default (the Dockerfile gives one name one default wherever it declares it)."""
    defaults = {}
    for keyword, value in instructions:
        if keyword == "ARG":
            name, _, default = value.partition("=")
            assert defaults.setdefault(name, default.strip('"')) == default.strip('"'), name
    values = {**defaults, **build_args}

    def expand(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)

    stages = []
    for keyword, value in instructions:
        if keyword == "FROM":
            base, _, name = expand(value).partition(" AS ")
            stages.append((name, base, []))
        elif stages:
            stages[-1][2].append((keyword, expand(value)))
    return stages


def test_one_dockerfile_for_every_task():
    """The runtime image is defined once: no container folder has a Dockerfile of its own."""
    assert (REPO / "Dockerfile").is_file()
    for task in TASKS:
        assert not (REPO / get_task(task).container / "Dockerfile").exists(), task


@pytest.mark.parametrize("task", TASKS)
def test_dockerfile_follows_the_platform_template(task, tmp_path):
    """Each task's image, as build.sh builds it from the one Dockerfile (its build args substituted)."""
    instructions = _instructions(REPO / "Dockerfile")
    keywords = [k for k, _ in instructions]
    assert set(keywords) <= {"ARG", "FROM", "ENV", "RUN", "COPY", "WORKDIR", "USER", "ENTRYPOINT"}
    assert ("ARG", "BASE_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime") in instructions
    assert instructions[-1] == ("ENTRYPOINT", '["python", "inference.py"]')
    # TASK_DIR has no default: a build that does not name its task stops with one error line.
    raw_final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    assert ("ARG", "TASK_DIR") in raw_final
    assert any('if [ -z "${TASK_DIR}" ]' in v and "exit 1" in v for k, v in raw_final if k == "RUN")
    build_args = _build_args(tmp_path, task)
    assert build_args["TASK_DIR"] == get_task(task).container
    stages = _stages(instructions, build_args)
    name, base, final = stages[-1]
    assert name == "" and base == "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime"
    users = [v for k, v in final if k == "USER"]
    assert users == ["user"]
    assert ("WORKDIR", "/opt/app") in final
    # COPY sources and targets (from the build context) without the --chmod/--chown options.
    copies = [" ".join(w for w in v.split() if not w.startswith("--")) for k, v in final if k == "COPY"
              and "--from=" not in v]
    assert f"{get_task(task).container}/inference.py /opt/app/inference.py" in copies
    # The model: by default an empty resources/bundle (the platform mounts the model at /opt/ml/model); with
    # BUNDLE_IN_IMAGE=1 (build.sh --bundle-in-image) the task's exported bundle, copied from a bind mount of the task's
    # folder and made readable in the same RUN (no second layer of weights).
    (model_step,) = [" ".join(v.split()) for k, v in final if k == "RUN" and "/opt/app/resources/bundle" in v]
    assert model_step.startswith(f"--mount=type=bind,source={get_task(task).container},target=/tmp/task-dir ")
    assert 'if [ "0" = "1" ]' in model_step and "chmod -R a+rX,go-w /opt/app/resources/bundle" in model_step
    assert "else mkdir -p /opt/app/resources/bundle; fi" in model_step
    assert ("ARG", "BUNDLE_IN_IMAGE=0") in final and "BUNDLE_IN_IMAGE" not in build_args
    # The exported bundle folder is 0700: the non-root user can read it only through COPY --chmod.
    assert all(v.startswith("--chmod=0755 ") for k, v in final if k == "COPY" and "/opt/app/" in v)
    env = " ".join(v for k, v in final if k == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "MPLCONFIGDIR=/tmp", "TMPDIR=/tmp", "HF_HUB_OFFLINE=1"):
        assert setting in env
    # The image's torch is pinned before anything else is installed, so pip can never swap the CUDA build.
    runs = [v for k, v in final if k == "RUN"]
    pin = next(i for i, r in enumerate(runs) if "/etc/hecktor-constraints.txt" in r)
    assert all("-c /etc/hecktor-constraints.txt" in r for r in runs[pin + 1:] if "pip install" in r)
    # The library's pinned versions, and an import check of every task's predictor module.
    install = next(r for r in runs if "/tmp/hecktor-src" in r and "pip install" in r)
    for pin_ in ('"numpy==2.4.6"', '"SimpleITK==2.5.7"', '"scipy==1.17.1"', '"scikit-survival==0.28.0"',
                 '"tqdm==4.70.1"', '"einops==0.8.2"', '"monai>=1.5.2,<1.7"'):
        assert pin_ in install
    imported = re.search(r'python -c "import ([\w., ]+)"', install).group(1)
    assert {"hecktor.case", "hecktor.segment", "hecktor.prognosis", "hecktor.diagnosis"} <= set(imported.split(", "))
    # Every COPY source is let through by .dockerignore (the context is the repository root; a '*' matches within
    # one path element, as in Docker's patterns).
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for copy in copies:
        source = copy.split()[0]
        prefixes = ["/".join(source.split("/")[:n]) for n in range(1, source.count("/") + 2)]
        assert any(any(re.fullmatch(re.escape(a).replace(r"\*", "[^/]*"), prefix) for prefix in prefixes)
                   or a.startswith(source + "/") for a in allowed), source


def test_dockerfile_copies_the_bundle_only_with_bundle_in_image(tmp_path):
    """build.sh --bundle-in-image (a bundle that loads) passes BUNDLE_IN_IMAGE=1, which the model step copies with."""
    build_args = _build_args(tmp_path, 2, "--bundle-in-image")
    assert build_args["BUNDLE_IN_IMAGE"] == "1"
    final = _stages(_instructions(REPO / "Dockerfile"), build_args)[-1][2]
    (model_step,) = [v for k, v in final if k == "RUN" and "/opt/app/resources/bundle" in v]
    assert 'if [ "1" = "1" ]; then if [ ! -f /tmp/task-dir/resources/bundle/manifest.json ]' in " ".join(
        model_step.split())


def test_build_context_holds_no_synthetic_generator_or_training_code():
    """The context .dockerignore admits (Docker's rules: last matching pattern wins, a pattern that matches a folder
    matches everything in it) has no hecktor/synthetic/ and no hecktor/training/, and the library modules and
    inference.py files it does admit import nothing that is left out (checked on their source, lazy imports too)."""
    import ast
    import posixpath

    def regex(pattern: str) -> re.Pattern:  # moby/patternmatcher's glob: ** any depth, * and ? within one name
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] in "*?":
                out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i : end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, regex(posixpath.normpath(line.lstrip("!").strip().lstrip("/")))))

    def admitted(path: str) -> bool:
        parts = path.split("/")
        included = True
        for keep, pattern in rules:
            if any(pattern.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
                included = keep
        return included

    files = {p.relative_to(REPO).as_posix() for top in ("shared", *(get_task(t).container for t in TASKS))
             for p in (REPO / top).rglob("*") if p.is_file()}
    # The training subpackage may not exist in this checkout yet; what lands there must stay out too.
    files |= {"shared/hecktor/training/__init__.py", "shared/hecktor/training/loops/segmentation.py",
              "shared/hecktor/__pycache__/case.cpython-312.pyc", "training/seg_trainer.py",
              "shared/hecktor/synthetic/a_new_module.py"}
    context = {f for f in files if admitted(f)}
    for needed in ("shared/pyproject.toml", "shared/hecktor/__init__.py", "shared/hecktor/segment.py",
                   "shared/hecktor/prognosis.py", "shared/hecktor/case.py", "shared/hecktor/budget.py",
                   "shared/hecktor/networks/hecmamba.py", "shared/hecktor/diagnosis.py",
                   *(f"{get_task(t).container}/inference.py" for t in TASKS)):
        assert needed in context, needed
    synthetic = {f for f in files if f.startswith("shared/hecktor/synthetic/") and "__pycache__" not in f}
    assert {"shared/hecktor/synthetic/__init__.py", "shared/hecktor/synthetic/__main__.py"} < synthetic
    left_out = {f for f in files - context if f.startswith("shared/hecktor/") and "__pycache__" not in f}
    assert synthetic <= left_out and len(left_out - synthetic) > 1
    assert all(f.startswith("shared/hecktor/training/") for f in left_out - synthetic)
    assert not any(f.startswith("training/") or "__pycache__" in f for f in context)

    def in_context(module: str) -> bool:
        stem = "shared/" + module.replace(".", "/")
        return f"{stem}.py" in context or f"{stem}/__init__.py" in context

    for path in sorted(f for f in context if f.endswith(".py")):
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from hecktor import x": x is a module when the library has a file for it.
                stems = {alias.name: REPO / "shared" / f"{node.module}.{alias.name}".replace(".", "/")
                         for alias in node.names}
                modules = [node.module] + [f"{node.module}.{name}" for name, stem in stems.items()
                                           if stem.with_suffix(".py").exists() or (stem / "__init__.py").exists()]
            else:
                continue
            for module in modules:
                if module == "hecktor" or module.startswith("hecktor."):
                    assert in_context(module), f"{path} imports {module}, which .dockerignore leaves out"


def test_task1_builds_mamba_in_a_separate_stage_that_can_be_left_out(tmp_path):
    instructions = _instructions(REPO / "Dockerfile")
    first_from = next(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    assert ("ARG", "WITH_MAMBA=0") in instructions[:first_from]  # a global ARG, so FROM lines can use it
    assert ("ARG", "BUILDER_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel") in instructions[:first_from]
    assert ("FROM", "${BUILDER_IMAGE} AS mamba-1") in instructions
    assert ("FROM", "${BASE_IMAGE} AS mamba-0") in instructions
    assert ("FROM", "mamba-${WITH_MAMBA} AS mamba-wheels") in instructions
    builder = instructions[instructions.index(("FROM", "${BUILDER_IMAGE} AS mamba-1")):]
    builder = builder[:next(i for i, (k, _) in enumerate(builder[1:], 1) if k == "FROM")]
    assert ("ARG", 'TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"') in builder
    env = " ".join(v for k, v in builder if k == "ENV")
    assert "MAMBA_FORCE_BUILD=TRUE" in env and "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}" in env
    assert any("--no-build-isolation" in v and "mamba-ssm==" in v for k, v in builder if k == "RUN")

    # As build.sh builds each image: Task 1 with the builder (without it under --no-mamba), the others never.
    for task, flags, with_mamba in [(1, (), "1"), (1, ("--no-mamba",), "0"),
                                    *((t, (), "0") for t in TASKS if t != 1)]:
        stages = _stages(instructions, _build_args(tmp_path / f"task{task}{''.join(flags)}", task, *flags))
        by_name = {name: (base, body) for name, base, body in stages}
        wheels = by_name["mamba-wheels"][0]
        assert wheels == f"mamba-{with_mamba}", (task, flags)
        assert by_name[wheels][0] == ("pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel" if with_mamba == "1" else
                                      "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime")
        final = stages[-1][2]
        mamba_install = next(v for k, v in final if k == "RUN" and "from=mamba-wheels" in v)
        assert f'if [ "{with_mamba}" = "1" ]' in mamba_install and "-c /etc/hecktor-constraints.txt" in mamba_install
        install = next(v for k, v in final if k == "RUN" and "/tmp/hecktor-src" in v and "pip install" in v)
        assert f'if [ "{with_mamba}" = "1" ]' in install and "mamba_ssm_selective_scan" in install


def test_every_task_tells_podman_smoke_how_to_make_a_tiny_bundle():
    """scripts/podman_smoke.sh loops over the registry and runs each task's smoke_commands (python -m hecktor.tasks
    --smoke N): scripts of this repository, with the --data/--out spellings and the placeholders it replaces."""
    for task in TASKS:
        spec = get_task(task)
        commands = subprocess.run([sys.executable, "-m", "hecktor.tasks", "--smoke", str(task)], capture_output=True,
                                  text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "shared")})
        lines = commands.stdout.splitlines()
        # HECKTOR 2026 trains a Task 1 cross-validation first (its out-of-fold masks), then itself, in a subfolder each
        assert lines == list(spec.smoke_commands) and len(lines) == (3 if task == 2026 else 2)
        *_, train, export = (line.split() for line in lines)
        run_dir = "RUN_DIR/hecktor2026" if task == 2026 else "RUN_DIR"
        export = [word for word in export if word != "export"]  # train_hecktor2026.py's subcommand
        assert train[0] == export[0] == "python" and (REPO / train[1]).is_file() and (REPO / export[1]).is_file()
        assert train[train.index("--data") + 1] == "DATA" and train[train.index("--out") + 1] == run_dir
        assert export[1] == spec.export_command.split()[1] and export[2] == run_dir
        assert export[export.index("--out") + 1] == "BUNDLE"
    smoke = (REPO / "scripts" / "podman_smoke.sh").read_text()
    assert "--smoke" in smoke and "task1_container" not in smoke and "TASK2_MODE" not in smoke
