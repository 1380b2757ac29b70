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
# # 04 · Optimization
#
# Training a network is a walk downhill on a loss surface with thousands or millions of dimensions,
# guided only by the local slope, measured on a few examples at a time. Where the walk ends and how
# long it takes depend on a handful of decisions: how large a step to take compared with the
# curvature, whether to keep some velocity through narrow valleys, whether every parameter gets its
# own step size, and how the step size changes over training. This chapter computes gradients by
# hand (a circuit, a linear layer, a small MLP), builds the optimizers used in practice (GD, SGD,
# momentum, Nesterov, AdaGrad, RMSProp, Adam, AdamW) from their update equations and checks that each
# one reproduces `torch.optim` step for step, races them on an ill-conditioned valley, looks at
# saddle points, and then compares them fairly on a digits classifier: each at its own learning rate,
# chosen on a validation split. It ends with the tools that pick and shape the learning rate in
# practice (a range test, schedules, warm-up), gradient clipping, and a look at the loss landscape
# around a trained network.
#
# **Learning objectives.** After this chapter you can:
# - backpropagate through a circuit, a linear layer and a small MLP by hand, check the result against
#   autograd, and check any gradient with finite differences;
# - explain why gradient descent on a quadratic needs $\eta < 2/L$, and how the condition number
#   $\kappa = L/\lambda_{\min}$ sets its speed ($\propto \kappa$ steps) and that of momentum
#   ($\propto \sqrt\kappa$);
# - recognise a saddle point from the Hessian's eigenvalues, and explain why gradient noise helps to
#   leave one;
# - write GD, SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam and AdamW from their equations and match
#   `torch.optim` exactly, including its conventions (momentum buffer, dampening, where $\epsilon$
#   goes, bias correction, decoupled weight decay);
# - compare optimizers fairly (each at its own tuned learning rate) and read a learning-rate
#   sensitivity curve; find a learning rate with a range test;
# - measure how the noise of a mini-batch gradient falls with the batch size;
# - choose between step, cosine, one-cycle and warm-up schedules, and say what warm-up does and does
#   not prevent;
# - clip gradients by norm or by value, and say when clipping matters;
# - plot a filter-normalized slice of a network's loss landscape.
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (`train.fit`),
# [chapter 01](../01_preprocessing/01_preprocessing.ipynb) (centring makes gradient descent faster; this
# chapter explains why in terms of conditioning), [chapter 03](../03_losses/03_losses.ipynb)
# (cross-entropy). Partial derivatives and the chain rule; eigenvalues of a symmetric matrix.
#
# **Measured runtime:** 42 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [04_optimization.ipynb](04_optimization.ipynb) (notebook, with outputs) · [04_optimization.py](04_optimization.py) (the paired script instructors edit)

# %%
import copy
import itertools

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader

from course_lib import data, exercises, metrics, optim, runtime, train, viz

device = runtime.setup(seed=0)

# %% [markdown]
# ## Gradients and backpropagation
#
# Every optimizer in this chapter needs one thing from the model: the gradient $\nabla_\theta L$ of the
# loss with respect to every parameter. For a small step $\delta$,
# $L(\theta + \delta) \approx L(\theta) + \nabla L^\top \delta$, and among steps of a fixed length the
# one that lowers $L$ most is
# $\delta \propto -\nabla L$: the negative gradient is the direction of steepest descent, but only
# locally, for steps small enough that the linear approximation holds.
#
# ### A circuit by hand
#
# A network is a composition of simple operations, a computational graph or *circuit*.
# **Backpropagation** (Rumelhart et al., 1986) computes all the gradients in two passes. The forward
# pass evaluates the nodes and keeps their values. The backward pass visits the nodes from the output
# back to the inputs and applies the chain rule: each node multiplies the gradient arriving from above
# (the *upstream* gradient $\partial f/\partial \text{out}$) by its own *local* derivative
# $\partial \text{out}/\partial \text{in}$ and passes the product to its inputs. Take
# $f(x, y, z) = (x + y)\,z$ with the intermediate $q = x + y$:
#
# $$
# \frac{\partial f}{\partial z} = q, \qquad \frac{\partial f}{\partial q} = z, \qquad
# \frac{\partial f}{\partial x} = \frac{\partial f}{\partial q}\,\frac{\partial q}{\partial x}
# = z \cdot 1, \qquad \frac{\partial f}{\partial y} = z \cdot 1 .
# $$
#
# An addition passes its upstream gradient unchanged to both inputs; a product sends each input the
# upstream gradient times the *other* input.

# %%
# NBVAL_CHECK_OUTPUT
x_in, y_in, z_in = 3.0, -1.0, -2.0
q = x_in + y_in  # forward pass
f_out = q * z_in
# backward pass: a product node sends each input the other one
df_dq, df_dz = (z_in, q)
# an add node passes the gradient through
df_dx, df_dy = (df_dq * 1.0, df_dq * 1.0)

xyz = torch.tensor([x_in, y_in, z_in], requires_grad=True)
((xyz[0] + xyz[1]) * xyz[2]).backward()
torch.testing.assert_close(xyz.grad, torch.tensor([df_dx, df_dy, df_dz]))
print(
    f"f = {f_out}; by hand (df/dx, df/dy, df/dz) = {(df_dx, df_dy, df_dz)}; autograd {xyz.grad.tolist()}"
)


# %% tags=["hide-input"]
circuit = {
    "x": (0, 2.2, "x", "io"), "y": (0, 1.1, "y", "io"), "z": (0, 0.0, "z", "io"),
    "+": (2.6, 1.65, "+", "op"), "×": (5.0, 0.8, "×", "op"), "f": (7.4, 0.8, "f", "io"),
}  # fmt: skip
wires = [
    ("x", "+", x_in, df_dx),
    ("y", "+", y_in, df_dy),
    ("+", "×", q, df_dq),
    ("z", "×", z_in, df_dz),
]
wires.append(("×", "f", f_out, 1.0))
viz.diagram(circuit, [(a, b, "-", f"{value:g}\n∂f: {g:g}") for a, b, value, g in wires],
            block_size=(0.9, 0.5), fontsize=10,
            title="f = (x + y) z: on each wire its forward value, and under it the gradient ∂f/∂wire")  # fmt: skip
plt.show()

# %% [markdown]
# The same recipe works for any graph. A sigmoid neuron $f = \sigma(s)$ with
# $s = \mathbf w^\top \mathbf x + b$ has the local derivative $\sigma'(s) = \sigma(s)(1 - \sigma(s))$,
# which the forward pass already computed, so
# $\partial f/\partial \mathbf w = \sigma(s)(1-\sigma(s))\,\mathbf x$,
# $\partial f/\partial \mathbf x = \sigma(s)(1-\sigma(s))\,\mathbf w$ and
# $\partial f/\partial b = \sigma(s)(1-\sigma(s))$.

# %%
# NBVAL_CHECK_OUTPUT
w_n = torch.tensor([2.0, -3.0], requires_grad=True)
x_n = torch.tensor([-1.0, -2.0], requires_grad=True)
b_n = torch.tensor(-3.0, requires_grad=True)
out_n = torch.sigmoid(w_n @ x_n + b_n)
out_n.backward()
local = out_n.item() * (1 - out_n.item())  # sigma'(s) from the forward value
by_hand = {
    "w": local * x_n.detach(),
    "x": local * w_n.detach(),
    "b": torch.tensor(local),
}
for name, t in (("w", w_n), ("x", x_n), ("b", b_n)):
    torch.testing.assert_close(t.grad, by_hand[name])
print(
    f"sigma(s) = {out_n.item():.4f}; df/dw = {[round(v, 4) for v in by_hand['w'].tolist()]}, "
    f"df/dx = {[round(v, 4) for v in by_hand['x'].tolist()]}, df/db = {local:.4f}"
)

# %% [markdown]
# ### A linear layer by hand
#
# Networks apply the same recipe to whole matrices at once. A linear layer maps a batch
# $X \in \mathbb R^{B\times n}$ to $Y = XW^\top + \mathbf 1 b^\top$ with $W \in \mathbb R^{m\times n}$,
# i.e. $Y_{bj} = \sum_i X_{bi}W_{ji} + b_j$. Given the upstream gradient $G = \partial L/\partial Y$
# (same shape as $Y$, $B\times m$), the chain rule sums over every output an input influences:
#
# $$
# \frac{\partial L}{\partial W_{ji}} = \sum_b G_{bj}\,X_{bi}, \qquad
# \frac{\partial L}{\partial b_j} = \sum_b G_{bj}, \qquad
# \frac{\partial L}{\partial X_{bi}} = \sum_j G_{bj}\,W_{ji}
# \quad\Longrightarrow\quad
# \nabla_W L = G^\top X, \quad \nabla_b L = G^\top\mathbf 1, \quad \nabla_X L = G\,W .
# $$
#
# A useful check: each gradient has the shape of the thing it is the gradient of, and there is only
# one way to multiply $G$, $X$ and $W$ that gives it ($m\times B$ times $B\times n$ for $W$). The bias
# gradient sums over the batch because the same $b$ is added to every example.
#
# Two more local rules make a small MLP. A ReLU $H = \max(Z, 0)$ passes the gradient where its input
# was positive and blocks it elsewhere: $\partial L/\partial Z = \partial L/\partial H \odot
# \mathbb 1[Z > 0]$. Softmax followed by the cross-entropy averaged over the batch has the gradient
# $\partial L/\partial S = (\mathrm{softmax}(S) - Y_{\text{one-hot}})/B$ with respect to the scores $S$
# ([chapter 03](../03_losses/03_losses.ipynb) derives it). For the MLP
# $X \to Z_1 = XW_1^\top + b_1 \to H = \mathrm{ReLU}(Z_1) \to S = HW_2^\top + b_2 \to L$ the backward
# pass is these rules, read from the loss back to the input:
#
# $$
# \begin{aligned}
# dS &= (\mathrm{softmax}(S) - Y_{\text{one-hot}})/B, &
# dW_2 &= dS^\top H, \quad db_2 = dS^\top \mathbf 1, &
# dH &= dS\,W_2, \\
# dZ_1 &= dH \odot \mathbb 1[Z_1 > 0], &
# dW_1 &= dZ_1^\top X, \quad db_1 = dZ_1^\top \mathbf 1, &
# dX &= dZ_1 W_1 .
# \end{aligned}
# $$
#
# We write both passes out for a 64-32-10 ReLU MLP on 64 digits, in float64, and compare every
# gradient with autograd's.

# %% tags=["hide-input"]
backprop_blocks = {
    "X": (0, 1, "X\n[64, 64]", "io"),
    "l1": (2.4, 1, "linear W1, b1\nZ1 [64, 32]", "linear"),
    "relu": (4.8, 1, "ReLU\nH [64, 32]", "act"),
    "l2": (7.2, 1, "linear W2, b2\nS [64, 10]", "linear"),
    "L": (9.6, 1, "cross-entropy\nL (a number)", "head"),
    "dS": (9.6, -0.7, "dS = (softmax(S)\n− Y_onehot) / B", "other"),
    "d2": (7.2, -0.7, "dW2 = dSᵀH\ndb2 = dSᵀ1\ndH = dS W2", "other"),
    "dr": (4.8, -0.7, "dZ1 = dH ⊙\n1[Z1 > 0]", "other"),
    "d1": (2.4, -0.7, "dW1 = dZ1ᵀX\ndb1 = dZ1ᵀ1\ndX = dZ1 W1", "other"),
}
backprop_edges = [("X", "l1"), ("l1", "relu"), ("relu", "l2"), ("l2", "L"), ("L", "dS", "--"),
                  ("dS", "d2", "--", "dS"), ("d2", "dr", "--", "dH"), ("dr", "d1", "--", "dZ1")]  # fmt: skip
viz.diagram(backprop_blocks, backprop_edges, block_size=(1.9, 0.95),
            title="The 64-32-10 MLP: forward pass (top, left to right), backward pass (bottom, right to left)")  # fmt: skip
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
splits = data.digits_splits(flatten=True)
x_train, y_train = splits.tensors("train")
x_small, y_small = x_train[:64].double(), y_train[:64]
gen = torch.Generator().manual_seed(0)
W1 = (
    torch.randn(32, 64, dtype=torch.float64, generator=gen) / 8
).requires_grad_()  # std 1/sqrt(fan-in)
b1 = torch.zeros(32, dtype=torch.float64, requires_grad=True)
W2 = (
    torch.randn(10, 32, dtype=torch.float64, generator=gen) / 32**0.5
).requires_grad_()
b2 = torch.zeros(10, dtype=torch.float64, requires_grad=True)
X = x_small.clone().requires_grad_()

# forward pass, keeping what the backward pass needs
Z1 = X @ W1.T + b1
H = Z1.clamp(min=0)
S = H @ W2.T + b2
loss_mlp = F.cross_entropy(S, y_small)

with torch.no_grad():  # backward pass by hand
    dS = (S.softmax(1) - F.one_hot(y_small, 10).double()) / len(y_small)
    dW2, db2, dH = dS.T @ H, dS.sum(0), dS @ W2
    dZ1 = dH * (Z1 > 0)
    dW1, db1, dX = dZ1.T @ X, dZ1.sum(0), dZ1 @ W1

loss_mlp.backward()  # autograd
for name, ours, tensor in (
    ("W1", dW1, W1),
    ("b1", db1, b1),
    ("W2", dW2, W2),
    ("b2", db2, b2),
    ("X", dX, X),
):
    # float64 defaults: rtol 1e-7, atol 1e-7
    torch.testing.assert_close(ours, tensor.grad)
    print(f"dL/d{name:2s} {str(tuple(ours.shape)):9s} by hand == autograd")

# %% [markdown]
# ### Checking gradients with finite differences
#
# A hand-written backward pass is easy to get subtly wrong; the standard check compares it with a
# **centred finite difference**, one parameter at a time:
#
# $$
# \frac{\partial L}{\partial \theta_i} \approx \frac{L(\theta + h\,e_i) - L(\theta - h\,e_i)}{2h} .
# $$
#
# Its truncation error is $O(h^2)$ (the one-sided difference has $O(h)$), but the two values of $L$ are
# rounded to the machine precision $\varepsilon$ before they are subtracted, which adds an error
# $\approx \varepsilon |L| / h$. The sum is smallest near $h \approx \varepsilon^{1/3}$: about $10^{-5}$
# in float64 ($\varepsilon \approx 2\times10^{-16}$) and $5\times10^{-3}$ in float32
# ($\varepsilon \approx 10^{-7}$), where the best achievable relative error is only about $10^{-4}$.
# Gradient checks are therefore done in float64. We check a small MLP written as a function of one flat
# parameter vector, first with our own loop, then with `torch.autograd.gradcheck`.

# %%
SIZES = {
    "W1": (8, 64),
    "b1": (8,),
    "W2": (10, 8),
    "b2": (10,),
}  # a 64-8-10 tanh MLP, 610 parameters


def mlp_loss(theta, x=x_small, y=y_small):
    """Cross-entropy of a tanh MLP whose weights are the flat vector theta (Tensor[610])."""
    p, start = {}, 0
    for name, shape in SIZES.items():
        n = int(np.prod(shape))
        p[name], start = theta[start : start + n].view(shape), start + n
    hidden = torch.tanh(x @ p["W1"].T + p["b1"])
    return F.cross_entropy(hidden @ p["W2"].T + p["b2"], y)


def numerical_grad(fn, theta, h=1e-6):
    """Centred differences, one coordinate at a time (2 evaluations per parameter)."""
    g = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = h
        g[i] = (fn(theta + e) - fn(theta - e)) / (2 * h)
    return g


theta0 = 0.3 * torch.randn(
    610, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
)
theta0.requires_grad_(True)
(g_auto,) = torch.autograd.grad(mlp_loss(theta0), theta0)
g_num = numerical_grad(mlp_loss, theta0.detach())
rel_err = ((g_auto - g_num).abs().max() / g_auto.abs().max()).item()
assert rel_err < 1e-7, (
    f"relative error {rel_err:.2e} between autograd and finite differences"
)
assert torch.autograd.gradcheck(mlp_loss, (theta0,), eps=1e-6, atol=1e-8)
print(
    f"max relative error autograd vs centred differences (float64, h = 1e-6): {rel_err:.1e}"
)

# %% tags=["hide-input"]
k_probe = int(g_auto.abs().argmax())  # the parameter with the largest gradient
exact = g_auto[k_probe].item()
hs = np.geomspace(1e-12, 1e-1, 45)
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for i, dtype in enumerate((torch.float32, torch.float64)):
    th, xs = theta0.detach().to(dtype), x_small.to(dtype)
    errors = []
    for h in hs:
        e = torch.zeros_like(th)
        e[k_probe] = h
        fd = (mlp_loss(th + e, xs).item() - mlp_loss(th - e, xs).item()) / (
            2 * h
        )
        errors.append(max(abs(fd - exact) / abs(exact), 1e-17))
    ax.loglog(
        hs,
        errors,
        marker="o",
        ms=3,
        color=viz.color(i),
        label=str(dtype).replace("torch.", ""),
    )
    ax.axvline(
        torch.finfo(dtype).eps ** (1 / 3), color=viz.color(i), ls=":", lw=1
    )
ax.set(
    xlabel="step h",
    ylabel="relative error of the centred difference",
    ylim=(1e-12, 10),
    title="Finite differences: rounding error (left) vs truncation error (right)",
)
ax.legend(title="dotted: h = eps^(1/3)")
plt.show()

# %% [markdown]
# On the right of each V the truncation error falls as $h^2$ (slope 2); on the left the rounding
# error grows as $1/h$. In float32 no step gets the relative error below about $10^{-4}$: fine for
# catching a missing factor of 2, useless for catching a small bias.
#
# ## Gradient descent on an ill-conditioned valley
#
# **Gradient descent** (GD) repeats $\theta \leftarrow \theta - \eta\,\nabla L(\theta)$ with the
# gradient of the whole training set and a **learning rate** (step size) $\eta$. Near a minimum every
# smooth loss looks like a quadratic, $L(\theta) \approx \tfrac12 \theta^\top H \theta$, with $H$ the
# Hessian, so the quadratic tells us what step sizes can work. Rotate the coordinates onto the
# eigenvectors of $H$ (eigenvalues $\lambda_i$): the gradient is $H\theta$ and each coordinate evolves
# on its own,
#
# $$
# \theta_i \leftarrow (1 - \eta \lambda_i)\,\theta_i
# \quad\Longrightarrow\quad \theta_i^{(t)} = (1 - \eta\lambda_i)^t\,\theta_i^{(0)} .
# $$
#
# - GD converges only if $|1 - \eta\lambda_i| < 1$ for every $i$, i.e.
#   $\eta < 2/L$ with $L = \lambda_{\max}$ (the smoothness constant). Beyond it, the steepest direction
#   overshoots by more than it corrects, and the iterates grow geometrically.
# - The flattest direction, with eigenvalue $\lambda_{\min}$, shrinks only by $1 - \eta\lambda_{\min}$
#   per step. The best constant step balances the two extremes, $\eta^\star = 2/(L + \lambda_{\min})$,
#   and gives the rate $\frac{\kappa - 1}{\kappa + 1}$ with the **condition number**
#   $\kappa = L/\lambda_{\min}$. Gaining a factor $\varepsilon$ takes about
#   $\frac{\kappa}{2}\ln\frac{1}{\varepsilon}$ steps: **GD is slow in proportion to $\kappa$.**
#
# Our test bed is the valley $f(x, y) = \tfrac12(x^2 + \kappa\,y^2)$ with $\kappa = 100$: $L = 100$,
# $\lambda_{\min} = 1$, so $\eta$ must stay below $0.02$, and even the best $\eta$ shrinks the error
# along $x$ by only 2 % per step. In a network, badly scaled or correlated inputs create exactly such valleys,
# which is why centring and standardizing the inputs
# ([chapter 01](../01_preprocessing/01_preprocessing.ipynb)) speeds gradient descent up.

# %%
KAPPA, START = 100.0, (-5.0, 1.0)


def valley(theta, kappa=KAPPA):
    """f(x, y) = (x² + kappa y²) / 2 for theta = Tensor[2] (or numpy array [..., 2])."""
    return 0.5 * (theta[..., 0] ** 2 + kappa * theta[..., 1] ** 2)


def gd_on_valley(lr, steps=200, kappa=KAPPA):
    """f after each of `steps` GD steps from START (numpy, closed form per coordinate)."""
    factors = 1 - lr * np.array([1.0, kappa])
    path = np.array(START) * factors ** np.arange(steps + 1)[:, None]
    return valley(path, kappa)


for lr in (0.015, 0.0198):
    x_end, y_end = np.array(START) * (1 - lr * np.array([1.0, KAPPA])) ** 200
    print(
        f"eta L = {lr * KAPPA:.2f}: f after 200 steps = {valley(np.array([x_end, y_end])):.4f}; "
        f"flat part x²/2 = {x_end**2 / 2:.4f}, steep part 100 y²/2 = {KAPPA * y_end**2 / 2:.4f}"
    )

# %% tags=["hide-input"]
etas = np.linspace(0, 0.022, 500)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
ax.plot(
    etas * KAPPA,
    np.abs(1 - etas),
    color=viz.color(0),
    label="flat direction, λ = λmin = 1",
)
ax.plot(
    etas * KAPPA,
    np.abs(1 - etas * KAPPA),
    color=viz.color(1),
    label="steep direction, λ = L = 100",
)
ax.plot(
    etas * KAPPA,
    np.maximum(np.abs(1 - etas), np.abs(1 - etas * KAPPA)),
    color="black",
    ls="--",
    lw=1,
    label="the slower of the two: the rate",
)
ax.axvline(
    2 / (KAPPA + 1) * KAPPA,
    color=viz.color(2),
    ls=":",
    label="η* = 2/(L + λmin)",
)
ax.axvspan(2, 2.2, color=viz.color(3), alpha=0.15, label="η > 2/L: diverges")
ax.set(
    xlabel="η · L",
    ylabel="|1 − ηλ| (factor per step)",
    title="Contraction per step on the valley",
    ylim=(0, 1.25),
    xlim=(0, 2.2),
)
ax.legend(fontsize=8, loc="lower left")
for i, lr in enumerate((0.005, 0.01, 0.0198, 0.0205)):
    axes[1].semilogy(
        gd_on_valley(lr),
        color=viz.color(i),
        label=f"η = {lr} (ηL = {lr * KAPPA:.2f})",
    )
axes[1].set(
    xlabel="GD step",
    ylabel="f",
    ylim=(1e-3, 1e4),
    title="GD on f = (x² + 100y²)/2 from (−5, 1)",
)
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Even $\eta$ just under the limit ($\eta L = 1.98$) leaves $f \approx 0.02$ after 200 steps, and
# most of it sits in the *steep* direction. There the factor per step is $1 - \eta L = -0.98$: $y$
# flips sign at every step and shrinks by only 2 % per step, no faster than $x$ along the flat floor
# (factor $1 - 0.0198 \approx 0.98$). That is the balance the best constant step
# $\eta^\star = 2/(L + \lambda_{\min}) \approx 0.0198$ strikes: both directions contract at the same
# slow rate. A smaller step such as $\eta L = 1.5$ settles the steep direction quickly
# ($|1 - 1.5| = 0.5$ per step) and leaves all the loss on the flat floor, slightly more of it. Just
# over the limit, the steep direction explodes.
#
# ## Stochastic gradient descent
#
# The training loss is an average over $N$ examples, $L(\theta) = \frac1N\sum_i \ell_i(\theta)$, and GD
# pays for all $N$ gradients per step. **Stochastic gradient descent** (SGD; Robbins and Monro, 1951)
# uses the gradient of a random mini-batch $\mathcal B$ of $B$ examples instead:
#
# $$
# g_{\mathcal B} = \frac1B \sum_{i \in \mathcal B} \nabla \ell_i(\theta), \qquad
# \theta \leftarrow \theta - \eta\, g_{\mathcal B} .
# $$
#
# The update rule is GD's; only the gradient changes. $g_{\mathcal B}$ is an unbiased estimate of
# $\nabla L$, and its noise shrinks with the batch: if $\Sigma$ is the covariance of the per-example
# gradients, a batch drawn without replacement has
#
# $$
# \mathbb E\,\lVert g_{\mathcal B} - \nabla L\rVert^2
# = \frac{\operatorname{tr}\Sigma}{B}\cdot\frac{N - B}{N - 1}.
# $$
#
# One epoch of SGD makes $N/B$ steps for the price of one GD step. Far from the minimum, where the true
# gradient is large compared with the noise, that is a large win. Near it, the noise keeps the
# iterates bouncing in a region whose size grows with $\eta$: with a constant step size SGD does not
# converge, which is one reason to decay the learning rate (Robbins and Monro require
# $\sum_t \eta_t = \infty$ and $\sum_t \eta_t^2 < \infty$).
#
# ### Gradient noise and the batch size
#
# We measure this on a digits MLP at initialization. `torch.func` computes all 1,078 per-example
# gradients in one vectorized call (`vmap` of `grad`); their mean must equal the full-batch gradient
# from autograd.

# %%
torch.manual_seed(0)
probe_model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(
    device
)
xt, yt = x_train.to(device), y_train.to(device)
params = {k: v.detach() for k, v in probe_model.named_parameters()}


def example_loss(p, x, y):
    return F.cross_entropy(functional_call(probe_model, p, (x[None],)), y[None])


per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, xt, yt)
# [N, P] per-example gradients
G = torch.cat([g.flatten(1) for g in per_example.values()], dim=1)
full = torch.autograd.grad(
    F.cross_entropy(probe_model(xt), yt), list(probe_model.parameters())
)
torch.testing.assert_close(
    G.mean(0), torch.cat([g.flatten() for g in full]), rtol=1e-4, atol=1e-6
)

n_train, g_full = len(G), G.mean(0)
# tr Σ = mean squared distance to the mean gradient
trace_sigma = ((G - g_full) ** 2).sum(1).mean()
gen = torch.Generator().manual_seed(0)
batch_sizes = 2 ** np.arange(11)  # 1 ... 1024
measured = []
for b in batch_sizes:
    draws = torch.stack(
        [torch.randperm(n_train, generator=gen)[:b] for _ in range(40)]
    )
    # row i averages batch i
    select = torch.zeros(40, n_train).scatter_(1, draws, 1.0 / b).to(device)
    g_b = select @ G  # 40 mini-batch gradients
    measured.append(
        (((g_b - g_full) ** 2).sum(1).mean() / (g_full**2).sum()).item()
    )
theory = (
    (trace_sigma / (g_full**2).sum()).item()
    / batch_sizes
    * (n_train - batch_sizes)
    / (n_train - 1)
)
noise_scale = (trace_sigma / (g_full**2).sum()).item()
print(
    f"{G.shape[1]} parameters; the noise equals the signal at B ≈ tr Σ / |∇L|² = {noise_scale:.0f}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.loglog(
    batch_sizes,
    measured,
    "o",
    color=viz.color(0),
    label="measured (40 batches each)",
)
theory_label = "tr Σ / (B |∇L|²) · (N − B)/(N − 1)"
ax.loglog(batch_sizes, theory, color=viz.color("reference"), label=theory_label)
ax.axhline(1, color=viz.color(3), ls=":", lw=1, label="noise = signal")
ax.set(
    xlabel="batch size B",
    ylabel="E|g_B − ∇L|² / |∇L|²",
    title="Mini-batch gradient noise, ∝ 1/B",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The relative noise falls as $1/B$ (its standard deviation as $1/\sqrt B$), and faster at the end,
# where the batch becomes the whole training set. Below the "noise scale"
# $\operatorname{tr}\Sigma / \lVert\nabla L\rVert^2$ (McCandlish et al., 2018) a bigger batch buys an
# almost proportionally better step; far above it, doubling the batch doubles the cost and barely
# changes the step. As training goes on, $\lVert\nabla L\rVert$ shrinks and the noise scale grows.
#
# ## Optimizers from scratch
#
# Each optimizer below is a short class that reads `p.grad` and updates the parameter in place, like
# `torch.optim`. They share a skeleton: the parameters, a state dictionary per parameter (velocities,
# moment estimates), and the step counter $t$ (starting at 1). We write $g$ for the gradient of the
# current mini-batch, $\eta$ for the learning rate and $\lambda$ for the weight decay.


# %%
class Optimizer:
    """The skeleton shared by the optimizers below: parameters, per-parameter state, step counter t."""

    def __init__(self, params, lr):
        self.params = list(params)
        self.lr = lr
        self.state = [{} for _ in self.params]
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, state in zip(self.params, self.state, strict=True):
            self.update(p, p.grad, state)

    def update(self, theta, g, state):
        raise NotImplementedError


# %% [markdown]
# ### GD and SGD
#
# $$
# \theta \leftarrow \theta - \eta\,(g + \lambda\theta)
# $$
#
# With the full-batch gradient this is GD, with a mini-batch's it is SGD. The optional term
# $\lambda\theta$ is the gradient of an L2 penalty $\frac\lambda2\lVert\theta\rVert^2$; for plain SGD
# it is the same as shrinking the weights by the factor $1 - \eta\lambda$ before each step ("weight
# decay"). PyTorch's `SGD(lr, weight_decay)` is exactly this.


# %%
class SGD(Optimizer):
    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, lr)
        self.wd = weight_decay

    def update(self, theta, g, state):
        g = g + self.wd * theta  # gradient of the L2 penalty
        theta -= self.lr * g


# %% [markdown]
# ### Momentum
#
# In the valley, successive gradients along the flat $x$ direction point the same way, while along
# the steep $y$ direction they alternate in sign. **Momentum** (Polyak's heavy ball, 1964) keeps a
# running sum of past gradients: the consistent components add up, the alternating ones cancel. The
# textbook form keeps a velocity $v$:
#
# $$
# v \leftarrow \mu v - \eta g, \qquad \theta \leftarrow \theta + v ,
# $$
#
# with momentum $\mu$ around 0.9, so a constant gradient is eventually followed with the step
# $\eta/(1-\mu) = 10\eta$. PyTorch keeps instead a buffer $b$ in gradient units, with an optional
# dampening $\tau$, and starts it at the first gradient:
#
# $$
# b_1 = g_1, \qquad b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad \theta \leftarrow \theta - \eta\, b_t .
# $$
#
# With $\tau = 0$ and a constant $\eta$ the two forms produce the same iterates ($v = -\eta b$). They
# differ when $\eta$ changes: PyTorch's step follows a new learning rate at once, the velocity form
# keeps moving at the old speed for a while (exercise 2).


# %%
class Momentum(Optimizer):
    def __init__(
        self, params, lr, momentum=0.9, dampening=0.0, weight_decay=0.0
    ):
        super().__init__(params, lr)
        self.mu, self.tau, self.wd = momentum, dampening, weight_decay

    def buffer(self, g, state):
        if "b" not in state:
            # PyTorch starts the buffer at the first gradient, undamped
            state["b"] = g.clone()
        else:
            state["b"] = self.mu * state["b"] + (1 - self.tau) * g
        return state["b"]

    def update(self, theta, g, state):
        g = g + self.wd * theta
        theta -= self.lr * self.buffer(g, state)


# %% [markdown]
# ### Nesterov momentum
#
# Nesterov's method (1983, brought to deep learning by Sutskever et al., 2013) evaluates the gradient
# where the momentum is about to carry the parameters, $\theta + \mu v$, and so corrects an overshoot
# one step earlier:
#
# $$
# v \leftarrow \mu v - \eta\,\nabla L(\theta + \mu v), \qquad \theta \leftarrow \theta + v .
# $$
#
# Computing a gradient at a point other than the current parameters is awkward in a framework, so
# PyTorch tracks the look-ahead point $\phi = \theta + \mu v$ itself. Substituting gives an update
# that uses only the gradient $g$ at the current parameters:
#
# $$
# b_t = \mu\, b_{t-1} + g_t, \qquad \phi \leftarrow \phi - \eta\,(g_t + \mu\, b_t) .
# $$
#
# (PyTorch requires $\tau = 0$ with `nesterov=True`.)


# %%
class Nesterov(Momentum):
    def update(self, theta, g, state):
        g = g + self.wd * theta
        b = self.buffer(g, state)
        theta -= self.lr * (g + self.mu * b)


# %% [markdown]
# ### AdaGrad
#
# One learning rate for all parameters is a compromise: it must be small enough for the steepest
# direction. **AdaGrad** (Duchi et al., 2011) gives each parameter its own rate, dividing by the root
# of the sum of all its past squared gradients (all operations element-wise):
#
# $$
# G \leftarrow G + g \odot g, \qquad \theta \leftarrow \theta - \eta\,\frac{g}{\sqrt{G} + \epsilon} .
# $$
#
# Parameters with large gradients get small steps; parameters with small or rare gradients (a
# rarely active feature) get large ones. Because $G$ only grows, the effective rate decays like
# $1/\sqrt t$: good for convex problems, often too fast for deep networks. PyTorch's conventions:
# $\epsilon = 10^{-10}$ is added *after* the square root, $G$ starts at 0 (`initial_accumulator_value`),
# and weight decay is added to $g$ first.


# %%
class AdaGrad(Optimizer):
    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr)
        self.eps, self.wd = eps, weight_decay

    def update(self, theta, g, state):
        g = g + self.wd * theta
        # sum of squared gradients, never forgets
        state["G"] = state.get("G", 0) + g * g
        theta -= self.lr * g / (state["G"].sqrt() + self.eps)


# %% [markdown]
# ### RMSProp
#
# **RMSProp** (Tieleman and Hinton, 2012, proposed in a lecture, not a paper) replaces AdaGrad's sum by
# an exponential moving average, so old gradients are forgotten and the effective rate does not decay
# to zero:
#
# $$
# v \leftarrow \alpha v + (1 - \alpha)\, g \odot g, \qquad
# \theta \leftarrow \theta - \eta\,\frac{g}{\sqrt{v} + \epsilon} .
# $$
#
# PyTorch: $\alpha = 0.99$ by default (Keras calls it $\rho$, with default 0.9, and puts $\epsilon$
# inside the root), $\epsilon = 10^{-8}$ outside the root, $v$ starts at 0 and is not bias-corrected.
# That last point makes the first steps large: $v_1 = (1 - \alpha) g_1^2$, so the first step is
# $\eta\, g_1 / (\sqrt{0.01}\,|g_1|) = 10\,\eta$ in every coordinate. (`RMSprop` also has a `momentum`
# option and a `centered` variant that divides by an estimate of the standard deviation.)


# %%
class RMSProp(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.alpha, self.eps, self.wd = alpha, eps, weight_decay

    def update(self, theta, g, state):
        g = g + self.wd * theta
        # moving average of g²
        state["v"] = self.alpha * state.get("v", 0) + (1 - self.alpha) * g * g
        theta -= self.lr * g / (state["v"].sqrt() + self.eps)


# %% [markdown]
# ### Adam
#
# **Adam** (Kingma and Ba, 2015) combines momentum with RMSProp's per-parameter scaling. It keeps
# moving averages of the gradient (first moment, $m$) and of its square (second moment, $v$), corrects
# their bias towards the zero they start from, and steps along their ratio:
#
# $$
# \begin{aligned}
# m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, &
# v &\leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g, \\
# \hat m &= \frac{m}{1 - \beta_1^t}, &
# \hat v &= \frac{v}{1 - \beta_2^t}, \qquad
# \theta \leftarrow \theta - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon} .
# \end{aligned}
# $$
#
# Defaults: $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\epsilon = 10^{-8}$ added outside the root. **Bias
# correction:** after $t$ steps of a constant gradient $g$, $m = (1 - \beta_1^t)\,g$, so dividing by
# $1 - \beta_1^t$ gives back $g$; without it the early steps would be far too small for $m$ and too
# large for $v$ (RMSProp's $10\eta$ first step). With it, the first step is exactly $\eta\,g/|g|$:
# every parameter moves by $\eta$, whatever the size of its gradient.
#
# Adam is sometimes described as "AdaGrad with momentum". That is not right: AdaGrad divides by a sum
# that never forgets, so its steps shrink forever, while Adam's $v$ is RMSProp's moving average. Adam is
# **RMSProp with momentum (on $m$) and bias correction**. PyTorch's `Adam(weight_decay=λ)` adds
# $\lambda\theta$ to $g$ before the moments, i.e. L2 regularization.


# %%
class Adam(Optimizer):
    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    ):
        super().__init__(params, lr)
        self.betas, self.eps, self.wd = betas, eps, weight_decay

    def update(self, theta, g, state):
        # L2: the penalty's gradient goes through the moments
        g = g + self.wd * theta
        self.adam_step(theta, g, state)

    def adam_step(self, theta, g, state):
        beta1, beta2 = self.betas
        state["m"] = beta1 * state.get("m", 0) + (1 - beta1) * g
        state["v"] = beta2 * state.get("v", 0) + (1 - beta2) * g * g
        m_hat = state["m"] / (1 - beta1**self.t)  # bias corrections
        v_hat = state["v"] / (1 - beta2**self.t)
        theta -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


# %% [markdown]
# ### AdamW: decoupled weight decay
#
# For SGD, an L2 penalty and weight decay are the same thing. For Adam they are not: the penalty's
# gradient $\lambda\theta$ is divided by $\sqrt{\hat v}$ like the rest of the gradient, so a weight with
# a large gradient history is barely decayed, and one with small gradients is decayed hard.
# Loshchilov and Hutter (2019) **decouple** the decay from the gradient: shrink the weights directly,
# then take the Adam step with the loss gradient alone. PyTorch's `AdamW` does
#
# $$
# \theta \leftarrow \theta - \eta\lambda\,\theta, \qquad \text{then the Adam step with } g ,
# $$
#
# with the default $\lambda = 0.01$. (The paper writes the decay as $\eta_t \lambda\theta$ with a
# schedule multiplier $\eta_t$ but *not* the base rate $\alpha$; PyTorch multiplies by the learning
# rate, so its $\lambda$ is the paper's $\lambda/\alpha$.)


# %%
class AdamW(Adam):
    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
    ):
        super().__init__(params, lr, betas, eps, weight_decay)

    def update(self, theta, g, state):
        # decoupled: decay the weights, not the gradient
        theta -= self.lr * self.wd * theta
        self.adam_step(theta, g, state)


# %% [markdown]
# The difference is easy to see on two weights that the data do not care about: their loss gradient
# is pure noise, with standard deviation 1 for the first and 0.01 for the second. Both start at 1 and
# get the same decay $\lambda = 0.1$.

# %%
noise = torch.randn(
    600, 2, generator=torch.Generator().manual_seed(1)
) * torch.tensor([1.0, 0.01])
decay_paths = {}
for name, make in (
    ("Adam + L2", torch.optim.Adam),
    ("AdamW", torch.optim.AdamW),
):
    w = torch.ones(2, requires_grad=True)
    opt = make([w], lr=0.01, weight_decay=0.1)
    path = [w.detach().clone()]
    for g_t in noise:
        # the data's gradient: noise, no pull in any direction
        w.grad = g_t.clone()
        opt.step()
        path.append(w.detach().clone())
    decay_paths[name] = torch.stack(path)
for name, path in decay_paths.items():
    print(
        f"{name:9s} after 600 steps: noisy weight {path[-1, 0]:+.2f}, quiet weight {path[-1, 1]:+.2f}"
    )

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
for ax, (name, path) in zip(axes, decay_paths.items(), strict=True):
    ax.plot(
        path[:, 0], color=viz.color(0), label="weight with gradient noise 1"
    )
    ax.plot(
        path[:, 1], color=viz.color(1), label="weight with gradient noise 0.01"
    )
    ax.set(xlabel="step", title=f"{name}, λ = 0.1, η = 0.01")
axes[0].set_ylabel("weight")
axes[0].legend()
plt.show()

# %% [markdown]
# With the L2 penalty inside Adam, the pull a weight feels is $\lambda\theta$ divided by its gradient
# scale $\sqrt{\hat v}$. For the noisy weight (scale 1) that happens to equal AdamW's decay. The quiet
# weight (scale 0.01) is pushed to 0 within about 200 steps: its gradient is almost only
# $\lambda\theta$, and Adam normalizes that to a step of size $\eta$, a decay 100 times stronger
# than intended. AdamW shrinks both by the same factor $1 - \eta\lambda$ per step,
# $0.999^{600} \approx 0.55$, plus the random walk caused by the noise.
#
# ### All eight equal `torch.optim`
#
# Now the check. For each optimizer, two copies of the same small MLP (in float64, on the CPU) take 15
# steps on the same mini-batches of digits, one with our class and one with `torch.optim`; the
# parameters must agree after every step. The settings are not all defaults, to exercise the
# conventions: weight decay for SGD and Adam, dampening for momentum.

# %%
# NBVAL_CHECK_OUTPUT
x_check, y_check = x_train[:256].double(), y_train[:256]


def same_as_torch(make_ours, make_torch, batch_size=32, steps=15):
    """Run our optimizer and torch's side by side; assert equal parameters after every step."""
    torch.manual_seed(1)
    ours = nn.Sequential(
        nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)
    ).double()
    ref = copy.deepcopy(ours)
    opt_ours, opt_ref = (
        make_ours(ours.parameters()),
        make_torch(ref.parameters()),
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(y_check), generator=gen)[:batch_size]
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            F.cross_entropy(model(x_check[idx]), y_check[idx]).backward()
            opt.step()
        for p_ours, p_ref in zip(
            ours.parameters(), ref.parameters(), strict=True
        ):
            torch.testing.assert_close(p_ours, p_ref, rtol=1e-10, atol=1e-12)


checks = {
    "GD": (
        lambda p: SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1),
        len(y_check),
    ),
    "SGD": (
        lambda p: SGD(p, lr=0.1, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-2),
        32,
    ),
    "momentum": (
        lambda p: Momentum(p, lr=0.05, momentum=0.9, dampening=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
        32,
    ),
    "Nesterov": (
        lambda p: Nesterov(p, lr=0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        32,
    ),
    "AdaGrad": (
        lambda p: AdaGrad(p, lr=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.1),
        32,
    ),
    "RMSProp": (
        lambda p: RMSProp(p, lr=0.01),
        lambda p: torch.optim.RMSprop(p, lr=0.01),
        32,
    ),
    "Adam": (
        lambda p: Adam(p, lr=0.01, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
        32,
    ),
    "AdamW": (
        lambda p: AdamW(p, lr=0.01, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
        32,
    ),
}
for name, (make_ours, make_torch, batch_size) in checks.items():
    same_as_torch(make_ours, make_torch, batch_size)
    print(
        f"{name:9s} (batch {batch_size:3d}): parameters equal to torch.optim's after each of 15 steps"
    )

# %% [markdown]
# From here on the chapter uses `torch.optim`.
#
# ## The race on the valley
#
# Back to $f = \tfrac12(x^2 + 100\,y^2)$ from $(-5, 1)$, 200 steps each (the gradient is exact here, so
# GD and SGD coincide). GD gets its best constant step, $\eta^\star = 2/(L + \lambda_{\min}) \approx 0.0198$,
# so that it is not handicapped. Momentum uses a plain, untuned 0.015. Nesterov needs a smaller one: on a
# quadratic, heavy-ball momentum is stable for $\eta\lambda < 2(1 + \mu)$, Nesterov's only for
# $\eta\lambda < 2(1 + \mu)/(1 + 2\mu)$, that is $\eta < 0.0136$ here with $\mu = 0.9$. The adaptive
# methods get rates picked by hand to work here; none of this is a tuned comparison, which comes on the
# digits below.

# %%
race = {
    # GD's best constant step
    "GD": lambda p: torch.optim.SGD(p, lr=2 / (KAPPA + 1)),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.015, momentum=0.9),
    "Nesterov": lambda p: torch.optim.SGD(
        p, lr=0.01, momentum=0.9, nesterov=True
    ),
    "AdaGrad": lambda p: torch.optim.Adagrad(p, lr=0.5),
    "RMSProp": lambda p: torch.optim.RMSprop(p, lr=0.03),
    "Adam": lambda p: torch.optim.Adam(p, lr=0.1),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.01),
}
RACE_SETTINGS = {
    "GD": "η* = 0.0198",
    "momentum": "η = 0.015, μ = 0.9",
    "Nesterov": "η = 0.01, μ = 0.9",
    "AdaGrad": "η = 0.5",
    "RMSProp": "η = 0.03",
    "Adam": "η = 0.1",
    "AdamW": "η = 0.1, λ = 0.01",
}
# one colour per optimizer family for the rest of the chapter; variants are dashed
OPT_STYLE = {"GD": (viz.color(7), "-"), "SGD": (viz.color(0), "-"), "momentum": (viz.color(1), "-"),
             "Nesterov": (viz.color(1), "--"), "AdaGrad": (viz.color(2), "-"), "RMSProp": (viz.color(4), "-"),
             "Adam": (viz.color(3), "-"), "AdamW": (viz.color(3), "--")}  # fmt: skip


def run_on_valley(make_opt, steps=200, kappa=KAPPA, start=START):
    """Optimize the valley with a torch.optim optimizer; returns the path [steps + 1, 2] and f values."""
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = make_opt([theta])
    path = [theta.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        valley(theta, kappa).backward()
        opt.step()
        path.append(theta.detach().clone())
    path = torch.stack(path).numpy()
    return path, valley(path, kappa)


race_results = {name: run_on_valley(make) for name, make in race.items()}
for name, (_, fs) in race_results.items():
    print(f"{name:9s} f after 200 steps: {fs[-1]:.1e}")

# %% tags=["hide-input"]
XS, YS = np.meshgrid(np.linspace(-6, 2, 120), np.linspace(-1.6, 1.6, 120))
LEVELS = np.geomspace(0.02, 300, 12)


def draw_contours(ax, kappa=KAPPA):
    ax.contour(
        XS,
        YS,
        valley(np.stack([XS, YS], -1), kappa),
        levels=LEVELS,
        colors=viz.color("reference"),
        linewidths=0.6,
        alpha=0.5,
    )
    ax.plot(0, 0, "*", color="black", ms=9)
    ax.set(
        xlim=(-6, 2),
        ylim=(-1.6, 1.6),
        xticks=[-6, -4, -2, 0, 2],
        yticks=[-1, 0, 1],
    )
    ax.grid(False)


fig, axes = plt.subplots(2, 4, figsize=(13, 5.6))
for ax, (name, (path, fs)) in zip(
    axes.flat, race_results.items(), strict=False
):
    c, ls = OPT_STYLE[name]
    draw_contours(ax)
    ax.plot(path[:, 0], path[:, 1], "-o", ms=1.5, lw=0.8, color=c)
    ax.set_title(
        f"{name} ({RACE_SETTINGS[name]}): f = {fs[-1]:.0e}", fontsize=9
    )
    axes.flat[-1].semilogy(fs, color=c, ls=ls, label=name)
axes.flat[-1].set(
    xlabel="step", ylabel="f", title="f over 200 steps", ylim=(1e-12, 1e3)
)
axes.flat[-1].legend(fontsize=7, ncols=2)
fig.suptitle(
    "Optimizers on f = (x² + 100 y²)/2 from (−5, 1), 200 steps (axes not to scale)"
)
plt.show()

# %%
f_final = {name: fs[-1] for name, (_, fs) in race_results.items()}
for name in ("momentum", "Adam"):
    assert f_final[name] < 1e-3 * f_final["GD"], (
        f"{name} ended at f = {f_final[name]:.1e}, expected < 1e-3 x GD's {f_final['GD']:.1e}"
    )
print(
    f"GD {f_final['GD']:.1e}, momentum {f_final['momentum']:.1e}, Adam {f_final['Adam']:.1e}"
)

# %% [markdown]
# GD, even at its best constant step, crawls along the valley floor. Momentum overshoots along $y$ at first (its $\eta L = 1.5$ is big),
# but its velocity along $x$ builds up to ten times GD's step and it reaches $10^{-8}$. Adam steps by
# about $\eta$ in each coordinate whatever the gradient's size, so it moves diagonally at first and
# treats the flat and the steep axis alike. That is the ideal case for a per-coordinate method: the
# valley's axes *are* the coordinates. Rotate the valley by 45° and Adam ends up behind even GD, while
# momentum, which is rotation-invariant, does not change at all (exercise 3). AdaGrad and RMSProp also
# rescale each coordinate and head down the valley without zigzagging; without momentum they are
# slower than Adam, and AdaGrad's steps keep shrinking as its sum of squares grows.
#
# How the speed depends on the conditioning: the best constant step gives GD the rate
# $\frac{\kappa-1}{\kappa+1}$, so about $\kappa$ steps per decade. Heavy-ball momentum with its best
# parameters, $\eta = 4/(\sqrt L + \sqrt{\lambda_{\min}})^2$ and
# $\mu = (\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1})^2$, has the rate
# $\frac{\sqrt\kappa-1}{\sqrt\kappa+1}$: about $\sqrt\kappa$ steps per decade. We count the steps
# until $f$ has fallen by $10^{6}$, for $\kappa$ from 1 to $10^4$ (GD in closed form, heavy ball by
# simulation).


# %%
def gd_steps_to_converge(kappas, tol=1e-6, max_steps=50_000):
    """GD steps with eta* = 2/(L + mu) until f < tol f0, from (1, 1), in closed form per coordinate."""
    lam = np.stack([np.ones_like(kappas), kappas], 1)[:, None, :]  # [K, 1, 2]
    eta = (2 / (kappas + 1))[:, None, None]
    t = np.arange(1, max_steps + 1)[None, :, None]
    # [K, T]: f after each step
    f = 0.5 * (lam * (1 - eta * lam) ** (2 * t)).sum(-1)
    # f decreases monotonically
    return 1 + (f >= tol * 0.5 * lam.sum(-1)).sum(1)


def hb_steps_to_converge(lrs, moms, kappas, tol=1e-6, max_steps=2000):
    """Heavy-ball steps (PyTorch's form) until f < tol f0, from (1, 1), one problem per kappa."""
    lam = np.stack([np.ones_like(kappas), kappas], 1)
    theta, b = np.ones_like(lam), np.zeros_like(lam)
    f0, done = 0.5 * lam.sum(1), np.zeros(len(kappas))
    for t in range(1, max_steps + 1):
        b = moms[:, None] * b + lam * theta  # b starts at 0, so b_1 = g_1
        theta = theta - lrs[:, None] * b
        f = 0.5 * (lam * theta**2).sum(1)
        done[(done == 0) & (f < tol * f0)] = (
            t  # f oscillates: record the first time it is below
        )
        if done.all():
            break
    return done


kappas = np.geomspace(1, 1e4, 9)
root = np.sqrt(kappas)
gd_steps = gd_steps_to_converge(kappas)
hb_steps = hb_steps_to_converge(
    4 / (root + 1) ** 2, ((root - 1) / (root + 1)) ** 2, kappas
)
print(
    f"kappa = 1e4: GD {gd_steps[-1]:.0f} steps, heavy ball {hb_steps[-1]:.0f} steps"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.loglog(
    kappas, gd_steps, "o-", color=viz.color(0), label="GD, η = 2/(L + λmin)"
)
ax.loglog(
    kappas, hb_steps, "s-", color=viz.color(1), label="heavy ball, best η and μ"
)
ax.loglog(
    kappas,
    np.log(1e6) / 2 * np.maximum(kappas / 2, 1),
    ":",
    color=viz.color(0),
    label="∝ κ",
)
ax.loglog(
    kappas,
    np.log(1e6) / 2 * np.maximum(root / 2, 1),
    ":",
    color=viz.color(1),
    label="∝ √κ",
)
ax.set(
    xlabel="condition number κ = L/λmin",
    ylabel="steps until f < 1e-6 f0",
    title="GD needs ~κ steps, momentum ~√κ",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At $\kappa = 10^4$, momentum needs about 50 times fewer steps than GD, and the ratio grows like
# $\sqrt\kappa$. Nesterov's method has the
# same $\sqrt\kappa$ rate on quadratics, and (unlike heavy ball) keeps an accelerated guarantee on
# all smooth convex functions. In deep learning neither guarantee applies literally, but the picture
# of narrow valleys, where momentum accumulates along the floor, is a useful one.
#
# ### Explore: step size and momentum
#
# The static figure shows four settings on the valley: GD with a safe step, GD with a step just over
# the limit $2/L = 0.02$, heavy-ball momentum at the safe step, and Nesterov at the same step, which is
# beyond *its* limit of $\eta L < 1.36$. The widget below it simulates any setting (PyTorch's update,
# in NumPy, checked against `torch.optim.SGD` first).


# %%
def heavy_ball(lr, momentum, kappa=KAPPA, nesterov=False, steps=200):
    """PyTorch's SGD with momentum on the valley, in NumPy: path [steps + 1, 2] and f values."""
    lam, theta, b = np.array([1.0, kappa]), np.array(START), np.zeros(2)
    path = [theta]
    for _ in range(steps):
        g = lam * theta
        b = momentum * b + g  # b starts at 0, so b_1 = g_1 as in PyTorch
        theta = np.clip(
            theta - lr * (g + momentum * b if nesterov else b), -1e9, 1e9
        )
        path.append(theta)
    path = np.array(path)
    return path, valley(path, kappa)


for lr, mom, nest in (
    (0.015, 0.0, False),
    (0.015, 0.9, False),
    (0.01, 0.9, True),
):

    def make(p, lr=lr, mom=mom, nest=nest):
        return torch.optim.SGD(p, lr=lr, momentum=mom, nesterov=nest)

    np.testing.assert_allclose(
        heavy_ball(lr, mom, nesterov=nest)[0],
        run_on_valley(make)[0],
        rtol=1e-9,
        atol=1e-12,
    )


# %% tags=["hide-input"]
def draw_run(ax_path, ax_f, lr, momentum, kappa=KAPPA, nesterov=False, color=0):
    path, fs = heavy_ball(lr, momentum, kappa, nesterov)
    draw_contours(ax_path, kappa)
    outside = np.flatnonzero(
        (np.abs(path[:, 1]) > 1.6) | (path[:, 0] < -6) | (path[:, 0] > 2)
    )
    # stop once the path leaves the plot
    shown = path if len(outside) == 0 else path[: outside[0] + 1]
    ax_path.plot(
        shown[:, 0], shown[:, 1], "-o", ms=1.5, lw=0.8, color=viz.color(color)
    )
    if len(outside):
        ax_path.text(-5.8, -1.45, f"diverges: leaves the plot at step {outside[0]}", fontsize=8,
                     color=viz.color(3))  # fmt: skip
    name = "GD" if momentum == 0 else ("Nesterov" if nesterov else "heavy ball")
    line1 = f"{name}: η = {lr:.4g}, μ = {momentum:.2g}"
    ax_path.set_title(
        f"{line1}\nηL = {lr * kappa:.3g}; f after 200 steps = {fs[-1]:.1e}",
        fontsize=9,
    )
    ax_f.semilogy(np.minimum(fs, 1e15), color=viz.color(color))
    ax_f.set(
        xlabel="step",
        ylim=(1e-12, 1e15),
        yticks=[1e-10, 1e-5, 1, 1e5, 1e10, 1e15],
    )
    ax_f.minorticks_off()


SETTINGS = [
    (0.015, 0.0, False),
    (0.0205, 0.0, False),
    (0.015, 0.9, False),
    (0.015, 0.9, True),
]
fig, axes = plt.subplots(2, 4, figsize=(13, 5.4), height_ratios=[1.2, 1])
for i, (lr, mom, nest) in enumerate(SETTINGS):
    draw_run(axes[0, i], axes[1, i], lr, mom, nesterov=nest, color=i)
axes[1, 0].set_ylabel("f")
fig.suptitle(
    "GD (μ = 0) and momentum on the valley, κ = 100: without momentum, η must stay < 2/L = 0.02"
)
plt.show()


# %% [markdown]
# Things to try: raise $\eta$ with $\mu = 0$ until it diverges (at $\eta L = 2$); with $\mu = 0.9$ the
# heavy ball survives up to $\eta L = 3.8$, Nesterov only to $1.36$; push $\mu$ to 0.99 and watch the
# slow, wide spiral of too much momentum; set $\kappa = 1$ (round bowl) where one GD step with
# $\eta = 1$ lands on the minimum, and $\kappa = 1000$ where every step size is a bad compromise.


# %%
def show_valley(lr=0.015, momentum=0.9, kappa=100, nesterov=False):
    fig, (ax_path, ax_f) = plt.subplots(
        1, 2, figsize=(11, 3.6), width_ratios=[1.4, 1], layout="none"
    )
    fig.subplots_adjust(
        left=0.06, right=0.98, bottom=0.15, top=0.85, wspace=0.2
    )
    draw_run(ax_path, ax_f, lr, momentum, float(kappa), nesterov)
    limit = (
        2 * (1 + momentum) / (1 + 2 * momentum)
        if nesterov
        else 2 * (1 + momentum)
    )
    ax_f.set_title(
        f"stable while ηL < {limit:.3g} (here ηL = {lr * kappa:.3g})",
        fontsize=9,
    )
    plt.show()


_ = widgets.interact(
    show_valley,
    lr=widgets.FloatLogSlider(
        value=0.015,
        base=10,
        min=-3,
        max=0,
        step=0.025,
        description="η",
        readout_format=".4f",
        continuous_update=False,
    ),
    momentum=widgets.FloatSlider(
        value=0.9,
        min=0.0,
        max=0.99,
        step=0.01,
        description="μ",
        continuous_update=False,
    ),
    kappa=widgets.Dropdown(
        options=[1, 10, 100, 1000], value=100, description="κ"
    ),
    nesterov=widgets.Checkbox(value=False, description="Nesterov"),
)

# %% [markdown]
# ## Saddle points
#
# A point where the gradient vanishes is a minimum only if the loss curves upwards in every direction,
# i.e. if the Hessian there has no negative eigenvalue. Where some eigenvalues are negative, the point
# is a **saddle**: uphill in some directions, downhill in others. Take
#
# $$
# f(x, y) = x^2 - y^2 + \tfrac12 y^4, \qquad
# \nabla f = \begin{pmatrix} 2x \\ -2y + 2y^3 \end{pmatrix}, \qquad
# H = \begin{pmatrix} 2 & 0 \\ 0 & -2 + 6y^2 \end{pmatrix}.
# $$
#
# The gradient vanishes at the origin, where $H$ has the eigenvalues $2$ and $-2$ (a saddle, $f = 0$),
# and at $(0, \pm 1)$, where they are $2$ and $4$ (the two minima, $f = -\tfrac12$). For a network with
# millions of parameters, a critical point is a minimum only if *all* eigenvalues are non-negative;
# Dauphin et al. (2014) argue that at high loss most critical points are saddles, and that the long
# plateaus of training curves are often the slow escape from one.
#
# Near the saddle GD multiplies $y$ by $1 + 2\eta$ per step: it does escape, geometrically, but from
# a starting offset $y_0$ that takes about $\ln(0.5/y_0)/\ln(1 + 2\eta)$ steps to reach $|y| = 0.5$, and
# from $y_0 = 0$ exactly it never escapes (the $y$-gradient stays 0). Gradient noise, which SGD has for
# free, pushes the iterate off the ridge at every step, so the growth starts from the size of the noise
# rather than from a tiny offset (perturbed GD escapes saddles quickly: Ge et al., 2015; Jin et al.,
# 2017). We run GD with $\eta = 0.05$ from $(1.5, 0)$ and from $(1.5, 10^{-8})$, and noisy
# GD (gradient plus Gaussian noise of standard deviation 0.1 per coordinate) from $(1.5, 0)$ with 50
# seeds.


# %%
def saddle(p):
    """f(x, y) = x² − y² + y⁴/2 for p = [..., 2]: a saddle at the origin, minima (0, ±1), f = −1/2."""
    return p[..., 0] ** 2 - p[..., 1] ** 2 + p[..., 1] ** 4 / 2


def saddle_grad(p):
    return np.stack([2 * p[..., 0], -2 * p[..., 1] + 2 * p[..., 1] ** 3], -1)


for point in ((0.0, 0.0), (0.0, 1.0)):
    p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    hess = torch.autograd.functional.hessian(saddle, p)
    torch.testing.assert_close(
        hess,
        torch.diag(
            torch.tensor([2.0, -2.0 + 6 * point[1] ** 2], dtype=torch.float64)
        ),
    )
    (g_p,) = torch.autograd.grad(saddle(p), p)
    torch.testing.assert_close(g_p.numpy(), saddle_grad(np.array(point)))
    print(
        f"at {point}: gradient {g_p.tolist()}, Hessian eigenvalues {torch.linalg.eigvalsh(hess).tolist()}"
    )


def descend_saddle(starts, lr=0.05, noise=0.0, steps=300, seed=0):
    """(Noisy) GD on the saddle for a batch of starts [R, 2]; returns the paths [steps + 1, R, 2]."""
    rng = np.random.default_rng(seed)
    p, path = np.array(starts, dtype=np.float64), []
    path.append(p)
    for _ in range(steps):
        p = p - lr * (saddle_grad(p) + noise * rng.standard_normal(p.shape))
        path.append(p)
    return np.stack(path)


def escape_step(path):
    """First step at which |y| > 0.5, per run (steps + 1 where it never happens)."""
    out = np.abs(path[..., 1]) > 0.5
    return np.where(out.any(0), out.argmax(0), len(path))


gd_exact = descend_saddle([[1.5, 0.0]])
gd_tiny = descend_saddle([[1.5, 1e-8]])
noisy = descend_saddle(np.tile([1.5, 0.0], (50, 1)), noise=0.1)
esc_tiny, esc_noisy = escape_step(gd_tiny)[0], escape_step(noisy)
print(
    f"GD from y = 0:    |y| stays {np.abs(gd_exact[..., 1]).max()}, f after 300 steps = {saddle(gd_exact[-1, 0]):.1e}"
)
print(
    f"GD from y = 1e-8: escapes at step {esc_tiny} (theory ln(0.5e8)/ln(1.1) = {np.log(0.5e8) / np.log(1.1):.0f})"
)
print(
    f"noisy GD:         escapes at step {np.median(esc_noisy):.0f} (median of 50 seeds; max {esc_noisy.max()})"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
XS_S, YS_S = np.meshgrid(
    np.linspace(-1.6, 1.6, 120), np.linspace(-1.5, 1.5, 120)
)
axes[0].contour(XS_S, YS_S, saddle(np.stack([XS_S, YS_S], -1)), levels=np.linspace(-0.5, 3, 15),
                colors=viz.color("reference"), linewidths=0.6, alpha=0.6)  # fmt: skip
runs_s = {
    "GD from y = 0": gd_exact[:, 0],
    "GD from y = 1e-8": gd_tiny[:, 0],
    "noisy GD (seed 0)": noisy[:, 0],
}
for i, (name, path) in enumerate(runs_s.items()):
    axes[0].plot(
        path[:, 0],
        path[:, 1],
        "-o",
        ms=1.5,
        lw=0.8,
        color=viz.color(i),
        label=name,
    )
    axes[1].plot(saddle(path), color=viz.color(i), label=name)
axes[0].plot([0, 0, 0], [0, 1, -1], "*", color="black", ms=9)
axes[0].set(
    xlabel="x",
    ylabel="y",
    title="f = x² − y² + y⁴/2: saddle at 0, minima at (0, ±1)",
)
axes[0].legend(fontsize=8, loc="lower left")
axes[1].axhline(
    -0.5, color=viz.color("reference"), ls=":", lw=1, label="minimum, f = −1/2"
)
axes[1].set(
    xlabel="step", ylabel="f", title="A plateau at the saddle's level, f = 0"
)
axes[1].legend(fontsize=8)
plt.show()

# %%
assert np.abs(gd_exact[..., 1]).max() == 0.0, (
    "GD started on y = 0 should never leave it"
)
assert abs(saddle(gd_exact[-1, 0])) < 1e-6, (
    "GD from y = 0 should converge to the saddle (f = 0)"
)
assert 150 < esc_tiny < 220, (
    f"GD from y = 1e-8 escaped at step {esc_tiny}, expected ~186"
)
assert (esc_noisy <= 300).all(), (
    f"{(esc_noisy > 300).sum()} noisy runs never escaped"
)
assert np.median(esc_noisy) < esc_tiny / 2, (
    f"noisy median {np.median(esc_noisy)} vs GD's {esc_tiny}"
)

# %% [markdown]
# GD started exactly on the ridge $y = 0$ converges to the saddle and stays there: its loss stops at
# $f = 0$ although $-\tfrac12$ is available. Started $10^{-8}$ off the ridge, it first slides down to
# the saddle along $x$, sits on the plateau, and leaves only after about 190 steps, when the offset has
# grown by $1.1^{t}$. The noisy runs leave several times sooner. In a real network exact saddles are
# rarely hit, but the same mechanism makes nearly flat regions slow for GD, and it is one of the
# reasons why the noise of SGD is not only a cost.
#
# ## Training a digits classifier: a fair comparison
#
# Valleys in two dimensions are a caricature. The real test is a network: a 64-64-10 MLP on the digits
# (1,078 training images), 10 epochs with mini-batches of 32 (34 steps per epoch), with the same batch
# order for every optimizer. GD uses the whole training set per step, so it makes one step per epoch:
# 10 steps for the computation that buys SGD 340. One training run is a noisy measurement (another
# initialization moves the test accuracy by a few images, and the time to reach a given loss by an
# epoch or two), so every setting is trained from three initializations, the same three for every
# optimizer, and we compare means.
#
# Comparing optimizers at one shared learning rate mostly measures how well that rate suits each of
# them: momentum's steps are about $1/(1 - \mu) = 10$ times longer than SGD's at the same $\eta$, and
# Adam moves every coordinate by about $\eta$ whatever the size of its gradient. So each optimizer gets
# its own rate, chosen from the log grid $10^{-3.5}, 10^{-3}, \dots, 10^{0.5}$ (9 rates) by the
# mean validation accuracy after 10 epochs; the test split only reports the chosen runs.
#
# Training 8 × 9 × 3 = 216 networks one after the other would dominate the chapter's runtime. The 27
# runs of one optimizer are independent, so we train them as one module: `MLPGrid` holds 27 copies of
# the network, computes their outputs with one batched product, and puts the copies of each learning
# rate in a parameter group with that rate. The loss is the sum of the copies' losses, so each copy
# receives exactly its own gradient, and all these optimizers keep their state per parameter: one run
# of the grid is 27 separate runs that share the batch order. A copy whose loss is no longer finite
# drops out of the sum, so that one diverging rate does not stop the others. We check the equivalence
# once, in float64, against separate runs.


# %%
class MLPGrid(nn.Module):
    """Independent copies of two-layer ReLU MLPs, one per (rate, initialization), run in one batched pass.

    Copy k * len(inits) + s starts from inits[s] and will be trained at rate k; the output is
    Tensor[K, B, C] with K = n_rates * len(inits) copies.
    """

    def __init__(self, inits, n_rates):
        super().__init__()
        self.n_inits = len(inits)
        self.members = nn.ModuleList(
            copy.deepcopy(init) for _ in range(n_rates) for init in inits
        )

    def stacked(self, layer, name):
        return torch.stack([getattr(m[layer], name) for m in self.members])

    def forward(self, x):
        h = torch.relu(
            torch.einsum("bi,khi->kbh", x, self.stacked(0, "weight"))
            + self.stacked(0, "bias")[:, None]
        )
        return (
            torch.einsum("kbh,koh->kbo", h, self.stacked(2, "weight"))
            + self.stacked(2, "bias")[:, None]
        )


def member_losses(out, y):
    """The cross-entropy of each copy: Tensor[K]."""
    k = out.shape[0]
    return (
        F.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none")
        .view(k, -1)
        .mean(1)
    )


def grid_loss(out, y):
    losses = member_losses(out, y)
    return torch.where(
        torch.isfinite(losses), losses, 0.0
    ).sum()  # a diverged copy drops out


def grid_optimizer(make_opt, model, lrs):
    """One parameter group per learning rate, holding the copies trained at that rate."""
    s = model.n_inits
    groups = [{"params": [p for m in model.members[k * s : (k + 1) * s] for p in m.parameters()], "lr": float(lr)}
              for k, lr in enumerate(lrs)]  # fmt: skip
    return make_opt(groups)


def mlp(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(
        dtype
    )


# the check: Adam at 0.01 and 0.001, two initializations each, against four separate runs (float64)
check_inits = [mlp(0, torch.float64), mlp(1, torch.float64)]
train64 = torch.utils.data.TensorDataset(x_train.double(), y_train)
small_grid = MLPGrid(check_inits, 2)


def loader64():
    return DataLoader(
        train64,
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )


train.fit(small_grid, loader64(), epochs=1, optimizer=grid_optimizer(torch.optim.Adam, small_grid, [0.01, 0.001]),
          loss_fn=grid_loss, progress=False)  # fmt: skip
for index, member in enumerate(small_grid.members):
    alone = copy.deepcopy(check_inits[index % 2])
    lr = (0.01, 0.001)[index // 2]
    train.fit(alone, loader64(), epochs=1, optimizer=torch.optim.Adam(alone.parameters(), lr=lr),
              loss_fn=F.cross_entropy, progress=False)  # fmt: skip
    for p_grid, p_alone in zip(
        member.parameters(), alone.parameters(), strict=True
    ):
        torch.testing.assert_close(p_grid, p_alone)  # float64 defaults
print(
    "each copy of the grid == a separate run (Adam, 2 rates x 2 initializations, 34 steps, float64)"
)

# %% tags=["hide-input"]
n_params = sum(p.numel() for p in mlp(0).parameters())
fig, ax = plt.subplots(figsize=(11, 1.5))
viz.chain_diagram(
    [("digit\n[B, 64] pixels", "io"), ("linear 64 → 64\n+ ReLU [B, 64]", "linear"),
     ("linear 64 → 10\nscores [B, 10]", "linear"), ("cross-entropy\nwith the labels", "head")],
    ax=ax, spacing=2.5, block_size=(2.0, 0.7),
    title=f"The digits MLP ({n_params:,} parameters), 27 copies per optimizer in MLPGrid (9 rates × 3 initializations)",
)  # fmt: skip
plt.show()

# %%
LRS = 10.0 ** np.arange(-3.5, 0.51, 0.5)  # 3.2e-4 ... 3.2
contenders = {
    "GD": (torch.optim.SGD, len(splits.train)),
    "SGD": (torch.optim.SGD, 32),
    "momentum": (lambda p: torch.optim.SGD(p, momentum=0.9), 32),
    "Nesterov": (lambda p: torch.optim.SGD(p, momentum=0.9, nesterov=True), 32),
    "AdaGrad": (torch.optim.Adagrad, 32),
    "RMSProp": (torch.optim.RMSprop, 32),
    "Adam": (torch.optim.Adam, 32),
    "AdamW": (lambda p: torch.optim.AdamW(p, weight_decay=0.01), 32),
}
INITS = [
    mlp(seed) for seed in range(3)
]  # three initializations, shared by every optimizer
initial_mlp = INITS[0]
x_val, y_val = (t.to(device) for t in splits.tensors("val"))
x_test, y_test = (t.to(device) for t in splits.tensors("test"))


def accuracy_per_copy(model, x, y):
    """Accuracy of every copy, as an array [rates, initializations]."""
    with torch.no_grad():
        return (
            (model(x).argmax(-1) == y)
            .float()
            .mean(1)
            .cpu()
            .numpy()
            .reshape(-1, model.n_inits)
        )


grid = {}
for name, (make_opt, batch_size) in contenders.items():
    model = MLPGrid(INITS, len(LRS)).to(device)
    loader = DataLoader(
        splits.train,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    # full training loss twice per epoch (GD: every step)
    every = 1 if len(loader) == 1 else len(loader) // 2
    log, counter = [], itertools.count(1)

    def log_train_loss(model=model, log=log, every=every, counter=counter):
        if next(counter) % every == 0:
            with torch.no_grad():
                log.append(member_losses(model(xt), yt).cpu())

    # (the progress bar shows the sum of the 27 copies' losses)
    train.fit(model, loader, epochs=10, optimizer=grid_optimizer(make_opt, model, LRS), loss_fn=grid_loss,
              after_step=log_train_loss, desc=f"{name}, {len(LRS)} rates x {len(INITS)} inits")  # fmt: skip
    grid[name] = {
        "model": model,
        "val": accuracy_per_copy(model, x_val, y_val),  # [rates, inits]
        "test": accuracy_per_copy(model, x_test, y_test),
        "train_loss": torch.stack(log)
        .numpy()
        .reshape(len(log), len(LRS), len(INITS)),  # [evals, rates, inits]
        "epoch": np.arange(1, len(log) + 1) * every / len(loader),
    }

# %%
TARGET_LOSS = 0.05


def epochs_to(r, k, target=TARGET_LOSS):
    """Epochs until the full training loss at rate k first falls below target, mean over the inits."""
    times = []
    for s in range(r["train_loss"].shape[2]):
        below = np.flatnonzero(r["train_loss"][:, k, s] < target)
        # inf: never
        times.append(r["epoch"][below[0]] if len(below) else np.inf)
    return float(np.mean(times))


tuned = {
    name: int(np.argmax(r["val"].mean(1))) for name, r in grid.items()
}  # ties: the smaller rate
test_acc, fastest = {}, {}
print(f"means over {len(INITS)} initializations")
print(f"{'':9s} {'tuned lr':>8s} {'val':>6s} {'test (± std)':>14s} {'good range (val >= best - 0.02)':>32s}   "
      f"epochs to training loss < {TARGET_LOSS}: at the tuned lr | at the fastest lr")  # fmt: skip
for name, r in grid.items():
    k, val_mean = tuned[name], r["val"].mean(1)
    good = LRS[val_mean >= val_mean[k] - 0.02]
    test_acc[name] = r["test"][k].mean()
    times = [epochs_to(r, j) for j in range(len(LRS))]
    fastest[name] = min(times)
    at_best = (
        f"{fastest[name]:.1f} (lr {LRS[int(np.argmin(times))]:.2g})"
        if np.isfinite(fastest[name])
        else "never"
    )
    print(f"{name:9s} {LRS[k]:8.2g} {val_mean[k]:6.3f} {test_acc[name]:8.3f} ± {r['test'][k].std():.3f} "
          f"{good.min():16.2g} to {good.max():<12.2g}   {epochs_to(r, k):>38.1f} | {at_best}")  # fmt: skip

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
for name, r in grid.items():
    c, ls = OPT_STYLE[name]
    ax = axes[0] if name in ("GD", "SGD", "momentum", "Nesterov") else axes[1]
    ax.semilogx(
        LRS, r["val"].mean(1), ls=ls, color=c, marker="o", ms=3, label=name
    )
    ax.fill_between(
        LRS, r["val"].min(1), r["val"].max(1), color=c, alpha=0.15, lw=0
    )
    ax.plot(LRS[tuned[name]], r["val"][tuned[name]].mean(), "*", color=c, ms=12)
    axes[2].semilogy(r["epoch"], r["train_loss"][:, tuned[name]].mean(1), ls=ls, color=c,
                     label=f"{name} ({LRS[tuned[name]]:.2g})")  # fmt: skip
for ax, title in zip(axes[:2], ("SGD family", "adaptive methods"), strict=True):
    ax.set(xlabel="learning rate", ylabel="validation accuracy (mean, min-max)", ylim=(0, 1),
           title=f"Learning-rate sensitivity: {title}")  # fmt: skip
    ax.legend(fontsize=8, loc="lower center")
axes[2].axhline(TARGET_LOSS, color=viz.color("reference"), ls=":", lw=1)
axes[2].set(
    xlabel="epoch",
    ylabel="full training loss (mean of 3)",
    title="Training loss at each tuned rate",
)
axes[2].legend(fontsize=7, ncols=2)
fig.suptitle(
    "64-64-10 MLP on digits, 10 epochs, each optimizer at 9 learning rates x 3 initializations (★: chosen on validation)"
)
plt.show()

# %%
minibatch = [name for name in grid if name != "GD"]
for name in minibatch:
    assert test_acc[name] > 0.95, (
        f"{name} at its tuned lr: mean test accuracy {test_acc[name]:.3f}, expected > 0.95"
    )
spread = max(test_acc[n] for n in minibatch) - min(
    test_acc[n] for n in minibatch
)
assert spread < 0.03, (
    f"tuned mini-batch optimizers differ by {spread:.3f} in test accuracy, expected < 0.03"
)
assert test_acc["GD"] < test_acc["SGD"] - 0.04, (
    f"GD {test_acc['GD']:.3f} vs SGD {test_acc['SGD']:.3f} (10 vs 340 steps)"
)
for name in ("momentum", "Adam"):
    assert fastest[name] < 0.9 * fastest["SGD"], (
        f"{name} reached loss {TARGET_LOSS} after {fastest[name]:.1f} epochs at its fastest rate, "
        f"SGD after {fastest['SGD']:.1f}: expected sooner (measured 1.3x to 2.3x sooner)"
    )
print(f"tuned mini-batch optimizers: test accuracy {min(test_acc[n] for n in minibatch):.3f} to "
      f"{max(test_acc[n] for n in minibatch):.3f}; GD {test_acc['GD']:.3f}")  # fmt: skip

# %% [markdown]
# - **Tuned, the mini-batch optimizers tie.** Each at its own rate, all seven mini-batch optimizers
#   end between about 0.97 and 0.98 mean test accuracy. With 360 test images one error is 0.003, and
#   the standard error of an accuracy near 0.975 is about 0.008, so their order is noise that another
#   split (or another set of initializations) reshuffles. Plain SGD is as good as any once its rate
#   is right: 0.3 here, thirty times the 0.01 that is often used for every member of such a race.
# - **GD vs SGD.** For the same computation (10 passes over the data) GD makes 10 steps and SGD 340.
#   Even at its best rate GD stays far behind, at about 0.89: the one ranking here that survives
#   tuning by a wide margin.
# - **Speed.** At their fastest rates, momentum, Nesterov, Adam and AdamW reach a training loss of
#   0.05 after 3 to 4 epochs, plain SGD after about 7 (the table's last column, means over the three
#   initializations). With another three initializations and batch order (seeds 3 to 5 in `INITS`, 1
#   for the loader) we measured about 4 epochs against 5.5. The speed-up of the optimization is real
#   but modest, 1.3 to 2.3 times, and it does not show in the final test accuracy of this easy problem.
# - **Sensitivity.** Every mini-batch optimizer has a usable range (mean validation accuracy within
#   0.02 of its best) one to one and a half decades wide, and falls off steeply on both sides: too
#   small and 10 epochs are not enough, too large and the run diverges to chance. What differs is
#   where the range sits. Momentum's is about ten times lower than plain SGD's, since its steps are up
#   to ten times longer; Adam and RMSProp move each weight by about $\eta$ per step and work around
#   $10^{-3}$ to $10^{-2}$; AdaGrad needs larger rates because its steps shrink. A race at one shared
#   rate ranks the optimizers by how close that rate happens to be to each one's range, not by how
#   good they are.
# - **AdamW and Adam** are indistinguishable here: at $\eta\lambda = 10^{-4}$ per step, 340 steps of
#   decay shrink the weights by about 3 %. Weight decay matters for long runs and for generalization
#   ([chapter 05](../05_regularization/05_regularization.ipynb)).
#
# Which optimizer generalizes best on large vision problems, with schedules and long training, is
# still debated (SGD with momentum is the classic choice for ResNets, AdamW for vision transformers).
# What this experiment teaches is the method: tune each contender, select on validation, report on
# test, and trust only the differences that are larger than the test set's noise.
#
# %% [markdown]
# ## Finding a learning rate with a range test
#
# The grid cost 9 training runs per optimizer. Smith (2017) proposed a far cheaper probe, the
# **learning-rate range test**: a single short run in which the rate grows at every step, from tiny to
# huge, while the loss is recorded. At tiny rates the loss barely moves, over a middle range it falls
# faster and faster, and beyond some rate training becomes unstable and the loss shoots up. Smith grew
# the rate linearly over a few epochs; the exponential version, $\eta_t = \eta_0 (\eta_1/\eta_0)^{t/(n-1)}$,
# covers many decades evenly in a few hundred steps (fastai's `lr_find` popularized it). Two common
# readings of the smoothed curve: the rate where the loss **falls fastest** (most negative slope
# against $\log\eta$), and **a tenth of the rate at the lowest loss** (at the lowest point the rate is
# already close to unstable). `optim.lr_range_test` implements it and restores the model and optimizer
# afterwards. We run it for SGD, momentum and Adam, 200 steps from $10^{-5}$ to 10, from the first of
# the grid's initializations, and compare its readings with the rates chosen on validation.

# %%
range_tests = {}
for name in ("SGD", "momentum", "Adam"):
    model = copy.deepcopy(initial_mlp).to(device)
    loader = DataLoader(
        splits.train,
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    make_opt, _ = contenders[name]
    range_tests[name] = optim.lr_range_test(model, loader, make_opt(model.parameters()), F.cross_entropy,
                                            start_lr=1e-5, end_lr=10.0, num_steps=200)  # fmt: skip
print(
    f"{'':9s} {'tuned on val':>12s} {'steepest':>9s} {'min/10':>8s} {'steps':>6s}"
)
for name, rt in range_tests.items():
    print(f"{name:9s} {LRS[tuned[name]]:12.3g} {rt.suggestion('steepest'):9.3g} {rt.suggestion('min/10'):8.3g} "
          f"{len(rt.lrs):6d}")  # fmt: skip

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7.5, 3.8))
for name, rt in range_tests.items():
    c, _ = OPT_STYLE[name]
    ax.semilogx(rt.lrs, rt.smoothed, color=c, label=name)
    ax.axvline(LRS[tuned[name]], color=c, ls=":", lw=1.2)
    for rule, marker in (("steepest", "v"), ("min/10", "o")):
        lr_s = rt.suggestion(rule)
        ax.plot(
            lr_s,
            np.interp(np.log(lr_s), np.log(rt.lrs), rt.smoothed),
            marker,
            color=c,
            ms=7,
            mfc="white",
        )
ax.set(xlabel="learning rate (grows every step)", ylabel="smoothed mini-batch loss", ylim=(0, 4),
       title="Range test, 200 steps: ▽ steepest descent, ○ min/10, dotted: tuned on validation")  # fmt: skip
ax.legend(fontsize=8)
plt.show()

# %%
for name, rt in range_tests.items():
    for rule in ("steepest", "min/10"):
        decades = abs(np.log10(rt.suggestion(rule) / LRS[tuned[name]]))
        assert decades < 1.0, (
            f"{name}: range test ({rule}) is {decades:.2f} decades from the tuned rate"
        )

# %% [markdown]
# For all three optimizers both readings land within a decade of the rate chosen on validation, most
# of them within a factor of about 3 (one step of the grid), for the price of 200 steps instead of
# 9 × 340 (per initialization). The curves also show the ordering of the sensitivity plots: Adam's loss starts to fall, and
# later blows up, at rates one to two decades below plain SGD's, and momentum sits in between. The
# test is a quick way to find the right decade, not a tuned rate: it reads the training loss of the
# first few hundred steps, while the rate that generalizes best after a full run is usually a little
# different, and the readings move with the smoothing and the number of steps. A small grid around its
# suggestion, scored on validation, is the usual follow-up.

# %% [markdown]
# ## The loss landscape around a trained network
#
# Pictures of a network's "loss landscape" are slices through a space with thousands of dimensions:
# the loss along one or two directions through the trained weights $\theta^\star$,
# $L(\theta^\star + \alpha\,d_1 + \beta\,d_2)$. Random directions need care. In a ReLU network,
# multiplying a hidden unit's incoming weights by $c > 0$ and its outgoing weights by $1/c$ gives the
# same function, so the same network can have small or large weights, and a random step of fixed
# length is a large change for the one and a small change for the other. **Filter normalization**
# (Li et al., 2018) makes the slices comparable: draw $d$ at random, then rescale each filter of $d$
# (for a fully connected layer, each unit's row of incoming weights) to the norm of the same filter in
# $\theta^\star$, $d_{i} \leftarrow d_{i}\,\lVert\theta^\star_{i}\rVert / \lVert d_{i}\rVert$; biases
# get no perturbation. $\alpha = 1$ then changes every unit's weights by a random vector as long as
# the weights themselves.
#
# We slice the tuned SGD and Adam networks of the grid along one such direction (training and
# validation loss), along the straight line from their common initial weights to each solution
# (Goodfellow et al., 2015), and the SGD network along two directions.


# %%
def filter_normalized_direction(model, gen):
    """A random direction (a dict like named_parameters) with each unit's row scaled to the row norm."""
    direction = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=gen)
        if p.dim() == 1:
            d.zero_()  # biases: no perturbation, as in Li et al.
        else:
            d *= p.detach().cpu().norm(dim=1, keepdim=True) / d.norm(
                dim=1, keepdim=True
            )
        direction[name] = d.to(p.device)
    return direction


def loss_along(model, point, x, y):
    """Cross-entropy of `model` evaluated with the parameters `point` (a dict of tensors)."""
    with torch.no_grad():
        return F.cross_entropy(functional_call(model, point, (x,)), y).item()


# the copies that started from INITS[0] = initial_mlp, at each optimizer's tuned rate
solutions = {
    name: grid[name]["model"].members[tuned[name] * len(INITS)]
    for name in ("SGD", "Adam")
}
theta_init = {k: v.to(device) for k, v in initial_mlp.named_parameters()}
alphas = np.linspace(-1, 1, 41)
ts = np.linspace(-0.25, 1.25, 31)
slices = {}
for name, net in solutions.items():
    theta = dict(net.named_parameters())
    d1 = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    slices[name] = {
        split: [
            loss_along(net, {k: theta[k] + a * d1[k] for k in theta}, x, y)
            for a in alphas
        ]
        for split, (x, y) in (("train", (xt, yt)), ("val", (x_val, y_val)))
    }
    slices[name]["line"] = [loss_along(net, {k: (1 - t) * theta_init[k] + t * theta[k] for k in theta}, xt, yt)
                            for t in ts]  # fmt: skip

net = solutions["SGD"]
theta = dict(net.named_parameters())
d1 = filter_normalized_direction(net, torch.Generator().manual_seed(0))
d2 = filter_normalized_direction(net, torch.Generator().manual_seed(1))
grid_2d = np.linspace(-1, 1, 25)
surface = np.array([[loss_along(net, {k: theta[k] + a * d1[k] + b * d2[k] for k in theta}, xt, yt)
                     for a in grid_2d] for b in grid_2d])  # fmt: skip

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
for name in solutions:
    c, _ = OPT_STYLE[name]
    axes[0].semilogy(
        alphas, slices[name]["train"], color=c, label=f"{name}, train"
    )
    axes[0].semilogy(
        alphas,
        slices[name]["val"],
        color=c,
        ls="--",
        label=f"{name}, validation",
    )
    axes[1].semilogy(ts, slices[name]["line"], color=c, label=name)
axes[0].set(
    xlabel="α (filter-normalized random direction)",
    ylabel="loss",
    title="1-D slice through θ*",
)
axes[0].legend(fontsize=8)
axes[1].axvline(0, color=viz.color("reference"), ls=":", lw=1)
axes[1].axvline(1, color=viz.color("reference"), ls=":", lw=1)
axes[1].set(
    xlabel="t: θ = (1 − t) θ_init + t θ*",
    ylabel="training loss",
    title="From the initial weights to θ*",
)
axes[1].legend(fontsize=8)
levels = np.geomspace(surface.min(), surface.max(), 15)
cs = axes[2].contour(
    grid_2d, grid_2d, surface, levels=levels, cmap="viridis", linewidths=0.9
)
axes[2].clabel(cs, cs.levels[::3], fmt="%.2g", fontsize=7)
axes[2].plot(0, 0, "*", color="black", ms=10)
axes[2].set(xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal",
            title="2-D slice, SGD solution (training loss)")  # fmt: skip
plt.show()

# %%
i_min = np.unravel_index(surface.argmin(), surface.shape)
print(f"2-D slice: lowest loss {surface.min():.4f} at (α, β) = ({grid_2d[i_min[1]]:+.2f}, {grid_2d[i_min[0]]:+.2f}); "
      f"at θ*: {surface[12, 12]:.4f}; at the corners: {surface[[0, 0, -1, -1], [0, -1, 0, -1]].min():.2f} or more")  # fmt: skip
rise, monotone = {}, {}
for name in solutions:
    train_slice = np.array(slices[name]["train"])
    # alpha = -1 and +1 vs alpha = 0
    rise[name] = min(train_slice[0], train_slice[-1]) / train_slice[20]
    line = np.array(slices[name]["line"])
    inside = line[(ts >= 0) & (ts <= 1)]
    monotone[name] = bool(np.all(np.diff(inside) < 0))
    print(f"{name}: 1-D slice: loss at α = ±1 is {rise[name]:.0f}x or more the loss at θ*; "
          f"along the line from θ_init to θ*: {inside[0]:.2f} -> {inside[-1]:.3f}, monotone: {monotone[name]}")  # fmt: skip

# %%
for name in solutions:
    assert rise[name] > 3, (
        f"{name}: the 1-D slice should rise away from θ*, rose {rise[name]:.1f}x"
    )
    assert monotone[name], (
        f"{name}: the loss along the line from θ_init to θ* is not monotone"
    )

# %% [markdown]
# - Along a filter-normalized random direction both solutions sit in a smooth bowl. The validation
#   loss (dashed) follows the training loss at a higher level; the gap at $\alpha = 0$ is the
#   generalization gap, in loss. Adam's solution has the lower training loss. The width of such bowls
#   has been linked to generalization (Li et al., 2018, compare small and large batches this way), but
#   these two solutions have about the same test accuracy, and one random direction out of 4,810 is
#   thin evidence either way.
# - Along the straight line from the initial weights, the training loss falls monotonically to each
#   solution, as Goodfellow et al. (2015) found for many networks: no barrier separates the start from
#   the end, although the optimizer did not travel along this line. Past $t = 1$ the loss keeps
#   falling: $\theta^\star$ is not a minimum. Training stopped after 10 epochs, and on a training set
#   that is classified correctly the cross-entropy keeps falling as the weights, and with them the
#   confidence of the logits, grow.
# - In this 2-D slice the SGD solution sits in a single basin with its lowest point at $\theta^\star$.
#   Two directions out of 4,810 cannot show saddles or other basins, and another pair of directions
#   can look different: a slice shows the neighbourhood along two random directions, not the
#   landscape.
#
# ## Learning-rate schedules
#
# The learning rate rarely stays constant. Large steps early make fast progress, and their noise
# helps escape poor regions; small steps late let SGD settle instead of bouncing around the minimum
# (the Robbins–Monro argument above). The common schedules for a run of $T$ steps with base rate
# $\eta_0$:
#
# - **step decay**: multiply by $\gamma$ (e.g. 0.1) at chosen points. He et al. (2016) divided the rate
#   by 10 whenever the error plateaued; on CIFAR-10 that meant at 32k and 48k iterations, stopping at
#   64k. The fixed "÷10 every 30 epochs" (epochs 30, 60, 90) is the recipe of torchvision's ImageNet
#   reference training scripts, not of the paper;
# - **exponential**: $\eta_t = \eta_0\gamma^t$;
# - **cosine annealing** (Loshchilov and Hutter, 2017):
#   $\eta_t = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})(1 + \cos(\pi t / T))$, smooth, with no
#   decay points to choose;
# - **one-cycle** (Smith and Topin, 2019): ramp up to a large peak over the first ~30 % of the run, then
#   anneal to almost zero (PyTorch's `OneCycleLR` also cycles the momentum the other way);
# - **linear warm-up then cosine**: the rate climbs linearly from $\eta_0/w$ to $\eta_0$ over $w$ steps,
#   then follows a cosine down to $f_{\min}\eta_0$. This is the default of most modern vision
#   training recipes, and `course_lib.optim.warmup_cosine` builds it:
#
# $$
# \eta_t = \eta_0 \cdot \begin{cases} \dfrac{t + 1}{w} & t < w, \\[2mm]
# f_{\min} + (1 - f_{\min})\,\tfrac12\bigl(1 + \cos(\pi\,\tfrac{t - w}{T - w})\bigr) & w \le t .
# \end{cases}
# $$
#
# Schedules are stepped once per optimizer step here (`scheduler_step="batch"` in `train.fit`), which
# makes them independent of the epoch length.


# %%
def warmup_cosine_lr(t, base_lr, warmup_steps, total_steps, min_factor=0.0):
    """The warm-up + cosine learning rate at 0-based step t, from the formula above."""
    if t < warmup_steps:
        return base_lr * (t + 1) / warmup_steps
    progress = min(1.0, (t - warmup_steps) / (total_steps - warmup_steps))
    return base_lr * (
        min_factor + (1 - min_factor) * 0.5 * (1 + np.cos(np.pi * progress))
    )


def lr_curve(make_scheduler, steps=300, base_lr=0.1):
    """The learning rate used by each of `steps` optimizer steps under a torch scheduler."""
    opt = torch.optim.SGD(
        [nn.Parameter(torch.zeros(1))], lr=base_lr, momentum=0.9
    )
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


T_TOTAL, WARMUP, MIN_F = 300, 30, 0.05
ours = np.array(
    [warmup_cosine_lr(t, 0.1, WARMUP, T_TOTAL, MIN_F) for t in range(T_TOTAL)]
)
lib = lr_curve(
    lambda o: optim.warmup_cosine(
        o, warmup_steps=WARMUP, total_steps=T_TOTAL, min_factor=MIN_F
    )
)
sched = torch.optim.lr_scheduler
torch_seq = lr_curve(
    lambda o: sched.SequentialLR(
        o,
        [
            sched.LinearLR(
                o,
                start_factor=1 / WARMUP,
                end_factor=1.0,
                total_iters=WARMUP - 1,
            ),
            sched.CosineAnnealingLR(
                o, T_max=T_TOTAL - WARMUP, eta_min=0.1 * MIN_F
            ),
        ],
        milestones=[WARMUP],
    )
)
factors = [
    optim.warmup_cosine_factor(
        t, warmup_steps=WARMUP, total_steps=T_TOTAL, min_factor=MIN_F
    )
    for t in range(T_TOTAL)
]
np.testing.assert_allclose(0.1 * np.array(factors), ours, rtol=1e-12)
np.testing.assert_allclose(lib, ours, rtol=1e-12)
np.testing.assert_allclose(torch_seq, ours, rtol=1e-9)

# %%
# NBVAL_CHECK_OUTPUT
print(
    "warm-up + cosine: our formula == optim.warmup_cosine == SequentialLR(LinearLR, CosineAnnealingLR)"
)
print(
    "lr at steps 0, 29, 30, 165, 299:",
    [f"{ours[t]:.5f}" for t in (0, 29, 30, 165, 299)],
)

# %%
schedules = {
    "constant": lr_curve(lambda o: sched.LambdaLR(o, lambda t: 1.0)),
    "step (×0.1 every 100)": lr_curve(
        lambda o: sched.StepLR(o, step_size=100, gamma=0.1)
    ),
    "exponential (γ = 0.99)": lr_curve(
        lambda o: sched.ExponentialLR(o, gamma=0.99)
    ),
    "cosine": lr_curve(lambda o: sched.CosineAnnealingLR(o, T_max=T_TOTAL)),
    "one-cycle": lr_curve(
        lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=T_TOTAL)
    ),
    "warm-up (30) + cosine": lib,
}

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 3, figsize=(11, 4.6), sharex=True, sharey=True)
for i, (ax, (name, lrs)) in enumerate(
    zip(axes.flat, schedules.items(), strict=True)
):
    ax.plot(lrs, color=viz.color(i if i != 6 else 7), lw=2)
    ax.set_title(name, fontsize=10)
for ax in axes[1]:
    ax.set_xlabel("optimizer step")
for ax in axes[:, 0]:
    ax.set_ylabel("learning rate")
fig.suptitle("Learning-rate schedules over 300 steps, base rate 0.1")
plt.show()

# %% [markdown]
# ### Warm-up
#
# Why start *low*? Three reasons.
#
# 1. **Adam's early statistics are unreliable.** At step 1, $\hat v = g^2$ is estimated from a single
#    gradient, so the update is exactly $\eta\,\mathrm{sign}(g)$: every parameter moves by the full
#    $\eta$, whatever the size or the reliability of its gradient. Over the next steps the estimate
#    still rests on a handful of samples and its variance is large (Liu et al., 2020, analyse this and
#    propose RAdam). RMSProp, without bias correction, is worse: its first step is $10\eta$.
# 2. **The network changes fast at the start.** The initial gradients are large and the curvature is
#    different from what it becomes later; a large rate can throw the weights into a region they never
#    recover from (dead ReLUs, saturated units, a loss spike).
# 3. **Large batches.** To keep the same progress per epoch with a $k$ times larger batch, the
#    learning rate is scaled by $k$ (the "linear scaling rule"; Goyal et al., 2017, trained ImageNet with
#    batches of 8,192 this way); that rate is only usable after a few epochs of warm-up.
#
# The first point can be measured directly. Feed Adam and RMSProp pure noise,
# $g \sim \mathcal N(0, 1)$ for 10,000 parameters, and record the average size of the update divided
# by $\eta$.

# %%
noise_grads = torch.randn(
    300, 10_000, generator=torch.Generator().manual_seed(0)
)
update_size = {}
for name, make in (
    ("RMSProp (α = 0.99)", torch.optim.RMSprop),
    ("Adam (β1 = 0.9, β2 = 0.999)", torch.optim.Adam),
):
    w = torch.zeros(10_000, requires_grad=True)
    opt = make([w], lr=1.0)
    sizes = []
    for g_t in noise_grads:
        before = w.detach().clone()
        w.grad = g_t.clone()
        opt.step()
        sizes.append((w.detach() - before).abs().mean().item())
    update_size[name] = np.array(sizes)
print(
    {
        k: f"step 1: {v[0]:.2f}, step 300: {v[-1]:.2f}"
        for k, v in update_size.items()
    }
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.4, 3.6))
for i, (name, sizes) in enumerate(update_size.items()):
    ax.semilogy(np.arange(1, 301), sizes, color=viz.color(i), label=name)
ax.set(
    xlabel="step t",
    ylabel="mean |update| / η",
    title="Update size on pure-noise gradients",
)
ax.legend()
plt.show()

# %% [markdown]
# On gradients that carry no information, Adam's first update is $\eta$ per parameter and it takes
# dozens of steps to fall to its steady level, about five times smaller (there $\hat m$ averages the
# noise away while $\hat v$ measures its full size). RMSProp starts at $10\eta$. A warm-up over the
# first few hundred steps keeps these early, badly informed updates small.
#
# ### Warm-up in a training run
#
# We train a 64-128-128-10 MLP with Adam and batches of 128 (9 steps per epoch, 90 in all) at
# several peak rates, each with a cosine schedule, once without warm-up and once with a linear
# warm-up over the first epoch (`optim.warmup_cosine`). The loss of every step is logged from inside
# the loss function, and the rate of every step with `after_step`.


# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(12, 1.5))
viz.chain_diagram(
    [("digit\n[B, 64] pixels", "io"), ("linear 64 → 128\n+ ReLU (layer 1)", "linear"),
     ("linear 128 → 128\n+ ReLU (layer 2)", "linear"), ("linear 128 → 10\nscores [B, 10]", "linear"),
     ("cross-entropy", "head")],
    ax=ax, spacing=2.5, block_size=(2.0, 0.7), title="The warm-up MLP: dead units are counted in layers 1 and 2",
)  # fmt: skip
plt.show()

# %%
val_loader = DataLoader(splits.val, batch_size=512)


def warmup_run(peak_lr, warmup_steps, epochs=10, batch_size=128):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    model = model.to(device)
    loader = DataLoader(
        splits.train,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    opt = torch.optim.Adam(model.parameters(), lr=peak_lr)
    scheduler = optim.warmup_cosine(
        opt, warmup_steps=warmup_steps, total_steps=epochs * len(loader)
    )
    step_loss, step_lr = [], []

    def logged_ce(out, y):
        loss = F.cross_entropy(out, y)
        if (
            torch.is_grad_enabled()
        ):  # a training step (evaluation runs without gradients)
            step_loss.append(loss.item())
        return loss

    hist = train.fit(
        model,
        loader,
        epochs=epochs,
        optimizer=opt,
        loss_fn=logged_ce,
        val_loader=val_loader,
        metrics={"acc": metrics.accuracy},
        scheduler=scheduler,
        scheduler_step="batch",
        after_step=lambda: step_lr.append(opt.param_groups[0]["lr"]),
        desc=f"peak {peak_lr}, warm-up {warmup_steps}",
    )
    return {"acc": hist.last("val_acc"), "loss": np.array(step_loss), "lr": np.array(step_lr),
            "dead": dead_fraction(model)}  # fmt: skip


def dead_fraction(model):
    """Fraction of each hidden layer's ReLUs that output 0 for every training image (dead units)."""
    with torch.no_grad():
        h1 = model[1](model[0](xt))
        h2 = model[3](model[2](h1))
    return [(h.amax(0) == 0).float().mean().item() for h in (h1, h2)]


PEAKS = (0.01, 0.03, 0.1)
runs = {(peak, w): warmup_run(peak, w) for peak in PEAKS for w in (0, 9)}
runs[0.1, 45] = warmup_run(0.1, 45)  # a five-epoch warm-up at the largest peak
torch.manual_seed(0)
untrained = nn.Sequential(
    nn.Linear(64, 128),
    nn.ReLU(),
    nn.Linear(128, 128),
    nn.ReLU(),
    nn.Linear(128, 10),
)
# the same initial weights as every run above
dead_init = dead_fraction(untrained.to(device))

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
labels = {0: "cosine, no warm-up", 9: "warm-up (1 epoch) + cosine"}
for i, w in enumerate((0, 9)):
    axes[0].semilogx(
        PEAKS,
        [runs[p, w]["acc"] for p in PEAKS],
        "o-",
        color=viz.color(i),
        label=labels[w],
    )
    axes[1].semilogy(runs[0.1, w]["loss"], color=viz.color(i), label=labels[w])
    axes[2].plot(runs[0.1, w]["lr"], color=viz.color(i), label=labels[w])
axes[0].set(
    xlabel="peak learning rate (Adam)",
    ylabel="validation accuracy after 10 epochs",
    title="Warm-up widens the usable range",
    ylim=(0, 1),
)
axes[1].set(
    xlabel="optimizer step",
    ylabel="mini-batch loss",
    title="Loss per step at peak rate 0.1",
)
axes[2].set(
    xlabel="optimizer step",
    ylabel="learning rate",
    title="The two schedules at peak 0.1",
)
axes[0].legend(fontsize=8)
plt.show()

# %%
print(
    f"at initialization: dead ReLUs {dead_init[0]:4.0%} (layer 1), {dead_init[1]:4.0%} (layer 2)"
)
for (peak, w), r in runs.items():
    print(
        f"peak lr {peak:<4}, warm-up {w:2d} steps: val acc {r['acc']:.3f}, "
        f"largest first-epoch loss {r['loss'][:9].max():5.1f}, "
        f"dead ReLUs {r['dead'][0]:4.0%} (layer 1), {r['dead'][1]:4.0%} (layer 2)"
    )

# %%
warm, cold = runs[0.1, 9]["acc"], runs[0.1, 0]["acc"]
assert warm > 0.9, (
    f"Adam at peak lr 0.1 with warm-up: validation accuracy {warm:.3f}, expected > 0.9"
)
assert warm > cold + 0.05, (
    f"warm-up {warm:.3f} should beat no warm-up {cold:.3f} by > 0.05 at peak lr 0.1"
)
assert runs[0.1, 9]["dead"][0] > 0.3, (
    f"dead first-layer units with warm-up: {runs[0.1, 9]['dead'][0]:.0%}"
)
assert runs[0.01, 9]["dead"][0] < 0.1, (
    f"dead first-layer units at peak 0.01: {runs[0.01, 9]['dead'][0]:.0%}"
)
assert runs[0.1, 45]["dead"][0] < runs[0.1, 9]["dead"][0] - 0.1, (
    "a longer warm-up should kill fewer units"
)

# %% [markdown]
# At peak 0.01 both schedules reach about the same accuracy and only a few percent of the units die.
# At 0.03 the accuracy is the same too, but without warm-up about a third of the first layer dies, and
# warm-up cuts that to about an eighth. At 0.1 without warm-up, Adam's first full-size steps move every weight by 0.1 at once: the loss jumps
# by an order of magnitude, almost every unit of the first hidden layer dies (its ReLU outputs 0 for
# every training image, so it never gets a gradient again), and the run never recovers. With a
# one-epoch warm-up the same peak rate reaches a good validation accuracy, but it does *not* train
# normally: more than half of the first layer's 128 units are dead at the end, against none at
# initialization and a few percent at peak 0.01. The surviving units are enough for the digits, so
# the accuracy hides the damage. A five-epoch warm-up kills fewer units but still far more than a
# smaller peak rate. So warm-up makes a too-large rate survivable; it does not make it a good rate,
# and the best runs here are at the smaller peaks, where warm-up changes the accuracy little. Warm-up does not make
# training faster by itself either: it makes larger rates safe, and where a problem needs larger rates
# or larger batches (large-batch ImageNet training, transformers), that is what makes training faster.
#
# A related tool: averaging the weights over the last steps (an exponential moving average,
# `optim.WeightEMA`) gives a smoother model than the last iterate; it belongs to
# [chapter 05](../05_regularization/05_regularization.ipynb).

# %% [markdown]
# ## Gradient clipping
#
# A single unusual batch, or a steep wall in the loss, can produce a gradient tens of times larger
# than usual, and one step of $\eta$ times that gradient can throw the weights far from where training
# had brought them. **Gradient clipping** caps the gradient before the step. Two forms are common:
#
# - **clip by value**: $g_i \leftarrow \min(\max(g_i, -c), c)$ for every coordinate. Simple, but when
#   some coordinates are clipped and others not, the *direction* of the step changes;
# - **clip by norm**: $g \leftarrow g \cdot \min\bigl(1, c/\lVert g\rVert\bigr)$, with $\lVert g\rVert$ the norm
#   of all the parameters' gradients together (the *global* norm). The direction is kept, only the
#   length is capped, so no step is longer than $\eta c$; gradients below the threshold pass unchanged.
#
# Pascanu et al. (2013) introduced norm clipping against the exploding gradients of recurrent
# networks; today it is standard for RNNs and transformers (a global norm of 1 is a common setting).
# In PyTorch, `torch.nn.utils.clip_grad_norm_(params, max_norm)` scales the gradients in place by
# `max_norm / (norm + 1e-6)` when that factor is below 1 and returns the norm before clipping;
# `clip_grad_value_` clips by value. `train.fit(..., grad_clip=c)` calls `clip_grad_norm_` between
# `backward()` and the optimizer step. We write both forms and check them against PyTorch.


# %%
def clip_by_norm(grads, max_norm, eps=1e-6):
    """Scale a list of gradients so that their global L2 norm is at most max_norm; returns the norm."""
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    # PyTorch's formula, eps included
    scale = min(1.0, max_norm / (total.item() + eps))
    for g in grads:
        g.mul_(scale)
    return total


def clip_by_value(grads, clip_value):
    for g in grads:
        g.clamp_(-clip_value, clip_value)


torch.manual_seed(0)
probe = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
F.cross_entropy(
    probe(x_train[:32] * 30), y_train[:32]
).backward()  # inputs scaled up: a large gradient
raw = [p.grad.clone() for p in probe.parameters()]
ours = [g.clone() for g in raw]
norm_ours = clip_by_norm(ours, 1.0)
norm_torch = nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
torch.testing.assert_close(norm_ours, norm_torch)
for a, b in zip(ours, (p.grad for p in probe.parameters()), strict=True):
    torch.testing.assert_close(a, b)
ours_v = [g.clone() for g in raw]
clip_by_value(ours_v, 0.01)
for p, g in zip(probe.parameters(), raw, strict=True):
    p.grad = g.clone()
nn.utils.clip_grad_value_(probe.parameters(), 0.01)
for a, p in zip(ours_v, probe.parameters(), strict=True):
    torch.testing.assert_close(a, p.grad)
flat_raw, flat_value = (
    torch.cat([g.flatten() for g in raw]),
    torch.cat([g.flatten() for g in ours_v]),
)
cosine = F.cosine_similarity(flat_raw, flat_value, dim=0).item()
print(
    f"gradient norm {norm_torch.item():.1f}; clip_by_norm == clip_grad_norm_, clip_by_value == clip_grad_value_"
)
print(
    f"cosine between the gradient and its clipped version: by norm 1 (same direction), by value {cosine:.2f}"
)

# %% [markdown]
# ### A case where clipping matters
#
# Suppose 1 % of the training images are corrupted: 11 of the 1,078 digits come from a broken
# scanner that multiplied their pixels by 30. Their labels are still right, but each time one of them
# lands in a mini-batch it produces a gradient many times larger than the others. We train the
# digits MLP with momentum at $\eta = 0.1$, a rate in the good range of the sensitivity curve above,
# on the clean and on the corrupted training set, and on the corrupted set once more with
# `train.fit(grad_clip=1.0)`: about the 90th percentile of the gradient norm of the clean run, so that
# ordinary batches pass almost unchanged. The gradient norm of every step is logged.

# %%
corrupted_x = x_train.clone()
broken = torch.randperm(
    len(corrupted_x), generator=torch.Generator().manual_seed(0)
)[:11]
corrupted_x[broken] *= 30
train_sets = {
    "clean": splits.train,
    "corrupted": torch.utils.data.TensorDataset(corrupted_x, y_train),
}
test_loader = DataLoader(splits.test, batch_size=512)


def clip_run(data_name, grad_clip):
    model = copy.deepcopy(initial_mlp).to(device)
    loader = DataLoader(
        train_sets[data_name],
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    norms = []

    def log_norm():  # after the step the gradients are still there (clipped, if clipping is on)
        norms.append(
            torch.sqrt(
                sum((p.grad**2).sum() for p in model.parameters())
            ).item()
        )

    hist = train.fit(model, loader, epochs=10, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                     loss_fn=F.cross_entropy, val_loader=val_loader, metrics={"acc": metrics.accuracy},
                     grad_clip=grad_clip, after_step=log_norm, desc=f"{data_name}, clip {grad_clip}")  # fmt: skip
    test = train.evaluate(
        model, test_loader, metrics={"acc": metrics.accuracy}
    )["acc"]
    return {"hist": hist, "norms": np.array(norms), "test": test}


clip_runs = {
    (d, c): clip_run(d, c)
    for d, c in (("clean", None), ("corrupted", None), ("corrupted", 1.0))
}
for (d, c), r in clip_runs.items():
    q50, q90, q_max = np.quantile(r["norms"], [0.5, 0.9, 1.0])
    print(
        f"{d:9s} clip {c!s:4s}: test accuracy {r['test']:.3f}; gradient norm median {q50:.2f}, "
        f"90th percentile {q90:.2f}, max {q_max:.1f}"
    )

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
labels_c = {
    ("clean", None): "clean",
    ("corrupted", None): "1 % corrupted",
    ("corrupted", 1.0): "1 % corrupted, clip 1",
}
for i, (key, r) in enumerate(clip_runs.items()):
    axes[0].semilogy(
        r["norms"], color=viz.color(i), lw=0.8, label=labels_c[key]
    )
    axes[1].plot(
        np.arange(1, 11),
        r["hist"]["val_acc"],
        "o-",
        ms=3,
        color=viz.color(i),
        label=labels_c[key],
    )
axes[0].set(
    xlabel="step",
    ylabel="gradient norm (after clipping)",
    title="Gradient norm of every step",
)
axes[1].set(
    xlabel="epoch",
    ylabel="validation accuracy",
    ylim=(0, 1),
    title="Momentum, η = 0.1",
)
for ax in axes:
    ax.legend(fontsize=8)
plt.show()

# %%
clean, broken_run, clipped = (clip_runs[k]["test"] for k in clip_runs)
assert broken_run < clean - 0.05, (
    f"corrupted without clipping {broken_run:.3f} vs clean {clean:.3f}"
)
assert clipped > clean - 0.02, (
    f"corrupted with clipping {clipped:.3f} vs clean {clean:.3f}"
)
assert clip_runs["corrupted", 1.0]["norms"].max() <= 1.0 + 1e-4, (
    "clipped norms must not exceed 1"
)

# %% [markdown]
# On the clean data the gradient norm stays small (its 90th percentile is about 1). The corrupted
# images produce spikes tens of times larger, and each spike is a step tens of times too long in a
# direction set by one odd image, which momentum then carries on for several steps. Without clipping
# the run ends clearly below the clean one in test accuracy; with norm clipping at 1 the spikes are
# cut to ordinary steps and the run ends close to the clean one. The corrupted images still
# contribute the direction of their gradient, only not its size. Two cautions. A threshold far below
# the typical norm turns every step into a step of length $\eta c$, which changes the optimizer (for
# SGD it amounts to a smaller learning rate). And clipping treats a symptom: a gradient norm that keeps
# hitting the threshold says that the rate is too large or that something in the data is wrong (here
# the corrupted images, which would be better found and fixed). Logging the gradient norm, as above,
# costs little and tells which is the case.
#
# ## Summary
#
# | optimizer | state per parameter | update (PyTorch's form) | `torch.optim` |
# |---|---|---|---|
# | GD / SGD | none | $\theta \leftarrow \theta - \eta(g + \lambda\theta)$ | `SGD(lr)` |
# | momentum | $b$ | $b \leftarrow \mu b + (1-\tau)g$ ($b_1 = g_1$); $\theta \leftarrow \theta - \eta b$ | `SGD(lr, momentum)` |
# | Nesterov | $b$ | $b \leftarrow \mu b + g$; $\theta \leftarrow \theta - \eta(g + \mu b)$ | `SGD(..., nesterov=True)` |
# | AdaGrad | $G = \sum g^2$ | $\theta \leftarrow \theta - \eta g/(\sqrt G + \epsilon)$ | `Adagrad` |
# | RMSProp | $v$ (EMA of $g^2$) | $\theta \leftarrow \theta - \eta g/(\sqrt v + \epsilon)$, no bias correction | `RMSprop` |
# | Adam | $m$, $v$ | bias-corrected $\hat m, \hat v$; $\theta \leftarrow \theta - \eta\hat m/(\sqrt{\hat v} + \epsilon)$ | `Adam` |
# | AdamW | $m$, $v$ | $\theta \leftarrow (1 - \eta\lambda)\theta$, then the Adam step | `AdamW` |
#
# - Backpropagation is the chain rule applied from the output back. For a linear layer
#   $Y = XW^\top + b$ with upstream gradient $G$: $\nabla_W = G^\top X$, $\nabla_b = G^\top\mathbf 1$,
#   $\nabla_X = GW$. Check hand-written gradients against autograd, and any gradient with centred
#   differences in float64.
# - On a quadratic, GD needs $\eta < 2/L$ and about $\kappa$ steps per decade of accuracy; momentum
#   needs about $\sqrt\kappa$. Ill-conditioning, not the number of parameters, is what makes GD slow.
# - At a saddle the Hessian has negative eigenvalues; GD leaves it only slowly (never from exactly on
#   the ridge), gradient noise much sooner.
# - SGD trades exact gradients for many cheap steps; the noise variance falls as $1/B$.
# - Adaptive methods scale each coordinate by its gradient history. Adam is RMSProp with momentum
#   and bias correction (not AdaGrad with momentum). With Adam, use decoupled weight decay (AdamW),
#   not an L2 penalty.
# - Compare optimizers each at its own tuned rate, selected on validation and reported on test. Tuned,
#   all the mini-batch optimizers reach the same test accuracy on the digits; momentum and Adam reach a
#   low training loss two to three times sooner than plain SGD; GD, with 10 steps, is far behind. Each
#   optimizer's usable range is one to two decades wide, in a different place for each.
# - A range test (one short run with a geometrically growing rate) finds the right decade in a few
#   hundred steps; refine it on validation.
# - Schedules: decay the rate (step, cosine, one-cycle) to settle at the end; warm up at the start so
#   that large rates, large batches and Adam's early statistics do less harm. Warm-up makes a too-large
#   rate survivable, not good: check for dead units.
# - Clip by global norm, at about the typical gradient norm, to stop rare gradient spikes from
#   wrecking a run; log the gradient norm to see when clipping is doing the work.
# - Loss-landscape pictures are 1-D or 2-D slices; filter-normalized directions make them comparable
#   between networks.
#
# ## Exercises
#
# Where an exercise asks for code or a number, its first cell holds a stub to fill (a function that
# raises `NotImplementedError`, or `exercises.TODO`) and a check from `course_lib.exercises` that says
# in one line what is wrong. The references of the checks are independent of the solutions: closed
# forms, NumPy's eigenvalues, `torch.optim` and autograd. The solution follows in a collapsed cell and
# passes the same check.
#
# ### Exercise 1: the best constant step
#
# For GD on $\tfrac12(x^2 + \kappa y^2)$ the factor per step is
# $r(\eta) = \max(|1 - \eta|, |1 - \eta\kappa|)$. Show that it is smallest at
# $\eta^\star = 2/(1 + \kappa)$, with $r = (\kappa - 1)/(\kappa + 1)$. For $\kappa = 100$, find
# `best_step = (eta, r)`, the best step and its factor, by a grid search over $\eta$ (the check
# compares them with the formulas, to within $10^{-4}$).

# %%
# your values: (the eta of the grid with the smallest factor r, that r)
best_step = exercises.TODO
exercises.check_value(
    best_step,
    (2 / 101, 99 / 101),
    atol=1e-4,
    rtol=0,
    name="best_step = (eta, r)",
)

# %% tags=["hide-cell"]
# |1 - eta| falls and |1 - eta kappa| rises with eta (for eta > 1/kappa), so the maximum is smallest
# where they are equal: 1 - eta = eta kappa - 1, i.e. eta = 2/(1 + kappa), r = (kappa-1)/(kappa+1).
kappa_ex = 100.0
eta_grid = np.linspace(1e-4, 0.0199, 20000)
r_gd = np.maximum(np.abs(1 - eta_grid), np.abs(1 - eta_grid * kappa_ex))
eta_best, rate_best = eta_grid[r_gd.argmin()], r_gd.min()
assert (
    abs(eta_best - 2 / (1 + kappa_ex)) < 1e-5
    and abs(rate_best - (kappa_ex - 1) / (kappa_ex + 1)) < 1e-5
)
best_step = (eta_best, rate_best)
exercises.check_value(
    best_step,
    (2 / 101, 99 / 101),
    atol=1e-4,
    rtol=0,
    name="best_step = (eta, r)",
).assert_passed()
print(
    f"GD: best eta {eta_best:.5f} (theory {2 / (1 + kappa_ex):.5f}), rate {rate_best:.4f}"
)

# %% [markdown]
# Now heavy ball. On one eigen-direction with eigenvalue $\lambda$, PyTorch's momentum update maps
# $(\theta, b)$ linearly to the next pair, with the iteration matrix
# $\begin{pmatrix}1 - \eta\lambda & -\eta\mu\\ \lambda & \mu\end{pmatrix}$; its spectral radius (the
# largest modulus of its eigenvalues) is the factor per step. Write `hb_radius(eta, mu, lam)` from the
# characteristic polynomial $z^2 - (1 - \eta\lambda + \mu)\,z + \mu$ (the check compares it with
# `np.linalg.eigvals` of the matrix), then search a grid of $\eta$ and $\mu$ for the smallest rate on
# the valley, the larger of the radii for $\lambda = 1$ and $\lambda = 100$, and compare it with
# $(\sqrt\kappa - 1)/(\sqrt\kappa + 1)$.


# %%
def radius_by_eigvals(eta, mu, lam):
    return np.abs(
        np.linalg.eigvals(np.array([[1 - eta * lam, -eta * mu], [lam, mu]]))
    ).max()


radius_cases = [
    (0.01, 0.0, 100.0),
    (0.01, 0.9, 1.0),
    (0.0121, 0.6694, 100.0),
    (0.03, 0.5, 100.0),
    (0.001, 0.95, 1.0),
]


def hb_radius(eta, mu, lam):
    raise NotImplementedError  # your code: the largest |root| of z² − (1 − eta lam + mu) z + mu


exercises.check_function(hb_radius, radius_cases, reference=radius_by_eigvals)


# %% tags=["hide-cell"]
def hb_radius(eta, mu, lam):
    """Spectral radius of heavy ball's iteration matrix on one eigen-direction (vectorized)."""
    # characteristic polynomial z^2 - tr z + det
    tr, det = (1 - eta * lam + mu, mu)
    # complex where the roots are complex
    disc = np.lib.scimath.sqrt(tr**2 - 4 * det)
    return np.maximum(np.abs((tr + disc) / 2), np.abs((tr - disc) / 2))


exercises.check_function(
    hb_radius, radius_cases, reference=radius_by_eigvals
).assert_passed()
E, M = np.meshgrid(np.linspace(1e-4, 0.05, 400), np.linspace(0, 0.95, 400))
rate = np.maximum(hb_radius(E, M, 1.0), hb_radius(E, M, kappa_ex))
best = np.unravel_index(rate.argmin(), rate.shape)
root_k = np.sqrt(kappa_ex)
rate_hb, mu_hb = (root_k - 1) / (root_k + 1), ((root_k - 1) / (root_k + 1)) ** 2
print(
    f"heavy ball: grid rate {rate.min():.4f} at eta {E[best]:.4f}, mu {M[best]:.3f}"
)
print(
    f"            theory {rate_hb:.4f} at eta {4 / (root_k + 1) ** 2:.4f}, mu {mu_hb:.3f}"
)
assert abs(rate.min() - rate_hb) < 0.01, (
    f"grid rate {rate.min():.4f}, theory {rate_hb:.4f}"
)

# %% [markdown]
# ### Exercise 2: two forms of momentum
#
# Implement the velocity form $v \leftarrow \mu v - \eta_t g$, $\theta \leftarrow \theta + v$ on the
# valley (κ = 100, from $(-5, 1)$, $v$ starting at 0) as `velocity_momentum(lrs, momentum)`, with the
# learning rate `lrs[t]` at step $t$; it returns the path, a float64 tensor `[len(lrs) + 1, 2]`. The
# check compares it with `torch.optim.SGD(lr=1, momentum=μ)` on the loss $\eta_t f$: the velocity is
# PyTorch's buffer of the scaled gradients, with the opposite sign. Then run it next to
# `torch.optim.SGD(lr=0.01, momentum=0.9)` for 100 steps with a learning rate that drops from 0.01 to
# 0.001 after step 50 (`StepLR`). Show that the iterates are identical before the drop and differ
# after it. Which form slows down at once?


# %%
def sgd_on_scaled_loss(lrs, momentum=0.9):
    """torch.optim.SGD with lr 1 on the loss lrs[t] * f at step t: the velocity form, by another route."""
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=1.0, momentum=momentum)
    path = [theta.detach().clone()]
    for eta_t in lrs:
        opt.zero_grad()
        (float(eta_t) * valley(theta)).backward()
        opt.step()
        path.append(theta.detach().clone())
    return torch.stack(path)


momentum_cases = [
    ([0.01] * 30,),
    ([0.01] * 50 + [0.001] * 50,),
    (np.linspace(0.001, 0.02, 40).tolist(), 0.5),
]


def velocity_momentum(lrs, momentum=0.9):
    raise NotImplementedError  # your code: the path [len(lrs) + 1, 2] of the velocity form


exercises.check_function(
    velocity_momentum, momentum_cases, reference=sgd_on_scaled_loss, atol=1e-12
)


# %% tags=["hide-cell"]
def velocity_momentum(lrs, momentum=0.9):
    # the valley's gradient is lam * theta
    lam = torch.tensor([1.0, KAPPA], dtype=torch.float64)
    theta, v = (
        torch.tensor(START, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
    )
    path = [theta]
    for eta_t in lrs:
        v = momentum * v - float(eta_t) * lam * theta
        theta = theta + v
        path.append(theta)
    return torch.stack(path)


exercises.check_function(
    velocity_momentum, momentum_cases, reference=sgd_on_scaled_loss, atol=1e-12
).assert_passed()
theta_t = torch.tensor(START, dtype=torch.float64, requires_grad=True)
opt = torch.optim.SGD([theta_t], lr=0.01, momentum=0.9)
drop = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.1)
lrs_used, path_t = [], [theta_t.detach().clone()]
for _ in range(100):
    lrs_used.append(opt.param_groups[0]["lr"])
    opt.zero_grad()
    valley(theta_t).backward()
    opt.step()
    drop.step()
    path_t.append(theta_t.detach().clone())
path_t, path_v = torch.stack(path_t), velocity_momentum(lrs_used)
gap = (path_v - path_t).abs().amax(1)[1:]  # after each of the 100 steps
step_v, step_t = (p.diff(dim=0).norm(dim=1) for p in (path_v, path_t))
before_drop, after_drop = gap[:50].max().item(), gap[50:].max().item()
assert before_drop < 1e-12 and after_drop > 1e-3, (
    f"gaps {before_drop:.1e} before, {after_drop:.1e} after the drop"
)
print(
    f"max difference: steps 1-50 {before_drop:.1e}, steps 51-100 {after_drop:.1e}"
)
print(
    f"step length just after the drop (step 51): velocity form {step_v[50]:.4f}, PyTorch {step_t[50]:.4f}"
)
# PyTorch's buffer b is in gradient units, so the step eta_t * b shrinks by 10x at once. The velocity
# v already contains the old learning rate and decays only by mu per step, so the velocity form keeps
# moving at the old speed for ~1/(1 - mu) = 10 steps.

# %% [markdown]
# ### Exercise 3: rotate the valley
#
# Rotate the valley by 45°: $f(\theta) = \tfrac12 (R\theta)^\top \mathrm{diag}(1, 100)\,(R\theta)$
# and start from $R^\top(-5, 1)$, the same point in rotated coordinates. Write
# `rotated_run(make_opt, steps=200)`, which optimizes the rotated valley with the optimizer that
# `make_opt` builds and returns the final $f$. The check runs it for 60 steps with the race's GD and
# momentum, which must end where they are after 60 steps on the unrotated valley (their updates are
# linear in the gradients), and for one step with Adam, whose first step moves every coordinate by $\eta$ against
# the sign of its gradient. Then show that momentum's final $f$ does not change, and measure how much
# Adam loses over 200 steps.

# %%
c45 = np.cos(np.pi / 4)
R = torch.tensor([[c45, -c45], [c45, c45]], dtype=torch.float64)
theta0_rot = R.T.numpy() @ np.array(START)
# the gradient R^T H R theta0 = R^T H start
g0_rot = R.T.numpy() @ (np.array([1.0, KAPPA]) * np.array(START))
# Adam, lr 0.1, first step
adam_one_step = valley(R.numpy() @ (theta0_rot - 0.1 * np.sign(g0_rot)))
rotation_cases = [
    (race["GD"], 60),
    (race["momentum"], 60),
    (race["Adam"], 1),
]  # (make_opt, steps)
rotation_expected = [
    race_results["GD"][1][60],
    race_results["momentum"][1][60],
    adam_one_step,
]


def rotated_run(make_opt, steps=200):
    raise NotImplementedError  # your code: the final f on the rotated valley, a float


exercises.check_function(
    rotated_run, rotation_cases, expected=rotation_expected, atol=1e-12
)


# %% tags=["hide-cell"]
def rotated_run(make_opt, steps=200):
    theta = (R.T @ torch.tensor(START, dtype=torch.float64)).requires_grad_(
        True
    )
    opt = make_opt([theta])
    for _ in range(steps):
        opt.zero_grad()
        valley(R @ theta).backward()
        opt.step()
    return valley(R @ theta.detach()).item()


exercises.check_function(
    rotated_run, rotation_cases, expected=rotation_expected, atol=1e-12
).assert_passed()
f_rot = {name: rotated_run(race[name]) for name in ("momentum", "Adam")}
for name, value in f_rot.items():
    print(
        f"{name:9s} axis-aligned f = {f_final[name]:.1e}, rotated f = {value:.1e}"
    )
assert abs(f_rot["momentum"] - f_final["momentum"]) < 1e-6 * f_final["GD"]
assert f_rot["Adam"] > 10 * f_final["Adam"]
# Momentum's update is a linear function of the gradients, so it commutes with rotations. Adam divides
# coordinate by coordinate; in rotated coordinates both axes mix the steep and the flat direction,
# and its per-coordinate scaling no longer matches the curvature.

# %% [markdown]
# ### Exercise 4: Adam does not see the scale of the loss
#
# Write `scaled_run(make_opt, scale, steps=200)`: optimize `scale` times the valley from $(-5, 1)$
# and return the final value of the valley itself (unscaled). The check runs 60 steps of GD at two scales
# below 1, where GD on $c f$ must equal GD on $f$ with the rate $c\eta$ (in closed form,
# `gd_on_valley`), and of Adam at scale 1 (the race's path). Then multiply the valley by 1,000 and rerun Adam and GD
# with the race settings. Show that Adam's path is unchanged (up to the effect of $\epsilon$) and
# explain why, and what happens to GD.

# %%
eta_race_gd = 2 / (KAPPA + 1)
scale_cases = [
    (race["GD"], 0.5, 60),
    (race["GD"], 0.9, 60),
    (race["Adam"], 1.0, 60),
]  # (make_opt, scale, steps)
scale_expected = [gd_on_valley(0.5 * eta_race_gd, 60)[-1], gd_on_valley(0.9 * eta_race_gd, 60)[-1],
                  race_results["Adam"][1][60]]  # fmt: skip


def scaled_run(make_opt, scale, steps=200):
    raise NotImplementedError  # your code: f (unscaled) after `steps` steps on scale * f


exercises.check_function(
    scaled_run, scale_cases, expected=scale_expected, atol=1e-12
)


# %% tags=["hide-cell"]
def scaled_run(make_opt, scale, steps=200):
    theta = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = make_opt([theta])
    for _ in range(steps):
        opt.zero_grad()
        (scale * valley(theta)).backward()
        opt.step()
    return valley(theta.detach()).item()


exercises.check_function(
    scaled_run, scale_cases, expected=scale_expected, atol=1e-12
).assert_passed()
for name in ("Adam", "GD"):
    final = scaled_run(race[name], 1000.0)
    result = f"{final:.2e}" if np.isfinite(final) else "diverged (overflow)"
    print(
        f"{name}: f after 200 steps, loss x1: {f_final[name]:.2e}, loss x1000: {result}"
    )
# Adam's step is m_hat / sqrt(v_hat): scaling every gradient by c scales m by c and sqrt(v) by c, and
# the ratio is unchanged (epsilon = 1e-8 is negligible next to these gradients). GD's step is scaled by
# 1000: eta L = 1.98 becomes 1980, far beyond 2, and it diverges until the numbers overflow.

# %% [markdown]
# ### Exercise 5: backpropagation through a tanh regression network
#
# A network $X \to Z = XW_1^\top + b_1 \to H = \tanh Z \to P = HW_2^\top + b_2$ is trained with the mean
# squared error $L = \frac{1}{Bd}\sum_{b,k}(P_{bk} - T_{bk})^2$ over a batch of $B$ examples with $d$
# outputs. Write the forward and the backward pass by hand as
# `tanh_net_grads(X, T, W1, b1, W2, b2)`, returning $(\partial L/\partial W_1, \partial L/\partial b_1,
# \partial L/\partial W_2, \partial L/\partial b_2, \partial L/\partial X)$ (use $\tanh' = 1 - \tanh^2$,
# which the forward pass already computed). The check compares the five gradients with autograd's
# (`F.mse_loss`, `torch.autograd.grad`) in float64, for $B = 16$, 5 inputs, 7 hidden units and
# $d = 3$ outputs, and for a second, smaller network.


# %%
def autograd_grads(X, T, W1, b1, W2, b2):
    leaves = [t.detach().requires_grad_() for t in (W1, b1, W2, b2, X)]
    w1, bias1, w2, bias2, x = leaves
    loss = F.mse_loss(torch.tanh(x @ w1.T + bias1) @ w2.T + bias2, T)
    return tuple(torch.autograd.grad(loss, leaves))


def tanh_net_case(seed, batch, n_in, n_hidden, n_out):
    """Random X, T, W1, b1, W2, b2 in float64."""
    g = torch.Generator().manual_seed(seed)
    shapes = [
        (batch, n_in),
        (batch, n_out),
        (n_hidden, n_in),
        (n_hidden,),
        (n_out, n_hidden),
        (n_out,),
    ]
    return tuple(
        torch.randn(shape, dtype=torch.float64, generator=g) for shape in shapes
    )


tanh_cases = [tanh_net_case(5, 16, 5, 7, 3), tanh_net_case(6, 4, 3, 2, 1)]


def tanh_net_grads(X, T, W1, b1, W2, b2):
    raise NotImplementedError  # your code: (dW1, db1, dW2, db2, dX)


exercises.check_function(
    tanh_net_grads, tanh_cases, reference=autograd_grads, rtol=1e-7, atol=1e-10
)


# %% tags=["hide-cell"]
def tanh_net_grads(X, T, W1, b1, W2, b2):
    H = torch.tanh(X @ W1.T + b1)  # forward pass
    P = H @ W2.T + b2
    # backward pass; the mean runs over B * d entries
    dP = 2 * (P - T) / P.numel()
    dW2, db2, dH = dP.T @ H, dP.sum(0), dP @ W2
    dZ = dH * (1 - H**2)  # tanh' from the forward value
    return dZ.T @ X, dZ.sum(0), dW2, db2, dZ @ W1


exercises.check_function(
    tanh_net_grads, tanh_cases, reference=autograd_grads, rtol=1e-7, atol=1e-10
).assert_passed()
for ours, theirs in zip(
    tanh_net_grads(*tanh_cases[0]), autograd_grads(*tanh_cases[0]), strict=True
):
    torch.testing.assert_close(ours, theirs)
print("tanh regression network: all five gradients by hand == autograd")

# %% [markdown]
# ## References
#
# - Robbins, H., and Monro, S. (1951). A stochastic approximation method. *The Annals of Mathematical
#   Statistics*, 22(3), 400–407.
# - Polyak, B. T. (1964). Some methods of speeding up the convergence of iteration methods. *USSR
#   Computational Mathematics and Mathematical Physics*, 4(5), 1–17.
# - Nesterov, Y. (1983). A method for solving the convex programming problem with convergence rate
#   $O(1/k^2)$. *Soviet Mathematics Doklady*, 27, 372–376.
# - Rumelhart, D. E., Hinton, G. E., and Williams, R. J. (1986). Learning representations by
#   back-propagating errors. *Nature*, 323, 533–536.
# - Duchi, J., Hazan, E., and Singer, Y. (2011). Adaptive subgradient methods for online learning and
#   stochastic optimization. *Journal of Machine Learning Research*, 12, 2121–2159.
# - Tieleman, T., and Hinton, G. (2012). Lecture 6.5, RMSProp: divide the gradient by a running
#   average of its recent magnitude. *Neural Networks for Machine Learning* (Coursera).
# - Pascanu, R., Mikolov, T., and Bengio, Y. (2013). On the difficulty of training recurrent neural
#   networks. *ICML 2013*. arXiv:1211.5063. (Gradient norm clipping.)
# - Sutskever, I., Martens, J., Dahl, G., and Hinton, G. (2013). On the importance of initialization and
#   momentum in deep learning. *ICML 2013*.
# - Dauphin, Y., Pascanu, R., Gulcehre, C., Cho, K., Ganguli, S., and Bengio, Y. (2014). Identifying
#   and attacking the saddle point problem in high-dimensional non-convex optimization. *NeurIPS 2014*.
#   arXiv:1406.2572.
# - Ge, R., Huang, F., Jin, C., and Yuan, Y. (2015). Escaping from saddle points: online stochastic
#   gradient for tensor decomposition. *COLT 2015*. arXiv:1503.02101.
# - Goodfellow, I. J., Vinyals, O., and Saxe, A. M. (2015). Qualitatively characterizing neural network
#   optimization problems. *ICLR 2015*. arXiv:1412.6544.
# - Kingma, D. P., and Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR 2015*.
#   arXiv:1412.6980.
# - He, K., Zhang, X., Ren, S., and Sun, J. (2016). Deep residual learning for image recognition.
#   *CVPR 2016*. arXiv:1512.03385. (Step schedule: ÷10 when the error plateaus; on CIFAR-10 at 32k and
#   48k iterations, stopping at 64k.)
# - Jin, C., Ge, R., Netrapalli, P., Kakade, S. M., and Jordan, M. I. (2017). How to escape saddle
#   points efficiently. *ICML 2017*. arXiv:1703.00887.
# - Smith, L. N. (2017). Cyclical learning rates for training neural networks. *WACV 2017*.
#   arXiv:1506.01186. (The learning-rate range test.)
# - Loshchilov, I., and Hutter, F. (2017). SGDR: stochastic gradient descent with warm restarts.
#   *ICLR 2017*. arXiv:1608.03983.
# - Goyal, P., Dollár, P., Girshick, R., Noordhuis, P., Wesolowski, L., Kyrola, A., Tulloch, A., Jia, Y.,
#   and He, K. (2017). Accurate, large minibatch SGD: training ImageNet in 1 hour. arXiv:1706.02677.
# - Li, H., Xu, Z., Taylor, G., Studer, C., and Goldstein, T. (2018). Visualizing the loss landscape of
#   neural nets. *NeurIPS 2018*. arXiv:1712.09913.
# - Bottou, L., Curtis, F. E., and Nocedal, J. (2018). Optimization methods for large-scale machine
#   learning. *SIAM Review*, 60(2), 223–311. arXiv:1606.04838.
# - McCandlish, S., Kaplan, J., Amodei, D., and the OpenAI Dota Team (2018). An empirical model of
#   large-batch training. arXiv:1812.06162.
# - Loshchilov, I., and Hutter, F. (2019). Decoupled weight decay regularization. *ICLR 2019*.
#   arXiv:1711.05101.
# - Smith, L. N., and Topin, N. (2019). Super-convergence: very fast training of neural networks using
#   large learning rates. *Artificial Intelligence and Machine Learning for Multi-Domain Operations
#   Applications*, SPIE 11006. arXiv:1708.07120.
# - Liu, L., Jiang, H., He, P., Chen, W., Liu, X., Gao, J., and Han, J. (2020). On the variance of the
#   adaptive learning rate and beyond. *ICLR 2020*. arXiv:1908.03265.
