"""course_lib.nn.moe: router, load-balancing loss, stacked experts, RAPHAEL's time-MoE and space-MoE."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from course_lib.nn import moe


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ load balancing
def _switch_loss_by_definition(probs: torch.Tensor, first: torch.Tensor) -> float:
    n_rows, n_exp = probs.shape
    total = 0.0
    for i in range(n_exp):
        f_i = sum(int(e) == i for e in first) / n_rows
        p_i = sum(float(probs[r, i]) for r in range(n_rows)) / n_rows
        total += f_i * p_i
    return n_exp * total


@pytest.mark.parametrize("num_experts", [2, 4, 8])
def test_balancing_loss_is_one_for_uniform_routing_and_num_experts_under_collapse(num_experts):
    rows = 4 * num_experts
    uniform = torch.full((rows, num_experts), 1 / num_experts)
    spread = torch.arange(rows) % num_experts
    assert_close(moe.load_balancing_loss(uniform, spread), torch.tensor(1.0))
    collapsed = torch.zeros(rows, num_experts)
    collapsed[:, 0] = 1
    assert_close(
        moe.load_balancing_loss(collapsed, torch.zeros(rows, dtype=torch.long)),
        torch.tensor(1.0 * num_experts),
    )


def test_balancing_loss_rises_as_routing_collapses():
    e, rows = 4, 64
    values = []
    for share in (0.25, 0.5, 0.75, 1.0):  # fraction of rows sent to expert 0, the rest spread evenly
        n0 = int(share * rows)
        first = torch.cat([torch.zeros(n0, dtype=torch.long), 1 + torch.arange(rows - n0) % (e - 1)])
        probs = torch.full((rows, e), (1 - share) / (e - 1))
        probs[:, 0] = share
        values.append(float(moe.load_balancing_loss(probs, first)))
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(4.0)
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_balancing_loss_matches_its_definition_and_its_gradient_pushes_the_busy_expert_down():
    logits = torch.randn(20, 5, generator=_gen(1), requires_grad=True)
    probs = logits.softmax(-1)
    first = torch.tensor([0] * 10 + [1, 2, 3, 4] * 2 + [1, 2])
    loss = moe.load_balancing_loss(probs, first.unsqueeze(1))  # Tensor[R, k] works too
    assert float(loss.detach()) == pytest.approx(_switch_loss_by_definition(probs.detach(), first), rel=1e-6)
    p = probs.detach().clone().requires_grad_(True)
    moe.load_balancing_loss(p, first).backward()
    # dL/dP_ri = N f_i / R: largest for the expert that receives most rows
    assert int(p.grad[0].argmax()) == 0


# ------------------------------------------------------------------------------ router
def test_router_shapes_and_gates():
    router = moe.TopKRouter(6, 4, k=1).eval()
    out = router(torch.randn(10, 6, generator=_gen()))
    assert out.logits.shape == out.probs.shape == (10, 4)
    assert out.indices.shape == out.gates.shape == (10, 1) and out.indices.dtype == torch.int64
    assert torch.equal(out.indices[:, 0], out.probs.argmax(-1))
    assert_close(out.gates[:, 0], out.probs.max(-1).values)
    top2 = moe.TopKRouter(6, 4, k=2).eval()(torch.randn(10, 6, generator=_gen()))
    assert top2.indices.shape == (10, 2)
    assert_close(top2.gates.sum(-1), torch.ones(10))
    assert (top2.indices[:, 0] != top2.indices[:, 1]).all()


def test_hard_argmax_router_gets_no_gradient_and_gate_scaling_gives_one():
    x, t = torch.randn(8, 5, 6, generator=_gen(2)), torch.randn(8, 3, generator=_gen(3))
    for scale, expect_grad in ((False, False), (True, True)):
        torch.manual_seed(0)
        layer = moe.TimeMoE(6, 3, num_experts=4, scale_by_gate=scale)
        out, _ = layer(x, t)
        out.pow(2).sum().backward()
        grad = layer.router.gate.weight.grad
        has_grad = grad is not None and bool(grad.abs().sum() > 0)
        assert has_grad == expect_grad, f"scale_by_gate={scale}: router gradient {grad}"
        assert layer.experts.w1.grad is not None  # the experts learn either way


def test_noisy_gating_is_on_in_training_and_off_in_eval():
    torch.manual_seed(0)
    router = moe.TopKRouter(4, 4, noise_std=1.0)
    x = 0.1 * torch.randn(200, 4, generator=_gen(4))  # small logits: noise matters
    router.train()
    a, b = router(x).indices, router(x).indices
    assert not torch.equal(a, b), "training routes should be noisy"
    router.eval()
    c, d = router(x), router(x)
    assert torch.equal(c.indices, d.indices)
    assert torch.equal(c.indices[:, 0], c.probs.argmax(-1))
    quiet = moe.TopKRouter(4, 4, noise_std=0.0).train()
    assert torch.equal(quiet(x).indices, quiet(x).indices)


def test_noise_only_changes_routes_near_decision_boundaries():
    torch.manual_seed(0)
    router = moe.TopKRouter(2, 4, noise_std=0.5)
    x = torch.randn(2000, 2, generator=_gen(5)) * 3
    clean = router.eval()(x)
    noisy = router.train()(x)
    top2 = clean.logits.topk(2, -1).values
    margin = (top2[:, 0] - top2[:, 1]).detach()
    changed = noisy.indices[:, 0] != clean.indices[:, 0]
    assert changed.any()
    assert float(margin[changed].mean()) < 0.5 * float(margin[~changed].mean())


# ------------------------------------------------------------------------------ experts
def test_expert_ffn_gathers_each_rows_expert():
    experts = moe.ExpertFFN(3, 5, hidden=7)
    x = torch.randn(6, 4, 5, generator=_gen(6))
    index = torch.tensor([2, 0, 1, 1, 2, 0])
    out = experts(x, index)
    assert out.shape == (6, 4, 5)
    ref = torch.stack([experts.expert(int(e), x[r]) for r, e in enumerate(index)])
    assert_close(out, ref)
    assert experts.w1.shape == (3, 5, 7) and experts.hidden == 7
    assert moe.ExpertFFN(2, 4).hidden == 16


def test_expert_ffn_float64():
    experts = moe.ExpertFFN(2, 3).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=_gen(7))
    assert experts(x, torch.tensor([1, 0])).dtype == torch.float64


# ------------------------------------------------------------------------------ time-MoE
def test_time_moe_is_the_gated_expert_of_each_samples_timestep():
    torch.manual_seed(0)
    layer = moe.TimeMoE(8, 4, num_experts=3, hidden=16).eval()
    h, t = torch.randn(5, 6, 8, generator=_gen(8)), torch.randn(5, 4, generator=_gen(9))
    out, route = layer(h, t)
    assert out.shape == (5, 6, 8) and route.indices.shape == (5, 1)
    ref = torch.stack(
        [
            float(route.gates[b, 0].detach()) * layer.experts.expert(int(route.indices[b, 0]), h[b])
            for b in range(5)
        ]
    )
    assert_close(out, ref)


# ------------------------------------------------------------------------------ space-MoE
def _space_moe_by_formula(layer, h, tokens, masks):
    """(1/n_y) Σ_i g_i e_route(y_i)(h ⊙ M_i) ⊙ M_i, one sample and one token at a time."""
    b, n_y = tokens.shape[:2]
    route = layer.router(tokens.reshape(b * n_y, -1))
    out = torch.zeros_like(h)
    for s in range(b):
        for i in range(n_y):
            r = s * n_y + i
            m = masks[s, i].unsqueeze(-1)
            y = route.gates[r, 0] * layer.experts.expert(int(route.indices[r, 0]), h[s] * m)
            out[s] += (y * m if layer.remask else y) / n_y
    return out


@pytest.mark.parametrize("remask", [True, False])
def test_space_moe_matches_the_formula(remask):
    torch.manual_seed(0)
    layer = moe.SpaceMoE(6, 5, num_experts=3, hidden=12, remask=remask).eval()
    h, tokens = torch.randn(2, 9, 6, generator=_gen(10)), torch.randn(2, 4, 5, generator=_gen(11))
    masks = (torch.rand(2, 4, 9, generator=_gen(12)) > 0.5).float()
    out, route = layer(h, tokens, masks)
    assert out.shape == (2, 9, 6) and route.indices.shape == (8, 1)
    assert_close(out, _space_moe_by_formula(layer, h, tokens, masks))
    assert_close(layer(h, tokens, masks.bool())[0], out)  # bool masks work too


def test_space_moe_with_one_expert_and_full_masks_is_that_expert():
    torch.manual_seed(0)
    layer = moe.SpaceMoE(6, 5, num_experts=1, hidden=12)
    h, tokens = torch.randn(3, 7, 6, generator=_gen(13)), torch.randn(3, 4, 5, generator=_gen(14))
    out, route = layer(h, tokens, torch.ones(3, 4, 7))
    assert_close(route.gates, torch.ones(12, 1))
    assert_close(out, layer.experts.expert(0, h))


def test_space_moe_remasking_zeroes_the_output_outside_the_masks_and_the_formula_alone_leaks():
    torch.manual_seed(0)
    h, tokens = torch.randn(2, 16, 6, generator=_gen(15)), torch.randn(2, 3, 5, generator=_gen(16))
    masks = torch.zeros(2, 3, 16)
    masks[:, 0, :4] = 1
    masks[:, 1, 2:6] = 1
    masks[:, 2, 10:12] = 1
    outside = masks.amax(1) == 0  # [2, 16]
    remasked = moe.SpaceMoE(6, 5, num_experts=3)
    leaky = moe.SpaceMoE(6, 5, num_experts=3, remask=False)
    leaky.load_state_dict(remasked.state_dict())
    out, _ = remasked.eval()(h, tokens, masks)
    assert torch.equal(out[outside], torch.zeros_like(out[outside]))
    assert out[~outside].abs().sum() > 0
    out_leaky, _ = leaky.eval()(h, tokens, masks)
    assert out_leaky[outside].abs().min() > 0, "without re-masking the experts' biases leak outside"


def test_space_moe_runs_one_expert_pass_per_token():
    layer = moe.SpaceMoE(4, 3, num_experts=2)
    rows = []
    layer.experts.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    for n_y in (1, 2, 5):
        layer(torch.randn(3, 8, 4), torch.randn(3, n_y, 3), torch.ones(3, n_y, 8))
    assert rows == [3, 6, 15]


def test_attention_masks():
    attn = torch.tensor([[[0.1, 0.5, 0.2, 0.2], [0.0, 0.0, 0.3, 0.7]]])
    m = moe.attention_masks(attn, 0.4)
    assert m.tolist() == [[[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]
    assert moe.attention_masks(attn, 0.0).eq(1).all()
    assert moe.attention_masks(attn, 1.0).sum(-1).tolist() == [[1.0, 1.0]]  # the maximum is kept
    assert moe.attention_masks(attn.requires_grad_(), 0.5).requires_grad is False


def test_sparser_masks_as_alpha_rises():
    attn = torch.rand(4, 3, 20, generator=_gen(17)).softmax(-1)
    sizes = [float(moe.attention_masks(attn, a).sum()) for a in (0.0, 0.2, 0.5, 0.9)]
    assert all(a >= b for a, b in zip(sizes, sizes[1:], strict=False)) and sizes[0] > sizes[-1]


# ------------------------------------------------------------------------------ bad input
def test_bad_input_raises_with_a_clear_message():
    with pytest.raises(ValueError, match="num_experts"):
        moe.TopKRouter(4, 0)
    with pytest.raises(ValueError, match="k must be"):
        moe.TopKRouter(4, 2, k=3)
    with pytest.raises(ValueError, match="noise_std"):
        moe.TopKRouter(4, 2, noise_std=-1.0)
    with pytest.raises(ValueError, match="x must be"):
        moe.TopKRouter(4, 2)(torch.randn(3, 5))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        moe.TopKRouter(4, 2)([1.0, 2.0])
    experts = moe.ExpertFFN(2, 4)
    with pytest.raises(ValueError, match="index values"):
        experts(torch.randn(2, 3, 4), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="index must be"):
        experts(torch.randn(2, 3, 4), torch.tensor([0]))
    with pytest.raises(TypeError, match="index must be an integer"):
        experts(torch.randn(2, 3, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="e must be"):
        experts.expert(2, torch.randn(3, 4))
    with pytest.raises(ValueError, match="h must be"):
        moe.TimeMoE(4, 3, 2)(torch.randn(2, 3, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="t_emb has"):
        moe.TimeMoE(4, 3, 2)(torch.randn(2, 3, 4), torch.randn(3, 3))
    space = moe.SpaceMoE(4, 3, 2)
    with pytest.raises(ValueError, match="masks must be"):
        space(torch.randn(2, 5, 4), torch.randn(2, 3, 3), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="tokens must be"):
        space(torch.randn(2, 5, 4), torch.randn(1, 3, 3), torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="alpha"):
        moe.attention_masks(torch.rand(1, 2, 3), 1.5)
    with pytest.raises(ValueError, match="indices must be"):
        moe.load_balancing_loss(torch.rand(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="indices must be an integer"):
        moe.load_balancing_loss(torch.rand(4, 2), torch.zeros(4))
