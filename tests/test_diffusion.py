"""Tests for helpers.diffusion: the schedule algebra of chapter 05 (DDPM / DDIM)."""

import math
import re
import socket

import pytest
import torch

from helpers import diffusion as D


@pytest.fixture(scope="module")
def lin() -> D.Schedule:
    return D.make_schedule("linear", 1000)


@pytest.fixture(scope="module")
def cos() -> D.Schedule:
    return D.make_schedule("cosine", 1000)


# ---------------------------------------------------------------- schedules


def test_linear_betas_match_the_paper():
    betas = D.linear_betas(1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_monotone_and_in_range(kind):
    s = D.make_schedule(kind, 1000)
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert (s.betas[1:] >= s.betas[:-1]).all(), "betas must not decrease"
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all(), "alpha_bar must strictly decrease"
    assert 0.99 < s.alpha_bars[0].item() <= 1 and s.alpha_bars[-1].item() < 1e-4
    assert (s.snr[1:] < s.snr[:-1]).all()
    assert ((s.posterior_variance >= 0) & (s.posterior_variance <= s.betas)).all()
    assert s.posterior_variance[0].item() == 0.0


def test_cosine_alpha_bar_is_the_squared_cosine(cos):
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    # equal until the max_beta clip bites in the last few steps
    assert torch.allclose(cos.alpha_bars[:990], f[:990], rtol=1e-9)
    assert cos.betas.max().item() <= 0.999


def test_cosine_destroys_information_more_slowly(lin, cos):
    # Nichol & Dhariwal's point: the linear schedule is already near pure noise well before T.
    t = 600
    assert cos.alpha_bars[t] > 5 * lin.alpha_bars[t]


def test_schedule_tables_are_consistent(lin):
    assert torch.allclose(lin.alpha_bars, torch.cumprod(1 - lin.betas, 0))
    assert torch.allclose(lin.alpha_bars_prev[1:], lin.alpha_bars[:-1]) and lin.alpha_bars_prev[0] == 1
    assert torch.allclose(lin.snr, lin.alpha_bars / (1 - lin.alpha_bars))


def test_schedule_repr_names_its_size_and_end_points():
    s = D.Schedule(torch.tensor([0.1, 0.2]))
    assert repr(s) == "Schedule(T=2, beta_1=0.1, beta_T=0.2, alpha_bar_T=0.72)"   # alpha_bar_T = 0.9 * 0.8
    assert repr(s.to("cpu")) == repr(s)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_T_raises(bad):
    with pytest.raises(ValueError, match=str(bad)):
        D.linear_betas(bad)


def test_bad_inputs_raise_value_errors_naming_the_value(lin):
    with pytest.raises(ValueError, match="0.5"):
        D.linear_betas(10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match="1.5"):
        D.Schedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="sigmoid"):
        D.make_schedule("sigmoid", 10)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="1000"):
        D.q_sample(lin, x, torch.tensor([0, 1, 2, 1000]), torch.zeros_like(x))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        D.q_sample(lin, x, 0, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="'fancy'"):
        D.ddpm_step(lin, x, 5, x, variance="fancy")
    with pytest.raises(ValueError, match="-0.5"):
        D.ddim_sigma(lin, 5, 4, eta=-0.5)
    with pytest.raises(ValueError, match="t_prev"):
        D.ddim_sigma(lin, 5, 5, eta=0.0)
    with pytest.raises(ValueError, match="2000"):
        D.ddim_timesteps(1000, 2000)


def test_bool_and_float_timesteps_are_rejected(lin):
    # torch.tensor(True) would otherwise index step 1: a mask passed by mistake must not be a timestep
    x = torch.ones(2, 1)
    with pytest.raises(ValueError, match="bool"):
        D.q_sample(lin, x, torch.tensor(True), torch.zeros_like(x))
    with pytest.raises(ValueError, match="bool"):
        D.gather(lin.betas, torch.tensor([True, False]), x)
    with pytest.raises(ValueError, match="bool"):
        D.gather(lin.betas, True, x)
    with pytest.raises(ValueError, match="float"):
        D.q_sample(lin, x, torch.tensor([1.0, 2.0]), torch.zeros_like(x))
    with pytest.raises(ValueError, match="float"):
        D.ddim_sigma(lin, 5.0, 3, eta=1.0)
    with pytest.raises(ValueError, match="bool"):
        D.ddim_step(lin, x, True, -1, x)
    # integer dtypes of any width are fine
    assert torch.equal(D.gather(lin.betas, torch.tensor([1, 0], dtype=torch.int32), x).flatten(),
                       lin.betas[[1, 0]].float())


_X2 = torch.zeros(4, 2)
_EYE2 = torch.eye(2)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda s: D.cosine_betas(10, s=-0.1), r"offset s must be >= 0, got -0.1", id="cosine-negative-offset"),
    pytest.param(lambda s: D.cosine_betas(10, max_beta=1.0), r"max_beta must be in \(0, 1\), got 1.0",
                 id="cosine-max-beta-one"),
    pytest.param(lambda s: D.Schedule(torch.tensor([])), r"non-empty 1-D tensor, got tensor\(\[\]\)",
                 id="schedule-empty"),
    pytest.param(lambda s: D.gather(s.betas, torch.tensor([1, 2, 3]), _X2), r"shaped \(4,\), got shape \(3,\)",
                 id="gather-timesteps-wrong-batch"),
    pytest.param(lambda s: D.gather(s.betas, 0, torch.tensor(1.0)), r"batch dimension, got shape \(\)",
                 id="gather-0d-x"),
    pytest.param(lambda s: D.gather(s.betas, -1, _X2), r"timestep must lie in \[0, 999\], got -1",
                 id="gather-int-step-negative"),   # values[-1] would silently read the last step
    pytest.param(lambda s: D.gather(s.betas, 1000, _X2), r"timestep must lie in \[0, 999\], got 1000",
                 id="gather-int-step-too-large"),
    pytest.param(lambda s: D.ddpm_step(s, _X2, 5, _X2, clip=0.0), r"clip must be > 0 or None, got 0.0",
                 id="ddpm-clip-zero"),
    pytest.param(lambda s: D.ddim_sigma(s, 1000, 5, eta=0.0), r"t must lie in \[0, 999\], got 1000",
                 id="ddim-sigma-t-too-large"),
    pytest.param(lambda s: D.ddim_step(s, _X2, 5.0, 3, _X2), r"ddim_step takes int steps .*got t=5.0, t_prev=3",
                 id="ddim-step-float-t"),      # without the check ddim_sigma raises a different ValueError
    pytest.param(lambda s: D.ddim_step(s, _X2, 5, 3, _X2, clip=-1.0), r"clip must be > 0 or None, got -1.0",
                 id="ddim-step-negative-clip"),
    pytest.param(lambda s: D.gaussian_stats(torch.zeros(1, 3)), r"\(N >= 2, D\), got \(1, 3\)", id="stats-one-sample"),
    pytest.param(lambda s: D.frechet_distance(torch.zeros(2), _EYE2, torch.zeros(3), _EYE2),
                 r"mu2 must be shaped \(2,\) like mu1, got \(3,\)", id="frechet-mu2-shape"),
    pytest.param(lambda s: D.frechet_distance(torch.zeros(1, 2), _EYE2, torch.zeros(2), _EYE2),
                 r"mu1 must be a 1-D mean vector \(D,\), got shape \(1, 2\)", id="frechet-2d-mu1"),
    pytest.param(lambda s: D.frechet_distance(torch.zeros(2), _EYE2, torch.zeros(2), torch.eye(3)),
                 r"cov2 must be shaped \(2, 2\), got \(3, 3\)", id="frechet-cov2-shape"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(lin, call, message):
    with pytest.raises(ValueError, match=message):
        call(lin)


# ---------------------------------------------------------------- forward process


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_matches_iterating_the_forward_process(kind):
    """Run x_{t-1} -> x_t one step at a time and compare the sample mean/variance with Eq. (closed form).

    T = 100 (linear betas scaled by 1000/T, as in Nichol & Dhariwal) keeps the test fast; the algebra is the same.
    """
    s = D.Schedule(D.linear_betas(100, 1e-3, 0.2)) if kind == "linear" else D.make_schedule("cosine", 100)
    g = torch.Generator().manual_seed(0)
    n = 16_000  # (N, 2) = 32k elements: below torch's parallel grain, so no thread-pool overhead
    x0 = torch.tensor([1.5, -0.5]).repeat(n, 1).double()  # (N, 2): two different starting points
    x = x0.clone()
    for t in range(s.T):
        x = D.q_step(s, x, t, torch.randn(x.shape, generator=g, dtype=torch.float64))
        if t in (0, 5, 20, 50, 99):
            ab = s.alpha_bars[t].item()
            mean, var = x.mean(0), x.var(0)
            se_mean, se_var = math.sqrt(1 / n), (1 - ab) * math.sqrt(2 / n)
            assert torch.allclose(mean, math.sqrt(ab) * x0[0], atol=5 * se_mean), (t, mean)
            assert torch.allclose(var, torch.full_like(var, 1 - ab), rtol=0, atol=5 * se_var), (t, var)


def test_closed_form_sample_statistics(cos):
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((30_000, 1), 0.7, dtype=torch.float64)
    t = 300
    xt = D.q_sample(cos, x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ab = cos.alpha_bars[t].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.03)


def test_q_sample_per_sample_timesteps_and_shapes(lin):
    x0 = torch.randn(3, 1, 8, 8)
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 500, 999])
    xt = D.q_sample(lin, x0, t, eps)
    assert xt.shape == x0.shape and xt.dtype == x0.dtype
    for i in range(3):
        ab = lin.alpha_bars[t[i]].float()
        assert torch.allclose(xt[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i], atol=1e-6)
    assert torch.allclose(D.predict_x0(lin, xt, t, eps), x0, atol=1e-3)


def test_a_scalar_tensor_timestep_is_the_same_step_for_every_sample(lin):
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(3, 2, generator=torch.Generator().manual_seed(8))
    scalar = D.q_sample(lin, x0, torch.tensor(500), eps)          # a 0-d tensor: expanded to the batch
    repeated = D.q_sample(lin, x0, torch.full((3,), 500), eps)
    assert torch.equal(scalar, repeated)
    assert torch.equal(scalar, D.q_sample(lin, x0, 500, eps))     # and the same as a Python int
    assert not torch.equal(scalar, D.q_sample(lin, x0, torch.tensor(499), eps))


def test_schedule_to_device_keeps_values(lin):
    moved = lin.to("cpu")
    assert moved.T == lin.T and torch.equal(moved.alpha_bars, lin.alpha_bars)
    assert moved.device == torch.device("cpu")


def test_ddim_scalars_never_read_the_moved_tables(lin):
    """DDIM's per-step ᾱ come from a host copy: a schedule moved to a device (here "meta", which holds no
    values and refuses to copy to the host) still gives the same sigma, so a GPU sampler does not sync per step."""
    moved = lin.to("meta")
    assert moved.device == torch.device("meta")
    for t, t_prev, eta in ((999, 899, 1.0), (10, -1, 0.5), (1, 0, 1.0)):
        assert torch.equal(D.ddim_sigma(moved, t, t_prev, eta), D.ddim_sigma(lin, t, t_prev, eta))


# ---------------------------------------------------------------- posterior


def test_posterior_variance_formula(lin):
    beta_tilde = (1 - lin.alpha_bars_prev) / (1 - lin.alpha_bars) * lin.betas
    assert torch.allclose(lin.posterior_variance, beta_tilde)
    x = torch.zeros(5, 3)
    t = torch.tensor([0, 1, 10, 500, 999])
    _, var = D.q_posterior(lin, x, x, t)
    assert var.shape == (5, 1)
    assert torch.allclose(var.squeeze(1).double(), beta_tilde[t].double(), rtol=1e-6)


@pytest.mark.parametrize("t", [1, 50, 700, 999])
def test_posterior_equals_bayes_rule_on_gaussians(lin, t):
    """prior x_{t-1} ~ N(sqrt(ab_{t-1}) x0, 1-ab_{t-1}), likelihood x_t ~ N(sqrt(a_t) x_{t-1}, b_t)."""
    x0 = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    xt = torch.tensor([[0.8], [0.1]], dtype=torch.float64)
    ab_prev, a, b = lin.alpha_bars[t - 1], lin.alphas[t], lin.betas[t]
    precision = 1 / (1 - ab_prev) + a / b
    var = 1 / precision
    mean = var * (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * xt / b)
    got_mean, got_var = D.q_posterior(lin, x0, xt, t)
    assert torch.allclose(got_var, var.expand(2, 1), rtol=1e-10)
    assert torch.allclose(got_mean, mean, rtol=1e-10)


def test_posterior_variance_is_the_regression_residual_statistically(lin):
    """Monte-Carlo Bayes: regress x_{t-1} on x_t over joint samples given x0; the residual variance is beta_tilde."""
    g = torch.Generator().manual_seed(2)
    t, n, x0 = 30, 32_000, 0.5
    ab_prev = lin.alpha_bars[t - 1]
    x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    xt = D.q_step(lin, x_prev[:, None], t, torch.randn(n, 1, generator=g, dtype=torch.float64))[:, 0]
    cov = torch.cov(torch.stack([x_prev, xt]))
    slope = cov[0, 1] / cov[1, 1]
    residual_var = cov[0, 0] - slope * cov[0, 1]
    assert residual_var.item() == pytest.approx(lin.posterior_variance[t].item(), rel=0.03)
    assert slope.item() == pytest.approx(lin.posterior_coef_xt[t].item(), rel=0.03)


# ---------------------------------------------------------------- samplers


def test_ddpm_step_mean_is_posterior_mean_at_predicted_x0(lin):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 2, 50, 300, 800, 999])
    xt = D.q_sample(lin, x0, t, eps)
    mean_alg2 = D.ddpm_step(lin, xt, t, eps)  # noise=None: the mean
    mean_post, _ = D.q_posterior(lin, x0, xt, t)
    assert torch.allclose(mean_alg2, mean_post, atol=1e-8)
    big = torch.full_like(xt, 10.0)
    assert torch.allclose(D.ddpm_step(lin, xt, t, eps, clip=1e6), mean_post, atol=1e-6)
    assert not torch.allclose(D.ddpm_step(lin, xt, t, big, clip=1.0), D.ddpm_step(lin, xt, t, big))


def test_ddpm_step_noise_scale_and_last_step(lin):
    xt = torch.zeros(2, 3, dtype=torch.float64)
    eps = torch.zeros_like(xt)
    z = torch.ones_like(xt)
    out = D.ddpm_step(lin, xt, torch.tensor([0, 10]), eps, noise=z, variance="beta")
    assert torch.all(out[0] == 0), "no noise at the last step"
    assert torch.allclose(out[1], lin.betas[10].sqrt().expand(3))
    out = D.ddpm_step(lin, xt, 10, eps, noise=z, variance="beta_tilde")
    assert torch.allclose(out, lin.posterior_variance[10].sqrt().expand(2, 3))


def test_ddpm_last_step_adds_no_noise_for_an_int_step(lin):
    # the samplers of chapter 05 pass a Python int; at index 0 (the paper's t = 1) the step returns the mean
    g = torch.Generator().manual_seed(7)
    xt, eps, z = (torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for clip in (None, 1.0):
        mean = D.ddpm_step(lin, xt, 0, eps, clip=clip)
        assert torch.equal(D.ddpm_step(lin, xt, 0, eps, noise=z, variance="beta", clip=clip), mean)
        # ...and one step later the noise is there, with sigma^2 = beta_t
        stepped = D.ddpm_step(lin, xt, 1, eps, noise=z, variance="beta", clip=clip)
        assert torch.allclose(stepped - D.ddpm_step(lin, xt, 1, eps, clip=clip), lin.betas[1].sqrt() * z)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_eta_one_equals_ddpm_posterior_variance(kind):
    s = D.make_schedule(kind, 1000)
    t = torch.arange(1, 1000)
    sigma = D.ddim_sigma(s, t, t - 1, eta=1.0)
    assert torch.allclose(sigma**2, s.posterior_variance[1:], rtol=1e-8)
    assert torch.all(D.ddim_sigma(s, t, t - 1, eta=0.0) == 0)


def test_ddim_eta_one_step_is_the_ddpm_step(lin):
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(5, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    for t in (1, 20, 500, 999):
        ddim = D.ddim_step(lin, xt, t, t - 1, eps, eta=1.0, noise=z)
        ddpm = D.ddpm_step(lin, xt, t, eps, noise=z, variance="beta_tilde")
        assert torch.allclose(ddim, ddpm, atol=1e-9), t


def test_ddim_eta_zero_is_deterministic_and_exact_on_true_noise(lin):
    """With the true epsilon, a deterministic DDIM jump lands exactly on the closed-form x_{t_prev}."""
    x0 = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(x0)
    xt = D.q_sample(lin, x0, 900, eps)
    x_prev = D.ddim_step(lin, xt, 900, 400, eps, eta=0.0)
    assert torch.allclose(x_prev, D.q_sample(lin, x0, 400, eps), atol=1e-9)
    assert torch.allclose(D.ddim_step(lin, xt, 900, -1, eps), x0, atol=1e-9)
    with pytest.raises(ValueError, match="noise"):
        D.ddim_step(lin, xt, 900, 400, eps, eta=0.5)


@pytest.mark.parametrize("eta, t_prev", [(0.0, 400), (0.5, 400), (1.0, 899), (0.0, -1)])
def test_ddim_step_with_clip_uses_the_clamped_x0_and_its_own_noise(lin, eta, t_prev):
    """Chapter 05, "Code vs equation": clamp x0_hat to [-clip, clip], re-derive eps from it, then Eq. (ch05-eq-ddim)."""
    g = torch.Generator().manual_seed(8)
    x0 = 3 * torch.randn(4, 5, generator=g, dtype=torch.float64)  # mostly outside [-1, 1]
    eps_true, z = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(2))
    t = 900
    xt = D.q_sample(lin, x0, t, eps_true)
    eps = eps_true + 0.3  # an imperfect model prediction
    ab = lin.alpha_bars[t].item()
    ab_prev = 1.0 if t_prev == -1 else lin.alpha_bars[t_prev].item()
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    x0_hat = ((xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
    eps_hat = (xt - math.sqrt(ab) * x0_hat) / math.sqrt(1 - ab)
    expected = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev - sigma**2) * eps_hat + sigma * z
    got = D.ddim_step(lin, xt, t, t_prev, eps, eta=eta, noise=z, clip=1.0)
    assert torch.allclose(got, expected, atol=1e-9)
    if t_prev == -1:
        assert torch.allclose(got, x0_hat, atol=1e-9) and got.abs().max() <= 1  # the clean end is the clamped x0
    unclipped = D.ddim_step(lin, xt, t, t_prev, eps, eta=eta, noise=z)
    assert not torch.allclose(got, unclipped)  # the clamp mattered here...
    assert torch.allclose(D.ddim_step(lin, xt, t, t_prev, eps, eta=eta, noise=z, clip=1e6), unclipped, atol=1e-9)


def test_ddim_timesteps():
    assert D.ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    ts = D.ddim_timesteps(1000, 10)
    assert len(ts) == 10 and ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("T", [1, 2, 7, 100, 1000])
def test_ddim_timesteps_start_at_pure_noise(T):
    # one step must start from x_T (index T-1), never treat the noise as x_1 (index 0)
    assert D.ddim_timesteps(T, 1) == [T - 1]
    for steps in sorted({s for s in (1, 2, 3, T // 2, T) if 1 <= s <= T}):
        ts = D.ddim_timesteps(T, steps)
        assert len(ts) == steps and ts[0] == T - 1
        assert all(a > b for a, b in zip(ts, ts[1:])), ts
        if steps >= 2:
            assert ts[-1] == 0


@pytest.mark.parametrize("steps", [0, -3, 11, 2.0, True])
def test_ddim_timesteps_rejects_bad_step_counts(steps):
    with pytest.raises(ValueError, match=re.escape(repr(steps))):
        D.ddim_timesteps(10, steps)


def test_ddim_one_step_jumps_from_noise_to_the_clean_end(lin):
    # with the true noise, a single deterministic DDIM step from x_T recovers x_0
    x0 = torch.randn(2, 3, dtype=torch.float64)
    eps = torch.randn_like(x0)
    (t,) = D.ddim_timesteps(lin.T, 1)
    xt = D.q_sample(lin, x0, t, eps)
    assert torch.allclose(D.ddim_step(lin, xt, t, -1, eps), x0, atol=1e-6)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_forms():
    mu = torch.tensor([1.0, 2.0, 3.0])
    a = torch.randn(3, 3, generator=torch.Generator().manual_seed(5))
    cov = a @ a.T + torch.eye(3)
    assert D.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    # diagonal covariances: sum (m1-m2)^2 + (s1-s2)^2
    d1, d2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = (mu - 0).square().sum() + (d1.sqrt() - d2.sqrt()).square().sum()
    got = D.frechet_distance(mu, torch.diag(d1), torch.zeros(3), torch.diag(d2))
    assert got == pytest.approx(expected.item(), rel=1e-6)


def test_frechet_distance_rejects_a_matrix_that_is_no_covariance():
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="cov1.*-1"):
        D.frechet_distance(torch.zeros(2), -eye, torch.zeros(2), eye)
    with pytest.raises(ValueError, match="cov2.*-0.5"):
        D.frechet_distance(torch.zeros(2), eye, torch.zeros(2), torch.diag(torch.tensor([1.0, -0.5])))
    # a rank-deficient sample covariance (N < D): zero eigenvalues, up to round-off of either sign, are accepted
    mu, cov = D.gaussian_stats(torch.randn(10, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    assert torch.linalg.eigvalsh(cov).min() < 1e-12
    assert D.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_torchmetrics():
    fid = pytest.importorskip("torchmetrics.image.fid")
    g = torch.Generator().manual_seed(6)
    f1 = torch.randn(500, 16, generator=g, dtype=torch.float64)
    f2 = torch.randn(500, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g, dtype=torch.float64) + 0.3
    mu1, c1 = D.gaussian_stats(f1)
    mu2, c2 = D.gaussian_stats(f2)
    assert torch.allclose(c1, torch.cov(f1.T))
    ref = fid._compute_fid(mu1, c1, mu2, c2).item()
    assert D.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-6)


def test_inception_check_never_opens_a_connection(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("COURSE_DOWNLOAD", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")
    ok, why = D.inception_fid_available()
    assert ok is False and isinstance(why, str) and why


def test_inception_check_follows_package_weights_and_downloads(monkeypatch, tmp_path):
    """Each branch of inception_fid_available, with torch-fidelity present or not (it need not be installed)."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    present = {"torch_fidelity": True}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if present["torch_fidelity"] else None) if name == "torch_fidelity"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("COURSE_DOWNLOAD", "0")
    ok, why = D.inception_fid_available()
    assert ok is False and "downloads are off" in why                  # package, no weights, no downloads
    monkeypatch.setenv("COURSE_DOWNLOAD", "1")
    ok, why = D.inception_fid_available()
    assert ok is True and "will be downloaded" in why
    monkeypatch.setenv("COURSE_DOWNLOAD", "0")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / D.INCEPTION_WEIGHTS).write_bytes(b"weights")
    ok, why = D.inception_fid_available()
    assert ok is True and "found" in why                               # weights already in torch.hub's folder
    present["torch_fidelity"] = False
    ok, why = D.inception_fid_available()
    assert ok is False and "torch-fidelity" in why                     # weights alone are not enough
