"""Convolution blocks and residual networks: normalization layers, :class:`ConvNormAct`,
:class:`DropPath` (chapter 05), residual blocks and :class:`ResNet` (chapter 06)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .basics import activation

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvNormAct",
    "DropPath",
    "NORMS",
    "ResNet",
    "norm_layer",
]

# --------------------------------------------------------------------------------------------
# convolution blocks and residual networks (chapters 05 and 06)
# --------------------------------------------------------------------------------------------
NORMS = ("batch", "group", "instance", None)


def _check_channels(**channels: int) -> None:
    for name, value in channels.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def norm_layer(norm: str | None, channels: int) -> nn.Module:
    """A normalization layer for ``Tensor[N, channels, H, W]`` by name.

    Args:
        norm: ``"batch"`` (``BatchNorm2d``), ``"group"`` (``GroupNorm`` with up to 8 groups, the largest
            count that divides ``channels``), ``"instance"`` (``InstanceNorm2d`` with a learned affine
            step) or ``None`` (identity).
        channels: number of channels.

    Introduced in chapter 05.
    """
    _check_channels(channels=channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm is None:
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvNormAct(nn.Sequential):
    """Convolution → normalization → activation, the unit most CNNs are built from.

    The convolution keeps the spatial size at stride 1 (padding ``dilation * (kernel_size - 1) // 2``
    for odd kernels) and has a bias only when there is no normalization, since a norm layer would cancel
    it. Equal to ``torchvision.ops.Conv2dNormActivation`` with the same settings.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size, stride, dilation, groups: as in ``nn.Conv2d``.
        padding: default "same"-style padding as above.
        norm: see :func:`norm_layer`.
        act: an activation name (see :func:`activation`) or ``None``.
    Shapes:
        ``Tensor[N, in_channels, H, W]`` → ``Tensor[N, out_channels, H', W']``.

    Introduced in chapter 05.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
    ) -> None:
        _check_channels(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride
        )
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=norm is None,
            )
        ]
        if norm is not None:
            layers.append(norm_layer(norm, out_channels))
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class DropPath(nn.Module):
    r"""Stochastic depth: drop a residual branch for whole samples during training.

    In training each sample's branch output is kept with probability :math:`1-p` and divided by
    :math:`1-p` (the "inverted" form, so evaluation is the identity and the expected output is
    unchanged). Huang et al. (2016) instead kept the branch unscaled in training and multiplied it by
    the survival probability at test time; the two agree in expectation. Equal to
    ``torchvision.ops.StochasticDepth(p, "row")``, random draws included.

    Args:
        p: probability of dropping the branch, in [0, 1).
    Shapes:
        ``Tensor[N, *]`` → ``Tensor[N, *]``.

    Introduced in chapter 05.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath p must be a float in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        keep.bernoulli_(survival).div_(survival)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _ResidualBlock(nn.Module):
    """Shared forward of :class:`BasicBlock` and :class:`Bottleneck`: ``act(branch(x) + shortcut(x))``."""

    expansion = 1

    def _make_shortcut(self, in_channels: int, out_channels: int, stride: int, norm: str | None) -> None:
        self.downsample: nn.Module | None = None
        if self.residual and (stride != 1 or in_channels != out_channels):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=norm is None),
                norm_layer(norm, out_channels),
            )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.branch(x))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class BasicBlock(_ResidualBlock):
    r"""The two-convolution residual block of ResNet-18/34: :math:`y = \mathrm{ReLU}(F(x) + x)`.

    :math:`F` is conv3×3 (stride ``stride``) → norm → ReLU → conv3×3 → norm. When the shape changes, the
    shortcut is a strided 1×1 convolution with a norm (torchvision's "option B"). With
    ``residual=False`` the block is :math:`y=\mathrm{ReLU}(F(x))`, the "plain" block He et al. compare
    against. Module names follow torchvision (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``),
    so torchvision's weights load into it.

    Args:
        in_channels, out_channels: channels in and out.
        stride: stride of the first convolution (2 halves the resolution).
        residual: add the shortcut.
        drop_path: stochastic-depth drop probability of the branch (see :class:`DropPath`).
        norm: see :func:`norm_layer`.

    Introduced in chapter 06.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.residual = residual
        bias = norm is None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = norm_layer(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = norm_layer(norm, out_channels)
        self._make_shortcut(in_channels, out_channels, stride, norm)
        self.drop_path = DropPath(drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_ResidualBlock):
    r"""The bottleneck residual block of ResNet-50/101/152: 1×1 reduce → 3×3 → 1×1 expand (×4).

    :math:`F` is conv1×1 (``width``) → norm → ReLU → conv3×3 (stride ``stride``) → norm → ReLU →
    conv1×1 (``4·width``) → norm; the stride sits on the 3×3 convolution as in torchvision ("ResNet
    v1.5"). The 1×1 convolutions make the expensive 3×3 one work on ``width`` channels only.

    Args:
        in_channels: channels in.
        width: channels of the 3×3 convolution; the block outputs ``4 * width``.
        stride, residual, drop_path, norm: as in :class:`BasicBlock`.

    Introduced in chapter 06.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, width=width, stride=stride)
        self.residual = residual
        out_channels = width * self.expansion
        bias = norm is None
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=bias)
        self.bn1 = norm_layer(norm, width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = norm_layer(norm, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=bias)
        self.bn3 = norm_layer(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self._make_shortcut(in_channels, out_channels, stride, norm)
        self.drop_path = DropPath(drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


_BLOCKS: dict[str, type[_ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """A configurable residual network: stem → stages of residual blocks → global average pool → linear.

    Small settings train on 8–32 px images in seconds; ``layers=(2, 2, 2, 2), widths=(64, 128, 256,
    512), stem="imagenet", num_classes=1000`` is exactly torchvision's ``resnet18`` (same modules and
    names: its ``state_dict`` loads strictly), and ``block="bottleneck", layers=(3, 4, 6, 3)`` is
    ``resnet50``.

    Args:
        layers: number of blocks per stage.
        widths: channels per stage (for bottleneck blocks, the inner width; the stage outputs 4×).
        block: ``"basic"`` (:class:`BasicBlock`) or ``"bottleneck"`` (:class:`Bottleneck`).
        in_channels: image channels.
        num_classes: outputs of the final linear layer.
        stem: ``"small"``: a 3×3 convolution at full resolution, for tiny images; ``"imagenet"``: a
            7×7 stride-2 convolution and a 3×3 stride-2 max-pool (÷4 resolution).
        residual: ``False`` removes every shortcut, giving the "plain" network of the same depth.
        drop_path: stochastic-depth drop probability of the last block; block ``i`` of ``B`` (from 0)
            gets ``drop_path * i / (B - 1)``, so the first block is never dropped (the spacing timm
            uses; Huang et al.'s rule :math:`1 - p_l = 1 - \\frac{l}{L} p_L` with :math:`l = 1..L`
            already drops the first block a little).
        norm: see :func:`norm_layer`.
    Shapes:
        ``Tensor[N, in_channels, H, W]`` → logits ``Tensor[N, num_classes]``.

    Introduced in chapter 06.
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2),
        widths: Sequence[int] = (16, 32, 64),
        *,
        block: str = "basic",
        in_channels: int = 3,
        num_classes: int = 10,
        stem: str = "small",
        residual: bool = True,
        drop_path: float = 0.0,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        layers, widths = tuple(layers), tuple(widths)
        if not layers or len(layers) != len(widths):
            raise ValueError(
                f"layers and widths must be non-empty and of equal length, got {layers} and {widths}"
            )
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            _check_channels(**{f"layers[{i}]": n, f"widths[{i}]": w})
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {tuple(_BLOCKS)}, got {block!r}")
        _check_channels(in_channels=in_channels, num_classes=num_classes)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        block_cls = _BLOCKS[block]
        bias = norm is None
        if stem == "small":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=bias)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=bias)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            raise ValueError(f"stem must be 'small' or 'imagenet', got {stem!r}")
        self.bn1 = norm_layer(norm, widths[0])
        self.relu = nn.ReLU(inplace=True)

        total = sum(layers)
        index = 0
        channels = widths[0]
        for stage, (n_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n_blocks):
                rate = drop_path * index / max(total - 1, 1)
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(
                    block_cls(channels, width, stride, residual=residual, drop_path=rate, norm=norm)
                )
                channels = width * block_cls.expansion
                index += 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.out_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage, finest first: ``[Tensor[N, C_i, H_i, W_i]]`` (what an FPN takes)."""
        if x.ndim != 4:
            raise ValueError(f"ResNet expects Tensor[N, C, H, W], got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
            outputs.append(x)
        return outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``Tensor[N, out_channels, h, w]`` (what CAM weighs)."""
        return self.stage_features(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
