"""Autoregressive image models: masked convolutions and PixelCNN (chapter 09).

An autoregressive model writes the density of an image as a product of conditionals in raster order
(row by row, left to right),

.. math::
    p(x) = \\prod_{i=1}^{HW} p(x_i \\mid x_1, \\dots, x_{i-1}),

and computes all ``HW`` conditionals in one pass with convolutions whose kernels are masked so that
the output at pixel ``i`` never sees pixel ``i`` or any later one (van den Oord et al., 2016).
Training is parallel; sampling is sequential (one pass per pixel).

The masks here are spatial: the channels of one pixel are treated as one unit (every channel of the
current pixel is hidden by a type-"A" mask), so for a multi-channel image the channels of a pixel are
predicted independently given the earlier pixels. The chapters use single-channel digits.

Chapter 13's Image Transformer reuses :func:`discretize` and :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MASK_TYPES",
    "MaskedConv2d",
    "PixelCNN",
    "bits_per_dim",
    "causal_mask",
    "discretize",
    "input_dependencies",
]

#: The two masks of PixelCNN: "A" hides the centre pixel (first layer), "B" lets it through (later layers).
MASK_TYPES = ("A", "B")


def _check_kernel(kernel_size: int) -> None:
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, int)
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            f"kernel_size must be a positive odd int (the mask needs a centre), got {kernel_size!r}"
        )


def _check_mask_type(mask_type: str) -> None:
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")


def causal_mask(kernel_size: int, mask_type: str, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``k × k`` mask of a causal (raster-order) convolution.

    Ones on every row above the centre and, on the centre row, left of the centre; the centre itself
    is one for type ``"B"`` and zero for type ``"A"``; zeros everywhere after it::

        type A, k = 3      type B, k = 3
        1 1 1              1 1 1
        1 0 0              1 1 0
        0 0 0              0 0 0

    Args:
        kernel_size: an odd ``k >= 1``.
        mask_type: ``"A"`` (the first layer: the output at a pixel must not see that pixel's input) or
            ``"B"`` (later layers: the feature at a pixel already summarizes only earlier pixels).
        dtype: the mask's dtype.
    Returns:
        ``Tensor[k, k]`` of zeros and ones.

    Introduced in chapter 09.
    """
    _check_kernel(kernel_size)
    _check_mask_type(mask_type)
    k, c = kernel_size, kernel_size // 2
    mask = torch.zeros(k, k, dtype=dtype)
    mask[:c] = 1
    mask[c, :c] = 1
    if mask_type == "B":
        mask[c, c] = 1
    return mask


class MaskedConv2d(nn.Conv2d):
    """A stride-1 "same" convolution whose kernel is multiplied by :func:`causal_mask` on every call.

    The mask is a buffer (it follows ``.to()``), so the masked weights get zero gradient and stay
    irrelevant whatever the optimizer does to them.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: an odd ``k``; the padding is ``k // 2``, so the size is kept.
        mask_type: ``"A"`` or ``"B"`` (see :func:`causal_mask`).
        bias: add a bias (a bias never leaks information).
    Shapes:
        ``Tensor[N, in_channels, H, W]`` → ``Tensor[N, out_channels, H, W]``.

    Introduced in chapter 09.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str, *, bias: bool = True
    ) -> None:
        _check_kernel(kernel_size)
        _check_mask_type(mask_type)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(kernel_size, mask_type).expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"


class _ResidualMaskedBlock(nn.Module):
    """ReLU → 1×1 conv (h → h/2) → ReLU → masked k×k type-B conv → ReLU → 1×1 conv (h/2 → h), plus x."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        mid = max(channels // 2, 1)
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, mid, 1),
            nn.ReLU(),
            MaskedConv2d(mid, mid, kernel_size, "B"),
            nn.ReLU(),
            nn.Conv2d(mid, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelCNN(nn.Module):
    """A small PixelCNN with a categorical output over ``levels`` values per pixel.

    Layout (after van den Oord et al., 2016, without the gated two-stack refinement): a masked
    type-"A" ``first_kernel × first_kernel`` convolution, ``num_blocks`` residual blocks whose middle
    convolution is a masked type-"B" ``kernel_size × kernel_size`` one, then two 1×1 convolutions to
    ``levels`` logits per channel. 1×1 convolutions only mix channels of the same pixel, so they keep
    causality after the first layer.

    Args:
        levels: number of discrete values a pixel takes (2 for binary images, 256 for 8-bit ones).
        in_channels: image channels (see the module docstring for multi-channel images).
        hidden: feature channels.
        num_blocks: residual blocks.
        first_kernel, kernel_size: odd kernel sizes of the type-A layer and of the type-B layers.
    Shapes:
        ``forward``: ``Tensor[N, C, H, W]`` → logits ``Tensor[N, levels, C, H, W]``, so that
        ``F.cross_entropy(logits, x_levels)`` is the negative log-likelihood. The input is either the
        integer levels ``0 .. levels-1`` or floats in [0, 1] (the levels divided by ``levels - 1``;
        floats let you differentiate with respect to the input).

    Introduced in chapter 09.
    """

    def __init__(
        self,
        levels: int,
        *,
        in_channels: int = 1,
        hidden: int = 64,
        num_blocks: int = 4,
        first_kernel: int = 7,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        for name, value, low in (("levels", levels, 2), ("in_channels", in_channels, 1), ("hidden", hidden, 1),
                                 ("num_blocks", num_blocks, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.levels, self.in_channels = levels, in_channels
        self.first = MaskedConv2d(in_channels, hidden, first_kernel, "A")
        self.blocks = nn.Sequential(*(_ResidualMaskedBlock(hidden, kernel_size) for _ in range(num_blocks)))
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, levels * in_channels, 1)
        )

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.is_floating_point():
            if x.numel() and not (x.min() >= 0 and x.max() <= 1):
                raise ValueError(
                    f"float x must hold values in [0, 1] (levels / (levels - 1)), got "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]"
                )
            return 2 * x - 1
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"x must hold integer levels or floats in [0, 1], got dtype {x.dtype}")
        self._check_levels(x)
        dtype = self.first.weight.dtype
        return 2 * x.to(dtype) / (self.levels - 1) - 1

    def _check_levels(self, x: torch.Tensor) -> None:
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(f"levels must be an integer tensor, got dtype {x.dtype}")
        if x.numel() and (x.min() < 0 or x.max() >= self.levels):
            raise ValueError(
                f"levels must lie in [0, {self.levels - 1}], got [{int(x.min())}, {int(x.max())}]"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.first(self._as_input(x)))
        logits = self.head(h)
        n, _, hh, ww = logits.shape
        return logits.view(n, self.levels, self.in_channels, hh, ww)

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """The exact negative log-likelihood of each image, in nats.

        Args:
            x: integer levels ``Tensor[N, C, H, W]``.
        Returns:
            ``Tensor[N]``: :math:`-\\sum_i \\log p(x_i \\mid x_{<i})`; divide by ``C·H·W·ln 2``
            (:func:`bits_per_dim`) for bits per dimension.
        """
        self._check_levels(x)
        return F.cross_entropy(self(x), x, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        size: tuple[int, int] = (8, 8),
        *,
        generator: torch.Generator | None = None,
        init: torch.Tensor | None = None,
        start: int = 0,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw images pixel by pixel in raster order (one forward pass per pixel).

        Args:
            num_samples: ``N``.
            size: ``(H, W)``.
            generator: a ``torch.Generator`` on the model's device, for reproducible samples.
            init: integer levels ``Tensor[N, C, H, W]`` whose first ``start`` pixels (raster order) are
                kept: completions of a given top part. Needed when ``start > 0``.
            start: raster index of the first pixel to sample.
            temperature: the logits are divided by it (``< 1`` sharpens).
        Returns:
            integer levels ``Tensor[N, C, H, W]`` (int64) on the model's device.
        """
        h, w = size
        device = self.first.weight.device
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if not 0 <= start <= h * w:
            raise ValueError(f"start must lie in [0, {h * w}], got {start}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        shape = (num_samples, self.in_channels, h, w)
        if init is None:
            if start > 0:
                raise ValueError("start > 0 keeps pixels of init: give init")
            x = torch.zeros(shape, dtype=torch.int64, device=device)
        else:
            if tuple(init.shape) != shape:
                raise ValueError(f"init must have shape {list(shape)}, got {tuple(init.shape)}")
            self._check_levels(init)
            x = init.to(device=device, dtype=torch.int64).clone()
        for i in range(start, h * w):
            r, c = divmod(i, w)
            logits = self(x)[:, :, :, r, c] / temperature  # [N, levels, C]
            probs = logits.softmax(1).permute(0, 2, 1).reshape(-1, self.levels)
            x[:, :, r, c] = torch.multinomial(probs, 1, generator=generator).view(num_samples, -1)
        return x


def input_dependencies(
    model: nn.Module,
    pixel: tuple[int, int],
    size: tuple[int, int] = (8, 8),
    *,
    in_channels: int = 1,
    num_inputs: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """Which input pixels the output at ``pixel`` depends on, read off the gradient.

    Backpropagates the sum of every output channel at ``pixel`` to the input, for a few random inputs
    in [0, 1], and marks the input pixels with a nonzero gradient. This is how the chapter shows that a
    PixelCNN is causal and draws the blind spot of stacked masked convolutions.

    Args:
        model: maps ``Tensor[N, in_channels, H, W]`` (floats) to ``Tensor[N, ..., H, W]``.
        pixel: ``(row, column)`` of the output.
        size: ``(H, W)`` of the input.
        in_channels: input channels.
        num_inputs: random inputs whose absolute gradients are summed (so that a zero by chance, e.g.
            at a ReLU that happens to be off, does not hide a dependency).
        seed: seed of the random inputs.
    Returns:
        ``Tensor[H, W]`` bool, True where the output at ``pixel`` depends on the input.

    Introduced in chapter 09.
    """
    h, w = size
    r, c = pixel
    if not (0 <= r < h and 0 <= c < w):
        raise ValueError(f"pixel must lie inside size {tuple(size)}, got {tuple(pixel)}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.rand(num_inputs, in_channels, h, w, generator=g, dtype=dtype).to(device).requires_grad_(True)
    out = model(x)
    if out.shape[0] != num_inputs or tuple(out.shape[-2:]) != (h, w):
        raise ValueError(f"model must return Tensor[N, ..., {h}, {w}], got {tuple(out.shape)}")
    (grad,) = torch.autograd.grad(out[..., r, c].sum(), x)
    return grad.abs().sum((0, 1)) > 0


def discretize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Map values in [0, 1] to the integer levels ``0 .. levels-1`` (rounding to the nearest level).

    Args:
        x: floats in [0, 1], any shape.
        levels: number of levels (>= 2); ``levels = 2`` binarizes at 0.5.
    Returns:
        int64 tensor of the shape of ``x``.

    Introduced in chapter 09 (the 17 grey levels of the digits).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    if x.numel() and not (x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"x must hold values in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return torch.round(x * (levels - 1)).to(torch.int64)


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int | Sequence[int]) -> torch.Tensor | float:
    """Convert a negative log-likelihood per example, in nats, to bits per dimension.

    .. math::
        \\text{bits/dim} = \\frac{\\text{NLL}_{\\text{nats}}}{D \\ln 2}

    Args:
        nll_nats: NLL of one example (or a tensor of them), in nats.
        dims: ``D``, the number of dimensions of one example, or its shape (e.g. ``(1, 8, 8)``).
    Returns:
        the same type as ``nll_nats``.

    Introduced in chapter 09; used again in chapter 13.
    """
    d = dims if isinstance(dims, int) and not isinstance(dims, bool) else None
    if d is None:
        if (
            isinstance(dims, bool)
            or not isinstance(dims, Sequence)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in dims)
        ):
            raise TypeError(f"dims must be an int or a shape (a sequence of ints), got {dims!r}")
        d = math.prod(dims)
    if d < 1:
        raise ValueError(f"dims must be >= 1, got {dims!r}")
    return nll_nats / (d * math.log(2))
