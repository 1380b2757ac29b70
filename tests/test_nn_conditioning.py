"""course_lib.nn.conditioning: time embeddings, conditioned residual blocks, the conditional U-Net and
GLIDE's zero-initialized input channels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib import nn as cnn


def test_timestep_embedding_is_the_formula():
    t = torch.tensor([0, 1, 7, 999])
    emb = cnn.timestep_embedding(t, 6)
    expected = torch.zeros(4, 6)
    for i, ti in enumerate(t.tolist()):
        for k in range(3):
            w = 10_000 ** (-k / 3)
            expected[i, k] = math.cos(ti * w)
            expected[i, 3 + k] = math.sin(ti * w)
    torch.testing.assert_close(emb, expected)
    odd = cnn.timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, :6], emb) and torch.equal(odd[:, 6], torch.zeros(4))
    assert cnn.timestep_embedding(t.double(), 4).dtype == torch.float64


def test_timestep_embedding_separates_steps_and_changes_smoothly():
    emb = cnn.timestep_embedding(torch.arange(1, 201), 32)
    d = torch.cdist(emb, emb)
    assert float(d[~torch.eye(200, dtype=torch.bool)].min()) > 0.05  # no two steps share features
    assert float(d.diagonal(1).max()) < float(d[0, 100])  # neighbours closer than distant steps


def test_res_block_starts_as_its_skip_path_and_uses_the_embedding():
    torch.manual_seed(0)
    same, wider = cnn.ResBlock(8, 8, 16), cnn.ResBlock(8, 12, 16)
    x, e = torch.randn(2, 8, 5, 5), torch.randn(2, 16)
    torch.testing.assert_close(same(x, e), x)  # zero-initialized last conv
    torch.testing.assert_close(wider(x, e), wider.skip(x))
    nn.init.normal_(same.conv2.weight)
    assert not torch.allclose(same(x, e), same(x, torch.randn(2, 16)))


def test_spatial_cross_attention_maps_each_pixel_over_the_tokens():
    torch.manual_seed(1)
    block = cnn.SpatialCrossAttention(8, 5, num_heads=2)
    x, c = torch.randn(3, 8, 4, 4), torch.randn(3, 6, 5)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[0, 4:] = True
    y, w = block(x, c, key_padding_mask=pad, return_weights=True)
    assert y.shape == x.shape and w.shape == (3, 2, 16, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 16))
    assert torch.equal(w[0, :, :, 4:], torch.zeros(2, 16, 2))
    torch.testing.assert_close(block(x, c, key_padding_mask=pad), y)
    # by hand: the residual plus the attention of the normalized pixels
    tokens = block.norm(x).flatten(2).transpose(1, 2)
    ref = x + block.attn(tokens, c, key_padding_mask=pad).transpose(1, 2).reshape(3, 8, 4, 4)
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("widths", [(16,), (16, 32), (8, 16, 16)])
def test_conditional_unet_shapes_and_zero_output_at_init(widths):
    torch.manual_seed(2)
    m = cnn.ConditionalUNet(1, widths, num_classes=10)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 5, 50, 100]), torch.tensor([0, 3, 9, 10])
    out = m(x, t, y)
    assert out.shape == (4, 1, 8, 8) and torch.equal(out, torch.zeros_like(out))
    assert m.null_class == 10


def test_conditional_unet_depends_on_time_label_and_prompt():
    torch.manual_seed(3)
    m = cnn.ConditionalUNet(3, (16, 32), num_classes=4, context_dim=12, vocab_size=7, num_heads=2)
    nn.init.normal_(m.out.weight, std=0.1)
    for mod in m.modules():
        if isinstance(mod, cnn.ResBlock):
            nn.init.normal_(mod.conv2.weight, std=0.1)
    x = torch.randn(2, 3, 16, 16)
    t, y, prompt = torch.tensor([10, 10]), torch.tensor([1, 1]), torch.tensor([[1, 5, 2, 6], [1, 5, 2, 6]])
    base, w = m(x, t, y, prompt, return_weights=True)
    assert w.shape == (2, 2, 64, 4)  # 8×8 bottleneck pixels over 4 tokens
    assert not torch.allclose(base, m(x, torch.tensor([90, 90]), y, prompt))
    assert not torch.allclose(base, m(x, t, torch.tensor([2, 2]), prompt))
    assert not torch.allclose(base, m(x, t, y, torch.tensor([[3, 6, 4, 5], [3, 6, 4, 5]])))
    # each example only sees its own prompt: changing example 1's prompt leaves example 0 alone
    other = m(x, t, y, torch.tensor([[1, 5, 2, 6], [3, 6, 4, 5]]))
    torch.testing.assert_close(other[0], base[0])
    assert not torch.allclose(other[1], base[1])


def test_conditional_unet_gradients_reach_every_parameter():
    torch.manual_seed(4)
    m = cnn.ConditionalUNet(1, (8, 16), num_classes=3, context_dim=4)
    x = torch.randn(2, 1, 8, 8)
    c = torch.randn(2, 2, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for step in range(3):  # zero-initialized layers pass gradients on once they have moved
        opt.zero_grad()
        out = m(x, torch.tensor([3, 4]), torch.tensor([0, 3]), c)
        (out - x).square().mean().backward()
        if step == 0:
            assert m.out.weight.grad.abs().sum() > 0  # the zero-initialized output conv learns at once
        opt.step()
    for name, p in m.named_parameters():
        if name.startswith("label."):
            continue  # only the rows of the labels used get a gradient
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_added_input_channels_leave_the_output_unchanged():
    torch.manual_seed(5)
    m = cnn.ConditionalUNet(1, (8, 16), num_classes=10)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.normal_(mod.weight, std=0.2)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.tensor([1, 2, 10])
    before = m(x, t, y)
    old = m.inp
    m.inp = cnn.add_input_channels(old, 2)
    assert m.inp.in_channels == 3 and torch.equal(m.inp.weight[:, :1], old.weight)
    assert torch.equal(m.inp.weight[:, 1:], torch.zeros_like(m.inp.weight[:, 1:]))
    after = m(torch.cat([x, torch.randn(3, 2, 8, 8)], 1), t, y)
    torch.testing.assert_close(after, before)
    (after.square().sum()).backward()
    assert m.inp.weight.grad[:, 1:].abs().sum() > 0  # and fine-tuning can move them


def test_dtype_and_device_follow_the_module():
    m = cnn.ConditionalUNet(1, (8, 16), num_classes=2).double()
    out = m(torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.tensor([3]), torch.tensor([1]))
    assert out.dtype == torch.float64
    if torch.cuda.is_available():
        m = m.float().to("cuda")
        assert m(
            torch.randn(1, 1, 4, 4, device="cuda"),
            torch.tensor([3], device="cuda"),
            torch.tensor([1], device="cuda"),
        ).is_cuda
    conv = cnn.add_input_channels(nn.Conv2d(2, 3, 3).double(), 1)
    assert conv.weight.dtype == torch.float64


def test_bad_input_raises():
    m = cnn.ConditionalUNet(1, (8, 16), num_classes=10)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="pass y"):
        m(x, t)
    with pytest.raises(ValueError, match="y must lie in 0..10"):
        m(x, t, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="divisible by 2"):
        m(torch.randn(2, 1, 7, 7), t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="t must be"):
        m(x, torch.tensor([1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no cross-attention"):
        m(x, t, torch.tensor([0, 1]), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="no class conditioning"):
        cnn.ConditionalUNet(1, (8,))(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pass context"):
        cnn.ConditionalUNet(1, (8,), context_dim=4)(x, t)
    with pytest.raises(ValueError, match="vocab_size needs context_dim"):
        cnn.ConditionalUNet(1, (8,), vocab_size=5)
    with pytest.raises(ValueError, match="dim must be"):
        cnn.timestep_embedding(t, 1)
    with pytest.raises(ValueError, match="extra"):
        cnn.add_input_channels(nn.Conv2d(1, 2, 3), 0)
    with pytest.raises(ValueError, match="groups=1"):
        cnn.add_input_channels(nn.Conv2d(2, 2, 3, groups=2), 1)


def test_names_are_exported():
    from course_lib.nn import conditioning

    for name in conditioning.__all__:
        assert getattr(cnn, name) is getattr(conditioning, name)
