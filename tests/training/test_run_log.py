"""Training metrics logging."""

import csv
import json

from hecktor.training.run_log import RunLog


def test_rows_written_resumed_and_plotted(tmp_path):
    log = RunLog(tmp_path)
    log.log({"epoch": 0, "loss": 1.0, "dice_gtvp": 0.1})
    log.log({"epoch": 1, "loss": 0.5, "dice_gtvp": float("nan")})
    resumed = RunLog(tmp_path)
    resumed.log({"epoch": 1, "loss": 0.4, "dice_gtvp": 0.3})  # an epoch logged again replaces the old row
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["loss"] for r in rows] == [1.0, 0.4]
    with (tmp_path / "metrics.csv").open() as handle:
        assert [r["dice_gtvp"] for r in csv.DictReader(handle)] == ["0.1", "0.3"]
    assert (tmp_path / "metrics.png").stat().st_size > 1000
