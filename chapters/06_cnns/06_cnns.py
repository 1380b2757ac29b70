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
# # 06 · Convolutional neural networks
#
# A fully connected layer that maps a 224×224 colour image to a hidden layer of the same size would
# need more than 20 billion weights, and it would have to learn separately, at every position, that
# an edge is an edge. A convolutional layer uses one small set of weights everywhere: it slides a
# few 3×3 filters over the image and takes a dot product at each position. That single idea, plus
# pooling, depth and a few tricks to make depth trainable, gives the networks that carried computer
# vision from LeNet to ResNet. This chapter builds convolution three ways (loops, im2col, PyTorch),
# works out the arithmetic of sizes and receptive fields, counts the parameters of the classic
# networks down to the last bias, looks inside a trained network (its filters, its feature maps, class
# activation maps and Grad-CAM), reproduces the degradation problem that residual connections solve,
# and reuses a trained network on a new task with very few labels.
#
# **Learning objectives.** After this chapter you can:
# - compute a convolution as sliding dot products and as one matrix product (im2col), and match
#   `F.conv2d`;
# - predict the output size of a convolution or pooling layer from its kernel, stride, padding and
#   dilation, and the receptive field of a stack of layers, and measure both;
# - count the parameters of LeNet-5, AlexNet, VGG, an Inception module and ResNets by hand, and
#   explain where they go (fully connected layers) and where the compute goes (convolutions);
# - explain what global average pooling buys, show a trained network's filters and feature maps, and
#   compute class activation maps (CAM) and Grad-CAM that show where a classifier looks;
# - say what the degradation problem is (and what it is not), and show it with and without residual
#   connections;
# - choose between a linear probe, fine-tuning and training from scratch when labels are scarce.
#
# **Prerequisites.** [Chapter 00](../00_introduction/00_introduction.ipynb) (the training loop),
# [chapter 02](../02_activations_and_init/02_activations_and_init.ipynb) (ReLU, He initialization),
# [chapter 03](../03_losses/03_losses.ipynb) (cross-entropy),
# [chapter 04](../04_optimization/04_optimization.ipynb) (Adam, SGD with momentum, warm-up and cosine
# schedules) and [chapter 05](../05_regularization/05_regularization.ipynb) (BatchNorm).
#
# **Measured runtime:** 62 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [06_cnns.ipynb](06_cnns.ipynb) (notebook, with outputs) · [06_cnns.py](06_cnns.py) (the paired script instructors edit)

# %%
import copy

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.patches import Rectangle
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.googlenet import Inception
from tqdm.auto import trange

from course_lib import (
    classic,
    data,
    exercises,
    explain,
    metrics,
    optim,
    runtime,
    train,
    viz,
)
from course_lib import nn as cnn

device = runtime.setup(seed=0)

# %% [markdown]
# ## Why convolutions
#
# Two facts about images make convolutions the right tool:
#
# - **Locality.** A pixel is explained mostly by its neighbours: edges, corners and textures are
#   small. A unit that looks at a 3×3 or 5×5 window sees what it needs.
# - **Translation.** A cat's ear is an ear wherever it is. If a detector is useful at one position,
#   the same detector is useful at every position, so its weights can be **shared**.
#
# A convolutional layer builds both in: every output unit is connected to a small window of the input
# (local connectivity), and all units of one output channel use the same weights (weight sharing).
# Compare a fully connected layer and a convolution that both map a 32×32×3 image to ten 32×32 maps.
# We build the dense one on PyTorch's `meta` device, which creates tensors with shapes but no data, so
# that its 31 million weights cost neither memory nor time.

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):  # shapes only: nothing is allocated or initialized
    dense = nn.Linear(32 * 32 * 3, 32 * 32 * 10)
conv = nn.Conv2d(3, 10, kernel_size=5, padding=2)
print(
    f"fully connected 32x32x3 -> 32x32x10: {classic.count_parameters(dense):>11,} parameters"
)
print(
    f"convolution, ten 5x5x3 filters:     {classic.count_parameters(conv):>11,} parameters"
)

# %% [markdown]
# The convolution has 40,000 times fewer parameters, and it has a property the dense layer would
# have to learn from data: it is **equivariant to translation**. Shift the input and the output
# shifts by the same amount. With circular padding (the image wraps around) this holds exactly; with
# the usual zero padding it holds away from the borders.

# %%
gen = torch.Generator().manual_seed(0)
x_demo = torch.randn(1, 3, 32, 32, generator=gen)
conv_circular = nn.Conv2d(
    3, 10, kernel_size=5, padding=2, padding_mode="circular"
)


def shift(t):
    # 3 pixels down, 5 to the right
    return torch.roll(t, shifts=(3, 5), dims=(2, 3))


torch.testing.assert_close(
    conv_circular(shift(x_demo)), shift(conv_circular(x_demo))
)
print(
    "conv(shift(x)) == shift(conv(x)): a convolution is translation-equivariant"
)

# %% [markdown]
# ## Convolution as sliding dot products
#
# A convolutional layer with $C$ input channels, $O$ output channels and $K\times K$ kernels holds a
# weight tensor $w \in \mathbb R^{O\times C\times K\times K}$ and a bias $b\in\mathbb R^O$. Output
# channel $o$ at position $(i, j)$ is the dot product of kernel $o$ with the input window at that
# position:
#
# $$
# y_{o,i,j} = b_o + \sum_{c=1}^{C}\sum_{u=0}^{K-1}\sum_{v=0}^{K-1}
#   w_{o,c,u,v}\; x_{c,\; iS + uD - P,\; jS + vD - P},
# $$
#
# where $S$ is the **stride** (how far the window moves between outputs), $P$ the **padding** (zeros
# added around the input, so indices outside the image read 0) and $D$ the **dilation** (the spacing
# between kernel taps; $D = 1$ is the ordinary dense kernel). Every kernel spans all $C$ input
# channels, so one output channel mixes the colours (or feature maps) of its window.
#
# Strictly speaking this is a *cross-correlation*: the mathematical convolution flips the kernel
# ($x_{i-u}$ instead of $x_{i+u}$). Deep-learning libraries do not flip, and since the kernels are
# learned it makes no difference. SciPy has both operations, which lets us check the claim.
#
# The direct implementation below loops over output positions; at each one it takes the window
# (with stride and dilation as slice steps) and computes all $O$ dot products at once.


# %%
def conv2d_loops(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Direct convolution: one dot product per output position. x [N, C, H, W], weight [O, C, K, K]."""
    n, _, h, w = x.shape
    o, _, k, _ = weight.shape
    span = dilation * (k - 1) + 1  # the kernel's footprint on the input
    h_out = (
        h + 2 * padding - span
    ) // stride + 1  # derived in the next section
    w_out = (w + 2 * padding - span) // stride + 1
    x = F.pad(x, (padding, padding, padding, padding))  # zeros all around
    out = x.new_zeros(n, o, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            r, c = i * stride, j * stride
            window = x[
                :, :, r : r + span : dilation, c : c + span : dilation
            ]  # [N, C, K, K]
            # O dot products
            out[:, :, i, j] = torch.einsum("nckl,ockl->no", window, weight)
    if bias is not None:
        out += bias[None, :, None, None]
    return out


x_small = torch.randn(2, 3, 9, 9, generator=gen)
w_small = torch.randn(4, 3, 3, 3, generator=gen)
b_small = torch.randn(4, generator=gen)
for stride, padding, dilation in [
    (1, 0, 1),
    (2, 1, 1),
    (1, 2, 2),
    (3, 1, 1),
    (2, 0, 3),
]:
    ours = conv2d_loops(x_small, w_small, b_small, stride, padding, dilation)
    ref = F.conv2d(
        x_small,
        w_small,
        b_small,
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    torch.testing.assert_close(ours, ref)
    print(
        f"stride {stride}, padding {padding}, dilation {dilation}: output {tuple(ours.shape)} == F.conv2d"
    )

# cross-correlation, not convolution: SciPy's correlate2d is F.conv2d, convolve2d needs the flipped kernel
img, ker = x_small[0, 0].double(), w_small[0, 0].double()
torch_out = F.conv2d(img[None, None], ker[None, None])[0, 0].numpy()
assert np.allclose(scipy.signal.correlate2d(img, ker, mode="valid"), torch_out)
assert np.allclose(
    scipy.signal.convolve2d(img, ker.flip(0, 1), mode="valid"), torch_out
)
print("F.conv2d is a cross-correlation (scipy.signal.correlate2d)")

# %% [markdown]
# What does a filter bank compute? Here are four hand-made 3×3 kernels applied to a photo in one
# call of `F.conv2d`: one input channel, four output channels. Sobel kernels respond to vertical and
# horizontal edges (with a sign that tells dark-to-bright from bright-to-dark), the box filter blurs,
# and the Laplacian responds to spots and thin lines. The first layer of a trained CNN learns filters
# much like these; deeper layers combine them into corners, textures, parts and objects.

# %%
photo = data.sample_image("camera", size=96)  # [1, 96, 96] grey, in [0, 1]
kernels = torch.tensor(
    [
        [
            [-1.0, 0.0, 1.0],
            [-2.0, 0.0, 2.0],
            [-1.0, 0.0, 1.0],
        ],  # Sobel x: vertical edges
        [
            [-1.0, -2.0, -1.0],
            [0.0, 0.0, 0.0],
            [1.0, 2.0, 1.0],
        ],  # Sobel y: horizontal edges
        [
            [1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
            [1.0, 1.0, 1.0],
        ],  # box blur (divided by 9 below)
        [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],  # Laplacian
    ]
)
kernels[2] /= 9
responses = F.conv2d(photo[None], kernels[:, None], padding=1)[
    0
]  # [4, 96, 96]: one map per kernel

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
axes[0].imshow(photo[0], cmap="gray")
axes[0].set_title("input (1 channel)")
names = [
    "Sobel x (vertical edges)",
    "Sobel y (horizontal edges)",
    "3×3 box blur",
    "Laplacian",
]
for ax, r, name in zip(axes[1:], responses, names, strict=True):
    lim = r.abs().max().item()
    if name.startswith("3×3"):
        ax.imshow(r, cmap="gray")
    else:
        ax.imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(name, fontsize=9)
for ax in axes:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
fig.suptitle(
    "One convolution with four 3×3 kernels gives four output channels (red > 0, blue < 0)"
)
plt.show()

# %% [markdown]
# ### Output size: padding, stride and dilation
#
# Along one axis, an input of size $W$ padded by $P$ on both sides is $W + 2P$ long. A kernel of $K$
# taps with dilation $D$ covers $D(K-1)+1$ pixels. It fits at the positions $0, S, 2S, \dots$ as long
# as it does not run past the end, so the number of outputs is
#
# $$
# W_{\text{out}} = \left\lfloor \frac{W + 2P - D(K-1) - 1}{S} \right\rfloor + 1 .
# $$
#
# With $D = 1$ this is $\lfloor (W - K + 2P)/S\rfloor + 1$. The version often quoted without the floor,
# $(W - K + 2P)/S + 1$, is only right when the stride divides $W - K + 2P$; otherwise it is not even an
# integer. For $W=8, K=3, S=2, P=0$ it gives 3.5; PyTorch (and every other library) gives 3 and never
# looks at the last input column. Two settings are worth remembering: "same" padding $P = D(K-1)/2$
# (odd $K$, stride 1) keeps the size, and stride 2 halves it. Dumoulin and Visin (2016) draw all these
# cases. We check the formula against `nn.Conv2d` for every combination of a grid of settings, including
# the ones where the output would be empty and PyTorch refuses.


# %%
# NBVAL_CHECK_OUTPUT
def conv_out_size(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution or pooling window along one axis (the floor formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


print(
    "W=8, K=3, S=2, P=0:  without the floor",
    (8 - 3 + 0) / 2 + 1,
    "  with it",
    conv_out_size(8, 3, 2),
)
checked = refused = 0
probe_input = {w: torch.zeros(1, 1, w, w) for w in range(1, 13)}
for w in range(1, 13):
    for k in range(1, 6):
        for s in range(1, 4):
            for p in range(0, 3):
                for d in range(1, 4):
                    expected = conv_out_size(w, k, s, p, d)
                    layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
                    if expected < 1:
                        try:
                            layer(probe_input[w])
                        except RuntimeError:
                            refused += 1
                            continue
                        raise AssertionError(
                            f"PyTorch accepted an empty output for {(w, k, s, p, d)}"
                        )
                    assert layer(probe_input[w]).shape[-1] == expected, (
                        w,
                        k,
                        s,
                        p,
                        d,
                    )
                    checked += 1
print(
    f"formula == nn.Conv2d for {checked} settings; PyTorch refused all {refused} with an empty output"
)

# %% [markdown]
# ### Convolution as one matrix product: im2col
#
# The loop is slow because it computes small dot products one position at a time. The standard trick
# (Chellapilla et al., 2006) is to copy every input window into a column of a big matrix, **im2col**,
# and then do all the dot products of all the positions and all the kernels in one matrix
# multiplication, which optimized BLAS libraries run fast.
#
# The classic example is AlexNet's first layer: a 227×227×3 input, 96 kernels of 11×11×3, stride 4.
#
# 1. Each window holds $11\cdot 11\cdot 3 = 363$ numbers, and the kernel fits at
#    $(227 - 11)/4 + 1 = 55$ positions per axis, so there are $55 \cdot 55 = 3025$ windows. Stacked as
#    rows they form a matrix $X$ of shape $3025 \times 363$.
# 2. The 96 kernels, flattened, form $W$ of shape $96 \times 363$.
# 3. $XW^\top$ has shape $3025 \times 96$: one row per position, one column per kernel. Reshaped, it
#    is the $55\times55\times96$ output.
#
# `F.unfold` builds the window matrix, transposed (one *column* per window, as the name im2col says),
# with the same padding, stride and dilation arguments as the convolution.


# %%
def conv2d_im2col(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convolution as unfold + one matrix product. x [N, C, H, W], weight [O, C, K, K]."""
    n, _, h, w = x.shape
    o, _, k, _ = weight.shape
    # [N, C*K*K, L]: X^T
    cols = F.unfold(x, k, dilation=dilation, padding=padding, stride=stride)
    # [O, C*K*K] @ [N, C*K*K, L] -> [N, O, L]
    out = weight.reshape(o, -1) @ cols
    if bias is not None:
        out = out + bias[:, None]
    h_out = conv_out_size(h, k, stride, padding, dilation)
    return out.reshape(
        n, o, h_out, conv_out_size(w, k, stride, padding, dilation)
    )


for stride, padding, dilation in [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 3)]:
    torch.testing.assert_close(
        conv2d_im2col(x_small, w_small, b_small, stride, padding, dilation),
        conv2d_loops(x_small, w_small, b_small, stride, padding, dilation),
    )
print("im2col + matmul == the loop version")

# %%
# NBVAL_CHECK_OUTPUT
x_alex = torch.rand(1, 3, 227, 227, generator=gen)
w_alex = torch.randn(96, 3, 11, 11, generator=gen) * 0.05
cols = F.unfold(x_alex, kernel_size=11, stride=4)
print("windows, one per column (X^T):", tuple(cols.shape))
print("kernels, one per row (W):     ", tuple(w_alex.reshape(96, -1).shape))
y_alex = conv2d_im2col(x_alex, w_alex, stride=4)
print("W X^T reshaped:               ", tuple(y_alex.shape))
torch.testing.assert_close(
    y_alex, F.conv2d(x_alex, w_alex, stride=4), rtol=1e-4, atol=1e-4
)
print(
    f"equal to F.conv2d; the window matrix holds {cols.numel() / x_alex.numel():.1f}x the input's numbers"
)


# %% tags=["hide-input"]
def bracket(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


viz.diagram(
    {
        "x": (0, 0, f"input x\n{bracket(x_alex.shape[1:])}", "io"),
        "cols": (
            3.0,
            0,
            f"windows as columns\nXᵀ {bracket(cols.shape[1:])}",
            "other",
        ),
        "w": (
            3.0,
            1.4,
            f"{len(w_alex)} kernels, flattened\nW {bracket(w_alex.reshape(len(w_alex), -1).shape)}",
            "conv",
        ),
        "mm": (5.0, 0, "@", "op"),
        "out": (
            6.9,
            0,
            f"W Xᵀ\n{bracket([len(w_alex), cols.shape[-1]])}",
            "other",
        ),
        "y": (9.6, 0, f"output\n{bracket(y_alex.shape[1:])}", "io"),
    },
    [
        ("x", "cols", "-", "F.unfold"),
        ("cols", "mm"),
        ("w", "mm"),
        ("mm", "out"),
        ("out", "y", "-", "reshape"),
    ],
    block_size=(2.1, 0.75),
    title="im2col: the 11×11 windows (stride 4) become columns, and the convolution is one matrix product",
)
plt.show()

# %% [markdown]
# The price of im2col is memory: overlapping windows copy each pixel up to $(K/S)^2$ times, here 7×.
# Libraries therefore use it in tiles, or use other algorithms (direct kernels, FFT, Winograd), but
# the matrix view is the one to keep in mind: **a convolution is a matrix product whose weight matrix
# is shared by all positions.**
#
# ### Parameters, and the 1×1 convolution
#
# The weights of a layer do not depend on the image size: $O$ kernels of $C\cdot K\cdot K$ weights
# plus one bias each,
#
# $$
# \#\text{params} = O\,(C K^2 + 1).
# $$
#
# Ten 5×5 filters on a 32×32×3 input have $10\cdot(5\cdot5\cdot3+1) = 760$ parameters, whatever the
# image size. A **1×1 convolution** ($K=1$) looks at a single pixel: it is the same linear layer applied
# to the channel vector of every pixel. Network in Network (Lin et al., 2014), GoogLeNet and ResNet use
# it to mix channels and to cut their number cheaply before an expensive 3×3 or 5×5 convolution.

# %%
# NBVAL_CHECK_OUTPUT
assert (
    classic.count_parameters(nn.Conv2d(3, 10, 5)) == 10 * (5 * 5 * 3 + 1) == 760
)
reduce = nn.Conv2d(256, 64, kernel_size=1)  # 256 channels -> 64, pixel by pixel
x_feat = torch.randn(2, 256, 7, 7, generator=gen)
per_pixel = (
    x_feat.permute(0, 2, 3, 1) @ reduce.weight[:, :, 0, 0].T + reduce.bias
)  # Linear on channels
torch.testing.assert_close(reduce(x_feat), per_pixel.permute(0, 3, 1, 2))
print(
    "1x1 convolution == the same Linear(256, 64) at every pixel;",
    f"{classic.count_parameters(reduce):,} parameters",
)

# %% [markdown]
# ## Receptive field
#
# The **receptive field** of a unit is the set of input pixels that can influence it. One 3×3 layer
# sees 3×3 pixels; a second 3×3 layer on top sees 3×3 units of the first, which together cover 5×5
# pixels; a third covers 7×7. Strides make it grow faster: after a stride-2 layer, one step in the
# feature map is two pixels in the input, so every later tap reaches twice as far. Writing
# $j_\ell = \prod_{i\le\ell} S_i$ for the **jump** (input pixels per step of layer $\ell$'s output),
#
# $$
# r_0 = 1, \qquad r_\ell = r_{\ell-1} + (K_\ell - 1)\, D_\ell\, j_{\ell-1}.
# $$
#
# Pooling windows count like kernels. We compute $r$ with this recursion and then *measure* it: build
# the stack with all-ones kernels (so no contribution can cancel out), back-propagate from one output
# unit in the middle, and count the input pixels that receive a non-zero gradient. A max-pool would
# send its gradient to one pixel of its window only; a window's *potential* influence is what we
# want, so pooling layers are measured as averaging windows.


# %%
# NBVAL_CHECK_OUTPUT
def receptive_field(layers):
    """layers: (kernel, stride, dilation) per layer. Returns the receptive field and the jump, in pixels."""
    r, jump = 1, 1
    for k, s, d in layers:
        r += (k - 1) * d * jump
        jump *= s
    return r, jump


def measured_receptive_field(layers):
    """Width of the input region that one central output unit of an all-ones stack depends on."""
    r, _ = receptive_field(layers)
    x = torch.zeros(1, 1, 2 * r + 8, 2 * r + 8, requires_grad=True)
    h = x
    for k, s, d in layers:
        h = F.conv2d(h, torch.ones(1, 1, k, k), stride=s, dilation=d)
    h[0, 0, h.shape[2] // 2, h.shape[3] // 2].backward()
    reached = x.grad[0, 0] != 0
    return int(reached.any(dim=0).sum()), reached


STACKS = {
    "one 3×3": [(3, 1, 1)],
    "two 3×3": [(3, 1, 1)] * 2,
    "three 3×3": [(3, 1, 1)] * 3,
    "VGG: conv conv pool, twice": [(3, 1, 1), (3, 1, 1), (2, 2, 1)] * 2,
    "dilations 1, 2, 4": [(3, 1, 1), (3, 1, 2), (3, 1, 4)],
    "AlexNet's 5 convs + 3 pools": [
        (11, 4, 1), (3, 2, 1), (5, 1, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 2, 1)
    ],
}  # fmt: skip
for name, layers in STACKS.items():
    r, jump = receptive_field(layers)
    measured, _ = measured_receptive_field(layers)
    assert measured == r, (name, measured, r)
    print(
        f"{name:28s} receptive field {r:3d} px (measured {measured:3d}), jump {jump:2d} px"
    )

# %% [markdown]
# Three stacked 3×3 convolutions see as far as one 7×7 convolution, with $3\cdot 9C^2 = 27C^2$ weights
# instead of $49C^2$ (for $C$ channels in and out) and three nonlinearities instead of one. That is
# VGG's argument for small kernels. The receptive field is not uniform, though: a central pixel
# reaches the output through many more paths than a pixel at the border. The gradient maps below
# (from the measurement above) show this **effective receptive field**: it looks like a Gaussian and
# occupies a shrinking fraction of the theoretical square as depth grows (Luo et al., 2016).

# %%
# NBVAL_CHECK_OUTPUT
c = 64
three_3x3 = nn.Sequential(*[nn.Conv2d(c, c, 3, bias=False) for _ in range(3)])
one_7x7 = nn.Conv2d(c, c, 7, bias=False)
print(
    f"three 3x3 layers: {classic.count_parameters(three_3x3):,} = 27 C^2;",
    end=" ",
)
print(
    f"one 7x7 layer: {classic.count_parameters(one_7x7):,} = 49 C^2 (C = {c})"
)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
for ax, depth in zip(axes, [1, 2, 5, 10], strict=True):
    layers = [(3, 1, 1)] * depth
    r, _ = receptive_field(layers)
    x = torch.zeros(1, 1, 2 * r + 9, 2 * r + 9, requires_grad=True)
    h = x
    for _ in range(depth):
        h = F.conv2d(h, torch.ones(1, 1, 3, 3))
    h[0, 0, h.shape[2] // 2, h.shape[3] // 2].backward()
    g = x.grad[0, 0] / x.grad.max()
    ax.imshow(g, cmap="magma", vmin=0, vmax=1)
    lo = (x.shape[-1] - r) / 2 - 0.5
    ax.add_patch(
        Rectangle(
            (lo, lo), r, r, fill=False, edgecolor=viz.color(5), lw=1.5, ls="--"
        )
    )
    inner = (g > 0.5 * g.max()).any(dim=0).sum().item()
    ax.set(
        title=f"{depth} × 3×3: field {r} px, half-max width {inner} px",
        xticks=[],
        yticks=[],
    )
    ax.grid(False)
fig.suptitle(
    "Effective receptive field: |∂ output / ∂ input| (dashed: the theoretical receptive field)"
)
plt.show()

# %% [markdown]
# ### Explore: kernel, stride, padding, dilation and depth
#
# The diagrams below are one-dimensional slices of a convolution stack: the bottom row is the input
# (16 pixels; grey cells are padding), each row above is the output of one more layer, placed at the
# centre of the input region it sees. Orange marks everything that one unit of the top layer depends
# on; the bracket on the input row is its receptive field. The same computation (all-ones kernels and
# a backward pass) finds the orange cells.


# %% tags=["hide-input"]
def stack_diagram(
    ax, kernel=3, stride=1, padding=0, dilation=1, depth=2, width=16
):
    """Draw a 1-D stack of identical convolutions; highlight what one top unit depends on."""
    sizes = [width]
    for _ in range(depth):
        sizes.append(
            conv_out_size(sizes[-1], kernel, stride, padding, dilation)
        )
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    formula = " → ".join(str(s) for s in sizes)
    if sizes[-1] < 1:
        ax.set_title(f"sizes {formula}: the output is empty", fontsize=9)
        return
    # forward through explicit padding, so that padded cells get gradients too
    x = torch.zeros(1, 1, width, requires_grad=True)
    h, padded = x, []
    for _ in range(depth):
        p = F.pad(h, (padding, padding))
        p.retain_grad()
        padded.append(p)
        h = F.conv1d(
            p, torch.ones(1, 1, kernel), stride=stride, dilation=dilation
        )
    h.retain_grad()
    h[0, 0, sizes[-1] // 2].backward()
    # position of unit i of layer l (without its padding) in input pixels: start + i * jump
    start, jump = 0.0, 1.0
    centres = [np.arange(width, dtype=float)]
    for _ in range(depth):
        start += ((kernel - 1) * dilation / 2 - padding) * jump
        jump *= stride
        centres.append(
            start
            + jump
            * np.arange(
                conv_out_size(
                    len(centres[-1]), kernel, stride, padding, dilation
                )
            )
        )
    for level in range(depth + 1):
        y = level * 1.6
        if (
            level < depth
        ):  # this row is the input of layer level+1: draw it with its padding
            grads = padded[level].grad[0, 0] != 0
            step = 1.0 if level == 0 else stride**level
            xs = np.concatenate(
                [
                    centres[level][0] - step * np.arange(padding, 0, -1),
                    centres[level],
                    centres[level][-1] + step * np.arange(1, padding + 1),
                ]
            )
            is_pad = np.r_[
                np.ones(padding, bool),
                np.zeros(len(centres[level]), bool),
                np.ones(padding, bool),
            ]
        else:
            grads = torch.zeros(sizes[-1], dtype=torch.bool)
            grads[sizes[-1] // 2] = True
            xs, is_pad = centres[level], np.zeros(sizes[-1], bool)
        for xc, hit, pad in zip(xs, grads.tolist(), is_pad, strict=True):
            face = viz.color(1) if hit else ("#dddddd" if pad else "white")
            ax.add_patch(
                Rectangle(
                    (xc - 0.42, y - 0.42),
                    0.84,
                    0.84,
                    facecolor=face,
                    edgecolor="#777777",
                    lw=0.6,
                )
            )
        ax.text(
            -2.2,
            y,
            "input" if level == 0 else f"layer {level}",
            ha="right",
            va="center",
            fontsize=8,
        )
    hits = (padded[0].grad[0, 0] != 0).nonzero().flatten()
    lo, hi = (
        hits.min().item() - padding - 0.5,
        hits.max().item() - padding + 0.5,
    )
    ax.annotate(
        "",
        xy=(lo, -0.75),
        xytext=(hi, -0.75),
        arrowprops={"arrowstyle": "|-|", "color": viz.color(3)},
    )
    r, _ = receptive_field([(kernel, stride, dilation)] * depth)
    ax.set(xlim=(-6, width + 5), ylim=(-1.3, depth * 1.6 + 0.7))
    ax.set_title(
        f"K={kernel}, S={stride}, P={padding}, D={dilation}: sizes {formula}, receptive field {r}",
        fontsize=9,
    )


settings = [
    {"kernel": 3, "stride": 1, "padding": 0, "dilation": 1, "depth": 3},
    {"kernel": 3, "stride": 1, "padding": 1, "dilation": 1, "depth": 3},
    {"kernel": 3, "stride": 2, "padding": 1, "dilation": 1, "depth": 2},
    {"kernel": 3, "stride": 1, "padding": 0, "dilation": 2, "depth": 2},
]
fig, axes = plt.subplots(2, 2, figsize=(13, 5.6))
for ax, kw in zip(axes.flat, settings, strict=True):
    stack_diagram(ax, **kw)
fig.suptitle(
    "Valid and 'same' padding, stride 2, dilation 2 (orange: what the top unit depends on)"
)
plt.show()

# %% [markdown]
# Things to try with the sliders: with padding 0 every layer shrinks the input by $D(K-1)$; with
# $P = D(K-1)/2$ the size stays at 16 (and the padded cells enter the receptive field); stride 2 halves
# the size and doubles the growth of the receptive field in every layer after it; a stride larger than
# the kernel skips input pixels altogether (a hole in the orange bracket); dilation spreads the taps,
# and two layers with the same dilation see only every other pixel (bottom right above, the "gridding"
# effect), which is why networks with dilated convolutions mix several rates.


# %%
def show_stack(kernel=3, stride=1, padding=1, dilation=1, depth=2):
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="none")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.9)
    stack_diagram(ax, kernel, stride, padding, dilation, depth)
    plt.show()


_ = widgets.interact(
    show_stack,
    kernel=widgets.IntSlider(value=3, min=1, max=7, step=1),
    stride=widgets.IntSlider(value=1, min=1, max=4, step=1),
    padding=widgets.IntSlider(value=1, min=0, max=3, step=1),
    dilation=widgets.IntSlider(value=1, min=1, max=3, step=1),
    depth=widgets.IntSlider(value=2, min=1, max=3, step=1),
)

# %% [markdown]
# ## Pooling
#
# A pooling layer summarizes each window of a feature map by one number, channel by channel: its
# maximum (**max pooling**) or its mean (**average pooling**). It has no parameters, its output size
# follows the same floor formula, and the usual 2×2 window with stride 2 halves the resolution. Pooling
# buys a little invariance to small shifts (the maximum of a window does not care where in the window
# the feature fired), cuts the cost of the layers after it, and, as we saw, doubles the growth of the
# receptive field. AlexNet used *overlapping* 3×3 windows with stride 2; many later networks downsample
# with strided convolutions instead (a learned pooling). From scratch, pooling is im2col followed by a
# reduction over each column:


# %%
def pool2d(x, kernel, stride, mode="max"):
    """Max or average pooling via unfold. x [N, C, H, W]; each channel is pooled on its own."""
    n, c, h, w = x.shape
    # [N*C, K*K, L]
    cols = F.unfold(x.reshape(n * c, 1, h, w), kernel, stride=stride)
    pooled = cols.amax(dim=1) if mode == "max" else cols.mean(dim=1)
    return pooled.reshape(
        n, c, conv_out_size(h, kernel, stride), conv_out_size(w, kernel, stride)
    )


x_pool = torch.randn(2, 3, 13, 13, generator=gen)
for kernel, stride in [(2, 2), (3, 2), (3, 3)]:
    torch.testing.assert_close(
        pool2d(x_pool, kernel, stride, "max"),
        F.max_pool2d(x_pool, kernel, stride),
    )
    torch.testing.assert_close(
        pool2d(x_pool, kernel, stride, "avg"),
        F.avg_pool2d(x_pool, kernel, stride),
    )
    print(
        f"{kernel}x{kernel} pooling, stride {stride}: 13x13 -> {pool2d(x_pool, kernel, stride).shape[-1]}x"
        f"{pool2d(x_pool, kernel, stride).shape[-1]}, equal to F.max_pool2d and F.avg_pool2d"
    )

# %% [markdown]
# ## The classic architectures
#
# The networks below are the milestones of the ImageNet years. `course_lib.classic` builds each of them
# in a few readable lines, with torchvision's module names wherever torchvision has the same network,
# so that we can check every count against torchvision's models (built with `weights=None`: nothing is
# downloaded) and load one's `state_dict` into the other. For the big ones we use the `meta` device:
# the shapes are all we need to count.
#
# Two helpers count parameters by formula: a convolution has $O(CK^2+1)$ (or $OCK^2$ without bias) and
# a linear layer $n_\text{out}(n_\text{in}+1)$.


# %%
def conv_params(c_in, c_out, k, bias=True):
    return c_out * (c_in * k * k + bias)


def linear_params(n_in, n_out):
    return n_out * (n_in + 1)


# %% [markdown]
# ### LeNet-5 (1998)
#
# LeCun et al.'s digit reader: two 5×5 convolutions, each followed by 2×2 subsampling, then three
# fully connected layers (the first written as a 5×5 convolution on a 5×5 map), on 32×32 inputs. The
# common modern form (`classic.lenet5`) differs from the 1998 one in three details that its docstring
# lists; both have about 60,000 parameters.

# %%
# NBVAL_CHECK_OUTPUT
lenet = classic.lenet5()
rows = {
    "c1": conv_params(1, 6, 5),
    "c3": conv_params(6, 16, 5),
    "c5": conv_params(16, 120, 5),
    "f6": linear_params(120, 84),
    "output": linear_params(84, 10),
}
h = torch.zeros(1, 1, 32, 32)
for name, layer in lenet.named_children():
    h = layer(h)
    if name.startswith("act"):
        continue
    if name in rows:
        assert classic.count_parameters(layer) == rows[name]
    print(f"{name:8s} -> {str(tuple(h.shape[1:])):13s} {rows.get(name, 0):>7,}")
assert classic.count_parameters(lenet) == sum(rows.values())
print(f"LeNet-5 total {classic.count_parameters(lenet):,} parameters")


# %% tags=["hide-input"]
def layer_chain(build, input_shape, merge_pools=False):
    """(label, kind) blocks for viz.chain_diagram: the convolutions, pools and linear layers of build(), in
    the order they run, each with its output shape (traced with forward hooks on the meta device)."""
    calls = []
    kinds = (
        nn.Conv2d
        | nn.Linear
        | nn.MaxPool2d
        | nn.AvgPool2d
        | nn.AdaptiveAvgPool2d
        | nn.AdaptiveMaxPool2d
    )
    with torch.device("meta"):
        model = build()
        hooks = [
            m.register_forward_hook(
                lambda m, i, o: calls.append((m, list(o.shape[1:])))
            )
            for m in model.modules()
            if isinstance(m, kinds)
        ]
        model(torch.empty(1, *input_shape))
        for hook in hooks:
            hook.remove()
    rows = []  # [text, kind, repeats, pooling merged into it, output shape]
    for m, shape in calls:
        if isinstance(m, nn.Conv2d):
            k, s = m.kernel_size[0], m.stride[0]
            text, kind = (
                f"conv {k}×{k}{f'/{s}' if s > 1 else ''}, {m.out_channels}",
                "conv",
            )
        elif isinstance(m, nn.Linear):
            text, kind = (
                f"linear {m.in_features:,} → {m.out_features:,}",
                "linear",
            )
        elif isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            if shape[1:] != [1, 1]:
                continue  # AlexNet's and VGG's adaptive pools do nothing on 224 x 224 inputs
            text, kind = (
                f"global {'avg' if isinstance(m, nn.AdaptiveAvgPool2d) else 'max'}-pool",
                "pool",
            )
        else:
            k, s = (
                v if isinstance(v, int) else v[0]
                for v in (m.kernel_size, m.stride)
            )
            text, kind = (
                f"{'max' if isinstance(m, nn.MaxPool2d) else 'avg'}-pool {k}×{k}/{s}",
                "pool",
            )
        if merge_pools and kind == "pool":
            rows[-1][3:] = [f"+ {text}", shape]
        elif (
            rows
            and kind == "conv"
            and rows[-1][:2] == [text, "conv"]
            and not rows[-1][3]
        ):
            rows[-1][2:] = [
                rows[-1][2] + 1,
                "",
                shape,
            ]  # n identical convolutions in a row
        else:
            rows.append([text, kind, 1, "", shape])
    blocks = [(f"input\n{list(input_shape)}", "io")]
    for text, kind, n, pool, shape in rows:
        lines = [
            f"{n}× {text}" if n > 1 else text,
            pool,
            "" if kind == "linear" else str(shape),
        ]
        blocks.append(("\n".join(line for line in lines if line), kind))
    return blocks


viz.chain_diagram(
    layer_chain(classic.lenet5, (1, 32, 32)),
    spacing=2.0,
    block_size=(1.8, 0.75),
    fontsize=8,
    title="LeNet-5 (conv k×k/s, n: n kernels, stride s; tanh after every convolution and hidden linear layer)",
)
plt.show()

# %% [markdown]
# ### AlexNet (2012)
#
# Krizhevsky et al. scaled the same recipe up to 224×224 colour images and 1,000 classes and trained it
# on two GPUs, with ReLUs, dropout, data augmentation and overlapping max-pooling. torchvision (and
# `classic.alexnet`) build the single-GPU variant of Krizhevsky (2014). Pushing a `meta` tensor through
# the layers traces the shapes without computing anything:

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    alex = classic.alexnet()
    alex_tv = torchvision.models.alexnet(weights=None)
    h = torch.empty(1, 3, 224, 224)
    for layer in alex.features:
        h = layer(h)
        if not isinstance(layer, nn.ReLU):
            print(f"{type(layer).__name__:9s} -> {tuple(h.shape[1:])}")
# same names and shapes
alex_tv.load_state_dict(alex.state_dict(), strict=True, assign=True)
n_alex, n_fc = (
    classic.count_parameters(alex),
    classic.count_parameters(alex.classifier),
)
assert n_alex == classic.count_parameters(alex_tv) == 61_100_840
print(
    f"AlexNet: {n_alex:,} parameters (= torchvision's), {n_fc / n_alex:.1%} in the 3 fully connected layers"
)

# %% tags=["hide-input"]
viz.chain_diagram(
    layer_chain(classic.alexnet, (3, 224, 224), merge_pools=True),
    spacing=2.1,
    block_size=(1.95, 0.95),
    fontsize=8,
    title="AlexNet (ReLU after every convolution and hidden linear layer, dropout before the first two linear ones)",
)
plt.show()

# %% [markdown]
# ### VGG (2014)
#
# Simonyan and Zisserman kept only 3×3 convolutions (padding 1, so the size is kept) and 2×2 max-pools,
# doubling the channels after each pool, and went to 16 and 19 weight layers. The lecture notes print
# the parameter table of VGG16 from Keras; we compute it by formula, layer by layer, and check it
# against `classic.vgg(16)` and `torchvision.models.vgg16`. Besides the parameters we count the
# multiply-accumulate operations (MACs) of one 224×224 image: a convolution costs
# $H_\text{out}W_\text{out}\cdot OCK^2$, a linear layer $n_\text{in}n_\text{out}$.

# %%
# NBVAL_CHECK_OUTPUT
vgg_rows = []  # (name, output shape, parameters, MACs)
size, channels, block, conv_in_block = 224, 3, 1, 0
for v in classic.VGG_CONFIGS[16]:
    if v == "M":
        size //= 2
        vgg_rows.append((f"block{block}_pool", (size, size, channels), 0, 0))
        block, conv_in_block = block + 1, 0
        continue
    conv_in_block += 1
    vgg_rows.append(
        (
            f"block{block}_conv{conv_in_block}",
            (size, size, v),
            conv_params(channels, v, 3),
            size * size * v * channels * 9,
        )
    )
    channels = v
flat = size * size * channels
vgg_rows.append(("flatten", (flat,), 0, 0))
for name, n_in, n_out in [
    ("fc1", flat, 4096),
    ("fc2", 4096, 4096),
    ("predictions", 4096, 1000),
]:
    vgg_rows.append((name, (n_out,), linear_params(n_in, n_out), n_in * n_out))
for name, shape, n, _ in vgg_rows:
    print(f"{name:13s} {str(shape):17s} {n:>12,}")
vgg_total = sum(r[2] for r in vgg_rows)
print(f"{'total':31s} {vgg_total:>12,}")

with torch.device("meta"):
    vgg16 = classic.vgg(16)
    vgg16_tv = torchvision.models.vgg16(weights=None)
ours = [
    classic.count_parameters(m)
    for m in vgg16.modules()
    if isinstance(m, nn.Conv2d | nn.Linear)
]
assert ours == [r[2] for r in vgg_rows if r[2] > 0]
assert (
    vgg_total
    == classic.count_parameters(vgg16)
    == classic.count_parameters(vgg16_tv)
    == 138_357_544
)
vgg16_tv.load_state_dict(vgg16.state_dict(), strict=True, assign=True)
print("per-layer counts == classic.vgg(16); total == torchvision's vgg16")

# %% tags=["hide-input"]
viz.chain_diagram(
    layer_chain(lambda: classic.vgg(16), (3, 224, 224), merge_pools=True),
    spacing=2.1,
    block_size=(1.95, 0.95),
    fontsize=8,
    title="VGG16: only 3×3 convolutions (padding 1) and 2×2 max-pools (ReLU after every weight layer but the last)",
)
plt.show()

# %% tags=["hide-input"]
weighted = [r for r in vgg_rows if r[2] > 0]
labels = [
    r[0]
    .replace("block", "b")
    .replace("_conv", "c")
    .replace("predictions", "pred")
    for r in weighted
]
params = np.array([r[2] for r in weighted])
macs = np.array([r[3] for r in weighted])
is_fc = np.array([not r[0].startswith("block") for r in weighted])
colors = [viz.color(1) if f else viz.color(0) for f in is_fc]
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), sharex=True)
axes[0].bar(labels, params, color=colors)
axes[0].set(
    yscale="log",
    ylabel="parameters",
    title=f"Parameters: fc1 alone holds {params[-3] / params.sum():.0%}",
)
axes[1].bar(labels, macs, color=colors)
axes[1].set(
    yscale="log",
    ylabel="multiply-accumulates per image",
    title=f"Compute: the convolutions do {macs[~is_fc].sum() / macs.sum():.1%}",
)
for ax in axes:
    ax.tick_params(axis="x", rotation=90, labelsize=8)
    ax.set_xlabel("layer of VGG16 (blue: 3×3 conv, orange: fully connected)")
plt.show()

# %% [markdown]
# The two panels tell the whole story of VGG16's cost: 89 % of its 138 million parameters sit in the
# three fully connected layers (fc1 alone has 103 million, because it connects every one of the
# $7\cdot7\cdot512 = 25{,}088$ features to 4,096 units), while 99 % of the 15.5 billion multiply-adds
# happen in the convolutions, which have few weights but apply them at every position. Later networks
# attacked the first problem with global average pooling (below) and the second with cheaper
# convolutions.
#
# ### Inception (GoogLeNet, 2014)
#
# Szegedy et al. asked which kernel size to use and answered: all of them, in parallel. An Inception
# module runs a 1×1, a 3×3 and a 5×5 convolution and a 3×3 max-pool side by side and concatenates their
# outputs along the channels. To keep this affordable, 1×1 convolutions first **reduce** the channels
# entering the 3×3 and 5×5 branches, and project the pooled branch (the diagram after the next cell).
#
# For module (3a) of GoogLeNet (192 channels in; branch widths 64, 96→128, 16→32, 32) we count the
# convolution weights with and without the reductions, and compare `classic.InceptionBlock` with
# torchvision's `Inception`. torchvision's "5×5" branch actually uses a 3×3 kernel, a bug it keeps so
# that its published weights still load; `kernel_5x5=3` reproduces it, and then the two modules are the
# same function.

# %%
# NBVAL_CHECK_OUTPUT
c_in, args_3a = 192, (64, 96, 128, 16, 32, 32)
naive = (
    conv_params(c_in, 64, 1, False)
    + conv_params(c_in, 128, 3, False)
    + conv_params(c_in, 32, 5, False)
)
reduced = (
    conv_params(c_in, 64, 1, False)
    + conv_params(c_in, 96, 1, False) + conv_params(96, 128, 3, False)
    + conv_params(c_in, 16, 1, False) + conv_params(16, 32, 5, False)
    + conv_params(c_in, 32, 1, False)
)  # fmt: skip
print(
    f"inception (3a) convolution weights: {naive:,} without 1x1 reductions, {reduced:,} with them"
)
block = classic.InceptionBlock(c_in, *args_3a)
# each BatchNorm has a scale and a shift per channel
bn_params = 2 * (64 + 96 + 128 + 16 + 32 + 32)
assert classic.count_parameters(block) == reduced + bn_params
# torchvision's module, 3x3 kernel in the "5x5" branch
torch_block = Inception(c_in, *args_3a)
ours_3x3 = classic.InceptionBlock(c_in, *args_3a, kernel_5x5=3)
torch_block.load_state_dict(ours_3x3.state_dict(), strict=True)
x_incept = torch.randn(2, c_in, 14, 14, generator=gen)
torch_block.eval()
ours_3x3.eval()
with torch.no_grad():
    torch.testing.assert_close(ours_3x3(x_incept), torch_block(x_incept))
print(
    f"output {tuple(ours_3x3(x_incept).shape)}: {ours_3x3.out_channels} = 64 + 128 + 32 + 32 channels; equal to torchvision's"
)


# %% tags=["hide-input"]
def inception_diagram(c_in, b1, r3, b3, r5, b5, bp, side=28):
    ys = {"1": 2.1, "3": 0.7, "5": -0.7, "p": -2.1}
    viz.diagram(
        {
            "x": (0, 0, f"input\n[{c_in}, {side}, {side}]", "io"),
            "b1": (4.6, ys["1"], f"conv 1×1, {b1}", "conv"),
            "r3": (2.6, ys["3"], f"conv 1×1, {r3}\n(reduce)", "conv"),
            "b3": (4.6, ys["3"], f"conv 3×3, {b3}", "conv"),
            "r5": (2.6, ys["5"], f"conv 1×1, {r5}\n(reduce)", "conv"),
            "b5": (4.6, ys["5"], f"conv 5×5, {b5}", "conv"),
            "pool": (2.6, ys["p"], "max-pool 3×3\nstride 1, padding 1", "pool"),
            "bp": (4.6, ys["p"], f"conv 1×1, {bp}\n(project)", "conv"),
            "cat": (6.6, 0, "c", "op"),
            "y": (
                8.4,
                0,
                f"output\n[{b1 + b3 + b5 + bp}, {side}, {side}]",
                "io",
            ),
        },
        [
            ("x", "b1"),
            ("x", "r3"),
            ("x", "r5"),
            ("x", "pool"),
            ("r3", "b3"),
            ("r5", "b5"),
            ("pool", "bp"),
            ("b1", "cat", "-", b1),
            ("b3", "cat", "-", b3),
            ("b5", "cat", "-", b5),
            ("bp", "cat", "-", bp),
            ("cat", "y"),
        ],  # fmt: skip
        block_size=(1.6, 0.8),
        title="Inception module (3a): four branches concatenated along the channels (c); "
        "every convolution is followed by BN and ReLU",
    )
    plt.show()


inception_diagram(c_in, *args_3a)

# %% [markdown]
# Without the reductions the 3×3 and 5×5 branches would see all 192 channels (and the pooled branch
# would pass all 192 on, so the next module would be bigger still). GoogLeNet stacks nine such modules
# and ends with global average pooling instead of VGG's fully connected layers, which makes it about nine
# times smaller than AlexNet (the table below computes the ratio).
#
# ### ResNet (2015)
#
# He et al. made networks of 50, 101 and 152 layers trainable by adding **shortcut connections**: a
# block computes $y = \mathrm{ReLU}(F(x) + x)$, where $F$ is two or three convolutions with BatchNorm,
# so the layers learn a *residual* $F(x) = H(x) - x$ on top of the identity rather than the whole
# mapping $H$. The next section shows why this matters. There are two kinds of block:
#
# - the **basic block** (ResNet-18/34): 3×3 conv → BN → ReLU → 3×3 conv → BN, plus the shortcut;
# - the **bottleneck block** (ResNet-50/101/152): 1×1 conv that reduces the channels to a width $w$ →
#   3×3 conv at width $w$ → 1×1 conv that expands to $4w$, each with BN, plus the shortcut.
#
# When a block changes the resolution (stride 2) or the channels, the shortcut becomes a 1×1 strided
# convolution with BN. The bottleneck's point is the same as Inception's reductions: the expensive 3×3
# convolution works on few channels. Its convolution weights are $4w\cdot w + 9w^2 + w\cdot 4w = 17w^2$,
# against $2\cdot 9\,(4w)^2 = 288w^2$ for a basic block at the full $4w$ channels. The diagrams after the
# next cell draw both blocks, with $w = 64$.

# %%
# NBVAL_CHECK_OUTPUT
w = 64
basic = cnn.BasicBlock(4 * w, 4 * w)
bottleneck = cnn.Bottleneck(4 * w, w)
assert (
    classic.count_parameters(basic)
    == 2 * conv_params(4 * w, 4 * w, 3, False) + 2 * 2 * 4 * w
)
assert classic.count_parameters(bottleneck) == 17 * w * w + 2 * (w + w + 4 * w)
print(
    f"basic block at 256 channels: {classic.count_parameters(basic):,} parameters;",
    end=" ",
)
print(f"bottleneck 256 -> 64 -> 256: {classic.count_parameters(bottleneck):,}")
for name in ("resnet18", "resnet34", "resnet50"):
    with torch.device("meta"):
        ours, theirs = (
            getattr(classic, name)(),
            getattr(torchvision.models, name)(weights=None),
        )
    theirs.load_state_dict(ours.state_dict(), strict=True, assign=True)
    assert classic.count_parameters(ours) == classic.count_parameters(theirs)
    print(
        f"{name}: {classic.count_parameters(ours):>10,} parameters, same layout as torchvision's"
    )


# %% tags=["hide-input"]
def residual_block_diagrams(c, width, n_basic, n_bottleneck):
    """A basic block at c channels and a bottleneck block c -> width -> c, with their shortcuts."""
    basic_blocks = {
        "x": (0, 0, f"x\n[{c}, H, W]", "io"),
        "c1": (2.4, 0, f"conv 3×3, {c} → {c}\nBN, ReLU", "conv"),
        "c2": (4.8, 0, f"conv 3×3, {c} → {c}\nBN", "conv"),
        "add": (6.6, 0, "+", "op"),
        "relu": (8.0, 0, "ReLU", "act"),
        "y": (10.4, 0, f"y\n[{c}, H, W]", "io"),
    }
    bottleneck_blocks = {
        "x": (0, 0, f"x\n[{c}, H, W]", "io"),
        "c1": (2.4, 0, f"conv 1×1, {c} → {width}\nBN, ReLU", "conv"),
        "c2": (4.8, 0, f"conv 3×3, {width} → {width}\nBN, ReLU", "conv"),
        "c3": (7.2, 0, f"conv 1×1, {width} → {c}\nBN", "conv"),
        "add": (9.0, 0, "+", "op"),
        "relu": (10.4, 0, "ReLU", "act"),
        "y": (12.8, 0, f"y\n[{c}, H, W]", "io"),
    }
    fig, axes = plt.subplots(2, 1, figsize=(12, 3.8))
    for ax, blocks, title in [
        (
            axes[0],
            basic_blocks,
            f"basic block (ResNet-18/34) at {c} channels: {n_basic:,} parameters",
        ),
        (
            axes[1],
            bottleneck_blocks,
            f"bottleneck block (ResNet-50/101/152), {c} → {width} → {c}: {n_bottleneck:,} parameters",
        ),
    ]:
        names = list(blocks)
        edges = [
            *zip(names, names[1:], strict=False),
            ("x", "add", "skip", "identity shortcut"),
        ]
        viz.diagram(blocks, edges, ax=ax, block_size=(2.0, 0.75), title=title)
    axes[0].set_xlim(axes[1].get_xlim())
    plt.show()


residual_block_diagrams(
    4 * w,
    w,
    classic.count_parameters(basic),
    classic.count_parameters(bottleneck),
)

# %% [markdown]
# The table below collects the networks of this section (weight layers are the convolutions and
# linear layers on the longest path; GoogLeNet's 22 is the count its paper gives). The GoogLeNet row is
# torchvision's variant, the one whose weights are published: BatchNorm after every convolution, 3×3
# kernels in the "5×5" branch, and no auxiliary classifiers. We also count the paper's layout (5×5
# kernels, convolutions with biases and no BatchNorm) by correcting that count.

# %%
# NBVAL_CHECK_OUTPUT
with torch.device("meta"):
    googlenet = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=False
    )
    family = {
        "LeNet-5 (1998)": (classic.lenet5(), 5),
        "AlexNet (2012)": (classic.alexnet(), 8),
        "VGG16 (2014)": (classic.vgg(16), 16),
        "VGG19 (2014)": (classic.vgg(19), 19),
        "GoogLeNet (2014) *": (googlenet, 22),
        "ResNet-18 (2015)": (classic.resnet18(), 18),
        "ResNet-34 (2015)": (classic.resnet34(), 34),
        "ResNet-50 (2015)": (classic.resnet50(), 50),
    }
print(f"{'network':18s} {'weight layers':>13s} {'parameters':>13s}")
for name, (model, depth) in family.items():
    print(f"{name:18s} {depth:13d} {classic.count_parameters(model):13,}")
n_googlenet = classic.count_parameters(googlenet)
n_bn = sum(
    classic.count_parameters(m)
    for m in googlenet.modules()
    if isinstance(m, nn.BatchNorm2d)
)
# the "5x5" branch's 3x3 weights [O, C, 3, 3] would be [O, C, 5, 5]: 25/9 of them
three_by_three = sum(
    m.branch3[1].conv.weight.numel()
    for m in googlenet.modules()
    if isinstance(m, Inception)
)
# a convolution bias (one per channel) instead of BatchNorm's scale and shift (two per channel)
n_paper_layout = (
    n_googlenet - n_bn // 2 + three_by_three * 25 // 9 - three_by_three
)
print(
    "* torchvision's GoogLeNet: BatchNorm after every convolution, 3x3 kernels in the '5x5' branch,"
)
print(
    "  no auxiliary classifiers. With 5x5 kernels and a bias in place of each BatchNorm (the paper's"
)
print(
    f"  layout, still without the auxiliary classifiers): {n_paper_layout:,} parameters"
)
print(
    f"AlexNet / GoogLeNet parameters: {n_alex / n_googlenet:.1f}x (torchvision's variant), "
    f"{n_alex / n_paper_layout:.1f}x (the paper's layout)"
)

# %% [markdown]
# By these counts AlexNet has about nine times as many parameters as GoogLeNet, whichever layout is
# counted. The GoogLeNet paper's introduction says twelve times; that would need about 5 million
# parameters, fewer than either count above (the parameter column of the paper's own Table 1 adds up to
# about 6.8 million, again about nine times fewer than AlexNet's 61 million).
#
# ### DenseNet and EfficientNet, briefly
#
# Two later families push the ideas further. **DenseNet** (Huang et al., 2017) replaces the sum of a
# shortcut by a concatenation: inside a dense block, layer $\ell$ receives the feature maps of *all*
# earlier layers, $x_\ell = H_\ell([x_0, x_1, \dots, x_{\ell-1}])$, and adds $k$ new channels (the
# growth rate), so a block of $L$ layers outputs $C_0 + Lk$ channels. Transition layers (1×1
# convolution, 2×2 average pooling) between blocks shrink the maps. Every layer gets a short path to
# the loss and reuses all earlier features, which makes DenseNets parameter-efficient.
#
# **EfficientNet** (Tan and Le, 2019) asks how to scale a network up. Making it deeper, wider or feeding
# it larger images each helps, with diminishing returns, and the three interact (larger images need more
# depth to cover them and more width for their finer patterns). Compound scaling grows all three
# together: depth $d=\alpha^\phi$, width $w=\beta^\phi$, resolution $r=\gamma^\phi$, with
# $\alpha\beta^2\gamma^2\approx 2$ (they found $\alpha=1.2, \beta=1.1, \gamma=1.15$), so that the
# FLOPs, which grow like $d\,w^2 r^2$, roughly double with each step of $\phi$. Exercises 2 and 3 check
# both formulas.
#
# ## Global average pooling instead of fully connected layers
#
# VGG16 flattens its last 7×7×512 feature map and feeds the 25,088 numbers to a 4,096-unit layer. Network
# in Network (Lin et al., 2014), GoogLeNet and ResNet instead average each of the $K$ feature maps over
# all positions, **global average pooling** (GAP), and feed the $K$ averages to one linear layer:
#
# $$
# z_c = b_c + \sum_{k=1}^{K} w_{c,k}\,\frac{1}{hw}\sum_{x,y} f_k(x,y).
# $$
#
# What GAP buys:
#
# - **Parameters.** The head of VGG16 has 124 million parameters; a GAP head on the same 512 maps has
#   $512\cdot1000+1000 = 513{,}000$. ResNet-50's head (2,048 maps) has about 2 million.
# - **Any input size.** The averages do not depend on $h$ and $w$, so the same network classifies
#   224×224 and 320×320 images; a flattening head is tied to one size (torchvision's VGG hides this
#   with an adaptive pooling to 7×7).
# - **Less overfitting**, since the head is small, and some robustness to where the object is.
# - **Localization for free**, through class activation maps (next section).

# %%
# NBVAL_CHECK_OUTPUT
fc_head = sum(r[2] for r in vgg_rows if r[0] in ("fc1", "fc2", "predictions"))
print(
    f"VGG16 head: {fc_head:,} parameters; a GAP head on its 512 maps: {linear_params(512, 1000):,}"
)
print(
    f"ResNet-50 head (GAP + linear on 2048 maps): {linear_params(2048, 1000):,}"
)
with torch.device("meta"):
    resnet50 = family["ResNet-50 (2015)"][0]  # built on the meta device above
    flatten_head = nn.Sequential(
        vgg16.features, nn.Flatten(), nn.Linear(7 * 7 * 512, 1000)
    )
    for side in (224, 320):
        x = torch.empty(1, 3, side, side)
        print(
            f"{side}x{side}: ResNet-50 features {tuple(resnet50.features(x).shape)}, logits {tuple(resnet50(x).shape)}"
        )
        try:
            flatten_head(x)
            print(f"{side}x{side}: the flattening head works")
        except RuntimeError:
            print(
                f"{side}x{side}: the flattening head fails ({512 * (side // 32) ** 2:,} features, not 25,088)"
            )

# %% [markdown]
# ## Class activation maps: where does the network look?
#
# Swap the average and the sum in the GAP formula:
#
# $$
# z_c = b_c + \frac{1}{hw}\sum_{x,y} M_c(x,y), \qquad M_c(x,y) = \sum_{k=1}^{K} w_{c,k}\, f_k(x,y).
# $$
#
# $M_c$ is the **class activation map** of Zhou et al. (2016): a weighted sum of the last feature maps,
# with the weights of class $c$'s output unit. The logit of class $c$ is its spatial average, so $M_c$
# says how much each location contributes to the score of class $c$. Upsampled to the image size, it
# shows where the evidence is, although the network was trained with image labels only.
# `explain.class_activation_maps` computes it; below we check the identity above against a network's
# logits.
#
# The data: 32×32 images with one coloured circle, square or triangle (radius 5 to 8 pixels) on a noisy
# background (`data.make_shapes`); the colour is random, so only the shape tells the class. There are
# 1,000 training, 300 validation and 300 test images. The network: three Conv-BN-ReLU layers with two 2×2
# max-pools, so the last feature maps are 8×8, then GAP and a linear layer (drawn below, with the shape
# of every layer's output). It trains for eight epochs with Adam and a warm-up-then-cosine schedule from
# [chapter 04](../04_optimization/04_optimization.ipynb);
# we try three peak learning rates, keep the one with the best validation accuracy (ties go to the lower
# validation loss), and use the test images only for the numbers reported after that.

# %%
shape_settings = {
    "min_objects": 1,
    "max_objects": 1,
    "radius": (0.15, 0.25),
    "noise": 0.1,
}
shapes_train = data.make_shapes(1000, 32, **shape_settings, seed=0)
shapes_val = data.make_shapes(300, 32, **shape_settings, seed=2)
shapes_test = data.make_shapes(300, 32, **shape_settings, seed=1)
shape_val_loader = DataLoader(
    data.ShapesDataset(shapes_val, "label"), batch_size=300
)
CAM_EPOCHS, CAM_LRS = 8, (5e-3, 1.5e-2, 4.5e-2)


def make_cam_net():
    """Conv-BN-ReLU features (8x8 maps of 32 channels), then global average pooling and a linear layer."""
    features = nn.Sequential(
        cnn.ConvNormAct(3, 8),
        nn.MaxPool2d(2),
        cnn.ConvNormAct(8, 16),
        nn.MaxPool2d(2),
        cnn.ConvNormAct(16, 32),
    )
    return nn.Sequential(
        features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3)
    )


# the same network is classic.gap_cnn (chapter 14 reuses it): same layers,
# same initialization from the same seed
torch.manual_seed(0)
_ours = make_cam_net().state_dict()
torch.manual_seed(0)
_lib = classic.gap_cnn(num_classes=3).state_dict()
assert list(_ours) == list(_lib)
assert all(torch.equal(_ours[k], _lib[k]) for k in _ours)


def train_cam_net(lr):
    loader = DataLoader(
        data.ShapesDataset(shapes_train, "label"),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    # the same initialization and data order for every learning rate
    torch.manual_seed(0)
    model = make_cam_net().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = optim.warmup_cosine(
        opt, warmup_steps=16, total_steps=CAM_EPOCHS * len(loader)
    )
    history = train.fit(
        model,
        loader,
        epochs=CAM_EPOCHS,
        optimizer=opt,
        loss_fn=F.cross_entropy,
        val_loader=shape_val_loader,
        metrics={"acc": metrics.accuracy},
        scheduler=sched,
        scheduler_step="batch",
        desc=f"GAP CNN, lr {lr:g}",
    )
    return model, history


# %% tags=["hide-input"]
cam_chain = layer_chain(make_cam_net, (3, 32, 32))
cam_blocks = {
    f"b{i}": (2.2 * i, 0, label, kind)
    for i, (label, kind) in enumerate(cam_chain)
}
cam_edges = [(f"b{i}", f"b{i + 1}") for i in range(len(cam_chain) - 1)]
last_conv = max(i for i, (_, kind) in enumerate(cam_chain) if kind == "conv")
cam_blocks["cam"] = (
    2.2 * (last_conv + 1),
    -1.5,
    "class activation map\nΣ_k w_ck f_k: [8, 8]",
    "head",
)
cam_edges += [
    (f"b{last_conv}", "cam", "--", "maps f_k"),
    (f"b{len(cam_chain) - 1}", "cam", "--", "weights w_c"),
]
viz.diagram(
    cam_blocks,
    cam_edges,
    block_size=(1.9, 0.75),
    fontsize=8,
    title="The GAP CNN: Conv-BN-ReLU layers, global average pooling, one linear layer; "
    "its weights turn the last maps into a CAM",
)
plt.show()

# %%
torch.manual_seed(0)
# the first layer before training
cam_init_filters = make_cam_net()[0][0][0].weight.detach().clone()
cam_runs = {lr: train_cam_net(lr) for lr in CAM_LRS}
for lr, (_, hist) in cam_runs.items():
    print(
        f"peak lr {lr:g}: validation accuracy {hist.last('val_acc'):.3f}, loss {hist.last('val_loss'):.3f}"
    )
cam_lr = max(
    CAM_LRS,
    key=lambda lr: (
        cam_runs[lr][1].last("val_acc"),
        -cam_runs[lr][1].last("val_loss"),
    ),
)
cam_net, cam_history = cam_runs[cam_lr]
cam_features, cam_head = cam_net[0], cam_net[3]
print(f"selected on validation: peak lr {cam_lr:g}")
cam_history.plot(
    title=f"GAP CNN on one-shape images, peak lr {cam_lr:g} (train: running averages)"
)
plt.show()

# %% [markdown]
# ### What the network learned: filters and feature maps
#
# Before asking where the network looks, we look at what it computes. The first layer's eight 3×3×3
# filters can be drawn as tiny colour images (each filter rescaled to [0, 1] on its own, so the colour
# of a pixel shows the sign and size of its three weights relative to the rest of the filter). At
# initialization they are random. Training moves them far (the printout below gives the distance), and
# with only 3×3 pixels what they can learn is limited: a preference for some colour (a filter of nearly
# one colour), or a change in one direction (one side light, the other dark), an edge detector. The big
# first-layer filters of ImageNet networks such as AlexNet's 11×11 ones show the same two kinds, colour
# blobs and oriented edges, far more clearly.
#
# The feature maps of one test image show what these filters and the layers above them compute. After
# the first block each map is a filtered copy of the image: some maps fill the object, some trace one
# side of its outline, others respond to the background. After the third block, at 8×8, the maps are
# coarse and more specific: some fire on the object or a part of it, others on the background around it.

# %%
cam_net.eval()
trained_filters = cam_features[0][0].weight.detach().cpu()  # [8, 3, 3, 3]
change = (
    (trained_filters - cam_init_filters).norm() / cam_init_filters.norm()
).item()
print(
    f"the first-layer filters moved by {change:.2f} of their initial norm during training"
)


# %% tags=["hide-input"]
def filter_images(w):
    """Rescale each filter [3, 3, 3] to [0, 1] on its own, as an RGB image [3, 3, 3] (H, W, C)."""
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    return ((w - lo) / (hi - lo)).permute(0, 2, 3, 1)


fig, axes = plt.subplots(2, 8, figsize=(11, 3.2))
for row, (name, w) in enumerate(
    [("at initialization", cam_init_filters), ("trained", trained_filters)]
):
    for k, ax in enumerate(axes[row]):
        ax.imshow(filter_images(w)[k])
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
        if k == 0:
            ax.set_ylabel(name)
fig.suptitle(
    "First-layer filters (3×3×3, each shown as a colour image rescaled to [0, 1])"
)
plt.show()

# %%
probe_image = shapes_test.images[:1].to(device)
block_outputs = {}
hooks = [
    cam_features[i].register_forward_hook(
        lambda m, inp, out, i=i: block_outputs.update({i: out.detach()})
    )
    for i in (0, 4)
]
with torch.no_grad():
    cam_net(probe_image)
for hook in hooks:
    hook.remove()
active = (block_outputs[4][0] > 0).float().mean(dim=(1, 2))
print(
    f"block 1: {(block_outputs[0][0] > 0).float().mean():.0%} of the units are active;",
    f"block 3: {(active > 0).sum().item()} of 32 maps fire somewhere, {(active > 0.5).sum().item()} on more than half",
)

# %% tags=["hide-input"]
fig = plt.figure(figsize=(13, 4.4))
grid = fig.add_gridspec(4, 13)
ax = fig.add_subplot(grid[:, :4])
ax.imshow(shapes_test.images[0].permute(1, 2, 0))
ax.set_title(
    f"test image 0 ({shapes_test.classes[int(shapes_test.labels[0][0])]})"
)
ax.axis("off")
for k in range(8):  # block 1: 8 maps at 32x32
    ax = fig.add_subplot(grid[(k // 4) * 2 : (k // 4) * 2 + 2, 4 + (k % 4)])
    ax.imshow(block_outputs[0][0, k].cpu(), cmap="magma")
    ax.axis("off")
    if k == 1:
        ax.set_title("block 1: 8 maps, 32×32", fontsize=9, loc="left")
for k in range(16):  # block 3: the first 16 of 32 maps at 8x8
    ax = fig.add_subplot(grid[k // 4, 9 + k % 4])
    ax.imshow(block_outputs[4][0, k].cpu(), cmap="magma")
    ax.axis("off")
    if k == 0:
        ax.set_title("block 3: 16 of 32 maps, 8×8", fontsize=9, loc="left")
fig.suptitle(
    "Feature maps (after BatchNorm and ReLU) of one test image at two depths; bright = active"
)
plt.show()

# %% [markdown]
# On the 300 test images we check the identity $z_c = b_c + \operatorname{mean}_{x,y} M_c(x, y)$ for every
# class, then score the maps with the **pointing game** (Zhang et al., 2016): a map scores a hit when its
# maximum falls inside the object's mask (`explain.pointing_game`). Two baselines say what "good" means:
# a point drawn at random hits with probability equal to the object's share of the image, and a "map"
# that always points at the image centre hits whenever the object covers the centre.

# %%
cam_net.eval()
x_shapes = shapes_test.images.to(device)
y_shapes = torch.stack([lab[0] for lab in shapes_test.labels])
with torch.no_grad():
    feats = cam_features(x_shapes)  # [300, 32, 8, 8]
    logits = cam_net(x_shapes)
pred = logits.argmax(1).cpu()
cam_acc = metrics.accuracy(logits.cpu(), y_shapes).item()
# [3, 32] and [3]
cam_weight, cam_bias = (cam_head.weight.detach(), cam_head.bias.detach())
# the identity: spatial mean of M_c plus the bias is the logit of class c, for every class
for c in range(3):
    m_c = explain.class_activation_maps(
        feats, cam_weight, torch.full((300,), c, device=device)
    )
    torch.testing.assert_close(
        m_c.mean(dim=(1, 2)) + cam_bias[c], logits[:, c], rtol=1e-4, atol=1e-4
    )
cams = explain.class_activation_maps(
    feats, cam_weight, pred.to(device), size=32
).cpu()  # [300, 32, 32]
# [300, 32, 32] bool
object_masks = torch.stack([m[0] for m in shapes_test.instance_masks])
hits = explain.pointing_game(cams, object_masks)
hit_rate = hits.float().mean().item()
hit_near = (
    explain.pointing_game(cams, object_masks, tolerance=2).float().mean().item()
)
# hit rate of a point drawn uniformly at random
area = object_masks.float().mean().item()
yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
# a "map" that always points at the image centre
centre_map = -((yy - 15.5) ** 2 + (xx - 15.5) ** 2)
centre = (
    explain.pointing_game(centre_map.expand(300, 32, 32), object_masks)
    .float()
    .mean()
    .item()
)
print(f"test accuracy {cam_acc:.3f}")
print(
    f"pointing game: the CAM's maximum is on the object for {hit_rate:.1%} of the images ({hit_near:.1%} within 2 px)"
)
print(f"baselines: a random point {area:.1%}, the image centre {centre:.1%}")

# %%
assert cam_acc > 0.9, f"GAP CNN test accuracy {cam_acc:.3f}, expected > 0.9"
assert hit_rate > 0.7, (
    f"CAM pointing-game hit rate {hit_rate:.3f}, expected > 0.7"
)
assert hit_rate > centre + 0.2, (
    f"CAM hit rate {hit_rate:.3f} is not clearly above the centre baseline {centre:.3f}"
)

# %% [markdown]
# The classification itself is easy (test accuracy close to 1); where the network looks is the harder
# question, and the pointing game leaves room: the maximum of the CAM falls inside the shape far more
# often than at the image centre or at a random point, but not always. Below, the CAM of the predicted
# class is overlaid on 16 test images; the cross marks its maximum, green when it lies on the object
# and red when it misses.

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 8, figsize=(13, 3.9))
for i, ax in enumerate(axes.flat):
    ax.imshow(shapes_test.images[i].permute(1, 2, 0))
    ax.imshow(cams[i], cmap="magma", alpha=0.55)
    r, c = explain.map_argmax(cams[i : i + 1])[0].tolist()
    ax.plot(
        c,
        r,
        marker="x",
        color=viz.color(2 if hits[i] else 3),
        markersize=10,
        mew=3,
    )
    ok = "✓" if pred[i] == y_shapes[i] else "✗ (wrong class)"
    ax.set_title(f"{shapes_test.classes[pred[i]]} {ok}", fontsize=9)
    ax.axis("off")
fig.suptitle(
    "CAM of the predicted class on test images (× = its maximum: green on the object, red off it)"
)
plt.show()

# %% [markdown]
# Every class has its own map. For four test images, the maps of all three classes, with the logit
# $z_c$ that each map averages to (plus the bias): the predicted class's map lights up on the object;
# the other classes' maps are weak or negative there, because the features of, say, a triangle's
# corners argue *against* "circle".

# %%
with torch.no_grad():
    every_class = torch.stack(
        [
            explain.class_activation_maps(
                feats[:4],
                cam_weight,
                torch.full((4,), c, device=device),
                size=32,
            )
            for c in range(3)
        ],
        dim=1,
    ).cpu()  # [4, 3, 32, 32]

# %% tags=["hide-input"]
lim = every_class.abs().max().item()
fig, axes = plt.subplots(2, 8, figsize=(13, 3.9))
for i in range(4):
    row, col = divmod(i, 2)
    ax = axes[row, 4 * col]
    ax.imshow(shapes_test.images[i].permute(1, 2, 0))
    ax.set_title(f"test image {i}", fontsize=9)
    for c in range(3):
        ax = axes[row, 4 * col + 1 + c]
        ax.imshow(every_class[i, c], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(
            f"{shapes_test.classes[c]}: z = {logits[i, c].item():.1f}",
            fontsize=9,
        )
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "The class activation map of every class (red > 0, blue < 0, one colour scale)"
)
plt.show()

# %% [markdown]
# ### Grad-CAM: the same map from gradients, at any layer
#
# CAM needs a GAP + linear head, because its weights $w_{c,k}$ are read off that last layer. Grad-CAM
# (Selvaraju et al., 2017) gets the weights from gradients instead, so it works for any layer of any
# differentiable classifier. With $A_k$ the $K$ feature maps ($h\times w$) of the chosen layer and $z_c$
# the score of class $c$,
#
# $$
# \alpha_k^c = \frac{1}{hw}\sum_{x,y}\frac{\partial z_c}{\partial A_k(x,y)}, \qquad
# L^c(x,y) = \mathrm{ReLU}\Big(\sum_{k=1}^{K}\alpha_k^c A_k(x,y)\Big).
# $$
#
# $\alpha_k^c$ says how much feature map $k$ matters for class $c$; the ReLU keeps the locations that
# raise the score. For the last feature maps of our GAP + linear network,
# $z_c = b_c + \sum_k w_{c,k}\frac{1}{hw}\sum_{x,y} A_k(x,y)$, so
# $\partial z_c/\partial A_k(x,y) = w_{c,k}/(hw)$ at every position, $\alpha_k^c = w_{c,k}/(hw)$, and
# $L^c = \mathrm{ReLU}(M_c)/(hw)$: **Grad-CAM on the last block is CAM up to a positive scale** (and the
# ReLU). `explain.grad_cam` keeps the layer's output with a forward hook and differentiates the chosen
# classes' scores with respect to it (`torch.autograd.grad`); exercise 4 writes it from scratch. We check
# the identity on the trained network, then compute Grad-CAM at each of the three blocks, where CAM has
# no weights to offer, and play the pointing game with each.

# %%
hw = feats.shape[2] * feats.shape[3]  # 8 x 8 positions in the last feature maps
signed_grad_cam = explain.grad_cam(
    cam_net, cam_features, x_shapes, pred.to(device), relu=False
)
# [300, 8, 8]
cam_small = explain.class_activation_maps(feats, cam_weight, pred.to(device))
torch.testing.assert_close(
    signed_grad_cam * hw,
    cam_small,
    rtol=1e-5,
    atol=1e-5 * cam_small.abs().max().item(),
)
torch.testing.assert_close(
    explain.grad_cam(cam_net, cam_features, x_shapes, pred.to(device)) * hw,
    cam_small.clamp_min(0),
    rtol=1e-5,
    atol=1e-5 * cam_small.abs().max().item(),
)
print(
    f"Grad-CAM at the last block x (h w = {hw}) == CAM (signed, and after the ReLU), on 300 test images"
)
grad_cam_layers = {
    "block 1 (32×32)": cam_features[0],
    "block 2 (16×16)": cam_features[2],
    "block 3 (8×8)": cam_features[4],
}
grad_cams, grad_cam_hits = {}, {}
for name, layer in grad_cam_layers.items():
    grad_cams[name] = explain.grad_cam(
        cam_net, layer, x_shapes, pred.to(device), size=32
    ).cpu()
    grad_cam_hits[name] = (
        explain.pointing_game(grad_cams[name], object_masks)
        .float()
        .mean()
        .item()
    )
    print(
        f"Grad-CAM at {name}: pointing-game hit rate {grad_cam_hits[name]:.1%}"
    )
print(f"(CAM: {hit_rate:.1%}; the image centre: {centre:.1%})")

# %% tags=["hide-input"]
fig, axes = plt.subplots(4, 7, figsize=(13, 7.6))
for col in range(7):
    axes[0, col].imshow(shapes_test.images[col].permute(1, 2, 0))
    axes[0, col].set_title(
        f"predicted: {shapes_test.classes[pred[col]]}", fontsize=9
    )
    for row, name in enumerate(grad_cam_layers, start=1):
        axes[row, col].imshow(grad_cams[name][col], cmap="magma")
        axes[row, col].contour(
            object_masks[col].float(),
            levels=[0.5],
            colors=[viz.color(2)],
            linewidths=1,
        )
    for ax in axes[:, col]:
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
for row, name in enumerate(["test image", *grad_cam_layers]):
    axes[row, 0].set_ylabel(name, fontsize=9)
fig.suptitle(
    "Grad-CAM of the predicted class at the three blocks (bright: raises the score; green: the object)"
)
plt.show()

# %%
last, first = grad_cam_hits["block 3 (8×8)"], grad_cam_hits["block 1 (32×32)"]
assert last > centre + 0.2, (
    f"Grad-CAM (last block) hit rate {last:.3f}, expected > centre {centre:.3f} + 0.2"
)
assert last > first + 0.05, (
    f"Grad-CAM hit rate at the last block {last:.3f}, expected above the first block's {first:.3f} + 0.05"
)

# %% [markdown]
# The last block localizes best, and there Grad-CAM is CAM. Earlier blocks give finer maps, but less
# reliable ones: at block 1 the map fills some objects, shows only a few pixels at the corners of the
# squares, and picks up scattered background pixels; at block 2 it lights up parts of the outline, such
# as the top edge of a square or one side of a triangle. The features there are generic and only the
# blocks above turn them into evidence for a class, so their gradient weights say less. That is why
# Grad-CAM is usually computed at the last convolutional layer (Selvaraju et al. make the same choice).
# Chapter 14 (vision transformers) looks at attention maps, another way to ask where a network looks.
#
# ## Deeper is not automatically better: the degradation problem
#
# Stacking more layers should never make the *training* error worse: a deeper network can copy a
# shallower one and set its extra layers to the identity. Yet He et al. (2016) found that plain
# networks of 34 layers reached a **higher training error** than plain networks of 18 layers, and the
# gap did not close with longer training. This is the **degradation problem**, and it is easy to
# misdescribe:
#
# - It is **not overfitting**: overfitting means low training error and high test error. Here the
#   training error itself is higher.
# - It is **not explained by vanishing gradients**, although it is often presented that way. He et al.'s
#   plain networks had BatchNorm (Ioffe and Szegedy, 2015) after every convolution, which keeps the
#   forward signals at unit scale, and they checked that the backward gradients had healthy norms. Deep
#   plain networks are simply much harder for SGD to optimize; later work traced part of this to
#   gradients that become nearly uncorrelated noise with depth (Balduzzi et al., 2017).
#
# A residual block makes the identity the easy default: if $F(x) = 0$ the block passes its input on,
# so extra blocks cost nothing until they learn something useful.
#
# We repeat the experiment in miniature on the 8×8 digits, using the training split only (the question
# is about optimization). `cnn.ResNet` builds the same network with or without its shortcuts
# (`residual=False`). One block per stage gives 8 weight layers (the first convolution, 3 blocks of 2
# convolutions, the output layer), four blocks per stage give 26. We train three networks, plain-8,
# plain-26 and ResNet-26 (plain-26 plus shortcuts), all with BatchNorm after every convolution and all
# with the same 300 steps of SGD with momentum (batch 32, a warm-up-then-cosine learning rate peaking
# at 0.05), the same data order and the same initialization seed. To see whether the gap closes with
# longer training we compare the training loss, averaged over 20 steps, early (steps 61–80), midway
# (steps 141–160) and at the end (steps 281–300), and finally the loss and the error of each trained
# network on the whole training set. The diagram shows the three networks; the curved arrows are the
# shortcuts, each adding a block's input to its output.


# %% tags=["hide-input"]
def depth_row(ax, blocks_per_stage, residual, title):
    """One network: the stem, the first blocks, the others summarized, the head; shortcuts if residual."""
    blocks = {"stem": (0, 0, "conv 3×3, 1 → 8\n[8, 8, 8]", "conv")}
    edges, prev, last_sum = [], "stem", "stem"
    shown = (
        [(8, 8)] * 4 if blocks_per_stage == 4 else [(8, 8), (16, 4), (32, 2)]
    )
    for i, (ch, side) in enumerate(shown):
        x = 2.4 + 3.6 * i
        blocks[f"b{i}"] = (
            x,
            0,
            f"2× conv 3×3, {ch}\n[{ch}, {side}, {side}]",
            "conv",
        )
        edges.append((prev, f"b{i}"))
        prev = f"b{i}"
        if residual:
            blocks[f"+{i}"] = (x + 1.6, 0, "+", "op")
            edges += [(f"b{i}", f"+{i}"), (last_sum, f"+{i}", "skip")]
            prev = last_sum = f"+{i}"
    x = 2.4 + 3.6 * len(shown)
    if blocks_per_stage == 4:
        blocks["more"] = (x, 0, "8 more blocks\n16 ch /2, 32 ch /2", "other")
        edges.append((prev, "more"))
        prev, x = "more", x + 2.6
    blocks["head"] = (x, 0, "GAP + linear\n32 → 10", "linear")
    edges.append((prev, "head"))
    viz.diagram(
        blocks, edges, ax=ax, block_size=(2.2, 0.75), title=title, fontsize=8
    )


fig, axes = plt.subplots(3, 1, figsize=(13, 5.4))
depth_row(
    axes[0],
    1,
    False,
    "plain-8: one block per stage (8 weight layers; stride 2 where the channels double)",
)
depth_row(
    axes[1], 4, False, "plain-26: four blocks per stage (26 weight layers)"
)
depth_row(
    axes[2],
    4,
    True,
    "ResNet-26: plain-26 plus a shortcut around every block (1×1 convolutions where the shape changes)",
)
for ax in axes:
    ax.set_xlim(axes[2].get_xlim())
plt.show()

# %%
digit_splits = data.digits_splits(seed=0)
# 1,078 normalized 8x8 digits
x_digits, y_digits = digit_splits.tensors("train")
x_digits, y_digits = x_digits.to(device), y_digits.to(device)
DEPTH_STEPS = 300
WINDOWS = {
    "steps 61-80": slice(60, 80),
    "steps 141-160": slice(140, 160),
    "steps 281-300": slice(280, 300),
}


def train_depth(blocks, residual, steps=DEPTH_STEPS, seed=0):
    """Train a ResNet-style net with or without shortcuts on the digits; returns it and the per-step losses."""
    torch.manual_seed(seed)
    model = cnn.ResNet(
        (blocks,) * 3,
        (8, 16, 32),
        in_channels=1,
        num_classes=10,
        residual=residual,
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = optim.warmup_cosine(opt, warmup_steps=10, total_steps=steps)
    order = torch.Generator().manual_seed(seed)
    losses = []
    name = f"{'ResNet' if residual else 'plain'}-{6 * blocks + 2}"
    for _ in trange(steps, desc=name):
        idx = torch.randint(0, len(y_digits), (32,), generator=order).to(device)
        loss = F.cross_entropy(model(x_digits[idx]), y_digits[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


depth_runs = {
    "plain-8": train_depth(1, residual=False),
    "plain-26": train_depth(4, residual=False),
    "ResNet-26": train_depth(4, residual=True),
}
window_loss = {
    name: {w: float(np.mean(losses[sl])) for w, sl in WINDOWS.items()}
    for name, (_, losses) in depth_runs.items()
}
final_loss = {name: window_loss[name]["steps 281-300"] for name in depth_runs}
train_errors = {}  # misclassified training images of each trained network
print(
    f"{'training loss':13s}"
    + "".join(f"{w:>15s}" for w in WINDOWS)
    + "   whole training set: loss, error"
)
for name, (model, _) in depth_runs.items():
    with torch.no_grad():
        logits = model(x_digits)
    full_loss = F.cross_entropy(logits, y_digits).item()
    errors = train_errors[name] = int((logits.argmax(1) != y_digits).sum())
    print(
        f"{name:13s}"
        + "".join(f"{window_loss[name][w]:15.3f}" for w in WINDOWS),
        f"  {full_loss:.3f}, {errors} of {len(y_digits)} misclassified",
    )

# %% [markdown]
# Does the deep plain network fail because its gradients vanish? We measure, at initialization, the
# gradient of the loss with respect to each 3×3 convolution's weights, relative to the weights' size
# ($\lVert\nabla_W L\rVert / \lVert W\rVert$, the relative change one SGD step makes), for the 26-layer
# networks, and for a plain 26-layer network *without* BatchNorm as a contrast.


# %%
def relative_gradients(residual, norm="batch"):
    torch.manual_seed(0)
    model = cnn.ResNet(
        (4, 4, 4),
        (8, 16, 32),
        in_channels=1,
        num_classes=10,
        residual=residual,
        norm=norm,
    )
    model = model.to(device)
    F.cross_entropy(model(x_digits[:256]), y_digits[:256]).backward()
    convs = [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    return np.array(
        [(m.weight.grad.norm() / m.weight.norm()).item() for m in convs]
    )


grad_profiles = {
    "plain-26, BatchNorm": relative_gradients(False),
    "ResNet-26, BatchNorm": relative_gradients(True),
    "plain-26, no normalization": relative_gradients(False, norm=None),
}

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
styles = {"plain-8": (0, ":"), "plain-26": (0, "-"), "ResNet-26": (2, "-")}
for name, (_, losses) in depth_runs.items():
    k, ls = styles[name]
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    axes[0].plot(
        np.arange(10, len(losses) + 1),
        smooth,
        color=viz.color(k),
        ls=ls,
        lw=2,
        label=f"{name} ({final_loss[name]:.2f})",
    )
axes[0].set(
    xlabel="SGD step",
    ylabel="training loss (moving average of 10)",
    yscale="log",
    title="Same data, same steps: the deeper plain net trains worse",
)
axes[0].legend(title="training loss, steps 281-300")
for (name, prof), k in zip(grad_profiles.items(), [0, 2, 3], strict=True):
    axes[1].plot(
        np.arange(1, len(prof) + 1),
        prof,
        marker="o",
        ms=3,
        color=viz.color(k),
        label=name,
    )
axes[1].set(
    xlabel="3×3 convolution (input side → output side)",
    ylabel="‖∇W‖ / ‖W‖ at initialization",
    yscale="log",
    title="With BatchNorm the gradients do not vanish",
)
axes[1].legend()
plt.show()

# %%
plain_bn = grad_profiles["plain-26, BatchNorm"]
print(
    f"plain-26 with BatchNorm: relative gradient {plain_bn[0]:.2g} at the first 3x3 conv, {plain_bn[-1]:.2g} at the last"
)
for w in (
    "steps 61-80",
    "steps 281-300",
):  # early and at the end: the gap does not close
    plain8, plain26, res26 = (
        window_loss[n][w] for n in ("plain-8", "plain-26", "ResNet-26")
    )
    assert plain26 > 3 * plain8, (
        f"{w}: plain-26 loss {plain26:.3f}, expected > 3 x plain-8's {plain8:.3f}"
    )
    assert res26 < plain26 / 3, (
        f"{w}: ResNet-26 loss {res26:.3f}, expected < plain-26's {plain26:.3f} / 3"
    )
assert train_errors["plain-26"] > train_errors["plain-8"], (
    f"training errors {train_errors}"
)
assert final_loss["ResNet-26"] < final_loss["plain-8"] + 0.05, (
    f"ResNet-26 loss {final_loss['ResNet-26']:.3f}, expected within 0.05 of plain-8's {final_loss['plain-8']:.3f}"
)
assert plain_bn[0] > plain_bn[-1], (
    "with BatchNorm the first layers should not get smaller gradients than the last"
)

# %% [markdown]
# The 26-layer plain network trains worse all the way through. Early on (steps 61–80) its training loss
# is several times the 8-layer network's; at the end of the 300 steps both losses are much smaller, but
# the ratio has grown (to more than ten in our run), and plain-26 still misclassifies some of its own
# training images, more than plain-8 does (none, in our run). So the gap narrows in absolute terms as
# both fit the training set, but it does not close within the training we ran. (We also ran the same
# code once with `DEPTH_STEPS = 600`, not part of this notebook to keep it short: plain-26 ended at
# about ten times plain-8's training loss again.) The deep network could in principle represent everything the
# shallow one does, so this is an optimization failure, and it is not short of gradient: with BatchNorm
# its first layers receive *larger* relative gradients than its last ones (deep plain BatchNorm networks
# tend to have growing, not vanishing, gradients; Yang et al., 2019). Tiny gradients are the problem of
# the network *without* normalization, a different one that BatchNorm already fixed. Adding the
# shortcuts, with nothing else changed, removes the degradation: the 26-layer ResNet trains about as
# well as the 8-layer plain network at every stage. On ImageNet, deeper ResNets go on to *lower*
# training and test error than shallower ones, which is what made 50 to 152 layers useful.
#
# ## Transfer learning
#
# Training a CNN from scratch needs many labelled images. The usual way around it is **transfer
# learning**: train (or download) a network on a large source dataset, ImageNet in practice, and reuse
# its features for the task at hand:
#
# - **Linear probe (feature extraction):** freeze the network, replace the last layer, and train only
#   a linear classifier on the frozen features.
# - **Fine-tuning:** start from the pretrained weights and train all (or the last few) layers on the
#   new data, with a new last layer and a smaller learning rate, often a tenth of the original one, so
#   that the pretrained features are adjusted rather than overwritten.
#
# Which to choose depends on how much data there is and how close it is to the source:
#
# | | similar to the source data | very different from the source data |
# |---|---|---|
# | **very little data** | linear classifier on the top layer | hard: try linear classifiers on features from several depths |
# | **quite a lot of data** | fine-tune a few of the top layers | fine-tune more layers, or all of them |
#
# The early layers (edges, colours, textures) transfer to almost anything; the top layers are specific
# to the source classes (Yosinski et al., 2014). With very little data, fine-tuning everything risks
# fitting the few examples; with very different data, the top features may be useless, so earlier ones
# may serve better.
#
# The same questions arise when a deployed model receives new data. The options are to continue
# training on the new data only (fast, but the network tends to forget the old task), to train on old
# and new data together, or to keep the old model and ensemble it with a new one fitted on the new data
# (or on old and new data).
#
# ### An experiment: few-shot digits
#
# No ImageNet weights here, so we pretrain in the notebook. Plain 8×8 digits are too easy for this: with
# ten labelled examples per class, a small network trained from scratch already does well and
# pretraining has little to add. We make the task harder and more image-like: each digit is pasted at a
# random position on a 24×24 canvas with Gaussian noise ($\sigma = 0.3$), so a network must find the
# digit before it can read it.
#
# - **Source task:** digits 0–4, about 720 training digits, pasted at new random positions in every epoch
#   (a cheap data augmentation: the network never sees the same image twice).
# - **Target task:** digits 5–9 with only **5 labelled images per class**, and 400 test images.
#
# The backbone is three Conv-BN-ReLU layers with two max-pools and a *global max pool*: the digit can be
# anywhere and is small, and the maximum asks "is this pattern present somewhere?" where an average
# would dilute it with empty background. The diagram after the pretraining shows the whole setup.

# %%
x_all, y_all = data.load_digits()


def place_digits(images, gen, canvas=24, noise=0.3):
    """Paste each 8x8 digit at a random position of a canvas x canvas image and add N(0, noise^2) noise."""
    n = len(images)
    out = torch.zeros(n, 1, canvas, canvas)
    top = torch.randint(0, canvas - 7, (n,), generator=gen)
    left = torch.randint(0, canvas - 7, (n,), generator=gen)
    rows = (top[:, None] + torch.arange(8))[:, :, None]  # [n, 8, 1]
    cols = (left[:, None] + torch.arange(8))[:, None, :]  # [n, 1, 8]
    out[torch.arange(n)[:, None, None], 0, rows, cols] = images[:, 0]
    return out + noise * torch.randn(out.shape, generator=gen)


def make_backbone():
    return nn.Sequential(
        cnn.ConvNormAct(1, 8),
        nn.MaxPool2d(2),
        cnn.ConvNormAct(8, 16),
        nn.MaxPool2d(2),
        cnn.ConvNormAct(16, 32),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    )  # [N, 1, 24, 24] -> [N, 32]


class PlacedDigitBatches:
    """Batches of (placed digits, labels); every epoch pastes every digit at new random positions."""

    def __init__(self, images, labels, batch_size, seed):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        # batches per epoch (ceil)
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.labels), generator=self.gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield place_digits(self.images[idx], self.gen), self.labels[idx]


source_train, source_test = data.split_indices(
    len(y_all), (0.8, 0.2), seed=0, stratify=y_all
)
source_train, source_test = (
    source_train[y_all[source_train] < 5],
    source_test[y_all[source_test] < 5],
)
src_loader = PlacedDigitBatches(
    x_all[source_train], y_all[source_train], batch_size=64, seed=0
)
# one fixed placement
x_src_test = place_digits(x_all[source_test], torch.Generator().manual_seed(5))
src_val = DataLoader(
    TensorDataset(x_src_test, y_all[source_test]), batch_size=256
)

torch.manual_seed(0)
pretrained = nn.Sequential(make_backbone(), nn.Linear(32, 5)).to(device)
pre_epochs, pre_lr = 20, 5e-3
pre_opt = torch.optim.Adam(pretrained.parameters(), lr=pre_lr)
pre_sched = optim.warmup_cosine(
    pre_opt, warmup_steps=20, total_steps=pre_epochs * len(src_loader)
)
pre_history = train.fit(
    pretrained,
    src_loader,
    epochs=pre_epochs,
    optimizer=pre_opt,
    loss_fn=F.cross_entropy,
    val_loader=src_val,
    metrics={"acc": metrics.accuracy},
    scheduler=pre_sched,
    scheduler_step="batch",
    desc="pretraining on digits 0-4",
)
pre_history.plot(title="Source task: digits 0-4 placed on a noisy 24×24 canvas")
plt.show()
print(
    f"source test accuracy {pre_history.last('val_acc'):.3f} ({len(source_train)} digits, {pre_epochs} placements each)"
)

# %% tags=["hide-input"]
viz.diagram(
    {
        "src": (
            0,
            0,
            f"source: digits 0–4\n[1, 24, 24], {len(source_train)} digits",
            "io",
        ),
        "bb": (
            3.2,
            0,
            "backbone: 3 Conv-BN-ReLU,\n2 max-pools, global max-pool",
            "conv",
        ),
        "hs": (6.4, 0, "linear 32 → 5\n(source classes)", "linear"),
        "tgt": (0, -1.7, "target: digits 5–9\n25 images (5 per class)", "io"),
        "bt": (
            3.2,
            -1.7,
            "the same backbone: frozen (probe)\nor trained (fine-tune)",
            "conv",
        ),
        "ht": (6.4, -1.7, "new linear 32 → 5\n(target classes)", "head"),
    },
    [
        ("src", "bb"),
        ("bb", "hs", "-", "[32]"),
        ("tgt", "bt"),
        ("bt", "ht", "-", "[32]"),
        ("bb", "bt", "--", "copy the weights"),
    ],  # fmt: skip
    block_size=(2.6, 0.8),
    fontsize=8,
    title="Transfer learning: pretrain on the source task, keep the backbone, give it a new head",
)
plt.show()

# %% [markdown]
# Now the target task. For each of three seeds we draw 5 images per class of digits 5–9 (25 images in
# all) from a pool of 250, and compare six ways to get a classifier:
#
# 1. **probe, random features:** a linear classifier on the features of an untrained backbone (how
#    much does the architecture alone give?);
# 2. **from scratch:** the whole network, randomly initialized, trained on the 25 images;
# 3. **probe, pretrained:** a linear classifier on the frozen pretrained features;
# 4. **fine-tune, new head:** the pretrained backbone with a new, randomly initialized linear layer,
#    everything trained;
# 5. **fine-tune after probe:** the same, but the new layer starts from the probe of method 3 ("linear
#    probe, then fine-tune", Kumar et al., 2022);
# 6. **fine-tune after probe, BN frozen:** the same, with the backbone's BatchNorm layers kept in eval
#    mode: they normalize with the running statistics of the source data and do not update them (their
#    scales and shifts still train). In methods 4 and 5 they are in training mode: they normalize with
#    the statistics of the 25 target images and overwrite the running statistics with them.
#
# The whole-network methods get 50 full-batch Adam steps, the probes 200. Every method gets its own
# small grid of learning rates (the probes and training from scratch around the pretraining rate
# $5\cdot10^{-3}$, the fine-tuning methods at that rate and at $2\cdot10^{-3}$), and the one with the
# best validation accuracy, averaged over the three seeds, is kept. The validation set (250 placed
# digits 5–9) is far larger than the 25 training images, a luxury a real few-shot task does not have,
# but it makes the comparison fair: every method is judged at its own best setting, and the 396 test
# images are used only for the final numbers.

# %%
target = torch.nonzero(y_all >= 5).flatten()
target = target[
    torch.randperm(len(target), generator=torch.Generator().manual_seed(1))
]
target_pool, target_val, target_test = (
    target[:250],
    target[250:500],
    target[500:],
)
x_tgt_val = place_digits(x_all[target_val], torch.Generator().manual_seed(3))
x_tgt_test = place_digits(x_all[target_test], torch.Generator().manual_seed(2))
# evaluated together: validation first
x_tgt_eval = torch.cat([x_tgt_val, x_tgt_test]).to(device)
y_tgt_val, y_tgt_test = (
    (y_all[target_val] - 5).to(device),
    (y_all[target_test] - 5).to(device),
)
n_val = len(target_val)
backbone = pretrained[0].eval()
with torch.no_grad():
    pretrained_eval_features = backbone(x_tgt_eval)


def val_test_accuracy(logits):
    """Accuracy on the validation and on the test images, from logits of x_tgt_eval."""
    return (
        metrics.accuracy(logits[:n_val], y_tgt_val).item(),
        metrics.accuracy(logits[n_val:], y_tgt_test).item(),
    )


def linear_probe(train_features, y, eval_features, lr, steps=200):
    """Fit a linear classifier on frozen features; returns it and its (validation, test) accuracy."""
    head = nn.Linear(train_features.shape[1], 5).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(train_features), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head, val_test_accuracy(head(eval_features))


def train_all_layers(body, head, x, y, lr, freeze_bn=False, steps=50):
    """Train body + head on the few-shot images; returns the (validation, test) accuracy."""
    model = nn.Sequential(body, head).to(device).train()
    if freeze_bn:  # normalize with the source's running statistics and leave them unchanged
        for m in body.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return val_test_accuracy(model(x_tgt_eval))


SHOTS, SEEDS = 5, (0, 1, 2)
PROBE_LRS, SCRATCH_LRS, FINE_TUNE_LRS = (
    (3e-3, 1e-2, 3e-2),
    (2e-3, 5e-3, 2e-2),
    (2e-3, 5e-3),
)
few_shot = {}  # seed -> (images, labels, pretrained features, random backbone)
results = {}  # (method, lr) -> [(validation, test) accuracy per seed]
probes = {}  # (lr, seed) -> the pretrained probe, the start of method 5


def record(method, lr, accuracy):
    results.setdefault((method, lr), []).append(accuracy)


for seed in SEEDS:
    pick_gen = torch.Generator().manual_seed(100 + seed)
    picks = [target_pool[y_all[target_pool] == d] for d in range(5, 10)]
    shots = torch.cat(
        [p[torch.randperm(len(p), generator=pick_gen)[:SHOTS]] for p in picks]
    )
    x_few, y_few = (
        place_digits(x_all[shots], pick_gen).to(device),
        (y_all[shots] - 5).to(device),
    )
    torch.manual_seed(seed)
    random_body = make_backbone().to(device).eval()
    with torch.no_grad():  # frozen features for the probes
        few_features, random_train, random_eval = (
            backbone(x_few),
            random_body(x_few),
            random_body(x_tgt_eval),
        )
    few_shot[seed] = (x_few, y_few)
    for lr in PROBE_LRS:
        record(
            "probe, random features",
            lr,
            linear_probe(random_train, y_few, random_eval, lr)[1],
        )
        probes[lr, seed], accuracy = linear_probe(
            few_features, y_few, pretrained_eval_features, lr
        )
        record("probe, pretrained", lr, accuracy)


def select(method):
    """The learning rate with the best mean validation accuracy, and its per-seed test accuracies."""
    lrs = [lr for m, lr in results if m == method]
    best = max(lrs, key=lambda lr: np.mean([v for v, _ in results[method, lr]]))
    return best, [t for _, t in results[method, best]]


probe_lr, _ = select("probe, pretrained")
for seed in trange(len(SEEDS), desc="few-shot seeds"):
    x_few, y_few = few_shot[seed]
    for lr in SCRATCH_LRS:
        torch.manual_seed(seed)
        record(
            "from scratch",
            lr,
            train_all_layers(
                make_backbone(), nn.Linear(32, 5), x_few, y_few, lr
            ),
        )
    for lr in FINE_TUNE_LRS:
        torch.manual_seed(seed)
        new_head = nn.Linear(32, 5)
        record(
            "fine-tune, new head",
            lr,
            train_all_layers(
                copy.deepcopy(backbone), new_head, x_few, y_few, lr
            ),
        )
        for method, freeze in [
            ("fine-tune after probe", False),
            ("fine-tune after probe, BN frozen", True),
        ]:
            start = copy.deepcopy(probes[probe_lr, seed])
            record(
                method,
                lr,
                train_all_layers(
                    copy.deepcopy(backbone), start, x_few, y_few, lr, freeze
                ),
            )

METHODS = (
    "probe, random features",
    "from scratch",
    "probe, pretrained",
    "fine-tune, new head",
    "fine-tune after probe",
    "fine-tune after probe, BN frozen",
)
print(f"{'validation accuracy (mean of 3 seeds)':34s} at each learning rate")
for method in METHODS:
    cells = "  ".join(
        f"{lr:g}: {np.mean([v for v, _ in results[m, lr]]):.3f}"
        for m, lr in results
        if m == method
    )
    print(f"  {method:32s} {cells}")
chosen = {method: select(method) for method in METHODS}
transfer = {method: accs for method, (_, accs) in chosen.items()}
mean_acc = {method: float(np.mean(accs)) for method, accs in transfer.items()}
print("test accuracy at the learning rate selected on validation")
for method, (lr, accs) in chosen.items():
    per_seed = " ".join(f"{a:.3f}" for a in accs)
    print(
        f"  {method:32s} lr {lr:<7g} per seed {per_seed}   mean {mean_acc[method]:.3f}"
    )

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(12, 3.8))
for k, (name, accs) in enumerate(transfer.items()):
    ax.bar(k, mean_acc[name], color=viz.color(k), alpha=0.8)
    ax.scatter(
        [k] * len(accs),
        accs,
        color="black",
        zorder=3,
        s=14,
        label="one seed" if k == 0 else None,
    )
    ax.text(
        k,
        max(accs) + 0.015,
        f"mean {mean_acc[name]:.2f}",
        ha="center",
        fontsize=9,
    )
ax.axhline(
    0.2, color=viz.color("reference"), ls=":", label="chance (5 classes)"
)
ax.set_xticks(
    range(len(transfer)),
    [name.replace(", BN", ",\nBN") for name in transfer],
    fontsize=8,
)
ax.set(
    ylabel="target test accuracy",
    ylim=(0, max(mean_acc.values()) + 0.12),
    title=f"Digits 5–9 from {SHOTS} labelled images per class (learning rates selected on validation; "
    "mean of 3 seeds, dots: single seeds)",
)
ax.legend(loc="upper left")
plt.show()

# %%
gain_ft = mean_acc["fine-tune after probe"] - mean_acc["from scratch"]
gain_probe = mean_acc["probe, pretrained"] - mean_acc["probe, random features"]
print(
    f"fine-tune - from scratch: {gain_ft:+.3f};  pretrained probe - random probe: {gain_probe:+.3f}"
)
assert gain_ft > 0.08, (
    f"fine-tuning beats training from scratch by {gain_ft:.3f} on average, expected > 0.08"
)
assert gain_probe > 0.05, (
    f"pretrained features beat random ones by {gain_probe:.3f} in a probe, expected > 0.05"
)

# %% [markdown]
# With 25 labelled images, what was learned on digits 0–4 is worth a lot on digits 5–9. Training from
# scratch stays near chance at every learning rate of its grid, so its failure is not the price of a
# badly chosen rate. A linear classifier on the pretrained features does much better, and the probe on
# random features, also near chance, shows that the architecture alone is not the reason. Fine-tuning
# the whole network adds a few points on top of the probe. The source and target tasks are close (the
# same kind of images, different classes), the top-left cell of the decision table, and the linear
# probe is indeed the first thing to try there.
#
# Two controls change less than one might expect. With its own learning rate selected on validation,
# fine-tuning from a new, randomly initialized head does about as well as fine-tuning from the probe:
# here the random head does not spoil the features, provided the rate suits it (Kumar et al. (2022)
# find the benefit of probing first mostly on data unlike the training data). And fine-tuning with the
# BatchNorm layers frozen in eval mode scores about the same as letting them take the statistics of the
# 25 target images, plausibly because the target digits are pasted on the same noisy canvas as the
# source digits, so the source statistics still fit, and because one batch of all 25 images gives fair
# estimates. Freezing them should matter more when the target images look different or the batches are
# small. The differences among the three fine-tuning variants are within the spread of the seeds, and the
# absolute accuracies stay modest (five examples per class is very little, and the pretraining was short).
#
# ## Summary
#
# - A convolution is a bank of small filters applied at every position: a dot product per window, or
#   equivalently one matrix product of the unfolded windows (im2col) with the flattened kernels. Deep
#   learning's "convolution" is a cross-correlation. It has $O(CK^2+1)$ parameters whatever the image
#   size, and it is translation-equivariant.
# - Output size: $\lfloor (W + 2P - D(K-1) - 1)/S\rfloor + 1$; the floor matters. Receptive field:
#   $r_\ell = r_{\ell-1} + (K_\ell-1)D_\ell j_{\ell-1}$, growing faster after every stride; the effective
#   receptive field is concentrated in its centre.
# - Pooling summarizes windows (max or mean) without parameters; strided convolutions are the learned
#   alternative.
# - The classic networks in one line each: LeNet-5 (conv, pool, fully connected; 61,706 parameters),
#   AlexNet (the same, scaled up, with ReLU and dropout; 61.1 M, 96 % in the fully connected layers),
#   VGG (only 3×3 convolutions; 138.4 M, 89 % in the fully connected layers, 99 % of the compute in the
#   convolutions), Inception (parallel branches with 1×1 reductions), ResNet (residual blocks, basic and
#   bottleneck, GAP head; 11.7 M for ResNet-18).
# - Global average pooling replaces the fully connected head: few parameters, any input size, and class
#   activation maps $M_c = \sum_k w_{c,k} f_k$, whose spatial mean plus the bias is the logit. Grad-CAM
#   takes the weights from the gradient of the class score instead, $\alpha_k^c = \operatorname{mean}_{x,y}
#   \partial z_c/\partial A_k$, so it works at any layer; on the last block of a GAP + linear network it
#   is CAM up to a positive scale.
# - The degradation problem is a training-error (optimization) problem of deep *plain* networks. It
#   happens with BatchNorm and healthy gradients, and in our miniature it persists over 300 steps
#   (smaller in absolute terms, not in ratio); residual connections remove it.
# - With few labels, reuse a pretrained network: a linear probe or a fine-tuning that starts from the
#   probe beats training from scratch, each compared at its own learning rate selected on validation;
#   the decision table says which, depending on data size and similarity.
#
# Rules of thumb that follow: stack 3×3 convolutions (Conv → BN → ReLU), halve the resolution with a
# stride or a pool while doubling the channels, end with GAP and one linear layer, use residual
# connections for depth, and control overfitting with data, augmentation and regularization rather than
# by making the network small.
#
# ## Exercises
#
# Where an exercise asks for code or a number, its cell gives you a stub to fill (a function that
# raises `NotImplementedError`, or `exercises.TODO`) and a check from `course_lib.exercises` that
# says in one line what is wrong: not written yet, an error, a wrong shape, or the first example whose
# value differs from a reference (PyTorch's own layers, its FLOP counter, `course_lib.explain`, or a
# formula given in the exercise), with both values. The solution is in the collapsed cell after each
# exercise and passes the same check. Questions that ask *why* have written answers there.
#
# ### Exercise 1: depthwise-separable convolutions
#
# MobileNets (Howard et al., 2017) replace a 3×3 convolution from $C$ to $O$ channels by a **depthwise**
# 3×3 convolution (one filter per input channel, `groups=C`) followed by a **pointwise** 1×1 convolution.
#
# (a) Write `separable_costs(c_in, c_out, side)`: by formula, the parameters and the multiply-adds of
# both on a `side`×`side` map (stride 1, padding 1, no biases), as a tuple
# `(params_standard, params_separable, macs_standard, macs_separable)`. The check builds the layers with
# `nn.Conv2d` and counts their parameters, and their multiply-adds with PyTorch's FLOP counter
# (`torch.utils.flop_counter.FlopCounterMode`, which counts two FLOPs per multiply-add).
#
# (b) Write `depthwise_by_channel(x, weight)`: the depthwise convolution (padding 1) computed as $C$
# separate single-channel convolutions, each channel with its own filter `weight[i]` of shape
# `[1, 3, 3]`. The check compares it with `F.conv2d(x, weight, padding=1, groups=C)`.
#
# How many times fewer parameters does the separable version have for $C = 64$, $O = 128$?


# %%
def measured_costs(c_in, c_out, side):
    """(params_standard, params_separable, macs_standard, macs_separable) counted on the layers themselves."""
    with torch.device("meta"):  # shapes only
        standard = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        separable = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )
        x = torch.empty(1, c_in, side, side)
    macs = []
    for layer in (standard, separable):
        with FlopCounterMode(display=False) as counter:
            layer(x)
        macs.append(counter.get_total_flops() // 2)
    return (
        classic.count_parameters(standard),
        classic.count_parameters(separable),
        macs[0],
        macs[1],
    )


cost_cases = [(64, 128, 16), (3, 8, 5), (32, 32, 7)]
gen_ex = torch.Generator().manual_seed(0)
depthwise_cases = [
    (
        torch.randn(2, 4, 6, 6, generator=gen_ex),
        torch.randn(4, 1, 3, 3, generator=gen_ex),
    ),
    (
        torch.randn(1, 64, 16, 16, generator=gen_ex),
        torch.randn(64, 1, 3, 3, generator=gen_ex),
    ),
]


def depthwise_reference(x, weight):
    return F.conv2d(x, weight, padding=1, groups=x.shape[1])


def separable_costs(c_in, c_out, side):
    raise NotImplementedError  # your code: (params_standard, params_separable, macs_standard, macs_separable)


def depthwise_by_channel(x, weight):
    raise NotImplementedError  # your code: x [N, C, H, W], weight [C, 1, 3, 3] -> [N, C, H, W]


print(
    exercises.check_function(
        separable_costs, cost_cases, reference=measured_costs
    )
)
print(
    exercises.check_function(
        depthwise_by_channel, depthwise_cases, reference=depthwise_reference
    )
)


# %% tags=["hide-cell"]
def separable_costs(c_in, c_out, side):
    params_std, params_sep = 9 * c_in * c_out, 9 * c_in + c_in * c_out
    # stride 1 and "same" padding: every weight is used once per output pixel
    return (
        params_std,
        params_sep,
        side * side * params_std,
        side * side * params_sep,
    )


def depthwise_by_channel(x, weight):
    channels = [
        F.conv2d(x[:, i : i + 1], weight[i : i + 1], padding=1)
        for i in range(x.shape[1])
    ]
    return torch.cat(channels, dim=1)


exercises.check_function(
    separable_costs, cost_cases, reference=measured_costs
).assert_passed()
exercises.check_function(
    depthwise_by_channel, depthwise_cases, reference=depthwise_reference
).assert_passed()
p_std, p_sep, macs_std, macs_sep = separable_costs(64, 128, 16)
print(f"standard 3x3: {p_std:,} parameters, {macs_std:,} MACs")
print(
    f"depthwise + pointwise: {p_sep:,} parameters, {macs_sep:,} MACs ({p_std / p_sep:.1f}x fewer)"
)
# The ratio is 9 C O / (9 C + C O) = 9 O / (9 + O), close to 9 (a 3x3 kernel's taps) when O >> 9.

# %% [markdown]
# ### Exercise 2: a dense block
#
# Write a DenseNet block: $L$ layers, each BN → ReLU → 3×3 convolution (padding 1, no bias) producing
# $k$ channels from the concatenation of the block's input and all earlier layers' outputs; the block
# returns the concatenation of its input and all $L$ outputs. The check builds blocks for a few
# $(C_0, k, L)$ and compares three facts with what they must be: the output shape
# $[N, C_0 + Lk, H, W]$, the parameter count
# $\sum_{\ell=0}^{L-1}\big(2(C_0+\ell k) + 9k(C_0+\ell k)\big)$ (BatchNorm's scale and shift, then the
# convolution), and whether the first $C_0$ output channels are the input, unchanged.


# %%
def dense_block_facts(c0, growth, layers):
    """What the check looks at in DenseBlock(c0, growth, layers)."""
    block = DenseBlock(c0, growth, layers)
    x = torch.randn(2, c0, 8, 8, generator=torch.Generator().manual_seed(0))
    out = block(x)
    return {
        "output shape": list(out.shape),
        "parameters": classic.count_parameters(block),
        "input passed on": torch.equal(out[:, :c0], x),
    }


def dense_block_expected(c0, growth, layers):
    return {
        "output shape": [2, c0 + layers * growth, 8, 8],
        "parameters": sum(
            2 * (c0 + i * growth) + 9 * growth * (c0 + i * growth)
            for i in range(layers)
        ),
        "input passed on": True,
    }


dense_cases = [(16, 12, 4), (3, 5, 2), (8, 4, 1)]


class DenseBlock(nn.Module):
    def __init__(self, c0, growth, layers):
        super().__init__()
        raise NotImplementedError  # your code: the L layers (BN -> ReLU -> 3x3 conv to `growth` channels)

    def forward(self, x):
        raise NotImplementedError  # your code: each layer sees x and every earlier layer's output


exercises.check_function(
    dense_block_facts,
    dense_cases,
    reference=dense_block_expected,
    name="DenseBlock",
)


# %% tags=["hide-cell"]
class DenseBlock(nn.Module):  # noqa: F811 (the solution replaces the stub)
    def __init__(self, c0, growth, layers):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(c0 + i * growth),
                nn.ReLU(),
                nn.Conv2d(c0 + i * growth, growth, 3, padding=1, bias=False),
            )
            for i in range(layers)
        )

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            # every layer sees all earlier maps
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


exercises.check_function(
    dense_block_facts,
    dense_cases,
    reference=dense_block_expected,
    name="DenseBlock",
).assert_passed()
c0, k, n_layers = 16, 12, 4
print(
    f"output channels {c0 + n_layers * k} = {c0} + {n_layers} x {k};",
    f"parameters {classic.count_parameters(DenseBlock(c0, k, n_layers)):,}",
)

# %% [markdown]
# ### Exercise 3: compound scaling
#
# (a) Write `conv_macs(model, side)`: the multiply-adds of all the convolutions of `model` on one
# `side`×`side` RGB image, counted with forward hooks (a convolution costs its number of outputs times
# $C_\text{in}/\text{groups}\cdot K_h K_w$). The models live on the `meta` device, so that nothing is
# computed: make the input with `torch.empty(1, 3, side, side, device="meta")`. The check compares your
# count with PyTorch's FLOP counter on a few models, one with a grouped convolution and one with linear
# layers, which do not count.
#
# (b) Take a small CNN: a 3×3 stem, then three stages of 5 Conv-BN-ReLU blocks at 32, 64 and 128
# channels, with stride 2 at the start of the second and third stages, on 64×64 inputs. Scale it with
# EfficientNet's rule for $\phi = 0, 1, 2, 3$: blocks per stage $\times\alpha^\phi$, channels
# $\times\beta^\phi$ and input side $\times\gamma^\phi$ (each rounded to an integer), with
# $\alpha=1.2, \beta=1.1, \gamma=1.15$. Compare the growth of the multiply-adds with
# $(\alpha\beta^2\gamma^2)^\phi \approx 2^\phi$. Why is the match only approximate?


# %%
def flop_counter_macs(model, side):
    """Multiply-adds of the convolutions alone, from PyTorch's FLOP counter (2 FLOPs per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, side, side, device="meta"))
    return (
        counter.get_flop_counts()["Global"].get(torch.ops.aten.convolution, 0)
        // 2
    )


with torch.device("meta"):
    macs_cases = [
        (
            nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1),
            ),
            12,
        ),
        (
            nn.Sequential(
                cnn.ConvNormAct(3, 12),
                nn.Conv2d(12, 12, 3, groups=12),
                nn.Conv2d(12, 5, 1),
            ),
            9,
        ),
        (classic.alexnet(), 224),
    ]


def conv_macs(model, side):
    raise NotImplementedError  # your code: register forward hooks on the nn.Conv2d modules, run, count


exercises.check_function(conv_macs, macs_cases, reference=flop_counter_macs)


# %% tags=["hide-cell"]
def conv_macs(model, side):
    """Multiply-adds of the convolutions of model on one side x side image (via forward hooks)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k_h, k_w = module.kernel_size
        total += (
            output.numel() * module.in_channels // module.groups * k_h * k_w
        )

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    model(torch.empty(1, 3, side, side, device="meta"))
    for h in handles:
        h.remove()
    return total


exercises.check_function(
    conv_macs, macs_cases, reference=flop_counter_macs
).assert_passed()


def scaled_cnn(phi, alpha=1.2, beta=1.1, blocks=5, widths=(32, 64, 128)):
    n_blocks = round(blocks * alpha**phi)
    widths = [round(c * beta**phi) for c in widths]
    layers, c = [cnn.ConvNormAct(3, widths[0])], widths[0]
    for stage, width in enumerate(widths):
        for b in range(n_blocks):
            layers.append(
                cnn.ConvNormAct(
                    c, width, stride=2 if stage > 0 and b == 0 else 1
                )
            )
            c = width
    return nn.Sequential(*layers)


with torch.device("meta"):
    base = conv_macs(scaled_cnn(0), 64)
    for phi in range(4):
        side = round(64 * 1.15**phi)
        ratio = conv_macs(scaled_cnn(phi), side) / base
        rule = (1.2 * 1.1**2 * 1.15**2) ** phi
        print(
            f"phi = {phi}: input {side}x{side}, MACs x{ratio:.2f}, (alpha beta^2 gamma^2)^phi = {rule:.2f}"
        )
        assert abs(ratio / rule - 1) < 0.15
print(
    "The rounding of depth, widths and input size to integers, and the stem that is not scaled, make it approximate."
)

# %% [markdown]
# ### Exercise 4: Grad-CAM from scratch
#
# (a) Write `grad_cam_scratch(model, layer, x, classes)` without `course_lib.explain`: register a forward
# hook on `layer` that keeps its output, compute the scores $z_{n, c_n}$ of the given classes, take their
# gradient with respect to the kept output (`torch.autograd.grad`), and form
# $\mathrm{ReLU}(\sum_k \alpha_k A_k)$. The check compares it with `explain.grad_cam` on the middle and
# the last block of the shapes network (`cam_features[2]`, `cam_features[4]`) for the true classes of
# test images.
#
# (b) The digits backbone of the transfer experiment ends with a global *max* pool, so CAM's identity
# (logit = mean of the map + bias) does not hold for it. Work out what Grad-CAM gives on the output of its
# last block (`pretrained[0][4]`, 6×6 maps): at how many of the 36 positions of a map $A_k$ is
# $\partial z_c / \partial A_k(x, y)$ non-zero, and what is it there? Give the number as
# `positions_with_gradient`, then check the consequence numerically on 64 placed target digits.

# %%
x_ex, y_ex = x_shapes[:64], y_shapes[:64].to(device)
grad_cam_cases = [
    (cam_net, cam_features[2], x_ex, y_ex),
    (cam_net, cam_features[4], x_ex[:16], y_ex[:16]),
]
# sets the tolerance
gc_scale = explain.grad_cam(cam_net, cam_features[2], x_ex, y_ex).max().item()


def grad_cam_scratch(model, layer, x, classes):
    raise NotImplementedError  # your code: [N, h, w] maps, detached


# (b): how many of a 6x6 map's 36 positions get a gradient?
positions_with_gradient = exercises.TODO

print(
    exercises.check_function(
        grad_cam_scratch,
        grad_cam_cases,
        reference=explain.grad_cam,
        rtol=1e-5,
        atol=1e-5 * gc_scale,
    )
)
print(
    exercises.check_value(
        positions_with_gradient, 1, name="positions_with_gradient"
    )
)


# %% tags=["hide-cell"]
def grad_cam_scratch(model, layer, x, classes):
    kept = []
    handle = layer.register_forward_hook(
        lambda module, inputs, output: kept.append(output)
    )
    try:
        logits = model(x)
    finally:
        handle.remove()
    (activations,) = kept  # [N, K, h, w]
    score = logits[
        torch.arange(len(x)), classes
    ].sum()  # the images do not interact in eval mode
    (grads,) = torch.autograd.grad(score, activations)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # [N, K, 1, 1]
    return (alpha * activations).sum(dim=1).clamp_min(0).detach()


# (b) Through a global max pool the gradient reaches one position per map: the maximum of A_k, where it
# equals w_ck. The mean over the h w positions is alpha_k = w_ck / (h w), the same weights as through an
# average pool, so Grad-CAM is again ReLU(sum_k w_ck A_k) / (h w), a CAM-style map.
positions_with_gradient = 1

exercises.check_function(
    grad_cam_scratch,
    grad_cam_cases,
    reference=explain.grad_cam,
    rtol=1e-5,
    atol=1e-5 * gc_scale,
).assert_passed()
exercises.check_value(
    positions_with_gradient, 1, name="positions_with_gradient"
).assert_passed()

digits_net, digits_block = pretrained.eval(), pretrained[0][4]
x_digit_maps = x_tgt_eval[:64]
# [64, 32, 6, 6], the last block
a_digits = pretrained[0][:5](x_digit_maps).detach().requires_grad_()
digit_logits = pretrained[1](pretrained[0][5:](a_digits))
digit_pred = digit_logits.argmax(1)
(d_a,) = torch.autograd.grad(
    digit_logits[torch.arange(64), digit_pred].sum(), a_digits
)
nonzero_per_map = (d_a != 0).sum(dim=(2, 3))  # [64, 32]
assert (nonzero_per_map == positions_with_gradient).all(), (
    nonzero_per_map.unique()
)
expected_gc = (
    explain.class_activation_maps(
        a_digits.detach(), pretrained[1].weight.detach(), digit_pred
    ).clamp_min(0)
    / 36
)
got_gc = explain.grad_cam(digits_net, digits_block, x_digit_maps, digit_pred)
torch.testing.assert_close(
    got_gc, expected_gc, rtol=1e-5, atol=1e-5 * expected_gc.max().item()
)
print(
    f"the gradient reaches {positions_with_gradient} position of every map, for all 64 images and 32 maps;"
)
print(
    "through global max pooling, Grad-CAM == ReLU(sum_k w_ck A_k) / (h w) as well"
)

# %% [markdown]
# ## References
#
# - LeCun, Y., Bottou, L., Bengio, Y., and Haffner, P. (1998). Gradient-based learning applied to
#   document recognition. *Proceedings of the IEEE*, 86(11), 2278–2324.
# - Chellapilla, K., Puri, S., and Simard, P. (2006). High performance convolutional neural networks for
#   document processing. *10th International Workshop on Frontiers in Handwriting Recognition*.
# - Krizhevsky, A., Sutskever, I., and Hinton, G. E. (2012). ImageNet classification with deep
#   convolutional neural networks. *NeurIPS 2012*.
# - Krizhevsky, A. (2014). One weird trick for parallelizing convolutional neural networks.
#   arXiv:1404.5997.
# - Lin, M., Chen, Q., and Yan, S. (2014). Network in network. *ICLR 2014*. arXiv:1312.4400.
# - Simonyan, K., and Zisserman, A. (2015). Very deep convolutional networks for large-scale image
#   recognition. *ICLR 2015*. arXiv:1409.1556.
# - Szegedy, C., Liu, W., Jia, Y., Sermanet, P., Reed, S., Anguelov, D., Erhan, D., Vanhoucke, V., and
#   Rabinovich, A. (2015). Going deeper with convolutions. *CVPR 2015*. arXiv:1409.4842.
# - Ioffe, S., and Szegedy, C. (2015). Batch normalization: accelerating deep network training by
#   reducing internal covariate shift. *ICML 2015*. arXiv:1502.03167.
# - He, K., Zhang, X., Ren, S., and Sun, J. (2016). Deep residual learning for image recognition.
#   *CVPR 2016*. arXiv:1512.03385.
# - Zhou, B., Khosla, A., Lapedriza, A., Oliva, A., and Torralba, A. (2016). Learning deep features for
#   discriminative localization. *CVPR 2016*. arXiv:1512.04150.
# - Zhang, J., Lin, Z., Brandt, J., Shen, X., and Sclaroff, S. (2016). Top-down neural attention by
#   excitation backprop. *ECCV 2016*. arXiv:1608.00507. (The pointing game.)
# - Luo, W., Li, Y., Urtasun, R., and Zemel, R. (2016). Understanding the effective receptive field in
#   deep convolutional neural networks. *NeurIPS 2016*. arXiv:1701.04128.
# - Dumoulin, V., and Visin, F. (2016). A guide to convolution arithmetic for deep learning.
#   arXiv:1603.07285.
# - Yosinski, J., Clune, J., Bengio, Y., and Lipson, H. (2014). How transferable are features in deep
#   neural networks? *NeurIPS 2014*. arXiv:1411.1792.
# - Kumar, A., Raghunathan, A., Jones, R., Ma, T., and Liang, P. (2022). Fine-tuning can distort
#   pretrained features and underperform out-of-distribution. *ICLR 2022*. arXiv:2202.10054.
# - Balduzzi, D., Frean, M., Leary, L., Lewis, J. P., Ma, K. W.-D., and McWilliams, B. (2017). The
#   shattered gradients problem: if resnets are the answer, then what is the question? *ICML 2017*.
#   arXiv:1702.08591.
# - Huang, G., Liu, Z., van der Maaten, L., and Weinberger, K. Q. (2017). Densely connected convolutional
#   networks. *CVPR 2017*. arXiv:1608.06993.
# - Howard, A. G., Zhu, M., Chen, B., Kalenichenko, D., Wang, W., Weyand, T., Andreetto, M., and Adam, H.
#   (2017). MobileNets: efficient convolutional neural networks for mobile vision applications.
#   arXiv:1704.04861.
# - Selvaraju, R. R., Cogswell, M., Das, A., Vedantam, R., Parikh, D., and Batra, D. (2017). Grad-CAM:
#   visual explanations from deep networks via gradient-based localization. *ICCV 2017*.
#   arXiv:1610.02391.
# - Yang, G., Pennington, J., Rao, V., Sohl-Dickstein, J., and Schoenholz, S. S. (2019). A mean field
#   theory of batch normalization. *ICLR 2019*. arXiv:1902.08129.
# - Tan, M., and Le, Q. V. (2019). EfficientNet: rethinking model scaling for convolutional neural
#   networks. *ICML 2019*. arXiv:1905.11946.
