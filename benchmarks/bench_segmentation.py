"""Benchmark: seed Table 1 and Table 2 analogues on a held-out synthetic set, with nnU-Net v2 as the yardstick.

Table 1 compares HecMamba (the current recipe, and the seed's recipe for comparison) with MONAI's U-Net, V-Net,
UNETR and DynUNet (nnU-Net's architecture, deep supervision) and with nnU-Net v2 itself; Table 2 ablates HecMamba.
Every configuration trains fold 0 of the same 5-fold split of the same synthetic training cohort with the same plan
and budget (``training/configs/demo.json``'s plan: 4 mm, 48³ patches, unless ``--config`` or ``--patch`` says
otherwise), is exported, and segments the same held-out cases through ``hecktor.segment.Segmenter`` (the containers'
path, one fold, no TTA, no postprocessing); the cases are scored with ``hecktor.metrics``. The current HecMamba
recipe also predicts its 8 validation cases after training, chooses its postprocessing on them
(``hecktor.postprocessing``) and gives a second row with that postprocessing applied to the held-out cases. A
"ceiling" row scores the true labels put on the plan's grid and mapped back: what the voxel size alone costs.

HecMamba keeps the base config's (CPU-sized) network and every row the base config's loss and learning rate, unless
the row says otherwise; U-Net and V-Net use the registry defaults; UNETR is shrunk (feature size 8, hidden size 192,
4 heads: 7.8 M parameters instead of 96 M) so that it trains at a CPU pace; DynUNet takes nnU-Net's layout for the
plan's patch (``hecktor.networks.dynunet_layout``: four levels of 32-256 features at 32³, as nnU-Net's own plan).
nnU-Net v2 (``benchmarks/nnunet_baseline.py``, trained on our plan: ``forced=(4 mm, patch)``) runs when ``nnunetv2``
is importable (``make bench-nnunet`` installs it); otherwise its row says it is not installed. The configurations
run in ``--jobs`` worker processes of ``--threads`` threads each, longest first; on a 2-core machine two one-thread
workers finish sooner than one two-thread run (two torch threads stall when the cores are shared).

Usage::

    python benchmarks/bench_segmentation.py --work /tmp/segbench --patch 32 --epochs 40 --iterations 25 --jobs 2
    python benchmarks/bench_segmentation.py --quick          # a smoke run: a minute per configuration

Tuning a recipe without touching the table's held-out cases: ``--held-out-seed`` scores another held-out cohort (the
training cohort stays seed 0), and ``--set KEY=JSON`` changes the base config of every chosen row (the row names and
run folders say so), e.g.::

    python benchmarks/bench_segmentation.py --work /tmp/tune --patch 32 --epochs 40 --iterations 25 \
        --held-out 24 --held-out-seed 2000 --only "HecMamba (current" --set learning_rate=0.004

One run is one draw of the split, the initial weights and the patches: ``--seeds 0 1 2`` trains every chosen row once
per seed and adds a mean ± SD table.

Each run writes its report to ``WORK/bench_segmentation.md`` and ``.json`` (the latest run's) and keeps a copy under
``WORK/reports/`` named by its UTC finish time, so runs of a few rows in one folder never lose an earlier report.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import SimpleITK as sitk
import torch

from hecktor.datasets import list_training_cases
from hecktor.metrics import evaluate_segmentation, summarize_segmentation
from hecktor.segment import Segmenter
from hecktor.synthetic import generate_cohort
from hecktor.training.segmentation import TrainingConfig, export_bundle, load_config_file, region_cache, train

REPO = Path(__file__).resolve().parents[1]

NNUNET = "nnU-Net v2"
POSTPROCESSED = " + postprocessing chosen on its validation cases"
CEILING = "Ceiling: the true labels on the plan's grid, back on the CT grid"
# (row name, table, overrides of the base config). HecMamba keeps the base config's network settings. Keys starting
# with "_" are the benchmark's own: "_postprocessing" also chooses and applies postprocessing (a second row).
# The demo's former HecMamba (1.4 M): 8 full-resolution channels (the encoder's first width, as before the decoder's
# full-resolution width could be set apart).
SEED_WIDTHS = {"widths": [8, 16, 32, 64], "full_resolution_width": None}
CONFIGURATIONS = [
    ("HecMamba (current recipe)", 1, {"_postprocessing": True}),
    ("HecMamba (seed recipe: widths 8-64, batch Dice+CE, no deep supervision)", 1,
     {"loss": "batch_dicece", "dice_include_background": True, "deep_supervision": False,
      "network_config": SEED_WIDTHS}),
    ("U-Net (MONAI)", 1, {"network": "unet", "network_config": {}}),
    ("V-Net (MONAI)", 1, {"network": "vnet", "network_config": {}}),
    ("UNETR (MONAI, reduced)", 1, {"network": "unetr",
                                   "network_config": {"feature_size": 8, "hidden_size": 192, "mlp_dim": 768,
                                                      "num_heads": 4}}),
    ("DynUNet (MONAI, nnU-Net layout, deep supervision)", 1, {"network": "dynunet", "network_config": {}}),
    (NNUNET, 1, {"network": "nnunet"}),
    (CEILING, 1, {"_ceiling": True}),
    ("HecMamba, no deep supervision", 2, {"deep_supervision": False}),
    ("HecMamba, widths 8-64 (8 full-resolution channels)", 2, {"network_config": SEED_WIDTHS}),
    ("HecMamba, 16 full-resolution channels (the former recipe)", 2, {"network_config": {"full_resolution_width": 16}}),
    ("HecMamba, nnU-Net's batch Dice + CE", 2, {"loss": "batch_dicece"}),
    ("HecMamba, no augmentation", 2, {"augmentation": False}),
]
# Relative cost of one training iteration on one thread at 32^3, batch 2 (measured): submission order, longest first.
COST = {"vnet": 5.0, "nnunet": 2.0, "hecmamba": 1.3, "dynunet": 1.0, "unetr": 0.7, "unet": 0.5}


def nnunet_available() -> bool:
    """Whether nnU-Net v2 (the benchmark-only ``benchmarks/requirements-nnunet.txt``) is importable."""
    import importlib.util

    return importlib.util.find_spec("nnunetv2") is not None


def dynunet_config(plan: dict) -> dict:
    """nnU-Net's layout for the plan's patch and spacing (kernels, strides, 32-320 features)."""
    from hecktor.networks import dynunet_filters, dynunet_layout
    from hecktor.plan import RegionPlan

    region_plan = RegionPlan.from_dict(plan)
    kernels, strides = dynunet_layout(region_plan.patch_size_zyx, region_plan.spacing_mm_xyz[::-1])
    return {"kernel_size": kernels, "strides": strides, "filters": dynunet_filters(len(strides))}


def _init_worker(threads: int) -> None:
    if sys.platform.startswith("linux"):
        # PR_SET_PDEATHSIG: a worker whose parent is killed gets SIGTERM instead of training on, orphaned, for an hour.
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=JSON`` (``learning_rate=0.004``, ``ce_class_weights=[1,1,2]``; a value that is not JSON is a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def setting_suffix(settings: dict) -> str:
    """What ``--set`` changed, for row names: `` [learning_rate=0.004]``; empty without settings."""
    return " [" + ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items()) + "]" if settings else ""


def slug(name: str) -> str:
    """A run folder name for a row: alphanumerics of its name, with a digest of the name when truncated."""
    import hashlib

    text = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return text if len(text) <= 60 else text[:51] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]


def row_config(base: dict, overrides: dict, run_dir: Path) -> dict:
    """The training configuration of one table row: ``base`` with the row's ``overrides`` (keys starting with "_" are
    the benchmark's own and left out). A HecMamba row's ``network_config`` changes the base network's sizes named and
    keeps the others; another network takes its own configuration."""
    settings = {key: value for key, value in overrides.items() if not key.startswith("_")}
    config = {**base, **settings, "run_dir": str(run_dir), "predict_validation": bool(overrides.get("_postprocessing"))}
    if "network" not in settings and "network_config" in settings:  # a HecMamba row changes some sizes only
        config["network_config"] = {**base["network_config"], **settings["network_config"]}
    if settings.get("network") == "unetr":
        config["network_config"] = {**settings["network_config"],
                                    "img_size": list(config["plan"]["patch_size_zyx"])}
    if settings.get("network") == "dynunet":
        config["network_config"] = dynunet_config(config["plan"])
    if settings.get("network") in ("unet", "vnet", "unetr"):
        config.pop("deep_supervision", None)  # no heads to switch on
    return config


def run_configuration(name: str, overrides: dict, base: dict, work: Path, held_out_dir: Path, tta: bool,
                      threads: int = 1) -> list[dict]:
    """Train, export and score one configuration: its row (two with ``_postprocessing``)."""
    if overrides.get("_ceiling"):
        return [ceiling_row(name, base, held_out_dir)]
    if overrides.get("network") == "nnunet":
        from nnunet_baseline import run_nnunet_row

        plan = base["plan"]
        row = run_nnunet_row(work / "nnunet", work / "train", held_out_dir,
                             iterations=base["epochs"] * base["iterations_per_epoch"],
                             forced=(float(plan["spacing_mm_xyz"][0]), int(plan["patch_size_zyx"][0])),
                             tta=tta, threads=threads, name=f"{NNUNET} (4 mm, {plan['patch_size_zyx'][0]}³ patches)")
        return [{**row, "network": "nnunet"}]
    from hecktor.postprocessing import Postprocessing
    from hecktor.training.segmentation import choose_run_postprocessing

    held_out = list_training_cases(held_out_dir, 1)
    run_dir = work / "runs" / slug(name)
    postprocess = bool(overrides.get("_postprocessing"))
    config = row_config(base, overrides, run_dir)
    start = time.perf_counter()
    summary = train(TrainingConfig.from_dict(config))[0]
    trained = time.perf_counter()
    choice = choose_run_postprocessing(run_dir) if postprocess else None
    bundle, _ = export_bundle(run_dir, run_dir / "bundle", overwrite=True)
    segmenter = Segmenter.from_bundle(bundle, device="cpu")
    steps = segmenter.postprocessing
    segmenter.postprocessing = Postprocessing()
    per_case, processed = [], []
    for case in held_out:
        ct, pet, label = case.read()
        mask = segmenter.predict(ct, pet, tta=tta)
        per_case.append(evaluate_segmentation(mask, label, case_id=case.patient_id))
        if postprocess:
            processed.append(evaluate_segmentation(steps.apply(mask), label, case_id=case.patient_id))
    parameters = sum(p.numel() for p in segmenter.networks[0].parameters())
    row = {"name": name, "train_s": trained - start, "infer_s": time.perf_counter() - trained,
           "parameters": parameters, "summary": summarize_segmentation(per_case),
           "network": config.get("network", "hecmamba"), "best_epoch": summary["best"].get("epoch"),
           "predict_validation_s": summary.get("predict_validation_s")}
    rows = [row]
    if postprocess:
        rows.append({**row, "name": name + POSTPROCESSED, "summary": summarize_segmentation(processed),
                     "postprocessing": steps.to_dict(), "postprocessing_report": choice["report"]})
    return rows


def ceiling_row(name: str, base: dict, held_out_dir: Path) -> dict:
    """What a perfect network on the plan's grid would score: each held-out case's true label put on its training
    region (as the training cache does: nearest neighbour at the plan's spacing) and mapped back onto the CT grid as
    predictions are (:func:`hecktor.preprocessing.labels_to_ct_grid`). What the plan's voxel size alone costs."""
    from hecktor.patches import preprocess_training_case
    from hecktor.plan import RegionPlan
    from hecktor.preprocessing import labels_to_ct_grid

    plan = RegionPlan.from_dict(base["plan"])
    per_case = []
    for case in list_training_cases(held_out_dir, 1):
        ct, pet, label = case.read()
        region = preprocess_training_case(ct, pet, label, plan)
        per_case.append(evaluate_segmentation(labels_to_ct_grid(region.label, region.grid, ct), label,
                                              case_id=case.patient_id))
    return {"name": name, "train_s": 0.0, "infer_s": 0.0, "parameters": 0, "summary": summarize_segmentation(per_case),
            "network": "ceiling"}


def headline(row: dict) -> float:
    """The mean of GTVp mean Dice and GTVn DSCagg (the comparison docs/results/benchmarks.md states)."""
    return (row["summary"]["GTVp"]["dice_mean"] + row["summary"]["GTVn"]["dsc_agg"]) / 2.0


def markdown(rows: list[dict], table: int) -> str:
    lines = [f"### Table {table} analogue", "",
             "| model | GTVp Dice | GTVp HD95 (mm) | GTVp surface Dice | GTVn DSCagg | GTVn F1agg | "
             "mean of GTVp Dice and GTVn DSCagg | parameters | training (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "summary" not in row:
            lines.append(f"| {row['name']} | {row['note']} | | | | | | | |")
            continue
        p, n = row["summary"]["GTVp"], row["summary"]["GTVn"]
        trained = row.get("network") != "ceiling"
        lines.append(f"| {row['name']} | {p['dice_mean']:.3f} | {p['hd95_mean']:.1f} | {p['surface_dice_mean']:.3f} | "
                     f"{n['dsc_agg']:.3f} | {n['f1_agg']:.3f} | {headline(row):.3f} | "
                     + (f"{row['parameters'] / 1e6:.2f} M | {row['train_s']:.0f} |" if trained else "— | — |"))
    return "\n".join(lines)


def seed_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Scored rows grouped by name without their seed: ``NAME [seed=S]`` and ``NAME [k=v, seed=S]`` (``--seeds``)
    join ``NAME`` and ``NAME [k=v]``; a row without a seed is a group of its own. Groups keep the rows' order."""
    import re

    groups: dict[str, list[dict]] = {}
    for row in rows:
        if "summary" not in row:
            continue
        match = re.fullmatch(r"(.*) \[(?:(.*), )?seed=(\d+)\]", row["name"])
        base = row["name"] if not match else match.group(1) + (f" [{match.group(2)}]" if match.group(2) else "")
        groups.setdefault(base, []).append(row)
    return groups


def repeats(rows: list[dict]) -> str:
    """Mean ± SD over the ``--seeds`` runs of each row (rows named ``NAME [seed=S]``; others are left out)."""
    import numpy as np

    groups = {base: group for base, group in seed_groups(rows).items() if len(group) > 1}  # one seed is no repeat
    if not groups:
        return ""
    lines = ["### Repeats (mean ± SD over seeds; each seed draws the fold-0 split, the initial weights and the patches)",
             "", "| model | seeds | GTVp Dice | GTVn DSCagg | GTVn F1agg | mean of GTVp Dice and GTVn DSCagg |",
             "| --- | --- | --- | --- | --- | --- |"]
    for base, group in groups.items():
        values = np.array([[r["summary"]["GTVp"]["dice_mean"], r["summary"]["GTVn"]["dsc_agg"],
                            r["summary"]["GTVn"]["f1_agg"], headline(r)] for r in group])
        cells = [f"{mean:.3f} ± {sd:.3f}" for mean, sd in zip(values.mean(0), values.std(0, ddof=1))]
        lines.append(f"| {base} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison(rows: list[dict]) -> str:
    """HecMamba's current recipe against the best of U-Net, DynUNet and nnU-Net v2 on :func:`headline`, with the
    training times (docs/results/benchmarks.md states the comparison at equal training wall time from these numbers). Rows trained
    with several seeds (``--seeds``) compare by their means over those seeds."""
    groups = seed_groups(rows)
    ours = next((group for base, group in groups.items()
                 if base.startswith(CONFIGURATIONS[0][0]) and POSTPROCESSED not in base), None)
    rivals = {base: group for base, group in groups.items()
              if group[0].get("network") in ("unet", "dynunet", "nnunet")}
    if ours is None or not rivals:
        return "Comparison: needs the HecMamba current-recipe row and at least one of U-Net, DynUNet, nnU-Net v2."

    def mean(group: list[dict], value) -> float:
        return sum(value(r) for r in group) / len(group)

    def described(group: list[dict], name: str) -> str:
        seeds = f" (mean of {len(group)} seeds)" if len(group) > 1 else ""
        return f"{name}{seeds} {mean(group, headline):.3f} in {mean(group, lambda r: r['train_s']):.0f} s"

    best_name, best = max(rivals.items(), key=lambda item: mean(item[1], headline))
    gap = mean(ours, headline) - mean(best, headline)
    return (f"Comparison (mean of GTVp Dice and GTVn DSCagg): {described(ours, 'HecMamba (current recipe)')} of "
            f"training; best of U-Net, DynUNet, nnU-Net v2: {described(best, best_name)}; difference {gap:+.3f}.")


def write_reports(work: Path, report: str, rows: list[dict], stamp: str) -> Path:
    """Write a run's report as ``WORK/bench_segmentation.{md,json}`` (the latest run) and keep a copy as
    ``WORK/reports/STAMP.{md,json}``, so that a later run of a few rows in the same folder does not lose the report of
    an earlier, larger one (the runs' bundles stay in ``WORK/runs`` either way). Returns the kept Markdown's path."""
    text, data = report + "\n", json.dumps(rows, indent=2, default=float)
    kept = work / "reports" / f"{stamp}.md"
    kept.parent.mkdir(parents=True, exist_ok=True)
    for folder, name in ((work, "bench_segmentation"), (kept.parent, stamp)):
        (folder / f"{name}.md").write_text(text)
        (folder / f"{name}.json").write_text(data)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_segmentation"), help="working folder")
    parser.add_argument("--config", type=Path, default=REPO / "training" / "configs" / "demo.json",
                        help="base training config (plan, HecMamba size, learning rate)")
    parser.add_argument("--train-cases", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=12)
    parser.add_argument("--held-out-seed", type=int, default=1000,
                        help="cohort seed of the held-out cases (the table's: 1000; tune a recipe on another)")
    parser.add_argument("--patch", type=int, help="cubic patch size in voxels (default: the config's plan)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=20, help="iterations per epoch")
    parser.add_argument("--tta", action="store_true",
                        help="mirror test-time augmentation at inference (ours, and nnU-Net v2's own mirroring)")
    parser.add_argument("--only", nargs="*", help="row names (prefixes) to run; default all")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 training cases, 2 held out, 1 epoch of 2 iterations")
    parser.add_argument("--jobs", type=int, default=2, help="configurations trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="S",
                        help="train every chosen row once per seed (split, weights, patches; nnU-Net v2 and the "
                             "ceiling once) and add a mean ± SD table")
    parser.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                        metavar="KEY=JSON", help="change the base config of every chosen row (repeatable)")
    args = parser.parse_args(argv)
    settings = dict(args.settings)
    if args.seeds and "seed" in settings:
        parser.error("--seeds and --set seed=... both set the seed: give one")
    if args.quick:
        args.train_cases, args.held_out, args.epochs, args.iterations = 8, 2, 1, 2
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _init_worker(args.threads)

    held_out_name = "held_out" if args.held_out_seed == 1000 else f"held_out_seed{args.held_out_seed}"
    train_dir, test_dir = args.work / "train", args.work / held_out_name
    if not (train_dir / "cohort.json").is_file():
        generate_cohort(train_dir, args.train_cases, seed=0, size="small")
    if not (test_dir / "cohort.json").is_file():
        generate_cohort(test_dir, args.held_out, seed=args.held_out_seed, size="small")

    base = load_config_file(args.config)
    base.update({"data_root": str(train_dir), "cache_dir": str(args.work / "cache"), "folds": [0],
                 "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                 "val_every": max(1, min(5, args.epochs)), "workers": 0, "device": "cpu", "progress": False,
                 "log_validation": False})
    base.update(settings)
    base["plan"] = base.get("plan") or {}
    if args.patch:
        base["plan"]["patch_size_zyx"] = [args.patch] * 3
    # Preprocess once here, so that the workers share a finished cache instead of building it side by side.
    prepared = TrainingConfig.from_dict({**base, "run_dir": str(args.work / "runs" / "prepare")})
    region_cache(prepared.cache_root, prepared.plan, prepared.around).prepare(list_training_cases(train_dir, 1))

    chosen = []
    for i, (name, table, overrides) in enumerate(CONFIGURATIONS):
        if args.only and not any(name.lower().startswith(o.lower()) for o in args.only):
            continue
        # With --seeds, one configuration per seed; rows that take no seed of ours (nnU-Net v2, the ceiling) run once.
        seeded = args.seeds and not (overrides.get("network") == "nnunet" or overrides.get("_ceiling"))
        for seed in args.seeds if seeded else [None]:
            row_settings = settings if seed is None else {**settings, "seed": seed}
            chosen.append((i, name + setting_suffix(row_settings), table,
                           overrides if seed is None else {**overrides, "seed": seed}))
    rows = []
    if not nnunet_available():
        rows += [{"name": name, "table": table, "order": i, "note": "not installed (`make bench-nnunet`)"}
                 for i, name, table, overrides in chosen if overrides.get("network") == "nnunet"]
        chosen = [item for item in chosen if item[3].get("network") != "nnunet"]
    chosen.sort(key=lambda item: -COST[item[3].get("network", base.get("network", "hecmamba"))])
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(args.threads,)) as pool:
        futures = {pool.submit(run_configuration, name, overrides, base, args.work, test_dir, args.tta, args.threads):
                   (i, name, table) for i, name, table, overrides in chosen}
        print(f"training {len(futures)} configuration(s), {args.jobs} at a time ...", flush=True)
        for future in as_completed(futures):
            i, name, table = futures[future]
            try:
                results = future.result()
            except Exception as error:  # report the others rather than lose hours of training to one failure
                print(f"  {name}: FAILED: {type(error).__name__}: {error}", flush=True)
                rows.append({"name": name, "table": table, "order": i, "note": f"failed: {type(error).__name__}"})
                continue
            for k, result in enumerate(results):
                row = {**result, "table": table, "order": i + k / 10}
                rows.append(row)
                print(f"  {row['name']}: GTVp Dice {row['summary']['GTVp']['dice_mean']:.3f}, GTVn DSCagg "
                      f"{row['summary']['GTVn']['dsc_agg']:.3f}, F1agg {row['summary']['GTVn']['f1_agg']:.3f}, "
                      f"training {row['train_s']:.0f} s ({(time.perf_counter() - start) / 60:.1f} min elapsed)",
                      flush=True)
            (args.work / "bench_segmentation.partial.json").write_text(json.dumps(rows, indent=2, default=float))
    rows.sort(key=lambda row: row["order"])

    budget = (f"Budget: fold 0 of a 5-fold split of {args.train_cases} synthetic small cases, {args.epochs} epochs × "
              f"{args.iterations} iterations of batch 2, plan and HecMamba size from {args.config.name} "
              f"(patches {base['plan'].get('patch_size_zyx')} voxels at {base['plan'].get('spacing_mm_xyz')} mm), CPU, "
              f"{args.jobs} job(s) of {args.threads} thread(s) side by side, "
              f"{(time.perf_counter() - start) / 60:.0f} min in all; {args.held_out} held-out cases (cohort seed "
              f"{args.held_out_seed}); base config changed by --set: {settings or 'nothing'}; "
              f"TTA {'on' if args.tta else 'off'}.")
    report = "\n\n".join([budget] + [markdown([r for r in rows if r["table"] == t], t)
                                     for t in (1, 2) if any(r["table"] == t for r in rows)]
                          + [text for text in (repeats(rows),) if text] + [comparison(rows)])
    print("\n" + report)
    kept = write_reports(args.work, report, rows, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    print(f"\nreport: {args.work / 'bench_segmentation.md'} (this run's copy: {kept})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
