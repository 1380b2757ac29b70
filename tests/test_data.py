"""course_lib.data: digits, splits, normalization, bundled photos, faces and the coloured shapes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import skimage.data
import sklearn.datasets
import torch
from torch.utils.data import DataLoader

from course_lib import data


# ----------------------------------------------------------------------------------------- digits
def test_load_digits_equals_sklearn_divided_by_16():
    x, y = data.load_digits()
    ref = sklearn.datasets.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    np.testing.assert_array_equal(x[:, 0].numpy(), (ref.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), ref.target)
    assert torch.bincount(y).tolist() == np.bincount(ref.target).tolist()
    x64, _ = data.load_digits(dtype=torch.float64)
    assert x64.dtype == torch.float64
    torch.testing.assert_close(x64.float(), x)


# ------------------------------------------------------------------------------------------ split
def _check_partition(parts, n):
    allidx = torch.cat(parts)
    assert allidx.dtype == torch.int64
    assert sorted(allidx.tolist()) == list(range(n)), "splits are not a disjoint cover of range(n)"
    for p in parts:
        assert torch.equal(p, p.sort().values)


@pytest.mark.parametrize("n, fractions", [(100, (0.7, 0.15, 0.15)), (1797, (0.6, 0.2, 0.2)), (7, (0.5, 0.5))])
def test_split_indices_partitions_with_the_right_sizes(n, fractions):
    parts = data.split_indices(n, fractions, seed=3)
    _check_partition(parts, n)
    cum = np.round(np.cumsum(fractions) * n).astype(int)
    want = np.diff(np.concatenate([[0], cum]))
    assert [len(p) for p in parts] == want.tolist()
    for p, f in zip(parts, fractions, strict=True):
        assert abs(len(p) - f * n) <= 1


def test_split_indices_is_deterministic_by_seed():
    a = data.split_indices(200, seed=0)
    b = data.split_indices(200, seed=0)
    c = data.split_indices(200, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_split_indices_stratified_keeps_class_proportions():
    _, y = data.load_digits()
    fractions = (0.6, 0.2, 0.2)
    parts = data.split_indices(len(y), fractions, seed=0, stratify=y)
    _check_partition(parts, len(y))
    counts = torch.bincount(y, minlength=10)
    for p, f in zip(parts, fractions, strict=True):
        per_class = torch.bincount(y[p], minlength=10)
        assert (per_class - f * counts).abs().max().item() <= 1.0, "a class is off by more than one sample"
    # the same with NumPy labels, and imbalanced labels with a class of 3 items
    parts_np = data.split_indices(len(y), fractions, seed=0, stratify=y.numpy())
    assert all(torch.equal(p, q) for p, q in zip(parts, parts_np, strict=True))
    labels = np.array([0] * 50 + [1] * 3 + [2] * 20)
    for p, f in zip(data.split_indices(73, (0.5, 0.5), stratify=labels), (0.5, 0.5), strict=True):
        assert np.abs(np.bincount(labels[p.numpy()], minlength=3) - f * np.bincount(labels)).max() <= 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be"),
        ({"n": 10.0}, "n must be"),
        ({"n": True}, "n must be"),
        ({"n": 10, "fractions": (0.5, 0.6)}, "sum to 1"),
        ({"n": 10, "fractions": (1.2, -0.2)}, "positive"),
        ({"n": 10, "fractions": (1.0, 0.0)}, "positive"),
        ({"n": 10, "fractions": ()}, "fractions"),
        ({"n": 10, "fractions": ((0.5, 0.5),)}, "fractions"),
        ({"n": 10, "stratify": np.zeros(9)}, r"stratify must have shape \(10,\)"),
        ({"n": 2, "fractions": (0.7, 0.15, 0.15)}, "empty split"),
    ],
)
def test_split_indices_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.split_indices(**kwargs)


# ------------------------------------------------------------------------------------- normalizer
@pytest.fixture
def images(generator):
    return torch.rand(20, 3, 5, 4, generator=generator) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2


def test_normalizer_per_channel_equals_hand_computed(images):
    norm = data.Normalizer("channel").fit(images)
    want_mean = images.permute(1, 0, 2, 3).reshape(3, -1).mean(1)
    want_std = images.permute(1, 0, 2, 3).reshape(3, -1).std(1)  # Bessel-corrected, as torch.std
    assert norm.mean.shape == (3, 1, 1)
    torch.testing.assert_close(norm.mean.flatten(), want_mean)
    torch.testing.assert_close(norm.std.flatten(), want_std)
    z = norm.transform(images)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z, (images - want_mean.view(1, 3, 1, 1)) / (want_std.view(1, 3, 1, 1) + 1e-6))


def test_normalizer_per_feature_and_global(images):
    feat = data.Normalizer("feature").fit(images)
    assert feat.mean.shape == (3, 5, 4)
    torch.testing.assert_close(feat.mean, images.mean(0))
    torch.testing.assert_close(feat.std, images.std(0))
    torch.testing.assert_close(feat.transform(images).mean(0), torch.zeros(3, 5, 4), atol=1e-5, rtol=0)
    glob = data.Normalizer("global").fit(images)
    assert glob.mean.ndim == 0
    torch.testing.assert_close(glob.mean, images.mean())
    torch.testing.assert_close(glob.std, torch.tensor(np.std(images.numpy().ravel(), ddof=1)))
    torch.testing.assert_close(glob.transform(images), (images - images.mean()) / (images.std() + 1e-6))


@pytest.mark.parametrize("per", ["channel", "feature", "global"])
def test_normalizer_round_trip_and_train_statistics_reused(images, generator, per):
    train, test = images[:12], images[12:] * 1.5
    norm = data.Normalizer(per).fit(train)
    mean, std = norm.mean.clone(), norm.std.clone()
    torch.testing.assert_close(norm.inverse(norm.transform(test)), test)
    # transforming another split neither refits nor uses that split's statistics
    z = norm.transform(test)
    torch.testing.assert_close(norm.mean, mean)
    torch.testing.assert_close(z, (test - mean) / (std + norm.eps))
    assert z.mean().abs().item() > 0.5, "the test split was standardized with its own statistics"
    # one item without the batch dimension, and float64 input keeps its dtype
    torch.testing.assert_close(norm.transform(test[0]), z[0])
    assert norm.transform(test.double()).dtype == torch.float64


def test_normalizer_rejects_misuse(images):
    with pytest.raises(ValueError, match="per must be"):
        data.Normalizer("pixel")
    with pytest.raises(RuntimeError, match="not fitted"):
        data.Normalizer().transform(images)
    with pytest.raises(RuntimeError, match="not fitted"):
        data.Normalizer().inverse(images)
    with pytest.raises(TypeError, match="floating-point"):
        data.Normalizer().fit((images * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="at least 2 samples"):
        data.Normalizer().fit(images[:1])
    with pytest.raises(ValueError, match=r"per='channel' needs x of shape \[N, C"):
        data.Normalizer("channel").fit(images.flatten(1))
    norm = data.Normalizer("channel").fit(images)
    with pytest.raises(TypeError, match="floating-point"):
        norm.transform((images * 10).to(torch.uint8))  # used to cast the statistics to uint8
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3"):
        norm.transform(images[:, :1])  # used to broadcast the 1 channel to 3
    with pytest.raises(ValueError, match="as fitted"):
        norm.transform(images.flatten(1))
    feat = data.Normalizer("feature").fit(images)
    with pytest.raises(ValueError, match="as fitted"):
        feat.transform(images[..., :3])
    assert "fitted" in repr(norm) and "not fitted" in repr(data.Normalizer())


# ---------------------------------------------------------------------------------- digits splits
def test_digits_splits_sizes_statistics_and_labels():
    x, y = data.load_digits()
    s = data.digits_splits(seed=0)
    idx = data.split_indices(1797, (0.6, 0.2, 0.2), seed=0, stratify=y)
    assert [len(getattr(s, k)) for k in ("train", "val", "test")] == [len(i) for i in idx]
    assert sum(len(i) for i in idx) == 1797 and abs(len(idx[0]) - 0.6 * 1797) <= 5
    assert s.classes == [str(c) for c in range(10)]
    # statistics come from the raw training split only
    assert s.normalizer.per == "global"
    torch.testing.assert_close(s.normalizer.mean, x[idx[0]].mean())
    torch.testing.assert_close(s.normalizer.std, x[idx[0]].std())
    assert s.normalizer.mean.item() != pytest.approx(x.mean().item(), abs=1e-6)
    for split, i in zip(("train", "val", "test"), idx, strict=True):
        xs, ys = s.tensors(split)
        assert xs.shape == (len(i), 1, 8, 8)
        torch.testing.assert_close(xs, s.normalizer.transform(x[i]))
        assert torch.equal(ys, y[i])
    xtr, _ = s.tensors("train")
    assert abs(xtr.mean().item()) < 1e-5 and xtr.std().item() == pytest.approx(1.0, abs=1e-4)
    assert abs(s.tensors("val")[0].mean().item()) > 1e-4  # val is not standardized with its own mean


def test_digits_splits_flatten_no_normalization_and_other_modes():
    x, y = data.load_digits()
    s = data.digits_splits((0.5, 0.25, 0.25), seed=1, normalize=None, flatten=True)
    idx = data.split_indices(1797, (0.5, 0.25, 0.25), seed=1, stratify=y)
    assert s.normalizer is None
    xtr, ytr = s.tensors("train")
    assert xtr.shape == (len(idx[0]), 64)
    torch.testing.assert_close(xtr, x[idx[0]].flatten(1))
    feat = data.digits_splits(normalize="feature", flatten=True)
    assert feat.normalizer.mean.shape == (1, 8, 8) and feat.tensors("test")[0].shape[1] == 64
    with pytest.raises(ValueError, match="fractions must be"):
        data.digits_splits((0.5, 0.5))
    with pytest.raises(ValueError, match="normalize must be"):
        data.digits_splits(normalize="zscore")


# ----------------------------------------------------------------------------------------- photos
def test_sample_image_every_name():
    for name in data.SAMPLE_IMAGES:
        img = data.sample_image(name)
        assert img.ndim == 3 and img.shape[0] in (1, 3), name
        assert img.dtype == torch.float32, name
        assert 0.0 <= img.min().item() and img.max().item() <= 1.0, name
        assert img.max().item() > img.min().item(), f"{name} is constant"
    assert data.sample_image("camera").shape == (1, 512, 512)
    assert data.sample_image("astronaut").shape == (3, 512, 512)
    assert data.sample_image("logo").shape[0] == 3  # RGBA: alpha dropped


def test_sample_image_values_and_resize():
    cam = data.sample_image("camera")
    np.testing.assert_allclose(cam[0].numpy(), skimage.data.camera() / 255.0, atol=1e-7)
    china = data.sample_image("china")
    np.testing.assert_allclose(
        china.permute(1, 2, 0).numpy(), sklearn.datasets.load_sample_image("china.jpg") / 255.0, atol=1e-7
    )
    horse = data.sample_image("horse")  # a bool image becomes 0/1
    assert set(horse.unique().tolist()) == {0.0, 1.0}
    small = data.sample_image("astronaut", 32)
    assert small.shape == (3, 32, 32) and 0 <= small.min() and small.max() <= 1
    rect = data.sample_image("camera", (16, 24))
    assert rect.shape == (1, 16, 24)
    # antialiased downsampling keeps the mean brightness
    assert rect.mean().item() == pytest.approx(cam.mean().item(), abs=0.02)


@pytest.mark.parametrize("kwargs", [{"name": "lena"}, {"name": "camera", "size": 0},
                                    {"name": "camera", "size": (8,)}, {"name": "camera", "size": 8.5}])  # fmt: skip
def test_sample_image_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="name must be|size must be"):
        data.sample_image(**kwargs)


def test_lfw_faces():
    x, y = data.lfw_faces()
    assert x.shape == (200, 1, 25, 25) and x.dtype == torch.float32
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0
    assert y.dtype == torch.int64 and y[:100].eq(1).all() and y[100:].eq(0).all()
    ref = np.asarray(skimage.data.lfw_subset(), dtype=np.float64)
    ref = ref / 255.0 if ref.max() > 1 else ref
    np.testing.assert_allclose(x[:, 0].numpy(), ref, atol=1e-6)


# ----------------------------------------------------------------------------------------- shapes
@pytest.fixture(scope="module")
def scenes() -> data.Shapes:
    return data.make_shapes(64, 32, min_objects=1, max_objects=3, noise=0.0, seed=0)


@pytest.fixture(scope="module")
def noisy_overlapping() -> data.Shapes:
    return data.make_shapes(48, 24, min_objects=2, max_objects=4, overlap=True, seed=1)


@pytest.fixture(scope="module")
def hard() -> data.Shapes:
    return data.make_shapes(60, 32, **data.HARD_SHAPES, seed=0)


def _dilate(m: torch.Tensor) -> torch.Tensor:
    """3x3 dilation by max-pooling, independent of the implementation in course_lib."""
    return torch.nn.functional.max_pool2d(m[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    out = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


@pytest.mark.parametrize("which", ["scenes", "noisy_overlapping", "hard"])
def test_make_shapes_types_and_shapes(which, request):
    s = request.getfixturevalue(which)
    n, size = {"scenes": (64, 32), "noisy_overlapping": (48, 24), "hard": (60, 32)}[which]
    assert len(s) == n
    assert s.images.shape == (n, 3, size, size) and s.images.dtype == torch.float32
    assert 0.0 <= s.images.min().item() and s.images.max().item() <= 1.0
    assert s.masks.shape == (n, size, size) and s.masks.dtype == torch.int64
    assert s.classes == data.SHAPE_CLASSES and s.color_names == tuple(data.SHAPE_COLORS)
    for field in (s.instance_masks, s.boxes, s.labels, s.colors, s.captions):
        assert len(field) == n
    for im, b, lab, col, cap in zip(s.instance_masks, s.boxes, s.labels, s.colors, s.captions, strict=True):
        k = len(lab)
        assert im.shape == (k, size, size) and im.dtype == torch.bool
        assert b.shape == (k, 4) and b.dtype == torch.float32
        assert lab.dtype == torch.int64 and col.dtype == torch.int64 and col.shape == (k,)
        assert isinstance(cap, str) and cap.startswith("a ")
        assert lab.min() >= 0 and lab.max() < len(s.classes) and col.max() < len(s.color_names)


@pytest.mark.parametrize("which", ["scenes", "noisy_overlapping", "hard"])
def test_make_shapes_masks_agree_with_instances_and_labels(which, request):
    s = request.getfixturevalue(which)
    for i, (im, lab) in enumerate(zip(s.instance_masks, s.labels, strict=True)):
        assert im.any(dim=(1, 2)).all(), f"image {i}: an instance mask is empty"
        assert im.sum(0).max() <= 1, f"image {i}: instance masks overlap"
        for m, c in zip(im, lab, strict=True):
            assert (s.masks[i][m] == c + 1).all()
        union = im.any(0)
        assert (s.masks[i][~union] == 0).all(), f"image {i}: labelled pixels outside every instance"
        assert (s.masks[i] > 0).sum() == im.sum()


@pytest.mark.parametrize("which", ["scenes", "noisy_overlapping", "hard"])
def test_make_shapes_boxes_are_tight(which, request):
    s = request.getfixturevalue(which)
    for b, im in zip(s.boxes, s.instance_masks, strict=True):
        assert torch.equal(b, _boxes_from_masks(im))
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_make_shapes_objects_do_not_touch_without_overlap():
    # seeds 0..4 each held two touching squares before the fix (a square's corners reach outside
    # the circle that the rejection test used)
    for seed in range(5):
        s = data.make_shapes(60, 32, max_objects=3, seed=seed)
        for i, im in enumerate(s.instance_masks):
            for a in range(len(im)):
                others = torch.cat([im[:a], im[a + 1 :]]).any(0)
                assert not (_dilate(im[a]) & others).any(), f"seed {seed}, image {i}: objects touch"


def test_make_shapes_touching_objects_touch_but_never_share_pixels(hard):
    touching = total = 0
    for i, im in enumerate(hard.instance_masks):
        assert im.sum(0).max() <= 1, f"image {i}: objects share pixels"
        for a in range(len(im)):
            others = torch.cat([im[:a], im[a + 1 :]]).any(0)
            touching += int((_dilate(im[a]) & others).any())
            total += 1
    # measured: 49 % of the objects of HARD_SHAPES scenes touch a neighbour; apart scenes have none
    assert 0.3 < touching / total < 0.8, touching / total
    counts = [len(lab) for lab in hard.labels]
    assert min(counts) >= 2 and max(counts) <= 5


def test_make_shapes_scenes_do_not_depend_on_the_look_settings():
    plain = data.make_shapes(30, 32, max_objects=4, touching=True, noise=0.0, seed=4)
    looks = data.make_shapes(
        30,
        32,
        max_objects=4,
        touching=True,
        noise=0.1,
        intensity=(0.5, 0.9),
        clutter=5,
        background=0.1,
        seed=4,
    )
    assert torch.equal(plain.masks, looks.masks) and plain.captions == looks.captions
    assert all(torch.equal(a, b) for a, b in zip(plain.boxes, looks.boxes, strict=True))
    assert not torch.equal(plain.images, looks.images)


def test_make_shapes_intensity_scales_each_object_uniformly():
    s = data.make_shapes(40, 24, max_objects=3, intensity=(0.4, 0.7), noise=0.0, seed=2)
    gains = []
    for img, im, col in zip(s.images, s.instance_masks, s.colors, strict=True):
        for m, c in zip(im, col, strict=True):
            rgb = torch.tensor(data.SHAPE_COLORS[s.color_names[c]])
            pix = img[:, m]  # [3, P]: one colour per object, a multiple of its palette colour
            assert (pix == pix[:, :1]).all()
            g = pix[:, 0] / rgb
            torch.testing.assert_close(g, g[:1].expand(3))
            gains.append(g[0].item())
    assert 0.4 - 1e-6 <= min(gains) and max(gains) <= 0.7 + 1e-6 and max(gains) - min(gains) > 0.2


def test_make_shapes_clutter_and_background_stay_background():
    clean = data.make_shapes(40, 24, max_objects=3, noise=0.0, seed=2)
    busy = data.make_shapes(40, 24, max_objects=3, noise=0.0, clutter=6, background=0.1, seed=2)
    assert torch.equal(clean.masks, busy.masks)
    changed = 0
    for a, b, im in zip(clean.images, busy.images, clean.instance_masks, strict=True):
        inside = im.any(0)
        assert torch.equal(a[:, inside], b[:, inside]), "clutter or background painted over an object"
        changed += int((a[:, ~inside] != b[:, ~inside]).any(0).sum())
    assert changed > 40 * 24 * 24 * 0.3  # the background pattern and strokes reach much of the background
    textured = data.make_shapes(40, 24, max_objects=3, noise=0.0, background=0.1, seed=2)
    for a, b, im in zip(clean.images, textured.images, clean.instance_masks, strict=True):
        d = (b - a)[:, ~im.any(0)]
        assert d.abs().max() <= 0.1 + 1e-6 and d.std() > 0.01


def test_make_shapes_overlap_occludes(noisy_overlapping):
    s = noisy_overlapping
    # with overlap some boxes intersect (objects were painted over each other)
    hits = 0
    for b in s.boxes:
        lo = torch.maximum(b[:, None, :2], b[None, :, :2])
        hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (hi - lo).clamp(min=0).prod(-1)
        hits += int((inter.triu(1) > 0).any())
    assert hits >= 5


def test_make_shapes_object_colours_and_background():
    s = data.make_shapes(40, 24, max_objects=3, noise=0.0, seed=2)
    for img, im, col in zip(s.images, s.instance_masks, s.colors, strict=True):
        for m, c in zip(im, col, strict=True):
            rgb = torch.tensor(data.SHAPE_COLORS[s.color_names[c]])
            assert torch.equal(img[:, m], rgb[:, None].expand(3, int(m.sum())))
        bg = img[:, ~im.any(0)]
        assert bg.numel() > 0 and (bg == bg[0, 0]).all() and 0 <= bg[0, 0] <= 0.2
    # noise is added on top, clipped to [0, 1]
    noisy = data.make_shapes(40, 24, max_objects=3, noise=0.05, seed=2)
    diff = noisy.images - s.images
    assert 0.03 < diff.std().item() < 0.06
    assert torch.equal(noisy.masks, s.masks)


def test_make_shapes_captions_name_objects_left_to_right(scenes):
    checked = 0
    for cap, b, lab, col in zip(scenes.captions, scenes.boxes, scenes.labels, scenes.colors, strict=True):
        words = cap[2:].split(" and a ")
        pairs = [tuple(w.split(" ")) for w in words]
        objects = [(scenes.color_names[c], scenes.classes[k]) for c, k in zip(col, lab, strict=True)]
        assert sorted(pairs) == sorted(objects), cap
        cx = (b[:, 0] + b[:, 2]) / 2
        order = cx.argsort()
        if len(cx) < 2 or (cx[order].diff() > 4).all():  # box centres far enough apart to be unambiguous
            assert pairs == [objects[j] for j in order.tolist()], cap
            checked += 1
    assert checked > 40
    assert re.fullmatch(r"a (red|green|blue|yellow) (circle|square|triangle)", scenes.captions[0]) or (
        " and a " in scenes.captions[0]
    )


def test_make_shapes_object_counts_in_range(scenes):
    counts = [len(lab) for lab in scenes.labels]
    assert min(counts) >= 1 and max(counts) <= 3 and set(counts) == {1, 2, 3}
    s = data.make_shapes(100, 32, min_objects=2, max_objects=4, seed=3)
    assert {len(lab) for lab in s.labels} == {2, 3, 4}


@pytest.mark.parametrize(
    "kwargs",
    [
        # before the fix, image 264 of this set had a triangle thin enough to cover no pixel centre
        # and came out empty ("an empty scene"), which broke ShapesDataset(target="label")
        {"n": 265, "size": 8, "min_objects": 1, "max_objects": 1, "seed": 0},
        # objects that found no room were dropped: images 3, 11 and 18 held 2 objects, not 3
        {"n": 20, "size": 16, "min_objects": 3, "max_objects": 3, "seed": 0},
        # with overlap, an object hidden by a later one was dropped: image 44 held 1 object, not 2
        {"n": 46, "size": 16, "min_objects": 2, "max_objects": 2, "overlap": True, "seed": 0},
    ],
)
def test_make_shapes_never_returns_fewer_than_min_objects(kwargs):
    s = data.make_shapes(**kwargs)
    assert all(len(lab) == kwargs["min_objects"] for lab in s.labels)
    assert all(m.any(dim=(1, 2)).all() for m in s.instance_masks)


def test_make_shapes_raises_when_objects_cannot_fit():
    with pytest.raises(ValueError, match="could not fit min_objects=5"):
        data.make_shapes(1, 8, min_objects=5, max_objects=5)


@pytest.mark.parametrize("size", [8, 13, 64])
def test_make_shapes_sizes(size):
    s = data.make_shapes(6, size, max_objects=2, seed=size)
    assert s.images.shape == (6, 3, size, size)
    for b in s.boxes:
        assert (b >= 0).all() and (b <= size).all()


def test_make_shapes_is_deterministic_by_seed():
    a = data.make_shapes(8, 16, seed=5)
    b = data.make_shapes(8, 16, seed=5)
    c = data.make_shapes(8, 16, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and a.captions == b.captions
    assert all(torch.equal(p, q) for p, q in zip(a.boxes, b.boxes, strict=True))
    assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)


def test_make_shapes_class_and_colour_subsets():
    s = data.make_shapes(10, 16, max_objects=2, classes=("triangle", "circle"), colors=("blue",), seed=0)
    assert s.classes == ("triangle", "circle") and s.color_names == ("blue",)
    assert all((c == 0).all() for c in s.colors)
    assert torch.cat(s.labels).unique().tolist() == [0, 1]
    assert all("square" not in cap and "red" not in cap for cap in s.captions)
    # the label index follows the given order: the semantic mask of a triangle is 1
    i, j = next((i, j) for i, lab in enumerate(s.labels) for j, k in enumerate(lab) if k == 0)
    assert "blue triangle" in s.captions[i] and (s.masks[i][s.instance_masks[i][j]] == 1).all()
    empty = data.make_shapes(0, 16)
    assert len(empty) == 0 and empty.images.shape == (0, 3, 16, 16)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n": -1}, ValueError, "n must be"),
        ({"n": 2.0}, ValueError, "n must be"),
        ({"n": 2, "size": 7}, ValueError, "size must be"),
        ({"n": 2, "size": 16.0}, ValueError, "size must be"),
        ({"n": 2, "min_objects": 0}, ValueError, "min_objects"),
        ({"n": 2, "min_objects": 3, "max_objects": 2}, ValueError, "min_objects <= max_objects"),
        ({"n": 2, "min_objects": 1.5}, TypeError, "min_objects must be an int"),
        ({"n": 2, "classes": ("hexagon",)}, ValueError, "classes must be"),
        ({"n": 2, "classes": ()}, ValueError, "classes must be"),
        ({"n": 2, "classes": "circle"}, TypeError, "sequences of names"),
        ({"n": 2, "colors": ("purple",)}, ValueError, "colors must be"),
        ({"n": 2, "radius": (0.3, 0.2)}, ValueError, "radius must be"),
        ({"n": 2, "radius": (0.0, 0.2)}, ValueError, "radius must be"),
        ({"n": 2, "radius": (0.1, 0.5)}, ValueError, "radius must be"),
        ({"n": 2, "noise": -0.1}, ValueError, "noise must be"),
        ({"n": 2, "intensity": (0.0, 1.0)}, ValueError, "intensity must be"),
        ({"n": 2, "intensity": (0.5, 1.2)}, ValueError, "intensity must be"),
        ({"n": 2, "intensity": (0.8, 0.5)}, ValueError, "intensity must be"),
        ({"n": 2, "clutter": -1}, ValueError, "clutter must be"),
        ({"n": 2, "clutter": 1.5}, ValueError, "clutter must be"),
        ({"n": 2, "clutter": True}, ValueError, "clutter must be"),
        ({"n": 2, "background": -0.1}, ValueError, "background must be"),
        ({"n": 2, "background": 0.6}, ValueError, "background must be"),
        ({"n": 2, "seed": -1}, ValueError, "seed must be"),
        ({"n": 2, "seed": None}, ValueError, "seed must be"),
    ],
)
def test_make_shapes_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        data.make_shapes(**kwargs)


# ---------------------------------------------------------------------------------- shapes dataset
def test_shapes_dataset_targets(scenes):
    single = data.make_shapes(12, 16, min_objects=1, max_objects=1, seed=4)
    ds = data.ShapesDataset(single, "label")
    assert len(ds) == 12
    img, label = ds[3]
    assert torch.equal(img, single.images[3]) and label.ndim == 0 and label == single.labels[3][0]
    x, y = next(iter(DataLoader(ds, batch_size=12)))
    assert x.shape == (12, 3, 16, 16) and torch.equal(y, torch.cat(single.labels))

    img, mask = data.ShapesDataset(scenes, "mask")[5]
    assert torch.equal(mask, scenes.masks[5])
    assert data.ShapesDataset(scenes, "caption")[5][1] == scenes.captions[5]
    img, target = data.ShapesDataset(scenes, "detection")[5]
    assert set(target) == {"boxes", "labels", "masks"}
    assert torch.equal(target["boxes"], scenes.boxes[5]) and torch.equal(
        target["masks"], scenes.instance_masks[5]
    )

    with pytest.raises(ValueError, match="exactly one object"):
        data.ShapesDataset(scenes, "label")
    with pytest.raises(ValueError, match="target must be one of"):
        data.ShapesDataset(scenes, "boxes")


def test_collate_detection(scenes):
    ds = data.ShapesDataset(scenes, "detection")
    loader = DataLoader(ds, batch_size=5, collate_fn=data.collate_detection)
    images, targets = next(iter(loader))
    assert images.shape == (5, 3, 32, 32) and torch.equal(images, scenes.images[:5])
    assert isinstance(targets, list) and len(targets) == 5
    for i, t in enumerate(targets):
        assert torch.equal(t["labels"], scenes.labels[i]) and torch.equal(t["boxes"], scenes.boxes[i])


# ---------------------------------------------------------------------------- toy 2-D distributions
@pytest.mark.parametrize("name", list(data.TOY_2D))
def test_toy_2d_is_seeded_and_its_noise_has_the_stated_scale(name):
    x = data.toy_2d(name, 4000, seed=3)
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.equal(x, data.toy_2d(name, 4000, seed=3))
    assert not torch.equal(x, data.toy_2d(name, 4000, seed=4))
    d = data.toy_2d_distance(name, x).double()
    std = data.TOY_2D[name]
    if name in ("ring", "grid"):  # 2-D isotropic noise: the distance is Rayleigh, mean std * sqrt(pi / 2)
        assert d.mean().item() == pytest.approx(std * math.sqrt(math.pi / 2), rel=0.05)
    else:  # the noise's component across the curve: mean |N(0, std)| = std * sqrt(2 / pi), a little less
        assert 0.6 * std * math.sqrt(2 / math.pi) < d.mean().item() < 1.05 * std * math.sqrt(2 / math.pi)
    clean = data.toy_2d(name, 500, seed=3, noise=0.0)
    assert data.toy_2d_distance(name, clean).max() < 2e-3


def test_toy_2d_modes_are_equally_likely_and_moons_match_scikit_learn():
    from sklearn.datasets import make_moons

    centers, std = data.toy_2d_modes("ring")
    assert centers.shape == (8, 2) and std == 0.02
    torch.testing.assert_close(centers.norm(dim=1), torch.full((8,), 2.0))
    x = data.toy_2d("ring", 8000, seed=0)
    counts = torch.bincount(torch.cdist(x, centers).argmin(1), minlength=8)
    assert counts.min() > 900 and counts.max() < 1100  # 1000 each, binomial sd ~30
    assert data.toy_2d_modes("grid")[0].shape == (25, 2)
    sk, _ = make_moons(300, noise=0.0, random_state=0)
    assert data.toy_2d_distance("moons", torch.as_tensor(sk, dtype=torch.float32)).max() < 2e-3


def test_toy_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="name"):
        data.toy_2d("swirl", 10)
    with pytest.raises(ValueError, match="positive int"):
        data.toy_2d("ring", 0)
    with pytest.raises(ValueError, match="noise"):
        data.toy_2d("ring", 5, noise=-1.0)
    with pytest.raises(ValueError, match="ring"):
        data.toy_2d_modes("moons")
    with pytest.raises(ValueError, match="Tensor\\[N, 2\\]"):
        data.toy_2d_distance("ring", torch.zeros(5, 3))


def test_make_shapes_distinct_colors_gives_each_object_its_own_colour():
    kw = dict(size=16, min_objects=2, max_objects=2, classes=("square", "circle"), radius=(2.5 / 16, 4 / 16))
    s = data.make_shapes(300, distinct_colors=True, seed=5, **kw)
    assert all(len(c) == 2 and c[0] != c[1] for c in s.colors)
    used = torch.cat(s.colors).bincount(minlength=4)
    assert used.min() > 100  # every colour is used (600 objects, 150 expected each)
    plain = data.make_shapes(300, seed=5, **kw)
    assert any(c[0] == c[1] for c in plain.colors)  # without the option colours repeat (1 in 4)
    with pytest.raises(ValueError, match="distinct_colors"):
        data.make_shapes(2, size=32, min_objects=1, max_objects=5, distinct_colors=True)


def test_two_object_scenes_and_their_prompts_agree_with_the_pixels():
    s = data.two_object_scenes(200, seed=1)
    assert s.images.shape == (200, 3, 16, 16)
    tokens, masks = data.scene_prompts(s)
    assert tokens.shape == (200, 4) and masks.shape == (200, 2, 16, 16)
    vocab = data.PROMPT_VOCAB
    for i in range(200):
        words = [vocab[t] for t in tokens[i]]
        assert s.captions[i] == f"a {words[0]} {words[1]} and a {words[2]} {words[3]}"
        assert words[0] != words[2] and tokens[i].min() > 0  # distinct colours, no <null>
        # object 1 is left of object 2, each mask is painted in its token's colour, masks disjoint
        cols = [masks[i, k].nonzero()[:, 1].float().mean() for k in range(2)]
        assert cols[0] <= cols[1] + 1e-6
        assert not (masks[i, 0] & masks[i, 1]).any()
        for k in range(2):
            rgb = torch.tensor(data.SHAPE_COLORS[words[2 * k]])
            torch.testing.assert_close(s.images[i][:, masks[i, k]].mean(1), rgb, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="two_object_scenes"):
        data.scene_prompts(data.make_shapes(2, 16))
    with pytest.raises(ValueError, match="size"):
        data.two_object_scenes(2, size=8)


# ------------------------------------------------------------------- degradations (chapter 15)
def _edge_energy(x: torch.Tensor) -> float:
    """Mean squared finite difference (a blur keeps the total variation of a step edge, not this)."""
    dy, dx = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
    return float(dy.square().mean() + dx.square().mean())


def test_disk_kernel_is_a_normalized_symmetric_pillbox():
    assert torch.equal(data.disk_kernel(0), torch.ones(1, 1))
    for r in (0.5, 1.0, 2.0, 2.7, 3.0):
        k = data.disk_kernel(r)
        assert k.shape == (2 * math.ceil(r) + 1,) * 2
        torch.testing.assert_close(k.sum(), torch.tensor(1.0))
        torch.testing.assert_close(k, k.flip(0))
        torch.testing.assert_close(k, k.T)
        # the coverage before normalization is the disk's area
        raw = k / k.max()
        assert abs(float(raw.sum()) - math.pi * r * r) < 0.1 * math.pi * r * r + 0.5
    assert float(data.disk_kernel(3.0)[0, 0]) == 0.0  # the corner lies outside the disk
    with pytest.raises(ValueError, match="radius"):
        data.disk_kernel(-1)


def test_motion_kernel_is_a_normalized_line_in_the_given_direction():
    k = data.motion_kernel(7, 0)
    assert k.shape == (9, 9)
    torch.testing.assert_close(k.sum(), torch.tensor(1.0))
    assert k[4].sum() > 0.999  # one row: horizontal
    # a segment of length 7 centred on tap 4 covers taps 1..7 fully and half of 0 and 8 (bilinear)
    assert float(k[4, 1:8].sum()) > 0.94 and torch.count_nonzero(k[4]) == 9
    kv = data.motion_kernel(7, 90)
    torch.testing.assert_close(kv, k.T, atol=1e-6, rtol=0)  # 90 degrees: the same line, vertical
    kd = data.motion_kernel(9, 37)
    torch.testing.assert_close(kd, kd.flip(0, 1), atol=1e-6, rtol=0)  # symmetric about its centre
    assert data.motion_kernel(5, 0, size=11).shape == (11, 11)
    with pytest.raises(ValueError, match="odd"):
        data.motion_kernel(5, 0, size=4)


def test_blurs_equal_scipy_convolution_with_mirror_padding():
    from scipy import ndimage

    x = data.clean_scenes(3, 16, seed=0)
    radii, lengths, angles = (
        torch.tensor([0.0, 1.5, 3.0]),
        torch.tensor([3.0, 7.0, 10.0]),
        torch.tensor([0.0, 45.0, 120.0]),
    )
    got_d = data.defocus_blur(x, radii)
    got_m = data.motion_blur(x, lengths, angles)
    for i in range(3):
        kd = data.disk_kernel(float(radii[i])).double().numpy()
        km = data.motion_kernel(float(lengths[i]), float(angles[i])).double().numpy()
        for c in range(3):
            img = x[i, c].double().numpy()
            ref_d = ndimage.convolve(img, kd, mode="mirror")
            ref_m = ndimage.convolve(img, km, mode="mirror")
            np.testing.assert_allclose(got_d[i, c].numpy(), ref_d, atol=1e-5, rtol=0)
            np.testing.assert_allclose(got_m[i, c].numpy(), ref_m, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_d[0], x[0])  # radius 0 is the identity


def test_blur_keeps_constants_and_removes_edges():
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(data.defocus_blur(flat, 2.5), flat)
    torch.testing.assert_close(data.motion_blur(flat, 9, 30), flat)
    x = data.clean_scenes(8, 32, seed=1)
    for y in (data.defocus_blur(x, 2.0), data.motion_blur(x, 9, 0)):
        assert y.min() >= 0 and y.max() <= 1 + 1e-6
        assert _edge_energy(y) < 0.7 * _edge_energy(x)
    with pytest.raises(ValueError, match="radius"):
        data.defocus_blur(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="Tensor"):
        data.defocus_blur(x[0], 1.0)


def test_gaussian_noise_has_the_asked_std_and_is_seeded():
    x = torch.full((4, 3, 32, 32), 0.5)
    sig = torch.tensor([0.0, 0.02, 0.05, 0.1])
    y = data.gaussian_noise(x, sig, generator=3)
    torch.testing.assert_close(y[0], x[0])
    for i in range(1, 4):
        assert abs(float((y[i] - 0.5).std()) / float(sig[i]) - 1) < 0.08
    assert torch.equal(y, data.gaussian_noise(x, sig, generator=3))
    assert not torch.equal(y, data.gaussian_noise(x, sig, generator=4))
    assert torch.equal(y, data.gaussian_noise(x, sig, generator=torch.Generator().manual_seed(3)))
    assert data.gaussian_noise(torch.ones(1, 3, 8, 8), 0.5).max() <= 1.0  # clipped
    with pytest.raises(ValueError, match="sigma"):
        data.gaussian_noise(x, -0.1)


def test_rain_only_brightens_along_streaks():
    x = data.clean_scenes(6, 32, seed=2) * 0.8
    torch.testing.assert_close(data.add_rain(x, alpha=0.0, generator=0), x)
    torch.testing.assert_close(data.add_rain(x, streaks=0, generator=0), x)
    y = data.add_rain(x, streaks=10, length=8, alpha=0.7, angle=15, generator=0)
    assert (y >= x - 1e-6).all() and y.max() <= 1
    changed = (y - x).abs().amax(1) > 1e-6
    frac = changed.float().mean(dim=(1, 2))
    assert (frac > 0.02).all() and (frac < 0.4).all(), frac
    more = data.add_rain(x, streaks=30, length=8, alpha=0.7, angle=15, generator=0)
    assert ((more - x).abs().amax(1) > 1e-6).float().mean() > changed.float().mean()
    assert torch.equal(y, data.add_rain(x, streaks=10, length=8, alpha=0.7, angle=15, generator=0))
    with pytest.raises(ValueError, match="alpha"):
        data.add_rain(x, alpha=1.5)


def test_degrade_draws_parameters_in_range_and_strength_zero_is_clean():
    x = data.clean_scenes(10, 32, seed=3)
    for kind in data.DEGRADATIONS:
        y, params = data.degrade(x, kind, seed=1)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert not torch.allclose(y, x)
        for name, (lo, hi) in data.DEGRADATION_RANGES[kind].items():
            assert params[name].shape == (10,)
            assert (params[name] >= lo - 0.5).all() and (params[name] <= hi + 0.5).all(), (kind, name)
        y2, _ = data.degrade(x, kind, seed=1)
        assert torch.equal(y, y2)
        clean, _ = data.degrade(x, kind, strength=0.0, seed=1)
        torch.testing.assert_close(clean, x)
    _, p = data.degrade(x, "noise", ranges={"sigma": (0.01, 0.02)}, strength=2.0)
    assert (p["sigma"] >= 0.02).all() and (p["sigma"] <= 0.04).all()
    with pytest.raises(ValueError, match="kind"):
        data.degrade(x, "fog")
    with pytest.raises(ValueError, match="parameters"):
        data.degrade(x, "noise", ranges={"radius": (1, 2)})


def test_clean_scenes_kinds_are_seeded_and_differ_in_edges():
    energy = {}
    for kind in data.SCENE_KINDS:
        x = data.clean_scenes(12, 24, kind=kind, seed=5)
        assert x.shape == (12, 3, 24, 24) and x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, data.clean_scenes(12, 24, kind=kind, seed=5))
        assert not torch.equal(x, data.clean_scenes(12, 24, kind=kind, seed=6))
        energy[kind] = _edge_energy(x)
    assert energy["gradient"] < 0.5 * min(energy["blocks"], energy["stripes"])
    assert data.clean_scenes(0, 16).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="kind"):
        data.clean_scenes(2, kind="noise")


def test_degraded_images_labels_counts_and_sources():
    x, y = data.degraded_images([5, 1, 0, 3], 16, seed=0)
    assert x.shape == (9, 3, 16, 16) and y.tolist() == [0] * 5 + [1] + [3] * 3
    xb, yb = data.degraded_images(4, 16, seed=0)
    assert torch.bincount(yb).tolist() == [4, 4, 4, 4]
    assert torch.equal(xb, data.degraded_images(4, 16, seed=0)[0])
    xs, _ = data.degraded_images(4, 16, scenes=["gradient", "blocks", "stripes", "photo"], seed=0)
    assert not torch.equal(xs[:4], xb[:4])
    with pytest.raises(ValueError, match="counts"):
        data.degraded_images([1, 2], 16)
    with pytest.raises(ValueError, match="scenes"):
        data.degraded_images(2, 16, scenes=["blocks", "photo"])


# ---------------------------------------------------------------------------- rendered text (chapter 16)
def test_render_text_lines_shapes_ranges_and_determinism():
    a = data.render_text_lines(40, height=32, width=128, seed=3)
    b = data.render_text_lines(40, height=32, width=128, seed=3)
    c = data.render_text_lines(40, height=32, width=128, seed=4)
    assert a.images.shape == (40, 1, 32, 128) and a.images.dtype == torch.float32
    assert len(a) == 40 and a.fonts.shape == (40,)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert torch.equal(a.images, b.images) and a.texts == b.texts
    assert a.texts != c.texts
    assert all(3 <= len(t) <= 8 and set(t) <= set(data.TEXT_CHARS) for t in a.texts)
    assert set(a.fonts.tolist()) <= set(range(len(data.TEXT_FONTS)))


def test_render_text_lines_draws_the_text_with_contrast():
    clean = data.render_text_lines(20, noise=0.0, shear=0.0, seed=0, chars="0123456789", length=(4, 4))
    assert all(len(t) == 4 and t.isdigit() for t in clean.texts)
    # every image has ink: its grey range is at least the 0.35 ink/background gap minus antialiasing
    spread = clean.images.flatten(1).amax(1) - clean.images.flatten(1).amin(1)
    assert float(spread.min()) > 0.3, spread.min()
    warped = data.render_text_lines(5, warp=0.2, seed=0)
    assert warped.images.shape == (5, 1, 32, 128)


def test_render_text_lines_rejects_bad_arguments():
    with pytest.raises(ValueError):
        data.render_text_lines(2, length=(0, 3))
    with pytest.raises(ValueError):
        data.render_text_lines(2, fonts=("Arial.ttf",))
    with pytest.raises(ValueError):
        data.render_text_lines(2, height=4)


def test_make_text_scenes_boxes_hold_the_ink():
    s = data.make_text_scenes(30, size=64, noise=0.0, distractors=0, seed=1)
    assert s.images.shape == (30, 1, 64, 64) and s.boxes.shape == (30, 4) and len(s) == 30
    b = s.boxes
    assert bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())
    assert float(b.min()) >= 0 and float(b.max()) <= 64
    for img, (x1, y1, x2, y2) in zip(s.images[:, 0], b.long().tolist(), strict=True):
        bg = img[0, 0] if not (x1 == 0 and y1 == 0) else img[-1, -1]
        outside = img.clone()
        outside[y1:y2, x1:x2] = bg
        # without clutter or noise, nothing outside the box differs from the background
        assert float((outside - bg).abs().max()) < 0.26
        assert float((img[y1:y2, x1:x2] - bg).abs().max()) > 0.3
    again = data.make_text_scenes(30, size=64, noise=0.0, distractors=0, seed=1)
    assert torch.equal(again.images, s.images) and again.texts == s.texts


def test_pseudo_words_structure_and_determinism():
    a = data.pseudo_words(300, seed=1)
    assert a == data.pseudo_words(300, seed=1) and a != data.pseudo_words(300, seed=2)
    letters = set(data.PSEUDO_CONSONANTS + data.PSEUDO_VOWELS)
    assert all(4 <= len(w) <= 9 and set(w) <= letters for w in a)
    # every vowel follows a consonant, and no word has three consonants in a row
    for w in a:
        kinds = "".join("v" if c in data.PSEUDO_VOWELS else "c" for c in w)
        assert kinds[0] == "c" and "vv" not in kinds and "ccc" not in kinds
    # Zipf frequencies: some words repeat, unlike uniform random strings
    assert len(set(data.pseudo_words(2000, seed=3))) < 1900
    with pytest.raises(ValueError):
        data.pseudo_words(3, syllables=(0, 2))


def test_render_text_lines_draws_given_texts():
    words = data.pseudo_words(6, seed=0)
    lines = data.render_text_lines(6, height=24, width=96, texts=words, seed=0)
    assert lines.texts == words and lines.images.shape == (6, 1, 24, 96)
    with pytest.raises(ValueError, match="texts"):
        data.render_text_lines(3, texts=words)


def test_free_form_masks_are_seeded_binary_strokes():
    m = data.free_form_masks(200, 32, seed=3)
    assert m.shape == (200, 1, 32, 32) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    frac = m.mean(dim=(1, 2, 3))
    assert (frac > 0).all() and 0.05 < float(
        frac.mean()
    ) < 0.25  # every mask has a hole; about 12 % on average
    assert torch.equal(m, data.free_form_masks(200, 32, seed=3))
    assert not torch.equal(m, data.free_form_masks(200, 32, seed=4))
    wide = data.free_form_masks(200, 32, width=(0.2, 0.25), seed=3)
    assert float(wide.mean()) > float(frac.mean())  # wider brushes, larger holes
    # strokes are connected brush lines: almost every hole pixel has a hole neighbour
    h = m[:, 0].bool()
    nb = torch.zeros_like(h)
    nb[:, 1:] |= h[:, :-1]
    nb[:, :-1] |= h[:, 1:]
    nb[:, :, 1:] |= h[:, :, :-1]
    nb[:, :, :-1] |= h[:, :, 1:]
    assert float((h & nb).sum() / h.sum()) > 0.95
    assert data.free_form_masks(0, 16).shape == (0, 1, 16, 16)
    with pytest.raises(ValueError):
        data.free_form_masks(2, 32, strokes=(3, 1))
