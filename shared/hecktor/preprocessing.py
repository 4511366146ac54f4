"""From input images to network tensors and back, in physical space.

One path for training and both containers:

1. :func:`check_case` rejects unusable inputs with one clear line and repairs what can be repaired: NaN voxels,
   a CT stored with a +1024 offset (:func:`repair_ct_offset`), a PET in Bq/ml rather than SUV
   (:func:`repair_pet_unit`), absurd PET voxels (:func:`repair_implausible_pet`). Repairs restore the documented
   units and values, so they apply whatever the plan (a clean input is never touched).
2. :func:`~hecktor.localization.localize_head_and_neck` finds the anchor in the PET.
3. The task's region grid is placed around the anchor, and CT and PET are resampled *directly* onto it
   (crop first: the whole field of view is never resampled), then normalised (:func:`normalize_ct`,
   :func:`normalize_pet`).
4. For segmentation, :func:`probabilities_to_ct_grid` maps class probabilities back onto the input CT's exact grid by one
   resampling, then takes the argmax (as nnU-Net does).

The :class:`Region` returned by preprocessing is the "properties" record of nnU-Net: it carries the grid that the
tensor lives on, so the inverse needs nothing else.

Either image may be ``None`` (a container drops an unusable one; see :func:`hecktor.case.read_case`): its channel
is then its padding value throughout, as for a region outside its field of view, and without a PET the region is placed
from the CT (:func:`~hecktor.localization.localize_head_and_neck`'s fallback).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.geometry import Grid, resample_to_grid, subgrid_covering
from hecktor.localization import Localization, localize_head_and_neck
from hecktor.plan import BoxPlan, Plan, RegionPlan
from hecktor.repair import is_placeholder, repair_case, sample_voxels

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


def check_case(ct: sitk.Image | None, pet: sitk.Image | None,
               plan: Plan) -> tuple[sitk.Image | None, sitk.Image | None, list[str]]:
    """:func:`hecktor.repair.repair_case` with the plan's padding values: validate a CT/PET pair before preprocessing
    and repair what can be repaired (each repair with a warning; an image already repaired is returned as it is).

    Returns:
        the (possibly repaired) CT and PET, and the warnings.
    """
    return repair_case(ct, pet, ct_pad_hu=plan.ct_pad_hu, pet_pad_suv=plan.pet_pad_suv)


def normalize_ct(hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window_hu`` and scale linearly to [0, 1] (float32, a new array)."""
    low, high = window_hu
    out = np.clip(hu, low, high).astype(np.float32, copy=False)  # clip already made a copy
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def pet_outlier_limit(suv: np.ndarray, ceiling: float) -> float | None:
    """The magnitude above which a PET value of a region is an outlier: ``ceiling`` times the 99th percentile of
    the region's positive values (on :func:`~hecktor.repair.sample_voxels`), or ``None`` when the region holds no positive value."""
    sample = sample_voxels(suv)
    positive = sample[sample > 0]
    if positive.size == 0:
        return None
    reference = float(np.percentile(positive, 99.0))
    return ceiling * reference if reference > 0 else None


def normalize_pet(suv: np.ndarray, outlier_ceiling: float | None = None) -> np.ndarray:
    """Z-score the SUV values over the region (float32, a new array). A constant region maps to zeros.

    Args:
        outlier_ceiling: with a number (``plan.pet_outlier_ceiling``), values whose magnitude exceeds
            :func:`pet_outlier_limit` are clipped to it and left out of the mean and standard deviation, so that a
            few absurd voxels cannot collapse the z-score; a region without such values is normalised exactly as
            without it. ``None``: a plain z-score.
    """
    out = np.array(suv, dtype=np.float32, copy=True)
    kept = out
    if outlier_ceiling is not None:
        limit = pet_outlier_limit(out, outlier_ceiling)
        if limit is not None:
            outliers = np.abs(out) > limit
            if outliers.any():
                kept = out[~outliers]
                np.clip(out, -limit, limit, out=out)
    # torch's std_mean is one multi-threaded pass; numpy's std makes two passes and a temporary of the same size.
    std, mean = torch.std_mean(torch.from_numpy(kept), correction=0)
    out -= np.float32(mean)
    if float(std) > 1e-6:
        out /= np.float32(std)
    return out


def resample_pair(ct: sitk.Image | None, pet: sitk.Image | None, grid: Grid,
                  plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """CT (HU) and PET (SUV) resampled onto ``grid`` as float32 (z, y, x) arrays, padded outside their views (an
    image that is ``None`` is its padding value throughout)."""
    arrays = []
    for image, pad in ((ct, plan.ct_pad_hu), (pet, plan.pet_pad_suv)):
        if image is None:
            arrays.append(np.full(grid.shape_zyx, pad, dtype=np.float32))
        else:
            arrays.append(sitk.GetArrayFromImage(resample_to_grid(image, grid, plan.image_interpolation, pad)))
    return arrays[0], arrays[1]


def network_input(ct: sitk.Image | None, pet: sitk.Image | None, grid: Grid, plan: Plan) -> np.ndarray:
    """The 2-channel normalised tensor (2, z, y, x) of CT and PET on ``grid`` (``None``: a blank channel)."""
    ct_array, pet_array = resample_pair(ct, pet, grid, plan)
    return np.stack([normalize_ct(ct_array, plan.ct_window_hu), normalize_pet(pet_array, plan.pet_outlier_ceiling)])


def blank_network_input(shape_zyx: tuple[int, int, int], plan: Plan) -> np.ndarray:
    """The network input (2, z, y, x) of a region outside every field of view: CT at ``plan.ct_pad_hu`` and PET at
    ``plan.pet_pad_suv``, normalised as :func:`network_input` normalises them."""
    shape = tuple(int(s) for s in shape_zyx)
    ct = normalize_ct(np.full(shape, plan.ct_pad_hu, dtype=np.float32), plan.ct_window_hu)
    pet = normalize_pet(np.full(shape, plan.pet_pad_suv, dtype=np.float32), plan.pet_outlier_ceiling)
    return np.stack([ct, pet])


def region_grid(localization: Localization, plan: RegionPlan) -> Grid:
    """The segmentation region: ``plan.region_mm_xyz`` at ``plan.spacing_mm_xyz`` around the anchor."""
    center = np.asarray(localization.anchor_xyz) + np.asarray(plan.region_offset_mm_xyz)
    return Grid.centered(center, plan.region_mm_xyz, spacing_xyz=plan.spacing_mm_xyz)


def box_grid(localization: Localization, plan: BoxPlan) -> Grid:
    """The box of the image-level tasks (``plan.box_mm_xyz``) around the anchor, sampled at ``plan.input_shape_zyx``."""
    center = np.asarray(localization.anchor_xyz) + np.asarray(plan.box_offset_mm_xyz)
    return Grid.centered(center, plan.box_mm_xyz, size_xyz=plan.input_shape_zyx[::-1])


def _prepare(ct: sitk.Image | None, pet: sitk.Image | None, plan: Plan) -> Region:
    if ct is None and pet is None:
        raise ValueError("preprocessing needs a CT or a PET")
    ct, pet, warnings = check_case(ct, pet, plan)
    localization = localize_head_and_neck(pet, plan, reference=ct)
    # Without a PET the fallback is the caller's choice (a container has already said that it dropped the PET).
    if not localization.found and pet is not None:
        warnings.append(f"head-and-neck localisation: {localization.reason}")
    grid = region_grid(localization, plan) if isinstance(plan, RegionPlan) else box_grid(localization, plan)
    return Region(network_input(ct, pet, grid, plan), grid, localization, warnings)


def preprocess_region(ct: sitk.Image, pet: sitk.Image | None, plan: RegionPlan) -> Region:
    """Segmentation network input: the head-and-neck region at ``plan.spacing_mm_xyz`` (default 1 mm). Without a
    PET (``None``) the region is placed from the CT and the PET channel is blank."""
    if not isinstance(plan, RegionPlan):
        raise TypeError(f"preprocess_region needs a RegionPlan, got {type(plan).__name__}")
    return _prepare(ct, pet, plan)


def preprocess_box(ct: sitk.Image | None, pet: sitk.Image | None, plan: BoxPlan) -> Region:
    """Image-level network input: the 200x200x310 mm box (by default) resampled to 96^3 in one trilinear step.
    Either image may be ``None`` (not both): its channel is blank, and without a PET the box is placed from the CT,
    without a CT from the PET alone."""
    if not isinstance(plan, BoxPlan):
        raise TypeError(f"preprocess_box needs a BoxPlan, got {type(plan).__name__}")
    return _prepare(ct, pet, plan)


def image_level_input(ct: sitk.Image | None, pet: sitk.Image | None,
                      plan: BoxPlan) -> tuple[np.ndarray, list[str], bool]:
    """The network input of an image-level task (Tasks 2 and 3) whatever images a case has: :func:`preprocess_box`
    of the usable ones, or, when a flat placeholder is given (the platform's sanity check) or neither image is
    usable (``None``), the blank input of a box outside every field of view (:func:`blank_network_input`).

    Returns:
        the (2, z, y, x) input, the warnings, and whether the input is blank because of a placeholder.
    """
    if (ct is not None and is_placeholder(ct)) or (pet is not None and is_placeholder(pet)):
        return (blank_network_input(plan.input_shape_zyx, plan),
                ["flat placeholder input: the prediction comes from the clinical record with a blank image"], True)
    if ct is None and pet is None:
        return (blank_network_input(plan.input_shape_zyx, plan),
                ["neither CT nor PET is usable: the prediction comes from the clinical record with a blank image"],
                False)
    region = preprocess_box(ct, pet, plan)
    return region.image, region.warnings, False


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
