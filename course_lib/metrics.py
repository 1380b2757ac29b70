"""Evaluation metrics.

Introduced in chapter 00 (accuracy). Chapter 07 (segmentation) adds the confusion matrix and
(mean) intersection over union; chapter 08 (detection) adds detection matching, precision-recall
curves, average precision (all-point and 101-point interpolation) and mAP over classes and IoU
thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from course_lib import ops

__all__ = [
    "accuracy",
    "average_precision",
    "confusion_matrix",
    "iou_from_confusion",
    "match_detections",
    "mean_average_precision",
    "mean_iou",
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
    if not isinstance(cm, torch.Tensor) or cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square Tensor[C, C], got {tuple(getattr(cm, 'shape', ()))}")
    cm = cm.double()
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
def match_detections(
    boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Mark each detection of one image and one class as a true or a false positive.

    Detections are visited by decreasing score; each takes the unmatched ground-truth box it overlaps
    most, if that IoU is at least ``iou_threshold``, and is a true positive; otherwise (no overlap
    large enough, or its best box already taken by a better detection) it is a false positive. This is
    the greedy matching of PASCAL VOC and COCO: a duplicate detection of a found object counts against
    precision.

    Args:
        boxes: ``Tensor[P, 4]`` detected boxes ``(x1, y1, x2, y2)``.
        scores: ``Tensor[P]`` their scores.
        gt_boxes: ``Tensor[G, 4]`` ground-truth boxes.
        iou_threshold: the IoU a match needs, in [0, 1].
    Returns:
        ``Tensor[P]`` bool, in the order of ``boxes``.

    Introduced in chapter 08.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    iou = ops.box_iou(boxes, gt_boxes)  # checks both box tensors
    if not isinstance(scores, torch.Tensor) or scores.shape != (boxes.shape[0],):
        raise ValueError(
            f"scores must be a Tensor[P] = [{boxes.shape[0]}], got {tuple(getattr(scores, 'shape', ()))}"
        )
    is_tp = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if boxes.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return is_tp
    taken = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=boxes.device)
    # sequential by nature: a detection's match depends on what better detections took
    for i in torch.sort(scores, descending=True, stable=True).indices.tolist():
        candidates = iou[i].masked_fill(taken, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            is_tp[i] = True
            taken[best] = True
    return is_tp


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
    if (
        not isinstance(scores, torch.Tensor)
        or not isinstance(is_tp, torch.Tensor)
        or scores.shape != is_tp.shape
    ):
        raise ValueError("scores and is_tp must be Tensors of the same shape [P]")
    if scores.ndim != 1 or is_tp.dtype != torch.bool:
        raise ValueError(f"scores must be [P] and is_tp a bool [P], got {tuple(scores.shape)} {is_tp.dtype}")
    if isinstance(num_gt, bool) or not isinstance(num_gt, int) or num_gt < 1:
        raise ValueError(f"num_gt must be a positive int (precision-recall needs objects), got {num_gt!r}")
    order = torch.sort(scores, descending=True, stable=True).indices
    tp = torch.cumsum(is_tp[order].double(), 0)
    if tp.numel() and tp[-1] > num_gt:
        raise ValueError(f"is_tp has {int(tp[-1])} true positives but num_gt is {num_gt}")
    rank = torch.arange(1, order.numel() + 1, dtype=torch.float64, device=scores.device)
    return tp / rank, tp / num_gt, scores[order].double()


def average_precision(precision: torch.Tensor, recall: torch.Tensor, method: str = "all") -> float:
    """Area under the interpolated precision-recall curve.

    The precision at recall ``r`` is first replaced by its *envelope*, the best precision at any recall
    ``>= r`` (so the curve never goes up to the right). Then:

    - ``"all"``: the exact area under that step curve (all-point interpolation, PASCAL VOC 2010+);
    - ``"101"``: the mean of the envelope at recalls 0, 0.01, ..., 1 (COCO), 0 where a recall is
      never reached.

    Args:
        precision, recall: ``Tensor[P]`` from :func:`precision_recall` (recall non-decreasing).
        method: ``"all"`` or ``"101"``.
    Returns:
        AP in [0, 1] as a float (0 when there are no detections).

    Introduced in chapter 08.
    """
    if method not in ("all", "101"):
        raise ValueError(f"method must be 'all' or '101', got {method!r}")
    if precision.shape != recall.shape or precision.ndim != 1:
        raise ValueError(
            f"precision and recall must be [P] of equal shape, got {tuple(precision.shape)} and {tuple(recall.shape)}"
        )
    if precision.numel() == 0:
        return 0.0
    p = precision.double().cpu()
    r = recall.double().cpu()
    if (r.diff() < 0).any():
        raise ValueError("recall must be non-decreasing (sort detections by decreasing score)")
    envelope = torch.flip(torch.cummax(torch.flip(p, [0]), 0).values, [0])
    if method == "all":
        widths = torch.diff(r, prepend=torch.zeros(1, dtype=r.dtype))
        return float((widths * envelope).sum())
    levels = torch.linspace(0, 1, 101, dtype=torch.float64)
    idx = torch.searchsorted(r, levels, side="left")  # first detection reaching each recall level
    reached = idx < r.numel()
    values = torch.where(reached, envelope[idx.clamp(max=r.numel() - 1)], torch.zeros_like(levels))
    return float(values.mean())


def mean_average_precision(
    predictions: Sequence[Mapping[str, torch.Tensor]],
    targets: Sequence[Mapping[str, torch.Tensor]],
    num_classes: int,
    *,
    iou_thresholds: Sequence[float] = (0.5,),
    method: str = "all",
) -> dict[str, object]:
    """Mean average precision over classes (and IoU thresholds), the standard detection score.

    For each class and threshold, detections of all images are matched per image with
    :func:`match_detections`, pooled, ranked by score and turned into an AP with
    :func:`average_precision`. Classes with no ground-truth object are left out of the mean.
    ``iou_thresholds=(0.5,)`` gives PASCAL's mAP@0.5; ``torch.arange(0.5, 0.96, 0.05)`` with
    ``method="101"`` gives COCO's mAP@[.5:.95].

    Args:
        predictions: per image a mapping with ``"boxes"`` ``Tensor[P, 4]``, ``"scores"`` ``Tensor[P]``
            and ``"labels"`` ``Tensor[P]`` (torchvision's detection output format).
        targets: per image a mapping with ``"boxes"`` ``Tensor[G, 4]`` and ``"labels"`` ``Tensor[G]``.
        num_classes: labels lie in ``[0, num_classes)``.
        iou_thresholds: IoU thresholds to average over.
        method: see :func:`average_precision`.
    Returns:
        ``{"map": float, "ap": Tensor[T, C] float64 (NaN for classes without objects), "num_gt":
        Tensor[C]}``.

    Introduced in chapter 08.
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must have one entry per image, got {len(predictions)} and {len(targets)}"
        )
    thresholds = [float(t) for t in iou_thresholds]
    if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"iou_thresholds must be a non-empty list of values in [0, 1], got {iou_thresholds}")
    for k, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        missing = {"boxes", "scores", "labels"} - set(p) or {"boxes", "labels"} - set(t)
        if missing:
            raise ValueError(f"image {k}: missing keys {sorted(missing)} in predictions/targets")
        for what, d in (("prediction", p), ("target", t)):
            if d["labels"].numel() and (d["labels"].min() < 0 or d["labels"].max() >= num_classes):
                raise ValueError(f"image {k}: {what} labels must be in [0, {num_classes})")
    ap = torch.full((len(thresholds), num_classes), float("nan"), dtype=torch.float64)
    num_gt = torch.zeros(num_classes, dtype=torch.int64)
    for c in range(num_classes):
        per_image = []
        for p, t in zip(predictions, targets, strict=True):
            pm, tm = p["labels"] == c, t["labels"] == c
            per_image.append((p["boxes"][pm], p["scores"][pm], t["boxes"][tm]))
        num_gt[c] = sum(int(g.shape[0]) for _, _, g in per_image)
        if num_gt[c] == 0:
            continue
        scores = torch.cat([s.detach().cpu() for _, s, _ in per_image])
        for ti, thr in enumerate(thresholds):
            is_tp = torch.cat([match_detections(b, s, g, thr).cpu() for b, s, g in per_image])
            precision, recall, _ = precision_recall(scores, is_tp, int(num_gt[c]))
            ap[ti, c] = average_precision(precision, recall, method)
    if num_gt.sum() == 0:
        raise ValueError("mean_average_precision: the targets hold no objects")
    return {"map": float(ap.nanmean()), "ap": ap, "num_gt": num_gt}
