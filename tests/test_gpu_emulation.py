"""The CPU pre-flight check of the GPU code paths (.ci/emulate_gpu_paths.py) must catch what a plain
smoke run cannot: here, a bf16 activation meeting a float32 matrix outside autocast."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "emulate_gpu_paths.py"
EXECUTE = ROOT / ".ci" / "execute_notebook.py"

MIXES_DTYPES = '''import torch
from helpers.runtime import autocast
lin = torch.nn.Linear(4, 4)
with autocast("cpu"):
    h = lin(torch.randn(2, 4))   # bf16 under (emulated) GPU autocast, float32 on a plain CPU run
print(torch.mm(h, torch.randn(4, 4)).dtype)
'''

COMPILES = '''import torch
from helpers.profile import choose
from helpers.runtime import maybe_compile
CFG = choose(full=dict(compile=True), smoke=dict(compile=False))
assert CFG.compile, "the emulation switches the smoke profile's compile setting on"
f = maybe_compile(lambda x: torch.sin(x) * 2, "cpu")
assert hasattr(f, "_torchdynamo_orig_callable"), "maybe_compile should return a compiled function here"
print(f(torch.ones(3)))
'''


def _notebook(tmp_path: Path, name: str, source: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _run(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OUT": str(out)})


def test_emulation_catches_a_dtype_mismatch_that_the_smoke_run_misses(tmp_path):
    nb = _notebook(tmp_path, "mixes.ipynb", MIXES_DTYPES)
    plain = _run(str(EXECUTE), str(nb), str(tmp_path / "plain.ipynb"), out=tmp_path)
    assert plain.returncode == 0 and "NOTEBOOK OK" in plain.stdout, plain.stderr[-2000:]
    emulated = _run(str(SCRIPT), str(nb), out=tmp_path / "out")
    assert emulated.returncode == 1, emulated.stdout
    assert "mixes.ipynb: FAILED" in emulated.stdout and "RuntimeError" in emulated.stdout
    assert not (tmp_path / "_gpu_emulation_mixes.ipynb").exists(), "the temporary copy is removed"


def test_emulation_compiles_and_passes_a_clean_notebook(tmp_path):
    nb = _notebook(tmp_path, "clean.ipynb", COMPILES)
    emulated = _run(str(SCRIPT), str(nb), out=tmp_path / "out")
    assert emulated.returncode == 0, emulated.stdout + emulated.stderr[-2000:]
    assert "clean.ipynb: OK" in emulated.stdout


def test_emulation_rejects_a_missing_notebook(tmp_path):
    run = _run(str(SCRIPT), str(tmp_path / "nope.ipynb"), out=tmp_path)
    assert run.returncode != 0 and "no such notebook" in run.stderr
