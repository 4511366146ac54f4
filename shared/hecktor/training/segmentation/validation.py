"""Out-of-fold predictions of Task 1 training: each fold's validation cases segmented by the containers' code path
with the fold's best network, and a HECKTOR folder of links to those cases' files, so that ``hecktor-evaluate``
scores the fold and postprocessing is chosen on them (:mod:`hecktor.training.segmentation.postprocessing_choice`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from hecktor.datasets import TrainingCase
from hecktor.plan import RegionPlan
from hecktor.training.segmentation.checkpoints import network_from_checkpoint
from hecktor.training.segmentation.config import VALIDATION_DIR, VALIDATION_LABELS_DIR

def link_case_files(case: TrainingCase, root: Path) -> Path:
    """``root/Task 1/<PID>/`` holding symbolic links to the case's CT, PET and label (a HECKTOR folder of chosen
    cases, without copying images)."""
    from hecktor.tasks import get_task

    folder = root / get_task(1).training_folder / case.patient_id
    folder.mkdir(parents=True, exist_ok=True)
    for source in (case.ct_path, case.pet_path, case.label_path):
        if source is None:
            continue
        link = folder / Path(source).name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(source).resolve())
    return folder


def predict_validation_cases(
    checkpoint: str | Path,
    plan: RegionPlan,
    cases: Sequence[TrainingCase],
    fold_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    tta: bool = False,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    progress: bool = False,
) -> dict[str, Path]:
    """Out-of-fold predictions of one fold: ``cases`` (its validation cases) segmented from their CT and PET files by
    :meth:`hecktor.segment.Segmenter.predict` (the containers' path: whole region, back onto the CT grid, no
    postprocessing) with the network of ``checkpoint``, written to ``fold_dir/validation/<PID>.nii.gz``, and
    ``fold_dir/validation_labels/Task 1/<PID>/`` links to the cases' files, so that ``hecktor-evaluate --task 1 --pred
    fold_K/validation --labels fold_K/validation_labels`` scores the fold. The trainer calls it after each fold; Task 2's
    biomarker modes call it for folds of older runs that have none (:func:`hecktor.training.biomarker_features.
    write_validation_masks`). Returns the mask path of each case, by patient ID."""
    from hecktor.outputs import write_mask
    from hecktor.segment import Segmenter

    fold_dir = Path(fold_dir)
    network, _ = network_from_checkpoint(checkpoint)
    segmenter = Segmenter([network], plan, fold_names=[fold_dir.name], device=device, sw_batch_size=sw_batch_size)
    masks = {}
    for case in tqdm(cases, desc=f"{fold_dir.name} validation", unit="case", leave=False, disable=not progress):
        ct, pet, _ = case.read()
        masks[case.patient_id] = write_mask(segmenter.predict(ct, pet, tta=tta, overlap=overlap),
                                            fold_dir / VALIDATION_DIR / f"{case.patient_id}.nii.gz")
        link_case_files(case, fold_dir / VALIDATION_LABELS_DIR)
    return masks
