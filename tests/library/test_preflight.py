"""hecktor.preflight: the report a participant reads before uploading, on fabricated run records, and the measuring
of one run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hecktor.preflight import CaseRun, UploadSize, append_record, main, parse_memory, \
    read_records, report
from hecktor.tasks import get_task

GIB = 1024**3


def test_report_sets_each_number_against_its_limit(tmp_path, capsys):
    limit1, limit2 = get_task(1).limit_s, get_task(2).limit_s  # 600 s and 900 s
    records = tmp_path / "preflight.jsonl"
    for record in (CaseRun(1, "case-000-identity", 60.0, 3 * GIB, "peak RSS", 0),
                   CaseRun(1, "case-001-flip", 0.85 * limit1, 2 * GIB, "peak RSS", 0),
                   CaseRun(2, "case-000-identity", 45.5, None, "sampled with docker stats", 0),
                   UploadSize(1, "image archive", "out/hecktor-task1.tar.gz", 3_210_000_000),
                   UploadSize(1, "model tarball", "out/hecktor-task1-model.tar.gz", 110_000_000)):
        append_record(records, record)
    runs, sizes = read_records(records)
    assert [r.case for r in runs] == ["case-000-identity", "case-001-flip", "case-000-identity"]
    lines, problems = report(runs, sizes)
    assert problems == 0
    assert lines[1:] == [
        "Task 1: 600 s per case, 16 GB memory, 10 GB per uploaded file",
        "  case-000-identity                60.0 s =  10.0 % of 600 s   peak   3.00 GB =  18.8 % of 16 GB (peak RSS)   ok",
        "  case-001-flip                   510.0 s =  85.0 % of 600 s   peak   2.00 GB =  12.5 % of 16 GB (peak RSS)   "
        "tight",
        "  image archive                    3.21 GB =  32.1 % of 10 GB   out/hecktor-task1.tar.gz   ok",
        "  model tarball                    0.11 GB =   1.1 % of 10 GB   out/hecktor-task1-model.tar.gz   ok",
        "Task 2: 900 s per case, 16 GB memory, 10 GB per uploaded file",
        "  case-000-identity                45.5 s =   5.1 % of 900 s   memory not measured (sampled with docker "
        "stats)   ok",
        "pre-flight: every case and file within the platform's limits",
    ]
    assert limit2 == 900
    assert main(["report", str(records)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "pre-flight: every case and file within the platform's limits"


def test_report_counts_what_is_over_a_limit_or_failed(tmp_path, capsys):
    runs = [CaseRun(3, "slow", 601.0, GIB, "peak RSS", 0),
            CaseRun(3, "greedy", 10.0, 17 * GIB, "peak RSS", 0),
            CaseRun(3, "broken", 3.0, GIB, "peak RSS", 2)]
    sizes = [UploadSize(3, "image archive", "hecktor-task3.tar.gz", 10_000_000_001)]
    lines, problems = report(runs, sizes)
    assert problems == 4
    assert [line.split()[-1] for line in lines[2:6]] == ["OVER", "OVER", "2)", "OVER"]
    assert lines[4].endswith("FAILED (exit status 2)")
    assert lines[-1] == "pre-flight: 4 problem(s)"
    records = tmp_path / "r.jsonl"
    for record in (*runs, *sizes):
        append_record(records, record)
    assert main(["report", str(records)]) == 1
    (tmp_path / "bad.jsonl").write_text('{"record": "case", "task": 1}\n')
    assert main(["report", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl, line 1: not a pre-flight record" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [
    ("1.5GiB / 16GiB", int(1.5 * GIB)), ("812.3MiB / 15.6GiB", int(812.3 * 1024**2)), ("24.6MB / 16GB", 24_600_000),
    ("512KiB / 1GiB", 512 * 1024), ("0B / 0B", 0), ("--", None), ("", None),
])
def test_parse_memory_reads_an_engines_stats_column(text, expected):
    assert parse_memory(text) == expected


def test_measure_command_records_the_childs_time_status_and_peak_memory(tmp_path):
    # A child holds 700 MB, the next 300 MB: each peak is its own (at least what it held, well below twice it), not
    # the largest of every child the measuring process waited for. Measured from a small process, as
    # `python -m hecktor.preflight run` is: Linux counts the exec'ing process's own peak in the child's (this pytest
    # process holds a gigabyte in the full suite).
    hold = "import sys, time; b = bytearray({}); time.sleep(0.05); sys.exit(3)"
    measure = ("import json, sys; from hecktor.preflight import measure_command; "
               f"hold = {hold!r}; print(json.dumps([measure_command([sys.executable, '-c', hold.format(n)]) "
               "for n in (700_000_000, 300_000_000)]))")
    big, small = json.loads(subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True,
                                           check=True).stdout)
    status, seconds, peak, source = small
    assert status == 3 and source == "peak RSS" and 0.05 <= seconds < 30
    assert 700_000_000 <= big[2] < 1_400_000_000 and 300_000_000 <= peak < 600_000_000
    records = tmp_path / "r.jsonl"
    assert main(["run", str(records), "--task", "2", "--case", "c1", "--", sys.executable, "-c", "pass"]) == 0
    (run,), sizes = read_records(records)
    assert (run.task, run.case, run.status, sizes) == (2, "c1", 0, [])
    tarball = tmp_path / "model.tar.gz"
    tarball.write_bytes(b"x" * 1234)
    assert main(["size", str(records), "--task", "2", "--what", "model tarball", str(tarball)]) == 0
    assert main(["size", str(records), "--task", "2", "--what", "image", "hecktor-task2:latest", "--bytes", "9"]) == 0
    assert read_records(records)[1] == [UploadSize(2, "model tarball", str(tarball), 1234),
                                        UploadSize(2, "image", "hecktor-task2:latest", 9)]
