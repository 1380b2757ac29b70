"""Activations, MLPs, weight initialization and activation statistics (chapter 02)."""

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
    "ActivationRecorder",
    "INIT_SCHEMES",
    "LayerStats",
    "activation",
    "init_weights",
    "layer_stats",
    "mlp",
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
