"""The locked environment: the pinned torch/torchvision pair loads torchvision's compiled ops on a CPU."""

from __future__ import annotations

import tomllib

import manifest
import torch
import torchvision
from torchvision import ops


def _locked(name: str) -> str:
    lock = tomllib.loads((manifest.ROOT / "uv.lock").read_text(encoding="utf-8"))
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def test_installed_torch_pair_is_the_locked_one():
    assert torch.__version__.split("+")[0] == _locked("torch")
    assert torchvision.__version__.split("+")[0] == _locked("torchvision")


def test_torchvision_compiled_ops_run_on_cpu():
    # A CPU-only torch wheel from a local folder makes these fail with
    # "operator torchvision::nms does not exist"; the locked PyPI pair must not.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.nms(boxes, scores, iou_threshold=0.5).tolist() == [0, 2]
    feats = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = ops.roi_align(feats, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], output_size=1, aligned=True)
    # aligned=True: the box covers pixels 0..1 in both axes; the 2x2 samples land on pixel centres,
    # so the single bin averages feats[0, 0, :2, :2] = (0 + 1 + 4 + 5) / 4
    assert pooled.item() == 2.5
