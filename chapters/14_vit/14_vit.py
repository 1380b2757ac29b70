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
# # 14 · Vision transformers
#
# Chapter 13 built attention for sequences. A vision transformer (ViT) applies it to images with
# almost no change: cut the image into patches, treat each patch as a word, and run the transformer
# encoder of chapter 13. This chapter builds the ViT from course_lib blocks, checks it against
# torchvision's (the same logits on the same weights, the same 86.6 M parameters for ViT-B/16), and
# then asks what the model gives up. Without position embeddings it cannot tell a picture from its
# patches shuffled, and this is checked exactly. With little data it loses clearly to the small CNN
# of chapter 06. We measure both, look at where its class token attends, and try DeiT's remedy: a
# distillation token that learns from the CNN. A survey of the follow-up designs (CPVT, TNT, T2T,
# PVT, CrossViT, CvT, Twins, locally shifted attention) ends the chapter, each reduced to its one idea
# in a few lines of code, with a table of what each costs.
#
# **Learning objectives.** After this chapter you can:
# - turn an image into a sequence of patch tokens and show that the patch embedding is a strided
#   convolution (unfold + linear);
# - write the ViT's equations (class token or mean pooling, learned or sinusoidal positions,
#   pre-norm blocks) and build ViT-B/16 with torchvision's parameter count exactly;
# - prove with a test that a ViT without positions is invariant to permutations of the patches, and
#   say what this means for "translation equivariance";
# - count a ViT's tokens and multiply-adds from the formula $4NC^2 + 2N^2C$ and check the count
#   against PyTorch's FLOP counter;
# - train a tiny ViT, compare it fairly with a CNN as the data shrinks, and read its attention maps
#   and attention rollout;
# - implement DeiT's hard and soft distillation and measure what a CNN teacher does for the student;
# - explain in one sentence and a few lines of code each of CPVT, TNT, T2T, PVT, CrossViT, CvT, Twins
#   and locally shifted attention, and what each costs.
#
# **Prerequisites.** [Chapter 13](../13_attention/13_attention.ipynb) (scaled dot-product and
# multi-head attention, sinusoidal positions, the pre-norm `TransformerBlock`),
# [chapter 06](../06_cnns/06_cnns.ipynb) (the GAP CNN on coloured shapes, receptive fields) and
# [chapter 05](../05_regularization/05_regularization.ipynb) (augmentation, weight decay, stochastic
# depth).
#
# **Measured runtime:** 81 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [14_vit.ipynb](14_vit.ipynb) (notebook, with outputs) · [14_vit.py](14_vit.py) (the paired script instructors edit)

# %%
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.patches import Rectangle
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.vision_transformer import VisionTransformer
from tqdm.auto import trange

from course_lib import classic, data, exercises, optim, runtime, viz
from course_lib import nn as cnn
from course_lib.nn import transformer, vit

device = runtime.setup(seed=0)
T_START = time.perf_counter()

# %% [markdown]
# ## An image as a sequence of patches
#
# The attention slides give a recipe for using a transformer on anything: (1) turn the input into a
# sequence that is not too long, (2) embed each element with its content and its position, (3) run
# the sequence through the transformer. The first step is the hard one for images. With one token per
# pixel, a $224\times224$ image is a sequence of 50,176 tokens, and the attention matrix of one head
# holds $50{,}176^2 \approx 2.5\times10^9$ entries: 10 GB in float32, for one layer. The Image
# Transformer of chapter 13 made pixels affordable by restricting attention to local blocks. ViT
# (Dosovitskiy et al., 2021) takes the other road: it cuts the image into $P\times P$ patches and
# makes each patch one token. With $P=16$ the image becomes $14\times14=196$ tokens, about the length
# of a paragraph.
#
# A patch $x_p^i\in\mathbb R^{P^2C}$ (flattened) is projected to $D$ channels by one matrix
# $E\in\mathbb R^{P^2C\times D}$ shared by all patches. Applying the same linear map to every
# non-overlapping $P\times P$ window is exactly what a convolution with kernel size $P$ and stride $P$
# does, so the "linear projection of flattened patches" of the paper is `nn.Conv2d(C, D, P, stride=P)`
# (torchvision's `conv_proj`, course_lib's `vit.PatchEmbed`).
#
# The data of the chapter: $32\times32$ images with one coloured circle, square or triangle, as in
# chapter 06, but with larger objects (radius 6 to 11 pixels) and the default light noise. With
# chapter 06's smaller, noisier objects the tiny ViT below stayed near 0.6 validation accuracy in a
# trial run with an earlier training recipe (the CNN reached 0.97): too hard a start for a model that must learn what an edge is from
# 2,000 images. The task is still far from trivial for it, as we will see. 2,000 training, 500
# validation and 500 test images, each set from its own seed.

# %%
SHAPES = {"min_objects": 1, "max_objects": 1, "radius": (0.2, 0.35)}


def shapes_split(n, seed):
    """n one-object scenes -> images [n, 3, 32, 32], labels [n], semantic masks [n, 32, 32]."""
    s = data.make_shapes(n, 32, **SHAPES, seed=seed)
    return s.images, torch.cat(s.labels), s.masks


x_train, y_train, m_train = shapes_split(2000, 0)
x_val, y_val, _ = shapes_split(500, 2)
x_test, y_test, m_test = shapes_split(500, 1)
CLASSES = data.SHAPE_CLASSES
print(
    "train", tuple(x_train.shape), "class counts", y_train.bincount().tolist()
)


# %% [markdown]
# From scratch, patchifying is a reshape and a permutation: split each image axis into
# (patch index, position inside the patch), bring the two patch indices to the front, and flatten
# the rest channel-first, the order of a convolution weight $[D, C, P, P]$. It equals `F.unfold` and
# course_lib's `vit.patchify`, both exactly (it only moves numbers around).


# %%
def patchify_scratch(x, p):
    """[B, C, H, W] -> [B, (H/p)(W/p), C p p], patches in raster order."""
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // p, p, w // p, p)  # [B, C, H/p, p, W/p, p]
    t = t.permute(0, 2, 4, 1, 3, 5)  # [B, H/p, W/p, C, p, p]
    return t.reshape(b, (h // p) * (w // p), c * p * p)


P = 8
x4 = x_train[:4]
patches = patchify_scratch(x4, P)
assert torch.equal(patches, vit.patchify(x4, P))
assert torch.equal(patches, F.unfold(x4, P, stride=P).transpose(1, 2))
assert torch.equal(vit.unpatchify(patches, P, (32, 32), 3), x4)

torch.manual_seed(0)
embed = vit.PatchEmbed(3, 64, P)
E = embed.proj.weight.reshape(64, -1)  # [D, C P P]: the conv kernel, flattened
tokens_by_linear = patches @ E.T + embed.proj.bias
torch.testing.assert_close(embed(x4), tokens_by_linear)
tv_small = VisionTransformer(
    32, P, num_layers=1, num_heads=4, hidden_dim=64, mlp_dim=128
)
tv_small.conv_proj.load_state_dict(embed.proj.state_dict())
torch.testing.assert_close(tv_small._process_input(x4), tokens_by_linear)
print(
    f"patches {tuple(patches.shape)} -> tokens {tuple(embed(x4).shape)}: "
    "linear on patches = strided conv = torchvision's conv_proj"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(
    1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 3.2]}
)
axes[0].imshow(x4[0].permute(1, 2, 0).numpy())
for k in range(1, 32 // P):
    axes[0].axhline(k * P - 0.5, color="white", lw=1)
    axes[0].axvline(k * P - 0.5, color="white", lw=1)
for i in range(16):
    axes[0].text(
        (i % 4) * P + 1, (i // 4) * P + 2.5, str(i), color="white", fontsize=7
    )
axes[0].set_title(f"a {CLASSES[y_train[0]]}, 4×4 patches of 8×8")
axes[0].axis("off")
strip = (
    patches[0].reshape(16, 3, P, P).permute(2, 0, 3, 1).reshape(P, 16 * P, 3)
)
axes[1].imshow(strip.numpy())
for i in range(1, 16):
    axes[1].axvline(i * P - 0.5, color="white", lw=2)
axes[1].set_xticks(np.arange(16) * P + P / 2 - 0.5, [str(i) for i in range(16)])
axes[1].set_yticks([])
axes[1].set_title("the same image as a sequence of 16 tokens (raster order)")
plt.show()

# %% [markdown]
# ## The ViT: tokens, a class token, positions
#
# With $N=HW/P^2$ patches, the ViT computes
#
# $$
# \begin{aligned}
# z_0 &= [\,x_{\text{cls}};\ x_p^1E;\ \dots;\ x_p^NE\,] + E_{\text{pos}},
#   \qquad E_{\text{pos}}\in\mathbb R^{(N+1)\times D},\\
# z'_\ell &= z_{\ell-1} + \operatorname{MSA}(\operatorname{LN}(z_{\ell-1})),\qquad
# z_\ell = z'_\ell + \operatorname{MLP}(\operatorname{LN}(z'_\ell)),\qquad \ell=1..L,\\
# y &= \operatorname{head}(\operatorname{LN}(z_L^0)).
# \end{aligned}
# $$
#
# Each block is the pre-norm `transformer.TransformerBlock` of chapter 13 (self-attention is
# `CrossAttention` with the context equal to the input; the MLP is $D\to4D\to D$ with a GELU).
#
# - **The class token** $x_{\text{cls}}$ is a learned vector prepended to the patches. Only its
#   output $z_L^0$ feeds the head, so the network has to route the information the class needs into
#   it through attention. (The lecture notes say the token is "appended"; ViT prepends it at index 0,
#   which changes nothing but the index.) The alternative is **mean pooling** of the patch tokens,
#   the transformer's version of the GAP layer of chapter 06: `ViT(pool="mean")`.
# - **Position embeddings.** ViT learns one vector per token ($E_{\text{pos}}$, a parameter). The
#   fixed alternative is the 2-D sinusoidal encoding of chapter 13: half the channels encode the row,
#   half the column (`transformer.sinusoidal_positions_2d`; `ViT(pos="sincos")`).
#
# Why are positions needed at all? Self-attention weighs every token against every other by content
# only; the MLP and the LayerNorms act on each token separately. Permute the patch tokens and every
# intermediate token is permuted the same way (the blocks are **permutation-equivariant**); a class
# token, which sits outside the permutation, or a mean over the patches then reads exactly the same
# thing (the logits are **permutation-invariant**). So without $E_{\text{pos}}$ a ViT sees a bag of
# patches. Two statements in the sources need this correction. The lecture notes' CPVT section
# calls self-attention "permutation-invariant": it is equivariant, and only the pooled output is
# invariant. The attention
# slides say the ViT has "no more translation invariance/equivariance": half true, because the patch
# embedding *is* equivariant to shifts by whole patches, and it is the added positions that break
# this. All three claims are checked below on a model with random weights (they hold for any
# weights).

# %%
torch.manual_seed(0)
perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))


def shuffle_patches(x, p, order):
    """Rearrange the p x p patches of the images x in the given order."""
    tokens = vit.patchify(x, p)[:, order]
    return vit.unpatchify(tokens, p, tuple(x.shape[-2:]), x.shape[1])


x_shuffled = shuffle_patches(x4, P, perm)
invariance = {}
for pool in ("cls", "mean"):
    for pos in ("none", "learned", "sincos"):
        torch.manual_seed(0)
        model = vit.ViT(
            32, P, 3, 3, dim=32, depth=2, num_heads=4, pool=pool, pos=pos
        )
        if pos == "learned":  # ViT starts them near 0: make them count
            nn.init.normal_(model.pos_embed)
        model.eval()
        with torch.no_grad():
            invariance[pool, pos] = (
                (model(x_shuffled) - model(x4)).abs().max().item()
            )
            if pool == "cls" and pos == "none":  # equivariance of the tokens
                tok, tok_sh = model.features(x4), model.features(x_shuffled)
                torch.testing.assert_close(tok_sh[:, 1:], tok[:, 1 + perm])
                torch.testing.assert_close(tok_sh[:, 0], tok[:, 0])
for (pool, pos), d in invariance.items():
    print(f"pool={pool:4s} pos={pos:7s}: max |logit change| {d:.1e}")
assert all(invariance[pool, "none"] < 1e-5 for pool in ("cls", "mean"))
assert all(
    invariance[pool, pos] > 1e-3
    for pool in ("cls", "mean")
    for pos in ("learned", "sincos")
)

# a circular shift by one whole patch moves the patch tokens by one grid cell
rolled = torch.roll(x4, shifts=P, dims=-1)
tok, tok_rolled = embed(x4), embed(rolled)
grid_roll = torch.roll(tok.reshape(4, 4, 4, 64), shifts=1, dims=2).reshape(
    4, 16, 64
)
torch.testing.assert_close(tok_rolled, grid_roll)
print("patch embedding: shift by one patch = shift of the token grid (checked)")

# %% [markdown]
# Without positions the logits move by at most a few units in the last float32 place (the sums run
# in another order); with either kind of position embedding they change. The permutation is not an
# exotic attack: it is the question "is this a good way of encoding position?" that the slides end
# with. A ViT knows where a patch is only through $E_{\text{pos}}$, and learned embeddings must
# discover the 2-D grid from data (we look at what they learn below).
#
# ## What a ViT costs: tokens and multiply-adds
#
# Per block, with $N$ tokens of $C$ channels, counting multiply-adds of the matrix products:
#
# - the projections $Q, K, V$ and the output projection: $4NC^2$;
# - the scores $QK^\top$ and the weighted sum $AV$: $N^2C$ each, $2N^2C$ together;
# - the MLP $C\to4C\to C$: $8NC^2$.
#
# This gives $\Omega(\text{MSA}) = 4NC^2 + 2N^2C$, the formula in the lecture notes (written there
# with $N=hw$), and $12NC^2+2N^2C$ per block. The quadratic term is small for ViT-B at $224^2$
# ($N=197$, $C=768$: $2N^2C$ is 4% of the block). It grows with the number of tokens (15% with
# $8\times8$ patches) and dominates once $N > 6C$, which is what happens with small patches on large
# images, the setting of detection and segmentation. Below the formula, plus the patch embedding ($N\cdot P^2C_{\text{in}}\cdot D$) and the head, is compared with
# PyTorch's `FlopCounterMode` run on the model built on the `meta` device (shapes only, no memory,
# no arithmetic): the two counts agree exactly. The notes quote the ViT paper: patch 16 beats patch 32
# by about 6% on ImageNet at about 4× the cost; the table shows where the 4× comes from.


# %%
def vit_macs(image, patch, dim=768, depth=12, classes=1000, channels=3):
    """Multiply-adds of a ViT's matrix products, from the formula."""
    n = (image // patch) ** 2
    t = n + 1  # with the class token
    block = 12 * t * dim**2 + 2 * t**2 * dim
    return n * channels * patch**2 * dim + depth * block + dim * classes


def counted_macs(model, image):
    """Multiply-adds counted by PyTorch (FLOPs / 2), on the meta device."""
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, image, image, device="meta"))
    return counter.get_total_flops() // 2


rows = []
for patch in (32, 16, 8):
    with torch.device("meta"):
        b_model = vit.ViT(224, patch, 3, 1000, dim=768, depth=12, num_heads=12)
    formula, counted = vit_macs(224, patch), counted_macs(b_model, 224)
    assert formula == counted, (patch, formula, counted)
    n = (224 // patch) ** 2 + 1
    rows.append((patch, n, 12 * n * n, formula))
print("ViT-B at 224x224, per image:")
print("patch | tokens | attention weights (12 heads, one layer) | GMACs")
for patch, n, att, macs in rows:
    print(f"{patch:5d} | {n:6d} | {att:39,d} | {macs / 1e9:6.2f}")
print(f"patch 16 / patch 32: {rows[1][3] / rows[0][3]:.2f}x the multiply-adds")

# %% [markdown]
# ## ViT-B/16 from course_lib blocks
#
# `vit.vit_b_16()` is `ViT(224, 16, dim=768, depth=12, num_heads=12, mlp_ratio=4)` with a class token
# and learned positions. Its parameter count equals torchvision's `vit_b_16` (built with
# `weights=None`: nothing is downloaded; both are built on the `meta` device, so no memory is spent
# either). The breakdown shows where the 86.6 M parameters live: 85 M in the twelve blocks, 7.1 M
# each, two thirds of that in the MLPs.

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    ours_b16 = vit.vit_b_16()
    tv_b16 = torchvision.models.vit_b_16(weights=None)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


parts = {
    "patch embedding (conv 16x16, stride 16)": n_params(ours_b16.patch_embed),
    "class token + 197 positions": ours_b16.cls_token.numel()
    + ours_b16.pos_embed.numel(),
    "12 blocks": n_params(ours_b16.blocks),
    "  one block: attention": n_params(ours_b16.blocks[0].attn),
    "  one block: MLP": n_params(ours_b16.blocks[0].mlp),
    "final LayerNorm + head": n_params(ours_b16.norm) + n_params(ours_b16.head),
}
for name, count in parts.items():
    print(f"{name:40s} {count:>12,d}")
print(f"{'course_lib vit_b_16':40s} {n_params(ours_b16):>12,d}")
print(f"{'torchvision vit_b_16':40s} {n_params(tv_b16):>12,d}")
assert n_params(ours_b16) == n_params(tv_b16) == 86_567_656

# %% [markdown]
# A count can match by accident. A stronger check: copy the weights of a small torchvision
# `VisionTransformer` into ours (`vit.copy_torchvision_weights`; torchvision keeps $W_Q, W_K, W_V$
# in one `in_proj` matrix, which is cut in three) and compare the logits.

# %%
torch.manual_seed(0)
tv_tiny = VisionTransformer(
    32, 8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=128, num_classes=3
).eval()
for p in tv_tiny.parameters():  # torchvision starts some weights at 0
    nn.init.normal_(p, std=0.2)
ours_tiny = vit.ViT(32, 8, 3, 3, dim=32, depth=2, num_heads=4).eval()
vit.copy_torchvision_weights(ours_tiny, tv_tiny)
with torch.no_grad():
    torch.testing.assert_close(ours_tiny(x4), tv_tiny(x4))
print("same weights, same logits as torchvision's VisionTransformer")

# %% tags=["hide-input"]
viz.diagram(
    {"x": (0, 0, "image\n3×32×32", "io"),
     "pe": (2.6, 0, "patch embedding\nconv 8×8, stride 8", "conv"),
     "cls": (2.6, -1.3, "class token\n(+ distillation token)", "other"),
     "pos": (5.2, -1.3, "+ positions\nlearned / sinusoidal", "other"),
     "cat": (5.2, 0, "[cls; 16 tokens]\n17×D", "other"),
     "blk": (7.9, 0, "L × pre-norm block\nx + MSA(LN x)\nx + MLP(LN x)", "attention"),
     "ln": (10.5, 0, "LayerNorm", "norm"),
     "head": (10.5, -1.3, "head on token 0\n(or mean of tokens)", "head"),
     "y": (7.9, -1.3, "logits", "io")},
    [("x", "pe"), ("pe", "cat", "-", "16×D"), ("cls", "cat"), ("pos", "cat"),
     ("cat", "blk"), ("blk", "ln"), ("ln", "head"), ("head", "y")],
    block_size=(2.2, 0.9),
    title="The ViT: patches → tokens (+ class token, + positions) → transformer blocks → head",
)  # fmt: skip
plt.show()

# %% [markdown]
# ## Training a tiny ViT
#
# All models of the chapter train with the same loop, the standard small-scale ViT recipe without
# augmentation: AdamW (weight decay 0.05), a linear warm-up over the first 10% of the steps and a
# cosine decay ([chapter 04](../04_optimization/04_optimization.ipynb)), **label smoothing** 0.1
# (the target keeps 0.9 of its mass on the true class and spreads 0.1 evenly over all classes;
# Szegedy et al., 2016; DeiT uses it) and **gradient clipping** to a global norm of 1 (as in the ViT
# paper). The last two matter here. They were chosen on the validation set before writing the
# chapter, with the shapes ViT below trained on 2,000 images with three seeds: mean validation
# accuracy 0.873 without either, 0.926 with label smoothing alone, 0.930 with clipping alone and 0.933
# with both; with both, peak learning rates 1e-3, 2e-3 and 3e-3 gave 0.869, 0.933 and 0.887. On the
# test set the three seeds moved from 0.832, 0.834 and 0.930 without the two to 0.894, 0.944 and
# 0.940 with them. Neither adds a training step. No augmentation: in a trial with the earlier recipe
# (without the two), random translations of up to 3 pixels lowered the shapes ViT's validation
# accuracy at this short budget (about 0.72 against 0.85), since every epoch then shows it new images
# it has not the steps to fit. The same function trains DeiT students later: given a teacher, it adds
# the distillation loss (the label smoothing then applies to the true labels only, never to the
# teacher's targets, as in DeiT).


# %%
def fit_classifier(
    model,
    x,
    y,
    *,
    epochs,
    lr,
    seed,
    batch=32,
    teacher=None,
    kind="none",
    label_smoothing=0.1,
    clip=1.0,
    desc="",
):
    """AdamW + warm-up/cosine, label smoothing, gradient clipping -> (model in eval mode, losses)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = optim.warmup_cosine(
        opt, warmup_steps=steps // 10, total_steps=steps
    )
    model.train()
    losses = []
    for _ in trange(epochs, desc=desc, leave=False):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            xb, yb = x[idx].to(device), y[idx].to(device)
            if teacher is None:
                loss = F.cross_entropy(
                    model(xb), yb, label_smoothing=label_smoothing
                )
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
                cls_logits, dist_logits = model.forward_heads(xb)
                loss = vit.distillation_loss(
                    cls_logits, dist_logits, yb, t_logits, kind,
                    label_smoothing=label_smoothing, **DISTILL[kind],
                )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def predict(model, x):
    return torch.cat(
        [model(xb.to(device)).argmax(1).cpu() for xb in x.split(500)]
    )


def accuracy(model, x, y):
    return (predict(model, x) == y).float().mean().item()


DISTILL = {"hard": {}, "soft": {"tau": 3.0, "lam": 0.1}}

# %% [markdown]
# ### On digits: positions, measured
#
# The $8\times8$ digits of scikit-learn (1,078 training, 360 validation and 359 test images) cut into
# $2\times2$ patches give 16 tokens. Two ViTs with a class token, $D=32$, two blocks of four heads,
# trained identically (25 epochs, batches of 64, peak learning rate 3e-3): one with learned
# positions, one with none. Then both are tested on the test digits and on the same digits with their
# patches shuffled by a fixed permutation.

# %%
digits = data.digits_splits(seed=0)
(dx_train, dy_train), (dx_val, dy_val), (dx_test, dy_test) = (
    digits.tensors(s) for s in ("train", "val", "test")
)
dx_test_shuffled = shuffle_patches(dx_test, 2, perm)
digit_models, digit_losses = {}, {}
for pos in ("learned", "none"):
    torch.manual_seed(0)
    model = vit.ViT(8, 2, 1, 10, dim=32, depth=2, num_heads=4, pos=pos)
    digit_models[pos], digit_losses[pos] = fit_classifier(
        model.to(device), dx_train, dy_train, epochs=25, lr=3e-3, seed=0,
        batch=64, desc=f"digits ViT, pos={pos}",
    )  # fmt: skip
digit_acc = {
    pos: (
        accuracy(m, dx_val, dy_val),
        accuracy(m, dx_test, dy_test),
        accuracy(m, dx_test_shuffled, dy_test),
    )
    for pos, m in digit_models.items()
}
for pos, (va, te, sh) in digit_acc.items():
    print(
        f"positions {pos:7s}: validation {va:.3f}, test {te:.3f}, "
        f"test with shuffled patches {sh:.3f}"
    )
viz.plot_curves(
    {f"pos={k}": v for k, v in digit_losses.items()},
    xlabel="step",
    ylabel="cross-entropy, smoothed",
    title="Tiny ViTs on digits",
    logy=True,
)
plt.show()

# %%
with torch.no_grad():
    no_pos = digit_models["none"]
    torch.testing.assert_close(
        no_pos(dx_test_shuffled.to(device)),
        no_pos(dx_test.to(device)),
        atol=1e-4,
        rtol=1e-4,
    )
learned_te, learned_sh = digit_acc["learned"][1:]
assert learned_te > 0.9, (
    f"ViT on digits: expected test accuracy > 0.9, got {learned_te:.3f}"
)
assert learned_te - learned_sh > 0.3, (
    "shuffling the patches should cost the positioned ViT > 0.3 accuracy, "
    f"got {learned_te:.3f} -> {learned_sh:.3f}"
)

# %% [markdown]
# The model without positions gives the same logits on shuffled digits (up to float rounding), so its
# accuracy does not move; it still classifies digits from the bag of their $2\times2$ patches
# surprisingly well, but below the model with positions. The positioned model collapses on shuffled
# patches: it uses where each patch is.
#
# ## A tiny ViT on coloured shapes, and chapter 06's CNN with little data
#
# The shapes ViT: $8\times8$ patches (16 tokens), $D=64$, three blocks of four heads, a class token,
# learned positions: 164 k parameters. The CNN is chapter 06's GAP CNN, unchanged: three Conv-BN-ReLU
# layers (8, 16, 32 channels) with two max-pools, global average pooling and a linear layer: 6 k
# parameters. Both train with the loop above (batches of 32), on the first 500 and on all 2,000
# training images: the ViT for 20 epochs of 500 and 10 of 2,000, the CNN for half as many epochs
# (it converges faster; fewer steps can only handicap it). The learning
# rates were chosen on the validation set in a sweep before this chapter (ViT: 1e-3, 2e-3 and 5e-3
# tried with the earlier recipe, 1e-3, 2e-3 and 3e-3 with the final one, 2e-3 best both times; CNN:
# chapter 06's choice, 1.5e-2, at which it is at its ceiling anyway) and are fixed here, which keeps the notebook
# inside its time budget; the test set is used only for the numbers reported.
#
# The ViT reads the shape from the joint of 8×8 pixel blocks; nothing in it says that neighbouring
# pixels belong together or that an edge is an edge wherever it is. The CNN has both built in
# (locality and weight sharing), and this is what the ViT paper means by "inductive bias". ViT needed
# ImageNet-21k or JFT-300M (14 M or 300 M images) to beat ResNets. The notes credit its success to the
# *reduced* inductive bias; more precisely, large-scale pre-training makes up for the missing bias,
# and with little data the missing bias is exactly what hurts, as the notes' next sentence says.


# %%
def make_cnn():
    """Chapter 06's GAP CNN: Conv-BN-ReLU (8, 16, 32) with two max-pools, GAP, linear."""
    return classic.gap_cnn(num_classes=3)


def make_vit(**kwargs):
    return vit.ViT(32, 8, 3, 3, dim=64, depth=3, num_heads=4, **kwargs)


viz.chain_diagram(
    [("image\n3×32×32", "io"), ("Conv-BN-ReLU\n8×32×32", "conv"),
     ("max-pool\n8×16×16", "pool"), ("Conv-BN-ReLU\n16×16×16", "conv"),
     ("max-pool\n16×8×8", "pool"), ("Conv-BN-ReLU\n32×8×8", "conv"),
     ("GAP\n32", "pool"), ("linear\n3 logits", "head")],
    block_size=(1.9, 0.8),
    title="Chapter 06's GAP CNN (6,187 parameters), the reference and the DeiT teacher",
)  # fmt: skip
plt.show()

LR = {"cnn": 1.5e-2, "vit": 2e-3}
BUILD = {"cnn": make_cnn, "vit": make_vit}
EPOCHS = {500: 20, 2000: 10}
shape_models, shape_losses, shape_acc = {}, {}, {}
for n in (500, 2000):
    for kind in ("cnn", "vit"):
        torch.manual_seed(0)
        model, losses = fit_classifier(
            BUILD[kind]().to(device), x_train[:n], y_train[:n],
            epochs=EPOCHS[n] // (2 if kind == "cnn" else 1), lr=LR[kind], seed=0,
            desc=f"{kind}, {n} images",
        )  # fmt: skip
        shape_models[kind, n], shape_losses[f"{kind}, {n}"] = model, losses
        shape_acc[kind, n] = (
            accuracy(model, x_val, y_val),
            accuracy(model, x_test, y_test),
        )
print("model | train images | parameters | validation | test")
for (kind, n), (va, te) in shape_acc.items():
    print(
        f"{kind:5s} | {n:12d} | {n_params(shape_models[kind, n]):10,d} | "
        f"{va:10.3f} | {te:.3f}"
    )
viz.plot_curves(
    shape_losses,
    xlabel="step",
    ylabel="cross-entropy, smoothed (training batches)",
    title="ViT and CNN on coloured shapes",
    logy=True,
)
plt.show()

# %%
vit_acc = {n: shape_acc["vit", n][1] for n in (500, 2000)}
gap = {n: shape_acc["cnn", n][1] - vit_acc[n] for n in (500, 2000)}
print(
    f"CNN minus ViT, test accuracy: {gap[500]:+.3f} with 500 images, "
    f"{gap[2000]:+.3f} with 2000"
)
assert vit_acc[2000] > 0.85, (
    f"tiny ViT on shapes: expected test accuracy > 0.85, got {vit_acc[2000]:.3f}"
)
assert vit_acc[2000] - vit_acc[500] > 0.05, (
    f"the ViT should gain > 0.05 from 4x more data, got {vit_acc[500]:.3f} -> {vit_acc[2000]:.3f}"
)
assert gap[500] > 0.1, (
    f"with 500 images the CNN should lead by > 0.1, got {gap[500]:+.3f}"
)

# %% [markdown]
# The CNN, with 26 times fewer parameters, is at or near perfect at both sizes. The ViT needs the
# four times larger training set to get near 0.9, and with 500 images it is far behind. The gap
# narrows as data grows, which is the ViT paper's story told at toy scale (and at this scale it is
# far from closed).
#
# How much to trust one run? Before writing the chapter the same experiment ran with three seeds
# (initialization and batch order; the same images). The CNN scored between 0.996 and 1.00 every
# time. The ViT scored 0.89, 0.94 and 0.94 with 2,000 images and 0.73, 0.84 and 0.81 with 500: a tiny
# ViT trained for a few hundred steps depends a lot on its initialization, which is one more face of
# its weak prior (without label smoothing and clipping the spread was wider still, 0.83 to 0.93 with
# 2,000 images). The CNN's lead was 0.27, 0.16 and 0.19 with 500 images and 0.11, 0.06 and 0.06 with
# 2,000. The asserted bars sit under the worst of the three seeds (0.85 for the ViT with 2,000
# images, a gain of 0.05 from the extra data, a CNN lead of 0.1 with 500 images).
#
# What did the learned position embeddings learn? The ViT paper's figure 7 shows the cosine similarity
# of each position's embedding to all others: nearby patches get similar embeddings, in rows and
# columns. Ours, from 2,000 images, beside the sinusoidal ones (which have this structure by
# construction). The sinusoidal similarities all lie between about 0.77 and 0.98: on a $4\times4$
# grid most of the 16 frequencies per axis hardly turn between neighbours, so each row of panels is
# coloured over its own range.

# %% tags=["hide-input"]
shape_vit = shape_models["vit", 2000]
learned_pos = (
    shape_vit.pos_embed[0, 1:].detach().cpu()
)  # the 16 patch positions
sin_pos = transformer.sinusoidal_positions_2d(4, 4, 64)
fig, axes = plt.subplots(2, 8, figsize=(12, 3.3))
for row, (name, pe) in enumerate(
    (("learned", learned_pos), ("sinusoidal", sin_pos))
):
    sim = F.normalize(pe, dim=1) @ F.normalize(pe, dim=1).T
    off = sim[~torch.eye(16, dtype=torch.bool)]
    for j, i in enumerate((0, 1, 2, 3, 5, 6, 10, 15)):
        ax = axes[row, j]
        ax.imshow(
            sim[i].reshape(4, 4), cmap="viridis", vmin=off.min(), vmax=off.max()
        )
        ax.add_patch(
            Rectangle((i % 4 - 0.5, i // 4 - 0.5), 1, 1, fill=False, ec="red")
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(name)
fig.suptitle(
    "Cosine similarity of each patch position's embedding (red) to all 16 positions "
    "(colours: per row, from its smallest to its largest off-diagonal value)"
)
plt.show()

# %% [markdown]
# ## Where does the class token look? Attention maps and rollout
#
# `ViT.attention_maps(x)` returns the weights of every block, `[B, heads, 17, 17]`. Row 0 says how
# much the class token takes from each token in that layer: the first view of what the model uses.
# One layer's map is only part of the story, though: after a block, token $j$ already mixes other
# tokens and itself (through the residual). **Attention rollout** (Abnar & Zuidema, 2020) follows the
# information through all layers: average the heads, add the identity for the residual path
# and renormalize, $\hat A_\ell = \tfrac12(A_\ell + I)$, and multiply through the layers,
# $R = \hat A_L\cdots\hat A_1$. Row 0 of $R$ is an estimate of how much each input patch contributes
# to the class token at the end (`vit.attention_rollout`). It ignores the MLPs and the values, so read
# it as a heuristic, not an explanation.
#
# A measurable question: does the class token draw on the patches that contain the object? For each
# test image we take the rollout mass (row 0, over the 16 patches, renormalized) on the patches that
# hold at least one object pixel, and compare it with the share of such patches (what a uniform map
# would give).

# %%
x_show = x_test[:8]
with torch.no_grad():
    maps = [w.cpu() for w in shape_vit.attention_maps(x_test.to(device))]
rollout = vit.attention_rollout(maps)[:, 0, 1:]
rollout = rollout / rollout.sum(1, keepdim=True)
on_object = F.avg_pool2d((m_test > 0).float()[:, None], P).flatten(1) > 0
mass_on_object = (rollout * on_object).sum(1).mean().item()
object_share = on_object.float().mean().item()
print(
    f"rollout mass on object patches {mass_on_object:.3f}; "
    f"share of object patches {object_share:.3f}"
)
assert mass_on_object > object_share + 0.1, (
    "the class token should draw on the object's patches more than a uniform map "
    f"(+0.1): got {mass_on_object:.3f} against {object_share:.3f}"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
for j in range(8):
    axes[0, j].imshow(x_show[j].permute(1, 2, 0).numpy())
    axes[0, j].set_title(CLASSES[y_test[j]], fontsize=8)
    axes[1, j].imshow(x_show[j].permute(1, 2, 0).numpy())
    heat = F.interpolate(
        rollout[j].reshape(1, 1, 4, 4), size=32, mode="nearest"
    )[0, 0]
    axes[1, j].imshow(heat.numpy(), cmap="magma", alpha=0.65)
    axes[1, j].contour((m_test[j] > 0).numpy(), levels=[0.5], colors="cyan")
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "Test images and the attention rollout of the class token (cyan: the object)"
)
plt.show()

# %% [markdown]
# In the three seeds of the prototype the rollout mass on the object's patches was 0.64, 0.64 and
# 0.73, against 0.44 for a uniform map: the class token does read mostly from the object, though
# far from only.
#
# Explore: the class token's attention in one layer and one head. Is it more spread out in the first
# layer than in the last? Do all four heads look at the object, or do some read the background?


# %%
def show_attention(layer=2, head=0):
    fig, axes = plt.subplots(1, 8, figsize=(12, 1.9))
    for j in range(8):
        w = maps[layer][j, head, 0, 1:].reshape(1, 1, 4, 4)
        axes[j].imshow(x_show[j].permute(1, 2, 0).numpy())
        axes[j].imshow(
            F.interpolate(w, size=32, mode="nearest")[0, 0].numpy(),
            cmap="magma",
            alpha=0.65,
        )
        axes[j].axis("off")
    fig.suptitle(f"class token → patches, layer {layer}, head {head}")
    plt.show()


_ = widgets.interact(
    show_attention,
    layer=widgets.IntSlider(value=2, min=0, max=2, description="layer"),
    head=widgets.IntSlider(value=0, min=0, max=3, description="head"),
)

# %% [markdown]
# ## DeiT: a distillation token and a CNN teacher
#
# DeiT (Touvron et al., 2021) trains ViTs on ImageNet alone, with no extra data, through a strong
# training recipe (RandAugment, Mixup, CutMix, random erasing, stochastic depth, repeated
# augmentation, EMA; the lecture notes list them) and **distillation**. A second learned token, the
# distillation token, goes through the blocks next to the class token; its output feeds a head of its
# own, trained to match a teacher. With $Z_s$ the student's logits, $Z_t$ the teacher's, $\psi$ the
# softmax:
#
# $$
# \mathcal L_{\text{soft}} = (1-\lambda)\,\mathcal L_{\text{CE}}(\psi(Z_{\text{cls}}), y)
#   + \lambda\tau^2\,\mathrm{KL}\bigl(\psi(Z_t/\tau)\,\big\|\,\psi(Z_{\text{dist}}/\tau)\bigr),
# \qquad
# \mathcal L_{\text{hard}} = \tfrac12\mathcal L_{\text{CE}}(\psi(Z_{\text{cls}}), y)
#   + \tfrac12\mathcal L_{\text{CE}}(\psi(Z_{\text{dist}}), y_t),\quad y_t=\arg\max_c Z_t(c).
# $$
#
# At test time the two heads' outputs are averaged (`ViT.forward`; DeiT's code averages the logits).
# Two corrections to the notes. They mark soft distillation "(not used)": the paper evaluates both,
# and hard distillation is its better default. And the notes' equations write $\sigma$ for the
# softmax, a symbol they use for the sigmoid elsewhere (gated convolutions): here it is $\psi$. The
# $\tau^2$ keeps the gradient of the soft term at the scale of the cross-entropy as $\tau$ grows
# (Hinton et al., 2015). The paper's finding that CNN teachers beat transformer teachers is usually
# read as the teacher passing on its inductive bias.
#
# The experiment, where the ViT suffered most: the 500-image training set. The teacher is the CNN
# trained above on the same 500 images (no extra data), frozen. Two students with a distillation
# token train with the same loop, learning rate and epochs as the plain ViT ($\tau=3$, $\lambda=0.1$
# for the soft loss, DeiT's values), and are compared with the plain ViT of the previous section.
# Before looking at the numbers, note what the teacher can give here: it classifies every training
# image correctly (printed below), so its hard labels *are* the true labels, and hard distillation
# only adds a second head trained on the same targets. DeiT's teacher earns its keep under strong
# augmentation (crops, Mixup, CutMix), where the true label of an augmented image is uncertain and
# the teacher's is not; the soft loss also passes on how confident the teacher is.

# %%
teacher = shape_models["cnn", 500]
for p in teacher.parameters():
    p.requires_grad_(False)
students = {"none": shape_models["vit", 500]}
for kind in ("hard", "soft"):
    torch.manual_seed(0)
    students[kind], _ = fit_classifier(
        make_vit(distill_token=True).to(device), x_train[:500], y_train[:500],
        epochs=EPOCHS[500], lr=LR["vit"], seed=0,
        teacher=teacher, kind=kind, desc=f"DeiT student, {kind}",
    )  # fmt: skip
teacher_test = predict(teacher, x_test)
teacher_train = (
    (predict(teacher, x_train[:500]) == y_train[:500]).float().mean()
)
print(
    f"teacher's hard labels equal the true labels on {teacher_train:.1%} of its training images"
)
distill_acc = {}
print("student | validation | test | agreement with the teacher (test)")
for kind, model in students.items():
    va, te = accuracy(model, x_val, y_val), accuracy(model, x_test, y_test)
    agree = (predict(model, x_test) == teacher_test).float().mean().item()
    distill_acc[kind] = (va, te, agree)
    print(f"{kind:7s} | {va:10.3f} | {te:.3f} | {agree:.3f}")
print(f"teacher (CNN, 500 images): test {shape_acc['cnn', 500][1]:.3f}")

# %%
gain = {k: distill_acc[k][1] - distill_acc["none"][1] for k in ("hard", "soft")}
print(
    f"gain over no distillation (test): hard {gain['hard']:+.3f}, "
    f"soft {gain['soft']:+.3f}"
)
assert all(distill_acc[k][1] > 0.5 for k in ("hard", "soft")), (
    "the DeiT students should be well above chance (1/3): got test accuracies "
    f"{distill_acc['hard'][1]:.3f} (hard), {distill_acc['soft'][1]:.3f} (soft)"
)

# %% [markdown]
# The differences have no stable sign: over three seeds of this experiment
# (run before writing the chapter, same settings) the hard student's test accuracy moved by −0.054,
# −0.168 and +0.048 against the plain ViT of the same seed, the soft student's by −0.034, −0.156 and
# +0.038, while the plain ViT itself ranged from 0.73 to 0.84 between seeds. At this scale, with a teacher whose hard labels are the training labels and no
# augmentation, distillation gives **no measurable gain**, and the notebook asserts none. (The
# agreement column equals the accuracy column because the teacher is right on every test image.) The DeiT paper's gain (DeiT-B from 81.8% to 83.4% ImageNet top-1
# with a RegNetY-16GF teacher) comes with a 300-epoch schedule and strong augmentation, where the
# teacher's label differs from the true one on many training images.

# %% [markdown]
# ## The survey: one idea each, in a few lines
#
# The lecture notes list what a plain ViT lacks against a CNN: (1) a sense of scale (visual elements
# vary in size), (2) an affordable cost at high resolution (attention is quadratic in the number of
# tokens), (3) the CNN's priors of locality and weight sharing, and its hierarchy from edges to
# objects, (4) any structure inside a patch. The designs below each take one of these back. Each gets
# its idea in code, small enough to read in a minute, and shapes or a property checked.
#
# ### CPVT: positions from a convolution
#
# Learned absolute positions have a fixed length: the shapes ViT above refuses a $48\times48$ image
# (it was built for 16 positions). CPVT (Chu et al., 2021) replaces them with a **position encoding
# generator** (PEG): reshape the patch tokens to their $h\times w$ grid, apply a $3\times3$
# depthwise convolution with zero padding, add the result to the tokens. The encoding is computed
# from the neighbourhood, so it exists at any resolution; away from the borders it moves with the
# content (translation-equivariant), and the **zero padding** tells the tokens near the border where
# they are, which is how the model can still infer absolute position. CPVT also prefers global
# average pooling to the class token (it is translation-invariant).


# %%
class PEG(nn.Module):
    """CPVT's position encoding generator: tokens + depthwise 3x3 conv of their grid."""

    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, tokens, grid):
        b, n, d = tokens.shape
        fmap = tokens.transpose(1, 2).reshape(b, d, *grid)
        return tokens + self.conv(fmap).flatten(2).transpose(1, 2)


class PEGViT(nn.Module):
    """A ViT without position embeddings, a PEG after the first block, mean pooling."""

    def __init__(self, dim=32, depth=2, patch=8, classes=3):
        super().__init__()
        self.embed = vit.PatchEmbed(3, dim, patch)
        self.blocks = nn.ModuleList(
            transformer.TransformerBlock(dim, 4) for _ in range(depth)
        )
        self.peg = PEG(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        grid = self.embed.grid(*x.shape[-2:])
        t = self.embed(x)
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i == 0:
                t = self.peg(t, grid)
        return self.head(t.mean(1))


torch.manual_seed(0)
peg_vit = PEGViT().eval()
big = torch.rand(2, 3, 48, 48)
with torch.no_grad():
    print(
        "PEG-ViT logits at 32x32:",
        tuple(peg_vit(x4).shape),
        "at 48x48:",
        tuple(peg_vit(big).shape),
    )
try:
    shape_vit(big.to(device))
except ValueError as err:
    print("learned positions at 48x48:", err)
# the PEG moves with the content, away from the zero-padded border
peg = PEG(8)
tok = torch.randn(1, 36, 8)
shifted = torch.roll(tok.reshape(1, 6, 6, 8), 1, dims=2).reshape(1, 36, 8)
with torch.no_grad():
    out, out_shifted = peg(tok, (6, 6)), peg(shifted, (6, 6))
# columns 2-4 see no wrapped-around or padded neighbour in either grid
torch.testing.assert_close(
    out_shifted.reshape(6, 6, 8)[:, 2:5],
    torch.roll(out.reshape(6, 6, 8), 1, dims=1)[:, 2:5],
)
print("PEG: a shifted token grid gives a shifted encoding away from the border")

# %% [markdown]
# ### TNT: attention inside the patch
#
# TNT (Han et al., 2021) answers point (4). A $16\times16$ patch is a "visual sentence"; cut it into
# $4\times4$ "visual words" and run an **inner** transformer among the 16 words of each sentence (a
# short sequence: cheap); project the words back and add them to the sentence token, then run the
# usual **outer** transformer among the sentences. (The notes call this a "T2T block"; it is the TNT
# block.) In code, the inner step is a `TransformerBlock` on a batch of $B\cdot N$ short sequences.

# %%
torch.manual_seed(0)
img = torch.rand(2, 3, 32, 32)
sentences = vit.patchify(img, 8)  # [2, 16, 192]: 16 sentences of 8x8 pixels
# each sentence back to a 3x8x8 image, cut into 16 words of 2x2 pixels
words = vit.patchify(sentences.reshape(32, 3, 8, 8), 2)  # [B N, 16, 12]
word_embed, inner = nn.Linear(12, 16), transformer.TransformerBlock(16, 2)
sent_embed, to_sentence = nn.Linear(192, 64), nn.Linear(16 * 16, 64)
w = inner(word_embed(words))  # [B N, 16 words, 16]: attention inside each patch
s = sent_embed(sentences) + to_sentence(w.reshape(2, 16, -1))
s = transformer.TransformerBlock(64, 4)(
    s
)  # outer transformer over the sentences
print(
    f"words {tuple(words.shape)} -> inner attention -> sentences {tuple(s.shape)}"
)
# word 0 of sentence 5 is the top-left 2x2 pixels of patch 5 (row 1, column 1)
assert torch.equal(words[5, 0], img[0, :, 8:10, 8:10].reshape(-1))

# %% [markdown]
# ### T2T: soft split with `unfold`
#
# T2T-ViT (Yuan et al., 2021) blames the hard split for the ViT's hunger for data: a patch boundary
# can cut an edge in two, and the split knows nothing of local structure. Its **soft split** takes
# *overlapping* patches, and that is `F.unfold` with a stride smaller than the kernel. Each step
# shrinks the token count and widens the tokens (each new token concatenates its $k^2$
# neighbours); between steps the tokens go through a transformer layer and are reshaped back into an
# image (**re-structurization**). T2T has three soft splits but only two re-structurization
# (attention) steps before the ViT backbone; the notes' "after 3 iterations of unfolding → attention"
# counts one too many. CvT's authors note that concatenating neighbours is not a convolution and
# costs memory: the token width grows by $k^2$.

# %%
soft_tokens = F.unfold(img, kernel_size=7, stride=4, padding=2).transpose(1, 2)
n_soft = soft_tokens.shape[1]
print(f"soft split 7x7, stride 4: {tuple(soft_tokens.shape)}")
fmap = transformer.TransformerBlock(147, 3)(soft_tokens)
fmap = fmap.transpose(1, 2).reshape(2, 147, 8, 8)  # re-structurization
soft2 = F.unfold(fmap, kernel_size=3, stride=2, padding=1).transpose(1, 2)
print(
    f"re-structurized to {tuple(fmap.shape)}, soft split 3x3, stride 2: {tuple(soft2.shape)}"
)
assert n_soft == 64 and soft2.shape == (2, 16, 147 * 9)
assert torch.equal(
    soft_tokens[0, 9], F.pad(img, (2, 2, 2, 2))[0, :, 4:11, 4:11].reshape(-1)
)

# %% [markdown]
# ### PVT: spatial-reduction attention
#
# PVT (Wang et al., 2021) builds a pyramid like a CNN's for dense prediction: $4\times4$ patches,
# four stages that shrink the map, and **spatial-reduction attention** (SRA) to afford the fine
# stages: the keys and values come from the token map downsampled by a strided convolution of ratio
# $R$. The map loses a factor $R$ on each side, so K and V have $N/R^2$ tokens, the attention matrix
# is $N\times N/R^2$, and its cost falls by $R^2$. The notes' example (with $R=2$: K, V of shape
# $(N/2, C)$, a cost "R times lower") counts the reduction on one axis only: it is $(N/4, C)$ and
# 4 times lower. (The same passage says ViT attends over "32x32 patches"; ViT-B/16, the model PVT
# compares with, uses $16\times16$.)


# %%
class SRA(nn.Module):
    """Spatial-reduction attention: K and V from a conv of kernel = stride = R."""

    def __init__(self, dim, heads, ratio):
        super().__init__()
        self.reduce = nn.Conv2d(dim, dim, ratio, stride=ratio)
        self.norm = nn.LayerNorm(dim)
        self.attn = cnn.CrossAttention(dim, num_heads=heads, qkv_bias=True)

    def forward(self, tokens, grid):
        b, n, d = tokens.shape
        fmap = tokens.transpose(1, 2).reshape(b, d, *grid)
        kv = self.norm(self.reduce(fmap).flatten(2).transpose(1, 2))
        return self.attn(tokens, kv, return_weights=True)


torch.manual_seed(0)
sra_tokens = torch.randn(2, 16 * 16, 32)
for ratio in (1, 2, 4):
    out, weights = SRA(32, 2, ratio)(sra_tokens, (16, 16))
    print(
        f"R={ratio}: output {tuple(out.shape)}, attention {tuple(weights.shape[-2:])}"
    )
    assert weights.shape[-1] == 256 // ratio**2

# %% [markdown]
# ### CrossViT: two branches fused through their class tokens
#
# CrossViT (Chen, Fan and Panda, 2021) runs two ViTs on the same image: a large branch on coarse
# patches (more, wider blocks) and a small branch on fine patches. They exchange information through
# the class token only: the large branch's class token (projected to the small branch's width) is the
# single **query** of a cross-attention over the small branch's patch tokens; the result (projected
# back) is added to the class token, which then rejoins its own patches; the same happens the other
# way. One query means a cost linear in the number of tokens.

# %%
torch.manual_seed(0)
large = torch.randn(2, 1 + 16, 64)  # class token + 4x4 coarse patches
small = torch.randn(2, 1 + 64, 32)  # class token + 8x8 fine patches
f, g = nn.Linear(64, 32), nn.Linear(32, 64)  # between the branch widths
fuse = cnn.CrossAttention(32, num_heads=2)
cls_l = large[:, :1]
query = f(cls_l)
context = torch.cat([query, small[:, 1:]], dim=1)  # the query sees itself too
fused, w_fuse = fuse(query, context, return_weights=True)
large = torch.cat([cls_l + g(fused), large[:, 1:]], dim=1)
print(f"one query over {context.shape[1]} keys: weights {tuple(w_fuse.shape)}")
assert w_fuse.shape == (2, 2, 1, 65)

# %% [markdown]
# ### CvT: convolutions for the tokens and for Q, K, V
#
# CvT (Wu et al., 2021) puts convolutions in two places: a **convolutional token embedding**
# (an overlapping strided convolution + LayerNorm) at the start of each of its three stages, and a
# **convolutional projection**: Q, K and V come from a depthwise-separable $3\times3$ convolution of
# the token map instead of a linear layer, with stride 2 for K and V (4× fewer keys, about 4× less
# attention compute, little accuracy lost because neighbouring tokens are redundant). CvT drops
# position embeddings altogether (the convolutions' padding supplies position), and adds the class
# token only in the last stage.


# %%
def conv_projection(dim, stride):
    """Depthwise 3x3 (+ BN) then pointwise 1x1: CvT's projection for Q, K or V."""
    return nn.Sequential(
        nn.Conv2d(
            dim, dim, 3, stride=stride, padding=1, groups=dim, bias=False
        ),
        nn.BatchNorm2d(dim),
        nn.Conv2d(dim, dim, 1),
    )


torch.manual_seed(0)
fmap = torch.randn(2, 32, 16, 16)
to_q, to_k = conv_projection(32, 1), conv_projection(32, 2)
q = to_q(fmap).flatten(2).transpose(1, 2)
k = to_k(fmap).flatten(2).transpose(1, 2)
print(f"CvT: queries {tuple(q.shape)}, keys and values {tuple(k.shape)}")
assert k.shape[1] * 4 == q.shape[1]

# %% [markdown]
# ### Twins: local windows, then one summary per window
#
# Twins (Chu et al., 2021) argues that PVT's weaker results come mostly from its absolute positions:
# **Twins-PCPVT** is PVT with CPVT's PEG. **Twins-SVT** replaces global attention by **spatially
# separable self-attention**: locally-grouped attention (**LSA**, attention inside each
# $k\times k$ sub-window, as in Swin without the shift) followed by global sub-sampled attention
# (**GSA**: each sub-window is summarized by one token from a strided convolution, and these
# summaries are the keys and values of a global attention, PVT's SRA with $R=k$). The local step is
# attention under a block-diagonal mask (or, faster, a reshape into windows, as Swin does in
# chapter 15).

# %%
rows_cols = torch.arange(64)
window_id = (rows_cols // 8 // 4) * 2 + (rows_cols % 8) // 4  # 4 windows of 4x4
lsa_mask = window_id[:, None] == window_id[None, :]  # True = may attend
lsa = cnn.CrossAttention(32, num_heads=2)
lsa_tokens = torch.randn(2, 64, 32)
_, w_lsa = lsa(lsa_tokens, attn_mask=lsa_mask, return_weights=True)
gsa = SRA(32, 2, ratio=4)
_, w_gsa = gsa(lsa_tokens, (8, 8))
print(
    f"LSA: {int(lsa_mask.sum(1)[0])} keys per query (its 4x4 window); "
    f"GSA: {w_gsa.shape[-1]} summary keys for {w_gsa.shape[-2]} queries"
)
assert (w_lsa.masked_select(~lsa_mask) == 0).all() and w_gsa.shape[-1] == 4

# %% [markdown]
# ### Locally shifted attention with early global integration
#
# Large patches mix information globally but coarsely; the best place to cut an image into patches
# varies from image to image. This design (Sheynin et al., 2021) embeds the image $T$ times: unshifted and shifted by a few pixels (circularly), each with the same
# kind of $S\times S$ stride-$S$ convolution, each variant with its own position embedding. **Local
# attention** then lets each patch's query (from the unshifted embedding) attend over its own $T$
# variants (the keys and values), which yields a "virtually located" patch; a standard transformer
# block follows (the global attention). The notes write this attention without the $1/\sqrt D$
# scaling; with it (below) the weights over the $T$ variants still sum to 1.

# %%
torch.manual_seed(0)
S_, D_, shifts = 8, 32, [(0, 0), (0, 4), (4, 0), (4, 4)]
embed_shift = nn.Conv2d(3, D_, S_, stride=S_)
variants = torch.stack(
    [
        embed_shift(torch.roll(img, s, dims=(2, 3))).flatten(2).transpose(1, 2)
        for s in shifts
    ],
    dim=2,
)  # [B, N, T, D]
variants = variants + nn.Parameter(torch.zeros(len(shifts), 16, D_)).permute(
    1, 0, 2
)
q_loc = variants[:, :, :1]  # [B, N, 1, D]: queries from the unshifted patches
w_loc = torch.softmax(
    q_loc @ variants.transpose(-2, -1) / D_**0.5, dim=-1
)  # [B, N, 1, T]
patches_virtual = (w_loc @ variants)[:, :, 0]  # [B, N, D]
print(
    f"variants {tuple(variants.shape)} -> weights {tuple(w_loc.shape)} -> tokens {tuple(patches_virtual.shape)}"
)
torch.testing.assert_close(w_loc.sum(-1), torch.ones(2, 16, 1))

# %% [markdown]
# ### What they cost
#
# Multiply-adds of one attention layer (projections and attention products; no MLP) for $N$ tokens
# of $C$ channels. Swin's window attention (chapter 15) is listed for comparison. The table is for
# the first stage of a pyramid backbone at $224^2$: $N=56^2$ tokens of $C=96$ channels, the setting
# of Swin-T's stage 1. The PVT row is checked against `FlopCounterMode` on the `SRA` module above
# (whose extra reduction convolution costs $NC^2$); the plot shows how each grows with the image.


# %%
def attention_costs(n, c, window=7, ratio=4, t=4, k_stride=2):
    """Multiply-adds of one attention layer (projections + QK^T + AV) by design."""
    return {
        "ViT MSA: 4NC² + 2N²C": 4 * n * c * c + 2 * n * n * c,
        f"Swin W-MSA (M={window}): 4NC² + 2M²NC": 4 * n * c * c + 2 * window**2 * n * c,
        f"PVT SRA (R={ratio}): (2 + 1 + 2/R²)NC² + 2N²C/R²": 3 * n * c * c
        + 2 * n * c * c // ratio**2 + 2 * n * n * c // ratio**2,
        f"CvT conv. projection (K, V stride {k_stride})": 2 * n * c * c
        + 2 * n * c * c // k_stride**2 + 2 * n * n * c // k_stride**2,
        "CrossViT fusion (one query): 2NC² + 2NC + 2C²": 2 * n * c * c + 2 * n * c + 2 * c * c,
        f"Twins LSA (7x7) + GSA (R={window})": (4 * n * c * c + 2 * window**2 * n * c)
        + (3 * n * c * c + 2 * n * c * c // window**2 + 2 * n * n * c // window**2),
        f"locally shifted (T={t} variants)": (1 + 2 * t) * n * c * c + 2 * t * n * c,
    }  # fmt: skip


n_tok, chan = 56 * 56, 96
costs = attention_costs(n_tok, chan)
print(f"one attention layer, N = 56² = {n_tok} tokens, C = {chan}:")
for name, macs in costs.items():
    print(f"  {name:52s} {macs / 1e9:7.3f} GMACs")
with torch.device("meta"):
    sra4 = SRA(chan, 3, ratio=4)
with FlopCounterMode(display=False) as counter:
    sra4.attn(
        torch.empty(1, n_tok, chan, device="meta"),
        torch.empty(1, n_tok // 16, chan, device="meta"),
    )
    sra4.reduce(torch.empty(1, chan, 56, 56, device="meta"))
pvt_name = next(k for k in costs if k.startswith("PVT"))
assert counter.get_total_flops() // 2 == costs[pvt_name], (
    counter.get_total_flops() // 2,
    costs[pvt_name],
)

# %% tags=["hide-input"]
sides = np.array([56, 112, 224, 448, 896])
fig, ax = plt.subplots(figsize=(7.5, 4))
for i, name in enumerate(costs):
    ys = [attention_costs((s // 4) ** 2, chan)[name] for s in sides]
    ax.loglog(sides, ys, "o-", label=name.split(":")[0], color=viz.color(i))
ax.set_xlabel("image side (pixels; tokens of 4×4 pixels, C = 96)")
ax.set_ylabel("multiply-adds of one attention layer")
ax.set_title(
    "Global attention grows as side⁴, windows and one-query fusion as side²"
)
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Summary
#
# | idea | what it does | in code |
# |---|---|---|
# | patch embedding | $P\times P$ patches, one linear map each: a conv with kernel = stride = $P$ | `vit.patchify`, `vit.PatchEmbed` |
# | class token / mean pooling | a learned token that the head reads / the mean of the patch tokens | `ViT(pool="cls" / "mean")` |
# | positions | learned per token, or fixed 2-D sinusoids; without them a bag of patches | `ViT(pos=...)`, `transformer.sinusoidal_positions_2d` |
# | cost | $12NC^2+2N^2C$ per block; $N = HW/P^2$ | `vit_macs` above, `FlopCounterMode` |
# | ViT-B/16 | 86,567,656 parameters, as torchvision's | `vit.vit_b_16()` |
# | attention rollout | $\prod_\ell \tfrac12(\bar A_\ell + I)$, row 0 | `vit.attention_rollout` |
# | DeiT | a distillation token and head, hard or soft targets from a teacher | `ViT(distill_token=True)`, `vit.distillation_loss` |
# | CPVT, TNT, T2T, PVT, CrossViT, CvT, Twins, shifted | conv positions; attention inside patches; overlapping split; reduced K/V; one-query fusion; conv projections; windows + summaries; shifted patch variants | the survey's cells |
#
# - A ViT is a transformer encoder on patch tokens; everything image-specific is in the patch
#   embedding and the position embeddings. Without positions its logits are exactly invariant to
#   shuffling the patches.
# - With little data the ViT's missing priors cost it dearly against a 6 k-parameter CNN on the shapes;
#   more data narrows the gap. DeiT's distillation token gave no measurable gain here, where the
#   teacher's labels equal the training labels and nothing is augmented.
# - Attention maps and rollout show where the class token reads from; they are heuristics, not
#   explanations.
# - The follow-ups put back what convolutions had: locality, hierarchy, cheaper attention at high
#   resolution, positions that work at any size. Chapter 15 builds the most used of them, Swin.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: the patch embedding as a linear layer
#
# Write `patch_embed_linear(x, weight, bias, p)` that computes the output of
# `F.conv2d(x, weight, bias, stride=p)` (with `weight` of shape `[D, C, p, p]`), flattened to
# tokens `[B, N, D]`, using only `vit.patchify` and a matrix product. The check compares it with the
# convolution.


# %%
def patch_embed_linear(x, weight, bias, p):
    """[B, C, H, W] -> [B, N, D], equal to a stride-p convolution."""
    raise NotImplementedError  # your code: vit.patchify and a matrix product


g_ex = torch.Generator().manual_seed(0)
patch_cases = [
    (torch.randn(2, 3, 16, 16, generator=g_ex), torch.randn(5, 3, 4, 4, generator=g_ex),
     torch.randn(5, generator=g_ex), 4),
    (torch.randn(1, 1, 8, 12, generator=g_ex), torch.randn(3, 1, 2, 2, generator=g_ex),
     torch.randn(3, generator=g_ex), 2),
]  # fmt: skip


def conv_tokens(x, weight, bias, p):
    return F.conv2d(x, weight, bias, stride=p).flatten(2).transpose(1, 2)


exercises.check_function(patch_embed_linear, patch_cases, reference=conv_tokens)


# %% tags=["hide-cell"]
def patch_embed_linear(x, weight, bias, p):
    return vit.patchify(x, p) @ weight.reshape(weight.shape[0], -1).T + bias


exercises.check_function(
    patch_embed_linear, patch_cases, reference=conv_tokens
).assert_passed()

# %% [markdown]
# ### Exercise 2: count a ViT's multiply-adds by hand
#
# For ViT-S/16 (image 224, patch 16, $D=384$, 12 blocks, 6 heads, MLP ratio 4, 1000 classes), compute
# the multiply-adds of its matrix products from the formulas of the chapter (do not call `vit_macs`):
# the patch embedding, the 12 blocks and the head. The check compares with `FlopCounterMode` on the
# model. Then: how many times more does the same model cost with $8\times8$ patches, and why more than
# 4×?

# %%
vit_s_macs = exercises.TODO  # your number


with torch.device("meta"):
    vit_s = vit.ViT(224, 16, 3, 1000, dim=384, depth=12, num_heads=6)
vit_s_counted = counted_macs(vit_s, 224)
exercises.check_value(vit_s_macs, vit_s_counted, name="ViT-S/16 multiply-adds")

# %% tags=["hide-cell"]
n_s, d_s = 196, 384
t_s = n_s + 1
vit_s_macs = (
    n_s * 3 * 16**2 * d_s
    + 12 * (12 * t_s * d_s**2 + 2 * t_s**2 * d_s)
    + d_s * 1000
)
exercises.check_value(
    vit_s_macs, vit_s_counted, name="ViT-S/16 multiply-adds"
).assert_passed()
print(
    f"ViT-S/16: {vit_s_macs / 1e9:.2f} GMACs; with 8x8 patches: {vit_macs(224, 8, dim=384) / vit_s_macs:.2f}x"
)
# 4x the tokens multiply the linear layers by 4, and the N² attention terms by 16: more than 4x in all.

# %% [markdown]
# ## References
#
# - Dosovitskiy, A., Beyer, L., Kolesnikov, A., Weissenborn, D., Zhai, X., Unterthiner, T., Dehghani,
#   M., Minderer, M., Heigold, G., Gelly, S., Uszkoreit, J., and Houlsby, N. (2021). An image is worth
#   16x16 words: transformers for image recognition at scale. *ICLR 2021*. arXiv:2010.11929.
# - Vaswani, A., Shazeer, N., Parmar, N., Uszkoreit, J., Jones, L., Gomez, A. N., Kaiser, Ł., and
#   Polosukhin, I. (2017). Attention is all you need. *NeurIPS 2017*. arXiv:1706.03762.
# - Touvron, H., Cord, M., Douze, M., Massa, F., Sablayrolles, A., and Jégou, H. (2021). Training
#   data-efficient image transformers & distillation through attention. *ICML 2021*.
#   arXiv:2012.12877.
# - Hinton, G., Vinyals, O., and Dean, J. (2015). Distilling the knowledge in a neural network.
#   arXiv:1503.02531.
# - Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J., and Wojna, Z. (2016). Rethinking the Inception
#   architecture for computer vision. *CVPR 2016*. arXiv:1512.00567. (Label smoothing.)
# - Abnar, S., and Zuidema, W. (2020). Quantifying attention flow in transformers. *ACL 2020*.
#   arXiv:2005.00928.
# - Chu, X., Tian, Z., Zhang, B., Wang, X., Wei, X., Xia, H., and Shen, C. (2021). Conditional
#   positional encodings for vision transformers. arXiv:2102.10882. (CPVT; *ICLR 2023*.)
# - Han, K., Xiao, A., Wu, E., Guo, J., Xu, C., and Wang, Y. (2021). Transformer in transformer.
#   *NeurIPS 2021*. arXiv:2103.00112.
# - Yuan, L., Chen, Y., Wang, T., Yu, W., Shi, Y., Jiang, Z., Tay, F. E. H., Feng, J., and Yan, S.
#   (2021). Tokens-to-token ViT: training vision transformers from scratch on ImageNet. *ICCV 2021*.
#   arXiv:2101.11986.
# - Wang, W., Xie, E., Li, X., Fan, D.-P., Song, K., Liang, D., Lu, T., Luo, P., and Shao, L. (2021).
#   Pyramid vision transformer: a versatile backbone for dense prediction without convolutions.
#   *ICCV 2021*. arXiv:2102.12122.
# - Chen, C.-F., Fan, Q., and Panda, R. (2021). CrossViT: cross-attention multi-scale vision
#   transformer for image classification. *ICCV 2021*. arXiv:2103.14899.
# - Wu, H., Xiao, B., Codella, N., Liu, M., Dai, X., Yuan, L., and Zhang, L. (2021). CvT: introducing
#   convolutions to vision transformers. *ICCV 2021*. arXiv:2103.15808.
# - Chu, X., Tian, Z., Wang, Y., Zhang, B., Ren, H., Wei, X., Xia, H., and Shen, C. (2021). Twins:
#   revisiting the design of spatial attention in vision transformers. *NeurIPS 2021*.
#   arXiv:2104.13840.
# - Sheynin, S., Benaim, S., Polyak, A., and Wolf, L. (2021). Locally shifted attention with early
#   global integration. arXiv:2112.05080.
# - Liu, Z., Lin, Y., Cao, Y., Hu, H., Wei, Y., Zhang, Z., Lin, S., and Guo, B. (2021). Swin
#   transformer: hierarchical vision transformer using shifted windows. *ICCV 2021*. arXiv:2103.14030.
