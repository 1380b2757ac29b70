"""Text recognition utilities: character vocabularies, CTC and its decoders, edit distance (chapter 16).

CTC (Graves et al., 2006) scores a label sequence ``l`` against a ``T x C`` matrix of per-step
character probabilities by summing over every *alignment* (path) ``pi`` of length ``T`` that collapses
to ``l``: the collapse map ``B`` first merges repeated symbols, then removes blanks, so ``"t-oo"``
reads ``"to"`` and ``"t-o-o"`` reads ``"too"``. Everything here uses index 0 for the blank, like the
default of :func:`torch.nn.functional.ctc_loss`.

- :class:`Vocab`: a character set with ``encode`` / ``decode`` (blank at index 0);
- :func:`ctc_collapse`, :func:`ctc_greedy_decode` (best path), :func:`ctc_beam_search` (prefix beam
  search, which sums the probabilities of the paths of each prefix);
- :func:`ctc_forward` (the forward algorithm in log space, equal to ``F.ctc_loss``) and
  :func:`ctc_brute_force` (the same quantity by enumerating every path; only for tiny ``T``);
- :func:`edit_distance`, :func:`char_accuracy` (1 - total edits / total reference length) and
  :func:`word_accuracy` (exact matches);
- :class:`CharNGram` (a character n-gram language model with add-k smoothing) and :func:`lm_rescore`
  (re-rank a recognizer's candidate strings by ``log p_vision + weight * log p_LM``), a toy version of
  a language model correcting the vision model.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DIGITS",
    "ALPHANUMERIC",
    "CharNGram",
    "Vocab",
    "char_accuracy",
    "ctc_beam_search",
    "ctc_brute_force",
    "ctc_collapse",
    "ctc_forward",
    "ctc_greedy_decode",
    "edit_distance",
    "lm_rescore",
    "word_accuracy",
]

_LOG_ZERO = -1e30

#: The ten digits.
DIGITS = string.digits
#: Digits and upper-case letters (36 characters).
ALPHANUMERIC = string.digits + string.ascii_uppercase


class Vocab:
    """A character vocabulary with the CTC blank at index 0 and character ``i`` at index ``i + 1``.

    >>> v = Vocab("ab")
    >>> v.encode("ba"), v.decode([2, 1]), len(v)
    ([2, 1], 'ba', 3)
    """

    blank: int = 0

    def __init__(self, chars: str, blank_symbol: str = "-") -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError(f"chars must be a non-empty string of distinct characters, got {chars!r}")
        if blank_symbol in chars:
            raise ValueError(f"blank_symbol {blank_symbol!r} must not be one of the characters")
        self.chars = chars
        self.blank_symbol = blank_symbol
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        """Number of classes, blank included."""
        return len(self.chars) + 1

    def __repr__(self) -> str:
        return f"Vocab({self.chars!r})"

    def encode(self, text: str) -> list[int]:
        """Indices of the characters of ``text`` (never the blank)."""
        try:
            return [self._index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary {self.chars!r}") from None

    def decode(self, indices: Sequence[int] | Tensor, *, keep_blank: bool = False) -> str:
        """Characters of ``indices``; blanks are dropped unless ``keep_blank`` (then shown as ``-``)."""
        if isinstance(indices, Tensor):
            indices = indices.tolist()
        out = []
        for i in indices:
            if not 0 <= i < len(self):
                raise ValueError(f"index {i} is out of range for a vocabulary of {len(self)} classes")
            if i == self.blank:
                if keep_blank:
                    out.append(self.blank_symbol)
            else:
                out.append(self.chars[i - 1])
        return "".join(out)

    def encode_batch(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Concatenated targets and their lengths, the format ``F.ctc_loss`` accepts."""
        codes = [self.encode(t) for t in texts]
        flat = torch.tensor([i for c in codes for i in c], dtype=torch.long)
        lengths = torch.tensor([len(c) for c in codes], dtype=torch.long)
        return flat, lengths


def ctc_collapse(path: Sequence[int] | Tensor, blank: int = 0) -> list[int]:
    """The CTC map B: merge consecutive repeats first, then drop blanks."""
    if isinstance(path, Tensor):
        path = path.tolist()
    out: list[int] = []
    prev = None
    for s in path:
        if s != prev and s != blank:
            out.append(int(s))
        prev = s
    return out


def _check_log_probs(log_probs: Tensor) -> None:
    if not isinstance(log_probs, Tensor) or log_probs.dim() not in (2, 3):
        raise ValueError("log_probs must be a (T, C) or (T, N, C) tensor of log-probabilities")


def ctc_greedy_decode(log_probs: Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of a ``(T, N, C)`` (or ``(T, C)``) score matrix: argmax per step, then B.

    Best path is an approximation: the most probable *path* need not collapse to the most probable
    *labelling*, which sums over many paths (see :func:`ctc_beam_search`).
    """
    _check_log_probs(log_probs)
    if log_probs.dim() == 2:
        log_probs = log_probs[:, None]
    best = log_probs.argmax(dim=-1).T  # (N, T)
    return [ctc_collapse(row, blank) for row in best.tolist()]


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_beam_search(
    log_probs: Tensor, beam_width: int = 8, blank: int = 0, *, prune: float = 0.0
) -> list[tuple[list[int], float]]:
    """Prefix beam search on one ``(T, C)`` matrix of log-probabilities.

    Each kept prefix carries two log-probabilities: of the paths so far that end in a blank and of those
    that end in the prefix's last character (a repeat of that character extends only the second kind
    into a new character). Returns up to ``beam_width`` ``(labelling, log p)`` pairs, best first. With a
    beam at least as wide as the number of prefixes and ``prune=0`` it never prunes, and the scores are
    the exact ``log p(l | x)`` of each labelling (what :func:`ctc_brute_force` sums). ``prune > 0`` skips,
    at each step, the characters whose probability is below ``prune`` (much faster on peaked outputs).
    """
    _check_log_probs(log_probs)
    if log_probs.dim() != 2:
        raise ValueError(
            f"ctc_beam_search decodes one sequence: expected (T, C), got {tuple(log_probs.shape)}"
        )
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be in [0, 1), got {prune}")
    floor = math.log(prune) if prune > 0 else -math.inf
    lp = log_probs.detach().double().cpu().tolist()
    n_classes = len(lp[0]) if lp else 0
    ninf = -math.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, ninf)}  # prefix -> (blank, non-blank)
    for row in lp:
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, pb, pnb, nxt=nxt):
            cur = nxt.setdefault(prefix, [ninf, ninf])
            cur[0] = _logsumexp(cur[0], pb)
            cur[1] = _logsumexp(cur[1], pnb)

        for prefix, (pb, pnb) in beams.items():
            total = _logsumexp(pb, pnb)
            add(prefix, total + row[blank], ninf)  # a blank keeps the prefix
            last = prefix[-1] if prefix else None
            for c in range(n_classes):
                if c == blank or row[c] < floor:
                    continue
                p = row[c]
                if c == last:
                    add(prefix, ninf, pnb + p)  # repeat merged into the last character
                    add(prefix + (c,), ninf, pb + p)  # a blank separated them: a new character
                else:
                    add(prefix + (c,), ninf, total + p)
        scored = [kv for kv in nxt.items() if _logsumexp(*kv[1]) > ninf]
        scored.sort(key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {k: (v[0], v[1]) for k, v in scored[:beam_width]}
    ranked = sorted(((list(k), _logsumexp(*v)) for k, v in beams.items()), key=lambda kv: kv[1], reverse=True)
    return ranked


def ctc_forward(log_probs: Tensor, target: Sequence[int] | Tensor, blank: int = 0) -> Tensor:
    """``-log p(target | x)`` by the CTC forward algorithm on one ``(T, C)`` matrix of log-probabilities.

    The target is extended with blanks, ``l' = (-, l1, -, l2, ..., -)`` of length ``2|l| + 1``, and
    ``alpha_t(s)`` sums the probabilities of the path prefixes that reach ``l'_s`` at step ``t``:
    ``alpha_t(s) = (alpha_{t-1}(s) + alpha_{t-1}(s-1) [+ alpha_{t-1}(s-2)]) * y^t_{l'_s}``, where the
    skip over ``s - 2`` is allowed only when ``l'_s`` is a character different from ``l'_{s-2}``.
    The answer is ``alpha_T`` at the last character plus at the final blank. Differentiable; ``inf``
    when the target cannot fit in ``T`` steps (as ``F.ctc_loss`` without ``zero_infinity``).
    """
    _check_log_probs(log_probs)
    if log_probs.dim() != 2:
        raise ValueError(f"expected one (T, C) matrix, got {tuple(log_probs.shape)}")
    tgt = target.tolist() if isinstance(target, Tensor) else list(target)
    ext = [blank]
    for c in tgt:
        ext += [int(c), blank]
    S = len(ext)
    T = log_probs.shape[0]
    ext_t = torch.tensor(ext, device=log_probs.device)
    emit = log_probs[:, ext_t]  # (T, S)
    # a large finite stand-in for log 0: logsumexp over all -inf entries would give NaN gradients
    neg = torch.full((1,), _LOG_ZERO, dtype=log_probs.dtype, device=log_probs.device)
    skip = torch.tensor(
        [s >= 2 and ext[s] != blank and ext[s] != ext[s - 2] for s in range(S)], device=log_probs.device
    )
    alpha = torch.cat([emit[0, : min(S, 2)], neg.expand(max(S - 2, 0))])
    for t in range(1, T):
        prev1 = torch.cat([neg, alpha[:-1]])
        prev2 = torch.cat([neg.expand(2), alpha[:-2]])[:S]
        prev2 = torch.where(skip, prev2, neg)
        alpha = torch.logsumexp(torch.stack([alpha, prev1, prev2]), dim=0) + emit[t]
    loss = -torch.logsumexp(alpha[-2:], dim=0)
    return torch.where(loss > -_LOG_ZERO / 2, torch.full_like(loss, math.inf), loss)


def ctc_brute_force(log_probs: Tensor, target: Sequence[int] | Tensor, blank: int = 0) -> float:
    """``-log p(target | x)`` by enumerating all ``C**T`` paths (a check for tiny ``T`` and ``C`` only)."""
    _check_log_probs(log_probs)
    T, C = log_probs.shape
    if C**T > 2_000_000:
        raise ValueError(f"{C}**{T} paths is too many to enumerate")
    tgt = target.tolist() if isinstance(target, Tensor) else list(target)
    lp = log_probs.detach().double().tolist()
    total = 0.0
    for path in itertools.product(range(C), repeat=T):
        if ctc_collapse(path, blank) == tgt:
            total += math.exp(sum(lp[t][s] for t, s in enumerate(path)))
    return -math.log(total) if total > 0 else math.inf


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning ``a`` into ``b``."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("need at least one reference")


def char_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """``1 - sum(edit distances) / sum(reference lengths)`` (1 - character error rate); may be negative."""
    _check_pairs(predictions, references)
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("the references have no characters")
    return 1.0 - sum(edit_distance(p, r) for p, r in zip(predictions, references, strict=True)) / total


def word_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference string."""
    _check_pairs(predictions, references)
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


class CharNGram:
    """A character n-gram language model: ``p(c | previous order-1 characters)`` with add-``k`` smoothing.

    Each string is padded with ``order - 1`` start symbols and closed by an end symbol, so the model also
    scores where words begin and end. ``log_prob`` sums ``log p`` over the characters and the end.

    >>> lm = CharNGram("ab", order=2, k=0.0).fit(["ab", "ab"])
    >>> round(math.exp(lm.log_prob("ab")), 6)
    1.0
    """

    _START, _END = "\x02", "\x03"

    def __init__(self, alphabet: str, order: int = 3, k: float = 0.1) -> None:
        if order < 1 or k < 0 or not alphabet:
            raise ValueError(f"need order >= 1, k >= 0 and a non-empty alphabet, got {order}, {k}")
        self.alphabet, self.order, self.k = alphabet, order, k
        self.counts: dict[str, dict[str, int]] = {}

    def _contexts(self, text: str):
        padded = self._START * (self.order - 1) + text + self._END
        for i in range(self.order - 1, len(padded)):
            yield padded[i - self.order + 1 : i], padded[i]

    def fit(self, texts: Sequence[str]) -> CharNGram:
        """Count the n-grams of ``texts`` (adds to earlier counts); returns ``self``."""
        for text in texts:
            if set(text) - set(self.alphabet):
                raise ValueError(f"{text!r} has characters outside the alphabet {self.alphabet!r}")
            for ctx, c in self._contexts(text):
                row = self.counts.setdefault(ctx, {})
                row[c] = row.get(c, 0) + 1
        return self

    def log_prob(self, text: str) -> float:
        """``log p(text)``: the sum of ``log p(c | context)`` over the characters and the end symbol."""
        n_out = len(self.alphabet) + 1  # characters and the end symbol
        total = 0.0
        for ctx, c in self._contexts(text):
            row = self.counts.get(ctx, {})
            num = row.get(c, 0) + self.k
            den = sum(row.values()) + self.k * n_out
            if num == 0:
                return -math.inf
            total += math.log(num / den)
        return total


def lm_rescore(
    candidates: Sequence[tuple[str, float]], lm: CharNGram, weight: float
) -> list[tuple[str, float]]:
    """Re-rank ``(string, log p_vision)`` candidates (e.g. a CTC beam) by ``log p_vision + weight *
    lm.log_prob(string)``, best first. ``weight = 0`` keeps the vision model's order."""
    if not candidates:
        raise ValueError("need at least one candidate")
    scored = [(text, lp + weight * lm.log_prob(text)) if weight else (text, lp) for text, lp in candidates]
    return sorted(scored, key=lambda kv: kv[1], reverse=True)
