"""What the Task 2 and Task 3 benchmark scripts (``bench_prognosis.py``, ``bench_hpv.py``) share: the synthetic
cohort of part (a), the random full-size fusion ensemble and the per-case inference timing of part (c), the common
command-line options and the report. The scripts run as ``python benchmarks/bench_x.py`` and import this module by
its name, as a sibling file (the script's folder is first on ``sys.path``)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.clinical import ClinicalEncoder
from hecktor.datasets import write_gc_input
from hecktor.images import find_single_image, read_image
from hecktor.networks.fused import RESNET18_BACKBONE, FusedFeatureExtractor

REPO = Path(__file__).resolve().parents[1]
REAL_CSV = REPO.parent / "shared" / "data" / "real" / "clinical" / "tcia_hn1_hecktor2025_columns.csv"
"""The real HN1 table of part (b)."""


def mean_sd(values: list[float]) -> str:
    """``mean ± SD`` (population SD) with three decimals."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def synthetic_cohort(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Part (a)'s synthetic cohort of ``args.cases`` small cases (seed ``args.cohort_seed``) in ``args.work``,
    generated on first use, and its ``cohort.json``."""
    from hecktor.synthetic import generate_cohort

    cohort_dir = args.work / f"synthetic_{args.cases}_{args.cohort_seed}"
    if not (cohort_dir / "cohort.json").is_file():
        print(f"generating {args.cases} small synthetic cases in {cohort_dir} ...", flush=True)
        generate_cohort(cohort_dir, cases=args.cases, seed=args.cohort_seed, size="small", overwrite=True,
                        progress=True)
    return cohort_dir, json.loads((cohort_dir / "cohort.json").read_text())


def random_fusion_folds(n_folds: int = 5) -> Iterator[tuple[int, ClinicalEncoder, FusedFeatureExtractor]]:
    """Per fold, a clinical encoder fitted on 30 made-up records and a full-size ResNet-18 fusion network with
    random weights (seeded by the fold): part (c)'s ensemble, whose time does not depend on the weights' values.
    Lazy, so that a caller drawing each fold's last stage from its own generator draws as it did fold by fold."""
    rows = [{"Age": str(40 + i), "Gender": str(i % 2), "Tobacco Consumption": str(i % 2), "Alcohol Consumption": "0",
             "Performance Status": str(i % 3), "Treatment": str(i % 2), "M-stage": "M0"} for i in range(30)]
    for k in range(n_folds):
        encoder = ClinicalEncoder().fit(rows)
        torch.manual_seed(k)
        yield k, encoder, FusedFeatureExtractor(encoder.n_features, mode="fusion", **RESNET18_BACKBONE).eval()


def time_inference(ensemble: Any, predictor_class: Any, task: int, args: argparse.Namespace, last_stage: str,
                   cpu_note: str = "", case_size: str = "realistic") -> list[str]:
    """Part (c): wall time of one ``realistic`` synthetic case read from ``.mha`` files through
    ``predictor.predict`` (preprocessing included) on the CPU with 2 threads, ``args.repeats`` times; bundle
    loading and image reading timed apart.

    Args:
        ensemble: the in-memory fold ensemble (written as a bundle and loaded back, as the container does).
        predictor_class: its class (``from_bundle``).
        task: 2 or 3 (the case's ``ehr.json``).
        args: the script's options (``seed``, ``repeats``).
        last_stage: the table's label of the folds' last stage (``survival_s``).
        cpu_note: said after the CPU times.
        case_size: the synthetic case's size (``realistic``; tests use ``small``).

    Returns:
        the Markdown lines of the section.
    """
    from hecktor.synthetic import make_case

    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"generating one {case_size} synthetic case and writing the bundle ...", flush=True)
        case = make_case(args.seed, case_size)
        write_gc_input(case.ct, case.pet, tmp / "input", ehr=case.ehr(task=task), seed=args.seed)
        ensemble.to_bundle(tmp / "bundle")
        bundle_mb = sum(p.stat().st_size for p in (tmp / "bundle").iterdir()) / 2**20

        started = time.perf_counter()
        predictor = predictor_class.from_bundle(tmp / "bundle", device="cpu")
        load_s = time.perf_counter() - started
        runs = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            ct = read_image(find_single_image(tmp / "input" / "images" / "ct"), "CT")
            pet = read_image(find_single_image(tmp / "input" / "images" / "pet"), "PET")
            read_s = time.perf_counter() - started
            cpu_started = time.process_time()
            answer = predictor.predict(ct, pet, case.ehr(task=task))
            cpu_s = time.process_time() - cpu_started
            timings = predictor.last_report.timings
            runs.append({"read_s": read_s, **timings, "cpu_s": cpu_s, "answer": answer})
            print(f"  run {repeat + 1}: read {read_s:.2f} s, predict {timings['total_s']:.2f} s", flush=True)
    first, rest = runs[0], runs[1:] or runs
    keys = ("read_s", "preprocess_s", "clinical_s", "features_s", "survival_s", "total_s", "cpu_s")
    median = {k: statistics.median(r[k] for r in rest) for k in keys}
    ct_size = "×".join(str(s) for s in case.ct.GetSize())
    pet_size = "×".join(str(s) for s in case.pet.GetSize())
    lines = [
        "### (c) Per-case inference time, 5-fold fusion ensemble, full-size ResNet-18 at 96³, CPU, 2 threads",
        "",
        f"One `realistic` synthetic case (CT {ct_size}, PET {pet_size}) read from `.mha`; bundle "
        f"{bundle_mb:.0f} MB, loaded in {load_s:.1f} s (once per container run). {args.repeats} runs; first run "
        "and the median of the later runs.",
        "",
        "| stage | first run (s) | median of later runs (s) |",
        "| --- | --- | --- |",
    ]
    for key, label in (("read_s", "read CT + PET"), ("preprocess_s", "preprocess (localise, box, resample, normalise)"),
                       ("clinical_s", "clinical encoding (5 folds)"), ("features_s", "networks (5 folds)"),
                       ("survival_s", last_stage)):
        lines.append(f"| {label} | {first[key]:.2f} | {median[key]:.2f} |")
    per_case = first["read_s"] + first["total_s"]
    lines.append(f"| **read + predict** | **{per_case:.2f}** | **{median['read_s'] + median['total_s']:.2f}** |")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines += ["", f"Target ≤ 20 s per case; with bundle loading the first case takes {per_case + load_s:.1f} s. "
              f"CPU time of predict (both threads together): first {first['cpu_s']:.1f} s, median "
              f"{median['cpu_s']:.1f} s{cpu_note}. Load average at the end (1, 5, 15 min): {load} on "
              f"{os.cpu_count()} cores."]
    return lines


# --------------------------------------------------------------------------------------------------- command line
def add_common_arguments(parser: argparse.ArgumentParser, name: str, parts: tuple[str, ...]) -> None:
    """``--parts``, ``--work``, ``--report`` and ``--seed`` of the script ``name`` (e.g. ``bench_hpv``)."""
    parser.add_argument("--parts", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / f"hecktor_{name}",
                        help="cohort, cache and runs of part (a) (reused between invocations)")
    parser.add_argument("--report", type=Path, default=None, help=f"Markdown report (default: WORK/{name}.md)")
    parser.add_argument("--seed", type=int, default=0, help="fold split, training and case seed")


def add_network_arguments(parser: argparse.ArgumentParser, presets: Any) -> None:
    """Part (a)'s ``--network`` (one of ``presets``) and ``--conv1-stride``."""
    parser.add_argument("--network", choices=sorted(presets), default="tiny", help="(a) backbone")
    parser.add_argument("--conv1-stride", type=int, default=None, help="(a) stem stride override")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Part (a)'s ``--epochs``, ``--batch-size`` and ``--lr``."""
    parser.add_argument("--epochs", type=int, default=20, help="(a)")
    parser.add_argument("--batch-size", type=int, default=16, help="(a)")
    parser.add_argument("--lr", type=float, default=3e-3, help="(a)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Part (a)'s ``--early-stopping-fraction``, ``--device`` and ``--threads``."""
    parser.add_argument("--early-stopping-fraction", type=float, default=0.2, help="(a)")
    parser.add_argument("--device", default="auto", help="(a) training device (auto: CUDA when available)")
    parser.add_argument("--threads", type=int, default=2, help="(a) CPU threads for training")


def write_report(args: argparse.Namespace, sections: dict[str, Callable[[argparse.Namespace], list[str]]],
                 title: str, name: str) -> int:
    """Run the parts of ``args.parts`` in order, print each section and write them all to ``args.report``
    (default ``WORK/<name>.md``) under ``title``."""
    report = [title, ""]
    for part in sorted(args.parts):
        lines = sections[part](args)
        print("\n" + "\n".join(lines) + "\n", flush=True)
        report += lines + [""]
    args.report = args.report or args.work / f"{name}.md"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(report))
    print(f"wrote {args.report}")
    return 0
