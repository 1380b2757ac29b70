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
# # 18 · CLIP: learning vision from captions
#
# A classifier learns a fixed list of labels. CLIP (Radford et al., 2021) learns instead from pairs of
# images and captions: two encoders map an image and a sentence into one space, and a contrastive loss
# pulls each image towards its own caption and away from every other caption of the batch. Afterwards
# any sentence is a classifier: write the class names into prompts, embed them, and pick the prompt
# nearest to the image (zero-shot classification); or rank images by a query sentence (retrieval).
# This chapter builds a tiny CLIP on captioned coloured shapes ("a small red circle"), trains it on
# a CPU in seconds, and measures what it can and cannot do: zero-shot accuracy on captions it saw,
# on colour–shape pairs it never saw (compositional generalization), prompt ensembling, recall@k,
# and SLIP's extra self-supervised loss. It then reuses the same embeddings for the ideas built on
# CLIP: StyleGAN-NADA's directional loss, DALL·E's discrete image tokens, GLIDE's guidance and
# inpainting channels, and CLIP-ViL.
#
# **Learning objectives.** After this chapter you can:
# - write CLIP's symmetric InfoNCE loss with a learnable temperature and explain each term;
# - train a two-tower model on image–caption pairs and use it for zero-shot classification with
#   prompt templates and prompt ensembles;
# - measure retrieval with recall@k, and compositional generalization on held-out colour–shape pairs,
#   and say which choices of data split and text tower make it work;
# - state StyleGAN-NADA's directional loss and check its values (0, 1, 2);
# - quantize features into discrete tokens with a VQ codebook and the straight-through estimator, and
#   say what DALL·E's first stage actually is;
# - explain GLIDE's classifier-free and CLIP guidance and its inpainting input channels, and what
#   SLIP adds to CLIP.
#
# **Prerequisites.** [Chapter 03](../03_losses/03_losses.ipynb) (cross-entropy, the contrastive losses
# introduced there), [chapter 11](../11_diffusion/11_diffusion.ipynb) (diffusion, classifier-free
# guidance), [chapter 13](../13_attention/13_attention.ipynb) (the transformer block, causal masks) and
# [chapter 17](../17_self_supervised/17_self_supervised.ipynb) (SimCLR, NT-Xent).
#
# **Measured runtime:** 52 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [18_clip.ipynb](18_clip.ipynb) (notebook, with outputs) · [18_clip.py](18_clip.py) (the paired script instructors edit)

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from course_lib import augment, data, exercises, losses, metrics, runtime, viz
from course_lib.nn import text

device = runtime.setup(seed=0)

# %% [markdown]
# ## The idea: which caption goes with which image?
#
# Take a batch of $N$ image–caption pairs. The image encoder $E_I$ and the text encoder $E_T$ give
# L2-normalised embeddings $I_i$ and $T_j$, and their dot products form an $N\times N$ matrix of
# cosine similarities. Only the $N$ diagonal entries are real pairs; the other $N^2-N$ are not.
# CLIP's task is to find the diagonal: for each image, a softmax over the $N$ captions should put
# its mass on the right one, and for each caption, a softmax over the $N$ images too. With the
# logit scale $s = e^{t} = 1/\tau$ (a learned parameter $t$),
#
# $$\ell_{ij} = s\, I_i^\top T_j,\qquad
# \mathcal L = \frac12\Big[\underbrace{\frac1N\sum_i -\log\frac{e^{\ell_{ii}}}{\sum_j e^{\ell_{ij}}}}_{\text{image}\to\text{text}}
# + \underbrace{\frac1N\sum_j -\log\frac{e^{\ell_{jj}}}{\sum_i e^{\ell_{ij}}}}_{\text{text}\to\text{image}}\Big].$$
#
# This is cross-entropy over the rows plus cross-entropy over the columns, each with the targets
# $0, 1, \dots, N-1$: the "symmetric cross-entropy" of the lecture notes, which give no equation and
# no temperature. The temperature matters. Cosines live in $[-1, 1]$, so without a scale the softmax
# could never become confident; CLIP starts at $\tau = 0.07$ ($s \approx 14.3$), learns $t = \log s$
# and clips $s$ at 100. It is SimCLR's NT-Xent (chapter 17) with two differences: the positives
# come from two different modalities, and negatives are only ever of the other modality.
#
# Written from scratch, then checked against `course_lib.losses.clip_loss`:


# %%
def clip_loss_scratch(img_emb, txt_emb, scale):
    i = img_emb / img_emb.norm(dim=1, keepdim=True)
    t = txt_emb / txt_emb.norm(dim=1, keepdim=True)
    logits = scale * i @ t.T  # rows: images, columns: captions
    labels = torch.arange(len(logits))
    return (
        F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
    ) / 2


g0 = torch.Generator().manual_seed(0)
img_e, txt_e = (
    torch.randn(8, 16, generator=g0),
    torch.randn(8, 16, generator=g0),
)
torch.testing.assert_close(
    clip_loss_scratch(img_e, txt_e, 1 / 0.07),
    losses.clip_loss(img_e, txt_e, 1 / 0.07),
)
# identical embeddings: every caption is equally likely, the loss is ln N
same = torch.ones(8, 16)
torch.testing.assert_close(
    losses.clip_loss(same, same, 14.3), torch.tensor(math.log(8))
)
# the loss is symmetric in its two modalities
torch.testing.assert_close(
    losses.clip_loss(img_e, txt_e, 5.0), losses.clip_loss(txt_e, img_e, 5.0)
)
print(
    f"random embeddings: {losses.clip_loss(img_e, txt_e, 1 / 0.07):.3f}, "
    f"ln N = {math.log(8):.3f}"
)

# %% [markdown]
# One caveat: the loss treats every off-diagonal pair as a negative. If two images of a batch have
# the same caption, the loss pushes apart a pair that matches. On web data this is rare; on our
# few dozen captions it would be common, so each batch below holds distinct captions.
#
# ## Captioned shapes, and a split that tests composition
#
# `data.make_shapes` draws one shape per image and captions it ("a red circle"). Its palette has four
# colours; we repaint every shape in one of six hues 60° apart on the colour wheel (red, yellow,
# green, cyan, blue, magenta), using the object masks that come with the images, and add a size
# word by drawing small and large shapes separately: 2 sizes × 6 colours × 3 shapes = 36 captions,
# so chance is 1/36 ≈ 0.028 (the lecture demo had 40 captions, chance 0.025). Images carry Gaussian
# noise.
#
# Six colour–shape pairs (both sizes: 12 captions) never appear in training. They measure
# compositional generalization: can the model read "red" and "circle" in an image having seen red
# things that were not circles and circles that were not red? Which pairs are held out matters. A
# first version of this chapter used the four palette colours with three pairs held out: each
# held-out colour then appeared with only two shapes, and over three seeds the held-out top-1 was
# 0.61, 0.02 and 0.03. The colour of a held-out image was read right, its shape was not: a network
# that saw circles only in green, blue and yellow has little reason to detect circles drawn in
# red, whose edges live in another colour channel. Here the held-out pairs form a Latin square:
# going round the colour wheel, colour $i$ loses shape $i \bmod 3$. Every shape is held out with two
# colours and seen with four, every colour is seen with two shapes, and the hues next to a held-out
# colour were seen with its held-out shape (red circles are held out; magenta and yellow circles
# are seen).

# %%
COLOURS = {  # six hues, 60 degrees apart
    "red": (0.90, 0.12, 0.12),
    "yellow": (0.92, 0.85, 0.12),
    "green": (0.12, 0.75, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.20, 0.30, 0.95),
    "magenta": (0.85, 0.20, 0.80),
}
colours_, shapes_ = list(COLOURS), list(data.SHAPE_CLASSES)
SIZES = {"small": (0.16, 0.2), "large": (0.28, 0.36)}
# Latin square: colour i (in hue order) is never seen with shape i mod 3
HELD_OUT = {(c, shapes_[i % 3]) for i, c in enumerate(colours_)}
CAPTIONS = [f"a {z} {c} {s}" for z in SIZES for c in colours_ for s in shapes_]
held_idx = torch.tensor(
    [i for i, c in enumerate(CAPTIONS) if tuple(c.split()[2:]) in HELD_OUT]
)
seen_idx = torch.tensor(
    [i for i in range(len(CAPTIONS)) if i not in held_idx.tolist()]
)


def captioned_shapes(n_per_size, seed):
    """Images with one shape each, repainted in one of the six hues, and their caption indices."""
    palette = torch.tensor(list(COLOURS.values()))
    xs, ys = [], []
    for k, (size, radius) in enumerate(SIZES.items()):
        s = data.make_shapes(
            n_per_size,
            32,
            min_objects=1,
            max_objects=1,
            radius=radius,
            noise=0.0,
            seed=seed + k,
        )
        g = torch.Generator().manual_seed(seed + k)
        colour = torch.randint(len(COLOURS), (n_per_size,), generator=g)
        inside = (s.masks > 0)[:, None].float()
        x = s.images * (1 - inside) + inside * palette[colour][:, :, None, None]
        xs.append((x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1))
        ys += [
            CAPTIONS.index(f"a {size} {colours_[c]} {shapes_[int(lab[0])]}")
            for c, lab in zip(colour.tolist(), s.labels, strict=True)
        ]
    return torch.cat(xs), torch.tensor(ys)


x_train, y_train = captioned_shapes(1500, seed=100)
x_val, y_val = captioned_shapes(300, seed=200)
x_test, y_test = captioned_shapes(400, seed=300)
# held-out pairs never reach training
train_keep = torch.isin(y_train, seen_idx)
x_train, y_train = x_train[train_keep], y_train[train_keep]
tokenizer = text.WordTokenizer(CAPTIONS)
caption_ids, caption_eos = tokenizer.encode(CAPTIONS)

# %%
# NBVAL_CHECK_OUTPUT
print(
    f"captions: {len(CAPTIONS)}, held out: {len(held_idx)}, seen: {len(seen_idx)}"
)
print(f"vocabulary: {tokenizer.itos}")
print(f"token ids of {CAPTIONS[0]!r}: {caption_ids[0].tolist()}")
print(
    f"train / val / test images: {len(x_train)} / {len(x_val)} / {len(x_test)}"
)
print(f"held-out pairs: {sorted(HELD_OUT, key=lambda p: colours_.index(p[0]))}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 6, figsize=(11, 4.2))
for ax, (size, c) in zip(
    axes.flat, [(z, c) for z in SIZES for c in colours_], strict=True
):
    caps = [CAPTIONS.index(f"a {size} {c} {s}") for s in shapes_]
    i = int(torch.isin(y_test, torch.tensor(caps)).nonzero()[0])
    ax.imshow(x_test[i].permute(1, 2, 0).numpy())
    ax.set_title(CAPTIONS[int(y_test[i])][2:], fontsize=8)
    ax.axis("off")
grid = np.array(
    [
        ["held out" if (c, s) in HELD_OUT else "seen" for s in shapes_]
        for c in colours_
    ]
)
fig.suptitle(
    "examples (test); seen / held-out colour–shape pairs:\n"
    + "; ".join(
        f"{c}: {', '.join(s for s, v in zip(shapes_, row, strict=True) if v == 'held out')}"
        for c, row in zip(colours_, grid, strict=True)
    )
    + " held out",
    fontsize=9,
)
plt.show()

# %% [markdown]
# ## A tiny CLIP
#
# The image tower is a three-stage `ConvNormAct` CNN with global pooling
# (`text.conv_image_encoder`). CLIP's text tower is a causal transformer: word embeddings plus
# learned positions, transformer blocks from chapter 13 under a causal mask, a LayerNorm, and the
# activation of the `<eos>` token projected into the joint space; the causal mask lets `<eos>` see
# the whole caption and keeps padding out of every real token. `text.TextEncoder` is that tower in
# miniature. With `depth=0` and `pool="mean"` it has no transformer block: each token's embedding
# plus its position goes through the LayerNorm, and the mean over the tokens is projected. That
# output is a sum of one term per word, so "red" adds the same vector whatever shape follows it: a
# **factored** text tower, which cannot entangle colour and shape.
#
# Which tower generalizes to unseen pairs? We compared them on a *validation task* built like the
# test one but with a disjoint set of held-out pairs (colour $i$ loses shape $(i+1) \bmod 3$),
# training on everything else and scoring the validation images of those pairs; the test pairs
# played no part. Over three seeds each:
#
# | text tower | image width | steps | seen top-1 | held-out top-1 (validation pairs) |
# |---|---|---|---|---|
# | transformer (depth 1, `<eos>`) | 32 | 600 | 0.932 / 0.985 / 0.995 | 0.487 / 0.440 / 0.461 |
# | factored (depth 0, mean) | 32 | 600 | 0.998 / 0.988 / 0.995 | 0.534 / 0.675 / 0.696 |
# | factored | 16 | 600 | 0.971 / 0.998 / 0.983 | 0.445 / 0.513 / 0.529 |
# | factored | 24 | 400 | 0.990 / 0.968 / 0.990 | 0.387 / 0.435 / 0.408 |
# | factored | 24 | 600 | 1.000 / 0.983 / 1.000 | 0.513 / 0.581 / 0.503 |
# | factored | 24 | 800 | 1.000 / 0.993 / 1.000 | 0.539 / 0.628 / 0.681 |
#
# Both towers read the seen captions; on the unseen pairs the factored tower scored higher on every
# seed, so it is the tower of this chapter. (On the test split, in a first trial of this design, the
# transformer tower scored 0.42, 0.61 and 0.28 on seeds 3 to 5: it can place an unseen pair well, but
# nothing makes it do so.) Longer training and a wider image tower both help the held-out pairs;
# width 24 with 800 steps about matches width 32 with 600 at a lower cost, and fits this chapter's time
# budget. `text.TinyCLIP` holds both towers and the learnable $t$.

# %% tags=["hide-input"]
viz.diagram(
    {
        "img": (0, 1, "image 3×32×32", "io"),
        "cnn": (2.2, 1, "3 × ConvNormAct s2\n+ avg pool + linear", "conv"),
        "ni": (4.4, 1, "L2 normalise\nI (64)", "other"),
        "txt": (0, -1, "caption ids\n<bos> a small ... <eos>", "io"),
        "tf": (
            2.2,
            -1,
            "embed + positions\nLN, mean over tokens\n(depth 0), proj",
            "attention",
        ),
        "nt": (4.4, -1, "L2 normalise\nT (64)", "other"),
        "sim": (6.6, 0, "s · I Tᵀ  (N×N)\nsymmetric CE", "head"),
    },
    [
        ("img", "cnn"),
        ("cnn", "ni"),
        ("ni", "sim"),
        ("txt", "tf"),
        ("tf", "nt"),
        ("nt", "sim"),
    ],
    title="Tiny CLIP",
    block_size=(1.9, 0.9),
)
plt.show()

# %% [markdown]
# Every step shows the model all 24 seen captions once, each with a random training image of it
# (flipped at random), so the softmax of each image runs over every caption it could be confused
# with. AdamW with a cosine learning-rate decay over 800 steps; with a constant rate, the seen
# accuracy at the last step varied from 0.79 to 0.97 between seeds in our runs (transformer tower,
# 400 steps).

# %%
STEPS = 800


def make_clip(seed):
    torch.manual_seed(seed)
    return text.TinyCLIP(
        text.conv_image_encoder(64, 24),
        text.TextEncoder(
            len(tokenizer), 64, 64, depth=0, max_len=8, pool="mean"
        ),
    ).to(device)


def shifted_view(x, g):
    """A SimCLR-style view that keeps colour and size: a flip and a small shift."""
    return augment.random_translate(
        augment.random_flip(x, generator=g), 3, generator=g
    )


def train_clip(seed, slip_weight=0.0, steps=STEPS):
    """Train on seen captions: every step all seen captions, one random image each."""
    model = make_clip(seed)
    head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).to(
        device
    )
    params = list(model.parameters()) + (
        list(head.parameters()) if slip_weight else []
    )
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    by_caption = {
        k: (y_train == k).nonzero().flatten() for k in seen_idx.tolist()
    }
    log = {"loss": [], "temperature": []}
    for _ in trange(steps, desc=f"CLIP seed {seed}, SLIP weight {slip_weight}"):
        caps = seen_idx[torch.randperm(len(seen_idx), generator=g)]
        pick = torch.cat(
            [
                by_caption[k][
                    torch.randint(len(by_caption[k]), (1,), generator=g)
                ]
                for k in caps.tolist()
            ]
        )
        x = augment.random_flip(x_train[pick], generator=g).to(device)
        img_emb = model.image_encoder(x)
        loss = losses.clip_loss(
            img_emb,
            model.text_encoder(
                caption_ids[caps].to(device), caption_eos[caps].to(device)
            ),
            model.logit_scale,
        )
        if slip_weight:
            # the CLIP batch is one view, a shifted and flipped copy the other
            z1, z2 = (
                head(img_emb),
                head(model.image_encoder(shifted_view(x, g))),
            )
            loss = loss + slip_weight * losses.nt_xent(z1, z2, temperature=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        log["loss"].append(loss.item())
        log["temperature"].append(1 / model.logit_scale.item())
    return model.eval(), log


@torch.no_grad()
def zero_shot(model, x, y):
    """Top-1 over all captions, on images of seen captions and of held-out pairs."""
    logits = model(
        x.to(device), caption_ids.to(device), caption_eos.to(device)
    ).cpu()
    pred = logits.argmax(1)
    seen = torch.isin(y, seen_idx)
    return {
        "seen": (pred[seen] == y[seen]).float().mean().item(),
        "held-out": (pred[~seen] == y[~seen]).float().mean().item(),
        "logits": logits,
    }


untrained = make_clip(0).eval()
clip_model, clip_log = train_clip(seed=0)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(np.convolve(clip_log["loss"], np.ones(20) / 20, mode="valid"))
axes[0].axhline(
    math.log(len(seen_idx)), ls="--", c="grey", label=f"ln {len(seen_idx)}"
)
axes[0].set(
    xlabel="step", ylabel="loss (running mean)", title="symmetric InfoNCE"
)
axes[0].legend()
axes[1].plot(clip_log["temperature"])
axes[1].set(xlabel="step", ylabel="τ = 1 / s", title="learned temperature")
plt.show()

# %% [markdown]
# ## Zero-shot classification
#
# A caption set is a classifier: embed the 36 captions once, and classify a test image by its most
# similar caption. "Zero-shot" here means the head was never trained for this decision; it works for
# captions never seen in training as long as the text encoder can place them.

# %%
clip_test = zero_shot(clip_model, x_test, y_test)
clip_val = zero_shot(clip_model, x_val, y_val)
before = zero_shot(untrained, x_test, y_test)
print(
    f"untrained: seen {before['seen']:.3f}, held-out {before['held-out']:.3f}\n"
    f"CLIP (test): seen {clip_test['seen']:.3f}, held-out pairs {clip_test['held-out']:.3f} "
    f"(chance {1 / len(CAPTIONS):.3f})"
)
print(
    f"temperature: 0.070 at init, {clip_log['temperature'][-1]:.3f} after {STEPS} steps"
)

# %%
assert clip_test["seen"] > 0.9, (
    f"seen-caption top-1 expected > 0.9, got {clip_test['seen']:.3f}"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
batch = torch.cat(
    [(y_test == k).nonzero()[:1, 0] for k in range(len(CAPTIONS))]
)
for ax, (name, m) in zip(
    axes[:2], [("untrained", untrained), ("trained", clip_model)], strict=True
):
    with torch.no_grad():
        sim = (
            m.encode_image(x_test[batch].to(device))
            @ m.encode_text(caption_ids.to(device), caption_eos.to(device)).T
        ).cpu()
    ax.imshow(sim, cmap="viridis")
    ax.set(
        title=f"cosine similarity, {name}",
        xlabel="caption",
        ylabel="image of caption",
    )
cm = metrics.confusion_matrix(
    clip_test["logits"].argmax(1), y_test, num_classes=len(CAPTIONS)
)
axes[2].imshow(cm, cmap="Blues")
axes[2].set(
    title="zero-shot confusion (test)",
    xlabel="predicted caption",
    ylabel="true caption",
)
for ax in axes:
    ax.set_xticks(range(0, 36, 3))
    ax.set_yticks(range(0, 36, 3))
    ax.grid(False)
plt.show()
print(
    "captions 0-17 are small, 18-35 large, in blocks of three shapes per colour; "
    "held-out captions:",
    held_idx.tolist(),
)

# %% [markdown]
# Before training the similarity matrix has no structure; after training the diagonal stands out.
# The confusion matrix shows where the errors go: the rows of the held-out captions (one per block
# of three) are the ones with most mass off the diagonal, and that mass sits mostly in the same
# block, on a caption with the same colour and size and another shape.

# %% [markdown]
# ### Prompt templates and ensembling
#
# To classify by *shape* alone, one needs a sentence per shape. A single template fills in the
# other words arbitrarily ("a small red {shape}"); a prompt ensemble averages the normalised text
# embeddings over many templates (here all sizes and colours) and renormalises. CLIP's paper
# reported that ensembling 80 templates gained several points on ImageNet; here we measure it.


# %%
@torch.no_grad()
def class_embeddings(model, attribute_pos, values, templates):
    """Per value, the mean normalised embedding of its prompts (then renormalised)."""
    out = []
    for v in values:
        prompts = [t.format(v) for t in templates]
        ids, eos = tokenizer.encode(prompts, length=caption_ids.shape[1])
        e = model.encode_text(ids.to(device), eos.to(device)).mean(0)
        out.append(F.normalize(e, dim=0))
    return torch.stack(out)


@torch.no_grad()
def attribute_accuracy(model, x, y, attribute_pos, values, templates):
    img = model.encode_image(x.to(device))
    pred = (
        (img @ class_embeddings(model, attribute_pos, values, templates).T)
        .argmax(1)
        .cpu()
    )
    truth = torch.tensor(
        [values.index(CAPTIONS[int(k)].split()[attribute_pos]) for k in y]
    )
    return (pred == truth).float().mean().item()


templates = {
    "shape": (
        3,
        shapes_,
        ["a small red {}"],
        [f"a {z} {c} {{}}" for z in SIZES for c in colours_],
    ),
    "colour": (
        2,
        colours_,
        ["a small {} circle"],
        [f"a {z} {{}} {s}" for z in SIZES for s in shapes_],
    ),
}
prompt_results = {}
for attr, (pos, values, single, ensemble) in templates.items():
    prompt_results[attr] = [
        attribute_accuracy(clip_model, x_test, y_test, pos, values, t)
        for t in (single, ensemble)
    ]
    print(
        f"{attr}: one template {prompt_results[attr][0]:.3f}, "
        f"ensemble of {len(ensemble)} {prompt_results[attr][1]:.3f} (chance {1 / len(values):.3f})"
    )

# %% [markdown]
# On this model the ensemble scores a point or two higher than the single template for both
# attributes. The single template asks "which shape, *given that it is small and red*?", and every
# image that is not small and red is a mismatch the template adds; the ensemble averages those
# conditions away. Colour is the easier attribute: a small shape is a few pixels wide, but its
# colour fills them all. The shape score is pulled down by the held-out pairs, as the next section
# shows.

# %%
for attr, (one, many) in prompt_results.items():
    assert many > one, (
        f"{attr}: ensemble {many:.3f} expected above one template {one:.3f}"
    )

# %% [markdown]
# ## Retrieval and recall@k
#
# Read the similarity matrix the other way and it ranks. Image → text: for each image, is its caption
# among the $k$ most similar captions (recall@k over 36 captions)? Text → image: for each caption,
# what fraction of the $k$ images it ranks first carry that caption (precision@k, since every caption
# has many matching test images)?


# %%
@torch.no_grad()
def retrieval(model, x, y, ks=(1, 3, 5)):
    logits = model(
        x.to(device), caption_ids.to(device), caption_eos.to(device)
    ).cpu()
    i2t = {k: metrics.topk_accuracy(logits, y, k=k).item() for k in ks}
    top = logits.T.topk(max(ks), dim=1).indices  # [36, k]: images per caption
    t2i = {
        k: (y[top[:, :k]] == torch.arange(len(CAPTIONS))[:, None])
        .float()
        .mean()
        .item()
        for k in ks
    }
    return i2t, t2i, logits


i2t, t2i, test_logits = retrieval(clip_model, x_test, y_test)
for k in i2t:
    print(
        f"k={k}: image→text recall@{k} {i2t[k]:.3f}   text→image precision@{k} {t2i[k]:.3f}"
    )
# text → image precision@5 split by caption: seen captions / held-out captions
top5 = test_logits.T.topk(5, dim=1).indices
hits5 = (y_test[top5] == torch.arange(len(CAPTIONS))[:, None]).float().mean(1)
t2i_seen, t2i_held = (
    hits5[seen_idx].mean().item(),
    hits5[held_idx].mean().item(),
)
print(
    f"text→image precision@5: seen captions {t2i_seen:.3f}, "
    f"held-out captions {t2i_held:.3f}"
)


# %% tags=["hide-input"]
def show_retrieval(query):
    k = CAPTIONS.index(query)
    top = test_logits[:, k].topk(6).indices
    fig, axes = plt.subplots(1, 6, figsize=(11, 2.3))
    for ax, i in zip(axes, top.tolist(), strict=True):
        ax.imshow(x_test[i].permute(1, 2, 0).clamp(0, 1).numpy())
        ok = int(y_test[i]) == k
        ax.set_title(
            CAPTIONS[int(y_test[i])][2:],
            fontsize=8,
            color=viz.color(2 if ok else 3),
        )
        ax.axis("off")
    held = " (held-out pair)" if k in held_idx.tolist() else ""
    fig.suptitle(
        f"query: {query!r}{held}: top 6 test images (title: their true caption)"
    )
    plt.show()


show_retrieval("a large red circle")

# %% [markdown]
# The query above is a held-out caption, and it fails instructively: the top images are not red
# circles but images of *another* held-out pair. Neither the captions nor the images of unseen pairs
# were ever pulled into place by the loss, so an unseen caption can end up nearer the images of a
# different unseen pair than its own. Averaged over the captions it is the exception, not the rule:
# the split printed above gives a text→image precision@5 of nearly 1 for seen captions and about
# 0.8 for held-out ones, so most held-out captions do find their own images. With a running kernel,
# choose another query caption below (the figure above is static).

# %%
_ = widgets.interact(
    show_retrieval,
    query=widgets.Dropdown(options=CAPTIONS, value="a small green square"),
)

# %% [markdown]
# ## Compositional generalization, over seeds
#
# The held-out pairs ask the model to combine two words it knows into a caption it never saw with
# an image. One seed proves little, so we train three (different initialisations and batch orders on
# the same data), each on the seen captions only, and read the held-out images attribute by
# attribute as well: their colour and their shape, each with a prompt ensemble over the other words.

# %%
colour_prompts = [f"a {z} {{}} {s}" for z in SIZES for s in shapes_]
shape_prompts = [f"a {z} {c} {{}}" for z in SIZES for c in colours_]
held_mask = ~torch.isin(y_test, seen_idx)


def seed_summary(model):
    r = zero_shot(model, x_test, y_test)
    xh, yh = x_test[held_mask], y_test[held_mask]
    r["held colour"] = attribute_accuracy(
        model, xh, yh, 2, colours_, colour_prompts
    )
    r["held shape"] = attribute_accuracy(
        model, xh, yh, 3, shapes_, shape_prompts
    )
    return r


seed_results = [seed_summary(clip_model)]
for seed in (1, 2):
    m, _ = train_clip(seed)
    seed_results.append(seed_summary(m))
for key in ("seen", "held-out", "held colour", "held shape"):
    print(f"{key:>12} per seed:", [f"{r[key]:.3f}" for r in seed_results])
seen_s = [r["seen"] for r in seed_results]
held_s = [r["held-out"] for r in seed_results]

# %%
assert min(seen_s) > 0.9, f"seen top-1 over seeds expected > 0.9, got {seen_s}"
assert min(held_s) > 0.35, (
    f"held-out-pair top-1 expected > 0.35 on every seed (chance "
    f"{1 / len(CAPTIONS):.3f}), got {held_s}"
)

# %% [markdown]
# Every seed reads the seen captions almost perfectly and gets about half of the held-out images
# exactly right, some 15 to 20 times chance (1/36). Read attribute by attribute, the colour of a
# held-out image is read right almost always; its shape is what fails, about half the time, and
# then the model usually answers with a seen caption of the same colour and size (the confusion matrix
# above). Composition is real here but partial: the shape evidence for "circle" drawn in red is
# weaker than for the circles the model saw. The bar asserted above, 0.35 on every seed, is the
# issue's 0.3 plus a margin, under the worst seed we measured.
#
# What moved this number in our runs was the data and the text tower, not the loss: the first
# version of this chapter (four colours, three pairs held out, transformer tower) scored 0.61, 0.02
# and 0.03 over three seeds; with the Latin-square split and six hues the same transformer tower
# scored between 0.28 and 0.61 over six seeds, and the factored tower and longer training raised
# the worst seed further (the validation table above). Another
# change that helped in the first version: adding captions that name one attribute ("a red object",
# "a circle" on a greyscale image), which raised the mean held-out score there from 0.22 to 0.49 but
# cost seen accuracy (0.95 to 0.80).


# %% [markdown]
# ## SLIP: CLIP plus self-supervision
#
# SLIP (Mu et al., 2022) adds SimCLR to CLIP: two augmented views of each image go through the same
# image encoder and a projection head, and $\mathcal L = \mathcal L_{CLIP} + \lambda\,
# \mathcal L_{SimCLR}$ with $\lambda = 1$. The augmentations must respect the captions: random
# crops would change the size that the captions name and colour jitter the colour, so the views
# here are flips and small shifts; to save an encoder pass, the CLIP batch itself is one view and a
# flipped, shifted copy of it the other. We train it with the same seed and steps as the first CLIP and
# compare on the validation images first.

# %%
slip_model, slip_log = train_clip(seed=0, slip_weight=1.0)
slip_val, slip_test = (
    zero_shot(slip_model, x_val, y_val),
    zero_shot(slip_model, x_test, y_test),
)
for name, v, t in [
    ("CLIP", clip_val, clip_test),
    ("SLIP", slip_val, slip_test),
]:
    print(
        f"{name}: val seen {v['seen']:.3f} held-out {v['held-out']:.3f} | "
        f"test seen {t['seen']:.3f} held-out {t['held-out']:.3f}"
    )

# %%
assert slip_test["seen"] > 0.9, (
    f"SLIP seen top-1 expected > 0.9, got {slip_test['seen']:.3f}"
)

# %% [markdown]
# Both read the seen captions; on this seed SLIP is clearly lower on the held-out pairs, on the
# validation images and on the test images. One seed says little, so we ran six more in prototypes
# (same settings): on the validation task at 600 steps, SLIP's held-out top-1 was 0.28 / 0.49 / 0.34
# against CLIP's 0.51 / 0.58 / 0.50; on the test split at 800 steps (other initialisations than
# here), 0.66 / 0.39 / 0.24 against CLIP's 0.67 / 0.66 / 0.71. Seen top-1 was 0.98 or more for both
# everywhere. At this scale the self-supervised term does not help composition and usually hurts it.
# A plausible reading: SimCLR asks the image tower to tell every image of the batch from every other
# by whatever differs, exact size, position or noise, which the captions do not need, while its
# invariances (flips, shifts) are ones the CLIP term already learns from flipped images. SLIP's
# paper reports gains in zero-shot accuracy and linear probes for ViT encoders trained on YFCC15M,
# whose captions are noisy and incomplete, so a signal from the images alone adds information; our
# captions are exact and complete.
#
# ## StyleGAN-NADA: a direction in CLIP space
#
# StyleGAN-NADA (Gal et al., 2022) adapts a generator to a new domain from text alone. It keeps a
# frozen copy of the generator and trains the other so that the *change* in image embedding points
# along the *change* in text embedding:
#
# $$\Delta T = E_T(t_{target}) - E_T(t_{source}),\quad
# \Delta I = E_I(G_{train}(w)) - E_I(G_{frozen}(w)),\quad
# \mathcal L_{direction} = 1 - \frac{\Delta I\cdot\Delta T}{\lVert\Delta I\rVert\,\lVert\Delta T\rVert}.$$
#
# A plain CLIP loss (make every image close to "cat") tends to collapse every output to one
# adversarial image; the direction keeps the per-sample differences of the source domain. The loss
# is 0 for parallel, 1 for orthogonal and 2 for opposite directions:

# %%
src_t, tgt_t = torch.zeros(3), torch.tensor([1.0, 0.0, 0.0])
base = torch.full((3, 3), 0.5)
moved = base + torch.tensor([[2.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0]])
nada = [
    losses.directional_loss(
        base[k : k + 1], moved[k : k + 1], src_t, tgt_t
    ).item()
    for k in range(3)
]
print("parallel / orthogonal / opposite:", [round(v, 6) for v in nada])
assert np.allclose(nada, [0.0, 1.0, 2.0], atol=1e-6), nada

# %% [markdown]
# A toy generator to steer: $G(x) = $ a 1×1 convolution applied to images of small red shapes,
# initialised to the identity (so $G_{train} = G_{frozen}$ at the start). We train it with the
# directional loss from "a small red {shape}" to "a small blue {shape}" using our tiny CLIP's frozen
# towers, and measure how often the zero-shot classifier then calls the output blue. (The layer
# freezing of NADA, choosing the $k$ most relevant layers each step, has nothing to choose from here.)

# %%
red_small = [
    CAPTIONS.index(f"a small red {s}")
    for s in shapes_
    if ("red", s) not in HELD_OUT
]
src_imgs = x_test[torch.isin(y_test, torch.tensor(red_small))].to(device)
src_shape = [
    CAPTIONS[int(k)].split()[3]
    for k in y_test[torch.isin(y_test, torch.tensor(red_small))]
]
for p in clip_model.parameters():
    p.requires_grad_(False)
with torch.no_grad():
    e_src = clip_model.encode_text(
        *[
            t.to(device)
            for t in tokenizer.encode(
                [f"a small red {s}" for s in src_shape], length=6
            )
        ]
    )
    e_tgt = clip_model.encode_text(
        *[
            t.to(device)
            for t in tokenizer.encode(
                [f"a small blue {s}" for s in src_shape], length=6
            )
        ]
    )
    i_frozen = clip_model.encode_image(src_imgs)
generator = nn.Conv2d(3, 3, 1).to(device)
with torch.no_grad():
    generator.weight.copy_(torch.eye(3)[:, :, None, None])
    generator.bias.zero_()
opt = torch.optim.Adam(generator.parameters(), lr=0.02)
for _ in range(60):
    loss = losses.directional_loss(
        i_frozen,
        clip_model.encode_image(generator(src_imgs).clamp(0, 1)),
        e_src,
        e_tgt,
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
with torch.no_grad():
    out = generator(src_imgs).clamp(0, 1)
    colour_names = class_embeddings(
        clip_model,
        2,
        colours_,
        [f"a {z} {{}} {s}" for z in SIZES for s in shapes_],
    )
    before_c = (clip_model.encode_image(src_imgs) @ colour_names.T).argmax(1)
    after_c = (clip_model.encode_image(out) @ colour_names.T).argmax(1)
blue = colours_.index("blue")
print(
    f"directional loss after training {loss.item():.3f}; read as blue: "
    f"{(before_c == blue).float().mean():.2f} before, {(after_c == blue).float().mean():.2f} after"
)

# %%
blue_after = (after_c == blue).float().mean().item()
assert loss.item() < 0.6, (
    f"the directional loss (1 at the start) should fall below 0.6, got {loss.item():.3f}"
)
assert blue_after > 0.8, (
    f"steered outputs should be read as blue, got a fraction {blue_after:.2f}"
)

# %% [markdown]
# The loss starts at 1 ($\Delta I = 0$ has no direction; the `eps` in the cosine makes the cosine
# 0) and falls to about 0.3, and the same model's colour prompts (an ensemble over sizes and shapes)
# now read every steered image as blue. Look at the figure below before believing it: the
# 1×1 convolution, a 3×3 colour matrix, has turned the dark background blue and the red shapes
# purple. A person would call them purple shapes on a blue background; our tiny CLIP, which only
# ever saw dark backgrounds, takes the blue from wherever it is. The directional loss did its job,
# moving the image embeddings along $\Delta T$; the shortcut is in the encoder that judges. This is
# the failure, in miniature, that makes NADA use large CLIP models (several of them, for
# robustness) rather than trust one. (Note also that "a small blue square" is one of the held-out
# captions: the direction still points the right way, because the factored text tower places an
# unseen pair by its words.) The real NADA further uses a generator whose every layer makes images,
# and layer freezing: each step it picks the $k$ layers whose latent codes move most under the
# global CLIP loss and trains only those.

# %% tags=["hide-input"]
viz.show_images(torch.cat([src_imgs[:6], out[:6]]).cpu(), ncols=6)
plt.suptitle(
    "top: frozen generator (source), bottom: steered by the directional loss"
)
plt.show()

# %% [markdown]
# ## DALL·E's discrete image tokens
#
# DALL·E (Ramesh et al., 2021) generates an image as a sequence of tokens after the caption's BPE
# tokens, with one autoregressive transformer (12 billion parameters, 250 million pairs). Its first
# stage compresses a 256×256 image into a 32×32 grid of tokens from a codebook of 8192 entries, so an
# image is 1024 tokens instead of 196,608 numbers. The lecture notes call that stage a VQGAN; it is
# not. DALL·E trains a **discrete VAE** (dVAE) with a Gumbel-softmax relaxation; VQGAN (Esser et al.,
# 2021) is a later, different model (a VQ-VAE with a perceptual and adversarial loss) that others
# paired with transformers.
#
# The simplest way to get such tokens is VQ-VAE's vector quantizer (van den Oord et al., 2017): replace
# each encoder vector $z_e$ by its nearest codebook entry $e_k$. The argmin has no gradient, so the
# backward pass copies the gradient of $z_q$ to $z_e$ (the straight-through estimator,
# `z + (e - z).detach()`), and two extra terms train the codebook and hold the encoder near it:
# $\mathcal L_{VQ} = \lVert \mathrm{sg}[z_e] - e_k\rVert^2 + \beta\lVert z_e - \mathrm{sg}[e_k]\rVert^2$.
# Here the "encoder" is the identity on 4×4 patches of our shapes, and the codebook learns from the
# VQ loss alone (it becomes an online k-means).

# %%
patches = (
    F.unfold(x_train[:400], 4, stride=4).transpose(1, 2).reshape(-1, 48)
)  # [N·64, 48]
torch.manual_seed(0)
vq = text.VectorQuantizer(64, 48, beta=0.25)
with (
    torch.no_grad()
):  # start from random patches, the usual k-means initialisation
    vq.codebook.copy_(patches[torch.randperm(len(patches))[:64]])
opt_vq = torch.optim.Adam(vq.parameters(), lr=0.01)
for _ in range(150):
    zq, codes, vq_loss = vq(patches[torch.randint(len(patches), (1024,))])
    opt_vq.zero_grad()
    vq_loss.backward()
    opt_vq.step()
with torch.no_grad():
    test_p = F.unfold(x_test[:64], 4, stride=4).transpose(1, 2)  # [64, 64, 48]
    zq, codes, _ = vq(test_p)
    recon = F.fold(zq.transpose(1, 2), 32, 4, stride=4)
mse_vq = F.mse_loss(recon, x_test[:64]).item()
mse_mean = F.mse_loss(
    test_p.mean(-1, keepdim=True).expand_as(test_p), test_p
).item()
used = codes.unique().numel()
print(
    f"tokens per 32×32 image: {codes.shape[1]} from a codebook of 64; codes used on test: {used}"
)
print(
    f"reconstruction MSE from tokens {mse_vq:.4f}; a flat grey per patch {mse_mean:.4f}"
)
assert mse_vq < 0.5 * mse_mean, (mse_vq, mse_mean)

# %% tags=["hide-input"]
viz.show_images(torch.cat([x_test[:8], recon[:8]]), ncols=8)
plt.suptitle(
    "top: test images; bottom: the same images rebuilt from 64 tokens each"
)
plt.show()

# %% [markdown]
# ## GLIDE: guidance and inpainting channels
#
# GLIDE (Nichol et al., 2022) is a 3.5-billion-parameter text-conditional diffusion model at 64×64
# with a 1.5-billion-parameter upsampler to 256×256; a transformer encodes the caption and its final
# token embedding replaces the class embedding. Two guidances were compared (chapter 11 trains
# classifier-free guidance on a 2-D toy):
#
# - **classifier-free**: train with the caption replaced by the empty caption 20 % of the time, then
#   extrapolate, $\hat\epsilon(x_t\mid c) = \epsilon(x_t\mid\emptyset) + s\,(\epsilon(x_t\mid c) -
#   \epsilon(x_t\mid\emptyset))$;
# - **CLIP guidance**: shift the reverse-process mean along the gradient of the CLIP similarity,
#   $\hat\mu = \mu + s\,\Sigma\,\nabla_{x_t}\big(f(x_t)\cdot g(c)\big)$, with a CLIP trained on noised
#   images (an ordinary CLIP has never seen $x_t$). Human raters preferred classifier-free guidance.
#
# For inpainting GLIDE is fine-tuned with 4 extra input channels (the known RGB pixels and the mask),
# whose weights start at zero, so at the first step the network computes exactly what the pretrained
# one did:

# %%
torch.manual_seed(0)
pretrained = nn.Conv2d(3, 8, 3, padding=1)
widened = nn.Conv2d(3 + 4, 8, 3, padding=1)
with torch.no_grad():
    widened.weight.zero_()
    widened.weight[:, :3] = pretrained.weight
    widened.bias.copy_(pretrained.bias)
x_t = torch.randn(2, 3, 16, 16)
known, mask = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
torch.testing.assert_close(
    widened(torch.cat([x_t, known * mask, mask], 1)), pretrained(x_t)
)
print("zero-initialised extra channels: output unchanged at step 0")

# %% [markdown]
# ## CLIP-ViL: CLIP as the visual encoder of vision-and-language models
#
# Shen et al. (2022) asked how much CLIP's image encoder helps vision-and-language tasks (VQA, image
# captioning, navigation) when it replaces the usual region features of a detector. Two uses: (1)
# fine-tune a task model on CLIP's *grid* features (a ViT's patch tokens reshaped to a grid, or a
# ResNet's last map before pooling) fused with a text encoder; (2) pre-train one transformer on
# the concatenated word embeddings and CLIP grid features. A ResNet CLIP did well; the ViT CLIP's
# grid features did worse on tasks that need localisation, since its patch tokens were never trained
# to describe their own region.
#
# ## Summary
#
# | idea | what it does | in code |
# |---|---|---|
# | symmetric InfoNCE | CE over rows and columns of $s\,I T^\top$, targets on the diagonal | `losses.clip_loss` |
# | learnable temperature | $s = e^{t}$, init $1/0.07$, clamp 100 | `text.TinyCLIP.logit_scale` |
# | text tower | embeddings + positions, causal blocks, `<eos>` token, projection | `text.TextEncoder` |
# | factored text tower | no blocks, mean over tokens: a sum of per-word terms | `TextEncoder(depth=0, pool="mean")` |
# | held-out pairs | a Latin square: every colour and shape seen with several partners | `HELD_OUT` above |
# | zero-shot | nearest caption embedding; prompt ensembles average normalised embeddings | `class_embeddings` above |
# | retrieval | rank by similarity; recall@k, precision@k | `retrieval` above |
# | SLIP | CLIP + λ SimCLR on two views through the same image encoder (here the CLIP view and a shifted copy) | `train_clip(slip_weight=1)` |
# | NADA | $1-\cos(\Delta I, \Delta T)$: 0 / 1 / 2 | `losses.directional_loss` |
# | VQ tokens | nearest code, straight-through gradient, codebook + commitment loss | `text.VectorQuantizer` |
# | GLIDE inpainting | extra input channels, zero-initialised | widened `nn.Conv2d` above |
#
# ## Exercises
#
# ### Exercise 1: the two directions of the loss
#
# Write `clip_directions(img, txt, scale)` that returns the pair (image→text loss, text→image loss)
# separately, each a mean cross-entropy; their mean must be `losses.clip_loss`. Then find an example
# where the two differ: what does it mean when the image→text loss is lower?


# %%
def clip_directions(img, txt, scale):
    raise NotImplementedError  # your code: two cross-entropies


def clip_directions_reference(img, txt, scale):
    logits = scale * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    labels = torch.arange(len(img))
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)


g_ex = torch.Generator().manual_seed(1)
ex_cases = [
    (
        torch.randn(6, 4, generator=g_ex),
        torch.randn(6, 4, generator=g_ex),
        10.0,
    ),
    (torch.randn(3, 8, generator=g_ex), torch.randn(3, 8, generator=g_ex), 2.0),
]
exercises.check_function(
    clip_directions, ex_cases, reference=clip_directions_reference
)


# %% tags=["hide-cell"]
def clip_directions(img, txt, scale):
    logits = scale * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    labels = torch.arange(len(img))
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)


exercises.check_function(
    clip_directions, ex_cases, reference=clip_directions_reference
).assert_passed()
a, b = clip_directions(*ex_cases[0])
torch.testing.assert_close((a + b) / 2, losses.clip_loss(*ex_cases[0]))
# The two differ when the matrix is not symmetric in its errors: a lower image→text loss means each
# image picks its caption more surely than each caption picks its image (e.g. two images that look
# alike compete for one caption's column, while each row still has one clear winner).

# %% [markdown]
# ### Exercise 2: recall@k from a similarity matrix
#
# Write `recall_at_k(sim, k)` for a square similarity matrix whose diagonal holds the true pairs
# (rows: queries): the fraction of rows whose diagonal entry is among the row's $k$ largest. With
# $N$ random candidates, what recall@k does chance give?


# %%
def recall_at_k(sim, k):
    raise NotImplementedError  # your code


def recall_reference(sim, k):
    return metrics.topk_accuracy(sim, torch.arange(len(sim)), k=k)


sim_cases = [(torch.randn(10, 10, generator=g_ex), k) for k in (1, 3, 10)]
exercises.check_function(recall_at_k, sim_cases, reference=recall_reference)


# %% tags=["hide-cell"]
def recall_at_k(sim, k):
    top = sim.topk(k, dim=1).indices
    return (top == torch.arange(len(sim))[:, None]).any(1).float().mean()


exercises.check_function(
    recall_at_k, sim_cases, reference=recall_reference
).assert_passed()
# Chance recall@k over N candidates is k / N (the true one is equally likely at any rank).

# %% [markdown]
# ### Exercise 3 (open): a harder caption set
#
# Two changes to try, each over the three seeds of the compositional section: (a) replace the
# factored text tower by the transformer one (`depth=1, pool="eos"` in `make_clip`); (b) keep the
# factored tower but hold out the pairs of a "bad" split, where one colour loses two shapes (for
# example red with circle and square, plus three other pairs). Which change hurts the held-out pairs
# more, and does the answer match the explanation given in the text for the first version's
# failure?
#
# ## References
#
# - Radford, A., Kim, J. W., Hallacy, C., et al. (2021). Learning transferable visual models from
#   natural language supervision. *ICML 2021*. arXiv:2103.00020.
# - Oord, A. van den, Li, Y., and Vinyals, O. (2018). Representation learning with contrastive
#   predictive coding. arXiv:1807.03748.
# - Chen, T., Kornblith, S., Norouzi, M., and Hinton, G. (2020). A simple framework for contrastive
#   learning of visual representations (SimCLR). *ICML 2020*. arXiv:2002.05709.
# - Mu, N., Kirillov, A., Wagner, D., and Xie, S. (2022). SLIP: self-supervision meets
#   language-image pre-training. *ECCV 2022*. arXiv:2112.12750.
# - Gal, R., Patashnik, O., Maron, H., et al. (2022). StyleGAN-NADA: CLIP-guided domain adaptation of
#   image generators. *ACM TOG (SIGGRAPH)*. arXiv:2108.00946.
# - Ramesh, A., Pavlov, M., Goh, G., et al. (2021). Zero-shot text-to-image generation (DALL·E).
#   *ICML 2021*. arXiv:2102.12092.
# - Oord, A. van den, Vinyals, O., and Kavukcuoglu, K. (2017). Neural discrete representation learning
#   (VQ-VAE). *NeurIPS 2017*. arXiv:1711.00937.
# - Esser, P., Rombach, R., and Ommer, B. (2021). Taming transformers for high-resolution image
#   synthesis (VQGAN). *CVPR 2021*. arXiv:2012.09841.
# - Nichol, A., Dhariwal, P., Shyam, P., et al. (2022). GLIDE: towards photorealistic image generation
#   and editing with text-guided diffusion models. *ICML 2022*. arXiv:2112.10741.
# - Ho, J., and Salimans, T. (2021). Classifier-free diffusion guidance. *NeurIPS 2021 Workshop*.
#   arXiv:2207.12598.
# - Shen, S., Li, L. H., Tan, H., et al. (2022). How much can CLIP benefit vision-and-language tasks?
#   *ICLR 2022*. arXiv:2107.06383.
