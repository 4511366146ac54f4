"""Runs that tell the truth (issue 23, deliverables 3, 4 and 6): ``--resume`` refuses a changed setting with the list
of differences unless it may change (and records the change from the iteration it applies at); a Task 2 run killed
during its folds does not block its re-run; folds whose validation cannot score them, and exports at chance, say
so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import export_prognosis
import train_prognosis
import train_segmentation
from hecktor.errors import InputError
from hecktor.synthetic import generate_cohort
from hecktor.training.crossval import chance_warning, fold_validation_warning, restart_unfinished_run
from hecktor.training.segmentation import (CONFIG_CHANGES_JSON, CONFIG_JSON, SegmentationTrainer, TrainingConfig,
                                          load_config_file)
from helpers.paths import REPO

TINY_JSON = REPO / "training" / "configs" / "tiny.json"
TINY = load_config_file(TINY_JSON)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "DATA", cases=10, seed=3, size="small").out_dir


def _recorded_run(cohort: Path, run_dir: Path) -> dict:
    """A run folder as the trainer leaves it after its first command (its config.json; no training needed here)."""
    trainer = SegmentationTrainer(TrainingConfig.from_dict({**TINY, "data_root": str(cohort), "run_dir": str(run_dir),
                                                            "device": "cpu"}))
    run_dir.mkdir(parents=True)
    record = trainer._run_record()
    (run_dir / CONFIG_JSON).write_text(json.dumps(record))
    return record


# ----------------------------------------------------------------------------------------------------- --resume
def test_resume_with_another_learning_rate_is_refused_with_the_differences(cohort, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _recorded_run(cohort, run_dir)
    status = train_segmentation.main(["--data", str(cohort), "--out", str(run_dir), "--resume", "--lr", "0.001",
                                      "--batch-size", "4", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert status == 2 and "Traceback" not in out + err
    assert "learning_rate: recorded 0.003, given 0.001" in out.splitlines()
    assert "batch_size: recorded 2, given 4" in out.splitlines()
    assert err.startswith("error: --resume with 2 setting(s) other than") and "(batch_size, learning_rate;" in err
    assert json.loads((run_dir / CONFIG_JSON).read_text())["learning_rate"] == 0.003  # the record is not rewritten


def test_resume_takes_the_recorded_settings_and_records_a_change_that_may_happen(cohort, tmp_path, capsys):
    run_dir = tmp_path / "run"
    record = _recorded_run(cohort, run_dir)
    args = train_segmentation.build_parser().parse_args(["--out", str(run_dir), "--resume", "--epochs", "5"])
    config = train_segmentation.config_from_args(args)  # nothing else given: the recorded values, not the defaults
    assert config.learning_rate == 0.003 and config.network_config == record["network_config"]
    trainer = SegmentationTrainer(config, resume=True)
    trainer._check_run_dir()
    assert trainer.resume_changes == {"epochs": [3, 5]}
    trainer._record_resume_changes(0, start_epoch=3)
    assert capsys.readouterr().out.strip() == (f"fold 0 resumes at iteration 12 with epochs 3 -> 5 (recorded in "
                                               f"{run_dir / CONFIG_CHANGES_JSON})")
    assert json.loads((run_dir / CONFIG_CHANGES_JSON).read_text()) == [
        {"fold": 0, "from_epoch": 3, "from_iteration": 12, "changes": {"epochs": {"recorded": 3, "given": 5}}}]


# ------------------------------------------------------------------------------------------ a killed Task 2 run
def _killed_during_fold_0(run_dir: Path) -> None:
    (run_dir / "fold_0").mkdir(parents=True)
    (run_dir / "fold_0" / "training_log.json").write_text("[]")


def test_a_run_killed_during_its_first_fold_restarts_it_with_one_line(cohort, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _killed_during_fold_0(run_dir)
    status = train_prognosis.main(["--mode", "clinical", "--data", str(cohort), "--out", str(run_dir), "--folds", "2",
                                   "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert (f"{run_dir} holds fold_0 of a run stopped before it finished (no metrics.json): that fold restarts from "
            "the first epoch") in out.splitlines()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "model" / "manifest.json").is_file()
    # A folder holding anything else than the folds' logs is not cleared.
    other = tmp_path / "other"
    _killed_during_fold_0(other)
    (other / "fold_0" / "notes.txt").write_text("mine")
    assert restart_unfinished_run(other, print) == []
    assert (other / "fold_0" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------------- warnings
class _Labels:
    def __init__(self, labels):
        self.labels = np.asarray(labels)


class _Events:
    def __init__(self, event):
        self.event = np.asarray(event)


def test_a_fold_whose_validation_cannot_score_it_is_named():
    assert fold_validation_warning(_Labels([1, 1, 0, 0]), 2, np.array([0, 1])) == (
        "fold 2: its 2 validation patient(s) are all HPV-positive: its AUC is undefined and counts as chance (0.5) in "
        "the ensemble weights; use fewer folds (--folds) or more patients of both classes")
    assert fold_validation_warning(_Labels([1, 1, 0, 0]), 0, np.array([0, 2])) is None
    with pytest.raises(InputError, match=r"^fold 1: its 2 validation patient\(s\) hold no relapse.*\(1 relapse\(s\) "
                                         r"in all\); use fewer folds"):
        fold_validation_warning(_Events([1, 0, 0]), 1, np.array([1, 2]))
    assert fold_validation_warning(_Events([1, 0, 0]), 0, np.array([0, 1])) is None


@pytest.mark.parametrize("metrics, at_chance", [
    ({"cindex_mean": 0.52}, True), ({"cindex_mean": 0.43}, True), ({"cindex_mean": None}, True),
    ({"cindex_mean": 0.53}, False),
    ({"balanced_accuracy_mean": 0.5, "auc_mean": 0.8}, True), ({"balanced_accuracy_mean": 0.7, "auc_mean": 0.55}, True),
    ({"balanced_accuracy_mean": 0.51, "auc_mean": 0.56}, False),
])
def test_chance_level_scores(metrics, at_chance):
    assert (chance_warning(metrics) is not None) == at_chance


def test_an_export_at_chance_says_so_in_one_warning(cohort, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train_prognosis.main(["--mode", "clinical", "--data", str(cohort), "--out", str(run_dir), "--folds", "2",
                                 "--no-progress"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "cindex_mean": 0.49}))
    capsys.readouterr()
    assert export_prognosis.main([str(run_dir), "--out", str(tmp_path / "bundle")]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
        f"warning: {run_dir}: out-of-fold C-index 0.490 (chance: 0.5): the ensemble does no better than chance on "
        "patients it did not train on; check the outcome column and the data check's warnings, and train longer or "
        "on more patients before using it"]


@pytest.mark.slow  # two short trainings: 43 s on the shared 2 cores (2026-12-07)
def test_more_epochs_on_resume_follow_the_new_schedule_from_the_iteration_recorded(cohort, tmp_path, capsys):
    """The change is applied, not only recorded: the resumed epochs' learning rate is the new length's schedule."""
    from hecktor.training.segmentation import warmup_cosine

    fast = {**TINY, "data_root": str(cohort), "run_dir": str(tmp_path / "run"), "network": "unet",
            "network_config": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}, "epochs": 2,
            "iterations_per_epoch": 2, "folds": [0], "predict_validation": False, "device": "cpu", "val_every": 2}
    SegmentationTrainer(TrainingConfig.from_dict(fast)).run()
    resumed = SegmentationTrainer(TrainingConfig.from_dict({**fast, "epochs": 4}), resume=True)
    resumed.run()
    assert "fold 0 resumes at iteration 4 with epochs 2 -> 4" in capsys.readouterr().out
    rows = json.loads((tmp_path / "run" / "fold_0" / "metrics.json").read_text())
    factor = warmup_cosine(4 * 2, TINY["warmup_fraction"], TINY["min_lr_ratio"])
    # A row's lr is the one after its epoch's last step: the new schedule's factor at the epoch's last iteration.
    assert [r["lr"] for r in rows[2:]] == pytest.approx([TINY["learning_rate"] * factor(i) for i in (6, 8)])
    assert json.loads((tmp_path / "run" / CONFIG_CHANGES_JSON).read_text())[0]["from_iteration"] == 4
