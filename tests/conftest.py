"""Shared pytest set-up for the unit tests of course_lib.

- matplotlib draws off-screen (Agg) and every test's figures are closed afterwards;
- PyTorch uses one intra-op thread (the course default; fast and reproducible on the 2-core CI);
- every test starts from the same global seeds, so no test depends on the order tests run in;
- ``generator`` / ``rng``: a seeded ``torch.Generator`` and ``numpy.random.Generator`` for tests that
  want their own stream.
"""

from __future__ import annotations

import random

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded_and_tidy():
    """Seed the global generators before each test; close its figures after it."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global generator, for code under test that uses it
    torch.manual_seed(0)
    yield
    plt.close("all")


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy ``Generator`` seeded with 0."""
    return np.random.default_rng(0)
