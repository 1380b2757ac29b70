"""Image restoration models (chapter 19): denoising, super-resolution and inpainting.

- :class:`DnCNN`: a plain residual denoiser ``x_hat = y + f(y)`` (the network learns the correction,
  i.e. minus the noise; Zhang et al., 2017);
- :class:`NoiseEstimator` and :class:`CBDNet`: CBDNet's idea in miniature (Guo et al., 2019): a small
  fully convolutional subnet estimates a noise-level map ``sigma_hat`` the size of the image, and a
  residual denoiser reads ``cat(y, sigma_hat)``; :func:`cbdnet_loss` is its reconstruction +
  (asymmetric) noise-estimation + total-variation loss;
- :func:`pixel_shuffle`, :class:`PixelShuffle` and :class:`ESPCN`: sub-pixel convolution (Shi et al.,
  2016). A convolution at low resolution predicts ``C r^2`` channels that are rearranged into an image
  ``r`` times larger;
- :class:`PartialConv2d`, :class:`GatedConv2d` and the small inpainting networks
  :class:`PartialConvNet`, :class:`GatedConvNet` (Liu et al., 2018; Yu et al., 2019).

Mask convention: :class:`PartialConv2d` takes a **validity** mask (1 = known pixel, 0 = hole), as in its
paper; :class:`GatedConvNet` and :func:`course_lib.data.free_form_masks` use a **hole** mask (1 = fill),
as DeepFill does. ``valid = 1 - hole``.

Introduced in chapter 19.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CBDNet",
    "DnCNN",
    "ESPCN",
    "GatedConv2d",
    "GatedConvNet",
    "NoiseEstimator",
    "PartialConv2d",
    "PartialConvNet",
    "PixelShuffle",
    "cbdnet_loss",
    "pixel_shuffle",
    "total_variation",
]


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_images(x, name: str, channels: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point Tensor[N, C, H, W], got {getattr(x, 'shape', x)!r}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")


def _conv_stack(in_ch: int, width: int, out_ch: int, depth: int) -> nn.Sequential:
    """``depth`` 3x3 convolutions, ReLU after all but the last (no pooling, no normalization)."""
    layers: list[nn.Module] = []
    chans = [in_ch, *([width] * (depth - 1)), out_ch]
    for k, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        layers.append(nn.Conv2d(a, b, 3, padding=1))
        if k < depth - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# denoising
# --------------------------------------------------------------------------------------------
class DnCNN(nn.Module):
    """A residual denoiser: ``x_hat = y + f(y)`` with ``f`` a stack of ``depth`` 3x3 convolutions.

    The last convolution starts at zero, so the untrained model is the identity (PSNR of the noisy
    input) and training only has to learn the correction.

    Args:
        channels: image channels.
        width: channels of the hidden layers.
        depth: number of convolutions (>= 2).
    Shapes:
        ``Tensor[N, channels, H, W] -> Tensor[N, channels, H, W]``.
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        self.channels = _check_int("channels", channels)
        _check_int("width", width)
        self.body = _conv_stack(channels, width, channels, _check_int("depth", depth, 2))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, y: Tensor) -> Tensor:
        _check_images(y, "y", self.channels)
        return y + self.body(y)


class NoiseEstimator(nn.Module):
    """CBDNet's noise-estimation subnet ``CNN_E``: fully convolutional, no pooling and no
    normalization, 3x3 filters, ReLU after every convolution (so ``sigma_hat >= 0``).

    Shapes:
        ``Tensor[N, channels, H, W] -> Tensor[N, channels, H, W]`` (one noise level per pixel and channel).
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.channels = _check_int("channels", channels)
        _check_int("width", width)
        self.net = nn.Sequential(
            *_conv_stack(channels, width, channels, _check_int("depth", depth)), nn.ReLU()
        )

    def forward(self, y: Tensor) -> Tensor:
        _check_images(y, "y", self.channels)
        return self.net(y)


class CBDNet(nn.Module):
    """A CBDNet-lite: ``sigma_hat = CNN_E(y)``, then ``x_hat = y + R(y, sigma_hat)``.

    CBDNet's non-blind subnet is a U-Net; here it is a plain residual CNN (``depth`` 3x3 convolutions on
    the ``2 * channels`` input ``cat(y, sigma_hat)``), enough for 16-32 px images. The map can be
    replaced at test time (``sigma_map=``), which is how CBDNet lets a user turn the denoising strength
    up or down.

    Returns:
        ``(x_hat, sigma_hat)``, both ``Tensor[N, channels, H, W]``.
    """

    def __init__(
        self, channels: int = 3, width: int = 32, depth: int = 5, est_width: int = 16, est_depth: int = 3
    ) -> None:
        super().__init__()
        self.channels = _check_int("channels", channels)
        self.estimator = NoiseEstimator(channels, est_width, est_depth)
        self.body = _conv_stack(
            2 * channels, _check_int("width", width), channels, _check_int("depth", depth, 2)
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, y: Tensor, sigma_map: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_images(y, "y", self.channels)
        sigma_hat = self.estimator(y)
        used = sigma_hat if sigma_map is None else sigma_map.expand_as(y)
        return y + self.body(torch.cat([y, used], dim=1)), sigma_hat


def total_variation(x: Tensor) -> Tensor:
    """Squared total variation ``mean((dx)^2) + mean((dy)^2)`` of ``Tensor[N, C, H, W]`` (a scalar)."""
    _check_images(x, "x")
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


def cbdnet_loss(
    x_hat: Tensor,
    x: Tensor,
    sigma_hat: Tensor,
    sigma: Tensor,
    *,
    alpha: float = 0.3,
    est_weight: float = 1.0,
    tv_weight: float = 0.05,
) -> Tensor:
    """CBDNet's loss on synthetic pairs: ``MSE(x_hat, x) + est_weight * L_asymm + tv_weight * TV(sigma_hat)``.

    ``L_asymm = mean(|alpha - 1[sigma_hat < sigma]| (sigma_hat - sigma)^2)``: with ``alpha < 0.5`` an
    under-estimate costs ``1 - alpha`` and an over-estimate ``alpha`` (CBDNet over-estimates on purpose,
    since a denoiser told too little noise leaves noise in). ``alpha = 0.5`` is half the plain MSE.

    Args:
        x_hat, x: denoised and clean images, ``Tensor[N, C, H, W]``.
        sigma_hat: the estimated map, same shape.
        sigma: the true noise level, ``Tensor[N]`` (one per image) or a map of ``x``'s shape.
    """
    for name, t in (("x_hat", x_hat), ("x", x), ("sigma_hat", sigma_hat)):
        _check_images(t, name)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if sigma.ndim == 1:
        sigma = sigma.to(sigma_hat)[:, None, None, None]
    diff = sigma_hat - sigma
    weight = (alpha - (diff < 0).to(diff)).abs()
    return (
        F.mse_loss(x_hat, x)
        + est_weight * (weight * diff.square()).mean()
        + tv_weight * total_variation(sigma_hat)
    )


# --------------------------------------------------------------------------------------------
# super-resolution: sub-pixel convolution
# --------------------------------------------------------------------------------------------
def pixel_shuffle(x: Tensor, r: int) -> Tensor:
    """Rearrange ``Tensor[N, C r^2, H, W]`` into ``Tensor[N, C, H r, W r]`` (equals ``F.pixel_shuffle``).

    Output pixel ``(c, h r + i, w r + j)`` is input channel ``c r^2 + i r + j`` at ``(h, w)``: each group of
    ``r^2`` channels holds the ``r x r`` sub-pixels of one output channel.
    """
    _check_images(x, "x")
    _check_int("r", r)
    n, cr2, h, w = x.shape
    if cr2 % (r * r):
        raise ValueError(f"channels ({cr2}) must be a multiple of r^2 = {r * r}")
    c = cr2 // (r * r)
    return x.reshape(n, c, r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * r, w * r)


class PixelShuffle(nn.Module):
    """Module form of :func:`pixel_shuffle` (same as ``torch.nn.PixelShuffle``)."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = _check_int("r", r)

    def forward(self, x: Tensor) -> Tensor:
        return pixel_shuffle(x, self.r)

    def extra_repr(self) -> str:
        return f"r={self.r}"


class ESPCN(nn.Module):
    """ESPCN (Shi et al., 2016): all convolutions at low resolution, then one sub-pixel shuffle.

    conv 5x5 (``channels -> widths[0]``) -> act -> conv 3x3 (``-> widths[1]``) -> act ... -> conv 3x3
    (``-> channels r^2``) -> :class:`PixelShuffle` ``(r)`` (the paper's ``widths`` are (64, 32)). With
    ``residual=True`` the network predicts a correction added to the bicubic upsampling of the input
    (the last conv starts at zero, so the untrained model *is* bicubic). ``activation`` is ``"tanh"``
    (the paper's choice) or ``"relu"``. Behind the zero-initialized last layer, tanh trains slowly at
    first (a plateau of a few hundred steps in chapter 19's demo); ReLU learns much faster there, but
    at a too-high learning rate (1e-2 with Adam and an L1 loss) all its units can die in the first
    steps, after which the model stays bicubic.

    Shapes:
        ``Tensor[N, channels, H, W] -> Tensor[N, channels, H r, W r]``.
    """

    def __init__(
        self,
        channels: int = 1,
        scale: int = 2,
        widths: Sequence[int] = (32, 16),
        *,
        residual: bool = True,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.channels = _check_int("channels", channels)
        self.scale = _check_int("scale", scale, 2)
        widths = [_check_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
        if not widths:
            raise ValueError("widths must list at least one hidden layer")
        acts = {"tanh": nn.Tanh, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.residual = residual
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([channels, *widths[:-1]], widths, strict=True)):
            layers += [nn.Conv2d(a, b, 5 if i == 0 else 3, padding=2 if i == 0 else 1), acts[activation]()]
        self.last = nn.Conv2d(widths[-1], channels * scale * scale, 3, padding=1)
        self.body = nn.Sequential(*layers, self.last, PixelShuffle(scale))
        if residual:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, "x", self.channels)
        out = self.body(x)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


# --------------------------------------------------------------------------------------------
# inpainting: partial and gated convolution
# --------------------------------------------------------------------------------------------
class PartialConv2d(nn.Module):
    """Partial convolution (Liu et al., 2018) with a single-channel validity mask ``M`` (1 = known).

    ``x' = W^T (X * M) * sum(1) / sum(M) + b`` where the window holds at least one valid pixel, else 0;
    ``m' = 1[sum(M) > 0]``. ``sum(1) / sum(M)`` is ``k^2 / (valid pixels in the k x k window)``, the
    renormalization that makes a half-valid window respond as strongly as a full one. The mask update
    is a convolution of ``M`` with an all-ones kernel: every layer the hole loses the pixels within
    the kernel's reach of a valid pixel.

    Returns:
        ``(out, new_mask)``: ``Tensor[N, out_channels, H', W']`` and ``Tensor[N, 1, H', W']``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        k = _check_int("kernel_size", kernel_size)
        padding = dilation * (k - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, k, stride, padding, dilation, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("ones", torch.ones(1, 1, k, k), persistent=False)
        self.window = float(k * k)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _check_images(x, "x", self.conv.in_channels)
        if not isinstance(mask, Tensor) or mask.shape != (x.shape[0], 1, *x.shape[2:]):
            raise ValueError(f"mask must be a Tensor[N, 1, H, W] matching x {tuple(x.shape)}")
        mask = mask.to(x)
        c = self.conv
        with torch.no_grad():
            count = F.conv2d(
                mask, self.ones, None, c.stride, c.padding, c.dilation
            )  # valid pixels per window
        new_mask = (count > 0).to(x)
        scale = self.window / count.clamp(min=1.0) * new_mask
        out = c(x * mask) * scale
        if self.bias is not None:
            out = out + self.bias[None, :, None, None] * new_mask
        return out, new_mask


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., 2019): ``phi(W_f * I) * sigmoid(W_g * I)``.

    Two convolutions of the same input: ``feature`` gives the features, ``gating`` a soft mask in (0, 1)
    per channel and per pixel, learned instead of the hard 0/1 rule of :class:`PartialConv2d`.
    ``activation`` is ``phi`` (ELU by default, as in DeepFill v2; ``None`` for the output layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        k = _check_int("kernel_size", kernel_size)
        padding = dilation * (k - 1) // 2
        self.feature = nn.Conv2d(in_channels, out_channels, k, stride, padding, dilation)
        self.gating = nn.Conv2d(in_channels, out_channels, k, stride, padding, dilation)
        self.activation = nn.ELU() if activation is None else activation

    def gate(self, x: Tensor) -> Tensor:
        """The soft gate ``sigmoid(W_g * x)``, in (0, 1)."""
        return torch.sigmoid(self.gating(x))

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, "x", self.feature.in_channels)
        return self.activation(self.feature(x)) * self.gate(x)


class PartialConvNet(nn.Module):
    """A small inpainting network of stacked :class:`PartialConv2d` (ReLU between them).

    Input: the image with its hole values anywhere (they are ignored) and the **hole** mask (1 = fill);
    output: the full image. Compose with :meth:`composite` to keep the known pixels.
    """

    def __init__(self, channels: int = 3, width: int = 16, depth: int = 5) -> None:
        super().__init__()
        chans = [channels, *([width] * (_check_int("depth", depth, 2) - 1)), channels]
        self.layers = nn.ModuleList(PartialConv2d(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True))

    def forward(self, x: Tensor, hole: Tensor) -> Tensor:
        m = 1.0 - hole.to(x)
        for i, layer in enumerate(self.layers):
            x, m = layer(x, m)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x

    @staticmethod
    def composite(out: Tensor, image: Tensor, hole: Tensor) -> Tensor:
        """``I_comp``: the known pixels of ``image`` and ``out`` in the hole."""
        return image * (1 - hole) + out * hole


class GatedConvNet(nn.Module):
    """A small inpainting network: :class:`GatedConv2d` layers with dilations (1, 2, 4, 2 by default),
    then a plain 3x3 convolution to the image.

    Input, as in DeepFill v2: ``cat(image * (1 - hole) + fill * hole, hole)`` (hole pixels set to
    ``fill``, plus the mask as a 4th channel); output: the full image. The last layer is ungated: a product of gates
    in every layer (each about 0.5 at initialization) shrinks the signal and slowed training here.
    """

    def __init__(
        self,
        channels: int = 3,
        width: int = 16,
        dilations: Sequence[int] = (1, 2, 4, 2),
        *,
        fill: float = 1.0,
    ) -> None:
        super().__init__()
        self.fill = float(fill)
        dil = list(dilations)
        if not dil:
            raise ValueError(f"dilations must list at least 1 gated layer, got {dilations!r}")
        chans = [channels + 1, *([width] * len(dil))]
        self.layers = nn.ModuleList(
            GatedConv2d(a, b, dilation=d) for a, b, d in zip(chans[:-1], chans[1:], dil, strict=True)
        )
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, hole: Tensor) -> Tensor:
        hole = hole.to(x)
        h = torch.cat([x * (1 - hole) + self.fill * hole, hole], dim=1)
        for layer in self.layers:
            h = layer(h)
        return self.out(h)

    composite = staticmethod(PartialConvNet.composite)
