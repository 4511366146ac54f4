"""The model tarball that Grand Challenge takes apart from the image: a bundle's files at the root of a ``.tar.gz``.

The platform extracts an algorithm's ``model.tar.gz`` (uploaded under Algorithm → Models) into ``/opt/ml/model/``,
where :func:`hecktor.container.locate_bundle` finds the bundle (docs/reference/platform-interface.md). ``build.sh
--save`` writes one per task with :func:`write_model_tarball`, which reads what it wrote back before it names it:
every file of the bundle's manifest, nothing else, each with the manifest's SHA-256. ``test_container.sh`` mounts
what :func:`extract_model_tarball` takes out of it at ``/opt/ml/model``, as the platform does.

:func:`verify_bundle_loads` loads a bundle as a container does: :func:`hecktor.bundle.verify_bundle` (checksums,
task, plan, every file readable), then the task's predictor, whose networks must take their weights. ``build.sh``
runs it on every bundle it uses before the first image is built.

Command line (``python -m hecktor.model_tarball --help``)::

    python -m hecktor.model_tarball verify BUNDLE --task N
    python -m hecktor.model_tarball write BUNDLE OUT.tar.gz --task N
    python -m hecktor.model_tarball extract MODEL.tar.gz DEST
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hecktor.bundle import MANIFEST, Bundle, load_bundle, verify_bundle
from hecktor.errors import BundleError, HecktorError
from hecktor.tasks import get_task

__all__ = ["TarballContent", "verify_bundle_loads", "write_model_tarball", "verify_model_tarball", "extract_model_tarball"]

_FILE_MODE, _DIR_MODE = 0o644, 0o755  # the platform's user is not the exporter: everything readable by anyone


@dataclass(frozen=True)
class TarballContent:
    """What a verified model tarball holds: its task, its files (``manifest.json`` included) and their bytes."""

    path: Path
    task: int
    files: tuple[str, ...]
    content_bytes: int


def verify_bundle_loads(path: str | Path, task: int | str) -> Bundle:
    """Load ``path`` as the container of ``task`` loads it: :func:`hecktor.bundle.verify_bundle` (the manifest's
    checksums, task and plan, every weights and JSON file readable), then the task's predictor
    (:func:`hecktor.runtime.predictor_class`) on the CPU, which builds every network with its weights and every head.
    Any mismatch is a :class:`BundleError` naming the file."""
    from hecktor.runtime import predictor_class  # torch, MONAI and the predictors: only when a bundle is loaded

    spec = get_task(task)
    bundle = verify_bundle(path, spec.number)
    predictor_class(spec).from_bundle(Path(path), device="cpu")
    return bundle


def _bundle_files(bundle: Bundle) -> list[str]:
    return sorted({*bundle.manifest["files"], MANIFEST})


def write_model_tarball(bundle_dir: str | Path, out_path: str | Path, task: int | str) -> TarballContent:
    """Write ``bundle_dir``'s files at the root of the gzipped tar ``out_path``, read it back and check it against the
    bundle's manifest, then move it into place (an interrupted or failed write leaves nothing under that name).

    The bundle is checked first (:func:`hecktor.bundle.load_bundle`: checksums, task, plan); the archive is the same
    bytes for the same bundle (sorted names, no owners, time 0), readable by any user once extracted.
    """
    bundle = load_bundle(bundle_dir, get_task(task).number)
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    folders = sorted({str(parent) for name in _bundle_files(bundle) for parent in PurePosixPath(name).parents
                      if str(parent) != "."})
    try:
        # tarfile's own "w:gz" stamps the time and the file's name into the gzip header; this GzipFile neither.
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in folders:
                tar.addfile(_member(name, tarfile.DIRTYPE, _DIR_MODE, 0))
            for name in _bundle_files(bundle):
                source = bundle.path / name
                with open(source, "rb") as handle:
                    tar.addfile(_member(name, tarfile.REGTYPE, _FILE_MODE, source.stat().st_size), handle)
        content = verify_model_tarball(partial, bundle.manifest)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return TarballContent(out_path, content.task, content.files, content.content_bytes)


def _member(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def verify_model_tarball(path: str | Path, manifest: dict | None = None) -> TarballContent:
    """Read a model tarball back and check it: regular files and folders only, relative names inside the archive,
    exactly the files of the bundle's manifest plus ``manifest.json``, each with the manifest's SHA-256.

    Args:
        path: the ``.tar.gz``.
        manifest: the bundle's manifest the archive must hold (its ``manifest.json`` must equal it); default: the
            archive's own ``manifest.json``.

    Raises:
        BundleError: one line naming the archive and the member at fault.
    """
    path = Path(path)
    fix = "write it again with ./build.sh --save (or python -m hecktor.model_tarball write)"
    digests: dict[str, str] = {}
    stored_manifest = None
    total = 0
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = _checked_name(path, member, fix)
                if member.isdir():
                    continue
                handle = tar.extractfile(member)
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    if name == MANIFEST:
                        stored_manifest = (stored_manifest or b"") + block
                if name in digests:
                    raise BundleError(f"{path}: {name} is in the archive twice; {fix}")
                digests[name] = digest.hexdigest()
                total += member.size
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{path} is not a readable .tar.gz ({error}); {fix}") from None
    if stored_manifest is None:
        raise BundleError(f"{path} holds no {MANIFEST} at its root; {fix}")
    try:
        own = json.loads(stored_manifest)
    except ValueError as error:
        raise BundleError(f"{path}: its {MANIFEST} is not valid JSON ({error}); {fix}") from None
    if manifest is not None and own != manifest:
        raise BundleError(f"{path}: its {MANIFEST} is not the bundle's; {fix}")
    listed = own.get("files") if isinstance(own, dict) else None
    if not isinstance(listed, dict):
        raise BundleError(f"{path}: its {MANIFEST} lists no files; {fix}")
    missing = sorted(set(listed) - set(digests))
    extra = sorted(set(digests) - set(listed) - {MANIFEST})
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)} of its manifest; {fix}")
    if extra:
        raise BundleError(f"{path} holds file(s) not in its manifest: {', '.join(extra)}; {fix}")
    for name in sorted(listed):
        if digests[name] != listed[name]:
            raise BundleError(f"{path}: {name} differs from its manifest (SHA-256 mismatch); {fix}")
    return TarballContent(path, own.get("task"), tuple(sorted(digests)), total)


def _checked_name(path: Path, member: tarfile.TarInfo, fix: str) -> str:
    """The member's name relative to the archive's root; anything the platform might place elsewhere is refused."""
    name = PurePosixPath(member.name)
    parts = [p for p in name.parts if p != "."]
    if name.is_absolute() or ".." in parts:
        raise BundleError(f"{path}: member {member.name!r} points outside the model folder; {fix}")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"{path}: member {member.name!r} is neither a file nor a folder; {fix}")
    return "/".join(parts) or "."


def extract_model_tarball(path: str | Path, dest: str | Path) -> TarballContent:
    """Verify a model tarball (:func:`verify_model_tarball`) and extract it into ``dest`` (absent or empty), as the
    platform fills ``/opt/ml/model``."""
    content = verify_model_tarball(path)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BundleError(f"{dest} is not empty; extract {path} into an empty or absent folder")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "r:gz") as tar:
        tar.extractall(dest, filter="data")  # verified above; the "data" filter refuses links and odd modes anyway
    return content


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hecktor.model_tarball",
                                     description="Verify a bundle as a container loads it, write it as the model "
                                                 "tarball Grand Challenge extracts into /opt/ml/model, or extract one.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="load BUNDLE as the task's container does (checksums, task, "
                                                "plan, networks)")
    verify.add_argument("bundle", type=Path)
    write = commands.add_parser("write", help="verify BUNDLE, write OUT (.tar.gz) and read it back")
    write.add_argument("bundle", type=Path)
    write.add_argument("out", type=Path)
    for command in (verify, write):
        command.add_argument("--task", required=True, help="the task the bundle is for (python -m hecktor.tasks)")
    extract = commands.add_parser("extract", help="verify TARBALL and extract it into DEST (absent or empty)")
    extract.add_argument("tarball", type=Path)
    extract.add_argument("dest", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "extract":
            content = extract_model_tarball(args.tarball, args.dest)
            print(f"extracted {args.tarball} into {args.dest}: Task {content.task} bundle, {len(content.files)} "
                  "files, checksums verified")
            return 0
        bundle = verify_bundle_loads(args.bundle, args.task)
        if args.command == "verify":
            print(f"{args.bundle}: Task {bundle.task} bundle verified ({len(bundle.manifest['files'])} files, "
                  "checksums, plan and networks load)")
            return 0
        content = write_model_tarball(args.bundle, args.out, args.task)
        print(f"wrote {args.out}: {len(content.files)} files at its root, {args.out.stat().st_size} bytes, read back "
              "and checked against the manifest")
        return 0
    except (HecktorError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - build.sh shows one line, never a traceback
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else "no message"
        print(f"error: unexpected {type(error).__name__} ({detail}); please report this bundle", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
