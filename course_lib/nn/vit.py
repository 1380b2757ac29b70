"""Vision transformers: patch embedding, a configurable ViT (DeiT's distillation token included),
attention rollout and ViT-B/16.

A ViT (Dosovitskiy et al., 2021) reads an image as a sequence: cut it into ``P x P`` patches,
project each flattened patch linearly to ``D`` channels (:class:`PatchEmbed`; a ``P x P`` convolution
with stride ``P`` is exactly that), add a position embedding, optionally prepend a learned class
token, run pre-norm transformer blocks (:class:`course_lib.nn.transformer.TransformerBlock`) and read the class from the class token (or from the mean of
the patch tokens). DeiT (Touvron et al., 2021) adds a second, *distillation* token whose head learns
from a teacher (:func:`distillation_loss`).

Without position embeddings the patch tokens are a *set*: self-attention, the MLP and the norms act
on each token or on all of them symmetrically, so permuting the patches permutes the tokens
(equivariance), and a class token or mean pooling then reads the same logits (invariance). Chapter 14
checks this exactly.

Introduced in chapter 14.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import TransformerBlock, sinusoidal_positions_2d

__all__ = [
    "PatchEmbed",
    "ViT",
    "attention_rollout",
    "copy_torchvision_weights",
    "distillation_loss",
    "patchify",
    "unpatchify",
    "vit_b_16",
]


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_images(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be Tensor[B, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping patches, flattened in raster order.

    Args:
        x: ``Tensor[B, C, H, W]`` with ``H`` and ``W`` multiples of ``patch_size``.
        patch_size: side ``P`` of a patch.
    Returns:
        ``Tensor[B, N, C * P * P]`` with ``N = (H / P) (W / P)``; each patch flattened channel-first
        (``c, i, j``), the order of a ``Conv2d`` weight's ``[C, P, P]``, so that a linear layer on these
        vectors equals a convolution with kernel = stride = ``P``.
    """
    _check_images(x)
    _check_int("patch_size", patch_size)
    b, c, h, w = x.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} must be a multiple of patch_size {patch_size}")
    return F.unfold(x, patch_size, stride=patch_size).transpose(1, 2)


def unpatchify(patches: torch.Tensor, patch_size: int, size: tuple[int, int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``Tensor[B, N, C P P]`` → ``Tensor[B, C, H, W]``."""
    _check_int("patch_size", patch_size)
    h, w = size
    if patches.dim() != 3 or patches.shape[1] != (h // patch_size) * (w // patch_size):
        raise ValueError(
            f"patches must be Tensor[B, {(h // patch_size) * (w // patch_size)}, C*P*P] for a {h}x{w} image, "
            f"got {list(patches.shape)}"
        )
    if patches.shape[2] != channels * patch_size**2:
        raise ValueError(
            f"patches must have C*P*P = {channels * patch_size**2} features, got {patches.shape[2]}"
        )
    return F.fold(patches.transpose(1, 2), (h, w), patch_size, stride=patch_size)


class PatchEmbed(nn.Module):
    """Patches to tokens: a ``P x P`` convolution with stride ``P`` (= :func:`patchify` + a linear layer).

    Args:
        in_channels: image channels ``C``.
        dim: token channels ``D``.
        patch_size: ``P``.
    Shapes:
        ``Tensor[B, C, H, W]`` → ``Tensor[B, (H/P)(W/P), D]``, tokens in raster order.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("dim", dim)
        _check_int("patch_size", patch_size)
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The token grid ``(H/P, W/P)`` of an image, checking that ``P`` divides both sides."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} must be a multiple of patch_size {p}")
        return height // p, width // p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        if x.shape[1] != self.proj.in_channels:
            raise ValueError(f"x must have {self.proj.in_channels} channels, got {x.shape[1]}")
        self.grid(*x.shape[-2:])
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """A vision transformer, configurable from a tiny CPU model to ViT-B/16.

    ``tokens = PatchEmbed(x) (+ positions)``; ``[cls] (+ [dist])`` prepended; ``depth`` pre-norm
    blocks; a final LayerNorm; the head reads the class token (``pool="cls"``) or the mean of the
    patch tokens (``pool="mean"``). With ``distill_token`` a second token and head (DeiT) are added:
    :meth:`forward_heads` returns both heads' logits, :meth:`forward` their mean.

    Args:
        image_size: side of the (square) training images; sets the number of learned positions.
        patch_size: patch side ``P``.
        in_channels, num_classes: input channels, output classes.
        dim, depth, num_heads, mlp_ratio: width ``D``, number of blocks, heads, MLP hidden/``D``.
        pool: ``"cls"`` (class token) or ``"mean"`` (mean of the patch tokens, no class token).
        pos: ``"learned"`` (a parameter per patch and per extra token, as in ViT), ``"sincos"``
            (fixed 2-D sinusoids on the patches,
            :func:`course_lib.nn.transformer.sinusoidal_positions_2d`) or ``"none"``.
        distill_token: add DeiT's distillation token and head (needs ``pool="cls"``).
        qkv_bias: biases in the q, k, v projections (ViT has them).
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
        eps: LayerNorm epsilon (1e-6 in ViT).
    Shapes:
        ``Tensor[B, C, image_size, image_size]`` → ``Tensor[B, num_classes]``.

    Introduced in chapter 14.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        pos: str = "learned",
        distill_token: bool = False,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        _check_int("image_size", image_size)
        _check_int("num_classes", num_classes)
        _check_int("depth", depth)
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if pos not in ("learned", "sincos", "none"):
            raise ValueError(f"pos must be 'learned', 'sincos' or 'none', got {pos!r}")
        if distill_token and pool != "cls":
            raise ValueError("distill_token needs pool='cls' (DeiT reads both tokens)")
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        grid = self.patch_embed.grid(image_size, image_size)
        self.grid, self.num_patches = grid, grid[0] * grid[1]
        self.pool, self.pos = pool, pos
        self.num_extra = (pool == "cls") + bool(distill_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distill_token else None
        if pos == "learned":  # one embedding per token, extra tokens included (as in ViT and DeiT)
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra + self.num_patches, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif pos == "sincos":
            self.register_buffer("pos_embed", sinusoidal_positions_2d(*grid, dim)[None], persistent=False)
        else:
            self.pos_embed = None
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=r, norm_eps=eps
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distill_token else None
        for t in (self.cls_token, self.dist_token):
            if t is not None:
                nn.init.trunc_normal_(t, std=0.02)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, positions and the extra tokens: ``Tensor[B, num_extra + N, D]``."""
        t = self.patch_embed(x)
        if t.shape[1] != self.num_patches:
            raise ValueError(
                f"the model was built for {self.num_patches} patches ({self.grid}), the input gives "
                f"{t.shape[1]}: resize the image or interpolate the positions"
            )
        extra = [e.expand(t.shape[0], -1, -1) for e in (self.cls_token, self.dist_token) if e is not None]
        if self.pos == "learned":
            t = torch.cat([*extra, t], dim=1) + self.pos_embed
        elif self.pos == "sincos":
            t = torch.cat([*extra, t + self.pos_embed.to(t.dtype)], dim=1)
        else:
            t = torch.cat([*extra, t], dim=1)
        return t

    def features(self, x: torch.Tensor, return_weights: bool = False):
        """Normalized output tokens ``Tensor[B, T, D]`` (and per block the weights ``[B, h, T, T]``)."""
        t = self.tokens(x)
        weights = []
        for blk in self.blocks:
            if return_weights:
                t, w = blk(t, return_weights=True)
                weights.append(w)
            else:
                t = blk(t)
        t = self.norm(t)
        return (t, weights) if return_weights else t

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(class-head logits, distillation-head logits or None)``, each ``Tensor[B, classes]``."""
        t = self.features(x)
        if self.pool == "mean":
            return self.head(t.mean(dim=1)), None
        dist = self.head_dist(t[:, 1]) if self.head_dist is not None else None
        return self.head(t[:, 0]), dist

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, dist = self.forward_heads(x)
        return cls if dist is None else (cls + dist) / 2

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per block the attention weights ``Tensor[B, heads, T, T]`` (rows: queries, sum to 1)."""
        return self.features(x, return_weights=True)[1]


def attention_rollout(weights: list[torch.Tensor] | torch.Tensor, residual: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each output token draws on each input token.

    Each layer's weights are averaged over heads; with ``residual`` the identity of the skip
    connection is mixed in, ``Â = (A + I) / 2`` (rows still sum to 1); the layers are chained by
    matrix products, ``R = Â_L ⋯ Â_1``.

    Args:
        weights: per layer ``Tensor[B, heads, T, T]`` (a list, or a stacked ``Tensor[L, B, h, T, T]``).
        residual: account for the residual connections.
    Returns:
        ``Tensor[B, T, T]``, rows summing to 1; row 0 of a class-token model says where the class
        token's information comes from.
    """
    if isinstance(weights, torch.Tensor):
        weights = list(weights)
    if not weights:
        raise ValueError("weights must hold at least one layer")
    for i, w in enumerate(weights):
        if w.dim() != 4 or w.shape[-1] != w.shape[-2] or w.shape != weights[0].shape:
            raise ValueError(
                f"weights[{i}] must be Tensor[B, heads, T, T] like weights[0] "
                f"{list(weights[0].shape)}, got {list(w.shape)}"
            )
    eye = torch.eye(weights[0].shape[-1], dtype=weights[0].dtype, device=weights[0].device)
    rollout = eye.expand(weights[0].shape[0], -1, -1)
    for w in weights:
        a = w.mean(dim=1)
        if residual:
            a = (a + eye) / 2
        rollout = a @ rollout
    return rollout


def distillation_loss(
    cls_logits: torch.Tensor,
    dist_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "hard",
    *,
    tau: float = 3.0,
    lam: float = 0.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""DeiT's distillation losses.

    - ``"hard"``: :math:`\tfrac12\,\mathrm{CE}(Z_{cls}, y) + \tfrac12\,\mathrm{CE}(Z_{dist}, y_t)`,
      :math:`y_t = \arg\max_c Z_t(c)` (the teacher's decision);
    - ``"soft"``: :math:`(1-\lambda)\,\mathrm{CE}(Z_{cls}, y) +
      \lambda\tau^2\,\mathrm{KL}(\psi(Z_t/\tau)\,\|\,\psi(Z_{dist}/\tau))` (teacher distribution first,
      as in Hinton et al.; ``batchmean``);
    - ``"none"``: :math:`\mathrm{CE}(Z_{cls}, y)` (``dist_logits`` may be None).

    Args:
        cls_logits, dist_logits: ``Tensor[B, K]`` of the class and distillation heads.
        labels: ``Tensor[B]`` true classes.
        teacher_logits: ``Tensor[B, K]`` (no gradient flows into the teacher).
        kind: ``"hard"``, ``"soft"`` or ``"none"``.
        tau, lam: temperature and weight of the soft loss.
        label_smoothing: smoothing :math:`\varepsilon` of the cross-entropy on the *true* labels
            (every CE(·, y) above); the teacher's targets are never smoothed, as in DeiT.
    Returns:
        The scalar loss.
    """
    if kind not in ("hard", "soft", "none"):
        raise ValueError(f"kind must be 'hard', 'soft' or 'none', got {kind!r}")
    ce = F.cross_entropy(cls_logits, labels, label_smoothing=label_smoothing)
    if kind == "none":
        return ce
    if (
        dist_logits is None
        or dist_logits.shape != cls_logits.shape
        or teacher_logits.shape != cls_logits.shape
    ):
        raise ValueError(
            "dist_logits and teacher_logits must have the shape of cls_logits "
            f"{list(cls_logits.shape)}, got {getattr(dist_logits, 'shape', None)} and "
            f"{list(teacher_logits.shape)}"
        )
    teacher_logits = teacher_logits.detach()
    if kind == "hard":
        return 0.5 * ce + 0.5 * F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
    if not tau > 0 or not 0 <= lam <= 1:
        raise ValueError(f"need tau > 0 and 0 <= lam <= 1, got tau={tau}, lam={lam}")
    kl = F.kl_div(
        F.log_softmax(dist_logits / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    return (1 - lam) * ce + lam * tau**2 * kl


@torch.no_grad()
def copy_torchvision_weights(model: ViT, tv: nn.Module) -> ViT:
    """Copy a ``torchvision.models.VisionTransformer``'s weights into a :class:`ViT` of the same shape.

    torchvision keeps q, k and v in one ``in_proj`` matrix (``nn.MultiheadAttention``); here they are
    three linear layers, so the matrix is cut in three. Returns ``model`` (changed in place).
    """
    d = tv.hidden_dim
    if model.pool != "cls" or model.pos != "learned" or model.dist_token is not None:
        raise ValueError(
            "only a class-token ViT with learned positions (torchvision's layout) can take the weights"
        )
    if model.pos_embed.shape != tv.encoder.pos_embedding.shape or len(model.blocks) != len(tv.encoder.layers):
        raise ValueError(
            f"shapes differ: positions {list(model.pos_embed.shape)} vs "
            f"{list(tv.encoder.pos_embedding.shape)}, {len(model.blocks)} vs {len(tv.encoder.layers)} blocks"
        )
    model.patch_embed.proj.load_state_dict(tv.conv_proj.state_dict())
    model.cls_token.copy_(tv.class_token)
    model.pos_embed.copy_(tv.encoder.pos_embedding)
    for blk, layer in zip(model.blocks, tv.encoder.layers, strict=True):
        blk.norm1.load_state_dict(layer.ln_1.state_dict())
        blk.norm2.load_state_dict(layer.ln_2.state_dict())
        sa = layer.self_attention
        for i, lin in enumerate((blk.attn.to_q, blk.attn.to_k, blk.attn.to_v)):
            lin.weight.copy_(sa.in_proj_weight[i * d : (i + 1) * d])
            lin.bias.copy_(sa.in_proj_bias[i * d : (i + 1) * d])
        blk.attn.to_out.load_state_dict(sa.out_proj.state_dict())
        ours = [m for m in blk.mlp.modules() if isinstance(m, nn.Linear)]
        theirs = [m for m in layer.mlp.modules() if isinstance(m, nn.Linear)]
        for a, b in zip(ours, theirs, strict=True):
            a.load_state_dict(b.state_dict())
    model.norm.load_state_dict(tv.encoder.ln.state_dict())
    model.head.load_state_dict(tv.heads.head.state_dict())
    return model


def vit_b_16(num_classes: int = 1000) -> ViT:
    """ViT-B/16 (224², patch 16, D = 768, 12 blocks, 12 heads, MLP 3072) from these blocks.

    Same parameter count as ``torchvision.models.vit_b_16`` (86,567,656 for 1000 classes).
    """
    return ViT(224, 16, 3, num_classes, dim=768, depth=12, num_heads=12, mlp_ratio=4.0)
