"""Where does a network look? Class activation maps, Grad-CAM and the pointing game.

Introduced in chapter 06 (convolutional networks). A network that ends in global average pooling
(GAP) and one linear layer computes the logit of class ``c`` as

    z_c = b_c + sum_k w[c, k] * mean_{x, y} f_k(x, y) = b_c + mean_{x, y} M_c(x, y),

with ``f_k`` the last feature maps and ``M_c(x, y) = sum_k w[c, k] f_k(x, y)`` the **class activation
map** (CAM) of Zhou et al. (2016): the logit is the spatial mean of the map plus the bias, so the map
says how much each location contributes to the class score. :func:`class_activation_maps` computes
``M_c`` for a chosen class per image. :func:`grad_cam` (Selvaraju et al., 2017) needs no such head:
it weights the feature maps ``A_k`` of any layer by the spatial mean of the gradient of the class score,

    alpha_k = mean_{x, y} d z_c / d A_k(x, y),    L_c(x, y) = ReLU(sum_k alpha_k A_k(x, y)),

which, for the last feature maps of a GAP + linear network, is ``ReLU(M_c) / (h w)``: CAM up to a
positive scale. :func:`pointing_game` scores a map by whether its maximum falls on the object (Zhang et
al., 2016). All are vectorized and work on the device of their inputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["class_activation_maps", "grad_cam", "map_argmax", "pointing_game"]


def _size_pair(size, name: str = "size") -> tuple[int, int]:
    pair = tuple(size) if isinstance(size, tuple | list) else (size, size)
    if len(pair) != 2 or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def class_activation_maps(
    features: Tensor,
    weight: Tensor,
    classes: Tensor,
    size: int | tuple[int, int] | None = None,
    *,
    normalize: bool = False,
) -> Tensor:
    """Class activation maps ``M_c(x, y) = sum_k weight[c, k] * features[n, k, y, x]`` (Zhou et al. 2016).

    For a GAP + linear head (``logits = gap(features) @ weight.T + bias``) the spatial mean of the
    un-resized, un-normalized map plus ``bias[c]`` equals the logit of class ``c``.

    Args:
        features: ``Tensor[N, K, h, w]``, the feature maps that enter the global average pooling.
        weight: ``Tensor[C, K]``, the weight of the linear layer after the pooling (``model.fc.weight``).
        classes: ``Tensor[N]`` integer class per image, each in ``[0, C)`` (e.g. the predicted or the
            true class).
        size: resize the maps bilinearly (``align_corners=False``) to ``size`` or ``(H, W)``, usually
            the input image's size; ``None`` keeps ``(h, w)``.
        normalize: rescale each map to [0, 1] by its own minimum and maximum (a constant map becomes
            all zeros); done after resizing.
    Returns:
        ``Tensor[N, H, W]`` on the device and dtype of ``features``.

    Introduced in chapter 06.
    """
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise TypeError(f"features must be a floating-point Tensor[N, K, h, w], got {_describe(features)}")
    if features.ndim != 4:
        raise ValueError(f"features must be Tensor[N, K, h, w], got shape {tuple(features.shape)}")
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point Tensor[C, K], got {_describe(weight)}")
    n, k = features.shape[:2]
    if weight.ndim != 2 or weight.shape[1] != k:
        raise ValueError(
            f"weight must be Tensor[C, K] with K = {k} (the channels of features), got {tuple(weight.shape)}"
        )
    if not isinstance(classes, Tensor) or classes.dtype.is_floating_point or classes.dtype == torch.bool:
        raise TypeError(f"classes must be an integer Tensor[N], got {_describe(classes)}")
    if classes.shape != (n,):
        raise ValueError(f"classes must be Tensor[{n}] (one class per image), got {tuple(classes.shape)}")
    num_classes = weight.shape[0]
    if n and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"classes must lie in [0, {num_classes}), got values in [{classes.min()}, {classes.max()}]"
        )
    out_size = _size_pair(size) if size is not None else None
    w = weight.to(features.dtype)[classes.to(weight.device)]  # [N, K], the row of each image's class
    cams = torch.einsum("nk,nkhw->nhw", w, features)  # M_c = sum_k w_ck f_k
    return _resize_and_normalize(cams, out_size, normalize)


def _resize_and_normalize(maps: Tensor, out_size: tuple[int, int] | None, normalize: bool) -> Tensor:
    """Bilinear resize of maps [N, h, w] to out_size (None: keep), then per-map min-max scaling."""
    n = maps.shape[0]
    if out_size is not None and n:
        maps = F.interpolate(maps[:, None], size=out_size, mode="bilinear", align_corners=False)[:, 0]
    elif out_size is not None:
        maps = maps.new_zeros(0, *out_size)
    if normalize and n:
        flat = maps.flatten(1)
        lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
        span = hi - lo
        maps = torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(maps))
    return maps


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    x: Tensor,
    classes: Tensor | None = None,
    size: int | tuple[int, int] | None = None,
    *,
    relu: bool = True,
    normalize: bool = False,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): feature maps of ``layer`` weighted by the class score's gradient.

    With ``A = layer(...)`` of shape ``[N, K, h, w]`` during ``model(x)`` and ``z`` the logits,
    ``alpha[n, k] = mean_{y, x} dz[n, c_n] / dA[n, k, y, x]`` and the map is
    ``ReLU(sum_k alpha[n, k] A[n, k])``. For the last feature maps of a network that ends in global
    average pooling and one linear layer, ``alpha[n, k] = weight[c_n, k] / (h w)``, so the map is
    ``ReLU(class_activation_maps(A, weight, classes)) / (h w)``: CAM up to a positive scale.

    The gradient is taken with respect to the layer's output only (the graph is cut there), so the
    parameters' ``.grad`` are left untouched and frozen layers before ``layer`` are fine; it works
    under ``torch.no_grad()`` too.

    Args:
        model: the classifier, in eval mode (``model.eval()``); ``model(x)`` must return logits
            ``Tensor[N, C]``.
        layer: a submodule of ``model`` that runs exactly once per forward pass and returns
            ``Tensor[N, K, h, w]`` (usually the last convolutional block).
        x: ``Tensor[N, ...]`` floating-point input batch.
        classes: ``Tensor[N]`` integer class per image, each in ``[0, C)``; ``None`` takes the
            predicted class (the argmax of the logits).
        size: resize the maps bilinearly (``align_corners=False``) to ``size`` or ``(H, W)``;
            ``None`` keeps ``(h, w)``.
        relu: keep only the positive evidence (the paper's choice); ``False`` returns the signed map.
        normalize: rescale each map to [0, 1] by its own minimum and maximum (a constant map becomes
            all zeros); done after the ReLU and the resizing.
    Returns:
        ``Tensor[N, H, W]`` (detached) on the device and dtype of the layer's output.

    Introduced in chapter 06.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {_describe(model)}")
    if not isinstance(layer, nn.Module) or not any(m is layer for m in model.modules()):
        raise ValueError(f"layer must be a submodule of model (e.g. model.layer4), got {_describe(layer)}")
    if model.training:
        raise ValueError(
            "model must be in eval mode (call model.eval()): in training mode BatchNorm mixes the images "
            "of a batch and dropout makes the maps random"
        )
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point Tensor[N, ...], got {_describe(x)}")
    if x.ndim < 1:
        raise ValueError(f"x must be a batch Tensor[N, ...], got shape {tuple(x.shape)}")
    out_size = _size_pair(size) if size is not None else None

    captured: list[Tensor | None] = []

    def hook(module: nn.Module, inputs, output):
        if not isinstance(output, Tensor) or not output.is_floating_point():
            captured.append(None)
            return None
        activations = output.detach().requires_grad_(True)  # a leaf: the gradient stops here
        captured.append(activations)
        return activations.clone()  # later in-place operations must not modify the leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(f"layer must run exactly once in model(x), it ran {len(captured)} times")
    activations = captured[0]
    if activations is None or activations.ndim != 4:
        got = "a non-floating-point output" if activations is None else f"shape {tuple(activations.shape)}"
        raise ValueError(f"layer must output feature maps Tensor[N, K, h, w], got {got}")
    n = x.shape[0]
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model(x) must return logits Tensor[{n}, C], got {got}")
    if activations.shape[0] != n:
        raise ValueError(
            f"layer's output must have one entry per image ({n}), got shape {tuple(activations.shape)}"
        )
    num_classes = logits.shape[1]
    if classes is None:
        classes = logits.detach().argmax(dim=1)
    else:
        if not isinstance(classes, Tensor) or classes.dtype.is_floating_point or classes.dtype == torch.bool:
            raise TypeError(f"classes must be an integer Tensor[N] or None, got {_describe(classes)}")
        if classes.shape != (n,):
            raise ValueError(f"classes must be Tensor[{n}] (one class per image), got {tuple(classes.shape)}")
        if n and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(
                f"classes must lie in [0, {num_classes}), got values in [{classes.min()}, {classes.max()}]"
            )
    if n == 0:
        maps = activations.new_zeros(0, *activations.shape[2:])
        return _resize_and_normalize(maps, out_size, normalize)
    with torch.enable_grad():
        score = logits.gather(1, classes.to(logits.device).long()[:, None]).sum()  # images do not interact
        (grads,) = torch.autograd.grad(score, activations, allow_unused=True)
    if grads is None:
        raise ValueError("the logits do not depend on layer's output: pick a layer on the path to the logits")
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # [N, K, 1, 1]: the importance of each feature map
    maps = (alpha * activations.detach()).sum(dim=1)  # [N, h, w]
    if relu:
        maps = maps.clamp_min(0)
    return _resize_and_normalize(maps, out_size, normalize)


def map_argmax(maps: Tensor) -> Tensor:
    """Row and column of the maximum of each map (the first one in raster order when tied).

    Args:
        maps: ``Tensor[N, H, W]``.
    Returns:
        ``Tensor[N, 2]`` int64 ``(row, column)``.

    Introduced in chapter 06.
    """
    if not isinstance(maps, Tensor) or maps.dtype == torch.bool or maps.is_complex():
        raise TypeError(f"maps must be a real-valued Tensor[N, H, W], got {_describe(maps)}")
    if maps.ndim != 3 or maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"maps must be Tensor[N, H, W] with H, W >= 1, got shape {tuple(maps.shape)}")
    flat = maps.flatten(1).argmax(dim=1) if maps.shape[0] else maps.new_zeros(0, dtype=torch.int64)
    return torch.stack([flat // maps.shape[2], flat % maps.shape[2]], dim=1)


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: float = 0.0) -> Tensor:
    """Pointing game (Zhang et al. 2016): is the maximum of each map on the object?

    A hit is a map whose maximum (:func:`map_argmax`) lies inside the object's mask, or within
    ``tolerance`` pixels (Euclidean distance) of it; the hit rate is ``hits.float().mean()``. An empty
    mask is always a miss.

    Args:
        maps: ``Tensor[N, H, W]`` saliency or class activation maps, at the resolution of ``masks``.
        masks: ``Tensor[N, H, W]`` bool (or 0/1 integer) object masks.
        tolerance: how far (in pixels, >= 0) from the mask the maximum may fall and still count.
    Returns:
        ``Tensor[N]`` bool, True for a hit.

    Introduced in chapter 06.
    """
    if not isinstance(masks, Tensor) or masks.is_floating_point():
        raise TypeError(f"masks must be a bool or integer Tensor[N, H, W], got {_describe(masks)}")
    if isinstance(maps, Tensor) and masks.shape != maps.shape:
        raise ValueError(f"masks must have the shape of maps {tuple(maps.shape)}, got {tuple(masks.shape)}")
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    where = map_argmax(maps)
    if masks.dtype != torch.bool:
        if ((masks != 0) & (masks != 1)).any():
            raise ValueError("masks must be bool or hold only 0 and 1")
        masks = masks.bool()
    if tolerance > 0 and masks.shape[0]:
        r = int(tolerance)
        dy, dx = torch.meshgrid(
            torch.arange(-r, r + 1, device=masks.device),
            torch.arange(-r, r + 1, device=masks.device),
            indexing="ij",
        )
        disk = ((dy**2 + dx**2) <= tolerance**2).float()[None, None]  # [1, 1, 2r+1, 2r+1]
        # a pixel is within `tolerance` of the mask iff the disk around it touches the mask
        masks = F.conv2d(masks[:, None].float(), disk, padding=r)[:, 0] > 0.5
    n = torch.arange(masks.shape[0], device=masks.device)
    return masks[n, where[:, 0].to(masks.device), where[:, 1].to(masks.device)]


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"Tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__
