"""Training of both tasks: the library behind the thin command-line scripts in ``training/``.

* :mod:`hecktor.training.segmentation`: Task 1 (TrainingConfig, SegmentationTrainer, patches, losses, export).
* :mod:`hecktor.training.prognosis`: Task 2 (TrainingConfig, cohorts, cross-validation, export).
* :mod:`hecktor.training.cache`: the one preprocessing cache both trainers use.
* :mod:`hecktor.training.run_log`: per-epoch metrics as CSV, JSON and PNG.
* :mod:`hecktor.training.cli`: what the command lines share (argument types, common options, exit statuses).

Folds of both tasks are in :mod:`hecktor.folds`. Nothing is imported here: the containers install this package but
never train, and the training modules pull in matplotlib and MONAI's losses and transforms.
"""
