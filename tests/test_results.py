import json
import subprocess

import pytest

from helpers.results import REQUIRED, build_results, project_root, results_table, save_results
from helpers.runtime import device_name


def test_full_profile_writes_all_fields(tmp_path):
    path = save_results("00_toolkit", {"test_acc": 0.93}, profile="full", device="cpu", minutes=2.345,
                        config={"epochs": 10}, reference={"test_acc": 0.94}, folder=tmp_path)
    record = json.loads(path.read_text())
    assert path.name == "00_toolkit.json"
    for field in REQUIRED:
        assert field in record
    assert record["metrics"] == {"test_acc": 0.93} and record["reference"] == {"test_acc": 0.94}
    assert record["profile"] == "full" and record["minutes"] == 2.35 and record["config"] == {"epochs": 10}
    assert record["versions"]["torch"]


def test_record_names_the_device_and_the_commit(tmp_path, monkeypatch):
    record = build_results("00_toolkit", {}, profile="full", device="cpu", minutes=0)
    assert record["device"] == device_name("cpu") and record["device"].startswith("CPU")
    assert record["peak_gpu_memory_gb"] is None  # no GPU counter on a CPU run
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    assert record["git_commit"] == head and len(head) == 40
    monkeypatch.chdir(tmp_path)  # outside the project and any repository: no commit to name
    assert build_results("00_toolkit", {}, profile="full", device="cpu", minutes=0)["git_commit"] is None


def test_smoke_profile_writes_nothing(tmp_path, capsys):
    assert save_results("00_toolkit", {"a": 1.0}, profile="smoke", device="cpu", minutes=0.1,
                        folder=tmp_path) is None
    assert list(tmp_path.iterdir()) == [] and "smoke" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_bad_chapter_names(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        build_results(bad, {}, profile="full", device="cpu", minutes=1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(profile="ful", minutes=1.0), "'ful'"),           # a misspelt profile
    (dict(profile="full", minutes=float("nan")), "nan"),   # json.dumps would write NaN: not JSON
    (dict(profile="full", minutes=float("inf")), "inf"),
    (dict(profile="full", minutes=-1.0), "-1.0"),
])
def test_bad_profile_and_minutes_are_rejected_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save_results("x", {"a": 1.0}, device="cpu", folder=tmp_path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_metrics_fail_before_writing(tmp_path):
    with pytest.raises(TypeError):
        save_results("x", {"bad": object()}, profile="full", device="cpu", minutes=1, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_results_table_markdown():
    table = results_table([("test acc", 0.93127, 0.94, "airbench, Table 1"), ("minutes", 2.5, None, "a|b")])
    lines = table.splitlines()
    assert lines[0] == "| metric | this run | paper / reference | source |"
    assert lines[2] == "| test acc | 0.9313 | 0.94 | airbench, Table 1 |"
    assert lines[3] == "| minutes | 2.5 | — | a\\|b |"
    with pytest.raises(ValueError, match="only two"):
        results_table([("only two", 1)])


def test_non_finite_metrics_are_named_before_writing(tmp_path):
    metrics = {"acc": 0.5, "curve": [0.1, float("nan")], "nested": {"loss": float("inf")}}
    with pytest.raises(ValueError, match=r"curve\[1\]=nan.*nested\.loss=inf"):
        save_results("00_toolkit", metrics, profile="full", device="cpu", minutes=1.0, folder=tmp_path)
    assert not list(tmp_path.iterdir())
