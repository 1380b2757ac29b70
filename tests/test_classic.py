"""Tests of course_lib.classic (chapter 06) against torchvision's models built with ``weights=None``.

Big models are built on the ``meta`` device (shapes only, no memory, milliseconds) to compare parameter
counts and state_dict layouts; real weights are allocated only for the output comparisons, at most once
per model in this module.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close
from torchvision.models.googlenet import Inception

from course_lib import classic


def _meta(builder, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(*args, **kwargs)


def _same_layout(mine: nn.Module, theirs: nn.Module) -> None:
    """Keys and shapes agree: torchvision's state_dict loads strictly into ours (and back)."""
    mine.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    theirs.load_state_dict(mine.state_dict(), strict=True, assign=True)


# --------------------------------------------------------------------------------------------
# count_parameters
# --------------------------------------------------------------------------------------------
def test_count_parameters_hand_values():
    assert classic.count_parameters(nn.Linear(3, 2)) == 8
    assert classic.count_parameters(nn.Conv2d(3, 10, 5)) == 760  # 10 * (5*5*3 + 1)
    shared = nn.Linear(4, 4)
    assert classic.count_parameters(nn.Sequential(shared, nn.ReLU(), shared)) == 20  # counted once
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert classic.count_parameters(model) == 15 + 8
    assert classic.count_parameters(model, trainable_only=True) == 8
    assert classic.count_parameters(nn.ReLU()) == 0
    with pytest.raises(TypeError, match="model"):
        classic.count_parameters(torch.zeros(3))


# --------------------------------------------------------------------------------------------
# LeNet-5
# --------------------------------------------------------------------------------------------
def test_lenet5_counts_and_shapes():
    model = classic.lenet5()
    per_layer = {name: classic.count_parameters(m) for name, m in model.named_children()}
    assert per_layer["c1"] == 6 * (5 * 5 * 1 + 1) == 156
    assert per_layer["c3"] == 16 * (5 * 5 * 6 + 1) == 2416
    assert per_layer["c5"] == 120 * (5 * 5 * 16 + 1) == 48120
    assert per_layer["f6"] == 84 * 121 == 10164
    assert per_layer["output"] == 10 * 85 == 850
    assert classic.count_parameters(model) == 61706
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    rgb = classic.lenet5(num_classes=3, in_channels=3)
    assert rgb(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="num_classes"):
        classic.lenet5(0)
    with pytest.raises(ValueError, match="in_channels"):
        classic.lenet5(in_channels=1.5)


# --------------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------------
def test_alexnet_equals_torchvision():
    mine = classic.alexnet().eval()
    theirs = _meta(torchvision.models.alexnet, weights=None).eval()
    assert classic.count_parameters(mine) == classic.count_parameters(theirs) == 61_100_840
    theirs.load_state_dict(mine.state_dict(), strict=True, assign=True)  # the same tensors, their forward
    x = torch.randn(2, 3, 67, 67)  # AdaptiveAvgPool2d(6) accepts any size >= 63
    with torch.no_grad():
        assert_close(mine(x), theirs(x))
    small = _meta(classic.alexnet, num_classes=10)
    assert small.classifier[-1].out_features == 10
    with pytest.raises(ValueError, match="dropout"):
        classic.alexnet(dropout=1.0)


# --------------------------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [11, 13, 16, 19])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_layout_and_counts_equal_torchvision(depth, batch_norm):
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")
    mine = _meta(classic.vgg, depth, batch_norm=batch_norm)
    theirs = _meta(getattr(torchvision.models, name), weights=None)
    assert classic.count_parameters(mine) == classic.count_parameters(theirs)
    assert repr(mine.features) == repr(theirs.features)
    assert repr(mine.classifier) == repr(theirs.classifier)
    _same_layout(mine, theirs)


def test_vgg16_matches_the_keras_table_of_the_lecture_notes():
    model = _meta(classic.vgg, 16)
    convs = [classic.count_parameters(m) for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == [1792, 36928, 73856, 147584, 295168, 590080, 590080, 1180160] + [2359808] * 5
    fcs = [classic.count_parameters(m) for m in model.classifier if isinstance(m, nn.Linear)]
    assert fcs == [102764544, 16781312, 4097000]
    assert classic.count_parameters(model) == 138_357_544


def test_vgg_forward_equals_torchvision(generator):
    # 133 M parameters: allocate them without initializing (to_empty), then fill cheaply
    mine = _meta(classic.vgg, 11, num_classes=7).to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in mine.parameters():
            p.zero_()
            flat = p.view(-1)
            n = min(flat.numel(), 200_000)  # every conv filter and bias, the first rows of fc1/fc2
            flat[:n] = 0.05 * torch.randn(n, generator=generator)
    theirs = _meta(torchvision.models.vgg11, weights=None, num_classes=7)
    theirs.load_state_dict(mine.state_dict(), strict=True, assign=True)  # the same tensors, their forward
    theirs.eval()
    x = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        out = mine(x)
        assert_close(out, theirs(x))
    assert out.shape == (2, 7) and out.abs().sum() > 0


def test_vgg_initialization_is_torchvisions():
    # He-normal (fan-out) convolutions, N(0, 0.01) linear layers, zero biases
    model = classic.vgg([64, "M", 64], hidden=512, pool_size=2, num_classes=10)
    conv = model.features[0]
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01
    assert abs(model.classifier[0].weight.std().item() - 0.01) < 1e-3
    assert conv.bias.abs().sum() == 0 and model.classifier[0].bias.abs().sum() == 0


def test_vgg_custom_cfg_small_network():
    model = classic.vgg([8, "M", 16, "M"], num_classes=3, in_channels=1, hidden=32, pool_size=2)
    assert model(torch.zeros(4, 1, 16, 16)).shape == (4, 3)
    expected = (8 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 4 * 32 + 32) + (32 * 32 + 32) + (32 * 3 + 3)
    assert classic.count_parameters(model) == expected
    bn = classic.vgg([8, "M"], num_classes=2, batch_norm=True, hidden=4, pool_size=1)
    assert isinstance(bn.features[1], nn.BatchNorm2d)


@pytest.mark.parametrize("cfg", [12, "16", [], ["M"], [8, -1], [8, 2.5], True])
def test_vgg_bad_cfg(cfg):
    with pytest.raises(ValueError, match="cfg"):
        classic.vgg(cfg)


def test_vgg_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        classic.vgg([8], num_classes=0)
    with pytest.raises(ValueError, match="hidden"):
        classic.vgg([8], hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        classic.vgg([8], dropout=-0.1)


# --------------------------------------------------------------------------------------------
# Inception
# --------------------------------------------------------------------------------------------
ARGS_3A = (192, 64, 96, 128, 16, 32, 32)  # GoogLeNet's inception (3a)


def _inception_params(c_in, c1, c3r, c3, c5r, c5, pp, k5):
    conv_bn = lambda i, o, k: i * o * k * k + 2 * o  # noqa: E731 - conv without bias + BN scale/shift
    return (
        conv_bn(c_in, c1, 1)
        + conv_bn(c_in, c3r, 1)
        + conv_bn(c3r, c3, 3)
        + conv_bn(c_in, c5r, 1)
        + conv_bn(c5r, c5, k5)
        + conv_bn(c_in, pp, 1)
    )


@pytest.mark.parametrize("train_mode", [False, True])
def test_inception_block_equals_torchvision(train_mode):
    mine = classic.InceptionBlock(*ARGS_3A, kernel_5x5=3)
    theirs = Inception(*ARGS_3A, conv_block=None)
    theirs.load_state_dict(mine.state_dict(), strict=True)
    mine.train(train_mode)
    theirs.train(train_mode)
    x = torch.randn(2, 192, 7, 7)
    with torch.no_grad():
        assert_close(mine(x), theirs(x))
    assert mine(x).shape == (2, 256, 7, 7) and mine.out_channels == 256
    assert classic.count_parameters(mine) == classic.count_parameters(theirs)
    assert classic.count_parameters(mine) == _inception_params(*ARGS_3A, k5=3)


def test_inception_block_with_paper_5x5_kernel():
    block = classic.InceptionBlock(*ARGS_3A)
    assert block.branch3[1].conv.kernel_size == (5, 5)
    assert classic.count_parameters(block) == _inception_params(*ARGS_3A, k5=5)
    assert block(torch.randn(1, 192, 5, 5)).shape == (1, 256, 5, 5)


def test_inception_block_bad_arguments():
    with pytest.raises(ValueError, match="ch3x3"):
        classic.InceptionBlock(192, 64, 96, 0, 16, 32, 32)
    with pytest.raises(ValueError, match="kernel_5x5"):
        classic.InceptionBlock(*ARGS_3A, kernel_5x5=7)


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "count"), [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)]
)
def test_resnet_layout_and_counts_equal_torchvision(name, count):
    mine = _meta(getattr(classic, name))
    theirs = _meta(getattr(torchvision.models, name), weights=None)
    assert classic.count_parameters(mine) == classic.count_parameters(theirs) == count
    _same_layout(mine, theirs)
    ten = _meta(getattr(classic, name), num_classes=10)
    assert classic.count_parameters(ten) == classic.count_parameters(
        _meta(getattr(torchvision.models, name), weights=None, num_classes=10)
    )


def test_resnet18_forward_equals_torchvision():
    mine = classic.resnet18(num_classes=5).eval()
    theirs = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    theirs.load_state_dict(mine.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(mine(x), theirs(x))
    assert mine.features(x).shape == (2, 512, 2, 2)


def test_resnet_builders_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        classic.resnet18(num_classes=0)
    with pytest.raises(TypeError, match="layers"):
        classic.resnet34(layers=(1, 1, 1, 1))
    plain = _meta(classic.resnet18, residual=False)
    assert all(b.downsample is None for b in plain.layer2)  # no shortcuts at all


def test_gap_cnn_is_chapter_06s_cam_network():
    from torch import nn

    from course_lib import nn as cnn

    torch.manual_seed(0)
    ref = nn.Sequential(
        nn.Sequential(
            cnn.ConvNormAct(3, 8),
            nn.MaxPool2d(2),
            cnn.ConvNormAct(8, 16),
            nn.MaxPool2d(2),
            cnn.ConvNormAct(16, 32),
        ),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3),
    )
    torch.manual_seed(0)
    model = classic.gap_cnn()
    assert classic.count_parameters(model) == 6187
    for (ka, a), (kb, b) in zip(ref.state_dict().items(), model.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)  # same layout, same initialization from the same seed
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert model(x).shape == (2, 3) and model[0](x).shape == (2, 32, 8, 8)
    assert classic.gap_cnn(10, in_channels=1, widths=(4,))(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="widths"):
        classic.gap_cnn(widths=())
    with pytest.raises(ValueError, match="num_classes"):
        classic.gap_cnn(0)
