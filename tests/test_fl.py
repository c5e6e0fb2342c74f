"""helpers.fl (chapter 01): partitions, parallel local SGD, body-only aggregation."""

import copy
import numpy as np
import pytest
import torch

from helpers import fl

C = 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add spin-waiting (and the suite runs two workers on two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def labels(per_class: int, shuffle_seed: int = 0) -> torch.Tensor:
    y = torch.arange(C).repeat_interleave(per_class)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(shuffle_seed))]


def assert_exact_cover(parts, n):
    everything = torch.cat(list(parts)).sort().values
    assert torch.equal(everything, torch.arange(n)), "every sample must belong to exactly one client"


# ------------------------------------------------------------------------------------------ shards


@pytest.mark.parametrize("k, s", [(100, 2), (100, 5), (50, 10), (20, 1), (30, 3)])
def test_shards_cover_every_sample_once_with_s_classes_each(k, s):
    y_train, y_test = labels(500), labels(100, 1)
    part = fl.shard_partition(y_train, y_test, k, s, seed=3)
    assert part.num_clients == k and part.num_classes == C
    assert_exact_cover(part.train, len(y_train))
    assert_exact_cover(part.test, len(y_test))
    train_counts, test_counts = part.counts(y_train), part.counts(y_test, "test")   # (K, C)
    shards_per_class = k * s // C
    assert ((train_counts > 0).sum(1) == s).all(), "every client holds exactly s classes"
    # balanced classes: a held class contributes one shard of 500 / shards_per_class samples (± rounding)
    held = train_counts > 0
    assert ((train_counts[held] - 500 / shards_per_class).abs() < 1).all()
    # the test split has the client's own classes, one test shard each
    assert torch.equal(test_counts > 0, held)
    assert ((test_counts[held] - 100 / shards_per_class).abs() < 1).all()
    for k_, cls in enumerate(part.classes):
        assert torch.equal(cls, torch.nonzero(held[k_]).flatten())
    # each class is dealt to exactly shards_per_class clients
    assert (held.sum(0) == shards_per_class).all()


def test_partition_sizes_count_each_clients_samples():
    y_train, y_test = labels(20), labels(4)                         # 200 and 40 samples, 2 shards per class
    part = fl.shard_partition(y_train, y_test, 10, 2, seed=0)
    assert part.sizes().dtype == torch.int64
    assert part.sizes().tolist() == [20] * 10 and part.sizes("test").tolist() == [4] * 10
    uneven = fl.dirichlet_partition(labels(30), labels(6), 5, 0.5, seed=0, min_size=1)
    assert torch.equal(uneven.sizes(), uneven.counts(labels(30)).sum(1))
    assert torch.equal(uneven.sizes("test"), torch.tensor([len(p) for p in uneven.test]))


def test_shards_uneven_class_sizes_still_cover_everything():
    y_train = torch.cat([labels(97), torch.arange(C)[:3]])       # classes of 98 and 97 samples
    y_test = labels(23)
    part = fl.shard_partition(y_train, y_test, 20, 2, seed=0)
    assert_exact_cover(part.train, len(y_train))
    assert_exact_cover(part.test, len(y_test))
    sizes = part.counts(y_train)[part.counts(y_train) > 0]
    assert sizes.max() - sizes.min() <= 1                          # shards differ by at most one sample


def test_shards_original_dealing_may_repeat_a_class():
    y_train, y_test = labels(200), labels(40)
    found_repeat = False
    for seed in range(10):
        part = fl.shard_partition(y_train, y_test, 100, 2, seed=seed, distinct=False)
        assert_exact_cover(part.train, len(y_train))
        n_classes = (part.counts(y_train) > 0).sum(1)
        assert (n_classes <= 2).all() and (n_classes >= 1).all()
        found_repeat |= bool((n_classes == 1).any())
    assert found_repeat, "with 100 clients the FedBABU-style dealing draws a class twice somewhere"


def test_shards_are_deterministic_per_seed():
    y_train, y_test = labels(100), labels(20)
    a = fl.shard_partition(y_train, y_test, 20, 2, seed=7)
    b = fl.shard_partition(y_train, y_test, 20, 2, seed=7)
    c = fl.shard_partition(y_train, y_test, 20, 2, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test))
    assert not all(torch.equal(x, y) for x, y in zip(a.train, c.train))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_clients=10, classes_per_client=11), "11"),            # more classes than exist
    (dict(num_clients=10, classes_per_client=0), "0"),
    (dict(num_clients=7, classes_per_client=2), "14"),              # 7*2 not a multiple of 10
    (dict(num_clients=0, classes_per_client=2), "0"),
    (dict(num_clients=100, classes_per_client=10), "too few samples"),  # 100 shards of 20 test samples
])
def test_shards_reject_impossible_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fl.shard_partition(labels(200), labels(20), **kwargs)


def test_partitions_reject_bad_labels():
    with pytest.raises(ValueError, match="1-D"):
        fl.shard_partition(torch.zeros(3, 3, dtype=torch.long), labels(2), 10, 1)
    with pytest.raises(ValueError, match="integer"):
        fl.dirichlet_partition(labels(5).float(), labels(2), 2, 1.0)
    with pytest.raises(ValueError, match=r"missing in train: \[9\]"):
        fl.shard_partition(labels(10)[labels(10) != 9], labels(2), 10, 1)


# ------------------------------------------------------------------------------------------ Dirichlet


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dirichlet_covers_every_sample_once_and_test_follows_train(alpha):
    y_train, y_test = labels(300), labels(60, 1)
    part = fl.dirichlet_partition(y_train, y_test, 15, alpha, seed=1, min_size=5)
    assert_exact_cover(part.train, len(y_train))
    assert_exact_cover(part.test, len(y_test))
    train_counts, test_counts = part.counts(y_train).float(), part.counts(y_test, "test").float()
    assert (train_counts.sum(1) >= 5).all()
    # same proportions per class: test count ~ train count * (60 / 300), up to rounding
    assert ((test_counts - train_counts * 60 / 300).abs() <= 1 + 60 / 300 + 1e-6).all()
    for k, cls in enumerate(part.classes):
        assert torch.equal(cls, torch.nonzero(train_counts[k] > 0).flatten())


def test_dirichlet_alpha_controls_heterogeneity():
    y_train, y_test = labels(500), labels(100)
    few = fl.dirichlet_partition(y_train, y_test, 20, 0.05, seed=0, min_size=1).counts(y_train)
    many = fl.dirichlet_partition(y_train, y_test, 20, 100.0, seed=0, min_size=1).counts(y_train)
    assert (few > 0).sum(1).float().mean() < (many > 0).sum(1).float().mean()
    assert (many > 0).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_clients=5, alpha=0.0), "alpha"),
    (dict(num_clients=5, alpha=-1.0), "-1.0"),
    (dict(num_clients=0, alpha=1.0), "num_clients"),
    (dict(num_clients=50, alpha=1.0, min_size=100), "too few samples"),
    (dict(num_clients=50, alpha=0.01, min_size=19, max_tries=3), "min_size|>= 19"),
])
def test_dirichlet_rejects_impossible_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fl.dirichlet_partition(labels(100), labels(20), **kwargs)


# ------------------------------------------------------------------------------------------ training

N, HW = 240, 16


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, HW, HW), dtype=torch.uint8, generator=g)
    y = torch.arange(N) % C
    torch.manual_seed(0)
    model = fl.ConvNet4(num_classes=C, width=4, image_size=HW)
    return model, images, y


def tf(x):
    return x.float() / 255 - 0.5


def test_model_shapes_and_names():
    model = fl.ConvNet4(num_classes=7, width=8)
    assert model(torch.zeros(5, 3, 32, 32)).shape == (5, 7)
    assert fl.head_names(model) == ["head.weight", "head.bias"]
    assert set(fl.body_names(model)) | set(fl.head_names(model)) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="image_size"):
        fl.ConvNet4(image_size=8)


def test_client_batches_are_per_epoch_permutations():
    parts = [torch.arange(0, 40), torch.arange(100, 140)]
    b = fl.client_batches(parts, epochs=3, batch_size=10, generator=torch.Generator().manual_seed(0))
    assert b.shape == (2, 12, 10)
    for k, p in enumerate(parts):
        for e in range(3):
            assert torch.equal(b[k, 4 * e: 4 * e + 4].flatten().sort().values, p)
    with pytest.raises(ValueError, match=r"\[40, 41\]"):
        fl.client_batches([torch.arange(40), torch.arange(41)], 1, 10)
    with pytest.raises(ValueError, match="batch_size 50"):
        fl.client_batches(parts, 1, 50)


def test_vmapped_local_sgd_matches_the_torch_optimizer_loop(toy):
    """Parity with torch.optim.SGD on nn.Module, client by client (BatchNorm per client, momentum, decay).

    In float64: in float32 the two orders of summation differ by rounding that momentum amplifies over the
    steps (up to 1e-2 for some starting points), which would make a tight float32 check flaky."""
    model, images, y = toy
    model = copy.deepcopy(model).double()
    params = fl.broadcast(fl.params_of(model), 3)
    g = torch.Generator().manual_seed(3)
    params = {n: v + 0.01 * torch.randn(v.shape, generator=g, dtype=v.dtype) for n, v in params.items()}  # apart
    batches = fl.client_batches([torch.arange(i * 60, i * 60 + 60) for i in range(3)], 2, 20,
                                torch.Generator().manual_seed(1))            # (3, 6, 20)
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, transform=lambda x: tf(x).double())
    before = {n: v.clone() for n, v in params.items()}
    for trainable in (list(params), fl.body_names(model)):
        a, loss_a = fl.local_sgd(model, params, images, y, batches, trainable=trainable, **kw)
        assert all(torch.equal(params[n], before[n]) for n in params), "local_sgd changed its input in place"
        b, loss_b = fl.local_sgd_loop(model, params, images, y, batches, trainable=trainable, **kw)
        for n in params:
            torch.testing.assert_close(a[n], b[n], atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)      # the losses are reported in float32
        assert not torch.equal(a["body.0.weight"], params["body.0.weight"]), "training changed nothing"


def test_a_client_does_not_see_the_others_batchnorm_statistics(toy):
    model, images, y = toy
    params = fl.broadcast(fl.params_of(model), 2)
    g = torch.Generator().manual_seed(2)
    first = fl.client_batches([torch.arange(0, 40)], 1, 20, g)
    other1 = fl.client_batches([torch.arange(40, 80)], 1, 20, g)
    other2 = torch.randint(80, N, (1, 2, 20), generator=g)
    kw = dict(trainable=list(params), lr=0.1, momentum=0.9, transform=lambda x: x.float() / 255 * 3)
    a, _ = fl.local_sgd(model, params, images, y, torch.cat([first, other1]), **kw)
    b, _ = fl.local_sgd(model, params, images, y, torch.cat([first, other2]), **kw)
    for n in params:
        torch.testing.assert_close(a[n][0], b[n][0], atol=1e-6, rtol=1e-6)


def test_momentum_state_carries_over_between_calls(toy):
    model, images, y = toy
    params = fl.broadcast(fl.params_of(model), 2)
    batches = fl.client_batches([torch.arange(0, 60), torch.arange(60, 120)], 2, 20, torch.Generator().manual_seed(3))
    kw = dict(trainable=list(params), lr=0.05, momentum=0.9, transform=tf)
    whole, _ = fl.local_sgd(model, params, images, y, batches, **kw)
    state: dict = {}
    half, _ = fl.local_sgd(model, params, images, y, batches[:, :3], state=state, **kw)
    half, _ = fl.local_sgd(model, half, images, y, batches[:, 3:], state=state, **kw)
    for n in params:
        torch.testing.assert_close(whole[n], half[n], atol=1e-6, rtol=1e-6)


def test_raw_uint8_images_without_a_transform_are_refused(toy):
    model, images, y = toy
    params = fl.broadcast(fl.params_of(model), 1)
    batches = fl.client_batches([torch.arange(0, 60)], 1, 20, torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="uint8"):
        fl.local_sgd(model, params, images, y, batches, trainable=list(params), lr=0.05)
    with pytest.raises(ValueError, match="uint8"):
        fl.evaluate(model, params, images, y, torch.arange(0, 60)[None])
    fl.local_sgd(model, params, images.float() / 255, y, batches, trainable=list(params), lr=0.05)  # floats: fine


def test_frozen_head_stays_bit_identical_through_federated_training(toy):
    """FedBABU: several rounds of body-only local SGD + body-only aggregation never touch the head."""
    model, images, y = toy
    global_params = fl.params_of(model)
    head0 = {n: global_params[n].clone() for n in fl.head_names(model)}
    body = fl.body_names(model)
    parts = [torch.arange(i * 40, i * 40 + 40) for i in range(6)]
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        chosen = torch.randperm(6, generator=g)[:3]
        batches = fl.client_batches([parts[i] for i in chosen], 1, 20, g)
        local, _ = fl.local_sgd(model, fl.broadcast(global_params, 3), images, y, batches, trainable=body,
                                lr=0.1, momentum=0.9, weight_decay=5e-4, transform=tf)
        for n in head0:                                             # clients did not move it
            assert torch.equal(local[n], fl.broadcast(head0, 3)[n])
        global_params = fl.aggregate(global_params, local, torch.ones(3), body)
    for n, v in head0.items():
        assert torch.equal(global_params[n], v), f"{n} changed"
    assert not torch.equal(global_params["body.0.weight"], fl.params_of(model)["body.0.weight"])


def test_body_only_aggregation_is_a_weighted_average_and_leaves_the_head(toy):
    model, _, _ = toy
    global_params = fl.params_of(model)
    torch.manual_seed(5)
    local = {n: torch.randn(3, *v.shape) for n, v in global_params.items()}
    weights = torch.tensor([1.0, 2.0, 5.0])
    body = fl.body_names(model)
    out = fl.aggregate(global_params, local, weights, body)
    for n in body:
        expected = (local[n][0] * 1 + local[n][1] * 2 + local[n][2] * 5) / 8
        torch.testing.assert_close(out[n], expected)
    for n in fl.head_names(model):
        assert out[n] is global_params[n], "the head must be the server's tensor, untouched"
    plain = fl.aggregate(global_params, local, torch.ones(3), list(global_params))
    for n in global_params:                                         # FedAvg with equal weights: the mean
        torch.testing.assert_close(plain[n], local[n].mean(0))


@pytest.mark.parametrize("weights, names, message", [
    (torch.ones(2), None, r"\(3,\)"),
    (torch.tensor([1.0, -1.0, 1.0]), None, "-1.0"),
    (torch.zeros(3), None, "positive sum"),
    (torch.tensor([1.0, float("nan"), 1.0]), None, "nan"),   # would make every averaged parameter NaN
    (torch.tensor([1.0, float("inf"), 1.0]), None, "inf"),
    (torch.ones(3), ["head.nope"], "head.nope"),
])
def test_aggregate_rejects_bad_input(toy, weights, names, message):
    model, _, _ = toy
    global_params = fl.params_of(model)
    local = fl.broadcast(global_params, 3)
    with pytest.raises(ValueError, match=message):
        fl.aggregate(global_params, local, weights, names or list(global_params))


def test_evaluate_matches_per_client_forward(toy):
    model, images, y = toy
    params = fl.broadcast(fl.params_of(model), 2)
    params = {n: v + 0.1 * torch.randn_like(v) for n, v in params.items()}
    parts = torch.stack([torch.arange(0, 30), torch.arange(30, 60)])
    preds = [torch.func.functional_call(model, {n: v[k] for n, v in params.items()}, (tf(images[parts[k]]),)).argmax(1)
             for k in range(2)]                                            # each client's own predictions
    labels = y.clone()
    labels[parts[0]] = preds[0]                                            # client 0: all correct
    labels[parts[1]] = torch.where(torch.arange(30) < 15, (preds[1] + 1) % C, preds[1])   # client 1: half
    acc = fl.evaluate(model, params, images, labels, parts, transform=tf)
    assert acc.tolist() == [1.0, 0.5]                                      # per client, in client order
    with pytest.raises(ValueError, match="parts"):
        fl.evaluate(model, params, images, y, parts[:1], transform=tf)


def test_label_counts_counts_and_rejects_labels_outside_the_classes():
    labels = torch.tensor([0, 2, 2, 1, 0, 2])
    counts = fl.label_counts(labels, [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])], 3)
    assert counts.tolist() == [[1, 0, 2], [1, 1, 1]]
    assert fl.label_counts(labels, [torch.tensor([0, 1, 2])], 4).tolist() == [[1, 0, 2, 0]]
    with pytest.raises(ValueError, match="label 5"):
        fl.label_counts(torch.tensor([0, 1, 5, 7]), [torch.arange(4)], 3)  # 5 and 7 would vanish from the counts
    with pytest.raises(ValueError, match="label -1"):
        fl.label_counts(torch.tensor([0, -1]), [torch.arange(2)], 3)


def _local_sgd(toy, k: int = 2, batches=None, **kwargs):
    """local_sgd on ``k`` copies of the toy model with batches for 2 clients (overridable)."""
    model, images, y = toy
    params = fl.broadcast(fl.params_of(model), k)
    batches = torch.zeros(2, 1, 4, dtype=torch.long) if batches is None else batches
    return fl.local_sgd(model, params, images, y, batches, **{"trainable": list(params), "lr": 0.1, "transform": tf,
                                                              **kwargs})


def _aggregate_without_head_bias(toy):
    global_params = fl.params_of(toy[0])
    local = {n: v for n, v in fl.broadcast(global_params, 3).items() if n != "head.bias"}
    return fl.aggregate(global_params, local, torch.ones(3), list(global_params))


@pytest.mark.parametrize("call, message", [
    pytest.param(lambda toy: fl.Partition([torch.arange(2)], [torch.arange(1)], [torch.tensor([0])], 1).sizes("val"),
                 r"'train' or 'test', got 'val'", id="partition-unknown-split"),
    # without the check, every label would be "outside [0, 0)": a different ValueError
    pytest.param(lambda toy: fl.label_counts(torch.tensor([0]), [torch.arange(1)], 0),
                 r"num_classes must be >= 1, got 0", id="label-counts-no-classes"),
    pytest.param(lambda toy: fl.shard_partition(torch.tensor([0, 1, -1, 1]), torch.tensor([0, 1]), 2, 1),
                 r"negative class id -1", id="shards-negative-label"),
    # unreachable through shard_partition (it checks classes_per_client <= classes); called directly
    pytest.param(lambda toy: fl._deal_classes(3, 2, 1, np.random.default_rng(0), True, max_sweeps=3),
                 r"could not deal 2 distinct classes to each of 3 clients from 1 classes", id="deal-impossible"),
    # without the check, the empty retry loop would raise its own "no Dir(...) draw in 0 tries"
    pytest.param(lambda toy: fl.dirichlet_partition(labels(10), labels(2), 5, 1.0, max_tries=0),
                 r"max_tries must be >= 1, got 0", id="dirichlet-no-tries"),
    pytest.param(lambda toy: fl.head_names(toy[0], prefix="fc."), r"no parameter starting with 'fc\.'",
                 id="head-names-unknown-prefix"),
    pytest.param(lambda toy: fl.broadcast(fl.params_of(toy[0]), 0), r"k must be >= 1, got 0", id="broadcast-zero"),
    pytest.param(lambda toy: fl.stack([]), r"at least one parameter set", id="stack-empty"),
    pytest.param(_aggregate_without_head_bias, r"client_params lacks \['head\.bias'\]", id="aggregate-missing-name"),
    pytest.param(lambda toy: fl.client_batches([torch.arange(4)], 0, 2), r"got 0 and 2", id="client-batches-no-epoch"),
    # torch.optim.SGD would reject an empty list too, with its own ValueError
    pytest.param(lambda toy: _local_sgd(toy, trainable=[]), r"trainable is empty", id="local-sgd-nothing-trainable"),
    # unpacking a 2-D shape would raise a different ValueError
    pytest.param(lambda toy: _local_sgd(toy, batches=torch.zeros(2, 4, dtype=torch.long)),
                 r"\(K, S, B\), got shape \(2, 4\)", id="local-sgd-2d-batches"),
    # vmap would reject the mismatch too, with its own ValueError
    pytest.param(lambda toy: _local_sgd(toy, k=3), r"params\['body\.0\.weight'\] has 3 clients, batches has 2",
                 id="local-sgd-client-count-mismatch"),
    # torch.optim.SGD would reject it too, with its own ValueError
    pytest.param(lambda toy: _local_sgd(toy, lr=-0.1), r"got -0\.1, 0\.0, 0\.0", id="local-sgd-negative-lr"),
])
def test_invalid_arguments_raise_value_errors_naming_the_value(toy, call, message):
    with pytest.raises(ValueError, match=message):
        call(toy)
