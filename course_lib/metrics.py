"""Evaluation metrics.

Introduced in chapter 00 (accuracy). Chapter 07 (segmentation) adds the confusion matrix and
(mean) intersection over union; chapter 08 (detection) adds detection matching (COCO's and PASCAL VOC's
rules), precision-recall curves, average precision (all-point and 101-point interpolation), mAP over
classes and IoU thresholds, and :func:`coco_map`, which reproduces ``pycocotools``' box evaluation.
Chapters 09 and 10 (generative models) add :func:`frechet_distance` and :func:`mode_coverage`.
Every public function checks its inputs and names the argument (and image) that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from course_lib import ops

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCO_RECALL_LEVELS",
    "MATCH_RULES",
    "accuracy",
    "average_precision",
    "coco_map",
    "confusion_matrix",
    "frechet_distance",
    "frechet_distance_from_stats",
    "iou_from_confusion",
    "match_detections",
    "mean_average_precision",
    "mean_iou",
    "mode_coverage",
    "precision_recall",
    "topk_accuracy",
]


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


# --------------------------------------------------------------------------------------------
# dense prediction (chapter 07)
# --------------------------------------------------------------------------------------------
def _check_labels(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor of class indices, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {x.dtype}")


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs over every element (pixel) of ``pred`` and ``target``.

    Row ``i``, column ``j`` counts the elements of class ``i`` predicted as ``j``, as
    ``sklearn.metrics.confusion_matrix`` does. One ``bincount``, on the inputs' device.

    Args:
        pred: integer predictions, any shape (e.g. ``Tensor[N, H, W]``).
        target: integer labels, the same shape.
        num_classes: number of classes ``C``; labels must lie in ``[0, C)``.
        ignore_index: a target value to skip (e.g. 255 for "unlabelled" pixels).
    Returns:
        ``Tensor[C, C]`` int64.

    Introduced in chapter 07.
    """
    _check_labels(pred, "pred")
    _check_labels(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    pred, target = pred.reshape(-1), target.reshape(-1)
    if ignore_index is not None:
        valid = target != ignore_index
        pred, target = pred[valid], target[valid]
    for name, x in (("pred", pred), ("target", target)):
        if x.numel() and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(
                f"{name} values must be in [0, {num_classes}), got range [{int(x.min())}, {int(x.max())}]"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    r"""Per-class intersection over union from a confusion matrix: :math:`\mathrm{IoU}_c =
    \frac{TP_c}{TP_c + FP_c + FN_c}`.

    Args:
        cm: ``Tensor[C, C]`` counts, rows = true class, columns = predicted class.
    Returns:
        ``Tensor[C]`` float64; NaN for a class that appears neither in the targets nor in the predictions
        (its IoU is undefined, and :func:`mean_iou` leaves it out).

    Introduced in chapter 07.
    """
    if not isinstance(cm, torch.Tensor):
        raise TypeError(f"cm must be a Tensor[C, C] of counts, got {type(cm).__name__}")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square Tensor[C, C], got {tuple(cm.shape)}")
    cm = cm.double()
    if not (cm >= 0).all():  # also catches NaN
        raise ValueError("cm must hold non-negative counts")
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> torch.Tensor:
    """Mean over classes of the IoU, accumulated over all pixels of all images (the PASCAL VOC /
    Cityscapes definition), skipping classes absent from both ``pred`` and ``target``.

    Args:
        pred, target, num_classes, ignore_index: as in :func:`confusion_matrix`.
    Returns:
        a scalar float64 tensor in [0, 1].

    Introduced in chapter 07.
    """
    per_class = iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index=ignore_index))
    if torch.isnan(per_class).all():
        raise ValueError("mean_iou: no labelled pixels (every target is ignore_index or the input is empty)")
    return per_class.nanmean()


# --------------------------------------------------------------------------------------------
# detection (chapter 08)
# --------------------------------------------------------------------------------------------
#: COCO's ten IoU thresholds 0.5, 0.55, ..., 0.95, exactly as ``pycocotools`` makes them
#: (``np.linspace(.5, 0.95, 10)``; the ninth is 0.8999999999999999, not 0.9).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
#: COCO's 101 recall levels 0, 0.01, ..., 1, exactly as ``pycocotools`` makes them
#: (``np.linspace(0.0, 1.00, 101)``; ``torch.linspace`` differs from these by one ulp at ten levels).
COCO_RECALL_LEVELS: tuple[float, ...] = tuple(float(r) for r in np.linspace(0.0, 1.00, 101))
#: The matching rules of :func:`match_detections`.
MATCH_RULES = ("coco", "voc")

_COCO_LEVELS = np.asarray(COCO_RECALL_LEVELS)


def _check_threshold(value: object, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_rule(rule: object) -> None:
    if rule not in MATCH_RULES:
        raise ValueError(f"rule must be one of {MATCH_RULES}, got {rule!r}")


def _check_count(value: object, name: str, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")


def _check_scores(scores: object, name: str, n: int | None = None) -> None:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} must be a floating Tensor[P], got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {scores.dtype}")
    if scores.ndim != 1 or (n is not None and scores.shape[0] != n):
        want = "[P]" if n is None else f"[P] = [{n}] (one per box)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")


def _check_class_labels(labels: object, name: str, n: int, num_classes: int) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be an integer Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must be in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )


def _numpy(x: torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    return x.detach().cpu().numpy().astype(dtype, copy=False)


def _coco_iou_paired(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of ``dets[..., :]`` with ``gts[..., :]`` (xyxy, float64, broadcastable ``[..., 4]``), computed
    as ``pycocotools`` does.

    COCO stores boxes as ``(x, y, w, h)`` and computes, in double precision, the intersection width as
    ``min(x_d + w_d, x_g + w_g) - max(x_d, x_g)`` (0 unless positive), the same for the height, and
    ``IoU = wh / (area_d + area_g - wh)``. Written the same way here, from ``w = x2 - x1``, so that every
    IoU is bit-for-bit COCO's and a pair on a threshold falls on the same side.
    """
    dw, dh = dets[..., 2] - dets[..., 0], dets[..., 3] - dets[..., 1]
    gw, gh = gts[..., 2] - gts[..., 0], gts[..., 3] - gts[..., 1]
    w = np.minimum(dets[..., 0] + dw, gts[..., 0] + gw) - np.maximum(dets[..., 0], gts[..., 0])
    h = np.minimum(dets[..., 1] + dh, gts[..., 1] + gh) - np.maximum(dets[..., 1], gts[..., 1])
    inter = w * h
    union = dw * dh + gw * gh - inter
    out = np.zeros(np.broadcast(w, h).shape)
    np.divide(inter, union, out=out, where=(w > 0) & (h > 0))
    return out


def _coco_iou(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """``[D, G]`` IoU matrix of ``dets [D, 4]`` with ``gts [G, 4]``, see :func:`_coco_iou_paired`."""
    return _coco_iou_paired(dets[:, None, :], gts[None, :, :])


def _segment_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenated index ranges ``[starts[i], starts[i] + counts[i])``."""
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))


def _match_grouped(
    det_group: np.ndarray,
    det_rank: np.ndarray,
    det_boxes: np.ndarray,
    gt_group: np.ndarray,
    gt_boxes: np.ndarray,
    thresholds: np.ndarray,
    rule: str,
) -> np.ndarray:
    """Greedy matching of detections to ground truths within groups (one group = one image and class),
    at every threshold at once. Returns ``[T, D]`` bool: true positive or not.

    ``det_group``/``gt_group`` are sorted group keys (ground truths in their given order inside a group);
    ``det_rank`` is a detection's position in its group by decreasing score. Groups are independent, so
    round ``r`` matches the ``r``-th detection of every group together: as many rounds as the largest
    group has detections, each vectorized over groups, thresholds and candidate pairs. Each IoU is
    computed once and serves every threshold.
    """
    num_thr, num_det = thresholds.shape[0], det_group.shape[0]
    tp = np.zeros((num_thr, num_det), dtype=bool)
    start = np.searchsorted(gt_group, det_group, side="left")
    counts = np.searchsorted(gt_group, det_group, side="right") - start
    if counts.sum() == 0:
        return tp
    pair_gt = _segment_ranges(start, counts)  # every (detection, ground truth) pair of the same group
    pair_det = np.repeat(np.arange(num_det), counts)
    iou = _coco_iou_paired(det_boxes[pair_det], gt_boxes[pair_gt])
    pair_start = np.cumsum(counts) - counts
    has = counts > 0
    best = np.full(num_det, -1.0)
    best[has] = np.maximum.reduceat(iou, pair_start[has])
    # COCO compares IoU >= min(t, 1 - 1e-10); the VOC devkit IoU >= t
    thr = np.minimum(thresholds, 1 - 1e-10) if rule == "coco" else thresholds
    active = np.flatnonzero(best >= thr.min())  # the others match nothing at any threshold
    if active.size == 0:
        return tp
    if rule == "voc":  # the ground truth of largest IoU, the first among equals, taken or not
        first = np.where(iou == best[pair_det], np.arange(iou.size), iou.size)
        best_gt = pair_gt[np.minimum.reduceat(first, pair_start[active])]
        best = best[active]
    taken = np.zeros((num_thr, gt_group.shape[0]), dtype=bool)
    by_rank = np.argsort(det_rank[active], kind="stable")
    bounds = np.cumsum(np.bincount(det_rank[active]))
    for chunk in np.split(by_rank, bounds[:-1]):
        if chunk.size == 0:
            continue
        dets = active[chunk]
        if rule == "voc":
            gts = best_gt[chunk]
            ok = (best[chunk][None, :] >= thr[:, None]) & ~taken[:, gts]  # a taken best box: duplicate
            rows, cols = np.nonzero(ok)
            taken[rows, gts[cols]] = True
        else:  # the still unmatched ground truth of largest IoU, the last among equals (COCOeval's loop)
            n = counts[dets]
            seg = np.cumsum(n) - n
            pairs = _segment_ranges(pair_start[dets], n)
            cand = np.where(taken[:, pair_gt[pairs]], -1.0, iou[pairs][None, :])  # [T, pairs]
            top = np.maximum.reduceat(cand, seg, axis=1)  # [T, dets]
            last = np.where(cand == np.repeat(top, n, axis=1), np.arange(pairs.size), -1)
            last = np.maximum.reduceat(last, seg, axis=1)
            ok = top >= thr[:, None]
            rows, cols = np.nonzero(ok)
            taken[rows, pair_gt[pairs[last[rows, cols]]]] = True
        tp[rows, dets[cols]] = True
    return tp


def match_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    gt_boxes: torch.Tensor,
    iou_threshold: float = 0.5,
    *,
    rule: str = "coco",
) -> torch.Tensor:
    """Mark each detection of one image and one class as a true or a false positive.

    Detections are visited by decreasing score (ties in the order given). A detection can only be a true
    positive with IoU ``>= iou_threshold``, and each ground-truth box can be found once, so a duplicate
    detection of a found object counts against precision. The two standard rules differ in which box a
    detection tries:

    - ``rule="coco"`` (``pycocotools``' ``COCOeval``): the *still unmatched* ground truth it overlaps
      most (the last such box among equal IoUs, as COCO's loop does; the threshold is capped at
      ``1 - 1e-10`` as in COCO). A detection whose best box is taken can still match a second-best one.
    - ``rule="voc"`` (the PASCAL VOC devkit, ``VOCevaldet.m``): the ground truth it overlaps most,
      *matched or not* (the first among equal IoUs). If that box is already taken, the detection is a
      false positive, even when another free box overlaps it by more than the threshold.

    IoUs are computed in float64 as ``pycocotools`` computes them (see :func:`coco_map`), in the
    continuous convention (no "+1" pixel; the VOC devkit's own code adds one).

    Args:
        boxes: ``Tensor[P, 4]`` detected boxes ``(x1, y1, x2, y2)``.
        scores: ``Tensor[P]`` their scores.
        gt_boxes: ``Tensor[G, 4]`` ground-truth boxes.
        iou_threshold: the IoU a match needs, in [0, 1].
        rule: ``"coco"`` or ``"voc"``.
    Returns:
        ``Tensor[P]`` bool, in the order of ``boxes``, on their device.

    Introduced in chapter 08.
    """
    thr = _check_threshold(iou_threshold, "iou_threshold")
    _check_rule(rule)
    ops._check_boxes(boxes, "boxes")
    ops._check_boxes(gt_boxes, "gt_boxes")
    _check_scores(scores, "scores", boxes.shape[0])
    order = np.argsort(-_numpy(scores), kind="stable")  # ties keep the given order
    n, g = boxes.shape[0], gt_boxes.shape[0]
    tp = _match_grouped(
        np.zeros(n, dtype=np.int64),
        np.arange(n),
        _numpy(boxes)[order],
        np.zeros(g, dtype=np.int64),
        _numpy(gt_boxes),
        np.array([thr]),
        rule,
    )
    is_tp = np.zeros(n, dtype=bool)
    is_tp[order] = tp[0]
    return torch.from_numpy(is_tp).to(boxes.device)


def precision_recall(
    scores: torch.Tensor, is_tp: torch.Tensor, num_gt: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision and recall after each detection, taking detections by decreasing score.

    Args:
        scores: ``Tensor[P]`` detection scores (pooled over images).
        is_tp: ``Tensor[P]`` bool, from :func:`match_detections`.
        num_gt: number of ground-truth objects (``> 0``).
    Returns:
        ``(precision, recall, thresholds)``, each ``Tensor[P]`` float64: after keeping the detections
        scored ``>= thresholds[k]``, precision is ``TP / (k + 1)`` and recall ``TP / num_gt``.

    Introduced in chapter 08.
    """
    _check_scores(scores, "scores")
    if not isinstance(is_tp, torch.Tensor):
        raise TypeError(f"is_tp must be a bool Tensor[P], got {type(is_tp).__name__}")
    if is_tp.dtype != torch.bool:
        raise TypeError(f"is_tp must be a bool Tensor (from match_detections), got dtype {is_tp.dtype}")
    if is_tp.shape != scores.shape:
        raise ValueError(
            f"is_tp must have the shape of scores {tuple(scores.shape)}, got {tuple(is_tp.shape)}"
        )
    if isinstance(num_gt, bool) or not isinstance(num_gt, int | np.integer) or num_gt < 1:
        raise ValueError(f"num_gt must be a positive int (precision-recall needs objects), got {num_gt!r}")
    order = torch.sort(scores, descending=True, stable=True).indices
    tp = torch.cumsum(is_tp[order].double(), 0)
    if tp.numel() and tp[-1] > num_gt:
        raise ValueError(f"is_tp has {int(tp[-1])} true positives but num_gt is {num_gt}")
    rank = torch.arange(1, order.numel() + 1, dtype=torch.float64, device=scores.device)
    return tp / rank, tp / int(num_gt), scores[order].double()


def average_precision(precision: torch.Tensor, recall: torch.Tensor, method: str = "all") -> float:
    """Area under the interpolated precision-recall curve.

    The precision at recall ``r`` is first replaced by its *envelope*, the best precision at any recall
    ``>= r`` (so the curve never goes up to the right). Then:

    - ``"all"``: the exact area under that step curve (all-point interpolation, PASCAL VOC 2010+);
    - ``"101"``: the mean of the envelope at the recalls :data:`COCO_RECALL_LEVELS` (0, 0.01, ..., 1,
      COCO's exact values), 0 where a recall is never reached.

    Args:
        precision, recall: ``Tensor[P]`` from :func:`precision_recall` (recall non-decreasing).
        method: ``"all"`` or ``"101"``.
    Returns:
        AP in [0, 1] as a float (0 when there are no detections).

    Introduced in chapter 08.
    """
    if method not in ("all", "101"):
        raise ValueError(f"method must be 'all' or '101', got {method!r}")
    for name, x in (("precision", precision), ("recall", recall)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a floating Tensor[P], got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if precision.shape != recall.shape or precision.ndim != 1:
        raise ValueError(
            f"precision and recall must be [P] of equal shape, got {tuple(precision.shape)} and {tuple(recall.shape)}"
        )
    if precision.numel() == 0:
        return 0.0
    p = precision.detach().double().cpu()
    r = recall.detach().double().cpu()
    for name, x in (("precision", p), ("recall", r)):
        if not ((x >= 0) & (x <= 1)).all():  # also catches NaN
            raise ValueError(f"{name} values must be in [0, 1], got range [{x.min():.4g}, {x.max():.4g}]")
    if (r.diff() < 0).any():
        raise ValueError("recall must be non-decreasing (sort detections by decreasing score)")
    envelope = torch.flip(torch.cummax(torch.flip(p, [0]), 0).values, [0])
    if method == "all":
        widths = torch.diff(r, prepend=torch.zeros(1, dtype=r.dtype))
        return float((widths * envelope).sum())
    levels = torch.from_numpy(_COCO_LEVELS)
    idx = torch.searchsorted(r, levels, side="left")  # first detection reaching each recall level
    reached = idx < r.numel()
    values = torch.where(reached, envelope[idx.clamp(max=r.numel() - 1)], torch.zeros_like(levels))
    return float(values.mean())


def _check_image(k: int, p: object, t: object, num_classes: int) -> None:
    """Check one image's detections and ground truth; name the image and key of any problem."""
    for name, d, keys in (
        ("predictions", p, ("boxes", "scores", "labels")),
        ("targets", t, ("boxes", "labels")),
    ):
        if not isinstance(d, Mapping):
            raise TypeError(f"{name}[{k}] must be a mapping with keys {list(keys)}, got {type(d).__name__}")
        missing = [key for key in keys if key not in d]
        if missing:
            raise ValueError(f"{name}[{k}] (image {k}) is missing keys {missing}")
        for key in keys:
            if not isinstance(d[key], torch.Tensor):
                raise TypeError(f"{name}[{k}]['{key}'] must be a Tensor, got {type(d[key]).__name__}")
    ops._check_boxes(p["boxes"], f"predictions[{k}]['boxes']")
    ops._check_boxes(t["boxes"], f"targets[{k}]['boxes']")
    n_box = p["boxes"].shape[0]
    if (
        p["scores"].ndim != 1
        or p["labels"].ndim != 1
        or not n_box == p["scores"].shape[0] == p["labels"].shape[0]
    ):
        raise ValueError(
            f"image {k}: predictions must have one score and one label per box, got boxes "
            f"{tuple(p['boxes'].shape)}, scores {tuple(p['scores'].shape)} and labels {tuple(p['labels'].shape)}"
        )
    if t["labels"].ndim != 1 or t["labels"].shape[0] != t["boxes"].shape[0]:
        raise ValueError(
            f"image {k}: targets must have one label per box, got boxes {tuple(t['boxes'].shape)} "
            f"and labels {tuple(t['labels'].shape)}"
        )
    _check_scores(p["scores"], f"predictions[{k}]['scores']")
    _check_class_labels(p["labels"], f"predictions[{k}]['labels']", n_box, num_classes)
    _check_class_labels(t["labels"], f"targets[{k}]['labels']", t["boxes"].shape[0], num_classes)


def _detection_arrays(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    num_classes: int,
) -> dict[str, np.ndarray]:
    """Check the per-image mappings and concatenate them into NumPy arrays (boxes and scores float64).

    The cheap checks (types, shapes, dtypes) run image by image; the value checks (finite, ordered
    corners, no NaN score, labels in range) run once on the concatenation, and only if one fails is the
    image found and checked alone, so the error names the image and key.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes}")
    for name, seq in (("predictions", predictions), ("targets", targets)):
        if isinstance(seq, Mapping | torch.Tensor | str) or not isinstance(seq, Sequence):
            raise TypeError(f"{name} must be a list with one mapping per image, got {type(seq).__name__}")
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must have one entry per image, got {len(predictions)} and {len(targets)}"
        )
    if len(predictions) == 0:
        raise ValueError("predictions and targets are empty: the targets hold no objects")
    kinds = (("predictions", "boxes", 2), ("predictions", "scores", 1), ("predictions", "labels", 1))
    kinds += (("targets", "boxes", 2), ("targets", "labels", 1))
    for k, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        d = {"predictions": p, "targets": t}
        try:
            shapes_ok = all(
                isinstance(d[name][key], torch.Tensor) and d[name][key].ndim == nd for name, key, nd in kinds
            ) and (
                p["boxes"].shape[-1] == t["boxes"].shape[-1] == 4
                and p["boxes"].shape[0] == p["scores"].shape[0] == p["labels"].shape[0]
                and t["boxes"].shape[0] == t["labels"].shape[0]
                and p["boxes"].is_floating_point()
                and t["boxes"].is_floating_point()
                and p["scores"].is_floating_point()
                and not (
                    p["labels"].is_floating_point()
                    or p["labels"].is_complex()
                    or p["labels"].dtype == torch.bool
                )
                and not (
                    t["labels"].is_floating_point()
                    or t["labels"].is_complex()
                    or t["labels"].dtype == torch.bool
                )
            )
        except (TypeError, KeyError):
            shapes_ok = False
        if not shapes_ok:
            _check_image(k, p, t, num_classes)  # raises, naming what is wrong
    cat = {
        (name, key): torch.cat([d[key].detach().cpu() for d in seq])
        for name, seq in (("predictions", predictions), ("targets", targets))
        for key in (("boxes", "scores", "labels") if name == "predictions" else ("boxes", "labels"))
    }
    bad = {}
    for name in ("predictions", "targets"):
        b, lab = cat[name, "boxes"], cat[name, "labels"]
        bad[name] = (
            ~torch.isfinite(b).all(dim=1)
            | (b[:, 2] < b[:, 0])
            | (b[:, 3] < b[:, 1])
            | (lab < 0)
            | (lab >= num_classes)
        )
    bad["predictions"] |= torch.isnan(cat["predictions", "scores"])
    for name, seq in (("predictions", predictions), ("targets", targets)):
        if bad[name].any():
            counts = torch.tensor([d["boxes"].shape[0] for d in seq])
            k = int(torch.searchsorted(counts.cumsum(0), torch.nonzero(bad[name])[0, 0], right=True))
            _check_image(k, predictions[k], targets[k], num_classes)  # raises, naming what is wrong
    det_counts = np.array([p["boxes"].shape[0] for p in predictions])
    gt_counts = np.array([t["boxes"].shape[0] for t in targets])
    return {
        "det_image": np.repeat(np.arange(len(predictions)), det_counts),
        "det_boxes": cat["predictions", "boxes"].double().numpy(),
        "det_scores": cat["predictions", "scores"].double().numpy(),
        "det_labels": cat["predictions", "labels"].long().numpy(),
        "gt_image": np.repeat(np.arange(len(targets)), gt_counts),
        "gt_boxes": cat["targets", "boxes"].double().numpy(),
        "gt_labels": cat["targets", "labels"].long().numpy(),
    }


def _evaluate_detections(
    arrays: dict[str, np.ndarray],
    num_classes: int,
    thresholds: np.ndarray,
    rule: str,
    max_detections: int | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Match the detections of every image and class, as ``COCOeval.evaluateImg`` does, and pool them.

    Per image and class, detections are stably sorted by decreasing score and cut to the best
    ``max_detections``, then matched (:func:`_match_grouped`). The pooled detections of a class are
    ranked by a stable sort of their scores, ties in image order (as ``COCOeval.accumulate``). Returns,
    per class, ``(scores [D], is_tp [T, D])`` in rank order, and the number of objects per class.
    """
    a = arrays
    num_gt = np.bincount(a["gt_labels"], minlength=num_classes)
    # detections grouped by (image, class), best score first inside a group, ties in the given order
    det_group = a["det_image"] * num_classes + a["det_labels"]
    order = np.lexsort((-a["det_scores"], det_group))
    det_group = det_group[order]
    first = np.flatnonzero(np.r_[True, det_group[1:] != det_group[:-1]]) if order.size else np.zeros(0, int)
    rank = np.arange(order.size) - np.repeat(first, np.diff(np.r_[first, order.size]))
    if max_detections is not None:
        keep = rank < max_detections
        order, det_group, rank = order[keep], det_group[keep], rank[keep]
    gt_group = a["gt_image"] * num_classes + a["gt_labels"]
    gt_order = np.argsort(gt_group, kind="stable")
    tp = _match_grouped(
        det_group, rank, a["det_boxes"][order], gt_group[gt_order], a["gt_boxes"][gt_order], thresholds, rule
    )
    # per class, rank by score; ties keep image order, then the order inside the image
    scores, labels = a["det_scores"][order], a["det_labels"][order]
    by_class = np.lexsort((-scores, labels))
    scores, labels, tp = scores[by_class], labels[by_class], tp[:, by_class]
    bounds = np.searchsorted(labels, np.arange(num_classes + 1))
    pooled = [
        (scores[bounds[c] : bounds[c + 1]], tp[:, bounds[c] : bounds[c + 1]]) for c in range(num_classes)
    ]
    return pooled, num_gt


def _pr_curves(
    pooled: list[tuple[np.ndarray, np.ndarray]], num_gt: np.ndarray
) -> list[list[tuple[torch.Tensor, torch.Tensor] | None]]:
    """Per threshold and class, ``(precision, recall)`` after each ranked detection (None without objects)."""
    num_thresholds = pooled[0][1].shape[0]
    curves: list[list[tuple[torch.Tensor, torch.Tensor] | None]] = [[] for _ in range(num_thresholds)]
    for (_, tp), n in zip(pooled, num_gt, strict=True):
        cum = np.cumsum(tp, axis=1, dtype=np.float64)
        rank = np.arange(1, tp.shape[1] + 1, dtype=np.float64)
        for ti in range(num_thresholds):
            curves[ti].append(
                None if n == 0 else (torch.from_numpy(cum[ti] / rank), torch.from_numpy(cum[ti] / n))
            )
    return curves


def mean_average_precision(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    num_classes: int,
    *,
    iou_thresholds: Sequence[float] = (0.5,),
    method: str = "all",
    rule: str = "coco",
    max_detections: int | None = None,
) -> dict[str, object]:
    """Mean average precision over classes (and IoU thresholds), the standard detection score.

    For each class and threshold, detections of each image are matched with :func:`match_detections`'s
    ``rule``, pooled over images, ranked by score (stable: ties in image order) and turned into an AP with
    :func:`average_precision`. Classes with no ground-truth object are left out of the mean.
    ``iou_thresholds=(0.5,)`` gives PASCAL's mAP@0.5 (with ``rule="voc"``, VOC's matching); for COCO's
    mAP@[.5:.95] use :func:`coco_map`, which reproduces ``pycocotools`` exactly.

    Args:
        predictions: per image a mapping with ``"boxes"`` ``Tensor[P, 4]``, ``"scores"`` ``Tensor[P]``
            and ``"labels"`` ``Tensor[P]`` (torchvision's detection output format).
        targets: per image a mapping with ``"boxes"`` ``Tensor[G, 4]`` and ``"labels"`` ``Tensor[G]``.
        num_classes: labels lie in ``[0, num_classes)``.
        iou_thresholds: IoU thresholds to average over.
        method: see :func:`average_precision`.
        rule: ``"coco"`` or ``"voc"``, see :func:`match_detections`.
        max_detections: if given, only the best ``max_detections`` detections of each image *and class*
            count (COCO's ``maxDets``, applied as ``COCOeval.evaluateImg`` applies it).
    Returns:
        ``{"map": float, "ap": Tensor[T, C] float64 (NaN for classes without objects), "num_gt":
        Tensor[C], "curves": list}``; ``curves[t][c]`` is ``(precision, recall)``, float64 tensors after
        each ranked detection of class ``c`` at threshold ``t`` (as :func:`precision_recall` gives them,
        for plotting), or None for a class without objects.

    Introduced in chapter 08.
    """
    if isinstance(iou_thresholds, torch.Tensor):
        iou_thresholds = iou_thresholds.reshape(-1).tolist()
    if isinstance(iou_thresholds, str) or not isinstance(iou_thresholds, Sequence):
        raise TypeError(f"iou_thresholds must be a sequence of numbers, got {type(iou_thresholds).__name__}")
    thresholds = [_check_threshold(t, "each of iou_thresholds") for t in iou_thresholds]
    if not thresholds:
        raise ValueError("iou_thresholds must not be empty")
    if method not in ("all", "101"):
        raise ValueError(f"method must be 'all' or '101', got {method!r}")
    _check_rule(rule)
    _check_count(max_detections, "max_detections", allow_none=True)
    arrays = _detection_arrays(predictions, targets, num_classes)
    pooled, num_gt = _evaluate_detections(
        arrays, num_classes, np.asarray(thresholds, dtype=np.float64), rule, max_detections
    )
    if num_gt.sum() == 0:
        raise ValueError("mean_average_precision: the targets hold no objects")
    curves = _pr_curves(pooled, num_gt)
    ap = torch.full((len(thresholds), num_classes), float("nan"), dtype=torch.float64)
    for ti in range(len(thresholds)):
        for c in range(num_classes):
            if curves[ti][c] is not None:
                ap[ti, c] = average_precision(*curves[ti][c], method)
    return {"map": float(ap.nanmean()), "ap": ap, "num_gt": torch.from_numpy(num_gt), "curves": curves}


def coco_map(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    num_classes: int,
    *,
    max_detections: int = 100,
) -> dict[str, object]:
    """COCO's box mAP: ``pycocotools``' ``COCOeval`` (``iouType="bbox"``, area range ``"all"``,
    ``maxDets=max_detections``), reproduced step for step.

    - thresholds :data:`COCO_IOU_THRESHOLDS` and recall levels :data:`COCO_RECALL_LEVELS`, COCO's exact
      values;
    - per image and class, the ``max_detections`` best-scored detections (stable sort: ties keep their
      order), matched with ``rule="coco"`` of :func:`match_detections` (IoU ``>= t``, ``t`` capped at
      ``1 - 1e-10``), IoUs in float64 from ``(x, y, w, h)`` as COCO computes them;
    - per class, detections of all images ranked by a stable sort of their scores (ties in image order),
      precision ``TP / (TP + FP + eps)`` (COCO adds ``eps = 2.2e-16``, so a perfect detector scores
      0.9999999999999998), its envelope read at the 101 recall levels (0 where never reached);
    - AP averages the 101 values; ``"map"`` averages over thresholds and the classes that have objects.

    Every ground-truth box counts (no ``iscrowd`` or area filtering: the ``"all"`` range).

    Args:
        predictions, targets, num_classes: as in :func:`mean_average_precision`.
        max_detections: COCO's ``maxDets`` (100 in COCO's headline number).
    Returns:
        a dict with ``"map"`` (mAP@[.5:.95]), ``"map50"``, ``"map75"`` (floats), ``"ap"``
        ``Tensor[10, C]`` float64 (NaN for classes without objects), ``"num_gt"`` ``Tensor[C]``,
        ``"precision"`` ``Tensor[10, 101, C]`` (COCO's interpolated precision array ``eval["precision"]``
        for area "all", with NaN where COCO has -1) and ``"curves"`` as in :func:`mean_average_precision`.

    Introduced in chapter 08.
    """
    _check_count(max_detections, "max_detections")
    arrays = _detection_arrays(predictions, targets, num_classes)
    thresholds = np.asarray(COCO_IOU_THRESHOLDS)
    pooled, num_gt = _evaluate_detections(arrays, num_classes, thresholds, "coco", int(max_detections))
    if num_gt.sum() == 0:
        raise ValueError("coco_map: the targets hold no objects")
    precision = np.full((thresholds.shape[0], _COCO_LEVELS.shape[0], num_classes), np.nan)
    for c, (_, tp) in enumerate(pooled):
        if num_gt[c] == 0:
            continue
        tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
        fp_sum = np.cumsum(~tp, axis=1, dtype=np.float64)
        recall = tp_sum / num_gt[c]
        prec = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        envelope = np.flip(np.maximum.accumulate(np.flip(prec, 1), axis=1), 1)
        for ti in range(thresholds.shape[0]):
            idx = np.searchsorted(recall[ti], _COCO_LEVELS, side="left")
            reached = idx < tp.shape[1]
            values = envelope[ti][np.minimum(idx, tp.shape[1] - 1)] if tp.shape[1] else np.zeros(idx.shape)
            precision[ti, :, c] = np.where(reached, values, 0.0)
    valid = num_gt > 0
    ap = np.full((thresholds.shape[0], num_classes), np.nan)
    ap[:, valid] = precision[:, :, valid].mean(axis=1)
    return {
        "map": float(np.mean(precision[:, :, valid])),  # as COCOeval.summarize: one mean over (T, R, K)
        "map50": float(np.mean(precision[0][:, valid])),
        "map75": float(np.mean(precision[5][:, valid])),
        "ap": torch.from_numpy(ap),
        "num_gt": torch.from_numpy(num_gt),
        "precision": torch.from_numpy(precision),
        "curves": _pr_curves(pooled, num_gt),
    }


# --------------------------------------------------------------------------------------------
# generative models (chapters 09-12)
# --------------------------------------------------------------------------------------------
def _check_features(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point() or x.ndim != 2:
        raise ValueError(f"{name} must be a float Tensor[N, D], got {tuple(x.shape)} {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")


def frechet_distance_from_stats(
    mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor
) -> float:
    r"""The Fréchet (2-Wasserstein) distance between two Gaussians, squared:

    .. math::
        d^2 = \|\mu_a - \mu_b\|^2 + \operatorname{tr}\Big(\Sigma_a + \Sigma_b - 2\,(\Sigma_a\Sigma_b)^{1/2}\Big)

    The trace of the matrix square root is computed as :math:`\sum_i \sqrt{\lambda_i}` with
    :math:`\lambda_i` the eigenvalues of the symmetric :math:`\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2}`
    (which has the eigenvalues of :math:`\Sigma_a\Sigma_b`), in float64; tiny negative eigenvalues
    from rounding are clipped to zero. Equal to the ``scipy.linalg.sqrtm`` computation of FID
    (Heusel et al., 2017) on well-conditioned inputs, and real-valued on singular ones.

    Args:
        mu_a, mu_b: ``Tensor[D]`` means.
        cov_a, cov_b: ``Tensor[D, D]`` symmetric positive semi-definite covariances.
    Returns:
        the squared distance (``>= 0``), a float.

    Introduced in chapter 09.
    """
    for name, m in (("mu_a", mu_a), ("mu_b", mu_b)):
        if not isinstance(m, torch.Tensor) or m.ndim != 1:
            raise ValueError(f"{name} must be a Tensor[D], got {getattr(m, 'shape', type(m).__name__)}")
    d = mu_a.shape[0]
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if not isinstance(c, torch.Tensor) or c.shape != (d, d):
            raise ValueError(
                f"{name} must be a Tensor[{d}, {d}], got {getattr(c, 'shape', type(c).__name__)}"
            )
    if mu_b.shape != (d,):
        raise ValueError(f"mu_a and mu_b must have the same length, got {d} and {mu_b.shape[0]}")
    mu_a, mu_b, cov_a, cov_b = (t.detach().to("cpu", torch.float64) for t in (mu_a, mu_b, cov_a, cov_b))
    cov_a, cov_b = (cov_a + cov_a.T) / 2, (cov_b + cov_b.T) / 2
    w, v = torch.linalg.eigh(cov_a)
    sqrt_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = sqrt_a @ cov_b @ sqrt_a
    lam = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0)
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * lam.sqrt().sum()
    return max(float(value), 0.0)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    r"""Fréchet distance (squared) between Gaussians fitted to two sets of features.

    FID (Heusel et al., 2017) is this quantity on Inception-v3 pool features of 50,000 samples. The
    course computes it in a small classifier's feature space (:mod:`course_lib.judge`), so its values
    are course-scale analogues, not comparable with published FIDs. The estimate is biased upward at
    small ``N`` (the covariance estimates are noisy): compare values computed with the same ``N`` and
    always quote the distance between two real sets next to it.

    Args:
        feats_a: ``Tensor[N_a, D]`` features (``N_a >= 2``).
        feats_b: ``Tensor[N_b, D]`` features.
    Returns:
        the squared distance, a float.

    Introduced in chapter 09.
    """
    _check_features(feats_a, "feats_a")
    _check_features(feats_b, "feats_b")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must have the same D, got {feats_a.shape[1]} and {feats_b.shape[1]}"
        )
    if min(feats_a.shape[0], feats_b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 rows to estimate a covariance")
    a, b = feats_a.detach().to("cpu", torch.float64), feats_b.detach().to("cpu", torch.float64)
    return frechet_distance_from_stats(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1), b.mean(0),
                                       torch.cov(b.T).reshape(b.shape[1], -1))  # fmt: skip


def mode_coverage(
    samples: torch.Tensor,
    centers: torch.Tensor,
    std: float,
    *,
    k_sigma: float = 3.0,
    min_share: float = 0.1,
) -> dict:
    """How many modes of a mixture of isotropic Gaussians a sampler covers, and how well.

    The protocol of the unrolled-GAN and VEEGAN papers (Metz et al., 2017; Srivastava et al., 2017):
    a sample is *high quality* if it lies within ``k_sigma * std`` of its nearest centre; a mode is
    *covered* if it receives at least ``min_share`` of its fair share of high-quality samples
    (``min_share * N / M``), so a handful of stray points does not count as a mode.

    Args:
        samples: ``Tensor[N, D]``.
        centers: ``Tensor[M, D]`` the modes' centres.
        std: the modes' standard deviation (> 0).
        k_sigma: the radius of a mode in standard deviations.
        min_share: fraction of the uniform share ``N / M`` a mode needs to count as covered.
    Returns:
        ``{"modes": int, "high_quality": float, "counts": Tensor[M]}`` (high-quality samples per mode).

    Introduced in chapter 10.
    """
    _check_features(samples, "samples")
    _check_features(centers, "centers")
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples and centers must have the same D, got {samples.shape[1]} and {centers.shape[1]}"
        )
    if not std > 0 or not k_sigma > 0 or not 0 <= min_share <= 1:
        raise ValueError(
            f"need std > 0, k_sigma > 0 and 0 <= min_share <= 1, got {std}, {k_sigma}, {min_share}"
        )
    dist = torch.cdist(samples.detach().double(), centers.detach().to(samples.device).double())  # [N, M]
    nearest_d, nearest = dist.min(dim=1)
    good = nearest_d <= k_sigma * std
    counts = torch.bincount(nearest[good].cpu(), minlength=centers.shape[0])
    need = min_share * samples.shape[0] / centers.shape[0]
    return {
        "modes": int((counts >= max(need, 1)).sum()),
        "high_quality": float(good.double().mean()),
        "counts": counts,
    }


# --------------------------------------------------------------------------------------------
# image quality: PSNR and SSIM (chapter 19)
# --------------------------------------------------------------------------------------------
def _check_image_pair(pred: object, target: object) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (2, 3, 4):
            raise ValueError(
                f"{name} must be a floating-point Tensor[H, W], [C, H, W] or [N, C, H, W], got "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB.

    PSNR falls *linearly* in ``log MSE`` (halving the MSE gains 3.01 dB); it is not "inversely
    proportional" to it. Identical images give ``inf``.

    Args:
        pred, target: ``Tensor[H, W]`` or ``[C, H, W]`` (one image: a scalar) or ``[N, C, H, W]`` (one
            value per image, ``Tensor[N]``; average those for a data set's mean PSNR).
        data_range: the span of possible values (1 for images in [0, 1], 255 for bytes).

    Matches ``skimage.metrics.peak_signal_noise_ratio`` image by image. Introduced in chapter 19.
    """
    _check_image_pair(pred, target)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    dims = tuple(range(1, pred.ndim)) if pred.ndim == 4 else tuple(range(pred.ndim))
    mse = (pred.double() - target.double()).square().mean(dim=dims)
    return (10 * torch.log10(data_range**2 / mse)).to(pred.dtype)


def _gaussian_window(sigma: float, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    *,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) with an 11-tap Gaussian window (``sigma = 1.5``).

    With local (Gaussian-weighted) means ``mu``, variances ``s^2`` and covariance ``s_xy``:
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``; the map is averaged over the positions whose
    window lies inside the image (a border of ``radius`` pixels is left out) and over channels.

    Args:
        pred, target: ``Tensor[H, W]``, ``[C, H, W]`` (a scalar) or ``[N, C, H, W]`` (``Tensor[N]``),
            at least ``2 radius + 1`` = 11 pixels on a side.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=L, channel_axis=0)``. Differentiable (usable as a loss).
    Introduced in chapter 19.
    """
    _check_image_pair(pred, target)
    if not data_range > 0 or not sigma > 0:
        raise ValueError(f"data_range and sigma must be > 0, got {data_range}, {sigma}")
    ndim = pred.ndim
    x = (
        pred.double().reshape(-1, *pred.shape[-2:])[:, None]
        if ndim < 4
        else pred.double().flatten(0, 1)[:, None]
    )
    y = target.double().reshape(x.shape)
    g = _gaussian_window(sigma).to(x.device)
    if x.shape[-1] < len(g) or x.shape[-2] < len(g):
        raise ValueError(
            f"images must be at least {len(g)} px on a side for sigma={sigma}, got {tuple(pred.shape)}"
        )

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filtering
        t = torch.nn.functional.conv2d(t, g.view(1, 1, -1, 1))
        return torch.nn.functional.conv2d(t, g.view(1, 1, 1, -1))

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    per_map = s.mean(dim=(1, 2, 3))  # one value per (image, channel)
    if ndim == 4:
        return per_map.reshape(pred.shape[0], pred.shape[1]).mean(dim=1).to(pred.dtype)
    return per_map.mean().to(pred.dtype)


__all__ += ["psnr", "ssim"]
