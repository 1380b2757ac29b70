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
# # 03 · Loss functions
#
# A network learns whatever its loss rewards, so choosing the loss is choosing what "good" means.
# An L2 loss asks for the average of every plausible answer, which is why L2-trained restoration
# models produce grey, blurry images when the answer is uncertain. An L1 loss asks for the median and
# shrugs off outliers. Cross-entropy is written on logits because the version on probabilities
# takes $\log 0$: the probability rounds to exactly 0 or 1. A box loss built on IoU gives no gradient once the boxes stop overlapping. This
# chapter builds the losses of computer vision from their formulas, checks each one against its
# PyTorch, torchvision or SciPy counterpart, and measures on small experiments what each of them
# does to a model.
#
# **Learning objectives.** After this chapter you can:
# - write L1, L2, Huber, binary and multi-class cross-entropy, MSLE, entropy and KL divergence from
#   their formulas and match them to `torch.nn.functional`;
# - explain with an experiment why L2 blurs: it is minimised by the conditional *mean*, L1 by the
#   *median*;
# - plot and reason about the gradient each loss sends back, and say why the logit versions of the
#   cross-entropy are the stable ones;
# - compute feature (perceptual) and style (Gram) losses with a feature network, and say what the
#   identity loss on embeddings does (an L2 loss between unit vectors);
# - compute IoU and GIoU for boxes, and show why 1 − GIoU trains where 1 − IoU is flat;
# - state the adversarial and the contrastive (NT-Xent) losses and check them against `course_lib`,
#   ready for the chapters that train with them (10, 17, 18).
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (tensors, the training
# loop), [chapter 02](../02_activations_and_init/02_activations_and_init.ipynb) (sigmoid, softmax and
# its stable form). Derivatives and the chain rule at the level of a first calculus course.
#
# **Measured runtime:** 16 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [03_losses.ipynb](03_losses.ipynb) (notebook, with outputs) · [03_losses.py](03_losses.py) (the paired script instructors edit)

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
import torchvision.ops as tvops
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from sklearn.linear_model import QuantileRegressor
from sklearn.metrics import mean_squared_log_error, root_mean_squared_log_error
from torch import nn
from tqdm.auto import trange

from course_lib import data, exercises, losses, ops, runtime, viz

device = runtime.setup(seed=0)

# %% [markdown]
# ## What a loss is
#
# A model $f_\theta$ is trained by choosing parameters $\theta$ that make a **loss** $\ell(\hat y, y)$
# small on average, where $\hat y = f_\theta(x)$ is the prediction and $y$ the target. The quantity we
# would like to minimise is the expected loss over the data distribution (the *risk*); what we can
# compute is its average over the $N$ training pairs, the **empirical risk**
#
# $$
# \hat R(\theta) = \frac{1}{N} \sum_{i=1}^{N} \ell\big(f_\theta(x_i), y_i\big).
# $$
#
# Two families cover most of this chapter:
#
# - **regression losses** compare numbers (pixel values, box coordinates, depths): L1, L2, Huber, MSLE;
# - **classification losses** compare a predicted probability distribution with a target one:
#   binary and multi-class cross-entropy, KL divergence.
#
# A loss is not the same thing as a **metric**. A metric (accuracy, IoU, PSNR) is what we report; a
# loss must also send useful gradients back to $\theta$. Accuracy is flat almost everywhere, so we
# train with cross-entropy and report accuracy. The IoU section below meets the same problem again.
#
# **Reduction.** A loss over a batch (and over the pixels of an image) is either summed or averaged.
# PyTorch's losses take `reduction="mean"` (the default), `"sum"` or `"none"`. With the sum, the
# gradient grows in proportion to the batch; with the mean it is an *average* of per-example
# gradients, so its scale stays the same for batches of 10 and of 1,000:

# %%
# NBVAL_CHECK_OUTPUT
pred = torch.tensor([2.0, 0.0, 1.0, 4.0])
target = torch.tensor([1.0, 0.0, 3.0, 4.0])
print("reduction='none':", F.l1_loss(pred, target, reduction="none").tolist())
print("reduction='sum' :", F.l1_loss(pred, target, reduction="sum").item())
print("reduction='mean':", F.l1_loss(pred, target, reduction="mean").item())
for n in (10, 100, 1000):
    # one shared parameter predicting every target
    w = torch.tensor(0.0, requires_grad=True)
    y_n = torch.ones(n)
    (g_sum,) = torch.autograd.grad(
        F.mse_loss(w.expand(n), y_n, reduction="sum"), w
    )
    (g_mean,) = torch.autograd.grad(
        F.mse_loss(w.expand(n), y_n, reduction="mean"), w
    )
    print(
        f"batch of {n:4d}: gradient with sum = {g_sum.item():7.1f}, with mean = {g_mean.item():.1f}"
    )

# %% [markdown]
# That does not mean that one learning rate suits every batch size. What the batch size changes, with
# the mean, is the gradient's **noise**: a mini-batch gradient averages $B$ per-example gradients, so its
# standard deviation around the full-data gradient falls like $1/\sqrt{B}$. We measure it on a linear
# regression with 4,096 noisy examples: the spread of 500 mini-batch gradients (at a fixed parameter)
# around the full-batch one. A less noisy gradient can take larger steps before the noise dominates,
# which is why the best learning rate *grows* with the batch size in practice: the linear scaling rule
# of chapter 04 (optimization) multiplies it by $k$ when the batch grows by $k$, with a warm-up.

# %%
g_noise = torch.Generator().manual_seed(11)
x_reg = torch.randn(4096, 8, generator=g_noise)
y_reg = x_reg @ torch.randn(8, generator=g_noise) + torch.randn(
    4096, generator=g_noise
)
w_at = torch.zeros(8)  # the parameter at which the gradients are compared
# d/dw of (x.w - y)^2, [4096, 8]
per_example_grad = 2 * (x_reg @ w_at - y_reg)[:, None] * x_reg
full_grad = per_example_grad.mean(0)
noise_std = {}
for b in (10, 100, 1000):
    idx = torch.stack(
        [torch.randperm(4096, generator=g_noise)[:b] for _ in range(500)]
    )  # 500 batches
    batch_grads = per_example_grad[idx].mean(1)  # [500, 8], reduction="mean"
    noise_std[b] = (
        (batch_grads - full_grad).norm(dim=1).pow(2).mean().sqrt().item()
    )
    print(f"batch of {b:4d}: |full gradient| = {full_grad.norm():.2f}, rms distance of a batch gradient "
          f"from it = {noise_std[b]:.3f}")  # fmt: skip
assert (
    2.5 < noise_std[10] / noise_std[100] < 4.0
    and 2.5 < noise_std[100] / noise_std[1000] < 4.5
), noise_std

# %% [markdown]
# ## L1, L2 and Huber
#
# For a prediction $\hat y$ and a target $y$ with $N$ elements (all the pixels of a batch of images,
# say), with residuals $r_i = \hat y_i - y_i$:
#
# $$
# \mathrm{MAE} = \frac{1}{N}\sum_{i=1}^{N} |r_i|, \qquad
# \mathrm{MSE} = \frac{1}{N}\sum_{i=1}^{N} r_i^2, \qquad
# \mathrm{Huber}_\delta = \frac{1}{N}\sum_{i=1}^{N}
# \begin{cases} \tfrac12 r_i^2 & |r_i| < \delta \\
# \delta\,(|r_i| - \tfrac12\delta) & \text{otherwise.}\end{cases}
# $$
#
# The mean absolute error (L1 loss) is a *mean*: written as a plain sum over pixels, as some lecture
# notes do, it is a different number that grows with the image size and the batch size. Huber's loss
# (Huber, 1964) is quadratic for small residuals and linear for large ones. The *smooth L1* loss of
# object detection is the same curve divided by $\delta$ (PyTorch calls that $\delta$ `beta`).


# %%
def mae(pred, target):
    return (pred - target).abs().mean()  # the 1/N makes it a mean, not a sum


def mse(pred, target):
    return ((pred - target) ** 2).mean()


def huber(pred, target, delta=1.0):
    r = (pred - target).abs()
    return torch.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)).mean()


gen = torch.Generator().manual_seed(0)
pred, target = (
    2 * torch.randn(64, 3, generator=gen),
    torch.randn(64, 3, generator=gen),
)
torch.testing.assert_close(mae(pred, target), F.l1_loss(pred, target))
torch.testing.assert_close(mse(pred, target), F.mse_loss(pred, target))
for delta in (0.5, 1.0, 2.0):
    torch.testing.assert_close(
        huber(pred, target, delta), F.huber_loss(pred, target, delta=delta)
    )
    torch.testing.assert_close(
        huber(pred, target, delta) / delta,
        F.smooth_l1_loss(pred, target, beta=delta),
    )
print("MAE, MSE, Huber and smooth L1 written from their formulas equal torch's")

# %% [markdown]
# ### The mean and the median
#
# Which single number $c$ best predicts a random target $Y$? Set the derivative of the expected loss
# to zero:
#
# $$
# \frac{d}{dc}\,\mathbb E\big[(c - Y)^2\big] = 2\,(c - \mathbb E[Y]) = 0 \;\Rightarrow\; c = \mathbb E[Y],
# \qquad
# \frac{d}{dc}\,\mathbb E\,|c - Y| = P(Y < c) - P(Y > c) = 0 \;\Rightarrow\; c = \mathrm{median}(Y).
# $$
#
# L2 is minimised by the **mean**, L1 by the **median**. Let us check it by gradient descent on a
# constant, with targets that are $+1$ 70 % of the time and $-1$ 30 % of the time: the mean is 0.4,
# the median is 1.

# %%
y_bimodal = torch.cat([torch.ones(700), -torch.ones(300)])  # 70 % +1, 30 % -1
target_mean, target_median = y_bimodal.mean().item(), y_bimodal.median().item()


def fit_constant(loss_fn, steps=400, lr=0.1, start=-0.8):
    """Gradient descent on one number c, the constant prediction; the step size decays 100x."""
    c = torch.tensor(start, requires_grad=True)
    path = []
    for t in range(steps):
        (grad,) = torch.autograd.grad(
            loss_fn(c.expand_as(y_bimodal), y_bimodal), c
        )
        with torch.no_grad():
            c -= lr * 0.01 ** (t / steps) * grad
        path.append(c.item())
    return c.item(), path


c_l2, path_l2 = fit_constant(F.mse_loss)
c_l1, path_l1 = fit_constant(F.l1_loss)

# %% tags=["hide-input"]
cs = torch.linspace(-1.5, 1.5, 301)
risk_l2 = ((cs[:, None] - y_bimodal) ** 2).mean(1)
risk_l1 = (cs[:, None] - y_bimodal).abs().mean(1)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(cs, risk_l2, color=viz.color(0), label="L2 risk  mean((c − y)²)")
axes[0].plot(cs, risk_l1, color=viz.color(1), label="L1 risk  mean(|c − y|)")
axes[0].axvline(
    target_mean, color=viz.color(0), ls=":", label=f"mean = {target_mean:.2f}"
)
axes[0].axvline(
    target_median,
    color=viz.color(1),
    ls=":",
    label=f"median = {target_median:.0f}",
)
axes[0].set(
    xlabel="constant prediction c",
    ylabel="average loss",
    title="Risk of a constant prediction",
)
axes[0].legend(fontsize=8)
axes[1].plot(path_l2, color=viz.color(0), label=f"L2 → {c_l2:.3f}")
axes[1].plot(path_l1, color=viz.color(1), label=f"L1 → {c_l1:.3f}")
axes[1].axhline(target_mean, color=viz.color("reference"), ls=":", lw=1)
axes[1].axhline(target_median, color=viz.color("reference"), ls=":", lw=1)
axes[1].set(
    xlabel="gradient-descent step", ylabel="c", title="Gradient descent on c"
)
axes[1].legend()
plt.show()

# %%
assert abs(c_l2 - target_mean) < 0.05, (
    f"L2 fit {c_l2:.3f}, expected the mean {target_mean:.2f}"
)
assert abs(c_l1 - target_median) < 0.05, (
    f"L1 fit {c_l1:.3f}, expected the median {target_median:.0f}"
)
print(
    f"L2 converged to {c_l2:.3f} (mean {target_mean:.2f}); L1 to {c_l1:.3f} (median {target_median:.0f})"
)

# %% [markdown]
# ### Why an L2-trained model blurs
#
# A common explanation for blurry L2 restorations is the shape of the loss near zero: the
# gradient $2r$ of the squared error vanishes as the error shrinks, so small details are "not
# penalised". That is not the main reason. With enough data and training, a model trained with L2
# converges to the **conditional mean** $\mathbb E[y \mid x]$ of the plausible outputs. When several
# sharp outputs are plausible for the same input, their mean is a blend of them: blur. L1 converges to
# the per-pixel **conditional median**, which for a two-valued pixel is its more likely value.
#
# A tiny inpainting task shows it. Each 16×16 digit gets a horizontal stripe (rows 6–9) painted black
# or white with probability 1/2 each, and the stripe is hidden from the model. The digit says nothing
# about the stripe's colour. A 3×3 tag in the top-left corner gives a hint: it has the stripe's colour
# 3 times out of 4. Given the tag, the stripe is the tag's colour with probability 0.75, so the
# conditional mean is 0.75 (or 0.25) and the conditional median is 1 (or 0). A small MLP sees the
# visible pixels and predicts the 64 hidden ones; we train it once with L2 and once with L1, on fresh
# random stripes at every step.

# %% tags=["hide-input"]
viz.diagram(
    {
        "x": (0, 0, "digit, stripe hidden\n+ corner tag [1, 16, 16]", "io"),
        "flat": (2.6, 0, "flatten\n[256]", "other"),
        "l1": (5.0, 0, "linear 256 → 64\n+ ReLU", "linear"),
        "l2": (7.4, 0, "linear 64 → 64\nstripe pixels [64]", "linear"),
        "loss": (9.8, 0, "L2 or L1 loss", "head"),
        "y": (9.8, -1.2, "true stripe [64]", "io"),
    },
    [("x", "flat"), ("flat", "l1"), ("l1", "l2"), ("l2", "loss"), ("y", "loss", "--")],
    block_size=(2.1, 0.7), title="The inpainting MLP, trained once with each loss",
)  # fmt: skip
plt.show()

# %%
digits, _ = data.load_digits()
digits16 = F.interpolate(
    digits, size=16, mode="bilinear", align_corners=False
).clamp(0, 1)
train_digits, test_digits = digits16[:1400], digits16[1400:]
STRIPE = slice(6, 10)  # hidden rows


def make_inpainting(images, gen):
    """Paint a black/white stripe (50/50) and a corner tag that matches it 3 times in 4; hide the stripe.

    Returns the model input [B, 1, 16, 16] (stripe filled with 0.5), the hidden pixels [B, 64] and the
    tag [B].
    """
    n = len(images)
    white = (torch.rand(n, generator=gen) < 0.5).float()
    agree = (torch.rand(n, generator=gen) < 0.75).float()
    tag = agree * white + (1 - agree) * (1 - white)
    full = images.clone()
    full[:, 0, STRIPE, :] = white[:, None, None]
    full[:, 0, :3, :3] = tag[:, None, None]
    inputs = full.clone()
    inputs[:, 0, STRIPE, :] = 0.5
    return inputs, full[:, 0, STRIPE, :].flatten(1), tag


def train_inpainter(loss_fn, name, steps=300, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 64)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in trange(steps, desc=f"inpainting with {name}"):
        idx = torch.randint(0, len(train_digits), (128,), generator=gen)
        x, y, _ = make_inpainting(train_digits[idx], gen)
        loss = loss_fn(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


inpainters = {
    "L2": train_inpainter(F.mse_loss, "L2"),
    "L1": train_inpainter(F.l1_loss, "L1"),
}
x_test, y_test, tag_test = make_inpainting(
    test_digits, torch.Generator().manual_seed(2)
)
with torch.no_grad():
    stripe_pred = {k: m(x_test.to(device)).cpu() for k, m in inpainters.items()}


# %% tags=["hide-input"]
def with_stripe(inputs, stripe):
    """Put 64 stripe pixels back into the images (for display)."""
    out = inputs.clone()
    out[:, 0, STRIPE, :] = stripe.reshape(-1, 4, 16)
    return out


show = torch.arange(6)
hidden_rgb = torch.tensor(to_rgb(viz.color(1)))[:, None, None]
masked = x_test[show].repeat(1, 3, 1, 1)
masked[:, :, STRIPE, :] = hidden_rgb[None]  # the hidden stripe drawn in orange
rows = {
    "model input (stripe hidden)": masked,
    "truth": with_stripe(x_test[show], y_test[show]).repeat(1, 3, 1, 1),
    "L2 prediction": with_stripe(x_test[show], stripe_pred["L2"][show])
    .clamp(0, 1)
    .repeat(1, 3, 1, 1),
    "L1 prediction": with_stripe(x_test[show], stripe_pred["L1"][show])
    .clamp(0, 1)
    .repeat(1, 3, 1, 1),
}
# one montage image: a row of 16x16 images per row of `rows`, separated by 2 blue pixels
montage = torch.tensor(to_rgb(viz.color(5)))[:, None, None].repeat(
    1, len(rows) * 18 - 2, len(show) * 18 - 2
)
for r, imgs in enumerate(rows.values()):
    for c in range(len(show)):
        montage[:, r * 18 : r * 18 + 16, c * 18 : c * 18 + 16] = imgs[c]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1.6, 1])
axes[0].imshow(montage.permute(1, 2, 0).numpy(), interpolation="nearest")
axes[0].set(
    xticks=[],
    yticks=[r * 18 + 7.5 for r in range(len(rows))],
    yticklabels=list(rows),
)
axes[0].grid(False)
axes[0].set_title(
    "Hidden stripe: black or white; the corner tag is right 3 times in 4"
)
ax = axes[1]
bins = np.linspace(-0.15, 1.15, 53)
for k, (name, p) in enumerate(stripe_pred.items()):
    ax.hist(
        p.flatten().numpy(),
        bins=bins,
        color=viz.color(k),
        alpha=0.7,
        label=f"{name}-trained",
    )
ax.axvline(0.75, color=viz.color("reference"), ls=":", lw=1)
ax.axvline(0.25, color=viz.color("reference"), ls=":", lw=1)
ax.set(
    xlabel="predicted stripe pixel value",
    ylabel="pixels",
    title="L2 predicts the mean, L1 a mode",
)
ax.legend()
plt.show()

# %%
tag_white = tag_test == 1
mean_l2_white = stripe_pred["L2"][tag_white].mean().item()
mean_l2_black = stripe_pred["L2"][~tag_white].mean().item()
# the more likely stripe value given the tag
mode = tag_test[:, None].expand_as(y_test)
near_mode = {
    k: ((p - mode).abs() < 0.15).float().mean().item()
    for k, p in stripe_pred.items()
}
print(
    f"L2: mean prediction {mean_l2_white:.3f} when the tag is white, {mean_l2_black:.3f} when black"
)
print(
    f"pixels within 0.15 of the likelier colour: L2 {near_mode['L2']:.1%}, L1 {near_mode['L1']:.1%}"
)
assert abs(mean_l2_white - 0.75) < 0.08 and abs(mean_l2_black - 0.25) < 0.08, (
    f"L2 should predict the conditional means 0.75/0.25, got {mean_l2_white:.3f}/{mean_l2_black:.3f}"
)
assert near_mode["L1"] > 0.9, (
    f"L1 should pick the likelier colour, only {near_mode['L1']:.1%} of pixels do"
)
assert near_mode["L2"] < 0.1, (
    f"L2 should predict grey, yet {near_mode['L2']:.1%} of pixels are black/white"
)

# %% [markdown]
# The L2 model paints the stripe a uniform grey of 0.75 or 0.25: exactly the conditional mean,
# a colour that never occurs in the data. The L1 model commits to the likelier colour. Two remarks:
#
# - Without the tag (exactly 50/50) the L1 answer is not unique: every value between 0 and 1 is a
#   median of a fair coin between 0 and 1, and L1's risk is flat there. L1 reduces blur; it does not
#   remove it.
# - Sharp *and* plausible outputs need a loss that rewards looking like a sample from the data rather
#   than being close to an average: an adversarial loss (below, and chapter 10 (gans)) or a
#   perceptual loss.
#
# ### Robustness to outliers
#
# The gradient of L2 grows with the residual, so a few points far from the trend pull the whole fit.
# L1's gradient has the same size for every point, and Huber's is capped at $\delta$. Fitting a
# line makes the difference visible: 100 points on $y = 2x + 1$ with a little noise, and a fraction of
# points in the right half replaced by readings near $-3$ (a sensor that drops out, say).
#
# A clean way to minimise all three losses is **iteratively reweighted least squares** (IRLS). For a
# loss $\rho(r)$ with derivative $\psi = \rho'$, the optimality condition $\sum_i \psi(r_i)\,\partial
# r_i/\partial\theta = 0$ is the condition of a *weighted* least-squares fit with weights
# $w_i = \psi(r_i)/r_i$, up to a constant factor: $w = 1$ for L2, $w = 1/|r|$ for L1, and
# $w = \min(1, \delta/|r|)$ for Huber. Solve the weighted fit, recompute the weights, repeat. The
# weights say how much each point may pull: far points get little weight under L1 and Huber.

# %%
TRUE_SLOPE, TRUE_INTERCEPT = 2.0, 1.0


def make_line_data(outlier_fraction, n=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    y = (
        TRUE_SLOPE * x
        + TRUE_INTERCEPT
        + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    )
    k = round(outlier_fraction * n)
    right_first = torch.argsort(
        torch.rand(n, generator=g, dtype=torch.float64) + (x < 0).double()
    )
    outliers = right_first[:k]  # random points of the right half (x > 0) first
    y[outliers] = -3 + 0.3 * torch.randn(k, generator=g, dtype=torch.float64)
    return x, y, outliers


IRLS_WEIGHTS = {
    "L2": lambda r, delta: torch.ones_like(r),
    "L1": lambda r, delta: 1 / r.abs().clamp_min(1e-6),
    "Huber": lambda r, delta: (delta / r.abs().clamp_min(1e-12)).clamp(max=1.0),
}


def fit_line(x, y, loss="L2", delta=1.0, iters=100):
    """Slope and intercept minimising the mean L1, L2 or Huber loss, by IRLS."""
    A = torch.stack([x, torch.ones_like(x)], dim=1)
    w, theta = torch.ones_like(y), None
    for _ in range(1 if loss == "L2" else iters):
        sw = w.sqrt()[:, None]
        new = torch.linalg.lstsq(A * sw, y[:, None] * sw).solution[:, 0]
        if theta is not None and (new - theta).abs().max() < 1e-10:
            return new  # converged
        theta = new
        w = IRLS_WEIGHTS[loss](y - A @ theta, delta)
    return theta


x_line, y_line, outliers = make_line_data(0.1)
fits = {name: fit_line(x_line, y_line, name) for name in IRLS_WEIGHTS}

# check each fit against an independent solver
torch.testing.assert_close(
    fits["L2"], torch.from_numpy(np.polyfit(x_line.numpy(), y_line.numpy(), 1))
)
qr = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(
    x_line[:, None].numpy(), y_line.numpy()
)
theta_qr = torch.tensor([qr.coef_[0], qr.intercept_], dtype=torch.float64)


def mean_abs(theta):
    return (theta[0] * x_line + theta[1] - y_line).abs().mean().item()


# same L1 optimum as median regression
assert mean_abs(fits["L1"]) <= mean_abs(theta_qr) + 1e-6
torch.testing.assert_close(fits["L1"], theta_qr, atol=1e-2, rtol=0)
theta_h = fits["Huber"].clone().requires_grad_()
(grad_h,) = torch.autograd.grad(
    F.huber_loss(theta_h[0] * x_line + theta_h[1], y_line, delta=1.0), theta_h
)
assert grad_h.abs().max() < 1e-6, (
    "the gradient of torch's Huber loss vanishes at the IRLS fit"
)

slope_err = {
    name: abs(theta[0].item() - TRUE_SLOPE) for name, theta in fits.items()
}
for name, theta in fits.items():
    print(
        f"{name:5s}: slope {theta[0]:.3f}, intercept {theta[1]:.3f}, slope error {slope_err[name]:.3f}"
    )
assert slope_err["L1"] < slope_err["L2"], (
    f"L1 slope error {slope_err['L1']:.3f} >= L2's {slope_err['L2']:.3f}"
)
assert slope_err["L1"] < 0.1 and slope_err["L2"] > 0.5, (
    f"with 10% outliers, slope errors {slope_err}"
)

# %% [markdown]
# L2 was checked against NumPy's least squares, L1 against scikit-learn's median (quantile)
# regression, and Huber by the zero gradient of `F.huber_loss` at the fitted line. With 10 % outliers
# the L1 slope is within a few hundredths of the truth and the L2 slope is off by about 0.9. The
# grid below raises the outlier fraction. Past the point where outliers are a large part of the right
# half, even L1 breaks down: no loss can tell which half of the data is "right" when the outliers
# are as numerous as the inliers there.


# %% tags=["hide-input"]
def draw_line_fits(ax, outlier_fraction, delta):
    x, y, out = make_line_data(outlier_fraction)
    inlier = torch.ones_like(y, dtype=torch.bool)
    inlier[out] = False
    ax.scatter(
        x[inlier], y[inlier], s=8, color=viz.color("reference"), label="data"
    )
    ax.scatter(
        x[~inlier],
        y[~inlier],
        s=12,
        marker="x",
        color=viz.color(3),
        label="outliers",
    )
    xs = torch.linspace(-1, 1, 2, dtype=torch.float64)
    ax.plot(
        xs,
        TRUE_SLOPE * xs + TRUE_INTERCEPT,
        color=viz.color(7),
        ls=":",
        lw=1,
        label="truth",
    )
    for k, name in enumerate(IRLS_WEIGHTS):
        theta = fit_line(x, y, name, delta)
        ax.plot(
            xs,
            theta[0] * xs + theta[1],
            color=viz.color(k),
            label=f"{name} (slope {theta[0]:.2f})",
        )
    ax.set(
        xlabel="x",
        ylabel="y",
        ylim=(-4.5, 4.5),
        title=f"{outlier_fraction:.0%} outliers, Huber δ = {delta:g}",
    )
    ax.legend(fontsize=7, loc="upper left")


fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharey=True)
for ax, frac in zip(axes, (0.0, 0.1, 0.2, 0.3), strict=True):
    draw_line_fits(ax, frac, delta=0.5)
plt.show()


# %% [markdown]
# Explore: move the outlier fraction, and move Huber's $\delta$ from small (close to L1) to large
# (close to L2).


# %%
def explore_outliers(outlier_fraction=0.1, delta=0.5):
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    draw_line_fits(ax, outlier_fraction, delta)
    plt.show()


_ = widgets.interact(
    explore_outliers,
    outlier_fraction=widgets.FloatSlider(
        value=0.1, min=0.0, max=0.45, step=0.05, description="outliers"
    ),
    delta=widgets.FloatLogSlider(
        value=0.5, base=10, min=-1.5, max=1.0, step=0.25, description="Huber δ"
    ),
)
# %% [markdown]
# ## Gradients of each loss
#
# What a loss teaches is in its gradient: that is the only thing backpropagation sends to the
# network. For the regression losses we differentiate with respect to the residual $r = \hat y - y$;
# for the classification losses with respect to the **logits** $z$ (the scores before the
# sigmoid/softmax):
#
# | loss | gradient | behaviour |
# |---|---|---|
# | L2, $r^2$ | $2r$ | proportional to the error: big errors pull hard |
# | L1, $\lvert r\rvert$ | $\operatorname{sign}(r)$ | same pull for every error (PyTorch uses 0 at $r = 0$) |
# | Huber | $\operatorname{clip}(r, -\delta, \delta)$ | L2 near 0, L1 beyond $\delta$ |
# | BCE on a logit | $\sigma(z) - y$ | bounded by 1; vanishes only when confidently right |
# | CE on logits | $\mathrm{softmax}(z) - \mathrm{onehot}(y)$ | the same, per class |
#
# The figure computes every gradient with autograd (dots) and draws the formula (lines); the cell
# asserts they agree.

# %%
r = torch.linspace(-3, 3, 121, requires_grad=True)
z = torch.linspace(-6, 6, 121, requires_grad=True)
delta = 1.0
curves = {}  # name -> (x, loss, autograd gradient, formula gradient)
for name, loss_vals, formula in [
    ("L1", F.l1_loss(r, torch.zeros_like(r), reduction="none"), torch.sign(r)),
    ("L2", F.mse_loss(r, torch.zeros_like(r), reduction="none"), 2 * r),
    (
        f"Huber (δ = {delta:g})",
        F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=delta),
        r.clamp(-delta, delta),
    ),
]:
    (g_auto,) = torch.autograd.grad(loss_vals.sum(), r)
    curves[name] = (r, loss_vals, g_auto, formula)
for y_val in (1.0, 0.0):
    loss_vals = F.binary_cross_entropy_with_logits(
        z, torch.full_like(z, y_val), reduction="none"
    )
    (g_auto,) = torch.autograd.grad(loss_vals.sum(), z)
    curves[f"BCE, y = {y_val:g}"] = (
        z,
        loss_vals,
        g_auto,
        torch.sigmoid(z) - y_val,
    )
# cross-entropy over 3 classes, target class 0, logits (z, 1, 0): vary the logit of the target class
logits3 = torch.stack([z, torch.ones_like(z), torch.zeros_like(z)], dim=1)
ce_vals = F.cross_entropy(
    logits3, torch.zeros(len(z), dtype=torch.long), reduction="none"
)
(g_ce,) = torch.autograd.grad(ce_vals.sum(), z)
curves["CE, target class"] = (
    z,
    ce_vals,
    g_ce,
    torch.softmax(logits3, 1)[:, 0] - 1,
)

for name, (_, _, g_auto, formula) in curves.items():
    torch.testing.assert_close(
        g_auto,
        formula.detach(),
        msg=f"autograd and formula disagree for {name}",
    )

# %% tags=["hide-input"]
panels = [
    ["L1"],
    ["L2"],
    [f"Huber (δ = {delta:g})"],
    ["BCE, y = 1", "BCE, y = 0"],
    ["CE, target class"],
]
xlabels = [
    "residual r",
    "residual r",
    "residual r",
    "logit z",
    "logit of the target class",
]
fig, axes = plt.subplots(2, 5, figsize=(15, 5.4), sharex="col")
for col, (names, xlabel) in enumerate(zip(panels, xlabels, strict=True)):
    for k, name in enumerate(names):
        xv, lv, ga, fm = (t.detach() for t in curves[name])
        c = (
            viz.color(col if len(names) == 1 else 3 + k)
            if col < 4
            else viz.color(7)
        )
        axes[0, col].plot(xv, lv, color=c, label=name)
        axes[1, col].plot(xv, fm, color=c, label="formula")
        axes[1, col].plot(
            xv[::8], ga[::8], "o", ms=3, color=c, alpha=0.6, label="autograd"
        )
    axes[0, col].set_title(" / ".join(names) if len(names) == 1 else "BCE")
    axes[0, col].legend(fontsize=7)
    axes[1, col].set_xlabel(xlabel)
    axes[1, col].axhline(0, color=viz.color("reference"), lw=0.6)
axes[0, 0].set_ylabel("loss")
axes[1, 0].set_ylabel("d loss / d input")
axes[1, 0].legend(fontsize=7)
fig.suptitle("Each loss (top) and the gradient it sends back (bottom)")
plt.show()

# %% [markdown]
# ## Binary cross-entropy
#
# For a binary label $y \in \{0, 1\}$ and a predicted probability $\hat y = \sigma(z)$,
#
# $$
# \mathrm{BCE}(\hat y, y) = -\big[\,y \log \hat y + (1 - y) \log(1 - \hat y)\,\big].
# $$
#
# It is 0 when the prediction is certain and right, and grows without bound as a wrong prediction
# becomes certain. Computing it as written, after a sigmoid, fails in floating point, and not by
# overflow: for $z = 20$ the true $1 - \sigma(z) \approx 2 \cdot 10^{-9}$ is below float32's
# resolution near 1 (about $6 \cdot 10^{-8}$), so $\sigma(z)$ rounds to exactly 1.0, $1 - \sigma(z)$ to
# exactly 0, and $\log 0 = -\infty$. The same happens with softmax, where a probability of
# $e^{-120}$ underflows to 0 (float32 numbers stop near $10^{-45}$). Substituting
# $\hat y = \sigma(z)$ and simplifying gives a form on the logit that needs no $\log$ of a rounded
# probability, and whose exponential $e^{-|z|} \le 1$ never overflows:
#
# $$
# \mathrm{BCE}(z, y) = \log(1 + e^{z}) - y z = \max(z, 0) - y z + \log\big(1 + e^{-|z|}\big).
# $$
#
# That is what `F.binary_cross_entropy_with_logits` (and `nn.BCEWithLogitsLoss`) computes; pass it raw
# logits. `F.binary_cross_entropy` takes probabilities, and it clamps $\log$ at $-100$, so it returns
# 100 where the true loss is 20. That is a silent error.


# %%
def bce_on_probs(p, y):
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def bce_on_logits(z, y):
    return z.clamp(min=0) - y * z + torch.log1p(torch.exp(-z.abs()))


zs = torch.randn(200, generator=gen) * 3
ys = (torch.rand(200, generator=gen) < 0.5).float()
torch.testing.assert_close(
    bce_on_probs(torch.sigmoid(zs), ys).mean(),
    F.binary_cross_entropy(torch.sigmoid(zs), ys),
)
torch.testing.assert_close(
    bce_on_logits(zs, ys).mean(), F.binary_cross_entropy_with_logits(zs, ys)
)
z_big = torch.tensor([-500.0, -60.0, 60.0, 500.0])
y_big = torch.tensor([1.0, 0.0, 0.0, 1.0])
torch.testing.assert_close(
    bce_on_logits(z_big, y_big),
    F.binary_cross_entropy_with_logits(z_big, y_big, reduction="none"),
)
print(
    "BCE on probabilities and on logits equal torch's (including logits of ±500)"
)

# %%
# NBVAL_CHECK_OUTPUT
# logits of examples whose label is 0
z_table = torch.tensor([2.0, 10.0, 20.0, 100.0])
y0 = torch.zeros_like(z_table)
naive = bce_on_probs(torch.sigmoid(z_table), y0)
clamped = F.binary_cross_entropy(torch.sigmoid(z_table), y0, reduction="none")
stable = F.binary_cross_entropy_with_logits(z_table, y0, reduction="none")
one_minus = 1 - torch.sigmoid(z_table)  # float32: exactly 0 from z = 20 on
print(
    f"{'logit z':>8} | {'1 - sigmoid(z)':>14} | {'sigmoid then log':>16} | {'F.binary_cross_entropy':>22} | {'with_logits':>11}"
)
for zi, q, a, b, c in zip(
    z_table, one_minus, naive, clamped, stable, strict=True
):
    print(
        f"{zi.item():8.0f} | {q.item():14.2e} | {a.item():16.2f} | {b.item():22.2f} | {c.item():11.2f}"
    )
# two classes; the true class 0 is 120 logits behind
z_far = torch.tensor([[0.0, 120.0]])
p_far = torch.softmax(z_far, dim=1)
print(f"softmax([0, 120])[0] = {p_far[0, 0].item()} (true value e^-120 = {math.exp(-120):.1e}): "
      f"-log p = {-torch.log(p_far[0, 0]).item()}, F.cross_entropy = {F.cross_entropy(z_far, torch.tensor([0])).item()}")  # fmt: skip
# rounded or underflowed to exactly 0: log 0
assert one_minus[2] == 0 and p_far[0, 0] == 0

# %% [markdown]
# ## Cross-entropy for many classes
#
# With $M$ classes, logits $z \in \mathbb R^M$, softmax probabilities $\hat y_j = e^{z_j} / \sum_k
# e^{z_k}$ and a target distribution $y$ (one-hot for a hard label),
#
# $$
# \mathrm{CE}(z, y) = -\sum_{j=0}^{M-1} y_j \log \hat y_j
# \quad\overset{\text{one-hot on class } c}{=}\quad
# -\log \hat y_c = -z_c + \log\sum_{k} e^{z_k}.
# $$
#
# Only the probability of the correct class enters the loss: how the rest is spread over the wrong
# classes does not matter. The right-hand form is `log_softmax` followed by picking the target entry
# (the *negative log-likelihood*, NLL). `torch.logsumexp` subtracts the maximum before exponentiating,
# the same trick as the stable softmax of chapter 02.
#
# In PyTorch the logits have shape `[N, M]` and the target is a tensor of **class indices** of shape
# `[N]`, with values in $0, \dots, M-1$: class $c$ corresponds to the one-hot vector with its 1 at
# position $c$ (counting from 0). `F.cross_entropy` applies the log-softmax itself, so it takes raw
# logits, never probabilities.


# %%
def log_softmax(z):
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def cross_entropy(z, y):
    """Mean cross-entropy of logits z [N, M] and class indices y [N] (values 0..M-1)."""
    return -log_softmax(z)[torch.arange(len(y)), y].mean()


logits = torch.randn(32, 5, generator=gen) * 4
labels = torch.randint(0, 5, (32,), generator=gen)
torch.testing.assert_close(
    cross_entropy(logits, labels), F.cross_entropy(logits, labels)
)
torch.testing.assert_close(
    cross_entropy(logits, labels),
    F.nll_loss(F.log_softmax(logits, dim=1), labels),
)
huge = torch.tensor([[1000.0, 0.0, -1000.0]])
print(
    "naive log(softmax) of logits (1000, 0, -1000):",
    torch.log(torch.exp(huge) / torch.exp(huge).sum()).tolist(),
)
print(
    "log_softmax via logsumexp                   :", log_softmax(huge).tolist()
)

# %% [markdown]
# ### A worked example: bits or nats
#
# Take the predicted probabilities $S = (0.775, 0.126, 0.039, 0.070)$ and the one-hot target
# $T = (1, 0, 0, 0)$, class index 0. The cross-entropy is $-\log S_0$. Its *value* depends on the base
# of the logarithm: $-\log_2 0.775 = 0.3677$ **bits**, while PyTorch uses the natural logarithm and
# reports $-\ln 0.775 = 0.2549$ **nats**. The two differ by the factor $\ln 2$. Both are correct;
# mixing them is not. (The four printed values of $S$ sum to 1.010 because they are rounded. Passing
# $\log S$ to `F.cross_entropy` would renormalise them and give $-\ln(0.775/1.010) = 0.2648$;
# `F.nll_loss` uses $\log S$ as it is.)

# %%
# NBVAL_CHECK_OUTPUT
S = torch.tensor([0.775, 0.126, 0.039, 0.070])  # predicted probabilities
T = torch.tensor([1.0, 0.0, 0.0, 0.0])  # one-hot target, class index 0
ce_bits = -(T * torch.log2(S)).sum()
ce_nats = -(T * torch.log(S)).sum()
print(f"cross-entropy with log2 : {ce_bits.item():.4f} bits")
print(f"cross-entropy with ln   : {ce_nats.item():.4f} nats")
print(
    f"F.nll_loss(log S, 0)    : {F.nll_loss(torch.log(S)[None], torch.tensor([0])).item():.4f} nats"
)
print(f"nats / ln 2             : {(ce_nats / math.log(2)).item():.4f} bits")
renormalised = F.cross_entropy(torch.log(S)[None], torch.tensor([0]))
print(
    f"sum of S = {S.sum().item():.3f}; F.cross_entropy(log S, 0) = {renormalised.item():.4f}"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
cls = np.arange(4)
axes[0].bar(cls - 0.2, S, width=0.4, color=viz.color(0), label="prediction S")
axes[0].bar(
    cls + 0.2, T, width=0.4, color=viz.color(2), label="target T (class 0)"
)
axes[0].set(
    xticks=cls,
    xlabel="class index",
    ylabel="probability",
    title="Prediction and one-hot target",
)
axes[0].legend()
contrib = -(T * torch.log2(S))
axes[1].bar(cls, contrib, color=viz.color(1))
for c_i, v in zip(cls, contrib, strict=True):
    axes[1].text(
        c_i, v.item() + 0.01, f"{v.item():.4f}", ha="center", fontsize=8
    )
axes[1].set(
    xticks=cls,
    xlabel="class index",
    ylabel="−T log₂ S (bits)",
    title="Only the target class contributes: 0.3677 bits",
)
plt.show()

# %% [markdown]
# ### Label smoothing
#
# With hard targets the cross-entropy keeps decreasing as the target logit grows: its minimum is at
# an infinite logit gap, and a network can become over-confident. **Label smoothing** (Szegedy et al.,
# 2016) trains on the target $q = (1 - \varepsilon)\,\mathrm{onehot}(c) + \varepsilon / M$ instead.
# The optimum then puts probability $1 - \varepsilon + \varepsilon/M$ on class $c$ and
# $\varepsilon/M$ on each other class, a finite logit gap of $\log\frac{1 - \varepsilon +
# \varepsilon/M}{\varepsilon/M}$. PyTorch has it built in: `F.cross_entropy(..., label_smoothing=ε)`.

# %%
# NBVAL_CHECK_OUTPUT
eps_ls, M = 0.1, 5
q_smooth = (1 - eps_ls) * F.one_hot(labels, M).float() + eps_ls / M
torch.testing.assert_close(
    F.cross_entropy(logits, labels, label_smoothing=eps_ls),
    -(q_smooth * log_softmax(logits)).sum(1).mean(),
)
torch.testing.assert_close(
    F.cross_entropy(logits, labels, label_smoothing=eps_ls),
    F.cross_entropy(logits, q_smooth),
)
gap = math.log((1 - eps_ls + eps_ls / M) / (eps_ls / M))
print(
    f"with ε = {eps_ls}, M = {M}: optimal logit gap {gap:.3f} (without smoothing: infinite)"
)

# %% [markdown]
# ## Mean squared logarithmic error
#
# When targets span orders of magnitude (counts, areas, distances), an error of 10 on a target of 100
# matters more than an error of 10 on a target of 10,000. Comparing logarithms measures *relative*
# errors. The usual mean squared logarithmic error adds 1 inside the logarithm, so that zeros stay
# finite:
#
# $$
# \mathrm{MSLE} = \frac1N \sum_{i=1}^N \big(\log(1 + \hat y_i) - \log(1 + y_i)\big)^2,
# \qquad \mathrm{RMSLE} = \sqrt{\mathrm{MSLE}}.
# $$
#
# A formula often labelled "MSLE", $\sqrt{\frac1N\sum(\log \hat y_i - \log y_i)^2}$, is really the
# *root* of it, and without the $+1$ it breaks as soon as a value is 0: $\log 0 = -\infty$, and a
# pair of zeros gives $-\infty - (-\infty)$ = NaN. `torch.log1p` computes
# $\log(1+x)$ accurately for small $x$. Both arguments must be non-negative.


# %%
def msle_scratch(pred, target):
    return ((torch.log1p(pred) - torch.log1p(target)) ** 2).mean()


counts_pred = torch.tensor([0.0, 3.0, 12.0, 95.0, 1100.0, 9000.0])
counts_true = torch.tensor([0.0, 2.0, 10.0, 100.0, 1000.0, 10000.0])
assert math.isclose(
    msle_scratch(counts_pred, counts_true).item(),
    mean_squared_log_error(counts_true, counts_pred),
    rel_tol=1e-5,
)
torch.testing.assert_close(
    losses.msle(counts_pred, counts_true),
    msle_scratch(counts_pred, counts_true),
)
assert math.isclose(
    losses.msle(counts_pred, counts_true).sqrt().item(),
    root_mean_squared_log_error(counts_true, counts_pred),
    rel_tol=1e-5,
)
no_plus_one = (
    ((torch.log(counts_pred) - torch.log(counts_true)) ** 2).mean().sqrt()
)
print(f"root formula without +1 on data with a zero: {no_plus_one.item()}")

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{'target':>8} {'prediction':>11} {'squared error':>14} {'squared log error':>18}"
)
for t, p in [
    (10.0, 11.0),
    (100.0, 110.0),
    (1000.0, 1100.0),
    (10000.0, 11000.0),
]:
    se = (p - t) ** 2
    sle = losses.msle(torch.tensor([p]), torch.tensor([t])).item()
    print(f"{t:8.0f} {p:11.0f} {se:14.0f} {sle:18.5f}")

# %% [markdown]
# Every prediction above is 10 % too high. The squared error grows 10,000-fold from the first row to
# the last; the squared log error stays close to $\log(1.1)^2 \approx 0.0091$. Use MSLE when relative
# errors are what matters and the targets are non-negative. Note that MSLE penalises
# under-prediction a little more than over-prediction by the same amount.
#
# ## Entropy, cross-entropy and KL divergence
#
# For discrete distributions $p$ (the reference, e.g. the data) and $q$ (the model):
#
# $$
# H(p) = -\sum_i p_i \log p_i, \qquad
# H(p, q) = -\sum_i p_i \log q_i, \qquad
# D_{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i},
# $$
#
# with the convention $0 \log 0 = 0$. The **entropy** $H(p)$ is the average surprise of samples
# drawn from $p$: 0 for a one-hot distribution, largest ($\log M$) for the uniform one. The
# **cross-entropy** is the average surprise when samples of $p$ are scored with $q$. The **KL
# divergence** is the excess, and so
#
# $$
# H(p, q) = H(p) + D_{KL}(p \,\|\, q).
# $$
#
# $D_{KL}(p\|q) \ge 0$ with equality only for $q = p$ (Gibbs' inequality), and it is not symmetric.
# For $p = (\frac12, \frac14, \frac18, \frac18)$ and a uniform $q$ everything is a round number of bits:

# %%
# NBVAL_CHECK_OUTPUT
p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
q = torch.full((4,), 0.25, dtype=torch.float64)
H_p = -(p * torch.log2(p)).sum()
H_pq = -(p * torch.log2(q)).sum()
KL_pq = (p * torch.log2(p / q)).sum()
print(
    f"H(p) = {H_p.item():.4f} bits, H(p, q) = {H_pq.item():.4f} bits, KL(p || q) = {KL_pq.item():.4f} bits"
)
torch.testing.assert_close(H_pq, H_p + KL_pq)
# the same quantities from course_lib, SciPy and PyTorch
torch.testing.assert_close(losses.entropy(p, base=2), H_p)
torch.testing.assert_close(losses.kl_divergence(p, q, base=2), KL_pq)
assert math.isclose(scipy.stats.entropy(p.numpy(), base=2), H_p.item())
assert math.isclose(
    scipy.stats.entropy(p.numpy(), q.numpy(), base=2), KL_pq.item()
)
# F.kl_div(input, target) expects input = log q (log-probabilities) and target = p, in nats
torch.testing.assert_close(
    F.kl_div(q.log(), p, reduction="sum") / math.log(2), KL_pq
)
p2, q2 = (
    torch.tensor([0.9, 0.1], dtype=torch.float64),
    torch.tensor([0.5, 0.5], dtype=torch.float64),
)
print(
    f"asymmetry: KL(p2 || q2) = {losses.kl_divergence(p2, q2).item():.4f} nats, "
    f"KL(q2 || p2) = {losses.kl_divergence(q2, p2).item():.4f} nats"
)
print(f"KL(p || p) = {losses.kl_divergence(p, p).item():.4f}")

# %%
# NBVAL_CHECK_OUTPUT
P = torch.softmax(
    torch.randn(1000, 6, generator=gen, dtype=torch.float64) * 2, dim=1
)
Q = torch.softmax(
    torch.randn(1000, 6, generator=gen, dtype=torch.float64) * 2, dim=1
)
kl = losses.kl_divergence(P, Q)
assert (kl >= 0).all(), "Gibbs' inequality"
torch.testing.assert_close(kl, F.kl_div(Q.log(), P, reduction="none").sum(1))
print(
    f"1000 random pairs: min KL = {kl.min().item():.4f} >= 0; "
    f"KL(P||Q) != KL(Q||P) for {(~torch.isclose(kl, losses.kl_divergence(Q, P))).sum().item()} pairs"
)

# %% [markdown]
# **Which to minimise, CE or KL?** When the reference $p$ is fixed (labels, a teacher's soft targets in
# distillation), $H(p)$ is a constant: CE and KL differ by it in *value* but have the same *gradient*
# with respect to the model, so they train identically. That is the whole relationship. The claim that
# "KL is preferred for autoencoders" has no support. The VAE of chapter 09 (autoencoders) does contain a
# KL term, but it compares two *different* things, the encoder's distribution over latent codes and a
# prior. It regularises the latent codes; it does not replace the reconstruction loss. The choice
# between CE and KL matters only when $p$ itself depends on the parameters, because then $H(p)$ has
# a gradient too.

# %%
p_teacher = torch.softmax(
    torch.randn(8, 5, generator=gen, dtype=torch.float64), dim=1
)  # fixed
z_student = torch.randn(
    8, 5, generator=gen, dtype=torch.float64, requires_grad=True
)
ce_val = -(p_teacher * F.log_softmax(z_student, dim=1)).sum(1).mean()
kl_val = losses.kl_divergence(p_teacher, torch.softmax(z_student, dim=1)).mean()
(g_ce,) = torch.autograd.grad(ce_val, z_student)
(g_kl,) = torch.autograd.grad(kl_val, z_student)
torch.testing.assert_close(g_ce, g_kl)
torch.testing.assert_close(
    g_ce, (torch.softmax(z_student, 1) - p_teacher).detach() / 8
)
torch.testing.assert_close(ce_val - kl_val, losses.entropy(p_teacher).mean())
print(
    f"CE = {ce_val.item():.4f}, KL = {kl_val.item():.4f}, difference = mean H(p) = "
    f"{losses.entropy(p_teacher).mean().item():.4f}; gradients are identical"
)

# %% [markdown]
# **The direction of KL matters.** Fit a single Gaussian $q$ to a two-peaked $p$. Minimising
# $D_{KL}(p\|q)$ ("forward") punishes $q \approx 0$ wherever $p > 0$, so $q$ spreads over both peaks
# and puts its mass between them. This is the distribution version of L2's grey stripe.
# Minimising $D_{KL}(q\|p)$ ("reverse") punishes $q > 0$ where $p \approx 0$, so $q$ settles on one
# peak. Both are found below by a grid search over the mean and the width of $q$.

# %%
grid = torch.linspace(-6, 6, 481, dtype=torch.float64)


def gaussian_on_grid(mu, sigma):
    d = torch.exp(-0.5 * ((grid - mu[..., None]) / sigma[..., None]) ** 2)
    return d / d.sum(-1, keepdim=True)


p_two = 0.5 * gaussian_on_grid(
    torch.tensor(-2.0), torch.tensor(0.6)
) + 0.5 * gaussian_on_grid(torch.tensor(2.0), torch.tensor(0.6))
mus, sigmas = torch.meshgrid(
    torch.linspace(-3, 3, 61), torch.linspace(0.3, 3.3, 31), indexing="ij"
)
# [61*31, 481]
q_all = gaussian_on_grid(mus.flatten().double(), sigmas.flatten().double())
forward = losses.kl_divergence(p_two.expand_as(q_all), q_all)
reverse = losses.kl_divergence(q_all, p_two.expand_as(q_all))
best_f, best_r = forward.argmin(), reverse.argmin()
mu_f, sd_f = (
    round(mus.flatten()[best_f].item(), 2) + 0.0,
    sigmas.flatten()[best_f].item(),
)  # + 0.0: no "-0.0"
mu_r, sd_r = (
    round(mus.flatten()[best_r].item(), 2) + 0.0,
    sigmas.flatten()[best_r].item(),
)
assert abs(mu_f) < 0.3 and sd_f > 1.5, (
    f"forward KL should cover both peaks, got μ={mu_f:.2f}, σ={sd_f:.2f}"
)
assert abs(abs(mu_r) - 2) < 0.3 and sd_r < 1.0, (
    f"reverse KL should pick a peak, got μ={mu_r:.2f}, σ={sd_r:.2f}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.fill_between(
    grid, p_two, color=viz.color("reference"), alpha=0.3, label="p (two peaks)"
)
ax.plot(
    grid,
    q_all[best_f],
    color=viz.color(0),
    label=f"argmin KL(p‖q): μ = {mu_f:.1f}, σ = {sd_f:.1f}",
)
ax.plot(
    grid,
    q_all[best_r],
    color=viz.color(1),
    label=f"argmin KL(q‖p): μ = {mu_r:.1f}, σ = {sd_r:.1f}",
)
ax.set(
    xlabel="x",
    ylabel="probability (on the grid)",
    title="Forward KL covers the peaks, reverse KL picks one",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Perceptual, style and identity losses
#
# Pixel losses compare images pixel by pixel, so an image shifted by one pixel can be "far" from
# itself, and a blurry average can be "close" to everything. The losses of this section compare images
# through the feature maps $\phi_l(x) \in \mathbb R^{C_l \times H_l \times W_l}$ of a feature network
# $\phi$.
#
# In practice $\phi$ is a classification network pretrained on ImageNet, usually VGG-16 or VGG-19;
# its trained features are what make these losses "perceptual". This course downloads no weights, so
# here $\phi$ is a small **randomly initialised** conv net, enough to show the mechanics and the
# properties that do not depend on training. Chapter 06 (cnns) and chapter 19 (restoration and style)
# train their own feature networks. Our $\phi$ uses circular padding, which will let us build two
# different images with *exactly* the same Gram matrices below.


# %%
class RandomFeatures(nn.Module):
    """A small VGG-like feature network with random weights; returns the feature maps of 3 blocks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)

        def conv(c_in, c_out):
            return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular")

        self.blocks = nn.ModuleList(
            [
                nn.Sequential(conv(3, 16), nn.ReLU()),
                nn.Sequential(nn.AvgPool2d(2), conv(16, 32), nn.ReLU()),
                nn.Sequential(nn.AvgPool2d(2), conv(32, 64), nn.ReLU()),
            ]
        )
        self.requires_grad_(False)

    def forward(self, x):
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


phi = RandomFeatures().to(device).eval()
photo = data.sample_image("chelsea", 48).to(device)[None]  # [1, 3, 48, 48]
print([tuple(f.shape) for f in phi(photo)])

# %% tags=["hide-input"]
viz.diagram(
    {
        "x": (0, 0, "image\n[3, 48, 48]", "io"),
        "b1": (2.5, 0, "conv 3×3, 3 → 16\n+ ReLU", "conv"),
        "b2": (5.0, 0, "avg-pool 2, conv 3×3\n16 → 32 + ReLU", "conv"),
        "b3": (7.5, 0, "avg-pool 2, conv 3×3\n32 → 64 + ReLU", "conv"),
        "f1": (2.5, -1.3, "$\\phi_1$: [16, 48, 48]", "head"),
        "f2": (5.0, -1.3, "$\\phi_2$: [32, 24, 24]", "head"),
        "f3": (7.5, -1.3, "$\\phi_3$: [64, 12, 12]", "head"),
    },
    [("x", "b1"), ("b1", "b2"), ("b2", "b3"), ("b1", "f1", "--"), ("b2", "f2", "--"), ("b3", "f3", "--")],
    block_size=(2.1, 0.7),
    title="RandomFeatures: the feature network $\\phi$ (random weights, circular padding); losses compare the $\\phi_l$",
)  # fmt: skip
plt.show()

# %% [markdown]
# ### Feature reconstruction (perceptual) loss
#
# Johnson et al. (2016) compare the feature maps of one layer $j$ with a squared error normalised by
# the layer's size:
#
# $$
# \ell^{\phi, j}_{\text{feat}}(\hat y, y)
# = \frac{1}{C_j H_j W_j}\,\big\|\phi_j(\hat y) - \phi_j(y)\big\|_2^2 .
# $$
#
# The normalisation makes it the mean squared difference of the feature maps, so layers of different
# sizes are on a comparable scale. `course_lib.losses.feature_loss` sums it over the layers it is given.
# Its costs are those of running $\phi$: memory and compute, a feature network trained on another
# task, and weights per layer to tune.


# %%
def feature_loss_scratch(fx, fy):
    c, h, w = fx.shape[1:]
    return (((fx - fy) ** 2).sum(dim=(1, 2, 3)) / (c * h * w)).mean()


noisy = (
    photo + 0.1 * torch.randn(photo.shape, generator=gen).to(device)
).clamp(0, 1)
f_photo, f_noisy = phi(photo), phi(noisy)
for j in range(3):
    torch.testing.assert_close(
        feature_loss_scratch(f_noisy[j], f_photo[j]),
        losses.feature_loss(f_noisy[j], f_photo[j]),
    )
torch.testing.assert_close(
    losses.feature_loss(f_noisy, f_photo),
    sum(F.mse_loss(a, b) for a, b in zip(f_noisy, f_photo, strict=True)),
)
print(
    "feature loss per layer:",
    [
        f"{losses.feature_loss(a, b).item():.2e}"
        for a, b in zip(f_noisy, f_photo, strict=True)
    ],
)

# %% [markdown]
# ### Style loss and Gram matrices
#
# Gatys et al. (2016) describe the *style* of an image by the correlations between feature channels.
# Write layer $l$'s feature maps as a matrix $F^l \in \mathbb R^{N_l \times M_l}$: $N_l$ channels
# (rows), $M_l = H_l W_l$ positions (columns). The **Gram matrix** is
#
# $$
# G^l_{ij} = \sum_{k=1}^{M_l} F^l_{ik} F^l_{jk}, \qquad G^l = F^l (F^l)^\top \in \mathbb R^{N_l\times N_l}.
# $$
#
# With $A^l$ the Gram matrix of the style image, the loss of layer $l$ and the total are
#
# $$
# E_l = \frac{1}{4 N_l^2 M_l^2} \sum_{i,j} \big(G^l_{ij} - A^l_{ij}\big)^2, \qquad
# \mathcal L_{\text{style}} = \sum_l w_l E_l .
# $$
#
# The sum over positions $k$ forgets *where* each feature occurs. Permuting the columns of $F^l$ (the
# spatial positions) leaves $G^l$ unchanged, so the Gram matrix captures feature statistics, not
# layout.


# %%
def gram_scratch(f):
    b, c, h, w = f.shape
    F_l = f.reshape(b, c, h * w)
    return F_l @ F_l.transpose(1, 2)  # [B, C, C]


def style_loss_scratch(feats_x, feats_y, weights):
    total = 0.0
    for w_l, fx, fy in zip(weights, feats_x, feats_y, strict=True):
        n_l, m_l = fx.shape[1], fx.shape[2] * fx.shape[3]
        E_l = ((gram_scratch(fx) - gram_scratch(fy)) ** 2).sum(dim=(1, 2)) / (
            4 * n_l**2 * m_l**2
        )
        total = total + w_l * E_l.mean()
    return total


f = f_photo[1]
torch.testing.assert_close(
    gram_scratch(f), losses.gram_matrix(f, normalize=False)
)
torch.testing.assert_close(
    gram_scratch(f), torch.einsum("bchw,bdhw->bcd", f, f)
)
torch.testing.assert_close(
    style_loss_scratch(f_noisy, f_photo, [1 / 3] * 3),
    losses.style_loss(f_noisy, f_photo),
    rtol=1e-4,
    atol=1e-12,
)
perm = torch.randperm(f.shape[2] * f.shape[3], generator=gen).to(device)
f_shuffled = f.flatten(2)[:, :, perm].reshape_as(f)
torch.testing.assert_close(
    losses.gram_matrix(f_shuffled), losses.gram_matrix(f)
)
print(
    f"Gram matrix of a {tuple(f.shape)} feature map: {tuple(losses.gram_matrix(f).shape)}, "
    "unchanged by a random permutation of the positions"
)

# %% [markdown]
# Two images with the same style: because $\phi$ uses circular padding and average pooling by 2 twice,
# rolling the image cyclically by a multiple of 4 pixels rolls every feature map the same way. The
# Gram matrices are then equal at every layer, although the pixels and the feature maps differ. A
# photo cut into tiles and shuffled keeps most local statistics, so its style loss stays small, while
# its feature loss is large. A different photo differs in both.

# %%
rolled = torch.roll(photo, shifts=(16, 24), dims=(2, 3))
tiles = photo.unfold(2, 12, 12).unfold(3, 12, 12)  # [1, 3, 4, 4, 12, 12]
order = torch.randperm(16, generator=gen)
tiled = tiles.reshape(1, 3, 16, 12, 12)[:, :, order].reshape(1, 3, 4, 4, 12, 12)
tiled = tiled.permute(0, 1, 2, 4, 3, 5).reshape(1, 3, 48, 48)
other = data.sample_image("coffee", 48).to(device)[None]
candidates = {"rolled": rolled, "tiles shuffled": tiled, "another photo": other}
f_rolled = phi(rolled)
for a, b in zip(f_rolled, f_photo, strict=True):
    torch.testing.assert_close(
        losses.gram_matrix(a), losses.gram_matrix(b), rtol=1e-4, atol=1e-7
    )
scores = {}
for name, img in candidates.items():
    fi = phi(img)
    scores[name] = (
        losses.feature_loss(fi, f_photo).item(),
        losses.style_loss(fi, f_photo).item(),
    )
assert scores["rolled"][1] < 1e-9 < scores["rolled"][0], (
    "same Gram matrices, different feature maps"
)
assert scores["tiles shuffled"][1] < scores["another photo"][1], (
    "shuffled tiles keep the style closer"
)

# %% tags=["hide-input"]
viz.show_images(
    [photo[0].cpu()] + [img[0].cpu() for img in candidates.values()],
    ["original"]
    + [f"{n}\nfeature {s[0]:.4f}\nstyle {s[1]:.2e}" for n, s in scores.items()],
    ncols=4,
    size=2.3,
    suptitle="Feature loss sees layout; style loss sees statistics",
)
plt.show()

# %% [markdown]
# Even with random weights, the Gram statistics identify a texture. Below, crops from three bundled
# texture photos (brick, grass, gravel) are compared: each crop's style loss is smallest against
# another crop of the *same* texture, taken from a different part of the photo.

# %%
texture_names = ["brick", "grass", "gravel"]
crops_a, crops_b = [], []
for name in texture_names:
    # grey photos -> 3 channels
    t = data.sample_image(name, 128).expand(3, -1, -1)
    crops_a.append(t[:, :48, :48])
    crops_b.append(t[:, 64:112, 64:112])
feats_a = phi(torch.stack(crops_a).to(device))
feats_b = phi(torch.stack(crops_b).to(device))
style_matrix = torch.zeros(3, 3)
for i in range(3):
    for j in range(3):
        style_matrix[i, j] = losses.style_loss(
            [f[i : i + 1] for f in feats_a], [f[j : j + 1] for f in feats_b]
        ).item()
assert (style_matrix.argmin(dim=1) == torch.arange(3)).all(), (
    f"diagonal not the row minimum:\n{style_matrix}"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), width_ratios=[1.2, 1])
axes[0].imshow(
    torch.cat([torch.cat(crops_a, 2), torch.cat(crops_b, 2)], 1).permute(
        1, 2, 0
    )
)
axes[0].set(
    xticks=[24, 72, 120],
    xticklabels=texture_names,
    yticks=[24, 72],
    yticklabels=["crop A", "crop B"],
)
axes[0].grid(False)
im = axes[1].imshow(style_matrix / style_matrix.max(), cmap="viridis")
axes[1].set(
    xticks=range(3),
    xticklabels=texture_names,
    yticks=range(3),
    yticklabels=texture_names,
    xlabel="crop B",
    ylabel="crop A",
    title="style loss (÷ max)",
)
axes[1].grid(False)
for i in range(3):
    for j in range(3):
        axes[1].text(
            j,
            i,
            f"{(style_matrix[i, j] / style_matrix.max()).item():.3f}",
            ha="center",
            va="center",
            color=viz.color(7),
            fontsize=8,
            bbox={"facecolor": (1, 1, 1, 0.7), "linewidth": 0, "pad": 1},
        )
fig.colorbar(im, ax=axes[1])
plt.show()

# %% [markdown]
# ### Identity loss
#
# To edit or invert a face while keeping who it is, one compares embeddings $R(\cdot)$ from a
# face-recognition network (for example ArcFace, as in the pSp encoder of Richardson et al., 2021):
#
# $$
# \mathcal L_{ID} = 1 - \cos\big(R(x),\, R(\hat x)\big)
# = 1 - \frac{\langle R(x), R(\hat x)\rangle}{\|R(x)\|\,\|R(\hat x)\|} .
# $$
#
# Minimising it **maximises** the cosine similarity: the loss is 0 for embeddings that point the same
# way, 1 for orthogonal ones and 2 for opposite ones. (Some lecture notes say to "minimise the cosine
# similarity"; that would push the identity away.) A recognition network only makes sense pretrained,
# which this chapter does not download, so we study the loss itself on embedding vectors. Two
# properties explain how it behaves in training. First, for unit vectors $u, v$,
# $\|u - v\|^2 = 2 - 2\,u^\top v$, so the identity loss is half the squared L2 distance between the
# *normalised* embeddings: an L2 loss on the unit sphere. Second, its gradient with respect to an
# embedding is orthogonal to that embedding, so a gradient step turns the embedding and (to first
# order) leaves its length alone. We check both, and the library version, on random embeddings.


# %%
def identity_loss_scratch(a, b):
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return (1 - cos).mean()


emb_a = torch.randn(8, 16, generator=gen, dtype=torch.float64).requires_grad_(
    True
)
emb_b = torch.randn(8, 16, generator=gen, dtype=torch.float64)
loss_id = identity_loss_scratch(emb_a, emb_b)
torch.testing.assert_close(loss_id, losses.identity_loss(emb_a, emb_b))
torch.testing.assert_close(
    losses.identity_loss(emb_a, 3 * emb_a), torch.zeros((), dtype=torch.float64)
)
torch.testing.assert_close(
    losses.identity_loss(emb_a, -emb_a),
    torch.full((), 2.0, dtype=torch.float64),
)
half_sq = (
    0.5
    * ((F.normalize(emb_a, dim=1) - F.normalize(emb_b, dim=1)) ** 2)
    .sum(1)
    .mean()
)
torch.testing.assert_close(loss_id, half_sq)  # an L2 loss between unit vectors
(g_id,) = torch.autograd.grad(loss_id, emb_a)
# cos(gradient, embedding)
radial = (g_id * emb_a).sum(1) / (g_id.norm(dim=1) * emb_a.norm(dim=1))
print(
    f"identity loss {loss_id.item():.4f} = half squared distance of unit vectors {half_sq.item():.4f}"
)
print(
    f"largest |cos(gradient, embedding)| over the 8 rows: {radial.abs().max().item():.1e} (orthogonal)"
)
assert radial.abs().max() < 1e-12
torch.testing.assert_close(
    losses.identity_loss(emb_a, emb_b),
    losses.identity_loss(5 * emb_a, 0.1 * emb_b),
)

# %% [markdown]
# ## Adversarial loss
#
# For outputs with many acceptable answers (super-resolution, inpainting), we want the output to look
# like a real image rather than be close to the average of the answers. An **adversarial loss** uses a
# second network, the discriminator $D$ (its output $D = \sigma(a)$, with $a$ a logit), that estimates
# the probability that its input is real. Generator $G$ and discriminator play the minimax game of
# Goodfellow et al. (2014):
#
# $$
# \min_G \max_D \; \mathbb E_{x\sim p_\text{data}}\big[\log D(x)\big]
# + \mathbb E_{z}\big[\log\big(1 - D(G(z))\big)\big].
# $$
#
# The discriminator's part is a binary cross-entropy with label 1 for real and 0 for generated images.
# The generator minimises the **non-saturating** loss $-\log D(G(z))$, a BCE with label 1, rather than
# $\log(1 - D(G(z)))$: when $D$ rejects the fakes confidently ($D \approx 0$), the gradient of
# $\log(1 - \sigma(a))$ with respect to the logit is $-\sigma(a) \approx 0$, that of $-\log\sigma(a)$
# is $-(1 - \sigma(a)) \approx -1$. From scratch on logits, against `F.binary_cross_entropy_with_logits`:

# %%
a_real, a_fake = (
    torch.randn(64, generator=gen) + 2,
    torch.randn(64, generator=gen) - 4,
)  # D's logits
d_loss = -(
    F.logsigmoid(a_real) + F.logsigmoid(-a_fake)
).mean()  # -log D(x) - log(1 - D(G(z)))
bce = F.binary_cross_entropy_with_logits
torch.testing.assert_close(
    d_loss, bce(a_real, torch.ones(64)) + bce(a_fake, torch.zeros(64))
)
a_fake.requires_grad_(True)
# generator: min log(1 - D)
(g_sat,) = torch.autograd.grad(F.logsigmoid(-a_fake).mean(), a_fake)
# generator: min -log D
(g_ns,) = torch.autograd.grad(bce(a_fake, torch.ones(64)), a_fake)
torch.testing.assert_close(g_sat, -torch.sigmoid(a_fake.detach()) / 64)
torch.testing.assert_close(g_ns, -(1 - torch.sigmoid(a_fake.detach())) / 64)
print(f"mean D(G(z)) = {torch.sigmoid(a_fake).mean().item():.3f}: mean |gradient| per logit, "
      f"saturating {64 * g_sat.abs().mean().item():.3f}, non-saturating {64 * g_ns.abs().mean().item():.3f}")  # fmt: skip
assert g_ns.abs().mean() > 10 * g_sat.abs().mean()

# %% [markdown]
# For restoration the adversarial term is added to a pixel loss,
# $\mathcal L_G = \lambda_1 \|G(x) - y\|_1 - \lambda_\text{adv} \log D(G(x))$ (pix2pix, SRGAN).
# Chapter 10 (GANs) trains with it: the training dynamics, mode collapse
# and the Wasserstein variants are its subject.
#
# ## IoU and GIoU for boxes
#
# Boxes are written $(x_1, y_1, x_2, y_2)$ with $x_2 \ge x_1$, $y_2 \ge y_1$. The **intersection over
# union** of boxes $A$ and $B$ is $\mathrm{IoU} = |A \cap B| / |A \cup B|$ with
# $|A\cup B| = |A| + |B| - |A \cap B|$: 1 for identical boxes, 0 for disjoint ones. IoU is a *metric*
# (detection counts a prediction as correct when IoU ≥ 0.5); the loss built from it comes after the
# next section.
#
# ### Two conventions for the width
#
# Old detection code often computes widths as $x_2 - x_1 + 1$. This **inclusive-pixel** convention
# treats $x_1$ and $x_2$ as indices of the first and last pixel *inside* the box, so a box from pixel 0
# to pixel 0 is one pixel wide. Modern code (torchvision, DETR, this course) uses the **continuous**
# convention, where a box covers $[x_1, x_2]$ and its width is $x_2 - x_1$. The two give different
# IoUs on small integer boxes. On normalised boxes in $[0, 1]$, as DETR uses, the $+1$ is a gross
# error: it adds a whole image width to every box. (The boxes of `course_lib.data.make_shapes` are in
# the continuous convention: a box from pixel column 3 to column 7 inclusive is stored as
# $x_1 = 3$, $x_2 = 8$.)


# %%
def iou_inclusive_pixels(box_a, box_b):
    """IoU with the +1 convention of old detection code (x2, y2 are the last pixel inside the box)."""
    xa, ya = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    xb, yb = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    inter = max(0, xb - xa + 1) * max(0, yb - ya + 1)
    area_a = (box_a[2] - box_a[0] + 1) * (box_a[3] - box_a[1] + 1)
    area_b = (box_b[2] - box_b[0] + 1) * (box_b[3] - box_b[1] + 1)
    return inter / (area_a + area_b - inter)


def iou_continuous(box_a, box_b):
    """IoU of the regions [x1, x2] x [y1, y2]: width is x2 - x1."""
    xa, ya = max(box_a[0], box_b[0]), max(box_a[1], box_b[1])
    xb, yb = min(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    inter = max(0, xb - xa) * max(0, yb - ya)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    return inter / (area_a + area_b - inter)


# %%
# NBVAL_CHECK_OUTPUT
pairs = [
    ((0, 0, 2, 2), (1, 0, 3, 2)),
    ((0, 0, 1, 1), (1, 1, 2, 2)),
    ((0, 0, 10, 10), (5, 5, 15, 15)),
    ((0.10, 0.10, 0.20, 0.20), (0.15, 0.10, 0.25, 0.20)),
]
print(f"{'box A':>24} {'box B':>24} {'IoU (+1)':>9} {'IoU (continuous)':>17}")
for box_a, box_b in pairs:
    print(
        f"{box_a!s:>24} {box_b!s:>24} {iou_inclusive_pixels(box_a, box_b):9.4f} "
        f"{iou_continuous(box_a, box_b):17.4f}"
    )

# %% [markdown]
# ### Vectorised IoU and GIoU
#
# For sets of $N$ and $M$ boxes we want the full $N \times M$ matrix at once, by broadcasting, with no
# Python loop. The **generalized IoU** of Rezatofighi et al. (2019) subtracts the fraction of the
# smallest enclosing box $C$ that neither box covers:
#
# $$
# \mathrm{GIoU} = \mathrm{IoU} - \frac{|C \setminus (A \cup B)|}{|C|} \in (-1, 1].
# $$
#
# It equals the IoU when the boxes fill their enclosing box, and is negative for disjoint boxes: the
# further apart, the closer to $-1$. `course_lib.ops` holds the library versions, which also check
# their inputs and return 0 instead of NaN for a pair of zero-area boxes.


# %%
def box_iou_scratch(b1, b2):
    """IoU matrix [N, M] of boxes b1 [N, 4] and b2 [M, 4] (continuous convention)."""
    # intersection top-left, [N, M, 2]
    lt = torch.maximum(b1[:, None, :2], b2[None, :, :2])
    # intersection bottom-right
    rb = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def giou_scratch(b1, b2):
    iou, union = box_iou_scratch(b1, b2)
    c_wh = torch.maximum(b1[:, None, 2:], b2[None, :, 2:]) - torch.minimum(
        b1[:, None, :2], b2[None, :, :2]
    )
    c_area = c_wh[..., 0] * c_wh[..., 1]
    return iou - (c_area - union) / c_area


def random_boxes(n, gen):
    xy = torch.rand(n, 2, generator=gen) * 10
    return torch.cat(
        [xy, xy + torch.rand(n, 2, generator=gen) * 5 + 0.1], dim=1
    )


b1, b2 = random_boxes(30, gen), random_boxes(20, gen)
torch.testing.assert_close(box_iou_scratch(b1, b2)[0], ops.box_iou(b1, b2))
torch.testing.assert_close(ops.box_iou(b1, b2), tvops.box_iou(b1, b2))
torch.testing.assert_close(
    giou_scratch(b1, b2), ops.generalized_box_iou(b1, b2)
)
torch.testing.assert_close(
    ops.generalized_box_iou(b1, b2), tvops.generalized_box_iou(b1, b2)
)
print(
    "IoU and GIoU from scratch = course_lib.ops = torchvision.ops on 30 x 20 random boxes"
)

# %%
# NBVAL_CHECK_OUTPUT
a_box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
others = torch.tensor(
    [
        [0.0, 0.0, 2.0, 2.0],
        [1.0, 0.0, 3.0, 2.0],
        [2.0, 0.0, 4.0, 2.0],
        [4.0, 0.0, 6.0, 2.0],
        [12.0, 0.0, 14.0, 2.0],
    ]
)
names = [
    "identical",
    "half overlapping",
    "touching",
    "disjoint, gap 2",
    "disjoint, gap 10",
]
iou_vals, giou_vals = (
    ops.box_iou(a_box, others)[0],
    ops.generalized_box_iou(a_box, others)[0],
)
for name, i_v, g_v in zip(names, iou_vals, giou_vals, strict=True):
    print(f"{name:>18}: IoU {i_v.item():.4f}  GIoU {g_v.item():+.4f}")
assert (
    iou_vals[0] == 1
    and abs(iou_vals[1] - 1 / 3) < 1e-6
    and iou_vals[3] == 0
    and giou_vals[3] < 0
)

# %% [markdown]
# ### A loss from the IoU
#
# The IoU loss is $1 - \mathrm{IoU}$ and the GIoU loss $1 - \mathrm{GIoU} \in [0, 2)$. Both are
# scale-invariant, unlike an L1 loss on coordinates, which punishes the same relative error more on
# big boxes. Their difference shows when the boxes do not overlap. Slide a box horizontally past a
# fixed one: $1 - \mathrm{IoU}$ is stuck at 1 with zero gradient as soon as they separate, while
# $1 - \mathrm{GIoU}$ keeps decreasing towards the target. The library versions take *paired* boxes
# `Tensor[N, 4]` (prediction $i$ with target $i$) and compute the $N$ values directly, without the
# $N\times N$ matrix.

# %%
fixed = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
shift = torch.linspace(-12, 12, 241, requires_grad=True)
moving = torch.stack(
    [shift, torch.zeros_like(shift), shift + 4, torch.full_like(shift, 4.0)],
    dim=1,
)
fixed_n = fixed.expand_as(moving)  # paired: moving[i] with fixed_n[i]
box_losses = {
    "1 − IoU": losses.iou_loss(moving, fixed_n, reduction="none"),
    "1 − GIoU": losses.giou_loss(moving, fixed_n, reduction="none"),
}
torch.testing.assert_close(
    box_losses["1 − GIoU"],
    tvops.generalized_box_iou_loss(moving, fixed_n, reduction="none"),
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for k, (name, vals) in enumerate(box_losses.items()):
    (g_shift,) = torch.autograd.grad(vals.sum(), shift)
    axes[0].plot(shift.detach(), vals.detach(), color=viz.color(k), label=name)
    axes[1].plot(shift.detach(), g_shift, color=viz.color(k), label=name)
for ax in axes:
    ax.axvspan(-4, 4, color=viz.color("reference"), alpha=0.12, lw=0)
axes[0].set(
    xlabel="horizontal offset of the moving 4×4 box",
    ylabel="loss",
    title="Loss (shaded: boxes overlap)",
)
axes[1].set(
    xlabel="horizontal offset of the moving 4×4 box",
    ylabel="d loss / d offset",
    title="Gradient",
)
axes[0].legend()
plt.show()

# %% [markdown]
# The same effect decides whether a box regressor can learn from a bad start. Below, a 4×4 box starts
# far from its target and gradient descent (Adam) moves its centre and log-size. With the IoU loss the
# gradient is exactly zero and the box never moves; with the GIoU loss it slides to the target.

# %%
target_box = torch.tensor([[10.0, 8.0, 18.0, 14.0]])


def fit_box(loss_fn, steps=100):
    centre = torch.tensor([3.0, 22.0], requires_grad=True)
    log_size = torch.tensor([math.log(4.0), math.log(4.0)], requires_grad=True)
    opt = torch.optim.Adam(
        [{"params": [centre], "lr": 0.3}, {"params": [log_size], "lr": 0.03}]
    )
    path = []
    for _ in range(steps):
        half = log_size.exp() / 2
        box = torch.cat([centre - half, centre + half])[None]
        path.append(box.detach()[0])
        loss = loss_fn(box, target_box)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.stack(path)


paths = {
    "1 − IoU": fit_box(losses.iou_loss),
    "1 − GIoU": fit_box(losses.giou_loss),
}
final_iou = {
    k: ops.paired_box_iou(p[-1:], target_box).item() for k, p in paths.items()
}
moved = (paths["1 − IoU"] - paths["1 − IoU"][0]).abs().max().item()
assert moved == 0.0, (
    f"the IoU-loss box should not move (zero gradient), it moved by {moved}"
)
assert final_iou["1 − GIoU"] > 0.9, (
    f"GIoU fit reached IoU {final_iou['1 − GIoU']:.3f}, expected > 0.9"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), width_ratios=[1, 1, 1.2])
for ax, (name, path) in zip(axes[:2], paths.items(), strict=False):
    for t in [*range(0, len(path), 10), len(path) - 1]:
        x1, y1, x2, y2 = path[t].tolist()
        last = t == len(path) - 1
        style = (
            {"lw": 2, "label": "prediction (every 10 steps)"}
            if last
            else {"lw": 1}
        )
        alpha = 0.2 + 0.8 * t / len(path)
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                color=viz.color(0),
                alpha=alpha,
                **style,
            )
        )
    x1, y1, x2, y2 = target_box[0].tolist()
    ax.add_patch(
        Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            color=viz.color(2),
            lw=2.5,
            label="target",
        )
    )
    ax.set(
        xlim=(-1, 21),
        ylim=(26, 4),
        aspect="equal",
        title=f"{name}: final IoU {final_iou[name]:.2f}",
    )
    ax.legend(loc="upper left", fontsize=8)
for k, (name, path) in enumerate(paths.items()):
    axes[2].plot(
        ops.paired_box_iou(path, target_box.expand_as(path)),
        color=viz.color(k),
        label=name,
    )
axes[2].set(
    xlabel="step",
    ylabel="IoU with the target",
    title="Box fitting by gradient descent",
)
axes[2].legend()
plt.show()

# %% [markdown]
# Chapter 08 (detection) trains box regressors with these losses, and adds non-maximum suppression,
# anchors and mAP.
#
# ## Contrastive loss: NT-Xent
#
# Self-supervised learning trains an encoder without labels. SimCLR (Chen et al., 2020) makes two
# random augmentations of each of $N$ images, which gives $2N$ embeddings $z_1, \dots, z_{2N}$, and
# asks the two views of the same image (a **positive pair** $i, j$) to be more similar to each other
# than to the other $2N - 2$ embeddings of the **batch** (the negatives). Similarity is the cosine
# similarity $\mathrm{sim}(u, v) = u^\top v / (\|u\|\|v\|)$, which is a plain dot product once the
# vectors are L2-normalised. The normalised temperature-scaled cross-entropy (NT-Xent) is, for the
# anchor $i$,
#
# $$
# \ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}
# {\sum_{k=1}^{2N} \mathbb 1_{[k \ne i]}\exp(\mathrm{sim}(z_i, z_k)/\tau)},
# $$
#
# and the loss is the mean of $\ell$ over all $2N$ anchors. The denominator runs over the other
# $2N - 1$ embeddings of the *batch*, not over a whole dataset, and it sums exponentials, not raw
# similarities. It is a softmax cross-entropy in which the "classes" are the other samples and the
# correct class is the positive. The temperature $\tau$ sets how sharply hard negatives are
# weighted.


# %%
def nt_xent_scratch(z1, z2, tau):
    """NT-Xent written as the formula: exponentials, a mask for k != i, no loop."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # 2N unit vectors
    sim = z @ z.T  # cosine similarities [2N, 2N]
    # drop k = i
    e = torch.exp(sim / tau) * (1 - torch.eye(2 * n, device=z.device))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(
        z.device
    )
    ell = -torch.log(
        e[torch.arange(2 * n, device=z.device), positive] / e.sum(dim=1)
    )
    return ell.mean()


def nt_xent_as_cross_entropy(z1, z2, tau):
    """The same loss as a 2N-way classification: logits = similarities, the label = the positive."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(
        z.device
    )
    return F.cross_entropy(logits, positive)


z1, z2 = torch.randn(16, 32, generator=gen), torch.randn(16, 32, generator=gen)
for tau in (0.1, 0.5, 1.0):
    torch.testing.assert_close(
        nt_xent_scratch(z1, z2, tau), losses.nt_xent(z1, z2, temperature=tau)
    )
    torch.testing.assert_close(
        nt_xent_as_cross_entropy(z1, z2, tau),
        losses.nt_xent(z1, z2, temperature=tau),
    )
print(
    f"at τ = 0.005, exp overflows in the formula version: {nt_xent_scratch(z1, z1, 0.005).item()}; "
    f"course_lib (logsumexp): {losses.nt_xent(z1, z1, temperature=0.005).item():.4f}"
)

# %% [markdown]
# Two properties to remember. The loss of a random guess over the $2N - 1$ candidates is
# $\log(2N - 1)$, and the loss does not reach 0 even when the views agree, because the positive still
# competes with the negatives in the denominator; a lower temperature lowers that floor and sharpens
# the weight on the hardest negatives. Chapter 17 (self-supervised learning) trains an encoder with
# this loss, and chapter 18 (CLIP) uses its two-modality cousin, the symmetric InfoNCE loss between
# images and captions; the experiments belong there.
#
# Set prediction needs one more ingredient: before a loss can compare a *set* of predicted boxes with a
# set of targets, each target is paired with one prediction by an optimal one-to-one matching (DETR's
# Hungarian set loss). [Chapter 08](../08_detection/08_detection.ipynb) teaches it, where detection uses it.
#
# ## Summary
#
# | loss | task | formula (per element or sample) | PyTorch / course_lib |
# |---|---|---|---|
# | L1 (MAE) | regression, restoration | $\frac1N\sum\lvert\hat y - y\rvert$; minimiser: median | `F.l1_loss` |
# | L2 (MSE) | regression | $\frac1N\sum(\hat y - y)^2$; minimiser: mean (blur) | `F.mse_loss` |
# | Huber / smooth L1 | robust regression, boxes | quadratic below $\delta$, linear above | `F.huber_loss`, `F.smooth_l1_loss` |
# | BCE | binary, multi-label | $\log(1 + e^z) - yz$ on logits | `F.binary_cross_entropy_with_logits` |
# | CE | multi-class | $-z_c + \log\sum_k e^{z_k}$; targets $0..M-1$ | `F.cross_entropy` (logits) |
# | MSLE | non-negative targets over decades | $\frac1N\sum(\log(1+\hat y) - \log(1+y))^2$ | `losses.msle` |
# | KL | match a distribution | $\sum p \log(p/q) = H(p,q) - H(p)$ | `losses.kl_divergence`, `F.kl_div(log q, p)` |
# | feature (perceptual) | restoration, style transfer | $\frac{1}{CHW}\lVert\phi(\hat y) - \phi(y)\rVert^2$ | `losses.feature_loss` |
# | style | style transfer, textures | $\frac{1}{4N^2M^2}\sum(G - A)^2$ per layer | `losses.gram_matrix`, `losses.style_loss` |
# | identity | face editing and inversion | $1 - \cos(R(x), R(\hat x))$ | `losses.identity_loss` |
# | adversarial | realistic outputs | $-\log D(G(z))$ (non-saturating) | chapter 10 |
# | IoU / GIoU | box regression | $1 - \mathrm{IoU}$, $1 - \mathrm{GIoU}$ | `losses.giou_loss`, `tvops.generalized_box_iou_loss` |
# | NT-Xent | self-supervised | softmax CE over the other $2N-1$ batch samples | `losses.nt_xent` |
# | Hungarian | set prediction (DETR) | loss after an optimal one-to-one matching | chapter 08 |
#
# - The loss decides what the model converges to: L2 gives the conditional mean (grey stripes, blur),
#   L1 the conditional median. Robustness to outliers follows from the same gradients.
# - Write classification losses on logits (`*_with_logits`, `F.cross_entropy`); the probability
#   versions hit $\log 0$ once a probability rounds to 0 or 1 (or clamp silently).
# - A loss value depends on its units and reduction: bits or nats, sum or mean.
# - CE and KL differ by the constant $H(p)$ when the target is fixed, and then give the same gradient.
# - Losses through a feature network compare layout (feature loss) or statistics (Gram/style loss).
# - A loss must give gradients where the model starts: 1 − IoU is flat for disjoint boxes, 1 − GIoU is
#   not.
# - Contrastive losses compare a prediction with the other samples of the batch rather than with one
#   fixed target; set-prediction losses (chapter 08) first match predictions to targets.
#
# ## Exercises
#
# Where the answer is code or a number, the exercise gives a stub and a check from
# `course_lib.exercises` that says what is wrong (chapter 00 explains the pattern); the collapsed
# solution below it passes the same check.
#
# ### Exercise 1: the L1 minimiser is a median
#
# Show that $c \mapsto \frac1N\sum_i |c - y_i|$ is minimised by a median of the $y_i$: its slope at
# any $c$ that is not a data point is (number of $y_i$ below $c$ − number above)$/N$. Write that slope
# by counting, as `l1_slope(c, y)`; the check compares it with autograd's derivative of the mean
# absolute error. Then check the claim numerically: for 101 random values the minimiser on a fine
# grid is their median; for 100 values, every $c$ between the two middle values is a minimiser.

# %%
g_ex = torch.Generator().manual_seed(1)
# skewed (exponential) data
values = -torch.log(torch.rand(101, generator=g_ex, dtype=torch.float64))
slope_cases = [
    (torch.tensor(c, dtype=torch.float64), values) for c in (0.05, 0.7, 2.5)
]
slope_cases.append((torch.tensor(0.7, dtype=torch.float64), values[:100]))


def autograd_slope(c, y):
    return torch.func.grad(lambda t: (t - y).abs().mean())(c)


def l1_slope(c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code: count, no autograd


exercises.check_function(l1_slope, slope_cases, reference=autograd_slope)


# %% tags=["hide-cell"]
# Solution. d/dc |c - y_i| = sign(c - y_i), so the slope is (#{y_i < c} - #{y_i > c}) / N. It is
# negative while fewer than half of the points lie below c and positive once more than half do, so the
# minimum is where the counts balance: at the middle value (odd N) or anywhere between the two middle
# values (even N), where the slope is exactly 0.
def l1_slope(c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((y < c).sum() - (y > c).sum()) / len(y)


exercises.check_function(
    l1_slope, slope_cases, reference=autograd_slope
).assert_passed()
grid_c = torch.linspace(0, 6, 30001, dtype=torch.float64)


def l1_risk(v):
    return (grid_c[:, None] - v).abs().mean(1)


best = grid_c[l1_risk(values).argmin()]
assert abs(best - values.median()) < 1e-3, (best, values.median())
even = values[:100].sort().values
risk_even = l1_risk(even)
flat = grid_c[(risk_even - risk_even.min()).abs() < 1e-12]
print(
    f"odd N: grid minimiser {best.item():.4f}, median {values.median().item():.4f}, "
    f"mean {values.mean().item():.4f}"
)
print(
    f"even N: minimisers span [{flat.min().item():.4f}, {flat.max().item():.4f}], "
    f"middle values {even[49].item():.4f} and {even[50].item():.4f}"
)

# %% [markdown]
# ### Exercise 2: focal loss
#
# In detection, most candidate boxes are easy background, and their many small losses can drown the
# few hard examples. The focal loss of Lin et al. (2017) multiplies the BCE by $(1 - p_t)^\gamma$,
# where $p_t$ is the predicted probability of the true label, and weights the classes with
# $\alpha_t$ ($\alpha$ for label 1, $1 - \alpha$ for label 0): $\mathrm{FL} = -\alpha_t (1 - p_t)^\gamma
# \log p_t$, averaged. Implement it on logits (use `F.binary_cross_entropy_with_logits` for
# $-\log p_t$); the check compares it with `torchvision.ops.sigmoid_focal_loss`. Then compute how
# much an easy example ($p_t = 0.9$) and a hard one ($p_t = 0.1$) are down-weighted for $\gamma = 2$.

# %%
z_ex = torch.randn(100, generator=g_ex) * 3
y_ex = (torch.rand(100, generator=g_ex) < 0.2).float()
focal_cases = [(z_ex, y_ex), (z_ex, y_ex, 0.5, 1.0), (z_ex, y_ex, 0.25, 0.0)]


def torchvision_focal(z, y, alpha=0.25, gamma=2.0):
    return tvops.sigmoid_focal_loss(
        z, y, alpha=alpha, gamma=gamma, reduction="mean"
    )


def focal_loss(z, y, alpha=0.25, gamma=2.0):
    raise NotImplementedError  # your code: the mean focal loss


exercises.check_function(focal_loss, focal_cases, reference=torchvision_focal)


# %% tags=["hide-cell"]
def focal_loss(z, y, alpha=0.25, gamma=2.0):
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")  # -log p_t
    p = torch.sigmoid(z)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


exercises.check_function(
    focal_loss, focal_cases, reference=torchvision_focal
).assert_passed()
for p_t in (0.9, 0.1):
    print(f"p_t = {p_t}: modulating factor (1 - p_t)^2 = {(1 - p_t) ** 2:.2f}")
print(
    "an easy example's loss is scaled by 0.01, a hard one's by 0.81: 81 times more relative weight"
)

# %% [markdown]
# ### Exercise 3: Dice loss (a preview of chapter 07)
#
# Segmentation often uses the soft **Dice loss**
# $1 - \frac{2\sum_i p_i g_i + \epsilon}{\sum_i p_i + \sum_i g_i + \epsilon}$ on predicted probabilities
# $p$ and a binary mask $g$, summed over the last two dimensions (one loss per image of a batch).
# Implement it. For binary $p$ the Dice coefficient is $2|A\cap B|/(|A|+|B|)$, and it relates to the
# IoU $J$ by $D = 2J/(1+J)$: the check uses this on rectangular masks, whose IoU as boxes comes from
# `ops.paired_box_iou`.


# %%
def box_mask(box, size=32):
    """A binary [size, size] mask that is 1 inside the box (x1, y1, x2, y2) with integer corners."""
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = torch.zeros(size, size)
    mask[y1:y2, x1:x2] = 1
    return mask


boxes_p = torch.tensor(
    [[4.0, 4.0, 20.0, 20.0], [4.0, 4.0, 20.0, 20.0], [0.0, 0.0, 8.0, 30.0]]
)
boxes_g = torch.tensor(
    [[8.0, 10.0, 24.0, 26.0], [4.0, 4.0, 20.0, 20.0], [5.0, 20.0, 31.0, 31.0]]
)
masks_p = torch.stack([box_mask(b) for b in boxes_p])  # [3, 32, 32]
masks_g = torch.stack([box_mask(b) for b in boxes_g])
jaccard = ops.paired_box_iou(boxes_p, boxes_g)  # [3]
dice_cases = [(masks_p[0], masks_g[0]), (masks_p, masks_g)]
dice_expected = [
    1 - 2 * jaccard[0] / (1 + jaccard[0]),
    1 - 2 * jaccard / (1 + jaccard),
]


def dice_loss(prob, mask, eps=1e-6):
    raise NotImplementedError  # your code: one loss per image, over the last two dimensions


exercises.check_function(dice_loss, dice_cases, expected=dice_expected)


# %% tags=["hide-cell"]
def dice_loss(prob, mask, eps=1e-6):
    inter = (prob * mask).sum(dim=(-2, -1))
    return 1 - (2 * inter + eps) / (
        prob.sum(dim=(-2, -1)) + mask.sum(dim=(-2, -1)) + eps
    )


exercises.check_function(
    dice_loss, dice_cases, expected=dice_expected
).assert_passed()
dice = 1 - dice_loss(masks_p[0], masks_g[0])
torch.testing.assert_close(
    dice,
    2 * (masks_p[0] * masks_g[0]).sum() / (masks_p[0].sum() + masks_g[0].sum()),
)
print(
    f"Dice {dice.item():.4f}, IoU {jaccard[0].item():.4f}, "
    f"2J/(1+J) = {(2 * jaccard[0] / (1 + jaccard[0])).item():.4f}"
)

# %% [markdown]
# ### Exercise 4: what label smoothing does to a classifier
#
# With label smoothing $\varepsilon$ over $M$ classes, no classifier that minimises the loss is more
# confident than a ceiling. Give `max_confidence`, the largest softmax probability of the logits that
# minimise `F.cross_entropy(..., label_smoothing=0.2)` for one example of 10 classes; the check
# compares it with a numerical minimisation (L-BFGS on the 10 logits). Then train two
# softmax-regression classifiers (one linear layer) on the digits, with `label_smoothing=0` and
# `label_smoothing=0.2`, for 150 full-batch Adam steps. Compare their test accuracy, their mean
# confidence (the largest softmax probability) against the ceiling, and their mean logit gap (largest
# minus second-largest logit).

# %%
best_logits = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
lbfgs = torch.optim.LBFGS(
    [best_logits], max_iter=200, line_search_fn="strong_wolfe"
)


def smoothed_loss():
    lbfgs.zero_grad()
    loss = F.cross_entropy(best_logits, torch.tensor([0]), label_smoothing=0.2)
    loss.backward()
    return loss


lbfgs.step(smoothed_loss)
numerical_confidence = best_logits.detach().softmax(1).max().item()

max_confidence = exercises.TODO  # your value
exercises.check_value(
    max_confidence, numerical_confidence, atol=1e-4, name="max_confidence"
)

# %% tags=["hide-cell"]
# the optimum of the smoothed CE is the smoothed target itself
max_confidence = 1 - 0.2 + 0.2 / 10
exercises.check_value(
    max_confidence, numerical_confidence, atol=1e-4, name="max_confidence"
).assert_passed()
splits = data.digits_splits(flatten=True)
x_tr, y_tr = splits.tensors("train")
x_te, y_te = splits.tensors("test")
results = {}
for eps_s in (0.0, 0.2):
    torch.manual_seed(0)
    clf = nn.Linear(64, 10).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(150):
        loss = F.cross_entropy(
            clf(x_tr.to(device)), y_tr.to(device), label_smoothing=eps_s
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = clf(x_te.to(device)).cpu()
    top2 = out.topk(2, dim=1).values
    results[eps_s] = (
        (out.argmax(1) == y_te).float().mean().item(),
        out.softmax(1).max(1).values.mean().item(),
        (top2[:, 0] - top2[:, 1]).mean().item(),
    )
    print(
        f"ε = {eps_s}: accuracy {results[eps_s][0]:.3f}, mean confidence {results[eps_s][1]:.3f}, "
        f"mean logit gap {results[eps_s][2]:.2f}"
    )
assert results[0.2][1] < results[0.0][1] and results[0.2][2] < results[0.0][2]
assert results[0.2][1] < max_confidence, (
    "a smoothed classifier above its ceiling?"
)
# The smoothed loss is minimised at confidence 0.82 and a logit gap of log(0.82 / 0.02) = 3.71; the
# trained model stays below both on average, while the unsmoothed one keeps pushing towards 1 and an
# ever larger gap. The accuracy barely moves: the model is less over-confident, not better at ranking
# the classes.

# %% [markdown]
# ## References
#
# - Huber, P. J. (1964). Robust estimation of a location parameter. *The Annals of Mathematical
#   Statistics*, 35(1), 73–101.
# - Kullback, S., and Leibler, R. A. (1951). On information and sufficiency. *The Annals of
#   Mathematical Statistics*, 22(1), 79–86.
# - Goodfellow, I., Pouget-Abadie, J., Mirza, M., Xu, B., Warde-Farley, D., Ozair, S., Courville, A.,
#   and Bengio, Y. (2014). Generative adversarial nets. *NeurIPS 2014*. arXiv:1406.2661.
# - Gatys, L. A., Ecker, A. S., and Bethge, M. (2016). Image style transfer using convolutional neural
#   networks. *CVPR 2016*.
# - Johnson, J., Alahi, A., and Fei-Fei, L. (2016). Perceptual losses for real-time style transfer and
#   super-resolution. *ECCV 2016*. arXiv:1603.08155.
# - Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J., and Wojna, Z. (2016). Rethinking the Inception
#   architecture for computer vision. *CVPR 2016*. arXiv:1512.00567. (Label smoothing.)
# - Zhao, H., Gallo, O., Frosio, I., and Kautz, J. (2017). Loss functions for image restoration with
#   neural networks. *IEEE Transactions on Computational Imaging*, 3(1), 47–57. arXiv:1511.08861.
# - Ledig, C., et al. (2017). Photo-realistic single image super-resolution using a generative
#   adversarial network. *CVPR 2017*. arXiv:1609.04802.
# - Lin, T.-Y., Goyal, P., Girshick, R., He, K., and Dollár, P. (2017). Focal loss for dense object
#   detection. *ICCV 2017*. arXiv:1708.02002.
# - Rezatofighi, H., Tsoi, N., Gwak, J., Sadeghian, A., Reid, I., and Savarese, S. (2019). Generalized
#   intersection over union: a metric and a loss for bounding box regression. *CVPR 2019*.
#   arXiv:1902.09630.
# - Chen, T., Kornblith, S., Norouzi, M., and Hinton, G. (2020). A simple framework for contrastive
#   learning of visual representations. *ICML 2020*. arXiv:2002.05709.
# - Carion, N., Massa, F., Synnaeve, G., Usunier, N., Kirillov, A., and Zagoruyko, S. (2020). End-to-end
#   object detection with transformers. *ECCV 2020*. arXiv:2005.12872.
# - Richardson, E., Alaluf, Y., Patashnik, O., Nitzan, Y., Azar, Y., Shapiro, S., and Cohen-Or, D.
#   (2021). Encoding in style: a StyleGAN encoder for image-to-image translation. *CVPR 2021*.
#   arXiv:2008.00951. (Identity loss.)
