"""The synthetic cohort's T and N stages (hecktor.synthetic.staging) and its 2026 layout: stages from each case's
own primary and nodes, label noise from a stream of its own, and every existing draw unchanged."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter

import numpy as np
import SimpleITK as sitk

from hecktor.staging import N_STAGES, T_STAGES, parse_n_stage, parse_t_stage
from hecktor.synthetic import generate_cohort, make_case
from hecktor.synthetic.case import case_seed_sequence
from hecktor.synthetic.clinical import _draw_clinical
from hecktor.synthetic.cohort import TASK2026_COLUMNS
from hecktor.synthetic.phantom import _draw_anatomy
from hecktor.synthetic.staging import recorded_stages, staging_seed_sequence, true_measurements, true_stages


def _digest(case) -> str:
    """The case's images (values and geometry), record and outcomes, as hashed before the stages existed."""
    digest = hashlib.sha256()
    for image in (case.ct, case.pet, case.label):
        digest.update(sitk.GetArrayViewFromImage(image).tobytes())
        digest.update(repr((image.GetOrigin(), image.GetSpacing(), image.GetDirection())).encode())
    digest.update(json.dumps(case.clinical, sort_keys=True, default=str).encode())
    digest.update(repr((case.rfs_days, case.relapse, case.true_log_hazard, case.hpv_probability,
                        case.features)).encode())
    return digest.hexdigest()


def test_existing_cases_are_bit_identical() -> None:
    # Digests taken with the generator of commit 2189a1c, before the stages and their noise stream were added.
    case = make_case(0, "small", case_index=0)
    assert _digest(case) == "fa8adcfe14616d40a062b8fb642b7e393ab912b9be39e683c4232221698be537"
    assert (case.true_t_stage, case.true_n_stage, case.t_stage, case.n_stage) == ("T3", "N0", "T3", "N0")
    # A case built from its own Generator draws the same stages (the noise stream is derived, never drawn from).
    again = make_case(np.random.default_rng(case_seed_sequence(0, 0)), "small")
    assert (again.t_stage, again.n_stage) == (case.t_stage, case.n_stage)


def test_stage_counts_and_label_noise_of_seed_0() -> None:
    true, recorded, diameters = Counter(), Counter(), []
    for index in range(12):
        sequence = case_seed_sequence(0, index)
        rng = np.random.default_rng(sequence)
        _draw_clinical(rng)
        anatomy = _draw_anatomy(rng)
        measurements, _ = true_measurements(anatomy)
        diameters.append(measurements.primary_diameter_mm)
        assert measurements.n_nodes == anatomy.n_nodes
        t, n = true_stages(anatomy)
        true[t] += 1
        true[n] += 1
        rt, rn = recorded_stages(t, n, staging_seed_sequence(sequence))
        recorded[rt] += 1
        recorded[rn] += 1
    assert dict(true) == {"T2": 6, "T3": 6, "N0": 3, "N2": 9}
    assert recorded == true  # at 8 % noise the first 12 cases keep their 24 stages (seeds 0-23: one moves)
    assert 20.0 < min(diameters) and max(diameters) < 65.0  # 5 to 60 ml primaries: no T1 by size


def test_recorded_stages_move_one_step_within_the_generators_range() -> None:
    moved = Counter()
    for key in range(400):
        moved[recorded_stages("T2", "N2", np.random.SeedSequence(key), noise=0.5)] += 1
    # T2 and N2 are the ends of the range the anatomy can show (T2-T4, N0-N2): noise moves them inwards only.
    assert set(moved) == {("T2", "N2"), ("T3", "N2"), ("T2", "N1"), ("T3", "N1")}
    assert 150 < sum(v for (t, _), v in moved.items() if t == "T3") < 250
    middle = Counter(recorded_stages("T3", "N1", np.random.SeedSequence(key), noise=1.0)[0] for key in range(200))
    assert set(middle) == {"T2", "T4"} and 70 < middle["T4"] < 130


def test_2026_layout(tmp_path) -> None:
    summary = generate_cohort(tmp_path, 3, seed=0, edition_2026=True)
    folder = tmp_path / "Task 2026"
    with (folder / "HECKTOR_2026_Training.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == TASK2026_COLUMNS
    assert [r[0] for r in rows[1:]] == summary.patient_ids
    for row in rows[1:]:
        record = dict(zip(rows[0], row))
        assert parse_t_stage(record["T-stage"]) in T_STAGES and parse_n_stage(record["N-stage"]) in N_STAGES
        pid = record["PatientID"]
        for name in (f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz", f"{pid}.nii.gz"):
            assert (folder / pid / name).read_bytes() == (tmp_path / "Task 1" / pid / name).read_bytes()
    staging = json.loads((tmp_path / "cohort.json").read_text())["staging"]
    assert sum(staging["counts"]["recorded_t"].values()) == 3
    assert set(staging["rules_on_true_masks"]) == {"t_balanced_accuracy", "n_balanced_accuracy",
                                                    "t_balanced_accuracy_vs_true_stage",
                                                    "n_balanced_accuracy_vs_true_stage"}
    assert staging["rules_on_true_masks"]["n_balanced_accuracy_vs_true_stage"] == 1.0
