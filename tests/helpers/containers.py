"""The containers' ``inference.py`` run as the platform runs them (in-process through ``main(argv)``), each task's
output contract, a failed case's contract, and the tiny bundles and the synthetic case the container tests run on.

``bundles`` and ``synthetic_case`` are pytest fixtures: a test module that uses them imports them by name."""

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

from hecktor.bundle import write_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.fold_ensemble import EnsembleFold
from hecktor.images import find_single_image, read_image_or_placeholder
from hecktor.networks import build_network
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.synthetic import make_case
from hecktor.tasks import get_task

from .hostile_inputs import REGION_PLAN
from .paths import REPO

MASK_OUTPUT, RFS_OUTPUT, STATUS_OUTPUT = get_task(1).output, get_task(2).output, get_task(3).output
PLAN1 = REGION_PLAN  # the plan the matrix's absurd voxels are placed with
PLAN2 = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def load_inference(task: int):
    """``taskN_container/inference.py`` as a module (it is a script of no package)."""
    path = REPO / f"task{task}_container" / "inference.py"
    spec = importlib.util.spec_from_file_location(f"task{task}_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFERENCE = {task: load_inference(task) for task in (1, 2, 3)}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[int, Path]:
    """Task 1: two folds of a tiny U-Net. Task 2: a three-fold fusion ensemble with unequal weights."""
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
    return {1: task1, 2: task2}


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
    mask = sitk.ReadImage(str(output_dir / MASK_OUTPUT))
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
