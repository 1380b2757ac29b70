"""Transformer pieces for images: attention masks, sinusoidal positions, a pre-norm block and the
Image Transformer (chapter 13; chapters 14-15 build their ViT and Swin from the block).

- masks in the bool convention of :mod:`.attention` (**True marks a pair that may attend**), all
  ``Tensor[L, L]`` with queries on the rows and keys on the columns:
  :func:`causal_attention_mask` (a query sees itself and the past), :func:`local_block_mask` (the
  Image Transformer's 1-D local attention: query blocks with a memory of the positions before them),
  :func:`local_window_mask_2d` (a square neighbourhood of each pixel on an ``H × W`` grid);
- :func:`sinusoidal_positions` and :func:`sinusoidal_positions_2d`: Vaswani et al.'s sinusoids,
  computed by :func:`~course_lib.nn.conditioning.timestep_embedding` (one formula, one owner); the 2-D
  version spends half the channels on the row and half on the column, as the Image Transformer does;
- :class:`TransformerBlock`: pre-norm ``x + attn(LN(x))`` then ``x + MLP(LN(x))``, the attention
  being :class:`~course_lib.nn.attention.CrossAttention` with the context equal to the input, with
  masks and stochastic depth (:class:`~course_lib.nn.blocks.DropPath`). Its parameters match
  torchvision's ViT ``EncoderBlock`` one for one;
- :class:`ImageTransformer`: a small decoder-only model over the pixels of an image in raster order
  with a categorical output per pixel (Parmar et al., 2018), exact NLL and sampling.

Introduced in chapter 13.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention
from .basics import mlp
from .blocks import DropPath
from .conditioning import timestep_embedding

__all__ = [
    "POSITION_KINDS",
    "ImageTransformer",
    "TransformerBlock",
    "causal_attention_mask",
    "local_block_mask",
    "local_window_mask_2d",
    "sinusoidal_positions",
    "sinusoidal_positions_2d",
]

#: Position encodings of :class:`ImageTransformer`.
POSITION_KINDS = ("sinusoidal", "learned", "none")


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# masks (True = may attend)
# --------------------------------------------------------------------------------------------
def causal_attention_mask(length: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal mask: query ``i`` may attend to keys ``j <= i``.

    Args:
        length: sequence length ``L``.
        device: device of the mask.
    Returns:
        ``Tensor[L, L]`` bool, lower triangular with the diagonal (True = may attend).

    Introduced in chapter 13.
    """
    _check_int("length", length)
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def local_block_mask(
    length: int,
    query_block: int,
    memory: int,
    *,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The Image Transformer's 1-D local attention (Parmar et al., 2018, §3.2).

    The sequence is cut into query blocks of ``query_block`` consecutive positions. A query in the
    block starting at ``s`` may attend to the keys ``s - memory .. s + query_block - 1`` (its own block
    and a memory of the ``memory`` positions before it), and, when ``causal``, only to keys ``j <= i``.
    In raster order with ``query_block = W`` one block is one image row.

    Args:
        length: sequence length ``L``.
        query_block: ``l_q``, positions per query block.
        memory: ``l_m``, positions before the block that its queries may also read (0 = block only).
        causal: also forbid keys after the query.
        device: device of the mask.
    Returns:
        ``Tensor[L, L]`` bool (True = may attend).

    Introduced in chapter 13.
    """
    _check_int("length", length)
    _check_int("query_block", query_block)
    _check_int("memory", memory, 0)
    i = torch.arange(length, device=device)
    start = (i // query_block) * query_block  # first position of each query's block
    j = i[None, :]
    mask = (j >= (start - memory)[:, None]) & (j < (start + query_block)[:, None])
    if causal:
        mask &= j <= i[:, None]
    return mask


def local_window_mask_2d(
    height: int,
    width: int,
    radius: int,
    *,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Each pixel of an ``H × W`` grid may attend to the pixels of the ``(2r+1) × (2r+1)`` square
    centred on it (Chebyshev distance ``<= r``), cut at the borders.

    Positions are in raster order (``index = row * W + col``). With ``causal`` the pixels after the
    query in raster order are removed too (the neighbourhood an autoregressive model may read).

    Args:
        height, width: grid size.
        radius: ``r >= 0``; ``r = 0`` lets a pixel attend to itself only.
        causal: also forbid keys after the query in raster order.
        device: device of the mask.
    Returns:
        ``Tensor[H·W, H·W]`` bool (True = may attend).

    Introduced in chapter 13.
    """
    _check_int("height", height)
    _check_int("width", width)
    _check_int("radius", radius, 0)
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    mask = ((rows[:, None] - rows[None, :]).abs() <= radius) & (
        (cols[:, None] - cols[None, :]).abs() <= radius
    )
    if causal:
        mask &= causal_attention_mask(height * width, device=device)
    return mask


# --------------------------------------------------------------------------------------------
# sinusoidal positions
# --------------------------------------------------------------------------------------------
def sinusoidal_positions(
    length: int,
    dim: int,
    *,
    max_period: float = 10_000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sinusoidal encodings of the positions ``0 .. L-1``.

    Row ``p`` is ``[cos(p ω_0) .. cos(p ω_{d/2-1}), sin(p ω_0) .. sin(p ω_{d/2-1})]`` with
    ``ω_k = max_period^(−k/(d/2))``: :func:`~course_lib.nn.conditioning.timestep_embedding` of the
    positions. Vaswani et al. (2017) interleave the sines and cosines instead (``sin`` on even
    channels); that is a fixed permutation of the channels, which a linear layer after it absorbs.

    Args:
        length: number of positions ``L``.
        dim: channels ``d`` (even).
        max_period: sets the slowest frequency; the wavelengths run from ``2π`` to
            ``2π · max_period^(1 - 2/d)``.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: device of the result.
    Returns:
        ``Tensor[L, d]``.

    Introduced in chapter 13.
    """
    _check_int("length", length)
    _check_int("dim", dim, 2)
    if dim % 2:
        raise ValueError(f"dim must be even (a cos and a sin per frequency), got {dim}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    t = torch.arange(length, device=device, dtype=dtype)
    return timestep_embedding(t, dim, max_period=max_period)


def sinusoidal_positions_2d(
    height: int,
    width: int,
    dim: int,
    *,
    max_period: float = 10_000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2-D sinusoidal encodings of an ``H × W`` grid in raster order.

    The first ``d/2`` channels encode the row and the last ``d/2`` the column, each with
    :func:`sinusoidal_positions` (the Image Transformer's coordinate encoding; MAE and DETR do the
    same). The dot product of two encodings is then a sum of a term that depends only on the row offset
    and one that depends only on the column offset.

    Args:
        height, width: grid size.
        dim: channels ``d``, a multiple of 4 (a cos and a sin per frequency, for rows and columns).
        max_period, dtype, device: as in :func:`sinusoidal_positions`.
    Returns:
        ``Tensor[H·W, d]``; row ``r·W + c`` encodes the pixel ``(r, c)``.

    Introduced in chapter 13.
    """
    _check_int("height", height)
    _check_int("width", width)
    _check_int("dim", dim, 4)
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4 (half for rows, half for columns), got {dim}")
    kw = {"max_period": max_period, "dtype": dtype, "device": device}
    row = sinusoidal_positions(height, dim // 2, **kw)  # [H, d/2]
    col = sinusoidal_positions(width, dim // 2, **kw)  # [W, d/2]
    return torch.cat(
        [row.repeat_interleave(width, dim=0), col.repeat(height, 1)],
        dim=1,
    )


# --------------------------------------------------------------------------------------------
# the block
# --------------------------------------------------------------------------------------------
class TransformerBlock(nn.Module):
    """A pre-norm transformer encoder block.

    .. math::
        x \\leftarrow x + \\operatorname{DropPath}(\\operatorname{MSA}(\\operatorname{LN}(x))),\\qquad
        x \\leftarrow x + \\operatorname{DropPath}(\\operatorname{MLP}(\\operatorname{LN}(x)))

    The attention is :class:`~course_lib.nn.attention.CrossAttention` with the context equal to its
    input (self-attention); the MLP is ``Linear → GELU → Dropout → Linear → Dropout``. With
    ``qkv_bias=True`` (the default) and ``mlp_ratio=4`` the parameters are those of torchvision's
    ViT ``EncoderBlock`` (``in_proj`` split into ``to_q``, ``to_k``, ``to_v``).

    Args:
        dim: channels of the tokens.
        num_heads: attention heads (``dim`` divisible by it).
        mlp_ratio: hidden width of the MLP over ``dim``.
        qkv_bias: biases on the q, k, v projections.
        dropout: dropout after the attention and in the MLP (0 = none).
        drop_path: stochastic-depth probability of each residual branch.
        norm_eps: LayerNorm epsilon (1e-6 as in ViT).
        activation: the MLP's activation, a name for :func:`~course_lib.nn.basics.activation`.
    Shapes:
        ``Tensor[B, L, dim]`` → ``Tensor[B, L, dim]``; the weights, when asked for,
        ``Tensor[B, num_heads, L, L]``.

    Introduced in chapter 13; chapters 14 (ViT) and 15 (Swin) reuse it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        _check_int("dim", dim)
        _check_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
        hidden = int(dim * mlp_ratio)
        _check_int("dim * mlp_ratio", hidden)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        self.dim, self.num_heads = dim, num_heads
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CrossAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp([dim, hidden, dim], activation, dropout=dropout)
        self.drop2 = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the block.

        Args:
            x: ``Tensor[B, L, dim]``.
            attn_mask: bool (True = may attend) or float (added to the logits: a relative position
                bias, a shift mask), broadcastable to ``[B, num_heads, L, L]``.
            key_padding_mask: ``Tensor[B, L]`` bool, True = ignore that token.
            return_weights: also return the attention weights.
        Returns:
            ``Tensor[B, L, dim]``, or ``(out, weights)`` with weights ``Tensor[B, num_heads, L, L]``.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"x must be Tensor[B, L, {self.dim}], got {getattr(x, 'shape', type(x).__name__)}"
            )
        h = self.norm1(x)
        a = self.attn(
            h, key_padding_mask=key_padding_mask, attn_mask=attn_mask, return_weights=return_weights
        )
        a, weights = a if return_weights else (a, None)
        x = x + self.drop_path(self.drop1(a))
        x = x + self.drop_path(self.drop2(self.mlp(self.norm2(x))))
        return (x, weights) if return_weights else x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


# --------------------------------------------------------------------------------------------
# the Image Transformer
# --------------------------------------------------------------------------------------------
class ImageTransformer(nn.Module):
    """A small decoder-only Image Transformer over single-channel images (Parmar et al., 2018).

    The pixels are read in raster order as tokens ``0 .. levels-1``. The input sequence is the image
    shifted right by one with a start token in front, so that position ``i`` carries pixel ``i-1``
    and predicts pixel ``i``; a mask keeps position ``i`` from reading positions after it, hence
    the output at ``i`` depends on pixels ``< i`` only and

    .. math:: -\\log p(x) = -\\sum_i \\log p(x_i \\mid x_{<i})

    is exact. Each position gets the encoding of the pixel it predicts (2-D sinusoids, a learned
    table, or nothing), then ``depth`` :class:`TransformerBlock` s, a LayerNorm and a linear head to
    ``levels`` logits.

    Args:
        levels: values a pixel takes.
        size: ``(H, W)``.
        dim: channels of the tokens.
        depth: number of blocks.
        num_heads: heads per block.
        attention: ``"local"`` (1-D local attention, :func:`local_block_mask`) or ``"full"`` (causal).
        query_block, memory: ``l_q`` and ``l_m`` of the local attention (defaults: one row, one row).
        positions: one of :data:`POSITION_KINDS`.
        mlp_ratio, dropout: passed to the blocks.
    Shapes:
        ``forward``: integer levels ``Tensor[N, H, W]`` → logits ``Tensor[N, levels, H, W]``, so that
        ``F.cross_entropy(logits, x)`` is the per-pixel negative log-likelihood.

    Introduced in chapter 13.
    """

    def __init__(
        self,
        levels: int,
        size: tuple[int, int] = (8, 8),
        *,
        dim: int = 48,
        depth: int = 2,
        num_heads: int = 4,
        attention: str = "local",
        query_block: int | None = None,
        memory: int | None = None,
        positions: str = "sinusoidal",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_int("levels", levels, 2)
        if not (isinstance(size, (tuple, list)) and len(size) == 2):
            raise ValueError(f"size must be (H, W), got {size!r}")
        h, w = (_check_int("size[0]", size[0]), _check_int("size[1]", size[1]))
        _check_int("depth", depth, 0)
        if attention not in ("local", "full"):
            raise ValueError(f"attention must be 'local' or 'full', got {attention!r}")
        if positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {positions!r}")
        self.levels, self.size, self.dim = levels, (h, w), dim
        self.attention, self.positions = attention, positions
        length = h * w
        self.embed = nn.Embedding(levels + 1, dim)  # the last index is the start token
        if positions == "learned":
            self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        else:
            pos = (
                sinusoidal_positions_2d(h, w, dim) if positions == "sinusoidal" else torch.zeros(length, dim)
            )
            self.register_buffer("pos", pos, persistent=False)
        if attention == "local":
            self.query_block = w if query_block is None else _check_int("query_block", query_block)
            self.memory = w if memory is None else _check_int("memory", memory, 0)
            mask = local_block_mask(length, self.query_block, self.memory)
        else:
            self.query_block = self.memory = None
            mask = causal_attention_mask(length)
        self.register_buffer("mask", mask, persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, levels)

    def _check_levels(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"x must hold integer levels, got dtype {x.dtype}")
        if x.ndim != 3 or tuple(x.shape[1:]) != self.size:
            raise ValueError(f"x must have shape [N, {self.size[0]}, {self.size[1]}], got {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() >= self.levels):
            raise ValueError(
                f"levels must lie in [0, {self.levels - 1}], got [{int(x.min())}, {int(x.max())}]"
            )

    def forward(
        self, x: torch.Tensor, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits of every pixel given the pixels before it.

        Args:
            x: integer levels ``Tensor[N, H, W]``.
            return_weights: also return each block's attention weights.
        Returns:
            ``Tensor[N, levels, H, W]``, or ``(logits, weights)`` with a list of ``depth`` tensors
            ``Tensor[N, num_heads, H·W, H·W]``.
        """
        self._check_levels(x)
        n = x.shape[0]
        tokens = x.flatten(1)
        start = torch.full((n, 1), self.levels, dtype=tokens.dtype, device=tokens.device)
        shifted = torch.cat([start, tokens[:, :-1]], dim=1)  # position i carries pixel i-1
        h = self.embed(shifted) + self.pos.to(self.embed.weight.dtype)
        weights = []
        for block in self.blocks:
            if return_weights:
                h, wts = block(h, attn_mask=self.mask, return_weights=True)
                weights.append(wts)
            else:
                h = block(h, attn_mask=self.mask)
        logits = self.head(self.norm(h)).transpose(1, 2).reshape(n, self.levels, *self.size)
        return (logits, weights) if return_weights else logits

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """The exact negative log-likelihood of each image, in nats: ``Tensor[N]``.

        Divide by ``H·W·ln 2`` (:func:`~course_lib.nn.autoregressive.bits_per_dim`) for bits per dim.
        """
        return F.cross_entropy(self(x), x, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Draw images pixel by pixel in raster order (one forward pass per pixel).

        Args:
            num_samples: ``N``.
            generator: a ``torch.Generator`` on the model's device, for reproducible samples.
            temperature: the logits are divided by it (``< 1`` sharpens).
        Returns:
            integer levels ``Tensor[N, H, W]`` (int64) on the model's device.
        """
        _check_int("num_samples", num_samples)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        h, w = self.size
        device = self.head.weight.device
        x = torch.zeros(num_samples, h, w, dtype=torch.int64, device=device)
        for i in range(h * w):
            r, c = divmod(i, w)
            probs = (self(x)[:, :, r, c] / temperature).softmax(1)
            x[:, r, c] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return x

    def extra_repr(self) -> str:
        local = f", query_block={self.query_block}, memory={self.memory}" if self.attention == "local" else ""
        return (
            f"levels={self.levels}, size={self.size}, dim={self.dim}, attention={self.attention!r}"
            f"{local}, positions={self.positions!r}"
        )
