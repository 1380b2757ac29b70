"""Tests of course_lib.ops (boxes, IoU, GIoU) against torchvision and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.ops as tvops

from course_lib import ops


def random_boxes(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 5 + 0.1
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------------------- box_area
def test_box_area_matches_torchvision_and_hand_value():
    b = random_boxes(20, 0)
    torch.testing.assert_close(ops.box_area(b), tvops.box_area(b))
    assert ops.box_area(torch.tensor([[1.0, 2.0, 4.0, 6.0]])).item() == 12.0


def test_box_area_batched_and_empty():
    b = random_boxes(12, 1).reshape(3, 4, 4)
    assert ops.box_area(b).shape == (3, 4)
    assert ops.box_area(torch.zeros(0, 4)).shape == (0,)


# ---------------------------------------------------------------------------- box_iou / giou
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_matches_torchvision(dtype):
    b1, b2 = random_boxes(30, 2, dtype), random_boxes(17, 3, dtype)
    iou = ops.box_iou(b1, b2)
    assert iou.shape == (30, 17) and iou.dtype == dtype
    torch.testing.assert_close(iou, tvops.box_iou(b1, b2))
    assert (iou > 0).any() and (iou == 0).any()  # the random sets have overlapping and disjoint pairs


def test_box_iou_same_with_and_without_gradient():
    # box_iou computes in place when no gradient is needed; both paths give the same values
    b1, b2 = random_boxes(30, 12), random_boxes(20, 13)
    with_grad = ops.box_iou(b1.clone().requires_grad_(), b2)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), ops.box_iou(b1, b2))
    with torch.no_grad():
        torch.testing.assert_close(ops.box_iou(b1.clone().requires_grad_(), b2), ops.box_iou(b1, b2))
    assert b1.tolist() == random_boxes(30, 12).tolist()  # the inputs are not modified


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generalized_box_iou_matches_torchvision(dtype):
    b1, b2 = random_boxes(25, 4, dtype), random_boxes(9, 5, dtype)
    giou = ops.generalized_box_iou(b1, b2)
    torch.testing.assert_close(giou, tvops.generalized_box_iou(b1, b2))
    assert (giou < 0).any()
    assert (giou <= ops.box_iou(b1, b2) + 1e-6).all()  # GIoU <= IoU


def test_hand_computed_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    same = a.clone()
    half = torch.tensor([[1.0, 0.0, 3.0, 2.0]])  # overlaps half of a: IoU = 2 / (4 + 4 - 2) = 1/3
    far = torch.tensor([[4.0, 0.0, 6.0, 2.0]])  # disjoint; C = 6 x 2 = 12, union 8: GIoU = -4/12
    touching = torch.tensor([[2.0, 0.0, 4.0, 2.0]])  # shares an edge only
    others = torch.cat([same, half, far, touching])
    torch.testing.assert_close(ops.box_iou(a, others), torch.tensor([[1.0, 1 / 3, 0.0, 0.0]]))
    torch.testing.assert_close(ops.generalized_box_iou(a, others), torch.tensor([[1.0, 1 / 3, -1 / 3, 0.0]]))


def test_continuous_convention_not_plus_one():
    # two 2x2 boxes of integer corners that share one column: continuous IoU 1/3 (no +1 pixel)
    a, b = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    assert ops.box_iou(a, b).item() == pytest.approx(1 / 3)
    plus_one = (2 * 3) / (9 + 9 - 6)  # the inclusive-pixel convention gives 0.5 for the same numbers
    assert abs(ops.box_iou(a, b).item() - plus_one) > 0.1


def test_empty_inputs():
    b = random_boxes(3, 6)
    e = torch.zeros(0, 4)
    assert ops.box_iou(e, b).shape == (0, 3)
    assert ops.box_iou(b, e).shape == (3, 0)
    assert ops.generalized_box_iou(e, e).shape == (0, 0)
    assert ops.paired_box_iou(e, e).shape == (0,)


def test_single_box():
    b = random_boxes(1, 7)
    torch.testing.assert_close(ops.box_iou(b, b), torch.ones(1, 1))
    torch.testing.assert_close(ops.generalized_box_iou(b, b), torch.ones(1, 1))


def test_degenerate_boxes_give_zero_without_nan():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 1.0, 3.0, 1.0]])  # zero height
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    boxes = torch.cat([point, line, box])
    iou = ops.box_iou(boxes, boxes)
    giou = ops.generalized_box_iou(boxes, boxes)
    assert torch.isfinite(iou).all() and torch.isfinite(giou).all()
    assert iou[0, 0] == 0 and iou[0, 1] == 0 and iou[1, 1] == 0 and iou[2, 2] == 1
    assert giou[0, 0] == 0  # zero-area enclosing box: no penalty
    # torchvision returns NaN for the point with itself
    assert torch.isnan(tvops.box_iou(point, point)).all()
    # zero-area boxes against boxes of positive area (the fast path, no 0 / 0): torchvision's values
    torch.testing.assert_close(
        ops.box_iou(boxes, random_boxes(5, 3)), tvops.box_iou(boxes, random_boxes(5, 3))
    )
    torch.testing.assert_close(
        ops.box_iou(random_boxes(5, 3), boxes), tvops.box_iou(random_boxes(5, 3), boxes)
    )


def test_gradients_finite_including_degenerate_and_disjoint():
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 6.0, 7.0]], requires_grad=True)
    b2 = torch.tensor([[1.0, 0.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    (ops.box_iou(b1, b2).sum() + ops.generalized_box_iou(b1, b2).sum()).backward()
    assert torch.isfinite(b1.grad).all() and torch.isfinite(b2.grad).all()
    assert b1.grad.abs().sum() > 0


def test_giou_gradcheck():
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 5.5, 1.5]], dtype=torch.float64, requires_grad=True)
    b2 = torch.tensor([[1.0, 0.5, 3.0, 2.5], [0.2, 0.1, 1.1, 3.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.generalized_box_iou, (b1, b2))
    assert torch.autograd.gradcheck(ops.paired_box_iou, (b1, b2))


def test_paired_equals_diagonal():
    b1, b2 = random_boxes(40, 8), random_boxes(40, 9)
    torch.testing.assert_close(ops.paired_box_iou(b1, b2), ops.box_iou(b1, b2).diagonal())
    torch.testing.assert_close(
        ops.paired_generalized_box_iou(b1, b2), tvops.generalized_box_iou(b1, b2).diagonal()
    )


def test_symmetry():
    b1, b2 = random_boxes(6, 10), random_boxes(5, 11)
    torch.testing.assert_close(ops.box_iou(b1, b2), ops.box_iou(b2, b1).T)
    torch.testing.assert_close(ops.generalized_box_iou(b1, b2), ops.generalized_box_iou(b2, b1).T)


# ---------------------------------------------------------------------------- bad inputs
def test_bad_shape_raises_naming_argument():
    good = random_boxes(2, 0)
    with pytest.raises(ValueError, match="boxes1"):
        ops.box_iou(torch.zeros(3, 5), good)
    with pytest.raises(ValueError, match="boxes2"):
        ops.box_iou(good, torch.zeros(4))
    with pytest.raises(ValueError, match="boxes2"):
        ops.generalized_box_iou(good, torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="boxes"):
        ops.box_area(torch.zeros(3, 3))


def test_non_float_raises_naming_argument():
    with pytest.raises(TypeError, match="boxes1.*floating"):
        ops.box_iou(torch.zeros(2, 4, dtype=torch.int64), random_boxes(2, 0))
    with pytest.raises(TypeError, match="boxes2"):
        ops.box_iou(random_boxes(2, 0), [[0, 0, 1, 1]])


def test_inverted_box_raises():
    bad = torch.tensor([[2.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"boxes2 must satisfy x2 >= x1"):
        ops.box_iou(random_boxes(2, 0), bad)
    with pytest.raises(ValueError, match="boxes1"):
        ops.generalized_box_iou(torch.tensor([[0.0, 3.0, 1.0, 1.0]]), bad.flip(1))
    with pytest.raises(ValueError, match="NaN"):
        ops.box_iou(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), random_boxes(1, 0))


def test_paired_shape_mismatch():
    with pytest.raises(ValueError, match="paired"):
        ops.paired_box_iou(random_boxes(3, 0), random_boxes(2, 1))


# ---------------------------------------------------------------------------- box_convert (chapter 08)
@pytest.mark.parametrize("in_fmt", ops.BOX_FORMATS)
@pytest.mark.parametrize("out_fmt", ops.BOX_FORMATS)
def test_box_convert_matches_torchvision(in_fmt, out_fmt):
    b = tvops.box_convert(random_boxes(30, 2, torch.float64), "xyxy", in_fmt)
    ours = ops.box_convert(b, in_fmt, out_fmt)
    torch.testing.assert_close(ours, tvops.box_convert(b, in_fmt, out_fmt))
    torch.testing.assert_close(ops.box_convert(ours, out_fmt, in_fmt), b)  # round trip


def test_box_convert_hand_values_batched_and_bad_input():
    b = torch.tensor([[1.0, 2.0, 5.0, 8.0]])
    assert ops.box_convert(b, "xyxy", "cxcywh").tolist() == [[3.0, 5.0, 4.0, 6.0]]
    assert ops.box_convert(b, "xyxy", "xywh").tolist() == [[1.0, 2.0, 4.0, 6.0]]
    assert ops.box_convert(torch.zeros(2, 0, 4), "xyxy", "cxcywh").shape == (2, 0, 4)
    with pytest.raises(ValueError, match="out_fmt"):
        ops.box_convert(b, "xyxy", "yxyx")
    with pytest.raises(TypeError, match="floating"):
        ops.box_convert(b.long(), "xyxy", "xywh")
    with pytest.raises(ValueError, match="non-negative"):
        ops.box_convert(torch.tensor([[0.0, 0.0, -1.0, 2.0]]), "cxcywh", "xyxy")


# ---------------------------------------------------------------------------- nms, batched_nms
def clustered_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes in a few tight clusters (many overlaps, long suppression chains) and rounded scores (ties)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, 2, generator=g) * 20
    pick = torch.randint(0, 4, (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g)
    wh = torch.rand(n, 2, generator=g) * 4 + 2
    scores = (torch.rand(n, generator=g) * 10).round() / 10
    return torch.cat([xy, xy + wh], dim=1), scores


def untie(scores: torch.Tensor, seed: int) -> torch.Tensor:
    """The scores plus distinct tiny offsets (below the 0.1 rounding step): no two equal."""
    out = scores + torch.randperm(scores.numel(), generator=torch.Generator().manual_seed(seed)) * 1e-4
    assert out.unique().numel() == out.numel()
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(seed, threshold):
    boxes, scores = clustered_boxes(60, seed)
    # torchvision's kernel sorts scores with an unstable sort, whose order of ties may depend on the
    # CPU's sorting code path: compare on distinct scores (ties are checked against the plain reference)
    scores = untie(scores, seed)
    ours = ops.nms(boxes, scores, threshold)
    assert torch.equal(ours, tvops.nms(boxes, scores, threshold))
    assert ours.dtype == torch.int64


def _greedy_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy NMS written plainly, box by box, independent of course_lib and torchvision.

    Boxes are visited by decreasing score (Python's sort is stable: ties in index order); a box is kept
    unless a kept box overlaps it with IoU > threshold. The IoU is computed in the boxes' precision
    (float32 arithmetic for float32 boxes), as an NMS on those boxes computes it; zero-area pairs have IoU 0.
    """
    as_float = np.float32 if boxes.dtype == torch.float32 else float
    b = [[as_float(v) for v in row] for row in boxes.tolist()]
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    order = sorted(range(len(b)), key=lambda i: -scores[i].item())
    kept: list[int] = []
    for i in order:
        suppressed = False
        for k in kept:
            w = max(as_float(0), min(b[i][2], b[k][2]) - max(b[i][0], b[k][0]))
            h = max(as_float(0), min(b[i][3], b[k][3]) - max(b[i][1], b[k][1]))
            inter = w * h
            union = area[k] + area[i] - inter
            if union > 0 and float(inter / union) > threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def _batched_nms_reference(boxes, scores, idxs, threshold) -> list[int]:
    kept = []
    for c in idxs.unique().tolist():
        members = torch.nonzero(idxs == c)[:, 0]
        kept += [members[k].item() for k in _greedy_nms_reference(boxes[members], scores[members], threshold)]
    return sorted(kept, key=lambda i: (-scores[i].item(), i))


def _nms_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    chain_x = torch.arange(300, dtype=torch.float32) * 2
    chain = torch.stack([chain_x, torch.zeros(300), chain_x + 10, torch.full((300,), 10.0)], 1)
    grid_xy = torch.randint(0, 6, (80, 2), generator=g).float() * 2  # integer boxes: IoUs hit thresholds
    grid = torch.cat([grid_xy, grid_xy + torch.randint(1, 4, (80, 2), generator=g).float() * 2], 1)
    degenerate = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 5], [0, 0, 2, 2], [0, 0, 2, 2.0]])
    return {
        "random": (random_boxes(150, 20), torch.rand(150, generator=g)),
        "clustered": clustered_boxes(200, 21),
        "tied scores": (random_boxes(120, 22), torch.randint(0, 3, (120,), generator=g).float()),
        "chain": (chain, torch.linspace(1, 0, 300)),
        "chain, scores rising": (chain, torch.linspace(0, 1, 300)),
        "integer grid": (grid, torch.randint(0, 4, (80,), generator=g).float() / 4),
        "float64": (random_boxes(100, 23, torch.float64), torch.rand(100, generator=g, dtype=torch.float64)),
        "empty": (torch.zeros(0, 4), torch.zeros(0)),
        "single": (random_boxes(1, 24), torch.rand(1, generator=g)),
        "degenerate": (degenerate, torch.tensor([0.2, 0.3, 0.9, 0.5, 0.5])),
    }


@pytest.mark.parametrize("case", list(_nms_cases()))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_equals_plain_python_greedy(case, threshold):
    boxes, scores = _nms_cases()[case]
    want = _greedy_nms_reference(boxes, scores, threshold)
    got = ops.nms(boxes, scores, threshold)
    assert got.dtype == torch.int64 and got.tolist() == want
    idxs = torch.arange(boxes.shape[0]) % 3
    assert ops.batched_nms(boxes, scores, idxs, threshold).tolist() == _batched_nms_reference(
        boxes, scores, idxs, threshold
    )


def test_nms_long_chain_keeps_every_other_box():
    # each box overlaps its neighbour by IoU 8/12 and the next but one by 6/14: greedy keeps 0, 2, 4, ...
    # (the earlier fixed-point NMS needed one N x N product per link of this chain)
    x = torch.arange(2000, dtype=torch.float32) * 2
    chain = torch.stack([x, torch.zeros(2000), x + 10, torch.full((2000,), 10.0)], 1)
    scores = torch.linspace(1, 0.1, 2000)
    assert ops.nms(chain, scores, 0.5).tolist() == list(range(0, 2000, 2))
    assert ops.nms(chain, scores, 0.3).tolist() == list(range(0, 2000, 3))  # IoU 6/14 at 4 px, 4/16 at 6 px
    # two interleaved classes: within a class, neighbours are 4 px apart (IoU 6/14)
    alternate = torch.arange(2000) % 2
    assert ops.batched_nms(chain, scores, alternate, 0.5).tolist() == list(range(2000))
    assert ops.batched_nms(chain, scores, alternate, 0.4).tolist() == sorted(
        list(range(0, 2000, 4)) + list(range(1, 2000, 4))
    )


def test_nms_hand_case_and_edges():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses 0 (IoU 0.9) and then 1 (IoU ~0.61 > 0.5); box 2 is far away
    assert ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert ops.nms(boxes, scores, 0.65).tolist() == [3, 1, 2]
    assert ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert ops.nms(boxes[:1], scores[:1], 0.5).tolist() == [0]
    same = torch.tensor([[0, 0, 1, 1.0]] * 3)
    assert ops.nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # ties keep the first
    degenerate = torch.tensor([[0, 0, 0, 0.0], [0, 0, 0, 0.0]])
    assert ops.nms(degenerate, torch.tensor([0.2, 0.3]), 0.5).tolist() == [1, 0]  # IoU 0: both kept


def test_nms_bad_input():
    boxes, scores = clustered_boxes(5, 0)
    with pytest.raises(ValueError, match="scores"):
        ops.nms(boxes, scores[:3], 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        ops.nms(boxes, scores, 1.5)
    with pytest.raises(ValueError, match="x2 >= x1"):
        ops.nms(boxes[:, [2, 1, 0, 3]], scores, 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_matches_torchvision(seed):
    boxes, scores = clustered_boxes(80, seed)
    scores = untie(scores, seed)  # as in test_nms_matches_torchvision
    idxs = torch.randint(0, 3, (80,), generator=torch.Generator().manual_seed(seed))
    ours = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ours, tvops.batched_nms(boxes, scores, idxs, 0.5))
    # a class never suppresses another: per-class NMS gives the same set
    per_class = torch.cat(
        [torch.nonzero(idxs == c)[:, 0][ops.nms(boxes[idxs == c], scores[idxs == c], 0.5)] for c in range(3)]
    )
    assert set(ours.tolist()) == set(per_class.tolist())
    assert (
        ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel()
        == 0
    )
    with pytest.raises(ValueError, match="idxs"):
        ops.batched_nms(boxes, scores, idxs.float(), 0.5)


# ---------------------------------------------------------------------------- box coding, anchors
def test_encode_decode_match_torchvision_box_coder():
    from torchvision.models.detection._utils import BoxCoder

    anchors = random_boxes(40, 3, torch.float64)
    boxes = random_boxes(40, 4, torch.float64)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(weights)
        deltas = ops.encode_boxes(boxes, anchors, weights)
        torch.testing.assert_close(deltas, coder.encode_single(boxes, anchors))
        torch.testing.assert_close(
            ops.decode_boxes(deltas, anchors, weights), coder.decode_single(deltas, anchors)
        )
        torch.testing.assert_close(ops.decode_boxes(deltas, anchors, weights), boxes)  # exact inverse


def test_encode_hand_values_and_decode_clamp():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    box = torch.tensor([[5.0, 0.0, 15.0, 20.0]])  # shifted half a width right, twice as tall
    t = ops.encode_boxes(box, anchor)
    torch.testing.assert_close(t, torch.tensor([[0.5, 0.5, 0.0, torch.log(torch.tensor(2.0)).item()]]))
    huge = ops.decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    assert torch.isfinite(huge).all() and huge[0, 2].item() == pytest.approx(5 + 10 * 1000 / 16 / 2, rel=1e-5)


def test_box_coding_bad_input():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="positive width"):
        ops.encode_boxes(torch.tensor([[1.0, 1.0, 1.0, 5.0]]), anchor)
    with pytest.raises(ValueError, match="paired"):
        ops.encode_boxes(torch.cat([anchor, anchor]), anchor)
    with pytest.raises(ValueError, match="weights"):
        ops.encode_boxes(anchor, anchor, (1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="deltas"):
        ops.decode_boxes(torch.zeros(2, 4), anchor)


def test_anchor_grid_hand_values_and_torchvision_layout():
    a = ops.anchor_grid((2, 3), stride=8, sizes=(8.0, 16.0), aspect_ratios=(0.5, 1.0, 2.0))
    assert a.shape == (2 * 3 * 6, 4)
    centres = ops.box_convert(a, "xyxy", "cxcywh")
    # centres come back through (x1 + x2) / 2 of irrational half-widths: compare with float32 tolerance
    torch.testing.assert_close(centres[[0, 6, -1], :2], torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 12.0]]))
    torch.testing.assert_close(centres[:, 2] * centres[:, 3], torch.tensor([64.0, 256] * 18))
    torch.testing.assert_close(centres[:6, 3] / centres[:6, 2], torch.tensor([0.5, 0.5, 1, 1, 2, 2]))
    # torchvision's AnchorGenerator: same anchors (before its rounding), with centres at j*stride
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    gen = AnchorGenerator(sizes=((8, 16),), aspect_ratios=((0.5, 1.0, 2.0),))
    base = gen.generate_anchors([8, 16], [0.5, 1.0, 2.0])
    ours_base = ops.anchor_grid((1, 1), stride=8, sizes=(8, 16), aspect_ratios=(0.5, 1.0, 2.0)) - 4
    torch.testing.assert_close(ours_base, base, atol=0.5, rtol=0)  # torchvision rounds to whole pixels
    assert torch.equal(ours_base.round(), base)


def test_anchor_grid_bad_input():
    with pytest.raises(ValueError, match="feature_size"):
        ops.anchor_grid((0, 3), 8, (8,))
    with pytest.raises(ValueError, match="sizes"):
        ops.anchor_grid((2, 3), 8, ())
    with pytest.raises(ValueError, match="aspect_ratios"):
        ops.anchor_grid((2, 3), 8, (8,), (-1.0,))


# ---------------------------------------------------------------------------- hungarian_match
def test_hungarian_match_equals_brute_force():
    import itertools

    g = torch.Generator().manual_seed(0)
    for n, m in [(4, 4), (5, 3), (3, 5)]:
        cost = torch.rand(n, m, generator=g)
        rows, cols = ops.hungarian_match(cost)
        assert len(rows) == min(n, m) and torch.equal(rows, rows.sort().values)
        if n >= m:
            best = min(
                sum(cost[p[j], j].item() for j in range(m)) for p in itertools.permutations(range(n), m)
            )
        else:
            best = min(
                sum(cost[i, p[i]].item() for i in range(n)) for p in itertools.permutations(range(m), n)
            )
        assert cost[rows, cols].sum().item() == pytest.approx(best)


def test_hungarian_is_global_not_greedy():
    # greedy "each target takes its closest prediction" would give both targets prediction 0
    cost = torch.tensor([[0.1, 0.2], [0.5, 10.0]])
    rows, cols = ops.hungarian_match(cost)
    assert cols.tolist() == [1, 0] and cost[rows, cols].sum().item() == pytest.approx(0.7)
    assert ops.hungarian_match(torch.zeros(0, 3))[0].numel() == 0
    with pytest.raises(ValueError, match="NaN"):
        ops.hungarian_match(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match=r"\[N, M\]"):
        ops.hungarian_match(torch.zeros(3))
