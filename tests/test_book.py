"""The book's own rules: the table of contents, the Colab cell, the profiles and stored outputs."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = ["00_toolkit", "01_fedbabu", "02_ssl", "03_clip", "04_transformers", "05_ddpm",
            "06_forward_forward", "07_stylespeech"]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _repo_url():
    text = (ROOT / "_config.yml").read_text()
    return re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M).group(1)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


def test_toc_lists_exactly_the_notebooks():
    toc = (ROOT / "_toc.yml").read_text()
    listed = re.findall(r"file:\s*notebooks/(\S+)", toc)
    assert sorted(listed) == [p.stem for p in NOTEBOOKS]
    assert listed == sorted(listed), "chapters must appear in course order"
    for page in re.findall(r"(?:file|root):\s*(book/\S+)", toc):
        assert (ROOT / f"{page}.md").exists(), page


def test_notebook_names_follow_the_course_plan():
    for path in NOTEBOOKS:
        assert path.stem in CHAPTERS, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_installs_helpers_from_the_configured_repository(path):
    code = [_src(c) for c in _cells(path) if c["cell_type"] == "code"]
    setup = [c for c in code[:3] if "google.colab" in c]
    assert setup, "one of the first code cells must be the Colab set-up cell"
    assert f"git+{_repo_url()}" in setup[0]
    code_only = re.sub(r"#[^\n]*", "", setup[0])
    assert not re.search(r"\btorch(vision|audio)?\b(?![-_.])", code_only), "the set-up cell must never install torch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_only_the_config_cell_knows_the_profile(path):
    code = [_src(c) for c in _cells(path) if c["cell_type"] == "code"]
    config = [i for i, c in enumerate(code) if "choose(" in c and "full=" in c and "smoke=" in c]
    assert len(config) == 1, "exactly one config cell declaring both profiles"
    for i, cell in enumerate(code):
        if i == config[0]:
            continue
        assert "COURSE_PROFILE" not in cell, f"code cell {i} reads COURSE_PROFILE"
        assert not re.search(r"['\"]smoke['\"]", cell), f"code cell {i} names the smoke profile"
        assert not re.search(r"\bif\b[^\n]*\.profile\b", cell), f"code cell {i} branches on the profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_last_cell_is_a_hidden_check(path):
    last = [c for c in _cells(path) if c["cell_type"] == "code"][-1]
    assert "remove-cell" in last.get("metadata", {}).get("tags", [])
    assert "assert" in _src(last)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_a_clean_full_gpu_run(path):
    outputs = [o for c in _cells(path) if c["cell_type"] == "code" for o in c.get("outputs", [])]
    if not outputs:
        return  # committed without outputs: no GPU run yet
    assert not any(o["output_type"] == "error" for o in outputs), "an error output is committed"
    text = json.dumps(outputs)
    assert "profile='smoke'" not in text and "smoke profile" not in text
    result = ROOT / "results" / f"{path.stem}.json"
    assert result.exists(), f"stored outputs but no {result.name}"
    record = json.loads(result.read_text())
    assert record["profile"] == "full" and "CPU" not in record["device"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_page_without_stored_outputs_says_so_and_only_then(path):
    """A chapter committed without outputs carries the "No stored run yet" note (a markdown cell tagged
    `no-stored-run`, right after the title cell); once a GPU run's outputs are stored, the note must go."""
    cells = _cells(path)
    has_outputs = any(c.get("outputs") for c in cells if c["cell_type"] == "code")
    notes = [i for i, c in enumerate(cells) if "no-stored-run" in c.get("metadata", {}).get("tags", [])]
    if has_outputs:
        assert not notes, "outputs are stored: delete the 'No stored run yet' cell (tagged no-stored-run)"
    else:
        assert notes == [1], "no stored outputs: the second cell must be the 'No stored run yet' note"
        assert cells[1]["cell_type"] == "markdown" and "No stored run yet" in _src(cells[1])


def test_results_files_belong_to_chapters():
    for path in (ROOT / "results").glob("*.json"):
        assert (ROOT / "notebooks" / f"{path.stem}.ipynb").exists(), path.name
        assert json.loads(path.read_text())["profile"] == "full"
