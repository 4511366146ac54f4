"""Where a container finds its bundle: the platform's model folder (``/opt/ml/model``, where Grand Challenge extracts
the model tarball; ``HECKTOR_MODEL_DIR`` stands in for it here), else the bundle baked into the image beside
``inference.py``, ``--resources`` overriding both; neither is one error line naming both places."""

from __future__ import annotations

import io
import json
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from hecktor import container
from hecktor.datasets import write_gc_input
from hecktor.tasks import get_task
from helpers.containers import bundles, synthetic_case  # noqa: F401 (fixtures)
from helpers.hostile_inputs import EHR
from helpers.predictors import build_hpv_predictor

__all__ = ["bundles", "synthetic_case"]


@pytest.fixture
def setting(tmp_path, monkeypatch, synthetic_case):  # noqa: F811
    """An input folder, an empty stand-in for /opt/ml/model and an inference.py of its own (no bundle baked)."""
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    monkeypatch.setenv(container.MODEL_DIR_VARIABLE, str(model_dir))
    script = tmp_path / "image" / "inference.py"
    script.parent.mkdir()
    script.write_text("# stands in for the image's inference.py\n")
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR, seed=1)
    return model_dir, script, input_dir


def run(script: Path, input_dir: Path, output_dir: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = container.main(2, script, ["--input", str(input_dir), "--output", str(output_dir), "--device", "cpu",
                                            *extra], start_time=time.time())
    return status, out.getvalue(), err.getvalue()


def _risk(output_dir: Path) -> float:
    return json.loads((output_dir / "rfs.json").read_text())


def test_the_bundle_extracted_into_the_model_folder_is_used(setting, bundles, tmp_path):  # noqa: F811
    model_dir, script, input_dir = setting
    for path in bundles[2].iterdir():  # the tarball's files at the folder's root, as the platform extracts them
        shutil.copy(path, model_dir / path.name)
    status, stdout, stderr = run(script, input_dir, tmp_path / "out")
    assert status == 0 and stderr == ""
    assert f"model bundle: {model_dir} (the platform's model folder, from the model tarball)" in stdout
    reference = run(script, input_dir, tmp_path / "ref", "--resources", str(bundles[2]))
    assert _risk(tmp_path / "out") == _risk(tmp_path / "ref") and f"({'--resources'})" in reference[1]


def test_the_model_folder_comes_before_the_baked_bundle_and_the_baked_one_is_the_fallback(setting, bundles,
                                                                                          tmp_path):  # noqa: F811
    model_dir, script, input_dir = setting
    baked = script.parent / "resources" / "bundle"
    shutil.copytree(bundles[2], baked)
    status, stdout, _ = run(script, input_dir, tmp_path / "a")
    assert status == 0 and f"model bundle: {baked} (baked into the image)" in stdout  # the model folder is empty
    shutil.copytree(bundles[2], model_dir, dirs_exist_ok=True)
    status, stdout, _ = run(script, input_dir, tmp_path / "b")
    assert status == 0 and f"model bundle: {model_dir} (the platform's model folder" in stdout


def test_neither_is_one_error_line_naming_both_places_and_the_export_command(setting, tmp_path):
    model_dir, script, input_dir = setting
    status, stdout, stderr = run(script, input_dir, tmp_path / "out")
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and not (tmp_path / "out" / "rfs.json").exists()
    assert lines[0] == (f"error: no model bundle: none in {model_dir} (the platform's model tarball) nor in "
                        f"{script.parent / 'resources' / 'bundle'} (baked into the image); make one with "
                        "python training/export_prognosis.py RUN_DIR")


def test_help_says_where_the_bundle_is_looked_for(capsys):
    with pytest.raises(SystemExit):
        container.main(2, Path("inference.py"), ["--help"])
    assert "the platform's /opt/ml/model when it holds one" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("task", [1, 2, 3, 2026])
def test_every_container_answers_with_its_bundle_only_in_the_model_folder(task, setting, bundles, tmp_path):  # noqa: F811
    """Nothing baked beside inference.py: the extracted model tarball alone serves each task, and its outputs are
    byte for byte those of the same bundle given with --resources."""
    model_dir, script, input_dir = setting
    bundle = bundles.get(task) or build_hpv_predictor("clinical").to_bundle(tmp_path / "task3")
    for path in bundle.iterdir():
        (shutil.copytree if path.is_dir() else shutil.copy)(path, model_dir / path.name)
    assert not (script.parent / "resources").exists()
    out, err = io.StringIO(), io.StringIO()
    arguments = ["--input", str(input_dir), "--device", "cpu"]
    with redirect_stdout(out), redirect_stderr(err):
        status = container.main(task, script, [*arguments, "--output", str(tmp_path / "out")], start_time=time.time())
        reference = container.main(task, script, [*arguments, "--output", str(tmp_path / "ref"), "--resources",
                                                  str(bundle)], start_time=time.time())
    assert status == reference == 0, err.getvalue()
    assert f"model bundle: {model_dir} (the platform's model folder, from the model tarball)" in out.getvalue()
    for output in get_task(task).outputs:
        assert (tmp_path / "out" / output).read_bytes() == (tmp_path / "ref" / output).read_bytes(), output
