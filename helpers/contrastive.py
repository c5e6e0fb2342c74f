"""Contrastive losses, i-Mix and AugSelf objectives (chapter 02, "Self-supervised learning").

(Named `contrastive`, not `ssl`, so it can never shadow the standard library's `ssl` module.)

* :func:`info_nce` — the N-pair InfoNCE loss: anchor ``i`` of one view against all ``N`` keys of the other.
* :func:`nt_xent` — SimCLR's NT-Xent: both views, ``2N - 2`` negatives per anchor.
* :func:`sample_beta`, :func:`mix` and :func:`imix_loss` — i-Mix (Lee et al., ICLR 2021): mix inputs and
  their *virtual labels* (the instance indices) with ``λ ~ Beta(α, α)``; ``imix_loss`` with ``λ = 1`` is
  exactly :func:`info_nce`.
* :func:`augself_loss` — AugSelf (Lee et al., NeurIPS 2021): regress the augmentation-parameter
  differences (see :func:`helpers.augment.augself_targets`) from the two views' features.

Every function takes embeddings ``(N, D)`` (normalised inside) and returns a scalar mean loss.
"""

from __future__ import annotations

from typing import Mapping

import math

import torch
import torch.nn.functional as F


def _check_pair(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.ndim != 2 or k.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"expected two (N, D) embeddings of the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")


def _check_temperature(t: float) -> None:
    if not t > 0:
        raise ValueError(f"temperature must be > 0, got {t}")


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """N-pair InfoNCE: ``-log softmax_j(cos(q_i, k_j) / τ)[i]``, averaged over ``i`` (chapter 02, Eq. InfoNCE)."""
    _check_pair(q, k)
    _check_temperature(temperature)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature  # (N, N)
    return F.cross_entropy(logits.float(), torch.arange(q.shape[0], device=q.device))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent over ``2N`` embeddings: each view's positive is its twin, the other ``2N - 2``
    embeddings are negatives (chapter 02, Eq. NT-Xent)."""
    _check_pair(z1, z2)
    _check_temperature(temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = (z @ z.T / temperature).float()  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))  # an embedding is not its own negative
    target = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(0, n, device=z.device)])  # (2N,)
    return F.cross_entropy(logits, target)


def sample_beta(n: int, alpha: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", miss: float = 1e-12) -> torch.Tensor:
    """``n`` draws from ``Beta(α, α)`` driven by ``generator`` (chapter 02, i-Mix's λ), without a host copy.

    Jöhnk's method: for uniforms ``U, V`` the pair ``X = U^{1/α}, Y = V^{1/α}`` is accepted when
    ``0 < X + Y ≤ 1``, and then ``X / (X + Y)`` is Beta distributed. A loop "until accepted" would need to
    look at the draws on the host, a GPU synchronisation in every i-Mix step; instead every sample gets ``K``
    candidate pairs at once and takes the first accepted one. ``K`` is the smallest number with
    ``(1 - a)^K ≤ miss``, ``a = Γ(α+1)² / Γ(2α+1)`` being one pair's acceptance probability; in the rare case
    (probability ``miss``, 10⁻¹² by default) that no candidate is accepted, the draw is the mean, 1/2.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0 < miss < 1:
        raise ValueError(f"miss must lie in (0, 1), got {miss}")
    gen_device = generator.device if generator is not None else torch.device(device)
    accept = math.exp(2 * math.lgamma(alpha + 1) - math.lgamma(2 * alpha + 1))
    k = 1 if accept >= 1 else max(1, math.ceil(math.log(miss) / math.log1p(-accept)))
    if n * k > 1 << 24:
        raise ValueError(f"Beta({alpha}, {alpha}) needs {k} candidates per draw (acceptance {accept:.2g}); "
                         f"{n} draws at once is too many, use a smaller alpha or fewer draws")
    uv = torch.rand(n, k, 2, device=gen_device, generator=generator, dtype=torch.float64)  # (n, K, 2)
    x, y = uv[..., 0] ** (1 / alpha), uv[..., 1] ** (1 / alpha)                          # (n, K)
    ok = (x + y <= 1) & (x + y > 0)                                                       # (n, K)
    first = torch.argmax(ok.to(torch.int8), dim=1)            # index of the first accepted pair (0 if none)
    rows = torch.arange(n, device=gen_device)
    value = x[rows, first] / (x[rows, first] + y[rows, first]).clamp(min=1e-300)          # (n,)
    return torch.where(ok.any(dim=1), value, 0.5).float().to(device)


def mix(x: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """i-Mix's input mixing (chapter 02, Eq. i-Mix): ``x̃_i = λ_i x_i + (1 - λ_i) x_{π(i)}``.

    ``λ_i ~ Beta(α, α)`` folded to ``max(λ, 1 - λ)`` (each mixture stays closer to its own instance),
    ``π`` a random permutation. Works for any ``(N, ...)`` input — images or feature vectors.
    Returns ``(mixed, perm, lam)`` with ``perm`` ``(N,)`` long and ``lam`` ``(N,)`` float.
    """
    if x.ndim < 2:
        raise ValueError(f"expected a batch (N, ...), got shape {tuple(x.shape)}")
    n = x.shape[0]
    gen_device = generator.device if generator is not None else x.device
    perm = torch.randperm(n, device=gen_device, generator=generator).to(x.device)
    lam = sample_beta(n, alpha, generator, x.device)
    lam = torch.maximum(lam, 1 - lam)
    lam_x = lam.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return lam_x * x + (1 - lam_x) * x[perm], perm, lam


def imix_loss(q_mixed: torch.Tensor, k: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor | float,
              temperature: float = 0.2) -> torch.Tensor:
    """i-Mix on the N-pair loss (chapter 02, Eq. i-Mix): the mixed anchor's virtual label is
    ``λ e_i + (1 - λ) e_{π(i)}``, so its loss is ``λ CE(logits_i, i) + (1 - λ) CE(logits_i, π(i))``.

    ``q_mixed``: embeddings of the mixed view ``(N, D)``; ``k``: embeddings of the other, unmixed view.
    With ``lam = 1`` this is exactly :func:`info_nce`.
    """
    _check_pair(q_mixed, k)
    _check_temperature(temperature)
    n = q_mixed.shape[0]
    if perm.shape != (n,):
        raise ValueError(f"perm must have shape ({n},), got {tuple(perm.shape)}")
    lam = torch.as_tensor(lam, dtype=torch.float32)
    if lam.ndim == 0:
        lam = lam.expand(n)
    # the range is checked only on CPU tensors: on a GPU the check would synchronise every step
    if lam.shape != (n,):
        raise ValueError(f"lam must be a scalar or ({n},) in [0, 1], got shape {tuple(lam.shape)}")
    if lam.device.type == "cpu" and ((lam < 0).any() or (lam > 1).any()):
        bad = lam[(lam < 0) | (lam > 1)]
        raise ValueError(f"lam must lie in [0, 1], got {bad.tolist()} (at positions "
                         f"{torch.nonzero((lam < 0) | (lam > 1)).flatten().tolist()})")
    lam = lam.to(q_mixed.device)
    logits = (F.normalize(q_mixed, dim=1) @ F.normalize(k, dim=1).T / temperature).float()  # (N, N)
    own = F.cross_entropy(logits, torch.arange(n, device=logits.device), reduction="none")  # (N,)
    other = F.cross_entropy(logits, perm.to(logits.device), reduction="none")  # (N,)
    return (lam * own + (1 - lam) * other).mean()


def augself_loss(predictions: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 weights: Mapping[str, float]) -> torch.Tensor:
    """AugSelf's auxiliary loss ``Σ_a w_a · MSE(tanh(ŷ_a), ω_a^{(1)} - ω_a^{(2)})`` (chapter 02, Eq. AugSelf).

    ``predictions[a]`` are the head's raw outputs, squashed by ``tanh`` into the targets' range [-1, 1].
    ``weights`` are numbers ``>= 0`` (a negative weight would reward a wrong prediction).
    """
    if not weights:
        raise ValueError("weights is empty: name at least one augmentation, e.g. {'crop': 1.0}")
    total = None
    for name, w in weights.items():
        if isinstance(w, torch.Tensor):
            if w.device.type == "cpu" and not (w >= 0).all():  # a GPU tensor is not read: no host sync
                raise ValueError(f"weight of {name!r} must be >= 0, got {w.tolist()}")
        elif not w >= 0:
            raise ValueError(f"weight of {name!r} must be >= 0, got {w}")
        if name not in predictions or name not in targets:
            raise ValueError(f"augmentation {name!r} missing: predictions have {sorted(predictions)}, "
                             f"targets have {sorted(targets)}")
        p, t = predictions[name], targets[name]
        if p.shape != t.shape:
            raise ValueError(f"{name!r}: prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
        term = w * F.mse_loss(torch.tanh(p.float()), t.float())
        total = term if total is None else total + term
    return total
