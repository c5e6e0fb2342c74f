"""Take a GPU run's files home: after `.ci/gpu_batch.sh` ran on the device machine, its $OUT comes back as
NN_x.ipynb + NN_x.log per chapter. For every chapter whose run finished cleanly this copies the executed
notebook into notebooks/ and writes results/NN_x.json from the log; anything doubtful is refused, with the reason.

    python .ci/gpu_collect.py FOLDER [--root .] [--dry-run]

A run is taken only if its log says NOTEBOOK OK and EXIT 0, its results JSON is from the full profile on a GPU,
no cell holds an error output, and every cell's source equals the repository's notebook (so the stored outputs
belong to the committed code). Exit status 1 if any chapter in FOLDER was refused. A stored notebook loses its
"No stored run yet" note (the markdown cell tagged `no-stored-run`): from now on the page has outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MARKER = "=== RESULTS JSON"
NOTE_TAG = "no-stored-run"


def drop_note(nb: dict) -> dict:
    """The notebook without its "No stored run yet" cell (tests/test_book.py wants it exactly when no outputs are stored)."""
    return dict(nb, cells=[c for c in nb["cells"] if NOTE_TAG not in c.get("metadata", {}).get("tags", [])])


def check(log: Path, root: Path) -> tuple[dict | None, str]:
    """The results record of a clean run, or None and the reason it is refused."""
    name = log.stem
    text = log.read_text(errors="replace")
    executed = log.with_suffix(".ipynb")
    committed = root / "notebooks" / f"{name}.ipynb"
    if "NOTEBOOK OK" not in text:
        return None, "the log has no NOTEBOOK OK (stopped or failed part-way)"
    if "EXIT 0 " not in text:
        return None, "the notebook process did not exit with status 0"
    if not executed.exists():
        return None, f"{executed.name} did not come back"
    if not committed.exists():
        return None, f"no {committed.relative_to(root)} in the repository"
    if MARKER not in text or not text.split(MARKER, 1)[1].strip():
        return None, "the log holds no results JSON (a smoke run writes none)"
    try:
        record, _ = json.JSONDecoder().raw_decode(text.split(MARKER, 1)[1].lstrip())  # ignore any trailing lines
    except json.JSONDecodeError as err:
        return None, f"the results JSON in the log does not parse ({err})"
    if record.get("profile") != "full" or "CPU" in str(record.get("device", "CPU")):
        return None, f"results are not from the full profile on a GPU: {record.get('profile')!r}, {record.get('device')!r}"
    nb_run, nb_repo = json.loads(executed.read_text()), json.loads(committed.read_text())
    if any(o.get("output_type") == "error" for c in nb_run["cells"] for o in c.get("outputs", [])):
        return None, "an error output is stored in the executed notebook"
    sources = lambda nb: ["".join(c["source"]) for c in nb["cells"]]  # noqa: E731
    if sources(nb_run) != sources(nb_repo):
        return None, "its cells differ from the repository's notebook (edited since the run?): rerun, or reapply"
    return record, "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logs = sorted(p for p in args.folder.glob("*.log") if p.stem[:2].isdigit())
    if not logs:
        print(f"no NN_x.log in {args.folder}")
        return 1
    refused = 0
    for log in logs:
        record, why = check(log, args.root)
        if record is None:
            refused += 1
            print(f"{log.stem}: REFUSED: {why}")
            continue
        checks = [ln for ln in log.read_text(errors="replace").splitlines() if "check passed" in ln]
        print(f"{log.stem}: ok, {record.get('minutes', float('nan')):.1f} min on {record.get('device')}"
              + (f"; {checks[-1].strip()[:160]}" if checks else ""))
        if not args.dry_run:
            executed = json.loads(log.with_suffix(".ipynb").read_text())
            (args.root / "notebooks" / f"{log.stem}.ipynb").write_text(
                json.dumps(drop_note(executed), indent=1, ensure_ascii=False) + "\n")
            (args.root / "results" / f"{log.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    pytest_log = args.folder / "pytest.log"
    if pytest_log.exists():
        print("GPU unit tests:", " ".join(pytest_log.read_text(errors="replace").split()[-6:]))
    if not args.dry_run and refused < len(logs):
        print("next: update the time-budget cell and the results prose (markdown only), README's minutes column, commit")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
