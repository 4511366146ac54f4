"""hecktor-predict and hecktor-evaluate with ``--task 2026``: a mask per case and predictions.csv (T stage, N stage,
RFS time) written as the container answers, and the challenge's scores (Dice of GTVp and GTVn averaged, T and N
balanced accuracy with recall and confusion matrix, C-index of the RFS time) on hand-made cases of known answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor import evaluate, predict
from hecktor.case import read_case
from hecktor.datasets import write_gc_input
from hecktor.evaluate2026 import rfs_time_cindex, stage_scores
from hecktor.hecktor2026 import Hecktor2026Predictor
from hecktor.metrics import concordance_index
from hecktor.tasks import get_task
from helpers.containers import bundles, synthetic_case
from helpers.hostile_inputs import EHR_2026
from helpers.phantoms import blank_image

__all__ = ["bundles", "synthetic_case"]  # fixtures of helpers.containers, used here

SPEC = get_task(2026)


def test_stage_scores_of_a_known_confusion():
    scores = stage_scores(["T1", "T1", "T2", "T3", "T3", "T3"], ["T1", "T2", "T2", "T3", "T3", "T1"],
                          ("T1", "T2", "T3", "T4"))
    assert scores["recall"] == {"T1": 0.5, "T2": 1.0, "T3": pytest.approx(2 / 3), "T4": None}
    assert scores["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert scores["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert scores["n"] == 6


def test_the_rfs_time_is_scored_as_a_longer_time_meaning_a_lower_risk():
    time, event = [100, 400, 250, 900], [1, 0, 1, 0]
    days = [150.0, 800.0, 300.0, 200.0]
    # Comparable pairs: 100 (event) against 400, 250, 900; 250 (event) against 400, 900. Only 250 against 900 is
    # discordant (300 predicted days against 200).
    assert rfs_time_cindex(time, event, days) == pytest.approx(4 / 5)
    assert rfs_time_cindex(time, event, days) == concordance_index(time, event, [-d for d in days])


def test_predict_writes_each_mask_and_the_table_as_the_container_answers(bundles, synthetic_case, tmp_path):
    cases = tmp_path / "cases"
    for k, name in enumerate(("P1", "P2")):
        pet = synthetic_case.pet if k == 0 else sitk.Cast(synthetic_case.pet, sitk.sitkFloat32) * 0.9
        write_gc_input(synthetic_case.ct, pet, cases / name, EHR_2026, seed=k)
    assert predict.main(["--task", "2026", "--bundle", str(bundles[2026]), "--input", str(cases), "--output",
                         str(tmp_path / "out"), "--device", "cpu"]) == 0
    with (tmp_path / "out" / "predictions.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["PatientID", "t_stage", "n_stage", "rfs_days", "risk"]
    predictor = Hecktor2026Predictor.from_bundle(bundles[2026], device="cpu")
    for row in rows[1:]:
        answer = predictor.predict_case(read_case(cases / row[0], with_ehr=True))
        assert row[1:4] == [answer.t_stage, answer.n_stage, json.dumps(answer.rfs_days)]
        assert float(row[4]) == predictor.last_report.risk
        mask = sitk.ReadImage(str(tmp_path / "out" / f"{row[0]}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(answer.mask))
    assert [r[0] for r in rows[1:]] == ["P1", "P2"]


# ------------------------------------------------------------------------------------------------------- evaluate
TABLE = [  # PatientID, T-stage, N-stage, RFS, Relapse: sub-stages, an unknown T and an unknown N
    ["A", "T2", "N0", "100", "1"],
    ["B", "T4a", "N2b", "400", "0"],
    ["C", "T2", "Nx", "250", "1"],
    ["D", "", "N1", "900", "0"],
]
PREDICTED = {"A": ("T2", "N0", "150.0"), "B": ("T3", "N2", "800.0"), "C": ("T2", "N1", "300.0"),
             "D": ("T1", "N1", "200.0")}


def _label(without_nodes: bool = False) -> sitk.Image:
    image = blank_image((10, 10, 10), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), pixel=sitk.sitkUInt8)
    image[1:4, 1:4, 1:4] = 1  # a 27-voxel primary
    if not without_nodes:
        image[6:8, 6:8, 6:8] = 2  # an 8-voxel node
    return image


@pytest.fixture
def labelled(tmp_path) -> tuple[Path, Path]:
    """A 2026 training folder of four hand-made cases, and predictions: every mask right but case A's, which misses
    its node; the stages and times of PREDICTED."""
    folder = tmp_path / "DATA" / SPEC.training_folder
    preds = tmp_path / "preds"
    preds.mkdir()
    for pid, *_ in TABLE:
        (folder / pid).mkdir(parents=True)
        for suffix in ("__CT", "__PT"):
            sitk.WriteImage(blank_image((10, 10, 10), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0)),
                            str(folder / pid / f"{pid}{suffix}.nii.gz"))
        sitk.WriteImage(_label(), str(folder / pid / f"{pid}.nii.gz"))
        sitk.WriteImage(_label(without_nodes=pid == "A"), str(preds / f"{pid}.nii.gz"))
    with (folder / SPEC.training_csv).open("w", newline="") as handle:
        csv.writer(handle).writerows([["PatientID", "T-stage", "N-stage", "RFS", "Relapse"], *TABLE])
    with (preds / "predictions.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["PatientID", "t_stage", "n_stage", "rfs_days"],
                                      *([pid, *PREDICTED[pid]] for pid in PREDICTED)])
    return tmp_path / "DATA", preds


def test_evaluate_gives_the_challenges_scores_of_known_answers(labelled, tmp_path, capsys):
    data, preds = labelled
    assert evaluate.main(["--task", "2026", "--pred", str(preds), "--labels", str(data), "--json",
                          str(tmp_path / "scores.json")]) == 0
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["kind"] == "hecktor2026" and report["n_cases"] == 4
    assert report["dice_gtvp_mean"] == 1.0 and report["dice_gtvn_mean"] == 0.75  # A's node missed: 0, 1, 1, 1
    assert report["dice_mean"] == 0.875
    assert report["segmentation"]["gtvn_dsc_agg"] == pytest.approx(2 * 24 / (32 + 24))
    # T: A T2->T2, B T4a (T4)->T3, C T2->T2; D's T unknown. N: A N0->N0, B N2b (N2)->N2, D N1->N1; C's N unknown.
    assert report["t_stage"]["balanced_accuracy"] == 0.5
    assert report["t_stage"]["recall"] == {"T1": None, "T2": 1.0, "T3": None, "T4": 0.0}
    assert report["t_stage"]["confusion"] == [[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert report["n_stage"]["balanced_accuracy"] == 1.0
    assert report["t_stage_n_unknown_ignored"] == report["n_stage_n_unknown_ignored"] == 1
    assert report["rfs"] == {"cindex": pytest.approx(0.8), "n": 4, "events": 2, "n_unknown_ignored": 0}
    out = capsys.readouterr().out
    assert "| Dice, GTVp and GTVn averaged | 0.875 |" in out and "| T stage balanced accuracy | 0.500 |" in out
    assert "T stage: balanced accuracy 0.500 over 3 patient(s) (1 of unknown stage not scored)" in out
    assert "| T4 | 0 | 0 | 1 | 0 | 0.000 |" in out and "| C-index of the RFS time (4 patients, 2 relapses) | 0.800 |" in out


@pytest.mark.parametrize("row, message", [
    (["B", "T4a", "N2", "800.0"], "case B has t_stage 'T4a'; expected one of T1, T2, T3, T4"),
    (["B", "T3", "N2", "-1"], "case B has rfs_days '-1'; expected a finite number of days above 0"),
    (["E", "T3", "N2", "100"], "has a row for case E, which has no mask and no ground truth"),
])
def test_evaluate_refuses_a_bad_or_extra_row_in_one_line(labelled, row, message, capsys):
    data, preds = labelled
    with (preds / "predictions.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(row)
    if row[0] == "B":  # replace B's row rather than doubling it
        lines = (preds / "predictions.csv").read_text().splitlines()
        (preds / "predictions.csv").write_text("\n".join(line for line in lines if not line.startswith("B,") or
                                                         line == ",".join(row)) + "\n")
    assert evaluate.main(["--task", "2026", "--pred", str(preds), "--labels", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_the_demo_scores_the_containers_four_outputs(tmp_path):
    """training/demo_scores.py's HECKTOR 2026 scores: the stages and times the container wrote, against the recorded
    stages (an unknown one not scored) and the survival, the mask against the label."""
    import demo_scores

    held_out = []
    for pid, t_stage, n_stage, rfs, relapse, answer in [
            ("A", "T2", "N0", 100.0, 1, ("T2", "N0", 150.0)), ("B", "T3", "N2", 400.0, 0, ("T3", "N1", 800.0)),
            ("C", "T2", "N1", 250.0, 1, ("T3", "N1", 300.0)), ("D", None, "N2", 900.0, 0, ("T2", "N2", 200.0))]:
        folder = tmp_path / "outputs" / "task2026" / pid
        for path, value in zip(SPEC.extra_outputs, answer):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(json.dumps(value))
        (folder / SPEC.output).parent.mkdir(parents=True)
        sitk.WriteImage(_label(), str(folder / SPEC.output))
        (tmp_path / "held_out" / "labels").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_label(), str(tmp_path / "held_out" / "labels" / f"{pid}.nii.gz"))
        held_out.append({"patient_id": pid, "t_stage": t_stage, "n_stage": n_stage, "rfs_days": rfs,
                         "relapse": relapse})
    scores = demo_scores.score_hecktor2026(tmp_path, held_out)
    assert scores["t_stage_balanced_accuracy"] == 0.75  # T2: A right, C wrong; T3: B right; D unknown
    assert scores["t_stage_recall"] == {"T1": None, "T2": 0.5, "T3": 1.0, "T4": None}
    assert scores["n_stage_balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)  # N2: B wrong, D right
    assert scores["n_stage_confusion"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert scores["rfs_time_cindex"] == pytest.approx(0.8)  # as in the test of rfs_time_cindex above
    assert scores["hecktor2026_dice_mean"] == 1.0 and scores["hecktor2026_n"] == scores["hecktor2026_dice_n"] == 4
    assert held_out[2]["rfs_days_predicted"] == 300.0 and held_out[2]["t_stage_predicted"] == "T3"
    # Patients predicted in-process count in the stage and time scores, and are reported apart; not in the Dice.
    extra = [{"patient_id": "E", "t_stage": "T3", "n_stage": "N0", "rfs_days": 50.0, "relapse": 1,
              "t_stage_predicted": "T2", "n_stage_predicted": "N0", "rfs_days_predicted": 1000.0}]
    scores = demo_scores.score_hecktor2026(tmp_path, held_out, extra)
    assert scores["hecktor2026_n"] == 5 and scores["hecktor2026_dice_n"] == 4 and scores["t_stage_n"] == 4
    assert scores["t_stage_balanced_accuracy_containers"] == 0.75 and scores["t_stage_n_in_process"] == 1
    assert scores["t_stage_balanced_accuracy"] == pytest.approx((0.5 + 0.5) / 2)  # T3: B right, E wrong
    assert scores["rfs_time_cindex_containers"] == pytest.approx(0.8) and scores["rfs_time_cindex"] < 0.8
