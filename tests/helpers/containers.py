"""The containers' ``inference.py`` run as the platform runs them (in-process through ``main(argv)``), each task's
output contract, a failed case's contract, and the tiny bundles and the synthetic case the container tests run on.

``bundles`` and ``synthetic_case`` are pytest fixtures: a test module that uses them imports them by name. The HECKTOR
2026 bundle (``bundles[2026]``) is built by :func:`build_hecktor2026_predictor` around the tiny Task 1 bundle."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hecktor.biomarkers import BIOMARKER_NAMES, BiomarkerScaler
from hecktor.bundle import write_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.fold_ensemble import EnsembleFold, SegmentationSettings
from hecktor.hecktor2026 import Hecktor2026Head, Hecktor2026Predictor
from hecktor.images import find_single_image, read_image_or_placeholder
from hecktor.networks import build_network
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.rfs_time import fit_baseline_survival
from hecktor.staging import N_STAGES, STAGING_FEATURES, T_STAGES, StageClassifier
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.synthetic import make_case
from hecktor.tasks import RECORD_KEYS_2026, get_task

from .hostile_inputs import REGION_PLAN
from .paths import REPO

MASK_OUTPUT, RFS_OUTPUT, STATUS_OUTPUT = get_task(1).output, get_task(2).output, get_task(3).output
SPEC_2026 = get_task(2026)
PLAN1 = REGION_PLAN  # the plan the matrix's absurd voxels are placed with
PLAN2 = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def load_inference(task: int):
    """The task's ``inference.py`` (its registry container folder) as a module (it is a script of no package)."""
    path = REPO / get_task(task).container / "inference.py"
    spec = importlib.util.spec_from_file_location(f"task{task}_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFERENCE = {task: load_inference(task) for task in (1, 2, 3, 2026)}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[int, Path]:
    """Task 1: two folds of a tiny U-Net. Task 2: a three-fold fusion ensemble with unequal weights. 2026: two folds
    (:func:`build_hecktor2026_predictor`) around one fold of Task 1's."""
    root = tmp_path_factory.mktemp("bundles")
    networks = []
    for k in range(2):
        torch.manual_seed(k)
        networks.append(build_network("unet", TINY_UNET))
    model = {"network": "unet", "network_config": TINY_UNET, "folds": ["fold_0.pt", "fold_1.pt"]}
    task1 = write_bundle(root / "task1", task=1, plan=PLAN1, model=model,
                         state_dicts={f"fold_{k}.pt": n.state_dict() for k, n in enumerate(networks)})
    rng = np.random.default_rng(0)
    rows = [make_case(7, case_index=i).clinical for i in range(14)]
    folds, cindices = [], (0.70, 0.58, 0.64)
    for k, cindex in enumerate(cindices):
        encoder = ClinicalEncoder().fit(rows[k:k + 11])
        torch.manual_seed(10 + k)
        network = FusedFeatureExtractor(encoder.n_features, mode="fusion", **TINY_BACKBONE).eval()
        features = rng.normal(size=(40, network.feature_dim))
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(features, rng.uniform(100, 2000, 40),
                                                                       rng.random(40) < 0.5)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=cindex))
    task2 = RiskPredictor(folds, ensemble_weights(cindices), PLAN2, "fusion", device="cpu").to_bundle(root / "task2")
    # HECKTOR 2026 nests a Task 1 model of its own: one fold of the tiny U-Net leaning to background, with the
    # postprocessing (largest GTVp, nodes of 2 ml and more), so that its masks hold a few lesions to stage rather than
    # the hundreds of specks of an untrained network (measuring those takes seconds a case).
    state = networks[0].state_dict()
    state["net.model.2.conv.bias"] = state["net.model.2.conv.bias"] + torch.tensor([0.3, 0.0, 0.0])
    nested = write_bundle(root / "task1-for-2026", task=1, plan=PLAN1,
                          model={**model, "folds": ["fold_0.pt"],
                                 "postprocessing": {"gtvp_largest_component": True, "gtvn_min_volume_ml": 2.0}},
                          state_dicts={"fold_0.pt": state})
    task2026 = build_hecktor2026_predictor(nested).to_bundle(root / "hecktor2026")
    return {1: task1, 2: task2, 2026: task2026}


def build_hecktor2026_predictor(segmentation: Path, stagers: dict[str, str] | None = None,
                                seed: int = 0) -> Hecktor2026Predictor:
    """Two folds of the 2026 algorithm around the Task 1 bundle ``segmentation``: encoders of the 2026 record (HPV
    Status included) and biomarker scalings fitted on different rows, Cox models and their Breslow baselines on random
    features (some 1,000 days of follow-up), T and N classifiers of the staging measurements fitted on random ones;
    T learned, N by the rules unless ``stagers`` says otherwise."""
    rng = np.random.default_rng(seed)
    rows = [{k: v for k, v in make_case(7, case_index=i).clinical.items() if k in RECORD_KEYS_2026} for i in range(14)]
    # The untrained U-Net marks large volumes and a hundred-odd nodes: log-uniform values over 0.4-5,000 keep the clean
    # case's biomarkers inside the training range (no warning), as a trained model's would be.
    markers = [{name: float(np.exp(rng.uniform(-1.0, 8.5))) for name in BIOMARKER_NAMES} for _ in range(20)]
    features = tuple(k for k in RECORD_KEYS_2026 if k != "CenterID")
    folds, cindices = [], (0.66, 0.61)
    for k, cindex in enumerate(cindices):
        encoder = ClinicalEncoder(features=features).fit(rows[k:k + 11])
        scaler = BiomarkerScaler().fit(markers[k:k + 15])
        width = encoder.n_features + scaler.n_features
        X, time, event = rng.normal(size=(40, width)), rng.uniform(100, 2000, 40), rng.random(40) < 0.5
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(X, time, event)
        baseline = fit_baseline_survival(survival.standardized_risk(X), survival.risk_std_, time, event)
        staged = rng.normal(size=(40, len(STAGING_FEATURES)))  # the stagers' default input: the measurements
        t_stage = StageClassifier.fit(staged, [T_STAGES[i % 4] for i in range(40)])
        n_stage = StageClassifier.fit(staged, [N_STAGES[i % 3] for i in range(40)])
        folds.append(EnsembleFold(Hecktor2026Head(survival, baseline, t_stage, n_stage), None, encoder,
                                  validation_score=cindex, biomarkers=scaler))
    return Hecktor2026Predictor(folds, ensemble_weights(cindices), PLAN2, stagers or {"T": "learned", "N": "rules"},
                                device="cpu", info={"note": "test"}, segmentation=segmentation,
                                segmentation_settings=SegmentationSettings(suv_reference="body"))


@pytest.fixture(scope="session")
def synthetic_case():
    """The clean case that the matrix spoils, one row at a time (``hostile_inputs._spoiled_input``)."""
    return make_case(3, "small", case_index=1, ct_orientation="identity", pet_orientation="identity")


def run(task: int, input_dir: Path, output_dir: Path, bundle: Path, *extra: str, started_s_ago: float = 0.0):
    """``inference.py``'s ``main`` as the container calls it; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--input", str(input_dir), "--output", str(output_dir), "--resources", str(bundle), "--device", "cpu",
            *extra]
    with redirect_stdout(out), redirect_stderr(err):
        status = INFERENCE[task].main(argv, start_time=time.time() - started_s_ago)
    return status, out.getvalue(), err.getvalue()


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (none when it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def input_ct(input_dir: Path) -> sitk.Image:
    """The case's CT as the containers read it (any suffix case, placeholders included)."""
    return read_image_or_placeholder(find_single_image(input_dir / "images" / "ct"), "CT")[0]


def check_mask(output_dir: Path, ct: sitk.Image) -> np.ndarray:
    """The Task 1 output contract: the only file, UInt8, labels in {0, 1, 2}, exactly the CT's grid."""
    assert files_under(output_dir) == [output_dir / MASK_OUTPUT]
    return mask_on_grid(output_dir / MASK_OUTPUT, ct)


def check_hecktor2026(output_dir: Path, ct: sitk.Image) -> tuple[np.ndarray, str, str, float]:
    """The HECKTOR 2026 output contract: exactly the four files; the mask as Task 1's (:func:`mask_on_grid`), each
    stage one JSON string of the challenge's (T1..T4, N0..N3), the RFS time one finite JSON number of days above 0.
    Returns the mask's labels, the stages and the time."""
    mask, t_file, n_file, rfs_file = (output_dir / path for path in SPEC_2026.outputs)
    assert files_under(output_dir) == sorted([mask, t_file, n_file, rfs_file])
    t_stage, n_stage = json.loads(t_file.read_text()), json.loads(n_file.read_text())
    assert t_stage in T_STAGES and n_stage in N_STAGES, (t_stage, n_stage)
    days = json.loads(rfs_file.read_text())
    assert isinstance(days, float) and math.isfinite(days) and days > 0, days
    return mask_on_grid(mask, ct), t_stage, n_stage, days


def mask_on_grid(path: Path, ct: sitk.Image) -> np.ndarray:
    """A mask file's labels, checked: UInt8, labels in {0, 1, 2}, exactly the CT's grid."""
    mask = sitk.ReadImage(str(path))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
        ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    array = sitk.GetArrayFromImage(mask)
    assert set(np.unique(array).tolist()) <= {0, 1, 2}
    return array


def check_risk(output_dir: Path) -> float:
    """The Task 2 output contract: the only file, one bare finite JSON number."""
    assert files_under(output_dir) == [output_dir / RFS_OUTPUT]
    value = json.loads((output_dir / RFS_OUTPUT).read_text())
    assert isinstance(value, float) and math.isfinite(value)
    return value


def check_status(output_dir: Path) -> bool:
    """The Task 3 output contract: the only file, exactly ``true`` or ``false``."""
    assert files_under(output_dir) == [output_dir / STATUS_OUTPUT]
    text = (output_dir / STATUS_OUTPUT).read_text()
    assert text in ("true", "false"), text
    return text == "true"


def check_failure(status: int, stderr: str, output_dir: Path, message: str) -> None:
    """A failed case: exit status 2, exactly one line on stderr naming the problem, nothing in the output folder."""
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert files_under(output_dir) == []
