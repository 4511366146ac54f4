"""The task registry: one table of data that says, per HECKTOR task (the three of 2025, and 2026's one algorithm that
answers everything for a case), where its data, plan, container and outputs live.

Every layer that used to branch on a task number (reading training data, the containers, ``build.sh``,
``test_container.sh``, the demo) looks the task up here instead, so adding a task means one new :class:`TaskSpec`,
its predictor class (wired in :mod:`hecktor.runtime`), its container folder and its tests
(docs/how-to/adding-a-task.md).

This module is a leaf of the library: it holds data only and imports nothing of the library but
:mod:`hecktor.plan` (no torch, no SimpleITK, no predictor). Shell scripts list the tasks with
``PYTHONPATH=shared python3 -m hecktor.tasks --shell`` on a machine that has only Python. Which class predicts a task
and which function writes an output kind are in :mod:`hecktor.runtime`, above the predictors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hecktor.plan import BoxPlan, RegionPlan

__all__ = ["CLINICAL_COLUMNS", "RECORD_KEYS", "RECORD_KEYS_2026", "STAGE_COLUMNS", "TaskSpec", "TASKS", "get_task",
           "task_numbers"]

OUTPUT_KINDS = ("mask", "json-number", "json-boolean", "hecktor2026")

RECORD_KEYS = ("Age", "Gender", "Tobacco Consumption", "Alcohol Consumption", "Performance Status", "Treatment",
               "M-stage")
"""The clinical fields of every task's ``ehr.json`` (Task 2's adds ``CenterID``; Task 3's HPV status is the target,
never an input)."""

CLINICAL_COLUMNS = ("CenterID", *RECORD_KEYS, "HPV Status")
"""The clinical columns of the HECKTOR 2025 training tables (``hecktor.datasets`` reads them; HPV Status is Task 3's
target and in no 2025 ``ehr.json``)."""

RECORD_KEYS_2026 = ("CenterID", *(k for k in RECORD_KEYS if k != "M-stage"), "HPV Status")
"""The keys of HECKTOR 2026's ``ehr.json``: HPV status is an input now, and the organisers' sample has no M-stage."""

STAGE_COLUMNS = ("T-stage", "N-stage")
"""The 2026 training table's stage columns (``T1``..``T4``, ``N0``..``N3``; parsed by :mod:`hecktor.staging`)."""


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task that more than one layer needs.

    Attributes:
        number: the challenge's task number.
        name: a short identifier (``segmentation``), used in file and folder names.
        title: one line for listings and reports.
        training_folder: folder of the distributed training data (``Task 1``).
        training_csv: that folder's clinical table.
        target_columns: columns of the training table that the task learns (empty for segmentation, whose target
            is the label map).
        has_label_maps: training cases carry ``<PID>.nii.gz`` label maps.
        uses_ehr: the container reads ``/input/ehr.json``.
        ehr_keys: the keys of the platform's ``ehr.json`` for this task (tests and the synthetic cohort write them).
        container: the container's folder in the repository (``task1_container``).
        image: the default container image name (without tag).
        output: the output file, relative to ``/output`` (for a kind of several files, the first: 2026's mask).
        output_kind: what the output holds: ``mask`` (UInt8 label map on the CT grid), ``json-number`` or
            ``json-boolean`` (one bare JSON value), or ``hecktor2026`` (the mask, then ``extra_outputs``: the T stage
            and the N stage as one JSON string each, the RFS time in days as one JSON number; all four or none).
        limit_s: Grand Challenge's wall-clock limit per case, start-up and model loading included.
        plan_class: the kind of preprocessing plan the task's models are trained with.
        export_command: how a user makes the container's bundle from a training run.
        value_column: the column holding a ``json-*`` output in tables of predictions (``hecktor-predict``'s
            ``predictions.csv``, ``hecktor-evaluate``'s input); empty: the output file's stem.
        smoke_commands: shell commands, run from the repository root, that train and export a tiny bundle of
            untrained quality on a synthetic cohort, for packaging checks (``scripts/podman_smoke.sh``); ``DATA``
            (the cohort), ``RUN_DIR`` and ``BUNDLE`` stand for paths, ``python`` for the interpreter.
        extra_outputs: the further files of a kind that writes several, relative to ``/output``, in the order its
            writer takes them (:mod:`hecktor.runtime`).
        edition: the challenge's year.
    """

    number: int
    name: str
    title: str
    training_folder: str
    training_csv: str
    target_columns: tuple[str, ...]
    has_label_maps: bool
    uses_ehr: bool
    ehr_keys: tuple[str, ...]
    container: str
    image: str
    output: Path
    output_kind: str
    limit_s: float
    plan_class: type
    export_command: str
    value_column: str = ""
    smoke_commands: tuple[str, ...] = ()
    extra_outputs: tuple[Path, ...] = ()
    edition: int = 2025

    def __post_init__(self) -> None:
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the container writes, relative to ``/output``: :attr:`output`, then :attr:`extra_outputs`."""
        return (self.output, *self.extra_outputs)

    @property
    def label(self) -> str:
        """How messages name the task: ``HECKTOR 2025 Task 1``, or ``HECKTOR 2026`` (one task that year)."""
        edition = f"HECKTOR {self.edition}"
        return edition if self.number == self.edition else f"{edition} Task {self.number}"

    @property
    def bundle_dir(self) -> Path:
        """Where the container expects its exported bundle, relative to the repository root."""
        return Path(self.container) / "resources" / "bundle"


TASKS: dict[int, TaskSpec] = {
    spec.number: spec
    for spec in (
        TaskSpec(
            number=1,
            name="segmentation",
            title="GTVp and GTVn segmentation",
            training_folder="Task 1",
            training_csv="HECKTOR_2025_Training_Task_1.csv",
            target_columns=(),
            has_label_maps=True,
            uses_ehr=False,
            ehr_keys=RECORD_KEYS,
            container="task1_container",
            image="hecktor-task1",
            output=Path("images/tumor-lymph-node-segmentation/output.mha"),
            output_kind="mask",
            limit_s=600.0,
            plan_class=RegionPlan,
            export_command="python training/export_segmentation.py RUN_DIR",
            smoke_commands=(
                "python training/train_segmentation.py --data DATA --out RUN_DIR --config training/configs/tiny.json "
                "--fold 0 --epochs 1 --device cpu --no-progress",
                "python training/export_segmentation.py RUN_DIR --checkpoint last --out BUNDLE",
            ),
        ),
        TaskSpec(
            number=2,
            name="prognosis",
            title="recurrence-free survival risk",
            training_folder="Task 2",
            training_csv="HECKTOR_2025_Training_Task_2.csv",
            target_columns=("RFS", "Relapse"),
            has_label_maps=False,
            uses_ehr=True,
            ehr_keys=("CenterID", *RECORD_KEYS),
            container="task2_container",
            image="hecktor-task2",
            output=Path("rfs.json"),
            output_kind="json-number",
            value_column="risk",
            limit_s=900.0,
            plan_class=BoxPlan,
            export_command="python training/export_prognosis.py RUN_DIR",
            smoke_commands=(
                "python training/train_prognosis.py --mode fusion --data DATA --out RUN_DIR --folds 2 --epochs 1 "
                "--network tiny --device cpu --no-progress",
                "python training/export_prognosis.py RUN_DIR --out BUNDLE",
            ),
        ),
        TaskSpec(
            number=3,
            name="hpv",
            title="HPV status",
            training_folder="Task 3",
            training_csv="HECKTOR_2025_Training_Task_3.csv",
            target_columns=("HPV Status",),
            has_label_maps=False,
            uses_ehr=True,
            ehr_keys=RECORD_KEYS,
            container="task3_container",
            image="hecktor-task3",
            output=Path("hpv-status.json"),
            output_kind="json-boolean",
            value_column="hpv_status",
            limit_s=600.0,
            plan_class=BoxPlan,
            export_command="python training/export_hpv.py RUN_DIR",
            smoke_commands=(
                "python training/train_hpv.py --mode fusion --data DATA --out RUN_DIR --folds 2 --epochs 1 "
                "--network tiny --device cpu --no-progress",
                "python training/export_hpv.py RUN_DIR --out BUNDLE",
            ),
        ),
        TaskSpec(
            number=2026,
            name="hecktor2026",
            title="GTVp and GTVn segmentation, T and N stage, recurrence-free survival time",
            training_folder="Task 2026",
            training_csv="HECKTOR_2026_Training.csv",
            target_columns=(*STAGE_COLUMNS, "RFS", "Relapse"),
            has_label_maps=True,
            uses_ehr=True,
            ehr_keys=RECORD_KEYS_2026,
            container="hecktor2026_container",
            image="hecktor2026",
            output=Path("images/head-neck-tumor-segmentation/output.mha"),
            extra_outputs=(Path("t-stage.json"), Path("n-stage.json"), Path("rfs.json")),
            output_kind="hecktor2026",
            limit_s=1500.0,
            plan_class=BoxPlan,
            export_command="python training/train_hecktor2026.py export RUN_DIR",
            # A Task 1 cross-validation of the same patients first: its out-of-fold masks are what the stagers and the
            # survival folds learn from (the cohort needs its Task 2026 folder: python -m hecktor.synthetic
            # --edition-2026).
            smoke_commands=(
                "python training/train_segmentation.py --data DATA --out RUN_DIR/segmentation --config "
                "training/configs/tiny.json --fold all --epochs 1 --device cpu --no-progress",
                "python training/train_hecktor2026.py train --data DATA --segmentation RUN_DIR/segmentation --out "
                "RUN_DIR/hecktor2026 --folds 2 --device cpu --no-progress",
                "python training/train_hecktor2026.py export RUN_DIR/hecktor2026 --out BUNDLE",
            ),
            edition=2026,
        ),
    )
}
"""Every task, by number: the HECKTOR 2025 tasks 1 to 3, and 2026 (the 2026 edition's one algorithm)."""


def task_numbers() -> list[int]:
    return sorted(TASKS)


def get_task(task: int | str | TaskSpec) -> TaskSpec:
    """The spec of a task given by number (``1``, ``"1"``), name (``"segmentation"``) or spec.

    Raises:
        ValueError: no such task (the message lists the known ones).
    """
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, str) and task.strip().isdigit():
        task = int(task)
    if isinstance(task, int) and not isinstance(task, bool) and task in TASKS:
        return TASKS[task]
    for spec in TASKS.values():
        if spec.name == task:
            return spec
    known = ", ".join(f"{n} ({s.name})" for n, s in sorted(TASKS.items()))
    raise ValueError(f"unknown task {task!r}; known tasks: {known}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hecktor.tasks",
        description="List the HECKTOR tasks this toolkit covers (the registry in hecktor/tasks.py).")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--shell", action="store_true",
                      help="one tab-separated line per task for scripts: number, container folder, image, output "
                           "path, output kind, time limit (s), export command")
    form.add_argument("--numbers", action="store_true", help="the task numbers, one per line")
    form.add_argument("--smoke", type=int, metavar="N",
                      help="task N's smoke_commands, one per line (a tiny bundle for packaging checks)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    specs = [TASKS[n] for n in task_numbers()]
    if args.numbers:
        print("\n".join(str(s.number) for s in specs))
    elif args.smoke is not None:
        if args.smoke not in TASKS:
            print(f"error: no task {args.smoke}; tasks: {', '.join(str(s.number) for s in specs)}", file=sys.stderr)
            return 2
        print("\n".join(TASKS[args.smoke].smoke_commands))
    elif args.shell:
        for s in specs:
            print("\t".join([str(s.number), s.container, s.image, str(s.output), s.output_kind, f"{s.limit_s:g}",
                             s.export_command]))
    else:
        for s in specs:
            print(f"Task {s.number} ({s.name}, {s.label}): {s.title}\n"
                  f"  training data  {s.training_folder}/ + {s.training_csv}\n"
                  f"  container      {s.container}/ -> {', '.join(f'/output/{o}' for o in s.outputs)} "
                  f"({s.output_kind}), "
                  f"limit {s.limit_s:g} s per case\n"
                  f"  plan           {s.plan_class.__name__}; bundle from: {s.export_command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
