"""Tests of course_lib.losses against torch, torchvision, scipy, scikit-learn and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
import torchvision.ops as tvops
from sklearn.metrics import mean_squared_log_error

from course_lib import losses


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_boxes(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = gen(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 10
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 5 + 0.1
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------------------- msle
def test_msle_matches_sklearn():
    g = gen(0)
    pred, target = torch.rand(50, generator=g) * 100, torch.rand(50, generator=g) * 100
    ref = mean_squared_log_error(target.numpy(), pred.numpy())
    assert losses.msle(pred, target).item() == pytest.approx(ref, rel=1e-5)
    assert losses.msle(pred, target, reduction="sum").item() == pytest.approx(50 * ref, rel=1e-5)
    assert losses.msle(pred, target, reduction="none").shape == (50,)


def test_msle_hand_value_and_zeros():
    # log(1 + e - 1) - log(1 + 0) = 1
    assert losses.msle(torch.tensor([math.e - 1]), torch.tensor([0.0])).item() == pytest.approx(1.0)
    assert losses.msle(torch.zeros(3), torch.zeros(3)).item() == 0.0  # finite at 0 thanks to log1p


def test_msle_relative_errors():
    small = losses.msle(torch.tensor([110.0]), torch.tensor([100.0]))
    large = losses.msle(torch.tensor([1100.0]), torch.tensor([1000.0]))
    assert abs(small.item() - large.item()) / large.item() < 0.1  # ~ the same relative error


def test_msle_bad_inputs():
    with pytest.raises(ValueError, match="pred"):
        losses.msle(torch.tensor([-1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="target"):
        losses.msle(torch.tensor([1.0]), torch.tensor([-0.5]))
    with pytest.raises(ValueError, match="shape"):
        losses.msle(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        losses.msle(torch.ones(3), torch.ones(3), reduction="avg")
    with pytest.raises(TypeError, match="pred"):
        losses.msle(torch.ones(3, dtype=torch.int64), torch.ones(3))


# ---------------------------------------------------------------------------- entropy / KL
def random_probs(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=gen(seed), dtype=dtype) * 2, dim=-1)


def test_entropy_matches_scipy():
    p = random_probs((7, 5), 0)
    torch.testing.assert_close(losses.entropy(p), torch.from_numpy(scipy.stats.entropy(p.numpy(), axis=-1)))
    torch.testing.assert_close(
        losses.entropy(p, base=2), torch.from_numpy(scipy.stats.entropy(p.numpy(), base=2, axis=-1))
    )


def test_entropy_hand_values_and_zero_handling():
    assert losses.entropy(torch.full((4,), 0.25), base=2).item() == pytest.approx(2.0)  # uniform on 4: 2 bits
    assert losses.entropy(torch.tensor([1.0, 0.0, 0.0])).item() == 0.0  # 0 log 0 = 0, no NaN
    # along another dim
    p = random_probs((3, 6), 1)
    torch.testing.assert_close(losses.entropy(p.T, dim=0), losses.entropy(p))


def test_kl_matches_scipy_and_torch():
    p, q = random_probs((8, 6), 2), random_probs((8, 6), 3)
    kl = losses.kl_divergence(p, q)
    torch.testing.assert_close(kl, torch.from_numpy(scipy.stats.entropy(p.numpy(), q.numpy(), axis=-1)))
    torch.testing.assert_close(kl, F.kl_div(q.log(), p, reduction="none").sum(-1))
    torch.testing.assert_close(kl.mean(), F.kl_div(q.log(), p, reduction="batchmean"))


def test_kl_properties():
    p, q = random_probs((100, 4), 4), random_probs((100, 4), 5)
    assert (losses.kl_divergence(p, q) >= 0).all()
    torch.testing.assert_close(losses.kl_divergence(p, p), torch.zeros(100, dtype=torch.float64))
    assert not torch.allclose(losses.kl_divergence(p, q), losses.kl_divergence(q, p))  # not symmetric
    # cross-entropy = entropy + KL
    ce = -(p * q.log()).sum(-1)
    torch.testing.assert_close(ce, losses.entropy(p) + losses.kl_divergence(p, q))


def test_kl_zero_probabilities():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert losses.kl_divergence(p, q).item() == pytest.approx(math.log(2))  # the p = 0 term counts 0
    assert math.isinf(losses.kl_divergence(q, p).item())  # q > 0 where p = 0: infinite


def test_ce_worked_example_nats_and_bits():
    # seed example S = (0.775, 0.126, 0.039, 0.070), one-hot target on class 0
    t = torch.tensor([1.0, 0.0, 0.0, 0.0])
    s = torch.tensor([0.775, 0.126, 0.039, 0.070])
    ce_nats = -(t * s.log()).sum()
    assert ce_nats.item() == pytest.approx(
        0.2549, abs=5e-5
    )  # float32 log: compare to 4 decimals, not by rounding
    assert (ce_nats / math.log(2)).item() == pytest.approx(0.3677, abs=5e-5)
    # for a one-hot target H(t) = 0, so cross-entropy = KL(t || s / sum(s)) up to the normalization
    assert losses.entropy(t).item() == 0.0


def test_probability_checks():
    with pytest.raises(ValueError, match="p must sum to 1"):
        losses.entropy(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="q must hold probabilities"):
        losses.kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="same shape"):
        losses.kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="base"):
        losses.entropy(torch.tensor([0.5, 0.5]), base=1)
    with pytest.raises(TypeError, match="p"):
        losses.entropy(torch.tensor([1, 0]))


# ---------------------------------------------------------------------------- gram / style / feature
def test_gram_matrix_matches_einsum_and_is_permutation_invariant():
    f = torch.randn(2, 5, 4, 6, generator=gen(6))
    g = losses.gram_matrix(f, normalize=False)
    torch.testing.assert_close(g, torch.einsum("bchw,bdhw->bcd", f, f))
    torch.testing.assert_close(losses.gram_matrix(f), g / (5 * 4 * 6))
    perm = torch.randperm(24, generator=gen(7))
    shuffled = f.flatten(2)[:, :, perm].reshape_as(f)
    torch.testing.assert_close(losses.gram_matrix(shuffled), losses.gram_matrix(f))
    assert torch.equal(g, g.transpose(1, 2))  # exactly symmetric: (G + G^T) / 2 is exact in IEEE arithmetic
    assert torch.equal(losses.gram_matrix(f), losses.gram_matrix(f).transpose(1, 2))
    assert (torch.linalg.eigvalsh(g) > -1e-4).all()  # positive semi-definite


def test_gram_matrix_exactly_symmetric_on_large_inputs():
    # large channel and spatial sizes take the blocked BLAS paths where F F^T can come out asymmetric
    f = torch.randn(3, 64, 17, 19, generator=gen(12)) * 0.1
    g = losses.gram_matrix(f)
    assert torch.equal(g, g.mT)
    ref = torch.einsum("bchw,bdhw->bcd", f.double(), f.double()) / (64 * 17 * 19)
    torch.testing.assert_close(g, ref.float(), rtol=1e-5, atol=1e-7)


def test_style_loss_matches_gatys_formula():
    fx = [torch.randn(3, 4, 5, 5, generator=gen(8)), torch.randn(3, 6, 2, 3, generator=gen(9))]
    fy = [torch.randn(3, 4, 5, 5, generator=gen(10)), torch.randn(3, 6, 2, 3, generator=gen(11))]
    w = [0.3, 0.7]
    expected = 0.0
    for wl, a, b in zip(w, fx, fy, strict=True):
        n, m = a.shape[1], a.shape[2] * a.shape[3]
        ga, gb = losses.gram_matrix(a, normalize=False), losses.gram_matrix(b, normalize=False)
        expected += wl * (((ga - gb) ** 2).sum((1, 2)) / (4 * n**2 * m**2)).mean()
    torch.testing.assert_close(losses.style_loss(fx, fy, w), expected)
    # default weights are 1/L; identical inputs give 0; a style batch of one is broadcast
    torch.testing.assert_close(losses.style_loss(fx, fy), losses.style_loss(fx, fy, [0.5, 0.5]))
    assert losses.style_loss(fx, fx).item() == 0.0
    one = [t[:1] for t in fy]
    torch.testing.assert_close(
        losses.style_loss(fx, one), losses.style_loss(fx, [t[:1].expand_as(t) for t in fy])
    )


def test_feature_loss_is_mse_per_layer():
    a, b = torch.randn(2, 3, 4, 4, generator=gen(12)), torch.randn(2, 3, 4, 4, generator=gen(13))
    c, d = torch.randn(2, 8, 2, 2, generator=gen(14)), torch.randn(2, 8, 2, 2, generator=gen(15))
    torch.testing.assert_close(losses.feature_loss(a, b), F.mse_loss(a, b))
    manual = ((a - b) ** 2).sum((1, 2, 3)) / (3 * 4 * 4)
    torch.testing.assert_close(losses.feature_loss(a, b), manual.mean())
    torch.testing.assert_close(losses.feature_loss([a, c], [b, d]), F.mse_loss(a, b) + F.mse_loss(c, d))


def test_gradcheck_gram_style_float64():
    f = torch.randn(2, 3, 3, 4, generator=gen(16), dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 3, 4, generator=gen(17), dtype=torch.float64)
    assert torch.autograd.gradcheck(losses.gram_matrix, (f,))
    assert torch.autograd.gradcheck(lambda x: losses.style_loss([x], [t]), (f,))


def test_feature_style_bad_inputs():
    a = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="features"):
        losses.gram_matrix(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="layer 0"):
        losses.style_loss([a], [torch.randn(2, 4, 4, 4)])
    with pytest.raises(ValueError, match="layers"):
        losses.feature_loss([a, a], [a])
    with pytest.raises(ValueError, match="weights"):
        losses.style_loss([a], [a], weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="feats_x"):
        losses.feature_loss([], [])
    with pytest.raises(ValueError, match="layer 0"):
        losses.feature_loss(a, a[:1])  # no broadcasting for the perceptual loss


# ---------------------------------------------------------------------------- identity
def test_identity_loss():
    a = torch.randn(5, 16, generator=gen(18))
    torch.testing.assert_close(losses.identity_loss(a, 3 * a), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(losses.identity_loss(a, -a), torch.tensor(2.0))
    b = torch.randn(5, 16, generator=gen(19))
    expected = (1 - F.cosine_similarity(a, b, dim=1)).mean()
    torch.testing.assert_close(losses.identity_loss(a, b), expected)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert losses.identity_loss(e1, e2).item() == pytest.approx(1.0)  # orthogonal
    # feature maps are flattened
    f = torch.randn(2, 3, 4, 4, generator=gen(20))
    torch.testing.assert_close(
        losses.identity_loss(f, f + 0.1), losses.identity_loss(f.flatten(1), f.flatten(1) + 0.1)
    )
    with pytest.raises(ValueError, match="same shape"):
        losses.identity_loss(a, b[:, :3])


# ---------------------------------------------------------------------------- box losses
def test_giou_loss_matches_torchvision():
    p, t = random_boxes(64, 21), random_boxes(64, 22)
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(
            losses.giou_loss(p, t, reduction=red), tvops.generalized_box_iou_loss(p, t, reduction=red)
        )
    torch.testing.assert_close(losses.iou_loss(p, t, reduction="none"), 1 - tvops.box_iou(p, t).diagonal())


def test_box_losses_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3)
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    torch.testing.assert_close(losses.iou_loss(a, b, reduction="none"), torch.tensor([0.0, 2 / 3, 1.0]))
    torch.testing.assert_close(losses.giou_loss(a, b, reduction="none"), torch.tensor([0.0, 2 / 3, 4 / 3]))


def test_giou_loss_gradient_where_iou_is_flat():
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    pred = torch.tensor([[3.0, 0.0, 4.0, 1.0]], requires_grad=True)
    losses.iou_loss(pred, target).backward()
    assert pred.grad.abs().sum() == 0  # disjoint: IoU loss is flat
    pred.grad = None
    losses.giou_loss(pred, target).backward()
    # translating the box to the left (x1 and x2 together) lowers the GIoU loss
    assert pred.grad[0, 0] + pred.grad[0, 2] > 0


def test_box_losses_empty_and_bad():
    e = torch.zeros(0, 4)
    assert losses.giou_loss(e, e).item() == 0.0
    assert losses.iou_loss(e, e, reduction="none").shape == (0,)
    with pytest.raises(ValueError, match="paired"):
        losses.giou_loss(random_boxes(3, 0), random_boxes(4, 1))
    with pytest.raises(ValueError, match="boxes1"):
        losses.iou_loss(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), random_boxes(1, 0))
    with pytest.raises(ValueError, match="reduction"):
        losses.giou_loss(random_boxes(2, 0), random_boxes(2, 1), reduction="max")


# ---------------------------------------------------------------------------- NT-Xent
def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Direct transcription of SimCLR's loss with Python loops (slow but obviously right)."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = [F.cosine_similarity(z[i], z[k], dim=0) / tau for k in range(n2)]
        den = sum(torch.exp(sims[k]) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sims[j]) / den)
    return total / n2


def test_nt_xent_matches_loop_and_cross_entropy():
    z1, z2 = torch.randn(6, 8, generator=gen(23)), torch.randn(6, 8, generator=gen(24))
    for tau in (0.1, 0.5, 1.0):
        loss = losses.nt_xent(z1, z2, temperature=tau)
        torch.testing.assert_close(loss, nt_xent_reference(z1, z2, tau))
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
        labels = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
        torch.testing.assert_close(loss, F.cross_entropy(logits, labels))


def test_nt_xent_properties():
    z1 = torch.randn(16, 32, generator=gen(25))
    noise = torch.randn(16, 32, generator=gen(26))
    aligned = losses.nt_xent(z1, z1 + 0.05 * noise)
    random = losses.nt_xent(z1, noise)
    assert aligned < random - 1.0
    # the scale of embeddings does not matter (cosine similarity)
    torch.testing.assert_close(losses.nt_xent(z1, noise), losses.nt_xent(10 * z1, 0.1 * noise))
    # a batch of one pair has no negatives: the loss is exactly 0
    assert losses.nt_xent(z1[:1], noise[:1]).item() == pytest.approx(0.0, abs=1e-6)
    # random embeddings give about log(2N - 1)
    big1, big2 = torch.randn(256, 64, generator=gen(27)), torch.randn(256, 64, generator=gen(28))
    assert losses.nt_xent(big1, big2, temperature=1.0).item() == pytest.approx(math.log(511), abs=0.05)


def test_nt_xent_gradcheck():
    z1 = torch.randn(3, 4, generator=gen(29), dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=gen(30), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: losses.nt_xent(a, b, temperature=0.3), (z1, z2))


def test_nt_xent_bad_inputs():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="z1 and z2"):
        losses.nt_xent(z, z[:3])
    with pytest.raises(ValueError, match="z1 and z2"):
        losses.nt_xent(z[0], z[0])
    with pytest.raises(ValueError, match="temperature"):
        losses.nt_xent(z, z, temperature=0.0)
    with pytest.raises(TypeError, match="z2"):
        losses.nt_xent(z, np.ones((4, 8)))


# ---------------------------------------------------------------------------- dice_loss (chapter 07)
def test_dice_loss_binary_hand_value_and_f1():
    from sklearn.metrics import f1_score

    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    torch.testing.assert_close(losses.dice_loss(logits, target), expected)
    # hard masks, eps 0: one minus the F1 score of the pixels
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 16, 16, generator=g) > 0.6
    true = torch.rand(4, 16, 16, generator=g) > 0.7
    hard = losses.dice_loss(torch.where(pred, 50.0, -50.0).double(), true.double(), eps=0.0)
    assert hard.item() == pytest.approx(1 - f1_score(true.flatten(), pred.flatten()))


def test_dice_loss_multiclass_is_the_mean_of_one_vs_rest_losses():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    loss = losses.dice_loss(logits, target)
    p = logits.softmax(1)
    per_class = []
    for c in range(3):
        pc, gc = p[:, c], (target == c).double()
        per_class.append(1 - (2 * (pc * gc).sum() + 1) / (pc.sum() + gc.sum() + 1))
    torch.testing.assert_close(loss, torch.stack(per_class).mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).double() * 100
    assert losses.dice_loss(perfect, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_dice_loss_empty_target_and_bad_input():
    assert losses.dice_loss(torch.full((3, 3), -50.0), torch.zeros(3, 3)).item() == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="shape of logits"):
        losses.dice_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="multi-class"):
        losses.dice_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        losses.dice_loss(torch.zeros(2, 3, 4), torch.full((2, 4), 3))
    with pytest.raises(ValueError, match="eps"):
        losses.dice_loss(torch.zeros(2), torch.zeros(2), eps=-1.0)
    with pytest.raises(TypeError, match="logits"):
        losses.dice_loss(torch.zeros(2, dtype=torch.int64), torch.zeros(2))


# ---------------------------------------------------------------------------- generative (chapters 09, 10)
def test_gaussian_kl_equals_torch_distributions():
    g = gen(0)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(losses.gaussian_kl(mu, logvar), ref)
    torch.testing.assert_close(losses.gaussian_kl(mu, logvar, reduction="sum"), ref.sum())
    torch.testing.assert_close(losses.gaussian_kl(mu, logvar, reduction="mean"), ref.mean())
    # the prior itself: zero KL
    assert losses.gaussian_kl(torch.zeros(4), torch.zeros(4)).abs().max() == 0


def test_gaussian_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        losses.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="reduction"):
        losses.gaussian_kl(torch.zeros(2), torch.zeros(2), reduction="max")
    with pytest.raises(TypeError):
        losses.gaussian_kl(torch.zeros(2, dtype=torch.long), torch.zeros(2))


@pytest.mark.parametrize("kind", losses.GAN_LOSSES)
def test_gan_losses_match_their_definitions(kind):
    g = gen(1)
    r = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)  # PatchGAN-like maps
    f = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits
    d_ref = {
        "minimax": bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)),
        "nonsaturating": bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)),
        "hinge": torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
        "wasserstein": f.mean() - r.mean(),
        "least_squares": 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
    }[kind]
    g_ref = {
        "minimax": torch.log(1 - torch.sigmoid(f)).mean(),
        "nonsaturating": bce(f, torch.ones_like(f)),
        "hinge": -f.mean(),
        "wasserstein": -f.mean(),
        "least_squares": 0.5 * ((f - 1) ** 2).mean(),
    }[kind]
    torch.testing.assert_close(losses.discriminator_loss(r, f, kind), d_ref)
    torch.testing.assert_close(losses.generator_loss(f, kind), g_ref)


def test_minimax_generator_loss_saturates_where_nonsaturating_does_not():
    # a discriminator that confidently rejects the samples: D(G(z)) = sigmoid(-10)
    f = torch.full((4,), -10.0, requires_grad=True)
    (g_mm,) = torch.autograd.grad(losses.generator_loss(f, "minimax"), f)
    (g_ns,) = torch.autograd.grad(losses.generator_loss(f, "nonsaturating"), f)
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l) and d/dl -log sigmoid(l) = sigmoid(l) - 1, per element / 4
    torch.testing.assert_close(g_mm, torch.full((4,), -torch.sigmoid(torch.tensor(-10.0)).item() / 4))
    torch.testing.assert_close(g_ns, torch.full((4,), (torch.sigmoid(torch.tensor(-10.0)).item() - 1) / 4))
    assert g_mm.abs().max() < 2e-5 < 0.2 < g_ns.abs().min()
    # stable where the naive formula overflows
    assert torch.isfinite(losses.generator_loss(torch.tensor([200.0, -200.0]), "minimax"))
    assert torch.isfinite(losses.discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_gan_losses_reject_bad_input():
    with pytest.raises(ValueError, match="kind"):
        losses.generator_loss(torch.zeros(2), "vanilla")
    with pytest.raises(ValueError, match="empty"):
        losses.discriminator_loss(torch.zeros(0), torch.zeros(2))
    with pytest.raises(TypeError):
        losses.generator_loss(torch.zeros(2, dtype=torch.long))


def test_critic_gradient_norms_of_a_linear_critic_equal_its_weight_norm():
    w = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)  # ‖w‖ = 5 everywhere
    real = torch.randn(7, 3, generator=gen(2), dtype=torch.float64)
    fake = torch.randn(7, 3, generator=gen(3), dtype=torch.float64)
    norms = losses.critic_gradient_norms(lambda x: x @ w, real, fake, generator=gen(4))
    torch.testing.assert_close(norms, torch.full((7,), 5.0, dtype=torch.float64))
    gp = losses.gradient_penalty(lambda x: x @ w, real, fake, generator=gen(4))
    torch.testing.assert_close(gp, torch.tensor(16.0, dtype=torch.float64))  # (5 - 1)^2


def test_gradient_penalty_matches_a_hand_written_interpolation_and_trains_the_critic():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    real = torch.randn(5, 3, 2, 2, generator=gen(5))
    fake = torch.randn(5, 3, 2, 2, generator=gen(6))
    eps = torch.rand(5, generator=gen(7)).view(5, 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    ref = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp = losses.gradient_penalty(critic, real, fake, generator=gen(7))
    torch.testing.assert_close(gp, ref)
    gp.backward()  # double backpropagation reaches the critic's weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters() if p.ndim > 1)


def test_critic_gradient_norms_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        losses.critic_gradient_norms(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="one score"):
        losses.critic_gradient_norms(lambda x: x.sum(), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="target"):
        losses.gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(3, 2), target=-1)


# --------------------------------------------------------------------------------------------
# clip_loss and directional_loss (chapter 18)
# --------------------------------------------------------------------------------------------
def _clip_loss_loops(img: torch.Tensor, txt: torch.Tensor, scale: float) -> torch.Tensor:
    """CLIP's loss written with explicit sums over the batch (reference)."""
    n = img.shape[0]
    i = img / img.norm(dim=1, keepdim=True)
    t = txt / txt.norm(dim=1, keepdim=True)
    total = torch.zeros((), dtype=img.dtype)
    for k in range(n):
        row = torch.stack([scale * (i[k] * t[j]).sum() for j in range(n)])
        col = torch.stack([scale * (i[j] * t[k]).sum() for j in range(n)])
        total = total + (torch.logsumexp(row, 0) - row[k]) + (torch.logsumexp(col, 0) - col[k])
    return total / (2 * n)


def test_clip_loss_matches_an_explicit_double_sum():
    img, txt = torch.randn(6, 5, generator=gen(0)), torch.randn(6, 5, generator=gen(1))
    torch.testing.assert_close(losses.clip_loss(img, txt, 3.0), _clip_loss_loops(img, txt, 3.0))
    # the scale of unnormalised inputs does not matter: the embeddings are normalised
    torch.testing.assert_close(losses.clip_loss(4 * img, 0.5 * txt, 3.0), losses.clip_loss(img, txt, 3.0))


def test_clip_loss_is_ln_n_for_identical_embeddings_and_symmetric():
    same = torch.ones(8, 4)
    torch.testing.assert_close(losses.clip_loss(same, same, 14.0), torch.tensor(math.log(8)))
    img, txt = torch.randn(7, 3, generator=gen(2)), torch.randn(7, 3, generator=gen(3))
    torch.testing.assert_close(losses.clip_loss(img, txt, 5.0), losses.clip_loss(txt, img, 5.0))


def test_clip_loss_gradient_reaches_the_learnable_temperature():
    img, txt = torch.randn(5, 4, generator=gen(4)), torch.randn(5, 4, generator=gen(5))
    txt = img + 0.1 * txt  # matching pairs are similar: a larger scale lowers the loss
    t = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = losses.clip_loss(img, txt, t.exp().clamp(max=100))
    loss.backward()
    assert t.grad is not None and t.grad < 0, f"expected a negative gradient on log-scale, got {t.grad}"
    # a perfectly aligned batch with a huge scale has a loss near zero
    assert losses.clip_loss(torch.eye(4), torch.eye(4), 100.0) < 1e-6


def test_clip_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        losses.clip_loss(torch.zeros(3, 2), torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="logit_scale"):
        losses.clip_loss(torch.ones(3, 2), torch.ones(3, 2), 0.0)
    with pytest.raises(ValueError, match="logit_scale"):
        losses.clip_loss(torch.ones(3, 2), torch.ones(3, 2), torch.ones(2))
    with pytest.raises(TypeError, match="floating"):
        losses.clip_loss(torch.ones(3, 2, dtype=torch.long), torch.ones(3, 2), 1.0)


def test_directional_loss_is_zero_one_two_for_parallel_orthogonal_opposite():
    src_t, tgt_t = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([2.0, 0.0, 0.0])  # text direction +x
    src_i = torch.tensor([[0.5, 0.5, 0.5]]).repeat(3, 1)
    tgt_i = src_i + torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    for k, expected in enumerate([0.0, 1.0, 2.0]):
        got = losses.directional_loss(src_i[k : k + 1], tgt_i[k : k + 1], src_t, tgt_t)
        torch.testing.assert_close(got, torch.tensor(expected))
    torch.testing.assert_close(losses.directional_loss(src_i, tgt_i, src_t, tgt_t), torch.tensor(1.0))


def test_directional_loss_gradient_and_bad_input():
    src = torch.randn(4, 6, generator=gen(6))
    tgt = (src + torch.randn(4, 6, generator=gen(7))).requires_grad_(True)
    t0, t1 = torch.randn(6, generator=gen(8)), torch.randn(6, generator=gen(9))
    losses.directional_loss(src, tgt, t0, t1).backward()
    assert tgt.grad is not None and tgt.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="share D"):
        losses.directional_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        losses.directional_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(3), torch.ones(3))
