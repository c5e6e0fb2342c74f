"""Tests for helpers.transformer (chapter 04): the paper-faithful references against torch's own
attention and layer norm, the masks, the efficient blocks against the references, and the causal
property of the GPT-style decoder."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import transformer as tr



@pytest.fixture(autouse=True)
def _float64():
    """Parity in float64 (to ~1e-10, not float32 rounding); restore the default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _heads_from_mha(mha: nn.MultiheadAttention):
    """Split nn.MultiheadAttention's packed weights into the paper's per-head (W_q, b_q, W_k, b_k, W_v, b_v)."""
    e, h = mha.embed_dim, mha.num_heads
    hd = e // h
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.split(e)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = mha.in_proj_bias.split(e)
    sl = [slice(i * hd, (i + 1) * hd) for i in range(h)]
    return [(wq[s], bq[s], wk[s], bk[s], wv[s], bv[s]) for s in sl]


def _heads_from_efficient(m: tr.MultiHeadAttention):
    e, h = m.d_model, m.n_head
    hd = e // h
    if m.cross:
        wq, bq = m.q.weight, m.q.bias
        wk, wv = m.kv.weight.split(e)
        bk, bv = m.kv.bias.split(e)
    else:
        wq, wk, wv = m.qkv.weight.split(e)
        bq, bk, bv = m.qkv.bias.split(e)
    sl = [slice(i * hd, (i + 1) * hd) for i in range(h)]
    return [(wq[s], bq[s], wk[s], bk[s], wv[s], bv[s]) for s in sl]


# ---------------------------------------------------------------- masks


def test_masks_orientation_and_values():
    m = tr.unidirectional_mask(4)
    assert m.shape == (4, 4) and m.dtype == torch.bool
    # Mask[t_z, t_x] = [t_z <= t_x]: query 0 sees only token 0, the last query sees everything
    assert m[:, 0].tolist() == [True, False, False, False]
    assert m[:, 3].all()
    assert torch.equal(m, torch.ones(4, 4, dtype=torch.bool).triu())
    c = tr.bidirectional_mask(3, 5)
    assert c.shape == (3, 5) and c.all()
    with pytest.raises(ValueError, match="0"):
        tr.unidirectional_mask(0)
    with pytest.raises(ValueError, match="-2"):
        tr.bidirectional_mask(3, -2)


# ---------------------------------------------------------------- Algorithm 4 vs SDPA


@pytest.mark.parametrize("kind", ["bidirectional", "unidirectional", "cross"])
def test_attention_matches_sdpa(kind):
    g = torch.Generator().manual_seed(0)
    b, d_x, d_z, d_attn, d_out, l_x = 2, 6, 5, 4, 3, 7
    l_z = 9 if kind == "cross" else l_x
    if kind != "cross":
        d_z = d_x
    x = torch.randn(b, l_x, d_x, generator=g)  # rows
    z = torch.randn(b, l_z, d_z, generator=g) if kind == "cross" else x
    w_q, w_k = torch.randn(d_attn, d_x, generator=g), torch.randn(d_attn, d_z, generator=g)
    w_v = torch.randn(d_out, d_z, generator=g)
    b_q, b_k, b_v = torch.randn(d_attn, generator=g), torch.randn(d_attn, generator=g), torch.randn(d_out, generator=g)
    if kind == "unidirectional":
        mask = tr.unidirectional_mask(l_x)
    elif kind == "cross":  # cross-attention with the last two context tokens padded away in sequence 0
        mask = tr.bidirectional_mask(l_z, l_x).repeat(b, 1, 1)
        mask[0, -2:, :] = False
    else:
        mask = tr.bidirectional_mask(l_z, l_x)
    ours, weights = tr.attention(x.mT, z.mT, w_q, b_q, w_k, b_k, w_v, b_v, mask, return_weights=True)
    q, k, v = x @ w_q.T + b_q, z @ w_k.T + b_k, z @ w_v.T + b_v
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mT)  # rows; its mask is (l_x, l_z)
    torch.testing.assert_close(ours.mT, ref)
    torch.testing.assert_close(weights.sum(dim=-2), torch.ones(b, l_x))  # columns are distributions
    assert (weights[~mask.expand_as(weights)] == 0).all()  # forbidden pairs get exactly zero weight
    assert (weights[mask.expand_as(weights)] > 0).all()


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        tr.attention(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, 5), torch.zeros(2), torch.zeros(2, 3),
                     torch.zeros(2), torch.zeros(2, 3), torch.zeros(2))


# ---------------------------------------------------------------- Algorithm 5 vs nn.MultiheadAttention


@pytest.mark.parametrize("causal", [False, True])
def test_mh_attention_matches_nn_multiheadattention(causal):
    torch.manual_seed(1)
    e, h, b, l = 12, 3, 2, 6
    mha = nn.MultiheadAttention(e, h, batch_first=True)
    nn.init.normal_(mha.in_proj_bias)
    nn.init.normal_(mha.out_proj.bias)
    x = torch.randn(b, l, e)
    mask = tr.unidirectional_mask(l) if causal else None
    ref, _ = mha(x, x, x, attn_mask=None if mask is None else ~mask.mT, need_weights=False)  # True = blocked
    ours = tr.mh_attention(x.mT, x.mT, _heads_from_mha(mha), mha.out_proj.weight, mha.out_proj.bias, mask)
    torch.testing.assert_close(ours.mT, ref)


def test_mh_attention_cross_matches_nn_multiheadattention():
    torch.manual_seed(2)
    e, d_z, h, b, l_x, l_z = 8, 5, 2, 3, 4, 7
    mha = nn.MultiheadAttention(e, h, batch_first=True, kdim=d_z, vdim=d_z)
    nn.init.normal_(mha.in_proj_bias)
    x, z = torch.randn(b, l_x, e), torch.randn(b, l_z, d_z)
    ref, _ = mha(x, z, z, need_weights=False)
    ours = tr.mh_attention(x.mT, z.mT, _heads_from_mha(mha), mha.out_proj.weight, mha.out_proj.bias)
    torch.testing.assert_close(ours.mT, ref)


# ---------------------------------------------------------------- Algorithm 6 vs F.layer_norm


def test_layer_norm_matches_torch():
    torch.manual_seed(3)
    e, gamma, beta = torch.randn(4, 5, 16) * 3 + 1, torch.randn(16), torch.randn(16)
    torch.testing.assert_close(tr.layer_norm(e, gamma, beta), F.layer_norm(e, (16,), gamma, beta, eps=1e-5))
    out = tr.layer_norm(e, torch.ones(16), torch.zeros(16), eps=0.0)  # the paper's formula: mean 0, variance 1
    torch.testing.assert_close(out.mean(-1), torch.zeros(4, 5))
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(4, 5))
    with pytest.raises(ValueError, match="-1"):
        tr.layer_norm(e, gamma, beta, eps=-1.0)


def _wide_init(m: nn.Module) -> nn.Module:
    """Weights ~ N(0, 0.5²): large enough that a wrong mask or head layout changes the outputs visibly."""
    for p in m.parameters():
        nn.init.normal_(p, 0, 0.5)
    return m


# ---------------------------------------------------------------- efficient vs reference


def test_efficient_self_attention_matches_reference():
    torch.manual_seed(4)
    m = _wide_init(tr.MultiHeadAttention(12, 4))
    x = torch.randn(2, 5, 12)
    for causal, mask in ((False, None), (True, tr.unidirectional_mask(5))):
        ours = m(x, causal=causal)
        ref = tr.mh_attention(x.mT, x.mT, _heads_from_efficient(m), m.proj.weight, m.proj.bias, mask).mT
        torch.testing.assert_close(ours, ref)
        explicit, w = m(x, causal=causal, need_weights=True)  # the attention-map path gives the same output
        torch.testing.assert_close(explicit, ref)
        assert w.shape == (2, 4, 5, 5)
        if causal:
            assert (w.triu(1) == 0).all()


def test_efficient_cross_attention_with_padding_matches_reference():
    torch.manual_seed(5)
    m = _wide_init(tr.MultiHeadAttention(8, 2, cross=True, d_context=6))
    x, z = torch.randn(3, 4, 8), torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 3, 5])
    keep = tr.padding_mask(lengths)  # (B, 1, 1, S)
    ours = m(x, z, attn_mask=keep)
    paper_mask = keep[:, 0, 0, :, None].expand(3, 7, 4)  # (B, l_z, l_x)
    ref = tr.mh_attention(x.mT, z.mT, _heads_from_efficient(m), m.proj.weight, m.proj.bias, paper_mask).mT
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="context"):
        m(x)


def _reference_gpt_logits(model: tr.GPT, idx: torch.Tensor) -> torch.Tensor:
    """Algorithm 10 built from the references, with the efficient model's weights (column convention)."""
    cfg = model.cfg
    l = idx.shape[1]
    x = (model.tok_emb.weight[idx] + model.pos_emb.weight[:l]).mT  # (B, d_e, l): e_t = W_e[:, x_t] + W_p[:, t]
    mask = tr.unidirectional_mask(l)

    def ln(t, mod):
        return tr.layer_norm(t.mT, mod.weight, mod.bias if mod.bias is not None else torch.zeros_like(mod.weight)).mT

    for blk in model.blocks:
        a = blk.attn
        x = x + tr.mh_attention(ln(x, blk.ln1), ln(x, blk.ln1), _heads_from_efficient(a), a.proj.weight,
                                a.proj.bias, mask)
        hid = F.gelu(blk.mlp.fc.weight @ ln(x, blk.ln2) + blk.mlp.fc.bias[:, None])
        x = x + blk.mlp.proj.weight @ hid + blk.mlp.proj.bias[:, None]
    x = ln(x, model.ln_f)
    return (model.lm_head.weight @ x).mT  # (B, l, V)


def test_gpt_matches_paper_dtransformer():
    torch.manual_seed(6)
    model = tr.GPT(tr.GPTConfig(vocab_size=11, context=8, n_layer=2, n_head=2, d_model=8, dropout=0.0,
                                bias=True)).eval()
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.3)
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(model(idx), _reference_gpt_logits(model, idx))


def test_gpt_is_causal():
    torch.manual_seed(7)
    model = tr.GPT(tr.GPTConfig(vocab_size=13, context=10, n_layer=2, n_head=2, d_model=8, dropout=0.0)).eval()
    idx = torch.randint(0, 13, (1, 10))
    base = model(idx)
    for t in range(10):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % 13
        out = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)  # the past never moves
        assert not torch.allclose(out[:, t], base[:, t])  # the changed position itself does


def test_gpt_loss_at_init_and_shapes():
    torch.manual_seed(8)
    cfg = tr.GPTConfig(vocab_size=50, context=16, n_layer=2, n_head=4, d_model=32, dropout=0.0)
    model = tr.GPT(cfg)
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 50)
    assert abs(loss.item() - math.log(50)) < 0.1  # small init: close to the uniform distribution
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 50).float(), targets.reshape(-1)))  # these targets
    for p in model.parameters():                   # a model far from uniform: the loss must follow the targets
        torch.nn.init.normal_(p, 0.0, 0.5)
    logits, loss = model(idx, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 50).float(), targets.reshape(-1)))
    assert not torch.isclose(loss, model(idx, targets.roll(1, dims=1))[1])
    assert model.lm_head.weight is model.tok_emb.weight
    maps = model.attention_maps(idx)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 16, 16)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(3, 4, 16))
    with pytest.raises(ValueError, match="17"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_attention_maps_of_every_layer_match_the_forward_pass():
    torch.manual_seed(8)
    model = tr.GPT(tr.GPTConfig(vocab_size=30, context=9, n_layer=3, n_head=2, d_model=8, dropout=0.0)).eval()
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.4)
    idx = torch.randint(0, 30, (2, 9))
    inputs = []  # what each block really receives in model(idx)
    hooks = [blk.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for blk in model.blocks]
    model(idx)
    for h in hooks:
        h.remove()
    maps = model.attention_maps(idx)
    assert len(maps) == len(inputs) == 3
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    for k, (blk, x, w) in enumerate(zip(model.blocks, inputs, maps)):
        q, key, _ = blk.attn.qkv(blk.ln1(x)).split(8, dim=-1)
        q, key = q.view(2, 9, 2, 4).transpose(1, 2), key.view(2, 9, 2, 4).transpose(1, 2)  # (B, H, T, hd)
        ref = torch.softmax((q @ key.mT / 2.0).masked_fill(~causal, float("-inf")), dim=-1)
        torch.testing.assert_close(w, ref, msg=f"layer {k}")


def test_generate_is_deterministic_given_a_generator():
    torch.manual_seed(9)
    model = tr.GPT(tr.GPTConfig(vocab_size=20, context=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)).eval()
    start = torch.zeros(2, 1, dtype=torch.long)
    a = model.generate(start, 12, temperature=0.8, generator=torch.Generator().manual_seed(1))
    b = model.generate(start, 12, temperature=0.8, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 13) and torch.equal(a, b)  # runs past the context of 8: crops correctly
    with pytest.raises(ValueError, match="0"):
        model.generate(start, 3, temperature=0.0)


def _sharp_gpt(seed: int) -> tr.GPT:
    torch.manual_seed(seed)
    model = tr.GPT(tr.GPTConfig(vocab_size=20, context=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)).eval()
    for p in model.parameters():  # large weights: well-separated logits
        nn.init.normal_(p, 0, 0.5)
    return model


def test_generate_conditions_on_the_last_context_tokens():
    model = _sharp_gpt(11)
    prompt = torch.randint(0, 20, (3, 12), generator=torch.Generator().manual_seed(0))  # longer than context 8
    out = model.generate(prompt, 5, top_k=1)
    assert torch.equal(out[:, :12], prompt)
    idx = prompt
    for _ in range(5):  # greedy decoding by hand from the last 8 tokens
        idx = torch.cat([idx, model(idx[:, -8:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)
    # tokens that fell out of the window cannot matter, with sampling too
    other = prompt.clone()
    other[:, :4] = (other[:, :4] + 7) % 20
    a = model.generate(prompt, 6, generator=torch.Generator().manual_seed(3))
    b = model.generate(other, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[:, 12:], b[:, 12:])


def test_generate_top_k():
    model = _sharp_gpt(12)
    prompt = torch.randint(0, 20, (1, 5), generator=torch.Generator().manual_seed(1)).repeat(400, 1)
    logits = model(prompt[:1])[0, -1]
    greedy = model.generate(prompt, 1, top_k=1, temperature=5.0, generator=torch.Generator().manual_seed(4))
    assert (greedy[:, -1] == logits.argmax()).all()  # top_k=1 is argmax, whatever the temperature
    drawn = model.generate(prompt, 1, top_k=3, temperature=5.0, generator=torch.Generator().manual_seed(4))[:, -1]
    top3 = set(logits.topk(3).indices.tolist())
    assert set(drawn.tolist()) == top3  # only the 3 best tokens, and (at this temperature) all of them
    free = model.generate(prompt, 1, temperature=5.0, generator=torch.Generator().manual_seed(4))[:, -1]
    assert not set(free.tolist()) <= top3  # without top_k the tail is sampled too: the restriction did something


def test_encoder_ignores_padding_and_causal_flag():
    torch.manual_seed(10)
    enc = tr.Encoder(16, 2, 4).eval()
    x = torch.randn(2, 6, 16)
    keep = tr.padding_mask(torch.tensor([4, 6]))
    y1 = enc(x, keep)
    x2 = x.clone()
    x2[0, 4:] = 100.0  # change sequence 0's padding
    y2 = enc(x2, keep)
    torch.testing.assert_close(y1[0, :4], y2[0, :4])
    causal = tr.Encoder(16, 1, 4, causal=True).eval()
    x3 = x.clone()
    x3[:, -1] += 1.0
    torch.testing.assert_close(causal(x)[:, :-1], causal(x3)[:, :-1])


def test_causal_attention_with_a_padding_mask():
    """causal=True and attn_mask together: a query sees the past and only the real (unpadded) keys."""
    torch.manual_seed(13)
    m = _wide_init(tr.MultiHeadAttention(12, 3))
    x = torch.randn(2, 6, 12)
    keep = tr.padding_mask(torch.tensor([6, 4]))  # (B, 1, 1, S): sequence 1 has two padded positions
    paper_mask = tr.unidirectional_mask(6) & keep[:, 0, 0, :, None]  # (B, l_z, l_x): past AND real
    ref = tr.mh_attention(x.mT, x.mT, _heads_from_efficient(m), m.proj.weight, m.proj.bias, paper_mask).mT
    fused = m(x, causal=True, attn_mask=keep)
    explicit, w = m(x, causal=True, attn_mask=keep, need_weights=True)
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(explicit, ref)
    assert (w.triu(1) == 0).all() and (w[1, ..., 4:] == 0).all()
    for t in range(5):  # changing token t+1.. leaves outputs 0..t unchanged
        x2 = x.clone()
        x2[:, t + 1:] += torch.randn(2, 5 - t, 12)
        torch.testing.assert_close(m(x2, causal=True, attn_mask=keep)[:, : t + 1], fused[:, : t + 1])
    enc = tr.Encoder(12, 2, 3, causal=True).eval()  # CLIP's text encoder on a padded batch
    x3 = x.clone()
    x3[:, 3] += 1.0
    torch.testing.assert_close(enc(x3, keep)[:, :3], enc(x, keep)[:, :3])


def test_a_float_attention_mask_is_refused():
    """A 0/1 float mask would be *added* to the scores by SDPA, silently attending everywhere."""
    m = tr.MultiHeadAttention(12, 3)
    keep = tr.padding_mask(torch.tensor([6, 4]))
    with pytest.raises(ValueError, match="boolean.*float32"):
        m(torch.randn(2, 6, 12), attn_mask=keep.float())


def test_block_cross_attention_ignores_masked_memory():
    torch.manual_seed(14)
    blk = tr.Block(8, 2, cross=True, d_context=6).eval()
    x, memory = torch.randn(3, 4, 8), torch.randn(3, 7, 6)
    keep = tr.padding_mask(torch.tensor([7, 3, 5]))
    out = blk(x, memory, causal=True, context_mask=keep)
    changed = memory.clone()
    changed[1, 3:] = 50.0  # sequence 1's padding
    changed[2, 5:] = -50.0  # sequence 2's padding
    torch.testing.assert_close(blk(x, changed, causal=True, context_mask=keep), out)
    changed[1, 0] += 1.0  # a real memory token does matter
    assert not torch.allclose(blk(x, changed, causal=True, context_mask=keep)[1], out[1])


def test_nanogpt_size_and_flops():
    model = tr.GPT(tr.GPTConfig())  # nanoGPT shakespeare_char reports 10.65M parameters
    n = tr.count_params(model, exclude_positional=True)
    assert round(n / 1e6, 2) == 10.65
    assert tr.flops_per_token(n, 6, 384, 256) == pytest.approx(6 * n + 12 * 6 * 384 * 256)
    with pytest.raises(ValueError, match="n_layer"):
        tr.flops_per_token(n, 0, 384, 256)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="7"):
        tr.MultiHeadAttention(10, 7)
    with pytest.raises(ValueError, match="n_head"):
        tr.GPTConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="tanh"):
        tr.MLP(4, 8, activation="tanh")
    with pytest.raises(ValueError, match="0"):
        tr.padding_mask(torch.tensor([3, 0]))


def _head(d_x: int = 4, d_attn: int = 2, d_mid: int = 2):
    """One head's (w_q, b_q, w_k, b_k, w_v, b_v) for d_x = d_z features."""
    return (torch.ones(d_attn, d_x), torch.zeros(d_attn), torch.ones(d_attn, d_x), torch.zeros(d_attn),
            torch.ones(d_mid, d_x), torch.zeros(d_mid))


def _seq():
    return torch.ones(4, 3)   # (d_x, l_x): 4 features, 3 tokens (made in the test's default dtype)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda: tr.mh_attention(_seq(), _seq(), [], torch.ones(4, 2), torch.zeros(4)),
                 r"need at least one head, got 0", id="mh-attention-no-head"),
    pytest.param(lambda: tr.mh_attention(_seq(), _seq(), [_head(), _head()], torch.ones(4, 3), torch.zeros(4)),
                 r"W_o has shape \(4, 3\) but the stacked heads give 4 rows", id="mh-attention-wrong-w-o"),
    pytest.param(lambda: tr.layer_norm(torch.ones(2, 5), torch.ones(4), torch.zeros(4)),
                 r"e \(2, 5\), gamma \(4,\), beta \(4,\) do not fit", id="layer-norm-wrong-gamma"),
    pytest.param(lambda: tr.MultiHeadAttention(8, 2, dropout=1.0), r"dropout must be in \[0, 1\), got 1.0",
                 id="mha-dropout-one"),
    pytest.param(lambda: tr.MultiHeadAttention(8, 2)(torch.ones(1, 3, 8), torch.ones(1, 2, 8)),
                 r"self-attention takes no context", id="self-attention-given-context"),
    pytest.param(lambda: tr.padding_mask(torch.tensor([3, 5]), max_len=4),
                 r"max_len=4 is shorter than the longest sequence \(5\)", id="padding-mask-max-len-too-short"),
    pytest.param(lambda: tr.Encoder(8, 0, 2), r"n_layer must be >= 1, got 0", id="encoder-no-layer"),
    pytest.param(lambda: tr.GPTConfig(vocab_size=0), r"vocab_size must be >= 1, got 0", id="gpt-config-no-vocabulary"),
    pytest.param(lambda: tr.GPTConfig(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0",
                 id="gpt-config-dropout-one"),
    pytest.param(lambda: tr.GPT(tr.GPTConfig(vocab_size=5, context=4, n_layer=1, n_head=1, d_model=4, dropout=0.0))
                 .generate(torch.zeros(1, 1, dtype=torch.long), -1), r"n_new must be >= 0, got -1",
                 id="generate-negative-count"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
