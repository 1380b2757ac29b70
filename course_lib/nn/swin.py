"""Swin Transformer pieces: windows, the cyclic shift and its mask, relative position bias, patch merging.

Swin (Liu et al., 2021) keeps self-attention but computes it only inside non-overlapping windows of
``M × M`` tokens, so its cost grows linearly with the number of tokens instead of quadratically:

.. math::
    \\Omega(\\mathrm{MSA}) = 4hwC^2 + 2(hw)^2C, \\qquad
    \\Omega(\\mathrm{W\\text{-}MSA}) = 4hwC^2 + 2M^2hwC

(:func:`attention_flops`). Every second block moves the window grid by ``⌊M/2⌋`` tokens so that
information crosses window borders. Instead of padding the shifted grid (more, smaller windows),
the map is rolled cyclically (:func:`cyclic_shift`); a rolled window may then hold tokens from up
to four regions that are not neighbours in the image, and :func:`shifted_window_mask` forbids
attention between them. Inside a window the logits get a learned bias indexed by the relative
offset of the two tokens, read from a ``(2M - 1)² × heads`` table through
:func:`relative_position_index`. :class:`PatchMerging` halves the resolution and doubles the
channels between stages, giving CNN-like feature pyramids.

Self-attention inside a window is :class:`~course_lib.nn.attention.CrossAttention` with the context
equal to the input (the bias and the mask go in as a float ``attn_mask``): this module adds only the
windowing. :func:`swin_t` builds Swin-T with exactly ``torchvision.models.swin_t``'s parameter count.

Tensors are channels-last ``[B, H, W, C]`` between blocks, as in the paper's code and torchvision.

Introduced in chapter 15.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import CrossAttention
from .blocks import DropPath

__all__ = [
    "PatchMerging",
    "Swin",
    "SwinBlock",
    "WindowAttention",
    "attention_flops",
    "cyclic_shift",
    "relative_position_index",
    "shift_regions",
    "shifted_window_mask",
    "swin_t",
    "window_partition",
    "window_reverse",
]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_map(x: torch.Tensor, window: int) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a channels-last Tensor[B, H, W, C], got {getattr(x, 'shape', type(x))}")
    b, h, w, c = x.shape
    if h % window or w % window:
        raise ValueError(f"the map {h}x{w} must be divisible by the window size {window}")
    return b, h, w, c


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut a map into non-overlapping ``window × window`` windows, each flattened to a token sequence.

    Args:
        x: ``Tensor[B, H, W, C]`` with ``H`` and ``W`` multiples of ``window``.
        window: the window side ``M``.
    Returns:
        ``Tensor[B · (H/M) · (W/M), M², C]``: windows image by image, row-major over the window grid,
        tokens row-major inside a window. :func:`window_reverse` undoes it exactly.
    """
    _check_int("window", window)
    b, h, w, c = _check_map(x, window)
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: ``Tensor[B · nW, M², C]`` → ``Tensor[B, H, W, C]``."""
    _check_int("window", window)
    if height % window or width % window:
        raise ValueError(f"the map {height}x{width} must be divisible by the window size {window}")
    nh, nw = height // window, width // window
    if windows.ndim != 3 or windows.shape[1] != window * window or windows.shape[0] % (nh * nw):
        raise ValueError(
            f"windows must be Tensor[B * {nh * nw}, {window * window}, C], got {tuple(windows.shape)}"
        )
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def cyclic_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll a ``Tensor[B, H, W, C]`` map up and left by ``shift`` tokens (``-shift`` rolls it back).

    After the roll, the regular window grid covers what the grid shifted by ``shift`` covers in the
    original map, with the cut-off border strips wrapped around to the far side.
    """
    return torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))


def shift_regions(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Label the (up to) 9 regions of the rolled map whose tokens were neighbours before the roll.

    Along each axis the rolled map splits into ``[0, H - M)``, ``[H - M, H - s)`` and ``[H - s, H)``
    (the last strip is the wrapped border): 3 × 3 regions, ids 0..8 row-major. Two tokens of one
    window may attend to each other only when their ids agree. Returns ``Tensor[H, W]`` (int64).
    """
    for name, v in (("height", height), ("width", width), ("window", window)):
        _check_int(name, v)
    _check_int("shift", shift, 0)
    if not shift < window:
        raise ValueError(f"shift must be smaller than the window ({window}), got {shift}")

    def strips(n: int) -> torch.Tensor:
        ids = torch.zeros(n, dtype=torch.int64)
        if shift:
            ids[n - window : n - shift] = 1
            ids[n - shift :] = 2
        return ids

    return strips(height)[:, None] * 3 + strips(width)[None, :]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Which token pairs of each rolled window may attend (True), for shifted-window attention.

    Returns:
        ``Tensor[nW, M², M²]`` bool, ``nW = (H/M)(W/M)`` windows in :func:`window_partition`'s order;
        all True when ``shift == 0``.
    """
    ids = shift_regions(height, width, window, shift)
    wins = window_partition(ids[None, :, :, None], window)[..., 0]  # [nW, M²]
    return wins[:, :, None] == wins[:, None, :]


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2M - 1)²``-row bias table for every (query, key) pair of a window.

    Token ``i`` at ``(y_i, x_i)`` and token ``j`` at ``(y_j, x_j)`` differ by
    ``(Δy, Δx) ∈ [-(M-1), M-1]²``; shifting both by ``M - 1`` and reading them as base-``(2M - 1)``
    digits gives ``(Δy + M - 1)(2M - 1) + Δx + M - 1``. Returns ``Tensor[M², M²]`` (int64).
    """
    _check_int("window", window)
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(
        1
    )  # [2, M²]
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, M², M²] in [0, 2M-2]
    return rel[0] * (2 * window - 1) + rel[1]


def attention_flops(height: int, width: int, channels: int, window: int | None = None) -> int:
    """Multiply-adds of one multi-head self-attention layer on an ``h × w`` map of ``C`` channels.

    ``4hwC²`` for the q, k, v and output projections plus ``2(hw)²C`` for ``QKᵀ`` and the weighted sum
    of the values (global MSA, ``window=None``), or ``2M²hwC`` when each token attends only to the
    ``M²`` tokens of its window (W-MSA). The softmax is left out, as in the Swin paper.
    """
    hw = height * width
    keys = hw if window is None else window * window
    return 4 * hw * channels**2 + 2 * keys * hw * channels


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    ``softmax(Q Kᵀ/√d + B) V`` per window and head, with ``B[i, j] = table[index[i, j]]``
    (:func:`relative_position_index`) and, for shifted windows, ``-∞`` where
    :func:`shifted_window_mask` is False. The attention itself is :class:`CrossAttention` with the
    context equal to the input.

    Args:
        dim: channels ``C``.
        window: window side ``M``.
        num_heads: heads (``dim`` divisible by it).
        qkv_bias: biases on the q, k, v projections (True in Swin).
    Shapes:
        ``Tensor[B · nW, M², C]`` → the same; the mask ``Tensor[nW, M², M²]`` (bool) or None.
    """

    def __init__(self, dim: int, window: int, num_heads: int, *, qkv_bias: bool = True) -> None:
        super().__init__()
        _check_int("window", window)
        self.window, self.num_heads = window, num_heads
        self.attn = CrossAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """``Tensor[heads, M², M²]``: the bias added to every window's logits."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(
        self, windows: torch.Tensor, mask: torch.Tensor | None = None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        bias = self.relative_position_bias()[None]  # [1, heads, N, N]
        if mask is not None:
            nw = mask.shape[0]
            if windows.shape[0] % nw:
                raise ValueError(f"{windows.shape[0]} windows are not a multiple of the mask's {nw} windows")
            blocked = torch.zeros(mask.shape, dtype=bias.dtype, device=bias.device).masked_fill(
                ~mask.to(bias.device), float("-inf")
            )
            bias = (bias + blocked[:, None]).repeat(windows.shape[0] // nw, 1, 1, 1)  # [B·nW, heads, N, N]
        return self.attn(windows, attn_mask=bias, return_weights=return_weights)


class SwinBlock(nn.Module):
    """One Swin block: (shifted-)window attention and an MLP, each pre-normed and residual.

    ``z = x + DropPath((S)W-MSA(LN(x)))``, ``out = z + DropPath(MLP(LN(z)))``. With ``shift > 0`` the
    map is rolled by :func:`cyclic_shift` before the windows are cut, attention is masked by
    :func:`shifted_window_mask`, and the map is rolled back. A map no larger than one window is never
    shifted (a single window already sees every token), as in the paper.

    Shapes:
        ``Tensor[B, H, W, C]`` → the same, ``H`` and ``W`` multiples of ``window``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window: int = 7,
        shift: int = 0,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("shift", shift, 0)
        if shift >= window:
            raise ValueError(f"shift must be smaller than the window ({window}), got {shift}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)
        self._masks: dict[tuple[int, int, int, str], torch.Tensor] = {}

    def _mask(self, h: int, w: int, shift: int, device: torch.device) -> torch.Tensor:
        key = (h, w, shift, str(device))
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(h, w, self.window, shift).to(device)
        return self._masks[key]

    def attention(
        self, x: torch.Tensor, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The (S)W-MSA branch alone on an already normalized map (weights: per window and head)."""
        b, h, w, c = _check_map(x, self.window)
        shift = self.shift if min(h, w) > self.window else 0
        if shift:
            x = cyclic_shift(x, shift)
        mask = self._mask(h, w, shift, x.device) if shift else None
        out = self.attn(window_partition(x, self.window), mask, return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        out = window_reverse(out, self.window, h, w)
        if shift:
            out = cyclic_shift(out, -shift)
        return (out, weights) if return_weights else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return f"window={self.window}, shift={self.shift}"


class PatchMerging(nn.Module):
    """Halve the resolution, double the channels: concatenate each 2×2 group (4C), LayerNorm, linear to 2C.

    The four tokens are concatenated in torchvision's order (top-left, bottom-left, top-right,
    bottom-right). Shapes: ``Tensor[B, H, W, C]`` → ``Tensor[B, H/2, W/2, 2C]`` (``H``, ``W`` even).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_int("dim", dim)
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"x must be Tensor[B, H, W, C] with even H and W, got {tuple(x.shape)}")
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    """A Swin Transformer classifier: patch embedding, stages of Swin blocks joined by patch merging.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        patch_size: side of the square patches embedded by a strided convolution.
        embed_dim: channels ``C`` of stage 1 (stage ``i`` has ``2^i C``).
        depths: blocks per stage (blocks alternate W-MSA and SW-MSA, starting unshifted).
        num_heads: heads per stage.
        window: window side ``M``; the shift is ``⌊M/2⌋`` (``shift=False``: plain windows only).
        mlp_ratio: hidden width of the MLPs over ``dim``.
        drop_path: stochastic depth, rising linearly from 0 to this value over all blocks.
    Shapes:
        ``Tensor[B, in_channels, H, W]`` → ``Tensor[B, num_classes]``; ``features`` gives the last map.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        in_channels: int = 3,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window: int = 7,
        shift: bool = True,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f"depths and num_heads need one entry per stage, got {depths}, {num_heads}")
        _check_int("patch_size", patch_size)
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.embed_norm = nn.LayerNorm(embed_dim)
        total, k = sum(depths), 0
        self.stages = nn.ModuleList()
        dim = embed_dim
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            layers: list[nn.Module] = [PatchMerging(dim // 2)] if i else []
            for j in range(depth):
                p = drop_path * k / max(total - 1, 1)
                s = window // 2 if shift and j % 2 else 0
                layers.append(SwinBlock(dim, heads, window=window, shift=s, mlp_ratio=mlp_ratio, drop_path=p))
                k += 1
            self.stages.append(nn.Sequential(*layers))
            dim *= 2
        self.num_features = dim // 2
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalized last-stage map, ``Tensor[B, H/(p 2^(S-1)), W/(p 2^(S-1)), C_last]``."""
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(1, 2)))


def swin_t(num_classes: int = 1000, *, drop_path: float = 0.2) -> Swin:
    """Swin-T (C = 96, depths 2-2-6-2, heads 3-6-12-24, M = 7): 28,288,354 parameters for 1,000
    classes, as ``torchvision.models.swin_t``."""
    return Swin(
        num_classes,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window=7,
        drop_path=drop_path,
    )
