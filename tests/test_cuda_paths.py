"""Code paths that only a GPU exercises. Skipped on CPU machines (CI); run them first on a GPU box:
``python -m pytest -p no:nbmake tests/test_cuda_paths.py`` (needs pytest there: ``EXTRA=pytest`` for
``shared/gpu/prepare.sh``). Each is a cheap version of something a chapter's full profile relies on."""

import copy

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from helpers import augment, contrastive, ff, fl, runtime
from helpers import transformer as tr
from helpers.loader import GpuLoader, random_crop_flip
from helpers.train import Checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_gpu_loader_with_a_cuda_generator_resumes_exactly(tmp_path):
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(64)
    loader = GpuLoader(x, y, 16, augment=random_crop_flip, device=CUDA, seed=1)
    ckpt = Checkpoint(tmp_path / "g.pt", loader=loader)
    ckpt.save(0)
    first = [(xb.cpu(), yb.cpu()) for xb, yb in loader]
    again = GpuLoader(x, y, 16, augment=random_crop_flip, device=CUDA, seed=99)
    Checkpoint(tmp_path / "g.pt", loader=again).resume()  # loads onto the CPU, then restores CUDA states
    second = [(xb.cpu(), yb.cpu()) for xb, yb in again]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_checkpoint_restores_cuda_rng_and_optimizer_state(tmp_path):
    model = torch.nn.Linear(4, 4).to(CUDA)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    model(torch.randn(8, 4, device=CUDA)).sum().backward()
    opt.step()
    ckpt = Checkpoint(tmp_path / "c.pt", model=model, opt=opt)
    ckpt.save(1)
    expected = torch.randn(3, device=CUDA)
    fresh = torch.nn.Linear(4, 4).to(CUDA)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2, fused=True)
    assert Checkpoint(tmp_path / "c.pt", model=fresh, opt=fresh_opt).resume() == 1
    assert torch.equal(torch.randn(3, device=CUDA), expected)
    assert fresh_opt.state[fresh.weight]["exp_avg"].device.type == "cuda"
    fresh(torch.randn(8, 4, device=CUDA)).sum().backward()
    fresh_opt.step()  # fused AdamW needs its state on the parameters' device


def test_bf16_autocast_and_compile_train_a_step():
    runtime.setup(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).to(CUDA)
    fast = runtime.maybe_compile(model, CUDA)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 3, 16, 16, device=CUDA), torch.randint(0, 10, (32,), device=CUDA)
    losses = []
    for _ in range(5):
        with runtime.autocast(CUDA):
            loss = F.cross_entropy(fast(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert runtime.peak_memory_gb(CUDA) > 0


@pytest.mark.parametrize("length", [5, 100])
def test_compiled_sdpa_with_boolean_padding_masks(length):
    """Chapter 07's full profile compiles attention with padding masks of odd lengths."""
    mha = tr.MultiHeadAttention(256, 2, dropout=0.1).to(CUDA)
    fast = torch.compile(mha)
    x = torch.randn(16, length, 256, device=CUDA, requires_grad=True)
    lengths = torch.randint(1, length + 1, (16,), device=CUDA)
    with runtime.autocast(CUDA):
        out = fast(x, attn_mask=tr.padding_mask(lengths, length))
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.fixture
def no_tf32():
    """Full float32 precision for a parity test (TF32 rounds convolution inputs to 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_vmapped_client_updates_match_the_loop_on_cuda(no_tf32):
    """Chapter 01 trains all sampled clients at once with vmap through BatchNorm (cuDNN path).

    The first GPU run of this test compared raw 0-255 pixels under cuDNN's default TF32 and found
    weight differences of about 0.03 after five SGD steps: rounding differences that unnormalised
    inputs and lr 0.1 amplify. It now runs in float32 on normalised pixels, so what it measures is
    whether vmap computes the same updates as the loop."""
    torch.manual_seed(0)
    net = fl.ConvNet4(width=16).to(CUDA)
    params = fl.broadcast(fl.params_of(net), 3)
    xs = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, device=CUDA)
    ys = torch.randint(0, 10, (300,), device=CUDA)
    parts = [torch.arange(100, device=CUDA) + 100 * k for k in range(3)]
    batches = fl.client_batches(parts, 1, 20, torch.Generator(device=CUDA).manual_seed(0))
    scale = lambda x: x.float() / 255 - 0.5  # noqa: E731
    out, _ = fl.local_sgd(net, params, xs, ys, batches, trainable=list(params), lr=0.1, momentum=0.9,
                          transform=scale)
    ref, _ = fl.local_sgd_loop(net, params, xs, ys, batches, trainable=list(params), lr=0.1, momentum=0.9,
                               transform=scale)
    for name in out:
        assert torch.allclose(out[name], ref[name], atol=1e-3, rtol=1e-3), name


def test_compiled_ff_step_matches_eager_under_bf16_and_compiles_two_graphs():
    """Chapter 06 compiles ff.layer_objective and the hard-negative scoring; the step must stay the same
    algorithm (losses, weights and running means close to eager under the same bf16 autocast) and the
    four layers must share compiled code (one graph for the input layer, one for the hidden ones)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # earlier tests in this process compiled other functions
    torch.manual_seed(0)
    amp = lambda: runtime.autocast(CUDA)  # noqa: E731
    eager = ff.FFNet([784, 256, 256, 256, 256]).to(CUDA)
    fast = copy.deepcopy(eager)
    opt_e, opt_f = ff.make_optimizers(eager, lr=1e-3), ff.make_optimizers(fast, lr=1e-3)
    start = [p.detach().clone() for p in eager.parameters()]
    objective = torch.compile(ff.layer_objective, dynamic=False)  # as chapter 06 compiles it
    scores = torch.compile(lambda xb: ff.label_goodness(fast, xb, skip_layers=1, logits=True))
    x, y = torch.rand(100, 784, device=CUDA), torch.randint(0, 10, (100,), device=CUDA)
    for _ in range(3):
        with amp():
            s_f = scores(x)
        s_e = ff.label_goodness(eager, x, skip_layers=1, autocast=amp, logits=True)
        torch.testing.assert_close(s_f, s_e, atol=0.5, rtol=0.05)
        y_neg = (y + 1 + torch.randint(0, 9, y.shape, device=CUDA)) % 10
        l_e = ff.train_step(eager, opt_e, ff.embed_label(x, y), ff.embed_label(x, y_neg), peer=0.03, autocast=amp)
        l_f = ff.train_step(fast, opt_f, ff.embed_label(x, y), ff.embed_label(x, y_neg), peer=0.03, autocast=amp,
                            objective=objective)
        torch.testing.assert_close(l_f, l_e, atol=2e-2, rtol=2e-2)
    for a, b, a0 in zip(eager.parameters(), fast.parameters(), start):
        # Adam moves near-zero gradients by ±lr whatever their size, so compare the updates in bulk
        assert (b - a).abs().mean() < 0.2 * (a - a0).abs().mean()
    assert all(torch.isfinite(layer.running_mean).all() for layer in fast.layers)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 3  # 2 objective graphs + 1 scoring


def test_ssl_step_inputs_are_made_without_waiting_for_the_gpu():
    """Chapter 02's per-step work — two views with their parameters, i-Mix's mixing and Beta draws, AugSelf's
    targets, NT-Xent — must never synchronise with the host, or the CPU cannot queue ahead of the GPU.
    With the sync debug mode set to "error", any synchronising call raises."""
    gen = torch.Generator(device=CUDA).manual_seed(0)
    x = torch.rand(64, 3, 32, 32, device=CUDA)
    z1, z2 = torch.randn(64, 16, device=CUDA), torch.randn(64, 16, device=CUDA)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        v1, p1 = augment.simclr_views(x, gen, size=32)
        v2, p2 = augment.simclr_views(x, gen, size=32)
        augment.augself_targets(p1, p2)
        mixed, perm, lam = contrastive.mix(v1, 1.0, gen)
        loss = contrastive.nt_xent(z1, z2) + contrastive.imix_loss(z1, z2, perm, lam)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and mixed.shape == v1.shape
