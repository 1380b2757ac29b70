"""Tests of course_lib.nn.generative (chapter 10): AdaIN, the StyleGAN-like toy, truncation,
ProGAN's fade-in, DCGAN-style networks, PatchGAN and the receptive-field helper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from course_lib import nn as cnn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# AdaIN
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adain_output_statistics_equal_the_style(dtype):
    g = _gen()
    x = 3 * torch.randn(4, 5, 6, 7, generator=g, dtype=dtype) + 2
    scale = torch.rand(4, 5, generator=g, dtype=dtype) * 2 + 0.1
    bias = torch.randn(4, 5, generator=g, dtype=dtype)
    y = cnn.adain(x, scale, bias)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y.mean(dim=(2, 3)), bias)
    assert_close(y.std(dim=(2, 3), correction=0), scale)


def test_adain_matches_instance_norm_and_is_differentiable():
    g = _gen(1)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.instance_norm(x, eps=1e-8) * scale[..., None, None] + bias[..., None, None]
    assert_close(cnn.adain(x, scale, bias), ref)
    assert torch.autograd.gradcheck(lambda a, b, c: cnn.adain(a, b, c, eps=1e-6), (x, scale, bias))


def test_adain_module_starts_near_instance_norm_and_uses_w():
    torch.manual_seed(0)
    m = cnn.AdaIN(4, 8)
    x = torch.randn(3, 4, 5, 5)
    w = torch.zeros(3, 8)
    assert_close(m(x, w), torch.nn.functional.instance_norm(x, eps=1e-8))
    scale, bias = m.style(torch.randn(3, 8))
    y = m(x, torch.randn(3, 8, generator=_gen(2)))
    assert y.shape == x.shape and scale.shape == bias.shape == (3, 4)


def test_adain_bad_input():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="scale must be a Tensor"):
        cnn.adain(x, torch.ones(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Tensor\\[N, C, H, W\\]"):
        cnn.adain(torch.randn(2, 3, 4), torch.ones(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="spatial"):
        cnn.adain(torch.randn(2, 3, 1, 1), torch.ones(2, 3), torch.zeros(2, 3))
    with pytest.raises(TypeError):
        cnn.adain(x.numpy(), torch.ones(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="w must be"):
        cnn.AdaIN(3, 8)(x, torch.zeros(2, 7))


# --------------------------------------------------------------------------------------------
# mapping network, style mixing, the toy generator
# --------------------------------------------------------------------------------------------
def test_mapping_network_shapes_and_pixel_norm():
    torch.manual_seed(0)
    f = cnn.MappingNetwork(6, 10, depth=3)
    assert sum(isinstance(m, nn.Linear) for m in f.modules()) == 3
    z = torch.randn(5, 6, generator=_gen())
    assert f(z).shape == (5, 10)
    assert_close(f(3 * z), f(z))  # pixel norm: the scale of z does not matter
    with pytest.raises(ValueError, match="z must be"):
        f(torch.randn(5, 7))
    with pytest.raises(ValueError, match="depth"):
        cnn.MappingNetwork(6, 10, depth=0)


def test_style_mix_layers():
    w1, w2 = torch.zeros(2, 3), torch.ones(2, 3)
    ws = cnn.style_mix(w1, w2, 2, 5)
    assert ws.shape == (2, 5, 3)
    assert (ws[:, :2] == 0).all() and (ws[:, 2:] == 1).all()
    assert (cnn.style_mix(w1, w2, 5, 5) == 0).all() and (cnn.style_mix(w1, w2, 0, 5) == 1).all()
    with pytest.raises(ValueError, match="crossover"):
        cnn.style_mix(w1, w2, 6, 5)
    with pytest.raises(ValueError, match="same shape"):
        cnn.style_mix(w1, torch.ones(2, 4), 1, 5)


def test_toy_style_generator_shapes_mixing_and_noise():
    torch.manual_seed(0)
    G = cnn.ToyStyleGenerator(latent_dim=8, w_dim=8, channels=(8, 8, 4, 4, 4))
    assert G.image_size == 16 and G.num_layers == 5
    z1, z2 = torch.randn(3, 8, generator=_gen(1)), torch.randn(3, 8, generator=_gen(2))
    w1, w2 = G.mapping(z1), G.mapping(z2)
    noise = [torch.randn(s, generator=_gen(3)) for s in G.noise_shapes(3)]
    x1 = G.synthesis(w1, noise)
    assert x1.shape == (3, 1, 16, 16)
    # mixing after the last layer is the first latent; mixing at layer 0 is the second
    assert_close(G.synthesis(cnn.style_mix(w1, w2, G.num_layers, G.num_layers), noise), x1)
    assert_close(G.synthesis(cnn.style_mix(w1, w2, 0, G.num_layers), noise), G.synthesis(w2, noise))
    mixed = G.synthesis(cnn.style_mix(w1, w2, 2, G.num_layers), noise)
    assert not torch.allclose(mixed, x1) and not torch.allclose(mixed, G.synthesis(w2, noise))
    # the same seed gives the same noise; no noise is deterministic; noise changes the image
    assert_close(G(z1, generator=_gen(5)), G(z1, generator=_gen(5)))
    assert_close(G(z1, "zero"), G(z1, "zero"))
    assert not torch.allclose(G(z1, generator=_gen(5)), G(z1, generator=_gen(6)))


def test_toy_style_generator_bad_input():
    G = cnn.ToyStyleGenerator(latent_dim=8, w_dim=8, channels=(4, 4))
    with pytest.raises(ValueError, match="ws must"):
        G.synthesis(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="one w per layer"):
        G.synthesis(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match="noise must be"):
        G.synthesis(torch.zeros(2, 8), "gaussian")
    with pytest.raises(ValueError, match="noise must be"):
        G.synthesis(torch.zeros(2, 8), [torch.zeros(2, 1, 4, 4)])
    with pytest.raises(ValueError, match="channels"):
        cnn.ToyStyleGenerator(channels=())


# --------------------------------------------------------------------------------------------
# truncation and fade-in
# --------------------------------------------------------------------------------------------
def test_truncated_normal_bounds_and_determinism():
    z = cnn.truncated_normal((2000, 4), 0.5, generator=_gen())
    assert z.shape == (2000, 4) and z.abs().max() <= 0.5
    assert_close(z, cnn.truncated_normal((2000, 4), 0.5, generator=_gen()))
    # a truncated standard normal on [-a, a] has variance 1 - 2 a phi(a) / (2 Phi(a) - 1)
    a = 0.5
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    var = 1 - 2 * a * phi / math.erf(a / math.sqrt(2))
    assert abs(z.var().item() - var) < 0.01
    assert_close(cnn.truncated_normal((3,), math.inf, generator=_gen(1)), torch.randn(3, generator=_gen(1)))
    with pytest.raises(ValueError, match="threshold"):
        cnn.truncated_normal((3,), 0.0)


def test_truncate_in_w():
    w, avg = torch.randn(4, 3, generator=_gen()), torch.randn(3, generator=_gen(1))
    assert_close(cnn.truncate(w, avg, 1.0), w)
    assert_close(cnn.truncate(w, avg, 0.0), avg.expand(4, 3))
    assert_close(cnn.truncate(w, avg, 0.5) - avg, 0.5 * (w - avg))
    with pytest.raises(ValueError, match="w_avg"):
        cnn.truncate(w, torch.zeros(4), 0.5)


def test_fade_in_endpoints():
    old, new = torch.randn(2, 3, 4, 4, generator=_gen()), torch.randn(2, 3, 8, 8, generator=_gen(1))
    up = old.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(cnn.fade_in(old, new, 0.0), up)
    assert torch.equal(cnn.fade_in(old, new, 1.0), new)
    assert_close(cnn.fade_in(old, new, 0.25), 0.75 * up + 0.25 * new)
    with pytest.raises(ValueError, match="twice"):
        cnn.fade_in(old, torch.zeros(2, 3, 6, 6), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        cnn.fade_in(old, new, 1.5)


# --------------------------------------------------------------------------------------------
# DCGAN-style networks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8, 16, 32])
def test_dcgan_shapes_and_range(size):
    torch.manual_seed(0)
    G = cnn.DCGANGenerator(latent_dim=10, image_size=size, base_channels=8)
    D = cnn.DCGANDiscriminator(image_size=size, base_channels=8)
    x = G(torch.randn(3, 10))
    assert x.shape == (3, 1, size, size) and x.abs().max() <= 1
    assert D(x).shape == (3,)


def test_conditional_dcgan_uses_labels():
    torch.manual_seed(0)
    G = cnn.DCGANGenerator(latent_dim=4, num_classes=10, base_channels=8).eval()
    D = cnn.DCGANDiscriminator(num_classes=10, base_channels=8, norm=None)
    z = torch.randn(2, 4).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 3])
    x = G(z, labels)
    assert x.shape == (4, 1, 8, 8) and not torch.allclose(x[0], x[2])
    assert D(x, labels).shape == (4,)
    with pytest.raises(ValueError, match="labels must be an integer"):
        G(z)
    with pytest.raises(ValueError, match="labels must be in"):
        G(z, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="unconditional"):
        cnn.DCGANGenerator(latent_dim=4)(z, labels)


def test_dcgan_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        cnn.DCGANGenerator(image_size=12)
    with pytest.raises(ValueError, match="power of two"):
        cnn.DCGANDiscriminator(image_size=4)
    with pytest.raises(ValueError, match="z must be"):
        cnn.DCGANGenerator(latent_dim=4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="x must be"):
        cnn.DCGANDiscriminator()(torch.randn(2, 1, 16, 16))


def test_dcgan_critic_without_norm_is_per_sample():
    torch.manual_seed(0)
    D = cnn.DCGANDiscriminator(base_channels=4, norm=None)
    x = torch.randn(4, 1, 8, 8)
    assert_close(D(x)[:2], D(x[:2]))  # no batch statistics: a sample's score ignores the others
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


# --------------------------------------------------------------------------------------------
# PatchGAN and receptive fields
# --------------------------------------------------------------------------------------------
def test_patchgan_70_geometry():
    D = cnn.PatchGANDiscriminator(in_channels=6)
    assert cnn.receptive_field(D) == 70
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert [m.stride[0] for m in convs] == [2, 2, 2, 1, 1]
    with torch.no_grad():
        assert D.eval()(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)
    assert cnn.receptive_field(cnn.PatchGANDiscriminator(n_layers=1)) == 16
    assert cnn.receptive_field(cnn.PatchGANDiscriminator(n_layers=2)) == 34


def test_patchgan_receptive_field_matches_the_gradient():
    torch.manual_seed(0)
    D = cnn.PatchGANDiscriminator(in_channels=1, base_channels=2, norm=None).double()
    x = torch.randn(1, 1, 96, 96, dtype=torch.float64, requires_grad=True)
    out = D(x)
    i, j = out.shape[2] // 2, out.shape[3] // 2
    (grad,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows = grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = grad[0, 0].abs().sum(0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        ([(3, 1)] * 3, 7),
        ([(7, 2), (3, 2), (3, 1), (3, 1)], 7 + 2 * 2 + 2 * 4 + 2 * 4),
        ([(3, 1, 1), (3, 1, 2), (3, 1, 4)], 15),
        ([(2, 2), (2, 2), (2, 2)], 8),
    ],
)
def test_receptive_field_of_specs(specs, expected):
    assert cnn.receptive_field(specs) == expected


def test_receptive_field_of_modules_counts_poolings_and_dilation():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    assert cnn.receptive_field(net) == 1 + 4 + 1 + 2 * 2


def test_receptive_field_bad_input():
    with pytest.raises(ValueError, match="no Conv2d"):
        cnn.receptive_field(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="square"):
        cnn.receptive_field(nn.Conv2d(1, 1, (3, 5)))
    with pytest.raises(ValueError, match="kernel, stride"):
        cnn.receptive_field([(3,)])
    with pytest.raises(ValueError, match="positive ints"):
        cnn.receptive_field([(3, 0)])


def test_generative_names_are_exported():
    from course_lib.nn import generative

    for name in generative.__all__:
        assert getattr(cnn, name) is getattr(generative, name)
