"""T/N staging (hecktor.staging): the 2026 table's stage cells, measurements of tiny phantom masks in physical space,
the AJCC 7th rules, their cut-offs fitted to a segmenter's masks, and the learned stage classifier's JSON round
trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.phantoms import DIRECTIONS, blank_image, paint
from hecktor.errors import BundleError
from hecktor.staging import AJCC_CUTOFFS, FEATURE_VERSIONS, N_STAGES, STAGING_FEATURES, T_STAGES, StageClassifier, \
    StagingCutoffs, StagingMeasurements, fit_cutoffs, measure_staging, n_stage_by_rules, parse_n_stage, \
    parse_t_stage, stage_by_rules, staging_features, t_stage_by_rules


@pytest.mark.parametrize("cell, stage", [("T1", "T1"), ("T4a", "T4"), ("t4b", "T4"), (" cT2 ", "T2"), (3, "T3"),
                                         (3.0, "T3"), ("Tx", None), ("", None), (None, None), ("T0", None),
                                         ("Tis", None), ("T5", None), ("N2", None), (2.5, None)])
def test_t_stage_cells(cell, stage) -> None:
    assert parse_t_stage(cell) == stage


@pytest.mark.parametrize("cell, stage", [("N0", "N0"), ("N2a", "N2"), ("N2b", "N2"), ("n2c", "N2"), ("N3b", "N3"),
                                         (1, "N1"), ("Nx", None), ("", None), (None, None), ("N4", None),
                                         ("T1", None), (True, None)])
def test_n_stage_cells(cell, stage) -> None:
    assert parse_n_stage(cell) == stage


def _case(direction: str, spheres, spacing=(2.0, 2.0, 2.0), size=(64, 40, 40)):
    """A CT (body: a 100 mm wide slab centred on x = 0) and a label map of spheres, on one grid centred at 0."""
    grid = blank_image(size, spacing, (0.0, 0.0, 0.0), DIRECTIONS[direction])
    body = paint(grid, [((x, 0.0, 0.0), 30.0, 40.0) for x in np.arange(-40.0, 41.0, 10.0)], background=-1000.0)
    label = paint(grid, spheres, pixel=sitk.sitkUInt8)
    return body, label


@pytest.mark.parametrize("direction", ["identity", "flipped_xy", "oblique"])
def test_measurements_in_physical_space(direction) -> None:
    # Primary of radius 11 mm on the patient's left (+x in LPS), a node of radius 6 mm further left, one of radius
    # 5 mm on the right: diameters 22, 12, 10 mm; the right one is contralateral whatever the grid's direction.
    ct, mask = _case(direction, [((12.0, 0, 0), 11.0, 1), ((45.0, 0, 0), 6.0, 2), ((-45.0, 0, 0), 5.0, 2)])
    m = measure_staging(mask, ct)
    assert m.primary_diameter_mm == pytest.approx(22.0, abs=2.1)
    assert m.node_diameters_mm == pytest.approx((12.0, 10.0), abs=2.1)
    assert m.node_sides == ("ipsilateral", "contralateral")
    assert stage_by_rules(m) == ("T2", "N2")
    # Without the CT the midline is unknown: nodes on both sides of the primary, the majority side is its own.
    assert measure_staging(mask).node_sides == ("ipsilateral", "contralateral")


def test_a_stray_island_does_not_stretch_the_primary() -> None:
    # A primary of radius 11 mm and a 4 mm island of GTVp 50 mm away: the primary is 22 mm across (T2), not the
    # 50 + 11 + 4 mm spanning both (T3), and its side is the big component's.
    ct, mask = _case("identity", [((-20.0, 0, 0), 11.0, 1), ((30.0, 0, 0), 4.0, 1), ((-45.0, 0, 0), 5.0, 2)])
    m = measure_staging(mask, ct)
    assert m.primary_diameter_mm == pytest.approx(22.0, abs=2.1)
    assert stage_by_rules(m) == ("T2", "N1")


def test_bone_against_the_primary() -> None:
    # A bone ball (1,000 HU) 1 mm from the primary's surface touches it; moved 6 mm away, it does not.
    ct, mask = _case("identity", [((0.0, 0, 0), 10.0, 1)], spacing=(1.0, 1.0, 1.0), size=(60, 40, 40))
    near = paint(ct, [((17.0, 0, 0), 6.0, 1000.0)], background=0.0)
    far = paint(ct, [((22.0, 0, 0), 6.0, 1000.0)], background=0.0)
    touching = measure_staging(mask, sitk.Maximum(ct, near))
    assert 0.010 <= touching.bone_contact_ml <= 0.025  # a 1 mm cap of the ball: about 18 mm^3
    assert measure_staging(mask, sitk.Maximum(ct, far)).bone_contact_ml == 0.0
    assert measure_staging(mask).bone_contact_ml == 0.0  # no CT, nothing measured
    assert stage_by_rules(touching) == ("T2", "N0")  # a touch is not invasion
    # A primary grown into bone has T4_BONE_CONTACT_ML (1 ml) of bone against it or more: the rules say T4.
    slab = paint(ct, [((12.0, 0, 0), 16.0, 1000.0)], background=0.0)
    invaded = measure_staging(mask, sitk.Maximum(ct, slab))
    assert invaded.bone_contact_ml >= 1.0 and stage_by_rules(invaded) == ("T4", "N0")
    assert t_stage_by_rules(StagingMeasurements(30.0, bone_contact_ml=0.99)) == "T2"
    assert t_stage_by_rules(StagingMeasurements(30.0, bone_contact_ml=1.0)) == "T4"


def test_measurements_of_an_empty_mask_and_a_missing_one() -> None:
    ct, mask = _case("identity", [])
    assert measure_staging(mask, ct) == StagingMeasurements(0.0)
    assert measure_staging(None) == StagingMeasurements(0.0)
    assert stage_by_rules(StagingMeasurements(0.0)) == ("T1", "N0")


@pytest.mark.parametrize("diameter, stage", [(0.0, "T1"), (20.0, "T1"), (20.1, "T2"), (40.0, "T2"), (40.5, "T3"),
                                             (90.0, "T3")])
def test_t_rules(diameter, stage) -> None:
    assert t_stage_by_rules(StagingMeasurements(diameter)) == stage


@pytest.mark.parametrize("nodes, sides, stage", [
    ((), (), "N0"),
    ((30.0,), ("ipsilateral",), "N1"),
    ((31.0,), ("ipsilateral",), "N2"),            # one ipsilateral node of 3-6 cm: N2a
    ((10.0,), ("contralateral",), "N2"),          # contralateral: N2c
    ((12.0, 8.0), ("ipsilateral", "ipsilateral"), "N2"),  # several ipsilateral: N2b
    ((61.0,), ("ipsilateral",), "N3"),
    ((61.0, 10.0), ("ipsilateral", "contralateral"), "N3"),
])
def test_n_rules(nodes, sides, stage) -> None:
    assert n_stage_by_rules(StagingMeasurements(25.0, nodes, sides)) == stage


def test_stage_classifier_learns_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    stages = np.where(x[:, 0] < -0.5, "T2", np.where(x[:, 0] < 0.7, "T3", "T4"))
    classifier = StageClassifier.fit(x, list(stages))
    assert classifier.classes == ("T2", "T3", "T4")
    predicted = np.asarray(classifier.classes)[classifier.probabilities(x).argmax(axis=1)]
    assert np.mean(predicted == stages) >= 0.9
    again = StageClassifier.from_dict(classifier.to_dict())
    np.testing.assert_allclose(again.probabilities_over(x[:2], ("T1", "T2", "T3", "T4"))[:, 1:],
                               classifier.probabilities(x[:2]))
    two = StageClassifier.fit(x, ["N0" if v < 0 else "N2" for v in x[:, 1]])
    assert two.coef.shape == (2, 3)
    assert np.mean((two.probabilities(x)[:, 1] > 0.5) == (x[:, 1] >= 0)) >= 0.9
    with pytest.raises(BundleError, match="do not fit together"):
        StageClassifier.from_dict({**classifier.to_dict(), "classes": ["T2", "T3"]}, "fold_0_t_stage.json")


def _staged_patients(n: int = 120, seed: int = 0) -> tuple[list[StagingMeasurements], list[str], list[str]]:
    """Patients measured on true masks, staged by AJCC's rules."""
    rng = np.random.default_rng(seed)
    measurements = []
    for _ in range(n):
        k = int(rng.integers(0, 3))
        measurements.append(StagingMeasurements(
            float(rng.uniform(10, 60)), tuple(sorted((float(v) for v in rng.uniform(10, 45, k)), reverse=True)),
            tuple("ipsilateral" for _ in range(k)), float(rng.choice([0.0, 0.0, 0.0, 2.5]))))
    stages = [stage_by_rules(m) for m in measurements]
    return measurements, [t for t, _ in stages], [n_ for _, n_ in stages]


def test_staging_features_hold_the_bone_and_the_rules_answers() -> None:
    features = staging_features(StagingMeasurements(45.0, (32.0, 12.0), ("ipsilateral", "contralateral"), 1.5))
    assert features.shape == (len(STAGING_FEATURES),)
    named = dict(zip(STAGING_FEATURES, features))
    assert named["primary_diameter_mm"] == 4.5 and named["largest_node_mm"] == 3.2
    assert named["bone_contact_ml"] == pytest.approx(np.log(2.5))
    assert (named["n_nodes"], named["contralateral_nodes"]) == (2, 1)
    assert [named[f"rules_{s}"] for s in T_STAGES] == [0, 0, 0, 1]  # 1.5 ml of bone: T4
    assert [named[f"rules_{s}"] for s in N_STAGES] == [0, 0, 1, 0]  # a contralateral node: N2


def test_learned_stager_finds_t4_where_the_masks_touch_less_bone() -> None:
    """Masks that reach less far into the bone (2.5 ml against a true T4 primary measured as 0.4 ml, under the rules'
    cut): the rules call those T4 patients T2/T3; the learned stager, which sees the bone itself, finds them, and
    stages N as the rules do."""
    def measured(patients):
        return [dataclasses.replace(m, bone_contact_ml=m.bone_contact_ml * 0.16) for m in patients]

    train, t_train, n_train = _staged_patients(240, seed=1)
    test, t_test, n_test = _staged_patients(120, seed=2)
    train, test = measured(train), measured(test)
    assert t_test.count("T4") >= 10 and not any(t_stage_by_rules(m) == "T4" for m in test)
    for stages_train, stages_test, order in ((t_train, t_test, T_STAGES), (n_train, n_test, N_STAGES)):
        classifier = StageClassifier.fit(np.stack([staging_features(m) for m in train]), stages_train)
        probabilities = classifier.probabilities_over(np.stack([staging_features(m) for m in test]), order)
        predicted = np.asarray([order[j] for j in probabilities.argmax(axis=1)])
        assert np.mean(predicted == np.asarray(stages_test)) >= 0.95
        if order == T_STAGES:
            assert np.mean(predicted[np.asarray(stages_test) == "T4"] == "T4") >= 0.9


def test_stage_classifiers_keep_the_features_version_they_were_trained_on() -> None:
    """A classifier written without ``features_version`` (exported before it existed) takes version 1's six features;
    one written now says version 2; an unknown version is refused."""
    measurements = StagingMeasurements(45.0, (32.0,), ("ipsilateral",), 1.5)
    assert staging_features(measurements, 1).tolist() == [4.5, 1, 3.2, 0, 4, 2]  # T4 (bone) and N2 (32 mm), ordinal
    assert len(staging_features(measurements)) == len(FEATURE_VERSIONS[2]) == len(STAGING_FEATURES)
    x = np.random.default_rng(0).normal(size=(20, len(STAGING_FEATURES)))
    saved = StageClassifier.fit(x, ["T2"] * 10 + ["T3"] * 10).to_dict()
    assert saved["features_version"] == 2 and StageClassifier.from_dict(saved).features_version == 2
    before = {k: v for k, v in saved.items() if k != "features_version"}
    assert StageClassifier.from_dict(before).features_version == 1
    with pytest.raises(BundleError, match="features_version must be one of"):
        StageClassifier.from_dict({**saved, "features_version": 3}, "fold_0_t_stage.json")
    with pytest.raises(ValueError, match="version must be one of"):
        staging_features(measurements, 3)


def test_cutoffs_fitted_to_true_masks_are_ajccs() -> None:
    """Where the masks measure what the clinician measured, nothing beats AJCC's cut-offs, and ties go to them."""
    measurements, t_stages, n_stages = _staged_patients()
    assert fit_cutoffs(measurements, t_stages, n_stages) == AJCC_CUTOFFS
    # Unknown stages are left out; no known stage at all keeps AJCC's.
    assert fit_cutoffs(measurements, [None] * len(measurements), [None] * len(measurements)) == AJCC_CUTOFFS


def test_cutoffs_fitted_to_shrunken_masks_move_with_them() -> None:
    """A segmenter that draws everything at 0.8 of its diameter and touches a fifth of the bone: the fitted
    cut-offs move down with it, and stage those masks as AJCC's rules stage the true ones."""
    measurements, t_stages, n_stages = _staged_patients()
    shrunk = [StagingMeasurements(m.primary_diameter_mm * 0.8, tuple(d * 0.8 for d in m.node_diameters_mm),
                                  m.node_sides, m.bone_contact_ml * 0.2) for m in measurements]
    fitted = fit_cutoffs(shrunk, t_stages, n_stages)
    assert 0.75 <= fitted.t2_max_mm / 40.0 <= 0.85 and 0.75 <= fitted.n1_max_mm / 30.0 <= 0.85
    assert fitted.t1_max_mm / fitted.t2_max_mm == pytest.approx(0.5)  # AJCC's ratio kept
    assert fitted.t4_bone_contact_ml <= 0.5
    assert [stage_by_rules(m, fitted) for m in shrunk] == list(zip(t_stages, n_stages))
    ajcc = [stage_by_rules(m) for m in shrunk]
    assert sum(a != (t, n) for a, t, n in zip(ajcc, t_stages, n_stages)) > 20  # what AJCC's cut-offs get wrong


def test_cutoffs_round_trip_and_refuse_what_does_not_fit() -> None:
    cutoffs = StagingCutoffs(18.0, 36.0, 0.5, 27.0, 54.0)
    assert StagingCutoffs.from_dict(cutoffs.to_dict()) == cutoffs
    assert t_stage_by_rules(StagingMeasurements(37.0), cutoffs) == "T3"
    assert t_stage_by_rules(StagingMeasurements(37.0)) == "T2"
    for broken, message in (({**cutoffs.to_dict(), "t1_max_mm": 40.0}, "T1 cut must lie below"),
                            ({**cutoffs.to_dict(), "n2_max_mm": -1}, "positive number"),
                            ({**cutoffs.to_dict(), "t4_bone_contact_ml": "1"}, "positive number"),
                            ({"t1_max_mm": 20.0}, "exactly")):
        with pytest.raises(BundleError, match=message):
            StagingCutoffs.from_dict(broken, "model.json staging_cutoffs")
