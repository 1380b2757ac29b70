# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Activation functions and weight initialization
#
# A neural network is a stack of linear maps with a fixed non-linear function squeezed between them.
# Those two ingredients, the non-linearity and the scale of the random numbers the linear maps start
# from, decide whether a deep network can be trained at all. With the wrong pair, the signal that
# flows forward through ten layers shrinks to $10^{-7}$ or grows to $10^{12}$, every unit sits on a flat
# tail of its activation, or ReLU units die and never fire again, and gradient descent stalls before it
# starts. This chapter builds the common activation functions from scratch, measures what happens to
# activations as they pass through depth, and derives the initializations (LeCun, Glorot, He) that keep
# the signal alive.
#
# **Learning objectives.** After this chapter you can:
# - explain why a network without non-linearities is a single linear model, and show it numerically;
# - write sigmoid, tanh, ReLU, LeakyReLU, ELU, GELU, SiLU and a numerically stable softmax and
#   log-sum-exp, with their derivatives, check them against PyTorch, and say where naive formulas break;
# - recognize saturation and dead ReLUs in activation statistics, and say what does and does not help;
# - derive $\mathrm{Var}(z)=n\,\mathrm{Var}(w)\,\mathbb E[x^2]$ and from it the LeCun, Glorot and He
#   initializations (including the fan-in $C_{in} k^2$ of a convolution), see where Glorot and LeCun
#   differ, and explain PyTorch's default;
# - measure activation and gradient statistics through depth (`course_lib.nn.ActivationRecorder`), and
#   compare activations in a short training run, each at its own tuned learning rate.
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (tensors, `train.fit`) and
# [chapter 01](../01_preprocessing/01_preprocessing.ipynb) (zero-centred, standardized inputs); the chain
# rule; the mean and variance of a random variable.
#
# **Measured runtime:** 31 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [02_activations_and_init.ipynb](02_activations_and_init.ipynb) (notebook, with outputs) · [02_activations_and_init.py](02_activations_and_init.py) (the paired script instructors edit)

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import LinearSegmentedColormap
from sklearn.datasets import make_moons
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from course_lib import data, exercises, metrics, runtime, train, viz
from course_lib import nn as cnn

device = runtime.setup(seed=0)

# %% [markdown]
# ## Why a network needs a non-linearity
#
# A `Linear` layer computes $x \mapsto W x + b$. Composing two of them gives
# $W_2(W_1x+b_1)+b_2 = (W_2W_1)\,x + (W_2b_1+b_2)$, again one affine map. By induction, any stack of $L$
# linear layers equals a single layer with
#
# $$
# W = W_L W_{L-1}\cdots W_1, \qquad b = W_L(\cdots W_2(W_1\cdot 0 + b_1) + b_2 \cdots) + b_L ,
# $$
#
# so depth without non-linearity buys nothing: a deep linear classifier draws the same straight decision
# boundary as logistic regression. Let us see it on `make_moons`, two interleaved half-circles that no
# straight line separates. We train two five-layer MLPs with 32 hidden units, one with no activation
# (`"identity"`) and one with ReLU, using `course_lib.nn.mlp`, which builds
# `Linear -> activation -> ... -> Linear`.

# %%
X_moons, y_moons = make_moons(1000, noise=0.15, random_state=0)
X_moons = torch.tensor(X_moons, dtype=torch.float32)
y_moons = torch.tensor(y_moons)
moons_train = TensorDataset(X_moons[:700], y_moons[:700])
moons_test = TensorDataset(X_moons[700:], y_moons[700:])


def fit_moons(act: str) -> tuple[nn.Module, float]:
    torch.manual_seed(0)
    model = cnn.mlp([2, 32, 32, 32, 32, 2], act).to(device)
    loader = DataLoader(
        moons_train,
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    hist = train.fit(
        model,
        loader,
        epochs=25,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        loss_fn=F.cross_entropy,
        val_loader=DataLoader(moons_test, batch_size=300),
        metrics={"acc": metrics.accuracy},
        desc=act,
    )
    return model, hist.last("val_acc")


deep_linear, acc_linear = fit_moons("identity")
relu_mlp, acc_relu = fit_moons("relu")
logreg = LogisticRegression().fit(X_moons[:700].numpy(), y_moons[:700].numpy())
acc_logreg = logreg.score(X_moons[700:].numpy(), y_moons[700:].numpy())
print(
    f"test accuracy  logistic regression {acc_logreg:.3f} | 5 linear layers {acc_linear:.3f}",
    end="",
)
print(f" | 5 layers with ReLU {acc_relu:.3f}")

# %% tags=["hide-input"]
viz.chain_diagram(
    [("point $x$\n[2]", "io")] + [(f"linear {m} → 32\n+ act", "linear") for m in (2, 32, 32, 32)]
    + [("linear 32 → 2\nclass scores", "linear")],
    block_size=(1.8, 0.7), spacing=2.15,
    title="The moons MLP, cnn.mlp([2, 32, 32, 32, 32, 2], act): act = identity (a deep linear map) or ReLU",
)  # fmt: skip
plt.show()

# %% [markdown]
# Now the algebra, from scratch: multiply the five trained weight matrices together, push the biases
# through, and check that this one `Linear` layer computes exactly what the trained five-layer stack
# computes.


# %%
@torch.no_grad()
def collapse(stack: nn.Sequential) -> nn.Linear:
    """The single Linear layer equal to a stack of Linear layers (no activations in between)."""
    layers = [m for m in stack if isinstance(m, nn.Linear)]
    W = torch.eye(layers[0].in_features, dtype=torch.float64)
    b = torch.zeros(layers[0].in_features, dtype=torch.float64)
    for layer in layers:
        W = layer.weight.double().cpu() @ W
        b = layer.weight.double().cpu() @ b + layer.bias.double().cpu()
    single = nn.Linear(W.shape[1], W.shape[0])
    single.weight.copy_(W)
    single.bias.copy_(b)
    return single


single = collapse(deep_linear)
with torch.no_grad():
    assert_close(
        single(X_moons),
        deep_linear(X_moons.to(device)).cpu(),
        rtol=1e-4,
        atol=1e-4,
    )
    agree = (
        (
            single(X_moons).argmax(1)
            == deep_linear(X_moons.to(device)).argmax(1).cpu()
        )
        .float()
        .mean()
    )
n_params = sum(p.numel() for p in deep_linear.parameters())
print(
    f"{n_params} parameters in 5 layers collapse to a {tuple(single.weight.shape)} matrix and a bias;"
)
print(f"the collapsed layer agrees with the stack on {agree:.1%} of the points")

# %%
assert abs(acc_linear - acc_logreg) < 0.04, (
    f"deep linear {acc_linear:.3f} vs logistic regression {acc_logreg:.3f}"
)
assert acc_linear < 0.92, (
    f"a linear model cannot separate the moons, got {acc_linear:.3f}"
)
assert acc_relu > 0.95, (
    f"ReLU MLP test accuracy {acc_relu:.3f}, expected > 0.95"
)

# %% tags=["hide-input"]
moon_cmap = LinearSegmentedColormap.from_list(
    "moons", [viz.color(0), "#ffffff", viz.color(1)]
)
gx, gy = torch.meshgrid(
    torch.linspace(-1.6, 2.6, 200),
    torch.linspace(-1.1, 1.6, 200),
    indexing="xy",
)
grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for ax, model, name, acc in [
    (axes[0], deep_linear, "5 Linear layers, no activation", acc_linear),
    (axes[1], relu_mlp, "5 Linear layers with ReLU", acc_relu),
]:
    with torch.no_grad():
        p1 = model(grid.to(device)).softmax(1)[:, 1].cpu().reshape(gx.shape)
    ax.contourf(
        gx, gy, p1, levels=20, cmap=moon_cmap, vmin=0, vmax=1, alpha=0.8
    )
    ax.contour(gx, gy, p1, levels=[0.5], colors=[viz.color(7)], linewidths=1.5)
    for c in (0, 1):
        pts = X_moons[700:][y_moons[700:] == c]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=12,
            color=viz.color(c),
            edgecolor="white",
            lw=0.4,
            label=f"class {c}",
        )
    ax.set(title=f"{name}: test accuracy {acc:.3f}", xlabel="$x_1$")
axes[0].set_ylabel("$x_2$")
axes[0].legend(loc="lower left")
fig.suptitle(
    "Depth alone is not enough: without a non-linearity the boundary stays a straight line"
)
plt.show()

# %% [markdown]
# The deep linear stack lands at the accuracy of logistic regression and its boundary is a straight line,
# while the same architecture with ReLU bends its boundary around the moons. An activation function is
# what makes depth useful. (A second reason often given, that activations "keep outputs in a range", is
# secondary: ReLU is unbounded and works best in hidden layers.)
#
# ## The activation functions
#
# Seven activations cover nearly all of computer vision practice. For each we need the function and its
# derivative, because backpropagation multiplies the upstream gradient by $f'(z)$ at every unit:
#
# | name | $f(x)$ | $f'(x)$ | range |
# |---|---|---|---|
# | sigmoid $\sigma$ | $\dfrac{1}{1+e^{-x}}$ | $\sigma(x)\,(1-\sigma(x)) \le \tfrac14$ | $(0, 1)$ |
# | tanh | $\dfrac{e^{x}-e^{-x}}{e^{x}+e^{-x}} = 2\sigma(2x)-1$ | $1-\tanh^2 x \le 1$ | $(-1, 1)$ |
# | ReLU | $\max(0, x)$ | $1$ if $x>0$, else $0$ | $[0, \infty)$ |
# | LeakyReLU | $\max(\alpha x, x)$, $\alpha = 0.01$ | $1$ if $x>0$, else $\alpha$ | $\mathbb R$ |
# | ELU | $x$ if $x>0$, else $\alpha(e^{x}-1)$ | $1$ if $x>0$, else $\alpha e^{x}$ | $(-\alpha, \infty)$ |
# | GELU | $x\,\Phi(x) = \tfrac{x}{2}\bigl(1+\operatorname{erf}(x/\sqrt2)\bigr)$ | $\Phi(x) + x\,\varphi(x)$ | $\approx[-0.17, \infty)$ |
# | SiLU (Swish) | $x\,\sigma(x)$ | $\sigma(x)\bigl(1 + x\,(1-\sigma(x))\bigr)$ | $\approx[-0.28, \infty)$ |
#
# $\Phi$ and $\varphi$ are the cumulative distribution and density of the standard normal. GELU weights
# its input by the probability that a standard normal variable is below it: a smooth ReLU that is
# slightly negative for small negative inputs (GPT, BERT and the vision transformers of chapter 14 use
# it). Its popular approximation replaces $\Phi$ by a tanh:
#
# $$
# \mathrm{GELU}(x) \approx \tfrac{x}{2}\Bigl(1 + \tanh\bigl(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\bigr)\Bigr).
# $$
#
# SiLU, the sigmoid-weighted linear unit (Elfwing et al., 2018; found again by an automated search and
# named Swish by Ramachandran et al., 2017), does the same with the logistic sigmoid instead of $\Phi$:
# $x\,\sigma(x)$ is a smooth ReLU with a small negative dip. EfficientNet, recent YOLO detectors and the
# U-Nets of diffusion models (chapter 11) use it.
#
# From scratch, one line each, but three details matter numerically in float32, where $e^{x}$
# overflows to $\infty$ for $x > 88.72$:
#
# - the textbook sigmoid $1/(1+e^{-x})$ has the right *value* everywhere ($1/\infty = 0$), but its
#   autograd gradient is $-1/(1+e^{-x})^2 \cdot (-e^{-x})$, which for $x < -88.72$ is $0 \cdot \infty =$
#   NaN. The stable form evaluates the exponential only at non-positive arguments:
#   $\sigma(x) = 1/(1+e^{-x})$ for $x \ge 0$ and $e^{x}/(1+e^{x})$ for $x < 0$, each branch fed with
#   $x$ clamped to its own side, because `torch.where` backpropagates through *both* branches and a NaN
#   in the unused one still poisons the gradient;
# - tanh is written as $2\sigma(2x)-1$ with that stable sigmoid: $(e^x-e^{-x})/(e^x+e^{-x})$ becomes
#   $\infty/\infty$ for $|x|>89$, and $2\sigma(2x)-1$ with the textbook sigmoid has NaN gradients from
#   $x < -44.36$ on;
# - ELU's exponential is evaluated on $\min(x, 0)$, for the same reason as the sigmoid's branches.
#
# We measure where the textbook forms break right after the checks.

# %%
SLOPE, ALPHA = 0.01, 1.0


def sigmoid_textbook(x):
    # NaN gradients for x < -88.72 in float32 (measured below)
    return 1 / (1 + torch.exp(-x))


def sigmoid(x):
    # the branch for x >= 0: exp of a number <= 0
    e_pos = torch.exp(-x.clamp(min=0))
    # the branch for x < 0: exp of a number <= 0
    e_neg = torch.exp(x.clamp(max=0))
    return torch.where(x >= 0, 1 / (1 + e_pos), e_neg / (1 + e_neg))


def tanh(x):
    return 2 * sigmoid(2 * x) - 1


def relu(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def leaky_relu(x, slope=SLOPE):
    return torch.where(x > 0, x, slope * x)


def elu(x, alpha=ALPHA):
    return torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0)))


def gelu(x):
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def silu(x):
    return x * sigmoid(x)


def gelu_tanh(x):
    return (
        0.5
        * x
        * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    )


x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
ours = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
}
torchs = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, SLOPE),
    "elu": lambda t: F.elu(t, ALPHA),
    "gelu": F.gelu,
    "silu": F.silu,
}
for name in ours:
    assert_close(ours[name](x), torchs[name](x))
    # the course_lib modules are torch's
    assert_close(ours[name](x), cnn.activation(name)(x))
assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))
print(
    "all seven activations and the GELU approximation equal torch.nn.functional"
)

# %% [markdown]
# Now the float32 stress test: values and autograd gradients on $[-200, 200]$, for the textbook sigmoid,
# the textbook tanh-via-sigmoid and our stable versions, against `torch.sigmoid` and `torch.tanh`.

# %%
x32 = torch.linspace(-200, 200, 40_001)  # float32, step 0.01
textbook = {
    "sigmoid, 1/(1+exp(-x))": (sigmoid_textbook, torch.sigmoid),
    "tanh, 2 sigmoid_textbook(2x) - 1": (
        lambda t: 2 * sigmoid_textbook(2 * t) - 1,
        torch.tanh,
    ),
    "sigmoid, stable": (sigmoid, torch.sigmoid),
    "tanh, 2 sigmoid(2x) - 1 (stable)": (tanh, torch.tanh),
    "silu, x sigmoid(x) (stable)": (silu, F.silu),
}
for name, (f, reference) in textbook.items():
    xg, xr = x32.clone().requires_grad_(True), x32.clone().requires_grad_(True)
    f(xg).sum().backward()
    reference(xr).sum().backward()
    nan_grad = ~torch.isfinite(xg.grad)
    where = f"for x <= {x32[nan_grad].max():.2f}" if nan_grad.any() else ""
    print(
        f"{name:34s} values finite: {bool(torch.isfinite(f(x32)).all())}; NaN gradients: {int(nan_grad.sum()):5d} {where}"
    )
    if "stable" in name:
        assert not nan_grad.any()
        # gradients equal torch's everywhere, tails included
        assert_close(xg.grad, xr.grad)
        assert_close(f(x32), reference(x32))

# %% [markdown]
# Autograd gives the derivatives; we check them against the closed forms of the table. In particular the
# sigmoid's slope never exceeds $\tfrac14$, reached at $x=0$. What that does to a gradient depends on
# the weights too, as we see in the section on saturation.

# %%
grads = {}
for name, f in {**ours, "gelu_tanh": gelu_tanh}.items():
    xg = x.clone().requires_grad_(True)
    f(
        xg
    ).sum().backward()  # each output depends on its own input only, so this is f'(x) elementwise
    grads[name] = xg.grad

s, t = torch.sigmoid(x), torch.tanh(x)
Phi, phi = (
    0.5 * (1 + torch.erf(x / math.sqrt(2))),
    torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi),
)
assert_close(grads["sigmoid"], s * (1 - s))
assert_close(grads["tanh"], 1 - t**2)
assert_close(grads["relu"], (x > 0).double())
assert_close(grads["leaky_relu"], torch.where(x > 0, 1.0, SLOPE).double())
assert_close(
    grads["elu"], torch.where(x > 0, torch.ones_like(x), ALPHA * torch.exp(x))
)
assert_close(grads["gelu"], Phi + x * phi)
assert_close(grads["silu"], s * (1 + x * (1 - s)))
imax = int(grads["sigmoid"].argmax())
assert (
    abs(grads["sigmoid"].max().item() - 0.25) < 1e-12
    and abs(x[imax].item()) < 1e-12
)

gelu_err = (gelu_tanh(x) - gelu(x)).abs()
assert gelu_err.max() < 1e-3, (
    f"GELU tanh approximation error {gelu_err.max():.2e}, expected < 1e-3"
)

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"max sigmoid'(x) = {grads['sigmoid'].max():.4f} at x = {abs(x[imax]):.1f}"
)
print(
    f"max |GELU_tanh - GELU| on [-6, 6] = {gelu_err.max():.1e} at x = ±{x[gelu_err.argmax()].abs():.2f}"
)

# %% tags=["hide-input"]
panels = [
    ("sigmoid", "sigmoid"),
    ("tanh", "tanh"),
    ("ReLU", "relu"),
    ("LeakyReLU (slope 0.1, to make it visible)", "leaky_relu"),
    ("ELU ($\\alpha = 1$)", "elu"),
    ("GELU (exact and tanh approx.), SiLU", "gelu"),
]
fig, axes = plt.subplots(2, 3, figsize=(11, 5.6), sharex=True)
for ax, (title, name) in zip(axes.flat, panels, strict=True):
    xs = x.clone().requires_grad_(True)
    f = (lambda t: leaky_relu(t, 0.1)) if name == "leaky_relu" else ours[name]
    y = f(xs)
    (dy,) = torch.autograd.grad(y.sum(), xs)
    ax.plot(x, y.detach(), color=viz.color(0), lw=2, label="$f(x)$")
    ax.plot(
        x, dy, color=viz.color(1), lw=2, ls="--", label="$f'(x)$ (autograd)"
    )
    if name == "gelu":
        ax.plot(
            x,
            gelu_tanh(x),
            color=viz.color(2),
            lw=1,
            ls=":",
            label="tanh approx.",
        )
        xs_silu = x.clone().requires_grad_(True)
        (d_silu,) = torch.autograd.grad(silu(xs_silu).sum(), xs_silu)
        ax.plot(x, silu(x), color=viz.color(4), lw=1.5, label="SiLU")
        ax.plot(x, d_silu, color=viz.color(4), lw=1, ls="--", label="SiLU'")
    ax.axhline(0, color=viz.color("reference"), lw=0.6)
    ax.axvline(0, color=viz.color("reference"), lw=0.6)
    ax.set(title=title, xlim=(-5, 5), ylim=(-1.3, 2.3))
    ax.legend(fontsize=7, loc="upper left")
for ax in axes[1]:
    ax.set_xlabel("x")
fig.suptitle("Activation functions (solid) and their derivatives (dashed)")
plt.show()

# %% [markdown]
# Read the derivatives: sigmoid's is a small bump (at most 0.25) and tanh's a bump of height 1; both are
# practically zero beyond $|x|\approx 4$. ReLU's is a step: 1 for positive inputs, exactly 0 otherwise.
# LeakyReLU and ELU keep a non-zero slope for negative inputs. GELU's derivative is smooth, dips slightly
# below zero near $x \approx -1.5$ (there the function decreases) and overshoots 1 near $x \approx 1.5$;
# SiLU's does the same, more gently and farther out (its minimum is near $x \approx -1.28$).
#
# ### Softmax, stably
#
# The output layer of a $K$-class classifier turns $K$ scores (logits) $z$ into a probability vector:
#
# $$
# \mathrm{softmax}(z)_i = \frac{e^{z_i}}{\sum_{j=1}^{K} e^{z_j}} .
# $$
#
# Each output lies strictly between 0 and 1 and they sum to 1. (Softmax does not output "0 or 1": it is a
# smooth version of the arg-max, and only approaches a one-hot vector when one score dominates the others
# by a large margin; in floating point a tiny probability can round to exactly 0, as the last line of the
# next output shows.) Written literally, it breaks in floating point: $e^{1000}$ overflows to $\infty$,
# giving $\infty/\infty$, and $e^{-1000}$ underflows to 0, giving $0/0$. The cure uses
# *shift invariance*: for any constant $c$,
#
# $$
# \frac{e^{z_i - c}}{\sum_j e^{z_j - c}} = \frac{e^{-c}\,e^{z_i}}{e^{-c}\sum_j e^{z_j}} = \mathrm{softmax}(z)_i .
# $$
#
# With $c = m = \max_j z_j$ the largest exponent is $e^0 = 1$: nothing overflows, and the denominator is
# at least 1, so it cannot underflow to 0. The same trick gives the log-sum-exp that cross-entropy
# losses use, $\log\sum_j e^{z_j} = m + \log\sum_j e^{z_j - m}$.


# %%
def softmax_naive(z):
    e = torch.exp(z)
    return e / e.sum(-1, keepdim=True)


def softmax_stable(z):
    e = torch.exp(z - z.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def logsumexp(z):
    m = z.max(-1, keepdim=True).values
    return (m + torch.log(torch.exp(z - m).sum(-1, keepdim=True))).squeeze(-1)


z_demo = torch.tensor(
    [[1000.0] * 5, [-1000.0] * 5, [2.0, 1.0, 0.1, -1.0, -3.0]]
)
z_rand = 50 * torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
assert torch.isnan(softmax_naive(z_demo[:2])).all()
p = softmax_stable(torch.cat([z_demo, z_rand]))
assert torch.isfinite(p).all() and (p >= 0).all()
assert_close(p.sum(-1), torch.ones(len(p)))
assert_close(p, torch.softmax(torch.cat([z_demo, z_rand]), dim=-1))
# shift invariance
assert_close(softmax_stable(z_rand + 123.0), softmax_stable(z_rand))
assert_close(logsumexp(z_rand), torch.logsumexp(z_rand, dim=-1))

# %%
# NBVAL_CHECK_OUTPUT
for name, fn in (("naive ", softmax_naive), ("stable", softmax_stable)):
    for row in (0, 1):
        probs = [round(v, 4) for v in fn(z_demo[row]).tolist()]
        print(f"{name} softmax of [{z_demo[row, 0]:+.0f}] * 5:", probs)
for temp in (1.0, 0.25):
    probs = softmax_stable(z_demo[2] / temp)
    print(
        f"softmax([2, 1, 0.1, -1, -3] / {temp}) =",
        [round(v, 4) for v in probs.tolist()],
    )

# %% [markdown]
# Dividing the logits by a temperature below 1 sharpens the distribution towards the arg-max, but the
# outputs remain probabilities. In practice you rarely call softmax yourself: `F.cross_entropy` takes the
# raw logits and applies the log-sum-exp internally, which is both stabler and cheaper (exercise 2 shows
# what goes wrong when a softmax is applied twice).
#
# ## Saturation and dead units
#
# ### Flat tails stop the gradient
#
# Backpropagation through a unit multiplies the incoming gradient by $f'(z)$. For sigmoid and tanh,
# $f'(z)$ decays like $e^{-|z|}$: a unit whose input lands far out on a tail is *saturated* and passes
# almost no gradient back, whatever the loss says. The table shows how quickly the slopes vanish.

# %%
# NBVAL_CHECK_OUTPUT
for z0 in (0.0, 2.0, 5.0, 10.0):
    zt = torch.tensor(z0, dtype=torch.float64)
    ds = torch.sigmoid(zt) * (1 - torch.sigmoid(zt))
    print(
        f"z = {z0:4.1f}:  sigmoid'(z) = {ds:.2e}   tanh'(z) = {1 - torch.tanh(zt) ** 2:.2e}"
    )

# %% [markdown]
# A common shortcut says that every sigmoid layer shrinks a gradient by at least a factor 4. That
# forgets the weights. A layer $h = \sigma(Wx)$ has the Jacobian
#
# $$
# \frac{\partial h}{\partial x} = \operatorname{diag}\bigl(\sigma'(z)\bigr)\,W, \qquad
# \Bigl\lVert \frac{\partial h}{\partial x} \Bigr\rVert_2 \le \max_i \sigma'(z_i)\,\lVert W\rVert_2
# \le \frac{\lVert W\rVert_2}{4},
# $$
#
# with $\lVert\cdot\rVert_2$ the spectral norm (the largest factor by which the matrix stretches a
# vector). So the backward pass through $L$ sigmoid layers scales a gradient by at most
# $\prod_l \lVert W_l\rVert_2 / 4$. With small weights this is a fast vanishing; with
# $\lVert W\rVert_2 > 4$ a sigmoid layer *can* amplify a gradient. We measure the Jacobian's norm for
# a 500-unit layer with weights $\mathcal N(0, s^2/500)$, whose spectral norm is about $2s$.

# %%
gen = torch.Generator().manual_seed(0)
x_one = torch.randn(500, generator=gen)
print(f"{'scale s':>8s} {'||W||/4':>9s} {'||J||':>9s}")
jac_norms = {}
for scale in (1.0, 4.0, 16.0):
    W = torch.randn(500, 500, generator=gen) * scale / math.sqrt(500)
    zs = W @ x_one
    J = (torch.sigmoid(zs) * (1 - torch.sigmoid(zs)))[
        :, None
    ] * W  # diag(sigma'(z)) W
    assert_close(J, torch.func.jacrev(lambda v: torch.sigmoid(W @ v))(x_one))  # noqa: B023 (used at once)
    bound, jn = (
        torch.linalg.matrix_norm(W, 2).item() / 4,
        torch.linalg.matrix_norm(J, 2).item(),
    )
    jac_norms[scale] = (bound, jn)
    print(f"{scale:8.0f} {bound:9.3f} {jn:9.3f}")
assert all(jn <= bound * (1 + 1e-5) for bound, jn in jac_norms.values()), (
    jac_norms
)
assert jac_norms[16.0][1] > 1, (
    "with large weights a sigmoid layer should be able to stretch a gradient"
)

# %% [markdown]
# The bound holds in every row, and with larger weights the Jacobian's norm exceeds 1: the layer can
# stretch some gradient directions. What makes deep sigmoid networks hard to train is the combination:
# with small weights the factor $\lVert W\rVert/4$ is below 1 at every layer, and large weights push
# the units onto the flat tails, where $\sigma'$ is far below $\tfrac14$ for most units (next cell).

# %% [markdown]
# How do inputs end up on the tails? Through large weights. Feed 1000 standard-normal vectors through
# one tanh layer of 500 units with weights drawn from $\mathcal N(0, 1)$: each pre-activation sums 500
# terms of variance 1, so its standard deviation is $\sqrt{500}\approx 22$, and nearly all units are
# pushed to $\pm 1$. With weights of variance $1/500$ (the LeCun scaling derived below) the same layer
# stays in its responsive middle.

# %%
gen = torch.Generator().manual_seed(0)
X500 = torch.randn(1000, 500, generator=gen)
W_big = torch.randn(500, 500, generator=gen)
W_lecun = torch.randn(500, 500, generator=gen) / math.sqrt(500)
h_big, h_lecun = torch.tanh(X500 @ W_big.T), torch.tanh(X500 @ W_lecun.T)
sat_big = (h_big.abs() > 0.99).float().mean().item()
sat_lecun = (h_lecun.abs() > 0.99).float().mean().item()
# the course_lib statistic is the same fraction
assert sat_big == cnn.layer_stats(h_big)["saturated"]
print(
    f"N(0, 1) weights:     {sat_big:.1%} of units have |h| > 0.99; mean tanh' = {(1 - h_big**2).mean():.3f}"
)
print(
    f"N(0, 1/500) weights: {sat_lecun:.1%} of units have |h| > 0.99; mean tanh' = {(1 - h_lecun**2).mean():.3f}"
)
assert sat_big > 0.5, (
    f"large weights should saturate most tanh units, got {sat_big:.2f}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.4, 3.0))
bins = np.linspace(-1, 1, 51)
ax.hist(
    h_big.flatten(),
    bins=bins,
    density=True,
    color=viz.color(3),
    alpha=0.7,
    label="weights N(0, 1)",
)
ax.hist(
    h_lecun.flatten(),
    bins=bins,
    density=True,
    color=viz.color(0),
    alpha=0.7,
    label="weights N(0, 1/n)",
)
ax.set(
    xlabel="tanh output h",
    ylabel="density",
    title="One tanh layer: large weights pin the units at ±1",
)
ax.legend()
plt.show()

# %% [markdown]
# ### Dead ReLUs
#
# ReLU does not saturate for positive inputs (slope exactly 1), one reason deep ReLU networks train much
# faster than sigmoid ones. Its weak spot is the other side: a unit whose pre-activation is negative for
# *every* input outputs 0 everywhere and receives exactly zero gradient, so gradient descent can never
# bring it back. Such a unit is *dead*. It typically dies when one large update moves its weights and bias
# so far that no input activates it any more. We force the extreme case, a bias of $-10$, and measure with `cnn.ActivationRecorder`, which
# attaches forward hooks to the activation modules and records, per layer, the mean, the standard
# deviation, the fraction of exact zeros and the fraction of units that are zero on every sample.

# %%
dead_layer = nn.Sequential(nn.Linear(500, 500), nn.ReLU())
leaky_layer = nn.Sequential(nn.Linear(500, 500), nn.LeakyReLU(0.01))
for layer in (dead_layer, leaky_layer):
    cnn.init_weights(
        layer, "lecun_normal", generator=torch.Generator().manual_seed(1)
    )
    nn.init.constant_(layer[0].bias, -10.0)

with cnn.ActivationRecorder(dead_layer) as rec_relu:
    dead_layer(X500).sum().backward()
with cnn.ActivationRecorder(leaky_layer) as rec_leaky:
    leaky_layer(X500).sum().backward()
relu_stats, leaky_stats = rec_relu.stats[0], rec_leaky.stats[0]
g_relu, g_leaky = (
    dead_layer[0].weight.grad.abs().max().item(),
    leaky_layer[0].weight.grad.abs().max().item(),
)

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"ReLU,      bias -10: zero outputs {relu_stats.dead:.3f}, dead units {relu_stats.dead_units:.3f}"
)
print(
    f"LeakyReLU, bias -10: zero outputs {leaky_stats.dead:.3f}, dead units {leaky_stats.dead_units:.3f}"
)
print(
    f"largest |dL/dW|: ReLU {g_relu:.1f}, LeakyReLU {'> 0' if g_leaky > 0 else '0'}"
)
assert relu_stats.dead == 1.0 and relu_stats.dead_units == 1.0 and g_relu == 0.0
assert g_leaky > 0, "LeakyReLU must still pass a gradient"

# %% [markdown]
# With ReLU every output and every weight gradient is exactly zero; LeakyReLU still passes 1 % of the
# gradient, enough for the unit to recover. Remedies that work: a sensible initialization (next section),
# a learning rate that does not blow the weights around, activations with a non-zero negative slope
# (LeakyReLU, ELU, GELU), and normalization layers (chapter 05).
#
# A remedy that does *not* work, though it is sometimes recommended, is to draw all weights from
# $(0, 1)$ so that pre-activations are "mostly positive". After the first layer every input is positive
# (post-ReLU), so every unit computes a positively weighted sum of the *same* positive numbers. These sums
# are dominated by the inputs' common mean, not by the differences between units: the units become
# copies of each other, and the scale multiplies by roughly $n\,\mathbb E[w] = 500 \times 0.5 = 250$ per
# layer.

# %%
torch.manual_seed(0)
positive_net = cnn.mlp([500] * 11, "relu", final_activation=True)
for m in positive_net:
    if isinstance(m, nn.Linear):
        nn.init.uniform_(m.weight, 0.0, 1.0)
        nn.init.zeros_(m.bias)
with (
    torch.no_grad(),
    cnn.ActivationRecorder(positive_net, keep=True) as rec_pos,
):
    positive_net(X500)
# 500 x 500 correlations between the units of layer 5
corr = torch.corrcoef(rec_pos.stats[4].output.T)
print(
    f"all-positive init: activation std at layers 1, 5, 10 = {rec_pos.stats[0].std:.1e}, ",
    end="",
)
print(f"{rec_pos.stats[4].std:.1e}, {rec_pos.stats[9].std:.1e}")
print(f"mean correlation between two units of layer 5: {corr.mean():.4f}")
assert corr.mean() > 0.99 and rec_pos.stats[9].std > 1e10

# %% [markdown]
# Five layers in, all 500 units compute the same number (correlation 1.0000) and the activations have
# grown by twenty orders of magnitude. That is a second way to lose a network, not a fix for the first.
#
# ### Zero-centred outputs: tanh versus sigmoid
#
# Sigmoid outputs are always positive, with mean near 0.5. The next layer then sees all-positive inputs
# $x_i$, and for one example the gradient of a unit's weights, $\partial L/\partial w_i =
# \delta\,x_i$, has the same sign for every $i$ (the sign of the unit's upstream gradient $\delta$). Each
# example can only push all of a unit's weights up together or down together, which makes optimization
# zig-zag, exactly the argument for centring the *inputs* in
# [chapter 01](../01_preprocessing/01_preprocessing.ipynb), now applied to hidden layers. Tanh is a
# rescaled sigmoid, $\tanh x = 2\sigma(2x) - 1$, but zero-centred, so it is preferred over sigmoid inside
# a network; sigmoid stays useful as the *output* of a binary or multi-label classifier, where a
# probability is wanted. (Mini-batch gradients average examples with different $\delta$ signs, so the
# effect is milder in practice than the one-example argument suggests.)
#
# ## Weight initialization
#
# ### Zeros, and any constant, cannot break symmetry
#
# If all weights of a layer start equal, all its units compute the same output, receive the same
# gradient and make the same update: they stay identical forever, and a 32-unit layer is worth one unit.
# With zeros it is even worse for a tanh or ReLU network: the hidden outputs are all 0, so the weight
# gradients of every layer vanish and only the output bias learns. We check both on a batch of digits.

# %%
splits = data.digits_splits(flatten=True)
xb, yb = splits.train.tensors[0][:128], splits.train.tensors[1][:128]


def one_backward(scheme_or_constant) -> nn.Sequential:
    torch.manual_seed(0)
    net = cnn.mlp([64, 32, 32, 10], "tanh")
    if scheme_or_constant == "zeros":
        cnn.init_weights(net, "zeros")
    else:
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, scheme_or_constant)
                nn.init.zeros_(m.bias)
    F.cross_entropy(net(xb), yb).backward()
    return net


zero_net, const_net = one_backward("zeros"), one_backward(0.05)
weight_grads_zero = [zero_net[i].weight.grad for i in (0, 2, 4)]
assert all(torch.count_nonzero(g) == 0 for g in weight_grads_zero)
assert torch.count_nonzero(zero_net[4].bias.grad) > 0
for i in (0, 2):  # the two hidden layers of the constant-init net
    g = const_net[i].weight.grad
    assert g.abs().sum() > 0
    assert (g - g[:1]).abs().max() <= 1e-6 * g.abs().max(), (
        "all rows of the gradient are identical"
    )

# %%
# NBVAL_CHECK_OUTPUT
print(
    "zero init:     non-zero entries in the weight gradients of the 3 layers:",
    end=" ",
)
print([int(torch.count_nonzero(g)) for g in weight_grads_zero])
for i in (0, 2):
    g = const_net[i].weight.grad
    distinct = len(torch.unique((g / g.abs().max()).round(decimals=5), dim=0))
    print(
        f"constant 0.05: layer {i // 2 + 1} gradient {tuple(g.shape)}, distinct rows: {distinct}"
    )

# %% [markdown]
# Random initialization breaks the symmetry. The remaining question is the *scale* of the random
# numbers: too small and the signal fades with depth, too large and it explodes or saturates.
#
# ### The variance of a pre-activation
#
# Take one unit $z = \sum_{i=1}^{n} w_i x_i$ with $n$ inputs (its *fan-in*), weights drawn independently
# with mean 0 and variance $\mathrm{Var}(w)$, independent of the inputs. Each term has mean
# $\mathbb E[w_i]\mathbb E[x_i] = 0$ and variance $\mathbb E[w_i^2]\,\mathbb E[x_i^2] = \mathrm{Var}(w)\,\mathbb E[x^2]$,
# and the terms are uncorrelated, so
#
# $$
# \mathrm{Var}(z) = n\,\mathrm{Var}(w)\,\mathbb E[x^2] .
# $$
#
# Note $\mathbb E[x^2]$, not $\mathrm{Var}(x)$: the two agree only for zero-mean inputs, and the outputs of
# a ReLU are not zero-mean. A quick numerical check with ReLU outputs as inputs:

# %%
gen = torch.Generator().manual_seed(2)
x_in = torch.relu(torch.randn(4000, 500, generator=gen))  # non-centred inputs
sigma_w = 0.03
z = x_in @ (sigma_w * torch.randn(500, 200, generator=gen))
pred_ex2, pred_var = (
    500 * sigma_w**2 * (x_in**2).mean(),
    500 * sigma_w**2 * x_in.var(),
)
print(
    f"measured Var(z) = {z.var():.4f};  n Var(w) E[x^2] = {pred_ex2:.4f};  n Var(w) Var(x) = {pred_var:.4f}"
)
assert abs(z.var() / pred_ex2 - 1) < 0.05 and abs(z.var() / pred_var - 1) > 0.2

# %% [markdown]
# ### LeCun, Glorot and He
#
# We want the signal to keep its scale from layer to layer.
#
# - **LeCun** (LeCun et al., 1998). For an activation that is roughly the identity near 0 (tanh) and
#   zero-mean inputs, $\mathbb E[x^2] \approx \mathrm{Var}(z_{\text{prev}})$, so keeping
#   $\mathrm{Var}(z)$ constant requires $n_{in}\mathrm{Var}(w) = 1$: $\;\mathrm{Var}(w) = 1/n_{in}$.
#   This is the rule often mislabelled "Xavier" (`randn(n_in, n_out) / sqrt(n_in)`).
# - **Glorot / Xavier** (Glorot & Bengio, 2010). The backward pass has the same structure with the roles
#   of the fans swapped: the gradient reaching a unit sums $n_{out}$ terms, so keeping the *gradient*
#   variance constant requires $n_{out}\mathrm{Var}(w) = 1$. Both cannot hold when $n_{in} \ne n_{out}$;
#   Glorot's compromise is the harmonic mean of the two requirements $1/n_{in}$ and $1/n_{out}$,
#   $$
#   \mathrm{Var}(w) = \frac{2}{n_{in} + n_{out}}, \qquad\text{e.g. } w \sim U\!\left[-\sqrt{\tfrac{6}{n_{in}+n_{out}}},\ \sqrt{\tfrac{6}{n_{in}+n_{out}}}\right]
#   $$
#   (a uniform distribution on $[-a, a]$ has variance $a^2/3$). The goal is equal *variances* of
#   activations (forward) and of gradients (backward) from layer to layer; fan-in and fan-out are just the
#   counts that enter the formula. For a square layer ($n_{in} = n_{out}$) Glorot equals LeCun.
# - **He / Kaiming** (He et al., 2015). A ReLU zeroes the negative half of a symmetric pre-activation, so
#   $\mathbb E[\mathrm{relu}(z)^2] = \tfrac12\mathrm{Var}(z)$: each layer halves the signal's second moment
#   under LeCun's rule. Doubling the weights' variance compensates: $\;\mathrm{Var}(w) = 2/n_{in}$.
#
# From scratch, each initialization is one line. We check them against `torch.nn.init` drawing from the
# same generator, and `course_lib.nn.init_weights` against both.

# %%
n_in, n_out = 300, 100


def lecun_normal(gen):
    return torch.randn(n_out, n_in, generator=gen) * math.sqrt(1 / n_in)


def glorot_uniform(gen):
    a = math.sqrt(6 / (n_in + n_out))
    return (torch.rand(n_out, n_in, generator=gen) * 2 - 1) * a


def he_normal(gen):
    return torch.randn(n_out, n_in, generator=gen) * math.sqrt(2 / n_in)


references = {
    "lecun_normal": (
        lecun_normal,
        lambda w, g: nn.init.kaiming_normal_(
            w, nonlinearity="linear", generator=g
        ),
    ),
    "xavier_uniform": (
        glorot_uniform,
        lambda w, g: nn.init.xavier_uniform_(w, generator=g),
    ),
    "he_normal": (
        he_normal,
        lambda w, g: nn.init.kaiming_normal_(
            w, nonlinearity="relu", generator=g
        ),
    ),
}
target_var = {
    "lecun_normal": 1 / n_in,
    "xavier_uniform": 2 / (n_in + n_out),
    "he_normal": 2 / n_in,
}
for scheme, (ours_init, torch_init) in references.items():
    w_ours = ours_init(torch.Generator().manual_seed(5))
    w_torch = torch_init(
        torch.empty(n_out, n_in), torch.Generator().manual_seed(5)
    )
    layer = cnn.init_weights(
        nn.Linear(n_in, n_out),
        scheme,
        generator=torch.Generator().manual_seed(5),
    )
    assert_close(w_ours, w_torch)
    assert_close(layer.weight.detach(), w_torch)
    print(
        f"{scheme:15s} Var(w): target {target_var[scheme]:.5f}, sampled {w_ours.var():.5f}"
    )

# %% [markdown]
# On this $300 \to 100$ layer the three differ, and we can measure what each one preserves. Push
# 4000 standard-normal inputs forward ($z = Wx$) and 4000 standard-normal upstream gradients
# $g = \partial L/\partial z$ backward ($\partial L/\partial x = W^\top g$), and compare the
# variances. LeCun keeps the forward variance and scales the backward one by $n_{out}/n_{in} = 1/3$;
# the mirror rule $1/n_{out}$ (`mode="fan_out"` in `torch.nn.init`) keeps the backward variance and
# triples the forward one; Glorot's compromise gives $2n_{in}/(n_{in}+n_{out}) = 1.5$ forward and
# $2n_{out}/(n_{in}+n_{out}) = 0.5$ backward.

# %%
gen = torch.Generator().manual_seed(6)
x_fw = torch.randn(4000, n_in, generator=gen)
g_bw = torch.randn(4000, n_out, generator=gen)
variance_rules = {
    "LeCun 1/n_in": 1 / n_in,
    "Glorot 2/(n_in+n_out)": 2 / (n_in + n_out),
    "fan-out 1/n_out": 1 / n_out,
}
print(
    f"{'rule':22s} {'Var(w) x 1000':>13s} {'forward Var(z)/Var(x)':>22s} {'backward Var(dx)/Var(g)':>24s}"
)
ratios = {}
for rule, var_w in variance_rules.items():
    W = torch.randn(n_out, n_in, generator=gen) * math.sqrt(var_w)
    fwd, bwd = (x_fw @ W.T).var() / x_fw.var(), (g_bw @ W).var() / g_bw.var()
    ratios[rule] = (fwd.item(), bwd.item())
    print(f"{rule:22s} {1000 * var_w:13.2f} {fwd:22.2f} {bwd:24.2f}")
for rule, (
    fwd,
    bwd,
) in ratios.items():  # theory: n_in Var(w) forward, n_out Var(w) backward
    assert abs(fwd / (n_in * variance_rules[rule]) - 1) < 0.05, (rule, fwd)
    assert abs(bwd / (n_out * variance_rules[rule]) - 1) < 0.05, (rule, bwd)

# %% [markdown]
# In a deep network the mismatch compounds: a stack of layers that shrink by a factor 3 (say, from
# 1,536 to 512 to 170 units) under LeCun's rule keeps activations at scale and lets gradients shrink by
# 3 per layer on the way back, and vice versa for the fan-out rule. Glorot halves the damage in both
# directions. For the square hidden layers of most MLPs and CNN stages the three coincide, which is
# why the rules are often confused.
#
# ### Fan-in of a convolution
#
# A convolution is a linear layer too: each output value sums over $C_{in}$ input channels and a
# $k \times k$ window, so its fan-in is $n_{in} = C_{in} k^2$ and its fan-out (the outputs each input
# value feeds) $n_{out} = C_{out} k^2$. `torch.nn.init` computes them from the weight's shape
# $[C_{out}, C_{in}, k, k]$, and every rule above applies with these numbers. We check the counts and
# the variance law $\mathrm{Var}(z) = n_{in}\mathrm{Var}(w)\,\mathbb E[x^2]$ on a $3\times3$
# convolution from 16 to 32 channels, He-initialized.

# %%
conv = nn.Conv2d(16, 32, kernel_size=3, bias=False)
fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
assert (fan_in, fan_out) == (16 * 3 * 3, 32 * 3 * 3)
cnn.init_weights(conv, "he_normal", generator=torch.Generator().manual_seed(7))
x_img = torch.randn(64, 16, 20, 20, generator=torch.Generator().manual_seed(8))
with torch.no_grad():
    z_img = conv(x_img)
print(f"fan_in = C_in k^2 = {fan_in}, fan_out = C_out k^2 = {fan_out}")
print(f"He: Var(w) = {conv.weight.var():.5f} vs 2 / fan_in = {2 / fan_in:.5f}")
print(
    f"Var(z) = {z_img.var():.3f} vs fan_in Var(w) E[x^2] = {fan_in * conv.weight.var() * (x_img**2).mean():.3f}"
)
assert abs(conv.weight.var().item() * fan_in / 2 - 1) < 0.1
assert (
    abs(z_img.var() / (fan_in * conv.weight.var() * (x_img**2).mean()) - 1)
    < 0.05
)

# %%
# He's factor 2: the second moment of a ReLU output is half the variance of its symmetric input
zz = torch.randn(1_000_000, generator=torch.Generator().manual_seed(3)) * 1.7
print(f"E[relu(z)^2] / Var(z) = {(torch.relu(zz) ** 2).mean() / zz.var():.3f}")

# %% [markdown]
# ### PyTorch's default
#
# `nn.Linear` and `nn.Conv2d` are *not* He-initialized by default. Their `reset_parameters` calls
# `kaiming_uniform_(weight, a=math.sqrt(5))`, a choice kept for backward compatibility with the old Lua
# Torch. The argument `a` is a LeakyReLU slope, which enters the gain as $g^2 = 2/(1+a^2) = 1/3$, so
#
# $$
# \mathrm{Var}(w) = \frac{g^2}{n_{in}} = \frac{1}{3\,n_{in}}, \qquad w \sim U\!\left[-\tfrac{1}{\sqrt{n_{in}}},\ \tfrac{1}{\sqrt{n_{in}}}\right],
# $$
#
# a third of LeCun's variance and a sixth of He's; the biases are drawn from the same interval. In a deep
# plain ReLU stack this default shrinks the signal by a factor of about $\sqrt 6$ per layer until the
# random biases set a floor. Normalization (chapter 05) and residual connections (chapter 06) make
# networks far less sensitive to this, but for a plain deep stack pick the initialization explicitly.

# %%
torch.manual_seed(0)
default_layer = nn.Linear(500, 500)
w = default_layer.weight.detach()
print(
    f"nn.Linear(500, 500): Var(w) * 3 * n_in = {w.var() * 3 * 500:.3f}, max |w| * sqrt(n_in) = ",
    end="",
)
print(f"{w.abs().max() * math.sqrt(500):.4f}")
assert abs(w.var() * 3 * 500 - 1) < 0.03 and w.abs().max() <= 1 / math.sqrt(500)

# %% [markdown]
# ## Activations through depth: the chapter's experiment
#
# Now the full picture. A 10-layer MLP with 500 units per layer (biases start at zero, except under
# PyTorch's default) receives 1000 standard-normal inputs. For each pair of activation and initialization we record the
# standard deviation of the activations after every layer, and histograms of their values, with
# `cnn.ActivationRecorder(keep=True)`.

# %%
WIDTH, DEPTH = 500, 10
X_deep = torch.randn(
    1000, WIDTH, generator=torch.Generator().manual_seed(0)
).to(device)
INITS = {  # label -> (scheme, std) for cnn.init_weights
    "N(0, 0.01²)": ("normal", 0.01),
    "LeCun 1/n": ("lecun_normal", None),
    "Glorot 2/(n_in+n_out)": ("xavier_normal", None),
    "He 2/n": ("he_normal", None),
    "N(0, 1)": ("normal", 1.0),
    "PyTorch default": ("torch_default", None),
}
HIST_RANGE = {
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "relu": (0.0, 4.0),
    "gelu": (-0.25, 4.0),
}
BINS = 60
profiles: dict[tuple[str, str], dict] = {}


@torch.no_grad()
def depth_profile(act: str, init: str) -> dict:
    """Per-layer std, saturation, zeros and histograms of a 10-layer MLP (cached)."""
    if (act, init) in profiles:
        return profiles[(act, init)]
    scheme, std = INITS[init]
    torch.manual_seed(1)
    net = cnn.mlp([WIDTH] * (DEPTH + 1), act, final_activation=True)
    gen = (
        None if scheme == "torch_default" else torch.Generator().manual_seed(1)
    )
    cnn.init_weights(net, scheme, std=std, generator=gen)
    net.to(device)
    lo, hi = HIST_RANGE[act]
    with cnn.ActivationRecorder(net, keep=True) as rec:
        net(X_deep)
    hists = []
    for s in rec.stats:
        h = s.output.flatten().cpu()
        if (
            act == "relu"
        ):  # the exact zeros (about half) would dwarf the rest; we report their fraction
            h = h[h != 0]
        hists.append(torch.histc(h.clamp(lo, hi), BINS, lo, hi).cpu() / s.numel)
        s.output = None  # free the memory, keep the statistics
    profiles[(act, init)] = {
        "std": rec.column("std"),
        "saturated": rec.column("saturated"),
        "zeros": rec.column("dead"),
        "hist": torch.stack(hists),
    }
    return profiles[(act, init)]


for act in ("tanh", "relu"):
    for init in INITS:
        depth_profile(act, init)
print(
    f"{'activation':10s} {'init':22s} {'std L1':>8s} {'std L5':>8s} {'std L10':>8s}"
)
for (act, init), p in profiles.items():
    print(
        f"{act:10s} {init:22s} {p['std'][0]:8.2g} {p['std'][4]:8.2g} {p['std'][9]:8.2g}"
    )

# %% tags=["hide-input"]
viz.diagram(
    {
        "x": (0, 0, "$x$: 1000 × 500\nN(0, 1)", "io"),
        "l1": (2.4, 0, "linear 500 → 500\n+ act (layer 1)", "linear"),
        "l2": (4.8, 0, "linear 500 → 500\n+ act (layer 2)", "linear"),
        "dots": (7.2, 0, "⋯ layers 3-9 ⋯", "other"),
        "l10": (9.6, 0, "linear 500 → 500\n+ act (layer 10)", "linear"),
        "rec": (6.0, -1.5, "ActivationRecorder\nper-layer statistics", "head"),
    },
    [("x", "l1"), ("l1", "l2"), ("l2", "dots"), ("dots", "l10"),
     ("l1", "rec", "--"), ("l2", "rec", "--"), ("l10", "rec", "--")],
    block_size=(2.0, 0.7), title="The depth experiment: weights from each init scheme (biases 0, except PyTorch's default)",
)  # fmt: skip
plt.show()

# %%
std10 = {key: p["std"][-1] for key, p in profiles.items()}
assert std10[("tanh", "N(0, 0.01²)")] < 1e-4, (
    f"small init, tanh: std10 = {std10[('tanh', 'N(0, 0.01²)')]:.2e}"
)
assert std10[("relu", "N(0, 0.01²)")] < 1e-4, (
    f"small init, ReLU: std10 = {std10[('relu', 'N(0, 0.01²)')]:.2e}"
)
assert 0.3 <= std10[("relu", "He 2/n")] <= 3, (
    f"He/ReLU std10 = {std10[('relu', 'He 2/n')]:.3f}, expected in [0.3, 3]"
)
assert std10[("relu", "LeCun 1/n")] < 0.1, (
    f"LeCun/ReLU std10 = {std10[('relu', 'LeCun 1/n')]:.3f}, expected < 0.1"
)
assert profiles[("tanh", "N(0, 1)")]["saturated"][-1] > 0.5, (
    "N(0, 1) weights should saturate tanh"
)

# %%
layers = np.arange(1, DEPTH + 1)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, act in zip(axes, ("tanh", "relu"), strict=True):
    for k, init in enumerate(INITS):
        # Glorot = LeCun for square layers
        ls = "--" if init.startswith("Glorot") else "-"
        ax.plot(
            layers,
            profiles[(act, init)]["std"],
            marker="o",
            ms=3,
            ls=ls,
            color=viz.color(k),
            label=init,
        )
    ax.set(
        yscale="log",
        xlabel="layer",
        title=f"{act}: activation std through depth",
        xticks=layers,
    )
axes[0].set_ylabel("std of the activations")
axes[1].legend(
    loc="center left", bbox_to_anchor=(1.0, 0.5), title="weight init"
)
plt.show()

# %% [markdown]
# Read the two panels from top to bottom.
#
# - **$\mathcal N(0, 0.01^2)$** (fine for a two-layer toy network) multiplies the scale by
#   $\sqrt{500}\times0.01\approx 0.22$ per layer: after ten layers the activations are $10^{-7}$ for tanh
#   and $10^{-8}$ for ReLU. The backward pass multiplies by the same small weights, so the gradients are
#   just as tiny (the digits experiment below measures them).
# - **$\mathcal N(0, 1)$** with ReLU explodes by $\sqrt{500/2} \approx 16$ per layer (to $10^{12}$); with
#   tanh the std stays near 1 only because nearly every unit is saturated at $\pm1$, where the gradient
#   is almost zero (try it in the widget below).
# - **LeCun** keeps tanh in its linear middle; the std still decays slowly (tanh compresses a little at
#   every layer), which is why PyTorch suggests a gain of $5/3$ for tanh. With ReLU it loses a factor
#   $\sqrt2$ per layer, exactly the half that ReLU zeroes.
# - **Glorot** coincides with LeCun here because every hidden layer is square.
# - **He** holds the ReLU network's scale constant through all ten layers.
# - **PyTorch's default** shrinks ReLU activations by about $\sqrt6$ per layer until the random biases set
#   a floor near 0.02.
#
# ### Gradients through depth
#
# Activations are half the story; learning needs the gradients. Backpropagation runs the same chain in
# reverse: the gradient reaching layer $l$ is multiplied by $W_l^\top$ and by $f'(z)$ at every layer
# above it, and the weight gradient is $\partial L/\partial W_l = \delta_l\, h_{l-1}^\top$, the product
# of that backward signal and the layer's input. We measure the norm of every layer's weight gradient
# in the same networks, with a fixed random upstream gradient at the output standing in for a loss.


# %%
def gradient_profile(act: str, init: str) -> list[float]:
    """||dL/dW_l|| for the 10 layers of the depth experiment, for L = <output, G> / N with fixed G."""
    scheme, std = INITS[init]
    torch.manual_seed(1)
    net = cnn.mlp([WIDTH] * (DEPTH + 1), act, final_activation=True)
    gen = (
        None if scheme == "torch_default" else torch.Generator().manual_seed(1)
    )
    cnn.init_weights(net, scheme, std=std, generator=gen)
    net.to(device)
    out = net(X_deep)
    upstream = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(2)
    ).to(device)
    ((out * upstream).sum() / len(out)).backward()
    return [
        m.weight.grad.norm().item() for m in net if isinstance(m, nn.Linear)
    ]


grad_profiles = {
    (act, init): gradient_profile(act, init)
    for act in ("tanh", "relu")
    for init in INITS
}
print(
    f"{'activation':10s} {'init':22s} {'layer 1':>9s} {'layer 10':>9s} {'ratio 1/10':>10s}"
)
for (act, init), g in grad_profiles.items():
    print(f"{act:10s} {init:22s} {g[0]:9.2g} {g[-1]:9.2g} {g[0] / g[-1]:10.2g}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, act in zip(axes, ("tanh", "relu"), strict=True):
    for k, init in enumerate(INITS):
        ls = "--" if init.startswith("Glorot") else "-"
        ax.plot(
            layers,
            grad_profiles[(act, init)],
            marker="o",
            ms=3,
            ls=ls,
            color=viz.color(k),
            label=init,
        )
    ax.set(
        yscale="log",
        xlabel="layer",
        title=f"{act}: weight-gradient norm per layer",
        xticks=layers,
    )
axes[0].set_ylabel("‖∂L/∂W‖ at initialization")
axes[1].legend(
    loc="center left", bbox_to_anchor=(1.0, 0.5), title="weight init"
)
plt.show()

# %%
he_relu, default_relu = (
    grad_profiles[("relu", "He 2/n")],
    grad_profiles[("relu", "PyTorch default")],
)
small_relu, big_tanh = (
    grad_profiles[("relu", "N(0, 0.01²)")],
    grad_profiles[("tanh", "N(0, 1)")],
)
assert 0.5 < he_relu[0] / he_relu[-1] < 2, (
    f"He/ReLU gradient norms {he_relu[0]:.2g} .. {he_relu[-1]:.2g}"
)
assert max(small_relu) < 1e-5 * min(he_relu), (
    f"small init gradients {max(small_relu):.2g}"
)
assert default_relu[0] < default_relu[-1] / 10, (
    f"default/ReLU: {default_relu[0]:.2g} .. {default_relu[-1]:.2g}"
)
assert big_tanh[0] > 100 * big_tanh[-1], (
    f"N(0, 1)/tanh: layer 1 {big_tanh[0]:.2g}, layer 10 {big_tanh[-1]:.2g}"
)

# %% [markdown]
# Four lessons, each visible in the table.
#
# - **He with ReLU** keeps the weight gradients at one scale from the first layer to the last, so one
#   learning rate suits every layer.
# - **LeCun with ReLU** is flat too, but about twenty times smaller. In $\delta_l h_{l-1}^\top$ the
#   backward factor $\delta_l$ shrinks by $\sqrt2$ per layer going down while the input $h_{l-1}$
#   shrinks by $\sqrt2$ per layer going up, and the two cancel layer by layer; the whole network just
#   learns more slowly at a given learning rate. With $\mathcal N(0, 0.01^2)$ the same cancellation
#   happens around gradients about $10^{-7}$ times He's: nothing learns.
# - **PyTorch's default** (with its random biases) is not balanced: the first layer's gradient is
#   about seventy times smaller than the last one's, so the early layers learn slowest.
# - **tanh with $\mathcal N(0, 1)$** looked healthy in the activation plot (std near 1). Its gradients
#   *explode* towards the input, by a factor of about $10^5$ over ten layers: most units are saturated
#   and pass little, but the weights' norm $\lVert W\rVert_2 \approx 2\sqrt{500} \approx 45$ is far
#   above 1, the norm below which a tanh layer is sure to shrink a gradient (the bound of the
#   saturation section, with $\tanh' \le 1$ in place of $\sigma' \le \tfrac14$). Statistics of the
#   forward pass alone can hide a broken backward pass.
#
# The histograms tell the same story as distributions.

# %% tags=["hide-input"]
SHOWN_INITS = ("N(0, 0.01²)", "LeCun 1/n", "He 2/n")


def draw_heatmap(ax, act: str, init: str):
    """Histogram of every layer as one row of an image: x = activation value, colour = log10 fraction."""
    p = depth_profile(act, init)
    lo, hi = HIST_RANGE[act]
    frac = np.log10(p["hist"].numpy() + 1e-7)
    im = ax.imshow(
        frac,
        aspect="auto",
        extent=(lo, hi, DEPTH + 0.5, 0.5),
        cmap="magma",
        vmin=-5,
        vmax=0,
        interpolation="nearest",
    )
    ax.set(
        yticks=[1, 4, 7, 10], title=f"{act}, {init}: std10 = {p['std'][-1]:.1e}"
    )
    ax.grid(False)
    return im


fig, axes = plt.subplots(2, 3, figsize=(11, 5.4))
for r, act in enumerate(("tanh", "relu")):
    for c, init in enumerate(SHOWN_INITS):
        im = draw_heatmap(axes[r, c], act, init)
for ax in axes[1]:
    ax.set_xlabel("activation value")
for ax in axes[:, 0]:
    ax.set_ylabel("layer")
fig.colorbar(
    im, ax=axes, label="log10 (fraction of entries in the bin)", shrink=0.8
)
fig.suptitle(
    "Per-layer histograms of a 10 x 500 MLP (ReLU: exact zeros left out; edge bins collect the overflow)"
)
plt.show()

# %% [markdown]
# Each panel stacks the histograms of the ten layers as rows (layer 1 at the top); bright means many
# entries. Small init (left) collapses to a thin line at 0 within a few layers. LeCun keeps tanh spread
# over its range but lets ReLU activations creep towards 0; He keeps the ReLU rows identical from top to
# bottom. With $\mathcal N(0, 1)$ (in the widget below) tanh piles up in the two edge bins at $\pm1$.
#
# ### Explore: any activation, any initialization
#
# Pick an activation and an initialization: the left panel shows the histogram of every layer as above,
# the right one the standard deviation per layer on a fixed log scale. Things to try: sigmoid with any
# initialization (its outputs sit around 0.5, never centred, and small init collapses them onto 0.5, not
# 0); GELU with LeCun versus He (GELU also suppresses negative inputs, so it needs He's factor 2 like
# ReLU); tanh and ReLU with $\mathcal N(0, 1)$.


# %%
def show_layers(activation: str = "tanh", init: str = "LeCun 1/n") -> None:
    p = depth_profile(activation, init)
    # a fixed layout (no constrained layout, few ticks) keeps the callback fast
    fig, (ax_h, ax_s) = plt.subplots(
        1,
        2,
        figsize=(11, 3.6),
        gridspec_kw={"width_ratios": [1.6, 1]},
        layout="none",
    )
    fig.subplots_adjust(
        left=0.06, right=0.98, bottom=0.14, top=0.9, wspace=0.15
    )
    im = draw_heatmap(ax_h, activation, init)
    fig.colorbar(im, ax=ax_h, label="log10 fraction")
    ax_h.set(xlabel="activation value", ylabel="layer")
    ax_s.plot(
        layers,
        p["std"],
        marker="o",
        color=viz.color(0),
        label="std of the activations",
    )
    ax_s.axhline(1.0, color=viz.color("reference"), ls=":", lw=1)
    ax_s.set(
        yscale="log",
        ylim=(1e-10, 1e13),
        xlabel="layer",
        xticks=layers,
        title="activation std per layer",
    )
    ax_s.set_yticks([1e-10, 1e-5, 1, 1e5, 1e10])
    ax_s.minorticks_off()
    note = f"{p['saturated'][-1]:.0%} saturated at layer 10"
    if activation == "relu":
        note = f"{np.mean(p['zeros']):.0%} exact zeros (not in the histogram)"
    ax_s.legend(title=note, loc="upper left", fontsize=8, title_fontsize=8)
    plt.show()


_ = widgets.interact(
    show_layers,
    activation=widgets.Dropdown(
        options=["tanh", "relu", "sigmoid", "gelu"], value="tanh"
    ),
    init=widgets.Dropdown(options=list(INITS), value="LeCun 1/n"),
)

# %% [markdown]
# ### Does it matter for training? A deep ReLU network on digits
#
# Statistics at initialization are only a proxy; the real test is training. Two identical 10-layer ReLU
# MLPs (9 hidden layers of 128 units) learn the digits with plain SGD with momentum, one initialized with
# $\mathcal N(0, 0.01^2)$, the other with He. We first measure the weight-gradient norm of every layer at
# initialization, then train both for 12 epochs.

# %% tags=["hide-input"]
viz.chain_diagram(
    [("digit\n[64]", "io"), ("linear 64 → 128\n+ ReLU", "linear"), ("8 × (linear 128 → 128\n+ ReLU)", "linear"),
     ("linear 128 → 10\nclass scores", "linear")],
    block_size=(2.3, 0.7), spacing=2.6, title="10-layer ReLU MLP: N(0, 0.01²) or He init",
)  # fmt: skip
plt.show()

# %%
digit_sizes = [64] + [128] * 9 + [10]
train_loader = DataLoader(
    splits.train,
    batch_size=64,
    shuffle=True,
    generator=torch.Generator().manual_seed(0),
)
val_loader = DataLoader(splits.val, batch_size=512)
xb, yb = xb.to(device), yb.to(device)
deep_runs = {}
for label, scheme, std in [
    ("N(0, 0.01²)", "normal", 0.01),
    ("He 2/n", "he_normal", None),
]:
    torch.manual_seed(0)
    model = cnn.mlp(digit_sizes, "relu")
    cnn.init_weights(
        model, scheme, std=std, generator=torch.Generator().manual_seed(0)
    )
    model.to(device)
    F.cross_entropy(model(xb), yb).backward()
    grad_norms = [
        m.weight.grad.norm().item() for m in model if isinstance(m, nn.Linear)
    ]
    model.zero_grad()
    hist = train.fit(
        model,
        train_loader,
        epochs=12,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        loss_fn=F.cross_entropy,
        val_loader=val_loader,
        metrics={"acc": metrics.accuracy},
        desc=label,
    )
    deep_runs[label] = {"grad_norms": grad_norms, "history": hist}

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for k, (label, run) in enumerate(deep_runs.items()):
    axes[0].plot(
        range(1, 11),
        run["grad_norms"],
        marker="o",
        color=viz.color(k),
        label=label,
    )
    axes[1].plot(
        range(1, 13),
        run["history"]["val_acc"],
        marker="o",
        color=viz.color(k),
        label=label,
    )
axes[0].set(
    yscale="log",
    xlabel="layer",
    ylabel="‖∂L/∂W‖ at initialization",
    title="Gradient norm per layer",
)
axes[1].set(
    xlabel="epoch",
    ylabel="validation accuracy",
    title="Training a 10-layer ReLU MLP on digits",
)
axes[1].axhline(0.1, color=viz.color("reference"), ls=":", lw=1, label="chance")
axes[0].legend()
axes[1].legend()
plt.show()

# %%
acc_small = deep_runs["N(0, 0.01²)"]["history"].last("val_acc")
acc_he = deep_runs["He 2/n"]["history"].last("val_acc")
print(
    f"validation accuracy after 12 epochs: N(0, 0.01²) {acc_small:.3f}, He {acc_he:.3f}"
)
assert acc_he > 0.9, (
    f"He-initialized deep MLP: val accuracy {acc_he:.3f}, expected > 0.9"
)
assert acc_small < 0.3, (
    f"small-init deep MLP should stall near chance, got {acc_small:.3f}"
)
assert acc_he - acc_small > 0.5, (
    f"gap between He and small init {acc_he - acc_small:.3f}, expected > 0.5"
)

# %% [markdown]
# With small weights, the gradient of every layer is about ten orders of magnitude smaller than with He
# (left panel), the output is practically constant, and the network stays at chance accuracy for all
# twelve epochs. The
# same architecture with He initialization trains to well above 90 %. Nothing but the scale of the
# initial random numbers differs.
#
# ### Does the choice of activation matter? A short race on digits
#
# Last, the activations against each other in training. The network is a 6-hidden-layer MLP with 64
# units per layer on the digits, deep enough for the activation to matter and small enough to train in
# a second. Each activation gets the initialization that suits it (LeCun for sigmoid and tanh, He for
# the ReLU family, GELU and SiLU) and its own learning rate: Adam with a rate from
# $\{10^{-3}, 3\cdot10^{-3}, 10^{-2}, 3\cdot10^{-2}\}$, chosen on the validation split after 12
# epochs. The test split is scored once, for the chosen rate.

# %% tags=["hide-input"]
viz.chain_diagram(
    [("digit\n[64]", "io"), ("linear 64 → 64\n+ act", "linear"), ("5 × (linear 64 → 64\n+ act)", "linear"),
     ("linear 64 → 10\nclass scores", "linear")],
    block_size=(2.3, 0.7), spacing=2.6, title="The race MLP: LeCun init for sigmoid and tanh, He for the others",
)  # fmt: skip
plt.show()

# %%
RACE = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu"]
race_lrs = [1e-3, 3e-3, 1e-2, 3e-2]
x_tr, y_tr = (t.to(device) for t in splits.tensors("train"))
x_va, y_va = (t.to(device) for t in splits.tensors("val"))
x_te, y_te = (t.to(device) for t in splits.tensors("test"))


def race_run(act: str, lr: float, epochs: int = 12, seed: int = 0) -> nn.Module:
    """Train the 6 x 64 MLP with mini-batches of 64 and Adam; returns the model in eval mode."""
    torch.manual_seed(seed)
    model = cnn.mlp([64] + [64] * 6 + [10], act)
    scheme = "lecun_normal" if act in ("sigmoid", "tanh") else "he_normal"
    cnn.init_weights(
        model, scheme, generator=torch.Generator().manual_seed(seed)
    )
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), generator=order).split(64):
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


race = {}  # activation -> (validation accuracy, lr, test accuracy)
for act in tqdm(RACE, desc="activations"):
    best = (-1.0, None, None)
    for lr in race_lrs:
        model = race_run(act, lr)
        with torch.no_grad():
            val_acc = metrics.accuracy(model(x_va), y_va).item()
            if val_acc > best[0]:
                best = (val_acc, lr, metrics.accuracy(model(x_te), y_te).item())
    race[act] = best
se = math.sqrt(0.97 * 0.03 / len(y_te))
print(
    f"{'activation':>10s} {'chosen lr':>9s} {'val acc':>8s} {'test acc':>9s}   (test standard error ~{se:.3f})"
)
for act, (val_acc, lr, test_acc) in race.items():
    print(f"{act:>10s} {lr:9.0e} {val_acc:8.3f} {test_acc:9.3f}")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
bars = ax.bar(
    RACE,
    [race[a][2] for a in RACE],
    color=[viz.color(k) for k in range(len(RACE))],
)
ax.bar_label(bars, fmt="%.3f", fontsize=8)
ax.set(
    ylabel="test accuracy",
    ylim=(0, 1.08),
    title="6-hidden-layer MLP on digits, each activation at its own lr",
)
plt.show()

# %%
modern = [race[a][2] for a in RACE if a != "sigmoid"]
assert min(modern) > 0.93, (
    f"every activation but sigmoid should pass 0.93 test accuracy, got {min(modern):.3f}"
)
assert max(modern) - min(modern) < 0.05, (
    f"spread among the modern activations {max(modern) - min(modern):.3f}"
)
assert race["sigmoid"][2] < min(modern) - 0.1, (
    f"sigmoid {race['sigmoid'][2]:.3f} vs the others {min(modern):.3f}"
)

# %% [markdown]
# On this small problem every activation except the sigmoid lands within a few points of the others,
# and those differences are of the size of the test set's standard error (about one point, three or
# four digits): with a fitting initialization and a tuned learning rate, ReLU, its smooth cousins and
# tanh are all fine. The sigmoid falls far behind in six layers: its outputs are never centred and
# its slope is at most $\tfrac14$, so the gradient reaching the first layers is small and badly
# conditioned. The differences between modern activations that papers report show up in much larger
# networks and longer training; this race does not show them, and we do not claim them.
#
# ## Summary
#
# - Without non-linearities a deep network collapses to one linear map (checked to float precision); on
#   the moons it is stuck at logistic-regression accuracy while a ReLU MLP exceeds 95 %.
# - Sigmoid and tanh saturate: their slope vanishes on the tails ($\sigma' \le \tfrac14$). A sigmoid
#   layer $\sigma(Wx)$ scales a gradient's norm by at most $\lVert W\rVert_2/4$: the weights are part of
#   the bound. Tanh is zero-centred and preferred inside networks; sigmoid is for probability outputs.
#   ReLU does not saturate for positive inputs but can die; LeakyReLU, ELU, GELU and SiLU keep a
#   gradient for negative inputs. All-positive initialization is not a cure for dead units.
# - In float32 the textbook $1/(1+e^{-x})$ has NaN gradients for $x < -88.72$ (and $2\sigma(2x)-1$ built
#   on it for $x < -44.36$); evaluating $e^{x}$ only at non-positive arguments in each branch fixes both.
# - Softmax outputs probabilities in $(0,1)$ that sum to 1; compute it (and log-sum-exp) after subtracting
#   the maximum, which changes nothing mathematically and removes overflow and underflow.
# - $\mathrm{Var}(z)=n\,\mathrm{Var}(w)\,\mathbb E[x^2]$ gives the initializations: LeCun $1/n_{in}$,
#   Glorot $2/(n_{in}+n_{out})$ (forward and backward compromise, measured on a $300 \to 100$ layer:
#   1.5 forward, 0.5 backward), He $2/n_{in}$ for ReLU. A convolution's fan-in is $C_{in}k^2$. PyTorch's
#   default for `Linear`/`Conv` has variance $1/(3n_{in})$.
# - Measured through 10 layers of 500 units: small init shrinks the signal to $10^{-7}$, He keeps ReLU
#   activations at std 0.8, LeCun lets them decay by $\sqrt 2$ per layer. On digits, a 10-layer ReLU MLP
#   with He init trains to above 90 % while the same network with $\mathcal N(0, 0.01^2)$ stays at chance.
#   Measure gradients as well as activations: tanh with $\mathcal N(0, 1)$ has healthy-looking
#   activations and gradients that explode towards the input.
# - Each at its own learning rate, the modern activations (and tanh) tie on a small digits MLP; the
#   sigmoid falls far behind in six layers.
# - `course_lib.nn` now provides `activation`, `mlp`, `init_weights` and `ActivationRecorder`; later
#   chapters add convolution blocks, residual networks and attention to the same module.
#
# ## Exercises
#
# Where the answer is code or a number, the exercise gives a stub and a check from
# `course_lib.exercises` that says what is wrong (chapter 00 explains the pattern); the collapsed
# solution below it passes the same check.
#
# 1. **He's factor 2, and LeakyReLU.** Show that for a pre-activation $z$ symmetric around 0,
#    $\mathbb E[\mathrm{relu}(z)^2] = \tfrac12 \mathrm{Var}(z)$. Generalize to LeakyReLU with slope $a$
#    and derive the variance $\mathrm{Var}(w) = g^2/n_{in}$ that keeps the second moment constant. Write
#    the gain `leaky_relu_gain(a)` $= g$; the check compares it with
#    `nn.init.calculate_gain("leaky_relu", a)`. Then verify that a 10-layer LeakyReLU(0.2) network
#    initialized this way keeps its activation std.


# %%
def leaky_relu_gain(a: float) -> float:
    raise NotImplementedError  # your code: the gain g, with Var(w) = g^2 / n_in


gain_cases = [(0.0,), (0.01,), (0.2,), (1.0,)]
exercises.check_function(
    leaky_relu_gain,
    gain_cases,
    reference=lambda a: nn.init.calculate_gain("leaky_relu", a),
)


# %% tags=["hide-cell"]
# Solution 1. By symmetry, z > 0 and z < 0 each carry half of E[z^2]; ReLU keeps only the positive half:
# E[relu(z)^2] = E[z^2 1{z>0}] = E[z^2] / 2 = Var(z) / 2 (z has mean 0).
# LeakyReLU keeps the positive half and a^2 times the negative half: E[f(z)^2] = (1 + a^2) / 2 Var(z).
# Keeping n Var(w) E[f(z)^2] = Var(z) needs Var(w) = 2 / ((1 + a^2) n): the gain g^2 = 2 / (1 + a^2).
def leaky_relu_gain(a: float) -> float:
    return math.sqrt(2 / (1 + a**2))


exercises.check_function(
    leaky_relu_gain,
    gain_cases,
    reference=lambda a: nn.init.calculate_gain("leaky_relu", a),
).assert_passed()
a = 0.2
zs = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
print(
    f"E[leaky(z)^2] / Var(z) = {(F.leaky_relu(zs, a) ** 2).mean() / zs.var():.4f}, theory {(1 + a**2) / 2:.4f}"
)
torch.manual_seed(0)
leaky_net = cnn.mlp([500] * 11, lambda: nn.LeakyReLU(a), final_activation=True)
for m in leaky_net:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, leaky_relu_gain(a) / math.sqrt(500))
        nn.init.zeros_(m.bias)
with torch.no_grad(), cnn.ActivationRecorder(leaky_net) as rec:
    leaky_net(X500)
print("std per layer:", [round(v, 2) for v in rec.column("std")])
assert 0.5 < rec.column("std")[-1] < 2

# %% [markdown]
# 2. **The output activation must match the loss.** `F.cross_entropy` expects raw logits and applies
#    log-softmax itself. What happens if a network ends with `nn.Softmax` and its output is passed to
#    `F.cross_entropy` anyway? Write `min_ce_after_softmax(K)`, the smallest loss such a model can
#    reach on a $K$-class problem, even with a perfectly confident, correct prediction, as a closed
#    form; the check evaluates `F.cross_entropy` on that best case. Then compare the gradients for a
#    confidently wrong prediction. (Likewise: `BCELoss` wants probabilities after a sigmoid,
#    `BCEWithLogitsLoss` wants logits.)


# %%
def min_ce_after_softmax(K: int) -> float:
    raise NotImplementedError  # your code: a closed form in K


def ce_of_one_hot_probabilities(K: int) -> float:
    """The best case, evaluated: probabilities (1, 0, ..., 0) passed to F.cross_entropy as logits."""
    return F.cross_entropy(
        torch.eye(K, dtype=torch.float64)[:1], torch.tensor([0])
    ).item()


exercises.check_function(
    min_ce_after_softmax,
    [(2,), (10,), (1000,)],
    reference=ce_of_one_hot_probabilities,
)


# %% tags=["hide-cell"]
# Solution 2. With probabilities p in [0, 1] taken as "logits", the best case is p = one-hot:
# loss = -log(e^1 / (e^1 + (K - 1) e^0)) = log(1 + (K - 1) / e), never 0 (1.4612 for K = 10); and
# softmax saturates, so the gradient with respect to the real logits vanishes exactly when the
# prediction is confidently wrong.
def min_ce_after_softmax(K: int) -> float:
    return math.log(1 + (K - 1) / math.e)


exercises.check_function(
    min_ce_after_softmax,
    [(2,), (10,), (1000,)],
    reference=ce_of_one_hot_probabilities,
).assert_passed()
K = 10
target = torch.tensor([3])
confident = torch.full((1, K), -20.0)
confident[0, 3] = 20.0
print(f"CE(logits) = {F.cross_entropy(confident, target):.2e}")
print(
    f"CE(softmax(logits)) = {F.cross_entropy(confident.softmax(1), target):.4f}, "
    f"log(1 + 9/e) = {min_ce_after_softmax(K):.4f}"
)
assert (
    abs(
        F.cross_entropy(confident.softmax(1), target).item()
        - min_ce_after_softmax(K)
    )
    < 1e-4
)
wrong = confident.roll(1, dims=1).requires_grad_(True)  # confidently wrong
F.cross_entropy(wrong, target).backward()
g_right = wrong.grad.abs().max().item()
wrong.grad = None
F.cross_entropy(wrong.softmax(1), target).backward()
print(
    f"largest gradient on the logits when confidently wrong: logits {g_right:.2f}, double softmax {wrong.grad.abs().max():.1e}"
)

# %% [markdown]
# 3. **Self-normalizing networks.** SELU (Klambauer et al., 2017) is
#    $\lambda\,\mathrm{ELU}_\alpha(x)$ with $\alpha \approx 1.6733$, $\lambda \approx 1.0507$, chosen so that
#    mean 0 and variance 1 is a fixed point of a layer with LeCun-normal weights. Write `selu(x)` from
#    scratch (the precise constants are $\alpha = 1.6732632423543772$ and
#    $\lambda = 1.0507009873554805$); the check compares it with `F.selu`, on large inputs too. Then build a 10-layer, 500-unit SELU MLP with `cnn.mlp` and
#    `cnn.init_weights(..., "lecun_normal")`, record the mean and std of every layer, and repeat with ELU.

# %%
selu_cases = [
    (torch.linspace(-6, 6, 101),),
    (torch.tensor([-200.0, -1.0, 0.0, 1.0, 200.0]),),
]


def selu(x: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code


exercises.check_function(selu, selu_cases, reference=F.selu)


# %% tags=["hide-cell"]
# Solution 3.
def selu(x: torch.Tensor) -> torch.Tensor:
    alpha, lam = 1.6732632423543772, 1.0507009873554805
    return lam * torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0)))


exercises.check_function(selu, selu_cases, reference=F.selu).assert_passed()
for act in ("selu", "elu"):
    torch.manual_seed(0)
    net = cnn.init_weights(
        cnn.mlp([500] * 11, act, final_activation=True), "lecun_normal"
    )
    with torch.no_grad(), cnn.ActivationRecorder(net) as rec:
        net(X500)
    print(
        f"{act}: std {[round(v, 2) for v in rec.column('std')]}, mean at layer 10 {rec.stats[-1].mean:.2f}"
    )
    if act == "selu":
        assert (
            0.8 < rec.column("std")[-1] < 1.2 and abs(rec.stats[-1].mean) < 0.15
        )
# SELU holds mean ~0 and std ~1 at every layer; ELU with the same init decays slowly, like tanh with LeCun.

# %% [markdown]
# 4. **Initializing the last layer.** (a) With a zero-initialized last layer, what is the initial
#    cross-entropy of a 10-class classifier, whatever the input? (b) For a binary classifier whose
#    positive class has prior $\pi$, which output bias makes the initial predicted probability equal
#    to $\pi$? Write `prior_bias(pi)` (the check compares it with `torch.logit`), and compare the
#    initial loss it gives for $\pi = 0.1$ with that of bias 0. Why do detectors (chapter 08)
#    initialize their classification bias this way?


# %%
def prior_bias(pi: float) -> float:
    raise NotImplementedError  # your code: the bias b with sigmoid(b) = pi


prior_cases = [(0.5,), (0.1,), (0.01,)]
exercises.check_function(
    prior_bias,
    prior_cases,
    reference=lambda pi: torch.logit(
        torch.tensor(pi, dtype=torch.float64)
    ).item(),
)


# %% tags=["hide-cell"]
# Solution 4. (a) Zero logits -> uniform softmax -> loss log(10) = 2.3026 for every example.
torch.manual_seed(0)
clf = cnn.mlp([64, 64, 10], "relu")
nn.init.zeros_(clf[-1].weight)
nn.init.zeros_(clf[-1].bias)
x_cpu, y_cpu = splits.train.tensors
loss0 = F.cross_entropy(clf(x_cpu), y_cpu).item()
print(f"(a) initial loss {loss0:.4f}, log(10) = {math.log(10):.4f}")
assert abs(loss0 - math.log(10)) < 1e-5


# (b) sigmoid(b) = pi  <=>  b = log(pi / (1 - pi)); the initial loss is then the label entropy.
def prior_bias(pi: float) -> float:
    return math.log(pi / (1 - pi))


exercises.check_function(
    prior_bias,
    prior_cases,
    reference=lambda pi: torch.logit(
        torch.tensor(pi, dtype=torch.float64)
    ).item(),
).assert_passed()
pi = 0.1
labels = torch.zeros(10_000)
labels[:1000] = 1.0  # exactly 10 % positives
for b in (0.0, prior_bias(pi)):
    loss_b = F.binary_cross_entropy_with_logits(
        torch.full_like(labels, b), labels
    ).item()
    print(f"(b) bias {b:+.3f}: initial BCE {loss_b:.3f}")
# Bias 0 predicts 0.5 and starts at log 2 = 0.693; the log-prior bias starts at the entropy H(0.1) = 0.325,
# so early training is not spent learning the class frequencies, and with extreme imbalance (detection,
# where almost every anchor is background) the huge initial loss from the many negatives is avoided.

# %% [markdown]
# ## References
#
# - Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller (1998). *Efficient BackProp*. In *Neural Networks: Tricks
#   of the Trade*, Springer LNCS 1524.
# - X. Glorot, Y. Bengio (2010). *Understanding the difficulty of training deep feedforward neural
#   networks*. AISTATS 2010.
# - V. Nair, G. E. Hinton (2010). *Rectified Linear Units Improve Restricted Boltzmann Machines*. ICML 2010.
# - A. L. Maas, A. Y. Hannun, A. Y. Ng (2013). *Rectifier Nonlinearities Improve Neural Network Acoustic
#   Models*. ICML 2013 Workshop on Deep Learning for Audio, Speech and Language Processing.
# - K. He, X. Zhang, S. Ren, J. Sun (2015). *Delving Deep into Rectifiers: Surpassing Human-Level
#   Performance on ImageNet Classification*. ICCV 2015, arXiv:1502.01852.
# - D.-A. Clevert, T. Unterthiner, S. Hochreiter (2016). *Fast and Accurate Deep Network Learning by
#   Exponential Linear Units (ELUs)*. ICLR 2016, arXiv:1511.07289.
# - D. Hendrycks, K. Gimpel (2016). *Gaussian Error Linear Units (GELUs)*. arXiv:1606.08415.
# - S. Elfwing, E. Uchibe, K. Doya (2018). *Sigmoid-weighted linear units for neural network function
#   approximation in reinforcement learning*. Neural Networks 107, 3-11, arXiv:1702.03118.
# - P. Ramachandran, B. Zoph, Q. V. Le (2017). *Searching for Activation Functions*. arXiv:1710.05941.
# - G. Klambauer, T. Unterthiner, A. Mayr, S. Hochreiter (2017). *Self-Normalizing Neural Networks*.
#   NeurIPS 2017, arXiv:1706.02515.
# - A. Karpathy et al. *CS231n: Convolutional Neural Networks for Visual Recognition*, course notes on
#   setting up the data and the model (activation functions, weight initialization), Stanford University.
