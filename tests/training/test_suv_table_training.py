"""Exact SUV in training (``--suv-table``): the preprocessing cache is keyed by the factor a PET is read with, the
data check every trainer runs first lists the PETs left to the Bq/ml heuristic in one warning (``hecktor-check-data
--suv-table`` the same), and each trainer hands its table to that check and to the cases it reads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.datasets import TrainingCase
from hecktor.errors import InputError
from hecktor.plan import BoxPlan
from hecktor.suv_table import SuvTable
from hecktor.training import crossval
from hecktor.training.cache import PreprocessingCache, source_fingerprint
from hecktor.training.check_data import check_training_data, main as check_data_main

FACTOR = 70.0 * 1000.0 / 2.8e8  # 2.5e-4: a 70 kg patient, 280 MBq at scan time
SUV_COLUMNS = ["pid", "units", "patient_weight_kg", "dose_for_suv_bq", "bqml_to_suvbw_factor"]


def suv_table(path: Path, pids: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUV_COLUMNS)
        writer.writerows([[pid, "BQML", "70.0", "2.8e8", repr(FACTOR)] for pid in pids])
    return path


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((4.0, 4.0, 4.0))
    return image


def task2_folder(root: Path, bqml: tuple[str, ...]) -> Path:
    """Four tiny Task 2 cases (a body of water in air, uptake 1 SUV, a hot spot of 8); ``bqml``'s PETs are stored in
    Bq/ml (SUV / FACTOR)."""
    folder = root / "DATA" / "Task 2"
    z, y, x = np.mgrid[:16, :16, :16]
    body = (y - 8) ** 2 + (x - 8) ** 2 < 36
    ct = np.where(body, 20.0, -1000.0)
    suv = np.where(body, 1.0, 0.05) + 7.0 * ((z - 8) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 < 4)
    pids = ["CHUP-014", "CHUP-031", "MDA-300", "MDA-301"]
    for pid in pids:
        (folder / pid).mkdir(parents=True)
        sitk.WriteImage(_image(ct), str(folder / pid / f"{pid}__CT.nii.gz"))
        sitk.WriteImage(_image(suv / FACTOR if pid in bqml else suv), str(folder / pid / f"{pid}__PT.nii.gz"))
    with (folder / "HECKTOR_2025_Training_Task_2.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "CenterID", "Age", "Gender", "Tobacco Consumption", "Alcohol Consumption",
                         "Performance Status", "Treatment", "M-stage", "HPV Status", "RFS", "Relapse"])
        writer.writerows([[pid, 1, 60, 1, 0, 0, 0, 1, "M0", 1, 400 + 100 * k, k % 2] for k, pid in enumerate(pids)])
    return root / "DATA"


def bqml_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "look like Bq/ml" in line or "converts it from Bq/ml" in line]


def test_the_cache_key_holds_the_factor_a_pet_is_read_with(tmp_path):
    ct, pet = tmp_path / "P__CT.nii.gz", tmp_path / "P__PT.nii.gz"
    ct.write_bytes(b"ct")
    pet.write_bytes(b"pet")
    plain, exact = TrainingCase("P", ct, pet, None), TrainingCase("P", ct, pet, None, FACTOR)
    assert source_fingerprint(exact) == source_fingerprint(plain) + [["suv_factor", FACTOR]]
    calls = []

    def preprocess(case, plan):
        calls.append(case.suv_factor)
        return {"image": np.full((1, 2), case.suv_factor or 1.0, dtype=np.float32)}, {}

    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), preprocess)
    cache.prepare([plain])
    assert cache.is_current(plain) and not cache.is_current(exact)  # the heuristic's entry never passes for exact
    assert cache.get(exact).arrays["image"][0, 0] == np.float32(FACTOR)
    assert cache.is_current(exact) and not cache.is_current(plain)
    assert cache.get(exact).arrays["image"][0, 0] == np.float32(FACTOR) and calls == [None, FACTOR]  # reused


def test_the_trainers_data_check_lists_the_unconverted_bqml_pets_in_one_warning(tmp_path):
    data = task2_folder(tmp_path, bqml=("CHUP-014", "MDA-300", "MDA-301"))
    lines: list[str] = []
    check_training_data(2, data, echo=lines.append)
    (line,) = bqml_lines(lines)
    assert line == (f"warning: {data / 'Task 2'}: 3 training PET(s) look like Bq/ml and have no factor (no conversion "
                    "table given): CHUP-014, MDA-300, MDA-301; training divides each by its body's median uptake (an "
                    "approximate SUV). For exact SUV give the organisers' table: --suv-table "
                    "suv_conversion_tags.csv")
    table = suv_table(tmp_path / "suv.csv", ["CHUP-014", "MDA-300"])
    lines.clear()
    check_training_data(2, data, echo=lines.append, suv_table=table)
    (line,) = bqml_lines(lines)
    assert f"1 training PET(s) look like Bq/ml and have no factor with units BQML in {table}: MDA-301;" in line
    lines.clear()
    check_training_data(2, data, echo=lines.append, suv_table=suv_table(table, ["CHUP-014", "MDA-300", "MDA-301"]))
    assert bqml_lines(lines) == [] and lines[-1].startswith(f"data check of {data / 'Task 2'}: 0 error(s), ")


def test_check_data_converts_the_listed_pets_and_doubts_a_row_whose_pet_is_in_suv(tmp_path, capsys):
    data = task2_folder(tmp_path, bqml=("MDA-300",))
    table = suv_table(tmp_path / "suv.csv", ["MDA-300", "CHUP-031"])  # CHUP-031's PET is in SUV already
    assert check_data_main([str(data), "--task", "2", "--quiet", "--suv-table", str(table)]) == 0
    (line,) = bqml_lines(capsys.readouterr().out.splitlines())
    assert line.startswith("warning: ") and line.split(": ")[1].endswith("CHUP-031/CHUP-031__PT.nii.gz")
    assert "suv.csv converts it from Bq/ml (factor 0.00025), but the body's median uptake is 1 as stored and " \
           "0.00025 converted (about 1 in SUV): check the patient's row" in line
    (table.parent / "bad.csv").write_text("pid,units,patient_weight_kg,dose_for_suv_bq,bqml_to_suvbw_factor\n"
                                          "MDA-300,BQML,70,2.8e8,0.0003\n")
    assert check_data_main([str(data), "--quiet", "--suv-table", str(table.parent / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.csv line 2 (MDA-300): bqml_to_suvbw_factor 0.0003 disagrees" in err


class Stop(Exception):
    """Raised by the stand-in data check: the trainer gets no further."""


@pytest.mark.parametrize("script", ["train_prognosis", "train_hpv"])
def test_the_task_2_and_3_trainers_hand_their_table_to_the_data_check(script, tmp_path, monkeypatch):
    import importlib

    seen = {}

    def check(task, data, csv, *, images, echo, suv_table):
        seen.update(task=task, images=images, table=suv_table)
        raise Stop

    monkeypatch.setattr(crossval, "check_training_data", check)
    data = task2_folder(tmp_path, bqml=())
    table = suv_table(tmp_path / "suv.csv", ["MDA-300"])
    trainer = importlib.import_module(script)
    with pytest.raises(Stop):
        trainer.main(["--mode", "fusion", "--data", str(data), "--out", str(tmp_path / "run"), "--suv-table",
                      str(table), "--no-progress"])
    assert seen["images"] and isinstance(seen["table"], SuvTable) and seen["table"].factor("MDA-300") == FACTOR
    bad = tmp_path / "bad.csv"
    bad.write_text("pid,units,patient_weight_kg,dose_for_suv_bq,bqml_to_suvbw_factor\nA,BQML,70,0,\n")
    assert trainer.main(["--mode", "fusion", "--data", str(data), "--out", str(tmp_path / "run"), "--suv-table",
                         str(bad)]) == 2
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_task_1_trainer_reads_its_cases_and_checks_them_with_the_table(tmp_path, monkeypatch):
    from hecktor.training.segmentation import trainer as seg_trainer

    seen = {}

    def check(task, data, *, echo, suv_table):
        seen["table"] = suv_table
        raise Stop

    monkeypatch.setattr(seg_trainer, "check_training_data", check)
    table = suv_table(tmp_path / "suv.csv", ["MDA-300"])
    config = seg_trainer.TrainingConfig(data_root=str(tmp_path), run_dir=str(tmp_path / "run"), suv_table=str(table))
    with pytest.raises(Stop):
        seg_trainer.train(config)
    assert seen["table"] == str(table)

    def listing(root, task, suv_table):
        seen["listed"] = (root, task, suv_table)
        raise Stop

    monkeypatch.setattr(seg_trainer, "list_training_cases", listing)
    with pytest.raises(Stop):
        seg_trainer.SegmentationTrainer(config)
    assert seen["listed"][:2] == (str(tmp_path), 1) and seen["listed"][2].factor("MDA-300") == FACTOR
    (tmp_path / "bad.csv").write_text("pid,units,patient_weight_kg,dose_for_suv_bq,bqml_to_suvbw_factor\nA,BQML,,,\n")
    config.suv_table = str(tmp_path / "bad.csv")
    with pytest.raises(InputError, match=r"bad.csv line 2 \(A\): units BQML without a factor"):
        seg_trainer.SegmentationTrainer(config)
