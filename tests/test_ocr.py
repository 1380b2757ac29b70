"""Tests of course_lib.ocr: vocabularies, CTC (forward, brute force, F.ctc_loss), decoders, edit distance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import ocr


def random_log_probs(T: int, C: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, C, generator=g, dtype=dtype).mul(2).log_softmax(-1)


# ---------------------------------------------------------------------------- Vocab
def test_vocab_roundtrip_and_blank():
    v = ocr.Vocab("abc")
    assert len(v) == 4 and v.blank == 0
    assert v.encode("cab") == [3, 1, 2]
    assert v.decode([3, 1, 2]) == "cab"
    assert v.decode([0, 1, 0, 2]) == "ab"
    assert v.decode(torch.tensor([0, 1, 0]), keep_blank=True) == "-a-"
    flat, lengths = v.encode_batch(["ab", "", "c"])
    assert flat.tolist() == [1, 2, 3] and lengths.tolist() == [2, 0, 1]


def test_vocab_rejects_bad_input():
    with pytest.raises(ValueError):
        ocr.Vocab("aa")
    with pytest.raises(ValueError):
        ocr.Vocab("a-")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ocr.Vocab("ab").encode("z")
    with pytest.raises(ValueError, match="out of range"):
        ocr.Vocab("ab").decode([3])


# ---------------------------------------------------------------------------- collapse and greedy
def test_collapse_merges_repeats_before_removing_blanks():
    v = ocr.Vocab("ehlot")

    def read(s):
        return v.decode(ocr.ctc_collapse([0 if c == "-" else v.encode(c)[0] for c in s]))

    assert read("hh-e-ll-l-oo") == "hello"
    assert read("t-oo") == "to"
    assert read("t-o-o") == "too"
    assert read("----") == ""


def test_greedy_decode_batched_and_single():
    lp = torch.full((4, 2, 3), -10.0)
    for t, c in enumerate([1, 1, 0, 1]):
        lp[t, 0, c] = 0.0
    for t, c in enumerate([2, 0, 2, 2]):
        lp[t, 1, c] = 0.0
    assert ocr.ctc_greedy_decode(lp) == [[1, 1], [2, 2]]
    assert ocr.ctc_greedy_decode(lp[:, 0]) == [[1, 1]]


# ---------------------------------------------------------------------------- the worked example
def test_worked_example_matches_f_ctc_loss_and_forward():
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    lp = probs.log()
    for target, expected in (([1], 0.64), ([], 0.36)):
        loss = F.ctc_loss(
            lp[:, None],
            torch.tensor(target, dtype=torch.long),
            torch.tensor([2]),
            torch.tensor([len(target)]),
            reduction="sum",
        )
        assert math.isclose(math.exp(-loss.item()), expected, rel_tol=1e-12)
        assert math.isclose(math.exp(-ocr.ctc_forward(lp, target).item()), expected, rel_tol=1e-12)
        assert math.isclose(math.exp(-ocr.ctc_brute_force(lp, target)), expected, rel_tol=1e-12)


@pytest.mark.parametrize("target", [[1], [1, 2], [1, 1], [2, 1, 2], [], [3, 3, 3]])
def test_forward_equals_brute_force_and_f_ctc_loss(target):
    lp = random_log_probs(6, 4, seed=len(target) * 7 + sum(target))
    brute = ocr.ctc_brute_force(lp, target)
    fwd = ocr.ctc_forward(lp, target).item()
    ref = F.ctc_loss(
        lp[:, None],
        torch.tensor(target, dtype=torch.long),
        torch.tensor([6]),
        torch.tensor([len(target)]),
        reduction="sum",
    ).item()
    assert math.isclose(fwd, brute, rel_tol=1e-9)
    assert math.isclose(fwd, ref, rel_tol=1e-9)


def test_forward_infeasible_target_is_inf_and_gradient_matches():
    lp = random_log_probs(2, 3, seed=0)
    assert math.isinf(ocr.ctc_forward(lp, [1, 1]).item())  # needs 3 steps: 1 - 1
    # F.ctc_loss's gradient assumes normalised inputs, so compare gradients with respect to the logits
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    ocr.ctc_forward(x.log_softmax(-1), [1, 2, 2]).backward()
    target, T, L = torch.tensor([1, 2, 2]), torch.tensor([7]), torch.tensor([3])
    F.ctc_loss(y.log_softmax(-1)[:, None], target, T, L, reduction="sum").backward()
    torch.testing.assert_close(x.grad, y.grad)


# ---------------------------------------------------------------------------- beam search
@pytest.mark.parametrize("seed", range(5))
def test_beam_search_wide_beam_equals_brute_force_enumeration(seed):
    T, C = 5, 3
    lp = random_log_probs(T, C, seed=seed)
    # every labelling reachable in T steps, scored by brute force
    scores: dict[tuple[int, ...], float] = {}
    import itertools

    for path in itertools.product(range(C), repeat=T):
        lab = tuple(ocr.ctc_collapse(path))
        p = math.exp(sum(lp[t, s].item() for t, s in enumerate(path)))
        scores[lab] = scores.get(lab, 0.0) + p
    best = max(scores, key=scores.get)
    ranked = ocr.ctc_beam_search(lp, beam_width=10_000)
    assert tuple(ranked[0][0]) == best
    assert len(ranked) == len(scores)
    for lab, logp in ranked:
        assert math.isclose(math.exp(logp), scores[tuple(lab)], rel_tol=1e-9)


def test_beam_search_beats_best_path_on_a_hand_case():
    # best path is "--" (0.36 ... ) but "a" collects 0.64 from three paths
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    assert ocr.ctc_greedy_decode(lp) == [[]]
    ranked = ocr.ctc_beam_search(lp, beam_width=2)
    assert ranked[0][0] == [1]
    assert math.isclose(math.exp(ranked[0][1]), 0.64, rel_tol=1e-6)
    assert ocr.ctc_beam_search(lp, beam_width=1)[0][0] in ([1], [])


def test_beam_search_rejects_bad_input():
    with pytest.raises(ValueError):
        ocr.ctc_beam_search(torch.zeros(2, 2, 3))
    with pytest.raises(ValueError):
        ocr.ctc_beam_search(torch.zeros(2, 3), beam_width=0)


# ---------------------------------------------------------------------------- edit distance and accuracies
def test_edit_distance_hand_cases():
    assert ocr.edit_distance("kitten", "sitting") == 3
    assert ocr.edit_distance("", "abc") == 3
    assert ocr.edit_distance("abc", "abc") == 0
    assert ocr.edit_distance("ab", "ba") == 2
    assert ocr.edit_distance([1, 2, 3], [1, 3]) == 1


def test_char_and_word_accuracy():
    preds, refs = ["abc", "ab", "xyz"], ["abc", "abd", "xy"]
    assert math.isclose(ocr.char_accuracy(preds, refs), 1 - 2 / 8)
    assert math.isclose(ocr.word_accuracy(preds, refs), 1 / 3)
    with pytest.raises(ValueError):
        ocr.char_accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        ocr.char_accuracy([""], [""])


def test_beam_search_pruning_keeps_the_best_label_on_peaked_outputs():
    g = torch.Generator().manual_seed(5)
    lp = (torch.randn(12, 6, generator=g, dtype=torch.float64) * 4).log_softmax(-1)
    exact = ocr.ctc_beam_search(lp, beam_width=8)
    pruned = ocr.ctc_beam_search(lp, beam_width=8, prune=1e-4)
    assert pruned[0][0] == exact[0][0]
    assert math.isclose(pruned[0][1], exact[0][1], rel_tol=1e-3)
    with pytest.raises(ValueError, match="prune"):
        ocr.ctc_beam_search(lp, prune=1.0)


# ---------------------------------------------------------------------------- language model
def test_char_ngram_probabilities_sum_to_one_and_hand_case():
    lm = ocr.CharNGram("ab", order=2, k=0.5).fit(["ab", "ba", "aab"])
    # p(c | "a") over a, b and the end symbol sums to one, for a seen and an unseen context
    for ctx in ("a", "b", "x"):
        row = lm.counts.get(ctx, {})
        den = sum(row.values()) + 0.5 * 3
        total = sum((row.get(c, 0) + 0.5) / den for c in ("a", "b", lm._END))
        assert math.isclose(total, 1.0)
    # by hand: order 1 with k = 0 is the unigram model over characters and the end symbol
    uni = ocr.CharNGram("ab", order=1, k=0.0).fit(["ab", "a"])  # a: 2, b: 1, end: 2 of 5
    assert math.isclose(uni.log_prob("ab"), math.log(2 / 5) + math.log(1 / 5) + math.log(2 / 5))
    assert uni.log_prob("bb") < uni.log_prob("aa")
    assert ocr.CharNGram("ab", order=2, k=0.0).fit(["ab"]).log_prob("ba") == -math.inf
    with pytest.raises(ValueError, match="alphabet"):
        lm.fit(["abc"])
    with pytest.raises(ValueError):
        ocr.CharNGram("ab", order=0)


def test_char_ngram_total_probability_over_short_strings():
    lm = ocr.CharNGram("ab", order=3, k=0.2).fit(["ab", "abab", "bba"])
    # strings up to length 10 carry almost all the mass (the end symbol has probability >= 0.02 a step)
    import itertools

    total = sum(
        math.exp(lm.log_prob("".join(s))) for n in range(11) for s in itertools.product("ab", repeat=n)
    )
    assert 0.9 < total <= 1.0 + 1e-9


def test_lm_rescore_prefers_the_likely_word():
    lm = ocr.CharNGram("abc", order=2, k=0.01).fit(["abc"] * 10)
    cands = [("acc", -1.0), ("abc", -1.2)]
    assert ocr.lm_rescore(cands, lm, 0.0)[0][0] == "acc"
    assert ocr.lm_rescore(cands, lm, 1.0)[0][0] == "abc"
    with pytest.raises(ValueError):
        ocr.lm_rescore([], lm, 1.0)
