"""The training and export command lines: one vocabulary, defaults in --help, exit status 2 with one error line, and
no sys.path manipulation anywhere in the repository."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import export_prognosis
import export_segmentation
import train_prognosis
import train_segmentation
from hecktor import survival_models as survival
from hecktor.training import cli
from helpers.paths import REPO

TRAINERS = {"segmentation": train_segmentation, "prognosis": train_prognosis}
REQUIRED = {"segmentation": [], "prognosis": ["--mode", "clinical"]}


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _config(task: str, argv: list[str]):
    module = TRAINERS[task]
    return module.config_from_args(module.build_parser().parse_args(REQUIRED[task] + argv))


def clinical_table(path: Path, n: int = 30, seed: int = 0) -> Path:
    """A small HECKTOR-style clinical CSV with survival (clinical mode needs nothing else)."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "CenterID", "Age", "Gender", "Tobacco Consumption", "Alcohol Consumption",
                         "Performance Status", "Treatment", "M-stage", "RFS", "Relapse"])
        for k in range(n):
            age = int(rng.integers(40, 80))
            relapse = int(rng.random() < 0.2 + 0.01 * (age - 40))
            writer.writerow([f"P-{k:03d}", k % 3, age, k % 2, int(rng.random() < 0.5), 0, k % 3, k % 2, "M0",
                             int(rng.integers(100, 2000)), relapse])
    return path


# ------------------------------------------------------------------------------------------------ one vocabulary


@pytest.mark.parametrize("task", TRAINERS)
def test_both_clis_read_folds_and_fold_alike(task):
    config = _config(task, ["--data", "DATA", "--out", "RUN", "--folds", "3", "--fold", "0", "--lr", "0.01",
                            "--no-augmentation", "--seed", "4", "--epochs", "2", "--batch-size", "4",
                            "--weight-decay", "0.5", "--device", "cpu", "--workers", "1", "--no-progress"])
    assert (config.n_folds, config.folds, config.fold_list) == (3, [0], [0])
    assert (config.learning_rate, config.augmentation, config.seed, config.epochs, config.batch_size) == \
        (0.01, False, 4, 2, 4)
    assert (config.weight_decay, config.device, config.workers, config.progress) == (0.5, "cpu", 1, False)
    every = _config(task, ["--data", "DATA", "--out", "RUN", "--folds", "3", "--fold", "all"])
    assert every.fold_list == [0, 1, 2] and every.device == "auto" and every.augmentation is True
    assert _config(task, ["--data", "DATA", "--out", "RUN", "--fold", "1,3"]).fold_list == [1, 3]


@pytest.mark.parametrize("former", [["--data-root", "DATA"], ["--run-dir", "RUN"], ["--n-folds", "3"]])
def test_task1_refuses_its_former_spellings(former, capsys):
    """Task 1's former --data-root, --run-dir and --n-folds (now --data, --out, --folds, as for Task 2) are gone:
    argparse refuses them in one line, with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        train_segmentation.main(["--data", "DATA", "--out", "RUN", "--fold", "0", *former])
    assert exit_info.value.code == 2
    _one_error_line(capsys, f"unrecognized arguments: {' '.join(former)}")
    new = _config("segmentation", ["--data", "DATA", "--out", "RUN", "--folds", "3", "--fold", "2"])
    assert (new.data_root, new.run_dir, new.n_folds, new.folds) == ("DATA", "RUN", 3, [2])


def test_survival_model_shortcut_and_its_choices_follow_the_registry(monkeypatch):
    assert _config("prognosis", ["--survival-model", "coxnet"]).survival == {"kind": "coxnet"}
    assert _config("prognosis", ["--survival-model", "coxnet", "--survival", '{"alpha": 0.1}']).survival == \
        {"alpha": 0.1, "kind": "coxnet"}
    # Each mode's default (hecktor.training.prognosis_config.DEFAULT_SURVIVAL): clinical keeps the encoder's scale.
    assert _config("prognosis", []).survival == {"kind": "coxph", "alpha": 100.0, "standardize": False}
    assert _config("prognosis", ["--mode", "fusion"]).survival == {"kind": "coxph", "alpha": 100.0}
    monkeypatch.setitem(survival.SURVIVAL_MODELS, "newkind", survival.SURVIVAL_MODELS["coxph"])
    parser = train_prognosis.build_parser()
    action = next(a for a in parser._actions if a.dest == "survival_model")
    assert list(action.choices) == sorted(survival.SURVIVAL_MODELS) and "newkind" in action.choices


@pytest.mark.parametrize("task", TRAINERS)
def test_help_lists_every_option_with_its_default(task, capsys):
    parser = TRAINERS[task].build_parser()
    formatter = parser.formatter_class(parser.prog)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings  # argparse prints nothing, not even a default, without help
            shown = formatter._get_help_string(action)
            assert "(default" in shown or shown.endswith("(required)"), action.option_strings
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[task].main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    epochs, lr = {"segmentation": ("100", "0.0002"), "prognosis": ("60", "0.0003")}[task]
    assert f"--epochs EPOCHS training epochs per fold (default: {epochs})" in text
    assert f"AdamW learning rate (default: {lr})" in text
    assert "--fold K[,K...]|all which folds of the split to train (default: all)" in text


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("task", TRAINERS)
def test_a_missing_data_folder_is_one_error_line_and_exit_2(task, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    argv = REQUIRED[task] + ["--data", str(missing), "--out", str(tmp_path / "run"), "--no-progress"]
    assert TRAINERS[task].main(argv) == 2
    _one_error_line(capsys, "HECKTOR folder not found", str(missing))


@pytest.mark.parametrize("task", TRAINERS)
@pytest.mark.parametrize("bad", [["--folds", "five"], ["--fold", "0;1"], ["--lr", "fast"]])
def test_a_malformed_option_is_one_error_line_and_exit_2(task, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[task].main(REQUIRED[task] + ["--data", "DATA", "--out", "RUN"] + bad)
    assert exit_info.value.code == 2
    _one_error_line(capsys, bad[0])


@pytest.mark.parametrize("task", TRAINERS)
def test_a_fold_outside_the_split_is_refused(task, tmp_path, capsys):
    assert TRAINERS[task].main(REQUIRED[task] + ["--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                                 "--folds", "3", "--fold", "3"]) == 2
    _one_error_line(capsys, "fold(s) [3] out of range 0..2")


def test_a_config_with_a_former_setting_name_is_refused(tmp_path, capsys):
    """A setting's former name ('lr', now 'learning_rate') is an unknown setting like any other; the line lists the
    known ones."""
    config = tmp_path / "old.json"
    config.write_text(json.dumps({"lr": 0.1, "epochs": 2}))
    assert train_segmentation.main(["--data", "D", "--out", "R", "--config", str(config)]) == 2
    line = _one_error_line(capsys, "unknown training setting(s) ['lr']; known: [")
    assert "'learning_rate'" in line and "'augmentation'" in line


def test_export_clis_exit_2_on_a_folder_that_is_no_run(tmp_path, capsys):
    assert export_segmentation.main([str(tmp_path)]) == 2
    _one_error_line(capsys, "not a training run")
    assert export_prognosis.main([str(tmp_path), "--out", str(tmp_path / "bundle")]) == 2
    _one_error_line(capsys, "not a finished Task 2 run")


def test_run_cli_statuses(capsys):
    from hecktor.errors import BundleError

    assert cli.run_cli(lambda: None) == 0

    def broken():
        raise BundleError("bundle /b is incomplete:\nmodel.json missing")

    assert cli.run_cli(broken) == 2
    assert _one_error_line(capsys) == "error: bundle /b is incomplete: model.json missing"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run_cli(lambda: 1 / 0)


# ------------------------------------------------------------------------------------------------ a real run


def test_task2_trains_only_the_chosen_fold_of_the_split(tmp_path, capsys):
    table = clinical_table(tmp_path / "table.csv")
    out = tmp_path / "run"
    assert train_prognosis.main(["--mode", "clinical", "--csv", str(table), "--folds", "3", "--fold", "1",
                                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 folds, training fold(s) 1" in printed and "fold 1: C-index" in printed and "fold 0:" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["folds_trained"] == [1] and metrics["n_folds"] == 3 and len(metrics["cindex_folds"]) == 1
    assert metrics["ensemble_weights"] == [1.0]
    split = json.loads((out / "folds.json").read_text())
    assert split["n_folds"] == 3  # the whole split, so that --folds-file can reuse it
    rows = list(csv.DictReader((out / "oof.csv").open()))
    val = set(split["folds"][1]["val"])
    assert all((row["oof_risk"] != "") == (i in val) for i, row in enumerate(rows))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("fold_")) == []  # clinical mode: no logs


# ------------------------------------------------------------------------------------------------ no sys.path edits


def test_nothing_in_the_repository_edits_sys_path():
    needle = "sys.path." + "insert"  # spelled apart so that this file does not match itself
    skipped = {".git", ".venv", "__pycache__", "runs", "data", "demo_output", ".pytest_cache"}
    offenders = []
    for path in REPO.rglob("*"):
        if skipped & set(path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".sh", ".md", ".ini", ".toml", ".txt", ".cfg"} or path.name in {"Makefile",
                                                                                                 "Dockerfile"}:
            offenders += [f"{path.relative_to(REPO)}:{n}" for n, line in
                          enumerate(path.read_text(errors="replace").splitlines(), 1) if needle in line]
    assert offenders == []
