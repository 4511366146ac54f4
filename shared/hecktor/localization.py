"""Head-and-neck localisation from FDG PET.

The brain is the largest structure of high FDG uptake in the superior part of a head-and-neck scan. Its centre is
a stable anchor for the crop boxes of both tasks. Everything happens in physical coordinates: the PET is first
resampled onto a coarse axis-aligned grid covering its field of view, so flipped or oblique directions do not
matter.

Hostile headers and units:

* every intermediate grid is bounded by the CT's field of view (plus a margin: :data:`CT_MARGIN_MM`) and by
  :data:`MAX_EXTENT_MM`, so memory depends on the CT, never on a PET header (a PET whose spacing is 100x too large
  would otherwise ask for a 9 GB grid);
* with ``plan.brain_relative_threshold`` the threshold is a fraction of the body's high uptake (its 99th
  percentile in the searched region: the brain's level), so a PET in Bq/ml or kBq/ml is localised exactly as the
  same PET in SUV;
* a brain found outside the CT's field of view (PET and CT misregistered, or overlapping by a few slices) is not an
  anchor: the CT-based fallback is used instead, with the reason.
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

CT_MARGIN_MM = 100.0
"""The PET is searched at most this far, or the CT's own largest extent if larger, outside the CT's field of view: the
grid of a PET with an absurd header stays within three times the CT's size, while an ordinary PET, even one much
wider than the CT, is searched exactly as it always was."""

MAX_EXTENT_MM = 2000.0
"""No intermediate grid is wider than this along any axis, whatever the headers say (a body is well under 1 m wide)."""

BODY_HU = -500.0
"""CT voxels above this are inside the body (air reads -1000 HU, fat -100 HU)."""

BRAIN_MIN_CONTRAST = 2.0
"""With a relative threshold, high uptake is at least this multiple of the body's median uptake (brain: 6-20x)."""

UPTAKE_SPACING_MM = 8.0
"""Spacing of the coarse grid on which :func:`body_uptake` samples PET and CT."""


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
    # INFO, not WARNING: the caller reports the fallback (one warning line per case, in the prediction's report).
    logger.info("head-and-neck localisation fell back: %s", reason)
    return Localization(tuple(float(v) for v in anchor), False, reason)


def bounded_box(low: np.ndarray, high: np.ndarray, reference: sitk.Image | None,
                margin_mm: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The physical box ``[low, high]`` cut to ``reference``'s field of view widened by ``margin_mm`` (default: the
    larger of :data:`CT_MARGIN_MM` and the reference's largest extent) and to :data:`MAX_EXTENT_MM` per axis around
    its centre; ``None`` when nothing is left.

    A box that needs no cutting is returned unchanged (same numbers), so ordinary cases are not affected.
    """
    low, high = np.asarray(low, dtype=float).copy(), np.asarray(high, dtype=float).copy()
    if reference is not None:
        ref_low, ref_high = Grid.from_image(reference).physical_bounds()
        if margin_mm is None:
            margin_mm = max(CT_MARGIN_MM, float(np.max(ref_high - ref_low)))
        low = np.maximum(low, ref_low - margin_mm)
        high = np.minimum(high, ref_high + margin_mm)
    if np.any(high <= low):
        return None
    too_wide = high - low > MAX_EXTENT_MM
    if np.any(too_wide):
        centre = (low + high) / 2.0
        low = np.where(too_wide, centre - MAX_EXTENT_MM / 2.0, low)
        high = np.where(too_wide, centre + MAX_EXTENT_MM / 2.0, high)
    return low, high


def body_uptake(pet: sitk.Image, ct: sitk.Image | None = None) -> float:
    """The body's median PET uptake, in the PET's own unit (about 1 for SUV, thousands for Bq/ml); 0 if unknown.

    PET and CT are sampled on a coarse (:data:`UPTAKE_SPACING_MM`, or coarser to keep at most 128 samples per axis)
    grid over their common field of view; the body is
    where the CT reads above :data:`BODY_HU`. Without a CT (or without body voxels) the body is where the PET exceeds
    5 % of its 99.5th percentile. The median is scale-equivariant: the same PET in another unit gives the same value
    in that unit, and a few absurd voxels do not move it.
    """
    low, high = Grid.from_image(pet).physical_bounds()
    box = bounded_box(low, high, ct, margin_mm=0.0)
    if box is None:
        return 0.0
    extent = box[1] - box[0]
    # at most 128 samples per axis: a median needs no more, and a PET without a CT may be 2 m wide
    spacing = max(UPTAKE_SPACING_MM, float(extent.max()) / 128.0)
    grid = Grid.centered((box[0] + box[1]) / 2.0, extent, spacing_xyz=(spacing,) * 3)
    uptake = sitk.GetArrayFromImage(resample_to_grid(pet, grid, "linear", float("nan")))
    finite = np.isfinite(uptake)
    if ct is not None:
        body = sitk.GetArrayFromImage(resample_to_grid(ct, grid, "linear", -1000.0)) > BODY_HU
        inside = uptake[body & finite]
        if inside.size >= 8:
            return float(np.median(inside))
    values = uptake[finite]
    if values.size == 0:
        return 0.0
    top = float(np.percentile(values, 99.5))
    if top <= 0:
        return 0.0
    return float(np.median(values[values > 0.05 * top]))


def _body_mask(coarse: np.ndarray, grid: Grid, ct: sitk.Image | None) -> np.ndarray:
    """Voxels of ``grid`` inside the body: the CT above :data:`BODY_HU`; without a CT (or without such voxels), the
    PET above 5 % of its 99.5th percentile."""
    if ct is not None:
        body = sitk.GetArrayFromImage(resample_to_grid(ct, grid, "linear", -1000.0)) > BODY_HU
        if np.count_nonzero(body) >= 8:
            return body
    top = float(np.percentile(coarse, 99.5))
    return coarse > 0.05 * top if top > 0 else np.zeros(coarse.shape, dtype=bool)


def inside_field_of_view(image: sitk.Image, point_xyz) -> bool:
    """Whether a physical point lies within ``image``'s field of view (voxel edges included)."""
    index = Grid.from_image(image).physical_to_index(np.asarray(point_xyz, dtype=float)[None])[0]
    return bool(np.all(index >= -0.5) and np.all(index <= np.asarray(image.GetSize()) - 0.5))


def localize_head_and_neck(pet: sitk.Image | None, plan: Plan, reference: sitk.Image | None = None) -> Localization:
    """Find the brain in ``pet`` and return its centre as the head-and-neck anchor.

    The top ``plan.brain_search_mm`` of the PET's field of view (+z is superior in LPS), cut to the CT's field of
    view plus a margin (:func:`bounded_box`), is thresholded (unit-independently) at
    ``plan.brain_relative_threshold`` times the 99th percentile of the body's uptake there, but at least
    :data:`BRAIN_MIN_CONTRAST` times its median, or, for plans without that field, at ``plan.brain_suv_threshold``
    SUV; the largest 26-connected component, if at least
    ``plan.brain_min_volume_ml`` and inside the CT's field of view, is the brain. Otherwise, or without a PET, the
    anchor falls back to the superior centre of ``reference``'s field of view (the CT's, if given; else the PET's)
    and ``reason`` says why.
    """
    if pet is None:
        if reference is None:
            raise ValueError("localize_head_and_neck needs a PET or a reference image")
        return _fallback(reference, plan, "no PET given")
    ct = reference if reference is not None and reference is not pet else None
    reference = pet if reference is None else reference
    low, high = Grid.from_image(pet).physical_bounds()
    spacing = plan.localization_spacing_mm
    search_low = np.array([low[0], low[1], max(low[2], high[2] - plan.brain_search_mm)])
    box = bounded_box(search_low, high, ct)
    if box is None:
        return _fallback(reference, plan, f"the top {plan.brain_search_mm:g} mm of the PET lie outside the CT's field "
                                          "of view (PET and CT misregistered?)")
    search_low, search_high = box
    center = (search_low + search_high) / 2.0
    coarse_grid = Grid.centered(center, search_high - search_low, spacing_xyz=(spacing,) * 3)
    # A copy, not a view: a view of the temporary resampled image would outlive it (freed memory).
    coarse = sitk.GetArrayFromImage(resample_to_grid(pet, coarse_grid, "linear", 0.0))
    threshold, described = plan.brain_suv_threshold, f"SUV {plan.brain_suv_threshold:g}"
    if plan.brain_relative_threshold is not None:
        body = coarse[_body_mask(coarse, coarse_grid, ct)]
        high_uptake, typical = (float(v) for v in np.percentile(body, [99.0, 50.0])) if body.size else (0.0, 0.0)
        if high_uptake <= 0:
            return _fallback(reference, plan, f"no positive PET uptake in the body in the top {plan.brain_search_mm:g} "
                                              "mm")
        # A uniform body has no brain: its 99th percentile is its median, and a fraction of it is the whole body.
        threshold = max(plan.brain_relative_threshold * high_uptake, BRAIN_MIN_CONTRAST * typical)
        described = (f"{threshold:.3g} (the larger of {plan.brain_relative_threshold:g} x the body's 99th percentile "
                     f"{high_uptake:.3g} and {BRAIN_MIN_CONTRAST:g} x its median {typical:.3g})")
    mask = coarse > threshold
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return _fallback(reference, plan, f"no PET uptake above {described} in the top {plan.brain_search_mm:g} mm")
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    volume_ml = float(sizes[largest - 1] * spacing**3 / 1000.0)
    if volume_ml < plan.brain_min_volume_ml:
        return _fallback(reference, plan, f"largest high-uptake component is {volume_ml:.0f} ml, below the "
                                          f"{plan.brain_min_volume_ml:g} ml expected of a brain")
    centroid_zyx = np.array(ndimage.center_of_mass(components == largest))
    anchor = coarse_grid.index_to_physical(centroid_zyx[::-1])
    if ct is not None and not inside_field_of_view(ct, anchor):
        where = ", ".join(f"{v:.0f}" for v in anchor)
        return _fallback(ct, plan, f"the brain found in the PET (centre {where} mm) lies outside the CT's field of "
                                   "view: PET and CT are misregistered or barely overlap")
    return Localization(tuple(float(v) for v in anchor), True, f"brain found ({volume_ml:.0f} ml)", volume_ml)
