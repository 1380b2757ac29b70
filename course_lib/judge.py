"""A small, seeded digits classifier that scores generated digits (chapters 09-12).

Generative models are hard to evaluate: their likelihood is not always available, and a sample can
look right pixel by pixel and still be no digit at all. Large-scale work scores samples in the feature
space of a pretrained Inception network (FID, Heusel et al., 2017; the Inception score, Salimans et
al., 2016). The course cannot download Inception, so it trains its own judge: an MLP on the *train*
split of :func:`course_lib.data.digits_splits` (``normalize=None``, seed 0), in about a second, with
random one-pixel shifts as augmentation. The judge then gives

- :meth:`DigitsJudge.frechet`: the Fréchet distance between Gaussians fitted to its 64-d hidden
  features of the samples and of the held-out *test* digits;
- :meth:`DigitsJudge.real_vs_real`: the same distance between the validation and the test digits,
  the floor that sampling noise alone gives at this sample size (quote it next to every score);
- :meth:`DigitsJudge.accuracy`: how often the judge labels a sample as the class it was asked for
  (conditional models).

These are **course-scale analogues** of FID and classifier accuracy: a different network, a 64-d
feature space and a few hundred samples, so the values are not comparable with published FIDs, and
the Fréchet distance is biased upward at small sample sizes (compare models at the same ``N``;
about 360, the size of the test split, is what :meth:`real_vs_real` uses). An 8×8 digit that fools
this judge is a sanity check, not a benchmark.

Introduced in chapter 09 (autoencoders); chapters 10 (GANs), 11 (diffusion) and 12 use it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from course_lib import data, metrics

__all__ = ["DigitsJudge", "digits_judge"]

#: Hidden-feature size of the judge (the space the Fréchet distance is measured in).
FEATURES = 64


def _shift_one_pixel(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image moved by an independent random offset in {-1, 0, 1}² (zeros shifted in)."""
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=g)[:, None] + torch.arange(8)  # [n, 8] source rows
    dx = torch.randint(0, 3, (n,), generator=g)[:, None] + torch.arange(8)
    return padded[torch.arange(n)[:, None, None], 0, dy[:, :, None], dx[:, None, :]].unsqueeze(1)


class DigitsJudge(nn.Module):
    """The trained judge; build it with :func:`digits_judge` (cached), not directly.

    Every method takes digits as ``Tensor[N, 1, 8, 8]``, ``Tensor[N, 8, 8]`` or ``Tensor[N, 64]`` with
    values in [0, 1] (the scale of :func:`course_lib.data.load_digits`; convert a tanh output ``t``
    with ``(t + 1) / 2``). Values a little outside [0, 1] (up to 0.25) are clipped to it; anything
    further out raises ``ValueError``, as it is almost surely the wrong scale.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, FEATURES), nn.ReLU()
        )
        self.head = nn.Linear(FEATURES, 10)
        self.test_accuracy = float("nan")
        self.val_accuracy = float("nan")
        self._reference: dict[str, torch.Tensor] = {}

    # -- input handling ---------------------------------------------------------------------------
    @staticmethod
    def _prepare(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must have a floating dtype (values in [0, 1]), got {x.dtype}")
        if x.ndim == 2 and x.shape[1] == 64 or x.ndim == 3 and x.shape[1:] == (8, 8):
            x = x.reshape(-1, 1, 8, 8)
        if x.ndim != 4 or x.shape[1:] != (1, 8, 8):
            raise ValueError(f"x must be Tensor[N, 1, 8, 8], [N, 8, 8] or [N, 64], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x is empty")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.25 or hi > 1.25:
            raise ValueError(
                f"x must hold values in [0, 1] (digits / 16), got [{lo:.3g}, {hi:.3g}]; "
                "convert tanh outputs with (x + 1) / 2"
            )
        return x.clamp(0, 1).float()

    def _device(self) -> torch.device:
        return self.head.weight.device

    # -- scores -----------------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 64]``: the judge's hidden features (on the judge's device)."""
        return self.body(self._prepare(x).to(self._device()))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 10]`` class logits."""
        return self.head(self.features(x))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``Tensor[N]`` (int64) predicted digit classes."""
        return self.logits(x).argmax(1)

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of ``x`` the judge labels as ``labels`` (``Tensor[N]`` of 0..9)."""
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise ValueError(
                f"labels must be a Tensor[N], got {getattr(labels, 'shape', type(labels).__name__)}"
            )
        pred = self.predict(x)
        if labels.shape[0] != pred.shape[0]:
            raise ValueError(f"x has {pred.shape[0]} images but labels has {labels.shape[0]}")
        return float((pred == labels.to(pred.device)).double().mean())

    def frechet(self, x: torch.Tensor) -> float:
        """Fréchet distance (squared) between the features of ``x`` and of the held-out test digits.

        Use at least a few hundred samples (the features are 64-d) and quote :meth:`real_vs_real`
        beside it.
        """
        feats = self.features(x)
        if feats.shape[0] < 2:
            raise ValueError("frechet needs at least 2 samples")
        return metrics.frechet_distance(feats, self._reference["test"].to(feats.device))

    def real_vs_real(self) -> float:
        """The Fréchet distance between the validation and test digits (360 and 359 real images)."""
        return metrics.frechet_distance(self._reference["val"], self._reference["test"])


@functools.lru_cache(maxsize=4)
def digits_judge(seed: int = 0, epochs: int = 40) -> DigitsJudge:
    """Train (once per process and seed; cached) and return the digits judge, in eval mode on the CPU.

    Trained with Adam (learning rate 2e-3, weight decay 1e-4, batch 64, ``epochs`` epochs) and random
    one-pixel shifts on the train split of ``data.digits_splits(normalize=None)``; the validation and
    test accuracies are stored in ``val_accuracy`` and ``test_accuracy`` (about 0.97). Move it with
    ``.to(device)`` if wanted; it is returned shared, so do not train it further.

    Args:
        seed: seeds the weights and the batch order.
        epochs: passes over the 1,078 training digits (about 0.02 s each on one CPU thread).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    splits = data.digits_splits(normalize=None)
    x, y = splits.tensors("train")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global random stream untouched
        torch.manual_seed(seed)
        judge = DigitsJudge()
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    judge.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(judge.head(judge.body(_shift_one_pixel(x[b], g))), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    judge.eval()
    judge.requires_grad_(False)
    xv, yv = splits.tensors("val")
    xt, yt = splits.tensors("test")
    judge.val_accuracy = judge.accuracy(xv, yv)
    judge.test_accuracy = judge.accuracy(xt, yt)
    judge._reference = {"val": judge.features(xv), "test": judge.features(xt)}
    return judge
