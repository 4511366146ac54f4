"""What every training and export command line shares: argument types, the common training options, help that
shows each option's default, and :func:`run_cli` (one error line and exit status 2 for a user error).

The common options carry one vocabulary across both tasks (the TrainingConfig field each one sets in brackets):

``--data DIR`` (HECKTOR layout root), ``--out RUN_DIR``, ``--folds N`` [n_folds], ``--fold K[,K...]|all`` [folds],
``--seed``, ``--epochs``, ``--batch-size``, ``--lr`` [learning_rate], ``--weight-decay``,
``--augmentation/--no-augmentation``, ``--device`` (``auto``: CUDA when available), ``--workers`` (worker processes;
default all cores: the cores this process may run on), ``--progress/--no-progress``, ``--suv-table CSV`` [suv_table].

They are added with ``default=argparse.SUPPRESS``, so :func:`config_values` returns only what was typed, and the
trainer's TrainingConfig supplies the rest (after a config file, where the CLI reads one); :func:`show_defaults`
puts those defaults into ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from hecktor.errors import HecktorError

EXIT_USER_ERROR = 2
"""Exit status of a command whose input or arguments are wrong (argparse's own status for a bad option)."""

ALL_WHEN_UNSET = {"folds": "all", "workers": "all cores", "threads": "all cores",
                  "suv_table": "none: PETs that look like Bq/ml are divided by their body's median uptake"}
"""What an unset (``None``) setting means, as ``--help`` shows it."""


# ---------------------------------------------------------------------------------------------------- argument types
def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object given inline or as the path of a JSON file."""
    path = Path(text)
    source = path.read_text() if path.is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {text!r} ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}: {text!r}")
    return value


def fold_selection(text: str) -> list[int] | None:
    """argparse type of ``--fold``: a fold index, comma-separated indices, or ``all`` (``None``)."""
    if text.strip() == "all":
        return None
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes a fold index, comma-separated indices, or 'all'; got {text!r}") from None


def comma_list(text: str) -> list[str]:
    """argparse type: comma-separated names (blanks dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


# ------------------------------------------------------------------------------------------------------- the parser
class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with this toolkit's error format: one line ``error: ...`` on stderr, exit status 2, the
    description shown as written and every option's default in ``--help`` (:class:`HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and ``(default: X)`` after every option's help. X is the option's default, or
    for options whose default is ``SUPPRESS`` the value that :func:`show_defaults` recorded; a required option says
    ``(required)``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.help == argparse.SUPPRESS or not action.option_strings or "(default" in text
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        if action.required:
            return f"{text} (required)".strip()
        default = getattr(action, "shown_default", action.default)
        if default is argparse.SUPPRESS:
            return text
        if isinstance(default, dict):
            default = json.dumps(default)
        elif isinstance(default, (list, tuple)):
            default = ",".join(str(v) for v in default) if default else "none"
        shown = str(default).replace("%", "%%")  # argparse %-formats help strings
        return f"{text} (default: {shown})".strip()


def show_defaults(parser: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """Record ``defaults[dest]`` for ``--help`` on every option of ``parser`` whose destination is in ``defaults``
    (the TrainingConfig's defaults of options that are ``SUPPRESS``-ed so that only typed values count)."""
    for action in parser._actions:  # argparse keeps no public list of its actions
        if action.dest in defaults:
            shown = defaults[action.dest]
            if shown is None and action.dest in ALL_WHEN_UNSET:
                shown = ALL_WHEN_UNSET[action.dest]
            action.shown_default = shown


def config_defaults(config_class: type) -> dict[str, Any]:
    """The defaults of a TrainingConfig dataclass by field name (fields without a default are left out)."""
    defaults = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def config_values(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The options given on the command line that set a field of ``config_class`` (the options whose default is
    ``SUPPRESS`` appear in ``args`` only when given)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return {key: value for key, value in vars(args).items() if key in names}


# -------------------------------------------------------------------------------------------------- common options
def add_data_arguments(parser: argparse.ArgumentParser, data_help: str, *, data_default: str = "none; required",
                       out_default: str = "none; required") -> None:
    """``--data DIR`` (dest ``data_root``) and ``--out RUN_DIR`` (dest ``run_dir``). ``data_default`` and
    ``out_default`` say in ``--help`` what stands in for a default (these options are checked by the command, not by
    argparse)."""
    parser.add_argument("--data", dest="data_root", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"{data_help} (default: {data_default})")
    parser.add_argument("--out", dest="run_dir", metavar="RUN_DIR", default=argparse.SUPPRESS,
                        help=f"run folder: config, folds.json, per-fold logs and models (default: {out_default})")


def add_training_arguments(parser: argparse.ArgumentParser, *,
                           workers_help: str = "worker processes for the data") -> None:
    """The options both trainers share (see the module docstring)."""
    group = parser.add_argument_group("training (both tasks)")
    add = group.add_argument
    add("--folds", dest="n_folds", type=int, metavar="N", default=argparse.SUPPRESS,
        help="number of cross-validation folds of the split")
    add("--fold", dest="folds", type=fold_selection, metavar="K[,K...]|all", default=argparse.SUPPRESS,
        help="which folds of the split to train")
    add("--seed", type=int, default=argparse.SUPPRESS, help="seeds the split, the initial weights and every batch")
    add("--epochs", type=int, default=argparse.SUPPRESS, help="training epochs per fold")
    add("--batch-size", type=int, default=argparse.SUPPRESS, help="samples per batch")
    add("--lr", dest="learning_rate", type=float, default=argparse.SUPPRESS, help="AdamW learning rate")
    add("--weight-decay", type=float, default=argparse.SUPPRESS, help="AdamW weight decay")
    add("--augmentation", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
        help="random augmentation of the training images")
    add("--device", default=argparse.SUPPRESS, help="auto (CUDA when available), cpu, cuda or cuda:N")
    add("--workers", type=int, default=argparse.SUPPRESS, help=workers_help)
    add("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help="progress bars")
    add("--suv-table", metavar="CSV", default=argparse.SUPPRESS,
        help="the organisers' suv_conversion_tags.csv: the PETs it lists in Bq/ml (units BQML) are read as exact SUV "
             "(value x factor)")


# ------------------------------------------------------------------------------------------------------------- run
def run_cli(function: Callable[[], Any]) -> int:
    """Call ``function`` (a command's work) and return its exit status: 0 on success; for a
    :class:`~hecktor.errors.HecktorError` one line ``error: ...`` on stderr and the error's ``exit_status``:
    :data:`EXIT_USER_ERROR` (a user's input or argument is wrong) unless the error says otherwise (e.g.
    :class:`hecktor.training.segmentation.DistributedJobError`, 1: another process of the job failed). Other
    exceptions are bugs and keep their traceback."""
    try:
        function()
    except HecktorError as error:
        message = " ".join(str(error).split())  # one line, whatever the message holds
        print(f"error: {message}", file=sys.stderr, flush=True)
        return int(getattr(error, "exit_status", EXIT_USER_ERROR))
    return 0


# ------------------------------------------------------------------------------- fold-ensemble trainers (Tasks 2, 3)
def add_cohort_arguments(parser: argparse.ArgumentParser, folder: str, csv_columns: str = "") -> None:
    """What ``train_prognosis.py`` and ``train_hpv.py`` take first: ``--data`` (a HECKTOR folder holding
    ``folder/``) or ``--csv`` (clinical mode; a CSV with the HECKTOR 2025 columns, then ``csv_columns``),
    ``--overwrite`` and the common training options."""
    add_data_arguments(parser, f"HECKTOR folder holding '{folder}/' (images and its CSV)",
                       data_default="none; give --data or --csv")
    parser.add_argument("--csv", type=Path, help="clinical mode only, instead of --data: a CSV with the HECKTOR 2025 "
                                                 f"columns{csv_columns} (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    add_training_arguments(parser, workers_help="processes preprocessing the images into the cache (0: this "
                                                "process)")


def add_folds_file_argument(group: argparse._ActionsContainer) -> None:
    """``--folds-file``: the split of an earlier run."""
    group.add_argument("--folds-file", type=Path,
                       help="reuse the split of an earlier run (its folds.json) so modes compare on the same folds")


def add_network_arguments(group: argparse._ActionsContainer, presets: Mapping[str, Any]) -> None:
    """``--network`` (a backbone preset of ``presets``, dest ``network_preset``) and ``--network-config``
    (:func:`network_from_args` joins them)."""
    group.add_argument("--network", dest="network_preset", choices=sorted(presets), default="resnet18",
                       help="backbone preset (tiny: a few thousand parameters, for tests and smoke runs)")
    group.add_argument("--network-config", type=json_object, default={},
                       help="extra FusedFeatureExtractor arguments as JSON (inline or file), e.g. '{\"dropout\": 0.1}'")


def add_feature_arguments(group: argparse._ActionsContainer) -> None:
    """``--features`` (dest ``clinical_features``) and ``--numeric-features``."""
    group.add_argument("--features", dest="clinical_features", type=comma_list, default=argparse.SUPPRESS,
                       help="comma-separated clinical fields to encode")
    group.add_argument("--numeric-features", type=comma_list, default=argparse.SUPPRESS,
                       help="comma-separated numeric fields among --features (default: Age when present)")


def add_box_arguments(group: argparse._ActionsContainer, default_cache: Path) -> None:
    """``--plan`` (a BoxPlan JSON), ``--cache-dir`` and ``--threads``."""
    group.add_argument("--plan", type=Path, help="preprocessing plan JSON (default: the library's BoxPlan(), 96^3)")
    group.add_argument("--cache-dir", "--cache", type=Path, default=default_cache,
                       help="cache of preprocessed inputs (keyed by the plan's digest); env HECKTOR_CACHE")
    group.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                       help="torch's CPU threads while training (all cores: the cores this process may run on, or "
                            "$OMP_NUM_THREADS where set)")


def add_segmentation_arguments(parser: argparse.ArgumentParser, task: str) -> argparse._ArgumentGroup:
    """The biomarker modes' options that Tasks 2 and 3 share (``--segmentation``, ``--biomarkers``,
    ``--segmentation-budget-share``), in a group of their own; returns it for the task's own options."""
    from hecktor.biomarkers import BIOMARKER_NAMES

    group = parser.add_argument_group("biomarker modes")
    group.add_argument("--segmentation", type=Path, metavar="TASK1_RUN",
                       help="Task 1 cross-validation run (train_segmentation.py --fold all): out-of-fold masks for "
                            "training, its folds nested in the bundle (required by the biomarker modes)")
    group.add_argument("--biomarkers", type=comma_list, default=argparse.SUPPRESS,
                       help=f"comma-separated biomarkers (default: all: {', '.join(BIOMARKER_NAMES)})")
    group.add_argument("--segmentation-budget-share", type=float, default=argparse.SUPPRESS,
                       help=f"share of the {task} time budget left that the nested segmentation may use")
    return group


def network_from_args(args: argparse.Namespace, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The network config of ``--network`` and ``--network-config`` (the latter wins)."""
    return {**presets[args.network_preset], **args.network_config}


def cohort_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of ``train`` / ``train_hpv`` after the config: ``run_dir`` (``--out``, required), the data,
    the plan, the cache, the split file, ``overwrite`` and a flushing ``echo``."""
    from hecktor.errors import InputError
    from hecktor.plan import BoxPlan

    if "run_dir" not in args:
        raise InputError("--out is required: the run folder to write")
    return {"run_dir": args.run_dir, "data": getattr(args, "data_root", None), "csv": args.csv,
            "plan": BoxPlan.load(args.plan) if args.plan is not None else None, "cache_dir": args.cache_dir,
            "split_file": args.folds_file, "overwrite": args.overwrite, "echo": lambda line: print(line, flush=True)}


def export_parser(description: str, trainer: str, default_out: Path) -> ArgumentParser:
    """The parser of an export command: the run folder written by ``trainer --out`` and ``--out`` (the bundle)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("run_dir", type=Path, help=f"folder written by {trainer} --out")
    add_bundle_out_arguments(parser, default_out)
    return parser


def add_bundle_out_arguments(parser: ArgumentParser, default_out: Path) -> None:
    """An export's ``--out`` and ``--overwrite``: the bundle goes into an absent or empty folder, or replaces an
    earlier bundle with ``--overwrite``; anything else there is refused and left untouched."""
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"bundle folder: absent, empty, or an earlier bundle with --overwrite (default {default_out})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier bundle at --out (a folder holding anything else is never touched)")
