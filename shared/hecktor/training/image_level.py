"""What the image-level trainers share: Task 2 (:mod:`hecktor.training.prognosis`, RFS risk) and Task 3
(:mod:`hecktor.training.hpv`, HPV status) each give one answer per patient from the same head-and-neck box.

Both feed a :class:`~hecktor.networks.fused.FusedFeatureExtractor` (one of :data:`NETWORK_PRESETS`) the network input
of :func:`hecktor.preprocessing.preprocess_box`, the container's exact path, cached once per case in the trainers'
preprocessing cache (:func:`box_entry`, under :data:`DEFAULT_CACHE`), and both start a run in a folder that
:func:`prepare_run_dir` has checked. The fold loop, the epoch loop and the run folder's layout they share are in
:mod:`hecktor.training.crossval`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.datasets import TrainingCase
from hecktor.errors import InputError
from hecktor.networks.fused import RESNET18_BACKBONE, TINY_BACKBONE
from hecktor.plan import BoxPlan
from hecktor.preprocessing import preprocess_box
from hecktor.training.cache import PreprocessingCache

__all__ = ["DEFAULT_CACHE", "NETWORK_PRESETS", "SEGMENTATION_BUNDLE", "box_entry", "box_cache", "prepare_run_dir"]

DEFAULT_CACHE = Path(os.environ.get("HECKTOR_CACHE", Path.home() / ".cache" / "hecktor"))
NETWORK_PRESETS: dict[str, dict[str, Any]] = {"resnet18": dict(RESNET18_BACKBONE), "tiny": dict(TINY_BACKBONE)}
"""The image branch of the network by name: the full ResNet-18 (default) or a tiny one for tests and the demo."""

SEGMENTATION_BUNDLE = "segmentation_bundle"
"""``RUN_DIR/segmentation_bundle``: the Task 1 bundle a biomarker-mode run nests in its Task 2 bundle."""


def box_entry(case: TrainingCase, plan: BoxPlan) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The cache entry of one case (:class:`~hecktor.training.cache.PreprocessingCache`'s ``preprocess``): the
    network input by :func:`hecktor.preprocessing.preprocess_box`, float32 (2, z, y, x), and what preprocessing
    repaired (``repairs``, :func:`hecktor.training.cache.report_repairs`)."""
    ct, pet, _ = case.read()
    region = preprocess_box(ct, pet, plan)
    return {"image": np.asarray(region.image, dtype=np.float32)}, {"repairs": list(region.warnings)}


def box_cache(root: str | Path | None, plan: BoxPlan) -> PreprocessingCache:
    """The preprocessing cache of Task 2 network inputs (default root ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``)."""
    return PreprocessingCache(Path(root or DEFAULT_CACHE), plan, box_entry)


def prepare_run_dir(run_dir: str | Path, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a folder that already holds a run."""
    run_dir = Path(run_dir)
    earlier = [p for p in (run_dir / "metrics.json", run_dir / "model", *run_dir.glob("fold_*")) if p.exists()]
    if not earlier:
        return
    if not overwrite:
        raise InputError(f"{run_dir} already holds a training run; choose another --out or pass --overwrite")
    # What a biomarker-mode run wrote before its folds goes too.
    earlier += [p for p in (run_dir / SEGMENTATION_BUNDLE, run_dir / "masks") if p.exists()]
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()

