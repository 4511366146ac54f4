"""A Task 1 training run's settings (:class:`TrainingConfig`, read from JSON by :func:`load_config_file`), its
network's full config, and the names of the files a run folder holds (see :mod:`hecktor.training.segmentation`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hecktor.errors import InputError
from hecktor.folds import select_folds
from hecktor.plan import RegionPlan
from hecktor.segment import N_CLASSES
from hecktor.training.segmentation.losses import LOSS_SPECS, LOSSES

CONFIG_JSON, PLAN_JSON, FOLDS_JSON = "config.json", "plan.json", "folds.json"
VALIDATION_DIR = "validation"
"""``fold_K/validation/<PID>.nii.gz``: the fold's out-of-fold predictions on the CT grid
(:meth:`hecktor.training.segmentation.trainer.SegmentationTrainer.predict_validation`)."""
VALIDATION_LABELS_DIR = "validation_labels"
"""``fold_K/validation_labels/Task 1/<PID>/``: links to the validation cases' files, a HECKTOR folder holding exactly
the cases of ``validation/`` (what ``hecktor-evaluate --labels`` needs to score one fold)."""
POSTPROCESSING_JSON = "postprocessing.json"
CONFIG_CHANGES_JSON = "config_changes.json"
"""``RUN_DIR/config_changes.json``: every setting changed on ``--resume`` (:data:`MAY_CHANGE_ON_RESUME`), per fold,
with the iteration it applies from."""

MAY_CHANGE_ON_RESUME = ("run_dir", "data_root", "cache_dir", "folds", "epochs", "val_every", "device", "workers",
                        "progress", "log_validation", "predict_validation", "validation_tta", "sw_batch_size")
"""The settings that ``--resume`` may change, recorded in :data:`CONFIG_CHANGES_JSON` as applied from the iteration
the fold resumes at: where things are (the run's, the data's and the cache's folders: the cache entries are checked
against the case files anyway), which folds this command trains, ``epochs`` (to extend or shorten a run: the
warm-up and cosine learning-rate schedule is the new length's from that iteration on), and what does not change
the training's arithmetic (how often and how validation runs, the device, the worker processes, the progress
lines). Any other difference from the run's ``config.json`` (the learning rate, the batch, the loss, the plan, the
network, ...) is refused: the checkpoint's optimizer and schedule would carry on with the recorded one, and the
record would lie."""



@dataclass
class TrainingConfig:
    """Everything a Task 1 training run depends on. Saved as ``config.json`` in the run directory.

    Args:
        data_root: folder holding ``Task 1/`` in the HECKTOR layout (CLI ``--data``).
        run_dir: where folds, checkpoints and metrics go (CLI ``--out``).
        plan: the preprocessing plan (patch size, spacing, windows, ...).
        network: ``hecmamba``, ``unet``, ``vnet``, ``unetr`` or ``segresnet``.
        network_config: overrides of the network's defaults (``hecktor.networks.network_config_defaults``).
        folds: fold indices to train (``None``: all ``n_folds``; CLI ``--fold``).
        n_folds: cross-validation folds of the split (CLI ``--folds``).
        epochs, iterations_per_epoch, batch_size: the training length; one iteration is one batch per rank.
        learning_rate, weight_decay: AdamW (CLI ``--lr``, ``--weight-decay``).
        warmup_fraction: share of all iterations spent warming the learning rate up linearly from 0; a cosine
            decay to ``min_lr_ratio * learning_rate`` follows.
        loss: a name of :data:`LOSS_SPECS`: ``dicece`` (the seed's per-sample Dice + CE), ``batch_dicece``
            (nnU-Net's batch Dice + CE), ``dice`` or ``batch_dice`` (no cross-entropy).
        dice_include_background: the background class in the Dice term (``None``: the loss's own convention).
        ce_class_weights: cross-entropy weight per class (background, GTVp, GTVn); ``None``: all 1.
        deep_supervision: train the network's coarser decoder outputs too (nnU-Net's weighting,
            :func:`hecktor.networks.deep_supervision_weights`); ``None``: on for networks that have heads
            (``hecmamba``, ``dynunet``), off for the others. Inference and exported bundles use the full-resolution
            output only.
        augmentation: MONAI spatial and intensity augmentation of training patches.
        positive_fraction: share of patches centred on a tumour voxel; GTVp and GTVn are picked equally often.
        val_every: validate every this many epochs (and after the last one); 0: never during training, and
            ``checkpoint_best.pt`` is the last epoch's (for a run whose out-of-fold predictions,
            ``predict_validation``, score it anyway: the demo).
        val_overlap: sliding-window overlap of validation.
        sw_batch_size: windows per forward pass in validation.
        around: training region of a case, ``region`` (inference region widened to the mask) or ``mask``.
        cache_dir: preprocessing cache (default: ``<run_dir>/../cache``).
        suv_table: the organisers' ``suv_conversion_tags.csv`` (CLI ``--suv-table``): PETs listed in Bq/ml are read
            as exact SUV (:mod:`hecktor.suv_table`); ``None``: the Bq/ml heuristic alone.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun the local rank picks
            the GPU).
        workers: worker processes per rank that build the preprocessing cache and load patches (``None``: the
            cores available to this process, divided among the ranks on this machine).
        seed: seeds the split, the weights' initialisation and every patch.
        amp: fp16 autocast with gradient scaling, on CUDA only.
        grad_clip: gradient-norm clipping (0 switches it off).
        progress: tqdm progress bars and one line per epoch (rank 0 only).
        log_validation: one line per validation (fold, iteration, loss, validation Dice per label) even without
            ``progress`` (rank 0 only).
        predict_validation: after each fold, segment its validation cases through :class:`hecktor.segment.Segmenter`
            with the best checkpoint into ``fold_K/validation/<PID>.nii.gz`` (out-of-fold predictions on the CT
            grid, the input of postprocessing's choice).
        validation_tta: mirror test-time augmentation for those predictions.
    """

    data_root: str
    run_dir: str
    plan: RegionPlan = field(default_factory=RegionPlan)
    network: str = "hecmamba"
    network_config: dict[str, Any] = field(default_factory=dict)
    folds: list[int] | None = None
    n_folds: int = 5
    epochs: int = 100
    iterations_per_epoch: int = 250
    batch_size: int = 2
    learning_rate: float = 2e-4
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.01
    loss: str = "dicece"
    dice_include_background: bool | None = None
    ce_class_weights: list[float] | None = None
    deep_supervision: bool | None = None
    augmentation: bool = True
    positive_fraction: float = 0.67
    val_every: int = 5
    val_overlap: float = 0.5
    sw_batch_size: int = 2
    around: str = "region"
    cache_dir: str | None = None
    suv_table: str | None = None
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    amp: bool = True
    grad_clip: float = 12.0
    progress: bool = True
    log_validation: bool = True
    predict_validation: bool = True
    validation_tta: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.plan, dict):
            self.plan = RegionPlan.from_dict(self.plan)
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.ce_class_weights is not None:
            weights = [float(w) for w in self.ce_class_weights]
            if len(weights) != N_CLASSES or min(weights) <= 0:
                raise InputError(f"ce_class_weights must be {N_CLASSES} positive numbers (background, GTVp, GTVn), "
                                 f"got {self.ce_class_weights}")
            if not LOSS_SPECS[self.loss].cross_entropy:
                raise InputError(f"ce_class_weights needs a loss with cross-entropy; loss {self.loss!r} has none")
            self.ce_class_weights = weights
        if self.around not in ("region", "mask"):
            raise InputError(f"around must be 'region' or 'mask', got {self.around!r}")
        if self.n_folds < 2:
            raise InputError(f"n_folds must be at least 2, got {self.n_folds}")
        if self.folds is not None:
            self.folds = select_folds(self.folds, self.n_folds)
        for name in ("epochs", "iterations_per_epoch", "batch_size", "sw_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if int(self.val_every) < 0:
            raise InputError(f"val_every must be at least 0 (0: no validation during training), got {self.val_every}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"workers must be >= 0 (or null: all cores), got {self.workers}")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise InputError(f"positive_fraction must lie in [0, 1], got {self.positive_fraction}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise InputError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.val_overlap < 1.0:
            raise InputError(f"val_overlap must lie in [0, 1), got {self.val_overlap}")

    @property
    def fold_list(self) -> list[int]:
        return select_folds(self.folds, self.n_folds)

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.run_dir).resolve().parent / "cache"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["plan"] = self.plan.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON training config: any :class:`TrainingConfig` fields; ``plan`` may be an object (missing fields take
    the RegionPlan defaults) or the path of a plan JSON, relative to the config file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training config not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    data = {key: value for key, value in data.items() if not key.startswith("_")}  # "_comment" keys
    if isinstance(data.get("plan"), str):
        data["plan"] = RegionPlan.load(path.parent / data["plan"]).to_dict()
    return data


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json`` as the trainer wrote it (``{}`` where there is none), refused where an older
    version wrote it (:func:`check_run_config`)."""
    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    check_run_config(record, path)
    return record


def check_run_config(record: dict[str, Any], path: str | Path) -> None:
    """Refuse the ``config.json`` of a run folder written by an older version of the trainer. Run folders are not a
    published format (bundles are, :mod:`hecktor.bundle`): such a run is retrained, or exported by the version that
    wrote it.

    An older run is told by setting names since renamed (``lr``, ``augment``: now ``learning_rate``,
    ``augmentation``), or by a loss without ``deep_supervision`` beside it: written before the loss names changed
    meaning, when ``dicece`` and ``dice`` were batch Dice over all three classes.

    Raises:
        InputError: one line naming the file, what dates it, and the two ways on.
    """
    signs = [f"setting {name!r}" for name in ("lr", "augment") if name in record]
    if "loss" in record and "deep_supervision" not in record:
        signs.append(f"loss {record['loss']!r} without 'deep_supervision'")
    if signs:
        raise InputError(f"{path} was written by an older version of hecktor ({', '.join(signs)}): retrain the run "
                         "into a new --out folder, or export it with the older version")


def resolve_network_config(name: str, overrides: dict[str, Any] | None,
                           deep_supervision: bool | None = None) -> dict[str, Any]:
    """The network's full config: its defaults updated by ``overrides`` (unknown keys are refused), with the
    deep-supervision switch resolved.

    Args:
        name: a registered network.
        overrides: network settings to change.
        deep_supervision: ``TrainingConfig.deep_supervision``: ``None`` turns the heads on for a network that has
            them (unless ``overrides`` says otherwise); ``True`` for a network without heads is an error.
    """
    from hecktor.networks import network_config_defaults

    try:
        defaults = dict(network_config_defaults(name))
    except (KeyError, ValueError) as error:
        raise InputError(f"unknown network {name!r}: {error}") from None
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise InputError(f"network {name!r} has no setting(s) {unknown}; settings: {sorted(defaults)}")
    supported = "deep_supervision" in defaults
    if deep_supervision is None:
        deep_supervision = bool(overrides.get("deep_supervision", supported))
    elif "deep_supervision" in overrides and bool(overrides["deep_supervision"]) != bool(deep_supervision):
        raise InputError(f"deep_supervision is {deep_supervision} but network_config says "
                         f"{overrides['deep_supervision']}; set it in one place")
    if deep_supervision and not supported:
        raise InputError(f"network {name!r} has no deep-supervision heads (networks with heads: hecmamba, dynunet); "
                         "set deep_supervision false")
    defaults.update(overrides)
    if supported:
        defaults["deep_supervision"] = bool(deep_supervision)
    # JSON has no tuples; store lists so that a config read back from JSON compares equal.
    return json.loads(json.dumps(defaults))


def build_segmentation_network(name: str, config: dict[str, Any]) -> nn.Module:
    from hecktor.networks import build_network

    return build_network(name, config)
