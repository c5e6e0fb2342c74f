"""The staging step of the GPU runbook (.ci/gpu_stage.sh, CONTRIBUTING.md): what one device call carries must
be kept for the next, and a Flower tarball must be unpacked only when all of its pieces are there and intact."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".ci" / "gpu_stage.sh"
PLAN = ROOT / ".ci" / "gpu_plan.sh"


def stage(folder: Path, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, STAGE_ROOT=str(root))
    return subprocess.run(["bash", str(STAGE), str(folder)], capture_output=True, text=True, env=env, timeout=60)


def pieces(tmp_path: Path, blob: bytes, parts: int = 2) -> list[Path]:
    """Split blob into folders a, b, ... as .ci/gpu_flower_wheels.sh does (part-aa, part-ab, ... + SHA256)."""
    size = -(-len(blob) // parts)
    folders = []
    for i in range(parts):
        folder = tmp_path / "carried" / "abcdefgh"[i]
        folder.mkdir(parents=True)
        (folder / f"part-a{'abcdefgh'[i]}").write_bytes(blob[i * size:(i + 1) * size])
        (folder / "SHA256").write_text(f"{hashlib.sha256(blob).hexdigest()} {parts}\n")
        folders.append(folder)
    return folders


def test_first_piece_is_kept_and_waits_for_the_rest(tmp_path):
    a, _ = pieces(tmp_path, os.urandom(5000))
    out = stage(a, tmp_path / "machine")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 of 2" in out.stdout
    assert (tmp_path / "machine" / "fl" / "part-aa").read_bytes() == (a / "part-aa").read_bytes()
    assert not (tmp_path / "machine" / "site_fl").exists()


def test_damaged_piece_is_refused(tmp_path):
    a, b = pieces(tmp_path, os.urandom(5000))
    damaged = bytearray((b / "part-ab").read_bytes())
    damaged[10] ^= 0xFF
    (b / "part-ab").write_bytes(bytes(damaged))
    assert stage(a, tmp_path / "machine").returncode == 0
    out = stage(b, tmp_path / "machine")
    assert out.returncode != 0
    assert "do not match" in out.stdout
    assert not (tmp_path / "machine" / "fl" / "wheels").exists()


def test_malformed_checksum_file_is_refused(tmp_path):
    (a,) = pieces(tmp_path, os.urandom(100), parts=1)
    (a / "SHA256").write_text(hashlib.sha256(b"x").hexdigest() + "\n")  # the old format: no number of parts
    out = stage(a, tmp_path / "machine")
    assert out.returncode != 0 and "CHECKSUM PARTS" in out.stdout


def test_data_is_kept_for_later_calls(tmp_path):
    carried = tmp_path / ".gpu-stage"
    (carried / "data" / "speech").mkdir(parents=True)
    (carried / "data" / "speech" / "clip.wav").write_bytes(b"RIFF1234")
    out = stage(carried, tmp_path / "machine")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "machine" / "stage" / "speech" / "clip.wav").read_bytes() == b"RIFF1234"


@pytest.mark.parametrize("make", [False, True])
def test_missing_or_empty_folder_is_an_error(tmp_path, make):
    folder = tmp_path / "nothing"
    if make:
        folder.mkdir()
    out = stage(folder, tmp_path / "machine")
    assert out.returncode == 1
    assert ("nothing to stage" if make else "no folder") in out.stdout


def test_unknown_plan_is_refused():
    out = subprocess.run(["bash", str(PLAN), "04"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "unknown plan '04'" in out.stdout


def test_run_call_adds_its_data_to_the_staged_data(tmp_path):
    """gpu_batch.sh (the run call) reads from the staging folder when a staging call made one."""
    machine, tree = tmp_path / "machine", tmp_path / "tree"
    (machine / "stage" / "speech").mkdir(parents=True)
    (machine / "stage" / "speech" / "a.wav").write_bytes(b"1")
    (machine / "site" / "nbclient").mkdir(parents=True)        # as if a staging call installed the wheels
    (tree / ".gpu" / "data" / "cifar10-jpeg").mkdir(parents=True)
    (tree / ".gpu" / "data" / "cifar10-jpeg" / "b.jpg").write_bytes(b"2")
    env = {k: v for k, v in os.environ.items() if k != "COURSE_DATA"}
    env.update(STAGE_ROOT=str(machine), OUT=str(tmp_path / "out"))
    out = subprocess.run(["bash", str(ROOT / ".ci" / "gpu_batch.sh")], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=120)
    assert "no wheels" not in out.stdout, out.stdout
    assert (machine / "stage" / "cifar10-jpeg" / "b.jpg").read_bytes() == b"2"
    assert (machine / "stage" / "speech" / "a.wav").read_bytes() == b"1"
