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
# # 01 · Data preprocessing
#
# Before a single weight is trained, the numbers that go into a network have already been shaped: a
# mean was subtracted, something was divided by a standard deviation, maybe the data were rotated
# onto their principal axes. These steps look like bookkeeping, yet they decide how fast gradient
# descent converges and whether a test score can be trusted at all. This chapter takes each step
# apart on real data: what it computes, why it helps (with a measurement, not a slogan), where the
# usual formulations go wrong, and the one rule that every preprocessing step must obey: its
# statistics are learned from the training split and nothing else.
#
# **Learning objectives.** After this chapter you can:
# - apply the golden rule (fit every statistic on the training split, apply it unchanged to the
#   validation and test splits) and explain what breaks otherwise;
# - subtract a per-feature, scalar or per-channel mean, and say which one fits which data;
# - explain with the chain rule why all-positive inputs restrict the gradient of a neuron, and
#   measure how centring improves the conditioning of a linear least-squares problem;
# - standardize and min-max scale features, and know when it matters;
# - normalize images per channel with `torchvision.transforms.v2.Normalize`, with statistics streamed
#   from the training split or inherited from pretrained weights, in the pipeline or inside the model;
# - compute PCA, PCA whitening and ZCA whitening from the covariance matrix, check them against
#   `course_lib.preprocess.PCA` and scikit-learn, and use PCA to compress the input of a classifier.
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (digits, splits, k-NN);
# linear algebra: mean, variance, covariance matrix, eigenvectors of a symmetric matrix.
#
# **Measured runtime:** 16 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [01_preprocessing.ipynb](01_preprocessing.ipynb) (notebook, with outputs) · [01_preprocessing.py](01_preprocessing.py) (the paired script instructors edit)

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torchvision.transforms import v2

from course_lib import data, exercises, preprocess, runtime, viz

device = runtime.setup(seed=0)

# %% [markdown]
# ## 1. Why preprocess, and the golden rule
#
# A network sees numbers, not images. If every input is positive, if one feature is measured in
# thousands and another in fractions, or if the features are strongly correlated, gradient descent
# has to work harder: its steps are poorly scaled for the shape of the loss. Preprocessing reshapes
# the input so that the optimization problem is better conditioned. We will measure this in
# sections 3 and 4.
#
# Every preprocessing step has **statistics**: a mean, a standard deviation, a minimum and maximum,
# a covariance matrix. Those statistics are parameters of the model, and like the weights they are
# learned from the training data only:
#
# 1. compute the statistics on the training split;
# 2. apply them, unchanged, to the training, validation and test splits, and later to every image
#    the deployed model receives.
#
# Why be strict? The test split stands in for images the model has never seen. If the test images
# help compute the mean, information about them has leaked into the model, and the test score no
# longer measures what happens on truly new data. The deployed model makes the point clearest:
# it receives one image at a time and cannot compute a mean or a standard deviation from a batch
# of one. The statistics must be fixed before deployment, so they must come from the training set.
#
# We work with the scikit-learn digits (8x8 grey images, chapter 00) split 60/20/20, stratified,
# with the values kept raw in [0, 1] and flattened to 64 features.

# %%
# NBVAL_CHECK_OUTPUT
splits = data.digits_splits(normalize=None, flatten=True)
x_train, y_train = splits.tensors("train")
x_val, y_val = splits.tensors("val")
x_test, y_test = splits.tensors("test")
x_all = torch.cat([x_train, x_val, x_test])
print(
    "train",
    tuple(x_train.shape),
    "val",
    tuple(x_val.shape),
    "test",
    tuple(x_test.shape),
)
print(f"pixel range: [{x_train.min():.1f}, {x_train.max():.1f}]")

# %% [markdown]
# Fit the same statistics twice, once on the training split only (correct) and once on all the data
# (leaky), and compare. `data.Normalizer(per="feature")` keeps one mean and one standard deviation
# per pixel; a PCA (section 6) keeps a covariance matrix.

# %%
# NBVAL_CHECK_OUTPUT
norm_train = data.Normalizer(per="feature").fit(x_train)  # correct: train only
# leaky: test images helped
norm_all = data.Normalizer(per="feature").fit(x_all)
pca_train = preprocess.PCA(n_components=5).fit(x_train.double())
pca_all = preprocess.PCA(n_components=5).fit(x_all.double())
print(
    f"max |mean_train - mean_all| per pixel: {(norm_train.mean - norm_all.mean).abs().max():.4f}"
)
print(
    f"max |std_train - std_all| per pixel:   {(norm_train.std - norm_all.std).abs().max():.4f}"
)
print(
    "top-5 PCA variances, train:",
    [round(v, 4) for v in pca_train.explained_variance_.tolist()],
)
print(
    "top-5 PCA variances, all:  ",
    [round(v, 4) for v in pca_all.explained_variance_.tolist()],
)

# %% [markdown]
# The differences are small here because the three splits come from the same distribution and the
# training split is large. They are not zero, and the rule is about principle, not size: with a
# small training set, with data that drift over time, or with a statistic that uses the labels, the
# same mistake can change the test score by a lot (exercise 1 measures a related failure: statistics
# computed on batches of test images).
#
# Correct usage: the normalizer fitted on the training split transforms every split. Below we check
# that the test images are transformed with the training mean and standard deviation, that
# `data.digits_splits` does the same thing internally, and that the transformed test set is, as
# expected, *not* exactly centred: it is new data seen through old statistics.

# %%
# NBVAL_CHECK_OUTPUT
mu_train, sd_train = x_train.mean(0), x_train.std(0)
x_test_n = norm_train.transform(x_test)
torch.testing.assert_close(
    x_test_n, (x_test - mu_train) / (sd_train + norm_train.eps)
)
lib_test = data.digits_splits(normalize="feature", flatten=True).tensors(
    "test"
)[0]
# digits_splits fits on train only, too
torch.testing.assert_close(lib_test, x_test_n)
assert not torch.allclose(norm_all.transform(x_test), x_test_n), (
    "leaky and correct statistics agree?"
)
print(
    f"|mean| over train of the transformed train set: {norm_train.transform(x_train).mean().abs():.4f}"
)
print(f"mean over test of the transformed test set:   {x_test_n.mean():.4f}")

# %% [markdown]
# ## 2. Mean subtraction
#
# The simplest and most common step: subtract a mean so that the data are centred at zero,
# $x \leftarrow x - \mu$. There are three choices of $\mu$:
#
# - **per feature** (a "mean image"): $\mu_j = \frac{1}{N}\sum_{n=1}^{N} x_{nj}$, one value per pixel
#   (and channel). Natural for aligned data of a fixed size, such as digits or cropped faces.
# - **one scalar** for all pixels: $\mu = \frac{1}{ND}\sum_{n,j} x_{nj}$.
# - **per channel**: one mean per colour channel, averaged over all images *and* all positions. This
#   is what VGG and almost every ImageNet model do.
#
# A warning about a bug that appears in circulated lecture notes: `X = np.mean(X, axis=0)` does not
# centre anything; it *replaces* the data matrix by its mean row. The intended line is
# `X -= np.mean(X, axis=0)` (or `X = X - X.mean(0)`). In PyTorch, prefer the out-of-place form:
# `x -= mean` would silently modify the tensor stored in your dataset as well.

# %%
# NBVAL_CHECK_OUTPUT
wrong = x_train.mean(0)  # the bug: the data are gone, one mean row is left
x_centred = x_train - x_train.mean(0)  # correct (out of place)
print("wrong:", tuple(wrong.shape), " correct:", tuple(x_centred.shape))
print(
    f"largest |column mean| after centring is below 1e-6: {bool(x_centred.mean(0).abs().max() < 1e-6)}"
)
assert x_centred.mean(0).abs().max() < 1e-6

# %% [markdown]
# The mean digit is a blurred ring: the average of ten classes of strokes. Subtracting it leaves
# each digit as a pattern of "more ink than usual" (red) and "less ink than usual" (blue).

# %% tags=["hide-input"]
mean_img = mu_train.view(8, 8)
fig, axes = plt.subplots(2, 6, figsize=(8.5, 3.2))
for ax in axes.flat:
    ax.axis("off")
axes[0, 0].imshow(mean_img, cmap="gray", vmin=0, vmax=1)
axes[0, 0].set_title("mean image\n(train)")
for i in range(5):
    axes[0, i + 1].imshow(x_train[i].view(8, 8), cmap="gray", vmin=0, vmax=1)
    axes[0, i + 1].set_title(f"raw, label {int(y_train[i])}")
    axes[1, i + 1].imshow(
        x_centred[i].view(8, 8), cmap="RdBu_r", vmin=-0.75, vmax=0.75
    )
    axes[1, i + 1].set_title("centred")
axes[1, 0].text(
    0.5,
    0.5,
    "centred =\nraw - mean\n(red > 0,\nblue < 0)",
    ha="center",
    va="center",
)
fig.suptitle("Mean subtraction per feature on the digits")
plt.show()

# %% [markdown]
# For colour photos we use a tiny "dataset" of six bundled photos, resized to 64x64. The per-pixel
# mean image is a brownish blur that depends on where things happen to be in these six photos; the
# per-channel mean is just three numbers, the average red, green and blue. We compare them with the
# per-channel means of ImageNet that VGG-style models subtract (0.485, 0.456, 0.406 in [0, 1], that
# is 123.7, 116.3, 103.5 on the 0-255 scale).

# %%
# NBVAL_CHECK_OUTPUT
photo_names = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
]
# [6, 3, 64, 64]
photos = torch.stack([data.sample_image(n, size=64) for n in photo_names])
# from scratch: average over images and positions
channel_mean = photos.mean(dim=(0, 2, 3))
pixel_mean = photos.mean(dim=0)  # [3, 64, 64], the "mean image"
scalar_mean = photos.mean()
lib_mean = data.Normalizer(per="channel").fit(photos).mean.flatten()
torch.testing.assert_close(channel_mean, lib_mean)
imagenet_mean = torch.tensor([0.485, 0.456, 0.406])
print("photos:", tuple(photos.shape))
print(
    "per-channel mean (R, G, B):", [round(v, 3) for v in channel_mean.tolist()]
)
print(
    f"scalar mean: {scalar_mean:.3f};  per-pixel mean image: {tuple(pixel_mean.shape)}"
)

# %% tags=["hide-input"]
fig = plt.figure(figsize=(10, 3.0))
top, bottom = fig.subfigures(1, 2, width_ratios=[2.6, 1])
axes = top.subplots(2, 4)
for ax in axes.flat:
    ax.axis("off")
for ax, img, name in zip(axes.flat[:6], photos, photo_names, strict=True):
    ax.imshow(img.permute(1, 2, 0))
    ax.set_title(
        {
            "hubble_deep_field": "hubble",
            "immunohistochemistry": "histology",
        }.get(name, name),
        fontsize=8,
    )
axes.flat[6].imshow(pixel_mean.permute(1, 2, 0))
axes.flat[6].set_title("per-pixel mean", fontsize=8)
centred_photo = (photos[0] - channel_mean[:, None, None] + 0.5).clamp(0, 1)
axes.flat[7].imshow(centred_photo.permute(1, 2, 0))
axes.flat[7].set_title("astronaut minus\nchannel mean (+0.5)", fontsize=8)
ax = bottom.subplots()
pos = np.arange(3)
ax.bar(pos - 0.2, channel_mean, width=0.4, color=viz.color(0), label="6 photos")
ax.bar(
    pos + 0.2, imagenet_mean, width=0.4, color=viz.color(1), label="ImageNet"
)
ax.set_xticks(pos, ["R", "G", "B"])
ax.set_ylabel("mean value in [0, 1]")
ax.set_title("per-channel means")
ax.set_ylim(0, 0.65)
ax.legend(loc="upper right", ncols=2, fontsize=8)
plt.show()

# %% [markdown]
# Which mean for which data? A per-pixel mean assumes that position $j$ means the same thing in every
# image. That holds for aligned digits and faces, but not for photos: a convolutional network
# slides the same filters over every position, images are cropped and flipped during training, and
# test images may have another size. The per-channel mean is the same at every position, so it
# survives all of that, and for large photo collections the per-pixel mean image is nearly constant
# anyway. A single scalar is the crudest choice and is enough when the channels have similar
# statistics (grey images).
#
# ## 3. Why zero mean: the sign of the gradient
#
# Take one neuron with inputs $x_1, \dots, x_D$, pre-activation $z = \sum_i w_i x_i + b$, output
# $f(z)$ and a loss $L$. The chain rule gives, for one example,
#
# $$
# \frac{\partial L}{\partial w_i} = \frac{\partial L}{\partial z}\,\frac{\partial z}{\partial w_i}
# = \frac{\partial L}{\partial z}\, x_i .
# $$
#
# The factor $\partial z / \partial w_i = x_i$ does not depend on the activation $f$ (a sigmoid, a
# ReLU, anything); $f$ only enters through the upstream gradient $\partial L / \partial z$, which is a
# single number per example. So if all inputs are positive (raw pixels, or the outputs of a sigmoid
# or ReLU layer), **every component of one example's gradient has the sign of**
# $\partial L/\partial z$: the update asks all weights of the neuron to increase together or to
# decrease together.
#
# This is a statement about one example. A mini-batch gradient is a sum over examples whose
# upstream gradients have different signs, and the sum can have components of both signs. We check
# both claims on a sigmoid neuron with the binary cross-entropy loss, for which
# $\partial L / \partial z = \sigma(z) - y$, with inputs drawn from $U[0.1, 1.1]^3$. The per-example
# gradients come from autograd (`torch.func.vmap` of `torch.func.grad`) and are compared with the
# formula.

# %%
# NBVAL_CHECK_OUTPUT
gen = torch.Generator().manual_seed(0)
n_ex, d_in = 512, 3
xs = 0.1 + torch.rand(n_ex, d_in, generator=gen)  # all inputs positive
ys = torch.randint(0, 2, (n_ex,), generator=gen).float()
w_neuron = torch.randn(d_in, generator=gen)
b_neuron = torch.zeros(())


def neuron_loss(w, b, x, y):
    """Binary cross-entropy of one sigmoid neuron on one example."""
    return F.binary_cross_entropy_with_logits(x @ w + b, y)


per_example = torch.func.vmap(
    torch.func.grad(neuron_loss), in_dims=(None, None, 0, 0)
)(w_neuron, b_neuron, xs, ys)  # [512, 3], one gradient per example
upstream = torch.sigmoid(xs @ w_neuron + b_neuron) - ys  # dL/dz per example
# autograd = chain rule
torch.testing.assert_close(per_example, upstream[:, None] * xs)
same_sign = (torch.sign(per_example) == torch.sign(upstream)[:, None]).all(
    dim=1
)
print(" dL/dz    signs of dL/dw_i")
for i in range(5):
    signs = " ".join("+" if g > 0 else "-" for g in per_example[i])
    print(f"{upstream[i]:+.3f}    {signs}")
print(
    f"examples whose gradient components all share the sign of dL/dz: {int(same_sign.sum())} / {n_ex}"
)
assert same_sign.all()

# 32 mini-batches of 16 examples
batch_grads = per_example.view(-1, 16, d_in).sum(1)
mixed = (batch_grads > 0).any(1) & (batch_grads < 0).any(1)
print(
    f"mini-batches of 16 whose summed gradient has mixed signs: {int(mixed.sum())} / {len(mixed)}"
)
assert mixed.any(), "expected at least one mixed-sign mini-batch gradient"

# %% tags=["hide-input"]
viz.diagram(
    {
        "x1": (0, 1.1, "$x_1$", "io"), "x2": (0, 0, "$x_2$", "io"), "x3": (0, -1.1, "$x_3$", "io"),
        "z": (2.6, 0, "$z = w^\\top x + b$", "linear"), "f": (5.0, 0, "$\\sigma(z)$", "act"),
        "L": (7.4, 0, "BCE loss $L$", "head"), "y": (7.4, -1.3, "label $y$", "io"),
    },
    [("x1", "z", "-", "$w_1$"), ("x2", "z", "-", "$w_2$"), ("x3", "z", "-", "$w_3$"), ("z", "f"), ("f", "L"),
     ("y", "L", "--")],
    block_size=(1.7, 0.6), fontsize=10,
    title="The neuron of this section: $\\partial L/\\partial w_i = (\\partial L/\\partial z)\\, x_i$",
)  # fmt: skip
plt.show()

# %% [markdown]
# In two dimensions the consequence is easy to see. Fit a linear neuron $y = w^\top x$ (no bias) to
# targets made by $w^* = (1, -1)$, with inputs $x \sim U[1, 2]^2$, by stochastic gradient descent with
# one example per step, starting from $w = (0, 0)$. Each step moves $w$ along $\pm x$, a direction
# inside the shaded double cone (the directions of the inputs, in the first and third quadrants).
# The optimum lies to the lower right, in the fourth quadrant, which no single step can head for:
# the path has to zig-zag. With centred inputs the steps can point anywhere and the path heads
# straight for $w^*$.
#
# A fair comparison needs care with the learning rate. One SGD step on example $x$ multiplies the
# error along $x$ by $1 - \eta \lVert x\rVert^2$, so the largest stable rate is about
# $2/\lVert x\rVert^2$: about 0.26 for raw inputs (where $\lVert x\rVert^2$ reaches 8) and ten
# times more for centred ones. Comparing both at one rate would favour one of them by construction,
# so we run each on the same grid of learning rates (0.01 to 7, in steps of $\sqrt 2$) and show each
# at its own best: the rate that first brings $\lVert w - w^*\rVert$ below 0.1 within one pass.

# %%
gen = torch.Generator().manual_seed(1)
x_zz = 1 + torch.rand(200, 2, generator=gen, dtype=torch.float64)
w_star = torch.tensor([1.0, -1.0], dtype=torch.float64)


def sgd_path(x, lr):
    """Per-example SGD on the squared error of y = w.x, one pass; returns the iterates [N + 1, 2]."""
    w, path = torch.zeros(2, dtype=torch.float64), []
    for xi in x:
        path.append(w.clone())
        w = w - lr * (w @ xi - w_star @ xi) * xi  # a step along +-xi
    path.append(w.clone())
    return torch.stack(path)


def steps_to(path, tol=0.1):
    """Number of steps after which the path stays within tol of w* (len(path) if it never gets there)."""
    far = ((path - w_star).norm(dim=1) >= tol).nonzero()
    return int(far.max()) + 1 if len(far) else 0


zz_lrs = [0.01 * 2 ** (k / 2) for k in range(20)]  # 0.01 ... 7.2
paths, zz_best = {}, {}
for name, x_in in [
    ("raw inputs in [1, 2]$^2$", x_zz),
    ("centred inputs", x_zz - x_zz.mean(0)),
]:
    steps_per_lr = [steps_to(sgd_path(x_in, lr)) for lr in zz_lrs]
    best = min(range(len(zz_lrs)), key=lambda i: steps_per_lr[i])  # noqa: B023
    paths[name], zz_best[name] = (
        sgd_path(x_in, zz_lrs[best]),
        (zz_lrs[best], steps_per_lr[best]),
    )
    same_lr = steps_to(sgd_path(x_in, zz_lrs[10]))
    print(
        f"{name:>24}: best lr {zz_lrs[best]:.2f} -> {steps_per_lr[best]} steps; at lr 0.32: {same_lr} steps"
    )

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
for ax, (name, p) in zip(axes, paths.items(), strict=True):
    if name.startswith(
        "raw"
    ):  # the double cone of directions +-x for x in [1, 2]^2
        ang = np.linspace(np.arctan(0.5), np.arctan(2.0), 30)
        for sgn in (1, -1):
            cone = np.concatenate(
                [[[0, 0]], sgn * 3 * np.stack([np.cos(ang), np.sin(ang)], 1)]
            )
            ax.fill(
                cone[:, 0], cone[:, 1], color=viz.color(5), alpha=0.25, lw=0
            )
        ax.text(0.75, 0.55, "directions\nof +x", color=viz.color(0), fontsize=9)
        ax.text(
            -1.2, -0.95, "directions\nof -x", color=viz.color(0), fontsize=9
        )
    lr_best, n_close = zz_best[name]
    p = p.numpy()
    ax.plot(
        p[:, 0],
        p[:, 1],
        "-o",
        color=viz.color(0),
        ms=2,
        lw=0.8,
        label="SGD path (one pass)",
    )
    ax.plot(*w_star, "*", color=viz.color(3), ms=14, label="optimum $w^*$")
    ax.plot(0, 0, "s", color=viz.color("reference"), ms=6, label="start")
    ax.set(
        xlim=(-1.3, 1.6),
        ylim=(-1.6, 1.3),
        xlabel="$w_1$",
        ylabel="$w_2$",
        aspect="equal",
    )
    ax.set_title(
        f"{name}, lr {lr_best:.2f}: {n_close} steps to $|w - w^*| < 0.1$",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=8)
fig.suptitle(
    "Same-sign updates force a zig-zag towards an optimum in the fourth quadrant (each at its best lr)"
)
plt.show()

# %%
(lr_raw, n_raw), (lr_cen, n_cen) = zz_best.values()
assert n_cen * 4 < n_raw, (
    f"centred {n_cen} vs raw {n_raw} steps, each at its best learning rate"
)
assert lr_cen > 4 * lr_raw, (
    f"best learning rates: raw {lr_raw:.2f}, centred {lr_cen:.2f}"
)

# %% [markdown]
# Each at its own best learning rate, centring cuts the steps several-fold, and its best rate is
# about ten times larger. The printout also shows where the gain comes from: at one and the same
# rate (0.32, the best for raw inputs) the two need about as many steps. Centring does not make a
# given step better; it removes the one large input direction, the mean, that forbids larger steps.
# Section 4 finds the same with full-batch gradient descent.

# %% [markdown]
# ## 4. Conditioning: the experiment of this chapter
#
# The sign argument is about single examples. With the full batch, the benefit of centring shows
# up as **conditioning**. For a linear neuron without bias and the mean squared error
#
# $$
# L(w) = \frac{1}{2N}\lVert Xw - y\rVert^2, \qquad \nabla L = \frac{1}{N}X^\top(Xw - y), \qquad
# H = \nabla^2 L = \frac{1}{N}X^\top X ,
# $$
#
# gradient descent with step size $\eta = 1/\lambda_{\max}(H)$ shrinks the error along the eigenvector
# of eigenvalue $\lambda_k$ by a factor $1 - \lambda_k/\lambda_{\max}$ per step. The slowest direction
# shrinks by $1 - 1/\kappa$, where $\kappa = \lambda_{\max}/\lambda_{\min}$ is the condition number, so
# the number of steps grows like $\kappa$.
#
# For raw inputs $H$ is the *uncentred* second moment $\Sigma + \mu\mu^\top$. With
# $x \sim U[1,2]^2$: $\mu = (1.5, 1.5)$, $\Sigma = \tfrac{1}{12}I$, and $\mu\mu^\top$ adds
# $\lVert\mu\rVert^2 = 4.5$ to the eigenvalue along $(1,1)$. Hence
# $\kappa \approx (4.5 + \tfrac{1}{12}) / \tfrac{1}{12} = 55$. Centring removes $\mu\mu^\top$ and
# leaves $H = \Sigma$, with $\kappa \approx 1$. Let us count the steps to $\lVert w - w^*\rVert < 10^{-3}$.

# %%
gen = torch.Generator().manual_seed(0)
# x ~ U[1, 2]^2
x_lin = 1 + torch.rand(1000, 2, generator=gen, dtype=torch.float64)
w_start = torch.tensor([-1.5, 0.0], dtype=torch.float64)


def gd_until(x, tol=1e-3, max_steps=10_000):
    """Full-batch GD at lr = 1 / lambda_max(H) on L = |Xw - Xw*|^2 / 2N; returns (path, kappa)."""
    y = x @ w_star
    hess = x.T @ x / len(x)
    lam = torch.linalg.eigvalsh(hess)  # ascending
    lr = 1.0 / lam[-1]
    w, path = w_start.clone(), [w_start.clone()]
    while (w - w_star).norm() >= tol and len(path) <= max_steps:
        w = w - lr * x.T @ (x @ w - y) / len(x)
        path.append(w.clone())
    return torch.stack(path), (lam[-1] / lam[0]).item()


path_raw, kappa_raw = gd_until(x_lin)
path_cen, kappa_cen = gd_until(x_lin - x_lin.mean(0))
steps_raw, steps_cen = len(path_raw) - 1, len(path_cen) - 1
print(f"condition number: raw {kappa_raw:.1f}, centred {kappa_cen:.2f}")
print(f"steps to |w - w*| < 1e-3: raw {steps_raw}, centred {steps_cen}")

# %%
assert steps_raw >= 10 * steps_cen, (
    f"raw {steps_raw} vs centred {steps_cen} steps: expected >= 10x"
)
assert 45 < kappa_raw < 65 and kappa_cen < 1.2, (
    f"condition numbers {kappa_raw:.1f}, {kappa_cen:.2f}"
)
print(f"centring needs {steps_raw / steps_cen:.0f}x fewer gradient steps")

# %% tags=["hide-input"]
g1, g2 = np.meshgrid(np.linspace(-2.0, 2.0, 200), np.linspace(-2.2, 1.8, 200))
grid_w = torch.from_numpy(np.stack([g1.ravel(), g2.ravel()], 1))
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), width_ratios=[1, 1, 0.6])
for ax, x_in, path, name, kappa in [
    (axes[0], x_lin, path_raw, "raw inputs", kappa_raw),
    (axes[1], x_lin - x_lin.mean(0), path_cen, "centred inputs", kappa_cen),
]:
    hess = x_in.T @ x_in / len(x_in)
    d = grid_w - w_star
    loss = 0.5 * ((d @ hess) * d).sum(1).view(200, 200).numpy()
    ax.contour(g1, g2, loss, levels=np.geomspace(1e-3, loss.max(), 14), colors=viz.color("reference"),
               linewidths=0.6)  # fmt: skip
    p = path.numpy()
    ax.plot(
        p[:, 0],
        p[:, 1],
        "-o",
        color=viz.color(0),
        ms=3,
        lw=1,
        label="GD iterates",
    )
    ax.plot(*w_start, "s", color=viz.color("reference"), ms=6, label="start")
    ax.plot(*w_star, "*", color=viz.color(3), ms=13, label="$w^*$")
    ax.set(xlabel="$w_1$", ylabel="$w_2$", aspect="equal")
    ax.set_title(f"{name}: {len(p) - 1} steps ($\\kappa$ = {kappa:.1f})")
    ax.legend(loc="lower left", fontsize=8)
axes[0].annotate("step 1", path_raw[1].tolist(), xytext=(-1.0, 1.2), fontsize=9,
                 arrowprops={"arrowstyle": "->"})  # fmt: skip
axes[0].annotate(f"steps 2-{steps_raw}: crawling\nalong the valley", path_raw[60].tolist(), xytext=(0.3, 0.9),
                 fontsize=9, arrowprops={"arrowstyle": "->"})  # fmt: skip
bars = axes[2].bar(
    ["raw", "centred"],
    [kappa_raw, kappa_cen],
    color=[viz.color(0), viz.color(2)],
)
axes[2].bar_label(bars, fmt="%.1f")
axes[2].axhline(
    55, color=viz.color("reference"), ls="--", lw=0.8, label="theory: 55"
)
axes[2].set_yscale("log")
axes[2].set_ylim(0.8, 150)
axes[2].set_ylabel("condition number of $H$")
axes[2].set_title("conditioning")
axes[2].legend(loc="upper right", fontsize=8)
fig.suptitle(
    "Full-batch gradient descent at lr = $1/\\lambda_{\\max}$ on the same problem"
)
plt.show()

# %% [markdown]
# On raw inputs the first step jumps to the floor of a long narrow valley (the steep direction is
# $(1,1)$, the direction of the mean) and then crawls along it for hundreds of steps. On centred
# inputs the loss surface is nearly round and three steps suffice.
#
# ### An honest caveat: softmax regression on the digits
#
# The 2-D problem was built to show the effect at its largest. How much does preprocessing help a
# real model? We train softmax regression (a linear layer with a bias, cross-entropy loss) on the
# 64 digit pixels with full-batch gradient descent, for three inputs: raw, centred, and standardized
# per pixel (section 5). Because the best learning rate differs between the three, we run each on a
# grid of learning rates and count the steps to a training loss below 0.1. To train all learning
# rates at once, as one batch of independent models, the gradient step is written by hand: the
# gradient of the mean cross-entropy with respect to the logits is $(\mathrm{softmax} - \text{one-hot})/N$
# (chapter 03 derives it); one step is checked against autograd.

# %% tags=["hide-input"]
viz.chain_diagram(
    [("digit $x$\n[64]", "io"), ("linear 64 → 10\n$W$ [64, 10], $b$ [10]", "linear"),
     ("log-softmax\n[10]", "act"), ("cross-entropy\nwith the label", "head")],
    block_size=(2.0, 0.7), title="Softmax regression: one linear layer and a loss",
)  # fmt: skip
plt.show()


# %%
def softmax_regression_gd(x, y, lrs, steps):
    """Full-batch GD on softmax regression for M independent models at once.

    Args:
        x: Tensor[M, N, D], the training inputs of each model; y: Tensor[N] labels in 0..9;
        lrs: Tensor[M], one learning rate per model; steps: number of gradient steps.
    Returns:
        the training-loss curves Tensor[M, steps] (on the CPU), weights W [M, D, 10] and biases b [M, 1, 10].
    """
    m, n, d = x.shape
    w = torch.zeros(m, d, 10, device=x.device)
    b = torch.zeros(m, 1, 10, device=x.device)
    onehot = F.one_hot(y, 10).to(x.dtype)
    lr, xt = lrs.to(x)[:, None, None], x.transpose(1, 2)
    curves = []
    for _ in range(steps):
        logits = x @ w + b
        logits = logits - logits.amax(-1, keepdim=True)
        logp = logits - logits.exp().sum(-1, keepdim=True).log()  # log-softmax
        # mean cross-entropy of each model
        curves.append(-(logp * onehot).sum(-1).mean(-1))
        g = (
            logp.exp() - onehot
        ) / n  # gradient of the mean cross-entropy w.r.t. the logits
        w -= lr * (xt @ g)
        b -= lr * g.sum(1, keepdim=True)
    return torch.stack(curves, 1).cpu(), w, b


# one hand-written step from W = 0, b = 0 with lr = 1 must equal minus the autograd gradient
w_zero = torch.zeros(64, 10, requires_grad=True)
b_zero = torch.zeros(10, requires_grad=True)
F.cross_entropy(x_train @ w_zero + b_zero, y_train).backward()
_, w1, b1 = softmax_regression_gd(
    x_train[None], y_train, torch.ones(1), steps=1
)
torch.testing.assert_close(w1[0], -w_zero.grad)
torch.testing.assert_close(b1[0, 0], -b_zero.grad)

sd_safe = sd_train + 1e-6
inputs = {
    "raw": (x_train, x_test),
    "centred": (x_train - mu_train, x_test - mu_train),
    "standardized": (
        (x_train - mu_train) / sd_safe,
        (x_test - mu_train) / sd_safe,
    ),
}
lrs = torch.tensor([0.1 * 3**k for k in range(9)])  # 0.1 ... 656
results = {}
for name, (xtr, xte) in inputs.items():
    # the same inputs for every learning rate
    xb = xtr.to(device).expand(len(lrs), -1, -1)
    curves, w, b = softmax_regression_gd(xb, y_train.to(device), lrs, steps=100)
    curves = torch.nan_to_num(curves, nan=float("inf"))
    below = curves < 0.1
    steps = torch.where(
        below.any(1), below.float().argmax(1), torch.full((len(lrs),), 10**6)
    )
    best = int(steps.argmin())
    acc = (
        ((xte.to(device) @ w[best] + b[best]).argmax(1).cpu() == y_test)
        .float()
        .mean()
        .item()
    )
    results[name] = {
        "steps": steps,
        "best": best,
        "curve": curves[best],
        "final": curves[:, -1],
        "acc": acc,
    }
    print(
        f"{name:>12}: best lr {lrs[best]:6.1f}, {int(steps[best]):3d} steps to CE < 0.1, test acc {acc:.3f}"
    )

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for k, (name, r) in enumerate(results.items()):
    final = r["final"].clamp(max=10.0)
    axes[0].plot(lrs, final, "-o", color=viz.color(k), label=name, ms=4)
    axes[1].plot(
        r["curve"],
        color=viz.color(k),
        label=f"{name} (lr {lrs[r['best']]:.1f})",
    )
axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="learning rate",
    ylabel="training CE after 100 steps",
)
axes[0].set_title("same budget, every learning rate")
axes[1].set(
    yscale="log", xlabel="gradient step", ylabel="training cross-entropy"
)
axes[1].set_title("loss curves at each input's best learning rate")
for ax in axes:
    ax.legend(fontsize=8)
plt.show()

# %%
accs = [r["acc"] for r in results.values()]
s_raw, s_cen, s_std = (int(r["steps"][r["best"]]) for r in results.values())
assert s_cen * 3 <= s_raw and s_std * 3 <= s_raw, (
    f"steps raw {s_raw}, centred {s_cen}, standardized {s_std}"
)
assert max(accs) - min(accs) < 0.03, (
    f"test accuracies {accs} should agree within 0.03"
)
print(
    f"best-lr steps: raw {s_raw}, centred {s_cen}, standardized {s_std}; test accuracies agree within 0.03"
)

# %% [markdown]
# What the measurement says, without overclaiming:
#
# - **At the same learning rate, centring alone changes nothing visible** (the raw and centred
#   curves coincide on the left for small learning rates). The slow directions of the loss are the
#   low-variance pixel patterns, and subtracting the mean does not touch them.
# - What centring removes is the one *steep* direction created by the mean, which caps the
#   stable learning rate. Raw inputs stop improving above a learning rate of about 8; centred inputs
#   keep improving, so **after re-tuning the learning rate** centring is several times faster.
# - **Standardization** also rescales the low-variance pixels, so it helps at every learning rate
#   (its curve is shifted left).
# - **The test accuracy is the same** for all three. A linear layer with a bias can absorb any shift
#   and scale of its inputs into its weights, so preprocessing changes how fast we find a good
#   model, not which models exist. In deep networks the same reasoning applies layer by layer,
#   which is what batch normalization (chapter 05, regularization) exploits.
#
# ## 5. Standardization and min-max scaling
#
# **Standardization** (z-scoring) divides the centred feature by its standard deviation:
#
# $$
# x'_j = \frac{x_j - \mu_j}{\sigma_j}, \qquad
# \sigma_j = \sqrt{\tfrac{1}{N-1}\textstyle\sum_n (x_{nj}-\mu_j)^2}.
# $$
#
# Every feature then has mean 0 and standard deviation 1 on the training set. It does **not** map
# the data into $[-1, 1]$ (a claim often repeated): a value three standard deviations from the mean
# becomes 3, and a pixel that is almost always 0 turns its rare non-zero values into huge numbers.
#
# **Min-max scaling** maps the training range of each feature onto $[0, 1]$:
#
# $$
# x'_j = \frac{x_j - \min_n x_{nj}}{\max_n x_{nj} - \min_n x_{nj}} .
# $$
#
# It is sensitive to a single outlier (which sets the range for everyone) and test values can fall
# outside $[0, 1]$. Both need a guard against division by zero for constant features: the digits
# have three pixels that are 0 in every training image.
#
# From scratch, checked against `data.Normalizer` (which uses the $N-1$ standard deviation, plus
# `eps`) and scikit-learn's scalers (`StandardScaler` divides by the $N$ standard deviation):

# %%
# NBVAL_CHECK_OUTPUT
eps = 1e-6
z_scratch = (x_train - x_train.mean(0)) / (x_train.std(0) + eps)
torch.testing.assert_close(
    z_scratch,
    data.Normalizer(per="feature", eps=eps).fit(x_train).transform(x_train),
)
n_tr = len(x_train)
z_sk = torch.from_numpy(
    StandardScaler().fit_transform(x_train.double().numpy())
)
# the 61 non-constant pixels (sklearn maps constant ones to 0)
keep = x_train.std(0) > 0
xk = x_train[:, keep].double()
torch.testing.assert_close(
    (xk - xk.mean(0)) / xk.std(0, correction=0), z_sk[:, keep]
)  # sklearn: 1/N

lo, hi = x_train.min(0).values, x_train.max(0).values
mm_scratch = (x_train - lo) / (hi - lo).clamp_min(eps)
mm_sk = torch.from_numpy(MinMaxScaler().fit_transform(x_train.numpy()))
torch.testing.assert_close(mm_scratch, mm_sk)

print(f"standardized train: mean {z_scratch.mean(0).abs().max():.4f} (max |.| over pixels), "
      f"std {z_scratch.std(0)[keep].mean():.4f} (avg over non-constant pixels)")  # fmt: skip
print(
    f"standardized range: [{z_scratch.min():.1f}, {z_scratch.max():.1f}]  (not [-1, 1])"
)
print(f"min-max range: [{mm_scratch.min():.1f}, {mm_scratch.max():.1f}];  "
      f"test after min-max: [{((x_test - lo) / (hi - lo).clamp_min(eps)).min():.1f}, "
      f"{((x_test - lo) / (hi - lo).clamp_min(eps)).max():.1f}]")  # fmt: skip

# %% [markdown]
# **When does scaling matter?** When features are measured in different units. All digit pixels share
# one unit, and for images in general (0-255 or [0, 1]) scaling is mostly optional: a fixed division
# by 255 and a per-channel mean/std are the usual choices. To see the other case, append to each
# digit a useless 65th feature in large units (think of a "scan timestamp" in seconds, uniform in
# [0, 1000]) and classify with 1-nearest neighbour (chapter 00).


# %%
# NBVAL_CHECK_OUTPUT
def nn1_accuracy(train_x, test_x):
    """1-nearest-neighbour test accuracy with the L2 distance (in float64, so that no near-tie between
    neighbours can flip with the CPU's rounding and change this compared output)."""
    return (
        (
            y_train[torch.cdist(test_x.double(), train_x.double()).argmin(1)]
            == y_test
        )
        .float()
        .mean()
        .item()
    )


gen = torch.Generator().manual_seed(2)
xu_train = torch.cat(
    [x_train, 1000 * torch.rand(len(x_train), 1, generator=gen)], 1
)
xu_test = torch.cat(
    [x_test, 1000 * torch.rand(len(x_test), 1, generator=gen)], 1
)
nz = data.Normalizer(per="feature").fit(xu_train)
acc_pix = nn1_accuracy(x_train, x_test)
acc_pix_std = nn1_accuracy(
    norm_train.transform(x_train), norm_train.transform(x_test)
)
acc_units = nn1_accuracy(xu_train, xu_test)
acc_units_std = nn1_accuracy(nz.transform(xu_train), nz.transform(xu_test))
print(
    f"pixels only:             raw {acc_pix:.3f}, standardized {acc_pix_std:.3f}"
)
print(
    f"pixels + timestamp (s):  raw {acc_units:.3f}, standardized {acc_units_std:.3f}"
)
assert acc_units < 0.5 < 0.95 < acc_units_std, (
    "standardization should rescue the mixed-unit features"
)

# %% [markdown]
# With one feature in thousands, the distance is the timestamp difference and 1-NN is at chance
# level; after standardization every feature weighs the same and the accuracy is back. On the pixels
# alone standardization slightly *hurts*: it blows up the rarely used border pixels to the same weight
# as the informative centre ones. Preprocessing is a modelling choice, not a ritual.
#

# %% [markdown]
# ### Per-channel normalization, as image pipelines do it
#
# For photos and convolutional networks the standard recipe is the per-channel form of
# standardization: one mean $\mu_c$ and one standard deviation $\sigma_c$ per colour channel $c$,
# computed over all training images *and* all positions, and applied as
#
# $$
# x'_{c,i,j} = \frac{x_{c,i,j} - \mu_c}{\sigma_c} .
# $$
#
# Per-channel statistics survive crops, flips and changes of image size (section 2), and three
# numbers per statistic cannot overfit. What practice adds:
#
# - **Statistics from the training split, streamed.** A real training set does not fit in memory,
#   so the statistics are accumulated over a `DataLoader`: per-channel sums of $x$ and of $x^2$ and
#   a count, then $\mu = S_1/n$ and $\sigma^2 = (S_2 - S_1^2/n)/(n-1)$. Accumulate in float64: the
#   difference $S_2 - S_1^2/n$ cancels leading digits, and float32 has few to lose.
# - **Pretrained weights bring their own statistics.** A network trained on ImageNet learned its
#   first filters on inputs normalized with ImageNet's channel means (0.485, 0.456, 0.406) and
#   standard deviations (0.229, 0.224, 0.225), and when it is fine-tuned on a new dataset it must
#   be fed the same, whatever the new dataset's statistics. torchvision stores them with each set of
#   pretrained weights, in `weights.transforms()`.
# - **Normalize comes last, on floats.** In a torchvision pipeline the image is converted to a float
#   tensor in $[0, 1]$ first (`v2.ToDtype(torch.float32, scale=True)` divides `uint8` values by 255),
#   then `v2.Normalize(mean, std)` applies the formula above, so the statistics must be in the same
#   $[0, 1]$ units.
# - **No PCA or ZCA whitening for CNNs.** For a $3 \times 224 \times 224$ image the covariance
#   matrix has $150{,}528^2$ entries (about 90 GB in float32), whitening amplifies noise (exercise 3),
#   and a global linear map of the pixels throws away nothing a convolutional network cannot learn
#   itself. ZCA appeared in some CIFAR-10 work (e.g. maxout networks, Goodfellow et al. 2013); modern
#   pipelines use per-channel normalization, and normalization layers *inside* the network
#   (batch normalization, chapter 05) keep later layers well scaled.
# - **In the data pipeline or inside the model?** torchvision's convention puts `Normalize` in the
#   data pipeline, where it runs per image in the loader's worker processes. The alternative is a
#   fixed first layer of the model that holds $\mu$ and $\sigma$ as buffers: then the model takes
#   images in $[0, 1]$, its statistics are saved in its `state_dict`, they move with it to the
#   device, and deployment code cannot forget or mismatch them. Either way the same fixed
#   statistics serve training, validation, test and deployment (the golden rule).
#
# We try all of it on the coloured-shapes scenes of `data.make_shapes` (chapter 00): 512 training
# scenes and 128 validation scenes of $3 \times 32 \times 32$ pixels.

# %%
# NBVAL_CHECK_OUTPUT
shapes_train = data.make_shapes(
    512, size=32, seed=0
).images  # [512, 3, 32, 32] in [0, 1]
shapes_val = data.make_shapes(128, size=32, seed=1).images
loader = torch.utils.data.DataLoader(shapes_train, batch_size=64)

# streamed per-channel sums of x and x^2, and the count
s1 = torch.zeros(3, dtype=torch.float64)
s2 = torch.zeros(3, dtype=torch.float64)
count = 0
for batch in loader:
    b64 = batch.double()
    s1 += b64.sum(dim=(0, 2, 3))
    s2 += (b64**2).sum(dim=(0, 2, 3))
    count += b64[:, 0].numel()
mu_c = s1 / count
sigma_c = ((s2 - s1**2 / count) / (count - 1)).sqrt()
# one pass over all data
torch.testing.assert_close(mu_c.float(), shapes_train.mean(dim=(0, 2, 3)))
torch.testing.assert_close(sigma_c.float(), shapes_train.std(dim=(0, 2, 3)))
print("per-channel mean (R, G, B):", [round(v, 3) for v in mu_c.tolist()])
print("per-channel std  (R, G, B):", [round(v, 3) for v in sigma_c.tolist()])

# %% [markdown]
# The same normalization three ways: from scratch with broadcasting, with
# `torchvision.transforms.v2.Normalize`, and with `data.Normalizer(per="channel")` (with `eps=0`,
# since `Normalize` adds none), all with the training statistics, applied to the validation scenes.

# %%
mean_list, std_list = mu_c.float().tolist(), sigma_c.float().tolist()
val_scratch = (shapes_val - mu_c.float()[:, None, None]) / sigma_c.float()[
    :, None, None
]
val_tv = v2.Normalize(mean=mean_list, std=std_list)(shapes_val)
val_lib = (
    data.Normalizer(per="channel", eps=0.0)
    .fit(shapes_train)
    .transform(shapes_val)
)
torch.testing.assert_close(val_tv, val_scratch)
torch.testing.assert_close(val_lib, val_scratch)

# a complete pipeline from 8-bit images: to float in [0, 1], then normalize
shapes_val_u8 = (shapes_val * 255).round().to(torch.uint8)
pipeline = v2.Compose(
    [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=mean_list, std=std_list),
    ]
)
torch.testing.assert_close(
    pipeline(shapes_val_u8),
    v2.Normalize(mean_list, std_list)(shapes_val_u8 / 255),
)
try:
    v2.Normalize(mean=mean_list, std=std_list)(shapes_val_u8)
    raise AssertionError("Normalize accepted uint8 input")
except TypeError as err:
    print("Normalize on uint8 refuses:", err)
print(
    "validation per-channel mean after normalization:",
    [round(v, 3) for v in val_tv.mean(dim=(0, 2, 3)).tolist()],
)
print(
    "validation per-channel std after normalization: ",
    [round(v, 3) for v in val_tv.std(dim=(0, 2, 3)).tolist()],
)

# %% [markdown]
# The validation scenes come out close to mean 0 and standard deviation 1, not exactly: they are new
# data seen through the training statistics. Now the same normalization as the first layer of a
# model. Buffers (`register_buffer`) are tensors that belong to the module without being trained:
# they are saved in the `state_dict` and follow `.to(device)`.


# %%
class ChannelNormalize(torch.nn.Module):
    """(x - mean_c) / std_c for x in [0, 1] of shape [N, C, H, W], with fixed statistics as buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer(
            "mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        )
        self.register_buffer(
            "std", torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        )

    def forward(self, x):
        return (x - self.mean) / self.std


model = torch.nn.Sequential(
    ChannelNormalize(mean_list, std_list), torch.nn.Conv2d(3, 8, 3, padding=1)
).to(device)
torch.testing.assert_close(model[0](shapes_val.to(device)).cpu(), val_tv)
print("state_dict:", {k: tuple(v.shape) for k, v in model.state_dict().items()})
print(
    "trainable parameters:",
    sum(p.numel() for p in model.parameters()),
    "(the statistics are not among them)",
)

# %% tags=["hide-input"]
viz.chain_diagram(
    [("image in [0, 1]\n[N, 3, 32, 32]", "io"), ("ChannelNormalize\nbuffers μ, σ: [3, 1, 1]", "norm"),
     ("conv 3×3, 3 → 8\n[N, 8, 32, 32]", "conv")],
    block_size=(2.2, 0.7), spacing=2.8, title="Normalization as the model's first, fixed layer",
)  # fmt: skip
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
# imagenet_mean is defined in section 2
imagenet_std = torch.tensor([0.229, 0.224, 0.225])
print(
    "ImageNet statistics that torchvision's pretrained classifiers expect (their weights.transforms()):"
)
print(
    "  mean",
    [round(v, 3) for v in imagenet_mean.tolist()],
    " std",
    [round(v, 3) for v in imagenet_std.tolist()],
)
print(
    "the six photos of section 2, per-channel mean:",
    [round(v, 3) for v in channel_mean.tolist()],
)
print(
    "the shapes' training split, per-channel mean: ",
    [round(v, 3) for v in mu_c.tolist()],
)

# %% [markdown]
# The shapes, mostly black background, have channel means far below ImageNet's. A network trained
# from scratch on them should use their own statistics; a network pretrained on ImageNet and
# fine-tuned on them should keep ImageNet's, because its first layer was fitted to inputs
# normalized that way.
#
# ## 6. PCA and whitening
#
# Centring and standardization treat each feature on its own. Neighbouring pixels are strongly
# correlated, though, and the loss surface of section 4 is elongated along *combinations* of
# features. PCA finds those combinations.
#
# For centred data $X \in \mathbb{R}^{N\times D}$ (rows are examples), the covariance matrix and its
# eigendecomposition are
#
# $$
# \Sigma = \frac{1}{N} X^\top X = U \Lambda U^\top, \qquad
# \Lambda = \operatorname{diag}(\lambda_1 \ge \dots \ge \lambda_D \ge 0),
# $$
#
# with orthonormal eigenvectors $U = [u_1, \dots, u_D]$, the **principal components**. Then
#
# - $X_{\text{rot}} = XU$ expresses every example in the eigenbasis. Its covariance is
#   $U^\top \Sigma U = \Lambda$: the new coordinates are **decorrelated**, with variances $\lambda_k$.
# - keeping the first $K$ columns, $X U_K$, is **dimensionality reduction**: the best rank-$K$
#   linear approximation of the data in squared error (Pearson 1901, Hotelling 1933), reconstructed
#   by $X U_K U_K^\top$. The variance lost is $\sum_{k>K}\lambda_k$.
# - **PCA whitening** divides each coordinate by its standard deviation:
#   $X_{\text{white}} = X U (\Lambda + \epsilon I)^{-1/2}$. Its covariance is
#   $\Lambda(\Lambda+\epsilon I)^{-1} \approx I$. The small $\epsilon > 0$ keeps directions with
#   (almost) zero variance from being blown up.
# - **ZCA whitening** (zero-phase component analysis) rotates back afterwards:
#   $X_{\text{ZCA}} = X U (\Lambda + \epsilon I)^{-1/2} U^\top$. It is also white, and of all whitening
#   transforms it changes the data the least (Kessy et al. 2018), so whitened images still look like
#   images.
#
# Note the direction of the scaling: whitening **divides** by $\sqrt{\lambda_k}$. "Scaling each
# dimension by its eigenvalue", as some notes put it, would turn the variances $\lambda_k$ into
# $\lambda_k^3$ and make the spread far more uneven, not less.
#
# ### Five views of one 2-D cloud
#
# The classic picture (CS231n style) on a correlated, off-centre Gaussian cloud. Each panel is the
# previous one after one more step.

# %%
gen = torch.Generator().manual_seed(3)
mix = torch.tensor([[1.6, 0.0], [1.1, 0.45]], dtype=torch.float64)
cloud = torch.randn(
    400, 2, generator=gen, dtype=torch.float64
) @ mix.T + torch.tensor([3.0, 2.0])
c_centred = cloud - cloud.mean(0)
c_std = c_centred / cloud.std(0)
cov2 = c_centred.T @ c_centred / len(cloud)
lam2, u2 = torch.linalg.eigh(cov2)  # ascending eigenvalues
lam2, u2 = lam2.flip(0), u2.flip(1)  # largest variance first
c_rot = c_centred @ u2
c_white = c_rot / (lam2 + 1e-5).sqrt()
views = {
    "raw": cloud,
    "centred": c_centred,
    "standardized": c_std,
    "PCA-rotated\n(decorrelated)": c_rot,
    "PCA-whitened": c_white,
}

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 5, figsize=(14, 3.2), sharex=True, sharey=True)
for k, (ax, (name, pts)) in enumerate(zip(axes, views.items(), strict=True)):
    ax.axhline(0, color=viz.color("reference"), lw=0.8)
    ax.axvline(0, color=viz.color("reference"), lw=0.8)
    ax.scatter(pts[:, 0], pts[:, 1], s=4, color=viz.color(k), alpha=0.6)
    c = torch.cov(pts.T)
    ax.set_title(
        f"{name}\nvar {c[0, 0]:.2f}, {c[1, 1]:.2f}; cov {c[0, 1]:.2f}",
        fontsize=9,
    )
    ax.set(xlim=(-6, 8), ylim=(-6, 8), aspect="equal", xlabel="feature 1")
axes[0].set_ylabel("feature 2")
for k in range(2):  # the principal axes, drawn on the centred cloud
    end = 2 * lam2[k].sqrt() * u2[:, k]
    axes[1].annotate(
        "",
        xy=end.tolist(),
        xytext=(0, 0),
        arrowprops={"arrowstyle": "->", "lw": 1.5},
    )
plt.show()

# %% [markdown]
# Standardization gives both axes unit variance but leaves the correlation (the cloud is still a
# tilted ellipse). The rotation onto the eigenvectors (arrows) removes the correlation; dividing by
# $\sqrt{\lambda_k}$ then makes the cloud round: covariance $I$.
#
# ### PCA on the digits, from scratch
#
# The same steps on the 64-pixel digits, in float64. Eigenvectors are defined only up to sign; as in
# `course_lib.preprocess.PCA` (and scikit-learn) we flip each so that its largest entry is positive.
# We then check our eigenvalues and components against both libraries. Note the normalization:
# the course uses $\Sigma = X^\top X/N$; scikit-learn divides by $N-1$, so its variances are larger
# by $N/(N-1)$.

# %%
# NBVAL_CHECK_OUTPUT
x64 = x_train.double()
mu64 = x64.mean(0)
xc64 = x64 - mu64
sigma = xc64.T @ xc64 / len(xc64)  # [64, 64]
lam, u = torch.linalg.eigh(sigma)  # ascending
# descending; clamp round-off negatives
lam, u = (lam.flip(0).clamp_min(0), u.flip(1))
# sign: largest entry positive
flip = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
u = u * flip

pca = preprocess.PCA().fit(x64)  # all 64 components
torch.testing.assert_close(pca.explained_variance_, lam, atol=1e-12, rtol=1e-9)
nonnull = int((lam > 1e-12 * lam[0]).sum())  # directions with non-zero variance
# same signs, too
torch.testing.assert_close(pca.components_[:nonnull], u[:, :nonnull].T)
sk = SkPCA(svd_solver="full").fit(x64.numpy())
torch.testing.assert_close(
    lam * n_tr / (n_tr - 1),
    torch.from_numpy(sk.explained_variance_),
    atol=1e-12,
    rtol=1e-9,
)
sk_c = torch.from_numpy(sk.components_[:nonnull])
align = torch.sign((sk_c * u[:, :nonnull].T).sum(1, keepdim=True))  # up to sign
torch.testing.assert_close(sk_c * align, u[:, :nonnull].T)
cum = torch.cumsum(lam, 0) / lam.sum()
print(
    f"rank of the centred training data: {nonnull} of 64 (3 pixels are constant)"
)
for f in (0.5, 0.9, 0.95, 0.99):
    print(f"components for {f:.0%} of the variance: {int((cum < f).sum()) + 1}")
ks = np.arange(1, 65)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].semilogy(ks[:nonnull], lam[:nonnull], "o-", ms=3, color=viz.color(0))
axes[0].set(
    xlabel="component k",
    ylabel="eigenvalue $\\lambda_k$ (variance)",
    title="eigen-spectrum of $\\Sigma$",
)
axes[1].plot(ks, cum, color=viz.color(0), label="cumulative")
axes[1].bar(ks, lam / lam.sum(), color=viz.color(1), label="per component")
for f in (0.9, 0.99):
    k_f = int((cum < f).sum()) + 1
    axes[1].axhline(f, color=viz.color("reference"), lw=0.8, ls="--")
    axes[1].annotate(f"{f:.0%}: k = {k_f}", (k_f, f), xytext=(k_f + 4, f - 0.12), fontsize=9,
                     arrowprops={"arrowstyle": "->"})  # fmt: skip
axes[1].set(
    xlabel="number of components k",
    ylabel="fraction of variance",
    title="explained variance",
)
axes[1].legend(loc="center right")
plt.show()

# %% [markdown]
# The spectrum falls over four orders of magnitude: a handful of directions carry most of the
# variation of handwritten digits. What do those directions look like? The mean image and the first
# principal components, each an 8x8 pattern (red positive, blue negative):

# %% tags=["hide-input"]
comp_imgs = [mu64.view(8, 8)] + [u[:, k].view(8, 8) for k in range(11)]
titles = ["mean"] + [
    f"PC {k + 1} ({lam[k] / lam.sum():.0%})" for k in range(11)
]
fig, axes = plt.subplots(2, 6, figsize=(9, 3.4))
for k, (ax, img, t) in enumerate(
    zip(axes.flat, comp_imgs, titles, strict=True)
):
    lim = float(img.abs().max())
    ax.imshow(
        img,
        cmap="gray" if k == 0 else "RdBu_r",
        vmin=0 if k == 0 else -lim,
        vmax=lim,
    )
    ax.set_title(t, fontsize=9)
    ax.axis("off")
fig.suptitle("The mean digit and the top principal components")
plt.show()

# %% [markdown]
# ### Whitening: covariance exactly the identity
#
# PCA whitening with `preprocess.PCA(whiten=True)`. The training data have rank 61, so only 61
# directions can be whitened; the 3 constant pixels carry no variance to equalize. With $\epsilon=0$
# on those 61 components the whitened training covariance is the identity up to round-off; with
# $\epsilon>0$ the diagonal becomes $\lambda_k/(\lambda_k+\epsilon)$, which is close to 1 for
# high-variance directions and shrinks the low-variance ones. The test set, transformed with the
# training statistics, is only *approximately* white.

# %%
# NBVAL_CHECK_OUTPUT
white = preprocess.PCA(n_components=nonnull, whiten=True, eps=0.0).fit(x64)
z_white = white.transform(x64)
z_scratch = xc64 @ u[:, :nonnull] / lam[:nonnull].sqrt()  # X U / sqrt(Lambda)
torch.testing.assert_close(z_white, z_scratch)
cov_white = z_white.T @ z_white / len(z_white)
dev = (cov_white - torch.eye(nonnull, dtype=torch.float64)).abs().max().item()
assert dev < 1e-6, (
    f"whitened training covariance deviates from I by {dev:.2e}, expected < 1e-6"
)
print(f"max |cov(X_white) - I| on train (eps = 0) is below 1e-9: {dev < 1e-9}")
for eps_w in (1e-4, 1e-2):
    zw = preprocess.PCA(
        n_components=nonnull, whiten=True, eps=eps_w
    ).fit_transform(x64)
    diag = (zw.T @ zw / len(zw)).diagonal()
    print(
        f"eps = {eps_w:g}: diagonal from {diag[0]:.3f} (PC 1) down to {diag[-1]:.4f} (PC {nonnull})"
    )
zt_white = white.transform(x_test.double())
cov_test = zt_white.T @ zt_white / len(zt_white)
print(f"test set, train statistics: diagonal of the covariance in [{cov_test.diagonal().min():.3f}, "
      f"{cov_test.diagonal().max():.2f}]")  # fmt: skip

# %% [markdown]
# The test diagonal is far from 1 in the last components: those directions were fitted to a few
# unusual training images and say little about new ones. Whitening gives them the same weight as
# the first components, and that is why $\epsilon$ matters (exercise 3 measures how whitening
# amplifies noise).
#
# ZCA whitening keeps the pixel layout. `preprocess.zca_whiten_matrix` returns
# $W = U(\Lambda+\epsilon I)^{-1/2}U^\top$; below we check it against the formula and show whitened
# digits for a few values of $\epsilon$ (each image on its own colour scale). Small $\epsilon$ gives
# every direction the same variance, so fine, pixel-level detail (edges, and noise) dominates; an
# $\epsilon$ larger than most eigenvalues makes $W$ close to a multiple of the identity, and the output
# is just the centred digit. In between, the strokes are sharpened.

# %%
w_zca = preprocess.zca_whiten_matrix(x64, eps=1e-2)
torch.testing.assert_close(w_zca, u @ torch.diag((lam + 1e-2).rsqrt()) @ u.T)
digits_show = x_test[:8].double()


def zca_digits(eps_z):
    """ZCA-whitened versions of 8 test digits, [8, 8, 8], with the given eps (train statistics)."""
    w = u @ torch.diag((lam + eps_z).rsqrt()) @ u.T
    return ((digits_show - mu64) @ w).view(-1, 8, 8)


# %% tags=["hide-input"]
def mosaic(imgs, gap=1):
    """Tile images Tensor[K, H, W] in one row with NaN gaps (drawn white): one fast imshow per row."""
    # [K, H, W + gap]
    padded = F.pad(imgs.double(), (0, gap), value=float("nan"))
    return padded.permute(1, 0, 2).reshape(imgs.shape[1], -1)[:, :-gap].numpy()


GRAY = plt.get_cmap("gray").with_extremes(bad="white")
RDBU = plt.get_cmap("RdBu_r").with_extremes(bad="white")


def draw_zca_rows(eps_list, axes):
    """One row of ZCA-whitened digits per eps, after a first row of the originals."""
    axes[0].imshow(
        mosaic(digits_show.view(-1, 8, 8)), cmap=GRAY, vmin=0, vmax=1
    )
    axes[0].set_ylabel("original", fontsize=9)
    for ax, e in zip(axes[1:], eps_list, strict=True):
        imgs = zca_digits(e)
        # each image on its own scale
        imgs = imgs / imgs.abs().amax(dim=(1, 2), keepdim=True)
        ax.imshow(mosaic(imgs), cmap=RDBU, vmin=-1, vmax=1)
        ax.set_ylabel(f"eps={e:.0e}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.spines[:].set_visible(False)


eps_grid = [1e-3, 1e-2, 1e-1, 1.0]
fig, axes = plt.subplots(len(eps_grid) + 1, 1, figsize=(8, 5.6))
draw_zca_rows(eps_grid, axes)
fig.suptitle(
    "ZCA whitening of test digits for several eps (statistics from the training split)"
)
plt.show()

# %% [markdown]
# Try it yourself: the slider sets $\epsilon$ on a log scale.


# %%
def show_zca(log10_eps=-2.0):
    fig, axes = plt.subplots(2, 1, figsize=(8, 2.4))
    draw_zca_rows([10**log10_eps], axes)
    plt.show()


_ = widgets.interact(
    show_zca,
    log10_eps=widgets.FloatSlider(min=-5.0, max=0.0, step=0.5, value=-2.0),
)
# %% [markdown]
# ### A linear classifier on k principal components
#
# The claim that "linear models trained on PCA-reduced data often do well" deserves a number. We
# train softmax regression on the first $k$ PCA-whitened coordinates ($\epsilon = 10^{-5}$, statistics
# from the training split) with full-batch gradient descent, for several $k$ at once (each model
# sees its first $k$ coordinates; the others are masked to 0). Whitened inputs make plain gradient
# descent well conditioned (section 4), so the same learning rate and 200 steps work for every $k$.

# %%
pca_clf = preprocess.PCA(n_components=nonnull, whiten=True, eps=1e-5).fit(x64)
z_tr = pca_clf.transform(x64).float().to(device)
z_te = pca_clf.transform(x_test.double()).float().to(device)
k_list = [2, 4, 8, 12, 16, 24, 32, 48, nonnull]
keep_k = (
    (torch.arange(nonnull) < torch.tensor(k_list)[:, None]).float().to(device)
)  # [9, 61] masks
# model i sees only the first k_i coordinates
x_k = z_tr[None] * keep_k[:, None, :]
_, w_k, b_k = softmax_regression_gd(
    x_k, y_train.to(device), torch.full((len(k_list),), 0.5), steps=200
)
# [9, N_test]
pred = (z_te[None] * keep_k[:, None, :] @ w_k + b_k).argmax(-1).cpu()
acc_k = dict(
    zip(k_list, (pred == y_test).float().mean(1).tolist(), strict=True)
)
print("test accuracy per k:", {k: round(a, 3) for k, a in acc_k.items()})

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(
    list(acc_k),
    list(acc_k.values()),
    "o-",
    color=viz.color("test"),
    label="test accuracy",
)
ax.plot(
    ks[:nonnull],
    cum[:nonnull],
    color=viz.color("reference"),
    ls="--",
    label="explained variance",
)
ax.set(
    xlabel="number of PCA components k",
    ylabel="accuracy / fraction",
    ylim=(0, 1.02),
)
ax.set_title("Softmax regression on k whitened principal components")
ax.legend(loc="lower right")
plt.show()

# %%
assert acc_k[16] > 0.90, (
    f"accuracy with 16 components {acc_k[16]:.3f}, expected > 0.90"
)
assert acc_k[24] > acc_k[nonnull] - 0.03, (
    f"24 components {acc_k[24]:.3f} vs all {acc_k[nonnull]:.3f}"
)
print(
    f"16 components: {acc_k[16]:.3f}; 24: {acc_k[24]:.3f}; all {nonnull}: {acc_k[nonnull]:.3f}"
)

# %% [markdown]
# A quarter of the dimensions keeps nearly all the accuracy; two or four components are too few
# (the digits overlap in such a low-dimensional view). The curve of explained variance and the
# curve of accuracy are different things: variance is about reconstructing pixels, accuracy about
# separating classes, and the two need not agree (PCA never looks at the labels).
#
# ## 7. Explore: reconstructions from k components
#
# Reconstruction from the first $k$ components, $\hat x = \mu + (x-\mu)U_kU_k^\top$, is the
# dimensionality-reduction half of PCA. The static grid shows test digits rebuilt from
# $k \in \{2, 8, 16, 40\}$ components next to the explained variance; the slider below lets you
# choose $k$ freely.

# %%
# all 64 coordinates of 8 test digits
z_show = pca.transform(x_test[:8].double())


def reconstruct(k: int) -> torch.Tensor:
    """The 8 test digits rebuilt from their first k principal coordinates, [8, 8, 8]."""
    z = torch.zeros_like(z_show)
    z[:, :k] = z_show[:, :k]
    return pca.inverse_transform(z).view(-1, 8, 8)


# %% tags=["hide-input"]
def draw_reconstructions(k_values, fig):
    """Originals and rank-k reconstructions of 8 test digits (left), explained variance (right)."""
    left, right = fig.subfigures(1, 2, width_ratios=[2.3, 1])
    axes = left.subplots(len(k_values) + 1, 1, squeeze=False)[:, 0]
    rows = [("original", x_test[:8].double().view(-1, 8, 8))]
    rows += [(f"k={k}", reconstruct(k)) for k in k_values]
    for ax, (label, imgs) in zip(axes, rows, strict=True):
        ax.imshow(mosaic(imgs.clamp(0, 1)), cmap=GRAY, vmin=0, vmax=1)
        ax.set_ylabel(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.spines[:].set_visible(False)
    ax = right.subplots()
    ax.plot(ks, cum, color=viz.color(0))
    for j, k in enumerate(k_values):
        ax.plot(
            k,
            cum[k - 1],
            "o",
            color=viz.color(j + 1),
            ms=7,
            label=f"k={k}: {cum[k - 1]:.1%}",
        )
    ax.set(
        xlabel="k",
        ylabel="explained variance",
        ylim=(0, 1.02),
        title="variance kept",
    )
    ax.legend(loc="lower right", fontsize=8)


fig = plt.figure(figsize=(10, 5.0))
draw_reconstructions([2, 8, 16, 40], fig)
fig.suptitle(
    "PCA reconstructions of test digits (statistics from the training split)"
)
plt.show()


# %%
def show_reconstruction(k=8):
    fig = plt.figure(figsize=(10, 2.6))
    draw_reconstructions([k], fig)
    plt.show()


_ = widgets.interact(
    show_reconstruction, k=widgets.IntSlider(min=1, max=64, step=1, value=8)
)
# %% [markdown]
# Two components give blurry blobs that only say where the ink is, roughly; around 16 components
# the digits are readable; by 40 the reconstructions are nearly indistinguishable from the originals.
# The last components carry mostly the noise of individual writers and of the 8x8 quantization.
#
# ## Summary
#
# - Preprocessing statistics are model parameters: fit them on the training split, apply them
#   unchanged to validation, test and deployment data (`data.Normalizer`, `preprocess.PCA` follow
#   the fit/transform pattern).
# - Mean subtraction: `X = X - X.mean(0)` (out of place, so the stored data stay untouched), not
#   `X = X.mean(0)`. Per-pixel means for aligned data, per-channel means for photos and
#   convolutional networks.
# - With all-positive inputs, every single example's gradient on a neuron's weights has one sign for
#   all components (the sign of $\partial L/\partial z$); mini-batch sums can mix signs. The full-batch
#   effect of centring is conditioning: on the 2-D problem, 55 vs 1 and hundreds of steps vs three.
#   Compare preprocessing choices each at its own best learning rate: centring mostly raises the
#   largest stable rate.
# - On a real model with a bias the gain is smaller and depends on re-tuning the learning rate;
#   the final accuracy does not change. Standardization helps at every learning rate.
# - Standardization gives mean 0 and variance 1, not a $[-1, 1]$ range. Scaling matters when
#   features have different units; for images it is mostly optional.
# - CNN pipelines normalize per channel: `v2.ToDtype(torch.float32, scale=True)` then
#   `v2.Normalize(mean, std)`, with the training split's statistics (streamed, in float64) or, for
#   pretrained weights, the statistics they were trained with (ImageNet's). No PCA whitening.
#   A fixed first layer with the statistics as buffers makes the model self-contained.
# - PCA: $\Sigma = X^\top X/N = U\Lambda U^\top$, $X_{\text{rot}} = XU$; whitening divides by
#   $\sqrt{\lambda_k+\epsilon}$; ZCA rotates back. On the digits 16-24 of 64 components keep most of
#   the accuracy of a linear classifier.
#
# ## Exercises
#
# Where the answer is code or a number, the exercise gives a stub and a check from
# `course_lib.exercises` that says what is wrong (chapter 00 explains the pattern); the collapsed
# solution below it passes the same check.
#
# **Exercise 1 (statistics from the test data).** Write `standardize_groups(x, groups)`, which
# standardizes each group of rows (`groups[n]` is the group of row `n`) with that group's own
# per-feature mean and standard deviation, $(x - \mu_g)/(\sigma_g + 10^{-6})$ with the sample standard
# deviation, as if the images arrived in batches and each batch were normalized with its own
# statistics. The check compares it with `data.Normalizer(per="feature")` fitted group by group.
# Then train softmax regression on standardized digits (train statistics) and evaluate it on the
# test set normalized (a) with the training statistics, (b) with statistics computed on the whole
# test set, and (c) with `standardize_groups` and the test labels as groups (each class arrives as its
# own batch). What changes, and why is (c) a realistic danger?


# %%
def normalizer_per_group(x, groups):
    """The library version: one data.Normalizer per group, fitted on that group's rows."""
    out = torch.empty_like(x)
    for g in groups.unique():
        rows = groups == g
        out[rows] = (
            data.Normalizer(per="feature").fit(x[rows]).transform(x[rows])
        )
    return out


gen = torch.Generator().manual_seed(5)
group_cases = [
    (torch.rand(12, 5, generator=gen), torch.tensor([0, 1, 2] * 4)),
    (x_test, y_test),  # the test digits, one group per class
]


def standardize_groups(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code: [N, D], each group standardized with its own statistics


exercises.check_function(
    standardize_groups, group_cases, reference=normalizer_per_group
)


# %% tags=["hide-cell"]
def standardize_groups(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for g in groups.unique():
        rows = groups == g
        out[rows] = (x[rows] - x[rows].mean(0)) / (x[rows].std(0) + 1e-6)
    return out


exercises.check_function(
    standardize_groups, group_cases, reference=normalizer_per_group
).assert_passed()

clf_std = torch.nn.Linear(64, 10)
opt = torch.optim.SGD(clf_std.parameters(), lr=1.0)
xs_tr = norm_train.transform(x_train)
for _ in range(150):
    opt.zero_grad()
    F.cross_entropy(clf_std(xs_tr), y_train).backward()
    opt.step()


def accuracy_on(x):
    with torch.no_grad():
        return (clf_std(x).argmax(1) == y_test).float().mean().item()


acc_a = accuracy_on(norm_train.transform(x_test))
acc_b = accuracy_on(
    data.Normalizer(per="feature").fit(x_test).transform(x_test)
)
# each class normalized with its own statistics
acc_c = accuracy_on(standardize_groups(x_test, y_test))
print(
    f"(a) train statistics {acc_a:.3f}   (b) test-set statistics {acc_b:.3f}   "
    f"(c) per-class batches {acc_c:.3f}"
)
assert acc_c < acc_a - 0.2
# (b) is close to (a): the test set is large and drawn from the same distribution, so its statistics
# are similar (and the score is slightly optimistic or pessimistic by luck). (c) collapses: subtracting
# each batch's own mean removes exactly what the images of one class have in common, i.e. the class.
# Predictions then depend on which other images share the batch. A model must be able to classify one
# image on its own, with statistics frozen at training time.

# %% [markdown]
# **Exercise 2 (per-channel vs per-pixel mean for photos).** Shift every photo of section 2
# cyclically by 16 pixels to the right (`torch.roll`), as a random crop would. Compute
# `change_pixel`, the largest absolute change of the per-pixel mean image, and `change_channel`, the
# largest absolute change of the per-channel mean. The check knows what `change_channel` must be
# (think before you compute: what does a roll do to the set of values in one channel?). Which mean
# would you trust for a network trained with random crops?

# %%
# your value: max |per-pixel mean image after - before|
change_pixel = exercises.TODO
# your value: max |per-channel mean after - before|
change_channel = exercises.TODO
exercises.check_value(change_channel, 0.0, atol=1e-5, name="change_channel")

# %% tags=["hide-cell"]
shifted = torch.roll(photos, shifts=16, dims=3)
change_pixel = (shifted.mean(0) - photos.mean(0)).abs().max().item()
change_channel = (
    (shifted.mean(dim=(0, 2, 3)) - photos.mean(dim=(0, 2, 3)))
    .abs()
    .max()
    .item()
)
exercises.check_value(
    change_channel, 0.0, atol=1e-5, name="change_channel"
).assert_passed()
print(
    f"max change of the per-pixel mean image: {change_pixel:.3f}; "
    f"of the per-channel mean: {change_channel:.1e}"
)
assert change_channel < 1e-5 < 0.05 < change_pixel
# The per-channel mean averages over positions, so moving content around cannot change it (a roll is
# a permutation of the pixels; only float rounding of the sum in another order is left). The per-pixel
# mean image is tied to where things happened to be in the training photos; with crops, flips and
# varying sizes it describes no particular input.

# %% [markdown]
# **Exercise 3 (whitening amplifies noise).** Add Gaussian noise of standard deviation 0.01 to the
# test digits and PCA-whiten both versions (61 components, training statistics): the cell below
# measures the gain, the root-mean-square length of the whitened difference divided by that of the
# raw noise, for $\epsilon \in \{0, 10^{-4}, 10^{-2}\}$. Predict it without noise: write
# `predicted_gain(eps)` from the training eigenvalues `lam` (hint: isotropic noise of variance
# $s^2$ per pixel puts variance $s^2$ on each of the 61 kept directions, and whitening scales
# direction $k$ by $1/\sqrt{\lambda_k+\epsilon}$). The check compares your prediction with the
# measurement, within 10 %.

# %%
gen = torch.Generator().manual_seed(4)
noise = 0.01 * torch.randn(x_test.shape, generator=gen, dtype=torch.float64)
gains = {}
for eps_n in (0.0, 1e-4, 1e-2):
    p = preprocess.PCA(n_components=nonnull, whiten=True, eps=eps_n).fit(x64)
    diff = p.transform(x_test.double() + noise) - p.transform(x_test.double())
    gains[eps_n] = (
        (diff.pow(2).sum(1).mean() / noise.pow(2).sum(1).mean()).sqrt().item()
    )
print("measured gains:", {k: round(v, 1) for k, v in gains.items()})
assert gains[0.0] > gains[1e-4] > gains[1e-2] > 1


def predicted_gain(eps: float) -> float:
    raise NotImplementedError  # your code: use lam (eigenvalues, descending) and nonnull


exercises.check_function(
    predicted_gain,
    [(e,) for e in gains],
    expected=list(gains.values()),
    rtol=0.1,
)


# %% tags=["hide-cell"]
def predicted_gain(eps: float) -> float:
    # E|noise|^2 = 64 s^2; E|whitened difference|^2 = s^2 * sum_k 1 / (lambda_k + eps) over the kept k
    return ((1.0 / (lam[:nonnull] + eps)).sum() / x_test.shape[1]).sqrt().item()


exercises.check_function(
    predicted_gain,
    [(e,) for e in gains],
    expected=list(gains.values()),
    rtol=0.1,
).assert_passed()
print("predicted gains:", {e: round(predicted_gain(e), 1) for e in gains})
print(f"largest gain 1/sqrt(lambda_min): {lam[nonnull - 1].rsqrt():.0f}")
# The noise is spread evenly over all directions, but whitening multiplies the coordinate along u_k by
# 1/sqrt(lambda_k + eps). For the last components lambda_k is ~1e-6, so their noise grows by a factor
# of hundreds and dominates the whitened image. eps caps the gain at 1/sqrt(eps): 100 for 1e-4, 10 for
# 1e-2, trading exact whiteness for robustness.

# %% [markdown]
# **Exercise 4 (PCA via SVD vs eigh).** `preprocess.PCA` uses the SVD of the centred data
# $X = V S W^\top$ instead of the eigendecomposition of $\Sigma$. Show that $\lambda_k = s_k^2/N$ and
# write `eigenvalues_via_svd(x)`: the eigenvalues of the covariance of `x` (rows are examples,
# centred inside the function), in descending order, from `torch.linalg.svdvals`. The check compares
# it with `preprocess.PCA().fit(x).explained_variance_`. Then compare the accuracy of both routes in
# float32 on the digits, using the float64 eigenvalues as the reference. Which eigenvalues suffer,
# and why?

# %%
svd_cases = [(torch.randn(30, 6, generator=gen, dtype=torch.float64),), (x64,)]


def pca_eigenvalues(x):
    # the library (which uses the SVD, too)
    return preprocess.PCA().fit(x).explained_variance_


def eigenvalues_via_svd(x: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code: [D] eigenvalues of the covariance (1/N), descending


exercises.check_function(
    eigenvalues_via_svd, svd_cases, reference=pca_eigenvalues, atol=1e-12
)


# %% tags=["hide-cell"]
def eigenvalues_via_svd(x: torch.Tensor) -> torch.Tensor:
    # X = V S W^T, X^T X / N = W (S^2 / N) W^T
    return torch.linalg.svdvals(x - x.mean(0)) ** 2 / len(x)


exercises.check_function(
    eigenvalues_via_svd, svd_cases, reference=pca_eigenvalues, atol=1e-12
).assert_passed()
xc32 = x_train - x_train.mean(0)
lam_eigh32 = torch.linalg.eigvalsh(xc32.T @ xc32 / n_tr).flip(0).double()
lam_svd32 = eigenvalues_via_svd(x_train).double()
small = slice(nonnull - 5, nonnull)  # the five smallest non-zero eigenvalues
err_eigh = ((lam_eigh32[small] - lam[small]).abs() / lam[small]).max().item()
err_svd = ((lam_svd32[small] - lam[small]).abs() / lam[small]).max().item()
print(
    f"float32, relative error on the 5 smallest eigenvalues: eigh(Sigma) {err_eigh:.1e}, SVD(X) {err_svd:.1e}"
)
assert err_svd < err_eigh
# The large eigenvalues agree to float32 precision either way; the smallest ones suffer. eigh's error
# is about float32's resolution (~1e-7) times the largest entries of Sigma, which is large relative to
# an eigenvalue ~1e-6 times the largest one. Forming Sigma = X^T X squares the condition number; the SVD
# works on X, whose singular values span only the square root of that range, so it keeps more digits.
# (When N >> D, forming Sigma is cheaper, which is why both routes are in use.)

# %% [markdown]
# ## References
#
# - Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller (1998). Efficient BackProp. In *Neural Networks:
#   Tricks of the Trade*, LNCS 1524, Springer. (Centring, scaling and decorrelating inputs; the
#   same-sign argument.)
# - K. Pearson (1901). On lines and planes of closest fit to systems of points in space.
#   *Philosophical Magazine* 2(11), 559-572.
# - H. Hotelling (1933). Analysis of a complex of statistical variables into principal components.
#   *Journal of Educational Psychology* 24(6), 417-441.
# - A. Kessy, A. Lewin, K. Strimmer (2018). Optimal whitening and decorrelation. *The American
#   Statistician* 72(4), 309-314. arXiv:1512.00809.
# - A. J. Bell, T. J. Sejnowski (1997). The "independent components" of natural scenes are edge
#   filters. *Vision Research* 37(23), 3327-3338. (ZCA whitening.)
# - K. Simonyan, A. Zisserman (2015). Very deep convolutional networks for large-scale image
#   recognition. ICLR 2015, arXiv:1409.1556. (Per-channel mean subtraction.)
# - CS231n: Convolutional Neural Networks for Visual Recognition, course notes "Neural Networks
#   Part 2: Setting up the Data and the Loss", Stanford University,
#   https://cs231n.github.io/neural-networks-2/.
# - S. Ioffe, C. Szegedy (2015). Batch normalization: accelerating deep network training by reducing
#   internal covariate shift. ICML 2015, arXiv:1502.03167. (Normalizing inside the network:
#   chapter 05, regularization.)
# - I. J. Goodfellow, D. Warde-Farley, M. Mirza, A. Courville, Y. Bengio (2013). Maxout networks.
#   ICML 2013, arXiv:1302.4389. (Global contrast normalization and ZCA whitening on CIFAR-10.)
# - torchvision documentation: transforms v2 (`ToDtype`, `Normalize`) and the `transforms()` of
#   pretrained weights, https://pytorch.org/vision/stable/transforms.html.
