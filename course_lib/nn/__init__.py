"""Neural-network building blocks, one module per family.

- :mod:`.basics`: activations, :func:`mlp`, :func:`init_weights` and activation statistics
  (chapter 02);
- :mod:`.blocks`: :func:`norm_layer`, :class:`ConvNormAct`, :class:`DropPath` (chapter 05), residual
  blocks and :class:`ResNet` (chapter 06);
- :mod:`.dense`: :class:`UNet`, :class:`ASPP` (chapter 07), :class:`FPN` and :class:`DetectionHead`
  (chapter 08);
- :mod:`.autoregressive`: masked convolutions and PixelCNN (chapter 09);
- :mod:`.generative`: AdaIN and the small generators and critics of chapter 10;
- :mod:`.attention`: scaled dot-product attention and :class:`CrossAttention` (chapters 11-12);
- :mod:`.conditioning`: time embeddings, residual blocks and a time-, class- and text-conditioned
  U-Net for diffusion (chapter 11);
- :mod:`.moe`: a top-k router with the load-balancing loss, stacked experts, time-MoE and space-MoE
  (chapter 12);
- :mod:`.transformer`: attention masks, sinusoidal positions, the pre-norm transformer block and a
  small Image Transformer (chapter 13);
- :mod:`.vit`: patch embedding, a configurable ViT with DeiT's distillation token, attention rollout
  (chapter 14);
- :mod:`.swin`: windows, cyclic shift and its mask, relative position bias, patch merging and Swin
  (chapter 15);
- :mod:`.recognition`: a CRNN for CTC, a transformer-decoder recognizer and an EAST-lite text
  detector (chapter 16);
- :mod:`.text`: a word tokenizer, a small text encoder, a tiny CLIP and a vector quantizer
  (chapter 18);
- :mod:`.restoration`: DnCNN, a CBDNet-style denoiser with its noise estimator, sub-pixel convolution
  and ESPCN, partial and gated convolution (chapter 19).

Every public name is re-exported here. Import the package under another name so that it does not
shadow ``torch.nn``::

    from torch import nn
    from course_lib import nn as cnn
"""

from __future__ import annotations

from . import (
    attention,
    autoregressive,
    basics,
    blocks,
    conditioning,
    dense,
    generative,
    moe,
    recognition,
    restoration,
    swin,
    text,
    transformer,
    vit,
)
from .attention import *  # noqa: F403
from .autoregressive import *  # noqa: F403
from .basics import *  # noqa: F403
from .blocks import *  # noqa: F403
from .conditioning import *  # noqa: F403
from .dense import *  # noqa: F403
from .generative import *  # noqa: F403
from .moe import *  # noqa: F403
from .recognition import *  # noqa: F403
from .restoration import *  # noqa: F403
from .swin import *  # noqa: F403
from .text import *  # noqa: F403
from .transformer import *  # noqa: F403
from .vit import *  # noqa: F403

__all__ = sorted(
    [
        *basics.__all__,
        *blocks.__all__,
        *dense.__all__,
        *autoregressive.__all__,
        *generative.__all__,
        *attention.__all__,
        *conditioning.__all__,
        *moe.__all__,
        *transformer.__all__,
        *vit.__all__,
        *swin.__all__,
        *recognition.__all__,
        *text.__all__,
        *restoration.__all__,
    ]
)
