"""hecktor.metrics against independent implementations (MONAI, SimpleITK, scikit-survival) and hand-built cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage
from sksurv.metrics import concordance_index_censored

from hecktor.errors import InputError
from hecktor.metrics import (
    aggregated_detection_f1,
    aggregated_dice,
    concordance_index,
    dice,
    evaluate_segmentation,
    hd95,
    lesion_detection_counts,
    summarize_segmentation,
    surface_dice,
)

SPACINGS_ZYX = [(3.0, 1.0, 0.8), (2.5, 0.9766, 1.3)]


def _blobs(rng: np.random.Generator, shape=(14, 26, 24), sigma=(1.0, 2.0, 2.0), level=0.55) -> np.ndarray:
    """Smooth random blobs (several components, irregular surfaces): a realistic-looking binary mask."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    return field > level


def _label_pair(seed: int, shape=(14, 26, 24)) -> tuple[np.ndarray, np.ndarray]:
    """A (pred, gt) pair of label maps with labels 1 and 2, the prediction a perturbed copy of the truth."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    gt[_blobs(rng, shape)] = 1
    gt[_blobs(rng, shape, level=0.6) & (gt == 0)] = 2
    pred = gt.copy()
    flip = rng.random(shape) < 0.08
    pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
    pred = np.roll(pred, shift=(1, 0, -1), axis=(0, 1, 2))
    return pred, gt


def _one_hot(labels: np.ndarray, label: int) -> torch.Tensor:
    """[1, 2, z, y, x] background/foreground one-hot tensor, as MONAI's metrics want."""
    fg = labels == label
    return torch.from_numpy(np.stack([~fg, fg])[None].astype(np.float32))


def _image(array: np.ndarray, spacing_zyx, origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


# ----------------------------------------------------------------------------------------------------------------
# Dice
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_matches_monai_and_simpleitk(seed):
    pred, gt = _label_pair(seed)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_image(gt, (1, 1, 1)), _image(pred, (1, 1, 1)))
    for label in (1, 2):
        ours = dice(pred, gt, label)
        monai_value = compute_dice(_one_hot(pred, label), _one_hot(gt, label), include_background=False).item()
        assert 0.2 < ours < 0.95  # a non-trivial overlap, so the comparison means something
        assert ours == pytest.approx(monai_value, abs=1e-6)  # MONAI returns float32
        assert ours == pytest.approx(overlap.GetDiceCoefficient(label), abs=1e-12)


def test_dice_empty_mask_conventions():
    empty = np.zeros((4, 5, 6), np.uint8)
    full = empty.copy()
    full[1:3, 1:4, 2:5] = 1
    assert math.isnan(dice(empty, empty, 1))
    assert dice(full, empty, 1) == 0.0
    assert dice(empty, full, 1) == 0.0
    assert dice(full, full, 1) == 1.0
    with pytest.raises(InputError, match="different shapes"):
        dice(full, full[:-1], 1)


def test_aggregated_dice_sums_counts_and_weighs_by_voxel_volume():
    a_gt = np.zeros((2, 4, 4), np.uint8)
    a_gt[0, :2, :2] = 2  # 4 voxels
    a_pred = np.zeros_like(a_gt)
    a_pred[0, :2, :1] = 2  # 2 voxels, both TP
    b_gt = np.zeros((2, 4, 4), np.uint8)
    b_gt[1, :, :] = 2  # 16 voxels
    b_pred = np.zeros_like(b_gt)  # missed entirely
    pairs = [(a_pred, a_gt), (b_pred, b_gt)]
    # voxels: 2*2 / (4+2+16+0)
    assert aggregated_dice(pairs, 2) == pytest.approx(4 / 22)
    # case b on a grid with 8x the voxel volume: 2*2 / (6 + 8*16)
    assert aggregated_dice(pairs, 2, spacings=[(1, 1, 1), (2, 2, 2)]) == pytest.approx(4 / 134)
    assert math.isnan(aggregated_dice(pairs, 1))  # label absent everywhere
    with pytest.raises(InputError, match="fewer spacings"):
        aggregated_dice(pairs, 2, spacings=[(1, 1, 1)])


# ----------------------------------------------------------------------------------------------------------------
# HD95 and surface Dice
# ----------------------------------------------------------------------------------------------------------------
def _shaped_pair(spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid and a shifted, squashed ellipsoid sized in mm: a smooth-surface case."""
    z, y, x = np.ogrid[:16, :30, :30]
    sz, sy, sx = spacing_zyx
    gt = ((z * sz - 22) / 15) ** 2 + ((y * sy - 14) / 9) ** 2 + ((x * sx - 15) / 10) ** 2 < 1
    pred = ((z * sz - 25) / 12) ** 2 + ((y * sy - 16) / 10) ** 2 + ((x * sx - 13) / 8) ** 2 < 1
    return pred.astype(np.uint8), gt.astype(np.uint8)


@pytest.mark.parametrize("spacing", SPACINGS_ZYX)
def test_hd95_and_surface_dice_match_monai(spacing):
    cases = [_label_pair(seed) for seed in (3, 4)] + [_shaped_pair(spacing)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices from inside compute_*
        for pred, gt in cases:
            for label in (1, 2):
                if not (gt == label).any():
                    continue
                p, g = _one_hot(pred, label), _one_hot(gt, label)
                ours = hd95(pred, gt, label, spacing)
                reference = compute_hausdorff_distance(p, g, percentile=95, spacing=spacing).item()
                assert ours > 0.5
                # Same surfaces (6-neighbour erosion) and same percentile rule: only float32 rounding differs.
                assert ours == pytest.approx(reference, rel=1e-6)
                assert hd95(pred, gt, label, spacing, percentile=100) == pytest.approx(
                    compute_hausdorff_distance(p, g, spacing=spacing).item(), rel=1e-6
                )
                # A tolerance that no inter-voxel distance of these grids equals exactly, so float32 vs float64
                # distances cannot fall on different sides of it.
                for tolerance in (1.7, 3.1):
                    ours_nsd = surface_dice(pred, gt, label, spacing, tolerance)
                    reference_nsd = compute_surface_dice(p, g, [tolerance], spacing=spacing).item()
                    assert 0.0 < ours_nsd < 1.0
                    assert ours_nsd == pytest.approx(reference_nsd, abs=1e-6)


def test_hd95_exact_distance_between_single_voxels():
    pred = np.zeros((5, 6, 7), np.uint8)
    gt = np.zeros_like(pred)
    pred[0, 0, 0] = 1
    gt[1, 2, 3] = 1
    spacing = (3.0, 1.0, 0.5)
    expected = math.sqrt(3.0**2 + 2.0**2 + 1.5**2)
    assert hd95(pred, gt, 1, spacing) == pytest.approx(expected)
    # Spacing is (z, y, x): swapping it changes the answer.
    assert hd95(pred, gt, 1, spacing[::-1]) == pytest.approx(math.sqrt(0.5**2 + 2.0**2 + 9.0**2))


def test_surface_dice_tolerance_is_inclusive():
    pred = np.zeros((4, 4, 4), np.uint8)
    gt = np.zeros_like(pred)
    pred[1, 1, 1] = 1
    gt[2, 1, 1] = 1  # one z step: 3 mm apart
    assert surface_dice(pred, gt, 1, (3.0, 1.0, 1.0), tolerance_mm=2.9) == 0.0
    assert surface_dice(pred, gt, 1, (3.0, 1.0, 1.0), tolerance_mm=3.0) == 1.0
    assert surface_dice(gt, gt, 1, (3.0, 1.0, 1.0), tolerance_mm=0.0) == 1.0


def test_distance_metrics_empty_mask_conventions():
    empty = np.zeros((4, 5, 6), np.uint8)
    blob = empty.copy()
    blob[1:3, 1:4, 2:5] = 1
    spacing = (2.0, 1.0, 1.0)
    assert math.isnan(hd95(empty, empty, 1, spacing))
    assert hd95(blob, empty, 1, spacing) == math.inf
    assert hd95(empty, blob, 1, spacing) == math.inf
    assert hd95(blob, blob, 1, spacing) == 0.0
    assert math.isnan(surface_dice(empty, empty, 1, spacing))
    assert surface_dice(blob, empty, 1, spacing) == 0.0
    assert surface_dice(empty, blob, 1, spacing) == 0.0
    with pytest.raises(InputError, match="spacing"):
        hd95(blob, blob, 1, (1.0, 1.0))
    with pytest.raises(InputError, match="tolerance"):
        surface_dice(blob, blob, 1, spacing, tolerance_mm=-1)


def test_objects_touching_the_array_border_have_a_surface_there():
    # A mask filling the whole array: its outer faces are its surface (as in MONAI, outside is background).
    gt = np.ones((3, 4, 5), np.uint8)
    pred = gt.copy()
    pred[:, :, -1] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = compute_hausdorff_distance(_one_hot(pred, 1), _one_hot(gt, 1), percentile=95).item()
    assert hd95(pred, gt, 1, (1, 1, 1)) == pytest.approx(reference)
    assert hd95(pred, gt, 1, (1, 1, 1)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------
# lesion detection F1
# ----------------------------------------------------------------------------------------------------------------
def _line_case(gt_runs, pred_runs, length=40) -> tuple[np.ndarray, np.ndarray]:
    """Lesions as runs [start, stop) along z of a one-voxel-thick line in a (length, 3, 3) volume (label 2)."""
    gt = np.zeros((length, 3, 3), np.uint8)
    pred = np.zeros_like(gt)
    for start, stop in gt_runs:
        gt[start:stop, 1, 1] = 2
    for start, stop in pred_runs:
        pred[start:stop, 1, 1] = 2
    return pred, gt


def _counts(pred, gt):
    c = lesion_detection_counts(pred, gt, label=2)
    return c["tp"], c["fp"], c["fn"]


def test_detection_exact_split_and_merged_lesions():
    # exact match
    assert _counts(*_line_case([(0, 10)], [(0, 10)])) == (1, 0, 0)
    # split: one lesion predicted as two pieces, each IoU 4/10 = 0.4 > 0.3 -> one TP, the other piece FP
    assert _counts(*_line_case([(0, 10)], [(0, 4), (6, 10)])) == (1, 1, 0)
    # merged: two lesions (4 voxels each) predicted as one 10-voxel run, IoU 0.4 with each -> one TP, one FN
    assert _counts(*_line_case([(0, 4), (6, 10)], [(0, 10)])) == (1, 0, 1)
    # a prediction far from any lesion and a missed lesion
    assert _counts(*_line_case([(0, 5)], [(20, 25)])) == (0, 1, 1)


def test_detection_iou_threshold_is_strict():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[:] = 2  # one lesion of 1000 voxels
    for n_voxels, detected in ((299, False), (300, False), (301, True)):
        pred = np.zeros_like(gt)
        pred.reshape(-1)[:n_voxels] = 2  # a connected prefix of the lesion: IoU = n / 1000
        assert _counts(pred, gt) == ((1, 0, 0) if detected else (0, 1, 1)), n_voxels


def test_detection_uses_26_connectivity():
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0, 0, 0] = gt[1, 1, 1] = 2  # corner neighbours: one lesion under 26-connectivity, two under 6
    assert _counts(gt.copy(), gt) == (1, 0, 0)


def test_detection_matching_maximises_pairs_where_greedy_would_not():
    # G1 = [0, 20), G2 = [21, 33); P2 = [0, 7), P1 = [8, 30).
    # IoU(P1, G1) = 12/30 = 0.40 (the best pair), IoU(P1, G2) = 9/25 = 0.36, IoU(P2, G1) = 7/20 = 0.35.
    # Greedy-by-IoU pairs P1-G1 and leaves both others unpaired (TP 1); the maximum matching is P1-G2, P2-G1.
    assert _counts(*_line_case([(0, 20), (21, 33)], [(0, 7), (8, 30)])) == (2, 0, 0)


def _brute_force_tp(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.3) -> int:
    """Independent reference: SimpleITK fully-connected components, per-pair IoU loops, exhaustive matching."""
    def components(mask):
        cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
        return [cc == k for k in range(1, int(cc.max()) + 1)]

    gts, preds = components(gt == 2), components(pred == 2)
    edges = {
        (i, j)
        for i, g in enumerate(gts)
        for j, p in enumerate(preds)
        if np.count_nonzero(g & p) / np.count_nonzero(g | p) > threshold
    }

    def best(i: int, used: frozenset) -> int:
        if i == len(gts):
            return 0
        options = [best(i + 1, used)]
        options += [1 + best(i + 1, used | {j}) for j in range(len(preds)) if (i, j) in edges and j not in used]
        return max(options)

    return best(0, frozenset())


def test_aggregated_detection_f1_sums_over_cases_and_matches_brute_force():
    cases = [_line_case([(0, 10)], [(0, 4), (6, 10)]),  # TP1 FP1
             _line_case([(0, 4), (6, 10)], [(0, 10)]),  # TP1 FN1
             _line_case([], [(3, 6)]),  # FP1
             _line_case([(3, 6)], []),  # FN1
             _line_case([], [])]  # nothing
    result = aggregated_detection_f1(cases, label=2)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 2)
    assert result["f1"] == pytest.approx(4 / 8)
    assert math.isnan(aggregated_detection_f1([_line_case([], [])])["f1"])

    rng = np.random.default_rng(7)
    for _ in range(6):
        gt = np.where(_blobs(rng, (8, 20, 20), sigma=(1.0, 1.5, 1.5), level=0.6), 2, 0).astype(np.uint8)
        pred = np.where(_blobs(rng, (8, 20, 20), sigma=(1.0, 1.5, 1.5), level=0.6) | (gt == 2), 2, 0)
        pred = np.where(rng.random(pred.shape) < 0.15, 0, pred).astype(np.uint8)  # fragments the prediction
        tp, fp, fn = _counts(pred, gt)
        assert tp == _brute_force_tp(pred, gt)
        assert tp + fn == len(np.unique(ndimage.label(gt == 2, np.ones((3, 3, 3)))[0])) - 1


# ----------------------------------------------------------------------------------------------------------------
# C-index
# ----------------------------------------------------------------------------------------------------------------
def test_concordance_index_matches_scikit_survival_with_ties_and_censoring():
    rng = np.random.default_rng(11)
    for _ in range(5):
        n = 80
        time = rng.integers(1, 25, size=n).astype(float)  # many tied times
        event = rng.random(n) < 0.4
        risk = np.round(-time / 10 + rng.normal(0, 1, n), 1)  # many tied risks, anti-concordant with time
        expected = concordance_index_censored(event, time, risk)[0]
        assert concordance_index(time, event, risk) == pytest.approx(expected, abs=1e-12)
        assert concordance_index(time, event.astype(int), risk) == pytest.approx(expected, abs=1e-12)


def test_concordance_index_hand_cases():
    time = [1, 2, 3, 4]
    event = [1, 1, 1, 1]
    assert concordance_index(time, event, [4, 3, 2, 1]) == 1.0  # higher risk, earlier event
    assert concordance_index(time, event, [1, 2, 3, 4]) == 0.0
    assert concordance_index(time, event, [5, 5, 5, 5]) == 0.5  # tied risks count one half
    # Tied times: an event and a censoring at t=2 are comparable (the event first): pairs (0,1) (0,2) (1,2).
    assert concordance_index([1, 2, 2], [1, 1, 0], [3, 2, 1]) == 1.0
    assert concordance_index([1, 2, 2], [1, 1, 0], [3, 1, 2]) == pytest.approx(2 / 3)
    assert concordance_index([1, 2, 2], [1, 1, 1], [3, 1, 2]) == 1.0  # (1,2) both events at t=2: not comparable
    # A subject censored early is compared with nobody after its censoring time.
    assert concordance_index([1, 2, 3], [0, 1, 0], [0, 5, 1]) == 1.0


def test_concordance_index_rejects_bad_input():
    with pytest.raises(InputError, match="no comparable pair"):
        concordance_index([1, 2, 3], [0, 0, 0], [1, 2, 3])
    with pytest.raises(InputError, match="finite"):
        concordance_index([1, 2, 3], [1, 1, 0], [1, float("nan"), 3])
    with pytest.raises(InputError, match="length"):
        concordance_index([1, 2, 3], [1, 1], [1, 2, 3])
    with pytest.raises(InputError, match="0/1"):
        concordance_index([1, 2, 3], [1, 2, 0], [1, 2, 3])


# ----------------------------------------------------------------------------------------------------------------
# images and summaries
# ----------------------------------------------------------------------------------------------------------------
def test_evaluate_segmentation_agrees_with_array_functions_and_uses_zyx_spacing():
    spacing = (3.0, 1.0, 0.8)
    pred, gt = _label_pair(5)
    result = evaluate_segmentation(_image(pred, spacing), _image(gt, spacing), tolerance_mm=2.0, case_id="X-001")
    assert result["case_id"] == "X-001"
    assert result["spacing_zyx"] == pytest.approx(spacing)
    voxel = 3.0 * 1.0 * 0.8
    for name, label in (("GTVp", 1), ("GTVn", 2)):
        row = result[name]
        assert row["dice"] == pytest.approx(dice(pred, gt, label))
        assert row["hd95"] == pytest.approx(hd95(pred, gt, label, spacing))
        assert row["surface_dice"] == pytest.approx(surface_dice(pred, gt, label, spacing, 2.0))
        assert row["gt_voxels"] == np.count_nonzero(gt == label)
        assert row["pred_voxels"] == np.count_nonzero(pred == label)
        assert row["tp_voxels"] == np.count_nonzero((gt == label) & (pred == label))
        assert row["gt_mm3"] == pytest.approx(row["gt_voxels"] * voxel)
        assert row["pred_mm3"] == pytest.approx(row["pred_voxels"] * voxel)
        assert row["tp_mm3"] == pytest.approx(row["tp_voxels"] * voxel)
        counts = lesion_detection_counts(pred, gt, label)
        assert (row["lesion_tp"], row["lesion_fp"], row["lesion_fn"]) == (counts["tp"], counts["fp"], counts["fn"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = compute_hausdorff_distance(_one_hot(pred, 1), _one_hot(gt, 1), percentile=95, spacing=spacing)
    assert result["GTVp"]["hd95"] == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize(
    "change, word",
    [
        (lambda img: _image(np.zeros((6, 7, 8)), (1, 1, 1)), "size"),
        (lambda img: (img.SetSpacing((1.0, 1.0, 2.0)), img)[1], "spacing"),
        (lambda img: (img.SetOrigin((0.0, 0.5, 0.0)), img)[1], "origin"),
        (lambda img: (img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1)), img)[1], "direction"),
    ],
)
def test_evaluate_segmentation_rejects_a_different_grid(change, word):
    gt = _image(np.zeros((5, 6, 7)), (1, 1, 1))
    pred = change(_image(np.zeros((5, 6, 7)), (1, 1, 1)))
    with pytest.raises(InputError, match=f"case-7: prediction and ground truth differ in {word}"):
        evaluate_segmentation(pred, gt, case_id="case-7")


def test_evaluate_segmentation_tolerates_float32_geometry_noise_and_rejects_unknown_labels():
    gt_array = np.zeros((5, 6, 7), np.uint8)
    gt_array[2, 2:4, 2:5] = 1
    gt = _image(gt_array, (2, 1, 1))
    pred = _image(gt_array, (2, 1, 1), origin=(1e-6, 0.0, -1e-6))
    assert evaluate_segmentation(pred, gt)["GTVp"]["dice"] == 1.0
    bad = gt_array.copy()
    bad[0, 0, 0] = 3
    with pytest.raises(InputError, match=r"prediction holds values other than the labels \(0, 1, 2\): \[3\]"):
        evaluate_segmentation(_image(bad, (2, 1, 1)), gt)


def test_summarize_segmentation_follows_the_conventions():
    shape = (6, 8, 8)
    # case A (2 mm³ voxels): GTVp perfect; GTVn: one lesion found, half covered.
    a_gt = np.zeros(shape, np.uint8)
    a_gt[1:3, 1:4, 1:4] = 1  # 18 voxels
    a_gt[4:6, 5:7, 5:7] = 2  # 8 voxels
    a_pred = a_gt.copy()
    a_pred[5, 5:7, 5:7] = 0  # GTVn prediction: 4 voxels, IoU 0.5
    # case B (8 mm³ voxels): GTVp absent from the truth but predicted; GTVn missed.
    b_gt = np.zeros(shape, np.uint8)
    b_gt[0, 0:2, 0:2] = 2  # 4 voxels = 32 mm³
    b_pred = np.zeros(shape, np.uint8)
    b_pred[3:5, 3:5, 3:5] = 1  # 8 voxels = 64 mm³
    # case C: nothing anywhere.
    c = np.zeros(shape, np.uint8)
    per_case = [
        evaluate_segmentation(_image(a_pred, (2, 1, 1)), _image(a_gt, (2, 1, 1)), case_id="A"),
        evaluate_segmentation(_image(b_pred, (2, 2, 2)), _image(b_gt, (2, 2, 2)), case_id="B"),
        evaluate_segmentation(_image(c, (1, 1, 1)), _image(c, (1, 1, 1)), case_id="C"),
    ]
    assert math.isnan(per_case[2]["GTVp"]["dice"]) and math.isnan(per_case[2]["GTVp"]["hd95"])
    assert per_case[1]["GTVp"]["dice"] == 0.0 and per_case[1]["GTVp"]["hd95"] == math.inf

    summary = summarize_segmentation(per_case)
    assert summary["n_cases"] == 3
    p, n = summary["GTVp"], summary["GTVn"]
    assert p["dice_mean"] == pytest.approx(0.5)  # (1 + 0) / 2, case C excluded
    assert p["n_dice"] == 2
    assert p["dice_mean_gt_nonempty"] == pytest.approx(1.0)  # only case A has GTVp in the truth
    assert p["hd95_mean"] == 0.0 and p["n_hd95"] == 1 and p["hd95_n_inf"] == 1
    # DSCagg sums mm³: GTVp TP 18 voxels = 36 mm³, volumes A 72, B 0 + 64
    assert p["dsc_agg"] == pytest.approx(2 * 36 / (72 + 64))
    # GTVn: TP 4 voxels = 8 mm³, volumes A (8+4)*2, B 32+0 (counting voxels would give 2*4 / (12+4) = 0.5)
    assert n["dsc_agg"] == pytest.approx(2 * 8 / (24 + 32))
    # Which side of DSCagg is lost: GTVp over-segmented (B's false tumour), GTVn under-segmented (B's missed node).
    assert (p["precision_agg"], p["recall_agg"], p["volume_ratio"]) == pytest.approx((36 / 100, 1.0, 100 / 36))
    assert (n["precision_agg"], n["recall_agg"], n["volume_ratio"]) == pytest.approx((1.0, 8 / 48, 8 / 48))
    assert n["dice_mean"] == pytest.approx((2 * 4 / 12 + 0.0) / 2)
    assert (n["lesion_tp"], n["lesion_fp"], n["lesion_fn"]) == (1, 0, 1)
    assert n["f1_agg"] == pytest.approx(2 / 3)
    assert p["lesion_fp"] == 1  # the spurious GTVp blob of case B
    with pytest.raises(InputError, match="no cases"):
        summarize_segmentation([])
