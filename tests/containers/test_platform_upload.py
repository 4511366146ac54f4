"""What the platform takes (issue 25): build.sh writes the image without its model and, with --save, the image archive
and the model tarball; it verifies every bundle it uses as a container loads it and builds every --task given.
test_container.sh mounts the model read-only at /opt/ml/model and prints the pre-flight report last.

Against the fake engine of ``helpers/packaging.py`` (no container engine needed), with the committed fixture bundles
where a bundle must load."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from hecktor.tasks import get_task
from helpers.packaging import engine_calls, engine_env, scratch_repo
from helpers.paths import FIXTURE_BUNDLES, REPO

TASK = 2  # the task whose fixture bundle the scripts verify, pack and mount here
SPEC = get_task(TASK)


def _repo_with_fixture_bundle(tmp_path: Path, fixture: str = f"task{TASK}") -> Path:
    repo = scratch_repo(tmp_path, bundles=[])
    shutil.copytree(FIXTURE_BUNDLES / fixture, repo / SPEC.bundle_dir)
    return repo


def _run(repo: Path, script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / script), *args], capture_output=True, text=True, env=env, timeout=180)


def test_build_builds_every_task_given_once_in_order_without_any_bundle(tmp_path):
    repo = scratch_repo(tmp_path, bundles=[])
    result = _run(repo, "build.sh", "--task", "2", "--task", "1", "--task", "2", env=engine_env(tmp_path, repo))
    assert result.returncode == 0, result.stderr
    builds = [c for c in engine_calls(tmp_path) if c[0] == "build"]
    assert [b[b.index("-t") + 1] for b in builds] == ["hecktor-task2:latest", "hecktor-task1:latest"]
    assert not any("BUNDLE_IN_IMAGE=1" in b for b in builds)
    assert not any(c[0] == "save" for c in engine_calls(tmp_path))


def test_save_writes_both_files_and_test_container_runs_the_model_tarball_as_the_platform(tmp_path):
    repo = _repo_with_fixture_bundle(tmp_path)
    env = engine_env(tmp_path, repo)
    out = tmp_path / "upload"
    result = _run(repo, "build.sh", "--task", str(TASK), "--save", "--save-dir", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{SPEC.image}-model.tar.gz", f"{SPEC.image}.tar.gz"]
    archive, model = out / f"{SPEC.image}.tar.gz", out / f"{SPEC.image}-model.tar.gz"
    assert gzip.decompress(archive.read_bytes()) == f"image archive of {SPEC.image}:latest".encode()
    bundle = repo / SPEC.bundle_dir
    with tarfile.open(model, "r:gz") as tar:
        members = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}
    assert members == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundle.iterdir()}
    lines = result.stdout.splitlines()
    assert f"==> Task {TASK}: verifying {bundle} as the container loads it" in lines
    assert f"==> image archive {archive}: 0.00 GB of the platform's 10 GB (0.0 %)" in lines
    assert f"==> model tarball {model}: 0.00 GB of the platform's 10 GB (0.0 %)" in lines
    builds = [c for c in engine_calls(tmp_path) if c[0] == "build"]
    assert len(builds) == 1 and "BUNDLE_IN_IMAGE=1" not in builds[0]

    # The model the run gets is the tarball, extracted into the work folder and mounted read-only; the bundle of the
    # repository is not used.
    shutil.rmtree(bundle)
    work = tmp_path / "work"
    result = _run(repo, "test_container.sh", "--task", str(TASK), "--cases", "1", "--save-dir", str(out), "--work",
                  str(work), env={**env, "FAKE_STATS": "1.5GiB / 16GiB"})
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = [c for c in engine_calls(tmp_path) if c[0] == "run"]
    volumes = [run[i + 1] for i, a in enumerate(run) if a == "--volume"]
    assert f"{work}/task{TASK}/model:/opt/ml/model:ro" in volumes
    log = (work / f"task{TASK}" / "logs" / "case-000-identity.log").read_text()
    assert f"model bundle: {work}/task{TASK}/model {sorted(members)}" in log
    report = result.stdout.splitlines()
    assert report[-1] == "pre-flight: every case and file within the platform's limits"
    assert report[-5] == f"Task {TASK}: {SPEC.limit_s:g} s per case, 16 GB memory, 10 GB per uploaded file"
    # The container's memory as the engine's stats column gives it (FAKE_STATS), sampled while the case runs.
    assert report[-4].startswith("  case-000-identity") and report[-4].endswith(
        "peak   1.50 GB =   9.4 % of 16 GB (sampled with fake-docker stats)   ok")
    assert report[-3].startswith("  model tarball") and report[-3].endswith(f"{model}   ok")
    assert report[-2].startswith("  image archive") and report[-2].endswith(f"{archive}   ok")
    records = [json.loads(line) for line in (work / "preflight.jsonl").read_text().splitlines()]
    assert [r["record"] for r in records] == ["size", "size", "case"]
    assert records[0]["bytes"] == model.stat().st_size and records[2]["status"] == 0

    # A model tarball with a file its manifest does not list is refused before anything runs.
    tampered = tmp_path / "tampered" / model.name
    tampered.parent.mkdir()
    with tarfile.open(model, "r:gz") as source, tarfile.open(tampered, "w:gz") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        extra = tarfile.TarInfo("notes.txt")
        extra.size = 1
        tar.addfile(extra, io.BytesIO(b"x"))
    shutil.copy(archive, tampered.parent)
    result = _run(repo, "test_container.sh", "--task", str(TASK), "--cases", "1", "--save-dir", str(tampered.parent),
                  "--work", str(tmp_path / "work2"), env=env)
    assert result.returncode != 0
    assert f"error: {tampered} holds file(s) not in its manifest: notes.txt" in result.stderr
    assert f"test_container.sh: error: Task {TASK} model tarball {tampered} refused" in result.stderr


def test_build_refuses_a_changed_or_foreign_bundle_before_building(tmp_path):
    repo = _repo_with_fixture_bundle(tmp_path)
    env = engine_env(tmp_path, repo)
    changed = repo / SPEC.bundle_dir / "model.json"
    changed.write_text(changed.read_text().replace("}", " }", 1))
    result = _run(repo, "build.sh", "--task", str(TASK), "--bundle-in-image", env=env)
    assert result.returncode != 0
    assert result.stderr.strip() == (f"build.sh: error: Task {TASK} bundle refused: bundle file changed since export "
                                     f"(SHA-256 mismatch): {changed}; re-export it with the training scripts "
                                     "(docs/reference/bundle-format.md)")
    assert not any(c[0] == "build" for c in engine_calls(tmp_path))

    shutil.rmtree(repo / SPEC.bundle_dir)
    shutil.copytree(FIXTURE_BUNDLES / "task3", repo / SPEC.bundle_dir)
    result = _run(repo, "build.sh", "--task", str(TASK), "--save", env=env)
    assert result.returncode != 0
    assert result.stderr.strip() == (f"build.sh: error: Task {TASK} bundle refused: {repo / SPEC.bundle_dir} is a "
                                     f"Task 3 bundle, but Task {TASK} was asked for")
    assert not any(c[0] == "build" for c in engine_calls(tmp_path))


def test_test_container_model_options(tmp_path):
    repo = scratch_repo(tmp_path)
    env = engine_env(tmp_path, repo)
    # A self-contained image: nothing is mounted at /opt/ml/model and the run finds the bundle beside inference.py.
    work = tmp_path / "work"
    result = _run(repo, "test_container.sh", "--task", str(TASK), "--cases", "1", "--bundle-in-image", "--work",
                  str(work), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = [c for c in engine_calls(tmp_path) if c[0] == "run"]
    assert not any(v.endswith(":/opt/ml/model:ro") for v in run)
    log = (work / f"task{TASK}" / "logs" / "case-000-identity.log").read_text()
    assert f"model bundle: {repo / SPEC.bundle_dir} ['manifest.json']" in log

    # --model N=PATH: another bundle folder, given to inference.py as HECKTOR_MODEL_DIR without an engine.
    other = tmp_path / "other-bundle"
    other.mkdir()
    (other / "manifest.json").write_text("{}")
    (other / "weights.pt").write_text("w")
    result = _run(repo, "test_container.sh", "--no-engine", "--task", str(TASK), "--cases", "1", "--model",
                  f"{TASK}={other}", "--work", str(work), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"==> Task {TASK}: model {other}, given as HECKTOR_MODEL_DIR (for /opt/ml/model)" in result.stdout
    log = (work / f"task{TASK}" / "logs" / "case-000-identity.log").read_text()
    assert f"model bundle: {other} ['manifest.json', 'weights.pt']" in log
    assert "(peak RSS)   ok" in result.stdout.splitlines()[-3]

    for args, message in [
        (["--model", "9=x"], "--model needs N=PATH with N one of"),
        (["--model", f"{TASK}={tmp_path / 'absent'}"], f"--model {TASK}={tmp_path / 'absent'}: "
                                                       f"{tmp_path / 'absent'} does not exist"),
        (["--model", f"{TASK}={other / 'weights.pt'}"], f"no Task {TASK} model: {other / 'weights.pt'} is neither a "
                                                        "bundle folder nor a model tarball (.tar.gz)"),
        (["--bundle-in-image", "--save-dir", str(tmp_path)], "--bundle-in-image mounts no model: it excludes"),
        (["--save-dir", str(tmp_path)], f"no Task {TASK} model: {tmp_path}/{SPEC.image}-model.tar.gz is neither"),
    ]:
        result = _run(repo, "test_container.sh", "--task", str(TASK), *args, env=env)
        assert result.returncode != 0 and result.stderr.startswith("test_container.sh: error: "), args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _apt_mirror(etc: Path, suite: str = "bookworm") -> str:
    """podman_smoke.sh's apt_mirror function, run alone on the apt configuration under ``etc``."""
    script = (REPO / "scripts" / "podman_smoke.sh").read_text()
    function = script[script.index("apt_mirror() {"):]
    function = function[:function.index("\n}\n") + 3]
    result = subprocess.run(["bash", "-c", f"{function}\napt_mirror"], capture_output=True, text=True,
                            env={"APT_ETC": str(etc), "SUITE": suite, "PATH": "/usr/bin:/bin"}, check=True)
    return result.stdout


def test_podman_smoke_takes_the_mirror_from_the_apt_sources_and_dials_nowhere(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("# deb http://commented.example/debian bookworm main\n"
                                      "deb [arch=amd64 signed-by=/k.gpg] http://old.example/debian bullseye main\n")
    (etc / "sources.list.d" / "src.list").write_text("deb-src http://src.example/debian bookworm main\n")
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.example/archive\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src deb\nURIs: http://mirror.example/debian http://second.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    (etc / "sources.list.d" / "other.sources.disabled").write_text("Types: deb\nURIs: http://x.example\n"
                                                                    "Suites: bookworm\n")
    assert _apt_mirror(etc) == "http://mirror.example/debian\n"
    assert _apt_mirror(etc, "bullseye") == "http://old.example/debian\n"
    assert _apt_mirror(etc, "trixie") == ""
    (etc / "sources.list").write_text("deb http://one-line.example/debian bookworm main contrib\n")
    assert _apt_mirror(etc).splitlines()[0] == "http://one-line.example/debian"

    # "No network" is the container's interfaces, read from /sys/class/net: nothing is dialled.
    script = (REPO / "scripts" / "podman_smoke.sh").read_text()
    assert "interfaces = sorted(os.listdir('/sys/class/net'))" in script and "if interfaces != ['lo']:" in script
    assert "socket" not in script and "http" not in script.replace("$mirror", "")
