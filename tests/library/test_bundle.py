"""Bundle export and verification."""

from __future__ import annotations

import json

import pytest
import torch

import hecktor
from hecktor.bundle import check_bundle_destination, load_bundle, sha256_of, verify_bundle, write_bundle
from hecktor.bundle import main as bundle_main
from hecktor.errors import BundleError, InputError
from hecktor.plan import RegionPlan, plan_digest


@pytest.fixture
def bundle_dir(tmp_path):
    layer = torch.nn.Linear(3, 2)
    return write_bundle(tmp_path / "bundle", task=1, plan=RegionPlan(), model={"network": "unet", "folds": ["fold_0.pt"]},
                        state_dicts={"fold_0.pt": layer.state_dict()}, json_files={"extra.json": {"a": 1}})


def test_round_trip(bundle_dir):
    bundle = load_bundle(bundle_dir, task=1)
    assert bundle.plan == RegionPlan() and bundle.model["network"] == "unet"
    state = bundle.load_state_dict("fold_0.pt")
    assert set(state) == {"weight", "bias"} and state["weight"].shape == (2, 3)
    assert bundle.load_json("extra.json") == {"a": 1}
    assert sorted(bundle.manifest["files"]) == ["extra.json", "fold_0.pt", "model.json", "plan.json"]


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda d: (d / "fold_0.pt").write_bytes(b"x" + (d / "fold_0.pt").read_bytes()), "SHA-256 mismatch"),
        (lambda d: (d / "fold_0.pt").unlink(), "bundle file missing"),
        (lambda d: (d / "fold_9.pt").write_bytes(b""), "not in its manifest: fold_9.pt"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json missing"),
        (lambda d: (d / "plan.json").write_text(RegionPlan(spacing_mm_xyz=(2.0, 2.0, 2.0)).to_json()), "SHA-256"),
    ],
)
def test_tampered_bundle_is_refused(bundle_dir, tamper, message):
    tamper(bundle_dir)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir, task=1)


def test_plan_digest_and_task_are_checked(bundle_dir):
    with pytest.raises(BundleError, match="Task 1 bundle, but Task 2"):
        load_bundle(bundle_dir, task=2)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["plan_digest"] = "0" * 16
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not the plan the models were trained with"):
        load_bundle(bundle_dir, task=1)


def test_bundle_folder_is_readable_by_others(bundle_dir):
    assert bundle_dir.stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------------------------- exports never delete
def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_holding_anything_but_a_bundle_is_refused_and_left_untouched(tmp_path):
    folder = tmp_path / "run"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "fold_0" / "checkpoint_best.pt").write_bytes(b"weights of days")
    before = _snapshot(folder)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="is not empty and holds no bundle .config.json, fold_0.; nothing was "
                                             "written"):
            write_bundle(folder, task=1, plan=RegionPlan(), model={"network": "unet", "folds": []},
                         overwrite=overwrite)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left beside it


def test_an_earlier_bundle_is_replaced_only_with_overwrite(bundle_dir, tmp_path):
    before = _snapshot(bundle_dir)
    with pytest.raises(InputError, match="already holds a bundle; pass --overwrite"):
        write_bundle(bundle_dir, task=1, plan=RegionPlan(), model={"network": "segresnet", "folds": []})
    assert _snapshot(bundle_dir) == before
    write_bundle(bundle_dir, task=1, plan=RegionPlan(), model={"network": "segresnet", "folds": []}, overwrite=True)
    assert load_bundle(bundle_dir, task=1).model["network"] == "segresnet"
    assert sorted(bundle_dir.iterdir()) == [bundle_dir / n for n in ("manifest.json", "model.json", "plan.json")]


def test_an_empty_folder_or_a_file_as_destination(tmp_path):
    (tmp_path / "empty").mkdir()
    write_bundle(tmp_path / "empty", task=1, plan=RegionPlan(), model={"network": "unet", "folds": []})
    assert load_bundle(tmp_path / "empty", task=1).model["network"] == "unet"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_bundle_destination(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------ manifest shapes: one line each
def _edited_manifest(folder, edit):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(edit(manifest)))


_NOT_A_MANIFEST = "is not a hecktor-bundle v1 manifest"


@pytest.mark.parametrize("edit, message", [
    (lambda m: [m], _NOT_A_MANIFEST),                                               # an array, not an object
    (lambda m: "hecktor-bundle", _NOT_A_MANIFEST),
    (lambda m: {**m, "version": True}, _NOT_A_MANIFEST),                             # true is not version 1
    (lambda m: {**m, "files": sorted(m["files"])}, "is malformed: its files is an array, not an object "
                                                  "{file name: SHA-256}"),
    (lambda m: {k: v for k, v in m.items() if k != "files"}, "is malformed: no 'files'"),
    (lambda m: {**m, "files": {**m["files"], "model.json": None}}, "is malformed: its entry for model.json is null, "
                                                                   "not a SHA-256 digest"),
    (lambda m: {**m, "files": {"../outside.pt": "0" * 64}}, "is malformed: its file name '../outside.pt' is not a "
                                                            "file inside the bundle"),
    (lambda m: {**m, "task": "1"}, 'is malformed: its task is "1" (a string), not a task number such as 1'),
    (lambda m: {**m, "task": True}, "is malformed: its task is true (a boolean), not a task number"),
    (lambda m: {k: v for k, v in m.items() if k != "task"}, "is malformed: no 'task'"),
    (lambda m: {**m, "plan_digest": 7}, "is malformed: its plan_digest is 7, not a digest string"),
])
def test_a_malformed_manifest_is_one_bundle_error(bundle_dir, edit, message):
    """Never an AttributeError or a KeyError, and never "a Task 1 bundle, but Task 1 was asked for"."""
    _edited_manifest(bundle_dir, edit)
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_dir, task=1)
    text = str(refused.value)
    assert text.startswith(str(bundle_dir / "manifest.json")) and message in text and "\n" not in text, text
    assert text.endswith("re-export it with the training scripts (docs/reference/bundle-format.md)")


def test_a_plan_or_model_file_that_is_no_object_is_one_bundle_error(bundle_dir):
    for name, message in (("model.json", "model.json holds an array, not a JSON object; re-export"),
                          ("plan.json", "plan.json: holds an array, not a JSON object; re-export")):
        (bundle_dir / name).write_text("[1, 2]")
        _edited_manifest(bundle_dir, lambda m: {**m, "files": {**m["files"], name: sha256_of(bundle_dir / name)},
                                                "plan_digest": plan_digest([1, 2]) if name == "plan.json"
                                                else m["plan_digest"]})
        with pytest.raises(BundleError, match=message):
            load_bundle(bundle_dir, task=1)


def test_verify_command_one_line_and_exit_status(bundle_dir, capsys):
    assert bundle_main(["verify", str(bundle_dir), "--task", "1"]) == 0
    out, err = capsys.readouterr()
    digest = json.loads((bundle_dir / "manifest.json").read_text())["plan_digest"]
    assert err == "" and out == (f"ok: {bundle_dir} is a Task 1 bundle (4 files verified, plan {digest}, exported by "
                                 f"hecktor {hecktor.__version__})\n")
    assert bundle_main(["verify", str(bundle_dir), "--task", "2"]) == 1
    assert capsys.readouterr().err == f"error: {bundle_dir} is a Task 1 bundle, but Task 2 was asked for\n"
    # A weights file that is no state dict, listed with its true checksum: the checksums pass, loading does not.
    (bundle_dir / "fold_0.pt").write_bytes(b"not a pickle")
    _edited_manifest(bundle_dir, lambda m: {**m, "files": {**m["files"], "fold_0.pt": sha256_of(bundle_dir /
                                                                                                "fold_0.pt")}})
    load_bundle(bundle_dir, task=1)
    with pytest.raises(BundleError, match=f"^{bundle_dir / 'fold_0.pt'} cannot be loaded .*; re-export the bundle$"):
        verify_bundle(bundle_dir, task=1)
    assert bundle_main(["verify", str(bundle_dir), "--task", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bundle_dir / 'fold_0.pt'} cannot be loaded")
