"""Shared fixtures. Notebooks run in the smoke profile (the Makefile sets COURSE_PROFILE=smoke)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from nbclient_polling import install as install_sliced_polls  # noqa: E402

os.environ.setdefault("COURSE_PROFILE", "smoke")
install_sliced_polls()  # nbmake executes the notebooks through nbclient: see tests/nbclient_polling.py


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty, private data root and cache; downloads off."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("COURSE_DATA", str(root))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DOWNLOAD", "0")
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything tries to open a URL."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected network access: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
