"""Tests of course_lib.optim (chapters 04-05): the warm-up + cosine schedule and the weight EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.testing import assert_close

from course_lib import optim


# --------------------------------------------------------------------------------------------
# warm-up + cosine schedule
# --------------------------------------------------------------------------------------------
def test_factor_hand_computed_values():
    kw = {"warmup_steps": 4, "total_steps": 14}
    assert [optim.warmup_cosine_factor(t, **kw) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert optim.warmup_cosine_factor(4, **kw) == 1.0  # the first cosine step uses the base rate
    assert optim.warmup_cosine_factor(9, **kw) == pytest.approx(0.5)  # half-way down the cosine
    assert optim.warmup_cosine_factor(14, **kw) == pytest.approx(0.0, abs=1e-12)
    assert optim.warmup_cosine_factor(100, **kw) == pytest.approx(0.0, abs=1e-12)  # stays at the floor
    assert optim.warmup_cosine_factor(14, **kw, min_factor=0.1) == pytest.approx(0.1)
    assert optim.warmup_cosine_factor(9, **kw, min_factor=0.1) == pytest.approx(0.55)
    # no warm-up: a plain cosine that starts at the base rate
    assert optim.warmup_cosine_factor(0, warmup_steps=0, total_steps=10) == 1.0


def _run(scheduler_factory, steps: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_scheduler_matches_torch_linear_then_cosine():
    warmup, total, lr, floor = 5, 30, 0.1, 0.2
    ours = _run(
        lambda o: optim.warmup_cosine(o, warmup_steps=warmup, total_steps=total, min_factor=floor),
        total,
        lr,
    )

    def torch_schedule(o):
        linear = torch.optim.lr_scheduler.LinearLR(o, 1 / warmup, 1.0, total_iters=warmup - 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup, eta_min=floor * lr)
        return torch.optim.lr_scheduler.SequentialLR(o, [linear, cosine], milestones=[warmup])

    reference = _run(torch_schedule, total, lr)
    assert_close(torch.tensor(ours), torch.tensor(reference), rtol=1e-6, atol=1e-9)
    assert ours[0] == pytest.approx(lr / warmup) and max(ours) == pytest.approx(lr)


def test_scheduler_keeps_group_ratios():
    w = nn.Parameter(torch.zeros(1))
    b = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    sched = optim.warmup_cosine(opt, warmup_steps=2, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(0.1 * lrs[0])
    expected = optim.warmup_cosine_factor(5, warmup_steps=2, total_steps=10)
    assert lrs[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_steps": -1, "total_steps": 10}, "warmup_steps"),
        ({"warmup_steps": 10, "total_steps": 10}, "total_steps"),
        ({"warmup_steps": 1, "total_steps": 10, "min_factor": 1.5}, "min_factor"),
        ({"warmup_steps": 1.5, "total_steps": 10}, "warmup_steps"),
    ],
)
def test_schedule_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        optim.warmup_cosine_factor(0, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        optim.warmup_cosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), **kwargs)


def test_schedule_bad_step_and_optimizer():
    with pytest.raises(ValueError, match="step"):
        optim.warmup_cosine_factor(-1, warmup_steps=1, total_steps=3)
    with pytest.raises(TypeError, match="optimizer"):
        optim.warmup_cosine([0.1], warmup_steps=1, total_steps=3)


# --------------------------------------------------------------------------------------------
# weight EMA
# --------------------------------------------------------------------------------------------
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_weight_ema_matches_torch_averaged_model():
    model = _model()
    decay = 0.9
    ema = optim.WeightEMA(model, decay=decay)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    reference.update_parameters(model)  # torch's first update copies the weights
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    for _ in range(7):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        reference.update_parameters(model)
    ours = ema.module.state_dict()
    theirs = {k.removeprefix("module."): v for k, v in reference.state_dict().items() if k != "n_averaged"}
    for key, value in ours.items():
        if value.is_floating_point():
            assert_close(value, theirs[key], msg=key)
    assert ema.num_updates == 7
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_weight_ema_closed_form_on_a_scalar():
    w = nn.Linear(1, 1, bias=False)
    nn.init.constant_(w.weight, 0.0)
    ema = optim.WeightEMA(w, decay=0.5)
    for value in (1.0, 1.0, 1.0):
        nn.init.constant_(w.weight, value)
        ema.update(w)
    # 0 -> 0.5 -> 0.75 -> 0.875: the weight of the initial copy is decay**3
    assert ema.module.weight.item() == pytest.approx(1 - 0.5**3)


def test_weight_ema_copies_integer_buffers_and_round_trips():
    model = _model()
    ema = optim.WeightEMA(model, decay=0.99)
    model.train()
    model(torch.randn(16, 4))
    ema.update(model)
    bn_ema = ema.module[1]
    assert bn_ema.num_batches_tracked.item() == 1
    target = _model()
    ema.copy_to(target)
    assert_close(target[0].weight, ema.module[0].weight)
    state = ema.state_dict()
    other = optim.WeightEMA(_model(), decay=0.5)
    other.load_state_dict(state)
    assert other.decay == 0.99 and other.num_updates == 1
    assert_close(other.module[3].bias, ema.module[3].bias)


def test_weight_ema_bad_input():
    with pytest.raises(ValueError, match="decay"):
        optim.WeightEMA(_model(), decay=1.0)
    with pytest.raises(TypeError, match="model"):
        optim.WeightEMA("model")
    ema = optim.WeightEMA(_model())
    with pytest.raises(ValueError, match="state tensors"):
        ema.update(nn.Linear(4, 2))


def test_fit_after_step_drives_the_ema():
    from course_lib import train

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    decay = 0.5
    ema = optim.WeightEMA(model, decay=decay)
    expected = model.weight.detach().clone()
    seen = []

    def after_step():  # runs after every optimizer step: fold the new weights in by hand and via the EMA
        seen.append(model.weight.detach().clone())
        ema.update(model)

    x = torch.randn(20, 3)
    loader = [(x[:10], x[:10, :1]), (x[10:], x[10:, :1])]
    kwargs = {"loss_fn": nn.functional.mse_loss, "progress": False}
    train.fit(model, loader, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
              after_step=after_step, **kwargs)  # fmt: skip
    assert ema.num_updates == len(seen) == 6  # 3 epochs x 2 batches
    assert not torch.equal(seen[0], seen[-1])  # the weights did move
    for w in seen:
        expected = decay * expected + (1 - decay) * w
    assert_close(ema.module.weight, expected)
    assert_close(seen[-1], model.weight.detach())  # called after the step, not before
    with pytest.raises(TypeError, match="after_step"):
        train.fit(model, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  after_step=3, **kwargs)  # fmt: skip
