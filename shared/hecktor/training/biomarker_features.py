"""The biomarker modes of Tasks 2 and 3 (Task 2's ``biomarkers`` and ``fusion+biomarkers``, Task 3's
``biomarkers``): the Task 1 masks the survival model or the HPV classifier learns from.

The training patients' masks are the **out-of-fold predictions of a Task 1 cross-validation**
(:func:`write_validation_masks`), never the ground truth; patients outside the Task 1 cohort are segmented by the
Task 1 bundle of all its folds (:func:`segment_cases`), which :func:`export_segmentation_bundle` also nests in the
run. :func:`add_segmentation_features` measures each patient's PET biomarkers (and, for ``fusion+biomarkers``, cuts
its tumour-centred cube) from its mask as the container does from a predicted one. :func:`attach_biomarkers` is that
sequence, which both trainers run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hecktor.biomarkers import TumourCrop, body_relative_pet, compute_biomarkers
from hecktor.datasets import TrainingCase, list_training_cases
from hecktor.errors import InputError
from hecktor.images import read_image
from hecktor.outputs import write_mask
from hecktor.plan import BoxPlan
from hecktor.repair import repair_case
from hecktor.suv_table import SuvTable
from hecktor.training.image_level import SEGMENTATION_BUNDLE
from hecktor.training.prognosis_cohort import Cohort

__all__ = ["POSTPROCESSED_DIR", "validation_mask_path", "write_validation_masks", "segmentation_features", "add_segmentation_features",
           "export_segmentation_bundle", "segment_cases", "attach_biomarkers"]

logger = logging.getLogger(__name__)


def validation_mask_path(segmentation_run: str | Path, fold: int, patient_id: str) -> Path:
    """Where the Task 1 trainer writes fold ``fold``'s out-of-fold mask of ``patient_id``."""
    from hecktor.training.segmentation import VALIDATION_DIR

    return Path(segmentation_run) / f"fold_{fold}" / VALIDATION_DIR / f"{patient_id}.nii.gz"


POSTPROCESSED_DIR = "validation_postprocessed"
"""Where :func:`write_validation_masks` puts the out-of-fold masks after the run's chosen postprocessing."""


def write_validation_masks(
    segmentation_run: str | Path,
    *,
    folds: Sequence[int] | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    postprocessed: bool = True,
) -> dict[str, Path]:
    """Out-of-fold masks of a Task 1 cross-validation run, in ``RUN_DIR/fold_k/validation/<PID>.nii.gz`` (UInt8 on the
    CT's grid). The Task 1 trainer writes them after each fold (``predict_validation``, on by default, with the best
    checkpoint); masks already there are used as they are, and only the validation patients of a fold without them
    (a run trained with ``predict_validation`` off, or before it existed) are segmented here, by the same function
    and settings (:func:`hecktor.training.segmentation.predict_validation_cases`).

    With ``postprocessed`` (the default) and a postprocessing chosen for the run (``RUN_DIR/postprocessing.json``,
    which the exported Task 1 bundle applies to every mask it answers), the masks returned are those masks after it,
    in ``RUN_DIR/fold_k/validation_postprocessed/`` (written again on each call: they are small): the biomarkers a
    model learns from are measured on what the container's nested Task 1 model will give it. Without that file the
    bundle does not postprocess either, and the masks are returned as they are.

    Args:
        segmentation_run: a ``train_segmentation.py --out`` folder (``config.json``, ``plan.json``, ``folds.json``,
            ``fold_k/checkpoint_<checkpoint>.pt``).
        folds: the folds whose validation patients to segment (default all; e.g. one per process).
        checkpoint: the checkpoint that segments missing masks: ``best`` (default, as the trainer) or ``last``.
        postprocessed: the masks after the run's chosen postprocessing (above); ``False``: as the networks made them.

    Returns:
        the mask path of every validation patient of ``folds``, by patient ID.

    Raises:
        InputError: not a finished cross-validation (a fold without masks or a checkpoint to make them), or a run
            of the old layout (:func:`hecktor.training.segmentation.read_run_config`).
    """
    from hecktor.folds import load_folds as load_split
    from hecktor.plan import RegionPlan
    from hecktor.training.segmentation import CONFIG_JSON, FOLDS_JSON, PLAN_JSON, predict_validation_cases, \
        read_run_config

    run = Path(segmentation_run)
    for name in (CONFIG_JSON, PLAN_JSON, FOLDS_JSON):
        if not (run / name).is_file():
            raise InputError(f"{run} is not a Task 1 training run ({name} missing); train it with "
                             "training/train_segmentation.py --fold all")
    config = read_run_config(run)
    cases = {case.patient_id: case for case in list_training_cases(config["data_root"], 1,
                                                                   suv_table=config.get("suv_table"))}
    ids = sorted(cases)
    split = load_split(run / FOLDS_JSON, case_ids=ids)
    masks: dict[str, Path] = {}
    todo: dict[int, list[str]] = {}
    for k, (_, val_idx) in enumerate(split):
        if folds is not None and k not in folds:
            continue
        for i in val_idx:
            masks[ids[i]] = validation_mask_path(run, k, ids[i])
        missing = [ids[i] for i in val_idx if not masks[ids[i]].is_file()]
        if missing:
            todo[k] = missing
    absent = [k for k in todo if not (run / f"fold_{k}" / f"checkpoint_{checkpoint}.pt").is_file()]
    if absent:
        raise InputError(f"{run}: fold(s) {absent} have neither out-of-fold masks nor checkpoint_{checkpoint}.pt; "
                         "biomarkers need every fold (train_segmentation.py --fold all)")
    plan = RegionPlan.load(run / PLAN_JSON) if todo else None
    for k, pids in todo.items():
        if echo is not None:
            echo(f"Task 1 fold {k}: segmenting {len(pids)} validation patient(s) into "
                 f"{validation_mask_path(run, k, pids[0]).parent}")
        predict_validation_cases(run / f"fold_{k}" / f"checkpoint_{checkpoint}.pt", plan, [cases[p] for p in pids],
                                 run / f"fold_{k}", device=device, tta=bool(config.get("validation_tta", False)),
                                 overlap=float(config.get("val_overlap", 0.5)),
                                 sw_batch_size=int(config.get("sw_batch_size", 2)), progress=progress)
    return _postprocessed(run, masks) if postprocessed else masks


def _postprocessed(run: Path, masks: dict[str, Path]) -> dict[str, Path]:
    """``masks`` after the run's chosen postprocessing (:func:`write_validation_masks`), or as they are without one."""
    import json

    from hecktor.postprocessing import Postprocessing
    from hecktor.training.segmentation import POSTPROCESSING_JSON

    choice = run / POSTPROCESSING_JSON
    if not choice.is_file():
        return masks
    steps = Postprocessing.from_dict(json.loads(choice.read_text()).get("postprocessing"), source=str(choice))
    if steps.is_identity:
        return masks
    out = {}
    for pid, path in masks.items():
        out[pid] = write_mask(steps.apply(read_image(path, "segmentation")),
                              path.parent.parent / POSTPROCESSED_DIR / path.name)
    return out


def segmentation_features(
    case: TrainingCase, mask_path: str | Path | None, crop: TumourCrop | None, plan: BoxPlan,
    suv_reference: str = "body",
) -> tuple[dict[str, float], np.ndarray | None, tuple[str, ...]]:
    """One patient's biomarkers (and, with ``crop``, its tumour-centred cube) from its mask file, as
    :meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>` measures them from a predicted mask."""
    from hecktor.prognosis import tumour_cube

    ct, pet, repairs = repair_case(*case.read()[:2], ct_pad_hu=plan.ct_pad_hu, pet_pad_suv=plan.pet_pad_suv)
    mask = read_image(mask_path, "segmentation") if mask_path is not None else None
    # in the repaired PET (relative to the body with suv_reference "body"), as the container measures them
    markers = compute_biomarkers(mask, body_relative_pet(pet, ct) if suv_reference == "body" else pet)
    cube = tumour_cube(ct, pet, mask, crop, plan) if crop is not None else None
    for line in repairs:  # the training PETs in Bq/ml of some centres: their biomarkers are measured in SUV
        logger.warning("%s: %s", case.patient_id, line)
    return markers.values, cube, markers.warnings


def add_segmentation_features(
    cohort: Cohort,
    root: str | Path,
    masks: Mapping[str, str | Path],
    *,
    crop: TumourCrop | None = None,
    suv_reference: str = "body",
    progress: bool = True,
    suv_table: SuvTable | None = None,
    task: int = 2,
) -> Cohort:
    """Fill ``cohort.biomarkers`` (and, with ``crop``, ``cohort.crops``) from each patient's mask (the out-of-fold
    Task 1 predictions of :func:`write_validation_masks`) and its PET (and CT) in the ``task`` folder (2, or 3 with
    Task 3's :class:`~hecktor.training.hpv_cohort.HPVCohort`); the PETs that ``suv_table`` lists in Bq/ml are read as exact
    SUV (:mod:`hecktor.suv_table`).

    Raises:
        InputError: a patient without a mask.
    """
    absent = [pid for pid in cohort.patient_ids if pid not in masks]
    if absent:
        raise InputError(f"no segmentation for {len(absent)} patient(s) ({', '.join(absent[:5])}); predict them "
                         "with the Task 1 model first")
    cases = {case.patient_id: case for case in list_training_cases(root, task, suv_table=suv_table)}
    plan = cohort.plan or BoxPlan()
    markers, cubes, empty = [], [], 0
    for pid in tqdm(cohort.patient_ids, desc="biomarkers", unit="case", leave=False, disable=not progress):
        values, cube, warnings = segmentation_features(cases[pid], masks[pid], crop, plan, suv_reference)
        markers.append(values)
        cubes.append(cube)
        empty += bool(warnings)
    cohort.biomarkers = markers
    cohort.crops = np.stack(cubes).astype(np.float32) if crop is not None else None
    if empty:
        logger.warning("%d of %d segmentation(s) hold no primary tumour: their biomarkers take the no-tumour value",
                       empty, len(cohort))
    return cohort


def export_segmentation_bundle(segmentation_run: str | Path, run_dir: str | Path) -> Path:
    """The Task 1 bundle of every fold of ``segmentation_run`` (best checkpoints: the networks of the out-of-fold
    masks, and of the Task 1 container's bundle) in ``RUN_DIR/segmentation_bundle``."""
    from hecktor.training.segmentation import export_bundle as export_task1

    out, _ = export_task1(segmentation_run, Path(run_dir) / SEGMENTATION_BUNDLE, checkpoint="best")
    return out


def segment_cases(bundle: str | Path, root: str | Path, patient_ids: Sequence[str], out_dir: str | Path, *,
                  device: str = "auto", progress: bool = True, suv_table: SuvTable | None = None,
                  task: int = 2) -> dict[str, Path]:
    """Masks of the ``task`` folder's patients that no Task 1 fold trained on, by the Task 1 bundle (every fold, no
    TTA), into ``out_dir/<PID>.nii.gz``."""
    from hecktor.segment import Segmenter

    segmenter = Segmenter.from_bundle(bundle, device=device)
    cases = {case.patient_id: case for case in list_training_cases(root, task, suv_table=suv_table)}
    masks = {}
    for pid in tqdm(patient_ids, desc="Task 1 masks", unit="case", leave=False, disable=not progress):
        ct, pet, _ = cases[pid].read()
        masks[pid] = write_mask(segmenter.predict(ct, pet, tta=False), Path(out_dir) / f"{pid}.nii.gz")
    return masks


def attach_biomarkers(cohort: Cohort, data: str | Path, segmentation: str | Path, run_dir: str | Path, *, task: int,
                      crop: TumourCrop | None = None, suv_reference: str = "body", device: str = "auto",
                      progress: bool = True, suv_table: SuvTable | None = None,
                      echo: Callable[[str], None] = print) -> Path:
    """What the biomarker modes do before cross-validating: the out-of-fold masks of the Task 1 cross-validation
    ``segmentation`` (written where absent), its folds exported to ``RUN_DIR/segmentation_bundle`` (nested in the
    task's bundle), the ``task`` folder's patients outside the Task 1 cohort segmented by that bundle, and every
    patient's biomarkers (and, with ``crop``, tumour cube) measured into ``cohort``.

    Returns:
        the exported Task 1 bundle (the config's ``segmentation_bundle``).
    """
    masks = dict(write_validation_masks(segmentation, device=device, progress=progress, echo=echo))
    bundle = export_segmentation_bundle(segmentation, run_dir)
    outside = [pid for pid in cohort.patient_ids if pid not in masks]
    if outside:
        echo(f"{len(outside)} Task {task} patient(s) are not in the Task 1 cohort: segmented by all Task 1 folds")
        masks.update(segment_cases(bundle, data, outside, Path(run_dir) / "masks", device=device, progress=progress,
                                   suv_table=suv_table, task=task))
    add_segmentation_features(cohort, data, masks, crop=crop, suv_reference=suv_reference, progress=progress,
                              suv_table=suv_table, task=task)
    return bundle
