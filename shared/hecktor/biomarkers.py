"""What Task 2 takes from a Task 1 segmentation: PET biomarkers in physical units, their scaling for a survival
model, and the tumour-centred network input with the mask as a third channel.

Biomarkers (:func:`compute_biomarkers`) of a label map on the CT's grid (0 background, 1 GTVp, 2 GTVn) and the PET
(SUV), per label ``gtvp_*`` / ``gtvn_*``:

* ``volume_ml``: the label's voxel count times the voxel volume (``LabelShapeStatisticsImageFilter``'s physical
  size);
* ``suv_max``, ``suv_mean``: over the label's voxels (``LabelIntensityStatisticsImageFilter``);
* ``suv_peak``: the mean SUV of the voxels whose centres lie in a 1 ml sphere (radius 6.2 mm) centred on the label's
  hottest voxel, whatever their label (the usual definition, as in PERCIST, with the sphere at the hottest voxel
  rather than searched for);
* ``tlg``: total lesion glycolysis, ``suv_mean * volume_ml``;

and, over the 26-connected components of GTVn (the lesions of the leaderboard's F1agg) of at least
:data:`MIN_NODE_ML`: ``n_nodes``, ``largest_node_ml`` and ``node_distance_mm``, the distance between the primary's
centroid and the farthest node's centroid. The total nodal volume is ``gtvn_volume_ml``.

**Grids.** The PET is resampled onto the mask's grid (linear interpolation), never the mask onto the PET's: the mask
is what the segmentation predicted on the CT's grid, finer than the PET's (about 1 x 1 x 2 mm against 4 mm), and
resampling it would change its volume and could erase a small node (a 0.5 ml node is 8 voxels of a 4 mm PET); the
SUV statistics then sample the PET at the mask's voxel centres, which slightly smooths SUVmax (linear interpolation
never exceeds the PET voxels' maximum). Only the bounding box of the tumour, widened by the SUVpeak sphere, is
resampled, so a 512 x 512 x 200 CT costs no more than a small one.

**No tumour.** A missing segmentation, or one without a primary tumour, gives the documented *no-tumour* values
(:data:`NO_TUMOUR_VALUE`, 0 for every volume, SUV, TLG, count and distance) for what is absent, and a warning; the
biomarkers, and so the risk, stay finite. Absent nodes (N0) are normal and give 0 without a warning.

**Scaling** (:class:`BiomarkerScaler`): volumes and TLG are heavy-tailed (a 60 ml primary is 12 times a 5 ml one), so
they enter the survival model as ``log(1 + value)`` (ml, and SUV x ml); SUVs, the node count and the distance stay
linear. Every feature is then z-scored with the fitting set's mean and standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from hecktor.errors import BundleError, InputError
from hecktor.geometry import Grid, resample_to_grid
from hecktor.labels import GTVN, GTVP
from hecktor.localization import body_uptake
from hecktor.plan import BoxPlan
from hecktor.preprocessing import normalize_ct, normalize_pet


__all__ = [
    "BIOMARKER_NAMES",
    "LOG_FEATURES",
    "MIN_NODE_ML",
    "NO_TUMOUR_VALUE",
    "SUV_PEAK_ML",
    "Biomarkers",
    "BiomarkerScaler",
    "TumourCrop",
    "compute_biomarkers",
    "no_tumour_biomarkers",
    "tumour_centre",
    "tumour_crop_input",
]

SUV_PEAK_ML = 1.0
"""Volume of the SUVpeak sphere (ml)."""

MIN_NODE_ML = 0.1
"""GTVn components smaller than this (ml) are not counted as nodes (a few stray voxels of a predicted mask); their
voxels still count in the GTVn label's volume and SUV statistics."""

NO_TUMOUR_VALUE = 0.0
"""The value of every biomarker of an absent lesion: no volume, no measured uptake, no node, no distance."""

LABEL_FEATURES = ("volume_ml", "suv_max", "suv_mean", "suv_peak", "tlg")
BIOMARKER_NAMES: tuple[str, ...] = (
    *(f"gtvp_{name}" for name in LABEL_FEATURES),
    *(f"gtvn_{name}" for name in LABEL_FEATURES),
    "n_nodes",
    "largest_node_ml",
    "node_distance_mm",
)
"""Every biomarker, in the order of :meth:`Biomarkers.vector` (the survival model's feature order)."""

LOG_FEATURES: tuple[str, ...] = ("gtvp_volume_ml", "gtvp_tlg", "gtvn_volume_ml", "gtvn_tlg", "largest_node_ml")
"""Heavy-tailed biomarkers that :class:`BiomarkerScaler` takes as ``log(1 + value)``."""


@dataclass(frozen=True)
class Biomarkers:
    """The biomarkers of one case.

    Attributes:
        values: every name of :data:`BIOMARKER_NAMES` -> a finite float.
        tumour_found: whether the segmentation held a primary tumour (GTVp).
        warnings: what was assumed (no segmentation, no primary), one line each.
    """

    values: dict[str, float]
    tumour_found: bool
    warnings: tuple[str, ...] = ()

    def vector(self, names: Sequence[str] = BIOMARKER_NAMES) -> np.ndarray:
        """The values of ``names`` as a float64 vector."""
        return np.asarray([self.values[name] for name in names], dtype=np.float64)


SUV_REFERENCES = ("absolute", "body")
"""What the SUV biomarkers are measured against: ``absolute`` (the PET's SUV as it is) or ``body`` (the PET divided by
the body's median uptake, :func:`body_relative_pet`)."""


def body_relative_pet(pet: sitk.Image, ct: sitk.Image | None) -> sitk.Image:
    """The PET divided by the body's median uptake (:func:`~hecktor.localization.body_uptake`), so that the body
    reads 1: SUVmax, SUVmean, SUVpeak and TLG measured on it are ratios to the patient's own background, the same
    whatever the PET's unit (SUV, Bq/ml, a wrong weight or dose), as a tumour-to-background ratio is. A PET whose
    body uptake cannot be measured is returned as it is."""
    level = body_uptake(pet, ct)
    return sitk.Cast(pet, sitk.sitkFloat32) / level if level > 0 else pet


def no_tumour_biomarkers(reason: str) -> Biomarkers:
    """Every biomarker at its no-tumour value (:data:`NO_TUMOUR_VALUE`), with ``reason`` as the warning."""
    warning = f"{reason}: the biomarkers take their no-tumour value ({NO_TUMOUR_VALUE:g})"
    return Biomarkers({name: NO_TUMOUR_VALUE for name in BIOMARKER_NAMES}, False, (warning,))


def _peak_radius_mm(peak_ml: float) -> float:
    return (3.0 * peak_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def _foreground_box(mask: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]] | None:
    """Index box (start, size) of the mask's non-zero voxels widened by ``margin_mm``, clipped to the image."""
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not shape.HasLabel(1):
        return None
    box = shape.GetBoundingBox(1)  # (x, y, z start, x, y, z size)
    margin = [int(math.ceil(margin_mm / s)) + 1 for s in mask.GetSpacing()]
    start = [max(0, box[a] - margin[a]) for a in range(3)]
    stop = [min(mask.GetSize()[a], box[a] + box[a + 3] + margin[a]) for a in range(3)]
    return start, [stop[a] - start[a] for a in range(3)]


def _suv_peak(pet: np.ndarray, grid: Grid, label_mask: np.ndarray, radius_mm: float) -> float:
    """SUVpeak of one label: the mean of ``pet`` (z, y, x) over the voxels whose centres lie within ``radius_mm`` of
    the label's hottest voxel. Voxels tied at the maximum (a flat-topped lesion, a saturated PET) are all tried and
    the highest mean is kept, so that the first tied voxel in raster order, often on the rim, is not chosen by
    accident; outside the image nothing is averaged."""
    values = np.where(label_mask, pet, -np.inf)
    top = float(values.max())
    candidates = np.argwhere(values >= top - 1e-6 * max(1.0, abs(top)))[:_MAX_PEAK_CANDIDATES]  # (m, 3) z, y, x
    spacing_zyx = np.asarray(grid.spacing_xyz[::-1])
    reach = np.ceil(radius_mm / spacing_zyx).astype(int)
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), axis=-1).reshape(-1, 3)
    # Physical length of each index offset (direction and spacing), (z, y, x) offsets turned into (x, y, z).
    physical = (offsets[:, ::-1] * np.asarray(grid.spacing_xyz)) @ grid.direction_matrix.T
    offsets = offsets[np.linalg.norm(physical, axis=1) <= radius_mm + 1e-6]
    padded = np.pad(pet.astype(np.float64), [(r, r) for r in reach], constant_values=np.nan)
    index = candidates[:, None, :] + offsets[None, :, :] + reach
    means = np.nanmean(padded[index[..., 0], index[..., 1], index[..., 2]], axis=1)
    return float(means.max())


_MAX_PEAK_CANDIDATES = 20000  # tied hottest voxels tried for SUVpeak (bounds the work on a saturated PET)


def compute_biomarkers(
    mask: sitk.Image | None,
    pet: sitk.Image,
    *,
    min_node_ml: float = MIN_NODE_ML,
    peak_ml: float = SUV_PEAK_ML,
) -> Biomarkers:
    """PET biomarkers of a GTVp/GTVn label map (see the module docstring for the definitions).

    Args:
        mask: label map (0 background, 1 GTVp, 2 GTVn) on the CT's grid, e.g. :meth:`Segmenter.predict
            <hecktor.segment.Segmenter.predict>`'s output; ``None`` (no segmentation) gives the no-tumour values.
        pet: PET in SUV on its own grid (any spacing, origin, direction); resampled onto the mask's grid over the
            tumour's bounding box. Non-finite SUVs read as 0.
        min_node_ml: GTVn components smaller than this are not counted as nodes.
        peak_ml: volume of the SUVpeak sphere.

    Returns:
        the biomarkers; absent lesions take :data:`NO_TUMOUR_VALUE`, with a warning when the primary is absent.

    Raises:
        InputError: a mask that is not a 3-D scalar image.
    """
    if mask is None:
        return no_tumour_biomarkers("no segmentation")
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the segmentation must be a 3-D label map, got a {mask.GetDimension()}-D image with "
                         f"{mask.GetNumberOfComponentsPerPixel()} component(s)")
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    radius = _peak_radius_mm(peak_ml)
    box = _foreground_box(mask, radius)
    if box is None:
        return no_tumour_biomarkers("no tumour in the segmentation (no GTVp or GTVn voxel)")
    mask = sitk.RegionOfInterest(mask, box[1], box[0])
    grid = Grid.from_image(mask)
    pet_on_mask = sitk.GetArrayFromImage(resample_to_grid(pet, grid, "linear", 0.0))
    pet_on_mask = np.nan_to_num(pet_on_mask, nan=0.0, posinf=0.0, neginf=0.0)
    pet_image = grid.apply_to(sitk.GetImageFromArray(pet_on_mask))
    labels = sitk.GetArrayViewFromImage(mask)

    values = {name: NO_TUMOUR_VALUE for name in BIOMARKER_NAMES}
    intensity = sitk.LabelIntensityStatisticsImageFilter()
    intensity.Execute(mask, pet_image)
    for label, prefix in ((GTVP, "gtvp"), (GTVN, "gtvn")):
        if not intensity.HasLabel(label):
            continue
        volume_ml = intensity.GetPhysicalSize(label) / 1000.0
        suv_mean = intensity.GetMean(label)
        values.update({
            f"{prefix}_volume_ml": volume_ml,
            f"{prefix}_suv_max": intensity.GetMaximum(label),
            f"{prefix}_suv_mean": suv_mean,
            f"{prefix}_suv_peak": _suv_peak(pet_on_mask, grid, labels == label, radius),
            f"{prefix}_tlg": suv_mean * volume_ml,
        })

    primary_centroid = np.asarray(intensity.GetCentroid(GTVP)) if intensity.HasLabel(GTVP) else None
    if intensity.HasLabel(GTVN):
        components = sitk.ConnectedComponent(mask == GTVN, True)  # 26-connectivity, as the leaderboard's lesions
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.Execute(components)
        nodes = [(shape.GetPhysicalSize(c) / 1000.0, np.asarray(shape.GetCentroid(c))) for c in shape.GetLabels()]
        nodes = [(volume, centre) for volume, centre in nodes if volume >= min_node_ml]
        values["n_nodes"] = float(len(nodes))
        if nodes:
            values["largest_node_ml"] = max(volume for volume, _ in nodes)
            if primary_centroid is not None:
                values["node_distance_mm"] = max(float(np.linalg.norm(c - primary_centroid)) for _, c in nodes)
    warnings: tuple[str, ...] = ()
    if primary_centroid is None:
        warning = (f"no primary tumour (GTVp) in the segmentation: its biomarkers and the node distance take their "
                   f"no-tumour value ({NO_TUMOUR_VALUE:g})")
        warnings = (warning,)  # reported by the caller (a prediction's report, training's count): not logged here
    values = {name: float(value) for name, value in values.items()}
    if not all(math.isfinite(v) for v in values.values()):  # cannot happen with finite SUVs; never pass NaN on
        raise InputError(f"non-finite biomarkers {values}; check the PET")
    return Biomarkers(values, primary_centroid is not None, warnings)


# ---------------------------------------------------------------------------------------------------- scaling
@dataclass
class BiomarkerScaler:
    """Biomarkers -> survival-model features: ``log(1 + x)`` of :data:`LOG_FEATURES`, then a z-score with the
    fitting set's mean and standard deviation (a constant feature keeps scale 1). Stored as JSON in the bundle.

    Args:
        names: the biomarkers used, in order (default all of :data:`BIOMARKER_NAMES`).
        log_names: those taken as ``log(1 + x)``.
    """

    names: tuple[str, ...] = BIOMARKER_NAMES
    log_names: tuple[str, ...] = LOG_FEATURES
    mean_: np.ndarray | None = field(default=None, repr=False)
    scale_: np.ndarray | None = field(default=None, repr=False)

    FORMAT = "hecktor-biomarker-scaler"

    def __post_init__(self) -> None:
        self.names, self.log_names = tuple(self.names), tuple(self.log_names)
        unknown = sorted((set(self.names) | set(self.log_names)) - set(BIOMARKER_NAMES))
        if unknown or not set(self.log_names) <= set(self.names) or not self.names:
            raise ValueError(f"biomarker names must be a non-empty subset of {BIOMARKER_NAMES} (log names among "
                             f"them); unknown: {unknown}")

    @property
    def n_features(self) -> int:
        return len(self.names)

    def raw(self, rows: Sequence[Mapping[str, float] | Biomarkers]) -> np.ndarray:
        """``(n, p)`` features before the z-score: the values of :attr:`names`, log(1 + x) where asked."""
        table = np.asarray([[float((r.values if isinstance(r, Biomarkers) else r)[name]) for name in self.names]
                            for r in rows], dtype=np.float64).reshape(len(rows), len(self.names))
        logged = [i for i, name in enumerate(self.names) if name in self.log_names]
        # Volumes and TLG are >= 0; a negative value can only come from a broken record and must not give NaN.
        table[:, logged] = np.log1p(np.clip(table[:, logged], 0.0, None))
        return table

    def fit(self, rows: Sequence[Mapping[str, float] | Biomarkers]) -> "BiomarkerScaler":
        table = self.raw(rows)
        if len(table) == 0:
            raise InputError("cannot fit the biomarker scaling on no patients")
        self.mean_ = table.mean(axis=0)
        std = table.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, rows: Sequence[Mapping[str, float] | Biomarkers]) -> np.ndarray:
        """``(n, p)`` float32 features (the dtype of the clinical encoder's output, which they are joined to)."""
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("BiomarkerScaler is not fitted; call fit() or from_dict() first")
        return ((self.raw(rows) - self.mean_) / self.scale_).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("BiomarkerScaler is not fitted")
        return {"format": self.FORMAT, "names": list(self.names), "log_names": list(self.log_names),
                "mean": [float(v) for v in self.mean_], "scale": [float(v) for v in self.scale_]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], source: str = "biomarker scaler") -> "BiomarkerScaler":
        fix = "re-export the bundle with training/export_prognosis.py"
        if not isinstance(record, Mapping) or record.get("format") != cls.FORMAT:
            raise BundleError(f"{source} is not a {cls.FORMAT} record; {fix}")
        try:
            scaler = cls(tuple(record["names"]), tuple(record["log_names"]))
            mean = np.asarray(record["mean"], dtype=np.float64)
            scale = np.asarray(record["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source}: {error}; {fix}") from None
        if mean.shape != (scaler.n_features,) or scale.shape != mean.shape or not np.all(np.isfinite(mean)) or \
                not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise BundleError(f"{source}: mean and scale must be {scaler.n_features} finite numbers (scale > 0); "
                              f"{fix}")
        scaler.mean_, scaler.scale_ = mean, scale
        return scaler


# ------------------------------------------------------------------------------------------ tumour-centred crop
MASK_CHANNEL_VALUES = {GTVP: 1.0, GTVN: 0.5}
"""Values of the third input channel: 1 on the primary, 0.5 on the nodes, 0 elsewhere (one channel, as the
HECKTOR entries that fed the mask to the network; the two labels stay distinguishable)."""


@dataclass(frozen=True)
class TumourCrop:
    """A cube centred on the predicted tumour, resampled to ``shape_zyx`` voxels (one trilinear step for CT and PET,
    nearest for the mask): the network input of the ``fusion+biomarkers`` mode.

    Args:
        size_mm: the cube's edge. 128 mm holds a 60 ml primary and, in most patients, the nodes beside it.
        shape_zyx: voxels of the network input.
    """

    size_mm: float = 128.0
    shape_zyx: tuple[int, int, int] = (96, 96, 96)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_zyx", tuple(int(s) for s in self.shape_zyx))
        if not self.size_mm > 0 or len(self.shape_zyx) != 3 or min(self.shape_zyx) < 1:
            raise ValueError(f"a tumour crop needs a positive size and 3 positive voxel counts, got {self}")

    def to_dict(self) -> dict[str, Any]:
        return {"size_mm": float(self.size_mm), "shape_zyx": list(self.shape_zyx)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "TumourCrop":
        return cls(float(record["size_mm"]), tuple(record["shape_zyx"]))

    def grid(self, centre_xyz: Sequence[float]) -> Grid:
        return Grid.centered(centre_xyz, (self.size_mm,) * 3, size_xyz=self.shape_zyx[::-1])


def tumour_centre(mask: sitk.Image | None) -> np.ndarray | None:
    """Physical centroid (x, y, z) of the primary (GTVp); of the nodes when there is no primary; ``None`` when the
    mask holds neither."""
    if mask is None:
        return None
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.Cast(mask, sitk.sitkUInt8))
    for label in (GTVP, GTVN):
        if shape.HasLabel(label):
            return np.asarray(shape.GetCentroid(label))
    return None


def tumour_crop_input(
    ct: sitk.Image, pet: sitk.Image, mask: sitk.Image | None, crop: TumourCrop, plan: BoxPlan,
    fallback_centre_xyz: Sequence[float] | None = None,
) -> np.ndarray:
    """The 3-channel network input (3, z, y, x) float32 of the cube ``crop`` around the tumour: normalised CT and PET
    (as :func:`hecktor.preprocessing.network_input`: the plan's CT window and padding, the PET z-scored over the
    cube) and the mask (:data:`MASK_CHANNEL_VALUES`).

    Args:
        mask: the segmentation on the CT's grid; ``None`` or empty: centred on ``fallback_centre_xyz`` with an
            all-zero mask channel.
        fallback_centre_xyz: where to centre without a tumour (e.g. the Task 2 box's centre).
    """
    centre = tumour_centre(mask)
    if centre is None:
        if fallback_centre_xyz is None:
            raise InputError("no tumour to centre the crop on and no fallback centre")
        centre = np.asarray(fallback_centre_xyz, dtype=float)
    grid = crop.grid(centre)
    ct_array = sitk.GetArrayFromImage(resample_to_grid(ct, grid, plan.image_interpolation, plan.ct_pad_hu))
    pet_array = sitk.GetArrayFromImage(resample_to_grid(pet, grid, plan.image_interpolation, plan.pet_pad_suv))
    pet_array = np.nan_to_num(pet_array, nan=plan.pet_pad_suv, posinf=plan.pet_pad_suv, neginf=plan.pet_pad_suv)
    ct_array = np.nan_to_num(ct_array, nan=plan.ct_pad_hu, posinf=plan.ct_pad_hu, neginf=plan.ct_pad_hu)
    channel = np.zeros(crop.shape_zyx, dtype=np.float32)
    if mask is not None:
        labels = sitk.GetArrayFromImage(resample_to_grid(sitk.Cast(mask, sitk.sitkUInt8), grid, "nearest", 0,
                                                         sitk.sitkUInt8))
        for label, value in MASK_CHANNEL_VALUES.items():
            channel[labels == label] = value
    return np.stack([normalize_ct(ct_array, plan.ct_window_hu), normalize_pet(pet_array), channel])
