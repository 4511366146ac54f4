"""Grids in physical space and resampling onto them.

A :class:`Grid` is the geometry of an image without its voxels: size, spacing, origin and direction, in ITK order
(x, y, z). Preprocessing resamples the input CT and PET *directly* onto the grid of the region the network needs
(crop first, never the whole field of view), and a network output goes back onto the CT's grid by one resampling.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Grid:
    """The geometry of a 3-D image in ITK order: ``size_xyz`` voxels, ``spacing_xyz`` mm, ``origin_xyz`` mm (the
    centre of voxel (0, 0, 0)) and a row-major 3×3 ``direction`` whose columns are the axes' unit vectors."""

    size_xyz: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...] = IDENTITY_DIRECTION

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Grid":
        return cls(
            size_xyz=tuple(int(s) for s in image.GetSize()),
            spacing_xyz=tuple(float(s) for s in image.GetSpacing()),
            origin_xyz=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @classmethod
    def centered(
        cls,
        center_xyz: Sequence[float],
        extent_mm_xyz: Sequence[float],
        *,
        spacing_xyz: Sequence[float] | None = None,
        size_xyz: Sequence[int] | None = None,
    ) -> "Grid":
        """An axis-aligned grid (identity direction) centred on a physical point.

        Give either ``spacing_xyz`` (the size is the extent divided by the spacing, rounded) or ``size_xyz`` (the
        spacing is the extent divided by the size: "resize the box to this many voxels", sampling at voxel centres
        exactly like a trilinear resize with ``align_corners=False``).
        """
        extent = np.asarray(extent_mm_xyz, dtype=float)
        if (spacing_xyz is None) == (size_xyz is None):
            raise ValueError("give exactly one of spacing_xyz and size_xyz")
        if size_xyz is None:
            spacing = np.asarray(spacing_xyz, dtype=float)
            size = np.maximum(np.round(extent / spacing), 1).astype(int)
        else:
            size = np.asarray(size_xyz, dtype=int)
            spacing = extent / size
        origin = np.asarray(center_xyz, dtype=float) - spacing * (size - 1) / 2.0
        return cls(tuple(int(s) for s in size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin))

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.size_xyz[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self, index_xyz: np.ndarray) -> np.ndarray:
        """Physical points of (continuous) indices; ``index_xyz`` has shape (..., 3) in (x, y, z) order."""
        index = np.asarray(index_xyz, dtype=float)
        return np.asarray(self.origin_xyz) + (index * np.asarray(self.spacing_xyz)) @ self.direction_matrix.T

    def physical_to_index(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous indices of physical points; the inverse of :meth:`index_to_physical`."""
        points = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin_xyz)
        return (points @ np.linalg.inv(self.direction_matrix).T) / np.asarray(self.spacing_xyz)

    def corners(self) -> np.ndarray:
        """The 8 physical corners of the field of view (voxel edges, not centres), shape (8, 3)."""
        size = np.asarray(self.size_xyz, dtype=float)
        corner_indices = np.array(list(itertools.product(*[(-0.5, s - 0.5) for s in size])))
        return self.index_to_physical(corner_indices)

    def physical_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned physical bounding box (low corner, high corner) of the field of view."""
        corners = self.corners()
        return corners.min(axis=0), corners.max(axis=0)

    def center(self) -> np.ndarray:
        return self.index_to_physical((np.asarray(self.size_xyz, dtype=float) - 1) / 2.0)

    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        """An image with this geometry, for ``sitk.Resample``. ITK allocates lazily-cheap uint8 by default."""
        image = sitk.Image([int(s) for s in self.size_xyz], pixel_type)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Stamp this geometry onto ``image`` (whose size must match) and return it."""
        if tuple(image.GetSize()) != tuple(self.size_xyz):
            raise ValueError(f"image size {image.GetSize()} does not match grid size {self.size_xyz}")
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)
        return image

    def same_as(self, other: "Grid", tolerance: float = 1e-4) -> bool:
        """Equal size, and spacing/origin/direction within ``tolerance`` (mm, or unitless for direction)."""
        return (
            self.size_xyz == other.size_xyz
            and np.allclose(self.spacing_xyz, other.spacing_xyz, atol=tolerance)
            and np.allclose(self.origin_xyz, other.origin_xyz, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )

    def to_dict(self) -> dict:
        return {
            "size_xyz": list(self.size_xyz),
            "spacing_xyz": list(self.spacing_xyz),
            "origin_xyz": list(self.origin_xyz),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Grid":
        return cls(
            tuple(int(v) for v in data["size_xyz"]),
            tuple(float(v) for v in data["spacing_xyz"]),
            tuple(float(v) for v in data["origin_xyz"]),
            tuple(float(v) for v in data["direction"]),
        )


def overlap_volume_ml(a: Grid, b: Grid) -> float:
    """Volume (ml) of the intersection of two grids' axis-aligned physical bounding boxes."""
    low_a, high_a = a.physical_bounds()
    low_b, high_b = b.physical_bounds()
    edges = np.clip(np.minimum(high_a, high_b) - np.maximum(low_a, low_b), 0, None)
    return float(np.prod(edges) / 1000.0)


def resample_to_grid(
    image: sitk.Image,
    grid: Grid,
    interpolation: str = "linear",
    default_value: float = 0.0,
    pixel_type: int = sitk.sitkFloat32,
) -> sitk.Image:
    """Resample ``image`` onto ``grid`` in physical space (identity transform); outside its field of view the result
    is ``default_value``. Works for any direction (flipped, oblique) of either side."""
    return sitk.Resample(
        image,
        grid.reference_image(),
        sitk.Transform(),
        _INTERPOLATORS[interpolation],
        float(default_value),
        pixel_type,
    )


def subgrid_covering(target: Grid, region: Grid) -> tuple[Grid, tuple[slice, slice, slice]] | None:
    """The part of ``target`` (an index box) that covers the physical field of view of ``region``.

    Returns that sub-grid and the (z, y, x) slices that place it in an array of ``target``'s shape, or ``None`` when
    the two do not overlap. Used to bring a network output back onto a large CT grid without resampling the whole CT.
    """
    indices = target.physical_to_index(region.corners())
    low = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(indices.max(axis=0)).astype(int) + 1, np.asarray(target.size_xyz))
    if np.any(high <= low):
        return None
    origin = target.index_to_physical(low.astype(float))
    sub = Grid(tuple(int(v) for v in high - low), target.spacing_xyz, tuple(float(v) for v in origin), target.direction)
    slices_zyx = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))
    return sub, slices_zyx
