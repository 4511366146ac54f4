"""Writing outputs atomically: every file the toolkit writes (the containers' outputs, bundles, caches, run logs) goes
through :func:`atomic_path`, so a crash never leaves a partial file and an earlier run's output is replaced in one
step; the containers' output kinds have their writer here (:func:`write_mask`, :func:`write_json_number`,
:func:`write_json_boolean`, and HECKTOR 2026's four files at once, :func:`write_hecktor2026`, through
:func:`atomic_paths`; which task writes which: :mod:`hecktor.runtime`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError

__all__ = ["READABLE_MODE", "atomic_path", "atomic_paths", "remove_output", "write_text_atomic", "write_mask",
           "write_json_number", "write_json_boolean", "write_hecktor2026", "check_hecktor2026_answer"]

@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed onto ``path`` when the block ends without an error,
    removed otherwise. Every file the toolkit writes goes through here, so a crash never leaves a partial file.

    The temporary name keeps ``path``'s suffix (SimpleITK and NumPy pick their writer from it) and lies in the same
    folder (``os.replace`` is then an atomic rename), so an output left by an earlier run is replaced in one step.
    The result is readable by others (:data:`READABLE_MODE` at least, more if the umask allows): the platform may
    read ``/output`` as another user than the container's. A folder that cannot be created or written (read-only,
    or a file in its place) is an :class:`InputError` naming the path.
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """:func:`atomic_path` for several files that only make sense together (HECKTOR 2026's four outputs): a
    temporary file beside each, all renamed into place when the block ends without an error, none otherwise.

    Each rename is atomic; should one of them fail (the folder turned read-only half-way), every one of ``paths`` is
    removed (those this call already put in place, and those an earlier run left), so the outputs are all new or all
    absent, never a mix of this run's and an earlier one's.
    """
    paths = [Path(p) for p in paths]
    temporaries: list[Path] = []
    try:
        for path in paths:
            suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
                os.close(handle)
            except OSError as error:
                raise InputError(f"cannot write {path}: {_os_reason(error)}; the output folder must be a writable "
                                 "folder") from None
            temporaries.append(Path(name))
        yield list(temporaries)
        mode = READABLE_MODE | (0o666 & ~_umask())
        for tmp, path in zip(temporaries, paths):
            try:
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            except OSError as error:
                for placed in paths:
                    remove_output(placed)
                raise InputError(f"cannot write {path}: {_os_reason(error)}") from None
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


READABLE_MODE = 0o644
"""Outputs are at least readable by everyone (owner read-write), whatever the process's umask: the platform may read
``/output`` as another user than the container's."""


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_output(path: str | Path) -> bool:
    """Remove a file left at ``path`` (an output of an earlier run) so that a failed run leaves no stale output
    beside its error; returns whether one was removed. Never raises."""
    try:
        Path(path).unlink()
        return True
    except OSError:
        return False


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_mask(mask: sitk.Image, path: str | Path) -> Path:
    """Write a label map as compressed UInt8 (``.mha`` for the platform), atomically."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(tmp), True)
    return Path(path)


def write_json_number(value: float, path: str | Path) -> Path:
    """Write one bare JSON number (e.g. the Task 2 risk score) atomically; a non-finite value is refused."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"refusing to write a non-finite number ({number}) to {path}")
    return write_text_atomic(json.dumps(number), path)


def write_json_boolean(value: bool, path: str | Path) -> Path:
    """Write one bare JSON boolean, exactly ``true`` or ``false`` (e.g. the Task 3 HPV status), atomically.

    Only a real boolean (``bool`` or ``numpy.bool_``) is accepted: a number or a string is refused rather than
    guessed at, so a predictor bug cannot reach the platform as a wrong answer."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"refusing to write {value!r} ({type(value).__name__}) to {path}: expected a boolean")
    return write_text_atomic("true" if value else "false", path)


def write_hecktor2026(answer: Any, mask_path: str | Path, t_stage_path: str | Path, n_stage_path: str | Path,
                      rfs_path: str | Path) -> Path:
    """Write HECKTOR 2026's four outputs of one case, all or none (:func:`atomic_paths`); returns ``mask_path``.

    ``answer`` is a :class:`hecktor.hecktor2026.Hecktor2026Answer`; every value is checked before anything is
    written (:func:`check_hecktor2026_answer`). The mask is written as compressed UInt8 on its own grid (the CT's,
    when the predictor kept it), each stage as one JSON string, the RFS time as one JSON number of days.
    """
    mask, t_stage, n_stage, days = check_hecktor2026_answer(answer, (mask_path, t_stage_path, n_stage_path, rfs_path))
    texts = {Path(t_stage_path): json.dumps(t_stage), Path(n_stage_path): json.dumps(n_stage),
             Path(rfs_path): json.dumps(days)}
    with atomic_paths([mask_path, *texts]) as (mask_tmp, *json_tmps):
        sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(mask_tmp), True)
        for tmp, text in zip(json_tmps, texts.values()):
            tmp.write_text(text)
    return Path(mask_path)


def check_hecktor2026_answer(answer: Any, where: Sequence[str | Path]) -> tuple[sitk.Image, str, str, float]:
    """The mask, T stage, N stage and RFS time (float days) of a 2026 answer, each checked; a bad one is a
    :class:`ValueError` ``refusing to write <where>: ...``, so that a predictor bug reaches the platform as an error,
    never as a wrong answer.

    ``answer`` has the fields of :class:`hecktor.hecktor2026.Hecktor2026Answer`: the mask must be a 3-D scalar image
    of labels 0, 1 and 2 only (2-D on the 1 x 1 placeholder CT of the platform's sanity check, as Task 1's mask is); the stages exactly one of ``T1``..``T4`` and ``N0``..``N3``; the RFS time a finite
    number of days above 0. ``where`` names the destination of each of the four, in that order.
    """
    # Imported here: hecktor.staging brings the biomarkers and torch with it, which the many light users of this
    # module (caches, run logs, the fold files) must not pay for.
    from hecktor.staging import N_STAGES, T_STAGES

    mask_where, t_where, n_where, rfs_where = where
    mask = answer.mask
    if not isinstance(mask, sitk.Image) or mask.GetDimension() not in (2, 3) or \
            mask.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"refusing to write {mask_where}: the mask must be a 3-D scalar image (2-D for a 2-D "
                         f"placeholder CT), got {_describe_image(mask)}")
    labels = sorted({float(v) for v in np.unique(sitk.GetArrayViewFromImage(mask))})
    if not set(labels) <= {0.0, 1.0, 2.0}:
        raise ValueError(f"refusing to write {mask_where}: the mask holds labels {[_plain(v) for v in labels]}, "
                         "not only 0 (background), 1 (GTVp) and 2 (GTVn)")
    for place, value, stages in ((t_where, answer.t_stage, T_STAGES), (n_where, answer.n_stage, N_STAGES)):
        if not isinstance(value, str) or value not in stages:
            raise ValueError(f"refusing to write {place}: {value!r} is not one of {', '.join(stages)}")
    days = answer.rfs_days
    if isinstance(days, (bool, np.bool_)) or not isinstance(days, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(days)) or float(days) <= 0.0:
        raise ValueError(f"refusing to write {rfs_where}: the RFS time must be a finite number of days above 0, got "
                         f"{days!r}")
    return mask, answer.t_stage, answer.n_stage, float(days)


def _describe_image(image: Any) -> str:
    if not isinstance(image, sitk.Image):
        return type(image).__name__
    return f"a {image.GetDimension()}-D image of {image.GetNumberOfComponentsPerPixel()} component(s) per voxel"


def _plain(value: float) -> int | float:
    return int(value) if value.is_integer() else value
