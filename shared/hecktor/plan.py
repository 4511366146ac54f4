"""Preprocessing plans: every number that turns files into network inputs, one JSON-serialisable object per task.

A plan is written next to the trained weights when a model is exported and read back by the container, so training
and inference cannot drift (nnU-Net's "plans" idea). Physical quantities are in ITK order and named ``*_xyz`` (mm);
array shapes are in NumPy order and named ``*_zyx``.

Two kinds of plan share the intensity and localisation settings:

* :class:`RegionPlan` (segmentation, Task 1): a region around the head and neck resampled to ``spacing_mm_xyz``
  (1 mm) and read by sliding windows of ``patch_size_zyx``;
* :class:`BoxPlan` (image-level tasks, Tasks 2 and 3): a fixed box around the head and neck resampled to
  ``input_shape_zyx`` voxels.

Stored plans carry their ``kind`` and ``schema_version``. The digest of a plan is the SHA-256 of its canonical JSON
*as stored* (:func:`plan_digest`): a bundle compares the stored plan with the digest recorded at export, never with a
plan re-derived from today's defaults, so adding a field with a default does not invalidate existing bundles, and a
task's caches are keyed by that task's settings only.

Schema versions: 1 was the single ``Plan`` of hecktor 0.1 that held both tasks' fields (``task1_region_mm_xyz``,
``task2_box_mm_xyz``, ...); :meth:`from_dict` still reads it, keeping the fields that the plan's kind uses.

Fields added later, and models already exported: a field that changes preprocessing numbers has two values. Its
dataclass default is the behaviour for *new* plans; its entry in the class's :attr:`~_PlanBase.ABSENT_VALUES` is the
behaviour that existed before the field did, and :meth:`~_PlanBase.from_dict` gives it to a stored plan that lacks the
field, so that a bundle exported earlier keeps predicting exactly as it was trained
(``tests/library/test_bundle_compat.py``).

==============================  =======================  ==============================================
field                           new plans (default)      stored plans without it (``ABSENT_VALUES``)
==============================  =======================  ==============================================
``brain_relative_threshold``    ``0.5``                  ``None`` (absolute SUV threshold)
``pet_outlier_ceiling``         ``10.0``                 ``None`` (plain z-score)
==============================  =======================  ==============================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hecktor.errors import InputError

SCHEMA_VERSION = 2
"""Version of the stored plan format (see the module docstring for version 1)."""

_INTERPOLATIONS = ("linear", "nearest", "bspline")
_META_KEYS = ("kind", "schema_version")

PlanT = TypeVar("PlanT", bound="_PlanBase")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def canonical_json(data: Mapping[str, Any]) -> str:
    """The canonical text of a plan dict (sorted keys, two-space indent): what is hashed and what is stored."""
    return json.dumps(data, indent=2, sort_keys=True)


def plan_digest(data: Mapping[str, Any]) -> str:
    """Short SHA-256 of a plan dict as stored (JSON lists, not tuples): the key of caches and bundle manifests."""
    return hashlib.sha256(canonical_json(json.loads(json.dumps(data))).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _PlanBase:
    """Intensity and localisation settings that every task's plan holds.

    Args:
        ct_window_hu: CT values are clipped to this window, then scaled linearly to [0, 1].
        ct_pad_hu: CT value used outside the CT's field of view.
        pet_pad_suv: PET value used outside the PET's field of view.
        image_interpolation: interpolation of CT and PET ("linear", "nearest" or "bspline").
        label_interpolation: interpolation of label maps (nearest neighbour keeps labels intact).
        localization_spacing_mm: isotropic spacing of the coarse PET copy used to find the brain.
        brain_search_mm: only the top this-many mm of the scan are searched for the brain.
        brain_suv_threshold: SUV above which a voxel counts as high uptake (when ``brain_relative_threshold`` is
            ``None``).
        brain_min_volume_ml: smallest high-uptake component accepted as the brain.
        fallback_brain_depth_mm: when no brain is found, the anchor is this far below the top of the field of view.
        brain_relative_threshold: a voxel counts as high uptake above this fraction of the 99th percentile of the
            body's uptake in the searched region (the brain's level in a head-and-neck scan), so that localisation
            does not depend on the PET's unit (SUV, Bq/ml, kBq/ml); ``None``: above ``brain_suv_threshold`` SUV
            (plans stored before this field existed). On the synthetic cohort both find the same brain centre
            within 0.5 mm, and neither takes a sarcoma for a brain.
        pet_outlier_ceiling: PET voxels of the network region above this multiple of the region's 99th percentile of
            positive uptake (or below minus it) are clipped to it and left out of the z-score's mean and standard
            deviation, so that a few absurd voxels (1e20, float32's maximum) cannot collapse the normalisation. Real
            uptake never comes near (tumours reach 3-4x the 99th percentile of a head-and-neck region), and a region
            without such voxels is normalised exactly as by a plain z-score. ``None``: plain z-score (plans stored
            before this field existed).
    """

    KIND: ClassVar[str] = ""
    # Names of schema-1 fields that became this kind's fields, and schema-1 fields that this kind drops.
    _LEGACY_RENAMES: ClassVar[dict[str, str]] = {}
    _LEGACY_IGNORED: ClassVar[tuple[str, ...]] = ()
    ABSENT_VALUES: ClassVar[dict[str, Any]] = {"brain_relative_threshold": None, "pet_outlier_ceiling": None}
    """Value of each field that a stored plan lacks: the behaviour before the field existed (the dataclass default is
    the behaviour of new plans). Fields not listed take their dataclass default."""

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
    brain_relative_threshold: float | None = 0.5
    pet_outlier_ceiling: float | None = 10.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("image_interpolation", "label_interpolation"):
            if getattr(self, field) not in _INTERPOLATIONS:
                raise InputError(f"{name}.{field} must be one of {_INTERPOLATIONS}, got {getattr(self, field)!r}")
        low, high = self.ct_window_hu
        if not low < high:
            raise InputError(f"{name}.ct_window_hu must be (low, high) with low < high, got {self.ct_window_hu}")
        fraction = self.brain_relative_threshold
        if fraction is not None and not (_is_number(fraction) and 0.0 < fraction < 1.0):
            raise InputError(f"{name}.brain_relative_threshold must be a number in (0, 1) or null, got {fraction!r}")
        ceiling = self.pet_outlier_ceiling
        if ceiling is not None and not (_is_number(ceiling) and ceiling > 1.0):
            raise InputError(f"{name}.pet_outlier_ceiling must be a number above 1 or null, got {ceiling!r}")

    def _check_positive(self, millimetres: tuple[str, ...], voxels: tuple[str, ...]) -> None:
        name = type(self).__name__
        for field in millimetres:
            value = getattr(self, field)
            if len(value) != 3 or min(value) <= 0:
                raise InputError(f"{name}.{field} must hold three positive numbers, got {value}")
        for field in voxels:
            value = getattr(self, field)
            if len(value) != 3 or min(value) < 1:
                raise InputError(f"{name}.{field} must hold three positive integers, got {value}")

    # ------------------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The plan as stored: ``kind``, ``schema_version`` and every field (tuples as lists)."""
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        return {"kind": self.KIND, "schema_version": SCHEMA_VERSION, **values}

    @classmethod
    def from_dict(cls: type[PlanT], data: Mapping[str, Any]) -> PlanT:
        """A plan from its stored dict. A missing field takes its :attr:`ABSENT_VALUES` entry (the behaviour before
        the field existed) or else its dataclass default; unknown fields, another kind or a newer schema are an
        :class:`InputError`. Schema-1 dicts (no ``kind``) are read as described in the module docstring."""
        if not isinstance(data, Mapping):
            raise InputError(f"a {cls.__name__} must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("schema_version", 1)
        kind = data.pop("kind", None)
        if not isinstance(version, int) or version < 1 or version > SCHEMA_VERSION:
            raise InputError(f"plan schema_version {version!r} is not readable by this version of hecktor "
                             f"(it reads 1..{SCHEMA_VERSION}); update hecktor")
        if version == 1:
            if kind is not None:
                raise InputError("a schema-1 plan has no 'kind'; this plan is malformed")
            data = {cls._LEGACY_RENAMES.get(k, k): v for k, v in data.items() if k not in cls._LEGACY_IGNORED}
        elif kind != cls.KIND:
            raise InputError(f"this is a {kind!r} plan, but a {cls.KIND!r} plan ({cls.__name__}) was expected")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown {cls.__name__} field(s) {unknown}; this plan was written by another version")
        for name, value in cls.ABSENT_VALUES.items():
            data.setdefault(name, value)
        # JSON turns tuples into lists; restore them so that equality and hashing hold after a round trip.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls: type[PlanT], text: str) -> PlanT:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"plan is not valid JSON: {error}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls: type[PlanT], path: str | Path) -> PlanT:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"plan file not found: {path}")
        try:
            return cls.from_json(path.read_text())
        except InputError as error:
            raise InputError(f"{path}: {error}") from None

    def replace(self: PlanT, **changes: Any) -> PlanT:
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """:func:`plan_digest` of :meth:`to_dict`: the key of this task's preprocessing caches."""
        return plan_digest(self.to_dict())


@dataclass(frozen=True)
class RegionPlan(_PlanBase):
    """Segmentation (Task 1): a head-and-neck region at a fixed spacing, read by sliding windows.

    Args (beyond the shared intensity and localisation settings):
        spacing_mm_xyz: voxel spacing of the network input (mm).
        region_mm_xyz: size of the inference region around the head-and-neck anchor.
        region_offset_mm_xyz: region centre minus anchor (brain centre), in LPS mm (+z superior).
        patch_size_zyx: training patch and sliding-window size in voxels.
        training_margin_mm: the training region is widened to hold the tumour mask plus this margin.
    """

    KIND: ClassVar[str] = "region"
    _LEGACY_RENAMES: ClassVar[dict[str, str]] = {
        "task1_region_mm_xyz": "region_mm_xyz", "task1_region_offset_mm_xyz": "region_offset_mm_xyz"}
    _LEGACY_IGNORED: ClassVar[tuple[str, ...]] = (
        "task2_box_mm_xyz", "task2_box_offset_mm_xyz", "task2_input_shape_zyx")

    spacing_mm_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    region_mm_xyz: tuple[float, float, float] = (200.0, 200.0, 256.0)
    region_offset_mm_xyz: tuple[float, float, float] = (0.0, 0.0, -90.0)
    patch_size_zyx: tuple[int, int, int] = (128, 128, 128)
    training_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive(("spacing_mm_xyz", "region_mm_xyz"), ("patch_size_zyx",))


@dataclass(frozen=True)
class BoxPlan(_PlanBase):
    """Image-level tasks (Tasks 2 and 3): a fixed box around the head and neck, resampled to a fixed shape.

    Args (beyond the shared intensity and localisation settings):
        box_mm_xyz: size of the box around the anchor.
        box_offset_mm_xyz: box centre minus anchor, in LPS mm.
        input_shape_zyx: the box is resampled to this many voxels (one trilinear step).
    """

    KIND: ClassVar[str] = "box"
    _LEGACY_RENAMES: ClassVar[dict[str, str]] = {
        "task2_box_mm_xyz": "box_mm_xyz", "task2_box_offset_mm_xyz": "box_offset_mm_xyz",
        "task2_input_shape_zyx": "input_shape_zyx"}
    _LEGACY_IGNORED: ClassVar[tuple[str, ...]] = (
        "spacing_mm_xyz", "task1_region_mm_xyz", "task1_region_offset_mm_xyz", "patch_size_zyx", "training_margin_mm")

    box_mm_xyz: tuple[float, float, float] = (200.0, 200.0, 310.0)
    box_offset_mm_xyz: tuple[float, float, float] = (0.0, 0.0, -65.0)
    input_shape_zyx: tuple[int, int, int] = (96, 96, 96)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive(("box_mm_xyz",), ("input_shape_zyx",))


PLAN_KINDS: dict[str, type[_PlanBase]] = {cls.KIND: cls for cls in (RegionPlan, BoxPlan)}
"""Plan classes by their stored ``kind``."""

Plan = RegionPlan | BoxPlan
"""Either kind of plan (for type hints)."""
