"""One synthetic patient in memory: :func:`make_case` draws the record, the anatomy and the outcomes, then paints
the CT, the PET and the label on grids of their own.

Each case of a cohort draws from its own random stream, :func:`case_seed_sequence`, so a case depends on the
cohort's seed and its index only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hecktor.errors import InputError
from hecktor.synthetic.clinical import _draw_clinical, _mask_missing
from hecktor.synthetic.grids import _SIZE_SPECS, ORIENTATIONS, SIZES, _draw_grid, _image
from hecktor.synthetic.outcomes import _covariates, _draw_survival, hpv_probability, true_log_hazard
from hecktor.synthetic.phantom import _draw_anatomy, _render_slabs
from hecktor.synthetic.staging import recorded_stages, staging_seed_sequence, true_stages
from hecktor.tasks import get_task


@dataclass
class SyntheticCase:
    """One synthetic patient held in memory.

    Attributes:
        ct: CT in HU (int16) on its own grid.
        pet: PET in SUV (float32) on its own, coarser grid.
        label: uint8 label on the CT grid (0 background, 1 GTVp, 2 GTVn).
        centre: centre name used for the patient ID (e.g. ``"MDA"``).
        clinical: the row as recorded, keyed by :data:`CLINICAL_COLUMNS`; ``None`` where missing.
        true_clinical: the same row before missing values were blanked.
        features: true image features of the survival model: tumour_volume_ml, suv_max, n_nodes.
        true_log_hazard: the generating model's log-hazard.
        hpv_probability: P(HPV+) of :data:`HPV_MODEL`, from which the true HPV status was drawn.
        rfs_days: observed recurrence-free survival time (days).
        relapse: 1 if the relapse was observed, 0 if censored.
        landmarks: physical positions (LPS mm): brain_centre, brain_radii, tumour_centre, tumour_box (lo, hi),
            node_centres.
        ct_orientation, pet_orientation: ``"identity"``, ``"flip"`` or ``"oblique"``.
        t_stage, n_stage: the stages as recorded (2026 table; one step off the true ones now and then).
        true_t_stage, true_n_stage: the stages of the AJCC 7th rules on the case's own primary and nodes
            (:mod:`hecktor.synthetic.staging`).
    """

    ct: sitk.Image
    pet: sitk.Image
    label: sitk.Image
    centre: str
    clinical: dict[str, Any]
    true_clinical: dict[str, Any]
    features: dict[str, float]
    true_log_hazard: float
    rfs_days: float
    relapse: int
    landmarks: dict[str, Any] = field(repr=False)
    hpv_probability: float = float("nan")
    ct_orientation: str = "identity"
    pet_orientation: str = "identity"
    t_stage: str | None = None
    n_stage: str | None = None
    true_t_stage: str | None = None
    true_n_stage: str | None = None

    def ehr(self, task: int = 2) -> dict[str, Any]:
        """The case's ``ehr.json`` content as the platform sends it for ``task``: the keys of the task's record
        (:attr:`hecktor.tasks.TaskSpec.ehr_keys`; never HPV Status, CenterID for Task 2 only)."""
        keys = get_task(task).ehr_keys
        return {k: v for k, v in self.clinical.items() if k in keys}


def case_seed_sequence(seed: int, case_index: int) -> np.random.SeedSequence:
    """The random stream of case ``case_index`` of a cohort with ``seed`` (independent of the cohort's size)."""
    return np.random.SeedSequence(seed, spawn_key=(case_index,))


def _check_choice(name: str, value: str | None, choices: Sequence[str], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def make_case(
    rng_or_seed: np.random.Generator | int,
    size: str = "small",
    *,
    case_index: int = 0,
    ct_orientation: str | None = None,
    pet_orientation: str | None = None,
) -> SyntheticCase:
    """Build one synthetic PET/CT case in memory.

    Args:
        rng_or_seed: a numpy Generator, or a cohort seed; with a seed the case is identical (images, clinical
            row, survival) to case ``case_index`` of :func:`generate_cohort` with that seed.
        size: ``"small"`` (about 56x56x64 CT, 40x40x60 PET) or ``"realistic"`` (512x512x200 CT, 200^3 PET).
        case_index: which case of the seed's cohort to build (ignored when a Generator is given). The patient
            (clinical row, anatomy, survival) depends on seed and case_index only; ``size`` changes only the
            grids and the image noise.
        ct_orientation, pet_orientation: force ``"identity"``, ``"flip"`` or ``"oblique"`` grid directions;
            ``None`` draws them (60 % / 20 % / 20 %). Forcing changes nothing else in the case.
    """
    _check_choice("size", size, SIZES)
    _check_choice("ct_orientation", ct_orientation, ORIENTATIONS, allow_none=True)
    _check_choice("pet_orientation", pet_orientation, ORIENTATIONS, allow_none=True)
    if isinstance(rng_or_seed, np.random.Generator):
        rng = rng_or_seed
        sequence = rng.bit_generator.seed_seq  # read, never drawn from: the case's draws stay as they were
    else:
        if int(rng_or_seed) < 0 or case_index < 0:
            raise InputError(f"seed and case_index must be non-negative; got {rng_or_seed}, {case_index}")
        sequence = case_seed_sequence(int(rng_or_seed), case_index)
        rng = np.random.default_rng(sequence)

    # Draw order: the patient (clinical, anatomy, survival, missingness) first, then what depends on the size
    # (grids, image noise), so a seed gives the same patients at both sizes.
    centre, true_clinical = _draw_clinical(rng)
    anatomy = _draw_anatomy(rng)
    p_hpv = hpv_probability(true_clinical, anatomy.tumour_volume_ml, anatomy.n_nodes)
    true_clinical["HPV Status"] = int(true_clinical["HPV Status"] < p_hpv)
    features = {
        "tumour_volume_ml": anatomy.tumour_volume_ml,
        "suv_max": anatomy.suv_max,
        "n_nodes": anatomy.n_nodes,
    }
    log_hazard = true_log_hazard(
        _covariates(true_clinical, anatomy.tumour_volume_ml, anatomy.suv_max, anatomy.n_nodes)
    )
    rfs_days, relapse = _draw_survival(rng, log_hazard)
    true_t, true_n = true_stages(anatomy)
    t_stage, n_stage = recorded_stages(true_t, true_n, staging_seed_sequence(sequence))  # a stream of its own
    clinical = _mask_missing(rng, true_clinical)

    spec = _SIZE_SPECS[size]
    ct_kind, ct_grid, ct_bottom_z = _draw_grid(rng, spec["ct"], anatomy.offset, ct_orientation)
    pet_kind, pet_grid, _ = _draw_grid(rng, spec["pet"], anatomy.offset, pet_orientation, ct_bottom_z)

    # The CT is finished slab by slab (noise, clip, int16) so no full-size float volume is ever held.
    ct_array = np.empty(ct_grid.shape_zyx, dtype=np.int16)
    label = np.zeros(ct_grid.shape_zyx, dtype=np.uint8)
    noise_sd = np.float32(anatomy.ct_noise_hu)
    for z_slice, values in _render_slabs(ct_grid, anatomy, "ct", label):
        noise = rng.standard_normal(values.shape, dtype=np.float32)
        noise *= noise_sd
        values += noise
        np.clip(values, -1024, 3071, out=values)
        np.rint(values, out=values)
        ct_array[z_slice] = values

    activity = np.empty(pet_grid.shape_zyx, dtype=np.float32)
    for z_slice, values in _render_slabs(pet_grid, anatomy, "suv"):
        activity[z_slice] = values
    spacing_zyx = np.array(pet_grid.spacing_xyz[::-1])
    psf_sigma = anatomy.pet_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / spacing_zyx
    activity = ndimage.gaussian_filter(activity, psf_sigma, mode="nearest")
    # Poisson counts with a count level proportional to voxel volume, then the mild smoothing of reconstruction.
    counts_per_suv = anatomy.pet_counts_per_suv * float(np.prod(pet_grid.spacing_xyz)) / 64.0
    np.clip(activity, 0.0, None, out=activity)
    counts = rng.poisson(activity * np.float32(counts_per_suv)).astype(np.float32)
    counts *= np.float32(1.0 / counts_per_suv)
    pet_array = ndimage.gaussian_filter(counts, 0.5, mode="nearest")

    return SyntheticCase(
        ct=_image(ct_grid, ct_array),
        pet=_image(pet_grid, pet_array),
        label=_image(ct_grid, label),
        centre=centre,
        clinical=clinical,
        true_clinical=true_clinical,
        features=features,
        true_log_hazard=log_hazard,
        rfs_days=rfs_days,
        relapse=relapse,
        landmarks=anatomy.landmarks,
        ct_orientation=ct_kind,
        pet_orientation=pet_kind,
        hpv_probability=p_hpv,
        t_stage=t_stage,
        n_stage=n_stage,
        true_t_stage=true_t,
        true_n_stage=true_n,
    )

