"""Plots in one course style: image grids and training curves (chapter 00, "Looking at the data")."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "savefig.bbox": "tight",
}


def use_course_style() -> None:
    """Apply the course's matplotlib style (small, gridded, no top/right spines; chapter 00)."""
    plt.rcParams.update(STYLE)


def to_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> torch.Tensor:
    """Tile ``(B, C, H, W)`` images (uint8, or float in [0, 1]) into one ``(H', W', C)`` float image (chapter 00)."""
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    x = images.detach().float().cpu()
    if images.dtype == torch.uint8:
        x = x / 255
    x = x.clamp(0, 1)
    b, c, h, w = x.shape
    ncol = min(nrow, b)
    nrows = -(-b // ncol)
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(b):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = x[i]
    return grid.permute(1, 2, 0)


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None,
                labels: Sequence[str] | None = None, ax=None, scale: float = 1.0):
    """Show a batch as a grid (labels, if given, are listed under the grid in reading order; chapter 00)."""
    grid = to_grid(images, nrow).numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(scale * grid.shape[1] / 25, scale * grid.shape[0] / 25 + 0.4))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.text(0, -0.02, " · ".join(labels), transform=ax.transAxes, va="top", fontsize=8, wrap=True)
    return ax


def plot_history(history: Mapping[str, Sequence[float]], xlabel: str = "step", logy: Sequence[str] = (),
                 title: str | None = None):
    """One panel per metric: ``history = {"train loss": [...], "test acc": [...]}`` (chapter 00)."""
    if not history:
        raise ValueError("history is empty: nothing to plot")
    fig, axes = plt.subplots(1, len(history), figsize=(3.6 * len(history), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items()):
        ax.plot(list(values))
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        if name in logy:
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pca_2d(features: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """``(N, D)`` features -> ``(N, 2)`` coordinates on their two leading principal directions, for scatter
    plots of embeddings (chapter 02's explorer, chapter 07's style space).

    Orthogonal iteration: products with the covariance and a Gram-Schmidt step, from a fixed start, so the
    result is deterministic and needs no LAPACK call."""
    if features.ndim != 2 or features.shape[1] < 2:
        raise ValueError(f"features must be (N, D) with D >= 2, got shape {tuple(features.shape)}")
    if not isinstance(iters, int) or iters < 1:  # 0 iterations would return a random projection
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    fc = features.float() - features.float().mean(0)
    v = torch.randn(features.shape[1], 2, generator=torch.Generator().manual_seed(0)).to(fc.device)  # (D, 2)
    for _ in range(iters):
        v = fc.T @ (fc @ v)  # multiply by the (unnormalised) covariance
        v[:, 0] /= v[:, 0].norm()
        v[:, 1] -= (v[:, 1] @ v[:, 0]) * v[:, 0]
        v[:, 1] /= v[:, 1].norm()
    return fc @ v
