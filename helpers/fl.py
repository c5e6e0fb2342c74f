"""Federated learning on one machine: non-IID partitions, many clients trained at once, body-only
averaging (chapter 01, "Federated learning under data heterogeneity: FedAvg → FedBABU").

* :func:`shard_partition` and :func:`dirichlet_partition` split a labelled dataset over clients the
  two ways the literature does it, and give every client a test split drawn from its own classes.
* :class:`ConvNet4` is the 4-layer CNN of the FedBABU paper, with a ``body`` and a linear ``head``.
* :func:`local_sgd` runs local SGD on K clients *at once* (``torch.func.vmap`` over stacked client
  parameters); :func:`local_sgd_loop` is the plain one-client-at-a-time reference it is tested against.
* :func:`aggregate` averages only the parameters it is told to (FedAvg: all; FedBABU: the body).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

Params = dict[str, torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class Partition:
    """Who holds what: per-client index tensors into the train and the test set (chapter 01).

    ``train[k]`` / ``test[k]``: int64 indices of client ``k``'s samples; ``classes[k]``: the classes it
    was dealt (shards) or holds (Dirichlet). Every train (test) sample belongs to exactly one client.
    """

    train: list[torch.Tensor]
    test: list[torch.Tensor]
    classes: list[torch.Tensor]
    num_classes: int

    @property
    def num_clients(self) -> int:
        return len(self.train)

    def sizes(self, split: str = "train") -> torch.Tensor:
        """Samples per client, ``(K,)`` int64."""
        parts = self._split(split)
        return torch.tensor([len(p) for p in parts], dtype=torch.int64)

    def counts(self, labels: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Per-client label histogram ``(K, C)`` of ``labels`` (the labels of that split)."""
        return label_counts(labels, self._split(split), self.num_classes)

    def _split(self, split: str) -> list[torch.Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test


def label_counts(labels: torch.Tensor, parts: Sequence[torch.Tensor], num_classes: int) -> torch.Tensor:
    """``(K, C)`` int64: how many samples of each class every index set in ``parts`` holds (chapter 01).

    Raises ``ValueError`` for a counted label outside ``[0, num_classes)`` (it would be dropped silently).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labels = torch.as_tensor(labels).cpu()
    out = torch.zeros(len(parts), num_classes, dtype=torch.int64)
    for k, idx in enumerate(parts):
        held = labels[torch.as_tensor(idx, dtype=torch.int64).cpu()]
        bad = held[(held < 0) | (held >= num_classes)]
        if len(bad):
            raise ValueError(f"part {k} holds label {bad[0].item()}, outside [0, num_classes={num_classes})")
        out[k] = torch.bincount(held, minlength=num_classes)
    return out


def _check_labels(name: str, labels: torch.Tensor) -> np.ndarray:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of class ids, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
    if int(labels.min()) < 0:
        raise ValueError(f"{name} holds a negative class id {int(labels.min())}")
    return labels.cpu().numpy().astype(np.int64)


def _num_classes(train: np.ndarray, test: np.ndarray) -> int:
    c = int(max(train.max(), test.max())) + 1
    missing_train = sorted(set(range(c)) - set(np.unique(train).tolist()))
    missing_test = sorted(set(range(c)) - set(np.unique(test).tolist()))
    if missing_train or missing_test:
        raise ValueError(f"classes 0..{c - 1} must all occur; missing in train: {missing_train}, in test: {missing_test}")
    return c


def _by_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The indices of every class, each list shuffled."""
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def _deal_classes(num_clients: int, s: int, num_classes: int, rng: np.random.Generator,
                  distinct: bool, max_sweeps: int = 1000) -> np.ndarray:
    """A ``(K, s)`` table of class ids in which every class occurs ``K*s/C`` times.

    As in the FedBABU code, the multiset ``[0..C-1] * (K*s/C)`` is shuffled and cut into rows. With
    ``distinct`` a row that drew a class twice swaps the repeat with another row (a row then holds
    exactly ``s`` different classes; the original code accepts fewer).
    """
    table = rng.permutation(np.repeat(np.arange(num_classes), num_clients * s // num_classes)).reshape(num_clients, s)
    if not distinct:
        return table
    for _ in range(max_sweeps):
        bad = [i for i in range(num_clients) if len(set(table[i].tolist())) < s]
        if not bad:
            return table
        for i in bad:
            row = table[i].tolist()
            repeats = [j for j in range(s) if row[j] in row[:j]]  # positions of repeated classes
            if not repeats:  # an earlier swap in this sweep already fixed the row
                continue
            p = repeats[0]
            v = row[p]
            options = [(j, q) for j in rng.permutation(num_clients) if j != i and v not in table[j]
                       for q in range(s) if table[j, q] not in row]
            j, q = options[0] if options else (int(rng.integers(num_clients)), int(rng.integers(s)))
            table[i, p], table[j, q] = table[j, q], table[i, p]
    raise ValueError(f"could not deal {s} distinct classes to each of {num_clients} clients from {num_classes} classes")


def shard_partition(train_labels: torch.Tensor, test_labels: torch.Tensor, num_clients: int,
                    classes_per_client: int, *, seed: int = 0, distinct: bool = True) -> Partition:
    """Pathological non-IID split: every client receives ``s = classes_per_client`` class shards (chapter 01).

    Each class is cut into ``K*s/C`` equal shards (sizes differ by at most one sample), and the shuffled
    shards are dealt ``s`` to a client. With ``distinct=True`` a client's ``s`` shards belong to ``s`` different
    classes; ``distinct=False`` deals them as the FedBABU code does, repeats allowed, so a client may hold
    fewer than ``s`` classes (chapter 01 trains on this, as the paper did). The client's test split is made
    the same way from the test set with the *same* classes, so each client is evaluated on its own
    label distribution. Every train and every test sample is used exactly once.

    Raises ``ValueError`` when ``s`` exceeds the number of classes, when ``K*s`` is not a multiple of
    the number of classes (shards of equal count per class), or when a class has fewer samples than shards.
    """
    y_train, y_test = _check_labels("train_labels", train_labels), _check_labels("test_labels", test_labels)
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    num_classes = _num_classes(y_train, y_test)
    s = classes_per_client
    if not isinstance(s, (int, np.integer)) or not 1 <= s <= num_classes:
        raise ValueError(f"classes_per_client must be an int in [1, {num_classes}] (the number of classes), got {s!r}")
    if (num_clients * s) % num_classes:
        raise ValueError(f"num_clients * classes_per_client = {num_clients} * {s} = {num_clients * s} must be a "
                         f"multiple of the number of classes {num_classes} (every class is cut into equally many shards)")
    shards_per_class = num_clients * s // num_classes
    for name, y in (("train", y_train), ("test", y_test)):
        counts = np.bincount(y, minlength=num_classes)
        if counts.min() < shards_per_class:
            c = int(counts.argmin())
            raise ValueError(f"too few samples: class {c} has {int(counts[c])} {name} samples but must be cut into "
                             f"{shards_per_class} shards ({num_clients} clients x {s} classes / {num_classes} classes)")
    rng = np.random.default_rng(seed)
    table = _deal_classes(num_clients, s, num_classes, rng, distinct)

    def deal(y: np.ndarray) -> list[torch.Tensor]:
        shards = [np.array_split(idx, shards_per_class) for idx in _by_class(y, num_classes, rng)]
        used = [0] * num_classes
        parts = []
        for k in range(num_clients):
            mine = []
            for c in table[k]:
                mine.append(shards[c][used[c]])
                used[c] += 1
            parts.append(torch.from_numpy(np.sort(np.concatenate(mine))))
        return parts

    train, test = deal(y_train), deal(y_test)
    classes = [torch.from_numpy(np.unique(row)) for row in table]
    return Partition(train, test, classes, num_classes)


def dirichlet_partition(train_labels: torch.Tensor, test_labels: torch.Tensor, num_clients: int, alpha: float,
                        *, seed: int = 0, min_size: int = 10, max_tries: int = 100) -> Partition:
    """Label-skew split: class ``c`` goes to the clients in proportions ``p_c ~ Dir(alpha · 1_K)`` (chapter 01).

    Small ``alpha`` (0.1) gives each client few classes; large ``alpha`` (100) is close to IID. The
    client's test split takes the *same* proportions ``p_c`` of the test set's class ``c``, so it
    follows the client's own label distribution. Draws are repeated (up to ``max_tries``) until every
    client holds at least ``min_size`` training samples. Every sample is used exactly once.

    Raises ``ValueError`` for ``alpha <= 0``, ``num_clients < 1``, or when ``min_size`` cannot be met.
    """
    y_train, y_test = _check_labels("train_labels", train_labels), _check_labels("test_labels", test_labels)
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if min_size < 0 or num_clients * min_size > len(y_train):
        raise ValueError(f"too few samples: {num_clients} clients x min_size {min_size} = {num_clients * min_size} "
                         f"> {len(y_train)} training samples")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    num_classes = _num_classes(y_train, y_test)
    rng = np.random.default_rng(seed)

    def split(y: np.ndarray, props: np.ndarray) -> list[np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c, idx in enumerate(_by_class(y, num_classes, rng)):
            cuts = np.round(np.cumsum(props[c])[:-1] * len(idx)).astype(np.int64)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        return [np.sort(np.concatenate(p)) for p in parts]

    for _ in range(max_tries):
        props = rng.dirichlet(np.full(num_clients, float(alpha)), size=num_classes)  # (C, K)
        train = split(y_train, props)
        if min(len(p) for p in train) >= min_size:
            break
    else:
        raise ValueError(f"no Dir({alpha}) draw in {max_tries} tries gave all {num_clients} clients >= {min_size} "
                         f"training samples; raise alpha, lower min_size or use fewer clients")
    test = split(y_test, props)
    classes = [torch.from_numpy(np.unique(y_train[p])) for p in train]
    return Partition([torch.from_numpy(p) for p in train], [torch.from_numpy(p) for p in test], classes, num_classes)


# ---------------------------------------------------------------------------------------- the model


class ConvNet4(nn.Module):
    """The FedBABU paper's CNN for CIFAR (chapter 01): body = 4 × [conv3×3 → BN → ReLU → maxpool 2],
    head = one linear layer on the flattened features.

    BatchNorm keeps no running statistics (``track_running_stats=False``), as in the paper's code:
    it always normalises with the statistics of the batch it sees, so there is no buffer to average
    and clients trained side by side under ``vmap`` each normalise with their own batch.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, image_size: int = 32):
        super().__init__()
        if min(num_classes, in_channels, width) < 1 or image_size < 16:
            raise ValueError(f"need num_classes, in_channels, width >= 1 and image_size >= 16, got "
                             f"{num_classes}, {in_channels}, {width}, {image_size}")
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(4):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width, track_running_stats=False),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c = width
        self.body = nn.Sequential(*layers, nn.Flatten())            # (B, C, H, W) -> (B, width * (H/16)^2)
        self.head = nn.Linear(width * (image_size // 16) ** 2, num_classes)  # (B, D) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def head_names(model: nn.Module, prefix: str = "head.") -> list[str]:
    """Names of the head's parameters (those starting with ``prefix``; chapter 01, "Body and head")."""
    names = [n for n, _ in model.named_parameters() if n.startswith(prefix)]
    if not names:
        raise ValueError(f"model has no parameter starting with {prefix!r}")
    return names


def body_names(model: nn.Module, prefix: str = "head.") -> list[str]:
    """Names of every parameter that is not in the head (chapter 01, "Body and head")."""
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


# ---------------------------------------------------------------------------------------- stacking


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a plain ``{name: tensor}`` dict of detached clones (chapter 01)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def broadcast(params: Mapping[str, torch.Tensor], k: int) -> Params:
    """Stack ``k`` copies of one parameter set: ``{name: (k, *shape)}`` — the server sends the model (chapter 01)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return {n: v.unsqueeze(0).expand(k, *v.shape).clone() for n, v in params.items()}


def stack(states: Sequence[Mapping[str, torch.Tensor]]) -> Params:
    """``[{name: shape}] * K -> {name: (K, *shape)}`` (chapter 01)."""
    if not states:
        raise ValueError("stack needs at least one parameter set")
    return {n: torch.stack([s[n] for s in states]) for n in states[0]}


def _check_names(names: Iterable[str], params: Mapping[str, torch.Tensor], what: str) -> list[str]:
    names = list(names)
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ValueError(f"{what} names parameters the model does not have: {unknown}")
    return names


# ---------------------------------------------------------------------------------------- aggregation


def aggregate(global_params: Mapping[str, torch.Tensor], client_params: Mapping[str, torch.Tensor],
              weights: torch.Tensor | Sequence[float], names: Iterable[str]) -> Params:
    """Server step: ``w[name] = Σ_k (n_k / Σ_j n_j) · w_k[name]`` for ``name`` in ``names``; every other
    parameter keeps its global value (chapter 01, Eq. of the FedAvg/FedBABU aggregation).

    ``client_params``: stacked ``{name: (K, *shape)}``; ``weights``: ``(K,)``, e.g. the clients'
    sample counts (plain averaging: all ones). FedAvg passes every name, FedBABU only the body's.
    """
    names = _check_names(names, global_params, "aggregate")
    missing = sorted(set(names) - set(client_params))
    if missing:
        raise ValueError(f"client_params lacks {missing}")
    w = torch.as_tensor(weights, dtype=torch.float64)
    k = len(next(iter(client_params.values())))
    if w.ndim != 1 or len(w) != k:
        raise ValueError(f"weights must have shape ({k},) (one per client), got {tuple(w.shape)}")
    # one host sync per round when the weights live on the GPU (chapter 01 passes its sample counts there);
    # a round takes seconds, and a NaN weight would otherwise turn every averaged parameter into NaN
    if not bool(torch.isfinite(w).all() & (w >= 0).all() & (w.sum() > 0)):
        raise ValueError(f"weights must be finite and >= 0 with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    out: Params = dict(global_params)
    for n in names:
        v = client_params[n]
        out[n] = (w.to(v.device, torch.float32).view(-1, *[1] * (v.ndim - 1)) * v.float()).sum(0).to(v.dtype)
    return out


# ---------------------------------------------------------------------------------------- local training


def client_batches(parts: Sequence[torch.Tensor], epochs: int, batch_size: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Index tensor ``(K, S, B)`` for ``epochs`` local epochs of mini-batch SGD on each client (chapter 01).

    Every epoch reshuffles the client's samples and cuts ``n // B`` full batches (the remainder is
    dropped, as with ``drop_last``). All clients must hold the same number of samples, so that the
    ``K`` clients can take their ``S = epochs * (n // B)`` steps in lock-step under ``vmap``.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    sizes = {len(p) for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"all clients need the same number of samples to train in lock-step, got sizes {sorted(sizes)}")
    n = sizes.pop()
    if n < batch_size:
        raise ValueError(f"batch_size {batch_size} > client size {n}: no full batch")
    steps = n // batch_size
    device = parts[0].device
    gen_device = generator.device if generator is not None else device
    out = []
    for p in parts:
        keys = torch.rand(epochs, n, generator=generator, device=gen_device).argsort(1).to(device)  # (E, n)
        out.append(p[keys[:, : steps * batch_size]].reshape(epochs * steps, batch_size))
    return torch.stack(out)  # (K, S, B)


def _identity(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:  # raw pixels in 0..255 would train silently badly
        raise ValueError("images are uint8: pass a transform (e.g. scale to [0, 1] and normalise), got none")
    return x.float()


def local_sgd(model: nn.Module, params: Mapping[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
              batches: torch.Tensor, *, trainable: Iterable[str], lr: float, momentum: float = 0.0,
              weight_decay: float = 0.0, transform: Transform | None = None,
              autocast: Callable[[], object] | None = None,
              state: dict | None = None) -> tuple[Params, torch.Tensor]:
    """Local SGD on ``K`` clients at once (chapter 01, "Training the clients in parallel").

    ``params``: stacked ``{name: (K, *shape)}``; ``images``/``labels``: the whole dataset (on the
    device); ``batches``: ``(K, S, B)`` sample indices (:func:`client_batches`). Every step computes,
    for all clients together, ``g_k = ∇ CE(f(x_k; w_k), y_k)`` with ``torch.func.grad`` under
    ``vmap``, then hands the stacked gradients to one ``torch.optim.SGD`` over the stacked ``trainable``
    tensors (``d = g + λw``, ``m ← μm + d``, ``w ← w - ηm``). That rule is element-wise, so one optimiser
    over ``(K, *shape)`` tensors is ``K`` independent client optimisers, and on a GPU its ``foreach``
    kernels update every tensor in a few launches. The other names are returned as the very same tensors,
    untouched; ``params`` itself is not modified.
    ``transform`` maps a uint8 batch ``(N, C, H, W)`` to float (augment + normalise).
    Returns the new stacked parameters and every client's mean training loss ``(K,)``.
    Pass the same dict as ``state`` to consecutive calls to carry the momentum buffers over (as one
    optimiser would); by default every call starts with zero momentum, like a fresh client optimiser.
    ``autocast`` (a callable returning a context manager) wraps each step; note that bf16 autocast under
    ``vmap`` + ``grad`` fails in BatchNorm's batched backward with torch 2.14 (checked on the CPU), so
    chapter 01 trains in float32.
    """
    trainable = _check_names(trainable, params, "trainable")
    if not trainable:
        raise ValueError("trainable is empty: nothing to train")
    if batches.ndim != 3:
        raise ValueError(f"batches must be (K, S, B), got shape {tuple(batches.shape)}")
    k, steps, b = batches.shape
    for n, v in params.items():
        if v.shape[0] != k:
            raise ValueError(f"params[{n!r}] has {v.shape[0]} clients, batches has {k}")
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"lr, momentum, weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
    transform = transform or _identity
    train = {n: params[n].detach().clone() for n in trainable}         # the optimiser updates these in place
    frozen = {n: v for n, v in params.items() if n not in train}
    opt = torch.optim.SGD(list(train.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if momentum and state is not None and "momentum" in state:
        for n, p in train.items():
            if n in state["momentum"]:
                opt.state[p]["momentum_buffer"] = state["momentum"][n].clone()

    def loss_fn(tp: Params, fp: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**tp, **fp}, (x,))  # (B, classes)
        return F.cross_entropy(logits.float(), y)

    vgrad = vmap(grad_and_value(loss_fn))                              # one client's gradient, mapped over K
    losses = torch.zeros(k, device=batches.device)
    ctx = autocast or contextlib.nullcontext
    for t in range(steps):
        idx = batches[:, t]                                            # (K, B)
        x = transform(images[idx.reshape(-1)])                         # (K*B, C, H, W) float
        x = x.view(k, b, *x.shape[1:])                                 # (K, B, C, H, W)
        with ctx():
            g, loss = vgrad(train, frozen, x, labels[idx])             # {name: (K, *shape)}, (K,)
        for n, p in train.items():
            p.grad = g[n]
        opt.step()                                                     # all K clients' SGD steps at once
        losses += loss.detach().float()
    if state is not None:
        state["momentum"] = {n: opt.state[p]["momentum_buffer"] for n, p in train.items()
                             if "momentum_buffer" in opt.state[p]}     # none when momentum == 0
    for p in train.values():
        p.grad = None
    return {**params, **train}, losses / steps


def local_sgd_loop(model: nn.Module, params: Mapping[str, torch.Tensor], images: torch.Tensor,
                   labels: torch.Tensor, batches: torch.Tensor, *, trainable: Iterable[str], lr: float,
                   momentum: float = 0.0, weight_decay: float = 0.0, transform: Transform | None = None,
                   autocast: Callable[[], object] | None = None) -> tuple[Params, torch.Tensor]:
    """The same computation as :func:`local_sgd`, one client after the other with an ``nn.Module``
    and ``torch.optim.SGD`` — the plain reference (chapter 01 measures the speed-up against it)."""
    trainable = set(_check_names(trainable, params, "trainable"))
    k, steps, b = batches.shape
    transform = transform or _identity
    ctx = autocast or contextlib.nullcontext
    outs, losses = [], []
    for i in range(k):
        net = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(params[n][i])
                p.requires_grad_(n in trainable)
        opt = torch.optim.SGD([p for n, p in net.named_parameters() if n in trainable], lr=lr,
                              momentum=momentum, weight_decay=weight_decay)
        total = torch.zeros((), device=batches.device)
        for t in range(steps):
            idx = batches[i, t]
            with ctx():
                loss = F.cross_entropy(net(transform(images[idx])).float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        outs.append({n: (p.detach() if n in trainable else params[n][i]) for n, p in net.named_parameters()})
        losses.append(total / steps)
    return stack(outs), torch.stack(losses)


@torch.no_grad()
def evaluate(model: nn.Module, params: Mapping[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             parts: torch.Tensor, *, transform: Transform | None = None,
             autocast: Callable[[], object] | None = None) -> torch.Tensor:
    """Accuracy of client ``k``'s model on its own samples ``parts[k]``, for all clients at once (chapter 01).

    ``params``: stacked ``{name: (K, *shape)}``; ``parts``: ``(K, n)`` indices (every client's whole
    test split is one batch, so BatchNorm normalises with the client's own test statistics, as the
    paper's code does). Returns ``(K,)`` accuracies in ``[0, 1]``.
    """
    if parts.ndim != 2 or parts.shape[0] != next(iter(params.values())).shape[0]:
        raise ValueError(f"parts must be (K, n) with K = number of clients in params, got {tuple(parts.shape)}")
    transform = transform or _identity
    k, n = parts.shape
    x = transform(images[parts.reshape(-1)])
    x = x.view(k, n, *x.shape[1:])                                     # (K, n, C, H, W)
    with (autocast or contextlib.nullcontext)():
        logits = vmap(lambda p, xb: functional_call(model, p, (xb,)))(dict(params), x)  # (K, n, classes)
    return (logits.argmax(-1) == labels[parts]).float().mean(1)
