"""Task 2 inference: CT, PET and the clinical record in, one recurrence-free-survival risk out (higher = earlier
relapse).

The path is the one cross-validation scored::

    preprocess_box (localise, 200x200x310 mm box, one trilinear resampling to 96^3, CT window, PET z-score)
      -> per fold: ClinicalEncoder.transform(ehr) -> FusedFeatureExtractor.extract_features -> 128-d features
      -> per fold: SurvivalModel.standardized_risk (the fold's risk, scaled by its training set's risk mean / std)
      -> weighted average of the folds' standardised risks (weights from the folds' out-of-fold C-index)

The three arms of the baseline comparison share this class through ``mode``:

* ``"fusion"``: image + clinical record through the network;
* ``"imaging"``: image only (the record is ignored; the bundle holds no encoder);
* ``"clinical"``: no network and no image: the encoded record goes straight into the fold's Cox model.

Every number comes from the bundle (``plan.json``, ``model.json``, the fitted encoders and Cox models), never from
code defaults. :meth:`RiskPredictor.predict` is the one code path that predicts a case (the container, the demo, the
benchmarks and the tests call it); given a :class:`~hecktor.budget.TimeBudget` it runs the folds from the heaviest
ensemble weight to the lightest and lets a :class:`~hecktor.budget.BudgetPolicy` drop the lightest when time runs
short; the weights of the folds kept are renormalised to sum to 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.budget import BudgetPolicy, NetworkPass, PredictionReport, TimeBudget, fold_order
from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.clinical import ClinicalEncoder, normalize_ehr, sanitize_ehr, unseen_values
from hecktor.errors import BundleError, InputError
from hecktor.io import CaseInput
from hecktor.networks.fused import MODES, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.preprocessing import image_level_input
from hecktor.segment import resolve_device
from hecktor.survival import ENSEMBLE_RULES, ensemble_risk
from hecktor.survival_models import SurvivalModel, survival_model_from_dict

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

    survival: SurvivalModel
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
        last_report: what the last :meth:`predict` call ran, dropped, repaired and spent
            (:class:`~hecktor.budget.PredictionReport`; its timings also split the folds' time ``network_s`` into
            ``clinical_s`` (encoding the record), ``features_s`` (the networks) and ``survival_s``).
        last_fold_risks: each used fold's standardised risk in the last call, by fold index.
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
        self.last_report = PredictionReport()
        self.last_fold_risks: dict[int, float] = {}

    @property
    def uses_images(self) -> bool:
        return self.mode != "clinical"

    @property
    def folds_by_weight(self) -> list[int]:
        """Fold indices from the heaviest to the lightest: drop from the end when time runs short."""
        return [int(k) for k in np.argsort(-self.weights, kind="stable")]

    def _weights_of(self, used: Sequence[int]) -> np.ndarray:
        """Ensemble weights of the folds ``used``, renormalised to sum 1 (all equal if only zero-weight folds)."""
        if len(used) == len(self.folds):
            return self.weights
        weights = self.weights[list(used)]
        return weights / weights.sum() if weights.sum() > 0 else np.full(len(used), 1.0 / len(used))

    @torch.inference_mode()
    def _fold_risk(self, k: int, image: torch.Tensor | None, record: Mapping[str, Any],
                   timings: dict[str, float]) -> float:
        """Standardised risk of fold ``k`` for one case (image (1, 2, z, y, x) on the device, normalised record)."""
        fold = self.folds[k]
        start = time.perf_counter()
        clinical = fold.encoder.transform([record]) if fold.encoder is not None else None
        encoded = time.perf_counter()
        if fold.network is not None:
            clinical_tensor = torch.from_numpy(clinical).to(self.device) if clinical is not None else None
            features = fold.network.extract_features(image, clinical_tensor).float().cpu().numpy()
        else:
            features = clinical
        extracted = time.perf_counter()
        risk = float(fold.survival.standardized_risk(features)[0])
        timings["clinical_s"] += encoded - start
        timings["features_s"] += extracted - encoded
        timings["survival_s"] += time.perf_counter() - extracted
        return risk

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

    def predict_case(self, case: CaseInput, *, budget: TimeBudget | None = None, **options: Any) -> float:
        """:meth:`predict` on a case read by :func:`hecktor.io.read_case` (the container's call): a CT or PET that
        reading dropped (``None``) is predicted without, a dropped ``ehr.json`` as an absent record."""
        risk = self.predict(case.ct, case.pet, case.ehr, budget=budget, **options)
        self.last_report.warnings[:0] = case.warnings
        return risk

    def predict(
        self,
        ct: sitk.Image | None,
        pet: sitk.Image | None,
        ehr: Mapping[str, Any] | None,
        *,
        folds: Sequence[int] | None = None,
        budget: TimeBudget | None = None,
    ) -> float:
        """Recurrence-free-survival risk of one case: higher means earlier relapse.

        Args:
            ct: CT in HU, any grid, or ``None`` (its channel is then blank; unused in clinical mode).
            pet: PET in SUV, its own grid, or ``None`` (its channel is then blank and the box is placed from the
                CT). A flat placeholder CT or PET (the platform's sanity check), or neither image, gives the risk of
                the clinical record with a blank image (what preprocessing makes of a region outside every field of
                view), with a warning in :attr:`last_report`.
            ehr: the clinical record (``ehr.json``). ``None``, missing keys, nulls and unseen values all encode as
                the fitted encoder's ``Unknown``; extra keys are ignored; keys are matched whatever their case and
                implausible values (an age outside 0-120 years) are dropped, with warnings
                (:func:`hecktor.clinical.sanitize_ehr`); a non-object is an :class:`InputError`.
            folds: the folds allowed (default: all); they run heaviest weight first and their weights are
                renormalised.
            budget: the case's deadline; ``None`` runs every fold.
        """
        allowed = set(fold_order(folds, len(self.folds)))
        report = self.last_report = PredictionReport()
        policy = BudgetPolicy(budget, report)
        clock = policy.now
        started = clock()
        # A non-object ehr.json (a list, a number) is an InputError; None (no ehr.json) means "all unknown".
        record = normalize_ehr(dict(ehr) if isinstance(ehr, Mapping) else ehr) if ehr is not None else {}
        encoders = [fold.encoder for fold in self.folds if fold.encoder is not None]
        if encoders:
            checked = sanitize_ehr(record)
            record = checked.record
            report.warnings.extend(checked.warnings + unseen_values(encoders, record))
        tensor = None
        if self.uses_images:
            image, warnings, report.placeholder = image_level_input(ct, pet, self.plan)
            report.warnings.extend(warnings)
            tensor = torch.as_tensor(image, dtype=torch.float32).to(self.device)[None]
        report.timings["preprocess_s"] = clock() - started

        pending = policy.start([NetworkPass(k) for k in self.folds_by_weight if k in allowed])
        stages = {"clinical_s": 0.0, "features_s": 0.0, "survival_s": 0.0}
        risks: dict[int, float] = {}
        network_started = clock()
        while pending:
            step, pending = pending[0], pending[1:]
            pass_started = clock()
            risks[step.fold] = self._fold_risk(step.fold, tensor, record, stages)
            pending = policy.after_pass(clock() - pass_started, pending)
        used = sorted(risks)
        risk = float(ensemble_risk(np.asarray([risks[k] for k in used])[:, None], self._weights_of(used))[0])
        if not math.isfinite(risk):
            raise InputError(f"the ensemble's risk is not finite ({risk}); the inputs are far outside the training "
                             "data")
        report.timings.update(network_s=clock() - network_started, total_s=clock() - started,
                              **stages)
        if budget is not None:
            report.timings["elapsed_s"] = budget.elapsed()
        report.folds, report.passes, report.tta = used, len(policy.pass_times), False
        self.last_fold_risks = {k: risks[k] for k in used}
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
            survival = survival_model_from_dict(bundle.load_json(record["survival"]))
            network = None
            if record["network"] is not None:
                config = dict(network_config)
                if record.get("n_clinical") is not None:
                    config["n_clinical"] = int(record["n_clinical"])
                network = _load_network(bundle, record["network"], config)
            n_inputs = network.feature_dim if network is not None else encoder.n_features
            if survival.n_features != n_inputs:
                raise BundleError(f"{bundle.file(record['survival'])} expects {survival.n_features} features but "
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
