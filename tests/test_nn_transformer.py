"""course_lib.nn.transformer: masks, sinusoidal positions, the pre-norm block, the Image Transformer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.nn import transformer as tr
from course_lib.nn.conditioning import timestep_embedding


# ---------------------------------------------------------------------------------------------- masks
def test_causal_mask_is_lower_triangular():
    m = tr.causal_attention_mask(5)
    assert m.dtype == torch.bool and m.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            assert bool(m[i, j]) == (j <= i)


def _block_reference(length, lq, lm, causal):
    m = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        s = (i // lq) * lq
        for j in range(length):
            m[i, j] = s - lm <= j < s + lq and (j <= i or not causal)
    return m


@pytest.mark.parametrize("length,lq,lm", [(16, 4, 4), (10, 3, 2), (7, 7, 0), (9, 2, 5)])
@pytest.mark.parametrize("causal", [True, False])
def test_local_block_mask_matches_loops(length, lq, lm, causal):
    got = tr.local_block_mask(length, lq, lm, causal=causal)
    assert torch.equal(got, _block_reference(length, lq, lm, causal))


def test_local_block_mask_limits():
    # a block as long as the sequence is the plain causal mask
    assert torch.equal(tr.local_block_mask(6, 6, 0), tr.causal_attention_mask(6))
    # every query keeps itself, so no softmax row is empty
    assert tr.local_block_mask(12, 4, 0).diagonal().all()


def test_local_window_mask_2d_matches_loops():
    h, w, r = 4, 5, 1
    for causal in (False, True):
        got = tr.local_window_mask_2d(h, w, r, causal=causal)
        assert got.shape == (h * w, h * w)
        for q in range(h * w):
            for k in range(h * w):
                (qr, qc), (kr, kc) = divmod(q, w), divmod(k, w)
                expect = abs(qr - kr) <= r and abs(qc - kc) <= r and (k <= q or not causal)
                assert bool(got[q, k]) == expect
    assert torch.equal(tr.local_window_mask_2d(3, 3, 0), torch.eye(9, dtype=torch.bool))
    assert tr.local_window_mask_2d(3, 4, 3).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda: tr.causal_attention_mask(0),
        lambda: tr.local_block_mask(8, 0, 1),
        lambda: tr.local_block_mask(8, 2, -1),
        lambda: tr.local_window_mask_2d(3, 3, -1),
        lambda: tr.local_window_mask_2d(3, 2.5, 1),
    ],
)
def test_masks_reject_bad_sizes(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------------------------------------- positions
def test_sinusoidal_positions_are_timestep_embedding():
    pe = tr.sinusoidal_positions(11, 8)
    torch.testing.assert_close(pe, timestep_embedding(torch.arange(11), 8), rtol=0, atol=0)
    # the formula, by hand: cos(p ω_k) then sin(p ω_k), ω_k = 10000^(-k/4)
    p, k = 3, 1
    w = 10_000 ** (-k / 4)
    torch.testing.assert_close(pe[p, k], torch.tensor(math.cos(p * w)))
    torch.testing.assert_close(pe[p, 4 + k], torch.tensor(math.sin(p * w)))


def test_sinusoidal_relative_shift_is_a_rotation():
    d, k = 16, 7
    pe = tr.sinusoidal_positions(40, d, dtype=torch.float64)
    half = d // 2
    omega = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    c, s = torch.cos(k * omega), torch.sin(k * omega)
    # (cos, sin) of p+k = rotation by kω of (cos, sin) of p, for every frequency
    cos_p, sin_p = pe[:-k, :half], pe[:-k, half:]
    shifted = torch.cat([cos_p * c - sin_p * s, sin_p * c + cos_p * s], dim=1)
    assert (shifted - pe[k:]).abs().max() < 1e-10
    dots = (pe[:-k] * pe[k:]).sum(1)
    assert dots.max() - dots.min() < 1e-9  # depends on the offset only


def test_sinusoidal_positions_2d_layout():
    h, w, d = 3, 5, 8
    pe = tr.sinusoidal_positions_2d(h, w, d)
    assert pe.shape == (h * w, d)
    row, col = tr.sinusoidal_positions(h, d // 2), tr.sinusoidal_positions(w, d // 2)
    for r in range(h):
        for c in range(w):
            torch.testing.assert_close(pe[r * w + c], torch.cat([row[r], col[c]]), rtol=0, atol=0)
    assert len({tuple(v) for v in pe.tolist()}) == h * w  # every pixel has its own code


def test_positions_dtype_and_errors():
    assert tr.sinusoidal_positions(4, 6, dtype=torch.float64).dtype == torch.float64
    for bad in (lambda: tr.sinusoidal_positions(4, 5), lambda: tr.sinusoidal_positions_2d(2, 2, 6),
                lambda: tr.sinusoidal_positions(0, 4), lambda: tr.sinusoidal_positions(3, 4, dtype=torch.int64)):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


# ---------------------------------------------------------------------------------------------- the block
def _copy_into_torchvision(block: tr.TransformerBlock, ref: nn.Module) -> None:
    """Load the block's weights into torchvision's ViT EncoderBlock."""
    a = block.attn
    with torch.no_grad():
        ref.ln_1.load_state_dict(block.norm1.state_dict())
        ref.ln_2.load_state_dict(block.norm2.state_dict())
        mha = ref.self_attention
        mha.in_proj_weight.copy_(torch.cat([a.to_q.weight, a.to_k.weight, a.to_v.weight]))
        mha.in_proj_bias.copy_(torch.cat([a.to_q.bias, a.to_k.bias, a.to_v.bias]))
        mha.out_proj.weight.copy_(a.to_out.weight)
        mha.out_proj.bias.copy_(a.to_out.bias)
        ref.mlp[0].load_state_dict(block.mlp[0].state_dict())
        ref.mlp[3].load_state_dict(block.mlp[2].state_dict())


def test_block_equals_torchvision_encoder_block():
    from torchvision.models.vision_transformer import EncoderBlock

    torch.manual_seed(0)
    dim, heads = 24, 4
    block = tr.TransformerBlock(dim, heads).eval()
    ref = EncoderBlock(heads, dim, 4 * dim, 0.0, 0.0).eval()
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in ref.parameters())
    _copy_into_torchvision(block, ref)
    x = torch.randn(3, 10, dim)
    torch.testing.assert_close(block(x), ref(x))


def test_block_from_its_definition_with_mask_and_weights():
    torch.manual_seed(1)
    dim, heads, length = 16, 2, 9
    block = tr.TransformerBlock(dim, heads, mlp_ratio=2.0).eval()
    x = torch.randn(2, length, dim)
    mask = tr.local_block_mask(length, 3, 2)
    out, weights = block(x, attn_mask=mask, return_weights=True)
    assert weights.shape == (2, heads, length, length)
    assert (weights[..., ~mask] == 0).all()  # forbidden pairs get exactly zero weight
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, length))
    # by hand: pre-norm residual attention then residual MLP
    a = block.attn
    h = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q, k, v = (
        t.view(2, length, heads, dim // heads).transpose(1, 2) for t in (a.to_q(h), a.to_k(h), a.to_v(h))
    )
    logits = (q @ k.transpose(-2, -1) / math.sqrt(dim // heads)).masked_fill(~mask, float("-inf"))
    att = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, length, dim)
    y = x + a.to_out(att)
    n2 = block.norm2
    y = y + block.mlp[2](F.gelu(block.mlp[0](F.layer_norm(y, (dim,), n2.weight, n2.bias, n2.eps))))
    torch.testing.assert_close(out, y)
    torch.testing.assert_close(block(x, attn_mask=mask), out)  # the fused path gives the same


def test_block_float_mask_and_padding():
    torch.manual_seed(2)
    block = tr.TransformerBlock(8, 2).eval()
    x = torch.randn(2, 5, 8)
    bias = torch.randn(2, 5, 5)  # e.g. a relative position bias per head
    _, w = block(x, attn_mask=bias, return_weights=True)
    _, w0 = block(x, return_weights=True)
    assert not torch.allclose(w, w0)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    _, wp = block(x, key_padding_mask=pad, return_weights=True)
    assert (wp[1, :, :, 3:] == 0).all()


def test_block_drop_path_and_dropout_only_in_training():
    torch.manual_seed(3)
    block = tr.TransformerBlock(8, 2, drop_path=0.5, dropout=0.1)
    x = torch.randn(64, 4, 8)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert not torch.allclose(block(x), block(x))
    y = block(x)
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 10, "num_heads": 3},
        {"dim": 0, "num_heads": 1},
        {"dim": 8, "num_heads": 2, "mlp_ratio": 0},
        {"dim": 8, "num_heads": 2, "dropout": 1.0},
        {"dim": 8, "num_heads": 2, "drop_path": 1.0},
    ],
)
def test_block_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        tr.TransformerBlock(**kwargs)


def test_block_rejects_bad_input():
    block = tr.TransformerBlock(8, 2)
    with pytest.raises(ValueError):
        block(torch.randn(2, 4, 6))
    with pytest.raises(ValueError):  # a query that may attend to nothing
        block(torch.randn(1, 3, 8), attn_mask=torch.zeros(3, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- Image Transformer
def _model(**kw):
    torch.manual_seed(0)
    return tr.ImageTransformer(5, (4, 4), dim=16, depth=2, num_heads=2, **kw).eval()


def _random_images(n=3, levels=5, size=(4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, *size), generator=g)


@pytest.mark.parametrize("attention", ["local", "full"])
def test_image_transformer_is_exactly_causal(attention):
    model = _model(attention=attention)
    x = _random_images()
    base = model(x).flatten(2)
    for k in range(16):
        y = x.clone().flatten(1)
        y[:, k] = (y[:, k] + 1) % 5
        out = model(y.view_as(x)).flatten(2)
        assert torch.equal(out[..., : k + 1], base[..., : k + 1]), f"pixel {k} leaked to positions <= {k}"
        if k < 15:
            assert (out[..., k + 1] - base[..., k + 1]).abs().max() > 0  # the next pixel does read it


def test_image_transformer_local_attention_is_exactly_local():
    # l_q = l_m = 4 (one row), 2 layers: pixel 0 reaches rows 0-2 at most, never row 3
    model = _model(attention="local")
    x = _random_images()
    y = x.clone()
    y[:, 0, 0] = (y[:, 0, 0] + 2) % 5
    a, b = model(x), model(y)
    assert torch.equal(a[:, :, 3], b[:, :, 3])
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 0
    full = _model(attention="full")
    assert (full(x)[:, :, 3] - full(y)[:, :, 3]).abs().max() > 0


def test_image_transformer_nll_and_uniform_start():
    model = _model()
    x = _random_images()
    nll = model.nll(x)
    logp = F.log_softmax(model(x), 1)
    ref = -logp.gather(1, x[:, None]).squeeze(1).flatten(1).sum(1)
    torch.testing.assert_close(nll, ref)
    # zeroed head: every pixel uniform, NLL = HW log(levels)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    torch.testing.assert_close(model.nll(x), torch.full((3,), 16 * math.log(5)))


def test_image_transformer_weights_and_positions():
    model = _model()
    logits, weights = model(_random_images(), return_weights=True)
    assert logits.shape == (3, 5, 4, 4) and len(weights) == 2
    assert weights[0].shape == (3, 2, 16, 16)
    assert (weights[1][..., ~model.mask] == 0).all()
    assert _model(positions="none").pos.abs().sum() == 0
    learned = _model(positions="learned")
    assert any(p is learned.pos for p in learned.parameters())


def test_image_transformer_sample_is_seeded_and_valid():
    model = _model()
    a = model.sample(4, generator=torch.Generator().manual_seed(5))
    b = model.sample(4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (4, 4, 4) and a.dtype == torch.int64
    assert a.min() >= 0 and a.max() < 5


def test_image_transformer_trains():
    # a tiny dataset of two fixed images: the NLL must fall well below uniform
    torch.manual_seed(0)
    model = tr.ImageTransformer(3, (3, 3), dim=16, depth=1, num_heads=2, attention="full")
    x = torch.tensor([[[0, 1, 2], [2, 1, 0], [1, 1, 1]], [[2, 2, 2], [0, 0, 0], [1, 2, 0]]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = model.nll(x).mean()
        loss.backward()
        opt.step()
    uniform = 9 * math.log(3)
    assert model.nll(x).mean() < 0.25 * uniform, (
        f"NLL {float(model.nll(x).mean()):.3f} vs uniform {uniform:.3f}"
    )


@pytest.mark.parametrize(
    "x,err",
    [
        (torch.zeros(2, 4, 4), TypeError),
        (torch.zeros(2, 3, 4, dtype=torch.int64), ValueError),
        (torch.full((2, 4, 4), 5), ValueError),
        (torch.full((2, 4, 4), -1), ValueError),
    ],
)
def test_image_transformer_rejects_bad_input(x, err):
    with pytest.raises(err):
        _model()(x)


def test_image_transformer_rejects_bad_config():
    for kw in ({"attention": "global"}, {"positions": "rope"}, {"size": (4,)}, {"levels": 1}):
        args = {"levels": 5, "size": (4, 4), "dim": 16, "num_heads": 2} | kw
        with pytest.raises(ValueError):
            tr.ImageTransformer(args.pop("levels"), args.pop("size"), **args)


def test_block_has_vit_b16_encoder_block_parameter_count():
    from torchvision.models.vision_transformer import EncoderBlock

    ours = tr.TransformerBlock(768, 12)
    ref = EncoderBlock(12, 768, 3072, 0.0, 0.0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 7_087_872
