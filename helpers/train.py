"""Training utilities: progress bars and checkpoints that survive a disconnect (chapter 00, "Resume").

A Colab runtime can vanish at any moment. :class:`Checkpoint` saves the model, optimizer, scheduler,
the step counter and every random-number state atomically every N steps and/or minutes, and
``resume()`` restores them. A checkpoint written at the end of an epoch, as chapter 00 writes them,
resumes exactly: the next step's loss is identical to the uninterrupted run's (tested in
``tests/test_train.py``). A mid-epoch save is not exact with a :class:`~helpers.loader.GpuLoader`,
which stores only its generator: the resumed run draws a fresh permutation for the rest of that epoch
(chapter 00's exercise ch00-ex-resume explains why and how to fix it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from .profile import check_chapter, check_profile


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", **kwargs) -> tqdm:
    """A ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere); set live metrics with ``bar.set_postfix``
    (chapter 00)."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, total=total, desc=desc, **kwargs)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states, in a form ``torch.load(weights_only=True)`` accepts
    (chapter 00)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (chapter 00)."""
    random.setstate(_to_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class Checkpoint:
    """Atomic, periodic checkpoints of everything a training loop needs to resume (chapter 00).

    ``objects`` maps names to things with ``state_dict``/``load_state_dict`` (model, optimizer,
    scheduler, GradScaler, a :class:`~helpers.loader.GpuLoader`...). Typical loop::

        ckpt = Checkpoint("runs/ch00.pt", every_steps=500, every_minutes=5, model=model, opt=opt)
        start = ckpt.resume()            # 0 on a fresh run
        for step in range(start, total):
            ...
            ckpt.step(step + 1)          # saves when a period elapsed
        ckpt.save(total)

    A save writes a temporary file and renames it over the old one, so a crash mid-save leaves the
    previous checkpoint intact. Files are read back with ``torch.load(weights_only=True)``.

    Resumption is exact when checkpoints are written at epoch ends (chapter 00 calls ``save`` after each
    epoch; ``every_steps`` a multiple of the epoch length does the same). A :class:`~helpers.loader.GpuLoader` stores only its generator, so
    after a mid-epoch save (``every_minutes``, or ``every_steps`` inside an epoch) the resumed run starts
    a fresh permutation: the rest of that epoch sees other images than the uninterrupted run would
    (chapter 00's exercise ch00-ex-resume).
    """

    def __init__(self, path: str | os.PathLike, *, every_steps: int | None = None,
                 every_minutes: float | None = None, **objects: Any):
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or None, got {every_steps}")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"every_minutes must be > 0 or None, got {every_minutes}")
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ValueError(f"{name!r} has no state_dict/load_state_dict: {type(obj).__name__}")
        self.path = Path(path)
        self.every_steps, self.every_minutes, self.objects = every_steps, every_minutes, objects
        self._last_time = time.monotonic()
        self.saves = 0
        self.extra: dict[str, Any] = {}

    def save(self, step: int, **extra: Any) -> None:
        """Write the checkpoint now (atomically). ``extra`` values (floats, lists...) are stored too."""
        blob = {name: obj.state_dict() for name, obj in self.objects.items()}
        blob["_step"], blob["_rng"], blob["_extra"] = step, rng_state(), extra
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._last_time = time.monotonic()
        self.saves += 1

    def step(self, step: int, **extra: Any) -> bool:
        """Save if ``every_steps`` divides ``step`` or ``every_minutes`` passed since the last save."""
        due = self.every_steps is not None and step % self.every_steps == 0
        due |= self.every_minutes is not None and time.monotonic() - self._last_time >= 60 * self.every_minutes
        if due:
            self.save(step, **extra)
        return due

    def resume(self) -> int:
        """Load the checkpoint if there is one and return its step (0 when starting fresh).

        Everything is loaded onto the CPU: ``load_state_dict`` copies weights into parameters wherever
        they live and optimizers move their state to their parameters' devices, while random-number
        states must stay CPU ``ByteTensor``s (a CUDA ``map_location`` would break ``set_rng_state``).
        """
        if not self.path.exists():
            return 0
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        for name, obj in self.objects.items():
            if name not in blob:
                raise ValueError(f"checkpoint {self.path} has no entry {name!r}; it has {sorted(blob)}")
            obj.load_state_dict(blob[name])
        set_rng_state(blob["_rng"])
        self.extra = blob["_extra"]
        print(f"Resumed from {self.path} at step {blob['_step']}.")
        return blob["_step"]

    def clear(self) -> None:
        """Delete the checkpoint file (start the next run from scratch)."""
        self.path.unlink(missing_ok=True)


def run_dir(chapter: str, profile: str, config: Mapping[str, Any] | None = None) -> Path:
    """Where a chapter keeps its checkpoints (chapter 00, "Checkpoints").

    ``<cache_root>/runs/<chapter>-<profile>/``, or ``<chapter>-<profile>-<hash>/`` when the config is given.
    The profile is part of the name so a smoke run never resumes from a full run's checkpoint; the hash of
    the config (10 hex digits of a SHA-256 over its sorted JSON) means that a reader who edits a setting —
    an exercise asking for ``label_smoothing=0.0``, say — trains afresh instead of silently resuming the old
    run, while a rerun with the same settings finds its checkpoint again after a disconnect.
    """
    from .data import cache_root

    check_chapter(chapter)
    check_profile(profile)
    name = f"{chapter}-{profile}"
    if config is not None:
        blob = json.dumps(dict(config), sort_keys=True, default=repr).encode()
        name += "-" + hashlib.sha256(blob).hexdigest()[:10]
    path = cache_root() / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
