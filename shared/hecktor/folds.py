"""Cross-validation folds of both tasks, and the ``folds.json`` file that records a split in a training run.

* :func:`make_folds`: Task 2 (and any task with an event to balance): folds stratified by event and centre.
* :func:`kfold_split`: Task 1: a seeded K-fold split of the sorted case ids (there is no event to stratify on).
* :func:`save_folds` / :func:`load_folds`: a split as JSON, with the case ids it was made for.
* :func:`select_folds`: which folds of a split to train (``--fold K[,K...]|all`` of both training CLIs).

A split is a list of ``(train_idx, val_idx)`` pairs of sorted int64 index arrays into the cohort's case order; the
validation sets partition the cohort.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.errors import InputError
from hecktor.outputs import write_text_atomic

__all__ = ["make_folds", "kfold_split", "select_folds", "save_folds", "load_folds"]


def make_folds(
    events: Sequence[int] | np.ndarray, n_folds: int = 5, seed: int = 0, groups: Sequence[Any] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic cross-validation folds stratified by event status, and by centre where ``groups`` is given.

    The stratum of a patient is (event status, centre). Each stratum is shuffled and dealt to the folds
    round-robin, the dealing continuing from one stratum to the next, with the event strata adjacent. Hence,
    whatever the stratum sizes (a centre of 2 patients needs no special case):

    * every stratum, e.g. "events of centre CHUP", is split among the folds to within one patient;
    * the folds' numbers of events, and their sizes, differ by at most one.

    Dealing is written here rather than taken from sklearn's ``StratifiedKFold`` because the latter balances each
    stratum separately, so with centre x event strata the folds' event totals can drift by several patients.

    Args:
        events: per-patient event indicator.
        n_folds: number of folds.
        seed: shuffling seed; the same inputs and seed always give the same folds.
        groups: optional per-patient centre labels; missing ones (None/NaN) form an "unknown" centre.

    Returns:
        ``n_folds`` pairs ``(train_idx, val_idx)`` of sorted int64 index arrays; the validation sets partition
        ``range(n)``.

    Raises:
        InputError: fewer patients or fewer events than folds (a fold without events has no C-index).
    """
    events = np.asarray(events).astype(bool).ravel()
    n = len(events)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} patients")
    if n < n_folds:
        raise InputError(f"{n} patients cannot make {n_folds} folds; use fewer folds")
    if events.sum() < n_folds:
        raise InputError(
            f"only {int(events.sum())} events for {n_folds} folds: a fold without events has no C-index; "
            "use fewer folds"
        )
    if groups is None:
        centres = np.full(n, "all")
    else:
        missing = [g is None or (isinstance(g, float) and np.isnan(g)) for g in groups]
        centres = np.array(["unknown" if absent else str(g) for g, absent in zip(groups, missing)])

    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    next_fold = 0
    for status, centre in sorted(set(zip(events.tolist(), centres.tolist()))):  # censored strata, then events
        members = rng.permutation(np.flatnonzero((events == status) & (centres == centre)))
        fold_of[members] = (next_fold + np.arange(len(members))) % n_folds
        next_fold = (next_fold + len(members)) % n_folds
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)]


def kfold_split(case_ids: Sequence[str], n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """A seeded K-fold split over sorted case ids (sklearn's shuffled ``KFold``): Task 1 has no event to stratify on.

    Args:
        case_ids: the cohort's case ids, sorted (the order of ``list_training_cases``).
        n_folds: number of folds.
        seed: shuffling seed; the same ids and seed always give the same folds.

    Raises:
        ValueError: ``case_ids`` is not sorted (indices would then mean other cases than in the run's order).
        InputError: fewer cases than folds.
    """
    from sklearn.model_selection import KFold  # sklearn comes with scikit-survival; imported late as it is slow

    ids = sorted(case_ids)
    if list(case_ids) != ids:
        raise ValueError("case ids must be sorted")
    if len(ids) < n_folds:
        raise InputError(f"{len(ids)} cases cannot make {n_folds} folds; use fewer folds (--folds)")
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = splitter.split(np.zeros(len(ids)))
    return [(np.sort(tr).astype(np.int64), np.sort(va).astype(np.int64)) for tr, va in splits]


def select_folds(folds: Sequence[int] | None, n_folds: int) -> list[int]:
    """The fold indices to train: ``folds`` checked against ``0 .. n_folds - 1``, or all of them for ``None``.

    Raises:
        InputError: an empty selection or an index out of range.
    """
    if folds is None:
        return list(range(n_folds))
    chosen = [int(k) for k in folds]
    bad = [k for k in chosen if not 0 <= k < n_folds]
    if bad or not chosen:
        raise InputError(f"fold(s) {bad or '[]'} out of range 0..{n_folds - 1} (--fold of a {n_folds}-fold split)")
    return chosen


def save_folds(
    folds: Sequence[tuple[np.ndarray, np.ndarray]], path: str | Path, case_ids: Sequence[str] | None = None
) -> None:
    """Write folds as JSON (atomically); with ``case_ids`` the file also records which patient each index means."""
    payload: dict[str, Any] = {
        "n_folds": len(folds),
        "folds": [{"train": [int(i) for i in tr], "val": [int(i) for i in va]} for tr, va in folds],
    }
    if case_ids is not None:
        payload["case_ids"] = [str(c) for c in case_ids]
    write_text_atomic(json.dumps(payload, indent=1), path)


def load_folds(path: str | Path, case_ids: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read folds written by :func:`save_folds`.

    Args:
        path: the JSON file.
        case_ids: if given and the file recorded case ids, they must match (same patients, same order).

    Raises:
        InputError: unreadable or malformed file, overlapping train/validation sets, or case ids that differ.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        folds = [
            (np.asarray(f["train"], dtype=np.int64), np.asarray(f["val"], dtype=np.int64)) for f in payload["folds"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a folds file written by save_folds ({error}); regenerate it") from error
    for k, (train, val) in enumerate(folds):
        if np.intersect1d(train, val).size:
            raise InputError(f"{path}: fold {k} has patients in both train and validation; regenerate it")
    stored_ids = payload.get("case_ids")
    if case_ids is not None and stored_ids is not None and [str(c) for c in case_ids] != stored_ids:
        raise InputError(f"{path}: folds were made for other patients (case ids differ); regenerate the folds")
    return folds
