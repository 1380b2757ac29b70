"""Attention layers: scaled dot-product attention and a multi-head (cross-)attention module.

Scaled dot-product attention (Vaswani et al., 2017) mixes values ``V`` with weights computed from
queries ``Q`` and keys ``K``,

.. math::
    \\operatorname{Attention}(Q, K, V)
    = \\operatorname{softmax}\\!\\left(\\frac{Q K^\\top}{\\sqrt{d}}\\right) V,

one row of weights per query, summing to one over the keys. In **cross-attention** the queries come
from one sequence (the pixels of an image being denoised) and the keys and values from another (the
tokens of a prompt): each pixel reads the prompt. With the context equal to the input it is
self-attention.

:func:`dot_product_attention` is the from-scratch reference and returns its weights;
:class:`CrossAttention` runs on :func:`torch.nn.functional.scaled_dot_product_attention` (the fused,
memory-efficient kernel) unless the weights are asked for, in which case it computes them explicitly
with :func:`dot_product_attention` so that the maps shown are exactly the ones used.

Mask conventions:

- ``key_padding_mask``: ``Tensor[B, Lk]`` bool, **True marks a key to ignore** (padding), as in
  :class:`torch.nn.MultiheadAttention`;
- ``attn_mask``: bool, broadcastable to ``[B, heads, Lq, Lk]``, **True marks a pair that may
  attend**, as in ``scaled_dot_product_attention`` (the opposite of ``MultiheadAttention``'s bool
  ``attn_mask``); or a float tensor added to the logits.

A query that may attend to no key at all raises ``ValueError`` (its softmax would be 0/0).

Introduced in chapter 11 (text conditioning of a diffusion model); chapter 12 reads the maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossAttention", "dot_product_attention", "merge_masks"]


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def merge_masks(
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    *,
    batch: int,
    len_q: int,
    len_k: int,
) -> torch.Tensor | None:
    """Combine a key padding mask and an attention mask into one mask for ``[B, H, Lq, Lk]`` logits.

    Args:
        key_padding_mask: ``Tensor[B, Lk]`` bool, True = ignore that key; or None.
        attn_mask: bool (True = may attend) or float (added to the logits), broadcastable to
            ``[B, H, Lq, Lk]``; or None.
        batch, len_q, len_k: the sizes the masks must fit.
    Returns:
        None when both are None; a bool mask (True = may attend) when both are bool or one is None
        and the other bool; otherwise a float mask with ``-inf`` where attention is forbidden.
        Broadcastable to ``[B, H, Lq, Lk]``.
    Raises:
        ValueError: wrong shape or dtype, or a query row that can attend to no key.
    """
    mask = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool (True = ignore), got {key_padding_mask.dtype}")
        if key_padding_mask.shape != (batch, len_k):
            raise ValueError(
                f"key_padding_mask must have shape [B, Lk] = {[batch, len_k]}, "
                f"got {list(key_padding_mask.shape)}"
            )
        mask = (~key_padding_mask)[:, None, None, :]
    if attn_mask is not None:
        if attn_mask.dim() > 4:
            raise ValueError(f"attn_mask must have at most 4 dims, got shape {list(attn_mask.shape)}")
        shape = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
        if any(
            s not in (1, t)
            for s, t in zip((shape[0], shape[2], shape[3]), (batch, len_q, len_k), strict=True)
        ):
            raise ValueError(
                f"attn_mask of shape {list(attn_mask.shape)} does not broadcast to "
                f"[B, H, Lq, Lk] = [{batch}, H, {len_q}, {len_k}]"
            )
        if attn_mask.dtype == torch.bool:
            mask = attn_mask if mask is None else mask & attn_mask
        elif attn_mask.is_floating_point():
            if mask is not None:
                pad = torch.zeros(mask.shape, dtype=attn_mask.dtype, device=attn_mask.device)
                mask = pad.masked_fill(~mask, float("-inf")) + attn_mask
            else:
                mask = attn_mask
        else:
            raise ValueError(f"attn_mask must be bool or floating point, got {attn_mask.dtype}")
    if mask is not None:
        allowed = mask if mask.dtype == torch.bool else mask > float("-inf")
        if not allowed.any(dim=-1).all():
            raise ValueError("the masks leave a query with no key to attend to (its softmax would be 0/0)")
    return mask


def dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention from its definition, returning the weights too.

    Args:
        q: ``Tensor[..., Lq, d]`` queries.
        k: ``Tensor[..., Lk, d]`` keys.
        v: ``Tensor[..., Lk, dv]`` values.
        mask: bool (True = may attend) or float (added to the logits), broadcastable to
            ``[..., Lq, Lk]``; or None.
    Returns:
        ``(out, weights)``: ``Tensor[..., Lq, dv]`` and ``Tensor[..., Lq, Lk]`` (rows sum to 1).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim d, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length Lk, got {k.shape[-2]} and {v.shape[-2]}")
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    weights = logits.softmax(dim=-1)
    return weights @ v, weights


class CrossAttention(nn.Module):
    """Multi-head attention of a query sequence over a context sequence.

    ``out = W_o · concat_h softmax(Q_h K_hᵀ / √d_h) V_h`` with ``Q = x W_q``, ``K = c W_k``,
    ``V = c W_v``, split into ``num_heads`` heads of ``head_dim`` channels each.

    Args:
        query_dim: channels of the queries ``x``.
        context_dim: channels of the context ``c``; None = ``query_dim`` (self-attention possible).
        num_heads: number of heads.
        head_dim: channels per head; None = ``query_dim // num_heads``.
        qkv_bias: whether the q, k, v projections have a bias (off in Stable Diffusion's blocks).
        out_bias: whether the output projection has a bias.

    Shapes:
        ``x``: ``Tensor[B, Lq, query_dim]``; ``context``: ``Tensor[B, Lk, context_dim]`` (None = ``x``);
        output ``Tensor[B, Lq, query_dim]``; weights (when asked) ``Tensor[B, num_heads, Lq, Lk]``.

    Introduced in chapter 11.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        *,
        num_heads: int = 1,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        out_bias: bool = True,
    ):
        super().__init__()
        context_dim = query_dim if context_dim is None else context_dim
        _check_int("query_dim", query_dim)
        _check_int("context_dim", context_dim)
        _check_int("num_heads", num_heads)
        if head_dim is None:
            if query_dim % num_heads:
                raise ValueError(
                    f"query_dim ({query_dim}) must be divisible by num_heads ({num_heads}) "
                    "when head_dim is not given"
                )
            head_dim = query_dim // num_heads
        _check_int("head_dim", head_dim)
        self.query_dim, self.context_dim = query_dim, context_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_out = nn.Linear(inner, query_dim, bias=out_bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, d]

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` to ``context``.

        Args:
            x: ``Tensor[B, Lq, query_dim]``.
            context: ``Tensor[B, Lk, context_dim]``; None = ``x`` (self-attention).
            key_padding_mask: ``Tensor[B, Lk]`` bool, True = ignore that key.
            attn_mask: bool (True = may attend) or float (added to the logits), broadcastable to
                ``[B, num_heads, Lq, Lk]``.
            return_weights: also return the attention weights ``Tensor[B, num_heads, Lq, Lk]``
                (computed explicitly; the fused kernel is used otherwise).
        Returns:
            ``Tensor[B, Lq, query_dim]``, or ``(out, weights)`` when ``return_weights``.
        """
        if context is None:
            context = x
        if x.dim() != 3 or x.shape[-1] != self.query_dim:
            raise ValueError(f"x must be Tensor[B, Lq, {self.query_dim}], got shape {list(x.shape)}")
        if context.dim() != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context must be Tensor[B, Lk, {self.context_dim}], got shape {list(context.shape)}"
            )
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and context must share the batch size, got {x.shape[0]} and {context.shape[0]}"
            )
        if context.shape[1] == 0:
            raise ValueError("context must have at least one token (Lk >= 1)")
        mask = merge_masks(
            key_padding_mask, attn_mask, batch=x.shape[0], len_q=x.shape[1], len_k=context.shape[1]
        )
        q = self._heads(self.to_q(x))
        k = self._heads(self.to_k(context))
        v = self._heads(self.to_v(context))
        if return_weights:
            out, weights = dot_product_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.num_heads * self.head_dim)
        out = self.to_out(out)
        return (out, weights) if return_weights else out

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, context_dim={self.context_dim}, "
            f"num_heads={self.num_heads}, head_dim={self.head_dim}"
        )
