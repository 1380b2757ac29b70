"""A small, readable training loop that every chapter uses.

Introduced in chapter 00 (introduction), written out by hand once in chapter 02/03 and reused after.
It does what a chapter would otherwise repeat: device placement, the optimisation step (with optional
mixed precision and gradient clipping), a progress bar, evaluation, and a per-epoch history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from course_lib import runtime

__all__ = ["History", "evaluate", "fit", "predict", "to_device"]

Metric = Callable[[torch.Tensor, Any], torch.Tensor | float]


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move tensors in a (nested) tuple / list / dict to ``device``; other values are kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass
class History:
    """Per-epoch records: ``history["train_loss"]`` is a list with one value per epoch."""

    records: dict[str, list[float]] = field(default_factory=dict)

    def append(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.records.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.records:
            raise KeyError(f"no record {key!r}; recorded: {sorted(self.records)}")
        return self.records[key]

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def keys(self) -> list[str]:
        return list(self.records)

    def metric_names(self) -> list[str]:
        """Metric names without split prefix, e.g. ``["loss", "acc"]``."""
        names: list[str] = []
        for k in self.records:
            if "_" in k and k.split("_", 1)[0] in ("train", "val"):
                name = k.split("_", 1)[1]
                if name not in names:
                    names.append(name)
        return names

    def last(self, key: str) -> float:
        return self[key][-1]

    def best(self, key: str, mode: str = "max") -> float:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        return max(self[key]) if mode == "max" else min(self[key])

    @property
    def epochs(self) -> int:
        return max((len(v) for v in self.records.values()), default=0)

    def plot(self, keys=None, title=None):
        from course_lib.viz import plot_history

        return plot_history(self, keys, title=title)


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without either."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _batch_size(x: Any) -> int:
    """Items in a batch of inputs: ``len`` of a tensor or list, or of the first value of a dict."""
    if isinstance(x, Mapping):
        if not x:
            raise ValueError("a batch of inputs is an empty dict")
        return _batch_size(next(iter(x.values())))
    if isinstance(x, torch.Tensor) and x.ndim == 0:
        raise ValueError("a batch of inputs is a 0-d tensor; batches need a leading batch dimension")
    return len(x)


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(
        "each batch must be a pair (inputs, targets); pass a custom loss_fn/step via a Dataset that "
        f"yields pairs, got {type(batch).__name__}"
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    *,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Average loss and metrics of ``model`` over ``loader``, in eval mode (the mode is restored).

    Introduced in chapter 00. Each batch's value is weighted by its size, so for losses and metrics
    that average over samples the result equals one computation over the whole loader.

    Args:
        model: the model (its mode is restored afterwards).
        loader: yields ``(inputs, targets)`` pairs.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, recorded as ``"loss"``; ``None`` skips it.
        metrics: name -> ``fn(outputs, targets)``.
        device: where batches go (default: the model's device).
        amp: mixed precision via :func:`course_lib.runtime.autocast` (no-op on the CPU).
    Returns:
        ``{"loss": ..., <metric>: ...}`` as floats.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    try:
        for batch in loader:
            x, y = to_device(_split_batch(batch), device)
            with runtime.autocast(device, enabled=amp):
                out = model(x)
            bs = _batch_size(x)
            if loss_fn is not None:
                totals["loss"] = totals.get("loss", 0.0) + float(loss_fn(out.float(), y)) * bs
            for name, fn in (metrics or {}).items():
                totals[name] = totals.get(name, 0.0) + float(fn(out.float(), y)) * bs
            n += bs
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("loader is empty")
    return {k: v / n for k, v in totals.items()}


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Model outputs over ``loader``, concatenated in order along dim 0, as float on the CPU.

    Introduced in chapter 00. Batches may be inputs alone or ``(inputs, targets)``; the model runs
    in eval mode without gradients and its mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            outs.append(model(to_device(x, device)).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("loader is empty")
    return torch.cat(outs)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor],
    val_loader: Iterable | None = None,
    metrics: Mapping[str, Metric] | None = None,
    device: torch.device | str | None = None,
    scheduler: Any | None = None,
    scheduler_step: str = "epoch",
    amp: bool = False,
    grad_clip: float | None = None,
    eval_train: bool = False,
    progress: bool = True,
    desc: str = "training",
    history: History | None = None,
    after_step: Callable[[], Any] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch :class:`History`.

    Args:
        model: already on ``device``.
        train_loader: yields ``(inputs, targets)`` pairs.
        epochs: number of passes over ``train_loader`` (>= 1).
        optimizer: a ``torch.optim`` optimizer over the model's parameters.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        val_loader: evaluated after every epoch (records ``val_loss`` and ``val_<metric>``).
        metrics: name -> ``fn(outputs, targets)``, e.g. ``{"acc": metrics.accuracy}``.
        device: where batches go (default: the model's device).
        scheduler: a learning-rate scheduler, stepped after every ``"epoch"`` or ``"batch"``.
            ``ReduceLROnPlateau`` (per epoch) is stepped with ``val_loss``, or ``train_loss`` without
            a validation loader.
        amp: mixed precision via :func:`course_lib.runtime.autocast` (no-op on the CPU).
        grad_clip: clip the global gradient norm to this value.
        eval_train: re-evaluate the training set in eval mode after each epoch (``train_<metric>``);
            otherwise train metrics are running averages over the epoch's batches.
        progress: show a tqdm progress bar over epochs.
        history: continue an existing history (e.g. when training in stages).
        after_step: called with no arguments after every optimizer step, e.g.
            ``lambda: ema.update(model)`` for a :class:`course_lib.optim.WeightEMA`.

    Records ``train_loss``, ``train_<metric>``, ``val_loss``, ``val_<metric>``, ``lr`` (of the first
    parameter group, at the start of the epoch: the rate its first batch used) and ``time`` (seconds,
    evaluation included) per epoch.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite.
        ValueError: for bad arguments or an empty ``train_loader``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if scheduler_step not in ("epoch", "batch"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'batch', got {scheduler_step!r}")
    if after_step is not None and not callable(after_step):
        raise TypeError(f"after_step must be callable, got {type(after_step).__name__}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0, got {grad_clip}")
    device = torch.device(device) if device is not None else _model_device(model)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and scheduler_step != "epoch":
        raise ValueError("ReduceLROnPlateau must be stepped per epoch: use scheduler_step='epoch'")
    history = history if history is not None else History()
    metrics = dict(metrics or {})
    scaler = runtime.grad_scaler(device, enabled=amp)

    from tqdm.auto import tqdm

    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=True)
    for _epoch in bar:
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in train_loader:
            x, y = to_device(_split_batch(batch), device)
            with runtime.autocast(device, enabled=amp):
                out = model(x)
                loss = loss_fn(out, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {history.epochs + 1}; lower the learning rate?"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if after_step is not None:
                after_step()
            if scheduler is not None and scheduler_step == "batch":
                scheduler.step()
            bs = _batch_size(x)
            n += bs
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * bs
            if not eval_train:
                with torch.no_grad():
                    for name, fn in metrics.items():
                        sums[name] = sums.get(name, 0.0) + float(fn(out.detach().float(), y)) * bs
        if n == 0:
            raise ValueError("train_loader is empty")
        record = {"lr": lr}
        if eval_train:
            record.update(
                {
                    f"train_{k}": v
                    for k, v in evaluate(
                        model, train_loader, loss_fn, metrics, device=device, amp=amp
                    ).items()
                }
            )
        else:
            record.update({f"train_{k}": v / n for k, v in sums.items()})
        if val_loader is not None:
            record.update(
                {
                    f"val_{k}": v
                    for k, v in evaluate(model, val_loader, loss_fn, metrics, device=device, amp=amp).items()
                }
            )
        if plateau:
            scheduler.step(record["val_loss" if "val_loss" in record else "train_loss"])
        elif scheduler is not None and scheduler_step == "epoch":
            scheduler.step()
        record["time"] = time.perf_counter() - t0
        history.append(record)
        shown = {k: v for k, v in record.items() if k not in ("lr", "time") and math.isfinite(v)}
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
    bar.close()
    return history
