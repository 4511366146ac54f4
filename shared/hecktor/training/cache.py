"""The preprocessing cache of both trainers: every training case preprocessed once per plan, kept as ``.npy`` files.

Layout::

    CACHE_ROOT/
      <plan kind>-<plan digest>[-<variant>]/     e.g. region-3f2a...-mask (Task 1), box-91c0... (Task 2)
        plan.json                                the plan the entries were made with
        <PID>.<array>.npy                        one file per array of the entry (image, label, ...)
        <PID>.json                               the entry's record, written LAST

A case's record names its arrays with their shapes and dtypes, the source fingerprint (size and modification time
of the case's files) and what the preprocessing function reported. Every file is written through
:func:`hecktor.outputs.atomic_path`, and the record after the arrays, so a record marks a complete entry: an entry
without one (an interrupted build), with a changed source file, or with an array that does not match its record
(a truncated or replaced file) is rebuilt, never loaded. Another plan means another folder, so a plan change never
reads stale arrays. A run killed while writing leaves at most hidden temporary files (``.<PID>.<array>.npy.*``);
the next build of that entry removes them.

The trainers build the missing entries with several processes side by side (:func:`available_cores` of them by
default, each on one thread).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hecktor.datasets import TrainingCase
from hecktor.errors import InputError
from hecktor.outputs import atomic_path, write_text_atomic
from hecktor.plan import BoxPlan, RegionPlan

CACHE_VERSION = 3
"""Format of an entry's record (1: the two trainers' separate caches of hecktor 0.1; 2: without ``repairs`` in the
entry's info, so an entry of version 2 is rebuilt rather than reported as repaired by nothing)."""

REPAIRS_JSON = "data_repairs.json"
"""``RUN_DIR/data_repairs.json``: what preprocessing repaired or dropped, per case (:func:`report_repairs`)."""

REPAIR_KINDS = (
    ("Bq/ml", "PET read as Bq/ml and divided by the body's median uptake (an approximate SUV)"),
    ("non-finite voxel", "non-finite voxels replaced by the padding value"),
    ("offset", "CT stored with a +1024 offset, brought back to HU"),
    ("implausible values", "implausible PET voxels replaced by their neighbours' median"),
    ("localisation", "head and neck not found in the PET (a partial field of view?): region placed from the field "
                     "of view"),
    ("empty label map", "empty label map: trained as a case without tumour"),
    ("outside the training region", "tumour voxels outside the training region: lost"),
)
"""How :func:`report_repairs` groups the preprocessing's warnings: (text the warning holds, the group's line)."""

PLAN_JSON = "plan.json"

POOL_MIN_SECONDS = 30.0
"""Worker processes are started only when the cases left to build would take this process longer than this (as
timed on the first case); 0: whenever there are workers and cases."""

Preprocess = Callable[[TrainingCase, Any], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]
"""``preprocess(case, plan) -> (arrays, info)``: the arrays to store by name, and JSON-safe facts about them."""


@dataclass
class CacheEntry:
    """One cached case: its arrays by name and its record (``info``: what preprocessing reported)."""

    patient_id: str
    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a ``taskset`` or a container's CPU set counts, not
    the machine's size)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, share: int = 1) -> int:
    """Worker processes to use: ``workers`` as given, or for ``None`` the available cores divided among ``share``
    processes that run side by side (e.g. the ranks of a ``torchrun`` job on one machine), at least 1."""
    if workers is None:
        return max(1, available_cores() // max(1, share))
    if workers < 0:
        raise InputError(f"workers must be >= 0 (or unset: all cores), got {workers}")
    return int(workers)


def source_fingerprint(case: TrainingCase) -> list[list[Any]]:
    """Name, size and modification time of the case's files, and the SUV factor its PET is read with (where it has
    one, :mod:`hecktor.suv_table`): a changed source file or factor invalidates its entry."""
    paths = [case.ct_path, case.pet_path] + ([case.label_path] if case.label_path is not None else [])
    fingerprint = [[Path(p).name, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
    return fingerprint + ([["suv_factor", case.suv_factor]] if case.suv_factor is not None else [])


class PreprocessingCache:
    """Preprocessed training cases on disk, in a folder keyed by the plan's kind and digest (see the module docstring).

    Args:
        root: the cache root; the folder of this plan is created inside it.
        plan: the preprocessing plan (:class:`~hecktor.plan.RegionPlan` or :class:`~hecktor.plan.BoxPlan`).
        preprocess: ``preprocess(case, plan) -> (arrays, info)``; a module-level function (or a ``functools.partial``
            of one) so that the cache can be sent to data-loader worker processes.
        variant: a further key for preprocessing choices that are not in the plan (Task 1's training region,
            ``region`` or ``mask``); part of the folder name.
    """

    def __init__(self, root: str | Path, plan: RegionPlan | BoxPlan, preprocess: Preprocess, variant: str = "") -> None:
        self.plan = plan
        self.preprocess = preprocess
        self.variant = variant
        key = f"{plan.KIND}-{plan.digest()}" + (f"-{variant}" if variant else "")
        self.dir = Path(root) / key

    def record_path(self, patient_id: str) -> Path:
        return self.dir / f"{patient_id}.json"

    def array_path(self, patient_id: str, name: str) -> Path:
        return self.dir / f"{patient_id}.{name}.npy"

    def _record(self, patient_id: str) -> dict[str, Any] | None:
        """The entry's record, or ``None`` when it is missing or unreadable."""
        try:
            record = json.loads(self.record_path(patient_id).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _arrays_match(self, patient_id: str, record: Mapping[str, Any]) -> bool:
        """Every array file opens and has the shape and dtype of the record. Only the headers are read (a memory
        map): a truncated file cannot be mapped to its full size and fails here."""
        try:
            for name, spec in record["arrays"].items():
                array = np.load(self.array_path(patient_id, name), mmap_mode="r")
                if list(array.shape) != list(spec["shape"]) or str(array.dtype) != spec["dtype"]:
                    return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return True

    def is_current(self, case: TrainingCase) -> bool:
        """A complete entry made by this cache format from the case's files as they are now."""
        record = self._record(case.patient_id)
        return (
            record is not None
            and record.get("version") == CACHE_VERSION
            and record.get("source") == source_fingerprint(case)
            and self._arrays_match(case.patient_id, record)
        )

    def build(self, case: TrainingCase) -> CacheEntry:
        """Preprocess one case and write its entry: arrays first, the record last."""
        self.dir.mkdir(parents=True, exist_ok=True)
        # Withdraw an old record first: until the new one is written, the entry is incomplete, not stale-but-valid.
        self.record_path(case.patient_id).unlink(missing_ok=True)
        source = source_fingerprint(case)  # before reading: a file changed during the build then fails the check
        arrays, info = self.preprocess(case, self.plan)
        arrays = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
        for name, array in arrays.items():
            with atomic_path(self.array_path(case.patient_id, name)) as tmp:
                np.save(tmp, array)
        record = {
            "version": CACHE_VERSION,
            "patient_id": case.patient_id,
            "plan_kind": self.plan.KIND,
            "plan_digest": self.plan.digest(),
            "variant": self.variant,
            "source": source,
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()},
            "info": dict(info),
        }
        write_text_atomic(json.dumps(record, indent=1), self.record_path(case.patient_id))
        self._remove_temporaries(case.patient_id, list(arrays))
        return CacheEntry(case.patient_id, arrays, dict(info))

    def _remove_temporaries(self, patient_id: str, names: Sequence[str]) -> None:
        """Temporary files of this entry left by a killed build (``atomic_path`` removes its own unless the process
        dies). Only this entry's: under ``torchrun`` other ranks are writing other entries in the same folder."""
        for target in [self.record_path(patient_id)] + [self.array_path(patient_id, name) for name in names]:
            for leftover in self.dir.glob(f".{target.name}.*"):
                leftover.unlink(missing_ok=True)

    def load(self, patient_id: str, mmap: Collection[str] = ()) -> CacheEntry:
        """A cached entry (see :meth:`prepare`). The arrays named in ``mmap`` are memory-mapped copy-on-write instead
        of read (patches then read only the pages they need, and torch still gets a writable array)."""
        record = self._record(patient_id)
        if record is None or record.get("version") != CACHE_VERSION or not self._arrays_match(patient_id, record):
            raise InputError(f"case {patient_id} has no complete entry in the preprocessing cache {self.dir}; "
                             "prepare the cache first (the trainer does)")
        arrays = {name: np.load(self.array_path(patient_id, name), mmap_mode="c" if name in mmap else None)
                  for name in record["arrays"]}
        return CacheEntry(patient_id, arrays, dict(record.get("info", {})))

    def repairs(self, patient_ids: Sequence[str]) -> dict[str, list[str]]:
        """What preprocessing repaired or dropped in each of ``patient_ids`` whose entry has a record (the ``repairs``
        of its info, one line each; an entry that records none is left out)."""
        found = {}
        for pid in patient_ids:
            record = self._record(pid) or {}
            lines = record.get("info", {}).get("repairs") or []
            if lines:
                found[pid] = [str(line) for line in lines]
        return found

    def get(self, case: TrainingCase) -> CacheEntry:
        """The case's entry, built first where it is not current."""
        return self.load(case.patient_id) if self.is_current(case) else self.build(case)

    def prepare(self, cases: Sequence[TrainingCase], *, rank: int = 0, world_size: int = 1, progress: bool = False,
                workers: int | None = 0) -> dict[str, int]:
        """Make sure that every case has a current entry and that the folder holds its ``plan.json``.

        Args:
            cases: the cohort.
            rank, world_size: under ``torchrun`` every rank builds its share of the cases (the caller waits for the
                others afterwards).
            progress: a tqdm bar over the cases to build.
            workers: processes that build entries side by side, each on one thread (0 or 1: this process; ``None``:
                :func:`available_cores`); started only where the work pays for them (:data:`POOL_MIN_SECONDS`).

        Returns:
            ``{"built": ..., "reused": ...}``: entries of this rank's share.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        plan_path = self.dir / PLAN_JSON
        if not plan_path.is_file():  # every rank may get here; the rename makes concurrent writes harmless
            write_text_atomic(self.plan.to_json() + "\n", plan_path)
        mine = list(cases)[rank::world_size]
        todo = [case for case in mine if not self.is_current(case)]
        bar = tqdm(total=len(todo), desc="preprocessing", unit="case", disable=not progress)
        workers = resolve_workers(workers)
        if workers > 1 and len(todo) > 1 and POOL_MIN_SECONDS > 0:
            # A worker costs seconds to start (it imports torch); build one case here first and use the pool only
            # when the rest would take longer than that alone (tiny test cohorts don't; real ones do).
            started = time.perf_counter()
            self.build(todo[0])
            bar.update()
            if (time.perf_counter() - started) * (len(todo) - 1) < POOL_MIN_SECONDS:
                workers = 1
            todo_left = todo[1:]
        else:
            todo_left = todo
        if workers > 1 and len(todo_left) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn: forking a process that holds torch's and SimpleITK's thread pools can deadlock.
            with ProcessPoolExecutor(min(workers, len(todo_left)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_one_thread_per_worker, initargs=(os.getpid(),)) as pool:
                for _ in pool.map(_build_quietly, [self] * len(todo_left), todo_left):
                    bar.update()
        else:
            for case in todo_left:
                self.build(case)
                bar.update()
        bar.close()
        return {"built": len(todo), "reused": len(mine) - len(todo)}


def report_repairs(cache: PreprocessingCache, patient_ids: Sequence[str], run_dir: str | Path | None = None,
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Show once, at the end of preprocessing, what it repaired or dropped in the cohort (grouped by
    :data:`REPAIR_KINDS`, each group one line with its count and patients), and keep every case's lines in
    ``RUN_DIR/data_repairs.json`` (:data:`REPAIRS_JSON`). Nothing the library repairs is swallowed: the trainers call
    this after their cache is prepared, whether the entries were built now or reused.

    Returns:
        the record written: ``cases``, ``repaired`` (how many cases), ``kinds`` (group line -> patients) and
        ``by_case`` (patient -> lines).
    """
    by_case = cache.repairs(patient_ids)
    kinds: dict[str, list[str]] = {}
    for pid, lines in by_case.items():
        for line in lines:
            kind = next((name for text, name in REPAIR_KINDS if text in line), line.split(":")[0])
            if pid not in kinds.setdefault(kind, []):
                kinds[kind].append(pid)
    record = {"cases": len(patient_ids), "repaired": len(by_case), "kinds": kinds, "by_case": by_case}
    kept = ""
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(record, indent=1) + "\n", Path(run_dir) / REPAIRS_JSON)
        kept = f"; every line in {Path(run_dir) / REPAIRS_JSON}"
    if not by_case:
        echo(f"data repairs: none in {len(patient_ids)} case(s){kept}")
        return record
    echo(f"data repairs: preprocessing repaired or dropped something in {len(by_case)} of {len(patient_ids)} "
         f"case(s){kept}")
    for kind, pids in kinds.items():
        shown = ", ".join(pids[:5]) + (f", ... ({len(pids) - 5} more)" if len(pids) > 5 else "")
        echo(f"  {kind}: {len(pids)} case(s) ({shown})")
    return record


def _one_thread_per_worker(parent: int) -> None:
    """Worker set-up: one thread for torch (imported later, with the first task) and SimpleITK, as the workers
    already fill the cores and their thread pools side by side would only contend; and end with the parent."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this worker when the process that started it dies: a trainer killed with SIGKILL would
    otherwise leave its workers preprocessing the queued cases for a while. Elsewhere nothing is done (the workers
    still stop once the queue is drained)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def _build_quietly(cache: PreprocessingCache, case: TrainingCase) -> None:
    """Build one entry in a worker process (returns nothing: the arrays stay on disk, not in the pipe)."""
    cache.build(case)
