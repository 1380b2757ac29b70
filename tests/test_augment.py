"""Tests of course_lib.augment (chapter 05) against torch, torchvision and exact properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

from course_lib import augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, c: int = 2, h: int = 7, w: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


def _roll_and_zero(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The reference for translate: torch.roll, then zero the rows/columns that wrapped around."""
    out = torch.roll(img, shifts=(dy, dx), dims=(-2, -1)).clone()
    h, w = img.shape[-2:]
    if dy > 0:
        out[..., : min(dy, h), :] = 0
    elif dy < 0:
        out[..., max(h + dy, 0) :, :] = 0
    if dx > 0:
        out[..., :, : min(dx, w)] = 0
    elif dx < 0:
        out[..., :, max(w + dx, 0) :] = 0
    return out


# --------------------------------------------------------------------------------------------
# translate / random_translate
# --------------------------------------------------------------------------------------------
def test_translate_equals_roll_with_wrapped_part_zeroed():
    x = _images()
    shifts = torch.tensor([[0, 0], [1, 0], [0, -2], [-3, 4], [2, 2], [-1, -1]])
    out = augment.translate(x, shifts)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert_close(out[i], _roll_and_zero(x[i], dy, dx), rtol=0, atol=0)


def test_translate_matches_torchvision_affine_and_hand_value():
    x = _images(n=3, c=1, h=8, w=8, seed=1)
    shifts = torch.tensor([[1, 2], [-2, 1], [0, -3]])
    out = augment.translate(x, shifts)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        ref = TF.affine(
            x[i], angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0],
            interpolation=v2.InterpolationMode.NEAREST, fill=0.0,
        )  # fmt: skip
        assert_close(out[i], ref, rtol=0, atol=0)
    one = torch.zeros(1, 1, 3, 3)
    one[0, 0, 1, 1] = 1.0
    moved = augment.translate(one, torch.tensor([[1, -1]]))  # down one row, left one column
    assert moved[0, 0, 2, 0] == 1.0 and moved.sum() == 1.0


def test_translate_beyond_the_image_gives_zeros_and_keeps_dtype():
    x = _images(n=2, seed=3).double()
    out = augment.translate(x, torch.tensor([[7, 0], [0, -9]]))
    assert out.dtype == torch.float64 and (out == 0).all()
    assert augment.translate(torch.zeros(0, 1, 4, 4), torch.zeros(0, 2, dtype=torch.long)).shape == (
        0,
        1,
        4,
        4,
    )


def test_random_translate_draws_documented_shifts_and_is_seeded():
    x = _images(n=50, seed=4)
    out = augment.random_translate(x, 2, generator=_gen(7))
    shifts = torch.randint(-2, 3, (50, 2), generator=_gen(7))
    assert_close(out, augment.translate(x, shifts), rtol=0, atol=0)
    assert set(shifts.flatten().tolist()) == {-2, -1, 0, 1, 2}
    assert_close(augment.random_translate(x, 0, generator=_gen(0)), x, rtol=0, atol=0)
    torch.manual_seed(3)
    a = augment.random_translate(x, 1)
    torch.manual_seed(3)
    assert torch.equal(a, augment.random_translate(x, 1))  # the global generator by default


def test_translate_bad_input():
    x = _images()
    with pytest.raises(ValueError, match="shifts"):
        augment.translate(x, torch.zeros(5, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="shifts"):
        augment.translate(x, torch.zeros(6, 2))
    with pytest.raises(ValueError, match=r"x must have shape \[N, C, H, W\]"):
        augment.translate(x[0], torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        augment.random_translate(x.to(torch.uint8), 1)
    with pytest.raises(ValueError, match="max_shift"):
        augment.random_translate(x, -1)
    with pytest.raises(TypeError, match="generator"):
        augment.random_translate(x, 1, generator=0)


# --------------------------------------------------------------------------------------------
# random_flip
# --------------------------------------------------------------------------------------------
def test_random_flip_reference_and_involution():
    x = _images()
    assert_close(augment.random_flip(x, 1.0), TF.horizontal_flip(x), rtol=0, atol=0)
    assert_close(augment.random_flip(x, 1.0, direction="vertical"), TF.vertical_flip(x), rtol=0, atol=0)
    twice = augment.random_flip(augment.random_flip(x, 1.0), 1.0)
    assert_close(twice, x, rtol=0, atol=0)
    assert_close(augment.random_flip(x, 0.0), x, rtol=0, atol=0)


def test_random_flip_is_per_sample_and_seeded():
    x = _images(n=400, c=1, h=3, w=4, seed=5)
    out = augment.random_flip(x, 0.3, generator=_gen(1))
    flipped = torch.rand(400, generator=_gen(1)) < 0.3
    assert_close(out[flipped], x[flipped].flip(-1), rtol=0, atol=0)
    assert_close(out[~flipped], x[~flipped], rtol=0, atol=0)
    assert 0.24 < flipped.float().mean() < 0.36


def test_random_flip_bad_input():
    with pytest.raises(ValueError, match="p must be a probability"):
        augment.random_flip(_images(), 1.5)
    with pytest.raises(ValueError, match="direction"):
        augment.random_flip(_images(), direction="diagonal")


# --------------------------------------------------------------------------------------------
# resized_crop / random_resized_crop
# --------------------------------------------------------------------------------------------
def test_resized_crop_equals_torchvision_for_whole_pixel_boxes():
    x = _images(n=4, c=3, h=20, w=24, seed=6)
    boxes = torch.tensor([[0.0, 0, 24, 20], [3.0, 2, 15, 18], [10.0, 5, 20, 17], [1.0, 7, 21, 19]])
    out = augment.resized_crop(x, boxes, (12, 10))
    assert out.shape == (4, 3, 12, 10)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], y1, x1, y2 - y1, x2 - x1, [12, 10], antialias=False)
        assert_close(out[i], ref, atol=1e-5, rtol=1e-5)


def test_resized_crop_enlarging_reads_the_pixels_around_the_box():
    x = _images(n=1, c=1, h=8, w=8, seed=6)
    out = augment.resized_crop(x, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8)  # 4x4 box to 8x8
    inner = TF.resized_crop(x[0], 2, 2, 4, 4, [8, 8], antialias=False)
    assert_close(out[0, :, 1:-1, 1:-1], inner[:, 1:-1, 1:-1])  # the same inside
    # output pixel (0, 2) samples the point (y, x) = (2.25, 3.25), i.e. index (1.75, 2.75): a bilinear
    # blend of image rows 1-2 and columns 2-3; torchvision's crop repeats row 2 instead of reading row 1
    img = x[0, 0]
    expected = 0.25 * (0.25 * img[1, 2] + 0.75 * img[1, 3]) + 0.75 * (0.25 * img[2, 2] + 0.75 * img[2, 3])
    assert_close(out[0, 0, 0, 2], expected)
    assert (out[0, 0, 0] - inner[0, 0]).abs().max() > 1e-3


def test_resized_crop_whole_image_is_identity_and_half_pixel_box_interpolates():
    x = _images(n=2, c=1, h=5, w=6, seed=7)
    assert_close(augment.resized_crop(x, torch.tensor([[0.0, 0, 6, 5]] * 2), (5, 6)), x)
    ramp = torch.arange(6.0).expand(1, 1, 5, 6).contiguous()  # value = column index
    out = augment.resized_crop(ramp, torch.tensor([[1.5, 0.0, 3.5, 5.0]]), (5, 2))
    assert_close(out[0, 0, 0], torch.tensor([1.5, 2.5]))  # samples at x = 2.0 and 3.0: pixel centres 1.5, 2.5


def test_random_resized_crop_parameters_are_in_range():
    # a ramp image reveals each crop: along a row, the output steps by box width / output width
    h = w = 32
    ramp = torch.arange(float(w)).expand(200, 1, h, w).contiguous()
    ramp_t = ramp.transpose(-1, -2).contiguous()
    out_x = augment.random_resized_crop(ramp, 8, scale=(0.2, 0.6), ratio=(0.5, 2.0), generator=_gen(2))
    out_y = augment.random_resized_crop(ramp_t, 8, scale=(0.2, 0.6), ratio=(0.5, 2.0), generator=_gen(2))
    bw = (out_x[:, 0, 0, 6] - out_x[:, 0, 0, 1]) / 5 * 8
    bh = (out_y[:, 0, 6, 0] - out_y[:, 0, 1, 0]) / 5 * 8
    area = bw * bh / (h * w)
    assert (area > 0.2 - 1e-4).all() and (area < 0.6 + 1e-4).all()
    assert (bw / bh > 0.5 - 1e-4).all() and (bw / bh < 2.0 + 1e-4).all()
    assert area.std() > 0.05  # different per sample
    # the boxes stay inside the image: every sample lies in [0, w - 1]
    assert out_x.min() >= -1e-4 and out_x.max() <= w - 1 + 1e-4  # float32 rounding of the blend


def test_random_resized_crop_identity_constant_and_seed():
    x = _images(n=3, c=3, h=10, w=10, seed=8)
    assert_close(augment.random_resized_crop(x, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x)
    const = torch.full((4, 3, 16, 16), 0.25)
    assert_close(augment.random_resized_crop(const, 8, generator=_gen(0)), torch.full((4, 3, 8, 8), 0.25))
    a = augment.random_resized_crop(x, 6, generator=_gen(5))
    assert torch.equal(a, augment.random_resized_crop(x, 6, generator=_gen(5)))
    assert augment.random_resized_crop(torch.zeros(0, 3, 10, 10), 4).shape == (0, 3, 4, 4)


def test_resized_crop_bad_input():
    x = _images()
    with pytest.raises(ValueError, match="boxes must have shape"):
        augment.resized_crop(x, torch.zeros(2, 4), 4)
    with pytest.raises(TypeError, match="boxes"):
        augment.resized_crop(x, torch.zeros(6, 4, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="x2 > x1"):
        augment.resized_crop(x, torch.tensor([[2.0, 0, 1, 3]] * 6), 4)
    with pytest.raises(ValueError, match="size"):
        augment.random_resized_crop(x, 0)
    with pytest.raises(ValueError, match="scale"):
        augment.random_resized_crop(x, 4, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="ratio"):
        augment.random_resized_crop(x, 4, ratio=(2.0, 1.0))


# --------------------------------------------------------------------------------------------
# cutout
# --------------------------------------------------------------------------------------------
def test_cutout_erases_one_clipped_rectangle_per_image():
    n, h, w, s = 300, 12, 10, 4
    x = torch.ones(n, 2, h, w)
    out = augment.cutout(x, s, generator=_gen(3))
    g = _gen(3)
    cy = torch.randint(0, h, (n, 1), generator=g)[:, 0]
    cx = torch.randint(0, w, (n, 1), generator=g)[:, 0]
    rows = (torch.minimum(cy - s // 2 + s, torch.tensor(h)) - (cy - s // 2).clamp(min=0)).clamp(min=0)
    cols = (torch.minimum(cx - s // 2 + s, torch.tensor(w)) - (cx - s // 2).clamp(min=0)).clamp(min=0)
    erased = (out == 0).sum(dim=(1, 2, 3)) / 2  # per channel
    assert torch.equal(erased.long(), rows * cols)
    assert (out[:, 0] == out[:, 1]).all()  # the same rectangle in every channel
    assert (erased < s * s).any() and (erased == s * s).any()  # clipped at the border, and not
    # the erased pixels form a rectangle: their bounding box holds nothing else
    for i in range(20):
        ys, xs = (out[i, 0] == 0).nonzero(as_tuple=True)
        assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == len(ys)


def test_cutout_value_rectangle_and_bad_input():
    x = _images(n=4, c=3, h=8, w=8, seed=9)
    out = augment.cutout(x, (2, 3), value=0.5, generator=_gen(0))
    changed = out != x
    assert ((out == 0.5) | ~changed).all()
    assert (changed.sum(dim=(1, 2, 3)) <= 3 * 6).all()
    with pytest.raises(ValueError, match="size"):
        augment.cutout(x, (2, 0))


# --------------------------------------------------------------------------------------------
# mixup / cutmix
# --------------------------------------------------------------------------------------------
def test_mixup_images_and_labels_are_the_same_blend():
    n = 8
    x = _images(n=n, c=1, h=4, w=4, seed=10)
    y = torch.arange(n)  # distinct labels reveal each image's partner and weight
    xm, ym = augment.mixup(x, y, alpha=0.4, num_classes=n, generator=_gen(1))
    assert xm.shape == x.shape and ym.shape == (n, n)
    assert_close(ym.sum(1), torch.ones(n))
    perm = torch.randperm(n, generator=_gen(1))
    for i in range(n):
        lam = ym[i, i]
        j = perm[i]
        if j != i:
            assert_close(ym[i, j], 1 - lam)
        assert_close(xm[i], lam * x[i] + (1 - lam) * x[j])
    assert ((ym > 0).sum(1) <= 2).all()


def test_mixup_lambda_follows_beta_and_soft_labels_work():
    n = 4000
    x = torch.zeros(n, 1, 1, 1)
    x[: n // 2] = 1.0  # half the images are 1: lambda is visible where partners differ
    y = torch.zeros(n, 2)
    y[:, 0] = 1.0
    _, ym = augment.mixup(x, y, alpha=0.5, generator=_gen(2))
    assert_close(ym, y)  # soft labels all alike stay unchanged
    lam = augment._beta(n, 0.5, _gen(3))
    beta = torch.distributions.Beta(0.5, 0.5)
    assert abs(lam.mean().item() - 0.5) < 0.02
    assert abs(lam.var().item() - beta.variance.item()) < 0.01  # 1 / 8 for alpha = 0.5


def test_cutmix_lambda_is_the_exact_pasted_fraction():
    n, h, w = 64, 10, 12
    x = (torch.arange(n, dtype=torch.float32) + 1)[:, None, None, None].expand(n, 3, h, w).contiguous()
    y = torch.arange(n)
    xm, ym = augment.cutmix(x, y, alpha=1.0, num_classes=n, generator=_gen(4))
    assert_close(ym.sum(1), torch.ones(n))
    perm = torch.randperm(n, generator=_gen(4))
    own = (xm == x).float().mean(dim=(1, 2, 3))  # exact fraction of pixels still the image's own
    moved = perm != torch.arange(n)
    assert_close(ym[moved, y[moved]], own[moved])
    assert_close(ym[moved, perm[moved]], 1 - own[moved])
    assert ((xm == x) | (xm == x[perm])).all()
    pasted = xm != x
    for i in torch.nonzero(moved)[:10, 0].tolist():  # the pasted region is one rectangle
        ys, xs = pasted[i, 0].nonzero(as_tuple=True)
        if len(ys):
            assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == len(ys)
    assert (own[moved] < 1).float().mean() > 0.5 and (own[moved] > 0).all()


def test_mix_per_batch_draws_one_lambda_and_one_box():
    n = 8
    x = (torch.arange(n, dtype=torch.float32) + 1)[:, None, None, None].expand(n, 1, 6, 6).contiguous()
    y = torch.arange(n)  # distinct labels reveal each image's partner and weight
    xm, ym = augment.mixup(x, y, alpha=0.4, num_classes=n, per_batch=True, generator=_gen(5))
    perm = torch.randperm(n, generator=_gen(5))
    gen = _gen(5)
    torch.randperm(n, generator=gen)  # the permutation comes first, then the one Beta draw
    lam = augment._beta(1, 0.4, gen).float()
    assert_close(xm, lam * x + (1 - lam) * x[perm])
    assert_close(ym, lam * F.one_hot(y, n).float() + (1 - lam) * F.one_hot(y[perm], n).float())
    xc, yc = augment.cutmix(x, y, alpha=1.0, num_classes=n, per_batch=True, generator=_gen(6))
    pasted = xc != x
    moved = torch.nonzero(torch.randperm(n, generator=_gen(6)) != torch.arange(n))[:, 0]
    assert len(moved) > 1
    assert (pasted[moved] == pasted[moved[0]]).all()  # the same rectangle in every image
    own = yc[moved, y[moved]]
    assert (own == own[0]).all() and own[0] < 1
    # per image (the default), the weights differ
    _, ym_each = augment.mixup(x, y, alpha=0.4, num_classes=n, generator=_gen(5))
    assert len(torch.unique(ym_each.max(1).values)) > 1


def test_mix_bad_input():
    x, y = _images(n=4), torch.tensor([0, 1, 2, 3])
    for fn in (augment.mixup, augment.cutmix):
        with pytest.raises(ValueError, match="num_classes"):
            fn(x, y)
        with pytest.raises(ValueError, match="labels y must lie"):
            fn(x, y, num_classes=3)
        with pytest.raises(ValueError, match="alpha"):
            fn(x, y, alpha=0.0, num_classes=4)
        with pytest.raises(ValueError, match="one label per image"):
            fn(x, y[:3], num_classes=4)
        with pytest.raises(ValueError, match="y must be"):
            fn(x, y.float(), num_classes=4)
        with pytest.raises(TypeError, match="per_batch"):
            fn(x, y, num_classes=4, per_batch=1)


def test_mix_empty_and_one_sample():
    xm, ym = augment.mixup(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long), num_classes=3)
    assert xm.shape == (0, 1, 4, 4) and ym.shape == (0, 3)
    x1 = _images(n=1)
    xm, ym = augment.cutmix(x1, torch.tensor([2]), num_classes=3, generator=_gen(0))
    assert_close(xm, x1)
    assert_close(ym, torch.tensor([[0.0, 0.0, 1.0]]))


# --------------------------------------------------------------------------------------------
# RepeatedAugmentationSampler, TransformDataset
# --------------------------------------------------------------------------------------------
def test_repeated_augmentation_sampler():
    sampler = augment.RepeatedAugmentationSampler(10, 3, generator=_gen(0))
    idx = list(sampler)
    assert len(idx) == len(sampler) == 30
    assert sorted(idx) == sorted(list(range(10)) * 3)
    groups = torch.tensor(idx).reshape(10, 3)
    assert (groups == groups[:, :1]).all()  # each index three times in a row
    assert groups[:, 0].tolist() == torch.randperm(10, generator=_gen(0)).tolist()
    assert list(sampler) != idx  # a new permutation each epoch
    again = augment.RepeatedAugmentationSampler(10, 3, generator=_gen(0))
    assert list(again) == idx
    short = augment.RepeatedAugmentationSampler(list(range(10)), 2, num_samples=10, generator=_gen(0))
    assert len(list(short)) == 10 == len(short) and len(set(short)) <= 5


def test_repeated_augmentation_in_a_dataloader_batch():
    ds = TensorDataset(torch.arange(12.0)[:, None, None, None].expand(12, 1, 4, 4), torch.arange(12))
    sampler = augment.RepeatedAugmentationSampler(ds, 4, generator=_gen(1))
    loader = DataLoader(ds, batch_size=8, sampler=sampler)
    for _, yb in loader:
        counts = torch.bincount(yb)
        assert set(counts[counts > 0].tolist()) == {4}  # two distinct images, four copies each


def test_repeated_augmentation_sampler_bad_input():
    with pytest.raises(ValueError, match="num_repeats"):
        augment.RepeatedAugmentationSampler(10, 0)
    with pytest.raises(ValueError, match="num_samples"):
        augment.RepeatedAugmentationSampler(10, 2, num_samples=21)
    with pytest.raises(TypeError, match="data_source"):
        augment.RepeatedAugmentationSampler(3.5)


def test_transform_dataset_applies_per_sample():
    ds = TensorDataset(torch.ones(5, 1, 8, 8), torch.arange(5))
    wrapped = augment.TransformDataset(ds, lambda t: t * 2, target_transform=lambda c: c + 10)
    x, y = wrapped[3]
    assert len(wrapped) == 5 and torch.equal(x, torch.full((1, 8, 8), 2.0)) and y == 13
    torch.manual_seed(0)
    flips = augment.TransformDataset(
        TensorDataset(torch.arange(16.0).reshape(1, 1, 4, 4).expand(40, 1, 4, 4), torch.zeros(40)),
        v2.RandomHorizontalFlip(),
    )
    firsts = torch.stack([flips[i][0][0, 0, 0] for i in range(40)])
    assert set(firsts.tolist()) == {0.0, 3.0}  # flipped or not, per sample
    with pytest.raises(TypeError, match="transform"):
        augment.TransformDataset(ds, transform=3)
    with pytest.raises(TypeError, match="dataset"):
        augment.TransformDataset(5)


# --------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------
def test_digits_pipeline_keeps_shape_range_and_is_seeded():
    img = torch.zeros(1, 8, 8)
    img[0, 2:6, 3:5] = 1.0
    pipe = augment.digits_pipeline()
    torch.manual_seed(0)
    outs = torch.stack([pipe(img) for _ in range(30)])
    assert outs.shape == (30, 1, 8, 8) and outs.min() >= 0 and outs.max() <= 1
    assert (outs - img).abs().amax(dim=(1, 2, 3)).min() > 0  # every call changed the digit
    torch.manual_seed(0)
    assert torch.equal(outs, torch.stack([pipe(img) for _ in range(30)]))
    ra = augment.digits_pipeline(randaugment=(2, 9))
    assert isinstance(ra.transforms[0], v2.RandAugment) and ra.transforms[0].num_ops == 2
    torch.manual_seed(1)
    a = torch.stack([ra(img) for _ in range(10)])
    torch.manual_seed(1)
    assert torch.equal(a, torch.stack([ra(img) for _ in range(10)]))
    still = augment.digits_pipeline(degrees=0.0, max_shift=0.0, scale=(1.0, 1.0))
    assert_close(still(img), img)


def test_shapes_pipeline_structure_and_output():
    pipe = augment.shapes_pipeline(24, randaugment=(1, 5))
    kinds = [type(t) for t in pipe.transforms]
    assert kinds == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ColorJitter, v2.RandAugment]
    assert pipe.transforms[2].hue is None  # colours are labels: no hue jitter
    out = pipe(torch.rand(3, 32, 32, generator=_gen(0)))
    assert out.shape == (3, 24, 24) and out.min() >= 0 and out.max() <= 1
    assert [type(t) for t in augment.shapes_pipeline(16, flip=False, jitter=0).transforms] == [
        v2.RandomResizedCrop
    ]


def test_pipelines_bad_input():
    with pytest.raises(ValueError, match="randaugment"):
        augment.digits_pipeline(randaugment=(2,))
    with pytest.raises(ValueError, match="magnitude"):
        augment.digits_pipeline(randaugment=(2, 31))
    with pytest.raises(ValueError, match="degrees"):
        augment.digits_pipeline(degrees=-1.0)
    with pytest.raises(ValueError, match="jitter"):
        augment.shapes_pipeline(16, jitter=1.5)
    with pytest.raises(ValueError, match="scale"):
        augment.shapes_pipeline(16, scale=(0.0, 1.0))


def test_batch_functions_run_in_float64_and_keep_device():
    x = _images(n=5).double()
    for out in (
        augment.random_translate(x, 1),
        augment.random_flip(x),
        augment.random_resized_crop(x, 4),
        augment.cutout(x, 2),
        augment.mixup(x, torch.arange(5), num_classes=5)[0],
        augment.cutmix(x, torch.arange(5), num_classes=5)[0],
    ):
        assert out.dtype == torch.float64 and out.device == x.device
    assert math.isfinite(augment.cutmix(x, torch.arange(5), num_classes=5)[1].sum().item())


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_augmentation_on_every_device(device):
    x = _images(n=6, c=3, h=12, w=12, seed=11)
    xd, y = x.to(device), torch.arange(6)
    cases = [
        lambda t, g: augment.random_translate(t, 2, generator=g),
        lambda t, g: augment.random_flip(t, generator=g),
        lambda t, g: augment.random_resized_crop(t, 8, generator=g),
        lambda t, g: augment.cutout(t, 4, generator=g),
        lambda t, g: augment.mixup(t, y.to(t.device), num_classes=6, generator=g)[0],
        lambda t, g: augment.cutmix(t, y.to(t.device), num_classes=6, generator=g)[0],
    ]
    for fn in cases:
        on_device = fn(xd, _gen(3))
        assert on_device.device.type == device
        assert_close(on_device.cpu(), fn(x, _gen(3)), atol=1e-5, rtol=1e-5)
