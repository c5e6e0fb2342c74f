import contextlib
import random
import time

import numpy as np
import pytest
import torch

from helpers import runtime


def test_seed_everything_makes_runs_repeatable():
    runtime.seed_everything(7)
    a = torch.randn(5), torch.nn.Linear(3, 3).weight.detach().clone()
    runtime.seed_everything(7)
    b = torch.randn(5), torch.nn.Linear(3, 3).weight.detach().clone()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    runtime.seed_everything(8)
    assert not torch.equal(a[0], torch.randn(5))


def test_seed_everything_seeds_python_and_numpy_too():
    runtime.seed_everything(7)
    a = random.random(), np.random.rand(4).tolist(), np.random.randint(0, 1000, 3).tolist()
    runtime.seed_everything(7)
    b = random.random(), np.random.rand(4).tolist(), np.random.randint(0, 1000, 3).tolist()
    assert a == b
    runtime.seed_everything(8)
    assert random.random() != a[0] and np.random.rand(4).tolist() != a[1]


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3"])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match=repr(seed).strip("'")):
        runtime.seed_everything(seed)


def test_autocast_is_a_no_op_on_cpu():
    ctx = runtime.autocast("cpu")
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_env_report_and_timer(capsys):
    report = runtime.env_report("cpu")
    assert report["torch"] == torch.__version__ and report["peak_gpu_memory_gb"] is None
    assert "CPU" in report["device"] and "torch" in capsys.readouterr().out
    with runtime.Timer() as t:
        time.sleep(0.05)
    assert 0.05 <= t.seconds < 5 and t.minutes == t.seconds / 60   # elapsed time, not a clock reading


def test_maybe_compile_leaves_cpu_models_alone():
    model = torch.nn.Linear(2, 2)
    assert runtime.maybe_compile(model, "cpu") is model


def test_setup_seeds_and_returns_the_device(capsys):
    dev = runtime.setup(3, "cpu")
    a = torch.randn(3)
    assert dev == torch.device("cpu") and "device: CPU" in capsys.readouterr().out
    runtime.setup(3, "cpu")
    assert torch.equal(a, torch.randn(3))
    with pytest.raises(ValueError, match="-5"):
        runtime.setup(-5, "cpu")
