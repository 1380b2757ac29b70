"""Drive the built site in headless Chromium, offline: what a reader's browser would do.

    python tools/browser.py [SITE]     # visit every page of _build/html and print a report

Used by ``tests/test_book.py``. Chromium is Debian's package (``apt-get install chromium``; ``.ci/run``
installs it when missing), driven by Playwright's Python client; nothing is downloaded. The site is
served from ``127.0.0.1`` and every request to another host is blocked and recorded, so a page that
needs the network fails its check instead of quietly using it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Where to look for a Chromium binary (``COURSE_CHROMIUM`` overrides).
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PAGE_TIMEOUT_MS = 60_000


class BrowserUnavailable(RuntimeError):
    """No Chromium binary or no Playwright client: the browser checks cannot run here."""


def find_chromium() -> str:
    explicit = os.environ.get("COURSE_CHROMIUM", "").strip()
    if explicit:
        if not Path(explicit).is_file():
            raise BrowserUnavailable(f"COURSE_CHROMIUM={explicit} is not a file")
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(
        "no Chromium found (looked for " + ", ".join(CHROMIUM_CANDIDATES) + "); install Debian's "
        "package with `apt-get install chromium` (CI's .ci/run does) or set COURSE_CHROMIUM"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on a free port of 127.0.0.1; yields the base URL (ending in ``/``)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright ``Browser``), closed on exit."""
    executable = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable("the Playwright client is not installed (it is in the dev extra)") from exc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageReport:
    path: str
    console_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # requests to any host but the local server
    failed: list[str] = field(default_factory=list)
    math_total: int = 0
    math_typeset: int = 0
    images: int = 0
    images_broken: int = 0
    solutions: list[bool] = field(default_factory=list)  # open state of each "Show solution" fold
    widget_fallbacks_visible: int = 0
    code_overflowing: int = 0  # visible code blocks that would scroll sideways
    load_seconds: float = 0.0


_INSPECT = """async () => {
  const out = {};
  const math = document.querySelectorAll('.math');
  out.math_total = math.length;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  out.math_typeset = Array.from(math).filter(m => m.querySelector('mjx-container') || m.tagName === 'MJX-CONTAINER').length;
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  out.images = imgs.length;
  out.images_broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  out.solutions = Array.from(document.querySelectorAll('details'))
    .filter(d => (d.querySelector('summary') || {}).innerText?.trim().startsWith('Show solution')).map(d => d.open);
  out.code_overflowing = Array.from(document.querySelectorAll('div.cell_input pre'))
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).length;
  out.widget_fallbacks_visible = Array.from(document.querySelectorAll('.widget-fallback'))
    .filter(e => e.offsetParent !== null || e.closest('details')).length;
  return out;
}"""


def visit(browser, base: str, path: str) -> PageReport:
    """Load ``base + path`` in a fresh page and report what a reader would meet."""
    import time

    report = PageReport(path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # a laptop screen
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("console", lambda m: report.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: report.console_errors.append(str(e)))
    page.on("requestfailed", lambda r: report.failed.append(f"{r.url} ({r.failure})"))

    def route(r):
        url = r.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            report.blocked.append(url)
            r.abort()

    page.route("**/*", route)
    start = time.perf_counter()
    page.goto(base + path, wait_until="load")
    found = page.evaluate(_INSPECT)
    report.load_seconds = time.perf_counter() - start
    for key, value in found.items():
        setattr(report, key, value)
    # requests aborted by the route show up as failed too: keep only the local ones there
    report.failed = [f for f in report.failed if not any(f.startswith(b) for b in report.blocked)]
    page.close()
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0] if args else "_build/html").resolve()
    pages = sorted(
        str(p.relative_to(site))
        for p in site.rglob("*.html")
        if "_static" not in p.parts and 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8")[:2000]
    )  # a redirecting page (index.html) navigates away before it can be inspected
    bad = 0
    with serve(site) as base, chromium() as b:
        for path in pages:
            r = visit(b, base, path)
            ok = (
                not (r.console_errors or r.blocked or r.failed or r.images_broken)
                and r.math_total == r.math_typeset
            )
            bad += not ok
            print(
                f"{'ok ' if ok else 'BAD'} {path}: {r.load_seconds:.1f} s, math {r.math_typeset}/{r.math_total}, "
                f"images {r.images - r.images_broken}/{r.images}, errors {r.console_errors or '-'}, "
                f"blocked {r.blocked or '-'}"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
