"""``hecktor-predict`` and ``hecktor-evaluate`` on Task 3: the predictions of a tiny untrained ensemble
(helpers.predictors) on a synthetic cohort against the predictor called directly, balanced accuracy and AUC worked out
by hand, and the one-line errors of a bad predictions table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
from sklearn.metrics import balanced_accuracy_score

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


@pytest.mark.parametrize("status, rate", [("1", "sensitivity"), ("0", "specificity")])
def test_evaluate_task3_of_one_class_reports_what_is_defined(tmp_path, capsys, status, rate):
    """Every patient of known status positive (or negative): the balanced accuracy is that class's recall (as
    scikit-learn's balanced_accuracy_score), the AUC and the absent class's rate undefined (null, n/a), one warning."""
    labels = tmp_path / SPEC.training_csv
    labels.write_text("PatientID,HPV Status\n" + "".join(f"P{i},{status}\n" for i in range(1, 5)) + "P5,\n")
    right, wrong = ("true", "false") if status == "1" else ("false", "true")
    pred = tmp_path / "predictions.csv"
    pred.write_text(f"PatientID,hpv_status,probability\nP1,{right},0.9\nP2,{wrong},0.3\nP3,{right},0.8\n"
                    f"P4,{right},0.6\nP5,true,0.7\n")
    capsys.readouterr()
    assert evaluate_cli.main(["--task", "3", "--pred", str(pred), "--labels", str(labels), "--json",
                              str(tmp_path / "s.json")]) == 0
    out, err = capsys.readouterr()
    present = "positive" if status == "1" else "negative"
    assert err.splitlines() == [f"warning: all 4 patients of known HPV Status are {present} in {labels}: the AUC is "
                                f"undefined (n/a) and the balanced accuracy is the {rate} alone"]
    report = json.loads((tmp_path / "s.json").read_text())
    y = [int(status)] * 4
    guess = [1 if g == "true" else 0 for g in (right, wrong, right, right)]
    with pytest.warns(UserWarning):  # scikit-learn's own warning: y_pred holds a class that y_true lacks
        expected = balanced_accuracy_score(y, guess)
    assert report["balanced_accuracy"] == pytest.approx(expected) == 0.75
    assert report["auc"] is None and report[rate] == 0.75
    assert report["specificity" if rate == "sensitivity" else "sensitivity"] is None
    assert (report["n"], report["n_unknown_ignored"]) == (4, 1)
    assert f"| AUC | n/a (all 4 patients of known HPV Status are {present}) |" in out
    assert "| balanced accuracy (hpv_status) | 0.750 |" in out


@pytest.mark.parametrize("table, message", [
    ("PatientID,HPV Status\nP1,1\nP2,0\nP2,1\n", " line 4: patient P2 is listed twice (lines 3 and 4); keep one row"),
    ("PatientID,HPV Status\nP1,1\nP2,nan\n", ": case P2 has HPV Status 'nan'; expected 0, 1 or empty"),
    ("PatientID,HPV Status\nP1,\nP2,\n", ": no patient of known HPV Status (every cell is empty); nothing to score"),
])
def test_evaluate_task3_labels_go_through_the_one_table_reader(tmp_path, capsys, table, message):
    labels = tmp_path / SPEC.training_csv
    labels.write_text(table)
    pred = tmp_path / "predictions.csv"
    pred.write_text("PatientID,hpv_status\nP1,true\nP2,false\n")
    capsys.readouterr()
    assert evaluate_cli.main(["--task", "3", "--pred", str(pred), "--labels", str(labels)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"error: {labels}{message}"], err


def test_predict_task3_without_a_pet_answers_from_the_ct_and_the_record(fusion_bundle, cohort_dir, tmp_path, capsys):
    """Task 3 answers a case whose PET is missing as the container does (dropped with its warning line), not as a
    failed case: the probability is the predictor's on the CT and the record alone."""
    pid = sorted(p.name for p in (cohort_dir / "Task 3").iterdir() if p.is_dir())[0]
    data = tmp_path / "Task 3"
    shutil.copytree(cohort_dir / "Task 3" / pid, data / pid)
    shutil.copy(cohort_dir / "Task 3" / SPEC.training_csv, data / SPEC.training_csv)
    pet = data / pid / f"{pid}__PT.nii.gz"
    pet.unlink()
    capsys.readouterr()
    assert predict_cli.main(["--task", "3", "--bundle", str(fusion_bundle), "--input", str(data), "--output",
                             str(tmp_path / "preds"), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: case {pid}: PET unusable (PET not found: {pet}): predicting without the PET" in err
    assert out.splitlines()[-1].startswith(f"done: 1 of 1 case(s) predicted (1 without an input: {pid} without PET)")
    row = next(csv.DictReader((tmp_path / "preds" / "predictions.csv").open()))
    record = {r["PatientID"]: r for r in read_training_table(cohort_dir, 3)}[pid]
    ct = sitk.ReadImage(str(data / pid / f"{pid}__CT.nii.gz"))
    expected = HPVPredictor.from_bundle(fusion_bundle, device="cpu").predict_probability(ct, None,
                                                                                         ehr_from_row(record, 3))
    assert float(row["probability"]) == pytest.approx(expected, abs=1e-12)
