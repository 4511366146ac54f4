"""Task 1 training (hecktor.training.segmentation and its CLIs): cache, folds, loss going down, resume, export, DDP
with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hecktor.datasets import list_training_cases
from hecktor.errors import InputError
from hecktor.folds import kfold_split, load_folds
from hecktor.patches import preprocess_training_case
from hecktor.plan import RegionPlan
from hecktor.segment import Segmenter
from hecktor.synthetic import generate_cohort
from hecktor.training import segmentation
from hecktor.training.segmentation import (
    SegmentationTrainer,
    TrainingConfig,
    build_segmentation_network,
    export_bundle,
    load_config_file,
    load_region,
    network_from_checkpoint,
)
from helpers.paths import REPO

CONFIGS = REPO / "training" / "configs"
TINY = load_config_file(CONFIGS / "tiny.json")
TINY_PLAN = RegionPlan.from_dict(TINY["plan"])
FAST_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, cases=6, seed=11, size="small")
    return root


def tiny_config(cohort: Path, run_dir: Path, **changes) -> TrainingConfig:
    values = {**TINY, "data_root": str(cohort), "run_dir": str(run_dir), "cache_dir": str(run_dir.parent / "cache")}
    values.update(changes)
    return TrainingConfig.from_dict(values)


@pytest.fixture(scope="module")
def trained_run(cohort, tmp_path_factory):
    """The tiny config (HecMamba) trained on fold 0 for a few epochs, without augmentation."""
    run_dir = tmp_path_factory.mktemp("runs") / "hecmamba"
    trainer = SegmentationTrainer(tiny_config(cohort, run_dir, augmentation=False))
    trainer.prepare()
    summary = trainer.train_fold(0)
    return run_dir, summary, trainer


def test_training_reduces_the_loss_and_records_the_run(trained_run):
    run_dir, summary, trainer = trained_run
    losses = summary["epoch_losses"]
    assert len(losses) == TINY["epochs"]
    assert losses[-1] < 0.9 * losses[0], losses
    rows = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == list(range(1, TINY["epochs"] + 1))
    assert all(0.0 <= r["val_dice_mean"] <= 1.0 for r in rows if "val_dice_mean" in r)
    assert {"train_loss", "lr", "seconds_per_iteration", "val_dice_GTVp", "val_dsc_agg_GTVn"} <= set(rows[-1])
    for name in ("metrics.csv", "metrics.png", "checkpoint_best.pt", "checkpoint_last.pt"):
        assert (run_dir / "fold_0" / name).is_file(), name
    assert RegionPlan.load(run_dir / "plan.json") == TINY_PLAN
    last = torch.load(run_dir / "fold_0" / "checkpoint_last.pt", weights_only=True)
    assert last["epoch"] == TINY["epochs"] and last["network"] == TINY["network"]
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best"} <= set(last)
    assert last["scheduler"]["last_epoch"] == TINY["epochs"] * TINY["iterations_per_epoch"]
    # warm-up then cosine: the last learning rate is the floor of the schedule
    assert rows[-1]["lr"] == pytest.approx(TINY["learning_rate"] * TINY["min_lr_ratio"], rel=1e-6)


def test_cache_is_reused_and_keyed_by_the_plan(cohort, tmp_path):
    first = SegmentationTrainer(tiny_config(cohort, tmp_path / "a"))
    first.prepare()
    assert first.cache_stats == {"built": 6, "reused": 0}
    entry = first.cache.array_path(first.patient_ids[0], "image")
    written = entry.stat().st_mtime_ns

    second = SegmentationTrainer(tiny_config(cohort, tmp_path / "b"))
    second.prepare()
    assert second.cache_stats == {"built": 0, "reused": 6}
    assert second.cache.dir == first.cache.dir and entry.stat().st_mtime_ns == written

    # The cached region is what preprocess_training_case gives (image stored as float16).
    case = list_training_cases(cohort, 1)[0]
    region = preprocess_training_case(*case.read(), TINY_PLAN)
    cached = load_region(second.cache, case.patient_id)
    assert isinstance(cached.image, np.memmap) and cached.image.dtype == np.float16 and cached.label.dtype == np.uint8
    np.testing.assert_array_equal(cached.label, region.label)
    np.testing.assert_allclose(np.asarray(cached.image, np.float32), region.image, atol=4e-3, rtol=1e-3)
    assert cached.grid == region.grid

    other_plan = TINY_PLAN.replace(spacing_mm_xyz=(5.0, 5.0, 5.0))
    third = SegmentationTrainer(tiny_config(cohort, tmp_path / "c", plan=other_plan.to_dict()))
    third.prepare()
    assert third.cache.dir != first.cache.dir and third.cache.dir.name == f"region-{other_plan.digest()}-region"
    assert third.cache_stats == {"built": 6, "reused": 0}

    # A changed source file invalidates its entry only.
    os.utime(case.ct_path, ns=(written, written + 10**9))
    fourth = SegmentationTrainer(tiny_config(cohort, tmp_path / "d"))
    fourth.prepare()
    assert fourth.cache_stats == {"built": 1, "reused": 5}


def test_the_run_records_the_kfold_split_of_its_seed(cohort, tmp_path):
    trainer = SegmentationTrainer(tiny_config(cohort, tmp_path / "run", n_folds=3))
    trainer.prepare()
    saved = load_folds(tmp_path / "run" / "folds.json", case_ids=trainer.patient_ids)
    expected = kfold_split(trainer.patient_ids, 3, seed=trainer.config.seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(saved, expected))
    train_ids, val_ids = trainer.fold_cases(1)
    assert sorted(train_ids + val_ids) == trainer.patient_ids and not set(train_ids) & set(val_ids)


def test_resume_continues_from_the_saved_epoch(cohort, tmp_path, monkeypatch):
    fast = {"network": "unet", "network_config": FAST_UNET, "iterations_per_epoch": 2, "epochs": 3}
    straight = SegmentationTrainer(tiny_config(cohort, tmp_path / "straight", **fast))
    straight.prepare()
    straight.train_fold(0)

    # Kill the second run right after epoch 2 has been logged and checkpointed.
    save = segmentation.save_checkpoint

    def save_then_crash(checkpoint, path, **options):
        save(checkpoint, path, **options)
        if checkpoint["epoch"] == 2 and Path(path).name == "checkpoint_last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(segmentation.trainer, "save_checkpoint", save_then_crash)  # where the trainer looks it up
    first = SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", **fast))
    first.prepare()
    with pytest.raises(KeyboardInterrupt):
        first.train_fold(0)
    monkeypatch.undo()
    with pytest.raises(InputError, match="pass --resume"):
        SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", **fast)).prepare()
    # another fold may start in the same run folder
    SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", folds=[1], **fast)).prepare()
    resumed = SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", **fast), resume=True)
    resumed.prepare()
    summary = resumed.train_fold(0)
    assert len(summary["epoch_losses"]) == 1  # only epoch 3 ran

    rows = json.loads((tmp_path / "resumed" / "fold_0" / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    expected = json.loads((tmp_path / "straight" / "fold_0" / "metrics.json").read_text())
    # Same patches, same optimizer and schedule state: the resumed run is the uninterrupted run.
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in expected], rel=1e-5)
    assert [r["lr"] for r in rows] == pytest.approx([r["lr"] for r in expected], rel=1e-9)
    a = torch.load(tmp_path / "resumed" / "fold_0" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "fold_0" / "checkpoint_last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name, value in b["model"].items():
        torch.testing.assert_close(a["model"][name], value, rtol=1e-5, atol=1e-6)

    again = SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", **fast), resume=True)
    again.prepare()
    assert again.train_fold(0)["skipped"] is True
    with pytest.raises(InputError, match="other network"):
        SegmentationTrainer(tiny_config(cohort, tmp_path / "resumed", network="segresnet", network_config={}),
                            resume=True).prepare()


def test_val_every_0_validates_never_and_keeps_the_last_epoch_as_best(cohort, tmp_path):
    """The demo's setting: no validation pass (its out-of-fold predictions score the fold); the best checkpoint is the
    last epoch's, so the export and the out-of-fold masks use the trained network."""
    fast = {"network": "unet", "network_config": FAST_UNET, "iterations_per_epoch": 2, "epochs": 2, "val_every": 0}
    trainer = SegmentationTrainer(tiny_config(cohort, tmp_path / "run", **fast))
    trainer.prepare()
    summary = trainer.train_fold(0)
    rows = json.loads((tmp_path / "run" / "fold_0" / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and not any(k.startswith("val_") for r in rows for k in r)
    best = torch.load(tmp_path / "run" / "fold_0" / "checkpoint_best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "fold_0" / "checkpoint_last.pt", weights_only=True)
    assert summary["best"] == best["best"] == {"epoch": 2} and best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    _, val_ids = trainer.fold_cases(0)
    assert sorted(p.stem.split(".")[0] for p in (tmp_path / "run" / "fold_0" / "validation").glob("*.nii.gz")) == \
        sorted(val_ids)
    with pytest.raises(InputError, match="val_every must be at least 0"):
        tiny_config(cohort, tmp_path / "other", val_every=-1)


def test_export_gives_a_bundle_that_predicts_like_the_checkpoint(trained_run, cohort, tmp_path):
    run_dir, summary, trainer = trained_run
    assert trainer.network_config["deep_supervision"] is True  # HecMamba trains with deep supervision by default
    out, folds = export_bundle(run_dir, tmp_path / "bundle")
    assert folds == [0]
    model = json.loads((out / "model.json").read_text())
    assert model["network"] == TINY["network"] and model["folds"] == ["fold_0.pt"]
    # The bundle's network is the trained one without its deep-supervision heads.
    assert model["network_config"] == {**trainer.network_config, "deep_supervision": False}
    assert model["trained"]["fold_indices"] == [0] and model["trained"]["deep_supervision"] is True
    assert model["trained"]["loss"]["loss"] == "dicece" and model["trained"]["loss"]["batch_dice"] is False
    assert model["trained"]["per_fold"][0]["epoch"] == summary["best"]["epoch"]
    # weights only: the state dict of the network, no optimizer state, no heads
    best = torch.load(run_dir / "fold_0" / "checkpoint_best.pt", weights_only=True)
    exported = torch.load(out / "fold_0.pt", weights_only=True)
    heads = {k for k in best["model"] if k.startswith("ds_heads.")}
    assert heads and exported.keys() == best["model"].keys() - heads
    assert all(torch.equal(exported[k], best["model"][k]) for k in exported)

    network, _ = network_from_checkpoint(run_dir / "fold_0" / "checkpoint_best.pt")
    assert network.ds_heads is not None and not network.training
    in_memory = Segmenter([network], TINY_PLAN, device="cpu")
    loaded = Segmenter.from_bundle(out, device="cpu")
    assert loaded.networks[0].ds_heads is None
    assert sum(p.numel() for p in loaded.networks[0].parameters()) < sum(p.numel() for p in network.parameters())
    case = list_training_cases(cohort, 1)[-1]
    ct, pet, _ = case.read()
    a, b = loaded.predict(ct, pet, tta=False), in_memory.predict(ct, pet, tta=False)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetSize() == ct.GetSize() and a.GetOrigin() == ct.GetOrigin() and a.GetDirection() == ct.GetDirection()
    region = load_region(trainer.cache, case.patient_id)
    np.testing.assert_array_equal(loaded.predict_probabilities(region.image.astype(np.float32), tta=False),
                                  in_memory.predict_probabilities(region.image.astype(np.float32), tta=False))

    with pytest.raises(InputError, match="fold\\(s\\) \\[3\\]"):
        export_bundle(run_dir, tmp_path / "other", folds=[0, 3])


def test_export_never_deletes_the_run_it_exports(trained_run, tmp_path, capsys):
    import export_segmentation

    run_dir = trained_run[0]
    before = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert export_segmentation.main([str(run_dir), "--out", str(run_dir), "--overwrite"]) == 2
    assert "is not empty and holds no bundle" in capsys.readouterr().err
    assert {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()} == before
    assert export_segmentation.main([str(run_dir), "--out", str(tmp_path / "b")]) == 0
    assert export_segmentation.main([str(run_dir), "--out", str(tmp_path / "b")]) == 2
    assert "already holds a bundle" in capsys.readouterr().err
    assert export_segmentation.main([str(run_dir), "--out", str(tmp_path / "b"), "--overwrite"]) == 0


def test_out_of_fold_predictions_are_scored_and_choose_the_postprocessing(trained_run, cohort, tmp_path):
    from hecktor.evaluate import evaluate_masks

    run_dir, summary, trainer = trained_run
    _, val_ids = trainer.fold_cases(0)
    folder = run_dir / "fold_0" / "validation"
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == sorted(f"{pid}.nii.gz" for pid in val_ids)
    assert summary["predict_validation_s"] > 0
    # Each is Segmenter.predict of the case with the fold's best network, on the case's CT grid.
    case = next(c for c in list_training_cases(cohort, 1) if c.patient_id == val_ids[0])
    ct, pet, label = case.read()
    network, _ = network_from_checkpoint(run_dir / "fold_0" / "checkpoint_best.pt")
    expected = Segmenter([network], TINY_PLAN, device="cpu").predict(ct, pet, tta=False, overlap=TINY["val_overlap"])
    written = sitk.ReadImage(str(folder / f"{val_ids[0]}.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected))
    assert written.GetSize() == ct.GetSize() and np.allclose(written.GetOrigin(), ct.GetOrigin())
    # hecktor-evaluate scores the fold against the linked labels of exactly those cases.
    report = evaluate_masks(folder, run_dir / "fold_0" / "validation_labels", progress=False)
    assert report["n_cases"] == len(val_ids) and 0.0 <= report["gtvp_dice_mean"] <= 1.0

    import choose_postprocessing

    assert choose_postprocessing.main([str(run_dir)]) == 0
    record = json.loads((run_dir / "postprocessing.json").read_text())
    assert record["folds"] == [0] and record["cases"] == sorted(val_ids)
    assert record["report"]["n_cases"] == len(val_ids)
    out, _ = export_bundle(run_dir, tmp_path / "bundle")
    model = json.loads((out / "model.json").read_text())
    assert model["postprocessing"] == record["postprocessing"]
    assert Segmenter.from_bundle(out, device="cpu").postprocessing.to_dict() == record["postprocessing"]
    out, _ = export_bundle(run_dir, tmp_path / "plain", postprocessing=False)
    assert "postprocessing" not in json.loads((out / "model.json").read_text())


def test_loss_vocabulary_matches_monai_and_nnunet():
    from monai.losses import DiceCELoss, DiceLoss

    from hecktor.networks import deep_supervision_weights
    from hecktor.training.segmentation import LOSSES, make_loss

    assert set(LOSSES) == {"dicece", "batch_dicece", "dice", "batch_dice"}
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8)
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8))
    labels[1][labels[1] == 2] = 0  # the second patch holds no GTVn: per-sample and batch Dice differ
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0])
    # dicece: the seed's Dice + CE, MONAI DiceCELoss with its defaults (per sample, background included).
    torch.testing.assert_close(make_loss("dicece")(logits, labels),
                               DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels))
    # batch_dicece: nnU-Net's, batch Dice over the foreground + CE.
    batch_fg = DiceLoss(to_onehot_y=True, softmax=True, batch=True, include_background=False)(logits, labels)
    torch.testing.assert_close(make_loss("batch_dicece")(logits, labels), batch_fg + ce)
    torch.testing.assert_close(make_loss("batch_dice")(logits, labels), batch_fg)
    torch.testing.assert_close(make_loss("dice")(logits, labels),
                               DiceLoss(to_onehot_y=True, softmax=True)(logits, labels))
    # The loss the old name 'dicece' meant: batch Dice over all classes + CE.
    torch.testing.assert_close(make_loss("batch_dicece", include_background=True)(logits, labels),
                               DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, labels))
    # Class weights act on the cross-entropy only.
    weights = [1.0, 2.0, 4.0]
    weighted_ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], weight=torch.tensor(weights))
    torch.testing.assert_close(make_loss("batch_dicece", ce_class_weights=weights)(logits, labels),
                               batch_fg + weighted_ce)
    # Deep supervision: nnU-Net's weights over the outputs, labels resized by nearest-exact interpolation.
    outputs = [logits, torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    base = make_loss("batch_dicece")
    expected = sum(w * base(o, torch.nn.functional.interpolate(labels.float(), size=o.shape[2:],
                                                                mode="nearest-exact"))
                   for w, o in zip(deep_supervision_weights(3), outputs))
    torch.testing.assert_close(base(outputs, labels), expected)
    assert deep_supervision_weights(3)[-1] == 0.0


def test_deep_supervision_switch_and_loss_settings_are_checked(cohort, tmp_path):
    from hecktor.training.segmentation import resolve_network_config

    assert resolve_network_config("hecmamba", TINY["network_config"])["deep_supervision"] is True
    assert resolve_network_config("hecmamba", TINY["network_config"], False)["deep_supervision"] is False
    assert resolve_network_config("dynunet", {})["deep_supervision"] is True
    assert "deep_supervision" not in resolve_network_config("unet", FAST_UNET)
    with pytest.raises(InputError, match="'unet' has no deep-supervision heads"):
        resolve_network_config("unet", FAST_UNET, True)
    with pytest.raises(InputError, match="set it in one place"):
        resolve_network_config("hecmamba", {"deep_supervision": True}, False)
    with pytest.raises(InputError, match="ce_class_weights must be 3 positive numbers"):
        tiny_config(cohort, tmp_path / "a", ce_class_weights=[1, 2])
    with pytest.raises(InputError, match="needs a loss with cross-entropy"):
        tiny_config(cohort, tmp_path / "a", loss="dice", ce_class_weights=[1, 1, 2])


@pytest.mark.parametrize("dated_by", ["a loss without deep_supervision", "former setting names"])
def test_a_run_folder_written_by_an_older_version_is_one_error_line(trained_run, cohort, tmp_path, capsys, dated_by):
    """Run folders are not a published format (bundles are). A run of the old layout (no 'deep_supervision' key: the
    loss names had another meaning; or the settings' former names 'lr' and 'augment') is neither continued, nor given
    a postprocessing, nor exported: each command says so in one line and leaves the run as it was."""
    import shutil

    import choose_postprocessing
    import export_segmentation
    import train_segmentation

    run_dir = tmp_path / "old"
    shutil.copytree(trained_run[0], run_dir)
    record = json.loads((run_dir / "config.json").read_text())
    if dated_by == "former setting names":
        record["lr"], record["augment"] = record.pop("learning_rate"), record.pop("augmentation")
        sign = "setting 'lr', setting 'augment'"
    else:
        for key in ("deep_supervision", "dice_include_background", "ce_class_weights"):
            record.pop(key)
        sign = "loss 'dicece' without 'deep_supervision'"
    (run_dir / "config.json").write_text(json.dumps(record))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    expected = (f"error: {run_dir / 'config.json'} was written by an older version of hecktor ({sign}): retrain the "
                "run into a new --out folder, or export it with the older version")

    resume = ["--config", str(CONFIGS / "tiny.json"), "--data", str(cohort), "--out", str(run_dir), "--cache-dir",
              str(trained_run[0].parent / "cache"), "--no-augmentation", "--device", "cpu", "--no-progress",
              "--resume"]
    for main, argv in ((train_segmentation.main, resume),
                       (choose_postprocessing.main, [str(run_dir)]),
                       (export_segmentation.main, [str(run_dir), "--out", str(tmp_path / "bundle")])):
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines() == [expected], main.__module__
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    assert not (tmp_path / "bundle").exists()
    with pytest.raises(InputError, match="written by an older version"):
        export_bundle(run_dir, tmp_path / "bundle")


def test_validation_lines_show_fold_iteration_loss_and_dice():
    from hecktor.training.segmentation import validation_line

    row = {"train_loss": 0.51234, "val_dice_GTVp": 0.8, "val_dice_GTVn": float("nan"), "val_dsc_agg_GTVn": 0.25}
    assert validation_line(1, 250, 1000, row) == ("fold 1 iteration 250/1000: loss 0.5123, validation Dice "
                                                  "GTVp 0.800, GTVn n/a (DSCagg 0.250)")


def test_shipped_configs_are_valid(cohort, tmp_path):
    for path in sorted(CONFIGS.glob("*.json")):
        config = tiny_config(cohort, tmp_path / path.stem, **load_config_file(path))
        trainer = SegmentationTrainer(config)
        network = trainer_network(trainer)
        patch = torch.zeros(1, 2, *config.plan.patch_size_zyx)
        with torch.no_grad():
            assert network(patch).shape == (1, 3, *config.plan.patch_size_zyx), path.name


def trainer_network(trainer: SegmentationTrainer):
    return build_segmentation_network(trainer.config.network, trainer.network_config).eval()


def test_cli_help_and_errors(tmp_path, capsys):
    import export_segmentation
    import train_segmentation

    for main in (train_segmentation.main, export_segmentation.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
    assert "--network-config" in capsys.readouterr().out
    assert export_segmentation.main([str(tmp_path)]) == 2
    assert "not a training run" in capsys.readouterr().err


def test_cli_trains_the_chosen_fold_of_an_n_fold_split(trained_run, cohort, tmp_path, capsys):
    import train_segmentation

    cache = trained_run[0].parent / "cache"  # the tiny plan's entries, built once for this module
    plan = tmp_path / "plan.json"
    TINY_PLAN.save(plan)
    run_dir = tmp_path / "run"
    assert train_segmentation.main([
        "--data", str(cohort), "--out", str(run_dir), "--cache-dir", str(cache), "--plan", str(plan),
        "--network", "unet", "--network-config", json.dumps(FAST_UNET), "--folds", "3", "--fold", "1",
        "--epochs", "1", "--iterations-per-epoch", "1", "--batch-size", "1", "--workers", "0", "--device", "cpu",
        "--lr", "0.01", "--no-augmentation", "--no-progress",
    ]) == 0
    assert "fold 1: best epoch 1" in capsys.readouterr().out
    assert sorted(p.name for p in run_dir.glob("fold_*")) == ["fold_1"]
    assert len(load_folds(run_dir / "folds.json")) == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert [config[k] for k in ("n_folds", "folds", "learning_rate", "augmentation")] == [3, [1], 0.01, False]


def test_ddp_with_two_cpu_processes(cohort, tmp_path):
    run_dir = tmp_path / "ddp"
    plan = tmp_path / "plan.json"
    TINY_PLAN.save(plan)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "training" / "train_segmentation.py"),
        "--data", str(cohort), "--out", str(run_dir), "--cache-dir", str(tmp_path / "cache"),
        "--plan", str(plan), "--network", "unet", "--network-config", json.dumps(FAST_UNET), "--fold", "0",
        "--epochs", "1", "--iterations-per-epoch", "2", "--batch-size", "1", "--workers", "0", "--device", "cpu",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((run_dir / "fold_0" / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["processes"] == 2
    assert 0.0 <= rows[0]["val_dice_mean"] <= 1.0
    assert (run_dir / "fold_0" / "checkpoint_best.pt").is_file()
    # both ranks preprocessed half of the cases into the shared cache
    assert len(list((tmp_path / "cache").glob("region-*/*.json"))) == 6 + 1  # + plan.json
    assert result.stdout.count("fold 0: best epoch") == 1  # only rank 0 reports


def test_resume_accepts_a_checkpoint_stored_before_the_plan_gained_fields(cohort, tmp_path):
    """A checkpoint's plan digest from before a field was added differs from today's; the plans themselves are then
    compared (as export_bundle does): the same plan resumes, another plan is refused."""
    fast = {"network": "unet", "network_config": FAST_UNET, "iterations_per_epoch": 2, "epochs": 2}
    run = tmp_path / "run"
    trainer = SegmentationTrainer(tiny_config(cohort, run, **{**fast, "epochs": 1}))
    trainer.prepare()
    trainer.train_fold(0)
    path = run / "fold_0" / "checkpoint_last.pt"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["plan_digest"] = "0" * 64  # what an older hecktor computed for the same settings
    segmentation.save_checkpoint(checkpoint, path)
    resumed = SegmentationTrainer(tiny_config(cohort, run, **fast), resume=True)
    resumed.prepare()
    assert len(resumed.train_fold(0)["epoch_losses"]) == 1  # epoch 2 only

    checkpoint = torch.load(path, weights_only=False)
    checkpoint["plan_digest"] = "0" * 64
    checkpoint["plan"] = {**checkpoint["plan"], "patch_size_zyx": [16, 16, 16]}  # and another plan
    segmentation.save_checkpoint(checkpoint, path)
    with pytest.raises(InputError, match="another plan"):
        again = SegmentationTrainer(tiny_config(cohort, run, **{**fast, "epochs": 3}), resume=True)
        again.prepare()
        again.train_fold(0)
