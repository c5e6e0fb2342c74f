"""Tests of helpers.ff, the Forward-Forward algorithm of chapter 06."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from helpers import ff


def _net(seed: int = 0, sizes=(20, 16, 12, 8)) -> ff.FFNet:
    torch.manual_seed(seed)
    return ff.FFNet(list(sizes))


def _batch(seed: int = 0, b: int = 6, d: int = 20):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, d, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    return x, y


# ----------------------------------------------------------------- no gradient flows between layers

def test_loss_of_layer_k_has_no_gradient_wrt_lower_layers():
    net = _net()
    x, y = _batch()
    acts = net(ff.embed_label(x, y))
    for k in range(1, len(net.layers)):
        loss = ff.goodness(acts[k]).sum()
        lower = [p for layer in net.layers[:k] for p in layer.parameters()]
        grads = torch.autograd.grad(loss, lower + list(net.layers[k].parameters()), allow_unused=True)
        for g in grads[:len(lower)]:
            assert g is None or torch.count_nonzero(g) == 0
        # ...while the layer's own parameters do get a gradient (the test can fail)
        assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads[len(lower):])


def test_inputs_to_each_layer_are_detached():
    net = _net()
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for layer in net.layers]
    x, y = _batch()
    net(ff.embed_label(x, y).requires_grad_())
    for h in hooks:
        h.remove()
    assert len(seen) == len(net.layers)
    for inp in seen:
        assert not inp.requires_grad and inp.grad_fn is None


def test_train_step_touches_each_layer_only_through_its_own_loss():
    # Freeze every optimiser but the one of layer 2: only layer 2's weights may change, and layer 2's
    # update must equal one made from its own loss alone on the same inputs.
    net = _net()
    x, y = _batch()
    pos, neg = ff.embed_label(x, y), ff.embed_label(x, ff.sample_negative_labels(y))
    before = [p.detach().clone() for p in net.parameters()]
    opts = [torch.optim.SGD(layer.parameters(), lr=0.0 if k != 2 else 0.1) for k, layer in enumerate(net.layers)]
    ff.train_step(net, opts, pos, neg)
    changed = [not torch.equal(a, p) for a, p in zip(before, net.parameters())]
    # parameters are (w0, b0, w1, b1, w2, b2): only layer 2 moved
    assert changed == [False, False, False, False, True, True]

    ref = _net()
    with torch.no_grad():
        h = torch.cat([pos, neg])
        for layer in ref.layers[:2]:
            h = layer(h)
    layer = ref.layers[2]
    g = ff.goodness(layer(h))
    ff.ff_loss(g[:len(x)], g[len(x):], layer.theta, layer.tau).backward()
    with torch.no_grad():
        expected = layer.linear.weight - 0.1 * layer.linear.weight.grad
    torch.testing.assert_close(net.layers[2].linear.weight, expected)

    # the gradient left in layer 0 is that of layer 0's own loss: nothing leaked down from layers 1, 2
    ref0 = _net().layers[0]
    g0 = ff.goodness(ref0(torch.cat([pos, neg])))
    ff.ff_loss(g0[:len(x)], g0[len(x):], ref0.theta, ref0.tau).backward()
    torch.testing.assert_close(net.layers[0].linear.weight.grad, ref0.linear.weight.grad)


# ----------------------------------------------------------------- negatives and labels

def test_uniform_negatives_never_carry_the_true_label():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (50_000,), generator=g)
    neg = ff.sample_negative_labels(y, generator=g)
    assert (neg != y).all()
    assert neg.min() >= 0 and neg.max() <= 9
    # every wrong label appears, about equally often (9 choices)
    counts = torch.bincount((neg - y) % 10, minlength=10)
    assert counts[0] == 0 and (counts[1:] > 50_000 / 9 * 0.9).all()


def test_hard_negatives_never_carry_the_true_label_and_follow_the_scores():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20_000,), generator=g)
    scores = torch.zeros(20_000, 10)
    scores[torch.arange(20_000), y] = 100.0  # the true label is by far the "best" — still never drawn
    scores[:, 3] += 2.0
    neg = ff.sample_negative_labels(y, scores=scores, generator=g)
    assert (neg != y).all()
    # label 3 has e^2 ≈ 7.4 times the weight of any other wrong label
    mask = y != 3
    frac3 = (neg[mask] == 3).float().mean().item()
    expected = torch.e ** 2 / (torch.e ** 2 + 8)
    assert abs(frac3 - expected) < 0.02


def test_negative_sampling_rejects_bad_input():
    with pytest.raises(ValueError, match="10"):
        ff.sample_negative_labels(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="num_classes"):
        ff.sample_negative_labels(torch.tensor([0]), num_classes=1)
    with pytest.raises(ValueError, match="scores"):
        ff.sample_negative_labels(torch.tensor([0, 1]), scores=torch.zeros(3, 10))


def test_embed_label_writes_one_hot_in_the_first_pixels_only():
    x = torch.rand(4, 784)
    x0 = x.clone()
    y = torch.tensor([0, 3, 9, 3])
    out = ff.embed_label(x, y, strength=2.0)
    torch.testing.assert_close(out[:, :10], 2.0 * F.one_hot(y, 10).float())
    torch.testing.assert_close(out[:, 10:], x[:, 10:])
    assert not torch.equal(out, x) and torch.equal(x, x0)  # the input is not modified in place
    neutral = ff.embed_label(x, None)
    torch.testing.assert_close(neutral[:, :10], torch.full((4, 10), 0.1))
    with pytest.raises(ValueError, match="12"):
        ff.embed_label(x, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(ValueError, match=r"\(4, 28, 28\)"):
        ff.embed_label(torch.rand(4, 28, 28), y)


# ----------------------------------------------------------------- the layer and the loss

def test_length_normalisation_makes_the_layer_scale_invariant():
    torch.manual_seed(0)
    layer = ff.FFLayer(30, 7)
    x = torch.randn(5, 30)
    for c in (1e-3, 0.5, 3.0, 1e4):
        torch.testing.assert_close(layer(c * x), layer(x), rtol=1e-4, atol=1e-5)
    # the normalised rows have unit root-mean-square
    torch.testing.assert_close(ff.normalize_length(x).pow(2).mean(1), torch.ones(5))
    # ...whereas the layer without normalisation is not invariant (the test can fail)
    assert not torch.allclose(torch.relu(layer.linear(3 * x)), torch.relu(layer.linear(x)))


def test_goodness_and_loss_formulas():
    y = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, 0.0]])
    torch.testing.assert_close(ff.goodness(y), torch.tensor([14.0, 0.25]))
    g_pos, g_neg, theta, tau = torch.tensor([14.0, 2.0]), torch.tensor([1.0, 5.0, 0.0]), 3.0, 2.0
    p_pos = torch.sigmoid((g_pos - theta) / tau)
    p_neg = torch.sigmoid((g_neg - theta) / tau)
    expected = -torch.log(p_pos).mean() - torch.log(1 - p_neg).mean()
    torch.testing.assert_close(ff.ff_loss(g_pos, g_neg, theta, tau), expected)
    # the gradient is local: dL/dG+ = -(1 - p)/(tau * B+)
    g = g_pos.clone().requires_grad_()
    ff.ff_loss(g, g_neg, theta, tau).backward()
    torch.testing.assert_close(g.grad, -(1 - p_pos) / (tau * 2))
    with pytest.raises(ValueError, match="-1"):
        ff.ff_loss(g_pos, g_neg, theta, tau=-1)
    # goodness is summed in float32 even for bf16 activities
    assert ff.goodness(torch.ones(2, 2000, dtype=torch.bfloat16) * 1.001).dtype == torch.float32


def test_threshold_and_temperature_scale_with_the_layer_width():
    net = ff.FFNet([20, 16, 8], theta_per_unit=1.5, tau_per_unit=0.5)
    assert [layer.theta for layer in net.layers] == [24.0, 12.0]
    assert [layer.tau for layer in net.layers] == [8.0, 4.0]
    with pytest.raises(ValueError, match="theta_per_unit must be > 0, got -1"):   # FFNet's own check, not FFLayer's
        ff.FFNet([20, 16], theta_per_unit=-1)
    with pytest.raises(ValueError, match="-2"):
        ff.FFLayer(20, 16, tau=-2)


def test_initial_goodness_sits_at_the_threshold():
    # He initialisation and a unit-RMS input: E[relu(z)^2] = 1 per unit, so E[G] = width = theta
    torch.manual_seed(0)
    layer = ff.FFLayer(784, 2000)
    g = ff.goodness(layer(torch.rand(256, 784)))
    assert abs(g.mean().item() / layer.theta - 1) < 0.1


# ----------------------------------------------------------------- prediction

def test_label_goodness_matches_one_pass_per_label():
    net = _net()
    x, _ = _batch(b=5)
    table = ff.label_goodness(net, x, skip_layers=1)  # (5, 10)
    assert table.shape == (5, 10)
    for c in range(10):
        acts = net(ff.embed_label(x, torch.full((5,), c)))
        expected = sum(ff.goodness(a) for a in acts[1:])
        torch.testing.assert_close(table[:, c], expected)
    logits = ff.label_goodness(net, x, skip_layers=1, logits=True)
    acts = net(ff.embed_label(x, torch.full((5,), 7)))  # layers 1 and 2 differ in width: theta, tau differ
    by_hand = sum((ff.goodness(a) - layer.theta) / layer.tau for a, layer in zip(acts[1:], net.layers[1:]))
    torch.testing.assert_close(logits[:, 7], by_hand)


def test_predict_picks_the_label_with_the_highest_accumulated_goodness():
    # one layer whose units respond only to label pixel 4: label 4 must win for every image
    net = ff.FFNet([20, 8])
    x, _ = _batch(b=7)
    with torch.no_grad():
        net.layers[0].linear.weight.zero_()
        net.layers[0].linear.bias.zero_()
        net.layers[0].linear.weight[:, 4] = 5.0
    assert (ff.predict(net, x, skip_layers=0, batch_size=3) == 4).all()
    # in general predict is the argmax of the accumulated-goodness table
    deep = _net()
    torch.testing.assert_close(ff.predict(deep, x, batch_size=3), ff.label_goodness(deep, x).argmax(1))
    with pytest.raises(ValueError, match="3"):
        ff.label_goodness(deep, x, skip_layers=3)


def test_label_goodness_enters_the_autocast_context_once_per_layer():
    net = _net()
    x, _ = _batch(b=5)
    entered = []

    @contextlib.contextmanager
    def counting():
        entered.append(1)
        yield

    table = ff.label_goodness(net, x, autocast=counting)
    assert len(entered) == len(net.layers)
    torch.testing.assert_close(table, ff.label_goodness(net, x))   # a no-op context: the same numbers
    bf16 = ff.label_goodness(net, x, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, table)   # the layers really ran in bf16
    torch.testing.assert_close(bf16, table, rtol=0.05, atol=0.5)


# ----------------------------------------------------------------- training

def test_training_is_deterministic_under_a_seed_and_separates_pos_from_neg():
    def run(seed: int):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        net = ff.FFNet([20, 32, 32])
        opts = ff.make_optimizers(net, lr=0.03)
        x = torch.rand(64, 20, generator=g)
        y = torch.randint(0, 10, (64,), generator=g)
        x[:, 10:] = 0.2 * x[:, 10:] + F.one_hot(y, 10).float().repeat(1, 1)  # the image "shows" its label
        history = []
        for _ in range(60):
            neg = ff.sample_negative_labels(y, generator=g)
            history.append(ff.train_step(net, opts, ff.embed_label(x, y), ff.embed_label(x, neg), peer=0.03))
        return net, torch.stack(history), x, y

    net_a, hist_a, x, y = run(0)
    net_b, hist_b, _, _ = run(0)
    torch.testing.assert_close(hist_a, hist_b, rtol=0, atol=0)
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(pa, pb)
    assert hist_a.shape == (60, 2)
    assert (hist_a[-5:].mean(0) < 0.5 * hist_a[:5].mean(0)).all()  # every layer learned
    assert (ff.predict(net_a, x) == y).float().mean() > 0.9


def test_train_step_rejects_bad_input():
    net = _net()
    x, y = _batch()
    opts = ff.make_optimizers(net, lr=1e-3)
    with pytest.raises(ValueError, match="3"):
        ff.train_step(net, opts[:1], x, x)
    with pytest.raises(ValueError, match="-0.5"):
        ff.train_step(net, opts, x, x, peer=-0.5)
    with pytest.raises(ValueError, match="0"):
        ff.make_optimizers(net, lr=0)


def _train_step(**kwargs):
    net = _net()
    x, _ = _batch()
    return ff.train_step(net, ff.make_optimizers(net, lr=1e-3), x, x, **kwargs)


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda: ff.normalize_length(torch.ones(2, 3), eps=0.0), r"eps must be > 0, got 0.0",
                 id="normalize-eps-zero"),
    pytest.param(lambda: ff.ff_loss(torch.ones(2, 1), torch.ones(3), theta=1.0),
                 r"1-D, got shapes \(2, 1\) and \(3,\)", id="loss-2d-goodness"),
    pytest.param(lambda: ff.embed_label(torch.zeros(4, 5), None, num_classes=11), r"\[2, D=5\], got 11",
                 id="embed-more-classes-than-pixels"),
    pytest.param(lambda: ff.embed_label(torch.zeros(4, 20), torch.tensor([0, 1, 2])), r"\(4,\), got \(3,\)",
                 id="embed-labels-wrong-batch"),
    pytest.param(lambda: ff.sample_negative_labels(torch.zeros(2, 2, dtype=torch.long)), r"1-D, got shape \(2, 2\)",
                 id="negatives-2d-labels"),
    pytest.param(lambda: ff.FFLayer(0, 4), r"got d_in=0, d_out=4", id="layer-zero-input"),
    pytest.param(lambda: ff.FFLayer(4, 4, theta=-1.0), r"theta must be > 0, got -1.0", id="layer-negative-theta"),
    pytest.param(lambda: ff.FFNet([20]), r"at least one layer, got \[20\]", id="net-no-layer"),
    # FFLayer would reject tau = 0 too: the match names the FFNet argument
    pytest.param(lambda: ff.FFNet([20, 8], tau_per_unit=0.0), r"tau_per_unit must be > 0, got 0.0",
                 id="net-zero-tau-per-unit"),
    # AdamW would reject it too, with its own message
    pytest.param(lambda: ff.make_optimizers(_net(), lr=1e-3, weight_decay=-1.0), r"weight_decay must be >= 0, got -1.0",
                 id="optimizers-negative-decay"),
    pytest.param(lambda: _train_step(peer_momentum=1.0), r"peer_momentum must be in \[0, 1\), got 1.0",
                 id="train-step-momentum-one"),
    # range() would reject a zero step too, with its own message
    pytest.param(lambda: ff.predict(_net(), _batch()[0], batch_size=0), r"batch_size must be >= 1, got 0",
                 id="predict-zero-batch"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_train_step_uses_the_given_objective_and_stores_the_running_mean():
    """Chapter 06 passes a compiled ff.layer_objective; any equivalent objective must give the same step."""
    torch.manual_seed(0)
    net_a = ff.FFNet([20, 16, 16])
    net_b = ff.FFNet([20, 16, 16])
    net_b.load_state_dict(net_a.state_dict())
    x_pos, x_neg = torch.rand(8, 20), torch.rand(8, 20)
    calls = []

    def wrapped(layer, h, b, peer, peer_momentum):
        calls.append((h.shape, b))
        return ff.layer_objective(layer, h, b, peer, peer_momentum)

    loss_a = ff.train_step(net_a, ff.make_optimizers(net_a, lr=1e-2), x_pos, x_neg, peer=0.03)
    loss_b = ff.train_step(net_b, ff.make_optimizers(net_b, lr=1e-2), x_pos, x_neg, peer=0.03, objective=wrapped)
    assert calls == [((16, 20), 8), ((16, 16), 8)]  # every layer once, on [positives; negatives]
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)  # weights and running means
    assert not torch.equal(net_a.layers[0].running_mean, torch.full((16,), 0.5))  # peer normalisation moved it
    loss, total, y, m = ff.layer_objective(net_a.layers[0], torch.cat([x_pos, x_neg]), 8, peer=0.0)
    assert m is None and torch.equal(loss, total) and y.shape == (16, 16)


def test_peer_normalisation_penalty_and_its_straight_through_gradient():
    """Chapter 06: m = momentum * running_mean + (1 - momentum) * mean activity on the positives, and
    total = loss + peer * mean_j (mean(m) - m_j)^2, whose gradient reaches dead units through a slope-1 ReLU."""
    torch.manual_seed(1)
    layer = ff.FFLayer(20, 6)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.1, 0.9, 0.4, 0.2, 0.7, 0.5]))
        layer.linear.bias[2] = -100.0  # unit 2 is dead on every input: relu gives it no gradient of its own
    b, peer, momentum = 5, 0.3, 0.8
    h = torch.rand(9, 20, generator=torch.Generator().manual_seed(2))  # 5 positives, 4 negatives
    loss, total, y, m = ff.layer_objective(layer, h, b, peer=peer, peer_momentum=momentum)
    act = torch.relu(layer.linear(ff.normalize_length(h))).detach()[:b].mean(0)  # (6,) mean activity on positives
    assert act[2] == 0
    m_ref = momentum * layer.running_mean + (1 - momentum) * act
    torch.testing.assert_close(m.detach(), m_ref)
    penalty = (m_ref.mean() - m_ref).pow(2).mean()
    assert penalty > 0.01
    torch.testing.assert_close((total - loss).detach(), peer * penalty)
    # d(peer * penalty)/d bias_k = peer * (2 / d) (m_k - mean m) * (1 - momentum) * d act_k / d z, and the
    # straight-through ReLU makes that last factor 1 for every unit, the dead one included
    (grad,) = torch.autograd.grad(total - loss, layer.linear.bias)
    expected = peer * 2 / 6 * (m_ref - m_ref.mean()) * (1 - momentum)
    torch.testing.assert_close(grad, expected)
    assert grad[2] < 0  # below the layer average, so gradient descent raises the dead unit's bias
