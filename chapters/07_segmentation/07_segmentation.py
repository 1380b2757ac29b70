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
# # 07 · Semantic and instance segmentation
#
# A classifier answers "what is in this image?"; a segmentation network answers it for every pixel.
# That one change of output shape touches everything: the network must give back the resolution
# its pooling layers threw away, the loss is a sum over thousands of pixels of which most are
# background, and the metric has to ignore the easy pixels to say anything at all. This chapter
# builds the standard answers one at a time on scenes of coloured shapes: fully convolutional
# networks and their skip connections, transposed convolutions (and the checkerboard they leave),
# U-Net, DeepLab's atrous convolutions, Dice versus cross-entropy, mean IoU, and finally instance
# segmentation with RoIAlign and the mask head of Mask R-CNN. Each piece is written from scratch
# once, checked against PyTorch, torchvision, scikit-learn or course_lib, then trained on scenes hard
# enough that the metrics leave room: noisy, textured, cluttered, with objects that touch.
#
# **Learning objectives.** After this chapter you can:
# - tell semantic from instance segmentation and build their targets (masks per class, masks per
#   object);
# - compute a confusion matrix, per-class IoU and mean IoU, and say why pixel accuracy misleads;
# - turn a patch classifier into a fully convolutional network, and explain what FCN's skip
#   connections (with learned, bilinear-initialised upsampling) and U-Net's concatenations buy, with
#   measured mIoU;
# - compute U-Net's boundary weight map from instance masks and measure what it does for the
#   separation of touching objects;
# - compute a transposed convolution by hand, show that it is the gradient (the adjoint) of a
#   convolution, and explain and avoid its checkerboard artefacts;
# - explain atrous (dilated) convolution correctly: a larger feature map and a larger receptive field
#   for the same parameters, at a higher compute cost; build ASPP and sketch DeepLab v3+, GCN and
#   SPADE;
# - compare cross-entropy, weighted cross-entropy and Dice loss for a rare class fairly (tuned
#   learning rates and thresholds, a threshold-free metric);
# - implement RoIPool and RoIAlign (sampling ratio, `aligned=True`), see RoIPool's quantization, and
#   train a Mask R-CNN mask head that separates touching objects better than the foreground in its
#   box does.
#
# **Prerequisites.** [Chapter 03](../03_losses/03_losses.ipynb) (cross-entropy on logits, IoU; its
# exercise 3 previews the Dice loss), [chapter 06](../06_cnns/06_cnns.ipynb) (convolution arithmetic,
# receptive fields, pooling, ResNet) and [chapter 05](../05_regularization/05_regularization.ipynb)
# (batch normalization).
#
# **Measured runtime:** 71 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [07_segmentation.ipynb](07_segmentation.ipynb) (notebook, with outputs) · [07_segmentation.py](07_segmentation.py) (the paired script instructors edit)

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from matplotlib.patches import Rectangle
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, jaccard_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP
from torchvision.ops import roi_align, roi_pool
from tqdm.auto import trange

from course_lib import data, exercises, losses, metrics, runtime, train, viz
from course_lib import nn as cnn

device = runtime.setup(seed=0)

# %% [markdown]
# ## The task: a label for every pixel
#
# - **Semantic segmentation** gives every pixel a class. Two circles that touch become one blob of
#   "circle" pixels: the task does not know about objects.
# - **Instance segmentation** gives every *object* its own mask, so two circles stay two circles.
#   Background pixels ("stuff" such as sky or road) get no instance.
# - **Panoptic segmentation** (Kirillov et al., 2019) asks for both at once: a class for every
#   pixel and an instance id for every pixel of a countable object.
#
# `data.make_shapes` draws scenes of circles, squares and triangles and returns every label at once:
# the semantic mask (`0` = background, `k + 1` = class `k`), one boolean mask per object, and the
# boxes. Its defaults (flat background, faint noise, objects that never touch) make segmentation
# nearly trivial: a U-Net scored an mIoU of 0.997 on them, a number that would also pass a model with
# a localisation bug. This chapter uses the harder preset `data.HARD_SHAPES` instead: two to five
# objects per scene, half of them touching a neighbour (shared borders, no shared pixels), a
# per-object brightness between 0.45 and 1, a textured background, four clutter strokes and dots
# labelled background, and Gaussian noise of standard deviation 0.12.

# %%
CLASSES = ("background", *data.SHAPE_CLASSES)
NUM_CLASSES = len(CLASSES)  # 4: background + circle, square, triangle
SCENES = data.HARD_SHAPES  # the scenes of this chapter
scenes = data.make_shapes(64, 32, **SCENES, seed=7)


def instance_id_map(instance_masks, offset=3):
    """Tensor[K, H, W] bool -> Tensor[H, W]: 0 = background, k + 1 + offset on object k.

    The offset keeps instance colours (vermillion, pink, sky blue, ...) apart from the class colours.
    """
    ids = torch.zeros(instance_masks.shape[1:], dtype=torch.int64)
    for k, m in enumerate(instance_masks):
        ids[m] = k + 1 + offset
    return ids


def overlay(image, mask, alpha=0.6):
    """The colours of a label mask blended over a grey version of an image [3, H, W]."""
    grey = (
        image.mean(0, keepdim=True).permute(1, 2, 0).expand(-1, -1, 3).numpy()
    )
    colours = viz.mask_to_rgb(mask, max(int(mask.max()) + 1, NUM_CLASSES))
    fg = (mask > 0).numpy()[..., None]
    return np.where(fg, (1 - alpha) * grey + alpha * colours, grey)


def same_class_touching(i):
    """True when scene i holds two objects of the same class whose masks touch or overlap."""
    labels, inst = scenes.labels[i], scenes.instance_masks[i]
    grown = torch.from_numpy(
        np.stack([ndimage.binary_dilation(m.numpy()) for m in inst])
    )
    return any(
        labels[a] == labels[b] and (grown[a] & inst[b]).any()
        for a in range(len(labels))
        for b in range(a + 1, len(labels))
    )


# %% tags=["hide-input"]
picked = [i for i in range(len(scenes)) if same_class_touching(i)][:2] + [0, 1]
fig, axes = plt.subplots(3, len(picked), figsize=(2.1 * len(picked), 6.4))
for col, i in enumerate(picked):
    axes[0, col].imshow(scenes.images[i].permute(1, 2, 0).numpy())
    names = [data.SHAPE_CLASSES[c] for c in scenes.labels[i]]
    viz.draw_boxes(
        axes[0, col],
        scenes.boxes[i],
        names,
        color_index=scenes.labels[i].tolist(),
    )
    axes[1, col].imshow(overlay(scenes.images[i], scenes.masks[i]))
    axes[2, col].imshow(
        overlay(scenes.images[i], instance_id_map(scenes.instance_masks[i]))
    )
for row, name in enumerate(
    ["image and boxes", "semantic mask", "instance masks"]
):
    axes[row, 0].set_ylabel(name)
for ax in axes.flat:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
fig.suptitle(
    "Masks over the (grey) images. Semantic masks and boxes coloured by class\n"
    "(blue circle, orange square, green triangle); instance masks coloured by object",
    fontsize=9,
)
plt.show()

# %% [markdown]
# In the first two columns two objects of the same class touch: the semantic mask merges them into
# one region, the instance masks keep them apart. The strokes and dots are clutter: background by
# definition, though they have the colours of objects.
#
# We draw 512 scenes for training, 128 for validation (every choice of a hyperparameter is made on
# it) and 128 for testing (reported once per model), each set with its own seed. Most pixels are
# background, and triangles are the rarest class: keep that imbalance in mind for the metric and the
# losses.

# %%
# NBVAL_CHECK_OUTPUT
train_set = data.make_shapes(512, 32, **SCENES, seed=1)
val_set = data.make_shapes(128, 32, **SCENES, seed=2)
test_set = data.make_shapes(128, 32, **SCENES, seed=3)
pixel_freq = (
    torch.bincount(train_set.masks.flatten(), minlength=NUM_CLASSES)
    / train_set.masks.numel()
)
print("images:", tuple(train_set.images.shape), train_set.images.dtype)
print("semantic masks:", tuple(train_set.masks.shape), train_set.masks.dtype)
print(
    "instance masks of image 0:",
    tuple(train_set.instance_masks[0].shape),
    train_set.instance_masks[0].dtype,
)
print(
    "pixel frequency:",
    ", ".join(
        f"{c} {f:.3f}"
        for c, f in zip(CLASSES, pixel_freq.tolist(), strict=True)
    ),
)

# %% [markdown]
# ## Measuring a segmentation: confusion matrix and mean IoU
#
# Count, over every pixel of every image, how often true class $i$ was predicted as class $j$: that
# is the **confusion matrix** $C_{ij}$ (rows true, columns predicted). For class $c$ the true
# positives are the diagonal entry, the false positives the rest of its column, the false negatives
# the rest of its row:
#
# $$
# \mathrm{TP}_c = C_{cc}, \qquad \mathrm{FP}_c = \sum_i C_{ic} - C_{cc}, \qquad
# \mathrm{FN}_c = \sum_j C_{cj} - C_{cc}, \qquad
# \mathrm{IoU}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c}.
# $$
#
# $\mathrm{IoU}_c$ is the intersection over union of the predicted and the true region of class $c$.
# The **mean IoU** (mIoU) averages it over the classes, skipping a class that appears neither in the
# targets nor in the predictions (its IoU is $0/0$). PASCAL VOC and Cityscapes accumulate the matrix
# over the whole dataset before dividing; averaging per-image IoUs gives a different, noisier number.
#
# **Pixel accuracy** $\sum_c C_{cc} / \sum_{ij} C_{ij}$ is dominated by the background: a
# "segmenter" that answers background everywhere scores 73 % on our test scenes. Its mIoU is about
# 0.18.
#
# From scratch, the confusion matrix is a product of one-hot encodings: $C = Y^\top \hat Y$ with
# $Y, \hat Y \in \{0, 1\}^{P \times K}$ for $P$ pixels and $K$ classes. course_lib computes it with one
# `bincount`; scikit-learn's `jaccard_score(average="macro")` is the mean IoU.


# %%
def confusion_from_scratch(pred, target, num_classes):
    """C[i, j] = number of pixels of true class i predicted as j, as a one-hot matrix product."""
    y = F.one_hot(target.flatten(), num_classes).double()  # [P, K]
    y_hat = F.one_hot(pred.flatten(), num_classes).double()
    return (y.T @ y_hat).long()


def iou_per_class(cm):
    tp = cm.diagonal().double()
    union = cm.sum(0) + cm.sum(1) - cm.diagonal()  # TP + FP + FN
    return tp / union  # NaN where the class is absent from both (0 / 0)


# a toy predictor: the truth shifted one pixel to the right, with every triangle called a square
target = test_set.masks
toy_pred = torch.roll(target, shifts=1, dims=-1)
toy_pred[toy_pred == 3] = 2
cm = confusion_from_scratch(toy_pred, target, NUM_CLASSES)
torch.testing.assert_close(
    cm, metrics.confusion_matrix(toy_pred, target, NUM_CLASSES)
)
torch.testing.assert_close(
    cm,
    torch.from_numpy(
        sk_confusion_matrix(
            target.flatten(), toy_pred.flatten(), labels=range(4)
        )
    ),
)
toy_miou = iou_per_class(cm).nanmean()
torch.testing.assert_close(
    toy_miou, metrics.mean_iou(toy_pred, target, NUM_CLASSES)
)
sk_miou = jaccard_score(target.flatten(), toy_pred.flatten(), average="macro")
torch.testing.assert_close(toy_miou.item(), sk_miou)
print("confusion matrix, mIoU: from scratch == course_lib == scikit-learn")

# %%
# NBVAL_CHECK_OUTPUT
print(
    "toy predictor, IoU per class:",
    [round(v, 3) for v in iou_per_class(cm).tolist()],
)
print(
    f"toy predictor: pixel accuracy {cm.diagonal().sum() / cm.sum():.3f}, mIoU {toy_miou:.3f}"
)
all_background = torch.zeros_like(target)
acc_bg = (all_background == target).double().mean()
print(
    f"all-background: pixel accuracy {acc_bg:.3f}, "
    f"mIoU {metrics.mean_iou(all_background, target, NUM_CLASSES):.3f}"
)

# %% [markdown]
# The toy predictor keeps a pixel accuracy of about 0.9 although it never predicts a triangle: the
# triangle IoU is 0, and the mIoU says so. From here on every experiment reports the mIoU over the
# 128 test scenes.
#
# ## From sliding windows to fully convolutional networks
#
# The lecture notes list three ways to label every pixel:
#
# 1. **Sliding window.** Cut a crop around each pixel and classify the crop; its label goes to the
#    centre pixel. Neighbouring crops overlap almost entirely, yet their features are computed again
#    for every crop.
# 2. **Fully convolutional at full resolution.** A stack of padded convolutions maps $3\times H\times
#    W$ to $K\times H\times W$ scores, trained with the cross-entropy averaged over the pixels. Every
#    layer runs at full resolution, which is expensive with many channels.
# 3. **Downsample, then upsample** inside the network: pooling or strided convolutions shrink the
#    maps (cheap, large receptive field), and upsampling layers bring the scores back to $H\times W$.
#
# The first two are the same computation, organised differently. A crop classifier whose last
# layer is fully connected over a $5\times5$ map is a network whose last layer is a $5\times5$
# convolution: the weights reshape from $[K, C\cdot5\cdot5]$ to $[K, C, 5, 5]$. Run on the whole
# (padded) image, that network produces the crop classifier's scores for every crop at once and
# shares the work of the overlapping crops. This is how FCN (Long et al., 2015) converted VGG's fully
# connected layers into convolutions.


# %%
def count_macs(model, x):
    """Multiply-accumulates of the Conv2d, ConvTranspose2d and Linear layers of ``model`` on input ``x``."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(
            module, nn.ConvTranspose2d
        ):  # each input value meets every kernel tap
            k = module.kernel_size[0] * module.kernel_size[1]
            total += (
                inputs[0].numel() * (module.out_channels // module.groups) * k
            )

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


torch.manual_seed(0)
CROP = 9  # a 9x9 crop: two valid 3x3 convolutions leave a 5x5 map
patch_classifier = nn.Sequential(
    nn.Conv2d(3, 8, 3),
    nn.ReLU(),
    nn.Conv2d(8, 8, 3),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(8 * 5 * 5, 4),
)
fully_conv = nn.Sequential(*patch_classifier[:4], nn.Conv2d(8, 4, 5))
with (
    torch.no_grad()
):  # the Linear layer becomes a 5x5 convolution with the same weights
    fully_conv[-1].weight.copy_(patch_classifier[-1].weight.view(4, 8, 5, 5))
    fully_conv[-1].bias.copy_(patch_classifier[-1].bias)

image = train_set.images[:1]
# zero padding: a crop exists around every pixel
padded = F.pad(image, [CROP // 2] * 4)
# [1024, 3, 9, 9]
crops = F.unfold(padded, CROP).transpose(1, 2).reshape(-1, 3, CROP, CROP)
with torch.no_grad():
    # one crop per pixel
    scores_sliding = patch_classifier(crops).T.reshape(1, 4, 32, 32)
    scores_fcn = fully_conv(padded)  # one pass over the image
torch.testing.assert_close(scores_sliding, scores_fcn, rtol=1e-4, atol=1e-5)
print("sliding-window scores == fully convolutional scores, at every pixel")

# %%
# NBVAL_CHECK_OUTPUT
macs_sliding = count_macs(patch_classifier, crops)
macs_fcn = count_macs(fully_conv, padded)
print(f"crops: {len(crops)}, score map: {tuple(scores_fcn.shape)}")
print(
    f"multiply-accumulates: sliding window {macs_sliding:,}, fully convolutional {macs_fcn:,}"
)
print(
    f"the fully convolutional pass does {macs_sliding / macs_fcn:.1f}x less work"
)

# %% [markdown]
# Even for this tiny network the sliding window spends 14 times more multiply-adds; the factor grows
# with the crop, since what is recomputed is the overlap of neighbouring crops. The fully
# convolutional version still keeps every
# layer at full resolution, though. Real segmentation networks pool, which means they must
# **upsample** again. The options:
#
# - fixed interpolation (nearest, bilinear): no parameters;
# - **max-unpooling** (SegNet; `nn.MaxUnpool2d`): put each value back where the matching max-pooling
#   found its maximum, zeros elsewhere;
# - a **transposed convolution**: a learned upsampling, the subject of the next section.
#
# ## Transposed convolution
#
# A convolution with stride $S$ reads a $F\times F$ window of the input for every output value. A
# **transposed convolution** runs the other way: every *input* value scales a copy of the kernel and
# writes it into the output, with copies placed $S$ pixels apart; where copies overlap they add up.
# With $P$ the padding (rows and columns cropped from each border of the result), the output size is
#
# $$
# H_\text{out} = (H_\text{in} - 1)\,S - 2P + F + \text{output\_padding}.
# $$
#
# A stride-$S$ convolution maps several input sizes to the same output size (7 and 8 both go to 4 with
# $F=3$, $S=2$, $P=1$), so the transposed convolution needs `output_padding` to choose among them.
#
# The notes' worked example, with input $\begin{bmatrix}2&4\\0&1\end{bmatrix}$ and kernel
# $\begin{bmatrix}3&1\\1&5\end{bmatrix}$ at stride 1: each input value stamps a $2\times2$ copy (the
# kernel's footprint), neighbouring copies overlap by one row or column, and the output is
# $\begin{bmatrix}6&14&4\\2&17&21\\0&1&5\end{bmatrix}$. For example $14 = 2\cdot1 + 4\cdot3$: the
# top-right tap of the first copy plus the top-left tap of the second.


# %%
def conv_transpose2d_scatter(x, w, stride=1, padding=0):
    """Single-channel transposed convolution: every input value stamps a scaled kernel; overlaps add up."""
    (h, wd), k = x.shape, w.shape[0]
    out = torch.zeros(
        (h - 1) * stride + k, (wd - 1) * stride + k, dtype=x.dtype
    )
    for i in range(h):
        for j in range(wd):
            out[i * stride : i * stride + k, j * stride : j * stride + k] += (
                x[i, j] * w
            )
    return out[
        padding : out.shape[0] - padding, padding : out.shape[1] - padding
    ]


x_ex = torch.tensor([[2.0, 4.0], [0.0, 1.0]])
w_ex = torch.tensor([[3.0, 1.0], [1.0, 5.0]])
y_ex = conv_transpose2d_scatter(x_ex, w_ex)
torch.testing.assert_close(
    y_ex, F.conv_transpose2d(x_ex[None, None], w_ex[None, None])[0, 0]
)
torch.testing.assert_close(
    y_ex, torch.tensor([[6.0, 14.0, 4.0], [2.0, 17.0, 21.0], [0.0, 1.0, 5.0]])
)
g = torch.Generator().manual_seed(0)
x_r, w_r = torch.randn(5, 6, generator=g), torch.randn(3, 3, generator=g)
torch.testing.assert_close(
    conv_transpose2d_scatter(x_r, w_r, stride=2, padding=1),
    F.conv_transpose2d(x_r[None, None], w_r[None, None], stride=2, padding=1)[
        0, 0
    ],
)

# the size formula, against nn.ConvTranspose2d over many settings
for h_in in (1, 4, 7):
    for k in (1, 2, 3, 4, 5):
        for s in (1, 2, 3):
            for p in range(k // 2 + 1):
                for op in range(
                    s
                ):  # output_padding must be smaller than the stride
                    layer = nn.ConvTranspose2d(
                        1, 1, k, stride=s, padding=p, output_padding=op
                    )
                    expected = (h_in - 1) * s - 2 * p + k + op
                    if expected > 0:
                        assert (
                            layer(torch.zeros(1, 1, h_in, h_in)).shape[-1]
                            == expected
                        )
print("scatter-add == F.conv_transpose2d; size formula == nn.ConvTranspose2d")

# %%
# NBVAL_CHECK_OUTPUT
print("worked example:", y_ex.int().tolist())
up = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
print(
    "ConvTranspose2d(3, stride 2, padding 1, output_padding 1):",
    tuple(up(torch.zeros(1, 16, 8, 8)).shape),
)

# %% [markdown]
# ### Why "transposed": the gradient of a convolution
#
# A convolution is linear, so on a flattened input it is a matrix: $\mathrm{vec}(y) = C\,\mathrm{vec}(x)$,
# with one row per output value and the kernel weights spread along each row. The transposed
# convolution multiplies by $C^\top$, which maps the output shape back to the input shape. Two
# consequences:
#
# - Backpropagating through a convolution computes $\partial L/\partial x = C^\top\,\partial L/\partial y$:
#   the backward pass of a convolution *is* a transposed convolution with the same kernel, stride and
#   padding, and the forward pass of a transposed convolution is the backward pass of a convolution.
# - The name "deconvolution", which FCN and the lecture notes use, is misleading: $C^\top$ is not
#   $C^{-1}$. A transposed convolution restores the *shape* of the input, not its values.

# %%
g = torch.Generator().manual_seed(1)
x_big = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
w_big = torch.randn(5, 3, 3, 3, generator=g)  # 3 -> 5 channels
y_big = F.conv2d(x_big, w_big, stride=2, padding=1)  # [2, 5, 4, 4]
upstream = torch.randn(y_big.shape, generator=g)
(grad_x,) = torch.autograd.grad(y_big, x_big, upstream)
# the same weight tensor, read as 5 -> 3 channels; output_padding=1 picks the size 8 (not 7)
torch.testing.assert_close(
    grad_x,
    F.conv_transpose2d(upstream, w_big, stride=2, padding=1, output_padding=1),
)

# the matrix view on a 4x4 input and a 3x3 kernel: C has one row per output value (2x2 = 4 rows)
w_small = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
basis = torch.eye(16).reshape(16, 1, 4, 4)  # one unit image per input pixel
# column p = response to pixel p: C is [4, 16]
C = F.conv2d(basis, w_small).reshape(16, 4).T
x_small = torch.randn(1, 1, 4, 4, generator=g)
y_small = torch.randn(1, 1, 2, 2, generator=g)
torch.testing.assert_close(
    F.conv2d(x_small, w_small).flatten(), C @ x_small.flatten()
)
torch.testing.assert_close(
    F.conv_transpose2d(y_small, w_small).flatten(), C.T @ y_small.flatten()
)
restored = F.conv_transpose2d(F.conv2d(x_small, w_small), w_small)
print(
    "autograd's gradient of conv2d == conv_transpose2d; conv = C @ x and conv_transpose = C.T @ y"
)
rel_err = (restored - x_small).norm() / x_small.norm()
print(
    f"conv, then transposed conv: back to the input? relative error {rel_err:.1f}"
)

# %% tags=["hide-input"]
fig = plt.figure(figsize=(13, 5.6))
grid = fig.add_gridspec(2, 7, height_ratios=[1, 1.15])
panels = [("input x", x_ex), ("kernel w", w_ex)]
for i in range(2):
    for j in range(2):
        stamp = torch.full((3, 3), float("nan"))
        stamp[i : i + 2, j : j + 2] = x_ex[i, j] * w_ex
        panels.append(
            (f"x[{i},{j}] = {x_ex[i, j]:g} stamps {x_ex[i, j]:g}·w", stamp)
        )
panels.append(("sum of the stamps = output", y_ex))
for col, (title, arr) in enumerate(panels):
    ax = fig.add_subplot(grid[0, col])
    ax.imshow(arr.numpy(), cmap="Blues", vmin=0, vmax=25)
    for (r, c), v in np.ndenumerate(arr.numpy()):
        if not np.isnan(v):
            tone = "white" if v > 12 else viz.color(7)
            ax.text(
                c,
                r,
                f"{v:g}",
                ha="center",
                va="center",
                fontsize=11,
                color=tone,
            )
    ax.set_title(title, fontsize=8)
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(True)
    ax.grid(False)
ax = fig.add_subplot(grid[1, :])
ax.imshow(C.numpy(), cmap="Blues", aspect="equal")
for (r, c), v in np.ndenumerate(C.numpy()):
    if v:
        ax.text(
            c,
            r,
            f"{v:g}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if v > 5 else viz.color(7),
        )
ax.set(
    xticks=range(16),
    yticks=range(4),
    xlabel="input pixel (row-major index in the 4×4 input)",
    ylabel="output value",
    title="A 3×3 convolution of a 4×4 input is a 4×16 matrix C; a transposed convolution applies Cᵀ",
)
ax.grid(False)
plt.show()

# %% [markdown]
# ### The checkerboard artefact
#
# When the kernel size is not a multiple of the stride, the stamped copies overlap unevenly: with
# $F=3$, $S=2$ some output pixels receive one contribution, some two and some four, in a regular
# pattern. Even when $F$ is a multiple of $S$ (say $F=4$, $S=2$), pixels of different parity are
# computed by *different* subsets of the kernel's taps, so a kernel must learn exactly balanced
# weights to give a flat output from a flat input. Stacked layers compound the pattern. Generated
# and segmented images then show a fine checkerboard (Odena et al., 2016).
#
# The fix they propose is **resize-convolution**: upsample with nearest or bilinear interpolation,
# then apply an ordinary convolution. Every output pixel then sees the same kernel, and a constant
# input gives a constant output by construction (away from the zero-padded border). Below, three
# randomly initialised upsampling layers of each kind turn a constant $4\times4$ input into a
# $32\times32$ output.


# %%
def upsampler(kind, channels=4, layers=3, seed=0):
    """Three randomly initialised x2 upsampling layers (the first takes 1 channel, the last gives 1)."""
    torch.manual_seed(seed)
    chans = [1] + [channels] * (layers - 1) + [1]
    blocks = []
    for c_in, c_out in zip(chans, chans[1:], strict=False):
        if kind == "transposed k=3":
            blocks.append(
                nn.ConvTranspose2d(
                    c_in, c_out, 3, stride=2, padding=1, output_padding=1
                )
            )
        elif kind == "transposed k=4":
            blocks.append(
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
            )
        else:
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1),
            ]
        blocks.append(nn.ReLU() if c_out != 1 else nn.Identity())
    return nn.Sequential(*blocks)


flat = torch.ones(1, 1, 4, 4)
overlaps = {
    k: F.conv_transpose2d(
        torch.ones(1, 1, 6, 6), torch.ones(1, 1, k, k), stride=2
    )[0, 0]
    for k in (3, 4)
}
outputs, strength = {}, {}
for kind in ("transposed k=3", "transposed k=4", "resize-conv"):
    with torch.no_grad():
        outputs[kind] = upsampler(kind)(flat)[0, 0]
    interior = outputs[kind][
        8:-8, 8:-8
    ]  # zero padding reaches 7 pixels in from the border
    strength[kind] = (interior.max() - interior.min()).item()

fig, axes = plt.subplots(1, 5, figsize=(14, 3.3))
for ax, (k, ov) in zip(axes[:2], overlaps.items(), strict=True):
    im = ax.imshow(ov.numpy(), cmap="viridis")
    ax.set_title(
        f"overlap count, F = {k}, S = 2\n(all-ones kernel)", fontsize=9
    )
    fig.colorbar(im, ax=ax, shrink=0.7)
for ax, (kind, out) in zip(axes[2:], outputs.items(), strict=True):
    ax.imshow(out.numpy(), cmap="viridis")
    ax.set_title(
        f"3 random {kind} layers\nconstant 4×4 input → 32×32", fontsize=9
    )
for ax in axes:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
fig.suptitle(
    "Uneven overlaps make a checkerboard; resize-convolution gives a flat interior"
)
plt.show()

# %%
for kind in ("transposed k=3", "transposed k=4"):
    assert strength[kind] > 1e-3 * outputs[kind].abs().max(), (
        f"{kind} should not be flat inside"
    )
assert strength["resize-conv"] < 1e-5, (
    f"resize-conv should be flat inside, range {strength['resize-conv']}"
)
print({kind: f"interior range {s:.4f}" for kind, s in strength.items()})

# %% [markdown]
# The uneven overlap of $F=3$, $S=2$ shows as the 1-2-4 pattern on the left. The random $F=4$ layers
# also leave a grid, although their overlap count is even, because each parity uses other taps.
# The resize-convolution output is constant away from the border. This is why course_lib's
# `cnn.UNet(up="bilinear")` offers bilinear upsampling followed by convolutions; with training a transposed
# convolution can learn balanced weights, and U-Net's concatenated skips and the following
# $3\times3$ convolutions smooth much of the pattern away, but nothing forces them to.
#
# ## FCN: fully convolutional networks and their skips
#
# FCN (Long et al., 2015) took VGG-16, converted its fully connected layers to convolutions as above,
# and put a $1\times1$ convolution with 21 output channels (the 20 PASCAL VOC classes and the
# background) on the stride-32 feature map. The three variants differ in how they upsample:
#
# - **FCN-32s**: the stride-32 scores are upsampled 32× in one step. The output is coarse.
# - **FCN-16s**: a $1\times1$ score layer on `pool4` (stride 16) is **added** to the stride-32 scores
#   upsampled 2×, and the sum is upsampled 16×. The new score layer starts at **zero**, so training
#   starts from FCN-32s's output and refines it.
# - **FCN-8s**: the same again with `pool3` (stride 8), then 8× upsampling.
#
# The 2× upsampling layers are transposed convolutions initialised to bilinear interpolation
# (built below) and then learned; the last, large upsampling stays fixed bilinear. (The lecture notes
# describe FCN-8s under the heading "FCN-32s" and say FCN "replaced the last layer"; the FC layers
# were converted, as shown above.)
#
# Our scenes are 32×32, so a three-pool encoder reaches stride 8 on a 4×4 map. The *coarse* model
# scores that map and upsamples 8× bilinearly; the *skips* model adds zero-initialised score layers
# at strides 4 and 2, FCN-style: FCN's 32s → 16s → 8s ladder at the strides of our small encoder.
# Both get the same encoder and the same training (120 steps of Adam at a peak learning rate of 0.01
# with a one-cycle schedule, batches of 16). The skips model upsamples its scores 2× twice as FCN
# did, with transposed convolutions initialised to bilinear interpolation and then learned. The
# bilinear kernel for a factor $f$ is the outer product $w[a, b] = u_a u_b$ of the tent
# $u_a = 1 - |a - c|/f$ over $2f - (f \bmod 2)$ taps centred at $c$ (FCN's `upsample_filt`); for
# $f = 2$, $u = (\tfrac14, \tfrac34, \tfrac34, \tfrac14)$. Placed on the diagonal (class $k$ to
# class $k$, zeros across classes), it reproduces `F.interpolate(mode="bilinear")` except on the
# one-pixel border, where the transposed convolution sees zeros beyond the map and `F.interpolate`
# repeats the edge. The final 2× (skips) or 8× (coarse) step stays fixed bilinear, as in FCN.


# %%
def bilinear_kernel(factor):
    """FCN's upsampling filter: the [k, k] kernel (k = 2 factor - factor % 2) of a bilinear x factor upsampling."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    u = 1 - (torch.arange(size) - centre).abs() / factor
    return u[:, None] * u[None, :]


def bilinear_upsampler(channels, factor=2):
    """A learnable x factor nn.ConvTranspose2d initialised to bilinear interpolation, channel by channel."""
    size = 2 * factor - factor % 2
    layer = nn.ConvTranspose2d(
        channels,
        channels,
        size,
        stride=factor,
        padding=(size - factor) // 2,
        bias=False,
    )
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(channels), range(channels)] = bilinear_kernel(factor)
    return layer


scores_ex = torch.randn(
    2, NUM_CLASSES, 4, 4, generator=torch.Generator().manual_seed(4)
)
with torch.no_grad():
    learned_up = bilinear_upsampler(NUM_CLASSES)(scores_ex)
fixed_up = F.interpolate(scores_ex, scale_factor=2, mode="bilinear")
torch.testing.assert_close(
    learned_up[..., 1:-1, 1:-1], fixed_up[..., 1:-1, 1:-1]
)
print(
    "the learned upsampling starts as bilinear interpolation (away from the one-pixel border)"
)


# %%
class TinyFCN(nn.Module):
    """FCN on a three-level encoder (strides 2, 4, 8) with optional FCN-style score skips."""

    def __init__(self, widths=(8, 16, 32), num_classes=NUM_CLASSES, skips=True):
        super().__init__()
        c1, c2, c3 = widths
        self.block1, self.block2, self.block3 = (
            cnn.double_conv(3, c1),
            cnn.double_conv(c1, c2),
            cnn.double_conv(c2, c3),
        )
        self.pool = nn.MaxPool2d(2)
        self.score8 = nn.Conv2d(c3, num_classes, 1)
        self.skips = skips
        if skips:
            self.score4, self.score2 = (
                nn.Conv2d(c2, num_classes, 1),
                nn.Conv2d(c1, num_classes, 1),
            )
            for layer in (
                self.score4,
                self.score2,
            ):  # start from the coarse model's output
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.up8, self.up4 = (
                bilinear_upsampler(num_classes),
                bilinear_upsampler(num_classes),
            )

    def forward(self, x):
        pool1 = self.pool(self.block1(x))  # stride 2
        pool2 = self.pool(self.block2(pool1))  # stride 4
        scores = self.score8(self.pool(self.block3(pool2)))  # stride 8
        if self.skips:
            # learned 2x: stride 8 -> 4
            scores = self.up8(scores) + self.score4(pool2)
            # learned 2x: stride 4 -> 2
            scores = self.up4(scores) + self.score2(pool1)
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear")


# %% tags=["hide-input"]
# the two FCNs trained below (32×32 scenes, 4 classes)
fig, axes = plt.subplots(2, 1, figsize=(12, 6.4), height_ratios=[1, 2.1])
enc = {
    "x": (0, 0, "image\n3×32×32", "io"),
    "b1": (3.0, 0, "double conv 3→8\nmax-pool: 8×16×16", "conv"),
    "b2": (6.0, 0, "double conv 8→16\nmax-pool: 16×8×8", "conv"),
    "b3": (9.0, 0, "double conv 16→32\nmax-pool: 32×4×4", "conv"),
}
enc_edges = [("x", "b1"), ("b1", "b2"), ("b2", "b3")]
viz.diagram(
    {**enc, "s8": (12.0, 0, "score8: 1×1\n4×4×4", "head"), "up": (15.0, 0, "bilinear ×8\n(fixed)", "up"),
     "y": (18.0, 0, "scores\n4×32×32", "io")},
    [*enc_edges, ("b3", "s8"), ("s8", "up"), ("up", "y")],
    ax=axes[0], block_size=(2.5, 0.75), fontsize=7.5,
    title="coarse FCN: score the stride-8 map, upsample 8× in one step",
)  # fmt: skip
viz.diagram(
    {**enc,
     "s8": (12.0, 0, "score8: 1×1\n4×4×4", "head"),
     "up8": (12.0, -1.5, "learned 2× (T-conv,\nbilinear init): 4×8×8", "up"),
     "s4": (6.0, -1.5, "score4: 1×1, zero init\n4×8×8", "head"),
     "p4": (9.0, -1.5, "+", "op"),
     "up4": (9.0, -3.0, "learned 2× (T-conv,\nbilinear init): 4×16×16", "up"),
     "s2": (3.0, -3.0, "score2: 1×1, zero init\n4×16×16", "head"),
     "p2": (6.0, -3.0, "+", "op"),
     "up": (6.0, -4.3, "bilinear ×2\n(fixed)", "up"),
     "y": (3.0, -4.3, "scores\n4×32×32", "io")},
    [*enc_edges, ("b3", "s8"), ("s8", "up8"), ("up8", "p4"), ("b2", "s4"), ("s4", "p4"), ("p4", "up4"),
     ("up4", "p2"), ("b1", "s2"), ("s2", "p2"), ("p2", "up"), ("up", "y")],
    ax=axes[1], block_size=(2.5, 0.75), fontsize=7.5,
    title="FCN with skips (FCN-8s ladder at strides 8, 4, 2): finer score maps added to learned upsamplings",
)  # fmt: skip
plt.show()


# %%
def train_steps(
    model,
    images,
    targets,
    loss_fn,
    *,
    steps=200,
    lr=1e-2,
    batch=16,
    seed=0,
    desc="training",
):
    """Adam with a one-cycle schedule on random mini-batches; returns the per-step losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=steps, pct_start=0.2
    )
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in trange(steps, desc=desc):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        loss = loss_fn(model(images[idx].to(device)), targets[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def segment(model, images):
    """Predicted class per pixel, Tensor[N, H, W], in eval mode."""
    model.eval()
    return model(images.to(device)).argmax(1).cpu()


# %%
fcn_curves, fcn_pred, fcn_miou, fcn_models = {}, {}, {}, {}
for name, skips in (("coarse (stride 8)", False), ("skips (8 + 4 + 2)", True)):
    torch.manual_seed(0)
    model = fcn_models[name] = TinyFCN(skips=skips).to(device)
    fcn_curves[name] = train_steps(
        model,
        train_set.images,
        train_set.masks,
        F.cross_entropy,
        steps=120,
        desc=name,
    )
    fcn_pred[name] = segment(model, test_set.images)
    fcn_miou[name] = metrics.mean_iou(
        fcn_pred[name], test_set.masks, NUM_CLASSES
    ).item()

# %% tags=["hide-input"]
ax = viz.plot_curves(
    fcn_curves,
    xlabel="step",
    ylabel="cross-entropy",
    title="FCN training",
    logy=True,
)
plt.show()


# %% tags=["hide-input"]
def show_rows(rows, title=None, size=1.35):
    """A grid of images: one row per entry of ``rows`` (name -> list of [H, W, 3] arrays)."""
    ncols = len(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(size * ncols + 1.2, size * len(rows)),
        squeeze=False,
    )
    for r, (name, imgs) in enumerate(rows.items()):
        for c, img in enumerate(imgs):
            axes[r, c].imshow(img, interpolation="nearest")
            axes[r, c].set(xticks=[], yticks=[])
            axes[r, c].grid(False)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


SHOW = range(8)
rgb = {i: test_set.images[i].permute(1, 2, 0).numpy() for i in SHOW}
rows = {
    "image": [rgb[i] for i in SHOW],
    "truth": [viz.mask_to_rgb(test_set.masks[i], 4) for i in SHOW],
}
for name, pred in fcn_pred.items():
    rows[f"{name}\nmIoU {fcn_miou[name]:.2f}"] = [
        viz.mask_to_rgb(pred[i], 4) for i in SHOW
    ]
show_rows(
    rows,
    "FCN on the test scenes: the coarse model paints blobs, the skips restore the outlines",
)
plt.show()

# %%
gain = fcn_miou["skips (8 + 4 + 2)"] - fcn_miou["coarse (stride 8)"]
print(
    ", ".join(f"{k}: mIoU {v:.3f}" for k, v in fcn_miou.items())
    + f"; gain {gain:.3f}"
)
assert gain > 0.1, (
    f"skips should add > 0.1 mIoU over the coarse FCN, added {gain:.3f}"
)
assert fcn_miou["skips (8 + 4 + 2)"] > 0.4, (
    f"FCN with skips: mIoU {fcn_miou['skips (8 + 4 + 2)']:.3f}"
)

# %% [markdown]
# A 4×4 grid of scores cannot draw a triangle's corner on a 32×32 image, however long it trains: the
# coarse model blurs every object into a blob, loses thin parts and small objects to the background,
# and lets blobs leak into it. The skips give the fine layers, which still know where the edges are, a
# say in the output.
#
# ## U-Net
#
# U-Net (Ronneberger et al., 2015) makes the decoder as deep as the encoder. The **contracting path**
# halves the resolution at each level (two $3\times3$ convolutions, then $2\times2$ max-pooling) and
# doubles the channels. The **expanding path** doubles the resolution with a $2\times2$ transposed
# convolution, **concatenates** the encoder features of the same resolution (FCN *adds* class
# scores; U-Net hands the decoder the features themselves) and applies two $3\times3$ convolutions.
# A $1\times1$ convolution gives the $K$ class scores per pixel. The original used unpadded
# convolutions, so its output (388×388) was smaller than its input (572×572) and the skip features
# had to be cropped; `cnn.UNet` pads, so output and input have the same size.
#
# ### U-Net's weighted loss, with the sign a loss needs
#
# U-Net computes a pixel-wise softmax $p_k(x) = e^{a_k(x)} / \sum_{k'} e^{a_{k'}(x)}$ over the $K$
# score maps $a_k$ and weights each pixel's log-likelihood by a map $w(x)$. The lecture notes write
# the "loss" as $\sum_x w(x)\log p_{\ell(x)}(x)$, where $\ell(x)$ is the true class of pixel $x$.
# That sum is a weighted log-likelihood, at most 0, and training must *maximise* it; as a loss to
# minimise it needs a minus sign:
#
# $$
# \mathcal L = -\frac{1}{|\Omega|}\sum_{x\in\Omega} w(x)\,\log p_{\ell(x)}(x),
# \qquad
# w(x) = w_c\big(\ell(x)\big) + w_0\exp\!\left(-\frac{\big(d_1(x) + d_2(x)\big)^2}{2\sigma^2}\right).
# $$
#
# The notes leave $w$ undefined. In the paper, $w_c$ balances the class frequencies, and the second
# term is large on background pixels squeezed between two objects: $d_1$ and $d_2$ are the distances
# to the nearest and the second-nearest object. The paper uses $w_0 = 10$ and $\sigma \approx 5$
# pixels for cells of a few dozen pixels; we keep $w_0 = 10$ and take $\sigma = 2$ px for our
# smaller objects.
#
# The second term exists for **touching objects**. In the paper's cell images, the annotators left a
# thin line of background between touching cells; a network that predicts that line lets the
# connected components of its foreground give one component per cell. Our touching objects share a
# border with no background between them, so we build the targets the same way: every object pixel
# whose 4-neighbour belongs to an object drawn later becomes background, a one-pixel *separation
# border*. Then $d_1, d_2$ are measured to the objects without their borders, and the bonus goes to
# background pixels (inside an object $d_1 = 0$, and the bonus would reward pixels next to a
# neighbour instead of the gap). Below, the function takes the class weights $w_c$ as an argument;
# the training runs use $w_c = 1$, so that the weight map's border term is the only difference
# between the runs with and without it (class balancing is the subject of the section on losses).

# %%
CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def separation_targets(instance_masks, semantic):
    """U-Net-style targets: a one-pixel background border wherever two objects touch.

    instance_masks: Tensor[K, H, W] bool (later objects drawn on top); semantic: Tensor[H, W] int64.
    Returns the target Tensor[H, W] int64 and the objects without their borders Tensor[K, H, W] bool.
    """
    ids = instance_id_map(
        instance_masks, offset=0
    ).numpy()  # 0 background, k + 1 on object k
    # a 4-neighbour has a larger id
    touches_later = ndimage.grey_dilation(ids, footprint=CROSS) > ids
    border = torch.from_numpy(touches_later & (ids > 0))
    return torch.where(border, 0, semantic), instance_masks & ~border


def unet_weight_map(cells, target, class_weights=None, w0=10.0, sigma=2.0):
    """U-Net's w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on the background pixels.

    cells: Tensor[K, H, W] bool, the objects without their borders; target: Tensor[H, W] int64;
    class_weights: Tensor[num_classes] (default: all 1). Returns Tensor[H, W].
    """
    w = (
        torch.ones(target.shape)
        if class_weights is None
        else class_weights[target]
    )
    if len(cells) < 2:
        return w
    # distance of every pixel to each object (0 inside it), then the two smallest per pixel
    dist = np.stack([ndimage.distance_transform_edt(~m.numpy()) for m in cells])
    d = torch.from_numpy(np.sort(dist, axis=0)[:2]).float()
    border = w0 * torch.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return w + border * (target == 0)


def weighted_ce_from_scratch(logits, target, weight_map):
    """-mean_x w(x) log p_{l(x)}(x): the U-Net objective with the minus sign of a loss."""
    log_p = F.log_softmax(logits, dim=1)  # [N, K, H, W]
    log_p_true = log_p.gather(1, target[:, None])[
        :, 0
    ]  # log p of the true class, [N, H, W]
    return -(weight_map * log_p_true).mean()


def separation_set(shapes):
    """Targets with separation borders, the objects without their borders, and w(x) (w_c = 1)."""
    pairs = [
        separation_targets(m, s)
        for m, s in zip(shapes.instance_masks, shapes.masks, strict=True)
    ]
    targets = torch.stack([t for t, _ in pairs])
    weights = torch.stack([unet_weight_map(cells, t) for t, cells in pairs])
    return targets, [cells for _, cells in pairs], weights


sep = {
    name: separation_set(s)
    for name, s in (("train", train_set), ("val", val_set), ("test", test_set))
}
border_px = (train_set.masks > 0) & (sep["train"][0] == 0)
median_freq_weights = pixel_freq.median() / pixel_freq

# the full map (median-frequency w_c) on the training scene with the most separation-border pixels
best = int(border_px.flatten(1).sum(1).argmax())
w_map = unet_weight_map(
    sep["train"][1][best], sep["train"][0][best], median_freq_weights
)[None]
target_best = sep["train"][0][best : best + 1]
logits_rand = torch.randn(
    1, NUM_CLASSES, 32, 32, generator=torch.Generator().manual_seed(0)
)
loss_scratch = weighted_ce_from_scratch(logits_rand, target_best, w_map)
loss_torch = (
    w_map * F.cross_entropy(logits_rand, target_best, reduction="none")
).mean()
torch.testing.assert_close(loss_scratch, loss_torch)
assert loss_scratch > 0, (
    "a loss to minimise: the minus sign makes the weighted log-likelihood positive"
)
print(
    f"weighted CE from scratch {loss_scratch:.4f} == torch's per-pixel CE times w(x)"
)
print(
    f"separation borders: {int(border_px.sum())} of {int((train_set.masks > 0).sum())} object pixels"
)
print(
    f"mean of w(x) (w_c = 1) over the training pixels: {sep['train'][2].mean():.2f}"
)

# %% tags=["hide-input"]
peak_row = int(w_map[0].amax(1).argmax())
fig, axes = plt.subplots(
    1, 5, figsize=(15, 3.2), width_ratios=[1, 1, 1, 1.2, 1.4]
)
axes[0].imshow(train_set.images[best].permute(1, 2, 0).numpy())
axes[0].axhline(peak_row, color=viz.color(5), lw=0.8, ls="--")
axes[0].set_title("training scene")
axes[1].imshow(
    overlay(
        train_set.images[best], instance_id_map(train_set.instance_masks[best])
    )
)
axes[1].set_title("instances")
axes[2].imshow(viz.mask_to_rgb(sep["train"][0][best], NUM_CLASSES))
axes[2].set_title("target with separation borders")
im = axes[3].imshow(w_map[0].numpy(), cmap="magma")
axes[3].set_title("w(x): median-frequency w_c + border")
fig.colorbar(im, ax=axes[3], shrink=0.8)
axes[4].plot(w_map[0, peak_row].numpy(), color=viz.color(0), marker="o", ms=3)
axes[4].set(
    xlabel="column",
    ylabel="w(x)",
    title=f"row {peak_row} of w(x) (dashed line)",
)
for ax in axes[:4]:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
plt.show()

# %% [markdown]
# The one-pixel borders between touching objects, and the background in narrow gaps, weigh several
# times more than the open background; with the median-frequency $w_c$ shown here every object pixel
# also weighs about as much as its class is rare. The borders are a small fraction of the object
# pixels (printed above), so a plain cross-entropy can neglect them at almost no cost in loss or in
# mIoU, and then two touching objects of one class come out as one connected blob. PyTorch's own
# `F.cross_entropy(weight=...)` takes *per-class* weights only (and normalises differently,
# exercise 2); per-pixel maps are multiplied in by hand as above.
#
# ### Training a U-Net, with and without the weight map
#
# `cnn.UNet` with three levels of 8, 16 and 32 channels, trained on the separation targets with
# `train.fit` for 11 epochs of 32 batches of 16 scenes (Adam at a peak learning rate of 0.01,
# one-cycle schedule stepped per batch), once with the plain cross-entropy and once with $w(x)$. Both
# runs share every setting, the learning rate included: Adam's steps do not depend on the scale of
# the loss, so the weight map's mean (printed above) does not change the effective step size.
# (Tuning the learning rate on validation would take two more runs per candidate rate, beyond this
# chapter's budget; and the validation curves below show why short proxy runs would not do: the mIoU
# climbs late and steeply.) The validation mIoU is computed on the 128 validation scenes after every
# epoch; the test scenes are used once per model.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
unet = cnn.UNet(3, NUM_CLASSES, widths=(8, 16, 32)).to(device)
print(f"U-Net parameters: {sum(p.numel() for p in unet.parameters()):,}")
print(
    "output shape:", tuple(unet(torch.zeros(2, 3, 32, 32, device=device)).shape)
)


# %% tags=["hide-input"]
viz.diagram(
    {"x": (-2.5, 0, "image\n3×32×32", "io"),
     "e1": (0, 0, "double conv 3→8\n8×32×32", "conv"),
     "e2": (1.2, -1.5, "max-pool, double conv\n8→16: 16×16×16", "conv"),
     "b": (2.4, -3.0, "max-pool, double conv\n16→32: 32×8×8", "conv"),
     "u2": (5.0, -3.0, "T-conv 2×2, stride 2\n32→16: 16×16×16", "up"),
     "c2": (5.0, -1.5, "c", "op"),
     "d2": (7.4, -1.5, "double conv 32→16\n16×16×16", "conv"),
     "u1": (9.8, -1.5, "T-conv 2×2, stride 2\n16→8: 8×32×32", "up"),
     "c1": (9.8, 0, "c", "op"),
     "d1": (12.2, 0, "double conv 16→8\n8×32×32", "conv"),
     "h": (12.2, -1.5, "1×1 conv 8→4\nscores 4×32×32", "head")},
    [("x", "e1"), ("e1", "e2"), ("e2", "b"), ("b", "u2"), ("u2", "c2"), ("e2", "c2", "--", "copy"),
     ("c2", "d2", "-", "32×16×16"), ("d2", "u1"), ("u1", "c1"), ("e1", "c1", "--", "copy"),
     ("c1", "d1", "-", "16×32×32"), ("d1", "h")],
    block_size=(2.2, 0.75),
    title="The U-Net trained here: cnn.UNet(3, 4, widths=(8, 16, 32)); c = concatenate channels",
)  # fmt: skip
plt.show()


# %%
def plain_ce(logits, target_and_weight):
    return F.cross_entropy(logits, target_and_weight[0])


def weighted_ce(logits, target_and_weight):
    return weighted_ce_from_scratch(logits, *target_and_weight)


def miou_metric(logits, target_and_weight):
    return metrics.mean_iou(logits.argmax(1), target_and_weight[0], NUM_CLASSES)


def fit_unet(loss_fn, lr, desc, epochs=11):
    """A fresh U-Net trained on the separation targets; returns the model and its History."""
    torch.manual_seed(0)
    model = cnn.UNet(3, NUM_CLASSES, widths=(8, 16, 32)).to(device)
    pairs = {  # (image, (target, w)) items, so that one loader serves both losses
        split: list(
            zip(
                s.images,
                zip(sep[split][0], sep[split][2], strict=True),
                strict=True,
            )
        )
        for split, s in (("train", train_set), ("val", val_set))
    }
    loader = DataLoader(
        pairs["train"],
        batch_size=16,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val_loader = DataLoader(pairs["val"], batch_size=len(val_set))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * len(loader), pct_start=0.2
    )
    history = train.fit(
        model,
        loader,
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=loss_fn,
        val_loader=val_loader,
        metrics={"miou": miou_metric},
        scheduler=schedule,
        scheduler_step="batch",
        device=device,
        desc=desc,
    )
    return model, history


unet_runs = {
    "plain CE": fit_unet(plain_ce, 1e-2, "U-Net, plain CE"),
    "weight map": fit_unet(weighted_ce, 1e-2, "U-Net, weight map"),
}
unet, history = unet_runs["plain CE"]
# %% tags=["hide-input"]
viz.plot_curves(
    {name: h["val_miou"] for name, (_, h) in unet_runs.items()},
    ylabel="validation mIoU",
    title="U-Net on the separation targets",
)
plt.show()

# %%
unet_pred = segment(unet, test_set.images)
wmap_name = "weight map"
wmap_pred = segment(unet_runs[wmap_name][0], test_set.images)
unet_cm = metrics.confusion_matrix(unet_pred, sep["test"][0], NUM_CLASSES)
unet_miou = metrics.mean_iou(unet_pred, sep["test"][0], NUM_CLASSES).item()
wmap_miou = metrics.mean_iou(wmap_pred, sep["test"][0], NUM_CLASSES).item()
raw_miou = metrics.mean_iou(unet_pred, test_set.masks, NUM_CLASSES).item()
print(
    f"U-Net (plain CE) test mIoU {unet_miou:.3f} ({raw_miou:.3f} against the masks without borders)"
)
print(f"U-Net ({wmap_name}) test mIoU {wmap_miou:.3f}")
print(
    "IoU per class:",
    [round(v, 3) for v in metrics.iou_from_confusion(unet_cm).tolist()],
)
assert unet_miou > 0.8, f"U-Net test mIoU {unet_miou:.3f}, expected > 0.8"
assert wmap_miou > 0.8, (
    f"U-Net with the weight map: test mIoU {wmap_miou:.3f}, expected > 0.8"
)

# %% tags=["hide-input"]
errors = {i: (unet_pred[i] != sep["test"][0][i]) for i in SHOW}
rows = {
    "image": [rgb[i] for i in SHOW],
    "target": [viz.mask_to_rgb(sep["test"][0][i], 4) for i in SHOW],
    f"U-Net\nmIoU {unet_miou:.3f}": [
        viz.mask_to_rgb(unet_pred[i], 4) for i in SHOW
    ],
    "wrong pixels": [viz.mask_to_rgb(errors[i].long() * 4, 5) for i in SHOW],
}
show_rows(
    rows,
    f"U-Net on the test scenes ({sum(int(e.sum()) for e in errors.values())} wrong pixels shown)",
)
plt.show()

confusions = {
    "FCN coarse": metrics.confusion_matrix(
        fcn_pred["coarse (stride 8)"], test_set.masks, NUM_CLASSES
    ),
    "FCN skips": metrics.confusion_matrix(
        fcn_pred["skips (8 + 4 + 2)"], test_set.masks, NUM_CLASSES
    ),
    "U-Net": metrics.confusion_matrix(unet_pred, test_set.masks, NUM_CLASSES),
}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), width_ratios=[1, 1, 1.2])
for ax, name in zip(axes[:2], ("FCN coarse", "U-Net"), strict=True):
    cmat = confusions[name]
    cm_norm = cmat.double() / cmat.sum(1, keepdim=True)
    ax.imshow(cm_norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(cmat.numpy()):
        tone = "white" if cm_norm[r, c] > 0.5 else viz.color(7)
        ax.text(
            c,
            r,
            f"{v:,}\n{cm_norm[r, c]:.1%}",
            ha="center",
            va="center",
            fontsize=8,
            color=tone,
        )
    ax.set(
        xticks=range(4),
        yticks=range(4),
        xticklabels=CLASSES,
        yticklabels=CLASSES,
        xlabel="predicted",
        ylabel="true",
        title=f"{name}: confusion matrix (pixels, row %)",
    )
    ax.grid(False)
for k, (name, cmat) in enumerate(confusions.items()):
    ious = metrics.iou_from_confusion(cmat).numpy()
    axes[2].bar(
        np.arange(4) + (k - 1) * 0.27,
        ious,
        width=0.27,
        color=viz.color(k),
        label=name,
    )
axes[2].set(
    xticks=range(4),
    xticklabels=CLASSES,
    ylabel="IoU",
    ylim=(0, 1.22),
    title="IoU per class on the test set (masks without borders)",
)
axes[2].legend(fontsize=8, loc="upper center", ncol=3)
plt.show()

# %% [markdown]
# On these scenes U-Net leaves room: the three object classes have IoUs of roughly 0.9, and the
# confusion matrix shows where the errors go (object pixels given to the background and the other way
# round, and object pixels given a wrong class). The coarse FCN's confusion matrix shows where its errors go: object
# pixels lost to the background (the first column) and background painted as object around the
# blobs (the first row). (The FCNs trained for 120 steps, U-Net for 352, and U-Net has a real decoder:
# compare the FCNs with each other rather than with U-Net.)
#
# ### What the weight map does: separating touching objects
#
# mIoU hardly sees the separation borders: they are a fraction of a percent of the pixels. What they
# decide is the *instances*. We split each predicted class region into connected components
# (4-connectivity, `scipy.ndimage.label`) and count a true object as **recovered** when a component
# of its class covers it with an IoU of at least 0.5. The objects that touch another object *of the
# same class* are the hard case: without a border in the prediction they merge. Two references: the
# true masks without borders (what a perfect plain segmentation would give) and the separation
# targets (which recover every object by construction).


# %%
def touches_same_class(instance_masks, labels):
    """Tensor[K] bool: object k shares a border with another object of its class."""
    grown = [
        torch.from_numpy(ndimage.binary_dilation(m.numpy(), CROSS))
        for m in instance_masks
    ]
    return torch.tensor(
        [
            any(
                labels[b] == labels[a] and (grown[a] & instance_masks[b]).any()
                for b in range(len(labels))
                if b != a
            )
            for a in range(len(labels))
        ],
        dtype=torch.bool,
    )


def recovered_iou(pred, shapes):
    """Per true object (all images concatenated): its best IoU with a connected component of its class."""
    best_iou = []
    for i in range(len(shapes)):
        for mask, label in zip(
            shapes.instance_masks[i], shapes.labels[i].tolist(), strict=True
        ):
            components, n = ndimage.label((pred[i] == label + 1).numpy(), CROSS)
            comp = (
                torch.from_numpy(components)[None]
                == torch.arange(1, n + 1)[:, None, None]
            )
            ious = (comp & mask).flatten(1).sum(1) / (comp | mask).flatten(
                1
            ).sum(1)
            best_iou.append(ious.max().item() if n else 0.0)
    return torch.tensor(best_iou)


hard = torch.cat(
    [
        touches_same_class(m, lab)
        for m, lab in zip(test_set.instance_masks, test_set.labels, strict=True)
    ]
)
test_borders = (test_set.masks > 0) & (sep["test"][0] == 0)
separation = {}
for name, pred in (
    ("true masks, no borders", test_set.masks),
    ("separation targets", sep["test"][0]),
    ("U-Net, plain CE", unet_pred),
    (f"U-Net, {wmap_name}", wmap_pred),
):
    rec = recovered_iou(pred, test_set) >= 0.5
    separation[name] = {
        "all": rec.float().mean().item(),
        "touching": rec[hard].float().mean().item(),
        "borders": (pred[test_borders] == 0).float().mean().item(),
    }
print(
    f"{len(hard)} test objects, {int(hard.sum())} touching an object of their class"
)
for name, r in separation.items():
    print(
        f"{name:32s} recovered: all {r['all']:.3f}, touching same class {r['touching']:.3f}; "
        f"border pixels predicted as background {r['borders']:.3f}"
    )

# %%
plain_sep, wmap_sep = (
    separation["U-Net, plain CE"],
    separation[f"U-Net, {wmap_name}"],
)
assert wmap_sep["borders"] > plain_sep["borders"] + 0.25, (
    f"the weight map should teach the borders: {wmap_sep['borders']:.3f} vs {plain_sep['borders']:.3f} without"
)
assert wmap_sep["touching"] > plain_sep["touching"] + 0.2, (
    f"the weight map should separate touching objects of a class: recovered {wmap_sep['touching']:.3f}, "
    f"{plain_sep['touching']:.3f} without"
)
# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8, 3.2))
for k, stat in enumerate(("all", "touching", "borders")):
    ax.bar(
        np.arange(len(separation)) + (k - 1) * 0.26,
        [r[stat] for r in separation.values()],
        width=0.26,
        color=viz.color(k),
        label={
            "all": "objects recovered",
            "touching": "touching objects recovered",
            "borders": "borders found",
        }[stat],
    )
ax.set(
    xticks=range(len(separation)),
    xticklabels=[n.replace(", ", "\n", 1) for n in separation],
    ylim=(0, 1.15),
)
ax.set_title(
    "Instances from connected components of the semantic prediction (test set)"
)
ax.legend(fontsize=8, ncol=3, loc="upper center")
plt.show()

# %% [markdown]
# Without the weight map, U-Net finds only a minority of the one-pixel borders, and fewer than half
# of the objects that touch one of their class come out as their own component (the true masks
# without borders, which merge every such pair, still recover some of them: a merged pair can
# cover one of its objects with an IoU above 0.5). With $w(x)$ it finds most of the borders and
# recovers clearly more of the touching objects, and its mIoU does not suffer: the weight map buys
# instance separation, which the mIoU hardly measures. Far from perfect, though: one missed border
# pixel is enough to merge two components. The validation curves also show why short runs mislead
# here: the validation mIoU stays low for the first few epochs and then climbs steeply.
#
# ## DeepLab: atrous convolution and ASPP
#
# DeepLab (Chen et al., 2018) names three problems of a classification backbone used for
# segmentation, and one answer to each:
#
# 1. **Reduced resolution** after five stride-2 stages (output stride 32): remove the stride of the
#    last stages and **dilate** the convolutions that follow, so that they keep the receptive field
#    they had.
# 2. **Objects at several scales**: **atrous spatial pyramid pooling** (ASPP), parallel dilated
#    convolutions with different rates on the same map, fused.
# 3. **Blurry boundaries**: a fully connected **CRF** (Krähenbühl and Koltun, 2011) as
#    post-processing, where each pixel's label also depends on the labels of similar-looking pixels
#    (DeepLab v3 dropped it).
#
# ### Atrous (dilated) convolution
#
# A $k\times k$ kernel with **rate** (dilation) $r$ places its taps $r$ pixels apart:
#
# $$
# y[i, j] = \sum_{a, b} w[a, b]\; x[i + r a,\; j + r b], \qquad k_\text{eff} = k + (k - 1)(r - 1).
# $$
#
# A $3\times3$ kernel at rate 2 covers $5\times5$ and at rate 3 covers $7\times7$, always with 9
# weights. The same thing from scratch: a dense convolution with a kernel into which $r - 1$ zeros
# were inserted between the taps.

# %%
g = torch.Generator().manual_seed(2)
x_d, w_d = (
    torch.randn(1, 2, 20, 20, generator=g),
    torch.randn(4, 2, 3, 3, generator=g),
)
for rate in (1, 2, 3):
    k_eff = 3 + 2 * (rate - 1)
    w_holes = torch.zeros(4, 2, k_eff, k_eff)
    w_holes[..., ::rate, ::rate] = w_d  # the "holes" (trous) between the taps
    torch.testing.assert_close(
        F.conv2d(x_d, w_holes), F.conv2d(x_d, w_d, dilation=rate)
    )
print(
    "dilated conv == dense conv with zeros inserted into the kernel, for rates 1, 2, 3"
)


def footprint(net, size=41):
    """Which input pixels reach the centre output pixel: the input-gradient of that one output."""
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    out = net(x)
    (grad,) = torch.autograd.grad(
        out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2], x
    )
    return grad[0, 0]


def ones_conv(rate, k=3):
    conv = nn.Conv2d(
        1, 1, k, padding=rate * (k - 1) // 2, dilation=rate, bias=False
    )
    nn.init.ones_(conv.weight)
    return conv


def extent(fp):
    """Side of the bounding square of the non-zero footprint."""
    rows = torch.nonzero(fp.abs().sum(1)).flatten()
    return int(rows.max() - rows.min() + 1)


# %%
# NBVAL_CHECK_OUTPUT
single = {rate: footprint(ones_conv(rate)) for rate in (1, 2, 3)}
for rate, fp in single.items():
    print(
        f"rate {rate}: covers {extent(fp)}x{extent(fp)} pixels with {int((fp != 0).sum())} non-zero taps"
    )

# %% [markdown]
# **What atrous convolution buys, correctly stated.** The lecture notes say atrous convolution gives a
# "smaller" image with less computation. It does the opposite. DeepLab removes a stride, so the
# feature map stays *larger* (output stride 8 instead of 32: 16 times more positions), and dilates
# the following kernels so that each output still sees as far as before, **with no extra
# parameters**. Compared with the downsampled network the compute *grows* with the number of
# positions. "Cheaper" is true only against the alternative that reaches the same field of view at
# the same resolution with a dense, larger kernel.
#
# The table compares one $3\times3$ layer with 64 channels on a 64×64 image, at the end of a backbone:
# at output stride 16 ($4\times4$ map), at output stride 8 with and without rate 2, and with a dense
# $5\times5$ kernel. "Reach" is the distance in image pixels from the centre to the farthest tap.

# %%
# NBVAL_CHECK_OUTPUT
C_FEAT = 64
variants = {
    "stride 16, 3x3": (16, 3, 1),
    "stride 8, 3x3 (no dilation)": (8, 3, 1),
    "stride 8, 3x3 rate 2 (atrous)": (8, 3, 2),
    "stride 8, 5x5 dense": (8, 5, 1),
}
print(
    f"{'variant':31s} {'map':>5s} {'params':>8s} {'MACs':>10s} {'reach (px)':>10s}"
)
for name, (stride, k, rate) in variants.items():
    layer = nn.Conv2d(
        C_FEAT,
        C_FEAT,
        k,
        padding=rate * (k - 1) // 2,
        dilation=rate,
        bias=False,
    )
    side = 64 // stride
    feat = torch.zeros(1, C_FEAT, side, side)
    reach = rate * (k - 1) // 2 * stride  # taps x rate x cell size
    params = sum(p.numel() for p in layer.parameters())
    print(
        f"{name:31s} {side:>2d}x{side:<2d} {params:>8,} {count_macs(layer, feat):>10,} {reach:>10d}"
    )

# %% [markdown]
# The atrous layer keeps the reach of the stride-16 layer (16 pixels) on a map with 4 times as many
# positions, with the same 36,864 weights; it costs 4 times the multiply-adds of the stride-16
# layer, and 2.8 times fewer than the dense $5\times5$ kernel with the same reach. Without the
# dilation, the stride-8 layer would see only half as far.
#
# DeepLab applies this to the backbone: a pooling or strided layer gets stride 1, and every
# convolution after it gets rate 2 (rate 4 after a second one). The receptive field in image pixels
# stays exactly what it was. Below, a small network *conv, 2×2 average pool (stride 2), conv* is
# compared with *conv, 2×2 pool with stride 1, conv at rate 2*: the second keeps (almost) the input's
# size, 39 instead of 20, with the same weights and the same footprint.

# %%
# NBVAL_CHECK_OUTPUT
downsampled = nn.Sequential(
    ones_conv(1), nn.AvgPool2d(2, stride=2), ones_conv(1)
)
atrous = nn.Sequential(ones_conv(1), nn.AvgPool2d(2, stride=1), ones_conv(2))
fp_down, fp_atrous = footprint(downsampled, 40), footprint(atrous, 40)
print(
    "output size for a 40x40 input:",
    downsampled(torch.zeros(1, 1, 40, 40)).shape[-1],
    "vs",
    atrous(torch.zeros(1, 1, 40, 40)).shape[-1],
)
print(
    "weights:",
    sum(p.numel() for p in downsampled.parameters()),
    "vs",
    sum(p.numel() for p in atrous.parameters()),
)
print("footprint side:", extent(fp_down), "vs", extent(fp_atrous))
assert extent(fp_down) == extent(fp_atrous)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 5, figsize=(14, 3.2))
for ax, (rate, fp) in zip(axes, single.items(), strict=False):
    ax.imshow(fp[14:27, 14:27].numpy() != 0, cmap="Blues", vmin=0, vmax=1.4)
    ax.set_title(
        f"3×3, rate {rate}: {extent(fp)}×{extent(fp)} span, 9 taps", fontsize=9
    )
for ax, (name, fp) in zip(
    axes[3:],
    {
        "conv, pool /2, conv": fp_down,
        "conv, pool /1, conv rate 2": fp_atrous,
    }.items(),
    strict=True,
):
    ax.imshow(fp[13:27, 13:27].numpy(), cmap="Blues")
    ax.set_title(f"{name}\nfootprint {extent(fp)}×{extent(fp)}", fontsize=9)
for ax in axes:
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
fig.suptitle(
    "Which input pixels reach one output (gradient of the output w.r.t. the input)"
)
plt.show()

# %% [markdown]
# ### Stacking dilated convolutions: the gridding problem
#
# The footprint of a stack of $3\times3$ layers with rates $r_1, r_2, \dots$ spans
# $1 + 2\sum_l r_l$ pixels. Whether it *covers* that span depends on the rates: if they share a
# common factor (2, 2, 2), every tap of every layer lands on an even offset and the odd pixels are
# never seen, a regular grid of holes (Wang et al., 2018). Rates without a common factor and with a
# small first rate, such as (1, 2, 5), cover the whole span, and so do rates that start at 1 and grow
# no faster than the span they follow ((1, 2, 4)). The grid below draws four stacks; the widget after
# it lets you choose the three rates.


# %%
def draw_stack_footprint(ax, rates, size=41):
    net = nn.Sequential(*[ones_conv(r) for r in rates])
    fp = footprint(net, size)
    span = 1 + 2 * sum(rates)
    lo = size // 2 - span // 2
    window = fp[lo : lo + span, lo : lo + span]
    coverage = (window != 0).double().mean().item()
    # the same zoom for every stack that fits in 25 x 25
    side = max(25, span + 4)
    c0 = size // 2 - side // 2
    ax.imshow(fp[c0 : c0 + side, c0 : c0 + side].numpy(), cmap="viridis")
    edge = lo - c0 - 0.5
    ax.add_patch(
        Rectangle(
            (edge, edge),
            span,
            span,
            fill=False,
            edgecolor=viz.color(1),
            lw=1,
            ls="--",
        )
    )
    ax.set_title(
        f"rates {tuple(rates)}: span {span}×{span}, {coverage:.0%} covered",
        fontsize=9,
    )
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
    return coverage


STACKS = [(1, 1, 1), (2, 2, 2), (1, 2, 5), (3, 3, 3)]
fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
stack_coverage = {
    rates: draw_stack_footprint(ax, rates)
    for ax, rates in zip(axes, STACKS, strict=True)
}
fig.suptitle(
    "Footprint of three stacked 3×3 convolutions (colour: number of paths; dashed: the span)"
)
plt.show()
assert stack_coverage[(2, 2, 2)] < 0.3 and stack_coverage[(1, 2, 5)] == 1.0

# %% [markdown]
# Explore: try (2, 4, 8) and (1, 2, 4); (1, 3, 9) and (1, 4, 6). Which rate sequences leave holes?


# %%
def explore_rates(rate1=1, rate2=2, rate3=5):
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    draw_stack_footprint(ax, (rate1, rate2, rate3))
    plt.show()


_ = widgets.interact(
    explore_rates,
    rate1=widgets.IntSlider(value=1, min=1, max=6, description="rate 1"),
    rate2=widgets.IntSlider(value=2, min=1, max=6, description="rate 2"),
    rate3=widgets.IntSlider(value=5, min=1, max=6, description="rate 3"),
)

# %% [markdown]
# ### ASPP and spatial pyramid pooling
#
# **Spatial pyramid pooling** (SPP, He et al., 2015) max-pools a feature map of any size to fixed
# grids, $1\times1$, $2\times2$ and $4\times4$, and concatenates the results into a vector of
# $C\,(1 + 4 + 16)$ numbers: a fixed-length input for a classifier, whatever the image size.
#
# **ASPP** (DeepLab v3, Chen et al., 2017) keeps the map and looks at it through several fields of
# view at once: a $1\times1$ convolution, three $3\times3$ convolutions at rates 6, 12, 18 (at output
# stride 16), and an *image-level* branch (global average pooling, $1\times1$ convolution, upsampled
# back). The five outputs are concatenated and projected by a $1\times1$ convolution. The image-level
# branch exists because a rate close to the map size degenerates: most taps of a rate-18 kernel on a
# 33×33 map fall on the zero padding, and as the rate grows the $3\times3$ kernel turns into its
# centre weight, a $1\times1$ convolution; the pooled branch brings the global context back.
# `cnn.ASPP` is the same module as torchvision's, so torchvision's weights load into it.


# %%
# NBVAL_CHECK_OUTPUT
def spp(x, levels=(1, 2, 4)):
    return torch.cat(
        [F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], dim=1
    )


for hw in ((32, 32), (48, 40)):
    print(
        f"SPP of a [2, 16, {hw[0]}, {hw[1]}] map: {tuple(spp(torch.randn(2, 16, *hw)).shape)} (16 x 21 = 336)"
    )

torch.manual_seed(0)
aspp_tv = TorchvisionASPP(32, [2, 4, 6], out_channels=16).eval()
aspp = cnn.ASPP(32, 16, rates=(2, 4, 6)).eval()
aspp.load_state_dict(aspp_tv.state_dict())
feat = torch.randn(2, 32, 8, 8)
with torch.no_grad():
    torch.testing.assert_close(aspp(feat), aspp_tv(feat))
print(
    f"ASPP: {tuple(feat.shape)} -> {tuple(aspp(feat).shape)},",
    f"{sum(p.numel() for p in aspp.parameters()):,} parameters",
)
print("cnn.ASPP == torchvision's deeplabv3 ASPP (same state_dict, same output)")

# %% tags=["hide-input"]
branches = [
    "1×1 conv 32→16\n+ norm, ReLU",
    "3×3 conv, rate 2\n+ norm, ReLU",
    "3×3 conv, rate 4\n+ norm, ReLU",
    "3×3 conv, rate 6\n+ norm, ReLU",
    "image pooling: avg,\n1×1 conv, upsample",
]
blocks = {
    "x": (6.0, 0, "features 32×8×8\n(stride 16 in DeepLab)", "io"),
    "c": (6.0, -4.8, "c", "op"),
    "p": (6.0, -6.0, "1×1 conv 80→16\n+ norm, ReLU, dropout", "conv"),
    "y": (9.2, -6.0, "16×8×8", "io"),
}
edges = [("c", "p", "-", "80×8×8"), ("p", "y")]
for k, label in enumerate(branches):
    blocks[f"br{k}"] = (3.0 * k, -2.2, label, "pool" if k == 4 else "conv")
    edges += [
        ("x", f"br{k}", "-", "32×8×8" if k == 0 else None),
        (f"br{k}", "c", "-", "16×8×8" if k == 0 else None),
    ]
viz.diagram(blocks, edges, block_size=(2.6, 0.75),
            title="ASPP as checked above: cnn.ASPP(32, 16, rates=(2, 4, 6)), c = concatenate channels\n"
            "(DeepLab v3: rates 6, 12, 18 at output stride 16, 256 channels)")  # fmt: skip
plt.show()

# %% [markdown]
# ### DeepLab v3+: a light decoder
#
# DeepLab v3 upsamples its stride-16 (or 8) scores bilinearly, which blurs the boundaries. DeepLab
# v3+ (Chen et al., 2018b) adds a small decoder (the lecture notes' description is garbled):
#
# 1. the encoder's ASPP output (stride 16) is upsampled bilinearly 4× to stride 4;
# 2. low-level backbone features at stride 4 go through a $1\times1$ convolution that reduces them
#    to few channels (48), so that they do not outweigh the semantic features;
# 3. the two are concatenated and refined by two $3\times3$ convolutions;
# 4. a $1\times1$ classifier and a last bilinear 4× upsampling give the full-resolution scores.
#
# A sketch with course_lib's blocks, checked for shapes on random features of a 64×64 image:


# %%
class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on stride-16 features, fused with reduced stride-4 features, then upsampled to the image."""

    def __init__(
        self,
        low_channels,
        high_channels,
        num_classes,
        width=32,
        low_width=8,
        rates=(1, 2, 3),
    ):
        super().__init__()
        self.aspp = cnn.ASPP(high_channels, width, rates=rates)
        self.reduce = cnn.ConvNormAct(low_channels, low_width, 1)
        self.fuse = nn.Sequential(
            cnn.ConvNormAct(width + low_width, width),
            cnn.ConvNormAct(width, width),
        )
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, low, high, image_size):
        # stride 16 -> 4
        x = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear")
        x = self.fuse(torch.cat([x, self.reduce(low)], dim=1))
        # stride 4 -> 1
        return F.interpolate(self.classify(x), size=image_size, mode="bilinear")


# %%
# NBVAL_CHECK_OUTPUT
decoder = DeepLabV3PlusDecoder(
    low_channels=16, high_channels=64, num_classes=NUM_CLASSES
).eval()
# strides 4 and 16 of 64x64
low_feat, high_feat = (torch.randn(2, 16, 16, 16), torch.randn(2, 64, 4, 4))
print(
    "DeepLab v3+ decoder:", tuple(decoder(low_feat, high_feat, (64, 64)).shape)
)

# %% tags=["hide-input"]
viz.diagram(
    {"high": (0, 0, "stride-16 features\n64×4×4", "io"),
     "aspp": (2.7, 0, "ASPP 64→32\nrates 1, 2, 3", "conv"),
     "up1": (5.4, 0, "bilinear ×4\n32×16×16", "up"),
     "low": (0, -1.5, "stride-4 features\n16×16×16", "io"),
     "red": (2.7, -1.5, "1×1 conv 16→8\n8×16×16", "conv"),
     "c": (5.4, -1.5, "c", "op"),
     "fuse": (8.1, -1.5, "2 × conv 3×3\n40→32→32", "conv"),
     "cls": (10.8, -1.5, "1×1 conv 32→4\n4×16×16", "head"),
     "up2": (13.5, -1.5, "bilinear ×4\n4×64×64", "up")},
    [("high", "aspp"), ("aspp", "up1"), ("up1", "c"), ("low", "red"), ("red", "c"),
     ("c", "fuse", "-", "40×16×16"), ("fuse", "cls"), ("cls", "up2")],
    block_size=(2.2, 0.75),
    title="The DeepLab v3+ decoder sketched above, with the shapes of its check (a 64×64 image)",
)  # fmt: skip
plt.show()

# %% [markdown]
# ## Two more ideas in brief: GCN and SPADE
#
# The lecture notes list both with a heading and no content. Here is what they are.
#
# ### Global convolutional network (GCN)
#
# Peng et al. (2017) argue that a pixel's *class* needs a large context (classification wants
# invariance) while its *location* needs a dense, full-resolution map, and that a kernel as large as
# the feature map serves both. A dense $k\times k$ kernel costs $k^2 C_\text{in} C_\text{out}$
# weights, so GCN sums two separable paths, $k\times1$ then $1\times k$ and $1\times k$ then
# $k\times1$: $2k\,(C_\text{in} + C_\text{out})\,C_\text{out}$ weights for the same $k\times k$
# footprint. A small residual *boundary refinement* block follows.


# %%
class GlobalConv(nn.Module):
    """GCN block: (k x 1 -> 1 x k) + (1 x k -> k x 1): a k x k footprint, O(k) weights per channel pair."""

    def __init__(self, c_in, c_out, k):
        super().__init__()
        p = k // 2
        self.left = nn.Sequential(
            nn.Conv2d(c_in, c_out, (k, 1), padding=(p, 0)),
            nn.Conv2d(c_out, c_out, (1, k), padding=(0, p)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(c_in, c_out, (1, k), padding=(0, p)),
            nn.Conv2d(c_out, c_out, (k, 1), padding=(p, 0)),
        )

    def forward(self, x):
        return self.left(x) + self.right(x)


# %%
# NBVAL_CHECK_OUTPUT
K_GCN, C_GCN = 15, 64
gcn = GlobalConv(C_GCN, C_GCN, K_GCN)
gcn_weights = sum(
    m.weight.numel() for m in gcn.modules() if isinstance(m, nn.Conv2d)
)
assert gcn_weights == 2 * K_GCN * (C_GCN + C_GCN) * C_GCN
gcn_1 = GlobalConv(1, 1, K_GCN)
for m in gcn_1.modules():
    if isinstance(m, nn.Conv2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
fp_gcn = footprint(gcn_1, 31)
print(
    f"GCN k={K_GCN}: footprint {extent(fp_gcn)}x{extent(fp_gcn)},",
    f"all covered: {bool((fp_gcn[8:23, 8:23] != 0).all())}",
)
print(
    f"weights: GCN {gcn_weights:,} vs dense {K_GCN}x{K_GCN} conv {K_GCN**2 * C_GCN * C_GCN:,}"
)

# %% [markdown]
# ### SPADE: spatially-adaptive normalization
#
# SPADE (Park et al., 2019) runs the other way: it *generates* an image from a segmentation map.
# Feeding the map only at the input fails, because normalization layers wash it out: a conv layer
# applied to a region of constant label gives a constant response, and instance normalization maps
# any constant to zero, so "all sky" and "all grass" become the same tensor. SPADE normalizes the
# activations $h$ without a learned affine step and then modulates them with a scale and a shift
# *computed from the map* $m$, at every layer and every pixel:
#
# $$
# \mathrm{SPADE}(h, m)_{c,y,x} = \gamma_{c,y,x}(m)\,\frac{h_{c,y,x} - \mu_c}{\sigma_c} + \beta_{c,y,x}(m),
# $$
#
# with $\mu_c, \sigma_c$ the batch statistics of channel $c$ and $\gamma, \beta$ produced by a small
# convolutional network on the (resized) one-hot map. (The reference code uses $1 + \gamma$, so that
# the layer starts close to plain normalization.)


# %%
class SPADE(nn.Module):
    """Batch norm without affine parameters, then a per-pixel scale and shift predicted from the label map."""

    def __init__(self, channels, num_labels, hidden=16):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(
            nn.Conv2d(num_labels, hidden, 3, padding=1), nn.ReLU()
        )
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, h, segmap):
        segmap = F.interpolate(segmap, size=h.shape[-2:], mode="nearest")
        a = self.shared(segmap)
        return self.norm(h) * (1 + self.gamma(a)) + self.beta(a)


# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
all_label = {
    k: F.one_hot(torch.full((1, 16, 16), k), NUM_CLASSES)
    .permute(0, 3, 1, 2)
    .float()
    for k in (1, 2)
}
conv_in = nn.Sequential(
    nn.Conv2d(NUM_CLASSES, 8, 3, padding=1, padding_mode="reflect"),
    nn.InstanceNorm2d(8),
)
with torch.no_grad():
    washed = {k: conv_in(m) for k, m in all_label.items()}
    h = torch.randn(1, 8, 16, 16)
    spade = SPADE(8, NUM_CLASSES).eval()
    modulated = {k: spade(h, m) for k, m in all_label.items()}
same_washed = torch.allclose(washed[1], washed[2], atol=1e-4)
same_spade = torch.allclose(modulated[1], modulated[2], atol=1e-4)
assert same_washed and washed[1].abs().max() < 1e-4 and not same_spade
print(
    "label map at the input, conv + instance norm: 'all circle' == 'all square' == 0?",
    same_washed,
)
print("SPADE(h, 'all circle') == SPADE(h, 'all square')?", same_spade)

# %% [markdown]
# ## Losses for segmentation: cross-entropy and Dice
#
# The default loss is the per-pixel cross-entropy, averaged over all pixels. With 85 % background,
# most of its terms are about background pixels, and for a rare class the early optimum is simply
# never to predict it. Three answers are common:
#
# - **weighted cross-entropy**: multiply the terms of class $c$ by $w_c$ (inverse or median
#   frequency, as in U-Net's $w_c$); for a binary mask, `pos_weight` $= N_\text{neg}/N_\text{pos}$;
# - **Dice loss** (Milletari et al., 2016): optimise the overlap itself (below);
# - both at once: cross-entropy + Dice is a common default in medical imaging.
#
# With predicted probabilities $p_i$ and a binary target $g_i$ over the pixels $i$ (of one image, or
# of the whole batch as below), the soft Dice loss is
#
# $$
# \mathcal L_\text{Dice} = 1 - \frac{2\sum_i p_i g_i + \epsilon}{\sum_i p_i + \sum_i g_i + \epsilon},
# $$
#
# averaged over the classes for a multi-class problem. For hard masks the fraction is the Dice
# coefficient $2|A\cap B|/(|A| + |B|)$, which is the F1 score of the pixels and equals $2J/(1+J)$ for
# the IoU $J$ ([chapter 03](../03_losses/03_losses.ipynb), exercise 3). True-negative pixels do not
# appear in it at all: a million correct background pixels add nothing, so the loss is about the
# rare class whatever its size. The price: the probabilities it produces are not calibrated, and its
# gradient is noisy when the target is tiny or empty (the $\epsilon$ keeps an empty target from
# dividing by zero).


# %%
def dice_loss(logits, target, eps=1.0):
    """Soft Dice loss of sigmoid(logits) against a binary target, over the whole batch."""
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + eps) / (p.sum() + target.sum() + eps)


# the same as course_lib's version, which also has the multi-class (softmax) form; we use it below
check_logits = torch.randn(
    4, 16, 16, generator=torch.Generator().manual_seed(0)
)
check_target = (
    torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.8
).float()
torch.testing.assert_close(
    dice_loss(check_logits, check_target),
    losses.dice_loss(check_logits, check_target),
)


# hard masks (logits of +-50 give probabilities of exactly 0 or 1): the Dice coefficient is the F1 score
hard_pred = (test_set.masks[:16] == 1) | (toy_pred[:16] == 1)
hard_true = test_set.masks[:16] == 1
dice_coef = 1 - dice_loss(
    torch.where(hard_pred, 50.0, -50.0), hard_true.float(), eps=0.0
)
torch.testing.assert_close(
    dice_coef.item(), f1_score(hard_true.flatten(), hard_pred.flatten())
)
iou_circle = (
    (hard_pred & hard_true).sum() / (hard_pred | hard_true).sum()
).item()
torch.testing.assert_close(dice_coef.item(), 2 * iou_circle / (1 + iou_circle))
print(
    f"Dice {dice_coef:.4f} == F1 (scikit-learn) == 2J/(1+J) with J = {iou_circle:.4f}"
)

# %% [markdown]
# **An imbalanced experiment.** The task: find the *triangles*, and only them, in scenes with one or
# two small objects. Triangles cover less than half a percent of the pixels. (This experiment is about
# rarity, so the scenes have the default, clean look.) A small fully convolutional network (three
# $3\times3$ layers at rates 1, 2, 4, so a 15-pixel footprint) is trained for 150 steps with each of
# three losses: BCE, BCE with `pos_weight` $= N_\text{neg}/N_\text{pos}$, and Dice.
#
# A fair comparison must not hand one loss the other's settings. Each loss gets its own peak learning
# rate (0.01 or 0.03, chosen on validation) and its own decision threshold (chosen on validation,
# since a loss that weights the positives shifts every probability up, and one that ignores the rare
# class shifts them down). We also report a **threshold-free** score, the average precision (AP) of
# the pixel probabilities: the area under the precision-recall curve over all thresholds, which
# measures how well the probabilities *rank* triangle pixels above the others.

# %%
small = {
    split: data.make_shapes(n, 32, max_objects=2, radius=(0.06, 0.1), seed=seed)
    for split, n, seed in (
        ("train", 512, 21),
        ("val", 128, 23),
        ("test", 128, 22),
    )
}
tri = {split: s.masks == 3 for split, s in small.items()}
tri_train = tri["train"].float()
pos_weight = (1 - tri_train.mean()) / tri_train.mean()
print(
    f"triangle pixels: {tri_train.mean():.2%} of the training set; pos_weight = {pos_weight:.0f}"
)


def tiny_segmenter():
    return nn.Sequential(
        cnn.ConvNormAct(3, 8),
        cnn.ConvNormAct(8, 8, dilation=2),
        cnn.ConvNormAct(8, 8, dilation=4),
        nn.Conv2d(8, 1, 1),
    ).to(device)


def pixel_scores(prob, truth, threshold):
    """IoU, recall and precision of the pixels with prob > threshold."""
    pred = prob > threshold
    tp = (pred & truth).sum().item()
    return {
        "IoU": tp / max((pred | truth).sum().item(), 1),
        "recall": tp / truth.sum().item(),
        "precision": tp / max(pred.sum().item(), 1),
    }


imbalance_losses = {
    "BCE": lambda out, y: F.binary_cross_entropy_with_logits(out[:, 0], y),
    "weighted BCE": lambda out, y: F.binary_cross_entropy_with_logits(
        out[:, 0], y, pos_weight=pos_weight.to(y.device)
    ),
    "Dice": lambda out, y: losses.dice_loss(out[:, 0], y),
}
THRESHOLDS = torch.tensor(
    [0.02, 0.05, *np.arange(0.1, 0.91, 0.1).round(2).tolist(), 0.95, 0.98]
)
imbalance_prob, imbalance_scores = {}, {}
for name, loss_fn in imbalance_losses.items():
    candidates = {}
    for lr in (1e-2, 3e-2):
        torch.manual_seed(0)
        model = tiny_segmenter()
        train_steps(
            model,
            small["train"].images,
            tri_train,
            loss_fn,
            steps=150,
            lr=lr,
            desc=f"{name}, lr {lr:g}",
        )
        model.eval()
        with torch.no_grad():
            probs = {
                s: torch.sigmoid(model(small[s].images.to(device))[:, 0]).cpu()
                for s in ("val", "test")
            }
        val_ap = average_precision_score(
            tri["val"].flatten(), probs["val"].flatten()
        )
        candidates[lr] = (val_ap, probs)
    # the learning rate with the best validation AP
    lr = max(candidates, key=lambda k: candidates[k][0])
    probs = candidates[lr][1]
    val_iou = [
        pixel_scores(probs["val"], tri["val"], t)["IoU"]
        for t in THRESHOLDS.tolist()
    ]
    threshold = THRESHOLDS[int(np.argmax(val_iou))].item()
    imbalance_prob[name] = probs["test"]
    imbalance_scores[name] = {
        "lr": lr,
        "threshold": threshold,
        "AP": average_precision_score(
            tri["test"].flatten(), probs["test"].flatten()
        ),
        "IoU (tuned)": pixel_scores(probs["test"], tri["test"], threshold)[
            "IoU"
        ],
        **{
            f"{k} at 0.5": v
            for k, v in pixel_scores(probs["test"], tri["test"], 0.5).items()
        },
    }

# %% tags=["hide-input"]
tri_test = tri["test"]
show = [i for i in range(len(tri_test)) if tri_test[i].any()][:7]
rows = {
    "image": [small["test"].images[i].permute(1, 2, 0).numpy() for i in show],
    "triangle mask": [viz.mask_to_rgb(tri_test[i].long() * 3, 4) for i in show],
}
for name, prob in imbalance_prob.items():
    rows[f"{name}\np(triangle)"] = [
        plt.cm.magma(prob[i].numpy())[..., :3] for i in show
    ]
show_rows(rows, "Predicted triangle probability (black 0, white 1)")
plt.show()

STATS = ("AP", "IoU (tuned)", "IoU at 0.5", "recall at 0.5", "precision at 0.5")
fig, ax = plt.subplots(figsize=(9, 3.4))
for k, stat in enumerate(STATS):
    vals = [imbalance_scores[name][stat] for name in imbalance_losses]
    ax.bar(
        np.arange(3) + (k - 2) * 0.16,
        vals,
        width=0.16,
        color=viz.color(k),
        label=stat,
    )
ax.set(
    xticks=range(3),
    xticklabels=list(imbalance_losses),
    ylim=(0, 1.05),
    ylabel="test value",
    title=f"Finding the {tri_train.mean():.2%} of pixels that are triangles (150 steps, tuned lr and threshold)",
)
ax.legend(fontsize=8, ncol=3)
plt.show()

# %%
for name, s in imbalance_scores.items():
    print(
        f"{name:12s} lr {s['lr']:g}, threshold {s['threshold']:.2f}: AP {s['AP']:.3f}, "
        f"IoU {s['IoU (tuned)']:.3f} (at 0.5: {s['IoU at 0.5']:.3f}, recall {s['recall at 0.5']:.3f}, "
        f"precision {s['precision at 0.5']:.3f})"
    )
bce, wbce, dice = (imbalance_scores[k] for k in ("BCE", "weighted BCE", "Dice"))
assert dice["AP"] > bce["AP"] + 0.2, (
    f"Dice should rank triangle pixels better than BCE: AP {dice['AP']:.3f} vs {bce['AP']:.3f}"
)
assert dice["IoU (tuned)"] > bce["IoU (tuned)"] + 0.2, (
    f"Dice should beat BCE at their own thresholds: IoU {dice['IoU (tuned)']:.3f} vs {bce['IoU (tuned)']:.3f}"
)
assert (
    dice["AP"] > wbce["AP"] + 0.05
    and dice["IoU (tuned)"] > wbce["IoU (tuned)"] + 0.1
), (
    f"Dice should beat weighted BCE: AP {dice['AP']:.3f} vs {wbce['AP']:.3f}, "
    f"IoU {dice['IoU (tuned)']:.3f} vs {wbce['IoU (tuned)']:.3f}"
)
assert wbce["recall at 0.5"] > bce["recall at 0.5"] + 0.3, (
    f"pos_weight should raise the recall at 0.5: {wbce['recall at 0.5']:.3f} vs {bce['recall at 0.5']:.3f}"
)

# %% [markdown]
# At the default threshold of 0.5, plain BCE finds almost no triangle pixel: it has learned that
# triangles are rare, and its probabilities stay low. That part of the old story is about the
# threshold, not about what the network learned: with a threshold tuned on validation BCE does find
# triangles, and its AP is far from 0. Weighting the positives by their rarity pushes every
# probability up, so that its best threshold is high; it raises the recall at 0.5 at the price of
# precision. After tuning both the learning rate and the threshold for every loss, Dice still ranks
# the triangle pixels best (highest AP) and reaches the highest IoU in this budget of 150 steps.
#
# What this does and does not show: with a tiny network, a short run and a class covering half a
# percent of the pixels, the loss decides how far training gets. BCE is not wrong, only slow on a rare
# class and calibrated to its frequency; with much longer training the gap would shrink, and we have
# not measured where it closes.
#
# ## Instance segmentation with Mask R-CNN
#
# Three families of methods separate the objects:
#
# - **segment first, then classify**: propose candidate segments and classify them (with Fast R-CNN
#   in early work); slow, and only as good as the proposals;
# - **semantic first, then split**: label pixels, then cut each class region into instances (by
#   grouping, embeddings or predicted centres);
# - **instance first**: detect boxes, then segment inside each box. **Mask R-CNN** (He et al., 2017)
#   is the standard one. FCIS (Li et al., 2017) predicts position-sensitive maps that give classes,
#   boxes and masks in one pass.
#
# Mask R-CNN is a detector with a mask branch added. Detectors are the subject of
# [chapter 08](../08_detection/08_detection.ipynb); what the mask branch needs from one is little: for
# every image a list of boxes, the **regions of interest** (RoIs), each with a class. (The detector
# Mask R-CNN extends, Faster R-CNN, finds them in two stages: a *region proposal network* proposes
# boxes that may contain an object, and a second head classifies each proposal and refines its box;
# chapter 08 builds both.) For every RoI, the **mask head**, a small FCN, predicts $K$ masks of
# $m\times m$ logits, one per class ($m = 28$ in the paper, 56 for keypoints), keeping the spatial
# layout instead of flattening it. In this chapter the ground-truth boxes and classes stand in for the
# detector's output, so that everything below is about the mask branch. The two changes that made it
# work, neither of which the lecture notes mention:
#
# 1. **RoIAlign** instead of RoIPool, to read the RoI's features without rounding its coordinates;
# 2. a per-pixel **sigmoid binary cross-entropy** on the mask of the **ground-truth class only**. The
#    classes do not compete for a pixel (no softmax over classes); the class head decides the class,
#    the mask head only the shape.
#
# In the full model the loss per RoI is $\mathcal L = \mathcal L_\text{cls} + \mathcal L_\text{box}
# + \mathcal L_\text{mask}$, the first two from the detector's heads. Keypoints use the same head with one $m\times m$ map per keypoint type (left
# shoulder, ...), trained as a softmax over the $m^2$ positions, with the keypoint's pixel as the only
# target.
#
# ### RoIPool and its quantization
#
# Both operations turn a box of any size into a fixed $P\times P$ grid of features, so that one head
# can process every RoI. This chapter owns their from-scratch versions; chapter 08 uses the same
# operations in its detectors and points back here.
#
# RoIPool (Fast R-CNN, Girshick 2015) maps a box given in image pixels onto the feature map at scale
# $s$ (1/stride) and **rounds** its corners to whole feature cells (C's `round`, halves away from
# zero, unlike Python's `round`); torchvision treats the rounded $x_2, y_2$ as *inclusive* cell
# indices, the old Caffe convention. It divides the rounded box into $P\times P$ bins whose borders are
# **rounded again**, outwards (floor for the start, ceil for the end, so neighbouring bins can share
# a row), and max-pools each bin; an empty bin gives 0. Every rounding moves the window by up to half
# a feature cell, which is 8 image pixels at stride 16: harmless for classification, visible in a
# 28×28 mask.


# %%
def roi_pool_loop(features, boxes, output_size, spatial_scale):
    """RoIPool with explicit loops and torchvision's rounding. boxes: Tensor[K, 5] (index, x1, y1, x2, y2)."""
    _, c, h, w = features.shape
    out = torch.zeros(len(boxes), c, output_size, output_size)
    for k, (b, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        # round half away from zero, as C's round(): corners to whole cells
        x1, y1, x2, y2 = (
            int(np.floor(v * spatial_scale + 0.5)) for v in (x1, y1, x2, y2)
        )
        # x2 and y2 count as inclusive
        bin_h = max(y2 - y1 + 1, 1) / output_size
        bin_w = max(x2 - x1 + 1, 1) / output_size
        for i in range(output_size):
            for j in range(output_size):
                r0 = min(max(int(np.floor(i * bin_h)) + y1, 0), h)
                r1 = min(max(int(np.ceil((i + 1) * bin_h)) + y1, 0), h)
                c0 = min(max(int(np.floor(j * bin_w)) + x1, 0), w)
                c1 = min(max(int(np.ceil((j + 1) * bin_w)) + x1, 0), w)
                if r1 > r0 and c1 > c0:  # an empty bin stays 0
                    out[k, :, i, j] = features[int(b), :, r0:r1, c0:c1].amax(
                        dim=(-2, -1)
                    )
    return out


g = torch.Generator().manual_seed(3)
feat_maps = torch.randn(2, 3, 10, 12, generator=g)
rois = torch.tensor(
    [
        [0, 3.3, 5.9, 30.1, 27.4],
        [1, 0.0, 0.0, 47.0, 39.0],
        [0, 10.6, 2.2, 17.9, 9.8],
    ]
)
torch.testing.assert_close(
    roi_pool_loop(feat_maps, rois, 3, spatial_scale=0.25),
    roi_pool(feat_maps, rois, 3, spatial_scale=0.25),
)
# when the box falls on whole cells and P divides it, nothing is rounded: a 2x2 max-pool of the region
# (the image box (16, 8, 120, 112) at stride 8 has corners at cells (2, 1) and (15, 14), inclusive:
# 14 x 14 cells, pooled to P = 7)
fmap_big = torch.randn(1, 4, 20, 24, generator=g)
exact = roi_pool(
    fmap_big,
    torch.tensor([[0.0, 16.0, 8.0, 120.0, 112.0]]),
    7,
    spatial_scale=1 / 8,
)
torch.testing.assert_close(
    exact[0], F.max_pool2d(fmap_big[0, :, 1:15, 2:16], 2)
)
print(
    "RoIPool with loops == torchvision.ops.roi_pool; on a whole-cell 14x14 box it is max_pool2d(2)"
)

# %% [markdown]
# ### RoIAlign
#
# RoIAlign (Mask R-CNN) keeps the box in continuous coordinates. Each of the $P\times P$ bins has the
# exact size $\frac{y_2 - y_1}{P}\times\frac{x_2 - x_1}{P}$ (in feature cells); inside it, a regular
# grid of $n_h\times n_w$ points is sampled and averaged, at the centres of an $n_h\times n_w$
# subdivision of the bin. A point between cell centres takes the **bilinear interpolation** of its
# four neighbours:
#
# $$
# f(y, x) = \sum_{y_k \in \{\lfloor y\rfloor, \lfloor y\rfloor + 1\}}\;
# \sum_{x_l \in \{\lfloor x\rfloor, \lfloor x\rfloor + 1\}} (1 - |y - y_k|)\,(1 - |x - x_l|)\, f(y_k, x_l).
# $$
#
# Two arguments of `torchvision.ops.roi_align` control the details:
#
# - **`sampling_ratio`** $n$: $n\times n$ points per bin. With $n \le 0$ (torchvision's default, $-1$)
#   the grid adapts to the box: $n_h = \lceil (y_2 - y_1)/P\rceil$ and $n_w = \lceil (x_2 - x_1)/P\rceil$,
#   about one point per feature cell, so that a large box is not undersampled. Mask R-CNN's reference
#   code uses a fixed $n = 2$.
# - **`aligned`**: feature cell $j$ covers the continuous interval $[j, j + 1)$, so its value sits at
#   its centre $j + \frac12$. A continuous coordinate $u$ (image pixels times $s$) therefore lies at
#   $u s - \frac12$ on the grid of cell centres, the array indices that the interpolation uses. The
#   original implementation skipped this half-cell shift (`aligned=False`), which samples every
#   box half a cell down and to the right of where it is, and it also forced boxes to be at least one
#   cell wide. Use `aligned=True`.
#
# Points just outside the map are clamped to its border, points more than one cell outside read 0, as
# in torchvision.


# %%
def bilinear_sample(features, ys, xs):
    """features: Tensor[K, C, H, W]; ys: Tensor[K, A] rows; xs: Tensor[K, B] columns -> Tensor[K, C, A, B]."""
    _, _, h, w = features.shape

    def corners(u, size):
        inside = (u >= -1) & (u <= size)  # farther out: the sample reads 0
        u = u.clamp(min=0)
        low = u.floor().long()
        at_edge = low >= size - 1
        low = torch.where(at_edge, size - 1, low)
        high = torch.where(at_edge, size - 1, low + 1)
        frac = torch.where(at_edge, 0.0, u - low)
        return low, high, frac, inside

    y0, y1, fy, in_y = corners(ys, h)
    x0, x1, fx, in_x = corners(xs, w)
    k = torch.arange(len(features))[:, None, None]

    def read(yi, xi):  # -> [K, C, A, B]
        return features[k, :, yi[:, :, None], xi[:, None, :]].permute(
            0, 3, 1, 2
        )

    wy0, wy1 = (1 - fy)[:, None, :, None], fy[:, None, :, None]
    wx0, wx1 = (1 - fx)[:, None, None, :], fx[:, None, None, :]
    out = (
        wy0 * wx0 * read(y0, x0)
        + wy0 * wx1 * read(y0, x1)
        + wy1 * wx0 * read(y1, x0)
        + wy1 * wx1 * read(y1, x1)
    )
    return out * (in_y[:, None, :, None] & in_x[:, None, None, :])


def roi_align_scratch(
    features, boxes, output_size, spatial_scale, sampling_ratio=-1, aligned=True
):
    """RoIAlign: the mean of n_h x n_w bilinear samples per bin. boxes: Tensor[K, 5] (index, x1, y1, x2, y2).

    sampling_ratio <= 0 picks n_h, n_w = ceil(bin height), ceil(bin width) per box, as torchvision does.
    Returns Tensor[K, C, output_size, output_size].
    """
    # continuous coordinate -> grid of cell centres
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (boxes[:, 1:] * spatial_scale - offset).unbind(1)
    h_roi, w_roi = y2 - y1, x2 - x1
    if not aligned:  # the legacy version makes every box at least one cell wide
        h_roi, w_roi = h_roi.clamp(min=1.0), w_roi.clamp(min=1.0)
    P = output_size

    def pool(
        k, n_h, n_w
    ):  # the boxes k, with an n_h x n_w grid of samples per bin
        ys = (
            y1[k, None]
            + (torch.arange(P * n_h) + 0.5)[None]
            / n_h
            * (h_roi[k] / P)[:, None]
        )  # [K, P n_h]
        xs = (
            x1[k, None]
            + (torch.arange(P * n_w) + 0.5)[None]
            / n_w
            * (w_roi[k] / P)[:, None]
        )
        # [K, C, P n_h, P n_w]
        samples = bilinear_sample(features[boxes[k, 0].long()], ys, xs)
        # the mean of each bin's samples
        return F.avg_pool2d(samples, (n_h, n_w))

    if sampling_ratio > 0:
        return pool(torch.arange(len(boxes)), sampling_ratio, sampling_ratio)
    grids = [
        (math.ceil(h / P), math.ceil(w / P))
        for h, w in zip(h_roi.tolist(), w_roi.tolist(), strict=True)
    ]
    return torch.cat(
        [pool(torch.tensor([k]), *grid) for k, grid in enumerate(grids)]
    )


rois_all = torch.cat(
    [
        rois,
        torch.tensor(
            [[1, -6.0, -3.0, 20.0, 50.0], [0, 20.0, 12.0, 21.0, 13.0]]
        ),
    ]  # partly outside; tiny
)
for aligned in (True, False):
    for n in (1, 2, 3, -1):
        torch.testing.assert_close(
            roi_align_scratch(feat_maps, rois_all, 4, 0.25, n, aligned),
            roi_align(
                feat_maps,
                rois_all,
                4,
                spatial_scale=0.25,
                sampling_ratio=n,
                aligned=aligned,
            ),
        )
print(
    "RoIAlign from scratch == torchvision.ops.roi_align, aligned True and False, sampling ratios 1, 2, 3, adaptive"
)

# %%
# NBVAL_CHECK_OUTPUT
ramp = torch.arange(16.0).repeat(16, 1)[
    None, None
]  # f(row, col) = col: cell j holds j
# covers cells 2, 3, 4, 5: their mean is 3.5
whole_cells = torch.tensor([[0, 2.0, 2.0, 6.0, 6.0]])
for aligned in (True, False):
    value = roi_align_scratch(ramp, whole_cells, 1, 1.0, 4, aligned)[0, 0, 0, 0]
    print(
        f"aligned={aligned!s:5}: mean over the box covering cells 2-5 = {value:.2f}"
    )

# %% [markdown]
# The aligned version returns the mean of exactly the cells the box covers; the legacy one reads
# the box half a cell to the right (4.00 instead of 3.50 on this ramp). From here on we use
# torchvision's `roi_align(aligned=True)` and `roi_pool`, which the functions above reproduce.
#
# The figure draws both on an 8×8 feature map (stride 4 of a 32×32 image) for one box, and then
# slides the box to the right in steps of 0.1 feature cell over a feature map that is a ramp
# ($f = $ column index): RoIPool's output moves in jumps of a whole cell, RoIAlign's follows the box.

# %% tags=["hide-input"]
# in feature cells (spatial scale 1)
box_feat = torch.tensor([1.35, 1.7, 5.6, 6.2])
P = 2
fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), width_ratios=[1, 1, 1.3])
for ax, title in zip(
    axes[:2],
    ("RoIPool: rounded box and bins", "RoIAlign: exact bins, 2×2 samples each"),
    strict=True,
):
    for i in range(9):
        ax.axhline(i, color=viz.color("reference"), lw=0.5)
        ax.axvline(i, color=viz.color("reference"), lw=0.5)
    ax.add_patch(
        Rectangle(
            box_feat[:2].tolist(),
            *(box_feat[2:] - box_feat[:2]).tolist(),
            fill=False,
            lw=2,
            color=viz.color(0),
            label="box",
        )
    )
    ax.set(
        xlim=(0, 8),
        ylim=(8, 0),
        aspect="equal",
        title=title,
        xlabel="feature column",
        ylabel="feature row",
    )
    ax.grid(False)
# RoIPool: rounded corners, inclusive end cells, floor/ceil bins (as in roi_pool_loop)
rx1, ry1, rx2, ry2 = (int(np.floor(v + 0.5)) for v in box_feat.tolist())
bh, bw = (ry2 - ry1 + 1) / P, (rx2 - rx1 + 1) / P
for i in range(P):
    for j in range(P):
        r0, r1 = int(np.floor(i * bh)) + ry1, int(np.ceil((i + 1) * bh)) + ry1
        c0, c1 = int(np.floor(j * bw)) + rx1, int(np.ceil((j + 1) * bw)) + rx1
        axes[0].add_patch(
            Rectangle(
                (c0, r0),
                c1 - c0,
                r1 - r0,
                alpha=0.25,
                color=viz.color(1 + i * P + j),
            )
        )
axes[0].text(0.2, 7.7, "bins overlap and spill past the box", fontsize=8)
# RoIAlign: exact bins and their sample points (cell j covers [j, j + 1))
bx1, by1, bx2, by2 = box_feat.tolist()
for i in range(P):
    for j in range(P):
        y0b, x0b = by1 + i * (by2 - by1) / P, bx1 + j * (bx2 - bx1) / P
        axes[1].add_patch(
            Rectangle(
                (x0b, y0b),
                (bx2 - bx1) / P,
                (by2 - by1) / P,
                alpha=0.25,
                color=viz.color(1 + i * P + j),
            )
        )
        for a in range(2):
            for b in range(2):
                axes[1].plot(
                    x0b + (b + 0.5) * (bx2 - bx1) / P / 2,
                    y0b + (a + 0.5) * (by2 - by1) / P / 2,
                    "o",
                    ms=4,
                    color=viz.color(7),
                )
axes[1].text(0.2, 7.7, "each dot: bilinear from 4 cell centres", fontsize=8)
ramp = torch.arange(16.0).repeat(16, 1)[None, None]  # f(row, col) = col
shifts = torch.arange(0, 3.01, 0.1)
moving = torch.stack(
    [
        torch.zeros_like(shifts),
        2 + shifts,
        torch.full_like(shifts, 2.0),
        6.3 + shifts,
        torch.full_like(shifts, 6.0),
    ],
    1,
)
pooled = roi_pool(ramp, moving, 2, spatial_scale=1.0)[:, 0, 0, 0]
aligned_v = roi_align(
    ramp, moving, 2, spatial_scale=1.0, sampling_ratio=2, aligned=True
)[:, 0, 0, 0]
axes[2].step(
    shifts,
    pooled,
    where="post",
    color=viz.color(1),
    label="RoIPool (max of the bin)",
)
axes[2].plot(
    shifts, aligned_v, color=viz.color(0), label="RoIAlign (mean of the bin)"
)
axes[2].set(
    xlabel="shift of the box (feature cells)",
    ylabel="output of the top-left bin",
    title="Box sliding over a ramp f = column",
)
axes[2].legend(fontsize=8)
plt.show()

# %% [markdown]
# ### A mask head trained on ground-truth boxes
#
# We train the mask branch alone, on the ground-truth boxes of the training scenes, where half the
# objects touch a neighbour. (Mask R-CNN trains it on the detector's proposals that overlap an
# object, which are not exactly tight; exercise 4 tests our head on jittered boxes.) The model:
#
# - a two-layer **backbone** (16 channels, full resolution) over the whole image;
# - **RoIAlign** of every box to $14\times14$ features (`aligned=True`, 2×2 samples per bin);
# - the **mask head**: three $3\times3$ conv layers (at rates 1, 2 and 4, so that every output cell
#   sees the whole RoI, which it needs to tell its object from a neighbour), a $2\times2$ transposed
#   convolution to $28\times28$ (as in the paper) and a $1\times1$ convolution to one mask per class
#   ($K=3$).
#
# The **targets** are the instance masks cut out by the same RoIAlign at $28\times28$ and thresholded
# at 0.5. The **loss** is the BCE of the ground-truth class's channel only; 150 steps of Adam. At test
# time each predicted $28\times28$ mask is resized to its box and pasted into the image, where its IoU
# with the true instance mask is measured.
#
# Two baselines. The box itself used as a mask. And **foreground in the box**: every pixel inside the
# box that a semantic segmentation calls foreground counts as the object (here the foreground of the
# U-Net trained above). It is a strong baseline on isolated objects and fails exactly when a neighbour
# enters the box: it takes the neighbour's pixels too. We call a box **contested** when it contains
# pixels of another object, and report those boxes separately, together with the fraction of the
# neighbours' pixels inside the box that the head leaves out (the baseline leaves out none). The same
# baseline with the *true* foreground is printed as well: an oracle that makes no foreground errors
# at all.


# %%
class MaskRCNNLite(nn.Module):
    """Backbone -> RoIAlign to 14x14 -> FCN mask head -> K masks of 28x28 logits per box."""

    def __init__(self, num_classes=3, width=16):
        super().__init__()
        self.backbone = nn.Sequential(
            cnn.ConvNormAct(3, width), cnn.ConvNormAct(width, width)
        )
        self.mask_head = nn.Sequential(
            *(
                cnn.ConvNormAct(width, width, dilation=rate)
                for rate in (1, 2, 4)
            ),
            nn.ConvTranspose2d(width, width, 2, stride=2),  # 14 -> 28
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, images, boxes):
        """images: Tensor[N, 3, H, W]; boxes: N Tensor[K_i, 4] -> logits Tensor[sum K_i, classes, 28, 28]."""
        rois = roi_align(
            self.backbone(images),
            boxes,
            14,
            spatial_scale=1.0,
            sampling_ratio=2,
            aligned=True,
        )
        return self.mask_head(rois)


# %% tags=["hide-input"]
viz.diagram(
    {"x": (0, 0, "image\n3×32×32", "io"),
     "bb": (3.0, 0, "backbone: 2 × conv 3×3\n16×32×32", "conv"),
     "boxes": (3.0, -1.4, "K boxes (ground truth;\nch. 08: a detector)", "io"),
     "roi": (6.0, 0, "RoIAlign 14×14\naligned, 2×2 samples", "pool"),
     "head": (9.0, 0, "3 × conv 3×3\nrates 1, 2, 4", "conv"),
     "up": (12.0, 0, "T-conv 2×2, stride 2\n→ 28×28, 1×1 conv", "up"),
     "sel": (12.0, -1.4, "true class's channel\n(training: sigmoid BCE)", "head"),
     "paste": (9.0, -1.4, "resize to the box,\np > 0.5, paste", "other"),
     "y": (6.0, -1.4, "K masks\nK×32×32", "io")},
    [("x", "bb"), ("bb", "roi"), ("boxes", "roi"), ("roi", "head", "-", "K×16×14×14"), ("head", "up"),
     ("up", "sel", "-", "K×3×28×28"), ("sel", "paste", "-", "K×28×28"), ("paste", "y")],
    block_size=(2.3, 0.75),
    title="MaskRCNNLite: boxes → RoIAlign → mask head → one pasted mask per box",
)  # fmt: skip
plt.show()


# %%
def mask_targets(instance_masks, boxes, m=28):
    """Each instance mask [K, H, W] cut out by its own box and resized to m x m, thresholded at 0.5."""
    index = torch.arange(len(boxes), dtype=boxes.dtype)[:, None]
    cut = roi_align(
        instance_masks[:, None].float(),
        torch.cat([index, boxes], 1),
        m,
        1.0,
        2,
        aligned=True,
    )
    return (cut[:, 0] >= 0.5).float()


def paste_masks(mask_logits, boxes, size):
    """Resize each [m, m] logit map to its box and threshold at 0 (p = 0.5) -> Tensor[K, size, size] bool."""
    out = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        resized = F.interpolate(
            mask_logits[k][None, None], size=(y2 - y1, x2 - x1), mode="bilinear"
        )
        out[k, y1:y2, x1:x2] = resized[0, 0] > 0
    return out


def mask_iou(a, b):
    return (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1)


def train_mask_head(model, shapes, steps=150, lr=1e-2, batch=16, seed=0):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=steps, pct_start=0.2
    )
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in trange(steps, desc="mask head"):
        idx = torch.randint(0, len(shapes), (batch,), generator=gen).tolist()
        boxes = [shapes.boxes[i].to(device) for i in idx]
        labels = torch.cat([shapes.labels[i] for i in idx]).to(device)
        target = mask_targets(
            torch.cat([shapes.instance_masks[i] for i in idx]),
            torch.cat([shapes.boxes[i] for i in idx]),
        )
        logits = model(shapes.images[idx].to(device), boxes)
        gt_class_logits = logits[
            torch.arange(len(labels), device=device), labels
        ]  # the true class's mask
        loss = F.binary_cross_entropy_with_logits(
            gt_class_logits, target.to(device)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


torch.manual_seed(0)
mask_model = MaskRCNNLite().to(device)
mask_losses = train_mask_head(mask_model, train_set)
# %% tags=["hide-input"]
viz.plot_curves(
    {"train_mask_bce": mask_losses},
    xlabel="step",
    ylabel="BCE",
    title="Mask head training",
    logy=True,
)
plt.show()


# %%
@torch.no_grad()
def predict_masks(model, shapes, boxes=None):
    """Pasted masks of the true class for every box (default: the true boxes), all images concatenated."""
    model.eval()
    boxes = shapes.boxes if boxes is None else boxes
    logits = model(
        shapes.images.to(device), [b.to(device) for b in boxes]
    ).cpu()
    labels = torch.cat(shapes.labels)
    return paste_masks(
        logits[torch.arange(len(labels)), labels],
        torch.cat(boxes),
        shapes.images.shape[-1],
    )


test_boxes = torch.cat(test_set.boxes)
test_instances = torch.cat(test_set.instance_masks)
image_of = torch.repeat_interleave(
    torch.arange(len(test_set)), torch.tensor([len(b) for b in test_set.boxes])
)
in_box = paste_masks(torch.ones(len(test_boxes), 28, 28), test_boxes, 32)
# other objects' pixels in the box
neighbours = in_box & (test_set.masks[image_of] > 0) & ~test_instances
contested = neighbours.flatten(1).any(1)
mask_preds = {
    "mask head": predict_masks(mask_model, test_set),
    "box": in_box,
    "foreground in box (U-Net)": in_box & (unet_pred[image_of] > 0),
    "foreground in box (true)": in_box & (test_set.masks[image_of] > 0),
}
mask_results = {}
for name, masks in mask_preds.items():
    ious = mask_iou(masks, test_instances)
    left_out = (neighbours & ~masks).sum() / neighbours.sum()
    mask_results[name] = {
        "all": ious.mean().item(),
        "contested": ious[contested].mean().item(),
        "left out": left_out.item(),
    }
    print(
        f"{name:26s} mask IoU: all {len(ious)} boxes {mask_results[name]['all']:.3f}, "
        f"{int(contested.sum())} contested {mask_results[name]['contested']:.3f}; "
        f"neighbour pixels left out {mask_results[name]['left out']:.3f}"
    )

# %%
head, fg_box = (
    mask_results["mask head"],
    mask_results["foreground in box (U-Net)"],
)
assert head["contested"] > fg_box["contested"] + 0.02, (
    f"on contested boxes the head ({head['contested']:.3f}) should beat foreground-in-box ({fg_box['contested']:.3f})"
)
assert head["left out"] > fg_box["left out"] + 0.4, (
    f"the head should leave out most neighbour pixels: {head['left out']:.3f}, baseline {fg_box['left out']:.3f}"
)
assert head["all"] > mask_results["box"]["all"] + 0.1, (
    f"the head ({head['all']:.3f}) should beat the box as a mask ({mask_results['box']['all']:.3f})"
)

# %% tags=["hide-input"]
# the six test boxes with the most neighbour pixels inside, one mask per panel
most_contested = torch.argsort(neighbours.flatten(1).sum(1), descending=True)[
    :6
].tolist()
rows_shown = {
    "true mask": test_instances,
    "foreground in box": mask_preds["foreground in box (U-Net)"],
    "mask head": mask_preds["mask head"],
}
fig, axes = plt.subplots(3, 6, figsize=(12, 6.6))
for col, k in enumerate(most_contested):
    label, truth = int(torch.cat(test_set.labels)[k]), test_instances[k]
    for row, (name, masks) in enumerate(rows_shown.items()):
        # 1 (blue): object pixels kept, 2 (orange): other pixels taken, 3 (green): object pixels missed
        code = torch.zeros(truth.shape, dtype=torch.int64)
        (
            code[masks[k] & truth],
            code[masks[k] & ~truth],
            code[~masks[k] & truth],
        ) = 1, 2, 3
        ax = axes[row, col]
        ax.imshow(overlay(test_set.images[image_of[k]], code, alpha=0.7))
        viz.draw_boxes(
            ax,
            test_boxes[k][None],
            [data.SHAPE_CLASSES[label]],
            color_index=[label],
        )
        ax.set(xticks=[], yticks=[])
        ax.grid(False)
        axes[row, 0].set_ylabel(name)
fig.suptitle(
    "The six most contested test boxes, one mask each: blue = the object's pixels kept,\n"
    "orange = pixels of something else taken, green = the object's pixels missed",
    fontsize=10,
)
plt.show()

# %% [markdown]
# On the contested boxes the foreground-in-the-box baseline takes every neighbour pixel that its
# segmentation calls foreground; the head leaves most of them out, because it has learned that the
# mask it predicts belongs to the object the box fits, of the class whose channel is read. That is
# what the mask branch adds to a semantic segmentation, and it shows in the IoU of the contested
# boxes, where the head roughly halves the baseline's error. The oracle baseline, which knows the
# true foreground and so makes no mistake on the noise and clutter, is about even with the head on
# the contested boxes: the head's remaining errors are of the other kind, pixels lost to noise rather
# than to neighbours.
#
# ## Summary
#
# | idea | what it does | in code |
# |---|---|---|
# | semantic / instance masks | a class per pixel / a mask per object | `data.make_shapes(...).masks`, `.instance_masks` |
# | confusion matrix, mIoU | IoU per class from TP, FP, FN accumulated over the dataset | `metrics.confusion_matrix`, `metrics.mean_iou` |
# | fully convolutional | FC layers as convolutions: all crops in one pass | `nn.Conv2d` with the FC weights reshaped |
# | transposed convolution | multiply by $C^\top$: the gradient of a convolution; learned upsampling | `nn.ConvTranspose2d` |
# | checkerboard | uneven or parity-dependent kernel overlaps | resize-conv: `cnn.UNet(up="bilinear")` |
# | FCN skips | add scores of finer layers (zero-initialised) to the coarse scores upsampled by a learned, bilinear-initialised transposed convolution | `TinyFCN` above |
# | U-Net | symmetric decoder, concatenated encoder features | `cnn.UNet` |
# | weighted CE | $-\frac1{\lvert\Omega\rvert}\sum_x w(x) \log p_{\ell(x)}(x)$ (note the minus) | per-pixel CE × $w$ |
# | separation border, $w(x)$ | background between touching objects, weighted by $w_0 e^{-(d_1+d_2)^2/2\sigma^2}$ | `separation_targets`, `unet_weight_map` above |
# | atrous convolution | same weights, larger map, same reach; more compute than the strided net | `nn.Conv2d(dilation=r)` |
# | ASPP, SPP | several fields of view in parallel; fixed-size pyramid pooling | `cnn.ASPP`, `F.adaptive_max_pool2d` |
# | GCN, SPADE | large separable kernels; per-pixel scale and shift from a label map | sketches above |
# | Dice loss | overlap ratio, blind to true negatives: for rare classes | `dice_loss` above |
# | RoIPool / RoIAlign | features of a box: rounded and max-pooled / bilinear samples averaged (`sampling_ratio`, half-cell `aligned` shift) | `torchvision.ops.roi_pool`, `roi_align(aligned=True)` |
# | mask head | $K$ masks of $m\times m$ per RoI, sigmoid BCE on the true class's mask | `MaskRCNNLite` above |
#
# - Measure segmentation with the mIoU of a dataset-wide confusion matrix; pixel accuracy rewards
#   painting everything background.
# - Resolution lost in the encoder has to come back from somewhere: FCN's score skips (about +0.2
#   mIoU here) and U-Net's concatenated features (an mIoU of about 0.9 on the hard scenes).
# - Touching objects need a separation border in the targets and U-Net's weight map to learn it;
#   the mIoU barely sees the difference, the connected components do.
# - A transposed convolution is the adjoint of a convolution, not its inverse; prefer
#   resize-convolution when artefacts matter.
# - Atrous convolution trades compute for resolution: a larger map with the same reach and the same
#   parameters.
# - With a rare class, plain cross-entropy learns the class frequency first, and a 0.5 threshold
#   hides what it has learned: compare losses at their own tuned thresholds and with a
#   threshold-free score (AP). In a short run Dice, which optimises the overlap, came out ahead.
# - Instance segmentation: detect (chapter 08), RoIAlign, then a per-class binary mask per box; the
#   head learns which pixels in its box belong to its object, which "foreground in the box" cannot.
#
# ## Exercises
#
# ### Exercise 1: what did FCN's learned upsampling learn?
#
# The skips FCN's `up8` and `up4` (in `fcn_models["skips (8 + 4 + 2)"]`) started as bilinear
# interpolation, one kernel per class on the diagonal and zeros across classes. After training,
# measure for each how far its weights moved from that start (the norm of the change relative to the
# norm of the initial weights) and how large the cross-class weights became compared with the
# diagonal ones. Then write `transposed_bilinear(x, factor)`, which upsamples a single-channel image
# with `F.conv_transpose2d` and `bilinear_kernel(factor)` (you choose stride and padding) to
# `factor` times its size; the check compares it with `F.interpolate(scale_factor=factor,
# mode="bilinear")` away from the border. How wide is the border that differs, and why does it differ
# at all?


# %%
def transposed_bilinear(x, factor):
    """Tensor[N, 1, H, W] -> Tensor[N, 1, factor H, factor W], by a transposed convolution."""
    raise NotImplementedError  # your code: F.conv_transpose2d with bilinear_kernel(factor)


def interior(t, margin):
    return t[..., margin:-margin, margin:-margin]


def check_upsampling(fn):
    """fn against F.interpolate(mode="bilinear") for factors 2 and 4, a border of `factor` pixels cut off."""
    img_ex = torch.rand(
        2, 1, 12, 12, generator=torch.Generator().manual_seed(0)
    )
    return exercises.check_function(
        lambda x, f: interior(fn(x, f), f),
        [(img_ex, 2), (img_ex, 4)],
        reference=lambda x, f: interior(
            F.interpolate(x, scale_factor=f, mode="bilinear"), f
        ),
        name="transposed_bilinear (away from the border)",
    )


check_upsampling(transposed_bilinear)

# %% tags=["hide-cell"]
skips_fcn = fcn_models["skips (8 + 4 + 2)"]
diagonal = torch.eye(NUM_CLASSES)[:, :, None, None].bool().expand(-1, -1, 4, 4)
initial = torch.where(diagonal, bilinear_kernel(2), 0.0)
for name in ("up8", "up4"):
    w = getattr(skips_fcn, name).weight.detach().cpu()
    change = ((w - initial).norm() / initial.norm()).item()
    print(
        f"{name}: relative change {change:.2f}; largest cross-class weight {w[~diagonal].abs().max():.3f}, "
        f"largest diagonal weight {w[diagonal].abs().max():.3f}"
    )


def transposed_bilinear(x, factor):
    size = 2 * factor - factor % 2  # the kernel's side
    return F.conv_transpose2d(
        x,
        bilinear_kernel(factor)[None, None],
        stride=factor,
        padding=(size - factor) // 2,
    )


check_upsampling(transposed_bilinear).assert_passed()
img_ex = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
for f in (2, 4):  # the narrowest border outside which the two agree
    up_t, up_i = (
        transposed_bilinear(img_ex, f),
        F.interpolate(img_ex, scale_factor=f, mode="bilinear"),
    )
    width = next(
        b
        for b in range(1, f + 1)
        if torch.allclose(interior(up_t, b), interior(up_i, b), atol=1e-6)
    )
    print(
        f"x{f}: equal inside a {width}-pixel border; border max difference {(up_t - up_i).abs().max():.3f}"
    )
# Training moves the weights away from bilinear, and the cross-class weights grow from 0: the layers
# learn to mix the classes' scores while upsampling, something a fixed interpolation cannot do.
# The border differs because the transposed convolution treats the values beyond the image as 0,
# while F.interpolate clamps to the edge pixel (edge replication). The border is f // 2 pixels wide
# (1 for x2, 2 for x4): there the output is missing the contribution of an input pixel beyond the
# image.

# %% [markdown]
# ### Exercise 2: how class weights are averaged in `F.cross_entropy`
#
# With `weight=w` and the default `reduction="mean"`, PyTorch does not divide the weighted sum by the
# number of pixels. Find what it divides by and write `weighted_mean_ce(logits, target, w)` from the
# unweighted per-pixel losses (`F.cross_entropy(..., reduction="none")`) so that it returns what
# `F.cross_entropy(logits, target, weight=w)` returns. What does that mean for a batch whose pixels
# are all background (the second example)?


# %%
def weighted_mean_ce(logits, target, w):
    raise NotImplementedError  # your code: F.cross_entropy(logits, target, weight=w) from per-pixel losses


g_ex = torch.Generator().manual_seed(0)
logits_ex = torch.randn(4, NUM_CLASSES, 8, 8, generator=g_ex)
target_ex = torch.randint(0, NUM_CLASSES, (4, 8, 8), generator=g_ex)
ce_cases = [
    (logits_ex, target_ex, median_freq_weights),
    (logits_ex, torch.zeros_like(target_ex), median_freq_weights),
]
exercises.check_function(
    weighted_mean_ce,
    ce_cases,
    reference=lambda lo, t, w: F.cross_entropy(lo, t, weight=w),
)


# %% tags=["hide-cell"]
def weighted_mean_ce(logits, target, w):
    # unweighted -log p of the true class
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    return (w[target] * per_pixel).sum() / w[
        target
    ].sum()  # a weighted average over the pixels


exercises.check_function(
    weighted_mean_ce,
    ce_cases,
    reference=lambda lo, t, w: F.cross_entropy(lo, t, weight=w),
).assert_passed()
# It divides by the sum of the weights of the pixels' true classes. For a batch of background
# pixels only, every pixel has the same weight, which cancels: the loss equals the unweighted mean.
# Class weights change the balance between classes within a batch, not the overall scale; U-Net's
# per-pixel map (multiplied in and divided by the pixel count) does change the scale.
torch.testing.assert_close(
    weighted_mean_ce(*ce_cases[1]), F.cross_entropy(logits_ex, ce_cases[1][1])
)

# %% [markdown]
# ### Exercise 3: DeepLab's output stride in a real backbone
#
# torchvision's ResNet-50 takes `replace_stride_with_dilation=[False, True, True]`, which removes the
# strides of its last two stages and dilates their convolutions, the DeepLab recipe. Build both
# versions (`weights=None`), compare their number of parameters, the size of the last feature map for
# a 64×64 input (`model.layer4` output), and the multiply-adds with `count_macs`. Fill in what you
# measured.

# %%
backbone_answers = {
    "same number of parameters (True or False)": exercises.TODO,
    "layer4 side, output stride 32": exercises.TODO,
    "layer4 side, output stride 8": exercises.TODO,
}
BACKBONE_EXPECTED = {
    "same number of parameters (True or False)": True,
    "layer4 side, output stride 32": 2,
    "layer4 side, output stride 8": 8,
}
exercises.check_value(
    backbone_answers, BACKBONE_EXPECTED, name="backbone_answers"
)

# %% tags=["hide-cell"]
torch.manual_seed(0)
resnets = {
    "output stride 32": torchvision.models.resnet50(weights=None),
    "output stride 8 (dilated)": torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=[False, True, True]
    ),
}
x_img = torch.zeros(1, 3, 64, 64)
measured = {}
for name, net in resnets.items():
    trunk = nn.Sequential(*list(net.children())[:-2]).eval()  # up to layer4
    with torch.no_grad():
        fmap = trunk(x_img)
    measured[name] = (
        sum(p.numel() for p in trunk.parameters()),
        fmap.shape[-1],
    )
    print(
        f"{name:26s}: {measured[name][0]:,} parameters, layer4 map {tuple(fmap.shape[-2:])},",
        f"{count_macs(trunk, x_img) / 1e6:,.0f} M MACs",
    )
(p32, side32), (p8, side8) = measured.values()
backbone_answers = {
    "same number of parameters (True or False)": p32 == p8,
    "layer4 side, output stride 32": side32,
    "layer4 side, output stride 8": side8,
}
exercises.check_value(
    backbone_answers, BACKBONE_EXPECTED, name="backbone_answers"
).assert_passed()
# Same parameters; a 16x larger last map (8x8 instead of 2x2); and several times the compute, spent in
# the two last (and widest) stages that now run at 4x and 16x more positions.

# %% [markdown]
# ### Exercise 4: boxes that are not tight
#
# A detector's boxes are not exactly the ground-truth boxes. Move every corner of every test box by a
# random amount of up to 10 % of the box's width (x) or height (y), clip to the image, and measure the
# mean mask IoU of the trained head on these boxes (`predict_masks(mask_model, test_set, boxes)`),
# against the true instance masks. Compare with the head on the true boxes and with the jittered box
# used as a mask. Which objects suffer, and how would you train the head for such boxes?

# %% tags=["hide-cell"]
g_jit = torch.Generator().manual_seed(5)
jittered = []
for b in test_set.boxes:
    size = (b[:, 2:] - b[:, :2]).repeat(1, 2)
    jittered.append(
        (b + 0.1 * size * (2 * torch.rand(b.shape, generator=g_jit) - 1)).clamp(
            0, 32
        )
    )
jit_head = mask_iou(
    predict_masks(mask_model, test_set, jittered), test_instances
)
jit_box = mask_iou(
    paste_masks(torch.ones(len(test_boxes), 28, 28), torch.cat(jittered), 32),
    test_instances,
)
print(
    f"mask IoU: head on true boxes {mask_results['mask head']['all']:.3f}, "
    f"on jittered boxes {jit_head.mean():.3f}; jittered box as a mask {jit_box.mean():.3f}"
)
# The head loses some IoU: a box that is too small cuts the object off (the pasted mask cannot leave
# its box), and a box that is too large shows the head a view it never saw in training, where the
# object does not fill the box. Mask R-CNN trains the mask head on the proposals that overlap an
# object by IoU >= 0.5, with the target cut out of the true mask by the proposal's box, so that it
# learns to segment from imperfect boxes; training on jittered boxes here would do the same.

# %% [markdown]
# ## References
#
# - Long, J., Shelhamer, E., and Darrell, T. (2015). Fully convolutional networks for semantic
#   segmentation. *CVPR 2015*. arXiv:1411.4038.
# - Ronneberger, O., Fischer, P., and Brox, T. (2015). U-Net: convolutional networks for biomedical
#   image segmentation. *MICCAI 2015*. arXiv:1505.04597.
# - Badrinarayanan, V., Kendall, A., and Cipolla, R. (2017). SegNet: a deep convolutional
#   encoder-decoder architecture for image segmentation. *IEEE TPAMI*, 39(12). arXiv:1511.00561.
# - Dumoulin, V., and Visin, F. (2016). A guide to convolution arithmetic for deep learning.
#   arXiv:1603.07285.
# - Odena, A., Dumoulin, V., and Olah, C. (2016). Deconvolution and checkerboard artifacts.
#   *Distill*. doi:10.23915/distill.00003.
# - Eigen, D., and Fergus, R. (2015). Predicting depth, surface normals and semantic labels with a
#   common multi-scale convolutional architecture. *ICCV 2015*. arXiv:1411.4734.
# - Yu, F., and Koltun, V. (2016). Multi-scale context aggregation by dilated convolutions.
#   *ICLR 2016*. arXiv:1511.07122.
# - Chen, L.-C., Papandreou, G., Kokkinos, I., Murphy, K., and Yuille, A. L. (2018). DeepLab: semantic
#   image segmentation with deep convolutional nets, atrous convolution, and fully connected CRFs.
#   *IEEE TPAMI*, 40(4). arXiv:1606.00915.
# - Chen, L.-C., Papandreou, G., Schroff, F., and Adam, H. (2017). Rethinking atrous convolution for
#   semantic image segmentation. arXiv:1706.05587. (DeepLab v3.)
# - Chen, L.-C., Zhu, Y., Papandreou, G., Schroff, F., and Adam, H. (2018b). Encoder-decoder with
#   atrous separable convolution for semantic image segmentation. *ECCV 2018*. arXiv:1802.02611.
#   (DeepLab v3+.)
# - He, K., Zhang, X., Ren, S., and Sun, J. (2015). Spatial pyramid pooling in deep convolutional
#   networks for visual recognition. *IEEE TPAMI*, 37(9). arXiv:1406.4729.
# - Krähenbühl, P., and Koltun, V. (2011). Efficient inference in fully connected CRFs with Gaussian
#   edge potentials. *NeurIPS 2011*. arXiv:1210.5644.
# - Wang, P., Chen, P., Yuan, Y., Liu, D., Huang, Z., Hou, X., and Cottrell, G. (2018). Understanding
#   convolution for semantic segmentation. *WACV 2018*. arXiv:1702.08502. (Gridding, hybrid dilated
#   convolution.)
# - Peng, C., Zhang, X., Yu, G., Luo, G., and Sun, J. (2017). Large kernel matters: improve semantic
#   segmentation by global convolutional network. *CVPR 2017*. arXiv:1703.02719.
# - Park, T., Liu, M.-Y., Wang, T.-C., and Zhu, J.-Y. (2019). Semantic image synthesis with
#   spatially-adaptive normalization. *CVPR 2019*. arXiv:1903.07291.
# - Milletari, F., Navab, N., and Ahmadi, S.-A. (2016). V-Net: fully convolutional neural networks for
#   volumetric medical image segmentation. *3DV 2016*. arXiv:1606.04797.
# - Girshick, R. (2015). Fast R-CNN. *ICCV 2015*. arXiv:1504.08083. (RoIPool.)
# - Ren, S., He, K., Girshick, R., and Sun, J. (2015). Faster R-CNN: towards real-time object
#   detection with region proposal networks. *NeurIPS 2015*. arXiv:1506.01497.
# - He, K., Gkioxari, G., Dollár, P., and Girshick, R. (2017). Mask R-CNN. *ICCV 2017*.
#   arXiv:1703.06870.
# - Li, Y., Qi, H., Dai, J., Ji, X., and Wei, Y. (2017). Fully convolutional instance-aware semantic
#   segmentation. *CVPR 2017*. arXiv:1611.07709. (FCIS.)
# - Kirillov, A., He, K., Girshick, R., Rother, C., and Dollár, P. (2019). Panoptic segmentation.
#   *CVPR 2019*. arXiv:1801.00868.
