"""Text encoders and discrete tokens for vision and language (chapter 18).

- :class:`WordTokenizer`: a word-level vocabulary built from captions, with ``<pad>``, ``<bos>`` and
  ``<eos>``; encodes a batch of captions to padded ids.
- :class:`TextEncoder`: CLIP's text tower in miniature. Word embeddings plus learned positions, causal
  pre-norm :class:`~course_lib.nn.transformer.TransformerBlock` s, a final LayerNorm, the ``<eos>``
  token's activation, a linear projection.
- :func:`conv_image_encoder`: a small ConvNormAct CNN to a ``dim``-d vector, the image tower.
- :class:`TinyCLIP`: both towers and the learnable logit scale ``exp(t)``, clamped at 100.
- :class:`VectorQuantizer`: a VQ-VAE codebook with the straight-through estimator, the discrete
  image tokens behind DALL·E-style models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvNormAct
from .transformer import TransformerBlock, causal_attention_mask

__all__ = ["TextEncoder", "TinyCLIP", "VectorQuantizer", "WordTokenizer", "conv_image_encoder"]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
class WordTokenizer:
    """A word-level vocabulary: lower-cased, whitespace-split words.

    Ids: 0 = ``<pad>``, 1 = ``<bos>``, 2 = ``<eos>``, then the words in sorted order (so the ids do not
    depend on the order of the captions given).

    Args:
        texts: captions whose words make the vocabulary.

    Introduced in chapter 18.
    """

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, texts: Sequence[str]) -> None:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of strings")
        words = sorted({w for t in texts for w in t.lower().split()})
        if not words:
            raise ValueError("texts hold no words")
        self.itos: list[str] = [*self.SPECIALS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``<bos> w_1 ... w_k <eos> <pad> ...`` for each text.

        Args:
            texts: captions (every word must be in the vocabulary).
            length: padded length; None = the longest caption plus 2.
        Returns:
            ``ids`` ``Tensor[B, length]`` int64 and ``eos`` ``Tensor[B]``, the position of ``<eos>``.
        """
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for t in texts:
            unknown = [w for w in t.lower().split() if w not in self.stoi]
            if unknown:
                raise ValueError(f"words not in the vocabulary: {unknown} (in {t!r})")
            rows.append([self.BOS, *(self.stoi[w] for w in t.lower().split()), self.EOS])
        longest = max((len(r) for r in rows), default=2)
        length = longest if length is None else length
        if length < longest:
            raise ValueError(f"length {length} is shorter than the longest encoded caption ({longest})")
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        eos = torch.tensor([len(r) - 1 for r in rows], dtype=torch.int64)
        return ids, eos

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Captions back from ids (special tokens dropped)."""
        return [
            " ".join(self.itos[int(i)] for i in row if int(i) >= len(self.SPECIALS)) for row in ids.tolist()
        ]


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------
class TextEncoder(nn.Module):
    """A small causal transformer over word ids that reads the ``<eos>`` token, as CLIP's text tower.

    ``h = Embed(ids) + P``, ``depth`` causal :class:`TransformerBlock` s, ``LayerNorm``, then
    ``h[eos] W`` (the projection into the joint space). The causal mask lets ``<eos>`` see the whole
    caption while no earlier token sees the padding that follows it.

    Args:
        vocab_size: number of token ids.
        dim: width of the transformer.
        embed_dim: width of the joint embedding space.
        depth, num_heads: transformer blocks and heads. ``depth=0`` (with ``pool="mean"``) gives a
            factored text tower: its output is a sum of per-token terms (each word with its position),
            so the words of a caption cannot interact.
        max_len: longest sequence (learned positions).
        pool: ``"eos"`` (CLIP: the ``<eos>`` token's activation) or ``"mean"`` (the mean over the
            tokens up to and including ``<eos>``).
    Shapes:
        ``ids`` ``Tensor[B, L]`` int64, ``eos`` ``Tensor[B]`` → ``Tensor[B, embed_dim]``.

    Introduced in chapter 18.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        embed_dim: int = 64,
        *,
        depth: int = 1,
        num_heads: int = 4,
        max_len: int = 16,
        pool: str = "eos",
    ) -> None:
        super().__init__()
        if pool not in ("eos", "mean"):
            raise ValueError(f"pool must be 'eos' or 'mean', got {pool!r}")
        self.pool = pool
        for name, v in (
            ("vocab_size", vocab_size),
            ("dim", dim),
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("max_len", max_len),
        ):
            _check_int(name, v)
        _check_int("depth", depth, minimum=0)
        if depth == 0 and pool != "mean":
            raise ValueError(
                "depth 0 (no transformer block) needs pool='mean': the <eos> token alone sees no words"
            )
        self.max_len = max_len
        self.token = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, embed_dim, bias=False)
        nn.init.normal_(self.token.weight, std=0.02)

    def forward(self, ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.int64:
            raise ValueError(f"ids must be an int64 Tensor[B, L], got {getattr(ids, 'shape', type(ids))}")
        b, length = ids.shape
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        if eos.shape != (b,) or bool((eos < 0).any()) or bool((eos >= length).any()):
            raise ValueError(f"eos must be Tensor[{b}] of positions in [0, {length}), got {eos.tolist()}")
        h = self.token(ids) + self.pos[:length]
        mask = causal_attention_mask(length, device=ids.device)
        for blk in self.blocks:
            h = blk(h, attn_mask=mask)
        h = self.norm(h)
        if self.pool == "mean":
            keep = (torch.arange(length, device=ids.device) <= eos[:, None]).to(h.dtype)  # [B, L]
            return self.proj((h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True))
        return self.proj(h[torch.arange(b, device=ids.device), eos])


def conv_image_encoder(embed_dim: int = 64, width: int = 32, in_channels: int = 3) -> nn.Sequential:
    """Three stride-2 ``ConvNormAct`` stages, global average pooling and a linear layer to ``embed_dim``.

    Shapes: ``Tensor[B, in_channels, H, W]`` → ``Tensor[B, embed_dim]``. Introduced in chapter 18.
    """
    for name, v in (("embed_dim", embed_dim), ("width", width), ("in_channels", in_channels)):
        _check_int(name, v)
    return nn.Sequential(
        ConvNormAct(in_channels, width, 3, stride=2),
        ConvNormAct(width, 2 * width, 3, stride=2),
        ConvNormAct(2 * width, 2 * width, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, embed_dim),
    )


class TinyCLIP(nn.Module):
    """An image tower, a text tower and CLIP's learnable temperature.

    The logit scale is ``s = exp(t)`` with ``t`` learned, initialised at ``ln(1 / tau_0)`` and ``s``
    clamped at ``max_scale`` (CLIP: ``tau_0 = 0.07``, clamp 100). ``forward`` returns
    ``s * normalize(E_I(x)) @ normalize(E_T(ids))^T``: rows are images, columns captions.

    Args:
        image_encoder: maps ``Tensor[B, C, H, W]`` to ``Tensor[B, D]``.
        text_encoder: maps ``(ids, eos)`` to ``Tensor[B, D]``.
        init_temperature: ``tau_0``.
        max_scale: clamp of the logit scale.

    Introduced in chapter 18.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        *,
        init_temperature: float = 0.07,
        max_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if not init_temperature > 0 or not 1 / init_temperature <= max_scale:
            raise ValueError(
                f"need init_temperature > 0 and 1 / init_temperature <= max_scale, "
                f"got {init_temperature} and {max_scale}"
            )
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_scale = max_scale

    @property
    def logit_scale(self) -> torch.Tensor:
        """``exp(t)`` clamped at ``max_scale`` (a tensor: the gradient reaches ``t``)."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``Tensor[B, D]``."""
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_text(self, ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``Tensor[B, D]``."""
        return F.normalize(self.text_encoder(ids, eos), dim=-1)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.encode_image(x) @ self.encode_text(ids, eos).T


# --------------------------------------------------------------------------------------------
# vector quantization
# --------------------------------------------------------------------------------------------
class VectorQuantizer(nn.Module):
    """A VQ-VAE codebook (van den Oord et al., 2017) with the straight-through estimator.

    Each input vector ``z_e`` is replaced by its nearest code ``e_k`` (squared Euclidean distance).
    The forward value is ``z_q = e_k``; the backward pass copies the gradient of ``z_q`` to ``z_e``
    (``z_e + (e_k - z_e).detach()``). The codebook learns from
    ``||sg[z_e] - e||^2`` and the encoder is held near its codes by ``beta ||z_e - sg[e]||^2``.

    Args:
        num_codes: codebook size ``K``.
        dim: code width ``D``.
        beta: commitment weight (0.25 in the paper).
    Shapes:
        ``z`` ``Tensor[..., D]`` (channels last) → ``(z_q, indices, loss)`` with ``z_q`` like ``z``,
        ``indices`` ``Tensor[...]`` int64 and ``loss`` a scalar.

    Introduced in chapter 18.
    """

    def __init__(self, num_codes: int, dim: int, *, beta: float = 0.25) -> None:
        super().__init__()
        _check_int("num_codes", num_codes)
        _check_int("dim", dim)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.beta = float(beta)
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes, ``Tensor[...]`` int64."""
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.codebook.shape[1]:
            raise ValueError(
                f"z must be a Tensor[..., {self.codebook.shape[1]}], got {getattr(z, 'shape', type(z))}"
            )
        flat = z.reshape(-1, z.shape[-1])
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)
        return d.argmin(1).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.quantize(z)
        e = self.codebook[idx]
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()  # straight-through: value e, gradient of identity
        return z_q, idx, loss
