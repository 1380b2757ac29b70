"""The same lint as `make lint` and the pre-commit hooks: ruff on the library, tests, tools, chapters."""

from __future__ import annotations

import subprocess
import sys

import manifest

TARGETS = ["course_lib", "tests", "tools", "chapters"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *TARGETS], cwd=manifest.ROOT, capture_output=True, text=True
    )


def test_ruff_check():
    r = _ruff("check", "--no-cache")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = _ruff("format", "--check", "--no-cache")
    assert r.returncode == 0, "run `make format`:\n" + r.stdout + r.stderr
