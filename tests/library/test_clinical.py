"""hecktor.clinical: ClinicalEncoder and normalize_ehr."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from hecktor.clinical import (
    DEFAULT_FEATURES,
    ClinicalEncoder,
    normalize_ehr,
    normalize_level,
    parse_number,
    sanitize_ehr,
    unseen_values,
)
from hecktor.errors import BundleError, InputError
from helpers.paths import REAL_DATA

# The workspace's real clinical table (helpers.paths.REAL_DATA), absent in some checkouts (then skipped).
REAL_TABLE = REAL_DATA / "clinical" / "tcia_hn1_hecktor2025_columns.csv"

TRAIN = [
    {"Age": 50, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1, "Performance Status": 0,
     "Treatment": 0, "M-stage": "M0"},
    {"Age": 60, "Gender": 0, "Tobacco Consumption": 1, "Alcohol Consumption": 0, "Performance Status": 1,
     "Treatment": 1, "M-stage": "M0"},
    {"Age": 70, "Gender": 1, "Tobacco Consumption": None, "Alcohol Consumption": 1, "Performance Status": 2,
     "Treatment": 1, "M-stage": "M1"},
    {"Age": None, "Gender": 1, "Tobacco Consumption": 1, "Alcohol Consumption": None, "Performance Status": 10,
     "Treatment": 0, "M-stage": "Mx"},
]


def _fitted() -> ClinicalEncoder:
    return ClinicalEncoder().fit(TRAIN)


def _block(encoder: ClinicalEncoder, row: np.ndarray, feature: str) -> dict[str, float]:
    """The columns of one feature of an encoded row, by column name."""
    return {n: float(v) for n, v in zip(encoder.feature_names, row) if n == feature or n.startswith(feature + "=")}


def test_feature_layout():
    encoder = _fitted()
    assert encoder.feature_names == [
        "Age",
        "Gender=0", "Gender=1", "Gender=Unknown",
        "Tobacco Consumption=0", "Tobacco Consumption=1", "Tobacco Consumption=Unknown",
        "Alcohol Consumption=0", "Alcohol Consumption=1", "Alcohol Consumption=Unknown",
        # numeric order: "10" after "2"
        "Performance Status=0", "Performance Status=1", "Performance Status=2", "Performance Status=10",
        "Performance Status=Unknown",
        "Treatment=0", "Treatment=1", "Treatment=Unknown",
        "M-stage=M0", "M-stage=M1", "M-stage=MX", "M-stage=Unknown",
    ]
    assert encoder.n_features == 22
    x = encoder.transform(TRAIN)
    assert x.dtype == np.float32 and x.shape == (4, 22)
    # each categorical block is one-hot in every row; missing training values land in Unknown
    assert np.all(x[:, 1:].sum(axis=1) == 6)
    assert _block(encoder, x[2], "Tobacco Consumption")["Tobacco Consumption=Unknown"] == 1.0


def test_age_is_median_imputed_and_standardised_with_training_statistics_only():
    encoder = _fitted()
    # observed ages 50, 60, 70 -> median 60; imputed column 50, 60, 70, 60 -> mean 60, std sqrt(50)
    assert encoder.numeric_stats["Age"] == {"median": 60.0, "mean": 60.0, "std": pytest.approx(math.sqrt(50))}
    test_rows = [{"Age": 90}, {"Age": None}, {"Age": 30}]
    x = encoder.transform(test_rows)
    np.testing.assert_allclose(x[:, 0], [30 / math.sqrt(50), 0.0, -30 / math.sqrt(50)], rtol=1e-6)
    # transforming other data never refits
    assert encoder.numeric_stats["Age"]["median"] == 60.0
    # the same test rows under an encoder fitted on different training rows give different numbers
    other = ClinicalEncoder().fit([{"Age": 50}, {"Age": 60}, {"Age": 100}, {"Age": None}])
    # median 60; statistics of the imputed column 50, 60, 100, 60 (not of the observed values: mean 70)
    assert other.numeric_stats["Age"] == {"median": 60.0, "mean": 67.5, "std": pytest.approx(math.sqrt(368.75))}
    assert other.transform([{"Age": None}])[0, 0] == pytest.approx(-7.5 / math.sqrt(368.75))


def test_age_parsing_is_tolerant_and_never_raises():
    encoder = _fitted()
    spellings = [56, 56.0, "56", "56.0", " 56 ", np.int64(56), np.float32(56.0)]
    rows = encoder.transform([{"Age": a} for a in spellings])
    assert np.all(rows == rows[0])
    assert rows[0, 0] == pytest.approx((56 - 60) / math.sqrt(50))
    missing = encoder.transform([{"Age": v} for v in (None, float("nan"), "", "abc", "inf", [56], {})] + [{}])
    assert np.all(missing[:, 0] == 0.0)  # the training median, standardised
    assert parse_number("abc") is None and parse_number(" 7.5 ") == 7.5 and parse_number(True) == 1.0


def test_tolerant_spellings_give_identical_rows():
    encoder = _fitted()
    base = {"Age": 60, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1, "Performance Status": 0,
            "Treatment": 1, "M-stage": "M0"}
    expected = encoder.transform([base])[0]
    for key, spellings in {
        "Gender": [1, 1.0, "1", " 1 ", "1.0", True, np.int64(1), np.float64(1.0), "true"],
        "Tobacco Consumption": [0, 0.0, "0", False, " 0.0 ", "FALSE"],
        "M-stage": ["M0", "m0", " m0 ", "M0 "],
    }.items():
        for spelling in spellings:
            row = encoder.transform([{**base, key: spelling}])[0]
            np.testing.assert_array_equal(row, expected, err_msg=f"{key}={spelling!r}")


def test_missing_and_unseen_values_go_to_the_unknown_column_only():
    encoder = _fitted()
    base = {"Age": 60, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1, "Performance Status": 0,
            "Treatment": 1, "M-stage": "M0"}
    missing_like = [None, float("nan"), "", "   ", "NaN", "null", "N/A", "unknown", [1], {"a": 1}]
    unseen = [2, "2", 0.5, "female", "M2"]
    for value in missing_like + unseen + ["<missing key>"]:
        record = dict(base)
        if value == "<missing key>":
            del record["Gender"]
        else:
            record["Gender"] = value
        row = encoder.transform([record])[0]
        assert _block(encoder, row, "Gender") == {"Gender=0": 0.0, "Gender=1": 0.0, "Gender=Unknown": 1.0}, value
        # nothing else moves
        others = [i for i, n in enumerate(encoder.feature_names) if not n.startswith("Gender=")]
        np.testing.assert_array_equal(row[others], encoder.transform([base])[0][others])
    # unseen M-stage and Performance Status levels too
    row = encoder.transform([{**base, "M-stage": "M3", "Performance Status": 4}])[0]
    assert _block(encoder, row, "M-stage")["M-stage=Unknown"] == 1.0
    assert _block(encoder, row, "Performance Status")["Performance Status=Unknown"] == 1.0
    assert normalize_level(" mx ") == "MX" and normalize_level(2.5) == "2.5" and normalize_level("nan") is None


def test_missing_spellings_in_training_do_not_become_levels():
    rows = [{"M-stage": v} for v in ("M0", "unknown", "Unknown", "N/A", "null", "None", "nan", "", " ", None)]
    encoder = ClinicalEncoder(features=("M-stage",), numeric=()).fit(rows)
    assert encoder.feature_names == ["M-stage=M0", "M-stage=Unknown"]
    assert encoder.transform(rows)[:, 1].sum() == 9


def test_extra_keys_empty_records_single_mapping_and_none():
    encoder = _fitted()
    record = {**TRAIN[0], "CenterID": 5, "PatientID": "CHUM-001", "HPV Status": 1, "RFS": 1000}
    np.testing.assert_array_equal(encoder.transform([record]), encoder.transform([TRAIN[0]]))
    np.testing.assert_array_equal(encoder.transform(TRAIN[0]), encoder.transform([TRAIN[0]]))  # one mapping = one row
    all_unknown = encoder.transform([{}])
    np.testing.assert_array_equal(encoder.transform([None]), all_unknown)  # an absent ehr.json
    assert all_unknown[0, 0] == 0.0
    assert all_unknown[0, [n.endswith("=Unknown") for n in encoder.feature_names]].tolist() == [1.0] * 6
    assert encoder.transform([]).shape == (0, 22)
    with pytest.raises(TypeError, match="record 1 is a list"):
        encoder.transform([{}, [1, 2]])


def test_use_before_fit_and_bad_configuration_are_clear_errors():
    encoder = ClinicalEncoder()
    with pytest.raises(RuntimeError, match="not fitted"):
        encoder.transform(TRAIN)
    with pytest.raises(RuntimeError, match="not fitted"):
        _ = encoder.feature_names
    with pytest.raises(RuntimeError, match="not fitted"):
        encoder.to_dict()
    with pytest.raises(ValueError, match="zero records"):
        encoder.fit([])
    with pytest.raises(ValueError, match="not in features"):
        ClinicalEncoder(features=("Gender",), numeric=("Age",))
    with pytest.raises(TypeError, match="single string"):
        ClinicalEncoder(features="Age")


def test_caller_declares_numeric_and_categorical_features():
    rows = [{"Age": 50, "Performance Status": 0, "HPV Status": 1},
            {"Age": 70, "Performance Status": 2, "HPV Status": "0"}]
    encoder = ClinicalEncoder(features=("Age", "Performance Status", "HPV Status"),
                              numeric=("Age", "Performance Status")).fit(rows)
    assert encoder.feature_names == ["Age", "Performance Status", "HPV Status=0", "HPV Status=1", "HPV Status=Unknown"]
    np.testing.assert_allclose(encoder.transform(rows), [[-1, -1, 0, 1, 0], [1, 1, 1, 0, 0]])
    # a constant numeric column keeps std 1 instead of dividing by zero; an all-missing one encodes as 0
    constant = ClinicalEncoder(features=("Age", "Tobacco Consumption"), numeric=("Age", "Tobacco Consumption"))
    x = constant.fit_transform([{"Age": 55}, {"Age": 55, "Tobacco Consumption": None}])
    assert constant.numeric_stats["Age"]["std"] == 1.0
    np.testing.assert_array_equal(x, np.zeros((2, 2), np.float32))


def test_save_load_round_trip_is_exact_json(tmp_path):
    encoder = _fitted()
    probe = TRAIN + [{"Age": "61.5", "Gender": "2", "M-stage": "m1"}, {}]
    path = encoder.save(tmp_path / "bundle" / "clinical_encoder.json")
    data = json.loads(path.read_text())  # plain JSON, no pickle
    assert data["format"] == "hecktor.ClinicalEncoder" and data["feature_names"] == encoder.feature_names
    loaded = ClinicalEncoder.load(path)
    np.testing.assert_array_equal(loaded.transform(probe), encoder.transform(probe))
    assert loaded.feature_names == encoder.feature_names and loaded.features == DEFAULT_FEATURES
    again = ClinicalEncoder.from_dict(encoder.to_dict())
    np.testing.assert_array_equal(again.transform(probe), encoder.transform(probe))


def test_load_rejects_missing_and_malformed_files(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        ClinicalEncoder.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        ClinicalEncoder.load(bad)
    data = _fitted().to_dict()
    del data["levels"]["Gender"]
    bad.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="incomplete or malformed"):
        ClinicalEncoder.load(bad)
    data = _fitted().to_dict()
    data["levels"]["Gender"].append("9")
    bad.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="feature_names do not match"):
        ClinicalEncoder.load(bad)
    with pytest.raises(BundleError, match="not a saved ClinicalEncoder"):
        ClinicalEncoder.from_dict({"features": ["Age"]})


def test_dataframe_input_matches_records():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(TRAIN)  # None becomes NaN in numeric columns
    assert frame["Age"].isna().sum() == 1
    from_frame = ClinicalEncoder().fit(frame)
    from_records = _fitted()
    assert from_frame.to_dict() == from_records.to_dict()
    np.testing.assert_array_equal(from_frame.transform(frame), from_records.transform(TRAIN))


def test_normalize_ehr():
    raw = {"CenterID": 5, "Age": 56, "Gender": 1, "M-stage": "M0", "odd key ": None}
    out = normalize_ehr(raw)
    assert out == raw and out is not raw
    with pytest.raises(InputError, match=r"^ehr\.json must hold a JSON object, got list$"):
        normalize_ehr([raw])
    with pytest.raises(InputError, match="got null"):
        normalize_ehr(None)
    with pytest.raises(InputError, match=r"^/input/ehr\.json must hold a JSON object, got str$"):
        normalize_ehr("Age: 56", source="/input/ehr.json")


def test_real_hn1_table_encodes_with_the_expected_columns():
    if not REAL_TABLE.is_file():
        pytest.skip(f"real clinical table absent: {REAL_TABLE.resolve()}")
    with REAL_TABLE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))  # every value a string, empty cells ""
    assert len(rows) == 137
    encoder = ClinicalEncoder()
    x = encoder.fit_transform(rows)
    # Age 1; Gender 0/1 +U = 3; Tobacco, Alcohol never recorded: U only = 1 + 1; Performance Status 0-3 +U = 5;
    # Treatment 0/1 +U = 3; M-stage M0/M1 +U = 3
    assert x.shape == (137, 17) and encoder.n_features == 17
    assert encoder.levels == {"Gender": ["0", "1"], "Tobacco Consumption": [], "Alcohol Consumption": [],
                              "Performance Status": ["0", "1", "2", "3"], "Treatment": ["0", "1"],
                              "M-stage": ["M0", "M1"]}
    assert np.isfinite(x).all()
    assert x[:, 0].mean() == pytest.approx(0.0, abs=1e-5) and x[:, 0].std() == pytest.approx(1.0, abs=1e-5)
    names = encoder.feature_names
    assert x[:, names.index("Performance Status=Unknown")].sum() == 10  # the ten empty cells
    assert x[:, names.index("Tobacco Consumption=Unknown")].sum() == 137
    # The interface's sample ehr.json encodes against it (Tobacco 0 unseen in this table -> Unknown).
    ehr = normalize_ehr({"CenterID": 5, "Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1,
                         "Performance Status": 0, "Treatment": 0, "M-stage": "M0"})
    row = encoder.transform([ehr])[0]
    assert row[names.index("Gender=1")] == 1 and row[names.index("M-stage=M0")] == 1
    assert row[names.index("Tobacco Consumption=Unknown")] == 1 and row[names.index("Performance Status=0")] == 1


# ------------------------------------------------------------------------------------------- test-time records


def test_sanitize_ehr_renames_keys_and_drops_implausible_values():
    raw = {"age": 22630, "GENDER": 1, "m_stage": "M0", "Tobacco Consumption": 0, "tobacco consumption": 1,
           "Performance Status": [[[0]]], "note": "kept"}
    checked = sanitize_ehr(raw)
    assert checked.record == {"Tobacco Consumption": 0, "note": "kept", "Age": None, "Gender": 1, "M-stage": "M0",
                              "Performance Status": None}
    assert checked.problems == ["ehr.json: Age 22630 is outside 0-120 years",
                                "ehr.json: Performance Status is [[[...]]], not a single value"]
    assert checked.warnings == [
        "ehr.json: key 'age' read as 'Age'", "ehr.json: key 'GENDER' read as 'Gender'",
        "ehr.json: key 'm_stage' read as 'M-stage'",
        "ehr.json: key 'tobacco consumption' ignored: 'Tobacco Consumption' is also given",
        "ehr.json: Age 22630 is outside 0-120 years: treated as unknown",
        "ehr.json: Performance Status is [[[...]]], not a single value: treated as unknown"]
    again = sanitize_ehr(checked.record)
    assert again.record == checked.record and again.warnings == [] and again.problems == []


@pytest.mark.parametrize("age, problem", [
    (56, None), ("56", None), (0, None), (120.0, None), (None, None), (float("nan"), None),
    (-1, "is outside 0-120 years"), (121, "is outside 0-120 years"), (1e308, "is outside 0-120 years"),
    (10**400, "is outside 0-120 years"), (float("inf"), "is not a finite number of years"),
    ("fifty", "is not a finite number of years"), (True, "is not a finite number of years"),
    ({"value": 56}, "not a single value"),
])
def test_age_plausibility(age, problem):
    checked = sanitize_ehr({"Age": age})
    assert [problem in p for p in checked.problems] == ([] if problem is None else [True])
    assert checked.record["Age"] == (None if problem is not None or age is None or age != age else age)
    x = ClinicalEncoder().fit(TRAIN).transform([checked.record])
    assert np.isfinite(x).all() and abs(x[0, 0]) < 10  # never a standardised age of 1e306


def test_huge_integers_and_deep_values_never_raise():
    huge = 10**400
    assert parse_number(huge) is None and normalize_level(huge) == "1" + "0" * 400
    assert parse_number(np.float64("inf")) is None and parse_number("1e999") is None
    encoder = _fitted()
    row = encoder.transform([{"Age": huge, "Gender": huge, "M-stage": [[["M0"]]]}])[0]
    assert np.isfinite(row).all() and _block(encoder, row, "Gender")["Gender=Unknown"] == 1.0


def test_unseen_values_name_the_codes_the_model_knows():
    encoders = [ClinicalEncoder().fit(TRAIN[:2]), ClinicalEncoder().fit(TRAIN[2:])]
    record = {"Gender": "female", "M-stage": "m1", "Performance Status": 7, "Treatment": None, "Age": 300}
    assert unseen_values(encoders, record) == [
        "ehr.json: Gender 'female' is not a code the model knows (0, 1): encoded as Unknown",
        "ehr.json: Performance Status 7 is not a code the model knows (0, 1, 2, 10): encoded as Unknown"]
    # M1 is known to the second encoder only: known to the model
    assert unseen_values(encoders, {"Gender": 1, "M-stage": "M1"}) == []
