"""Tiny Task 2 and Task 3 fold ensembles built by hand (untrained networks, heads fitted on random features), in
every mode a user can export: the predictors' arithmetic is checked against them, and their bundles run through the
containers."""

from __future__ import annotations

import numpy as np
import torch

from hecktor.biomarkers import BIOMARKER_NAMES, BiomarkerScaler, TumourCrop
from hecktor.clinical import ClinicalEncoder
from hecktor.diagnosis import HPVPredictor, LogisticHead, PlattCalibration
from hecktor.fold_ensemble import EnsembleFold, SegmentationSettings
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model

ROWS = [
    {"Age": str(45 + 3 * i), "Gender": str(i % 2), "Tobacco Consumption": ["0", "1", None][i % 3],
     "Alcohol Consumption": str((i // 2) % 2), "Performance Status": str(i % 3), "Treatment": str((i // 3) % 2),
     "M-stage": "M1" if i == 5 else "M0"}
    for i in range(16)
]
"""The records the folds' clinical encoders are fitted on (fold k on rows k to k + 11)."""
# Narrow fused features keep the Cox fits of the fixtures fast; the code paths are those of the 128-d default.
NETWORK = {**TINY_BACKBONE, "clinical_dim": 8, "fused_dim": 16}

RISK_PLAN = BoxPlan(input_shape_zyx=(24, 24, 24))
CINDICES = (0.72, 0.55, 0.64)
"""The Task 2 folds' validation C-indices (their ensemble weights follow from them)."""

HPV_PLAN = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
AUCS = (0.74, 0.56, 0.66)
"""The Task 3 folds' validation AUCs (their ensemble weights follow from them)."""


def build_risk_predictor(mode: str, seed: int = 0) -> RiskPredictor:
    """Three folds with random networks, encoders fitted on different rows, Cox models fitted on random features."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, cindex in enumerate(CINDICES):
        encoder = ClinicalEncoder().fit(ROWS[k:k + 12]) if mode != "imaging" else None
        network = None
        if mode != "clinical":
            torch.manual_seed(seed * 10 + k)
            network = FusedFeatureExtractor(encoder.n_features if encoder else 0, mode=mode, **NETWORK).eval()
        n_features = network.feature_dim if network is not None else encoder.n_features
        X = rng.normal(size=(40, n_features))
        time = rng.uniform(100, 2000, size=40)
        event = rng.random(40) < 0.5
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(X, time, event)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=cindex))
    return RiskPredictor(folds, ensemble_weights(CINDICES), RISK_PLAN, mode, device="cpu", info={"note": "test"})


def _biomarker_folds(rng: np.random.Generator) -> list[tuple[ClinicalEncoder, BiomarkerScaler]]:
    """Three folds' clinical encoders and biomarker scalings, fitted on different rows of ROWS and of 20 random
    biomarker rows."""
    markers = [{name: float(rng.uniform(0.0, 30.0)) for name in BIOMARKER_NAMES} for _ in range(20)]
    return [(ClinicalEncoder().fit(ROWS[k:k + 12]), BiomarkerScaler().fit(markers[k:k + 15])) for k in range(3)]


def build_biomarker_predictor(mode: str, segmenter=None, segmentation=None, seed: int = 0,
                              suv_reference: str = "absolute") -> RiskPredictor:
    """Three folds: encoders and biomarker scalings fitted on different rows, networks (fusion+biomarkers) on 3-channel
    cubes, Cox models fitted on random features of the right width."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, (cindex, (encoder, scaler)) in enumerate(zip(CINDICES, _biomarker_folds(rng))):
        network = None
        if mode == "fusion+biomarkers":
            torch.manual_seed(seed * 10 + k)
            network = FusedFeatureExtractor(encoder.n_features, mode="fusion", image_channels=3, **NETWORK).eval()
        width = (network.feature_dim if network is not None else encoder.n_features) + scaler.n_features
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(
            rng.normal(size=(40, width)), rng.uniform(100, 2000, size=40), rng.random(40) < 0.5)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=cindex, biomarkers=scaler))
    settings = SegmentationSettings(crop=TumourCrop(96.0, (24, 24, 24)) if mode == "fusion+biomarkers" else None,
                                    suv_reference=suv_reference)
    return RiskPredictor(folds, ensemble_weights(CINDICES), RISK_PLAN, mode, device="cpu", info={"note": "test"},
                         segmenter=segmenter, segmentation=segmentation, segmentation_settings=settings)


def build_hpv_predictor(mode: str = "fusion", threshold: float = 0.5, seed: int = 0) -> HPVPredictor:
    """Three folds: random networks, encoders fitted on different rows, random heads with Platt calibrations."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, auc in enumerate(AUCS):
        encoder = ClinicalEncoder().fit(ROWS[k:k + 12]) if mode != "imaging" else None
        network = None
        if mode != "clinical":
            torch.manual_seed(seed * 10 + k)
            network = FusedFeatureExtractor(encoder.n_features if encoder else 0, mode=mode, **NETWORK).eval()
        width = network.feature_dim if network is not None else encoder.n_features
        head = LogisticHead(tuple(rng.normal(size=width)), float(rng.normal()),
                            PlattCalibration(float(rng.uniform(0.5, 2.0)), float(rng.normal(scale=0.3))))
        folds.append(EnsembleFold(head, network, encoder, validation_score=auc))
    return HPVPredictor(folds, ensemble_weights(AUCS), HPV_PLAN, mode, threshold, device="cpu", info={"note": "test"})


def build_hpv_biomarker_predictor(segmentation=None, threshold: float = 0.5, seed: int = 0,
                                  suv_reference: str = "body") -> HPVPredictor:
    """Task 3's biomarkers mode: three folds, encoders and biomarker scalings fitted on different rows, random
    logistic heads of the record + biomarkers width with Platt calibrations; ``segmentation`` the nested Task 1
    bundle."""
    rng = np.random.default_rng(seed)
    folds = []
    for auc, (encoder, scaler) in zip(AUCS, _biomarker_folds(rng)):
        head = LogisticHead(tuple(rng.normal(size=encoder.n_features + scaler.n_features)), float(rng.normal()),
                            PlattCalibration(float(rng.uniform(0.5, 2.0)), float(rng.normal(scale=0.3))))
        folds.append(EnsembleFold(head, None, encoder, validation_score=auc, biomarkers=scaler))
    return HPVPredictor(folds, ensemble_weights(AUCS), HPV_PLAN, "biomarkers", threshold, device="cpu",
                        info={"note": "test"}, segmentation=segmentation,
                        segmentation_settings=SegmentationSettings(suv_reference=suv_reference))
