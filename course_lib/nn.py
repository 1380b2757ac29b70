"""Neural-network building blocks: activations, MLPs, weight initialization and activation statistics.

Introduced in chapter 02 (activation functions and weight initialization) with :func:`activation`,
:func:`mlp`, :func:`init_weights` and :class:`ActivationRecorder`. Chapter 05 (regularization) adds
:func:`norm_layer`, :class:`ConvNormAct` and :class:`DropPath`; chapter 06 (CNNs) the residual blocks
and :class:`ResNet`; chapter 07 (segmentation) :class:`UNet` and :class:`ASPP`; chapter 08 (detection)
:class:`FPN` and :class:`DetectionHead`. Later chapters add attention.

Import it under another name so that it does not shadow ``torch.nn``::

    from torch import nn
    from course_lib import nn as cnn
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_TYPES",
    "INIT_SCHEMES",
    "NORMS",
    "ASPP",
    "ActivationRecorder",
    "BasicBlock",
    "Bottleneck",
    "ConvNormAct",
    "DetectionHead",
    "DropPath",
    "FPN",
    "LayerStats",
    "ResNet",
    "UNet",
    "activation",
    "double_conv",
    "init_weights",
    "layer_stats",
    "mlp",
    "norm_layer",
]

#: Activation modules by name. ``leaky_relu`` uses the usual negative slope 0.01; ``gelu`` is the exact
#: :math:`x\Phi(x)` and ``gelu_tanh`` its tanh approximation.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda **kw: nn.GELU(approximate="tanh", **kw),
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

#: The module types that :class:`ActivationRecorder` watches by default.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
)

#: Weight-initialization schemes understood by :func:`init_weights`.
INIT_SCHEMES = (
    "zeros",
    "normal",
    "lecun_normal",
    "xavier_normal",
    "xavier_uniform",
    "he_normal",
    "he_uniform",
    "torch_default",
)

_INIT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


# --------------------------------------------------------------------------------------------
# activations and MLPs
# --------------------------------------------------------------------------------------------
def activation(name: str, **kwargs) -> nn.Module:
    """A new activation module by name.

    Args:
        name: one of :data:`ACTIVATIONS` (``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``gelu_tanh``,
            ``selu``, ``silu``, ``tanh``, ``sigmoid``, ``identity``).
        kwargs: passed to the module, e.g. ``activation("leaky_relu", negative_slope=0.2)``.
    Returns:
        an ``nn.Module`` mapping ``Tensor[*]`` to ``Tensor[*]`` elementwise.

    Introduced in chapter 02.
    """
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a str, got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](**kwargs)


def _make_activation(spec: str | Callable[[], nn.Module] | nn.Module) -> nn.Module:
    if isinstance(spec, str):
        return activation(spec)
    if isinstance(spec, nn.Module):  # an instance: every layer gets its own copy
        return copy.deepcopy(spec)
    if callable(spec):
        module = spec()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"activation must be a name, an nn.Module or a factory returning one; the factory "
                f"returned {type(module).__name__}"
            )
        return module
    raise TypeError(f"activation must be a str, an nn.Module or a factory, got {type(spec).__name__}")


def mlp(
    sizes: Sequence[int],
    activation: str | Callable[[], nn.Module] | nn.Module = "relu",
    *,
    bias: bool = True,
    final_activation: bool = False,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multi-layer perceptron ``Linear -> activation [-> Dropout] -> ... -> Linear``.

    Args:
        sizes: layer widths ``[in, hidden..., out]`` (at least two positive ints); ``len(sizes) - 1``
            ``Linear`` layers are built.
        activation: a name for :func:`activation`, a factory such as ``nn.ReLU`` or
            ``lambda: nn.LeakyReLU(0.2)``, or a module instance (copied for every layer).
        bias: whether the ``Linear`` layers have biases.
        final_activation: also apply the activation after the last ``Linear`` (off for logits).
        dropout: dropout probability in [0, 1) after every hidden activation (never after the output).
    Returns:
        an ``nn.Sequential`` mapping ``Tensor[N, sizes[0]]`` to ``Tensor[N, sizes[-1]]``.

    Introduced in chapter 02.
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"sizes must be positive ints, got {sizes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = []
    n_linear = len(sizes) - 1
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        last = k == n_linear - 1
        if not last or final_activation:
            layers.append(_make_activation(activation))
        if not last and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# initialization
# --------------------------------------------------------------------------------------------
def init_weights(
    module: nn.Module,
    scheme: str,
    *,
    std: float | None = None,
    nonlinearity: str = "relu",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialize the weights of every ``Linear`` / ``Conv`` / ``ConvTranspose`` layer inside ``module``.

    With ``n_in`` / ``n_out`` the fan-in / fan-out (``in_features``, or ``in_channels * kernel size``):

    ==================  ===================================================  ================
    scheme              weights                                              Var(w)
    ==================  ===================================================  ================
    ``zeros``           all 0 (breaks nothing, learns nothing: symmetry)     0
    ``normal``          N(0, std^2)                                          std^2
    ``lecun_normal``    N(0, 1/n_in)  (LeCun et al. 1998)                    1/n_in
    ``xavier_normal``   N(0, 2/(n_in+n_out))  (Glorot & Bengio 2010)         2/(n_in+n_out)
    ``xavier_uniform``  U(-a, a), a = sqrt(6/(n_in+n_out))                   2/(n_in+n_out)
    ``he_normal``       N(0, g^2/n_in), g^2 = 2 for ReLU (He et al. 2015)    g^2/n_in
    ``he_uniform``      U(-a, a), a = g*sqrt(3/n_in)                         g^2/n_in
    ``torch_default``   the layer's own ``reset_parameters()``               1/(3 n_in)
    ==================  ===================================================  ================

    Biases are set to zero, except for ``torch_default``, which restores PyTorch's defaults for weights
    *and* biases (``kaiming_uniform_(a=sqrt(5))``, bias ``U(-1/sqrt(n_in), 1/sqrt(n_in))``).

    Args:
        module: a layer or a model; it is changed in place.
        scheme: one of :data:`INIT_SCHEMES`.
        std: the standard deviation for ``scheme="normal"`` (required there, not allowed elsewhere).
        nonlinearity: the activation that follows, for the gain ``g`` of the He schemes
            (``torch.nn.init.calculate_gain``: ``relu`` 2, ``leaky_relu`` 2/(1+0.01^2), ``linear`` 1, ...).
        generator: a ``torch.Generator`` for reproducible draws (on the device of the weights); not
            used by ``torch_default``, which draws from the global generator.
    Returns:
        ``module`` (for chaining).

    Introduced in chapter 02.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "normal":
        if std is None:
            raise ValueError("scheme='normal' needs std (the weights' standard deviation), got std=None")
        if not (isinstance(std, int | float) and math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    elif std is not None:
        raise ValueError(f"std is only used by scheme='normal', got std={std} with scheme={scheme!r}")
    if scheme in ("he_normal", "he_uniform"):
        try:
            nn.init.calculate_gain(nonlinearity)
        except ValueError as exc:
            raise ValueError(f"unsupported nonlinearity {nonlinearity!r} for scheme={scheme!r}") from exc
    layers = [m for m in module.modules() if isinstance(m, _INIT_TYPES)]
    if not layers:
        raise ValueError(f"module contains no Linear or Conv layer to initialize: {type(module).__name__}")
    # the negative slope that kaiming_* uses in its gain; 0.01 matches activation("leaky_relu")
    slope = 0.01 if nonlinearity == "leaky_relu" else 0.0
    for m in layers:
        if scheme == "torch_default":
            m.reset_parameters()
            continue
        w = m.weight
        if scheme == "zeros":
            nn.init.zeros_(w)
        elif scheme == "normal":
            nn.init.normal_(w, 0.0, float(std), generator=generator)
        elif scheme == "lecun_normal":  # He's formula with gain 1
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear", generator=generator)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w, generator=generator)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(w, generator=generator)
        elif scheme == "he_normal":
            nn.init.kaiming_normal_(w, a=slope, nonlinearity=nonlinearity, generator=generator)
        else:  # he_uniform
            nn.init.kaiming_uniform_(w, a=slope, nonlinearity=nonlinearity, generator=generator)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------------------------
# activation statistics
# --------------------------------------------------------------------------------------------
@dataclass
class LayerStats:
    """Statistics of one recorded module output ``h`` (one forward call).

    Attributes:
        name: the module's name in the model (``"3"`` for ``model[3]``).
        kind: the module's class name (``"ReLU"``).
        mean: mean of all entries of ``h``.
        std: population standard deviation (``correction=0``) of all entries.
        dead: fraction of entries that are exactly 0.
        dead_units: fraction of units (``h[:, j]``, the channels for images) that are 0 for every sample.
        saturated: fraction of entries in the flat tails: ``|h| > threshold``, or for ``Sigmoid``
            outputs within ``1 - threshold`` of 0 or 1.
        numel: number of entries.
        output: the detached output ``h`` (only with ``keep=True``), on its original device.

    Introduced in chapter 02.
    """

    name: str
    kind: str
    mean: float
    std: float
    dead: float
    dead_units: float
    saturated: float
    numel: int
    output: torch.Tensor | None = None


def layer_stats(h: torch.Tensor, *, threshold: float = 0.99, sigmoid: bool = False) -> dict[str, float]:
    """Mean, std, dead and saturated fractions of a tensor ``h`` (see :class:`LayerStats`).

    Args:
        h: ``Tensor[N, C, ...]`` (or ``Tensor[N]``), any float dtype, any device.
        threshold: the saturation level in (0, 1).
        sigmoid: ``h`` lies in (0, 1); saturation then means ``min(h, 1 - h) < 1 - threshold``.
    Returns:
        ``{"mean", "std", "dead", "dead_units", "saturated"}`` as Python floats (NaN for an empty ``h``).

    Introduced in chapter 02.
    """
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"h must be a Tensor, got {type(h).__name__}")
    if h.numel() == 0:
        return dict.fromkeys(("mean", "std", "dead", "dead_units", "saturated"), math.nan)
    h = h.detach().float()
    zero = h == 0
    if h.ndim >= 2:  # a unit is dead if it is 0 for every sample (and every position)
        per_unit = zero.transpose(0, 1).reshape(h.shape[1], -1).all(dim=1)
    else:
        per_unit = zero.all().reshape(1)
    tail = torch.minimum(h, 1 - h) < 1 - threshold if sigmoid else h.abs() > threshold
    return {
        "mean": h.mean().item(),
        "std": h.std(correction=0).item(),
        "dead": zero.float().mean().item(),
        "dead_units": per_unit.float().mean().item(),
        "saturated": tail.float().mean().item(),
    }


class ActivationRecorder:
    """Context manager that records the output statistics of chosen layers during forward passes.

    Example::

        with ActivationRecorder(model, keep=True) as rec:
            model(x)
        stds = rec.column("std")        # one value per recorded layer, in call order
        h3 = rec.stats[2].output        # the third recorded output, for a histogram

    Every forward call of a watched module appends one :class:`LayerStats` to ``rec.stats`` (so two
    forward passes record every layer twice; call :meth:`clear` in between). The hooks are removed when
    the ``with`` block ends, even after an exception.

    Args:
        model: the network to watch.
        types: module classes to watch (default: the activation modules, :data:`ACTIVATION_TYPES`).
        keep: also keep each output tensor (detached, on its device) in ``LayerStats.output``.
        threshold: saturation level for :attr:`LayerStats.saturated`, in (0, 1).

    Introduced in chapter 02.
    """

    def __init__(
        self,
        model: nn.Module,
        types: type[nn.Module] | tuple[type[nn.Module], ...] = ACTIVATION_TYPES,
        *,
        keep: bool = False,
        threshold: float = 0.99,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        types = types if isinstance(types, tuple) else (types,)
        if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise TypeError(f"types must be nn.Module classes, got {types!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model, self.types, self.keep, self.threshold = model, types, keep, threshold
        self.watched = [(name, m) for name, m in model.named_modules() if isinstance(m, types)]
        if not self.watched:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(f"model has no module of the watched types ({names})")
        self.stats: list[LayerStats] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"ActivationRecorder can only record Tensor outputs; module {name!r} "
                    f"({type(module).__name__}) returned {type(output).__name__}"
                )
            s = layer_stats(output, threshold=self.threshold, sigmoid=isinstance(module, nn.Sigmoid))
            kept = output.detach().clone() if self.keep else None
            self.stats.append(LayerStats(name, type(module).__name__, numel=output.numel(), output=kept, **s))

        return hook

    def __enter__(self) -> ActivationRecorder:
        if self._handles:
            raise RuntimeError("this ActivationRecorder is already active")
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.watched]
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (done automatically at the end of the ``with`` block)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget the recorded statistics (the hooks stay)."""
        self.stats = []

    def column(self, field: str) -> list[float]:
        """One statistic for every recorded output, in call order, e.g. ``rec.column("std")``."""
        allowed = ("mean", "std", "dead", "dead_units", "saturated", "numel")
        if field not in allowed:
            raise ValueError(f"field must be one of {allowed}, got {field!r}")
        return [getattr(s, field) for s in self.stats]

    def __len__(self) -> int:
        return len(self.stats)

    def __repr__(self) -> str:
        state = "active" if self._handles else "inactive"
        return f"ActivationRecorder({len(self.watched)} watched modules, {len(self.stats)} records, {state})"


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
