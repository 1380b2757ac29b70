"""course_lib.metrics against scikit-learn and a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from course_lib import metrics


def _logits_targets(generator, n=97, c=7):
    logits = torch.randn(n, c, generator=generator)
    targets = torch.randint(0, c, (n,), generator=generator)
    return logits, targets


def test_accuracy_matches_sklearn_on_random_logits(generator):
    logits, targets = _logits_targets(generator)
    acc = metrics.accuracy(logits, targets)
    want = accuracy_score(targets.numpy(), logits.argmax(1).numpy())
    assert acc.ndim == 0 and acc.dtype == torch.float32
    assert 0.05 < want < 0.5  # random guessing: neither trivially 0 nor 1
    assert acc.item() == pytest.approx(want, abs=1e-7)


def test_accuracy_hand_computed_and_integer_predictions():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([0, 1, 0, 2])
    assert metrics.accuracy(logits, targets).item() == pytest.approx(0.5)
    pred = torch.tensor([0, 1, 0, 1], dtype=torch.int32)
    assert metrics.accuracy(pred, targets).item() == pytest.approx(0.75)
    assert metrics.accuracy(targets, targets).item() == 1.0
    # a single sample
    assert metrics.accuracy(logits[:1], targets[:1]).item() == 1.0
    assert metrics.accuracy(logits[2:3], targets[2:3]).item() == 0.0


def test_accuracy_is_device_and_dtype_agnostic(generator):
    logits, targets = _logits_targets(generator, n=20, c=4)
    want = metrics.accuracy(logits, targets)
    torch.testing.assert_close(metrics.accuracy(logits.double(), targets.int()), want)
    torch.testing.assert_close(metrics.accuracy(logits.half(), targets), want)


@pytest.mark.parametrize(
    "outputs, targets, exc, match",
    [
        (torch.zeros(3, 2), torch.zeros(3), TypeError, "integer class indices"),
        (torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool), TypeError, "integer class indices"),
        (np.zeros((3, 2)), torch.zeros(3, dtype=torch.long), TypeError, "Tensors"),
        (torch.zeros(3, 2), torch.zeros(4, dtype=torch.long), ValueError, "batch size: 3 vs 4"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ValueError, "empty"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), ValueError, "integer predictions"),
        (torch.zeros(3, 2, 2), torch.zeros(3, dtype=torch.long), ValueError, "outputs must be"),
        (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long), ValueError, r"targets must be \[N\]"),
        (torch.tensor(1.0), torch.tensor(1), ValueError, r"targets must be \[N\]"),
        (torch.zeros(3, 0), torch.zeros(3, dtype=torch.long), ValueError, "class column"),
    ],
)
def test_accuracy_rejects_bad_input(outputs, targets, exc, match):
    with pytest.raises(exc, match=match):
        metrics.accuracy(outputs, targets)


def _topk_reference(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Rank of the target = number of classes with a strictly higher score."""
    rank = (logits > logits[np.arange(len(targets)), targets][:, None]).sum(1)
    return float((rank < k).mean())


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_topk_accuracy_matches_numpy_and_sklearn(generator, k):
    logits, targets = _logits_targets(generator)
    got = metrics.topk_accuracy(logits, targets, k=k).item()
    assert got == pytest.approx(_topk_reference(logits.numpy(), targets.numpy(), k), abs=1e-7)
    want = top_k_accuracy_score(targets.numpy(), logits.numpy(), k=k, labels=np.arange(7))
    assert got == pytest.approx(want, abs=1e-7)


def test_topk_accuracy_is_monotone_and_k1_is_accuracy(generator):
    logits, targets = _logits_targets(generator)
    values = [metrics.topk_accuracy(logits, targets, k=k).item() for k in range(1, 8)]
    assert values == sorted(values) and values[-1] == 1.0
    assert values[0] == pytest.approx(metrics.accuracy(logits, targets).item())


def test_topk_accuracy_hand_computed():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 1, 0])
    # target ranks: 1 (second best), 1 (tie at 0.05 broken by topk), 2 (worst)
    assert metrics.topk_accuracy(logits, targets, k=1).item() == 0.0
    assert metrics.topk_accuracy(logits, targets, k=3).item() == 1.0
    assert metrics.topk_accuracy(logits[[0, 2]], targets[[0, 2]], k=2).item() == 0.5


@pytest.mark.parametrize("k, exc", [(0, ValueError), (8, ValueError), (-1, ValueError), (2.0, TypeError)])
def test_topk_accuracy_rejects_bad_k(generator, k, exc):
    logits, targets = _logits_targets(generator)
    with pytest.raises(exc, match="k must"):
        metrics.topk_accuracy(logits, targets, k=k)


def test_topk_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"outputs must be \[N, C\]"):
        metrics.topk_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]), k=1)
    # [N, 1] targets used to broadcast to an [N, N, k] comparison and return a wrong number
    with pytest.raises(ValueError, match=r"targets must be \[N\]"):
        metrics.topk_accuracy(torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), k=2)
