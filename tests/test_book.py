"""Build the course site (Jupyter Book 1, offline, committed outputs) and check what a reader gets."""

from __future__ import annotations

import re
import subprocess
import sys

import manifest
import pytest

CHAPTERS = manifest.chapters()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    r = subprocess.run(
        [sys.executable, "tools/book.py", "build", "--out", str(out)],
        cwd=manifest.ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, (
        "book build failed (warnings are errors):\n" + r.stdout[-4000:] + r.stderr[-8000:]
    )
    return out / "_build" / "html"


@pytest.mark.slow
def test_book_has_front_page_runtime_page_and_search(site):
    assert "README.html" in (site / "index.html").read_text(encoding="utf-8")  # index -> front page
    front = (site / "README.html").read_text(encoding="utf-8")
    assert "Deep Learning for Computer Vision" in front and "Quick start" in front
    for ch in CHAPTERS:
        assert f'href="chapters/{ch.slug}/{ch.slug}.html"' in front, f"front page links {ch.slug}"
    assert (site / "search.html").exists() and (site / "searchindex.js").exists()
    runtimes = (site / "assets" / "runtimes.html").read_text(encoding="utf-8")
    assert "whole course" in runtimes


@pytest.mark.slow
@pytest.mark.parametrize("ch", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_chapter_page(site, ch):
    html = (site / "chapters" / ch.slug / f"{ch.slug}.html").read_text(encoding="utf-8")
    assert ch.title.split()[0] in html
    assert "Measured runtime:" in html
    assert re.search(r'<img[^>]+src="[^"]*\.png"', html), "figures rendered from the committed outputs"
    assert "math notranslate" in html, "math rendered"
    assert "tag_hide-cell" in html, "exercise solutions folded"
    assert f"{ch.slug}.py" in html, "a download link for the chapter's .py"
    assert (site / "_sources" / "chapters" / ch.slug / f"{ch.slug}.ipynb").exists(), ".ipynb download"
