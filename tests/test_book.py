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


# ------------------------------------------------------------------------------ offline site
def _pages(site):
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


@pytest.mark.slow
def test_site_needs_no_network_and_its_links_resolve(site):
    """No page loads anything from another host, and every relative link points at a file that exists."""
    problems = []
    for page in _pages(site):
        text = page.read_text(encoding="utf-8")
        for tag, url in re.findall(r'<(script|link|img|iframe)\b[^>]*?(?:src|href)="([^"]+)"', text):
            if re.match(r"(https?:)?//", url):
                problems.append(f"{page.relative_to(site)}: <{tag}> loads {url}")
        for url in re.findall(r'<a\b[^>]*?href="([^"#]+)', text):
            if re.match(r"[a-z]+:", url):  # http:, mailto:, ... (links the reader follows, not loads)
                continue
            target = (page.parent / url.split("?")[0]).resolve()
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: dead link {url}")
        if "THEBE_JS_URL" in text:
            problems.append(f"{page.relative_to(site)}: Thebe's configuration script is on the page")
    assert not problems, "\n".join(problems[:40])
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is copied into the site"


@pytest.mark.slow
@pytest.mark.parametrize("ch", CHAPTERS, ids=[c.slug for c in CHAPTERS])
def test_chapter_page_reads_well_offline(site, ch):
    html = (site / "chapters" / ch.slug / f"{ch.slug}.html").read_text(encoding="utf-8")
    assert "NBVAL_" not in html, "nbval's markers are not shown to readers"
    assert "widget-fallback" in html, "each interactive control has a static-site fallback note"
    assert "application/vnd.jupyter.widget-view+json" not in html, "no widget view that needs a kernel"
    assert "Show solution" in html and "Show code cell content" not in html
    assert f'download href="../../_sources/chapters/{ch.slug}/{ch.slug}.ipynb"' in html, (
        ".ipynb link downloads"
    )
    if not manifest.repository()[0]:  # no repository URL in book.yml: no buttons that lead nowhere
        assert "mybinder" not in html and "repository-button" not in html and "colab" not in html.lower()


# ----------------------------------------------------------------------- in a real browser
@pytest.fixture(scope="module")
def browser_page(site):
    """A headless Chromium page on the site served from localhost, with every other host blocked."""
    import browser

    with browser.serve(site) as base:
        session = browser.chromium()
        try:
            chromium = session.__enter__()
        except browser.BrowserUnavailable as exc:
            pytest.skip(f"browser checks of the site skipped: {exc}")
        try:
            yield base, chromium
        finally:
            session.__exit__(None, None, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page_path",
    ["README.html", "assets/runtimes.html", "assets/ops_bench.html", "search.html", "genindex.html"]
    + [f"chapters/{c.slug}/{c.slug}.html" for c in CHAPTERS],
)
def test_site_page_in_browser(browser_page, page_path):
    import browser

    base, chromium = browser_page
    report = browser.visit(chromium, base, page_path)
    assert not report.console_errors, f"console errors: {report.console_errors}"
    assert not report.blocked, f"requests to other hosts: {report.blocked}"
    assert not report.failed, f"failed requests: {report.failed}"
    assert report.math_total == report.math_typeset, (
        f"{report.math_typeset} of {report.math_total} formulas typeset by the local MathJax"
    )
    assert report.code_overflowing == 0, f"{report.code_overflowing} code blocks scroll sideways at 1280 px"
    assert report.images_broken == 0, f"{report.images_broken} of {report.images} figures did not load"
    if page_path.startswith("chapters/"):
        assert report.math_total > 0 and report.images > 0
        assert report.solutions and all(not opened for opened in report.solutions), "solutions are folded"
        assert report.widget_fallbacks_visible >= 1, "the widget fallback note is visible"
