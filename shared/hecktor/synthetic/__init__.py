"""Synthetic HECKTOR-like cohorts: PET/CT phantoms, GTVp/GTVn labels, clinical tables and survival with a known truth.

The generator lays out a folder exactly like the HECKTOR 2025 training data::

    DIR/Task 1/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz, <PID>.nii.gz
    DIR/Task 1/HECKTOR_2025_Training_Task_1.csv
    DIR/Task 2/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz
    DIR/Task 2/HECKTOR_2025_Training_Task_2.csv      (+ RFS, Relapse)
    DIR/Task 3/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz
    DIR/Task 3/HECKTOR_2025_Training_Task_3.csv      (HPV Status, the target, empty where unknown)
    DIR/Task 2026/<PID>/ as Task 1, HECKTOR_2026_Training.csv (with --edition-2026: + HPV Status, RFS, T/N stage)
    DIR/true_risk.csv                                  (true log-hazard, HPV status and P(HPV+), the image features)
    DIR/cohort.json                                    (seed, size, true models, oracle C-index and balanced accuracy,
                                                        the stage counts and the rules' staging on the true masks)

Every case is an analytic head-and-neck phantom placed in physical space (LPS mm, +z superior). Each image is
made by evaluating the same analytic shapes at the physical centres of *its own* voxels, so CT, PET and label
agree in physical space whatever their spacing, origin, extent or direction (flipped and oblique grids included).
Shapes carry an approximate signed distance, which gives a one-voxel partial-volume ramp on every grid; the label
is the zero level set sampled on the CT grid.

Survival follows a proportional-hazards model with a Weibull baseline whose coefficients are written to
``cohort.json``; times are drawn from the true (not the missing-masked) covariates. HPV status (Task 3) is drawn from
a logistic model of the true record and tumour (:data:`HPV_MODEL`: non-smokers, younger patients, smaller
primaries and more nodes are more often HPV-positive); HPV-negative status raises the hazard.

Each case draws from its own random stream, ``SeedSequence(seed, spawn_key=(case_index,))``, so a cohort of 10
cases is a prefix of a cohort of 20 with the same seed, and the same seed gives byte-identical files.

The modules, from the bottom up:

* :mod:`~hecktor.synthetic.grids`: the images' size recipes, their random placement and direction, the index
  arithmetic of the renderer;
* :mod:`~hecktor.synthetic.shapes`: the signed-distance shapes and uptake profiles the phantom is built of;
* :mod:`~hecktor.synthetic.phantom`: one patient's anatomy drawn at random and painted onto a grid;
* :mod:`~hecktor.synthetic.clinical`: the clinical record, true and as recorded (values missing at random);
* :mod:`~hecktor.synthetic.outcomes`: the true survival and HPV models, the survival draw and the oracles;
* :mod:`~hecktor.synthetic.staging`: the T and N stage of the AJCC 7th rules on the drawn primary and nodes, and the
  recorded stages' label noise (a random stream of its own: no earlier draw changes);
* :mod:`~hecktor.synthetic.case`: :func:`make_case`, one patient in memory;
* :mod:`~hecktor.synthetic.cohort`: :func:`generate_cohort`, a cohort written to disk;
* :mod:`~hecktor.synthetic.cli`: the command line.

Command line::

    python -m hecktor.synthetic --out DIR --cases 20 --seed 0 --size small

Development only: ``.dockerignore`` keeps this package out of the container images, so no module that the
containers import may import it.
"""

from hecktor.synthetic.case import SyntheticCase, case_seed_sequence, make_case
from hecktor.synthetic.cli import build_parser, main
from hecktor.synthetic.clinical import CENTRES, CLINICAL_COLUMNS, MISSING_RATES
from hecktor.synthetic.cohort import (
    COHORT_JSON,
    GENERATOR_VERSION,
    TASK1_CSV,
    TASK2_CSV,
    TASK3_CSV,
    TASK3_FOLDER,
    TRUE_RISK_CSV,
    CohortSummary,
    generate_cohort,
)
from hecktor.synthetic.grids import ORIENTATIONS, SIZES
from hecktor.synthetic.outcomes import (
    CENSOR_DROPOUT_MEAN_YEARS,
    CENSOR_FOLLOW_UP_YEARS,
    HPV_MODEL,
    HPV_PREVALENCE,
    TRUE_MODEL,
    WEIBULL_MEDIAN_DAYS,
    WEIBULL_SCALE_DAYS,
    WEIBULL_SHAPE,
    hpv_probability,
    oracle_balanced_accuracy,
    oracle_c_index,
    true_log_hazard,
)

__all__ = [
    "CENSOR_DROPOUT_MEAN_YEARS",
    "CENSOR_FOLLOW_UP_YEARS",
    "CENTRES",
    "CLINICAL_COLUMNS",
    "COHORT_JSON",
    "GENERATOR_VERSION",
    "HPV_MODEL",
    "HPV_PREVALENCE",
    "MISSING_RATES",
    "ORIENTATIONS",
    "SIZES",
    "TASK1_CSV",
    "TASK2_CSV",
    "TASK3_CSV",
    "TASK3_FOLDER",
    "TRUE_MODEL",
    "TRUE_RISK_CSV",
    "WEIBULL_MEDIAN_DAYS",
    "WEIBULL_SCALE_DAYS",
    "WEIBULL_SHAPE",
    "CohortSummary",
    "SyntheticCase",
    "build_parser",
    "case_seed_sequence",
    "generate_cohort",
    "hpv_probability",
    "main",
    "make_case",
    "oracle_balanced_accuracy",
    "oracle_c_index",
    "true_log_hazard",
]
