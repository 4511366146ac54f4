"""What a trainer needs to run as one process of a ``torchrun`` job: its place in the job
(:class:`DistributedContext`: rank, world size, barrier, all-reduce), joining the process group with a timeout
(:func:`init_distributed`, ``$HECKTOR_DIST_TIMEOUT_S``), and one error line instead of a traceback when another
process of the job dies or hangs (:func:`distributed_failures`, :class:`DistributedJobError`; SIGTERM from torchrun
included).

Launch a trainer's CLI with ``torchrun --nproc_per_node N``: ``nccl`` joins the ranks on CUDA, ``gloo`` on CPU. A rank
that dies is noticed at once (its connections close, or torchrun stops the others); one that hangs is given up after
the process-group timeout. Without torchrun every helper here is a no-op for rank 0 of 1.
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from hecktor.errors import HecktorError, InputError
from hecktor.segment import resolve_device

DIST_TIMEOUT_ENV = "HECKTOR_DIST_TIMEOUT_S"
DEFAULT_DIST_TIMEOUT_S = 1800.0
"""Process-group timeout: how long a rank waits in a collective for a peer that is alive but stuck. A peer that dies
is noticed at once (its connections close); the timeout is for a hung one, and must exceed the longest legitimate
wait (a rank building more of the preprocessing cache than the others)."""


class DistributedJobError(HecktorError):
    """Another process of the ``torchrun`` job died or stopped answering, so this one stops too. Not a wrong input:
    :func:`hecktor.training.cli.run_cli` prints its one line and exits with :attr:`exit_status` 1."""

    exit_status = 1


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """The element-wise sum of ``values`` over every rank (``values`` itself without a job). On CUDA the sum
        runs on ``device`` (NCCL reduces GPU tensors only), elsewhere on the CPU."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return tensor.tolist()

    def leave(self) -> None:
        """Leave the process group, where this process joined one. Not after a failure: with a peer gone, NCCL may
        block in the teardown, and the process is about to exit anyway."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def dist_timeout_s() -> float:
    """The process-group timeout in seconds: ``$HECKTOR_DIST_TIMEOUT_S``, else :data:`DEFAULT_DIST_TIMEOUT_S`."""
    text = os.environ.get(DIST_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_DIST_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise InputError(f"{DIST_TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return value


def init_distributed(device_name: str, timeout_s: float | None = None) -> tuple[DistributedContext, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, and pick this rank's device.

    Args:
        device_name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        timeout_s: how long a collective waits for a stuck peer before it fails (default :func:`dist_timeout_s`).
            Under ``torchrun`` this process also turns SIGTERM (torchrun stopping the job because another rank
            failed) into a :class:`DistributedJobError`, so that every rank ends with one line, not a traceback.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world_size > 1 else 0)
    context = DistributedContext(rank, world_size, local_rank, local_world_size)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(seconds=timeout_s if timeout_s is not None else dist_timeout_s())
        with distributed_failures(context):
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        _stop_on_sigterm(context)
    return context, device


def _stop_on_sigterm(context: DistributedContext) -> None:
    """Raise :class:`DistributedJobError` on SIGTERM, which torchrun sends to the surviving ranks when one fails
    (left alone where someone else already handles SIGTERM, or off the main thread, where Python cannot)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise DistributedJobError(
            f"rank {context.rank} of {context.world_size} was stopped (SIGTERM): torchrun stops every process of a "
            "job when one fails; see the first failed rank's output, then continue with --resume")

    signal.signal(signal.SIGTERM, stop)


_COLLECTIVE_FAILURES = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
                        "timed out")


def _is_collective_failure(error: BaseException) -> bool:
    """An error of a collective or of the rendezvous (a peer gone or stuck), as opposed to a bug or a bad input.
    Gloo raises plain RuntimeErrors, so their text is looked at too."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error).lower() for marker in _COLLECTIVE_FAILURES)


def error_gist(error: BaseException) -> str:
    """The gist of a backend error: its first sentence without the source location (``[.../pair.cc:537] ...``)."""
    text = " ".join(str(error).split())
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0][:200]


@contextmanager
def distributed_failures(context: DistributedContext) -> Iterator[None]:
    """Turn the failure of a collective (a peer died: connection closed; or hung: process-group timeout) into a
    one-line :class:`DistributedJobError`; anything else passes through unchanged."""
    try:
        yield
    except DistributedJobError:
        raise
    except Exception as error:
        if not context.enabled or not _is_collective_failure(error):
            raise
        raise DistributedJobError(
            f"rank {context.rank} of {context.world_size} lost contact with another process of the job "
            f"({error_gist(error)}): it died or hung; see its output, then continue with --resume") from error
