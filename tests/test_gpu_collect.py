"""Taking a GPU run home (.ci/gpu_collect.py): only a clean full-profile run of the committed code is stored."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COLLECT = ROOT / ".ci" / "gpu_collect.py"
NAME = "05_ddpm"
RECORD = {"chapter": NAME, "profile": "full", "metrics": {"fd_ratio": 0.1}, "device": "NVIDIA H200", "minutes": 7.4}


def _run_files(tmp_path: Path, *, ok=True, record=RECORD, edit=None, error=False):
    """A fake repository (the real chapter notebook) and a fake $OUT of one device run."""
    repo, out = tmp_path / "repo", tmp_path / "out"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "results").mkdir()
    out.mkdir()
    nb = json.loads((ROOT / "notebooks" / f"{NAME}.ipynb").read_text())
    if not any("no-stored-run" in c["metadata"].get("tags", []) for c in nb["cells"]):   # once 05 has a stored run
        nb["cells"].insert(1, {"cell_type": "markdown", "id": "no-stored-run", "metadata": {"tags": ["no-stored-run"]},
                               "source": ["No stored run yet\n"]})
    (repo / "notebooks" / f"{NAME}.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "error", "ename": "X", "evalue": "", "traceback": []} if error else
                       {"output_type": "stream", "name": "stdout", "text": ["from the GPU\n"]}]
    if edit:
        code["source"] = ["# edited after the run\n"] + code["source"]
    (out / f"{NAME}.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    log = "[  400s] cell 44 done check passed: {'fd_ratio': 0.1}\n"
    log += ("NOTEBOOK OK\nsaved after 445s\nEXIT 0 after 446 s\n" if ok else "saved after 560s\nEXIT 124 after 560 s\n")
    log += "=== RESULTS JSON\n" + json.dumps(record, indent=2) + "\n"
    (out / f"{NAME}.log").write_text(log)
    return repo, out


def _collect(repo: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COLLECT), str(out), "--root", str(repo)],
                          capture_output=True, text=True, timeout=60)


def test_clean_run_is_stored(tmp_path):
    repo, out = _run_files(tmp_path)
    res = _collect(repo, out)
    assert res.returncode == 0, res.stdout + res.stderr
    stored, executed = (json.loads(p.read_text()) for p in (repo / "notebooks" / f"{NAME}.ipynb", out / f"{NAME}.ipynb"))
    note = [c for c in executed["cells"] if "no-stored-run" in c["metadata"].get("tags", [])]
    assert len(note) == 1 and stored["cells"] == [c for c in executed["cells"] if c not in note]  # the note gone
    assert "from the GPU" in json.dumps(stored)                                                    # outputs kept
    assert json.loads((repo / "results" / f"{NAME}.json").read_text()) == RECORD
    assert "7.4 min on NVIDIA H200" in res.stdout


@pytest.mark.parametrize("case, why", [
    (dict(ok=False), "NOTEBOOK OK"),
    (dict(record=dict(RECORD, profile="smoke")), "full profile"),
    (dict(record=dict(RECORD, device="CPU (x86_64, 2 cores)")), "full profile on a GPU"),
    (dict(edit=True), "differ from the repository"),
    (dict(error=True), "error output"),
])
def test_doubtful_run_is_refused(tmp_path, case, why):
    repo, out = _run_files(tmp_path, **case)
    before = (repo / "notebooks" / f"{NAME}.ipynb").read_bytes()
    res = _collect(repo, out)
    assert res.returncode == 1 and "REFUSED" in res.stdout and why in res.stdout, res.stdout
    assert (repo / "notebooks" / f"{NAME}.ipynb").read_bytes() == before
    assert not (repo / "results" / f"{NAME}.json").exists()
