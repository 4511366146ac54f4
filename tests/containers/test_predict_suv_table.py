"""``hecktor-predict --suv-table``: a HECKTOR-layout PET stored in Bq/ml and listed in the organisers' table is read as
exact SUV (value x factor) before the predictor's screening, so it is predicted as its clean twin, without the Bq/ml
heuristic's warning; a Grand-Challenge layout refuses the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor import predict as predict_cli
from hecktor.datasets import list_training_cases, training_case_to_gc_input
from hecktor.errors import InputError
from hecktor.suv_table import read_suv_table
from hecktor.synthetic import generate_cohort
from helpers.containers import bundles

__all__ = ["bundles"]

FACTOR = 81.0 * 1000.0 / 3.12e8  # an 81 kg patient, 312 MBq at scan time


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The clean Task 1 folder of two synthetic cases, its twin whose first PET is stored in Bq/ml, and the table."""
    root = tmp_path_factory.mktemp("suv")
    clean = generate_cohort(root / "clean", cases=2, seed=4, size="small").out_dir / "Task 1"
    bqml = Path(shutil.copytree(clean, root / "bqml" / "Task 1"))
    pid = sorted(p.name for p in bqml.iterdir() if p.is_dir())[0]
    pet_path = bqml / pid / f"{pid}__PT.nii.gz"
    pet = sitk.ReadImage(str(pet_path))
    sitk.WriteImage(sitk.Cast(pet, sitk.sitkFloat32) / FACTOR, str(pet_path), True)
    table = root / "suv_conversion_tags.csv"
    table.write_text("pid,units,patient_weight_kg,dose_for_suv_bq,bqml_to_suvbw_factor\n"
                     f"{pid},BQML,81.0,3.12e8,{FACTOR!r}\nNOT-HERE,GML,,,\n")
    return {"clean": clean, "bqml": bqml, "table": table, "pid": pid}


def test_the_listed_pet_is_read_as_value_times_factor(folders):
    inputs = predict_cli.find_inputs(folders["bqml"], 1)
    inputs.suv_table = read_suv_table(folders["table"])
    pid = folders["pid"]
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["bqml"] / pid / f"{pid}__PT.nii.gz")))
    clean = sitk.GetArrayFromImage(sitk.ReadImage(str(folders["clean"] / pid / f"{pid}__PT.nii.gz")))
    read = sitk.GetArrayFromImage(inputs.read(pid, with_ehr=False).pet)
    np.testing.assert_allclose(read, stored.astype(np.float64) * FACTOR, rtol=1e-6)
    np.testing.assert_allclose(read, clean, rtol=1e-6, atol=1e-7)


def test_hecktor_predict_with_the_table_answers_the_bqml_case_as_its_clean_twin(folders, bundles, tmp_path, capsys):
    pid = folders["pid"]
    masks = {}
    for name, source, extra in (("clean", folders["clean"], []),
                                ("exact", folders["bqml"], ["--suv-table", str(folders["table"])]),
                                ("heuristic", folders["bqml"], [])):
        status = predict_cli.main(["--task", "1", "--bundle", str(bundles[1]), "--input", str(source), "--output",
                                   str(tmp_path / name), "--device", "cpu", "--no-tta", *extra])
        assert status == 0
        masks[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / f"{pid}.nii.gz")))
        err = capsys.readouterr().err
        bqml_warnings = [line for line in err.splitlines() if "read as Bq/ml" in line]
        assert len(bqml_warnings) == (1 if name == "heuristic" else 0), err
    assert np.array_equal(masks["exact"], masks["clean"]) and masks["clean"].any()


def test_a_grand_challenge_layout_refuses_the_table(folders, bundles, tmp_path, capsys):
    case = list_training_cases(folders["clean"], 1)[0]
    training_case_to_gc_input(case, None, tmp_path / "gc" / "case-0")
    with pytest.raises(InputError, match="--suv-table converts the PETs of HECKTOR-layout case folders"):
        predict_cli.predict_folder(1, bundles[1], tmp_path / "gc", tmp_path / "out", suv_table=folders["table"])
    assert not (tmp_path / "out").exists()
    status = predict_cli.main(["--task", "1", "--bundle", str(bundles[1]), "--input", str(folders["clean"]),
                               "--output", str(tmp_path / "out"), "--suv-table", str(tmp_path / "absent.csv")])
    assert status == 2 and capsys.readouterr().err.strip() == f"error: SUV conversion table not found: " \
                                                               f"{tmp_path / 'absent.csv'}"
