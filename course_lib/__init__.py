"""course_lib: the shared, tested building blocks of *Deep Learning for Computer Vision*.

One module per topic; each public function names the chapter that introduces it.

- :mod:`course_lib.runtime`: seeds, threads, device, mixed precision (chapter 00)
- :mod:`course_lib.data`: digits, bundled photos, coloured shapes, splits, normalization (00, 01)
- :mod:`course_lib.train`: the training loop and its history (00)
- :mod:`course_lib.viz`: image grids, masks, boxes, curves, the shared style (00)
- :mod:`course_lib.metrics`: accuracy and friends (00)
"""

from course_lib import data, metrics, runtime, train, viz

__version__ = "0.1.0"
__all__ = ["data", "metrics", "runtime", "train", "viz"]
