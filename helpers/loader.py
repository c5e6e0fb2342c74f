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
    """Batched random crop with zero padding and random horizontal flip, on ``x``'s device (chapter 00).

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
    """Iterate over ``(images, labels)`` batches of a dataset held entirely on ``device`` (chapter 00).

    ``images`` uint8 ``(N, C, H, W)`` (anything else raises ``ValueError``: float images would be divided
    by 255 a second time); each batch comes out as float32 in ``[0, 1]``, optionally augmented
    (``augment(batch_uint8, generator=g)``, called with the loader's own generator) and normalised with
    ``mean``/``std`` (one value per channel, ``std > 0``).
    Each epoch visits every sample exactly once (the last batch is smaller unless ``drop_last``).
    The shuffle and the augmentation draw from the loader's own generator (``seed``), so an epoch is
    reproducible; ``state_dict``/``load_state_dict`` save and restore that generator, and nothing else.
    Resuming is therefore exact from a checkpoint written at the end of an epoch; after a mid-epoch save
    the resumed loader starts a fresh permutation (chapter 00's exercise ch00-ex-resume).
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
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W) (batches are divided by 255), got dtype "
                             f"{images.dtype} and shape {tuple(images.shape)}")
        c = images.shape[1]
        if (mean is None) != (std is None):
            raise ValueError(f"give both mean and std or neither, got mean={mean}, std={std}")
        if mean is not None:  # Python sequences (or CPU tensors): checking them here costs no GPU sync
            mean, std = torch.as_tensor(mean, dtype=torch.float32).cpu(), torch.as_tensor(std, dtype=torch.float32).cpu()
            if mean.shape != (c,) or std.shape != (c,):
                raise ValueError(f"mean and std need one value per channel ({c}), got {mean.tolist()} and {std.tolist()}")
            if not (std > 0).all() or not torch.isfinite(mean).all() or not torch.isfinite(std).all():
                raise ValueError(f"std must be finite and > 0 and mean finite, got mean={mean.tolist()}, std={std.tolist()}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.mean = None if mean is None else mean.to(self.device).view(1, c, 1, 1)
        self.std = None if std is None else std.to(self.device).view(1, c, 1, 1)

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
