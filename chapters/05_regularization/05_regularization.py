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
# # 05 · Regularization
#
# A network with tens of thousands of weights can memorise two hundred training images perfectly, and
# it will: the training loss goes to zero while the error on new images stays high. Regularization is
# everything we do to shrink that gap between training and test error without simply making the
# model smaller: penalties on the weights, noise during training (dropout, stochastic depth),
# normalization layers, stopping early, sharing weights, showing the model transformed copies of its
# data, and averaging its weights over time. This chapter writes each of them from its formula, checks
# it against PyTorch or torchvision, and then measures, in an ablation over three seeds, how much each
# one buys on a small digit classifier.
#
# **Learning objectives.** After this chapter you can:
# - add L2 and L1 penalties to a loss, explain why L1 gives exactly zero weights (with a proximal step)
#   and measure the sparsity;
# - say why weight decay equals L2 regularization for SGD but not for Adam, and use AdamW's decoupled
#   weight decay;
# - write inverted dropout, batch, layer, instance and group normalization from scratch and match
#   PyTorch, including batch norm's running statistics, its train/eval difference and its failure at
#   batch sizes of two;
# - use early stopping with a patience rule, and count the weights that convolution saves by sharing;
# - drop residual branches with stochastic depth and explain its test-time rule;
# - build augmentation pipelines (flips, crops, shifts, Cutout, MixUp, CutMix, RandAugment, repeated
#   augmentation) with `course_lib.augment` and `torchvision.transforms.v2`;
# - keep an exponential moving average (EMA) of the weights and evaluate it;
# - run an ablation honestly: each regularizer at its own setting chosen on a validation split, three
#   seeds, accuracy reported on a test split that took no part in any choice.
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (the training loop and
# the digits), [chapter 02](../02_activations_and_init/02_activations_and_init.ipynb) (MLPs and
# activation statistics), [chapter 03](../03_losses/03_losses.ipynb) (cross-entropy) and
# [chapter 04](../04_optimization/04_optimization.ipynb) (SGD and Adam).
#
# **Measured runtime:** 45 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [05_regularization.ipynb](05_regularization.ipynb) (notebook, with outputs) · [05_regularization.py](05_regularization.py) (the paired script instructors edit)

# %%
import copy
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.ops
from matplotlib.collections import PolyCollection
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision.transforms import v2
from torchvision.utils import make_grid

from course_lib import (
    augment,
    data,
    exercises,
    metrics,
    optim,
    runtime,
    train,
    viz,
)
from course_lib import nn as cnn

device = runtime.setup(seed=0)

# %% [markdown]
# ## Overfitting, measured
#
# The **generalization gap** is the difference between a model's performance on the data it was
# trained on and on new data from the same distribution. To make it large, we give a small
# convolutional network (chapter 06 explains convolutions; here it is just a model with many weights)
# only 200 training digits, 20 of each class drawn at random from the training split. The other two
# splits have distinct jobs, and keeping them apart is what makes the numbers of this chapter honest:
#
# - the **validation** split (360 digits) is used for every *choice*: when to stop, which dropout
#   rate, which weight decay, which augmentation strength;
# - the **test** split (359 digits) is used only to *report* the accuracy of what was chosen. A number
#   measured on the data that chose the setting is biased upward: picking the best of ten settings on
#   the validation split also picks the one whose validation noise happened to be favourable.
#
# The images stay in $[0, 1]$ with a black background (value 0), which the shift augmentation relies on.

# %%
# NBVAL_CHECK_OUTPUT
# stratified 60/20/20 split of the 1,797 digits
splits = data.digits_splits(normalize=None)
x_pool, y_pool = splits.tensors("train")
x_val, y_val = splits.tensors("val")
x_test, y_test = splits.tensors("test")
pick = torch.Generator().manual_seed(0)
small = []
for c in range(10):
    of_class = torch.nonzero(y_pool == c)[:, 0]
    # 20 at random per class
    small.append(of_class[torch.randperm(len(of_class), generator=pick)[:20]])
small = torch.cat(small)
x_small, y_small = x_pool[small], y_pool[small]


def small_cnn(dropout: float = 0.0) -> nn.Sequential:
    """Two 3x3 convolutions, a 2x2 average pool and a two-layer classifier, for 1x8x8 digits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),      # [16, 4, 4]
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 4 * 4, 128), nn.ReLU(),
        nn.Dropout(dropout), nn.Linear(128, 10),
    )  # fmt: skip


print(
    f"training images: {len(y_small)} ({torch.bincount(y_small).tolist()} per class)"
)
print(f"validation images: {len(y_val)}, test images: {len(y_test)}")
print(
    f"weights in the network: {sum(p.numel() for p in small_cnn().parameters()):,}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(13, 1.5))
viz.chain_diagram(
    [("digit\n[B, 1, 8, 8]", "io"), ("conv 3×3, 1 → 16\n+ ReLU [B, 16, 8, 8]", "conv"),
     ("conv 3×3, 16 → 16\n+ ReLU [B, 16, 8, 8]", "conv"), ("avg pool 2×2\n[B, 16, 4, 4]", "pool"),
     ("flatten, dropout\n[B, 256]", "other"), ("linear 256 → 128\n+ ReLU [B, 128]", "linear"),
     ("dropout, linear\n128 → 10 [B, 10]", "linear")],
    ax=ax, spacing=2.3, block_size=(2.05, 0.8), fontsize=8,
    title=f"small_cnn(dropout): {sum(p.numel() for p in small_cnn().parameters()):,} weights; "
    "dropout is the identity unless switched on",
)  # fmt: skip
plt.show()

# %% [markdown]
# One function trains this network for the whole chapter. Its keyword arguments switch on the
# regularizers that the following sections explain, all off by default; the last section turns them
# on one at a time. Every run uses AdamW with learning rate $5\cdot10^{-3}$ and no weight decay unless
# asked, batches of 50 and 20 epochs (80 steps), and its own seed for the initialization, the batch
# order and every random augmentation. With `curves=True` it also evaluates the model after every
# epoch on the *clean* training images and on the validation images (both in eval mode) and keeps a
# copy of the weights of every epoch, which early stopping (below) chooses from.

# %%
EPOCHS, SEEDS = 20, (0, 1, 2)
ACC = {"acc": metrics.accuracy}
EVAL_SETS = {
    "train": [(x_small, y_small)],
    "val": [(x_val, y_val)],
    "test": [(x_test, y_test)],
}


def accuracies(model):
    """Accuracy on the clean training images, the validation and the test split (eval mode)."""
    return {
        split: train.evaluate(model, batches, metrics=ACC)["acc"]
        for split, batches in EVAL_SETS.items()
    }


def train_run(seed, *, dropout=0.0, weight_decay=0.0, max_shift=0, mix=None, alpha=1.0, views=None,
              repeats=1, ema_decays=(), curves=False, epochs=EPOCHS):  # fmt: skip
    """Train small_cnn(dropout) on the 200 digits; return its accuracies (and more, see below).

    weight_decay: AdamW's decoupled decay. max_shift: random shifts of up to that many pixels.
    mix: augment.mixup or augment.cutmix with Beta(alpha, alpha). views: Tensor[200, V, 1, 8, 8] of
    precomputed augmented copies, one picked at random per image and epoch. repeats: repeated
    augmentation. ema_decays: keep a WeightEMA per decay and report its accuracies too.
    curves: per-epoch losses and accuracies, and the weights after every epoch.
    epochs: training length (EPOCHS for every run of the ablation).
    """
    torch.manual_seed(seed)  # initialization and dropout masks
    model = small_cnn(dropout).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=5e-3, weight_decay=weight_decay
    )
    # batch order and augmentations
    gen = torch.Generator().manual_seed(1000 + seed)

    def collate(batch):  # batch functions run on the whole batch, on the device
        x, y = default_collate(batch)
        x, y = x.to(device), y.to(device)
        if max_shift:
            x = augment.random_translate(x, max_shift, generator=gen)
        if mix is not None:
            x, y = mix(x, y, alpha=alpha, num_classes=10, generator=gen)
        return x, y

    if views is None:
        dataset = TensorDataset(x_small, y_small)
    else:  # a per-sample transform that picks one of the precomputed views
        dataset = augment.TransformDataset(
            TensorDataset(views, y_small),
            lambda v: v[torch.randint(len(v), (), generator=gen)],
        )
    sampler = augment.RepeatedAugmentationSampler(
        dataset, repeats, num_samples=len(dataset), generator=gen
    )
    loader = DataLoader(
        dataset, batch_size=50, sampler=sampler, collate_fn=collate
    )
    emas = [optim.WeightEMA(model, decay=d) for d in ema_decays]
    fit = dict(optimizer=optimizer, loss_fn=F.cross_entropy, device=device, progress=False,
               after_step=(lambda: [e.update(model) for e in emas]) if emas else None)  # fmt: skip
    out = {}
    if curves:
        out["curves"] = {
            k: [] for k in ("train_loss", "train_acc", "val_loss", "val_acc")
        }
        out["states"] = []
        for _ in range(epochs):
            train.fit(model, loader, epochs=1, **fit)
            for split in ("train", "val"):
                r = train.evaluate(
                    model, EVAL_SETS[split], F.cross_entropy, ACC
                )
                out["curves"][f"{split}_loss"].append(r["loss"])
                out["curves"][f"{split}_acc"].append(r["acc"])
            out["states"].append(copy.deepcopy(model.state_dict()))
    else:
        train.fit(model, loader, epochs=epochs, **fit)
    out["final"] = accuracies(model)
    for e in emas:
        out[f"ema {e.decay}"] = accuracies(e.module)
    return out


def over_seeds(**kwargs):
    return [train_run(seed, **kwargs) for seed in SEEDS]


# no regularization, three seeds
baseline_runs = over_seeds(curves=True, ema_decays=(0.9, 0.98))
for seed, run in zip(SEEDS, baseline_runs, strict=True):
    acc = run["final"]
    print(
        f"seed {seed}, {EPOCHS} epochs: train accuracy {acc['train']:.3f}, validation {acc['val']:.3f}, "
        f"test {acc['test']:.3f}"
    )

# %% [markdown]
# ### Early stopping
#
# The validation loss falls, reaches a minimum, and climbs again while the training loss keeps going
# to zero: from that point on the model improves its fit of the 200 images at the expense of new ones.
# (The validation *accuracy* moves less: the loss also punishes confident mistakes.) **Early
# stopping** watches the validation loss and stops once it has not improved for `patience` epochs,
# then restores the weights from the best epoch. It limits how far the optimizer can travel from its
# starting point, which for a linear model and a quadratic loss acts much like an L2 penalty
# (Goodfellow et al., 2016, §7.8). The patience absorbs the noise of the validation curve. The epoch
# is a hyperparameter chosen on the validation split, so the restored model is judged on the test split.
# To see the whole curve we train seed 0 for twice the usual 20 epochs.


# %%
def early_stopping(val_losses, patience=5):
    """(best epoch, epoch at which training stops), both 1-based, for a patience rule."""
    best, best_epoch = math.inf, 0
    for epoch, loss in enumerate(val_losses, start=1):
        if loss < best:
            best, best_epoch = loss, epoch
        elif epoch - best_epoch >= patience:
            return best_epoch, epoch
    return best_epoch, len(val_losses)


def early_stopped(run, patience=5):
    """Accuracies of the weights that early stopping restores (they come from run['states'])."""
    best_epoch, _ = early_stopping(run["curves"]["val_loss"], patience)
    model = small_cnn().to(device)
    model.load_state_dict(run["states"][best_epoch - 1])
    return accuracies(model)


long_run = train_run(0, curves=True, epochs=2 * EPOCHS)
base_rec = long_run["curves"]
best_epoch, stop_epoch = early_stopping(base_rec["val_loss"], patience=5)
early_acc = early_stopped(long_run)
best_loss = min(base_rec["val_loss"])
print(
    f"early stopping: best epoch {best_epoch}, training stops at epoch {stop_epoch} of {2 * EPOCHS}"
)
print(
    f"validation loss: {best_loss:.3f} at the best epoch, {base_rec['val_loss'][-1]:.3f} at the end"
)
print(
    f"test accuracy: {early_acc['test']:.3f} restored, {long_run['final']['test']:.3f} at the end"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
viz.plot_curves(
    {"train_loss": base_rec["train_loss"], "val_loss": base_rec["val_loss"]},
    ylabel="cross-entropy", title="Loss: the gap opens", ax=axes[0], logy=True,
)  # fmt: skip
viz.plot_curves(
    {"train_acc": base_rec["train_acc"], "val_acc": base_rec["val_acc"]},
    ylabel="accuracy", title="Accuracy", ax=axes[1],
)  # fmt: skip
for ax in axes:
    ax.axvline(
        best_epoch,
        color=viz.color("reference"),
        ls="--",
        lw=1,
        label=f"best val loss: epoch {best_epoch}",
    )
    ax.axvline(
        stop_epoch,
        color=viz.color(3),
        ls=":",
        lw=1.5,
        label=f"stop (patience 5): epoch {stop_epoch}",
    )
    ax.legend(fontsize=8)
fig.suptitle("A 37k-weight CNN on 200 digits, no regularization (seed 0)")
plt.show()

# %%
base_gaps = [r["final"]["train"] - r["final"]["test"] for r in baseline_runs]
assert stop_epoch < 2 * EPOCHS, (
    f"early stopping should stop before epoch {2 * EPOCHS}, stopped at {stop_epoch}"
)
assert best_loss < 0.9 * base_rec["val_loss"][-1], (
    f"the validation loss should rise after its minimum: {best_loss:.3f}, then {base_rec['val_loss'][-1]:.3f}"
)
assert min(base_gaps) > 0.04, (
    f"the unregularized model should overfit: train-test gaps {base_gaps}"
)

# %% [markdown]
# In every seed the training accuracy reaches 1 while the test accuracy stays about seven points
# lower: that is the gap to close. The ablation at the end of the chapter measures early stopping over
# the three seeds, next to everything else.
#
# ## Penalties on the weights
#
# ### L2 regularization
#
# If weights $W$ classify every training example correctly, so do $2W$, $10W$, ...: the scores grow,
# the cross-entropy keeps *falling*, and the optimizer is rewarded for blowing the weights up into an
# ever more confident model. A penalty on the size of the weights removes this freedom. L2
# regularization adds half the squared Euclidean norm, scaled by a strength $\lambda$:
#
# $$
# \tilde L(w) = L(w) + \frac{\lambda}{2}\lVert w\rVert_2^2 = L(w) + \frac{\lambda}{2}\sum_i w_i^2,
# \qquad \nabla \tilde L(w) = \nabla L(w) + \lambda w .
# $$
#
# It prefers many small weights to a few large ones, so no single input can dominate a score. Take
# the input $x = (1, 1, 1, 1)$ and the weights $w_1 = (1, 0, 0, 0)$ and $w_2 = (0.25, 0.25, 0.25,
# 0.25)$: both give the score $w^\top x = 1$. The squared norm of $w_1$ is 1, that of $w_2$ is
# $4 \times 0.25^2 = 0.25$. (Lecture notes that give 0.5 for $w_2$ have computed its norm
# $\lVert w_2\rVert_2 = 0.5$, not the squared norm that the penalty uses.)

# %%
# NBVAL_CHECK_OUTPUT
x_ex = torch.ones(4)
for name, w in (
    ("w1", torch.tensor([1.0, 0.0, 0.0, 0.0])),
    ("w2", torch.full((4,), 0.25)),
):
    print(
        f"{name}: score {w @ x_ex:.2f}, squared norm (the penalty) {w.pow(2).sum():.4f}, norm {w.norm():.4f}"
    )

# %% [markdown]
# Biases are usually left out of the penalty (they do not scale the input), and so are the $\gamma$
# and $\beta$ of normalization layers.
#
# ### Weight decay, and why AdamW decouples it
#
# A step of gradient descent on $\tilde L$ is
#
# $$
# w \leftarrow w - \eta\,(\nabla L + \lambda w) = (1 - \eta\lambda)\,w - \eta\,\nabla L ,
# $$
#
# so every step first shrinks the weights by the factor $1 - \eta\lambda$: **weight decay**. For SGD
# (with or without momentum) "L2 penalty in the loss" and "weight decay in the optimizer" are the
# same thing, and `torch.optim.SGD(weight_decay=λ)` implements it by adding $\lambda w$ to the gradient.
#
# Adam divides each gradient coordinate by a running estimate of its size, $\sqrt{\hat v}$. If the
# L2 term goes through the gradient (which is what `torch.optim.Adam(weight_decay=λ)` does), it is
# divided too: weights whose loss gradients are large are barely decayed, and weights with small
# gradients are pulled to zero at the full rate $\eta$ per step whatever $\lambda$ is. Loshchilov and
# Hutter (2019) proposed to **decouple** the decay from the adaptive step:
#
# $$
# w \leftarrow (1 - \eta\lambda)\,w - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon} \qquad \text{(AdamW)},
# $$
#
# where $\hat m$ and $\hat v$ are Adam's moment estimates of the gradient of $L$ alone. Three checks on
# a small model: SGD's weight decay is the L2 term, Adam's `weight_decay` is the L2 term, and AdamW is a
# multiplicative shrink followed by an ordinary Adam step.


# %%
def l2_loss(model, x, y, lam):
    weights = [
        p for name, p in model.named_parameters() if name.endswith("weight")
    ]  # not the biases
    return F.cross_entropy(model(x), y) + lam / 2 * sum(
        w.pow(2).sum() for w in weights
    )


def make_pair(seed=0):
    torch.manual_seed(seed)
    a = cnn.mlp([64, 32, 10])
    return a, copy.deepcopy(a)


xb, yb = x_small.flatten(1)[:64], y_small[:64]
lam, lr = 0.1, 0.05


def decay_groups(model):
    """Optimizer parameter groups: weight decay on the weights only, as in l2_loss."""
    return [
        {
            "params": [
                p for n, p in model.named_parameters() if n.endswith("weight")
            ],
            "weight_decay": lam,
        },
        {
            "params": [
                p for n, p in model.named_parameters() if n.endswith("bias")
            ],
            "weight_decay": 0.0,
        },
    ]


for opt_name, make_opt in (("SGD", lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9)),
                           ("Adam", lambda ps: torch.optim.Adam(ps, lr=lr))):  # fmt: skip
    with_penalty, with_decay = make_pair()
    # L2 term in the loss, no weight_decay
    opt_penalty = make_opt(with_penalty.parameters())
    # weight_decay in the optimizer, plain loss
    opt_decay = make_opt(decay_groups(with_decay))
    for _ in range(5):
        opt_penalty.zero_grad()
        l2_loss(with_penalty, xb, yb, lam).backward()
        opt_penalty.step()
        opt_decay.zero_grad()
        F.cross_entropy(with_decay(xb), yb).backward()
        opt_decay.step()
    for p, q in zip(
        with_penalty.parameters(), with_decay.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q)
    print(
        f"{opt_name}: weight_decay=λ in the optimizer = λ/2 ||w||² in the loss (5 steps)"
    )

adamw_model, manual_model = make_pair()
adamw = torch.optim.AdamW(decay_groups(adamw_model), lr=lr)
# no decay inside Adam
adam = torch.optim.Adam(manual_model.parameters(), lr=lr)
for _ in range(5):
    adamw.zero_grad()
    F.cross_entropy(adamw_model(xb), yb).backward()
    adamw.step()
    adam.zero_grad()
    F.cross_entropy(
        manual_model(xb), yb
    ).backward()  # the gradient at the current weights
    with (
        torch.no_grad()
    ):  # decoupled: shrink the weights, then an ordinary Adam step
        for name, p in manual_model.named_parameters():
            if name.endswith("weight"):
                p.mul_(1 - lr * lam)
    adam.step()
for p, q in zip(
    adamw_model.parameters(), manual_model.parameters(), strict=True
):
    torch.testing.assert_close(p, q)
print(
    "AdamW = shrink by (1 - ηλ), then an Adam step on the loss alone (5 steps)"
)

# %% [markdown]
# Where the two versions part ways is easiest to see on two weights whose loss gradients carry no
# signal: weight A gets random gradients of size 1 from the loss, weight B none at all (the weight of
# a pixel that is blank in every image, say). The regularizer alone decides where they go.

# %%
noise = torch.randn(
    400, 2, generator=torch.Generator().manual_seed(0)
) * torch.tensor([1.0, 0.0])
paths = {}
for name, make_opt in (
    ("Adam + L2 (weight_decay)", torch.optim.Adam),
    ("AdamW", torch.optim.AdamW),
):
    w = torch.ones(2, requires_grad=True)
    opt = make_opt([w], lr=0.01, weight_decay=0.1)
    traj = [w.detach().clone()]
    for g in noise:
        w.grad = g.clone()  # the loss's gradient: noise for A, zero for B
        opt.step()
        traj.append(w.detach().clone())
    paths[name] = torch.stack(traj)

# %% tags=["hide-input"]
steps = np.arange(len(noise) + 1)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
for k, (ax, title) in enumerate(
    zip(
        axes,
        (
            "weight A: random loss gradients of size 1",
            "weight B: no loss gradient",
        ),
        strict=True,
    )
):
    for i, (name, traj) in enumerate(paths.items()):
        ax.plot(steps, traj[:, k], color=viz.color(i), label=name)
    ax.plot(
        steps,
        (1 - 0.01 * 0.1) ** steps,
        color=viz.color("reference"),
        ls=":",
        label="(1 − ηλ)^t",
    )
    ax.set(title=title, xlabel="step", ylim=(-0.1, 1.3))
axes[0].set_ylabel("weight")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# For weight A the two optimizers agree: its random walk, driven by the noisy gradients, swamps the
# decay either way. For weight B they do not. AdamW shrinks it by $(1 - \eta\lambda)$ per step, the
# dotted curve. Adam with an L2 term sees the gradient $\lambda w$ and, since it divides every
# gradient by its own running size, turns it into steps of about $\eta$ whatever $\lambda$ is: B
# falls to zero in some 200 steps. How strongly Adam + L2 regularizes a weight depends on the size of
# its loss gradients, not on $\lambda$ alone. AdamW is the default in modern vision training (DeiT,
# Swin and ConvNeXt train with AdamW and a weight decay of 0.05).
#
# ### L1 regularization and sparsity
#
# The L1 penalty adds the sum of absolute values, $\tilde L(w) = L(w) + \lambda\lVert w\rVert_1$.
# Its (sub)gradient $\lambda\,\mathrm{sign}(w)$ has the same size for a tiny weight as for a large one,
# so it keeps pushing small weights until they reach zero, while L2's pull $\lambda w$ fades as the
# weight shrinks. The result is a **sparse** model: most weights exactly zero, the rest on the inputs
# that matter, a form of feature selection.
#
# "Exactly zero" needs the right optimizer. Plain gradient descent on $|w|$ overshoots zero and
# oscillates around it. The **proximal** step (ISTA) takes a gradient step on $L$ alone and then
# applies the soft-threshold, the exact minimiser of the penalty plus a quadratic around that point:
#
# $$
# w \leftarrow \mathrm{sign}(u)\,\max\bigl(|u| - \eta\lambda,\ 0\bigr), \qquad u = w - \eta\,\nabla L(w).
# $$
#
# Every weight with $|u| \le \eta\lambda$ lands on exactly zero. We fit a softmax regression on the
# 64 standardized pixels of the digits (1,078 training images) three ways.

# %%
lin_splits = data.digits_splits(normalize="feature", flatten=True)
x_lin, y_lin = lin_splits.tensors("train")
x_lin_val, y_lin_val = lin_splits.tensors("val")
x_lin_test, y_lin_test = lin_splits.tensors("test")


def fit_softmax_regression(penalty, lam, steps=250, lr=0.5, split="test"):
    """Full-batch gradient descent from zero; penalty 'l2', 'l1' (proximal) or 'l1-subgradient'.

    Returns the weights and the accuracy on `split` ('val' for choosing λ, 'test' for reporting).
    """
    W = torch.zeros(64, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(x_lin @ W + b, y_lin)
        if penalty == "l2":
            loss = loss + lam / 2 * W.pow(2).sum()
        elif penalty == "l1-subgradient":
            loss = loss + lam * W.abs().sum()
        grad_W, grad_b = torch.autograd.grad(loss, (W, b))
        with torch.no_grad():
            W -= lr * grad_W
            b -= lr * grad_b
            if penalty == "l1":  # the proximal step: soft-threshold
                W.copy_(W.sign() * (W.abs() - lr * lam).clamp(min=0))
    x_eval, y_eval = (
        (x_lin_val, y_lin_val) if split == "val" else (x_lin_test, y_lin_test)
    )
    with torch.no_grad():
        acc = metrics.accuracy(x_eval @ W + b, y_eval).item()
    return W.detach(), acc


sparsity = {}
for name, penalty, lam_p in (("L2, λ = 0.01", "l2", 0.01), ("L1 proximal, λ = 0.01", "l1", 0.01),
                             ("L1 subgradient, λ = 0.01", "l1-subgradient", 0.01)):  # fmt: skip
    W, acc = fit_softmax_regression(penalty, lam_p)
    sparsity[name] = (W, acc)
    print(
        f"{name:25s} test accuracy {acc:.3f} | exactly zero {(W == 0).float().mean():6.1%} "
        f"| |w| < 1e-3: {(W.abs() < 1e-3).float().mean():6.1%}"
    )


# %% tags=["hide-input"]
def show_grid(
    ax,
    images,
    ncols,
    row_labels=(),
    col_labels=(),
    pad=2,
    pad_value=1.0,
    **imshow_kw,
):
    """Tile images [N, C, H, W] into one picture with torchvision's make_grid and label its rows."""
    tiles = make_grid(
        images.float(), nrow=ncols, padding=pad, pad_value=pad_value
    )
    h, w = images.shape[-2:]
    picture = (
        tiles[0] if images.shape[1] == 1 else tiles.permute(1, 2, 0).clamp(0, 1)
    )
    im = ax.imshow(picture.numpy(), interpolation="nearest", **imshow_kw)
    ax.set_yticks(
        [pad + r * (h + pad) + (h - 1) / 2 for r in range(len(row_labels))],
        list(row_labels),
    )
    ax.set_xticks(
        [pad + c * (w + pad) + (w - 1) / 2 for c in range(len(col_labels))],
        list(col_labels),
    )
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


W_l2, W_l1 = sparsity["L2, λ = 0.01"][0], sparsity["L1 proximal, λ = 0.01"][0]
fig, (ax_h, ax_w) = plt.subplots(1, 2, figsize=(13, 3.2), width_ratios=[1, 2.7])
bins = np.linspace(-1.2, 1.2, 61)
for i, (name, (W, _)) in enumerate(list(sparsity.items())[:2]):
    ax_h.hist(
        W.flatten().numpy(),
        bins=bins,
        color=viz.color(i),
        alpha=0.6,
        label=name,
    )
ax_h.set(
    yscale="log",
    xlabel="weight value",
    ylabel="number of weights (log)",
    title="The 640 weights",
)
ax_h.legend(fontsize=8, loc="upper left")
# one 8x8 weight map per class and penalty
maps = torch.cat([W_l2.T, W_l1.T]).reshape(20, 1, 8, 8)
vmax = maps.abs().max().item()
im = show_grid(ax_w, maps, 10, ["L2", "L1"], [f"class {c}" for c in range(10)], pad=1,
               pad_value=float("nan"), cmap="RdBu_r", vmin=-vmax, vmax=vmax)  # fmt: skip
ax_w.set_facecolor("#999999")  # the grey gaps between the maps
ax_w.set_title("Weight map of each class: red for, blue against, white = 0")
fig.colorbar(im, ax=ax_w, shrink=0.75, pad=0.01)
plt.show()

# %%
frac_l1 = (W_l1.abs() < 1e-3).float().mean().item()
frac_l2 = (W_l2.abs() < 1e-3).float().mean().item()
acc_l1 = sparsity["L1 proximal, λ = 0.01"][1]
assert frac_l1 > 0.5, (
    f"L1 should zero most weights: {frac_l1:.1%} near zero, expected > 50%"
)
assert frac_l2 < 0.2, f"L2 should not: {frac_l2:.1%} near zero, expected < 20%"
assert acc_l1 > 0.9, (
    f"the sparse model should still classify: test accuracy {acc_l1:.3f}, expected > 0.9"
)

# %% [markdown]
# The proximal L1 model keeps about a quarter of its weights and loses only a couple of points of
# accuracy. The L2 model has exact zeros only on the few pixels that are blank in every training
# image, where the loss gives no gradient at all. The subgradient version of L1 has the same
# objective, but its weights jitter around zero instead of landing on it. In deep networks L1 on the
# weights is rare; L2 (as weight decay) is the everyday choice unless the zeros themselves are wanted.
#
# ## Dropout
#
# Dropout (Srivastava et al., 2014) sets each unit of a layer to zero at random during training, a
# new random subset at every step. Each step therefore trains a different "thinned" network, all of
# them sharing weights, and a unit cannot rely on particular other units being present: it must be
# useful in many contexts. At test time we want the average of all these thinned networks, which the
# full network approximates when each unit's output has the same *expected value* as during training.
#
# PyTorch's convention is **inverted dropout** with $p$ the probability of **dropping** a unit:
#
# $$
# m_i \sim \mathrm{Bernoulli}(1 - p), \qquad y_i = \frac{m_i\,x_i}{1 - p}\ \text{(training)}, \qquad
# y_i = x_i\ \text{(evaluation)},
# $$
#
# so $\mathbb E[y_i] = x_i$ in both modes and the evaluation network needs no change. The original
# paper wrote $p$ for the probability of *keeping* a unit, did not rescale in training, and multiplied
# the outputs by $p$ at test time instead. The two agree in expectation; read the $p$ of any text
# carefully (`nn.Dropout(0.2)` drops 20 %).


# %%
def dropout(x, p, training=True):
    if not training or p == 0:
        return x
    # 1 = keep, with probability 1 - p
    mask = torch.empty_like(x).bernoulli_(1 - p)
    return x * (mask / (1 - p))


x_drop = torch.randn(1000, 50)
for p in (0.1, 0.5, 0.8):
    state = torch.get_rng_state()  # the same random numbers for both
    ours = dropout(x_drop, p)
    torch.set_rng_state(state)
    torch.testing.assert_close(
        ours, F.dropout(x_drop, p, training=True), rtol=0, atol=0
    )
    torch.testing.assert_close(
        dropout(x_drop, p, training=False), x_drop, rtol=0, atol=0
    )
print(
    "inverted dropout = F.dropout from the same generator state (bit for bit); evaluation = identity"
)

# %% [markdown]
# Bit-for-bit equality is fair here: both functions draw the same mask and do the same two float
# operations. The expectation is a statistical property, so its check needs a tolerance, and the
# sample size gives it: with $n$ inputs equal to 1, the kept fraction has standard deviation
# $\sqrt{p(1-p)/n}$ and the mean output $\sqrt{p/((1-p)\,n)}$. Five standard deviations make a false
# alarm a one-in-a-million event while still catching a missing rescale (an error of $p$).

# %%
ones = torch.ones(100_000)
torch.manual_seed(0)
for p in (0.2, 0.5):
    y_train = dropout(ones, p)
    kept = (y_train > 0).float().mean().item()
    sd_kept, sd_mean = (
        math.sqrt(p * (1 - p) / len(ones)),
        math.sqrt(p / (1 - p) / len(ones)),
    )
    print(
        f"p = {p}: kept {kept:.4f} of the units (expected {1 - p} ± {sd_kept:.4f}), mean output "
        f"{y_train.mean():.4f} (expected 1 ± {sd_mean:.4f})"
    )
    assert abs(kept - (1 - p)) < 5 * sd_kept, (
        f"kept fraction {kept:.4f}, expected {1 - p} ± 5 x {sd_kept:.4f}"
    )
    assert abs(y_train.mean().item() - 1) < 5 * sd_mean, (
        f"mean {y_train.mean():.4f}: the rescaling is off"
    )
    torch.testing.assert_close(
        y_train[y_train > 0], torch.full_like(y_train[y_train > 0], 1 / (1 - p))
    )


# %% [markdown]
# Dropout is applied after the activations of the wide fully connected layers (and in transformers
# after attention and MLP blocks), rarely inside convolutional stacks, where neighbouring pixels carry
# the same information and dropping single ones removes little (spatial dropout, `nn.Dropout2d`, drops
# whole channels instead). It also interacts badly with batch normalization: the statistics seen in
# training include the dropped units and those seen at test time do not (Li et al., 2019), which is
# why the two are usually not stacked directly. One sometimes reads that dropout makes the network
# "sparse"; it makes the *training-time* activations sparse, the learned weights are not.
#
# ## Normalization layers
#
# ### Batch normalization
#
# Batch normalization (Ioffe and Szegedy, 2015) standardizes every channel of a layer's output over
# the current mini-batch, then lets the network rescale it with learned parameters. For a batch
# $x \in \mathbb R^{N \times C \times H \times W}$ and channel $c$, in training:
#
# $$
# \mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad
# \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} (x_{nchw} - \mu_c)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c .
# $$
#
# The learned scale $\gamma$ and shift $\beta$ (one per channel) let the layer undo the
# normalization if that helps, and $\epsilon$ ($10^{-5}$) keeps the division finite for a constant
# channel. There are $C$ means and variances: a batch of 10 images through a convolution with 32 output
# channels gives 32 means, each over $10 \cdot H \cdot W$ numbers. Batch statistics only exist for a
# batch, so the layer also keeps **running estimates** for evaluation, updated at every training step
# with PyTorch's `momentum` $m = 0.1$ (the weight of the *new* value):
#
# $$
# \hat\mu_c \leftarrow (1 - m)\,\hat\mu_c + m\,\mu_c, \qquad
# \hat\sigma_c^2 \leftarrow (1 - m)\,\hat\sigma_c^2 + m\,\frac{NHW}{NHW - 1}\,\sigma_c^2 .
# $$
#
# The running variance uses the unbiased estimate (divided by $NHW - 1$), the normalization itself
# the biased one. In evaluation mode ($\texttt{model.eval()}$) the layer uses $\hat\mu$ and
# $\hat\sigma^2$: the output of an image no longer depends on the other images in its batch.


# %%
def batch_norm(
    x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5
):
    """BatchNorm2d from its formulas; updates running_mean/var in place when training."""
    if training:
        mean = x.mean(dim=(0, 2, 3))
        # normalize with the biased variance
        var = x.var(dim=(0, 2, 3), unbiased=False)
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            # unbiased estimate
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
    return gamma[:, None, None] * x_hat + beta[:, None, None]


gen_bn = torch.Generator().manual_seed(0)
bn = nn.BatchNorm2d(6)
with torch.no_grad():  # non-trivial gamma and beta
    bn.weight.copy_(torch.rand(6, generator=gen_bn) + 0.5)
    bn.bias.copy_(torch.randn(6, generator=gen_bn))
gamma = bn.weight.detach().clone().requires_grad_()
beta = bn.bias.detach().clone().requires_grad_()
run_mean, run_var = torch.zeros(6), torch.ones(6)
for _ in range(
    5
):  # five training steps on batches with shifted, scaled channels
    x_bn = (torch.randn(8, 6, 5, 5, generator=gen_bn) * 3 + 2).requires_grad_()
    ours = batch_norm(x_bn, gamma, beta, run_mean, run_var, training=True)
    theirs = bn.train()(x_bn)
    torch.testing.assert_close(ours, theirs)
    # compare gradients too
    weights_out = torch.randn(ours.shape, generator=gen_bn)
    grads_ours = torch.autograd.grad(
        (ours * weights_out).sum(), (x_bn, gamma, beta)
    )
    grads_theirs = torch.autograd.grad(
        (theirs * weights_out).sum(), (x_bn, bn.weight, bn.bias)
    )
    for a, b in zip(grads_ours, grads_theirs, strict=True):
        torch.testing.assert_close(a, b)
torch.testing.assert_close(run_mean, bn.running_mean)
torch.testing.assert_close(run_var, bn.running_var)
x_eval = torch.randn(4, 6, 5, 5, generator=gen_bn)
torch.testing.assert_close(
    batch_norm(x_eval, gamma, beta, run_mean, run_var, training=False),
    bn.eval()(x_eval),
)
print(
    "batch_norm = nn.BatchNorm2d: outputs and gradients in training, running statistics, eval outputs"
)

# %% [markdown]
# The running statistics are an exponential moving average of the batch statistics (the EMA section
# below has the general story). Feed a fresh layer 200 batches of 64 values drawn from
# $\mathcal N(3, 2^2)$: the running mean climbs from its initial 0 to 3, and in evaluation mode the
# layer then standardizes new data from the same distribution.

# %%
torch.manual_seed(0)
bn1 = nn.BatchNorm1d(1)
batch_means, batch_vars, running = [], [], []
for _ in range(200):
    xb_bn = 3 + 2 * torch.randn(64, 1)
    bn1.train()(xb_bn)
    batch_means.append(xb_bn.mean().item())
    # unbiased, as the running variance uses
    batch_vars.append(xb_bn.var().item())
    running.append(bn1.running_mean.item())
ema_mean, ema_var = 0.0, 1.0  # the layer's initial running statistics
for m_b, v_b in zip(batch_means, batch_vars, strict=True):
    ema_mean, ema_var = 0.9 * ema_mean + 0.1 * m_b, 0.9 * ema_var + 0.1 * v_b
torch.testing.assert_close(
    bn1.running_mean, torch.tensor([ema_mean]), rtol=1e-5, atol=1e-5
)
torch.testing.assert_close(
    bn1.running_var, torch.tensor([ema_var]), rtol=1e-5, atol=1e-5
)
x_new = 3 + 2 * torch.randn(10_000, 1)
with torch.no_grad():
    y_new = bn1.eval()(x_new)
print(
    "running mean and variance = the EMA (momentum 0.1) of the batch means and unbiased variances"
)
print(
    f"running mean {bn1.running_mean.item():.2f}, running var {bn1.running_var.item():.2f} (true 3 and 4)"
)
print(
    f"eval-mode output on new data: mean {y_new.mean():.3f}, std {y_new.std():.3f}"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(
    batch_means, ".", color=viz.color(1), ms=3, label="batch mean (64 values)"
)
ax.plot(running, color=viz.color(0), label="running mean (momentum 0.1)")
ax.axhline(3, color=viz.color("reference"), ls=":", label="true mean 3")
ax.set(
    xlabel="training step",
    ylabel="mean",
    title="BatchNorm's running mean is an EMA of the batch means",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The two modes are the most common source of batch-norm bugs. In training mode an image's output
# depends on the rest of its batch, so a model accidentally left in training mode at test time gives
# different predictions for the same image in different batches:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
net_bn = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1),
    nn.BatchNorm2d(8),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(512, 10),
)
for _ in range(20):  # give it some running statistics
    net_bn(x_small[torch.randperm(200)[:32]])
image = x_small[:1]
batch_a = torch.cat([image, x_small[1:8]])
batch_b = torch.cat([image, x_small[100:107]])
with torch.no_grad():
    for mode in ("train", "eval"):
        net_bn.train(mode == "train")
        diff = (net_bn(batch_a)[0] - net_bn(batch_b)[0]).abs().max().item()
        print(
            f"{mode:5s} mode: the first image's logits differ between the two batches: {diff > 1e-5}"
        )

# %% [markdown]
# A batch of a single image is a case of its own. `BatchNorm2d` still has $H \times W$ values per
# channel, so in training mode it works: it standardizes each channel of that one image over its own
# positions, which is exactly instance normalization (next section), and a different function from
# the one evaluation mode computes with the running statistics. `BatchNorm1d` on `[N, C]` features has
# a single value per channel, whose variance is 0; PyTorch refuses it in training mode:

# %%
# NBVAL_CHECK_OUTPUT
one_image = (
    torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
)
out_one = nn.BatchNorm2d(8).train()(one_image)
# statistics over H x W of one image
torch.testing.assert_close(out_one, F.instance_norm(one_image))
stds = [round(v, 2) for v in out_one.detach().std(dim=(0, 2, 3)).tolist()]
print(
    "BatchNorm2d, training, batch of one = instance norm; per-channel std of the output:",
    stds,
)
try:
    nn.BatchNorm1d(8).train()(torch.randn(1, 8))
except ValueError as err:
    print("BatchNorm1d, training, batch of one: ValueError:", err)

# %% [markdown]
# **Why does batch norm help?** Networks with BN train with larger learning rates, depend less on the
# initialization, and often need less dropout (the batch statistics add noise, a mild regularizer).
# Ioffe and Szegedy attributed this to reducing "internal covariate shift", the drift of a layer's
# input distribution while the earlier layers change. That explanation is often repeated as settled,
# but it is disputed: Santurkar et al. (2018) added noise *after* BN layers to create more covariate
# shift and the networks trained just as well, while BN made the loss and its gradients smoother
# (more Lipschitz), which allows larger steps. Treat the mechanism as an open question and the
# benefits as measured. The usual practice, placing BN between a convolution and its activation and
# dropping the convolution's bias (BN's $\beta$ replaces it), is a convention (`cnn.ConvNormAct`),
# not a law.
#
# ### Layer, instance and group normalization
#
# The same standardization can be computed over other axes of $x \in \mathbb R^{N\times C\times H
# \times W}$. The statistics are always taken over the shaded set of one colour in the figure below,
# and $\gamma$, $\beta$ are per channel (per element for PyTorch's `LayerNorm`):
#
# | method | statistics over | one mean per | depends on the batch? |
# |---|---|---|---|
# | BatchNorm (Ioffe and Szegedy, 2015) | $N, H, W$ | channel | yes, and train ≠ eval |
# | LayerNorm (Ba et al., 2016) | $C, H, W$ | sample | no |
# | InstanceNorm (Ulyanov et al., 2016) | $H, W$ | sample and channel | no |
# | GroupNorm (Wu and He, 2018) | $H, W$ and a group of $C/G$ channels | sample and group | no |
#
# LayerNorm is the normalization of transformers (there over the $C$ features of each token), where
# sequence lengths vary and batch statistics would be awkward. InstanceNorm removes each image's
# per-channel contrast and brightness, which is what style transfer and image generation want
# (chapter 19); for classification, where contrast can carry information, it is an odd choice.
# GroupNorm sits between LN ($G = 1$) and IN ($G = C$) and works with batches of one or two images,
# where BN's statistics are useless (detection and segmentation with large images). All four can be
# written as one function that standardizes over a set of axes:


# %%
def normalize(x, dims, eps=1e-5):
    """Standardize x over the axes `dims` (biased variance), as every normalization layer does."""
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def group_norm(x, groups, eps=1e-5):
    n, c, h, w = x.shape
    return normalize(
        x.reshape(n, groups, c // groups, h, w), dims=(2, 3, 4), eps=eps
    ).reshape(n, c, h, w)


x_norm = (
    torch.randn(4, 6, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1
)
checks = {
    "BatchNorm (training)": (
        normalize(x_norm, (0, 2, 3)),
        F.batch_norm(x_norm, None, None, training=True),
    ),
    "LayerNorm": (
        normalize(x_norm, (1, 2, 3)),
        F.layer_norm(x_norm, x_norm.shape[1:]),
    ),
    "InstanceNorm": (normalize(x_norm, (2, 3)), F.instance_norm(x_norm)),
    "GroupNorm, 3 groups": (group_norm(x_norm, 3), F.group_norm(x_norm, 3)),
}
for name, (ours, theirs) in checks.items():
    torch.testing.assert_close(ours, theirs, msg=name)
# the per-sample methods give an image the same output alone or in a batch
torch.testing.assert_close(
    F.layer_norm(x_norm[:1], x_norm.shape[1:]),
    F.layer_norm(x_norm, x_norm.shape[1:])[:1],
)
print("from-scratch BN, LN, IN and GN equal torch's:", ", ".join(checks))


# %% tags=["hide-input"]
def draw_norm_cube(ax, shaded, title, n=4, c=6, hw=4, depth=(0.55, 0.4)):
    """An N x C x (H·W) block as in Wu and He (2018): C to the right, H·W up, N into the page.

    shaded(i, j) says whether the statistics of the highlighted group include sample i, channel j.
    """
    dx, dy = depth
    polygons, on = [], []

    def cell(
        corners, is_on
    ):  # corners as (channel, height, sample), projected obliquely
        polygons.append(
            [(cc + i_n * dx, hh + i_n * dy) for cc, hh, i_n in corners]
        )
        on.append(is_on)

    for j in range(c):  # front face: sample 0
        for k in range(hw):
            cell(
                [(j, k, 0), (j + 1, k, 0), (j + 1, k + 1, 0), (j, k + 1, 0)],
                shaded(0, j),
            )
    for j in range(c):  # top face: every sample, every channel
        for i in range(n):
            cell(
                [
                    (j, hw, i),
                    (j + 1, hw, i),
                    (j + 1, hw, i + 1),
                    (j, hw, i + 1),
                ],
                shaded(i, j),
            )
    for i in range(n):  # right face: every sample, last channel
        for k in range(hw):
            cell(
                [(c, k, i), (c, k + 1, i), (c, k + 1, i + 1), (c, k, i + 1)],
                shaded(i, c - 1),
            )
    colors = [viz.color(0) if v else "white" for v in on]
    ax.add_collection(
        PolyCollection(
            polygons, facecolors=colors, edgecolors="#333333", linewidths=0.6
        )
    )
    ax.text(c / 2, -0.7, "C (channels)", ha="center", fontsize=9)
    ax.text(
        -0.5, hw / 2, "H, W", ha="right", va="center", fontsize=9, rotation=90
    )
    ax.text(
        c + n * dx / 2 + 0.3,
        n * dy / 2 - 0.4,
        "N (batch)",
        fontsize=9,
        rotation=36,
    )
    ax.set(
        xlim=(-1.2, c + n * dx + 1.4),
        ylim=(-1.2, hw + n * dy + 0.4),
        aspect="equal",
        title=title,
    )
    ax.axis("off")


fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
cubes = {
    "Batch norm": lambda i, j: j == 1,
    "Layer norm": lambda i, j: i == 0,
    "Instance norm": lambda i, j: i == 0 and j == 1,
    "Group norm (2 groups)": lambda i, j: i == 0 and j < 3,
}
for ax, (title, rule) in zip(axes, cubes.items(), strict=True):
    draw_norm_cube(ax, rule, title)
fig.suptitle("Blue: the values that share one mean and variance")
plt.show()

# %% [markdown]
# ### Batch norm against group norm at small batch sizes
#
# Wu and He (2018) introduced group norm for the batch sizes of detection and segmentation, one or two
# large images per GPU, where batch norm's error rises sharply. We can measure the same effect on the
# digits. The network below has a normalization layer after each of its three convolutions and one in
# its classifier head, where a `BatchNorm1d` sees only the $N$ values of a batch: with two images its
# normalized outputs are $\pm 1$ whatever the input, while in evaluation mode the running statistics
# give graded values, so training and evaluation compute different functions. Group norm (4 groups)
# computes the same function in both modes. Each network trains on the 200 digits for 6 epochs with
# Adam at a learning rate of $2\cdot10^{-3}$ (100 steps per epoch at batch 2, 7 at batch 32); we
# report test accuracy, one seed per cell, since the effect is large.


# %%
def norm_cnn(norm):
    """Three conv-norm-ReLU stages and a normalized hidden layer; norm is 'batch' or 'group'."""

    def norm_layer(c):
        return nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(4, c)

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), norm_layer(16), nn.ReLU(), nn.MaxPool2d(2),   # 4x4
        nn.Conv2d(16, 32, 3, padding=1, bias=False), norm_layer(32), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
        nn.Conv2d(32, 32, 3, padding=1, bias=False), norm_layer(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64, bias=False),
        nn.BatchNorm1d(64) if norm == "batch" else nn.GroupNorm(4, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(14, 1.5))
viz.chain_diagram(
    [("digit\n[B, 1, 8, 8]", "io"), ("conv 3×3 + norm\n+ ReLU [B, 16, 8, 8]", "conv"),
     ("max pool 2×2\n[B, 16, 4, 4]", "pool"), ("conv 3×3 + norm\n+ ReLU [B, 32, 4, 4]", "conv"),
     ("max pool 2×2\n[B, 32, 2, 2]", "pool"), ("conv 3×3 + norm\n+ ReLU [B, 32, 2, 2]", "conv"),
     ("global avg pool\n[B, 32]", "pool"), ("linear 32 → 64\n+ norm + ReLU", "linear"),
     ("linear 64 → 10\n[B, 10]", "linear")],
    ax=ax, spacing=2.2, block_size=(2.0, 0.8), fontsize=8,
    title="norm_cnn(norm): every norm is BatchNorm (2d, and 1d in the head) or GroupNorm with 4 groups",
)  # fmt: skip
plt.show()

# %%
batch_sizes = (2, 4, 32)
norm_acc = {}
for norm in ("batch", "group"):
    for bs in batch_sizes:
        torch.manual_seed(0)
        model = norm_cnn(norm).to(device)
        loader = DataLoader(
            TensorDataset(x_small, y_small),
            batch_size=bs,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        train.fit(model, loader, epochs=6, optimizer=torch.optim.Adam(model.parameters(), lr=2e-3),
                  loss_fn=F.cross_entropy, device=device, progress=False)  # fmt: skip
        norm_acc[norm, bs] = accuracies(model)["test"]
print("batch size      " + "".join(f"{bs:>8d}" for bs in batch_sizes))
for norm in ("batch", "group"):
    print(
        f"{norm} norm test acc"
        + "".join(f"{norm_acc[norm, bs]:8.3f}" for bs in batch_sizes)
    )

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3.4))
for i, norm in enumerate(("batch", "group")):
    ax.plot(
        batch_sizes,
        [norm_acc[norm, bs] for bs in batch_sizes],
        "o-",
        color=viz.color(i),
        label=f"{norm} norm",
    )
ax.set(xscale="log", xticks=batch_sizes, xticklabels=batch_sizes, xlabel="batch size", ylabel="test accuracy",
       title="Normalization at small batch sizes (6 epochs)")  # fmt: skip
ax.minorticks_off()
ax.legend()
plt.show()

# %%
bn_drop = norm_acc["batch", 32] - norm_acc["batch", 2]
gn_drop = norm_acc["group", 32] - norm_acc["group", 2]
assert bn_drop > 0.1, (
    f"batch norm should lose > 0.1 test accuracy from batch 32 to 2, lost {bn_drop:.3f}"
)
assert norm_acc["group", 2] > norm_acc["batch", 2] + 0.08, (
    f"at batch 2 group norm should beat batch norm by > 0.08: {norm_acc['group', 2]:.3f} vs {norm_acc['batch', 2]:.3f}"
)
assert gn_drop < 0.03, (
    f"group norm should not lose accuracy at batch 2: batch 32 -> 2 changed it by {-gn_drop:.3f}"
)

# %% [markdown]
# Batch norm loses about twenty points at batch 2, and group norm does not. At batch 32 group norm is
# the lower of the two here: with the same number of epochs it takes only 42 steps, and it is the
# slower of the two to train (Wu and He also found it slightly behind batch norm at large batches).
# The usual remedies when batches must be small are group norm, or batch norm whose statistics are
# frozen at the values of a pretrained model, common in detection.

# %% [markdown]
# ## Parameter sharing
#
# Another way to restrict a model is to force groups of its weights to be *equal*. A convolution is a
# fully connected layer in which every output position uses the same small kernel, shifted: the
# weights are shared across positions and all the weights between distant pixels are fixed at zero.
# This builds in a piece of prior knowledge (a pattern means the same thing wherever it appears), and
# it saves an enormous number of parameters. Take a $3 \times 32 \times 32$ image and 16 output maps
# of the same size:

# %%
# NBVAL_CHECK_OUTPUT
conv = nn.Conv2d(3, 16, kernel_size=3, padding=1)
fc_weights = (3 * 32 * 32) * (
    16 * 32 * 32
) + 16 * 32 * 32  # a dense layer with the same input and output
conv_weights = sum(p.numel() for p in conv.parameters())
print(f"3x3 convolution, 3 -> 16 channels: {conv_weights:,} parameters")
print(
    f"fully connected layer, 3x32x32 -> 16x32x32: {fc_weights:,} parameters ({fc_weights / conv_weights:,.0f}x)"
)

# %% [markdown]
# We can make the equivalence concrete: applying a convolution to each of the $H W$ one-hot images
# gives the columns of the dense matrix it implements. On a $1 \times 6 \times 6$ input with two
# output channels, the matrix has $72 \times 36$ entries but only the 18 kernel values (plus zeros):

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
conv_small = nn.Conv2d(1, 2, kernel_size=3, padding=1)
with torch.no_grad():
    basis = torch.eye(36).reshape(36, 1, 6, 6)
    dense = (
        (conv_small(basis) - conv_small.bias[None, :, None, None])
        .reshape(36, 72)
        .T
    )  # [72 outputs, 36 inputs]
    x_pixels = torch.rand(5, 1, 6, 6)
    torch.testing.assert_close(
        conv_small(x_pixels).flatten(1),
        x_pixels.flatten(1) @ dense.T + conv_small.bias.repeat_interleave(36),
    )
distinct = torch.unique(dense[dense != 0].round(decimals=6))
print(
    f"dense matrix {tuple(dense.shape)}: {int((dense != 0).sum())} non-zero entries, {len(distinct)} distinct values"
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(4.2, 6))
vmax = dense.abs().max().item()
ax.imshow(
    dense.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
)
ax.set(
    xlabel="input pixel (6x6, row by row)",
    ylabel="output (2 maps of 6x6)",
    title="A conv layer as a dense matrix",
)
ax.grid(False)
plt.show()

# %% [markdown]
# Each band is one kernel row; the same colours repeat down the diagonal (shared weights) and the rest
# is zero (local connections). Chapter 06 (CNNs) builds networks out of this layer; the attention and
# transformer chapters share weights across tokens in the same way.
#
# ## Stochastic depth
#
# Dropout removes units; **stochastic depth** (Huang et al., 2016) removes whole residual blocks. A
# residual block computes $H_l = \mathrm{ReLU}(f_l(H_{l-1}) + H_{l-1})$ (chapter 06); in training,
# its branch $f_l$ is kept with a *survival probability* $p_l$ and skipped otherwise:
#
# $$
# H_l = \mathrm{ReLU}\bigl(b_l\, f_l(H_{l-1}) + H_{l-1}\bigr), \qquad b_l \sim \mathrm{Bernoulli}(p_l).
# $$
#
# A skipped block is the identity, so the network stays usable, and in expectation the network is
# shorter and cheaper to train. Two details that summaries often leave out:
#
# - **Test time.** Every block is kept, and, as with the original dropout, the branch is scaled by
#   its survival probability, $H_l = \mathrm{ReLU}(p_l\, f_l(H_{l-1}) + H_{l-1})$, so that it
#   contributes what it contributed on average in training. Modern code (timm, torchvision,
#   `cnn.DropPath`) uses the inverted form: in training a kept branch is divided by $p_l$ and the
#   test-time network is left unchanged.
# - **Which blocks.** The paper's linear decay rule lets the survival probability fall with depth,
#   from $1$ at the input to $p_L$ for the last of $L$ blocks: $p_l = 1 - \frac{l}{L}(1 - p_L)$, with
#   $p_L = 0.5$. Early blocks compute features everything else needs; late ones refine.
#
# The drop decision is per sample (`"row"` mode in torchvision): within a batch, some images take the
# shortcut through a block and others do not.


# %%
def drop_path(branch, p, training=True):
    """Stochastic depth with drop probability p (= 1 - survival), inverted scaling, one draw per sample."""
    if not training or p == 0:
        return branch
    keep = torch.empty(branch.shape[0], *[1] * (branch.ndim - 1)).bernoulli_(
        1 - p
    )  # [N, 1, 1, 1]
    return branch * keep / (1 - p)


branch_out = torch.randn(64, 8, 4, 4)
for p in (0.1, 0.5):
    torch.manual_seed(3)
    ours = drop_path(branch_out, p)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, cnn.DropPath(p).train()(branch_out))
    torch.manual_seed(3)
    torch.testing.assert_close(
        ours, torchvision.ops.StochasticDepth(p, "row").train()(branch_out)
    )
    kept = (ours.flatten(1) != 0).any(1)
    # survivors scaled by 1/(1-p)
    torch.testing.assert_close(ours[kept] * (1 - p), branch_out[kept])
torch.testing.assert_close(cnn.DropPath(0.5).eval()(branch_out), branch_out)
print(
    "drop_path = cnn.DropPath = torchvision StochasticDepth(p, 'row'), random draws included"
)

# %% [markdown]
# The original form, written out as well: in training a branch is kept (0 or 1 times its output), at
# test time it is scaled by $p_l$. Each form must give in training, on average, what it gives at test
# time. We measure the average of a gated branch whose output is 1 over $n = 10^5$ draws, and accept
# five standard deviations of the mean: $\sqrt{p(1-p)/n}$ for the original form and
# $\sqrt{(1-p)/(p\,n)}$ for the inverted one.


# %%
def drop_path_original(branch, survival, training=True):
    """Stochastic depth as in Huang et al. (2016): keep or skip in training, scale by survival at test."""
    if not training:
        return branch * survival
    keep = torch.empty(branch.shape[0], *[1] * (branch.ndim - 1)).bernoulli_(
        survival
    )
    return branch * keep


torch.manual_seed(0)
survival = np.round(np.arange(0.1, 1.0, 0.1), 1)
n_draws = 100_000
branch_ones = torch.ones(n_draws, 1)
gated_original = [
    drop_path_original(branch_ones, s).mean().item() for s in survival
]
gated_inverted = [drop_path(branch_ones, 1 - s).mean().item() for s in survival]
for s, g_o, g_i in zip(survival, gated_original, gated_inverted, strict=True):
    test_o = drop_path_original(branch_ones[:1], s, training=False).item()
    test_i = drop_path(branch_ones[:1], 1 - s, training=False).item()
    assert abs(g_o - test_o) < 5 * math.sqrt(s * (1 - s) / n_draws), (
        f"original form, p = {s}: {g_o:.4f} vs {test_o}"
    )
    assert abs(g_i - test_i) < 5 * math.sqrt((1 - s) / (s * n_draws)), (
        f"inverted form, p = {s}: {g_i:.4f} vs {test_i}"
    )
print(
    f"survival 0.8: original form averages {gated_original[7]:.3f} in training (test time uses 0.8)"
)
print(
    f"survival 0.8: inverted form averages {gated_inverted[7]:.3f} in training (test time uses 1)"
)

# %% tags=["hide-input"]
L_blocks, p_last = 12, 0.5
blocks = np.arange(1, L_blocks + 1)
survival_rule = 1 - blocks / L_blocks * (1 - p_last)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(
    survival,
    gated_original,
    "o",
    color=viz.color(0),
    label="original, training: mean of b·f",
)
axes[0].plot(
    survival, survival, color=viz.color(0), lw=1, label="original, test: p·f"
)
axes[0].plot(
    survival,
    gated_inverted,
    "s",
    color=viz.color(1),
    label="inverted, training: mean of b·f / p",
)
axes[0].axhline(1, color=viz.color(1), lw=1, label="inverted, test: f")
axes[0].set(
    xlabel="survival probability p",
    ylabel="average branch output (f = 1)",
    title="Training mean = test value",
)
axes[0].legend(fontsize=8)
axes[1].bar(blocks, survival_rule, color=viz.color(2))
axes[1].set(xlabel="residual block l", ylabel="survival probability", title=f"Linear decay rule, L = {L_blocks}, p_L = 0.5",
            ylim=(0, 1.05), xticks=blocks)  # fmt: skip
plt.show()

# %% [markdown]
# With the linear rule the network of 12 blocks keeps $\sum_l p_l = 8.75$ blocks on average. In
# `course_lib` a residual network takes the rate of its last block, `cnn.ResNet(drop_path=0.2)`, and
# spreads it linearly over the blocks from 0 (as timm does; the paper's rule above already drops
# the first block with probability $(1-p_L)/L$).
#
# ## Data augmentation
#
# The best regularizer is more data. Augmentation manufactures it: it applies transformations that do
# not change the label (a cat shifted by three pixels is still a cat) so the model sees a new version
# of each image at every epoch and *learns* to ignore those changes. Which transformations are safe
# depends on the task: a mirrored digit 2 is not a 2, a rotated 6 becomes a 9, and colour changes are
# out if colour is part of the label. Augmentation is prior knowledge written as code.
#
# The families:
#
# - **geometric**: flips, crops and random resized crops, translations, rotations, shears, scaling;
# - **photometric**: brightness, contrast, saturation, sharpness, solarize, posterize, equalize;
# - **erasing**: Cutout (DeVries and Taylor, 2017) and Random Erasing (Zhong et al., 2020) paint out a
#   random rectangle, so the model cannot rely on a single part of the object;
# - **mixing**: MixUp (Zhang et al., 2018) blends two images *and* their labels; CutMix (Yun et al.,
#   2019) pastes a rectangle of one image into another and mixes the labels by the pasted area;
# - **learned or generated**: augmenting in a feature space (an autoencoder's latent space, chapter
#   09), samples from a generative model (chapter 10), and policies found by search or meta-learning
#   (AutoAugment); RandAugment below showed that a random policy with two numbers does about as well.
#
# `course_lib.augment` holds batch versions of these for the course's tensors: each draws its random
# parameters per image, vectorized, on the device of the batch. MixUp, written from its formula with
# $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$ and a random partner for every image,
#
# $$
# \tilde x_i = \lambda_i x_i + (1 - \lambda_i)\, x_{\pi(i)}, \qquad
# \tilde y_i = \lambda_i y_i + (1 - \lambda_i)\, y_{\pi(i)},
# $$
#
# with one-hot labels $y$, matches the library version given the same random numbers:

# %%
shapes = data.make_shapes(8, size=32, min_objects=1, max_objects=1, seed=0)
x_shapes, y_shapes = shapes.images, torch.cat(shapes.labels)


def mixup_scratch(x, y, alpha, num_classes, generator):
    perm = torch.randperm(len(x), generator=generator)
    gamma_draws = torch._standard_gamma(
        torch.full((2, len(x)), alpha, dtype=torch.float64), generator=generator
    )
    lam = (
        gamma_draws[0] / gamma_draws.sum(0)
    ).float()  # Beta(alpha, alpha) as G1 / (G1 + G2)
    y1 = F.one_hot(y, num_classes).float()
    return lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[
        perm
    ], lam[:, None] * y1 + (1 - lam[:, None]) * y1[perm]


ours = mixup_scratch(
    x_shapes, y_shapes, 0.4, 3, torch.Generator().manual_seed(0)
)
theirs = augment.mixup(
    x_shapes,
    y_shapes,
    alpha=0.4,
    num_classes=3,
    generator=torch.Generator().manual_seed(0),
)
torch.testing.assert_close(ours, theirs)
torch.testing.assert_close(theirs[1].sum(1), torch.ones(8))
print("MixUp from its formula = augment.mixup; mixed labels sum to 1")

# CutMix: the same random draws on an image of image numbers reveal exactly which pixels were pasted
x_cut, y_cut = augment.cutmix(
    x_shapes,
    y_shapes,
    alpha=1.0,
    num_classes=3,
    generator=torch.Generator().manual_seed(1),
)
ids = torch.arange(8.0)[:, None, None, None].expand(8, 1, 32, 32)
ids_cut, _ = augment.cutmix(
    ids,
    y_shapes,
    alpha=1.0,
    num_classes=3,
    generator=torch.Generator().manual_seed(1),
)
own_fraction = (ids_cut == ids).float().mean(dim=(1, 2, 3))
mixed_classes = (y_cut > 0).sum(
    1
) == 2  # partner of another class: the two labels are visible
torch.testing.assert_close(
    y_cut[torch.arange(8), y_shapes][mixed_classes], own_fraction[mixed_classes]
)
print(
    "CutMix: own-label weight = fraction of own pixels",
    [f"{f:.3f}" for f in own_fraction[mixed_classes].tolist()],
)

# %% [markdown]
# One detail of MixUp is often reported wrongly. The paper's code draws **one** $\lambda$ per batch
# and mixes the batch with a shuffled copy of itself; timm's default (`mode="batch"`) and
# torchvision's `v2.MixUp` (partner: the batch rolled by one) do the same, and so does CutMix's code
# for the rectangle. `course_lib.augment` draws one $\lambda$ (and one rectangle) per image by
# default, timm's `mode="elem"`, which gives each batch a spread of mixing weights; `per_batch=True`
# gives the paper's form. With every image in a class of its own, the weight of an image's own label
# is its $\lambda$ (or 1 where the permutation paired it with itself):

# %%
own_class = torch.arange(8)
for per_batch in (False, True):
    _, y_mixed = augment.mixup(
        x_shapes,
        own_class,
        alpha=0.4,
        num_classes=8,
        per_batch=per_batch,
        generator=torch.Generator().manual_seed(3),
    )
    lams = y_mixed[own_class, own_class]
    print(
        f"per_batch={per_batch!s:5}: own-label weights",
        [f"{v:.2f}" for v in lams.tolist()],
    )
    assert (len(torch.unique(lams[lams < 1])) == 1) == per_batch, (
        "one lambda per batch exactly when per_batch"
    )

# %% [markdown]
# (Where an image's partner has the same class, both weights land on one label and it stays 1.)
# A gallery of the batch functions on the coloured shapes, with one row from
# `augment.shapes_pipeline`, a torchvision pipeline applied image by image (next section):

# %% tags=["hide-input"]
g_aug = torch.Generator().manual_seed(2)
gallery = {
    "original": x_shapes,
    "random_flip": augment.random_flip(x_shapes, 0.5, generator=g_aug),
    "random_translate(6)": augment.random_translate(
        x_shapes, 6, generator=g_aug
    ),
    "random_resized_crop": augment.random_resized_crop(
        x_shapes, 32, scale=(0.25, 1.0), generator=g_aug
    ),
    "cutout(12)": augment.cutout(x_shapes, 12, value=0.5, generator=g_aug),
    "shapes_pipeline(32)": torch.stack(
        [augment.shapes_pipeline(32)(img) for img in x_shapes]
    ),  # torchvision v2
    "mixup (α = 0.4)": theirs[0],
    "cutmix (α = 1)": x_cut,
}
fig, ax = plt.subplots(figsize=(8, 10.8))
show_grid(
    ax, torch.cat([imgs[:6] for imgs in gallery.values()]), 6, list(gallery)
)
for r, soft_labels in (
    (6, theirs[1]),
    (7, y_cut),
):  # the mixed labels, written on the mixed images
    for c in range(6):
        text = " / ".join(f"{v:.2f}" for v in soft_labels[c].tolist())
        ax.text(2 + c * 34 + 1, 2 + r * 34 + 31, text, fontsize=7, color="white", va="bottom",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})  # fmt: skip
ax.set_title(
    "course_lib.augment on shapes; mixed labels as circle / square / triangle"
)
plt.show()

# %% [markdown]
# Each transformation changes what the model sees but not the label, with two caveats visible above:
# zero-filled borders (a translated image gets a black frame unlike any real image), and crops that
# can cut the object out entirely, and with it the label. `shapes_pipeline` keeps at least half of the
# image for that reason, which can still lose a small shape in a corner.
#
# ### Per-sample pipelines with torchvision
#
# `torchvision.transforms.v2` has every classic augmentation, but a v2 transform called on a *batch*
# draws one set of random parameters for the whole batch. Eight copies of one digit through
# `v2.RandomRotation(30)` come out identical; through `augment.TransformDataset`, which calls the
# transform once per sample inside a `DataLoader`, each copy gets its own angle:

# %%
# NBVAL_CHECK_OUTPUT
one_digit = x_small[3:4].expand(8, 1, 8, 8)
rotate = v2.RandomRotation(30)
batch_rotated = rotate(one_digit)
per_sample = augment.TransformDataset(
    TensorDataset(one_digit, torch.zeros(8)), rotate
)
sample_rotated = torch.stack([per_sample[i][0] for i in range(8)])
print(
    "v2 on a batch: all 8 outputs identical?",
    bool((batch_rotated == batch_rotated[:1]).all()),
)
print(
    "TransformDataset: all 8 outputs identical?",
    bool((sample_rotated == sample_rotated[:1]).all()),
)

# %% [markdown]
# `augment.digits_pipeline()` is a small random affine map (rotation up to 10°, shift up to one pixel,
# zoom ±10 %, no flips), `augment.shapes_pipeline(size)` a random resized crop, a flip and a
# brightness/contrast jitter (no hue changes: colours are labels in the shapes' captions). Both
# accept `randaugment=(n, m)`.
#
# ### RandAugment
#
# RandAugment (Cubuk et al., 2020) replaced the expensive search for augmentation policies by two
# numbers: for each image, apply $n$ operations chosen uniformly at random from a fixed list
# (identity, rotate, shear and translate in $x$ and $y$, brightness, colour, contrast, sharpness,
# posterize, solarize, autocontrast, equalize), all at one shared magnitude $m$ (0 to 30 in
# torchvision), each with a random sign where that makes sense. Two numbers are cheap to tune: larger models and datasets want larger $m$. The grid
# shows eight shapes and eight digits (enlarged to 24 pixels first, so that rotations and shears are
# visible) with $n = 2$ at four magnitudes:

# %%
# one digit of each class 0-7, enlarged so that rotations and shears show
digits_big = F.interpolate(x_small[::20][:8], size=24, mode="nearest")


def randaugment_grid(num_ops, magnitude, seed):
    """Eight shapes and eight digits through v2.RandAugment(num_ops, magnitude), one draw per image."""
    torch.manual_seed(seed)
    ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, fill=0.0)
    shapes_out = torch.stack([ra(img) for img in x_shapes])
    digits_out = torch.stack([ra(img) for img in digits_big]).repeat(1, 3, 1, 1)
    return shapes_out, F.interpolate(digits_out, size=32, mode="nearest")


# %% tags=["hide-input"]
magnitudes = (0, 9, 18, 27)
fig, ax = plt.subplots(figsize=(15, 4.4))
rows = [torch.cat(randaugment_grid(2, m, seed=1)) for m in magnitudes]
show_grid(ax, torch.cat(rows), 16, [f"m = {m}" for m in magnitudes])
ax.set_title(
    "RandAugment, n = 2 operations per image, at four magnitudes (the same operations in every row)"
)
plt.show()

# %% [markdown]
# Even at $m = 0$ some images change: equalize and autocontrast have no magnitude, and equalizing a
# dark, noisy image blows its noise up into colours. At $m = 27$ several digits are unreadable: shears
# and translations of about 40 % of the image push the strokes out of the frame, and posterize and
# solarize wipe out the grey levels. Such magnitudes are tuned for large photographs and large
# models. Explore $n$ and $m$ below; watch which operations change an image's meaning and which do not.


# %%
def show_randaugment(num_ops=2, magnitude=9, seed=0):
    fig, ax = plt.subplots(figsize=(10, 3.0), layout="none")
    fig.subplots_adjust(left=0.07, right=0.99, top=0.9, bottom=0.02)
    show_grid(
        ax,
        torch.cat(randaugment_grid(num_ops, magnitude, seed)),
        8,
        ["shapes", "digits"],
    )
    ax.set_title(
        f"RandAugment(num_ops={num_ops}, magnitude={magnitude}), seed {seed}"
    )
    plt.show()


_ = widgets.interact(
    show_randaugment,
    num_ops=widgets.IntSlider(value=2, min=1, max=4, description="n (ops)"),
    magnitude=widgets.IntSlider(
        value=9, min=0, max=30, description="m (magnitude)"
    ),
    seed=widgets.IntSlider(value=0, min=0, max=20, description="seed"),
)

# %% [markdown]
# ### Repeated augmentation
#
# Repeated augmentation (Hoffer et al., 2020; Berman et al., 2019) builds a batch of size $B$ from
# $B/m$ distinct images, each augmented $m$ times. The samples in a batch are then no longer
# independent, which is the point: the gradient averages over several views of the same image and
# the model is pushed harder toward invariance. DeiT uses it with $m = 3$ to train vision
# transformers on ImageNet alone. `augment.RepeatedAugmentationSampler` repeats each index of a
# random permutation $m$ times in a row; a per-sample transform makes the copies differ:

# %%
# NBVAL_CHECK_OUTPUT
ra_dataset = augment.TransformDataset(
    TensorDataset(x_small, y_small), augment.digits_pipeline()
)
ra_sampler = augment.RepeatedAugmentationSampler(
    ra_dataset, num_repeats=4, generator=torch.Generator().manual_seed(0)
)
ra_loader = DataLoader(ra_dataset, batch_size=16, sampler=ra_sampler)
torch.manual_seed(0)
ra_images, ra_labels = next(iter(ra_loader))
print(f"sampler length {len(ra_sampler)} = 200 images x 4 copies")
print("labels of the first batch:", ra_labels.tolist())

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(3.6, 3.8))
show_grid(ax, ra_images, 4, [f"digit {v}" for v in ra_labels[::4].tolist()], [f"copy {k + 1}" for k in range(4)],
          pad=1, vmin=0, vmax=1)  # fmt: skip
ax.set_title("One batch of 16: 4 images x 4 copies")
plt.show()

# %% [markdown]
# ## Exponential moving average of the weights
#
# An exponential moving average (EMA) of a sequence $x_1, x_2, \dots$ with **decay** $\beta \in [0,
# 1)$ is
#
# $$
# e_t = \beta\, e_{t-1} + (1 - \beta)\, x_t
#     = (1 - \beta)\sum_{k=0}^{t-1} \beta^k\, x_{t-k} + \beta^t e_0 .
# $$
#
# The newest value has weight $1 - \beta$, the one before $(1 - \beta)\beta$, and so on: geometric
# weights that sum to $1 - \beta^t$, so the average covers roughly the last $1/(1 - \beta)$ values.
# With $\beta = 0.1$ the weights are 0.9, 0.09, 0.009, ... (90 % on the newest value: very little
# smoothing); with $\beta = 0.9$ they are 0.1, 0.09, 0.081, ... spread over about ten values. Two
# naming conventions coexist: `optim.WeightEMA(decay=0.999)` and Adam's $\beta$ give the weight of
# the *old* average, BatchNorm's `momentum=0.1` the weight of the *new* value; BN's running mean is an
# EMA with $\beta = 0.9$. An EMA started at $e_0 = 0$ is biased toward 0 for the first
# $\sim 1/(1-\beta)$ steps (Adam divides by $1 - \beta^t$ to correct it); an EMA of weights starts
# from a copy of the model and has no such bias.

# %%
t_series = torch.arange(400, dtype=torch.float64)
signal = torch.sin(2 * math.pi * t_series / 200) + 0.002 * t_series
series = signal + 0.4 * torch.randn(
    400, generator=torch.Generator().manual_seed(0), dtype=torch.float64
)


def ema_series(x, beta):
    out, e = [], x[0]
    for value in x:
        e = beta * e + (1 - beta) * value
        out.append(e)
    return torch.stack(out)


# check the loop against the closed form (a weighted sum with weights (1 - beta) beta^k, plus beta^t e0)
beta_check, t_check = 0.9, 50
weights_k = (1 - beta_check) * beta_check ** torch.arange(
    t_check, dtype=torch.float64
)
closed = (
    weights_k * series[:t_check].flip(0)
).sum() + beta_check**t_check * series[0]
torch.testing.assert_close(ema_series(series[:t_check], beta_check)[-1], closed)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), width_ratios=[1, 1.8])
for i, beta_w in enumerate((0.1, 0.9)):
    k = np.arange(12)
    axes[0].bar(
        k + 0.4 * i - 0.2,
        (1 - beta_w) * beta_w**k,
        width=0.4,
        color=viz.color(i),
        label=f"β = {beta_w}",
    )
axes[0].set(
    xlabel="age of the value (steps ago)",
    ylabel="weight in the average",
    title="EMA weights (1 − β) β^k",
)
axes[0].legend()
axes[1].plot(
    t_series,
    series,
    color=viz.color("reference"),
    lw=0.6,
    alpha=0.6,
    label="noisy series",
)
axes[1].plot(t_series, signal, color=viz.color(7), lw=1, ls=":", label="signal")
for i, beta_s in enumerate((0.9, 0.99)):
    axes[1].plot(
        t_series,
        ema_series(series, beta_s),
        color=viz.color(i + 2),
        lw=1.8,
        label=f"EMA, β = {beta_s}",
    )
axes[1].set(
    xlabel="step", ylabel="value", title="Larger β: smoother, but lagging"
)
axes[1].legend(fontsize=8, ncols=2)
plt.show()


# %%
def show_ema(beta=0.9):
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="none")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.16)
    smooth = ema_series(series, beta)
    ax.plot(
        t_series,
        series,
        color=viz.color("reference"),
        lw=0.6,
        alpha=0.6,
        label="noisy series",
    )
    ax.plot(t_series, signal, color=viz.color(7), lw=1, ls=":", label="signal")
    ax.plot(
        t_series, smooth, color=viz.color(2), lw=1.8, label=f"EMA, β = {beta}"
    )
    err = (smooth - signal).pow(2).mean().sqrt().item()
    ax.set(xlabel="step", ylabel="value", ylim=(-2, 2.6),
           title=f"window ≈ 1/(1 − β) = {1 / (1 - beta):.0f} steps, RMS error to the signal {err:.3f}")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    plt.show()


_ = widgets.interact(
    show_ema,
    beta=widgets.FloatSlider(
        value=0.9, min=0.0, max=0.995, step=0.005, description="β"
    ),
)

# %% [markdown]
# Move $\beta$: small values follow the noise, values near 1 lag behind the trend; the error to the
# underlying signal is smallest in between.
#
# **EMA of the weights.** Applied to the parameters of a model during training,
# $\theta_\text{ema} \leftarrow \beta\,\theta_\text{ema} + (1 - \beta)\,\theta$ after every optimizer
# step, the EMA averages the last few hundred or thousand iterates. SGD's iterates bounce around a
# minimum; their average sits closer to its centre, which usually generalizes better and gives
# smoother validation curves (Polyak averaging; used in DeiT, in diffusion models, and as the
# "teacher" of BYOL in chapter 17). The average is a separate copy of the model that is only used for
# evaluation. `optim.WeightEMA` keeps it; it equals the formula above and PyTorch's own
# `AveragedModel` with an EMA update:

# %%
torch.manual_seed(0)
student = cnn.mlp([64, 16, 10])
ema_check = optim.WeightEMA(student, decay=0.8)
swa_ema = torch.optim.swa_utils.AveragedModel(
    student,
    multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.8),
    use_buffers=True,
)
# AveragedModel's first update copies the weights: start from them
swa_ema.update_parameters(student)
manual = [p.detach().clone() for p in student.parameters()]
opt_ema = torch.optim.SGD(student.parameters(), lr=0.5)
for _ in range(10):
    opt_ema.zero_grad()
    F.cross_entropy(student(xb), yb).backward()
    opt_ema.step()
    ema_check.update(student)
    swa_ema.update_parameters(student)
    manual = [
        0.8 * m + 0.2 * p.detach()
        for m, p in zip(manual, student.parameters(), strict=True)
    ]
for m, e, s in zip(
    manual,
    ema_check.module.parameters(),
    swa_ema.module.parameters(),
    strict=True,
):
    torch.testing.assert_close(e, m)
    torch.testing.assert_close(e, s)
print(
    f"WeightEMA = the formula = AveragedModel(EMA) after {ema_check.num_updates} updates"
)

# %% [markdown]
# ## Closing the gap: an ablation
#
# Back to the 200 digits. Which of these tools actually closes the gap, and by how much? An
# **ablation** answers it by changing one thing at a time: each row below trains the same network
# (same optimizer, learning rate, epochs and seeds) with a single regularizer switched on. Two rules
# keep the comparison fair:
#
# - each regularizer runs at **its own setting**: its key hyperparameter is chosen from a small grid
#   by the mean *validation* accuracy over three seeds (a fixed dropout of 0.5 next to a tuned weight
#   decay would compare a setting with a method);
# - the table reports the *test* accuracy of the chosen setting, mean ± standard deviation over the
#   three seeds (initialization, batch order, augmentation draws), and the gap between the accuracy on
#   the clean training images and on the test images.
#
# Early stopping (the epoch chosen by the patience rule) and the EMA of the weights (its $\beta$
# chosen on validation) need no extra training: they come from the three baseline runs above.


# %%
def summary(runs, key="final"):
    """Mean validation accuracy; test accuracy and train-test gap as (mean, std) over the seeds."""
    val = np.array([r[key]["val"] for r in runs])
    test = np.array([r[key]["test"] for r in runs])
    gap = np.array([r[key]["train"] for r in runs]) - test
    return {"val": val.mean(), "test": test.mean(), "test_sd": test.std(ddof=1),
            "gap": gap.mean(), "gap_sd": gap.std(ddof=1)}  # fmt: skip


def select(name, values, settings):
    """Train every value over the seeds; keep the one with the best mean validation accuracy."""
    results = {v: over_seeds(**settings(v)) for v in values}
    val_acc = {v: summary(runs)["val"] for v, runs in results.items()}
    best = max(values, key=val_acc.get)
    print(
        f"{name:12s} validation accuracy "
        + ", ".join(f"{v}: {a:.3f}" for v, a in val_acc.items())
        + f" -> {best}"
    )
    return best, results[best]


rows = {"none": ("", summary(baseline_runs))}
rows["early stopping"] = (
    "patience 5",
    summary([{"final": early_stopped(r)} for r in baseline_runs]),
)
ema_val = {d: summary(baseline_runs, f"ema {d}")["val"] for d in (0.9, 0.98)}
ema_decay = max(ema_val, key=ema_val.get)
print(
    "EMA          validation accuracy "
    + ", ".join(f"β {d}: {a:.3f}" for d, a in ema_val.items())
)
rows["EMA of the weights"] = (
    f"β = {ema_decay}",
    summary(baseline_runs, f"ema {ema_decay}"),
)
chosen = {}
for name, key, values, extra in (
    ("shifts", "max_shift", (1, 2), {}),
    ("dropout", "dropout", (0.2, 0.5), {}),
    ("AdamW", "weight_decay", (0.1, 1.0, 10.0), {}),
    ("MixUp", "alpha", (0.2, 1.0), {"mix": augment.mixup}),
    ("CutMix", "alpha", (0.2, 1.0), {"mix": augment.cutmix}),
):
    best, runs = select(
        name, values, lambda v, key=key, extra=extra: {key: v, **extra}
    )
    chosen[name] = {key: best, **extra}
    rows[name] = (f"{key} = {best}", summary(runs))

# %% [markdown]
# ### The built augmentation pipelines in training
#
# The torchvision pipelines of `course_lib.augment` run per image, through `TransformDataset`: the
# affine `digits_pipeline()` (rotation up to 10°, shift up to one pixel, zoom ±10 %), the same with
# repeated augmentation (two copies of each image per batch, `RepeatedAugmentationSampler`), and
# RandAugment with $n = 2$ and its magnitude $m$ chosen on validation. A v2 transform takes a fraction
# of a millisecond per image (printed below), so a batch of 50 costs several times the training step
# it feeds. Here we therefore draw six augmented views of each training image once and let every
# epoch pick one of them at random (offline augmentation). With a GPU and `DataLoader` workers one
# would draw a fresh view every time.


# %%
def augmented_views(pipeline, n_views=6):
    """n_views augmented copies of each training digit through TransformDataset: Tensor[200, n_views, 1, 8, 8]."""
    torch.manual_seed(0)  # v2 transforms draw from torch's global generator
    dataset = augment.TransformDataset(
        TensorDataset(x_small, y_small), pipeline
    )
    return torch.stack(
        [
            torch.stack([dataset[i][0] for _ in range(n_views)])
            for i in range(len(dataset))
        ]
    )


start = time.perf_counter()
affine_views = augmented_views(augment.digits_pipeline())
print(
    f"digits_pipeline: {(time.perf_counter() - start) / affine_views[:, :, 0, 0, 0].numel() * 1e3:.2f} ms per image"
)
rows["v2 affine pipeline"] = (
    "defaults",
    summary(over_seeds(views=affine_views)),
)
rows["  + repeated augmentation"] = (
    "2 copies",
    summary(over_seeds(views=affine_views, repeats=2)),
)
ra_views = {
    m: augmented_views(augment.digits_pipeline(randaugment=(2, m)))
    for m in (3, 9)
}
ra_m, ra_runs = select("RandAugment", (3, 9), lambda m: {"views": ra_views[m]})
rows["RandAugment"] = (f"n = 2, m = {ra_m}", summary(ra_runs))

# %% [markdown]
# Finally the regularizers that beat the baseline on validation, together at their chosen settings
# (the better of MixUp and CutMix only): regularizers interact, and their gains need not add up.

# %%
helped = [
    n
    for n in ("shifts", "dropout", "AdamW")
    if rows[n][1]["val"] > rows["none"][1]["val"]
]
mixers = [
    n for n in ("MixUp", "CutMix") if rows[n][1]["val"] > rows["none"][1]["val"]
]
helped += [max(mixers, key=lambda n: rows[n][1]["val"])] if mixers else []
combo = {k: v for n in helped for k, v in chosen[n].items()}
rows["combination"] = (" + ".join(helped), summary(over_seeds(**combo)))

print(
    f"\n{'regularizer':26s} {'setting (on validation)':27s} {'val acc':>7s}  {'test acc':>13s}  {'train - test':>13s}"
)
for name, (setting, s) in rows.items():
    print(
        f"{name:26s} {setting:27s} {s['val']:7.3f}  {s['test']:.3f} ± {s['test_sd']:.3f}  {s['gap']:6.3f} ± {s['gap_sd']:.3f}"
    )

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
names = list(rows)[::-1]
for ax, key, title in (
    (axes[0], "test", "Test accuracy"),
    (axes[1], "gap", "Train − test accuracy"),
):
    ax.barh(names, [rows[n][1][key] for n in names], xerr=[rows[n][1][f"{key}_sd"] for n in names],
            color=[viz.color(0 if n == "none" else 1) for n in names], capsize=3)  # fmt: skip
    ax.axvline(rows["none"][1][key], color=viz.color("reference"), ls=":", lw=1)
    ax.set(
        title=f"{title} (mean ± std, 3 seeds)",
        xlabel="accuracy" if key == "test" else "accuracy difference",
    )
axes[0].set_xlim(0.8, 1.0)
plt.show()

# %%
none = rows["none"][1]
best_mix = max(rows["MixUp"][1]["test"], rows["CutMix"][1]["test"])
assert best_mix > none["test"] + 0.005, (
    f"MixUp/CutMix should beat no regularization: {best_mix:.3f} vs {none['test']:.3f}"
)
for name in ("dropout", "early stopping"):
    assert rows[name][1]["test"] > none["test"] + 0.005, (
        f"{name} should beat no regularization: {rows[name][1]['test']:.3f} vs {none['test']:.3f}"
    )
assert rows["combination"][1]["test"] > none["test"], (
    f"the combination should beat no regularization: {rows['combination'][1]['test']:.3f} vs {none['test']:.3f}"
)
for name in ("shifts", "v2 affine pipeline"):
    assert rows[name][1]["test"] < none["test"] - 0.02, (
        f"{name} should cost accuracy on these centred digits: {rows[name][1]['test']:.3f} vs {none['test']:.3f}"
    )
assert rows["CutMix"][1]["gap"] < none["gap"] - 0.02, (
    f"CutMix gap {rows['CutMix'][1]['gap']:.3f} vs {none['gap']:.3f}"
)

# %% [markdown]
# What the table says (on another CPU the numbers move in the third decimal, the picture does not):
#
# - **Without regularization** the network fits every training image and scores about 0.93 on the
#   test split: a gap of about seven points.
# - **Dropout, early stopping, MixUp and CutMix** each gain one to two points. CutMix also closes
#   most of the gap, partly by lowering the training accuracy: the network never sees a clean
#   training image. The **EMA** of the weights gains less than a point.
# - **AdamW's weight decay** does nothing measurable at 0.1 and 1 and wrecks the model at 10. Over 80
#   steps at $\eta = 5\cdot10^{-3}$ a decay of 1 shrinks the weights by only $1 - (1-\eta\lambda)^{80}
#   \approx 0.33$ in total; decay matters in long schedules, where it acts over many thousands of steps.
# - **Geometric augmentation hurts here.** Random shifts, the affine pipeline and the same with
#   repeated augmentation cost four to nine points, RandAugment about one. The digits of this data set
#   are centred and size-normalized, so the test split never shows a shifted digit, and one pixel is
#   an eighth of the image: a shift cuts strokes at the border. In 80 steps the network must learn an
#   invariance the test does not ask for, and it fits even the clean training images less well.
#   (Repeated augmentation as DeiT runs it, with the epoch length kept, also shows each epoch only
#   half of the 200 images.) Augmentation pays when it produces variation that the test data
#   contain, as for chapter 00's shifted test digits, or for photographs.
# - **Gains do not add up.** The combination of the regularizers that helped on validation ends near
#   the best single one, not at the sum of their gains: they attack the same gap.
#
# An earlier version of this chapter stated, without an ablation, that most of the gain came from
# the shifts. It does not hold for this network, and it did not hold for the earlier, wider one
# either: with 32 channels, 40 epochs and Adam at $3\cdot10^{-3}$, three seeds measured while
# preparing this version gave shifts +1.8 and dropout +2.7 points over the baseline (not rerun here,
# to keep the chapter's runtime). With 200 images, one test image is 0.28 points; the standard
# deviations over the seeds are of the same order as several of the differences, which is why the
# asserts above only check the differences that are several times larger.
#
# ## Summary
#
# | method | what it does | in PyTorch / course_lib |
# |---|---|---|
# | L2 / weight decay | penalty $\frac\lambda2\lVert w\rVert^2$; for SGD a shrink $(1-\eta\lambda)$ per step | `SGD(weight_decay=λ)` |
# | decoupled weight decay | shrink outside Adam's adaptive step | `torch.optim.AdamW` |
# | L1 | penalty $\lambda\lVert w\rVert_1$; exact zeros with a proximal (soft-threshold) step | by hand |
# | dropout | drop units with probability $p$, scale survivors by $1/(1-p)$; identity in eval | `nn.Dropout(p)` |
# | batch norm | standardize per channel over $N, H, W$; running statistics in eval; fails at batch 2 | `nn.BatchNorm2d` |
# | layer / instance / group norm | the same over $C,H,W$ / $H,W$ / groups; no batch dependence | `nn.LayerNorm`, `nn.InstanceNorm2d`, `nn.GroupNorm` |
# | early stopping | keep the weights of the best validation epoch, stop after `patience` | a loop |
# | parameter sharing | the same weights at every position (convolution) | `nn.Conv2d` |
# | stochastic depth | skip residual branches per sample with probability $1-p_l$ | `cnn.DropPath`, `torchvision.ops.StochasticDepth` |
# | augmentation | label-preserving transformations, mixing, RandAugment, repeated augmentation | `course_lib.augment`, `transforms.v2` |
# | EMA of weights | evaluate $\theta_\text{ema} \leftarrow \beta\theta_\text{ema} + (1-\beta)\theta$ | `optim.WeightEMA` |
#
# - The gap between training and test performance is the thing to measure; regularizers trade a
#   worse fit of the training set for a better one of new data. Choose every setting on a validation
#   split and report on a test split that took no part in the choice.
# - Compare regularizers each at its own tuned setting, over several seeds. On 200 centred digits
#   dropout, early stopping, MixUp and CutMix gained one to two points each, weight decay nothing, and
#   geometric augmentation lost accuracy; their gains did not add up.
# - Weight decay equals L2 regularization only for SGD; with Adam use AdamW.
# - L1 gives exact zeros only with a proximal step; subgradients leave small non-zero weights.
# - PyTorch's dropout $p$ is the drop probability and the scaling happens in training; `model.eval()`
#   switches off dropout and switches batch norm to its running statistics. Forgetting it changes
#   predictions.
# - Why batch norm helps is still debated; internal covariate shift is not the accepted answer.
# - Batch norm needs batches: with two images per batch it lost about twenty points here, group norm
#   none. `BatchNorm2d` accepts a single image in training (it normalizes over $H, W$), `BatchNorm1d`
#   refuses it.
# - Stochastic depth scales the branches by their survival probability at test time, or inversely in
#   training, and drops deep blocks more often than shallow ones.
# - Augment with transformations that keep the label and that mimic variation the test data have,
#   per sample; a torchvision v2 transform on a whole batch draws one set of parameters.
# - MixUp's paper draws one $\lambda$ per batch; `augment.mixup` draws one per image unless
#   `per_batch=True`.
#
# ## Exercises
#
# Where an exercise asks for code or a number, its first cell holds a stub to fill (a function that
# raises `NotImplementedError`, or `exercises.TODO`) and a check from `course_lib.exercises` that
# answers in one line. The checks compare with PyTorch itself (`F.dropout` sampled many times,
# `nn.BatchNorm2d` in evaluation mode, `F.softshrink`) or with a value derived in the text, never
# with the solution. The solution follows in a collapsed cell and passes the same check.
#
# ### Exercise 1: dropout before batch norm
#
# For a fixed input $x$, inverted dropout's output has mean $x$ in training and in evaluation, and
# variance 0 in evaluation. Derive its variance in training, and write it as
# `dropout_variance(x, p)`. The check compares it with the variance of `F.dropout` applied to 400,000
# copies of $x$, to within 3 % (about seven standard errors of that estimate, or more).


# %%
def dropout_variance_sampled(x, p, n=400_000):
    """The variance of F.dropout's output over n copies of x (float64, a fixed seed): the check's reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return (
            F.dropout(
                torch.full((n,), float(x), dtype=torch.float64),
                p,
                training=True,
            )
            .var()
            .item()
        )


variance_cases = [(1.0, 0.5), (2.0, 0.2), (-1.5, 0.8), (0.5, 0.1)]


def dropout_variance(x, p):
    raise NotImplementedError  # your code: the variance of m x / (1 - p) with m ~ Bernoulli(1 - p)


exercises.check_function(
    dropout_variance,
    variance_cases,
    reference=dropout_variance_sampled,
    rtol=0.03,
    atol=1e-9,
)


# %% tags=["hide-cell"]
# With m ~ Bernoulli(1 - p): E[m x / (1 - p)] = x and E[(m x / (1 - p))^2] = x^2 / (1 - p), so the
# variance is x^2 / (1 - p) - x^2 = x^2 p / (1 - p).
def dropout_variance(x, p):
    return x**2 * p / (1 - p)


exercises.check_function(
    dropout_variance,
    variance_cases,
    reference=dropout_variance_sampled,
    rtol=0.03,
    atol=1e-9,
).assert_passed()

# %% [markdown]
# Now put `nn.Dropout(0.5)` in front of `nn.BatchNorm1d(16)` and feed it standard normal data: 300
# steps of batches of 64 in training mode to settle the running statistics, then one batch of 4,096
# in evaluation mode. Measure the standard deviation of the batch-norm output in evaluation mode as
# `eval_std`. Predict it from the variance above (the check compares with that prediction, to within
# 0.05): why is it not 1? (This "variance shift" is the disharmony of Li et al., 2019.)

# %%
# your value: the std of the batch-norm output in evaluation mode, measured
eval_std = exercises.TODO
exercises.check_value(
    eval_std, 1 / math.sqrt(2), atol=0.05, rtol=0, name="eval_std"
)

# %% tags=["hide-cell"]
# For x ~ N(0, 1) and p = 0.5 the training-time variance is E[x^2] / (1 - p) = 2, which BN's running
# variance learns; in evaluation the variance is 1, so BN divides by sqrt(2) too much: the output
# std is 1 / sqrt(2) = 0.71.
torch.manual_seed(0)
drop_bn = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(16))
for _ in range(300):
    drop_bn.train()(torch.randn(64, 16))
with torch.no_grad():
    out_eval = drop_bn.eval()(torch.randn(4096, 16))
eval_std = out_eval.std().item()
print(
    f"running variance {drop_bn[1].running_var.mean():.2f} (training-time variance 2)"
)
print(f"evaluation output std {eval_std:.3f}, predicted {1 / math.sqrt(2):.3f}")
exercises.check_value(
    eval_std, 1 / math.sqrt(2), atol=0.05, rtol=0, name="eval_std"
).assert_passed()

# %% [markdown]
# ### Exercise 2: fold batch norm into the convolution
#
# In evaluation mode a batch-norm layer is a fixed affine map per channel, so it can be merged into
# the convolution before it (inference engines do this). Show that
# $W' = W\,\gamma/\sqrt{\hat\sigma^2 + \epsilon}$ (per output channel) and
# $b' = \beta + (b - \hat\mu)\,\gamma/\sqrt{\hat\sigma^2 + \epsilon}$ give a single convolution equal to
# conv followed by BN. Write `fold_bn(conv, bn)`, which returns the pair `(W', b')`. The check runs a
# convolution with them against `bn(conv(x))` in evaluation mode, on the first two layers of `net_bn`
# from the batch-norm section (whose $\gamma$ and $\beta$ are still 1 and 0: it never took an
# optimizer step) and on a pair with random $\gamma$, $\beta$ and running statistics.


# %%
def folded_conv(fold):
    """(conv, bn, x) -> the output of one convolution with the (W', b') that fold(conv, bn) returns."""
    return lambda conv, bn, x: F.conv2d(
        x, *fold(conv, bn), padding=conv.padding
    )


def conv_then_bn(conv, bn, x):
    return bn.eval()(conv(x))


torch.manual_seed(0)
conv_r, bn_r = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
with (
    torch.no_grad()
):  # a batch norm with non-trivial parameters and running statistics
    bn_r.weight.uniform_(0.5, 1.5)
    bn_r.bias.normal_()
    bn_r.running_mean.normal_()
    bn_r.running_var.uniform_(0.5, 2.0)
fold_cases = [
    (net_bn[0], net_bn[1], x_small[:16]),
    (conv_r, bn_r, x_small[16:32]),
]


def fold_bn(conv, bn):
    raise NotImplementedError  # your code: (W', b'), from conv.weight, conv.bias and bn's parameters


exercises.check_function(
    folded_conv(fold_bn),
    fold_cases,
    reference=conv_then_bn,
    atol=1e-5,
    rtol=1e-5,
    name="conv with fold_bn's (W', b')",
)


# %% tags=["hide-cell"]
def fold_bn(conv, bn):
    # gamma / sqrt(var + eps), per channel
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias + (conv.bias - bn.running_mean) * scale
    return weight.detach(), bias.detach()


feedback = exercises.check_function(
    folded_conv(fold_bn),
    fold_cases,
    reference=conv_then_bn,
    atol=1e-5,
    rtol=1e-5,
    name="conv with fold_bn's (W', b')",
)
print(feedback.assert_passed())
conv_l, bn_l = net_bn[0], net_bn[1]
folded = nn.Conv2d(1, 8, 3, padding=1)  # one layer instead of two
with torch.no_grad():
    folded.weight.copy_(fold_bn(conv_l, bn_l)[0])
    folded.bias.copy_(fold_bn(conv_l, bn_l)[1])
    net_bn.eval()
    torch.testing.assert_close(
        folded(x_small[:16]), bn_l(conv_l(x_small[:16])), atol=1e-5, rtol=1e-5
    )
print("conv + BN (eval) = one convolution with folded weights")

# %% [markdown]
# ### Exercise 3: the L1 path
#
# First write the proximal step of L1, the soft-threshold $\mathrm{sign}(u)\max(|u| - t, 0)$, as
# `soft_threshold(u, t)`; the check compares it with PyTorch's `F.softshrink`. Then fit the proximal
# L1 softmax regression for $\lambda \in \{0.003, 0.01, 0.03, 0.1\}$ (150 steps each) and plot the
# fraction of non-zero weights and the *validation* accuracy against $\lambda$. Choose the largest
# $\lambda$ (the sparsest model) whose validation accuracy is at least 0.9, and only then report its
# test accuracy. How few weights does a 90 %-accurate digit classifier need?

# %%
gen_u = torch.Generator().manual_seed(0)
threshold_cases = [
    (torch.tensor([-2.0, -0.5, -0.1, 0.0, 0.1, 0.5, 2.0]), 0.5),
    (torch.randn(64, 10, generator=gen_u), 0.3),
    (0.01 * torch.randn(100, generator=gen_u), 0.005),
]


def soft_threshold(u, t):
    raise NotImplementedError  # your code: sign(u) max(|u| - t, 0), element by element


exercises.check_function(
    soft_threshold, threshold_cases, reference=F.softshrink
)


# %% tags=["hide-cell"]
def soft_threshold(u, t):
    return u.sign() * (u.abs() - t).clamp(min=0)


print(
    exercises.check_function(
        soft_threshold, threshold_cases, reference=F.softshrink
    ).assert_passed()
)

lams = [0.003, 0.01, 0.03, 0.1]
path = [
    fit_softmax_regression("l1", lam_i, steps=150, split="val")
    for lam_i in lams
]
nonzero = [(W != 0).float().mean().item() for W, _ in path]
accs = [acc for _, acc in path]
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot(
    lams,
    nonzero,
    "o-",
    color=viz.color(0),
    label="fraction of non-zero weights",
)
ax.plot(lams, accs, "s-", color=viz.color(1), label="validation accuracy")
ax.set(
    xscale="log",
    xlabel="λ",
    ylim=(0, 1.02),
    title="Proximal L1 softmax regression on digits",
)
ax.legend(fontsize=8)
plt.show()
for lam_i, nz, acc in zip(lams, nonzero, accs, strict=True):
    print(
        f"λ = {lam_i:<6}: {nz:6.1%} of 640 weights non-zero ({round(nz * 640):3d}), validation accuracy {acc:.3f}"
    )
lam_sparse = max(
    lam_i for lam_i, acc in zip(lams, accs, strict=True) if acc >= 0.9
)
W_sparse, test_sparse = fit_softmax_regression(
    "l1", lam_sparse, steps=150, split="test"
)
print(
    f"chosen on validation: λ = {lam_sparse}, {int((W_sparse != 0).sum())} non-zero weights, test accuracy {test_sparse:.3f}"
)

# %% [markdown]
# ## References
#
# - Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I., and Salakhutdinov, R. (2014). Dropout:
#   a simple way to prevent neural networks from overfitting. *JMLR*, 15, 1929–1958.
# - Ioffe, S., and Szegedy, C. (2015). Batch normalization: accelerating deep network training by
#   reducing internal covariate shift. *ICML 2015*. arXiv:1502.03167.
# - Santurkar, S., Tsipras, D., Ilyas, A., and Mądry, A. (2018). How does batch normalization help
#   optimization? *NeurIPS 2018*. arXiv:1805.11604.
# - Ba, J. L., Kiros, J. R., and Hinton, G. E. (2016). Layer normalization. arXiv:1607.06450.
# - Ulyanov, D., Vedaldi, A., and Lempitsky, V. (2016). Instance normalization: the missing ingredient
#   for fast stylization. arXiv:1607.08022.
# - Wu, Y., and He, K. (2018). Group normalization. *ECCV 2018*. arXiv:1803.08494.
# - Li, X., Chen, S., Hu, X., and Yang, J. (2019). Understanding the disharmony between dropout and
#   batch normalization by variance shift. *CVPR 2019*. arXiv:1801.05134.
# - Loshchilov, I., and Hutter, F. (2019). Decoupled weight decay regularization. *ICLR 2019*.
#   arXiv:1711.05101.
# - Tibshirani, R. (1996). Regression shrinkage and selection via the lasso. *Journal of the Royal
#   Statistical Society B*, 58(1), 267–288.
# - Goodfellow, I., Bengio, Y., and Courville, A. (2016). *Deep Learning*, chapter 7 (regularization).
#   MIT Press.
# - Huang, G., Sun, Y., Liu, Z., Sedra, D., and Weinberger, K. Q. (2016). Deep networks with
#   stochastic depth. *ECCV 2016*. arXiv:1603.09382.
# - DeVries, T., and Taylor, G. W. (2017). Improved regularization of convolutional neural networks
#   with Cutout. arXiv:1708.04552.
# - Zhong, Z., Zheng, L., Kang, G., Li, S., and Yang, Y. (2020). Random erasing data augmentation.
#   *AAAI 2020*. arXiv:1708.04896.
# - Zhang, H., Cissé, M., Dauphin, Y. N., and Lopez-Paz, D. (2018). mixup: beyond empirical risk
#   minimization. *ICLR 2018*. arXiv:1710.09412.
# - Yun, S., Han, D., Oh, S. J., Chun, S., Choe, J., and Yoo, Y. (2019). CutMix: regularization strategy
#   to train strong classifiers with localizable features. *ICCV 2019*. arXiv:1905.04899.
# - Cubuk, E. D., Zoph, B., Mané, D., Vasudevan, V., and Le, Q. V. (2019). AutoAugment: learning
#   augmentation strategies from data. *CVPR 2019*. arXiv:1805.09501.
# - Cubuk, E. D., Zoph, B., Shlens, J., and Le, Q. V. (2020). RandAugment: practical automated data
#   augmentation with a reduced search space. *CVPR Workshops 2020*. arXiv:1909.13719.
# - Hoffer, E., Ben-Nun, T., Hubara, I., Giladi, N., Hoefler, T., and Soudry, D. (2020). Augment your
#   batch: improving generalization through instance repetition. *CVPR 2020*. arXiv:1901.09335.
# - Berman, M., Jégou, H., Vedaldi, A., Kokkinos, I., and Douze, M. (2019). MultiGrain: a unified image
#   embedding for classes and instances. arXiv:1902.05509.
# - Touvron, H., Cord, M., Douze, M., Massa, F., Sablayrolles, A., and Jégou, H. (2021). Training
#   data-efficient image transformers & distillation through attention. *ICML 2021*. arXiv:2012.12877.
# - Polyak, B. T., and Juditsky, A. B. (1992). Acceleration of stochastic approximation by averaging.
#   *SIAM Journal on Control and Optimization*, 30(4), 838–855.
