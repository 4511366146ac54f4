"""The Task 1 trainer: :class:`SegmentationTrainer` trains the folds of a run one after the other (patches from the
cache, AdamW with a warm-up and cosine schedule, validation on whole regions, checkpoints every epoch, out-of-fold
predictions at the end of each fold), as one process or as every rank of a ``torchrun`` job; :func:`train` is the
CLI's one call."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import hecktor
from hecktor.datasets import list_training_cases
from hecktor.errors import InputError
from hecktor.folds import kfold_split, load_folds, save_folds
from hecktor.metrics import dice
from hecktor.outputs import write_text_atomic
from hecktor.plan import RegionPlan
from hecktor.segment import autocast_context, sliding_window_probabilities
from hecktor.suv_table import as_suv_table
from hecktor.training.cache import report_repairs, resolve_workers
from hecktor.training.check_data import check_training_data
from hecktor.training.distributed import distributed_failures, init_distributed
from hecktor.training.run_log import RunLog
from hecktor.training.segmentation.checkpoints import (CHECKPOINT_FORMAT, CheckpointError, CheckpointWarning,
                                                       find_resume_checkpoint, remove_stale_temporaries,
                                                       save_checkpoint, set_aside, verify_checkpoint_file)
from hecktor.training.segmentation.config import (CONFIG_CHANGES_JSON, CONFIG_JSON, FOLDS_JSON, MAY_CHANGE_ON_RESUME,
                                                  PLAN_JSON, VALIDATION_DIR, TrainingConfig,
                                                  build_segmentation_network, read_run_config,
                                                  resolve_network_config)
from hecktor.training.segmentation.data import EpochSampler, PatchDataset, build_augmentation, load_region, region_cache
from hecktor.training.segmentation.losses import make_loss, warmup_cosine
from hecktor.training.segmentation.validation import predict_validation_cases

FOREGROUND = {"GTVp": 1, "GTVn": 2}


def validation_line(fold: int, iteration: int, total_iterations: int, row: dict[str, Any]) -> str:
    """One progress line per validation: fold, iteration, training loss, validation Dice per label (mean per case;
    GTVn also aggregated)."""
    def number(key: str) -> str:
        value = row.get(key, float("nan"))
        return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"

    return (f"fold {fold} iteration {iteration}/{total_iterations}: loss {row['train_loss']:.4f}, validation Dice "
            f"GTVp {number('val_dice_GTVp')}, GTVn {number('val_dice_GTVn')} (DSCagg {number('val_dsc_agg_GTVn')})")


class SegmentationTrainer:
    """Trains Task 1 networks fold by fold (see the module docstring for the run directory's layout).

    Args:
        config: the run's settings.
        resume: continue from each fold's last checkpoint (a fold without one starts afresh; a finished fold is
            skipped). Without it, a fold folder that already holds checkpoints is an error.
    """

    def __init__(self, config: TrainingConfig, resume: bool = False) -> None:
        self.config = config
        self.resume = resume
        self.run_dir = Path(config.run_dir)
        self.context, self.device = init_distributed(config.device)
        self.workers = resolve_workers(config.workers, share=self.context.local_world_size)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.network_config = resolve_network_config(config.network, config.network_config, config.deep_supervision)
        self.cache = region_cache(config.cache_root, config.plan, config.around)
        self.suv_table = as_suv_table(config.suv_table)
        self.cases = list_training_cases(config.data_root, task=1, suv_table=self.suv_table)
        self.patient_ids = [case.patient_id for case in self.cases]
        self.cache_stats: dict[str, int] = {}
        self.resume_changes: dict[str, list[Any]] = {}
        self.folds: list[tuple[np.ndarray, np.ndarray]] = []

    # -------------------------------------------------------------------------------------------- run set-up

    def _run_record(self) -> dict[str, Any]:
        record = self.config.to_dict()
        record["network_config"] = self.network_config
        return json.loads(json.dumps(record))  # as it reads back from config.json (lists, not tuples)

    def _check_run_dir(self) -> None:
        """A run folder keeps what its checkpoints depend on (plan, network, split); folds are trained into it one
        command at a time if need be, but a fold that holds checkpoints is only continued with ``resume``, and a
        resume changes only what may change (:meth:`_resume_differences`)."""
        config_path = self.run_dir / CONFIG_JSON
        if not config_path.is_file():
            return
        previous = read_run_config(self.run_dir)
        current = self._run_record()
        fixed = ("plan", "network", "network_config", "n_folds", "seed", "around", "loss", "dice_include_background",
                 "ce_class_weights")
        changed = [key for key in fixed if previous.get(key) != current.get(key)]
        if changed:
            raise InputError(f"{config_path} was written with other {', '.join(changed)}; use a new --out folder")
        if self.resume:  # every other difference listed, and refused unless it may change
            self.resume_changes = self._resume_differences(previous, current)
        else:
            started = [f"fold_{k}" for k in self.config.fold_list
                       if any((self.run_dir / f"fold_{k}" / name).is_file()
                              for name in ("checkpoint_last.pt", "checkpoint_last.previous.pt"))]
            if started:
                raise InputError(f"{self.run_dir} already holds checkpoints ({', '.join(started)}); "
                                 "pass --resume to continue, or use a new --out folder")

    def _resume_differences(self, previous: dict[str, Any], current: dict[str, Any]) -> dict[str, list[Any]]:
        """The settings of ``--resume`` that differ from the run's ``config.json``: each printed on a line (key,
        recorded value, given value); refused unless every one may change (:data:`MAY_CHANGE_ON_RESUME`). Returns
        the differences to record (:meth:`_record_resume_changes`)."""
        differences = {key: [previous.get(key), current.get(key)] for key in sorted(set(previous) | set(current))
                       if previous.get(key) != current.get(key)}
        refused = {key: pair for key, pair in differences.items() if key not in MAY_CHANGE_ON_RESUME}
        if refused:
            for key, (recorded, given) in refused.items():
                print(f"{key}: recorded {json.dumps(recorded)}, given {json.dumps(given)}", flush=True)
            raise InputError(f"--resume with {len(refused)} setting(s) other than {self.run_dir / CONFIG_JSON} records "
                             f"({', '.join(refused)}; listed above): resume with the recorded values, or train into a "
                             f"new --out folder (only {', '.join(MAY_CHANGE_ON_RESUME)} may change on --resume)")
        # Which folds this command trains, and how it reports, change nothing a fold is trained with.
        return {key: pair for key, pair in differences.items()
                if key not in ("run_dir", "folds", "progress", "log_validation")}

    def _record_resume_changes(self, fold: int, start_epoch: int) -> None:
        """Append the settings changed on ``--resume`` to :data:`CONFIG_CHANGES_JSON`, as applied to ``fold`` from
        the iteration it resumes at, and say so in one line."""
        path = self.run_dir / CONFIG_CHANGES_JSON
        history = json.loads(path.read_text()) if path.is_file() else []
        iteration = start_epoch * self.config.iterations_per_epoch
        history.append({"fold": fold, "from_epoch": start_epoch, "from_iteration": iteration,
                        "changes": {key: {"recorded": old, "given": new}
                                    for key, (old, new) in self.resume_changes.items()}})
        write_text_atomic(json.dumps(history, indent=1) + "\n", path)
        shown = ", ".join(f"{key} {json.dumps(old)} -> {json.dumps(new)}"
                          for key, (old, new) in self.resume_changes.items())
        print(f"fold {fold} resumes at iteration {iteration} with {shown} (recorded in {path})", flush=True)

    def prepare(self) -> None:
        """Check the run folder, write the run record, cache every case, and fix the fold split."""
        if self.context.is_main:
            self._check_run_dir()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(json.dumps(self._run_record(), indent=2) + "\n", self.run_dir / CONFIG_JSON)
            write_text_atomic(self.config.plan.to_json() + "\n", self.run_dir / PLAN_JSON)
        self.context.barrier()
        # Every rank builds its share of the missing entries, then all wait until the cache is complete.
        self.cache_stats = self.cache.prepare(self.cases, rank=self.context.rank, world_size=self.context.world_size,
                                              progress=self.config.progress and self.context.is_main,
                                              workers=self.workers)
        self.context.barrier()
        if self.context.is_main:  # what preprocessing repaired, shown once and kept in the run folder
            report_repairs(self.cache, self.patient_ids, self.run_dir)
        folds_path = self.run_dir / FOLDS_JSON
        if self.context.is_main and not folds_path.is_file():
            save_folds(kfold_split(self.patient_ids, self.config.n_folds, self.config.seed), folds_path,
                       case_ids=self.patient_ids)
        self.context.barrier()
        self.folds = load_folds(folds_path, case_ids=self.patient_ids)
        if len(self.folds) != self.config.n_folds:
            raise InputError(f"{folds_path} holds {len(self.folds)} folds, the config asks for {self.config.n_folds}; "
                             "use a new --out folder")

    def fold_cases(self, fold: int) -> tuple[list[str], list[str]]:
        train, val = self.folds[fold]
        return [self.patient_ids[i] for i in train], [self.patient_ids[i] for i in val]

    # ---------------------------------------------------------------------------------------------- training

    def _make_loader(self, patient_ids: list[str]) -> tuple[DataLoader, EpochSampler]:
        config = self.config
        dataset = PatchDataset(
            self.cache, patient_ids, config.plan.patch_size_zyx, config.positive_fraction,
            build_augmentation() if config.augmentation else None, seed=config.seed, rank=self.context.rank,
        )
        sampler = EpochSampler(config.iterations_per_epoch * config.batch_size)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0, drop_last=True,
        )
        return loader, sampler

    def validate(self, network: nn.Module, patient_ids: Sequence[str]) -> dict[str, float]:
        """Dice per label on whole cached regions (sliding window as at inference, no TTA), shared across ranks.

        Returns per label the mean Dice over the cases where it is defined and the aggregated Dice (DSCagg), and
        ``val_dice_mean``, the mean of the labels' mean Dice (the model-selection metric).
        """
        network.eval()
        # Per label: sum of defined Dice, number of defined cases, true positives, |GT| + |pred|. Raw sums rather than
        # hecktor.metrics.aggregated_dice because every rank scores its own cases and the sums are all-reduced.
        sums = [0.0] * (4 * len(FOREGROUND))
        for pid in list(patient_ids)[self.context.rank::self.context.world_size]:
            region = load_region(self.cache, pid)
            image = torch.from_numpy(np.asarray(region.image, dtype=np.float32))[None].to(self.device)
            probabilities = sliding_window_probabilities(
                [network], image, self.config.plan.patch_size_zyx, overlap=self.config.val_overlap,
                sw_batch_size=self.config.sw_batch_size, amp=self.use_amp,
            )
            prediction = probabilities.argmax(0).to(torch.uint8).cpu().numpy()
            for k, value in enumerate(FOREGROUND.values()):
                score = dice(prediction, region.label, value)
                if not math.isnan(score):
                    sums[4 * k] += score
                    sums[4 * k + 1] += 1
                p, g = prediction == value, region.label == value
                sums[4 * k + 2] += float(np.count_nonzero(p & g))
                sums[4 * k + 3] += float(np.count_nonzero(p) + np.count_nonzero(g))
        sums = self.context.all_reduce_sum(sums, self.device)
        metrics: dict[str, float] = {}
        means = []
        for k, name in enumerate(FOREGROUND):
            mean = sums[4 * k] / sums[4 * k + 1] if sums[4 * k + 1] else float("nan")
            metrics[f"val_dice_{name}"] = mean
            metrics[f"val_dsc_agg_{name}"] = 2 * sums[4 * k + 2] / sums[4 * k + 3] if sums[4 * k + 3] else float("nan")
            if not math.isnan(mean):
                means.append(mean)
        metrics["val_dice_mean"] = float(np.mean(means)) if means else 0.0
        return metrics

    def _checkpoint(self, network: nn.Module, optimizer, scheduler, scaler, epoch: int, best: dict[str, Any],
                    fold: int) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "hecktor_version": hecktor.__version__,
            "fold": fold,
            "epoch": epoch,
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
            "best": dict(best),
            "network": self.config.network,
            "network_config": self.network_config,
            "plan": self.config.plan.to_dict(),
            "plan_digest": self.config.plan.digest(),
        }

    def _resume_checkpoint(self, fold_dir: Path) -> dict[str, Any] | None:
        """The fold's newest good checkpoint
        (:func:`~hecktor.training.segmentation.checkpoints.find_resume_checkpoint`), or ``None`` to start afresh.

        A damaged checkpoint is never loaded: rank 0 moves it aside with a
        :class:`~hecktor.training.segmentation.checkpoints.CheckpointWarning` once every rank has read what it needs,
        and deletes the temporary files of writes that a killed run left behind. A damaged ``checkpoint_best.pt`` is
        moved aside too, and the best score reset, so that the next validation writes a new one.
        """
        checkpoint, path, damaged = find_resume_checkpoint(fold_dir, map_location=self.device)
        best_path = fold_dir / "checkpoint_best.pt"
        if best_path.is_file():
            try:
                verify_checkpoint_file(best_path)
            except CheckpointError as error:
                damaged.append((best_path, str(error)))
                if checkpoint is not None:
                    checkpoint["best"] = {"val_dice_mean": -1.0, "epoch": 0}
        self.context.barrier()  # every rank has read the checkpoint before rank 0 moves files
        if self.context.is_main:
            for damaged_path, reason in damaged:
                set_aside(damaged_path, reason)
            remove_stale_temporaries(fold_dir)
            if damaged and checkpoint is not None:
                warnings.warn(f"resuming {fold_dir.name} from {path.name} (epoch {checkpoint['epoch']})",
                              CheckpointWarning, stacklevel=2)
            elif damaged:
                warnings.warn(f"no good checkpoint left in {fold_dir}: {fold_dir.name} starts afresh",
                              CheckpointWarning, stacklevel=2)
        self.context.barrier()
        return checkpoint

    def train_fold(self, fold: int) -> dict[str, Any]:
        """Train one fold to ``config.epochs``; returns its summary (best epoch and metrics, timings)."""
        config = self.config
        if not self.folds:
            self.prepare()
        train_ids, val_ids = self.fold_cases(fold)
        fold_dir = self.run_dir / f"fold_{fold}"
        last_path, best_path = fold_dir / "checkpoint_last.pt", fold_dir / "checkpoint_best.pt"

        torch.manual_seed(config.seed)  # identical initial weights on every rank and in every run
        network = build_segmentation_network(config.network, self.network_config).to(self.device)
        # On the CPU, oneDNN's 3-D convolution backward passes are faster on channels-last tensors (the demo's
        # network: benchmarks/bench_training_step.py). Values are unchanged up to float rounding; checkpoints load into
        # networks of either layout.
        layout = torch.channels_last_3d if self.device.type == "cpu" else torch.preserve_format
        network = network.to(memory_format=layout)
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        total_iterations = config.epochs * config.iterations_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total_iterations, config.warmup_fraction, config.min_lr_ratio))
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        loss_function = make_loss(config.loss, config.dice_include_background, config.ce_class_weights).to(self.device)
        start_epoch, best = 0, {"val_dice_mean": -1.0, "epoch": 0}

        checkpoint = self._resume_checkpoint(fold_dir) if self.resume else None
        if checkpoint is not None:
            # As in export_bundle: a checkpoint stored before the plan gained fields is compared by the plans.
            same_plan = (checkpoint["plan_digest"] == config.plan.digest()
                         or RegionPlan.from_dict(checkpoint.get("plan", {})) == config.plan)
            if not same_plan or checkpoint["network"] != config.network:
                raise InputError(f"{fold_dir} holds a checkpoint of another plan or network; use a new --out folder")
            network.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            start_epoch, best = int(checkpoint["epoch"]), dict(checkpoint["best"])
            if self.context.is_main:
                torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
                if "cuda" in checkpoint["rng"] and self.device.type == "cuda":
                    torch.cuda.set_rng_state(checkpoint["rng"]["cuda"].cpu(), self.device)
            else:
                torch.manual_seed(config.seed + 1000 * self.context.rank + start_epoch)
        else:
            torch.manual_seed(config.seed + 1000 * self.context.rank)
        if self.resume_changes and self.context.is_main:
            self._record_resume_changes(fold, start_epoch)
        if start_epoch >= config.epochs:
            if config.predict_validation and not self.has_validation_predictions(fold):
                self.predict_validation(fold)
            return {"fold": fold, "epochs": start_epoch, "best": best, "skipped": True}

        model: nn.Module = network
        if self.context.enabled:
            model = nn.parallel.DistributedDataParallel(
                network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        loader, sampler = self._make_loader(train_ids)
        log = RunLog(fold_dir) if self.context.is_main else None
        epoch_losses: list[float] = []
        summary: dict[str, Any] = {"fold": fold, "train_cases": len(train_ids), "val_cases": len(val_ids)}

        for epoch in range(start_epoch, config.epochs):
            sampler.epoch = epoch
            network.train()
            started = time.perf_counter()
            loss_sum, steps = 0.0, 0
            bar = tqdm(loader, desc=f"fold {fold} epoch {epoch + 1}/{config.epochs}", unit="it", leave=False,
                       disable=not (config.progress and self.context.is_main))
            for images, labels in bar:
                images = images.to(self.device, non_blocking=True, memory_format=layout)
                labels = labels.to(self.device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with autocast_context(self.device, self.use_amp):
                    # A list (full resolution first) when the network has deep supervision; one tensor otherwise.
                    outputs = model(images)
                    loss = loss_function(outputs, labels)
                scaler.scale(loss).backward()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += float(loss.detach())
                steps += 1
                bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
            train_seconds = time.perf_counter() - started
            loss_sum, steps_total = self.context.all_reduce_sum([loss_sum, float(steps)], self.device)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / steps_total,
                "lr": optimizer.param_groups[0]["lr"],
                "train_seconds": train_seconds,
                "seconds_per_iteration": train_seconds / max(steps, 1),
                "processes": self.context.world_size,
            }
            epoch_losses.append(row["train_loss"])
            if config.val_every and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                val_started = time.perf_counter()
                row.update(self.validate(network, val_ids))
                row["val_seconds"] = time.perf_counter() - val_started
                if row["val_dice_mean"] > best.get("val_dice_mean", -1.0):
                    best = {"epoch": epoch + 1, **{k: v for k, v in row.items() if k.startswith("val_")}}
                    if self.context.is_main:
                        fold_dir.mkdir(parents=True, exist_ok=True)
                        save_checkpoint(self._checkpoint(network, optimizer, scheduler, scaler, epoch + 1, best, fold),
                                        best_path, keep_previous=False)
            elif not config.val_every and epoch + 1 == config.epochs:
                # No validation (val_every 0): the last epoch is the one exported and predicting out of fold.
                best = {"epoch": epoch + 1}
                if self.context.is_main:
                    fold_dir.mkdir(parents=True, exist_ok=True)
                    save_checkpoint(self._checkpoint(network, optimizer, scheduler, scaler, epoch + 1, best, fold),
                                    best_path, keep_previous=False)
            if self.context.is_main:
                # The row first: a kill between the two resumes from the epoch before and rewrites this row, whereas the
                # other order would leave an epoch without a row.
                log.log(row)
                save_checkpoint(self._checkpoint(network, optimizer, scheduler, scaler, epoch + 1, best, fold), last_path)
                if config.progress:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
                    tqdm.write(f"fold {fold} epoch {epoch + 1}: {shown}")
                elif config.log_validation and "val_dice_mean" in row:
                    print(validation_line(fold, (epoch + 1) * config.iterations_per_epoch, total_iterations, row),
                          flush=True)
            self.context.barrier()

        summary.update({"epochs": config.epochs, "best": best, "epoch_losses": epoch_losses, "skipped": False})
        if config.predict_validation:
            started = time.perf_counter()
            self.predict_validation(fold)
            summary["predict_validation_s"] = time.perf_counter() - started
        return summary

    def has_validation_predictions(self, fold: int) -> bool:
        """Whether ``fold_K/validation/`` holds a prediction for every validation case of the fold."""
        folder = self.run_dir / f"fold_{fold}" / VALIDATION_DIR
        return all((folder / f"{pid}.nii.gz").is_file() for pid in self.fold_cases(fold)[1])

    def predict_validation(self, fold: int, checkpoint: str = "best") -> Path:
        """Out-of-fold predictions: the fold's validation cases segmented from their CT and PET files by
        :meth:`hecktor.segment.Segmenter.predict` (the containers' path: whole region, back onto the CT grid, no
        postprocessing) with the fold's ``checkpoint`` network, written to ``fold_K/validation/<PID>.nii.gz``; and
        ``fold_K/validation_labels/Task 1/<PID>/`` links to those cases' files, so that
        ``hecktor-evaluate --task 1 --pred fold_K/validation --labels fold_K/validation_labels`` scores the fold.
        Ranks share the cases out. Returns the predictions folder."""
        fold_dir = self.run_dir / f"fold_{fold}"
        self.context.barrier()  # rank 0 wrote the checkpoint
        _, val_ids = self.fold_cases(fold)
        cases = {case.patient_id: case for case in self.cases}
        predict_validation_cases(fold_dir / f"checkpoint_{checkpoint}.pt", self.config.plan,
                                 [cases[pid] for pid in val_ids[self.context.rank::self.context.world_size]], fold_dir,
                                 device=self.device, tta=self.config.validation_tta, overlap=self.config.val_overlap,
                                 sw_batch_size=self.config.sw_batch_size)
        self.context.barrier()
        return fold_dir / VALIDATION_DIR

    def run(self) -> list[dict[str, Any]]:
        """Prepare the data, then train every selected fold in turn."""
        self.prepare()
        return [self.train_fold(fold) for fold in self.config.fold_list]

    def close(self, abort: bool = False) -> None:
        """Leave the process group (not after a failure: with a peer gone, NCCL may block in the teardown, and the
        process is about to exit anyway)."""
        if not abort:
            self.context.leave()


def train(config: TrainingConfig, resume: bool = False) -> list[dict[str, Any]]:
    """Train the folds of ``config`` (the CLI's one call). Under ``torchrun``, a rank that dies or hangs makes the
    others stop with a :class:`~hecktor.training.distributed.DistributedJobError` (see
    :func:`~hecktor.training.distributed.init_distributed`).

    First of all, every rank runs the data check of ``config.data_root``'s Task 1 folder
    (:func:`~hecktor.training.check_data.check_training_data`; rank 0 prints its lines): an error stops the run there
    (:class:`~hecktor.training.check_data.DataCheckError`)."""
    quiet = os.environ.get("RANK", "0") != "0"
    check_training_data(1, config.data_root, echo=(lambda line: None) if quiet else print,
                        suv_table=config.suv_table)
    trainer = SegmentationTrainer(config, resume=resume)
    finished = False
    try:
        with distributed_failures(trainer.context):
            summaries = trainer.run()
        finished = True
        return summaries
    finally:
        trainer.close(abort=not finished)
