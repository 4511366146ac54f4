"""hecktor.model_tarball: the model tarball the platform extracts into /opt/ml/model (written, read back, refused
when tampered with), and a bundle verified as a container loads it."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

import pytest
import torch

from hecktor.bundle import load_bundle, write_bundle
from hecktor.errors import BundleError
from hecktor.model_tarball import extract_model_tarball, main, verify_bundle_loads, verify_model_tarball, \
    write_model_tarball
from hecktor.networks import build_network
from helpers.containers import PLAN1, TINY_UNET
from helpers.paths import FIXTURE_BUNDLES

FIX = "write it again with ./build.sh --save (or python -m hecktor.model_tarball write)"


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _tarball(path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    """A hand-made .tar.gz holding ``files`` (and symbolic ``links``), for the refusals."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)


def test_round_trip_puts_the_bundle_files_at_the_root_and_loads_after_extraction(tmp_path):
    bundle = FIXTURE_BUNDLES / "task2-biomarkers"  # a nested Task 1 bundle: a folder inside the tarball
    out = tmp_path / "model.tar.gz"
    content = write_model_tarball(bundle, out, 2)
    expected = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert list(content.files) == expected and content.task == 2
    members = _members(out)
    assert sorted(members) == expected  # at the root: no leading folder, no "./"
    assert all(members[name] == (bundle / name).read_bytes() for name in expected)
    assert content.content_bytes == sum((bundle / name).stat().st_size for name in expected)
    with tarfile.open(out, "r:gz") as tar:
        assert {(m.name, m.mode, m.uid, m.mtime) for m in tar if m.isdir()} == {("segmentation", 0o755, 0, 0)}
        assert {m.mode for m in tar if m.isfile()} == {0o644}
    assert not (tmp_path / "model.tar.gz.partial").exists()

    again = tmp_path / "again.tar.gz"
    write_model_tarball(bundle, again, "2")
    assert again.read_bytes() == out.read_bytes()  # the same bundle gives the same bytes

    model_dir = tmp_path / "opt-ml-model"
    extract_model_tarball(out, model_dir)
    loaded = load_bundle(model_dir, 2)
    assert loaded.manifest == json.loads((bundle / "manifest.json").read_text())
    with pytest.raises(BundleError, match="is not empty; extract"):
        extract_model_tarball(out, model_dir)


def test_a_tampered_missing_or_extra_member_is_refused_naming_it(tmp_path):
    bundle = FIXTURE_BUNDLES / "task3"
    out = tmp_path / "model.tar.gz"
    write_model_tarball(bundle, out, 3)
    good = _members(out)

    tampered = dict(good, **{"fold_0_head.json": good["fold_0_head.json"].replace(b"0", b"1", 1)})
    _tarball(tmp_path / "t.tar.gz", tampered)
    with pytest.raises(BundleError) as error:
        verify_model_tarball(tmp_path / "t.tar.gz")
    assert str(error.value) == (f"{tmp_path / 't.tar.gz'}: fold_0_head.json differs from its manifest (SHA-256 "
                                f"mismatch); {FIX}")

    _tarball(tmp_path / "m.tar.gz", {k: v for k, v in good.items() if k != "plan.json"})
    with pytest.raises(BundleError, match=r"m\.tar\.gz lacks plan\.json of its manifest"):
        verify_model_tarball(tmp_path / "m.tar.gz")

    _tarball(tmp_path / "e.tar.gz", dict(good, **{"notes.txt": b"x"}))
    with pytest.raises(BundleError, match=r"holds file\(s\) not in its manifest: notes\.txt"):
        verify_model_tarball(tmp_path / "e.tar.gz")

    _tarball(tmp_path / "d.tar.gz", {f"bundle/{k}": v for k, v in good.items()})  # a folder around the files
    with pytest.raises(BundleError, match="holds no manifest.json at its root"):
        verify_model_tarball(tmp_path / "d.tar.gz")

    # Another bundle's manifest than the one written: write_model_tarball compares against the bundle's own.
    other = json.loads((FIXTURE_BUNDLES / "task2" / "manifest.json").read_text())
    with pytest.raises(BundleError, match="its manifest.json is not the bundle's"):
        verify_model_tarball(out, other)


@pytest.mark.parametrize("members, message", [
    ({"../escape.json": b"{}"}, "member '../escape.json' points outside the model folder"),
    ({"/etc/passwd": b"x"}, "member '/etc/passwd' points outside the model folder"),
])
def test_members_outside_the_model_folder_and_links_are_refused(tmp_path, members, message):
    _tarball(tmp_path / "bad.tar.gz", members)
    with pytest.raises(BundleError, match=message):
        verify_model_tarball(tmp_path / "bad.tar.gz")
    _tarball(tmp_path / "link.tar.gz", {}, links={"fold_0.pt": "/etc/passwd"})
    with pytest.raises(BundleError, match="member 'fold_0.pt' is neither a file nor a folder"):
        verify_model_tarball(tmp_path / "link.tar.gz")
    (tmp_path / "not.tar.gz").write_bytes(b"plain text")
    with pytest.raises(BundleError, match=r"not\.tar\.gz is not a readable \.tar\.gz"):
        verify_model_tarball(tmp_path / "not.tar.gz")


def test_writing_refuses_a_changed_bundle_and_leaves_no_file(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE_BUNDLES / "task1", bundle)
    (bundle / "model.json").write_text((bundle / "model.json").read_text() + " ")
    with pytest.raises(BundleError, match="bundle file changed since export"):
        write_model_tarball(bundle, tmp_path / "model.tar.gz", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_verify_bundle_loads_builds_the_networks_as_the_container_does(tmp_path, capsys):
    """Weights that load as a state dict (hecktor.bundle.verify_bundle passes) but do not fit model.json's network
    are refused only by loading the predictor, as the container would on the platform."""
    torch.manual_seed(0)
    other = build_network("unet", {**TINY_UNET, "channels": [4, 8, 32]}).state_dict()
    model = {"network": "unet", "network_config": TINY_UNET, "folds": ["fold_0.pt"]}
    bundle = write_bundle(tmp_path / "misfit", task=1, plan=PLAN1, model=model, state_dicts={"fold_0.pt": other})
    with pytest.raises(BundleError, match=r"fold_0\.pt does not fit network 'unet' of model\.json"):
        verify_bundle_loads(bundle, 1)
    assert main(["verify", str(bundle), "--task", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not fit network 'unet'" in err and len(err.splitlines()) == 1

    assert main(["verify", str(FIXTURE_BUNDLES / "task1"), "--task", "2"]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {FIXTURE_BUNDLES / 'task1'} is a Task 1 bundle, but Task 2 "
                                               "was asked for")
    assert main(["write", str(FIXTURE_BUNDLES / "task1"), str(tmp_path / "m.tar.gz"), "--task", "1"]) == 0
    digest = hashlib.sha256((tmp_path / "m.tar.gz").read_bytes()).hexdigest()
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'm.tar.gz'}: 4 files at its root")
    assert main(["extract", str(tmp_path / "m.tar.gz"), str(tmp_path / "x")]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["fold_0.pt", "manifest.json", "model.json",
                                                                  "plan.json"]
    assert hashlib.sha256((tmp_path / "m.tar.gz").read_bytes()).hexdigest() == digest
