"""Batched on-device augmentations that report their parameters (chapter 02, "Views and their parameters").

Contrastive learning (chapter 02) makes two random *views* of every image. AugSelf, also in chapter 02,
additionally needs to know *how* each view was made: the crop box, whether it was flipped, the colour
jitter factors and whether it was turned grey. The functions here draw those parameters for a whole batch
at once (from a ``torch.Generator``, so a batch is reproducible), apply them on the batch's device, and
return them next to the views.

The pipeline is SimCLR's: random resized crop → horizontal flip → colour jitter (with probability
``jitter_p``) → grayscale (with probability ``gray_p``). Each step has a batched function that takes the
parameters explicitly (:func:`resized_crop`, :func:`hflip`, :func:`color_jitter`, :func:`grayscale`), and
each agrees with ``torchvision.transforms.v2.functional`` applied image by image (tested in
``tests/test_augment.py``). Two documented differences from torchvision's ``ColorJitter``: the four
adjustments run in a fixed order (brightness, contrast, saturation, hue) instead of a random one, and
the resize is bilinear without antialiasing, which is identical to torchvision's whenever the crop is
upsampled (always the case for 32×32 CIFAR crops resized to 32×32).

Images are float tensors in ``[0, 1]`` shaped ``(B, 3, H, W)``; :func:`simclr_views` also accepts uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, the weights torchvision uses
IDENTITY_JITTER = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation factors; hue shift


@dataclass
class ViewParams:
    """The parameters of one batch of views (chapter 02).

    ``boxes``: ``(B, 4)`` float, the crop ``(top, left, height, width)`` in source pixels;
    ``flip``: ``(B,)`` bool; ``jitter``: ``(B, 4)`` float, brightness/contrast/saturation factors and the
    hue shift — ``(1, 1, 1, 0)`` (the identity) where jitter was not applied; ``jitter_applied``: ``(B,)``
    bool; ``gray``: ``(B,)`` bool; ``source_size``: ``(H, W)`` of the images the boxes refer to;
    ``strength``: the jitter strengths ``(b, c, s, h)`` the factors were drawn with.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    jitter_applied: torch.Tensor
    gray: torch.Tensor
    source_size: tuple[int, int]
    strength: tuple[float, float, float, float] = field(default=(0.4, 0.4, 0.4, 0.1))

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> "ViewParams":
        """The same parameters on another device."""
        return ViewParams(self.boxes.to(device), self.flip.to(device), self.jitter.to(device),
                          self.jitter_applied.to(device), self.gray.to(device), self.source_size, self.strength)

    def index(self, i: int) -> dict:
        """Image ``i``'s parameters as plain Python numbers (for printing and widgets)."""
        top, left, h, w = (int(v) for v in self.boxes[i].tolist())
        b, c, s, hue = self.jitter[i].tolist()
        return {"top": top, "left": left, "height": h, "width": w, "flip": bool(self.flip[i]),
                "brightness": b, "contrast": c, "saturation": s, "hue": hue,
                "jitter_applied": bool(self.jitter_applied[i]), "gray": bool(self.gray[i])}


def _check_images(x: torch.Tensor, channels: int | None = 3) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got {type(x).__name__} "
                         f"with shape {tuple(getattr(x, 'shape', ()))}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")


def _per_image(v: torch.Tensor | float, x: torch.Tensor, name: str) -> torch.Tensor:
    """A factor per image as a ``(B, 1, 1, 1)`` tensor on ``x``'s device."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a scalar or have shape ({x.shape[0]},), got {tuple(v.shape)}")
    return v.view(-1, 1, 1, 1)


def _rows(values, n: int, device, dtype=torch.float32) -> torch.Tensor:
    """An ``(n, len(values))`` tensor whose every row is ``values``, made on ``device`` by fill kernels.

    ``torch.tensor(values, device="cuda")`` would copy from the host, and such a copy waits until the GPU has
    finished all queued work: once per training step, that keeps the CPU from running ahead of the GPU."""
    out = torch.empty(n, len(values), dtype=dtype, device=device)
    for j, v in enumerate(values):
        out[:, j] = v
    return out


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, device=gen_device, generator=generator).to(device) * (hi - lo) + lo


# ----------------------------------------------------------------------------- random resized crop

def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", attempts: int = 10) -> torch.Tensor:
    """Draw ``n`` crop boxes ``(top, left, height, width)`` as torchvision's ``RandomResizedCrop`` does (chapter 02).

    Each box covers a fraction ``~U(scale)`` of the image with aspect ratio ``~logU(ratio)``; of
    ``attempts`` candidates per image the first that fits is kept, and images with none fall back to the
    largest centred crop within ``ratio`` — the same rule as torchvision, vectorised. Returns ``(n, 4)``
    float (integer-valued) on ``device``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
    gen_device = generator.device if generator is not None else torch.device(device)
    area = height * width
    u = torch.rand(n, attempts, 4, device=gen_device, generator=generator).to(device).double()
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])  # (n, A)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])  # (n, A)
    w = torch.round(torch.sqrt(target * aspect))  # (n, A)
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (n, A)
    top = torch.floor(u[..., 2] * (height - h + 1)).clamp(min=0)
    left = torch.floor(u[..., 3] * (width - w + 1)).clamp(min=0)
    # fallback: the largest centred crop whose aspect ratio lies inside `ratio`
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    fallback = _rows([(height - fh) // 2, (width - fw) // 2, fh, fw], n, device, torch.float64)  # (n, 4)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # index of the first box that fits (0 if none does)
    rows = torch.arange(n, device=device)
    boxes = torch.stack([top, left, h, w], dim=-1)[rows, first]  # (n, 4)
    boxes = torch.where(ok.any(dim=1, keepdim=True), boxes, fallback)
    return boxes.float()


def _resize_indices(start: torch.Tensor, length: torch.Tensor, out: int):
    """Source indices and weights of a bilinear resize (align_corners=False) of ``length`` pixels
    starting at ``start`` to ``out`` pixels, per image — the rule of ``torch.nn.functional.interpolate``."""
    dst = torch.arange(out, device=start.device, dtype=torch.float32)  # (out,)
    scale = length.float()[:, None] / out  # (B, 1)
    src = ((dst[None, :] + 0.5) * scale - 0.5).clamp(min=0)  # (B, out)
    i0 = src.floor()
    frac = (src - i0).clamp(0, 1)
    i0 = torch.minimum(i0, length[:, None].float() - 1)
    i1 = torch.minimum(i0 + 1, length[:, None].float() - 1)
    return (start[:, None] + i0).long(), (start[:, None] + i1).long(), frac


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop every image to its own box ``(top, left, height, width)`` and resize it to ``size`` (bilinear;
    chapter 02).

    ``x``: ``(B, C, H, W)`` float; ``boxes``: ``(B, 4)``. Returns ``(B, C, size, size)``. Equals
    ``torchvision.transforms.v2.functional.resized_crop(x[i], *boxes[i], size, antialias=False)`` for each
    ``i`` (and the default ``antialias=True`` whenever the box is no larger than ``size``).
    """
    _check_images(x, channels=None)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size}")
    b, c, height, width = x.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must have shape ({b}, 4), got {tuple(boxes.shape)}")
    boxes = boxes.to(x.device).round().long()
    top, left, bh, bw = boxes.unbind(1)
    # checked on CPU tensors only: on a GPU it would stall every training step on a host copy (a box
    # outside the image then fails in the gather below, with a device-side assert)
    if boxes.device.type == "cpu" and ((bh < 1).any() or (bw < 1).any() or (top < 0).any() or (left < 0).any()
                                       or (top + bh > height).any() or (left + bw > width).any()):
        raise ValueError(f"every box must lie inside the {height}x{width} image with positive size; got "
                         f"{boxes[((bh < 1) | (bw < 1) | (top < 0) | (left < 0) | (top + bh > height) | (left + bw > width))][0].tolist()}")
    r0, r1, fy = _resize_indices(top, bh, out_h)  # (B, out_h)
    c0, c1, fx = _resize_indices(left, bw, out_w)  # (B, out_w)
    rows0 = x.gather(2, r0[:, None, :, None].expand(b, c, out_h, width))  # (B, C, out_h, W)
    rows1 = x.gather(2, r1[:, None, :, None].expand(b, c, out_h, width))
    i0 = c0[:, None, None, :].expand(b, c, out_h, out_w)
    i1 = c1[:, None, None, :].expand(b, c, out_h, out_w)
    wx = fx[:, None, None, :].to(x.dtype)  # (B, 1, 1, out_w)
    wy = fy[:, None, :, None].to(x.dtype)  # (B, 1, out_h, 1)
    top_row = (1 - wx) * rows0.gather(3, i0) + wx * rows0.gather(3, i1)  # (B, C, out_h, out_w)
    bottom_row = (1 - wx) * rows1.gather(3, i0) + wx * rows1.gather(3, i1)
    return (1 - wy) * top_row + wy * bottom_row


# ----------------------------------------------------------------------------- flip and colour

def hflip(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flags`` (``(B,)`` bool) are set (chapter 02)."""
    _check_images(x, channels=None)
    if flags.shape != (x.shape[0],):
        raise ValueError(f"flags must have shape ({x.shape[0]},), got {tuple(flags.shape)}")
    return torch.where(flags.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B``: ``(B, 3, H, W)`` → ``(B, 1, H, W)`` (chapter 02)."""
    _check_images(x)
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _factor(v: torch.Tensor | float, x: torch.Tensor, name: str = "factor") -> torch.Tensor:
    """:func:`_per_image` for blend factors, which must be >= 0 (torchvision raises too). Checked for Python
    numbers and CPU tensors only: reading a GPU tensor's values would synchronise every training step."""
    host = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)  # Python numbers are host values
    if host.device.type == "cpu" and (host < 0).any():
        raise ValueError(f"{name} must be >= 0, got {host.min().item()}")
    return _per_image(v, x, name)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # factor * x + (1 - factor) * other, kept in [0, 1]: the shared form of brightness/contrast/saturation
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale intensities by ``factor >= 0`` (per image): a blend with black (chapter 02)."""
    _check_images(x)
    return _blend(x, torch.zeros_like(x), _factor(factor, x))


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Blend every image with its mean grey level: ``factor < 1`` flattens, ``> 1`` exaggerates (``factor >= 0``;
    chapter 02)."""
    _check_images(x)
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(x, mean, _factor(factor, x))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Blend every image with its own grey version: ``0`` is grey, ``1`` unchanged (``factor >= 0``; chapter 02)."""
    _check_images(x)
    return _blend(x, rgb_to_gray(x), _factor(factor, x))


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] → HSV with hue in [0, 1) (chapter 02)."""
    r, g, b = x.unbind(1)
    vmax, _ = x.max(dim=1)
    vmin, _ = x.min(dim=1)
    delta = vmax - vmin
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)
    sat = delta / torch.where(vmax == 0, torch.ones_like(vmax), vmax)
    # hue sector: which channel is largest decides the 60-degree sector
    h_r = ((g - b) / safe) % 6
    h_g = (b - r) / safe + 2
    h_b = (r - g) / safe + 4
    hue = torch.where(vmax == r, h_r, torch.where(vmax == g, h_g, h_b)) / 6
    hue = torch.where(grey, torch.zeros_like(hue), hue) % 1.0
    return torch.stack([hue, sat, vmax], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (chapter 02)."""
    hue, sat, val = x.unbind(1)
    h6 = hue * 6
    sector = torch.floor(h6)
    frac = h6 - sector
    sector = sector.long() % 6
    p = val * (1 - sat)
    q = val * (1 - sat * frac)
    t = val * (1 - sat * (1 - frac))
    # (R, G, B) for sectors 0..5: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    table = torch.stack([
        torch.stack([val, t, p], 1), torch.stack([q, val, p], 1), torch.stack([p, val, t], 1),
        torch.stack([p, q, val], 1), torch.stack([t, p, val], 1), torch.stack([val, p, q], 1),
    ], dim=1)  # (B, 6, 3, H, W)
    idx = sector[:, None, None].expand(-1, 1, 3, -1, -1)
    return table.gather(1, idx).squeeze(1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Rotate the hue of every image by ``shift`` (per image, in turns, within [-0.5, 0.5]; chapter 02)."""
    _check_images(x)
    shift = _per_image(shift, x, "shift").view(-1, 1, 1)
    if shift.device.type == "cpu" and (shift.abs() > 0.5).any():  # no host sync on a GPU
        raise ValueError(f"hue shifts must lie in [-0.5, 0.5], got max |shift| {shift.abs().max().item()}")
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, then hue, with per-image ``factors`` ``(B, 4)`` (chapter 02).

    A row ``(1, 1, 1, 0)`` leaves its image unchanged (up to float rounding in the hue round trip). The first
    three factors must be >= 0 and the hue shift within [-0.5, 0.5] (checked on CPU tensors only).
    """
    _check_images(x)
    if factors.shape != (x.shape[0], 4):
        raise ValueError(f"factors must have shape ({x.shape[0]}, 4), got {tuple(factors.shape)}")
    if factors.device.type == "cpu" and (factors[:, :3] < 0).any():  # no host sync on a GPU
        raise ValueError(f"brightness, contrast and saturation factors must be >= 0, got {factors[:, :3].min().item()}")
    f = factors.to(x.device, x.dtype)
    x = adjust_brightness(x, f[:, 0])
    x = adjust_contrast(x, f[:, 1])
    x = adjust_saturation(x, f[:, 2])
    return adjust_hue(x, f[:, 3])


def grayscale(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Replace the images whose ``flags`` are set by their grey version (kept as 3 channels; chapter 02)."""
    _check_images(x)
    if flags.shape != (x.shape[0],):
        raise ValueError(f"flags must have shape ({x.shape[0]},), got {tuple(flags.shape)}")
    return torch.where(flags.to(x.device).view(-1, 1, 1, 1), rgb_to_gray(x).expand_as(x), x)


# ----------------------------------------------------------------------------- the SimCLR pipeline

def sample_params(n: int, height: int, width: int, *, scale: tuple[float, float] = (0.08, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                  strength: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1), jitter_p: float = 0.8,
                  gray_p: float = 0.2, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> ViewParams:
    """Draw the parameters of ``n`` SimCLR views of ``height × width`` images (chapter 02).

    Brightness, contrast and saturation factors are drawn from ``U(max(0, 1 - s), 1 + s)`` and the hue
    shift from ``U(-h, h)`` as in torchvision's ``ColorJitter(s_b, s_c, s_s, h)``.
    """
    for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("gray_p", gray_p)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    if len(strength) != 4 or min(strength) < 0 or strength[3] > 0.5:
        raise ValueError(f"strength must be (b, c, s, h) with all >= 0 and h <= 0.5, got {strength}")
    device = torch.device(device)
    boxes = sample_crop_boxes(n, height, width, scale, ratio, generator, device)
    flip = _uniform(n, 0, 1, generator, device) < flip_p
    applied = _uniform(n, 0, 1, generator, device) < jitter_p
    cols = [_uniform(n, max(0.0, 1 - s), 1 + s, generator, device) for s in strength[:3]]
    cols.append(_uniform(n, -strength[3], strength[3], generator, device))
    jitter = torch.stack(cols, dim=1)  # (n, 4)
    identity = _rows(IDENTITY_JITTER, n, device, jitter.dtype)  # (n, 4)
    jitter = torch.where(applied[:, None], jitter, identity)
    gray = _uniform(n, 0, 1, generator, device) < gray_p
    return ViewParams(boxes, flip, jitter, applied, gray, (height, width), tuple(float(s) for s in strength))


def apply_params(x: torch.Tensor, params: ViewParams, size: int | tuple[int, int]) -> torch.Tensor:
    """Make the views ``params`` describe: crop+resize → flip → colour jitter → grayscale (chapter 02).

    ``x``: ``(B, 3, H, W)`` float in [0, 1] with ``(H, W) == params.source_size``.
    """
    _check_images(x)
    if tuple(x.shape[-2:]) != tuple(params.source_size) or x.shape[0] != len(params):
        raise ValueError(f"images {tuple(x.shape)} do not match parameters for {len(params)} images of "
                         f"size {params.source_size}")
    v = resized_crop(x, params.boxes, size)
    v = hflip(v, params.flip)
    v = color_jitter(v, params.jitter)
    return grayscale(v, params.gray)


def simclr_views(x: torch.Tensor, generator: torch.Generator | None = None, *, size: int | None = None,
                 **kwargs) -> tuple[torch.Tensor, ViewParams]:
    """One random SimCLR view of every image, and the parameters that made it (chapter 02).

    ``x``: ``(B, 3, H, W)`` uint8 or float in [0, 1] (on any device); ``size`` defaults to ``H``; other
    keyword arguments go to :func:`sample_params`. Call it twice for a positive pair.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(getattr(x, 'shape', ()))}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    b, _, h, w = x.shape
    params = sample_params(b, h, w, generator=generator, device=x.device, **kwargs)
    return apply_params(x, params, size or h), params


def augself_targets(p1: ViewParams, p2: ViewParams) -> dict[str, torch.Tensor]:
    """AugSelf's regression targets: the parameter differences between two views (chapter 02, Eq. AugSelf).

    ``crop``: ``(B, 4)`` = difference of the crop centre ``(y, x)`` and size ``(h, w)``, each normalised
    by the image size; the centre's ``x`` is mirrored (``1 - x``) in a flipped view, so it is where the crop
    appears in the view. ``color``: ``(B, 4)`` = difference of the jitter factors, each shifted to 0 at the
    identity and divided by the width of its sampling range (so it lies in [-1, 1]).
    Both lie in ``[-1, 1]``.
    """
    if len(p1) != len(p2) or p1.source_size != p2.source_size or p1.strength != p2.strength:
        raise ValueError("the two views' parameters differ in batch size, source size or jitter strength: "
                         f"{len(p1)} vs {len(p2)}, {p1.source_size} vs {p2.source_size}, {p1.strength} vs {p2.strength}")

    def crop_code(p: ViewParams) -> torch.Tensor:
        h, w = p.source_size
        top, left, bh, bw = p.boxes.unbind(1)
        cy, cx = (top + bh / 2) / h, (left + bw / 2) / w
        cx = torch.where(p.flip, 1 - cx, cx)
        return torch.stack([cy, cx, bh / h, bw / w], dim=1)

    def color_code(p: ViewParams) -> torch.Tensor:
        widths = [max(1 + s - max(0.0, 1 - s), 1e-8) for s in p.strength[:3]] + [max(2 * p.strength[3], 1e-8)]
        centre = _rows(IDENTITY_JITTER, 1, p.jitter.device, p.jitter.dtype)    # (1, 4)
        return (p.jitter - centre) / _rows(widths, 1, p.jitter.device, p.jitter.dtype)

    return {"crop": crop_code(p1) - crop_code(p2), "color": color_code(p1) - color_code(p2)}
