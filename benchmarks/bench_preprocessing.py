"""Benchmark: files on disk → network-ready tensors, ours against the organisers' template approach.

Ours (``hecktor.preprocessing``): read CT and PET, localise the head and neck in the PET, resample CT and PET
straight onto the Task 1 region (1 mm) and onto the Task 2 box (96³), normalise.

Template approach (BioMedIA-MBZUAI/HECKTOR2025 docker-template, re-implemented here for timing): read CT and PET,
B-spline-resample the whole CT∩PET overlap to 1 mm, then crop the same regions from that volume (and resize the
Task 2 box to 96³ with trilinear interpolation).

Both run in one process on the same files, one after the other, with the same number of threads; the script
prints the times and their ratio. Usage::

    python benchmarks/bench_preprocessing.py                  # one realistic synthetic case, 2 threads
    python benchmarks/bench_preprocessing.py --case-dir DIR   # a HECKTOR case folder (<PID>__CT.nii.gz, ...)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.datasets import write_gc_input
from hecktor.geometry import Grid, resample_to_grid
from hecktor.images import read_image, find_single_image
from hecktor.localization import localize_head_and_neck
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.preprocessing import (
    check_case,
    network_input,
    normalize_ct,
    normalize_pet,
    region_grid,
    box_grid,
)


def ours(ct_path: Path, pet_path: Path, plans: tuple[RegionPlan, BoxPlan]) -> dict[str, np.ndarray]:
    """The library's path for both tasks (localisation is shared, as it would be if one process served both)."""
    region_plan, box_plan = plans
    ct, pet, _ = check_case(read_image(ct_path, "CT"), read_image(pet_path, "PET"), region_plan)
    localization = localize_head_and_neck(pet, region_plan, reference=ct)
    return {
        "task1": network_input(ct, pet, region_grid(localization, region_plan), region_plan),
        "task2": network_input(ct, pet, box_grid(localization, box_plan), box_plan),
    }


def template(ct_path: Path, pet_path: Path, plans: tuple[RegionPlan, BoxPlan]) -> dict[str, np.ndarray]:
    """Whole-overlap B-spline resampling to 1 mm, then cropping (the organisers' template approach)."""
    plan, box_plan = plans
    ct = sitk.ReadImage(str(ct_path), sitk.sitkFloat32)
    pet = sitk.ReadImage(str(pet_path), sitk.sitkFloat32)
    ct_low, ct_high = Grid.from_image(ct).physical_bounds()
    pet_low, pet_high = Grid.from_image(pet).physical_bounds()
    low, high = np.maximum(ct_low, pet_low), np.minimum(ct_high, pet_high)
    overlap = Grid.centered((low + high) / 2, high - low, spacing_xyz=(1.0, 1.0, 1.0))
    ct_1mm = resample_to_grid(ct, overlap, "bspline", plan.ct_pad_hu)
    pet_1mm = resample_to_grid(pet, overlap, "bspline", plan.pet_pad_suv)
    # Same anchor as ours, so both produce the same regions; only the resampling strategy differs.
    localization = localize_head_and_neck(pet, plan, reference=ct)
    out = {}
    for task, grid in (("task1", region_grid(localization, plan)), ("task2", box_grid(localization, box_plan))):
        box_low, box_high = grid.physical_bounds()
        start = np.clip(np.round(box_low - low).astype(int), 0, None)
        stop = np.minimum(np.round(box_high - low).astype(int), np.asarray(overlap.size_xyz))
        crop = tuple(slice(a, b) for a, b in zip(start[::-1], stop[::-1]))
        ct_crop = sitk.GetArrayViewFromImage(ct_1mm)[crop]
        pet_crop = sitk.GetArrayViewFromImage(pet_1mm)[crop]
        image = np.stack([normalize_ct(ct_crop, plan.ct_window_hu), normalize_pet(pet_crop)])
        if task == "task2":
            image = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=box_plan.input_shape_zyx,
                                                    mode="trilinear", align_corners=False)[0].numpy()
        out[task] = image
    return out


def _time(function, *args, repeats: int) -> tuple[float, dict]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _synthetic_case(folder: Path, seed: int) -> tuple[Path, Path]:
    from hecktor.synthetic import make_case

    case = make_case(seed, "realistic")
    write_gc_input(case.ct, case.pet, folder, seed=seed)
    return find_single_image(folder / "images" / "ct"), find_single_image(folder / "images" / "pet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case-dir", type=Path, help="a HECKTOR case folder; default: one realistic synthetic case")
    parser.add_argument("--threads", type=int, default=2, help="threads for SimpleITK and torch (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    torch.set_num_threads(args.threads)
    plan = (RegionPlan(), BoxPlan())
    with tempfile.TemporaryDirectory() as tmp:
        if args.case_dir:
            pid = args.case_dir.name
            ct_path, pet_path = args.case_dir / f"{pid}__CT.nii.gz", args.case_dir / f"{pid}__PT.nii.gz"
        else:
            print("generating one realistic synthetic case ...", flush=True)
            ct_path, pet_path = _synthetic_case(Path(tmp), args.seed)
        ct = sitk.ReadImage(str(ct_path))
        pet = sitk.ReadImage(str(pet_path))
        print(f"CT  {ct.GetSize()} at {tuple(round(s, 2) for s in ct.GetSpacing())} mm, {ct_path.name}")
        print(f"PET {pet.GetSize()} at {tuple(round(s, 2) for s in pet.GetSpacing())} mm, {pet_path.name}")
        print(f"threads: {args.threads}")

        ours_s, ours_out = _time(ours, ct_path, pet_path, plan, repeats=args.repeats)
        template_s, template_out = _time(template, ct_path, pet_path, plan, repeats=1)

    agreement = {}
    for task in ours_out:
        # The template's integer crop can differ from our grid by a voxel along an axis: compare the common part.
        common = tuple(slice(0, min(a, b)) for a, b in zip(ours_out[task].shape[1:], template_out[task].shape[1:]))
        agreement[task] = float(np.abs(ours_out[task][0][common] - template_out[task][0][common]).mean())
    print()
    print("| approach | files → tensors, both tasks (s) |")
    print("| --- | --- |")
    print(f"| ours: crop first, linear, straight onto each region | {ours_s:.2f} |")
    print(f"| template: whole-overlap B-spline to 1 mm, then crop | {template_s:.2f} |")
    print(f"\nspeed-up: {template_s / ours_s:.1f}x (target >= 10x); ours {ours_s:.2f} s (target <= 1.5 s)")
    print("shapes:", {task: tuple(v.shape) for task, v in ours_out.items()})
    print("mean |CT channel difference| ours vs template:", {k: round(v, 4) for k, v in agreement.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
