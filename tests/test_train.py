"""course_lib.train: the training loop, its history, evaluation and prediction."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import metrics, train


def _separable(n=64, seed=0):
    """Two Gaussian blobs far apart: linearly separable, so a linear model reaches accuracy 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 2 - 1) * torch.tensor([2.0, 2.0])
    return x, y


def _loader(x, y, batch_size=16, shuffle=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g)


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(2, 2)


def _fit(model, loader, **kw):
    kw.setdefault("epochs", 3)
    kw.setdefault("optimizer", torch.optim.SGD(model.parameters(), lr=0.1))
    kw.setdefault("loss_fn", nn.functional.cross_entropy)
    return train.fit(model, loader, progress=False, **kw)


# ------------------------------------------------------------------------------------------- fit
def test_fit_learns_a_separable_problem_and_records_the_history():
    x, y = _separable()
    xv, yv = _separable(32, seed=1)
    model = _linear()
    h = _fit(
        model,
        _loader(x, y, shuffle=True),
        epochs=15,
        val_loader=_loader(xv, yv),
        metrics={"acc": metrics.accuracy},
    )
    assert set(h.keys()) == {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"}
    assert h.epochs == 15 and all(len(h[k]) == 15 for k in h.keys())
    assert h.metric_names() == ["loss", "acc"]
    assert h.last("val_acc") == 1.0 and h.best("train_acc") == 1.0
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    assert h.best("val_loss", mode="min") == min(h["val_loss"]) < h["val_loss"][0]
    assert h["lr"] == [0.1] * 15 and all(t > 0 for t in h["time"])
    # the recorded validation numbers are what evaluate() gives for the final model
    final = train.evaluate(model, _loader(xv, yv), nn.functional.cross_entropy, {"acc": metrics.accuracy})
    assert final["loss"] == pytest.approx(h.last("val_loss"), rel=1e-6)
    assert "val_acc" in h and "test_acc" not in h


def test_fit_continues_a_history_and_returns_it():
    x, y = _separable()
    model = _linear()
    h = _fit(model, _loader(x, y), epochs=2)
    h2 = _fit(model, _loader(x, y), epochs=3, history=h)
    assert h2 is h and h.epochs == 5 and len(h["train_loss"]) == 5


def test_history_helpers():
    h = train.History()
    assert h.epochs == 0 and h.metric_names() == []
    h.append({"train_loss": torch.tensor(2.0), "val_loss": 3, "val_iou": 0.25, "lr": 0.1})
    h.append({"train_loss": 1.0, "val_loss": 4, "val_iou": 0.5, "lr": 0.01})
    assert h["train_loss"] == [2.0, 1.0] and isinstance(h["train_loss"][0], float)
    assert h.metric_names() == ["loss", "iou"]
    assert h.best("val_loss", "min") == 3 and h.best("val_iou") == 0.5 and h.last("lr") == 0.01
    with pytest.raises(KeyError, match="no record 'val_acc'"):
        h["val_acc"]
    with pytest.raises(ValueError, match="mode"):
        h.best("val_loss", "lowest")


def test_scheduler_stepped_per_epoch():
    x, y = _separable()
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    h = _fit(model, _loader(x, y, batch_size=16), epochs=3, optimizer=opt, scheduler=sched)
    assert h["lr"] == pytest.approx([0.1 * 0.5**e for e in range(3)])  # the rate each epoch used
    assert sched.last_epoch == 3
    assert sched.get_last_lr()[0] == pytest.approx(0.1 * 0.5**3) == opt.param_groups[0]["lr"]


def test_scheduler_stepped_per_batch():
    x, y = _separable()  # 64 samples, 4 batches per epoch
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    h = _fit(model, _loader(x, y), epochs=3, optimizer=opt, scheduler=sched, scheduler_step="batch")
    assert sched.last_epoch == 12
    assert sched.get_last_lr()[0] == pytest.approx(0.1 * 0.9**12)
    # the rate at the start of each epoch, i.e. the one its first batch used
    assert h["lr"] == pytest.approx([0.1 * 0.9 ** (4 * e) for e in range(3)])


def test_reduce_lr_on_plateau_is_stepped_with_the_validation_loss():
    x, y = _separable()
    xv, yv = _separable(32, seed=1)
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)  # too small to learn: the loss plateaus
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    h = _fit(model, _loader(x, y), epochs=3, optimizer=opt, scheduler=sched, val_loader=_loader(xv, yv))
    assert h["lr"] == pytest.approx([1e-6, 1e-6, 0.5e-6], rel=1e-6)
    assert sched.best == pytest.approx(h["val_loss"][0]) != pytest.approx(h["train_loss"][0])
    with pytest.raises(ValueError, match="per epoch"):
        _fit(model, _loader(x, y), optimizer=opt, scheduler=sched, scheduler_step="batch")


def test_grad_clip_limits_the_update():
    # with SGD(lr=1) the update equals the gradient; a loss with a huge gradient shows the clipping
    x, y = torch.ones(4, 2), torch.zeros(4)
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)

    def loss_fn(out, target):
        return 1e6 * (out.squeeze(1) - target - 1).pow(2).mean()

    before = model.weight.detach().clone()
    _fit(model, _loader(x, y, batch_size=4), epochs=1, loss_fn=loss_fn,
         optimizer=torch.optim.SGD(model.parameters(), lr=1.0), grad_clip=0.5)  # fmt: skip
    step = (model.weight.detach() - before).norm().item()
    assert step == pytest.approx(0.5, rel=1e-5)
    nn.init.zeros_(model.weight)
    _fit(model, _loader(x, y, batch_size=4), epochs=1, loss_fn=loss_fn,
         optimizer=torch.optim.SGD(model.parameters(), lr=1.0))  # fmt: skip
    assert model.weight.detach().norm().item() == pytest.approx(2e6 * math.sqrt(2), rel=1e-5)


def test_grad_clip_uses_the_global_norm_like_clip_grad_norm_():
    # a two-layer model: fit(grad_clip=c) must equal a hand loop with clip_grad_norm_ over all parameters
    torch.manual_seed(0)
    x, y = torch.randn(48, 3) * 20, torch.randint(0, 2, (48,))  # large inputs: every step is clipped
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    reference = copy.deepcopy(model)
    _fit(model, _loader(x, y, batch_size=16), epochs=2, grad_clip=0.3,
         optimizer=torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9))  # fmt: skip
    opt = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    norms = []
    for _ in range(2):
        for xb, yb in _loader(x, y, batch_size=16):
            opt.zero_grad()
            nn.functional.cross_entropy(reference(xb), yb).backward()
            norms.append(nn.utils.clip_grad_norm_(reference.parameters(), 0.3).item())
            opt.step()
    assert min(norms) > 0.3  # the clipping was active at every step
    for p_fit, p_ref in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_fit, p_ref)


def test_non_finite_loss_raises():
    x, y = _separable()
    model = _linear()

    def nan_loss(out, target):
        return nn.functional.cross_entropy(out, target) * float("nan")

    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        _fit(model, _loader(x, y), loss_fn=nan_loss)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epochs": 0}, "epochs"), ({"epochs": 1.5}, "epochs"), ({"epochs": True}, "epochs"),
     ({"scheduler_step": "step"}, "scheduler_step"), ({"grad_clip": 0.0}, "grad_clip"),
     ({"grad_clip": -1.0}, "grad_clip")],
)  # fmt: skip
def test_fit_rejects_bad_arguments(kwargs, match):
    x, y = _separable()
    with pytest.raises(ValueError, match=match):
        _fit(_linear(), _loader(x, y), **kwargs)


def test_empty_loaders_and_bad_batches_raise():
    model = _linear()
    empty = DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="train_loader is empty"):
        _fit(model, empty)
    with pytest.raises(ValueError, match="loader is empty"):
        train.evaluate(model, empty, nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="loader is empty"):
        train.predict(model, [])
    with pytest.raises(ValueError, match="pair"):
        _fit(model, [torch.zeros(4, 2)])


# -------------------------------------------------------------------------------------- evaluate
def test_evaluate_weights_batches_by_size():
    x, y = _separable(37)  # batches of 16, 16 and 5
    model = _linear(3)
    got = train.evaluate(model, _loader(x, y), nn.functional.cross_entropy, {"acc": metrics.accuracy})
    with torch.no_grad():
        out = model(x)
    assert got["loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert got["acc"] == pytest.approx(metrics.accuracy(out, y).item(), rel=1e-6)
    assert set(train.evaluate(model, _loader(x, y))) == set()  # nothing asked, nothing computed


class _ModeProbe(nn.Module):
    """Dropout-like: output depends on train/eval mode; records the mode of each call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.lin(x) + (100.0 if self.training else 0.0)


def test_evaluate_and_predict_run_in_eval_mode_and_restore_it():
    x, y = _separable(20)
    for start_training in (True, False):
        model = _ModeProbe().train(start_training)
        train.evaluate(model, _loader(x, y), nn.functional.cross_entropy)
        train.predict(model, _loader(x, y))
        assert model.modes and not any(model.modes)
        assert model.training is start_training


def test_eval_train_re_evaluates_the_training_set_in_eval_mode():
    x, y = _separable()
    model = _ModeProbe()
    loss = nn.functional.cross_entropy
    h = _fit(model, _loader(x, y), epochs=1, loss_fn=loss, eval_train=True)
    assert h.last("train_loss") == pytest.approx(train.evaluate(model, _loader(x, y), loss)["loss"], rel=1e-6)
    assert model.modes.count(True) == 4 and model.modes.count(False) == 4 + 4
    # without eval_train the train loss is the running average of the training-mode batches
    model2 = _ModeProbe()
    h2 = _fit(model2, _loader(x, y), epochs=1, loss_fn=loss, metrics={"acc": metrics.accuracy})
    assert model2.modes == [True] * 4 and "train_acc" in h2


def test_predict_concatenates_in_order():
    x, y = _separable(37)
    model = _linear(2)
    out = train.predict(model, _loader(x, y, batch_size=8))
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
    # loaders of bare inputs work too; the result is float on the CPU, without gradients
    out2 = train.predict(model, DataLoader(x, batch_size=10))
    torch.testing.assert_close(out2, out)
    assert out2.device.type == "cpu" and not out2.requires_grad


def test_models_without_parameters_work():
    x, y = _separable(10)
    out = train.predict(nn.Identity(), _loader(x, y))
    torch.testing.assert_close(out, x)
    got = train.evaluate(nn.Identity(), _loader(x, y, batch_size=3), metrics={"acc": metrics.accuracy})
    assert got["acc"] == pytest.approx(metrics.accuracy(x, y).item())


def test_dict_inputs_are_weighted_by_their_batch_size():
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, batch):
            return self.lin(batch["a"] + batch["b"])

    x, y = _separable(37)
    model = DictModel()
    batches = [({"a": x[i : i + 16], "b": x[i : i + 16] * 0}, y[i : i + 16]) for i in range(0, 37, 16)]
    got = train.evaluate(model, batches, nn.functional.cross_entropy)
    with torch.no_grad():
        want = nn.functional.cross_entropy(model.lin(x), y).item()
    assert got["loss"] == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------------- to_device
def test_to_device_nested_structures():
    t = torch.ones(2)
    batch = {"x": t, "pair": (t, [t, "keep"]), "n": 3}
    out = train.to_device(batch, "cpu")
    assert isinstance(out, dict) and isinstance(out["pair"], tuple) and isinstance(out["pair"][1], list)
    assert out["pair"][1][1] == "keep" and out["n"] == 3
    assert out["x"].device.type == "cpu" and torch.equal(out["pair"][1][0], t)
    meta = train.to_device((t, [t]), "meta")
    assert meta[0].device.type == "meta" and meta[1][0].device.type == "meta"


# ---------------------------------------------------------------------------------- determinism
def test_fit_is_deterministic_with_seeded_loader():
    x, y = _separable(50)

    def run(seed):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
        _fit(model, _loader(x, y, batch_size=8, shuffle=True, seed=seed), epochs=2,
             optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
