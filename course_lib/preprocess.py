"""Principal component analysis, PCA whitening and ZCA whitening in PyTorch.

Introduced in chapter 01 (preprocessing); reused as a linear baseline in chapter 05 (regularization)
and chapter 09 (autoencoders).

Conventions, stated once for the whole module:

- **Covariance.** The statistics are population statistics of the training data, as in chapter 01:
  for centred data :math:`X_c` with N rows, :math:`\\Sigma = X_c^\\top X_c / N`. The eigenvalues of
  :math:`\\Sigma` are :attr:`PCA.explained_variance_`. scikit-learn divides by ``N - 1`` instead, so
  its ``explained_variance_`` is ours times ``N / (N - 1)``. With ``eps = 0`` our whitened training
  data has covariance exactly ``I`` under the ``1/N`` convention; scikit-learn's whitened data is ours
  times ``sqrt((N - 1) / N)``.
- **Signs.** An eigenvector is only defined up to its sign. Each principal component is flipped so
  that its entry of largest absolute value is positive (the first one on ties). This is the rule
  scikit-learn's ``PCA`` (``svd_flip(..., u_based_decision=False)``) uses, so components agree with
  it exactly, not only up to sign, except for numerically tied entries.
- **Precision.** The decomposition (an SVD of the centred data, which is more accurate than an
  eigendecomposition of :math:`\\Sigma`) runs in float64, except on Apple MPS, which has no float64;
  the fitted attributes are then cast back to the dtype of the data.
"""

from __future__ import annotations

import torch

__all__ = ["PCA", "zca_whiten_matrix"]


def _as_2d(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a floating-point ``Tensor[N, ...]`` and flatten it to ``Tensor[N, D]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (float32 or float64), got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape [N, D] or [N, ...] (one row per sample), got {tuple(x.shape)}"
        )
    return x.flatten(1)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.device.type == "mps" else torch.float64


class PCA:
    """Principal component analysis with optional PCA whitening.

    ``fit`` centres the training data, decomposes its covariance :math:`\\Sigma = U \\Lambda U^\\top`
    and keeps the ``K`` eigenvectors with the largest eigenvalues, sorted by decreasing variance.
    ``transform`` computes the PCA coordinates :math:`z = (x - \\mu) U_K` and, with ``whiten=True``,
    divides each of them by :math:`\\sqrt{\\lambda_k + \\epsilon}` so that every coordinate has (nearly)
    unit variance on the training data. See the module docstring for the ``1/N`` normalization and the
    sign convention.

    Introduced in chapter 01.

    Args:
        n_components: number of components ``K`` to keep; ``None`` keeps ``min(N, D)``.
        whiten: divide each coordinate by :math:`\\sqrt{\\lambda_k + \\epsilon}`.
        eps: the :math:`\\epsilon` of whitening (>= 0). It stops directions with tiny variance, often
            pure noise, from being blown up. ``eps = 0`` is scikit-learn's whitening (up to the
            ``N`` vs ``N - 1`` factor).

    Attributes (after ``fit``):
        mean_: ``Tensor[D]``, the training mean.
        components_: ``Tensor[K, D]``, the principal directions as rows (orthonormal).
        explained_variance_: ``Tensor[K]``, the variance of the data along each component (eigenvalues).
        explained_variance_ratio_: ``Tensor[K]``, the fraction of the total variance per component.
        feature_shape_: the shape of one sample, e.g. ``(1, 8, 8)``; ``inverse_transform`` restores it.

    Example::

        pca = PCA(n_components=16).fit(x_train)          # x_train: Tensor[N, 1, 8, 8]
        z = pca.transform(x_test)                        # Tensor[M, 16]
        x_rec = pca.inverse_transform(z)                 # Tensor[M, 1, 8, 8]
    """

    def __init__(self, n_components: int | None = None, whiten: bool = False, eps: float = 1e-5) -> None:
        if n_components is not None and (isinstance(n_components, bool) or not isinstance(n_components, int)):
            raise TypeError(f"n_components must be an int or None, got {n_components!r}")
        if n_components is not None and n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.n_components = n_components
        self.whiten = bool(whiten)
        self.eps = float(eps)
        self.mean_: torch.Tensor | None = None
        self.components_: torch.Tensor | None = None
        self.explained_variance_: torch.Tensor | None = None
        self.explained_variance_ratio_: torch.Tensor | None = None
        self.feature_shape_: tuple[int, ...] | None = None

    def fit(self, x: torch.Tensor) -> PCA:
        """Fit the mean and the principal components on training data.

        Args:
            x: ``Tensor[N, D]`` or ``Tensor[N, ...]`` (flattened to ``[N, D]``), floating point, N >= 2.
        Returns:
            ``self``, fitted.
        """
        x2 = _as_2d(x)
        n, d = x2.shape
        if n < 2:
            raise ValueError(f"x needs at least 2 samples (rows) to fit PCA, got shape {tuple(x.shape)}")
        if not torch.isfinite(x2).all():
            raise ValueError("x contains NaN or Inf")
        k_max = min(n, d)
        k = k_max if self.n_components is None else self.n_components
        if k > k_max:
            raise ValueError(
                f"n_components must be <= min(N, D) = min({n}, {d}) = {k_max}, got {self.n_components}"
            )
        xw = x2.to(_work_dtype(x2))
        mean = xw.mean(dim=0)
        # SVD of the centred data: X_c = U S V^T, so Sigma = X_c^T X_c / N = V diag(S^2 / N) V^T.
        _, s, vt = torch.linalg.svd(xw - mean, full_matrices=False)  # s sorted in decreasing order
        variance = s**2 / n  # Tensor[min(N, D)], the eigenvalues of Sigma
        comps = vt[:k]
        # sign convention: the largest-|.| entry of each component is positive
        idx = comps.abs().argmax(dim=1, keepdim=True)
        signs = torch.sign(comps.gather(1, idx))
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
        total = variance.sum()
        ratio = variance[:k] / total if total > 0 else torch.zeros_like(variance[:k])
        if self.whiten and bool((variance[:k] + self.eps <= 0).any()):
            raise ValueError(
                "whitening divides by sqrt(explained_variance_ + eps), and a kept component has zero "
                f"variance: use eps > 0 or fewer components (n_components={k}, eps={self.eps})"
            )
        self.mean_ = mean.to(x2.dtype)
        self.components_ = comps.to(x2.dtype)
        self.explained_variance_ = variance[:k].to(x2.dtype)
        self.explained_variance_ratio_ = ratio.to(x2.dtype)
        self.feature_shape_ = tuple(x.shape[1:])
        return self

    def _fitted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean_ is None or self.components_ is None or self.explained_variance_ is None:
            raise RuntimeError("this PCA is not fitted yet: call fit(x_train) first")
        return self.mean_, self.components_, self.explained_variance_

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        """``Tensor[K]``: the divisors of whitening, ``sqrt(lambda_k + eps)`` (ones without whitening)."""
        _, _, var = self._fitted()
        var = var.to(like)
        return (var + self.eps).sqrt() if self.whiten else torch.ones_like(var)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Project data on the principal components (and whiten if asked).

        Args:
            x: ``Tensor[M, D]`` or ``Tensor[M, ...]`` with ``D`` features, as in ``fit``.
        Returns:
            ``Tensor[M, K]``, the coordinates :math:`(x - \\mu) U_K`, divided by
            :math:`\\sqrt{\\lambda_k + \\epsilon}` when ``whiten=True``.
        """
        mean, comps, _ = self._fitted()
        x2 = _as_2d(x)
        if x2.shape[1] != comps.shape[1]:
            raise ValueError(
                f"x must have {comps.shape[1]} features (as the data PCA was fitted on), "
                f"got shape {tuple(x.shape)}"
            )
        z = (x2 - mean.to(x2)) @ comps.to(x2).T
        return z / self._scale(z)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Map PCA coordinates back to the input space (exact when all components are kept).

        Args:
            z: ``Tensor[M, K]``, coordinates as returned by :meth:`transform`.
        Returns:
            ``Tensor[M, *feature_shape_]``: :math:`z U_K^\\top + \\mu` (after undoing whitening), the
            best rank-``K`` reconstruction in the squared-error sense.
        """
        mean, comps, _ = self._fitted()
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"z must have a floating-point dtype, got {z.dtype}")
        if z.ndim != 2 or z.shape[1] != comps.shape[0]:
            raise ValueError(
                f"z must have shape [M, {comps.shape[0]}] (M, n_components), got {tuple(z.shape)}"
            )
        x = (z * self._scale(z)) @ comps.to(z) + mean.to(z)
        return x.reshape(z.shape[0], *self.feature_shape_)

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        """``fit(x)`` then ``transform(x)``; returns ``Tensor[N, K]``."""
        return self.fit(x).transform(x)

    def __repr__(self) -> str:
        state = "fitted" if self.mean_ is not None else "not fitted"
        return f"PCA(n_components={self.n_components}, whiten={self.whiten}, eps={self.eps}, {state})"


def zca_whiten_matrix(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The ZCA ("zero-phase") whitening matrix of training data.

    :math:`W = U (\\Lambda + \\epsilon)^{-1/2} U^\\top`, with :math:`\\Sigma = U \\Lambda U^\\top` the ``1/N``
    covariance of ``x``. Whiten with ``(x - x_train.mean(0)) @ W``: like PCA whitening this makes the
    covariance (nearly) the identity, but it rotates back to the original axes, so whitened images
    still look like images (edges are enhanced). W is symmetric. When ``N < D`` only the ``N``
    directions spanned by the data are kept; the others are mapped to zero.

    Introduced in chapter 01.

    Args:
        x: ``Tensor[N, D]`` or ``Tensor[N, ...]`` (flattened), floating point, N >= 2.
        eps: the regularizer added to each eigenvalue (>= 0; 0 needs full-rank data).
    Returns:
        ``Tensor[D, D]`` in the dtype and on the device of ``x``.
    """
    pca = PCA(whiten=True, eps=eps).fit(x)
    comps, var = pca.components_, pca.explained_variance_
    return comps.T @ ((var + pca.eps).rsqrt()[:, None] * comps)
