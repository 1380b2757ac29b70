"""Dense prediction: :class:`UNet`, :class:`ASPP` (chapter 07); :class:`FPN` and
:class:`DetectionHead` (chapter 08)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .blocks import ConvNormAct, _check_channels

__all__ = [
    "ASPP",
    "DetectionHead",
    "FPN",
    "UNet",
    "double_conv",
]


# --------------------------------------------------------------------------------------------
# dense prediction: U-Net, ASPP (chapter 07); feature pyramid and detection head (chapter 08)
# --------------------------------------------------------------------------------------------
def double_conv(in_channels: int, out_channels: int, *, norm: str | None = "batch") -> nn.Sequential:
    """Two 3×3 :class:`ConvNormAct` layers, the unit of each U-Net level.

    Introduced in chapter 07.
    """
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, norm=norm), ConvNormAct(out_channels, out_channels, norm=norm)
    )


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015): a contracting path, an expanding path, and skip connections
    that concatenate each encoder level's features to the decoder level of the same resolution.

    Level ``i`` has ``widths[i]`` channels; the encoder halves the resolution between levels with 2×2
    max-pooling, the decoder doubles it with a stride-2 transposed convolution (``up="transpose"``) or
    bilinear upsampling followed by a 1×1 convolution (``up="bilinear"``, which avoids the checkerboard
    artefacts of transposed convolutions). Convolutions are padded, so the output has the input's
    size (the original cropped its unpadded maps instead).

    Args:
        in_channels: image channels.
        num_classes: output channels (class logits per pixel).
        widths: channels per level, from the finest to the coarsest (the bottleneck).
        norm: see :func:`norm_layer`.
        up: ``"transpose"`` or ``"bilinear"``.
        skips: ``False`` drops the skip connections (a plain encoder-decoder, for comparison).
    Shapes:
        ``Tensor[N, in_channels, H, W]`` → ``Tensor[N, num_classes, H, W]``; ``H`` and ``W`` must be
        divisible by ``2 ** (len(widths) - 1)``.

    Introduced in chapter 07.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        widths: Sequence[int] = (16, 32, 64),
        *,
        norm: str | None = "batch",
        up: str = "transpose",
        skips: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {widths}")
        _check_channels(in_channels=in_channels, num_classes=num_classes)
        for i, w in enumerate(widths):
            _check_channels(**{f"widths[{i}]": w})
        if up not in ("transpose", "bilinear"):
            raise ValueError(f"up must be 'transpose' or 'bilinear', got {up!r}")
        self.skips = skips
        self.factor = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList(
            double_conv(c_in, c_out, norm=norm)
            for c_in, c_out in zip((in_channels, *widths[:-1]), widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for coarse, fine in zip(widths[:0:-1], widths[-2::-1], strict=True):
            if up == "transpose":
                self.ups.append(nn.ConvTranspose2d(coarse, fine, 2, stride=2))
            else:
                self.ups.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(coarse, fine, 1))
                )
            self.dec.append(double_conv(2 * fine if skips else fine, fine, norm=norm))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"UNet expects Tensor[N, C, H, W] with H and W divisible by {self.factor}, got {tuple(x.shape)}"
            )
        features = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        for up, dec, skip in zip(self.ups, self.dec, features[-2::-1], strict=True):
            x = up(x)
            x = dec(torch.cat([skip, x], dim=1) if self.skips else x)
        return self.head(x)


class _ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average pool → 1×1 conv-norm-ReLU → upsample back."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *ConvNormAct(in_channels, out_channels, 1, norm=norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return nn.functional.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3, Chen et al., 2017).

    Parallel branches look at the same feature map with different fields of view: a 1×1 convolution,
    one 3×3 convolution per dilation rate in ``rates``, and an image-level branch (global average
    pooling). Their outputs are concatenated and projected by a 1×1 convolution. Same modules, names
    and computation as torchvision's ``deeplabv3.ASPP`` (whose weights load into it); ``dropout``
    defaults to torchvision's 0.5.

    Note: with ``norm="batch"`` the image-pooling branch normalizes one value per channel and sample,
    so training needs batches of more than one image.

    Args:
        in_channels, out_channels: channels in and out.
        rates: dilation rates of the 3×3 branches (DeepLab v3 uses 6, 12, 18 at output stride 16).
        norm: see :func:`norm_layer`.
        dropout: dropout after the projection.
    Shapes:
        ``Tensor[N, in_channels, H, W]`` → ``Tensor[N, out_channels, H, W]``.

    Introduced in chapter 07.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        *,
        norm: str | None = "batch",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels)
        rates = tuple(rates)
        for i, r in enumerate(rates):
            _check_channels(**{f"rates[{i}]": r})
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        branches: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1, norm=norm)]
        branches += [ConvNormAct(in_channels, out_channels, 3, dilation=r, norm=norm) for r in rates]
        branches.append(_ImagePooling(in_channels, out_channels, norm))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *ConvNormAct(len(branches) * out_channels, out_channels, 1, norm=norm), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class FPN(nn.Module):
    """Feature pyramid network (Lin et al., 2017): a top-down path that gives every level of a backbone
    the semantics of the coarsest one.

    Each input level gets a lateral 1×1 convolution to ``out_channels``; starting from the coarsest,
    the running map is upsampled (nearest) and added to the next finer lateral; a 3×3 convolution then
    smooths every sum. Same modules, names and computation as ``torchvision.ops.FeaturePyramidNetwork``
    without extra blocks (its weights load into it).

    Args:
        in_channels_list: channels of the input levels, finest first.
        out_channels: channels of every output level.
    Shapes:
        a list of ``Tensor[N, in_channels_list[i], H_i, W_i]`` (finest first) → a list of
        ``Tensor[N, out_channels, H_i, W_i]``.

    Introduced in chapter 08.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int) -> None:
        super().__init__()
        in_channels_list = tuple(in_channels_list)
        if not in_channels_list:
            raise ValueError("in_channels_list must name at least one level")
        for i, c in enumerate(in_channels_list):
            _check_channels(**{f"in_channels_list[{i}]": c})
        _check_channels(out_channels=out_channels)
        self.inner_blocks = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=None, act=None) for c in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=None, act=None) for _ in in_channels_list
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.inner_blocks):
            raise ValueError(f"FPN expects {len(self.inner_blocks)} feature maps, got {len(features)}")
        last = self.inner_blocks[-1](features[-1])
        outputs = [self.layer_blocks[-1](last)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[i](features[i])
            last = lateral + nn.functional.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.layer_blocks[i](last))
        return outputs


class DetectionHead(nn.Module):
    r"""A dense one-stage detection head (RetinaNet/FCOS style), shared by every pyramid level.

    Two towers of ``depth`` 3×3 :class:`ConvNormAct` layers, one for classification and one for box
    regression, end in convolutions that predict, at every cell and for each of ``num_anchors``
    anchors, ``num_classes`` logits and 4 box numbers (and optionally an FCOS "centerness" logit). The
    classification bias starts at :math:`-\log((1-\pi)/\pi)` so every sigmoid begins at the prior
    :math:`\pi` (RetinaNet): with thousands of background cells, a 0.5 start would swamp the loss.

    Args:
        in_channels: channels of the feature maps.
        num_classes: object classes (no background class: sigmoid per class).
        num_anchors: anchors per cell (1 for anchor-free FCOS/YOLO-style heads).
        depth: conv layers per tower.
        norm: see :func:`norm_layer` (GroupNorm is the usual choice for detection heads).
        prior: initial foreground probability :math:`\pi`.
        centerness: also predict a centerness logit per anchor.
    Returns:
        ``forward(features)`` takes one ``Tensor[N, in_channels, H, W]`` or a list of them (levels) and
        returns a dict with ``"cls_logits"`` ``Tensor[N, L, num_classes]``, ``"box_regression"``
        ``Tensor[N, L, 4]`` (and ``"centerness"`` ``Tensor[N, L]``), where ``L`` runs over levels, then
        rows, columns and anchors: the order of :func:`course_lib.ops.anchor_grid`.

    Introduced in chapter 08.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        num_anchors: int = 1,
        depth: int = 2,
        norm: str | None = "group",
        prior: float = 0.01,
        centerness: bool = False,
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, num_classes=num_classes, num_anchors=num_anchors)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.cls_tower = nn.Sequential(
            *(ConvNormAct(in_channels, in_channels, norm=norm) for _ in range(depth))
        )
        self.box_tower = nn.Sequential(
            *(ConvNormAct(in_channels, in_channels, norm=norm) for _ in range(depth))
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.box_regression = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, num_anchors, 3, padding=1) if centerness else None
        for conv in (self.cls_logits, self.box_regression, self.centerness):
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    def _flatten(self, x: torch.Tensor, k: int) -> torch.Tensor:
        n, _, h, w = x.shape  # [N, A*k, H, W] -> [N, H*W*A, k]
        return x.view(n, self.num_anchors, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)

    def forward(self, features: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        levels = [features] if isinstance(features, torch.Tensor) else list(features)
        if not levels or any(f.ndim != 4 for f in levels):
            raise ValueError("DetectionHead expects Tensor[N, C, H, W] feature maps")
        out: dict[str, list[torch.Tensor]] = {"cls_logits": [], "box_regression": []}
        if self.centerness is not None:
            out["centerness"] = []
        for f in levels:
            c, b = self.cls_tower(f), self.box_tower(f)
            out["cls_logits"].append(self._flatten(self.cls_logits(c), self.num_classes))
            out["box_regression"].append(self._flatten(self.box_regression(b), 4))
            if self.centerness is not None:
                out["centerness"].append(self._flatten(self.centerness(b), 1)[..., 0])
        return {k: torch.cat(v, dim=1) for k, v in out.items()}
