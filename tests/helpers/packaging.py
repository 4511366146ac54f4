"""Packaging tests' stand-ins: a fake container engine that records its commands and plays ``run`` by calling the
task's ``inference.py``, a fake ``inference.py`` per output kind, and a scratch copy of the packaging files.

``build.sh`` and ``test_container.sh`` run against these (tests/containers/test_packaging.py and
test_platform_upload.py), so no engine is needed and the real tree's bundles and ``inference.py`` files do not matter.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from hecktor.tasks import get_task, task_numbers

from .paths import REPO

TASKS = task_numbers()
FAKE_KINDS = ("mask", "json-number", "json-boolean")
"""The output kinds the fake inference.py writes; tests that run containers take the tasks of these kinds."""
FAKE_TASKS = [t for t in TASKS if get_task(t).output_kind in FAKE_KINDS]


# A stand-in for docker/podman: appends its arguments as one JSON line to $FAKE_ENGINE_LOG. "run" plays the
# container: it calls the inference.py of the task whose registry image the image is (hecktor-taskN:tag) on the host
# folders mounted at /input and /output, with the one mounted at /opt/ml/model as HECKTOR_MODEL_DIR (none: a folder
# that does not exist, so that only the bundle beside inference.py, "baked into the image", can be found).
FAKE_ENGINE = """#!{python}
import json, os, re, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ENGINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "build" and os.environ.get("FAKE_BUILD_FAIL"):
    sys.exit(1)
if args[:2] == ["image", "inspect"]:
    if "-f" in args:
        fmt = args[args.index("-f") + 1]
        print(os.environ.get("FAKE_USER", "user") if "User" in fmt else "123456789")
    sys.exit(0)
if args[0] == "save":
    sys.stdout.buffer.write(b"image archive of " + args[-1].encode())
if args[0] == "stats":
    print(os.environ.get("FAKE_STATS", ""))
if args[0] == "run":
    from hecktor.tasks import TASKS
    mounts = dict(reversed(v.split(":", 2)[:2]) for k, v in zip(args, args[1:]) if k == "--volume")
    (spec,) = [s for s in TASKS.values() if args[-1].split(":")[0] == s.image]
    script = os.path.join(os.environ["FAKE_REPO"], spec.container, "inference.py")
    env = dict(os.environ, HECKTOR_MODEL_DIR=mounts.get("/opt/ml/model", "/nonexistent/opt/ml/model"))
    sys.exit(subprocess.call([sys.executable, script, "--input", mounts["/input"], "--output", mounts["/output"]],
                             env=env))
"""

# A stand-in for the containers' inference.py, by the task's output kind in the registry: a mask of one label-1 box on
# the CT grid, the number 0.25 or the boolean true. Like a container it finds its model in HECKTOR_MODEL_DIR (for
# /opt/ml/model), else beside itself in resources/bundle, and says which; neither is an error. FAKE_DEFECT makes it
# write a wrong output, so the scripts' failure path is exercised.
FAKE_INFERENCE = """import argparse, json, os, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, SimpleITK as sitk
from hecktor.case import read_case
from hecktor.outputs import write_hecktor2026, write_json_boolean, write_json_number, write_mask
from hecktor.tasks import get_task
parser = argparse.ArgumentParser()
parser.add_argument("--input"); parser.add_argument("--output")
args = parser.parse_args()
defect = os.environ.get("FAKE_DEFECT", "")
for model in (Path(os.environ["HECKTOR_MODEL_DIR"]), Path(__file__).parent / "resources" / "bundle"):
    if (model / "manifest.json").is_file():
        print("model bundle:", model, sorted(p.name for p in model.iterdir()))
        break
else:
    sys.exit("error: no model bundle")
case = read_case(args.input)
out = Path(args.output)
spec = get_task({task})
if spec.output_kind in ("mask", "hecktor2026"):
    array = np.zeros(sitk.GetArrayViewFromImage(case.ct).shape, np.uint8)
    array[2:5, 2:5, 2:5] = 3 if defect == "label3" else 1
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(case.ct)
    write_mask(mask, out / spec.output)
    if spec.output_kind == "hecktor2026":  # HECKTOR 2026: the mask with T2, N1 and 900 days
        write_hecktor2026(SimpleNamespace(mask=mask, t_stage="T2", n_stage="N1", rfs_days=900.0),
                          *(out / path for path in spec.outputs))
elif defect == "object":
    (out / spec.output).write_text(json.dumps({{"value": 0.25}}))
elif spec.output_kind == "json-number":
    write_json_number(0.25, out / spec.output)
else:
    write_json_boolean(True, out / spec.output)
"""


def scratch_repo(tmp_path: Path, bundles=TASKS, inference=TASKS) -> Path:
    """A copy of the packaging files, with fake bundles and inference.py where asked (every task of the registry)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("build.sh", "test_container.sh", ".dockerignore", "Dockerfile"):
        shutil.copy2(REPO / name, repo / name)
    for name in ("make_test_inputs.py", "check_outputs.py"):
        shutil.copy2(REPO / "scripts" / name, repo / "scripts" / name)
    for task in TASKS:
        folder = repo / get_task(task).container
        folder.mkdir()
        if (REPO / folder.name / "build-args").exists():
            shutil.copy2(REPO / folder.name / "build-args", folder / "build-args")
        if task in bundles:
            (folder / "resources" / "bundle").mkdir(parents=True)
            (folder / "resources" / "bundle" / "manifest.json").write_text("{}")
        if task in inference:
            (folder / "inference.py").write_text(FAKE_INFERENCE.format(task=task))
    return repo


def engine_env(tmp_path: Path, repo: Path, **extra: str) -> dict[str, str]:
    engine = tmp_path / "fake-docker"
    engine.write_text(FAKE_ENGINE.format(python=sys.executable))
    engine.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE_BUILD_ARGS", "ENGINE_RUN_ARGS", "FAKE_DEFECT")
           and not (k.startswith("TASK") and k.endswith("_IMAGE"))}
    env.update(ENGINE=str(engine), FAKE_ENGINE_LOG=str(tmp_path / "engine.log"), FAKE_REPO=str(repo),
               PYTHON=sys.executable, **extra)
    return env


def engine_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "engine.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

