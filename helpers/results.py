"""Results: ``results/<chapter>.json`` from a full run, and "this run vs the paper" tables
(chapter 00, "Results").
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .profile import check_chapter, check_profile
from .runtime import device_name, peak_memory_gb

REQUIRED = ("chapter", "profile", "metrics", "device", "minutes", "versions", "git_commit", "created")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``_toc.yml``; else cwd (chapter 00)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists():
            return folder
    return here


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_results(chapter: str, metrics: Mapping[str, Any], *, profile: str, device: torch.device | str,
                  minutes: float, config: Mapping[str, Any] | None = None,
                  reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The results record (what :func:`save_results` writes; chapter 00). ``metrics`` values must be JSON
    numbers, strings or nested lists/dicts of them; ``profile`` one of ``helpers.profile.PROFILES``;
    ``minutes`` a finite number >= 0 (JSON has no NaN; a NaN or infinite metric raises ValueError naming it)."""
    check_chapter(chapter)
    check_profile(profile)
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes >= 0):
        raise ValueError(f"minutes must be a finite number >= 0, got {minutes!r}")
    import platform

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    mem = peak_memory_gb(device)
    record = {
        "chapter": chapter,
        "profile": profile,
        "metrics": dict(metrics),
        "reference": dict(reference or {}),
        "config": dict(config or {}),
        "device": device_name(device),
        "peak_gpu_memory_gb": None if mem is None else round(mem, 2),
        "minutes": round(minutes, 2),
        "versions": versions,
        "git_commit": _git_commit(project_root()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    bad = _non_finite(record)
    if bad:
        raise ValueError(f"JSON has no NaN or infinity; non-finite values at {bad}")
    json.dumps(record, allow_nan=False)  # fail here, not half-way through writing, on a value JSON cannot hold
    return record


def _non_finite(value: Any, path: str = "") -> list[str]:
    """Paths (``metrics.loss[3]``) of the NaN and infinite floats inside a record."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path}={value}"]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def save_results(chapter: str, metrics: Mapping[str, Any], *, profile: str, device: torch.device | str,
                 minutes: float, config: Mapping[str, Any] | None = None,
                 reference: Mapping[str, Any] | None = None, folder: str | os.PathLike | None = None) -> Path | None:
    """Write ``results/<chapter>.json`` — only in the full profile (a smoke run's numbers are not
    results; chapter 00 introduces the file). Returns the path written, or ``None`` in the smoke profile."""
    record = build_results(chapter, metrics, profile=profile, device=device, minutes=minutes,
                           config=config, reference=reference)
    if profile != "full":
        print(f"({profile} profile: results/{chapter}.json is written only by a full run)")
        return None
    out = Path(folder) if folder is not None else project_root() / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{chapter}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def results_table(rows: Sequence[Sequence[Any]], header: Sequence[str] = ("metric", "this run", "paper / reference", "source")) -> str:
    """A Markdown table "this run vs the paper"; each row ``(metric, ours, theirs, source)`` (chapter 00).

    Floats are shown with 4 significant digits; ``None`` as "—". Display it with
    ``IPython.display.Markdown(results_table(rows))``.
    """
    width = len(header)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"each row needs {width} cells {tuple(header)}, got {tuple(row)!r}")

    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
