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
# # 19 · Restoration and style
#
# Most of this course maps an image to a label, a box or a mask. This chapter maps an image to
# another image. Four problems share the tools: remove noise (denoising), add pixels that the
# camera never recorded (super-resolution), fill holes (inpainting), and repaint an image with
# another one's texture (style transfer). A fifth one turns the question around and asks which
# latent code of a generator produces a given image (GAN inversion). All of them are trained or
# optimized with the same few losses: a pixel loss (L2 or L1), a loss on a network's features
# (perceptual or content loss), a loss on feature statistics (Gram matrices, style loss) and an
# adversarial loss. The chapter measures what each buys, and it is honest about the trade-off that
# comes with the last two: an image can look sharper and still be further from the truth.
#
# **Learning objectives.** After this chapter you can:
# - compute PSNR and SSIM from their definitions (checked against scikit-image) and say what each
#   rewards;
# - train a residual denoiser and a CBDNet-style model that first estimates a noise-level map, and
#   measure both the PSNR gain and the accuracy of the estimate, inside and outside the training
#   range;
# - compare nearest, bilinear, bicubic and learned upsampling, explain why a transposed convolution
#   leaves a checkerboard, and write sub-pixel convolution (`PixelShuffle`) from scratch;
# - train an ESPCN that beats bicubic interpolation on test images, and explain SRGAN's perceptual
#   plus adversarial loss and the perception–distortion trade-off;
# - transfer style and synthesize texture with Gram matrices of a random-weight CNN, and show the
#   content/style trade-off;
# - generate free-form masks and implement partial convolution (which ignores the hole and shrinks
#   it layer by layer) and gated convolution, and train both to beat a mean fill;
# - invert a StyleGAN-like generator into $Z$, $W$ and $W^+$, and explain what pSp, e4e and
#   StyleCLIP add on top.
#
# **Prerequisites.** [Chapter 03](../03_losses/03_losses.ipynb) (perceptual and style losses,
# Gram matrices), [chapter 07](../07_segmentation/07_segmentation.ipynb) (transposed convolution,
# dilated convolution), [chapter 09](../09_autoencoders/09_autoencoders.ipynb) (denoising
# autoencoders), [chapter 10](../10_gans/10_gans.ipynb) (GAN losses, StyleGAN's mapping network
# and AdaIN) and [chapter 15](../15_swin/15_swin.ipynb) (the degradations of `data.degrade`).
#
# **Measured runtime:** 72 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [19_restoration_and_style.ipynb](19_restoration_and_style.ipynb) (notebook, with outputs) · [19_restoration_and_style.py](19_restoration_and_style.py) (the paired script instructors edit)

# %%
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from course_lib import data, exercises, losses, metrics, runtime, viz
from course_lib.nn import generative, restoration

device = runtime.setup(seed=0)
TIMES = {}  # wall seconds per section, printed at the end

# %% [markdown]
# ## Restoration: undoing a degradation
#
# A restoration problem starts from a clean image $x$ and a known kind of damage $y = D(x)$: noise,
# blur, a lower resolution, missing pixels. The model sees only $y$ and must produce $\hat x$ close
# to $x$. Because $D$ throws information away, many clean images explain the same $y$, and a model
# trained to minimize a pixel loss returns something like their average. Keep that sentence in mind:
# it explains why denoisers blur a little, why super-resolution trained on a pixel loss looks
# soft, and why SRGAN adds an adversarial loss.
#
# Every image in this chapter is made in code. The scenes of chapter 15 (`data.clean_scenes`, flat
# coloured shapes with sharp edges) serve denoising and inpainting; rendered text serves
# super-resolution; a random-weight CNN replaces the pretrained VGG of the style papers; and the toy
# StyleGAN of chapter 10 stands in for a trained one. Here are the four degradations.

# %% tags=["hide-input"]
zoo_clean = data.clean_scenes(1, 32, kind="blocks", seed=7)
zoo_noisy = data.gaussian_noise(zoo_clean, 0.15, generator=1)
zoo_blur = data.defocus_blur(zoo_clean, 2.0)
zoo_low = F.interpolate(
    F.avg_pool2d(zoo_clean, 2), scale_factor=2, mode="nearest"
)
zoo_hole = data.free_form_masks(1, 32, seed=3)
zoo_holed = zoo_clean * (1 - zoo_hole) + zoo_hole
viz.show_images(
    torch.cat([zoo_clean, zoo_noisy, zoo_blur, zoo_low, zoo_holed]),
    ["clean", "noise σ = 0.15", "defocus blur", "2× lower resolution", "holes"],
    ncols=5,
    size=1.8,
)
plt.show()

# %% [markdown]
# ## Measuring restoration: PSNR and SSIM
#
# The **peak signal-to-noise ratio** compares the mean squared error with the largest possible
# value $L$ of a pixel (1 for images in $[0, 1]$):
#
# $$\mathrm{PSNR}(\hat x, x) = 10\log_{10}\frac{L^2}{\mathrm{MSE}(\hat x, x)}\ \text{dB}.$$
#
# It is a logarithm of the MSE, so it falls *linearly* in $\log \mathrm{MSE}$: halving the error
# adds $10\log_{10}2 \approx 3.01$ dB. (The lecture notes call PSNR "inversely proportional to the
# logarithm of the MSE", which is not the same thing.) A gain of 6 dB means a 4 times smaller MSE.
#
# PSNR ignores structure: shifting every pixel by the same small amount and adding noise of the
# same energy give the same PSNR, though one image looks unchanged and the other does not.
# **SSIM** (Wang et al., 2004) compares local means $\mu$, variances $\sigma^2$ and the covariance
# $\sigma_{xy}$, measured in a Gaussian window ($\sigma = 1.5$ px, 11 taps) around every pixel:
#
# $$\mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}{(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},\qquad C_1 = (0.01L)^2,\ C_2 = (0.03L)^2,$$
#
# averaged over the positions whose window fits inside the image. It is 1 only for identical images
# and penalizes lost contrast and structure more than a uniform shift. Both metrics live in
# `course_lib.metrics`; here is each written out once and checked against scikit-image with the
# same settings.


# %%
def psnr_scratch(pred, target, data_range=1.0):
    mse = (pred.double() - target.double()).square().mean()
    return 10 * torch.log10(data_range**2 / mse)


def ssim_scratch(pred, target, data_range=1.0, sigma=1.5):
    """One image [C, H, W]: Gaussian-window SSIM, border of 5 px left out."""
    t = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]  # 11 x 11

    def local_mean(z):
        return F.conv2d(z.double()[:, None], win)  # 'valid': no padding

    mx, my = local_mean(pred), local_mean(target)
    vx = local_mean(pred * pred) - mx**2
    vy = local_mean(target * target) - my**2
    cxy = local_mean(pred * target) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2)
    s = s / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean()


ref_img = data.clean_scenes(1, 32, kind="photo", seed=0)[0]
for sigma in (0.05, 0.2):
    noisy_img = data.gaussian_noise(ref_img[None], sigma, generator=0)[0]
    sk_psnr = peak_signal_noise_ratio(
        ref_img.numpy(), noisy_img.numpy(), data_range=1.0
    )
    sk_ssim = structural_similarity(
        ref_img.numpy(), noisy_img.numpy(), data_range=1.0,
        channel_axis=0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )  # fmt: skip
    mine = (psnr_scratch(noisy_img, ref_img), ssim_scratch(noisy_img, ref_img))
    lib = (metrics.psnr(noisy_img, ref_img), metrics.ssim(noisy_img, ref_img))
    print(
        f"σ = {sigma}: PSNR {mine[0]:.2f} dB, SSIM {mine[1]:.3f} "
        f"(library {lib[0]:.2f}, {lib[1]:.3f}; scikit-image "
        f"{sk_psnr:.2f}, {sk_ssim:.3f})"
    )
    assert abs(mine[0].item() - sk_psnr) < 1e-4
    assert abs(lib[0].item() - sk_psnr) < 1e-3
    assert abs(mine[1].item() - sk_ssim) < 1e-5
    assert abs(lib[1].item() - sk_ssim) < 1e-5

# %% [markdown]
# From here on the chapter uses `metrics.psnr` and `metrics.ssim`. On a batch they return one
# value per image; a data set's score is the mean over its images.
#
# ## Denoising
#
# ### A residual denoiser
#
# The simplest learned denoiser is the **denoising autoencoder** of chapter 09: corrupt the input,
# train the network to return the clean image. DnCNN (Zhang et al., 2017) made one change that
# matters: the network predicts the *correction* and adds it to its input,
#
# $$\hat x = y + f_\theta(y),$$
#
# so $f_\theta$ only has to learn (minus) the noise, a small signal with simple statistics, instead
# of copying the whole image through its layers. `restoration.DnCNN` is a stack of $3\times3$
# convolutions with ReLUs; its last convolution starts at zero, so the untrained model is the
# identity and scores the PSNR of the noisy input. The training images get Gaussian noise with a
# standard deviation drawn per image from $U(0.02, 0.22)$ (`data.gaussian_noise`, clipped to
# $[0, 1]$), so one model has to handle light and heavy noise.

# %% tags=["hide-input"]
viz.chain_diagram(
    [
        ("noisy y", "io"),
        ("conv 3×3\n3 → 16, ReLU", "conv"),
        ("3 × conv 3×3\n16 → 16, ReLU", "conv"),
        ("conv 3×3\n16 → 3", "conv"),
        ("+", "op"),
        ("x̂ = y + f(y)", "io"),
    ],
    skips=[(0, 4)],
    title="DnCNN-style residual denoiser (restoration.DnCNN)",
)
plt.show()

# %% [markdown]
# ### CBDNet: estimate the noise level first
#
# A denoiser trained on one noise level smooths too much below it and too little above it. CBDNet
# (Guo et al., 2019) splits the job in two. A small fully convolutional subnet $\mathrm{CNN}_E$
# (no pooling, no normalization, $3\times3$ filters, ReLU after every convolution) estimates a
# noise-level map $\hat\sigma(y)$ of the image's size; the denoiser then reads the image *and* the
# map and predicts a residual, $\hat x = y + R(y, \hat\sigma)$. The map is an interface: a user can
# scale it up or down at test time to trade leftover noise against lost detail.
#
# The loss on synthetic pairs, where the true $\sigma$ is known, has three terms:
#
# $$\mathcal L = \|\hat x - x\|_2^2 + \lambda_{E}\,\big\|\,|\alpha - \mathbb 1[\hat\sigma < \sigma]|\,(\hat\sigma - \sigma)^2\big\|_1 + \lambda_{TV}\big(\|\nabla_h\hat\sigma\|_2^2 + \|\nabla_v\hat\sigma\|_2^2\big).$$
#
# With $\alpha < 0.5$ the middle term is **asymmetric**: under-estimating the noise costs
# $1 - \alpha$, over-estimating it $\alpha$. A denoiser told too little noise leaves noise in, which
# looks worse than a slightly smoother image, so CBDNet prefers to err high. The total-variation
# term keeps the map smooth. On real photographs there is no true $\sigma$ and only the
# reconstruction and TV terms remain (the paper also trains on real noisy/clean pairs and models
# camera noise realistically; both are beyond this demo).
#
# Three slips in the lecture notes: the residual is a function of both the image and the map (not
# "between $y$ and the map"); the reference images were *noised* with a known variance (not
# "denoised"); and the estimation loss is the asymmetric one above, not a plain MSE.
# `restoration.CBDNet` keeps the estimator and replaces the paper's U-Net by the same residual stack
# as DnCNN on the 6-channel input $[y, \hat\sigma]$; `restoration.cbdnet_loss` is the loss above.
# The paper uses $\alpha = 0.3$; we use $\alpha = 0.4$ with $\lambda_E = 10$, $\lambda_{TV} = 0.05$.
# With $\alpha = 0.3$ the estimate at $\sigma = 0.1$ came out 6 to 25 % too high over three seeds,
# at the edge of the ±25 % bar below; at 0.4 the bias is smaller (at most 18 %).

# %% tags=["hide-input"]
viz.diagram(
    {
        "y": (0, 0, "noisy y", "io"),
        "est": (2.4, 1.0, "CNN_E: 3 × conv 3×3\n16 ch, ReLU", "conv"),
        "map": (4.8, 1.0, "noise map σ̂", "io"),
        "cat": (4.8, 0, "c", "op"),
        "body": (7.0, 0, "5 × conv 3×3\n6 → 16 → 3", "conv"),
        "add": (9.0, 0, "+", "op"),
        "out": (10.8, 0, "x̂", "io"),
    },
    [
        ("y", "est"),
        ("est", "map"),
        ("map", "cat"),
        ("y", "cat"),
        ("cat", "body"),
        ("body", "add"),
        ("add", "out"),
        ("y", "add", "skip"),
    ],
    title="CBDNet-lite (restoration.CBDNet): estimate σ̂, then denoise",
)
plt.show()

# %%
t0 = time.perf_counter()
DEN_SIZE, DEN_STEPS, DEN_LR = 24, 600, 2e-3
den_train = data.clean_scenes(600, DEN_SIZE, kind="blocks", seed=0)
den_val = data.clean_scenes(100, DEN_SIZE, kind="blocks", seed=1)
den_test = data.clean_scenes(100, DEN_SIZE, kind="blocks", seed=2)


def train_denoiser(model, seed=0):
    """Adam on batches of 16 with σ ~ U(0.02, 0.22) per image."""
    g = torch.Generator().manual_seed(seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), DEN_LR)
    for _ in range(DEN_STEPS):
        idx = torch.randint(0, len(den_train), (16,), generator=g)
        x = den_train[idx]
        s = 0.02 + 0.2 * torch.rand(16, generator=g)
        y = data.gaussian_noise(x, s, generator=g)
        x, y, s = x.to(device), y.to(device), s.to(device)
        if isinstance(model, restoration.CBDNet):
            x_hat, s_hat = model(y)
            loss = restoration.cbdnet_loss(
                x_hat, x, s_hat, s, alpha=0.4, est_weight=10.0
            )
        else:
            loss = F.mse_loss(model(y), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


torch.manual_seed(0)
plain = train_denoiser(restoration.DnCNN(3, width=16, depth=5))
torch.manual_seed(0)
cbd = train_denoiser(
    restoration.CBDNet(3, width=16, depth=5, est_width=16, est_depth=3)
)
print(f"trained both denoisers in {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# The map scale is the one knob of CBDNet that needs no retraining. We pick it on the validation
# images (noise levels drawn from the training range) and keep it for the test.

# %%
val_sigma = 0.02 + 0.2 * torch.rand(
    len(den_val), generator=torch.Generator().manual_seed(5)
)
val_noisy = data.gaussian_noise(den_val, val_sigma, generator=5).to(device)
with torch.no_grad():
    val_map = cbd(val_noisy)[1]
    scale_psnr = {
        k: metrics.psnr(
            cbd(val_noisy, sigma_map=k * val_map)[0].clamp(0, 1),
            den_val.to(device),
        ).mean().item()
        for k in (0.8, 1.0, 1.25, 1.5)
    }  # fmt: skip
map_scale = max(scale_psnr, key=scale_psnr.get)
print(
    "validation PSNR by map scale:",
    {k: round(v, 2) for k, v in scale_psnr.items()},
)
print("chosen map scale:", map_scale)


# %%
def denoise_table(sigmas=(0.05, 0.1, 0.15, 0.2, 0.3)):
    rows = {}
    clean = den_test.to(device)
    with torch.no_grad():
        for s in sigmas:
            y = data.gaussian_noise(den_test, s, generator=11).to(device)
            out_p = plain(y).clamp(0, 1)
            s_map = cbd(y)[1]
            out_c = cbd(y, sigma_map=map_scale * s_map)[0].clamp(0, 1)
            rows[s] = {
                "noisy": metrics.psnr(y, clean).mean().item(),
                "plain": metrics.psnr(out_p, clean).mean().item(),
                "cbd": metrics.psnr(out_c, clean).mean().item(),
                "ssim noisy": metrics.ssim(y, clean).mean().item(),
                "ssim plain": metrics.ssim(out_p, clean).mean().item(),
                "ssim cbd": metrics.ssim(out_c, clean).mean().item(),
                "σ̂": s_map.mean().item(),
            }
    return rows


den_rows = denoise_table()
print("   σ | PSNR noisy  plain  CBD | SSIM noisy plain  CBD | mean σ̂")
for s, r in den_rows.items():
    print(
        f"{s:4.2f} |     {r['noisy']:5.1f}  {r['plain']:5.1f} {r['cbd']:5.1f}"
        f" |     {r['ssim noisy']:.2f}  {r['ssim plain']:.2f} "
        f"{r['ssim cbd']:.2f} | {r['σ̂']:.3f}"
    )
r10 = den_rows[0.1]
for name in ("plain", "cbd"):
    gain = r10[name] - r10["noisy"]
    assert gain >= 4.0, f"{name} gains {gain:.2f} dB at σ = 0.1, expected >= 4"
for s in (0.1, 0.15):
    rel = den_rows[s]["σ̂"] / s - 1
    assert abs(rel) <= 0.25, (
        f"σ̂ at σ = {s} is off by {rel:+.0%}, expected ±25 %"
    )
TIMES["denoising"] = time.perf_counter() - t0

# %% [markdown]
# Both models gain about 5 dB at $\sigma = 0.1$, where the bar asks for 4 (over three seeds of this
# set-up, 4.8 to 5.4 dB), and SSIM rises with them. Inside the training range the estimated noise
# level is close to the truth (the bar: within ±25 % at $\sigma$ = 0.1 and 0.15; three seeds gave
# errors of at most 18 %) and too high at the low end, the side the asymmetric loss prefers to err
# on. At $\sigma = 0.3$, outside the training range, the estimate falls well short of the truth:
# the estimator has never seen such noise and does not extrapolate. The two models are close at mid
# noise levels; we do not claim that one beats the other there. The figure shows PSNR
# against the noise level, and an estimated noise map.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
sig = list(den_rows)
for i, key in enumerate(("noisy", "plain", "cbd")):
    axes[0].plot(
        sig, [den_rows[s][key] for s in sig], "o-", color=viz.color(i),
        label={"noisy": "noisy input", "plain": "DnCNN", "cbd": "CBDNet-lite"}[key],
    )  # fmt: skip
axes[0].axvspan(0.02, 0.22, color="0.9", zorder=0, label="training range")
axes[0].set(xlabel="noise σ", ylabel="PSNR (dB)", title="Test PSNR")
axes[0].legend(fontsize=8)
axes[1].plot(sig, [den_rows[s]["σ̂"] for s in sig], "o-", color=viz.color(2))
axes[1].plot([0, 0.3], [0, 0.3], "k--", lw=0.8, label="σ̂ = σ")
axes[1].axvspan(0.02, 0.22, color="0.9", zorder=0)
axes[1].set(xlabel="true σ", ylabel="mean σ̂", title="Estimated noise level")
axes[1].legend(fontsize=8)
with torch.no_grad():
    demo_y = data.gaussian_noise(den_test[:1], 0.15, generator=3).to(device)
    demo_map = cbd(demo_y)[1][0].mean(0).cpu()
im = axes[2].imshow(demo_map, cmap="magma", vmin=0, vmax=0.3)
axes[2].set_title("σ̂ map of one test image (true σ = 0.15)")
axes[2].axis("off")
fig.colorbar(im, ax=axes[2], fraction=0.046)
plt.show()

# %% [markdown]
# The noise in this image has the same $\sigma$ everywhere, but the estimated map is not flat: it
# changes with the image content, since near an edge image detail and noise are harder to tell
# apart for a network that sees a $7\times7$ window. Move the slider to see the two denoisers at
# other noise levels (the static figure below shows $\sigma = 0.1$).


# %%
def show_denoising(sigma=0.1, index=0):
    clean = den_test[index : index + 1].to(device)
    y = data.gaussian_noise(den_test[index : index + 1], sigma, generator=3)
    y = y.to(device)
    with torch.no_grad():
        outs = [y, plain(y), cbd(y, sigma_map=map_scale * cbd(y)[1])[0]]
    outs = [o.clamp(0, 1) for o in outs]
    names = ["noisy", "DnCNN", "CBDNet-lite"]
    titles = [
        f"{n}\n{metrics.psnr(o, clean).item():.1f} dB"
        for n, o in zip(names, outs, strict=True)
    ]
    viz.show_images(
        torch.cat([*outs, clean]).cpu(), [*titles, "clean"], ncols=4, size=2
    )
    plt.show()


show_denoising(0.1)

# %%
_ = widgets.interact(
    show_denoising,
    sigma=widgets.FloatSlider(
        value=0.1, min=0.02, max=0.35, step=0.01, description="noise σ"
    ),
    index=widgets.IntSlider(value=0, min=0, max=9, description="image"),
)

# %% [markdown]
# ## Super-resolution
#
# Super-resolution (SR) recovers a high-resolution image (HR) from a low-resolution one (LR). The
# pairs are made by shrinking HR images; here $\times 2$ by averaging $2\times2$ blocks. The first
# question is how to make the image larger at all.
#
# ### Upsampling: interpolation and learned layers
#
# - **Nearest neighbour** copies the closest pixel: blocky, but it never invents a value.
# - **Bilinear** interpolates linearly along one axis and then along the other, from the $2\times2$
#   nearest pixels. The result is a *product* of two linear functions (bilinear, not quadratic, as
#   the notes put it): a tent-shaped kernel of width 2 in each direction.
# - **Bicubic** fits cubics through $4\times4$ pixels (Keys' kernel; PyTorch uses the parameter
#   $a = -0.75$). It is smoother and sharper than bilinear. The kernel has small negative lobes,
#   which sharpen edges and can overshoot (ringing). It costs 16 taps instead of 4, which is
#   cheap on a modern machine.
# - **Transposed convolution** (chapter 07) learns the kernel. With stride $s$ and a kernel size
#   not divisible by $s$, neighbouring output pixels receive different numbers of contributions:
#   the **checkerboard** of Odena et al. (2016), printed below for a $3\times3$ kernel of ones at
#   stride 2 on a constant image.
# - **Sub-pixel convolution** (Shi et al., 2016) computes $C r^2$ channels at *low* resolution and
#   rearranges each group of $r^2$ channels into an $r\times r$ block of output pixels. Every output
#   pixel comes from exactly one input channel, so there is no uneven overlap.


# %% tags=["hide-input"]
def keys_cubic(t, a=-0.75):
    t = np.abs(t)
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


tt = np.linspace(-2.5, 2.5, 501)
kernels_1d = {
    "nearest": (np.abs(tt) < 0.5).astype(float),
    "linear": np.clip(1 - np.abs(tt), 0, None),
    "cubic (a = −0.75)": keys_cubic(tt),
}
tiny = data.clean_scenes(1, 8, kind="blocks", seed=3)
fig, axes = plt.subplots(1, 5, figsize=(14, 2.9))
for i, (name, k) in enumerate(kernels_1d.items()):
    axes[0].plot(tt, k, color=viz.color(i), label=name)
axes[0].axhline(0, color="k", lw=0.5)
axes[0].set(title="1-D interpolation kernels", xlabel="offset (pixels)")
axes[0].legend(fontsize=7)
axes[1].imshow(tiny[0].permute(1, 2, 0), interpolation="nearest")
axes[1].set_title("8×8 input")
for ax, mode in zip(axes[2:], ("nearest", "bilinear", "bicubic"), strict=True):
    kw = {} if mode == "nearest" else {"align_corners": False}
    up = F.interpolate(tiny, scale_factor=4, mode=mode, **kw).clamp(0, 1)
    ax.imshow(up[0].permute(1, 2, 0), interpolation="nearest")
    ax.set_title(f"×4 {mode}")
for ax in axes[1:]:
    ax.axis("off")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
const = torch.ones(1, 1, 4, 4)
for k, pad in ((3, 1), (4, 1)):
    tconv = nn.ConvTranspose2d(1, 1, k, stride=2, padding=pad, bias=False)
    nn.init.ones_(tconv.weight)
    with torch.no_grad():
        out = tconv(const)[0, 0, 2:6, 2:6].round().int()
    print(f"transposed conv, kernel {k}, stride 2, interior of the output:")
    print(out.numpy())
shuffle_out = nn.PixelShuffle(2)(torch.ones(1, 4, 4, 4))[0, 0, 2:6, 2:6]
print("pixel shuffle of 4 constant channels:")
print(shuffle_out.round().int().numpy())

# %% [markdown]
# With kernel 3 and stride 2 the interior alternates between 1, 2 and 4 contributions per pixel: a
# trained network must learn to cancel this pattern, and often does not quite. Kernel 4 (divisible
# by the stride) overlaps evenly, and so does the pixel shuffle. On smooth images interpolation
# order matters too: bicubic reproduces a smooth ramp far better than nearest neighbour.

# %%
yy, xx = torch.meshgrid(
    torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij"
)
smooth = (0.5 + 0.4 * torch.sin(3 * xx + 2 * yy))[None, None]
smooth_lr = F.avg_pool2d(smooth, 2)
smooth_psnr = {
    mode: metrics.psnr(
        F.interpolate(
            smooth_lr, scale_factor=2, mode=mode,
            **({} if mode == "nearest" else {"align_corners": False}),
        ), smooth,
    ).item()
    for mode in ("nearest", "bilinear", "bicubic")
}  # fmt: skip
print({k: round(v, 1) for k, v in smooth_psnr.items()})
assert smooth_psnr["bicubic"] > smooth_psnr["nearest"] + 5

# %% [markdown]
# ### Sub-pixel convolution from scratch
#
# `PixelShuffle(r)` maps `[N, C r², H, W]` to `[N, C, H r, W r]`: output pixel $(c, h r + i, w r +
# j)$ is input channel $c r^2 + i r + j$ at $(h, w)$. It is a pure rearrangement (a reshape and a
# permutation of axes), so the check against PyTorch is exact.


# %%
def pixel_shuffle_scratch(x, r):
    n, c_r2, h, w = x.shape
    c = c_r2 // (r * r)
    x = x.reshape(n, c, r, r, h, w)  # [n, c, i, j, h, w]
    x = x.permute(0, 1, 4, 2, 5, 3)  # [n, c, h, i, w, j]
    return x.reshape(n, c, h * r, w * r)


x_ps = torch.randn(2, 3 * 9, 5, 6)
assert torch.equal(pixel_shuffle_scratch(x_ps, 3), nn.PixelShuffle(3)(x_ps))
assert torch.equal(restoration.pixel_shuffle(x_ps, 3), nn.PixelShuffle(3)(x_ps))
print(
    "pixel shuffle from scratch == nn.PixelShuffle == restoration.pixel_shuffle"
)

# %% [markdown]
# ### ESPCN
#
# ESPCN (Shi et al., 2016) runs all its convolutions at low resolution, which makes it cheap,
# and ends with one pixel shuffle. Ours predicts a correction to bicubic upsampling (its last
# convolution starts at zero, so the untrained model *is* bicubic). The paper uses tanh; behind the
# zero-initialized last layer tanh sat on a plateau for the first few hundred steps in our
# prototype and gained 1.2 dB over bicubic in 1000 steps, against 3.3 dB for ReLU with the same
# widths, learning rate and seed, so we use ReLU.
# The data are $32\times32$ images of two rows of four random characters: text is a hard test for
# interpolation (thin strokes, sharp edges) and has strong regularities a network can learn. The
# colours are random but always contrast: one of ink and background has every RGB channel in
# $[0, 0.35]$, the other every channel in $[0.65, 1]$, and a coin decides which is which.
# We train with an L1 loss for 1000 steps (batch 16), choose the learning rate from $\{10^{-3},
# 3\cdot10^{-3}\}$ and the checkpoint by validation PSNR, and report the test set.

# %% tags=["hide-input"]
viz.chain_diagram(
    [
        ("LR 3×16×16", "io"),
        ("conv 5×5\n3 → 32, ReLU", "conv"),
        ("conv 3×3\n32 → 16, ReLU", "conv"),
        ("conv 3×3\n16 → 3·2²", "conv"),
        ("pixel shuffle\n×2", "up"),
        ("+ bicubic(LR)", "other"),
        ("SR 3×32×32", "io"),
    ],
    title="ESPCN (restoration.ESPCN): everything at low resolution, then rearrange",
)
plt.show()

# %%
t0 = time.perf_counter()
SR_FONT = ImageFont.load_default(size=14)
SR_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def text_tiles(n, seed):
    """n RGB 32x32 images: two rows of 4 random characters, contrasting colours."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, 32, 32), np.float32)
    for i in range(n):
        ink_img = Image.new("L", (32, 32), 0)
        draw = ImageDraw.Draw(ink_img)
        for row in range(2):
            text = "".join(rng.choice(list(SR_CHARS), 4))
            draw.text((1, 1 + 15 * row), text, fill=255, font=SR_FONT)
        ink = np.asarray(ink_img, np.float32) / 255
        dark, light = rng.uniform(0, 0.35, 3), rng.uniform(0.65, 1, 3)
        bg, fg = (dark, light) if rng.random() < 0.5 else (light, dark)
        out[i] = bg[:, None, None] * (1 - ink) + fg[:, None, None] * ink
    return torch.from_numpy(out)


sr_train, sr_val, sr_test = (
    text_tiles(n, s) for n, s in ((1500, 0), (100, 1), (200, 2))
)
sr_val_lr, sr_test_lr = F.avg_pool2d(sr_val, 2), F.avg_pool2d(sr_test, 2)


def upsample(lr, mode):
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(lr, scale_factor=2, mode=mode, **kw).clamp(0, 1)


def train_espcn(lr, steps=1000, seed=0):
    """ESPCN trained with L1; returns (best val PSNR, its weights, its step)."""
    torch.manual_seed(seed)
    net = restoration.ESPCN(3, 2, (32, 16), activation="relu").to(device)
    opt = torch.optim.Adam(net.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    best = (-1.0, None, 0)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(sr_train), (16,), generator=g)
        hr = sr_train[idx].to(device)
        loss = F.l1_loss(net(F.avg_pool2d(hr, 2)), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                v = metrics.psnr(
                    net(sr_val_lr.to(device)).clamp(0, 1), sr_val.to(device)
                ).mean().item()  # fmt: skip
            if v > best[0]:
                best = (
                    v,
                    {k: t.clone() for k, t in net.state_dict().items()},
                    step,
                )
    return best


sr_runs = {lr: train_espcn(lr) for lr in (1e-3, 3e-3)}
for lr, (v, _, step) in sr_runs.items():
    print(f"lr {lr:g}: best validation PSNR {v:.2f} dB at step {step}")
SR_LR = max(sr_runs, key=lambda lr: sr_runs[lr][0])
espcn = restoration.ESPCN(3, 2, (32, 16), activation="relu").to(device)
espcn.load_state_dict(sr_runs[SR_LR][1])
espcn.eval()
print(f"chosen learning rate {SR_LR:g}")

sr_out = {
    m: upsample(sr_test_lr, m) for m in ("nearest", "bilinear", "bicubic")
}
with torch.no_grad():
    sr_out["ESPCN"] = espcn(sr_test_lr.to(device)).clamp(0, 1).cpu()
sr_scores = {
    k: (
        metrics.psnr(v, sr_test).mean().item(),
        metrics.ssim(v, sr_test).mean().item(),
    )
    for k, v in sr_out.items()
}
for k, (p, s) in sr_scores.items():
    print(f"{k:9s} test PSNR {p:5.2f} dB   SSIM {s:.3f}")
sr_gain = sr_scores["ESPCN"][0] - sr_scores["bicubic"][0]
assert sr_gain >= 2.5, (
    f"ESPCN beats bicubic by {sr_gain:.2f} dB, expected >= 2.5"
)
TIMES["super-resolution"] = time.perf_counter() - t0

# %% tags=["hide-input"]
pick = [0, 1, 2]
rows = [sr_test[pick]] + [
    sr_out[k][pick] for k in ("nearest", "bicubic", "ESPCN")
]
titles = []
for name in ("HR", "nearest", "bicubic", "ESPCN"):
    for i in pick:
        if name == "HR":
            titles.append("HR (truth)")
        else:
            p = metrics.psnr(sr_out[name][i], sr_test[i]).item()
            titles.append(f"{name} {p:.1f} dB")
viz.show_images(torch.cat(rows), titles, ncols=3, size=1.9)
plt.show()

# %% [markdown]
# Bicubic is, barely, the best of the three interpolations here (about 16.7 dB), and ESPCN adds
# about 3.3 dB on the test set (3.2 to 3.5 dB over three seeds of this set-up; the bar asks for
# 2.5, above the +2 dB that a prototype for the lecture notes set after 1000 steps). SSIM rises
# with it. The learning rate $3\cdot10^{-3}$ won on validation; $10^{-3}$ was still far from done
# after 1000 steps, and in our prototype $10^{-2}$ killed every ReLU in the first steps and left
# the model at bicubic. Validation PSNR was still rising at the last step, so training longer
# would probably gain more. The gain depends on the data: an earlier version of this demo drew ink
# and background colours independently, so many tiles had little contrast; bicubic already reached
# 21.9 dB there and an L2-trained tanh ESPCN added only half a decibel.
#
# The outputs are still soft, and the loss explains why. Many HR tiles shrink to the same LR
# tile. An L2 loss makes the network return, pixel by pixel, the *mean* of those HR values: where
# a stroke might sit in one of two places, a grey smear. An L1 loss returns the per-pixel *median*
# instead, which picks the likelier of ink and background rather than a blend of them. But each
# pixel is still decided on its own, so the guess is not one consistent stroke, and thin or
# uncertain strokes stay blurred or broken (see the ESPCN row above). Neither pixel loss rewards a
# sharp, plausible guess over a safe one: that is the motivation for SRGAN.
#
# ### SRGAN: perceptual and adversarial losses
#
# SRGAN (Ledig et al., 2017) keeps the task, LR in and SR out, and changes the loss. Its generator
# takes the **low-resolution image** as input (a residual network with sub-pixel upsampling); it
# does not generate from noise, as the lecture notes say. The discriminator sees HR images and SR
# outputs and learns to tell them apart. The generator minimizes a *perceptual loss*,
#
# $$\mathcal L^{SR} = \underbrace{\frac{1}{W_l H_l}\sum_{x,y}\big(\phi_l(I^{HR})_{x,y} - \phi_l(G(I^{LR}))_{x,y}\big)^2}_{\text{content loss on VGG features}} + 10^{-3}\,\underbrace{\sum_n -\log D\big(G(I^{LR}_n)\big)}_{\text{adversarial loss}}.$$
#
# The content loss compares features of a pretrained VGG instead of pixels, so a stroke shifted by
# a pixel costs less than a blurred one. The adversarial term pushes the output onto the manifold
# of sharp, natural-looking images. The notes also say that "high PSNR means high quality but
# lacking high-frequency detail"; the precise statement is that the MSE-optimal answer is blurry,
# so the image with the best PSNR is often not the one that looks best.
#
# Blau and Michaeli (2018) proved that this is a real trade-off, not a failure of training: for any
# distortion measure, demanding that outputs be statistically indistinguishable from real images
# (perfect "perception") forces the lowest achievable distortion up. An SRGAN output with sharp,
# plausible but *invented* strokes has a lower PSNR than the blurry pixel-loss output. Which one is
# better depends on the use: a radiologist wants the faithful one, a photo app the sharp one. We do not run
# the adversarial fine-tune here: on a CPU budget it is too noisy to measure reliably, and the
# chapter would only show a picture.
#
# ## Style transfer with Gram matrices
#
# Gatys et al. (2016) noticed that a CNN trained for recognition separates two things. Its deep
# feature maps say *what* is where (content); the **correlations** between its feature maps, summed
# over all positions, say which features occur together regardless of where (style, texture). With
# $F^l \in \mathbb R^{N_l\times M_l}$ the $N_l$ feature maps of layer $l$ flattened over their $M_l$
# positions,
#
# $$G^l_{ij} = \sum_k F^l_{ik}F^l_{jk},\qquad E_l = \frac{1}{4N_l^2M_l^2}\sum_{i,j}\big(G^l_{ij} - A^l_{ij}\big)^2,\qquad \mathcal L_{style} = \sum_l w_l E_l,$$
#
# where $A^l$ is the Gram matrix of the style image, and the content loss is
# $\mathcal L_{content} = \tfrac12\sum_{ij}(F^l_{ij} - P^l_{ij})^2$ at one deeper layer. The image
# itself is optimized, not a network: start from the content image (or from noise, for texture) and
# descend $\alpha\mathcal L_{content} + \beta\mathcal L_{style}$. The style loss is a normalized
# squared error (the notes call it a "root mean square difference"). Gatys used VGG-19, content at
# conv4_2 (not the top-most layer) and style at conv1_1 to conv5_1 with $w_l = 1/5$, and replaced
# max pooling by average pooling. `losses.gram_matrix` and `losses.style_loss` (chapter 03)
# implement exactly this normalization.
#
# We have no pretrained VGG offline. A CNN with **random weights** still produces feature
# correlations that capture colour and local structure, which is enough for texture synthesis
# (Ustyuzhaninov et al., 2017), though the results are cruder than with VGG: random filters do not
# respond to the object parts a trained network has learned. Our feature network: four $3\times3$
# convolutions (3 → 32 → 64 → 64 → 128), ReLU, average pooling between them, frozen.

# %%
t0 = time.perf_counter()


class RandomFeatures(nn.Module):
    def __init__(self, widths=(3, 32, 64, 64, 128)):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x):
        feats = []
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats


torch.manual_seed(0)
feat_net = RandomFeatures().to(device).requires_grad_(False)
style_img = data.clean_scenes(1, 32, kind="stripes", seed=0).to(device)
content_img = data.clean_scenes(1, 32, kind="blocks", seed=0).to(device)
style_feats, content_feats = feat_net(style_img), feat_net(content_img)

f1 = style_feats[0]
gram_einsum = torch.einsum("bik,bjk->bij", f1.flatten(2), f1.flatten(2))
torch.testing.assert_close(
    losses.gram_matrix(f1, normalize=False), gram_einsum, rtol=1e-4, atol=1e-4
)
eig = torch.linalg.eigvalsh(losses.gram_matrix(f1)[0].double())
assert eig.min() > -1e-9 * eig.max(), "a Gram matrix is positive semi-definite"
print("Gram: matches einsum, symmetric, eigenvalues >= 0")

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 6, figsize=(13, 4.4))
for row, (name, img, feats) in enumerate(
    (("style", style_img, style_feats), ("content", content_img, content_feats))
):
    axes[row, 0].imshow(img[0].permute(1, 2, 0).cpu())
    axes[row, 0].set_title(f"{name} image", fontsize=9)
    for j in range(4):
        axes[row, j + 1].imshow(feats[0][0, j].cpu(), cmap="viridis")
        axes[row, j + 1].set_title(f"layer 1, map {j}", fontsize=9)
    gm = losses.gram_matrix(feats[0][:, :8])[0].cpu()
    axes[row, 5].imshow(gm, cmap="magma")
    axes[row, 5].set_title("Gram, 8 maps", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "Feature maps of the random CNN and the Gram matrix of the first 8 "
    "(products of map pairs, summed over positions)"
)
plt.show()


# %%
def optimize_image(init, beta, steps=250, content_weight=1.0, lr=0.02):
    """Adam on the pixels: beta * style loss + content_weight * content."""
    x = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr)
    history = []
    for _ in range(steps + 1):
        f = feat_net(x)
        ls = losses.style_loss(f, style_feats)
        lc = losses.feature_loss(f[2], content_feats[2])
        history.append((ls.item(), lc.item()))
        if len(history) > steps:
            break
        opt.zero_grad()
        (beta * ls + content_weight * lc).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach(), np.array(history)


noise_init = torch.rand(
    1, 3, 32, 32, generator=torch.Generator().manual_seed(0)
).to(device)
texture, tex_hist = optimize_image(noise_init, beta=1.0, content_weight=0.0)
tex_fall = tex_hist[0, 0] / tex_hist[-1, 0]
print(
    f"texture from noise: style loss {tex_hist[0, 0]:.2e} -> "
    f"{tex_hist[-1, 0]:.2e} ({tex_fall:.0f}x lower)"
)
assert tex_fall >= 50, f"style loss fell {tex_fall:.0f}x, expected >= 50x"

# %% [markdown]
# The style loss of the texture falls about a thousandfold here (84 to 1107 times over three seeds
# of a prototype; the bar asks for 50). Now the trade-off: start from
# the content image and weigh the style loss by $\beta$ against the content loss (weight 1). A small
# $\beta$ keeps the content and changes little; a large one repaints everything.

# %%
BETAS = (1.0, 10.0, 100.0, 1e4)
transfers = {b: optimize_image(content_img, beta=b) for b in BETAS}
content_gram_gap = losses.style_loss(content_feats, style_feats).item()
print("   β | style loss (start → end) | content loss at end")
for b, (_, h) in transfers.items():
    print(f"{b:6g} | {h[0, 0]:.2e} → {h[-1, 0]:.2e} | {h[-1, 1]:.2e}")
style_end = [transfers[b][1][-1, 0] for b in BETAS]
content_end = [transfers[b][1][-1, 1] for b in BETAS]
fall = transfers[BETAS[-1]][1][0, 0] / style_end[-1]
assert fall >= 50, f"style loss fell {fall:.0f}x at β = {BETAS[-1]:g}"
assert style_end[-1] < content_gram_gap, "output nearer the style than content"
assert all(a > b for a, b in zip(style_end, style_end[1:], strict=False))
assert all(a < b for a, b in zip(content_end, content_end[1:], strict=False))
TIMES["style"] = time.perf_counter() - t0

# %% tags=["hide-input"]
imgs = [content_img, style_img, texture] + [transfers[b][0] for b in BETAS]
names = ["content", "style", "texture\n(from noise)"]
names += [f"β = {b:g}" for b in BETAS]
viz.show_images(torch.cat(imgs).cpu(), names, ncols=7, size=1.8)
plt.show()
fig, ax = plt.subplots(figsize=(5, 3.3))
ax.loglog(content_end, style_end, "o-", color=viz.color(0))
for b, c, s in zip(BETAS, content_end, style_end, strict=True):
    ax.annotate(f"β = {b:g}", (c, s), fontsize=8, xytext=(4, 4),
                textcoords="offset points")  # fmt: skip
ax.set(xlabel="content loss", ylabel="style loss",
       title="Content/style trade-off after 250 steps")  # fmt: skip
plt.show()

# %% [markdown]
# As $\beta$ grows the style loss falls and the content loss rises (both asserted to be monotone);
# at $\beta = 1$ the image keeps the layout but picks up pixel noise: the content loss compares
# layer-3 features, and pixel patterns that those random features ignore cost nothing.
# the curve above is the trade-off a user picks a point on. The random network reproduces the
# palette and the direction of the stripes but not crisp stripes: it has no learned notion of
# "stripe". With VGG features the same code gives the familiar painterly results.
#
# ## Inpainting
#
# Inpainting fills missing pixels so that the result fits the rest of the image. Before deep
# learning, **PatchMatch** (Barnes et al., 2009) copied the best-matching patches from elsewhere in
# the image: smooth, fast, but limited to what the image already contains, so it cannot draw the
# second eye of a face. Learned methods generate new content:
#
# - **Context Encoder** (Pathak et al., 2016): an encoder–decoder through a channel-wise fully
#   connected bottleneck, trained with L2 plus an adversarial loss (L2 alone gives a blurry fill;
#   the adversarial term commits to one sharp answer).
# - **GLCIC** (Iizuka et al., 2017): fully convolutional with dilated convolutions for a large
#   receptive field; the image plus a mask channel in, RGB out; a global and a local discriminator.
# - **DeepFill v1** (Yu et al., 2018): coarse then refined output, and *contextual attention*,
#   which matches every hole location against all background patches by cosine similarity (a
#   convolution with the patches as filters), takes a softmax over the background locations and
#   pastes the weighted patches with a transposed convolution. There is one filter per background
#   location, not a fixed 128 as the notes say.
# - **Partial convolution** (Liu et al., 2018) and **gated convolution** (DeepFill v2, Yu et al.,
#   2019), below.
#
# Masks differ between papers: Context Encoder, GLCIC and DeepFill write $M = 1$ on the hole,
# partial convolution writes $M = 1$ on the *valid* pixels. This chapter's masks
# (`data.free_form_masks`, DeepFill v2's brush strokes: random lines with round joints) are hole
# masks, 1 = missing; `restoration.PartialConv2d` takes the valid mask $1 - \text{hole}$.

# %% tags=["hide-input"]
gallery = data.free_form_masks(8, 32, seed=1)
viz.show_images(
    gallery, [f"hole {m.mean():.0%}" for m in gallery], ncols=8, size=1.3,
    suptitle="Free-form masks (white = hole)",
)  # fmt: skip
plt.show()

# %% [markdown]
# ### Partial convolution
#
# An ordinary convolution treats the hole's pixels as data, whatever they were set to. A partial
# convolution looks only at the valid pixels of each window and rescales for how many there were:
#
# $$x' = \begin{cases} W^\top (X\odot M)\,\dfrac{\mathrm{sum}(\mathbf 1)}{\mathrm{sum}(M)} + b & \text{if } \mathrm{sum}(M) > 0\\ 0 & \text{otherwise,}\end{cases}\qquad m' = \mathbb 1[\mathrm{sum}(M) > 0].$$
#
# The factor $\mathrm{sum}(\mathbf 1)/\mathrm{sum}(M)$ ($9/\text{valid count}$ for a $3\times3$
# window) makes a half-valid window respond like a full one. The mask update says a pixel becomes
# valid once its window saw any valid pixel, so a stack of $3\times3$ partial convolutions eats
# into the hole one pixel per side per layer. The function below is the definition, window by
# window (`F.unfold`); we check `restoration.PartialConv2d` against it, then check the two
# properties that matter.


# %%
def partial_conv_scratch(x, valid, weight, bias):
    k = weight.shape[-1]
    cols = F.unfold(x * valid, k, padding=k // 2)  # [N, C k², L]
    count = F.unfold(valid, k, padding=k // 2).sum(1, keepdim=True)
    out = weight.flatten(1) @ cols * (k * k) / count.clamp(min=1)
    out = torch.where(count > 0, out + bias[:, None], torch.zeros(()))
    n, _, h, w = x.shape
    return out.reshape(n, -1, h, w), (count > 0).float().reshape(n, 1, h, w)


torch.manual_seed(0)
pconv = restoration.PartialConv2d(3, 4, 3)
nn.init.normal_(pconv.bias)
x_pc = torch.randn(2, 3, 16, 16)
valid_pc = 1 - data.free_form_masks(2, 16, width=(0.2, 0.3), seed=2)
ours, ours_mask = pconv(x_pc, valid_pc)
ref, ref_mask = partial_conv_scratch(
    x_pc, valid_pc, pconv.conv.weight, pconv.bias
)
torch.testing.assert_close(ours, ref)
assert torch.equal(ours_mask, ref_mask)
print("restoration.PartialConv2d matches the definition")

# %%
# NBVAL_CHECK_OUTPUT
valid_sq = torch.ones(1, 1, 16, 16)
valid_sq[..., 4:12, 4:12] = 0  # an 8 x 8 hole
x_a = torch.randn(1, 3, 16, 16)
x_b = x_a.clone()
x_b[..., 4:12, 4:12] = 100 * torch.randn(3, 8, 8)  # other values in the hole
out_a, _ = pconv(x_a, valid_sq)
out_b, _ = pconv(x_b, valid_sq)
print(
    "output unchanged when the hole's values change:", torch.equal(out_a, out_b)
)
assert torch.equal(out_a, out_b)
hole_sizes, m = [int((valid_sq == 0).sum())], valid_sq
for _ in range(4):
    _, m = pconv(torch.zeros(1, 3, 16, 16), m)
    hole_sizes.append(int((m == 0).sum()))
print("hole pixels after 0, 1, 2, 3, 4 partial convolutions:", hole_sizes)
assert hole_sizes == [64, 36, 16, 4, 0]

# %% [markdown]
# ### Gated convolution
#
# Partial convolution's rule is hard: a window with one valid pixel and one with nine produce the
# same updated mask; it cannot use a user's sketch inside the hole (is that pixel valid?); and after
# a few layers the mask is all ones, so deeper layers no longer know where the hole was. Gated
# convolution (Yu et al., 2019) learns the mask instead. Two convolutions read the same input,
#
# $$O = \phi(W_f * I)\odot\sigma(W_g * I),$$
#
# a feature branch with activation $\phi$ (ELU here) and a gating branch squashed by the logistic
# sigmoid $\sigma$ into $(0, 1)$, one gate per channel and per pixel. (In the DeiT equation of
# chapter 14 $\sigma$ stood for the softmax; here it is the sigmoid.) DeepFill v2 feeds the image
# with the hole set to a constant plus the mask as a 4th channel, stacks gated convolutions with
# dilations for a large receptive field, and trains with L1 plus an SN-PatchGAN discriminator
# (spectral normalization, one real/fake score per patch) at a 1:1 ratio, with no perceptual
# loss. The partial-convolution paper instead uses six terms (valid and hole L1, perceptual, two
# style terms, total variation, weighted 1, 6, 0.05, 120, 120, 0.1).
#
# Our `restoration.GatedConvNet` has three gated layers (dilations 1, 2, 1) and an ungated output
# convolution. A deeper stack with dilations 1, 2, 4, 2, 1 and a gated output layer trained worse
# within this budget: every gate starts near 0.5, and a product of five of them shrinks the signal.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(13, 2.2))
viz.chain_diagram(
    [
        ("image × valid,\nvalid mask", "io"),
        ("4 × partial conv\n3×3, 16 ch, ReLU", "conv"),
        ("partial conv\n3×3, 16 → 3", "conv"),
        ("composite with\nknown pixels", "other"),
    ],
    ax=axes[0],
    title="PartialConvNet (mask updated every layer)",
)
viz.chain_diagram(
    [
        ("[image, hole]\n4 channels", "io"),
        ("3 × gated conv 3×3\ndil. 1, 2, 1; ELU", "conv"),
        ("conv 3×3\n16 → 3", "conv"),
        ("composite with\nknown pixels", "other"),
    ],
    ax=axes[1],
    title="GatedConvNet (learned soft gates)",
)
plt.show()

# %% [markdown]
# Both networks are trained for the same number of steps on the scenes of the denoising section
# (24 px) with free-form masks, with the partial-convolution paper's two pixel terms,
# $\mathcal L_{valid} + 6\,\mathcal L_{hole}$ (L1 on the known and on the missing pixels). The
# baseline fills the hole with the mean colour of the known pixels of each image. The metric is the
# L1 error on the hole pixels only, on test images and masks neither network saw.
#
# Each network gets its own Adam learning rate, chosen on a validation split (200 other scenes and
# masks) in a prototype run over three seeds; the table gives the validation hole L1 as a fraction
# of mean fill (lower is better), the mean over seeds 0, 1 and 2:
#
# | learning rate | $10^{-3}$ | $3\times10^{-3}$ | $10^{-2}$ |
# |---|---|---|---|
# | partial convolution | 0.59 | **0.59** (0.586) | 1.09 (diverges) |
# | gated convolution | 0.75 | 0.69 | **0.68** |
#
# Partial convolution takes $3\times10^{-3}$ (a hair ahead of $10^{-3}$), the gated network
# $10^{-2}$, at which partial convolution's renormalized sums blow up.

# %%
t0 = time.perf_counter()
INP_SIZE, INP_STEPS = 24, 400
INP_LR = {"partial conv": 3e-3, "gated conv": 1e-2}  # chosen on validation
inp_train = data.clean_scenes(800, INP_SIZE, kind="blocks", seed=10)
inp_train_holes = data.free_form_masks(800, INP_SIZE, seed=10)
inp_test = data.clean_scenes(200, INP_SIZE, kind="blocks", seed=12)
inp_test_holes = data.free_form_masks(200, INP_SIZE, seed=12)


def hole_l1(out, clean, hole):
    return ((out - clean).abs() * hole).sum().item() / (3 * hole.sum().item())


known = 1 - inp_test_holes
mean_fill = (inp_test * known).sum((2, 3), keepdim=True) / known.sum(
    (2, 3), keepdim=True
)
inp_scores = {"mean fill": hole_l1(mean_fill.expand_as(inp_test), inp_test,
                                   inp_test_holes)}  # fmt: skip


def train_inpainter(model, lr, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(INP_STEPS):
        idx = torch.randint(0, len(inp_train), (16,), generator=g)
        x, hole = inp_train[idx].to(device), inp_train_holes[idx].to(device)
        out = model(x * (1 - hole), hole)
        err = (out - x).abs()
        loss = (err * (1 - hole)).mean() + 6 * (err * hole).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


inpainters = {}
for name, make in (
    ("partial conv", lambda: restoration.PartialConvNet(3, 16, 5)),
    ("gated conv", lambda: restoration.GatedConvNet(3, 16, (1, 2, 1))),
):
    torch.manual_seed(0)
    inpainters[name] = train_inpainter(make(), INP_LR[name])
    with torch.no_grad():
        out = inpainters[name](
            inp_test.to(device) * (1 - inp_test_holes.to(device)),
            inp_test_holes.to(device),
        ).cpu()  # fmt: skip
    inp_scores[name] = hole_l1(out, inp_test, inp_test_holes)
for k, v in inp_scores.items():
    print(
        f"{k:12s} hole L1 {v:.3f}  ({v / inp_scores['mean fill']:.2f} of mean fill)"
    )
for name in ("partial conv", "gated conv"):
    ratio = inp_scores[name] / inp_scores["mean fill"]
    assert ratio < 0.7, (
        f"{name}: hole L1 {ratio:.2f} of mean fill, expected < 0.7"
    )
TIMES["inpainting"] = time.perf_counter() - t0

# %% tags=["hide-input"]
show_idx = [0, 1, 2, 3]
x_show, h_show = inp_test[show_idx], inp_test_holes[show_idx]
with torch.no_grad():
    comp = {
        name: restoration.PartialConvNet.composite(
            net(x_show.to(device) * (1 - h_show.to(device)), h_show.to(device)).cpu(),
            x_show, h_show,
        ).clamp(0, 1)
        for name, net in inpainters.items()
    }  # fmt: skip
mean_show = x_show * (1 - h_show) + mean_fill[show_idx] * h_show
panels = [x_show * (1 - h_show) + h_show, mean_show, comp["partial conv"],
          comp["gated conv"], x_show]  # fmt: skip
titles = [
    "input (white = hole)",
    "mean fill",
    "partial conv",
    "gated conv",
    "truth",
]
viz.show_images(
    torch.stack(panels, 1).flatten(0, 1), titles * len(show_idx), ncols=5,
    size=1.7,
)  # fmt: skip
plt.show()

# %% [markdown]
# Both networks cut the hole error below the mean fill: the bar asks for less than 0.7 of it, and
# three seeds gave 0.53 to 0.56 for partial convolution and 0.62 to 0.68 for the gated network, each
# at its chosen learning rate (a close call for the latter; a wider gated network or more steps
# gained only about 0.03). They extend
# edges and colours into thin holes; where a whole shape is hidden, nothing in the image says it was
# there, and no pixel loss will invent it. That is the job of the adversarial and perceptual terms
# of the full methods. Partial convolution did better here in every seed we tried: its
# renormalized average of the valid neighbours is exactly the right prior for thin holes in flat
# scenes, while the gated network has to learn it from the mask channel. That says more about this
# small test than about the two methods; DeepFill v2's gates pay off with large holes, sketches
# and many more training steps.
#
# ## StyleGAN inversion: $Z$, $W$ and $W^+$
#
# A trained generator $G$ knows a lot about images. To edit a *real* image with it we need a code
# that reproduces the image: this is **inversion**. StyleGAN (chapter 10) offers three places to
# search:
#
# - $Z$: the Gaussian input $z$, mapped by the 8-layer MLP to $w = f(z)$, used at every layer;
# - $W$: the intermediate code $w$ itself, one vector for all layers;
# - $W^+$: one $w_\ell$ per styled layer (18 for a 1024² StyleGAN), Image2StyleGAN's extended space
#   (Abdal et al., 2019). Each layer's affine map then gets its own input.
#
# Each space contains the previous one, so optimization can only fit better: the MSE should order
# as $Z \ge W \ge W^+$. Image2StyleGAN optimizes $\mathcal L = \mathcal L_{percept}(G(w), I) +
# \tfrac{\lambda}{N}\|G(w) - I\|_2^2$ with Adam from the mean $w$. We use the pixel MSE alone, the
# `ToyStyleGenerator` of chapter 10 with 6 styled layers at 16×16 (random weights, frozen, noise
# off), and 8 targets the generator never made: scikit-learn digits, upsampled and scaled to
# $[-1, 1]$. $Z$ starts from a fixed random $z$, $W$ from the mean $\bar w$ of 2000 mapped samples,
# $W^+$ from $\bar w$ copied to every layer. Each space gets its own Adam learning rate, chosen
# among 0.1, 0.3 and 1 on four other digits (60 steps), so that no space loses for a badly
# suited step size.

# %% tags=["hide-input"]
viz.diagram(
    {
        "z": (0, 0, "z ∈ Z", "io"),
        "map": (2.3, 0, "mapping\n4 × FC", "linear"),
        "w": (4.6, 0, "w ∈ W\n(one per layer:\nW+)", "io"),
        "syn": (7.0, 0, "synthesis\n6 styled layers\n(AdaIN)", "conv"),
        "img": (9.3, 0, "G(w)", "io"),
        "tgt": (9.3, -1.3, "target I", "io"),
        "loss": (7.0, -1.3, "MSE", "head"),
    },
    [
        ("z", "map"),
        ("map", "w"),
        ("w", "syn"),
        ("syn", "img"),
        ("img", "loss", "--"),
        ("tgt", "loss", "--"),
    ],
    title="Inversion: optimize z, w or (w_1..w_6) so that G matches the target",
)
plt.show()

# %%
t0 = time.perf_counter()
torch.manual_seed(0)
toy_gen = generative.ToyStyleGenerator(
    16, 16, (32, 32, 16, 16, 16, 16), out_channels=1
).to(device)
toy_gen.requires_grad_(False).eval()
digits, _ = data.load_digits()
targets = F.interpolate(digits[torch.arange(8) * 37], size=16, mode="bilinear")
targets = (targets / targets.amax((1, 2, 3), keepdim=True) * 2 - 1).to(device)
with torch.no_grad():
    z_many = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    w_mean = toy_gen.mapping(z_many.to(device)).mean(0)


def invert(space, targets, steps=200, lr=0.05):
    n, layers = len(targets), toy_gen.num_layers
    if space == "Z":
        code = torch.randn(n, 16, generator=torch.Generator().manual_seed(1))
        code = code.to(device)
    elif space == "W":
        code = w_mean.expand(n, -1).clone()
    else:
        code = w_mean.expand(n, layers, -1).clone()
    code.requires_grad_(True)
    opt = torch.optim.Adam([code], lr)
    curve = []
    for _ in range(steps + 1):
        ws = toy_gen.mapping(code) if space == "Z" else code
        per_image = (toy_gen.synthesis(ws, "zero") - targets).square()
        per_image = per_image.mean((1, 2, 3))
        curve.append(per_image.detach().cpu())
        if len(curve) > steps:
            break
        opt.zero_grad()
        per_image.sum().backward()
        opt.step()
    with torch.no_grad():
        final = toy_gen.synthesis(toy_gen.mapping(code) if space == "Z" else code,
                                  "zero")  # fmt: skip
    return torch.stack(curve), final.cpu()


val_targets = F.interpolate(
    digits[torch.arange(4) * 41 + 500], size=16, mode="bilinear"
)
val_targets = val_targets / val_targets.amax((1, 2, 3), keepdim=True) * 2 - 1
inv_lr = {}
for s in ("Z", "W", "W+"):  # Adam's learning rate per space, on other digits
    val_mse = {
        lr: invert(s, val_targets.to(device), 60, lr)[0][-1].mean().item()
        for lr in (0.1, 0.3, 1.0)
    }
    inv_lr[s] = min(val_mse, key=val_mse.get)
print("learning rate chosen on validation digits:", inv_lr)
inversions = {s: invert(s, targets, lr=inv_lr[s]) for s in ("Z", "W", "W+")}
final_mse = {s: c[-1] for s, (c, _) in inversions.items()}
for s, v in final_mse.items():
    print(f"{s:3s} final MSE: mean {v.mean():.4f}, per target "
          f"{' '.join(f'{a:.3f}' for a in v.tolist())}")  # fmt: skip
ordered = (final_mse["Z"] >= final_mse["W"]) & (
    final_mse["W"] >= final_mse["W+"]
)
assert ordered.all(), (
    f"MSE order Z >= W >= W+ fails for targets {(~ordered).nonzero()}"
)
TIMES["inversion"] = time.perf_counter() - t0

# %% tags=["hide-input"]
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.3))
for i, (s, (curve, _)) in enumerate(inversions.items()):
    ax.semilogy(curve.mean(1), color=viz.color(i), label=s)
ax.set(xlabel="Adam step", ylabel="MSE (mean over 8 targets)",
       title="Inversion into Z, W, W+")  # fmt: skip
ax.legend()
ax2.bar(list(final_mse), [v.mean().item() for v in final_mse.values()],
        color=[viz.color(i) for i in range(3)])  # fmt: skip
ax2.set(yscale="log", ylabel="final MSE", title="After 200 steps")
plt.show()
rows_inv = [targets.cpu()[:6]] + [
    inversions[s][1][:6] for s in ("Z", "W", "W+")
]
viz.show_images(
    torch.cat(rows_inv), [f"{r} {j}" for r in ("target", "Z", "W", "W+")
                          for j in range(6)],
    ncols=6, vmin=-1, vmax=1, size=1.2,
)  # fmt: skip
plt.show()

# %% [markdown]
# $W^+$ fits every target far better than $W$, and $W$ better than $Z$. (For $Z$ the learning rate
# hardly matters: from a random $z$ through an untrained mapping network its MSE barely moves at
# any of the three rates.) For editing this is not the
# whole story. A code far outside the distribution the generator was trained on reproduces the
# image but no longer behaves like a natural one: move it along an "age" or "smile" direction and
# the result falls apart. That is the **distortion–editability trade-off**.
#
# ### Encoders: pSp and e4e
#
# Optimization takes minutes per image; an encoder predicts the code in one forward pass.
#
# - **pSp** ("pixel2style2pixel", Richardson et al., 2021) puts a feature pyramid on a ResNet
#   backbone and a small convolutional head ("map2style") per style vector: styles 0–2 from the
#   coarse map, 3–6 from the middle one and 7–17 from the finest (the notes write "7–18", but 18
#   styles numbered from 0 end at 17). It trains with L2, perceptual (LPIPS) and an identity loss
#   against a fixed pretrained StyleGAN.
# - **e4e** ("encoder for editing", Tov et al., 2021) makes the trade-off explicit. Instead of
#   "$W^+$" it writes $W^k_*$ for $k$ codes possibly outside the mapping's range. Two principles
#   keep the codes editable: predict one $w$ plus offsets $\Delta_i$ for the other layers and
#   penalize them, $\mathcal L_{d\text{-reg}} = \sum_i\|\Delta_i\|_2$ (the offsets are switched on
#   progressively, coarse layers first); and a *latent discriminator* that tells real $w = f(z)$
#   from encoder codes keeps each code near $W$. The identity term is $1 - \cos$ of face-recognition
#   embeddings, i.e. it *maximizes* the cosine similarity (the notes say "minimize"). The result
#   has somewhat higher distortion than pSp and much better edits.
#
# ### StyleCLIP
#
# StyleCLIP (Patashnik et al., 2021) edits with a text prompt $t$ and CLIP (chapter 18). **Latent
# optimization** starts from the inverted code $w_s$ and minimizes, in $W^+$,
#
# $$D_{CLIP}(G(w), t) + \lambda_{L2}\|w - w_s\|_2 + \lambda_{ID}\big(1 - \langle R(G(w_s)), R(G(w))\rangle\big),$$
#
# a CLIP distance to the prompt, a leash to the start, and an identity term. A **latent mapper**
# (three small MLPs, for the coarse, medium and fine parts of $w$) is trained once per prompt and
# then edits in one forward pass with an input-dependent step. The third method in the paper,
# **global directions**, which the notes leave out, turns the prompt into one fixed direction in
# StyleGAN's style space, found without training, that applies to every image. Each method
# inherits the trade-off above: edits only work if the inverted code is editable.
#
# ## Summary
#
# - PSNR is $10\log_{10}(L^2/\mathrm{MSE})$ (3 dB per halving of the MSE); SSIM compares local
#   means, contrast and structure. `metrics.psnr` and `metrics.ssim` match scikit-image.
# - A residual denoiser learns the correction, not the image. CBDNet adds a noise-level map,
#   trained with an asymmetric loss that prefers over-estimating. Both gained about 5 dB at
#   $\sigma = 0.1$; the estimate was accurate inside the training range and too low outside it.
# - Interpolation kernels: nearest (box), bilinear (tent), bicubic (4×4 with negative lobes).
#   Transposed convolutions with a kernel not divisible by the stride overlap unevenly and leave a
#   checkerboard; the pixel shuffle rearranges channels into space and does not.
# - ESPCN (ReLU, L1 loss, 1000 steps) beat bicubic on contrasting test text by about 3.3 dB.
#   SR trained on a pixel loss is blurry by construction (L2 returns the mean of the plausible
#   images, L1 the per-pixel median); SRGAN's VGG content loss and adversarial loss trade PSNR for
#   sharpness (the perception–distortion trade-off), and its generator reads the LR image, not
#   noise.
# - Gram matrices of even a random CNN carry texture: the style loss fell by two to three orders
#   of magnitude, and a weight $\beta$ slides between content and style.
# - Partial convolution ignores the hole exactly and shrinks it one pixel per side per layer; gated
#   convolution learns a soft gate. Both beat a mean fill (about 0.55 and 0.62-0.68 of its hole
#   error).
# - Inversion fits better the larger the space ($Z \ge W \ge W^+$ in MSE), and the best fit is not
#   the most editable code: e4e regularizes toward $W$; StyleCLIP edits with text on top.
#
# ## Exercises
#
# ### Exercise 1: Gram matrices with einsum
#
# Write `gram(features)` that returns the unnormalized Gram matrices `Tensor[B, C, C]` of feature
# maps `Tensor[B, C, H, W]` with one call to `torch.einsum` (no reshape into a matrix product).
# Then answer on paper: why does shuffling the spatial positions of all channels in the same way
# leave the Gram matrix unchanged, and what does that mean for style transfer?

# %%
gram_cases = [
    (torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(i)),)
    for i in range(2)
]


def gram(features):
    raise NotImplementedError  # your code: one torch.einsum


exercises.check_function(
    gram, gram_cases,
    reference=lambda f: losses.gram_matrix(f, normalize=False),
    atol=1e-4, rtol=1e-4,
)  # fmt: skip


# %% tags=["hide-cell"]
def gram(features):
    return torch.einsum("bihw,bjhw->bij", features, features)


exercises.check_function(
    gram, gram_cases,
    reference=lambda f: losses.gram_matrix(f, normalize=False),
    atol=1e-4, rtol=1e-4,
).assert_passed()  # fmt: skip
perm = torch.randperm(30)
f_ex = gram_cases[0][0]
shuffled = f_ex.flatten(2)[..., perm].reshape(f_ex.shape)
torch.testing.assert_close(gram(shuffled), gram(f_ex), rtol=1e-4, atol=1e-4)
print("Gram is unchanged by a spatial shuffle: it keeps which features")
print("co-occur, not where. That is why it describes texture, not layout.")

# %% [markdown]
# ### Exercise 2: the inverse of the pixel shuffle
#
# Write `pixel_unshuffle(x, r)` that maps `Tensor[N, C, H r, W r]` to `Tensor[N, C r², H, W]`,
# undoing `pixel_shuffle_scratch` (a space-to-depth rearrangement, used for example to feed a
# high-resolution image to a network at low resolution). The check compares it with
# `F.pixel_unshuffle`.

# %%
unshuffle_cases = [(torch.randn(2, 3, 6, 8), 2), (torch.randn(1, 2, 9, 6), 3)]


def pixel_unshuffle(x, r):
    raise NotImplementedError  # your code: reshape and permute


exercises.check_function(
    pixel_unshuffle, unshuffle_cases, reference=F.pixel_unshuffle
)


# %% tags=["hide-cell"]
def pixel_unshuffle(x, r):
    n, c, hr, wr = x.shape
    h, w = hr // r, wr // r
    x = x.reshape(n, c, h, r, w, r)  # [n, c, h, i, w, j]
    x = x.permute(0, 1, 3, 5, 2, 4)  # [n, c, i, j, h, w]
    return x.reshape(n, c * r * r, h, w)


exercises.check_function(
    pixel_unshuffle, unshuffle_cases, reference=F.pixel_unshuffle
).assert_passed()
x_round = torch.randn(1, 8, 3, 3)
assert torch.equal(
    pixel_unshuffle(pixel_shuffle_scratch(x_round, 2), 2), x_round
)

# %% [markdown]
# ### Exercise 3: how many partial convolutions fill a hole?
#
# Write `layers_to_fill(hole)` that takes a hole mask `Tensor[1, 1, H, W]` (1 = missing) and
# returns the number of stacked $3\times3$ partial convolutions (stride 1, padding 1) after which
# no hole pixel is left, without running a network: think of the mask update as a dilation of the
# valid region. The reference runs `restoration.PartialConv2d` until the hole is gone. Which
# property of a hole decides the answer?


# %%
def layers_by_partial_conv(hole):
    layer = restoration.PartialConv2d(1, 1, 3)
    m, count = 1 - hole, 0
    while (m == 0).any():
        _, m = layer(torch.zeros_like(hole), m)
        count += 1
    return count


fill_cases = [(1 - valid_sq,)] + [
    (data.free_form_masks(1, 24, width=(0.2, 0.4), seed=s),) for s in range(3)
]


def layers_to_fill(hole):
    raise NotImplementedError  # your code


exercises.check_function(
    layers_to_fill, fill_cases, reference=layers_by_partial_conv
)


# %% tags=["hide-cell"]
def layers_to_fill(hole):
    """Chebyshev distance from each hole pixel to the nearest valid one, max."""
    valid, count = (hole == 0).float(), 0
    while (valid == 0).any():
        valid = F.max_pool2d(valid, 3, stride=1, padding=1)  # 3x3 dilation
        count += 1
    return count


exercises.check_function(
    layers_to_fill, fill_cases, reference=layers_by_partial_conv
).assert_passed()
print("answers:", [layers_to_fill(h) for (h,) in fill_cases])
print("the largest Chebyshev distance from a hole pixel to a valid pixel")

# %% [markdown]
# ## References
#
# - Wang, Z., Bovik, A. C., Sheikh, H. R., and Simoncelli, E. P. (2004). Image quality assessment:
#   from error visibility to structural similarity. *IEEE Transactions on Image Processing*, 13(4).
# - Zhang, K., Zuo, W., Chen, Y., Meng, D., and Zhang, L. (2017). Beyond a Gaussian denoiser:
#   residual learning of deep CNN for image denoising. *IEEE TIP*, 26(7). arXiv:1608.03981.
# - Guo, S., Yan, Z., Zhang, K., Zuo, W., and Zhang, L. (2019). Toward convolutional blind denoising
#   of real photographs. *CVPR 2019*. arXiv:1807.04686. (CBDNet.)
# - Shi, W., Caballero, J., Huszár, F., Totz, J., Aitken, A. P., Bishop, R., Rueckert, D., and Wang,
#   Z. (2016). Real-time single image and video super-resolution using an efficient sub-pixel
#   convolutional neural network. *CVPR 2016*. arXiv:1609.05158. (ESPCN.)
# - Odena, A., Dumoulin, V., and Olah, C. (2016). Deconvolution and checkerboard artifacts.
#   *Distill*. doi:10.23915/distill.00003.
# - Ledig, C., Theis, L., Huszár, F., et al. (2017). Photo-realistic single image super-resolution
#   using a generative adversarial network. *CVPR 2017*. arXiv:1609.04802. (SRGAN.)
# - Blau, Y., and Michaeli, T. (2018). The perception-distortion tradeoff. *CVPR 2018*.
#   arXiv:1711.06077.
# - Gatys, L. A., Ecker, A. S., and Bethge, M. (2016). Image style transfer using convolutional
#   neural networks. *CVPR 2016*. (See also arXiv:1508.06576.)
# - Ustyuzhaninov, I., Brendel, W., Gatys, L. A., and Bethge, M. (2017). What does it take to
#   generate natural textures? *ICLR 2017*. (Textures from random-weight networks.)
# - Barnes, C., Shechtman, E., Finkelstein, A., and Goldman, D. B. (2009). PatchMatch: a randomized
#   correspondence algorithm for structural image editing. *ACM SIGGRAPH 2009*.
# - Pathak, D., Krähenbühl, P., Donahue, J., Darrell, T., and Efros, A. A. (2016). Context encoders:
#   feature learning by inpainting. *CVPR 2016*. arXiv:1604.07379.
# - Iizuka, S., Simo-Serra, E., and Ishikawa, H. (2017). Globally and locally consistent image
#   completion. *ACM TOG (SIGGRAPH)*, 36(4). (GLCIC.)
# - Yu, J., Lin, Z., Yang, J., Shen, X., Lu, X., and Huang, T. S. (2018). Generative image inpainting
#   with contextual attention. *CVPR 2018*. arXiv:1801.07892. (DeepFill v1.)
# - Liu, G., Reda, F. A., Shih, K. J., Wang, T.-C., Tao, A., and Catanzaro, B. (2018). Image
#   inpainting for irregular holes using partial convolutions. *ECCV 2018*. arXiv:1804.07723.
# - Yu, J., Lin, Z., Yang, J., Shen, X., Lu, X., and Huang, T. S. (2019). Free-form image inpainting
#   with gated convolution. *ICCV 2019*. arXiv:1806.03589. (DeepFill v2.)
# - Karras, T., Laine, S., and Aila, T. (2019). A style-based generator architecture for generative
#   adversarial networks. *CVPR 2019*. arXiv:1812.04948. (StyleGAN.)
# - Abdal, R., Qin, Y., and Wonka, P. (2019). Image2StyleGAN: how to embed images into the StyleGAN
#   latent space? *ICCV 2019*. arXiv:1904.03189.
# - Richardson, E., Alaluf, Y., Patashnik, O., Nitzan, Y., Azar, Y., Shapiro, S., and Cohen-Or, D.
#   (2021). Encoding in style: a StyleGAN encoder for image-to-image translation. *CVPR 2021*.
#   arXiv:2008.00951. (pSp.)
# - Tov, O., Alaluf, Y., Nitzan, Y., Patashnik, O., and Cohen-Or, D. (2021). Designing an encoder for
#   StyleGAN image manipulation. *ACM TOG (SIGGRAPH)*, 40(4). arXiv:2102.02766. (e4e.)
# - Patashnik, O., Wu, Z., Shechtman, E., Cohen-Or, D., and Lischinski, D. (2021). StyleCLIP:
#   text-driven manipulation of StyleGAN imagery. *ICCV 2021*. arXiv:2103.17249.

# %%
print("section times (s):", {k: round(v, 1) for k, v in TIMES.items()})
