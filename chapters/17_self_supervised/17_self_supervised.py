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
# # 17 · Self-supervised learning
#
# Labels are the expensive part of computer vision; images are cheap. Self-supervised learning trains
# an encoder on unlabelled images with a task made from the images themselves, then measures what it
# learned with a handful of labels. This chapter builds the main families on one small problem where
# a random encoder does badly: a pretext task (predict the rotation), deep clustering (k-means on the
# features, then learn the clusters), contrastive learning (SimCLR with the NT-Xent loss of
# chapter 03) and a method without negatives (BYOL). Each is evaluated the standard way, with a linear
# probe and a k-NN monitor on frozen features, against the same encoder with random weights.
#
# **Learning objectives.** After this chapter you can:
# - evaluate a representation with a linear probe and a k-NN monitor on frozen features, and say why
#   the baseline is the *same* encoder with random weights;
# - build a pretext task (rotation prediction) and DeepCluster's loop (k-means on the features,
#   re-seeded empty clusters, balanced sampling, training on the pseudo-labels);
# - train SimCLR: two augmented views, an encoder and a projection head, NT-Xent over the batch;
#   and say which augmentations matter and why;
# - write BYOL's loss ($2 - 2\cos$, with a stop-gradient) and its EMA target, and measure collapse
#   with the spread of the normalized embeddings;
# - draw a feature space (a 2-D projection coloured by class) and read it.
#
# **Prerequisites.** [Chapter 03](../03_losses/03_losses.ipynb) (the NT-Xent loss, written from
# scratch there), [chapter 05](../05_regularization/05_regularization.ipynb) (augmentations, batch
# normalization, the weight EMA) and [chapter 06](../06_cnns/06_cnns.ipynb) (small CNNs).
#
# **Measured runtime:** 70 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [17_self_supervised.ipynb](17_self_supervised.ipynb) (notebook, with outputs) · [17_self_supervised.py](17_self_supervised.py) (the paired script instructors edit)

# %%
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from tqdm.auto import trange

from course_lib import data, exercises, losses, optim, runtime, selfsup, viz

SEED = 0
device = runtime.setup(seed=SEED)

# %% [markdown]
# ## The problem: shapes whose colour is a nuisance
#
# Self-supervised learning is only worth measuring where a random encoder is poor. On coloured shapes
# on a black background, a CNN with *random* weights followed by a linear classifier already
# separates circles, squares and triangles almost perfectly (the prototype of this demo measured
# 0.96): there is nothing left for pre-training to add. So the images here are hard: one shape per image, of a random
# colour and brightness, on a textured background with distractor strokes and strong pixel noise.
# The label is the shape; colour, brightness, position and clutter are nuisances the representation
# should ignore.
#
# The protocol is the usual one, made small:
# - **2000 unlabelled images** for self-supervised training;
# - **80 labelled images** to train the probe, a **validation set** of 500 to choose the probe's
#   weight decay, a **test set** of 1000 to report.

# %%
SHAPES = dict(
    radius=(0.2, 0.35),
    min_objects=1,
    max_objects=1,
    clutter=4,
    background=0.08,
    noise=0.12,
    intensity=(0.45, 1.0),
)


def shapes_split(n, seed):
    s = data.make_shapes(n, 32, seed=seed, **SHAPES)
    return s.images.to(device), torch.stack([lab[0] for lab in s.labels]).to(
        device
    )


x_unlab, _ = shapes_split(2000, 100)
x_train, y_train = shapes_split(80, 101)
x_val, y_val = shapes_split(500, 102)
x_test, y_test = shapes_split(1000, 103)
CLASSES = data.SHAPE_CLASSES

# %%
# NBVAL_CHECK_OUTPUT
print("unlabelled:", tuple(x_unlab.shape), x_unlab.dtype)
for name, y in (("train", y_train), ("val", y_val), ("test", y_test)):
    counts = torch.bincount(y, minlength=3).tolist()
    print(
        f"{name}: {len(y)} images, per class {dict(zip(CLASSES, counts, strict=True))}"
    )

# %% tags=["hide-input"]
viz.show_images(
    x_train[:16].cpu(),
    titles=[CLASSES[i] for i in y_train[:16].tolist()],
    ncols=8,
    size=1.25,
)
plt.show()

# %% [markdown]
# ## Measuring a representation: linear probe and k-NN monitor
#
# A self-supervised encoder $f$ is judged by what a simple classifier can read off its frozen
# features $h = f(x)$. The **linear probe** trains a multinomial logistic regression on the features
# of the labelled images; the **k-NN monitor** classifies a test image by the labels of its $k$
# nearest labelled images in cosine similarity. The k-NN monitor needs no training, so it is cheap
# enough to run during self-supervised training; the probe is the number papers report.
#
# The baseline matters. Pixels are a poor baseline (a linear model on 3072 noisy pixels with 80
# labels), and so is chance. The honest one is **the same architecture with random weights**: a
# random CNN is already a useful feature extractor (random convolutions plus pooling give some
# translation invariance), which DeepCluster's authors measured on ImageNet, far above chance. What
# pre-training adds is the difference to that baseline.
#
# `selfsup.linear_probe` standardizes the features and trains the probe full-batch from zero weights;
# below it is checked against scikit-learn's `LogisticRegression` with the matching penalty, and the
# k-NN monitor against scikit-learn's cosine k-NN.


# %%
class ChannelsLast(nn.Module):
    """Stores the batch channels-last (N, H, W, C in memory): a speed-up of the
    convolutions on a CPU, the values are unchanged."""

    def forward(self, x):
        return x.contiguous(memory_format=torch.channels_last)


def make_encoder():
    """Three conv-BN-ReLU-pool blocks (16, 32, 64 channels) and global average pooling: 64 features."""

    def block(c_in, c_out):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        ChannelsLast(),
        block(3, 16),
        block(16, 32),
        block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).to(device, memory_format=torch.channels_last)


WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)


def val_probes(h_tr, h_va):
    """Probe accuracy on validation for each weight decay."""
    return {
        wd: selfsup.linear_probe(h_tr, y_train, h_va, y_val, weight_decay=wd)
        for wd in WEIGHT_DECAYS
    }


def best_val_probe(encoder):
    """The validation probe at its best weight decay: the number choices use."""
    h_tr, h_va = (selfsup.embed(encoder, x) for x in (x_train, x_val))
    return max(val_probes(h_tr, h_va).values())


def evaluate(encoder):
    """Probe and 5-NN accuracy on test (the probe's weight decay chosen on
    validation), and the same two on validation, for choices."""
    h_tr, h_va, h_te = (
        selfsup.embed(encoder, x) for x in (x_train, x_val, x_test)
    )
    val_acc = val_probes(h_tr, h_va)
    wd = max(val_acc, key=val_acc.get)
    return {
        "probe": selfsup.linear_probe(
            h_tr, y_train, h_te, y_test, weight_decay=wd
        ),
        "knn": selfsup.knn_accuracy(h_tr, y_train, h_te, y_test, k=5),
        "weight decay": wd,
        "val probe": val_acc[wd],
        "val knn": selfsup.knn_accuracy(h_tr, y_train, h_va, y_val, k=5),
    }


def show(name):
    r = results[name]
    print(
        f"{name}: probe {r['probe']:.3f}, 5-NN {r['knn']:.3f} on test; "
        f"probe {r['val probe']:.3f} on val (weight decay {r['weight decay']:g})"
    )


torch.manual_seed(SEED)
random_encoder = make_encoder()
h_tr = selfsup.embed(random_encoder, x_train).cpu()
h_te = selfsup.embed(random_encoder, x_test).cpu()

# the probe against scikit-learn: same loss (C = 1 / (2 N wd) for a summed penalty on a mean loss)
mu, sd = h_tr.mean(0), h_tr.std(0, unbiased=False)
sk_probe = LogisticRegression(C=1 / (2 * 80 * 1e-2), max_iter=5000).fit(
    ((h_tr - mu) / sd).numpy(), y_train.cpu().numpy()
)
ours = selfsup.linear_probe(
    h_tr, y_train.cpu(), h_te, y_test.cpu(), weight_decay=1e-2, steps=2000
)
theirs = sk_probe.score(((h_te - mu) / sd).numpy(), y_test.cpu().numpy())
assert abs(ours - theirs) < 0.02, (
    f"probe {ours:.3f} vs scikit-learn {theirs:.3f}"
)

# the k-NN monitor against scikit-learn's cosine k-NN
sk_knn = KNeighborsClassifier(5, metric="cosine").fit(
    h_tr.numpy(), y_train.cpu().numpy()
)
sk_knn_acc = sk_knn.score(h_te.numpy(), y_test.cpu().numpy())
our_knn = selfsup.knn_accuracy(h_tr, y_train.cpu(), h_te, y_test.cpu(), k=5)
assert abs(our_knn - sk_knn_acc) < 0.01, f"{our_knn:.3f} vs {sk_knn_acc:.3f}"

results = {"random encoder": evaluate(random_encoder)}
print(
    f"probe: ours {ours:.3f}, scikit-learn {theirs:.3f}; 5-NN: ours {our_knn:.3f}, "
    f"scikit-learn {sk_knn_acc:.3f}"
)
show("random encoder")

# %% [markdown]
# The random encoder's probe is above chance (1/3) but far from perfect (0.42 to 0.47 over three
# seeds of the initialization): through random features, colour, brightness and clutter drown the
# shape. That is the baseline every method below has to beat.
#
# ## Pretext tasks: predicting the rotation
#
# A **pretext task** is a supervised task whose labels come free with the image. Gidaris et al.
# (2018) rotate every image by 0°, 90°, 180° or 270° and train the network to say which: to know that
# a triangle is upside down, the network has to find the triangle and see its orientation, so
# shape-sensitive features help. The task has blind spots that teach something about all pretext
# tasks: a circle looks the same at every rotation and a square at every quarter turn, so for them
# only the clutter and the background give the answer, and the network can solve part of the task
# with low-level cues (where the noise pattern sits, how the strokes run) that say nothing about the
# class.

# %%
x4, r4 = selfsup.rotation_batch(x_unlab[:2])
# NBVAL_CHECK_OUTPUT
# the same as rotating by hand: k quarter turns counter-clockwise
for k in range(4):
    assert torch.equal(
        x4[2 * k : 2 * k + 2], torch.rot90(x_unlab[:2], k, (2, 3))
    )
print("rotation batch:", tuple(x4.shape), "labels", r4.tolist())


# %%
def train_rotation(steps=120, batch=64, seed=SEED):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder, head = make_encoder(), nn.Linear(64, 4).to(device)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=2e-3)
    curve = []
    for _ in trange(steps, desc="rotation"):
        idx = torch.randint(0, len(x_unlab), (batch // 4,), generator=gen)
        xr, yr = selfsup.rotation_batch(x_unlab[idx])
        loss = F.cross_entropy(head(encoder(xr)), yr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    with torch.no_grad():
        xr, yr = selfsup.rotation_batch(x_test[:250])
        pretext_acc = (head(selfsup.embed(encoder, xr)).argmax(1) == yr).float()
    return encoder, curve, pretext_acc.mean().item()


rotation_encoder, rotation_curve, rotation_acc = train_rotation()
results["rotation"] = evaluate(rotation_encoder)
print(f"rotation accuracy on test images: {rotation_acc:.3f} (chance 0.25)")
show("rotation")

# %% [markdown]
# The pretext task itself is barely learned in 120 steps: rotation accuracy on test images was 0.30
# to 0.36 over three seeds, against 0.25 for chance. Yet the probe rises above the random encoder's
# on every seed: the features the network started to build for the pretext task carry shape
# information. Pretext accuracy and downstream quality are different numbers; only the second is the
# goal.
#
# ## Deep clustering
#
# DeepCluster (Caron et al., 2018) needs no pretext task and little domain knowledge, which is why it
# suits new kinds of images (satellite, medical, depth). It alternates two steps:
#
# 1. compute the features $h_n = f_\theta(x_n)$ of all images and cluster them with k-means into
#    $K$ groups, which gives each image a pseudo-label $y_n$ (the notes stop mid-sentence here and
#    cite an equation they never give; this is it):
#    $$\min_{C \in \mathbb R^{d\times K}} \frac1N \sum_{n=1}^N \min_{y_n \in \{0,1\}^K,\ y_n^\top
#    \mathbf 1 = 1} \| f_\theta(x_n) - C y_n \|_2^2;$$
# 2. train the network (with a fresh classifier head) to predict those pseudo-labels with
#    cross-entropy, then go back to 1.
#
# Both steps together have a trivial solution: put everything into one cluster and predict it. Two
# fixes from the paper prevent it: an **empty cluster is re-seeded** from the largest one (its
# centroid copied with a small perturbation, so the two split that cluster), and images are sampled
# **uniformly over clusters**, so that a huge cluster does not dominate the loss.
# `selfsup.kmeans` and `selfsup.cluster_balanced_weights` hold both; first the assignment and update
# steps from scratch, checked against scikit-learn.


# %%
def kmeans_scratch(x, centroids, iters):
    """Lloyd's algorithm from given centroids: assign to the nearest, move to the mean."""
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        centroids = torch.stack(
            [x[assign == j].mean(0) for j in range(len(centroids))]
        )
    return centroids, torch.cdist(x, centroids).argmin(1)


h_unlab = selfsup.embed(random_encoder, x_unlab[:600]).cpu()
init = h_unlab[:6].clone()
c_ours, a_ours = kmeans_scratch(h_unlab, init, 30)
c_lib, _ = selfsup.kmeans(h_unlab, 6, iters=30, init=init)
sk = KMeans(6, init=init.numpy(), n_init=1, max_iter=30, tol=0).fit(
    h_unlab.numpy()
)
torch.testing.assert_close(c_ours, c_lib, rtol=1e-4, atol=1e-4)
torch.testing.assert_close(
    c_ours, torch.from_numpy(sk.cluster_centers_).float(), rtol=1e-4, atol=1e-4
)
print("from scratch, course_lib and scikit-learn agree on the centroids")


# %%
def train_deepcluster(rounds=2, k=12, steps=60, batch=64, seed=SEED):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = make_encoder()
    opt = torch.optim.Adam(encoder.parameters(), lr=2e-3)
    sizes = []
    for _ in trange(rounds, desc="DeepCluster rounds"):
        h = F.normalize(selfsup.embed(encoder, x_unlab), dim=1)
        _, pseudo = selfsup.kmeans(h, k, iters=20, generator=gen)
        sizes.append(
            torch.bincount(pseudo, minlength=k).sort(descending=True)[0]
        )
        weights = selfsup.cluster_balanced_weights(pseudo, k)
        head = nn.Linear(64, k).to(device)  # a fresh head: cluster ids change
        head_opt = torch.optim.Adam(head.parameters(), lr=2e-3)
        for _ in range(steps):
            idx = torch.multinomial(weights.cpu(), batch, True, generator=gen)
            v = selfsup.simclr_view(x_unlab[idx], generator=gen, color=0.0)
            loss = F.cross_entropy(head(encoder(v)), pseudo[idx])
            opt.zero_grad()
            head_opt.zero_grad()
            loss.backward()
            opt.step()
            head_opt.step()
    return encoder, sizes


deepcluster_encoder, cluster_sizes = train_deepcluster()
results["DeepCluster"] = evaluate(deepcluster_encoder)
print("cluster sizes per round (largest first):")
for r, s in enumerate(cluster_sizes):
    print(f"  round {r}: {s.tolist()}")
show("DeepCluster")

# %% [markdown]
# ## SimCLR: contrastive learning with NT-Xent
#
# SimCLR (Chen et al., 2020) has four parts:
# 1. a random augmentation $t \sim \mathcal T$ applied twice to each image, $v = t(x)$ and
#    $v' = t'(x)$: a **positive pair**;
# 2. a base encoder $h = f(v)$ (our CNN), the representation that is kept;
# 3. a small projection head $z = g(h)$ (an MLP), used only by the loss and thrown away after;
# 4. the NT-Xent loss over a batch of $N$ images, $2N$ views: for the anchor $i$ and its positive $j$,
#    $$\ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}
#    {\sum_{k=1}^{2N} \mathbb 1_{[k \ne i]}\exp(\mathrm{sim}(z_i, z_k)/\tau)},\qquad
#    \mathcal L = \frac1{2N}\sum_{k=1}^{N}\left[\ell_{2k-1,2k} + \ell_{2k,2k-1}\right].$$
#
# [Chapter 03](../03_losses/03_losses.ipynb#contrastive-loss-nt-xent) wrote this loss from scratch,
# checked it against `losses.nt_xent`, and corrected the notes' description (the denominator sums
# exponentials over the other $2N - 1$ views *of the batch*, not similarities over the dataset). Here
# it is trained. The negatives come from the batch, so the batch size sets how many there are.
#
# **The augmentations are the method.** They define what the encoder must ignore: whatever changes
# between two views of one image cannot be used to pair them. SimCLR's ablation found the pair
# *random crop + colour distortion* far ahead of any single one: with crops alone, the two views of an
# image share their colour histogram, and the network pairs them by colour. On our shapes colour is
# exactly the nuisance, so `selfsup.simclr_view` crops (area 30-100 % of the image, resized back to
# 32 px), flips, multiplies each channel by a random gain (a hue change) and turns 20 % of the views
# grey. The crop range (30 % against 50 % as the smallest area) and Adam's learning rate (2e-3, 4e-3,
# 8e-3) were chosen on the validation split, over three seeds, while this chapter was written; the
# temperature is chosen below, and the ablation measures what crop and colour each contribute.
# Move the slider to see views of one image at another colour strength.

# %%
SIMCLR_VIEW = dict(scale=(0.3, 1.0), color=0.6, gray_p=0.2)


def show_views(color=0.6, ax_row=None):
    gen = torch.Generator().manual_seed(0)
    img = x_train[:1].expand(6, -1, -1, -1)
    views = selfsup.simclr_view(
        img, **dict(SIMCLR_VIEW, color=color), generator=gen
    )
    viz.show_images(
        torch.cat([x_train[:1], views]).cpu(),
        titles=["original"] + [f"view {i}" for i in range(1, 7)],
        ncols=7,
        size=1.4,
    )
    plt.show()


show_views()

# %%
_ = widgets.interact(
    show_views,
    color=widgets.FloatSlider(
        value=0.6, min=0.0, max=0.9, step=0.1, description="colour"
    ),
    ax_row=widgets.fixed(None),
)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(10, 2.6))
viz.diagram(
    {
        "x": (0, 0, "image x", "io"),
        "v1": (2, 0.8, "view v = t(x)", "other"),
        "v2": (2, -0.8, "view v' = t'(x)", "other"),
        "f1": (4.3, 0.8, "encoder f\n3 conv blocks → 64", "conv"),
        "f2": (4.3, -0.8, "encoder f\n(shared weights)", "conv"),
        "g1": (6.6, 0.8, "projection g\n64 → 128 → 32", "linear"),
        "g2": (6.6, -0.8, "projection g\n(shared)", "linear"),
        "loss": (8.8, 0, "NT-Xent over\n2N views", "head"),
    },
    [
        ("x", "v1"),
        ("x", "v2"),
        ("v1", "f1"),
        ("v2", "f2"),
        ("f1", "g1", "-", "h"),
        ("f2", "g2", "-", "h'"),
        ("g1", "loss", "-", "z"),
        ("g2", "loss", "-", "z'"),
    ],
    ax=ax,
    title="SimCLR: the representation h is kept, the head g is thrown away",
)
plt.show()

# %%
SIMCLR = dict(batch=64, lr=4e-3)  # Adam
TEMPERATURES = (0.1, 0.2, 0.5)
SWEEP_STEPS, TOTAL_STEPS = 50, 300


def train_simclr(
    steps, temperature, view=SIMCLR_VIEW, run=None, seed=SEED, desc="SimCLR"
):
    """SimCLR for `steps` steps, from scratch or continuing `run` (a dict with
    the encoder, head, optimizer, generator, loss curve and k-NN monitor)."""
    if run is None:
        torch.manual_seed(seed)
        encoder = make_encoder()
        head = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
        params = [*encoder.parameters(), *head.parameters()]
        run = dict(
            encoder=encoder,
            head=head.to(device),
            opt=torch.optim.Adam(params, lr=SIMCLR["lr"]),
            gen=torch.Generator().manual_seed(seed),
            curve=[],
            monitor=[],
        )
    encoder, head, opt, gen = (
        run[k] for k in ("encoder", "head", "opt", "gen")
    )
    for _ in trange(steps, desc=desc):
        idx = torch.randint(0, len(x_unlab), (SIMCLR["batch"],), generator=gen)
        v1, v2 = selfsup.simclr_views(x_unlab[idx], generator=gen, **view)
        loss = losses.nt_xent(head(encoder(v1)), head(encoder(v2)), temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run["curve"].append(loss.item())
        if len(run["curve"]) % 40 == 0:  # the k-NN monitor, on validation
            h_tr = selfsup.embed(encoder, x_train)
            h_va = selfsup.embed(encoder, x_val)
            knn = selfsup.knn_accuracy(h_tr, y_train, h_va, y_val)
            run["monitor"].append((len(run["curve"]), knn))
    return run


# %% [markdown]
# ### Choosing the temperature on validation
#
# The temperature decides how the loss spreads its push over the negatives: a low $\tau$ puts nearly
# all of it on the few negatives most similar to the anchor, a high one treats them all alike. SimCLR
# used 0.1 to 0.5 depending on the batch size. Three short runs (50 steps each, the same
# initialization and batches), compared by the probe's accuracy on the **validation** split; the
# winner is then trained on to 300 steps, and only that final encoder is scored on test.

# %%
sweep = {
    tau: train_simclr(SWEEP_STEPS, tau, desc=f"tau = {tau}")
    for tau in TEMPERATURES
}
val_probe = {tau: best_val_probe(run["encoder"]) for tau, run in sweep.items()}
TAU = max(val_probe, key=val_probe.get)
base_val = results["random encoder"]["val probe"]
print(
    f"validation probe after {SWEEP_STEPS} steps (random encoder {base_val:.3f}):"
)
for tau, acc in val_probe.items():
    print(f"  tau = {tau}: {acc:.3f} ({acc - base_val:+.3f})")
print("chosen: tau =", TAU)

# %% [markdown]
# On the seed shown the sweep's choice is printed above; over three seeds it chose $\tau = 0.2$ twice
# and $0.5$ once, and the three temperatures were within 0.02 to 0.03 of each other at this length, so
# the choice matters less here than the augmentations do.
#
# ### The augmentations that matter, measured
#
# The same short run at the chosen temperature, with half of the augmentation taken away: **crop
# only** (no colour gain, no grey) and **colour only** (whole images, no crop; the flips stay in all
# three).

# %%
VIEWS = {
    "crop + colour": SIMCLR_VIEW,
    "crop only": dict(SIMCLR_VIEW, color=0.0, gray_p=0.0),
    "colour only": dict(SIMCLR_VIEW, crop=False),
}
ablation = {"crop + colour": val_probe[TAU]}
for name in ("crop only", "colour only"):
    run = train_simclr(SWEEP_STEPS, TAU, view=VIEWS[name], desc=name)
    ablation[name] = best_val_probe(run["encoder"])
print(f"validation probe after {SWEEP_STEPS} steps, tau = {TAU}:")
for name, acc in ablation.items():
    print(
        f"  {name:14s} {acc:.3f} ({acc - base_val:+.3f} over the random encoder)"
    )

# %% [markdown]
# Over three seeds (validation probe after 50 steps): crop + colour 0.56 to 0.59, crop only 0.52 to
# 0.56, colour only 0.52 to 0.56. The pair was ahead on all three seeds, but by 0.00 to 0.07, a
# smaller gap than SimCLR's ImageNet ablation found: these are short runs on a small problem, where
# each augmentation alone already makes a task that teaches something. The assert checks what held on
# every seed, with a margin: the pair beats the mean of the two single augmentations (it did by 0.02
# to 0.06).

# %%
single = (ablation["crop only"] + ablation["colour only"]) / 2
assert ablation["crop + colour"] > single, (
    "expected crop + colour to beat the mean of the single augmentations on "
    f"validation, got {ablation['crop + colour']:.3f} vs {single:.3f}"
)

# %% [markdown]
# ### The full run
#
# The chosen run continues to 300 steps.

# %%
simclr = train_simclr(TOTAL_STEPS - SWEEP_STEPS, TAU, run=sweep[TAU])
simclr_encoder, simclr_head = simclr["encoder"], simclr["head"]
results["SimCLR"] = evaluate(simclr_encoder)
show("SimCLR")

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(simclr["curve"], color=viz.color(0), lw=0.8)
axes[0].axhline(
    np.log(2 * SIMCLR["batch"] - 1), color="grey", ls="--", label="log(2N - 1)"
)
axes[0].set(xlabel="step", ylabel="NT-Xent", title=f"SimCLR loss (tau = {TAU})")
axes[0].legend()
steps_m, knn_m = zip(*simclr["monitor"], strict=True)
axes[1].plot(steps_m, knn_m, "o-", color=viz.color(1), label="SimCLR")
axes[1].axhline(
    results["random encoder"]["val knn"],
    color="grey",
    ls="--",
    label="random encoder",
)
axes[1].set(xlabel="step", ylabel="5-NN accuracy", title="k-NN monitor (val)")
axes[1].legend()
plt.show()

# %% [markdown]
# The loss starts at $\log(2N - 1) \approx 4.85$, the loss of an encoder that cannot tell the
# positive from the 126 other views, and falls as the views of one image become recognizable. The k-NN
# monitor, on the other hand, hardly moves here (within a few points of the random encoder's on every
# seed) while the probe gains 15 points or more: the shape information sits in a few directions of the
# 64 features, which the probe finds and which cosine distances over all 64 do not show. A cheap
# monitor has to be checked against the real evaluation before it is trusted.
#
# **The bar.** The prototype of this demo asked the SimCLR probe to beat the random encoder's by 0.15.
# Over three seeds of the whole pipeline here (encoder initialization, batches, views, the temperature
# choice) the gain was +0.173, +0.181 and +0.151: test probe 0.60 to 0.63 against 0.42 to 0.47. The
# worst seed sits at that margin, not above it, so an assert at 0.15 would fail on a last-digit change
# on another CPU; the assert uses 0.12, 0.03 under the worst seed. While the chapter was written, a
# higher or lower learning rate, stronger colour or crop augmentation, blur or noise added to the
# views, and a projection head with batch normalization were each tried over three seeds; none lifted
# the worst seed clearly above +0.15 within 300 steps. The prototype reached +0.30 after 500 steps on
# its data; longer training is what would buy the margin, and it does not fit this chapter's budget.

# %%
BAR = 0.12
gain = results["SimCLR"]["probe"] - results["random encoder"]["probe"]
assert gain >= BAR, (
    f"expected the SimCLR probe to beat the random encoder by >= {BAR}, got "
    f"{results['SimCLR']['probe']:.3f} vs {results['random encoder']['probe']:.3f}"
)
print(f"SimCLR probe gain over the random encoder: {gain:+.3f}")

# %% [markdown]
# ### The similarity matrix
#
# For 8 images (16 views) the matrix of cosine similarities of the projections shows what the loss
# asks for: each row's positive (the other view of the same image, on the two off-diagonal bands)
# should stand out against the negatives; the diagonal (a view with itself) is left out of the loss.

# %% tags=["hide-input"]
with torch.no_grad():
    simclr_encoder.eval()
    gen = torch.Generator().manual_seed(1)
    v1, v2 = selfsup.simclr_views(x_test[:8], generator=gen, **SIMCLR_VIEW)
    z = F.normalize(simclr_head(simclr_encoder(torch.cat([v1, v2]))), dim=1)
    sim = (z @ z.T).cpu()
    sim.fill_diagonal_(float("nan"))
fig, ax = plt.subplots(figsize=(4.2, 3.6))
im = ax.imshow(sim, cmap="viridis")
ax.set(
    title="cos(z_i, z_k), views 0-7 then their pairs",
    xlabel="k",
    ylabel="anchor i",
)
fig.colorbar(im, ax=ax)
plt.show()

# %% [markdown]
# ## BYOL: no negatives, and why it does not collapse
#
# Negatives cost: large batches or memory banks. BYOL (Grill et al., 2020) drops them. An **online**
# network (encoder $f_\theta$, projector $g_\theta$, predictor $q_\theta$) predicts the output of a
# **target** network (encoder and projector with weights $\xi$) on the *other* view. The notes stop
# before the loss; it is the squared distance of the normalized vectors,
# $$\mathcal L_{\theta,\xi} = \left\| \frac{q_\theta(z_\theta)}{\|q_\theta(z_\theta)\|} -
# \frac{z'_\xi}{\|z'_\xi\|} \right\|_2^2 = 2 - 2\cos\big(q_\theta(z_\theta), z'_\xi\big),$$
# symmetrized by swapping the views. Only $\theta$ gets gradients (a **stop-gradient** on the target);
# the target follows as an exponential moving average, $\xi \leftarrow \tau\xi + (1 - \tau)\theta$,
# with $\tau$ rising from 0.996 to 1 on a cosine schedule (`selfsup.byol_decay`), which is
# `optim.WeightEMA` from chapter 05 with its decay set each step.
#
# A constant output minimizes this loss, so why does BYOL not **collapse**? The notes credit the
# absence of negatives for its robustness; the paper's measured claim is narrower: BYOL is less
# sensitive than SimCLR to the batch size and to removing colour distortion. Against collapse, the
# paper and its follow-ups (SimSiam, Chen and He, 2021) point to the asymmetry: the predictor and the
# stop-gradient (with a slowly moving target) make the collapsed solution unstable in practice,
# though nothing in the loss forbids it. The collapse monitor measures it: the mean per-dimension
# standard deviation of the normalized embeddings, 0 when everything maps to one vector, about
# $1/\sqrt{d}$ when they spread over $d$ dimensions. Below, BYOL (40 steps) against the same
# network with the predictor removed and the target equal to the online network ($\tau = 0$; the
# stop-gradient stays), the ablation SimSiam's authors found to collapse at once (20 steps here).


# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(10, 2.8))
viz.diagram(
    {
        "x": (0, 0, "image x", "io"),
        "v1": (1.9, 0.8, "view v", "other"),
        "v2": (1.9, -0.8, "view v'", "other"),
        "f1": (4.0, 0.8, "online encoder\n+ projector θ", "conv"),
        "f2": (4.0, -0.8, "target encoder\n+ projector ξ", "norm"),
        "q": (6.1, 0.8, "predictor q_θ\n32 → 128 → 32", "linear"),
        "sg": (6.1, -0.8, "stop-gradient", "other"),
        "loss": (8.3, 0, "2 - 2 cos", "head"),
    },
    [
        ("x", "v1"),
        ("x", "v2"),
        ("v1", "f1"),
        ("v2", "f2"),
        ("f1", "q", "-", "z"),
        ("f2", "sg", "-", "z'"),
        ("q", "loss"),
        ("sg", "loss"),
        ("f1", "f2", "--", "EMA"),
    ],
    ax=ax,
    title="BYOL: the online network predicts the EMA target's projection of the other view",
)
plt.show()


# %%
def byol_loss_scratch(p, z):
    """2 - 2 cos with the stop-gradient, from the definition."""
    p = p / p.norm(dim=1, keepdim=True)
    z = z.detach() / z.detach().norm(dim=1, keepdim=True)
    return ((p - z) ** 2).sum(1).mean()


p_ex, z_ex = torch.randn(8, 32), torch.randn(8, 32)
torch.testing.assert_close(
    byol_loss_scratch(p_ex, z_ex), selfsup.byol_loss(p_ex, z_ex)
)


def train_byol(
    steps=40, batch=64, lr=2e-3, base_decay=0.99, predictor=True, seed=SEED
):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    online = nn.Sequential(
        make_encoder(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)
    ).to(device)
    pred = (
        nn.Sequential(
            nn.Linear(32, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(),
            nn.Linear(128, 32),
        ).to(device)
        if predictor
        else nn.Identity()
    )
    target = optim.WeightEMA(online, decay=base_decay)
    opt = torch.optim.Adam([*online.parameters(), *pred.parameters()], lr=lr)
    curve, spread = [], []
    for step in trange(steps, desc="BYOL" if predictor else "no predictor"):
        idx = torch.randint(0, len(x_unlab), (batch,), generator=gen)
        v1, v2 = selfsup.simclr_views(
            x_unlab[idx], generator=gen, **SIMCLR_VIEW
        )
        if predictor:
            with torch.no_grad():
                t1, t2 = target.module(v1), target.module(v2)
        else:  # tau = 0: the target is the online network itself
            t1, t2 = online(v1), online(v2)
        z1, z2 = online(v1), online(v2)
        loss = selfsup.byol_loss(pred(z1), t2) + selfsup.byol_loss(pred(z2), t1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        target.decay = selfsup.byol_decay(step, steps, base_decay)
        target.update(online)
        curve.append(loss.item())
        if (step + 1) % 10 == 0:
            spread.append(
                (
                    step + 1,
                    selfsup.embedding_spread(selfsup.embed(online, x_val)),
                )
            )
    return online, curve, spread


byol_online, byol_curve, byol_spread = train_byol()
byol_encoder = byol_online[0]
nopred_online, nopred_curve, nopred_spread = train_byol(
    steps=20, predictor=False
)
results["BYOL"] = evaluate(byol_encoder)
show("BYOL")
print(
    f"spread of the normalized projections (1/sqrt(32) = {1 / np.sqrt(32):.3f}): "
    f"BYOL {byol_spread[-1][1]:.3f}, no predictor and no EMA {nopred_spread[-1][1]:.4f}"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for (name, curve, spread), c in zip(
    [
        ("BYOL", byol_curve, byol_spread),
        ("no predictor, no EMA", nopred_curve, nopred_spread),
    ],
    (viz.color(0), viz.color(3)),
    strict=True,
):
    axes[0].plot(curve, color=c, lw=0.8, label=name)
    axes[1].plot(*zip(*spread, strict=True), "o-", color=c, label=name)
axes[0].set(
    xlabel="step",
    ylabel="symmetrized loss",
    title="loss (0 = collapse is allowed)",
)
axes[1].axhline(1 / np.sqrt(32), color="grey", ls="--", label="1/sqrt(32)")
axes[1].set(
    xlabel="step", ylabel="spread", title="collapse monitor", yscale="log"
)
for ax in axes:
    ax.legend()
plt.show()

# %%
assert byol_spread[-1][1] > 0.05, (
    f"BYOL should not collapse: spread > 0.05 expected, got {byol_spread[-1][1]:.4f}"
)
assert nopred_spread[-1][1] < 0.5 * byol_spread[-1][1], (
    "without predictor and EMA the spread should fall well under BYOL's: "
    f"{nopred_spread[-1][1]:.4f} vs {byol_spread[-1][1]:.4f}"
)

# %% [markdown]
# ## What collapse looks like, and how each method avoids it
#
# Every method here has a trivial solution in reach, and each rules it out differently:
#
# | method | the trivial solution | what rules it out |
# |---|---|---|
# | rotation | none that scores: the labels come from the data, a constant answer gets 1/4 | the task itself |
# | DeepCluster | all images in one cluster, predicted perfectly | re-seeding empty clusters and sampling uniformly over clusters (the cluster sizes printed above stay spread) |
# | SimCLR | one vector $z$ for every image | the negatives: a constant $z$ scores $\log(2N - 1)$, the loss of guessing |
# | BYOL | one vector $z$ for every image, loss 0 | nothing in the loss; predictor, stop-gradient and slow EMA target make it unstable in practice |
#
# Collapse shows in the cosine similarities between the projections of *different* images: spread
# out for a healthy embedding, piled up at 1 for a collapsed one.

# %% tags=["hide-input"]
with torch.no_grad():
    zs = {
        "SimCLR": selfsup.embed(
            nn.Sequential(simclr_encoder, simclr_head), x_val[:200]
        ),
        "BYOL": selfsup.embed(byol_online, x_val[:200]),
        "no predictor, no EMA": selfsup.embed(nopred_online, x_val[:200]),
    }
fig, ax = plt.subplots(figsize=(6, 3))
off_diag = ~torch.eye(200, dtype=torch.bool)
for i, (name, z) in enumerate(zs.items()):
    zn = F.normalize(z, dim=1)
    cos = (zn @ zn.T)[off_diag].cpu()
    label = f"{name} (spread {selfsup.embedding_spread(z):.3f})"
    ax.hist(
        cos, bins=60, range=(-1, 1), alpha=0.6, color=viz.color(i), label=label
    )
ax.set(
    xlabel="cos(z_a, z_b), a != b",
    ylabel="pairs",
    title="collapse: every pair at cosine 1",
    yscale="log",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The feature space
#
# A 2-D PCA of the test features, coloured by the hidden label, shows what the probe sees. PCA is
# linear, like the probe, so separated colours here mean a linear probe can separate them (the
# converse does not hold: 64 dimensions can separate what two cannot).
# Here the three classes overlap heavily in every panel: the probe's gains of 5 to 18 points
# are spread over 64 dimensions and hardly show in the first two principal components. This is a
# modest representation, learned in seconds on a CPU, not a solved task.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for ax, name, enc in zip(
    axes,
    ["random encoder", "SimCLR", "BYOL"],
    [random_encoder, simclr_encoder, byol_encoder],
    strict=True,
):
    h = selfsup.embed(enc, x_test).cpu()
    h = (h - h.mean(0)) / h.std(0).clamp_min(1e-6)
    p2 = PCA(2).fit_transform(h.numpy())
    for c in range(3):
        m = (y_test == c).cpu().numpy()
        ax.scatter(
            *p2[m].T, s=4, alpha=0.6, color=viz.color(c), label=CLASSES[c]
        )
    ax.set(
        title=f"{name}: probe {results[name]['probe']:.2f}",
        xticks=[],
        yticks=[],
    )
axes[0].legend(markerscale=3)
plt.show()

# %% [markdown]
# ## All methods, one table

# %%
print(
    f"{'method':16s} {'probe (test)':>12s} {'5-NN (test)':>12s} {'weight decay':>13s}"
)
for name, r in results.items():
    print(
        f"{name:16s} {r['probe']:12.3f} {r['knn']:12.3f} {r['weight decay']:13g}"
    )
for name, bar in (("rotation", 0.02), ("DeepCluster", 0.06)):
    gain_m = results[name]["probe"] - results["random encoder"]["probe"]
    assert gain_m >= bar, (
        f"expected {name} to beat the random encoder's probe by >= {bar}, got {gain_m:+.3f}"
    )

# %% [markdown]
# How to read it. The table is one seed; the probe sees 80 labels and the runs are short, so look at
# the spread. Over three seeds of the whole chapter (probe accuracy on test):
#
# | method | probe over 3 seeds | gain over the random encoder |
# |---|---|---|
# | random encoder | 0.42 to 0.47 | (baseline) |
# | rotation (120 steps) | 0.52 to 0.57 | +0.05 to +0.15 |
# | DeepCluster (2 rounds of 60 steps) | 0.56 to 0.59 | +0.10 to +0.15 |
# | SimCLR (300 steps, $\tau$ chosen on validation) | 0.60 to 0.63 | +0.15 to +0.18 |
# | BYOL (40 steps) | 0.46 to 0.50 | -0.01 to +0.07 |
#
# Rotation, DeepCluster and SimCLR beat the random encoder on every seed (asserted with margins
# under the worst seed: +0.02, +0.06 and +0.12). SimCLR had the best probe on all three seeds;
# rotation and DeepCluster swapped places from seed to seed, so the table does not rank those two.
# Rotation's gain is the least stable (+0.05 on one seed, +0.15 on another). BYOL does not reliably
# beat the random encoder within this CPU budget (the prototype of this demo found the same):
# bootstrapping from a slowly moving target needs longer training than we can afford here. What BYOL
# shows is that it does not collapse (spread 0.08 to 0.09 over the three seeds), while the variant
# without predictor and EMA does (spread 0.003 to 0.004).
#
# ## Summary
#
# - A representation is measured with a linear probe (and a k-NN monitor during training) on frozen
#   features, against the same encoder with random weights, on a task where that baseline is poor.
# - Pretext tasks (rotation) make labels from the image; they teach what the task needs, which can
#   include shortcuts.
# - DeepCluster alternates k-means on the features with training on the cluster ids; re-seeding
#   empty clusters and sampling uniformly over clusters keep it from collapsing.
# - SimCLR pulls two augmented views together and pushes the other $2N - 2$ views of the batch away
#   (NT-Xent); the augmentations decide what is ignored; here crop + colour beat either alone on every
#   seed, by small margins, and the temperature mattered less.
# - BYOL has no negatives: a predictor, a stop-gradient and an EMA target; nothing in its loss forbids
#   collapse, so measure it (the spread of the normalized embeddings).
#
# ## Exercises
#
# ### Exercise 1: BYOL's loss
#
# Write `byol(p, z)`: the mean over the batch of $\|\bar p - \bar z\|^2$ with $\bar v = v / \|v\|$,
# with no gradient flowing into `z`. The check compares values with `selfsup.byol_loss`.

# %%
byol_cases = [
    (
        torch.randn(4, 8, generator=torch.Generator().manual_seed(s)),
        torch.randn(4, 8, generator=torch.Generator().manual_seed(s + 10)),
    )
    for s in range(3)
]


def byol(p, z):
    raise NotImplementedError  # your code


exercises.check_function(
    byol, byol_cases, reference=selfsup.byol_loss, name="byol"
)


# %% tags=["hide-cell"]
def byol(p, z):
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


exercises.check_function(
    byol, byol_cases, reference=selfsup.byol_loss, name="byol"
).assert_passed()

# %% [markdown]
# ### Exercise 2: the assignment step of k-means
#
# Write `assign(x, centroids)`: for each row of `x` (`Tensor[N, D]`) the index of its nearest
# centroid (`Tensor[K, D]`) in Euclidean distance, as `Tensor[N]` int64. Then count, for the random
# encoder's features `h_unlab`, how many images each of the 6 centroids `c_lib` gets.

# %%
assign_cases = [(h_unlab[:50], c_lib), (torch.eye(3), torch.eye(3) * 0.9)]


def assign(x, centroids):
    raise NotImplementedError  # your code


exercises.check_function(
    assign,
    assign_cases,
    reference=lambda x, c: torch.cdist(x, c).argmin(1),
    name="assign",
)


# %% tags=["hide-cell"]
def assign(x, centroids):
    d2 = (
        (x**2).sum(1, keepdim=True)
        - 2 * x @ centroids.T
        + (centroids**2).sum(1)
    )
    return d2.argmin(1)


exercises.check_function(
    assign,
    assign_cases,
    reference=lambda x, c: torch.cdist(x, c).argmin(1),
    name="assign",
).assert_passed()
print(
    "images per centroid:",
    torch.bincount(assign(h_unlab, c_lib), minlength=6).tolist(),
)

# %% [markdown]
# ### Exercise 3 (open): where to read the representation, and how many negatives
#
# SimCLR keeps $h = f(x)$ and throws the projection $z = g(h)$ away. Probe $z$ instead of $h$ (wrap
# `simclr_encoder` and `simclr_head` in an `nn.Sequential` and pass it to `evaluate`) and compare on
# validation. The loss makes $z$ invariant to everything the augmentations change; what might $g$
# throw away that the probe could have used? Then change `SIMCLR["batch"]` to 32 and to 128 (fewer
# or more negatives per anchor) and repeat the run over two or three seeds before concluding: the
# seed-to-seed spread is several points.

# %% [markdown]
# ## References
#
# - Gidaris, S., Singh, P., and Komodakis, N. (2018). Unsupervised representation learning by
#   predicting image rotations. ICLR 2018. arXiv:1803.07728.
# - Caron, M., Bojanowski, P., Joulin, A., and Douze, M. (2018). Deep clustering for unsupervised
#   learning of visual features. ECCV 2018. arXiv:1807.05520.
# - Chen, T., Kornblith, S., Norouzi, M., and Hinton, G. (2020). A simple framework for contrastive
#   learning of visual representations. ICML 2020. arXiv:2002.05709.
# - Grill, J.-B., Strub, F., Altché, F., et al. (2020). Bootstrap your own latent: a new approach to
#   self-supervised learning. NeurIPS 2020. arXiv:2006.07733.
# - Chen, X., and He, K. (2021). Exploring simple Siamese representation learning (SimSiam). CVPR
#   2021. arXiv:2011.10566.
# - He, K., Fan, H., Wu, Y., Xie, S., and Girshick, R. (2020). Momentum contrast for unsupervised
#   visual representation learning (MoCo). CVPR 2020. arXiv:1911.05722.
