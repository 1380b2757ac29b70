"""Nearest-neighbour search and the k-nearest-neighbour classifier.

Introduced in chapter 00 (introduction), where k-NN on raw pixels is the first classifier of the
course; chapter 17 (self-supervised learning) reuses :func:`knn_predict` as a k-NN probe on learned
embeddings. Everything works on any feature dimension and on the device of the inputs, and queries
are processed in batches so that the ``[batch, N]`` distance block bounds the memory.

Two conventions decide the answer when there is a tie:

- neighbours are ranked by distance; among training points at *exactly* the same distance the one
  with the lower training index comes first (a stable sort), so results never depend on thread
  counts or heap layouts;
- the vote is a plain majority; when several classes tie for the most votes the **smallest class
  label** wins (``argmax`` returns the first maximum). This is scikit-learn's rule for
  ``KNeighborsClassifier(weights="uniform")``.

Predictions therefore equal scikit-learn's for every query whose k-th and (k+1)-th nearest training
points are at different distances. When they are at exactly the same distance (common with
quantized pixels), *which* of them votes is a convention: scikit-learn's brute-force search keeps
whichever its internal heap retains, which depends on chunking and threads; here it is the lower index.
"""

from __future__ import annotations

import math

import torch

__all__ = ["kneighbors", "knn_predict", "pairwise_distances"]


def _check_p(p: int) -> None:
    if isinstance(p, bool) or not isinstance(p, int | float) or p not in (1, 2):
        raise ValueError(f"p must be 1 (L1, Manhattan) or 2 (L2, Euclidean), got {p!r}")


def _check_features(name: str, x: torch.Tensor, ndim: int | None = 2) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point Tensor (use .float()), got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be [N, D], got shape {tuple(x.shape)}")
    if ndim is None and x.ndim < 1:
        raise ValueError(f"{name} must be [N, ...] with one row per sample, got a scalar")


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same feature dimension D, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{names[0]} is on {a.device} but {names[1]} is on {b.device}; move one of them")


def _distances(a: torch.Tensor, b: torch.Tensor, p: int, squared: bool = False) -> torch.Tensor:
    """Unchecked distance block ``Tensor[N, M]``; ``squared`` only affects ``p = 2``."""
    if p == 1:
        # cdist evaluates sum_d |a_d - b_d| pair by pair without a [N, M, D] intermediate.
        return torch.cdist(a, b, p=1.0)
    # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b : one matrix product instead of an [N, M, D] tensor.
    # Rounding can make the result slightly negative for (near-)identical rows, hence the clamp.
    sq = torch.addmm((b * b).sum(1)[None, :], a, b.T, alpha=-2.0).add_((a * a).sum(1, keepdim=True))
    sq = sq.clamp_min_(0.0)
    return sq if squared else sq.sqrt_()


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, p: int = 2) -> torch.Tensor:
    """All L1 or L2 distances between the rows of ``a`` and the rows of ``b``.

    .. math::
        d_1(a, b) = \\sum_d |a_d - b_d|, \\qquad d_2(a, b) = \\sqrt{\\sum_d (a_d - b_d)^2}

    L2 uses the expansion :math:`\\|a\\|^2 + \\|b\\|^2 - 2 a \\cdot b` (one matrix product), clamped at
    0 before the square root; it agrees with ``torch.cdist`` and ``scipy.spatial.distance.cdist`` up
    to floating-point rounding (use float64 when near-identical rows must be told apart). L1 uses
    ``torch.cdist(p=1)``.

    Introduced in chapter 00.

    Args:
        a: ``Tensor[N, D]`` floating point.
        b: ``Tensor[M, D]`` floating point, same device as ``a``.
        p: 1 for L1 (Manhattan) or 2 for L2 (Euclidean).

    Returns:
        ``Tensor[N, M]`` with ``out[i, j] = d_p(a[i], b[j])``, in the promoted dtype of ``a`` and ``b``,
        on their device. Empty inputs give an empty ``[N, M]`` result, as ``torch.cdist`` does.
    """
    _check_p(p)
    _check_features("a", a)
    _check_features("b", b)
    _check_pair(a, b, ("a", "b"))
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _distances(a.to(dtype), b.to(dtype), p)


def _k_smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row of ``d[B, N]``, ordered by (value, column index).

    Same result as a stable sort of each row cut to ``k`` columns, in O(N) per row instead of
    O(N log N). ``topk`` picks k entries; where the (k+1)-th smallest value equals the k-th it may
    pick any of the tied entries, so those rows are redone: every entry below the k-th value is
    taken, and entries equal to it are taken from the left until there are ``k``.
    """
    n = d.shape[1]
    vals, idx = torch.topk(d, min(k + 1, n), dim=1, largest=False, sorted=True)
    kth = vals[:, k - 1 : k]  # [B, 1]
    # the set of k is ambiguous only where the (k+1)-th smallest value equals the k-th
    tied = (vals[:, k] == vals[:, k - 1]).nonzero()[:, 0] if k < n else idx.new_zeros(0)
    idx = idx[:, :k]
    if tied.numel():
        dt, kt = d[tied], kth[tied]
        below, equal = dt < kt, dt == kt
        missing = k - below.sum(dim=1, keepdim=True)  # >= 1 tied entries to take
        take = below | (equal & (equal.cumsum(dim=1) <= missing))  # exactly k per row
        idx[tied] = take.nonzero()[:, 1].view(len(tied), k)
    # order by (value, index): sort by index, then a stable sort by value
    idx = idx.sort(dim=1).values
    dist, order = torch.sort(d.gather(1, idx), dim=1, stable=True)
    return dist, idx.gather(1, order)


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


@torch.no_grad()
def kneighbors(
    train_x: torch.Tensor,
    query_x: torch.Tensor,
    k: int = 1,
    p: int = 2,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest training rows of every query, closest first.

    Inputs ``[N, ...]`` are flattened to ``[N, D]``. Training points at exactly equal distance are
    ordered by their index (lower first), so the result is deterministic.

    Introduced in chapter 00.

    Args:
        train_x: ``Tensor[N, ...]`` floating point, ``N >= 1``.
        query_x: ``Tensor[M, ...]`` floating point, same device and per-sample size as ``train_x``.
        k: number of neighbours, ``1 <= k <= N``.
        p: 1 for L1 or 2 for L2 distance.
        batch_size: queries per distance block (memory is ``O(batch_size * N)``).

    Returns:
        distances: ``Tensor[M, k]`` ascending along each row.
        indices: ``Tensor[M, k]`` int64 row indices into ``train_x``.
    """
    _check_p(p)
    _check_features("train_x", train_x, ndim=None)
    _check_features("query_x", query_x, ndim=None)
    _check_int("k", k, 1)
    _check_int("batch_size", batch_size, 1)
    if train_x.shape[0] == 0:
        raise ValueError(f"train_x is empty (shape {tuple(train_x.shape)}); k-NN needs training points")
    if k > train_x.shape[0]:
        raise ValueError(f"k must be <= the number of training points N = {train_x.shape[0]}, got {k}")
    train = train_x.reshape(train_x.shape[0], math.prod(train_x.shape[1:]))
    query = query_x.reshape(query_x.shape[0], math.prod(query_x.shape[1:]))
    _check_pair(train, query, ("train_x", "query_x"))
    _check_finite("train_x", train)
    _check_finite("query_x", query)
    dtype = torch.promote_types(train.dtype, query.dtype)
    train, query = train.to(dtype), query.to(dtype)
    dists, idxs = [], []
    for start in range(0, query.shape[0], batch_size):
        # ranking by squared L2 avoids ties created by rounding in the square root
        d, i = _k_smallest(_distances(query[start : start + batch_size], train, p, squared=True), k)
        dists.append(d)
        idxs.append(i)
    if not dists:
        return query.new_zeros(0, k), torch.zeros(0, k, dtype=torch.int64, device=query.device)
    dist, idx = torch.cat(dists), torch.cat(idxs)
    return (dist.sqrt_() if p == 2 else dist), idx


@torch.no_grad()
def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    k: int = 1,
    p: int = 2,
    num_classes: int | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """k-nearest-neighbour classification by majority vote.

    Each query gets the label held by most of its ``k`` nearest training points (L1 or L2). When
    several classes tie for the most votes, the smallest class label wins (scikit-learn's rule). The
    result equals ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k, p=p).predict`` on every
    query whose k-th and (k+1)-th neighbours are not at exactly the same distance (see the module
    docstring for that case). ``k = 1`` is the nearest-neighbour classifier.

    Introduced in chapter 00; reused in chapter 17 as a k-NN probe on embeddings.

    Args:
        train_x: ``Tensor[N, ...]`` floating point (flattened to ``[N, D]``).
        train_y: ``Tensor[N]`` integer labels in ``[0, num_classes)``.
        query_x: ``Tensor[M, ...]`` floating point, same device and per-sample size as ``train_x``.
        k: number of neighbours that vote, ``1 <= k <= N``.
        p: 1 for L1 or 2 for L2 distance.
        num_classes: number of classes (default: ``train_y.max() + 1``).
        batch_size: queries per distance block (memory is ``O(batch_size * N)``).

    Returns:
        ``Tensor[M]`` int64 predicted labels, on the device of the inputs.
    """
    if not isinstance(train_y, torch.Tensor):
        raise TypeError(f"train_y must be a Tensor, got {type(train_y).__name__}")
    if train_y.is_floating_point() or train_y.is_complex() or train_y.dtype == torch.bool:
        raise TypeError(f"train_y must hold integer class labels, got dtype {train_y.dtype}")
    if isinstance(train_x, torch.Tensor) and (train_y.ndim != 1 or train_y.shape[0] != train_x.shape[0]):
        raise ValueError(
            f"train_y must be [N] with N = train_x.shape[0] = {train_x.shape[0]}, got shape "
            f"{tuple(train_y.shape)}"
        )
    if isinstance(train_x, torch.Tensor) and train_y.device != train_x.device:
        raise ValueError(f"train_y is on {train_y.device} but train_x is on {train_x.device}")
    if train_y.numel() and int(train_y.min()) < 0:
        raise ValueError(f"train_y must be >= 0, got a label {int(train_y.min())}")
    n_max = int(train_y.max()) + 1 if train_y.numel() else 0
    if num_classes is None:
        num_classes = n_max
    else:
        _check_int("num_classes", num_classes, 1)
        if num_classes < n_max:
            raise ValueError(f"num_classes = {num_classes} but train_y holds the label {n_max - 1}")
    _, idx = kneighbors(train_x, query_x, k=k, p=p, batch_size=batch_size)
    labels = train_y.long()[idx]  # [M, k]
    votes = torch.zeros(labels.shape[0], num_classes, dtype=torch.int64, device=labels.device)
    votes.scatter_add_(1, labels, torch.ones_like(labels))
    return votes.argmax(dim=1)  # the first maximum = the smallest label among tied classes
