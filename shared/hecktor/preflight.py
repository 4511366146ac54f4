"""The pre-flight report: what a participant reads before uploading, measured on the local runs of the images.

``test_container.sh`` runs every case through :func:`measure_command` (``python -m hecktor.preflight run``), which
appends one record per case (wall time, peak memory, exit status) to a JSON-lines file; the sizes of the files to
upload (the image archive and the model tarball, or the image itself when it was not saved) are appended with
``python -m hecktor.preflight size``. ``python -m hecktor.preflight report FILE`` then sets each number against the
platform's limit (docs/reference/platform-interface.md): the task's wall-clock limit per case (``limit_s`` of the
registry :mod:`hecktor.tasks`), 16 GB of memory, 10 GB per uploaded file. A number above 80 % of its limit is marked
``tight``: the platform's T4 and disks may be slower than the machine that measured it.
"""

from __future__ import annotations

import argparse
import json
import re
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hecktor.tasks import get_task

__all__ = ["MEMORY_LIMIT_BYTES", "UPLOAD_LIMIT_BYTES", "TIGHT_FRACTION", "CaseRun", "UploadSize", "measure_command",
           "parse_memory", "read_records", "report", "main"]

MEMORY_LIMIT_BYTES = 16 * 1024**3
"""The platform's memory (16 GB; ``test_container.sh`` caps each run at ``--memory 16g``, which is this many bytes)."""
UPLOAD_LIMIT_BYTES = 10 * 1000**3
"""The platform's limit on an uploaded image or model tarball (10 GB)."""
TIGHT_FRACTION = 0.8
"""Above this fraction of a limit a number is reported ``tight``."""

_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


@dataclass(frozen=True)
class CaseRun:
    """One case run: its task and name, wall time, peak memory (``None``: not measured) and how it was measured."""

    task: int
    case: str
    seconds: float
    peak_memory_bytes: int | None
    memory_source: str
    status: int


@dataclass(frozen=True)
class UploadSize:
    """The size of one file to upload (``what``: ``image archive``, ``model tarball``, ``image``) of a task."""

    task: int
    what: str
    path: str
    bytes: int


def parse_memory(text: str) -> int | None:
    """Bytes of the first amount in an engine's ``stats`` memory column (``1.5GiB / 16GiB`` -> 1610612736), or
    ``None`` when it holds none."""
    match = re.match(r"\s*([0-9.]+)\s*([kKMGT]?i?B)\b", text)
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def measure_command(command: Sequence[str], *, engine: str | None = None, container: str | None = None
                    ) -> tuple[int, float, int | None, str]:
    """Run ``command``; return its exit status, wall seconds, peak memory in bytes and how that was measured.

    Without ``container`` the command is the process that predicts: its peak resident memory is the kernel's maximum
    RSS of that child (``wait4``). Linux counts in it the peak of the process that started it (kept across ``exec``),
    so measure from a small process, as ``python -m hecktor.preflight run`` is: from a process holding 1.2 GB a
    300 MB child reads 1.2 GB. With a container the command is the engine's client, so the container's
    memory is sampled every half second with ``ENGINE stats`` (a peak between two samples can be missed; ``None``
    when the run ended before the first sample).
    """
    peaks: list[int] = []
    start = time.monotonic()
    process = subprocess.Popen(list(command))
    sampler = None
    if container is not None and engine is not None:
        def sample() -> None:
            while process.poll() is None:
                probe = subprocess.run([engine, "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
                                       capture_output=True, text=True, check=False)
                value = parse_memory(probe.stdout) if probe.returncode == 0 else None
                if value is not None:
                    peaks.append(value)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    if sampler is not None:
        status = process.wait()
        seconds = time.monotonic() - start
        sampler.join(timeout=15)
        return status, seconds, max(peaks) if peaks else None, f"sampled with {Path(engine).name} stats"
    # wait4 gives this child's own usage; RUSAGE_CHILDREN would be the largest of every child this process ever
    # waited for (an earlier, bigger case would be reported again). ru_maxrss is in KiB on Linux.
    _, wait_status, usage = os.wait4(process.pid, 0)
    process.returncode = status = os.waitstatus_to_exitcode(wait_status)
    return status, time.monotonic() - start, usage.ru_maxrss * 1024, "peak RSS"


def append_record(path: str | Path, record: CaseRun | UploadSize) -> None:
    kind = "case" if isinstance(record, CaseRun) else "size"
    with open(path, "a") as handle:
        handle.write(json.dumps({"record": kind, **asdict(record)}) + "\n")


def read_records(path: str | Path) -> tuple[list[CaseRun], list[UploadSize]]:
    """The case runs and upload sizes of a records file, in their order."""
    runs, sizes = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            kind = fields.pop("record")
            if kind == "case":
                runs.append(CaseRun(**fields))
            elif kind == "size":
                sizes.append(UploadSize(**fields))
            else:
                raise ValueError(f"unknown record {kind!r}")
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}, line {number}: not a pre-flight record ({error})") from None
    return runs, sizes


def _verdict(value: float, limit: float) -> str:
    if value > limit:
        return "OVER"
    return "tight" if value > TIGHT_FRACTION * limit else "ok"


def report(runs: Sequence[CaseRun], sizes: Sequence[UploadSize]) -> tuple[list[str], int]:
    """The report's lines, task by task, and how many numbers are over their limit or runs failed."""
    lines = ["==> pre-flight report: each number against the platform's limit (docs/reference/platform-interface.md)"]
    problems = 0
    for task in sorted({r.task for r in runs} | {s.task for s in sizes}):
        limit = get_task(task).limit_s
        lines.append(f"Task {task}: {limit:g} s per case, {MEMORY_LIMIT_BYTES / 1024**3:g} GB memory, "
                     f"{UPLOAD_LIMIT_BYTES / 1e9:g} GB per uploaded file")
        for run in (r for r in runs if r.task == task):
            verdicts = [_verdict(run.seconds, limit)]
            text = f"  {run.case:<28} {run.seconds:8.1f} s = {100 * run.seconds / limit:5.1f} % of {limit:g} s"
            if run.peak_memory_bytes is None:
                text += f"   memory not measured ({run.memory_source})"
            else:
                verdicts.append(_verdict(run.peak_memory_bytes, MEMORY_LIMIT_BYTES))
                text += (f"   peak {run.peak_memory_bytes / 1024**3:6.2f} GB = "
                         f"{100 * run.peak_memory_bytes / MEMORY_LIMIT_BYTES:5.1f} % of 16 GB ({run.memory_source})")
            verdict = f"FAILED (exit status {run.status})" if run.status else (
                "OVER" if "OVER" in verdicts else "tight" if "tight" in verdicts else "ok")
            problems += verdict not in ("ok", "tight")
            lines.append(f"{text}   {verdict}")
        for size in (s for s in sizes if s.task == task):
            verdict = _verdict(size.bytes, UPLOAD_LIMIT_BYTES)
            problems += verdict == "OVER"
            lines.append(f"  {size.what:<28} {size.bytes / 1e9:8.2f} GB = {100 * size.bytes / UPLOAD_LIMIT_BYTES:5.1f} "
                         f"% of 10 GB   {size.path}   {verdict}")
    if not runs and not sizes:
        lines.append("  nothing was measured")
    lines.append(f"pre-flight: {problems} problem(s)" if problems else
                 "pre-flight: every case and file within the platform's limits")
    return lines, problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hecktor.preflight", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", usage="%(prog)s RECORDS --task N --case NAME [--engine E --container C] -- "
                              "COMMAND ...", help="run COMMAND (after --), append its case record to RECORDS, exit "
                              "as it does")
    size = commands.add_parser("size", help="append the size of a file to upload (or of an image) to RECORDS")
    for command in (run, size):
        command.add_argument("records", type=Path, help="the JSON-lines records file")
        command.add_argument("--task", type=int, required=True)
    run.add_argument("--case", required=True)
    run.add_argument("--engine", help="the container engine, when COMMAND runs a container")
    run.add_argument("--container", help="the container's --name, whose memory ENGINE stats samples")
    size.add_argument("--what", required=True, help="image archive, model tarball or image")
    size.add_argument("path", help="the file")
    size.add_argument("--bytes", type=int, help="the size when PATH is no file (an image in the engine)")
    reported = commands.add_parser("report", help="print the report of RECORDS; exit status 1 on a problem")
    reported.add_argument("records", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command to run follows "--" (argparse's REMAINDER would swallow run's own options after RECORDS).
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    command = argv[split + 1:]
    if args.command == "run":
        if not command:
            print("error: no command to run (after --)", file=sys.stderr)
            return 2
        status, seconds, peak, source = measure_command(command, engine=args.engine, container=args.container)
        append_record(args.records, CaseRun(args.task, args.case, round(seconds, 3), peak, source, status))
        return status
    if args.command == "size":
        size = args.bytes if args.bytes is not None else Path(args.path).stat().st_size
        append_record(args.records, UploadSize(args.task, args.what, args.path, size))
        return 0
    try:
        lines, problems = report(*read_records(args.records))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
