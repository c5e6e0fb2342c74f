"""Run notebooks in the smoke profile on the CPU, but along the code paths a GPU run takes.

    .venv/bin/python .ci/emulate_gpu_paths.py notebooks/05_ddpm.ipynb [more.ipynb ...]

On a CPU, ``helpers.runtime.autocast`` is a no-op and ``maybe_compile`` returns the model unchanged,
so a smoke run never meets what only the full GPU run does: bf16 activations meeting float32 tensors,
and ``torch.compile`` tracing the model. Device minutes are scarce, so this script finds those
failures here first. It puts one cell in front of each notebook (in a temporary copy):

- ``autocast`` becomes ``torch.autocast("cpu", dtype=torch.bfloat16)``. The CPU's autocast op lists
  are close to CUDA's, not identical.
- ``maybe_compile`` becomes ``torch.compile(..., backend="aot_eager")``. Dynamo traces the code and
  AOTAutograd builds the joint graph, as on the GPU. Inductor's code generation is not exercised.
- A ``compile`` setting in the smoke profile is switched on.

Then it executes the copy as ``.ci/execute_notebook.py`` does and exits non-zero if any notebook
fails. Executed copies go to ``$OUT`` (default: a temporary folder); the notebooks are not touched.
This is a pre-flight check, not a substitute for the GPU run.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

PATCH = '''# Added by .ci/emulate_gpu_paths.py: the GPU code paths, emulated on the CPU.
import torch
import helpers.profile as _profile
import helpers.runtime as _runtime

_runtime.autocast = lambda device: torch.autocast("cpu", dtype=torch.bfloat16)


def _compile(model, device, **kwargs):
    kwargs.pop("mode", None)  # CUDA-graph modes mean nothing to aot_eager
    return torch.compile(model, backend="aot_eager", **kwargs)


_runtime.maybe_compile = _compile
_choose = _profile.choose


def _choose_compiled(*, full, smoke, profile=None):
    smoke = dict(smoke)
    if "compile" in smoke:
        smoke["compile"] = True
    return _choose(full=full, smoke=smoke, profile=profile)


_profile.choose = _choose_compiled
'''


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    root = Path(__file__).resolve().parent.parent
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-emulation-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COURSE_PROFILE="smoke")
    failed = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"no such notebook: {path}")
        nb = nbformat.read(path, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(PATCH))
        # the copy sits beside the original, so relative paths in the notebook resolve the same way
        copy = path.with_name(f"_gpu_emulation_{path.name}")
        nbformat.write(nb, copy)
        try:
            run = subprocess.run([sys.executable, str(root / ".ci" / "execute_notebook.py"), str(copy),
                                  str(out / path.name)], env=env, capture_output=True, text=True)
        finally:
            copy.unlink()
        ok = run.returncode == 0 and "NOTEBOOK OK" in run.stdout
        print(f"{path.name}: {'OK' if ok else 'FAILED'} (executed copy: {out / path.name})")
        if not ok:
            failed.append(path.name)
            errors = [line for line in run.stdout.splitlines() if " ERROR " in line]
            print("\n".join(errors) or run.stdout[-2000:], run.stderr[-1500:], sep="\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
