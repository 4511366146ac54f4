"""Task 1 training (library behind ``training/train_segmentation.py``): cached preprocessing, cross-validation folds,
patch training, validation, checkpoints, export.

A run directory looks like::

    RUN_DIR/
      config.json        the resolved TrainingConfig (plan and full network config included)
      plan.json          the preprocessing RegionPlan (copied into the exported bundle)
      folds.json         the cross-validation split (hecktor.folds.save_folds format, with case ids)
      fold_K/
        checkpoint_best.pt, checkpoint_last.pt   model + optimizer + scheduler + scaler + epoch + RNG state
        checkpoint_last.previous.pt              the last checkpoint before the current one (save_checkpoint)
        metrics.csv, metrics.json, metrics.png   one row per epoch (hecktor.training.run_log)

Each case is preprocessed once by :func:`hecktor.patches.preprocess_training_case` (the same resampling code as
inference) and kept in the trainers' preprocessing cache (:mod:`hecktor.training.cache`) under
``CACHE_DIR/region-<plan digest>-<around>/``; another plan gets another cache. Training draws patches from the
cached regions (positive/negative ratio, positives centred on GTVp and GTVn equally often, then MONAI
augmentation); validation runs the inference code path (:func:`hecktor.segment.sliding_window_probabilities`) on
whole cached regions.

Every patch is drawn from a random stream keyed by (seed, epoch, rank, index), so runs are reproducible whatever
the number of data-loader workers, and a resumed run draws exactly the patches an uninterrupted one would have.

A run killed at any point (SIGKILL included) continues with ``resume`` from each fold's last complete checkpoint,
losing at most the epoch in progress: checkpoints are written to a temporary file, verified (CRC-32 of every
record) and renamed, and a damaged checkpoint (a copy cut short, a bad disk) is moved aside and the one before it
used (:func:`save_checkpoint`, :func:`find_resume_checkpoint`).

Multi-GPU / multi-process: launch the CLI with ``torchrun --nproc_per_node N``; every rank draws its own patches,
gradients are averaged by DistributedDataParallel (``nccl`` on CUDA, ``gloo`` on CPU), validation cases are shared
out between the ranks, and only rank 0 writes files. When a rank dies the others stop with one
:class:`DistributedJobError` line (its connections close at once, or torchrun stops them); one that hangs is given
up after the process-group timeout (:func:`init_distributed`, ``$HECKTOR_DIST_TIMEOUT_S``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

import hecktor
from hecktor.errors import HecktorError, InputError
from hecktor.folds import kfold_split, load_folds, save_folds, select_folds
from hecktor.geometry import Grid
from hecktor.io import TrainingCase, atomic_path, list_training_cases, write_text_atomic
from hecktor.metrics import dice
from hecktor.patches import preprocess_training_case, sample_patches, sampling_indices
from hecktor.plan import RegionPlan
from hecktor.segment import IN_CHANNELS, N_CLASSES, autocast_context, resolve_device, sliding_window_probabilities
from hecktor.training.cache import PreprocessingCache, resolve_workers
from hecktor.training.run_log import RunLog

CHECKPOINTS = ("best", "last")
FOREGROUND = {"GTVp": 1, "GTVn": 2}
CONFIG_JSON, PLAN_JSON, FOLDS_JSON = "config.json", "plan.json", "folds.json"
RENAMED_SETTINGS = {"lr": "learning_rate", "augment": "augmentation"}
"""Former names of settings (both trainers now share one vocabulary); a config that uses one is refused by name."""
VALIDATION_DIR = "validation"
"""``fold_K/validation/<PID>.nii.gz``: the fold's out-of-fold predictions on the CT grid (:meth:`predict_validation`)."""
VALIDATION_LABELS_DIR = "validation_labels"
"""``fold_K/validation_labels/Task 1/<PID>/``: links to the validation cases' files, a HECKTOR folder holding exactly
the cases of ``validation/`` (what ``hecktor-evaluate --labels`` needs to score one fold)."""
POSTPROCESSING_JSON = "postprocessing.json"


@dataclass(frozen=True)
class LossSpec:
    """What a loss name means.

    Attributes:
        batch_dice: Dice summed over the whole batch before dividing (nnU-Net's ``batch_dice``), rather than one Dice
            per sample and class averaged (MONAI's default).
        cross_entropy: add the cross-entropy of the softmax (weights: ``ce_class_weights``).
        dice_background: the background class counts in the Dice term (MONAI's default); nnU-Net leaves it out.
            ``TrainingConfig.dice_include_background`` overrides it.
        description: one line for ``--help`` and the README.
    """

    batch_dice: bool
    cross_entropy: bool
    dice_background: bool
    description: str


LOSS_SPECS: dict[str, LossSpec] = {
    "dicece": LossSpec(False, True, True, "the seed's Dice + CE: soft Dice per sample and class (background "
                                          "included, MONAI DiceCELoss's defaults) + cross-entropy"),
    "batch_dicece": LossSpec(True, True, False, "nnU-Net's: soft Dice over the whole batch, foreground classes only, "
                                                "+ cross-entropy"),
    "dice": LossSpec(False, False, True, "soft Dice per sample and class (background included), no cross-entropy"),
    "batch_dice": LossSpec(True, False, False, "soft Dice over the whole batch, foreground only, no cross-entropy"),
}
LOSSES = tuple(LOSS_SPECS)
LEGACY_LOSSES = {
    "dicece": "batch Dice over all three classes + CE (now loss 'batch_dicece' with dice_include_background true)",
    "dice": "batch Dice over all three classes (now loss 'batch_dice' with dice_include_background true)",
}
"""What the loss names meant in run folders written before the vocabulary above (their ``config.json`` lacks
``deep_supervision``): both were MONAI losses with ``batch=True`` and the background in the Dice term."""


# ---------------------------------------------------------------------------------------------------- configuration


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
        val_every: validate every this many epochs (and after the last one).
        val_overlap: sliding-window overlap of validation.
        sw_batch_size: windows per forward pass in validation.
        around: training region of a case, ``region`` (inference region widened to the mask) or ``mask``.
        cache_dir: preprocessing cache (default: ``<run_dir>/../cache``).
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
        for name in ("epochs", "iterations_per_epoch", "batch_size", "val_every", "sw_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
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
        renamed = sorted(set(data) & set(RENAMED_SETTINGS))
        if renamed:
            spelled = ", ".join(f"{old!r} is now {RENAMED_SETTINGS[old]!r}" for old in renamed)
            raise InputError(f"renamed training setting(s): {spelled}; rename them in the config")
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


# --------------------------------------------------------------------------------------------------- distributed


DIST_TIMEOUT_ENV = "HECKTOR_DIST_TIMEOUT_S"
DEFAULT_DIST_TIMEOUT_S = 1800.0
"""Process-group timeout: how long a rank waits in a collective for a peer that is alive but stuck. A peer that dies
is noticed at once (its connections close); the timeout is for a hung one, and must exceed the longest legitimate
wait (a rank building more of the preprocessing cache than the others)."""


class DistributedJobError(HecktorError):
    """Another process of the ``torchrun`` job died or stopped answering, so this one stops too. Not a wrong input:
    :func:`hecktor.training.cli.run_cli` prints its one line and exits with :attr:`exit_status` 1."""

    exit_status = 1


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def dist_timeout_s() -> float:
    """The process-group timeout in seconds: ``$HECKTOR_DIST_TIMEOUT_S``, else :data:`DEFAULT_DIST_TIMEOUT_S`."""
    text = os.environ.get(DIST_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_DIST_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise InputError(f"{DIST_TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def init_distributed(device_name: str, timeout_s: float | None = None) -> tuple[DistributedContext, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, and pick this rank's device.

    Args:
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        timeout_s: how long a collective waits for a stuck peer before it fails (default :func:`dist_timeout_s`).
            Under ``torchrun`` this process also turns SIGTERM (torchrun stopping the job because another rank
            failed) into a :class:`DistributedJobError`, so that every rank ends with one line, not a traceback.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world_size > 1 else 0)
    context = DistributedContext(rank, world_size, local_rank, local_world_size)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(seconds=timeout_s if timeout_s is not None else dist_timeout_s())
        with distributed_failures(context):
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        _stop_on_sigterm(context)
    return context, device


def _stop_on_sigterm(context: DistributedContext) -> None:
    """Raise :class:`DistributedJobError` on SIGTERM, which torchrun sends to the surviving ranks when one fails
    (left alone where someone else already handles SIGTERM, or off the main thread, where Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise DistributedJobError(
            f"rank {context.rank} of {context.world_size} was stopped (SIGTERM): torchrun stops every process of a "
            "job when one fails; see the first failed rank's output, then continue with --resume")

    signal.signal(signal.SIGTERM, stop)


_COLLECTIVE_FAILURES = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
                        "timed out")


def _is_collective_failure(error: BaseException) -> bool:
    """An error of a collective or of the rendezvous (a peer gone or stuck), as opposed to a bug or a bad input.
    Gloo raises plain RuntimeErrors, so their text is looked at too."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error).lower() for marker in _COLLECTIVE_FAILURES)


def _short(error: BaseException) -> str:
    """The gist of a backend error: its first sentence without the source location (``[.../pair.cc:537] ...``)."""
    text = " ".join(str(error).split())
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:200]


@contextmanager
def distributed_failures(context: DistributedContext) -> Iterator[None]:
    """Turn the failure of a collective (a peer died: connection closed; or hung: process-group timeout) into a
    one-line :class:`DistributedJobError`; anything else passes through unchanged."""
    try:
        yield
    except DistributedJobError:
        raise
    except Exception as error:
        if not context.enabled or not _is_collective_failure(error):
            raise
        raise DistributedJobError(
            f"rank {context.rank} of {context.world_size} lost contact with another process of the job "
            f"({_short(error)}): it died or hung; see its output, then continue with --resume") from error


# ----------------------------------------------------------------------------------------------------------- cache


@dataclass
class CachedRegion:
    """A cached training region: image (2, z, y, x) float16 (memory-mapped), label (z, y, x) uint8, grid."""

    image: np.ndarray
    label: np.ndarray
    grid: Grid


def region_entry(case: TrainingCase, plan: RegionPlan, around: str = "region") -> tuple[dict[str, np.ndarray],
                                                                                         dict[str, Any]]:
    """The cache entry of one case (:class:`~hecktor.training.cache.PreprocessingCache`'s ``preprocess``): its
    training region by :func:`hecktor.patches.preprocess_training_case`. The image is stored as float16: half the
    disk and page cache of float32, and the normalised CT/PET values lose nothing that matters at fp16's 3
    significant digits."""
    ct, pet, label = case.read()
    region = preprocess_training_case(ct, pet, label, plan, around=around)
    arrays = {"image": region.image.astype(np.float16), "label": region.label.astype(np.uint8)}
    info = {
        "grid": dataclasses.asdict(region.grid),
        "localization_found": bool(region.localization.found),
        "label_voxels": [int(np.count_nonzero(region.label == v)) for v in range(N_CLASSES)],
    }
    return arrays, info


def region_cache(root: str | Path, plan: RegionPlan, around: str = "region") -> PreprocessingCache:
    """The preprocessing cache of Task 1 training regions: one folder per (plan digest, ``around``)."""
    return PreprocessingCache(root, plan, partial(region_entry, around=around), variant=around)


def load_region(cache: PreprocessingCache, patient_id: str) -> CachedRegion:
    """A cached training region; the image is memory-mapped copy-on-write (patches read only the pages they need)."""
    entry = cache.load(patient_id, mmap=("image",))
    grid = Grid(**{k: tuple(v) for k, v in entry.info["grid"].items()})
    return CachedRegion(entry.arrays["image"], entry.arrays["label"], grid)


# ------------------------------------------------------------------------------------------------------------ data


def build_augmentation():
    """MONAI augmentation of a ``{"image": (2, *patch), "label": (1, *patch)}`` training sample.

    Spatial (image and label together): mirroring along each axis (p 0.5 each), rotation up to 15 degrees about
    every axis (p 0.2), scaling 0.85-1.25 (p 0.2). Intensity (image only): scaling by up to 10 % (p 0.15), shift by
    up to 0.1 (p 0.15), gamma 0.7-1.5 (p 0.15), Gaussian noise sigma 0.05 (p 0.15). The probabilities follow
    nnU-Net's defaults; rotation and scaling pad with edge values, as a patch has no outside.
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianNoised,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandZoomd,
    )

    keys = ("image", "label")
    angle = math.radians(15.0)
    return Compose([
        RandRotated(keys, range_x=angle, range_y=angle, range_z=angle, prob=0.2, mode=("bilinear", "nearest"),
                    padding_mode="border"),
        RandZoomd(keys, prob=0.2, min_zoom=0.85, max_zoom=1.25, mode=("trilinear", "nearest"), padding_mode="edge"),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandScaleIntensityd("image", factors=0.1, prob=0.15),
        RandShiftIntensityd("image", offsets=0.1, prob=0.15),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.15),
        RandGaussianNoised("image", std=0.05, prob=0.15),
    ])


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor: MONAI's MetaTensor bookkeeping is not needed past augmentation and slows collation."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


class PatchDataset(Dataset):
    """Training patches from cached regions. Item ``i`` is one patch whose case, position and augmentation are
    drawn from the stream ``(seed, rank, i)``; the sampler passes indices that include the epoch.

    Args:
        cache: the region cache (:func:`region_cache`).
        patient_ids: the cases to draw from (a fold's training set).
        patch_size_zyx: patch shape.
        positive_fraction: share of patches centred on a tumour voxel (GTVp and GTVn equally often).
        augmentation: a MONAI dictionary transform, or None.
        seed, rank: the stream's key.
    """

    def __init__(self, cache: PreprocessingCache, patient_ids: Sequence[str], patch_size_zyx: Sequence[int],
                 positive_fraction: float, augmentation=None, seed: int = 0, rank: int = 0) -> None:
        if not patient_ids:
            raise InputError("no training cases in this fold")
        self.cache = cache
        self.patient_ids = list(patient_ids)
        self.patch_size_zyx = tuple(int(s) for s in patch_size_zyx)
        self.positive_fraction = positive_fraction
        self.augmentation = augmentation
        self.seed, self.rank = int(seed), int(rank)
        self._regions: dict[str, CachedRegion] = {}
        self._indices: dict[str, tuple[np.ndarray, ...]] = {}

    def __len__(self) -> int:
        return 2**62  # indices come from EpochSampler

    def _region(self, pid: str) -> CachedRegion:
        if pid not in self._regions:
            self._regions[pid] = load_region(self.cache, pid)
            # Tumour/background voxel lists are found once per case, not once per patch (a 1 mm region has ~10M voxels).
            self._indices[pid] = sampling_indices(self._regions[pid].label)
        return self._regions[pid]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seeds = np.random.SeedSequence([self.seed, self.rank, int(index)]).generate_state(3)
        pid = self.patient_ids[int(seeds[0]) % len(self.patient_ids)]
        region = self._region(pid)
        (image, label), = sample_patches(region.image, region.label, self.patch_size_zyx, 1, self.positive_fraction,
                                         seed=int(seeds[1]), indices=self._indices[pid])
        image, label = _plain(image).float(), _plain(label).float()
        if self.augmentation is not None:
            self.augmentation.set_random_state(seed=int(seeds[2]))
            sample = self.augmentation({"image": image, "label": label})
            image, label = _plain(sample["image"]), _plain(sample["label"])
        return image.float().contiguous(), label.round().long().contiguous()


class EpochSampler(Sampler[int]):
    """Indices ``epoch * length ... (epoch + 1) * length - 1``: every epoch gets fresh, reproducible patches."""

    def __init__(self, length: int) -> None:
        self.length = int(length)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))


# ----------------------------------------------------------------------------------------------------- optimisation


class DiceCrossEntropyLoss(nn.Module):
    """Soft Dice (MONAI ``DiceLoss``) plus, optionally, cross-entropy, on logits (B, C, ...) and labels (B, 1, ...).

    Written as a sum of MONAI's ``DiceLoss`` and torch's cross-entropy rather than as MONAI's ``DiceCELoss`` because
    that one applies its ``weight`` to the Dice term as well; here class weights act on the cross-entropy only
    (nnU-Net's Dice has none).

    Args:
        batch: one Dice over the whole batch per class (nnU-Net) instead of one per sample and class.
        include_background: the background class in the Dice term.
        cross_entropy: add the cross-entropy.
        ce_class_weights: cross-entropy weight per class, or None.
    """

    def __init__(self, batch: bool, include_background: bool, cross_entropy: bool = True,
                 ce_class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=batch, include_background=include_background)
        self.cross_entropy = cross_entropy
        weights = None if ce_class_weights is None else torch.tensor([float(w) for w in ce_class_weights])
        self.register_buffer("ce_class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.dice(logits, labels)
        if self.cross_entropy:
            loss = loss + nn.functional.cross_entropy(logits, labels[:, 0].long(), weight=self.ce_class_weights)
        return loss


class SegmentationLoss(nn.Module):
    """The training loss of one network output or, with deep supervision, of a list of outputs (full resolution
    first): MONAI's ``DeepSupervisionLoss`` with nnU-Net's weights (:func:`hecktor.networks.deep_supervision_weights`:
    halving per level, the coarsest weighted 0, normalised), the labels resized to each output with nearest-exact
    interpolation.

    Args:
        base: the loss of one output (:class:`DiceCrossEntropyLoss`).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self._deep: dict[int, nn.Module] = {}

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs.float(), labels)
        from monai.losses import DeepSupervisionLoss

        from hecktor.networks import deep_supervision_weights

        n = len(outputs)
        if n not in self._deep:
            self._deep[n] = DeepSupervisionLoss(self.base, weights=deep_supervision_weights(n))
        # Float labels: F.interpolate has no nearest-exact for integer tensors; the base loss casts them back.
        return self._deep[n]([o.float() for o in outputs], labels.float())


def make_loss(name: str, include_background: bool | None = None,
              ce_class_weights: Sequence[float] | None = None) -> SegmentationLoss:
    """The loss called ``name`` (:data:`LOSS_SPECS`) on logits, or on a list of deep-supervision logits.

    Args:
        name: ``dicece``, ``batch_dicece``, ``dice`` or ``batch_dice``.
        include_background: the background class in the Dice term (``None``: the loss's convention).
        ce_class_weights: cross-entropy weight per class (losses with cross-entropy only).
    """
    if name not in LOSS_SPECS:
        raise InputError(f"loss must be one of {LOSSES}, got {name!r}")
    spec = LOSS_SPECS[name]
    background = spec.dice_background if include_background is None else bool(include_background)
    return SegmentationLoss(DiceCrossEntropyLoss(spec.batch_dice, background, spec.cross_entropy, ce_class_weights))


def describe_loss(run_config: dict[str, Any]) -> dict[str, Any]:
    """What the loss of a run was, from its ``config.json``, in today's vocabulary: ``{"loss", "batch_dice",
    "dice_include_background", "cross_entropy", "ce_class_weights"}``. A run folder written before the loss names
    changed (no ``deep_supervision`` key) is read with the old meanings (:data:`LEGACY_LOSSES`)."""
    name = run_config.get("loss")
    if name is None:
        return {"loss": None}
    if "deep_supervision" not in run_config:  # written before the loss vocabulary changed
        return {"loss": f"batch_{name}", "batch_dice": True, "dice_include_background": True,
                "cross_entropy": name == "dicece", "ce_class_weights": None, "recorded_as": name}
    spec = LOSS_SPECS[name]
    background = run_config.get("dice_include_background")
    return {"loss": name, "batch_dice": spec.batch_dice,
            "dice_include_background": spec.dice_background if background is None else bool(background),
            "cross_entropy": spec.cross_entropy, "ce_class_weights": run_config.get("ce_class_weights")}


def warmup_cosine(total_iterations: int, warmup_fraction: float, min_lr_ratio: float):
    """Learning-rate factor per iteration: linear warm-up from 0, then a cosine decay to ``min_lr_ratio``."""
    warmup = int(round(warmup_fraction * total_iterations))

    def factor(iteration: int) -> float:
        if iteration < warmup:
            return (iteration + 1) / warmup
        progress = min(1.0, (iteration - warmup) / max(1, total_iterations - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


CHECKPOINT_FORMAT = "hecktor-task1-checkpoint"


class CheckpointError(InputError):
    """A checkpoint file is truncated, corrupt or not a trainer checkpoint (it is never loaded)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was moved aside and an older one (or a fresh start) used instead."""


def previous_checkpoint_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``checkpoint_last.pt`` ->
    ``checkpoint_last.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path, keep_previous: bool = True) -> None:
    """Write a checkpoint so that no kill, full disk or power cut can leave ``path`` holding part of one.

    The checkpoint goes to a temporary file beside ``path`` (torch's zip format, with a CRC-32 of every record), is
    flushed to disk and read back in full (:func:`verify_checkpoint_file`), and only then renamed onto ``path``. The
    checkpoint it replaces is kept as :func:`previous_checkpoint_path`, so a ``path`` damaged later (a copy cut
    short, a bad disk) still leaves one good checkpoint to resume from.

    Args:
        checkpoint: the state (tensors, numbers, strings and containers).
        path: e.g. ``fold_0/checkpoint_last.pt``.
        keep_previous: keep the replaced checkpoint (see above).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with _crc32_on():
            torch.save(checkpoint, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        verify_checkpoint_file(tmp)
        if keep_previous and path.is_file():
            os.replace(path, previous_checkpoint_path(path))  # a kill right here leaves only .previous: resume uses it
    _fsync_folder(path.parent)


def _crc32_on():
    """torch.save with the CRC-32 of every record, which torch writes by default (and always did before the option
    existed); forced on because :func:`verify_checkpoint_file` relies on it."""
    try:
        from torch.utils.serialization import config as serialization_config
    except ImportError:
        return nullcontext()
    return serialization_config.patch({"save.compute_crc32": True})


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (after a power cut the folder would otherwise still list old names)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def verify_checkpoint_file(path: str | Path) -> None:
    """Check that ``path`` is a complete checkpoint archive: its zip directory is readable and every record matches
    the CRC-32 written with it. Reads the whole file (about 0.1 s per 200 MB), loads nothing.

    Raises:
        CheckpointError: the file is truncated or corrupt.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint ({error})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC-32 check")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by the trainer, verified before it is loaded (:func:`verify_checkpoint_file`; tensors,
    numbers, strings and containers only: ``weights_only``).

    Raises:
        InputError: ``path`` does not exist.
        CheckpointError: it is truncated, corrupt, or not a Task 1 trainer checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    verify_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ... for a bad archive
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({_short(error)})") from None
    missing = [key for key in ("model", "epoch") if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing or checkpoint.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a Task 1 trainer checkpoint (missing {missing or 'its format tag'})")
    return checkpoint


def find_resume_checkpoint(fold_dir: str | Path, map_location: str | torch.device = "cpu",
                           name: str = "checkpoint_last.pt") -> tuple[dict[str, Any] | None, Path | None,
                                                                      list[tuple[Path, str]]]:
    """The newest good checkpoint of a fold to resume from: ``checkpoint_last.pt``, else the one it replaced
    (``checkpoint_last.previous.pt``: the last one was damaged, or the run was killed between the two renames of
    :func:`save_checkpoint`). Reads only; moving damaged files aside is :func:`set_aside`'s job.

    Returns:
        the checkpoint (``None``: nothing to resume from), its path, and each damaged file with the reason.
    """
    damaged: list[tuple[Path, str]] = []
    last = Path(fold_dir) / name
    for path in (last, previous_checkpoint_path(last)):
        if not path.is_file():
            continue
        try:
            return load_checkpoint(path, map_location=map_location), path, damaged
        except CheckpointError as error:
            damaged.append((path, str(error)))
    return None, None, damaged


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (kept for inspection, never loaded) with a warning."""
    target = path.with_name(path.name + ".damaged")
    os.replace(path, target)
    warnings.warn(f"{reason}; moved it to {target.name} and continue without it", CheckpointWarning, stacklevel=2)
    return target


def remove_stale_temporaries(fold_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run left behind (``.checkpoint_*.pt.*``)."""
    removed = []
    for leftover in Path(fold_dir).glob(".checkpoint_*.pt.*"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def network_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a checkpoint with its weights, in eval mode, and the checkpoint itself."""
    checkpoint = load_checkpoint(path)
    network = build_segmentation_network(checkpoint["network"], checkpoint["network_config"])
    network.load_state_dict(checkpoint["model"])
    return network.eval(), checkpoint


def validation_line(fold: int, iteration: int, total_iterations: int, row: dict[str, Any]) -> str:
    """One progress line per validation: fold, iteration, training loss, validation Dice per label (mean per case;
    GTVn also aggregated)."""
    def number(key: str) -> str:
        value = row.get(key, float("nan"))
        return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"

    return (f"fold {fold} iteration {iteration}/{total_iterations}: loss {row['train_loss']:.4f}, validation Dice "
            f"GTVp {number('val_dice_GTVp')}, GTVn {number('val_dice_GTVn')} (DSCagg {number('val_dsc_agg_GTVn')})")


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
    biomarker modes call it for folds of older runs that have none (:func:`hecktor.training.prognosis.
    write_validation_masks`). Returns the mask path of each case, by patient ID."""
    from hecktor.io import write_mask
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


# ---------------------------------------------------------------------------------------------------------- trainer


class SegmentationTrainer:
    """Trains Task 1 networks fold by fold (see the module docstring for the run directory's layout).

    Args:
        config: the run's settings.
        resume: continue from each fold's last checkpoint (a fold without one starts afresh; a finished fold is
            skipped). Without it, a fold folder that already holds checkpoints is an error.
    """

    def __init__(self, config: TrainingConfig, resume: bool = False) -> None:
        self.config = config
        self.resume = resume
        self.run_dir = Path(config.run_dir)
        self.context, self.device = init_distributed(config.device)
        self.workers = resolve_workers(config.workers, share=self.context.local_world_size)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.network_config = resolve_network_config(config.network, config.network_config, config.deep_supervision)
        self.cache = region_cache(config.cache_root, config.plan, config.around)
        self.cases = list_training_cases(config.data_root, task=1)
        self.patient_ids = [case.patient_id for case in self.cases]
        self.cache_stats: dict[str, int] = {}
        self.folds: list[tuple[np.ndarray, np.ndarray]] = []

    # -------------------------------------------------------------------------------------------- run set-up

    def _run_record(self) -> dict[str, Any]:
        record = self.config.to_dict()
        record["network_config"] = self.network_config
        return json.loads(json.dumps(record))  # as it reads back from config.json (lists, not tuples)

    def _check_run_dir(self) -> None:
        """A run folder keeps what its checkpoints depend on (plan, network, split); folds are trained into it one
        command at a time if need be, but a fold that holds checkpoints is only continued with ``resume``."""
        config_path = self.run_dir / CONFIG_JSON
        if not config_path.is_file():
            return
        previous = json.loads(config_path.read_text())
        if "deep_supervision" not in previous and previous.get("loss") in LEGACY_LOSSES:
            raise InputError(f"{config_path} was written before the loss names changed: its loss "
                             f"{previous['loss']!r} was {LEGACY_LOSSES[previous['loss']]}, while {previous['loss']!r} "
                             "is now per-sample Dice; it can be exported but not continued, use a new --out folder")
        current = self._run_record()
        fixed = ("plan", "network", "network_config", "n_folds", "seed", "around", "loss", "dice_include_background",
                 "ce_class_weights")
        changed = [key for key in fixed if previous.get(key) != current.get(key)]
        if changed:
            raise InputError(f"{config_path} was written with other {', '.join(changed)}; use a new --out folder")
        if not self.resume:
            started = [f"fold_{k}" for k in self.config.fold_list
                       if any((self.run_dir / f"fold_{k}" / name).is_file()
                              for name in ("checkpoint_last.pt", "checkpoint_last.previous.pt"))]
            if started:
                raise InputError(f"{self.run_dir} already holds checkpoints ({', '.join(started)}); "
                                 "pass --resume to continue, or use a new --out folder")

    def prepare(self) -> None:
        """Check the run folder, write the run record, cache every case, and fix the fold split."""
        if self.context.is_main:
            self._check_run_dir()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(json.dumps(self._run_record(), indent=2) + "\n", self.run_dir / CONFIG_JSON)
            write_text_atomic(self.config.plan.to_json() + "\n", self.run_dir / PLAN_JSON)
        self.context.barrier()
        # Every rank builds its share of the missing entries, then all wait until the cache is complete.
        self.cache_stats = self.cache.prepare(self.cases, rank=self.context.rank, world_size=self.context.world_size,
                                              progress=self.config.progress and self.context.is_main,
                                              workers=self.workers)
        self.context.barrier()
        folds_path = self.run_dir / FOLDS_JSON
        if self.context.is_main and not folds_path.is_file():
            save_folds(kfold_split(self.patient_ids, self.config.n_folds, self.config.seed), folds_path,
                       case_ids=self.patient_ids)
        self.context.barrier()
        self.folds = load_folds(folds_path, case_ids=self.patient_ids)
        if len(self.folds) != self.config.n_folds:
            raise InputError(f"{folds_path} holds {len(self.folds)} folds, the config asks for {self.config.n_folds}; "
                             "use a new --out folder")

    def fold_cases(self, fold: int) -> tuple[list[str], list[str]]:
        train, val = self.folds[fold]
        return [self.patient_ids[i] for i in train], [self.patient_ids[i] for i in val]

    # ---------------------------------------------------------------------------------------------- training

    def _make_loader(self, patient_ids: list[str]) -> tuple[DataLoader, EpochSampler]:
        config = self.config
        dataset = PatchDataset(
            self.cache, patient_ids, config.plan.patch_size_zyx, config.positive_fraction,
            build_augmentation() if config.augmentation else None, seed=config.seed, rank=self.context.rank,
        )
        sampler = EpochSampler(config.iterations_per_epoch * config.batch_size)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0, drop_last=True,
        )
        return loader, sampler

    def _all_reduce(self, values: list[float]) -> list[float]:
        if not self.context.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def validate(self, network: nn.Module, patient_ids: Sequence[str]) -> dict[str, float]:
        """Dice per label on whole cached regions (sliding window as at inference, no TTA), shared across ranks.

        Returns per label the mean Dice over the cases where it is defined and the aggregated Dice (DSCagg), and
        ``val_dice_mean``, the mean of the labels' mean Dice (the model-selection metric).
        """
        network.eval()
        # Per label: sum of defined Dice, number of defined cases, true positives, |GT| + |pred|. Raw sums rather than
        # hecktor.metrics.aggregated_dice because every rank scores its own cases and the sums are all-reduced.
        sums = [0.0] * (4 * len(FOREGROUND))
        for pid in list(patient_ids)[self.context.rank::self.context.world_size]:
            region = load_region(self.cache, pid)
            image = torch.from_numpy(np.asarray(region.image, dtype=np.float32))[None].to(self.device)
            probabilities = sliding_window_probabilities(
                [network], image, self.config.plan.patch_size_zyx, overlap=self.config.val_overlap,
                sw_batch_size=self.config.sw_batch_size, amp=self.use_amp,
            )
            prediction = probabilities.argmax(0).to(torch.uint8).cpu().numpy()
            for k, value in enumerate(FOREGROUND.values()):
                score = dice(prediction, region.label, value)
                if not math.isnan(score):
                    sums[4 * k] += score
                    sums[4 * k + 1] += 1
                p, g = prediction == value, region.label == value
                sums[4 * k + 2] += float(np.count_nonzero(p & g))
                sums[4 * k + 3] += float(np.count_nonzero(p) + np.count_nonzero(g))
        sums = self._all_reduce(sums)
        metrics: dict[str, float] = {}
        means = []
        for k, name in enumerate(FOREGROUND):
            mean = sums[4 * k] / sums[4 * k + 1] if sums[4 * k + 1] else float("nan")
            metrics[f"val_dice_{name}"] = mean
            metrics[f"val_dsc_agg_{name}"] = 2 * sums[4 * k + 2] / sums[4 * k + 3] if sums[4 * k + 3] else float("nan")
            if not math.isnan(mean):
                means.append(mean)
        metrics["val_dice_mean"] = float(np.mean(means)) if means else 0.0
        return metrics

    def _checkpoint(self, network: nn.Module, optimizer, scheduler, scaler, epoch: int, best: dict[str, Any],
                    fold: int) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "hecktor_version": hecktor.__version__,
            "fold": fold,
            "epoch": epoch,
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
            "best": dict(best),
            "network": self.config.network,
            "network_config": self.network_config,
            "plan": self.config.plan.to_dict(),
            "plan_digest": self.config.plan.digest(),
        }

    def _resume_checkpoint(self, fold_dir: Path) -> dict[str, Any] | None:
        """The fold's newest good checkpoint (:func:`find_resume_checkpoint`), or ``None`` to start afresh.

        A damaged checkpoint is never loaded: rank 0 moves it aside with a :class:`CheckpointWarning` once every
        rank has read what it needs, and deletes the temporary files of writes that a killed run left behind. A
        damaged ``checkpoint_best.pt`` is moved aside too, and the best score reset, so that the next validation
        writes a new one.
        """
        checkpoint, path, damaged = find_resume_checkpoint(fold_dir, map_location=self.device)
        best_path = fold_dir / "checkpoint_best.pt"
        if best_path.is_file():
            try:
                verify_checkpoint_file(best_path)
            except CheckpointError as error:
                damaged.append((best_path, str(error)))
                if checkpoint is not None:
                    checkpoint["best"] = {"val_dice_mean": -1.0, "epoch": 0}
        self.context.barrier()  # every rank has read the checkpoint before rank 0 moves files
        if self.context.is_main:
            for damaged_path, reason in damaged:
                set_aside(damaged_path, reason)
            remove_stale_temporaries(fold_dir)
            if damaged and checkpoint is not None:
                warnings.warn(f"resuming {fold_dir.name} from {path.name} (epoch {checkpoint['epoch']})",
                              CheckpointWarning, stacklevel=2)
            elif damaged:
                warnings.warn(f"no good checkpoint left in {fold_dir}: {fold_dir.name} starts afresh",
                              CheckpointWarning, stacklevel=2)
        self.context.barrier()
        return checkpoint

    def train_fold(self, fold: int) -> dict[str, Any]:
        """Train one fold to ``config.epochs``; returns its summary (best epoch and metrics, timings)."""
        config = self.config
        if not self.folds:
            self.prepare()
        train_ids, val_ids = self.fold_cases(fold)
        fold_dir = self.run_dir / f"fold_{fold}"
        last_path, best_path = fold_dir / "checkpoint_last.pt", fold_dir / "checkpoint_best.pt"

        torch.manual_seed(config.seed)  # identical initial weights on every rank and in every run
        network = build_segmentation_network(config.network, self.network_config).to(self.device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        total_iterations = config.epochs * config.iterations_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total_iterations, config.warmup_fraction, config.min_lr_ratio))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        loss_function = make_loss(config.loss, config.dice_include_background, config.ce_class_weights).to(self.device)
        start_epoch, best = 0, {"val_dice_mean": -1.0, "epoch": 0}

        checkpoint = self._resume_checkpoint(fold_dir) if self.resume else None
        if checkpoint is not None:
            # As in export_bundle: a checkpoint stored before the plan gained fields is compared by the plans.
            same_plan = (checkpoint["plan_digest"] == config.plan.digest()
                         or RegionPlan.from_dict(checkpoint.get("plan", {})) == config.plan)
            if not same_plan or checkpoint["network"] != config.network:
                raise InputError(f"{fold_dir} holds a checkpoint of another plan or network; use a new --out folder")
            network.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            start_epoch, best = int(checkpoint["epoch"]), dict(checkpoint["best"])
            if self.context.is_main:
                torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
                if "cuda" in checkpoint["rng"] and self.device.type == "cuda":
                    torch.cuda.set_rng_state(checkpoint["rng"]["cuda"].cpu(), self.device)
            else:
                torch.manual_seed(config.seed + 1000 * self.context.rank + start_epoch)
        else:
            torch.manual_seed(config.seed + 1000 * self.context.rank)
        if start_epoch >= config.epochs:
            if config.predict_validation and not self.has_validation_predictions(fold):
                self.predict_validation(fold)
            return {"fold": fold, "epochs": start_epoch, "best": best, "skipped": True}

        model: nn.Module = network
        if self.context.enabled:
            model = nn.parallel.DistributedDataParallel(
                network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        loader, sampler = self._make_loader(train_ids)
        log = RunLog(fold_dir) if self.context.is_main else None
        epoch_losses: list[float] = []
        summary: dict[str, Any] = {"fold": fold, "train_cases": len(train_ids), "val_cases": len(val_ids)}

        for epoch in range(start_epoch, config.epochs):
            sampler.epoch = epoch
            network.train()
            started = time.perf_counter()
            loss_sum, steps = 0.0, 0
            bar = tqdm(loader, desc=f"fold {fold} epoch {epoch + 1}/{config.epochs}", unit="it", leave=False,
                       disable=not (config.progress and self.context.is_main))
            for images, labels in bar:
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with autocast_context(self.device, self.use_amp):
                    # A list (full resolution first) when the network has deep supervision; one tensor otherwise.
                    outputs = model(images)
                    loss = loss_function(outputs, labels)
                scaler.scale(loss).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += float(loss.detach())
                steps += 1
                bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
            train_seconds = time.perf_counter() - started
            loss_sum, steps_total = self._all_reduce([loss_sum, float(steps)])
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / steps_total,
                "lr": optimizer.param_groups[0]["lr"],
                "train_seconds": train_seconds,
                "seconds_per_iteration": train_seconds / max(steps, 1),
                "processes": self.context.world_size,
            }
            epoch_losses.append(row["train_loss"])
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
                val_started = time.perf_counter()
                row.update(self.validate(network, val_ids))
                row["val_seconds"] = time.perf_counter() - val_started
                if row["val_dice_mean"] > best["val_dice_mean"]:
                    best = {"epoch": epoch + 1, **{k: v for k, v in row.items() if k.startswith("val_")}}
                    if self.context.is_main:
                        fold_dir.mkdir(parents=True, exist_ok=True)
                        save_checkpoint(self._checkpoint(network, optimizer, scheduler, scaler, epoch + 1, best, fold),
                                        best_path, keep_previous=False)
            if self.context.is_main:
                # The row first: a kill between the two resumes from the epoch before and rewrites this row, whereas the
                # other order would leave an epoch without a row.
                log.log(row)
                save_checkpoint(self._checkpoint(network, optimizer, scheduler, scaler, epoch + 1, best, fold), last_path)
                if config.progress:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
                    tqdm.write(f"fold {fold} epoch {epoch + 1}: {shown}")
                elif config.log_validation and "val_dice_mean" in row:
                    print(validation_line(fold, (epoch + 1) * config.iterations_per_epoch, total_iterations, row),
                          flush=True)
            self.context.barrier()

        summary.update({"epochs": config.epochs, "best": best, "epoch_losses": epoch_losses, "skipped": False})
        if config.predict_validation:
            started = time.perf_counter()
            self.predict_validation(fold)
            summary["predict_validation_s"] = time.perf_counter() - started
        return summary

    def has_validation_predictions(self, fold: int) -> bool:
        """Whether ``fold_K/validation/`` holds a prediction for every validation case of the fold."""
        folder = self.run_dir / f"fold_{fold}" / VALIDATION_DIR
        return all((folder / f"{pid}.nii.gz").is_file() for pid in self.fold_cases(fold)[1])

    def predict_validation(self, fold: int, checkpoint: str = "best") -> Path:
        """Out-of-fold predictions: the fold's validation cases segmented from their CT and PET files by
        :meth:`hecktor.segment.Segmenter.predict` (the containers' path: whole region, back onto the CT grid, no
        postprocessing) with the fold's ``checkpoint`` network, written to ``fold_K/validation/<PID>.nii.gz``; and
        ``fold_K/validation_labels/Task 1/<PID>/`` links to those cases' files, so that
        ``hecktor-evaluate --task 1 --pred fold_K/validation --labels fold_K/validation_labels`` scores the fold.
        Ranks share the cases out. Returns the predictions folder."""
        fold_dir = self.run_dir / f"fold_{fold}"
        self.context.barrier()  # rank 0 wrote the checkpoint
        _, val_ids = self.fold_cases(fold)
        cases = {case.patient_id: case for case in self.cases}
        predict_validation_cases(fold_dir / f"checkpoint_{checkpoint}.pt", self.config.plan,
                                 [cases[pid] for pid in val_ids[self.context.rank::self.context.world_size]], fold_dir,
                                 device=self.device, tta=self.config.validation_tta, overlap=self.config.val_overlap,
                                 sw_batch_size=self.config.sw_batch_size)
        self.context.barrier()
        return fold_dir / VALIDATION_DIR

    def run(self) -> list[dict[str, Any]]:
        """Prepare the data, then train every selected fold in turn."""
        self.prepare()
        return [self.train_fold(fold) for fold in self.config.fold_list]

    def close(self, abort: bool = False) -> None:
        """Leave the process group (not after a failure: with a peer gone, NCCL may block in the teardown, and the
        process is about to exit anyway)."""
        if self.context.enabled and dist.is_initialized() and not abort:
            dist.destroy_process_group()


def train(config: TrainingConfig, resume: bool = False) -> list[dict[str, Any]]:
    """Train the folds of ``config`` (the CLI's one call). Under ``torchrun``, a rank that dies or hangs makes the
    others stop with a :class:`DistributedJobError` (see :func:`init_distributed`)."""
    trainer = SegmentationTrainer(config, resume=resume)
    finished = False
    try:
        with distributed_failures(trainer.context):
            summaries = trainer.run()
        finished = True
        return summaries
    finally:
        trainer.close(abort=not finished)


# ---------------------------------------------------------------------------------------------------- postprocessing


def choose_run_postprocessing(run_dir: str | Path, data_root: str | Path | None = None,
                              candidates_ml: Sequence[float] | None = None) -> dict[str, Any]:
    """Choose a run's postprocessing on its out-of-fold predictions (``fold_K/validation/``) and write it to
    ``RUN_DIR/postprocessing.json`` (:func:`export_bundle` puts it into the bundle).

    Args:
        run_dir: a training run whose folds predicted their validation cases (``predict_validation``).
        data_root: the HECKTOR folder holding the labels (default: the run's ``data_root``).
        candidates_ml: GTVn thresholds to try (default :data:`hecktor.postprocessing.GTVN_MIN_VOLUME_CANDIDATES_ML`).

    Returns:
        what was written: ``{"postprocessing": {...}, "report": {...}, "folds": [...], "cases": [...]}``.
    """
    from hecktor.io import read_image
    from hecktor.postprocessing import GTVN_MIN_VOLUME_CANDIDATES_ML, choose_postprocessing

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_JSON
    if not config_path.is_file():
        raise InputError(f"{run_dir} is not a training run ({CONFIG_JSON} missing); pass the --out folder of "
                         "train_segmentation.py")
    data_root = data_root or json.loads(config_path.read_text()).get("data_root")
    labels = {case.patient_id: case.label_path for case in list_training_cases(data_root, task=1, require_label=True)}
    predictions: dict[str, Path] = {}
    folds = []
    for folder in sorted(run_dir.glob(f"fold_*/{VALIDATION_DIR}")):
        found = sorted(folder.glob("*.nii.gz"))
        if found:
            folds.append(int(folder.parent.name.split("_")[1]))
        predictions.update({path.name[: -len(".nii.gz")]: path for path in found})
    if not predictions:
        raise InputError(f"no out-of-fold predictions in {run_dir}/fold_*/{VALIDATION_DIR}; train with "
                         "predict_validation on (the default)")
    unknown = sorted(set(predictions) - set(labels))
    if unknown:
        raise InputError(f"out-of-fold prediction(s) {unknown[:5]} have no label in {data_root}; pass --data")
    cases = ((read_image(predictions[pid], "prediction"), read_image(labels[pid], "label"), pid)
             for pid in sorted(predictions))
    chosen, report = choose_postprocessing(
        cases, GTVN_MIN_VOLUME_CANDIDATES_ML if candidates_ml is None else candidates_ml)
    record = _finite_or_none({"postprocessing": chosen.to_dict(), "report": report, "folds": folds,
                              "cases": sorted(predictions)})
    write_text_atomic(json.dumps(record, indent=2) + "\n", run_dir / POSTPROCESSING_JSON)
    return record


def _finite_or_none(value: Any) -> Any:
    """NaN (a score no case defines) as None: standard JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------------------- export


def export_bundle(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                  folds: Sequence[int] | None = None, postprocessing: bool = True, *,
                  overwrite: bool = False) -> tuple[Path, list[int]]:
    """Write the Task 1 bundle of a run: every fold's weights (model only, no optimizer), the plan and model.json.

    Deep-supervision heads are left out (:func:`hecktor.networks.strip_deep_supervision`): the bundle's network is
    the one inference runs, and predicts exactly as the trained network does in eval mode. The postprocessing that
    ``RUN_DIR/postprocessing.json`` records (:func:`choose_run_postprocessing`) goes into ``model.json``, where
    :class:`hecktor.segment.Segmenter` applies it.

    Args:
        run_dir: a training run directory.
        out_dir: the bundle folder: absent, empty, or (with ``overwrite``) an earlier bundle, replaced atomically;
            anything else is refused before the run is read (:func:`hecktor.bundle.check_bundle_destination`).
        checkpoint: ``best`` or ``last``.
        folds: the folds to export (default: every ``fold_K`` folder holding that checkpoint).
        postprocessing: include the run's chosen postprocessing when there is one.

    Returns:
        the bundle path and the exported fold indices.
    """
    from hecktor.bundle import check_bundle_destination, write_bundle
    from hecktor.networks import strip_deep_supervision

    run_dir = Path(run_dir)
    check_bundle_destination(out_dir, overwrite)
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    plan_path = run_dir / PLAN_JSON
    if not plan_path.is_file():
        raise InputError(f"{run_dir} is not a training run ({PLAN_JSON} missing); pass the --out folder of train_segmentation.py")
    plan = RegionPlan.load(plan_path)
    run_config = json.loads((run_dir / CONFIG_JSON).read_text()) if (run_dir / CONFIG_JSON).is_file() else {}
    available = sorted(int(p.parent.name.split("_")[1]) for p in run_dir.glob(f"fold_*/checkpoint_{checkpoint}.pt"))
    chosen = available if folds is None else sorted(int(k) for k in folds)
    missing = [k for k in chosen if k not in available]
    if not chosen or missing:
        raise InputError(f"no checkpoint_{checkpoint}.pt for fold(s) {missing or 'any'} in {run_dir}; train them first")

    state_dicts, per_fold, network, network_config, trained_config = {}, [], None, None, None
    for fold in chosen:
        path = run_dir / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt"
        state = load_checkpoint(path)
        # The digest of a plan read back gains the fields added since it was stored (their absent values), so a run
        # stored before them is compared by the plans themselves.
        if state.get("plan_digest") != plan.digest() and RegionPlan.from_dict(state.get("plan", {})) != plan:
            raise InputError(f"{path} was trained with another plan than {plan_path}; retrain or fix the run")
        if network is None:
            network, trained_config = state["network"], state["network_config"]
            # Networks with heads export without them; the others' configs stay as they were trained.
            network_config = (strip_deep_supervision({}, trained_config)[1] if "deep_supervision" in trained_config
                              else trained_config)
        elif (state["network"], state["network_config"]) != (network, trained_config):
            raise InputError(f"{path} holds another network than fold {chosen[0]}; export folds of one run only")
        weights, _ = strip_deep_supervision(state["model"])
        # Load into the network once: a bundle must never hold weights that its own loader would refuse.
        build_segmentation_network(network, network_config).load_state_dict(weights)
        state_dicts[f"fold_{fold}.pt"] = weights
        per_fold.append({"fold": fold, "epoch": int(state["epoch"]), "best": state["best"]})

    model = {
        "network": network,
        "network_config": network_config,
        "in_channels": IN_CHANNELS,
        "n_classes": N_CLASSES,
        "labels": dict(hecktor.LABELS),
        "folds": list(state_dicts),
        "trained": {
            "checkpoint": checkpoint,
            "fold_indices": chosen,
            "n_folds_in_split": run_config.get("n_folds"),
            "epochs": run_config.get("epochs"),
            "iterations_per_epoch": run_config.get("iterations_per_epoch"),
            "batch_size": run_config.get("batch_size"),
            "loss": describe_loss(run_config),
            "deep_supervision": bool((trained_config or {}).get("deep_supervision", False)),
            "augmentation": run_config.get("augmentation"),
            "seed": run_config.get("seed"),
            "per_fold": per_fold,
            "hecktor_version": hecktor.__version__,
        },
    }
    choice_path = run_dir / POSTPROCESSING_JSON
    if postprocessing and choice_path.is_file():
        from hecktor.postprocessing import Postprocessing

        choice = json.loads(choice_path.read_text())
        model["postprocessing"] = Postprocessing.from_dict(choice["postprocessing"], source=str(choice_path)).to_dict()
        model["trained"]["postprocessing_choice"] = {k: v for k, v in choice.items() if k != "postprocessing"}
    out = write_bundle(out_dir, task=1, plan=plan, model=model, state_dicts=state_dicts, overwrite=overwrite)
    return out, chosen
