"""Task 1 training data: every case's training region cached once (:func:`region_cache`, the trainers'
:class:`~hecktor.training.cache.PreprocessingCache`), and patches drawn from the cached regions with MONAI
augmentation (:class:`PatchDataset`, :class:`EpochSampler`).

Every patch is drawn from a random stream keyed by (seed, epoch, rank, index), so runs are reproducible whatever the
number of data-loader workers, and a resumed run draws exactly the patches an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset, Sampler

from hecktor.datasets import TrainingCase
from hecktor.errors import InputError
from hecktor.geometry import Grid
from hecktor.patches import preprocess_training_case, sample_patches, sampling_indices
from hecktor.plan import RegionPlan
from hecktor.preprocessing import check_case
from hecktor.segment import N_CLASSES
from hecktor.training.cache import PreprocessingCache

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
    # The repairs are screened here to be recorded (preprocess_training_case screens again and keeps no word of them;
    # an image already repaired passes that second screening unchanged).
    ct, pet, repairs = check_case(ct, pet, plan)
    region = preprocess_training_case(ct, pet, label, plan, around=around)
    arrays = {"image": region.image.astype(np.float16), "label": region.label.astype(np.uint8)}
    label_voxels = [int(np.count_nonzero(region.label == v)) for v in range(N_CLASSES)]
    source = sitk.GetArrayViewFromImage(label)
    source_voxels = [int(np.count_nonzero(source == v)) for v in range(N_CLASSES)]
    if not region.localization.found:
        repairs.append(f"head-and-neck localisation: {region.localization.reason}")
    if not any(source_voxels[1:]):
        repairs.append("empty label map (no GTVp or GTVn voxel): trained as a case without tumour")
    for value, name in ((1, "GTVp"), (2, "GTVn")):
        if source_voxels[value] and not label_voxels[value]:
            repairs.append(f"label map: its {name} ({source_voxels[value]} voxels) lies outside the training region "
                           "and is lost")
    info = {
        "grid": dataclasses.asdict(region.grid),
        "localization_found": bool(region.localization.found),
        "label_voxels": label_voxels,
        "repairs": repairs,
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
