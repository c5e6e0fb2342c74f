"""The Forward-Forward algorithm (Hinton 2022), explained in chapter 06, "Forward-Forward".

Every hidden layer of an FF network is trained by its own objective: the *goodness*
``G = sum_j y_j**2`` of its ReLU activities should be high for positive data (an image with its
true label written into the first pixels) and low for negative data (the same image with a wrong
label). The probability that an input is positive is ``sigma((G - theta) / tau)``; each layer
minimises the logistic loss of that prediction, and nothing is sent backwards between layers.

What lives here (chapter 06 derives each piece):

* :func:`normalize_length` — divide each row by its root-mean-square (length ``sqrt(D)``), so the
  next layer cannot read the previous layer's goodness off the length of its input;
* :class:`FFLayer` — ``relu(W @ normalize_length(x) + b)``;
* :func:`goodness`, :func:`ff_loss` — Eq. (ff-goodness) and the per-layer logistic loss;
* :func:`embed_label`, :func:`sample_negative_labels` — supervised positives and negatives;
* :class:`FFNet`, :func:`layer_objective`, :func:`train_step` — a stack of layers, one layer's
  objective, and one layer-local update of all of them;
* :func:`label_goodness`, :func:`predict` — classify by accumulating goodness over candidate labels.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_2d(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, D) tensor, got {shape}")


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """ValueError for labels outside [0, num_classes), checked where it is free: on CPU tensors.

    On a GPU the check would copy two numbers to the host and stall the training loop at every
    step (eight times per FF step); there, as in ``F.one_hot``, an out-of-range label fails in
    the kernel that uses it (a device-side assert) instead of passing silently.
    """
    if labels.device.type == "cpu" and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def normalize_length(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rescale each row of ``x`` (B, D) to unit root-mean-square, i.e. to length ``sqrt(D)``.

    Only the *direction* of the vector survives: ``normalize_length(c * x) == normalize_length(x)``
    for every ``c > 0`` (chapter 06, "Why normalise the length"). Computed in float32.
    """
    _check_2d(x)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    x = x.float()
    rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()  # (B, 1)
    return x / (rms + eps)


def goodness(y: torch.Tensor) -> torch.Tensor:
    """Eq. (ff-goodness) of chapter 06: ``G = sum_j y_j**2`` per row of the activities ``y`` (B, D) → (B,).

    Summed in float32 even under bf16 autocast: ``G`` is compared with a threshold of about ``D``,
    and bf16 would round it to steps of 8 at ``D = 2000``.
    """
    _check_2d(y, "y")
    return y.float().pow(2).sum(dim=1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float, tau: float = 1.0) -> torch.Tensor:
    """The layer-local FF loss, chapter 06 Eq. (ff-loss): the logistic loss of ``sigma((G - theta) / tau)``.

    ``-log p`` on positive goodness ``g_pos`` (B,), ``-log(1 - p)`` on negative goodness ``g_neg`` (B',),
    written with ``softplus`` for numerical stability; the two halves are averaged separately
    and added.
    """
    if g_pos.ndim != 1 or g_neg.ndim != 1:
        raise ValueError(f"g_pos and g_neg must be 1-D, got shapes {tuple(g_pos.shape)} and {tuple(g_neg.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return F.softplus(-(g_pos - theta) / tau).mean() + F.softplus((g_neg - theta) / tau).mean()


def embed_label(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int = 10,
                strength: float = 1.0) -> torch.Tensor:
    """Write a label into the first ``num_classes`` pixels of flattened images ``x`` (B, D) (chapter 06).

    ``labels`` (B,) int64 gives a one-hot code times ``strength``; ``labels=None`` writes the
    *neutral* label ``strength / num_classes`` in every label pixel. Returns a new tensor; the other
    pixels are unchanged (in MNIST the first ten pixels are black in all 70,000 images, so nothing is lost).
    """
    _check_2d(x)
    if num_classes < 2 or num_classes > x.shape[1]:
        raise ValueError(f"num_classes must be in [2, D={x.shape[1]}], got {num_classes}")
    out = x.clone()
    if labels is None:
        out[:, :num_classes] = strength / num_classes
        return out
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    _check_label_range(labels, num_classes)
    out[:, :num_classes] = strength * F.one_hot(labels, num_classes).to(out.dtype)
    return out


def sample_negative_labels(labels: torch.Tensor, num_classes: int = 10, scores: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """A wrong label for every example — never the true one (chapter 06, "Negative data").

    Without ``scores``: uniform over the ``num_classes - 1`` wrong labels (a random non-zero offset
    added modulo ``num_classes``). With ``scores`` (B, C): drawn with probability
    ``softmax(scores)`` restricted to the wrong labels — "hard" negatives the net currently confuses
    with the truth.
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    _check_label_range(labels, num_classes)
    gen_device = generator.device if generator is not None else labels.device
    if scores is None:
        offset = torch.randint(1, num_classes, labels.shape, device=gen_device, generator=generator)
        return (labels + offset.to(labels.device)) % num_classes
    if scores.shape != (labels.shape[0], num_classes):
        raise ValueError(f"scores must have shape ({labels.shape[0]}, {num_classes}), got {tuple(scores.shape)}")
    logits = scores.detach().float().clone()
    logits.scatter_(1, labels[:, None], float("-inf"))  # the true label gets probability exactly 0
    probs = torch.softmax(logits, dim=1)  # (B, C)
    drawn = torch.multinomial(probs.to(gen_device), 1, generator=generator).squeeze(1)
    return drawn.to(labels.device)


class FFLayer(nn.Module):
    """One FF layer (chapter 06): ``y = relu(W @ normalize_length(x) + b)``.

    ``theta`` is the goodness threshold and ``tau`` the temperature of ``sigma((G - theta) / tau)``;
    they default to ``d_out`` and ``0.1 * d_out``: a mean squared activity of 1 per unit separates
    positive from negative, and the logit is ``(mean squared activity - 1) / 0.1`` for any width.
    The weights start with He's variance ``2 / d_in``, so that at initialisation ``E[G] = d_out``
    sits at the threshold. ``running_mean`` tracks each unit's mean activity on positive data for the optional
    peer-normalisation term of :func:`train_step`.
    """

    def __init__(self, d_in: int, d_out: int, theta: float | None = None, tau: float | None = None):
        super().__init__()
        if d_in < 1 or d_out < 1:
            raise ValueError(f"layer sizes must be >= 1, got d_in={d_in}, d_out={d_out}")
        if theta is not None and theta <= 0:
            raise ValueError(f"theta must be > 0, got {theta}")
        if tau is not None and tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.linear = nn.Linear(d_in, d_out)
        nn.init.normal_(self.linear.weight, std=(2.0 / d_in) ** 0.5)  # unit-RMS input → E[relu(z)^2] = 1
        nn.init.zeros_(self.linear.bias)
        self.theta = float(d_out if theta is None else theta)
        self.tau = float(0.1 * d_out if tau is None else tau)
        self.register_buffer("running_mean", torch.full((d_out,), 0.5))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``W @ normalize_length(x) + b`` (B, d_out)."""
        return self.linear(normalize_length(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activation(x))


class FFNet(nn.Module):
    """A stack of :class:`FFLayer` s, ``sizes = [d_in, h1, h2, ...]`` (chapter 06).

    Layer ``k`` gets ``theta = theta_per_unit * h_k`` and ``tau = tau_per_unit * h_k``.

    ``forward`` returns the list of every layer's activities; the input of each layer is
    *detached*, so no gradient can flow from one layer into the layers below it.
    """

    def __init__(self, sizes: Sequence[int], theta_per_unit: float = 1.0, tau_per_unit: float = 0.1):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input size and at least one layer, got {list(sizes)}")
        if theta_per_unit <= 0:
            raise ValueError(f"theta_per_unit must be > 0, got {theta_per_unit}")
        if tau_per_unit <= 0:
            raise ValueError(f"tau_per_unit must be > 0, got {tau_per_unit}")
        self.layers = nn.ModuleList(
            FFLayer(a, b, theta=theta_per_unit * b, tau=tau_per_unit * b) for a, b in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        acts = []
        for layer in self.layers:
            x = layer(x.detach())  # (B, d_k); the detach is the whole "no backward pass"
            acts.append(x)
        return acts


def make_optimizers(net: FFNet, lr: float, weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
    """One AdamW optimiser per layer (chapter 06): each sees only its own layer's parameters.

    On a GPU the fused AdamW kernel updates a layer in one launch instead of a dozen; the
    arithmetic is the same.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    return [torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay,
                              fused=True if layer.linear.weight.is_cuda else None)
            for layer in net.layers]


def layer_objective(layer: FFLayer, h: torch.Tensor, b: int, peer: float = 0.0, peer_momentum: float = 0.9
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer's forward pass on ``h`` = [positives; negatives] (B + B', D) and its objective (chapter 06).

    Returns ``(loss, total, y, m)``: Eq. (ff-loss) on the first ``b`` rows (positives) against the
    rest, ``total`` = loss + ``peer`` times the peer-normalisation penalty, the activities ``y``
    (B + B', d_k) and the updated running mean activity ``m`` (d_k,) (``None`` without peer
    normalisation). A pure function of its inputs, so ``torch.compile`` can fuse it and its
    backward pass into a few kernels; :func:`train_step` stores ``m`` and steps the optimiser.
    """
    z = layer.pre_activation(h)  # (B + B', d_k)
    y = torch.relu(z)
    g = goodness(y)  # (B + B',) Eq. (ff-goodness)
    loss = ff_loss(g[:b], g[b:], layer.theta, layer.tau)  # Eq. (ff-loss)
    if peer <= 0:
        return loss, loss, y, None
    # straight-through ReLU (value relu(z), slope 1): a dead unit is still pushed up
    a = (z + (y - z).detach()).float()[:b]
    m = peer_momentum * layer.running_mean + (1 - peer_momentum) * a.mean(0)  # (d_k,)
    return loss, loss + peer * (m.mean() - m).pow(2).mean(), y, m


def train_step(net: FFNet, optimizers: Sequence[torch.optim.Optimizer], x_pos: torch.Tensor,
               x_neg: torch.Tensor, peer: float = 0.0, peer_momentum: float = 0.9,
               autocast=None, objective=None) -> torch.Tensor:
    """One layer-local FF update of every layer (chapter 06, "Training supervised FF").

    ``x_pos`` (B, D) and ``x_neg`` (B', D) go up the net together; layer ``k`` receives the
    *detached* activities of layer ``k-1``, computes Eq. (ff-loss) with its own ``theta`` and
    ``tau`` — plus ``peer`` times the peer-normalisation penalty, which pulls every unit's running
    mean activity on positive data towards the layer average — and steps its own optimiser.
    Returns the FF loss of each layer as a detached tensor (num_layers,), left on the device so
    the loop does not wait for the GPU.
    ``autocast`` is an optional context-manager factory (``lambda: helpers.runtime.autocast(dev)``);
    ``objective`` replaces :func:`layer_objective`, e.g. by its ``torch.compile`` d version.
    """
    _check_2d(x_pos, "x_pos")
    _check_2d(x_neg, "x_neg")
    if len(optimizers) != len(net.layers):
        raise ValueError(f"need one optimiser per layer ({len(net.layers)}), got {len(optimizers)}")
    if peer < 0:
        raise ValueError(f"peer must be >= 0, got {peer}")
    if not 0 <= peer_momentum < 1:
        raise ValueError(f"peer_momentum must be in [0, 1), got {peer_momentum}")
    objective = layer_objective if objective is None else objective
    b = x_pos.shape[0]
    h = torch.cat([x_pos, x_neg])  # (B + B', D): one matmul for both passes
    losses = []
    for layer, opt in zip(net.layers, optimizers):
        h = h.detach()  # layer k never sees a graph that reaches layers < k
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss, total, y, m = objective(layer, h, b, peer, peer_momentum)
        if m is not None:
            layer.running_mean.copy_(m.detach())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(loss.detach())
        h = y
    return torch.stack(losses)


@torch.no_grad()
def label_goodness(net: FFNet, x: torch.Tensor, num_classes: int = 10, skip_layers: int = 1,
                   strength: float = 1.0, autocast=None, logits: bool = False) -> torch.Tensor:
    """Goodness accumulated over layers ``>= skip_layers`` for every candidate label: (B, num_classes).

    Chapter 06, Eq. (ff-predict): run the net once per label written into the image and sum the
    layers' goodness. Hinton leaves out the first hidden layer (``skip_layers=1``). With ``logits=True``
    each layer contributes its logit ``(G - theta) / tau`` instead of ``G``: the sum is then the
    log of the product of the layers' odds that the label is right (used to draw hard negatives).
    """
    _check_2d(x)
    if not 0 <= skip_layers < len(net.layers):
        raise ValueError(f"skip_layers must be in [0, {len(net.layers)}), got {skip_layers}")
    b = x.shape[0]
    labels = torch.arange(num_classes, device=x.device).repeat_interleave(b)  # (C*B,)
    xs = embed_label(x.repeat(num_classes, 1), labels, num_classes, strength)  # (C*B, D)
    total = torch.zeros(num_classes * b, device=x.device)
    h = xs
    for k, layer in enumerate(net.layers):
        if autocast is None:
            h = layer(h)
        else:
            with autocast():
                h = layer(h)
        if k >= skip_layers:
            total += (goodness(h) - layer.theta) / layer.tau if logits else goodness(h)
    return total.view(num_classes, b).T.contiguous()  # (B, C)


def predict(net: FFNet, x: torch.Tensor, num_classes: int = 10, skip_layers: int = 1,
            strength: float = 1.0, batch_size: int = 2000, autocast=None) -> torch.Tensor:
    """The label with the most accumulated goodness (chapter 06, Eq. (ff-predict)), ``batch_size`` rows at a time."""
    _check_2d(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = [label_goodness(net, x[i:i + batch_size], num_classes, skip_layers, strength, autocast).argmax(1)
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)
