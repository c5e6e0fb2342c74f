import pytest
import torch
import torchvision.transforms.v2.functional as TF

from helpers.loader import GpuLoader, random_crop_flip


def _dataset(n=103):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return x, torch.arange(n)


@pytest.mark.parametrize("batch_size", [1, 10, 103, 200])
def test_every_sample_exactly_once_per_epoch(batch_size):
    x, y = _dataset()
    loader = GpuLoader(x, y, batch_size, shuffle=True, seed=3)
    for _ in range(2):
        seen = torch.cat([yb for _, yb in loader])
        assert sorted(seen.tolist()) == list(range(103))
    assert len(loader) == len(list(loader)) == -(-103 // batch_size)


def test_drop_last_and_shuffle_order():
    x, y = _dataset()
    loader = GpuLoader(x, y, 10, drop_last=True, seed=0)
    batches = [yb for _, yb in loader]
    assert len(batches) == len(loader) == 10 and all(len(b) == 10 for b in batches)
    plain = GpuLoader(x, y, 10, shuffle=False)
    assert torch.cat([yb for _, yb in plain]).tolist() == list(range(103))
    assert torch.cat(batches).tolist() != list(range(100))


def test_images_and_labels_stay_paired_and_normalised():
    x, y = _dataset()
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.5, 0.125)
    loader = GpuLoader(x, y, 16, mean=mean, std=std, seed=1)
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 4, 4)
        for c in range(3):  # per channel
            expected = (yb.float() / 255 - mean[c]) / std[c]
            assert torch.allclose(xb[:, c, 0, 0], expected)


def test_same_seed_same_order_and_state_restore():
    x, y = _dataset()
    a, b = GpuLoader(x, y, 7, seed=5), GpuLoader(x, y, 7, seed=5)
    assert [t.tolist() for _, t in a] == [t.tolist() for _, t in b]
    state = a.state_dict()
    next_epoch = [t.tolist() for _, t in a]
    other = GpuLoader(x, y, 7, seed=99)               # a different seed: only the restored state can match
    assert [t.tolist() for _, t in GpuLoader(x, y, 7, seed=99)] != [t.tolist() for _, t in GpuLoader(x, y, 7, seed=5)]
    other.load_state_dict(state)
    assert [t.tolist() for _, t in other] == next_epoch


def test_bad_arguments_are_rejected():
    x, y = _dataset()
    with pytest.raises(ValueError, match="102"):
        GpuLoader(x, y[:102], 4)
    with pytest.raises(ValueError, match="0"):
        GpuLoader(x, y, 0)
    with pytest.raises(ValueError, match="500"):
        GpuLoader(x, y, 500, drop_last=True)
    with pytest.raises(ValueError, match="shape"):
        random_crop_flip(x[0])


def test_crop_flip_matches_one_torchvision_crop_per_image():
    """Every output must equal torchvision's pad → crop (→ hflip) for some offset: the batched version
    is the per-image transform, not an approximation of it."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    flips = 0
    for img, res in zip(x, out):
        padded = TF.pad(img, [2, 2, 2, 2])
        candidates = [(TF.crop(padded, top, left, 8, 8), f) for top in range(5) for left in range(5)
                      for f in (False, True)]
        matches = [f for c, f in candidates if torch.equal(TF.horizontal_flip(c) if f else c, res)]
        assert matches, "output is not a padded crop of its input"
        flips += matches[0]
    assert 0 < flips < 16  # both branches of the coin are exercised


def test_crop_offsets_cover_the_whole_range():
    """Each of the (2p+1)^2 offsets of torchvision's RandomCrop(H, padding=p) must occur, about equally often:
    identify every output's offset by comparing it with all candidate crops of its padded input."""
    p, n = 2, 1000
    x = torch.randint(1, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = random_crop_flip(x, padding=p, flip=False, generator=torch.Generator().manual_seed(1))
    padded = TF.pad(x, [p, p, p, p])
    hits = torch.stack([(padded[:, :, top:top + 6, left:left + 6] == out).flatten(1).all(1)
                        for top in range(2 * p + 1) for left in range(2 * p + 1)], dim=1)  # (n, 25)
    assert (hits.sum(1) == 1).all()  # every output is exactly one crop (the pixels are random and non-zero)
    counts = hits.sum(0)
    expected = n / (2 * p + 1) ** 2
    assert (counts > 0.5 * expected).all() and (counts < 1.5 * expected).all(), counts.view(5, 5).tolist()


def test_augment_hook_gets_the_loaders_generator_and_its_output_is_used():
    x, y = _dataset(20)
    seen = []

    def invert(batch, generator=None):
        seen.append((batch.dtype, generator))
        return 255 - batch

    loader = GpuLoader(x, y, 8, shuffle=False, augment=invert, seed=4)
    batches = list(loader)
    assert len(seen) == len(batches) == 3
    assert all(dtype == torch.uint8 and g is loader.generator for dtype, g in seen)
    for xb, yb in batches:
        torch.testing.assert_close(xb[:, 0, 0, 0], (255 - yb).float() / 255)


def test_augmentation_draws_come_from_the_loader_seed():
    """The augmentation uses the loader's generator, so the same seed gives the same augmented batches
    whatever the global RNG does, and restoring the loader's state replays them."""
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40)
    a, b = (GpuLoader(x, y, 10, augment=random_crop_flip, seed=6) for _ in range(2))
    torch.manual_seed(1)
    first = [xb for xb, _ in a]
    torch.manual_seed(2)
    second = [xb for xb, _ in b]
    assert all(torch.equal(u, v) for u, v in zip(first, second))
    assert not all(torch.equal(xb, x[yb].float() / 255) for xb, yb in GpuLoader(x, y, 10, augment=random_crop_flip))
    state = a.state_dict()
    again = [xb for xb, _ in a]
    a.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(again, [xb for xb, _ in a]))


def test_float_images_and_bad_mean_std_are_rejected():
    x, y = _dataset(8)
    with pytest.raises(ValueError, match="float32"):
        GpuLoader(x.float() / 255, y, 4)  # would be divided by 255 again
    with pytest.raises(ValueError, match="0.0"):
        GpuLoader(x, y, 4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.0, 0.25))  # inf after normalising
    with pytest.raises(ValueError, match="-0.25"):
        GpuLoader(x, y, 4, mean=(0.5, 0.5, 0.5), std=(0.25, -0.25, 0.25))
    with pytest.raises(ValueError, match="channel"):
        GpuLoader(x, y, 4, mean=(0.5, 0.5), std=(0.25, 0.25))
    with pytest.raises(ValueError, match="both"):
        GpuLoader(x, y, 4, mean=(0.5, 0.5, 0.5))
