"""Head-and-neck localisation from FDG PET.

The brain is the largest structure of high FDG uptake in the superior part of a head-and-neck scan. Its centre is
a stable anchor for the crop boxes of both tasks. Everything happens in physical coordinates: the PET is first
resampled onto a coarse axis-aligned grid covering its field of view, so flipped or oblique directions do not
matter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hecktor.geometry import Grid, resample_to_grid
from hecktor.plan import Plan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Localization:
    """Result of :func:`localize_head_and_neck`.

    Attributes:
        anchor_xyz: physical point (LPS mm) that the crop boxes are placed relative to: the brain's centre, or the
            fallback point.
        found: whether a brain was found.
        reason: one line describing how the anchor was obtained.
        brain_volume_ml: volume of the component taken as the brain (0 when not found).
    """

    anchor_xyz: tuple[float, float, float]
    found: bool
    reason: str
    brain_volume_ml: float = 0.0


def _fallback(reference: sitk.Image, plan: Plan, why: str) -> Localization:
    low, high = Grid.from_image(reference).physical_bounds()
    anchor = ((low[0] + high[0]) / 2.0, (low[1] + high[1]) / 2.0, high[2] - plan.fallback_brain_depth_mm)
    reason = f"{why}; using the superior centre of the field of view"
    logger.warning("head-and-neck localisation fell back: %s", reason)
    return Localization(tuple(float(v) for v in anchor), False, reason)


def localize_head_and_neck(pet: sitk.Image | None, plan: Plan, reference: sitk.Image | None = None) -> Localization:
    """Find the brain in ``pet`` and return its centre as the head-and-neck anchor.

    The top ``plan.brain_search_mm`` of the PET's field of view (+z is superior in LPS) is thresholded at
    ``plan.brain_suv_threshold``; the largest 26-connected component, if at least ``plan.brain_min_volume_ml``,
    is the brain. Otherwise, or without a PET, the anchor falls back to the superior centre of ``reference``'s field
    of view (the CT's, if given; else the PET's) with a logged warning.
    """
    if pet is None:
        if reference is None:
            raise ValueError("localize_head_and_neck needs a PET or a reference image")
        return _fallback(reference, plan, "no PET given")
    reference = pet if reference is None else reference
    low, high = Grid.from_image(pet).physical_bounds()
    spacing = plan.localization_spacing_mm
    search_low = np.array([low[0], low[1], max(low[2], high[2] - plan.brain_search_mm)])
    center = (search_low + high) / 2.0
    coarse_grid = Grid.centered(center, high - search_low, spacing_xyz=(spacing,) * 3)
    # A copy, not a view: a view of the temporary resampled image would outlive it (freed memory).
    coarse = sitk.GetArrayFromImage(resample_to_grid(pet, coarse_grid, "linear", 0.0))
    mask = coarse > plan.brain_suv_threshold
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return _fallback(reference, plan, f"no PET uptake above SUV {plan.brain_suv_threshold:g} in the top "
                                          f"{plan.brain_search_mm:g} mm")
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    volume_ml = float(sizes[largest - 1] * spacing**3 / 1000.0)
    if volume_ml < plan.brain_min_volume_ml:
        return _fallback(reference, plan, f"largest high-uptake component is {volume_ml:.0f} ml, below the "
                                          f"{plan.brain_min_volume_ml:g} ml expected of a brain")
    centroid_zyx = np.array(ndimage.center_of_mass(components == largest))
    anchor = coarse_grid.index_to_physical(centroid_zyx[::-1])
    return Localization(tuple(float(v) for v in anchor), True, f"brain found ({volume_ml:.0f} ml)", volume_ml)
