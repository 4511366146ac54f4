"""Tests of hecktor.folds: the stratified Task 2 folds, the Task 1 K-fold split, fold selection and folds.json."""

import json

import numpy as np
import pytest

from hecktor.errors import InputError
from hecktor.folds import kfold_split, load_folds, make_folds, save_folds, select_folds

# ------------------------------------------------------------------------------------------------ make_folds


def _centre_cohort(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.repeat(["CHUM", "CHUP", "HGJ", "MDA", "USZ"], [100, 80, 60, 50, 10])
    events = rng.random(len(centres)) < np.where(centres == "MDA", 0.5, 0.25)
    return events, centres


def test_folds_partition_and_are_stratified_by_event_and_centre():
    events, centres = _centre_cohort()
    folds = make_folds(events, n_folds=5, seed=0, groups=centres)
    assert len(folds) == 5
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals.tolist()) == list(range(len(events)))
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(events)
        assert len(val) == 60
        assert abs(events[val].sum() - events.sum() / 5) < 1  # an unstratified split strays by ~3.5 (1 SD)
        # Each (centre, event) stratum is shared out to within one patient of its fifth.
        for centre in ("CHUM", "CHUP", "HGJ", "MDA"):
            for status in (True, False):
                stratum = (centres == centre) & (events == status)
                assert abs(np.sum(stratum[val]) - stratum.sum() / 5) < 1


def test_folds_are_deterministic_and_depend_on_seed():
    events, centres = _centre_cohort()
    a = make_folds(events, 5, seed=3, groups=centres)
    b = make_folds(events, 5, seed=3, groups=centres)
    c = make_folds(events, 5, seed=4, groups=centres)
    assert all(np.array_equal(va, vb) for (_, va), (_, vb) in zip(a, b))
    assert not all(np.array_equal(va, vc) for (_, va), (_, vc) in zip(a, c))


def test_folds_handle_strata_smaller_than_the_number_of_folds():
    # Every centre is smaller than the number of folds, and one centre is missing (None).
    events = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0])
    centres = np.array(["A", "A", "B", "B", "C", "C", "D", "D", None, None] * 2, dtype=object)
    folds = make_folds(events, n_folds=5, seed=0, groups=centres)
    assert sorted(np.concatenate([va for _, va in folds]).tolist()) == list(range(20))
    assert sorted(events[val].sum() for _, val in folds) == [1, 1, 1, 2, 2]  # 7 events, within one of 7/5
    assert all(len(val) == 4 for _, val in folds)
    # Every (event, centre) stratum has at most 4 < 5 patients: no fold gets two of the same stratum.
    for centre in ("A", "B", "C", "D", None):
        for status in (0, 1):
            stratum = (centres == centre) & (events == status)
            assert all(np.sum(stratum[val]) <= 1 for _, val in folds)


def test_folds_reject_fewer_events_than_folds():
    with pytest.raises(InputError, match="only 3 events"):
        make_folds([1, 1, 1] + [0] * 20, n_folds=5)


def test_same_seed_gives_the_folds_that_hecktor_0_1_gave():
    """Pinned from hecktor.survival.make_folds and training/seg_trainer.split_folds before the move to hecktor.folds:
    runs keep their folds.json, and a rerun with the same seed trains on the same patients."""
    events = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1]
    folds = make_folds(events, 3, seed=7, groups=["A", "B"] * 6)
    assert [val.tolist() for _, val in folds] == [[1, 2, 3, 10], [0, 5, 6, 7], [4, 8, 9, 11]]
    ids = sorted(f"P{k:03d}" for k in range(23))
    split = kfold_split(ids, 5, seed=3)
    assert [val.tolist() for _, val in split] == [[12, 14, 15, 17, 21], [1, 2, 13, 16, 20], [4, 5, 6, 7, 19],
                                                 [9, 11, 18, 22], [0, 3, 8, 10]]


# ------------------------------------------------------------------------------------------------ kfold_split


def test_kfold_split_partitions_sorted_ids_and_is_sklearns_kfold():
    from sklearn.model_selection import KFold

    ids = sorted(f"P{k:03d}" for k in range(23))
    folds = kfold_split(ids, 5, seed=3)
    assert sorted(np.concatenate([val for _, val in folds]).tolist()) == list(range(23))
    assert all(np.intersect1d(train, val).size == 0 and len(train) + len(val) == 23 for train, val in folds)
    assert sorted(len(val) for _, val in folds) == [4, 4, 5, 5, 5]
    reference = KFold(n_splits=5, shuffle=True, random_state=3).split(np.zeros(23))
    assert all(np.array_equal(val, np.sort(ref)) for (_, val), (_, ref) in zip(folds, reference))
    assert all(val.dtype == np.int64 for _, val in folds)
    other = kfold_split(ids, 5, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_kfold_split_refuses_unsorted_ids_and_too_few_cases():
    with pytest.raises(ValueError, match="sorted"):
        kfold_split(["P2", "P1", "P3"], 2, seed=0)
    with pytest.raises(InputError, match="4 cases cannot make 5 folds"):
        kfold_split(["P1", "P2", "P3", "P4"], 5, seed=0)


# ------------------------------------------------------------------------------------------------ select_folds


def test_select_folds_checks_the_range():
    assert select_folds(None, 3) == [0, 1, 2]
    assert select_folds([2, 0], 3) == [2, 0]
    with pytest.raises(InputError, match=r"fold\(s\) \[3\] out of range 0..2"):
        select_folds([0, 3], 3)
    with pytest.raises(InputError, match="out of range"):
        select_folds([], 3)


# ------------------------------------------------------------------------------------------------ folds.json


def test_folds_json_round_trip_and_case_id_check(tmp_path):
    events, centres = _centre_cohort()
    folds = make_folds(events, 5, seed=0, groups=centres)
    ids = [f"CHUM-{i:03d}" for i in range(len(events))]
    path = tmp_path / "folds.json"
    save_folds(folds, path, case_ids=ids)
    loaded = load_folds(path, case_ids=ids)
    assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(folds, loaded))
    with pytest.raises(InputError, match="case ids differ"):
        load_folds(path, case_ids=ids[::-1])
    assert json.loads(path.read_text())["n_folds"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds.json"]  # written atomically: no temporary left
    (tmp_path / "bad.json").write_text('{"folds": [{"train": [1]}]}')
    with pytest.raises(InputError, match="bad.json"):
        load_folds(tmp_path / "bad.json")
