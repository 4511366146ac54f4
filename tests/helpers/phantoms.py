"""Tiny analytic images in physical space: a blank image of any geometry, spheres painted on it, and a
head-and-neck-like CT/PET pair with its label."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk


def rotation_direction(axis: str, degrees: float) -> tuple[float, ...]:
    """Row-major 3×3 direction of a rotation about one axis."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    matrices = {
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    return tuple(float(v) for v in np.asarray(matrices[axis]).ravel())


DIRECTIONS = {
    "identity": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
    "flipped_xy": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0),
    "flipped_z": (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0),
    "oblique": tuple(np.asarray(rotation_direction("z", 12)).reshape(3, 3).dot(
        np.asarray(rotation_direction("x", 7)).reshape(3, 3)).ravel()),
}


def blank_image(size_xyz, spacing_xyz, center_xyz, direction=DIRECTIONS["identity"], pixel=sitk.sitkFloat32):
    """An image of the given size/spacing/direction whose field of view is centred on ``center_xyz``."""
    image = sitk.Image([int(s) for s in size_xyz], pixel)
    image.SetSpacing([float(s) for s in spacing_xyz])
    image.SetDirection([float(d) for d in direction])
    half = (np.asarray(size_xyz, float) - 1) / 2 * np.asarray(spacing_xyz, float)
    origin = np.asarray(center_xyz, float) - np.asarray(direction, float).reshape(3, 3) @ half
    image.SetOrigin([float(o) for o in origin])
    return image


def physical_coordinates(image: sitk.Image) -> np.ndarray:
    """Physical (x, y, z) of every voxel centre, shape (z, y, x, 3)."""
    size = image.GetSize()
    kk, jj, ii = np.meshgrid(*[np.arange(n, dtype=float) for n in size[::-1]], indexing="ij")
    index = np.stack([ii, jj, kk], axis=-1)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def paint(image: sitk.Image, shapes, background: float = 0.0, pixel=None) -> sitk.Image:
    """Fill ``image``'s grid with spheres: ``shapes`` is a list of (center_xyz, radius_mm, value)."""
    points = physical_coordinates(image)
    array = np.full(points.shape[:3], background, dtype=np.float32)
    for center, radius, value in shapes:
        inside = np.sum((points - np.asarray(center, float)) ** 2, axis=-1) <= radius**2
        array[inside] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return sitk.Cast(out, pixel) if pixel is not None else out


def head_phantom(direction_ct="identity", direction_pet="identity", brain=True):
    """A tiny head-and-neck-like CT/PET pair: body, hot brain at the top, hot tumour below it. Returns
    (ct, pet, label, truth) where truth holds the brain and tumour centres."""
    brain_c, tumour_c = (0.0, 10.0, 120.0), (5.0, -5.0, 30.0)
    ct = blank_image((48, 48, 40), (5.0, 5.0, 6.0), (0, 0, 80), DIRECTIONS[direction_ct])
    ct = paint(ct, [((0, 0, 80), 400, 40.0), (brain_c, 60, 30.0), (tumour_c, 15, 60.0)], background=-1000.0)
    pet = blank_image((40, 40, 36), (6.0, 6.0, 7.0), (3, -4, 85), DIRECTIONS[direction_pet])
    hot = [((0, 0, 80), 400, 1.0)] + ([(brain_c, 60, 9.0)] if brain else []) + [(tumour_c, 15, 12.0)]
    pet = paint(pet, hot, background=0.0)
    label = paint(ct, [(tumour_c, 15, 1)], background=0.0, pixel=sitk.sitkUInt8)
    return ct, pet, label, {"brain": np.asarray(brain_c), "tumour": np.asarray(tumour_c)}
