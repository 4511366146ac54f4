"""Task 2 inference: CT, PET and the clinical record in, one recurrence-free-survival risk out (higher = earlier
relapse).

The path is the one cross-validation scored::

    preprocess_box (localise, 200x200x310 mm box, one trilinear resampling to 96^3, CT window, PET z-score)
      -> per fold: ClinicalEncoder.transform(ehr) -> FusedFeatureExtractor.extract_features -> 128-d features
      -> per fold: LinearCoxModel.standardized_risk (the fold's risk, scaled by its training set's risk mean / std)
      -> weighted average of the folds' standardised risks (weights from the folds' out-of-fold C-index)

The three arms of the baseline comparison share this class through ``mode``:

* ``"fusion"``: image + clinical record through the network;
* ``"imaging"``: image only (the record is ignored; the bundle holds no encoder);
* ``"clinical"``: no network and no image: the encoded record goes straight into the fold's Cox model.

Every number comes from the bundle (``plan.json``, ``model.json``, the fitted encoders and Cox models), never from
code defaults. ``predict(..., folds=...)`` lets a caller with a time budget drop folds; the weights of the folds
kept are renormalised to sum to 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.clinical import ClinicalEncoder, normalize_ehr
from hecktor.errors import BundleError
from hecktor.networks.fused import MODES, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.preprocessing import preprocess_box
from hecktor.segment import resolve_device
from hecktor.survival import ENSEMBLE_RULES, LinearCoxModel, ensemble_risk

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "FoldModel", "RiskPredictor", "fold_file_names"]

MODEL_FORMAT = "hecktor-task2-risk"
MODEL_FORMAT_VERSION = 1
NETWORK_CLASS = "FusedFeatureExtractor"
_FIX = "re-export the bundle with training/export_prognosis.py"


def fold_file_names(index: int) -> dict[str, str]:
    """Bundle file names of fold ``index``: network weights, fitted clinical encoder, Cox model (a flat folder)."""
    return {
        "network": f"fold_{index}_network.pt",
        "encoder": f"fold_{index}_encoder.json",
        "survival": f"fold_{index}_survival.json",
    }


@dataclass
class FoldModel:
    """One cross-validation fold of the ensemble.

    Attributes:
        survival: the fold's Cox model, fitted on its training patients' features (with their risk scaling).
        network: the fold's feature extractor (``None`` in clinical mode).
        encoder: the clinical encoder fitted on the fold's training rows (``None`` in imaging mode).
        cindex: the fold's out-of-fold C-index (what its ensemble weight was computed from).
    """

    survival: LinearCoxModel
    network: FusedFeatureExtractor | None = None
    encoder: ClinicalEncoder | None = None
    cindex: float | None = None


class RiskPredictor:
    """A weighted fold ensemble of Task 2 models and the plan they were trained with.

    Build it with :meth:`from_bundle` (the container) or directly from in-memory folds (training, tests).

    Args:
        folds: one :class:`FoldModel` per fold.
        weights: ensemble weight of each fold (non-negative, summing to 1).
        plan: the preprocessing plan of the training run.
        mode: ``"fusion"``, ``"imaging"`` or ``"clinical"``.
        ensemble_rule: how ``weights`` were derived (recorded in the bundle; see
            :func:`hecktor.survival.ensemble_weights`).
        device: where the networks run; ``None`` picks CUDA when available.
        info: free-form training record copied into ``model.json`` on export (metrics, config).

    Attributes:
        last_timings: seconds spent in the stages of the last :meth:`predict` call (``preprocess_s``,
            ``clinical_s``, ``network_s``, ``survival_s``, ``total_s``) and the folds used.
        last_warnings: what preprocessing repaired or assumed in the last :meth:`predict` call.
        last_fold_risks: each used fold's standardised risk in the last call.
    """

    def __init__(
        self,
        folds: Sequence[FoldModel],
        weights: Sequence[float],
        plan: BoxPlan,
        mode: str,
        ensemble_rule: str = "cindex_margin",
        device: str | torch.device | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not folds:
            raise ValueError("a RiskPredictor needs at least one fold")
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != len(folds):
            raise ValueError(f"{weights.size} ensemble weights for {len(folds)} folds")
        if np.any(~np.isfinite(weights)) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, atol=1e-9):
            raise ValueError(f"ensemble weights must be non-negative and sum to 1, got {weights.tolist()}")
        for k, fold in enumerate(folds):
            needs_network, needs_encoder = mode != "clinical", mode != "imaging"
            if (fold.network is not None) != needs_network or (fold.encoder is not None) != needs_encoder:
                raise ValueError(f"fold {k} does not fit mode {mode!r}: network and encoder presence must match it")
        self.device = resolve_device(device)
        self.folds = list(folds)
        for fold in self.folds:
            if fold.network is not None:
                fold.network.to(self.device).eval()
        self.weights = weights
        self.plan = plan
        self.mode = mode
        self.ensemble_rule = ensemble_rule
        self.info = dict(info or {})
        self.last_timings: dict[str, Any] = {}
        self.last_warnings: list[str] = []
        self.last_fold_risks: list[float] = []

    @property
    def uses_images(self) -> bool:
        return self.mode != "clinical"

    @property
    def folds_by_weight(self) -> list[int]:
        """Fold indices from the heaviest to the lightest: drop from the end when time runs short."""
        return [int(k) for k in np.argsort(-self.weights, kind="stable")]

    def _select(self, folds: Sequence[int] | None) -> tuple[list[int], np.ndarray]:
        if folds is None:
            return list(range(len(self.folds))), self.weights
        chosen = [int(k) for k in folds]
        if not chosen:
            raise ValueError("folds must name at least one fold")
        bad = [k for k in chosen if not 0 <= k < len(self.folds)]
        if bad or len(set(chosen)) != len(chosen):
            raise ValueError(f"fold indices {chosen} must be distinct and in range: this ensemble has "
                             f"{len(self.folds)} folds")
        weights = self.weights[chosen]
        # Kept folds share the whole weight; if only zero-weight folds are left, they count equally.
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(chosen), 1.0 / len(chosen))
        return chosen, weights

    @torch.inference_mode()
    def fold_risks(
        self, image: np.ndarray | torch.Tensor | None, ehr: Mapping[str, Any] | None, folds: Sequence[int]
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Standardised risk of each fold in ``folds`` for one preprocessed case, and the time per stage."""
        timings = {"clinical_s": 0.0, "network_s": 0.0, "survival_s": 0.0}
        tensor = None
        if self.uses_images:
            if image is None:
                raise ValueError(f"mode {self.mode!r} needs the preprocessed image")
            tensor = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
            if tensor.ndim != 4 or tensor.shape[0] != 2:
                raise ValueError(f"image must have shape (2, z, y, x), got {tuple(tensor.shape)}")
            tensor = tensor.to(self.device, torch.float32)[None]
        # A non-object ehr.json (a list, a number) is an InputError; None (no ehr.json) means "all unknown".
        record = normalize_ehr(dict(ehr) if isinstance(ehr, Mapping) else ehr) if ehr is not None else {}
        risks = []
        for k in folds:
            fold = self.folds[k]
            start = time.perf_counter()
            clinical = fold.encoder.transform([record]) if fold.encoder is not None else None
            encoded = time.perf_counter()
            timings["clinical_s"] += encoded - start
            if fold.network is not None:
                clinical_tensor = torch.from_numpy(clinical).to(self.device) if clinical is not None else None
                features = fold.network.extract_features(tensor, clinical_tensor).float().cpu().numpy()
            else:
                features = clinical
            extracted = time.perf_counter()
            timings["network_s"] += extracted - encoded
            risks.append(float(fold.survival.standardized_risk(features)[0]))
            timings["survival_s"] += time.perf_counter() - extracted
        return np.asarray(risks, dtype=np.float64), timings

    @torch.inference_mode()
    def predict_batch(
        self,
        images: np.ndarray | None,
        records: Sequence[Mapping[str, Any] | None],
        *,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Ensemble risk of ``n`` cases already preprocessed by :func:`~hecktor.preprocessing.preprocess_box`
        (training's out-of-fold scoring and benchmarks): the same folds, weights and arithmetic as :meth:`predict`.

        Args:
            images: ``(n, 2, z, y, x)`` network inputs (``None`` in clinical mode).
            records: the ``n`` clinical records (``None`` entries: every value unknown).
            batch_size: cases per forward pass.

        Returns:
            ``(n,)`` risks (higher = earlier relapse).
        """
        n = len(records)
        if self.uses_images and (images is None or len(images) != n):
            raise ValueError(f"mode {self.mode!r} needs one preprocessed image per record ({n})")
        normalised = [normalize_ehr(dict(r)) if r is not None else {} for r in records]
        risks = np.empty((len(self.folds), n), dtype=np.float64)
        for k, fold in enumerate(self.folds):
            clinical = fold.encoder.transform(normalised) if fold.encoder is not None else None
            if fold.network is None:
                features = clinical
            else:
                parts = []
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    image = torch.as_tensor(np.asarray(images[start:stop]), dtype=torch.float32).to(self.device)
                    record = torch.from_numpy(clinical[start:stop]).to(self.device) if clinical is not None else None
                    parts.append(fold.network.extract_features(image, record).float().cpu().numpy())
                features = np.concatenate(parts)
            risks[k] = fold.survival.standardized_risk(features)
        return ensemble_risk(risks, self.weights)

    def predict_preprocessed(
        self,
        image: np.ndarray | torch.Tensor | None,
        ehr: Mapping[str, Any] | None,
        *,
        folds: Sequence[int] | None = None,
    ) -> float:
        """Ensemble risk of a case already preprocessed by :func:`~hecktor.preprocessing.preprocess_box`
        (``image`` (2, z, y, x); ignored in clinical mode)."""
        chosen, weights = self._select(folds)
        risks, _ = self.fold_risks(image, ehr, chosen)
        return float(ensemble_risk(risks[:, None], weights)[0])

    def predict(
        self,
        ct: sitk.Image | None,
        pet: sitk.Image | None,
        ehr: Mapping[str, Any] | None,
        *,
        folds: Sequence[int] | None = None,
    ) -> float:
        """Recurrence-free-survival risk of one case: higher means earlier relapse.

        Args:
            ct: CT in HU, any grid (unused, and may be ``None``, in clinical mode).
            pet: PET in SUV, its own grid (likewise).
            ehr: the clinical record (``ehr.json``). ``None``, missing keys, nulls and unseen values all encode as
                the fitted encoder's ``Unknown``; extra keys are ignored; a non-object is an :class:`InputError`.
            folds: indices of the folds to use (default: all); their weights are renormalised.
        """
        start = time.perf_counter()
        chosen, weights = self._select(folds)
        image = None
        self.last_warnings = []
        if self.uses_images:
            if ct is None or pet is None:
                raise ValueError(f"mode {self.mode!r} needs both CT and PET")
            region = preprocess_box(ct, pet, self.plan)
            image = region.image
            self.last_warnings = list(region.warnings)
        preprocessed = time.perf_counter()
        risks, timings = self.fold_risks(image, ehr, chosen)
        risk = float(ensemble_risk(risks[:, None], weights)[0])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_fold_risks = [float(r) for r in risks]
        self.last_timings = {
            "preprocess_s": preprocessed - start,
            **timings,
            "total_s": time.perf_counter() - start,
            "folds": chosen,
        }
        return risk

    # --------------------------------------------------------------------------------------------------- bundles
    def model_record(self) -> dict[str, Any]:
        """The content of ``model.json``: mode, network config, ensemble weights and each fold's files."""
        network_config = None
        first_network = self.folds[0].network
        if first_network is not None:
            network_config = first_network.config
        folds = []
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            folds.append({
                "network": names["network"] if fold.network is not None else None,
                "encoder": names["encoder"] if fold.encoder is not None else None,
                "survival": names["survival"],
                "cindex": None if fold.cindex is None else float(fold.cindex),
                # Each fold's encoder is fitted on its own training rows, so a rare level (M1, PS 4) can give one
                # fold more clinical columns than another: the network's input width is recorded per fold.
                "n_clinical": None if fold.network is None else int(fold.network.config["n_clinical"]),
            })
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "mode": self.mode,
            "network": None if network_config is None else {"class": NETWORK_CLASS, "config": network_config},
            "ensemble": {"rule": self.ensemble_rule, "weights": [float(w) for w in self.weights]},
            "folds": folds,
            "training": self.info,
        }

    def to_bundle(self, out_dir: str | Path) -> Path:
        """Write a verified Task 2 bundle (see :mod:`hecktor.bundle`): plan, ``model.json`` and, per fold, the
        network's state dict, the fitted clinical encoder and the Cox model as JSON. No pickle."""
        record = self.model_record()
        state_dicts, json_files = {}, {}
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            if fold.network is not None:
                if _without_width(fold.network.config) != _without_width(record["network"]["config"]):
                    raise ValueError(f"fold {k}'s network config differs from fold 0's beyond the clinical input "
                                     "width; a bundle holds one architecture")
                state_dicts[names["network"]] = fold.network.state_dict()
            if fold.encoder is not None:
                json_files[names["encoder"]] = fold.encoder.to_dict()
            json_files[names["survival"]] = fold.survival.to_dict()
        return write_bundle(out_dir, task=2, plan=self.plan, model=record, state_dicts=state_dicts,
                            json_files=json_files)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device | None = None) -> "RiskPredictor":
        """Load a verified Task 2 bundle; weights load with ``weights_only=True``. A bundle whose ``model.json``,
        weights, encoders or Cox models do not fit together is a :class:`BundleError`."""
        bundle = load_bundle(path, task=2)
        mode, network_config, rule, weights, fold_records = _model_description(bundle)
        folds = []
        for k, record in enumerate(fold_records):
            encoder = None
            if record["encoder"] is not None:
                encoder = ClinicalEncoder.from_dict(bundle.load_json(record["encoder"]),
                                                    source=str(bundle.file(record["encoder"])))
            survival = LinearCoxModel.from_dict(bundle.load_json(record["survival"]))
            network = None
            if record["network"] is not None:
                config = dict(network_config)
                if record.get("n_clinical") is not None:
                    config["n_clinical"] = int(record["n_clinical"])
                network = _load_network(bundle, record["network"], config)
            n_inputs = network.feature_dim if network is not None else encoder.n_features
            if survival.coef_.shape[0] != n_inputs:
                raise BundleError(f"{bundle.file(record['survival'])} expects {survival.coef_.shape[0]} features but "
                                  f"fold {k} produces {n_inputs}; {_FIX}")
            if network is not None and encoder is not None and network.config["n_clinical"] != encoder.n_features:
                raise BundleError(f"{bundle.file(record['encoder'])} encodes {encoder.n_features} clinical features "
                                  f"but the network takes {network.config['n_clinical']}; {_FIX}")
            folds.append(FoldModel(survival=survival, network=network, encoder=encoder, cindex=record.get("cindex")))
        return cls(folds, weights, bundle.plan, mode, ensemble_rule=rule, device=device,
                   info=bundle.model.get("training", {}))


def _without_width(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "n_clinical"}


def _load_network(bundle: Bundle, name: str, config: dict[str, Any]) -> FusedFeatureExtractor:
    try:
        network = FusedFeatureExtractor(**config)
    except (TypeError, ValueError) as error:
        raise BundleError(f"{bundle.file('model.json')}: cannot build {NETWORK_CLASS} ({error}); {_FIX}") from None
    try:
        network.load_state_dict(bundle.load_state_dict(name))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0][:200]
        raise BundleError(f"{bundle.file(name)} does not fit the network of model.json ({first}); {_FIX}") from None
    return network


def _model_description(bundle: Bundle) -> tuple[str, dict[str, Any] | None, str, np.ndarray, list[dict[str, Any]]]:
    """Mode, network config, ensemble rule and weights, fold records from ``model.json``, checked."""
    model = bundle.model
    where = bundle.file("model.json")
    if model.get("format") != MODEL_FORMAT or model.get("format_version") != MODEL_FORMAT_VERSION:
        raise BundleError(f"{where} is not a {MODEL_FORMAT} v{MODEL_FORMAT_VERSION} description; {_FIX}")
    mode = model.get("mode")
    if mode not in MODES:
        raise BundleError(f"{where}: mode must be one of {MODES}, got {mode!r}; {_FIX}")
    network = model.get("network")
    config = None
    if mode == "clinical":
        if network is not None:
            raise BundleError(f"{where}: a clinical-mode model has no network; {_FIX}")
    else:
        if not isinstance(network, dict) or network.get("class") != NETWORK_CLASS or not isinstance(
            network.get("config"), dict
        ):
            raise BundleError(f"{where}: mode {mode!r} needs a {NETWORK_CLASS} with a config object; {_FIX}")
        config = network["config"]
        if config.get("mode") != mode:
            raise BundleError(f"{where}: the network's mode {config.get('mode')!r} is not the model's {mode!r}; {_FIX}")
    ensemble = model.get("ensemble")
    folds = model.get("folds")
    if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) for f in folds):
        raise BundleError(f"{where} lists no folds; {_FIX}")
    if not isinstance(ensemble, dict) or ensemble.get("rule") not in ENSEMBLE_RULES:
        raise BundleError(f"{where}: ensemble rule must be one of {ENSEMBLE_RULES}; {_FIX}")
    try:
        weights = np.asarray(ensemble.get("weights"), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise BundleError(f"{where}: ensemble weights must be numbers; {_FIX}") from None
    if weights.size != len(folds) or np.any(~np.isfinite(weights)) or np.any(weights < 0) or not np.isclose(
        weights.sum(), 1.0, atol=1e-9
    ):
        raise BundleError(f"{where}: need {len(folds)} non-negative ensemble weights summing to 1, got "
                          f"{weights.tolist()}; {_FIX}")
    for k, fold in enumerate(folds):
        expected = fold_file_names(k)
        wanted = {"network": mode != "clinical", "encoder": mode != "imaging", "survival": True}
        for part, present in wanted.items():
            name = fold.get(part)
            if present != (name is not None) or (name is not None and name != expected[part]):
                state = f"{expected[part]!r}" if present else "null"
                raise BundleError(f"{where}: fold {k} must list {part} = {state} for mode {mode!r}; {_FIX}")
            if name is not None:
                bundle.file(name)  # raises BundleError when the manifest does not list it
    return mode, config, ensemble["rule"], weights, folds
