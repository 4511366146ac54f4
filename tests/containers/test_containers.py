"""The two containers' ``inference.py``, run as the platform runs them (in-process through ``main(argv)``, and a few
as real subprocesses): the bad-input matrix, the geometry oracle, determinism, the time guard, and the real PET/CT
cases. The bundles are tiny untrained networks written in the exact bundle formats that the containers load."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.datasets import write_gc_input
from hecktor.localization import inside_field_of_view, localize_head_and_neck
from hecktor.preprocessing import preprocess_box, preprocess_region
from hecktor.prognosis import RiskPredictor
from hecktor.segment import Segmenter
from hecktor.synthetic import make_case
from helpers.containers import (INFERENCE, MASK_OUTPUT, PLAN1, PLAN2, RFS_OUTPUT, bundles, check_failure, check_mask,
                                check_risk, input_ct, run, synthetic_case)
from helpers.hostile_inputs import (DEGRADED, DICE_TOLERANCE, EHR, ERROR, MATRIX, REPAIRED, RISK_TOLERANCE,
                                    SILENTLY_WRONG, SKIP, STRICT_ERRORS, _spoiled_input, _warning_lines,
                                    one_slice_overlap, shifted_pet)
from helpers.paths import REPO

__all__ = ["bundles", "synthetic_case"]  # fixtures of helpers.containers, used here


def test_the_matrix_holds_at_least_fifty_hostile_inputs():
    assert len(MATRIX) - 1 >= 50


@pytest.mark.parametrize("name, task", [(name, task) for name, entry in MATRIX.items() for task in (1, 2)
                                        if entry[task][0] != SKIP])
def test_bad_input_gives_a_valid_output_or_one_error_line(name, task, bundles, synthetic_case, tmp_path):
    kind, text = MATRIX[name][task]
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    output_dir = tmp_path / "out"
    status, stdout, stderr = run(task, input_dir, output_dir, bundles[task], *(["--no-tta"] if task == 1 else []))
    assert "Traceback" not in stdout + stderr
    if kind == ERROR:
        check_failure(status, stderr, output_dir, text)
        return
    assert status == 0 and stderr == "", stderr
    if task == 1:
        labels = check_mask(output_dir, input_ct(input_dir))
        if "placeholder" in name:
            assert not labels.any()
    else:
        check_risk(output_dir)
    if kind in (REPAIRED, DEGRADED):
        assert len(_warning_lines(stdout, text)) == 1, stdout  # one warning line names what was done
    elif text:
        assert text in stdout
    if name in ("valid", "whole_body", "upper_case_mha", "upper_case_nii_gz", "stray_files"):
        assert "WARNING" not in stdout, stdout


STRICT = [(name, task) for name, entry in MATRIX.items() for task in (1, 2) if entry[task][0] == DEGRADED]


@pytest.mark.parametrize("name, task", STRICT)
def test_strict_turns_each_degraded_case_into_one_error_line(name, task, bundles, synthetic_case, tmp_path):
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    output_dir = tmp_path / "out"
    status, stdout, stderr = run(task, input_dir, output_dir, bundles[task], "--strict",
                                 *(["--no-tta"] if task == 1 else []))
    assert "Traceback" not in stdout + stderr
    check_failure(status, stderr, output_dir, STRICT_ERRORS.get(name, MATRIX[name][task][1]))


@pytest.mark.parametrize("name", [n for n, (_, t1, t2) in MATRIX.items() if REPAIRED in (t1[0], t2[0])])
def test_strict_keeps_repairs(name, bundles, synthetic_case, tmp_path):
    task = 2 if MATRIX[name][2][0] == REPAIRED else 1
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    status, stdout, stderr = run(task, input_dir, tmp_path / "out", bundles[task], "--strict")
    assert status == 0 and stderr == "" and _warning_lines(stdout, MATRIX[name][task][1]), stdout + stderr


@pytest.fixture(scope="session")
def clean_answers(bundles, synthetic_case, tmp_path_factory) -> tuple[np.ndarray, float]:
    """The clean synthetic case's Task 1 mask and Task 2 risk, through the containers."""
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path_factory.mktemp("clean"), EHR, seed=1)
    out = tmp_path_factory.mktemp("clean-out")
    assert run(1, input_dir, out / "1", bundles[1], "--no-tta")[0] == 0
    assert run(2, input_dir, out / "2", bundles[2])[0] == 0
    return check_mask(out / "1", input_ct(input_dir)), check_risk(out / "2")


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    a, b = a == label, b == label
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.mark.parametrize("name", SILENTLY_WRONG)
def test_silently_wrong_inputs_now_warn_and_answer_like_the_clean_case(name, bundles, synthetic_case, clean_answers,
                                                                       tmp_path):
    clean_mask, clean_risk = clean_answers
    assert (clean_mask == 1).any() and (clean_mask == 2).any()
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    status, stdout, _ = run(1, input_dir, tmp_path / "out1", bundles[1], "--no-tta")
    assert status == 0 and _warning_lines(stdout, MATRIX[name][1][1])
    mask = check_mask(tmp_path / "out1", input_ct(input_dir))
    for label in (1, 2):
        assert _dice(mask, clean_mask, label) >= DICE_TOLERANCE, (label, _dice(mask, clean_mask, label))
    status, stdout, _ = run(2, input_dir, tmp_path / "out2", bundles[2])
    assert status == 0 and _warning_lines(stdout, MATRIX[name][2][1])
    difference = abs(check_risk(tmp_path / "out2") - clean_risk)
    # The tiny ensemble's risk moves only 1.6e-3 when the PET is dropped altogether, so 0.1 alone could not fail:
    # the answer must also be the clean one to 1e-4 (measured: 3e-6 at most).
    assert difference <= RISK_TOLERANCE and difference <= 1e-4, difference


@pytest.mark.parametrize("name", ["pet_overlaps_one_slice", "pet_misregistered_250mm"])
def test_a_pet_whose_brain_misses_the_ct_places_the_region_from_the_ct(name, synthetic_case):
    """The brain found in such a PET lies outside the CT (the region would miss the CT: empty mask, a Task 2 box
    beside the CT); the anchor is the CT-based one instead, exactly as without a PET."""
    case = synthetic_case
    pet = one_slice_overlap(case) if name == "pet_overlaps_one_slice" else shifted_pet(case, 250.0)
    alone = localize_head_and_neck(pet, PLAN1)  # the PET by itself still shows its brain ...
    assert alone.found and not inside_field_of_view(case.ct, alone.anchor_xyz)  # ... outside the CT
    for plan, preprocess in ((PLAN1, preprocess_region), (PLAN2, preprocess_box)):
        region, without_pet = preprocess(case.ct, pet, plan), preprocess(case.ct, None, plan)
        assert not region.localization.found and "head-and-neck localisation" in region.warnings[-1]
        assert region.grid == without_pet.grid


def test_an_age_in_days_or_absurd_is_unknown_not_a_risk_of_hundreds(bundles, synthetic_case, tmp_path):
    def risk(name: str, ehr) -> tuple[float, str]:
        input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / name, ehr)
        status, stdout, _ = run(2, input_dir, tmp_path / f"{name}-out", bundles[2])
        assert status == 0
        return check_risk(tmp_path / f"{name}-out"), stdout

    no_age, _ = risk("no-age", {k: v for k, v in EHR.items() if k != "Age"})
    for age in (22630, -56, 1e308, 10**400):
        value, stdout = risk(f"age-{str(age)[:8]}", {**EHR, "Age": age})
        assert value == no_age and "is outside 0-120 years: treated as unknown" in stdout
    lower, stdout = risk("lower", {k.lower(): v for k, v in EHR.items()})
    assert lower == risk("base", EHR)[0] and "key 'age' read as 'Age'" in stdout


# ---------------------------------------------------------------------------------------------------- outputs


def test_a_stale_output_is_replaced_on_success_and_removed_on_failure(bundles, synthetic_case, tmp_path):
    good = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "good", EHR)
    bad = _spoiled_input("ct_missing", synthetic_case, tmp_path / "bad")
    for task, output in ((1, MASK_OUTPUT), (2, RFS_OUTPUT)):
        out = tmp_path / f"out{task}"
        (out / output).parent.mkdir(parents=True)
        (out / output).write_bytes(b"stale output of an earlier run")
        assert run(task, good, out, bundles[task], "--no-tta" if task == 1 else "--strict")[0] == 0
        check_mask(out, input_ct(good)) if task == 1 else check_risk(out)  # replaced, no temporary left
        status, _, stderr = run(task, bad, out, bundles[task], "--strict")
        check_failure(status, stderr, out, "no image")  # and the earlier output is gone


def test_an_output_that_cannot_be_written_is_one_error_line(bundles, synthetic_case, tmp_path, monkeypatch):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for task in (1, 2):
        status, stdout, stderr = run(task, input_dir, a_file, bundles[task])
        assert status == 2 and stderr.count("\n") == 1 and stderr.startswith(f"error: cannot write {a_file}/")
        assert "Traceback" not in stdout + stderr and a_file.read_text() == "not a folder"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("hecktor.outputs.tempfile.mkstemp", read_only)  # what a read-only /output does (we may be root)
    for task in (1, 2):
        status, _, stderr = run(task, input_dir, tmp_path / "read-only", bundles[task])
        check_failure(status, stderr, tmp_path / "read-only", "Permission denied; the output folder must be a writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_error_line(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        status, _, stderr = run(2, input_dir, out, bundles[2])
        check_failure(status, stderr, out, "Permission denied")
    finally:
        out.chmod(0o755)


def test_an_unexpected_exception_is_one_error_line_not_a_traceback(bundles, synthetic_case, tmp_path, monkeypatch):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(RiskPredictor, "predict", broken)
    status, stdout, stderr = run(2, input_dir, tmp_path / "out", bundles[2])
    check_failure(status, stderr, tmp_path / "out", "unexpected ZeroDivisionError (a bug)")
    assert "Traceback" not in stdout + stderr


def test_segmentation_falls_back_to_background_when_even_the_ct_alone_fails(bundles, synthetic_case, tmp_path,
                                                                           monkeypatch):
    input_dir = _spoiled_input("pet_all_zero", synthetic_case, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Segmenter, "predict", broken)
    status, stdout, stderr = run(1, input_dir, tmp_path / "out", bundles[1])
    assert status == 0 and stderr == ""
    assert not check_mask(tmp_path / "out", input_ct(input_dir)).any()
    assert "segmentation from the CT alone failed (out of memory): the mask is all background" in stdout
    status, _, stderr = run(1, input_dir, tmp_path / "strict", bundles[1], "--strict")
    check_failure(status, stderr, tmp_path / "strict", "PET is empty")


def test_help_describes_the_default_and_strict(capsys):
    """--help and the docstring state the contract in one line and point to the one page that lists each odd input;
    neither restates the case-by-case answers (the copies that drifted apart)."""
    for task in (1, 2, 3):
        with pytest.raises(SystemExit) as stop:
            INFERENCE[task].main(["--help"])
        assert stop.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--strict" in text and "answer whenever an answer can be formed" in text
        assert "dropped with one warning line, and --strict makes that an error" in text
        assert "error: ..." in text and "exits with status 2" in text and "no output file" in text
        assert "docs/reference/bad-inputs.md" in text
        doc = INFERENCE[task].__doc__
        assert doc.count("--strict") >= 1 and "docs/reference/bad-inputs.md" in doc
        for restated in ("4-D with several frames", "Bq/ml", "all NaN", "+1024", "ehr.json"):
            assert restated not in text and restated not in doc, restated


def test_task1_options_reach_the_segmenter_with_their_defaults(bundles, synthetic_case, tmp_path, monkeypatch):
    """--no-tta and --overlap (hecktor.container.TASK_OPTIONS) are Task 1's only: they reach Segmenter.predict_case
    with the defaults tta=True, overlap=0.5; Task 2 refuses them."""
    seen = []
    predict_case = Segmenter.predict_case

    def spy(self, case, **options):
        seen.append({k: v for k, v in options.items() if k != "budget"})
        return predict_case(self, case, **options)

    monkeypatch.setattr(Segmenter, "predict_case", spy)
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    assert run(1, input_dir, tmp_path / "default", bundles[1])[0] == 0
    assert run(1, input_dir, tmp_path / "options", bundles[1], "--no-tta", "--overlap", "0.25")[0] == 0
    assert seen == [{"tta": True, "overlap": 0.5}, {"tta": False, "overlap": 0.25}]
    with pytest.raises(SystemExit) as stop, redirect_stderr(io.StringIO()) as err:
        INFERENCE[2].main(["--no-tta"])
    assert stop.value.code == 2 and "unrecognized arguments: --no-tta" in err.getvalue()


def test_missing_bundle_and_input_folder_are_one_line_errors(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    for task in (1, 2):
        status, _, stderr = run(task, input_dir, tmp_path / "out", tmp_path / "no-bundle")
        check_failure(status, stderr, tmp_path / "out", "no model bundle at")
        status, _, stderr = run(task, tmp_path / "nowhere", tmp_path / "out", bundles[task])
        check_failure(status, stderr, tmp_path / "out", "input folder not found")
    status, _, stderr = run(1, input_dir, tmp_path / "out", bundles[2])
    check_failure(status, stderr, tmp_path / "out", "is a Task 2 bundle, but Task 1 was asked for")


def test_odd_clinical_records_encode_as_unknown(bundles, synthetic_case, tmp_path):
    def risk(name: str, ehr) -> float:
        input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / name, ehr)
        assert run(2, input_dir, tmp_path / f"{name}-out", bundles[2])[0] == 0
        return check_risk(tmp_path / f"{name}-out")

    base = risk("base", EHR)
    assert risk("strings", {k: f" {v} " for k, v in EHR.items()}) == base
    assert risk("extra", {**EHR, "HPV Status": 1, "Weight": 80.5}) == base
    unknown = risk("unknown", {**EHR, "M-stage": "M7", "Gender": "other"})
    assert unknown == risk("nulls", {**EHR, "M-stage": None, "Gender": None}) != base
    no_record = risk("absent", None)
    assert no_record == risk("empty", {}) == risk("all-null", {k: None for k in EHR}) != base


# ---------------------------------------------------------------------------------------------- geometry oracle


def _same_voxels_stored_flipped(image: sitk.Image, axes_xyz: tuple[bool, bool, bool]) -> sitk.Image:
    """The same physical image, its voxels stored in reverse order along ``axes_xyz`` (origin and direction
    adjusted so that every voxel keeps its physical centre and value)."""
    array = sitk.GetArrayFromImage(image)[tuple(slice(None, None, -1) if f else slice(None) for f in axes_xyz[::-1])]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    last = [n - 1 if f else 0 for n, f in zip(image.GetSize(), axes_xyz)]
    out.SetOrigin(image.TransformIndexToPhysicalPoint(last))
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.where(axes_xyz, -1.0, 1.0)
    out.SetDirection(direction.ravel().tolist())
    return out


@pytest.mark.parametrize("orientation", ["flip", "oblique"])
def test_mask_lies_on_the_input_ct_grid(orientation, bundles, tmp_path):
    case = make_case(3, "small", case_index=2, ct_orientation=orientation, pet_orientation=orientation)
    input_dir = write_gc_input(case.ct, case.pet, tmp_path / "in", case.ehr(task=1))
    assert run(1, input_dir, tmp_path / "out", bundles[1])[0] == 0
    labels = check_mask(tmp_path / "out", input_ct(input_dir))
    # against the in-memory CT, before the .mha round trip (MetaIO writes geometry as decimal text)
    mask = sitk.ReadImage(str(tmp_path / "out" / MASK_OUTPUT))
    assert mask.GetSize() == case.ct.GetSize()
    for got, expected in ((mask.GetSpacing(), case.ct.GetSpacing()), (mask.GetOrigin(), case.ct.GetOrigin()),
                          (mask.GetDirection(), case.ct.GetDirection())):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # the container's mask is the library's prediction, nothing lost or moved on the way
    expected = Segmenter.from_bundle(bundles[1], device="cpu").predict(input_ct(input_dir), sitk.ReadImage(
        str(next((input_dir / "images" / "pet").iterdir()))))
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(expected))


def test_a_ct_stored_flipped_gives_the_same_mask_flipped(bundles, synthetic_case, tmp_path):
    """Storing the same CT with reversed axes must not change the segmentation, only the order of its voxels."""
    masks = {}
    for name, axes in (("plain", (False, False, False)), ("flipped", (True, False, True))):
        ct = _same_voxels_stored_flipped(synthetic_case.ct, axes)
        input_dir = write_gc_input(ct, synthetic_case.pet, tmp_path / name, EHR)
        assert run(1, input_dir, tmp_path / f"{name}-out", bundles[1], "--no-tta")[0] == 0
        masks[name] = check_mask(tmp_path / f"{name}-out", input_ct(input_dir))
    assert masks["plain"].any()
    disagree = np.count_nonzero(masks["plain"] != masks["flipped"][::-1, :, ::-1])
    assert disagree <= 1e-4 * masks["plain"].size, disagree


# -------------------------------------------------------------------------------------- determinism, time guard


def test_same_input_gives_bit_identical_outputs(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    outputs = {}
    for task, name in ((1, MASK_OUTPUT), (2, RFS_OUTPUT)):
        for attempt in (1, 2):
            out = tmp_path / f"out-{task}-{attempt}"
            assert run(task, input_dir, out, bundles[task])[0] == 0
            outputs[task, attempt] = (out / name).read_bytes()
        assert outputs[task, 1] == outputs[task, 2]


def test_time_guard_drops_tta_then_folds_and_still_writes_a_valid_output(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    # As if the process had started 10 s ago (container start-up) with a budget of half a second.
    status, stdout, _ = run(1, input_dir, tmp_path / "out1", bundles[1], "--time-budget", "0.5", started_s_ago=10)
    assert status == 0
    check_mask(tmp_path / "out1", input_ct(input_dir))
    assert "time budget: dropped test-time augmentation: " in stdout
    assert "time budget: dropped fold(s) [1]: " in stdout and "folds [0] without TTA, 1 network pass(es)" in stdout
    status, stdout, _ = run(2, input_dir, tmp_path / "out2", bundles[2], "--time-budget", "0.5", started_s_ago=10)
    assert status == 0
    check_risk(tmp_path / "out2")
    assert "time budget: dropped fold(s) [2, 1]: " in stdout  # fold 0 has the largest ensemble weight
    status, _, stderr = run(1, input_dir, tmp_path / "out3", bundles[1], "--time-budget", "700")
    check_failure(status, stderr, tmp_path / "out3", "the time budget must lie in (0, 600] s")


def test_inference_scripts_run_as_processes(bundles, synthetic_case, tmp_path):
    """The real entry points, as the container's ENTRYPOINT runs them: exit status, streams and files."""
    good = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "good", EHR)
    bad = write_gc_input(synthetic_case.ct, shifted_pet(synthetic_case), tmp_path / "bad", EHR)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes side by side on two cores
    commands = {
        "task1": [1, good, "--time-budget", "0.5"],
        "task2_bad": [2, bad, "--strict"],  # (by default the PET would be dropped and a risk written)
    }
    processes = {
        name: subprocess.Popen([sys.executable, str(REPO / f"task{task}_container" / "inference.py"), "--input",
                                str(folder), "--output", str(tmp_path / f"{name}-out"), "--resources",
                                str(bundles[task]), "--device", "cpu", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name, (task, folder, *extra) in commands.items()
    }
    results = {name: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for name, p in processes.items()}
    status, stdout, stderr = results["task1"]
    assert status == 0 and stderr == "", stderr
    check_mask(tmp_path / "task1-out", input_ct(good))
    # Interpreter start-up and imports alone take longer than half a second: the guard measures from process start.
    assert "time budget: dropped test-time augmentation" in stdout and "folds [0] without TTA" in stdout
    status, stdout, stderr = results["task2_bad"]
    check_failure(status, stderr, tmp_path / "task2_bad-out", "PET and CT do not overlap in physical space")
    assert "Traceback" not in stdout + stderr


# ------------------------------------------------------------------------------------------------ real PET/CT


@pytest.mark.parametrize("patient", ["STS_002", "STS_003"])
def test_real_pet_ct_cases(patient, real_data, bundles, tmp_path):
    folder = real_data / "petct" / patient
    ct = sitk.ReadImage(str(folder / f"{patient}__CT.nii.gz"))
    pet = sitk.ReadImage(str(folder / f"{patient}__PT.nii.gz"))
    input_dir = write_gc_input(ct, pet, tmp_path / "in", EHR)
    status, stdout, stderr = run(1, input_dir, tmp_path / "out1", bundles[1])
    assert status == 0 and stderr == "", stderr
    check_mask(tmp_path / "out1", input_ct(input_dir))
    assert input_ct(input_dir).GetSize() == ct.GetSize()
    status, _, stderr = run(2, input_dir, tmp_path / "out2", bundles[2])
    assert status == 0 and stderr == "", stderr
    check_risk(tmp_path / "out2")


# ------------------------------------------------------------------------------------------------------------ demo


def test_demo_measures_each_container_run_on_its_own(tmp_path):
    """The demo's per-case memory is the run's own: not inflated by the demo process, which holds the training data
    (a child's ru_maxrss otherwise starts from its parent's size at fork)."""
    import demo

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB resident in this (the parent) process
    child = "import numpy, time; a = numpy.ones(150 * 2**20 // 8); time.sleep(0.2)"
    record = demo.measure([sys.executable, "-c", child], tmp_path / "child.log")
    assert record["status"] == 0 and record["wall_s"] >= 0.2
    assert 150 < record["peak_rss_mb"] < 280, record
    assert ballast.sum() > 0
    failed = demo.measure([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "failed.log")
    assert failed["status"] == 3


def test_demo_reports_task1_out_of_fold_scores_after_the_chosen_postprocessing():
    """The demo has no validation pass: its Task 1 scores are the out-of-fold masks' after the postprocessing chosen on
    them (GTVp: a stray component removed; GTVn: below the smallest threshold, so raw = chosen)."""
    import demo
    from hecktor.postprocessing import choose_postprocessing

    label = np.zeros((20, 20, 20), np.uint8)
    label[4:10, 4:10, 4:10] = 1
    label[12:16, 12:16, 12:16] = 2
    prediction = label.copy()
    prediction[16:18, 1:3, 1:3] = 1  # 8 stray GTVp voxels: Dice 2*216/(216+224) without them removed
    images = [sitk.GetImageFromArray(a) for a in (prediction, label)]
    for image in images:
        image.SetSpacing((4.0, 4.0, 4.0))
    _, report = choose_postprocessing([(images[0], images[1], "P-1")])
    scores = demo.out_of_fold_scores(report)
    assert scores == {"n_cases": 1, "dice_GTVp": pytest.approx(1.0), "dsc_agg_GTVn": pytest.approx(1.0),
                      "f1_agg_GTVn": pytest.approx(1.0)}
    assert report["GTVp"]["raw"] == pytest.approx(2 * 216 / 440)


def test_demo_kaplan_meier_survives_a_log_rank_test_that_is_undefined(tmp_path):
    """Two patients, the earlier one censored: scikit-survival's log-rank covariance is singular; the plot is drawn and
    the p-value is NaN. With two groups of five it is a number."""
    import demo_report

    km = demo_report.save_kaplan_meier([100, 200], [0, 1], [0.1, 0.9], tmp_path / "km.png", "two")
    assert math.isnan(km["logrank_p"]) and (tmp_path / "km.png").is_file()
    assert km["groups"] == {"low risk": {"n": 1, "relapses": 0}, "high risk": {"n": 1, "relapses": 1}}
    times = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    km = demo_report.save_kaplan_meier(times, [1, 1, 1, 0, 1, 0, 0, 1, 0, 0], list(range(10, 0, -1)),
                                       tmp_path / "km10.png", "ten")
    assert 0.0 < km["logrank_p"] < 0.2


def test_demo_scores_task3_from_the_containers_outputs_and_logged_probabilities(tmp_path):
    """Balanced accuracy from the written booleans, AUC from the probability each container logged, over the patients
    of known status only; the oracle from the true P(HPV+)."""
    import demo_scores

    cases = [("A", 1, True, 0.9, 0.8), ("B", 1, False, 0.4, 0.6), ("C", 0, False, 0.2, 0.3), ("D", 0, True, 0.7, 0.5),
             ("E", None, True, 0.99, 0.9)]
    held_out = []
    for pid, status, predicted, logged, truth in cases:
        folder = tmp_path / "outputs" / "task3" / pid
        folder.mkdir(parents=True)
        (folder / "hpv-status.json").write_text(json.dumps(predicted))
        (tmp_path / "outputs" / "task3" / f"{pid}.log").write_text(
            f"INFO task3_container: wrote x: P(HPV+) {logged:.3f}, threshold 0.500: ...\n")
        held_out.append({"patient_id": pid, "hpv_status": status, "hpv_probability": truth})
    scores = demo_scores.score_hpv(tmp_path, held_out)
    assert scores["hpv_n"] == 4 and scores["hpv_n_positive"] == 2
    assert scores["hpv_balanced_accuracy"] == pytest.approx(0.5)  # A right, B wrong; C right, D wrong
    assert scores["hpv_auc"] == pytest.approx(0.75)  # positives 0.9, 0.4 against negatives 0.2, 0.7: 3 of 4 pairs
    assert scores["hpv_oracle_auc"] == pytest.approx(1.0)
    assert [c["hpv_probability_predicted"] for c in held_out] == [0.9, 0.4, 0.2, 0.7, 0.99]


def test_demo_scores_the_extra_held_out_patients_with_the_container_runs_and_apart(tmp_path):
    """The patients predicted in-process count in the held-out scores (hpv_n, cindex_n) and are reported apart."""
    import demo_scores

    held_out = []
    for pid, status, predicted, logged in (("A", 1, True, 0.9), ("B", 1, False, 0.4), ("C", 0, False, 0.2),
                                           ("D", 0, True, 0.7)):
        folder = tmp_path / "outputs" / "task3" / pid
        folder.mkdir(parents=True)
        (folder / "hpv-status.json").write_text(json.dumps(predicted))
        (tmp_path / "outputs" / "task3" / f"{pid}.log").write_text(f"P(HPV+) {logged:.3f}, threshold 0.500: ...\n")
        held_out.append({"patient_id": pid, "hpv_status": status, "hpv_probability": 0.5})
    extra = [{"patient_id": "F", "hpv_status": 1, "hpv_probability": 0.5, "hpv_predicted": True,
              "hpv_probability_predicted": 0.8},
             {"patient_id": "G", "hpv_status": 0, "hpv_probability": 0.5, "hpv_predicted": False,
              "hpv_probability_predicted": 0.1}]
    scores = demo_scores.score_hpv(tmp_path, held_out, extra)
    assert (scores["hpv_n"], scores["hpv_n_containers"], scores["hpv_n_in_process"]) == (6, 4, 2)
    assert scores["hpv_balanced_accuracy"] == pytest.approx(2 / 3)  # 2 of 3 positives, 2 of 3 negatives right
    assert scores["hpv_balanced_accuracy_containers"] == pytest.approx(0.5)
    assert scores["hpv_balanced_accuracy_in_process"] == pytest.approx(1.0)
    assert scores["hpv_auc"] == pytest.approx(8 / 9)  # 0.9 and 0.8 above all three negatives, 0.4 above two
    low, high = scores["hpv_balanced_accuracy_ci95"]  # the bootstrap over the 6 patients (interval95)
    assert 0.0 <= low <= scores["hpv_balanced_accuracy"] <= high <= 1.0
    # Task 2: the risks written by the containers and those predicted in-process, in one C-index.
    survival = [("A", 100.0, 1, 2.0), ("B", 300.0, 1, 1.0), ("C", 500.0, 0, 0.5)]
    for pid, _, _, risk in survival:
        (tmp_path / "outputs" / "task2" / pid).mkdir(parents=True)
        (tmp_path / "outputs" / "task2" / pid / "rfs.json").write_text(json.dumps(risk))
    cases = [{"patient_id": pid, "rfs_days": days, "relapse": event, "true_log_hazard": risk}
             for pid, days, event, risk in survival]
    more = [{"patient_id": "X", "rfs_days": 200.0, "relapse": 1, "true_log_hazard": 0.0, "risk": 0.1}]
    scores = demo_scores.score_prognosis(tmp_path, cases, more)
    assert (scores["cindex_n"], scores["cindex_n_containers"], scores["cindex_n_in_process"]) == (4, 3, 1)
    assert scores["cindex_containers"] == pytest.approx(1.0)
    # pairs: A<B, A<X, A<C, X<B, X<C, B<C by time with an event first: X's low risk breaks X<B and X<C
    assert scores["cindex"] == pytest.approx(4 / 6)


def test_demo_gives_held_out_scores_their_bootstrap_interval():
    """interval95: the percentile bootstrap over the patients; a mean of 400 standard normals has a 95 % interval of
    width 2 x 1.96 / 20; draws where the score is undefined do not count; the report prints the interval."""
    import demo_report
    import demo_scores

    values = np.random.default_rng(1).normal(size=400)
    cases = [{"x": float(v)} for v in values]
    interval = demo_scores.interval95(lambda part: {"mean": float(np.mean([c["x"] for c in part]))}, cases, ["mean"])
    low, high = interval["mean_ci95"]
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 / 20, abs=0.02)
    two = [{"x": 0.0}, {"x": 1.0}]  # a draw holding one patient twice has no spread: undefined, left out
    spread = demo_scores.interval95(lambda part: {"sd": float(np.std([c["x"] for c in part])) or float("nan")},
                                    two, ["sd"], resamples=200)
    assert spread["sd_ci95"] == [0.5, 0.5]
    never = demo_scores.interval95(lambda part: {"sd": float("nan")}, two, ["sd"], resamples=5)
    assert all(math.isnan(v) for v in never["sd_ci95"])
    assert demo_report._ci({"cindex_ci95": [0.61, 0.8]}, "cindex") == " [95 % interval 0.610–0.800]"
    assert demo_report._ci({"cindex_ci95": [None, None]}, "cindex") == demo_report._ci({}, "cindex") == ""


def test_demo_scores_task1_on_the_containers_masks_and_apart_on_the_in_process_ones(tmp_path):
    """Task 1's held-out Dice: the Task 1 container's masks under ``segmentation``, the shared in-process
    segmentations of the extra patients under ``segmentation_in_process``; an extra patient without a mask (a case
    the predictors could not segment) scores as an empty prediction."""
    import demo_scores

    def label(box_end: int) -> sitk.Image:
        array = np.zeros((8, 8, 8), dtype=np.uint8)
        array[2:6, 2:6, 2:box_end] = 1
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 3.0))
        return image

    def write(image: sitk.Image, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path))

    write(label(6), tmp_path / "held_out" / "labels" / "A.nii.gz")
    write(label(6), demo_scores.output_path(tmp_path, 1, "A"))  # perfect
    write(label(6), tmp_path / "held_out_extra" / "labels" / "X.nii.gz")
    write(label(4), demo_scores.in_process_mask(tmp_path, "held_out_extra", "X"))  # half of the 4x4x4 box: Dice 2/3
    write(label(6), tmp_path / "held_out_extra" / "labels" / "Y.nii.gz")  # no mask written
    scores = demo_scores.score_segmentation(tmp_path, [{"patient_id": "A"}],
                                            [{"patient_id": "X"}, {"patient_id": "Y"}])
    assert scores["segmentation"]["n_cases"] == 1 and scores["segmentation"]["GTVp"]["dice_mean"] == pytest.approx(1)
    extra = scores["segmentation_in_process"]
    assert extra["n_cases"] == 2
    assert extra["GTVp"]["dice_mean"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert demo_scores.score_segmentation(tmp_path, [{"patient_id": "A"}]).keys() == {"segmentation", "per_case"}
    # An older run, rescored: it kept no in-process masks, so there is nothing to score (not 36 empty masks).
    shutil.rmtree(tmp_path / "held_out_extra" / "segmentations")
    assert "segmentation_in_process" not in demo_scores.score_segmentation(tmp_path, [{"patient_id": "A"}],
                                                                          [{"patient_id": "X"}])
