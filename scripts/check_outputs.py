"""Check one container run's outputs against the HECKTOR output contract (docs/reference/platform-interface.md).

What is checked follows the task's output kind in the registry (:mod:`hecktor.tasks`):

* ``mask`` (Task 1, ``OUTPUT/images/tumor-lymph-node-segmentation/output.mha``): the file exists, is a compressed 3-D
  UInt8 image with labels in {0, 1, 2}, and lies on the input CT's grid (same size, spacing, origin and direction;
  also checked against ``expected.json`` of ``make_test_inputs.py`` when given);
* ``json-number`` (Task 2, ``OUTPUT/rfs.json``): one finite bare JSON number;
* ``json-boolean`` (Task 3, ``OUTPUT/hpv-status.json``): one bare JSON ``true`` or ``false``;
* ``hecktor2026`` (HECKTOR 2026, four files): the mask as ``mask`` (in ``images/head-neck-tumor-segmentation/``),
  ``OUTPUT/t-stage.json`` and ``OUTPUT/n-stage.json`` each one JSON string, ``"T1"``..``"T4"`` and ``"N0"``..``"N3"``,
  and ``OUTPUT/rfs.json`` one finite JSON number of days above 0.

For every kind: nothing else was left in the output folder (a stray file there is usually the temporary file of a
write that did not finish).

Exit status 0 when every check passes; otherwise 1, with one line per failed check on stderr.

Example::

    python scripts/check_outputs.py --task 1 --input IN/case-000-identity --output OUT/case-000-identity \\
        --expected IN/expected.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from hecktor.labels import FOREGROUND, LABELS
from hecktor.tasks import get_task, task_numbers

ALLOWED_LABELS = set(LABELS.values())
IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii", ".nii.gz")
# Geometry is compared with tolerances far below a voxel: both images go through the same MetaIO text round trip,
# so a correct mask matches to the last digit; the margin only absorbs harmless float noise.
SPACING_ORIGIN_ATOL_MM = 1e-4
DIRECTION_ATOL = 1e-6


def _input_ct_path(input_dir: Path) -> Path:
    folder = input_dir / "images" / "ct"
    images = sorted(p for p in folder.glob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if len(images) != 1:
        raise FileNotFoundError(f"expected one CT image in {folder}, found {len(images)}")
    return images[0]


def _unexpected_files(output_dir: Path, expected: Path, others: Sequence[Path] = ()) -> list[str]:
    allowed = {expected, *(output_dir / other for other in others)}
    return sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file() and p not in allowed)


def _mha_is_compressed(path: Path) -> bool:
    """Whether a MetaImage header says ``CompressedData = True`` (the header is text, before ElementDataFile)."""
    with path.open("rb") as handle:
        for raw in handle:
            key, _, value = raw.decode("latin-1").partition("=")
            if key.strip() == "CompressedData":
                return value.strip().lower() == "true"
            if key.strip() == "ElementDataFile":
                break
    return False


def compare_geometry(image: sitk.Image, reference: dict[str, Any], what: str) -> list[str]:
    """Differences between ``image``'s grid and ``reference`` (lists ``size``, ``spacing``, ``origin``,
    ``direction`` as in ``make_test_inputs.image_geometry``), one line each."""
    problems = []
    if list(image.GetSize()) != list(reference["size"]):
        problems.append(f"mask size {list(image.GetSize())} differs from the {what}'s {list(reference['size'])}")
    tolerances = {"spacing": SPACING_ORIGIN_ATOL_MM, "origin": SPACING_ORIGIN_ATOL_MM, "direction": DIRECTION_ATOL}
    for key, atol in tolerances.items():
        actual = np.asarray(getattr(image, f"Get{key.capitalize()}")(), dtype=float)
        wanted = np.asarray(reference[key], dtype=float)
        if actual.shape != wanted.shape or not np.allclose(actual, wanted, rtol=0.0, atol=atol):
            problems.append(
                f"mask {key} {np.round(actual, 6).tolist()} differs from the {what}'s {np.round(wanted, 6).tolist()}"
            )
    return problems


def _geometry(image: sitk.Image) -> dict[str, Any]:
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def check_mask(input_dir: str | Path, output_dir: str | Path, output: Path,
               expected_ct: dict[str, Any] | None = None, others: Sequence[Path] = ()) -> list[str]:
    """Problems with a mask output folder (empty list: all checks passed).

    Args:
        input_dir: the case's input folder (``images/ct/<uuid>.mha`` is the reference grid).
        output_dir: the folder mounted at ``/output``.
        output: the mask's path relative to ``output_dir`` (the task's ``output`` in the registry).
        expected_ct: the CT geometry recorded when the input was made (``expected.json``), checked as well.
        others: the task's other output files (relative to ``output_dir``), not stray files.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    mask_path = output_dir / output
    if not mask_path.is_file():
        return [f"mask missing: {mask_path}"]
    problems = []
    extra = _unexpected_files(output_dir, mask_path, others)
    if extra:
        problems.append(f"unexpected file(s) in {output_dir}: {', '.join(extra[:5])}")
    try:
        mask = sitk.ReadImage(str(mask_path))
    except RuntimeError as error:
        return problems + [f"mask unreadable: {mask_path}: {str(error).strip().splitlines()[-1][:200]}"]
    if not _mha_is_compressed(mask_path):
        problems.append(f"mask is not compressed (CompressedData = True expected): {mask_path}")
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        return problems + [f"mask is not a 3-D scalar image (dimension {mask.GetDimension()}, "
                           f"{mask.GetNumberOfComponentsPerPixel()} components): {mask_path}"]
    if mask.GetPixelID() != sitk.sitkUInt8:
        problems.append(f"mask pixel type is {mask.GetPixelIDTypeAsString()}, expected 8-bit unsigned integer (UInt8)")
    labels = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(mask))}
    if not labels <= ALLOWED_LABELS:
        problems.append(f"mask labels {sorted(labels)} are not within {sorted(ALLOWED_LABELS)}")
    try:
        ct = sitk.ReadImage(str(_input_ct_path(input_dir)))
    except (FileNotFoundError, RuntimeError) as error:
        return problems + [f"cannot read the input CT to compare grids: {error}"]
    problems += compare_geometry(mask, _geometry(ct), "input CT")
    if expected_ct is not None:
        problems += compare_geometry(mask, expected_ct, "expected CT (expected.json)")
    return problems


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def check_json_output(output_dir: str | Path, output: Path, kind: str) -> list[str]:
    """Problems with a one-value JSON output folder (empty list: all checks passed).

    Args:
        output_dir: the folder mounted at ``/output``.
        output: the file's path relative to ``output_dir`` (the task's ``output`` in the registry).
        kind: ``json-number`` (one finite bare number) or ``json-boolean`` (bare ``true`` or ``false``).
    """
    output_dir = Path(output_dir)
    path = output_dir / output
    if not path.is_file():
        return [f"output file missing: {path}"]
    extra = _unexpected_files(output_dir, path)
    problems = [f"unexpected file(s) in {output_dir}: {', '.join(extra[:5])}"] if extra else []
    return problems + _check_json_value(path, kind)


def check_hecktor2026(input_dir: str | Path, output_dir: str | Path, outputs: Sequence[Path],
                      expected_ct: dict[str, Any] | None = None) -> list[str]:
    """Problems with a HECKTOR 2026 output folder (empty list: all checks passed): the mask as :func:`check_mask`
    checks it, the T and N stage (one JSON string each, ``T1``..``T4`` and ``N0``..``N3``), the RFS time (one finite
    JSON number of days above 0), and no other file.

    Args:
        input_dir, output_dir, expected_ct: as :func:`check_mask`'s.
        outputs: the four files relative to ``output_dir`` (the registry's ``outputs``): mask, T stage, N stage, RFS.
    """
    mask, t_stage, n_stage, rfs = outputs
    problems = check_mask(input_dir, output_dir, mask, expected_ct, others=outputs[1:])
    for output, kind in ((t_stage, "t-stage"), (n_stage, "n-stage"), (rfs, "days")):
        path = Path(output_dir) / output
        problems += _check_json_value(path, kind) if path.is_file() else [f"output file missing: {path}"]
    return problems


def _check_json_value(path: Path, kind: str) -> list[str]:
    """Problems with one bare JSON value: ``json-number`` (finite), ``json-boolean``, ``days`` (finite, above 0),
    ``t-stage`` or ``n-stage`` (a string of the challenge's stages)."""
    stages = _stages(kind)
    wanted = {"json-number": "a finite number", "json-boolean": "true or false", "days": "a number of days above 0"
              }.get(kind) or f"one of {', '.join(stages)}"
    problems: list[str] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        # Python's json accepts NaN and Infinity, which are not JSON: refuse them at parse time.
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        return problems + [f"{path} is not valid JSON holding {wanted} ({error}): {text[:80]!r}"]
    if kind == "json-boolean":
        if not isinstance(value, bool):
            problems.append(f"{path} must hold a bare true or false, got a JSON {type(value).__name__}: {text[:80]!r}")
    elif stages:
        if not isinstance(value, str) or value not in stages:
            problems.append(f"{path} must hold one JSON string, {wanted}; got {text[:80]!r}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{path} must hold one bare number, got a JSON {type(value).__name__}: {text[:80]!r}")
    elif not math.isfinite(float(value)):
        problems.append(f"{path} holds a non-finite number: {text[:80]!r}")
    elif kind == "days" and value <= 0:
        problems.append(f"{path} must hold an RFS time in days above 0, got {text[:80]!r}")
    return problems


def _stages(kind: str) -> tuple[str, ...]:
    """The stages a ``t-stage``/``n-stage`` file may hold (none for other kinds)."""
    if kind not in ("t-stage", "n-stage"):
        return ()
    from hecktor.staging import N_STAGES, T_STAGES  # only for 2026's outputs: it brings torch with it

    return T_STAGES if kind == "t-stage" else N_STAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Check a container run's outputs against the HECKTOR contract.")
    parser.add_argument("--task", required=True, type=int, choices=task_numbers())
    parser.add_argument("--input", required=True, type=Path, help="the case's input folder (mounted at /input)")
    parser.add_argument("--output", required=True, type=Path, help="the case's output folder (mounted at /output)")
    parser.add_argument("--expected", type=Path, help="expected.json written by scripts/make_test_inputs.py")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = get_task(args.task)
    case = args.input.name
    if spec.output_kind in ("mask", "hecktor2026"):
        expected_ct = None
        if args.expected is not None:
            cases = json.loads(args.expected.read_text())["cases"]
            if case not in cases:
                print(f"check_outputs.py: error: {args.expected} has no case {case!r}", file=sys.stderr)
                return 1
            expected_ct = cases[case]["ct"]
        if spec.output_kind == "mask":
            problems = check_mask(args.input, args.output, spec.output, expected_ct)
        else:
            problems = check_hecktor2026(args.input, args.output, spec.outputs, expected_ct)
    else:
        problems = check_json_output(args.output, spec.output, spec.output_kind)
    for problem in problems:
        print(f"FAIL {case}: {problem}", file=sys.stderr)
    if problems:
        return 1
    if spec.output_kind in ("mask", "hecktor2026"):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(args.output / spec.output)))
        counts = ", ".join(f"{name}: {int((mask == value).sum())}" for name, value in FOREGROUND.items())
        values = "".join(f", {path} = {(args.output / path).read_text().strip()}" for path in spec.extra_outputs)
        print(f"ok {case}: mask on the CT grid {list(mask.shape[::-1])}, UInt8, {counts} voxels{values}")
    else:
        print(f"ok {case}: {spec.output} = {(args.output / spec.output).read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
