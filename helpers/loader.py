"""A GPU-resident loader for small datasets (chapter 00, "Keeping the data on the GPU").

CIFAR-10 is 150 MB as uint8: it fits on any GPU many times over. Keeping it there and cutting
batches with a shuffled index tensor removes the CPU workers, the pinned-memory copies and the
per-image Python calls of a ``torch.utils.data.DataLoader``. Augmentations run batched on the device.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched random crop with zero padding and random horizontal flip, on ``x``'s device.

    ``x``: ``(B, C, H, W)`` of any dtype; returns the same shape and dtype. Every image gets its own
    offset in ``[0, 2 * padding]`` on each axis and a coin flip, as torchvision's
    ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` do one image at a time.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, _, h, w = x.shape
    gen_device = generator.device if generator is not None else x.device
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * padding + 1, (b,), device=gen_device, generator=generator).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), device=gen_device, generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
        idx_b = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        coin = torch.rand(b, device=gen_device, generator=generator).to(x.device) < 0.5
        x = torch.where(coin[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class GpuLoader:
    """Iterate over ``(images, labels)`` batches of a dataset held entirely on ``device``.

    ``images`` uint8 ``(N, C, H, W)``; each batch comes out as float32 in ``[0, 1]``, optionally
    augmented (``augment(batch_uint8, generator=g)``) and normalised with ``mean``/``std``.
    Each epoch visits every sample exactly once (the last batch is smaller unless ``drop_last``).
    The shuffle is driven by the loader's own generator (``seed``), so an epoch is reproducible;
    ``state_dict``/``load_state_dict`` save and restore it for checkpoint-and-resume.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, augment: Callable | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: torch.device | str = "cpu", seed: int = 0):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"images and labels differ in length: {images.shape[0]} != {labels.shape[0]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > images.shape[0]:
            raise ValueError(f"batch_size {batch_size} > dataset size {images.shape[0]} with drop_last: no batches")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        c = images.shape[1]
        self.mean = None if mean is None else torch.tensor(mean, device=self.device).view(1, c, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=self.device).view(1, c, 1, 1)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment is not None:
                x = self.augment(x, generator=self.generator)
            yield self.normalize(x), self.labels[idx]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 → float32 in [0, 1], then ``(x - mean) / std`` when given."""
        x = x.float().div_(255)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())  # RNG states are CPU ByteTensors
