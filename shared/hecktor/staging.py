"""T and N stage (AJCC/UICC 7th edition) of a head-and-neck case: parsing the training table's stages, measuring a
GTVp/GTVn mask in physical space, the rule-based stager and the learned one.

**Parsing** (:func:`parse_t_stage`, :func:`parse_n_stage`): the 2026 table writes ``T1``..``T4`` and ``N0``..``N3``;
sub-stages map to their stage (``T4a``/``T4b`` -> ``T4``, ``N2a``/``N2b``/``N2c`` -> ``N2``, ``N3b`` -> ``N3``),
``Tx``, ``Nx``, empty cells and anything unknown to ``None`` (missing). ``T0`` and ``Tis`` (no primary measured,
carcinoma in situ) are not stages the challenge scores and read as missing too.

**Measurements** (:func:`measure_staging`, all in physical millimetres, SimpleITK):

* the primary's greatest diameter: the Feret diameter of the GTVp label's largest connected component (the longest
  distance between two of its border voxel centres) plus the mean voxel spacing, since the centres of the two
  extreme voxels lie half a voxel inside the lesion's surface on each side; a stray island of a predicted mask is not
  the primary (the containers' Task 1 postprocessing removes it too);
* the nodes: connected components of GTVn (26-connectivity, as :func:`hecktor.biomarkers.compute_biomarkers`), those
  under :data:`~hecktor.biomarkers.MIN_NODE_ML` ignored; each node's greatest diameter as the primary's;
* the bone against the primary: the volume of CT voxels >= 300 HU within 2 mm outside it (a primary growing into the
  mandible, T4a, has bone against it): the rules' T4 (below), and an input of the learned stager
  (:func:`staging_features`);
* each node's side: the patient's left-right axis is physical x in LPS (the image direction is honoured because
  SimpleITK's centroids are physical points). A node is ipsilateral when it lies on the same side of the body's
  midline as the primary's centroid, contralateral otherwise. The midline is the centroid of the body in the CT
  (voxels above :data:`~hecktor.localization.BODY_HU`); without a CT, the primary's own centroid (every node then
  counts as ipsilateral when all nodes lie on one side of it, else the case has bilateral nodes).

**Rules** (:func:`stage_by_rules`), AJCC 7th for the oropharynx as the issue states them: T by the primary's
greatest diameter (<= 20 mm T1, <= 40 mm T2, > 40 mm T3; no primary found: T1, the smallest), and T4 when the primary
lies against at least :data:`T4_BONE_CONTACT_ML` of bone: T4 is invasion of the neighbourhood, which a mask shows
only where the neighbour is bone (the mandible: T4a); N: no node N0, any node > 60 mm N3, one ipsilateral node
<= 30 mm N1, else (several, a contralateral or bilateral node, or one node of 30-60 mm) N2.

**Fitted cut-offs** (:func:`fit_cutoffs`, :class:`StagingCutoffs`): the same rules with their cut-offs fitted to a
segmenter's out-of-fold masks (a factor on the diameter cuts, a bone cut), for masks that draw lesions smaller or
larger than the clinician saw them.

**Learned stager** (:class:`StageClassifier`): a multinomial logistic regression (scikit-learn) per fold, on
:func:`staging_features` of the measurements (after the fold's features, the encoded record and the scaled
biomarkers, with ``--stager-inputs all``); it is stored as JSON (coefficients, intercepts, classes, feature scaling,
the version of its features), never pickled. Which stager answers each stage is chosen by cross-validation at
training time (:mod:`hecktor.training.hecktor2026`) and kept in the bundle.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from hecktor.biomarkers import MIN_NODE_ML
from hecktor.errors import BundleError, InputError
from hecktor.labels import GTVN, GTVP
from hecktor.localization import BODY_HU

__all__ = ["AJCC_CUTOFFS", "T_STAGES", "N_STAGES", "STAGERS", "STAGING_FEATURES", "FEATURE_VERSIONS",
           "T4_BONE_CONTACT_ML", "StagingCutoffs", "StagingMeasurements", "StageClassifier", "fit_cutoffs",
           "measure_staging", "n_stage_by_rules", "parse_n_stage", "parse_t_stage", "stage_by_rules",
           "staging_features", "t_stage_by_rules"]

T_STAGES = ("T1", "T2", "T3", "T4")
N_STAGES = ("N0", "N1", "N2", "N3")
STAGERS = ("rules", "fitted", "learned")
"""The stagers a bundle can choose between, per stage: the rules with AJCC's cut-offs, the rules with cut-offs
fitted to the training patients' out-of-fold masks (:func:`fit_cutoffs`), the learned classifier."""

T1_MAX_MM, T2_MAX_MM = 20.0, 40.0
BONE_HU, CONTACT_MM = 300.0, 2.0
"""Bone is CT >= 300 HU; the bone contact is measured within 2 mm outside the primary."""
N1_MAX_MM, N2_MAX_MM = 30.0, 60.0
T4_BONE_CONTACT_ML = 1.0
"""The rules answer T4 for a primary with at least this much bone against it (:func:`measure_staging`). Chosen on the
synthetic 300-case benchmark cohort (seed 1; docs/how-to/hecktor2026.md): the rules' T balanced accuracy without a
T4 rule / from 0.5, 1.0, 1.5, 2.0 ml was 0.584 / 0.826, 0.789, 0.775, 0.712 on its out-of-fold masks and 0.575 /
0.787, 0.810, 0.821, 0.780 on its true masks (predicted masks reach less far into the bone); 1.0 ml is within 0.04 of
the best on both. The demo's cohort (seed 0) is the check on other patients. On real CTs a primary can touch bone
without invading it: unvalidated there, which is one reason the bundle chooses between these rules and the learned
stager by cross-validation."""

_T_PATTERN = re.compile(r"^(?:[cpy]{0,2})T([1-4])[a-c]?$", re.IGNORECASE)
_N_PATTERN = re.compile(r"^(?:[cpy]{0,2})N([0-3])[a-c]?$", re.IGNORECASE)


def _parse_stage(value: Any, pattern: re.Pattern, prefix: str) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # a bare 2 in a spreadsheet cell
        if not math.isfinite(value) or value != int(value):
            return None
        value = f"{prefix}{int(value)}"
    match = pattern.match(str(value).strip().replace(" ", ""))
    return f"{prefix}{match.group(1)}" if match else None


def parse_t_stage(value: Any) -> str | None:
    """``"T1"``..``"T4"`` of a table cell (``T4a``/``T4b`` -> ``T4``, ``cT2`` -> ``T2``); ``Tx``, ``T0``, ``Tis``,
    empty and unknown values -> ``None``."""
    stage = _parse_stage(value, _T_PATTERN, "T")
    return stage if stage in T_STAGES else None


def parse_n_stage(value: Any) -> str | None:
    """``"N0"``..``"N3"`` of a table cell (``N2a``/``N2b``/``N2c`` -> ``N2``); ``Nx``, empty and unknown -> ``None``."""
    stage = _parse_stage(value, _N_PATTERN, "N")
    return stage if stage in N_STAGES else None


# ---------------------------------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class StagingMeasurements:
    """What the stagers measure on a GTVp/GTVn mask (physical millimetres).

    Attributes:
        primary_diameter_mm: the primary's greatest diameter (0 without a primary).
        node_diameters_mm: each node's greatest diameter, largest first.
        node_sides: each node's side relative to the primary, in the same order: ``"ipsilateral"`` or
            ``"contralateral"``.
        bone_contact_ml: bone against the primary (:func:`measure_staging`), a sign of invasion: the rules' T4
            from :data:`T4_BONE_CONTACT_ML` on.
    """

    primary_diameter_mm: float
    node_diameters_mm: tuple[float, ...] = ()
    node_sides: tuple[str, ...] = ()
    bone_contact_ml: float = 0.0

    @property
    def n_nodes(self) -> int:
        return len(self.node_diameters_mm)

    @property
    def largest_node_mm(self) -> float:
        return max(self.node_diameters_mm, default=0.0)

    @property
    def contralateral_nodes(self) -> int:
        return sum(side == "contralateral" for side in self.node_sides)

    def to_dict(self) -> dict[str, Any]:
        return {"primary_diameter_mm": self.primary_diameter_mm, "node_diameters_mm": list(self.node_diameters_mm),
                "node_sides": list(self.node_sides), "bone_contact_ml": self.bone_contact_ml}


def _greatest_diameters(binary: sitk.Image) -> list[tuple[float, float, np.ndarray]]:
    """(volume ml, greatest diameter mm, physical centroid) of each 26-connected component of a binary image."""
    components = sitk.ConnectedComponent(binary, True)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.ComputeFeretDiameterOn()
    shape.Execute(components)
    voxel_mm = float(np.mean(binary.GetSpacing()))
    return [(shape.GetPhysicalSize(c) / 1000.0, shape.GetFeretDiameter(c) + voxel_mm, np.asarray(shape.GetCentroid(c)))
            for c in shape.GetLabels()]


def _largest_component(binary: sitk.Image) -> sitk.Image:
    """The largest 26-connected component of a binary image (UInt8; empty stays empty)."""
    components = sitk.RelabelComponent(sitk.ConnectedComponent(binary, True), sortByObjectSize=True)
    return sitk.Cast(components == 1, sitk.sitkUInt8)


def body_midline_x(ct: sitk.Image) -> float | None:
    """The physical x (LPS: the patient's right-to-left axis) of the centroid of the body in ``ct`` (voxels above
    :data:`~hecktor.localization.BODY_HU`), or ``None`` when no voxel is."""
    body = sitk.Cast(sitk.Cast(ct, sitk.sitkFloat32) > BODY_HU, sitk.sitkUInt8)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(body)
    return float(shape.GetCentroid(1)[0]) if shape.HasLabel(1) else None


def measure_staging(mask: sitk.Image | None, ct: sitk.Image | None = None, *, midline_x: float | None = None,
                    min_node_ml: float = MIN_NODE_ML) -> StagingMeasurements:
    """The staging measurements of a label map (0 background, 1 GTVp, 2 GTVn) in physical space.

    Args:
        mask: the label map on any grid; ``None`` measures nothing (no primary, no node).
        ct: the case's CT, to find the body's midline (:func:`body_midline_x`; not when ``midline_x`` is given) and,
            on the mask's grid, the bone against the primary.
        midline_x: the physical x of the patient's midline; without it and without a CT, the primary's centroid.
        min_node_ml: GTVn components smaller than this are not nodes.
    """
    if mask is None:
        return StagingMeasurements(0.0)
    if mask.GetDimension() == 2 and not sitk.GetArrayViewFromImage(mask).any():
        return StagingMeasurements(0.0)  # the blank mask of a flat 2-D placeholder (the platform's sanity check)
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the segmentation must be a 3-D label map, got a {mask.GetDimension()}-D image with "
                         f"{mask.GetNumberOfComponentsPerPixel()} component(s)")
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    primary_mm, primary_x, bone_ml = 0.0, None, 0.0
    # The primary is one lesion: its largest connected component. A stray island of a predicted GTVp would otherwise
    # stretch the greatest diameter across the gap (on the demo's 48 out-of-fold masks the rules' T balanced accuracy
    # was 0.568 measuring the whole label, 0.611 its largest component), and the containers' Task 1 postprocessing
    # keeps that component only, so training and inference measure the same thing.
    primary = _largest_component(mask == GTVP)
    whole = sitk.LabelShapeStatisticsImageFilter()
    whole.ComputeFeretDiameterOn()
    whole.Execute(primary)
    if whole.HasLabel(1):
        primary_mm = whole.GetFeretDiameter(1) + float(np.mean(mask.GetSpacing()))
        primary_x = float(whole.GetCentroid(1)[0])
        bone_ml = _bone_contact_ml(primary, ct)
    nodes = [(d, c) for volume, d, c in _greatest_diameters(mask == GTVN) if volume >= min_node_ml]
    nodes.sort(key=lambda node: -node[0])
    if midline_x is None and ct is not None and nodes and primary_x is not None:
        midline_x = body_midline_x(ct)
    sides = tuple(_node_side(c[0], primary_x, midline_x, [n[1][0] for n in nodes]) for _, c in nodes)
    return StagingMeasurements(float(primary_mm), tuple(float(d) for d, _ in nodes), sides, bone_ml)


def _bone_contact_ml(primary: sitk.Image, ct: sitk.Image | None) -> float:
    """Volume (ml) of bone (CT >= :data:`BONE_HU`) within :data:`CONTACT_MM` outside the primary: a primary that
    grows into the mandible (T4a) has bone against it. 0 without a CT on the mask's grid."""
    if ct is None or ct.GetSize() != primary.GetSize() or not np.allclose(ct.GetSpacing(), primary.GetSpacing()) \
            or not np.allclose(ct.GetOrigin(), primary.GetOrigin(), atol=1e-3):
        return 0.0
    radius = [max(1, int(math.ceil(CONTACT_MM / s))) for s in primary.GetSpacing()]
    shell = sitk.And(sitk.BinaryDilate(primary, radius), sitk.Not(primary))
    bone = sitk.Cast(sitk.Cast(ct, sitk.sitkFloat32) >= BONE_HU, sitk.sitkUInt8)
    voxels = int(sitk.GetArrayFromImage(sitk.And(shell, bone)).sum())
    return voxels * float(np.prod(primary.GetSpacing())) / 1000.0


def _node_side(node_x: float, primary_x: float | None, midline_x: float | None, all_x: Sequence[float]) -> str:
    """``ipsilateral`` when the node lies on the primary's side of the midline. Without a primary, or without a
    midline, the nodes' own majority side stands for the primary's (so a single side is ipsilateral)."""
    if primary_x is None or midline_x is None:
        reference = primary_x if primary_x is not None else float(np.median(all_x))
        signs = [np.sign(x - reference) for x in all_x]
        majority = 1.0 if sum(signs) >= 0 else -1.0
        return "ipsilateral" if np.sign(node_x - reference) in (0.0, majority) else "contralateral"
    primary_side = np.sign(primary_x - midline_x)
    if primary_side == 0:  # a primary exactly on the midline: every node is on its side
        return "ipsilateral"
    return "ipsilateral" if np.sign(node_x - midline_x) == primary_side else "contralateral"


# --------------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class StagingCutoffs:
    """The rules' cut-offs: AJCC 7th's by default (:data:`AJCC_CUTOFFS`), or fitted to a segmenter's masks
    (:func:`fit_cutoffs`, the ``fitted`` stager).

    Attributes:
        t1_max_mm, t2_max_mm: the primary's greatest diameter up to which it is T1, T2 (above: T3).
        t4_bone_contact_ml: bone against the primary from which it is T4.
        n1_max_mm, n2_max_mm: the largest node's diameter up to which one ipsilateral node is N1, and above which
            any node makes N3.
    """

    t1_max_mm: float = T1_MAX_MM
    t2_max_mm: float = T2_MAX_MM
    t4_bone_contact_ml: float = T4_BONE_CONTACT_ML
    n1_max_mm: float = N1_MAX_MM
    n2_max_mm: float = N2_MAX_MM

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "staging cut-offs") -> "StagingCutoffs":
        """Rebuild from :meth:`to_dict`; anything else is a :class:`BundleError` naming ``source``."""
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, Mapping) or set(data) != set(names):
            raise BundleError(f"{source} must give exactly {', '.join(names)}; {_FIX}")
        values = {}
        for name in names:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                    value <= 0:
                raise BundleError(f"{source}: {name} must be a positive number, got {value!r}; {_FIX}")
            values[name] = float(value)
        if not (values["t1_max_mm"] < values["t2_max_mm"] and values["n1_max_mm"] < values["n2_max_mm"]):
            raise BundleError(f"{source}: the T1 cut must lie below the T2 cut and the N1 cut below the N2 cut; {_FIX}")
        return cls(**values)


AJCC_CUTOFFS = StagingCutoffs()
"""The rules as AJCC 7th writes them (and :data:`T4_BONE_CONTACT_ML`): the ``rules`` stager."""


def t_stage_by_rules(measurements: StagingMeasurements, cutoffs: StagingCutoffs = AJCC_CUTOFFS) -> str:
    """T4 with at least ``t4_bone_contact_ml`` (:data:`T4_BONE_CONTACT_ML`) of bone against the primary, else T1
    (<= 20 mm), T2 (<= 40 mm) or T3 (> 40 mm) by the primary's greatest diameter (AJCC's cut-offs by default)."""
    if measurements.bone_contact_ml >= cutoffs.t4_bone_contact_ml:
        return "T4"
    diameter = measurements.primary_diameter_mm
    return "T1" if diameter <= cutoffs.t1_max_mm else "T2" if diameter <= cutoffs.t2_max_mm else "T3"


def n_stage_by_rules(measurements: StagingMeasurements, cutoffs: StagingCutoffs = AJCC_CUTOFFS) -> str:
    """N0 without nodes; N3 with any node > 60 mm; N1 for one ipsilateral node <= 30 mm; N2 otherwise (AJCC's
    cut-offs by default)."""
    if measurements.n_nodes == 0:
        return "N0"
    if measurements.largest_node_mm > cutoffs.n2_max_mm:
        return "N3"
    if measurements.n_nodes == 1 and measurements.contralateral_nodes == 0 and \
            measurements.largest_node_mm <= cutoffs.n1_max_mm:
        return "N1"
    return "N2"


def stage_by_rules(measurements: StagingMeasurements, cutoffs: StagingCutoffs = AJCC_CUTOFFS) -> tuple[str, str]:
    """(T stage, N stage) of the rules (AJCC's cut-offs by default)."""
    return t_stage_by_rules(measurements, cutoffs), n_stage_by_rules(measurements, cutoffs)


DIAMETER_SCALES = tuple(round(0.7 + 0.025 * i, 3) for i in range(25))
"""The factors (0.7 .. 1.3) :func:`fit_cutoffs` tries on AJCC's diameter cut-offs (both T cuts together, both N cuts
together: a segmenter that draws primaries or nodes too small or too large does so at every size)."""
BONE_CONTACT_CUTS_ML = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""The T4 bone-contact cuts :func:`fit_cutoffs` tries."""


def _balanced_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """The challenge's balanced accuracy: recall averaged over the stages present in ``truth``. (scikit-learn's
    ``balanced_accuracy_score`` gives the same number, but warns for every predicted stage absent from the truth,
    which a search over cut-offs meets hundreds of times.)"""
    truth_array, predicted_array = np.asarray(truth), np.asarray(predicted)
    return float(np.mean([np.mean(predicted_array[truth_array == s] == s) for s in np.unique(truth_array)]))


def fit_cutoffs(measurements: Sequence[StagingMeasurements], t_stages: Sequence[str | None],
                n_stages: Sequence[str | None]) -> StagingCutoffs:
    """The rules' cut-offs that stage these patients' masks best: the ``fitted`` stager.

    A segmenter's masks are not the clinician's: the demo's drew primaries at 0.84 of their true volume, so some T3
    primaries measured as T2 and a T4 primary touched less bone. The rules keep their form; only their cut-offs move:
    one factor of :data:`DIAMETER_SCALES` on both T diameter cuts with one bone-contact cut of
    :data:`BONE_CONTACT_CUTS_ML` for T, one factor on both node cuts for N, each the highest balanced accuracy on
    the patients of known stage (``None``: unknown). Ties go to the cut-offs closest to AJCC's, and a stage no
    patient has is AJCC's. Fitted on a fold's training patients' out-of-fold masks, scored on its validation
    patients' (:mod:`hecktor.training.hecktor2026`).
    """
    def best(candidates, stage_of, stages):
        known = [(m, s) for m, s in zip(measurements, stages) if s is not None]
        if not known:
            return None
        truth = [s for _, s in known]
        scored = [(_balanced_accuracy(truth, [stage_of(m, c) for m, _ in known]), -distance, c)
                  for c, distance in candidates]
        return max(scored, key=lambda item: item[:2])[2]

    t_candidates = [((scale, cut), abs(scale - 1.0) + abs(math.log(cut / T4_BONE_CONTACT_ML)) / 10)
                    for scale in DIAMETER_SCALES for cut in BONE_CONTACT_CUTS_ML]
    t_best = best(t_candidates, lambda m, c: t_stage_by_rules(m, StagingCutoffs(
        T1_MAX_MM * c[0], T2_MAX_MM * c[0], c[1])), t_stages) or (1.0, T4_BONE_CONTACT_ML)
    n_candidates = [(scale, abs(scale - 1.0)) for scale in DIAMETER_SCALES]
    n_best = best(n_candidates, lambda m, c: n_stage_by_rules(m, StagingCutoffs(
        n1_max_mm=N1_MAX_MM * c, n2_max_mm=N2_MAX_MM * c)), n_stages) or 1.0
    return StagingCutoffs(T1_MAX_MM * t_best[0], T2_MAX_MM * t_best[0], t_best[1], N1_MAX_MM * n_best,
                          N2_MAX_MM * n_best)


STAGING_FEATURES = ("primary_diameter_mm", "bone_contact_ml", "n_nodes", "largest_node_mm", "contralateral_nodes",
                    *(f"rules_{stage}" for stage in T_STAGES + N_STAGES))
"""The learned stager's inputs, in :func:`staging_features`'s order: what the rules measure, and the rules' answers."""
STAGING_FEATURES_V1 = ("primary_diameter_mm", "n_nodes", "largest_node_mm", "contralateral_nodes", "rule_t", "rule_n")
"""The inputs of the stage classifiers of bundles exported before 2026-12-07 (features version 1), kept so those
bundles stage as they did."""
FEATURE_VERSIONS = {1: STAGING_FEATURES_V1, 2: STAGING_FEATURES}
"""The learned stager's inputs by features version (:attr:`StageClassifier.features_version`)."""


def staging_features(measurements: StagingMeasurements, version: int = 2) -> np.ndarray:
    """The measurements as features ``(len(FEATURE_VERSIONS[version]),)``: diameters in centimetres,
    ``log(1 + ml)`` of the bone against the primary, node counts, and AJCC's rules' T and N stage one-hot, so the
    learned stager starts from the rules and learns where they go wrong.

    The bone is an input of its own because it alone makes T4. Version 1 (the bundles before it) had no bone and the
    rules' answers as ordinal numbers (T1 = 1 .. T4 = 4, N0 = 0 .. N3 = 3). With those the learned T stager stayed
    below the rules on the 300-case benchmark: 0.746, 0.742 and 0.728 balanced accuracy over three fold seeds against
    the rules' 0.780; with these 0.791, 0.801, 0.792 (``docs/how-to/hecktor2026.md``, "Measured").
    """
    t_rule, n_rule = stage_by_rules(measurements)
    if version == 1:
        return np.asarray([measurements.primary_diameter_mm / 10.0, measurements.n_nodes,
                           measurements.largest_node_mm / 10.0, measurements.contralateral_nodes,
                           T_STAGES.index(t_rule) + 1, N_STAGES.index(n_rule)], dtype=np.float64)
    if version != 2:
        raise ValueError(f"staging features version must be one of {sorted(FEATURE_VERSIONS)}, got {version!r}")
    rules = [float(t_rule == stage) for stage in T_STAGES] + [float(n_rule == stage) for stage in N_STAGES]
    return np.asarray([measurements.primary_diameter_mm / 10.0, math.log1p(measurements.bone_contact_ml),
                       measurements.n_nodes, measurements.largest_node_mm / 10.0, measurements.contralateral_nodes,
                       *rules], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ learned stager
_CLASSIFIER_FORMAT = "hecktor-stage-classifier"
_FIX = "re-export the bundle with training/train_hecktor2026.py"


@dataclass(frozen=True)
class StageClassifier:
    """A fitted multinomial logistic regression over standardised features: P(stage | features).

    Attributes:
        classes: the stages it can answer (those seen in training, in :data:`T_STAGES`/:data:`N_STAGES` order).
        coef: ``(n_classes, n_features)``; with two classes scikit-learn's single row is stored as ``(-w, w)``.
        intercept: ``(n_classes,)``.
        mean, scale: the training features' mean and standard deviation (constant features: scale 1).
        features_version: which :func:`staging_features` it takes (:data:`FEATURE_VERSIONS`): 2, or 1 in bundles
            exported before 2026-12-07 (their JSON has no ``features_version``).
    """

    classes: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    features_version: int = 2

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @classmethod
    def fit(cls, features: np.ndarray, stages: Sequence[str], *, c: float = 1.0,
            class_weight: str | None = "balanced") -> "StageClassifier":
        """Fit on ``(n, p)`` features and their stages (scikit-learn's ``LogisticRegression``, lbfgs, L2 with
        inverse strength ``c``; ``balanced`` class weights since balanced accuracy is the challenge's metric). A
        single stage seen in training gives a classifier that always answers it."""
        from sklearn.linear_model import LogisticRegression  # training-time only

        features = np.asarray(features, dtype=np.float64)
        mean, scale = features.mean(axis=0), features.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        order = T_STAGES + N_STAGES
        classes = tuple(sorted(set(stages), key=order.index))
        if len(classes) == 1:
            return cls(classes, np.zeros((1, features.shape[1])), np.zeros(1), mean, scale)
        model = LogisticRegression(C=c, class_weight=class_weight, max_iter=2000)
        model.fit((features - mean) / scale, [classes.index(s) for s in stages])
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:
            coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.asarray([-intercept[0] / 2, intercept[0] / 2])
        return cls(classes, coef, intercept, mean, scale)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities of ``(n, n_features)`` features."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"the stage classifier takes (n, {self.n_features}) features, got {features.shape}")
        logits = ((features - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def probabilities_over(self, features: np.ndarray, stages: Sequence[str]) -> np.ndarray:
        """Probabilities ``(n, len(stages))`` over every stage of ``stages`` (0 for those unseen in training)."""
        out = np.zeros((len(features), len(stages)))
        out[:, [stages.index(s) for s in self.classes]] = self.probabilities(features)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": _CLASSIFIER_FORMAT, "format_version": 1, "classes": list(self.classes),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "features_version": self.features_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "stage classifier") -> "StageClassifier":
        """Rebuild from :meth:`to_dict`; anything malformed is a :class:`BundleError` naming ``source``."""
        if not isinstance(data, Mapping) or data.get("format") != _CLASSIFIER_FORMAT or \
                data.get("format_version") != 1:
            raise BundleError(f"{source} is not a saved stage classifier ({_CLASSIFIER_FORMAT} v1); {_FIX}")
        version = data.get("features_version", 1)  # absent: exported before the version was written
        if isinstance(version, bool) or version not in FEATURE_VERSIONS:
            raise BundleError(f"{source}: features_version must be one of {sorted(FEATURE_VERSIONS)}, got "
                              f"{version!r}; {_FIX}")
        try:
            classes = tuple(str(c) for c in data["classes"])
            coef = np.asarray(data["coef"], dtype=np.float64)
            intercept = np.asarray(data["intercept"], dtype=np.float64).ravel()
            mean = np.asarray(data["mean"], dtype=np.float64).ravel()
            scale = np.asarray(data["scale"], dtype=np.float64).ravel()
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source} is malformed ({type(error).__name__}: {error}); {_FIX}") from None
        known = T_STAGES if classes and classes[0].startswith("T") else N_STAGES
        if not classes or any(c not in known for c in classes) or coef.ndim != 2 or \
                coef.shape[0] != len(classes) or intercept.shape != (len(classes),) or \
                mean.shape != (coef.shape[1],) or scale.shape != mean.shape or np.any(scale <= 0) or \
                not all(np.all(np.isfinite(a)) for a in (coef, intercept, mean, scale)):
            raise BundleError(f"{source}: classes, coefficients, intercepts and scaling do not fit together; {_FIX}")
        return cls(classes, coef, intercept, mean, scale, int(version))
