"""course_lib.viz: image grids, mask colours, boxes, curves and the shared palette."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex, to_rgb, to_rgba

from course_lib import train, viz


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# ------------------------------------------------------------------------------------------ color
def test_color_by_index_wraps_and_by_role():
    assert viz.color(0) == viz.PALETTE[0] and viz.color(3) == viz.PALETTE[3]
    assert viz.color(len(viz.PALETTE)) == viz.PALETTE[0]
    assert viz.color(len(viz.PALETTE) + 2) == viz.PALETTE[2] and viz.color(-1) == viz.PALETTE[-1]
    assert viz.color(np.int64(1)) == viz.PALETTE[1] and viz.color(torch.tensor(9)) == viz.PALETTE[1]
    assert viz.color("train") == viz.PALETTE[0] and viz.color("val") == viz.PALETTE[1]
    assert viz.color("test") == viz.PALETTE[2] and viz.color("reference") == "#555555"
    assert len(set(viz.PALETTE)) == len(viz.PALETTE) == 8
    with pytest.raises(ValueError, match="unknown role 'training'"):
        viz.color("training")
    with pytest.raises(TypeError, match="key must be"):
        viz.color(1.5)


# ------------------------------------------------------------------------------------ show_images
def test_show_images_tensor_nchw_grid(generator):
    images = torch.rand(10, 3, 6, 5, generator=generator)
    fig = viz.show_images(images, ncols=4)
    assert len(fig.axes) == 12  # 3 rows of 4
    shown = _image_axes(fig)
    assert len(shown) == 10
    assert all(not ax.axison for ax in fig.axes)
    np.testing.assert_allclose(shown[3].images[0].get_array(), images[3].permute(1, 2, 0).numpy())


def test_show_images_grey_nhw_titles_and_cmap(generator):
    images = torch.rand(3, 7, 7, generator=generator) * 5
    fig = viz.show_images(images, ["a", "b", "c"], vmin=0, vmax=5, suptitle="grey")
    shown = _image_axes(fig)
    assert len(fig.axes) == 3 and [ax.get_title() for ax in shown] == ["a", "b", "c"]
    im = shown[1].images[0]
    assert im.get_cmap().name == "gray" and im.get_clim() == (0, 5)
    np.testing.assert_allclose(im.get_array(), images[1].numpy())
    assert fig._suptitle.get_text() == "grey"
    # a [N, 1, H, W] batch is shown as grey images too
    fig1 = viz.show_images(images[:, None] / 5)
    assert _image_axes(fig1)[0].images[0].get_array().shape == (7, 7)


def test_show_images_list_of_hwc_arrays_and_clipping():
    rng = np.random.default_rng(0)
    imgs = [rng.uniform(-0.5, 1.5, size=(4, 6, 3)) for _ in range(2)] + [rng.uniform(size=(5, 5))]
    fig = viz.show_images(imgs, ncols=8)
    shown = _image_axes(fig)
    assert len(fig.axes) == 3 and len(shown) == 3
    np.testing.assert_allclose(shown[0].images[0].get_array(), np.clip(imgs[0], 0, 1), rtol=1e-6)
    # 8-bit colour images are scaled to [0, 1] instead of being clipped to white
    u8 = torch.tensor([[[0, 128, 255, 255]]], dtype=torch.uint8).expand(3, 2, 4)
    arr = _image_axes(viz.show_images([u8]))[0].images[0].get_array()
    assert arr.shape == (2, 4, 3)
    np.testing.assert_allclose(arr[0, :, 0], [0, 128 / 255, 1, 1], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"images": []}, "empty"), ({"images": torch.zeros(2, 4, 4), "titles": ["x"]}, "1 titles for 2 images"),
     ({"images": [torch.zeros(2, 2, 2, 2)]}, "an image must be"), ({"images": torch.zeros(2, 4, 4), "ncols": 0}, "ncols")],
)  # fmt: skip
def test_show_images_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.show_images(**kwargs)


# ------------------------------------------------------------------------------------ mask_to_rgb
def test_mask_to_rgb_colours():
    mask = torch.tensor([[0, 1, 2], [3, 0, 7]])
    rgb = viz.mask_to_rgb(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [0, 0, 0])
    for (i, j), k in {(0, 1): 1, (0, 2): 2, (1, 0): 3, (1, 2): 7}.items():
        np.testing.assert_allclose(rgb[i, j], to_rgb(viz.PALETTE[k - 1]), err_msg=f"class {k}")
    # numpy input, bool masks and float masks of whole numbers are accepted
    np.testing.assert_array_equal(viz.mask_to_rgb(mask.numpy()), rgb)
    np.testing.assert_array_equal(viz.mask_to_rgb(mask.float()), rgb)
    np.testing.assert_allclose(viz.mask_to_rgb(mask > 0)[0, 1], to_rgb(viz.PALETTE[0]))


def test_mask_to_rgb_never_colours_a_class_like_the_background():
    # PALETTE[7] is black: class 8 used to be drawn black, exactly like the background
    mask = np.arange(20).reshape(4, 5)
    rgb = viz.mask_to_rgb(mask)
    assert (rgb[mask > 0].sum(-1) > 0).all()
    np.testing.assert_allclose(rgb.reshape(-1, 3)[8], to_rgb(viz.MASK_COLORS[7 % 7]))
    assert viz.mask_to_rgb(np.zeros((2, 2), dtype=int), num_classes=4).sum() == 0


@pytest.mark.parametrize(
    "mask, kwargs, match",
    [(np.zeros((2, 2, 2), dtype=int), {}, r"\[H, W\]"), (np.array([[0, -1]]), {}, ">= 0"),
     (np.array([[0.5, 1.0]]), {}, "integer labels"), (np.array([[0, 3]]), {"num_classes": 3}, "num_classes")],
)  # fmt: skip
def test_mask_to_rgb_rejects_bad_input(mask, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.mask_to_rgb(mask, **kwargs)


# ------------------------------------------------------------------------------------- draw_boxes
def test_draw_boxes_geometry_colours_and_labels():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((20, 20)))
    boxes = torch.tensor([[2.0, 3.0, 7.0, 11.0], [0.0, 0.0, 20.0, 20.0]])
    viz.draw_boxes(ax, boxes, ["circle", "square"], color_index=[4, 1], linewidth=2)
    rects = [p for p in ax.patches if isinstance(p, mpl.patches.Rectangle)]
    assert len(rects) == 2
    r = rects[0]
    # pixel j spans [j - 0.5, j + 0.5] in imshow coordinates; x2, y2 are exclusive
    assert r.get_xy() == (1.5, 2.5) and r.get_width() == 5 and r.get_height() == 8
    assert rects[1].get_xy() == (-0.5, -0.5) and rects[1].get_width() == 20
    assert to_hex(r.get_edgecolor()) == viz.PALETTE[4].lower() and not r.get_fill()
    assert r.get_linewidth() == 2
    assert [t.get_text() for t in ax.texts] == ["circle", "square"]
    assert to_rgba(ax.texts[1].get_bbox_patch().get_facecolor()) == to_rgba(viz.PALETTE[1])


def test_draw_boxes_default_colours_empty_and_bad_input():
    _, ax = plt.subplots()
    viz.draw_boxes(ax, np.array([[0, 0, 1, 1], [1, 1, 2, 2], [0, 0, 2, 2]]))
    assert [to_hex(p.get_edgecolor()) for p in ax.patches] == [c.lower() for c in viz.PALETTE[:3]]
    assert not ax.texts
    viz.draw_boxes(ax, torch.zeros(0, 4))
    assert len(ax.patches) == 3
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        viz.draw_boxes(ax, torch.zeros(3))
    with pytest.raises(ValueError, match="labels must have one entry per box"):
        viz.draw_boxes(ax, torch.zeros(2, 4), ["a"])
    with pytest.raises(ValueError, match="color_index"):
        viz.draw_boxes(ax, torch.zeros(2, 4), color_index=[0, 1, 2])


def test_draw_boxes_scores_and_linestyle():
    _, ax = plt.subplots()
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]])
    viz.draw_boxes(ax, boxes, ["circle", "square"], scores=torch.tensor([0.973, 0.5]), linestyle="--")
    assert [t.get_text() for t in ax.texts] == ["circle 0.97", "square 0.50"]
    assert all(p.get_linestyle() == "--" for p in ax.patches)
    _, ax = plt.subplots()
    viz.draw_boxes(ax, boxes, scores=[0.25, 1.0])
    assert [t.get_text() for t in ax.texts] == ["0.25", "1.00"]
    with pytest.raises(ValueError, match="scores must have one entry per box"):
        viz.draw_boxes(ax, boxes, scores=[0.1])


# ------------------------------------------------------------------------------------ plot_curves
def test_plot_curves_role_colours_and_data():
    ax = viz.plot_curves({"val_loss": [3, 2, 1.5], "train_loss": [3, 1, 0.5]}, ylabel="loss", title="t")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert to_hex(lines["train_loss"].get_color()) == viz.color("train").lower()
    assert to_hex(lines["val_loss"].get_color()) == viz.color("val").lower()
    np.testing.assert_array_equal(lines["train_loss"].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines["val_loss"].get_ydata(), [3, 2, 1.5])
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["val_loss", "train_loss"]


def test_plot_curves_other_names_take_free_palette_colours():
    ax = viz.plot_curves({"sgd": [1, 2], "adam": [2, 3]}, x=[10, 20], logy=True)
    assert [to_hex(ln.get_color()) for ln in ax.get_lines()] == [c.lower() for c in viz.PALETTE[:2]]
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [10, 20])
    assert ax.get_yscale() == "log"
    # next to a "val" curve another curve must not get the val colour (PALETTE[1])
    ax = viz.plot_curves({"val": [1, 2], "ours": [2, 3], "baseline": [1, 1]})
    colors = [to_hex(ln.get_color()) for ln in ax.get_lines()]
    assert colors == [viz.PALETTE[1].lower(), viz.PALETTE[0].lower(), viz.PALETTE[2].lower()]
    assert len(set(colors)) == 3


def test_plot_curves_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        viz.plot_curves({})
    with pytest.raises(ValueError, match="x has 3 values"):
        viz.plot_curves({"a": [1, 2]}, x=[1, 2, 3])


# ---------------------------------------------------------------------------------- plot_history
def _history():
    h = train.History()
    for e in range(4):
        h.append({"train_loss": 1 / (e + 1), "train_acc": e / 4, "val_loss": 1.2 / (e + 1), "val_acc": e / 5,
                  "lr": 0.1, "time": 0.01})  # fmt: skip
    return h


def test_plot_history_one_panel_per_metric():
    h = _history()
    fig = viz.plot_history(h, title="run")
    assert len(fig.axes) == 2 and fig._suptitle.get_text() == "run"
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "acc"
    lines = {ln.get_label(): ln for ln in acc_ax.get_lines()}
    assert set(lines) == {"train_acc", "val_acc"}
    np.testing.assert_allclose(lines["val_acc"].get_ydata(), h["val_acc"])
    assert to_hex(lines["val_acc"].get_color()) == viz.color("val").lower()
    # a subset of metrics, and the History.plot shortcut
    fig2 = h.plot(["acc"])
    assert len(fig2.axes) == 1 and fig2.axes[0].get_ylabel() == "acc"


def test_plot_history_rejects_missing_metrics():
    with pytest.raises(ValueError, match="no recorded metrics"):
        viz.plot_history(train.History())
    with pytest.raises(ValueError, match="no metric 'iou'"):
        viz.plot_history(_history(), ["iou"])


def test_use_style_sets_the_palette():
    with mpl.rc_context():
        viz.use_style()
        assert list(mpl.rcParams["axes.prop_cycle"].by_key()["color"]) == list(viz.PALETTE)
        assert mpl.rcParams["image.cmap"] == "gray" and not mpl.rcParams["axes.spines.top"]


# ------------------------------------------------------------------------------- diagrams
def test_diagram_draws_blocks_operators_arrows_and_labels():
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    ax = viz.diagram(
        {
            "x": (0, 0, "x", "io"),
            "conv": (2.3, 0, "conv 3×3", "conv"),
            "add": (4.0, 0, "+", "op"),
            "y": (5.6, 0, "y", "io"),
        },
        [("x", "conv"), ("conv", "add"), ("x", "add", "skip", "identity"), ("add", "y", "-", "64×8×8")],
        title="residual",
    )
    patches = ax.patches
    assert sum(isinstance(p, FancyBboxPatch) for p in patches) == 3
    assert sum(isinstance(p, Circle) for p in patches) == 1
    assert sum(isinstance(p, FancyArrowPatch) for p in patches) == 4
    texts = [t.get_text() for t in ax.texts]
    assert {"x", "conv 3×3", "+", "y", "identity", "64×8×8"} <= set(texts)
    boxes = [p for p in patches if isinstance(p, FancyBboxPatch)]
    assert boxes[1].get_facecolor()[:3] == pytest.approx(mpl.colors.to_rgb(viz.BLOCK_COLORS["conv"]))
    # the skip connection arcs above the row and stays inside the axes, with its label
    label = next(t for t in ax.texts if t.get_text() == "identity")
    assert label.get_position()[1] > 0.62 / 2 and label.get_position()[1] < ax.get_ylim()[1]
    assert ax.get_title() == "residual" and not ax.axison
    plt.close("all")


def test_chain_diagram_lays_out_a_sequence_with_skips():
    ax = viz.chain_diagram(["in", ("conv", "conv"), ("pool", "pool"), ("fc", "linear")], skips=[(0, 2)])
    centres = sorted((t.get_position()[0], t.get_text()) for t in ax.texts)
    assert [c[1] for c in centres] == ["in", "conv", "pool", "fc"]
    vertical = viz.chain_diagram(["a", "b", "c"], vertical=True)
    ys = [t.get_position()[1] for t in vertical.texts]
    assert ys == sorted(ys, reverse=True)
    plt.close("all")


@pytest.mark.parametrize(
    "blocks, edges, match",
    [
        ({}, [], "non-empty mapping"),
        ({"a": (0, 0)}, [], "must be \\(x, y, label\\)"),
        ({"a": (0, 0, "a", "gpu")}, [], "unknown kind 'gpu'"),
        ({"a": (0, 0, "a")}, [("a", "b")], "unknown block 'b'"),
        ({"a": (0, 0, "a"), "b": (1, 0, "b")}, [("a", "b", "zigzag")], "edge style"),
        ({"a": (0, 0, "a")}, [("a",)], "an edge must be"),
    ],
)
def test_diagram_rejects_bad_input(blocks, edges, match):
    with pytest.raises(ValueError, match=match):
        viz.diagram(blocks, edges)
    plt.close("all")


def test_chain_diagram_rejects_bad_skips():
    with pytest.raises(ValueError, match="skip \\(2, 1\\)"):
        viz.chain_diagram(["a", "b", "c"], skips=[(2, 1)])
    with pytest.raises(ValueError, match="at least one block"):
        viz.chain_diagram([])
    plt.close("all")
