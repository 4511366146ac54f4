"""``hecktor-predict`` and ``hecktor-evaluate`` on Task 3: the predictions of a tiny untrained ensemble
(helpers.predictors) on a synthetic cohort against the predictor called directly, balanced accuracy and AUC worked out
by hand, and the one-line errors of a bad predictions table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hecktor import evaluate as evaluate_cli
from hecktor import predict as predict_cli
from hecktor.datasets import ehr_from_row, list_training_cases, read_training_table
from hecktor.diagnosis import HPVPredictor
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.synthetic import generate_cohort
from hecktor.tasks import get_task
from helpers.predictors import build_hpv_predictor

SPEC = get_task(3)


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory) -> Path:
    return build_hpv_predictor("fusion").to_bundle(tmp_path_factory.mktemp("bundle") / "task3")


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "DATA", cases=30, seed=0, size="small").out_dir


def test_predict_and_evaluate_task3(fusion_bundle, cohort_dir, tmp_path, capsys):
    status = predict_cli.main(["--task", "3", "--bundle", str(fusion_bundle), "--input", str(cohort_dir),
                               "--output", str(tmp_path / "preds"), "--device", "cpu"])
    assert status == 0
    rows = list(csv.DictReader((tmp_path / "preds" / "predictions.csv").open()))
    assert list(rows[0]) == ["PatientID", "hpv_status", "probability"] and len(rows) == 30
    predictor = HPVPredictor.from_bundle(fusion_bundle, device="cpu")
    first = next(c for c in list_training_cases(cohort_dir, 3) if c.patient_id == rows[0]["PatientID"])
    ct, pet, _ = first.read()
    record = {r["PatientID"]: r for r in read_training_table(cohort_dir, 3)}[first.patient_id]
    assert float(rows[0]["probability"]) == pytest.approx(predictor.predict_probability(ct, pet, ehr_from_row(
        record, 3)), abs=1e-9)
    assert all(r["hpv_status"] == ("true" if float(r["probability"]) >= predictor.threshold else "false")
               for r in rows)

    capsys.readouterr()
    assert evaluate_cli.main(["--task", "3", "--pred", str(tmp_path / "preds" / "predictions.csv"), "--labels",
                              str(cohort_dir), "--json", str(tmp_path / "s.json")]) == 0
    report = json.loads((tmp_path / "s.json").read_text())
    truth = {r["PatientID"]: r["HPV Status"] for r in read_training_table(cohort_dir, 3)}
    known = sorted(pid for pid, v in truth.items() if v is not None)
    y = [int(truth[pid]) for pid in known]
    by_id = {r["PatientID"]: r for r in rows}
    assert report["balanced_accuracy"] == pytest.approx(
        balanced_accuracy(y, [by_id[pid]["hpv_status"] == "true" for pid in known]))
    assert report["auc"] == pytest.approx(roc_auc(y, [float(by_id[pid]["probability"]) for pid in known]))
    assert report["n"] == len(known) and report["n_unknown_ignored"] == 30 - len(known)
    assert "| balanced accuracy (hpv_status) |" in capsys.readouterr().out


def test_evaluate_task3_by_hand_and_its_errors(tmp_path, capsys):
    labels = tmp_path / "DATA" / "Task 3" / SPEC.training_csv
    labels.parent.mkdir(parents=True)
    labels.write_text("PatientID,HPV Status\nP1,1\nP2,1\nP3,0\nP4,0\nP5,\n")
    pred = tmp_path / "predictions.csv"
    pred.write_text("PatientID,hpv_status\nP1,true\nP2,false\nP3,false\nP4,false\nP5,true\n")
    # sensitivity 1/2, specificity 2/2 -> 0.75; P5's status is unknown: not scored; no probability: no AUC
    report = evaluate_cli.evaluate(3, pred, tmp_path / "DATA")
    assert (report["balanced_accuracy"], report["auc"], report["n"], report["n_unknown_ignored"]) == (0.75, None, 4, 1)
    assert (report["tp"], report["fn"], report["tn"], report["fp"]) == (1, 1, 2, 0)
    pred.write_text("PatientID,hpv_status,probability\nP1,true,0.9\nP2,false,0.3\nP3,false,0.3\nP4,false,0.1\n")
    assert evaluate_cli.evaluate(3, pred, labels)["auc"] == pytest.approx(0.875)
    for text, message in (("PatientID,hpv_status\nP1,true\nP2,false\nP3,false\n", "no prediction for case P4"),
                          ("PatientID,hpv_status\nP1,true\nP2,1\nP3,0\nP4,yes\n", "has hpv_status 'yes'"),
                          ("PatientID,hpv_status\nP1,true\nP2,true\nP3,false\nP4,false\nP9,true\n",
                           "prediction for case P9")):
        pred.write_text(text)
        capsys.readouterr()
        assert evaluate_cli.main(["--task", "3", "--pred", str(pred), "--labels", str(labels)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
