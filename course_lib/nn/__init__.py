"""Neural-network building blocks, one module per family.

- :mod:`.basics`: activations, :func:`mlp`, :func:`init_weights` and activation statistics
  (chapter 02);
- :mod:`.blocks`: :func:`norm_layer`, :class:`ConvNormAct`, :class:`DropPath` (chapter 05), residual
  blocks and :class:`ResNet` (chapter 06);
- :mod:`.dense`: :class:`UNet`, :class:`ASPP` (chapter 07), :class:`FPN` and :class:`DetectionHead`
  (chapter 08);
- :mod:`.generative`: masked convolutions, AdaIN and the small generators and critics of chapters
  09 and 10.

Every public name is re-exported here. Import the package under another name so that it does not
shadow ``torch.nn``::

    from torch import nn
    from course_lib import nn as cnn
"""

from __future__ import annotations

from . import basics, blocks, dense
from .basics import *  # noqa: F403
from .blocks import *  # noqa: F403
from .dense import *  # noqa: F403

__all__ = sorted([*basics.__all__, *blocks.__all__, *dense.__all__])
