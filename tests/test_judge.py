"""Tests of course_lib.judge: the seeded digits judge that scores generated digits (chapters 09-12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib import data, judge, metrics


@pytest.fixture(scope="module")
def j():
    return judge.digits_judge()


@pytest.fixture(scope="module")
def test_digits():
    return data.digits_splits(normalize=None).tensors("test")


def test_judge_is_accurate_on_held_out_digits(j, test_digits):
    x, y = test_digits
    assert j.test_accuracy > 0.95 and j.val_accuracy > 0.95
    assert j.accuracy(x, y) == j.test_accuracy
    assert j.predict(x).shape == y.shape and j.logits(x).shape == (len(y), 10)


def test_judge_is_cached_and_deterministic(j):
    assert judge.digits_judge() is j
    other = judge.digits_judge.__wrapped__(0)  # a fresh training run with the same seed
    for a, b in zip(j.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    state = torch.random.get_rng_state()
    judge.digits_judge.__wrapped__(1, epochs=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random stream is untouched


def test_frechet_ranks_real_digits_far_below_noise_and_blur(j, test_digits):
    x, _ = test_digits
    floor = j.real_vs_real()
    assert 0 < floor < 5
    assert j.frechet(x) == pytest.approx(0.0, abs=1e-6)  # the reference itself
    noise = torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert j.frechet(noise) > 20 * floor
    assert j.frechet(blur) > 5 * floor
    # the method is metrics.frechet_distance on the judge's features
    assert j.frechet(blur) == pytest.approx(metrics.frechet_distance(j.features(blur), j.features(x)))


def test_judge_accepts_three_layouts_and_clips_small_overshoot(j, test_digits):
    x, _ = test_digits
    f = j.features(x)
    assert f.shape == (len(x), judge.FEATURES)
    torch.testing.assert_close(j.features(x.flatten(1)), f)
    torch.testing.assert_close(j.features(x[:, 0]), f)
    torch.testing.assert_close(j.features(x * 1.1 - 0.05), j.features((x * 1.1 - 0.05).clamp(0, 1)))


def test_judge_rejects_bad_input(j):
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        j.features(torch.full((4, 64), -1.0))
    with pytest.raises(ValueError, match="Tensor\\[N, 1, 8, 8\\]"):
        j.features(torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        j.features(torch.zeros(0, 64))
    with pytest.raises(ValueError, match="NaN"):
        j.features(torch.full((2, 64), float("nan")))
    with pytest.raises(TypeError):
        j.features(torch.zeros(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        j.accuracy(torch.zeros(3, 64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="epochs"):
        judge.digits_judge(0, epochs=0)
