"""A container's answer on a case and on copies of it that must answer alike: the PET in Bq/ml (× 7000), the PET
with 8 voxels of 1e20, both images moved 2 m in space. Measured through the task's ``inference.py`` on a trained
bundle, e.g. the demo's (``make demo``; ``demo_output/held_out/task2/<PID>`` are its held-out cases)::

    python benchmarks/bench_clean_twins.py --task 2 --case demo_output/held_out/task2/CHUM-001 \
        --bundle task2_container/resources/bundle

prints one line per copy: the answer, its difference from the clean answer, and the warnings the container wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hecktor.images import find_single_image
from hecktor.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def _bq_per_ml(ct: sitk.Image, pet: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    return ct, sitk.Cast(pet, sitk.sitkFloat32) * 7000.0


def _absurd_voxels(ct: sitk.Image, pet: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    array = sitk.GetArrayFromImage(pet).astype(np.float32)
    k, j, i = (np.asarray(array.shape) // 2).tolist()
    array[k:k + 2, j:j + 2, i:i + 2] = np.float32(1e20)  # 8 voxels in the middle of the PET
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(pet)
    return ct, out


def _moved(ct: sitk.Image, pet: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    for image in (ct, pet):
        image.SetOrigin(tuple(np.asarray(image.GetOrigin()) + (0.0, 0.0, 2000.0)))
    return ct, pet


COPIES = {"clean": None, "PET x 7000 (Bq/ml)": _bq_per_ml, "PET with 8 voxels of 1e20": _absurd_voxels,
          "both images moved 2 m": _moved}


def run_container(task: int, input_dir: Path, bundle: Path, output_dir: Path) -> tuple[object, list[str]]:
    spec = get_task(task)
    path = REPO / spec.container / "inference.py"
    module_spec = importlib.util.spec_from_file_location(f"{spec.container}_inference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = module.main(["--input", str(input_dir), "--output", str(output_dir), "--resources", str(bundle),
                              "--device", "cpu"], start_time=time.time())
    if status != 0:
        raise SystemExit(f"error: the container failed on {input_dir} (status {status})")
    warnings = [line[len("WARNING "):] for line in out.getvalue().splitlines() if line.startswith("WARNING ")]
    return json.loads((output_dir / spec.output).read_text()), warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", type=int, choices=(2, 3), default=2)
    parser.add_argument("--case", type=Path, required=True, help="a Grand-Challenge case folder (images/ct, ...)")
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args(argv)
    clean_answer = None
    with tempfile.TemporaryDirectory(prefix="clean-twins-") as work:
        for name, spoil in COPIES.items():
            folder = Path(work) / name.replace(" ", "_")
            shutil.copytree(args.case, folder / "in")
            if spoil is not None:
                paths = [find_single_image(folder / "in" / "images" / m) for m in ("ct", "pet")]
                images = spoil(*(sitk.ReadImage(str(p)) for p in paths))
                for path, image in zip(paths, images):
                    sitk.WriteImage(image, str(path), True)
            answer, warnings = run_container(args.task, folder / "in", args.bundle, folder / "out")
            clean_answer = answer if clean_answer is None else clean_answer
            difference = (f"{abs(answer - clean_answer):.4f}" if isinstance(answer, float)
                          else str(answer == clean_answer))
            print(f"{name}: {answer} (difference from clean: {difference}); warnings: "
                  + (" | ".join(w[:160] for w in warnings) or "none"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
