"""What the cross-validated fold-ensemble trainers of Task 2 (:mod:`hecktor.training.prognosis`, RFS risk) and
Task 3 (:mod:`hecktor.training.hpv`, HPV status) share.

Both train, per fold, a clinical encoder and (fusion / imaging) a :class:`~hecktor.networks.fused.FusedFeatureExtractor`
on the cohort's cached network inputs, with an early-stopping hold-out of the fold's training patients; both run the
folds of a stratified split under a fixed number of torch threads, and write a run folder of the same layout
(``metrics.json``, ``config.json``, ``folds.json``, ``oof.csv``, the bundle in ``model/``). The tasks differ in the
target, the loss, the held-out score and the fold's last stage: those stay in their modules and come in here as
arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hecktor.biomarkers import BIOMARKER_NAMES, BiomarkerScaler
from hecktor.bundle import check_bundle_destination
from hecktor.clinical import DEFAULT_NUMERIC, ClinicalEncoder
from hecktor.errors import InputError
from hecktor.fold_ensemble import BIOMARKER_MODES
from hecktor.folds import make_folds, save_folds, select_folds
from hecktor.networks.fused import FusedFeatureExtractor
from hecktor.outputs import write_text_atomic
from hecktor.plan import BoxPlan
from hecktor.segment import resolve_device
from hecktor.tasks import TASKS
from hecktor.training.cache import PreprocessingCache, available_cores, report_repairs  # noqa: F401 (the trainers')
from hecktor.training.check_data import check_training_data
from hecktor.training.run_log import RunLog

__all__ = ["FoldRunConfig", "json_safe", "default_threads", "torch_threads", "Batches", "forward_all",
           "split_for_early_stopping", "fit_epochs", "fit_encoder", "load_cached_images", "resolve_split",
           "run_folds", "pool_oof", "save_run", "export_run"]


# ---------------------------------------------------------------------------------------------------------- config
class FoldRunConfig:
    """What the two trainers' config dataclasses share (a mixin: the fields stay in each dataclass, in its order,
    so ``config.json`` keeps its layout). Expects the fields ``mode``, ``n_folds``, ``folds``, ``workers``,
    ``threads``, ``epochs``, ``batch_size``, ``early_stopping_fraction``, ``network``, ``clinical_features`` and
    ``numeric_features``."""

    def check_common(self, modes: Sequence[str]) -> None:
        """The checks both trainers make of their settings (``modes``: the task's modes)."""
        if self.mode not in modes:
            raise InputError(f"mode must be one of {modes}, got {self.mode!r}")
        if self.n_folds < 2:
            raise InputError(f"at least 2 folds are needed, got {self.n_folds}")
        if self.folds is not None:
            self.folds = select_folds(self.folds, self.n_folds)
        if self.workers is not None and self.workers < 0:
            raise InputError(f"workers must be >= 0 (or null: all cores), got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1 (or null: all cores), got {self.threads}")
        if self.epochs < 1 or self.batch_size < 2:
            raise InputError(f"epochs must be >= 1 and batch size >= 2 (got {self.epochs}, {self.batch_size})")
        if not 0.0 <= self.early_stopping_fraction < 0.5:
            raise InputError(f"early_stopping_fraction must lie in [0, 0.5), got {self.early_stopping_fraction}")
        forbidden = {"n_clinical", "mode"} & set(self.network)
        if forbidden:
            raise InputError(f"network config must not set {sorted(forbidden)}: the trainer sets them")

    def fill_clinical_defaults(self) -> None:
        """The clinical features as a list, and the numeric ones (default: those of ``DEFAULT_NUMERIC`` present)."""
        self.clinical_features = list(self.clinical_features)
        if self.numeric_features is None:
            self.numeric_features = [name for name in DEFAULT_NUMERIC if name in self.clinical_features]

    @property
    def fold_list(self) -> list[int]:
        return select_folds(self.folds, self.n_folds)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def new_encoder(self) -> ClinicalEncoder:
        return ClinicalEncoder(features=self.clinical_features, numeric=self.numeric_features or ())

    # The biomarker modes of both tasks (the field ``biomarkers`` expected).
    @property
    def uses_biomarkers(self) -> bool:
        return self.mode in BIOMARKER_MODES

    def check_biomarkers(self) -> None:
        """The chosen biomarkers as a list of known names (``None``: all of them)."""
        if self.biomarkers is not None:
            self.biomarkers = list(self.biomarkers)
            unknown = sorted(set(self.biomarkers) - set(BIOMARKER_NAMES))
            if unknown or not self.biomarkers:
                raise InputError(f"unknown biomarker(s) {unknown or '(none given)'}; choose among "
                                 f"{', '.join(BIOMARKER_NAMES)}")

    def new_scaler(self) -> BiomarkerScaler:
        """An unfitted biomarker scaling of the configured biomarkers (log of the heavy-tailed ones kept)."""
        names = tuple(self.biomarkers or BIOMARKER_NAMES)
        return BiomarkerScaler(names, tuple(n for n in BiomarkerScaler().log_names if n in names))


def json_safe(value: Any) -> Any:
    """NaN (an undefined C-index or AUC) as JSON null: ``json.dumps`` would write the non-standard ``NaN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------- threads
def default_threads() -> int:
    """The threads of a run that sets none: ``$OMP_NUM_THREADS`` where it is set (torch's own default honours it
    too), else all cores (:func:`~hecktor.training.cache.available_cores`)."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else available_cores()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """torch's CPU threads set to ``threads`` (``None``: :func:`default_threads`) for the block, and restored after
    it."""
    wanted = int(threads) if threads else default_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------- cohorts
def load_cached_images(cache: PreprocessingCache, cases: Mapping[str, Any], patient_ids: Sequence[str],
                       plan: BoxPlan, *, progress: bool = True, workers: int | None = None) -> np.ndarray:
    """The network inputs ``(n, 2, z, y, x)`` float32 of ``patient_ids``, preprocessed into ``cache`` where not
    there yet.

    Args:
        cache: the task's preprocessing cache of box entries.
        cases: the training cases by patient ID.
        patient_ids: the cohort's patients, in its order.
        plan: the plan of the cache.
        progress: tqdm bar over the cases to preprocess.
        workers: processes preprocessing side by side (0: this process; ``None``: all cores).
    """
    cache.prepare([cases[pid] for pid in patient_ids], progress=progress, workers=workers)
    images = np.empty((len(patient_ids), 2, *plan.input_shape_zyx), dtype=np.float32)
    for i, pid in enumerate(patient_ids):
        images[i] = cache.load(pid).arrays["image"]
    return images


# ---------------------------------------------------------------------------------------------------------- training
def split_for_early_stopping(
    event: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (into the fold's training set) to train on and to hold out; ``None`` when no hold-out is made.

    The hold-out is stratified by ``event`` (Task 2: relapse, Task 3: HPV-positive) and needs at least two of them
    (otherwise its C-index or AUC is undefined)."""
    n = len(event)
    n_out = int(round(fraction * n))
    n_events_out = int(round(fraction * event.sum()))
    if fraction <= 0 or n_out < 4 or n_events_out < 2 or event.sum() - n_events_out < 2:
        return np.arange(n), None
    rng = np.random.default_rng(seed)
    events, censored = np.flatnonzero(event), np.flatnonzero(event == 0)
    held = np.concatenate([rng.choice(events, n_events_out, replace=False),
                           rng.choice(censored, min(len(censored), n_out - n_events_out), replace=False)])
    held = np.sort(held)
    return np.setdiff1d(np.arange(n), held), held


class Batches:
    """Tensors of a set of patients: images and encoded records, moved to the device batch by batch."""

    def __init__(self, images: np.ndarray | None, clinical: np.ndarray | None, device: torch.device):
        self.images, self.clinical, self.device = images, clinical, device

    def get(self, idx: np.ndarray, flip: np.ndarray | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        image = None
        if self.images is not None:
            image = torch.from_numpy(self.images[idx]).to(self.device)
            if flip is not None and flip.any():
                # Mirror x (the last axis: patient left-right) for the selected samples only.
                mask = torch.from_numpy(flip).to(self.device)
                image = torch.where(mask[:, None, None, None, None], torch.flip(image, dims=(-1,)), image)
        clinical = torch.from_numpy(self.clinical[idx]).to(self.device) if self.clinical is not None else None
        return image, clinical


@torch.inference_mode()
def forward_all(
    network: FusedFeatureExtractor, data: Batches, idx: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fused features ``(n, 128)`` and head outputs ``(n,)`` of the patients ``idx`` (eval mode)."""
    network.eval()
    features, risks = [], []
    for start in range(0, len(idx), batch):
        image, clinical = data.get(idx[start:start + batch])
        f = network.extract_features(image, clinical)
        features.append(f.float().cpu().numpy())
        risks.append(network.risk_head(f).squeeze(1).float().cpu().numpy())
    return np.concatenate(features), np.concatenate(risks)


def fit_epochs(
    network: FusedFeatureExtractor,
    config: Any,
    data: Batches,
    fit_idx: np.ndarray,
    held_idx: np.ndarray | None,
    *,
    seed: int,
    batches: Callable[[np.random.Generator], Iterable[Sequence[int]]],
    loss: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
    held_out: Callable[[np.ndarray], dict[str, float]],
    score_key: str,
    shown_key: str,
    log: RunLog | None = None,
    progress: bool = True,
    description: str = "fold",
) -> tuple[FusedFeatureExtractor, int | None]:
    """The epoch loop both trainers run: AdamW, cosine-annealed learning rate, random left-right mirroring, and the
    epoch of best held-out score kept (early stopping).

    Args:
        network: the fold's freshly initialised network, on ``data.device``.
        config: the run's settings (``learning_rate``, ``weight_decay``, ``epochs``, ``augmentation``,
            ``feature_batch_size``).
        data: tensors of the whole cohort.
        fit_idx: the patients trained on (cohort indices).
        held_idx: the held-out patients (cohort indices), or ``None``: the last epoch is kept.
        seed: seeds the mirroring (``seed + 1``, also handed to ``batches``).
        batches: an epoch's batches as positions into ``fit_idx``, given the run's generator.
        loss: the loss of the network's outputs on the cohort indices ``idx``.
        held_out: the held-out entries of an epoch's log row, from the network's head outputs on ``held_idx``.
        score_key: the entry of ``held_out``'s dict whose highest value picks the epoch.
        shown_key: its name on the progress bar.
        log: the fold's training log (one row per epoch).
        progress: a progress bar over the epochs.
        description: the progress bar's label.

    Returns:
        the network (best held-out epoch, or the last one without a hold-out) in eval mode, and that epoch.
    """
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    rng = np.random.default_rng(seed + 1)
    best_score, best_epoch, best_state = -math.inf, None, None
    bar = tqdm(range(1, config.epochs + 1), desc=description, unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        started = time.perf_counter()
        network.train()
        losses = []
        for positions in batches(rng):
            idx = fit_idx[np.asarray(positions)]
            flip = rng.random(len(idx)) < 0.5 if config.augmentation else None
            image, clinical = data.get(idx, flip)
            value = loss(network(image, clinical), idx)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                               "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        if held_idx is not None:
            _, held_output = forward_all(network, data, held_idx, config.feature_batch_size)
            row.update(held_out(held_output))
            score = row[score_key]
            # ">" keeps the earliest of equally good epochs; NaN (an undefined score) never wins.
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        row["seconds"] = time.perf_counter() - started
        shown = {"loss": f"{row['train_loss']:.3f}"}
        if held_idx is not None:
            shown[shown_key] = f"{row[score_key]:.3f}"
        bar.set_postfix(shown)
        if log is not None:
            log.log(row)
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        best_epoch = config.epochs if held_idx is None else None
    return network.eval(), best_epoch


def fit_encoder(config: Any, rows: Sequence[Mapping[str, Any]],
                train_idx: np.ndarray) -> tuple[ClinicalEncoder | None, np.ndarray | None]:
    """The fold's clinical encoder, fitted on its training rows only, and every row encoded (``None, None`` in
    imaging mode)."""
    if config.mode == "imaging":
        return None, None
    encoder = config.new_encoder().fit([rows[i] for i in train_idx])
    return encoder, encoder.transform(rows)


# ------------------------------------------------------------------------------------------------ cross-validation
def check_data_source(mode: str, data: Any, csv: Any, training_folder: str, *,
                      echo: Callable[[str], None] = print, suv_table: Any = None) -> None:
    """The trainers' one rule on their input: a HECKTOR folder (``--data``) or, in clinical mode only, a CSV
    (``--csv``); exactly one. ``training_folder`` is the task's (``Task 2``), named in the error. Then the data check
    that every trainer runs first (:func:`hecktor.training.check_data.check_training_data`, its lines echoed): on the
    images and the table, or in clinical mode on the table alone.

    Raises:
        InputError: not exactly one source, or a CSV for a mode with images.
        DataCheckError: the data check found errors (each echoed on its line).
    """
    if (data is None) == (csv is None):
        raise InputError("give the data as either --data (a HECKTOR folder) or --csv (clinical mode), not both or none")
    if csv is not None and mode != "clinical":
        raise InputError(f"--csv gives no images; mode {mode!r} needs --data with a '{training_folder}' folder")
    task = next(spec.number for spec in TASKS.values() if spec.training_folder == training_folder)
    check_training_data(task, data, csv, images=mode != "clinical", echo=echo, suv_table=suv_table)


FOLD_LOGS = ("training_log.csv", "training_log.json", "training_log.png")
"""What a fold of Tasks 2 and 3 writes in ``RUN_DIR/fold_k`` while it trains (its :class:`RunLog`); the rest of the
run is written at its end."""


def restart_unfinished_run(run_dir: str | Path, echo: Callable[[str], None] = print) -> list[str]:
    """Clear the fold folders of a run that was stopped before it finished, so that the re-run is not refused.

    A Task 2 or 3 run keeps its folds' results in memory until the end (``metrics.json`` and ``model/``); a run
    killed before that leaves only ``fold_k/`` folders holding their training logs. There is nothing to resume from
    (no checkpoint), so those folds restart from their first epoch: their logs are removed (a restarted fold's log
    would otherwise continue the killed one's rows), with one line naming them. A folder holding anything else, or
    a finished run, is left as it is (:func:`hecktor.training.image_level.prepare_run_dir` then decides).

    Returns:
        the names of the folds cleared.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (run_dir / "metrics.json").exists() or (run_dir / "model").exists():
        return []
    folds = sorted(p for p in run_dir.glob("fold_*") if p.is_dir())
    if not folds or any(f.name not in FOLD_LOGS for fold in folds for f in fold.iterdir()):
        return []
    for fold in folds:
        for log in fold.iterdir():
            log.unlink()
        fold.rmdir()
    names = [fold.name for fold in folds]
    echo(f"{run_dir} holds {', '.join(names)} of a run stopped before it finished (no metrics.json): "
         f"{'that fold restarts' if len(names) == 1 else 'those folds restart'} from the first epoch")
    return names


def resolve_split(
    split: Sequence[tuple[np.ndarray, np.ndarray]] | None, stratify: np.ndarray, centres: Sequence[Any], config: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's split: the given one (it must have ``config.n_folds`` folds) or :func:`hecktor.folds.make_folds`
    with the config's seed, stratified by ``stratify`` and the centres."""
    if split is None:
        split = make_folds(stratify, config.n_folds, seed=config.seed, groups=centres)
    elif len(split) != config.n_folds:
        raise InputError(f"the given split has {len(split)} folds but the config asks for {config.n_folds} (--folds)")
    return [(np.asarray(train_idx), np.asarray(val_idx)) for train_idx, val_idx in split]


def run_folds(
    config: Any,
    cohort: Any,
    split: Sequence[tuple[np.ndarray, np.ndarray]],
    run_dir: str | Path | None,
    run_fold: Callable[..., Any],
    *,
    progress: bool,
    on_fold: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run ``run_fold(config, cohort, k, train_idx, val_idx, device, log_dir, progress)`` for the folds of
    ``config.fold_list`` under ``config.threads`` torch threads; ``log_dir`` is ``RUN_DIR/fold_<k>`` (``None``
    without a run folder). ``on_fold`` is called with each fold's result."""
    device = resolve_device(config.device)
    for k in config.fold_list:  # before any fold trains
        warning = fold_validation_warning(cohort, k, split[k][1])
        if warning is not None:
            print(f"warning: {warning}", flush=True)
    results = []
    with torch_threads(config.threads):
        for k in tqdm(config.fold_list, desc=f"{config.mode} folds", unit="fold", disable=not progress):
            train_idx, val_idx = split[k]
            log_dir = Path(run_dir) / f"fold_{k}" if run_dir is not None else None
            result = run_fold(config, cohort, k, train_idx, val_idx, device, log_dir, progress)
            results.append(result)
            if on_fold is not None:
                on_fold(result)
    return results


def fold_validation_warning(cohort: Any, k: int, val_idx: np.ndarray) -> str | None:
    """Why fold ``k``'s validation patients cannot score it (``None`` when they can): Task 3's (a cohort with
    ``labels``) all of one HPV status, so that its AUC is undefined and counts as chance in the ensemble weights.
    A Task 2 fold (a cohort with ``event``) whose validation patients hold no relapse is refused here, before any
    fold trains, since its C-index is undefined and the ensemble needs it."""
    n = len(val_idx)
    if hasattr(cohort, "labels"):
        classes = np.unique(np.asarray(cohort.labels)[val_idx])
        if len(classes) < 2:
            status = "HPV-positive" if n and classes[0] == 1 else "HPV-negative"
            return (f"fold {k}: its {n} validation patient(s) are all {status}: its AUC is undefined and counts as "
                    "chance (0.5) in the ensemble weights; use fewer folds (--folds) or more patients of both classes")
    elif hasattr(cohort, "event") and not np.asarray(cohort.event)[val_idx].any():
        raise InputError(f"fold {k}: its {n} validation patient(s) hold no relapse, so the fold has no C-index to "
                         f"weight it by ({int(np.asarray(cohort.event).sum())} relapse(s) in all); use fewer folds "
                         "(--folds) so that every fold holds a relapse, or add patients with relapses")
    return None


def pool_oof(n: int, folds: Sequence[Any], attribute: str) -> np.ndarray:
    """Every patient's out-of-fold value ``attribute`` of the fold that did not train on it (NaN in folds not
    trained)."""
    pooled = np.full(n, np.nan)
    for fold in folds:
        pooled[fold.val_idx] = getattr(fold, attribute)
    return pooled


def save_run(
    run_dir: str | Path,
    *,
    metrics: Mapping[str, Any],
    config: Any,
    split: Sequence[tuple[np.ndarray, np.ndarray]],
    patient_ids: Sequence[str],
    oof_header: str,
    oof_row: Callable[[int, str, int], str],
    predictor: Any,
) -> Path:
    """Write a run folder: ``metrics.json``, ``config.json``, ``folds.json``, ``oof.csv`` (``oof_header``, then
    ``oof_row(i, patient_id, fold)`` per patient) and the predictor's bundle in ``RUN_DIR/model``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(json_safe(dict(metrics)), indent=2) + "\n", run_dir / "metrics.json")
    write_text_atomic(json.dumps(config.to_dict(), indent=2) + "\n", run_dir / "config.json")
    save_folds(split, run_dir / "folds.json", patient_ids)
    fold_of = np.empty(len(patient_ids), dtype=np.int64)
    for k, (_, val_idx) in enumerate(split):
        fold_of[val_idx] = k
    lines = [oof_header] + [oof_row(i, pid, fold_of[i]) for i, pid in enumerate(patient_ids)]
    write_text_atomic("\n".join(lines) + "\n", run_dir / "oof.csv")
    predictor.to_bundle(run_dir / "model", overwrite=True)  # the run's own model, rewritten by a re-run
    return run_dir


# ----------------------------------------------------------------------------------------------------------- export
def export_run(run_dir: str | Path, out_dir: str | Path, predictor_class: Any, task: str, script: str, *,
               overwrite: bool = False) -> Any:
    """Copy a run's verified fold ensemble (``RUN_DIR/model``) to ``out_dir`` as a bundle and return it as loaded
    from there (manifest, SHA-256 and plan digest checked twice: on reading the run and on reading the copy).

    Args:
        run_dir: the training run.
        out_dir: where the bundle goes.
        predictor_class: the task's predictor (``from_bundle``, ``to_bundle``).
        task: the task's name in messages (``"Task 2"``).
        script: the training script named in messages.
        overwrite: replace an earlier bundle at ``out_dir`` (anything else there is refused, never deleted).

    Raises:
        InputError: ``run_dir`` is not a finished run, ``out_dir`` is the run's own model folder, or ``out_dir`` is
            neither absent, empty nor (with ``overwrite``) a bundle.
    """
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "manifest.json").is_file():
        raise InputError(f"{run_dir} is not a finished {task} run (no {model_dir / 'manifest.json'}); "
                         f"train it with {script}")
    if Path(out_dir).resolve() == model_dir.resolve():
        raise InputError(f"--out {out_dir} is the run's own model folder; choose another folder")
    check_bundle_destination(out_dir, overwrite)  # before the run's model is even read
    predictor_class.from_bundle(model_dir, device="cpu").to_bundle(out_dir, overwrite=overwrite)
    metrics_path = run_dir / "metrics.json"
    warning = chance_warning(json.loads(metrics_path.read_text())) if metrics_path.is_file() else None
    if warning is not None:
        print(f"warning: {run_dir}: {warning}", file=sys.stderr, flush=True)
    return predictor_class.from_bundle(out_dir, device="cpu")


CHANCE_CINDEX_MARGIN = 0.02
"""A Task 2 run whose mean out-of-fold C-index is at most 0.5 + this is at chance (:func:`chance_warning`)."""
CHANCE_BALANCED_ACCURACY, CHANCE_AUC = 0.5, 0.55
"""A Task 3 run at or below either of these mean out-of-fold scores is at chance (:func:`chance_warning`)."""


def chance_warning(metrics: Mapping[str, Any]) -> str | None:
    """One line when a run's out-of-fold score (its ``metrics.json``) is at chance, as an export says: Task 2's mean
    C-index within :data:`CHANCE_CINDEX_MARGIN` of 0.5 or below, Task 3's mean balanced accuracy at most
    :data:`CHANCE_BALANCED_ACCURACY` or mean AUC at most :data:`CHANCE_AUC` (an undefined score counts as chance);
    ``None`` otherwise."""
    def shown(value: Any) -> str:
        return "undefined" if value is None or not math.isfinite(value) else f"{value:.3f}"

    def at_most(value: Any, limit: float) -> bool:
        return value is None or not math.isfinite(value) or value <= limit

    advice = ("the ensemble does no better than chance on patients it did not train on; check the outcome column and "
              "the data check's warnings, and train longer or on more patients before using it")
    if "cindex_mean" in metrics:
        cindex = metrics["cindex_mean"]
        if at_most(cindex, 0.5 + CHANCE_CINDEX_MARGIN):
            return f"out-of-fold C-index {shown(cindex)} (chance: 0.5): {advice}"
    elif "balanced_accuracy_mean" in metrics or "auc_mean" in metrics:
        accuracy, auc = metrics.get("balanced_accuracy_mean"), metrics.get("auc_mean")
        if at_most(accuracy, CHANCE_BALANCED_ACCURACY) or at_most(auc, CHANCE_AUC):
            return (f"out-of-fold balanced accuracy {shown(accuracy)}, AUC {shown(auc)} (chance: 0.5): {advice}")
    return None
