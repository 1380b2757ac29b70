"""Self-supervised learning: views, pretext tasks, clustering, BYOL and the probes that evaluate them.

Introduced in chapter 17 (self-supervised learning); chapter 18 (CLIP, SLIP) reuses the views and
the probes. The contrastive loss itself is :func:`course_lib.losses.nt_xent` (chapter 03) and the
target network of BYOL is a :class:`course_lib.optim.WeightEMA` (chapter 05); this module holds the
rest:

- :func:`simclr_view` / :func:`simclr_views`: SimCLR's random augmentation of a batch (random resized
  crop, flip, colour gain, random grey), vectorized on the batch, seeded by a generator;
- :func:`rotation_batch`: the rotation pretext task (four rotated copies and their labels);
- :func:`kmeans` and :func:`cluster_balanced_weights`: DeepCluster's clustering step, with empty
  clusters re-seeded from the largest one, and the sampling weights that give each cluster the same
  share;
- :func:`byol_loss` and :func:`byol_decay`: BYOL's normalized regression loss ``2 - 2 cos`` (the
  target gets no gradient) and its cosine schedule of the EMA decay;
- :func:`embed`, :func:`linear_probe`, :func:`knn_accuracy` and :func:`embedding_spread`: frozen
  features, the linear probe and k-NN monitor on them, and the collapse monitor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import augment, neighbors

__all__ = [
    "byol_decay",
    "byol_loss",
    "cluster_balanced_weights",
    "embed",
    "embedding_spread",
    "kmeans",
    "knn_accuracy",
    "linear_probe",
    "rotation_batch",
    "simclr_view",
    "simclr_views",
]


def _check_images(x: object, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating Tensor[N, C, H, W], got {got}")


def _check_features(x: object, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating Tensor[N, D], got {got}")


def _check_labels(y: object, n: int, name: str) -> None:
    if not isinstance(y, Tensor) or y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{name} must be an integer Tensor[N], got {got}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but the features have {n} rows")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> Tensor:
    dev = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=dev) * (high - low) + low).to(device)


# --------------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------------
def simclr_view(
    x: Tensor,
    *,
    scale: tuple[float, float] = (0.3, 1.0),
    crop: bool = True,
    flip: bool = True,
    color: float = 0.5,
    gray_p: float = 0.2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One SimCLR augmentation of every image of a batch (images in [0, 1]).

    In order: a random resized crop back to the input size (area fraction in ``scale``, see
    :func:`course_lib.augment.random_resized_crop`), a horizontal flip with probability 1/2, a random
    gain per image and channel in ``[1 - color, 1 + color]`` (a colour distortion: it changes hue as
    well as brightness), and with probability ``gray_p`` the image is replaced by its grey level. The
    result is clipped to [0, 1]. SimCLR found crop + colour the pair that matters: with crops alone,
    the two views of an image can be matched by their colour histogram, and the encoder learns colour.

    Args:
        x: ``Tensor[N, 3, H, W]`` in [0, 1].
        scale: area range of the crop, within (0, 1].
        crop: take the random resized crop (``False``: keep the whole image, ``scale`` is ignored).
        flip: mirror half of the images.
        color: strength of the colour gain in [0, 1) (0 turns it off).
        gray_p: probability of turning an image grey, in [0, 1].
        generator: source of randomness (CPU generator, or one on the images' device).
    Returns:
        ``Tensor[N, 3, H, W]`` like ``x``.

    Introduced in chapter 17.
    """
    _check_images(x)
    if x.shape[1] != 3:
        raise ValueError(f"x must have 3 channels (RGB), got {x.shape[1]}")
    if not 0 <= color < 1:
        raise ValueError(f"color must be in [0, 1), got {color}")
    if not 0 <= gray_p <= 1:
        raise ValueError(f"gray_p must be in [0, 1], got {gray_p}")
    n, _, h, w = x.shape
    out = x
    if crop:
        out = augment.random_resized_crop(x, (h, w), scale=scale, ratio=(3 / 4, 4 / 3), generator=generator)
    if flip:
        out = augment.random_flip(out, 0.5, generator=generator)
    if color > 0:
        gain = _uniform(n * 3, 1 - color, 1 + color, generator, x.device).view(n, 3, 1, 1)
        out = out * gain.to(out.dtype)
    if gray_p > 0:
        grey = (out * out.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        to_grey = (_uniform(n, 0.0, 1.0, generator, x.device) < gray_p).view(n, 1, 1, 1)
        out = torch.where(to_grey, grey.expand_as(out), out)
    return out.clamp(0, 1)


def simclr_views(x: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
    """Two independent :func:`simclr_view` augmentations of the same batch: a positive pair per image.

    Keyword arguments go to :func:`simclr_view`. Introduced in chapter 17.
    """
    return simclr_view(x, **kwargs), simclr_view(x, **kwargs)


# --------------------------------------------------------------------------------------------
# pretext task and clustering
# --------------------------------------------------------------------------------------------
def rotation_batch(x: Tensor) -> tuple[Tensor, Tensor]:
    """The rotation pretext task (Gidaris et al., 2018): every image rotated by 0, 90, 180 and 270 degrees.

    Args:
        x: ``Tensor[N, C, H, W]`` with ``H == W``.
    Returns:
        images ``Tensor[4N, C, H, W]`` (all images at 0 degrees, then all at 90, ...), and labels
        ``Tensor[4N]`` int64 in {0, 1, 2, 3}: the number of counter-clockwise quarter turns.

    Introduced in chapter 17.
    """
    _check_images(x)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    n = x.shape[0]
    rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(n)
    return rotated, labels


def kmeans(
    x: Tensor,
    k: int,
    *,
    iters: int = 20,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with DeepCluster's fix for empty clusters.

    Centroids start from k-means++ seeding (each new seed drawn with probability proportional to the
    squared distance to the nearest seed so far), or from ``init``. Each iteration assigns every row to its
    nearest centroid (squared L2) and moves each centroid to the mean of its rows. A cluster left empty
    is re-seeded as in DeepCluster (Caron et al., 2018): it takes the centroid of the largest cluster
    plus a small perturbation, and the two split that cluster at the next assignment. Without this, a
    trivial solution (few clusters holding almost everything) is easy to fall into.

    Args:
        x: ``Tensor[N, D]`` floating point, ``N >= k``.
        k: number of clusters, ``>= 1``.
        iters: Lloyd iterations, ``>= 1``.
        init: optional initial centroids ``Tensor[k, D]``.
        generator: source of randomness for the initial centroids and the perturbations.
    Returns:
        centroids ``Tensor[k, D]`` and assignments ``Tensor[N]`` int64 (the last assignment step, so
        every assignment is to its nearest returned centroid up to the final mean update).

    Introduced in chapter 17.
    """
    _check_features(x, "x")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    n = x.shape[0]
    if n < k:
        raise ValueError(f"kmeans needs at least k = {k} rows, got {n}")
    gdev = generator.device if generator is not None else torch.device("cpu")
    if init is not None:
        if not isinstance(init, Tensor) or tuple(init.shape) != (k, x.shape[1]):
            got = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"init must be a Tensor[k, D] = [{k}, {x.shape[1]}], got {got}")
        centroids = init.to(x).clone()
    else:  # k-means++ seeding
        first = int(torch.randint(0, n, (1,), generator=generator, device=gdev))
        centroids = x[first : first + 1].clone()
        for _ in range(1, k):
            d2 = torch.cdist(x, centroids).min(1).values.pow(2)
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
            nxt = int(torch.multinomial(probs.to(gdev), 1, generator=generator))
            centroids = torch.cat([centroids, x[nxt : nxt + 1]])
    scale = x.std(0).mean().clamp_min(1e-12)
    assign = torch.zeros(n, dtype=torch.int64, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None].to(x.dtype)
        for j in torch.nonzero(~nonempty).flatten().tolist():  # DeepCluster: split the largest
            big = int(counts.argmax())
            noise = torch.randn(x.shape[1], generator=generator, device=gdev).to(x)
            centroids[j] = centroids[big] + 1e-3 * scale * noise
            counts[big] = counts[big] // 2  # the next empty cluster picks another big one if needed
    return centroids, assign


def cluster_balanced_weights(assign: Tensor, k: int) -> Tensor:
    """Per-sample weights that give each non-empty cluster the same total weight (DeepCluster's uniform sampling).

    Pass them to ``torch.utils.data.WeightedRandomSampler`` so that training on pseudo-labels does not
    follow the largest clusters. Weights sum to 1.

    Args:
        assign: ``Tensor[N]`` integer cluster ids in ``[0, k)``.
        k: number of clusters.
    Returns:
        ``Tensor[N]`` float32.

    Introduced in chapter 17.
    """
    _check_labels(assign, assign.shape[0] if isinstance(assign, Tensor) else -1, "assign")
    if assign.numel() == 0:
        raise ValueError("assign is empty")
    if int(assign.min()) < 0 or int(assign.max()) >= k:
        raise ValueError(
            f"assign must hold ids in [0, {k}), got range [{int(assign.min())}, {int(assign.max())}]"
        )
    counts = torch.bincount(assign, minlength=k).float()
    nonempty = int((counts > 0).sum())
    return 1.0 / (counts[assign] * nonempty)


# --------------------------------------------------------------------------------------------
# BYOL
# --------------------------------------------------------------------------------------------
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    r"""BYOL's loss: the squared distance of the normalized prediction and target, :math:`2 - 2\cos(p, z)`.

    ``z`` (the target network's projection of the other view) is detached: the stop-gradient is part of
    the loss, so only the online network (through ``p``) receives gradients. Mean over the batch;
    symmetrize by calling it twice with the views swapped.

    Args:
        p: ``Tensor[N, D]`` online predictions.
        z: ``Tensor[N, D]`` target projections.
    Returns:
        a scalar in [0, 4].

    Introduced in chapter 17.
    """
    _check_features(p, "p")
    _check_features(z, "z")
    if p.shape != z.shape or p.shape[0] == 0:
        raise ValueError(
            f"p and z must be non-empty and of the same shape, got {tuple(p.shape)}, {tuple(z.shape)}"
        )
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def byol_decay(step: int, total_steps: int, base: float = 0.996) -> float:
    r"""BYOL's EMA decay at ``step``: :math:`\tau = 1 - (1 - \tau_{base})(\cos(\pi k / K) + 1) / 2`.

    It rises from ``base`` at step 0 to 1 at ``total_steps``, so the target moves less and less. Set
    ``WeightEMA.decay`` to it before each update.

    Introduced in chapter 17.
    """
    if not 0 <= base <= 1:
        raise ValueError(f"base must be in [0, 1], got {base}")
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"need 0 <= step <= total_steps and total_steps >= 1, got {step}, {total_steps}")
    return 1 - (1 - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


# --------------------------------------------------------------------------------------------
# evaluation of frozen features
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def embed(encoder: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Features of a frozen encoder: eval mode, no gradient, in batches; the mode is restored after.

    Args:
        encoder: maps ``Tensor[B, ...]`` to ``Tensor[B, D]``.
        x: inputs ``Tensor[N, ...]`` on the encoder's device.
        batch_size: rows per forward pass.
    Returns:
        ``Tensor[N, D]``.

    Introduced in chapter 17.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        out = torch.cat([encoder(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        encoder.train(was_training)
    return out.flatten(1)


def linear_probe(
    train_feats: Tensor,
    train_y: Tensor,
    test_feats: Tensor,
    test_y: Tensor,
    *,
    weight_decay: float = 1e-3,
    steps: int = 300,
    lr: float = 0.1,
) -> float:
    """Accuracy of a linear classifier trained on frozen features: the standard measure of a representation.

    Features are standardized with the training set's mean and standard deviation; a multinomial
    logistic regression (zero initial weights, so the result is deterministic) is trained full-batch
    with Adam and an L2 penalty ``weight_decay`` on the weights, then scored on the test features.

    Args:
        train_feats: ``Tensor[N, D]``; train_y: ``Tensor[N]`` integer labels.
        test_feats: ``Tensor[M, D]``; test_y: ``Tensor[M]`` integer labels.
        weight_decay: L2 penalty (choose it on a validation split).
        steps: full-batch Adam steps.
        lr: Adam's learning rate.
    Returns:
        test accuracy, a float in [0, 1].

    Introduced in chapter 17.
    """
    _check_features(train_feats, "train_feats")
    _check_features(test_feats, "test_feats")
    _check_labels(train_y, train_feats.shape[0], "train_y")
    _check_labels(test_y, test_feats.shape[0], "test_y")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"feature sizes differ: {train_feats.shape[1]} and {test_feats.shape[1]}")
    if train_feats.shape[0] == 0 or test_feats.shape[0] == 0:
        raise ValueError("linear_probe needs non-empty training and test sets")
    mean, std = train_feats.mean(0), train_feats.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (train_feats - mean) / std, (test_feats - mean) / std
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(xtr.shape[1], k, device=xtr.device, requires_grad=True)
    b = torch.zeros(k, device=xtr.device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(xtr @ w + b, train_y) + weight_decay * (w**2).sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return ((xte @ w + b).argmax(1) == test_y).float().mean().item()


@torch.no_grad()
def knn_accuracy(
    train_feats: Tensor, train_y: Tensor, test_feats: Tensor, test_y: Tensor, k: int = 5
) -> float:
    """k-NN accuracy with cosine similarity: the cheap monitor of a representation during training.

    Rows are L2-normalized (so Euclidean ranking equals cosine ranking) and classified with
    :func:`course_lib.neighbors.knn_predict`.

    Introduced in chapter 17.
    """
    _check_features(train_feats, "train_feats")
    _check_features(test_feats, "test_feats")
    _check_labels(train_y, train_feats.shape[0], "train_y")
    _check_labels(test_y, test_feats.shape[0], "test_y")
    pred = neighbors.knn_predict(
        F.normalize(train_feats, dim=1), train_y, F.normalize(test_feats, dim=1), k=k
    )
    return (pred == test_y).float().mean().item()


@torch.no_grad()
def embedding_spread(z: Tensor) -> float:
    """Collapse monitor: the mean per-dimension standard deviation of the L2-normalized embeddings.

    A collapsed encoder maps every input to the same vector and gives 0; unit vectors spread evenly over
    ``D`` dimensions give about ``1 / sqrt(D)`` (the value BYOL's and SimSiam's authors track).

    Args:
        z: ``Tensor[N, D]``, ``N >= 2``.
    Returns:
        a float >= 0.

    Introduced in chapter 17.
    """
    _check_features(z, "z")
    if z.shape[0] < 2:
        raise ValueError(f"embedding_spread needs at least 2 rows, got {z.shape[0]}")
    return F.normalize(z, dim=1).std(0).mean().item()
