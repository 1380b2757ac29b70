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
# # 20 · Scaling up training
#
# Every chapter so far trained small models on one CPU thread. Real training runs are bigger by
# factors of thousands, and what decides whether they finish in a day or a month is rarely the model:
# it is where the time goes (the data pipeline, the number format, the memory layout, the Python
# overhead) and how the work is split across devices and machines. This chapter measures each of
# these on the machine that runs it: it profiles a training step, times data loading with worker
# processes, trains in bfloat16, changes the memory layout, compiles the model, shows that gradient
# accumulation and checkpoint resumption change nothing they should not, and finally trains the same
# model on two processes with PyTorch's DistributedDataParallel, launched with `torchrun` exactly as
# on a cluster, and checks that two processes give the weights one process gives.
#
# **Learning objectives.** After this chapter you can:
# - read a `torch.profiler` table and say which operations of a training step dominate the forward
#   pass, the backward pass and the optimizer step;
# - measure what DataLoader worker processes and pinned memory buy, and say when they cannot help;
# - explain the float16 and bfloat16 formats (range, precision), why float16 needs a gradient
#   scaler and bfloat16 does not, and use mixed precision through course_lib's runtime helpers;
# - measure channels-last memory layout and `torch.compile` (with its compile time) and decide when
#   each pays off;
# - implement gradient accumulation that equals a larger batch, and checkpoints (model, optimizer,
#   scheduler, random state) that resume a run exactly;
# - run data-parallel training with `torchrun`, DistributedDataParallel and DistributedSampler,
#   explain the gradient all-reduce and its ring implementation, launch the same script on several
#   machines, and say what FSDP/ZeRO shard and why.
#
# **Prerequisites.** [Chapter 04](../04_optimization/04_optimization.ipynb) (SGD with momentum, AdamW,
# learning-rate schedules), [chapter 05](../05_regularization/05_regularization.ipynb) (batch
# normalization) and [chapter 06](../06_cnns/06_cnns.ipynb) (convolutional networks).
#
# **Measured runtime:** 38 s on a 2-core CPU (see the [runtime table](../../assets/runtimes.md)).
#
# **Files:** [20_scaling_up.ipynb](20_scaling_up.ipynb) (notebook, with outputs) · [20_scaling_up.py](20_scaling_up.py) (the paired script instructors edit) · [ddp_train.py](ddp_train.py) (the data-parallel training script that `torchrun` runs)

# %%
import copy
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import ddp_train  # the script beside this notebook: its model, data and loop
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from course_lib import classic, distributed, exercises, optim, runtime, viz

device = runtime.setup(seed=0)
on_gpu = device.type != "cpu"
cpu_label = f"CPU ({runtime.cpu_name()}, 1 thread)"

# %% [markdown]
# ## The model, the data and one training step
#
# One model serves the whole chapter, the one that `ddp_train.py` trains: three
# convolution-GroupNorm-ReLU blocks (16, 32 and 64 channels, stride 2 in the last two), global
# average pooling and a linear layer, on 32×32 images of one coloured shape each (circle, square or
# triangle, with noise). GroupNorm rather than BatchNorm is deliberate: it normalizes each example on
# its own, so cutting a batch into pieces, as gradient accumulation and data parallelism do, changes
# nothing. The notebook imports `build_model`, `make_dataset` and `train` from the script, so the
# one-process reference below and the processes that `torchrun` starts run the same code.

# %%
dataset = ddp_train.make_dataset(512, seed=0)
images, labels = dataset.tensors
model = ddp_train.build_model()
print(f"images {tuple(images.shape)}, labels {tuple(labels.shape)}")
print("images per class:", torch.bincount(labels, minlength=3).tolist())
print(f"parameters: {classic.count_parameters(model):,}")

# %% tags=["hide-input"]
viz.chain_diagram(
    [
        ("image\n3×32×32", "io"),
        ("conv 3×3, 16\nGroupNorm, ReLU", "conv"),
        ("conv 3×3/2, 32\nGroupNorm, ReLU", "conv"),
        ("conv 3×3/2, 64\nGroupNorm, ReLU", "conv"),
        ("global\navg pool", "pool"),
        ("linear\n64 → 3", "linear"),
    ],
    spacing=2.2,
    block_size=(1.95, 0.8),
    fontsize=8,
    title="The chapter's convnet (ddp_train.build_model)",
)
plt.show()

# %% [markdown]
# A training step is four things: move the batch to the device, the forward pass and the loss, the
# backward pass, the optimizer step. `make_step` builds one such step for a fixed list of batches
# (it cycles through them), with the options this chapter measures: a low-precision `dtype` for
# autocast, the channels-last layout, and a gradient scaler.

# %%
BATCH = 64
g_batches = torch.Generator().manual_seed(1)
order = torch.randperm(len(images), generator=g_batches)
batches = [(images[i], labels[i]) for i in order[: 8 * BATCH].split(BATCH)]


def make_step(
    net, *, dtype=None, channels_last=False, scaler=None, on=device, lr=0.05
):
    """A training step over `batches` (in turn); returns (step, losses)."""
    net = net.to(on)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    data = [
        (x.to(on).contiguous(memory_format=fmt), y.to(on)) for x, y in batches
    ]
    losses = []

    def step():
        x, y = data[len(losses) % len(data)]
        opt.zero_grad(set_to_none=True)
        with runtime.autocast(on, enabled=dtype is not None, dtype=dtype):
            loss = F.cross_entropy(net(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(loss.item())

    return step, losses


# %% [markdown]
# ## Where time goes: the profiler
#
# Before making anything faster, measure where the time goes. `torch.profiler` records every
# operator PyTorch runs (`aten::…`, the C++ library under `torch`), with its time and how often it ran;
# `record_function` adds named ranges of our own, here `forward`, `backward` and `optimizer`. Two
# columns matter: **self** time (in the operator itself) and **total** time (itself plus the operators
# it called). Sorting by self time shows the operators that do the work; our named ranges have almost
# no self time, but their total time splits the step into its three parts. The device's own activity
# (kernels on a GPU) is recorded too where the machine has one (`supported_activities()`).

# %%
torch.manual_seed(0)
prof_model = ddp_train.build_model().to(device)
prof_opt = torch.optim.SGD(prof_model.parameters(), lr=0.05, momentum=0.9)


def profiled_step(x, y):
    with record_function("forward"):
        loss = F.cross_entropy(prof_model(x), y)
    with record_function("backward"):
        prof_opt.zero_grad(set_to_none=True)
        loss.backward()
    with record_function("optimizer"):
        prof_opt.step()


os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler library's C++ log
x_dev, y_dev = batches[0][0].to(device), batches[0][1].to(device)
profiled_step(x_dev, y_dev)  # warm-up: first calls allocate, pick algorithms
PROFILED_STEPS = 3
activities = [ProfilerActivity.CPU, *torch.profiler.supported_activities()]
with profile(activities=list(dict.fromkeys(activities))) as prof:
    for _ in range(PROFILED_STEPS):
        profiled_step(x_dev, y_dev)
events = prof.key_averages()
print(
    events.table(
        sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=38
    )
)

# %%
by_name = {e.key: e for e in events}
parts = {
    name: by_name[name].cpu_time_total / PROFILED_STEPS / 1e3
    for name in ("forward", "backward", "optimizer")
}
step_ms = sum(parts.values())
print(
    "per step: "
    + ", ".join(
        f"{k} {v:.1f} ms ({100 * v / step_ms:.0f} %)" for k, v in parts.items()
    )
)
conv_self = sum(
    e.self_cpu_time_total
    for e in events
    if "conv" in e.key.lower() and not e.key.startswith("aten::to")
)
all_self = sum(e.self_cpu_time_total for e in events)
print(
    f"convolution operators (forward and backward): {100 * conv_self / all_self:.0f} % "
    "of all self time"
)
n_convs = sum(isinstance(m, nn.Conv2d) for m in prof_model.modules())
assert (
    by_name["aten::convolution_backward"].count == PROFILED_STEPS * n_convs
), (
    "one convolution backward per convolution and step expected: "
    f"{PROFILED_STEPS * n_convs}, got {by_name['aten::convolution_backward'].count}"
)

# %% [markdown]
# How to read it, on the machine that ran this notebook (the printed numbers are from that run):
#
# - **Convolutions dominate.** The forward convolution (`aten::mkldnn_convolution` on an x86 CPU,
#   reached through `aten::convolution` and `aten::_convolution`) and `aten::convolution_backward`
#   hold most of the self time, the share printed above. The backward pass costs more than the
#   forward pass because every convolution computes two gradients, one for its input (to pass on) and
#   one for its weights, each about as costly as the forward convolution; the first layer skips the
#   input gradient, since the image needs none.
# - **GroupNorm and ReLU** (`native_group_norm`, its backward, `clamp_min`, `threshold_backward`) are
#   cheap in arithmetic but read and write the whole activation tensor: they are limited by memory
#   traffic, which is what operator fusion (`torch.compile`, below) removes.
# - **The optimizer step** is a handful of `aten::add_`/`aten::mul_` per parameter tensor (SGD with
#   momentum): a few percent for a model this small. With Adam and hundreds of parameter tensors it
#   grows, which is why PyTorch's optimizers have `foreach` implementations that update all
#   tensors in a few batched calls.
#
# The check above counts operator calls, not times: three convolution backwards per step, exactly.
# Timings differ between machines; counts do not.
#
# One line of the table is not our model's: `aten::fill_`, called dozens of times per step.
# `runtime.setup` asks PyTorch for deterministic algorithms, and in that mode PyTorch also fills every
# newly allocated tensor with NaN before use (`torch.utils.deterministic.fill_uninitialized_memory`),
# so that a kernel reading memory it never wrote gives NaN rather than a silent, irreproducible
# value. A safety net, at the price of one extra pass over each new tensor: the cell below counts the
# fills per step and times the step with the filling on and off (the profiler's own bookkeeping per
# call makes many small calls look costlier in its table than they are without it). The rest of the
# chapter measures with the filling off; the algorithms stay deterministic.


# %%
def fills_and_seconds(fill):
    torch.utils.deterministic.fill_uninitialized_memory = fill
    with profile(activities=[ProfilerActivity.CPU]) as one:
        profiled_step(x_dev, y_dev)
    fills = sum(e.count for e in one.key_averages() if e.key == "aten::fill_")
    timing = runtime.benchmark(
        lambda: profiled_step(x_dev, y_dev), steps=2, repeats=3
    )
    return fills, timing.best


(fills_on, sec_on), (fills_off, sec_off) = map(fills_and_seconds, (True, False))
print(f"fill on:  {fills_on:3d} fills per step, {1e3 * sec_on:.1f} ms per step")
print(
    f"fill off: {fills_off:3d} fills per step, {1e3 * sec_off:.1f} ms per step"
)
assert fills_off < fills_on, "turning the filling off should remove fills"

# %% [markdown]
# ### Data loading: worker processes and pinned memory
#
# The profiler only sees the training step. If preparing a batch (decoding images, augmenting them)
# takes longer than training on it, the model waits for data. A `DataLoader` with `num_workers=k`
# prepares batches in `k` separate processes while the main process trains, so the two overlap.
# To see it, the dataset below has a deliberately costly per-item transform (a random rotation and a
# random blur with SciPy, plus a median filter: more time per image than the training step spends
# on it), and one pass over 128 images trains one step per batch of 16.


# %%
class SlowAugmented(Dataset):
    """Images with a costly random transform per item (rotation, filters)."""

    def __init__(self, images, labels, seed=0):
        self.images, self.labels, self.seed = images.numpy(), labels, seed

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rng = np.random.default_rng(self.seed + i)
        angle = rng.uniform(-30, 30)
        img = ndimage.rotate(
            self.images[i], angle, axes=(1, 2), reshape=False, order=3
        )
        img = ndimage.median_filter(img, size=(1, 3, 3))  # remove speckle noise
        img = ndimage.gaussian_filter(img, sigma=(0, *rng.uniform(0.3, 1.0, 2)))
        return torch.from_numpy(img.astype(np.float32)), self.labels[i]


slow_data = SlowAugmented(images[:128], labels[:128])
# fork copies this process, so the workers know the class defined above; with
# "spawn" (the default on macOS and Windows) it must live in an importable module
start_method = (
    "fork" if "fork" in multiprocessing.get_all_start_methods() else None
)
item_ms = (
    1e3 * runtime.benchmark(lambda: slow_data[0], steps=8, repeats=1).median
)
torch.manual_seed(0)
loader_model = ddp_train.build_model().to(device)
loader_opt = torch.optim.SGD(loader_model.parameters(), lr=0.05, momentum=0.9)


def epoch_seconds(num_workers, pin_memory):
    loader = DataLoader(
        slow_data,
        batch_size=16,
        num_workers=num_workers,
        pin_memory=pin_memory,
        multiprocessing_context=start_method if num_workers else None,
    )
    start = time.perf_counter()
    for (
        x,
        y,
    ) in loader:  # worker start-up is inside the timing, as in a real epoch
        x = x.to(device, non_blocking=pin_memory)
        y = y.to(device, non_blocking=pin_memory)
        loader_opt.zero_grad(set_to_none=True)
        F.cross_entropy(loader_model(x), y).backward()
        loader_opt.step()
    return time.perf_counter() - start


pin = on_gpu  # page-locked host memory only helps copies to a GPU
loader_times = {k: epoch_seconds(k, pin) for k in (0, 1, 2)}
loader_times = {
    k: min(v, epoch_seconds(k, pin)) for k, v in loader_times.items()
}
train_ms = (
    1e3
    * runtime.benchmark(
        lambda: F.cross_entropy(
            loader_model(x_dev[:16]), y_dev[:16]
        ).backward(),
        steps=4,
    ).best
)
load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
print(
    f"per image: transform {item_ms:.1f} ms, training step {train_ms / 16:.1f} ms; "
    f"pin_memory={pin}; load average {load:.1f} on {os.cpu_count()} cores"
)
for k, sec in loader_times.items():
    print(
        f"num_workers={k}: {sec:.2f} s per pass over 128 images "
        f"({loader_times[0] / sec:.2f}x the speed of num_workers=0)"
    )

# %% [markdown]
# Each configuration ran twice and the faster pass is printed, with the load of the machine at that
# moment. The transform costs more per image than the training step, so with free cores one worker
# should nearly hide it (the main process trains on one batch while the worker prepares the next) and
# two workers should do a little better still. Whether that happens depends on free cores, and the
# course's reference machine has only two, shared with everything else that runs: the main process
# and the workers then take turns on the same cores, each worker's start-up (a copy of the process)
# is paid on every pass (unless `persistent_workers=True`), and batches travel between processes
# through shared memory. The printed ratios are the honest answer for the machine and the moment of
# this run; more busy processes than free cores never helps.
#
# **Pinned memory.** Copying a tensor to a GPU goes through page-locked ("pinned") host memory,
# which the operating system may not swap out, so the GPU can read it by DMA. From ordinary memory the
# driver first copies into a pinned buffer itself. `pin_memory=True` makes the workers put batches in
# pinned memory directly, and `.to(device, non_blocking=True)` then overlaps the copy with compute.
# On a CPU-only machine there is no copy at all, so the notebook sets `pin_memory` only when it runs
# on a GPU (PyTorch warns and ignores it otherwise).
#
# ## Mixed precision
#
# A float32 number has 1 sign bit, 8 exponent bits and 23 mantissa bits. The two 16-bit formats
# spend their 16 bits differently:
#
# | format | exponent bits | mantissa bits | largest value | smallest normal | spacing at 1 (eps) |
# |---|---|---|---|---|---|
# | float32 | 8 | 23 | $3.4\times10^{38}$ | $1.2\times10^{-38}$ | $1.2\times10^{-7}$ |
# | float16 | 5 | 10 | $65504$ | $6.1\times10^{-5}$ | $9.8\times10^{-4}$ |
# | bfloat16 | 8 | 7 | $3.4\times10^{38}$ | $1.2\times10^{-38}$ | $7.8\times10^{-3}$ |
#
# float16 keeps more precision but a tiny range: activations above 65504 overflow to infinity and
# gradients below about $6\times10^{-5}$ lose precision, below $6\times10^{-8}$ (the smallest
# subnormal) they become zero. bfloat16 ("brain float") keeps float32's exponent and so its range,
# with only 8 significant bits: a bfloat16 number is a float32 with the last 16 bits cut off. The table
# comes from `torch.finfo`:

# %%
# NBVAL_CHECK_OUTPUT
for dt in (torch.float32, torch.float16, torch.bfloat16):
    fi = torch.finfo(dt)
    print(
        f"{str(dt):15s} max {fi.max:.4g}  smallest normal {fi.tiny:.3g}  "
        f"eps {fi.eps:.3g}  bits {fi.bits}"
    )
big, tiny_grad = torch.tensor(70000.0), torch.tensor(1e-8)
print(
    "70000 in float16:",
    big.half().item(),
    "| in bfloat16:",
    big.bfloat16().item(),
)
print(
    "1e-8 in float16:",
    tiny_grad.half().item(),
    "| times 2**16 in float16:",
    (tiny_grad * 2**16).half().item() / 2**16 > 0,
)
print("1 + 1/256 in bfloat16:", torch.tensor(1 + 1 / 256).bfloat16().item())

# %% [markdown]
# **Mixed** precision (Micikevicius et al., 2018) does not train in 16 bits: it keeps the weights in
# float32 (a "master copy") and runs the expensive operators (matrix products, convolutions) in 16
# bits, while reductions, losses and normalizations stay in float32. `torch.autocast` makes this
# choice per operator. Small float16 gradients are rescued by **loss scaling**: multiply the loss by
# $S$ (say $2^{16}$) before `backward`, so every gradient is $S$ times larger and clears float16's
# underflow, then divide the gradients by $S$ before the optimizer step. A dynamic scaler picks $S$:
# when a scaled gradient overflows (an `inf` or `nan`), it skips that step and halves $S$; after a
# run of good steps (2000 by default) it doubles $S$ again. With bfloat16 nothing underflows that
# would not in float32, so no scaler is needed.
#
# `runtime.autocast(device, dtype=...)` and `runtime.grad_scaler(device, dtype=...)` wrap these: with
# no `dtype` they pick the course's default (bfloat16 on GPUs that have it, float16 with an active
# scaler on older GPUs, nothing on the CPU); the scaler is active exactly when the dtype is float16.
# The scaler's two behaviours, on a single parameter:

# %%
scaler = runtime.grad_scaler(device, dtype=torch.float16)
w = nn.Parameter(torch.ones(3, device=device))
sgd = torch.optim.SGD([w], lr=0.1)
scale0 = scaler.get_scale()
scaler.scale((2 * w).sum()).backward()  # the gradient is 2, times the scale
w.grad[0] = float("inf")  # pretend the scaled gradient overflowed
scaler.step(sgd)  # skipped: w unchanged
scaler.update()  # and the scale halved
assert torch.equal(w.detach(), torch.ones(3, device=device))
assert scaler.get_scale() == scale0 / 2
sgd.zero_grad()
scaler.scale((2 * w).sum()).backward()
scaler.step(sgd)  # unscales first: the step uses the true gradient, 2
scaler.update()
torch.testing.assert_close(w.detach(), torch.full((3,), 0.8, device=device))
print(
    f"scale {scale0:.0f} -> {scaler.get_scale():.0f} after an overflow; "
    f"then a normal step: w = {w.detach().tolist()}"
)

# %% [markdown]
# ### bfloat16 on the CPU, and the channels-last layout
#
# Now the real thing: the same training steps, from the same initial weights and on the same batches,
# in float32, with bfloat16 autocast, and in float32 with the **channels-last** memory layout.
# A batch of images is a tensor `[N, C, H, W]`; the default layout stores each channel as a
# contiguous plane (`NCHW`), channels-last stores the C values of each pixel next to each other
# (`NHWC`) while the tensor keeps its shape. Convolution libraries (oneDNN on CPUs, cuDNN on GPUs) have
# faster kernels for NHWC, especially with 16-bit tensor cores; the model and the input are converted
# once with `.to(memory_format=torch.channels_last)`.

# %%
torch.manual_seed(0)
init_model = ddp_train.build_model()
configs = {"fp32 eager": {}, "bf16 autocast": {"dtype": torch.bfloat16}}
configs["fp32 channels_last"] = {"channels_last": True}
if (
    on_gpu
):  # float16 needs the scaler; the device's default (bf16 where supported)
    configs["fp16 autocast + scaler"] = {
        "dtype": torch.float16,
        "scaler": runtime.grad_scaler(device, dtype=torch.float16),
    }
    gpu_dtype = runtime.amp_dtype(device)
    configs[f"default autocast ({gpu_dtype})"] = {
        "dtype": gpu_dtype,
        "scaler": runtime.grad_scaler(device),
    }
precision_runs = {}
for name, kwargs in configs.items():
    step, losses = make_step(copy.deepcopy(init_model), **kwargs)
    steps = 1 if kwargs.get("dtype") == torch.bfloat16 and not on_gpu else 2
    timing = runtime.benchmark(step, steps=steps, warmup=1, repeats=3)
    precision_runs[name] = {"timing": timing, "losses": losses}
    print(
        f"{name:22s} {1e3 * timing.best:7.1f} ms per step (fastest of 3 repeats), "
        f"{BATCH / timing.best:6.0f} images/s"
    )

# %%
fp32_losses = precision_runs["fp32 eager"]["losses"]
for name, run in precision_runs.items():
    n = min(len(run["losses"]), len(fp32_losses))
    gap = max(
        abs(a - b)
        for a, b in zip(run["losses"][:n], fp32_losses[:n], strict=True)
    )
    speed = precision_runs["fp32 eager"]["timing"].best / run["timing"].best
    print(
        f"{name:22s} {speed:5.2f}x fp32's speed; largest loss difference "
        f"from fp32 over its first {n} steps: {gap:.1e}"
    )
with torch.no_grad():
    x0, y0 = batches[0]
    loss32 = F.cross_entropy(init_model(x0), y0)
    with runtime.autocast("cpu", dtype=torch.bfloat16):
        loss16 = F.cross_entropy(init_model(x0), y0)
    loss_cl = F.cross_entropy(
        copy.deepcopy(init_model).to(memory_format=torch.channels_last)(
            x0.contiguous(memory_format=torch.channels_last)
        ),
        y0,
    )
print(
    f"same weights, same batch: fp32 loss {loss32:.6f}, bf16 {loss16:.6f}, "
    f"channels_last {loss_cl:.6f}"
)
torch.testing.assert_close(loss_cl, loss32)  # a layout, not an approximation
assert 0 < abs(loss16 - loss32) < 0.02, (
    "bf16 should change the loss a little (8 significant bits), not much: "
    f"got a difference of {abs(loss16 - loss32):.2e}"
)

# %% [markdown]
# What the run shows, on the machine that ran it:
#
# - **bfloat16 changes the numbers, a little.** With the same weights and batch the loss moves by a
#   small fraction of a percent (asserted: less than 0.02 on a loss of about 1.1). Each bfloat16
#   product carries only 8 significant bits, about 2.4 decimal digits, but the loss averages many of
#   them and their rounding errors partly cancel. Over a few training steps the differences stay of
#   the printed order. That is the expected cost; mixed precision training reaches the same accuracy
#   on real tasks because the weights and their updates stay in float32.
# - **bfloat16 on a CPU is fast only with hardware support.** Recent server CPUs have bfloat16
#   instructions (AVX-512 BF16, AMX); without them every bfloat16 operation is converted to and from
#   float32 and autocast adds the casts, which is why on the 2-core AMD EPYC where the chapter was
#   written it was many times slower than float32 (the ratio printed above is from the run you are
#   reading). This is also why `runtime.autocast` does nothing on the CPU by default. On GPUs with
#   tensor cores, 16-bit matrix products run several times faster and halve the memory traffic.
# - **channels-last gives the same loss** (the layout changes the order of memory, not the
#   arithmetic) and changes the speed by whatever the convolution library makes of it on this
#   processor; its real gains come with 16-bit tensor cores on GPUs.
#
# ## `torch.compile`: code generation and its price
#
# In eager mode every operator is a separate call from Python, each reading its inputs from memory
# and writing its output back. `torch.compile` traces the model's Python into a graph (TorchDynamo),
# and its default backend, Inductor, generates fused kernels from the graph: a convolution followed
# by normalization and ReLU becomes fewer passes over memory, with no Python in between. The price is
# paid on the first call: tracing, generating C++ (on a CPU; Triton on a GPU) and compiling it with
# the system's C++ compiler. A compiled model pays off when
#
# $$\text{calls} \times (t_\text{eager} - t_\text{compiled}) > t_\text{compile}.$$
#
# Compiling a training step (forward and backward graphs) costs several times more than inference:
# when this chapter was written, compiling `make_step`'s step took about 48 s on the 2-core machine
# (with other jobs running) and its steady state was no faster than eager. To stay within the
# chapter's time budget we compile two things for inference: the model, and a chain of elementwise
# operations (the tanh approximation of GELU, seven operators), which is where fusion shines: eager
# mode reads and writes the whole tensor once per operator, the fused kernel once in all. Inductor
# needs a C++ compiler on a CPU; where none is installed, the cell falls back to the `aot_eager`
# backend (tracing without code generation) and says so.

# %%
has_cxx = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
backend = "inductor" if (has_cxx or on_gpu) else "aot_eager"
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(0.7978845608 * (x + 0.044715 * x**3)))


def cache_hits():
    """Inductor's count of graphs found in its on-disk cache (a private counter)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"]


@torch.no_grad()
def measure_compile(fn, x):
    """First-call time of torch.compile(fn), and eager and compiled seconds per call."""
    out = {"eager": runtime.benchmark(lambda: fn(x), steps=5, repeats=3).best}
    compiled = torch.compile(fn, backend=backend)
    hits = cache_hits()
    start = time.perf_counter()
    try:
        got = compiled(x)
    except Exception as exc:  # a broken tool chain: report it, go on
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        out["first_call"] = time.perf_counter() - start
        return out
    out["first_call"] = time.perf_counter() - start
    out["cached"] = cache_hits() > hits
    torch.testing.assert_close(got, fn(x), rtol=1e-4, atol=1e-5)
    out["compiled"] = runtime.benchmark(
        lambda: compiled(x), steps=5, repeats=3
    ).best
    return out


infer_model = copy.deepcopy(init_model).to(device).eval()
compile_runs = {
    "convnet, batch 64": measure_compile(infer_model, batches[0][0].to(device)),
    "GELU chain, 512k floats": measure_compile(
        gelu_tanh, torch.randn(512, 1024, device=device)
    ),
}
for name, r in compile_runs.items():
    if "error" in r:
        print(f"{name}: torch.compile ({backend}) failed: {r['error']}")
        continue
    saved = r["eager"] - r["compiled"]
    verdict = (
        f"pays off after {r['first_call'] / saved:,.0f} calls"
        if saved > 0
        else "never pays off here"
    )
    print(
        f"{name}: first call {r['first_call']:.1f} s "
        f"({'code from the cache' if r['cached'] else 'code generated now'}); eager "
        f"{1e3 * r['eager']:.2f} ms, compiled {1e3 * r['compiled']:.2f} ms per call "
        f"({r['eager'] / r['compiled']:.2f}x): {verdict}"
    )

# %% [markdown]
# The compiled functions give the eager outputs (to float32 rounding: fused kernels sum in another
# order). Whether each pays off, and after how many calls, is printed above for this machine (times
# are the fastest of 3 repeats). The first call's time includes generating and compiling C++ code
# unless Inductor's on-disk cache from an earlier run of the same code already holds it (the printed
# line says which). On a CPU a convnet this small spends its time in oneDNN's convolutions, which
# compiling leaves as they are, so there is little to gain; the elementwise chain is memory-bound and
# fusion removes most of its memory traffic. Two rules of thumb follow: compile what runs long (a training run of thousands of
# steps, a served model), not a cell you run once; and keep shapes fixed, since a new input shape
# triggers a new compilation (`dynamic=True` trades some speed for fewer recompilations).
#
# ## Gradient accumulation equals a larger batch
#
# When a batch of $B$ examples does not fit in memory, split it into $k$ micro-batches of $b = B/k$.
# The gradient of the mean loss over the batch is the mean of the micro-batches' mean-loss gradients:
#
# $$\nabla_\theta \frac1B\sum_{i=1}^{B}\ell_i
#   = \sum_{j=1}^{k}\frac{b}{B}\,\nabla_\theta\Big(\frac1b\sum_{i\in\text{micro-batch } j}\ell_i\Big)
#   = \frac1k\sum_{j=1}^{k} g_j .$$
#
# Since `backward` adds into `.grad`, accumulation is: divide each micro-batch's loss by $k$, call
# `backward` $k$ times, then take one optimizer step. It holds exactly only if nothing couples the
# examples of a batch: BatchNorm does (its statistics come from the micro-batch), GroupNorm does not.


# %%
def train_accumulated(net, xs, ys, micro, steps, lr=0.05):
    """`steps` SGD steps on batches of len(xs) // steps, each in micro-batches."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for x, y in zip(xs.chunk(steps), ys.chunk(steps), strict=True):
        opt.zero_grad(set_to_none=True)
        k = len(x) // micro
        for xm, ym in zip(x.split(micro), y.split(micro), strict=True):
            (F.cross_entropy(net(xm), ym) / k).backward()  # grads add up
        opt.step()
    return net


x_acc, y_acc = images[:96], labels[:96]  # 3 steps with a batch of 32
big = train_accumulated(copy.deepcopy(init_model), x_acc, y_acc, 32, 3)
small = train_accumulated(copy.deepcopy(init_model), x_acc, y_acc, 8, 3)
for (name, a), b in zip(
    big.state_dict().items(), small.state_dict().values(), strict=True
):
    torch.testing.assert_close(b, a, msg=f"{name}: 4 x 8 differs from 1 x 32")
print(
    "GroupNorm model: 3 steps of 4 micro-batches of 8 == 3 steps of batches of 32"
)

# the same with BatchNorm: the statistics of 8 images are not those of 32
torch.manual_seed(0)
bn_init = classic.gap_cnn(3)
bn_big = train_accumulated(copy.deepcopy(bn_init), x_acc, y_acc, 32, 3)
bn_small = train_accumulated(copy.deepcopy(bn_init), x_acc, y_acc, 8, 3)
bn_gap = max(
    (p - q).abs().max().item()
    for p, q in zip(bn_big.parameters(), bn_small.parameters(), strict=True)
)
print(f"BatchNorm model: largest weight difference {bn_gap:.1e}")
assert bn_gap > 1e-3, f"BatchNorm should break the equality, got {bn_gap:.1e}"

# %% [markdown]
# The GroupNorm model's weights agree to float32 rounding after three accumulated steps; the
# BatchNorm model's do not, by far more than rounding. With BatchNorm, accumulation is an
# approximation of the large batch (often a good one with micro-batches of 32 or more). In
# DistributedDataParallel, accumulate inside `with model.no_sync():` for the first $k-1$
# micro-batches, so the gradients are averaged across processes once, not $k$ times.
#
# ## Checkpoints that resume exactly
#
# A long run will be interrupted. A checkpoint must hold everything the continuation depends on:
# the weights, the optimizer's state (momentum, Adam's moments), the scheduler's position, the step,
# and the random generators' states (which batches come next, which dropout masks, which
# augmentations). `runtime.save_checkpoint` writes all of these (to a temporary file, then renamed,
# so a crash mid-write leaves the old checkpoint intact), and `runtime.load_checkpoint` reads them
# with `torch.load(..., weights_only=True)`, which unpickles only tensors and plain containers: a
# checkpoint from elsewhere cannot run code when loaded. The test: train 8 steps straight; train 4,
# save, load into fresh objects (with other initial weights and other random state), train 4 more;
# compare. The data order and a random horizontal flip come from the global generator, so the random
# state matters.

# %%
ckpt_x, ckpt_y = images[:128], labels[:128]


def ckpt_objects(seed):
    torch.manual_seed(seed)
    net = ddp_train.build_model()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    sched = optim.warmup_cosine(opt, warmup_steps=2, total_steps=8)
    return net, opt, sched


def run_epoch(net, opt, sched):
    """One pass over 128 images in shuffled batches of 32, with random flips."""
    loader = DataLoader(
        list(zip(ckpt_x, ckpt_y, strict=True)), batch_size=32, shuffle=True
    )
    for x, y in loader:  # the shuffle draws from torch's global generator
        flip = torch.rand(len(x)) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()


ckpt_dir = Path(tempfile.mkdtemp(prefix="ch20_"))
runtime.seed_everything(3)
net, opt, sched = ckpt_objects(0)
run_epoch(net, opt, sched)
path = runtime.save_checkpoint(
    ckpt_dir / "run.pt", net, opt, sched, step=4, extra={"epoch": 1}
)
run_epoch(net, opt, sched)
straight = copy.deepcopy(net.state_dict())

runtime.seed_everything(
    99
)  # another state everywhere: the checkpoint must restore it
net2, opt2, sched2 = ckpt_objects(1)
info = runtime.load_checkpoint(path, net2, opt2, sched2)
run_epoch(net2, opt2, sched2)
for (name, a), b in zip(
    straight.items(), net2.state_dict().values(), strict=True
):
    torch.testing.assert_close(b, a, msg=f"{name}: the resumed run differs")

net3, opt3, sched3 = ckpt_objects(1)  # without the random state
runtime.load_checkpoint(path, net3, opt3, sched3, restore_rng=False)
run_epoch(net3, opt3, sched3)
no_rng_gap = max(
    (a - b).abs().max().item()
    for a, b in zip(straight.values(), net3.state_dict().values(), strict=True)
)
print(
    f"resumed at step {info['step']} {info['extra']}: same weights as the run"
)
print(
    f"resumed without the random state: weights differ by up to {no_rng_gap:.1e}"
)
assert no_rng_gap > 1e-4, "the random state should matter here (shuffle, flips)"
print(f"checkpoint size: {path.stat().st_size / 1e3:.0f} kB")
shutil.rmtree(ckpt_dir)

# %% [markdown]
# Loading without the random state gives another data order and other flips, and other weights:
# a resumed run that "looks fine" but is not the same run. Two limits: the checkpoint resumes at an
# epoch boundary (a DataLoader in the middle of an epoch has no state to save; torchdata's
# `StatefulDataLoader` adds one), and results match exactly only on the same hardware and software,
# since other kernels round differently.
#
# ## Many processes: data-parallel training
#
# **Data parallelism** runs one copy (replica) of the model per device. Each step, every process takes
# its own shard of the global batch, computes the forward and backward pass on it, and then all
# processes **average their gradients**, so every replica takes the same optimizer step and the
# replicas stay equal. If process $r$ of $N$ computes $g_r$, the gradient of the mean loss over its
# $B/N$ examples, the average is
#
# $$\bar g = \frac1N\sum_{r=1}^{N} g_r = \nabla_\theta\,\frac1B\sum_{i=1}^{B}\ell_i,$$
#
# the gradient of the whole batch, exactly as for accumulation above, with processes in place of
# micro-batches. So $N$ processes with $B/N$ examples each should give the weights one process gives
# with $B$. PyTorch's `DistributedDataParallel` (DDP; Li et al., 2020) implements this: it broadcasts
# rank 0's weights at construction, registers hooks on the gradients, groups them into buckets of
# about 25 MB, and starts each bucket's **all-reduce** (a sum over processes, delivered to every
# process) as soon as its gradients are ready, so that communication overlaps the rest of the backward
# pass. The sum is divided by $N$.

# %% tags=["hide-input"]
ddp_blocks = {"data": (0, 0, "global batch\nB examples", "io")}
for r, yy in ((0, 1.1), (1, -1.1)):
    ddp_blocks |= {
        f"shard{r}": (
            2.4,
            yy,
            f"rank {r}: shard\nB/2 examples\n(DistributedSampler)",
            "io",
        ),
        f"fwd{r}": (4.8, yy, f"replica {r}\nforward + backward", "conv"),
        f"grad{r}": (7.2, yy, f"local gradient g{r}", "other"),
        f"step{r}": (12.0, yy, "optimizer step\n(same on every rank)", "head"),
    }
ddp_blocks["ar"] = (
    9.6,
    0,
    "all-reduce\nḡ = (g0 + g1) / 2\n(gloo / NCCL)",
    "attention",
)
ddp_edges = [("data", "shard0"), ("data", "shard1")]
for r in (0, 1):
    ddp_edges += [
        (f"shard{r}", f"fwd{r}"),
        (f"fwd{r}", f"grad{r}"),
        (f"grad{r}", "ar"),
        ("ar", f"step{r}"),
    ]
viz.diagram(
    ddp_blocks,
    ddp_edges,
    block_size=(2.0, 1.0),
    fontsize=8,
    title="DistributedDataParallel: one process per device, gradients averaged in backward",
)
plt.show()

# %% [markdown]
# ### How the all-reduce works: the ring
#
# The obvious all-reduce sends every gradient to one process, which sums and sends the result back:
# that process then moves $2(N-1)$ times the model's size while the others idle. The **ring
# all-reduce** (Patarasuk and Yuan, 2009; Baidu's and Horovod's choice for deep learning) splits the
# vector into $N$ chunks and arranges the processes in a ring. In $N-1$ **reduce-scatter** steps
# every process sends one chunk to its right neighbour and adds the chunk it receives from its left;
# afterwards process $r$ holds the full sum of chunk $r+1$. In $N-1$ **all-gather** steps the
# finished chunks travel once more around the ring. Each process sends $2(N-1)$ chunks of size $M/N$,
#
# $$\text{sent per process} = 2\,\frac{N-1}{N}\,M \;<\; 2M,$$
#
# independent of $N$: adding processes does not add traffic per link, which is what lets data
# parallelism scale to hundreds of GPUs. (NCCL also uses trees; gloo uses rings and halving-doubling.)
# From scratch, with the processes simulated as a list:


# %%
def ring_all_reduce(vectors):
    """Ring all-reduce of N equal-length vectors; returns (results, chunks sent per process)."""
    n = len(vectors)
    chunks = [list(v.clone().chunk(n)) for v in vectors]
    sent = [0] * n
    for s in range(
        n - 1
    ):  # reduce-scatter: process r sends chunk (r - s) to r + 1
        msgs = [
            (r, (r - s) % n, chunks[r][(r - s) % n].clone()) for r in range(n)
        ]
        for r, c, payload in msgs:
            chunks[(r + 1) % n][c] += payload
            sent[r] += 1
    for s in range(
        n - 1
    ):  # all-gather: process r passes on its finished chunk (r + 1 - s)
        msgs = [
            (r, (r + 1 - s) % n, chunks[r][(r + 1 - s) % n].clone())
            for r in range(n)
        ]
        for r, c, payload in msgs:
            chunks[(r + 1) % n][c] = payload
            sent[r] += 1
    return [torch.cat(c) for c in chunks], sent


g_ring = torch.Generator().manual_seed(0)
grads = [torch.randint(-9, 10, (12,), generator=g_ring) for _ in range(4)]
reduced, sent = ring_all_reduce(grads)
for out in reduced:  # integers: the sum is exact
    assert torch.equal(out, torch.stack(grads).sum(0))
print("sum on every process:", reduced[0].tolist())
print(f"chunks sent per process: {sent} (2(N-1) = {2 * (len(grads) - 1)})")

# %% [markdown]
# ### Sharding the data: DistributedSampler
#
# Each process must see different examples, and together exactly the global batch. A
# `DistributedSampler(dataset, num_replicas=N, rank=r)` makes every process draw the same random
# permutation (seeded with `seed + epoch`) and gives process $r$ positions $r, r+N, r+2N, \dots$ of
# it. If the dataset's size is not a multiple of $N$ it repeats the first examples to pad (or, with
# `drop_last=True`, drops the tail), so that all processes run the same number of steps: a process
# with one step more would wait forever for the others at the all-reduce. Call
# `sampler.set_epoch(epoch)` before each epoch; without it every epoch repeats the same order.

# %%
# NBVAL_CHECK_OUTPUT
toy = list(range(10))
for epoch in (0, 1):
    shards = []
    for r in range(2):
        s = DistributedSampler(
            toy, num_replicas=2, rank=r, shuffle=True, seed=0
        )
        s.set_epoch(epoch)
        shards.append(list(s))
    print(f"epoch {epoch}: rank 0 {shards[0]}, rank 1 {shards[1]}")
    assert sorted(shards[0] + shards[1]) == toy  # a partition of the dataset
padded = [
    list(DistributedSampler(toy, num_replicas=3, rank=r, shuffle=False))
    for r in range(3)
]
print("3 ranks, 10 items, padded:", padded)

# %% [markdown]
# ### Launching: torchrun, and the same run in one process
#
# `ddp_train.py` (beside this notebook) is an ordinary training script with four additions: it joins
# the process group (`distributed.init_from_env`, which reads the rank and world size that `torchrun`
# sets and picks the backend: NCCL between GPUs, gloo on CPUs), wraps the model in
# `DistributedDataParallel`, reads data through a `DistributedSampler`, and lets only rank 0 save the
# weights. Before training it also checks that averaging per-rank gradients by hand with
# `dist.all_reduce` gives DDP's gradients. `torchrun` (`python -m torch.distributed.run`) starts
# `--nproc_per_node` copies of the script, sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
# `MASTER_PORT` for each, and restarts or stops them together.
#
# The notebook runs it as a subprocess with 2 processes (on the CPU, unless the machine has a GPU for
# each), in its own process group with a timeout: `distributed.run_isolated` kills torchrun and all
# its workers if anything goes wrong, and the cell checks afterwards that none is left. The
# one-process reference runs the script's `train` function here, with the whole global batch of 32.

# %%
NPROC, GLOBAL_BATCH, EPOCHS, LR, N_DDP = 2, 32, 2, 0.05, 256
ddp_device = distributed.launch_device(NPROC)  # GPUs only with one per process
out_dir = Path(tempfile.mkdtemp(prefix="ch20_ddp_"))
cmd = distributed.torchrun_command(
    "ddp_train.py",
    "--out", out_dir, "--epochs", EPOCHS, "--global-batch", GLOBAL_BATCH,
    "--lr", LR, "--images", N_DDP, "--device", ddp_device,
    nproc_per_node=NPROC,
)  # fmt: skip
launch = None
try:
    launch = distributed.run_isolated(cmd, timeout_s=300).check()
    ranks = [
        json.loads((out_dir / f"rank{r}_of{NPROC}.json").read_text())
        for r in range(NPROC)
    ]
    ddp_weights, ddp_step1 = (
        torch.load(out_dir / f"weights_w{NPROC}{s}.pt", weights_only=True)
        for s in ("", "_step1")
    )
finally:
    shutil.rmtree(out_dir, ignore_errors=True)
    if launch is not None:  # run_isolated killed the group on any failure
        assert not distributed.group_alive(launch.pgid), "a process was left"
print(
    f"torchrun with {NPROC} processes ({ranks[0]['backend']}, "
    f"{ranks[0]['device']}): {launch.seconds:.1f} s wall, of which "
    f"{ranks[0]['train_seconds']:.2f} s training"
)
print(
    "DDP's gradients minus the hand-made all-reduce average: "
    f"{max(r['all_reduce_max_diff'] for r in ranks):.1e}"
)


def reference_run(world_size):
    """The script's loop in this process: rank 0 of `world_size`, no all-reduce."""
    runtime.seed_everything(0)
    net = ddp_train.build_model().to(ddp_device)
    out = ddp_train.train(
        net, ddp_train.make_dataset(N_DDP, seed=0), rank=0,
        world_size=world_size, global_batch=GLOBAL_BATCH, epochs=EPOCHS,
        lr=LR, seed=0, device=torch.device(ddp_device),
    )  # fmt: skip
    return net, out


ref_model, ref = reference_run(1)  # one process, the whole global batch
lone_model, _ = reference_run(NPROC)  # rank 0's shard alone: no averaging


def max_gap(state_a, state_b):
    return max(
        (a.cpu() - b.cpu()).abs().max().item()
        for a, b in zip(state_a.values(), state_b.values(), strict=True)
    )


# %%
# float32 defaults on a CPU; GPUs run convolutions in TF32 (10-bit mantissa)
step1_tol = {} if ddp_device == "cpu" else {"rtol": 1e-3, "atol": 1e-4}
final_tol = (
    {"rtol": 1e-3, "atol": 1e-4} if ddp_device == "cpu" else {"atol": 1e-2}
)
for (name, a), b in zip(
    ref["first_step_state"].items(), ddp_step1.values(), strict=True
):
    torch.testing.assert_close(b, a, msg=f"{name}: step 1", **step1_tol)
for (name, a), b in zip(
    ref_model.state_dict().items(), ddp_weights.values(), strict=True
):
    torch.testing.assert_close(b.cpu(), a.cpu(), msg=name, **final_tol)
for r in ranks:
    assert r["all_reduce_max_diff"] < 1e-6, "DDP != the average of the ranks"
for e in range(EPOCHS):  # a step's two shards make up the one-process batch
    union = set(ranks[0]["first_indices"][e] + ranks[1]["first_indices"][e])
    assert union == set(ref["first_indices"][e]), f"epoch {e}: other examples"
mean_rank_loss = np.mean([r["losses"] for r in ranks], axis=0)
np.testing.assert_allclose(mean_rank_loss, ref["losses"], rtol=1e-4, atol=1e-5)
ddp_gap = max_gap(ref_model.state_dict(), ddp_weights)
lone_gap = max_gap(ref_model.state_dict(), lone_model.state_dict())
margin = 100 if ddp_device == "cpu" else 5
assert lone_gap > margin * ddp_gap, (
    "without the all-reduce the weights should differ far more than rounding: "
    f"{lone_gap:.1e} against {ddp_gap:.1e}"
)
print(
    f"after step 1: 2 processes vs 1 differ by {max_gap(ref['first_step_state'], ddp_step1):.1e}; "
    f"after {len(ref['losses'])} steps by {ddp_gap:.1e}"
)
print(
    f"rank 0 trained alone on its shards (no all-reduce) differs by {lone_gap:.1e}"
)
print(f"loss {ref['losses'][0]:.3f} -> {ref['losses'][-1]:.3f}")
ddp_ips = {
    1: GLOBAL_BATCH / np.median(ref["step_seconds"][1:]),
    NPROC: GLOBAL_BATCH / np.median(ranks[0]["step_seconds"][1:]),
}
print(
    f"training throughput: 1 process {ddp_ips[1]:.0f} images/s, "
    f"{NPROC} processes {ddp_ips[NPROC]:.0f} images/s (median step)"
)

# %% [markdown]
# After one step the two-process weights equal the one-process weights to float32 rounding (the
# default tolerances of `assert_close`; the sums are taken in another order). Over the following
# steps those last-bit differences are carried along and slightly amplified by training, so the final
# weights are compared with a tolerance of $10^{-4}$, still more than a hundred times smaller than the
# gap to a replica that trained on its own shards without the all-reduce. The mean of the two ranks'
# losses is the one-process loss at every step, each step's two shards together are exactly the
# one-process batch, and DDP's gradients equal the average of the per-rank gradients computed by
# hand with `dist.all_reduce`.
#
# The throughput line is this machine's answer to "do two processes train faster?". Each process
# does half the arithmetic per step, plus the all-reduce of about 24 k parameters, so on two free
# cores a step should take a little more than half the time. On a shared 2-core machine the two
# workers compete with everything else running, and the launch itself (starting three Python
# processes that import PyTorch, the rendezvous) costs seconds: compare the wall time printed above
# with the training time inside it. Data parallelism pays off when each step is long compared with
# the communication and the run is long compared with the start-up, as on GPUs.
#
# ### The same script on several machines
#
# Nothing in `ddp_train.py` knows how many machines there are. On a cluster, run the same command on
# every node, replacing `--standalone` (a rendezvous on a free local port) by the rendezvous flags:

# %%
two_nodes = distributed.torchrun_command(
    "ddp_train.py", "--out", "results",
    nproc_per_node=8, nnodes=2, rdzv_endpoint="node0.example:29500", rdzv_id="job42",
)  # fmt: skip
print("python " + " ".join(two_nodes[1:]))
static = distributed.torchrun_command(
    "ddp_train.py", "--out", "results", nproc_per_node=8, nnodes=2,
    node_rank=0, master_addr="node0.example", master_port=29500,
)  # fmt: skip
print(
    "python " + " ".join(static[1:]) + "   # on node0; --node_rank 1 on node1"
)

# %% [markdown]
# - `--nnodes 2`: the number of machines (`--nnodes 1:4` allows elastic jobs between 1 and 4).
# - `--nproc_per_node 8`: processes per machine, usually one per GPU; `LOCAL_RANK` (0-7) picks the
#   GPU, `RANK` (0-15) is the global rank.
# - `--rdzv_backend c10d --rdzv_endpoint host:port --rdzv_id job42`: the **rendezvous**, where the
#   nodes find each other: a small key-value store served at `host:port` on one of the nodes, which
#   every node must reach; the id keeps concurrent jobs apart. The rendezvous assigns node ranks.
# - The older static form: `--nnodes 2 --node_rank 0` (and `1` on the other machine) with
#   `--master_addr node0 --master_port 29500`, which sets `MASTER_ADDR` and `MASTER_PORT` directly.
#
# Between machines, NCCL uses the fastest network it finds (InfiniBand, RoCE, else TCP); the
# all-reduce then competes with a network that is much slower than the links between GPUs of one
# machine, which is why large jobs use large per-GPU batches and overlap communication with compute.
#
# ### When the model does not fit: FSDP and ZeRO
#
# DDP keeps a full copy of everything on every device. With Adam in mixed precision, one parameter
# costs 16 bytes (Rajbhandari et al., 2020): 2 for the 16-bit weight, 2 for its gradient, and 12 of
# optimizer state in float32 (master weight, first and second moment). A model of one billion
# parameters needs 16 GB per device before a single activation is stored. **ZeRO** removes the
# redundancy in three stages, for $N$ devices: stage 1 shards the optimizer states ($4 + 12/N$ bytes
# per parameter), stage 2 also the gradients ($2 + 14/N$; each device reduce-scatters the gradients
# and keeps only the sum of its own shard), stage 3 also the weights ($16/N$): a layer's weights are
# all-gathered just before its forward and backward computation and freed afterwards. PyTorch's
# **FullyShardedDataParallel** (FSDP; Zhao et al., 2023) implements stage 3 (and, with its
# `SHARD_GRAD_OP` strategy, stage 2). The price is communication: stage 3 moves about 1.5 times DDP's
# volume (an all-gather in forward, another in backward, a reduce-scatter), hidden by prefetching the
# next layer while the current one computes.
#
# ## A speed-up table for this machine
#
# Every number in the table was measured by this notebook, on the device named in its "where"
# column, at the load printed above the table. The "per s" column counts images per second (of a
# training step with batch 64, of inference with batch 64, of DDP training with a global batch of
# 32) or calls per second (the GELU chain); each speed-up is relative to the first row of its group.
# Rows that need a GPU say so when none was present.

# %%
fp32_ips = BATCH / precision_runs["fp32 eager"]["timing"].best
where = cpu_label if not on_gpu else runtime.device_name(device)
rows = []
for name, run in precision_runs.items():
    ips = BATCH / run["timing"].best
    rows.append(("training (images/s)", name, where, ips, ips / fp32_ips))
for (name, r), items in zip(compile_runs.items(), (BATCH, 1), strict=True):
    group = f"{name.split(',')[0]} ({'images' if items > 1 else 'calls'}/s)"
    rows.append((group, "eager", where, items / r["eager"], 1.0))
    if "error" in r:
        rows.append((group, "torch.compile", "failed here", np.nan, np.nan))
        continue
    label = f"compiled ({backend}, 1st call {r['first_call']:.1f} s)"
    speed_up = r["eager"] / r["compiled"]
    rows.append((group, label, where, items / r["compiled"], speed_up))
ddp_where = f"{ddp_device}, {ranks[0]['backend']}"
ddp_group = "DDP, batch 32 (images/s)"
rows.append((ddp_group, "1 process", ddp_where, ddp_ips[1], 1.0))
rows.append(
    (ddp_group, f"{NPROC} processes", ddp_where, ddp_ips[NPROC], ddp_ips[NPROC] / ddp_ips[1])
)  # fmt: skip
if not on_gpu:
    rows.append(("GPU rows", "fp32 / autocast / compile", "not measured: no GPU here", float("nan"), float("nan")))  # fmt: skip
if hasattr(os, "getloadavg"):
    print(
        f"load average (1 min) when the table was printed: {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} cores"
    )
print(f"{'group':25s} {'configuration':38s} {'where':30s} {'per s':>7s} {'speed-up':>8s}")  # fmt: skip
for group, name, where, ips, speedup in rows:
    print(f"{group:25s} {name:38s} {where[:30]:30s} {ips:7.0f} {speedup:8.2f}")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(9, 3.6))
shown = [r for r in rows if np.isfinite(r[3])]
groups = sorted({r[0] for r in shown}, key=[r[0] for r in shown].index)
ax.barh(
    [f"{r[0].split(' (')[0]}: {r[1]}" for r in shown],
    [r[4] for r in shown],
    color=[viz.color(groups.index(r[0])) for r in shown],
)
ax.axvline(1.0, color="0.3", lw=1, ls="--")
ax.invert_yaxis()
ax.set_xlabel(
    "speed-up over the first row of the group (measured on this machine)"
)
ax.set_title("What each change bought on the machine that ran this notebook")
plt.show()

# %% [markdown]
# ### Batch size, accumulation and throughput
#
# A larger batch usually processes more images per second: the fixed cost of each step (Python,
# operator launches, the optimizer, on a GPU the kernel launches) is shared by more images, and larger
# matrix products use the hardware better, until the device is saturated; on a CPU the curve often
# flattens or falls again for large batches, once the activations outgrow the processor's caches
# (compare with the measured curve below). Gradient accumulation does not change the throughput of a
# micro-batch: $k$ micro-batches of $b$ take $k$ times as long as one, and buy the large batch's
# gradient without its memory. The measurement below times a training step at several micro-batch
# sizes (the fastest of three rounds over all sizes).

# %%
micro_sizes = [4, 8, 16, 32, 64, 128]


def step_at(b):
    """A training step on a micro-batch of b images."""
    torch.manual_seed(0)
    net = ddp_train.build_model().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    xb, yb = images[:b].to(device), labels[:b].to(device)

    def one_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), yb).backward()
        opt.step()

    return one_step


steps_at = {b: step_at(b) for b in micro_sizes}
step_time = {b: float("inf") for b in micro_sizes}
# three rounds over all sizes, so that a busy moment hits every size
for _ in range(3):
    for b, fn in steps_at.items():
        t = runtime.benchmark(fn, steps=2, warmup=1, repeats=1).best
        step_time[b] = min(step_time[b], t)
for b, t in step_time.items():
    print(
        f"micro-batch {b:4d}: {1e3 * t:6.1f} ms per step, {b / t:6.0f} images/s"
    )

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(
    micro_sizes,
    [b / step_time[b] for b in micro_sizes],
    "o-",
    color=viz.color(0),
)
ax.set_xscale("log", base=2)
ax.set_xlabel("micro-batch size")
ax.set_ylabel("images per second")
ax.set_title("Training throughput against batch size (measured)")
plt.show()

# %% [markdown]
# Explore: pick a micro-batch size and a number of accumulation steps. The effective batch is their
# product; the time per optimizer step grows with the accumulation steps while the images per second
# stay those of the micro-batch (the dashed line), from the measurement above.


# %%
def show_accumulation(micro=16, accumulation=4):
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(
        micro_sizes,
        [b / step_time[b] for b in micro_sizes],
        "o-",
        color=viz.color(0),
        label="measured",
    )
    ips = micro / step_time[micro]
    ax.axhline(ips, color=viz.color(1), ls="--", lw=1)
    ax.plot([micro], [ips], "o", ms=10, color=viz.color(1))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("micro-batch size")
    ax.set_ylabel("images per second")
    ax.set_title(
        f"effective batch {micro * accumulation}: "
        f"{1e3 * accumulation * step_time[micro]:.0f} ms per optimizer step"
    )
    plt.show()


_ = widgets.interact(
    show_accumulation,
    micro=widgets.SelectionSlider(
        options=micro_sizes, value=16, description="micro-batch"
    ),
    accumulation=widgets.IntSlider(
        value=4, min=1, max=16, description="accumulate"
    ),
)

# %% [markdown]
# Large batches are not free for the optimization, though: with a fixed number of epochs a larger
# batch means fewer steps. Goyal et al. (2017) trained ResNet-50 on ImageNet with batches up to 8192
# on 256 GPUs in one hour, without losing accuracy, with two rules: scale the learning rate linearly
# with the batch size, and warm it up over the first epochs (chapter 04's warm-up). Beyond about 8k
# their accuracy dropped; layer-wise adaptive rates (LARS, LAMB) push the limit further.
#
# ## Summary
#
# | tool | what it does | measured here |
# |---|---|---|
# | `torch.profiler` | per-operator self and total times, named ranges | convolutions and their backward dominate |
# | `DataLoader(num_workers, pin_memory)` | prepares batches in parallel processes; pinned memory for GPU copies | helps only with free cores |
# | `runtime.autocast` / `grad_scaler` | bf16 or fp16 for products and convolutions, fp32 weights; a scaler for fp16 | bf16 moves the loss by < 2 % (asserted) |
# | channels-last | NHWC memory layout for convolutions | same loss; speed depends on the library |
# | `torch.compile` | traced graph, fused generated kernels; a compile time up front | the break-even number of calls |
# | gradient accumulation | $k$ micro-batches, loss $/k$, one step | equal to the big batch (not with BatchNorm) |
# | `runtime.save_checkpoint` / `load_checkpoint` | weights, optimizer, scheduler, step, RNG; `weights_only=True` | resumes the same run |
# | DDP + `torchrun` + `DistributedSampler` | one replica per device, gradient all-reduce in backward | 2 processes = 1 process |
# | FSDP / ZeRO | shard optimizer state, gradients, weights | in words: memory per device |
#
# - Measure before optimizing: the profiler's self-time column says what to speed up, and the
#   DataLoader timing says whether the model waits for data.
# - Mixed precision keeps float32 weights and runs products in 16 bits; float16 needs loss scaling
#   against underflow, bfloat16 does not. Their speed depends on hardware support.
# - Every speed-up in this chapter is a measurement on one machine; the equalities (accumulation,
#   resumption, one process against two) are properties, and the chapter asserts them.
# - Data parallelism is gradient averaging: the ring all-reduce keeps each process's traffic at
#   $2(N-1)M/N$, and the same `torchrun` script runs on one machine or many.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: DistributedSampler by hand
#
# Write `shard(n, world_size, rank, epoch, seed)` that returns the indices that
# `DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)` gives
# after `set_epoch(epoch)`, without using the sampler: a permutation from
# `torch.randperm(n, generator=g)` with `g` seeded by `seed + epoch`, padded by repeating its
# beginning up to a multiple of `world_size`, then every `world_size`-th element from `rank`.


# %%
def shard(n, world_size, rank, epoch, seed):
    raise NotImplementedError  # your code


def sampler_reference(n, world_size, rank, epoch, seed):
    s = DistributedSampler(
        range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    s.set_epoch(epoch)
    return list(s)


shard_cases = [
    (10, 2, 0, 0, 0),
    (10, 2, 1, 3, 0),
    (10, 3, 2, 1, 5),
    (7, 4, 3, 2, 1),
]
exercises.check_function(shard, shard_cases, reference=sampler_reference)


# %% tags=["hide-cell"]
def shard(n, world_size, rank, epoch, seed):
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = -(-n // world_size) * world_size  # the next multiple of world_size
    order += (order * total)[: total - n]  # pad by repeating the beginning
    return order[rank::world_size]


exercises.check_function(
    shard, shard_cases, reference=sampler_reference
).assert_passed()

# %% [markdown]
# ### Exercise 2: memory per GPU with ZeRO
#
# Write `bytes_per_device(num_params, n_devices, stage)` for mixed-precision Adam (2 bytes per
# weight, 2 per gradient, 12 of optimizer state per parameter): stage 0 is DDP (everything
# replicated), stage 1 shards the optimizer state, stage 2 also the gradients, stage 3 also the
# weights. Then: how many devices does stage 3 need to fit a 7-billion-parameter model into 40 GB per
# device, activations aside?


# %%
def bytes_per_device(num_params, n_devices, stage):
    raise NotImplementedError  # your code


def zero_reference(num_params, n_devices, stage):
    weights, grads, states = 2.0, 2.0, 12.0
    if stage >= 1:
        states /= n_devices
    if stage >= 2:
        grads /= n_devices
    if stage >= 3:
        weights /= n_devices
    return num_params * (weights + grads + states)


zero_cases = [(1e9, 8, s) for s in range(4)] + [(7e9, 64, 3), (25_000, 2, 2)]
exercises.check_function(bytes_per_device, zero_cases, reference=zero_reference)


# %% tags=["hide-cell"]
def bytes_per_device(num_params, n_devices, stage):
    per_param = {
        0: 16,
        1: 4 + 12 / n_devices,
        2: 2 + 14 / n_devices,
        3: 16 / n_devices,
    }[stage]
    return num_params * per_param


exercises.check_function(
    bytes_per_device, zero_cases, reference=zero_reference
).assert_passed()
devices_needed = next(
    n for n in range(1, 100) if bytes_per_device(7e9, n, 3) <= 40e9
)
print(f"stage 3, 7e9 parameters, 40 GB each: {devices_needed} devices")

# %% [markdown]
# ### Exercise 3: when does compiling pay off?
#
# A training run of 10,000 steps takes 50 ms per step eager and 40 ms compiled, and compiling its
# step takes 60 s. Compute the time compiling saves over the whole run (in seconds; negative if it
# costs), and the number of steps after which the compiled run catches up. Then, with the times
# printed in the `torch.compile` section: after how many calls did each compiled function catch up on
# the machine that ran this notebook, and what happens to the saving when the input shape changes
# every few steps?

# %%
run_saving = exercises.TODO  # seconds saved by compiling the 10,000-step run
catch_up_steps = exercises.TODO  # steps until the compiled run catches up
exercises.check_value(
    (run_saving, catch_up_steps), (40.0, 6000.0), name="(saving, steps)"
)

# %% tags=["hide-cell"]
eager_step, compiled_step, compile_cost, n_steps = 0.050, 0.040, 60.0, 10_000
run_saving = (
    n_steps * (eager_step - compiled_step) - compile_cost
)  # 100 s - 60 s
catch_up_steps = compile_cost / (eager_step - compiled_step)
exercises.check_value(
    (run_saving, catch_up_steps), (40.0, 6000.0), name="(saving, steps)"
).assert_passed()
print(
    f"saves {run_saving:.0f} s of {n_steps * eager_step:.0f} s; catches up after "
    f"{catch_up_steps:,.0f} steps. Each new input shape compiles again (another "
    "60 s here) unless the dimension is marked dynamic: a few shape changes eat "
    "the whole saving."
)

# %% [markdown]
# ## References
#
# - Li, S., Zhao, Y., Varma, R., Salpekar, O., Noordhuis, P., Li, T., Paszke, A., Smith, J., Vaughan,
#   B., Damania, P., and Chintala, S. (2020). PyTorch Distributed: experiences on accelerating data
#   parallel training. *Proceedings of the VLDB Endowment* 13(12). arXiv:2006.15704.
# - Micikevicius, P., Narang, S., Alben, J., Diamos, G., Elsen, E., Garcia, D., Ginsburg, B., Houston,
#   M., Kuchaiev, O., Venkatesh, G., and Wu, H. (2018). Mixed precision training. *ICLR 2018*.
#   arXiv:1710.03740.
# - Rajbhandari, S., Rasley, J., Ruwase, O., and He, Y. (2020). ZeRO: memory optimizations toward
#   training trillion parameter models. *SC 2020*. arXiv:1910.02054.
# - Zhao, Y., Gu, A., Varma, R., Luo, L., Huang, C.-C., Xu, M., Wright, L., Shojanazeri, H., Ott, M.,
#   Shleifer, S., Desmaison, A., Balioglu, C., Damania, P., Nguyen, B., Chauhan, G., Hao, Y., Mathews,
#   A., and Li, S. (2023). PyTorch FSDP: experiences on scaling fully sharded data parallel.
#   *Proceedings of the VLDB Endowment* 16(12). arXiv:2304.11277.
# - Goyal, P., Dollár, P., Girshick, R., Noordhuis, P., Wesolowski, L., Kyrola, A., Tulloch, A., Jia,
#   Y., and He, K. (2017). Accurate, large minibatch SGD: training ImageNet in 1 hour.
#   arXiv:1706.02677.
# - Patarasuk, P., and Yuan, X. (2009). Bandwidth optimal all-reduce algorithms for clusters of
#   workstations. *Journal of Parallel and Distributed Computing* 69(2).
# - Kalamkar, D., et al. (2019). A study of BFLOAT16 for deep learning training. arXiv:1905.12322.
# - Ansel, J., et al. (2024). PyTorch 2: faster machine learning through dynamic Python bytecode
#   transformation and graph compilation. *ASPLOS 2024*. (TorchDynamo and Inductor.)
