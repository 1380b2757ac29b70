"""course_lib.exercises: checks that say what is wrong, never with a traceback, and pass solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import exercises as ex


def _softmax(x):
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


CASES = [(torch.tensor([1.0, 2.0, 3.0]),), (torch.tensor([[0.0, 1000.0], [-5.0, 5.0]]),)]


def test_a_right_function_passes_and_says_so():
    fb = ex.check_function(_softmax, CASES, reference=lambda x: F.softmax(x, -1))
    assert fb and fb.passed and fb.status == "passed"
    assert str(fb) == "✓ Correct: _softmax gives the right result on all 2 examples"
    assert fb.assert_passed() is fb
    assert "exercise-feedback" in fb._repr_html_() and "Correct" in fb._repr_html_()


def test_a_stub_is_reported_as_not_written_without_raising():
    def softmax(x):
        raise NotImplementedError

    fb = ex.check_function(softmax, CASES, reference=lambda x: F.softmax(x, -1))
    assert not fb and fb.status == "todo" and "softmax is not written yet" in str(fb)
    with pytest.raises(AssertionError, match="does not pass its own check"):
        fb.assert_passed()
    assert ex.check_function(ex.TODO, CASES, expected=[0, 0]).status == "todo"
    assert ex.check_value(ex.TODO, 1.0).status == "todo" and ex.check_value(..., 1.0).status == "todo"
    assert ex.check_value((ex.TODO, 2.0), (1.0, 2.0)).status == "todo"
    assert ex.check_value({"eta": 0.1, "r": [ex.TODO]}, {"eta": 0.1, "r": [0.5]}).status == "todo"


def test_wrong_shape_wrong_value_and_errors_name_the_example():
    naive = lambda x: torch.exp(x) / torch.exp(x).sum()  # noqa: E731 - overflows, and sums over all
    fb = ex.check_function(naive, CASES, reference=lambda x: F.softmax(x, -1), name="softmax")
    assert fb.status == "wrong" and "softmax(Tensor of shape (2, 2)" in fb.message and "NaN" in fb.message
    assert "(example 2 of 2)" in fb.message

    fb = ex.check_function(lambda x: x.sum(-1), CASES, reference=lambda x: F.softmax(x, -1), name="f")
    assert "wrong shape: expected (3,), got ()" in fb.message

    fb = ex.check_function(lambda x: F.softmax(x, -1) + 0.01, CASES, reference=lambda x: F.softmax(x, -1))
    assert "wrong value at index (0,)" in fb.message or "wrong value at index" in fb.message
    assert "3 of 3 entries differ" in fb.message

    def broken(x):
        return x @ torch.ones(5)

    fb = ex.check_function(broken, CASES, reference=lambda x: F.softmax(x, -1))
    assert fb.status == "error" and fb.message.startswith("broken(") and "raised RuntimeError" in fb.message
    assert "Traceback" not in str(fb)

    fb = ex.check_function(lambda x: None, CASES, reference=lambda x: F.softmax(x, -1), name="g")
    assert "returned None: did you forget `return`?" in fb.message


def test_the_learner_cannot_change_the_references_input():
    def in_place(x):
        x.mul_(0)
        return x

    fb = ex.check_function(in_place, [(torch.ones(3),)], reference=lambda x: x * 1)
    assert fb.status == "wrong" and "expected 1, got 0" in fb.message


def test_check_value_numbers_tuples_dicts_and_tolerances():
    assert ex.check_value(0.2549, 0.36772 * math.log(2), atol=1e-4, name="CE in nats")
    fb = ex.check_value(0.3677, 0.36772 * math.log(2), atol=1e-4, name="CE in nats")
    assert not fb and fb.message.startswith("CE in nats: expected 0.254884, got 0.3677")
    assert ex.check_value(3, 3) and not ex.check_value(3, 4) and not ex.check_value("3", 3)
    assert ex.check_value(torch.tensor(2.0), 2.0) and ex.check_value(np.float32(2.0), 2.0)
    assert "expected a number" in ex.check_value(True, 1.0).message
    fb = ex.check_value((1.0, torch.zeros(2)), (1.0, torch.tensor([0.0, 1.0])))
    assert "wrong value at [1] at index (1,)" in fb.message
    assert "wrong length: expected 2 items, got 1" in ex.check_value([1.0], [1.0, 2.0]).message
    assert "wrong keys" in ex.check_value({"a": 1}, {"b": 1}).message
    assert "at ['a']" in ex.check_value({"a": 1.0}, {"a": 2.0}).message
    assert ex.check_value(torch.tensor([True, False]), torch.tensor([True, False]))
    assert "index (1,)" in ex.check_value(torch.tensor([True, True]), torch.tensor([True, False])).message
    # float32 round-off passes at the default tolerances; a real difference does not
    x = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert ex.check_value((x.double() * 3).float(), x * 3)
    assert not ex.check_value(x * 3.001, x * 3)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"reference": None, "expected": None}, ValueError, "exactly one of"),
        ({"reference": abs, "expected": [1]}, ValueError, "exactly one of"),
        ({"expected": [1, 2, 3]}, ValueError, "3 results for 1 cases"),
        ({"expected": [1], "atol": -1}, ValueError, "atol must be"),
    ],
)
def test_check_function_rejects_bad_setups(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ex.check_function(abs, [(1,)], **kwargs)


def test_bad_cases_and_non_callables():
    with pytest.raises(ValueError, match="at least one example"):
        ex.check_function(abs, [], expected=[])
    with pytest.raises(TypeError, match="each case must be a tuple"):
        ex.check_function(abs, [1], expected=[1])
    with pytest.raises(TypeError, match="fn must be callable"):
        ex.check_function(3, [(1,)], expected=[1])
    assert ex.check_function(lambda a, b: a - b, [{"a": 3, "b": 1}], expected=[2])


def test_messages_stay_on_one_line_for_modules_and_long_values():
    def count(model, n):
        raise ValueError("no")

    fb = ex.check_function(
        count, [(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), 3)], expected=[1]
    )
    assert "count(Sequential(...), 3) raised ValueError: no" in str(fb) and "\n" not in str(fb)
