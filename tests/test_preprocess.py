"""Tests of course_lib.preprocess (PCA, whitening, ZCA) against scikit-learn, scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.decomposition import PCA as SkPCA

from course_lib.preprocess import PCA, zca_whiten_matrix


def _data(n: int = 200, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Correlated Gaussian data with distinct variances and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.linspace(
        3.0, 0.3, d, dtype=torch.float64
    )
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T + torch.arange(d, dtype=torch.float64)
    return x.to(dtype)


def _align_signs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flip the columns of ``a`` so that each has a non-negative dot product with the column of ``b``."""
    s = torch.sign((a * b).sum(0))
    return a * torch.where(s == 0, torch.ones_like(s), s)


def test_matches_sklearn_variance_components_and_transform():
    x = _data()
    n = x.shape[0]
    ours = PCA(n_components=4).fit(x)
    sk = SkPCA(n_components=4, svd_solver="full").fit(x.numpy())
    # sklearn normalizes the covariance by N - 1, we by N
    torch.testing.assert_close(
        ours.explained_variance_ * n / (n - 1), torch.from_numpy(sk.explained_variance_)
    )
    torch.testing.assert_close(ours.explained_variance_ratio_, torch.from_numpy(sk.explained_variance_ratio_))
    torch.testing.assert_close(ours.mean_, torch.from_numpy(sk.mean_))
    # same sign convention as sklearn: components agree exactly, not only up to sign
    torch.testing.assert_close(ours.components_, torch.from_numpy(sk.components_))
    z_sk = torch.from_numpy(sk.transform(x.numpy()))
    z = ours.transform(x)
    torch.testing.assert_close(_align_signs(z, z_sk), z_sk)
    torch.testing.assert_close(z, z_sk)


def test_whiten_matches_sklearn_up_to_normalization():
    x = _data(n=150, d=5, seed=1)
    n = x.shape[0]
    ours = PCA(n_components=5, whiten=True, eps=0.0).fit(x)
    sk = SkPCA(n_components=5, whiten=True, svd_solver="full").fit(x.numpy())
    z_sk = torch.from_numpy(sk.transform(x.numpy()))
    z = ours.transform(x) * ((n - 1) / n) ** 0.5  # sklearn divides by the (N-1)-variance
    torch.testing.assert_close(_align_signs(z, z_sk), z_sk)


def test_whitened_covariance_is_identity_and_eps_shrinks_it():
    x = _data(n=500, d=8, seed=2)
    z = PCA(whiten=True, eps=0.0).fit_transform(x)
    cov = z.T @ z / z.shape[0]
    assert (cov - torch.eye(8, dtype=x.dtype)).abs().max().item() < 1e-10
    torch.testing.assert_close(z.mean(0), torch.zeros(8, dtype=x.dtype), atol=1e-12, rtol=0)
    # with eps > 0 the diagonal is lambda / (lambda + eps), off-diagonal stays 0
    pca = PCA(whiten=True, eps=0.5).fit(x)
    z = pca.transform(x)
    lam = pca.explained_variance_
    torch.testing.assert_close(z.T @ z / z.shape[0], torch.diag(lam / (lam + 0.5)))


def test_components_orthonormal_sorted_and_sign_convention():
    x = _data(n=300, d=7, seed=3)
    pca = PCA().fit(x)
    c = pca.components_
    torch.testing.assert_close(c @ c.T, torch.eye(7, dtype=x.dtype))
    assert (pca.explained_variance_[:-1] >= pca.explained_variance_[1:]).all()
    largest = c.gather(1, c.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()
    assert abs(pca.explained_variance_ratio_.sum().item() - 1.0) < 1e-12
    # eigenvalues are those of the 1/N covariance
    xc = x - x.mean(0)
    ref = torch.linalg.eigvalsh(xc.T @ xc / x.shape[0]).flip(0)
    torch.testing.assert_close(pca.explained_variance_, ref)


def test_inverse_transform_round_trip_and_partial_reconstruction():
    x = _data(n=120, d=6, seed=4)
    for whiten in (False, True):
        pca = PCA(whiten=whiten, eps=1e-3).fit(x)
        torch.testing.assert_close(pca.inverse_transform(pca.transform(x)), x)
    pca = PCA(n_components=3).fit(x)
    sk = SkPCA(n_components=3, svd_solver="full").fit(x.numpy())
    rec_sk = torch.from_numpy(sk.inverse_transform(sk.transform(x.numpy())))
    torch.testing.assert_close(pca.inverse_transform(pca.transform(x)), rec_sk)
    # the squared reconstruction error is the variance of the discarded components
    full = PCA().fit(x)
    err = ((pca.inverse_transform(pca.transform(x)) - x) ** 2).sum(1).mean()
    torch.testing.assert_close(err, full.explained_variance_[3:].sum())


def test_image_shaped_input_is_flattened_and_restored():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, 1, 4, 4, generator=g, dtype=torch.float64)
    pca = PCA().fit(x)
    assert pca.components_.shape == (16, 16)
    assert pca.feature_shape_ == (1, 4, 4)
    z = pca.transform(x)
    assert z.shape == (40, 16)
    torch.testing.assert_close(z, PCA().fit(x.flatten(1)).transform(x.flatten(1)))
    rec = pca.inverse_transform(z)
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, x)


def test_fewer_samples_than_features_matches_sklearn():
    x = _data(n=5, d=9, seed=6)
    pca = PCA().fit(x)
    sk = SkPCA(svd_solver="full").fit(x.numpy())
    assert pca.components_.shape == (5, 9)
    torch.testing.assert_close(pca.explained_variance_ * 5 / 4, torch.from_numpy(sk.explained_variance_))
    k = 4  # the 5th component has zero variance and an arbitrary direction
    z_sk = torch.from_numpy(sk.transform(x.numpy()))[:, :k]
    torch.testing.assert_close(_align_signs(pca.transform(x)[:, :k], z_sk), z_sk)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_are_kept_and_float32_is_accurate(dtype):
    x = _data(n=300, d=6, seed=7, dtype=dtype)
    pca = PCA(n_components=3, whiten=True).fit(x)
    for t in (pca.mean_, pca.components_, pca.explained_variance_, pca.explained_variance_ratio_):
        assert t.dtype == dtype
    z = pca.transform(x)
    assert z.dtype == dtype and z.shape == (300, 3)
    assert pca.inverse_transform(z).dtype == dtype
    ref = PCA(n_components=3, whiten=True).fit(x.double())
    torch.testing.assert_close(
        pca.explained_variance_.double(), ref.explained_variance_, rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(z.double(), ref.transform(x.double()), rtol=1e-4, atol=1e-4)


def test_empty_batch_and_two_samples():
    x = _data(n=50, d=4, seed=8)
    pca = PCA(n_components=2).fit(x)
    assert pca.transform(x[:0]).shape == (0, 2)
    two = PCA().fit(x[:2])  # two points: one direction with all the variance
    assert two.components_.shape == (2, 4)
    d = x[1] - x[0]
    torch.testing.assert_close(two.explained_variance_[0], (d @ d) / 4)
    torch.testing.assert_close(two.components_[0].abs(), (d / d.norm()).abs())


def test_zca_matrix_against_scipy():
    x = _data(n=400, d=5, seed=9)
    eps = 1e-2
    w = zca_whiten_matrix(x, eps=eps)
    xc = x - x.mean(0)
    cov = (xc.T @ xc / x.shape[0]).numpy()
    ref = scipy.linalg.fractional_matrix_power(cov + eps * np.eye(5), -0.5).real
    torch.testing.assert_close(w, torch.from_numpy(ref))
    torch.testing.assert_close(w, w.T)
    w0 = zca_whiten_matrix(x, eps=0.0)
    z = xc @ w0
    torch.testing.assert_close(z.T @ z / x.shape[0], torch.eye(5, dtype=x.dtype))


def test_bad_inputs():
    x = _data(n=20, d=4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        PCA().fit(x[:1])
    with pytest.raises(ValueError, match="n_components"):
        PCA(n_components=0)
    with pytest.raises(ValueError, match="n_components"):
        PCA(n_components=5).fit(x)
    with pytest.raises(TypeError, match="n_components"):
        PCA(n_components=2.5)
    with pytest.raises(TypeError, match="n_components"):
        PCA(n_components=True)
    with pytest.raises(ValueError, match="eps"):
        PCA(eps=-1.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA().transform(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA().inverse_transform(x)
    with pytest.raises(TypeError, match="floating-point"):
        PCA().fit(torch.ones(5, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        PCA().fit(x.numpy())
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        PCA().fit(x[0])
    with pytest.raises(ValueError, match="NaN"):
        PCA().fit(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    pca = PCA(n_components=2).fit(x)
    with pytest.raises(ValueError, match="4 features"):
        pca.transform(torch.zeros(3, 5, dtype=x.dtype))
    with pytest.raises(TypeError, match="floating-point"):
        pca.transform(torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"z must have shape \[M, 2\]"):
        pca.inverse_transform(torch.zeros(3, 3, dtype=x.dtype))
    const = torch.zeros(10, 3, dtype=torch.float64)
    const[:, 0] = torch.arange(10.0)
    with pytest.raises(ValueError, match="zero variance"):
        PCA(whiten=True, eps=0.0).fit(const)
    with pytest.raises(ValueError, match="zero variance"):
        zca_whiten_matrix(const, eps=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_the_inputs():
    x = _data(n=100, d=5, seed=10)
    pca_cpu = PCA(n_components=3, whiten=True).fit(x)
    xd = x.to("cuda")
    pca = PCA(n_components=3, whiten=True).fit(xd)
    assert pca.components_.device == xd.device
    z = pca.transform(xd)
    assert z.device == xd.device
    torch.testing.assert_close(z.cpu(), pca_cpu.transform(x))
