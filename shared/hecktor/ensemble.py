"""The bundle side of the fold ensembles of Tasks 2 and 3 (:class:`~hecktor.prognosis.RiskPredictor`,
:class:`~hecktor.diagnosis.HPVPredictor`; the prediction side is :mod:`hecktor.fold_ensemble`).

Both bundles hold, per fold, an optional :class:`~hecktor.networks.fused.FusedFeatureExtractor` (its state dict,
with the clinical input width recorded per fold) and an optional fitted :class:`~hecktor.clinical.ClinicalEncoder`,
plus the task's own head (Task 2: a survival model, Task 3: a logistic head); ``model.json`` holds the format,
the mode, the network config, the ensemble weights and one record per fold. What the two tasks check and load alike
is here, once; each task keeps its own format, its last stage and its error hint (``fix``: which script re-exports
the bundle), so every message stays the one that task has always given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.biomarkers import BiomarkerScaler
from hecktor.bundle import Bundle, load_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.errors import BundleError
from hecktor.fold_ensemble import SEGMENTATION_FOLDER, FoldEnsemble, SegmentationSettings
from hecktor.networks.fused import FusedFeatureExtractor

__all__ = ["NETWORK_CLASS", "without_width", "load_network", "load_fold_encoder", "load_fold_network",
           "load_fold_scaler", "check_clinical_width", "check_format", "check_network_record", "check_fold_records",
           "check_weights", "check_fold_files", "fold_record", "network_and_encoder_files", "nested_segmentation",
           "segmentation_description"]

NETWORK_CLASS = "FusedFeatureExtractor"
"""The ``model.json`` name of the fold networks of both tasks."""


def without_width(config: Mapping[str, Any]) -> dict[str, Any]:
    """A network config without its clinical input width (which may differ by fold)."""
    return {key: value for key, value in config.items() if key != "n_clinical"}


def load_network(bundle: Bundle, name: str, config: dict[str, Any], fix: str) -> FusedFeatureExtractor:
    """The network of ``config`` with the bundle's state dict ``name`` loaded; a mismatch is a :class:`BundleError`.

    Args:
        bundle: the verified bundle.
        name: the state dict's file name in the bundle.
        config: the network's constructor arguments.
        fix: what the error message tells the user to do.
    """
    try:
        network = FusedFeatureExtractor(**config)
    except (TypeError, ValueError) as error:
        raise BundleError(f"{bundle.file('model.json')}: cannot build {NETWORK_CLASS} ({error}); {fix}") from None
    try:
        network.load_state_dict(bundle.load_state_dict(name))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0][:200]
        raise BundleError(f"{bundle.file(name)} does not fit the network of model.json ({first}); {fix}") from None
    return network


def load_fold_encoder(bundle: Bundle, record: Mapping[str, Any]) -> ClinicalEncoder | None:
    """The fold's fitted clinical encoder (``None`` where the fold record lists none)."""
    if record["encoder"] is None:
        return None
    return ClinicalEncoder.from_dict(bundle.load_json(record["encoder"]), source=str(bundle.file(record["encoder"])))


def load_fold_scaler(bundle: Bundle, record: Mapping[str, Any]) -> BiomarkerScaler | None:
    """The fold's fitted biomarker scaling (biomarker modes; ``None`` where the fold record lists none)."""
    if record.get("biomarkers") is None:
        return None
    name = record["biomarkers"]
    return BiomarkerScaler.from_dict(bundle.load_json(name), source=str(bundle.file(name)))


def nested_segmentation(ensemble: FoldEnsemble) -> dict[str, Path]:
    """The ``bundles`` argument of :func:`~hecktor.bundle.write_bundle` for a fold ensemble: in the biomarker modes
    its Task 1 bundle (checked to load) in :data:`~hecktor.fold_ensemble.SEGMENTATION_FOLDER`, else nothing."""
    if not ensemble.uses_biomarkers:
        return {}
    if ensemble.segmentation_bundle is None:
        raise ValueError(f"mode {ensemble.mode!r} exports the Task 1 bundle with it; this predictor has none")
    load_bundle(ensemble.segmentation_bundle, task=1)  # never nest a bundle that would not load
    return {SEGMENTATION_FOLDER: ensemble.segmentation_bundle}


def segmentation_description(bundle: Bundle, mode: str, fix: str) -> tuple[Path, SegmentationSettings]:
    """The nested Task 1 bundle's folder and the :class:`~hecktor.fold_ensemble.SegmentationSettings` of a
    biomarker-mode ``model.json`` (Tasks 2 and 3 alike), checked."""
    where = bundle.file("model.json")
    record = bundle.model.get("segmentation")
    if not isinstance(record, dict) or record.get("folder") != SEGMENTATION_FOLDER:
        raise BundleError(f"{where}: mode {mode!r} needs a 'segmentation' record naming the nested Task 1 bundle "
                          f"folder {SEGMENTATION_FOLDER!r}; {fix}")
    bundle.file(f"{SEGMENTATION_FOLDER}/manifest.json")  # the nested bundle must be listed in the outer manifest
    try:
        settings = SegmentationSettings.from_dict(record)
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{where}: bad 'segmentation' record ({error}); {fix}") from None
    if (mode == "fusion+biomarkers") != (settings.crop is not None):
        raise BundleError(f"{where}: mode {mode!r} {'needs' if settings.crop is None else 'has no'} tumour-centred "
                          f"cube ('segmentation.crop'); {fix}")
    return bundle.path / SEGMENTATION_FOLDER, settings


def load_fold_network(bundle: Bundle, record: Mapping[str, Any], network_config: Mapping[str, Any] | None,
                      fix: str) -> FusedFeatureExtractor | None:
    """The fold's network (``None`` where the fold record lists none), built with the fold's own clinical input
    width (``n_clinical`` of its record) where one is recorded."""
    if record["network"] is None:
        return None
    config = dict(network_config)
    if record.get("n_clinical") is not None:
        config["n_clinical"] = int(record["n_clinical"])
    return load_network(bundle, record["network"], config, fix)


def check_clinical_width(bundle: Bundle, record: Mapping[str, Any], network: FusedFeatureExtractor | None,
                         encoder: ClinicalEncoder | None, fix: str) -> None:
    """Refuse a fold whose network takes another clinical input width than its encoder makes."""
    if network is not None and encoder is not None and network.config["n_clinical"] != encoder.n_features:
        raise BundleError(f"{bundle.file(record['encoder'])} encodes {encoder.n_features} clinical features "
                          f"but the network takes {network.config['n_clinical']}; {fix}")


def check_format(bundle: Bundle, model_format: str, version: int, fix: str) -> None:
    """Refuse a ``model.json`` of another format or version."""
    model = bundle.model
    if model.get("format") != model_format or model.get("format_version") != version:
        raise BundleError(f"{bundle.file('model.json')} is not a {model_format} v{version} description; {fix}")


def check_network_record(bundle: Bundle, mode: str, network_mode: str | None, fix: str) -> dict[str, Any] | None:
    """The network config of ``model.json``, checked against the mode.

    Args:
        bundle: the verified bundle.
        mode: the model's mode (as in ``model.json``).
        network_mode: the network's mode for it (``None``: the mode has no network).
        fix: what the error message tells the user to do.

    Returns:
        the network config (``None`` without a network).
    """
    where = bundle.file("model.json")
    network = bundle.model.get("network")
    if network_mode is None:
        if network is not None:
            raise BundleError(f"{where}: a {mode}-mode model has no network; {fix}")
        return None
    if not isinstance(network, dict) or network.get("class") != NETWORK_CLASS or not isinstance(
            network.get("config"), dict):
        raise BundleError(f"{where}: mode {mode!r} needs a {NETWORK_CLASS} with a config object; {fix}")
    config = network["config"]
    if config.get("mode") != network_mode:
        raise BundleError(f"{where}: the network's mode {config.get('mode')!r} is not the model's "
                          f"{network_mode!r}; {fix}")
    return config


def check_fold_records(bundle: Bundle, fix: str) -> list[dict[str, Any]]:
    """The fold records of ``model.json`` (a non-empty list of objects)."""
    folds = bundle.model.get("folds")
    if not isinstance(folds, list) or not folds or not all(isinstance(f, dict) for f in folds):
        raise BundleError(f"{bundle.file('model.json')} lists no folds; {fix}")
    return folds


def check_weights(bundle: Bundle, weights: np.ndarray, n_folds: int, fix: str) -> None:
    """Refuse ensemble weights that are not ``n_folds`` non-negative numbers summing to 1."""
    if weights.size != n_folds or np.any(~np.isfinite(weights)) or np.any(weights < 0) or not np.isclose(
            weights.sum(), 1.0, atol=1e-9):
        raise BundleError(f"{bundle.file('model.json')}: need {n_folds} non-negative ensemble weights summing to 1, "
                          f"got {weights.tolist()}; {fix}")


def check_fold_files(bundle: Bundle, folds: Sequence[Mapping[str, Any]], mode: str,
                     file_names: Callable[[int], Mapping[str, str]], wanted: Mapping[str, bool], fix: str) -> None:
    """Every fold record lists exactly the parts its mode needs, under the expected names, and the manifest lists
    them.

    Args:
        bundle: the verified bundle.
        folds: the fold records of ``model.json``.
        mode: the model's mode (for the message).
        file_names: the task's bundle file names of fold ``k``, by part.
        wanted: per part (in the order to check), whether the mode has it.
        fix: what the error message tells the user to do.
    """
    where = bundle.file("model.json")
    for k, fold in enumerate(folds):
        expected = file_names(k)
        for part, present in wanted.items():
            name = fold.get(part)
            if present != (name is not None) or (name is not None and name != expected[part]):
                state = f"{expected[part]!r}" if present else "null"
                raise BundleError(f"{where}: fold {k} must list {part} = {state} for mode {mode!r}; {fix}")
            if name is not None:
                bundle.file(name)  # raises BundleError when the manifest does not list it


def fold_record(network: FusedFeatureExtractor | None, encoder: ClinicalEncoder | None, names: Mapping[str, str],
                parts: Mapping[str, Any]) -> dict[str, Any]:
    """A fold's record in ``model.json``: its network and encoder files (``None`` where the fold has none), the
    task's own ``parts`` (its head's file, its validation score), and the network's clinical input width."""
    return {
        "network": names["network"] if network is not None else None,
        "encoder": names["encoder"] if encoder is not None else None,
        **parts,
        # Each fold's encoder is fitted on its own training rows, so a rare level (M1, PS 4) can give one fold more
        # clinical columns than another: the network's input width is recorded per fold.
        "n_clinical": None if network is None else int(network.config["n_clinical"]),
    }


def network_and_encoder_files(k: int, network: FusedFeatureExtractor | None, encoder: ClinicalEncoder | None,
                              names: Mapping[str, str], network_config: Mapping[str, Any] | None,
                              state_dicts: dict[str, Any], json_files: dict[str, Any]) -> None:
    """Add fold ``k``'s network state dict and fitted encoder to a bundle's files (in place).

    Raises:
        ValueError: the fold's network differs from ``network_config`` (fold 0's) beyond the clinical input width.
    """
    if network is not None:
        if without_width(network.config) != without_width(network_config):
            raise ValueError(f"fold {k}'s network config differs from fold 0's beyond the clinical input "
                             "width; a bundle holds one architecture")
        state_dicts[names["network"]] = network.state_dict()
    if encoder is not None:
        json_files[names["encoder"]] = encoder.to_dict()
