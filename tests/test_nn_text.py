"""Tests of course_lib.nn.text (chapter 18): tokenizer, text encoder, tiny CLIP, vector quantizer."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import losses
from course_lib.nn import text

CAPTIONS = ["a small red circle", "a large blue square", "a small green triangle"]


def test_tokenizer_round_trip_ids_and_eos():
    tok = text.WordTokenizer(CAPTIONS)
    assert tok.itos[:3] == ["<pad>", "<bos>", "<eos>"]
    assert len(tok) == 3 + len({w for c in CAPTIONS for w in c.split()})
    ids, eos = tok.encode(["a red circle", "a small blue square"], length=8)
    assert ids.shape == (2, 8) and ids.dtype == torch.int64
    assert eos.tolist() == [4, 5]
    assert ids[0, 0] == tok.BOS and ids[0, 4] == tok.EOS and (ids[0, 5:] == tok.PAD).all()
    assert tok.decode(ids) == ["a red circle", "a small blue square"]
    # the ids do not depend on the order of the captions
    assert text.WordTokenizer(CAPTIONS[::-1]).itos == tok.itos


def test_tokenizer_rejects_unknown_words_and_short_length():
    tok = text.WordTokenizer(CAPTIONS)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode(["a purple circle"])
    with pytest.raises(ValueError, match="shorter"):
        tok.encode(["a small red circle"], length=3)
    with pytest.raises(TypeError):
        text.WordTokenizer("a red circle")


def test_text_encoder_reads_eos_and_ignores_padding():
    torch.manual_seed(0)
    tok = text.WordTokenizer(CAPTIONS)
    enc = text.TextEncoder(len(tok), dim=32, embed_dim=16, depth=2, num_heads=4, max_len=10).eval()
    ids, eos = tok.encode(CAPTIONS, length=6)
    out = enc(ids, eos)
    assert out.shape == (3, 16)
    # longer padding and different pad tokens after <eos> change nothing (the mask is causal)
    ids2, eos2 = tok.encode(CAPTIONS, length=10)
    ids2[:, 7:] = 5
    torch.testing.assert_close(enc(ids2, eos2), out)
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.zeros(1, 11, dtype=torch.int64), torch.tensor([3]))
    with pytest.raises(ValueError, match="eos"):
        enc(ids, torch.tensor([0, 1]))


def test_conv_image_encoder_shape():
    enc = text.conv_image_encoder(embed_dim=24, width=8)
    assert enc(torch.zeros(2, 3, 32, 32)).shape == (2, 24)


def test_tiny_clip_logits_equal_the_loss_definition_and_temperature():
    torch.manual_seed(1)
    tok = text.WordTokenizer(CAPTIONS)
    model = text.TinyCLIP(
        text.conv_image_encoder(embed_dim=16, width=8),
        text.TextEncoder(len(tok), dim=16, embed_dim=16, max_len=8),
    ).eval()
    torch.testing.assert_close(model.logit_scale, torch.tensor(1 / 0.07))
    x = torch.rand(3, 3, 32, 32)
    ids, eos = tok.encode(CAPTIONS)
    logits = model(x, ids, eos)
    assert logits.shape == (3, 3)
    ref = losses.clip_loss(model.image_encoder(x), model.text_encoder(ids, eos), model.logit_scale)
    target = torch.arange(3)
    mine = 0.5 * (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.T, target)
    )
    torch.testing.assert_close(mine, ref)
    with torch.no_grad():
        model.log_scale.fill_(math.log(1000.0))
    torch.testing.assert_close(model.logit_scale, torch.tensor(100.0))  # clamped
    with pytest.raises(ValueError, match="init_temperature"):
        text.TinyCLIP(model.image_encoder, model.text_encoder, init_temperature=0.001)


def test_vector_quantizer_picks_the_nearest_code_and_passes_gradients_straight_through():
    vq = text.VectorQuantizer(4, 2, beta=0.25)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[[0.9, 0.2], [0.1, -0.1]], [[4.0, 4.5], [0.2, 0.8]]], requires_grad=True)
    z_q, idx, loss = vq(z)
    assert idx.tolist() == [[1, 0], [3, 2]]
    torch.testing.assert_close(z_q.detach(), vq.codebook.detach()[idx])
    # brute force distances agree
    d = ((z.detach()[..., None, :] - vq.codebook.detach()) ** 2).sum(-1)
    assert torch.equal(d.argmin(-1), idx)
    mse = ((z.detach() - vq.codebook.detach()[idx]) ** 2).mean()
    torch.testing.assert_close(loss, 1.25 * mse)
    w = torch.randn(2, 2, 2)
    (z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # identity gradient through the quantizer
    vq.zero_grad()
    _, _, loss = vq(z.detach())
    loss.backward()
    assert vq.codebook.grad[[0, 1, 2, 3]].abs().sum() > 0  # the used codes move towards the inputs
    with pytest.raises(ValueError, match="z must be"):
        vq(torch.zeros(3, 5))


def test_text_encoder_mean_pool_averages_the_tokens_up_to_eos():
    torch.manual_seed(2)
    tok = text.WordTokenizer(CAPTIONS)
    enc = text.TextEncoder(len(tok), dim=16, embed_dim=8, max_len=10, pool="mean").eval()
    ids, eos = tok.encode(CAPTIONS, length=8)
    h = enc.token(ids) + enc.pos[:8]
    h = enc.norm(enc.blocks[0](h, attn_mask=torch.ones(8, 8, dtype=torch.bool).tril()))
    ref = torch.stack([enc.proj(h[i, : int(eos[i]) + 1].mean(0)) for i in range(len(CAPTIONS))])
    torch.testing.assert_close(enc(ids, eos), ref)
    ids2, eos2 = tok.encode(CAPTIONS, length=10)
    torch.testing.assert_close(enc(ids2, eos2), ref)  # padding is not averaged in
    with pytest.raises(ValueError, match="pool"):
        text.TextEncoder(len(tok), pool="max")


def test_text_encoder_depth_zero_is_factored():
    """depth 0: a sum of per-token terms, so swapping one word moves the output by the same vector."""
    torch.manual_seed(0)
    caps = ["a small red circle", "a small red square", "a large blue circle", "a large blue square"]
    tok = text.WordTokenizer(caps)
    enc = text.TextEncoder(len(tok), dim=16, embed_dim=8, depth=0, max_len=8, pool="mean")
    assert len(enc.blocks) == 0
    out = enc(*tok.encode(caps))
    torch.testing.assert_close(out[0] - out[1], out[2] - out[3])
    with pytest.raises(ValueError, match="pool='mean'"):
        text.TextEncoder(len(tok), depth=0)
    with pytest.raises(ValueError, match="depth"):
        text.TextEncoder(len(tok), depth=-1, pool="mean")
