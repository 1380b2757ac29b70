"""course_lib.nn.autoregressive: causal masks, masked convolutions, PixelCNN and the NLL helpers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import nn as cnn


def _expected_mask(k: int, mask_type: str) -> torch.Tensor:
    """The mask from its definition: position (i, j) is allowed iff it comes before the centre in
    raster order, or is the centre and the type is B."""
    c = k // 2
    m = torch.zeros(k, k)
    for i in range(k):
        for j in range(k):
            before = i * k + j < c * k + c
            m[i, j] = float(before or (mask_type == "B" and (i, j) == (c, c)))
    return m


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_causal_mask_is_exactly_the_raster_order_prefix(k, mask_type):
    m = cnn.causal_mask(k, mask_type)
    assert m.shape == (k, k) and m.dtype == torch.float32
    assert torch.equal(m, _expected_mask(k, mask_type))
    c = k // 2
    assert int(m.sum()) == c * k + c + (mask_type == "B")


def test_causal_mask_3x3_by_hand():
    assert cnn.causal_mask(3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert cnn.causal_mask(3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert cnn.causal_mask(1, "A").tolist() == [[0]]
    assert cnn.causal_mask(3, "B", dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("k", [2, 4, 0, -1, 3.0, True])
def test_causal_mask_rejects_even_or_bad_kernels(k):
    with pytest.raises(ValueError, match="kernel_size"):
        cnn.causal_mask(k, "A")
    with pytest.raises(ValueError, match="kernel_size"):
        cnn.MaskedConv2d(1, 1, k, "A")


@pytest.mark.parametrize("mask_type", ["C", "a", None])
def test_bad_mask_type_raises(mask_type):
    with pytest.raises(ValueError, match="mask_type"):
        cnn.causal_mask(3, mask_type)
    with pytest.raises(ValueError, match="mask_type"):
        cnn.MaskedConv2d(1, 1, 3, mask_type)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_equals_conv2d_with_masked_weight(mask_type):
    torch.manual_seed(0)
    conv = cnn.MaskedConv2d(3, 5, 5, mask_type)
    x = torch.randn(2, 3, 9, 7)
    y = conv(x)
    ref = F.conv2d(x, conv.weight * cnn.causal_mask(5, mask_type), conv.bias, padding=2)
    assert y.shape == (2, 5, 9, 7)
    torch.testing.assert_close(y, ref)
    assert torch.equal(conv.mask[1, 2], cnn.causal_mask(5, mask_type))
    # masked weights get exactly zero gradient
    y.sum().backward()
    assert torch.all(conv.weight.grad[..., cnn.causal_mask(5, mask_type) == 0] == 0)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_single_layer_dependencies(mask_type):
    torch.manual_seed(0)
    conv = cnn.MaskedConv2d(1, 4, 3, mask_type)
    dep = cnn.input_dependencies(conv, (3, 3), (7, 7))
    want = torch.zeros(7, 7, dtype=torch.bool)
    want[2:5, 2:5] = cnn.causal_mask(3, mask_type).bool()
    assert torch.equal(dep, want)


def test_masked_conv_rejects_wrong_input():
    conv = cnn.MaskedConv2d(2, 4, 3, "A")
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        conv(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        conv(torch.zeros(2, 5, 5))
    assert "mask_type='A'" in repr(conv)


@pytest.mark.parametrize("levels, channels", [(2, 1), (17, 1), (4, 3)])
def test_pixelcnn_shapes_and_nll(levels, channels):
    torch.manual_seed(0)
    model = cnn.PixelCNN(levels, in_channels=channels, hidden=16, num_blocks=2)
    x = torch.randint(0, levels, (3, channels, 6, 5))
    logits = model(x)
    assert logits.shape == (3, levels, channels, 6, 5)
    nll = model.nll(x)
    assert nll.shape == (3,)
    ref = -(logits.log_softmax(1).gather(1, x.unsqueeze(1)).squeeze(1)).flatten(1).sum(1)
    torch.testing.assert_close(nll, ref)
    # integer levels and their float encoding give the same output
    torch.testing.assert_close(model(x.float() / (levels - 1)), logits)


def _assert_causal(model, size=(6, 5), channels=1):
    """Every output pixel depends on exactly the input pixels strictly before it in raster order."""
    h, w = size
    order = torch.arange(h * w).view(h, w)
    for i in range(h * w):
        r, c = divmod(i, w)
        dep = cnn.input_dependencies(model, (r, c), size, in_channels=channels)
        assert not dep[order >= i].any(), f"output pixel {(r, c)} sees the input at or after itself"
        assert dep.sum() <= i


def test_pixelcnn_is_exactly_causal():
    torch.manual_seed(0)
    model = cnn.PixelCNN(4, hidden=16, num_blocks=3, first_kernel=5)
    _assert_causal(model)


def test_pixelcnn_causal_for_several_channels():
    torch.manual_seed(0)
    model = cnn.PixelCNN(3, in_channels=2, hidden=8, num_blocks=1)
    _assert_causal(model, size=(4, 4), channels=2)


def test_pixelcnn_gradient_reaches_earlier_pixels_but_leaves_a_blind_spot():
    """Stacked 3×3 masks: pixel (4, 4) sees (3, 3) but not the upper-right pixels a full causal model
    would see, such as (3, 6): the blind spot that the gated two-stack PixelCNN removes."""
    torch.manual_seed(0)
    model = cnn.PixelCNN(2, hidden=16, num_blocks=3, first_kernel=3, kernel_size=3)
    dep = cnn.input_dependencies(model, (4, 4), (8, 8))
    assert dep[3, 3] and dep[4, 3] and dep[0, 4]
    assert not dep[3, 6] and not dep[2, 7]


def test_pixelcnn_first_pixel_sees_nothing():
    torch.manual_seed(0)
    model = cnn.PixelCNN(2, hidden=8, num_blocks=1)
    assert not cnn.input_dependencies(model, (0, 0), (4, 4)).any()
    # so its logits are the same for every input
    x = torch.randint(0, 2, (5, 1, 4, 4))
    out = model(x)[:, :, :, 0, 0]
    torch.testing.assert_close(out, out[:1].expand_as(out))


def test_pixelcnn_rejects_bad_input():
    model = cnn.PixelCNN(3, hidden=8, num_blocks=1)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(torch.full((1, 1, 4, 4), 3))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model.nll(torch.full((1, 1, 4, 4), -1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.full((1, 1, 4, 4), 1.5))
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        model(torch.zeros(1, 2, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        model.nll(torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError):
        model([[0]])
    for bad in ({"levels": 1}, {"levels": 2, "hidden": 0}, {"levels": 2, "num_blocks": -1}):
        with pytest.raises(ValueError):
            cnn.PixelCNN(**bad)
    with pytest.raises(ValueError, match="kernel_size"):
        cnn.PixelCNN(2, first_kernel=4)


def test_pixelcnn_sampling_is_seeded_and_keeps_the_given_prefix():
    torch.manual_seed(0)
    model = cnn.PixelCNN(5, hidden=8, num_blocks=1)
    a = model.sample(4, (4, 3), generator=torch.Generator().manual_seed(1))
    b = model.sample(4, (4, 3), generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 1, 4, 3) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 5
    init = torch.randint(0, 5, (4, 1, 4, 3), generator=torch.Generator().manual_seed(2))
    c = model.sample(4, (4, 3), generator=torch.Generator().manual_seed(1), init=init, start=6)
    assert torch.equal(c.flatten(1)[:, :6], init.flatten(1)[:, :6])
    with pytest.raises(ValueError, match="init"):
        model.sample(2, (4, 3), start=3)
    with pytest.raises(ValueError, match="start"):
        model.sample(2, (4, 3), start=13)
    with pytest.raises(ValueError, match="init must have shape"):
        model.sample(2, (4, 3), init=init, start=1)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, (4, 3), temperature=0)


def test_pixelcnn_sampling_follows_the_model_distribution():
    """A model whose first pixel's logits are biased: the sampled frequency matches its softmax."""
    torch.manual_seed(0)
    model = cnn.PixelCNN(3, hidden=4, num_blocks=0)
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    probs = model(torch.zeros(1, 1, 1, 1, dtype=torch.int64))[0, :, 0, 0, 0].softmax(0)
    x = model.sample(4000, (1, 1), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(x.flatten(), minlength=3).float() / 4000
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_dtype_and_device_follow_the_module():
    torch.manual_seed(0)
    model = cnn.PixelCNN(4, hidden=8, num_blocks=1).double()
    assert model.first.mask.dtype == torch.float64
    x = torch.randint(0, 4, (2, 1, 4, 4))
    assert model(x).dtype == torch.float64
    assert model(x.double() / 3).dtype == torch.float64
    conv = cnn.MaskedConv2d(1, 2, 3, "B").to("meta")
    assert conv.mask.device.type == "meta"
    assert conv(torch.empty(1, 1, 5, 5, device="meta")).shape == (1, 2, 5, 5)
    dep = cnn.input_dependencies(model, (2, 2), (4, 4))
    assert dep.dtype == torch.bool and dep.shape == (4, 4)


def test_input_dependencies_rejects_bad_pixels_and_models():
    conv = cnn.MaskedConv2d(1, 1, 3, "A")
    with pytest.raises(ValueError, match="pixel"):
        cnn.input_dependencies(conv, (5, 0), (5, 5))
    with pytest.raises(ValueError, match="model must return"):
        cnn.input_dependencies(torch.nn.Flatten(), (0, 0), (3, 3))


def test_discretize_and_bits_per_dim():
    x = torch.tensor([0.0, 0.24, 0.26, 0.5, 1.0])
    assert cnn.discretize(x, 2).tolist() == [0, 0, 0, 0, 1]  # round half to even: 0.5 -> 0
    assert cnn.discretize(x, 5).tolist() == [0, 1, 1, 2, 4]
    raw = torch.arange(17) / 16.0  # the digits' 17 grey levels
    assert torch.equal(cnn.discretize(raw, 17), torch.arange(17))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cnn.discretize(torch.tensor([1.5]), 4)
    with pytest.raises(ValueError, match="levels"):
        cnn.discretize(x, 1)
    with pytest.raises(TypeError):
        cnn.discretize(torch.tensor([1]), 4)
    # a uniform distribution over 256 levels costs exactly 8 bits per dimension
    nll = 3 * 8 * 8 * math.log(256)
    assert cnn.bits_per_dim(nll, (3, 8, 8)) == pytest.approx(8.0)
    torch.testing.assert_close(cnn.bits_per_dim(torch.tensor([64 * math.log(2)]), 64), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        cnn.bits_per_dim(1.0, 0)
    with pytest.raises(TypeError):
        cnn.bits_per_dim(1.0, "64")


def test_names_are_exported():
    for name in cnn.autoregressive.__all__:
        assert hasattr(cnn, name)
