"""Tests of course_lib.nn (chapter 02): activations, mlp, init_weights, ActivationRecorder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from course_lib import nn as cnn
from course_lib import ops


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# activation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("relu", torch.relu),
        ("leaky_relu", lambda x: torch.nn.functional.leaky_relu(x, 0.01)),
        ("elu", torch.nn.functional.elu),
        ("gelu", lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
        ("gelu_tanh", lambda x: torch.nn.functional.gelu(x, approximate="tanh")),
        ("selu", torch.selu),
        ("silu", lambda x: x * torch.sigmoid(x)),
        ("tanh", torch.tanh),
        ("sigmoid", torch.sigmoid),
        ("identity", lambda x: x),
    ],
)
def test_activation_matches_reference(name, ref):
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    module = cnn.activation(name)
    assert isinstance(module, nn.Module)
    assert_close(module(x), ref(x))


def test_activation_kwargs_and_fresh_instances():
    m = cnn.activation("leaky_relu", negative_slope=0.2)
    assert m.negative_slope == 0.2
    assert cnn.activation("relu") is not cnn.activation("relu")
    assert cnn.activation("gelu_tanh").approximate == "tanh"


def test_activation_bad_input():
    with pytest.raises(ValueError, match="activation 'swish'"):
        cnn.activation("swish")
    with pytest.raises(TypeError, match="activation name"):
        cnn.activation(nn.ReLU)


# --------------------------------------------------------------------------------------------
# mlp
# --------------------------------------------------------------------------------------------
def test_mlp_structure_and_shape():
    model = cnn.mlp([64, 32, 16, 10], "tanh")
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [
        (64, 32),
        (32, 16),
        (16, 10),
    ]
    assert sum(p.numel() for p in model.parameters()) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert model(torch.randn(7, 64)).shape == (7, 10)


def test_mlp_forward_equals_hand_computation():
    torch.manual_seed(0)
    model = cnn.mlp([5, 4, 3])
    x = torch.randn(6, 5)
    l1, l2 = model[0], model[2]
    expected = torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    assert_close(model(x), expected)


def test_mlp_options():
    model = cnn.mlp([3, 4, 4, 2], "gelu", final_activation=True, dropout=0.25, bias=False)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear, nn.GELU]
    assert all(m.bias is None for m in model if isinstance(m, nn.Linear))
    assert model[2].p == 0.25
    # a single layer: just the Linear (no activation on logits by default)
    single = cnn.mlp([3, 2])
    assert [type(m) for m in single] == [nn.Linear]


def test_mlp_activation_factory_and_instance():
    by_factory = cnn.mlp([3, 4, 4, 2], lambda: nn.LeakyReLU(0.2))
    assert [m.negative_slope for m in by_factory if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2]
    proto = nn.PReLU()
    by_instance = cnn.mlp([3, 4, 4, 2], proto)
    prelus = [m for m in by_instance if isinstance(m, nn.PReLU)]
    assert len(prelus) == 2 and prelus[0] is not prelus[1] and prelus[0] is not proto
    assert isinstance(cnn.mlp([3, 4, 2], nn.SiLU)[1], nn.SiLU)


def test_mlp_bad_input():
    with pytest.raises(ValueError, match="sizes"):
        cnn.mlp([5])
    with pytest.raises(ValueError, match="sizes"):
        cnn.mlp([5, 0, 2])
    with pytest.raises(ValueError, match="sizes"):
        cnn.mlp([5, 2.5, 2])
    with pytest.raises(ValueError, match="dropout"):
        cnn.mlp([5, 4, 2], dropout=1.0)
    with pytest.raises(ValueError, match="activation 'swish'"):
        cnn.mlp([5, 4, 2], "swish")
    with pytest.raises(TypeError, match="activation"):
        cnn.mlp([5, 4, 2], 3)
    with pytest.raises(TypeError, match="factory"):
        cnn.mlp([5, 4, 2], lambda: torch.relu)


# --------------------------------------------------------------------------------------------
# init_weights
# --------------------------------------------------------------------------------------------
N_IN, N_OUT = 400, 200


@pytest.mark.parametrize(
    ("scheme", "kwargs", "var"),
    [
        ("normal", {"std": 0.05}, 0.05**2),
        ("lecun_normal", {}, 1 / N_IN),
        ("xavier_normal", {}, 2 / (N_IN + N_OUT)),
        ("xavier_uniform", {}, 2 / (N_IN + N_OUT)),
        ("he_normal", {}, 2 / N_IN),
        ("he_uniform", {}, 2 / N_IN),
        ("he_normal", {"nonlinearity": "tanh"}, (5 / 3) ** 2 / N_IN),
        ("he_normal", {"nonlinearity": "leaky_relu"}, 2 / (1 + 0.01**2) / N_IN),
    ],
)
def test_init_empirical_variance(scheme, kwargs, var):
    layer = nn.Linear(N_IN, N_OUT)
    cnn.init_weights(layer, scheme, generator=_gen(), **kwargs)
    w = layer.weight.detach()
    # 80,000 draws: the variance estimate has a relative standard error of ~0.5 %
    assert abs(w.var().item() / var - 1) < 0.03, (scheme, w.var().item(), var)
    assert abs(w.mean().item()) < 4 * math.sqrt(var / w.numel())
    assert torch.count_nonzero(layer.bias) == 0
    if scheme.endswith("uniform"):
        bound = math.sqrt(3 * var)
        assert w.abs().max().item() <= bound + 1e-6
        assert w.abs().max().item() > 0.99 * bound


@pytest.mark.parametrize(
    ("scheme", "ref"),
    [
        ("normal", lambda w, g: nn.init.normal_(w, 0.0, 0.05, generator=g)),
        ("lecun_normal", lambda w, g: w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(w.shape[1]))),
        ("xavier_normal", lambda w, g: nn.init.xavier_normal_(w, generator=g)),
        ("xavier_uniform", lambda w, g: nn.init.xavier_uniform_(w, generator=g)),
        ("he_normal", lambda w, g: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g)),
        ("he_uniform", lambda w, g: nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g)),
    ],
)
def test_init_equals_torch_with_same_generator(scheme, ref):
    layer = nn.Linear(30, 20)
    cnn.init_weights(layer, scheme, std=0.05 if scheme == "normal" else None, generator=_gen(3))
    expected = torch.empty(20, 30)
    with torch.no_grad():
        ref(expected, _gen(3))
    assert_close(layer.weight.detach(), expected)


def test_init_conv_uses_fan_in_of_kernel():
    conv = nn.Conv2d(8, 16, 3)  # fan_in = 8 * 3 * 3 = 72, fan_out = 16 * 9 = 144
    cnn.init_weights(conv, "xavier_uniform", generator=_gen())
    assert conv.weight.abs().max().item() <= math.sqrt(6 / (72 + 144)) + 1e-6
    cnn.init_weights(conv, "he_normal", generator=_gen())
    assert abs(conv.weight.var().item() / (2 / 72) - 1) < 0.08
    assert torch.count_nonzero(conv.bias) == 0


def test_init_zeros_is_exact_and_reaches_every_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), cnn.mlp([4, 8, 3]))
    out = cnn.init_weights(model, "zeros")
    assert out is model
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())


def test_init_torch_default_restores_pytorch_init():
    layer = nn.Linear(N_IN, N_OUT)
    cnn.init_weights(layer, "zeros")
    torch.manual_seed(0)
    cnn.init_weights(layer, "torch_default")
    torch.manual_seed(0)
    ref = nn.Linear(N_IN, N_OUT)  # the constructor draws weight then bias, as reset_parameters does
    assert_close(layer.weight, ref.weight)
    assert_close(layer.bias, ref.bias)
    # kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(n_in), 1/sqrt(n_in)), so Var = 1 / (3 n_in)
    assert abs(layer.weight.var().item() * 3 * N_IN - 1) < 0.03
    assert layer.weight.abs().max().item() <= 1 / math.sqrt(N_IN)
    assert torch.count_nonzero(layer.bias) > 0


def test_init_is_reproducible_with_generator():
    a, b = cnn.mlp([10, 10, 10]), cnn.mlp([10, 10, 10])
    cnn.init_weights(a, "he_normal", generator=_gen(7))
    cnn.init_weights(b, "he_normal", generator=_gen(7))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # the two layers got different draws from the one generator
    assert not torch.equal(a[0].weight, a[2].weight)


def test_init_bad_input():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="scheme 'kaiming'"):
        cnn.init_weights(layer, "kaiming")
    with pytest.raises(ValueError, match="std"):
        cnn.init_weights(layer, "normal")
    with pytest.raises(ValueError, match="std"):
        cnn.init_weights(layer, "normal", std=-1.0)
    with pytest.raises(ValueError, match="std"):
        cnn.init_weights(layer, "he_normal", std=0.1)
    with pytest.raises(ValueError, match="nonlinearity"):
        cnn.init_weights(layer, "he_normal", nonlinearity="swish")
    with pytest.raises(ValueError, match="no Linear or Conv"):
        cnn.init_weights(nn.ReLU(), "he_normal")
    with pytest.raises(TypeError, match="module"):
        cnn.init_weights(torch.zeros(3), "zeros")


# --------------------------------------------------------------------------------------------
# layer_stats and ActivationRecorder
# --------------------------------------------------------------------------------------------
def _tiny_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.Tanh())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, -5.0]))
        net[2].weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([0.0, -0.25]))
    return net


X_TINY = torch.tensor([[1.0, -1.0], [2.0, 0.0]])


def test_recorder_matches_hand_computed_stats():
    net = _tiny_net()
    with cnn.ActivationRecorder(net, keep=True) as rec:
        out = net(X_TINY)
    assert [s.name for s in rec.stats] == ["1", "3"] and [s.kind for s in rec.stats] == ["ReLU", "Tanh"]
    relu = rec.stats[0]
    # pre-activations [[1, -1, -5], [2, 0, -3]] -> ReLU [[1, 0, 0], [2, 0, 0]]
    assert_close(relu.output, torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    assert relu.mean == pytest.approx(0.5)
    assert relu.std == pytest.approx(math.sqrt(5 / 6 - 0.25))  # population std of {1, 0, 0, 2, 0, 0}
    assert relu.dead == pytest.approx(4 / 6)
    assert relu.dead_units == pytest.approx(2 / 3)  # units 2 and 3 are zero on both samples
    assert relu.saturated == pytest.approx(2 / 6)  # |h| > 0.99: the entries 1 and 2
    assert relu.numel == 6
    # Tanh of [[3, 0.25], [6, 0.75]]: tanh(3) and tanh(6) exceed 0.99, tanh(0.25), tanh(0.75) do not
    t = torch.tanh(torch.tensor([[3.0, 0.25], [6.0, 0.75]]))
    assert_close(out, t)
    tanh = rec.stats[1]
    assert tanh.mean == pytest.approx(t.mean().item())
    assert tanh.std == pytest.approx(t.std(correction=0).item())
    assert (tanh.dead, tanh.dead_units, tanh.saturated) == (0.0, 0.0, 0.5)
    assert rec.column("saturated") == [pytest.approx(1 / 3), 0.5]


def test_recorder_removes_hooks_and_does_not_change_outputs():
    net = _tiny_net()
    expected = net(X_TINY)
    with cnn.ActivationRecorder(net) as rec:
        assert len(net[1]._forward_hooks) == 1 and len(net[3]._forward_hooks) == 1
        assert_close(net(X_TINY), expected)
        net(X_TINY)  # a second pass records every layer again
    assert len(rec) == 4 and rec.stats[0].output is None
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    net(X_TINY)
    assert len(rec) == 4  # nothing recorded after the block
    rec.clear()
    assert len(rec) == 0


def test_recorder_removes_hooks_after_exception():
    net = _tiny_net()
    with pytest.raises(RuntimeError, match="boom"), cnn.ActivationRecorder(net):
        raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_recorder_custom_types_and_gradients_flow():
    net = _tiny_net()
    with cnn.ActivationRecorder(net, nn.Linear) as rec:
        net(X_TINY).sum().backward()
    assert [s.kind for s in rec.stats] == ["Linear", "Linear"]
    assert rec.stats[0].mean == pytest.approx(-1.0)  # [[1, -1, -5], [2, 0, -3]]
    assert net[0].weight.grad is not None


def test_layer_stats_sigmoid_conv_and_edge_cases():
    s = cnn.layer_stats(torch.tensor([0.001, 0.5, 0.995, 0.3]), sigmoid=True)
    assert s["saturated"] == pytest.approx(0.5)  # 0.001 and 0.995 lie within 0.01 of 0 or 1
    h = torch.ones(2, 4, 3, 3)
    h[:, 1] = 0  # channel 1 is dead on every sample
    h[0, 2, 0, 0] = 0  # channel 2 has one zero but is alive
    s = cnn.layer_stats(h)
    assert s["dead_units"] == pytest.approx(1 / 4)
    assert s["dead"] == pytest.approx((18 + 1) / 72)
    one = cnn.layer_stats(torch.tensor([2.0]))
    assert (one["mean"], one["std"], one["dead"], one["saturated"]) == (2.0, 0.0, 0.0, 1.0)
    empty = cnn.layer_stats(torch.zeros(0, 3))
    assert all(math.isnan(v) for v in empty.values())
    half = cnn.layer_stats(torch.tensor([[0.0, 1.0]], dtype=torch.float16))
    assert half["mean"] == 0.5 and half["dead"] == 0.5


def test_recorder_bad_input():
    net = _tiny_net()
    with pytest.raises(ValueError, match="no module of the watched types"):
        cnn.ActivationRecorder(net, nn.Conv2d)
    with pytest.raises(ValueError, match="threshold"):
        cnn.ActivationRecorder(net, threshold=1.5)
    with pytest.raises(TypeError, match="types"):
        cnn.ActivationRecorder(net, "relu")
    with pytest.raises(TypeError, match="model"):
        cnn.ActivationRecorder(torch.zeros(2))
    rec = cnn.ActivationRecorder(net)
    with pytest.raises(ValueError, match="field"):
        rec.column("variance")
    with pytest.raises(TypeError, match="h must be a Tensor"):
        cnn.layer_stats([1.0, 2.0])


# --------------------------------------------------------------------------------------------
# conv blocks, stochastic depth, residual networks (chapters 05-06)
# --------------------------------------------------------------------------------------------
def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("norm", ["batch", "group", "instance", None])
@pytest.mark.parametrize(("kernel_size", "stride", "dilation"), [(3, 1, 1), (3, 2, 1), (5, 1, 2), (1, 1, 1)])
def test_conv_norm_act_matches_torchvision(norm, kernel_size, stride, dilation):
    from torchvision.ops import Conv2dNormActivation

    norm_cls = {
        "batch": nn.BatchNorm2d,
        "group": lambda c: nn.GroupNorm(8, c),
        "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
        None: None,
    }[norm]
    ours = cnn.ConvNormAct(4, 16, kernel_size, stride, dilation=dilation, norm=norm)
    ref = Conv2dNormActivation(4, 16, kernel_size, stride, dilation=dilation, norm_layer=norm_cls)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 9, 9, generator=_gen())
    assert_close(ours(x), ref(x))
    assert ours(x).shape[-1] == (9 - 1) // stride + 1  # "same" padding at stride 1
    assert (ours[0].bias is None) == (norm is not None)


def test_conv_norm_act_options_and_bad_input():
    block = cnn.ConvNormAct(3, 6, act="gelu", norm="group")
    assert isinstance(block[1], nn.GroupNorm) and block[1].num_groups == 6
    assert isinstance(block[2], nn.GELU)
    assert len(cnn.ConvNormAct(3, 6, norm=None, act=None)) == 1
    with pytest.raises(ValueError, match="norm"):
        cnn.ConvNormAct(3, 6, norm="layer")
    with pytest.raises(ValueError, match="out_channels"):
        cnn.ConvNormAct(3, 0)
    with pytest.raises(ValueError, match="unknown activation"):
        cnn.ConvNormAct(3, 6, act="swishy")


def test_norm_layer_group_count():
    assert cnn.norm_layer("group", 12).num_groups == 6
    assert cnn.norm_layer("group", 7).num_groups == 7
    assert cnn.norm_layer("group", 64).num_groups == 8
    assert isinstance(cnn.norm_layer(None, 5), nn.Identity)


def test_drop_path_equals_torchvision_stochastic_depth():
    from torchvision.ops import StochasticDepth

    x = torch.randn(64, 3, 4, 4, generator=_gen())
    ours, ref = cnn.DropPath(0.3).train(), StochasticDepth(0.3, "row").train()
    torch.manual_seed(5)
    a = ours(x)
    torch.manual_seed(5)
    b = ref(x)
    assert_close(a, b)
    kept = (a.flatten(1) != 0).any(1)
    assert 0 < kept.sum() < 64  # some samples dropped, some kept
    assert_close(a[kept], x[kept] / 0.7)
    assert torch.equal(ours.eval()(x), x)
    assert torch.equal(cnn.DropPath(0.0).train()(x), x)


def test_drop_path_is_unbiased_and_rejects_bad_p():
    x = torch.ones(200_000, 1)
    torch.manual_seed(0)
    assert cnn.DropPath(0.2).train()(x).mean().item() == pytest.approx(1.0, abs=0.01)
    for p in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="p must"):
            cnn.DropPath(p)


@pytest.mark.parametrize(
    ("block", "in_c", "out_c", "stride"),
    [("basic", 8, 8, 1), ("basic", 8, 16, 2), ("bottleneck", 16, 4, 1), ("bottleneck", 8, 8, 2)],
)
def test_residual_blocks_match_torchvision(block, in_c, out_c, stride):
    from torchvision.models import resnet

    x = torch.randn(2, in_c, 8, 8, generator=_gen())
    if block == "basic":
        ours = cnn.BasicBlock(in_c, out_c, stride)
        expansion, ref_cls = 1, resnet.BasicBlock
    else:
        ours = cnn.Bottleneck(in_c, out_c, stride)
        expansion, ref_cls = 4, resnet.Bottleneck
    downsample = None
    if stride != 1 or in_c != out_c * expansion:
        downsample = nn.Sequential(
            nn.Conv2d(in_c, out_c * expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_c * expansion),
        )
    ref = ref_cls(in_c, out_c, stride, downsample)
    ref.load_state_dict(ours.state_dict())  # same names, same shapes
    ours.eval(), ref.eval()
    assert_close(ours(x), ref(x))
    assert ours(x).shape == (2, out_c * expansion, 8 // stride, 8 // stride)


def test_plain_block_has_no_shortcut():
    plain = cnn.BasicBlock(8, 16, 2, residual=False).eval()
    assert plain.downsample is None
    x = torch.randn(1, 8, 6, 6, generator=_gen())
    assert_close(plain(x), torch.relu(plain.branch(x)))
    res = cnn.BasicBlock(8, 8, residual=True).eval()
    assert_close(res(x), torch.relu(res.branch(x) + x))


def test_resnet18_and_resnet50_equal_torchvision():
    from torchvision.models import resnet18, resnet50

    ours = cnn.ResNet((2, 2, 2, 2), (64, 128, 256, 512), stem="imagenet", num_classes=1000)
    ref = resnet18(weights=None)
    assert _n_params(ours) == _n_params(ref) == 11_689_512
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=_gen())
    ours.eval(), ref.eval()
    assert_close(ours(x), ref(x))
    big = cnn.ResNet((3, 4, 6, 3), (64, 128, 256, 512), block="bottleneck", stem="imagenet", num_classes=1000)
    assert _n_params(big) == 25_557_032
    big.load_state_dict(resnet50(weights=None).state_dict(), strict=True)


def test_small_resnet_shapes_features_and_gradients():
    model = cnn.ResNet((1, 1, 1), (8, 16, 32), in_channels=1, num_classes=5)
    x = torch.randn(4, 1, 16, 16, generator=_gen())
    feats = model.features(x)
    assert feats.shape == (4, 32, 4, 4) and model.out_channels == 32
    out = model(x)
    assert out.shape == (4, 5)
    assert_close(out, model.fc(feats.mean((2, 3))))  # GAP + linear
    stages = model.stage_features(x)
    assert [tuple(f.shape[1:]) for f in stages] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert_close(stages[-1], feats)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_resnet_options():
    plain = cnn.ResNet((2, 2), (8, 16), residual=False)
    assert all(
        not b.residual and b.downsample is None for b in plain.modules() if isinstance(b, cnn.BasicBlock)
    )
    rates = [m.p for m in cnn.ResNet((2, 3), (8, 16), drop_path=0.4).modules() if isinstance(m, cnn.DropPath)]
    assert_close(torch.tensor(rates), torch.linspace(0, 0.4, 5, dtype=torch.float32))
    assert _n_params(cnn.ResNet((1,), (8,), norm=None, num_classes=2)) == (
        (3 * 9 + 1) * 8 + 2 * (8 * 9 * 8 + 8) + 8 * 2 + 2
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": (2, 2), "widths": (8,)}, "equal length"),
        ({"layers": (), "widths": ()}, "non-empty"),
        ({"layers": (0,), "widths": (8,)}, r"layers\[0\]"),
        ({"block": "dense"}, "block"),
        ({"stem": "huge"}, "stem"),
        ({"drop_path": 1.0}, "drop_path"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_resnet_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn.ResNet(**kwargs)


def test_resnet_rejects_wrong_rank():
    with pytest.raises(ValueError, match="Tensor\\[N, C, H, W\\]"):
        cnn.ResNet()(torch.randn(3, 8, 8))


# --------------------------------------------------------------------------------------------
# U-Net, ASPP (chapter 07); FPN, detection head (chapter 08)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("skips", [True, False])
def test_unet_shapes_and_gradients(up, skips):
    model = cnn.UNet(3, 4, (8, 16, 32), up=up, skips=skips)
    x = torch.randn(2, 3, 16, 12, generator=_gen())
    out = model(x)
    assert out.shape == (2, 4, 16, 12)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.dec[0][0][0].in_channels == (32 if skips else 16)


def test_unet_bad_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        cnn.UNet(3, 2, (8, 16, 32))(torch.randn(1, 3, 10, 12))
    with pytest.raises(ValueError, match="at least two"):
        cnn.UNet(3, 2, (8,))
    with pytest.raises(ValueError, match="up"):
        cnn.UNet(up="nearest")


def test_aspp_equals_torchvision():
    from torchvision.models.segmentation.deeplabv3 import ASPP as TorchASPP

    ours, ref = cnn.ASPP(8, 16, (2, 4)), TorchASPP(8, [2, 4], 16)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 8, 9, 9, generator=_gen())
    ours.eval(), ref.eval()
    assert_close(ours(x), ref(x))
    assert ours(x).shape == (2, 16, 9, 9)
    # the receptive field of the rate-4 branch spans 9x9 pixels with 3x3 weights
    assert ours.convs[2][0].dilation == (4, 4) and ours.convs[2][0].padding == (4, 4)
    with pytest.raises(ValueError, match="rates"):
        cnn.ASPP(8, 16, (0,))


def test_fpn_equals_torchvision():
    from collections import OrderedDict

    from torchvision.ops import FeaturePyramidNetwork

    ours, ref = cnn.FPN([4, 8, 16], 6), FeaturePyramidNetwork([4, 8, 16], 6)
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = _gen()
    feats = [
        torch.randn(2, 4, 16, 16, generator=g),
        torch.randn(2, 8, 8, 8, generator=g),
        torch.randn(2, 16, 3, 3, generator=g),
    ]
    outs = ours(feats)
    refs = ref(OrderedDict((str(i), f) for i, f in enumerate(feats)))
    for o, r in zip(outs, refs.values(), strict=True):
        assert_close(o, r)
    assert [o.shape[-1] for o in outs] == [16, 8, 3] and all(o.shape[1] == 6 for o in outs)
    with pytest.raises(ValueError, match="expects 3 feature maps"):
        ours(feats[:2])


def test_detection_head_layout_prior_and_levels():
    head = cnn.DetectionHead(8, 3, num_anchors=2, depth=1, centerness=True)
    g = _gen()
    f1, f2 = torch.randn(2, 8, 4, 5, generator=g), torch.randn(2, 8, 2, 3, generator=g)
    out = head([f1, f2])
    assert out["cls_logits"].shape == (2, (20 + 6) * 2, 3)
    assert out["box_regression"].shape == (2, 52, 4) and out["centerness"].shape == (2, 52)
    # row-major cells, then anchors: the order of ops.anchor_grid
    raw = head.cls_logits(head.cls_tower(f1))  # [N, A*C, H, W]
    n, h, w, a, c = 1, 2, 3, 1, 2
    assert_close(out["cls_logits"][n, (h * 5 + w) * 2 + a, c], raw[n, a * 3 + c, h, w])
    anchors = ops.anchor_grid((4, 5), 4, (8.0, 16.0))  # the first level's anchors, one per prediction
    assert anchors.shape[0] == 40 == f1.shape[2] * f1.shape[3] * head.num_anchors
    # the prior: every class probability starts near 0.01
    head0 = cnn.DetectionHead(8, 3)
    p = torch.sigmoid(head0(f1)["cls_logits"])
    assert abs(p.mean().item() - 0.01) < 0.002


def test_detection_head_bad_input():
    with pytest.raises(ValueError, match="prior"):
        cnn.DetectionHead(8, 3, prior=1.0)
    with pytest.raises(ValueError, match="depth"):
        cnn.DetectionHead(8, 3, depth=-1)
    with pytest.raises(ValueError, match="feature maps"):
        cnn.DetectionHead(8, 3)(torch.randn(8, 4, 4))
