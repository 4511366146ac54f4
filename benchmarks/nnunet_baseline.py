"""nnU-Net v2 (3d_fullres, fold 0) as the yardstick row of the Task 1 segmentation table.

The row is trained and scored on exactly the data of ``bench_segmentation.py``: the synthetic ``small`` training
cohort (seed 0), fold 0 of the same seeded 5-fold split (``hecktor.folds.kfold_split``, 32 train / 8 validation of 40
cases, written as nnU-Net's ``splits_final.json``), and the held-out cohort (seed 1000) scored with
``hecktor.metrics.evaluate_segmentation`` / ``summarize_segmentation`` on the CT grid.

What runs, in order:

1. Conversion to nnU-Net's raw layout (plain SimpleITK, no nnunetv2 import): ``imagesTr/<case>_0000.nii.gz`` the
   CT as it is, ``<case>_0001.nii.gz`` the PET resampled onto the CT grid (linear, 0 outside the PET),
   ``labelsTr/<case>.nii.gz``, the held-out cases in ``imagesTs``, and ``dataset.json`` with channels
   ``{"0": "CT", "1": "PET"}`` (nnU-Net's CT normalisation for the CT, z-score for the PET) and labels
   ``hecktor.labels.LABELS``.
2. nnU-Net's own fingerprint, default ``ExperimentPlanner`` (the plain-convolution U-Net of
   ``nnUNetv2_plan_and_preprocess``) and preprocessing of ``3d_fullres``. With ``forced=(spacing_mm, patch)`` an
   extra configuration ``3d_fullres_<s>mm_p<n>`` inherits from ``3d_fullres`` with our spacing and patch and a
   topology made by nnU-Net's own ``get_pool_and_conv_props`` (the ``inherits_from`` mechanism its documentation
   describes), so nnU-Net can also be compared on our 4 mm / 32³ plan.
3. Training of fold 0 on the CPU with the stock ``nnUNetTrainer``, its attributes set before ``run_training``:
   ``num_epochs = iterations // iterations_per_epoch`` (1,000 = 4 epochs of nnU-Net's 250), batch size 2 (the plan's
   batch size is overridden when it differs, and the planned one is reported). The budget nnU-Net really uses on top
   of our trainers': after each epoch it runs ``num_val_iterations_per_epoch`` (default 50) forward passes on
   validation patches for its pseudo-Dice (4 × 50 = 200 batches), which counts in the training seconds, as our
   trainers' periodic validation does. Its learning rate follows its poly schedule over those 4 epochs (SGD,
   Nesterov, 0.01), with deep supervision and its full augmentation. The final sliding-window validation of the 8
   validation cases (``perform_actual_validation``) is skipped: the table does not use it.
4. Prediction of the held-out cases with ``nnUNetPredictor`` from ``checkpoint_final.pth`` (nnU-Net's default),
   fold 0 only, CPU, Gaussian sliding window with step 0.5, mirroring off unless ``tta`` (the table's "one fold, no
   TTA"). The predictions are written on the grid of their ``_0000`` channel, the CT, and scored against the
   original labels.

nnU-Net's postprocessing (the connected-component removal that ``nnUNetv2_find_best_configuration`` chooses from a
full cross-validation) is not applied: one fold has no cross-validation to choose it from.

Measured on the 2-core machine shared with other jobs (load 3-7), 1,000 iterations, threads 1, ``nnUNet_n_proc_DA``
1: nnU-Net's own ``3d_fullres`` plan for the 40-case cohort is 5.03 × 3.96 × 3.96 mm (z, y, x; the median spacing),
patches 64 × 56 × 64 (the whole median image), batch 2, 5 stages of 32-320 features, 16.2 M parameters, about 8 s
per training step on one thread, so 1,000 iterations would take over 2 h: not run. On our plan (``--force-spacing 4
--force-patch 32``: 4 stages, 32-256 features, 5.6 M parameters, 0.6-0.9 s per step) training took 1,035 s (four
epochs of 237-282 s, each with its 50 validation batches) and inference 94 s for the 12 held-out cases.

The returned dict has the keys of ``bench_segmentation.run_configuration``'s rows (``name``, ``train_s``,
``infer_s``, ``parameters``, ``summary``) plus ``plan``: what nnU-Net planned and what was trained.

nnunetv2 is an optional, benchmark-only dependency (``benchmarks/requirements-nnunet.txt``); only steps 2-4 import it.

Usage::

    python benchmarks/nnunet_baseline.py --work runs/nnunet_baseline                 # the 1,000-iteration row
    python benchmarks/nnunet_baseline.py --work /tmp/nnsmoke --smoke                 # end to end in minutes
    python benchmarks/nnunet_baseline.py --work runs/nnunet_4mm --force-spacing 4 --force-patch 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hecktor.datasets import TrainingCase, list_training_cases
from hecktor.errors import InputError
from hecktor.folds import kfold_split
from hecktor.labels import LABELS
from hecktor.metrics import evaluate_segmentation, summarize_segmentation

REPO = Path(__file__).resolve().parents[1]

DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_HecktorSynthetic"
CHANNELS = {"0": "CT", "1": "PET"}
FILE_ENDING = ".nii.gz"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
ROW_NAME = "nnU-Net v2 (3d_fullres)"


# ------------------------------------------------------------------------------------------------ raw-data conversion


def pet_on_ct_grid(ct: sitk.Image, pet: sitk.Image) -> sitk.Image:
    """The PET resampled onto the CT's grid (linear, 0 where the CT reaches outside the PET), as float32.

    nnU-Net needs every channel of a case on one grid; the CT's is also the label's and the output's.
    """
    return sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _same_grid(a: sitk.Image, b: sitk.Image, atol: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=atol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=atol)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=atol))


def write_case(case: TrainingCase, images_dir: Path, labels_dir: Path | None = None) -> None:
    """Write one case in nnU-Net's raw layout: ``<id>_0000`` CT, ``<id>_0001`` PET on the CT grid, and the label.

    Args:
        case: the HECKTOR case.
        images_dir: ``imagesTr`` or ``imagesTs``.
        labels_dir: ``labelsTr``; ``None`` writes no label (test images).

    Raises:
        InputError: the label is not on the CT grid (HECKTOR labels are; the scores are computed there).
    """
    ct, pet, label = case.read()
    pid = case.patient_id
    sitk.WriteImage(ct, str(images_dir / f"{pid}_0000{FILE_ENDING}"), True)
    sitk.WriteImage(pet_on_ct_grid(ct, pet), str(images_dir / f"{pid}_0001{FILE_ENDING}"), True)
    if labels_dir is not None:
        if label is None:
            raise InputError(f"case {pid}: no label file; nnU-Net's training cases need one")
        if not _same_grid(label, ct):
            raise InputError(f"case {pid}: {case.label_path} is not on the CT grid; HECKTOR labels must be")
        sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), str(labels_dir / f"{pid}{FILE_ENDING}"), True)


def dataset_json(n_training: int) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json`` for the converted cohort."""
    return {
        "name": DATASET_NAME,
        "description": "HECKTOR 2025 Task 1 synthetic cohort (hecktor.synthetic), PET resampled onto the CT grid",
        "channel_names": dict(CHANNELS),
        "labels": dict(LABELS),
        "numTraining": int(n_training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
    }


def convert_to_raw(train_dir: str | Path, held_out_dir: str | Path | None, raw_root: str | Path) -> Path:
    """Write ``<raw_root>/Dataset501_HecktorSynthetic`` (imagesTr, labelsTr, imagesTs, dataset.json) afresh.

    Args:
        train_dir: a HECKTOR training folder (``Task 1/`` inside) whose cases are nnU-Net's training set.
        held_out_dir: the same for the held-out cases (``imagesTs``); ``None`` writes none.
        raw_root: nnU-Net's ``nnUNet_raw`` folder.

    Returns:
        The dataset folder.
    """
    folder = Path(raw_root) / DATASET_NAME
    if folder.exists():
        shutil.rmtree(folder)  # a stale case from an earlier cohort would silently join the training set
    images_tr, labels_tr, images_ts = folder / "imagesTr", folder / "labelsTr", folder / "imagesTs"
    for path in (images_tr, labels_tr, images_ts):
        path.mkdir(parents=True)
    cases = list_training_cases(train_dir, 1, require_label=True)
    for case in cases:
        write_case(case, images_tr, labels_tr)
    if held_out_dir is not None:
        for case in list_training_cases(held_out_dir, 1):
            write_case(case, images_ts)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(len(cases)), indent=2))
    return folder


def our_folds(patient_ids: Sequence[str], n_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """The folds of ``bench_segmentation.py``'s trainer (``hecktor.folds.kfold_split``, seed 0 by default) as nnU-Net's
    ``splits_final.json`` entries: ``[{"train": [ids], "val": [ids]}, ...]``."""
    ids = sorted(patient_ids)  # the very function our trainer uses, so the split cannot drift
    return [{"train": [ids[i] for i in train], "val": [ids[i] for i in val]}
            for train, val in kfold_split(ids, n_folds, seed)]


def write_splits(preprocessed_dataset_dir: str | Path, patient_ids: Sequence[str], n_folds: int = 5,
                 seed: int = 0) -> Path:
    """Write ``splits_final.json`` into nnU-Net's preprocessed dataset folder, so its fold k is our fold k."""
    path = Path(preprocessed_dataset_dir) / "splits_final.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(our_folds(patient_ids, n_folds, seed), indent=1))
    return path


# ------------------------------------------------------------------------------------------- nnU-Net (needs nnunetv2)


def set_nnunet_environment(work: str | Path, da_workers: int = 1) -> dict[str, Path]:
    """Point nnU-Net's three folders into ``work`` and cap its augmentation workers.

    nnunetv2 2.8 reads these variables when it uses them, so setting them before the first call is enough.
    """
    work = Path(work).resolve()
    paths = {name: work / folder for name, folder in
             (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results"))}
    for name, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ["nnUNet_n_proc_DA"] = str(int(da_workers))
    os.environ["nnUNet_compile"] = "false"
    return paths


def forced_configuration(plans: dict[str, Any], spacing_mm: float, patch: int) -> str:
    """Add a configuration with our isotropic spacing and cubic patch to nnU-Net's plans (in place).

    It inherits everything from ``3d_fullres`` (normalisation, resampling, preprocessor) except the spacing, the patch
    and the network topology, which nnU-Net's own ``get_pool_and_conv_props`` derives from them as its planner does.

    Returns:
        The configuration's name, e.g. ``3d_fullres_4mm_p32``.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    base = plans["configurations"][CONFIGURATION]
    spacing = [float(spacing_mm)] * 3
    _, strides, kernels, patch_size, _ = get_pool_and_conv_props(spacing, [int(patch)] * 3, 4, 999999)
    if list(patch_size) != [int(patch)] * 3:
        raise InputError(f"patch {patch} is not divisible the way nnU-Net's topology needs (it would use "
                         f"{list(patch_size)}); choose a multiple of 8")
    arch = json.loads(json.dumps(base["architecture"]))
    stages = len(strides)
    widths = arch["arch_kwargs"]["features_per_stage"]
    arch["arch_kwargs"].update({
        "n_stages": stages,
        "features_per_stage": [min(widths[-1], widths[0] * 2 ** i) for i in range(stages)],
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage": [2] * stages,
        "n_conv_per_stage_decoder": [2] * (stages - 1),
    })
    name = f"{CONFIGURATION}_{spacing_mm:g}mm_p{patch}"
    plans["configurations"][name] = {
        "inherits_from": CONFIGURATION,
        "data_identifier": f"{PLANS}_{name}",
        "spacing": spacing,
        "patch_size": [int(patch)] * 3,
        "architecture": arch,
    }
    return name


def plan_and_preprocess(patient_ids: Sequence[str], processes: int = 1,
                        forced: tuple[float, int] | None = None) -> tuple[str, dict[str, Any]]:
    """nnU-Net's fingerprint, default planner and preprocessing of the dataset in ``nnUNet_raw``, plus our split.

    Args:
        patient_ids: the training cases (for ``splits_final.json``).
        processes: worker processes for the fingerprint and the preprocessing.
        forced: ``(spacing_mm, patch)`` to train an added configuration instead of nnU-Net's ``3d_fullres``.

    Returns:
        The configuration to train and the plans dict.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed

    extract_fingerprint_dataset(DATASET_ID, num_processes=processes, check_dataset_integrity=True, clean=True,
                                verbose=False, show_progress_bar=False)
    plan_experiment_dataset(DATASET_ID)
    plans_path = Path(str(nnUNet_preprocessed)) / DATASET_NAME / f"{PLANS}.json"
    plans = json.loads(plans_path.read_text())
    configuration = CONFIGURATION
    if forced is not None:
        configuration = forced_configuration(plans, *forced)
        plans_path.write_text(json.dumps(plans, indent=4))
    preprocess_dataset(DATASET_ID, PLANS, (configuration,), (processes,), verbose=False, show_progress_bar=False)
    write_splits(plans_path.parent, patient_ids)
    return configuration, plans


def _parameter_count(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))


def train_fold(configuration: str, fold: int = 0, iterations: int = 1000, iterations_per_epoch: int = 250,
               val_iterations: int = 50, batch_size: int | None = 2) -> dict[str, Any]:
    """Train one fold with the stock ``nnUNetTrainer`` on the CPU for ``iterations`` batches.

    Args:
        configuration: the plans' configuration to train.
        fold: the fold of ``splits_final.json``.
        iterations: training batches in all; must be a multiple of ``iterations_per_epoch``.
        iterations_per_epoch: nnU-Net's epoch length (250 by default).
        val_iterations: nnU-Net's validation batches after each epoch (50 by default).
        batch_size: overrides the plan's batch size; ``None`` keeps nnU-Net's.

    Returns:
        ``{"train_s", "parameters", "epochs", "batch_size", "planned_batch_size", "results_dir", "log"}``.
    """
    import torch
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if iterations % iterations_per_epoch:
        raise InputError(f"iterations ({iterations}) must be a multiple of iterations_per_epoch "
                         f"({iterations_per_epoch})")
    base = Path(str(nnUNet_preprocessed)) / DATASET_NAME
    plans = json.loads((base / f"{PLANS}.json").read_text())
    planned_batch = plans["configurations"][configuration].get("batch_size",
                                                              plans["configurations"][CONFIGURATION]["batch_size"])
    if batch_size is not None:
        plans["configurations"][configuration]["batch_size"] = int(batch_size)
    plans["continue_training"] = False
    trainer = nnUNetTrainer(plans=plans, configuration=configuration, fold=fold,
                            dataset_json=json.loads((base / "dataset.json").read_text()),
                            device=torch.device("cpu"))
    if Path(trainer.output_folder, "checkpoint_final.pth").is_file():
        raise InputError(f"{trainer.output_folder} already holds a trained model; use a new --work folder")
    trainer.num_epochs = iterations // iterations_per_epoch
    trainer.num_iterations_per_epoch = iterations_per_epoch
    trainer.num_val_iterations_per_epoch = val_iterations
    start = time.perf_counter()
    trainer.run_training()
    seconds = time.perf_counter() - start
    return {"train_s": seconds, "parameters": _parameter_count(trainer.network), "epochs": trainer.num_epochs,
            "batch_size": int(trainer.batch_size), "planned_batch_size": int(planned_batch),
            "results_dir": str(trainer.output_folder_base), "log": str(trainer.log_file)}


def predict(results_dir: str | Path, images_dir: str | Path, patient_ids: Sequence[str], out_dir: str | Path,
            fold: int = 0, tta: bool = False) -> dict[str, Path]:
    """Segment ``<images_dir>/<id>_000{0,1}.nii.gz`` with the trained fold; returns ``{id: prediction path}``.

    The predictions lie on the grid of channel 0, the CT.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(results_dir), use_folds=(fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images_dir = Path(images_dir)
    inputs = [[str(images_dir / f"{pid}_{c:04d}{FILE_ENDING}") for c in range(len(CHANNELS))] for pid in patient_ids]
    predictor.predict_from_files_sequential(inputs, [str(out_dir / pid) for pid in patient_ids],
                                            save_probabilities=False, overwrite=True)
    return {pid: out_dir / f"{pid}{FILE_ENDING}" for pid in patient_ids}


def score(predictions: dict[str, Path], cases: Sequence[TrainingCase]) -> dict[str, Any]:
    """``summarize_segmentation`` of the predictions against the cases' labels, as ``bench_segmentation`` scores."""
    per_case = []
    for case in cases:
        _, _, label = case.read()
        mask = sitk.ReadImage(str(predictions[case.patient_id]))
        per_case.append(evaluate_segmentation(mask, label, case_id=case.patient_id))
    return summarize_segmentation(per_case)


def run_nnunet_row(work: str | Path, train_dir: str | Path, held_out_dir: str | Path, *, iterations: int = 1000,
                   iterations_per_epoch: int = 250, val_iterations: int = 50, batch_size: int | None = 2,
                   fold: int = 0, tta: bool = False, threads: int = 1, da_workers: int = 1,
                   forced: tuple[float, int] | None = None, name: str | None = None) -> dict[str, Any]:
    """The nnU-Net row of the segmentation table: convert, plan, preprocess, train one fold, predict, score.

    Args:
        work: a folder for nnU-Net's raw, preprocessed and results folders and the predictions (a new one per run).
        train_dir: the table's training cohort (``Task 1/`` inside); fold ``fold`` of our 5-fold split is trained.
        held_out_dir: the table's held-out cohort, segmented and scored.
        iterations: training batches in all (the table: 1,000).
        iterations_per_epoch: nnU-Net's epoch length (shortened to ``iterations`` when that is less); ``iterations``
            must be a multiple of it.
        val_iterations: nnU-Net's validation batches per epoch (its default 50).
        batch_size: training batch size (the table: 2); ``None`` keeps the plan's.
        fold: the fold to train.
        tta: nnU-Net's mirroring at inference (off in the table).
        threads: torch threads (and SimpleITK's); also the preprocessing's processes.
        da_workers: nnU-Net's data-augmentation worker processes (``nnUNet_n_proc_DA``; 0 = in the main process).
        forced: ``(spacing_mm, patch)``: train nnU-Net on our plan instead of its own (see ``forced_configuration``).
        name: the row's name (default says which configuration).

    Returns:
        ``{"name", "train_s", "infer_s", "parameters", "summary", "plan"}``; ``plan`` holds nnU-Net's planned
        spacing (z, y, x mm), patch, batch size, and what was trained.
    """
    import torch

    iterations_per_epoch = min(int(iterations_per_epoch), int(iterations))  # a smoke run of a few iterations
    torch.set_num_threads(int(threads))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    paths = set_nnunet_environment(work, da_workers)
    train_cases = list_training_cases(train_dir, 1, require_label=True)
    held_out = list_training_cases(held_out_dir, 1, require_label=True)
    raw = convert_to_raw(train_dir, held_out_dir, paths["nnUNet_raw"])
    configuration, plans = plan_and_preprocess([c.patient_id for c in train_cases], max(1, int(threads)), forced)
    planned = plans["configurations"][CONFIGURATION]
    trained = train_fold(configuration, fold, iterations, iterations_per_epoch, val_iterations, batch_size)
    start = time.perf_counter()
    predictions = predict(trained["results_dir"], raw / "imagesTs", [c.patient_id for c in held_out],
                          Path(work) / "predictions", fold, tta)
    infer_s = time.perf_counter() - start
    summary = score(predictions, held_out)
    used = {**planned, **plans["configurations"][configuration]}
    plan = {
        "configuration": configuration,
        "planned_3d_fullres": {"spacing_zyx_mm": planned["spacing"], "patch_size_zyx": planned["patch_size"],
                               "batch_size": planned["batch_size"],
                               "median_image_size_zyx": planned["median_image_size_in_voxels"],
                               "n_stages": planned["architecture"]["arch_kwargs"]["n_stages"],
                               "features_per_stage": planned["architecture"]["arch_kwargs"]["features_per_stage"],
                               "normalization": planned["normalization_schemes"]},
        "trained": {"spacing_zyx_mm": used["spacing"], "patch_size_zyx": used["patch_size"],
                    "batch_size": trained["batch_size"], "epochs": trained["epochs"],
                    "iterations_per_epoch": iterations_per_epoch, "val_iterations_per_epoch": val_iterations,
                    "n_stages": used["architecture"]["arch_kwargs"]["n_stages"]},
        "tta": tta, "checkpoint": "checkpoint_final.pth", "log": trained["log"],
    }
    label = name or (ROW_NAME if forced is None else f"nnU-Net v2 ({forced[0]:g} mm, {forced[1]}³ patches)")
    return {"name": label, "train_s": trained["train_s"], "infer_s": infer_s, "parameters": trained["parameters"],
            "summary": summary, "plan": plan}


# ------------------------------------------------------------------------------------------------------------- CLI


def markdown_row(row: dict[str, Any]) -> str:
    """The row in the columns of the Task 1 table (docs/results/benchmarks.md)."""
    p, n = row["summary"]["GTVp"], row["summary"]["GTVn"]
    return (f"| {row['name']} | {p['dice_mean']:.3f} | {p['hd95_mean']:.1f} | {p['surface_dice_mean']:.3f} | "
            f"{n['dsc_agg']:.3f} | {n['f1_agg']:.3f} | {row['parameters'] / 1e6:.2f} M | {row['train_s']:.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/nnunet_baseline"), help="working folder (new per run)")
    parser.add_argument("--data", type=Path, help="folder holding the table's train/ and held_out/ cohorts "
                                                   "(default: generated into --work with the table's seeds)")
    parser.add_argument("--train-cases", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=1000, help="training batches in all")
    parser.add_argument("--iterations-per-epoch", type=int, default=250)
    parser.add_argument("--val-iterations", type=int, default=50, help="nnU-Net's validation batches per epoch")
    parser.add_argument("--batch-size", type=int, default=2, help="0 keeps nnU-Net's planned batch size")
    parser.add_argument("--tta", action="store_true", help="nnU-Net's mirroring at inference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--da-workers", type=int, default=1, help="nnUNet_n_proc_DA")
    parser.add_argument("--force-spacing", type=float, help="train on this isotropic spacing (mm) ...")
    parser.add_argument("--force-patch", type=int, help="... and this cubic patch instead of nnU-Net's plan")
    parser.add_argument("--smoke", action="store_true",
                        help="end to end in minutes: 8 training cases, 2 held out, 2 epochs of 2 iterations")
    args = parser.parse_args(argv)
    if (args.force_spacing is None) != (args.force_patch is None):
        parser.error("--force-spacing and --force-patch go together")
    if args.smoke:
        args.train_cases, args.held_out = 8, 2
        args.iterations, args.iterations_per_epoch, args.val_iterations = 4, 2, 1
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    data = args.data or args.work
    train_dir, test_dir = data / "train", data / "held_out"
    from hecktor.synthetic import generate_cohort

    # The table's cohorts: the same generator, sizes and seeds as bench_segmentation.py.
    if not (train_dir / "cohort.json").is_file():
        generate_cohort(train_dir, args.train_cases, seed=0, size="small")
    if not (test_dir / "cohort.json").is_file():
        generate_cohort(test_dir, args.held_out, seed=1000, size="small")
    forced = None if args.force_spacing is None else (args.force_spacing, args.force_patch)
    row = run_nnunet_row(args.work / "nnunet", train_dir, test_dir, iterations=args.iterations,
                         iterations_per_epoch=args.iterations_per_epoch, val_iterations=args.val_iterations,
                         batch_size=args.batch_size or None, tta=args.tta, threads=args.threads,
                         da_workers=args.da_workers, forced=forced)
    (args.work / "nnunet_row.json").write_text(json.dumps(row, indent=2, default=float))
    print(json.dumps(row["plan"], indent=1, default=float))
    print(f"training {row['train_s']:.0f} s, inference {row['infer_s']:.0f} s for {args.held_out} cases")
    print("| model | GTVp Dice | GTVp HD95 (mm) | GTVp surface Dice | GTVn DSCagg | GTVn F1agg | parameters | "
          "training (s) |")
    print(markdown_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
