"""HECKTOR 2026's registry entry and its four outputs: the mask on the CT's grid, the T and N stage, the RFS time,
written all or none (hecktor.outputs.write_hecktor2026 through hecktor.runtime.write_outputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor import outputs
from hecktor.errors import InputError
from hecktor.hecktor2026 import Hecktor2026Answer
from hecktor.outputs import write_hecktor2026
from hecktor.runtime import remove_outputs, write_outputs
from hecktor.tasks import TASKS, get_task
from helpers.paths import REPO
from helpers.phantoms import DIRECTIONS, blank_image

SPEC = get_task(2026)
MASK, T_FILE, N_FILE, RFS_FILE = SPEC.outputs


def _mask(pixel=sitk.sitkUInt8) -> sitk.Image:
    """A 7 x 6 x 5 label map on an oblique grid of odd spacing, a GTVp block and a GTVn voxel."""
    image = blank_image((7, 6, 5), (0.9765625, 1.2, 3.27), (-12.25, 40.5, -600.125), DIRECTIONS["oblique"],
                        pixel=pixel)
    image[1:4, 1:3, 1:3] = 1
    image[5, 4, 3] = 2
    return image


def _answer(**changes) -> Hecktor2026Answer:
    return Hecktor2026Answer(**{"mask": _mask(), "t_stage": "T2", "n_stage": "N1", "rfs_days": 1234.5, **changes})


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_the_registry_entry_needs_no_special_case_in_its_consumers():
    assert get_task("2026") is get_task(2026) is get_task("hecktor2026") is TASKS[2026]
    assert [str(p) for p in SPEC.outputs] == ["images/head-neck-tumor-segmentation/output.mha", "t-stage.json",
                                             "n-stage.json", "rfs.json"]
    assert SPEC.limit_s == 1500.0 and SPEC.label == "HECKTOR 2026" and get_task(1).label == "HECKTOR 2025 Task 1"
    assert SPEC.ehr_keys == ("CenterID", "Age", "Gender", "Tobacco Consumption", "Alcohol Consumption",
                             "Performance Status", "Treatment", "HPV Status")
    assert SPEC.target_columns == ("T-stage", "N-stage", "RFS", "Relapse")
    assert get_task(1).outputs == (get_task(1).output,)
    shell = subprocess.run([sys.executable, "-m", "hecktor.tasks", "--shell"], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": str(REPO / "shared")}).stdout.splitlines()
    assert [line.split("\t")[:6] for line in shell][-1] == [
        "2026", "hecktor2026_container", "hecktor2026", "images/head-neck-tumor-segmentation/output.mha",
        "hecktor2026", "1500"]
    assert len(shell) == len(TASKS) and all(len(line.split("\t")) == 7 for line in shell)


def test_the_four_outputs_round_trip_on_the_masks_exact_grid(tmp_path):
    mask = _mask(sitk.sitkFloat32)  # a float label map is written as UInt8
    assert write_outputs(2026, _answer(mask=mask), tmp_path) == tmp_path / MASK
    assert _files(tmp_path) == sorted(str(p) for p in SPEC.outputs)
    written = sitk.ReadImage(str(tmp_path / MASK))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert written.GetSize() == mask.GetSize()
    for got, expected in ((written.GetSpacing(), mask.GetSpacing()), (written.GetOrigin(), mask.GetOrigin()),
                          (written.GetDirection(), mask.GetDirection())):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(mask).astype(np.uint8))
    assert np.bincount(sitk.GetArrayFromImage(written).ravel()).tolist() == [197, 12, 1]
    assert (tmp_path / T_FILE).read_text() == '"T2"' and json.loads((tmp_path / T_FILE).read_text()) == "T2"
    assert (tmp_path / N_FILE).read_text() == '"N1"'
    assert (tmp_path / RFS_FILE).read_text() == "1234.5"
    write_outputs(2026, _answer(t_stage="T4", n_stage="N3", rfs_days=np.float32(7)), tmp_path)  # replaced
    assert [(tmp_path / f).read_text() for f in (T_FILE, N_FILE, RFS_FILE)] == ['"T4"', '"N3"', "7.0"]
    assert _files(tmp_path) == sorted(str(p) for p in SPEC.outputs)  # no temporary left
    assert remove_outputs(2026, tmp_path) == [tmp_path / p for p in SPEC.outputs] and _files(tmp_path) == []


@pytest.mark.parametrize("changes, message", [
    ({"t_stage": "T4a"}, "t-stage.json: 'T4a' is not one of T1, T2, T3, T4"),
    ({"t_stage": "t2"}, "t-stage.json: 't2' is not one of T1, T2, T3, T4"),
    ({"t_stage": None}, "t-stage.json: None is not one of T1, T2, T3, T4"),
    ({"n_stage": "N2b"}, "n-stage.json: 'N2b' is not one of N0, N1, N2, N3"),
    ({"n_stage": 2}, "n-stage.json: 2 is not one of N0, N1, N2, N3"),
    ({"rfs_days": float("nan")}, "rfs.json: the RFS time must be a finite number of days above 0, got nan"),
    ({"rfs_days": float("inf")}, "rfs.json: the RFS time must be a finite number of days above 0, got inf"),
    ({"rfs_days": 0.0}, "rfs.json: the RFS time must be a finite number of days above 0, got 0.0"),
    ({"rfs_days": -30}, "rfs.json: the RFS time must be a finite number of days above 0, got -30"),
    ({"rfs_days": "900"}, "rfs.json: the RFS time must be a finite number of days above 0, got '900'"),
    ({"rfs_days": True}, "rfs.json: the RFS time must be a finite number of days above 0, got True"),
    ({"mask": _mask() * 3}, "output.mha: the mask holds labels [0, 3, 6], not only 0 (background), 1 (GTVp) and 2"),
    ({"mask": sitk.JoinSeries([_mask()] * 2)}, "output.mha: the mask must be a 3-D scalar image (2-D for a 2-D "
                                                "placeholder CT), got a 4-D image of 1 component(s) per voxel"),
    ({"mask": sitk.Compose(_mask(), _mask())}, "got a 3-D image of 2 component(s) per voxel"),
    ({"mask": np.zeros((5, 6, 7), np.uint8)}, "output.mha: the mask must be a 3-D scalar image (2-D for a 2-D "
                                              "placeholder CT), got ndarray"),
])
def test_a_bad_value_is_refused_before_anything_is_written(changes, message, tmp_path):
    with pytest.raises(ValueError) as refused:
        write_outputs(2026, _answer(**changes), tmp_path / "out")
    assert str(refused.value).startswith("refusing to write ") and message in str(refused.value), refused.value
    assert not (tmp_path / "out").exists()  # not even a folder


def test_a_failure_while_writing_leaves_the_earlier_outputs_untouched_and_no_temporary(tmp_path, monkeypatch):
    for path in SPEC.outputs:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(f"earlier {path.name}")

    def disk_full(*args, **kwargs):
        raise RuntimeError("No space left on device")

    monkeypatch.setattr(outputs.sitk, "WriteImage", disk_full)
    with pytest.raises(RuntimeError, match="No space left"):
        write_outputs(2026, _answer(), tmp_path)
    assert _files(tmp_path) == sorted(str(p) for p in SPEC.outputs)  # the four temporaries are gone
    assert all((tmp_path / p).read_text() == f"earlier {p.name}" for p in SPEC.outputs)  # none half-replaced


def test_a_rename_failing_midway_leaves_none_of_the_four(tmp_path, monkeypatch):
    """Two files renamed into place, the third refused: the two are removed again, and the earlier run's fourth
    with them, so no mix of two runs' answers can reach the platform."""
    (tmp_path / RFS_FILE).write_text("999.0")
    replace, calls = os.replace, []

    def third_fails(source, destination):
        calls.append(Path(destination).name)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied")
        replace(source, destination)

    monkeypatch.setattr(outputs.os, "replace", third_fails)
    with pytest.raises(InputError, match=r"cannot write .*n-stage.json: Permission denied"):
        write_hecktor2026(_answer(), *(tmp_path / p for p in SPEC.outputs))
    assert calls == ["output.mha", "t-stage.json", "n-stage.json"]
    assert _files(tmp_path) == []
