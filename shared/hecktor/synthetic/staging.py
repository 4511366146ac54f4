"""The T and N stage of a synthetic patient (HECKTOR 2026), read from its own primary and nodes by the AJCC 7th rules
(:mod:`hecktor.staging`), then recorded with a little label noise.

**True stage** (:func:`true_stages`), from the analytic shapes, before any image is painted:

* T: the primary's greatest diameter, the largest distance between two points of its union of ellipsoids (each
  ellipsoid's surface sampled at :data:`_SURFACE_POINTS` fixed directions): <= 20 mm T1, <= 40 mm T2, > 40 mm T3;
  **T4** when the primary *invades* its neighbourhood, which the generator marks geometrically (no random draw):
  the primary reaches more than :data:`INVASION_DEPTH_MM` into the mandible.
* N: the nodes as drawn (each node's greatest diameter is twice its largest radius; ipsilateral when drawn on the
  primary's side of the midline): none N0, any > 60 mm N3, one ipsilateral <= 30 mm N1, otherwise N2.

**Recorded stage** (:func:`recorded_stages`): staging by a clinician disagrees with image measurement, so each stage
is moved one step up or down with probability :data:`STAGE_NOISE`, independently for T and N, within the stages the
generator's anatomy can show (:data:`SYNTHETIC_T_STAGES`, :data:`SYNTHETIC_N_STAGES`: its primaries of 5-60 ml are at
least 23 mm across, so never T1, and its nodes of at most 10 ml never N3): noise that made a T1 or an N3 would add a
class no image holds a trace of, which no stager could learn and which would weigh a whole class in a balanced
accuracy.
The noise is drawn from a stream of its own, :func:`staging_seed_sequence` (the case's seed sequence with one more
spawn key), so that no draw of the existing cohort changes: every case's images, record and survival are
bit-identical to the generator's before staging existed.

Relapse depends on stage as in the clinic without a stage term in the hazard: the true hazard
(:mod:`hecktor.synthetic.outcomes`) rises with the primary's volume (hence its diameter, hence T) and with the
number of nodes (hence N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hecktor.staging import N_STAGES, T_STAGES, StagingMeasurements, n_stage_by_rules, t_stage_by_rules

__all__ = ["INVASION_DEPTH_MM", "STAGE_NOISE", "STAGING_STREAM", "SYNTHETIC_N_STAGES", "SYNTHETIC_T_STAGES",
           "recorded_stages", "rules_on_true_masks",
           "stage_balanced_accuracy", "staging_seed_sequence", "true_measurements", "true_stages"]

STAGE_NOISE = 0.08
"""Probability that the recorded T (and, independently, N) stage is one step off the true one."""
INVASION_DEPTH_MM = 1.0
"""The primary invades (T4) when it reaches more than this far into the mandible."""
STAGING_STREAM = 2026
"""The extra spawn key of the staging noise's random stream."""
SYNTHETIC_T_STAGES = T_STAGES[1:]
SYNTHETIC_N_STAGES = N_STAGES[:3]
"""The stages the generator's anatomy can produce, the range of the label noise."""
_SURFACE_POINTS = 256


def staging_seed_sequence(case_sequence: np.random.SeedSequence) -> np.random.SeedSequence:
    """The staging noise's own stream, derived from the case's seed sequence (no draw from the case's stream)."""
    return np.random.SeedSequence(case_sequence.entropy,
                                  spawn_key=(*case_sequence.spawn_key, STAGING_STREAM))


def _unit_sphere(n: int = _SURFACE_POINTS) -> np.ndarray:
    """``n`` nearly uniform fixed directions (a Fibonacci lattice), ``(n, 3)``."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / n)
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def _surface(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Points on the surfaces of the primary's ellipsoids (anatomy frame), ``(len(parts) * n, 3)``."""
    unit = _unit_sphere()
    return np.concatenate([centre + (unit * radii) @ rotation.T for centre, radii, rotation in parts])


def _greatest_diameter(points: np.ndarray) -> float:
    """The largest distance between two of ``points`` (a union of convex parts: attained on their surfaces)."""
    difference = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((difference ** 2).sum(axis=2).max()))


def true_measurements(anatomy) -> tuple[StagingMeasurements, bool]:
    """The true staging measurements of a drawn :class:`~hecktor.synthetic.phantom._Anatomy` and whether its primary
    invades the mandible."""
    surface = _surface(anatomy.tumour_parts)
    depth = -float(np.min(anatomy.mandible_distance(*(surface[:, a].astype(np.float32) for a in range(3)))))
    nodes = sorted(((2.0 * float(np.max(radii)), ipsilateral) for _, radii, ipsilateral in anatomy.node_shapes),
                   key=lambda node: -node[0])
    measurements = StagingMeasurements(_greatest_diameter(surface), tuple(d for d, _ in nodes),
                                       tuple("ipsilateral" if same else "contralateral" for _, same in nodes))
    return measurements, depth > INVASION_DEPTH_MM


def true_stages(anatomy) -> tuple[str, str]:
    """(T, N) of the drawn anatomy by the AJCC 7th rules (T4 for an invading primary)."""
    measurements, invades = true_measurements(anatomy)
    return ("T4" if invades else t_stage_by_rules(measurements)), n_stage_by_rules(measurements)


def recorded_stages(t_stage: str, n_stage: str, sequence: np.random.SeedSequence,
                    noise: float = STAGE_NOISE) -> tuple[str, str]:
    """The stages as a clinician records them: each one step off with probability ``noise`` (from the staging
    stream ``sequence``; the direction is random, and a stage at the end of the generator's range moves inwards)."""
    rng = np.random.default_rng(sequence)
    recorded = []
    for stage, stages in ((t_stage, SYNTHETIC_T_STAGES), (n_stage, SYNTHETIC_N_STAGES)):
        flip, up = rng.random() < noise, rng.random() < 0.5
        if stage not in stages:  # cannot happen with the generator's anatomy; kept as measured
            recorded.append(stage)
            continue
        index = stages.index(stage)
        if flip:
            index = index + 1 if (up and index < len(stages) - 1) or index == 0 else index - 1
        recorded.append(stages[index])
    return recorded[0], recorded[1]


def stage_balanced_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Balanced accuracy (the mean recall over the stages present in ``truth``), the challenge's staging metric;
    a predicted stage that no case has counts as a miss, never as a class of its own."""
    present = sorted(set(truth))
    recalls = [np.mean([p == stage for t, p in zip(truth, predicted) if t == stage]) for stage in present]
    return float(np.mean(recalls))


def rules_on_true_masks(rows: Sequence[tuple[str, str, str, str, str, str]]) -> dict[str, object]:
    """``cohort.json``'s staging block from each case's (rules' T, rules' N on the true mask, recorded T, recorded
    N, true T, true N): the stage counts and the rules' balanced accuracy on the true masks (the ceiling of a stager
    that measures a mask as the rules do) against the recorded and the true stages."""
    columns = list(zip(*rows))
    rule_t, rule_n, recorded_t, recorded_n, true_t, true_n = columns
    counts = {name: {stage: values.count(stage) for stage in stages}
              for name, values, stages in (("recorded_t", recorded_t, T_STAGES), ("recorded_n", recorded_n, N_STAGES),
                                           ("true_t", true_t, T_STAGES), ("true_n", true_n, N_STAGES))}
    return {
        "counts": counts,
        "rules_on_true_masks": {
            "t_balanced_accuracy": stage_balanced_accuracy(recorded_t, rule_t),
            "n_balanced_accuracy": stage_balanced_accuracy(recorded_n, rule_n),
            "t_balanced_accuracy_vs_true_stage": stage_balanced_accuracy(true_t, rule_t),
            "n_balanced_accuracy_vs_true_stage": stage_balanced_accuracy(true_n, rule_n),
        },
    }
