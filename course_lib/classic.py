"""The classic convolutional networks, written to be read: LeNet-5, AlexNet, VGG, Inception, ResNet.

Introduced in chapter 06 (convolutional networks), which counts their parameters layer by layer.
Each builder takes ``num_classes`` and builds a randomly initialized network (the course never
downloads weights). Where torchvision has the same network, the module names and layer order here
are torchvision's, so that a torchvision ``state_dict`` loads strictly and both give the same outputs:

- ``lenet5()``: LeCun et al. 1998, in its common modern form (61,706 parameters; none in torchvision);
- ``alexnet()``: Krizhevsky et al. 2012, one-tower version of Krizhevsky 2014 (torchvision ``alexnet``,
  61,100,840);
- ``vgg(16)``: Simonyan & Zisserman 2015 (torchvision ``vgg16``, 138,357,544), and depths 11, 13, 19;
- ``InceptionBlock``: the module of GoogLeNet, Szegedy et al. 2015 (torchvision's ``Inception``);
- ``resnet18()``, ``resnet34()``, ``resnet50()``: He et al. 2016 (11,689,512, 21,797,672 and 25,557,032).

The ResNets are :class:`course_lib.nn.ResNet` with ImageNet settings.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from course_lib import nn as cnn

__all__ = [
    "VGG_CONFIGS",
    "BasicConv2d",
    "ConvNet",
    "InceptionBlock",
    "alexnet",
    "count_parameters",
    "gap_cnn",
    "lenet5",
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg",
]

#: VGG's configurations by depth (Simonyan & Zisserman 2015, Table 1, columns A, B, D, E): the widths of
#: the 3x3 convolutions, with "M" for a 2x2 max-pool of stride 2.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1), got {p!r}")
    return float(p)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of ``model``; shared parameters are counted once.

    Works on models built on the ``meta`` device (``with torch.device("meta"): model = ...``), which
    allocate no memory: a quick way to count the parameters of a big network.

    Args:
        model: any ``nn.Module``.
        trainable_only: count only the parameters with ``requires_grad=True``.
    Returns:
        the count, as a Python int.

    Introduced in chapter 06.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class ConvNet(nn.Module):
    """The common skeleton of AlexNet and VGG: ``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    Args:
        features: convolutions and pooling, ``Tensor[N, C, H, W] -> Tensor[N, K, h, w]``.
        avgpool: usually ``nn.AdaptiveAvgPool2d(s)``, which fixes the grid the classifier sees to ``s x s``
            whatever the input size.
        classifier: the fully connected head on the flattened ``K * s * s`` features.

    Introduced in chapter 06.
    """

    def __init__(self, features: nn.Module, avgpool: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------
# a small all-convolutional classifier with global average pooling
# --------------------------------------------------------------------------------------------
def gap_cnn(
    num_classes: int = 3, *, in_channels: int = 3, widths: Sequence[int] = (8, 16, 32)
) -> nn.Sequential:
    """The small CNN of chapter 06's class-activation maps: Conv-BN-ReLU blocks (``widths``) with a 2x2
    max-pool between consecutive blocks, global average pooling and one linear layer.

    ``model[0]`` is the feature extractor (its last block's maps are what CAM weighs), ``model[3]`` the
    linear classifier. With the defaults a ``Tensor[N, 3, 32, 32]`` gives 8x8 maps of 32 channels and
    ``Tensor[N, num_classes]`` logits (6,187 parameters for 3 classes).

    Introduced in chapter 06; chapter 14 compares vision transformers with it and uses it as DeiT's
    teacher.
    """
    num_classes = _check_positive_int(num_classes, "num_classes")
    in_channels = _check_positive_int(in_channels, "in_channels")
    widths = [_check_positive_int(w, "widths") for w in widths]
    if not widths:
        raise ValueError("widths must name at least one block")
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True)):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers.append(cnn.ConvNormAct(c_in, c_out))
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes)
    )


# --------------------------------------------------------------------------------------------
# LeNet-5
# --------------------------------------------------------------------------------------------
def lenet5(num_classes: int = 10, *, in_channels: int = 1) -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998) in its common modern form, for ``Tensor[N, in_channels, 32, 32]``.

    Layer names follow the paper (C = convolution, S = subsampling, F = fully connected)::

        c1  conv 5x5, 6 maps      32 -> 28     156 parameters
        s2  average pool 2x2      28 -> 14
        c3  conv 5x5, 16 maps     14 -> 10   2,416
        s4  average pool 2x2      10 -> 5
        c5  conv 5x5, 120 maps     5 -> 1   48,120
        f6  linear 120 -> 84                10,164
        output  linear 84 -> 10                850      total 61,706 (num_classes=10)

    with tanh after c1, c3, c5 and f6. The 1998 network differs in three details that change the count
    to 60,840: its S layers have a trainable coefficient and bias per map (12 + 32 parameters), C3
    connects each of its 16 maps to only some of S2's maps (1,516 parameters instead of 2,416), and
    the output is 10 radial-basis units with 84 fixed-size weights each and no bias (840).

    Args:
        num_classes: output logits.
        in_channels: input channels (1 for digits).
    Returns:
        an ``nn.Sequential`` mapping ``Tensor[N, in_channels, 32, 32]`` to ``Tensor[N, num_classes]``.

    Introduced in chapter 06.
    """
    num_classes = _check_positive_int(num_classes, "num_classes")
    in_channels = _check_positive_int(in_channels, "in_channels")
    return nn.Sequential(
        OrderedDict(
            c1=nn.Conv2d(in_channels, 6, 5),
            act1=nn.Tanh(),
            s2=nn.AvgPool2d(2),
            c3=nn.Conv2d(6, 16, 5),
            act3=nn.Tanh(),
            s4=nn.AvgPool2d(2),
            c5=nn.Conv2d(16, 120, 5),
            act5=nn.Tanh(),
            flatten=nn.Flatten(),
            f6=nn.Linear(120, 84),
            act6=nn.Tanh(),
            output=nn.Linear(84, num_classes),
        )
    )


# --------------------------------------------------------------------------------------------
# AlexNet
# --------------------------------------------------------------------------------------------
def alexnet(num_classes: int = 1000, *, dropout: float = 0.5) -> ConvNet:
    """AlexNet as torchvision builds it: the one-tower variant of Krizhevsky (2014).

    The 2012 network was split over two GPUs (96, 256, 384, 384, 256 kernels, the 2nd, 4th and 5th
    convolutions seeing only their own GPU's half of the channels). The single-GPU version used here and
    by torchvision has 64, 192, 384, 256, 256 kernels and no grouping (61.1 M parameters, 96 % of them in
    the three fully connected layers). ``AdaptiveAvgPool2d(6)`` lets it accept inputs of any size
    >= 63 pixels; at 224x224 the features are already 6x6.

    Args:
        num_classes: output logits.
        dropout: dropout probability before the first two fully connected layers.
    Returns:
        a :class:`ConvNet` mapping ``Tensor[N, 3, H, W]`` to ``Tensor[N, num_classes]``; its
        ``state_dict`` has the keys of ``torchvision.models.alexnet()``.

    Introduced in chapter 06.
    """
    num_classes = _check_positive_int(num_classes, "num_classes")
    dropout = _check_dropout(dropout)
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 224 -> 55
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # 55 -> 27 (overlapping pooling)
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # 27 -> 13
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # 13 -> 6
    )
    classifier = nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return ConvNet(features, nn.AdaptiveAvgPool2d((6, 6)), classifier)


# --------------------------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------------------------
def vgg(
    cfg: int | Sequence[int | str] = 16,
    *,
    num_classes: int = 1000,
    batch_norm: bool = False,
    in_channels: int = 3,
    hidden: int = 4096,
    pool_size: int = 7,
    dropout: float = 0.5,
) -> ConvNet:
    """VGG (Simonyan & Zisserman 2015): stacks of 3x3 convolutions (padding 1) and 2x2 max-pools.

    Every convolution keeps the size, every "M" halves it; two stacked 3x3 convolutions see 5x5 pixels
    and three see 7x7, with fewer parameters than one 5x5 or 7x7 layer. With the defaults this is
    torchvision's ``vgg11/13/16/19`` (``_bn`` with ``batch_norm=True``), initialized as torchvision does
    (He-normal convolutions with fan-out, N(0, 0.01) linear weights, zero biases).

    Args:
        cfg: a depth in :data:`VGG_CONFIGS` (11, 13, 16, 19) or a sequence of conv widths and "M".
        num_classes: output logits.
        batch_norm: put a BatchNorm after every convolution (before the ReLU).
        in_channels: input channels.
        hidden: width of the two hidden fully connected layers (4096 in the paper).
        pool_size: the adaptive average pool's output grid (7: 224x224 inputs are already 7x7 there).
        dropout: dropout probability after the two hidden fully connected layers.
    Returns:
        a :class:`ConvNet` mapping ``Tensor[N, in_channels, H, W]`` to ``Tensor[N, num_classes]``.

    Introduced in chapter 06.
    """
    if isinstance(cfg, int | np.integer) and not isinstance(cfg, bool):
        if int(cfg) not in VGG_CONFIGS:
            raise ValueError(
                f"cfg must be a depth in {sorted(VGG_CONFIGS)} or a list of widths/'M', got {cfg}"
            )
        cfg = VGG_CONFIGS[int(cfg)]
    if isinstance(cfg, str) or not isinstance(cfg, Sequence):
        raise ValueError(f"cfg must be a depth in {sorted(VGG_CONFIGS)} or a list of widths/'M', got {cfg!r}")
    widths = [v for v in cfg if v != "M"]
    if not widths or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in widths):
        raise ValueError(f"cfg must hold positive conv widths and 'M', with at least one width, got {cfg!r}")
    num_classes = _check_positive_int(num_classes, "num_classes")
    hidden = _check_positive_int(hidden, "hidden")
    pool_size = _check_positive_int(pool_size, "pool_size")
    channels = _check_positive_int(in_channels, "in_channels")
    dropout = _check_dropout(dropout)
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        channels = v
    classifier = nn.Sequential(
        nn.Linear(channels * pool_size * pool_size, hidden),
        nn.ReLU(True),
        nn.Dropout(p=dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(p=dropout),
        nn.Linear(hidden, num_classes),
    )
    model = ConvNet(nn.Sequential(*layers), nn.AdaptiveAvgPool2d((pool_size, pool_size)), classifier)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# --------------------------------------------------------------------------------------------
# Inception
# --------------------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """Convolution without bias -> BatchNorm (eps 0.001) -> ReLU, named as in torchvision's GoogLeNet.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: square kernel; the padding ``kernel_size // 2`` keeps the size (odd kernels).

    Introduced in chapter 06.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """The Inception module of GoogLeNet (Szegedy et al. 2015, Fig. 2b): four parallel branches.

    ::

        branch1: 1x1 conv -> ch1x1
        branch2: 1x1 conv -> ch3x3red -> 3x3 conv -> ch3x3
        branch3: 1x1 conv -> ch5x5red -> 5x5 conv -> ch5x5
        branch4: 3x3 max-pool (stride 1) -> 1x1 conv -> pool_proj

    concatenated along the channels: ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` output channels at the input's
    size. The 1x1 "reduction" convolutions cut the channels before the expensive 3x3 and 5x5 ones.
    Every convolution is a :class:`BasicConv2d` (conv, BatchNorm, ReLU; the 2015 network had no
    BatchNorm, torchvision's has). torchvision's ``Inception`` uses a 3x3 kernel in the "5x5" branch (a
    bug it keeps for compatibility with its weights); ``kernel_5x5=3`` reproduces it exactly, with the
    same ``state_dict`` keys.

    Args:
        in_channels: input channels.
        ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj: branch widths, as in the paper's Table 1.
        kernel_5x5: kernel of the third branch's second convolution (5, or 3 for torchvision's).

    Introduced in chapter 06.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        kernel_5x5: int = 5,
    ) -> None:
        super().__init__()
        names = ("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")
        values = (in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
        for name, value in zip(names, values, strict=True):
            _check_positive_int(value, name)
        if kernel_5x5 not in (3, 5):
            raise ValueError(f"kernel_5x5 must be 5 (the paper) or 3 (torchvision), got {kernel_5x5!r}")
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, kernel_5x5)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, 1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], dim=1)


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------
_RESNET_WIDTHS = (64, 128, 256, 512)


def resnet18(num_classes: int = 1000, **kwargs) -> cnn.ResNet:
    """ResNet-18 (He et al. 2016): basic blocks, (2, 2, 2, 2) per stage, ImageNet stem.

    Args:
        num_classes: output logits.
        kwargs: passed to :class:`course_lib.nn.ResNet` (``in_channels``, ``residual``, ``drop_path``,
            ``norm``, ...).
    Returns:
        a :class:`course_lib.nn.ResNet` whose ``state_dict`` has the keys of ``torchvision.models.resnet18``.

    Introduced in chapter 06.
    """
    return _resnet("basic", (2, 2, 2, 2), num_classes, kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> cnn.ResNet:
    """ResNet-34: basic blocks, (3, 4, 6, 3) per stage (see :func:`resnet18`). Introduced in chapter 06."""
    return _resnet("basic", (3, 4, 6, 3), num_classes, kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> cnn.ResNet:
    """ResNet-50: bottleneck blocks (1x1, 3x3, 1x1; 4x expansion), (3, 4, 6, 3) per stage.

    See :func:`resnet18`. Introduced in chapter 06.
    """
    return _resnet("bottleneck", (3, 4, 6, 3), num_classes, kwargs)


def _resnet(block: str, layers: tuple[int, ...], num_classes: int, kwargs: dict) -> cnn.ResNet:
    num_classes = _check_positive_int(num_classes, "num_classes")
    for fixed in ("layers", "widths", "block", "stem", "num_classes"):
        if fixed in kwargs:
            raise TypeError(f"{fixed!r} is fixed by this builder; use course_lib.nn.ResNet to change it")
    return cnn.ResNet(
        layers=layers, widths=_RESNET_WIDTHS, block=block, stem="imagenet", num_classes=num_classes, **kwargs
    )
