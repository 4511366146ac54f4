"""Task 1 training survives a kill (hecktor.training.segmentation): SIGKILL at points drawn from a seeded RNG, during
an epoch, during a checkpoint write, between the renames of a checkpoint, during validation, while logging; each
time ``--resume`` continues from the last complete checkpoint, and the run ends where an uninterrupted one does.
A truncated or corrupt checkpoint (planted by hand, as a full disk or a copy cut short would leave it) is detected,
moved aside and never loaded; the one before it is used. Under a multi-process job, a rank that dies or hangs makes
the other exit with one ``error:`` line within a bounded time.

The training runs are real processes killed by a real SIGKILL. They are forked from a multiprocessing forkserver
that has imported torch and the trainer once (so a run costs its training, about a second, not the imports), and
kill themselves at the chosen point (a patched function sends SIGKILL to its own process); the slow variant also
kills at random times from outside.
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hecktor.errors import InputError
from hecktor.synthetic import generate_cohort
from hecktor.training import segmentation
from hecktor.training.distributed import _stop_on_sigterm
from hecktor.training.segmentation import trainer as segmentation_trainer
from hecktor.training.segmentation import (
    CheckpointError,
    CheckpointWarning,
    DistributedContext,
    DistributedJobError,
    distributed_failures,
    find_resume_checkpoint,
    load_checkpoint,
    previous_checkpoint_path,
    remove_stale_temporaries,
    save_checkpoint,
    set_aside,
    verify_checkpoint_file,
)
from helpers.paths import REPO

CONFIG = REPO / "training" / "configs" / "tiny.json"
FAST_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
EPOCHS, ITERATIONS, VAL_EVERY = 4, 2, 2
KILL_KINDS = ("step", "write", "rename", "validate", "log")


# ------------------------------------------------------------------------------------------ checkpoint files alone
def fake_checkpoint(epoch: int, size: int = 5000) -> dict:
    generator = torch.Generator().manual_seed(epoch)
    return {"format": segmentation.CHECKPOINT_FORMAT, "epoch": epoch,
            "model": {"weight": torch.randn(size, generator=generator)}, "best": {"val_dice_mean": 0.1 * epoch}}


def data_offset(path: Path) -> tuple[int, int]:
    """Where the bytes of the largest record (the tensor) lie in a checkpoint archive."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra), info.file_size


def test_save_checkpoint_keeps_the_previous_one_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(fake_checkpoint(1), path)
    assert not previous_checkpoint_path(path).exists()
    save_checkpoint(fake_checkpoint(2), path)
    assert previous_checkpoint_path(path).name == "checkpoint_last.previous.pt"
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(previous_checkpoint_path(path))["epoch"] == 1
    torch.testing.assert_close(load_checkpoint(path)["model"]["weight"], fake_checkpoint(2)["model"]["weight"])
    save_checkpoint(fake_checkpoint(3), tmp_path / "checkpoint_best.pt", keep_previous=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_best.pt", "checkpoint_last.previous.pt", "checkpoint_last.pt"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "text", "not_a_checkpoint"])
def test_a_damaged_checkpoint_is_detected_and_never_loaded(tmp_path, monkeypatch, damage):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(fake_checkpoint(1), path)
    save_checkpoint(fake_checkpoint(2), path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(7)
    if damage == "truncate":  # a copy cut short, or a disk that filled up under a plain (non-atomic) write
        path.write_bytes(data[: int(rng.integers(1, len(data)))])
    elif damage == "flip":  # one bad byte inside the weights: the archive still opens, its CRC-32 does not match
        start, size = data_offset(path)
        data[start + int(rng.integers(0, size))] ^= 0xFF
        path.write_bytes(data)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint")
    else:  # a sound archive holding something else
        torch.save({"weights": torch.ones(3)}, path)
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loaded.append(Path(f).name) or real_load(f, *a, **k))
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(path)
    if damage != "not_a_checkpoint":
        with pytest.raises(CheckpointError):
            verify_checkpoint_file(path)
        assert loaded == []  # verified before torch.load ever saw the file

    checkpoint, used, damaged = find_resume_checkpoint(tmp_path)
    assert checkpoint["epoch"] == 1 and used == previous_checkpoint_path(path)
    assert [p for p, _ in damaged] == [path]
    with pytest.warns(CheckpointWarning, match="checkpoint_last.pt.damaged"):
        set_aside(path, damaged[0][1])
    assert (tmp_path / "checkpoint_last.pt.damaged").read_bytes() != b"" or damage == "empty"
    assert find_resume_checkpoint(tmp_path)[0]["epoch"] == 1


def test_a_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """A full disk: torch.save fails half-way. The last checkpoint, and the one before it, stay as they were."""
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(fake_checkpoint(1), path)
    save_checkpoint(fake_checkpoint(2), path)
    before = path.read_bytes(), previous_checkpoint_path(path).read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(fake_checkpoint(3), path)
    assert (path.read_bytes(), previous_checkpoint_path(path).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.previous.pt", "checkpoint_last.pt"]


def test_a_short_write_that_reports_success_is_caught_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(fake_checkpoint(1), path)
    real_save = torch.save

    def short_write(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        Path(f).write_bytes(buffer.getvalue()[:-64])

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(CheckpointError, match="truncated"):
        save_checkpoint(fake_checkpoint(2), path)
    assert load_checkpoint(path)["epoch"] == 1 and not previous_checkpoint_path(path).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    save_checkpoint(fake_checkpoint(1), tmp_path / "checkpoint_last.pt")
    (tmp_path / ".checkpoint_last.pt.abc123.pt").write_bytes(b"PK")
    (tmp_path / ".checkpoint_best.pt.x.pt").write_bytes(b"")
    (tmp_path / "metrics.json").write_text("[]")
    assert len(remove_stale_temporaries(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt", "metrics.json"]


# ------------------------------------------------------------------------------------------------ collective errors
def test_collective_failures_become_one_line_errors():
    two = DistributedContext(rank=1, world_size=2, local_rank=1, local_world_size=2)
    gloo = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:8583: Connection "
            "reset by peer. This is typically caused by a remote worker hanging or bugs in the application.")
    with pytest.raises(DistributedJobError) as raised:
        with distributed_failures(two):
            raise RuntimeError(gloo)
    message = str(raised.value)
    assert message.startswith("rank 1 of 2 lost contact") and "Connection reset by peer" in message
    assert "pair.cc" not in message and "\n" not in message and raised.value.exit_status == 1
    with pytest.raises(DistributedJobError, match="Timed out waiting 5000ms"):
        with distributed_failures(two):
            raise RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug stays a bug
        with distributed_failures(two):
            raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="Connection reset"):  # one process: nothing to lose contact with
        with distributed_failures(DistributedContext()):
            raise RuntimeError(gloo)


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(segmentation.DIST_TIMEOUT_ENV, raising=False)
    assert segmentation.dist_timeout_s() == segmentation.DEFAULT_DIST_TIMEOUT_S
    monkeypatch.setenv(segmentation.DIST_TIMEOUT_ENV, "12.5")
    assert segmentation.dist_timeout_s() == 12.5
    monkeypatch.setenv(segmentation.DIST_TIMEOUT_ENV, "soon")
    with pytest.raises(InputError, match="HECKTOR_DIST_TIMEOUT_S"):
        segmentation.dist_timeout_s()


# ------------------------------------------------------------------------------------------- killed training runs
def _event(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def _die(how: str = "kill") -> None:
    """SIGKILL this process (``kill``), or SIGSTOP it (``stop``: alive, holding its connections, silent)."""
    os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)
    if how == "kill":
        time.sleep(60)  # not reached


def _record_events(events: str) -> None:
    """Append what the trainer does to ``events``: every completed checkpoint save, every checkpoint that reaches
    torch.load, and where each run resumed."""
    save, find, load = segmentation_trainer.save_checkpoint, segmentation_trainer.find_resume_checkpoint, torch.load

    def recorded_save(checkpoint, path, **options):
        save(checkpoint, path, **options)
        _event(events, f"saved {Path(path).name} {checkpoint['epoch']}")

    def recorded_find(fold_dir, *args, **kwargs):
        checkpoint, path, damaged = find(fold_dir, *args, **kwargs)
        _event(events, f"resume {checkpoint['epoch'] if checkpoint else 0} {path.name if path else '-'}")
        return checkpoint, path, damaged

    def recorded_load(f, *args, **kwargs):
        _event(events, f"load {Path(f).name}")
        return load(f, *args, **kwargs)

    segmentation_trainer.save_checkpoint = recorded_save  # the names the trainer calls
    segmentation_trainer.find_resume_checkpoint = recorded_find
    torch.load = recorded_load


def _arm(kind: str, n: int, fraction: float, how: str = "kill") -> None:
    """SIGKILL this process at the ``n``-th occurrence of ``kind``: ``step`` (an optimizer step: mid-epoch),
    ``write`` (a checkpoint's bytes, ``fraction`` of them written), ``rename`` (a rename of a checkpoint file),
    ``validate`` (a validation starting), ``log`` (the metrics log, its CSV written but not its JSON). With
    ``how="stop"`` (``step`` only) the process stops instead (SIGSTOP)."""
    count = itertools.count(1)
    if kind == "step":
        step = torch.optim.AdamW.step

        def killing_step(self, *args, **kwargs):
            if next(count) == n:
                _die(how)
            return step(self, *args, **kwargs)

        torch.optim.AdamW.step = killing_step
    elif kind == "write":
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if next(count) == n:
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                with open(f, "wb") as handle:
                    handle.write(buffer.getvalue()[: int(len(buffer.getvalue()) * fraction)])
                _die()
            return save(obj, f, *args, **kwargs)

        torch.save = killing_save
    elif kind == "rename":
        replace = os.replace

        def killing_replace(src, dst, *args, **kwargs):
            if Path(dst).name.startswith("checkpoint_") and next(count) == n:
                _die()
            return replace(src, dst, *args, **kwargs)

        os.replace = killing_replace
    elif kind == "validate":
        validate = segmentation.SegmentationTrainer.validate

        def killing_validate(self, *args, **kwargs):
            if next(count) == n:
                _die()
            return validate(self, *args, **kwargs)

        segmentation.SegmentationTrainer.validate = killing_validate
    elif kind == "log":
        from hecktor.training import run_log

        write = run_log.write_text_atomic

        def killing_write(*args, **kwargs):
            if next(count) == n:
                _die()
            return write(*args, **kwargs)

        run_log.write_text_atomic = killing_write
    else:
        raise ValueError(kind)


def child(argv: list[str], log: str, events: str, kill: tuple | None, env: dict[str, str]) -> None:
    """One training run (train_segmentation.py's main) in a process forked from the forkserver."""
    os.environ.update(env)
    handle = open(log, "a", buffering=1)
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    sys.stdout = sys.stderr = handle
    torch.set_num_threads(1)  # the same arithmetic in every run, and two runs of the DDP test side by side
    from hecktor.training import run_log

    # Drawing metrics.png takes most of a tiny run's time (matplotlib), and no guarantee tested here depends on it.
    run_log.RunLog._plot = lambda self, columns: None
    _record_events(events)
    if kill is not None:
        _arm(*kill)
    import train_segmentation

    sys.exit(train_segmentation.main(argv))


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    # Everything a run imports, including what torch and MONAI import lazily on first use (the optimizer's
    # torch._dynamo, the losses, the networks): each run then costs its training only.
    context.set_forkserver_preload([__name__, "train_segmentation", "torch._dynamo", "monai.losses",
                                    "monai.networks.nets"])
    return context


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root, cases=4, seed=11, size="small")
    return root


def train_argv(cohort: Path, run_dir: Path, resume: bool) -> list[str]:
    return ["--config", str(CONFIG), "--data", str(cohort), "--out", str(run_dir),
            "--cache-dir", str(cohort.parent / "cache"), "--network", "unet", "--network-config", json.dumps(FAST_UNET),
            "--fold", "0", "--epochs", str(EPOCHS), "--iterations-per-epoch", str(ITERATIONS),
            "--val-every", str(VAL_EVERY), "--workers", "0", "--device", "cpu", "--no-progress",
            *(["--resume"] if resume else [])]


class Runs:
    """Starts the training runs of one test and keeps their logs and events apart."""

    def __init__(self, context, folder: Path) -> None:
        self.context, self.folder, self.count = context, folder, 0

    def start(self, argv: list[str], kill: tuple | None = None, env: dict[str, str] | None = None):
        self.count += 1
        log, events = self.folder / f"run{self.count}.log", self.folder / f"run{self.count}.events"
        events.touch()
        process = self.context.Process(target=child, args=(argv, str(log), str(events), kill, env or {}))
        process.start()
        process.log, process.events = log, events
        return process

    def run(self, argv: list[str], kill: tuple | None = None, timeout: float = 120.0):
        process = self.start(argv, kill)
        process.join(timeout)
        assert process.exitcode is not None, f"run {self.count} did not finish in {timeout} s: {process.log.read_text()}"
        return process.exitcode, process.events.read_text().split("\n")[:-1], process.log.read_text()


def saved_lasts(events: list[str]) -> list[int]:
    return [int(e.split()[2]) for e in events if e.startswith("saved checkpoint_last.pt")]


def resumed_from(events: list[str]) -> int:
    (line,) = [e for e in events if e.startswith("resume ")]
    return int(line.split()[1])


def plant_damage(path: Path, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        path.write_bytes(data[: int(rng.integers(1, len(data)))])
        return "truncated"
    start, size = data_offset(path)
    data[start + int(rng.integers(0, size))] ^= 0xFF
    path.write_bytes(data)
    return "flipped"


def reachable(kind: str, done: int, rng: np.random.Generator) -> tuple:
    """A kill point that a run resuming after ``done`` epochs is sure to reach."""
    left = EPOCHS - done
    limits = {"step": left * ITERATIONS, "write": left, "rename": left, "log": left,
              "validate": sum(1 for e in range(done + 1, EPOCHS + 1) if e % VAL_EVERY == 0 or e == EPOCHS)}
    return kind, int(rng.integers(1, limits[kind] + 1)), float(rng.uniform(0.05, 0.95))


def check_no_partial_files(fold_dir: Path) -> None:
    """Whatever the kill, the checkpoint names hold complete checkpoints only."""
    for path in fold_dir.glob("checkpoint_*.pt"):
        verify_checkpoint_file(path)


class CheckpointFiles:
    """What ``checkpoint_last.pt`` and ``checkpoint_last.previous.pt`` hold (epochs), as the runs' events tell."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.previous: int | None = None

    def saved(self, events: list[str]) -> None:
        for epoch in saved_lasts(events):
            if self.last is not None:
                self.previous = self.last
            self.last = epoch

    def damage_last(self) -> None:
        self.last = None  # moved aside by the next run

    @property
    def resume_epoch(self) -> int:
        """Where the next run must start: the last complete save, or the one before a damaged one (0: afresh)."""
        return self.last if self.last is not None else (self.previous or 0)


def kill_and_resume(cohort: Path, folder: Path, context, kinds: list[str], seed: int, damage_after: set[int],
                    timed_kills: int = 0) -> None:
    runs = Runs(context, folder)
    reference_dir, run_dir = folder / "reference", folder / "killed"
    started = time.perf_counter()
    code, _, log = runs.run(train_argv(cohort, reference_dir, resume=False))
    assert code == 0, log
    reference_seconds = time.perf_counter() - started

    rng = np.random.default_rng(seed)
    fold_dir = run_dir / "fold_0"
    files = CheckpointFiles()
    damaged = 0
    for k, kind in enumerate(kinds):
        kill = reachable(kind, files.resume_epoch, rng)
        code, events, log = runs.run(train_argv(cohort, run_dir, resume=k > 0), kill)
        assert code == -signal.SIGKILL, f"kill point {kill} not reached: {log}"
        if k:
            # Resumed from the last complete checkpoint: only the epoch in progress when it was killed is lost (two
            # where the last checkpoint was damaged), and a damaged file never reaches torch.load.
            assert resumed_from(events) == files.resume_epoch, (kill, events)
            assert "load checkpoint_last.pt.damaged" not in events
        files.saved(events)
        check_no_partial_files(fold_dir)
        if k in damage_after and (fold_dir / "checkpoint_last.pt").is_file():
            plant_damage(fold_dir / "checkpoint_last.pt", rng)
            files.damage_last()
            damaged += 1

    extra = 0  # a kill from outside may land after a save but before its event was written
    for _ in range(timed_kills):  # kills from outside at a random time, wherever they land
        process = runs.start(train_argv(cohort, run_dir, resume=True))
        time.sleep(float(rng.uniform(0.0, reference_seconds)))
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
        events = process.events.read_text().split("\n")[:-1]
        if process.exitcode == 0:
            break
        check_no_partial_files(fold_dir)
        if any(e.startswith("resume") for e in events):
            assert files.resume_epoch <= resumed_from(events) <= files.resume_epoch + extra
        files.saved(events)
        extra = 1

    code, events, log = runs.run(train_argv(cohort, run_dir, resume=True))
    assert code == 0, log
    assert files.resume_epoch <= resumed_from(events) <= files.resume_epoch + extra
    if damaged:
        assert "CheckpointWarning" in "".join(
            (folder / f"run{i}.log").read_text() for i in range(1, runs.count + 1))
        assert (fold_dir / "checkpoint_last.pt.damaged").is_file()

    # The killed and resumed run ends where the uninterrupted one did: same epochs logged, same losses, same weights.
    assert not list(fold_dir.glob(".*")), "temporary files left behind"
    rows = json.loads((fold_dir / "metrics.json").read_text())
    expected = json.loads((reference_dir / "fold_0" / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in expected] == list(range(1, EPOCHS + 1))
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in expected], rel=1e-5)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        a, b = load_checkpoint(fold_dir / name), load_checkpoint(reference_dir / "fold_0" / name)
        assert a["epoch"] == b["epoch"] and a["best"]["epoch"] == b["best"]["epoch"]
        for key, value in b["model"].items():
            torch.testing.assert_close(a["model"][key], value, rtol=1e-5, atol=1e-6)


def test_training_resumes_after_kills_during_an_epoch_and_a_checkpoint_write(cohort, tmp_path, forkserver):
    """Three kills (mid-epoch, mid-write of a checkpoint, between the renames of a checkpoint) and a checkpoint
    damaged by hand after the second; a few seconds per kill."""
    kill_and_resume(cohort, tmp_path, forkserver, ["write", "step", "rename"], seed=11, damage_after={1})


@pytest.mark.slow
def test_training_resumes_after_many_random_kills(cohort, tmp_path, forkserver):
    """Eight kill points of every kind drawn from a seeded RNG, two damaged checkpoints, three kills from outside
    at random times."""
    rng = np.random.default_rng(2025)
    kinds = [str(k) for k in rng.choice(KILL_KINDS, 8)]
    kill_and_resume(cohort, tmp_path, forkserver, kinds, seed=12, damage_after={2, 5}, timed_kills=3)


# --------------------------------------------------------------------------------------- a rank that dies or hangs
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_env(rank: int, port: int, timeout_s: float) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
            "RANK": str(rank), "LOCAL_RANK": str(rank), segmentation.DIST_TIMEOUT_ENV: str(timeout_s)}


def stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("failure", ["kill", "stop"])
def test_a_rank_that_dies_or_hangs_stops_the_other_with_one_line(cohort, tmp_path, forkserver, failure):
    """Two gloo processes of one job (the environment torchrun gives them); rank 1 is SIGKILLed (or stopped with
    SIGSTOP: alive but silent) at its third optimizer step. Rank 0 exits with one line and status 1: at once when
    the peer's connections close, after the process-group timeout when it hangs."""
    runs = Runs(forkserver, tmp_path)
    port, timeout_s = free_port(), 5.0
    argv = train_argv(cohort, tmp_path / "ddp", resume=False)
    rank0 = runs.start(argv, env=ddp_env(0, port, timeout_s))
    rank1 = runs.start(argv, kill=("step", 3, 0.5, failure), env=ddp_env(1, port, timeout_s))
    try:
        deadline = time.perf_counter() + 120
        while rank1.is_alive() and not stopped(rank1.pid) and time.perf_counter() < deadline:
            time.sleep(0.05)
        failed_at = time.perf_counter()
        assert rank1.exitcode == -signal.SIGKILL if failure == "kill" else stopped(rank1.pid), rank1.log.read_text()
        rank0.join(timeout_s + 30)
        seconds = time.perf_counter() - failed_at
    finally:
        for process in (rank0, rank1):
            if process.is_alive():
                process.kill()
                process.join(10)
    log = rank0.log.read_text()
    assert rank0.exitcode == 1, log
    (line,) = error_lines(log)
    assert line.startswith("error: rank 0 of 2 lost contact with another process of the job")
    assert "Traceback" not in log
    if failure == "kill":
        assert "Connection" in line and seconds < 15
    else:
        assert "Timed out" in line and timeout_s / 2 < seconds < timeout_s + 25


def sigterm_child(log: str) -> None:
    """A rank of a two-process job that is busy (not in a collective) when torchrun stops it with SIGTERM."""
    handle = open(log, "a", buffering=1)
    os.dup2(handle.fileno(), 2)
    sys.stderr = handle
    _stop_on_sigterm(DistributedContext(rank=0, world_size=2, local_rank=0, local_world_size=2))
    from hecktor.training import cli

    def busy() -> None:
        Path(log + ".ready").touch()
        while True:
            time.sleep(0.01)

    sys.exit(cli.run_cli(busy))


def test_sigterm_from_torchrun_ends_a_busy_rank_with_one_line(tmp_path, forkserver):
    log = tmp_path / "rank0.log"
    process = forkserver.Process(target=sigterm_child, args=(str(log),))
    process.start()
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{log}.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGTERM)
        process.join(10)
    finally:
        if process.is_alive():
            process.kill()
    text = log.read_text()
    assert process.exitcode == 1, text
    (line,) = error_lines(text)
    assert line.startswith("error: rank 0 of 2 was stopped (SIGTERM): torchrun stops every process")
    assert "Traceback" not in text


@pytest.mark.slow
def test_torchrun_stops_the_job_when_a_rank_dies(cohort, tmp_path):
    """The real launcher: torchrun with two CPU processes, rank 1 SIGKILLed at its third optimizer step. torchrun
    notices, stops rank 0 (or rank 0 notices first), and the job ends within a bounded time; rank 0 says so in one
    line."""
    script = tmp_path / "killed_rank.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path[:0] = [{str(REPO / 'tests')!r}, {str(REPO / 'training')!r}]\n"
        "import test_training_resilience as t\n"
        "if os.environ['RANK'] == '1':\n"
        "    t._arm('step', 3, 0.5)\n"
        "import train_segmentation\n"
        "sys.exit(train_segmentation.main(sys.argv[1:]))\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               *train_argv(cohort, tmp_path / "torchrun", resume=False)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", segmentation.DIST_TIMEOUT_ENV: "60"}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: rank 0 of 2")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout
    assert seconds < 150
