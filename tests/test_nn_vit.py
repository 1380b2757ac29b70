"""course_lib.nn.vit: patch embedding, the ViT (against torchvision's), rollout, DeiT's losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from course_lib.nn import transformer, vit


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_patchify_round_trip_and_equal_to_the_strided_convolution():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 8)
    p = vit.patchify(x, 4)
    assert p.shape == (2, 6, 48)
    assert torch.equal(vit.unpatchify(p, 4, (12, 8), 3), x)  # a permutation of the pixels: exact
    assert torch.equal(p[0, 1], x[0, :, 0:4, 4:8].reshape(-1))  # raster order, channel-first inside
    emb = vit.PatchEmbed(3, 5, 4)
    linear = p @ emb.proj.weight.reshape(5, -1).T + emb.proj.bias
    torch.testing.assert_close(emb(x), linear)
    assert emb.grid(12, 8) == (3, 2)


def test_patch_embed_rejects_bad_input():
    emb = vit.PatchEmbed(3, 5, 4)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        emb(torch.zeros(1, 3, 10, 8))
    with pytest.raises(ValueError, match="3 channels"):
        emb(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="Tensor\\[B, C, H, W\\]"):
        emb(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        vit.patchify(torch.zeros(1, 3, 8, 8), 0)


def test_vit_equals_torchvision_with_the_same_weights():
    torch.manual_seed(0)
    tv = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=64, num_classes=5).eval()
    for p in tv.parameters():  # torchvision zero-initializes some of them: make every weight count
        torch.nn.init.normal_(p, std=0.2)
    ours = vit.ViT(32, 8, 3, 5, dim=16, depth=2, num_heads=2).eval()
    assert _count(ours) == _count(tv)
    assert vit.copy_torchvision_weights(ours, tv) is ours
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), tv(x))
    with pytest.raises(ValueError, match="shapes differ"):
        vit.copy_torchvision_weights(vit.ViT(16, 8, 3, 5, dim=16, depth=2, num_heads=2), tv)
    with pytest.raises(ValueError, match="class-token"):
        vit.copy_torchvision_weights(vit.ViT(32, 8, 3, 5, dim=16, depth=2, num_heads=2, pool="mean"), tv)


def test_vit_b_16_has_torchvisions_parameter_count():
    ours, tv = vit.vit_b_16(), torchvision.models.vit_b_16(weights=None)
    assert _count(ours) == _count(tv) == 86_567_656
    assert _count(vit.vit_b_16(10)) == _count(torchvision.models.vit_b_16(weights=None, num_classes=10))
    assert isinstance(ours.blocks[0], transformer.TransformerBlock)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_without_positions_logits_are_invariant_to_patch_permutations(pool):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    shuffled = vit.unpatchify(vit.patchify(x, 4)[:, perm], 4, (16, 16), 3)
    assert not torch.equal(shuffled, x)
    model = vit.ViT(16, 4, 3, 4, dim=16, depth=2, num_heads=2, pool=pool, pos="none").eval()
    torch.testing.assert_close(model(shuffled), model(x))
    for pos in ("learned", "sincos"):
        torch.manual_seed(0)
        positioned = vit.ViT(16, 4, 3, 4, dim=16, depth=2, num_heads=2, pool=pool, pos=pos).eval()
        if pos == "learned":
            torch.nn.init.normal_(positioned.pos_embed)
        assert (positioned(shuffled) - positioned(x)).abs().max() > 1e-3


def test_sinusoidal_positions_are_the_2d_encoding_and_fixed():
    model = vit.ViT(16, 4, 3, 4, dim=16, depth=1, num_heads=2, pos="sincos")
    torch.testing.assert_close(model.pos_embed[0], transformer.sinusoidal_positions_2d(4, 4, 16))
    assert "pos_embed" not in dict(model.named_parameters())


def test_mean_pooling_has_no_class_token_and_distillation_token_has_two_heads():
    x = torch.randn(2, 3, 16, 16)
    mean = vit.ViT(16, 4, 3, 4, dim=16, depth=1, num_heads=2, pool="mean")
    assert mean.cls_token is None and mean.tokens(x).shape == (2, 16, 16)
    deit = vit.ViT(16, 4, 3, 4, dim=16, depth=1, num_heads=2, distill_token=True).eval()
    assert deit.tokens(x).shape == (2, 18, 16) and deit.pos_embed.shape == (1, 18, 16)
    cls, dist = deit.forward_heads(x)
    assert cls.shape == dist.shape == (2, 4)
    torch.testing.assert_close(deit(x), (cls + dist) / 2)
    plain = vit.ViT(16, 4, 3, 4, dim=16, depth=1, num_heads=2)
    assert _count(deit) - _count(plain) == 16 + 16 + (16 * 4 + 4)  # token, its position, its head
    with pytest.raises(ValueError, match="distill_token needs pool='cls'"):
        vit.ViT(16, 4, pool="mean", distill_token=True)
    with pytest.raises(ValueError, match="pool"):
        vit.ViT(16, 4, pool="max")
    with pytest.raises(ValueError, match="pos"):
        vit.ViT(16, 4, pos="rope")
    with pytest.raises(ValueError, match="16 patches"):
        deit(torch.randn(1, 3, 32, 32))


def test_attention_maps_and_rollout():
    torch.manual_seed(0)
    model = vit.ViT(16, 4, 3, 4, dim=16, depth=3, num_heads=2).eval()
    x = torch.randn(2, 3, 16, 16)
    maps = model.attention_maps(x)
    assert len(maps) == 3 and maps[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 2, 17))
    # the weights are the ones the forward pass uses: rerun block by block
    t = model.tokens(x)
    for blk, w in zip(model.blocks, maps, strict=True):
        t, w_ref = blk(t, return_weights=True)
        torch.testing.assert_close(w, w_ref)
    roll = vit.attention_rollout(maps)
    assert roll.shape == (2, 17, 17)
    torch.testing.assert_close(roll.sum(-1), torch.ones(2, 17))
    eye = torch.eye(17)
    a = [m.mean(1) for m in maps]
    expected = ((a[2] + eye) / 2) @ ((a[1] + eye) / 2) @ ((a[0] + eye) / 2)
    torch.testing.assert_close(roll, expected)
    torch.testing.assert_close(vit.attention_rollout(maps[:1], residual=False), a[0])
    torch.testing.assert_close(vit.attention_rollout(torch.stack(maps)), roll)
    with pytest.raises(ValueError, match="at least one"):
        vit.attention_rollout([])
    with pytest.raises(ValueError, match="weights\\[1\\]"):
        vit.attention_rollout([maps[0], maps[1][:, :, :5, :5]])


def test_distillation_losses_match_their_formulas():
    cls = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    dist = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    teacher = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 4.0]])
    y = torch.tensor([0, 1])
    hard = vit.distillation_loss(cls, dist, y, teacher, "hard")
    expected_hard = 0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(dist, torch.tensor([1, 2]))
    torch.testing.assert_close(hard, expected_hard)
    tau, lam = 2.0, 0.3
    soft = vit.distillation_loss(cls, dist, y, teacher, "soft", tau=tau, lam=lam)
    pt, ps = (teacher / tau).softmax(1), (dist / tau).softmax(1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    torch.testing.assert_close(soft, (1 - lam) * F.cross_entropy(cls, y) + lam * tau**2 * kl)
    torch.testing.assert_close(vit.distillation_loss(cls, None, y, teacher, "none"), F.cross_entropy(cls, y))
    # label smoothing acts on the true labels only, never on the teacher's targets
    eps = 0.1
    torch.testing.assert_close(
        vit.distillation_loss(cls, dist, y, teacher, "hard", label_smoothing=eps),
        0.5 * F.cross_entropy(cls, y, label_smoothing=eps)
        + 0.5 * F.cross_entropy(dist, torch.tensor([1, 2])),
    )
    torch.testing.assert_close(
        vit.distillation_loss(cls, dist, y, teacher, "soft", tau=tau, lam=lam, label_smoothing=eps),
        (1 - lam) * F.cross_entropy(cls, y, label_smoothing=eps) + lam * tau**2 * kl,
    )
    # no gradient reaches the teacher
    t = teacher.clone().requires_grad_()
    vit.distillation_loss(cls, dist.requires_grad_(), y, t, "soft").backward()
    assert t.grad is None and dist.grad is not None
    with pytest.raises(ValueError, match="kind"):
        vit.distillation_loss(cls, dist, y, teacher, "medium")
    with pytest.raises(ValueError, match="shape"):
        vit.distillation_loss(cls, dist[:, :2], y, teacher, "hard")


def test_vit_trains_in_float64_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = vit.ViT(8, 4, 1, 3, dim=8, depth=1, num_heads=2, distill_token=True).double()
    cls, dist = model.forward_heads(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    assert cls.dtype == torch.float64
    (cls.sum() + dist.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
