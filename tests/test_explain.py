"""Tests of course_lib.explain (chapter 06): class activation maps and the pointing game."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from course_lib import explain


# --------------------------------------------------------------------------------------------
# class_activation_maps
# --------------------------------------------------------------------------------------------
def test_cam_hand_computed():
    # two feature maps of 2x2; class 0 weighs them (1, 0), class 1 (2, -1)
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])
    w = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    assert_close(explain.class_activation_maps(f, w, torch.tensor([0])), f[:, 0])
    expected = torch.tensor([[[2.0, 3.0], [5.0, 8.0]]])  # 2 * f0 - f1
    assert_close(explain.class_activation_maps(f, w, torch.tensor([1])), expected)
    # normalized: (M - min) / (max - min)
    assert_close(
        explain.class_activation_maps(f, w, torch.tensor([1]), normalize=True),
        torch.tensor([[[0.0, 1 / 6], [0.5, 1.0]]]),
    )


def test_cam_mean_plus_bias_equals_logit_of_a_gap_linear_head(generator):
    features = torch.randn(6, 16, 5, 7, generator=generator, dtype=torch.float64)
    head = nn.Linear(16, 4).double()
    logits = head(features.mean(dim=(2, 3)))  # global average pooling, then the linear layer
    for c in range(4):
        cams = explain.class_activation_maps(features, head.weight, torch.full((6,), c))
        assert_close(cams.mean(dim=(1, 2)) + head.bias[c], logits[:, c])
    # per-image classes pick per-image rows
    classes = torch.tensor([0, 1, 2, 3, 3, 0])
    cams = explain.class_activation_maps(features, head.weight, classes)
    assert_close(cams.mean(dim=(1, 2)) + head.bias[classes], logits[torch.arange(6), classes])


def test_cam_resize_matches_interpolate(generator):
    features = torch.randn(3, 8, 4, 4, generator=generator)
    w = torch.randn(5, 8, generator=generator)
    classes = torch.tensor([4, 0, 2])
    small = explain.class_activation_maps(features, w, classes)
    big = explain.class_activation_maps(features, w, classes, size=16)
    assert big.shape == (3, 16, 16)
    ref = F.interpolate(small[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    assert_close(big, ref)
    rect = explain.class_activation_maps(features, w, classes, size=(8, 12), normalize=True)
    assert rect.shape == (3, 8, 12)
    assert_close(rect.amin(dim=(1, 2)), torch.zeros(3))
    assert_close(rect.amax(dim=(1, 2)), torch.ones(3))


def test_cam_constant_map_normalizes_to_zeros_and_keeps_dtype():
    f = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    w = torch.ones(1, 3, dtype=torch.float64)
    cams = explain.class_activation_maps(f, w, torch.zeros(2, dtype=torch.int64), normalize=True)
    assert cams.dtype == torch.float64
    assert torch.equal(cams, torch.zeros(2, 4, 4, dtype=torch.float64))


def test_cam_empty_and_single():
    w = torch.randn(3, 4)
    empty = explain.class_activation_maps(torch.zeros(0, 4, 2, 2), w, torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0, 2, 2)
    assert explain.class_activation_maps(
        torch.zeros(0, 4, 2, 2), w, torch.zeros(0, dtype=torch.int64), size=6, normalize=True
    ).shape == (0, 6, 6)
    one = explain.class_activation_maps(torch.randn(1, 4, 1, 1), w, torch.tensor([2]), size=3)
    assert one.shape == (1, 3, 3) and torch.allclose(one, one[0, 0, 0])  # a 1x1 map upsamples to a constant


def test_cam_gradient_flows_to_features():
    f = torch.randn(2, 3, 4, 4, requires_grad=True)
    w = torch.randn(2, 3)
    explain.class_activation_maps(f, w, torch.tensor([0, 1]), size=8).sum().backward()
    # d(sum of the bilinear 2x upsampling)/d(pixel) is 4 in the interior; the weights scale it
    assert_close(f.grad[0, :, 1, 1], 4 * w[0])
    assert_close(f.grad[1, :, 2, 2], 4 * w[1])


def test_cam_bad_inputs():
    f, w, c = torch.randn(2, 3, 4, 4), torch.randn(5, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="features"):
        explain.class_activation_maps(f[0], w, c)
    with pytest.raises(TypeError, match="features"):
        explain.class_activation_maps(f.long(), w, c)
    with pytest.raises(ValueError, match="weight"):
        explain.class_activation_maps(f, torch.randn(5, 4), c)
    with pytest.raises(ValueError, match="classes"):
        explain.class_activation_maps(f, w, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="classes"):
        explain.class_activation_maps(f, w, torch.tensor([0]))
    with pytest.raises(TypeError, match="classes"):
        explain.class_activation_maps(f, w, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="size"):
        explain.class_activation_maps(f, w, c, size=0)
    with pytest.raises(ValueError, match="size"):
        explain.class_activation_maps(f, w, c, size=(4, 4, 4))


# --------------------------------------------------------------------------------------------
# map_argmax and pointing_game
# --------------------------------------------------------------------------------------------
def test_map_argmax_matches_unravel(generator):
    maps = torch.randn(7, 5, 9, generator=generator)
    rc = explain.map_argmax(maps)
    for n in range(7):
        r, c = divmod(int(maps[n].argmax()), 9)
        assert rc[n].tolist() == [r, c]
        assert maps[n, r, c] == maps[n].max()
    tie = torch.zeros(1, 3, 3)
    assert explain.map_argmax(tie).tolist() == [[0, 0]]  # first in raster order
    assert explain.map_argmax(torch.zeros(0, 3, 3)).shape == (0, 2)


def test_pointing_game_hand_computed():
    maps = torch.zeros(3, 6, 6)
    maps[0, 1, 1] = 1.0  # inside the mask
    maps[1, 5, 5] = 1.0  # far outside: distance from (5, 5) to the mask corner (3, 3) is sqrt(8)
    maps[2, 3, 5] = 1.0  # two pixels right of the mask's last column
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[:, 1:4, 1:4] = True
    assert explain.pointing_game(maps, masks).tolist() == [True, False, False]
    assert explain.pointing_game(maps, masks, tolerance=2).tolist() == [True, False, True]
    assert explain.pointing_game(maps, masks, tolerance=2.9).tolist() == [True, True, True]
    assert explain.pointing_game(maps, masks.long()).tolist() == [True, False, False]  # 0/1 integers


def test_pointing_game_empty_mask_is_a_miss_and_empty_batch():
    maps = torch.rand(2, 4, 4)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    assert explain.pointing_game(maps, masks, tolerance=3).tolist() == [False, False]
    assert explain.pointing_game(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0,)


def test_pointing_game_hit_rate_of_a_perfect_and_a_random_map(generator):
    masks = torch.zeros(50, 16, 16, dtype=torch.bool)
    corner = torch.randint(0, 12, (50, 2), generator=generator)
    for n, (r, c) in enumerate(corner.tolist()):
        masks[n, r : r + 4, c : c + 4] = True
    perfect = masks.float() + 0.01 * torch.rand(50, 16, 16, generator=generator)
    assert explain.pointing_game(perfect, masks).all()
    random = torch.rand(50, 16, 16, generator=generator)
    rate = explain.pointing_game(random, masks).float().mean().item()
    assert rate < 0.25  # the masks cover 16 / 256 of each image


def test_pointing_game_bad_inputs():
    maps, masks = torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="masks"):
        explain.pointing_game(maps, masks[:, :3])
    with pytest.raises(TypeError, match="masks"):
        explain.pointing_game(maps, masks.float())
    with pytest.raises(ValueError, match="masks"):
        explain.pointing_game(maps, masks.long() + 2)
    with pytest.raises(ValueError, match="tolerance"):
        explain.pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(ValueError, match="maps"):
        explain.map_argmax(torch.rand(4, 4))
    with pytest.raises(TypeError, match="maps"):
        explain.map_argmax(torch.zeros(2, 4, 4, dtype=torch.bool))


# --------------------------------------------------------------------------------------------
# grad_cam
# --------------------------------------------------------------------------------------------
def _gap_linear_net(generator, classes=4):
    """Conv-BN-ReLU features, then global average pooling and one linear layer (a CAM network)."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
    )  # fmt: skip
    head = nn.Linear(16, classes)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, then eval mode
        model(torch.randn(32, 3, 12, 10, generator=generator))
    return model.eval(), features, head


def test_grad_cam_of_a_gap_linear_net_is_cam_up_to_a_positive_scale(generator):
    model, features, head = _gap_linear_net(generator)
    x = torch.randn(5, 3, 12, 10, generator=generator)
    classes = torch.tensor([0, 1, 2, 3, 1])
    with torch.no_grad():
        f = features(x)  # [5, 16, 6, 5]
    cam = explain.class_activation_maps(f, head.weight, classes)
    hw = f.shape[2] * f.shape[3]
    signed = explain.grad_cam(model, features, x, classes, relu=False)
    # alpha_k = w_ck / (h w): the signed Grad-CAM map is M_c / (h w), in float32 tolerances
    assert_close(signed * hw, cam, rtol=1e-5, atol=1e-5 * cam.abs().max().item())
    scale = cam.abs().max().item() / hw
    assert_close(
        explain.grad_cam(model, features, x, classes), cam.clamp_min(0) / hw, rtol=1e-5, atol=1e-5 * scale
    )
    # the scale drops out after min-max normalization
    assert_close(
        explain.grad_cam(model, features, x, classes, size=(12, 10), relu=False, normalize=True),
        explain.class_activation_maps(f, head.weight, classes, size=(12, 10), normalize=True),
        rtol=1e-5,
        atol=1e-5,
    )
    # the parameters' gradients are left alone
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_matches_a_reference_with_retain_grad_on_a_torchvision_resnet(generator):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64, generator=generator)
    # reference: keep layer3's output with retain_grad, back-propagate the predicted classes' scores
    kept = {}
    handle = model.layer3.register_forward_hook(lambda m, i, o: kept.update(a=o) or o.retain_grad())
    logits = model(x)
    handle.remove()
    pred = logits.argmax(1)
    logits[torch.arange(2), pred].sum().backward()
    a, g = kept["a"], kept["a"].grad
    expected = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp_min(0).detach()
    got = explain.grad_cam(model, model.layer3, x)  # classes=None: the predicted class
    assert got.shape == (2, 4, 4)
    assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    # on the last block of a GAP + linear network it is CAM / (h w) again
    with torch.no_grad():
        f = model.layer4(
            model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
        )
    cam = explain.class_activation_maps(f, model.fc.weight, pred)
    signed = explain.grad_cam(model, model.layer4, x, pred, relu=False)
    assert_close(signed * 4, cam, rtol=1e-4, atol=1e-5 * cam.abs().max().item())


def test_grad_cam_under_no_grad_with_frozen_layers_and_one_image(generator):
    model, features, head = _gap_linear_net(generator, classes=3)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 12, 10, generator=generator)
    with torch.no_grad():
        maps = explain.grad_cam(model, features[4], x, torch.tensor([2]), size=12, normalize=True)
    assert maps.shape == (1, 12, 12) and not maps.requires_grad
    assert maps.min() >= 0 and maps.max() <= 1
    empty = explain.grad_cam(model, features, torch.zeros(0, 3, 12, 10), torch.zeros(0, dtype=torch.int64))
    assert empty.shape == (0, 6, 5)


def test_grad_cam_bad_inputs(generator):
    model, features, head = _gap_linear_net(generator)
    x = torch.randn(2, 3, 12, 10, generator=generator)
    with pytest.raises(TypeError, match="model"):
        explain.grad_cam(lambda t: t, features, x)
    with pytest.raises(ValueError, match="submodule"):
        explain.grad_cam(model, nn.Conv2d(3, 8, 3), x)
    with pytest.raises(ValueError, match="eval mode"):
        explain.grad_cam(model.train(), features, x)
    model.eval()
    with pytest.raises(TypeError, match="x"):
        explain.grad_cam(model, features, x.long())
    with pytest.raises(ValueError, match="feature maps"):
        explain.grad_cam(model, model[2], x)  # Flatten: [N, K], not [N, K, h, w]
    with pytest.raises(ValueError, match="classes"):
        explain.grad_cam(model, features, x, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="classes"):
        explain.grad_cam(model, features, x, torch.tensor([0]))
    with pytest.raises(TypeError, match="classes"):
        explain.grad_cam(model, features, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="size"):
        explain.grad_cam(model, features, x, size=0)
    shared = nn.ReLU()
    twice = nn.Sequential(
        nn.Conv2d(3, 4, 3), shared, nn.Conv2d(4, 4, 3), shared, nn.Flatten(), nn.LazyLinear(2)
    )
    twice(x)
    with pytest.raises(ValueError, match="exactly once"):
        explain.grad_cam(twice.eval(), shared, x)
    with pytest.raises(ValueError, match="logits"):
        explain.grad_cam(features, features[4], x)  # returns feature maps, not [N, C] logits
