"""Task 2 training: repeated cross-validation over fold seeds (``train_prognosis.py --repeats``) and the threads and
worker processes it uses by default (all cores)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hecktor.prognosis import RiskPredictor
from hecktor.synthetic import generate_cohort
from hecktor.training import crossval, prognosis
from hecktor.training.prognosis import cross_validate
from hecktor.training.prognosis_cohort import load_csv_cohort
from hecktor.training.prognosis_config import TrainingConfig
from train_prognosis import build_parser, main

N_CASES = 60


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "hecktor"
    generate_cohort(out, cases=N_CASES, seed=0, size="small")
    return out / "Task 2" / "HECKTOR_2025_Training_Task_2.csv"


def test_repeats_cross_validate_with_successive_fold_seeds(table, tmp_path, capsys):
    out = tmp_path / "repeated"
    assert main(["--mode", "clinical", "--csv", str(table), "--folds", "5", "--seed", "3", "--repeats", "3",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "repeat 3/3 (seed 5)" in printed and "over 3 repeats (fold seeds 3-5)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["repeat_seeds"] == [3, 4, 5] and [r["seed"] for r in metrics["repeats"]] == [3, 4, 5]

    cohort = load_csv_cohort(table)
    expected = [cross_validate(cohort, TrainingConfig(mode="clinical", seed=s, progress=False)).metrics()
                for s in (3, 4, 5)]
    means = [m["cindex_mean"] for m in expected]
    assert [r["cindex_mean"] for r in metrics["repeats"]] == pytest.approx(means, abs=1e-12)
    assert [r["cindex_folds"] for r in metrics["repeats"]] == [pytest.approx(m["cindex_folds"]) for m in expected]
    assert len(set(np.round(means, 12))) == 3  # three different splits
    assert metrics["cindex_mean_over_repeats"] == pytest.approx(np.mean(means), abs=1e-12)
    assert metrics["cindex_sd_over_repeats"] == pytest.approx(np.std(means, ddof=1), abs=1e-12)
    assert metrics["cindex_fold_sd_mean"] == pytest.approx(np.mean([m["cindex_std"] for m in expected]), abs=1e-12)
    # Everything else in the run, the exported model included, is the first repeat's (seed 3).
    assert metrics["cindex_mean"] == pytest.approx(means[0], abs=1e-12)
    assert metrics["cindex_folds"] == pytest.approx(expected[0]["cindex_folds"])
    exported = RiskPredictor.from_bundle(out / "model", device="cpu")
    assert exported.info["config"]["seed"] == 3
    assert exported.info["metrics"]["cindex_mean"] == pytest.approx(means[0], abs=1e-12)

    single = tmp_path / "single"
    assert main(["--mode", "clinical", "--csv", str(table), "--seed", "3", "--out", str(single), "--no-progress",
                 "--threads", "1"]) == 0
    assert json.loads((single / "config.json").read_text())["threads"] == 1
    assert json.loads((out / "config.json").read_text())["threads"] is None  # all cores
    alone = json.loads((single / "metrics.json").read_text())
    assert alone["cindex_folds"] == metrics["cindex_folds"]
    assert alone["repeat_seeds"] == [3] and alone["cindex_sd_over_repeats"] is None
    assert (single / "folds.json").read_text() == (out / "folds.json").read_text()


def test_repeats_refuse_a_fixed_split_and_a_count_below_one(table, tmp_path, capsys):
    base = ["--mode", "clinical", "--csv", str(table), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--repeats", "2",
                        "--folds-file", str(tmp_path / "a" / "folds.json")]) == 2
    assert "--folds-file fixes one split" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "c"), "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_training_uses_all_cores_by_default_and_restores_the_caller_threads(table, monkeypatch):
    cohort = load_csv_cohort(table)
    seen = []
    run_fold = prognosis.run_fold

    def recording_run_fold(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_fold(*args, **kwargs)

    monkeypatch.setattr(prognosis, "run_fold", recording_run_fold)
    monkeypatch.setattr(crossval, "available_cores", lambda: 3)  # the threads rule both trainers share
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a caller on one thread, like the demo
    try:
        cross_validate(cohort, TrainingConfig(mode="clinical", progress=False))
        assert seen == [3] * 5 and torch.get_num_threads() == 1
        seen.clear()
        cross_validate(cohort, TrainingConfig(mode="clinical", threads=2, progress=False))
        assert seen == [2] * 5 and torch.get_num_threads() == 1
        seen.clear()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the usual way to cap a process's threads is honoured
        cross_validate(cohort, TrainingConfig(mode="clinical", progress=False))
        assert seen == [2] * 5 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    config = TrainingConfig()
    assert config.workers is None and config.threads is None
    with pytest.raises(prognosis.InputError, match="threads must be >= 1"):
        TrainingConfig(threads=0)
    help_text = " ".join(build_parser().format_help().split())
    assert "--threads THREADS torch's CPU threads" in help_text and "(default: all cores)" in help_text
    assert "the exported model is the first repeat's" in help_text
    assert math.isfinite(cross_validate(cohort, TrainingConfig(mode="clinical", threads=1, progress=False)).cindex_mean)
