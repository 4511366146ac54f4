"""What every training and export command line shares: argument types, the common training options, help that
shows each option's default, and :func:`run_cli` (one error line and exit status 2 for a user error).

The common options carry one vocabulary across both tasks (the TrainingConfig field each one sets in brackets):

``--data DIR`` (HECKTOR layout root), ``--out RUN_DIR``, ``--folds N`` [n_folds], ``--fold K[,K...]|all`` [folds],
``--seed``, ``--epochs``, ``--batch-size``, ``--lr`` [learning_rate], ``--weight-decay``,
``--augmentation/--no-augmentation``, ``--device`` (``auto``: CUDA when available), ``--workers`` (worker processes;
default all cores: the cores this process may run on), ``--progress/--no-progress``.

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

ALL_WHEN_UNSET = {"folds": "all", "workers": "all cores", "threads": "all cores"}
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
def add_data_arguments(parser: argparse.ArgumentParser, data_help: str, *, legacy: bool = False,
                       data_default: str = "none; required", out_default: str = "none; required") -> None:
    """``--data DIR`` (dest ``data_root``) and ``--out RUN_DIR`` (dest ``run_dir``); with ``legacy`` also Task 1's
    former spellings ``--data-root`` and ``--run-dir``. ``data_default`` and ``out_default`` say in ``--help`` what
    stands in for a default (these options are checked by the command, not by argparse)."""
    parser.add_argument("--data", *(["--data-root"] if legacy else []), dest="data_root", metavar="DIR",
                        default=argparse.SUPPRESS, help=f"{data_help} (default: {data_default})")
    parser.add_argument("--out", *(["--run-dir"] if legacy else []), dest="run_dir", metavar="RUN_DIR",
                        default=argparse.SUPPRESS,
                        help=f"run folder: config, folds.json, per-fold logs and models (default: {out_default})")


def add_training_arguments(parser: argparse.ArgumentParser, *, legacy: bool = False,
                           workers_help: str = "worker processes for the data") -> None:
    """The options both trainers share (see the module docstring); with ``legacy`` also ``--n-folds``."""
    group = parser.add_argument_group("training (both tasks)")
    add = group.add_argument
    add("--folds", *(["--n-folds"] if legacy else []), dest="n_folds", type=int, metavar="N",
        default=argparse.SUPPRESS, help="number of cross-validation folds of the split")
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
