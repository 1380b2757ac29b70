"""course_lib.nn.attention: scaled dot-product attention and the multi-head CrossAttention module."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import nn as cnn


def _scratch(x, c, m: cnn.CrossAttention, keep=None):
    """softmax(Q Kᵀ / √d) V per head, with explicit loops over batch and heads (the definition)."""
    b, lq, _ = x.shape
    h, d = m.num_heads, m.head_dim
    out = torch.zeros(b, lq, h * d, dtype=x.dtype)
    weights = torch.zeros(b, h, lq, c.shape[1], dtype=x.dtype)
    q, k, v = m.to_q(x), m.to_k(c), m.to_v(c)
    for i in range(b):
        for j in range(h):
            sl = slice(j * d, (j + 1) * d)
            logits = q[i, :, sl] @ k[i, :, sl].T / math.sqrt(d)
            if keep is not None:
                logits = logits.masked_fill(~keep[i], float("-inf"))
            w = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            w = w / w.sum(dim=1, keepdim=True)
            weights[i, j] = w
            out[i, :, sl] = w @ v[i, :, sl]
    return m.to_out(out), weights


@pytest.mark.parametrize("heads,head_dim", [(1, None), (2, None), (4, 3)])
def test_cross_attention_matches_the_definition(heads, head_dim):
    torch.manual_seed(0)
    m = cnn.CrossAttention(8, 5, num_heads=heads, head_dim=head_dim, qkv_bias=True)
    x, c = torch.randn(3, 7, 8), torch.randn(3, 4, 5)
    ref_out, ref_w = _scratch(x, c, m)
    out, w = m(x, c, return_weights=True)
    fast = m(x, c)
    assert out.shape == (3, 7, 8) and w.shape == (3, heads, 7, 4)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(fast, ref_out)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, heads, 7))


def test_attention_function_matches_sdpa():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 2)
    keep = torch.rand(2, 1, 5, 6) > 0.3
    keep[..., 0] = True
    for mask in (None, keep, torch.randn(5, 6)):
        out, w = cnn.dot_product_attention(q, k, v, mask)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))


def _mha_from(m: cnn.CrossAttention) -> nn.MultiheadAttention:
    e = m.num_heads * m.head_dim
    kdim = m.context_dim
    mha = nn.MultiheadAttention(e, m.num_heads, bias=True, kdim=kdim, vdim=kdim, batch_first=True)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([m.to_q.weight, m.to_k.weight, m.to_v.weight]))
        else:
            mha.q_proj_weight.copy_(m.to_q.weight)
            mha.k_proj_weight.copy_(m.to_k.weight)
            mha.v_proj_weight.copy_(m.to_v.weight)
        mha.in_proj_bias.copy_(torch.cat([m.to_q.bias, m.to_k.bias, m.to_v.bias]))
        mha.out_proj.weight.copy_(m.to_out.weight)
        mha.out_proj.bias.copy_(m.to_out.bias)
    return mha.eval()


@pytest.mark.parametrize("context_dim", [8, 6])
def test_matches_torch_multihead_attention_with_padding(context_dim):
    torch.manual_seed(2)
    m = cnn.CrossAttention(8, context_dim, num_heads=2, qkv_bias=True)
    mha = _mha_from(m)
    x, c = torch.randn(3, 5, 8), torch.randn(3, 4, context_dim)
    pad = torch.tensor([[False] * 4, [False, False, True, True], [False, True, False, True]])
    out, w = m(x, c, key_padding_mask=pad, return_weights=True)
    ref_out, ref_w = mha(x, c, c, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(m(x, c, key_padding_mask=pad), ref_out)
    assert torch.equal(w[1, :, :, 2:], torch.zeros(2, 5, 2))  # padded keys get exactly zero weight


def test_self_attention_when_context_is_none_and_masks_combine():
    torch.manual_seed(3)
    m = cnn.CrossAttention(6, num_heads=3)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(m(x), m(x, x))
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    out, w = m(x, attn_mask=causal, key_padding_mask=pad, return_weights=True)
    assert torch.equal(w[..., ~causal] == 0, torch.ones_like(w[..., ~causal], dtype=torch.bool))
    assert torch.equal(w[1, :, :, 3:], torch.zeros(3, 5, 2))
    torch.testing.assert_close(m(x, attn_mask=causal, key_padding_mask=pad), out)
    # a float mask combined with a padding mask: same as the bool version
    bias = torch.zeros(5, 5).masked_fill(~causal, float("-inf"))
    torch.testing.assert_close(m(x, attn_mask=bias, key_padding_mask=pad), out)
    # causality: the output at position i does not depend on later positions
    x2 = x.clone()
    x2[:, 4] += 1.0
    torch.testing.assert_close(m(x2, attn_mask=causal)[:, :4], m(x, attn_mask=causal)[:, :4])


def test_one_context_token_copies_its_value():
    torch.manual_seed(4)
    m = cnn.CrossAttention(4, 3, num_heads=2)
    x, c = torch.randn(2, 6, 4), torch.randn(2, 1, 3)
    out, w = m(x, c, return_weights=True)
    assert torch.equal(w, torch.ones(2, 2, 6, 1))
    torch.testing.assert_close(out, m.to_out(m.to_v(c)).expand(2, 6, 4))


def test_gradients_flow_to_every_projection_and_to_the_context():
    torch.manual_seed(5)
    m = cnn.CrossAttention(4, 3, num_heads=2)
    x, c = torch.randn(2, 6, 4, requires_grad=True), torch.randn(2, 3, 3, requires_grad=True)
    m(x, c).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert c.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_dtype_and_device_follow_the_inputs():
    m = cnn.CrossAttention(4, 3).double()
    x, c = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 3, 3, dtype=torch.float64)
    out, w = m(x, c, return_weights=True)
    assert out.dtype == w.dtype == torch.float64
    assert out.device == x.device
    if torch.cuda.is_available():
        m, x, c = m.to("cuda"), x.to("cuda"), c.to("cuda")
        assert m(x, c).device.type == "cuda"


def test_bad_input_raises():
    m = cnn.CrossAttention(4, 3, num_heads=2)
    x, c = torch.randn(2, 5, 4), torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(2, 5, 3), c)
    with pytest.raises(ValueError, match="context must be"):
        m(x, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="batch"):
        m(x, torch.randn(1, 3, 3))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        m(x, c, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        m(x, c, key_padding_mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no key"):
        m(x, c, key_padding_mask=torch.tensor([[False] * 3, [True] * 3]))
    with pytest.raises(ValueError, match="attn_mask"):
        m(x, c, attn_mask=torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must be bool or floating"):
        m(x, c, attn_mask=torch.ones(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        cnn.CrossAttention(5, num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):
        cnn.CrossAttention(4, num_heads=0)
    with pytest.raises(ValueError, match="query_dim"):
        cnn.CrossAttention(True)
    with pytest.raises(ValueError, match="q and k"):
        cnn.dot_product_attention(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4))


def test_names_are_exported():
    from course_lib.nn import attention

    for name in attention.__all__:
        assert getattr(cnn, name) is getattr(attention, name)
