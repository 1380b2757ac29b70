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


# ---------------------------------------------------------------------------- segmentation (chapter 07)
def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix as sk_confusion

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 10, 10), generator=g)
    pred = torch.where(
        torch.rand(3, 10, 10, generator=g) < 0.7, target, torch.randint(0, 4, (3, 10, 10), generator=g)
    )
    cm = metrics.confusion_matrix(pred, target, 4)
    assert cm.dtype == torch.int64 and cm.sum() == 300
    assert cm.tolist() == sk_confusion(target.flatten(), pred.flatten(), labels=range(4)).tolist()


def test_confusion_matrix_ignore_index_and_bad_input():
    target = torch.tensor([0, 1, 255, 1])
    pred = torch.tensor([0, 0, 1, 1])
    assert metrics.confusion_matrix(pred, target, 2, ignore_index=255).tolist() == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match=r"target values must be in \[0, 2\)"):
        metrics.confusion_matrix(pred, target, 2)
    with pytest.raises(TypeError, match="pred"):
        metrics.confusion_matrix(pred.float(), target, 2)
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(pred[:3], target, 2)
    with pytest.raises(ValueError, match="num_classes"):
        metrics.confusion_matrix(pred, target, 0)


def test_iou_and_mean_iou_hand_case():
    # class 0: TP 2, FP 1, FN 0 -> 2/3; class 1: TP 1, FP 0, FN 1 -> 1/2; class 2 absent -> NaN
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 0], [0, 1]])
    per_class = metrics.iou_from_confusion(metrics.confusion_matrix(pred, target, 3))
    assert per_class[:2].tolist() == pytest.approx([2 / 3, 1 / 2]) and torch.isnan(per_class[2])
    assert metrics.mean_iou(pred, target, 3).item() == pytest.approx((2 / 3 + 1 / 2) / 2)
    # a class predicted but never present has IoU 0 and counts in the mean
    assert metrics.mean_iou(torch.tensor([2, 1]), torch.tensor([1, 1]), 3).item() == pytest.approx(0.25)
    assert metrics.mean_iou(target, target, 2).item() == 1.0


def test_mean_iou_matches_sklearn_jaccard():
    from sklearn.metrics import jaccard_score

    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (500,), generator=g)
    pred = torch.where(torch.rand(500, generator=g) < 0.6, target, torch.randint(0, 5, (500,), generator=g))
    ref = jaccard_score(target.numpy(), pred.numpy(), average="macro")
    assert metrics.mean_iou(pred, target, 5).item() == pytest.approx(ref)
    with pytest.raises(ValueError, match="no labelled pixels"):
        metrics.mean_iou(torch.tensor([0]), torch.tensor([9]), 2, ignore_index=9)


# ---------------------------------------------------------------------------- detection (chapter 08)
def _box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> list[float]:
    return [x, y, x + w, y + h]


def test_match_detections_greedy_by_score():
    gt = torch.tensor([_box(0, 0), _box(50, 50)])
    boxes = torch.tensor([_box(1, 0), _box(0, 1), _box(50, 52), _box(100, 100)])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.95])
    # 0.95: no overlap -> FP; 0.9 takes gt 0; 0.8 takes gt 1 (IoU 0.667); 0.6 is a duplicate of gt 0 -> FP
    assert metrics.match_detections(boxes, scores, gt, 0.5).tolist() == [False, True, True, False]
    assert metrics.match_detections(boxes, scores, gt, 0.7).tolist() == [False, True, False, False]
    assert metrics.match_detections(boxes, scores, torch.zeros(0, 4)).tolist() == [False] * 4
    assert metrics.match_detections(torch.zeros(0, 4), torch.zeros(0), gt).numel() == 0
    with pytest.raises(ValueError, match="scores"):
        metrics.match_detections(boxes, scores[:2], gt)


def test_precision_recall_and_ap_hand_case():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    is_tp = torch.tensor([True, False, True, False, True])
    precision, recall, thr = metrics.precision_recall(scores, is_tp, num_gt=4)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    assert recall.tolist() == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.75])
    assert thr.tolist() == pytest.approx(scores.tolist())
    # envelope: 1, 2/3, 2/3, 3/5, 3/5 -> all-point area = .25*1 + .25*2/3 + .25*3/5
    assert metrics.average_precision(precision, recall, "all") == pytest.approx(0.25 * (1 + 2 / 3 + 3 / 5))
    # 101-point: recall levels 0..25 -> 1 (26 levels), 26..50 -> 2/3 (25), 51..75 -> 3/5 (25), 76..100 -> 0
    expected = (26 * 1 + 25 * 2 / 3 + 25 * 3 / 5) / 101
    assert metrics.average_precision(precision, recall, "101") == pytest.approx(expected)


def test_ap_is_at_least_sklearn_uninterpolated_and_one_when_perfect():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(2)
    scores = torch.rand(60, generator=g)
    is_tp = torch.rand(60, generator=g) < scores  # informative scores
    precision, recall, _ = metrics.precision_recall(scores, is_tp, int(is_tp.sum()))
    ours = metrics.average_precision(precision, recall, "all")
    ref = average_precision_score(is_tp.numpy(), scores.numpy())  # same curve, without the envelope
    assert ref <= ours + 1e-12 and ours - ref < 0.1
    perfect = torch.tensor([True, True, False])
    p, r, _ = metrics.precision_recall(torch.tensor([0.9, 0.8, 0.1]), perfect, 2)
    assert metrics.average_precision(p, r, "all") == 1.0 and metrics.average_precision(p, r, "101") == 1.0


def test_precision_recall_bad_input():
    with pytest.raises(ValueError, match="num_gt"):
        metrics.precision_recall(torch.tensor([0.5]), torch.tensor([True]), 0)
    with pytest.raises(ValueError, match="true positives"):
        metrics.precision_recall(torch.tensor([0.5, 0.4]), torch.tensor([True, True]), 1)
    with pytest.raises(ValueError, match="method"):
        metrics.average_precision(torch.ones(2), torch.ones(2), "11")
    assert metrics.average_precision(torch.zeros(0), torch.zeros(0)) == 0.0


def test_mean_average_precision_two_images_two_classes():
    targets = [
        {"boxes": torch.tensor([_box(0, 0), _box(30, 30)]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([_box(10, 10)]), "labels": torch.tensor([0])},
    ]
    predictions = [
        {  # class 0: a hit (0.9) and a miss (0.3); class 1: a hit
            "boxes": torch.tensor([_box(0, 1), _box(60, 60), _box(30, 31)]),
            "scores": torch.tensor([0.9, 0.3, 0.8]),
            "labels": torch.tensor([0, 0, 1]),
        },
        {  # class 0: a hit at 0.5; a class-1 detection on an image without class 1
            "boxes": torch.tensor([_box(10, 11), _box(0, 0)]),
            "scores": torch.tensor([0.5, 0.7]),
            "labels": torch.tensor([0, 1]),
        },
    ]
    out = metrics.mean_average_precision(predictions, targets, num_classes=3)
    # class 0 ranked: 0.9 TP, 0.5 TP, 0.3 FP -> AP 1; class 1: 0.8 TP, 0.7 FP -> AP 1; class 2: no objects
    assert out["ap"][0, :2].tolist() == [1.0, 1.0] and torch.isnan(out["ap"][0, 2])
    assert out["map"] == 1.0 and out["num_gt"].tolist() == [2, 1, 0]
    # reorder class 1 so the false positive outranks the hit: AP(class 1) = 0.5
    predictions[1]["scores"][1] = 0.95
    out = metrics.mean_average_precision(predictions, targets, num_classes=3, iou_thresholds=(0.5, 0.95))
    assert out["ap"][0, 1].item() == pytest.approx(0.5)
    assert out["ap"][1, 0].item() == 0.0  # IoU 0.82 misses the 0.95 threshold
    assert out["map"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.0) / 4)


def test_mean_average_precision_bad_input():
    t = [{"boxes": torch.tensor([_box(0, 0)]), "labels": torch.tensor([0])}]
    p = [{"boxes": torch.tensor([_box(0, 0)]), "scores": torch.tensor([1.0]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="one entry per image"):
        metrics.mean_average_precision(p, t + t, 1)
    with pytest.raises(ValueError, match="labels must be in"):
        metrics.mean_average_precision(p, [{"boxes": t[0]["boxes"], "labels": torch.tensor([3])}], 1)
    with pytest.raises(ValueError, match="missing keys"):
        metrics.mean_average_precision([{"boxes": t[0]["boxes"]}], t, 1)
    with pytest.raises(ValueError, match="no objects"):
        metrics.mean_average_precision(
            p, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], 1
        )
