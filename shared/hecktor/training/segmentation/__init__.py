"""Task 1 training (library behind ``training/train_segmentation.py``): cached preprocessing, cross-validation folds,
patch training, validation, checkpoints, export.

A run directory looks like::

    RUN_DIR/
      config.json        the resolved TrainingConfig (plan and full network config included)
      plan.json          the preprocessing RegionPlan (copied into the exported bundle)
      folds.json         the cross-validation split (hecktor.folds.save_folds format, with case ids)
      fold_K/
        checkpoint_best.pt, checkpoint_last.pt   model + optimizer + scheduler + scaler + epoch + RNG state
        checkpoint_last.previous.pt              the last checkpoint before the current one (save_checkpoint)
        metrics.csv, metrics.json, metrics.png   one row per epoch (hecktor.training.run_log)

Each case is preprocessed once by :func:`hecktor.patches.preprocess_training_case` (the same resampling code as
inference) and kept in the trainers' preprocessing cache (:mod:`hecktor.training.cache`) under
``CACHE_DIR/region-<plan digest>-<around>/``; another plan gets another cache. Training draws patches from the
cached regions (positive/negative ratio, positives centred on GTVp and GTVn equally often, then MONAI
augmentation); validation runs the inference code path (:func:`hecktor.segment.sliding_window_probabilities`) on
whole cached regions.

Every patch is drawn from a random stream keyed by (seed, epoch, rank, index), so runs are reproducible whatever
the number of data-loader workers, and a resumed run draws exactly the patches an uninterrupted one would have.

A run killed at any point (SIGKILL included) continues with ``resume`` from each fold's last complete checkpoint,
losing at most the epoch in progress: checkpoints are written to a temporary file, verified (CRC-32 of every
record) and renamed, and a damaged checkpoint (a copy cut short, a bad disk) is moved aside and the one before it
used (:mod:`~hecktor.training.segmentation.checkpoints`).

Multi-GPU / multi-process: launch the CLI with ``torchrun --nproc_per_node N``; every rank draws its own patches,
gradients are averaged by DistributedDataParallel (``nccl`` on CUDA, ``gloo`` on CPU), validation cases are shared
out between the ranks, and only rank 0 writes files. When a rank dies the others stop with one
:class:`~hecktor.training.distributed.DistributedJobError` line (its connections close at once, or torchrun stops
them); one that hangs is given up after the process-group timeout (:mod:`hecktor.training.distributed`,
``$HECKTOR_DIST_TIMEOUT_S``).

The package, one module per part (everything public is re-exported here, so ``from hecktor.training.segmentation
import X`` keeps working):

* :mod:`~hecktor.training.segmentation.config`: :class:`TrainingConfig`, config files, the network's full config,
  the run folder's file names.
* :mod:`~hecktor.training.segmentation.data`: the region cache, :class:`PatchDataset`, augmentation.
* :mod:`~hecktor.training.segmentation.losses`: :data:`LOSS_SPECS`, :func:`make_loss`, the learning-rate schedule.
* :mod:`~hecktor.training.segmentation.checkpoints`: writing, verifying and resuming from checkpoints.
* :mod:`~hecktor.training.segmentation.trainer`: :class:`SegmentationTrainer` and :func:`train`.
* :mod:`~hecktor.training.segmentation.validation`: the out-of-fold predictions.
* :mod:`~hecktor.training.segmentation.postprocessing_choice`: :func:`choose_run_postprocessing`.
* :mod:`~hecktor.training.segmentation.export`: :func:`export_bundle`.

The ``torchrun`` helpers are in :mod:`hecktor.training.distributed`, for every trainer.
"""

from hecktor.training.distributed import (DEFAULT_DIST_TIMEOUT_S, DIST_TIMEOUT_ENV, DistributedContext,
                                          DistributedJobError, dist_timeout_s, distributed_failures, init_distributed)
from hecktor.training.segmentation.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINTS, CheckpointError,
                                                       CheckpointWarning, find_resume_checkpoint, load_checkpoint,
                                                       network_from_checkpoint, previous_checkpoint_path,
                                                       remove_stale_temporaries, save_checkpoint, set_aside,
                                                       verify_checkpoint_file)
from hecktor.training.segmentation.config import (CONFIG_CHANGES_JSON, CONFIG_JSON, FOLDS_JSON, MAY_CHANGE_ON_RESUME,
                                                  PLAN_JSON, POSTPROCESSING_JSON,
                                                  VALIDATION_DIR, VALIDATION_LABELS_DIR, TrainingConfig,
                                                  build_segmentation_network, check_run_config, load_config_file,
                                                  read_run_config, resolve_network_config)
from hecktor.training.segmentation.data import (CachedRegion, EpochSampler, PatchDataset, build_augmentation,
                                                load_region, region_cache, region_entry)
from hecktor.training.segmentation.export import export_bundle
from hecktor.training.segmentation.losses import (LOSS_SPECS, LOSSES, DiceCrossEntropyLoss, LossSpec, SegmentationLoss,
                                                  describe_loss, make_loss, warmup_cosine)
from hecktor.training.segmentation.postprocessing_choice import choose_run_postprocessing
from hecktor.training.segmentation.trainer import FOREGROUND, SegmentationTrainer, train, validation_line
from hecktor.training.segmentation.validation import link_case_files, predict_validation_cases

__all__ = [
    # config
    "CONFIG_CHANGES_JSON", "CONFIG_JSON", "FOLDS_JSON", "MAY_CHANGE_ON_RESUME", "PLAN_JSON", "POSTPROCESSING_JSON",
    "VALIDATION_DIR", "VALIDATION_LABELS_DIR",
    "TrainingConfig", "build_segmentation_network", "check_run_config", "load_config_file", "read_run_config",
    "resolve_network_config",
    # data
    "CachedRegion", "EpochSampler", "PatchDataset", "build_augmentation", "load_region", "region_cache",
    "region_entry",
    # losses
    "LOSS_SPECS", "LOSSES", "DiceCrossEntropyLoss", "LossSpec", "SegmentationLoss", "describe_loss", "make_loss",
    "warmup_cosine",
    # checkpoints
    "CHECKPOINT_FORMAT", "CHECKPOINTS", "CheckpointError", "CheckpointWarning", "find_resume_checkpoint",
    "load_checkpoint", "network_from_checkpoint", "previous_checkpoint_path", "remove_stale_temporaries",
    "save_checkpoint", "set_aside", "verify_checkpoint_file",
    # trainer, out-of-fold predictions, postprocessing, export
    "FOREGROUND", "SegmentationTrainer", "train", "validation_line", "link_case_files", "predict_validation_cases",
    "choose_run_postprocessing", "export_bundle",
    # hecktor.training.distributed, where they now live
    "DEFAULT_DIST_TIMEOUT_S", "DIST_TIMEOUT_ENV", "DistributedContext", "DistributedJobError", "dist_timeout_s",
    "distributed_failures", "init_distributed",
]
