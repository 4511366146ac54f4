"""The trainers' one preprocessing cache (hecktor.training.cache): reuse, keys, invalidation, incomplete entries,
builds killed with SIGKILL (in this process, or with worker processes), the default number of workers.

The cases are tiny files and the preprocessing a stand-in that turns their bytes into arrays, so that every rule of
the cache is checked in milliseconds; test_seg_training.py and test_prognosis_training.py (beside this file) run the
real preprocessing of both tasks through it.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hecktor.datasets import TrainingCase
from hecktor.errors import InputError
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.training import cache as cache_module
from hecktor.training.cache import CACHE_VERSION, PreprocessingCache, available_cores, resolve_workers


def bytes_entry(case: TrainingCase, plan) -> tuple[dict[str, np.ndarray], dict]:
    """Stand-in preprocessing: the CT file's bytes as an image, scaled by a plan number, and the PET's as a label."""
    ct = np.frombuffer(case.ct_path.read_bytes(), dtype=np.uint8)
    pet = np.frombuffer(case.pet_path.read_bytes(), dtype=np.uint8)
    scale = plan.ct_window_hu[1] / 1000.0
    return {"image": (ct.astype(np.float32) * scale).reshape(1, -1), "label": pet.copy()}, {"n_bytes": len(ct)}


def failing_entry(case: TrainingCase, plan) -> tuple[dict[str, np.ndarray], dict]:
    raise RuntimeError("preprocessing crashed")


def make_cases(root: Path, n: int = 3) -> list[TrainingCase]:
    cases = []
    for k in range(n):
        folder = root / f"P{k}"
        folder.mkdir(parents=True)
        ct, pet = folder / f"P{k}__CT.nii.gz", folder / f"P{k}__PT.nii.gz"
        ct.write_bytes(bytes(range(10 + k)))
        pet.write_bytes(bytes([k] * 5))
        cases.append(TrainingCase(f"P{k}", ct, pet, None))
    return cases


@pytest.fixture
def cases(tmp_path) -> list[TrainingCase]:
    return make_cases(tmp_path / "data")


def test_entries_are_built_once_and_reused(cases, tmp_path):
    plan = BoxPlan()
    cache = PreprocessingCache(tmp_path / "cache", plan, bytes_entry)
    assert cache.dir == tmp_path / "cache" / f"box-{plan.digest()}"
    assert cache.prepare(cases) == {"built": 3, "reused": 0}
    record = cache.record_path("P1")
    written = record.stat().st_mtime_ns
    again = PreprocessingCache(tmp_path / "cache", plan, bytes_entry)
    assert again.prepare(cases) == {"built": 0, "reused": 3}
    assert record.stat().st_mtime_ns == written

    entry = again.load("P1")
    np.testing.assert_array_equal(entry.arrays["image"], np.arange(11, dtype=np.float32)[None])
    np.testing.assert_array_equal(entry.arrays["label"], np.ones(5, np.uint8))
    assert entry.info == {"n_bytes": 11}
    stored = json.loads(record.read_text())
    assert (stored["version"], stored["plan_kind"], stored["plan_digest"]) == (CACHE_VERSION, "box", plan.digest())
    assert stored["arrays"] == {"image": {"shape": [1, 11], "dtype": "float32"},
                                "label": {"shape": [5], "dtype": "uint8"}}
    assert BoxPlan.load(cache.dir / "plan.json") == plan
    assert sorted(p.name for p in cache.dir.iterdir() if p.name.startswith(".")) == []  # no temporary files left
    mapped = again.load("P1", mmap=("image",))
    assert isinstance(mapped.arrays["image"], np.memmap) and not isinstance(mapped.arrays["label"], np.memmap)


def test_another_plan_or_variant_is_another_folder(cases, tmp_path):
    box = BoxPlan()
    root = tmp_path / "cache"
    first = PreprocessingCache(root, box, bytes_entry)
    first.prepare(cases)
    wider = box.replace(ct_window_hu=(-1000.0, 2000.0))
    second = PreprocessingCache(root, wider, bytes_entry)
    assert second.dir != first.dir and second.dir.name == f"box-{wider.digest()}"
    assert second.prepare(cases) == {"built": 3, "reused": 0}
    # The new plan's numbers reached the arrays; the old folder is untouched.
    np.testing.assert_array_equal(second.load("P0").arrays["image"], 2 * first.load("P0").arrays["image"])
    region = PreprocessingCache(root, RegionPlan(), bytes_entry, variant="mask")
    assert region.dir.name == f"region-{RegionPlan().digest()}-mask"
    assert {p.name for p in root.iterdir()} == {first.dir.name, second.dir.name}


def test_a_changed_source_file_invalidates_its_entry_only(cases, tmp_path):
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), bytes_entry)
    cache.prepare(cases)
    cases[2].ct_path.write_bytes(bytes(range(40)))  # new content, new size
    stamp = cases[0].pet_path.stat().st_mtime_ns
    os.utime(cases[0].pet_path, ns=(stamp, stamp + 10**9))  # same content, new modification time
    assert [cache.is_current(c) for c in cases] == [False, True, False]
    assert cache.prepare(cases) == {"built": 2, "reused": 1}
    assert cache.load("P2").arrays["image"].shape == (1, 40)


def test_an_entry_without_its_record_is_rebuilt_not_loaded(cases, tmp_path):
    """An interrupted build leaves arrays but no record (the record is written last)."""
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), bytes_entry)
    cache.prepare(cases)
    cache.record_path("P0").unlink()
    assert not cache.is_current(cases[0])
    with pytest.raises(InputError, match="P0 has no complete entry"):
        cache.load("P0")
    assert cache.prepare(cases) == {"built": 1, "reused": 2}
    assert cache.load("P0").arrays["image"].shape == (1, 10)


@pytest.mark.parametrize("damage", ["truncate", "drop_array", "garble_record"])
def test_a_damaged_entry_is_rebuilt_not_loaded(cases, tmp_path, damage):
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), bytes_entry)
    cache.prepare(cases)
    image = cache.array_path("P1", "image")
    expected = np.load(image)
    if damage == "truncate":  # e.g. a copy cut short: the header still promises 11 floats
        image.write_bytes(image.read_bytes()[:-8])
    elif damage == "drop_array":
        image.unlink()
    else:
        cache.record_path("P1").write_text('{"version": ')
    assert not cache.is_current(cases[1])
    with pytest.raises(InputError, match="no complete entry"):
        cache.load("P1")
    assert cache.prepare(cases) == {"built": 1, "reused": 2}
    np.testing.assert_array_equal(cache.load("P1").arrays["image"], expected)


def test_a_failed_build_leaves_no_entry_and_no_temporary_files(cases, tmp_path):
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), bytes_entry)
    cache.prepare(cases)
    broken = PreprocessingCache(tmp_path / "cache", BoxPlan(), failing_entry)
    cases[0].ct_path.write_bytes(b"changed")
    with pytest.raises(RuntimeError, match="crashed"):
        broken.prepare(cases)
    assert not cache.record_path("P0").exists()  # the stale record was withdrawn before preprocessing
    assert [p.name for p in cache.dir.iterdir() if p.name.startswith(".")] == []
    assert cache.prepare(cases) == {"built": 1, "reused": 2}


def pid_entry(case: TrainingCase, plan) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`bytes_entry` that records which process built the entry."""
    arrays, info = bytes_entry(case, plan)
    return arrays, {**info, "pid": os.getpid()}


def test_ranks_share_the_work_and_workers_build_the_same_entries(cases, tmp_path, monkeypatch):
    cache = PreprocessingCache(tmp_path / "ranks", BoxPlan(), bytes_entry)
    assert cache.prepare(cases, rank=0, world_size=2) == {"built": 2, "reused": 0}  # P0 and P2
    assert cache.prepare(cases, rank=1, world_size=2) == {"built": 1, "reused": 0}  # P1
    assert all(cache.is_current(c) for c in cases)
    monkeypatch.setattr(cache_module, "POOL_MIN_SECONDS", 0.0)  # workers however small the work
    parallel = PreprocessingCache(tmp_path / "workers", BoxPlan(), pid_entry)
    assert parallel.prepare(cases, workers=2) == {"built": 3, "reused": 0}
    for case in cases:
        a, b = cache.load(case.patient_id), parallel.load(case.patient_id)
        assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
        assert b.info["pid"] != os.getpid() and a.info == {k: v for k, v in b.info.items() if k != "pid"}


def test_workers_start_only_where_the_work_pays_for_them(cases, tmp_path):
    """The first case is timed here; three tiny cases take far less than starting a worker (it imports torch)."""
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), pid_entry)
    assert cache.prepare(cases, workers=2) == {"built": 3, "reused": 0}
    assert {cache.load(c.patient_id).info["pid"] for c in cases} == {os.getpid()}


# ----------------------------------------------------------------------------------------------- killed cache builds
def slow_bytes_entry(case: TrainingCase, plan) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`bytes_entry` that first leaves a mark ``<PID>.<process id>`` in ``$MARK_DIR`` and takes a while."""
    Path(os.environ["MARK_DIR"], f"{case.patient_id}.{os.getpid()}").write_text("")
    time.sleep(float(os.environ.get("SLOW_S", "3")))
    return bytes_entry(case, plan)


def build_and_die(data: str, cache_root: str, kind: str, n: int, fraction: float) -> None:
    """Child process: build the cache of the cases in ``data`` in this process and SIGKILL itself at the ``n``-th
    array write (``save``, ``fraction`` of the array's bytes written to the temporary file) or before the ``n``-th
    record (``record``: every array of that entry complete)."""
    import hecktor.training.cache as cache_module

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    count = itertools.count(1)
    if kind == "save":
        save = np.save

        def killing_save(file, array, *args, **kwargs):
            if next(count) == n:
                buffer = io.BytesIO()
                save(buffer, array, *args, **kwargs)
                Path(file).write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * fraction)])
                die()
            save(file, array, *args, **kwargs)

        np.save = killing_save
    else:
        write = cache_module.write_text_atomic

        def killing_write(text, path):
            if Path(path).name != "plan.json" and next(count) == n:
                die()
            return write(text, path)

        cache_module.write_text_atomic = killing_write
    cases = make_cases_from(Path(data))
    PreprocessingCache(cache_root, BoxPlan(), bytes_entry).prepare(cases)


def make_cases_from(root: Path) -> list[TrainingCase]:
    return [TrainingCase(f.name, f / f"{f.name}__CT.nii.gz", f / f"{f.name}__PT.nii.gz", None)
            for f in sorted(root.iterdir())]


def child_python(code: str, env: dict[str, str] | None = None, **options) -> subprocess.Popen:
    """A Python child running ``code`` with this test module importable (as its own name)."""
    tests = str(Path(__file__).parent)
    path = os.pathsep.join([tests, *sys.path])
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **options)


def test_an_entry_half_written_by_a_killed_build_is_rebuilt(tmp_path):
    """SIGKILL at three points drawn from a seeded RNG (mid-way through an array's bytes, or with the arrays written
    but not the record): the next prepare rebuilds that entry and the unbuilt ones, reuses the complete ones, and
    the result equals a build that was never interrupted; no temporary file survives."""
    cases = make_cases(tmp_path / "data", n=4)
    reference = PreprocessingCache(tmp_path / "reference", BoxPlan(), bytes_entry)
    reference.prepare(cases)
    rng = np.random.default_rng(5)
    for trial, kind in enumerate(["save", "save", "record"]):
        root = tmp_path / f"cache{trial}"
        n = int(rng.integers(1, 2 * len(cases) + 1)) if kind == "save" else int(rng.integers(1, len(cases) + 1))
        fraction = float(rng.uniform(0.1, 0.9))
        child = child_python(f"import test_training_cache as t; t.build_and_die({str(tmp_path / 'data')!r}, "
                             f"{str(root)!r}, {kind!r}, {n}, {fraction})")
        output, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL, output
        cache = PreprocessingCache(root, BoxPlan(), bytes_entry)
        complete = (n - 1) // 2 if kind == "save" else n - 1  # two arrays per entry, the record after them
        assert [cache.is_current(c) for c in cases] == [k < complete for k in range(len(cases))]
        if kind == "save":
            assert list(cache.dir.glob(".*")), "the killed write leaves its temporary file"
        assert cache.prepare(cases) == {"built": len(cases) - complete, "reused": complete}
        for case in cases:
            a, b = cache.load(case.patient_id), reference.load(case.patient_id)
            assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in b.arrays) and a.info == b.info
        assert list(cache.dir.glob(".*")) == []


def alive(pid: int) -> bool:
    """Running (a killed process stays a zombie, state Z, until its new parent reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_killing_a_build_with_workers_stops_them_and_the_next_build_completes(cases, tmp_path):
    """The parent of a two-worker build is SIGKILLed while both workers preprocess: the workers die with it (no
    orphans preprocessing on), and the next prepare rebuilds what they left half done."""
    marks = tmp_path / "marks"
    marks.mkdir()
    code = ("import test_training_cache as t\n"
            "from hecktor.plan import BoxPlan\n"
            "from hecktor.training import cache\n"
            "from hecktor.training.cache import PreprocessingCache\n"
            "cache.POOL_MIN_SECONDS = 0.0\n"
            "if __name__ == '__main__':\n"
            f"    cases = t.make_cases_from(__import__('pathlib').Path({str(tmp_path / 'data')!r}))\n"
            f"    PreprocessingCache({str(tmp_path / 'cache')!r}, BoxPlan(), t.slow_bytes_entry).prepare(cases, "
            "workers=2)\n")
    parent = child_python(code, env={"MARK_DIR": str(marks), "SLOW_S": "30"})
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
        workers = sorted({int(mark.suffix[1:]) for mark in marks.iterdir()})
        assert len(workers) == 2, parent.communicate(timeout=5)[0] if parent.poll() is not None else workers
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers), "orphaned workers still running"
    finally:
        if parent.poll() is None:
            parent.kill()
    cache = PreprocessingCache(tmp_path / "cache", BoxPlan(), bytes_entry)
    assert cache.prepare(cases) == {"built": 3, "reused": 0}
    reference = PreprocessingCache(tmp_path / "reference", BoxPlan(), bytes_entry)
    reference.prepare(cases)
    for case in cases:
        assert np.array_equal(cache.load(case.patient_id).arrays["image"], reference.load(case.patient_id).arrays["image"])


def test_workers_default_to_the_available_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert available_cores() == 6
    assert resolve_workers(None) == 6 and resolve_workers(None, share=4) == 1 and resolve_workers(None, share=2) == 3
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3
    with pytest.raises(InputError, match="workers must be >= 0"):
        resolve_workers(-1)
