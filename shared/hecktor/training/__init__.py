"""Training of the three tasks: the library behind the thin command-line scripts in ``training/``.

* :mod:`hecktor.training.segmentation`: Task 1 (TrainingConfig, SegmentationTrainer, patches, losses, out-of-fold
  predictions, postprocessing choice, export).
* :mod:`hecktor.training.prognosis`: Task 2 (fold training, cross-validation, export), with
  :mod:`~hecktor.training.prognosis_config` (TrainingConfig, each mode's default survival model),
  :mod:`~hecktor.training.prognosis_cohort` (its patients), :mod:`~hecktor.training.biomarker_features` (the
  biomarker modes: Task 1's out-of-fold masks, their biomarkers and tumour cubes, the nested Task 1 bundle) and
  :mod:`~hecktor.training.prognosis_results` (fold results, metrics, run folder, summary over repeats).
* :mod:`hecktor.training.hpv`: Task 3 (HPVTrainingConfig, cross-validation, export), with
  :mod:`~hecktor.training.calibration` (Platt calibration and the cross-fitted decision threshold).
* :mod:`hecktor.training.crossval`: what the Task 2 and Task 3 cross-validations share (fold loop, epoch loop with
  early stopping, encoders, cached images, run folders, thread settings).
* :mod:`hecktor.training.image_level`: what the Task 2 and Task 3 trainers share beside it (the cached box entry,
  the network presets, the default cache root, the check of a run folder before training).
* :mod:`hecktor.training.cache`: the one preprocessing cache every trainer uses.
* :mod:`hecktor.training.run_log`: per-epoch metrics as CSV, JSON and PNG.
* :mod:`hecktor.training.cli`: what the command lines share (argument groups and types, exit statuses).
* :mod:`hecktor.training.distributed`: the process group of multi-GPU (``torchrun``) training.
* :mod:`hecktor.training.check_data`: ``hecktor-check-data``, the dataset check before any training.

Folds of every task are in :mod:`hecktor.folds`. Nothing is imported here: the containers install this package but
never train, and the training modules pull in matplotlib and MONAI's losses and transforms.
"""
