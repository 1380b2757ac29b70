"""Mixture-of-experts layers (chapter 12, RAPHAEL): a top-k router with noisy gating and the Switch
load-balancing loss, experts stored as stacked weights, and RAPHAEL's time-MoE and space-MoE.

The pieces follow the formulas of the RAPHAEL posts (Xue et al., 2023), with the two fixes an
implementation needs and the posts leave out:

- a hard ``argmax`` router gets no gradient, so the chosen expert's output is scaled by its gate
  probability (Switch Transformer, Fedus et al., 2022) and a load-balancing loss keeps the router from
  sending everything to one expert;
- an expert applied to masked features ``h ⊙ M`` is *not* zero outside ``M`` (its biases map zeros to
  a constant), so :class:`SpaceMoE` multiplies the output by the mask again.

Experts are stored as stacked weights ``W1: [E, d, h]``, ``W2: [E, h, d]``; a routed call gathers the
weights of each row's expert and runs one batched matrix product, with no Python loop over experts.
A "row" is whatever shares one routing decision: a sample for the time-MoE (its timestep), a
(sample, token) pair for the space-MoE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ExpertFFN",
    "RouterOutput",
    "SpaceMoE",
    "TimeMoE",
    "TopKRouter",
    "attention_masks",
    "load_balancing_loss",
]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_float_tensor(x: object, name: str, ndim: int, last: int | None = None, what: str = "") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.ndim != ndim or not x.is_floating_point() or (last is not None and x.shape[-1] != last):
        raise ValueError(f"{name} must be a float Tensor{what}, got {tuple(x.shape)} {x.dtype}")


# --------------------------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------------------------
@dataclass
class RouterOutput:
    """What a router decided for each row.

    Attributes:
        logits: ``Tensor[R, E]`` router logits (before noise).
        probs: ``Tensor[R, E]`` softmax of the clean logits (what the balancing loss uses).
        indices: ``Tensor[R, k]`` (int64) the chosen experts, best first (noise included in training).
        gates: ``Tensor[R, k]`` the weight of each chosen expert's output: its probability (``k = 1``,
            Switch), the softmax over the chosen logits (``k > 1``), or ones when the router is hard
            (``scale_by_gate=False``, no gradient reaches the router then).
    """

    logits: torch.Tensor
    probs: torch.Tensor
    indices: torch.Tensor
    gates: torch.Tensor

    def load_balancing_loss(self) -> torch.Tensor:
        """:func:`load_balancing_loss` of this routing decision."""
        return load_balancing_loss(self.probs, self.indices)


def load_balancing_loss(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    r"""The Switch Transformer's auxiliary loss :math:`N \sum_i f_i P_i`.

    ``f_i`` is the fraction of rows whose first choice is expert ``i`` (a count: no gradient) and
    ``P_i`` the mean router probability of expert ``i`` (differentiable). The loss is 1.0 when both
    are uniform, rises to ``N`` when every row goes to one expert with probability 1, and its gradient
    pushes probability away from the experts that receive most rows.

    Args:
        probs: ``Tensor[R, E]`` router probabilities (rows sum to 1).
        indices: ``Tensor[R]`` or ``Tensor[R, k]`` chosen experts; only the first choice counts.
    Returns:
        a scalar tensor.

    Introduced in chapter 12.
    """
    _check_float_tensor(probs, "probs", 2, what="[R, E]")
    if not isinstance(indices, torch.Tensor) or indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"indices must be an integer Tensor, got {getattr(indices, 'dtype', type(indices))}")
    first = indices if indices.ndim == 1 else indices[:, 0] if indices.ndim == 2 else None
    if first is None or first.shape[0] != probs.shape[0] or probs.shape[0] == 0:
        raise ValueError(
            f"indices must be Tensor[R] or Tensor[R, k] with R = {probs.shape[0]} >= 1 rows, "
            f"got {tuple(indices.shape)}"
        )
    num_experts = probs.shape[1]
    f = torch.bincount(first, minlength=num_experts).to(probs.dtype) / first.shape[0]
    return num_experts * (f * probs.mean(0)).sum()


class TopKRouter(nn.Module):
    r"""A linear gate network with noisy top-k selection, as in both RAPHAEL routers:
    :math:`\mathrm{route}(x) = \mathrm{argmax}\,\mathrm{softmax}(G(x) + \epsilon)`.

    In training, Gaussian noise of standard deviation ``noise_std`` is added to the logits before the
    top-k choice, which spreads rows near a decision boundary over neighbouring experts (exploration);
    in ``eval()`` there is no noise and routing is deterministic. The probabilities and gates are
    always computed from the clean logits.

    Args:
        in_features: length of the router input (a timestep embedding, a token embedding...).
        num_experts: ``E``.
        k: experts per row (1 = Switch / RAPHAEL).
        noise_std: the noise in training (0 turns it off).
        scale_by_gate: weight the chosen experts by their gates (the router then gets a gradient from
            the task loss); ``False`` is the posts' literal hard argmax (gates are ones, no gradient).
    Shapes:
        ``forward(x: Tensor[R, in_features]) -> RouterOutput`` with ``R`` rows.

    Introduced in chapter 12.
    """

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        *,
        k: int = 1,
        noise_std: float = 1.0,
        scale_by_gate: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(in_features=in_features, num_experts=num_experts, k=k)
        if k > num_experts:
            raise ValueError(f"k must be <= num_experts = {num_experts}, got {k}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.num_experts, self.k = num_experts, k
        self.noise_std, self.scale_by_gate = float(noise_std), bool(scale_by_gate)
        self.gate = nn.Linear(in_features, num_experts)

    def forward(self, x: torch.Tensor) -> RouterOutput:
        _check_float_tensor(x, "x", 2, self.gate.in_features, f"[R, {self.gate.in_features}]")
        logits = self.gate(x)
        probs = logits.softmax(-1)
        noisy = logits
        if self.training and self.noise_std > 0:
            noisy = logits + self.noise_std * torch.randn_like(logits)
        indices = noisy.detach().topk(self.k, dim=-1).indices
        if not self.scale_by_gate:
            gates = torch.ones(indices.shape, dtype=x.dtype, device=x.device)
        elif self.k == 1:
            gates = probs.gather(-1, indices)
        else:
            gates = logits.gather(-1, indices).softmax(-1)
        return RouterOutput(logits, probs, indices, gates)

    def extra_repr(self) -> str:
        return (
            f"{self.gate.in_features} -> {self.num_experts} experts, k={self.k}, "
            f"noise_std={self.noise_std}, scale_by_gate={self.scale_by_gate}"
        )


# --------------------------------------------------------------------------------------------
# experts as stacked weights
# --------------------------------------------------------------------------------------------
class ExpertFFN(nn.Module):
    """``E`` two-layer feed-forward experts ``d -> hidden -> d`` (GELU) stored as stacked weights.

    ``forward(x, index)`` applies expert ``index[r]`` to every position of row ``r``: the weights of
    each row's expert are gathered (``W1[index]``) and one batched product runs for all rows at once.
    The cost is one FFN pass per row and position, whatever ``E`` is; the parameters grow with ``E``.

    Args:
        num_experts: ``E``.
        dim: feature size ``d``.
        hidden: hidden size of each expert (default ``4 * dim``).
    Shapes:
        ``forward(x: Tensor[R, L, d], index: Tensor[R]) -> Tensor[R, L, d]``;
        ``expert(e, x: Tensor[..., d])`` applies expert ``e`` alone (for checks).

    Introduced in chapter 12.
    """

    def __init__(self, num_experts: int, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = 4 * dim if hidden is None else hidden
        _check_positive(num_experts=num_experts, dim=dim, hidden=hidden)
        self.num_experts, self.dim, self.hidden = num_experts, dim, hidden
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert initialized like a pair of ``nn.Linear`` layers (uniform, fan-in bound)."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = w.shape[1] ** -0.5
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` alone on ``x: Tensor[..., d]``."""
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < self.num_experts:
            raise ValueError(f"e must be an int in [0, {self.num_experts}), got {e!r}")
        return F.gelu(x @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        _check_float_tensor(x, "x", 3, self.dim, f"[R, L, {self.dim}]")
        if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"index must be an integer Tensor, got {getattr(index, 'dtype', type(index))}")
        if tuple(index.shape) != (x.shape[0],):
            raise ValueError(f"index must be Tensor[R] with R = {x.shape[0]}, got {tuple(index.shape)}")
        if index.numel() and not (0 <= int(index.min()) and int(index.max()) < self.num_experts):
            raise ValueError(f"index values must lie in [0, {self.num_experts}), got {index.tolist()}")
        index = index.long()
        w1, b1, w2, b2 = (p.index_select(0, index) for p in (self.w1, self.b1, self.w2, self.b2))
        h = F.gelu(torch.baddbmm(b1.unsqueeze(1), x, w1))
        return torch.baddbmm(b2.unsqueeze(1), h, w2)

    def extra_repr(self) -> str:
        return f"{self.num_experts} experts, {self.dim} -> {self.hidden} -> {self.dim}"


# --------------------------------------------------------------------------------------------
# RAPHAEL's time-MoE and space-MoE
# --------------------------------------------------------------------------------------------
class TimeMoE(nn.Module):
    r"""RAPHAEL's time-MoE: :math:`h' = g \cdot te_{t_\mathrm{router}(t)}(h_c)`, one expert per sample
    chosen from its timestep embedding (the "Time Gate" network :math:`G'`).

    Every position of a sample goes through the same expert, so the router sees ``B`` rows per batch.
    The gate ``g`` is the chosen expert's probability (see :class:`TopKRouter`); the residual
    connection and normalization are left to the caller.

    Args:
        dim: feature size ``d`` of ``h_c``.
        time_dim: length of the timestep embedding.
        num_experts: number of experts.
        hidden: hidden size of each expert (default ``4 * dim``).
        noise_std, scale_by_gate: passed to the router.
    Shapes:
        ``forward(h: Tensor[B, L, d], t_emb: Tensor[B, time_dim]) -> (Tensor[B, L, d], RouterOutput)``.

    Introduced in chapter 12.
    """

    def __init__(
        self,
        dim: int,
        time_dim: int,
        num_experts: int,
        hidden: int | None = None,
        *,
        noise_std: float = 1.0,
        scale_by_gate: bool = True,
    ) -> None:
        super().__init__()
        self.router = TopKRouter(time_dim, num_experts, noise_std=noise_std, scale_by_gate=scale_by_gate)
        self.experts = ExpertFFN(num_experts, dim, hidden)

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        d, td = self.experts.dim, self.router.gate.in_features
        _check_float_tensor(h, "h", 3, d, f"[B, L, {d}]")
        _check_float_tensor(t_emb, "t_emb", 2, td, f"[B, {td}]")
        if t_emb.shape[0] != h.shape[0]:
            raise ValueError(f"t_emb has {t_emb.shape[0]} rows for a batch of {h.shape[0]}")
        route = self.router(t_emb)
        out = self.experts(h, route.indices[:, 0]) * route.gates[:, :1, None]
        return out, route


def attention_masks(attn: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Binary region masks from cross-attention maps: :math:`M_i = \mathbb 1[A_i \ge \alpha \max A_i]`.

    The posts do not give the binarization RAPHAEL uses; this relative threshold is a design choice
    (``alpha = 0`` keeps every position, larger ``alpha`` gives sparser masks; the maximum position of
    each map is always kept).

    Args:
        attn: ``Tensor[B, n_y, L]`` the attention of each image position on each token, arranged per
            token (``A_i`` is ``attn[:, i]``), non-negative.
        alpha: threshold in ``[0, 1]``.
    Returns:
        ``Tensor[B, n_y, L]`` float masks of zeros and ones (no gradient).

    Introduced in chapter 12.
    """
    _check_float_tensor(attn, "attn", 3, what="[B, n_y, L]")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    a = attn.detach()
    return (a >= alpha * a.amax(-1, keepdim=True)).to(attn.dtype)


class SpaceMoE(nn.Module):
    r"""RAPHAEL's space-MoE: :math:`\frac1{n_y}\sum_i g_i\, e_{\mathrm{route}(y_i)}(h' \odot M_i) \odot M_i`.

    Each text token ``y_i`` is routed (the "Text Gate" network :math:`G` on its embedding) to one
    expert, which acts on the image features restricted to the token's region ``M_i``; the results are
    averaged over the tokens (not over the experts, as one post says). The trailing ``⊙ M_i`` is the
    re-masking the posts' formula lacks: without it an expert's biases leak a constant into every
    position outside ``M_i`` (``remask=False`` shows the leak).

    The cost is one expert pass per token over the whole map (``n_y`` passes), so the layer gets
    *more* expensive with longer prompts, whatever the number of experts.

    Args:
        dim: feature size ``d``.
        token_dim: length of the token embeddings.
        num_experts: number of experts.
        hidden: hidden size of each expert (default ``4 * dim``).
        noise_std, scale_by_gate: passed to the router.
        remask: multiply each expert's output by its mask again.
    Shapes:
        ``forward(h: Tensor[B, L, d], tokens: Tensor[B, n_y, token_dim], masks: Tensor[B, n_y, L])
        -> (Tensor[B, L, d], RouterOutput)`` with ``B * n_y`` router rows; ``masks`` are binary (see
        :func:`attention_masks`).

    Introduced in chapter 12.
    """

    def __init__(
        self,
        dim: int,
        token_dim: int,
        num_experts: int,
        hidden: int | None = None,
        *,
        noise_std: float = 1.0,
        scale_by_gate: bool = True,
        remask: bool = True,
    ) -> None:
        super().__init__()
        self.router = TopKRouter(token_dim, num_experts, noise_std=noise_std, scale_by_gate=scale_by_gate)
        self.experts = ExpertFFN(num_experts, dim, hidden)
        self.remask = bool(remask)

    def forward(
        self, h: torch.Tensor, tokens: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, RouterOutput]:
        d, td = self.experts.dim, self.router.gate.in_features
        _check_float_tensor(h, "h", 3, d, f"[B, L, {d}]")
        _check_float_tensor(tokens, "tokens", 3, td, f"[B, n_y, {td}]")
        b, length = h.shape[:2]
        n_y = tokens.shape[1]
        if tokens.shape[0] != b or n_y == 0:
            raise ValueError(f"tokens must be Tensor[{b}, n_y >= 1, {td}], got {tuple(tokens.shape)}")
        if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != (b, n_y, length):
            raise ValueError(
                f"masks must be a Tensor[B, n_y, L] = [{b}, {n_y}, {length}], "
                f"got {getattr(masks, 'shape', type(masks).__name__)}"
            )
        m = masks.to(h.dtype).unsqueeze(-1)  # [B, n_y, L, 1]
        route = self.router(tokens.reshape(b * n_y, td))
        x = (h.unsqueeze(1) * m).reshape(b * n_y, length, d)  # h' ⊙ M_i, one row per (sample, token)
        y = self.experts(x, route.indices[:, 0]).reshape(b, n_y, length, d)
        y = y * route.gates[:, 0].reshape(b, n_y, 1, 1)
        if self.remask:
            y = y * m
        return y.mean(1), route

    def extra_repr(self) -> str:
        return f"remask={self.remask}"
