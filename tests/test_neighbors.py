"""Tests of course_lib.neighbors against scipy, torch.cdist, scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist as scipy_cdist
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from course_lib import data
from course_lib.neighbors import kneighbors, knn_predict, pairwise_distances


@pytest.fixture(scope="module")
def digits():
    """Digits in [0, 1] (multiples of 1/16, so float32 distances are exact) with a fixed split."""
    s = data.digits_splits(normalize=None, flatten=True)
    return (*s.tensors("train"), *s.tensors("val"))


def _sklearn_predict(xtr, ytr, xq, k, p):
    clf = KNeighborsClassifier(n_neighbors=k, p=p, algorithm="brute")
    return clf.fit(xtr.numpy(), ytr.numpy()).predict(xq.numpy())


def _reference_predict(xtr, ytr, xq, k, p):
    """Independent numpy/scipy reference with the documented rules (stable order, smallest label)."""
    d = scipy_cdist(xq.double().numpy(), xtr.double().numpy(), "cityblock" if p == 1 else "sqeuclidean")
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    votes = np.stack([np.bincount(row, minlength=int(ytr.max()) + 1) for row in ytr.numpy()[idx]])
    return votes.argmax(1)


def _boundary_ties(xtr, xq, k, p):
    """Queries whose k-th and (k+1)-th neighbours are at exactly the same distance."""
    d = np.sort(
        scipy_cdist(xq.double().numpy(), xtr.double().numpy(), "cityblock" if p == 1 else "sqeuclidean")
    )
    return d[:, k - 1] == d[:, k]


# ----------------------------------------------------------------------------------------------
# pairwise_distances
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
def test_pairwise_distances_matches_scipy_and_cdist(p):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 13, generator=g, dtype=torch.float64)
    b = torch.randn(23, 13, generator=g, dtype=torch.float64)
    out = pairwise_distances(a, b, p=p)
    assert out.shape == (37, 23) and out.dtype == torch.float64
    ref = scipy_cdist(a.numpy(), b.numpy(), "cityblock" if p == 1 else "euclidean")
    torch.testing.assert_close(out, torch.from_numpy(ref), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, torch.cdist(a, b, p=float(p)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        pairwise_distances(a.float(), b.float(), p=p),
        torch.cdist(a.float(), b.float(), p=float(p)),
        rtol=1e-5,
        atol=1e-4,
    )


def test_pairwise_distances_hand_computed():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(pairwise_distances(a, b, p=2), torch.tensor([[5.0], [13.0**0.5]]))
    torch.testing.assert_close(pairwise_distances(a, b, p=1), torch.tensor([[7.0], [5.0]]))


def test_pairwise_distances_identical_rows_are_zero_not_nan():
    # far from the origin, ||a||^2 + ||b||^2 - 2 a.b cancels badly and can round below 0:
    # the clamp keeps the square root finite
    a = torch.randn(50, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 1000
    d32 = pairwise_distances(a.float(), a.float(), p=2)
    assert torch.isfinite(d32).all() and (d32 >= 0).all()
    # float32 cancellation: the textbook bound for a sum of n terms, |error| <= gamma_n * sum |terms| with
    # gamma_n = n u / (1 - n u), holds for any summation order, hence on any CPU and BLAS. Here the terms
    # of ||a||^2 + ||a||^2 - 2 a.a add up to 4 ||a||^2 and n = D + 2.
    u, n = 2.0**-24, 64 + 2
    gamma = n * u / (1 - n * u)
    bound = math.sqrt(gamma * 4 * (a.float() ** 2).sum(1).max().item())
    assert d32.diagonal().max() <= bound, (d32.diagonal().max(), bound)
    assert pairwise_distances(a, a, p=2).diagonal().max() < 1e-3  # float64: much smaller, not 0


def test_pairwise_distances_empty_and_dtype_promotion():
    assert pairwise_distances(torch.zeros(0, 3), torch.zeros(4, 3)).shape == (0, 4)
    assert pairwise_distances(torch.zeros(2, 3), torch.zeros(0, 3), p=1).shape == (2, 0)
    out = pairwise_distances(torch.zeros(2, 3), torch.ones(1, 3, dtype=torch.float64))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.full((2, 1), 3.0**0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    ("a", "b", "p", "err", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 3), 3, ValueError, "p must be"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 1.5, ValueError, "p must be"),
        (torch.zeros(2, 3), torch.zeros(2, 3), "2", ValueError, "p must be"),
        (torch.zeros(2, 3), torch.zeros(2, 4), 2, ValueError, "feature dimension"),
        (torch.zeros(2, 3, 1), torch.zeros(2, 3), 2, ValueError, "a must be"),
        (torch.zeros(2, 3), torch.zeros(3), 2, ValueError, "b must be"),
        (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3), 2, TypeError, "a must be a floating"),
        (np.zeros((2, 3)), torch.zeros(2, 3), 2, TypeError, "a must be a Tensor"),
    ],
)
def test_pairwise_distances_bad_inputs(a, b, p, err, match):
    with pytest.raises(err, match=match):
        pairwise_distances(a, b, p=p)


# ----------------------------------------------------------------------------------------------
# kneighbors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
def test_kneighbors_matches_sklearn_on_random_data(p):
    g = torch.Generator().manual_seed(2)
    xtr = torch.randn(300, 7, generator=g, dtype=torch.float64)
    xq = torch.randn(90, 7, generator=g, dtype=torch.float64)
    dist, idx = kneighbors(xtr, xq, k=6, p=p, batch_size=32)
    nn = NearestNeighbors(n_neighbors=6, p=p, algorithm="brute").fit(xtr.numpy())
    ref_d, ref_i = nn.kneighbors(xq.numpy())
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-9, atol=1e-9)
    assert (dist[:, 1:] >= dist[:, :-1]).all()


def test_kneighbors_many_ties_equal_a_stable_sort():
    # quantized data: lots of exactly equal distances; the O(N) selection must equal a stable sort
    g = torch.Generator().manual_seed(4)
    xtr = torch.randint(0, 3, (500, 4), generator=g).float()
    xq = torch.randint(0, 3, (60, 4), generator=g).float()
    for p in (1, 2):
        d = scipy_cdist(xq.numpy(), xtr.numpy(), "cityblock" if p == 1 else "euclidean")
        for k in (1, 7, 50, 500):
            dist, idx = kneighbors(xtr, xq, k=k, p=p, batch_size=25)
            ref = np.argsort(d, axis=1, kind="stable")[:, :k]
            np.testing.assert_array_equal(idx.numpy(), ref)
            np.testing.assert_allclose(dist.numpy(), np.take_along_axis(d, ref, 1), rtol=1e-6)


def test_kneighbors_equal_distances_ordered_by_index():
    xtr = torch.tensor([[2.0], [-1.0], [1.0], [-2.0]])
    dist, idx = kneighbors(xtr, torch.zeros(1, 1), k=4, p=1)
    assert idx.tolist() == [[1, 2, 0, 3]]
    assert dist.tolist() == [[1.0, 1.0, 2.0, 2.0]]


def test_kneighbors_flattens_and_handles_empty_queries():
    xtr = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    dist, idx = kneighbors(xtr, xtr[3:5], k=1)
    assert idx.tolist() == [[3], [4]]
    assert dist.abs().max() < 1e-2  # 0 up to float32 cancellation in the expansion (sqrt of ~1e-6)
    dist, idx = kneighbors(xtr.reshape(10, 16), xtr[3:5].reshape(2, 16), k=2, p=1)
    assert idx[:, 0].tolist() == [3, 4] and dist[:, 0].tolist() == [0.0, 0.0]
    dist, idx = kneighbors(xtr, torch.zeros(0, 1, 4, 4), k=2)
    assert dist.shape == (0, 2) and idx.shape == (0, 2) and idx.dtype == torch.int64


# ----------------------------------------------------------------------------------------------
# knn_predict
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_knn_predict_matches_sklearn_on_random_data(p, k):
    g = torch.Generator().manual_seed(10 * k + p)
    xtr = torch.randn(400, 5, generator=g, dtype=torch.float64)
    ytr = torch.randint(0, 4, (400,), generator=g)
    xq = torch.randn(150, 5, generator=g, dtype=torch.float64)
    pred = knn_predict(xtr, ytr, xq, k=k, p=p, batch_size=64)
    assert pred.dtype == torch.int64 and pred.shape == (150,)
    np.testing.assert_array_equal(pred.numpy(), _sklearn_predict(xtr, ytr, xq, k, p))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_knn_predict_on_digits(digits, p, k):
    xtr, ytr, xva, yva = digits
    pred = knn_predict(xtr, ytr, xva, k=k, p=p, batch_size=100).numpy()
    # exactly the documented rules, everywhere
    np.testing.assert_array_equal(pred, _reference_predict(xtr, ytr, xva, k, p))
    # scikit-learn agrees wherever no tie straddles the k-th neighbour
    ties = _boundary_ties(xtr, xva, k, p)
    assert ties.mean() < 0.25  # L1 on 1/16-quantized pixels ties often
    sk = _sklearn_predict(xtr, ytr, xva, k, p)
    np.testing.assert_array_equal(pred[~ties], sk[~ties])
    assert (pred == yva.numpy()).mean() > 0.95


def test_knn_predict_vote_tie_goes_to_smallest_label():
    # neighbours of 0 in order: label 3 (d=1), label 1 (d=2), label 7 (d=10): k=2 is a 1-1 tie
    xtr = torch.tensor([[1.0], [2.0], [10.0]])
    ytr = torch.tensor([3, 1, 7])
    q = torch.zeros(1, 1)
    assert knn_predict(xtr, ytr, q, k=1).tolist() == [3]
    assert knn_predict(xtr, ytr, q, k=2).tolist() == [1]
    assert knn_predict(xtr, ytr, q, k=3).tolist() == [1]
    assert _sklearn_predict(xtr, ytr, q, 2, 2).tolist() == [1]


def test_knn_predict_distance_tie_goes_to_lower_index():
    xtr = torch.tensor([[1.0], [-1.0]])
    assert knn_predict(xtr, torch.tensor([5, 2]), torch.zeros(1, 1), k=1).tolist() == [5]
    assert knn_predict(xtr, torch.tensor([2, 5]), torch.zeros(1, 1), k=1).tolist() == [2]


def test_knn_predict_one_point_num_classes_and_int_dtypes():
    pred = knn_predict(torch.zeros(1, 3), torch.tensor([4], dtype=torch.int32), torch.ones(5, 3), k=1)
    assert pred.tolist() == [4] * 5 and pred.dtype == torch.int64
    pred = knn_predict(
        torch.zeros(1, 3), torch.tensor([1], dtype=torch.uint8), torch.ones(2, 3), num_classes=10
    )
    assert pred.tolist() == [1, 1]
    assert knn_predict(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(0, 3)).shape == (0,)


def test_inputs_on_different_devices_are_rejected():
    with pytest.raises(ValueError, match="is on"):
        pairwise_distances(torch.zeros(2, 3), torch.zeros(2, 3, device="meta"))
    with pytest.raises(ValueError, match="is on"):
        kneighbors(torch.zeros(2, 3), torch.zeros(2, 3, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    g = torch.Generator().manual_seed(5)
    xtr, xq = torch.randint(0, 4, (700, 16), generator=g).float(), torch.rand(300, 16, generator=g)
    ytr = torch.randint(0, 5, (700,), generator=g)
    for p in (1, 2):
        cpu = knn_predict(xtr, ytr, xq.round(), k=5, p=p, batch_size=128)
        gpu = knn_predict(xtr.cuda(), ytr.cuda(), xq.round().cuda(), k=5, p=p, batch_size=128)
        assert gpu.device.type == "cuda"
        assert torch.equal(cpu, gpu.cpu())


_X, _Y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 5}, ValueError, "k must be <= "),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"p": 3}, ValueError, "p must be"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"train_y": torch.tensor([0.0, 1.0, 0.0, 1.0])}, TypeError, "train_y must hold integer"),
        ({"train_y": torch.tensor([True, False, True, False])}, TypeError, "train_y must hold integer"),
        ({"train_y": torch.tensor([0, 1, 0])}, ValueError, "train_y must be \\[N\\]"),
        ({"train_y": torch.tensor([0, -1, 0, 1])}, ValueError, "train_y must be >= 0"),
        ({"query_x": torch.zeros(3, 3)}, ValueError, "feature dimension"),
        ({"query_x": torch.full((3, 2), float("nan"))}, ValueError, "query_x contains NaN"),
        ({"train_x": torch.tensor([[0.0, 0.0]] * 3 + [[float("inf"), 0.0]])}, ValueError, "train_x contains"),
        ({"query_x": torch.zeros(3, 2, dtype=torch.int64)}, TypeError, "query_x must be a floating"),
        ({"train_x": torch.zeros(0, 2), "train_y": torch.zeros(0, dtype=torch.int64)}, ValueError, "empty"),
    ],
)
def test_knn_predict_bad_inputs(kwargs, err, match):
    args = {"train_x": _X, "train_y": _Y, "query_x": torch.zeros(3, 2), **kwargs}
    with pytest.raises(err, match=match):
        knn_predict(**args)
