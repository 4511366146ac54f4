"""Task 1 training crops: the region a training case is cached on, and class-balanced positive/negative sampling.

The cached region is built by the same resampling code as inference (:mod:`hecktor.preprocessing`), so a training
patch and an inference window see identically prepared voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import RandCropByLabelClasses
from monai.transforms.utils import map_classes_to_indices

from hecktor.errors import InputError
from hecktor.geometry import Grid, resample_to_grid
from hecktor.localization import Localization, localize_head_and_neck
from hecktor.plan import RegionPlan
from hecktor.preprocessing import check_case, network_input, region_grid


@dataclass
class TrainingRegion:
    """A preprocessed training case: image (2, z, y, x) float32, label (z, y, x) uint8, and their grid."""

    image: np.ndarray
    label: np.ndarray
    grid: Grid
    localization: Localization


def mask_physical_bounds(label: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned physical bounding box (voxel edges) of the non-zero voxels of ``label``, or None if empty."""
    nonzero = np.argwhere(sitk.GetArrayViewFromImage(label) > 0)
    if nonzero.size == 0:
        return None
    low_zyx, high_zyx = nonzero.min(axis=0), nonzero.max(axis=0)
    box = Grid(
        tuple(int(v) for v in (high_zyx - low_zyx + 1)[::-1]),
        tuple(label.GetSpacing()),
        tuple(label.TransformIndexToPhysicalPoint([int(v) for v in low_zyx[::-1]])),
        tuple(label.GetDirection()),
    )
    return box.physical_bounds()


def training_region_grid(ct: sitk.Image, pet: sitk.Image, label: sitk.Image, plan: RegionPlan,
                         around: str = "region") -> tuple[Grid, Localization]:
    """The grid a training case is cached on, at ``plan.spacing_mm_xyz``.

    Args:
        around: ``"region"``: the Task 1 inference region, widened to hold the whole mask plus
            ``plan.training_margin_mm`` (the network then also sees the brain and other negatives it will meet at
            inference); ``"mask"``: only the mask's bounding box plus the margin (smaller caches).
    Either way the grid is at least one patch large along every axis, so patches never need padding.
    """
    if around not in ("region", "mask"):
        raise ValueError(f"around must be 'region' or 'mask', got {around!r}")
    localization = localize_head_and_neck(pet, plan, reference=ct)
    bounds = mask_physical_bounds(label)
    if around == "region" or bounds is None:
        low, high = region_grid(localization, plan).physical_bounds()
    else:
        low, high = bounds[0], bounds[1]
    if bounds is not None:
        low = np.minimum(low, bounds[0] - plan.training_margin_mm)
        high = np.maximum(high, bounds[1] + plan.training_margin_mm)
    spacing = np.asarray(plan.spacing_mm_xyz, dtype=float)
    minimum_extent = np.asarray(plan.patch_size_zyx[::-1], dtype=float) * spacing
    extent = np.maximum(high - low, minimum_extent)
    return Grid.centered((low + high) / 2.0, extent, spacing_xyz=spacing), localization


def preprocess_training_case(ct: sitk.Image, pet: sitk.Image, label: sitk.Image, plan: RegionPlan,
                             around: str = "region") -> TrainingRegion:
    """Network input and label of one training case on its training region (see :func:`training_region_grid`)."""
    ct, pet, _ = check_case(ct, pet, plan)
    labels = sitk.GetArrayViewFromImage(label)
    if labels.size and labels.max() > 2:
        raise InputError(f"label map holds value {int(labels.max())}; expected 0 (background), 1 (GTVp), 2 (GTVn)")
    grid, localization = training_region_grid(ct, pet, label, plan, around)
    image = network_input(ct, pet, grid, plan)
    target = sitk.GetArrayFromImage(resample_to_grid(label, grid, plan.label_interpolation, 0, sitk.sitkUInt8))
    return TrainingRegion(image, target, grid, localization)


N_LABELS = 3  # 0 background, 1 GTVp, 2 GTVn


def sampling_indices(label: np.ndarray | torch.Tensor, n_labels: int = N_LABELS) -> tuple[np.ndarray, ...]:
    """Flat indices of the voxels of each label value ``0 .. n_labels - 1`` of ``label`` (z, y, x), background
    first, for :func:`sample_patches`. Finding them scans the whole region, so callers drawing many patches compute
    them once per case."""
    return tuple(np.asarray(i) for i in map_classes_to_indices(torch.as_tensor(label)[None], n_labels))


def class_ratios(indices: tuple[np.ndarray, ...], positive_fraction: float) -> list[float]:
    """Probabilities of centring a patch on each label: ``1 - positive_fraction`` on background, the rest shared
    equally by the foreground labels the case has (none where it has none)."""
    present = [c for c in range(1, len(indices)) if len(indices[c])]
    share = positive_fraction if present and len(indices[0]) else float(bool(present))
    return [1.0 - share] + [share / len(present) if len(indices[c]) else 0.0 for c in range(1, len(indices))]


def sample_patches(
    image: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    patch_size_zyx: tuple[int, int, int],
    num_samples: int,
    positive_fraction: float,
    seed: int | None = None,
    indices: tuple[np.ndarray, ...] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random patches centred on a foreground voxel with probability ``positive_fraction``, else on a background
    voxel; centres are shifted so patches stay inside the volume. Wraps MONAI's ``RandCropByLabelClasses``.

    A positive patch first picks one of the foreground labels present in the case with equal probability, then a
    voxel of it (nnU-Net's foreground oversampling): drawing from all foreground voxels at once would centre almost
    every patch on the primary tumour, which has several times the voxels of the lymph nodes.

    Args:
        image: (C, z, y, x) array.
        label: (z, y, x) integer array (0 background, 1 GTVp, 2 GTVn).
        indices: the case's :func:`sampling_indices`, if already known (saves a scan of the region per call).
    Returns:
        ``num_samples`` pairs of (C, *patch) image and (1, *patch) label tensors.
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
    image = torch.as_tensor(image)
    label = torch.as_tensor(label)[None]
    if any(s < p for s, p in zip(image.shape[1:], patch_size_zyx)):
        raise ValueError(f"volume {tuple(image.shape[1:])} is smaller than the patch {tuple(patch_size_zyx)}")
    indices = indices if indices is not None else sampling_indices(label[0])
    cropper = RandCropByLabelClasses(
        spatial_size=patch_size_zyx,
        ratios=class_ratios(indices, positive_fraction),
        num_classes=len(indices),
        num_samples=num_samples,
        allow_smaller=False,
        warn=False,
    )
    cropper.set_random_state(seed=seed)
    image_patches = cropper(image, label=label, indices=list(indices), randomize=True)
    label_patches = cropper(label, randomize=False)
    return [(torch.as_tensor(i), torch.as_tensor(l)) for i, l in zip(image_patches, label_patches)]
