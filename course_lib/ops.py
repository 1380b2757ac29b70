"""Box operations: areas, IoU and generalized IoU, in the style of ``torchvision.ops.boxes``.

Introduced in chapter 03 (losses); chapter 08 (detection) extends it with NMS, box conversions and
matching. Boxes are ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1`` in the *continuous*
convention: a box covers the region ``[x1, x2] x [y1, y2]``, so its width is ``x2 - x1`` (no "+1" as in
the inclusive-pixel convention of some old detection code). Every function works on the device and
floating dtype of its inputs and has no Python loop over boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "paired_box_iou",
    "paired_generalized_box_iou",
]


def _check_boxes(boxes: Tensor, name: str, *, ndim: int | None = 2) -> None:
    """Raise a clear error unless ``boxes`` is a valid floating ``Tensor[N, 4]`` (or ``[..., 4]``)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a Tensor[N, 4], got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float32/float64/...), got {boxes.dtype}; "
            "convert with .float() (integer pixel boxes are fine as floats in the continuous convention)"
        )
    if boxes.ndim < 1 or boxes.shape[-1] != 4 or (ndim is not None and boxes.ndim != ndim):
        want = "[N, 4]" if ndim == 2 else "[..., 4]"
        raise ValueError(f"{name} must have shape {want} (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.numel() == 0:
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    if bad.any():
        first = boxes.reshape(-1, 4)[bad.reshape(-1)][0].tolist()
        raise ValueError(
            f"{name} must satisfy x2 >= x1 and y2 >= y1 (format x1, y1, x2, y2); "
            f"{int(bad.sum())} box(es) do not, e.g. {first}"
        )


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0`` and 0 where ``den == 0`` (no NaN, in the values or the gradients)."""
    positive = den > 0
    return torch.where(
        positive, num / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(num)
    )


def _box_iou_terms(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and smallest-enclosing-box area of broadcastable boxes ``[..., 4]``.

    The one place where the overlap arithmetic is written: the pairwise functions call it on
    ``boxes1[:, None]`` and ``boxes2[None]`` (an ``N x M`` grid), the paired ones (and the losses in
    :mod:`course_lib.losses`) on two ``[N, 4]`` tensors directly.
    """
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])  # top-left of the intersection
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])  # bottom-right of the intersection
    wh = (rb - lt).clamp(min=0)  # empty intersection -> 0 width/height
    inter = wh[..., 0] * wh[..., 1]
    union = _area(boxes1) + _area(boxes2) - inter
    c_wh = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    enclosing = c_wh[..., 0] * c_wh[..., 1]
    return inter, union, enclosing


def _iou_from_terms(inter: Tensor, union: Tensor) -> Tensor:
    # union == 0 only when both boxes have zero area; their IoU is defined as 0 (not 0/0 = NaN)
    return _safe_divide(inter, union)


def _giou_from_terms(inter: Tensor, union: Tensor, enclosing: Tensor) -> Tensor:
    # GIoU = IoU - |C \ (A u B)| / |C|; a zero-area enclosing box C adds no penalty
    return _iou_from_terms(inter, union) - _safe_divide(enclosing - union, enclosing)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box.

    Args:
        boxes: ``Tensor[..., 4]`` boxes ``(x1, y1, x2, y2)`` with ``x2 >= x1``, ``y2 >= y1``.

    Returns:
        ``Tensor[...]``: ``(x2 - x1) * (y2 - y1)`` (continuous convention).

    Introduced in chapter 03.
    """
    _check_boxes(boxes, "boxes", ndim=None)
    return _area(boxes)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union (Jaccard index) of every box in ``boxes1`` with every box in ``boxes2``.

    Matches ``torchvision.ops.box_iou``, except that a pair of zero-area boxes gets IoU 0 instead of NaN.

    Args:
        boxes1: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        boxes2: ``Tensor[M, 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``Tensor[N, M]`` with values in [0, 1].

    Introduced in chapter 03.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    inter, union, _ = _box_iou_terms(boxes1[:, None, :], boxes2[None, :, :])
    return _iou_from_terms(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU (Rezatofighi et al., 2019) of every box in ``boxes1`` with every box in ``boxes2``.

    ``GIoU = IoU - |C \\ (A u B)| / |C|`` with ``C`` the smallest box enclosing ``A`` and ``B``. It lies in
    (-1, 1]: it equals the IoU when the boxes fill their enclosing box and becomes negative for disjoint
    boxes, the further apart the more negative. Matches ``torchvision.ops.generalized_box_iou`` (without
    its NaN for degenerate pairs).

    Args:
        boxes1: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        boxes2: ``Tensor[M, 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``Tensor[N, M]`` with values in [-1, 1].

    Introduced in chapter 03.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    return _giou_from_terms(*_box_iou_terms(boxes1[:, None, :], boxes2[None, :, :]))


def _check_paired(boxes1: Tensor, boxes2: Tensor) -> None:
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"boxes1 and boxes2 must be paired (same shape [N, 4]), got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]`` for each ``i`` (the diagonal of :func:`box_iou`).

    Computed directly, in O(N) memory, without building the ``N x N`` matrix.

    Args:
        boxes1: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        boxes2: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``Tensor[N]`` with values in [0, 1].

    Introduced in chapter 03.
    """
    _check_paired(boxes1, boxes2)
    inter, union, _ = _box_iou_terms(boxes1, boxes2)
    return _iou_from_terms(inter, union)


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of ``boxes1[i]`` with ``boxes2[i]`` (the diagonal of :func:`generalized_box_iou`).

    Args:
        boxes1: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        boxes2: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.

    Returns:
        ``Tensor[N]`` with values in [-1, 1].

    Introduced in chapter 03.
    """
    _check_paired(boxes1, boxes2)
    return _giou_from_terms(*_box_iou_terms(boxes1, boxes2))
