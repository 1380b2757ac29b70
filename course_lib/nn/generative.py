"""Generators and critics (chapter 10): DCGAN-style networks for small images, the PatchGAN
discriminator of pix2pix with an exact receptive-field helper, ProGAN's fade-in, BigGAN's and
StyleGAN's truncation tricks, and the pieces of a StyleGAN-like toy generator (mapping network,
AdaIN, noise inputs, style mixing).

Chapters 11 (diffusion) and 19 (restoration and style transfer) reuse :func:`adain`,
:class:`PatchGANDiscriminator` and :func:`receptive_field`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import _check_channels, norm_layer

__all__ = [
    "AdaIN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MappingNetwork",
    "PatchGANDiscriminator",
    "ToyStyleGenerator",
    "adain",
    "fade_in",
    "receptive_field",
    "style_mix",
    "truncate",
    "truncated_normal",
]


def _check_image_batch(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float Tensor[N, C, H, W], got {tuple(x.shape)} {x.dtype}")


# --------------------------------------------------------------------------------------------
# AdaIN and the StyleGAN-like toy
# --------------------------------------------------------------------------------------------
def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""Adaptive instance normalization (Huang and Belongie, 2017; StyleGAN's style modulation):

    .. math::
        \mathrm{AdaIN}(x_i, y) = y_{s,i}\,\frac{x_i - \mu(x_i)}{\sigma(x_i)} + y_{b,i}

    Each channel ``i`` of each sample is standardized over its spatial positions (``σ`` is the
    population standard deviation, ``sqrt(var + eps)``), then scaled and shifted by the style. The
    output's per-channel mean is therefore ``bias`` and its standard deviation ``|scale|`` (up to
    ``eps``): the style *replaces* the statistics of the feature map.

    Args:
        x: ``Tensor[N, C, H, W]`` with ``H * W >= 2``.
        scale: ``Tensor[N, C]`` the style's scales :math:`y_s`.
        bias: ``Tensor[N, C]`` the style's biases :math:`y_b`.
        eps: added to the variance.
    Returns:
        ``Tensor[N, C, H, W]``.

    Introduced in chapter 10.
    """
    _check_image_batch(x, "x")
    n, c = x.shape[:2]
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"x needs at least 2 spatial positions per channel, got {tuple(x.shape)}")
    for name, t in (("scale", scale), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n, c):
            raise ValueError(
                f"{name} must be a Tensor[N, C] = [{n}, {c}], got {getattr(t, 'shape', type(t).__name__)}"
            )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, correction=0)
    return scale[:, :, None, None] * (x - mu) * torch.rsqrt(var + eps) + bias[:, :, None, None]


class AdaIN(nn.Module):
    """AdaIN with StyleGAN's learned affine map "A" from a latent ``w`` to the style ``(y_s, y_b)``.

    The affine layer starts at ``y_s = 1, y_b = 0`` plus a small ``w``-dependent term, so an untrained
    generator begins close to plain instance normalization.

    Args:
        channels: channels ``C`` of the feature map.
        w_dim: length of ``w``.
    Shapes:
        ``forward(x: Tensor[N, C, H, W], w: Tensor[N, w_dim]) -> Tensor[N, C, H, W]``.

    Introduced in chapter 10.
    """

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        _check_channels(channels=channels, w_dim=w_dim)
        self.channels = channels
        self.affine = nn.Linear(w_dim, 2 * channels)
        with torch.no_grad():
            self.affine.bias.zero_()
            self.affine.bias[:channels] = 1.0

    def style(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y_s, y_b)``, each ``Tensor[N, C]``."""
        scale, bias = self.affine(w).chunk(2, dim=1)
        return scale, bias

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or w.shape[1] != self.affine.in_features:
            raise ValueError(
                f"w must be a Tensor[N, {self.affine.in_features}], got {getattr(w, 'shape', type(w).__name__)}"
            )
        return adain(x, *self.style(w))


class MappingNetwork(nn.Module):
    """StyleGAN's mapping network ``f: z -> w``: pixel norm of ``z`` (each ``z`` rescaled to unit
    root-mean-square), then ``depth`` fully connected layers with LeakyReLU(0.2).

    StyleGAN uses ``depth = 8`` and 512-dimensional ``z`` and ``w``.

    Args:
        latent_dim: length of ``z``.
        w_dim: length of ``w``.
        depth: number of linear layers (>= 1).
        hidden: width of the hidden layers (``w_dim`` by default).
    Shapes:
        ``Tensor[N, latent_dim] -> Tensor[N, w_dim]``.

    Introduced in chapter 10.
    """

    def __init__(self, latent_dim: int, w_dim: int, depth: int = 8, hidden: int | None = None) -> None:
        super().__init__()
        hidden = w_dim if hidden is None else hidden
        _check_channels(latent_dim=latent_dim, w_dim=w_dim, depth=depth, hidden=hidden)
        self.latent_dim = latent_dim
        sizes = [latent_dim, *([hidden] * (depth - 1)), w_dim]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if k < depth - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z must be a Tensor[N, {self.latent_dim}], got {getattr(z, 'shape', type(z).__name__)}"
            )
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        return self.net(z)


def style_mix(w1: torch.Tensor, w2: torch.Tensor, crossover: int, num_layers: int) -> torch.Tensor:
    """Per-layer latents for style mixing: ``w1`` for layers ``< crossover``, ``w2`` from there on.

    ``crossover = num_layers`` gives ``w1`` everywhere (no mixing), ``crossover = 0`` gives ``w2``
    everywhere; in between, the coarse (early) layers take their style from ``w1`` and the fine
    (late) ones from ``w2``.

    Args:
        w1, w2: ``Tensor[N, w_dim]``.
        crossover: an int in ``[0, num_layers]``.
        num_layers: the number of styled layers.
    Returns:
        ``Tensor[N, num_layers, w_dim]``, the input of :meth:`ToyStyleGenerator.synthesis`.

    Introduced in chapter 10.
    """
    if not isinstance(w1, torch.Tensor) or w1.ndim != 2 or not isinstance(w2, torch.Tensor):
        raise ValueError(f"w1 must be a Tensor[N, w_dim], got {getattr(w1, 'shape', type(w1).__name__)}")
    if w1.shape != w2.shape:
        raise ValueError(f"w1 and w2 must have the same shape, got {tuple(w1.shape)} and {tuple(w2.shape)}")
    _check_channels(num_layers=num_layers)
    if isinstance(crossover, bool) or not isinstance(crossover, int) or not 0 <= crossover <= num_layers:
        raise ValueError(f"crossover must be an int in [0, {num_layers}], got {crossover!r}")
    first = torch.arange(num_layers, device=w1.device) < crossover  # [L]
    return torch.where(first[None, :, None], w1[:, None], w2[:, None])


class ToyStyleGenerator(nn.Module):
    """A StyleGAN-like generator small enough to run untrained on a CPU (Karras et al., 2019).

    - a :class:`MappingNetwork` turns ``z`` into ``w``;
    - synthesis starts from a **learned constant** ``Tensor[C, 4, 4]``, not from ``z``;
    - each styled layer: (nearest 2× upsampling on every second layer) → 3×3 convolution → add
      per-pixel Gaussian **noise** scaled by a learned per-channel factor → LeakyReLU(0.2) →
      :class:`AdaIN` with its own ``w``;
    - a 1×1 convolution ("toRGB") gives the image.

    Args:
        latent_dim: length of ``z``.
        w_dim: length of ``w``.
        channels: channels of the styled layers; the map doubles in size before layers 2, 4, ...
        out_channels: image channels.
        mapping_depth: layers of the mapping network.
        noise_std: initial value of the per-channel noise scales.
    Shapes:
        ``forward(z: Tensor[N, latent_dim]) -> Tensor[N, out_channels, S, S]`` with
        ``S = 4 * 2 ** ((len(channels) - 1) // 2)``.

    Introduced in chapter 10.
    """

    def __init__(
        self,
        latent_dim: int = 16,
        w_dim: int = 16,
        channels: Sequence[int] = (32, 32, 16, 16),
        *,
        out_channels: int = 1,
        mapping_depth: int = 4,
        noise_std: float = 0.2,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if not channels:
            raise ValueError("channels must list at least one styled layer")
        for i, c in enumerate(channels):
            _check_channels(**{f"channels[{i}]": c})
        _check_channels(out_channels=out_channels)
        self.w_dim = w_dim
        self.num_layers = len(channels)
        self.mapping = MappingNetwork(latent_dim, w_dim, mapping_depth)
        self.const = nn.Parameter(torch.randn(channels[0], 4, 4))
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1)
            for c_in, c_out in zip((channels[0], *channels[:-1]), channels, strict=True)
        )
        self.noise_scales = nn.ParameterList(
            nn.Parameter(torch.full((c,), float(noise_std))) for c in channels
        )
        self.styles = nn.ModuleList(AdaIN(c, w_dim) for c in channels)
        self.to_rgb = nn.Conv2d(channels[-1], out_channels, 1)
        self.upsample_before = [i > 0 and i % 2 == 0 for i in range(self.num_layers)]

    @property
    def image_size(self) -> int:
        return 4 * 2 ** sum(self.upsample_before)

    def noise_shapes(self, n: int) -> list[tuple[int, int, int, int]]:
        """The shape of each layer's noise input for a batch of ``n``."""
        shapes, size = [], 4
        for up in self.upsample_before:
            size *= 2 if up else 1
            shapes.append((n, 1, size, size))
        return shapes

    def synthesis(
        self,
        ws: torch.Tensor,
        noise: Sequence[torch.Tensor] | str = "random",
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The image from per-layer latents.

        Args:
            ws: ``Tensor[N, w_dim]`` (the same ``w`` for every layer) or ``Tensor[N, L, w_dim]`` with
                ``L`` = the number of styled layers (see :func:`style_mix`).
            noise: ``"random"`` (fresh Gaussian noise from ``generator``), ``"zero"`` (no noise), or a
                list of one ``Tensor[N, 1, H, W]`` per layer (see :meth:`noise_shapes`).
            generator: the random stream for ``noise="random"``.
        """
        if not isinstance(ws, torch.Tensor) or ws.ndim not in (2, 3) or ws.shape[-1] != self.w_dim:
            raise ValueError(
                f"ws must be a Tensor[N, {self.w_dim}] or [N, {self.num_layers}, {self.w_dim}], "
                f"got {getattr(ws, 'shape', type(ws).__name__)}"
            )
        if ws.ndim == 2:
            ws = ws[:, None].expand(-1, self.num_layers, -1)
        if ws.shape[1] != self.num_layers:
            raise ValueError(f"ws must hold one w per layer ({self.num_layers}), got {ws.shape[1]}")
        n = ws.shape[0]
        shapes = self.noise_shapes(n)
        if isinstance(noise, str):
            if noise not in ("random", "zero"):
                raise ValueError(f"noise must be 'random', 'zero' or a list of tensors, got {noise!r}")
            if noise == "zero":
                noises = [None] * self.num_layers
            else:
                noises = [
                    torch.randn(s, generator=generator, device="cpu" if generator is None else generator.device)
                    .to(ws) for s in shapes
                ]  # fmt: skip
        else:
            noises = list(noise)
            if len(noises) != self.num_layers or any(
                tuple(t.shape) != s for t, s in zip(noises, shapes, strict=True)
            ):
                raise ValueError(f"noise must be {self.num_layers} tensors of shapes {shapes}")
        x = self.const[None].expand(n, -1, -1, -1)
        for i, (conv, scale, style, up) in enumerate(
            zip(self.convs, self.noise_scales, self.styles, self.upsample_before, strict=True)
        ):
            if up:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = conv(x)
            if noises[i] is not None:
                x = x + scale[None, :, None, None] * noises[i]
            x = style(F.leaky_relu(x, 0.2), ws[:, i])
        return self.to_rgb(x)

    def forward(
        self,
        z: torch.Tensor,
        noise: Sequence[torch.Tensor] | str = "random",
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.synthesis(self.mapping(z), noise, generator=generator)


# --------------------------------------------------------------------------------------------
# truncation (BigGAN, StyleGAN) and ProGAN's fade-in
# --------------------------------------------------------------------------------------------
def truncated_normal(
    shape: Sequence[int], threshold: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """BigGAN's truncation trick: standard normal samples whose entries beyond ``±threshold`` are
    redrawn until they fall inside. A smaller threshold trades diversity for fidelity.

    Args:
        shape: the output shape.
        threshold: > 0; ``math.inf`` gives plain ``torch.randn``.
        generator: the random stream (a CPU generator).
    Returns:
        ``Tensor[shape]`` (float32, on the CPU).

    Introduced in chapter 10.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    z = torch.randn(*shape, generator=generator)
    if math.isinf(threshold):
        return z
    out = z.abs() > threshold
    while out.any():
        z[out] = torch.randn(int(out.sum()), generator=generator)
        out = z.abs() > threshold
    return z


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    r"""StyleGAN's truncation in ``W``: :math:`w' = \bar w + \psi\,(w - \bar w)`.

    ``psi = 1`` leaves ``w`` unchanged, ``psi = 0`` maps every sample to the average ``w``.

    Args:
        w: ``Tensor[..., w_dim]``.
        w_avg: ``Tensor[w_dim]``, the mean of ``w`` over many ``z`` (a running average in StyleGAN).
        psi: the truncation factor (usually in ``[0, 1]``).

    Introduced in chapter 10.
    """
    if not isinstance(w, torch.Tensor) or not isinstance(w_avg, torch.Tensor) or w_avg.shape != w.shape[-1:]:
        raise ValueError(
            f"w_avg must be a Tensor[w_dim] matching w's last dimension, got "
            f"{getattr(w_avg, 'shape', None)} and {getattr(w, 'shape', None)}"
        )
    return w_avg + psi * (w - w_avg)


def fade_in(old_rgb: torch.Tensor, new_rgb: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""ProGAN's fade-in of a new, doubled resolution (Karras et al., 2018):

    .. math::
        \text{out} = (1-\alpha)\,\mathrm{Up}_\text{nearest}(\text{old}) + \alpha\,\text{new}

    ``old_rgb`` is the image the network produced before the new block (at half the resolution),
    ``new_rgb`` the new block's output; ``alpha`` grows from 0 to 1 during the transition, so the new
    layers blend in instead of shocking the trained ones.

    Args:
        old_rgb: ``Tensor[N, C, H, W]``.
        new_rgb: ``Tensor[N, C, 2H, 2W]``.
        alpha: in ``[0, 1]``.
    Returns:
        ``Tensor[N, C, 2H, 2W]``.

    Introduced in chapter 10.
    """
    _check_image_batch(old_rgb, "old_rgb")
    _check_image_batch(new_rgb, "new_rgb")
    n, c, h, w = old_rgb.shape
    if tuple(new_rgb.shape) != (n, c, 2 * h, 2 * w):
        raise ValueError(
            f"new_rgb must have twice old_rgb's size, {(n, c, 2 * h, 2 * w)}, got {tuple(new_rgb.shape)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return (1 - alpha) * F.interpolate(old_rgb, scale_factor=2, mode="nearest") + alpha * new_rgb


# --------------------------------------------------------------------------------------------
# DCGAN-style networks for small images
# --------------------------------------------------------------------------------------------
def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size!r}")
    stages = int(math.log2(image_size)) - 2
    if 4 * 2**stages != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return stages


class DCGANGenerator(nn.Module):
    """A DCGAN generator (Radford et al., 2016) for small square images, optionally conditional.

    ``z`` (with a one-hot class appended when ``num_classes > 0``, the cGAN of Mirza and Osindero,
    2014) is projected to a 4×4 map by a 4×4 transposed convolution, then each stage doubles the
    size and halves the channels (transposed convolution 4×4, stride 2 → BatchNorm → ReLU); a 3×3
    convolution and ``tanh`` give the image in ``[-1, 1]``. No pooling, no fully connected layer.

    Args:
        latent_dim: length of ``z``.
        out_channels: image channels.
        image_size: a power of two >= 8.
        base_channels: channels of the last stage (doubled per earlier stage).
        num_classes: ``0`` for an unconditional generator.
    Shapes:
        ``forward(z: Tensor[N, latent_dim], labels: Tensor[N] | None) -> Tensor[N, C, S, S]``.

    Introduced in chapter 10.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        out_channels: int = 1,
        image_size: int = 8,
        base_channels: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        stages = _check_size(image_size)
        _check_channels(latent_dim=latent_dim, out_channels=out_channels, base_channels=base_channels)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.latent_dim, self.num_classes = latent_dim, num_classes
        width = base_channels * 2**stages
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + num_classes, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        for _ in range(stages):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.Conv2d(width, out_channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"z must be a Tensor[N, {self.latent_dim}], got {getattr(z, 'shape', type(z).__name__)}"
            )
        z = _append_labels(z, labels, self.num_classes)
        return self.net(z[:, :, None, None])


def _append_labels(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Concatenate one-hot labels along dim 1 (as constant planes for images)."""
    if num_classes == 0:
        if labels is not None:
            raise ValueError("labels given to an unconditional model (num_classes=0)")
        return x
    if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],) or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer Tensor[{x.shape[0]}], got {getattr(labels, 'shape', labels)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    onehot = F.one_hot(labels, num_classes).to(x.dtype)
    if x.ndim == 4:
        onehot = onehot[:, :, None, None].expand(-1, -1, *x.shape[2:])
    return torch.cat([x, onehot], dim=1)


class DCGANDiscriminator(nn.Module):
    """The DCGAN discriminator mirroring :class:`DCGANGenerator`: strided 4×4 convolutions (stride 2)
    with LeakyReLU(0.2) down to 4×4, then a 4×4 convolution to one **logit** per image (no sigmoid:
    the losses of :mod:`course_lib.losses` take logits). BatchNorm after every convolution but the
    first, as in DCGAN; ``norm=None`` drops it, as a WGAN-GP critic must (the penalty is per sample).

    A conditional discriminator (``num_classes > 0``) sees the class as ``num_classes`` constant
    one-hot planes concatenated to the image.

    Args:
        in_channels: image channels.
        image_size: a power of two >= 8.
        base_channels: channels of the first convolution (doubled per stage).
        num_classes: ``0`` for an unconditional discriminator.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``None`` (see :func:`norm_layer`).
    Shapes:
        ``forward(x: Tensor[N, C, S, S], labels: Tensor[N] | None) -> Tensor[N]``.

    Introduced in chapter 10.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        base_channels: int = 32,
        num_classes: int = 0,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        stages = _check_size(image_size)
        _check_channels(in_channels=in_channels, base_channels=base_channels)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        width = base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels + num_classes, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(width, 2 * width, 4, 2, 1), norm_layer(norm, 2 * width), nn.LeakyReLU(0.2)]
            width *= 2
        if stages == 1:  # 8×8 → 4×4 in one step: add a 3×3 layer so D has two hidden layers
            layers += [nn.Conv2d(width, 2 * width, 3, 1, 1), norm_layer(norm, 2 * width), nn.LeakyReLU(0.2)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        _check_image_batch(x, "x")
        if x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"x must be Tensor[N, {self.in_channels}, {self.image_size}, {self.image_size}], "
                f"got {tuple(x.shape)}"
            )
        return self.net(_append_labels(x, labels, self.num_classes)).flatten()


# --------------------------------------------------------------------------------------------
# PatchGAN (pix2pix) and receptive fields
# --------------------------------------------------------------------------------------------
class PatchGANDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix (Isola et al., 2017): a fully convolutional network
    that gives one real/fake **logit per overlapping patch** instead of one per image.

    ``C64-C128-C256-C512`` in the paper's notation for ``n_layers = 3``: 4×4 convolutions, the first
    ``n_layers`` with stride 2 and the next one with stride 1, channels doubling up to
    ``8 * base_channels``, LeakyReLU(0.2), normalization on all but the first; a final 4×4 stride-1
    convolution to one channel. Every convolution pads by 1. With ``n_layers = 3`` each output sees a
    70×70 patch of the input (:func:`receptive_field`), and a 256×256 input gives a 30×30 map.
    ``n_layers = 1`` gives 16×16 patches, ``n_layers = 2`` 34×34.

    For pix2pix the discriminator sees the (input, output) pair: ``in_channels`` is the sum of both.

    Args:
        in_channels: input channels.
        base_channels: channels of the first convolution (64 in the paper).
        n_layers: number of stride-2 convolutions.
        norm: ``"batch"`` (the paper), ``"instance"``, ``"group"`` or ``None``.
        kernel_size: 4 in the paper.
    Shapes:
        ``Tensor[N, in_channels, H, W] -> Tensor[N, 1, H', W']`` (logits).

    Introduced in chapter 10.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        n_layers: int = 3,
        norm: str | None = "batch",
        kernel_size: int = 4,
    ) -> None:
        super().__init__()
        _check_channels(in_channels=in_channels, base_channels=base_channels, n_layers=n_layers)
        _check_channels(kernel_size=kernel_size)
        k = kernel_size
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, k, 2, 1), nn.LeakyReLU(0.2)]
        width = base_channels
        for i in range(1, n_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, out, k, stride, 1), norm_layer(norm, out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, k, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_batch(x, "x")
        return self.net(x)


_RF_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(v, name: str) -> tuple[int, int]:
    t = tuple(v) if isinstance(v, tuple | list) else (v, v)
    if len(t) != 2 or any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in t):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return t  # type: ignore[return-value]


def receptive_field(layers: nn.Module | Sequence[tuple[int, ...]]) -> int:
    r"""The exact receptive field of a chain of convolutions and poolings, in input pixels.

    Walking from the input, with jump :math:`j_0 = 1` (the distance in input pixels between two
    neighbouring positions of the current map):

    .. math::
        r = 1 + \sum_l (k_l - 1)\, d_l\, j_{l-1}, \qquad j_l = j_{l-1}\, s_l

    for kernel :math:`k_l`, stride :math:`s_l` and dilation :math:`d_l`. Padding shifts where a window
    sits, not how wide it is, and element-wise layers (activations, normalization at eval time) add
    nothing.

    Args:
        layers: an ``nn.Module`` whose ``Conv2d``, ``MaxPool2d`` and ``AvgPool2d`` submodules, in
            registration order, form a chain (``modules()`` order; no branches), or a sequence of
            ``(kernel, stride)`` or ``(kernel, stride, dilation)`` tuples.
    Returns:
        the side of the (square) receptive field, an int.

    Introduced in chapter 06 (receptive fields, computed there by hand); this helper in chapter 10.
    """
    specs: list[tuple[int, int, int]] = []
    if isinstance(layers, nn.Module):
        for m in layers.modules():
            if isinstance(m, _RF_LAYERS):
                k = _pair(m.kernel_size, "kernel_size")
                s = _pair(m.stride if m.stride is not None else m.kernel_size, "stride")
                d = _pair(getattr(m, "dilation", 1), "dilation")
                if k[0] != k[1] or s[0] != s[1] or d[0] != d[1]:
                    raise ValueError(
                        f"receptive_field handles square kernels, strides and dilations only, got {m}"
                    )
                specs.append((k[0], s[0], d[0]))
        if not specs:
            raise ValueError("layers holds no Conv2d, MaxPool2d or AvgPool2d")
    else:
        for spec in layers:
            if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
                raise ValueError(f"each layer must be (kernel, stride[, dilation]), got {spec!r}")
            vals = tuple(spec) + ((1,) if len(spec) == 2 else ())
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
                raise ValueError(f"kernel, stride and dilation must be positive ints, got {spec!r}")
            specs.append(vals)  # type: ignore[arg-type]
    r, jump = 1, 1
    for k, s, d in specs:
        r += (k - 1) * d * jump
        jump *= s
    return r
