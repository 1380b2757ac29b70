"""course_lib: the shared, tested building blocks of *Deep Learning for Computer Vision*.

One module per topic; each public function names the chapter that introduces it.

- :mod:`course_lib.runtime`: seeds, threads, device, mixed precision (chapter 00); timing, checkpoints
  that resume exactly (20)
- :mod:`course_lib.distributed`: set-up from ``torchrun``'s environment and a launcher that leaves no
  process behind (20)
- :mod:`course_lib.exercises`: exercises that check the learner's answer (every chapter, from 00)
- :mod:`course_lib.data`: digits, bundled photos, coloured shapes, splits, normalization (00, 01);
  2-D toy distributions (10)
- :mod:`course_lib.train`: the training loop and its history (00)
- :mod:`course_lib.viz`: image grids, masks, boxes, curves, the shared style (00); architecture diagrams (06)
- :mod:`course_lib.metrics`: accuracy and friends (00); confusion matrix and mean IoU (07); detection
  matching, precision-recall, AP and mAP (08); Fréchet distance (09) and mode coverage (10); PSNR and
  SSIM (19)
- :mod:`course_lib.neighbors`: pairwise distances and k-nearest-neighbour prediction (00)
- :mod:`course_lib.preprocess`: PCA and whitening (01)
- :mod:`course_lib.nn`: MLP builder, activations, weight initialization, activation statistics (02);
  conv-norm-activation blocks, stochastic depth (05); residual blocks and a configurable ResNet (06);
  U-Net and ASPP (07); feature pyramid and a dense detection head (08); masked convolutions and
  PixelCNN (09); AdaIN, generators and critics (10); diffusion U-Net, MoE, transformers, ViT, Swin (11-15);
  recognizers (16); text encoder, CLIP, vector quantizer (18); denoisers, sub-pixel SR, partial and
  gated convolution (19). A package with one module per family.
- :mod:`course_lib.losses`: losses beyond torch's own: MSLE, KL, Gram/style, NT-Xent, IoU losses (03);
  Dice (07); the VAE's Gaussian KL (09); adversarial losses and the gradient penalty (10)
- :mod:`course_lib.judge`: a seeded digits classifier that scores generated digits (09-12)
- :mod:`course_lib.diffusion`: noise schedules, the forward process, parameterizations, DDPM and DDIM
  samplers, classifier-free guidance and the exact oracle denoiser (11)
- :mod:`course_lib.ocr`: character vocabularies, CTC decoding (greedy and beam), edit distance and
  character/word accuracy (16)
- :mod:`course_lib.selfsup`: two-view augmentation, pretext tasks, deep clustering, BYOL, linear probe and
  k-NN monitor (17)
- :mod:`course_lib.ops`: box area, IoU and generalized IoU (03); box formats, NMS, box coding, anchors,
  Hungarian matching (08)
- :mod:`course_lib.optim`: learning-rate range test, warm-up + cosine schedule (04), weight EMA (05)
- :mod:`course_lib.augment`: batch augmentations, MixUp/CutMix, repeated augmentation, pipelines (05)
- :mod:`course_lib.classic`: LeNet, AlexNet, VGG, Inception block and ResNet builders (06)
- :mod:`course_lib.explain`: class activation maps and the pointing game (06)

Import ``course_lib.nn`` under another name (``from course_lib import nn as cnn``) next to ``torch.nn``.
"""

from course_lib import (
    augment,
    classic,
    data,
    diffusion,
    distributed,
    exercises,
    explain,
    judge,
    losses,
    metrics,
    neighbors,
    nn,
    ocr,
    ops,
    optim,
    preprocess,
    runtime,
    selfsup,
    train,
    viz,
)

__version__ = "0.1.0"
__all__ = [
    "augment",
    "classic",
    "data",
    "diffusion",
    "distributed",
    "exercises",
    "explain",
    "judge",
    "losses",
    "metrics",
    "neighbors",
    "nn",
    "ocr",
    "ops",
    "optim",
    "preprocess",
    "runtime",
    "selfsup",
    "train",
    "viz",
]
