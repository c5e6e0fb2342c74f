"""Runtime: device choice, seeds, bf16 autocast and the environment report (chapter 00, "Set-up").
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import time

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The device to train on: ``prefer`` if given, else CUDA, else Apple MPS, else CPU (chapter 00)."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(seed: int, device: str | None = None) -> torch.device:
    """The first lines of every chapter: pick the device, seed everything, start a peak-memory
    measurement and, on CUDA, enable cuDNN autotuning and TF32 matmuls; prints the device (chapter 00).
    """
    dev = pick_device(device)
    seed_everything(seed)
    reset_peak_memory(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print("device:", device_name(dev))
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU ``torch.Generator`` seeded the same (chapter 00).

    Raises ``ValueError`` for a seed outside ``[0, 2**32)``.
    """
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def bf16_supported(device: torch.device | str) -> bool:
    """True on CUDA GPUs with native bfloat16 (Ampere and newer: A100, H100, L4; not a Colab T4; chapter 00)."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA GPUs that support it natively; a no-op elsewhere (chapter 00).

    On the CPU bf16 is slow and changes the numbers; on a pre-Ampere GPU (a Colab T4) it would be
    emulated, so those run in float32 (TF32 is not available there either) and simply take longer.
    """
    if bf16_supported(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def maybe_compile(model, device: torch.device | str, **kwargs):
    """``torch.compile`` on CUDA (where it pays off), the model (or function) unchanged on CPU (where
    compiling costs more than a smoke run). ``kwargs`` go to ``torch.compile`` (chapter 00)."""
    if torch.device(device).type == "cuda":
        return torch.compile(model, **kwargs)
    return model


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory measurement (CUDA only; a no-op elsewhere; chapter 00)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: torch.device | str) -> float | None:
    """Peak GPU memory allocated by tensors since the last reset, in GiB (None off CUDA; chapter 00)."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def device_name(device: torch.device | str) -> str:
    """A human name of the device: the GPU model, or the CPU architecture with core count (chapter 00)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def env_report(device: torch.device | str | None = None, *, show: bool = True) -> dict:
    """Versions, device and peak GPU memory — printed at the end of every chapter (introduced in chapter 00)."""
    device = pick_device() if device is None else torch.device(device)
    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device_name(device),
        "peak_gpu_memory_gb": None if peak_memory_gb(device) is None else round(peak_memory_gb(device), 2),
    }
    try:
        import torchvision

        report["torchvision"] = torchvision.__version__
    except Exception:  # torchvision is optional for some chapters
        report["torchvision"] = None
    if show:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    return report


class Timer:
    """Wall-clock timer that synchronises CUDA so GPU work is counted where it happened (chapter 00).

    >>> with Timer() as t: pass
    >>> t.seconds >= 0
    True
    """

    def __enter__(self) -> "Timer":
        _sync()
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.start

    @property
    def minutes(self) -> float:
        return self.seconds / 60


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
