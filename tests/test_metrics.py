"""course_lib.metrics against scikit-learn and a NumPy reference."""

from __future__ import annotations

import math

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
    # half precision can merge two close logits; compare with the same (rounded) logits in float32
    halved = logits.half()
    torch.testing.assert_close(metrics.accuracy(halved, targets), metrics.accuracy(halved.float(), targets))


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


# ---------------------------------------------------------------------------- matching rules (chapter 08)
def test_match_detections_coco_and_voc_rules_differ_on_a_taken_best_box():
    gt = torch.tensor([_box(0, 0), _box(6, 0)])  # two objects side by side
    boxes = torch.tensor([_box(0, 0), _box(2, 0)])
    scores = torch.tensor([0.9, 0.8])
    iou = metrics._coco_iou(boxes.double().numpy(), gt.double().numpy())
    # the second detection overlaps gt 0 by 80/120 = 0.667 and gt 1 by 60/140 = 0.429
    assert iou[1].tolist() == pytest.approx([2 / 3, 3 / 7])
    # COCO: gt 0 is taken by the first detection, so the second takes gt 1 (IoU 0.429 >= 0.4)
    assert metrics.match_detections(boxes, scores, gt, 0.4, rule="coco").tolist() == [True, True]
    # VOC: the second detection's best box is gt 0, already taken: a duplicate, a false positive
    assert metrics.match_detections(boxes, scores, gt, 0.4, rule="voc").tolist() == [True, False]
    # above 0.429 the rules agree again
    for rule in metrics.MATCH_RULES:
        assert metrics.match_detections(boxes, scores, gt, 0.5, rule=rule).tolist() == [True, False]


def test_match_detections_tie_breaking_of_each_rule():
    # two identical ground truths: COCO's loop takes the last of equal IoUs, the VOC devkit's max the first
    gt = torch.tensor([_box(0, 0), _box(0, 0)])
    one = torch.tensor([_box(0, 1)])
    assert metrics.match_detections(one, torch.tensor([1.0]), gt).tolist() == [True]
    assert metrics.match_detections(one, torch.tensor([1.0]), gt, rule="voc").tolist() == [True]
    # a detection exactly between two objects (IoU 2/3 with both) and a later one on the left object:
    # COCO's first detection takes the right object (the last), leaving the left one for the second;
    # VOC's takes the left one (the first), and the second becomes a duplicate
    gt = torch.tensor([_box(0, 0), _box(4, 0)])
    boxes = torch.tensor([_box(2, 0), _box(0, 0)])
    scores = torch.tensor([0.9, 0.8])
    assert metrics.match_detections(boxes, scores, gt, 0.5, rule="coco").tolist() == [True, True]
    assert metrics.match_detections(boxes, scores, gt, 0.5, rule="voc").tolist() == [True, False]
    pred = [{"boxes": boxes, "scores": scores, "labels": torch.tensor([0, 0])}]
    target = [{"boxes": gt, "labels": torch.tensor([0, 0])}]
    want = _pycocotools_precision(pred, target, 1, 100)
    np.testing.assert_allclose(
        metrics.coco_map(pred, target, 1)["precision"].numpy(), want, rtol=0, atol=1e-12
    )
    assert want[0, :, 0].min() > 0.99  # COCO itself finds both objects at IoU 0.5
    # equal scores: the detection given first is visited first (stable order)
    boxes = torch.tensor([_box(0, 3), _box(0, 0)])
    assert metrics.match_detections(boxes, torch.tensor([0.5, 0.5]), gt[:1], 0.5).tolist() == [True, False]
    assert metrics.match_detections(boxes.flip(0), torch.tensor([0.5, 0.5]), gt[:1], 0.5).tolist() == [
        True,
        False,
    ]


def _voc_devkit_reference(boxes, scores, gt_boxes, threshold):
    """A plain-Python transcription of VOCevaldet.m's loop (continuous IoU, no difficult objects)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    detected = [False] * len(gt_boxes)
    is_tp = [False] * len(scores)
    for i in order:
        bb = boxes[i]
        ovmax, jmax = -math.inf, -1
        for j, bbgt in enumerate(gt_boxes):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0])
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1])
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (bbgt[2] - bbgt[0]) * (bbgt[3] - bbgt[1]) - iw * ih
                if iw * ih / ua > ovmax:
                    ovmax, jmax = iw * ih / ua, j
        if ovmax >= threshold and not detected[jmax]:
            is_tp[i] = detected[jmax] = True
    return is_tp


@pytest.mark.parametrize("seed", range(4))
def test_match_detections_voc_equals_devkit_loop(seed):
    g = torch.Generator().manual_seed(seed)
    gt = torch.cat([torch.rand(6, 2, generator=g) * 30, torch.zeros(6, 2)], 1)
    gt[:, 2:] = gt[:, :2] + 5 + torch.rand(6, 2, generator=g) * 10
    boxes = gt[torch.randint(0, 6, (25,), generator=g)] + torch.randn(25, 4, generator=g) * 1.5
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    scores = (torch.rand(25, generator=g) * 5).round() / 5  # ties
    for thr in (0.3, 0.5, 0.7):
        want = _voc_devkit_reference(boxes.double().tolist(), scores.tolist(), gt.double().tolist(), thr)
        got = metrics.match_detections(boxes, scores, gt, thr, rule="voc").tolist()
        assert got == want, (seed, thr)


# ---------------------------------------------------------------------------- COCO against pycocotools
def _random_scene(seed, num_images=40, num_classes=6, *, integer=False, pile=0):
    """Random ground truth and detections: noisy copies, duplicates, false positives, wrong labels,
    scores rounded to 0.1 (ties), images without objects or without detections, a class that never
    occurs, and ``pile`` extra detections of one class in some images (to exceed ``maxDets``).
    ``integer=True`` puts boxes on a coarse integer grid, so IoUs hit thresholds exactly and tie."""
    g = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        n_gt = int(g.integers(0, 7))
        xy = g.uniform(0, 60, (n_gt, 2))
        wh = g.uniform(4, 30, (n_gt, 2))
        if integer:
            xy, wh = np.round(xy / 4) * 4, np.round(wh / 4) * 4 + 4
            if n_gt >= 2:
                xy[1], wh[1] = xy[0], wh[0]  # a duplicated object: tied IoUs
        gt = np.concatenate([xy, xy + wh], 1)
        gt_labels = g.integers(0, num_classes - 1, n_gt)  # class num_classes - 1 has no objects
        copies = np.repeat(np.arange(n_gt), g.integers(0, 3, n_gt))  # 0, 1 or 2 detections per object
        det = gt[copies] + g.normal(0, 1, (len(copies), 4)) * np.repeat(wh[copies], 2, 1) * 0.12
        labels = gt_labels[copies].copy()
        wrong = g.random(len(copies)) < 0.1
        labels[wrong] = g.integers(0, num_classes, int(wrong.sum()))
        n_fp = int(g.integers(0, 4)) + (pile if g.random() < 0.3 else 0)
        fp_xy = g.uniform(0, 70, (n_fp, 2))
        fp = np.concatenate([fp_xy, fp_xy + g.uniform(3, 25, (n_fp, 2))], 1)
        det = np.concatenate([det, fp])
        labels = np.concatenate(
            [labels, g.integers(0, num_classes, n_fp) if not pile else np.zeros(n_fp, int)]
        )
        if integer:
            det = np.round(det / 2) * 2
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
        scores = np.round(g.random(len(det)), 1)
        if g.random() < 0.1:  # an image without detections
            det, labels, scores = det[:0], labels[:0], scores[:0]
        predictions.append(
            {
                "boxes": torch.tensor(det, dtype=torch.float32),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(gt_labels)})
    return predictions, targets


def _pycocotools_precision(predictions, targets, num_classes, max_detections):
    """COCOeval's precision array [T, R, K] (area "all", maxDets=max_detections), -1 for absent classes."""
    import bench  # tools/bench.py holds the one adapter to pycocotools

    return bench.pycocotools_evaluator(predictions, targets, num_classes, max_detections)()[:, :, :, 0, 0]


@pytest.mark.parametrize(
    "seed, integer, pile, max_detections",
    [
        (0, False, 0, 100),
        (1, False, 0, 100),
        (2, False, 12, 100),
        (3, True, 0, 100),
        (4, True, 0, 100),
        (5, False, 8, 3),
        (6, True, 8, 2),
        (7, False, 0, 1),
    ],
)
def test_coco_map_equals_pycocotools(seed, integer, pile, max_detections):
    predictions, targets = _random_scene(seed, integer=integer, pile=pile)
    want = _pycocotools_precision(predictions, targets, 6, max_detections)
    out = metrics.coco_map(predictions, targets, 6, max_detections=max_detections)
    got = out["precision"].numpy()
    assert got.shape == want.shape == (10, 101, 6)
    assert np.array_equal(np.isnan(got), want == -1)  # the same classes without objects
    np.testing.assert_allclose(got[~np.isnan(got)], want[want > -1], rtol=0, atol=1e-12)
    # the summary numbers, computed from COCO's array as COCOeval.summarize does
    valid = want > -1
    assert out["map"] == pytest.approx(want[valid].mean(), abs=1e-12)
    assert out["map50"] == pytest.approx(want[0][valid[0]].mean(), abs=1e-12)
    assert out["map75"] == pytest.approx(want[5][valid[5]].mean(), abs=1e-12)
    assert 0.05 < out["map"] < 0.95  # an informative case, neither empty nor perfect
    ap = out["ap"].numpy()
    np.testing.assert_allclose(ap[:, :5], want[:, :, :5].mean(axis=1), rtol=0, atol=1e-12)
    assert np.isnan(ap[:, 5]).all() and out["num_gt"][5] == 0
    # mean_average_precision with COCO's settings is the same evaluation (up to COCO's eps in precision)
    same = metrics.mean_average_precision(
        predictions,
        targets,
        6,
        iou_thresholds=metrics.COCO_IOU_THRESHOLDS,
        method="101",
        max_detections=max_detections,
    )
    np.testing.assert_allclose(same["ap"].numpy()[:, :5], ap[:, :5], rtol=0, atol=1e-12)


def test_coco_map_counts_the_cap_per_image_and_class():
    # one object; the true detection is the third-best of its class in the image
    target = [{"boxes": torch.tensor([_box(0, 0)]), "labels": torch.tensor([0])}]
    boxes = torch.tensor([_box(50, 50), _box(70, 70), _box(0, 0), _box(30, 30)])
    pred = [
        {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.95]), "labels": torch.tensor([0, 0, 0, 1])}
    ]
    assert metrics.coco_map(pred, target, 2, max_detections=2)["map"] == 0.0  # cut before it is seen
    # a better-scored detection of *another* class does not count against class 0's cap of 3
    assert metrics.coco_map(pred, target, 2, max_detections=3)["map"] == pytest.approx(1 / 3, abs=1e-12)


def test_coco_recall_levels_and_a_recall_on_an_ulp():
    assert metrics.COCO_IOU_THRESHOLDS == tuple(np.linspace(0.5, 0.95, 10).tolist())
    assert metrics.COCO_RECALL_LEVELS == tuple(np.linspace(0.0, 1.0, 101).tolist())
    assert metrics.COCO_IOU_THRESHOLDS[8] == 0.8999999999999999 and metrics.COCO_RECALL_LEVELS[70] > 0.7
    # 60 objects, one per image; the ranked detections are 42 hits, a miss, 18 hits. Recall 42/60 = 0.7 is
    # one ulp *below* COCO's level 0.7000000000000001, so that level is first reached at the 44th detection,
    # where the envelope is 60/61: AP = (70 * 1 + 31 * 60/61) / 101 (71 and 30 with torch.linspace's levels)
    targets = [{"boxes": torch.tensor([_box(0, 0)]), "labels": torch.tensor([0])} for _ in range(61)]
    targets[-1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    predictions = [
        {
            "boxes": torch.tensor([_box(0, 0)]),
            "scores": torch.tensor([1.0 - k / 100]),
            "labels": torch.tensor([0]),
        }
        for k in range(61)
    ]
    order = list(range(42)) + [60] + list(range(42, 60))  # the miss (image 60) ranks 43rd
    for rank, k in enumerate(order):
        predictions[k]["scores"] = torch.tensor([1.0 - rank / 100], dtype=torch.float64)
    want = (70 + 31 * 60 / 61) / 101
    out = metrics.coco_map(predictions, targets, 1)
    assert out["map50"] == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(
        out["precision"][0, :, 0].numpy(),
        _pycocotools_precision(predictions, targets, 1, 100)[0, :, 0],
        atol=1e-12,
    )
    p, r = out["curves"][0][0]
    assert metrics.average_precision(p, r, "101") == pytest.approx(want, abs=1e-12)
    assert abs(want - (71 + 30 * 60 / 61) / 101) > 1e-4  # the old levels would change the AP


def test_coco_map_hand_case_and_curves():
    targets = [
        {"boxes": torch.tensor([_box(0, 0), _box(30, 30)]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([_box(10, 10)]), "labels": torch.tensor([0])},
    ]
    predictions = [
        {  # class 0: IoU 9/11 = 0.818 hit (0.9), a miss (0.3); class 1: an exact hit
            "boxes": torch.tensor([_box(0, 1), _box(60, 60), _box(30, 30)]),
            "scores": torch.tensor([0.9, 0.3, 0.8]),
            "labels": torch.tensor([0, 0, 1]),
        },
        {  # class 0: IoU 7/13 = 0.538 hit (0.5)
            "boxes": torch.tensor([_box(13, 10)]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([0]),
        },
    ]
    out = metrics.coco_map(predictions, targets, 2)
    # class 0: both found at t = 0.5 (AP 1); only the 0.818 one for t in 0.55..0.8 (5 thresholds): recall 1/2,
    # precision 1 at levels 0..50 -> AP 51/101; none above. class 1: AP 1 at every threshold.
    ap0 = [1.0] + [51 / 101] * 6 + [0.0] * 3
    np.testing.assert_allclose(out["ap"][:, 0].numpy(), ap0, atol=1e-12)
    np.testing.assert_allclose(out["ap"][:, 1].numpy(), [1.0] * 10, atol=1e-12)
    assert out["map"] == pytest.approx((sum(ap0) + 10) / 20, abs=1e-12)
    assert out["map50"] == pytest.approx(1.0, abs=1e-12) and out["map75"] == pytest.approx((51 / 101 + 1) / 2)
    p, r = out["curves"][0][0]  # t = 0.5, class 0: ranked 0.9 hit, 0.5 hit, 0.3 miss
    assert p.dtype == r.dtype == torch.float64
    assert p.tolist() == pytest.approx([1, 1, 2 / 3]) and r.tolist() == pytest.approx([0.5, 1, 1])
    assert len(out["curves"]) == 10 and len(out["curves"][0]) == 2


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
    assert out["curves"][0][2] is None and out["curves"][0][1][0].tolist() == [1.0, 0.5]
    # reorder class 1 so the false positive outranks the hit: AP(class 1) = 0.5
    predictions[1]["scores"][1] = 0.95
    out = metrics.mean_average_precision(predictions, targets, num_classes=3, iou_thresholds=(0.5, 0.95))
    assert out["ap"][0, 1].item() == pytest.approx(0.5)
    assert out["ap"][1, 0].item() == 0.0  # IoU 0.82 misses the 0.95 threshold
    assert out["map"] == pytest.approx((1.0 + 0.5 + 0.0 + 0.0) / 4)
    # the matching is match_detections' (and its rule)
    for rule in metrics.MATCH_RULES:
        out = metrics.mean_average_precision(predictions, targets, 3, rule=rule)
        assert out["ap"][0, 1].item() == pytest.approx(0.5)


def test_mean_average_precision_voc_rule_counts_a_duplicate():
    # the case of test_match_detections_coco_and_voc_rules_differ_on_a_taken_best_box, at IoU 0.4
    targets = [{"boxes": torch.tensor([_box(0, 0), _box(6, 0)]), "labels": torch.tensor([0, 0])}]
    predictions = [
        {
            "boxes": torch.tensor([_box(0, 0), _box(2, 0)]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    coco = metrics.mean_average_precision(predictions, targets, 1, iou_thresholds=(0.4,))
    voc = metrics.mean_average_precision(predictions, targets, 1, iou_thresholds=(0.4,), rule="voc")
    assert coco["map"] == 1.0 and voc["map"] == pytest.approx(0.5)
    capped = metrics.mean_average_precision(predictions, targets, 1, iou_thresholds=(0.4,), max_detections=1)
    assert capped["map"] == pytest.approx(0.5)  # only the best detection of the image counts


# ---------------------------------------------------------------------------- bad input to the detection metrics
def _one_image(n_det=1):
    t = {"boxes": torch.tensor([_box(0, 0)]), "labels": torch.tensor([0])}
    p = {
        "boxes": torch.tensor([_box(0, 0)] * n_det),
        "scores": torch.ones(n_det),
        "labels": torch.zeros(n_det, dtype=torch.int64),
    }
    return p, t


def _with(d, **changes):
    return {**d, **changes}


_P, _T = _one_image(3)
_BAD_DETECTION_INPUTS = [
    # (predictions, targets, num_classes, exception, message)
    ({"boxes": _P["boxes"]}, [_T], 1, TypeError, "predictions must be a list with one mapping per image"),
    ([_P], _T, 1, TypeError, "targets must be a list"),
    ([_P], [_T, _T], 1, ValueError, "one entry per image, got 1 and 2"),
    ([_P, (1, 2)], [_T, _T], 1, TypeError, r"predictions\[1\] must be a mapping"),
    (
        [{"boxes": _P["boxes"]}],
        [_T],
        1,
        ValueError,
        r"predictions\[0\] \(image 0\) is missing keys \['scores', 'labels'\]",
    ),
    (
        [_P],
        [{"labels": _T["labels"]}],
        1,
        ValueError,
        r"targets\[0\] \(image 0\) is missing keys \['boxes'\]",
    ),
    (
        [_with(_P, boxes=[[0, 0, 1, 1]] * 3)],
        [_T],
        1,
        TypeError,
        r"predictions\[0\]\['boxes'\] must be a Tensor, got list",
    ),
    (
        [_with(_P, boxes=_P["boxes"][:, :3])],
        [_T],
        1,
        ValueError,
        r"predictions\[0\]\['boxes'\] must have shape \[N, 4\]",
    ),
    (
        [_with(_P, boxes=_P["boxes"].long())],
        [_T],
        1,
        TypeError,
        r"predictions\[0\]\['boxes'\] must have a floating dtype",
    ),
    (
        [_P],
        [_with(_T, boxes=_T["boxes"].flip(1))],
        1,
        ValueError,
        r"targets\[0\]\['boxes'\] must satisfy x2 >= x1",
    ),
    (
        [_P, _with(_P, scores=torch.ones(2))],
        [_T, _T],
        1,
        ValueError,
        r"image 1: predictions must have one score and one label per box, got boxes \(3, 4\), scores \(2,\) and labels \(3,\)",
    ),
    ([_with(_P, labels=torch.zeros(4, dtype=torch.int64))], [_T], 1, ValueError, r"image 0: .*labels \(4,\)"),
    (
        [_P],
        [_with(_T, labels=torch.zeros(2, dtype=torch.int64))],
        1,
        ValueError,
        r"image 0: targets must have one label per box, got boxes \(1, 4\) and labels \(2,\)",
    ),
    (
        [_with(_P, scores=torch.ones(3, dtype=torch.int64))],
        [_T],
        1,
        TypeError,
        r"predictions\[0\]\['scores'\] must have a floating dtype",
    ),
    (
        [_with(_P, scores=torch.tensor([0.5, float("nan"), 0.2]))],
        [_T],
        1,
        ValueError,
        r"predictions\[0\]\['scores'\] contains NaN",
    ),
    (
        [_with(_P, labels=torch.zeros(3))],
        [_T],
        1,
        TypeError,
        r"predictions\[0\]\['labels'\] must hold integer class indices",
    ),
    (
        [_P],
        [_with(_T, labels=torch.tensor([True]))],
        1,
        TypeError,
        r"targets\[0\]\['labels'\] must hold integer",
    ),
    (
        [_P],
        [_with(_T, labels=torch.tensor([3]))],
        1,
        ValueError,
        r"targets\[0\]\['labels'\] must be in \[0, 1\), got range \[3, 3\]",
    ),
    (
        [_with(_P, labels=torch.tensor([0, -1, 0]))],
        [_T],
        1,
        ValueError,
        r"predictions\[0\]\['labels'\] must be in",
    ),
    # a bad value in the second image: the error names image 1
    (
        [_P, _with(_P, scores=torch.tensor([0.5, 0.1, float("nan")]))],
        [_T, _T],
        1,
        ValueError,
        r"predictions\[1\]\['scores'\] contains NaN",
    ),
    (
        [_P, _P],
        [_T, _with(_T, boxes=torch.tensor([[0.0, 0.0, float("inf"), 1.0]]))],
        1,
        ValueError,
        r"targets\[1\]\['boxes'\] contains NaN or infinite",
    ),
    (
        [_P, _with(_P, labels=torch.tensor([0, 0, 2]))],
        [_T, _T],
        1,
        ValueError,
        r"predictions\[1\]\['labels'\] must be in \[0, 1\), got range \[0, 2\]",
    ),
    ([_P], [_T], 0, ValueError, "num_classes must be a positive int"),
    ([], [], 1, ValueError, "no objects"),
    ([_P], [_T], 1.0, TypeError, "num_classes must be a positive int"),
    (
        [_P],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
        1,
        ValueError,
        "no objects",
    ),
]


@pytest.mark.parametrize("fn", [metrics.mean_average_precision, metrics.coco_map])
@pytest.mark.parametrize("predictions, targets, num_classes, exc, match", _BAD_DETECTION_INPUTS)
def test_detection_metrics_name_what_is_wrong(fn, predictions, targets, num_classes, exc, match):
    with pytest.raises(exc, match=match):
        fn(predictions, targets, num_classes)


def test_detection_metrics_bad_options():
    p, t = _one_image()
    for kwargs, exc, match in [
        ({"iou_thresholds": (0.5, 1.5)}, ValueError, r"iou_thresholds must be in \[0, 1\], got 1.5"),
        ({"iou_thresholds": ()}, ValueError, "must not be empty"),
        ({"iou_thresholds": "0.5"}, TypeError, "iou_thresholds must be a sequence"),
        ({"method": "11"}, ValueError, "method"),
        ({"rule": "pascal"}, ValueError, r"rule must be one of \('coco', 'voc'\)"),
        ({"max_detections": 0}, ValueError, "max_detections"),
        ({"max_detections": 2.0}, TypeError, "max_detections"),
    ]:
        with pytest.raises(exc, match=match):
            metrics.mean_average_precision([p], [t], 1, **kwargs)
    with pytest.raises(ValueError, match="max_detections"):
        metrics.coco_map([p], [t], 1, max_detections=0)
    # a 1-d tensor of thresholds is accepted
    out = metrics.mean_average_precision([p], [t], 1, iou_thresholds=torch.tensor([0.5, 0.75]))
    assert out["ap"].shape == (2, 1)


def test_match_detections_bad_input():
    gt = torch.tensor([_box(0, 0), _box(50, 50)])
    boxes = torch.tensor([_box(1, 0), _box(0, 1)])
    scores = torch.tensor([0.6, 0.9])
    for args, kwargs, exc, match in [
        (
            (boxes, scores[:1], gt),
            {},
            ValueError,
            r"scores must have shape \[P\] = \[2\] \(one per box\), got \(1,\)",
        ),
        ((boxes, torch.tensor([1, 2]), gt), {}, TypeError, "scores must have a floating dtype"),
        ((boxes, [0.6, 0.9], gt), {}, TypeError, "scores must be a floating Tensor"),
        ((boxes, torch.tensor([0.6, float("nan")]), gt), {}, ValueError, "scores contains NaN"),
        ((boxes, scores, gt[:, :2]), {}, ValueError, r"gt_boxes must have shape \[N, 4\]"),
        ((boxes.tolist(), scores, gt), {}, TypeError, "boxes must be a Tensor"),
        ((boxes, scores, gt, 1.5), {}, ValueError, r"iou_threshold must be in \[0, 1\]"),
        ((boxes, scores, gt, "0.5"), {}, TypeError, "iou_threshold must be a number"),
        ((boxes, scores, gt), {"rule": "VOC"}, ValueError, "rule must be one of"),
    ]:
        with pytest.raises(exc, match=match):
            metrics.match_detections(*args, **kwargs)


def test_precision_recall_and_average_precision_bad_input():
    s, tp = torch.tensor([0.5, 0.4]), torch.tensor([True, False])
    for args, exc, match in [
        ((s, tp, 0), ValueError, "num_gt"),
        ((s, torch.tensor([True, True]), 1), ValueError, "true positives"),
        ((s.tolist(), tp, 1), TypeError, "scores must be a floating Tensor"),
        ((s, tp.float(), 1), TypeError, "is_tp must be a bool Tensor"),
        ((s, tp[:1], 1), ValueError, r"is_tp must have the shape of scores \(2,\), got \(1,\)"),
        ((torch.tensor([0.5, float("nan")]), tp, 1), ValueError, "NaN"),
        ((s[None], tp[None], 1), ValueError, r"scores must have shape \[P\]"),
    ]:
        with pytest.raises(exc, match=match):
            metrics.precision_recall(*args)
    for args, exc, match in [
        ((torch.ones(2), torch.ones(2), "11"), ValueError, "method"),
        (([1.0], torch.ones(1)), TypeError, "precision must be a floating Tensor"),
        ((torch.ones(2), torch.ones(2, dtype=torch.int64)), TypeError, "recall must have a floating dtype"),
        ((torch.ones(2), torch.ones(3)), ValueError, "equal shape"),
        ((torch.ones(2), torch.tensor([0.5, 1.5])), ValueError, r"recall values must be in \[0, 1\]"),
        (
            (torch.tensor([float("nan"), 1.0]), torch.ones(2)),
            ValueError,
            r"precision values must be in \[0, 1\]",
        ),
        ((torch.ones(2), torch.tensor([0.5, 0.25])), ValueError, "non-decreasing"),
    ]:
        with pytest.raises(exc, match=match):
            metrics.average_precision(*args)
    assert metrics.average_precision(torch.zeros(0), torch.zeros(0)) == 0.0


def test_iou_from_confusion_bad_input():
    with pytest.raises(TypeError, match="cm must be a Tensor"):
        metrics.iou_from_confusion([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"square Tensor\[C, C\], got \(2, 3\)"):
        metrics.iou_from_confusion(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.iou_from_confusion(torch.tensor([[1, -1], [0, 1]]))


# ---------------------------------------------------------------------------- generative (chapters 09, 10)
def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    import scipy.linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(ca @ cb)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [1, 3, 16])
def test_frechet_distance_equals_scipy_sqrtm(d):
    g = torch.Generator().manual_seed(d)
    a = torch.randn(200, d, generator=g)
    b = torch.randn(150, d, generator=g) @ torch.randn(d, d, generator=g) * 0.5 + 0.3
    ours = metrics.frechet_distance(a, b)
    ref = _fid_scipy(a.double().numpy(), b.double().numpy())
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-8)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_gaussians_has_the_closed_form():
    # isotropic covariances: d^2 = |mu_a - mu_b|^2 + D (s_a - s_b)^2
    d = 5
    mu_a, mu_b = torch.zeros(d), torch.full((d,), 2.0)
    got = metrics.frechet_distance_from_stats(mu_a, 4 * torch.eye(d), mu_b, torch.eye(d))
    assert got == pytest.approx(d * 4.0 + d * (2 - 1) ** 2)
    # singular covariances stay real and non-negative
    sing = torch.zeros(d, d)
    sing[0, 0] = 1.0
    assert metrics.frechet_distance_from_stats(mu_a, sing, mu_a, sing) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="same D"):
        metrics.frechet_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(torch.full((3, 2), float("nan")), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="Tensor\\[N, D\\]"):
        metrics.frechet_distance(torch.zeros(5), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="cov_b"):
        metrics.frechet_distance_from_stats(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))


def test_mode_coverage_counts_modes_and_quality():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    g = torch.Generator().manual_seed(0)
    # 3 modes hit with 100 samples each, 40 samples far from every mode, one stray sample near mode 3
    pts = torch.cat([centers[i] + 0.1 * torch.randn(100, 2, generator=g) for i in range(3)])
    pts = torch.cat([pts, torch.full((40, 2), 5.0), centers[3:] + 0.01])
    out = metrics.mode_coverage(pts, centers, std=0.1)
    assert out["modes"] == 3  # one sample is under the 10 % of a fair share (341 / 4 * 0.1)
    assert out["counts"].tolist()[3] == 1
    in_radius = int((torch.cdist(pts[:300], centers).min(1).values <= 0.3).sum())
    assert out["high_quality"] == pytest.approx((in_radius + 1) / 341)
    assert metrics.mode_coverage(pts, centers, std=0.1, min_share=0.0)["modes"] == 4
    with pytest.raises(ValueError, match="std"):
        metrics.mode_coverage(pts, centers, std=0.0)


# --------------------------------------------------------------------------------------------
# PSNR and SSIM against scikit-image
# --------------------------------------------------------------------------------------------
def _noisy_pair(generator, shape=(3, 32, 32), sigma=0.1):
    clean = torch.rand(shape, generator=generator).cumsum(-1) / shape[-1]  # smooth-ish ramps in [0, 1]
    noisy = (clean + sigma * torch.randn(shape, generator=generator)).clamp(0, 1)
    return noisy, clean


def test_psnr_matches_skimage(generator):
    from skimage.metrics import peak_signal_noise_ratio

    for shape in ((32, 32), (3, 32, 32)):
        noisy, clean = _noisy_pair(generator, shape)
        got = metrics.psnr(noisy, clean)
        want = peak_signal_noise_ratio(
            clean.numpy().astype(np.float64), noisy.numpy().astype(np.float64), data_range=1.0
        )
        assert got.ndim == 0 and got.item() == pytest.approx(want, abs=1e-4)
    batch = torch.stack([_noisy_pair(generator, sigma=s)[0] for s in (0.05, 0.1, 0.2)])
    ref = torch.stack([_noisy_pair(torch.Generator().manual_seed(0))[1]] * 3)
    per = metrics.psnr(batch, ref, data_range=1.0)
    assert per.shape == (3,)
    for i in range(3):
        want = peak_signal_noise_ratio(
            ref[i].numpy().astype(np.float64), batch[i].numpy().astype(np.float64), data_range=1.0
        )
        assert per[i].item() == pytest.approx(want, abs=1e-4)
    # 255-scale images and the defining formula; halving the MSE gains 10 log10(2) dB
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full((1, 1, 4, 4), 2.0)
    assert metrics.psnr(y, x, data_range=255.0).item() == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-4)
    y2 = torch.full((1, 1, 4, 4), 2.0 / math.sqrt(2))
    gain = metrics.psnr(y2, x, 255.0) - metrics.psnr(y, x, 255.0)
    assert gain.item() == pytest.approx(10 * math.log10(2), abs=1e-4)
    with pytest.raises(ValueError):
        metrics.psnr(x, torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError):
        metrics.psnr(x, x, data_range=0)


def test_ssim_matches_skimage(generator):
    from skimage.metrics import structural_similarity

    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    for sigma in (0.02, 0.1, 0.3):
        noisy, clean = _noisy_pair(generator, sigma=sigma)
        got = metrics.ssim(noisy, clean)
        want = structural_similarity(
            clean.numpy().astype(np.float64), noisy.numpy().astype(np.float64), channel_axis=0, **kw
        )
        assert got.item() == pytest.approx(want, abs=1e-5)
    gray_noisy, gray_clean = _noisy_pair(generator, (24, 20))
    want = structural_similarity(
        gray_clean.numpy().astype(np.float64), gray_noisy.numpy().astype(np.float64), **kw
    )
    assert metrics.ssim(gray_noisy, gray_clean).item() == pytest.approx(want, abs=1e-5)
    pairs = [_noisy_pair(generator, sigma=s) for s in (0.05, 0.2)]
    batch = torch.stack([torch.stack(p) for p in pairs], dim=1)  # [2 (noisy, clean), 2 images, 3, H, W]
    per = metrics.ssim(batch[0], batch[1])
    assert per.shape == (2,) and per[0] > per[1]  # less noise, more similar
    assert metrics.ssim(clean, clean).item() == pytest.approx(1.0, abs=1e-6)
    # differentiable: usable as a loss
    x = noisy.clone().requires_grad_(True)
    metrics.ssim(x, clean).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        metrics.ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
