"""Transformers: short paper-faithful references and the efficient blocks later chapters reuse (chapter 04).

Chapter 04 derives every algorithm of *Formal Algorithms for Transformers* (Phuong & Hutter, 2022) and
implements it twice. This module holds

* the **references** the tests check against: :func:`attention` (Algorithm 4), :func:`mh_attention`
  (Algorithm 5), :func:`layer_norm` (Algorithm 6) and the masks of Algorithm 4. They keep the paper's
  *column* convention — a sequence is a matrix ``X`` of shape ``(d, l)``, one column per token — and
  accept extra leading batch dimensions ``(..., d, l)``;
* the **efficient** versions used for training, in PyTorch's *row* convention ``(B, T, C)`` (a batch of
  the paper's ``X^T``): :class:`MultiHeadAttention` (one fused QKV projection, then
  ``F.scaled_dot_product_attention``, which picks the flash kernel on recent GPUs), pre-LN
  :class:`Block` (optionally with cross-attention), :class:`Encoder` (used by the CLIP chapter 03 and the
  speech chapter 07) and the GPT-style decoder :class:`GPT` (the paper's DTransformer, Algorithm 10).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------ masks (Algorithm 4, chapter 04)


def bidirectional_mask(l_z: int, l_x: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """``Mask[t_z, t_x] = 1`` for all pairs: every token sees every context token (encoders, cross-attention;
    chapter 04).

    Shape ``(l_z, l_x)`` (the paper's orientation: rows index the context, columns the queries).
    """
    l_x = l_z if l_x is None else l_x
    _check_length(l_z, "l_z")
    _check_length(l_x, "l_x")
    return torch.ones(l_z, l_x, dtype=torch.bool, device=device)


def unidirectional_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``Mask[t_z, t_x] = [t_z <= t_x]``: token ``t_x`` sees itself and the past only (decoders, chapter 04).

    Shape ``(l, l)``.
    """
    _check_length(length, "length")
    t = torch.arange(length, device=device)
    return t[:, None] <= t[None, :]


def _check_length(value: int, name: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


# ------------------------------------------------------------------ references (column convention, chapter 04)


def attention(x: torch.Tensor, z: torch.Tensor, w_q: torch.Tensor, b_q: torch.Tensor, w_k: torch.Tensor,
              b_k: torch.Tensor, w_v: torch.Tensor, b_v: torch.Tensor, mask: torch.Tensor | None = None,
              *, return_weights: bool = False):
    """Algorithm 4, ``Attention(X, Z | W_qkv, Mask)``, in the paper's column convention (chapter 04).

    ``x``: ``(..., d_x, l_x)`` primary sequence; ``z``: ``(..., d_z, l_z)`` context; ``w_q, w_k``:
    ``(d_attn, d_x)``/``(d_attn, d_z)``; ``w_v``: ``(d_out, d_z)``; biases are vectors; ``mask``: boolean,
    broadcastable to ``(..., l_z, l_x)`` (``None`` = bidirectional). Returns ``(..., d_out, l_x)`` and,
    with ``return_weights``, the attention matrix ``softmax(S / sqrt(d_attn))`` of shape ``(..., l_z, l_x)``.
    A query column whose mask is all zero has no defined output (the paper excludes it); it yields NaN.
    """
    if x.shape[-2] != w_q.shape[-1] or z.shape[-2] != w_k.shape[-1] or z.shape[-2] != w_v.shape[-1]:
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, z {tuple(z.shape)}, W_q {tuple(w_q.shape)}, "
                         f"W_k {tuple(w_k.shape)}, W_v {tuple(w_v.shape)} (features are dimension -2)")
    q = w_q @ x + b_q[:, None]  # (..., d_attn, l_x)
    k = w_k @ z + b_k[:, None]  # (..., d_attn, l_z)
    v = w_v @ z + b_v[:, None]  # (..., d_out, l_z)
    s = k.mT @ q  # (..., l_z, l_x)
    if mask is not None:
        s = s.masked_fill(~mask.bool(), float("-inf"))
    a = torch.softmax(s / math.sqrt(w_q.shape[0]), dim=-2)  # normalise over the context index t_z
    out = v @ a  # (..., d_out, l_x)
    return (out, a) if return_weights else out


def mh_attention(x: torch.Tensor, z: torch.Tensor, heads: list[tuple[torch.Tensor, ...]], w_o: torch.Tensor,
                 b_o: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Algorithm 5 (chapter 04), ``MHAttention(X, Z | W, Mask)``: run :func:`attention` once per head (``heads`` holds
    ``(w_q, b_q, w_k, b_k, w_v, b_v)`` for each), stack the ``(d_mid, l_x)`` outputs into
    ``Y`` of shape ``(H * d_mid, l_x)`` and return ``W_o Y + b_o`` — ``(..., d_out, l_x)``."""
    if len(heads) < 1:
        raise ValueError(f"need at least one head, got {len(heads)}")
    y = torch.cat([attention(x, z, *h, mask) for h in heads], dim=-2)  # (..., H*d_mid, l_x)
    if y.shape[-2] != w_o.shape[-1]:
        raise ValueError(f"W_o has shape {tuple(w_o.shape)} but the stacked heads give {y.shape[-2]} rows")
    return w_o @ y + b_o[:, None]


def layer_norm(e: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Algorithm 6, ``layer_norm(e | gamma, beta)`` over the last dimension of ``e`` (``(..., d_e)``); chapter 04.

    The paper divides by ``sqrt(v)``; ``eps`` (added to ``v``, as ``F.layer_norm`` does) keeps a
    constant vector finite. ``eps=0`` is the paper's formula.
    """
    if e.shape[-1] != gamma.shape[-1] or gamma.shape != beta.shape:
        raise ValueError(f"e {tuple(e.shape)}, gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)} do not fit")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    m = e.mean(dim=-1, keepdim=True)
    v = ((e - m) ** 2).mean(dim=-1, keepdim=True)
    return (e - m) / torch.sqrt(v + eps) * gamma + beta


# ------------------------------------------------------------------ efficient versions (row convention, chapter 04)


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``(B, T, C)`` rows: fused projections + ``F.scaled_dot_product_attention``.

    Self-attention uses one ``Linear(d_model, 3 d_model)`` for Q, K and V (one matmul instead of 3H);
    cross-attention (``cross=True``) projects the queries from ``x`` and keys/values from ``context``
    (width ``d_context``). Equivalent to Algorithm 5 with ``d_attn = d_mid = d_model / n_head``
    (chapter 04 checks it with copied weights). ``attn_mask`` is boolean, ``True`` = may attend, shaped
    ``(T, S)``, ``(B, 1, T, S)`` or ``(B, H, T, S)`` — the transpose of the paper's ``Mask``.
    """

    def __init__(self, d_model: int, n_head: int, *, cross: bool = False, d_context: int | None = None,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if d_model < 1 or n_head < 1 or d_model % n_head:
            raise ValueError(f"d_model={d_model} must be a positive multiple of n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_head, self.cross, self.dropout = d_model, n_head, cross, dropout
        d_context = d_model if d_context is None else d_context
        if cross:
            self.q = nn.Linear(d_model, d_model, bias=bias)
            self.kv = nn.Linear(d_context, 2 * d_model, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, H, T, C/H)
        b, n, _ = t.shape
        return t.view(b, n, self.n_head, self.d_model // self.n_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, causal: bool = False,
                attn_mask: torch.Tensor | None = None, need_weights: bool = False):
        """``x``: ``(B, T, d_model)``; ``context``: ``(B, S, d_context)`` (cross-attention only).
        Returns ``(B, T, d_model)``, plus the ``(B, H, T, S)`` attention weights when ``need_weights``."""
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor, got None")
            q = self.q(x)
            k, v = self.kv(context).split(self.d_model, dim=-1)
        else:
            if context is not None:
                raise ValueError("self-attention takes no context (build the layer with cross=True)")
            q, k, v = self.qkv(x).split(self.d_model, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)  # (B, H, T|S, hd)
        if attn_mask is not None and attn_mask.dtype != torch.bool:  # SDPA would silently add a float mask
            raise ValueError(f"attn_mask must be boolean (True = may attend), got dtype {attn_mask.dtype}")
        if causal and attn_mask is not None:
            attn_mask = attn_mask & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
            causal = False
        drop = self.dropout if self.training else 0.0
        if need_weights:  # the explicit path (for attention maps): same numbers, no fused kernel
            s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
            if causal:
                s = s.masked_fill(~torch.ones_like(s, dtype=torch.bool).tril(), float("-inf"))
            if attn_mask is not None:
                s = s.masked_fill(~attn_mask, float("-inf"))
            low = s.dtype in (torch.float16, torch.bfloat16)  # softmax in float32 under autocast
            w = torch.softmax(s.float() if low else s, dim=-1).to(q.dtype)
            y = F.dropout(w, drop, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=causal)
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.d_model)  # (B, T, C)
        out = self.proj(y)
        return (out, w) if need_weights else out


class MLP(nn.Module):
    """The position-wise feed-forward layer ``W2 act(W1 x + b1) + b2`` (GELU by default), then dropout (chapter 04)."""

    def __init__(self, d_model: int, d_mlp: int, *, bias: bool = True, dropout: float = 0.0,
                 activation: str = "gelu"):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        self.fc = nn.Linear(d_model, d_mlp, bias=bias)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.proj = nn.Linear(d_mlp, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """A pre-LN transformer block (Algorithm 10's layer, chapter 04; GPT-2 order):
    ``x += Attn(LN(x))``; with ``cross``: ``x += CrossAttn(LN(x), context)``; then ``x += MLP(LN(x))``."""

    def __init__(self, d_model: int, n_head: int, d_mlp: int | None = None, *, cross: bool = False,
                 d_context: int | None = None, bias: bool = True, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        d_mlp = 4 * d_model if d_mlp is None else d_mlp
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_head, bias=bias, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.cross = None
        if cross:
            self.ln_cross = nn.LayerNorm(d_model, bias=bias)
            self.cross = MultiHeadAttention(d_model, n_head, cross=True, d_context=d_context, bias=bias,
                                            dropout=dropout)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, d_mlp, bias=bias, dropout=dropout, activation=activation)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, causal: bool = False,
                attn_mask: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), causal=causal, attn_mask=attn_mask))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.ln_cross(x), context, attn_mask=context_mask))
        return x + self.mlp(self.ln2(x))


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean key mask ``(B, 1, 1, S)`` from sequence lengths: ``True`` where the key is a real token.

    Pass it as ``attn_mask`` to :class:`MultiHeadAttention`/:class:`Encoder` for padded batches (chapter 07).
    """
    on_cpu = lengths.device.type == "cpu"  # value checks only where they cost no GPU synchronisation
    if lengths.ndim != 1 or (on_cpu and (lengths < 1).any()):
        raise ValueError(f"lengths must be a 1-D tensor of positive ints, got {lengths.tolist()}")
    max_len = int(lengths.max()) if max_len is None else max_len
    if on_cpu and max_len < int(lengths.max()):
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({int(lengths.max())})")
    keep = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
    return keep[:, None, None, :]


class Encoder(nn.Module):
    """A stack of pre-LN blocks plus a final LayerNorm over already-embedded inputs ``(B, T, d_model)``.

    Bidirectional by default (ViT, BERT, the speech encoder of chapter 07); ``causal=True`` gives CLIP's
    text encoder (chapter 03). The caller adds token/patch and positional embeddings.
    """

    def __init__(self, d_model: int, n_layer: int, n_head: int, d_mlp: int | None = None, *, causal: bool = False,
                 bias: bool = True, dropout: float = 0.0, activation: str = "gelu"):
        super().__init__()
        if n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {n_layer}")
        self.causal = causal
        self.blocks = nn.ModuleList(Block(d_model, n_head, d_mlp, bias=bias, dropout=dropout, activation=activation)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, causal=self.causal, attn_mask=attn_mask)
        return self.ln_f(x)


@dataclass
class GPTConfig:
    """Sizes of a :class:`GPT`. The defaults are nanoGPT's ``shakespeare_char`` model (chapter 04)."""

    vocab_size: int = 65
    context: int = 256
    n_layer: int = 6
    n_head: int = 6
    d_model: int = 384
    dropout: float = 0.2
    bias: bool = False
    tie_weights: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def asdict(self) -> dict:
        return asdict(self)


class GPT(nn.Module):
    """The decoder-only transformer (Algorithm 10, DTransformer) in its efficient form (chapter 04).

    Token + learned positional embeddings, ``n_layer`` causal pre-LN :class:`Block` s, a final LayerNorm and
    the unembedding (tied to the token embedding when ``tie_weights``). ``forward(idx)`` returns logits
    ``(B, T, vocab)`` — row ``t`` is the (unnormalised log-)distribution of token ``t + 1`` — and, given
    ``targets``, the mean cross-entropy (Algorithm 13's loss, averaged).
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout)
                                    for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: shrink the residual writes by 1/sqrt(2L)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        b, t = idx.shape
        if t > self.cfg.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.cfg.context}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, causal=True)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The causal attention weights of every layer, each ``(B, H, T, T)`` (for an attention viewer)."""
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        maps = []
        for block in self.blocks:
            y, w = block.attn(block.ln1(x), causal=True, need_weights=True)
            maps.append(w)
            x = x + y
            x = x + block.mlp(block.ln2(x))
        return maps

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n_new: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Algorithm 14 (DInference): append ``n_new`` tokens sampled from ``softmax(logits / temperature)``."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if n_new < 0:
            raise ValueError(f"n_new must be >= 0, got {n_new}")
        for _ in range(n_new):
            logits = self(idx[:, -self.cfg.context:])[:, -1, :].float() / temperature  # (B, V)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def count_params(model: nn.Module, exclude_positional: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once); optionally without ``pos_emb`` (chapter 04)."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or (exclude_positional and "pos_emb" in name):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def flops_per_token(n_params: int, n_layer: int, d_model: int, context: int) -> float:
    """Training FLOPs per token (forward + backward): ``6 N + 12 L d T`` (chapter 04, "Sizing").

    ``6N``: each parameter does a multiply-add forward and two backward; ``12 L d T``: the two
    attention matmuls (``QK^T`` and ``AV``) per layer over a context of ``T``, forward and backward.
    """
    for name, value in (("n_params", n_params), ("n_layer", n_layer), ("d_model", d_model), ("context", context)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return 6.0 * n_params + 12.0 * n_layer * d_model * context
