"""Box operations: areas, IoU and generalized IoU, in the style of ``torchvision.ops.boxes``.

Introduced in chapter 03 (losses) with the IoU family; chapter 08 (detection) adds box format
conversion, non-maximum suppression (plain and class-wise), box encoding and decoding relative to
anchors, anchor grids and Hungarian matching. Boxes are ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1`` in the *continuous*
convention: a box covers the region ``[x1, x2] x [y1, y2]``, so its width is ``x2 - x1`` (no "+1" as in
the inclusive-pixel convention of some old detection code). Every function works on the device and
floating dtype of its inputs and has no Python loop over boxes; the NMS runs torchvision's compiled
greedy loop behind this module's input checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "BBOX_XFORM_CLIP",
    "BOX_FORMATS",
    "anchor_grid",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "decode_boxes",
    "encode_boxes",
    "generalized_box_iou",
    "hungarian_match",
    "nms",
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
    # one pass and one synchronisation when all is well (NaN fails >=); the details only on failure
    if bool((torch.isfinite(boxes).all() & (boxes[..., 2:] >= boxes[..., :2]).all()).item()):
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
    area1, area2 = _area(boxes1), _area(boxes2)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    degenerate = bool(((area1 == 0).any() & (area2 == 0).any()).item())  # a zero-area pair: 0 / 0
    if degenerate or (torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad)):
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        return _iou_from_terms(inter, area1[:, None] + area2[None, :] - inter)
    # no gradient and union > 0 everywhere: the same arithmetic, in place (fewer N x M allocations)
    wh = rb.sub_(lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter.div_((area1[:, None] + area2[None, :]).sub_(inter))


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


# --------------------------------------------------------------------------------------------
# box formats (chapter 08)
# --------------------------------------------------------------------------------------------
#: Box formats understood by :func:`box_convert`: corners, corner + size, centre + size.
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``"xyxy"`` (corners), ``"xywh"`` (top-left corner and size) and ``"cxcywh"``
    (centre and size).

    Matches ``torchvision.ops.box_convert``. The result is a new tensor, on the input's device.

    Args:
        boxes: ``Tensor[..., 4]`` floating boxes in ``in_fmt``; widths and heights must be >= 0.
        in_fmt, out_fmt: one of :data:`BOX_FORMATS`.
    Returns:
        ``Tensor[..., 4]`` in ``out_fmt``.

    Introduced in chapter 08.
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
    if not isinstance(boxes, Tensor):
        raise TypeError(f"boxes must be a Tensor[..., 4], got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must have a floating dtype, got {boxes.dtype}; convert with .float()")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4], got {tuple(boxes.shape)}")
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif in_fmt == "xywh":
        if (c < 0).any() or (d < 0).any():
            raise ValueError("boxes in 'xywh' format must have non-negative width and height")
        x1, y1, x2, y2 = a, b, a + c, b + d
    else:
        if (c < 0).any() or (d < 0).any():
            raise ValueError("boxes in 'cxcywh' format must have non-negative width and height")
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if out_fmt == "xyxy":
        out = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    else:
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return torch.stack(out, dim=-1)


# --------------------------------------------------------------------------------------------
# non-maximum suppression (chapter 08)
# --------------------------------------------------------------------------------------------
def _check_scores(scores: Tensor, n: int) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a Tensor[N], got {type(scores).__name__}")
    if scores.ndim != 1 or scores.shape[0] != n:
        raise ValueError(f"scores must have shape [N] = [{n}] (one per box), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must have a floating dtype, got {scores.dtype}")


def _check_threshold(iou_threshold: float) -> float:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, int | float | Tensor):
        raise TypeError(f"iou_threshold must be a number in [0, 1], got {type(iou_threshold).__name__}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {float(iou_threshold)}")
    return float(iou_threshold)


def _greedy_nms_sorted(sorted_boxes: Tensor, iou_threshold: float) -> Tensor:
    """Positions kept by greedy NMS of boxes already sorted best first (the order is the priority).

    Runs torchvision's compiled greedy loop (``torch.ops.torchvision.nms``): it visits boxes in
    priority order, keeps a box unless a kept one overlaps it by more than the threshold, and only
    compares a box with those still alive, so its cost is ``O(N K)`` for ``K`` kept boxes, whatever
    the suppression chains. The kernel sorts the scores it is given with an unstable sort, so it gets
    distinct ranks ``N, N-1, ..., 1`` instead of the scores: ties stay in our stable order.
    """
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    n = sorted_boxes.shape[0]
    dtype = sorted_boxes.dtype if sorted_boxes.dtype == torch.float64 else torch.float32
    if n > 2**24:
        dtype = torch.float64  # float32 ranks are distinct only up to 2^24
    ranks = torch.arange(n, 0, -1, dtype=dtype, device=sorted_boxes.device)
    return torch.ops.torchvision.nms(sorted_boxes.to(dtype), ranks, iou_threshold).sort().values


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: keep the best box, drop every box overlapping it by more than
    ``iou_threshold``, and repeat with the best box left.

    Equal to ``torchvision.ops.nms``, with ties in score always broken in favour of the earlier box (a
    stable sort; torchvision's own sort does not promise it). The greedy loop itself is the compiled
    kernel torchvision ships, behind this module's input checks: chapter 08 writes the loop from
    scratch and checks it against this function.

    Args:
        boxes: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)`` (float16 boxes are compared in float32).
        scores: ``Tensor[N]`` scores.
        iou_threshold: boxes with IoU ``> iou_threshold`` with a kept, better box are discarded.
    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, by decreasing score.

    Introduced in chapter 08.
    """
    _check_boxes(boxes, "boxes")
    _check_scores(scores, boxes.shape[0])
    thr = _check_threshold(iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    return order[_greedy_nms_sorted(boxes.detach()[order], thr)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each category: boxes of different ``idxs`` never suppress
    each other.

    Runs :func:`nms`'s greedy loop once per category, on that category's boxes as they are. (The
    trick of ``torchvision.ops.batched_nms`` for small inputs, shifting each category's boxes far
    apart and running one NMS, changes the coordinates' rounding; this gives the same kept set as
    per-category NMS exactly.) Kept boxes come back by decreasing score, ties by index, as
    torchvision returns them.

    Args:
        boxes: ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        scores: ``Tensor[N]`` scores.
        idxs: ``Tensor[N]`` integer category (class, or image) of each box.
        iou_threshold: as in :func:`nms`.
    Returns:
        ``Tensor[K]`` int64 indices of the kept boxes, by decreasing score.

    Introduced in chapter 08.
    """
    _check_boxes(boxes, "boxes")
    _check_scores(scores, boxes.shape[0])
    if (
        not isinstance(idxs, Tensor)
        or idxs.shape != scores.shape
        or idxs.is_floating_point()
        or idxs.is_complex()
    ):
        raise ValueError(
            f"idxs must be an integer Tensor[N] = [{boxes.shape[0]}], got "
            f"{getattr(idxs, 'dtype', type(idxs).__name__)} {tuple(getattr(idxs, 'shape', ()))}"
        )
    thr = _check_threshold(iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    sorted_boxes = boxes.detach()[order]
    # group the score-sorted positions by category (a stable sort keeps score order inside each group)
    by_category = torch.sort(idxs[order], stable=True)
    counts = torch.unique_consecutive(by_category.values, return_counts=True)[1].tolist()
    if len(counts) == 1:
        return order[_greedy_nms_sorted(sorted_boxes, thr)]
    kept = []
    for positions in torch.split(by_category.indices, counts):
        kept.append(positions[_greedy_nms_sorted(sorted_boxes[positions], thr)])
    return order[torch.cat(kept).sort().values]


# --------------------------------------------------------------------------------------------
# box coding and anchors (chapter 08)
# --------------------------------------------------------------------------------------------
#: Largest log-scale change :func:`decode_boxes` applies (as in torchvision's detection models).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    if len(weights) != 4 or any(w <= 0 for w in weights):
        raise ValueError(f"weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}")
    return tuple(float(w) for w in weights)  # type: ignore[return-value]


def encode_boxes(boxes: Tensor, anchors: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    r"""Regression targets of ``boxes`` relative to ``anchors`` (R-CNN's parameterization).

    With centres :math:`(x, y)`, sizes :math:`(w, h)` of the box and :math:`(x_a, y_a, w_a, h_a)` of
    the anchor:

    .. math::
        t_x = w_x\frac{x - x_a}{w_a},\quad t_y = w_y\frac{y - y_a}{h_a},\quad
        t_w = w_w\log\frac{w}{w_a},\quad t_h = w_h\log\frac{h}{h_a}.

    Offsets are measured in anchor sizes, so the same target means the same relative move for a small
    and a large anchor; the logs keep sizes positive after decoding. Equal to ``BoxCoder.encode_single``
    of torchvision's detection models.

    Args:
        boxes: ``Tensor[N, 4]`` target boxes ``(x1, y1, x2, y2)``.
        anchors: ``Tensor[N, 4]`` anchors (or proposals), with positive width and height.
        weights: ``(wx, wy, ww, wh)`` scales of the four targets (Faster R-CNN's second stage uses
            ``(10, 10, 5, 5)``).
    Returns:
        ``Tensor[N, 4]`` targets ``(t_x, t_y, t_w, t_h)``.

    Introduced in chapter 08.
    """
    _check_boxes(boxes, "boxes")
    _check_boxes(anchors, "anchors")
    if boxes.shape != anchors.shape:
        raise ValueError(
            f"boxes and anchors must be paired (same shape [N, 4]), got {tuple(boxes.shape)} and "
            f"{tuple(anchors.shape)}"
        )
    wx, wy, ww, wh = _check_weights(weights)
    a = box_convert(anchors, "xyxy", "cxcywh")
    b = box_convert(boxes, "xyxy", "cxcywh")
    if (a[:, 2:] <= 0).any() or (b[:, 2:] <= 0).any():
        raise ValueError("encode_boxes needs boxes and anchors with positive width and height")
    return torch.stack(
        (
            wx * (b[:, 0] - a[:, 0]) / a[:, 2],
            wy * (b[:, 1] - a[:, 1]) / a[:, 3],
            ww * torch.log(b[:, 2] / a[:, 2]),
            wh * torch.log(b[:, 3] / a[:, 3]),
        ),
        dim=1,
    )


def decode_boxes(deltas: Tensor, anchors: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """Apply regression ``deltas`` to ``anchors``: the inverse of :func:`encode_boxes`.

    The log-size deltas are clamped at :data:`BBOX_XFORM_CLIP` so an untrained head cannot produce
    overflowing boxes. Equal to ``BoxCoder.decode_single`` of torchvision's detection models.

    Args:
        deltas: ``Tensor[N, 4]`` predicted ``(t_x, t_y, t_w, t_h)``.
        anchors: ``Tensor[N, 4]`` anchors ``(x1, y1, x2, y2)``.
        weights: as in :func:`encode_boxes`.
    Returns:
        ``Tensor[N, 4]`` boxes ``(x1, y1, x2, y2)``.

    Introduced in chapter 08.
    """
    _check_boxes(anchors, "anchors")
    if not isinstance(deltas, Tensor) or deltas.shape != anchors.shape or not deltas.is_floating_point():
        raise ValueError(
            f"deltas must be a floating Tensor[N, 4] like anchors {tuple(anchors.shape)}, got "
            f"{tuple(getattr(deltas, 'shape', ()))}"
        )
    wx, wy, ww, wh = _check_weights(weights)
    a = box_convert(anchors, "xyxy", "cxcywh")
    cx = deltas[:, 0] / wx * a[:, 2] + a[:, 0]
    cy = deltas[:, 1] / wy * a[:, 3] + a[:, 1]
    w = torch.exp((deltas[:, 2] / ww).clamp(max=BBOX_XFORM_CLIP)) * a[:, 2]
    h = torch.exp((deltas[:, 3] / wh).clamp(max=BBOX_XFORM_CLIP)) * a[:, 3]
    return box_convert(torch.stack((cx, cy, w, h), dim=1), "cxcywh", "xyxy")


def anchor_grid(
    feature_size: tuple[int, int],
    stride: float,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = (1.0,),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchor boxes centred on every cell of a feature map, in image pixels.

    Cell ``(i, j)`` of an ``H × W`` feature map with stride ``s`` covers pixels ``[j s, (j+1) s)``; its
    anchors are centred at ``((j + 0.5) s, (i + 0.5) s)``. Each centre gets one anchor per (size,
    aspect ratio) pair, with area ``size²`` and ``height / width = ratio`` (torchvision's convention).

    Args:
        feature_size: ``(H, W)`` of the feature map.
        stride: image pixels per feature cell.
        sizes: anchor side lengths (square-root of the area), in pixels.
        aspect_ratios: height / width ratios.
        device, dtype: of the result.
    Returns:
        ``Tensor[H * W * A, 4]`` boxes ``(x1, y1, x2, y2)`` with ``A = len(sizes) * len(aspect_ratios)``,
        ordered by row, then column, then anchor (ratio-major: all sizes of the first ratio
        first, as in torchvision's ``AnchorGenerator``).

    Introduced in chapter 08.
    """
    if len(feature_size) != 2 or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in feature_size
    ):
        raise ValueError(f"feature_size must be two positive ints (H, W), got {feature_size}")
    if not stride > 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    if len(sizes) == 0 or any(not s > 0 for s in sizes):
        raise ValueError(f"sizes must be non-empty and positive, got {sizes}")
    if len(aspect_ratios) == 0 or any(not r > 0 for r in aspect_ratios):
        raise ValueError(f"aspect_ratios must be non-empty and positive, got {aspect_ratios}")
    s = torch.as_tensor(sizes, dtype=dtype, device=device)
    r = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratio = torch.sqrt(r)
    ws = (s[None, :] / h_ratio[:, None]).reshape(-1)  # [A], ratio-major as in torchvision
    hs = (s[None, :] * h_ratio[:, None]).reshape(-1)
    base = torch.stack((-ws, -hs, ws, hs), dim=1) / 2  # [A, 4] centred at 0
    height, width = feature_size
    cy = (torch.arange(height, dtype=dtype, device=device) + 0.5) * stride
    cx = (torch.arange(width, dtype=dtype, device=device) + 0.5) * stride
    yy, xx = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)  # [H*W, 1, 4]
    return (centres + base[None]).reshape(-1, 4)


# --------------------------------------------------------------------------------------------
# Hungarian matching (chapters 03 and 08)
# --------------------------------------------------------------------------------------------
def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The one-to-one assignment of rows to columns with the smallest total cost.

    DETR matches its ``N`` predictions to the ``M <= N`` targets this way: a global optimum over all
    pairs, not "each target takes its nearest prediction" (which can give two targets the same
    prediction). Solved by ``scipy.optimize.linear_sum_assignment`` (a Hungarian-type algorithm) on the
    CPU; the indices come back on the cost's device.

    Args:
        cost: ``Tensor[N, M]`` finite costs; rectangular matrices match ``min(N, M)`` pairs.
    Returns:
        ``(rows, cols)``: two int64 ``Tensor[min(N, M)]``, rows increasing; ``cost[rows, cols].sum()`` is
        minimal.

    Introduced in chapter 08.
    """
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a Tensor[N, M], got {type(cost).__name__}")
    if cost.ndim != 2:
        raise ValueError(f"cost must have shape [N, M], got {tuple(cost.shape)}")
    if cost.numel() and not torch.isfinite(cost).all():
        raise ValueError("cost contains NaN or infinite entries")
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.int64, device=cost.device)  # noqa: E731
    return as_tensor(rows), as_tensor(cols)
