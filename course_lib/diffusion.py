"""Denoising diffusion: schedules, the forward process, training losses, DDPM and DDIM samplers,
classifier-free guidance and the exact oracle denoiser of a finite training set (chapters 11-12).

Notation (Ho et al., 2020). Step ``t`` runs from 1 to ``T``; a :class:`Schedule` stores its arrays
with index 0 meaning "no noise" so that ``schedule.alpha_bars[t]`` is the paper's :math:`\\bar\\alpha_t`:

.. math::
    q(x_t \\mid x_{t-1}) = \\mathcal N(\\sqrt{\\alpha_t}\\,x_{t-1}, \\beta_t I),\\qquad
    \\alpha_t = 1-\\beta_t,\\qquad \\bar\\alpha_t = \\prod_{s=1}^{t}\\alpha_s,

    q(x_t \\mid x_0) = \\mathcal N(\\sqrt{\\bar\\alpha_t}\\,x_0, (1-\\bar\\alpha_t) I),
    \\qquad \\mathrm{SNR}(t) = \\bar\\alpha_t / (1-\\bar\\alpha_t).

A network can predict any of three quantities from ``x_t`` and ``t``, and each determines the others
given ``x_t`` (:func:`convert`): the noise ε (Ho et al., 2020), the clean image x₀, or the velocity
``v = √ᾱ ε − √(1−ᾱ) x₀`` (Salimans & Ho, 2022).

A *model* here is any callable ``model(x_t, t) -> Tensor`` with ``x_t: Tensor[B, ...]`` and
``t: Tensor[B]`` (int64, values in 1..T), returning the prediction of its parameterization with the
shape of ``x_t``. Bind conditioning with a closure (``lambda x, t: net(x, t, labels)``) or with
:func:`guided`.

Everything works on the device and float dtype of its inputs; the schedule is kept in float64 on the
CPU and gathered to the inputs' device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULES",
    "OracleDenoiser",
    "Schedule",
    "convert",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss",
    "guided",
    "make_schedule",
    "q_sample",
    "q_step",
    "training_target",
]

#: Schedules :func:`make_schedule` knows.
SCHEDULES = ("linear", "cosine")
#: What a network may predict.
PARAMETERIZATIONS = ("eps", "x0", "v")

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_parameterization(p: str, name: str = "parameterization") -> None:
    if p not in PARAMETERIZATIONS:
        raise ValueError(f"{name} must be one of {PARAMETERIZATIONS}, got {p!r}")


class Schedule:
    """A noise schedule ``β_1..β_T`` and the quantities derived from it.

    Attributes (float64, CPU, length ``T + 1``; index 0 is the clean image: ``β_0 = 0``,
    ``ᾱ_0 = 1``):
        betas, alphas, alpha_bars: ``β_t``, ``α_t = 1 − β_t``, ``ᾱ_t = ∏_{s ≤ t} α_s``.
        snr: ``ᾱ_t / (1 − ᾱ_t)`` (``inf`` at index 0).
    Args:
        betas: ``Tensor[T]`` of ``β_1..β_T``, each in (0, 1).

    Introduced in chapter 11.
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a non-empty Tensor[T], got shape {tuple(betas.shape)}")
        if not ((betas > 0) & (betas < 1)).all():
            raise ValueError(
                f"every beta must lie in (0, 1), got range [{betas.min():.3g}, {betas.max():.3g}]"
            )
        self.T = len(betas)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas = 1 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.snr = self.alpha_bars / (1 - self.alpha_bars)

    def __repr__(self) -> str:
        return f"Schedule(T={self.T}, alpha_bar_T={float(self.alpha_bars[-1]):.3g})"

    def check_t(self, t: torch.Tensor, *, allow_zero: bool = False) -> torch.Tensor:
        """Validate a batch of integer steps ``Tensor[B]`` (1..T, or 0..T with ``allow_zero``)."""
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"t must be an int64 Tensor[B] of steps, got {getattr(t, 'dtype', type(t))}")
        lo = 0 if allow_zero else 1
        if t.numel() and (int(t.min()) < lo or int(t.max()) > self.T):
            raise ValueError(f"t must lie in {lo}..{self.T}, got range {int(t.min())}..{int(t.max())}")
        return t

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``self.<name>[t]`` as ``Tensor[B, 1, ..., 1]`` on ``like``'s device and dtype (broadcasts
        against ``like``, a ``Tensor[B, ...]``)."""
        values = getattr(self, name)[t.detach().cpu().long()]
        return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def make_schedule(
    name: str = "linear",
    T: int = 1000,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    s: float = 0.008,
    max_beta: float = 0.999,
) -> Schedule:
    """The linear schedule of DDPM or the cosine schedule of improved DDPM.

    - ``"linear"`` (Ho et al., 2020): ``β_t`` evenly spaced from ``beta_start`` to ``beta_end``
      (DDPM: 1e-4 to 0.02 over T = 1000; with fewer steps raise ``beta_end`` so that ``ᾱ_T`` is
      still near 0).
    - ``"cosine"`` (Nichol & Dhariwal, 2021): ``ᾱ_t = f(t)/f(0)``, ``f(t) = cos²((t/T + s)/(1 + s) · π/2)``,
      ``β_t = 1 − ᾱ_t/ᾱ_{t−1}`` clipped to ``max_beta``.

    Args:
        name: ``"linear"`` or ``"cosine"``.
        T: number of steps.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if name == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))
    if name == "cosine":
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bars = f / f[0]
        betas = (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=max_beta)
        return Schedule(betas)
    raise ValueError(f"name must be one of {SCHEDULES}, got {name!r}")


def _check_x_t(x: torch.Tensor, t: torch.Tensor, name: str = "x0") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point Tensor[B, ...], got {getattr(x, 'dtype', type(x))}")
    if x.ndim < 1 or t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be Tensor[B] with B = {name}.shape[0]; got {name} {tuple(x.shape)}, t {tuple(t.shape)}"
        )


def q_sample(
    x0: torch.Tensor, t: torch.Tensor, schedule: Schedule, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw ``x_t ~ q(x_t | x_0)`` in one step: ``√ᾱ_t x_0 + √(1 − ᾱ_t) ε``.

    Args:
        x0: ``Tensor[B, ...]`` clean data.
        t: ``Tensor[B]`` int64 steps in 0..T (0 returns ``x0``).
        schedule: the :class:`Schedule`.
        noise: ``ε``, same shape as ``x0`` (default: fresh standard normal noise).
    Returns:
        ``Tensor[B, ...]``.

    Introduced in chapter 11.
    """
    schedule.check_t(t, allow_zero=True)
    _check_x_t(x0, t)
    noise = torch.randn_like(x0) if noise is None else noise
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    ab = schedule.gather("alpha_bars", t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_step(x_prev: torch.Tensor, t: torch.Tensor, schedule: Schedule, noise: torch.Tensor | None = None):
    """One forward step ``x_t ~ q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I)`` (iterate it to check
    :func:`q_sample`). ``t``: ``Tensor[B]`` in 1..T, the step being taken."""
    schedule.check_t(t)
    _check_x_t(x_prev, t, "x_prev")
    noise = torch.randn_like(x_prev) if noise is None else noise
    a = schedule.gather("alphas", t, x_prev)
    return a.sqrt() * x_prev + (1 - a).sqrt() * noise


def convert(
    pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule, source: str, target: str
) -> torch.Tensor:
    """Turn a prediction of one parameterization into another, given ``x_t`` and ``t``.

    With ``a = √ᾱ_t``, ``b = √(1 − ᾱ_t)`` and ``x_t = a x₀ + b ε``, ``v = a ε − b x₀``:

    - from ε: ``x₀ = (x_t − b ε) / a``;  from x₀: ``ε = (x_t − a x₀) / b``;
    - from v: ``x₀ = a x_t − b v``, ``ε = b x_t + a v``;  and ``v = a ε − b x₀``.

    Dividing by ``a`` (from ε near ``t = T``) or by ``b`` (from x₀ near ``t = 0``) amplifies errors;
    v never divides. Args: ``source``, ``target`` in :data:`PARAMETERIZATIONS`; ``t`` in 1..T.
    """
    _check_parameterization(source, "source")
    _check_parameterization(target, "target")
    schedule.check_t(t)
    _check_x_t(x_t, t, "x_t")
    if pred.shape != x_t.shape:
        raise ValueError(f"pred must have x_t's shape {tuple(x_t.shape)}, got {tuple(pred.shape)}")
    if source == target:
        return pred
    ab = schedule.gather("alpha_bars", t, x_t)
    a, b = ab.sqrt(), (1 - ab).sqrt()
    if source == "eps":
        eps, x0 = pred, (x_t - b * pred) / a
    elif source == "x0":
        x0, eps = pred, (x_t - a * pred) / b
    else:
        x0, eps = a * x_t - b * pred, b * x_t + a * pred
    return {"eps": eps, "x0": x0, "v": a * eps - b * x0}[target]


def training_target(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: Schedule, parameterization: str = "eps"
) -> torch.Tensor:
    """What the network should output for ``x_t = q_sample(x0, t, schedule, noise)``: ``noise``,
    ``x0`` or ``v = √ᾱ_t ε − √(1 − ᾱ_t) x0``."""
    _check_parameterization(parameterization)
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x0
    ab = schedule.gather("alpha_bars", t, x0)
    return ab.sqrt() * noise - (1 - ab).sqrt() * x0


def diffusion_loss(
    model: Model,
    x0: torch.Tensor,
    schedule: Schedule,
    *,
    parameterization: str = "eps",
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The simplified DDPM loss ``E_{t, x₀, ε} ||target − model(x_t, t)||²`` for one batch.

    ``t`` is drawn uniformly from 1..T and ``ε`` from N(0, I) unless given. With
    ``parameterization="eps"`` this is Ho et al.'s ``L_simple``; ``"x0"`` and ``"v"`` regress those
    targets instead (the same minimiser, a different weighting of the steps).

    Args:
        model: ``model(x_t, t) -> Tensor`` (bind labels with a closure).
        x0: ``Tensor[B, ...]`` clean data.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (``Tensor[B]``, the mean over each example).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_parameterization(parameterization)
    dev = x0.device
    if t is None:
        gdev = generator.device if generator is not None else dev
        t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator, device=gdev).to(dev)
    if noise is None:
        gdev = generator.device if generator is not None else dev
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
    x_t = q_sample(x0, t, schedule, noise)
    pred = model(x_t, t)
    if pred.shape != x0.shape:
        raise ValueError(f"model output must have x0's shape {tuple(x0.shape)}, got {tuple(pred.shape)}")
    per_example = F.mse_loss(
        pred, training_target(x0, noise, t, schedule, parameterization), reduction="none"
    )
    per_example = per_example.flatten(1).mean(1)
    return per_example.mean() if reduction == "mean" else per_example


def _randn(shape, generator, device, dtype) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def _predict_x0_eps(model, x, t_int, schedule, parameterization, clip_x0):
    t = torch.full((x.shape[0],), t_int, dtype=torch.int64, device=x.device)
    pred = model(x, t)
    if pred.shape != x.shape:
        raise ValueError(f"model output must have x_t's shape {tuple(x.shape)}, got {tuple(pred.shape)}")
    x0 = convert(pred, x, t, schedule, parameterization, "x0")
    if clip_x0 is not None:
        x0 = x0.clamp(*clip_x0)
        eps = convert(x0, x, t, schedule, "x0", "eps")
    else:
        eps = convert(pred, x, t, schedule, parameterization, "eps")
    return x0, eps


def _start(shape, x_T, generator, device, dtype):
    if x_T is not None:
        return x_T.to(device=device, dtype=dtype)
    if shape is None:
        raise ValueError("give shape or x_T")
    return _randn(tuple(shape), generator, device, dtype)


@torch.no_grad()
def ddpm_sample(
    model: Model,
    shape: tuple[int, ...] | None,
    schedule: Schedule,
    *,
    parameterization: str = "eps",
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    variance: str = "beta",
    clip_x0: tuple[float, float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
):
    """Ancestral sampling (Ho et al., 2020, Algorithm 2): ``T`` steps from ``x_T ~ N(0, I)``.

    Each step predicts ``x̂₀`` (through :func:`convert`), takes the mean of the Gaussian posterior
    ``q(x_{t−1} | x_t, x̂₀)``,

    .. math::
        \\mu_t = \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\,\\beta_t}{1-\\bar\\alpha_t}\\hat x_0
               + \\frac{\\sqrt{\\alpha_t}(1-\\bar\\alpha_{t-1})}{1-\\bar\\alpha_t} x_t
        = \\frac{1}{\\sqrt{\\alpha_t}}\\Big(x_t - \\frac{\\beta_t}{\\sqrt{1-\\bar\\alpha_t}}\\hat\\epsilon\\Big),

    and adds ``σ_t z`` with ``σ_t² = β_t`` (``variance="beta"``) or the posterior variance
    ``β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)`` (``"posterior"``); no noise at the last step.

    Args:
        model: ``model(x_t, t)`` predicting ``parameterization``.
        shape: ``(B, ...)`` of the samples (ignored when ``x_T`` is given).
        x_T: the starting noise (default: drawn with ``generator``).
        clip_x0: clamp ``x̂₀`` to ``(lo, hi)`` at each step (DDPM clips to the data range).
        device: where to sample (default: ``x_T``'s device or the CPU).
        return_trajectory: also return ``Tensor[T + 1, B, ...]``, the states ``x_T, ..., x_0``.
    Returns:
        ``Tensor[B, ...]`` samples, or ``(samples, trajectory)``.

    Introduced in chapter 11.
    """
    _check_parameterization(parameterization)
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior', got {variance!r}")
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else "cpu")
    x = _start(shape, x_T, generator, device, dtype)
    traj = [x] if return_trajectory else None
    for t in range(schedule.T, 0, -1):
        x0, _ = _predict_x0_eps(model, x, t, schedule, parameterization, clip_x0)
        ab, ab_prev = float(schedule.alpha_bars[t]), float(schedule.alpha_bars[t - 1])
        beta, alpha = float(schedule.betas[t]), float(schedule.alphas[t])
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * x
        if t > 1:
            var = beta if variance == "beta" else beta * (1 - ab_prev) / (1 - ab)
            x = mean + math.sqrt(var) * _randn(x.shape, generator, device, dtype)
        else:
            x = mean
        if traj is not None:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` decreasing steps from ``T`` down to 1, evenly spaced (the last DDIM update goes to 0)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..T={T}, got {steps!r}")
    return [int(round(T - i * (T - 1) / max(steps - 1, 1))) for i in range(steps)] if steps > 1 else [T]


@torch.no_grad()
def ddim_sample(
    model: Model,
    shape: tuple[int, ...] | None,
    schedule: Schedule,
    *,
    steps: int = 50,
    eta: float = 0.0,
    parameterization: str = "eps",
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    clip_x0: tuple[float, float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    return_trajectory: bool = False,
):
    """DDIM sampling (Song et al., 2021) on a subsequence of ``steps`` timesteps.

    From step ``t`` to the next step ``s < t`` (``s = 0`` last):

    .. math::
        x_s = \\sqrt{\\bar\\alpha_s}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_s-\\sigma^2}\\,\\hat\\epsilon + \\sigma z,
        \\qquad \\sigma = \\eta\\sqrt{\\frac{1-\\bar\\alpha_s}{1-\\bar\\alpha_t}}
        \\sqrt{1-\\frac{\\bar\\alpha_t}{\\bar\\alpha_s}}.

    ``eta = 0`` is deterministic (an ODE-like map from ``x_T`` to ``x_0``); ``eta = 1`` with all
    ``T`` steps has DDPM's posterior variance. Arguments as in :func:`ddpm_sample`; the trajectory is
    ``Tensor[steps + 1, B, ...]``.

    Introduced in chapter 11.
    """
    _check_parameterization(parameterization)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    ts = ddim_timesteps(schedule.T, steps)
    device = torch.device(device) if device is not None else (x_T.device if x_T is not None else "cpu")
    x = _start(shape, x_T, generator, device, dtype)
    traj = [x] if return_trajectory else None
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        x0, eps = _predict_x0_eps(model, x, t, schedule, parameterization, clip_x0)
        ab, ab_s = float(schedule.alpha_bars[t]), float(schedule.alpha_bars[s])
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab)) * math.sqrt(1 - ab / ab_s)
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0 and s > 0:
            x = x + sigma * _randn(x.shape, generator, device, dtype)
        if traj is not None:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x


def guided(
    model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    null_cond: torch.Tensor | int,
    scale: float,
) -> Model:
    """Classifier-free guidance (Ho & Salimans, 2021) as a model for the samplers.

    Returns ``f(x_t, t) = u + scale · (c − u)`` with ``c = model(x_t, t, cond)`` and
    ``u = model(x_t, t, null_cond)``, both computed in one batched call. ``scale = 0`` is the
    unconditional model, ``1`` the conditional one, ``> 1`` pushes past it. (Ho & Salimans write
    ``(1 + w) c − w u``, i.e. ``scale = 1 + w``; GLIDE uses ``scale`` as here.) Valid for every
    parameterization, since the three are affine in each other at fixed ``x_t``.

    Args:
        model: ``model(x_t, t, cond)``, trained with the conditioning sometimes replaced by
            ``null_cond``.
        cond: ``Tensor[B, ...]`` conditioning (labels or token ids).
        null_cond: the "no conditioning" value (an int fills ``cond``'s shape) or a tensor like ``cond``.
        scale: the guidance scale ``s >= 0``.
    """
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale!r}")
    null = torch.full_like(cond, null_cond) if not isinstance(null_cond, torch.Tensor) else null_cond
    if null.shape != cond.shape:
        raise ValueError(f"null_cond must have cond's shape {tuple(cond.shape)}, got {tuple(null.shape)}")

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1:
            return model(x, t, cond)
        if scale == 0:
            return model(x, t, null)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
        c, u = out.chunk(2)
        return u + scale * (c - u)

    return f


class OracleDenoiser:
    """The exact minimiser of the diffusion loss for a finite training set ``{x⁽ⁱ⁾}``.

    If the data distribution is the training set itself, ``q(x₀ | x_t)`` is a softmax over the
    training images,

    .. math::
        \\hat x_0(x_t, t) = \\sum_i w_i x^{(i)},\\qquad
        w_i \\propto \\exp\\!\\Big(-\\frac{\\lVert x_t - \\sqrt{\\bar\\alpha_t} x^{(i)}\\rVert^2}{2(1-\\bar\\alpha_t)}\\Big),

    and the best ε-prediction is ``(x_t − √ᾱ_t x̂₀)/√(1 − ᾱ_t)``. A correct sampler driven by it
    ends on training images (up to float error): the test that separates a wrong sampler from an
    undertrained network. It also shows that a perfect fit of the loss memorises the data.

    Args:
        data: ``Tensor[N, ...]`` training examples.
        schedule: the :class:`Schedule`.
        labels: optional ``Tensor[N]`` int64; then the call takes ``cond`` (``Tensor[B]``) and only
            training examples of that label count (the exact class-conditional denoiser).
        parameterization: what the call returns (``"eps"``, ``"x0"`` or ``"v"``).

    Call: ``oracle(x_t, t, cond=None) -> Tensor`` like ``x_t``. Memory ``B × N``; computed in float64.

    Introduced in chapter 11.
    """

    def __init__(
        self,
        data: torch.Tensor,
        schedule: Schedule,
        *,
        labels: torch.Tensor | None = None,
        parameterization: str = "eps",
    ) -> None:
        if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must be a non-empty Tensor[N, ...], got {getattr(data, 'shape', data)}")
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != data.shape[0]):
            raise ValueError(f"labels must be Tensor[N] with N = {data.shape[0]}, got {tuple(labels.shape)}")
        _check_parameterization(parameterization)
        self.data = data
        self.flat = data.flatten(1).double()
        self.labels = labels
        self.schedule = schedule
        self.parameterization = parameterization

    def x0(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean ``E[x₀ | x_t]`` under the training set."""
        self.schedule.check_t(t)
        _check_x_t(x_t, t, "x_t")
        if x_t.shape[1:] != self.data.shape[1:]:
            raise ValueError(f"x_t must be Tensor[B, {list(self.data.shape[1:])}], got {tuple(x_t.shape)}")
        flat = self.flat.to(x_t.device)
        ab = self.schedule.gather("alpha_bars", t, flat[:1, :1]).view(-1, 1)  # [B, 1] float64
        xt = x_t.flatten(1).double()
        # squared distances ||x_t - sqrt(ab) x_i||², expanded to avoid a [B, N, D] tensor
        d2 = (xt**2).sum(1, keepdim=True) - 2 * ab.sqrt() * (xt @ flat.T) + ab * (flat**2).sum(1)[None, :]
        logits = -d2 / (2 * (1 - ab))
        if self.labels is not None:
            if cond is None:
                raise ValueError("this oracle was built with labels: pass cond (Tensor[B])")
            same = cond.to(x_t.device)[:, None] == self.labels.to(x_t.device)[None, :]
            if not same.any(1).all():
                raise ValueError("cond holds a label with no training example")
            logits = logits.masked_fill(~same, float("-inf"))
        w = logits.softmax(1)
        return (w @ flat).to(x_t.dtype).view_as(x_t)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x0 = self.x0(x_t, t, cond)
        return convert(x0, x_t, t, self.schedule, "x0", self.parameterization)
