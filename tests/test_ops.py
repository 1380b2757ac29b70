"""Tests of course_lib.ops (boxes, IoU, GIoU) against torchvision and hand-computed values."""

from __future__ import annotations

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
