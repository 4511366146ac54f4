"""Reading inputs, rejecting bad ones with one clear line, and writing outputs atomically."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor import outputs
from hecktor.case import REMEDIES, read_case
from hecktor.datasets import (ehr_from_row, list_training_cases, read_training_table, training_case_to_gc_input,
                              write_gc_input)
from hecktor.images import _quiet_stderr, find_single_image, read_image
from hecktor.outputs import remove_output, write_json_number, write_mask, write_text_atomic
from hecktor.records import read_ehr
from hecktor.tasks import get_task
from hecktor.errors import InputError
from helpers.phantoms import head_phantom


def _write(image, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _gc_folder(tmp_path, ehr={"Age": 60, "Gender": 1}):
    ct, pet, _, _ = head_phantom()
    return write_gc_input(ct, pet, tmp_path / "input", ehr=ehr, seed=3), ct, pet


def test_gc_input_round_trip_keeps_geometry_and_values(tmp_path):
    folder, ct, pet = _gc_folder(tmp_path)
    case = read_case(folder)
    assert case.ehr == {"Age": 60, "Gender": 1}
    assert case.ct_path.parent.name == "ct" and len(case.ct_path.stem) == 36  # a UUID
    for read, original in ((case.ct, ct), (case.pet, pet)):
        assert read.GetSize() == original.GetSize() and read.GetOrigin() == original.GetOrigin()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(original))
    # reproducible names from the seed
    again = write_gc_input(ct, pet, tmp_path / "again", seed=3)
    assert sorted(p.name for p in (again / "images" / "ct").iterdir()) == [case.ct_path.name]


def test_missing_ehr_is_a_warning_not_an_error(tmp_path):
    folder, _, _ = _gc_folder(tmp_path, ehr=None)
    case = read_case(folder)
    assert case.ehr is None and "absent" in case.warnings[0]
    assert read_case(folder, with_ehr=False).warnings == []


BREAKAGES = [
    ("CT", lambda f: [p.unlink() for p in (f / "images" / "ct").iterdir()], r"no image .* in .*images/ct"),
    ("PET", lambda f: __import__("shutil").rmtree(f / "images" / "pet"), r"input folder not found: .*images/pet"),
    ("CT", lambda f: (f / "images" / "ct" / "second.nii.gz").write_bytes(
        next((f / "images" / "ct").iterdir()).read_bytes()), r"exactly one image in .*ct, found 2"),
    ("PET", lambda f: [p.write_bytes(b"not an image") for p in (f / "images" / "pet").iterdir()], r"cannot read PET"),
    ("ehr.json", lambda f: (f / "ehr.json").write_text("{Age: 5"), r"ehr.json is not valid JSON"),
    ("ehr.json", lambda f: (f / "ehr.json").write_text("[1, 2]"), r"must hold a JSON object, got list"),
    ("ehr.json", lambda f: (f / "ehr.json").write_text("null"), r"must hold a JSON object, got null"),
    ("ehr.json", lambda f: (f / "ehr.json").write_text("[" * 100000 + "]" * 100000), r"nested too deeply"),
    ("ehr.json", lambda f: (f / "ehr.json").write_text('{"Age": ' + "7" * 5000 + "}"), r"is not valid JSON"),
]


@pytest.mark.parametrize("dropped, breakage, message", BREAKAGES)
def test_bad_input_folders_give_one_line_errors_when_strict(tmp_path, dropped, breakage, message):
    folder, _, _ = _gc_folder(tmp_path)
    breakage(folder)
    with pytest.raises(InputError, match=message) as error:
        read_case(folder, strict=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("dropped, breakage, message", BREAKAGES)
def test_by_default_an_unusable_input_is_dropped_with_one_warning(tmp_path, dropped, breakage, message):
    folder, ct, pet = _gc_folder(tmp_path)
    breakage(folder)
    case = read_case(folder)
    assert not case.strict
    assert [k for k in ("CT", "PET", "ehr.json") if getattr(case, {"ehr.json": "ehr"}.get(k, k.lower())) is None] \
        == [dropped]
    assert list(case.problems) == [dropped] and re.search(message, case.problems[dropped])
    (line,) = [w for w in case.warnings if dropped in w]
    assert line.startswith(f"{dropped} unusable (") and line.endswith(REMEDIES[dropped])
    assert "\n" not in line


def test_pets_that_cannot_be_used_are_dropped_and_named(tmp_path):
    folder, ct, pet = _gc_folder(tmp_path)
    (pet_path,) = (folder / "images" / "pet").iterdir()
    zero = pet * 0
    constant = zero + 2.5
    all_nan = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(pet).shape, np.nan, np.float32))
    all_nan.CopyInformation(pet)
    far = sitk.Image(pet)
    far.SetOrigin((0.0, 0.0, 5000.0))
    for image, message in ((zero, "PET is empty: every voxel equals 0"), (constant, "every voxel equals 2.5"),
                           (all_nan, "PET holds no finite voxel"), (far, "PET and CT do not overlap")):
        sitk.WriteImage(image, str(pet_path))
        case = read_case(folder)
        assert case.pet is None and case.ct is not None and message in case.problems["PET"]
        with pytest.raises(InputError, match=message):
            read_case(folder, strict=True)
    # an all-NaN CT: dropped too (a predictor that needs it raises the problem)
    sitk.WriteImage(pet, str(pet_path))
    (ct_path,) = (folder / "images" / "ct").iterdir()
    nan_ct = sitk.Cast(ct, sitk.sitkFloat32) * float("nan")
    sitk.WriteImage(nan_ct, str(ct_path))
    case = read_case(folder)
    assert case.ct is None and case.pet is not None and "CT holds no finite voxel" in case.problems["CT"]


def test_2d_and_flat_images_are_refused(tmp_path):
    flat = sitk.Image([1, 1, 1], sitk.sitkFloat32)
    with pytest.raises(InputError, match=r"not a 3-D volume \(size 1x1x1\)"):
        read_image(_write(flat, tmp_path / "flat.mha"), "CT")
    plane = sitk.Image([16, 16], sitk.sitkInt16)
    with pytest.raises(InputError, match=r"not a 3-D volume \(size 16x16\)"):
        read_image(_write(plane, tmp_path / "plane.mha"), "CT")


def test_write_mask_is_compressed_uint8_and_leaves_no_temporary(tmp_path):
    ct, _, label, _ = head_phantom()
    target = tmp_path / "out" / get_task(1).output
    write_mask(sitk.Cast(label, sitk.sitkFloat32), target)
    written = sitk.ReadImage(str(target))
    assert written.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(label))
    assert os.listdir(target.parent) == ["output.mha"]
    assert target.stat().st_size < label.GetNumberOfPixels() // 4  # compressed


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", crash)
    ct, _, label, _ = head_phantom()
    with pytest.raises(RuntimeError):
        write_mask(label, tmp_path / "output.mha")
    assert list(tmp_path.iterdir()) == []


def test_write_json_number_is_one_bare_number(tmp_path):
    path = write_json_number(np.float32(-0.396), tmp_path / "rfs.json")
    assert json.loads(path.read_text()) == pytest.approx(-0.396, abs=1e-6)
    assert not path.read_text().startswith("{")
    with pytest.raises(ValueError, match="non-finite"):
        write_json_number(float("nan"), tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()


def _training_root(tmp_path, survival="120.5,1"):
    ct, pet, label, _ = head_phantom()
    for task in (1, 2):
        folder = tmp_path / get_task(task).training_folder
        for pid in ("CHUM-001", "MDA-002"):
            _write(ct, folder / pid / f"{pid}__CT.nii.gz")
            _write(pet, folder / pid / f"{pid}__PT.nii.gz")
            if task == 1:
                _write(label, folder / pid / f"{pid}.nii.gz")
    header = "PatientID,CenterID,Age,Gender,Tobacco Consumption,Alcohol Consumption,Performance Status,Treatment,M-stage,HPV Status"
    rows = ["CHUM-001,1,56,1,,0,1,1,M0,1", "MDA-002,5,,0,1,,0,0,Mx,"]
    (tmp_path / "Task 1" / get_task(1).training_csv).write_text("\n".join([header] + rows) + "\n")
    (tmp_path / "Task 2" / get_task(2).training_csv).write_text(
        "\n".join([header + ",RFS,Relapse"] + [r + "," + survival for r in rows]) + "\n")
    return tmp_path


def test_training_layout_is_read(tmp_path):
    root = _training_root(tmp_path)
    cases = list_training_cases(root, 1)
    assert [c.patient_id for c in cases] == ["CHUM-001", "MDA-002"]
    ct, pet, label = cases[0].read()
    assert label is not None and label.GetSize() == ct.GetSize()
    rows = read_training_table(root, 2)
    assert rows[1]["Age"] is None and rows[1]["M-stage"] == "Mx"
    assert rows[0]["RFS"] == 120.5 and rows[0]["Relapse"] == 1
    assert ehr_from_row(rows[0]) == {"CenterID": 1, "Age": 56, "Gender": 1, "Tobacco Consumption": None,
                                        "Alcohol Consumption": 0, "Performance Status": 1, "Treatment": 1,
                                        "M-stage": "M0"}
    out = training_case_to_gc_input(list_training_cases(root, 2)[0], rows[0], tmp_path / "gc")
    assert read_case(out).ehr["Age"] == 56


@pytest.mark.parametrize("survival, message", [
    ("abc,1", "line 2 .CHUM-001.: RFS 'abc' is not a finite number of days > 0"),
    ("nan,1", "RFS 'nan' is not a finite number"),
    ("inf,0", "RFS 'inf' is not a finite number"),
    ("-3,0", "RFS '-3' is not a finite number of days > 0"),
    ("120,0.5", "line 2 .CHUM-001.: Relapse '0.5' is not exactly 0 or 1"),
    ("120,", "RFS and Relapse are required"),
])
def test_outcomes_are_finite_and_relapse_exactly_0_or_1(tmp_path, survival, message):
    root = _training_root(tmp_path, survival=survival)
    with pytest.raises(InputError, match=message):
        read_training_table(root, 2)


def test_a_patient_listed_twice_is_refused_naming_both_lines(tmp_path):
    root = _training_root(tmp_path)
    table = root / "Task 2" / get_task(2).training_csv
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(InputError, match="line 4: patient CHUM-001 is listed twice .lines 2 and 4.; keep one row"):
        read_training_table(root, 2)


def test_bad_training_tables(tmp_path):
    root = _training_root(tmp_path)
    (root / "Task 1" / "CHUM-001" / "CHUM-001.nii.gz").unlink()
    with pytest.raises(InputError, match="case CHUM-001: label file missing"):
        list_training_cases(root, 1)
    with pytest.raises(InputError, match="HECKTOR folder not found"):
        list_training_cases(tmp_path / "nowhere", 1)


# ------------------------------------------------------------------------------------------- hostile files


def test_upper_case_suffixes_are_read_without_noise_on_stderr(tmp_path, capfd):
    ct, pet, _, _ = head_phantom()
    for name, image in (("ct.MHA", ct), ("pet.NII.GZ", pet), ("odd.Nii.Gz", pet)):
        lower = tmp_path / name.lower()
        sitk.WriteImage(image, str(lower))
        lower.rename(tmp_path / name)
        warnings: list[str] = []
        read = read_image(tmp_path / name, "CT", warnings)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))
        assert warnings == []
    (tmp_path / "one").mkdir()
    (tmp_path / "ct.MHA").rename(tmp_path / "one" / "X.MHA")
    assert find_single_image(tmp_path / "one").name == "X.MHA"
    assert capfd.readouterr().err == ""  # NIfTI prints "mixed case extension" to fd 2 when given such a name


def test_4d_images_with_one_frame_are_read_as_3d_and_several_frames_refused(tmp_path):
    _, pet, _, _ = head_phantom()
    warnings: list[str] = []
    read = read_image(_write(sitk.JoinSeries([pet]), tmp_path / "one.mha"), "PET", warnings)
    assert read.GetDimension() == 3 and read.GetSize() == pet.GetSize() and read.GetOrigin() == pet.GetOrigin()
    assert warnings == ["PET one.mha is 4-D with a single frame: read as its 3-D volume"]
    with pytest.raises(InputError, match=r"not a 3-D volume \(size 40x40x36x2\)"):
        read_image(_write(sitk.JoinSeries([pet, pet]), tmp_path / "two.mha"), "PET")


def test_a_tiff_is_read_with_a_warning_that_its_geometry_is_lost(tmp_path):
    ct, _, _, _ = head_phantom()
    warnings: list[str] = []
    read = read_image(_write(sitk.Cast(ct, sitk.sitkInt16), tmp_path / "ct.tif"), "CT", warnings)
    assert read.GetSize() == ct.GetSize() and read.GetOrigin() != ct.GetOrigin()
    assert len(warnings) == 1 and "TIFF file, which stores no origin or direction" in warnings[0]


EHR = {"Age": 56, "Gender": 1, "Name": "Müller"}


@pytest.mark.parametrize("encoding, data, note", [
    ("utf-8", json.dumps(EHR, ensure_ascii=False).encode(), None),
    ("utf-8-sig", json.dumps(EHR).encode("utf-8-sig"), "UTF-8 with a byte-order mark"),
    ("utf-16", json.dumps(EHR).encode("utf-16"), "UTF-16"),
    ("utf-16-le", json.dumps(EHR).encode("utf-16-le"), "UTF-16 (little-endian, no byte-order mark)"),
    ("utf-16-be", json.dumps(EHR).encode("utf-16-be"), "UTF-16 (big-endian, no byte-order mark)"),
    ("utf-32", json.dumps(EHR).encode("utf-32"), "UTF-32"),
    ("latin-1", json.dumps(EHR, ensure_ascii=False).encode("latin-1"), "Latin-1"),
])
def test_ehr_in_any_unicode_encoding_or_latin1_is_decoded_with_a_warning(tmp_path, encoding, data, note):
    (tmp_path / "ehr.json").write_bytes(data)
    record, warnings = read_ehr(tmp_path / "ehr.json")
    assert record == EHR
    assert warnings == ([] if note is None else [f"ehr.json is {note} text, not UTF-8: decoded as such"])


# ----------------------------------------------------------------------------------------------- outputs


def test_outputs_are_readable_by_others_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        path = write_text_atomic("1.5", tmp_path / "rfs.json")
        mask = write_mask(head_phantom()[2], tmp_path / "deep" / "output.mha")
    finally:
        os.umask(old)
    for written in (path, mask):
        mode = written.stat().st_mode & 0o777
        assert mode & 0o644 == 0o644 and not mode & 0o022, oct(mode)
    old = os.umask(0o022)
    try:
        assert write_text_atomic("2", tmp_path / "other.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_an_existing_output_is_replaced_in_one_step(tmp_path):
    target = tmp_path / "rfs.json"
    target.write_text("stale")
    inode = target.stat().st_ino
    write_json_number(0.25, target)
    assert target.read_text() == "0.25" and target.stat().st_ino != inode  # a rename, not a rewrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rfs.json"]
    assert remove_output(target) and not target.exists() and not remove_output(target)


def test_unwritable_output_locations_are_input_errors(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(InputError, match=r"cannot write .*a-file/rfs.json: .*the output folder must be a writable"):
        write_json_number(1.0, a_file / "rfs.json")
    (tmp_path / "output.mha").mkdir()  # a folder where the file goes
    with pytest.raises(InputError, match=r"cannot write .*output.mha: Is a directory"):
        write_mask(head_phantom()[2], tmp_path / "output.mha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "output.mha"]  # no temporary left

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="Permission denied"):
        write_text_atomic("1", tmp_path / "ro" / "x.json")


def test_what_c_libraries_print_while_reading_is_captured_not_sent_to_stderr(capfd):
    with _quiet_stderr() as printed:
        os.write(2, b"** nifti_image_read: junk\n")
    assert printed == ["** nifti_image_read: junk"] and capfd.readouterr().err == ""


# ------------------------------------------------------------------------------- the platform's files as they are
def _gc_case(tmp_path, ehr=None):
    ct, pet, _, _ = head_phantom()
    return write_gc_input(ct, pet, tmp_path / "in", ehr)


def test_the_organisers_trailing_comma_is_read_with_one_warning_as_its_strict_twin(tmp_path):
    from helpers.hostile_inputs import ORGANISERS_SAMPLE_EHR

    folder = _gc_case(tmp_path)
    (folder / "ehr.json").write_text(ORGANISERS_SAMPLE_EHR)
    case = read_case(folder, strict=True)
    strict_twin = json.loads(ORGANISERS_SAMPLE_EHR.replace(",\n}", "\n}"))
    assert case.ehr == strict_twin and case.ehr["HPV Status"] == 0 and case.problems == {}
    assert [w for w in case.warnings if "trailing comma" in w] == [
        "ehr.json has 1 trailing comma(s) before a closing brace or bracket, which strict JSON refuses (the "
        "organisers' own sample is written so): read without them"]


@pytest.mark.parametrize("text, expected, removed", [
    ('{"a": [1, 2,],}', '{"a": [1, 2]}', 2),
    ('{"a": "x,}", "b": 1}', '{"a": "x,}", "b": 1}', 0),  # inside a string: kept
    ('{"a": "q\\\\", "b": [1 ,\n ]}', '{"a": "q\\\\", "b": [1 \n ]}', 1),  # an escaped backslash ends the string
])
def test_trailing_commas_are_removed_outside_strings_only(text, expected, removed):
    from hecktor.records import without_trailing_commas

    assert without_trailing_commas(text) == (expected, removed)


def test_a_record_that_is_broken_otherwise_is_still_refused(tmp_path):
    folder = _gc_case(tmp_path)
    (folder / "ehr.json").write_text('{"Age": 58,, }')
    with pytest.raises(InputError, match="is not valid JSON"):
        read_case(folder, strict=True)


def _manifest(folder, ct="images/ct", pet="images/pet", ehr="ehr.json"):
    from helpers.paths import REPO

    sample = REPO.parent / "shared" / "data" / "grand-challenge-2026" / "inputs.json"
    items = json.loads(sample.read_text()) if sample.is_file() else [
        {"socket": {"slug": slug, "relative_path": ""}} for slug in ("ct-image", "pet-image", "electronic-health-record")]
    for item, path in zip(items, (ct, pet, ehr)):
        item["socket"]["relative_path"] = path
    items.append({"socket": {"slug": "rt-dose", "relative_path": "images/rt-dose", "is_image_kind": True},
                  "image": {"name": "dose.mha"}, "value": None})  # a socket we do not read: ignored
    (folder / "inputs.json").write_text(json.dumps(items))


def test_the_socket_manifest_says_where_each_input_lies(tmp_path):
    folder = _gc_case(tmp_path, {"Age": 61})
    (folder / "images" / "ct").rename(folder / "images" / "ct-scan")
    (folder / "ehr.json").rename(folder / "record.json")
    _manifest(folder, ct="images/ct-scan", ehr="record.json")
    case = read_case(folder, strict=True)
    assert case.ct_path.parent.name == "ct-scan" and case.ehr == {"Age": 61} and case.warnings == []


@pytest.mark.parametrize("manifest, message", [
    ("[{", "inputs.json is not usable (Expecting property name"),
    ('{"socket": 1}', "a list of sockets is expected, got dict"),
    ('[{"socket": {"slug": "ct-image", "relative_path": "images/elsewhere"}}]', "names images/elsewhere, which is not"),
    ('[{"socket": {"slug": "ct-image", "relative_path": "../outside"}}]', "has no usable relative_path"),
    ('[{"value": 3}]', "an item without a socket slug"),
])
def test_a_manifest_that_cannot_be_used_is_one_warning_and_the_folder_layout(tmp_path, manifest, message):
    folder = _gc_case(tmp_path, {"Age": 61})
    (folder / "inputs.json").write_text(manifest)
    case = read_case(folder, strict=True)  # a manifest is never a reason to fail a case
    assert case.ct is not None and case.pet is not None and case.ehr == {"Age": 61}
    (line,) = case.warnings
    assert message in line and line.endswith("the inputs are read from the folder layout")
