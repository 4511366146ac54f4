"""Connected-component postprocessing of Task 1 label maps, chosen on out-of-fold predictions as nnU-Net chooses it.

Two steps, one per label, each applied to the final label map on the CT's grid (after the argmax), in physical units:

* **GTVp: keep the largest component.** Every 26-connected GTVp component but the largest (in voxels) becomes
  background. A head-and-neck primary tumour is one lesion; a stray GTVp speck elsewhere lowers that case's Dice.
* **GTVn: remove components below V ml.** Every 26-connected GTVn component smaller than ``V`` ml (voxel count ×
  voxel volume) becomes background. A speck is a false-positive lesion for the detection F1 (F1agg).

Components are 26-connected, as the challenge's lesions (:mod:`hecktor.metrics`); removed voxels become background,
as in nnU-Net.

**The choice** (:func:`choose_postprocessing`, nnU-Net's ``determine_postprocessing`` per label): on out-of-fold
predictions and their labels, each step is scored with that label's challenge metric and kept only if it improves it
strictly over the raw predictions:

* GTVp: the mean per-case Dice (the GTVp leaderboard score);
* GTVn: the mean of DSCagg and F1agg, ``(DSCagg + F1agg) / 2``. The leaderboard ranks GTVn by both, with equal
  standing, so a threshold that trades a little aggregated Dice (the removed voxels of true nodes) for fewer false
  lesions is kept only when the detection gain is larger. Every candidate ``V`` of ``candidates_ml`` is tried; the
  best-scoring one is kept if it beats the raw predictions (ties go to the smaller ``V``).

The decision is a :class:`Postprocessing` (stored in a bundle's ``model.json`` under ``postprocessing``), which
:class:`hecktor.segment.Segmenter` applies to every mask it predicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from hecktor.errors import BundleError
from hecktor.labels import GTVN, GTVP
from hecktor.metrics import aggregated_detection_f1, aggregated_dice, dice

__all__ = [
    "GTVN_MIN_VOLUME_CANDIDATES_ML",
    "Postprocessing",
    "choose_postprocessing",
    "keep_largest_component",
    "remove_small_components",
]

GTVN_MIN_VOLUME_CANDIDATES_ML: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
"""Thresholds tried for GTVn: from about two 4 mm voxels (0.064 ml each) to a node of 12 mm diameter."""

def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel (components never leave it), or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _components(mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """(box, component labels inside the box, component sizes in voxels with index 0 unused), or None if empty."""
    box = _bounding_box(mask)
    if box is None:
        return None
    # Full connectivity (26 neighbours in 3-D), as the challenge's lesion count.
    labelled, count = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    return box, labelled, np.bincount(labelled.ravel(), minlength=count + 1)


def keep_largest_component(labels: np.ndarray, value: int) -> np.ndarray:
    """``labels`` with every component of ``value`` but the largest set to background (a new array).

    Args:
        labels: a label map (any integer dtype, any number of dimensions).
        value: the label whose components are filtered.
    """
    out = np.array(labels, copy=True)
    found = _components(out == value)
    if found is None:
        return out
    box, labelled, sizes = found
    if sizes.size <= 2:  # one component
        return out
    largest = int(np.argmax(sizes[1:])) + 1
    region = out[box]
    region[(labelled > 0) & (labelled != largest)] = 0
    return out


def remove_small_components(labels: np.ndarray, value: int, min_volume_ml: float,
                            spacing: Sequence[float]) -> np.ndarray:
    """``labels`` with every component of ``value`` smaller than ``min_volume_ml`` set to background (a new array).

    Args:
        labels: a label map.
        value: the label whose components are filtered.
        min_volume_ml: smallest volume kept (a component of exactly this volume stays).
        spacing: voxel spacing in mm, one number per axis (any order: only the product counts).
    """
    out = np.array(labels, copy=True)
    if min_volume_ml <= 0:
        return out
    found = _components(out == value)
    if found is None:
        return out
    box, labelled, sizes = found
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    small = np.flatnonzero(sizes * voxel_ml < min_volume_ml)
    small = small[small > 0]
    if small.size:
        region = out[box]
        region[np.isin(labelled, small)] = 0
    return out


@dataclass(frozen=True)
class Postprocessing:
    """The postprocessing steps of a Task 1 model (see the module docstring); the defaults do nothing.

    Attributes:
        gtvp_largest_component: keep only the largest GTVp component.
        gtvn_min_volume_ml: remove GTVn components below this volume (0: keep all).
    """

    gtvp_largest_component: bool = False
    gtvn_min_volume_ml: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.gtvp_largest_component, bool):
            raise ValueError(f"gtvp_largest_component must be true or false, got {self.gtvp_largest_component!r}")
        volume = float(self.gtvn_min_volume_ml)
        if not math.isfinite(volume) or volume < 0:
            raise ValueError(f"gtvn_min_volume_ml must be a number >= 0, got {self.gtvn_min_volume_ml!r}")
        object.__setattr__(self, "gtvn_min_volume_ml", volume)

    @property
    def is_identity(self) -> bool:
        return not self.gtvp_largest_component and self.gtvn_min_volume_ml == 0

    def apply_array(self, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """The steps on a label array (a new array); ``spacing`` in mm per axis of the array."""
        out = np.asarray(labels)
        if self.gtvp_largest_component:
            out = keep_largest_component(out, GTVP)
        if self.gtvn_min_volume_ml > 0:
            out = remove_small_components(out, GTVN, self.gtvn_min_volume_ml, spacing)
        return out

    def apply(self, mask: sitk.Image) -> sitk.Image:
        """The steps on a label image; the result keeps its grid and pixel type."""
        if self.is_identity:
            return mask
        result = sitk.GetImageFromArray(self.apply_array(sitk.GetArrayFromImage(mask), mask.GetSpacing()))
        result.CopyInformation(mask)
        return result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "postprocessing") -> "Postprocessing":
        """Inverse of :meth:`to_dict`; ``None`` is no postprocessing. Unknown keys or bad values are a
        :class:`~hecktor.errors.BundleError` naming ``source``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise BundleError(f"{source}: postprocessing must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"{source}: unknown postprocessing setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise BundleError(f"{source}: {error}") from None


# ------------------------------------------------------------------------------------------------------- choice


@dataclass
class _Case:
    prediction: np.ndarray  # cropped to everything labelled in either mask
    truth: np.ndarray
    spacing: tuple[float, ...]


def _cropped_case(prediction: sitk.Image, truth: sitk.Image, case_id: str) -> _Case:
    from hecktor.errors import InputError

    if prediction.GetSize() != truth.GetSize() or not np.allclose(prediction.GetSpacing(), truth.GetSpacing(),
                                                                   atol=1e-4):
        raise InputError(f"case {case_id}: the prediction is not on its label's grid (size {prediction.GetSize()} "
                         f"vs {truth.GetSize()}); predict on the CT grid")
    pred, gt = sitk.GetArrayFromImage(prediction), sitk.GetArrayFromImage(truth)
    box = _bounding_box((pred != 0) | (gt != 0))
    if box is not None:  # components and scores never leave the box of everything labelled
        pred, gt = pred[box], gt[box]
    return _Case(np.ascontiguousarray(pred), np.ascontiguousarray(gt), tuple(prediction.GetSpacing()[::-1]))


def _gtvp_score(cases: Sequence[_Case], step: Postprocessing) -> float:
    scores = [dice(step.apply_array(c.prediction, c.spacing), c.truth, GTVP) for c in cases]
    defined = [s for s in scores if not math.isnan(s)]
    return float(np.mean(defined)) if defined else float("nan")


def _gtvn_scores(cases: Sequence[_Case], step: Postprocessing) -> dict[str, float]:
    predictions = [step.apply_array(c.prediction, c.spacing) for c in cases]
    pairs = list(zip(predictions, (c.truth for c in cases)))
    dsc = aggregated_dice(pairs, GTVN, spacings=[c.spacing for c in cases])
    f1 = aggregated_detection_f1(pairs, GTVN)["f1"]
    return {"dsc_agg": dsc, "f1_agg": f1, "score": (dsc + f1) / 2.0}


def _better(candidate: float, baseline: float) -> bool:
    return not math.isnan(candidate) and (math.isnan(baseline) or candidate > baseline + 1e-12)


def choose_postprocessing(
    cases: Iterable[tuple[sitk.Image, sitk.Image]] | Iterable[tuple[sitk.Image, sitk.Image, str]],
    candidates_ml: Sequence[float] = GTVN_MIN_VOLUME_CANDIDATES_ML,
) -> tuple[Postprocessing, dict[str, Any]]:
    """Choose the postprocessing steps on out-of-fold predictions (see the module docstring for the rules).

    Args:
        cases: ``(prediction, label)`` or ``(prediction, label, case id)`` images, each pair on one grid.
        candidates_ml: the GTVn thresholds tried.

    Returns:
        The chosen :class:`Postprocessing` and a report of every score: ``{"n_cases", "GTVp": {"metric",
        "raw", "largest_component", "chosen"}, "GTVn": {"metric", "raw": {...}, "candidates": [...],
        "chosen_min_volume_ml"}}``. A label that no case holds keeps its raw predictions.
    """
    prepared = []
    for index, case in enumerate(cases):
        prediction, truth = case[0], case[1]
        prepared.append(_cropped_case(prediction, truth, case[2] if len(case) > 2 else str(index)))
    if not prepared:
        from hecktor.errors import InputError

        raise InputError("choose_postprocessing: no out-of-fold predictions to choose from")

    raw = Postprocessing()
    gtvp_raw = _gtvp_score(prepared, raw)
    gtvp_largest = _gtvp_score(prepared, Postprocessing(gtvp_largest_component=True))
    keep_largest = _better(gtvp_largest, gtvp_raw)

    gtvn_raw = _gtvn_scores(prepared, raw)
    tried = []
    for volume in sorted(float(v) for v in candidates_ml):
        tried.append({"min_volume_ml": volume, **_gtvn_scores(prepared, Postprocessing(gtvn_min_volume_ml=volume))})
    best = max(tried, key=lambda t: (-math.inf if math.isnan(t["score"]) else t["score"], -t["min_volume_ml"]),
               default=None)
    min_volume = best["min_volume_ml"] if best is not None and _better(best["score"], gtvn_raw["score"]) else 0.0

    chosen = Postprocessing(gtvp_largest_component=keep_largest, gtvn_min_volume_ml=min_volume)
    report = {
        "n_cases": len(prepared),
        "GTVp": {"metric": "mean Dice", "raw": gtvp_raw, "largest_component": gtvp_largest, "chosen": keep_largest},
        "GTVn": {"metric": "(DSCagg + F1agg) / 2", "raw": gtvn_raw, "candidates": tried,
                 "chosen_min_volume_ml": min_volume},
    }
    return chosen, report
