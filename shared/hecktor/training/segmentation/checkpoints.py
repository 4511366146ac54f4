"""Checkpoints of Task 1 training that no kill can corrupt: written to a temporary file, verified (CRC-32 of every
record) and renamed (:func:`save_checkpoint`); a damaged one is never loaded, and resuming falls back to the one it
replaced (:func:`find_resume_checkpoint`, :func:`set_aside`)."""

from __future__ import annotations

import os
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hecktor.errors import InputError
from hecktor.outputs import atomic_path
from hecktor.training.distributed import error_gist
from hecktor.training.segmentation.config import build_segmentation_network

CHECKPOINTS = ("best", "last")
CHECKPOINT_FORMAT = "hecktor-task1-checkpoint"


class CheckpointError(InputError):
    """A checkpoint file is truncated, corrupt or not a trainer checkpoint (it is never loaded)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was moved aside and an older one (or a fresh start) used instead."""


def previous_checkpoint_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced: ``checkpoint_last.pt`` ->
    ``checkpoint_last.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path, keep_previous: bool = True) -> None:
    """Write a checkpoint so that no kill, full disk or power cut can leave ``path`` holding part of one.

    The checkpoint goes to a temporary file beside ``path`` (torch's zip format, with a CRC-32 of every record), is
    flushed to disk and read back in full (:func:`verify_checkpoint_file`), and only then renamed onto ``path``. The
    checkpoint it replaces is kept as :func:`previous_checkpoint_path`, so a ``path`` damaged later (a copy cut
    short, a bad disk) still leaves one good checkpoint to resume from.

    Args:
        checkpoint: the state (tensors, numbers, strings and containers).
        path: e.g. ``fold_0/checkpoint_last.pt``.
        keep_previous: keep the replaced checkpoint (see above).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with _crc32_on():
            torch.save(checkpoint, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        verify_checkpoint_file(tmp)
        if keep_previous and path.is_file():
            os.replace(path, previous_checkpoint_path(path))  # a kill right here leaves only .previous: resume uses it
    _fsync_folder(path.parent)


def _crc32_on():
    """torch.save with the CRC-32 of every record, which torch writes by default (and always did before the option
    existed); forced on because :func:`verify_checkpoint_file` relies on it."""
    try:
        from torch.utils.serialization import config as serialization_config
    except ImportError:
        return nullcontext()
    return serialization_config.patch({"save.compute_crc32": True})


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (after a power cut the folder would otherwise still list old names)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def verify_checkpoint_file(path: str | Path) -> None:
    """Check that ``path`` is a complete checkpoint archive: its zip directory is readable and every record matches
    the CRC-32 written with it. Reads the whole file (about 0.1 s per 200 MB), loads nothing.

    Raises:
        CheckpointError: the file is truncated or corrupt.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint ({error})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC-32 check")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by the trainer, verified before it is loaded (:func:`verify_checkpoint_file`; tensors,
    numbers, strings and containers only: ``weights_only``).

    Raises:
        InputError: ``path`` does not exist.
        CheckpointError: it is truncated, corrupt, or not a Task 1 trainer checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    verify_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle errors, EOFError, ... for a bad archive
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({error_gist(error)})") from None
    missing = [key for key in ("model", "epoch") if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing or checkpoint.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a Task 1 trainer checkpoint (missing {missing or 'its format tag'})")
    return checkpoint


def find_resume_checkpoint(fold_dir: str | Path, map_location: str | torch.device = "cpu",
                           name: str = "checkpoint_last.pt") -> tuple[dict[str, Any] | None, Path | None,
                                                                      list[tuple[Path, str]]]:
    """The newest good checkpoint of a fold to resume from: ``checkpoint_last.pt``, else the one it replaced
    (``checkpoint_last.previous.pt``: the last one was damaged, or the run was killed between the two renames of
    :func:`save_checkpoint`). Reads only; moving damaged files aside is :func:`set_aside`'s job.

    Returns:
        the checkpoint (``None``: nothing to resume from), its path, and each damaged file with the reason.
    """
    damaged: list[tuple[Path, str]] = []
    last = Path(fold_dir) / name
    for path in (last, previous_checkpoint_path(last)):
        if not path.is_file():
            continue
        try:
            return load_checkpoint(path, map_location=map_location), path, damaged
        except CheckpointError as error:
            damaged.append((path, str(error)))
    return None, None, damaged


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged`` (kept for inspection, never loaded) with a warning."""
    target = path.with_name(path.name + ".damaged")
    os.replace(path, target)
    warnings.warn(f"{reason}; moved it to {target.name} and continue without it", CheckpointWarning, stacklevel=2)
    return target


def remove_stale_temporaries(fold_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run left behind (``.checkpoint_*.pt.*``)."""
    removed = []
    for leftover in Path(fold_dir).glob(".checkpoint_*.pt.*"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def network_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a checkpoint with its weights, in eval mode, and the checkpoint itself."""
    checkpoint = load_checkpoint(path)
    network = build_segmentation_network(checkpoint["network"], checkpoint["network_config"])
    network.load_state_dict(checkpoint["model"])
    return network.eval(), checkpoint
