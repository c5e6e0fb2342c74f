import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.plot import pca_2d, plot_history, show_images, to_grid  # noqa: E402


def test_grid_layout_and_scaling():
    x = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    x[4] = 255
    grid = to_grid(x, nrow=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)  # 2 rows of 3 tiles, 1-pixel borders
    assert grid[6:10, 6:10].eq(1).all()  # the 5th image (row 1, column 1) is white
    assert grid[1:5, 1:5].eq(0).all()
    assert to_grid(torch.rand(2, 1, 3, 3), nrow=8).shape == (5, 9, 1)  # one row of two 3x3 tiles
    # float images are clamped to [0, 1] (e.g. a sample slightly outside [-1, 1] after rescaling)
    assert to_grid(torch.tensor([[[[-0.5, 0.25, 1.5]]]]), nrow=1, pad=0).flatten().tolist() == [0.0, 0.25, 1.0]


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        to_grid(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="0"):
        to_grid(torch.zeros(1, 1, 2, 2), nrow=0)


def test_plots_build():
    ax = show_images(torch.rand(4, 1, 8, 8), nrow=2, title="t", labels=["a", "b", "c", "d"])
    assert ax.get_title() == "t" and len(ax.images) == 1                # the grid is drawn as one image
    fig = plot_history({"loss": [3, 2, 1], "acc": [0.1, 0.5, 0.9]}, logy=["loss"])
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    with pytest.raises(ValueError):
        plot_history({})


def test_pca_2d_matches_the_svd_directions():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([5.0, 3.0] + [0.5] * 14)
    f = torch.randn(500, 16, generator=g) * scales + 2.0      # clear leading directions, non-zero mean
    xy = pca_2d(f)
    fc = f - f.mean(0)
    ref = fc @ torch.linalg.svd(fc, full_matrices=False).Vh[:2].T
    for k in range(2):  # equal up to sign
        assert abs(torch.nn.functional.cosine_similarity(xy[:, k], ref[:, k], dim=0)) > 0.999
    with pytest.raises(ValueError, match="16"):
        pca_2d(torch.randn(16))
    with pytest.raises(ValueError, match="iters"):
        pca_2d(f, iters=0)  # no iteration: the random start vectors, not principal directions
