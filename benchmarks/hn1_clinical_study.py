"""Why the clinical-only Cox model of the trainer scores below a plain ridge Cox on the real HN1 table.

On ``../shared/data/real/clinical/tcia_hn1_hecktor2025_columns.csv`` (137 patients, 39 relapses), 5-fold
cross-validation, mean out-of-fold C-index over the folds (as ``train_prognosis.py`` reports it), averaged over
fold seeds 0-4. Each row changes one thing against the trainer's clinical mode:

* fold assignment: the trainer's ``hecktor.survival.make_folds`` (event-stratified dealing) or scikit-learn's
  ``StratifiedKFold(shuffle=True, random_state=seed)`` on the event;
* features: ``ClinicalEncoder`` fitted per fold (age median-imputed and z-scored, one-hot levels plus Unknown);
  the survival model then either standardises every column again (``standardize`` true, the trainer today) or
  only centres them (false: age stays z-scored, indicators stay 0/1); or levels held by fewer than 5 training
  patients are dropped (what an encoder with a minimum level count would do); or the performance status is
  left out, or encoded as one number (``--numeric-features "Age,Performance Status"``);
* penalty: a fixed ridge alpha, or ``"cv"`` (inner 3-fold CV over 0.1-1000 on each fold's training set).

The first row runs the trainer itself (``prognosis_trainer.cross_validate``); the second is this script's replica
of it and must agree. Fold seeds are a noisy choice with 5 of them, so the last column repeats the key rows over
``--check-seeds`` seeds (mean ± standard error) to tell a real effect from a lucky split.

Usage::

    python benchmarks/hn1_clinical_study.py [--seeds 5] [--check-seeds 40] [--report study.md]

Runs in about a minute on one core.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.clinical import DEFAULT_FEATURES, ClinicalEncoder
from hecktor.folds import make_folds
from hecktor.metrics import concordance_index
from hecktor.survival_models import build_survival_model
from hecktor.training.prognosis import cross_validate
from hecktor.training.prognosis_cohort import Cohort, load_csv_cohort
from hecktor.training.prognosis_config import TrainingConfig

REPO = Path(__file__).resolve().parents[1]
REAL_CSV = REPO.parent / "shared" / "data" / "real" / "clinical" / "tcia_hn1_hecktor2025_columns.csv"
CV_ALPHAS = [0.1, 1.0, 10.0, 100.0, 1000.0]
MIN_LEVEL_COUNT = 5

Folds = list[tuple[np.ndarray, np.ndarray]]


def dealer_folds(cohort: Cohort, seed: int) -> Folds:
    """The trainer's split."""
    return make_folds(cohort.event, 5, seed=seed, groups=cohort.centres)


def sklearn_folds(cohort: Cohort, seed: int) -> Folds:
    """A plain scikit-learn split stratified by the event."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(cohort)), cohort.event))


def encoded(cohort: Cohort, train: np.ndarray) -> np.ndarray:
    """The trainer's clinical features: ``ClinicalEncoder`` fitted on the fold's training rows."""
    encoder = ClinicalEncoder().fit([cohort.rows[i] for i in train])
    return encoder.transform(cohort.rows).astype(np.float64)


def encoded_without_rare_levels(cohort: Cohort, train: np.ndarray) -> np.ndarray:
    """As :func:`encoded`, with indicator columns held by fewer than ``MIN_LEVEL_COUNT`` training patients set to 0
    (those patients fall back on the reference, as an encoder with a minimum level count would encode them)."""
    encoder = ClinicalEncoder().fit([cohort.rows[i] for i in train])
    X = encoder.transform(cohort.rows).astype(np.float64)
    indicator = np.array(["=" in name for name in encoder.feature_names])
    rare = indicator & ((X[train] != 0).sum(axis=0) < MIN_LEVEL_COUNT)
    X[:, rare] = 0.0
    return X


def encoded_with_numeric_performance_status(cohort: Cohort, train: np.ndarray) -> np.ndarray:
    """As :func:`encoded`, with the ECOG performance status as one numeric column (median-imputed, z-scored)
    instead of one-hot levels: the trainer's ``--numeric-features "Age,Performance Status"``."""
    encoder = ClinicalEncoder(numeric=("Age", "Performance Status")).fit([cohort.rows[i] for i in train])
    return encoder.transform(cohort.rows).astype(np.float64)


def encoded_without_performance_status(cohort: Cohort, train: np.ndarray) -> np.ndarray:
    """As :func:`encoded`, without the performance status (whose levels 2, 3 and Unknown hold 3, 1 and 10 patients)."""
    features = [name for name in DEFAULT_FEATURES if name != "Performance Status"]
    encoder = ClinicalEncoder(features=features).fit([cohort.rows[i] for i in train])
    return encoder.transform(cohort.rows).astype(np.float64)


def cv_cindex(cohort: Cohort, folds: Folds, features: Callable[[Cohort, np.ndarray], np.ndarray],
              survival: dict[str, Any]) -> float:
    """Mean over folds of the out-of-fold C-index, as the trainer computes it."""
    scores = []
    for train, val in folds:
        X = features(cohort, train)
        model = build_survival_model(survival).fit(X[train], cohort.time[train], cohort.event[train])
        scores.append(concordance_index(cohort.time[val], cohort.event[val], model.standardized_risk(X[val])))
    return float(np.mean(scores))


def trainer_cindex(cohort: Cohort, seed: int, survival: dict[str, Any]) -> float:
    config = TrainingConfig(mode="clinical", seed=seed, survival=survival, device="cpu")
    return cross_validate(cohort, config, progress=False).cindex_mean


def variants() -> list[dict[str, Any]]:
    """The rows: what each changes against the trainer, and whether the many-seed check repeats it."""
    ridge = {"kind": "coxph", "alpha": 100.0}
    keep = {"standardize": False}
    cv = {"kind": "coxph", "alpha": "cv", "alphas": CV_ALPHAS, "inner_folds": 3}
    return [
        dict(name="trainer, clinical mode (cross_validate)", folds=dealer_folds, survival=ridge, trainer=True),
        dict(name="replica of the trainer", folds=dealer_folds, features=encoded, survival=ridge, check=True),
        dict(name="StratifiedKFold folds", folds=sklearn_folds, features=encoded, survival=ridge, check=True),
        dict(name="alpha 1", folds=dealer_folds, features=encoded, survival={**ridge, "alpha": 1.0}),
        dict(name="alpha 1000", folds=dealer_folds, features=encoded, survival={**ridge, "alpha": 1000.0},
             check=True),
        dict(name=f"levels < {MIN_LEVEL_COUNT} patients dropped", folds=dealer_folds,
             features=encoded_without_rare_levels, survival=ridge, check=True),
        dict(name="without Performance Status", folds=dealer_folds, features=encoded_without_performance_status,
             survival=ridge, check=True),
        dict(name="Performance Status as a number", folds=dealer_folds,
             features=encoded_with_numeric_performance_status, survival=ridge, check=True),
        dict(name="encoder scale kept (standardize false)", folds=dealer_folds, features=encoded,
             survival={**ridge, **keep}, check=True),
        dict(name="encoder scale kept, alpha 1", folds=dealer_folds, features=encoded,
             survival={**ridge, **keep, "alpha": 1.0}),
        dict(name="alpha by inner CV", folds=dealer_folds, features=encoded, survival=cv, check=True),
        dict(name="alpha by inner CV, encoder scale kept", folds=dealer_folds, features=encoded,
             survival={**cv, **keep}, check=True),
        dict(name="StratifiedKFold, encoder scale kept, alpha 1", folds=sklearn_folds, features=encoded,
             survival={**ridge, **keep, "alpha": 1.0}),
        dict(name="gradient-boosted Cox (gbsa defaults)", folds=dealer_folds, features=encoded,
             survival={"kind": "gbsa"}),
    ]


def describe(survival: dict[str, Any]) -> str:
    parts = [f"{key}={value}" for key, value in survival.items() if key not in ("kind", "alphas", "inner_folds")]
    return survival["kind"] + (" " + ", ".join(parts) if parts else "")


def run(cohort: Cohort, seeds: Sequence[int], check_seeds: Sequence[int]) -> list[str]:
    lines = [
        f"HN1 clinical table: {len(cohort)} patients, {cohort.n_events} relapses; 5-fold CV, mean per-fold "
        f"C-index; mean ± SD over fold seeds {seeds[0]}-{seeds[-1]}, and mean ± SE over {len(check_seeds)} seeds.",
        "",
        f"| variant | folds | survival model | C-index, {len(seeds)} seeds | C-index, {len(check_seeds)} seeds | s |",
        "|---|---|---|---|---|---|",
    ]
    for variant in variants():
        started = time.perf_counter()

        def score(seed: int, variant: dict[str, Any] = variant) -> float:
            if variant.get("trainer"):
                return trainer_cindex(cohort, seed, variant["survival"])
            return cv_cindex(cohort, variant["folds"](cohort, seed), variant["features"], variant["survival"])

        main = np.array([score(s) for s in seeds])
        check = ""
        if variant.get("check") and len(check_seeds):
            many = np.array([score(s) for s in check_seeds])
            check = f"{many.mean():.3f} ± {many.std(ddof=1) / np.sqrt(len(many)):.3f}"
        folds = "make_folds" if variant["folds"] is dealer_folds else "StratifiedKFold"
        lines.append(f"| {variant['name']} | {folds} | {describe(variant['survival'])} | "
                     f"{main.mean():.3f} ± {main.std(ddof=1):.3f} | {check} | {time.perf_counter() - started:.1f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=REAL_CSV, help="the HN1 table in the HECKTOR 2025 columns")
    parser.add_argument("--seeds", type=int, default=5, help="fold seeds 0..N-1 of the main column")
    parser.add_argument("--check-seeds", type=int, default=40, help="fold seeds of the many-seed check (0: none)")
    parser.add_argument("--report", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        print(f"error: {args.csv} not found; pass --csv", file=sys.stderr)
        return 2
    cohort = load_csv_cohort(args.csv)
    with warnings.catch_warnings():
        # sksurv warns when a one-hot level is constant in a fold; the penalty handles it.
        warnings.simplefilter("ignore", UserWarning)
        lines = run(cohort, list(range(args.seeds)), list(range(args.check_seeds)))
    if args.report is not None:
        args.report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
