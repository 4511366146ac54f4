"""The one-command demo (``make demo``): synthetic cohort -> the models of Tasks 1-3 and HECKTOR 2026 trained -> the
containers' bundles -> every ``inference.py`` on held-out cases laid out as Grand-Challenge input folders -> scores -> report.

Everything is CPU-sized so that it runs within a quarter of an hour on two cores, set-up included (see
docs/results/benchmarks.md for the last run's time and what was cut to fit); the numbers show that the
pipeline works end to end, not what the method scores (see the report's notes). Example::

    python training/demo.py                      # -> demo_output/report.md
    python training/demo.py --out /tmp/demo --train-cases 24 --held-out 6 --epochs 4

The tasks come from the registry (:mod:`hecktor.tasks`); each has a training stage here (:data:`TRAINERS`, by the
task's name) and a scoring rule (:data:`SCORERS`). Stages (each a function, so they can be run alone from Python):

1. :func:`make_cohorts`: ``--train-cases`` synthetic training cases in the HECKTOR layout (96 by default: with 48, a
   Task 2 model reached a C-index of 0.75 on only 60 % of 36-patient held-out sets, ``bench_held_out_noise.py``), and
   ``--held-out`` other patients (another seed) as Grand-Challenge input folders for each task, with their labels,
   survival and HPV status; ``--held-out-extra`` more of them (``held_out_extra/``) for the in-process scoring of
   stage 6.
2. :func:`train_segmentation` (Task 1): the small HecMamba of ``training/configs/demo.json`` with a 16-channel
   full-resolution decoder (1.5 M parameters; the recipe's 32 nearly doubles the time per iteration; 32^3 patches at
   4 mm, Dice + CE with deep supervision), both folds of a 2-fold split trained side by side (one process and one
   thread each, channels-last on the CPU, one progress line per fold at its end), for ``--epochs`` epochs of 25
   iterations (16 by default: 400 iterations, two fifths of demo.json's 40, to fit the time; the demo of 2026-12-07
   trained 600 in 21 minutes); each fold then segments its validation patients (so every training patient has an
   out-of-fold mask, which Tasks 2, 3 and 2026 need; no separate validation pass, :func:`segmentation_config`), the
   postprocessing is chosen on those masks, which give the Task 1 scores of training, and the bundle is exported to
   ``task1_container/resources/bundle``.
3. :func:`train_prognosis` (Task 2): ``biomarkers`` mode (the default of ``train_prognosis.py``): a Cox model on the
   record and the PET biomarkers of Task 1's out-of-fold masks, 5 folds; exported, with the Task 1 model nested, to
   ``task2_container/resources/bundle``.
4. :func:`train_hpv` (Task 3): ``biomarkers`` mode (the default of ``train_hpv.py`` with a Task 1 run): a logistic
   regression on the record and the PET biomarkers of Task 1's out-of-fold masks, 5 folds; exported, with the Task 1
   model nested, to ``task3_container/resources/bundle``. :func:`train_hecktor2026` (HECKTOR 2026): the same
   out-of-fold masks and the cohort's ``Task 2026`` table (HPV status in the record, T and N stage): per fold a Cox
   model with its baseline survival (the RFS time) and the T and N stagers, 5 folds; exported, with the Task 1 model
   nested, to ``hecktor2026_container/resources/bundle``.
5. :func:`run_containers`: every task's ``inference.py`` once per held-out case, each a fresh process on the CPU as
   the container would run it (two at a time, one thread each); wall time, CPU time and peak memory of each.
6. :func:`predict_in_process`: the ``--held-out-extra`` patients through the same ``predict_case`` as the Task 2, 3
   and 2026 containers, in ``--jobs`` processes, each case segmented once (:func:`shared_segmentation`) for all three:
   a C-index and a balanced accuracy on a dozen patients move by several points with one patient, so these are
   scored with the container runs and reported apart too. A container run costs about ten times an in-process
   patient (a fresh interpreter, and a segmentation per container), so the default is 2 container cases and 34
   in-process ones: 36 patients within the demo's time.
7. :func:`score` (the rules of :mod:`demo_scores`): Dice, HD95, surface Dice, DSCagg, F1agg (``hecktor.metrics``) of
   the Task 1 container's masks and, apart, of the in-process shared segmentations; the held-out C-index and the HPV
   balanced accuracy, each beside its oracle (the synthetic cohort's true hazard and P(HPV+)) and, with the 2026
   scores, its bootstrap 95 % interval over the held-out patients.
8. :func:`demo_report.write_report`: ``report.md`` with overlays and a Kaplan-Meier plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import SimpleITK as sitk

from hecktor.datasets import write_gc_input
from hecktor.errors import InputError
from hecktor.plan import BoxPlan
from hecktor.synthetic import generate_cohort, make_case
from hecktor.tasks import TaskSpec, get_task, task_numbers
from hecktor.training import cli

# A sibling module: the script's folder is first on sys.path.
from demo_scores import in_process_mask, score_hecktor2026, score_hpv, score_prognosis, score_segmentation

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"
HELD_OUT_SEED_OFFSET = 1000  # held-out patients come from another seed: no patient is shared with training
BOX_PLAN = BoxPlan(input_shape_zyx=(48, 48, 48))
"""Tasks 2 and 3's CPU-sized input (the default: 96^3)."""
SEG_FOLDS = 2
"""Task 1's split: two folds, both trained, so that every training patient has an out-of-fold mask (Task 2's
biomarkers are computed on those, as on test patients)."""


def bundle_dir(task: int | str | TaskSpec) -> Path:
    """Where the task's container expects its bundle (the registry's ``bundle_dir``, in this repository)."""
    return REPO / get_task(task).bundle_dir


def tasks() -> list[TaskSpec]:
    """The registered tasks, each with its demo trainer and scorer (a registered task without them is an error, so
    that a new task cannot silently drop out of the demo)."""
    specs = [get_task(n) for n in task_numbers()]
    missing = [s.name for s in specs if s.name not in TRAINERS or s.name not in SCORERS]
    if missing:
        raise InputError(f"the demo has no training or scoring stage for task(s) {', '.join(missing)}: add them to "
                         "TRAINERS and SCORERS in training/demo.py")
    return specs


class Stopwatch:
    """Wall and CPU seconds (this process and its children) of each named stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.started = time.perf_counter()

    @staticmethod
    def _cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def run(self, name: str, function, *args, **kwargs):
        wall, cpu = time.perf_counter(), self._cpu()
        print(f"[demo] {name} ...", flush=True)
        result = function(*args, **kwargs)
        self.stages[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": self._cpu() - cpu}
        print(f"[demo] {name}: {self.stages[name]['wall_s']:.0f} s wall, {self.stages[name]['cpu_s']:.0f} s CPU",
              flush=True)
        return result

    def total(self) -> dict[str, float]:
        return {"wall_s": time.perf_counter() - self.started, "cpu_s": self._cpu()}


# --------------------------------------------------------------------------------------------------------- data


def write_held_out(folder: Path, indices: Sequence[int], seed: int) -> list[dict[str, Any]]:
    """Held-out patients ``indices`` of the held-out seed as Grand-Challenge input folders per task
    (``FOLDER/task<n>/<PID>``), their labels (``FOLDER/labels``) and ``FOLDER/survival.csv``; returns their records."""
    cases = []
    for index in indices:
        case = make_case(seed + HELD_OUT_SEED_OFFSET, "small", case_index=index)
        pid = f"HELDOUT-{index:03d}"
        for spec in tasks():
            write_gc_input(case.ct, case.pet, folder / f"task{spec.number}" / pid,
                           case.ehr(task=spec.number) if spec.uses_ehr else None, seed=index)
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(case.label, str(folder / "labels" / f"{pid}.nii.gz"), True)
        cases.append({"patient_id": pid, "rfs_days": case.rfs_days, "relapse": case.relapse,
                      "true_log_hazard": case.true_log_hazard, "ct_orientation": case.ct_orientation,
                      "n_nodes": int(case.features["n_nodes"]), "hpv_status": case.clinical["HPV Status"],
                      "hpv_probability": case.hpv_probability, "t_stage": case.t_stage, "n_stage": case.n_stage})
    if cases:
        with (folder / "survival.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(cases[0]))
            writer.writeheader()
            writer.writerows(cases)
    return cases


def make_cohorts(out: Path, train_cases: int, held_out: int, seed: int, extra: int = 0) -> dict[str, Any]:
    """The training cohort (HECKTOR layout), the held-out cases the containers run (``held_out/``: input folders per
    task, labels, survival) and ``extra`` more held-out patients scored in-process (``held_out_extra/``)."""
    summary = generate_cohort(out / "data", cases=train_cases, seed=seed, size="small", overwrite=True,
                              edition_2026=True)  # Task 2026/ too: the same patients with their T and N stage
    cases = write_held_out(out / "held_out", range(held_out), seed)
    more = write_held_out(out / "held_out_extra", range(held_out, held_out + extra), seed)
    return {"train_cases": train_cases, "train_event_fraction": summary.event_fraction,
            "train_oracle_cindex": summary.oracle_c_index, "held_out": cases, "held_out_extra": more}


# ----------------------------------------------------------------------------------------------------- training


SEG_FULL_RESOLUTION_WIDTH = 16
"""Channels of the demo HecMamba's full-resolution decoder: demo.json's recipe has 32, which nearly doubles the
seconds per iteration on the CPU (docs/results/recipe-log.md); 16, the former recipe, still finds the nodes and keeps the demo in
its time."""
SEG_VAL_OVERLAP = 0.25
"""Sliding-window overlap of the validations and out-of-fold predictions (the containers keep 0.5): half the
windows, to fit the demo's time."""


def segmentation_config(data: Path, run_dir: Path, epochs: int) -> dict[str, Any]:
    """``training/configs/demo.json`` (plan, network, loss, learning rate, iterations per epoch), with a
    :data:`SEG_FULL_RESOLUTION_WIDTH`-channel full-resolution decoder, ``epochs`` epochs, both folds of a
    :data:`SEG_FOLDS`-fold split, no validation pass (``val_every`` 0: the out-of-fold predictions made after each
    fold segment the same patients and score it, so the last epoch is the fold's model; a validation pass of the
    fold's 48 patients cost 70 s of the demo's 15 minutes), on the CPU without loader workers."""
    from hecktor.training.segmentation import load_config_file

    config = load_config_file(CONFIGS / "demo.json")
    config["network_config"] = {**config["network_config"], "full_resolution_width": SEG_FULL_RESOLUTION_WIDTH}
    config.update({"data_root": str(data), "run_dir": str(run_dir), "cache_dir": str(run_dir.parent / "cache"),
                   "n_folds": SEG_FOLDS, "folds": list(range(SEG_FOLDS)), "epochs": epochs,
                   "val_every": 0, "val_overlap": SEG_VAL_OVERLAP,
                   "workers": 0, "device": "cpu", "progress": False, "log_validation": True,
                   "predict_validation": True})
    return config


def _train_fold(config: dict[str, Any], fold: int) -> dict[str, Any]:
    """One fold in a process of its own, on one thread (runs in a spawned child: the parent prepared the run)."""
    import torch
    from hecktor.folds import load_folds
    from hecktor.training.segmentation import FOLDS_JSON, SegmentationTrainer, TrainingConfig

    torch.set_num_threads(1)
    started = time.perf_counter()
    trainer = SegmentationTrainer(TrainingConfig.from_dict({**config, "folds": [fold]}))
    try:
        # The split, the cache and the run record were written by the parent's prepare(); writing them again from two
        # processes at once would race.
        trainer.folds = load_folds(Path(config["run_dir"]) / FOLDS_JSON, case_ids=trainer.patient_ids)
        summary = trainer.train_fold(fold)
    finally:
        trainer.close()
    predict_s = summary.get("predict_validation_s", 0.0)
    print(f"[demo]   fold {fold}: {config['epochs'] * config['iterations_per_epoch']} iterations in "
          f"{time.perf_counter() - started - predict_s:.0f} s (last epoch's loss {summary['epoch_losses'][-1]:.3f}), "
          f"{summary['val_cases']} out-of-fold masks in {predict_s:.0f} s", flush=True)
    return summary


def train_segmentation(data: Path, runs: Path, options: argparse.Namespace,
                       trained: dict[str, Any] | None = None) -> dict[str, Any]:
    """Task 1: both folds trained side by side (one process and one thread each: two cores; each prints one line when
    it is done), each segmenting its validation patients at the end; the postprocessing chosen on those out-of-fold
    masks (whose scores the demo reports); then exported."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hecktor.segment import Segmenter
    from hecktor.training.segmentation import (SegmentationTrainer, TrainingConfig, choose_run_postprocessing,
                                               export_bundle)

    run_dir, epochs = runs / get_task(1).name, options.epochs
    config = segmentation_config(data, run_dir, epochs)
    trainer = SegmentationTrainer(TrainingConfig.from_dict(config))
    try:
        trainer.prepare()  # run record, preprocessing cache and split, once
    finally:
        trainer.close()
    print(f"[demo]   {len(config['folds'])} folds side by side, {epochs * config['iterations_per_epoch']} iterations "
          "each (about a second per iteration on one core), then each segments its validation patients (their "
          "out-of-fold masks); one line per fold when it is done", flush=True)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_train_fold, [config] * len(config["folds"]), config["folds"]))  # each prints its summary line
    # Both folds predicted their validation cases: the postprocessing is chosen on those out-of-fold predictions.
    choice = choose_run_postprocessing(run_dir)
    oof = out_of_fold_scores(choice["report"])
    print(f"[demo]   postprocessing chosen on {oof['n_cases']} out-of-fold cases: {choice['postprocessing']}; "
          f"out-of-fold GTVp Dice {oof['dice_GTVp']:.3f}, GTVn DSCagg {oof['dsc_agg_GTVn']:.3f}", flush=True)
    bundle, folds = export_bundle(run_dir, bundle_dir(1), checkpoint="best", overwrite=True)
    parameters = sum(p.numel() for p in Segmenter.from_bundle(bundle, device="cpu").networks[0].parameters())
    return {"run_dir": str(run_dir), "folds": folds, "n_folds": SEG_FOLDS, "parameters": parameters, "network": config["network"], "network_config": trainer.network_config,
            "plan": trainer.config.plan.to_dict(), "epochs": epochs,
            "iterations_per_epoch": config["iterations_per_epoch"], "batch_size": config["batch_size"],
            "loss": config.get("loss"), "deep_supervision": trainer.network_config.get("deep_supervision"),
            "postprocessing": choice["postprocessing"], "out_of_fold": oof}


def out_of_fold_scores(report: dict[str, Any]) -> dict[str, Any]:
    """Task 1's out-of-fold scores after the chosen postprocessing, from
    :func:`~hecktor.training.segmentation.choose_run_postprocessing`'s report: GTVp mean Dice, GTVn DSCagg and F1agg,
    and the number of patients."""
    gtvp, gtvn = report["GTVp"], report["GTVn"]
    chosen = next((c for c in gtvn["candidates"] if c["min_volume_ml"] == gtvn["chosen_min_volume_ml"]), gtvn["raw"])
    return {"n_cases": report["n_cases"],
            "dice_GTVp": gtvp["largest_component"] if gtvp["chosen"] else gtvp["raw"],
            "dsc_agg_GTVn": chosen["dsc_agg"], "f1_agg_GTVn": chosen["f1_agg"]}


def train_prognosis(data: Path, runs: Path, options: argparse.Namespace, trained: dict[str, Any]) -> dict[str, Any]:
    """Task 2 in ``biomarkers`` mode: the record and the PET biomarkers of Task 1's out-of-fold masks, 5 folds; the
    bundle nests Task 1's (the container segments, then measures the biomarkers)."""
    from hecktor.training.prognosis import export_bundle, train
    from hecktor.training.prognosis_config import TrainingConfig

    run_dir = runs / get_task(2).name
    config = TrainingConfig(mode="biomarkers", n_folds=5, seed=0, device="cpu", progress=False)
    result = train(config, run_dir, data=data, plan=BOX_PLAN, cache_dir=runs / "cache", overwrite=True,
                   segmentation=trained[get_task(1).name]["run_dir"], echo=lambda line: print(f"[demo]   {line}"))
    export_bundle(run_dir, bundle_dir(2), overwrite=True)
    metrics = result.metrics()
    return {"mode": config.mode, "survival": config.survival, "cindex_oof_mean": metrics["cindex_mean"],
            "cindex_oof_pooled": metrics["cindex_pooled_oof"], "ensemble_weights": metrics["ensemble_weights"],
            "n_folds": config.n_folds, "clinical_features": list(config.clinical_features),
            "biomarkers": list(config.biomarkers or []) or "all"}


def train_hpv(data: Path, runs: Path, options: argparse.Namespace, trained: dict[str, Any]) -> dict[str, Any]:
    """Task 3 in ``biomarkers`` mode: a logistic regression on the record and the PET biomarkers of Task 1's
    out-of-fold masks (Task 2's), 5 folds; the bundle nests Task 1's (the container segments first)."""
    from hecktor.training.hpv import HPVTrainingConfig, export_hpv_bundle, train_hpv as train

    run_dir = runs / get_task(3).name
    config = HPVTrainingConfig(mode="biomarkers", n_folds=5, seed=0, device="cpu", progress=False)
    result = train(config, run_dir, data=data, plan=BOX_PLAN, cache_dir=runs / "cache", overwrite=True,
                   segmentation=trained[get_task(1).name]["run_dir"], echo=lambda line: print(f"[demo]   {line}"))
    export_hpv_bundle(run_dir, bundle_dir(3), overwrite=True)
    metrics = result.metrics()
    return {"mode": config.mode, "n_folds": config.n_folds, "prevalence": metrics["prevalence"],
            "balanced_accuracy_oof_mean": metrics["balanced_accuracy_mean"], "auc_oof_mean": metrics["auc_mean"],
            "threshold": metrics["threshold"], "threshold_fallback": metrics["threshold_fallback"],
            "biomarkers": list(config.biomarkers or []) or "all"}


def train_hecktor2026(data: Path, runs: Path, options: argparse.Namespace, trained: dict[str, Any]) -> dict[str, Any]:
    """HECKTOR 2026: Task 1's out-of-fold masks measured (PET biomarkers, the primary's diameter, the nodes and their
    side), per fold a Cox model of the record (HPV status in it) and the biomarkers with its baseline survival, and the
    T and N stagers, 5 folds; the bundle stages by the rules, the fitted cut-offs or the learned stager as
    cross-validation preferred, and nests Task 1's (the container segments first)."""
    from hecktor.training.hecktor2026 import Hecktor2026Config, export_bundle, train

    run_dir = runs / get_task(2026).name
    config = Hecktor2026Config(n_folds=5, seed=0, device="cpu", progress=False)
    _, metrics = train(config, run_dir, data=data, segmentation=trained[get_task(1).name]["run_dir"], overwrite=True,
                       echo=lambda line: print(f"[demo]   {line}"))
    export_bundle(run_dir, bundle_dir(2026), overwrite=True)
    staging = metrics["staging"]
    return {"n_folds": config.n_folds, "stagers": metrics["stagers"],
            "cindex_oof_risk": metrics["cindex_pooled_oof_risk"],
            "cindex_oof_rfs_time": metrics["cindex_pooled_oof_rfs_time"],
            **{f"{stage}_balanced_accuracy_oof_{name}": staging[key]["balanced_accuracy"]
               for stage in ("t", "n") for name, key in (("rules", f"{stage}_rules_predicted_mask"),
                                                         ("fitted", f"{stage}_fitted"),
                                                         ("learned", f"{stage}_learned"))},
            "staging_cutoffs": metrics["staging_cutoffs"]}


TRAINERS = {"segmentation": train_segmentation, "prognosis": train_prognosis, "hpv": train_hpv,
            "hecktor2026": train_hecktor2026}
"""The demo's training stage of each task, by registry name, in registry order (Tasks 2, 3 and 2026 use Task 1's
run)."""


# --------------------------------------------------------------------------------------------------- inference


# A child's ru_maxrss starts from its parent's resident size at fork (Linux carries the high-water mark across exec),
# so a container launched straight from this process, which holds the training data, would seem to need at least as
# much memory. A small launcher process in between runs the command and reports the command's own usage.
_LAUNCHER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
status = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as handle:
    json.dump({"status": status, "wall_s": time.perf_counter() - started,
               "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0}, handle)
"""


def measure(command: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command`` (output to ``log_path``) through the launcher: its exit status, wall time, CPU time and peak
    resident memory, its own and its children's."""
    usage_path = log_path.with_suffix(".usage.json")
    with log_path.open("w") as log:
        subprocess.run([sys.executable, "-c", _LAUNCHER, str(usage_path), *command], stdout=log,
                       stderr=subprocess.STDOUT, check=True, env=env)
    return {**json.loads(usage_path.read_text()), "log": str(log_path)}


def run_inference(task: int, input_dir: Path, output_dir: Path, log_path: Path) -> dict[str, Any]:
    """One ``inference.py`` run as a subprocess on the CPU, on one thread (see :func:`measure`)."""
    command = [sys.executable, str(REPO / get_task(task).container / "inference.py"), "--input", str(input_dir),
               "--output", str(output_dir), "--device", "cpu"]
    # One thread: with two, torch's thread pool spends most of its time waiting whenever anything else runs on the
    # machine (measured here: 4.2 s instead of 1.5 s per sliding-window pass). The container itself keeps torch's
    # default, which is what a GPU run uses.
    return measure(command, log_path, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_containers(out: Path, patient_ids: Sequence[str], jobs: int = 2) -> dict[int, dict[str, dict[str, Any]]]:
    """Every task's ``inference.py`` once per held-out case, ``jobs`` processes at a time (one thread each)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(task: int, pid: str) -> dict[str, Any]:
        output_dir = out / "outputs" / f"task{task}" / pid
        shutil.rmtree(output_dir, ignore_errors=True)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        record = run_inference(task, out / "held_out" / f"task{task}" / pid, output_dir,
                               out / "outputs" / f"task{task}" / f"{pid}.log")
        print(f"[demo]   task {task} {pid}: {record['wall_s']:.1f} s, {record['peak_rss_mb']:.0f} MB", flush=True)
        return record

    runs: dict[int, dict[str, dict[str, Any]]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on the subprocesses
        for spec in tasks():
            records = list(pool.map(lambda pid: one(spec.number, pid), patient_ids))
            runs[spec.number] = dict(zip(patient_ids, records))
    failed = [(task, pid, r) for task, records in runs.items() for pid, r in records.items() if r["status"] != 0]
    if failed:
        task, pid, record = failed[0]
        raise InputError(f"task {task} inference.py failed on {pid} (exit {record['status']}); see {record['log']}")
    return runs


IN_PROCESS_TASKS = (2, 3, 2026)
"""The tasks whose ``predict_case`` answers the ``--held-out-extra`` patients in-process (their C-index and balanced
accuracies need more patients than the container runs). Task 1 is scored on those patients through the shared
segmentation (its nested model without TTA); the 2026 Dice on the container runs only."""


def load_predictors(task_numbers: Sequence[int], device: str = "cpu") -> dict[int, Any]:
    """Each task's predictor from its container's bundle, as ``inference.py`` loads it (:mod:`hecktor.runtime`)."""
    from hecktor.runtime import predictor_class

    return {task: predictor_class(task).from_bundle(bundle_dir(task), device=device) for task in task_numbers}


def shared_segmentation(case: Any, predictors: Sequence[Any]) -> sitk.Image | None:
    """The one Task 1 segmentation of a held-out case (a :class:`hecktor.case.CaseInput`) that the biomarker-mode
    predictors among ``predictors`` share, made by their nested Task 1 model as each would make it (its TTA setting,
    no budget); ``None`` when none of them segments. Their nested Task 1 bundles must be the same (the demo nests the
    one Task 1 run in Tasks 2, 3 and 2026), else this is an :class:`InputError`: the answers would not be theirs."""
    segmenting = [p for p in predictors if p.uses_biomarkers]
    if not segmenting:
        return None
    manifests = {(p.segmentation_bundle / "manifest.json").read_bytes() for p in segmenting}
    if len(manifests) > 1:
        raise InputError("the biomarker-mode bundles nest different Task 1 bundles: one segmentation cannot serve "
                         "them all")
    if case.ct is None or case.pet is None or case.placeholder:
        return None  # each predictor then answers as without a segmentation (no-tumour biomarkers)
    first = segmenting[0]
    return first.segmenter.predict(case.ct, case.pet, tta=first.segmentation_settings.tta)


def predict_in_process(out: Path, cases: list[dict[str, Any]], task_numbers: Sequence[int] = IN_PROCESS_TASKS,
                       folder: str = "held_out_extra", jobs: int = 1) -> dict[str, Any]:
    """The held-out ``cases`` (``OUT/<folder>/task<n>/<PID>``) through each task's ``predict_case``, as its container
    calls it (:func:`hecktor.case.read_case`), with one :func:`shared_segmentation` per case for the tasks that
    segment; ``jobs`` processes of one thread (each loads the bundles once and takes every ``jobs``-th case). Fills
    each case's ``risk`` (Task 2), ``hpv_predicted`` / ``hpv_probability_predicted`` (Task 3) and
    ``t_stage_predicted`` / ``n_stage_predicted`` / ``rfs_days_predicted`` (2026) and returns the seconds spent."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = max(1, min(jobs, len(cases)))
    if jobs == 1:
        parts = [_predict_cases(out, cases, tuple(task_numbers), folder)]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_predict_cases, [out] * jobs, [cases[j::jobs] for j in range(jobs)],
                                  [tuple(task_numbers)] * jobs, [folder] * jobs))
    answers = {pid: values for part in parts for pid, values in part["answers"].items()}
    for case in cases:
        case.update(answers[case["patient_id"]])
    segment_s, predict_s = (sum(part[key] for part in parts) for key in ("segmentation_s", "predict_s"))
    print(f"[demo]   {len(cases)} extra held-out case(s) in-process, {jobs} process(es): segmentation "
          f"{segment_s:.0f} s (once per case, shared), Tasks {', '.join(map(str, task_numbers))} {predict_s:.0f} s "
          "(seconds summed over the processes)", flush=True)
    return {"n": len(cases), "jobs": jobs, "segmentation_s": segment_s, "predict_s": predict_s}


def _predict_cases(out: Path, cases: list[dict[str, Any]], task_numbers: tuple[int, ...],
                   folder: str) -> dict[str, Any]:
    """:func:`predict_in_process`'s work in one process: the answers by patient ID and the seconds spent."""
    import torch

    from hecktor.case import read_case

    # One thread per process (run_demo): two threads in one process took 18.5 s per case against 7.4 s with one
    # (6 cases, 2026-12-07), as the containers' runs found.
    torch.set_num_threads(1)
    predictors = load_predictors(task_numbers)
    segment_s = predict_s = 0.0
    answers: dict[str, dict[str, Any]] = {}
    for case in cases:
        pid = case["patient_id"]
        inputs = {task: read_case(out / folder / f"task{task}" / pid, with_ehr=get_task(task).uses_ehr)
                  for task in task_numbers}
        started = time.perf_counter()
        mask = shared_segmentation(inputs[task_numbers[0]], list(predictors.values()))
        segment_s += time.perf_counter() - started
        if mask is not None:  # scored as Task 1's in-process masks (score_segmentation)
            in_process_mask(out, folder, pid).parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(mask, str(in_process_mask(out, folder, pid)), True)
        started = time.perf_counter()
        found = answers[pid] = {}
        for task, predictor in predictors.items():
            answer = predictor.predict_case(inputs[task], segmentation=mask)
            if task == 2:
                found["risk"] = float(answer)
            elif task == 3:
                found["hpv_predicted"] = bool(answer)
                found["hpv_probability_predicted"] = float(predictor.last_report.probability)
            elif task == 2026:
                found.update({"t_stage_predicted": answer.t_stage, "n_stage_predicted": answer.n_stage,
                              "rfs_days_predicted": float(answer.rfs_days)})
        predict_s += time.perf_counter() - started
    return {"answers": answers, "segmentation_s": segment_s, "predict_s": predict_s}


# ------------------------------------------------------------------------------------------------------ scoring
SCORERS = {"segmentation": score_segmentation, "prognosis": score_prognosis, "hpv": score_hpv,
           "hecktor2026": score_hecktor2026}
"""How the demo scores each task's held-out answers, by registry name (the rules: :mod:`demo_scores`)."""


def score(out: Path, cohorts: dict[str, Any]) -> dict[str, Any]:
    """Every task's scores on the held-out cases (one dict)."""
    scores: dict[str, Any] = {}
    for spec in tasks():
        scores.update(SCORERS[spec.name](out, cohorts["held_out"], cohorts.get("held_out_extra", [])))
    return scores


# ---------------------------------------------------------------------------------------------------------- main


def run_demo(out: Path, options: argparse.Namespace) -> Path:
    import demo_report
    import torch

    # The demo's networks are tiny: one thread per process is several times faster than a pool of two, whose threads
    # mostly wait on each other (and stall outright when the machine is busy). The containers keep torch's default.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep rather than spin on shared cores
    out.mkdir(parents=True, exist_ok=True)
    for name in ("runs", "held_out", "held_out_extra", "outputs"):  # this demo's own folders only: re-runs start clean
        shutil.rmtree(out / name, ignore_errors=True)
    specs = tasks()
    watch = Stopwatch()
    cohorts = watch.run("synthetic cohorts", make_cohorts, out, options.train_cases, options.held_out, options.seed,
                        options.held_out_extra)
    trained: dict[str, Any] = {}
    for spec in specs:
        trained[spec.name] = watch.run(f"Task {spec.number} training ({spec.name}) and export", TRAINERS[spec.name],
                                       out / "data", out / "runs", options, trained)
    patient_ids = [c["patient_id"] for c in cohorts["held_out"]]
    runs = watch.run("every inference.py on the held-out cases", run_containers, out, patient_ids, options.jobs)
    in_process = watch.run(f"Tasks {', '.join(map(str, IN_PROCESS_TASKS))} in-process on the extra held-out cases",
                           predict_in_process, out, cohorts["held_out_extra"], jobs=options.jobs)
    scores = watch.run("scoring", score, out, cohorts)
    results = {"cohorts": cohorts, "training": trained, "runs": runs, "in_process": in_process, "scores": scores,
               "stages": watch.stages, "seed": options.seed, "jobs": options.jobs}
    # Saved before the report too, so that a failing report leaves a run that --rescore can finish.
    (out / "results.json").write_text(json.dumps(_json_safe({**results, "total": watch.total()}), indent=2) + "\n")
    report = watch.run("report", demo_report.write_report, out, results)
    results["total"] = watch.total()
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    demo_report.append_total(report, results["total"])
    return report


def _json_safe(value: Any) -> Any:
    """NaN and infinity (an undefined score, an empty-mask HD95) as null: standard JSON has neither."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_output", help="output folder")
    parser.add_argument("--train-cases", type=int, default=96,
                        help="synthetic training cases (Task 1's 2-fold split and Tasks 2, 3 and 2026's 5 folds)")
    parser.add_argument("--held-out", type=int, default=2, help="held-out cases run through every container")
    parser.add_argument("--held-out-extra", type=int, default=34,
                        help="more held-out cases through the predict_case of Tasks 2, 3 and 2026 in-process "
                             "(one shared segmentation each, which Task 1 is scored on too), scored with the "
                             "container runs and apart")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--epochs", type=int, default=16,
                        help="Task 1 epochs per fold (of demo.json's 25 iterations; demo.json itself says 40)")
    parser.add_argument("--jobs", type=int, default=2, help="inference.py processes at a time (one thread each)")
    parser.add_argument("--rescore", action="store_true",
                        help="score the outputs of an earlier run in --out again and rewrite its report (no training, "
                             "no container run; its stage times are kept)")
    return parser


def rescore(out: Path) -> Path:
    """Score an earlier run's container outputs again and rewrite ``report.md`` and ``results.json`` (after a change
    to the scoring or the report; the run's own stage times and total are kept)."""
    import demo_report

    path = out / "results.json"
    if not path.is_file():
        raise InputError(f"{out} holds no demo run (results.json missing); run the demo first")
    results = json.loads(path.read_text())
    results["runs"] = {int(task): records for task, records in results["runs"].items()}
    results["scores"] = score(out, results["cohorts"])
    report = demo_report.write_report(out, results)
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    demo_report.append_total(report, results["total"])
    return report


def run(args: argparse.Namespace) -> None:
    if args.rescore:
        print(f"[demo] report: {rescore(args.out)}")
        return
    if args.train_cases < 24 or args.held_out < 2:
        # Fewer than 24 training patients leave some of Tasks 2 and 3's five validation folds without a relapse or a
        # patient of each HPV status to score them by.
        raise InputError("--train-cases must be at least 24 and --held-out at least 2")
    args.jobs = max(1, args.jobs)
    report = run_demo(args.out, args)
    print(f"[demo] report: {report}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
