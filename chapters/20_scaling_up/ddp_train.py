"""Data-parallel training of a small convnet with DistributedDataParallel (chapter 20's script).

Run it with torchrun, one process per device; from this folder, on one machine with two CPU
processes::

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_train.py --out results

and across machines the same command on every node, with the rendezvous flags instead of
``--standalone`` (``--nnodes 2 --rdzv_backend c10d --rdzv_endpoint host0:29500 --rdzv_id job1``).

Every process builds the same model, reads its own shard of each global batch through a
``DistributedSampler``, and DDP averages the gradients across the processes during ``backward`` (an
all-reduce), so all replicas take the same optimizer step and stay equal. Before training, the script
checks that averaging per-rank gradients by hand (``dist.all_reduce``) gives DDP's gradients. Every
rank writes what it saw and measured to ``--out/rank{r}_of{w}.json``; rank 0 also writes the final
weights to ``--out/weights_w{w}.pt``.

The notebook imports :func:`build_model`, :func:`make_dataset` and :func:`train` from here, so its
one-process reference runs the very same code.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from course_lib import data, distributed, runtime
from course_lib import nn as cnn


def build_model(
    num_classes: int = 3, widths: tuple[int, ...] = (16, 32, 64)
) -> nn.Sequential:
    """Conv-GroupNorm-ReLU blocks (stride 2 after the first), global average pooling, a linear head.

    GroupNorm normalizes each example on its own, so splitting a batch across processes changes
    nothing (BatchNorm would see per-process statistics).
    """
    layers: list[nn.Module] = []
    c_in = 3
    for i, width in enumerate(widths):
        layers.append(
            cnn.ConvNormAct(
                c_in, width, stride=1 if i == 0 else 2, norm="group"
            )
        )
        c_in = width
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c_in, num_classes),
    )


def make_dataset(n: int = 512, size: int = 32, seed: int = 0) -> TensorDataset:
    """``n`` images of one coloured shape each (circle, square, triangle) and their class."""
    shapes = data.make_shapes(
        n, size, min_objects=1, max_objects=1, noise=0.1, seed=seed
    )
    return TensorDataset(shapes.images, torch.cat(shapes.labels))


def train(
    model: nn.Module,
    dataset: TensorDataset,
    *,
    rank: int,
    world_size: int,
    global_batch: int,
    epochs: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> dict:
    """SGD with momentum on ``dataset``; this process reads ``global_batch / world_size`` examples a step.

    The sampler shuffles with ``seed + epoch`` (``set_epoch``), the same permutation on every rank, and
    gives rank ``r`` the positions ``r, r + world_size, ...`` of it, so the union of the ranks' batches at
    a step is the batch one process would read with ``global_batch``. Returns the local losses, the
    indices of the first batch of each epoch, the seconds of each step and, under
    ``"first_step_state"``, a copy of the weights after the first step.
    """
    if global_batch % world_size:
        raise ValueError(
            f"global_batch={global_batch} must be divisible by world_size={world_size}"
        )
    sampler = DistributedSampler(
        dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    loader = DataLoader(
        dataset,
        batch_size=global_batch // world_size,
        sampler=sampler,
        drop_last=True,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses, step_seconds, first_indices, first_state = [], [], [], None
    for epoch in range(epochs):
        sampler.set_epoch(
            epoch
        )  # a new permutation per epoch, the same on every rank
        first_indices.append(list(sampler)[: global_batch // world_size])
        for x, y in loader:
            start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()  # under DDP: the gradients are averaged across ranks here
            optimizer.step()
            losses.append(loss.item())
            step_seconds.append(time.perf_counter() - start)
            if first_state is None:
                first_state = {
                    k: v.detach().cpu().clone()
                    for k, v in runtime.unwrap(model).state_dict().items()
                }
    return {
        "losses": losses,
        "step_seconds": step_seconds,
        "first_indices": first_indices,
        "first_step_state": first_state,
    }


def check_all_reduce(
    model: DistributedDataParallel,
    x: torch.Tensor,
    y: torch.Tensor,
    world_size: int,
) -> float:
    """DDP's gradients against the average of the per-rank gradients computed by hand; the max difference."""
    with (
        model.no_sync()
    ):  # backward without DDP's all-reduce: this rank's own gradients
        F.cross_entropy(model(x), y).backward()
    by_hand = [p.grad.detach().clone() for p in model.parameters()]
    for g in by_hand:
        dist.all_reduce(
            g, op=dist.ReduceOp.SUM
        )  # the sum over ranks, on every rank
        g /= world_size
    model.zero_grad(set_to_none=True)
    F.cross_entropy(
        model(x), y
    ).backward()  # DDP: the same average, bucketed and overlapped with backward
    diff = max(
        (p.grad - g).abs().max().item()
        for p, g in zip(model.parameters(), by_hand, strict=True)
    )
    model.zero_grad(set_to_none=True)
    return diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the results"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument(
        "--images", type=int, default=512, help="training images"
    )
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default=None,
        help="force a device kind (default: course_lib's choice)",
    )
    args = parser.parse_args(argv)

    runtime.set_threads()  # one thread per process (COURSE_NUM_THREADS)
    ctx = distributed.init_from_env(args.device)
    try:
        runtime.seed_everything(
            args.seed
        )  # the same initial weights on every rank
        model = build_model().to(ctx.device)
        # DDP broadcasts rank 0's parameters at construction, so replicas start equal even unseeded
        ddp = DistributedDataParallel(model, device_ids=ctx.device_ids)
        dataset = make_dataset(args.images, seed=args.seed)
        per_rank = args.global_batch // ctx.world_size
        x0, y0 = dataset[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]
        grad_diff = check_all_reduce(
            ddp, x0.to(ctx.device), y0.to(ctx.device), ctx.world_size
        )
        dist.barrier()
        start = time.perf_counter()
        result = train(
            ddp,
            dataset,
            rank=ctx.rank,
            world_size=ctx.world_size,
            global_batch=args.global_batch,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            device=ctx.device,
        )
        dist.barrier()
        first_state = result.pop("first_step_state")
        result |= {
            "train_seconds": time.perf_counter() - start,
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "device": str(ctx.device),
            "all_reduce_max_diff": grad_diff,
            "global_batch": args.global_batch,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{ctx.rank}_of{ctx.world_size}.json").write_text(
            json.dumps(result)
        )
        if ctx.is_main:
            w = ctx.world_size
            torch.save(model.state_dict(), args.out / f"weights_w{w}.pt")
            torch.save(first_state, args.out / f"weights_w{w}_step1.pt")
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
