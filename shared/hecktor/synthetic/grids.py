"""The images' grids: the size recipes, the random placement and direction of each grid, and the index arithmetic
that the phantom renderer paints with.

The grids are ``hecktor.geometry.Grid``s; what only the phantom renderer needs lives in the helpers below. They
keep their own arithmetic (index matrix direction @ diag(spacing), its inverse) rather than Grid's
physical_to_index: a different rounding could move a bounding-box edge by one voxel and change the files that a
seed must reproduce byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from hecktor.geometry import Grid

SIZES = ("small", "realistic")
ORIENTATIONS = ("identity", "flip", "oblique")


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
