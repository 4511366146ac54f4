"""The Task 1 bundle of a training run: every fold's weights without their deep-supervision heads, the plan, and
``model.json`` (network, how it was trained, the postprocessing chosen on the out-of-fold predictions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import hecktor
from hecktor.errors import InputError
from hecktor.plan import RegionPlan
from hecktor.segment import IN_CHANNELS, N_CLASSES
from hecktor.training.segmentation.checkpoints import CHECKPOINTS, load_checkpoint
from hecktor.training.segmentation.config import (PLAN_JSON, POSTPROCESSING_JSON, build_segmentation_network,
                                                  read_run_config)
from hecktor.training.segmentation.losses import describe_loss

def export_bundle(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                  folds: Sequence[int] | None = None, postprocessing: bool = True, *,
                  overwrite: bool = False) -> tuple[Path, list[int]]:
    """Write the Task 1 bundle of a run: every fold's weights (model only, no optimizer), the plan and model.json.

    Deep-supervision heads are left out (:func:`hecktor.networks.strip_deep_supervision`): the bundle's network is
    the one inference runs, and predicts exactly as the trained network does in eval mode. The postprocessing that
    ``RUN_DIR/postprocessing.json`` records
    (:func:`~hecktor.training.segmentation.postprocessing_choice.choose_run_postprocessing`) goes into ``model.json``,
    where :class:`hecktor.segment.Segmenter` applies it.

    Args:
        run_dir: a training run directory.
        out_dir: the bundle folder: absent, empty, or (with ``overwrite``) an earlier bundle, replaced atomically;
            anything else is refused before any weights are read (:func:`hecktor.bundle.check_bundle_destination`).
        checkpoint: ``best`` or ``last``.
        folds: the folds to export (default: every ``fold_K`` folder holding that checkpoint).
        postprocessing: include the run's chosen postprocessing when there is one.

    Returns:
        the bundle path and the exported fold indices.
    """
    from hecktor.bundle import check_bundle_destination, write_bundle
    from hecktor.networks import strip_deep_supervision

    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise InputError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    plan_path = run_dir / PLAN_JSON
    if not plan_path.is_file():
        raise InputError(f"{run_dir} is not a training run ({PLAN_JSON} missing); pass the --out folder of train_segmentation.py")
    plan = RegionPlan.load(plan_path)
    run_config = read_run_config(run_dir)
    available = sorted(int(p.parent.name.split("_")[1]) for p in run_dir.glob(f"fold_*/checkpoint_{checkpoint}.pt"))
    chosen = available if folds is None else sorted(int(k) for k in folds)
    missing = [k for k in chosen if k not in available]
    if not chosen or missing:
        raise InputError(f"no checkpoint_{checkpoint}.pt for fold(s) {missing or 'any'} in {run_dir}; train them first")
    check_bundle_destination(out_dir, overwrite)  # a run to export, then a place for it, before any weights

    state_dicts, per_fold, network, network_config, trained_config = {}, [], None, None, None
    for fold in chosen:
        path = run_dir / f"fold_{fold}" / f"checkpoint_{checkpoint}.pt"
        state = load_checkpoint(path)
        # The digest of a plan read back gains the fields added since it was stored (their absent values), so a run
        # stored before them is compared by the plans themselves.
        if state.get("plan_digest") != plan.digest() and RegionPlan.from_dict(state.get("plan", {})) != plan:
            raise InputError(f"{path} was trained with another plan than {plan_path}; retrain or fix the run")
        if network is None:
            network, trained_config = state["network"], state["network_config"]
            # Networks with heads export without them; the others' configs stay as they were trained.
            network_config = (strip_deep_supervision({}, trained_config)[1] if "deep_supervision" in trained_config
                              else trained_config)
        elif (state["network"], state["network_config"]) != (network, trained_config):
            raise InputError(f"{path} holds another network than fold {chosen[0]}; export folds of one run only")
        weights, _ = strip_deep_supervision(state["model"])
        # Load into the network once: a bundle must never hold weights that its own loader would refuse.
        build_segmentation_network(network, network_config).load_state_dict(weights)
        state_dicts[f"fold_{fold}.pt"] = weights
        per_fold.append({"fold": fold, "epoch": int(state["epoch"]), "best": state["best"]})

    model = {
        "network": network,
        "network_config": network_config,
        "in_channels": IN_CHANNELS,
        "n_classes": N_CLASSES,
        "labels": dict(hecktor.LABELS),
        "folds": list(state_dicts),
        "trained": {
            "checkpoint": checkpoint,
            "fold_indices": chosen,
            "n_folds_in_split": run_config.get("n_folds"),
            "epochs": run_config.get("epochs"),
            "iterations_per_epoch": run_config.get("iterations_per_epoch"),
            "batch_size": run_config.get("batch_size"),
            "loss": describe_loss(run_config),
            "deep_supervision": bool((trained_config or {}).get("deep_supervision", False)),
            "augmentation": run_config.get("augmentation"),
            "seed": run_config.get("seed"),
            "per_fold": per_fold,
            "hecktor_version": hecktor.__version__,
        },
    }
    choice_path = run_dir / POSTPROCESSING_JSON
    if postprocessing and choice_path.is_file():
        from hecktor.postprocessing import Postprocessing

        choice = json.loads(choice_path.read_text())
        model["postprocessing"] = Postprocessing.from_dict(choice["postprocessing"], source=str(choice_path)).to_dict()
        model["trained"]["postprocessing_choice"] = {k: v for k, v in choice.items() if k != "postprocessing"}
    out = write_bundle(out_dir, task=1, plan=plan, model=model, state_dicts=state_dicts, overwrite=overwrite)
    return out, chosen
