"""Diffusion schedule algebra for DDPM and DDIM (chapter 05, "Denoising diffusion").

Everything here is the closed-form Gaussian bookkeeping that chapter 05 derives; the networks stay
in the notebook. **Indexing:** the paper counts steps ``t = 1..T``; arrays here are 0-based, so the
code index ``i`` stands for the paper's ``t = i + 1`` (``sched.alpha_bars[0]`` is the paper's
:math:`\\bar\\alpha_1`). A "previous" index of ``-1`` means "before the first step", where
:math:`\\bar\\alpha = 1` (clean data).

Schedules are kept in float64 (products of 1000 factors lose digits in float32); every function
that touches a batch gathers the coefficients for its timesteps and casts them to the batch's dtype.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import torch

__all__ = [
    "Schedule", "linear_betas", "cosine_betas", "make_schedule", "gather", "q_step", "q_sample", "q_posterior",
    "predict_x0", "ddpm_step", "ddim_sigma", "ddim_step", "ddim_timesteps", "gaussian_stats",
    "frechet_distance", "inception_fid_available", "INCEPTION_WEIGHTS",
]

# The file torch-fidelity (which torchmetrics' FID uses) stores in torch.hub's checkpoint folder.
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T (number of diffusion steps) must be a positive int, got {T!r}")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear schedule: ``T`` betas evenly spaced from ``beta_start`` to ``beta_end`` (float64).

    Chapter 05, "Noise schedules". Requires ``0 < beta_start <= beta_end < 1``.
    """
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (float64), chapter 05, "Noise schedules".

    :math:`\\bar\\alpha(t) = f(t)/f(0)` with :math:`f(t) = \\cos^2\\big(\\frac{t/T + s}{1 + s}\\frac{\\pi}{2}\\big)`
    and :math:`\\beta_t = 1 - \\bar\\alpha(t)/\\bar\\alpha(t-1)`, clipped at ``max_beta`` (the last steps
    would otherwise reach 1 and make :math:`\\bar\\alpha_T` exactly 0).
    """
    _check_T(T)
    if not s >= 0:
        raise ValueError(f"offset s must be >= 0, got {s}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # (T+1,)
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-12, max=max_beta)


class Schedule:
    """All the per-step constants a DDPM needs, derived from ``betas`` (chapter 05, Eqs. for
    :math:`\\alpha_t, \\bar\\alpha_t, \\tilde\\beta_t`). Attributes are float64 tensors of shape ``(T,)``:

    - ``betas``: :math:`\\beta_t`; ``alphas``: :math:`\\alpha_t = 1 - \\beta_t`;
    - ``alpha_bars``: :math:`\\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s`;
    - ``alpha_bars_prev``: :math:`\\bar\\alpha_{t-1}` (1 at the first step);
    - ``posterior_variance``: :math:`\\tilde\\beta_t = \\frac{1-\\bar\\alpha_{t-1}}{1-\\bar\\alpha_t}\\beta_t`;
    - ``posterior_coef_x0``, ``posterior_coef_xt``: the two weights of the posterior mean :math:`\\tilde\\mu_t`;
    - ``snr``: the signal-to-noise ratio :math:`\\bar\\alpha_t / (1 - \\bar\\alpha_t)`.
    """

    def __init__(self, betas: torch.Tensor):
        if not isinstance(betas, torch.Tensor) or betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got {betas!r}")
        betas = betas.detach().to("cpu", torch.float64)
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            bad = betas[~((betas > 0) & (betas < 1))]
            raise ValueError(f"every beta must lie in (0, 1); offending values: {bad[:5].tolist()}")
        self.T = betas.numel()
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.posterior_variance = (1 - self.alpha_bars_prev) / (1 - self.alpha_bars) * betas
        self.posterior_coef_x0 = self.alpha_bars_prev.sqrt() * betas / (1 - self.alpha_bars)
        self.posterior_coef_xt = self.alphas.sqrt() * (1 - self.alpha_bars_prev) / (1 - self.alpha_bars)
        self.snr = self.alpha_bars / (1 - self.alpha_bars)
        # ᾱ with 1 prepended (index k + 1 holds step k), kept on the host whatever device the tables move to:
        # DDIM's per-step scalars are read from it without a device-to-host copy (and a GPU sync) per step.
        self._alpha_bars_host = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])

    _FIELDS = ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance", "posterior_coef_x0",
               "posterior_coef_xt", "snr")

    def to(self, device: torch.device | str) -> "Schedule":
        """A copy with every table on ``device`` (still float64), so gathers on a GPU batch need no transfer."""
        new = object.__new__(Schedule)
        new.T = self.T
        new._alpha_bars_host = self._alpha_bars_host
        for name in self._FIELDS:
            setattr(new, name, getattr(self, name).to(device))
        return new

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def __repr__(self) -> str:
        return (f"Schedule(T={self.T}, beta_1={self.betas[0].item():.3g}, beta_T={self.betas[-1].item():.3g}, "
                f"alpha_bar_T={self.alpha_bars[-1].item():.3g})")


def make_schedule(kind: str, T: int, **kwargs: float) -> Schedule:
    """``Schedule`` of a named kind: ``"linear"`` or ``"cosine"`` (chapter 05, "Noise schedules")."""
    if kind == "linear":
        return Schedule(linear_betas(T, **kwargs))
    if kind == "cosine":
        return Schedule(cosine_betas(T, **kwargs))
    raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {kind!r}")


def _check_integer(t: torch.Tensor, name: str) -> None:
    """ValueError unless ``t`` holds integer steps (a bool would silently mean step 0 or 1)."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integer steps, got dtype {t.dtype}")


def _as_index(t: torch.Tensor | int, T: int, batch: int, device: torch.device, lowest: int = 0) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    _check_integer(t, "timesteps")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timesteps must be a scalar or shaped ({batch},), got shape {tuple(t.shape)}")
    # Range check only for CPU indices: on a GPU it would force a synchronisation every call
    # (an out-of-range GPU index still fails, with a device-side assert).
    if t.device.type == "cpu" and t.numel() and (t.min() < lowest or t.max() >= T):
        raise ValueError(f"timesteps must lie in [{lowest}, {T - 1}], got min {t.min().item()}, max {t.max().item()}")
    return t.long()


def gather(values: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """``values[t]`` reshaped to ``(B, 1, ..., 1)`` to broadcast against ``x`` (B, ...), in ``x``'s dtype/device
    (chapter 05).

    ``t``: an int (returns ``(1, 1, ..., 1)``) or a ``(B,)`` integer tensor of 0-based timesteps;
    out-of-range steps raise ``ValueError`` (for GPU tensors: a device-side assert, to avoid a sync).
    """
    if x.ndim < 1:
        raise ValueError(f"x needs a batch dimension, got shape {tuple(x.shape)}")
    shape = (-1, *([1] * (x.ndim - 1)))
    if isinstance(t, int) and not isinstance(t, bool):  # one step for the whole batch: a (1, 1, ..., 1) scalar
        if not 0 <= t < values.shape[0]:
            raise ValueError(f"timestep must lie in [0, {values.shape[0] - 1}], got {t}")
        return values[t].to(device=x.device, dtype=x.dtype).view(shape)
    idx = _as_index(t, values.shape[0], x.shape[0], t.device if isinstance(t, torch.Tensor) else values.device)
    out = values[idx if idx.device == values.device else idx.to(values.device)]
    return out.to(device=x.device, dtype=x.dtype).view(shape)


def q_step(sched: Schedule, x_prev: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
    """One forward step :math:`x_t \\sim q(x_t \\mid x_{t-1}) = \\mathcal N(\\sqrt{1-\\beta_t}\\,x_{t-1}, \\beta_t I)`.

    Chapter 05, Eq. (forward step). ``noise`` is the standard-normal draw, same shape as ``x_prev``.
    """
    _same_shape(x_prev, noise, "noise")
    beta = gather(sched.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_sample(sched: Schedule, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
    """Closed form :math:`x_t = \\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon` (chapter 05, Eq. (closed form)).

    ``x0``, ``noise``: ``(B, ...)``; ``t``: int or ``(B,)`` 0-based steps. Returns ``(B, ...)``.
    """
    _same_shape(x0, noise, "noise")
    ab = gather(sched.alpha_bars, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_posterior(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor,
                t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of :math:`q(x_{t-1} \\mid x_t, x_0)` (chapter 05, Eq. (posterior)).

    Returns ``(mean (B, ...), variance (B, 1, ..., 1))`` with
    :math:`\\tilde\\mu_t = \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\beta_t}{1-\\bar\\alpha_t}x_0 + \\frac{\\sqrt{\\alpha_t}(1-\\bar\\alpha_{t-1})}{1-\\bar\\alpha_t}x_t`
    and :math:`\\tilde\\beta_t`. At the first step (index 0) the variance is 0 and the mean is ``x0``.
    """
    _same_shape(x0, xt, "xt")
    mean = gather(sched.posterior_coef_x0, t, x0) * x0 + gather(sched.posterior_coef_xt, t, xt) * xt
    return mean, gather(sched.posterior_variance, t, xt)


def predict_x0(sched: Schedule, xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
    """Invert the closed form for :math:`x_0`: :math:`\\hat x_0 = (x_t - \\sqrt{1-\\bar\\alpha_t}\\,\\hat\\varepsilon)/\\sqrt{\\bar\\alpha_t}` (chapter 05)."""
    _same_shape(xt, eps, "eps")
    ab = gather(sched.alpha_bars, t, xt)
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()


def ddpm_step(sched: Schedule, xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor,
              noise: torch.Tensor | None = None, variance: str = "beta", clip: float | None = None) -> torch.Tensor:
    """One step of Algorithm 2 (chapter 05): :math:`x_{t-1} = \\frac{1}{\\sqrt{\\alpha_t}}\\big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}\\hat\\varepsilon\\big) + \\sigma_t z`.

    ``variance``: ``"beta"`` (:math:`\\sigma_t^2 = \\beta_t`) or ``"beta_tilde"`` (:math:`\\sigma_t^2 = \\tilde\\beta_t`),
    the paper's two choices. ``noise`` (the :math:`z`, same shape as ``xt``; ``None`` = no noise) is not
    added at the last step (index 0). ``clip``: if given, :math:`\\hat x_0` is clamped to ``[-clip, clip]``
    and the mean is the posterior mean at that :math:`\\hat x_0` (identical to the formula above without clipping).
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    _same_shape(xt, eps, "eps")
    if clip is None:
        coef = gather(sched.betas / (1 - sched.alpha_bars).sqrt(), t, xt)
        mean = (xt - coef * eps) / gather(sched.alphas, t, xt).sqrt()
    else:
        x0 = predict_x0(sched, xt, t, eps).clamp(-clip, clip)
        mean, _ = q_posterior(sched, x0, xt, t)
    if noise is None:
        return mean
    _same_shape(xt, noise, "noise")
    var = gather(sched.betas if variance == "beta" else sched.posterior_variance, t, xt)
    if isinstance(t, int):
        not_last = float(t > 0)
    else:
        not_last = (_as_index(t, sched.T, xt.shape[0], t.device) > 0).to(xt.device, xt.dtype).view_as(var)
    return mean + not_last * var.sqrt() * noise


def _alpha_bar_at(sched: Schedule, t: torch.Tensor) -> torch.Tensor:
    """ᾱ at 0-based indices ``t`` where ``-1`` means 1 (clean data), as a float64 host tensor."""
    return sched._alpha_bars_host[(t + 1).cpu()]


def ddim_sigma(sched: Schedule, t: torch.Tensor | int, t_prev: torch.Tensor | int, eta: float) -> torch.Tensor:
    """DDIM's noise scale :math:`\\sigma = \\eta\\sqrt{\\frac{1-\\bar\\alpha_{prev}}{1-\\bar\\alpha_t}}\\sqrt{1-\\frac{\\bar\\alpha_t}{\\bar\\alpha_{prev}}}` (float64).

    Chapter 05, "DDIM". ``t_prev < t`` elementwise, ``t_prev = -1`` means the clean end. With
    ``t_prev = t - 1`` and ``eta = 1``, :math:`\\sigma^2` equals the DDPM posterior variance :math:`\\tilde\\beta_t`.
    """
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    t, t_prev = torch.as_tensor(t), torch.as_tensor(t_prev)
    _check_integer(t, "t")
    _check_integer(t_prev, "t_prev")
    t, t_prev = t.long().cpu(), t_prev.long().cpu()
    if (t < 0).any() or (t >= sched.T).any():
        raise ValueError(f"t must lie in [0, {sched.T - 1}], got {t.tolist()}")
    if (t_prev < -1).any() or (t_prev >= t).any():
        raise ValueError(f"t_prev must satisfy -1 <= t_prev < t, got t_prev={t_prev.tolist()}, t={t.tolist()}")
    ab, ab_prev = _alpha_bar_at(sched, t), _alpha_bar_at(sched, t_prev)
    return eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()


def ddim_step(sched: Schedule, xt: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip: float | None = None) -> torch.Tensor:
    """One DDIM update from step ``t`` to ``t_prev`` (chapter 05, "DDIM"):
    :math:`x_{prev} = \\sqrt{\\bar\\alpha_{prev}}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_{prev}-\\sigma^2}\\,\\hat\\varepsilon + \\sigma z`.

    ``eta = 0`` is deterministic; ``eta = 1`` with ``t_prev = t - 1`` is the DDPM ancestral step with
    :math:`\\sigma^2 = \\tilde\\beta_t`. ``t_prev = -1`` jumps to the clean end (returns :math:`\\hat x_0`).
    ``noise`` is required when ``eta > 0``.
    """
    if not isinstance(t, int) or not isinstance(t_prev, int):
        raise ValueError(f"ddim_step takes int steps (one step for the whole batch), got t={t!r}, t_prev={t_prev!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    sigma = ddim_sigma(sched, t, t_prev, eta).item()
    if sigma > 0 and noise is None:
        raise ValueError(f"eta={eta} > 0 needs a noise tensor")
    _same_shape(xt, eps, "eps")
    x0 = predict_x0(sched, xt, t, eps)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        ab = _alpha_bar_at(sched, torch.tensor(t)).item()
        eps = (xt - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # keep eps consistent with the clipped x0
    ab_prev = _alpha_bar_at(sched, torch.tensor(t_prev)).item()
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        _same_shape(xt, noise, "noise")
        out = out + sigma * noise
    return out


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The ``steps`` 0-based timesteps DDIM visits, descending and evenly spaced (chapter 05).

    Always starts at ``T - 1`` (the pure-noise end, the paper's :math:`x_T`); for ``steps >= 2`` it ends
    at 0, so the sampler's last jump (to index ``-1``) starts from the least noisy step. ``steps = 1`` is
    ``[T - 1]``: one jump from :math:`x_T` straight to the clean end. ``steps = T`` visits every step:
    ``[T-1, ..., 0]``. For ``steps <= T`` the rounded grid has no duplicates, so exactly ``steps`` entries.
    """
    _check_T(T)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in [1, {T}], got {steps!r}")
    if steps == 1:
        return [T - 1]
    ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().unique()   # (steps,) ascending
    return ts.flip(0).tolist()


def _same_shape(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name} must have shape {tuple(a.shape)}, got {tuple(b.shape)}")


# ---------------------------------------------------------------- Fréchet distance (FID's formula)

def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of features ``(N, D)``, N >= 2 (chapter 05)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be shaped (N >= 2, D), got {tuple(features.shape)}")
    f = features.detach().double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Fréchet distance between :math:`\\mathcal N(\\mu_1, \\Sigma_1)` and :math:`\\mathcal N(\\mu_2, \\Sigma_2)` (chapter 05, "Measuring samples"):

    :math:`\\lVert\\mu_1-\\mu_2\\rVert^2 + \\operatorname{tr}\\big(\\Sigma_1 + \\Sigma_2 - 2(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2})^{1/2}\\big)`.

    FID is this formula in Inception-v3 features; in any other feature space it is a different number.
    A covariance must be positive semi-definite: an eigenvalue below ``-1e-4`` times the largest one raises
    ``ValueError``; smaller negative ones are round-off and count as 0.
    """
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a 1-D mean vector (D,), got shape {tuple(mu1.shape)}")
    d = mu1.shape[0]
    if mu2.shape != (d,):
        raise ValueError(f"mu2 must be shaped ({d},) like mu1, got {tuple(mu2.shape)}")
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must be shaped ({d}, {d}), got {tuple(c.shape)}")
    mu1, mu2, cov1, cov2 = (v.detach().double().cpu() for v in (mu1, mu2, cov1, cov2))
    # sqrt(cov1) by eigendecomposition (symmetric PSD); eigenvalues of sqrt(C1) C2 sqrt(C1) equal those of C1 C2.
    w, v = torch.linalg.eigh((cov1 + cov1.T) / 2)
    for name, eig in (("cov1", w), ("cov2", torch.linalg.eigvalsh((cov2 + cov2.T) / 2))):
        if eig.min() < -1e-4 * eig.abs().max():
            raise ValueError(f"{name} is not a covariance matrix (not positive semi-definite): eigenvalue "
                             f"{eig.min().item():.4g}, largest magnitude {eig.abs().max().item():.4g}")
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    middle = root1 @ cov2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt
    return float(value.clamp(min=0))


def inception_fid_available() -> tuple[bool, str]:
    """Whether torchmetrics' FID can run *without touching the network*, and why (chapter 05).

    True when ``torch_fidelity`` is importable and either its Inception weights are already in
    torch.hub's checkpoint folder or ``COURSE_DOWNLOAD=1`` allows fetching them. Never opens a connection.
    """
    if importlib.util.find_spec("torch_fidelity") is None:
        return False, "the package torch-fidelity (which torchmetrics' FID needs) is not installed"
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    if path.exists():
        return True, f"Inception weights found at {path}"
    if os.environ.get("COURSE_DOWNLOAD", "0") == "1":
        return True, f"Inception weights will be downloaded to {path} (COURSE_DOWNLOAD=1)"
    return False, f"no Inception weights at {path} and downloads are off (COURSE_DOWNLOAD is not 1)"
