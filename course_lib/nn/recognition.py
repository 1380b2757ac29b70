"""Text recognition and detection models (chapter 16).

- :class:`CRNN`: a convolutional stack whose height is collapsed into a sequence of ``T = W / 4``
  column features, then a bidirectional GRU (or a 1-D convolution) and a linear layer giving per-step
  log-probabilities for CTC (Shi et al., 2015);
- :class:`DecoderBlock` and :class:`TransformerRecognizer`: the same convolutional encoder read by a
  small transformer decoder (masked self-attention over the characters so far, cross-attention to the
  columns), trained with teacher forcing and decoded greedily, one character at a time;
- :class:`EASTLite`, :func:`east_targets`, :func:`east_loss`, :func:`east_decode`: an EAST-style
  detector at stride 4 with a shrunk-box score map and four distances to the box's edges (axis-aligned
  boxes only), Dice loss on the score and ``-log IoU`` on the positive pixels, then threshold and NMS.

The attention is :class:`~course_lib.nn.attention.CrossAttention`, the convolutions
:class:`~course_lib.nn.blocks.ConvNormAct`, the NMS :func:`course_lib.ops.nms`.

Introduced in chapter 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import losses, ops
from .attention import CrossAttention
from .basics import mlp
from .blocks import ConvNormAct
from .transformer import causal_attention_mask, sinusoidal_positions

__all__ = [
    "CRNN",
    "DecoderBlock",
    "EASTLite",
    "TransformerRecognizer",
    "east_decode",
    "east_loss",
    "east_targets",
]


def _column_encoder(
    in_channels: int, widths: Sequence[int], height: int, downsample: str = "pool"
) -> tuple[nn.Sequential, int]:
    """Conv stack: /2, /2, then height-only /2; a final conv spanning the remaining height.

    ``downsample="pool"`` follows each conv with max-pooling; ``"stride"`` gives the first two convs a
    stride of 2 instead (the same shapes for much less compute on a CPU).
    """
    if height % 8:
        raise ValueError(f"height must be a multiple of 8, got {height}")
    if downsample not in ("pool", "stride"):
        raise ValueError(f"downsample must be 'pool' or 'stride', got {downsample!r}")
    c1, c2, c3 = widths
    if downsample == "pool":
        stages = [
            ConvNormAct(in_channels, c1),
            nn.MaxPool2d(2),
            ConvNormAct(c1, c2),
            nn.MaxPool2d(2),
            ConvNormAct(c2, c3),
            nn.MaxPool2d((2, 1)),
        ]
    else:
        stages = [
            ConvNormAct(in_channels, c1, stride=2),
            ConvNormAct(c1, c2, stride=2),
            ConvNormAct(c2, c3),
            nn.MaxPool2d((2, 1)),  # on a small map: cheap
        ]
    layers = nn.Sequential(
        *stages,
        ConvNormAct(c3, c3, kernel_size=1, padding=0),
        nn.Conv2d(c3, c3, kernel_size=(height // 8, 1)),  # collapses the height: one feature per column
        nn.BatchNorm2d(c3),
        nn.ReLU(inplace=True),
    )
    return layers, c3


class CRNN(nn.Module):
    """CNN + sequence model + linear classifier, trained with CTC.

    Args:
        num_classes: classes per step, blank included (``len(vocab)``).
        in_channels: image channels.
        height: image height (a multiple of 8).
        widths: channels of the three conv stages.
        sequence: ``"gru"`` (bidirectional GRU), ``"conv"`` (two 1-D convolutions of kernel 3) or
            ``"none"`` (each column alone).
        hidden: hidden size of the sequence model (per direction for the GRU).
        downsample: ``"pool"`` (conv then max-pool) or ``"stride"`` (strided convs, cheaper).
    Shapes:
        ``Tensor[N, in_channels, height, W]`` → log-probabilities ``Tensor[W / 4, N, num_classes]``, the
        layout ``F.ctc_loss`` takes.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 1,
        height: int = 32,
        widths: Sequence[int] = (32, 64, 96),
        sequence: str = "gru",
        hidden: int = 64,
        downsample: str = "pool",
    ) -> None:
        super().__init__()
        if sequence not in ("gru", "conv", "none"):
            raise ValueError(f"sequence must be 'gru', 'conv' or 'none', got {sequence!r}")
        self.encoder, c = _column_encoder(in_channels, widths, height, downsample)
        self.sequence = sequence
        if sequence == "gru":
            self.rnn = nn.GRU(c, hidden, batch_first=True, bidirectional=True)
            out = 2 * hidden
        elif sequence == "conv":
            self.rnn = nn.Sequential(
                nn.Conv1d(c, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv1d(hidden, hidden, 3, padding=1),
                nn.ReLU(),
            )
            out = hidden
        else:
            self.rnn = None
            out = c
        self.head = nn.Linear(out, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Column features ``Tensor[N, T, C]``."""
        return self.encoder(x).squeeze(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        if self.sequence == "gru":
            f = self.rnn(f)[0]
        elif self.sequence == "conv":
            f = self.rnn(f.transpose(1, 2)).transpose(1, 2)
        return self.head(f).log_softmax(-1).transpose(0, 1)


class DecoderBlock(nn.Module):
    """Pre-norm transformer decoder block: masked self-attention, cross-attention, MLP, each residual."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = CrossAttention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = mlp([dim, int(dim * mlp_ratio), dim], "gelu", dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, *, return_weights: bool = False):
        mask = causal_attention_mask(x.shape[1], device=x.device)
        x = x + self.drop(self.self_attn(self.norm1(x), attn_mask=mask))
        a = self.cross_attn(self.norm2(x), memory, return_weights=return_weights)
        a, w = a if return_weights else (a, None)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm3(x)))
        return (x, w) if return_weights else x


class TransformerRecognizer(nn.Module):
    """An attention recognizer: CRNN's column encoder plus a small transformer decoder.

    Output classes are the vocabulary's indices, with index 0 (CTC's blank) used as the end-of-string
    token; the decoder's input also has a start token, index ``num_classes``. Train with
    :meth:`teacher_forcing` and cross-entropy (``ignore_index=-100`` for padding); decode with
    :meth:`greedy_decode`.

    Args:
        num_classes: ``len(vocab)`` (end token included).
        max_len: longest string (positions are sinusoidal up to ``max_len + 1``).
        dim, depth, num_heads: decoder width, blocks and heads.
        height, widths, downsample: the column encoder, as in :class:`CRNN`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        max_len: int = 10,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        in_channels: int = 1,
        height: int = 32,
        widths: Sequence[int] = (32, 64, 96),
        dropout: float = 0.0,
        downsample: str = "pool",
    ) -> None:
        super().__init__()
        self.num_classes, self.max_len = num_classes, max_len
        self.encoder, c = _column_encoder(in_channels, widths, height, downsample)
        self.proj = nn.Linear(c, dim)
        self.memory_rnn = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)
        self.embed = nn.Embedding(num_classes + 1, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads, dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.register_buffer("positions", sinusoidal_positions(max_len + 1, dim), persistent=False)

    @property
    def start(self) -> int:
        return self.num_classes

    def encode(self, x: Tensor) -> Tensor:
        """The memory ``Tensor[N, T, dim]``: projected column features with a bidirectional GRU over them."""
        f = self.proj(self.encoder(x).squeeze(2).transpose(1, 2))
        return f + self.memory_rnn(f)[0]

    def decode(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Logits ``Tensor[N, L, num_classes]`` for the decoder inputs ``tokens`` ``Tensor[N, L]``."""
        h = self.embed(tokens) + self.positions[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h, memory)
        return self.head(self.norm(h))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        return self.decode(self.encode(x), tokens)

    def teacher_forcing(self, codes: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Decoder inputs ``[start, c1, ..., cn, pad...]`` and targets ``[c1, ..., cn, end, -100...]``."""
        n = len(codes)
        length = max(len(c) for c in codes) + 1
        if length > self.max_len + 1:
            raise ValueError(f"a string is longer than max_len={self.max_len}")
        inputs = torch.zeros(n, length, dtype=torch.long)
        targets = torch.full((n, length), -100, dtype=torch.long)
        for i, c in enumerate(codes):
            seq = torch.tensor(list(c), dtype=torch.long)
            inputs[i, 0] = self.start
            inputs[i, 1 : len(c) + 1] = seq
            targets[i, : len(c)] = seq
            targets[i, len(c)] = 0
        return inputs.to(self.head.weight.device), targets.to(self.head.weight.device)

    @torch.no_grad()
    def greedy_decode(self, x: Tensor) -> list[list[int]]:
        """Most probable next character, step by step, until the end token or ``max_len``."""
        memory = self.encode(x)
        n = x.shape[0]
        tokens = torch.full((n, 1), self.start, dtype=torch.long, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.max_len + 1):
            nxt = self.decode(memory, tokens)[:, -1].argmax(-1)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == 0
            if bool(done.all()):
                break
        out = []
        for row in tokens[:, 1:].tolist():
            out.append(row[: row.index(0)] if 0 in row else row)
        return out


# --------------------------------------------------------------------------------------------
# EAST-lite
# --------------------------------------------------------------------------------------------
class EASTLite(nn.Module):
    """A small EAST-style detector: a U-Net-like encoder/decoder whose stride-4 output gives a score
    logit and four distances (top, right, bottom, left, in pixels) per cell.

    Shapes: ``Tensor[N, in_channels, H, W]`` → ``(score logits Tensor[N, 1, H/4, W/4],
    distances Tensor[N, 4, H/4, W/4])``, distances positive (``exp`` of the raw output times ``scale``).
    """

    def __init__(self, in_channels: int = 1, width: int = 32, scale: float = 16.0) -> None:
        super().__init__()
        w = width
        self.scale = scale
        self.stem = nn.Sequential(ConvNormAct(in_channels, w, stride=2), ConvNormAct(w, w))  # /2
        self.down1 = nn.Sequential(ConvNormAct(w, 2 * w, stride=2), ConvNormAct(2 * w, 2 * w))  # /4
        self.down2 = nn.Sequential(ConvNormAct(2 * w, 2 * w, stride=2), ConvNormAct(2 * w, 2 * w))  # /8
        self.down3 = nn.Sequential(ConvNormAct(2 * w, 2 * w, stride=2), ConvNormAct(2 * w, 2 * w))  # /16
        self.merge2 = nn.Sequential(ConvNormAct(4 * w, 2 * w, kernel_size=1), ConvNormAct(2 * w, 2 * w))
        self.merge1 = nn.Sequential(ConvNormAct(4 * w, w, kernel_size=1), ConvNormAct(w, w))
        self.score = nn.Conv2d(w, 1, 1)
        self.geometry = nn.Conv2d(w, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f4 = self.down1(self.stem(x))
        f8 = self.down2(f4)
        f16 = self.down3(f8)
        h = self.merge2(torch.cat([F.interpolate(f16, size=f8.shape[-2:]), f8], 1))
        h = self.merge1(torch.cat([F.interpolate(h, size=f4.shape[-2:]), f4], 1))
        return self.score(h), self.scale * self.geometry(h).clamp(-6, 6).exp()


def _cell_centers(height: int, width: int, stride: int, device=None) -> tuple[Tensor, Tensor]:
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    return torch.meshgrid(ys, xs, indexing="ij")


def east_targets(boxes: Tensor, size: int | tuple[int, int], *, stride: int = 4, shrink: float = 0.3):
    """Ground truth for one box per image: the score map is 1 on the cells whose centre lies inside the
    box **shrunk** by ``shrink`` of its smaller side on each edge (at least one cell, the box's centre),
    and the distance maps hold each cell centre's distances to the top, right, bottom and left edges.

    Returns ``(score Tensor[N, 1, H/s, W/s], distances Tensor[N, 4, H/s, W/s])``.
    """
    h, w = (size, size) if isinstance(size, int) else size
    gh, gw = h // stride, w // stride
    cy, cx = _cell_centers(gh, gw, stride, boxes.device)
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    r = shrink * torch.minimum(x2 - x1, y2 - y1)
    inside = (cx > x1 + r) & (cx < x2 - r) & (cy > y1 + r) & (cy < y2 - r)
    # the cell holding the box centre is always positive, so a small box is not lost
    ci = ((y1 + y2) / 2 / stride).long().clamp(0, gh - 1)
    cj = ((x1 + x2) / 2 / stride).long().clamp(0, gw - 1)
    centre = (torch.arange(gh, device=boxes.device)[None, :, None] == ci) & (
        torch.arange(gw, device=boxes.device)[None, None, :] == cj
    )
    score = (inside | centre).float()[:, None]
    dist = torch.stack([cy - y1, x2 - cx, y2 - cy, cx - x1], dim=1)
    return score, dist


def _distances_to_boxes(dist: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    """``(top, right, bottom, left)`` at cell centres → boxes ``(x1, y1, x2, y2)``, last dim."""
    t, r, b, l_ = dist.unbind(-1)
    return torch.stack([cx - l_, cy - t, cx + r, cy + b], dim=-1)


def east_loss(score_logits: Tensor, distances: Tensor, score_target: Tensor, dist_target: Tensor, *, lam=1.0):
    """Dice loss on the score map plus ``lam`` times the mean ``-log IoU`` of the boxes rebuilt from the
    distances, on the positive cells only (so a NaN or huge value elsewhere never reaches the sum).

    Returns ``(total, dice, iou_term)``.
    """
    dice = losses.dice_loss(score_logits, score_target)
    pos = score_target[:, 0] > 0.5
    if not bool(pos.any()):
        return dice, dice, dice.new_zeros(())
    gh, gw = score_target.shape[-2:]
    stride = 1.0  # IoU is scale-free, so rebuild both boxes around the same origin
    cy, cx = _cell_centers(gh, gw, stride, score_logits.device)
    pred = _distances_to_boxes(
        distances.permute(0, 2, 3, 1)[pos], cy.expand_as(pos)[pos], cx.expand_as(pos)[pos]
    )
    gt = _distances_to_boxes(
        dist_target.permute(0, 2, 3, 1)[pos], cy.expand_as(pos)[pos], cx.expand_as(pos)[pos]
    )
    iou = ops.paired_box_iou(pred, gt).clamp_min(1e-6)
    geo = -iou.log().mean()
    return dice + lam * geo, dice, geo


@torch.no_grad()
def east_decode(
    score_logits: Tensor,
    distances: Tensor,
    *,
    stride: int = 4,
    threshold: float = 0.7,
    iou_threshold: float = 0.3,
) -> list[tuple[Tensor, Tensor]]:
    """Per image: the boxes of the cells whose score passes ``threshold``, filtered by NMS, as
    ``(boxes Tensor[K, 4], scores Tensor[K])`` best first."""
    n, _, gh, gw = score_logits.shape
    cy, cx = _cell_centers(gh, gw, stride, score_logits.device)
    prob = score_logits.sigmoid()[:, 0]
    all_boxes = _distances_to_boxes(distances.permute(0, 2, 3, 1), cy, cx)
    out = []
    for i in range(n):
        keep = prob[i] > threshold
        boxes, scores = all_boxes[i][keep], prob[i][keep]
        idx = ops.nms(boxes, scores, iou_threshold)
        out.append((boxes[idx], scores[idx]))
    return out
