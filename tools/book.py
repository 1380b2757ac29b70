"""Build the course site with Jupyter Book 1 (Sphinx), fully offline, from the committed notebooks.

    python tools/book.py build [--out DIR]   # generate config + TOC from book.yml, then build HTML
    python tools/book.py toc                 # print the generated table of contents

The table of contents and the book's configuration are generated from ``book.yml`` into the output
folder (default ``_build``); nothing is listed by hand. Notebooks are rendered with their committed
outputs, never re-executed. The build fails on any Sphinx warning and on any notebook that is out of
sync with its ``.py`` or that holds an error output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest  # noqa: E402
import notebooks  # noqa: E402

ROOT = manifest.ROOT


def toc() -> dict:
    chapters = [{"file": f"chapters/{c.slug}/{c.slug}", "title": c.label} for c in manifest.chapters()]
    return {
        "format": "jb-book",
        "root": "README",
        "parts": [
            {"caption": "Chapters", "chapters": chapters},
            {
                "caption": "About the course",
                "chapters": [
                    {"file": "assets/runtimes", "title": "Measured runtimes"},
                    {"file": "assets/ops_bench", "title": "Speed of the library operations"},
                ],
            },
        ],
    }


def config() -> dict:
    meta = manifest.load()
    url, branch = manifest.repository()
    return {
        "title": meta["title"],
        "author": meta["author"],
        "copyright": "2026",
        "only_build_toc_files": True,
        # hidden folders (.git, .venv, .tools, checkpoints) and everything that is not a page
        "exclude_patterns": [".*", "**/.*", "_build", "tests", "course_lib", "tools", "LICENSE"],
        "execute": {"execute_notebooks": "off"},
        "parse": {
            "myst_enable_extensions": ["amsmath", "colon_fence", "deflist", "dollarmath", "substitution"],
        },
        # with a repository URL: a repository link and Binder launch buttons (Binder builds the
        # environment from environment.yml). No Colab button: a chapter may not `!pip install` the
        # course, which Colab would need. Without a URL: no such buttons at all.
        **({"repository": {"url": url, "branch": branch, "path_to_book": ""}} if url else {}),
        "html": {
            "use_repository_button": bool(url),
            "use_issues_button": bool(url),
            "use_edit_page_button": False,
            "home_page_in_navbar": True,
        },
        "launch_buttons": {
            "notebook_interface": "jupyterlab",
            "binderhub_url": "https://mybinder.org" if url else "",
            "colab_url": "",
            "thebe": False,
        },
        "sphinx": {
            # tools/site_ext.py: offline math, widget fallbacks, no Thebe, download links, solutions
            "local_extensions": {"site_ext": str(ROOT / "tools")},
            "config": {
                "html_show_copyright": False,
                # an explicit colour mode: with none the theme logs a console error on a first visit
                "html_context": {"default_mode": "auto"},
                "html_last_updated_fmt": "",
                "nb_merge_streams": True,
                "myst_heading_anchors": 3,
                "suppress_warnings": [],
                # the download menu offers the .ipynb; each chapter also links its .py
                "html_theme_options": {
                    "use_download_button": True,
                    "use_fullscreen_button": True,
                    "show_toc_level": 2,
                },
            },
        },
    }


def build(out: Path) -> int:
    problems = [p for ch in manifest.chapters() for p in notebooks.check(ch)]
    if problems:
        print("the book renders committed outputs; fix these first:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    gen = out / "_build" / "jb"
    gen.mkdir(parents=True, exist_ok=True)
    cfg, tocf = gen / "_config.yml", gen / "_toc.yml"
    cfg.write_text(yaml.safe_dump(config(), sort_keys=False), encoding="utf-8")
    tocf.write_text(yaml.safe_dump(toc(), sort_keys=False), encoding="utf-8")
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT),
        "--config", str(cfg), "--toc", str(tocf), "--path-output", str(out),
        "--builder", "html", "--warningiserror", "--keep-going", "--all",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode == 0:
        print(f"book built: {out / '_build' / 'html' / 'index.html'}")
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "toc"])
    ap.add_argument("--out", type=Path, default=ROOT, help="the site goes to OUT/_build/html")
    args = ap.parse_args(argv)
    if args.command == "toc":
        print(yaml.safe_dump(toc(), sort_keys=False))
        return 0
    return build(args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
