"""Clinical records (training-table rows or ``ehr.json``) as a fixed-width float32 feature matrix.

:class:`ClinicalEncoder` is fitted on the training rows only, saved as JSON next to the model, and read back by the
Task 2 container, so training and inference encode a record identically (no clinical list re-declared in the
container, no pickle).

Value normalisation (the same at fit and transform time)
--------------------------------------------------------
Categorical values become a level string:

* ``True``/``False`` → ``"1"``/``"0"``; integral numbers in any spelling (``1``, ``1.0``, ``"1"``, ``" 1 "``,
  ``"1.0"``, numpy integers) → ``"1"``; other numbers → their shortest ``repr`` (``2.5`` → ``"2.5"``);
* other strings are stripped and upper-cased (``"m0"``, ``" M0 "`` → ``"M0"``; ``"Mx"`` → ``"MX"``); the strings
  ``"true"``/``"false"`` (any case) → ``"1"``/``"0"``;
* missing: a missing key, ``None``, NaN, ``""`` (after stripping) and the strings ``nan``, ``none``, ``null``,
  ``na``, ``n/a``, ``unknown`` (any case); so are values of other types (lists, dicts), which no table produces.

Missing and unseen levels both go to the feature's ``Unknown`` column.

Numeric values (``Age`` by default) are parsed as floats: numbers, numeric strings (``"56"``, ``" 56.0 "``) and
booleans. Anything unparsable (``"abc"``, an integer too large for a float), NaN or infinite is treated as *missing*
and imputed with the training median, never raising. Imputed values are then standardised with the training mean and
standard deviation (of the imputed training column; a standard deviation of 0 is replaced by 1).

A test-time record (``ehr.json``) is first checked by :func:`sanitize_ehr`: keys are matched whatever their case and
punctuation (``age`` is read as ``Age``), and an implausible value (an age outside :data:`PLAUSIBLE_RANGES`, a list or
an object where one value belongs) is removed, so that it encodes as unknown, with a warning. The encoder itself is
not changed by this (training tables are encoded as they always were).
"""

from __future__ import annotations

import json
import math
import numbers
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.errors import BundleError, InputError
from hecktor.tasks import CLINICAL_COLUMNS

# The seven seed features: every column of the HECKTOR 2025 table except the centre and HPV status.
DEFAULT_FEATURES: tuple[str, ...] = tuple(c for c in CLINICAL_COLUMNS if c not in ("CenterID", "HPV Status"))
"""The encoded clinical fields. ``HPV Status`` is in the training table but not in the test ``ehr.json``, so a
model that uses it must opt in (and will see ``Unknown`` at test time)."""

DEFAULT_NUMERIC: tuple[str, ...] = ("Age",)
UNKNOWN = "Unknown"
FORMAT = "hecktor.ClinicalEncoder"
FORMAT_VERSION = 1

_MISSING_STRINGS = frozenset({"", "nan", "none", "null", "na", "n/a", "unknown"})


def normalize_level(value: Any) -> str | None:
    """A categorical value as its canonical level string, or None when missing (see the module docstring)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else ("1" if value else "0")
    if isinstance(value, numbers.Integral):
        try:
            return str(int(value))
        except ValueError:  # more digits than Python converts to text: no code looks like that
            return None
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:
            return None
        if math.isnan(number):
            return None
        if math.isinf(number):
            return "INF" if number > 0 else "-INF"
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        if lowered in _MISSING_STRINGS:
            return None
        if lowered in ("true", "false"):
            return "1" if lowered == "true" else "0"
        try:
            number = float(text)
        except ValueError:
            return text.upper()
        return normalize_level(number)
    return None


def parse_number(value: Any) -> float | None:
    """A numeric value as a finite float, or None when missing or unparsable (never raises)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        if isinstance(value, numbers.Real):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):  # "abc"; an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _level_sort_key(level: str) -> tuple[int, float, str]:
    # Numeric levels in numeric order ("2" before "10"), then the others alphabetically: a stable, readable layout.
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


def _as_records(records: Any) -> list[Mapping[str, Any]]:
    """Rows as mappings: a sequence of mappings, one mapping, or a pandas DataFrame (NaN cells become missing)."""
    if records is None:
        raise TypeError("records must be a sequence of mappings (or a DataFrame), got None")
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # pandas DataFrame, without importing pandas
        records = records.to_dict(orient="records")
    elif isinstance(records, Mapping):
        records = [records]
    elif isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(f"records must be a sequence of mappings (or a DataFrame), got {type(records).__name__}")
    rows = []
    for index, record in enumerate(records):
        if record is None:  # an absent ehr.json: every field unknown
            record = {}
        if not isinstance(record, Mapping):
            raise TypeError(f"record {index} is a {type(record).__name__}, expected a mapping of field -> value")
        rows.append(record)
    return rows


class ClinicalEncoder:
    """One-hot / standardising encoder of clinical records, fitted on training rows only.

    Numeric features give one column each (median-imputed, standardised). Categorical features give one column per
    level seen in training, in numeric-then-alphabetical order, plus an ``Unknown`` column that takes missing and
    unseen values. Column names are ``"Age"`` and ``"<feature>=<level>"`` (e.g. ``"M-stage=M0"``,
    ``"Gender=Unknown"``).

    Args:
        features: the record keys to encode, in column order.
        numeric: which of ``features`` are numeric; all others are categorical.

    Example:
        >>> encoder = ClinicalEncoder().fit(train_rows)
        >>> encoder.save(bundle / "clinical_encoder.json")
        >>> x = ClinicalEncoder.load(bundle / "clinical_encoder.json").transform([ehr])  # shape (1, n_features)
    """

    def __init__(self, features: Sequence[str] = DEFAULT_FEATURES, numeric: Sequence[str] = DEFAULT_NUMERIC) -> None:
        if isinstance(features, str) or isinstance(numeric, str):
            raise TypeError("features and numeric must be sequences of names, not a single string")
        self.features: tuple[str, ...] = tuple(features)
        self.numeric: tuple[str, ...] = tuple(numeric)
        if not self.features:
            raise ValueError("ClinicalEncoder needs at least one feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"duplicate feature names in {self.features}")
        unknown_numeric = [name for name in self.numeric if name not in self.features]
        if unknown_numeric:
            raise ValueError(f"numeric features {unknown_numeric} are not in features {self.features}")
        self.numeric_stats: dict[str, dict[str, float]] = {}
        self.levels: dict[str, list[str]] = {}
        self._fitted = False

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(name for name in self.features if name not in self.numeric)

    # ------------------------------------------------------------------------------------------------------------
    def fit(self, records: Any) -> ClinicalEncoder:
        """Learn medians, means, standard deviations and category levels from training records."""
        rows = _as_records(records)
        if not rows:
            raise ValueError("cannot fit a ClinicalEncoder on zero records")
        numeric_stats: dict[str, dict[str, float]] = {}
        levels: dict[str, list[str]] = {}
        for name in self.features:
            if name in self.numeric:
                values = [parse_number(row.get(name)) for row in rows]
                observed = np.array([v for v in values if v is not None], dtype=np.float64)
                # A column never observed in training carries no information: impute 0 so it encodes as a constant.
                median = float(np.median(observed)) if observed.size else 0.0
                imputed = np.array([median if v is None else v for v in values], dtype=np.float64)
                std = float(imputed.std())
                numeric_stats[name] = {
                    "median": median,
                    "mean": float(imputed.mean()),
                    "std": std if std > 0 else 1.0,
                }
            else:
                seen = {normalize_level(row.get(name)) for row in rows} - {None}
                levels[name] = sorted(seen, key=_level_sort_key)
        self.numeric_stats, self.levels, self._fitted = numeric_stats, levels, True
        return self

    def transform(self, records: Any) -> np.ndarray:
        """Encode records as an ``(n_records, n_features)`` float32 matrix; extra keys are ignored."""
        self._require_fitted()
        rows = _as_records(records)
        out = np.zeros((len(rows), self.n_features), dtype=np.float32)
        column = 0
        for name in self.features:
            if name in self.numeric:
                stats = self.numeric_stats[name]
                for i, row in enumerate(rows):
                    value = parse_number(row.get(name))
                    value = stats["median"] if value is None else value
                    out[i, column] = (value - stats["mean"]) / stats["std"]
                column += 1
            else:
                index = {level: k for k, level in enumerate(self.levels[name])}
                unknown = len(index)
                for i, row in enumerate(rows):
                    out[i, column + index.get(normalize_level(row.get(name)), unknown)] = 1.0
                column += unknown + 1
        return out

    def fit_transform(self, records: Any) -> np.ndarray:
        rows = _as_records(records)
        return self.fit(rows).transform(rows)

    @property
    def feature_names(self) -> list[str]:
        self._require_fitted()
        names: list[str] = []
        for name in self.features:
            if name in self.numeric:
                names.append(name)
            else:
                names.extend(f"{name}={level}" for level in (*self.levels[name], UNKNOWN))
        return names

    @property
    def n_features(self) -> int:
        self._require_fitted()
        return len(self.numeric) + sum(len(levels) + 1 for levels in self.levels.values())

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("ClinicalEncoder is not fitted: call fit() on training records or load() a saved one")

    # ------------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description from which :meth:`from_dict` rebuilds the identical encoder."""
        self._require_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "features": list(self.features),
            "numeric": list(self.numeric),
            "numeric_stats": {name: dict(stats) for name, stats in self.numeric_stats.items()},
            "levels": {name: list(levels) for name, levels in self.levels.items()},
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "clinical encoder") -> ClinicalEncoder:
        """Rebuild an encoder from :meth:`to_dict` output; a malformed dict is a :class:`BundleError` naming
        ``source``."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise BundleError(f"{source} is not a saved ClinicalEncoder (expected \"format\": \"{FORMAT}\")")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{source} has format_version {data.get('format_version')!r}; this library reads "
                              f"{FORMAT_VERSION}: re-export the model with the current library")
        try:
            encoder = cls(features=data["features"], numeric=data["numeric"])
            numeric_stats = {
                name: {key: float(data["numeric_stats"][name][key]) for key in ("median", "mean", "std")}
                for name in encoder.numeric
            }
            levels = {name: [str(level) for level in data["levels"][name]] for name in encoder.categorical}
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source} is incomplete or malformed ({type(error).__name__}: {error}); re-export it "
                              "with ClinicalEncoder.save") from None
        if any(not math.isfinite(v) for stats in numeric_stats.values() for v in stats.values()) or any(
            stats["std"] <= 0 for stats in numeric_stats.values()
        ):
            raise BundleError(f"{source} holds non-finite or non-positive numeric statistics; re-export it")
        encoder.numeric_stats, encoder.levels, encoder._fitted = numeric_stats, levels, True
        saved_names = data.get("feature_names")
        if saved_names is not None and list(saved_names) != encoder.feature_names:
            raise BundleError(f"{source}: stored feature_names do not match its levels; the file was edited by hand")
        return encoder

    def save(self, path: str | Path) -> Path:
        """Write the encoder as JSON (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClinicalEncoder:
        """Read an encoder saved by :meth:`save`; missing or malformed files raise :class:`BundleError`."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"clinical encoder not found: {path}; export the model bundle again")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            message = f"clinical encoder {path} is not valid JSON ({error}); export the model bundle again"
            raise BundleError(message) from None
        return cls.from_dict(data, source=str(path))

    def __repr__(self) -> str:
        state = f"n_features={self.n_features}" if self._fitted else "unfitted"
        return f"ClinicalEncoder(features={self.features!r}, numeric={self.numeric!r}, {state})"


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def normalize_ehr(raw: object, source: str = "ehr.json") -> dict[str, Any]:
    """Validate a parsed ``ehr.json``: it must be a JSON object. Keys and values are kept as they are (the encoder
    tolerates missing keys, nulls and odd spellings).

    Args:
        raw: the result of ``json.load``.
        source: the file name used in the error message.

    Raises:
        InputError: ``raw`` is not a dict, e.g. ``ehr.json must hold a JSON object, got list``.
    """
    if not isinstance(raw, dict):
        raise InputError(f"{source} must hold a JSON object, got {_json_type_name(raw)}")
    return dict(raw)


# ------------------------------------------------------------------------------------------- test-time records

PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {"Age": (0.0, 120.0, "years")}
"""Numeric fields with the range a real value lies in (low, high, unit). An age in days (22,630) or in months, a
negative age or 1e308 is outside it: encoding it would put the risk far outside anything seen in training."""

_KNOWN_KEYS: tuple[str, ...] = CLINICAL_COLUMNS


def _key_form(key: str) -> str:
    """A key reduced to lower-case letters and digits: ``"M-Stage"``, ``"m_stage"`` and ``"M stage"`` meet."""
    return re.sub(r"[^0-9a-z]", "", key.lower())


def _shown(value: Any) -> str:
    # reprlib bounds the length and depth of what is shown (a 400-digit integer, a list nested 900 deep)
    shown = reprlib.Repr()
    shown.maxlong = shown.maxstring = shown.maxother = 40
    shown.maxlevel = 2
    return shown.repr(value)


@dataclass
class CheckedRecord:
    """What :func:`sanitize_ehr` made of a record.

    Attributes:
        record: the record with known keys spelled canonically and implausible values set to ``None``.
        warnings: one line per key renamed or value removed.
        problems: the lines of ``warnings`` that name an implausible value (without what was done about it): what a
            strict read refuses.
    """

    record: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def sanitize_ehr(raw: Mapping[str, Any], source: str = "ehr.json",
                 known_keys: Sequence[str] = _KNOWN_KEYS) -> CheckedRecord:
    """Check a parsed test-time record before it is encoded; never raises on any JSON value.

    * A key that matches a known field apart from case, spaces and punctuation (``age``, ``M_stage``) is renamed to
      the field, with a warning; when the field is also present under its own name, the variant is ignored.
    * A numeric field of :data:`PLAUSIBLE_RANGES` whose value is not a number, or lies outside the range, is set to
      ``None`` (unknown), with a warning and a problem.
    * A known field holding a list or an object (which no table has) is set to ``None``, with a warning and a problem.

    Unknown keys are kept as they are (encoders ignore them). Checking a checked record changes nothing and warns
    about nothing.

    Args:
        raw: the record (a JSON object).
        source: the record's name in the messages.
        known_keys: the canonical field names.
    """
    canonical = {_key_form(key): key for key in known_keys}
    record: dict[str, Any] = {}
    checked = CheckedRecord(record)
    renamed: list[tuple[str, str]] = []
    for key, value in raw.items():
        name = canonical.get(_key_form(key)) if isinstance(key, str) else None
        if name is None or name == key:
            record[key] = value
        else:
            renamed.append((key, name))
    for key, name in renamed:  # after the exact spellings, which win
        if name in record:
            checked.warnings.append(f"{source}: key {key!r} ignored: {name!r} is also given")
        else:
            record[name] = raw[key]
            checked.warnings.append(f"{source}: key {key!r} read as {name!r}")
    for name in known_keys:
        value = record.get(name)
        if value is None:
            continue
        problem = None
        if isinstance(value, (list, dict)):
            problem = f"{source}: {name} is {_shown(value)}, not a single value"
        elif name in PLAUSIBLE_RANGES:
            low, high, unit = PLAUSIBLE_RANGES[name]
            number = None if isinstance(value, (bool, np.bool_)) else parse_number(value)
            if number is None and isinstance(value, (float, np.floating)) and math.isnan(value):
                record[name] = None  # NaN: missing, as null
            elif number is None and isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
                # an integer too large for a float
                problem = f"{source}: {name} {_shown(value)} is outside {low:g}-{high:g} {unit}"
            elif number is None:
                problem = f"{source}: {name} {_shown(value)} is not a finite number of {unit}"
            elif not low <= number <= high:
                problem = f"{source}: {name} {_shown(value)} is outside {low:g}-{high:g} {unit}"
        if problem is not None:
            record[name] = None
            checked.problems.append(problem)
            checked.warnings.append(f"{problem}: treated as unknown")
    return checked


def unseen_values(encoders: Sequence[ClinicalEncoder], record: Mapping[str, Any],
                  source: str = "ehr.json") -> list[str]:
    """One warning per categorical value of ``record`` that none of ``encoders`` learnt (it encodes as ``Unknown``).

    Only fields for which the encoders know some level are checked: a field never recorded in training has no set
    of known codes to compare with.
    """
    known: dict[str, list[str]] = {}
    for encoder in encoders:
        for name in encoder.categorical:
            levels = known.setdefault(name, [])
            levels.extend(level for level in encoder.levels.get(name, []) if level not in levels)
    warnings = []
    for name, levels in known.items():
        level = normalize_level(record.get(name))
        if level is not None and levels and level not in levels:
            codes = ", ".join(sorted(levels, key=_level_sort_key))
            warnings.append(f"{source}: {name} {_shown(record.get(name))} is not a code the model knows ({codes}): "
                            "encoded as Unknown")
    return warnings
