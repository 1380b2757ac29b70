"""Evaluation metrics.

Introduced in chapter 00 (accuracy); later chapters add dense-prediction and detection metrics.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["accuracy", "topk_accuracy"]


def _check_logits_targets(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"outputs and targets must be Tensors, got {type(outputs).__name__} and {type(targets).__name__}"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if targets.ndim != 1:
        raise ValueError(f"targets must be [N], got shape {tuple(targets.shape)}")
    if outputs.ndim not in (1, 2):
        raise ValueError(
            f"outputs must be [N, C] scores or [N] predictions, got shape {tuple(outputs.shape)}"
        )
    if outputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"outputs and targets disagree on the batch size: {outputs.shape[0]} vs {targets.shape[0]}"
        )
    if outputs.shape[0] == 0:
        raise ValueError("outputs is empty")
    if outputs.ndim == 2 and outputs.shape[1] == 0:
        raise ValueError(f"outputs must have at least one class column, got shape {tuple(outputs.shape)}")


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions.

    Introduced in chapter 00.

    Args:
        outputs: ``Tensor[N, C]`` scores/logits (the argmax is the prediction) or ``Tensor[N]``
            predicted class indices.
        targets: ``Tensor[N]`` integer class indices.
    Returns:
        a scalar tensor in [0, 1].
    """
    _check_logits_targets(outputs, targets)
    if outputs.ndim == 2:
        pred = outputs.argmax(dim=1)
    elif outputs.ndim == 1 and not outputs.dtype.is_floating_point:
        pred = outputs
    else:
        raise ValueError(
            f"outputs must be [N, C] scores or [N] integer predictions, got shape {tuple(outputs.shape)} {outputs.dtype}"
        )
    return (pred == targets).float().mean()


def topk_accuracy(outputs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Fraction of samples whose target is among the ``k`` highest scores.

    Introduced in chapter 00. Ties at the k-th score are broken by :func:`torch.topk`.

    Args:
        outputs: ``Tensor[N, C]`` scores or logits.
        targets: ``Tensor[N]`` integer class indices.
        k: how many of the highest scores count, ``1 <= k <= C`` (``k = 1`` is :func:`accuracy`).
    Returns:
        a scalar tensor in [0, 1].
    """
    _check_logits_targets(outputs, targets)
    if outputs.ndim != 2:
        raise ValueError(f"outputs must be [N, C], got shape {tuple(outputs.shape)}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= outputs.shape[1]:
        raise ValueError(f"k must be in [1, {outputs.shape[1]}], got {k}")
    top = outputs.topk(int(k), dim=1).indices
    return (top == targets[:, None]).any(dim=1).float().mean()
