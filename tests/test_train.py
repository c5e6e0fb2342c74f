import random

import numpy as np
import pytest
import torch
from torch import nn

from helpers.loader import GpuLoader, random_crop_flip
from helpers.runtime import seed_everything
from helpers.train import Checkpoint, rng_state, run_dir, set_rng_state


def _setup(seed=0):
    seed_everything(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=40)
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    loader = GpuLoader(x, y, 16, augment=random_crop_flip, seed=9)
    return model, opt, sched, loader


def _train(model, opt, sched, loader, start, stop, ckpt=None):
    """Steps [start, stop) over epochs of 4 batches; returns the per-step losses."""
    losses, step = [], 0
    while step < stop:
        for xb, yb in loader:
            if start <= step < stop:
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                if ckpt is not None:
                    ckpt.step(step + 1)
            step += 1
            if step >= stop:
                break
    return losses


def test_resume_gives_the_identical_next_step_loss(tmp_path):
    model, opt, sched, loader = _setup()
    reference = _train(model, opt, sched, loader, 0, 12)

    # interrupted run: checkpoint at step 8 (an epoch boundary: epochs are 4 batches, so step 8 ends
    # epoch 2), then a "new session". Only such saves resume exactly: the GpuLoader stores its generator
    # alone, so after a mid-epoch save the resumed loader would start a fresh permutation.
    model, opt, sched, loader = _setup()
    ckpt = Checkpoint(tmp_path / "ck.pt", every_steps=8, model=model, opt=opt, sched=sched, loader=loader)
    first = _train(model, opt, sched, loader, 0, 8, ckpt)
    assert first == reference[:8] and ckpt.saves == 1

    model, opt, sched, loader = _setup(seed=999)  # a different process state, as after a disconnect
    torch.rand(17)  # and the global RNG has moved on
    ckpt = Checkpoint(tmp_path / "ck.pt", model=model, opt=opt, sched=sched, loader=loader)
    start = ckpt.resume()
    assert start == 8
    # the loader restarts its epoch from the saved generator state, so replay the epoch boundary:
    # step 8 is the first batch of epoch 3, exactly where the checkpoint was written.
    resumed = _train(model, opt, sched, loader, 0, 4)
    assert resumed == reference[8:12]


def test_save_is_atomic_and_loadable_with_weights_only(tmp_path):
    model = nn.Linear(2, 2)
    ckpt = Checkpoint(tmp_path / "sub" / "ck.pt", model=model)
    ckpt.save(5, history=[1.0, 0.5])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ck.pt"]
    blob = torch.load(tmp_path / "sub" / "ck.pt", weights_only=True)
    assert blob["_step"] == 5 and blob["_extra"] == {"history": [1.0, 0.5]}
    fresh = nn.Linear(2, 2)
    again = Checkpoint(tmp_path / "sub" / "ck.pt", model=fresh)
    assert again.resume() == 5 and again.extra["history"] == [1.0, 0.5]
    assert torch.equal(fresh.weight, model.weight)
    again.clear()
    assert again.resume() == 0


def test_a_save_that_breaks_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    """Colab can die mid-write: the previous checkpoint must survive, and no temporary file be left behind."""
    model = nn.Linear(2, 2)
    ckpt = Checkpoint(tmp_path / "ck.pt", model=model)
    ckpt.save(1)
    real_save = torch.save

    def broken_save(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr("helpers.train.torch.save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(2)
    monkeypatch.setattr("helpers.train.torch.save", real_save)
    assert Checkpoint(tmp_path / "ck.pt", model=nn.Linear(2, 2)).resume() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_periodic_saving_by_steps_and_minutes(tmp_path, monkeypatch):
    ckpt = Checkpoint(tmp_path / "a.pt", every_steps=3, model=nn.Linear(1, 1))
    assert [ckpt.step(s) for s in range(1, 7)] == [False, False, True, False, False, True]
    clock = [100.0]
    monkeypatch.setattr("helpers.train.time.monotonic", lambda: clock[0])
    timed = Checkpoint(tmp_path / "b.pt", every_minutes=1, model=nn.Linear(1, 1))
    assert not timed.step(1)
    clock[0] += 61
    assert timed.step(2) and timed.saves == 1


def test_bad_checkpoint_arguments(tmp_path):
    with pytest.raises(ValueError, match="0"):
        Checkpoint(tmp_path / "x.pt", every_steps=0)
    with pytest.raises(ValueError, match="-1"):
        Checkpoint(tmp_path / "x.pt", every_minutes=-1)
    with pytest.raises(ValueError, match="'thing'"):
        Checkpoint(tmp_path / "x.pt", thing=42)
    Checkpoint(tmp_path / "x.pt", a=nn.Linear(1, 1)).save(1)
    with pytest.raises(ValueError, match="'b'"):
        Checkpoint(tmp_path / "x.pt", b=nn.Linear(1, 1)).resume()


def test_run_dir_separates_profiles(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    assert run_dir("00_toolkit", "smoke") != run_dir("00_toolkit", "full")
    with pytest.raises(ValueError, match="'a/b'"):
        run_dir("a/b", "full")
    with pytest.raises(ValueError, match="'ful'"):
        run_dir("00_toolkit", "ful")
    assert not (tmp_path / "runs" / "00_toolkit-ful").exists()


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_state_round_trips_python_numpy_and_torch(tmp_path):
    seed_everything(5)
    state = rng_state()
    expected = _draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # every generator moves elsewhere
    set_rng_state(state)
    assert _draws() == expected
    # and through a checkpoint file read back with weights_only=True
    seed_everything(6)
    Checkpoint(tmp_path / "rng.pt", model=nn.Linear(1, 1)).save(1)
    expected = _draws()
    random.seed(98), np.random.seed(98), torch.manual_seed(98)
    assert Checkpoint(tmp_path / "rng.pt", model=nn.Linear(1, 1)).resume() == 1
    assert _draws() == expected


def test_run_dir_changes_with_the_config_and_only_with_it(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    a = run_dir("00_toolkit", "full", {"lr": 0.4, "epochs": 30})
    assert a == run_dir("00_toolkit", "full", {"epochs": 30, "lr": 0.4})  # key order does not matter
    assert a != run_dir("00_toolkit", "full", {"lr": 0.4, "epochs": 31})
    assert a != run_dir("00_toolkit", "smoke", {"lr": 0.4, "epochs": 30})
    assert a.name.startswith("00_toolkit-full-") and a.is_dir()
