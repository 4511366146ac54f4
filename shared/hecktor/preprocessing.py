"""From input images to network tensors and back, in physical space.

One path for training and both containers:

1. :func:`check_case` rejects unusable inputs with one clear line and repairs what can be repaired (NaN voxels).
2. :func:`~hecktor.localization.localize_head_and_neck` finds the anchor in the PET.
3. The task's region grid is placed around the anchor, and CT and PET are resampled *directly* onto it
   (crop first: the whole field of view is never resampled), then normalised (:func:`normalize_ct`,
   :func:`normalize_pet`).
4. For segmentation, :func:`probabilities_to_ct_grid` maps class probabilities back onto the input CT's exact grid by one
   resampling, then takes the argmax (as nnU-Net does).

The :class:`Region` returned by preprocessing is the "properties" record of nnU-Net: it carries the grid that the
tensor lives on, so the inverse needs nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.errors import InputError
from hecktor.geometry import Grid, overlap_volume_ml, resample_to_grid, subgrid_covering
from hecktor.localization import Localization, localize_head_and_neck
from hecktor.plan import BoxPlan, Plan, RegionPlan

logger = logging.getLogger(__name__)


@dataclass
class Region:
    """A network-ready tensor and where it lives.

    Attributes:
        image: float32 array (2, z, y, x): channel 0 normalised CT, channel 1 normalised PET.
        grid: the physical grid of ``image``'s voxels.
        localization: how the region was placed.
        warnings: what was repaired or assumed on the way, one line each.
    """

    image: np.ndarray
    grid: Grid
    localization: Localization
    warnings: list[str] = field(default_factory=list)


def _replace_nan(image: sitk.Image, value: float, what: str, warnings: list[str]) -> sitk.Image:
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image
    array = sitk.GetArrayViewFromImage(image)
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return image
    if n_bad == array.size:
        raise InputError(f"{what} holds no finite voxel (all NaN or infinite)")
    repaired = np.where(bad, np.float32(value), array).astype(array.dtype)
    fixed = sitk.GetImageFromArray(repaired)
    fixed.CopyInformation(image)
    warnings.append(f"{what}: {n_bad} non-finite voxel(s) replaced by {value:g}")
    return fixed


def check_case(ct: sitk.Image, pet: sitk.Image | None, plan: Plan) -> tuple[sitk.Image, sitk.Image | None, list[str]]:
    """Validate a CT/PET pair before preprocessing.

    Raises :class:`InputError` for an all-non-finite image, an empty PET (every voxel 0 or equal) and a PET that does
    not overlap the CT in physical space. Non-finite voxels (NaN, inf) are replaced by the padding values
    (``plan.ct_pad_hu``, ``plan.pet_pad_suv``) with a warning: a handful of bad voxels should not cost a case.

    Returns:
        the (possibly repaired) CT and PET, and the warnings.
    """
    warnings: list[str] = []
    ct = _replace_nan(ct, plan.ct_pad_hu, "CT", warnings)
    if pet is None:
        return ct, None, warnings
    pet = _replace_nan(pet, plan.pet_pad_suv, "PET", warnings)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(pet)
    if stats.GetMaximum() == stats.GetMinimum():
        raise InputError(f"PET is empty: every voxel equals {stats.GetMaximum():g}")
    if overlap_volume_ml(Grid.from_image(ct), Grid.from_image(pet)) <= 0.0:
        ct_low, ct_high = Grid.from_image(ct).physical_bounds()
        pet_low, pet_high = Grid.from_image(pet).physical_bounds()
        raise InputError(
            f"PET and CT do not overlap in physical space (CT z {ct_low[2]:.0f}..{ct_high[2]:.0f} mm, "
            f"PET z {pet_low[2]:.0f}..{pet_high[2]:.0f} mm); check the images' origins"
        )
    return ct, pet, warnings


def normalize_ct(hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window_hu`` and scale linearly to [0, 1] (float32, a new array)."""
    low, high = window_hu
    out = np.clip(hu, low, high).astype(np.float32, copy=False)  # clip already made a copy
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def normalize_pet(suv: np.ndarray) -> np.ndarray:
    """Z-score the SUV values over the region (float32, a new array). A constant region maps to zeros."""
    out = np.array(suv, dtype=np.float32, copy=True)
    # torch's std_mean is one multi-threaded pass; numpy's std makes two passes and a temporary of the same size.
    std, mean = torch.std_mean(torch.from_numpy(out), correction=0)
    out -= np.float32(mean)
    if float(std) > 1e-6:
        out /= np.float32(std)
    return out


def resample_pair(ct: sitk.Image, pet: sitk.Image, grid: Grid, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """CT (HU) and PET (SUV) resampled onto ``grid`` as float32 (z, y, x) arrays, padded outside their views."""
    ct_array = sitk.GetArrayFromImage(resample_to_grid(ct, grid, plan.image_interpolation, plan.ct_pad_hu))
    pet_array = sitk.GetArrayFromImage(resample_to_grid(pet, grid, plan.image_interpolation, plan.pet_pad_suv))
    return ct_array, pet_array


def network_input(ct: sitk.Image, pet: sitk.Image, grid: Grid, plan: Plan) -> np.ndarray:
    """The 2-channel normalised tensor (2, z, y, x) of CT and PET on ``grid``."""
    ct_array, pet_array = resample_pair(ct, pet, grid, plan)
    return np.stack([normalize_ct(ct_array, plan.ct_window_hu), normalize_pet(pet_array)])


def blank_network_input(shape_zyx: tuple[int, int, int], plan: Plan) -> np.ndarray:
    """The network input (2, z, y, x) of a region outside every field of view: CT at ``plan.ct_pad_hu`` and PET at
    ``plan.pet_pad_suv``, normalised as :func:`network_input` normalises them."""
    shape = tuple(int(s) for s in shape_zyx)
    ct = normalize_ct(np.full(shape, plan.ct_pad_hu, dtype=np.float32), plan.ct_window_hu)
    pet = normalize_pet(np.full(shape, plan.pet_pad_suv, dtype=np.float32))
    return np.stack([ct, pet])


def region_grid(localization: Localization, plan: RegionPlan) -> Grid:
    """The segmentation region: ``plan.region_mm_xyz`` at ``plan.spacing_mm_xyz`` around the anchor."""
    center = np.asarray(localization.anchor_xyz) + np.asarray(plan.region_offset_mm_xyz)
    return Grid.centered(center, plan.region_mm_xyz, spacing_xyz=plan.spacing_mm_xyz)


def box_grid(localization: Localization, plan: BoxPlan) -> Grid:
    """The box of the image-level tasks (``plan.box_mm_xyz``) around the anchor, sampled at ``plan.input_shape_zyx``."""
    center = np.asarray(localization.anchor_xyz) + np.asarray(plan.box_offset_mm_xyz)
    return Grid.centered(center, plan.box_mm_xyz, size_xyz=plan.input_shape_zyx[::-1])


def _prepare(ct: sitk.Image, pet: sitk.Image, plan: Plan) -> Region:
    ct, pet, warnings = check_case(ct, pet, plan)
    localization = localize_head_and_neck(pet, plan, reference=ct)
    if not localization.found:
        warnings.append(f"head-and-neck localisation: {localization.reason}")
    grid = region_grid(localization, plan) if isinstance(plan, RegionPlan) else box_grid(localization, plan)
    return Region(network_input(ct, pet, grid, plan), grid, localization, warnings)


def preprocess_region(ct: sitk.Image, pet: sitk.Image, plan: RegionPlan) -> Region:
    """Segmentation network input: the head-and-neck region at ``plan.spacing_mm_xyz`` (default 1 mm)."""
    if not isinstance(plan, RegionPlan):
        raise TypeError(f"preprocess_region needs a RegionPlan, got {type(plan).__name__}")
    return _prepare(ct, pet, plan)


def preprocess_box(ct: sitk.Image, pet: sitk.Image, plan: BoxPlan) -> Region:
    """Image-level network input: the 200x200x310 mm box (by default) resampled to 96^3 in one trilinear step."""
    if not isinstance(plan, BoxPlan):
        raise TypeError(f"preprocess_box needs a BoxPlan, got {type(plan).__name__}")
    return _prepare(ct, pet, plan)


def probabilities_to_ct_grid(probabilities: np.ndarray | torch.Tensor, grid: Grid, ct: sitk.Image) -> sitk.Image:
    """Map class probabilities (C, z, y, x) on ``grid`` onto ``ct``'s exact grid and take the argmax.

    Probabilities are resampled linearly (one vector resampling, all classes at once) and only over the part of the
    CT that the region covers; the rest of the CT is background. The result is a UInt8 label map whose size,
    spacing, origin and direction are the CT's.
    """
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().float().cpu().numpy()
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 4 or probabilities.shape[1:] != grid.shape_zyx:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not fit a grid of shape {grid.shape_zyx}")
    ct_grid = Grid.from_image(ct)
    labels = np.zeros(ct_grid.shape_zyx, dtype=np.uint8)
    covered = subgrid_covering(ct_grid, grid)
    if covered is not None:
        subgrid, slices = covered
        vector = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probabilities, 0, -1)), isVector=True)
        grid.apply_to(vector)
        resampled = sitk.Resample(vector, subgrid.reference_image(), sitk.Transform(), sitk.sitkLinear, 0.0,
                                  sitk.sitkVectorFloat32)
        # Outside the region every class reads 0, and argmax of a tie is class 0: background.
        labels[slices] = np.argmax(sitk.GetArrayViewFromImage(resampled), axis=-1).astype(np.uint8)
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(ct)
    return mask


def labels_to_ct_grid(labels: np.ndarray, grid: Grid, ct: sitk.Image, n_classes: int = 3) -> sitk.Image:
    """A hard label map (z, y, x) on ``grid`` back onto the CT's grid (via one-hot probabilities)."""
    one_hot = np.stack([(labels == c).astype(np.float32) for c in range(n_classes)])
    return probabilities_to_ct_grid(one_hot, grid, ct)
