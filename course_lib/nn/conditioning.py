"""Conditioning a denoiser on the timestep, a class label or a text prompt (chapters 11-12).

- :func:`timestep_embedding`: the sinusoidal features of an integer step (Vaswani et al., 2017's
  positional encoding, used for ``t`` by DDPM);
- :class:`TimeEmbedding`: those features through a small MLP;
- :class:`ResBlock`: a pre-activation residual block that adds a projection of the embedding to its
  feature maps (DDPM/ADM style);
- :class:`SpatialCrossAttention`: every pixel of a feature map attends to the tokens of a prompt
  (:class:`~course_lib.nn.attention.CrossAttention`), with a residual connection;
- :class:`ConditionalUNet`: chapter 07's :class:`~course_lib.nn.dense.UNet` extended with these: a
  small U-Net for 8×8 or 16×16 images conditioned on ``t``, optionally on a class label (with a
  "null" label for classifier-free guidance) and optionally on prompt tokens by cross-attention;
- :func:`add_input_channels`: GLIDE's inpainting trick, extra input channels whose weights start at
  zero, so a trained model's output is unchanged until fine-tuning moves them.

Introduced in chapter 11.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention
from .blocks import _check_channels, norm_layer

__all__ = [
    "ConditionalUNet",
    "ResBlock",
    "SpatialCrossAttention",
    "TimeEmbedding",
    "add_input_channels",
    "timestep_embedding",
]


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of the steps ``t``: ``[cos(t ω_k), sin(t ω_k)]`` with
    ``ω_k = max_period^(−k / (dim/2))``, ``k = 0 .. dim/2 − 1`` (a zero column is appended for odd
    ``dim``).

    Nearby steps get nearby features and every frequency is a smooth function of ``t``, so a network
    can read both coarse and fine position from it.

    Args:
        t: ``Tensor[B]`` steps (int or float).
        dim: number of features.
    Returns:
        ``Tensor[B, dim]`` float32 (float64 if ``t`` is float64), on ``t``'s device.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be a Tensor[B], got {getattr(t, 'shape', type(t).__name__)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimeEmbedding(nn.Module):
    """``timestep_embedding(t, dim)`` → Linear → SiLU → Linear: ``Tensor[B]`` → ``Tensor[B, out_dim]``."""

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or 4 * dim
        _check_channels(dim=dim, out_dim=out_dim)
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """Norm → SiLU → 3×3 conv, plus a projection of the embedding ``e`` added to every pixel,
    → norm → SiLU → 3×3 conv (zero-initialized, so a new block starts as its skip path), plus the
    skip (a 1×1 conv when the channels change).

    Shapes: ``x: Tensor[B, in_channels, H, W]``, ``emb: Tensor[B, emb_dim]`` →
    ``Tensor[B, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, norm: str = "group") -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels, emb_dim=emb_dim)
        self.norm1 = norm_layer(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_channels)
        self.norm2 = norm_layer(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialCrossAttention(nn.Module):
    """Each pixel of a feature map attends to the tokens of a context: ``x + Attn(norm(x), context)``.

    Shapes: ``x: Tensor[B, C, H, W]``, ``context: Tensor[B, L, context_dim]``, ``key_padding_mask``
    ``Tensor[B, L]`` bool (True = ignore) → ``Tensor[B, C, H, W]``; with ``return_weights`` also the
    attention ``Tensor[B, heads, H·W, L]`` (reshape to ``[B, heads, H, W, L]`` to see maps per token).
    """

    def __init__(self, channels: int, context_dim: int, *, num_heads: int = 1, norm: str = "group") -> None:
        super().__init__()
        self.norm = norm_layer(norm, channels)
        self.attn = CrossAttention(channels, context_dim, num_heads=num_heads)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        *,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ):
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, H·W, C]
        out = self.attn(tokens, context, key_padding_mask=key_padding_mask, return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        y = x + out.transpose(1, 2).reshape(b, c, h, w)
        return (y, weights) if return_weights else y


class ConditionalUNet(nn.Module):
    """A small denoising U-Net conditioned on the step ``t``, a class label and/or prompt tokens.

    Like :class:`~course_lib.nn.dense.UNet` (chapter 07): an encoder that halves the resolution
    between levels, a decoder that doubles it, and skip connections that concatenate encoder
    features; but its units are :class:`ResBlock` s that receive an embedding ``e = TimeEmbedding(t)
    + ClassEmbedding(y)``, its convolutions use GroupNorm (batch statistics would mix the noise levels
    of a batch), it downsamples with stride-2 convolutions, and its output layer starts at zero.

    Args:
        in_channels: image channels.
        widths: channels per level, finest first (the resolution halves between levels).
        num_classes: if given, the model takes labels ``y`` in ``0..num_classes`` where
            ``num_classes`` itself (:attr:`null_class`) means "no label" (classifier-free guidance).
        context_dim: if given, the bottleneck has a :class:`SpatialCrossAttention` to prompt tokens
            ``context: Tensor[B, L, context_dim]``.
        vocab_size: if given (with ``context_dim``), the model embeds token ids
            ``Tensor[B, L]`` itself (``nn.Embedding(vocab_size, context_dim)``).
        out_channels: defaults to ``in_channels`` (the predicted noise).
        emb_dim: the width of the sinusoidal features (the embedding MLP has ``4 · emb_dim``).
        num_heads: heads of the cross-attention.
    Shapes:
        ``forward(x: Tensor[B, C, H, W], t: Tensor[B], y: Tensor[B] | None, context=None,
        context_mask=None)`` → ``Tensor[B, out_channels, H, W]``; ``H`` and ``W`` divisible by
        ``2 ** (len(widths) - 1)``.

    Introduced in chapter 11.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64),
        *,
        num_classes: int | None = None,
        context_dim: int | None = None,
        vocab_size: int | None = None,
        out_channels: int | None = None,
        emb_dim: int = 32,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 1:
            raise ValueError(f"widths needs at least one level, got {widths}")
        out_channels = in_channels if out_channels is None else out_channels
        _check_channels(in_channels=in_channels, out_channels=out_channels, emb_dim=emb_dim)
        for i, w in enumerate(widths):
            _check_channels(**{f"widths[{i}]": w})
        if num_classes is not None:
            _check_channels(num_classes=num_classes)
        if vocab_size is not None and context_dim is None:
            raise ValueError("vocab_size needs context_dim (the width of the token embeddings)")
        self.widths, self.factor = widths, 2 ** (len(widths) - 1)
        self.num_classes, self.context_dim = num_classes, context_dim
        e = 4 * emb_dim
        self.time = TimeEmbedding(emb_dim, e)
        self.label = nn.Embedding(num_classes + 1, e) if num_classes is not None else None
        self.tokens = nn.Embedding(vocab_size, context_dim) if vocab_size is not None else None
        self.inp = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = widths[0]
        for i, w in enumerate(widths):
            self.down.append(ResBlock(prev, w, e))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            prev = w
        self.mid = ResBlock(prev, prev, e)
        self.cross = SpatialCrossAttention(prev, context_dim, num_heads=num_heads) if context_dim else None
        self.mid2 = ResBlock(prev, prev, e) if context_dim else None
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.upsample.append(nn.Conv2d(prev, w, 3, padding=1))
            self.up.append(ResBlock(2 * w, w, e))
            prev = w
        self.out_norm = norm_layer("group", prev)
        self.out = nn.Conv2d(prev, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (the unconditional model of classifier-free guidance)."""
        if self.num_classes is None:
            raise AttributeError("this model has no class conditioning")
        return self.num_classes

    def embed(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding ``Tensor[B, 4 · emb_dim]`` that every :class:`ResBlock` receives."""
        e = self.time(t)
        if self.label is not None:
            if y is None:
                raise ValueError(
                    f"this model is class-conditional: pass y (use {self.num_classes} for no label)"
                )
            if y.shape != t.shape:
                raise ValueError(f"y must be Tensor[B] like t {tuple(t.shape)}, got {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(f"y must lie in 0..{self.num_classes} ({self.num_classes} = no label)")
            e = e + self.label(y)
        elif y is not None:
            raise ValueError("this model has no class conditioning (num_classes=None) but y was given")
        return e

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        *,
        return_weights: bool = False,
    ):
        if x.ndim != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"x must be Tensor[B, C, H, W] with H and W divisible by {self.factor}, got {tuple(x.shape)}"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must be Tensor[B] with B = {x.shape[0]}, got {tuple(t.shape)}")
        e = self.embed(t, y)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.mid(h, e)
        weights = None
        if self.cross is not None:
            if context is None:
                raise ValueError("this model has cross-attention: pass context (token ids or embeddings)")
            if self.tokens is not None:
                if context.dtype not in (torch.int64, torch.int32) or context.ndim != 2:
                    raise ValueError(
                        f"context must be token ids Tensor[B, L], got {context.dtype} {tuple(context.shape)}"
                    )
                context = self.tokens(context)
            h = self.cross(h, context, key_padding_mask=context_mask, return_weights=return_weights)
            h, weights = h if return_weights else (h, None)
            h = self.mid2(h, e)
        elif context is not None:
            raise ValueError("this model has no cross-attention (context_dim=None) but context was given")
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips), strict=True):
            h = upsample(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = block(torch.cat([skip, h], dim=1), e)
        out = self.out(F.silu(self.out_norm(h)))
        return (out, weights) if return_weights else out


def add_input_channels(conv: nn.Conv2d, extra: int) -> nn.Conv2d:
    """A copy of ``conv`` that takes ``extra`` more input channels, whose weights are zero.

    GLIDE (Nichol et al., 2022) fine-tunes a text-to-image model for inpainting by feeding it the
    masked image and the mask as extra channels; starting their weights at zero makes the new model
    compute exactly the old function at the first step, whatever the extra channels hold.

    Args:
        conv: the first convolution of a trained model (``groups=1``).
        extra: number of channels to add.
    Returns:
        a new ``nn.Conv2d`` with ``in_channels + extra`` inputs (the old weights copied).
    """
    _check_channels(extra=extra)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"conv must be an nn.Conv2d with groups=1, got {conv!r}")
    new = nn.Conv2d(
        conv.in_channels + extra,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
