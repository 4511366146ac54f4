"""Exported model bundles: one folder per task, verified before anything in it is used.

Layout::

    bundle/
      manifest.json   {"format": "hecktor-bundle", "version": 1, "task": N, "plan_digest": ..., "files": {name: sha256}}
      plan.json       the task's preprocessing plan (hecktor.plan) the models were trained with
      model.json      task-specific description (network name and config, fold names, ensemble weights, ...)
      ...             weights (state dicts, loaded with ``weights_only=True``) and other JSON artefacts
      name/           optionally, a nested bundle of another task (e.g. the Task 1 model inside a Task 2 bundle);
                      its files are listed in the outer manifest as ``name/...`` and it keeps its own manifest

:func:`load_bundle` refuses a bundle whose manifest is missing, whose files are missing, extra or changed (SHA-256),
or whose ``plan.json`` is not the plan recorded in the manifest, with one line saying which file and what to do. The plan
digest is computed on ``plan.json`` as stored, never on a plan re-derived with today's defaults, so a bundle keeps
loading after the plan class gains a field with a default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import torch

import hecktor
from hecktor.errors import BundleError, HecktorError, InputError
from hecktor.plan import Plan, plan_digest
from hecktor.tasks import get_task

FORMAT = "hecktor-bundle"
VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"
MODEL = "model.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, task, plan and ``model.json`` content."""

    path: Path
    task: int
    plan: Plan
    model: dict[str, Any]
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        """Path of a file listed in the manifest."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.path} lists no file {name!r}; re-export the bundle")
        return self.path / name

    def load_state_dict(self, name: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """A state dict saved with ``torch.save``, loaded safely (``weights_only=True``)."""
        return torch.load(self.file(name), map_location=map_location, weights_only=True)

    def load_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())


def is_bundle_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a bundle's manifest (of any task; not verified)."""
    manifest = Path(path) / MANIFEST
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_bundle_destination(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse, with one line and before anything is touched, a bundle destination that is not absent, an empty
    folder or (with ``overwrite``) an earlier bundle: exports never delete a run folder or unrelated files."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file, not a folder; choose an empty or absent folder for the bundle")
    if is_bundle_folder(out_dir):
        if overwrite:
            return
        raise InputError(f"{out_dir} already holds a bundle; pass --overwrite to replace it, or choose another folder")
    content = sorted(p.name for p in out_dir.iterdir())
    if content:
        shown = ", ".join(content[:5]) + (f" and {len(content) - 5} more" if len(content) > 5 else "")
        raise InputError(f"{out_dir} is not empty and holds no bundle ({shown}); nothing was written: choose an "
                         "empty or absent folder (a training run's folder is never a bundle's place)")


def write_bundle(
    out_dir: str | Path,
    task: int,
    plan: Plan,
    model: Mapping[str, Any],
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    json_files: Mapping[str, Any] | None = None,
    bundles: Mapping[str, str | Path] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a bundle atomically: built in a temporary sibling folder, then moved into place.

    ``out_dir`` must be absent, an empty folder, or (with ``overwrite``) an earlier bundle, recognised by its
    manifest: anything else is refused before anything is written (:func:`check_bundle_destination`), so an export
    can never delete a training run or unrelated files.

    Args:
        task: the task number (see :mod:`hecktor.tasks`); ``plan`` must be that task's kind of plan.
        model: the content of ``model.json``.
        state_dicts: ``{file name: state dict}`` saved with ``torch.save``.
        json_files: ``{file name: JSON-serialisable object}``, e.g. a fitted clinical encoder.
        bundles: ``{folder name: path of a bundle}`` copied in as nested bundles (verify them before).
        overwrite: replace an earlier bundle at ``out_dir``.
    """
    out_dir = Path(out_dir)
    check_bundle_destination(out_dir, overwrite)
    spec = get_task(task)
    if not isinstance(plan, spec.plan_class):
        raise ValueError(f"Task {spec.number} bundles hold a {spec.plan_class.__name__}, got {type(plan).__name__}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plan.save(staging / PLAN)
        (staging / MODEL).write_text(json.dumps(dict(model), indent=2, sort_keys=True) + "\n")
        for name, state in (state_dicts or {}).items():
            torch.save({k: v.detach().cpu() for k, v in state.items()}, staging / name)
        for name, content in (json_files or {}).items():
            (staging / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        for name, source in (bundles or {}).items():
            shutil.copytree(source, staging / name)
        files = {p.relative_to(staging).as_posix(): sha256_of(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "task": spec.number,
            "hecktor_version": hecktor.__version__,
            "plan_digest": plan.digest(),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it 0700; the containers read it as a non-root user
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def load_bundle(path: str | Path, task: int) -> Bundle:
    """Verify and open a bundle for ``task``; any inconsistency is a :class:`BundleError`."""
    path = Path(path)
    task = get_task(task).number
    fix = "re-export it with the training scripts (docs/reference/bundle-format.md)"
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"no model bundle at {path} ({MANIFEST} missing); {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not _is_integer(
            manifest.get("version"), VERSION):
        raise BundleError(f"{manifest_path} is not a {FORMAT} v{VERSION} manifest; {fix}")
    problem = _manifest_shape_problem(manifest)
    if problem is not None:
        raise BundleError(f"{manifest_path} is malformed: {problem}; {fix}")
    if manifest["task"] != task:
        raise BundleError(f"{path} is a Task {manifest['task']} bundle, but Task {task} was asked for")
    listed = manifest["files"]
    for name, expected in listed.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle file missing: {file}; {fix}")
        if sha256_of(file) != expected:
            raise BundleError(f"bundle file changed since export (SHA-256 mismatch): {file}; {fix}")
    present = (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    extra = sorted(name for name in present if name != MANIFEST and name not in listed)
    if extra:
        raise BundleError(f"{path} holds file(s) not in its manifest: {', '.join(extra)}; {fix}")
    for required in (PLAN, MODEL):
        if required not in listed:
            raise BundleError(f"{path} has no {required}; {fix}")
    try:
        stored = json.loads((path / PLAN).read_text())
        if not isinstance(stored, dict):
            raise InputError(f"holds {_json_type(stored)}, not a JSON object")
        if plan_digest(stored) != manifest["plan_digest"]:
            raise BundleError(f"{path / PLAN} is not the plan the models were trained with (digest mismatch); {fix}")
        plan = get_task(task).plan_class.from_dict(stored)
    except (InputError, json.JSONDecodeError) as error:
        raise BundleError(f"{path / PLAN}: {error}; {fix}") from None
    try:
        model = json.loads((path / MODEL).read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path / MODEL} is not valid JSON ({error}); {fix}") from None
    if not isinstance(model, dict):
        raise BundleError(f"{path / MODEL} holds {_json_type(model)}, not a JSON object; {fix}")
    return Bundle(path=path, task=task, plan=plan, model=model, manifest=manifest)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value with its article (``"1"``: a string), for messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_integer(value: Any, expected: int | None = None) -> bool:
    """A JSON integer (``true`` is not 1 here, nor ``"1"``), equal to ``expected`` when given."""
    return type(value) is int and (expected is None or value == expected)


def _manifest_shape_problem(manifest: Mapping[str, Any]) -> str | None:
    """Why a manifest object lacks the keys and types :func:`write_bundle` writes (``None`` when it has them): a task
    number, a plan digest string and ``files`` an object of file names inside the bundle to SHA-256 digests. Each
    problem is one line, so that a hand-edited or truncated manifest never ends in a traceback."""
    task = manifest.get("task")
    if "task" not in manifest:
        return "no 'task'"
    if not _is_integer(task):
        return f"its task is {json.dumps(task)} ({_json_type(task)}), not a task number such as 1"
    if not isinstance(manifest.get("plan_digest"), str):
        return f"its plan_digest is {json.dumps(manifest.get('plan_digest'))}, not a digest string"
    files = manifest.get("files")
    if "files" not in manifest:
        return "no 'files'"
    if not isinstance(files, dict):
        return f"its files is {_json_type(files)}, not an object {{file name: SHA-256}}"
    for name, digest in files.items():
        parts = PurePosixPath(name).parts
        if not name or PurePosixPath(name).is_absolute() or ".." in parts or name == MANIFEST:
            return f"its file name {name!r} is not a file inside the bundle"
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return f"its entry for {name} is {json.dumps(digest)}, not a SHA-256 digest (64 hexadecimal digits)"
    return None


def verify_bundle(path: str | Path, task: int) -> Bundle:
    """:func:`load_bundle`, then every listed state dict (``*.pt``) loaded safely and every listed JSON file parsed:
    what ``build.sh`` checks before it builds a bundle into an image (a bundle that would fail only on the platform
    fails here). Loading the network itself needs the task's predictor (``hecktor.runtime``), above this module.

    Raises:
        BundleError: the first problem, naming the file.
    """
    bundle = load_bundle(path, task)
    for name in sorted(bundle.manifest["files"]):
        try:
            if name.endswith(".pt"):
                bundle.load_state_dict(name)
            elif name.endswith(".json"):
                bundle.load_json(name)
        except Exception as error:  # noqa: BLE001  (torch.load raises pickle, runtime and EOF errors alike)
            detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise BundleError(f"{bundle.path / name} cannot be loaded ({detail}); re-export the bundle") from None
    return bundle


def main(argv: list[str] | None = None) -> int:
    """``python -m hecktor.bundle verify DIR --task N``: one line, ``ok: ...`` (exit 0) or ``error: ...`` (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m hecktor.bundle",
                                     description="Verify an exported model bundle as loading does.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="checksums, task, plan and every weights file of a bundle")
    verify.add_argument("folder", type=Path, help="the bundle's folder (where manifest.json is)")
    verify.add_argument("--task", type=int, required=True, help="the task the bundle must be for (required)")
    args = parser.parse_args(argv)
    try:
        bundle = verify_bundle(args.folder, args.task)
    except (HecktorError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"ok: {bundle.path} is a Task {bundle.task} bundle ({len(bundle.manifest['files'])} files verified, plan "
          f"{bundle.manifest['plan_digest']}, exported by hecktor {bundle.manifest.get('hecktor_version', '?')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
