"""Tests of course_lib.selfsup (chapter 17)."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from torch import nn

from course_lib import losses, optim, selfsup


def _images(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- views
def test_simclr_view_shape_range_and_determinism():
    x = _images()
    a = selfsup.simclr_view(x, generator=torch.Generator().manual_seed(1))
    b = selfsup.simclr_view(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    v1, v2 = selfsup.simclr_views(x, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(v1, v2)  # two different draws


def test_simclr_view_identity_when_everything_off():
    x = _images()
    out = selfsup.simclr_view(x, scale=(1.0, 1.0), flip=False, color=0.0, gray_p=0.0)
    # a full-image crop with ratio drawn in [3/4, 4/3] is shrunk to fit; with ratio 1 it is the identity.
    # here the ratio is random, so compare only the centre statistic loosely: mean colour kept
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)), atol=0.1, rtol=0)
    # without the crop (and nothing else on) the view is the image itself
    assert torch.equal(selfsup.simclr_view(x, crop=False, flip=False, color=0.0, gray_p=0.0), x)
    # crop off, flip on: every view is the image or its mirror
    g = torch.Generator().manual_seed(0)
    out = selfsup.simclr_view(x, crop=False, color=0.0, gray_p=0.0, generator=g)
    for o, xi in zip(out, x, strict=True):
        assert torch.equal(o, xi) or torch.equal(o, xi.flip(-1))


def test_simclr_view_grey_and_colour():
    x = _images()
    g = selfsup.simclr_view(x, scale=(1.0, 1.0), flip=False, color=0.0, gray_p=1.0)
    torch.testing.assert_close(g[:, 0], g[:, 1])
    torch.testing.assert_close(g[:, 1], g[:, 2])
    c = torch.full((4, 3, 8, 8), 0.5)
    out = selfsup.simclr_view(
        c, scale=(1.0, 1.0), flip=False, color=0.5, gray_p=0.0, generator=torch.Generator().manual_seed(0)
    )
    gains = out.mean((2, 3)) / 0.5
    assert ((gains >= 0.5 - 1e-6) & (gains <= 1.5 + 1e-6)).all()
    assert gains.std() > 0.05  # channels get different gains: hue changes


def test_simclr_view_bad_input():
    with pytest.raises(ValueError, match="Tensor\\[N, C, H, W\\]"):
        selfsup.simclr_view(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        selfsup.simclr_view(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="color"):
        selfsup.simclr_view(_images(), color=1.5)
    with pytest.raises(ValueError, match="gray_p"):
        selfsup.simclr_view(_images(), gray_p=-0.1)


# ---------------------------------------------------------------- rotation
def test_rotation_batch_matches_rot90_and_labels():
    x = _images(3, 8)
    r, y = selfsup.rotation_batch(x)
    assert r.shape == (12, 3, 8, 8) and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert torch.equal(r[3:6], torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(r[6], x[0].flip(-1).flip(-2))  # 180 degrees
    assert torch.equal(torch.rot90(r[9:12], 1, dims=(-2, -1)), x)  # four quarter turns = identity
    with pytest.raises(ValueError, match="square"):
        selfsup.rotation_batch(torch.rand(1, 3, 8, 6))


# ---------------------------------------------------------------- k-means
def _blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    y = torch.arange(4).repeat_interleave(50)
    return centres[y] + 0.5 * torch.randn(200, 2, generator=g), y


def test_kmeans_recovers_blobs_like_sklearn():
    x, y = _blobs()
    c, a = selfsup.kmeans(x, 4, iters=20, generator=torch.Generator().manual_seed(0))
    assert c.shape == (4, 2) and a.shape == (200,) and a.dtype == torch.int64
    assert adjusted_rand_score(y.numpy(), a.numpy()) == pytest.approx(1.0)
    sk = KMeans(4, n_init=10, random_state=0).fit(x.numpy())
    inertia = ((x - c[a]) ** 2).sum().item()
    assert inertia == pytest.approx(sk.inertia_, rel=1e-4)


def test_kmeans_reseeds_empty_clusters():
    # a centroid far from all data is empty after the first assignment; it must be re-seeded next
    # to the largest cluster and split it, so that all three clusters end up used
    x, _ = _blobs(3)
    x = x[:100]  # two blobs, 50 points each
    init = torch.tensor([[0.0, 0.0], [6.0, 0.0], [100.0, 100.0]])
    _, a = selfsup.kmeans(x, 3, iters=10, init=init, generator=torch.Generator().manual_seed(0))
    assert len(torch.unique(a)) == 3, "an empty cluster was not re-seeded"
    with pytest.raises(ValueError, match="init"):
        selfsup.kmeans(x, 3, init=torch.zeros(2, 2))


def test_kmeans_bad_input():
    with pytest.raises(ValueError, match="at least k"):
        selfsup.kmeans(torch.rand(2, 3), 3)
    with pytest.raises(ValueError, match="k must"):
        selfsup.kmeans(torch.rand(5, 3), 0)
    with pytest.raises(ValueError, match="Tensor\\[N, D\\]"):
        selfsup.kmeans(torch.rand(5), 2)


def test_cluster_balanced_weights():
    a = torch.tensor([0, 0, 0, 1, 2, 2])
    w = selfsup.cluster_balanced_weights(a, 4)  # cluster 3 is empty
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    for j in range(3):
        torch.testing.assert_close(w[a == j].sum(), torch.tensor(1 / 3))
    with pytest.raises(ValueError, match="ids in"):
        selfsup.cluster_balanced_weights(torch.tensor([0, 5]), 3)


# ---------------------------------------------------------------- BYOL
def test_byol_loss_values_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], requires_grad=True)
    loss = selfsup.byol_loss(p, z)
    torch.testing.assert_close(loss, torch.tensor((0.0 + 2.0 + 4.0) / 3))  # parallel, orthogonal, opposite
    loss.backward()
    assert z.grad is None  # the target receives no gradient
    assert p.grad is not None and p.grad.abs().sum() > 0
    # equals the squared distance of the normalized vectors
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    ref = ((F.normalize(a, dim=1) - F.normalize(b, dim=1)) ** 2).sum(1).mean()
    torch.testing.assert_close(selfsup.byol_loss(a, b), ref)
    with pytest.raises(ValueError, match="same shape"):
        selfsup.byol_loss(torch.rand(2, 3), torch.rand(2, 4))


def test_byol_decay_schedule_and_ema_update():
    assert selfsup.byol_decay(0, 100) == pytest.approx(0.996)
    assert selfsup.byol_decay(100, 100) == pytest.approx(1.0)
    assert selfsup.byol_decay(50, 100) == pytest.approx(0.998)
    with pytest.raises(ValueError):
        selfsup.byol_decay(101, 100)
    # the target update xi <- tau xi + (1 - tau) theta holds exactly after one step
    torch.manual_seed(0)
    online = nn.Linear(3, 2)
    target = optim.WeightEMA(online, decay=0.9)
    xi = target.module.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    target.decay = selfsup.byol_decay(0, 10, base=0.9)
    target.update(online)
    torch.testing.assert_close(target.module.weight, 0.9 * xi + 0.1 * online.weight)


# ---------------------------------------------------------------- probes
def test_embed_restores_mode_and_batches():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    x = torch.randn(10, 4)
    out = selfsup.embed(net, x, batch_size=3)
    assert out.shape == (10, 3) and not out.requires_grad and net.training
    net.eval()
    torch.testing.assert_close(out, net(x).detach())


def test_linear_probe_matches_sklearn_on_separable_data():
    x, y = _blobs(1)
    acc = selfsup.linear_probe(x[::2], y[::2], x[1::2], y[1::2], weight_decay=1e-3)
    ref = (
        LogisticRegression(max_iter=1000)
        .fit(x[::2].numpy(), y[::2].numpy())
        .score(x[1::2].numpy(), y[1::2].numpy())
    )
    assert acc == pytest.approx(ref, abs=0.02) and acc > 0.95
    # random labels: a probe on held-out data is near chance
    g = torch.Generator().manual_seed(0)
    yr = torch.randint(0, 4, (200,), generator=g)
    acc_r = selfsup.linear_probe(x[::2], yr[::2], x[1::2], yr[1::2])
    assert acc_r < 0.45
    with pytest.raises(ValueError, match="labels"):
        selfsup.linear_probe(x, y[:5], x, y)


def test_knn_accuracy_is_cosine_knn():
    x, y = _blobs(2)
    x = x + torch.tensor([10.0, 10.0])  # keep all points in one quadrant: cosine still separates by angle?
    acc = selfsup.knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=1)
    xn = F.normalize(x, dim=1)
    ref_pred = y[::2][torch.cdist(xn[1::2], xn[::2]).argmin(1)]
    assert acc == pytest.approx((ref_pred == y[1::2]).float().mean().item())
    # scaling a row does not change its cosine neighbours
    assert selfsup.knn_accuracy(3 * x[::2], y[::2], x[1::2], y[1::2], k=1) == pytest.approx(acc)


def test_embedding_spread_collapse_and_uniform():
    assert selfsup.embedding_spread(torch.ones(100, 8)) == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    assert selfsup.embedding_spread(z) == pytest.approx(1 / math.sqrt(16), rel=0.02)
    with pytest.raises(ValueError, match="at least 2"):
        selfsup.embedding_spread(torch.ones(1, 4))


def test_nt_xent_identical_views_low_temperature_goes_to_zero():
    # the digest's unit test, here because chapter 17 is where the loss is trained
    z = torch.eye(4)
    assert losses.nt_xent(z, z, temperature=0.01).item() < 1e-6
    assert losses.nt_xent(z, z, temperature=1.0).item() > 0.5
