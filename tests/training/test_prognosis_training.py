"""Cross-validated Task 2 training (hecktor.training.prognosis, train_prognosis.py, export_prognosis.py) on a small
synthetic cohort with a known risk, and the clinical baseline on the real HN1 table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.datasets import ehr_from_row, list_training_cases
from hecktor.errors import InputError
from hecktor.folds import make_folds
from hecktor.metrics import concordance_index
from hecktor.networks.fused import TINY_BACKBONE
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskPredictor
from hecktor.survival import ensemble_weights
from hecktor.synthetic import generate_cohort
from hecktor.training.prognosis import cross_validate, export_bundle
from hecktor.training.prognosis_cohort import load_csv_cohort, load_hecktor_cohort
from hecktor.training.prognosis_config import TrainingConfig
from helpers.paths import REPO
from train_prognosis import main

N_CASES = 60
PLAN = BoxPlan(input_shape_zyx=(32, 32, 32))


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "hecktor"
    generate_cohort(out, cases=N_CASES, seed=0, size="small")
    return out


@pytest.fixture(scope="module")
def fusion_run(cohort_dir, tmp_path_factory):
    """A short fusion training: tiny backbone, 32^3 inputs, 10 epochs, 5 folds (a few seconds on 2 idle cores)."""
    cache = tmp_path_factory.mktemp("cache")
    run_dir = tmp_path_factory.mktemp("runs") / "fusion"
    cohort = load_hecktor_cohort(cohort_dir, PLAN, cache_dir=cache, progress=False)
    config = TrainingConfig(mode="fusion", n_folds=5, seed=0, epochs=10, learning_rate=3e-3,
                            early_stopping_fraction=0.0, network=dict(TINY_BACKBONE), device="cpu",
                            threads=1)  # conftest's one thread: the trainer's default (all cores) stalls on a busy CI
    result = cross_validate(cohort, config, run_dir, progress=False)
    return result, run_dir, cache


def _read_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    folds = metrics["cindex_folds"]
    assert len(folds) == 5 and all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in folds)
    assert metrics["cindex_mean"] == pytest.approx(np.mean(folds), abs=1e-12)
    return metrics


def test_cli_clinical_mode_on_synthetic_cohort(cohort_dir, tmp_path, capsys):
    out = tmp_path / "clinical"
    assert main(["--mode", "clinical", "--data", str(cohort_dir), "--folds", "5", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fold 4: C-index" in printed and "mean out-of-fold C-index" in printed
    metrics = _read_metrics(out)
    assert metrics["mode"] == "clinical" and metrics["n_patients"] == N_CASES
    assert math.isfinite(metrics["cindex_pooled_oof"])
    assert metrics["ensemble_weights"] == pytest.approx(ensemble_weights(metrics["cindex_folds"]).tolist())
    oof = (out / "oof.csv").read_text().splitlines()
    assert oof[0] == "PatientID,fold,RFS,Relapse,oof_risk" and len(oof) == N_CASES + 1


def test_cli_clinical_mode_on_real_hn1_table(real_data, tmp_path, capsys):
    csv_path = real_data / "clinical" / "tcia_hn1_hecktor2025_columns.csv"
    if not csv_path.is_file():
        pytest.skip(f"{csv_path} is absent")
    out = tmp_path / "hn1"
    assert main(["--mode", "clinical", "--csv", str(csv_path), "--folds", "5", "--out", str(out), "--no-progress"]) == 0
    metrics = _read_metrics(out)
    assert metrics["n_patients"] == 137 and metrics["n_events"] == 39
    # A ridge Cox model on the seven seed features reaches about 0.56 on HN1; ours must at least beat chance.
    assert 0.5 < metrics["cindex_mean"] < 0.7
    predictor = RiskPredictor.from_bundle(out / "model", device="cpu")
    assert predictor.mode == "clinical" and math.isfinite(predictor.predict(None, None, {"Age": 60, "Gender": 1}))


def test_cli_refuses_bad_requests(cohort_dir, tmp_path, capsys):
    table = cohort_dir / "Task 2" / "HECKTOR_2025_Training_Task_2.csv"
    assert main(["--mode", "fusion", "--csv", str(table), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "--csv gives no images" in capsys.readouterr().err
    assert main(["--mode", "clinical", "--csv", str(table), "--out", str(tmp_path / "b"), "--no-progress",
                 "--survival", '{"kind": "coxph", "l1_ratio": 0.5}']) == 2
    assert "unknown parameters" in capsys.readouterr().err
    assert main(["--mode", "clinical", "--out", str(tmp_path / "c")]) == 2  # neither --data nor --csv
    assert "either --data" in capsys.readouterr().err
    assert main(["--mode", "clinical", "--csv", str(table), "--survival-model", "coxnet", "--no-progress",
                 "--survival", '{"kind": "coxph"}', "--out", str(tmp_path / "e")]) == 2
    assert "give the kind once" in capsys.readouterr().err
    run = ["--mode", "clinical", "--csv", str(table), "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(run) == 0
    assert main(run) == 2 and "already holds a training run" in capsys.readouterr().err
    assert main(run + ["--overwrite"]) == 0


def test_fold_split_is_deterministic_and_reusable(cohort_dir, tmp_path):
    cohort = load_csv_cohort(cohort_dir / "Task 2" / "HECKTOR_2025_Training_Task_2.csv")
    first = make_folds(cohort.event, 5, seed=0, groups=cohort.centres)
    again = make_folds(cohort.event, 5, seed=0, groups=cohort.centres)
    other = make_folds(cohort.event, 5, seed=1, groups=cohort.centres)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    assert np.array_equal(np.sort(np.concatenate([v for _, v in first])), np.arange(N_CASES))
    events_per_fold = [int(cohort.event[v].sum()) for _, v in first]
    assert max(events_per_fold) - min(events_per_fold) <= 1

    config = TrainingConfig(mode="clinical", n_folds=5, seed=0)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    result_a = cross_validate(cohort, config, run_a, progress=False)
    assert all(np.array_equal(f.val_idx, v) for f, (_, v) in zip(result_a.folds, first))
    # A second mode reuses the first run's split through --folds-file; everything then matches exactly.
    assert main(["--mode", "clinical", "--data", str(cohort_dir), "--out", str(run_b), "--no-progress",
                 "--folds-file", str(run_a / "folds.json")]) == 0
    assert main(["--mode", "clinical", "--data", str(cohort_dir), "--out", str(tmp_path / "c"), "--no-progress",
                 "--folds", "4", "--folds-file", str(run_a / "folds.json")]) == 2
    assert json.loads((run_b / "folds.json").read_text()) == json.loads((run_a / "folds.json").read_text())
    assert _read_metrics(run_b)["cindex_folds"] == result_a.cindex_folds


def test_short_fusion_training_beats_chance(fusion_run):
    """On this 60-case cohort (oracle C-index 0.76 over all patients) this setting gave, over training seeds 0-5,
    mean OOF C-indices of 0.64-0.74 and pooled OOF C-indices of 0.58-0.71 (seed 0: 0.64 and 0.62)."""
    result, run_dir, _ = fusion_run
    metrics = _read_metrics(run_dir)
    assert metrics["cindex_mean"] > 0.6
    assert metrics["cindex_pooled_oof"] > 0.55
    assert metrics["ensemble_weights"] == pytest.approx(ensemble_weights(result.cindex_folds).tolist())
    assert metrics["best_epochs"] == [10] * 5
    for k in range(5):
        log = json.loads((run_dir / f"fold_{k}" / "training_log.json").read_text())
        assert [row["epoch"] for row in log] == list(range(1, 11)) and all(math.isfinite(r["train_loss"]) for r in log)
    # The per-fold C-index is the C-index of the OOF risks written to oof.csv.
    fold = result.folds[0]
    assert fold.cindex == pytest.approx(
        concordance_index(result.cohort.time[fold.val_idx], result.cohort.event[fold.val_idx], fold.oof_risk))


def test_cache_is_reused_and_keyed_by_plan(cohort_dir, fusion_run):
    result, _, cache = fusion_run
    folder = cache / f"box-{PLAN.digest()}"
    assert len(list(folder.glob("*.image.npy"))) == N_CASES
    again = load_hecktor_cohort(cohort_dir, PLAN, cache_dir=cache, progress=False)
    assert np.array_equal(again.images, result.cohort.images)
    assert again.images.shape == (N_CASES, 2, 32, 32, 32)


def test_export_load_predict_equals_in_memory_ensemble(cohort_dir, fusion_run, tmp_path):
    result, run_dir, _ = fusion_run
    predictor = export_bundle(run_dir, tmp_path / "bundle")
    in_memory = result.predictor(device="cpu")
    assert predictor.mode == "fusion" and np.array_equal(predictor.weights, in_memory.weights)
    cases = {c.patient_id: c for c in list_training_cases(cohort_dir, 2)}
    fold = result.folds[2]
    picked = list(fold.val_idx[:3])
    batched = in_memory.predict_batch(result.cohort.images[picked], [result.cohort.rows[i] for i in picked])
    for position, i in enumerate(picked):
        pid = result.cohort.patient_ids[i]
        ct, pet, _ = cases[pid].read()
        # The container sees ehr.json (numbers, no HPV), training saw CSV strings: both must encode alike.
        ehr = ehr_from_row(result.cohort.rows[i])
        risk = predictor.predict(ct, pet, ehr)
        assert risk == pytest.approx(in_memory.predict(ct, pet, ehr), abs=1e-6)
        # The training path (cached tensors, batched forward passes) agrees up to float32 batch-size effects.
        assert risk == pytest.approx(batched[position], abs=1e-4)
        # One fold alone reproduces that fold's out-of-fold risk, the number its C-index was computed from.
        assert predictor.predict(ct, pet, ehr, folds=[2]) == pytest.approx(fold.oof_risk[position], abs=1e-4)
    assert set(predictor.last_report.timings) >= {"preprocess_s", "clinical_s", "network_s", "survival_s", "total_s"}


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_export_never_deletes_a_run_or_unrelated_files(fusion_run, tmp_path, capsys):
    import export_prognosis

    _, run_dir, _ = fusion_run
    run_before = _files(run_dir)
    assert export_prognosis.main([str(run_dir), "--out", str(run_dir), "--overwrite"]) == 2
    assert "is not empty and holds no bundle" in capsys.readouterr().err
    assert _files(run_dir) == run_before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert export_prognosis.main([str(run_dir), "--out", str(tmp_path / "mine")]) == 2
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a bundle is written into an empty folder, and replaced only with --overwrite
    (tmp_path / "bundle").mkdir()
    assert export_prognosis.main([str(run_dir), "--out", str(tmp_path / "bundle")]) == 0
    assert export_prognosis.main([str(run_dir), "--out", str(tmp_path / "bundle")]) == 2
    assert "already holds a bundle; pass --overwrite" in capsys.readouterr().err
    assert export_prognosis.main([str(run_dir), "--out", str(tmp_path / "bundle"), "--overwrite"]) == 0
    assert _files(run_dir) == run_before


def test_export_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(InputError, match="not a finished Task 2 run"):
        export_bundle(tmp_path, tmp_path / "bundle")


# ------------------------------------------------------------------------------------------------ biomarker modes
@pytest.fixture(scope="module")
def task1_run(tmp_path_factory):
    """A small cohort and a finished 3-fold Task 1 cross-validation of the tiny HecMamba (2 iterations per fold: it
    trains the code path, not a model), trained without its out-of-fold predictions (as before the trainer made
    them), so that Task 2 makes them (write_validation_masks)."""
    from hecktor.training.segmentation import SegmentationTrainer, TrainingConfig as SegConfig, load_config_file

    root = tmp_path_factory.mktemp("bio")
    cohort = root / "hecktor"
    generate_cohort(cohort, cases=18, seed=6, size="small")
    tiny = load_config_file(REPO / "training" / "configs" / "tiny.json")
    config = {**tiny, "data_root": str(cohort), "run_dir": str(root / "seg"), "cache_dir": str(root / "cache"),
              "n_folds": 3, "epochs": 1, "iterations_per_epoch": 2, "val_every": 1, "augmentation": False,
              "predict_validation": False}
    SegmentationTrainer(SegConfig.from_dict(config)).run()
    return cohort, root / "seg"


def _fold_segmenter(seg_run, patient_id):
    """The Task 1 fold that did not train on ``patient_id`` (the one that made its out-of-fold mask), alone."""
    from hecktor.folds import load_folds
    from hecktor.plan import RegionPlan
    from hecktor.segment import Segmenter
    from hecktor.training.segmentation import network_from_checkpoint

    ids = sorted(c.patient_id for c in list_training_cases(seg_run.parent / "hecktor", 1))
    fold = next(k for k, (_, val) in enumerate(load_folds(seg_run / "folds.json", case_ids=ids))
                if ids.index(patient_id) in val)
    network, _ = network_from_checkpoint(seg_run / f"fold_{fold}" / "checkpoint_best.pt")
    return Segmenter([network], RegionPlan.load(seg_run / "plan.json"), device="cpu"), fold


def test_biomarker_mode_trains_on_out_of_fold_masks_and_nests_the_task1_bundle(task1_run, tmp_path, capsys):
    from hecktor.prognosis import SEGMENTATION_FOLDER
    from hecktor.training.biomarker_features import validation_mask_path, write_validation_masks

    cohort_dir, seg_run = task1_run
    out = tmp_path / "bio"
    assert main(["--data", str(cohort_dir), "--segmentation", str(seg_run), "--folds", "3", "--out", str(out),
                 "--survival", '{"kind": "coxph", "alpha": 10.0, "standardize": false}', "--no-progress",
                 "--device", "cpu"]) == 0  # no --mode: the default, biomarkers
    printed = capsys.readouterr().out
    assert "biomarkers: 18 patients" in printed and "segmenting 6 validation patient(s)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "biomarkers" and len(metrics["cindex_folds"]) == 3
    assert all(math.isfinite(c) for c in metrics["cindex_folds"])
    # Every patient's out-of-fold mask, and each is the Segmenter.predict output of the fold that held it out.
    masks = write_validation_masks(seg_run, progress=False)
    assert len(masks) == 18 and all(path.is_file() for path in masks.values())
    cases = {c.patient_id: c for c in list_training_cases(cohort_dir, 2)}
    pid = sorted(masks)[3]
    segmenter, k = _fold_segmenter(seg_run, pid)
    ct, pet, _ = cases[pid].read()
    assert masks[pid] == validation_mask_path(seg_run, k, pid)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(masks[pid])))
    assert np.array_equal(written, sitk.GetArrayFromImage(segmenter.predict(ct, pet, tta=False)))
    # The exported bundle nests the Task 1 bundle of all 3 folds, and predicts.
    predictor = export_bundle(out, tmp_path / "bundle")
    assert predictor.mode == "biomarkers" and len(predictor.segmenter.networks) == 3
    assert (tmp_path / "bundle" / SEGMENTATION_FOLDER / "fold_2.pt").is_file()
    assert math.isfinite(predictor.predict(ct, pet, ehr_from_row(next(r for r in load_csv_cohort(
        cohort_dir / "Task 2" / "HECKTOR_2025_Training_Task_2.csv").rows if r["PatientID"] == pid))))
    assert main(["--mode", "biomarkers", "--data", str(cohort_dir), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "needs --segmentation" in capsys.readouterr().err
    assert main(["--mode", "clinical", "--data", str(cohort_dir), "--segmentation", str(seg_run),
                 "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "for the biomarker modes" in capsys.readouterr().err


def test_out_of_fold_masks_get_the_postprocessing_the_nested_bundle_applies(task1_run, tmp_path):
    """With a postprocessing chosen for the Task 1 run, the biomarker modes learn from the out-of-fold masks after it,
    as the exported (nested) Task 1 bundle answers: largest GTVp component, small GTVn components removed."""
    import shutil

    from hecktor.postprocessing import Postprocessing
    from hecktor.segment import Segmenter
    from hecktor.training.biomarker_features import POSTPROCESSED_DIR, export_segmentation_bundle, \
        write_validation_masks

    _, seg_run = task1_run
    run = shutil.copytree(seg_run, tmp_path / "seg")
    raw = write_validation_masks(run, progress=False)
    assert write_validation_masks(run, progress=False, postprocessed=True) == raw  # no postprocessing.json: as is
    steps = Postprocessing(gtvp_largest_component=True, gtvn_min_volume_ml=0.5)
    (run / "postprocessing.json").write_text(json.dumps({"postprocessing": steps.to_dict()}))
    masks = write_validation_masks(run, progress=False)
    assert sorted(masks) == sorted(raw) and write_validation_masks(run, progress=False, postprocessed=False) == raw
    for pid, path in masks.items():
        assert path == raw[pid].parent.parent / POSTPROCESSED_DIR / f"{pid}.nii.gz"
        expected = steps.apply(sitk.ReadImage(str(raw[pid])))
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), sitk.GetArrayFromImage(expected))
    assert Segmenter.from_bundle(export_segmentation_bundle(run, tmp_path / "task2"), device="cpu").postprocessing \
        == steps


def test_fusion_biomarkers_oof_risk_is_what_the_bundle_predicts_with_the_same_mask(task1_run, tmp_path):
    """fusion+biomarkers through the library: a tiny network on the tumour cubes (mask channel) of the out-of-fold
    masks. With the Task 1 fold that made a patient's mask as its segmenter, the exported bundle's fold reproduces
    that patient's out-of-fold risk: training and inference measure the same biomarkers and cubes."""
    from hecktor.biomarkers import TumourCrop
    from hecktor.training.biomarker_features import add_segmentation_features, export_segmentation_bundle, \
        write_validation_masks

    cohort_dir, seg_run = task1_run
    cohort = load_hecktor_cohort(cohort_dir, PLAN, with_images=False, progress=False)
    add_segmentation_features(cohort, cohort_dir, write_validation_masks(seg_run, progress=False),
                              crop=TumourCrop(128.0, PLAN.input_shape_zyx), progress=False)
    assert cohort.crops.shape == (18, 3, 32, 32, 32) and len(cohort.biomarkers) == 18
    config = TrainingConfig(mode="fusion+biomarkers", n_folds=3, seed=0, epochs=2, learning_rate=3e-3,
                            early_stopping_fraction=0.0, network=dict(TINY_BACKBONE), device="cpu",
                            survival={"kind": "coxph", "alpha": 10.0},
                            segmentation_bundle=str(export_segmentation_bundle(seg_run, tmp_path / "run")))
    result = cross_validate(cohort, config, tmp_path / "run", progress=False)
    predictor = export_bundle(tmp_path / "run", tmp_path / "bundle")
    assert predictor.mode == "fusion+biomarkers" and predictor.folds[0].network.config["image_channels"] == 3
    cases = {c.patient_id: c for c in list_training_cases(cohort_dir, 2)}
    fold = result.folds[1]
    for position in (0, 1):
        i = fold.val_idx[position]
        pid = cohort.patient_ids[i]
        predictor._segmenter, _ = _fold_segmenter(seg_run, pid)
        ct, pet, _ = cases[pid].read()
        risk = predictor.predict(ct, pet, ehr_from_row(cohort.rows[i]), folds=[1])
        assert risk == pytest.approx(fold.oof_risk[position], abs=1e-4)
        assert predictor.last_biomarkers.values == pytest.approx(cohort.biomarkers[i], rel=1e-6, abs=1e-9)


def test_a_fold_without_a_comparable_pair_is_one_clear_error(cohort_dir, tmp_path):
    """Too few relapses for the folds: the fold that cannot be scored (so not weighted) is named, with the fix."""
    cohort = load_csv_cohort(cohort_dir / "Task 2" / "HECKTOR_2025_Training_Task_2.csv")
    cohort.event[:] = 0
    cohort.event[:5] = 1  # a relapse per fold, each after every other patient's follow-up: nothing to compare
    cohort.time[:5] = cohort.time.max() + 1.0
    with pytest.raises(InputError, match=r"fold 0: its \d+ validation patients \(\d relapses\) hold no comparable "
                                         r"pair.*fewer folds"):
        cross_validate(cohort, TrainingConfig(mode="clinical", n_folds=5, seed=0), None, progress=False)
