"""Writing outputs atomically: every file the toolkit writes (the containers' outputs, bundles, caches, run logs) goes
through :func:`atomic_path`, so a crash never leaves a partial file and an earlier run's output is replaced in one
step; the containers' three output kinds have their writer here (:func:`write_mask`, :func:`write_json_number`,
:func:`write_json_boolean`; which task writes which: :mod:`hecktor.runtime`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError

__all__ = ["READABLE_MODE", "atomic_path", "remove_output", "write_text_atomic", "write_mask", "write_json_number",
           "write_json_boolean"]

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
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise InputError(f"cannot write {path}: {_os_reason(error)}; the output folder must be a writable "
                         "folder") from None
    tmp = Path(name)
    try:
        yield tmp
        try:
            os.chmod(tmp, READABLE_MODE | (0o666 & ~_umask()))
            os.replace(tmp, path)
        except OSError as error:
            raise InputError(f"cannot write {path}: {_os_reason(error)}") from None
    finally:
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
