"""course_lib.nn.swin: windows, cyclic shift and mask, relative position bias, patch merging, Swin."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models import swin_transformer as tvs

from course_lib.nn import swin


def _seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------ windows
def test_window_partition_round_trip_is_exact_and_orders_windows_row_major():
    x = torch.randn(2, 8, 12, 5)
    w = swin.window_partition(x, 4)
    assert w.shape == (2 * 2 * 3, 16, 5)
    assert torch.equal(swin.window_reverse(w, 4, 8, 12), x)
    # window 4 of image 0 is grid cell (1, 1): rows 4..7, columns 4..7, tokens row-major
    assert torch.equal(w[4], x[0, 4:8, 4:8].reshape(16, 5))
    assert torch.equal(w[6], x[1, 0:4, 0:4].reshape(16, 5))
    with pytest.raises(ValueError, match="divisible"):
        swin.window_partition(torch.randn(1, 6, 8, 2), 4)
    with pytest.raises(ValueError, match="windows must be"):
        swin.window_reverse(torch.randn(5, 16, 2), 4, 8, 8)


def test_cyclic_shift_rolls_up_left_and_back():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    y = swin.cyclic_shift(x, 1)
    assert y[0, 0, 0, 0] == 5 and y[0, 3, 3, 0] == 0
    assert torch.equal(swin.cyclic_shift(y, -1), x)


def test_shifted_mask_region_counts_of_the_digest():
    """8x8 map, M = 4, s = 2: 9 regions; the 4 windows allow 1, 1/2, 1/2, 1/4 of their pairs."""
    ids = swin.shift_regions(8, 8, 4, 2)
    assert ids.unique().numel() == 9
    mask = swin.shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16) and mask.dtype == torch.bool
    assert mask.float().mean(dim=(1, 2)).tolist() == [1.0, 0.5, 0.5, 0.25]
    assert torch.equal(mask, mask.transpose(1, 2))  # symmetric
    assert mask.diagonal(dim1=1, dim2=2).all()  # every token sees itself
    assert swin.shifted_window_mask(8, 8, 4, 0).all()
    # regions per window: 1, 2, 2, 4
    wins = swin.window_partition(ids[None, :, :, None], 4)[..., 0]
    assert [w.unique().numel() for w in wins] == [1, 2, 2, 4]
    with pytest.raises(ValueError, match="shift"):
        swin.shift_regions(8, 8, 4, 4)


def test_shifted_mask_matches_torchvision_mask():
    """torchvision builds the same mask (as -100 / 0 logits) inside shifted_window_attention."""
    h = w = 8
    m, s = 4, 2
    img_mask = torch.zeros(h, w)
    slices = ((0, -m), (-m, -s), (-s, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[hs[0] : hs[1], ws[0] : ws[1]] = cnt
            cnt += 1
    win = img_mask.view(h // m, m, w // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)
    ref = (win[:, None, :] - win[:, :, None]) == 0
    assert torch.equal(swin.shifted_window_mask(h, w, m, s), ref)


@pytest.mark.parametrize("m", [1, 2, 4, 7])
def test_relative_position_index_range_and_torchvision(m):
    idx = swin.relative_position_index(m)
    assert idx.shape == (m * m, m * m) and idx.dtype == torch.int64
    assert idx.min() >= 0 and idx.max() == (2 * m - 1) ** 2 - 1
    assert (idx.diagonal() == (2 * m - 1) * (m - 1) + (m - 1)).all()  # zero offset: the centre
    assert idx.unique().numel() == (2 * m - 1) ** 2  # every offset occurs
    ref = tvs.ShiftedWindowAttention(8, [m, m], [0, 0], 2).relative_position_index.view(m * m, m * m)
    assert torch.equal(idx, ref)


def test_attention_flops_formulas():
    # Swin-T stage 1: 56 x 56 tokens, C = 96, M = 7
    assert swin.attention_flops(56, 56, 96) == 4 * 3136 * 96**2 + 2 * 3136**2 * 96
    assert round(swin.attention_flops(56, 56, 96) / 1e9, 2) == 2.0
    assert round(swin.attention_flops(56, 56, 96, 7) / 1e9, 3) == 0.145
    # one window covering the map: the same cost as global attention
    assert swin.attention_flops(7, 7, 32, 7) == swin.attention_flops(7, 7, 32)


# ---------------------------------------------------------------------------------- attention
def _tv_attention(block: swin.SwinBlock, x: torch.Tensor, shift: int) -> torch.Tensor:
    a = block.attn.attn
    qkv_w = torch.cat([a.to_q.weight, a.to_k.weight, a.to_v.weight])
    qkv_b = torch.cat([a.to_q.bias, a.to_k.bias, a.to_v.bias])
    return tvs.shifted_window_attention(
        x,
        qkv_w,
        a.to_out.weight,
        block.attn.relative_position_bias(),
        [block.window, block.window],
        a.num_heads,
        [shift, shift],
        qkv_bias=qkv_b,
        proj_bias=a.to_out.bias,
        training=False,
    )


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_equals_torchvision(shift):
    _seeded(0)
    block = swin.SwinBlock(16, 4, window=4, shift=shift).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)  # a bias large enough to matter
    x = torch.randn(2, 8, 8, 16)
    torch.testing.assert_close(block.attention(x), _tv_attention(block, x, shift), atol=1e-5, rtol=1e-4)


def _naive_shifted_attention(block: swin.SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Attention computed token by token inside each window of the shifted grid (no roll, no mask):
    windows start at -s, -s + M, ... and are clipped to the map; the bias is read from the table with
    the two tokens' true offset."""
    a, m, s = block.attn.attn, block.window, block.shift
    b, h, w, c = x.shape
    heads, d = a.num_heads, a.head_dim
    table = block.attn.relative_position_bias_table
    q = a.to_q(x).view(b, h, w, heads, d)
    k = a.to_k(x).view(b, h, w, heads, d)
    v = a.to_v(x).view(b, h, w, heads, d)
    out = torch.zeros(b, h, w, heads, d)
    for i in range(h):
        for j in range(w):
            wi, wj = (i + s) // m, (j + s) // m  # the shifted window holding (i, j)
            rows = [r for r in range(h) if (r + s) // m == wi]
            cols = [col for col in range(w) if (col + s) // m == wj]
            keys = [(r, col) for r in rows for col in cols]
            bias = torch.stack([table[(i - r + m - 1) * (2 * m - 1) + (j - col + m - 1)] for r, col in keys])
            kk = torch.stack([k[:, r, col] for r, col in keys], dim=1)  # [B, n, heads, d]
            vv = torch.stack([v[:, r, col] for r, col in keys], dim=1)
            logits = torch.einsum("bhd,bnhd->bhn", q[:, i, j], kk) / math.sqrt(d) + bias.T[None]
            out[:, i, j] = torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), vv)
    return a.to_out(out.reshape(b, h, w, heads * d))


def test_shifted_window_attention_equals_naive_attention_inside_each_shifted_window():
    _seeded(1)
    block = swin.SwinBlock(8, 2, window=4, shift=2).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)
    x = torch.randn(2, 8, 12, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            block.attention(x), _naive_shifted_attention(block, x), atol=1e-5, rtol=1e-4
        )


def test_window_attention_is_local_exactly():
    """Without shift, an output token depends on the tokens of its own window only (gradients)."""
    _seeded(2)
    block = swin.SwinBlock(8, 2, window=4, shift=0)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    block(x)[0, 5, 6].sum().backward()
    touched = x.grad[0].abs().sum(-1) > 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[4:8, 4:8] = True
    assert torch.equal(touched, expected)


def test_shifted_block_mixes_across_the_unshifted_windows():
    _seeded(3)
    block = swin.SwinBlock(8, 2, window=4, shift=2)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    block(x)[0, 3, 3].sum().backward()  # in the shifted window covering rows/cols 2..5
    touched = x.grad[0].abs().sum(-1) > 0
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(touched, expected)


def test_a_map_of_one_window_is_not_shifted():
    _seeded(4)
    shifted = swin.SwinBlock(8, 2, window=4, shift=2).eval()
    plain = swin.SwinBlock(8, 2, window=4, shift=0).eval()
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 4, 4, 8)
    torch.testing.assert_close(shifted(x), plain(x))


# ------------------------------------------------------------------------- merging and models
def test_patch_merging_equals_torchvision():
    _seeded(5)
    ours = swin.PatchMerging(6)
    ref = tvs.PatchMerging(6)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 4, 6)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours(x).shape == (2, 4, 2, 12)
    with pytest.raises(ValueError, match="even"):
        ours(torch.randn(1, 3, 4, 6))


def _to_torchvision_state(model: swin.Swin) -> dict[str, torch.Tensor]:
    out = {
        "features.0.0.weight": model.patch_embed.weight,
        "features.0.0.bias": model.patch_embed.bias,
        "features.0.2.weight": model.embed_norm.weight,
        "features.0.2.bias": model.embed_norm.bias,
        "norm.weight": model.norm.weight,
        "norm.bias": model.norm.bias,
        "head.weight": model.head.weight,
        "head.bias": model.head.bias,
    }
    feat = 1
    for i, stage in enumerate(model.stages):
        blocks = list(stage)
        if i:
            merge = blocks.pop(0)
            for name, t in merge.state_dict().items():
                out[f"features.{feat}.{name}"] = t
            feat += 1
        for j, blk in enumerate(blocks):
            p = f"features.{feat}.{j}."
            a = blk.attn.attn
            out[p + "norm1.weight"], out[p + "norm1.bias"] = blk.norm1.weight, blk.norm1.bias
            out[p + "norm2.weight"], out[p + "norm2.bias"] = blk.norm2.weight, blk.norm2.bias
            out[p + "attn.qkv.weight"] = torch.cat([a.to_q.weight, a.to_k.weight, a.to_v.weight])
            out[p + "attn.qkv.bias"] = torch.cat([a.to_q.bias, a.to_k.bias, a.to_v.bias])
            out[p + "attn.proj.weight"], out[p + "attn.proj.bias"] = a.to_out.weight, a.to_out.bias
            out[p + "attn.relative_position_bias_table"] = blk.attn.relative_position_bias_table
            out[p + "mlp.0.weight"], out[p + "mlp.0.bias"] = blk.mlp[0].weight, blk.mlp[0].bias
            out[p + "mlp.3.weight"], out[p + "mlp.3.bias"] = blk.mlp[2].weight, blk.mlp[2].bias
        feat += 1
    return {k: v.detach().clone() for k, v in out.items()}


def test_small_swin_equals_torchvision_swin_with_the_same_weights():
    _seeded(6)
    ours = swin.Swin(5, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window=4).eval()
    ref = tvs.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=5
    ).eval()
    state = _to_torchvision_state(ours)
    missing = ref.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys
    assert all("relative_position_index" in k for k in missing.missing_keys), missing.missing_keys
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_swin_t_has_torchvision_parameter_count():
    ours = swin.swin_t()
    ref = torchvision.models.swin_t(weights=None)
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in ref.parameters()) == 28_288_354
    assert [len(s) for s in ours.stages] == [2, 3, 7, 3]  # blocks (+ a merging layer from stage 2)


def test_swin_shapes_gradients_and_bad_input():
    _seeded(7)
    model = swin.Swin(4, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window=4, drop_path=0.1)
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.features(x).shape == (2, 4, 4, 32)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 3, 24, 24))
    with pytest.raises(ValueError, match="stage"):
        swin.Swin(4, depths=(2, 2), num_heads=(2,))
    with pytest.raises(ValueError, match="shift"):
        swin.SwinBlock(8, 2, window=4, shift=4)
    plain = swin.Swin(4, embed_dim=16, depths=(2,), num_heads=(2,), window=4, shift=False)
    assert all(b.shift == 0 for b in plain.stages[0])


def test_return_weights_rows_sum_to_one_and_masked_pairs_are_zero():
    _seeded(8)
    block = swin.SwinBlock(8, 2, window=4, shift=2).eval()
    out, w = block.attention(torch.randn(1, 8, 8, 8), return_weights=True)
    assert w.shape == (4, 2, 16, 16)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 2, 16))
    mask = swin.shifted_window_mask(8, 8, 4, 2)
    assert (w.masked_select(~mask[:, None].expand_as(w)) == 0).all()
