"""Reading images: one 3-D scalar volume per file, whatever the case of its suffix, with what the C libraries print
kept off stderr (a container's stderr holds nothing but its one ``error: ...`` line).

:func:`read_image` refuses what is not a 3-D scan with an :class:`~hecktor.errors.InputError` naming the file;
:func:`read_image_or_placeholder` lets the platform's flat placeholders through; :func:`find_single_image` finds the
one image of a Grand-Challenge input folder (``images/ct/<uuid>.mha``). Screening a whole case (which images to
drop, what to repair) is :func:`hecktor.case.read_case`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.repair import is_placeholder

__all__ = ["IMAGE_SUFFIXES", "TIFF_SUFFIXES", "read_image", "read_image_or_placeholder", "find_single_image"]

IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii", ".nii.gz")
"""Image file suffixes read, in any letter case (``.MHA``, ``.NII.GZ``)."""
TIFF_SUFFIXES = (".tif", ".tiff")


def _image_suffix(name: str) -> str | None:
    """The image suffix of a file name as written (any case), or ``None``."""
    lowered = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return name[len(name) - len(suffix):]
    return None


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _image_suffix(path.name) is not None


@contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
    """Capture what C libraries write straight to file descriptor 2 during the block (NIfTI and ITK print there):
    a container's stderr must hold nothing but its one ``error: ...`` line. Yields a list that receives the captured
    lines when the block ends."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            captured.extend(line.strip() for line in text.splitlines() if line.strip())


def _read_itk(path: Path) -> tuple[sitk.Image, list[str]]:
    """``sitk.ReadImage`` of ``path`` whatever the case of its suffix (ITK picks readers by lower-case suffix, so an
    ``.MHA`` or ``.NII.GZ`` file is read through a lower-case link in a temporary folder), with what the C libraries
    printed captured rather than sent to stderr. Raises RuntimeError as ``sitk.ReadImage`` does."""
    suffix = _image_suffix(path.name)
    failure: RuntimeError | None = None
    with tempfile.TemporaryDirectory(prefix="hecktor-read-") as folder:
        source = path
        if suffix is not None and suffix != suffix.lower():
            source = Path(folder) / f"image{suffix.lower()}"
            try:
                source.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, source)
        with _quiet_stderr() as printed:
            try:
                image = sitk.ReadImage(str(source))
            except RuntimeError as error:
                failure = error
    if failure is not None:
        raise RuntimeError(f"{failure}\n{printed[-1] if printed else ''}".strip())
    return image, printed


def read_image(path: str | Path, what: str = "image", warnings: list[str] | None = None) -> sitk.Image:
    """Read a 3-D scalar image, or raise :class:`InputError` naming the file.

    Rejects missing and unreadable files, vector images, and images that are not 3-D or are flat (a size of 1 along
    an axis: the platform's sanity check uses 1×1 placeholders). A 4-D image with a single frame is read as its 3-D
    volume. Suffixes are matched in any case (``.MHA``, ``.NII.GZ``).

    Args:
        warnings: receives one line per thing noticed on the way (a single-frame 4-D image, a TIFF's missing
            geometry, what the reader printed).
    """
    path = Path(path)
    notes = warnings if warnings is not None else []
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        image, printed = _read_itk(path)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"cannot read {what} {path}: {detail[:200]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1 and min(image.GetSize()[:3]) >= 2:
        image = image[:, :, :, 0]
        notes.append(f"{what} {path.name} is 4-D with a single frame: read as its 3-D volume")
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"{what} {path} is not a 3-D volume (size {size}); expected a 3-D scan")
    if printed:
        notes.append(f"{what} {path.name}: the reader said: {printed[-1][:200]}")
    if path.name.lower().endswith(TIFF_SUFFIXES):
        origin = ", ".join(f"{v:g}" for v in image.GetOrigin())
        notes.append(f"{what} {path.name} is a TIFF file, which stores no origin or direction (read as origin "
                     f"({origin}) mm, identity direction): its position relative to the other image cannot be "
                     "trusted")
    return image


def find_single_image(folder: str | Path) -> Path:
    """The one image file in ``folder`` (.mha, .tif, .tiff, .nii, .nii.gz, any case), or an :class:`InputError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if _is_image_file(p))
    if not images:
        others = sorted(p.name for p in folder.iterdir())
        seen = f" (found: {', '.join(others[:5])})" if others else " (it is empty)"
        raise InputError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in {folder}{seen}")
    if len(images) > 1:
        names = ", ".join(p.name for p in images[:5])
        raise InputError(f"expected exactly one image in {folder}, found {len(images)}: {names}")
    return images[0]



def read_image_or_placeholder(path: str | Path, what: str = "image",
                              warnings: list[str] | None = None) -> tuple[sitk.Image, bool]:
    """As :func:`read_image`, but a flat placeholder (:func:`is_placeholder`) is returned as it is, flagged ``True``,
    instead of refused: the platform's sanity check must get a valid output."""
    path = Path(path)
    try:
        return read_image(path, what, warnings), False
    except InputError as refused:
        try:
            image, _ = _read_itk(path)
        except RuntimeError:
            raise refused from None
        if image.GetNumberOfComponentsPerPixel() != 1 or not is_placeholder(image):
            raise refused from None
        return image, True
