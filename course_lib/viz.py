"""Plotting helpers with one shared style: image grids, masks, boxes and training curves.

Introduced in chapter 00 (introduction). Every figure in the course takes its colours from
:data:`PALETTE` so that, for example, "train" and "validation" look the same in every chapter.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "MASK_COLORS",
    "PALETTE",
    "ROLE_COLORS",
    "color",
    "draw_boxes",
    "mask_to_rgb",
    "plot_curves",
    "plot_history",
    "show_images",
    "use_style",
]

#: The course's qualitative palette (colour-blind friendly, Okabe-Ito order).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

#: Fixed colours for recurring roles, so they match across chapters.
ROLE_COLORS = {"train": PALETTE[0], "val": PALETTE[1], "test": PALETTE[2], "reference": "#555555"}


def color(key: int | str) -> str:
    """A palette colour by index (wrapping) or by role name (``train``, ``val``, ``test``, ``reference``)."""
    if isinstance(key, str):
        if key not in ROLE_COLORS:
            raise ValueError(f"unknown role {key!r}; roles are {tuple(ROLE_COLORS)}")
        return ROLE_COLORS[key]
    try:
        index = operator.index(key)  # int, NumPy integer, integer 0-d tensor; not float
    except TypeError:
        raise TypeError(f"key must be an int index or a role name, got {key!r}") from None
    return PALETTE[index % len(PALETTE)]


def use_style() -> None:
    """Apply the course's matplotlib style (called by :func:`course_lib.runtime.setup`)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 80,
            "savefig.dpi": 100,
            "axes.prop_cycle": mpl.cycler(color=PALETTE),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": "medium",
            "image.cmap": "gray",
            "legend.frameon": False,
            "figure.constrained_layout.use": True,
            "svg.hashsalt": "course",
        }
    )


def _to_numpy_image(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu()
        is_uint8 = img.dtype == torch.uint8
        img = img.float().numpy()
    else:
        img = np.asarray(img)
        is_uint8 = img.dtype == np.uint8
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and is_uint8:
        img = img / 255.0  # 8-bit colour images are shown as they would be saved
    if img.ndim not in (2, 3):
        raise ValueError(f"an image must be [H, W], [C, H, W] or [H, W, C], got shape {img.shape}")
    return img


def show_images(
    images,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    size: float = 1.3,
    suptitle: str | None = None,
):
    """Show images in a grid; returns the figure.

    Args:
        images: ``Tensor[N, C, H, W]`` / ``[N, H, W]``, or a list of images ``[C, H, W]``, ``[H, W, C]``
            or ``[H, W]`` (tensors or arrays). Colour images must be in [0, 1] (values outside are
            clipped), or uint8 in 0..255.
        titles: one title per image.
        ncols: images per row.
        cmap, vmin, vmax: for single-channel images.
        size: inches per image.
    """
    if isinstance(ncols, bool) or not isinstance(ncols, int | np.integer) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    imgs = [_to_numpy_image(im) for im in images]
    if not imgs:
        raise ValueError("images is empty")
    if titles is not None and len(titles) != len(imgs):
        raise ValueError(f"got {len(titles)} titles for {len(imgs)} images")
    ncols = max(1, min(ncols, len(imgs)))
    nrows = math.ceil(len(imgs) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, im) in enumerate(zip(axes.flat, imgs, strict=False)):
        if im.ndim == 3:
            ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
        else:
            ax.imshow(im, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


#: Colours of mask labels 1, 2, ... (the palette without black, which is the background's).
MASK_COLORS = tuple(c for c in PALETTE if c != "#000000")


def mask_to_rgb(mask, num_classes: int | None = None) -> np.ndarray:
    """Colour a label mask ``[H, W]``; returns ``[H, W, 3]`` float32 RGB in [0, 1].

    Introduced in chapter 00. Label 0 (background) is black and label ``k >= 1`` gets
    ``MASK_COLORS[(k - 1) % 7]``, i.e. ``PALETTE[k - 1]`` for ``k <= 7`` (black is skipped so that no
    class looks like the background).

    Args:
        mask: ``Tensor[H, W]`` or array of integer labels (bool, or floats holding whole numbers).
        num_classes: number of labels including the background (default: ``mask.max() + 1``).
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {m.shape}")
    if m.dtype.kind not in "biuf" or (m.dtype.kind == "f" and not np.array_equal(m, np.round(m))):
        raise ValueError(f"mask must hold integer labels, got dtype {m.dtype}")
    m = m.astype(np.int64)
    if m.size and m.min() < 0:
        raise ValueError(f"mask labels must be >= 0, got min {m.min()}")
    n = int(num_classes if num_classes is not None else (m.max() + 1 if m.size else 1))
    if n < 1 or (m.size and m.max() >= n):
        raise ValueError(f"num_classes must be > mask.max() = {m.max() if m.size else 0}, got {num_classes}")
    table = np.zeros((n, 3), dtype=np.float32)
    for k in range(1, n):
        table[k] = mpl.colors.to_rgb(MASK_COLORS[(k - 1) % len(MASK_COLORS)])
    return table[m]


def draw_boxes(
    ax,
    boxes,
    labels: Sequence[str] | None = None,
    *,
    scores: Sequence[float] | torch.Tensor | None = None,
    color_index: Sequence[int] | None = None,
    linewidth: float = 1.5,
    linestyle: str = "-",
) -> None:
    """Draw ``(x1, y1, x2, y2)`` pixel boxes ``Tensor[K, 4]`` on a matplotlib axis, with optional labels.

    Introduced in chapter 00. Coordinates are in pixels with ``x2``/``y2`` exclusive (as
    :class:`course_lib.data.Shapes` boxes): on an ``imshow`` axis, whose pixel ``j`` spans
    ``[j - 0.5, j + 0.5]``, the rectangle starts at ``(x1 - 0.5, y1 - 0.5)`` and is ``x2 - x1`` wide.
    Box ``k`` gets ``color(color_index[k])`` (default ``color(k)``). With ``scores`` (chapter 08), each
    box's tag reads ``"label 0.97"`` (or just the score); ``linestyle`` (``"--"``, ``":"``) tells sets of
    boxes apart, e.g. predictions from ground truth.
    """
    b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes, dtype=float)
    if b.size == 0:
        return
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [K, 4], got shape {b.shape}")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().tolist()
    for name, seq in (("labels", labels), ("scores", scores), ("color_index", color_index)):
        if seq is not None and len(seq) != len(b):
            raise ValueError(f"{name} must have one entry per box ({len(b)}), got {len(seq)}")
    for k, (x1, y1, x2, y2) in enumerate(b):
        c = color(color_index[k] if color_index is not None else k)
        # pixel (i, j) covers [j, j+1) x [i, i+1); imshow centres pixels on integers
        ax.add_patch(
            mpl.patches.Rectangle(
                (x1 - 0.5, y1 - 0.5),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=c,
                linewidth=linewidth,
                linestyle=linestyle,
            )
        )
        tag = [str(labels[k])] if labels is not None else []
        if scores is not None:
            tag.append(f"{float(scores[k]):.2f}")
        if tag:
            ax.text(
                x1 - 0.5,
                y1 - 0.7,
                " ".join(tag),
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": c, "pad": 1, "linewidth": 0},
            )


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "epoch",
    ylabel: str = "",
    title: str | None = None,
    ax=None,
    logy: bool = False,
    x: Sequence[float] | None = None,
):
    """Plot named curves on one axis; returns the axis.

    Introduced in chapter 00. A curve whose name starts with a role (``train``, ``val``, ``test``,
    ``reference``, e.g. ``"val_acc"``) gets the role's fixed colour; the other curves take the
    palette in order, skipping the colours of the roles on the same axis.
    """
    if not curves:
        raise ValueError("curves is empty")
    if ax is None:
        _, ax = plt.subplots()
    roles = [ROLE_COLORS.get(name.split("_")[0]) for name in curves]
    free = [c for c in PALETTE if c not in roles]
    others = 0
    for (name, ys), role_color in zip(curves.items(), roles, strict=True):
        ys = [float(v) for v in ys]
        xs = list(x) if x is not None else list(range(1, len(ys) + 1))
        if len(xs) != len(ys):
            raise ValueError(f"x has {len(xs)} values but curve {name!r} has {len(ys)}")
        if role_color is not None:
            c = role_color
        else:
            c, others = free[others % len(free)], others + 1
        ax.plot(xs, ys, label=name, color=c, marker="o" if len(ys) <= 30 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_history(history, keys: Sequence[str] | None = None, *, title: str | None = None):
    """Training curves from a :class:`course_lib.train.History`: one panel per metric, train vs val.

    ``keys`` are metric names without the split prefix (default: all, e.g. ``["loss", "acc"]``).
    """
    names = list(keys) if keys is not None else history.metric_names()
    if not names:
        raise ValueError("history has no recorded metrics")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        curves = {
            f"{split}_{name}": history[f"{split}_{name}"]
            for split in ("train", "val")
            if f"{split}_{name}" in history
        }
        if not curves:
            raise ValueError(f"no metric {name!r} in history; it has {history.keys()}")
        plot_curves(curves, ylabel=name, ax=ax)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# architecture diagrams (chapters 06-08 first; reused for later models)
# --------------------------------------------------------------------------------------------
#: Fill colours of diagram blocks by kind, so a convolution looks the same in every chapter.
BLOCK_COLORS = {
    "io": "#FFFFFF",
    "conv": "#CFE3F2",
    "norm": "#E5E5E5",
    "act": "#FBE3BF",
    "pool": "#D6EFE4",
    "up": "#F6D3C2",
    "linear": "#EAD7E6",
    "attention": "#D7ECF8",
    "head": "#FFF6C7",
    "op": "#FFFFFF",
    "other": "#F2F2F2",
}


def diagram(
    blocks: Mapping[str, tuple],
    edges: Sequence[tuple],
    *,
    ax=None,
    title: str | None = None,
    block_size: tuple[float, float] = (1.8, 0.62),
    fontsize: float = 8.5,
):
    """Draw a model's architecture as labelled blocks joined by arrows, on a grid you lay out.

    Args:
        blocks: ``name -> (x, y, label)`` or ``(x, y, label, kind)``: centre of the block in grid
            units (``y`` grows upwards), its text (``\\n`` for lines, e.g. ``"conv 3×3\\n64 → 64"``) and
            its kind, one of :data:`BLOCK_COLORS` (default ``"other"``). Kind ``"op"`` draws a small
            circle for an operator such as ``+`` (a residual sum) or ``c`` (concatenation).
        edges: ``(src, dst)`` or ``(src, dst, style)`` with style ``"-"`` (data flow, default),
            ``"skip"`` (a curved skip connection) or ``"--"`` (dashed: a loss, a copy, a target), or
            ``(src, dst, style, label)`` to write a label (a shape, say) at the middle of the arrow.
        ax: the axes to draw on (a new figure when ``None``).
        title: the axes title.
        block_size: width and height of a block in grid units.
    Returns:
        The matplotlib ``Axes``.

    Introduced in chapter 06 (residual and Inception blocks); used for every model the course builds.
    """
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    if not isinstance(blocks, Mapping) or not blocks:
        raise ValueError("blocks must be a non-empty mapping name -> (x, y, label[, kind])")
    parsed = {}
    for name, spec in blocks.items():
        if not isinstance(spec, tuple | list) or len(spec) not in (3, 4):
            raise ValueError(f"block {name!r} must be (x, y, label) or (x, y, label, kind), got {spec!r}")
        x, y, label, *rest = spec
        kind = rest[0] if rest else "other"
        if kind not in BLOCK_COLORS:
            raise ValueError(f"block {name!r}: unknown kind {kind!r}; kinds are {tuple(BLOCK_COLORS)}")
        parsed[name] = (float(x), float(y), str(label), kind)
    w, h = block_size
    if ax is None:
        xs = [p[0] for p in parsed.values()]
        ys = [p[1] for p in parsed.values()]
        width = (max(xs) - min(xs) + w + 0.6) * 0.95
        height = (max(ys) - min(ys) + h + 0.8) * 0.95
        _, ax = plt.subplots(figsize=(min(max(width, 3.0), 14.0), min(max(height, 1.6), 12.0)))

    def extent(name):
        x, y, _, kind = parsed[name]
        return (0.22, 0.22) if kind == "op" else (w / 2, h / 2)

    for x, y, label, kind in parsed.values():
        if kind == "op":
            ax.add_patch(Circle((x, y), 0.22, facecolor="white", edgecolor="#333333", lw=1.0, zorder=3))
        else:
            ax.add_patch(
                FancyBboxPatch(
                    (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                    facecolor=BLOCK_COLORS[kind], edgecolor="#333333", lw=0.9, zorder=3,
                )
            )  # fmt: skip
        ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, zorder=4)

    extra: list[tuple[float, float]] = []  # where curved arrows and their labels reach
    for edge in edges:
        if not isinstance(edge, tuple | list) or not 2 <= len(edge) <= 4:
            raise ValueError(f"an edge must be (src, dst[, style[, label]]), got {edge!r}")
        src, dst, style, label = (*edge, "-", None)[:4] if len(edge) == 2 else (*edge, None)[:4]
        for end in (src, dst):
            if end not in parsed:
                raise ValueError(f"edge {edge!r} names an unknown block {end!r}")
        if style not in ("-", "skip", "--"):
            raise ValueError(f"edge style must be '-', 'skip' or '--', got {style!r}")
        (x0, y0), (x1, y1) = parsed[src][:2], parsed[dst][:2]
        # leave each block through the side that faces the other one
        (ex0, ey0), (ex1, ey1) = extent(src), extent(dst)
        dx, dy = x1 - x0, y1 - y0
        if abs(dx) * (ey0 + ey1) >= abs(dy) * (ex0 + ex1):
            start, end = (x0 + math.copysign(ex0, dx), y0), (x1 - math.copysign(ex1, dx), y1)
        else:
            start, end = (x0, y0 + math.copysign(ey0, dy)), (x1, y1 - math.copysign(ey1, dy))
        if style == "skip":
            start, end = (x0, y0 + ey0), (x1, y1 + ey1)
            if abs(dy) > abs(dx):
                start, end = (x0 + ex0, y0), (x1 + ex1, y1)
        rad = -0.25 if style == "skip" else 0.0
        arrow = FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=10, lw=1.1, color="#333333", zorder=2,
            linestyle="--" if style == "--" else "-", connectionstyle=f"arc3,rad={rad}",
        )  # fmt: skip
        ax.add_patch(arrow)
        # the middle of matplotlib's arc3 curve: half the control point's offset from the chord
        ddx, ddy = end[0] - start[0], end[1] - start[1]
        mid = ((start[0] + end[0]) / 2 + 0.5 * rad * ddy, (start[1] + end[1]) / 2 - 0.5 * rad * ddx)
        extra.append(mid)
        if label:
            ax.text(
                mid[0], mid[1] + 0.06, str(label), ha="center", va="bottom", fontsize=fontsize - 1.5,
                color="#444444", zorder=4,
            )  # fmt: skip

    xs = [p[0] for p in parsed.values()]
    ys = [p[1] for p in parsed.values()]
    ex = [p[0] for p in extra]
    ey = [p[1] for p in extra]
    ax.set_xlim(min(xs + ex) - w / 2 - 0.3, max(xs + ex) + w / 2 + 0.3)
    ax.set_ylim(min(ys) - h / 2 - 0.4, max([*ys, *(y - h / 2 for y in ey)]) + h / 2 + 0.4)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def chain_diagram(
    layers: Sequence[str | tuple[str, str]],
    *,
    skips: Sequence[tuple[int, int]] = (),
    vertical: bool = False,
    ax=None,
    title: str | None = None,
    spacing: float = 2.3,
    **kwargs,
):
    """A sequential model as a row (or column) of blocks, with optional skip connections.

    Args:
        layers: per block its label, or ``(label, kind)`` (kinds as in :func:`diagram`).
        skips: ``(i, j)`` pairs: a skip connection from block ``i`` to block ``j`` (``i < j``).
        vertical: stack the blocks top to bottom instead of left to right.
        spacing: distance between block centres.
        kwargs: passed on to :func:`diagram`.

    Introduced in chapter 06.
    """
    if not layers:
        raise ValueError("layers must hold at least one block")
    blocks = {}
    for i, layer in enumerate(layers):
        label, kind = (layer, "other") if isinstance(layer, str) else layer
        pos = (0.0, -i * spacing * 0.45) if vertical else (i * spacing, 0.0)
        blocks[f"b{i}"] = (*pos, label, kind)
    edges = [(f"b{i}", f"b{i + 1}") for i in range(len(layers) - 1)]
    for i, j in skips:
        if not 0 <= i < j < len(layers):
            raise ValueError(f"skip ({i}, {j}) must join blocks 0 <= i < j < {len(layers)}")
        edges.append((f"b{i}", f"b{j}", "skip"))
    return diagram(blocks, edges, ax=ax, title=title, **kwargs)


__all__ += ["BLOCK_COLORS", "chain_diagram", "diagram"]
