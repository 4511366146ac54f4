"""The shapes the phantom is built of: approximate signed distances (mm, negative inside) evaluated on broadcastable
coordinate arrays, each with its anatomy-frame bounding box, and the uptake profiles painted inside them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

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

