"""Cross-validated training of the Task 2 risk model and its baselines (seed Table 3).

Examples::

    python training/train_prognosis.py --mode fusion   --folds 5 --data /data/hecktor2025 --out runs/fusion
    python training/train_prognosis.py --mode imaging  --folds 5 --data /data/hecktor2025 --out runs/imaging
    python training/train_prognosis.py --mode clinical --folds 5 --csv  table.csv          --out runs/clinical

Prints the per-fold and mean out-of-fold C-index and writes ``RUN_DIR/metrics.json``
(``{"cindex_mean": ..., "cindex_folds": [...], ...}``), ``config.json``, ``folds.json``, ``oof.csv``, per-fold
training logs and the fold ensemble in ``RUN_DIR/model`` (export it with ``export_prognosis.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from hecktor.errors import HecktorError, InputError
from hecktor.networks.fused import MODES
from hecktor.plan import BoxPlan
from hecktor.survival import load_folds
from prognosis_trainer import (
    DEFAULT_CACHE,
    NETWORK_PRESETS,
    CrossValidationResult,
    FoldResult,
    TrainingConfig,
    cross_validate,
    load_csv_cohort,
    load_hecktor_cohort,
    prepare_run_dir,
)


def _json_argument(text: str) -> dict[str, Any]:
    """A JSON object given inline or as a path to a JSON file."""
    path = Path(text)
    source = path.read_text() if path.is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {text!r} ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(
        description="Train the Task 2 (RFS) model with k-fold cross-validation and report the out-of-fold C-index.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="fusion (PET/CT + clinical), imaging (PET/CT only) or clinical (record only, no network)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="HECKTOR folder holding 'Task 2/' (images and its CSV)")
    source.add_argument("--csv", type=Path, help="clinical mode only: a CSV with the HECKTOR 2025 columns")
    parser.add_argument("--out", type=Path, required=True, help="run folder (created)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--folds", type=int, default=defaults.n_folds, help="cross-validation folds")
    parser.add_argument("--folds-file", type=Path,
                        help="reuse the split of an earlier run (its folds.json) so modes compare on the same folds")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--min-events", type=int, default=defaults.min_events, help="relapses in every batch")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--ties", choices=("breslow", "efron"), default=defaults.ties, help="Cox-loss tie handling")
    parser.add_argument("--early-stopping-fraction", type=float, default=defaults.early_stopping_fraction,
                        help="share of each fold's training patients held out to pick the best epoch (0: last epoch)")
    parser.add_argument("--no-augment", action="store_true", help="no random left-right mirroring")
    parser.add_argument("--network", choices=sorted(NETWORK_PRESETS), default="resnet18",
                        help="backbone preset (tiny: a few thousand parameters, for tests and smoke runs)")
    parser.add_argument("--network-config", type=_json_argument, default={},
                        help="extra FusedFeatureExtractor arguments as JSON (inline or file), "
                             "e.g. '{\"dropout\": 0.1}'")
    parser.add_argument("--survival", type=_json_argument, default=defaults.survival,
                        help="per-fold survival model as JSON, e.g. '{\"kind\": \"coxnet\", \"alpha\": 0.05, "
                             "\"l1_ratio\": 0.5}'")
    parser.add_argument("--features", default=",".join(defaults.clinical_features),
                        help="comma-separated clinical fields to encode")
    parser.add_argument("--numeric-features", default=None,
                        help="comma-separated numeric fields among --features (default: Age when present)")
    parser.add_argument("--ensemble-rule", choices=("cindex_margin", "uniform"), default=defaults.ensemble_rule)
    parser.add_argument("--plan", type=Path, help="preprocessing plan JSON (default: the library's BoxPlan(), 96^3)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="cache of preprocessed tensors (keyed by the plan's digest); env HECKTOR_CACHE")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    features = [name.strip() for name in args.features.split(",") if name.strip()]
    numeric = None
    if args.numeric_features is not None:
        numeric = [name.strip() for name in args.numeric_features.split(",") if name.strip()]
    return TrainingConfig(
        mode=args.mode,
        n_folds=args.folds,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        min_events=args.min_events,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        ties=args.ties,
        early_stopping_fraction=args.early_stopping_fraction,
        augment=not args.no_augment,
        network={**NETWORK_PRESETS[args.network], **args.network_config},
        survival=args.survival,
        clinical_features=features,
        numeric_features=numeric,
        ensemble_rule=args.ensemble_rule,
        device=args.device,
    )


def run(args: argparse.Namespace) -> CrossValidationResult:
    """Load the data, cross-validate, print and save; the library call behind :func:`main`."""
    try:
        config = config_from_args(args)
    except ValueError as error:  # e.g. an unknown survival kind or parameter
        raise InputError(str(error)) from None
    prepare_run_dir(args.out, args.overwrite)  # before hours of preprocessing, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.csv is not None:
        if config.mode != "clinical":
            raise InputError(f"--csv gives no images; mode {config.mode!r} needs --data with a 'Task 2' folder")
        cohort = load_csv_cohort(args.csv)
    else:
        plan = BoxPlan.load(args.plan) if args.plan is not None else BoxPlan()
        cohort = load_hecktor_cohort(args.data, plan, with_images=config.mode != "clinical", cache_dir=args.cache,
                                     progress=progress)
    folds = load_folds(args.folds_file, cohort.patient_ids) if args.folds_file is not None else None
    if folds is not None and len(folds) != config.n_folds:
        raise InputError(f"{args.folds_file} holds {len(folds)} folds but --folds is {config.n_folds}")
    print(f"{config.mode}: {len(cohort)} patients, {cohort.n_events} relapses, {config.n_folds} folds "
          f"({cohort.source})", flush=True)

    def report(fold: FoldResult) -> None:
        extra = f", network head {fold.head_cindex:.3f}" if fold.head_cindex is not None else ""
        epoch = f", epoch {fold.best_epoch}" if fold.best_epoch is not None else ""
        print(f"fold {fold.index}: C-index {fold.cindex:.3f} ({len(fold.val_idx)} patients, "
              f"{int(cohort.event[fold.val_idx].sum())} relapses{extra}{epoch}, {fold.seconds:.1f} s)", flush=True)

    result = cross_validate(cohort, config, args.out, folds=folds, progress=progress, on_fold=report,
                            overwrite=args.overwrite)
    metrics = result.metrics()
    print(f"mean out-of-fold C-index {metrics['cindex_mean']:.3f} ± {metrics['cindex_std']:.3f} "
          f"(pooled OOF {metrics['cindex_pooled_oof']:.3f}); ensemble weights "
          f"{', '.join(f'{w:.3f}' for w in metrics['ensemble_weights'])}; {metrics['train_seconds']:.0f} s")
    print(f"wrote {args.out / 'metrics.json'} and the fold ensemble in {args.out / 'model'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
