"""Tests of course_lib.nn.recognition: CRNN, the transformer recognizer and EAST-lite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import ocr, ops
from course_lib.nn import recognition


def test_crnn_shapes_and_log_probs():
    for seq in ("gru", "conv", "none"):
        m = recognition.CRNN(11, height=24, widths=(8, 8, 16), sequence=seq, hidden=8).eval()
        lp = m(torch.rand(3, 1, 24, 96))
        assert lp.shape == (24, 3, 11)
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(24, 3))
    strided = recognition.CRNN(11, height=24, widths=(8, 8, 16), hidden=8, downsample="stride").eval()
    assert strided(torch.rand(2, 1, 24, 96)).shape == (24, 2, 11)
    rec = recognition.TransformerRecognizer(5, height=24, widths=(8, 8, 16), dim=16, downsample="stride")
    assert rec.encode(torch.rand(2, 1, 24, 96)).shape == (2, 24, 16)
    with pytest.raises(ValueError, match="downsample"):
        recognition.CRNN(11, downsample="avg")
    with pytest.raises(ValueError):
        recognition.CRNN(11, sequence="lstm")
    with pytest.raises(ValueError):
        recognition.CRNN(11, height=20)


def test_crnn_fits_one_batch_with_ctc():
    torch.manual_seed(0)
    v = ocr.Vocab("0123")
    m = recognition.CRNN(len(v), height=16, widths=(8, 16, 16), hidden=16)
    x = torch.rand(4, 1, 16, 64)
    texts = ["01", "123", "3", "2200"]
    tg, ln = v.encode_batch(texts)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(150):
        lp = m(x)
        loss = F.ctc_loss(lp, tg, torch.full((4,), lp.shape[0]), ln)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    pred = [v.decode(c) for c in ocr.ctc_greedy_decode(m(x))]
    assert pred == texts, (pred, loss.item())


def test_transformer_recognizer_teacher_forcing_and_decode():
    m = recognition.TransformerRecognizer(5, max_len=4, dim=16, num_heads=2, height=16, widths=(8, 8, 16))
    inputs, targets = m.teacher_forcing([[1, 2], [3]])
    assert inputs.tolist() == [[5, 1, 2], [5, 3, 0]]
    assert targets.tolist() == [[1, 2, 0], [3, 0, -100]]
    logits = m(torch.rand(2, 1, 16, 48), inputs)
    assert logits.shape == (2, 3, 5)
    out = m.eval().greedy_decode(torch.rand(2, 1, 16, 48))
    assert len(out) == 2 and all(len(o) <= 5 and 0 not in o for o in out)
    with pytest.raises(ValueError):
        m.teacher_forcing([[1, 2, 3, 4, 1]])


def test_decoder_is_causal():
    torch.manual_seed(0)
    m = recognition.TransformerRecognizer(
        5, max_len=4, dim=16, num_heads=2, height=16, widths=(8, 8, 16)
    ).eval()
    x = torch.rand(1, 1, 16, 48)
    a = m(x, torch.tensor([[5, 1, 2, 3]]))
    b = m(x, torch.tensor([[5, 1, 4, 4]]))
    torch.testing.assert_close(a[:, :2], b[:, :2])  # positions 0-1 cannot see tokens 2-3
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_east_targets_shrunk_score_and_distances():
    boxes = torch.tensor([[8.0, 16.0, 40.0, 32.0]])
    score, dist = recognition.east_targets(boxes, 64, stride=4, shrink=0.25)
    assert score.shape == (1, 1, 16, 16) and dist.shape == (1, 4, 16, 16)
    # cell (i, j) has centre (4j + 2, 4i + 2); shrunk box is x in (12, 36), y in (20, 28)
    pos = score[0, 0].nonzero().tolist()
    assert pos == [[i, j] for i in (5, 6) for j in range(3, 9)]
    i, j = 5, 3  # centre (14, 22)
    assert dist[0, :, i, j].tolist() == [22 - 16, 40 - 14, 32 - 22, 14 - 8]
    # a tiny box keeps its centre cell
    s2, _ = recognition.east_targets(torch.tensor([[30.0, 30.0, 33.0, 33.0]]), 64)
    assert s2.sum().item() == 1


def test_east_loss_is_zero_geometry_for_exact_distances_and_finite():
    boxes = torch.tensor([[8.0, 16.0, 40.0, 32.0], [2.0, 2.0, 30.0, 20.0]])
    score, dist = recognition.east_targets(boxes, 64)
    logits = (score * 2 - 1) * 20
    total, dice, geo = recognition.east_loss(logits, dist.clamp_min(0.1), score, dist)
    assert geo.item() < 1e-4 and dice.item() < 1e-3 and math.isfinite(total.item())
    # garbage (even negative) distances on negative cells never reach the loss
    bad = dist.clone()
    bad[score.expand_as(dist) < 0.5] = -5.0
    total2, _, geo2 = recognition.east_loss(logits, bad, score, dist)
    assert math.isfinite(total2.item()) and geo2.item() < 1e-4


def test_east_model_and_decode():
    m = recognition.EASTLite(width=8).eval()
    s, d = m(torch.rand(2, 1, 64, 64))
    assert s.shape == (2, 1, 16, 16) and d.shape == (2, 4, 16, 16) and bool((d > 0).all())
    boxes = torch.tensor([[8.0, 16.0, 40.0, 32.0]])
    score, dist = recognition.east_targets(boxes, 64)
    out = recognition.east_decode((score * 2 - 1) * 20, dist, threshold=0.7, iou_threshold=0.3)
    got, scores = out[0]
    assert got.shape == (1, 4)
    torch.testing.assert_close(got[0], boxes[0])
    assert ops.box_iou(got, boxes).item() == pytest.approx(1.0)
