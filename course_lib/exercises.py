"""Exercises that check themselves: a stub for the learner, a check that says what is wrong.

Introduced in chapter 00; every chapter's Exercises section uses it where the answer is code or a
number (open questions keep a written answer). The pattern, in the paired ``.py``::

    # %%  the learner's cell
    def leaky_gain(a):
        raise NotImplementedError  # your code: the gain that keeps the signal's variance
    exercises.check_function(leaky_gain, [(0.0,), (0.2,)], reference=lambda a: (2 / (1 + a * a)) ** 0.5)

    # %% tags=["hide-cell"]  the solution, folded on the site and collapsed in JupyterLab
    def leaky_gain(a):
        return (2 / (1 + a * a)) ** 0.5
    exercises.check_function(leaky_gain, [(0.0,), (0.2,)], reference=...).assert_passed()

A check never raises for a wrong or unfinished answer: it returns :class:`Feedback`, which shows as
one readable line (what is wrong, on which example, expected against got) in a notebook and as text
elsewhere. The solution cell calls :meth:`Feedback.assert_passed`, so running the chapter (CI does)
fails when a solution no longer passes its own check.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["TODO", "Feedback", "check_function", "check_value", "compare"]


class _Todo:
    """The placeholder for an answer not given yet: ``answer = exercises.TODO``."""

    def __repr__(self) -> str:
        return "TODO"


#: Put this where the learner's answer goes; a check reports "not answered yet" for it.
TODO = _Todo()


@dataclass(frozen=True)
class Feedback:
    """The outcome of a check: ``passed`` and a message saying why (truthy when passed)."""

    passed: bool
    message: str
    status: str = "passed"  # "passed", "wrong", "error" (the answer raised) or "todo" (not filled in)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = {"passed": "✓ Correct", "todo": "… Not done yet", "error": "✗ Error", "wrong": "✗ Not yet"}
        return f"{mark[self.status]}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"passed": "#1b7f3a", "todo": "#6b6b6b", "error": "#b3261e", "wrong": "#b3261e"}[self.status]
        head, _, rest = str(self).partition(": ")
        return (
            f'<div class="exercise-feedback" style="border-left: 4px solid {colour}; padding: 2px 8px">'
            f'<b style="color: {colour}">{html.escape(head)}</b>: '
            f'<span style="white-space: pre-wrap">{html.escape(rest)}</span></div>'
        )

    def assert_passed(self) -> Feedback:
        """Raise ``AssertionError`` with the message unless the check passed (for solution cells)."""
        if not self.passed:
            raise AssertionError(f"the solution does not pass its own check: {self}")
        return self


# ------------------------------------------------------------------------------------ compare
def _short(x: Any, limit: int = 70) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        arr = x.detach().cpu() if isinstance(x, torch.Tensor) else x
        text = f"{type(x).__name__} of shape {tuple(arr.shape)}"
        size = arr.size if isinstance(arr, np.ndarray) else arr.numel()
        if size <= 6:
            text += f" {np.array2string(np.asarray(arr), precision=4)}"
        return text
    if isinstance(x, torch.nn.Module):  # a module's repr spans many lines: its class names it
        return f"{type(x).__name__}(...)"
    text = " ".join(repr(x).split())  # one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_array(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    return None


def compare(got: Any, expected: Any, *, atol: float = 1e-6, rtol: float = 1e-5, path: str = "") -> str | None:
    """Why ``got`` differs from ``expected`` (``None`` when they agree within the tolerances).

    Numbers and arrays (tensors, NumPy) compare with ``|got - expected| <= atol + rtol * |expected|``;
    booleans, integers-vs-integers and strings exactly; tuples, lists and dicts element by element.
    The reason names the place (``[1]``, ``['boxes']``, the array index) and both values.
    """
    where = f" at {path}" if path else ""
    exp_arr, got_arr = _as_array(expected), _as_array(got)
    if exp_arr is not None:
        if got_arr is None:
            if isinstance(got, numbers.Number) and exp_arr.ndim == 0:
                got_arr = np.asarray(got)
            else:
                return f"expected a {type(expected).__name__} of shape {tuple(exp_arr.shape)}{where}, got {_short(got)}"
        if got_arr.shape != exp_arr.shape:
            return f"wrong shape{where}: expected {tuple(exp_arr.shape)}, got {tuple(got_arr.shape)}"
        if exp_arr.dtype == bool or got_arr.dtype == bool:
            bad = np.argwhere(got_arr != exp_arr)
            if bad.size:
                i = tuple(int(v) for v in bad[0])
                return f"wrong value{where} at index {i}: expected {exp_arr[i]}, got {got_arr[i]} ({len(bad)} differ)"
            return None
        e, g = exp_arr.astype(np.float64), got_arr.astype(np.float64)
        if np.isnan(g).any() and not np.isnan(e).any():
            i = tuple(int(v) for v in np.argwhere(np.isnan(g))[0])
            return f"NaN{where} at index {i} (expected {e[i]:.6g})"
        close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
        if not close.all():
            err = np.where(close, 0.0, np.abs(g - e))
            i = tuple(int(v) for v in np.unravel_index(np.nanargmax(err), err.shape))
            idx = f" at index {i}" if e.ndim else ""
            return (
                f"wrong value{where}{idx}: expected {e[i]:.6g}, got {g[i]:.6g} "
                f"({int((~close).sum())} of {close.size} entries differ; largest difference {err[i]:.3g})"
            )
        return None
    if isinstance(expected, bool) or isinstance(expected, str):
        return None if got == expected else f"expected {expected!r}{where}, got {_short(got)}"
    if isinstance(expected, numbers.Number):
        if got_arr is not None and got_arr.size == 1:
            got = got_arr.reshape(()).item()
        if isinstance(got, bool) or not isinstance(got, numbers.Number):
            return f"expected a number{where}, got {_short(got)}"
        if isinstance(expected, numbers.Integral) and isinstance(got, numbers.Integral):
            return None if got == expected else f"expected {expected}{where}, got {got}"
        if isinstance(got, numbers.Complex) and not isinstance(got, numbers.Real):
            return f"expected a real number{where}, got {got}"
        g, e = float(got), float(expected)
        if math.isnan(g) and not math.isnan(e):
            return f"got NaN{where}, expected {e:.6g}"
        if not math.isclose(g, e, rel_tol=rtol, abs_tol=atol) and not (math.isnan(g) and math.isnan(e)):
            return f"expected {e:.6g}{where}, got {g:.6g} (difference {abs(g - e):.3g})"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"expected a mapping{where}, got {_short(got)}"
        if set(got) != set(expected):
            return f"wrong keys{where}: expected {sorted(map(str, expected))}, got {sorted(map(str, got))}"
        for k in expected:
            why = compare(got[k], expected[k], atol=atol, rtol=rtol, path=f"{path}[{k!r}]")
            if why:
                return why
        return None
    if isinstance(expected, Sequence):
        if isinstance(got, str) or not isinstance(got, Sequence):
            return f"expected a {type(expected).__name__} of {len(expected)} items{where}, got {_short(got)}"
        if len(got) != len(expected):
            return f"wrong length{where}: expected {len(expected)} items, got {len(got)}"
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            why = compare(g, e, atol=atol, rtol=rtol, path=f"{path}[{k}]")
            if why:
                return why
        return None
    return None if got == expected else f"expected {_short(expected)}{where}, got {_short(got)}"


def _check_tolerances(atol: float, rtol: float) -> None:
    for name, v in (("atol", atol), ("rtol", rtol)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not v >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")


def _has_todo(x: Any) -> bool:
    """``x`` is :data:`TODO` or ``...``, or a tuple, list or dict holding one."""
    if x is TODO or x is Ellipsis:
        return True
    if isinstance(x, tuple | list):
        return any(_has_todo(v) for v in x)
    if isinstance(x, Mapping):
        return any(_has_todo(v) for v in x.values())
    return False


# -------------------------------------------------------------------------------------- checks
def check_value(
    answer: Any, expected: Any, *, name: str = "answer", atol: float = 1e-6, rtol: float = 1e-5
) -> Feedback:
    """Check a value the learner computed (a number, a tensor, a tuple of them...) against ``expected``.

    Args:
        answer: the learner's value; :data:`TODO` or ``...`` (alone, or anywhere in a tuple, list or
            dict) means not answered yet.
        expected: the right value (compared with :func:`compare`).
        name: what the answer is called in the message.
        atol, rtol: tolerances for numbers and arrays.
    """
    _check_tolerances(atol, rtol)
    if _has_todo(answer):
        return Feedback(False, f"{name} is not answered yet: replace TODO with your value", "todo")
    why = compare(answer, expected, atol=atol, rtol=rtol)
    if why:
        return Feedback(False, f"{name}: {why}", "wrong")
    return Feedback(True, f"{name} is right")


def check_function(
    fn: Callable[..., Any],
    cases: Sequence[tuple | Mapping[str, Any]],
    *,
    reference: Callable[..., Any] | None = None,
    expected: Sequence[Any] | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    name: str | None = None,
) -> Feedback:
    """Call the learner's ``fn`` on each case and compare with ``reference(*case)`` or ``expected[i]``.

    Args:
        fn: the learner's function. If it raises ``NotImplementedError`` (the stub), the feedback says
            it is not written yet; any other exception is reported by type and message, with the
            example, never as a traceback.
        cases: per example the positional arguments (a tuple) or the keyword arguments (a mapping).
            Tensors in a case are cloned for each call, so a function that modifies its input in place
            cannot change the reference's input.
        reference: the function to compare with (called on fresh copies of each case), or
        expected: the expected results, one per case (exactly one of ``reference`` and ``expected``).
        atol, rtol: tolerances for numbers and arrays.
        name: what the function is called in messages (default: its ``__name__``).
    """
    _check_tolerances(atol, rtol)
    if not callable(fn):
        if fn is TODO or fn is Ellipsis or fn is None:
            return Feedback(False, "the function is not written yet", "todo")
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if (reference is None) == (expected is None):
        raise ValueError("give exactly one of reference= and expected=")
    cases = list(cases)
    if not cases:
        raise ValueError("cases must hold at least one example")
    for case in cases:
        if not isinstance(case, tuple | Mapping):
            raise TypeError(f"each case must be a tuple of arguments or a mapping, got {type(case).__name__}")
    if expected is not None and len(expected) != len(cases):
        raise ValueError(f"expected has {len(expected)} results for {len(cases)} cases")
    label = name or getattr(fn, "__name__", "the function")

    def fresh(x):
        return x.clone() if isinstance(x, torch.Tensor) else x.copy() if isinstance(x, np.ndarray) else x

    def call(f, case):
        if isinstance(case, Mapping):
            return f(**{k: fresh(v) for k, v in case.items()})
        return f(*(fresh(v) for v in case))

    def show(case) -> str:
        if isinstance(case, Mapping):
            return ", ".join(f"{k}={_short(v, 30)}" for k, v in case.items())
        return ", ".join(_short(v, 30) for v in case)

    for i, case in enumerate(cases):
        which = f" (example {i + 1} of {len(cases)})" if len(cases) > 1 else ""
        want = call(reference, case) if reference is not None else expected[i]
        try:
            got = call(fn, case)
        except NotImplementedError:
            return Feedback(False, f"{label} is not written yet: replace `raise NotImplementedError`", "todo")
        except Exception as exc:  # the learner's error, reported without a traceback
            return Feedback(
                False, f"{label}({show(case)}){which} raised {type(exc).__name__}: {exc}", "error"
            )
        if got is None and want is not None:
            return Feedback(
                False, f"{label}({show(case)}){which} returned None: did you forget `return`?", "wrong"
            )
        why = compare(got, want, atol=atol, rtol=rtol)
        if why:
            return Feedback(False, f"{label}({show(case)}){which}: {why}", "wrong")
    return Feedback(True, f"{label} gives the right result on all {len(cases)} examples")
