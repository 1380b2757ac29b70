"""Offline data for the course: digits, bundled photos, coloured shapes, splits and normalization.

Introduced in chapter 00 (introduction); the train-only statistics are the subject of chapter 01
(preprocessing). Nothing here touches the network: every source ships inside an installed package
(scikit-learn, scikit-image) or is generated from a seed. Chapters 10-12 add the 2-D toy distributions
(:func:`toy_2d`) and the two-object scenes with prompts (:func:`two_object_scenes`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "HARD_SHAPES",
    "SAMPLE_IMAGES",
    "SHAPE_CLASSES",
    "SHAPE_COLORS",
    "Normalizer",
    "Shapes",
    "ShapesDataset",
    "Splits",
    "digits_splits",
    "lfw_faces",
    "load_digits",
    "make_shapes",
    "sample_image",
    "split_indices",
]


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"Tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------
def load_digits(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as tensors.

    Returns:
        images: ``Tensor[1797, 1, 8, 8]`` with values in [0, 1] (the raw 0..16 divided by 16).
        labels: ``Tensor[1797]`` (int64) with classes 0..9.
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.as_tensor(d.images, dtype=dtype).unsqueeze(1) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    return x, y


def split_indices(
    n: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    seed: int = 0,
    stratify: torch.Tensor | np.ndarray | None = None,
) -> list[torch.Tensor]:
    """Random disjoint index sets covering ``range(n)``, one per fraction (fractions sum to 1).

    With ``stratify`` (one label per item), every split keeps the class proportions (each class is
    split on its own, so small classes are spread evenly): a class of ``n_c`` items gives split ``k``
    ``round(F_k n_c) - round(F_{k-1} n_c)`` items, with ``F`` the cumulative fractions, which is within
    one item of ``fractions[k] * n_c``.

    Args:
        n: number of items (>= 1).
        fractions: one positive fraction per split, summing to 1.
        seed: seed of the permutation.
        stratify: ``Tensor[n]`` or array of labels, or ``None``.
    Returns:
        one sorted ``Tensor[n_k]`` (int64) of indices per split.
    Raises:
        ValueError: for bad arguments, or when a split would come out empty (``n`` too small).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) < 1 or (fr <= 0).any() or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be positive and sum to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [rng.permutation(n)]
    else:
        labels = np.asarray(stratify.cpu() if isinstance(stratify, torch.Tensor) else stratify)
        if labels.shape != (n,):
            raise ValueError(f"stratify must have shape ({n},), got {labels.shape}")
        groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for idx in groups:
        bounds = np.round(np.cumsum(fr) * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, bounds[:-1])):
            parts[k].append(chunk)
    out = [torch.as_tensor(np.sort(np.concatenate(p)), dtype=torch.int64) for p in parts]
    sizes = [len(o) for o in out]
    if min(sizes) == 0:
        raise ValueError(f"fractions {tuple(fractions)} of n={n} give an empty split (sizes {sizes})")
    return out


class Normalizer:
    """Standardization with statistics fitted on the training split only (chapter 01).

    ``per="channel"`` computes one mean/std per channel of ``Tensor[N, C, H, W]`` (as for photos);
    ``per="feature"`` one per pixel and channel (a "mean image"); ``per="global"`` one scalar.
    The fitted statistics are then applied unchanged to every split: ``transform`` computes
    ``(x - mean) / (std + eps)`` with the sample standard deviation (Bessel-corrected, as
    ``torch.std``), and ``inverse`` undoes it. ``x`` may be a batch shaped like the fitted data or, for
    ``"channel"`` and ``"feature"``, a single item without the batch dimension.
    """

    def __init__(self, per: str = "channel", eps: float = 1e-6) -> None:
        if per not in ("channel", "feature", "global"):
            raise ValueError(f"per must be 'channel', 'feature' or 'global', got {per!r}")
        self.per, self.eps = per, eps
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> Normalizer:
        """Fit the statistics on ``x`` (``Tensor[N, ...]``, N >= 2, floating point); returns ``self``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point Tensor, got {_describe(x)}")
        if x.ndim < 1 or x.shape[0] < 2:
            raise ValueError(f"x needs at least 2 samples to fit statistics, got shape {tuple(x.shape)}")
        if self.per == "channel":
            if x.ndim < 3:
                raise ValueError(f"per='channel' needs x of shape [N, C, ...], got {tuple(x.shape)}")
            dims = [0, *range(2, x.ndim)]
            self.mean = x.mean(dim=dims, keepdim=True)[0]
            self.std = x.std(dim=dims, keepdim=True)[0]
        elif self.per == "feature":
            self.mean, self.std = x.mean(0), x.std(0)
        else:
            self.mean, self.std = x.mean(), x.std()
        return self

    def _check(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Normalizer is not fitted: call fit(x_train) first")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point Tensor, got {_describe(x)}")
        # the statistics must line up with x's trailing dimensions (no silent broadcasting)
        stat = tuple(self.mean.shape)
        if self.per == "channel":
            ok = x.ndim in (len(stat), len(stat) + 1) and x.shape[-len(stat)] == stat[0]
            want = f"[N, {stat[0]}, ...] with {len(stat) + 1} dims, or one item of {len(stat)} dims"
        elif self.per == "feature":
            ok = x.ndim in (len(stat), len(stat) + 1) and tuple(x.shape[x.ndim - len(stat) :]) == stat
            want = f"[N, {', '.join(map(str, stat))}] or one item {list(stat)}"
        else:
            ok, want = True, ""
        if not ok:
            raise ValueError(f"x must have shape {want} (as fitted), got {tuple(x.shape)}")
        return self.mean.to(x), self.std.to(x)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / (std + eps)`` on the device and dtype of ``x``."""
        mean, std = self._check(x)
        return (x - mean) / (std + self.eps)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform`: ``x * (std + eps) + mean``."""
        mean, std = self._check(x)
        return x * (std + self.eps) + mean

    def __repr__(self) -> str:
        fitted = "fitted" if self.mean is not None else "not fitted"
        return f"Normalizer(per={self.per!r}, {fitted})"


@dataclass
class Splits:
    """Train/validation/test datasets plus the normalizer fitted on the training split."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    normalizer: Normalizer | None
    classes: list[str] = field(default_factory=list)

    def tensors(self, split: str) -> tuple[torch.Tensor, ...]:
        return getattr(self, split).tensors


def digits_splits(
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    *,
    seed: int = 0,
    normalize: str | None = "global",
    flatten: bool = False,
) -> Splits:
    """Stratified train/val/test splits of the digits, normalized with train-only statistics.

    Args:
        fractions: train, val, test fractions.
        seed: the split's seed.
        normalize: ``None`` or a :class:`Normalizer` mode (``"global"``, ``"channel"``, ``"feature"``).
        flatten: return images as ``Tensor[N, 64]`` instead of ``Tensor[N, 1, 8, 8]``.
    """
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {tuple(fractions)}")
    if normalize not in (None, "global", "channel", "feature"):
        raise ValueError(f"normalize must be None, 'global', 'channel' or 'feature', got {normalize!r}")
    x, y = load_digits()
    idx = split_indices(len(y), fractions, seed=seed, stratify=y)
    xs = [x[i] for i in idx]
    norm = None
    if normalize is not None:
        norm = Normalizer(normalize).fit(xs[0])
        xs = [norm.transform(t) for t in xs]
    if flatten:
        xs = [t.flatten(1) for t in xs]
    sets = [TensorDataset(t, y[i]) for t, i in zip(xs, idx, strict=True)]
    return Splits(*sets, normalizer=norm, classes=[str(c) for c in range(10)])


# --------------------------------------------------------------------------------------------
# bundled photos
# --------------------------------------------------------------------------------------------
#: Photos that ship inside the scikit-image and scikit-learn wheels (no download needed).
SAMPLE_IMAGES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "horse", "page", "text",
    "moon", "retina", "hubble_deep_field", "brick", "grass", "gravel", "colorwheel", "logo",
    "immunohistochemistry", "china", "flower",
)  # fmt: skip


def sample_image(name: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A bundled photo as ``Tensor[C, H, W]`` in [0, 1] (C = 3 for colour, 1 for grey).

    ``china`` and ``flower`` come from scikit-learn, the others from ``skimage.data``. ``size``
    resizes (antialiased) to ``size`` or ``(height, width)``.
    """
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name must be one of {SAMPLE_IMAGES}, got {name!r}")
    if size is not None:
        hw = tuple(size) if isinstance(size, tuple | list) else (size, size)
        if len(hw) != 2 or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in hw
        ):
            raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        arr = getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "ui":
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    else:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            arr = (arr - lo) / max(hi - lo, 1e-12)
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = arr[..., :3]  # drop alpha
    img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if size is not None:
        img = torch.nn.functional.interpolate(
            img[None], size=tuple(int(v) for v in hw), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0, 1)
    return img


def lfw_faces() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's ``lfw_subset``: 200 grey 25x25 crops, 100 faces then 100 non-faces.

    Returns ``Tensor[200, 1, 25, 25]`` in [0, 1] and labels ``Tensor[200]`` (1 = face).
    """
    import skimage.data

    arr = np.asarray(skimage.data.lfw_subset())
    if arr.dtype.kind in "ui":  # documented as uint8 by scikit-image, shipped as float64 in [0, 1]
        arr = arr.astype(np.float32) / np.iinfo(arr.dtype).max
    x = torch.as_tensor(arr, dtype=torch.float32).unsqueeze(1)
    y = torch.cat([torch.ones(100, dtype=torch.int64), torch.zeros(100, dtype=torch.int64)])
    return x, y


# --------------------------------------------------------------------------------------------
# coloured shapes
# --------------------------------------------------------------------------------------------
SHAPE_CLASSES = ("circle", "square", "triangle")
#: Colour names and their RGB values in [0, 1].
SHAPE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
}


@dataclass
class Shapes:
    """A batch of coloured-shape scenes with every label a vision task needs.

    Attributes:
        images: ``Tensor[N, 3, S, S]`` in [0, 1].
        masks: ``Tensor[N, S, S]`` int64 semantic masks, 0 = background, ``k + 1`` = class ``k``.
        instance_masks: per image ``Tensor[K_i, S, S]`` bool, one mask per object (visible part).
        boxes: per image ``Tensor[K_i, 4]`` float boxes ``(x1, y1, x2, y2)`` in pixels, tight around
            the visible mask, with ``x2``/``y2`` exclusive (so width = ``x2 - x1``).
        labels: per image ``Tensor[K_i]`` int64 class indices into ``classes``.
        colors: per image ``Tensor[K_i]`` int64 colour indices into ``color_names``.
        captions: per image a string such as ``"a red circle and a blue square"``.
    """

    images: torch.Tensor
    masks: torch.Tensor
    instance_masks: list[torch.Tensor]
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    colors: list[torch.Tensor]
    captions: list[str]
    classes: tuple[str, ...] = SHAPE_CLASSES
    color_names: tuple[str, ...] = tuple(SHAPE_COLORS)

    def __len__(self) -> int:
        return self.images.shape[0]


def _shape_mask(
    kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, angle: float
) -> np.ndarray:
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    if kind == "square":
        h = r * 0.85
        return (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)
    if kind == "triangle":
        # upright-ish equilateral triangle, rotated by a small angle; inside = all three half-planes
        pts = [
            (cx + r * math.cos(angle + a), cy - r * math.sin(angle + a))
            for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)
        ]
        inside = np.ones_like(yy, dtype=bool)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) <= 0
        return inside
    raise ValueError(f"unknown shape {kind!r}")


#: Placement attempts per object, and whole-scene redraws when fewer than ``min_objects`` fit.
_PLACE_TRIES = 100
_SCENE_TRIES = 100


def _dilate8(m: np.ndarray) -> np.ndarray:
    """``m`` grown by one pixel in the 8-neighbourhood (a 3x3 binary dilation, done separably)."""
    v = m.copy()
    v[1:] |= m[:-1]
    v[:-1] |= m[1:]
    out = v.copy()
    out[:, 1:] |= v[:, :-1]
    out[:, :-1] |= v[:, 1:]
    return out


def _draw_scene(
    rng: np.random.Generator,
    size: int,
    k: int,
    classes: Sequence[str],
    n_colors: int,
    radius: tuple[float, float],
    overlap: bool,
    touching: bool,
    yy: np.ndarray,
    xx: np.ndarray,
    distinct_colors: bool = False,
) -> list[tuple[np.ndarray, int, int, float]]:
    """Place up to ``k`` objects; returns ``(mask, class, colour, centre_x)`` in painting order.

    Every placed mask holds at least one pixel. Without ``overlap`` or ``touching`` a candidate is
    rejected when its circumcircle comes within 1.5 px of an earlier one, or when its pixels touch an
    earlier object's pixels (8-neighbourhood; a square's corners reach beyond its circle). With
    ``touching`` (and no ``overlap``) only shared pixels are rejected, and the first half of the
    attempts put the candidate at contact distance from an earlier object, so most objects end up
    touching a neighbour. An object that finds no room in :data:`_PLACE_TRIES` attempts is left out.
    """
    placed: list[tuple[float, float, float]] = []
    occupied = np.zeros((size, size), dtype=bool)  # union of the placed masks
    objs = []
    for _ in range(k):
        for attempt in range(_PLACE_TRIES):
            r = rng.uniform(*radius) * size
            if touching and placed and attempt < _PLACE_TRIES // 2:
                # put the centre at contact distance from an earlier object, in a random direction
                py, px, pr = placed[int(rng.integers(len(placed)))]
                angle, gap = rng.uniform(0.0, 2 * math.pi), rng.uniform(-0.5, 1.0)
                cy = py + (r + pr + gap) * math.sin(angle)
                cx = px + (r + pr + gap) * math.cos(angle)
                if not (r <= cy <= size - r and r <= cx <= size - r):
                    continue
            else:
                cy, cx = rng.uniform(r, size - r, size=2)
            if (
                not overlap
                and not touching
                and not all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 1.5) ** 2 for py, px, pr in placed)
            ):
                continue
            cls = int(rng.integers(len(classes)))
            if (
                distinct_colors
            ):  # a colour no placed object has (draws only when asked: same scenes otherwise)
                free = [c for c in range(n_colors) if c not in {o[2] for o in objs}]
                col = free[int(rng.integers(len(free)))]
            else:
                col = int(rng.integers(n_colors))
            m = _shape_mask(classes[cls], yy, xx, cy, cx, r, rng.uniform(-0.3, 0.3))
            if not m.any():
                continue  # a thin triangle between pixel centres
            if not overlap and placed and ((m if touching else _dilate8(m)) & occupied).any():
                continue  # overlapping (touching allowed), or touching when objects must stay apart
            placed.append((cy, cx, r))
            occupied |= m
            objs.append((m, cls, col, cx))
            break
    return objs


def _background_pattern(
    rng: np.random.Generator, amplitude: float, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """``Array[3, S, S]``: per channel, the mean of three random low-frequency plane waves."""
    size = yy.shape[0]
    out = np.zeros((3,) + yy.shape, dtype=np.float32)
    for c in range(3):
        for _ in range(3):
            fy, fx = rng.uniform(-1.5, 1.5, size=2) * 2 * math.pi / size
            out[c] += np.cos(fy * yy + fx * xx + rng.uniform(0, 2 * math.pi)).astype(np.float32)
    return amplitude * out / 3


def _paint_clutter(
    rng: np.random.Generator, img: np.ndarray, count: int, yy: np.ndarray, xx: np.ndarray
) -> None:
    """Paint ``count`` distractors into ``img`` (in place): 1-px line segments and small dots."""
    size = yy.shape[0]
    for _ in range(count):
        colour = rng.uniform(0.2, 1.0, size=3).astype(np.float32)
        if rng.uniform() < 0.6:  # a thin segment: pixels within 0.5 px of the line between two points
            (y0, x0), (y1, x1) = rng.uniform(0, size, size=(2, 2))
            dy, dx = y1 - y0, x1 - x0
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
            m = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= 0.25
        else:  # a dot of radius 1-1.5 px
            cy, cx = rng.uniform(0, size, size=2)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(1.0, 1.5) ** 2
        img[:, m] = colour[:, None]


#: Settings under which segmentation and detection on the shapes leave room (chapters 07-08):
#: strong noise, dimmer objects, clutter, a textured background and objects packed against each
#: other. Use as ``make_shapes(n, 32, **HARD_SHAPES, seed=...)``; override any key as needed.
HARD_SHAPES: dict[str, object] = {
    "min_objects": 2,
    "max_objects": 5,
    "touching": True,
    "noise": 0.12,
    "intensity": (0.45, 1.0),
    "clutter": 4,
    "background": 0.08,
}


def make_shapes(
    n: int,
    size: int = 32,
    *,
    min_objects: int = 1,
    max_objects: int = 3,
    classes: Sequence[str] = SHAPE_CLASSES,
    colors: Sequence[str] = tuple(SHAPE_COLORS),
    radius: tuple[float, float] = (0.12, 0.25),
    overlap: bool = False,
    touching: bool = False,
    noise: float = 0.03,
    intensity: tuple[float, float] = (1.0, 1.0),
    clutter: int = 0,
    background: float = 0.0,
    distinct_colors: bool = False,
    seed: int = 0,
) -> Shapes:
    """Generate ``n`` scenes of coloured circles, squares and triangles on a dark background.

    Used for classification (``min_objects = max_objects = 1``), segmentation, detection,
    diffusion and CLIP-style captioning in later chapters. Deterministic for a given ``seed``.

    Every image holds between ``min_objects`` and ``max_objects`` visible objects. The number
    wanted is drawn uniformly in that range; an object that finds no room (100 attempts) is left
    out, and with ``overlap`` an object hidden entirely by later ones is left out too. A scene that
    ends up with fewer than ``min_objects`` objects is drawn again (up to 100 times; then
    ``ValueError``: the objects do not fit, lower ``min_objects`` or ``radius`` or raise ``size``).

    Args:
        n: number of images (>= 0).
        size: side length in pixels (>= 8).
        min_objects, max_objects: objects per image, drawn uniformly in that range.
        classes: subset of :data:`SHAPE_CLASSES`, in the order that defines the label indices.
        colors: subset of :data:`SHAPE_COLORS` names, in the order that defines colour indices.
        radius: range of object radii as a fraction of ``size``.
        overlap: allow objects to overlap (later objects occlude earlier ones). Without it (and
            without ``touching``) objects are placed by rejection sampling so that they do not touch
            (no two objects have neighbouring pixels, diagonals included).
        touching: place objects against each other (shared borders, no shared pixels); the hard
            case for instance separation. Ignored placement-wise when ``overlap`` is set.
        noise: standard deviation of Gaussian pixel noise added to the images (then clipped to
            [0, 1]).
        intensity: ``(low, high)`` range of a per-object brightness factor that multiplies the
            object's colour (``(1, 1)``: pure palette colours). Lower factors bring objects closer
            to the background.
        clutter: number of distractor strokes per image: thin line segments and small dots in
            random colours, painted under the objects and labelled background everywhere.
        background: amplitude of a smooth random background pattern (a few low-frequency
            sinusoids per channel) added to the flat background colour; ``0`` keeps it flat.
        distinct_colors: give the objects of a scene different colours (so that a colour word names
            one object, as in the text-to-image scenes of chapters 11-12); needs
            ``max_objects <= len(colors)``.
        seed: random seed.

    ``noise``, ``intensity``, ``clutter`` and ``background`` draw from random streams of their own:
    for a given ``seed`` the scenes, masks, boxes and captions do not depend on them (clean/noisy
    pairs for denoising, or the same scenes at several difficulties). :data:`HARD_SHAPES` collects
    settings under which segmentation and detection metrics leave room.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    for name, v in (("min_objects", min_objects), ("max_objects", max_objects)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if isinstance(classes, str) or isinstance(colors, str):
        raise TypeError("classes and colors must be sequences of names, not a single string")
    bad = [c for c in classes if c not in SHAPE_CLASSES]
    if bad or not classes:
        raise ValueError(f"classes must be a non-empty subset of {SHAPE_CLASSES}, got {tuple(classes)}")
    badc = [c for c in colors if c not in SHAPE_COLORS]
    if badc or not colors:
        raise ValueError(f"colors must be a non-empty subset of {tuple(SHAPE_COLORS)}, got {tuple(colors)}")
    if len(radius) != 2 or not 0 < radius[0] <= radius[1] < 0.5:
        raise ValueError(f"radius must be (low, high) with 0 < low <= high < 0.5, got {radius}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if len(intensity) != 2 or not 0 < intensity[0] <= intensity[1] <= 1:
        raise ValueError(f"intensity must be (low, high) with 0 < low <= high <= 1, got {intensity}")
    if isinstance(clutter, bool) or not isinstance(clutter, int | np.integer) or clutter < 0:
        raise ValueError(f"clutter must be a non-negative int, got {clutter!r}")
    if not 0 <= background <= 0.5:
        raise ValueError(f"background must be in [0, 0.5], got {background}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if distinct_colors and max_objects > len(colors):
        raise ValueError(
            f"distinct_colors needs max_objects <= len(colors), got {max_objects} objects and {len(colors)} colours"
        )

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    palette = np.array([SHAPE_COLORS[c] for c in colors], dtype=np.float32)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    # streams of their own, so that the scenes do not depend on these settings
    look_rng = np.random.default_rng([seed, 2])  # object intensities, background pattern
    clutter_rng = np.random.default_rng([seed, 3])
    inst_l, box_l, lab_l, col_l, cap_l = [], [], [], [], []
    for i in range(n):
        for _scene in range(_SCENE_TRIES):
            bg = rng.uniform(0.0, 0.2)
            k = int(rng.integers(min_objects, max_objects + 1))
            objs = _draw_scene(
                rng, size, k, classes, len(colors), radius, overlap, touching, yy, xx, distinct_colors
            )
            # paint in order: background, clutter, then the objects (later ones occlude earlier ones)
            img = np.full((3, size, size), bg, dtype=np.float32)
            if background > 0:
                img += _background_pattern(look_rng, background, yy, xx)
            if clutter:
                _paint_clutter(clutter_rng, img, clutter, yy, xx)
            gains = look_rng.uniform(intensity[0], intensity[1], size=len(objs)).astype(np.float32)
            sem = np.zeros((size, size), dtype=np.int64)
            visible = np.zeros((len(objs), size, size), dtype=bool)
            for j, (m, cls, col, _cx) in enumerate(objs):
                visible[:j] &= ~m
                visible[j] = m
                img[:, m] = (gains[j] * palette[col])[:, None]
                sem[m] = cls + 1
            keep = [j for j in range(len(objs)) if visible[j].any()]
            if len(keep) >= min_objects:
                break
        else:
            raise ValueError(
                f"could not fit min_objects={min_objects} objects with radius={radius} (fraction of "
                f"size) into a {size}x{size} image in {_SCENE_TRIES} tries; lower min_objects or radius, "
                "or raise size"
            )
        images[i] = img
        masks[i] = sem
        vis = visible[keep]
        boxes = np.zeros((len(keep), 4), dtype=np.float32)
        for b, v in enumerate(vis):
            rows, cols = np.flatnonzero(v.any(1)), np.flatnonzero(v.any(0))
            boxes[b] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        inst_l.append(torch.from_numpy(vis))
        box_l.append(torch.from_numpy(boxes))
        lab_l.append(torch.tensor([objs[j][1] for j in keep], dtype=torch.int64))
        col_l.append(torch.tensor([objs[j][2] for j in keep], dtype=torch.int64))
        # caption lists objects left to right (by the centre of each shape)
        order = sorted(keep, key=lambda j: objs[j][3])
        words = [f"{colors[objs[j][2]]} {classes[objs[j][1]]}" for j in order]
        cap_l.append("a " + " and a ".join(words))
    if noise > 0:
        noise_rng = np.random.default_rng([seed, 1])  # independent of the scene stream
        for img in images:  # one image at a time keeps the float32 draws small
            img += noise * noise_rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return Shapes(
        images=torch.from_numpy(images),
        masks=torch.from_numpy(masks),
        instance_masks=inst_l,
        boxes=box_l,
        labels=lab_l,
        colors=col_l,
        captions=cap_l,
        classes=tuple(classes),
        color_names=tuple(colors),
    )


class ShapesDataset(Dataset):
    """A :class:`Shapes` batch as a ``Dataset``.

    ``target="label"`` (needs exactly one object per image) yields ``(image, class)``;
    ``"mask"`` yields ``(image, semantic mask)``; ``"detection"`` yields ``(image, dict)`` with
    ``boxes``, ``labels`` and ``masks`` (use :func:`collate_detection` in a DataLoader);
    ``"caption"`` yields ``(image, caption)``.
    """

    TARGETS = ("label", "mask", "detection", "caption")

    def __init__(self, shapes: Shapes, target: str = "label") -> None:
        if target not in self.TARGETS:
            raise ValueError(f"target must be one of {self.TARGETS}, got {target!r}")
        if target == "label" and any(len(lab) != 1 for lab in shapes.labels):
            raise ValueError(
                "target='label' needs exactly one object per image (min_objects = max_objects = 1)"
            )
        self.shapes, self.target = shapes, target

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int):
        s = self.shapes
        if self.target == "label":
            return s.images[i], s.labels[i][0]
        if self.target == "mask":
            return s.images[i], s.masks[i]
        if self.target == "caption":
            return s.images[i], s.captions[i]
        return s.images[i], {"boxes": s.boxes[i], "labels": s.labels[i], "masks": s.instance_masks[i]}


def collate_detection(batch):
    """DataLoader ``collate_fn`` for detection targets: stacks images, keeps targets as a list."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


__all__ += ["collate_detection"]


# --------------------------------------------------------------------------------------------
# toy 2-D distributions (chapters 10 and 11)
# --------------------------------------------------------------------------------------------
#: The 2-D toy distributions :func:`toy_2d` draws from, with their default noise.
TOY_2D = {"ring": 0.02, "grid": 0.05, "moons": 0.05, "spirals": 0.05}


def toy_2d_modes(name: str) -> tuple[torch.Tensor, float]:
    """Centres and standard deviation of the Gaussian-mixture toys.

    ``"ring"``: 8 Gaussians evenly spaced on a circle of radius 2, std 0.02; ``"grid"``: 25 Gaussians
    on the grid ``{-4, -2, 0, 2, 4}²``, std 0.05 (the settings of the unrolled-GAN and VEEGAN
    papers). Returns ``(Tensor[M, 2], std)``.
    """
    if name == "ring":
        a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([2 * a.cos(), 2 * a.sin()], 1).float(), TOY_2D["ring"]
    if name == "grid":
        v = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(v, v), TOY_2D["grid"]
    raise ValueError(f"name must be 'ring' or 'grid' (the mixtures), got {name!r}")


def _toy_curve(name: str, t: np.ndarray) -> np.ndarray:
    """Noise-free points of the curve toys at parameters ``t`` in [0, 1) (two halves: two arms)."""
    arm = (t >= 0.5).astype(float)
    s = (t - 0.5 * arm) * 2  # position along the arm, [0, 1)
    if name == "moons":  # scikit-learn's make_moons: two interleaved half circles
        x = np.where(arm == 0, np.cos(np.pi * s), 1 - np.cos(np.pi * s))
        y = np.where(arm == 0, np.sin(np.pi * s), 0.5 - np.sin(np.pi * s))
        return np.stack([x, y], 1)
    # spirals: two arms of an Archimedean spiral, half a turn apart, radius 0.25 .. 2
    r = 0.25 + 1.75 * s
    theta = 3 * np.pi * s + np.pi * arm
    return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def toy_2d(name: str, n: int, *, seed: int = 0, noise: float | None = None) -> torch.Tensor:
    """``n`` points of a 2-D toy distribution, ``Tensor[n, 2]`` (float32).

    - ``"ring"`` and ``"grid"``: mixtures of isotropic Gaussians (see :func:`toy_2d_modes`), each mode
      equally likely; ``noise`` replaces the modes' std.
    - ``"moons"``: scikit-learn's two interleaved half circles, plus Gaussian noise (std ``noise``).
    - ``"spirals"``: two arms of a spiral, plus Gaussian noise.

    Deterministic for a given ``seed``. :func:`toy_2d_distance` measures how far points are from
    the noise-free support. Introduced in chapter 10 (GANs); chapter 11 (diffusion) uses it too.
    """
    if name not in TOY_2D:
        raise ValueError(f"name must be one of {tuple(TOY_2D)}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    std = TOY_2D[name] if noise is None else float(noise)
    if not std >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    if name in ("ring", "grid"):
        centers = toy_2d_modes(name)[0].double().numpy()
        clean = centers[rng.integers(len(centers), size=n)]
    else:
        clean = _toy_curve(name, rng.random(n))
    return torch.as_tensor(clean + std * rng.standard_normal((n, 2)), dtype=torch.float32)


def toy_2d_distance(name: str, points: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each point to the noise-free support of a :func:`toy_2d` distribution:
    the nearest mode centre for ``"ring"``/``"grid"``, the nearest point of the curve (sampled at
    20,000 parameters, so exact to about 1e-3) for ``"moons"``/``"spirals"``.

    Args:
        name: one of :data:`TOY_2D`.
        points: ``Tensor[N, 2]``.
    Returns:
        ``Tensor[N]`` (float32, on the device of ``points``).
    """
    if name not in TOY_2D:
        raise ValueError(f"name must be one of {tuple(TOY_2D)}, got {name!r}")
    if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(
            f"points must be a Tensor[N, 2], got {getattr(points, 'shape', type(points).__name__)}"
        )
    if name in ("ring", "grid"):
        support = toy_2d_modes(name)[0].double()
    else:
        support = torch.as_tensor(_toy_curve(name, (np.arange(20_000) + 0.5) / 20_000))
    p = points.detach().to("cpu", torch.float64)
    out = (
        torch.cat([torch.cdist(chunk, support).min(1).values for chunk in p.split(4096)])
        if len(p)
        else p[:, 0]
    )
    return out.float().to(points.device)


__all__ += ["TOY_2D", "toy_2d", "toy_2d_distance", "toy_2d_modes"]


# --------------------------------------------------------------------------------------------
# text-to-image scenes (chapters 11 and 12)
# --------------------------------------------------------------------------------------------
#: Colours and shapes of :func:`two_object_scenes`.
SCENE_COLORS = ("red", "green", "blue", "yellow")
SCENE_SHAPES = ("square", "circle")
#: Token vocabulary of the scene prompts: id 0 is the empty prompt of classifier-free guidance.
PROMPT_VOCAB = ("<null>", *SCENE_COLORS, *SCENE_SHAPES)


def two_object_scenes(n: int, size: int = 16, *, noise: float = 0.0, seed: int = 0) -> Shapes:
    """``n`` scenes of two non-touching objects of different colours, the toy text-to-image data.

    Each scene holds exactly two shapes (square or circle, radius 2.5-4 px at ``size`` 16, scaled
    with ``size``) in two different colours out of :data:`SCENE_COLORS`, on a dark background. The
    caption names them left to right; :func:`scene_prompts` turns captions into token ids and aligns
    each object's mask with its tokens. A :func:`make_shapes` call with fixed settings.

    Introduced in chapter 11 (diffusion); chapter 12 (RAPHAEL) trains its toy model on it.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 12:
        raise ValueError(f"size must be an int >= 12 (two objects must fit), got {size!r}")
    return make_shapes(
        n,
        size,
        min_objects=2,
        max_objects=2,
        classes=SCENE_SHAPES,
        colors=SCENE_COLORS,
        radius=(2.5 / 16, 4 / 16),
        noise=noise,
        distinct_colors=True,
        seed=seed,
    )


def scene_prompts(shapes: Shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt tokens and the matching object masks of :func:`two_object_scenes`.

    Returns:
        tokens: ``Tensor[N, 4]`` (int64) ids into :data:`PROMPT_VOCAB`, ``[colour1, shape1, colour2,
            shape2]`` with object 1 the left one (the caption's order);
        masks: ``Tensor[N, 2, S, S]`` (bool), the visible mask of object 1 and of object 2.
    """
    if not isinstance(shapes, Shapes):
        raise TypeError(f"shapes must be a Shapes batch, got {type(shapes).__name__}")
    if tuple(shapes.color_names) != SCENE_COLORS or tuple(shapes.classes) != SCENE_SHAPES:
        raise ValueError("shapes must come from two_object_scenes (its colours and shapes)")
    n, size = len(shapes), shapes.images.shape[-1]
    tokens = torch.zeros(n, 4, dtype=torch.int64)
    masks = torch.zeros(n, 2, size, size, dtype=torch.bool)
    for i in range(n):
        if len(shapes.labels[i]) != 2 or shapes.colors[i][0] == shapes.colors[i][1]:
            raise ValueError(f"scene {i} must hold two objects of different colours")
        words = shapes.captions[i][2:].split(" and a ")  # "a red circle and a blue square"
        for k, word in enumerate(words):
            colour, shape = word.split()
            c = SCENE_COLORS.index(colour)
            j = int((shapes.colors[i] == c).nonzero()[0, 0])  # colours are distinct: one object
            tokens[i, 2 * k] = PROMPT_VOCAB.index(colour)
            tokens[i, 2 * k + 1] = PROMPT_VOCAB.index(shape)
            masks[i, k] = shapes.instance_masks[i][j]
    return tokens, masks


__all__ += ["PROMPT_VOCAB", "SCENE_COLORS", "SCENE_SHAPES", "scene_prompts", "two_object_scenes"]


# --------------------------------------------------------------------------------------------
# degraded images: defocus blur, motion blur, noise, rain (chapter 15; chapter 19 restores them)
# --------------------------------------------------------------------------------------------
#: The four image-quality problems of chapter 15, named as in the Swin report it reads.
DEGRADATIONS = ("defocus_blur", "motion_blur", "noise", "rain")
#: The clean-scene generators of :func:`clean_scenes`.
SCENE_KINDS = ("blocks", "stripes", "gradient", "photo")
#: Default parameter ranges of :func:`degrade` (each drawn uniformly per image): defocus radius and
#: motion length in pixels, the angle in degrees, noise standard deviation, and rain's number of
#: streaks, their length (px), opacity and slant from vertical (degrees).
DEGRADATION_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "defocus_blur": {"radius": (2.0, 3.0)},
    "motion_blur": {"length": (7.0, 11.0), "angle": (0.0, 180.0)},
    "noise": {"sigma": (0.06, 0.15)},
    "rain": {"streaks": (8, 15), "length": (4.0, 9.0), "alpha": (0.4, 0.8), "angle": (-25.0, 25.0)},
}


def _check_batch(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise ValueError(f"{name} must be a floating-point Tensor[N, C, H, W], got {_describe(images)}")


def _per_image(value, n: int, name: str, *, low: float = 0.0) -> torch.Tensor:
    """A scalar or ``Tensor[N]`` parameter as a float64 ``Tensor[N]`` on the CPU, checked ``>= low``."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(
            f"{name} must be a number or a Tensor[{n}] (one per image), got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all() or (t < low).any():
        raise ValueError(f"{name} must be finite and >= {low}, got range [{t.min():.4g}, {t.max():.4g}]")
    return t


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        generator = 0
    if isinstance(generator, bool) or not isinstance(generator, int | np.integer) or generator < 0:
        raise ValueError(f"generator must be a torch.Generator or a non-negative int seed, got {generator!r}")
    return torch.Generator().manual_seed(int(generator))


def disk_kernel(radius: float, *, supersample: int = 8) -> torch.Tensor:
    """A normalized disk ("pillbox") of ``radius`` pixels: the point-spread function of defocus.

    Each tap is the fraction of its pixel inside the disk (estimated on a ``supersample`` ×
    ``supersample`` grid of sub-pixels), so non-integer radii change the kernel smoothly; radius 0
    is the identity ``[[1.]]``. Returns ``Tensor[k, k]`` (float32, sums to 1), ``k = 2⌈radius⌉ + 1``.
    """
    r = float(radius)
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    half = math.ceil(r)
    if half == 0:
        return torch.ones(1, 1)
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    centers = torch.arange(-half, half + 1, dtype=torch.float64)
    coords = (centers[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel coordinates along an axis
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2 <= r * r).double()
    k = 2 * half + 1
    cover = inside.reshape(k, supersample, k, supersample).mean(dim=(1, 3))
    cover[half, half] = max(float(cover[half, half]), 1e-12)  # a tiny radius still keeps the centre
    return (cover / cover.sum()).float()


def motion_kernel(length: float, angle: float, *, size: int | None = None) -> torch.Tensor:
    """A normalized line of ``length`` pixels at ``angle`` degrees (counter-clockwise from the x
    axis, image rows pointing down): the point-spread function of linear camera motion.

    The segment is sampled densely and splatted bilinearly onto the grid, so any length and angle give
    a smooth kernel centred on the middle tap; length <= 1 is (close to) the identity. Returns
    ``Tensor[k, k]`` (float32, sums to 1) with ``k = size`` or ``2⌈length/2⌉ + 1``.
    """
    ln, a = float(length), float(angle)
    if not math.isfinite(ln) or ln < 0 or not math.isfinite(a):
        raise ValueError(f"length must be finite and >= 0 and angle finite, got {length!r}, {angle!r}")
    half = math.ceil(ln / 2) if size is None else (size - 1) // 2
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0
    ):
        raise ValueError(f"size must be a positive odd int, got {size!r}")
    k = 2 * half + 1
    steps = max(4 * math.ceil(ln), 1) + 1
    t = torch.linspace(-ln / 2, ln / 2, steps, dtype=torch.float64)
    x = half + t * math.cos(math.radians(a))
    y = half - t * math.sin(math.radians(a))
    out = _splat(torch.zeros(1, k, k, dtype=torch.float64), torch.zeros(steps, dtype=torch.int64), y, x)[0]
    return (out / out.sum()).float()


def _splat(canvas: torch.Tensor, idx: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Add unit mass at sub-pixel points ``(y, x)`` of images ``idx`` into ``canvas[N, H, W]`` (bilinear)."""
    n, h, w = canvas.shape
    y0, x0 = y.floor(), x.floor()
    flat = canvas.view(-1)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            wgt = (1 - (y - yy).abs()) * (1 - (x - xx).abs())
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            lin = idx[ok] * h * w + yy[ok].long() * w + xx[ok].long()
            flat.index_add_(0, lin, wgt[ok].to(canvas.dtype))
    return canvas


def _convolve_each(images: torch.Tensor, kernels: list[torch.Tensor]) -> torch.Tensor:
    """Convolve image ``i`` (all channels) with ``kernels[i]``, reflect padding, one grouped conv."""
    n, c, h, w = images.shape
    k = max(kk.shape[-1] for kk in kernels)
    half = k // 2
    if half >= min(h, w):
        raise ValueError(f"a blur kernel of size {k} needs images larger than {half} px, got {h}x{w}")
    weight = torch.zeros(n, k, k, dtype=images.dtype, device=images.device)
    for i, kk in enumerate(kernels):  # centre each (odd) kernel in the common k x k frame
        p = (k - kk.shape[-1]) // 2
        weight[i, p : p + kk.shape[-1], p : p + kk.shape[-1]] = kk.to(weight)
    weight = weight.flip(-2, -1).repeat_interleave(c, 0)[:, None]  # true convolution, not correlation
    padded = torch.nn.functional.pad(images.reshape(1, n * c, h, w), (half,) * 4, mode="reflect")
    return torch.nn.functional.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def defocus_blur(images: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Defocus: convolve each image with a :func:`disk_kernel` (reflect padding at the border).

    Args:
        images: ``Tensor[N, C, H, W]``.
        radius: the disk radius in pixels, one number or ``Tensor[N]`` (one per image).
    Returns:
        ``Tensor[N, C, H, W]`` (a convex combination of pixels: stays in [0, 1]).
    """
    _check_batch(images)
    r = _per_image(radius, images.shape[0], "radius")
    return _convolve_each(images, [disk_kernel(float(v)) for v in r])


def motion_blur(
    images: torch.Tensor, length: float | torch.Tensor, angle: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Linear motion blur: convolve each image with a :func:`motion_kernel` (reflect padding).

    Args:
        images: ``Tensor[N, C, H, W]``.
        length: the length of the motion in pixels, a number or ``Tensor[N]``.
        angle: its direction in degrees (0 = horizontal), a number or ``Tensor[N]``.
    """
    _check_batch(images)
    n = images.shape[0]
    ln = _per_image(length, n, "length")
    a = _per_image(angle, n, "angle", low=-math.inf)
    return _convolve_each(images, [motion_kernel(float(li), float(ai)) for li, ai in zip(ln, a, strict=True)])


def gaussian_noise(
    images: torch.Tensor, sigma: float | torch.Tensor, *, generator: torch.Generator | int | None = None
) -> torch.Tensor:
    """Additive white Gaussian noise of standard deviation ``sigma`` (number or ``Tensor[N]``), clipped
    to [0, 1]. ``generator``: a CPU ``torch.Generator`` or an int seed (default seed 0)."""
    _check_batch(images)
    s = _per_image(sigma, images.shape[0], "sigma").to(images.dtype)
    g = _as_generator(generator)
    eps = torch.randn(images.shape, generator=g, dtype=images.dtype).to(images.device)
    return (images + s.to(images.device)[:, None, None, None] * eps).clamp(0.0, 1.0)


def add_rain(
    images: torch.Tensor,
    *,
    streaks: int | torch.Tensor = 12,
    length: float | torch.Tensor = 6.0,
    alpha: float | torch.Tensor = 0.6,
    angle: float | torch.Tensor = 10.0,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Synthetic rain: thin bright streaks blended over each image.

    Per image, ``streaks`` segments of ``length`` pixels, slanted ``angle`` degrees from vertical, are
    drawn at random positions (antialiased, one pixel wide) into a mask ``m`` in [0, 1]; the image
    becomes ``x (1 - alpha m) + alpha m`` (white streaks of opacity ``alpha``). Every parameter is a
    number or a ``Tensor[N]``; ``generator`` (or an int seed) draws the positions.
    """
    _check_batch(images)
    n, _, h, w = images.shape
    count = _per_image(streaks, n, "streaks").round().long()
    ln = _per_image(length, n, "length")
    al = _per_image(alpha, n, "alpha")
    if (al > 1).any():
        raise ValueError(f"alpha must be in [0, 1], got max {float(al.max()):.4g}")
    theta = torch.deg2rad(_per_image(angle, n, "angle", low=-math.inf))
    g = _as_generator(generator)
    idx = torch.repeat_interleave(torch.arange(n), count)  # image of each streak
    cy = torch.rand(len(idx), generator=g, dtype=torch.float64) * h
    cx = torch.rand(len(idx), generator=g, dtype=torch.float64) * w
    steps = 4 * math.ceil(float(ln.max()) if n else 1.0) + 1
    t = torch.linspace(-0.5, 0.5, steps, dtype=torch.float64)[None, :] * ln[idx][:, None]
    y = (cy[:, None] + t * theta[idx].cos()[:, None]).reshape(-1)
    x = (cx[:, None] + t * theta[idx].sin()[:, None]).reshape(-1)
    mask = _splat(torch.zeros(n, h, w, dtype=torch.float64), idx.repeat_interleave(steps), y, x)
    # each step deposits mass 1; a streak crossing a pixel deposits ~4 per pixel of length
    mask = (mask / 4.0).clamp(0, 1).to(images.dtype).to(images.device)[:, None]
    a = al.to(images.dtype).to(images.device)[:, None, None, None] * mask
    return (images * (1 - a) + a).clamp(0.0, 1.0)


def degrade(
    images: torch.Tensor,
    kind: str,
    *,
    strength: float = 1.0,
    ranges: dict[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Apply one of :data:`DEGRADATIONS` with parameters drawn per image.

    Each parameter is drawn uniformly from its range in :data:`DEGRADATION_RANGES` (or ``ranges``,
    which overrides some of them) and the size parameters (radius, length, sigma, alpha) are then
    multiplied by ``strength``: 0 gives the clean image back, 1 the default problem, 0.5 a subtler one.

    Args:
        images: ``Tensor[N, 3, H, W]`` in [0, 1].
        kind: one of :data:`DEGRADATIONS`.
        strength: a factor >= 0 on the severity.
        ranges: ``name -> (low, high)`` overrides of the default ranges for ``kind``.
        seed: seeds the parameters and the noise and streak positions.
    Returns:
        ``(degraded, params)``: ``Tensor[N, 3, H, W]`` in [0, 1] and the drawn ``Tensor[N]`` per parameter.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"kind must be one of {DEGRADATIONS}, got {kind!r}")
    _check_batch(images)
    if not (isinstance(strength, int | float) and not isinstance(strength, bool) and strength >= 0):
        raise ValueError(f"strength must be a number >= 0, got {strength!r}")
    spec = dict(DEGRADATION_RANGES[kind])
    for name, rng in (ranges or {}).items():
        if name not in spec:
            raise ValueError(f"{kind} has parameters {tuple(spec)}, got a range for {name!r}")
        if len(rng) != 2 or not rng[0] <= rng[1]:
            raise ValueError(f"range for {name!r} must be (low, high) with low <= high, got {rng!r}")
        spec[name] = (float(rng[0]), float(rng[1]))
    n = images.shape[0]
    g = torch.Generator().manual_seed(seed)
    params = {
        name: lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
        for name, (lo, hi) in spec.items()
    }
    if "streaks" in params:
        params["streaks"] = params["streaks"].round()
    for name in ("radius", "length", "sigma", "alpha"):
        if name in params:
            params[name] = params[name] * strength
    if kind == "defocus_blur":
        out = defocus_blur(images, params["radius"])
    elif kind == "motion_blur":
        out = motion_blur(images, params["length"], params["angle"])
    elif kind == "noise":
        out = gaussian_noise(images, params["sigma"], generator=g)
    else:
        if (params["alpha"] > 1).any():
            raise ValueError("strength pushes the rain opacity above 1: lower strength or the alpha range")
        out = add_rain(images, generator=g, **params)
    return out.clamp(0.0, 1.0), params


def _scene_blocks(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    img = np.empty((3, size, size), dtype=np.float32)
    img[:] = rng.uniform(0.0, 1.0, size=(3, 1, 1))
    for _ in range(int(rng.integers(4, 8))):
        kind = int(rng.integers(3))
        cy, cx = rng.uniform(0, size, size=2)
        if kind == 0:  # axis-aligned rectangle
            hy, hx = rng.uniform(0.08, 0.3, size=2) * size
            m = (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)
        elif kind == 1:  # disk
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= (rng.uniform(0.08, 0.25) * size) ** 2
        else:  # a bar at a random angle
            a = rng.uniform(0, math.pi)
            d = np.abs((yy - cy) * math.cos(a) - (xx - cx) * math.sin(a))
            m = (d <= rng.uniform(0.7, 2.0)) & (np.hypot(yy - cy, xx - cx) <= rng.uniform(0.2, 0.5) * size)
        img[:, m] = rng.uniform(0.0, 1.0, size=(3, 1))
    return img


def _scene_stripes(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a, period = rng.uniform(0, math.pi), rng.uniform(4.0, 10.0)
    phase = ((yy * math.sin(a) + xx * math.cos(a)) / period + rng.uniform()) % 1.0
    on = (phase < rng.uniform(0.3, 0.7)).astype(np.float32)
    c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3, 1, 1)).astype(np.float32)
    return c0 * (1 - on) + c1 * on


def _scene_gradient(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi)
    t = ((yy - size / 2) * math.sin(a) + (xx - size / 2) * math.cos(a)) / size + 0.5
    c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3, 1, 1)).astype(np.float32)
    img = c0 + (c1 - c0) * np.clip(t, 0, 1)
    for _ in range(int(rng.integers(1, 4))):  # a few soft blobs
        cy, cx, s = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.1, 0.3) * size
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        img = img + rng.uniform(-0.4, 0.4, size=(3, 1, 1)) * bump
    return np.clip(img, 0, 1).astype(np.float32)


_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "china", "flower")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[torch.Tensor, ...]:
    """The photos of :func:`clean_scenes` (decoded once per process; callers only read them)."""
    return tuple(sample_image(name) for name in _PHOTOS)


def clean_scenes(n: int, size: int = 32, *, kind: str = "blocks", seed: int = 0) -> torch.Tensor:
    """``n`` clean RGB images to degrade, ``Tensor[n, 3, size, size]`` in [0, 1].

    - ``"blocks"``: a flat background under 4-7 sharp-edged rectangles, disks and thin bars of random
      colours (edges everywhere: what blur destroys);
    - ``"stripes"``: two-colour stripes of random period (4-10 px) and orientation;
    - ``"gradient"``: a smooth two-colour ramp with soft blobs (almost no edges: blur barely shows);
    - ``"photo"``: random crops of six bundled colour photos, shrunk 3-6 times (antialiased).

    Four kinds with different statistics, so that an experiment can tie a class to a source (the
    shortcut of chapter 15). Deterministic for a given ``seed``.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    rng = np.random.default_rng([seed, SCENE_KINDS.index(kind)])
    if kind == "photo":
        photos = _photos()
        out = torch.empty(n, 3, size, size)
        for i in range(n):
            p = photos[int(rng.integers(len(photos)))]
            crop = int(size * rng.uniform(3.0, 6.0))
            crop = min(crop, p.shape[1], p.shape[2])
            y0 = int(rng.integers(0, p.shape[1] - crop + 1))
            x0 = int(rng.integers(0, p.shape[2] - crop + 1))
            out[i] = torch.nn.functional.interpolate(
                p[None, :, y0 : y0 + crop, x0 : x0 + crop], size=(size, size), mode="bilinear", antialias=True
            )[0]
        return out.clamp(0.0, 1.0)
    make = {"blocks": _scene_blocks, "stripes": _scene_stripes, "gradient": _scene_gradient}[kind]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = np.zeros((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        out[i] = make(rng, size, yy, xx)
    return torch.from_numpy(out)


def degraded_images(
    counts: int | Sequence[int],
    size: int = 32,
    *,
    scenes: str | Sequence[str] = "blocks",
    strength: float = 1.0,
    ranges: dict[str, dict[str, tuple[float, float]]] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A labelled image-quality data set: clean scenes, each degraded by one of :data:`DEGRADATIONS`.

    Args:
        counts: images per class (one int for all, or one per class of :data:`DEGRADATIONS`: an
            imbalanced set like the report's).
        size: image side.
        scenes: the :func:`clean_scenes` kind for all classes, or one per class (tying a class to a
            source, as a data set assembled from one source per class does).
        strength: passed to :func:`degrade`.
        ranges: ``kind -> {parameter: (low, high)}`` overrides for :func:`degrade`.
        seed: seeds everything (scenes, parameters, noise).
    Returns:
        ``images``: ``Tensor[N, 3, size, size]`` in [0, 1]; ``labels``: ``Tensor[N]`` int64 indices into
        :data:`DEGRADATIONS`, in class order (shuffle or split with :func:`split_indices`).

    Introduced in chapter 15 (image-quality classification); chapter 19 restores such images.
    """
    k = len(DEGRADATIONS)
    per = (
        [counts] * k
        if isinstance(counts, int | np.integer) and not isinstance(counts, bool)
        else list(counts)
    )
    if len(per) != k or any(isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 0 for c in per):
        raise ValueError(f"counts must be an int >= 0 or {k} of them (one per class), got {counts!r}")
    kinds = [scenes] * k if isinstance(scenes, str) else list(scenes)
    if len(kinds) != k:
        raise ValueError(f"scenes must be one kind or {k} kinds (one per class), got {scenes!r}")
    ranges = ranges or {}
    bad = set(ranges) - set(DEGRADATIONS)
    if bad:
        raise ValueError(f"ranges keys must be among {DEGRADATIONS}, got {sorted(bad)}")
    xs, ys = [], []
    for c, (name, m, kind) in enumerate(zip(DEGRADATIONS, per, kinds, strict=True)):
        clean = clean_scenes(int(m), size, kind=kind, seed=seed * 1000 + c)
        if m:
            clean, _ = degrade(clean, name, strength=strength, ranges=ranges.get(name), seed=seed * 1000 + c)
        xs.append(clean)
        ys.append(torch.full((int(m),), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


__all__ += [
    "DEGRADATIONS",
    "DEGRADATION_RANGES",
    "SCENE_KINDS",
    "add_rain",
    "clean_scenes",
    "defocus_blur",
    "degrade",
    "degraded_images",
    "disk_kernel",
    "gaussian_noise",
    "motion_blur",
    "motion_kernel",
]


# --------------------------------------------------------------------------------------------
# rendered text: text lines with their strings and text scenes with word boxes (chapter 16)
# --------------------------------------------------------------------------------------------
#: Fonts :func:`render_text_lines` draws from: ``"default"`` is PIL's bundled font, the others are the
#: DejaVu files that ship with matplotlib (no system font is used, so every machine renders the same).
TEXT_FONTS = ("default", "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
#: Characters of the rendered strings unless told otherwise: digits and upper-case letters.
TEXT_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@functools.lru_cache(maxsize=64)
def _font(name: str, size: int):
    from PIL import ImageFont

    if name == "default":
        return ImageFont.load_default(size=size)
    import os

    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """Coefficients of PIL's PERSPECTIVE transform mapping output points ``dst`` to input points ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)).tolist())


@dataclass
class TextLines:
    """Rendered text lines: ``images`` ``(N, 1, H, W)`` in ``[0, 1]``, their ``texts`` and ``fonts`` indices."""

    images: torch.Tensor
    texts: list[str]
    fonts: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)


def _random_string(rng: np.random.Generator, chars: str, length: tuple[int, int]) -> str:
    k = int(rng.integers(length[0], length[1] + 1))
    return "".join(chars[i] for i in rng.integers(0, len(chars), size=k))


#: Letters of :func:`pseudo_words`: 11 consonants and 5 vowels.
PSEUDO_CONSONANTS = "BDGKLMNPRST"
PSEUDO_VOWELS = "AEIOU"


@functools.lru_cache(maxsize=1)
def _pseudo_syllables() -> tuple[tuple[str, ...], np.ndarray]:
    """The toy language's fixed syllable inventory (same on every call and machine) and its Zipf weights."""
    rng = np.random.default_rng(1234)
    open_syl = [c + v for c in PSEUDO_CONSONANTS for v in PSEUDO_VOWELS]
    closed_syl = [c + v + k for c in PSEUDO_CONSONANTS for v in PSEUDO_VOWELS for k in "NRS"]
    chosen = [open_syl[i] for i in rng.permutation(len(open_syl))[:40]]
    chosen += [closed_syl[i] for i in rng.permutation(len(closed_syl))[:24]]
    syllables = tuple(chosen[i] for i in rng.permutation(len(chosen)))
    w = 1.0 / np.arange(1, len(syllables) + 1)
    return syllables, w / w.sum()


def pseudo_words(n: int, *, syllables: tuple[int, int] = (2, 3), seed: int = 0) -> list[str]:
    """``n`` words of a toy language: each is 2 or 3 syllables drawn independently from a fixed inventory
    of 64 syllables (40 consonant-vowel, 24 consonant-vowel-consonant) with Zipf frequencies (the ``k``-th most frequent has
    weight ``1/k``). The strings have the structure a character language model can learn (a vowel
    follows a consonant, only N, R or S close a syllable, some syllables are far more frequent than
    others), unlike uniform random strings. Deterministic under ``seed``.
    """
    if n < 0 or not 1 <= syllables[0] <= syllables[1]:
        raise ValueError(f"need n >= 0 and 1 <= min <= max syllables, got n={n}, syllables={syllables}")
    inventory, weights = _pseudo_syllables()
    rng = np.random.default_rng(seed)
    counts = rng.integers(syllables[0], syllables[1] + 1, size=n)
    return ["".join(inventory[j] for j in rng.choice(len(inventory), size=int(k), p=weights)) for k in counts]


def render_text_lines(
    n: int,
    *,
    height: int = 32,
    width: int = 128,
    chars: str = TEXT_CHARS,
    length: tuple[int, int] = (3, 8),
    fonts: Sequence[str] = TEXT_FONTS,
    font_size: tuple[int, int] = (14, 20),
    shear: float = 0.25,
    warp: float = 0.0,
    noise: float = 0.1,
    texts: Sequence[str] | None = None,
    seed: int = 0,
) -> TextLines:
    """Render ``n`` random strings, one per ``height x width`` grey image (chapter 16's recognition data).

    Each image draws: a string of ``length`` characters from ``chars``, a font from ``fonts`` and a size
    in ``font_size`` (shrunk until the string fits), ink and background greys at least 0.35 apart (dark
    on light or light on dark), a horizontal background gradient, a random position, a horizontal shear
    up to ``shear``, an optional perspective warp (corners moved by up to ``warp`` of the height) and
    Gaussian noise of standard deviation ``noise``. With ``texts`` (``n`` strings, e.g. from
    :func:`pseudo_words`) those strings are drawn instead of random ones, and ``chars`` and ``length`` are
    ignored. Deterministic under ``seed``.
    """
    from PIL import Image, ImageDraw

    if n < 0 or height < 8 or width < 8:
        raise ValueError(f"need n >= 0 and an image of at least 8x8, got n={n}, {height}x{width}")
    if not 1 <= length[0] <= length[1]:
        raise ValueError(f"length must be (min, max) with 1 <= min <= max, got {length}")
    unknown = [f for f in fonts if f != "default" and f not in TEXT_FONTS]
    if unknown or not fonts:
        raise ValueError(f"fonts must be a non-empty subset of {TEXT_FONTS}, got {list(fonts)}")
    if texts is not None and (len(texts) != n or not all(texts)):
        raise ValueError(f"texts must hold n={n} non-empty strings, got {len(texts)}")
    given = texts
    rng = np.random.default_rng(seed)
    out = np.empty((n, height, width), np.float32)
    texts, font_ids = [], []
    xx = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    for i in range(n):
        text = _random_string(rng, chars, length) if given is None else str(given[i])
        fi = int(rng.integers(len(fonts)))
        size = int(rng.integers(font_size[0], font_size[1] + 1))
        while True:
            font = _font(fonts[fi], size)
            x0, y0, x1, y1 = font.getbbox(text)
            if (x1 - x0 <= width - 4 and y1 - y0 <= height - 2) or size <= 6:
                break
            size -= 1
        mask = Image.new("L", (width, height), 0)
        dx = int(rng.integers(0, max(width - (x1 - x0) - 1, 1)))
        dy = int(rng.integers(0, max(height - (y1 - y0) - 1, 1)))
        ImageDraw.Draw(mask).text((dx - x0, dy - y0), text, fill=255, font=font)
        s = float(rng.uniform(-shear, shear))
        if s:
            mask = mask.transform(
                mask.size, Image.AFFINE, (1, s, -s * height / 2, 0, 1, 0), resample=Image.BILINEAR
            )
        if warp > 0:
            corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], float)
            moved = corners + rng.uniform(-warp * height, warp * height, size=(4, 2))
            mask = mask.transform(
                mask.size, Image.PERSPECTIVE, _perspective_coeffs(corners, moved), resample=Image.BILINEAR
            )
        ink = np.asarray(mask, np.float32) / 255.0
        bg0, bg1 = rng.uniform(0.0, 1.0, size=2)
        bg = bg0 + (bg1 - bg0) * 0.5 * xx
        mean_bg = float(bg.mean())
        fg = (
            rng.uniform(0.0, max(mean_bg - 0.35, 0.0))
            if mean_bg > 0.5
            else rng.uniform(min(mean_bg + 0.35, 1.0), 1.0)
        )
        img = bg * (1 - ink) + fg * ink
        out[i] = img
        texts.append(text)
        font_ids.append(fi)
    images = torch.from_numpy(out)[:, None]
    if noise > 0:
        g = torch.Generator().manual_seed(seed)
        images = images + noise * torch.randn(images.shape, generator=g)
    return TextLines(images.clamp(0, 1), texts, torch.tensor(font_ids, dtype=torch.long))


@dataclass
class TextScenes:
    """Text scenes: ``images`` ``(N, 1, S, S)``, one word per image with its ink ``boxes`` ``(N, 4)``
    as ``(x1, y1, x2, y2)`` pixels (continuous convention) and its string in ``texts``."""

    images: torch.Tensor
    boxes: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def make_text_scenes(
    n: int,
    size: int = 64,
    *,
    chars: str = TEXT_CHARS,
    length: tuple[int, int] = (2, 5),
    font_size: tuple[int, int] = (10, 14),
    distractors: int = 3,
    noise: float = 0.1,
    seed: int = 0,
) -> TextScenes:
    """``n`` grey scenes, each with one rendered word and up to ``distractors`` random line segments.

    The word uses a random bundled font and size, and its box is the tight box around its ink. The lines
    are clutter a detector must learn to ignore: thin strokes with the ink's contrast. Deterministic
    under ``seed``.
    """
    from PIL import Image, ImageDraw

    if n < 0 or size < 24:
        raise ValueError(f"need n >= 0 and size >= 24, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.float32)
    boxes = np.empty((n, 4), np.float32)
    texts = []
    for i in range(n):
        text = _random_string(rng, chars, length)
        fname = TEXT_FONTS[int(rng.integers(len(TEXT_FONTS)))]
        fsize = int(rng.integers(font_size[0], font_size[1] + 1))
        while True:
            font = _font(fname, fsize)
            x0, y0, x1, y1 = font.getbbox(text)
            if x1 - x0 <= size - 4 or fsize <= 6:
                break
            fsize -= 1
        word = Image.new("L", (size, size), 0)
        dx = int(rng.integers(1, max(size - (x1 - x0) - 1, 2)))
        dy = int(rng.integers(1, max(size - (y1 - y0) - 1, 2)))
        ImageDraw.Draw(word).text((dx - x0, dy - y0), text, fill=255, font=font)
        ink = np.asarray(word, np.float32) / 255.0
        ys, xs = np.nonzero(ink > 0.25)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        clutter = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(clutter)
        for _ in range(int(rng.integers(0, distractors + 1))):
            p = rng.uniform(0, size, size=4)
            draw.line(tuple(p.tolist()), fill=255, width=1)
        lines = np.asarray(clutter, np.float32) / 255.0
        ink = np.maximum(ink, lines)
        bg = float(rng.uniform(0.0, 1.0))
        fg = rng.uniform(0.0, max(bg - 0.4, 0.0)) if bg > 0.5 else rng.uniform(min(bg + 0.4, 1.0), 1.0)
        out[i] = bg * (1 - ink) + fg * ink
        texts.append(text)
    images = torch.from_numpy(out)[:, None]
    if noise > 0:
        g = torch.Generator().manual_seed(seed)
        images = images + noise * torch.randn(images.shape, generator=g)
    return TextScenes(images.clamp(0, 1), torch.from_numpy(boxes), texts)


__all__ += [
    "PSEUDO_CONSONANTS",
    "PSEUDO_VOWELS",
    "TEXT_CHARS",
    "TEXT_FONTS",
    "TextLines",
    "TextScenes",
    "make_text_scenes",
    "pseudo_words",
    "render_text_lines",
]


# --------------------------------------------------------------------------------------------
# free-form inpainting masks (chapter 19)
# --------------------------------------------------------------------------------------------
def free_form_masks(
    n: int,
    size: int = 32,
    *,
    strokes: tuple[int, int] = (1, 3),
    vertices: tuple[int, int] = (2, 4),
    width: tuple[float, float] = (0.06, 0.12),
    length: tuple[float, float] = (0.15, 0.35),
    seed: int = 0,
) -> torch.Tensor:
    """Free-form "brush stroke" hole masks as in DeepFill v2 (Yu et al., 2019): ``1`` = hole, ``0`` = known.

    Each mask draws a number of strokes in ``strokes``; a stroke starts at a random point and runs through
    ``vertices`` segments, each at a random angle and of a random ``length`` (a fraction of ``size``),
    drawn as a line of ``width`` (a fraction of ``size``) with a disk at every joint so that the turns
    are round. Deterministic under ``seed``.

    Returns:
        ``Tensor[n, 1, size, size]`` float32 with values in {0, 1}.

    Introduced in chapter 19 (inpainting). The opposite convention (1 = valid) is ``1 - mask``.
    """
    from PIL import Image, ImageDraw

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an int >= 4, got {size!r}")
    for name, (lo, hi) in (
        ("strokes", strokes),
        ("vertices", vertices),
        ("width", width),
        ("length", length),
    ):
        if not 0 <= lo <= hi:
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)!r}")
    rng = np.random.default_rng([seed, 19])
    out = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(strokes[0], strokes[1] + 1))):
            x, y = rng.uniform(0, size, size=2)
            w = max(1, int(round(rng.uniform(*width) * size)))
            r = w / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
            for _ in range(int(rng.integers(vertices[0], vertices[1] + 1))):
                a = rng.uniform(0, 2 * math.pi)
                step = rng.uniform(*length) * size
                nx = float(np.clip(x + step * math.cos(a), 0, size - 1))
                ny = float(np.clip(y + step * math.sin(a), 0, size - 1))
                draw.line((x, y, nx, ny), fill=255, width=w)
                draw.ellipse((nx - r, ny - r, nx + r, ny + r), fill=255)
                x, y = nx, ny
        out[i, 0] = np.asarray(img, dtype=np.float32) > 127
    return torch.from_numpy(out)


__all__ += ["free_form_masks"]
