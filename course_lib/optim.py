"""Optimization helpers: a learning-rate range test, a learning-rate schedule with warm-up, and an
exponential moving average of weights.

Introduced in chapter 04 (optimization), where every optimizer is also written from scratch and checked
against ``torch.optim``; the chapters use ``torch.optim`` itself afterwards. :class:`WeightEMA` is
introduced in chapter 05 (regularization) and reused by the generative chapters.

Typical use, one scheduler step per batch::

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = optim.warmup_cosine(opt, warmup_steps=50, total_steps=epochs * len(loader))
    ema = optim.WeightEMA(model, decay=0.99)
    train.fit(model, loader, epochs=epochs, optimizer=opt, loss_fn=F.cross_entropy,
              scheduler=sched, scheduler_step="batch", after_step=lambda: ema.update(model))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from course_lib import train

__all__ = ["LRRangeTest", "WeightEMA", "lr_range_test", "warmup_cosine", "warmup_cosine_factor"]


# --------------------------------------------------------------------------------------------
# learning-rate range test
# --------------------------------------------------------------------------------------------
@dataclass
class LRRangeTest:
    """The record of :func:`lr_range_test`: one entry per step taken.

    Attributes:
        lrs: the learning rate of each step (a geometric sequence).
        losses: the mini-batch loss of each step, computed before that step's update.
        smoothed: the bias-corrected exponential moving average of ``losses``.
        diverged: whether the test stopped early because the smoothed loss blew up.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged: bool

    def suggestion(self, rule: str = "min/10") -> float:
        """A learning rate read off the curve.

        Args:
            rule: ``"min/10"``: a tenth of the rate at the lowest smoothed loss (the rate there is
                already near the edge of stability); ``"steepest"``: the rate where the smoothed loss
                falls fastest per unit of :math:`\\log \\eta`, searched up to the minimum.
        Returns:
            the suggested learning rate.
        """
        if rule not in ("min/10", "steepest"):
            raise ValueError(f"rule must be 'min/10' or 'steepest', got {rule!r}")
        if len(self.lrs) < 3:
            raise ValueError(f"the test took {len(self.lrs)} steps; a suggestion needs at least 3")
        smoothed = torch.tensor(self.smoothed, dtype=torch.float64)
        i_min = int(torch.argmin(torch.where(torch.isfinite(smoothed), smoothed, math.inf)))
        if rule == "min/10":
            return self.lrs[i_min] / 10
        log_lr = torch.tensor(self.lrs, dtype=torch.float64).log()
        slope = torch.gradient(smoothed, spacing=(log_lr,))[0]  # d loss / d log(lr), central differences
        return self.lrs[int(torch.argmin(slope[: i_min + 1]))]


def lr_range_test(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    *,
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    device: torch.device | str | None = None,
) -> LRRangeTest:
    r"""Smith's learning-rate range test: train while the rate grows geometrically, record the loss.

    Step :math:`t = 0, \dots, n - 1` uses :math:`\eta_t = \eta_{start}\,(\eta_{end}/\eta_{start})^{t/(n-1)}`
    in every parameter group, on the next batch of ``loader`` (cycled if it runs out). The loss is
    smoothed with a bias-corrected moving average,
    :math:`a_t = \beta a_{t-1} + (1-\beta)\ell_t`, :math:`s_t = a_t/(1-\beta^{t+1})`, and the test stops
    once :math:`s_t` exceeds ``diverge_factor`` times its minimum so far (or is not finite). The
    model's weights and mode and the optimizer's state (rates included) are restored afterwards, so
    the same model and optimizer can then be trained from where they were.

    Args:
        model: the model, on ``device``.
        loader: yields ``(inputs, targets)`` pairs.
        optimizer: a ``torch.optim`` optimizer over the model's parameters.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        start_lr, end_lr: the first and last rates (``0 < start_lr < end_lr``).
        num_steps: the number of steps (>= 2) if the loss does not blow up first.
        smoothing: :math:`\beta` in [0, 1).
        diverge_factor: stop when the smoothed loss exceeds this multiple of its minimum (> 1).
        device: where batches go (default: the model's device).
    Returns:
        an :class:`LRRangeTest` with the rates and losses of the steps taken.

    Introduced in chapter 04 (Smith, 2017, "Cyclical learning rates for training neural networks").
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if not diverge_factor > 1.0:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    device = torch.device(device) if device is not None else train._model_device(model)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    ratio = end_lr / start_lr
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    batches = iter(loader)
    model.train()
    try:
        for t in range(num_steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                try:
                    batch = next(batches)
                except StopIteration:
                    raise ValueError("loader is empty") from None
            x, y = train.to_device(train._split_batch(batch), device)
            lr = start_lr * ratio ** (t / (num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            average = smoothing * average + (1 - smoothing) * value
            s = average / (1 - smoothing ** (t + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(s)
            if not math.isfinite(s) or s > diverge_factor * best:
                diverged = True
                break
            best = min(best, s)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
    return LRRangeTest(lrs=lrs, losses=losses, smoothed=smoothed, diverged=diverged)


def _check_schedule(warmup_steps: int, total_steps: int, min_factor: float) -> None:
    for name, value in (("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps must be larger than warmup_steps, got total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}"
        )
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor}")


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    r"""The learning-rate multiplier at optimizer step ``step`` of a linear warm-up then cosine decay.

    With :math:`w` warm-up steps and :math:`T` steps in all, step :math:`t` (0-based) gets

    .. math::
        f(t) = \frac{t + 1}{w} \quad (t < w), \qquad
        f(t) = f_{\min} + (1 - f_{\min})\,\tfrac12\Bigl(1 + \cos\bigl(\pi\,\tfrac{t - w}{T - w}\bigr)\Bigr)
        \quad (w \le t),

    so the rate climbs linearly to the base rate, which step :math:`w` uses, and then follows half a
    cosine down to :math:`f_{\min}` times the base rate at :math:`t = T`. Steps past :math:`T` keep
    :math:`f_{\min}`.

    Args:
        step: the 0-based optimizer step (>= 0).
        warmup_steps: length of the warm-up (>= 0; 0 starts the cosine at once).
        total_steps: number of steps in the whole run (> ``warmup_steps``).
        min_factor: final multiplier, in [0, 1].
    Returns:
        the multiplier, a float in [0, 1].

    Introduced in chapter 04.
    """
    _check_schedule(warmup_steps, total_steps, min_factor)
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_factor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that follows :func:`warmup_cosine_factor`; call its ``step()`` once per batch.

    Every parameter group's rate is its initial rate times the factor, so groups keep their ratios.
    With :func:`course_lib.train.fit`, pass ``scheduler_step="batch"``.

    Args:
        optimizer: any ``torch.optim`` optimizer.
        warmup_steps, total_steps, min_factor: as in :func:`warmup_cosine_factor`.
    Returns:
        a ``torch.optim.lr_scheduler.LambdaLR``. Right after construction the optimizer already holds
        the rate of step 0.

    Introduced in chapter 04.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    _check_schedule(warmup_steps, total_steps, min_factor)

    def factor(step: int) -> float:
        return warmup_cosine_factor(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_factor=min_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightEMA:
    r"""An exponential moving average of a model's weights: :math:`\theta_{ema} \leftarrow \beta\,\theta_{ema}
    + (1 - \beta)\,\theta`.

    The average starts as a copy of the model and is updated after each optimizer step. It is a
    smoother, often better model than the last iterate (used by DeiT, diffusion models and the
    self-supervised teachers of BYOL). Floating-point parameters and buffers are averaged; integer
    buffers (BatchNorm's ``num_batches_tracked``) are copied. This equals
    ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
    use_buffers=True)`` updated once at construction and after every step.

    Args:
        model: the model being trained. It is deep-copied; the copy lives on the model's device.
        decay: :math:`\beta` in [0, 1). An EMA with decay :math:`\beta` averages over roughly the last
            :math:`1/(1-\beta)` updates.

    Attributes:
        module: the averaged model, in eval mode and with ``requires_grad=False``; evaluate it directly.
        num_updates: how many times :meth:`update` ran.

    Introduced in chapter 05.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    def _pairs(self, model: nn.Module):
        ema_state = list(self.module.state_dict().values())
        state = list(model.state_dict().values())
        if len(ema_state) != len(state):
            raise ValueError(
                f"model has {len(state)} state tensors but the average has {len(ema_state)}; "
                "update() needs the model the average was made from"
            )
        for e, s in zip(ema_state, state, strict=True):
            if e.shape != s.shape:
                raise ValueError(f"state tensor shape {tuple(s.shape)} != averaged {tuple(e.shape)}")
            yield e, s

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        for e, s in self._pairs(model):
            if e.is_floating_point():
                e.lerp_(s.detach().to(e.dtype), 1.0 - self.decay)
            else:
                e.copy_(s)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (e.g. to evaluate or save it in place)."""
        for e, s in self._pairs(model):
            s.copy_(e)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])

    def __repr__(self) -> str:
        return f"WeightEMA(decay={self.decay}, num_updates={self.num_updates})"
