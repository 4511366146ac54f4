"""Segmentation, survival and classification metrics of HECKTOR 2025, on numpy label arrays and SimpleITK images.

Arrays are in SimpleITK's (z, y, x) order and every ``spacing`` is given in the same (z, y, x) order, in mm
(``image.GetSpacing()[::-1]``). Labels follow :data:`hecktor.LABELS` (1 = GTVp, 2 = GTVn).

Definitions
-----------
* **Dice** ``2|P∩G| / (|P|+|G|)`` per case; **DSCagg** ``2ΣTP / Σ(|G|+|P|)`` summed over cases. The public
  HECKTOR evaluation scripts sum *physical* volumes (voxel count × voxel volume), so cases on finer grids do not
  weigh more; :func:`aggregated_dice` does so when given ``spacings``, and :func:`summarize_segmentation` always
  does.
* **Surfaces** are the mask voxels removed by one binary erosion with the 6-neighbour cross (voxels outside the
  array count as background), exactly as MONAI's ``get_mask_edges`` without sub-voxels.
* **HD95** ``max(P95(d(∂P→∂G)), P95(d(∂G→∂P)))``: the larger of the two *directed* 95th percentiles (linear
  interpolation) of the Euclidean distances, in mm, from each surface voxel to the nearest surface voxel of the
  other mask. This is MONAI's ``compute_hausdorff_distance(percentile=95)``. MedPy's ``hd95`` and some public
  challenge evaluation scripts instead take the 95th percentile of both directions pooled together, which cannot
  exceed this value (up to interpolation) and is usually within a voxel of it.
* **Surface Dice** (normalised surface distance, Nikolov et al. 2021) ``(|{d(∂P→∂G) ≤ τ}| + |{d(∂G→∂P) ≤ τ}|)
  / (|∂P| + |∂G|)``, counting surface voxels; MONAI's ``compute_surface_dice(use_subvoxels=False)``. DeepMind's
  surface-distance package (MONAI ``use_subvoxels=True``) instead weighs surface elements by area and scores
  higher: by 0.05 to 0.13 on the tests' masks (τ = 2 mm, 3×1×0.8 mm voxels). Compare numbers of one kind only.
* **Detection** (GTVn F1agg): lesions are the connected components of each label under **26-connectivity**
  (face, edge or corner neighbours; ``scipy.ndimage.label`` with a 3×3×3 structure of ones). A ground-truth
  lesion and a predicted lesion may be paired when their IoU is strictly above ``iou_threshold`` (0.3). Pairing
  is one-to-one and maximises the *number* of pairs, ties broken by the larger total IoU (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment``). Greedy matching by IoU can pair fewer lesions: at IoU > 0.3 one
  prediction can overlap two lesions (a merged prediction) and one lesion two predictions (a split one).
  Paired lesions are TP, unpaired ground-truth lesions FN, unpaired predicted lesions FP; TP, FP and FN are summed
  over all cases and ``F1agg = 2TP / (2TP + FP + FN)``.
* **C-index**: Harrell's, as scikit-survival's ``concordance_index_censored``; see :func:`concordance_index`.
* **Balanced accuracy** and **ROC AUC** of a binary status (Task 3): :func:`balanced_accuracy`, :func:`roc_auc`.

Empty-mask conventions (used everywhere here, summaries included)
-----------------------------------------------------------------
================  =========================  ================================================================
metric            both masks empty           exactly one mask empty
================  =========================  ================================================================
Dice              NaN (excluded from means)  0.0
HD95              NaN (excluded from means)  ``inf`` (no finite distance exists); summaries average the finite
                                             values and report how many cases were ``inf`` (``hd95_n_inf``)
Surface Dice      NaN (excluded from means)  0.0
DSCagg, F1agg     NaN when every case has nothing of the label in either mask (0 / 0)
================  =========================  ================================================================

The metrics are written here with numpy/scipy rather than by calling MONAI because MONAI's functions need one-hot
torch tensors and give 0 / NaN / inf for empty masks depending on the metric; here the conventions above hold for
every metric, and no torch import is needed to score. :func:`evaluate_segmentation` crops to the bounding box of
all labelled voxels and nearest surface distances come from a KD-tree over surface voxels (``scipy.spatial``), so
time follows the size of the objects rather than of the scan:
:func:`evaluate_segmentation` of a 512×512×200 case with ellipsoids of 700 cm³ (GTVp) and 18 cm³ (GTVn) takes
about 0.6 s on one CPU core, and about 3 s when stray voxels in opposite corners stretch the box to the whole scan.
The tests check the numbers against MONAI, SimpleITK and scikit-survival.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.stats import rankdata

from hecktor import LABELS
from hecktor.errors import InputError

DEFAULT_TOLERANCE_MM = 2.0
"""Surface-Dice tolerance. Not a challenge metric: a diagnostic at about half the PET voxel size."""

DEFAULT_IOU_THRESHOLD = 0.3
"""A predicted lesion detects a ground-truth lesion when their IoU is strictly above this (challenge rule)."""

FOREGROUND_LABELS: dict[str, int] = {name: value for name, value in LABELS.items() if value != 0}

_GRID_ATOL = 1e-4  # mm (and direction cosines): NIfTI stores geometry in float32, so exact equality is too strict


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction and ground truth have different shapes: {pred.shape} vs {gt.shape}")
    return pred, gt


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    spacing_arr = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing_arr.size != ndim or not np.all(np.isfinite(spacing_arr)) or np.any(spacing_arr <= 0):
        raise InputError(
            f"spacing must hold {ndim} positive numbers in (z, y, x) order, got {tuple(np.asarray(spacing).tolist())}"
        )
    return spacing_arr


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask, or None when it is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=others))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _crop_to_union(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop two boolean masks to the bounding box of their union (None when both are empty)."""
    box = _bounding_box(p | g)
    if box is None:
        return None
    return p[box], g[box]


def _surface_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Physical (mm) coordinates of the surface voxels of a boolean mask, shape (n, ndim).

    A surface voxel is a foreground voxel with a background 6-neighbour, voxels outside the array counting as
    background: the same set as ``mask & ~binary_erosion(mask)`` (MONAI's edges). Testing the neighbours of the
    foreground voxels only costs time in proportion to the mask, not to its bounding box.
    """
    coords = np.nonzero(mask)
    on_surface = np.zeros(coords[0].size, dtype=bool)
    for axis, length in enumerate(mask.shape):
        for step in (-1, 1):
            moved = coords[axis] + step
            outside = (moved < 0) | (moved >= length)
            neighbour = list(coords)
            neighbour[axis] = np.clip(moved, 0, length - 1)
            on_surface |= outside | ~mask[tuple(neighbour)]
    return np.stack([c[on_surface] for c in coords], axis=1) * spacing


def _surface_distances(p: np.ndarray, g: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``p`` to the nearest surface voxel of ``g``, and from ``g`` to ``p``.

    Both masks must be non-empty. Nearest neighbours come from a KD-tree over the surface points (exact Euclidean
    distances, as MONAI on CPU) rather than from a dense distance transform of the union bounding box: one stray
    false-positive voxel in a far corner stretches that box to the whole scan, and the two transforms of a
    512×512×200 box take seconds, whereas the KD-tree's cost follows the surface size.
    """
    points_p, points_g = _surface_points(p, spacing), _surface_points(g, spacing)
    d_pg = cKDTree(points_g).query(points_p, k=1)[0]
    d_gp = cKDTree(points_p).query(points_g, k=1)[0]
    return d_pg, d_gp


def _hd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, percentile: float) -> float:
    return float(max(np.percentile(d_pg, percentile), np.percentile(d_gp, percentile)))


def _nsd_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, tolerance_mm: float) -> float:
    within = np.count_nonzero(d_pg <= tolerance_mm) + np.count_nonzero(d_gp <= tolerance_mm)
    return float(within / (d_pg.size + d_gp.size))


def _check_tolerance(tolerance_mm: float) -> float:
    tolerance_mm = float(tolerance_mm)
    if not math.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise InputError(f"surface-Dice tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    return tolerance_mm


# ----------------------------------------------------------------------------------------------------------------
# overlap
# ----------------------------------------------------------------------------------------------------------------
def _overlap_counts(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(g)), int(np.count_nonzero(p))


def _dice_from_counts(tp: float, n_gt: float, n_pred: float) -> float:
    total = n_gt + n_pred
    return float("nan") if total == 0 else float(2.0 * tp / total)


def dice(pred: np.ndarray, gt: np.ndarray, label: int) -> float:
    """Dice of one label in one case: NaN when neither mask holds the label, 0.0 when only one does."""
    pred, gt = _check_pair(pred, gt)
    return _dice_from_counts(*_overlap_counts(pred == label, gt == label))


def aggregated_dice(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    label: int,
    spacings: Iterable[Sequence[float]] | None = None,
) -> float:
    """DSCagg = 2·ΣTP / Σ(|GT| + |Pred|) over cases (the challenge's GTVn score).

    Args:
        pairs: ``(pred, gt)`` label arrays, one pair per case.
        label: the label scored.
        spacings: optional (z, y, x) spacing per case, in the order of ``pairs``. When given, each case's voxel
            counts are multiplied by its voxel volume (mm³), as the public HECKTOR evaluation scripts do; without
            it, voxels are counted, which is the same when every case shares one spacing.

    Returns:
        DSCagg, or NaN when no case holds the label in either mask.
    """
    spacing_iter = iter(spacings) if spacings is not None else None
    tp_sum = volume_sum = 0.0
    for index, (pred, gt) in enumerate(pairs):
        pred, gt = _check_pair(pred, gt)
        tp, n_gt, n_pred = _overlap_counts(pred == label, gt == label)
        weight = 1.0
        if spacing_iter is not None:
            try:
                weight = float(np.prod(_check_spacing(next(spacing_iter), pred.ndim)))
            except StopIteration:
                raise InputError(f"aggregated_dice: fewer spacings than cases (none for case {index})") from None
        tp_sum += weight * tp
        volume_sum += weight * (n_gt + n_pred)
    return float(2.0 * tp_sum / volume_sum) if volume_sum > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# surface distances
# ----------------------------------------------------------------------------------------------------------------
def hd95(pred: np.ndarray, gt: np.ndarray, label: int, spacing: Sequence[float], percentile: float = 95.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (MONAI's definition, see the module docstring).

    Args:
        pred, gt: label arrays in (z, y, x) order.
        label: the label scored.
        spacing: voxel spacing in (z, y, x) order, mm.
        percentile: 95 for HD95; 100 gives the Hausdorff distance.

    Returns:
        The distance; NaN when neither mask holds the label, ``inf`` when exactly one does.
    """
    pred, gt = _check_pair(pred, gt)
    spacing_arr = _check_spacing(spacing, pred.ndim)
    p, g = pred == label, gt == label
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return float("nan")
    if has_p != has_g:
        return float("inf")
    return _hd_from_distances(*_surface_distances(p, g, spacing_arr), percentile)


def surface_dice(
    pred: np.ndarray, gt: np.ndarray, label: int, spacing: Sequence[float], tolerance_mm: float = DEFAULT_TOLERANCE_MM
) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (surface voxels within the tolerance of the other surface).

    Returns:
        A value in [0, 1]; NaN when neither mask holds the label, 0.0 when exactly one does.
    """
    pred, gt = _check_pair(pred, gt)
    spacing_arr = _check_spacing(spacing, pred.ndim)
    tolerance_mm = _check_tolerance(tolerance_mm)
    p, g = pred == label, gt == label
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return float("nan")
    if has_p != has_g:
        return 0.0
    return _nsd_from_distances(*_surface_distances(p, g, spacing_arr), tolerance_mm)


# ----------------------------------------------------------------------------------------------------------------
# lesion detection
# ----------------------------------------------------------------------------------------------------------------
def _lesion_counts(p: np.ndarray, g: np.ndarray, iou_threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) lesions of one case from two boolean masks; see the module docstring for the rules."""
    cropped = _crop_to_union(p, g)
    if cropped is None:
        return 0, 0, 0
    p, g = cropped
    structure = np.ones((3,) * p.ndim, dtype=bool)  # 26-connectivity in 3-D
    gt_labels, n_gt = ndimage.label(g, structure=structure)
    pred_labels, n_pred = ndimage.label(p, structure=structure)
    if n_gt == 0 or n_pred == 0:
        return 0, n_pred, n_gt

    gt_sizes = np.bincount(gt_labels.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    both = (gt_labels > 0) & (pred_labels > 0)
    # Only overlapping component pairs can reach the threshold; encoding them sparsely avoids an n_gt × n_pred
    # table when a noisy prediction has thousands of specks.
    codes = gt_labels[both].astype(np.int64) * (n_pred + 1) + pred_labels[both]
    pair_codes, intersections = np.unique(codes, return_counts=True)
    gt_ids, pred_ids = np.divmod(pair_codes, n_pred + 1)
    ious = intersections / (gt_sizes[gt_ids] + pred_sizes[pred_ids] - intersections)
    eligible = ious > iou_threshold
    if not eligible.any():
        return 0, n_pred, n_gt

    gt_ids, pred_ids, ious = gt_ids[eligible], pred_ids[eligible], ious[eligible]
    rows, row_index = np.unique(gt_ids, return_inverse=True)
    cols, col_index = np.unique(pred_ids, return_inverse=True)
    # Weight = big constant + IoU for eligible pairs, 0 otherwise: the maximum-weight assignment then has the most
    # pairs (the constant exceeds any possible IoU total) and, among those, the largest total IoU.
    big = float(min(rows.size, cols.size) + 1)
    weights = np.zeros((rows.size, cols.size))
    weights[row_index, col_index] = big + ious
    matched_rows, matched_cols = linear_sum_assignment(weights, maximize=True)
    tp = int(np.count_nonzero(weights[matched_rows, matched_cols] > 0))
    return tp, n_pred - tp, n_gt - tp


def lesion_detection_counts(
    pred: np.ndarray, gt: np.ndarray, label: int = 2, iou_threshold: float = DEFAULT_IOU_THRESHOLD
) -> dict[str, int]:
    """Per-case lesion counts ``{"tp", "fp", "fn"}`` of one label (26-connected components, IoU > threshold)."""
    pred, gt = _check_pair(pred, gt)
    tp, fp, fn = _lesion_counts(pred == label, gt == label, iou_threshold)
    return {"tp": tp, "fp": fp, "fn": fn}


def _f1_from_counts(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else float(2 * tp / denominator)


def aggregated_detection_f1(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], label: int = 2, iou_threshold: float = DEFAULT_IOU_THRESHOLD
) -> dict[str, float | int]:
    """The challenge's aggregated detection F1 of one label (GTVn by default).

    Lesions are 26-connected components; a ground-truth lesion is detected when a predicted lesion, paired one to one
    by maximum-cardinality Hungarian matching, overlaps it with IoU > ``iou_threshold``. TP, FP and FN are summed over
    all cases before F1 = 2TP / (2TP + FP + FN) is taken.

    Returns:
        ``{"f1": float, "tp": int, "fp": int, "fn": int}``; ``f1`` is NaN when no case has a lesion in either mask.
    """
    tp = fp = fn = 0
    for pred, gt in pairs:
        counts = lesion_detection_counts(pred, gt, label, iou_threshold)
        tp, fp, fn = tp + counts["tp"], fp + counts["fp"], fn + counts["fn"]
    return {"f1": _f1_from_counts(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}


# ----------------------------------------------------------------------------------------------------------------
# survival
# ----------------------------------------------------------------------------------------------------------------
def concordance_index(
    time: Sequence[float], event: Sequence[bool | int], risk: Sequence[float], tied_tol: float = 1e-8
) -> float:
    """Harrell's concordance index of a risk score: higher risk must mean an earlier event.

    A pair (i, j) is comparable when subject i had the event and either ``time[i] < time[j]``, or the times are
    equal and j was censored (an event at t precedes a censoring at t). Pairs with tied times where both had the
    event, and pairs where the earlier subject was censored, are not comparable. A comparable pair counts 1 when
    ``risk[i] > risk[j]``, 0.5 when the risks are tied (within ``tied_tol``), 0 otherwise. This is exactly
    scikit-survival's ``concordance_index_censored`` (which the tests compare against); it is written out here so
    that Task 2 code can score without importing scikit-learn and so that NaN risks fail loudly.

    Args:
        time: follow-up time (e.g. RFS in days).
        event: 1/True when the event (relapse) was observed, 0/False when censored.
        risk: predicted risk score.
        tied_tol: absolute tolerance under which two risks count as tied.

    Raises:
        InputError: inputs of unequal length, non-finite values, or no comparable pair (e.g. no event at all).
    """
    time_arr = np.asarray(time, dtype=np.float64).reshape(-1)
    risk_arr = np.asarray(risk, dtype=np.float64).reshape(-1)
    event_raw = np.asarray(event).reshape(-1)
    if not (time_arr.size == risk_arr.size == event_raw.size):
        raise InputError(
            f"concordance_index: time, event and risk differ in length ({time_arr.size}, {event_raw.size}, "
            f"{risk_arr.size})"
        )
    if not np.all(np.isfinite(time_arr)) or not np.all(np.isfinite(risk_arr)):
        raise InputError("concordance_index: time and risk must be finite numbers (found NaN or inf)")
    if not np.all(np.isin(event_raw.astype(np.float64), (0.0, 1.0))):
        raise InputError("concordance_index: event must hold 0/1 or booleans")
    event_arr = event_raw.astype(bool)

    numerator = 0.0
    comparable = 0
    event_index = np.flatnonzero(event_arr)
    # Vectorised over blocks of event rows: O(n²) memory would be 1.2 M cells for the ~1,100 HECKTOR patients, but
    # blocks keep larger studies within a few MB.
    block = max(1, 2_000_000 // max(1, time_arr.size))
    for start in range(0, event_index.size, block):
        rows = event_index[start : start + block]
        t_i = time_arr[rows, None]
        mask = (time_arr[None, :] > t_i) | ((time_arr[None, :] == t_i) & ~event_arr[None, :])
        difference = risk_arr[rows, None] - risk_arr[None, :]
        tied = np.abs(difference) <= tied_tol
        numerator += np.count_nonzero(mask & (difference > tied_tol)) + 0.5 * np.count_nonzero(mask & tied)
        comparable += np.count_nonzero(mask)
    if comparable == 0:
        raise InputError("concordance_index: no comparable pair (needs at least one event before another time)")
    return float(numerator / comparable)


# ----------------------------------------------------------------------------------------------------------------
# binary classification (Task 3)
# ----------------------------------------------------------------------------------------------------------------
def _binary_labels(label: Sequence[bool | int], what: str) -> np.ndarray:
    raw = np.asarray(label).reshape(-1)
    if raw.size == 0 or not np.all(np.isin(raw.astype(np.float64), (0.0, 1.0))):
        raise InputError(f"{what}: labels must be a non-empty sequence of 0/1 or booleans")
    truth = raw.astype(bool)
    if truth.all() or not truth.any():
        raise InputError(f"{what}: needs both classes among the labels (got {int(truth.sum())} positive of "
                         f"{truth.size})")
    return truth


def balanced_accuracy(label: Sequence[bool | int], predicted: Sequence[bool | int]) -> float:
    """Balanced accuracy, the mean of sensitivity and specificity (Task 3's leaderboard metric; scikit-learn's
    ``balanced_accuracy_score`` for two classes).

    Raises:
        InputError: unequal lengths, labels that are not 0/1, or a class absent from ``label`` (undefined).
    """
    truth = _binary_labels(label, "balanced_accuracy")
    guess = np.asarray(predicted).reshape(-1)
    if guess.size != truth.size or not np.all(np.isin(guess.astype(np.float64), (0.0, 1.0))):
        raise InputError(f"balanced_accuracy: {guess.size} predictions of 0/1 needed for {truth.size} labels")
    guess = guess.astype(bool)
    return float(0.5 * (guess[truth].mean() + (~guess[~truth]).mean()))


def roc_auc(label: Sequence[bool | int], score: Sequence[float]) -> float:
    """Area under the ROC curve of a score (higher = more likely positive): the probability that a random positive
    scores above a random negative, ties counting one half (the Mann-Whitney statistic; scikit-learn's
    ``roc_auc_score``, which the tests compare against).

    Raises:
        InputError: unequal lengths, non-finite scores, labels that are not 0/1, or a class absent (undefined).
    """
    truth = _binary_labels(label, "roc_auc")
    values = np.asarray(score, dtype=np.float64).reshape(-1)
    if values.size != truth.size or not np.all(np.isfinite(values)):
        raise InputError(f"roc_auc: {values.size} finite scores needed for {truth.size} labels")
    ranks = rankdata(values)  # average ranks: a tie between a positive and a negative counts 1/2
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ----------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------
def _check_same_grid(pred_img: sitk.Image, gt_img: sitk.Image, case: str) -> None:
    checks: list[tuple[str, Any, Any]] = [
        ("dimension", pred_img.GetDimension(), gt_img.GetDimension()),
        ("size", pred_img.GetSize(), gt_img.GetSize()),
    ]
    for name, a, b in checks:
        if a != b:
            raise InputError(f"{case}prediction and ground truth differ in {name}: {a} vs {b}; resample the prediction "
                             "onto the ground truth's grid")
    for name, a, b in (
        ("spacing", pred_img.GetSpacing(), gt_img.GetSpacing()),
        ("origin", pred_img.GetOrigin(), gt_img.GetOrigin()),
        ("direction", pred_img.GetDirection(), gt_img.GetDirection()),
    ):
        if not np.allclose(a, b, rtol=0.0, atol=_GRID_ATOL):
            a_text = tuple(round(v, 6) for v in a)
            b_text = tuple(round(v, 6) for v in b)
            raise InputError(f"{case}prediction and ground truth differ in {name}: {a_text} vs {b_text}; resample the "
                             "prediction onto the ground truth's grid")
    if pred_img.GetNumberOfComponentsPerPixel() != 1 or gt_img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{case}label images must be scalar, not vector images")


def _check_labels(array: np.ndarray, allowed: Sequence[int], what: str, case: str) -> None:
    # Chained comparisons: np.isin is ~50x slower on a 512×512×200 integer volume.
    unexpected = array != 0
    for value in allowed:
        unexpected &= array != value
    if unexpected.any():
        values = np.unique(array[unexpected])[:5].tolist()
        raise InputError(f"{case}{what} holds values other than the labels {(0, *allowed)}: {values}")


def evaluate_segmentation(
    pred_img: sitk.Image,
    gt_img: sitk.Image,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    labels: Mapping[str, int] = FOREGROUND_LABELS,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    case_id: str | None = None,
) -> dict[str, Any]:
    """Score one case: per-label Dice, HD95, surface Dice, lesion counts and the volumes needed for aggregation.

    Args:
        pred_img: predicted label image.
        gt_img: reference label image; it must share the prediction's grid (size, spacing, origin, direction).
        tolerance_mm: surface-Dice tolerance.
        labels: label name → value; by default ``{"GTVp": 1, "GTVn": 2}``.
        iou_threshold: lesion detection threshold (IoU strictly above it).
        case_id: optional name, put in the result and in error messages.

    Returns:
        ``{"case_id", "spacing_zyx", "tolerance_mm", <name>: {...}}`` where each label's dict holds ``dice``,
        ``hd95`` (mm), ``surface_dice``, voxel counts ``tp_voxels``, ``gt_voxels``, ``pred_voxels``, the same in
        mm³ (``tp_mm3``, ``gt_mm3``, ``pred_mm3``) and lesion counts ``lesion_tp``, ``lesion_fp``, ``lesion_fn``.
        Empty masks follow the module's conventions (NaN / inf).

    Raises:
        InputError: the grids differ (the message names the property), or a mask holds values that are not labels.
    """
    case = f"{case_id}: " if case_id else ""
    _check_same_grid(pred_img, gt_img, case)
    tolerance_mm = _check_tolerance(tolerance_mm)
    pred = sitk.GetArrayViewFromImage(pred_img)
    gt = sitk.GetArrayViewFromImage(gt_img)
    spacing = _check_spacing(gt_img.GetSpacing()[::-1], gt.ndim)
    voxel_mm3 = float(np.prod(spacing))

    # One crop to everything non-zero in either image: every per-label mask, and every value the label check must
    # see, lies inside it.
    box = _bounding_box((pred != 0) | (gt != 0))
    if box is not None:
        pred, gt = pred[box], gt[box]
    _check_labels(pred, tuple(labels.values()), "prediction", case)
    _check_labels(gt, tuple(labels.values()), "ground truth", case)

    result: dict[str, Any] = {
        "case_id": case_id,
        "spacing_zyx": [float(s) for s in spacing],
        "tolerance_mm": tolerance_mm,
    }
    for name, value in labels.items():
        p, g = pred == value, gt == value
        tp, n_gt, n_pred = _overlap_counts(p, g)
        if n_gt and n_pred:
            d_pg, d_gp = _surface_distances(p, g, spacing)
            hd, nsd = _hd_from_distances(d_pg, d_gp, 95.0), _nsd_from_distances(d_pg, d_gp, tolerance_mm)
        elif n_gt or n_pred:
            hd, nsd = float("inf"), 0.0
        else:
            hd = nsd = float("nan")
        lesion_tp, lesion_fp, lesion_fn = _lesion_counts(p, g, iou_threshold)
        result[name] = {
            "dice": _dice_from_counts(tp, n_gt, n_pred),
            "hd95": hd,
            "surface_dice": nsd,
            "tp_voxels": tp,
            "gt_voxels": n_gt,
            "pred_voxels": n_pred,
            "tp_mm3": tp * voxel_mm3,
            "gt_mm3": n_gt * voxel_mm3,
            "pred_mm3": n_pred * voxel_mm3,
            "lesion_tp": lesion_tp,
            "lesion_fp": lesion_fp,
            "lesion_fn": lesion_fn,
        }
    return result


def _mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def summarize_segmentation(per_case: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`evaluate_segmentation` results into the challenge's numbers and a few diagnostics.

    For each label present in the per-case dicts, ``summary[name]`` holds:

    * ``dice_mean``: mean per-case Dice over cases where it is defined (the GTVp score); ``dice_mean_gt_nonempty``
      the same over cases whose ground truth holds the label (the organisers' "non-zero" variant); ``n_dice``.
    * ``dsc_agg``: 2ΣTP / Σ(|GT|+|Pred|) over cases, in mm³ (the GTVn score).
    * ``f1_agg`` with ``lesion_tp``, ``lesion_fp``, ``lesion_fn`` summed over cases (the GTVn detection score).
    * ``hd95_mean`` and ``hd95_median`` over cases with a finite HD95, ``n_hd95`` of those and ``hd95_n_inf`` of the
      cases where exactly one mask was empty.
    * ``surface_dice_mean`` over cases where it is defined.
    * ``precision_agg`` (ΣTP / Σ|Pred|), ``recall_agg`` (ΣTP / Σ|GT|) and ``volume_ratio`` (Σ|Pred| / Σ|GT|), in mm³
      over cases: which side of DSCagg is lost (a volume ratio below 1 is under-segmentation).

    ``summary["n_cases"]`` counts the cases. The challenge ranks on GTVp ``dice_mean``, GTVn ``dsc_agg`` and GTVn
    ``f1_agg``.
    """
    if not per_case:
        raise InputError("summarize_segmentation: no cases to summarise")
    names = [key for key, value in per_case[0].items() if isinstance(value, Mapping)]
    summary: dict[str, Any] = {"n_cases": len(per_case)}
    for name in names:
        rows = []
        for index, case in enumerate(per_case):
            if not isinstance(case.get(name), Mapping):
                raise InputError(f"summarize_segmentation: case {case.get('case_id') or index} has no '{name}' entry")
            rows.append(case[name])
        dices = [r["dice"] for r in rows if not math.isnan(r["dice"])]
        dices_gt = [r["dice"] for r in rows if r["gt_voxels"] > 0]
        hds = [r["hd95"] for r in rows if math.isfinite(r["hd95"])]
        nsds = [r["surface_dice"] for r in rows if not math.isnan(r["surface_dice"])]
        tp_mm3 = sum(r["tp_mm3"] for r in rows)
        gt_mm3, pred_mm3 = sum(r["gt_mm3"] for r in rows), sum(r["pred_mm3"] for r in rows)
        volume_mm3 = gt_mm3 + pred_mm3
        lesion_tp = sum(int(r["lesion_tp"]) for r in rows)
        lesion_fp = sum(int(r["lesion_fp"]) for r in rows)
        lesion_fn = sum(int(r["lesion_fn"]) for r in rows)
        summary[name] = {
            "dice_mean": _mean_or_nan(dices),
            "dice_mean_gt_nonempty": _mean_or_nan(dices_gt),
            "n_dice": len(dices),
            "dsc_agg": float(2.0 * tp_mm3 / volume_mm3) if volume_mm3 > 0 else float("nan"),
            "f1_agg": _f1_from_counts(lesion_tp, lesion_fp, lesion_fn),
            "lesion_tp": lesion_tp,
            "lesion_fp": lesion_fp,
            "lesion_fn": lesion_fn,
            "hd95_mean": _mean_or_nan(hds),
            "hd95_median": float(np.median(hds)) if hds else float("nan"),
            "n_hd95": len(hds),
            "hd95_n_inf": sum(1 for r in rows if math.isinf(r["hd95"])),
            "surface_dice_mean": _mean_or_nan(nsds),
            "precision_agg": float(tp_mm3 / pred_mm3) if pred_mm3 > 0 else float("nan"),
            "recall_agg": float(tp_mm3 / gt_mm3) if gt_mm3 > 0 else float("nan"),
            "volume_ratio": float(pred_mm3 / gt_mm3) if gt_mm3 > 0 else float("nan"),
        }
    return summary
