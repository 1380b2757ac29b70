"""Tests of course_lib.nn.restoration: denoisers, sub-pixel convolution, partial and gated convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.nn import restoration as R


def test_dncnn_is_residual_and_starts_as_identity():
    torch.manual_seed(0)
    m = R.DnCNN(3, width=8, depth=4)
    y = torch.rand(2, 3, 12, 10)
    assert torch.equal(m(y), y)  # the last conv starts at zero: x_hat = y + 0
    nn.init.normal_(m.body[-1].weight)
    torch.testing.assert_close(m(y), y + m.body(y))
    with pytest.raises(ValueError):
        m(torch.rand(2, 1, 12, 10))
    with pytest.raises(ValueError):
        R.DnCNN(3, depth=1)


def test_cbdnet_shapes_nonnegative_map_and_override():
    torch.manual_seed(0)
    m = R.CBDNet(3, width=8, depth=3, est_width=8, est_depth=2)
    nn.init.normal_(m.body[-1].weight, std=0.1)
    y = torch.rand(2, 3, 16, 16)
    x_hat, s_hat = m(y)
    assert x_hat.shape == y.shape and s_hat.shape == y.shape
    assert (s_hat >= 0).all()
    # the denoiser reads the map: a different map changes the output, the same map reproduces it
    x_same, _ = m(y, sigma_map=s_hat)
    torch.testing.assert_close(x_same, x_hat)
    x_big, _ = m(y, sigma_map=torch.full((1, 1, 1, 1), 0.5))
    assert not torch.allclose(x_big, x_hat)


def test_cbdnet_loss_is_asymmetric_and_reduces_to_mse():
    x = torch.rand(2, 3, 8, 8)
    sigma = torch.tensor([0.1, 0.2])
    true_map = sigma[:, None, None, None].expand_as(x)
    zero = R.cbdnet_loss(x, x, true_map.clone(), sigma, tv_weight=0.0)
    assert zero.item() == pytest.approx(0.0, abs=1e-12)
    under = R.cbdnet_loss(x, x, true_map - 0.05, sigma, alpha=0.3, tv_weight=0.0)
    over = R.cbdnet_loss(x, x, true_map + 0.05, sigma, alpha=0.3, tv_weight=0.0)
    assert under.item() == pytest.approx(0.7 * 0.05**2, rel=1e-4)
    assert over.item() == pytest.approx(0.3 * 0.05**2, rel=1e-4)
    half = R.cbdnet_loss(x, x + 0.1, true_map + 0.05, sigma, alpha=0.5, tv_weight=0.0)
    assert half.item() == pytest.approx(0.1**2 + 0.5 * 0.05**2, rel=1e-4)
    # TV: zero for a constant map, positive for a ramp
    assert R.total_variation(true_map).item() == 0.0
    ramp = torch.arange(8.0).expand(1, 1, 8, 8) / 8
    assert R.total_variation(ramp).item() == pytest.approx((1 / 8) ** 2, rel=1e-5)


def test_pixel_shuffle_equals_torch():
    x = torch.randn(2, 3 * 9, 5, 4)
    for r, ch in ((3, 27), (1, 27)):
        got = R.pixel_shuffle(x[:, :ch], r)
        assert torch.equal(got, F.pixel_shuffle(x[:, :ch], r))  # a permutation: exact
    x2 = torch.randn(1, 8, 3, 3)
    assert torch.equal(R.PixelShuffle(2)(x2), nn.PixelShuffle(2)(x2))
    # output pixel (c, 2h + i, 2w + j) is input channel 4c + 2i + j at (h, w)
    out = R.pixel_shuffle(x2, 2)
    assert out[0, 1, 2 * 1 + 1, 2 * 2 + 0] == x2[0, 4 + 2, 1, 2]
    with pytest.raises(ValueError):
        R.pixel_shuffle(torch.randn(1, 6, 2, 2), 2)


def test_espcn_shapes_and_starts_as_bicubic():
    torch.manual_seed(0)
    m = R.ESPCN(1, 2, (8, 4))
    x = torch.rand(3, 1, 10, 12)
    out = m(x)
    assert out.shape == (3, 1, 20, 24)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
    plain = R.ESPCN(3, 3, (8, 4), residual=False)
    assert plain(torch.rand(1, 3, 4, 4)).shape == (1, 3, 12, 12)
    assert sum(isinstance(mod, R.PixelShuffle) for mod in plain.modules()) == 1
    relu = R.ESPCN(1, 2, (8, 4), activation="relu")
    assert sum(isinstance(mod, nn.ReLU) for mod in relu.modules()) == 2
    assert not any(isinstance(mod, nn.Tanh) for mod in relu.modules())
    torch.testing.assert_close(relu(x), F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
    with pytest.raises(ValueError):
        R.ESPCN(1, 2, (8, 4), activation="gelu")


def _partial_conv_reference(x, mask, weight, bias, padding):
    """x' = W^T (X * M) * k^2 / sum(M) + b where sum(M) > 0, else 0 (window by window, with unfold)."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    cols = F.unfold(x * mask, k, padding=padding)  # [N, C k^2, L]
    mcols = F.unfold(mask, k, padding=padding)  # [N, k^2, L]
    count = mcols.sum(1, keepdim=True)
    out = weight.reshape(weight.shape[0], -1) @ cols  # [N, O, L]
    out = torch.where(count > 0, out * (k * k) / count.clamp(min=1) + bias[None, :, None], torch.zeros(()))
    return out.reshape(n, -1, h, w), (count > 0).float().reshape(n, 1, h, w)


def test_partial_conv_matches_its_definition_and_plain_conv_inside():
    torch.manual_seed(0)
    pc = R.PartialConv2d(3, 5, 3)
    nn.init.normal_(pc.bias)
    x = torch.randn(2, 3, 12, 12)
    mask = (torch.rand(2, 1, 12, 12) > 0.4).float()
    out, new = pc(x, mask)
    ref, ref_mask = _partial_conv_reference(x, mask, pc.conv.weight, pc.bias, 1)
    torch.testing.assert_close(out, ref)
    assert torch.equal(new, ref_mask)
    # a fully valid mask: an ordinary convolution away from the (zero-padded, hence partial) border
    full, _ = pc(x, torch.ones(2, 1, 12, 12))
    plain = F.conv2d(x, pc.conv.weight, pc.bias, padding=1)
    torch.testing.assert_close(full[..., 1:-1, 1:-1], plain[..., 1:-1, 1:-1])
    # renormalization factor 9 / sum(M): all-ones input and weights give exactly 9 where any pixel is valid
    ones = R.PartialConv2d(1, 1, 3, bias=False)
    nn.init.ones_(ones.conv.weight)
    o, m2 = ones(torch.ones(1, 1, 6, 6), (torch.rand(1, 1, 6, 6) > 0.5).float())
    assert torch.equal(o, 9.0 * m2)


def test_partial_conv_ignores_hole_values_and_hole_shrinks():
    torch.manual_seed(0)
    pc = R.PartialConv2d(3, 4, 3)
    x = torch.randn(1, 3, 16, 16)
    valid = torch.ones(1, 1, 16, 16)
    valid[..., 4:12, 4:12] = 0  # an 8x8 hole
    out1, _ = pc(x, valid)
    x2 = x.clone()
    x2[..., 4:12, 4:12] = torch.randn(3, 8, 8) * 100
    out2, _ = pc(x2, valid)
    assert torch.equal(out1, out2)  # hole values never enter: exact
    holes = [int((valid == 0).sum())]
    m = valid
    for _ in range(4):
        _, m = R.PartialConv2d(1, 1, 3)(torch.zeros(1, 1, 16, 16), m)
        holes.append(int((m == 0).sum()))
    assert holes == [64, 36, 16, 4, 0]  # one pixel per side per layer
    # a whole network ignores the hole too
    net = R.PartialConvNet(3, 8, 4)
    hole = 1 - valid
    torch.testing.assert_close(net(x, hole), net(x2, hole), rtol=0, atol=0)
    assert net(x, hole).shape == (1, 3, 16, 16)


def test_gated_conv_matches_definition_gate_in_unit_interval():
    torch.manual_seed(0)
    gc = R.GatedConv2d(4, 6, 3, dilation=2)
    x = torch.randn(2, 4, 10, 10)
    out = gc(x)
    want = F.elu(F.conv2d(x, gc.feature.weight, gc.feature.bias, padding=2, dilation=2)) * torch.sigmoid(
        F.conv2d(x, gc.gating.weight, gc.gating.bias, padding=2, dilation=2)
    )
    torch.testing.assert_close(out, want)
    gate = gc.gate(x)
    assert gate.shape == (2, 6, 10, 10) and (gate > 0).all() and (gate < 1).all()
    net = R.GatedConvNet(3, 8)
    hole = torch.zeros(2, 1, 10, 10)
    hole[..., 3:6, 3:6] = 1
    assert net(torch.rand(2, 3, 10, 10), hole).shape == (2, 3, 10, 10)
    assert len(net.layers) == 4 and all(isinstance(layer, R.GatedConv2d) for layer in net.layers)
    assert [layer.feature.dilation[0] for layer in net.layers] == [1, 2, 4, 2]
    comp = net.composite(torch.zeros(2, 3, 10, 10), torch.ones(2, 3, 10, 10), hole)
    assert torch.equal(comp, 1 - hole.expand(2, 3, 10, 10))
