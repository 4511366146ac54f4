"""What the Bq/ml heuristic costs against the organisers' exact factor (``suv_conversion_tags.csv``).

Synthetic Task 1 cases (SUV, with their label maps) are written again in Bq/ml with realistic factors: a body weight
of 50-110 kg, an injected dose of 150-450 MBq, 45-90 minutes from injection to scan (F-18, half-life 6586.2 s), so
``factor = weight x 1000 / (dose x 2^(-elapsed / half-life))`` and ``Bq/ml = SUV / factor``. Each Bq/ml case is read
twice through the library: with a conversion table (``list_training_cases(..., suv_table=...)``: exact SUV) and
without (the heuristic of ``hecktor.repair.repair_pet_unit``: divided by the body's median uptake). The biomarkers of
the case's true label map (``hecktor.biomarkers.compute_biomarkers``) are compared with those of the SUV original,
in absolute SUV and relative to the body (``body_relative_pet``, Task 2's default). With ``--real DIR`` the same is
done on real PET/CT cases in SUV (``<DIR>/<PID>/<PID>__CT.nii.gz, __PT.nii.gz, <PID>.nii.gz``)::

    python benchmarks/bench_suv_table.py --cases 20
    python benchmarks/bench_suv_table.py --cases 20 --real ../shared/data/real/petct

prints a Markdown table: per biomarker, the heuristic's and the exact conversion's relative error against the SUV
original (median and largest absolute error over the cases, in %).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hecktor.biomarkers import body_relative_pet, compute_biomarkers
from hecktor.datasets import list_training_cases
from hecktor.localization import body_uptake
from hecktor.repair import repair_case

F18_HALF_LIFE_S = 6586.2
BIOMARKERS = ("gtvp_suv_max", "gtvp_suv_mean", "gtvp_suv_peak", "gtvp_tlg", "gtvn_suv_max", "gtvn_tlg")


def draw_factor(rng: np.random.Generator) -> dict[str, float]:
    """One patient's row of the organisers' table, drawn from realistic ranges."""
    weight = rng.uniform(50.0, 110.0)
    dose = rng.uniform(150e6, 450e6)
    elapsed = rng.uniform(45 * 60.0, 90 * 60.0)
    at_scan = dose * 2.0 ** (-elapsed / F18_HALF_LIFE_S)
    return {"patient_weight_kg": weight, "radionuclide_total_dose_bq": dose, "elapsed_seconds_injection_to_scan": elapsed,
            "dose_for_suv_bq": at_scan, "bqml_to_suvbw_factor": weight * 1000.0 / at_scan}


def write_bqml_copy(source: Path, out: Path, rng: np.random.Generator) -> tuple[Path, list[dict[str, float]]]:
    """``source``'s case folders again under ``out/Task 1`` with every PET in Bq/ml, and the table of their factors."""
    rows = []
    for case_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pid = case_dir.name
        target = out / "Task 1" / pid
        target.mkdir(parents=True)
        row = {"pid": pid, "units": "BQML", **draw_factor(rng)}
        for suffix in ("__CT.nii.gz", ".nii.gz"):
            (target / f"{pid}{suffix}").symlink_to((case_dir / f"{pid}{suffix}").resolve())
        pet = sitk.Cast(sitk.ReadImage(str(case_dir / f"{pid}__PT.nii.gz")), sitk.sitkFloat32)
        sitk.WriteImage(pet / row["bqml_to_suvbw_factor"], str(target / f"{pid}__PT.nii.gz"), True)
        rows.append(row)
    table = out / "suv_conversion_tags.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["pid", "units", *rows[0].keys() - {"pid", "units"}])
        writer.writeheader()
        writer.writerows({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    return table, rows


def biomarkers(ct: sitk.Image, pet: sitk.Image, mask: sitk.Image) -> tuple[dict[str, float], dict[str, float]]:
    """The biomarkers of ``mask`` in the repaired PET, absolute and relative to the body."""
    ct, pet, _ = repair_case(ct, pet)
    absolute = compute_biomarkers(mask, pet).values
    relative = compute_biomarkers(mask, body_relative_pet(pet, ct)).values
    return {n: absolute[n] for n in BIOMARKERS}, {n: relative[n] for n in BIOMARKERS}


def measure(source: Path, work: Path, seed: int) -> tuple[dict[str, dict[str, list[float]]], list[float], list[float]]:
    """Relative errors (heuristic and exact, absolute and body-relative) per biomarker over ``source``'s cases, the
    factors drawn and the body's median SUV of each original."""
    table, rows = write_bqml_copy(source, work / "bqml", np.random.default_rng(seed))
    (work / "original").mkdir()
    (work / "original" / "Task 1").symlink_to(source.resolve())  # any folder of case folders, read as Task 1's
    originals = {c.patient_id: c for c in list_training_cases(work / "original", 1)}
    exact = {c.patient_id: c for c in list_training_cases(work / "bqml", 1, suv_table=table)}
    heuristic = {c.patient_id: c for c in list_training_cases(work / "bqml", 1)}
    errors: dict[str, dict[str, list[float]]] = {}
    body = []
    for pid, original in originals.items():
        ct, pet, mask = original.read()
        body.append(body_uptake(pet, ct))
        truth = biomarkers(ct, pet, mask)
        for method, cases in (("exact", exact), ("heuristic", heuristic)):
            measured = biomarkers(*cases[pid].read())
            for scale, values, reference in (("absolute", measured[0], truth[0]), ("body", measured[1], truth[1])):
                for name in BIOMARKERS:
                    if reference[name] > 0:
                        errors.setdefault(f"{method} {scale}", {}).setdefault(name, []).append(
                            values[name] / reference[name] - 1.0)
    return errors, [row["bqml_to_suvbw_factor"] for row in rows], body


def report(title: str, errors: dict[str, dict[str, list[float]]], factors: list[float], body: list[float]) -> str:
    signed = np.asarray(errors["heuristic absolute"]["gtvp_suv_max"]) * 100.0
    lines = [f"**{title}**: {len(body)} case(s); factors {min(factors):.3g}-{max(factors):.3g}; the originals' body "
             f"median SUV {min(body):.2f}-{max(body):.2f} (median {np.median(body):.2f}); the heuristic's GTVp SUVmax "
             f"error {signed.min():+.1f} % to {signed.max():+.1f} % (signed)", "",
             "| biomarker | heuristic, absolute SUV: median / max abs. error | exact, absolute SUV | heuristic, "
             "body-relative | exact, body-relative |", "|---|---|---|---|---|"]
    for name in BIOMARKERS:
        cells = []
        for key in ("heuristic absolute", "exact absolute", "heuristic body", "exact body"):
            values = np.abs(errors.get(key, {}).get(name, [])) * 100.0
            cells.append(f"{np.median(values):.3g} % / {np.max(values):.3g} %" if values.size else "no such lesion")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20, help="synthetic cases (default: %(default)s)")
    parser.add_argument("--size", choices=("small", "realistic"), default="small",
                        help="synthetic case size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="cohort and factor seed (default: %(default)s)")
    parser.add_argument("--real", type=Path, help="also a folder of real SUV cases <PID>/<PID>__PT.nii.gz, ...")
    args = parser.parse_args(argv)
    from hecktor.synthetic import generate_cohort

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-suv-") as work:
        work = Path(work)
        print(f"generating {args.cases} {args.size} synthetic cases ...", file=sys.stderr, flush=True)
        cohort = generate_cohort(work / "synthetic", cases=args.cases, seed=args.seed, size=args.size).out_dir
        parts = [("synthetic", cohort / "Task 1")] + ([("real", args.real)] if args.real is not None else [])
        for name, source in parts:
            print(f"measuring {name} cases in {source} ...", file=sys.stderr, flush=True)
            errors, factors, body = measure(source, work / name, args.seed)
            print(report(f"{name} ({source.name})", errors, factors, body) + "\n")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
