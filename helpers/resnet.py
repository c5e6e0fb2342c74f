"""A CIFAR-style ResNet-18 that returns features (chapter 02, "The encoder").

He et al.'s ResNet-18 was designed for 224×224 ImageNet images: a 7×7 stride-2 stem and a max-pool shrink
the input 4× before the first block. On 32×32 images that throws away most of the picture, so CIFAR
work (and every self-supervised CIFAR benchmark) uses a 3×3 stride-1 stem and no max-pool. The four
stages then see 32, 16, 8 and 4 pixels. ``width`` scales every channel count (64 is the standard
network, 11.2 M parameters); the forward pass returns the globally pooled ``(B, 8·width)`` features —
the classifier or projection head is the caller's.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projection) shortcut (chapter 02)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stem, no max-pool, four stages, global average pool → features (chapter 02)."""

    def __init__(self, blocks: tuple[int, int, int, int] = (2, 2, 2, 2), width: int = 64, in_channels: int = 3):
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(f"width and in_channels must be >= 1, got width={width}, in_channels={in_channels}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive counts, got {blocks}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            layers = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, feature_dim)``."""
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(x.shape)}")
        h = self.stages(self.stem(x))  # (B, 8·width, H/8, W/8)
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)


def resnet18(width: int = 64, in_channels: int = 3) -> ResNet:
    """CIFAR-style ResNet-18 (He et al. 2016, with the CIFAR stem); ``width=64`` is the standard size
    (chapter 02)."""
    return ResNet((2, 2, 2, 2), width=width, in_channels=in_channels)
