"""Loss functions that ``torch.nn.functional`` does not ship, written once and tested.

Introduced in chapter 03 (losses). The standard losses (L1, MSE, Huber, BCE, cross-entropy, KL on
log-probabilities) are used straight from ``torch.nn.functional``; this module adds

- :func:`msle`: mean squared logarithmic error (the ``log1p`` form);
- :func:`entropy` and :func:`kl_divergence` on *probabilities* (with ``0 log 0 = 0``);
- :func:`gram_matrix`, :func:`style_loss` (Gatys et al., 2016) and :func:`feature_loss`
  (the perceptual loss of Johnson et al., 2016), used again in chapter 19;
- :func:`identity_loss` (one minus cosine similarity of embeddings);
- :func:`iou_loss` and :func:`giou_loss` for paired boxes (chapter 08 uses them);
- :func:`dice_loss`, the soft Dice loss for segmentation masks (chapter 07);
- :func:`nt_xent`, the SimCLR contrastive loss (chapters 17 and 18);
- :func:`clip_loss`, CLIP's symmetric InfoNCE with a (learnable) logit scale, and
  :func:`directional_loss`, StyleGAN-NADA's directional CLIP loss (chapter 18);
- :func:`gaussian_kl`, the VAE's KL term (chapter 09);
- :func:`discriminator_loss`, :func:`generator_loss` (minimax, non-saturating, hinge, Wasserstein,
  least squares), :func:`critic_gradient_norms` and :func:`gradient_penalty` (chapter 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import ops

__all__ = [
    "GAN_LOSSES",
    "clip_loss",
    "critic_gradient_norms",
    "dice_loss",
    "discriminator_loss",
    "entropy",
    "feature_loss",
    "gaussian_kl",
    "directional_loss",
    "generator_loss",
    "giou_loss",
    "gradient_penalty",
    "gram_matrix",
    "identity_loss",
    "iou_loss",
    "kl_divergence",
    "msle",
    "nt_xent",
    "style_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_tensor(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        # the mean of nothing is 0 here (as in torchvision's box losses), not NaN
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------
def msle(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared logarithmic error, ``mean((log(1 + pred) - log(1 + target))^2)``.

    The ``+1`` keeps zeros finite (``log 0 = -inf``); the error is on a log scale, so it measures
    *relative* errors: predicting 110 for 100 costs about as much as 1,100 for 1,000. The root of the
    mean (RMSLE) is ``msle(...).sqrt()``. Same definition as ``sklearn.metrics.mean_squared_log_error``.

    Args:
        pred: ``Tensor[*]`` non-negative predictions.
        target: ``Tensor[*]`` non-negative targets, same shape as ``pred``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (element-wise squared log errors).

    Returns:
        a scalar, or ``Tensor[*]`` for ``reduction="none"``.

    Introduced in chapter 03.
    """
    _check_tensor(pred, "pred")
    _check_tensor(target, "target")
    _check_reduction(reduction)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (t < 0).any():
            raise ValueError(f"{name} must be >= 0 for the MSLE, got a minimum of {t.min().item():.4g}")
    return _reduce((torch.log1p(pred) - torch.log1p(target)) ** 2, reduction)


# --------------------------------------------------------------------------------------------
# information theory on probabilities
# --------------------------------------------------------------------------------------------
def _check_probabilities(p: Tensor, name: str, dim: int, atol: float = 1e-4) -> None:
    _check_tensor(p, name)
    if p.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the distribution), got a scalar")
    if p.numel() == 0:
        return
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name} must hold probabilities >= 0, got a minimum of {p.min().item():.4g}")
    total = p.sum(dim)
    if not torch.allclose(total, torch.ones_like(total), atol=atol * p.shape[dim], rtol=0):
        worst = total.flatten()[(total - 1).abs().flatten().argmax()].item()
        raise ValueError(f"{name} must sum to 1 along dim={dim}, got a sum of {worst:.6g}")


def _log_base(base: float | None) -> float:
    if base is None:
        return 1.0
    if not base > 0 or base == 1:
        raise ValueError(f"base must be > 0 and != 1 (or None for nats), got {base}")
    return math.log(base)


def entropy(p: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Shannon entropy ``H(p) = -sum_i p_i log p_i`` of distributions along ``dim``.

    Terms with ``p_i = 0`` contribute 0 (the limit of ``x log x`` as ``x -> 0``), via ``torch.xlogy``.
    In nats by default (natural log, as PyTorch's losses); ``base=2`` gives bits.

    Args:
        p: ``Tensor[..., K, ...]`` of probabilities that sum to 1 along ``dim``.
        dim: the dimension that holds the distribution.
        base: logarithm base; ``None`` means ``e``.

    Returns:
        ``Tensor[...]``: ``p`` with ``dim`` reduced.

    Introduced in chapter 03.
    """
    _check_probabilities(p, "p", dim)
    return -torch.xlogy(p, p).sum(dim) / _log_base(base)


def kl_divergence(p: Tensor, q: Tensor, dim: int = -1, base: float | None = None) -> Tensor:
    """Kullback-Leibler divergence ``D_KL(p || q) = sum_i p_i (log p_i - log q_i)`` along ``dim``.

    ``p`` is the reference ("true") distribution. Terms with ``p_i = 0`` contribute 0 whatever ``q_i``;
    a term with ``p_i > 0`` and ``q_i = 0`` makes the divergence ``+inf``. Always >= 0, zero only
    for ``q = p``, and not symmetric. ``cross_entropy(p, q) = entropy(p) + kl_divergence(p, q)``.
    Unlike ``torch.nn.functional.kl_div(input, target)``, both arguments are probabilities and the
    reference comes first: ``kl_divergence(p, q) == F.kl_div(q.log(), p, reduction="none").sum(dim)``.

    Args:
        p: ``Tensor[..., K, ...]`` reference probabilities (sum to 1 along ``dim``).
        q: probabilities of the same shape.
        dim: the dimension that holds the distributions.
        base: logarithm base; ``None`` means ``e`` (nats).

    Returns:
        ``Tensor[...]``: the divergences, ``dim`` reduced.

    Introduced in chapter 03.
    """
    _check_probabilities(p, "p", dim)
    _check_probabilities(q, "q", dim)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(dim) / _log_base(base)


# --------------------------------------------------------------------------------------------
# perceptual, style and identity losses
# --------------------------------------------------------------------------------------------
def _check_features(x: Tensor, name: str) -> None:
    _check_tensor(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be feature maps Tensor[B, C, H, W], got shape {tuple(x.shape)}")


def gram_matrix(features: Tensor, normalize: bool = True) -> Tensor:
    """Gram matrices ``G_ij = sum_k F_ik F_jk`` of feature maps, one ``C x C`` matrix per image.

    ``F`` is the ``C x (H W)`` matrix of one image's feature maps (one row per channel). ``G`` holds the
    correlations between channels summed over all positions, so it forgets *where* features occur:
    permuting the spatial positions leaves it unchanged. With ``normalize=True`` it is divided by
    ``C H W`` (Johnson et al., 2016), which makes its scale independent of the layer's size.

    Args:
        features: ``Tensor[B, C, H, W]``.
        normalize: divide by ``C * H * W``.

    Returns:
        ``Tensor[B, C, C]``, exactly symmetric and positive semi-definite (up to rounding).

    A BLAS matrix product ``F F^T`` need not be exactly symmetric: depending on the CPU and the
    library, ``G_ij`` and ``G_ji`` may be summed in different orders and differ in the last bits. The
    result is therefore symmetrized as ``(G + G^T) / 2``, which is exactly symmetric in IEEE
    arithmetic (addition is commutative and halving is exact).

    Introduced in chapter 03.
    """
    _check_features(features, "features")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    g = f @ f.transpose(1, 2)
    g = (g + g.mT) / 2
    return g / (c * h * w) if normalize else g


def _as_list(feats: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    out = [feats] if isinstance(feats, Tensor) else list(feats)
    if not out:
        raise ValueError(f"{name} is empty: pass one Tensor[B, C, H, W] per layer")
    for i, f in enumerate(out):
        _check_features(f, f"{name}[{i}]")
    return out


def _check_layer_pairs(fx: list[Tensor], fy: list[Tensor], *, broadcast_y: bool) -> None:
    if len(fx) != len(fy):
        raise ValueError(
            f"feats_x and feats_y must have one tensor per layer, got {len(fx)} and {len(fy)} layers"
        )
    for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
        ok = a.shape[1:] == b.shape[1:] and (a.shape[0] == b.shape[0] or (broadcast_y and b.shape[0] == 1))
        if not ok:
            raise ValueError(
                f"layer {i}: feats_x has shape {tuple(a.shape)} but feats_y has {tuple(b.shape)}"
            )


def style_loss(
    feats_x: Tensor | Sequence[Tensor],
    feats_y: Tensor | Sequence[Tensor],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Gatys et al.'s style loss ``sum_l w_l E_l`` between the feature maps of two images.

    For layer ``l`` with ``N_l`` channels and ``M_l = H_l W_l`` positions, with Gram matrices ``G`` (of
    the generated image) and ``A`` (of the style image),
    ``E_l = 1 / (4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2``. It compares feature statistics, not layout.

    Args:
        feats_x: feature maps of the images being optimised, one ``Tensor[B, C_l, H_l, W_l]`` per layer
            (or a single tensor for one layer).
        feats_y: feature maps of the style image(s), same shapes; a batch of 1 is broadcast.
        weights: ``w_l`` per layer; ``None`` gives ``1 / L`` each (Gatys et al. used 1/5 for 5 layers).

    Returns:
        a scalar: the weighted sum over layers, averaged over the batch.

    Introduced in chapter 03.
    """
    fx, fy = _as_list(feats_x, "feats_x"), _as_list(feats_y, "feats_y")
    _check_layer_pairs(fx, fy, broadcast_y=True)
    if weights is None:
        weights = [1.0 / len(fx)] * len(fx)
    if len(weights) != len(fx):
        raise ValueError(f"weights must have one entry per layer ({len(fx)}), got {len(weights)}")
    total = fx[0].new_zeros(())
    for w, a, b in zip(weights, fx, fy, strict=True):
        # G / (N M) and A / (N M) make 1 / (4 N^2 M^2) sum (G - A)^2 = 1/4 sum (G/(NM) - A/(NM))^2
        e_l = 0.25 * ((gram_matrix(a) - gram_matrix(b)) ** 2).sum(dim=(1, 2))
        total = total + w * e_l.mean()
    return total


def feature_loss(feats_x: Tensor | Sequence[Tensor], feats_y: Tensor | Sequence[Tensor]) -> Tensor:
    """Feature reconstruction ("perceptual") loss of Johnson et al. (2016).

    For each layer, ``1 / (C H W) * ||phi(x) - phi(y)||_2^2`` per image (the mean squared difference of
    the feature maps), averaged over the batch and summed over layers. ``phi`` is a feature network
    (in practice a pretrained VGG); this function takes its outputs.

    Args:
        feats_x: ``Tensor[B, C, H, W]`` or a sequence of them (one per layer).
        feats_y: the same shapes.

    Returns:
        a scalar.

    Introduced in chapter 03.
    """
    fx, fy = _as_list(feats_x, "feats_x"), _as_list(feats_y, "feats_y")
    _check_layer_pairs(fx, fy, broadcast_y=False)
    return sum(F.mse_loss(a, b, reduction="mean") for a, b in zip(fx, fy, strict=True))


def identity_loss(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """One minus the cosine similarity of two batches of embeddings, averaged over the batch.

    Used to keep the identity of a face (embeddings ``a = R(G(w))`` and ``b = R(x)`` of a recognition
    network R): minimising it *maximises* the cosine similarity. Values lie in [0, 2]; 0 means same
    direction. Embeddings with more than one dimension per sample are flattened.

    Args:
        a: ``Tensor[B, ...]`` embeddings.
        b: ``Tensor[B, ...]`` embeddings, same shape.
        eps: guards the division for zero vectors (whose similarity is then 0).

    Returns:
        a scalar.

    Introduced in chapter 03.
    """
    _check_tensor(a, "a")
    _check_tensor(b, "b")
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(
            "a and b must be non-empty Tensor[B, D] of the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return (1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=eps)).mean()


# --------------------------------------------------------------------------------------------
# boxes
# --------------------------------------------------------------------------------------------
def iou_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """IoU loss ``1 - IoU(pred_i, target_i)`` for paired boxes.

    Zero for a perfect box, 1 for any box that misses its target, whatever the distance: its gradient is
    zero there, which is why :func:`giou_loss` is preferred.

    Args:
        pred: ``Tensor[N, 4]`` predicted boxes ``(x1, y1, x2, y2)``, ``x2 >= x1``, ``y2 >= y1``.
        target: ``Tensor[N, 4]`` target boxes, paired with ``pred`` row by row.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        a scalar, or ``Tensor[N]`` for ``reduction="none"``.

    Introduced in chapter 03.
    """
    _check_reduction(reduction)
    return _reduce(1 - ops.paired_box_iou(pred, target), reduction)


def giou_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Generalized IoU loss ``1 - GIoU(pred_i, target_i)`` for paired boxes (Rezatofighi et al., 2019).

    In [0, 2): it keeps decreasing as a disjoint box moves towards its target, where ``1 - IoU`` is flat.
    Equals ``torchvision.ops.generalized_box_iou_loss`` (which adds an ``eps`` to the denominators).
    The IoU terms are computed pair by pair, without an ``N x N`` matrix.

    Args:
        pred: ``Tensor[N, 4]`` predicted boxes ``(x1, y1, x2, y2)``.
        target: ``Tensor[N, 4]`` target boxes, paired with ``pred`` row by row.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Returns:
        a scalar, or ``Tensor[N]`` for ``reduction="none"``.

    Introduced in chapter 03.
    """
    _check_reduction(reduction)
    return _reduce(1 - ops.paired_generalized_box_iou(pred, target), reduction)


# --------------------------------------------------------------------------------------------
# contrastive
# --------------------------------------------------------------------------------------------
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy (NT-Xent) loss.

    The batch holds ``2N`` embeddings, two views of each of ``N`` images: ``z1[i]`` and ``z2[i]`` are
    a positive pair. With ``s_ik = cos(z_i, z_k) / tau`` (cosine similarity of L2-normalised vectors),
    the loss of anchor ``i`` with positive ``j`` is
    ``-log( exp(s_ij) / sum_{k != i} exp(s_ik) )``, the sum running over the other ``2N - 1``
    embeddings of the batch (one positive, ``2N - 2`` negatives). The result is the mean over all
    ``2N`` anchors. Computed with ``logsumexp`` (stable for small temperatures).

    Args:
        z1: ``Tensor[N, D]`` embeddings of the first views.
        z2: ``Tensor[N, D]`` embeddings of the second views.
        temperature: ``tau > 0``; smaller values sharpen the softmax over the batch.

    Returns:
        a scalar.

    Introduced in chapter 03; chapters 17 (self-supervised) and 18 (CLIP) use it.
    """
    _check_tensor(z1, "z1")
    _check_tensor(z2, "z2")
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] == 0:
        raise ValueError(
            "z1 and z2 must be non-empty Tensor[N, D] of the same shape, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2N, D], unit rows
    s = z @ z.T / temperature  # [2N, 2N] scaled cosine similarities
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    s = s.masked_fill(self_mask, float("-inf"))  # k != i
    idx = torch.arange(2 * n, device=z.device)
    positive = (idx + n) % (2 * n)  # the other view of the same image
    return (torch.logsumexp(s, dim=1) - s[idx, positive]).mean()


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    r"""Soft Dice loss (Milletari et al., 2016): one minus the Dice overlap of predicted probabilities
    and the target mask, summed over the whole batch.

    .. math::
        \mathcal L = 1 - \frac{2\sum_i p_i g_i + \epsilon}{\sum_i p_i + \sum_i g_i + \epsilon}

    True negatives do not appear, so a rare foreground class weighs as much as a common one. For hard
    0/1 masks and ``eps = 0`` the fraction is the Dice coefficient, the F1 score of the pixels.

    Args:
        logits: binary case: ``Tensor[N, ...]`` logits of the foreground (``p = sigmoid(logits)``);
            multi-class case: ``Tensor[N, C, ...]`` class logits (``p = softmax`` over ``C``).
        target: binary case: a float ``Tensor`` of 0/1 (or soft) values shaped like ``logits``;
            multi-class case: an integer ``Tensor[N, ...]`` of class indices in ``[0, C)``. The loss is
            then the mean over the ``C`` classes of each class's one-vs-rest Dice loss.
        eps: smoothing added to numerator and denominator (> 0 keeps an empty target finite).
    Returns:
        a scalar in [0, 1].

    Introduced in chapter 07.
    """
    _check_tensor(logits, "logits")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a Tensor, got {type(target).__name__}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(
                f"a float (binary) target must have the shape of logits {tuple(logits.shape)}, got "
                f"{tuple(target.shape)}; pass integer class indices for the multi-class loss"
            )
        p = torch.sigmoid(logits)
        return 1 - (2 * (p * target).sum() + eps) / (p.sum() + target.sum() + eps)
    if target.dtype == torch.bool or logits.ndim != target.ndim + 1 or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"multi-class dice_loss needs logits [N, C, ...] and integer target [N, ...], got "
            f"{tuple(logits.shape)} and {tuple(target.shape)} ({target.dtype})"
        )
    if logits.shape[0] != target.shape[0]:
        raise ValueError(f"logits and target disagree on N: {logits.shape[0]} vs {target.shape[0]}")
    c = logits.shape[1]
    if target.numel() and (target.min() < 0 or target.max() >= c):
        raise ValueError(
            f"target class indices must be in [0, {c}), got [{int(target.min())}, {int(target.max())}]"
        )
    p = logits.softmax(dim=1)
    g = F.one_hot(target, c).movedim(-1, 1).to(p.dtype)  # [N, C, ...]
    dims = [0, *range(2, p.ndim)]
    per_class = 1 - (2 * (p * g).sum(dims) + eps) / (p.sum(dims) + g.sum(dims) + eps)
    return per_class.mean()


# --------------------------------------------------------------------------------------------
# generative models: the VAE's KL term (chapter 09), adversarial losses (chapter 10)
# --------------------------------------------------------------------------------------------
def gaussian_kl(mu: Tensor, logvar: Tensor, reduction: str = "none") -> Tensor:
    r"""KL divergence of a diagonal Gaussian from the standard normal, in nats, per dimension.

    .. math::
        \mathrm{KL}\big(\mathcal N(\mu, \sigma^2)\,\|\,\mathcal N(0, 1)\big)
        = \tfrac12\left(\mu^2 + \sigma^2 - \log\sigma^2 - 1\right), \qquad \log\sigma^2 = \text{logvar}

    This is the regularizer of the VAE's evidence lower bound (Kingma and Welling, 2014); the KL of
    the whole diagonal posterior is the sum over the latent dimensions.

    Args:
        mu: ``Tensor[...]`` means of the approximate posterior.
        logvar: ``Tensor[...]`` log-variances, the shape of ``mu``.
        reduction: ``"none"`` (the shape of ``mu``, one value per dimension), ``"sum"`` or ``"mean"``
            over every element.

    Introduced in chapter 09.
    """
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    _check_reduction(reduction)
    return _reduce(0.5 * (mu.square() + logvar.exp() - logvar - 1), reduction)


#: The adversarial losses :func:`discriminator_loss` and :func:`generator_loss` know.
GAN_LOSSES = ("minimax", "nonsaturating", "hinge", "wasserstein", "least_squares")


def _check_gan_kind(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"kind must be one of {GAN_LOSSES}, got {kind!r}")


def _check_scores(x: Tensor, name: str) -> None:
    _check_tensor(x, name)
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, kind: str = "nonsaturating") -> Tensor:
    r"""The discriminator's (or critic's) loss on a batch of real and generated samples (a mean).

    ``real_logits`` and ``fake_logits`` are the raw outputs ``D(x)`` before any sigmoid, any shape
    (a PatchGAN gives one score per patch); every element counts once in its mean.

    - ``"minimax"`` and ``"nonsaturating"`` (Goodfellow et al., 2014): the binary cross-entropy of
      "real" against "fake", :math:`-\mathbb E\log\sigma(D(x)) - \mathbb E\log(1-\sigma(D(G(z))))`;
      the two GAN variants differ only in the generator's loss.
    - ``"hinge"`` (Lim and Ye, 2017; used by SAGAN and BigGAN):
      :math:`\mathbb E\,\mathrm{relu}(1 - D(x)) + \mathbb E\,\mathrm{relu}(1 + D(G(z)))`.
    - ``"wasserstein"`` (Arjovsky et al., 2017): the critic maximizes
      :math:`\mathbb E D(x) - \mathbb E D(G(z))`, so its loss is the negative; it needs a Lipschitz
      constraint (weight clipping, :func:`gradient_penalty` or spectral normalization).
    - ``"least_squares"`` (Mao et al., 2017): :math:`\tfrac12\mathbb E(D(x)-1)^2 + \tfrac12\mathbb E D(G(z))^2`.

    Introduced in chapter 10.
    """
    _check_scores(real_logits, "real_logits")
    _check_scores(fake_logits, "fake_logits")
    _check_gan_kind(kind)
    if kind in ("minimax", "nonsaturating"):
        # -log sigmoid(r) = softplus(-r) and -log(1 - sigmoid(f)) = softplus(f), both stable
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "wasserstein":
        return fake_logits.mean() - real_logits.mean()
    return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()


def generator_loss(fake_logits: Tensor, kind: str = "nonsaturating") -> Tensor:
    r"""The generator's loss on the discriminator's raw outputs for generated samples (a mean).

    - ``"minimax"``: the original game, minimize :math:`\mathbb E\log(1-\sigma(D(G(z))))`. When the
      discriminator confidently rejects the samples (:math:`D(G(z))\to 0`, early in training) its
      gradient with respect to the logit, :math:`-\sigma(D(G(z)))`, vanishes: the loss saturates.
    - ``"nonsaturating"``: minimize :math:`-\mathbb E\log\sigma(D(G(z)))` instead; same fixed point,
      but the gradient :math:`\sigma(D(G(z))) - 1 \to -1` stays large exactly when the generator is
      losing.
    - ``"hinge"`` and ``"wasserstein"``: :math:`-\mathbb E D(G(z))`.
    - ``"least_squares"``: :math:`\tfrac12\mathbb E(D(G(z)) - 1)^2`.

    Introduced in chapter 10.
    """
    _check_scores(fake_logits, "fake_logits")
    _check_gan_kind(kind)
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(f)) = -softplus(f)
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    if kind in ("hinge", "wasserstein"):
        return -fake_logits.mean()
    return 0.5 * (fake_logits - 1).square().mean()


def critic_gradient_norms(
    critic,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    create_graph: bool = False,
) -> Tensor:
    r"""``‖∇_x̂ D(x̂)‖₂`` at random interpolates :math:`\hat x = \epsilon x + (1-\epsilon)\tilde x`.

    One :math:`\epsilon \sim U[0, 1]` per sample; the norm is over all of a sample's elements. These
    are the points where WGAN-GP (Gulrajani et al., 2017) asks the critic to be 1-Lipschitz.

    Args:
        critic: a callable ``Tensor[N, ...] -> Tensor[N]`` or ``Tensor[N, ...]`` (summed per sample).
        real: ``Tensor[N, ...]`` real samples.
        fake: ``Tensor[N, ...]`` generated samples, the shape of ``real`` (detached here).
        generator: the random stream of :math:`\epsilon` (``None``: the global one).
        create_graph: keep the graph so that a penalty on the norms can be backpropagated.
    Returns:
        ``Tensor[N]``.

    Introduced in chapter 10.
    """
    _check_scores(real, "real")
    _check_scores(fake, "fake")
    if real.shape != fake.shape:
        raise ValueError(
            f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    n = real.shape[0]
    eps = torch.rand(n, generator=generator, device="cpu", dtype=real.dtype).to(real.device)
    eps = eps.view(n, *([1] * (real.ndim - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(x_hat)
        if scores.ndim == 0 or scores.shape[0] != n:
            raise ValueError(
                f"critic must return one score (or map) per sample, got shape {tuple(scores.shape)}"
            )
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=create_graph)
    return grad.flatten(1).norm(dim=1)


def gradient_penalty(
    critic,
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""WGAN-GP's penalty :math:`\mathbb E_{\hat x}(\|\nabla_{\hat x} D(\hat x)\|_2 - \text{target})^2`
    on random interpolates of real and generated samples (Gulrajani et al., 2017); multiply by
    :math:`\lambda` (10 in the paper) and add to the critic's loss. Differentiable with respect to the
    critic's parameters (double backpropagation).

    See :func:`critic_gradient_norms` for the arguments. Introduced in chapter 10.
    """
    if not target >= 0:
        raise ValueError(f"target must be >= 0, got {target}")
    norms = critic_gradient_norms(critic, real, fake, generator=generator, create_graph=True)
    return (norms - target).square().mean()


# --------------------------------------------------------------------------------------------
# vision and language (chapter 18)
# --------------------------------------------------------------------------------------------
def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's symmetric InfoNCE loss over a batch of ``N`` matching image-text pairs.

    With L2-normalised embeddings ``I`` and ``T`` (rows) and the logit scale ``s = 1 / tau``,
    ``logits = s * I @ T.T`` is ``[N, N]`` and pair ``i`` is the positive of row and column ``i``:

    .. math::
        \\mathcal L = \\tfrac12\\big[\\operatorname{CE}(\\text{logits}, \\text{arange}(N))
        + \\operatorname{CE}(\\text{logits}^\\top, \\text{arange}(N))\\big]

    the image-to-text and text-to-image cross-entropies averaged. CLIP learns ``t = log s`` and
    clamps ``s`` at 100; pass ``t.exp().clamp(max=100)`` (a tensor, so that the gradient reaches
    ``t``). With identical embeddings for every pair the loss is ``ln N``.

    Args:
        image_emb: ``Tensor[N, D]`` image embeddings (normalised here).
        text_emb: ``Tensor[N, D]`` text embeddings of the matching captions, same order.
        logit_scale: ``s > 0``, a float or a scalar tensor.

    Returns:
        a scalar.

    Introduced in chapter 18.
    """
    _check_tensor(image_emb, "image_emb")
    _check_tensor(text_emb, "text_emb")
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or image_emb.shape[0] == 0:
        raise ValueError(
            "image_emb and text_emb must be non-empty Tensor[N, D] of the same shape, "
            f"got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
        if not bool(logit_scale.detach() > 0):
            raise ValueError(f"logit_scale must be > 0, got {logit_scale.item()}")
        logit_scale = logit_scale.reshape(())
    elif isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) or not logit_scale > 0:
        raise ValueError(f"logit_scale must be a positive number or scalar tensor, got {logit_scale!r}")
    i = F.normalize(image_emb, dim=1)
    t = F.normalize(text_emb, dim=1)
    logits = logit_scale * i @ t.T  # [N, N]: row = image, column = caption
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def directional_loss(
    image_source: Tensor, image_target: Tensor, text_source: Tensor, text_target: Tensor, eps: float = 1e-8
) -> Tensor:
    """StyleGAN-NADA's directional CLIP loss: one minus the cosine of the image and text directions.

    .. math::
        \\Delta I = E_I(x_{target}) - E_I(x_{source}),\\quad \\Delta T = E_T(t_{target}) - E_T(t_{source}),
        \\quad \\mathcal L = 1 - \\frac{\\Delta I\\cdot\\Delta T}{\\lVert\\Delta I\\rVert\\,\\lVert\\Delta T\\rVert}

    0 when the image change is parallel to the text change, 1 when orthogonal, 2 when opposite.
    The embeddings are used as given (CLIP's are normalised first by the caller if wanted).

    Args:
        image_source, image_target: ``Tensor[N, D]`` (or ``[D]``) embeddings of the frozen and the
            trained generator's images for the same latents.
        text_source, text_target: ``Tensor[D]`` or ``Tensor[N, D]`` embeddings of the two prompts
            (broadcast against the images).
        eps: guards the norm of a zero direction.

    Returns:
        the mean loss over the batch, a scalar.

    Introduced in chapter 18.
    """
    for x, name in (
        (image_source, "image_source"),
        (image_target, "image_target"),
        (text_source, "text_source"),
        (text_target, "text_target"),
    ):
        _check_tensor(x, name)
        if x.ndim not in (1, 2):
            raise ValueError(f"{name} must be Tensor[D] or Tensor[N, D], got shape {tuple(x.shape)}")
    if image_source.shape != image_target.shape or text_source.shape != text_target.shape:
        raise ValueError(
            "source and target embeddings must have the same shape, got images "
            f"{tuple(image_source.shape)}/{tuple(image_target.shape)}, texts "
            f"{tuple(text_source.shape)}/{tuple(text_target.shape)}"
        )
    if image_source.shape[-1] != text_source.shape[-1]:
        raise ValueError(
            f"image and text embeddings must share D, got {image_source.shape[-1]} and {text_source.shape[-1]}"
        )
    delta_i = image_target - image_source
    delta_t = text_target - text_source
    cos = F.cosine_similarity(delta_i, delta_t.expand_as(delta_i), dim=-1, eps=eps)
    return (1 - cos).mean()
