"""Data augmentation for the course's image batches: random geometry, erasing, label mixing, repeated
augmentation and ``torchvision.transforms.v2`` pipelines for the course's data.

Introduced in chapter 05 (regularization); reused wherever a model needs more views of the same data,
e.g. by the self-supervised chapter 17, whose two "views" of an image are two augmentations of it.

There are two kinds of tools here.

- **Batch functions** on float images ``Tensor[N, C, H, W]`` (:func:`random_translate`,
  :func:`random_flip`, :func:`random_resized_crop`, :func:`cutout`, :func:`mixup`, :func:`cutmix`).
  Each draws its random parameters **per sample**, without a Python loop over the samples, and returns
  a tensor on the device of the input, so it can run inside a ``collate_fn`` or the training step, on
  a GPU too. The parameters are drawn on the device of ``generator`` (by default PyTorch's global CPU
  generator, which :func:`course_lib.runtime.setup` seeds) and then moved to the images' device: the
  same seed gives the same augmentation on every device.
- **Per-sample pipelines** (:func:`digits_pipeline`, :func:`shapes_pipeline`) built from
  ``torchvision.transforms.v2``, applied to one sample at a time by :class:`TransformDataset`. A v2
  transform called on a *batch* draws **one** set of parameters for the whole batch (every image is
  rotated by the same angle), which is rarely what one wants.

:class:`RepeatedAugmentationSampler` puts each index several times into a batch so that the batch holds
several differently augmented copies of the same image (Hoffer et al., 2020; Berman et al., 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.ops import roi_align
from torchvision.transforms import v2

__all__ = [
    "RepeatedAugmentationSampler",
    "TransformDataset",
    "cutmix",
    "cutout",
    "digits_pipeline",
    "mixup",
    "random_flip",
    "random_resized_crop",
    "random_translate",
    "resized_crop",
    "shapes_pipeline",
    "translate",
]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_images(x: Any, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a float Tensor[N, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (images in [0, 1]), got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W], got {tuple(x.shape)}")


def _check_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_probability(p: Any, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_range(r: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {r!r}") from None
    if not low < a <= b <= high:
        raise ValueError(f"{name} must satisfy {low} < min <= max <= {high}, got {r!r}")
    return a, b


def _check_generator(generator: Any) -> torch.device:
    """The device on which random parameters are drawn: the generator's, or the CPU."""
    if generator is None:
        return torch.device("cpu")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator.device


def _size_pair(size: Any, name: str = "size") -> tuple[int, int]:
    hw = tuple(size) if isinstance(size, tuple | list) else (size, size)
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in hw):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """``Tensor[n]`` (float64) uniform in [low, high), on the generator's device."""
    dev = _check_generator(generator)
    return low + (high - low) * torch.rand(n, generator=generator, device=dev, dtype=torch.float64)


def _beta(n: int, alpha: float, generator: torch.Generator | None) -> Tensor:
    """``Tensor[n]`` (float64) of Beta(alpha, alpha) draws, as G1 / (G1 + G2) with Gamma(alpha) draws.

    ``torch.distributions.Beta`` cannot take a generator, ``torch._standard_gamma`` can.
    """
    dev = _check_generator(generator)
    conc = torch.full((2, n), float(alpha), dtype=torch.float64, device=dev)
    g = torch._standard_gamma(conc, generator=generator)
    return g[0] / (g[0] + g[1]).clamp_min(torch.finfo(torch.float64).tiny)


def _one_hot(y: Tensor, num_classes: int | None, n: int, dtype: torch.dtype) -> Tensor:
    """Integer labels ``[N]`` (with ``num_classes``) or soft labels ``[N, K]`` as float ``[N, K]``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a Tensor of labels [N] or soft labels [N, K], got {type(y).__name__}")
    if y.shape[:1] != (n,):
        raise ValueError(f"y must have one label per image ({n}), got shape {tuple(y.shape)}")
    if y.ndim == 1 and not y.is_floating_point() and y.dtype != torch.bool:
        if num_classes is None:
            raise ValueError("num_classes is needed to one-hot encode integer labels y")
        _check_int(num_classes, "num_classes", 1)
        if n and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"labels y must lie in [0, num_classes={num_classes}), got [{y.min().item()}, {y.max().item()}]"
            )
        return torch.nn.functional.one_hot(y, num_classes).to(dtype)
    if y.ndim == 2 and y.is_floating_point():
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"soft labels y have {y.shape[1]} classes, num_classes is {num_classes}")
        return y.to(dtype)
    raise ValueError(
        f"y must be int64 labels [N] or float soft labels [N, K], got {y.dtype} of shape {tuple(y.shape)}"
    )


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def translate(x: Tensor, shifts: Tensor) -> Tensor:
    """Move each image by its own whole number of pixels, filling the uncovered border with 0.

    ``out[n, :, i, j] = x[n, :, i - dy_n, j - dx_n]`` where that pixel exists, else 0: a positive ``dy``
    moves the content down, a positive ``dx`` to the right. Equals ``torch.roll`` by ``(dy, dx)`` with
    the wrapped-around rows and columns set to 0.

    Args:
        x: images ``Tensor[N, C, H, W]`` (floating point).
        shifts: ``Tensor[N, 2]`` of integer ``(dy, dx)`` per image (any device; moved to ``x``'s).
    Returns:
        ``Tensor[N, C, H, W]``, on the device and dtype of ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    if not isinstance(shifts, Tensor):
        raise TypeError(f"shifts must be an integer Tensor[N, 2], got {type(shifts).__name__}")
    if shifts.is_floating_point() or shifts.is_complex() or shifts.dtype == torch.bool:
        raise TypeError(f"shifts must hold whole pixels (an integer dtype), got {shifts.dtype}")
    n, c, h, w = x.shape
    if tuple(shifts.shape) != (n, 2):
        raise ValueError(f"shifts must have shape [N, 2] = [{n}, 2] (dy, dx), got {tuple(shifts.shape)}")
    shifts = shifts.to(x.device, torch.int64)
    rows = torch.arange(h, device=x.device) - shifts[:, :1]  # [N, H]: source row of each output row
    cols = torch.arange(w, device=x.device) - shifts[:, 1:]  # [N, W]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # [N, H, W]
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    # out[n, ch, i, j] = x[n, ch, rows[n, i], cols[n, j]]: four broadcast index tensors, no loop
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = x[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    return torch.where(valid[:, None], out, torch.zeros((), dtype=x.dtype, device=x.device))


def random_translate(x: Tensor, max_shift: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Move each image by a random whole number of pixels, ``dy, dx`` uniform in ``[-max_shift, max_shift]``.

    The shifts are ``torch.randint(-max_shift, max_shift + 1, (N, 2), generator=generator)`` (drawn on
    the generator's device), then :func:`translate`; the uncovered border is filled with 0 (the
    background of the digits).

    Args:
        x: images ``Tensor[N, C, H, W]``.
        max_shift: largest shift in pixels (>= 0; 0 returns a copy).
        generator: source of randomness (default: PyTorch's global generator).
    Returns:
        ``Tensor[N, C, H, W]`` like ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    _check_int(max_shift, "max_shift", 0)
    dev = _check_generator(generator)
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 2), generator=generator, device=dev)
    return translate(x, shifts)


def random_flip(
    x: Tensor, p: float = 0.5, *, direction: str = "horizontal", generator: torch.Generator | None = None
) -> Tensor:
    """Mirror each image with probability ``p``, independently per image.

    Only for data whose labels do not change under the mirror: right for the shapes or for photos of
    cats, wrong for digits and text (a mirrored 2 is not a 2).

    Args:
        x: images ``Tensor[N, C, H, W]``.
        p: probability of flipping an image, in [0, 1].
        direction: ``"horizontal"`` (left-right, the last axis) or ``"vertical"`` (up-down).
        generator: source of randomness; the draw is ``torch.rand(N, generator=generator) < p``.
    Returns:
        ``Tensor[N, C, H, W]`` like ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    p = _check_probability(p)
    if direction not in ("horizontal", "vertical"):
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
    dev = _check_generator(generator)
    flip = (torch.rand(x.shape[0], generator=generator, device=dev) < p).to(x.device)
    flipped = x.flip(-1 if direction == "horizontal" else -2)
    return torch.where(flip[:, None, None, None], flipped, x)


def resized_crop(x: Tensor, boxes: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Cut a box out of each image and resize it to ``size`` with bilinear interpolation.

    Boxes are ``(x1, y1, x2, y2)`` in pixels, in the course's continuous convention (pixel ``j`` covers
    ``[j, j + 1)``, so a box ``(0, 0, W, H)`` is the whole image) and may have fractional corners. Each
    output pixel is one bilinear sample of the input at the centre of its cell of the box (values
    beyond the image's last pixel centre repeat its border), which is ``torchvision.ops.roi_align``
    with ``aligned=True, sampling_ratio=1``. For whole-pixel boxes at least as large as the output it
    equals ``torchvision.transforms.v2.functional.resized_crop(..., antialias=False)``; when a box is
    enlarged, the samples near its edge blend in the pixels just outside it (the image goes on there),
    where torchvision's crop-then-resize repeats the crop's edge pixels. Without antialiasing, strong
    down-scaling aliases: keep boxes at most about twice the output size.

    Args:
        x: images ``Tensor[N, C, H, W]``.
        boxes: ``Tensor[N, 4]`` floating point, one box per image.
        size: output size, an int or ``(height, width)``.
    Returns:
        ``Tensor[N, C, height, width]`` on the device and dtype of ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    oh, ow = _size_pair(size)
    if not isinstance(boxes, Tensor) or not boxes.is_floating_point():
        got = boxes.dtype if isinstance(boxes, Tensor) else type(boxes).__name__
        raise TypeError(f"boxes must be a floating Tensor[N, 4] (x1, y1, x2, y2), got {got}")
    n = x.shape[0]
    if tuple(boxes.shape) != (n, 4):
        raise ValueError(f"boxes must have shape [N, 4] = [{n}, 4], got {tuple(boxes.shape)}")
    if n == 0:
        return x.new_zeros(0, x.shape[1], oh, ow)
    if not torch.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any():
        raise ValueError("boxes must be finite with x2 > x1 and y2 > y1")
    rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes.to(x)], dim=1)
    return roi_align(x, rois, (oh, ow), spatial_scale=1.0, sampling_ratio=1, aligned=True)


def random_resized_crop(
    x: Tensor,
    size: int | tuple[int, int],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inception-style random crop: a random area and aspect ratio per image, resized to ``size``.

    Per image, the area fraction is uniform in ``scale`` and the log aspect ratio (width / height) is
    uniform in ``log(ratio)``; a box of that area and shape is placed uniformly inside the image and
    cut out with :func:`resized_crop`. Unlike ``torchvision.transforms.v2.RandomResizedCrop`` the box
    corners are not rounded to whole pixels, and a box wider or taller than the image is shrunk to fit
    instead of being re-drawn (no rejection loop, so it stays vectorized).

    Args:
        x: images ``Tensor[N, C, H, W]``.
        size: output size, an int or ``(height, width)``.
        scale: range of the box area as a fraction of the image area, within (0, 1].
        ratio: range of the aspect ratio width / height, positive.
        generator: source of randomness.
    Returns:
        ``Tensor[N, C, height, width]`` like ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    _size_pair(size)
    s_lo, s_hi = _check_range(scale, "scale", 0.0, 1.0)
    r_lo, r_hi = _check_range(ratio, "ratio", 0.0, math.inf)
    n, _, h, w = x.shape
    area = _uniform(n, s_lo, s_hi, generator) * (h * w)
    aspect = torch.exp(_uniform(n, math.log(r_lo), math.log(r_hi), generator))
    bw = torch.sqrt(area * aspect).clamp(max=w)
    bh = torch.sqrt(area / aspect).clamp(max=h)
    x1 = _uniform(n, 0.0, 1.0, generator) * (w - bw)
    y1 = _uniform(n, 0.0, 1.0, generator) * (h - bh)
    boxes = torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)
    return resized_crop(x, boxes.to(x.device), size)


def cutout(
    x: Tensor, size: int | tuple[int, int], *, value: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Cutout (DeVries and Taylor, 2017): paint one ``size`` rectangle per image with ``value``.

    The centre of the rectangle is a uniformly random pixel, so near the border only part of the
    rectangle lies inside the image (the paper's choice: the model also sees images with little or
    nothing erased). The rectangle covers rows ``cy - height // 2`` to ``cy - height // 2 + height - 1``
    and likewise for the columns.

    Args:
        x: images ``Tensor[N, C, H, W]``.
        size: the rectangle, an int or ``(height, width)``.
        value: the fill value (0: black).
        generator: source of randomness; centres are ``torch.randint`` draws of rows then columns.
    Returns:
        ``Tensor[N, C, H, W]`` like ``x``.

    Introduced in chapter 05.
    """
    _check_images(x)
    eh, ew = _size_pair(size)
    n, _, h, w = x.shape
    dev = _check_generator(generator)
    cy = torch.randint(0, h, (n, 1), generator=generator, device=dev).to(x.device)
    cx = torch.randint(0, w, (n, 1), generator=generator, device=dev).to(x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    top, left = cy - eh // 2, cx - ew // 2
    in_rows = (rows >= top) & (rows < top + eh)  # [N, H]
    in_cols = (cols >= left) & (cols < left + ew)  # [N, W]
    erase = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return torch.where(erase, torch.tensor(value, dtype=x.dtype, device=x.device), x)


# --------------------------------------------------------------------------------------------
# label mixing
# --------------------------------------------------------------------------------------------
def _check_mix_args(x: Tensor, alpha: float, per_batch: bool) -> None:
    _check_images(x)
    if not isinstance(per_batch, bool):
        raise TypeError(f"per_batch must be a bool, got {type(per_batch).__name__}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (Beta(alpha, alpha)), got {alpha!r}")


def mixup(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 0.2,
    num_classes: int | None = None,
    per_batch: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""MixUp (Zhang et al., 2018): blend every image and its label with a random partner's.

    With a random permutation :math:`\pi` of the batch and :math:`\lambda_i \sim \mathrm{Beta}(\alpha,
    \alpha)`,

    .. math::
        \tilde x_i = \lambda_i x_i + (1 - \lambda_i)\,x_{\pi(i)}, \qquad
        \tilde y_i = \lambda_i y_i + (1 - \lambda_i)\,y_{\pi(i)},

    with labels as one-hot (or already soft) vectors, so every mixed label sums to 1. Train with the
    cross-entropy on soft targets (``F.cross_entropy(logits, y_soft)``). By default :math:`\lambda_i`
    is drawn per image (timm's ``mode="elem"``). The paper's code draws **one** :math:`\lambda` for the
    whole batch, as do timm's default ``mode="batch"`` and ``torchvision.transforms.v2.MixUp``;
    ``per_batch=True`` does that.

    Args:
        x: images ``Tensor[N, C, H, W]``.
        y: labels ``Tensor[N]`` (int64, with ``num_classes``) or soft labels ``Tensor[N, K]``.
        alpha: the Beta parameter (> 0); small values keep most images close to one of the two.
        num_classes: number of classes, for integer labels.
        per_batch: one :math:`\lambda` shared by the batch (the paper) instead of one per image.
        generator: source of randomness (the permutation, then the Beta draws).
    Returns:
        ``(x_mixed, y_mixed)``: ``Tensor[N, C, H, W]`` and ``Tensor[N, K]`` in ``x``'s dtype and device.

    Introduced in chapter 05.
    """
    _check_mix_args(x, alpha, per_batch)
    n = x.shape[0]
    y1 = _one_hot(y, num_classes, n, x.dtype).to(x.device)
    dev = _check_generator(generator)
    perm = torch.randperm(n, generator=generator, device=dev).to(x.device)
    lam = _beta(1 if per_batch else n, alpha, generator).expand(n).to(x.device, x.dtype)
    x_mixed = torch.lerp(x[perm], x, lam[:, None, None, None])  # lam * x + (1 - lam) * x[perm]
    y_mixed = torch.lerp(y1[perm], y1, lam[:, None])
    return x_mixed, y_mixed


def cutmix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    num_classes: int | None = None,
    per_batch: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""CutMix (Yun et al., 2019): paste a rectangle of a random partner into every image.

    Per image (or, with ``per_batch=True``, once for the whole batch, as the paper's code and
    ``torchvision.transforms.v2.CutMix`` do) a :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` and a
    centre are drawn; :math:`\lambda` sets the rectangle's sides to
    ``round(H sqrt(1 - lambda))`` by ``round(W sqrt(1 - lambda))``; its centre is a uniformly random
    pixel and the part outside the image is cut off. The label weight is then the **exact** fraction of
    pixels that still belong to the image, :math:`\lambda_i = 1 - \text{pasted pixels} / (HW)`, and
    :math:`\tilde y_i = \lambda_i y_i + (1 - \lambda_i) y_{\pi(i)}`.

    Args:
        x: images ``Tensor[N, C, H, W]``.
        y: labels ``Tensor[N]`` (int64, with ``num_classes``) or soft labels ``Tensor[N, K]``.
        alpha: the Beta parameter (> 0); 1 gives a uniform :math:`\lambda`.
        num_classes: number of classes, for integer labels.
        per_batch: one rectangle (size and position) for the whole batch instead of one per image.
        generator: source of randomness (the permutation, the Beta draws, then the centres).
    Returns:
        ``(x_mixed, y_mixed)``: ``Tensor[N, C, H, W]`` and ``Tensor[N, K]`` in ``x``'s dtype and device.

    Introduced in chapter 05.
    """
    _check_mix_args(x, alpha, per_batch)
    n, _, h, w = x.shape
    y1 = _one_hot(y, num_classes, n, x.dtype).to(x.device)
    dev = _check_generator(generator)
    perm = torch.randperm(n, generator=generator, device=dev).to(x.device)
    k = 1 if per_batch else n  # number of independent draws
    cut = torch.sqrt(1.0 - _beta(k, alpha, generator)).expand(n)  # side of the pasted box as a fraction
    bh, bw = torch.round(cut * h).long().to(x.device), torch.round(cut * w).long().to(x.device)
    cy = torch.randint(0, h, (k,), generator=generator, device=dev).expand(n).to(x.device)
    cx = torch.randint(0, w, (k,), generator=generator, device=dev).expand(n).to(x.device)
    y1_, x1_ = (cy - bh // 2).clamp(0, h), (cx - bw // 2).clamp(0, w)
    y2_, x2_ = (cy - bh // 2 + bh).clamp(0, h), (cx - bw // 2 + bw).clamp(0, w)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= y1_[:, None]) & (rows < y2_[:, None])  # [N, H]
    in_cols = (cols >= x1_[:, None]) & (cols < x2_[:, None])  # [N, W]
    paste = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # [N, 1, H, W]
    x_mixed = torch.where(paste, x[perm], x)
    lam = 1.0 - ((y2_ - y1_) * (x2_ - x1_)).to(x.dtype) / (h * w)  # exact fraction of own pixels
    y_mixed = torch.lerp(y1[perm], y1, lam[:, None])
    return x_mixed, y_mixed


# --------------------------------------------------------------------------------------------
# repeated augmentation and datasets
# --------------------------------------------------------------------------------------------
class RepeatedAugmentationSampler(Sampler[int]):
    """Indices of a random permutation, each repeated ``num_repeats`` times in a row.

    With a ``DataLoader`` whose batch size is a multiple of ``num_repeats``, every batch holds
    ``batch_size / num_repeats`` distinct images, each ``num_repeats`` times; a random per-sample
    augmentation (:class:`TransformDataset`, or a batch function in the ``collate_fn``) makes the copies
    differ. This is repeated augmentation (Hoffer et al., 2020; Berman et al., 2019), used by DeiT.
    The epoch has ``num_samples`` indices: by default every image ``num_repeats`` times; set
    ``num_samples=len(dataset)`` to keep the number of steps per epoch of ordinary shuffling (each
    epoch then sees only a ``1 / num_repeats`` share of the images, as DeiT's sampler does per process).

    Args:
        data_source: a sized dataset, or its length as an int.
        num_repeats: copies of each index (>= 1).
        num_samples: indices per epoch (default ``len(data_source) * num_repeats``), at most that.
        generator: source of randomness for the permutations (a new one each epoch).

    Introduced in chapter 05.
    """

    def __init__(
        self,
        data_source: Sized | int,
        num_repeats: int = 2,
        *,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(data_source, int) and not isinstance(data_source, bool):
            n = data_source
        elif isinstance(data_source, Sized):
            n = len(data_source)
        else:
            raise TypeError(
                f"data_source must be a sized dataset or an int, got {type(data_source).__name__}"
            )
        self.n = _check_int(n, "len(data_source)", 1)
        self.num_repeats = _check_int(num_repeats, "num_repeats", 1)
        total = self.n * self.num_repeats
        if num_samples is None:
            num_samples = total
        _check_int(num_samples, "num_samples", 1)
        if num_samples > total:
            raise ValueError(
                f"num_samples must be <= len(data_source) * num_repeats = {total}, got {num_samples}"
            )
        self.num_samples = num_samples
        _check_generator(generator)
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.n, generator=self.generator, device=_check_generator(self.generator))
        yield from perm.repeat_interleave(self.num_repeats)[: self.num_samples].tolist()

    def __len__(self) -> int:
        return self.num_samples


class TransformDataset(Dataset):
    """A dataset that applies a transform to every input (and optionally to every target) it returns.

    Use it to give each sample its own random augmentation in a ``DataLoader``: a
    ``torchvision.transforms.v2`` pipeline called on one image draws parameters for that image only.
    The wrapped dataset must return ``(input, target)`` pairs.

    Args:
        dataset: any map-style dataset of ``(input, target)`` pairs (e.g. a ``TensorDataset``).
        transform: callable applied to each input, e.g. :func:`digits_pipeline` ``()``; ``None`` keeps it.
        target_transform: callable applied to each target; ``None`` keeps it.

    Introduced in chapter 05.
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style Dataset, got {type(dataset).__name__}")
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.dataset, self.transform, self.target_transform = dataset, transform, target_transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        item = self.dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(
                f"the wrapped dataset must return (input, target) pairs, got {type(item).__name__}"
            )
        x, y = item
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return x, y


# --------------------------------------------------------------------------------------------
# torchvision pipelines for the course's data
# --------------------------------------------------------------------------------------------
def _check_randaugment(randaugment: Any) -> tuple[int, int] | None:
    if randaugment is None:
        return None
    try:
        num_ops, magnitude = randaugment
    except (TypeError, ValueError):
        raise ValueError(f"randaugment must be None or (num_ops, magnitude), got {randaugment!r}") from None
    _check_int(num_ops, "randaugment num_ops", 1)
    _check_int(magnitude, "randaugment magnitude", 0)
    if magnitude > 30:
        raise ValueError(f"randaugment magnitude must be in [0, 30], got {magnitude}")
    return num_ops, magnitude


def digits_pipeline(
    *,
    degrees: float = 10.0,
    max_shift: float = 1.0,
    scale: tuple[float, float] = (0.9, 1.1),
    randaugment: tuple[int, int] | None = None,
    size: int = 8,
) -> v2.Compose:
    """A per-image augmentation for the digits (``Tensor[1, size, size]`` in [0, 1], background 0).

    By default a small random affine map (rotation up to ``degrees``, shift up to ``max_shift`` pixels,
    zoom in ``scale``, bilinear, zero fill) that keeps a digit a digit. With ``randaugment=(n, m)`` it
    is ``v2.RandAugment(num_ops=n, magnitude=m)`` instead, with zero fill. No flips: a mirrored digit
    is a different symbol.

    Args:
        degrees: largest rotation in degrees (>= 0).
        max_shift: largest shift in pixels (>= 0).
        scale: zoom range.
        randaugment: ``None`` or ``(num_ops, magnitude)`` with magnitude in [0, 30].
        size: side of the images, for converting ``max_shift`` into a fraction.
    Returns:
        a ``torchvision.transforms.v2.Compose`` for one image (apply it per sample with
        :class:`TransformDataset`).

    Introduced in chapter 05.
    """
    ra = _check_randaugment(randaugment)
    if ra is not None:
        return v2.Compose([v2.RandAugment(num_ops=ra[0], magnitude=ra[1], fill=0.0)])
    if not degrees >= 0 or not max_shift >= 0:
        raise ValueError(f"degrees and max_shift must be >= 0, got {degrees} and {max_shift}")
    _check_int(size, "size", 1)
    s_lo, s_hi = _check_range(scale, "scale", 0.0, math.inf)
    frac = min(max_shift / size, 1.0)
    return v2.Compose(
        [
            v2.RandomAffine(
                degrees=degrees,
                translate=(frac, frac),
                scale=(s_lo, s_hi),
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=0.0,
            )
        ]
    )


def shapes_pipeline(
    size: int,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = True,
    jitter: float = 0.2,
    randaugment: tuple[int, int] | None = None,
) -> v2.Compose:
    """A per-image augmentation for the coloured shapes (``Tensor[3, S, S]`` in [0, 1]).

    A random resized crop to ``size`` (area fraction in ``scale``, antialiased), a horizontal flip, and a
    brightness/contrast jitter of ``jitter``; with ``randaugment=(n, m)``, ``v2.RandAugment`` follows.
    The jitter leaves hue alone, since colour names are labels in the shapes' captions; RandAugment's
    solarize, posterize and colour operations can change colours, so leave it off where colour is a label.

    Args:
        size: output side in pixels.
        scale: area range of the crop (keep the lower end high enough that objects stay in view).
        flip: add ``RandomHorizontalFlip``.
        jitter: brightness and contrast factors in ``[1 - jitter, 1 + jitter]`` (0 turns it off).
        randaugment: ``None`` or ``(num_ops, magnitude)`` with magnitude in [0, 30].
    Returns:
        a ``torchvision.transforms.v2.Compose`` for one image.

    Introduced in chapter 05.
    """
    _check_int(size, "size", 1)
    s_lo, s_hi = _check_range(scale, "scale", 0.0, 1.0)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    ra = _check_randaugment(randaugment)
    steps: list[Callable] = [v2.RandomResizedCrop(size, scale=(s_lo, s_hi), antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter))
    if ra is not None:
        steps.append(v2.RandAugment(num_ops=ra[0], magnitude=ra[1], fill=0.0))
    return v2.Compose(steps)
