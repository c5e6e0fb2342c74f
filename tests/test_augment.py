"""Tests for chapter 02's helpers: batched augmentations with parameters, the CIFAR ResNet-18, and the
contrastive / i-Mix / AugSelf losses."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from helpers import augment, contrastive, resnet


def _images(b=6, h=20, w=24, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- crops

def test_crop_boxes_are_valid_and_in_range():
    g = torch.Generator().manual_seed(1)
    boxes = augment.sample_crop_boxes(2000, 32, 40, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), generator=g)
    top, left, h, w = boxes.unbind(1)
    assert boxes.shape == (2000, 4)
    assert torch.equal(boxes, boxes.round())
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 40).all()
    area = h * w / (32 * 40)
    assert area.min() >= 0.15 and area.max() <= 1.0  # scale range, up to rounding
    assert area.std() > 0.1  # the boxes really vary


def test_crop_boxes_fall_back_to_centre_crop_like_torchvision():
    # scale (1, 1) with a square-only ratio cannot fit a wide image: torchvision's fallback is a centred crop
    boxes = augment.sample_crop_boxes(4, 10, 30, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0, 10, 10, 10]] * 4


@pytest.mark.parametrize("height, width", [(10, 40), (40, 10), (20, 20)])
def test_crop_fallback_equals_torchvisions_for_wide_tall_and_square_images(height, width):
    # the whole area at aspect 3/4..4/3 never fits a 1:4 or 4:1 image: both fall back; a square one fits
    rrc = T.RandomResizedCrop(8, scale=(1.0, 1.0))
    tv = rrc.make_params([torch.zeros(3, height, width)])
    ours = augment.sample_crop_boxes(3, height, width, scale=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert ours.tolist() == [[tv["top"], tv["left"], tv["height"], tv["width"]]] * 3


def _torchvision_rule(u, height, width, scale, ratio):
    """torchvision's ``RandomResizedCrop.get_params`` (v0.29), transcribed with its random numbers taken from
    ``u`` (attempts, 4) — area, log-aspect, top, left uniforms — instead of the global RNG:
    ``randint(0, m)`` is ``floor(u * m)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for a in u.tolist():
        target_area = area * (scale[0] + (scale[1] - scale[0]) * a[0])
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * a[1])
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return [math.floor(a[2] * (height - h + 1)), math.floor(a[3] * (width - w + 1)), h, w], True
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return [(height - h) // 2, (width - w) // 2, h, w], False


@pytest.mark.parametrize("height, width, scale", [(10, 40, (0.2, 1.0)), (40, 10, (0.2, 1.0)), (32, 32, (0.08, 1.0))])
def test_crop_boxes_follow_torchvisions_rule_box_by_box(height, width, scale):
    """Fed the same uniforms (one (n, attempts, 4) block drawn from the generator), every box equals the one
    torchvision's loop picks: the first candidate that fits, log-uniform aspect, and the centred fallback."""
    n, ratio = 400, (3 / 4, 4 / 3)
    ours = augment.sample_crop_boxes(n, height, width, scale, ratio, generator=torch.Generator().manual_seed(3))
    u = torch.rand(n, 10, 4, generator=torch.Generator().manual_seed(3)).double()
    ref, fitted = zip(*(_torchvision_rule(u[i], height, width, scale, ratio) for i in range(n)))
    assert ours.tolist() == list(ref)
    if height != width:  # the case exercises the fallback and picks among several fitting candidates
        assert 0 < sum(fitted) < n
        log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
        target = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        fits = (torch.sqrt(target * aspect).round() <= width) & (torch.sqrt(target / aspect).round() <= height)
        assert (fits.sum(1) >= 2).sum() > 20


def test_crop_aspect_ratio_is_log_uniform():
    # on a large image every candidate fits at once: log(w / h) is then ~U(log 3/4, log 4/3), mean 0
    boxes = augment.sample_crop_boxes(20000, 1000, 1000, scale=(0.1, 0.5), generator=torch.Generator().manual_seed(6))
    log_aspect = torch.log(boxes[:, 3] / boxes[:, 2])
    assert abs(log_aspect.mean()) < 0.006  # a linear draw would give +0.028 (SE 0.0012)
    assert log_aspect.min() > math.log(3 / 4) - 0.01 and log_aspect.max() < math.log(4 / 3) + 0.01
    assert abs((log_aspect < 0).float().mean() - 0.5) < 0.02


def test_crop_box_statistics_match_torchvision():
    # same sampling rule: the mean area fraction of 4000 boxes agrees with torchvision's RandomResizedCrop
    torch.manual_seed(0)
    rrc = T.RandomResizedCrop(32, scale=(0.08, 1.0))
    tv = torch.tensor([[p["height"] * p["width"] for p in [rrc.make_params([torch.zeros(3, 32, 32)])]][0]
                       for _ in range(4000)], dtype=torch.float) / 1024
    ours = augment.sample_crop_boxes(4000, 32, 32, generator=torch.Generator().manual_seed(0))
    ours = ours[:, 2] * ours[:, 3] / 1024
    assert abs(tv.mean() - ours.mean()) < 0.02


@pytest.mark.parametrize("size", [(20, 24), (8, 8), (31, 17)])
def test_resized_crop_reproduces_torchvision_with_reported_box(size):
    x = _images()
    g = torch.Generator().manual_seed(2)
    boxes = augment.sample_crop_boxes(x.shape[0], 20, 24, scale=(0.1, 1.0), generator=g)
    ours = augment.resized_crop(x, boxes, size)
    for i in range(x.shape[0]):
        t, l, h, w = (int(v) for v in boxes[i])
        ref = TF.resized_crop(x[i], t, l, h, w, list(size), antialias=False)
        torch.testing.assert_close(ours[i], ref, atol=2e-6, rtol=0)
        if h <= size[0] and w <= size[1]:  # upsampling: torchvision's default antialias gives the same
            ref_aa = TF.resized_crop(x[i], t, l, h, w, list(size))
            torch.testing.assert_close(ours[i], ref_aa, atol=2e-5, rtol=0)


def test_full_box_at_same_size_is_identity():
    x = _images()
    boxes = torch.tensor([[0, 0, 20, 24]] * x.shape[0], dtype=torch.float)
    torch.testing.assert_close(augment.resized_crop(x, boxes, (20, 24)), x)


def test_resized_crop_rejects_boxes_outside_the_image():
    x = _images(b=2)
    with pytest.raises(ValueError, match="inside"):
        augment.resized_crop(x, torch.tensor([[0, 0, 21, 5], [0, 0, 4, 4]], dtype=torch.float), 8)
    with pytest.raises(ValueError, match="boxes must have shape"):
        augment.resized_crop(x, torch.zeros(3, 4), 8)


# ----------------------------------------------------------------------------- flip and colour

def test_hflip_matches_torchvision():
    x = _images()
    flags = torch.tensor([True, False, True, True, False, False])
    out = augment.hflip(x, flags)
    for i in range(6):
        ref = TF.horizontal_flip(x[i]) if flags[i] else x[i]
        assert torch.equal(out[i], ref)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_negative_blend_factors_raise_like_torchvision(name):
    x = _images(b=3)
    with pytest.raises(ValueError):
        getattr(TF, f"adjust_{name}")(x[0], -0.5)
    with pytest.raises(ValueError, match="-0.5"):
        getattr(augment, f"adjust_{name}")(x, -0.5)
    with pytest.raises(ValueError, match="-0.5"):
        getattr(augment, f"adjust_{name}")(x, torch.tensor([1.0, -0.5, 0.2]))
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 3)
    factors[1, ["brightness", "contrast", "saturation"].index(name)] = -0.5
    with pytest.raises(ValueError, match="-0.5"):
        augment.color_jitter(x, factors)


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_blend_adjustments_match_torchvision(name):
    x = _images()
    factors = torch.tensor([0.0, 0.5, 0.9, 1.0, 1.3, 2.0])
    ours = getattr(augment, f"adjust_{name}")(x, factors)
    for i in range(6):
        ref = getattr(TF, f"adjust_{name}")(x[i], float(factors[i]))
        torch.testing.assert_close(ours[i], ref, atol=1e-6, rtol=0)


def test_hue_matches_torchvision():
    x = _images()
    x[0] = 0.5  # a grey image (zero saturation)
    x[1, :, :4] = 1.0  # white patches
    shifts = torch.tensor([0.1, -0.5, -0.2, 0.0, 0.3, 0.5])
    ours = augment.adjust_hue(x, shifts)
    for i in range(6):
        ref = TF.adjust_hue(x[i], float(shifts[i]))
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = _images()
    flags = torch.tensor([True, False] * 3)
    out = augment.grayscale(x, flags)
    for i in range(6):
        ref = TF.rgb_to_grayscale(x[i], num_output_channels=3) if flags[i] else x[i]
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)


def test_color_jitter_equals_torchvision_adjust_chain():
    x = _images()
    g = torch.Generator().manual_seed(3)
    p = augment.sample_params(6, 20, 24, jitter_p=1.0, generator=g)
    ours = augment.color_jitter(x, p.jitter)
    for i in range(6):
        b, c, s, h = p.jitter[i].tolist()
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s), h)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_identity_jitter_leaves_images_unchanged():
    x = _images()
    ident = torch.tensor([augment.IDENTITY_JITTER] * 6)
    torch.testing.assert_close(augment.color_jitter(x, ident), x, atol=1e-6, rtol=0)


def test_bad_hue_shift_and_bad_channels_raise():
    with pytest.raises(ValueError, match="hue"):
        augment.adjust_hue(_images(b=1), 0.7)
    with pytest.raises(ValueError, match="channels"):
        augment.adjust_saturation(torch.rand(2, 1, 4, 4), 0.5)
    with pytest.raises(ValueError, match="float"):
        augment.adjust_brightness(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 0.5)


def _params(n: int):
    return augment.sample_params(n, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda: augment.hflip(torch.rand(3, 4, 4), torch.ones(3, dtype=torch.bool)),
                 r"\(B, C, H, W\) tensor, got Tensor with shape \(3, 4, 4\)", id="3d-images"),
    pytest.param(lambda: augment.adjust_brightness(_images(), torch.ones(2)),
                 r"factor must be a scalar or have shape \(6,\), got \(2,\)", id="factor-per-image-wrong-count"),
    pytest.param(lambda: augment.sample_crop_boxes(0, 8, 8), r"n must be >= 1, got 0", id="crop-no-box"),
    pytest.param(lambda: augment.sample_crop_boxes(2, 0, 8), r"image size must be positive, got \(0, 8\)",
                 id="crop-empty-image"),
    pytest.param(lambda: augment.sample_crop_boxes(2, 8, 8, scale=(0.5, 0.2)), r"got \(0\.5, 0\.2\)",
                 id="crop-scale-reversed"),
    # without the check math.log(0) would raise its own ValueError ("math domain error")
    pytest.param(lambda: augment.sample_crop_boxes(2, 8, 8, ratio=(0.0, 1.0)),
                 r"ratio must satisfy 0 < lo <= hi, got \(0\.0, 1\.0\)", id="crop-ratio-zero"),
    pytest.param(lambda: augment.resized_crop(_images(b=2), torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2), 0),
                 r"size must be positive, got 0", id="resize-to-zero"),
    pytest.param(lambda: augment.hflip(_images(), torch.ones(5, dtype=torch.bool)),
                 r"flags must have shape \(6,\), got \(5,\)", id="flip-flags-wrong-count"),
    pytest.param(lambda: augment.color_jitter(_images(), torch.ones(6, 3)),
                 r"factors must have shape \(6, 4\), got \(6, 3\)", id="jitter-three-factors"),
    pytest.param(lambda: augment.grayscale(_images(), torch.ones(6, 1, dtype=torch.bool)),
                 r"flags must have shape \(6,\), got \(6, 1\)", id="gray-flags-wrong-shape"),
    pytest.param(lambda: augment.sample_params(2, 8, 8, flip_p=1.5),
                 r"flip_p must be a probability in \[0, 1\], got 1.5", id="params-flip-p-above-one"),
    pytest.param(lambda: augment.sample_params(2, 8, 8, gray_p=-0.1), r"gray_p must be a probability .*got -0.1",
                 id="params-gray-p-negative"),
    pytest.param(lambda: augment.sample_params(2, 8, 8, strength=(0.4, 0.4, 0.4, 0.6)),
                 r"got \(0\.4, 0\.4, 0\.4, 0\.6\)", id="params-hue-strength-above-half"),
    # apply_params would reject one channel too, with its own message ("expected 3 channels")
    pytest.param(lambda: augment.simclr_views(torch.rand(2, 1, 8, 8)),
                 r"expected \(B, 3, H, W\) images, got shape \(2, 1, 8, 8\)", id="views-one-channel"),
    pytest.param(lambda: augment.augself_targets(_params(3), _params(4)), r"3 vs 4", id="targets-batch-mismatch"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- the whole pipeline

def test_params_ranges_and_probabilities():
    # every probability and every strength different, so that a swapped or misread one shows
    p = augment.sample_params(4000, 32, 32, flip_p=0.2, strength=(0.5, 0.3, 0.2, 0.1), jitter_p=0.7, gray_p=0.1,
                              generator=torch.Generator().manual_seed(4))
    applied = p.jitter_applied
    assert abs(applied.float().mean() - 0.7) < 0.03
    assert abs(p.gray.float().mean() - 0.1) < 0.03
    assert abs(p.flip.float().mean() - 0.2) < 0.03
    j = p.jitter[applied]
    # each factor ~U(1 - s, 1 + s) with its own s (ColorJitter(0.5, 0.3, 0.2)), the hue shift ~U(-0.1, 0.1)
    for col, (lo, hi) in enumerate([(0.5, 1.5), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert lo <= j[:, col].min() < lo + 0.01 and hi - 0.01 < j[:, col].max() <= hi, col
        assert abs(j[:, col].mean() - (lo + hi) / 2) < 0.02 * (hi - lo), col
    assert torch.equal(p.jitter[~applied], torch.tensor(augment.IDENTITY_JITTER).expand(int((~applied).sum()), 4))


def test_view_params_to_moves_every_tensor_and_keeps_the_rest():
    p = augment.sample_params(4, 16, 16, strength=(0.5, 0.3, 0.2, 0.1), generator=torch.Generator().manual_seed(0))
    names = ("boxes", "flip", "jitter", "jitter_applied", "gray")
    meta = p.to("meta")
    for name in names:
        moved, orig = getattr(meta, name), getattr(p, name)
        assert moved.device.type == "meta" and moved.dtype == orig.dtype and moved.shape == orig.shape, name
    assert meta.source_size == (16, 16) and meta.strength == (0.5, 0.3, 0.2, 0.1)
    back = p.to("cpu")
    assert back is not p and all(torch.equal(getattr(back, n), getattr(p, n)) for n in names)


def test_views_are_reproduced_by_torchvision_from_reported_params():
    x = _images(b=5, h=16, w=16)
    views, p = augment.simclr_views(x, torch.Generator().manual_seed(5), size=16, jitter_p=0.6, gray_p=0.5)
    assert views.shape == (5, 3, 16, 16)
    for i in range(5):
        q = p.index(i)
        ref = TF.resized_crop(x[i], q["top"], q["left"], q["height"], q["width"], [16, 16])
        if q["flip"]:
            ref = TF.horizontal_flip(ref)
        ref = TF.adjust_brightness(ref, q["brightness"])
        ref = TF.adjust_contrast(ref, q["contrast"])
        ref = TF.adjust_saturation(ref, q["saturation"])
        ref = TF.adjust_hue(ref, q["hue"])
        if q["gray"]:
            ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
        torch.testing.assert_close(views[i], ref, atol=1e-4, rtol=0)


def test_views_deterministic_under_generator_and_differ_across_seeds():
    x = (torch.rand(8, 3, 12, 12) * 255).to(torch.uint8)
    a, pa = augment.simclr_views(x, torch.Generator().manual_seed(7))
    b, pb = augment.simclr_views(x, torch.Generator().manual_seed(7))
    c, _ = augment.simclr_views(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and torch.equal(pa.boxes, pb.boxes) and torch.equal(pa.jitter, pb.jitter)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1


def test_augself_targets():
    h = w = 32
    # view 1: left half, unflipped, brightness 1.4; view 2: full image, flipped, no jitter
    p1 = augment.ViewParams(torch.tensor([[0., 0., 32., 16.]]), torch.tensor([False]),
                            torch.tensor([[1.4, 1.0, 1.0, 0.1]]), torch.tensor([True]), torch.tensor([False]), (h, w))
    p2 = augment.ViewParams(torch.tensor([[8., 8., 16., 16.]]), torch.tensor([True]),
                            torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([False]), torch.tensor([False]), (h, w))
    t = augment.augself_targets(p1, p2)
    # centres: view 1 (0.5, 0.25); view 2 (0.5, 0.5) mirrored → (0.5, 0.5); sizes (1, .5) vs (.5, .5)
    torch.testing.assert_close(t["crop"], torch.tensor([[0.0, -0.25, 0.5, 0.0]]))
    # colour: (1.4 - 1) / 0.8 = 0.5 for brightness, 0.1 / 0.2 = 0.5 for hue, identity → 0
    torch.testing.assert_close(t["color"], torch.tensor([[0.5, 0.0, 0.0, 0.5]]))
    # antisymmetric, and the flip mirrors the centre: a flipped left crop sits on the right
    t21 = augment.augself_targets(p2, p1)
    torch.testing.assert_close(t21["crop"], -t["crop"])
    p1f = augment.ViewParams(p1.boxes, torch.tensor([True]), p1.jitter, p1.jitter_applied, p1.gray, (h, w))
    assert augment.augself_targets(p1f, p2)["crop"][0, 1].item() == pytest.approx(0.25)


def test_augself_targets_in_range_for_random_views():
    g = torch.Generator().manual_seed(9)
    p1, p2 = (augment.sample_params(2000, 32, 32, generator=g) for _ in range(2))
    t = augment.augself_targets(p1, p2)
    for v in t.values():
        assert v.shape == (2000, 4) and v.abs().max() <= 1.0 + 1e-6
    assert t["crop"].std() > 0.05 and t["color"].std() > 0.05


# ----------------------------------------------------------------------------- the encoder

def test_cifar_resnet18_shapes_and_size():
    net = resnet.resnet18()
    n_params = sum(p.numel() for p in net.parameters())
    assert 11.1e6 < n_params < 11.2e6  # the CIFAR ResNet-18 has 11.17 M parameters
    assert net.stem[0].kernel_size == (3, 3) and net.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    small = resnet.resnet18(width=4, in_channels=1).eval()
    assert small(torch.rand(2, 1, 28, 28)).shape == (2, 32)
    with pytest.raises(ValueError, match="width"):
        resnet.resnet18(width=0)


# ----------------------------------------------------------------------------- losses

def _naive_nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = torch.stack([z[i] @ z[j] / t for j in range(2 * n) if j != i])
        total += -(z[i] @ z[pos] / t - torch.logsumexp(sims, 0))
    return total / (2 * n)


def test_nt_xent_matches_naive_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    torch.testing.assert_close(contrastive.nt_xent(z1, z2, 0.3), _naive_nt_xent(z1, z2, 0.3))


def test_info_nce_is_cross_entropy_over_keys_and_rewards_alignment():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.5
    ref = -torch.log_softmax(logits, dim=1).diagonal().mean()
    torch.testing.assert_close(contrastive.info_nce(q, k, 0.5), ref)
    assert contrastive.info_nce(k, k, 0.1) < contrastive.info_nce(q, k, 0.1)


def test_imix_loss_equals_info_nce_at_lambda_one():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    perm = torch.randperm(8, generator=g)
    torch.testing.assert_close(contrastive.imix_loss(q, k, perm, 1.0, 0.2), contrastive.info_nce(q, k, 0.2))
    torch.testing.assert_close(contrastive.imix_loss(q, k, perm, torch.ones(8), 0.2), contrastive.info_nce(q, k, 0.2))
    # at λ = 0 the virtual label is the partner's: InfoNCE against the permuted keys
    torch.testing.assert_close(contrastive.imix_loss(q, k, perm, 0.0, 0.2),
                               contrastive.info_nce(q, k[perm], 0.2), rtol=1e-5, atol=1e-6)


def test_imix_loss_is_linear_in_lambda():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    perm = torch.randperm(8, generator=g)
    l0, l1, lh = (contrastive.imix_loss(q, k, perm, v) for v in (0.0, 1.0, 0.3))
    torch.testing.assert_close(lh, 0.3 * l1 + 0.7 * l0)


def test_mix_is_convex_and_deterministic():
    x = torch.randn(64, 10)
    a, perm, lam = contrastive.mix(x, 1.0, torch.Generator().manual_seed(4))
    b, perm_b, lam_b = contrastive.mix(x, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(perm, perm_b)
    assert (lam >= 0.5).all() and (lam <= 1).all()
    torch.testing.assert_close(a, lam[:, None] * x + (1 - lam[:, None]) * x[perm])
    assert sorted(perm.tolist()) == list(range(64))
    assert not torch.equal(a, x)                                   # it mixes
    _, _, lam = contrastive.mix(torch.zeros(20000, 1), 1.0, torch.Generator().manual_seed(5))
    # lam = max(l, 1 - l) with l ~ Beta(1, 1) = U(0, 1): uniform on [0.5, 1], mean 0.75, std 1/sqrt(48) = 0.144
    assert abs(lam.mean().item() - 0.75) < 0.01 and abs(lam.std().item() - 0.144) < 0.01


def test_sample_beta_moments():
    for alpha in (0.5, 1.0, 2.0):
        s = contrastive.sample_beta(20000, alpha, torch.Generator().manual_seed(5))
        var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(α, α)
        assert abs(s.mean() - 0.5) < 0.01 and abs(s.var() - var) < 0.01
    with pytest.raises(ValueError, match="alpha"):
        contrastive.sample_beta(4, 0.0)


def test_augself_loss_and_errors():
    t = {"crop": torch.full((4, 4), 0.5), "color": torch.zeros(4, 4)}
    perfect = {"crop": torch.full((4, 4), math.atanh(0.5)), "color": torch.zeros(4, 4)}
    assert contrastive.augself_loss(perfect, t, {"crop": 1.0, "color": 1.0}).item() == pytest.approx(0, abs=1e-7)
    zero = {"crop": torch.zeros(4, 4), "color": torch.zeros(4, 4)}
    assert contrastive.augself_loss(zero, t, {"crop": 2.0}).item() == pytest.approx(2 * 0.25)
    with pytest.raises(ValueError, match="missing"):
        contrastive.augself_loss(zero, t, {"flip": 1.0})
    with pytest.raises(ValueError, match="'color'.*-1.0"):
        contrastive.augself_loss(zero, t, {"crop": 1.0, "color": -1.0})  # would reward errors
    with pytest.raises(ValueError, match="nan"):
        contrastive.augself_loss(zero, t, {"crop": float("nan")})
    with pytest.raises(ValueError, match="-2.0"):
        contrastive.augself_loss(zero, t, {"crop": torch.tensor(-2.0)})
    with pytest.raises(ValueError, match="temperature"):
        contrastive.info_nce(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_sample_beta_and_the_view_pipeline_never_read_values_on_the_host(monkeypatch):
    """i-Mix and AugSelf run these every step; on a GPU, reading a value on the host (.item, .tolist, .cpu,
    bool) waits for the whole queue. On the CPU, making those calls fail proves the code never makes them."""
    def forbidden(*args, **kwargs):
        raise AssertionError("host read in a per-step function")

    for name in ("item", "tolist", "cpu", "__bool__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    g = torch.Generator().manual_seed(0)
    for alpha in (0.5, 1.0, 2.0):
        s = contrastive.sample_beta(512, alpha, g)
        assert s.shape == (512,)
    # (the image operations themselves validate their inputs on CPU tensors only; tests/test_cuda_paths.py
    # runs the whole view pipeline on a GPU with synchronisation reported as an error)
    p1, p2 = (augment.sample_params(8, 16, 16, generator=g) for _ in range(2))
    augment.augself_targets(p1, p2)
    mixed, perm, lam = contrastive.mix(torch.rand(8, 3, 16, 16), 1.0, g)
    contrastive.nt_xent(torch.randn(8, 4), torch.randn(8, 4))
    monkeypatch.undo()
    assert ((s >= 0) & (s <= 1)).all()


def test_sample_beta_is_deterministic_and_rejects_impossible_requests():
    a = contrastive.sample_beta(1000, 1.0, torch.Generator().manual_seed(3))
    b = contrastive.sample_beta(1000, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and (a != 0.5).all()  # no draw fell back to the mean
    with pytest.raises(ValueError, match="alpha"):
        contrastive.sample_beta(1 << 20, 20.0)     # acceptance ~1e-11: far too many candidates
    with pytest.raises(ValueError, match="miss"):
        contrastive.sample_beta(4, 1.0, miss=0.0)


def test_imix_loss_and_apply_params_reject_inconsistent_inputs():
    q, k = torch.randn(4, 8), torch.randn(4, 8)
    perm = torch.randperm(4)
    for bad in (1.5, -0.1, torch.tensor([0.5, 0.5, 0.5, 1.2])):
        with pytest.raises(ValueError, match="lam"):
            contrastive.imix_loss(q, k, perm, bad)
    p = augment.sample_params(3, 20, 24, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="do not match parameters"):
        augment.apply_params(torch.rand(2, 3, 20, 24), p, 16)          # 2 images, parameters for 3
    with pytest.raises(ValueError, match="do not match parameters"):
        augment.apply_params(torch.rand(3, 3, 24, 20), p, 16)          # wrong source size


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda: contrastive.info_nce(torch.randn(4, 8), torch.randn(3, 8)), r"got \(4, 8\) and \(3, 8\)",
                 id="info-nce-shapes-differ"),
    pytest.param(lambda: contrastive.sample_beta(0, 1.0), r"n must be >= 1, got 0", id="beta-no-draw"),
    pytest.param(lambda: contrastive.mix(torch.rand(5)), r"expected a batch \(N, \.\.\.\), got shape \(5,\)",
                 id="mix-1d-input"),
    # cross_entropy would reject the short perm too, with its own ValueError
    pytest.param(lambda: contrastive.imix_loss(torch.randn(4, 8), torch.randn(4, 8), torch.arange(3), 1.0),
                 r"perm must have shape \(4,\), got \(3,\)", id="imix-perm-wrong-length"),
    pytest.param(lambda: contrastive.augself_loss({}, {}, {}), r"weights is empty", id="augself-no-weights"),
    pytest.param(lambda: contrastive.imix_loss(torch.randn(4, 8), torch.randn(4, 8), torch.arange(4),
                                               torch.tensor([0.5, 0.5, 0.5, 1.25])),
                 r"lam must lie in \[0, 1\], got \[1\.25\] \(at positions \[3\]\)", id="imix-lam-above-one"),
    pytest.param(lambda: contrastive.augself_loss({"crop": torch.zeros(4, 4)}, {"crop": torch.zeros(4, 3)},
                                                  {"crop": 1.0}),
                 r"'crop': prediction shape \(4, 4\) != target shape \(4, 3\)", id="augself-shapes-differ"),
])
def test_contrastive_invalid_arguments_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
