"""Sphinx extension that makes the course site work offline and read well (loaded by tools/book.py).

What it does to the Jupyter Book 1 build:

- **Math offline.** MathJax 3 comes from the ``mathjax`` package that the environment installs
  (PyPI's ``django-static-mathjax``, the plain MathJax distribution); the parts a page needs
  (the TeX-to-CHTML component, its fonts, the TeX extensions it may autoload, the menu and
  accessibility parts) are copied into ``_static/mathjax`` and ``mathjax_path`` points there.
- **No widget JavaScript from a CDN.** MyST-NB would load RequireJS and the ipywidgets HTML manager
  from CDNs on every page with widgets. Instead, each interactive control is replaced on the site by a
  note that it needs a running kernel (every chapter shows a static figure beside its widget), and
  each progress bar by its final text, read from the widget state saved in the notebook.
- **No Thebe.** Jupyter Book always loads sphinx-thebe, which emits its configuration script twice
  (a console error) and points at a CDN; the course does not use live code on the site, so its
  scripts are dropped.
- **Links that download.** The title cell's link to the chapter's own ``.ipynb`` downloads the
  notebook instead of pointing back at the page.
- **Readers see no test markers.** ``# NBVAL_...`` comment lines are removed from rendered code.
- **Folds say what they hide.** A solution (a cell ``tools/notebooks.py`` collapses for JupyterLab)
  reads "Show solution"; a plotting-only cell (tag ``hide-input``) "Show plotting code".
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebooks  # noqa: E402  (tools/notebooks.py: one owner of the widget fallbacks' text)

WIDGET_VIEW = notebooks.WIDGET_VIEW
_VIEW_RE = re.compile(r'^<script type="application/vnd\.jupyter\.widget-view\+json">(.*)</script>$', re.S)
_MARKER_RE = re.compile(r"^[ \t]*# NBVAL_[A-Z_]+[ \t]*\n?", re.M)

#: The parts of the MathJax distribution (``es5/``) a page of the course can load.
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml", "input/tex/extensions", "ui", "a11y", "sre")
MATHJAX_ENTRY = "mathjax/tex-chtml.js"


def mathjax_root() -> Path:
    """The ``es5`` folder of the MathJax copy installed in the environment."""
    try:
        import mathjax  # django-static-mathjax: the MathJax distribution as a Python package
    except ImportError as exc:  # pragma: no cover - the lock installs it
        raise RuntimeError("the MathJax package is missing: run `make env` (django-static-mathjax)") from exc
    root = Path(next(iter(mathjax.__path__))) / "static" / "mathjax" / "es5"
    if not (root / "tex-chtml.js").is_file():
        raise RuntimeError(f"no MathJax distribution under {root}")
    return root


def copy_mathjax(dest: Path) -> Path:
    """Copy :data:`MATHJAX_PARTS` of the installed MathJax into ``dest/mathjax``; returns that folder."""
    src, out = mathjax_root(), dest / "mathjax"
    for part in MATHJAX_PARTS:
        s, d = src / part, out / part
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    return out


# ------------------------------------------------------------------------------------ widgets
def _widget_states(path: Path) -> dict:
    try:
        return notebooks.widget_states(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


class WidgetFallbacks(SphinxPostTransform):
    """Replace widget views (which need a kernel or CDN scripts) by text that works on a static page.

    Runs after MyST-NB has picked one output per mime bundle (its priority 4) and before it folds
    hidden cells (199).
    """

    default_priority = 100
    formats = ("html",)

    def run(self, **kwargs) -> None:
        raws = [
            n
            for n in self.document.findall(nodes.raw)
            if n.astext().startswith(f'<script type="{WIDGET_VIEW}"')
        ]
        if not raws:
            return
        states = _widget_states(Path(self.env.doc2path(self.env.docname)))
        for raw in raws:
            m = _VIEW_RE.match(raw.astext().strip())
            model_id = json.loads(m.group(1)).get("model_id", "") if m else ""
            text = notebooks.progress_text(model_id, states)
            if text is not None:
                new = nodes.literal_block(text, text, classes=["output", "progress-text"], language="none")
            else:
                new = nodes.raw(
                    "",
                    f'<div class="admonition note widget-fallback"><p>{html.escape(notebooks.INTERACTIVE_TEXT)}</p></div>',
                    format="html",
                )
            raw.replace_self(new)


# -------------------------------------------------------------------------------- code cells
class HideTestMarkers(SphinxTransform):
    """Drop ``# NBVAL_...`` lines (nbval's instructions) from the code a reader sees."""

    default_priority = 500

    def apply(self) -> None:
        for block in list(self.document.findall(nodes.literal_block)):
            text = block.astext()
            if "NBVAL_" not in text or block.parent.get("nb_element") != "cell_code_source":
                continue
            cleaned = _MARKER_RE.sub("", text)
            if cleaned != text:
                block.replace_self(block.__class__(cleaned, cleaned, **block.attributes))


class SolutionPrompts(SphinxPostTransform):
    """A solution's fold says "Show solution", a plotting cell's (tag ``hide-input``) "Show plotting code".

    Runs before MyST-NB folds the cells (its priority 199).

    Solutions are the cells ``tools/notebooks.py`` collapses for JupyterLab (``jupyter.source_hidden``),
    so the site and JupyterLab agree on what a solution is.
    """

    default_priority = 150
    formats = ("html",)

    def run(self, **kwargs) -> None:
        for cell in self.document.findall(nodes.container):
            if cell.get("nb_element") != "cell_code" or not cell.get("hide_mode"):
                continue
            if (cell.get("cell_metadata") or {}).get("jupyter", {}).get("source_hidden"):
                cell["prompt_show"], cell["prompt_hide"] = "Show solution", "Hide solution"
            elif cell.get("hide_mode") == "input":  # by the course's convention, plotting-only code
                cell["prompt_show"], cell["prompt_hide"] = "Show plotting code", "Hide plotting code"


# ------------------------------------------------------------------------------ page context
def _drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Remove sphinx-thebe's scripts (its configuration, emitted twice, and its loader)."""
    files = context.get("script_files")
    if files:
        files[:] = [
            js
            for js in files
            if "THEBE_JS_URL" not in (getattr(js, "attributes", {}).get("body") or "")
            and "thebe" not in str(getattr(js, "filename", js) or "")
        ]


def _notebook_download_links(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A link whose text names this page's own notebook downloads it (the page's ``_sources`` copy)."""
    own = Path(docname).name + ".ipynb"
    depth = docname.count("/")
    target = "../" * depth + f"_sources/{docname}.ipynb"
    for ref in list(doctree.findall(nodes.reference)):
        if ref.astext().strip() == own:
            link = nodes.raw(
                "",
                f'<a class="reference download" download href="{target}"><code>{own}</code></a>',
                format="html",
            )
            ref.replace_self(link)


#: Code wraps instead of scrolling sideways (chapters are formatted to fit; this catches the rest).
COURSE_CSS = """div.cell_input pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def _configure(app: Sphinx, config) -> None:
    config.mathjax_path = MATHJAX_ENTRY
    config.nb_ipywidgets_js = {}
    static = Path(app.outdir).parent / "offline_static"
    copy_mathjax(static)
    (static / "course.css").write_text(COURSE_CSS, encoding="utf-8")
    config.html_static_path = [*config.html_static_path, str(static)]
    app.add_css_file("course.css")


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _configure, priority=900)
    app.add_post_transform(WidgetFallbacks)
    app.add_transform(HideTestMarkers)
    app.add_post_transform(SolutionPrompts)
    app.connect("doctree-resolved", _notebook_download_links)
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
