"""Tests of course_lib.optim (chapters 04-05): the range test, the warm-up + cosine schedule, the weight EMA."""

from __future__ import annotations

import copy
import math

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


# --------------------------------------------------------------------------------------------
# learning-rate range test
# --------------------------------------------------------------------------------------------
def _range_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)  # 6 batches
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    return model, loader


def test_lr_range_test_matches_a_hand_written_loop_with_exponential_lr():
    model, loader = _range_problem()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.123, momentum=0.9)
    start, end, steps, beta = 1e-3, 1.0, 15, 0.9
    result = optim.lr_range_test(model, loader, opt, nn.functional.cross_entropy, start_lr=start,
                                 end_lr=end, num_steps=steps, smoothing=beta, diverge_factor=1e9)  # fmt: skip
    # reference: torch's ExponentialLR with gamma = (end/start)^(1/(steps-1)), cycling the loader by hand
    ref_opt = torch.optim.SGD(reference.parameters(), lr=start, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(ref_opt, gamma=(end / start) ** (1 / (steps - 1)))
    batches = [b for _ in range(3) for b in loader][:steps]  # 15 steps > 6 batches: the loader cycles
    lrs, losses = [], []
    for x, y in batches:
        lrs.append(ref_opt.param_groups[0]["lr"])
        loss = nn.functional.cross_entropy(reference(x), y)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        sched.step()
        losses.append(loss.item())
    assert len(result.lrs) == steps and not result.diverged
    assert_close(torch.tensor(result.lrs, dtype=torch.float64), torch.tensor(lrs, dtype=torch.float64))
    assert result.lrs[0] == pytest.approx(start) and result.lrs[-1] == pytest.approx(end)
    assert_close(torch.tensor(result.losses), torch.tensor(losses))
    # the smoothing: bias-corrected EMA, by hand
    avg, smoothed = 0.0, []
    for t, value in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * value
        smoothed.append(avg / (1 - beta**t))
    assert_close(torch.tensor(result.smoothed), torch.tensor(smoothed))
    assert result.smoothed[0] == pytest.approx(result.losses[0])  # bias correction: s_1 = l_1


def test_lr_range_test_restores_model_and_optimizer():
    model, loader = _range_problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = next(iter(loader))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # give the optimizer some state to restore
    before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    model.eval()
    optim.lr_range_test(model, loader, opt, nn.functional.cross_entropy, num_steps=10)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # a copy back: exact
    assert opt.param_groups[0]["lr"] == 0.01
    for key, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, opt_before["state"][key][name]), name


def test_lr_range_test_stops_when_the_loss_blows_up():
    model, loader = _range_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = optim.lr_range_test(model, loader, opt, nn.functional.cross_entropy, start_lr=1e-3,
                                 end_lr=1e4, num_steps=200, smoothing=0.5)  # fmt: skip
    assert result.diverged and len(result.lrs) < 200
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4.0 * min(result.smoothed[:-1])


def test_lr_range_test_suggestions_on_a_synthetic_curve():
    lrs = [10.0 ** (k / 4) for k in range(-12, 5)]  # 1e-3 ... 10, 17 rates
    # a loss that is flat, falls fastest at lr = 1e-2 (k = -8), bottoms out at lr = 1 (k = 0), then rises
    smoothed = [2.0, 2.0, 2.0, 1.9, 1.5, 1.1, 1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.7, 1.0, 2.0, 3.0]
    record = optim.LRRangeTest(lrs=lrs, losses=smoothed, smoothed=smoothed, diverged=False)
    assert record.suggestion("min/10") == pytest.approx(lrs[12] / 10)
    slopes = [smoothed[i + 1] - smoothed[i - 1] for i in range(1, 12)]  # central differences, equal spacing
    steepest = 1 + min(range(len(slopes)), key=slopes.__getitem__)
    assert steepest == 4 and record.suggestion("steepest") == pytest.approx(lrs[4])
    with pytest.raises(ValueError, match="rule"):
        record.suggestion("valley")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr"),
        ({"start_lr": 0.0}, "start_lr"),
        ({"num_steps": 1}, "num_steps"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
    ],
)
def test_lr_range_test_bad_input(kwargs, match):
    model, loader = _range_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        optim.lr_range_test(model, loader, opt, nn.functional.cross_entropy, **kwargs)


def test_lr_range_test_bad_types_and_empty_loader():
    model, loader = _range_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="optimizer"):
        optim.lr_range_test(model, loader, "sgd", nn.functional.cross_entropy)
    with pytest.raises(TypeError, match="model"):
        optim.lr_range_test("model", loader, opt, nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="empty"):
        optim.lr_range_test(model, [], opt, nn.functional.cross_entropy)
