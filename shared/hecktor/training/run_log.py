"""Per-epoch metrics of a training run: appended to CSV and JSON and plotted to PNG after every epoch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from hecktor.outputs import atomic_path, write_text_atomic  # noqa: E402


class RunLog:
    """Collects one row of metrics per epoch and keeps ``metrics.csv``, ``metrics.json`` and ``metrics.png`` in
    ``out_dir`` up to date, so a crashed or interrupted run still leaves its history behind.

    Args:
        out_dir: where the three files are written.
        name: file stem (default ``metrics``).
    """

    def __init__(self, out_dir: str | Path, name: str = "metrics") -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.rows: list[dict[str, Any]] = []
        json_path = self.out_dir / f"{name}.json"
        if json_path.is_file():  # resuming: keep the history written so far
            self.rows = json.loads(json_path.read_text())

    def log(self, row: Mapping[str, Any]) -> None:
        """Add one epoch's metrics (must include ``epoch``) and rewrite the files."""
        if "epoch" not in row:
            raise ValueError("a metrics row needs an 'epoch' entry")
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [dict(row)]
        self._write()

    def _write(self) -> None:
        # Atomic writes: a run killed while logging keeps the previous files, which a resumed run reads back.
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        with atomic_path(self.out_dir / f"{self.name}.csv") as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        write_text_atomic(json.dumps(self.rows, indent=2), self.out_dir / f"{self.name}.json")
        self._plot(columns)

    def _plot(self, columns: list[str]) -> None:
        numeric = [c for c in columns if c != "epoch" and all(
            isinstance(r.get(c), (int, float)) and math.isfinite(r[c]) for r in self.rows if c in r)]
        if not numeric:
            return
        figure, axes = plt.subplots(len(numeric), 1, figsize=(6, 2.2 * len(numeric)), sharex=True, squeeze=False)
        for axis, column in zip(axes[:, 0], numeric):
            points = [(r["epoch"], r[column]) for r in self.rows if column in r]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
            axis.set_ylabel(column, fontsize=8)
            axis.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("epoch")
        figure.tight_layout()
        with atomic_path(self.out_dir / f"{self.name}.png") as tmp:
            figure.savefig(tmp, dpi=80)
        plt.close(figure)
