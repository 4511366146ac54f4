"""The preprocessing plan: every number that turns files into network inputs, in one JSON-serialisable object.

A :class:`Plan` is written next to the trained weights when a model is exported and read back by the containers,
so training and inference cannot drift (nnU-Net's "plans" idea). Physical quantities are in ITK order and named
``*_xyz`` (mm); array shapes are in NumPy order and named ``*_zyx``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hecktor.errors import InputError

_INTERPOLATIONS = ("linear", "nearest", "bspline")


@dataclass(frozen=True)
class Plan:
    """Preprocessing parameters shared by training and both containers.

    Args:
        spacing_mm_xyz: voxel spacing of the Task 1 network input (mm).
        ct_window_hu: CT values are clipped to this window, then scaled linearly to [0, 1].
        ct_pad_hu: CT value used outside the CT's field of view.
        pet_pad_suv: PET value used outside the PET's field of view.
        image_interpolation: interpolation of CT and PET ("linear", "nearest" or "bspline").
        label_interpolation: interpolation of label maps (nearest neighbour keeps labels intact).
        localization_spacing_mm: isotropic spacing of the coarse PET copy used to find the brain.
        brain_search_mm: only the top this-many mm of the scan are searched for the brain.
        brain_suv_threshold: SUV above which a voxel counts as high uptake.
        brain_min_volume_ml: smallest high-uptake component accepted as the brain.
        fallback_brain_depth_mm: when no brain is found, the anchor is this far below the top of the field of view.
        task1_region_mm_xyz: size of the Task 1 inference region around the head-and-neck anchor.
        task1_region_offset_mm_xyz: region centre minus anchor (brain centre), in LPS mm (+z superior).
        patch_size_zyx: Task 1 training patch / sliding-window size in voxels.
        training_margin_mm: the training region is widened to hold the tumour mask plus this margin.
        task2_box_mm_xyz: size of the Task 2 box around the anchor.
        task2_box_offset_mm_xyz: box centre minus anchor, in LPS mm.
        task2_input_shape_zyx: the Task 2 box is resampled to this many voxels.
    """

    spacing_mm_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ct_window_hu: tuple[float, float] = (-1000.0, 1000.0)
    ct_pad_hu: float = -1000.0
    pet_pad_suv: float = 0.0
    image_interpolation: str = "linear"
    label_interpolation: str = "nearest"
    localization_spacing_mm: float = 4.0
    brain_search_mm: float = 250.0
    brain_suv_threshold: float = 3.0
    brain_min_volume_ml: float = 100.0
    fallback_brain_depth_mm: float = 70.0
    task1_region_mm_xyz: tuple[float, float, float] = (200.0, 200.0, 256.0)
    task1_region_offset_mm_xyz: tuple[float, float, float] = (0.0, 0.0, -90.0)
    patch_size_zyx: tuple[int, int, int] = (128, 128, 128)
    training_margin_mm: float = 10.0
    task2_box_mm_xyz: tuple[float, float, float] = (200.0, 200.0, 310.0)
    task2_box_offset_mm_xyz: tuple[float, float, float] = (0.0, 0.0, -65.0)
    task2_input_shape_zyx: tuple[int, int, int] = (96, 96, 96)

    def __post_init__(self) -> None:
        for name in ("image_interpolation", "label_interpolation"):
            if getattr(self, name) not in _INTERPOLATIONS:
                raise InputError(f"Plan.{name} must be one of {_INTERPOLATIONS}, got {getattr(self, name)!r}")
        low, high = self.ct_window_hu
        if not low < high:
            raise InputError(f"Plan.ct_window_hu must be (low, high) with low < high, got {self.ct_window_hu}")
        for name in ("spacing_mm_xyz", "task1_region_mm_xyz", "task2_box_mm_xyz"):
            if len(getattr(self, name)) != 3 or min(getattr(self, name)) <= 0:
                raise InputError(f"Plan.{name} must hold three positive numbers, got {getattr(self, name)}")
        for name in ("patch_size_zyx", "task2_input_shape_zyx"):
            if len(getattr(self, name)) != 3 or min(getattr(self, name)) < 1:
                raise InputError(f"Plan.{name} must hold three positive integers, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"unknown Plan field(s) {unknown}; this plan was written by another version")
        values = {}
        for name, value in data.items():
            # JSON turns tuples into lists; restore them so that equality and hashing hold after a round trip.
            values[name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"plan is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise InputError("plan JSON must hold an object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"plan file not found: {path}")
        return cls.from_json(path.read_text())

    def replace(self, **changes: Any) -> "Plan":
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Short SHA-256 of the canonical JSON: the key of preprocessing caches."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
