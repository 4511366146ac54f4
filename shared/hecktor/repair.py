"""What a scan must be, and the documented repairs of the inputs that are not quite: one place for both.

Screening (:func:`is_placeholder`, :func:`no_finite_voxel_problem`, :func:`empty_pet_problem`,
:func:`overlap_problem`) names what makes an image unusable, one line each; :func:`hecktor.case.read_case` drops such
an image (or, strict, refuses it).

Repairs (:func:`repair_case`) restore the documented units and values, each with one warning line: non-finite
voxels, a CT stored with a +1024 offset (:func:`repair_ct_offset`), a PET in Bq/ml rather than SUV
(:func:`repair_pet_unit`), absurd PET voxels (:func:`repair_implausible_pet`). A clean image is never touched, so a
repaired image passes through again unchanged and silent. :func:`hecktor.case.read_case` repairs each case once, when
it is read, so that every consumer (the segmentation, the biomarkers of its mask, the tumour cube, the fused networks)
sees the same images; the predictors repair an in-memory case the same way before anything else.

This module sits below :mod:`hecktor.images`, :mod:`hecktor.case` and :mod:`hecktor.preprocessing`, which use it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.geometry import Grid, overlap_volume_ml
from hecktor.localization import body_uptake
from hecktor.plan import RegionPlan

CT_PAD_HU: float = RegionPlan.ct_pad_hu
"""The value of a repaired non-finite CT voxel (the plans' CT padding value, air)."""
PET_PAD_SUV: float = RegionPlan.pet_pad_suv
"""The value of a repaired non-finite PET voxel (the plans' PET padding value)."""

CT_OFFSET = 1024.0
"""The offset of CTs stored as unsigned values (HU + 1024) whose header lost the rescale intercept."""

SUV_MAX_BODY_UPTAKE = 50.0
"""A body whose median PET uptake exceeds this is not in SUV (SUV gives about 1; Bq/ml thousands)."""

PET_IMPLAUSIBLE_MULTIPLE = 1000.0
"""PET voxels above this multiple of the body's median uptake are implausible (tumours reach tens)."""


# ------------------------------------------------------------------------------------------------ screening


def is_placeholder(image: sitk.Image) -> bool:
    """A flat stand-in rather than a scan: a 2-D image, or a 3-D one with a size of 1 along some axis (the platform's
    sanity check sends 1x1 and 1x1x1 images)."""
    return image.GetDimension() == 2 or (image.GetDimension() == 3 and min(image.GetSize()) < 2)


def _has_finite_voxel(array: np.ndarray) -> bool:
    if not np.issubdtype(array.dtype, np.floating):
        return array.size > 0
    # slice by slice: a scan with finite voxels says so at its first slice, without a full-size mask
    return any(np.isfinite(plane).any() for plane in array)


def no_finite_voxel_problem(image: sitk.Image, what: str) -> str | None:
    """The error line of an image without a single finite voxel (all NaN or infinite), else ``None``."""
    if _has_finite_voxel(sitk.GetArrayViewFromImage(image)):
        return None
    return f"{what} holds no finite voxel (all NaN or infinite)"


def empty_pet_problem(pet: sitk.Image) -> str | None:
    """The error line of a PET whose finite voxels all hold one value (all zero: an empty or failed reconstruction),
    else ``None``."""
    array = sitk.GetArrayViewFromImage(pet)
    values = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
    if values.size == 0:
        return "PET holds no finite voxel (all NaN or infinite)"
    low, high = values.min(), values.max()
    return None if low != high else f"PET is empty: every voxel equals {float(low):g}"


def overlap_problem(ct: sitk.Image, pet: sitk.Image) -> str | None:
    """The error line of a PET and a CT whose fields of view do not meet in physical space, else ``None``."""
    if overlap_volume_ml(Grid.from_image(ct), Grid.from_image(pet)) > 0.0:
        return None
    ct_low, ct_high = Grid.from_image(ct).physical_bounds()
    pet_low, pet_high = Grid.from_image(pet).physical_bounds()
    return (f"PET and CT do not overlap in physical space (CT z {ct_low[2]:.0f}..{ct_high[2]:.0f} mm, "
            f"PET z {pet_low[2]:.0f}..{pet_high[2]:.0f} mm); check the images' origins")


# -------------------------------------------------------------------------------------------------- repairs


def _replace_nan(image: sitk.Image, value: float, what: str, warnings: list[str]) -> sitk.Image:
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return image
    array = sitk.GetArrayViewFromImage(image)
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return image
    if n_bad == array.size:
        raise InputError(no_finite_voxel_problem(image, what))
    repaired = np.where(bad, np.float32(value), array).astype(array.dtype)
    fixed = sitk.GetImageFromArray(repaired)
    fixed.CopyInformation(image)
    warnings.append(f"{what}: {n_bad} non-finite voxel(s) replaced by {value:g}")
    return fixed


def sample_voxels(array: np.ndarray, limit: int = 2**21) -> np.ndarray:
    """Every other voxel along each axis of a large array (a fixed, deterministic subsample for percentiles)."""
    return array[::2, ::2, ::2] if array.ndim == 3 and array.size > limit else array


def repair_ct_offset(ct: sitk.Image) -> tuple[sitk.Image, str | None]:
    """A CT stored as HU + 1024 (unsigned values 0..4095 whose header lost its rescale intercept), back in HU.

    A CT in HU always holds negative values (air -1000, fat -100, lungs -850). A CT without any, whose soft tissue
    (its values between 500 and 2000) has its median between 850 and 1250 (soft tissue is 0-100 HU), is taken to be
    offset: 1024 is subtracted, with a warning. Anything else is returned unchanged.

    Returns:
        the CT (float32 when repaired) and the warning, if any.
    """
    array = sitk.GetArrayViewFromImage(ct)
    minimum = float(array.min())  # numpy's min of a view: several times faster than ITK's filter on 50 M voxels
    if minimum < 0:
        return ct, None
    sample = sample_voxels(array)
    tissue = sample[(sample >= 500) & (sample <= 2000)]
    if tissue.size < max(64, 0.01 * sample.size):
        return ct, None
    level = float(np.median(tissue))
    if not 850.0 <= level <= 1250.0:
        return ct, None
    fixed = sitk.Cast(ct, sitk.sitkFloat32) - CT_OFFSET
    return fixed, (f"CT holds no negative value (minimum {minimum:g}, soft tissue at {level:.0f}): "
                   f"read as stored with a +{CT_OFFSET:g} offset and {CT_OFFSET:g} subtracted to give HU")


def repair_pet_unit(pet: sitk.Image, ct: sitk.Image | None) -> tuple[sitk.Image, float, str | None]:
    """A PET in Bq/ml (or another activity unit whose body uptake is far above SUV's), rescaled to an approximate SUV.

    The body's median uptake (:func:`~hecktor.localization.body_uptake`) is about 1 in SUV; above
    :data:`SUV_MAX_BODY_UPTAKE` the PET is divided by it so that the body reads 1, with a warning (the injected dose and
    the patient's weight that a true SUV needs are not in the image). Localisation thresholds and the warnings about
    implausible voxels then work in SUV; the network input, a z-score, does not change with the unit.

    Returns:
        the PET (float32 when rescaled), its body uptake after the repair, and the warning, if any.
    """
    level = body_uptake(pet, ct)
    if level <= SUV_MAX_BODY_UPTAKE:
        return pet, level, None
    fixed = sitk.Cast(pet, sitk.sitkFloat32) / level
    return fixed, 1.0, (f"PET values are implausible for SUV (the body's median uptake is {level:,.0f}; about 1 in "
                        f"SUV): read as Bq/ml and divided by {level:,.0f} so that the body reads 1 (an approximate "
                        "SUV)")


MAX_IMPLAUSIBLE_REPAIRS = 100_000
"""Beyond this many implausible PET voxels, they are set to the padding value rather than to a local median."""


def repair_implausible_pet(pet: sitk.Image, level: float,
                           pad_suv: float = PET_PAD_SUV) -> tuple[sitk.Image, str | None]:
    """PET voxels far above any real uptake (1e20, float32's maximum: corrupt data), replaced by the median of their
    plausible neighbours.

    A voxel is implausible when its magnitude exceeds :data:`PET_IMPLAUSIBLE_MULTIPLE` times the body's median uptake
    ``level`` (about 500 SUV for a real body; tumours reach tens). Each is replaced by the median of the plausible
    voxels of its 3x3x3 neighbourhood (the padding value if there is none, or if there are more than
    :data:`MAX_IMPLAUSIBLE_REPAIRS` of them), as NaN voxels are replaced by the padding value: a few corrupt voxels
    should neither cost a case nor dominate its normalisation. Real uptake is never touched.

    Returns:
        the PET (a new image when repaired) and the warning, if any.
    """
    if level <= 0:
        return pet, None
    ceiling = PET_IMPLAUSIBLE_MULTIPLE * level
    array = sitk.GetArrayViewFromImage(pet)
    bad = np.abs(array) > ceiling
    count = int(np.count_nonzero(bad))
    if count == 0:
        return pet, None
    peak = float(np.max(np.abs(array[bad])))
    repaired = np.array(array, dtype=np.float32)
    if count > MAX_IMPLAUSIBLE_REPAIRS:
        repaired[bad] = np.float32(pad_suv)
    else:
        shape = np.asarray(array.shape)
        for index in np.argwhere(bad):
            low, high = np.maximum(index - 1, 0), np.minimum(index + 2, shape)
            window = tuple(slice(a, b) for a, b in zip(low, high))
            neighbours = array[window][~bad[window]]
            repaired[tuple(index)] = np.median(neighbours) if neighbours.size else np.float32(pad_suv)
    fixed = sitk.GetImageFromArray(repaired)
    fixed.CopyInformation(pet)
    return fixed, (f"PET: {count} voxel(s) above {PET_IMPLAUSIBLE_MULTIPLE:g}x the body's median uptake (largest "
                   f"{peak:.3g}): implausible values, replaced by the median of their neighbours")


def repair_case(ct: sitk.Image | None, pet: sitk.Image | None, *, ct_pad_hu: float = CT_PAD_HU,
                pet_pad_suv: float = PET_PAD_SUV) -> tuple[sitk.Image | None, sitk.Image | None, list[str]]:
    """Validate a CT/PET pair and repair what can be repaired (either may be ``None``: not given; a flat placeholder
    is returned as it is).

    Raises :class:`InputError` for an all-non-finite image, an empty PET (every voxel 0 or equal) and a PET that does
    not overlap the CT in physical space. Repairs, each with a warning: non-finite voxels (NaN, inf) are replaced by
    the padding values (``ct_pad_hu``, ``pet_pad_suv``: a handful of bad voxels should not cost a case); a
    CT stored with a +1024 offset is brought back to HU (:func:`repair_ct_offset`); a PET in Bq/ml is rescaled to an
    approximate SUV (:func:`repair_pet_unit`); PET voxels far above any real uptake are replaced by their
    neighbours' median (:func:`repair_implausible_pet`).

    Returns:
        the (possibly repaired) CT and PET, and the warnings.
    """
    warnings: list[str] = []
    if ct is not None and is_placeholder(ct):  # nothing to repair in a flat placeholder, nor to measure against it
        scan_ct = None
    else:
        if ct is not None:
            ct = _replace_nan(ct, ct_pad_hu, "CT", warnings)
            ct, repaired = repair_ct_offset(ct)
            warnings.extend([repaired] if repaired else [])
        scan_ct = ct
    if pet is None or is_placeholder(pet):
        return ct, pet, warnings
    pet = _replace_nan(pet, pet_pad_suv, "PET", warnings)
    stats = sitk.StatisticsImageFilter()
    stats.Execute(pet)
    if stats.GetMaximum() == stats.GetMinimum():
        raise InputError(f"PET is empty: every voxel equals {stats.GetMaximum():g}")
    if scan_ct is not None:
        problem = overlap_problem(scan_ct, pet)
        if problem is not None:
            raise InputError(problem)
    pet, level, repaired = repair_pet_unit(pet, scan_ct)
    warnings.extend([repaired] if repaired else [])
    pet, repaired = repair_implausible_pet(pet, level, pet_pad_suv)
    warnings.extend([repaired] if repaired else [])
    return ct, pet, warnings
