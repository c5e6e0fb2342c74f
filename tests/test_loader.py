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
    loader = GpuLoader(x, y, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), seed=1)
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 4, 4)
        expected = (yb.float() / 255 - 0.5) / 0.25
        assert torch.allclose(xb[:, 0, 0, 0], expected)


def test_same_seed_same_order_and_state_restore():
    x, y = _dataset()
    a, b = GpuLoader(x, y, 7, seed=5), GpuLoader(x, y, 7, seed=5)
    assert [t.tolist() for _, t in a] == [t.tolist() for _, t in b]
    state = a.state_dict()
    next_epoch = [t.tolist() for _, t in a]
    b.load_state_dict(state)
    assert [t.tolist() for _, t in b] == next_epoch


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
    x = torch.zeros(2000, 1, 5, 5, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # a marker pixel: its position reveals the offset
    out = random_crop_flip(x, padding=2, flip=False, generator=torch.Generator().manual_seed(1))
    rows, cols = [], []
    for img in out[:, 0]:
        pos = (img == 255).nonzero()
        if len(pos):
            rows.append(pos[0, 0].item()), cols.append(pos[0, 1].item())
    assert set(rows) == {0, 1, 2} and set(cols) == {0, 1, 2}  # shifts of 0, +1, +2 keep the marker
