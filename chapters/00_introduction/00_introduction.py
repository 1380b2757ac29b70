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
# # 00 · Introduction and the data-driven approach
#
# A photograph is a grid of numbers, and the label "cat" is nowhere in it. This chapter starts from
# that gap. We see why no hand-written rule can close it, replace rules by examples (the data-driven
# approach), and build the simplest classifier that learns from examples: the nearest neighbour and
# its k-NN variant. We make it reach about 99 % on handwritten digits, then watch it fail when the digits
# move by two pixels. A tiny convolutional network trained on shifted copies of the same images does
# not fail that way, and an ablation shows how much of that comes from its architecture and how much
# from the data it was shown. The chapter ends with a tour of the course's
# library and of how to work with the notebooks.
#
# **Learning objectives.** After this chapter you can:
# - name the sources of variation that make image classification hard, and show them in pixel space;
# - split data into training, validation and test sets and use each for its one purpose;
# - write L1/L2 distance matrices and a k-NN classifier in vectorized PyTorch, and check them against
#   `course_lib.neighbors` and scikit-learn;
# - explain how k trades overfitting for smoothness, and pick k on validation data only;
# - explain why k-NN is cheap to train but expensive to use, and why raw pixels are a poor space to
#   measure similarity in;
# - separate, with an ablation, the robustness a model gets from its architecture from the robustness
#   it gets from its training data (augmentation);
# - find your way around `course_lib` and the course's tools.
#
# **Prerequisites.** Python and NumPy; basic PyTorch tensors (indexing, broadcasting, `@`). No
# machine learning is assumed.
#
# **Measured runtime:** 27 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [00_introduction.ipynb](00_introduction.ipynb) (notebook, with outputs) · [00_introduction.py](00_introduction.py) (the paired script instructors edit)

# %%
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.spatial.distance
import torch
import torch.nn.functional as F
from sklearn.datasets import make_moons
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from course_lib import (
    augment,
    data,
    exercises,
    metrics,
    neighbors,
    runtime,
    train,
    viz,
)

device = runtime.setup(seed=0)

# %% [markdown]
# ## Image classification
#
# The task: given an image, output one label from a fixed set of classes. It is the problem
# behind most of computer vision, because detection, segmentation and captioning (later chapters)
# all contain a classifier somewhere inside.
#
# ### An image is an array of numbers
#
# To the computer a colour photo is a tensor of shape `[3, H, W]` (channels, height, width) with
# one brightness per channel and pixel; a grey image has one channel. The digits we use throughout
# this chapter are 8×8 grey images whose pixels count ink on a scale from 0 to 16.

# %%
# NBVAL_CHECK_OUTPUT
# Tensor[3, 64, 64], values in [0, 1]
cat = data.sample_image("chelsea", size=64)
# Tensor[1797, 1, 8, 8] in [0, 1], labels 0..9
digits_x, digits_y = data.load_digits()
print(
    "cat:",
    tuple(cat.shape),
    cat.dtype,
    "| digits:",
    tuple(digits_x.shape),
    tuple(digits_y.shape),
)
print(f"digit #0 has label {digits_y[0].item()}; its pixels (x 16):")
print((digits_x[0, 0] * 16).int().numpy())

# %% [markdown]
# Nothing in those 64 numbers says "zero" directly; the shape of the ink does, and only as a
# pattern spread over many pixels.
#
# ### Why recognition is hard
#
# The class of an object does not change when the pixels change a lot. A recognizer has to give the
# same answer under all of these, at the same time:
#
# - **viewpoint**: the camera sees the object from another side;
# - **scale**: the object fills more or less of the image;
# - **deformation**: cats curl up, hands write a "7" with or without a bar;
# - **occlusion**: part of the object is hidden;
# - **illumination**: the same surface is brighter or darker, or lit in another colour;
# - **background clutter**: the object blends into its surroundings;
# - **intra-class variation**: "chair" covers thousands of designs.
#
# And it must *not* ignore the small differences that separate classes (a "1" from a "7"). Let us
# make a few of these variations on the cat and measure how far each one moves the image in
# pixel space, with the Euclidean (L2) distance $\sqrt{\sum_p (I_1^p - I_2^p)^2}$ over all pixels
# and channels $p$ (defined properly below).

# %%
# a wider view, to crop real camera moves from
big = data.sample_image("chelsea", size=80)


def crop(im: torch.Tensor, top: int, left: int, s: int = 64) -> torch.Tensor:
    return im[:, top : top + s, left : left + s]


cat = crop(big, 8, 8)
zoom = F.interpolate(
    crop(big, 12, 12, 56)[None], size=(64, 64), mode="bilinear", antialias=True
)[0]
occluded = cat.clone()
occluded[:, 20:44, 22:46] = 0.5  # a grey square over the face
variants = {
    "original": cat,
    "camera moved\n4 px right": crop(big, 8, 12),
    "zoomed in\n(scale x1.14)": zoom,
    "mirrored\n(viewpoint)": cat.flip(-1),
    "darker\n(x 0.6)": cat * 0.6,
    "occluded": occluded,
    "flat colour\n(the cat's mean)": cat.mean(
        dim=(1, 2), keepdim=True
    ).expand_as(cat),
    "coffee\n(another class)": data.sample_image("coffee", size=64),
}
dist_to_cat = {name: (im - cat).norm().item() for name, im in variants.items()}

# %% tags=["hide-input"]
fig = plt.figure(figsize=(12, 4.6))
grid = fig.add_gridspec(2, len(variants), height_ratios=[1.0, 1.1])
for i, (name, im) in enumerate(variants.items()):
    ax = fig.add_subplot(grid[0, i])
    ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(name, fontsize=8)
    ax.axis("off")
ax = fig.add_subplot(grid[1, :])
is_cat = [not name.startswith(("flat", "coffee")) for name in variants]
ax.barh(
    [n.replace("\n", " ") for n in variants],
    list(dist_to_cat.values()),
    color=[viz.color(0) if c else viz.color(3) for c in is_cat],
)
ax.invert_yaxis()
ax.set_xlabel(
    "L2 distance to the original cat (pixels in [0, 1], 3 x 64 x 64 values)"
)
ax.set_title(
    "Blue: the same cat. Orange: not a cat. Pixel distance does not know the difference."
)
plt.show()

# %%
assert (
    dist_to_cat["flat colour\n(the cat's mean)"]
    < dist_to_cat["camera moved\n4 px right"]
), dist_to_cat
assert (
    dist_to_cat["flat colour\n(the cat's mean)"]
    < dist_to_cat["darker\n(x 0.6)"]
), dist_to_cat

# %% [markdown]
# A featureless rectangle of the cat's average colour is *closer* to the cat than the same cat
# with the camera moved by 4 pixels, mirrored, or in dimmer light. Small nuisance changes move an
# image far; a meaningless image can sit near. Handwriting shows the other half of the problem,
# intra-class variation and deformation: the digits below all carry the same label.

# %% tags=["hide-input"]
twos, sevens = digits_x[digits_y == 2][:12], digits_x[digits_y == 7][:12]
viz.show_images(
    torch.cat([twos, sevens]),
    ncols=12,
    size=0.8,
    suptitle="Twelve 2s and twelve 7s: one label each, many pixel patterns",
)
plt.show()

# %% [markdown]
# ## The data-driven approach
#
# Try to write "cat" as a rule in code (two pointed ears, whiskers, two eyes) and the photos above
# break it: the occluded cat, a cat seen from behind, a cat in the dark. The approach that works is
# the one a child uses: look at many labelled examples. In code, a classifier is two functions,
#
# ```python
# model = train(images, labels)      # learn from labelled examples
# predictions = predict(model, new_images)
# ```
#
# and the work moves from writing rules to (1) collecting a labelled dataset, (2) choosing a model
# and training it, and (3) measuring how well it does on images it has never seen.
#
# ### Training, validation and test sets
#
# Accuracy on the images the model learned from says little: a model can memorize them. So we split
# the labelled data three ways, before looking at it:
#
# - the **training set** is what the model learns from;
# - the **validation set** is for choices the learning algorithm does not make itself, the
#   *hyper-parameters* (below: the number of neighbours $k$ and the distance). Try settings, keep
#   the one with the best validation score;
# - the **test set** is used **once**, at the very end, to report how the chosen model does on new
#   data. Every extra look at it turns it into a second validation set, and the reported number
#   becomes optimistic.
#
# `data.digits_splits` makes a stratified 60/20/20 split (each class keeps its share in every split)
# with `data.split_indices`. It can also standardize the pixels with statistics fitted on the
# training split only (chapter 01); here we keep the raw pixels in [0, 1].
# With little data, $K$-fold *cross-validation* replaces the single validation split: rotate which
# part of the training data validates and average the scores.

# %%
# NBVAL_CHECK_OUTPUT
splits = data.digits_splits((0.6, 0.2, 0.2), seed=0, normalize=None)
x_train, y_train = splits.tensors("train")
x_val, y_val = splits.tensors("val")
x_test, y_test = splits.tensors("test")
for name, y in [("train", y_train), ("val", y_val), ("test", y_test)]:
    print(
        f"{name:>5}: {len(y):4d} images, per class {torch.bincount(y, minlength=10).tolist()}"
    )
idx = data.split_indices(
    len(digits_y), (0.6, 0.2, 0.2), seed=0, stratify=digits_y
)
# the same split, built from the indices
assert torch.equal(digits_x[idx[2]], x_test)
print("overlap train/test:", len(set(idx[0].tolist()) & set(idx[2].tolist())))

# %% [markdown]
# One caveat that the numbers below inherit: these 1,797 digits were written by only 13 people (they
# are the test part of the UCI "optical recognition of handwritten digits" set). A random split
# puts every writer in training and test alike, so test accuracy measures "new digits from known
# writers", which is easier than "new writers". A split must imitate how the model will be used.
#
# ## Nearest neighbour and k-NN
#
# The simplest learner: **training** stores the images and labels. **Prediction** compares the new
# image with every stored image and returns the label of the closest one: the *nearest neighbour*
# (NN) classifier. With $k$ nearest neighbours that vote, it is **k-NN**; $k=1$ is plain NN.
# A larger $k$ averages the votes and so ignores a lone mislabelled or odd training image.
#
# ### Distances between images
#
# Flatten each image into a vector of $D$ pixel values $I^1, \dots, I^D$ (here $D = 64$). The two
# classic distances are
#
# $$
# d_1(I_1, I_2) = \sum_{p=1}^{D} \left| I_1^p - I_2^p \right|
# \qquad\text{(L1, Manhattan)},
# \qquad
# d_2(I_1, I_2) = \sqrt{\sum_{p=1}^{D} \left( I_1^p - I_2^p \right)^2}
# \qquad\text{(L2, Euclidean)}.
# $$
#
# L2 punishes one large difference more than many small ones; L1 treats them alike. For $M$ queries
# and $N$ training images we want the whole $M \times N$ distance matrix at once. Broadcasting
# `a[:, None, :] - b[None, :, :]` builds an $M \times N \times D$ tensor: simple, but memory-hungry
# (for all 360 validation images against 1,078 training images that is 25 million numbers), so we
# do it in chunks of queries. For L2 there is a better way: expand the square,
#
# $$
# \| a - b \|^2 = \|a\|^2 + \|b\|^2 - 2\, a \cdot b ,
# $$
#
# and all $a \cdot b$ come out of one matrix product `a @ b.T`, the fastest operation on any
# hardware. Rounding can make the result a tiny negative number when $a \approx b$, so clamp at 0
# before the square root. (The price is precision: when $\|a\|$ is large compared with
# $\|a-b\|$ the subtraction cancels digits. Exercise for the curious: see what happens to
# `pairwise_distances(a, a)` for `a = 1000 + torch.randn(5, 64)`.)


# %%
def l1_distances(
    a: torch.Tensor, b: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """[M, D], [N, D] -> [M, N]; broadcasting over chunks of queries bounds the memory."""
    return torch.cat(
        [
            (a[i : i + chunk, None, :] - b[None]).abs().sum(-1)
            for i in range(0, len(a), chunk)
        ]
    )


def l2_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[M, D], [N, D] -> [M, N] via ||a||^2 + ||b||^2 - 2 a.b (one matrix product)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return sq.clamp(min=0).sqrt()


xtr, xva = x_train.flatten(1), x_val.flatten(1)  # [1078, 64], [360, 64]
d1, d2 = l1_distances(xva, xtr), l2_distances(xva, xtr)
for p, d in [(1, d1), (2, d2)]:
    torch.testing.assert_close(d, neighbors.pairwise_distances(xva, xtr, p=p))
    torch.testing.assert_close(d, torch.cdist(xva, xtr, p=p))
    ref = scipy.spatial.distance.cdist(
        xva.double(), xtr.double(), "cityblock" if p == 1 else "euclidean"
    )
    torch.testing.assert_close(
        d.double(), torch.from_numpy(ref), rtol=1e-5, atol=1e-5
    )
print(
    "distance matrices:",
    tuple(d1.shape),
    "- equal to course_lib, torch.cdist and scipy",
)

# %% [markdown]
# ### The k-NN classifier from scratch
#
# With the distance matrix, prediction is three lines: sort each row, take the labels of the first
# $k$ columns, count votes per class and take the class with most votes. Two conventions settle
# ties. If two training images are *exactly* equally far, the one stored first counts first (a
# stable sort). If two classes get the same number of votes, the smaller label wins (`argmax`
# returns the first maximum), which is also scikit-learn's rule.


# %%
def knn_predict_scratch(
    train_x, train_y, query_x, k: int, p: int
) -> torch.Tensor:
    d = (
        l1_distances(query_x, train_x)
        if p == 1
        else l2_distances(query_x, train_x)
    )  # [M, N]
    nearest = d.argsort(dim=1, stable=True)[
        :, :k
    ]  # [M, k] indices of the k closest
    # [M, 10] votes per class
    votes = F.one_hot(train_y[nearest], num_classes=10).sum(dim=1)
    return votes.argmax(dim=1)  # ties between classes -> smallest label


for p in (1, 2):
    for k in (1, 3, 5):
        ours = knn_predict_scratch(xtr, y_train, xva, k, p)
        assert torch.equal(
            ours, neighbors.knn_predict(xtr, y_train, xva, k=k, p=p)
        ), (p, k)
print(
    "from-scratch k-NN == course_lib.neighbors.knn_predict for p in (1, 2), k in (1, 3, 5)"
)

# %% [markdown]
# Against scikit-learn there is one subtlety, and it teaches something about quantized data. Digit
# pixels take only 17 values, so exact distance ties are common. When the $k$-th and the $(k+1)$-th
# nearest training images are at *exactly* the same distance, which of them votes is a convention;
# scikit-learn keeps whichever its internal heap happens to retain, we keep the lower index. So the
# two must agree on every query without such a tie, and may differ only on tied ones.

# %%
# NBVAL_CHECK_OUTPUT
for p, d in [(1, d1), (2, d2)]:
    for k in (1, 3, 5):
        ours = neighbors.knn_predict(xtr, y_train, xva, k=k, p=p).numpy()
        sk = KNeighborsClassifier(n_neighbors=k, p=p, algorithm="brute").fit(
            xtr.numpy(), y_train.numpy()
        )
        sk_pred = sk.predict(xva.numpy())
        d_sorted = d.sort(dim=1).values
        tie = (
            d_sorted[:, k - 1] == d_sorted[:, k]
        ).numpy()  # k-th and (k+1)-th equally far
        assert (ours[~tie] == sk_pred[~tie]).all(), (
            f"p={p}, k={k}: disagreement on an untied query"
        )
        print(
            f"L{p}, k={k}: identical to scikit-learn on all {(~tie).sum()} untied queries ({tie.sum()} tied)"
        )

# %% [markdown]
# From here on we use `neighbors.knn_predict` (batched over queries, any feature size, any device)
# and its companions `neighbors.pairwise_distances` and `neighbors.kneighbors`.
#
# ## What k does: decision regions
#
# In two dimensions we can *see* a classifier: colour every point of the plane by the class it
# would get. The two interleaved half-moons below are noisy, so some points sit deep inside the
# other class's territory. With $k = 1$ every training point owns a small island around itself, so
# the training accuracy is 100 % and the boundary follows the noise: the classifier **overfits**,
# and its validation accuracy is the worst of the four. Larger $k$ smooths the boundary. Too large,
# and the boundary loses the curve of the moons (at $k = 51$ it is almost a straight line): the
# classifier starts to **underfit**, which the slider below shows more strongly for $k$ near 100.

# %%
xy, lab = make_moons(n_samples=400, noise=0.3, random_state=0)
xy, lab = torch.tensor(xy, dtype=torch.float32), torch.tensor(lab)
moon_tr, moon_va = data.split_indices(400, (0.5, 0.5), seed=0, stratify=lab)
lo, hi = xy.min(0).values - 0.4, xy.max(0).values + 0.4
gx, gy = torch.meshgrid(
    torch.linspace(lo[0], hi[0], 160),
    torch.linspace(lo[1], hi[1], 120),
    indexing="xy",
)
# [19200, 2] points to classify
plane = torch.stack([gx.flatten(), gy.flatten()], dim=1)


# %% tags=["hide-input"]
def draw_regions(ax, k: int, p: int) -> None:
    pred = neighbors.knn_predict(
        xy[moon_tr], lab[moon_tr], plane, k=k, p=p
    ).reshape(gx.shape)
    ax.contourf(
        gx,
        gy,
        pred,
        levels=[-0.5, 0.5, 1.5],
        colors=[viz.color(0), viz.color(1)],
        alpha=0.25,
    )
    for c in (0, 1):
        pts = xy[moon_tr][lab[moon_tr] == c]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=12,
            color=viz.color(c),
            edgecolor="white",
            linewidth=0.4,
        )
    acc = {
        s: metrics.accuracy(
            neighbors.knn_predict(xy[moon_tr], lab[moon_tr], xy[i], k=k, p=p),
            lab[i],
        ).item()
        for s, i in [("train", moon_tr), ("val", moon_va)]
    }
    ax.set_title(
        f"k = {k}, L{p}: train {acc['train']:.2f}, val {acc['val']:.2f}",
        fontsize=9,
    )
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.grid(False)


fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharey=True)
for ax, k in zip(axes, [1, 5, 15, 51], strict=True):
    draw_regions(ax, k, p=2)
fig.suptitle(
    "k-NN decision regions on two noisy moons (200 training points shown)"
)
plt.show()

# %% [markdown]
# Move the slider: watch the islands of $k=1$ disappear, the validation accuracy rise and then fall
# again for very large $k$, and compare L1 with L2 (L1's boundaries are made of horizontal,
# vertical and diagonal pieces, because its "circles" are diamonds).


# %%
def show_regions(k: int = 5, distance: str = "L2") -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    draw_regions(ax, k, p=int(distance[1]))
    plt.show()


_ = widgets.interact(
    show_regions,
    k=widgets.IntSlider(
        value=5, min=1, max=101, step=2, continuous_update=False
    ),
    distance=widgets.ToggleButtons(options=["L2", "L1"]),
)

# %% [markdown]
# ## Experiment: choosing k on digits
#
# Now the full protocol on the digits: for each distance and each $k$, fit on the training set and
# score on the validation set; pick the best pair; then, and only then, score the test set once.
# For comparison we also plot the accuracy on the training set itself, where every image finds
# itself at distance 0: at $k=1$ it is trivially 100 %, which is why it cannot be used to choose $k$.
# One neighbour search with the largest $k$ serves every smaller $k$, because the $k$ nearest
# neighbours are the first $k$ columns of its answer.


# %%
def accuracy_per_k(
    train_x, train_y, query_x, query_y, ks, p: int
) -> list[float]:
    """Accuracy of k-NN for every k in ks from ONE neighbour search with the largest k."""
    # [M, max k], closest first
    _, idx = neighbors.kneighbors(train_x, query_x, k=max(ks), p=p)
    votes = [
        F.one_hot(train_y[idx[:, :k]], num_classes=10).sum(dim=1) for k in ks
    ]
    return [metrics.accuracy(v.argmax(dim=1), query_y).item() for v in votes]


ks = list(range(1, 22))
val_acc = {p: accuracy_per_k(xtr, y_train, xva, y_val, ks, p) for p in (1, 2)}
train_acc = accuracy_per_k(xtr, y_train, xtr, y_train, ks, p=2)
assert (
    val_acc[1][6]
    == metrics.accuracy(
        neighbors.knn_predict(xtr, y_train, xva, k=7, p=1), y_val
    ).item()
)
best_acc, best_k, best_p = max(
    (acc, -k, p) for p in (1, 2) for k, acc in zip(ks, val_acc[p], strict=True)
)
# the highest validation accuracy; among equals the smallest k, then L2
best_k = -best_k

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.4, 3.8))
ax.plot(
    ks, val_acc[2], "o-", ms=3, color=viz.color("val"), label="validation, L2"
)
ax.plot(
    ks, val_acc[1], "s--", ms=3, color=viz.color("val"), label="validation, L1"
)
ax.plot(
    ks,
    train_acc,
    "o-",
    ms=3,
    color=viz.color("train"),
    label="training set, L2",
)
ax.axvline(
    best_k,
    color=viz.color("reference"),
    linestyle=":",
    linewidth=1,
    label=f"chosen: k = {best_k}",
)
ax.set(xlabel="k (number of neighbours)", ylabel="accuracy", xticks=ks[::2])
ax.set_title("k-NN on digits: pick k and the distance on the validation set")
ax.legend()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
se = math.sqrt(best_acc * (1 - best_acc) / len(y_val))
print(
    f"best on validation: L{best_p}, k = {best_k}, accuracy {best_acc:.4f} (standard error {se:.4f})"
)
print(f"one validation image is worth {1 / len(y_val):.4f} of accuracy")

# %% [markdown]
# The curves are flat within noise: with 360 validation images the standard error of an accuracy
# near 0.99 is about half a percentage point, i.e. two images. Differences of one or two images
# between neighbouring $k$ mean nothing; the clear signals are that L2 beats L1 here and that large
# $k$ slowly hurts.
#
# Validation picks $k = 1$, the setting that overfitted the moons. There is no contradiction:
# whether $k = 1$ overfits depends on the data. The moons were made noisy on purpose, so many
# training points sit inside the other class and their islands capture validation points. The
# digits are clean and densely sampled (1,078 images in 64 dimensions, few mislabelled or odd ones),
# so the nearest training digit is almost always of the right class, and averaging more votes only
# brings in farther, less similar digits. The protocol does not assume which $k$ is right; it
# measures it on data the model did not learn from. (Distances between digits, whose pixels are
# multiples of 1/16, are exact in float32, so these choices and accuracies are the same on every
# machine.) Now the single look at the test set:

# %%
# NBVAL_CHECK_OUTPUT
test_pred = neighbors.knn_predict(
    xtr, y_train, x_test.flatten(1), k=best_k, p=best_p
)
test_acc = metrics.accuracy(test_pred, y_test).item()
print(
    f"k-NN (L{best_p}, k = {best_k}) test accuracy: {test_acc:.4f} on {len(y_test)} test digits"
)
assert test_acc > 0.95, f"k-NN test accuracy {test_acc:.3f}, expected > 0.95"

# %% [markdown]
# All 359 test digits are classified correctly (the accuracy printed above is 1.0000), by a
# "training" step that does nothing at all. A perfect score on 359 images does not mean a perfect classifier: with zero errors in $n$
# trials, the "rule of three" puts the 95 % upper bound of the error rate at about $3/n$, here
# 0.8 %; and, as noted above, these test digits come from writers the training set already knows.
# Still, on this dataset k-NN is a strong baseline. So why is this not the end of the course?
#
# ## The cost of k-NN
#
# Training k-NN is free: it copies the data. Prediction compares each query with all $N$ stored
# images of $D$ numbers each, so it costs $O(N \cdot D)$ per query, and the memory holds the whole
# training set. This is backwards from what we want: training happens once, on a big machine,
# while prediction happens millions of times, on phones and cameras. The timing below uses random
# 64-dimensional vectors: the cost depends on $N$ and $D$, not on what the vectors show. The
# numbers depend on your machine and its load.


# %%
def seconds(fn, repeats: int = 2) -> float:
    """Best wall time of a few calls of fn()."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


gen = torch.Generator().manual_seed(0)
queries = torch.rand(500, 64, generator=gen)
sizes = [2000, 4000, 8000, 16000, 32000]
ms_per_1k = []
for n in sizes:
    stored, labels = (
        torch.rand(n, 64, generator=gen),
        torch.randint(0, 10, (n,), generator=gen),
    )
    ms_per_1k.append(
        2000
        * seconds(lambda: neighbors.knn_predict(stored, labels, queries, k=5))  # noqa: B023
    )
    print(
        f"N = {n:6d} stored images: {ms_per_1k[-1]:6.1f} ms per 1000 predictions"
    )

# %% tags=["hide-input"]
ax = viz.plot_curves(
    {"k-NN, L2, k = 5": ms_per_1k},
    x=sizes,
    xlabel="N, number of stored training images (D = 64)",
    ylabel="ms per 1000 predictions",
    title="k-NN prediction time grows with the training set",
)
ax.set_ylim(0, None)
plt.show()

# %% [markdown]
# The time grows in proportion to $N$. Scale it up: ImageNet's 1.28 million training images of
# $224 \times 224 \times 3$ values would need about 770 GB as 32-bit floats, and every single
# prediction would read all of it. Tricks exist (approximate nearest-neighbour indexes, compressed
# vectors), and in chapter 17 (self-supervised learning) k-NN returns as a quick probe of *learned*
# features, but on raw pixels it stays slow.
#
# ## Why pixels are a poor space
#
# Speed is the smaller problem. The bigger one is the one the cat already showed: distances between
# raw pixel vectors do not follow what the images mean. Take a test digit and move it by one pixel.
# To a human it is the same digit. To the L2 distance it moves farther than the nearest training
# image of a *different* digit; let us count how often.


# %%
def shift_images(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move all images [N, C, H, W] by dy rows (down) and dx columns (right), filling with 0 (background).

    `augment.translate` (chapter 05) takes one (dy, dx) per image; here every image gets the same one.
    """
    return augment.translate(x, torch.tensor([dy, dx]).expand(len(x), 2))


xte = x_test.flatten(1)
# every test digit, one pixel to the right
moved = shift_images(x_test, 0, 1).flatten(1)
# squared distance of each digit to its moved copy
d_self_sq = ((moved - xte) ** 2).sum(1)
# squared L2 distances by the expansion: exact here, since every term is a multiple of 1/256 (pixels are
# multiples of 1/16), so the comparison below cannot flip with the CPU or the order of the sums
d_train_sq = (
    (xte * xte).sum(1)[:, None] + (xtr * xtr).sum(1)[None, :] - 2 * xte @ xtr.T
)  # [359, 1078]
other_class = y_train[None, :] != y_test[:, None]
d_other_sq, j_other = torch.where(other_class, d_train_sq, torch.inf).min(dim=1)
# a different digit is closer than the digit itself, moved 1 px
fooled = d_other_sq < d_self_sq

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"{fooled.float().mean():.1%} of the {len(fooled)} test digits are closer to a training image of"
)
print("another class than to themselves shifted by one pixel to the right")
assert fooled.all(), (
    f"{(~fooled).sum()} test digits are closer to their 1-px shift than to any other class"
)

# %% tags=["hide-input"]
show = fooled.nonzero()[:4, 0]
panels, titles = [], []
for i in show.tolist():
    j = j_other[i].item()
    panels += [x_test[i], shift_images(x_test[i : i + 1], 0, 1)[0], x_train[j]]
    titles += [
        f"test digit: {y_test[i].item()}",
        f"moved 1 px: d2 = {d_self_sq[i].sqrt():.2f}",
        f"a {y_train[j].item()}: d2 = {d_other_sq[i].sqrt():.2f}",
    ]
viz.show_images(
    panels,
    titles,
    ncols=6,
    size=1.6,
    suptitle="The same digit moved 1 px is farther than another digit",
)
plt.show()

# %% [markdown]
# What does this do to k-NN? We build shifted test sets: every test image moves by $s$ pixels in
# a random one of the four directions (left, right, up, down), for $s = 0, 1, 2$.


# %%
def shift_randomly(x: torch.Tensor, s: int, seed: int = 1) -> torch.Tensor:
    """Move each image by s pixels in a random one of 4 directions (seeded)."""
    direction = torch.randint(
        0, 4, (len(x),), generator=torch.Generator().manual_seed(seed)
    )
    offsets = torch.tensor([(0, s), (s, 0), (0, -s), (-s, 0)])[
        direction
    ]  # [N, 2] (dy, dx) per image
    return augment.translate(x, offsets)


shifts = [0, 1, 2]
shifted_tests = [shift_randomly(x_test, s) for s in shifts]
knn_shift_acc = [
    metrics.accuracy(
        neighbors.knn_predict(xtr, y_train, xs, k=best_k, p=best_p), y_test
    ).item()
    for xs in shifted_tests
]

# %%
# NBVAL_CHECK_OUTPUT
for s, acc in zip(shifts, knn_shift_acc, strict=True):
    print(f"k-NN on pixels, test digits shifted by {s} px: accuracy {acc:.3f}")

# %% [markdown]
# One pixel costs about a third of the accuracy, and at two pixels k-NN is barely better than
# guessing (10 %). Neighbourhoods in pixel space collect digits *at the same position*, not digits
# of the same class.
#
# ### A learned representation, and where its robustness comes from
#
# Deep learning's answer is to compute new features from the pixels, features in which the things
# that do not matter (a shift) have been removed and the things that do (the strokes) kept, and to
# *learn* those features from data. Here is a first taste, without the details that chapters 02 to
# 06 supply: a small convolutional network (chapter 06). It slides the same small filters over every
# position, so a shifted digit gives shifted feature maps, and it ends with a maximum over all
# positions (global pooling), which does not care where a feature fired.
#
# Does that architecture make the network ignore shifts by itself? Only partly, and it is easy to
# believe more than is true. The 2×2 pooling in the middle keeps every second position, so a shift
# by one pixel does not give the same pooled maps; an 8×8 digit moved by 2 pixels loses ink over the
# border; and filters learned from centred digits never saw strokes near the edge. The other way to
# get robustness comes from the data: show each training image at a random offset of up to 2
# pixels, a *data augmentation* ([chapter 05](../05_regularization/05_regularization.ipynb)), so that
# the model *learns* which changes to ignore. To see what each part contributes we run a small
# ablation: the CNN and, for contrast, a multi-layer perceptron (MLP: one hidden layer on the 64
# pixels, no convolution, no pooling), each trained with and without shift augmentation. The same
# idea for k-NN is to store every training digit at all $5 \times 5$ offsets up to 2 pixels, a
# memory 25 times larger. Each network gets its own peak learning rate, picked from 0.01, 0.03 and
# 0.1 on the validation digits (averaged over validation copies shifted by 0, 1 and 2 pixels); the test digits
# are used once, at the end, exactly as for k-NN. The diagram after the code shows both networks,
# with the shape of the tensor after each layer.


# %%
def shifted_batch(generator: torch.Generator):
    """A DataLoader collate_fn: stack the samples, then move each image by its own random offset of up
    to 2 px in each direction (`augment.random_translate`, chapter 05)."""

    def collate(batch):
        x, y = default_collate(batch)
        return augment.random_translate(x, 2, generator=generator), y

    return collate


def make_model(kind: str) -> nn.Module:
    if kind == "CNN":
        return nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [32, 4, 4]
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(),                  # [64, 4, 4]
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),                                   # [64]: max over positions
            nn.Linear(64, 10),                                                       # 10 class scores
        )  # fmt: skip
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)
    )  # the MLP


# %% tags=["hide-input"]
fig, axes = plt.subplots(
    2, 1, figsize=(12, 2.6), gridspec_kw={"height_ratios": [1, 1]}
)
viz.chain_diagram(
    [
        ("digit\n[1, 8, 8]", "io"),
        ("conv 3×3, 1 → 32\n+ ReLU [32, 8, 8]", "conv"),
        ("max-pool 2×2\n[32, 4, 4]", "pool"),
        ("conv 3×3, 32 → 64\n+ ReLU [64, 4, 4]", "conv"),
        ("global max-pool\n[64]", "pool"),
        ("linear 64 → 10\nclass scores", "linear"),
    ],
    ax=axes[0], spacing=2.1, block_size=(1.9, 0.7), title="CNN: shared 3×3 filters, then a max over positions",
)  # fmt: skip
viz.chain_diagram(
    [
        ("digit\n[1, 8, 8]", "io"),
        ("flatten\n[64]", "other"),
        ("linear 64 → 256\n+ ReLU", "linear"),
        ("linear 256 → 10\nclass scores", "linear"),
    ],
    ax=axes[1], spacing=2.1, block_size=(1.9, 0.7), title="MLP: every pixel has its own weights",
)  # fmt: skip
axes[1].set_xlim(axes[0].get_xlim())
plt.show()

# %%
shifted_vals = [
    shift_randomly(x_val, s, seed=2) for s in shifts
]  # other random directions than the test
val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=512)


def fit_digits(
    kind: str, augment_shifts: bool, lr: float, epochs: int = 15, seed: int = 0
):
    """Train a fresh model on the training digits (Adam with a one-cycle schedule peaking at lr)."""
    torch.manual_seed(seed)
    model = make_model(kind).to(device)
    train_loader = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=shifted_batch(torch.Generator().manual_seed(seed))
        if augment_shifts
        else None,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * len(train_loader)
    )
    history = train.fit(
        model,
        train_loader,
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        val_loader=val_loader,
        metrics={"acc": metrics.accuracy},
        scheduler=scheduler,
        scheduler_step="batch",
        device=device,
        desc=f"{kind}, {'with' if augment_shifts else 'no'} shifts, lr {lr:g}",
    )
    return model.eval(), history


@torch.no_grad()
def shift_accuracies(
    model: nn.Module, images: list[torch.Tensor], labels: torch.Tensor
) -> list[float]:
    return [
        metrics.accuracy(model(x.to(device)), labels.to(device)).item()
        for x in images
    ]


lrs = [1e-2, 3e-2, 1e-1]
chosen = {}  # (kind, augment_shifts) -> (mean validation accuracy, lr, model, history)
for kind in ("MLP", "CNN"):
    for augment_shifts in (False, True):
        for lr in lrs:
            model, history = fit_digits(kind, augment_shifts, lr)
            score = sum(shift_accuracies(model, shifted_vals, y_val)) / len(
                shifts
            )
            if (kind, augment_shifts) not in chosen or score > chosen[
                kind, augment_shifts
            ][0]:
                chosen[kind, augment_shifts] = (score, lr, model, history)
cnn, history = chosen["CNN", True][2:]
history.plot(
    title="The CNN trained with random shifts of up to 2 px (its chosen learning rate)"
)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
n_params = {
    kind: sum(p.numel() for p in chosen[kind, True][2].parameters())
    for kind in ("MLP", "CNN")
}
print(
    f"parameters: CNN {n_params['CNN']:,}, MLP {n_params['MLP']:,} (k-NN stores {x_train.numel():,} pixels)"
)

# %% [markdown]
# Now all of them on the shifted test sets, once.

# %%
memory_x = torch.cat(
    [
        shift_images(x_train, dy, dx)
        for dy in range(-2, 3)
        for dx in range(-2, 3)
    ]
)
memory_y = y_train.repeat(25)
big_knn_acc = [
    metrics.accuracy(
        neighbors.knn_predict(memory_x, memory_y, xs, k=best_k, p=best_p),
        y_test,
    ).item()
    for xs in shifted_tests
]
results = {
    "k-NN on pixels": knn_shift_acc,
    "k-NN, 25x memory of shifted copies": big_knn_acc,
}
for (kind, augment_shifts), (score, lr, model, _) in chosen.items():
    name = f"{kind} {'trained with shifts' if augment_shifts else 'trained without shifts'}"
    results[name] = shift_accuracies(model, shifted_tests, y_test)
    print(
        f"{name:>32}: learning rate {lr:g} (mean validation accuracy {score:.3f})"
    )
print()
print(
    f"{'test accuracy, shifted by':>36}"
    + "".join(f"{s:>7d} px" for s in shifts)
)
for name, accs in results.items():
    print(f"{name:>36}" + "".join(f"{a:10.3f}" for a in accs))

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.8))
styles = ["o:", "s:", "^--", "^-", "o--", "o-"]
for (name, accs), style, c in zip(
    results.items(), styles, [3, 3, 1, 1, 0, 0], strict=True
):
    ax.plot(shifts, accs, style, color=viz.color(c), label=name)
ax.set(
    xlabel="shift of the test digits (pixels)",
    ylabel="test accuracy",
    xticks=shifts,
    ylim=(0, 1.02),
)
ax.set_title("Robustness to shifts: architecture vs data")
ax.legend(fontsize=7, loc="lower left")
plt.show()

# %%
cnn_aug, cnn_plain = (
    results["CNN trained with shifts"],
    results["CNN trained without shifts"],
)
mlp_aug, mlp_plain = (
    results["MLP trained with shifts"],
    results["MLP trained without shifts"],
)
assert cnn_aug[0] > 0.95, (
    f"CNN accuracy on unshifted test digits {cnn_aug[0]:.3f}, expected > 0.95"
)
assert cnn_aug[2] > 0.9, (
    f"CNN (with shifts) on 2-px shifted digits: {cnn_aug[2]:.3f}, expected > 0.9"
)
assert cnn_aug[2] - cnn_plain[2] > 0.2, (
    f"augmentation lifts the CNN at 2 px by {cnn_aug[2] - cnn_plain[2]:.3f}, expected > 0.2"
)
assert cnn_plain[2] - mlp_plain[2] > 0.2, (
    f"without augmentation the CNN beats the MLP at 2 px by {cnn_plain[2] - mlp_plain[2]:.3f}, expected > 0.2"
)
assert mlp_aug[2] - mlp_plain[2] > 0.4, (
    f"augmentation lifts the MLP at 2 px by {mlp_aug[2] - mlp_plain[2]:.3f}, expected > 0.4"
)
assert cnn_aug[2] - mlp_aug[2] > 0.05, (
    f"CNN {cnn_aug[2]:.3f} vs MLP {mlp_aug[2]:.3f} (both with shifts) at 2 px"
)
assert big_knn_acc[2] > 0.95, (
    f"k-NN with shifted copies at 2 px: {big_knn_acc[2]:.3f}, expected > 0.95"
)

# %% [markdown]
# Read the table column by column at 2 pixels.
#
# - **The architecture alone helps, but less than one might think.** Trained on centred digits
#   only, the CNN keeps about 0.6 at 2 pixels, where the MLP and k-NN fall to 0.15 or less. Shared
#   filters and global pooling give a head start, not invariance.
# - **Most of the robustness comes from the data.** The same CNN trained on shifted copies keeps
#   about 0.99. Even the MLP, which has no notion of neighbouring pixels at all, climbs from about
#   0.13 to about 0.86 when it sees shifted digits during training. And k-NN, fed the same shifted
#   copies as stored memory, reaches 0.99 or more: on this one kind of change it matches the CNN.
# - **The architecture makes learning the invariance cheaper.** With augmentation the CNN still
#   beats the MLP by more than ten points with almost the same number of parameters: convolution
#   and pooling are a good *prior* for images, one that makes the invariance easy to learn, and
#   chapter 06 explains why.
#
# So the honest summary is: a network is robust to what its training data shows it, helped by an
# architecture that makes such robustness easy to represent. k-NN with shifted copies gets the same
# robustness from the same data, but look at the price: 25 times the memory and about 25 times the
# prediction time, for shifts alone. The timings on this machine (they vary with the hardware and
# its load):

# %%
xq = shifted_tests[2]  # the 359 test digits
with torch.no_grad():
    t_cnn = seconds(lambda: cnn(xq.to(device)).cpu())
t_knn = seconds(
    lambda: neighbors.knn_predict(xtr, y_train, xq, k=best_k, p=best_p)
)
t_big = seconds(
    lambda: neighbors.knn_predict(memory_x, memory_y, xq, k=best_k, p=best_p)
)
print(
    f"CNN {1000 * t_cnn:.1f} ms | k-NN {1000 * t_knn:.1f} ms | k-NN with 25x memory {1000 * t_big:.1f} ms"
)

# %% [markdown]
# With only 1,078 stored digits, plain k-NN may even be faster than the CNN; what matters is how
# the costs grow. The CNN's time per image is fixed by its architecture, whatever the size of the
# training set; k-NN's grows with every stored image. And real photos vary in position *and*
# scale *and* viewpoint *and* lighting *and* shape at once: stored copies for every combination
# multiply beyond any memory. A learned representation covers such variation with a fixed number
# of parameters (here about 19 thousand), learned once.
#
# ## The deep-learning view, and the road ahead
#
# The lesson generalizes. What makes recognition hard is a set of *factors of variation* (position,
# pose, lighting, style) that change the pixels completely while leaving the class alone. Deep
# learning handles them by building representations in layers, each expressed in terms of simpler
# ones from the layer below: edges from pixels, strokes and textures from edges, parts from strokes,
# objects from parts. Each layer can discard a little of the nuisance and keep what matters, and
# all layers are learned from labelled (or, later, unlabelled) data. The course follows that thread:
#
# - **Foundations.** [Chapter 01](../01_preprocessing/01_preprocessing.ipynb) prepares the inputs
#   (centering, standardization, PCA, whitening);
#   [chapter 02](../02_activations_and_init/02_activations_and_init.ipynb) covers the non-linearities
#   between layers and how to initialize the weights;
#   [chapter 03](../03_losses/03_losses.ipynb) the loss functions that say what "good" means;
#   chapter 04 the optimizers that minimize them; chapter 05 regularization, which keeps a big
#   network from memorizing, as k=1 did on the moons.
# - **Convolutional networks.** Chapter 06 explains convolution, pooling and the classic
#   architectures up to ResNet; chapter 07 labels every pixel (segmentation); chapter 08 finds and
#   boxes objects (detection).
# - **Generative models.** Chapter 09 autoencoders and VAEs, chapter 10 GANs, chapter 11 diffusion
#   models, and chapter 12 a close, critical reading of RAPHAEL, a large text-to-image diffusion
#   model.
# - **Attention and transformers.** Chapter 13 attention and the Image Transformer, chapter 14
#   vision transformers (ViT and its family), chapter 15 the Swin transformer, applied to recognizing
#   image degradations, and chapter 16 text recognition (OCR).
# - **Learning without labels, and with language.** Chapter 17 self-supervised learning (where k-NN
#   returns, on learned features), chapter 18 CLIP and image-text models, chapter 19 image
#   restoration and style transfer.
# - **Scaling up.** Chapter 20: devices, mixed precision, compilation, data loading and training on
#   several processes.
#
# ## A tour of course_lib and of the course
#
# Every chapter imports the same small library, `course_lib`, so that what one chapter builds from
# scratch, later chapters reuse in one line. Each public function is tested against a reference
# implementation and its docstring names the chapter that introduces it.
#
# | module | what it holds |
# |---|---|
# | `runtime` | `setup(seed)`: seeds Python, NumPy and PyTorch, sets one CPU thread, picks the device (a GPU if there is one), applies the plot style and prints the versions; `autocast(device)` for mixed precision |
# | `data` | `load_digits`, `digits_splits`, `split_indices`, `Normalizer` (train-only statistics), `sample_image` (bundled photos), `lfw_faces`, `make_shapes` / `ShapesDataset` (coloured shapes with masks, boxes and captions) |
# | `train` | `fit(model, loader, ...)`: the training loop with a progress bar, returning a `History` with `.plot()`; `evaluate`, `predict` |
# | `viz` | `show_images`, `plot_curves`, `plot_history`, `mask_to_rgb`, `draw_boxes`, `chain_diagram` / `diagram` (architecture diagrams, as for the CNN above), and one colour palette (`viz.color`) for every figure |
# | `metrics` | `accuracy`, `topk_accuracy` (later chapters add IoU, mAP and more) |
# | `neighbors` | `pairwise_distances`, `kneighbors`, `knn_predict` (this chapter) |
# | `exercises` | `check_function`, `check_value`: the checks at the end of each chapter that say what is wrong with an answer |
#
# You have seen `runtime.setup` in the first code cell (its printout records the device and
# versions the notebook ran with), `train.fit` and `History.plot` on the CNN, and `viz`, `metrics`
# and `neighbors` throughout. One generator deserves a picture, because chapters 07 (segmentation),
# 08 (detection), 11-12 (diffusion) and 18 (CLIP) are built on it: `data.make_shapes` draws scenes
# of coloured circles, squares and triangles and returns, for each, the image, a semantic mask
# (one class per pixel), instance masks, bounding boxes, labels and a caption.

# %%
scenes = data.make_shapes(4, size=32, min_objects=2, max_objects=3, seed=3)

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
for i in range(4):
    ax = axes[0, i]
    ax.imshow(scenes.images[i].permute(1, 2, 0).numpy())
    names = [scenes.classes[c] for c in scenes.labels[i].tolist()]
    viz.draw_boxes(
        ax, scenes.boxes[i], names, color_index=scenes.labels[i].tolist()
    )
    ax.set_title(scenes.captions[i].replace(" and ", "\nand "), fontsize=8)
    axes[1, i].imshow(
        viz.mask_to_rgb(scenes.masks[i], num_classes=len(scenes.classes) + 1)
    )
    axes[1, i].set_title("semantic mask", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "data.make_shapes: images, boxes and captions (top); semantic masks, one colour per class (bottom)"
)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
print(
    "images",
    tuple(scenes.images.shape),
    "| masks",
    tuple(scenes.masks.shape),
    scenes.masks.dtype,
)
print("boxes of scene 0 (x1, y1, x2, y2):", scenes.boxes[0].tolist())
print(
    "labels of scene 0:", [scenes.classes[c] for c in scenes.labels[0].tolist()]
)
print("caption of scene 0:", repr(scenes.captions[0]))

# %% [markdown]
# ### How to work with the course
#
# The repository's `Makefile` is the one entry point; each target creates the project's own Python
# environment on first use.
#
# - `make lab` opens JupyterLab on the chapters, with widgets working. Read, run, change things.
# - Each chapter is a **pair**: `NN_slug.py`, a plain Python script in "percent" format (cells
#   separated by `# %%`, the text in comments), and `NN_slug.ipynb`, the executed notebook with
#   its outputs. Instructors and contributors edit the `.py` (it diffs and reviews like code);
#   in JupyterLab, jupytext keeps the two files in step as you edit either.
#   `make sync` makes every notebook follow its script, and `make execute` (or
#   `make execute CHAPTERS="00"`) re-runs chapters top to bottom in a fresh kernel and stores the
#   outputs.
# - `make test` runs everything continuous integration runs: the unit tests of `course_lib`, the
#   checks that each pair is in sync, that notebooks follow the rules, and that every notebook runs
#   and reproduces the outputs marked as deterministic.
# - `make book` builds the course website from the executed notebooks.
# - The **Measured runtime** line at the top of each chapter is written by `make bench`, which
#   times every chapter on the reference 2-core CPU, where each must finish within 90 s; the same
#   notebooks run unchanged on a GPU.
# - Each chapter ends with exercises. Where the answer is code or a number, you get a stub to fill
#   and a check from `course_lib.exercises` that says what is wrong (not written yet, an error, a
#   wrong shape, or the first example with a wrong value, next to the right one). The solution sits
#   in the cell right after, collapsed in JupyterLab (click the bar on its left to open it) and
#   folded on the website under "Show solution"; it passes the same check. Try first, then compare.
# - Code whose only job is to draw a figure is folded on the website under "Show plotting code";
#   in JupyterLab it is there to read and change.
#
# ## Summary
#
# - Image classification maps a tensor of pixels to a label. It is hard because viewpoint, scale,
#   deformation, occlusion, lighting, clutter and intra-class variation change the pixels far more
#   than they change the class.
# - The data-driven approach learns from labelled examples. Train on the training set, choose
#   hyper-parameters on the validation set, and report the test set once.
# - k-NN stores the training set and votes among the $k$ closest images under L1 or L2 distance.
#   $k=1$ overfits noisy data (the moons); larger $k$ smooths. Which $k$ is best is measured on
#   validation: on the clean digits it is $k=1$, a strong baseline (all 359 test digits right on
#   our split).
# - k-NN is free to train but costs $O(N \cdot D)$ per prediction and stores all data.
# - Pixel distance does not follow meaning: a 1-pixel shift moves every one of our test digits
#   farther than the nearest digit of another class, and k-NN accuracy collapses on shifted digits.
# - Robustness comes mostly from the data the model sees: trained on randomly shifted digits a small
#   CNN keeps its accuracy under shifts, trained without them it keeps only part of it; k-NN with
#   stored shifted copies is robust too, at 25 times the memory. Convolution and pooling make the
#   invariance cheaper to learn (the CNN beats an MLP trained on the same shifted data), at a fixed
#   cost per image. Building such representations is what the rest of the course is about.
#
# ## Exercises
#
# Each exercise that asks for code gives you a stub to fill (a function that raises
# `NotImplementedError`) and a check from `course_lib.exercises` that runs it on a few examples and
# says in one line what is wrong: not written yet, an error, a wrong shape, or the first example whose
# value differs from a reference (scikit-learn, SciPy or `course_lib`), with both values. The
# solution is in the collapsed cell below each exercise; it passes the same check.
#
# **1. Distance-weighted k-NN.** Instead of one vote per neighbour, give each neighbour the weight
# $1/d$ (closer neighbours count more; if some neighbours are at distance 0, only they vote, one vote
# each). Use `neighbors.kneighbors` to get distances and indices. The check compares your predictions
# with `KNeighborsClassifier(weights="distance")` on random points, one query of which sits on three
# identical training points with two labels. Then compare with uniform votes on the validation digits
# for $k \in \{7, 21, 51\}$: does weighting change the validation accuracy?

# %%
gen_ex = torch.Generator().manual_seed(0)
pts = torch.randn(200, 16, generator=gen_ex, dtype=torch.float64)
pts_y = torch.randint(0, 10, (200,), generator=gen_ex)
# three copies of one point: labels 5, 5 and 2
dup = torch.zeros(3, 16, dtype=torch.float64)
pts, pts_y = torch.cat([pts, dup]), torch.cat([pts_y, torch.tensor([5, 5, 2])])
pts_q = torch.cat(
    [torch.randn(40, 16, generator=gen_ex, dtype=torch.float64), dup[:1]]
)


def sklearn_weighted(train_x, train_y, query_x, k, p=2):
    sk = KNeighborsClassifier(
        n_neighbors=k, weights="distance", algorithm="brute", p=p
    )
    return torch.from_numpy(
        sk.fit(train_x.numpy(), train_y.numpy()).predict(query_x.numpy())
    )


weighted_cases = [(pts, pts_y, pts_q, k) for k in (1, 7, 21)]


def knn_predict_weighted(
    train_x, train_y, query_x, k: int, p: int = 2
) -> torch.Tensor:
    raise NotImplementedError  # your code: [M] predicted labels


exercises.check_function(
    knn_predict_weighted, weighted_cases, reference=sklearn_weighted
)


# %% tags=["hide-cell"]
def knn_predict_weighted(
    train_x, train_y, query_x, k: int, p: int = 2
) -> torch.Tensor:
    dist, idx = neighbors.kneighbors(train_x, query_x, k=k, p=p)  # [M, k] each
    w = 1.0 / dist.double()
    exact = dist == 0
    # exact matches take all the weight
    w = torch.where(exact.any(1, keepdim=True), exact.double(), w)
    votes = torch.zeros(len(query_x), 10, dtype=torch.float64).scatter_add_(
        1, train_y[idx], w
    )
    return votes.argmax(dim=1)


exercises.check_function(
    knn_predict_weighted, weighted_cases, reference=sklearn_weighted
).assert_passed()
d_sorted = d2.sort(dim=1).values
for k in (7, 21, 51):
    ours = knn_predict_weighted(xtr, y_train, xva, k)
    # digits have exact ties: compare where there is none
    untied = d_sorted[:, k - 1] != d_sorted[:, k]
    assert torch.equal(
        ours[untied], sklearn_weighted(xtr, y_train, xva, k)[untied]
    )
    plain = metrics.accuracy(
        neighbors.knn_predict(xtr, y_train, xva, k=k), y_val
    )
    weighted = metrics.accuracy(ours, y_val)
    print(
        f"k = {k:2d}: uniform votes {plain:.4f}, 1/d weights {weighted:.4f} (validation)"
    )
# The gains are small, and grow with k: far neighbours count less, so a too-large k hurts less.

# %% [markdown]
# **2. Cosine distance.** The cosine distance $1 - \frac{a \cdot b}{\|a\| \|b\|}$ ignores the length
# of the vectors, i.e. how much ink a digit has. Show that k-NN with cosine distance equals k-NN
# with L2 distance on vectors normalized to unit length (hint: expand $\|a - b\|^2$ for unit
# vectors), write it with `neighbors.knn_predict`, let the check compare it with scikit-learn's
# `metric="cosine"`, and compare validation accuracies of cosine and L2 on the digits.


# %%
def sklearn_cosine(train_x, train_y, query_x, k):
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    return torch.from_numpy(
        sk.fit(train_x.numpy(), train_y.numpy()).predict(query_x.numpy())
    )


cosine_cases = [
    (pts[:200], pts_y[:200], pts_q[:40] * 3.0, k) for k in (1, 5)
]  # lengths must not matter


def knn_predict_cosine(train_x, train_y, query_x, k: int) -> torch.Tensor:
    raise NotImplementedError  # your code: [M] predicted labels


exercises.check_function(
    knn_predict_cosine, cosine_cases, reference=sklearn_cosine
)


# %% tags=["hide-cell"]
# For unit vectors ||a - b||^2 = 2 - 2 a.b = 2 * cosine distance: the same ranking of neighbours.
def knn_predict_cosine(train_x, train_y, query_x, k: int) -> torch.Tensor:
    return neighbors.knn_predict(
        F.normalize(train_x, dim=1), train_y, F.normalize(query_x, dim=1), k=k
    )


exercises.check_function(
    knn_predict_cosine, cosine_cases, reference=sklearn_cosine
).assert_passed()
for k in (1, 5):
    ours = knn_predict_cosine(xtr.double(), y_train, xva.double(), k)
    agree = (
        (ours == sklearn_cosine(xtr.double(), y_train, xva.double(), k))
        .double()
        .mean()
        .item()
    )
    # the digits' exact ties may be broken differently
    assert agree > 0.99, agree
    l2 = metrics.accuracy(neighbors.knn_predict(xtr, y_train, xva, k=k), y_val)
    print(
        f"k = {k}: cosine {metrics.accuracy(ours, y_val):.4f} vs L2 {l2:.4f} (agreement with sklearn {agree:.3f})"
    )

# %% [markdown]
# **3. Standardization.** Chapter 01 standardizes inputs: subtract the training mean of each pixel
# and divide by its standard deviation. Write `standardize(train_x, x)`: the per-pixel mean and
# sample standard deviation (`torch.std`'s default) of `train_x` over its first dimension, applied
# to `x` as $(x - \mu) / (\sigma + 10^{-6})$. The check compares it with
# `data.Normalizer("feature")`, the library version. Does it help k-NN on digits? Measure the
# validation accuracy for $k \in \{1, 3, 5\}$ and explain the result by looking at the pixels with
# the smallest standard deviation.

# %%
standardize_cases = [
    (
        torch.rand(20, 1, 4, 4, generator=gen_ex),
        torch.rand(5, 1, 4, 4, generator=gen_ex),
    ),
    # digits: some border pixels are blank in every training image
    (x_train, x_val),
]


def standardize(train_x: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code: x standardized with train_x's per-pixel statistics


exercises.check_function(
    standardize,
    standardize_cases,
    reference=lambda tr, x: data.Normalizer("feature").fit(tr).transform(x),
)


# %% tags=["hide-cell"]
def standardize(train_x: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # [1, 8, 8] each, Bessel-corrected std
    mean, std = (train_x.mean(dim=0), train_x.std(dim=0))
    return (x - mean) / (std + 1e-6)


exercises.check_function(
    standardize,
    standardize_cases,
    reference=lambda tr, x: data.Normalizer("feature").fit(tr).transform(x),
).assert_passed()
for k in (1, 3, 5):
    raw = metrics.accuracy(
        neighbors.knn_predict(x_train, y_train, x_val, k=k), y_val
    ).item()
    std = metrics.accuracy(
        neighbors.knn_predict(
            standardize(x_train, x_train),
            y_train,
            standardize(x_train, x_val),
            k=k,
        ),
        y_val,
    ).item()
    print(f"k = {k}: raw pixels {raw:.4f}, standardized pixels {std:.4f}")
    assert raw > std
pixel_std = x_train.std(dim=0).flatten().sort().values
print(
    "smallest pixel standard deviations:",
    [f"{s:.4f}" for s in pixel_std[:6].tolist()],
)
# Standardization gives every pixel the same weight in the distance. The border pixels are almost
# always blank: their tiny std turns a stray speck of ink into a huge coordinate (up to tens of
# units), which then dominates the distance. For k-NN, the scale of each feature IS the metric.

# %% [markdown]
# **4. Confusion matrix.** Write `confusion_counts(y_true, y_pred, num_classes)`: how often each
# true class (row) is predicted as each class (column), a `[num_classes, num_classes]` integer
# matrix, computed with one `torch.bincount` and no loop. The check compares it with
# `sklearn.metrics.confusion_matrix`. Then compute it for the validation set with the chosen $k$
# and distance, show it as an image, and name the most frequent confusion.

# %%
from sklearn.metrics import confusion_matrix

val_pred = neighbors.knn_predict(xtr, y_train, xva, k=best_k, p=best_p)
confusion_cases = [
    # class 3 never occurs
    (torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 2, 2, 1, 0]), 4),
    (y_val, val_pred, 10),
]


def sklearn_confusion(y_true, y_pred, num_classes):
    return torch.from_numpy(
        confusion_matrix(
            y_true.numpy(), y_pred.numpy(), labels=range(num_classes)
        )
    )


def confusion_counts(
    y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int
) -> torch.Tensor:
    raise NotImplementedError  # your code: [num_classes, num_classes] counts, rows = true class


exercises.check_function(
    confusion_counts, confusion_cases, reference=sklearn_confusion
)


# %% tags=["hide-cell"]
def confusion_counts(
    y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int
) -> torch.Tensor:
    flat = torch.bincount(
        y_true * num_classes + y_pred, minlength=num_classes * num_classes
    )
    # rows: true class, columns: predicted
    return flat.reshape(num_classes, num_classes)


exercises.check_function(
    confusion_counts, confusion_cases, reference=sklearn_confusion
).assert_passed()
cm = confusion_counts(y_val, val_pred, 10)
fig, ax = plt.subplots(figsize=(4.2, 3.8))
im = ax.imshow(cm, cmap="Blues")
for (i, j), v in np.ndenumerate(cm.numpy()):
    if v:
        ax.text(
            j,
            i,
            v,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > 20 else "black",
        )
ax.set(
    xlabel="predicted digit",
    ylabel="true digit",
    xticks=range(10),
    yticks=range(10),
)
ax.set_title("k-NN confusion matrix (validation)")
ax.grid(False)
plt.show()
off = cm - torch.diag(cm.diagonal())
i, j = divmod(off.argmax().item(), 10)
print(
    f"most frequent confusion: true {i} predicted as {j} ({off.max().item()} times)"
)

# %% [markdown]
# ## References
#
# - T. M. Cover and P. E. Hart (1967). Nearest neighbor pattern classification. *IEEE Transactions
#   on Information Theory* 13(1), 21-27.
# - F.-F. Li, A. Karpathy, J. Johnson et al. CS231n: Convolutional Neural Networks for Visual
#   Recognition, course notes "Image classification: data-driven approach, k-nearest neighbor,
#   train/val/test splits", Stanford University, https://cs231n.github.io/classification/.
# - Y. LeCun, L. Bottou, Y. Bengio and P. Haffner (1998). Gradient-based learning applied to
#   document recognition. *Proceedings of the IEEE* 86(11), 2278-2324.
# - P. Simard, Y. LeCun and J. Denker (1993). Efficient pattern recognition using a new
#   transformation distance. *Advances in Neural Information Processing Systems 5*. (A distance
#   made tolerant to small shifts and rotations: the problem of the last section, handled in the
#   metric.)
# - E. Alpaydin and C. Kaynak (1998). Optical Recognition of Handwritten Digits. UCI Machine
#   Learning Repository, https://doi.org/10.24432/C50P49; and E. Alpaydin and C. Kaynak (1998),
#   Cascading classifiers, *Kybernetika* 34(4), 369-374. scikit-learn's `load_digits` is the test
#   part of this dataset (1,797 digits by 13 writers).
# - F. Pedregosa et al. (2011). Scikit-learn: machine learning in Python. *Journal of Machine
#   Learning Research* 12, 2825-2830.
# - I. Goodfellow, Y. Bengio and A. Courville (2016). *Deep Learning*, MIT Press, chapter 1
#   (representation learning and factors of variation).
