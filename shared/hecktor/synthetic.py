"""Synthetic HECKTOR-like cohorts: PET/CT phantoms, GTVp/GTVn labels, clinical tables and survival with a known truth.

The generator lays out a folder exactly like the HECKTOR 2025 training data::

    DIR/Task 1/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz, <PID>.nii.gz
    DIR/Task 1/HECKTOR_2025_Training_Task_1.csv
    DIR/Task 2/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz
    DIR/Task 2/HECKTOR_2025_Training_Task_2.csv      (+ RFS, Relapse)
    DIR/Task 3/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz
    DIR/Task 3/HECKTOR_2025_Training_Task_3.csv      (HPV Status, the target, empty where unknown)
    DIR/true_risk.csv                                  (true log-hazard, HPV status and P(HPV+), the image features)
    DIR/cohort.json                                    (seed, size, true models, oracle C-index and balanced accuracy)

Every case is an analytic head-and-neck phantom placed in physical space (LPS mm, +z superior). Each image is
made by evaluating the same analytic shapes at the physical centres of *its own* voxels, so CT, PET and label
agree in physical space whatever their spacing, origin, extent or direction (flipped and oblique grids included).
Shapes carry an approximate signed distance, which gives a one-voxel partial-volume ramp on every grid; the label
is the zero level set sampled on the CT grid.

Survival follows a proportional-hazards model with a Weibull baseline whose coefficients are written to
``cohort.json``; times are drawn from the true (not the missing-masked) covariates. HPV status (Task 3) is drawn from
a logistic model of the true record and tumour (:data:`HPV_MODEL`: non-smokers, younger patients, smaller
primaries and more nodes are more often HPV-positive); HPV-negative status raises the hazard.

Each case draws from its own random stream, ``SeedSequence(seed, spawn_key=(case_index,))``, so a cohort of 10
cases is a prefix of a cohort of 20 with the same seed, and the same seed gives byte-identical files.

Command line::

    python -m hecktor.synthetic --out DIR --cases 20 --seed 0 --size small

Development only: ``.dockerignore`` keeps this module out of the container images, so no module that the
containers import may import it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hecktor.errors import HecktorError, InputError
from hecktor.geometry import Grid
from hecktor.io import CLINICAL_COLUMNS
from hecktor.tasks import get_task

SIZES = ("small", "realistic")
ORIENTATIONS = ("identity", "flip", "oblique")
GENERATOR_VERSION = 2  # 2: HPV status depends on the record and the images (Task 3); images as in 1

TASK1_CSV = get_task(1).training_csv
TASK2_CSV = get_task(2).training_csv
TRUE_RISK_CSV = "true_risk.csv"
COHORT_JSON = "cohort.json"
TASK3_FOLDER, TASK3_CSV = get_task(3).training_folder, get_task(3).training_csv
_OUTPUT_NAMES = ("Task 1", "Task 2", TASK3_FOLDER, TRUE_RISK_CSV, COHORT_JSON)

# (centre name, CenterID, share of patients). Names follow the HECKTOR centres; the shares are invented.
CENTRES = (
    ("CHUM", 1, 0.15),
    ("CHUP", 2, 0.10),
    ("CHUS", 3, 0.10),
    ("HGJ", 4, 0.15),
    ("MDA", 5, 0.35),
    ("USZ", 6, 0.15),
)

# Probability that a recorded clinical value is blanked (missing completely at random).
MISSING_RATES = {
    "Age": 0.02,
    "Tobacco Consumption": 0.35,
    "Alcohol Consumption": 0.38,
    "Performance Status": 0.10,
    "HPV Status": 0.25,
}

# True proportional-hazards model: log_hazard = sum(beta * (x - centre) / scale) over these covariates.
# Centres and scales are the population moments of the generating distributions (not of one cohort), so a case's
# log-hazard depends on that case alone. Imaging carries most of the variance of the linear predictor
# (about 1.4 of 1.8), clinical covariates the rest.
_LOG_VOL_LO, _LOG_VOL_HI = math.log(5.0), math.log(60.0)
_SUV_LO, _SUV_HI = 6.0, 25.0
_NODE_PROBS = (0.30, 0.30, 0.25, 0.15)
_NODE_MEAN = sum(n * p for n, p in enumerate(_NODE_PROBS))
_NODE_SD = math.sqrt(sum(n * n * p for n, p in enumerate(_NODE_PROBS)) - _NODE_MEAN**2)
_PS_PROBS = (0.50, 0.35, 0.10, 0.04, 0.01)
_P_TOBACCO = 0.55

# HPV status (Task 3's target): logit P(HPV+) = intercept + sum(beta * (x - centre) / scale), the covariates being
# true values. HPV-positive patients are more often non-smokers and younger, with smaller primaries and more nodal
# disease (as in oropharyngeal cancer). The imaging covariates carry most of the variance of the logit (about 1.6 of
# 2.2). Population prevalence and the Bayes rule's balanced accuracy (predict positive where P(HPV+) >= prevalence):
# 0.56 and 0.73 over 4,000 simulated patients.
HPV_MODEL: dict[str, Any] = {
    "intercept": 0.3,
    "covariates": {
        "tobacco": {"beta": -1.2, "centre": _P_TOBACCO, "scale": 1.0},
        "age_years": {"beta": -0.5, "centre": 62.0, "scale": 9.5},
        "log_tumour_volume_ml": {"beta": -0.9, "centre": (_LOG_VOL_LO + _LOG_VOL_HI) / 2,
                                 "scale": (_LOG_VOL_HI - _LOG_VOL_LO) / math.sqrt(12)},
        "n_nodes": {"beta": 0.9, "centre": _NODE_MEAN, "scale": _NODE_SD},
    },
}
HPV_PREVALENCE = 0.56
_P_HPV_NEG = 1.0 - HPV_PREVALENCE
_M_STAGE_PROBS = (("M0", 0.93), ("M1", 0.03), ("Mx", 0.04))

TRUE_MODEL: dict[str, dict[str, float]] = {
    "log_tumour_volume_ml": {
        "beta": 0.9,
        "centre": (_LOG_VOL_LO + _LOG_VOL_HI) / 2,
        "scale": (_LOG_VOL_HI - _LOG_VOL_LO) / math.sqrt(12),
    },
    "suv_max": {"beta": 0.6, "centre": (_SUV_LO + _SUV_HI) / 2, "scale": (_SUV_HI - _SUV_LO) / math.sqrt(12)},
    "n_nodes": {"beta": 0.5, "centre": _NODE_MEAN, "scale": _NODE_SD},
    "hpv_negative": {"beta": 0.8, "centre": _P_HPV_NEG, "scale": 1.0},
    "age_years": {"beta": 0.25, "centre": 62.0, "scale": 9.5},
    "performance_status": {"beta": 0.3, "centre": sum(i * p for i, p in enumerate(_PS_PROBS)), "scale": 1.0},
    "m1": {"beta": 1.2, "centre": 0.03, "scale": 1.0},
    "tobacco": {"beta": 0.3, "centre": _P_TOBACCO, "scale": 1.0},
    "chemoradiotherapy": {"beta": -0.2, "centre": 0.70, "scale": 1.0},
}

# Weibull baseline: S0(t) = exp(-(t / scale)^shape), median RFS of an average patient (log-hazard 0) 4 years.
# With the censoring below about 39 % of patients relapse during follow-up (4,000 simulated cases: 39.3 %).
WEIBULL_SHAPE = 1.3
WEIBULL_MEDIAN_DAYS = 4.0 * 365.25
WEIBULL_SCALE_DAYS = WEIBULL_MEDIAN_DAYS / math.log(2.0) ** (1.0 / WEIBULL_SHAPE)
# Independent censoring: end of follow-up uniform in [1, 5] years (staggered accrual), plus loss to follow-up.
CENSOR_FOLLOW_UP_YEARS = (1.0, 5.0)
CENSOR_DROPOUT_MEAN_YEARS = 15.0


@dataclass(frozen=True)
class _SizeSpec:
    """Grid recipe of one image kind at one size: voxels per axis (x, y, z), spacing (mm) and FOV placement.

    The FOV is placed either by its superior edge (``fov_top_z``, anatomy-frame mm) or by its inferior edge, a
    distance in ``below_ct_mm`` under the CT's inferior edge (so a short PET still reaches further down).
    """

    size: tuple[int, int, int]
    size_jitter: tuple[int, int, int]
    spacing: tuple[float, float, float]
    spacing_jitter: float  # relative, uniform +-
    fov_top_z: float | None = None
    below_ct_mm: tuple[float, float] | None = None


_SIZE_SPECS = {
    # small: ~224 x 224 x 320 mm CT, ~240 x 240 x 360 mm PET (reaching further inferiorly than the CT).
    "small": {
        "ct": _SizeSpec((56, 56, 64), (2, 2, 3), (4.0, 4.0, 5.0), 0.05, fov_top_z=215.0),
        "pet": _SizeSpec((40, 40, 60), (2, 2, 2), (6.0, 6.0, 6.0), 0.05, below_ct_mm=(25.0, 50.0)),
    },
    # realistic: 512 x 512 x ~200 at 0.98 x 0.98 x 2 mm CT; ~200^3 at 4 mm PET (800 mm, neck to abdomen).
    "realistic": {
        "ct": _SizeSpec((512, 512, 200), (0, 0, 10), (0.98, 0.98, 2.0), 0.06, fov_top_z=235.0),
        "pet": _SizeSpec((200, 200, 200), (8, 8, 8), (4.0, 4.0, 4.0), 0.04, fov_top_z=212.0),
    },
}

# Evaluate shapes in blocks of at most this many voxels so a 512 x 512 x 200 CT stays within a few hundred MB.
_BLOCK_VOXELS = 1 << 22


# --------------------------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------------------------


# The grids are ``hecktor.geometry.Grid``s; what only the phantom renderer needs lives in the helpers below. They
# keep their own arithmetic (index matrix direction @ diag(spacing), its inverse) rather than Grid's
# physical_to_index: a different rounding could move a bounding-box edge by one voxel and change the files that a
# seed must reproduce byte for byte.


def _index_matrix(grid: Grid) -> np.ndarray:
    """The 3x3 matrix taking (x, y, z) index offsets to physical offsets: direction @ diag(spacing)."""
    return grid.direction_matrix @ np.diag(grid.spacing_xyz)


def _voxel_width(grid: Grid) -> float:
    """Mean spacing (mm): the width of the partial-volume ramp on this grid."""
    return float(np.mean(grid.spacing_xyz))


def _index_box(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Numpy (z, y, x) slices of the voxels whose centres may lie in the physical box [lo, hi], or None."""
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    index = (corners - np.asarray(grid.origin_xyz)) @ np.linalg.inv(_index_matrix(grid)).T
    first = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
    last = np.minimum(np.ceil(index.max(axis=0)).astype(int), np.array(grid.size_xyz) - 1)
    if np.any(last < first):
        return None
    return (slice(first[2], last[2] + 1), slice(first[1], last[1] + 1), slice(first[0], last[0] + 1))


def _coordinates(grid: Grid, box: tuple[slice, slice, slice], offset: np.ndarray) -> tuple[np.ndarray, ...]:
    """Physical coordinates minus ``offset`` of the voxel centres in ``box``, as broadcastable float32 arrays.

    Axis-aligned grids keep x, y, z one-dimensional along their own axis (broadcasting builds the 3-D result
    only where shapes combine), which makes flipped and identity grids several times cheaper than oblique ones.
    """
    m = _index_matrix(grid)
    o = np.asarray(grid.origin_xyz) - offset
    k = np.arange(box[0].start, box[0].stop, dtype=np.float64)[:, None, None]
    j = np.arange(box[1].start, box[1].stop, dtype=np.float64)[None, :, None]
    i = np.arange(box[2].start, box[2].stop, dtype=np.float64)[None, None, :]
    coords = []
    for axis in range(3):
        value: np.ndarray | float = o[axis]
        for column, index in enumerate((i, j, k)):
            if m[axis, column] != 0.0:
                value = value + (m[axis, column] * index).astype(np.float32)
        coords.append(np.asarray(value, dtype=np.float32))
    return tuple(coords)


def _image(grid: Grid, array: np.ndarray) -> sitk.Image:
    """A (z, y, x) array as an image on ``grid``."""
    return grid.apply_to(sitk.GetImageFromArray(array))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * cross @ cross


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation (normalised Gaussian quaternion); written out to keep the draw order explicit."""
    quaternion = rng.standard_normal(4)
    w, x, y, z = quaternion / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _draw_direction(rng: np.random.Generator, forced: str | None) -> tuple[str, np.ndarray]:
    # All draws happen whatever is forced, so forcing an orientation leaves the rest of the case unchanged.
    u = rng.random()
    flip_choice = rng.integers(2)
    axis = rng.standard_normal(3)
    angle = math.radians(rng.uniform(5.0, 15.0)) * (1 if rng.random() < 0.5 else -1)
    kind = forced or ("identity" if u < 0.6 else "flip" if u < 0.8 else "oblique")
    if kind == "identity":
        return kind, np.eye(3)
    if kind == "flip":
        return kind, np.diag([-1.0, -1.0, 1.0]) if flip_choice == 0 else np.diag([1.0, 1.0, -1.0])
    return kind, _rotation(axis, angle)


def _draw_grid(
    rng: np.random.Generator, spec: _SizeSpec, anchor: np.ndarray, forced: str | None, ct_bottom_z: float = 0.0
) -> tuple[str, Grid, float]:
    """A grid placed as ``spec`` says relative to the anatomy ``anchor``, roughly centred transaxially.

    The origin is derived from the FOV centre, so flipping or rotating the direction moves the origin, not the
    anatomy. Returns the orientation kind, the grid and the anatomy-frame z of the FOV's inferior edge.
    """
    size = tuple(int(n + rng.integers(-j, j + 1)) for n, j in zip(spec.size, spec.size_jitter))
    # Scanners use square pixels: one jitter for x and y, another for z.
    jitter_xy, jitter_z = 1.0 + rng.uniform(-spec.spacing_jitter, spec.spacing_jitter, 2)
    spacing = (
        float(spec.spacing[0] * jitter_xy),
        float(spec.spacing[1] * jitter_xy),
        float(spec.spacing[2] * jitter_z),
    )
    extent = np.array(size, dtype=float) * np.array(spacing)
    shift_x, shift_y, shift_z = rng.uniform(-10.0, 10.0, 3)
    if spec.fov_top_z is not None:
        bottom_z = spec.fov_top_z + 0.8 * shift_z - extent[2]
    else:
        assert spec.below_ct_mm is not None
        bottom_z = ct_bottom_z - rng.uniform(*spec.below_ct_mm)
    centre = anchor + np.array([shift_x, shift_y, bottom_z + extent[2] / 2])
    kind, direction = _draw_direction(rng, forced)
    half_index = (np.array(size, dtype=float) - 1.0) / 2.0
    origin = centre - direction @ (np.array(spacing) * half_index)
    grid = Grid(size, spacing, tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))
    return kind, grid, float(bottom_z)


# --------------------------------------------------------------------------------------------------------------
# Shapes: approximate signed distances (mm, negative inside) evaluated on broadcastable coordinate arrays
# --------------------------------------------------------------------------------------------------------------

Distance = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Value = float | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Structure:
    name: str
    distance: Distance
    lo: np.ndarray  # anatomy-frame bounding box (mm)
    hi: np.ndarray
    hu: Value
    suv: Value
    label: int = 0


def _ellipsoid(centre: Sequence[float], radii: Sequence[float], rotation: np.ndarray | None = None):
    """Ellipsoid (optionally rotated; rotation columns = its axes) -> (distance, lo, hi).

    The distance is the first-order estimate (q - 1) / |grad q| with q the normalised radius: exact on the surface
    direction for spheres and within a few per cent near the surface for the mild aspect ratios used here, which
    is all the partial-volume ramp needs.
    """
    c = np.asarray(centre, dtype=float)
    r = np.asarray(radii, dtype=float)
    if rotation is None:
        half = r
    else:
        half = np.sqrt(((rotation * r[None, :]) ** 2).sum(axis=1))
    inv_r2 = (1.0 / r**2).astype(np.float32)
    inv_r4 = inv_r2**2
    r_min, r_max = float(r.min()), float(r.max())

    def distance(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = (x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2]))
        if rotation is not None:
            rot = rotation.astype(np.float32)
            d = tuple(rot[0, a] * d[0] + rot[1, a] * d[1] + rot[2, a] * d[2] for a in range(3))
        f = d[0] * d[0] * inv_r2[0] + d[1] * d[1] * inv_r2[1] + d[2] * d[2] * inv_r2[2]
        h = d[0] * d[0] * inv_r4[0] + d[1] * d[1] * inv_r4[1] + d[2] * d[2] * inv_r4[2]
        q = np.sqrt(f)
        r_eff = np.clip(q / np.sqrt(h + np.float32(1e-20)), r_min, r_max)
        return (q - 1.0) * r_eff

    return distance, c - half, c + half


def _ellipse_xy(x, y, cx: float, cy: float, rx, ry):
    """2-D ellipse distance in the axial plane (radii may be arrays depending on z)."""
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    f = dx * dx / (rx * rx) + dy * dy / (ry * ry)
    h = dx * dx / rx**4 + dy * dy / ry**4
    q = np.sqrt(f)
    r_eff = np.minimum(np.maximum(q / np.sqrt(h + np.float32(1e-20)), np.minimum(rx, ry)), np.maximum(rx, ry))
    return (q - 1.0) * r_eff


def _z_cylinder(cx: float, cy: float, rx: float, ry: float, z_lo: float, z_hi: float):
    def distance(x, y, z):
        return np.maximum(_ellipse_xy(x, y, cx, cy, rx, ry), np.maximum(z_lo - z, z - z_hi))

    return distance, np.array([cx - rx, cy - ry, z_lo]), np.array([cx + rx, cy + ry, z_hi])


def _union(*parts):
    distances = [p[0] for p in parts]

    def distance(x, y, z):
        out = distances[0](x, y, z)
        for d in distances[1:]:
            out = np.minimum(out, d(x, y, z))
        return out

    return distance, np.min([p[1] for p in parts], axis=0), np.max([p[2] for p in parts], axis=0)


def _inset(part, by: float):
    return (lambda x, y, z: part[0](x, y, z) + np.float32(by)), part[1], part[2]


def _shell(outer, inner):
    return (lambda x, y, z: np.maximum(outer[0](x, y, z), -inner[0](x, y, z))), outer[1], outer[2]


def _peaked(centre: np.ndarray, peak: float, rim: float, width: float):
    """Uptake that falls from ``peak`` at ``centre`` towards ``rim`` (Gaussian profile of sd ``width`` mm)."""
    c = centre.astype(np.float32)
    k = np.float32(-0.5 / width**2)

    def value(x, y, z):
        r2 = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2
        return np.float32(rim) + np.float32(peak - rim) * np.exp(k * r2)

    return value


# --------------------------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Anatomy:
    structures: list[_Structure]
    offset: np.ndarray  # physical position (LPS mm) of the anatomy frame's origin
    landmarks: dict[str, Any]
    tumour_volume_ml: float
    suv_max: float
    n_nodes: int
    pet_fwhm_mm: float
    pet_counts_per_suv: float  # at a 4 mm voxel; scaled by voxel volume
    ct_noise_hu: float


def _tumour_components(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """2 to 4 randomly rotated ellipsoids around the origin at unit scale: (centre, radii, rotation)."""
    parts = [(np.zeros(3), rng.uniform(0.75, 1.3, 3), _random_rotation(rng))]
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        centre = direction * rng.uniform(0.4, 0.8)
        parts.append((centre, rng.uniform(0.45, 0.75) * rng.uniform(0.8, 1.25, 3), _random_rotation(rng)))
    return parts


def _union_volume(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int = 32) -> float:
    """Volume of a union of ellipsoids by counting points of an n^3 lattice over its bounding box.

    A lattice is used instead of Monte Carlo sampling so the estimate needs no random draws; at n = 32 it is
    within 0.5 % of a 96^3 count (checked on 20 random tumours) and takes a few milliseconds.
    """
    shapes = [_ellipsoid(c, r, rot) for c, r, rot in parts]
    distance, lo, hi = _union(*shapes)
    step = (hi - lo) / n
    axes = [(lo[a] + step[a] * (np.arange(n) + 0.5)).astype(np.float32) for a in range(3)]
    x, y, z = axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None]
    inside = np.count_nonzero(distance(x, y, z) <= 0)
    return float(inside * np.prod(hi - lo) / n**3)


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    scale = rng.uniform(0.92, 1.08)  # patient size
    offset = np.array([rng.uniform(-20, 20), rng.uniform(-40, 40), rng.uniform(-400.0, 300.0)])  # table position

    def s(*values: float) -> list[float]:
        return [v * scale for v in values]

    fat_hu, muscle_hu = rng.normal(-100, 8), rng.normal(40, 4)
    body_suv = rng.uniform(1.0, 1.8)
    brain_suv = rng.uniform(7.0, 12.0)
    skull_hu, mandible_hu, spine_hu = rng.uniform(1000, 1400), rng.uniform(1100, 1500), rng.uniform(700, 900)
    fat_thickness = rng.uniform(5.0, 12.0)

    head = _ellipsoid(s(0, 5, 115), s(78, 95, 85))
    jaw = _ellipsoid(s(0, -15, 22), s(62, 66, 42))
    neck = _z_cylinder(0.0, 10.0 * scale, 58 * scale, 60 * scale, -2000.0, 60.0 * scale)
    # Shoulders and thorax: a wide elliptic cylinder whose top is rounded by an ellipsoid cap.
    thorax = _union(
        _z_cylinder(0.0, 10.0 * scale, 175 * scale, 105 * scale, -2000.0, -120.0 * scale),
        _ellipsoid(s(0, 10, -120), s(175, 105, 45)),
    )
    # The body is painted component by component (all fat first, then all soft tissue), which equals painting
    # their union but evaluates each component only inside its own, much smaller, bounding box.
    body_parts = [("head", head), ("jaw", jaw), ("neck", neck), ("thorax", thorax)]
    brain_centre, brain_radii = np.array(s(0, 12, 122)), np.array(s(58, 72, 60))
    brain = _ellipsoid(brain_centre, brain_radii)
    skull = _shell(_ellipsoid(brain_centre, brain_radii + 9.0), _ellipsoid(brain_centre, brain_radii + 2.0))
    spine = _z_cylinder(0.0, 38.0 * scale, 12.0 * scale, 12.0 * scale, -2000.0, 50.0 * scale)
    airway = _z_cylinder(0.0, -8.0 * scale, 8.0 * scale, 7.0 * scale, -260.0 * scale, 55.0 * scale)
    mandible_centre_y, mandible_radius, mandible_half = -10.0 * scale, 45.0 * scale, 5.0
    mandible_z = (0.0, 22.0 * scale)

    def mandible_distance(x, y, z):
        rho = np.sqrt(x * x + (y - np.float32(mandible_centre_y)) ** 2)
        ring = np.abs(rho - np.float32(mandible_radius)) - np.float32(mandible_half)
        slab = np.maximum(np.float32(mandible_z[0]) - z, z - np.float32(mandible_z[1]))
        return np.maximum(np.maximum(ring, slab), y - np.float32(mandible_centre_y))

    reach = mandible_radius + mandible_half
    mandible = (
        mandible_distance,
        np.array([-reach, mandible_centre_y - reach, mandible_z[0]]),
        np.array([reach, mandible_centre_y, mandible_z[1]]),
    )
    lungs = _union(_ellipsoid(s(-85, 15, -240), s(60, 75, 140)), _ellipsoid(s(85, 15, -240), s(60, 75, 140)))
    liver = _ellipsoid(s(-70, 5, -440), s(90, 80, 70))

    # Primary tumour in the oropharynx, below the brain: a union of rotated ellipsoids scaled to its volume.
    target_ml = math.exp(rng.uniform(_LOG_VOL_LO, _LOG_VOL_HI))
    parts = _tumour_components(rng)
    unit_volume = _union_volume(parts)
    grow = (target_ml * 1000.0 / unit_volume) ** (1.0 / 3.0)
    side = 1.0 if rng.random() < 0.5 else -1.0
    tumour_centre = np.array([side * rng.uniform(3.0, 15.0), rng.uniform(-28.0, -2.0), rng.uniform(5.0, 35.0)]) * scale
    parts = [(tumour_centre + grow * c, grow * r, rot) for c, r, rot in parts]
    tumour = _union(*(_ellipsoid(c, r, rot) for c, r, rot in parts))
    top_limit = brain_centre[2] - brain_radii[2] - 14.0  # keep clear of the brain and its skull base
    if tumour[2][2] > top_limit:
        shift = np.array([0.0, 0.0, top_limit - tumour[2][2]])
        parts = [(c + shift, r, rot) for c, r, rot in parts]
        tumour_centre = tumour_centre + shift
        tumour = _union(*(_ellipsoid(c, r, rot) for c, r, rot in parts))
    suv_max = rng.uniform(_SUV_LO, _SUV_HI)
    tumour_hu = rng.normal(55.0, 6.0)
    equivalent_radius = (3.0 * target_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)

    # Lymph nodes: lateral neck ellipsoids, mostly on the tumour's side, kept apart from the tumour and each other.
    wanted_nodes = int(rng.choice(len(_NODE_PROBS), p=_NODE_PROBS))
    nodes: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    for _ in range(wanted_nodes):
        for _attempt in range(100):
            volume_ml = math.exp(rng.uniform(math.log(0.5), math.log(10.0)))
            radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
            radii = radius * rng.uniform(0.8, 1.2, 3)
            node_side = side if rng.random() < 0.7 else -side
            centre = np.array(
                [
                    node_side * rng.uniform(25.0, max(26.0, 50.0 - radii.max())) * scale,
                    rng.uniform(-15.0, 22.0) * scale,
                    rng.uniform(-55.0, 20.0) * scale,
                ]
            )
            rotation = _random_rotation(rng)
            node_suv = rng.uniform(3.0, 12.0)
            clear_of_tumour = all(
                np.linalg.norm(centre - c) > radii.max() + r.max() + 5.0 for c, r, _ in parts
            )
            clear_of_nodes = all(np.linalg.norm(centre - c) > radii.max() + r.max() + 10.0 for c, r, _, _ in nodes)
            if clear_of_tumour and clear_of_nodes:
                nodes.append((centre, radii, rotation, node_suv))
                break

    structures = [
        *(_Structure(f"fat:{name}", *part, hu=fat_hu, suv=0.4 * body_suv) for name, part in body_parts),
        *(
            _Structure(f"soft_tissue:{name}", *_inset(part, fat_thickness), hu=muscle_hu, suv=body_suv)
            for name, part in body_parts
        ),
        _Structure("lungs", *lungs, hu=-850.0, suv=0.5),
        _Structure("liver", *liver, hu=55.0, suv=1.6 * body_suv),
        _Structure("brain", *brain, hu=32.0, suv=brain_suv),
        _Structure("skull", *skull, hu=skull_hu, suv=0.6),
        _Structure("spine", *spine, hu=spine_hu, suv=1.6),
        _Structure("mandible", *mandible, hu=mandible_hu, suv=0.6),
        _Structure("airway", *airway, hu=-1000.0, suv=0.0),
    ]
    for centre, radii, rotation, node_suv in nodes:
        shape = _ellipsoid(centre, radii, rotation)
        uptake = _peaked(centre, node_suv, 0.6 * node_suv, max(float(radii.mean()), 2.0))
        structures.append(_Structure("node", *shape, hu=muscle_hu + 5.0, suv=uptake, label=2))
    uptake = _peaked(tumour_centre, suv_max, 0.45 * suv_max, 0.6 * equivalent_radius)
    structures.append(_Structure("tumour", *tumour, hu=tumour_hu, suv=uptake, label=1))

    landmarks = {
        "brain_centre": offset + brain_centre,
        "brain_radii": brain_radii,
        "tumour_centre": offset + tumour_centre,
        "tumour_box": (offset + tumour[1], offset + tumour[2]),
        "node_centres": [offset + c for c, _, _, _ in nodes],
    }
    return _Anatomy(
        structures=structures,
        offset=offset,
        landmarks=landmarks,
        tumour_volume_ml=unit_volume * grow**3 / 1000.0,
        suv_max=float(suv_max),
        n_nodes=len(nodes),
        pet_fwhm_mm=rng.uniform(5.0, 7.5),
        pet_counts_per_suv=rng.uniform(15.0, 40.0),
        ct_noise_hu=rng.uniform(15.0, 30.0),
    )


def _render_slabs(
    grid: Grid, anatomy: _Anatomy, channel: str, label: np.ndarray | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """Paint the structures in order onto ``grid``, slab by slab along z: CT (HU) or true PET activity (SUV).

    Each structure is blended with weight clip(0.5 - distance / voxel_width, 0, 1), a one-voxel partial-volume
    ramp centred on its surface, and only inside its own bounding box. Where ``label`` (a uint8 array of the grid's
    shape) is given, labelled structures write their value into the voxels whose centre lies inside them
    (distance <= 0). Yields (z slice, values); the values buffer is reused, so consume it before the next slab.
    """
    voxel_width = _voxel_width(grid)
    width = np.float32(voxel_width)
    background = np.float32(-1000.0 if channel == "ct" else 0.0)
    size = grid.size_xyz
    slab = max(1, _BLOCK_VOXELS // (size[0] * size[1]))
    buffer = np.empty((min(slab, size[2]), size[1], size[0]), dtype=np.float32)
    boxes = [
        _index_box(grid, s.lo + anatomy.offset - voxel_width, s.hi + anatomy.offset + voxel_width)
        for s in anatomy.structures
    ]
    for z0 in range(0, size[2], slab):
        z1 = min(z0 + slab, size[2])
        values = buffer[: z1 - z0]
        values.fill(background)
        for structure, box in zip(anatomy.structures, boxes):
            if box is None or box[0].stop <= z0 or box[0].start >= z1:
                continue
            block = (slice(max(box[0].start, z0), min(box[0].stop, z1)), box[1], box[2])
            local = (slice(block[0].start - z0, block[0].stop - z0), box[1], box[2])
            x, y, z = _coordinates(grid, block, anatomy.offset)
            distance = structure.distance(x, y, z)
            shape = tuple(s.stop - s.start for s in block)
            alpha = np.broadcast_to(np.clip(np.float32(0.5) - distance / width, 0.0, 1.0), shape)
            value = structure.hu if channel == "ct" else structure.suv
            value = value(x, y, z) if callable(value) else np.float32(value)
            target = values[local]
            target += alpha * (value - target)
            if label is not None and structure.label:
                label[block][np.broadcast_to(distance <= 0, shape)] = structure.label
        yield slice(z0, z1), values


# --------------------------------------------------------------------------------------------------------------
# Clinical data and survival
# --------------------------------------------------------------------------------------------------------------


def _draw_clinical(rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    names = [c[0] for c in CENTRES]
    shares = np.array([c[2] for c in CENTRES])
    centre = names[int(rng.choice(len(names), p=shares / shares.sum()))]
    centre_id = dict((c[0], c[1]) for c in CENTRES)[centre]
    age = int(round(float(np.clip(rng.normal(62.0, 9.5), 30, 90))))
    gender = int(rng.random() < 0.82)
    tobacco = int(rng.random() < _P_TOBACCO)
    alcohol = int(rng.random() < (0.65 if tobacco else 0.30))
    # The uniform that decides HPV status once the anatomy is drawn (hpv_status): drawn here, where version 1 of the
    # generator drew HPV status, so that every later draw, and so every image, is as in version 1.
    hpv_uniform = float(rng.random())
    ps = int(rng.choice(len(_PS_PROBS), p=_PS_PROBS))
    treatment = int(rng.random() < (0.75 if ps < 2 else 0.40))
    m_stage = _M_STAGE_PROBS[int(rng.choice(len(_M_STAGE_PROBS), p=[p for _, p in _M_STAGE_PROBS]))][0]
    return centre, {
        "CenterID": centre_id,
        "Age": age,
        "Gender": gender,
        "Tobacco Consumption": tobacco,
        "Alcohol Consumption": alcohol,
        "Performance Status": ps,
        "Treatment": treatment,
        "M-stage": m_stage,
        "HPV Status": hpv_uniform,  # replaced by the status in make_case
    }


def _covariates(true_clinical: dict[str, Any], volume_ml: float, suv_max: float, n_nodes: int) -> dict[str, float]:
    return {
        "log_tumour_volume_ml": math.log(volume_ml),
        "suv_max": suv_max,
        "n_nodes": float(n_nodes),
        "hpv_negative": float(true_clinical["HPV Status"] == 0),
        "age_years": float(true_clinical["Age"]),
        "performance_status": float(true_clinical["Performance Status"]),
        "m1": float(true_clinical["M-stage"] == "M1"),
        "tobacco": float(true_clinical["Tobacco Consumption"]),
        "chemoradiotherapy": float(true_clinical["Treatment"]),
    }


def hpv_probability(true_clinical: dict[str, Any], volume_ml: float, n_nodes: int) -> float:
    """P(HPV+) of :data:`HPV_MODEL` for a patient's true record and tumour."""
    values = {"tobacco": float(true_clinical["Tobacco Consumption"]), "age_years": float(true_clinical["Age"]),
              "log_tumour_volume_ml": math.log(volume_ml), "n_nodes": float(n_nodes)}
    logit = HPV_MODEL["intercept"] + sum(m["beta"] * (values[k] - m["centre"]) / m["scale"]
                                         for k, m in HPV_MODEL["covariates"].items())
    return 1.0 / (1.0 + math.exp(-logit))


def true_log_hazard(covariates: dict[str, float]) -> float:
    """The generating model's log-hazard (relative to an average patient) for a dict of :data:`TRUE_MODEL` keys."""
    return float(sum(m["beta"] * (covariates[k] - m["centre"]) / m["scale"] for k, m in TRUE_MODEL.items()))


def _draw_survival(rng: np.random.Generator, log_hazard: float) -> tuple[float, int]:
    event_time = WEIBULL_SCALE_DAYS * (rng.exponential() / math.exp(log_hazard)) ** (1.0 / WEIBULL_SHAPE)
    follow_up = rng.uniform(*CENSOR_FOLLOW_UP_YEARS) * 365.25
    dropout = rng.exponential(CENSOR_DROPOUT_MEAN_YEARS * 365.25)
    censor_time = min(follow_up, dropout)
    relapse = int(event_time <= censor_time)
    # Whole days, as in the training table; at least one day so every time is positive.
    return float(max(1.0, round(min(event_time, censor_time)))), relapse


def _mask_missing(rng: np.random.Generator, true_clinical: dict[str, Any]) -> dict[str, Any]:
    recorded = dict(true_clinical)
    for column in CLINICAL_COLUMNS:  # fixed order, one draw per column, so the stream does not depend on values
        u = rng.random()
        if column in MISSING_RATES and u < MISSING_RATES[column]:
            recorded[column] = None
    return recorded


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


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

    def ehr(self, task: int = 2) -> dict[str, Any]:
        """The case's ``ehr.json`` content as the platform sends it for ``task``: the keys of the task's record
        (:attr:`hecktor.tasks.TaskSpec.ehr_keys`; never HPV Status, CenterID for Task 2 only)."""
        keys = get_task(task).ehr_keys
        return {k: v for k, v in self.clinical.items() if k in keys}


@dataclass
class CohortSummary:
    """What :func:`generate_cohort` wrote."""

    out_dir: Path
    cases: int
    seed: int
    size: str
    patient_ids: list[str]
    event_fraction: float
    oracle_c_index: float | None
    seconds: float


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
    else:
        if int(rng_or_seed) < 0 or case_index < 0:
            raise InputError(f"seed and case_index must be non-negative; got {rng_or_seed}, {case_index}")
        rng = np.random.default_rng(case_seed_sequence(int(rng_or_seed), case_index))

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
    )


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def _write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder; pass a folder path to --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir} is not empty; choose a new folder or pass --overwrite")
        # Only the generator's own outputs are removed, never anything else in the folder.
        for name in _OUTPUT_NAMES:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def oracle_c_index(
    relapse: Sequence[int], rfs_days: Sequence[float], log_hazard: Sequence[float]
) -> float | None:
    """Harrell's C of the true log-hazard against observed (RFS, Relapse), via scikit-survival.

    None where it is undefined: fewer than two patients, no relapse, or no comparable pair (tiny cohorts).
    """
    # Imported here: scikit-survival takes ~2 s to import and --help needs none of it.
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    events = np.asarray(relapse, dtype=bool)
    if events.size < 2 or not events.any():
        return None
    times = np.asarray(rfs_days, dtype=float)
    try:
        return float(concordance_index_censored(events, times, np.asarray(log_hazard, dtype=float))[0])
    except NoComparablePairException:
        return None


def oracle_balanced_accuracy(status: Sequence[int], probability: Sequence[float]) -> float | None:
    """Balanced accuracy of the Bayes rule for balanced accuracy, "HPV+ where P(HPV+) >= the population prevalence",
    on patients with known ``status``; None where a class is absent."""
    status = np.asarray(status, dtype=bool)
    if status.all() or not status.any():
        return None
    predicted = np.asarray(probability, dtype=float) >= HPV_PREVALENCE
    return float(0.5 * (predicted[status].mean() + (~predicted[~status]).mean()))


def generate_cohort(
    out_dir: str | Path,
    cases: int,
    seed: int,
    size: str = "small",
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> CohortSummary:
    """Write a synthetic HECKTOR 2025 training folder (see the module docstring for the layout).

    Args:
        out_dir: folder to create or fill; it must be empty unless ``overwrite`` is set.
        cases: number of patients (>= 1).
        seed: cohort seed (>= 0); the same seed gives byte-identical files.
        size: ``"small"`` or ``"realistic"``.
        overwrite: replace an earlier generator output in ``out_dir`` (other files there are left alone).
        progress: show a tqdm progress bar on stderr.
    """
    from tqdm import tqdm

    _check_choice("size", size, SIZES)
    if cases < 1:
        raise InputError(f"cases must be at least 1; got {cases}")
    if seed < 0:
        raise InputError(f"seed must be non-negative; got {seed}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    started = time.perf_counter()
    task1, task2, task3 = out_dir / "Task 1", out_dir / "Task 2", out_dir / TASK3_FOLDER
    for folder in (task1, task2, task3):
        folder.mkdir()

    counters: dict[str, int] = {}
    rows1, rows2, risk_rows, hpv_rows = [], [], [], []
    for index in tqdm(range(cases), desc="synthetic cases", unit="case", disable=not progress):
        case = make_case(seed, size, case_index=index)
        counters[case.centre] = counters.get(case.centre, 0) + 1
        pid = f"{case.centre}-{counters[case.centre]:03d}"
        folder1, folder2, folder3 = task1 / pid, task2 / pid, task3 / pid
        for folder in (folder1, folder2, folder3):
            folder.mkdir()
        # gzip through ITK writes mtime 0, so the files are byte-reproducible.
        sitk.WriteImage(case.ct, str(folder1 / f"{pid}__CT.nii.gz"), True)
        sitk.WriteImage(case.pet, str(folder1 / f"{pid}__PT.nii.gz"), True)
        sitk.WriteImage(case.label, str(folder1 / f"{pid}.nii.gz"), True)
        for name in (f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz"):
            shutil.copyfile(folder1 / name, folder2 / name)
            shutil.copyfile(folder1 / name, folder3 / name)
        row = [pid] + [case.clinical[c] for c in CLINICAL_COLUMNS]
        rows1.append(row)
        rows2.append(row + [case.rfs_days, case.relapse])
        risk_rows.append(
            [pid, case.true_log_hazard, case.features["tumour_volume_ml"], case.features["suv_max"],
             case.features["n_nodes"], case.true_clinical["HPV Status"], case.hpv_probability]
        )
        if case.clinical["HPV Status"] is not None:  # the recorded status: Task 3 trains and scores on these
            hpv_rows.append((case.clinical["HPV Status"], case.hpv_probability))

    header = ["PatientID", *CLINICAL_COLUMNS]
    _write_csv(task1 / TASK1_CSV, header, rows1)
    _write_csv(task2 / TASK2_CSV, header + ["RFS", "Relapse"], rows2)
    _write_csv(task3 / TASK3_CSV, header, rows1)
    _write_csv(
        out_dir / TRUE_RISK_CSV,
        ["PatientID", "true_log_hazard", "tumour_volume_ml", "suv_max", "n_nodes", "true_hpv_status",
         "hpv_probability"],
        risk_rows,
    )
    relapse = [r[-1] for r in rows2]
    c_index = oracle_c_index(relapse, [r[-2] for r in rows2], [r[1] for r in risk_rows])
    event_fraction = float(np.mean(relapse))
    description = {
        "generator": "hecktor.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "cases": cases,
        "centres": {name: centre_id for name, centre_id, _ in CENTRES},
        "true_model": {
            "log_hazard": "sum(beta * (x - centre) / scale)",
            "coefficients": TRUE_MODEL,
            "baseline": {
                "distribution": "Weibull",
                "shape": WEIBULL_SHAPE,
                "scale_days": WEIBULL_SCALE_DAYS,
                "median_days_at_log_hazard_0": WEIBULL_MEDIAN_DAYS,
            },
            "censoring": {
                "follow_up_years_uniform": list(CENSOR_FOLLOW_UP_YEARS),
                "dropout_exponential_mean_years": CENSOR_DROPOUT_MEAN_YEARS,
            },
            "covariates_used": "true values, before missing values were blanked",
        },
        "missing_rates": MISSING_RATES,
        "event_fraction": event_fraction,
        "oracle_c_index": c_index,
        "hpv_model": {"logit": "intercept + sum(beta * (x - centre) / scale)", **HPV_MODEL,
                      "population_prevalence": HPV_PREVALENCE},
        "hpv_recorded": len(hpv_rows),
        "oracle_hpv_balanced_accuracy": oracle_balanced_accuracy([s for s, _ in hpv_rows], [p for _, p in hpv_rows]),
    }
    (out_dir / COHORT_JSON).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return CohortSummary(
        out_dir=out_dir,
        cases=cases,
        seed=seed,
        size=size,
        patient_ids=[r[0] for r in rows1],
        event_fraction=event_fraction,
        oracle_c_index=c_index,
        seconds=time.perf_counter() - started,
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hecktor.synthetic",
        description="Write a synthetic HECKTOR 2025-like training cohort (PET/CT, GTVp/GTVn labels, clinical "
        "table, recurrence-free survival drawn from a known model).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--cases", required=True, type=_positive_int, help="number of patients")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="small",
        help="small: ~56x56x64 CT / 40x40x60 PET (tests, demos); realistic: 512x512x200 CT / 200^3 PET",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate_cohort(args.out, args.cases, args.seed, args.size, overwrite=args.overwrite, progress=True)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    c_index = "undefined" if summary.oracle_c_index is None else f"{summary.oracle_c_index:.3f}"
    print(
        f"Wrote {summary.cases} {summary.size} cases to {summary.out_dir} in {summary.seconds:.1f} s "
        f"({summary.cases / summary.seconds:.1f} cases/s); events {summary.event_fraction:.0%}, "
        f"oracle C-index {c_index}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
