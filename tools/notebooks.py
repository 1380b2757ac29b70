"""Pair, execute and check the chapter notebooks.

    python tools/notebooks.py sync    [CHAPTER ...]   # make every .ipynb follow its .py (outputs kept)
    python tools/notebooks.py execute [CHAPTER ...] [-j N]
                                                      # run each chapter top to bottom in a fresh
                                                      # kernel and save the outputs in its .ipynb
    python tools/notebooks.py check   [CHAPTER ...]   # fail if a pair is out of sync or a notebook
                                                      # is not executed in order with outputs

CHAPTER is a slug from book.yml (``01_preprocessing``) or its number (``01``); none means all.
The ``.py`` file is the source instructors edit: ``sync`` and ``execute`` read it. If a learner edited
the ``.ipynb`` in JupyterLab (where jupytext keeps both files in step) the two already agree; if only
the ``.ipynb`` is newer, ``sync`` refuses rather than overwrite it (run ``jupytext --sync`` on it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jupytext
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest  # noqa: E402

KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
CELL_TIMEOUT_S = 600


def _config():
    """The repository's jupytext.toml, so that these tools write exactly what `jupytext --sync` writes."""
    from jupytext.config import load_jupytext_config

    return load_jupytext_config(str(manifest.ROOT / "chapters"))


def py_text_of(nb) -> str:
    return jupytext.writes(nb, fmt="py:percent", config=_config())


def _read_py(ch: manifest.Chapter):
    nb = jupytext.read(ch.py)
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    return nb


def _keep_ids(new, old) -> None:
    """Give cells of ``new`` the ids of ``old``'s cells with the same type and source (stable diffs)."""
    import uuid

    pool: dict[tuple[str, str], list[str]] = {}
    for c in old.cells:
        if "id" in c:
            pool.setdefault((c.cell_type, c.source), []).append(c.id)
    kept, fresh = set(), []
    for c in new.cells:
        ids = pool.get((c.cell_type, c.source))
        if ids:
            c.id = ids.pop(0)
            kept.add(c.id)
        else:
            fresh.append(c)
    for c in fresh:  # a changed cell keeps its new random id unless it clashes with a kept one
        while c.get("id") in kept:
            c.id = uuid.uuid4().hex[:8]


def _code_meaning(source: str) -> str:
    """A cell's code up to formatting and comments (its AST), or the source itself if it does not parse."""
    import ast

    try:
        return ast.dump(ast.parse(source))
    except SyntaxError:  # IPython magics and the like: only an identical source is the same code
        return source


def _merge_outputs(new, old) -> None:
    """Copy ids, outputs and execution counts from ``old`` to the cells of ``new`` that run the same code.

    The same code means the same sequence of code cells whose sources parse to the same syntax tree:
    reformatting (``ruff format``) or editing comments keeps the outputs; any other change drops them.
    """
    _keep_ids(new, old)
    olds = [c for c in old.cells if c.cell_type == "code"]
    news = [c for c in new.cells if c.cell_type == "code"]
    if [_code_meaning(c.source) for c in olds] == [_code_meaning(c.source) for c in news]:
        for n, o in zip(news, olds, strict=True):
            n.outputs, n.execution_count = o.get("outputs", []), o.get("execution_count")
        # the widget state belongs to those outputs: keep it only with them
        new.metadata.update({k: v for k, v in old.metadata.items() if k in ("widgets", "language_info")})


def _normalize_py(ch: manifest.Chapter, nb) -> None:
    """Rewrite the .py in jupytext's canonical form (same content) so that the pair compares equal."""
    text = py_text_of(nb)
    if ch.py.read_text(encoding="utf-8") != text:
        ch.py.write_text(text, encoding="utf-8")


def sync(ch: manifest.Chapter) -> str:
    """Make ``ch.ipynb`` follow ``ch.py``; keeps outputs when only markdown changed."""
    if not ch.py.exists():
        raise SystemExit(f"missing {ch.py.relative_to(manifest.ROOT)}")
    new = _read_py(ch)
    if ch.ipynb.exists():
        old = nbformat.read(ch.ipynb, as_version=4)
        if py_text_of(old) == ch.py.read_text(encoding="utf-8"):
            before = nbformat.writes(old)
            present(old)
            if nbformat.writes(old) == before:
                return "in sync"
            jupytext.write(old, ch.ipynb, fmt="ipynb")
            return "in sync (presentation updated)"
        if ch.ipynb.stat().st_mtime > ch.py.stat().st_mtime + 1:
            raise SystemExit(
                f"{ch.ipynb.name} is newer than {ch.py.name} and they differ: run "
                f"`jupytext --sync {ch.ipynb.relative_to(manifest.ROOT)}` to take the notebook's edits"
            )
        _merge_outputs(new, old)
        present(new)
        state = (
            "synced (outputs kept)"
            if any(c.get("outputs") for c in new.cells if c.cell_type == "code")
            else "synced (code changed: re-execute)"
        )
    else:
        state = "created (not executed)"
    jupytext.write(new, ch.ipynb, fmt="ipynb")
    _normalize_py(ch, new)
    return state


def _coalesce_streams(nb) -> None:
    """Merge consecutive stdout (or stderr) outputs of a cell; how the kernel chunks them is random."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.outputs:
            if (
                merged
                and out.output_type == "stream"
                and merged[-1].output_type == "stream"
                and merged[-1].name == out.name
            ):
                merged[-1].text += out.text
            else:
                merged.append(out)
        cell.outputs = merged


def _stable_widget_ids(nb, slug: str) -> None:
    """Replace the random ids of widget models by ids derived from the chapter and their order."""
    import hashlib
    import json

    state = (
        nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    )
    if not state:
        return
    text = json.dumps({"cells": nb.cells, "widgets": nb.metadata["widgets"]})
    order = sorted(state, key=lambda k: text.find(k))
    mapping = {old: hashlib.sha1(f"{slug}/{i}".encode()).hexdigest()[:32] for i, old in enumerate(order)}
    pattern = re.compile("|".join(map(re.escape, mapping)))
    swapped = json.loads(pattern.sub(lambda m: mapping[m.group(0)], text))
    for cell, new in zip(nb.cells, swapped["cells"], strict=True):
        if cell.cell_type == "code":
            cell.outputs = nbformat.from_dict(new["outputs"])
    nb.metadata["widgets"] = nbformat.from_dict(swapped["widgets"])


# ------------------------------------------------------------------- presentation, derived
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: What a reader sees in place of an interactive control where no kernel runs it.
INTERACTIVE_TEXT = (
    "Interactive control: it needs a live Python kernel. Run this chapter's cells in JupyterLab "
    "(make lab) to use it; the static figure beside it shows its default view."
)


def widget_states(nb) -> dict:
    """The saved widget models of a notebook, by model id (``{}`` when none were saved)."""
    return nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def progress_text(model_id: str, states: dict) -> str | None:
    """A tqdm notebook bar (an HBox of HTML, FloatProgress, HTML) as the line tqdm prints in a terminal.

    ``None`` when ``model_id`` is not such a bar.
    """
    import html

    box = states.get(model_id, {})
    if box.get("model_name") != "HBoxModel":
        return None
    kids = [
        states.get(str(c).removeprefix("IPY_MODEL_"), {}) for c in box.get("state", {}).get("children", [])
    ]
    names = [k.get("model_name") for k in kids]
    if "FloatProgressModel" not in names:
        return None
    bar = kids[names.index("FloatProgressModel")].get("state", {})
    texts = [k.get("state", {}).get("value", "") for k in kids if k.get("model_name") == "HTMLModel"]
    left = html.unescape(re.sub(r"<[^>]+>", "", texts[0])).strip() if texts else ""
    right = html.unescape(re.sub(r"<[^>]+>", "", texts[-1])).strip() if len(texts) > 1 else ""
    value, top = bar.get("value") or 0, bar.get("max") or 0
    percent = f"{100 * value / top:.0f}%" if top and "%" not in left else ""
    return " ".join(t for t in (left, percent, right) if t)


def solution_cells(nb) -> list:
    """Code cells folded on the site (tag ``hide-cell``) after the ``## Exercises`` heading."""
    out, in_exercises = [], False
    for c in nb.cells:
        if c.cell_type == "markdown" and re.search(r"^## ", c.source, re.M):
            in_exercises = bool(re.search(r"^## Exercises\b", c.source, re.M))
        elif c.cell_type == "code" and in_exercises and "hide-cell" in c.metadata.get("tags", []):
            out.append(c)
    return out


def present(nb) -> None:
    """Set what is derived from the source, in place: the one source is the ``.py`` and its tags.

    - Solutions (``hide-cell`` under Exercises) are collapsed in JupyterLab (``jupyter.source_hidden``
      and ``outputs_hidden``); no other cell carries that metadata.
    - A widget output's plain-text form (what JupyterLab and other front ends show before a kernel
      runs the widget) is a sentence saying what it is, or a progress bar's final line, instead of
      ``interactive(children=(Dropdown(...`` or ``0%| | 0/25``.
    """
    solutions = {id(c) for c in solution_cells(nb)}
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if id(c) in solutions:
            c.metadata["jupyter"] = {"source_hidden": True, "outputs_hidden": True}
        else:
            c.metadata.pop("jupyter", None)
    states = widget_states(nb)
    for c in nb.cells:
        for out in c.get("outputs", []) if c.cell_type == "code" else []:
            view = out.get("data", {}).get(WIDGET_VIEW) if out.get("output_type") == "display_data" else None
            if view is not None:
                out["data"]["text/plain"] = (
                    progress_text(view.get("model_id", ""), states) or INTERACTIVE_TEXT
                )


def execute(ch: manifest.Chapter) -> tuple[str, float]:
    """Run the chapter from its ``.py`` in a fresh kernel (cwd = chapter folder); save the ``.ipynb``."""
    from nbclient import NotebookClient

    source = ch.py.read_text(encoding="utf-8")
    nb = _read_py(ch)
    if ch.ipynb.exists():
        _keep_ids(nb, nbformat.read(ch.ipynb, as_version=4))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ch.folder)}},
        record_timing=False,
        store_widget_state=True,
    )
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    _coalesce_streams(nb)
    _stable_widget_ids(nb, ch.slug)
    present(nb)
    jupytext.write(nb, ch.ipynb, fmt="ipynb")
    if ch.py.read_text(encoding="utf-8") != source:
        # the .py was edited while the chapter ran: keep the edits (the pair check will ask for a rerun)
        print(
            f"{ch.slug}: {ch.py.name} changed during the run; kept it, run `make execute` again",
            file=sys.stderr,
        )
    else:
        _normalize_py(ch, nb)
    return ch.slug, wall


def check(ch: manifest.Chapter) -> list[str]:
    """Problems with a chapter pair: missing files, drift, not executed in order, missing outputs."""
    rel = ch.folder.relative_to(manifest.ROOT)
    if not ch.py.exists() or not ch.ipynb.exists():
        return [f"{rel}: needs both {ch.py.name} and {ch.ipynb.name}"]
    problems = []
    nb = nbformat.read(ch.ipynb, as_version=4)
    if py_text_of(nb) != ch.py.read_text(encoding="utf-8"):
        problems.append(
            f"{rel}: {ch.py.name} and {ch.ipynb.name} differ (run `make sync`, then `make execute` if code changed)"
        )
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(
            f"{rel}: not executed top to bottom in one fresh kernel (execution counts {counts}); run `make execute CHAPTERS={ch.number}`"
        )
    if code and not any(c.get("outputs") for c in code):
        problems.append(f"{rel}: {ch.ipynb.name} has no outputs")
    for c in code:
        for out in c.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"{rel}: a cell raised {out.get('ename')}: {out.get('evalue')}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["sync", "execute", "check"])
    ap.add_argument("chapters", nargs="*", help="slugs or numbers (default: all in book.yml)")
    ap.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=int(os.environ.get("COURSE_JOBS", "2")),
        help="parallel kernels for execute",
    )
    args = ap.parse_args(argv)
    chs = manifest.select(args.chapters)
    if args.command == "sync":
        for ch in chs:
            print(f"{ch.slug}: {sync(ch)}")
        return 0
    if args.command == "check":
        problems = [p for ch in chs for p in check(ch)]
        print("\n".join(problems) if problems else f"{len(chs)} chapter pairs in sync and executed")
        return 1 if problems else 0
    jobs = max(1, min(args.jobs, len(chs)))
    failed = []
    # spawn, not fork: a forked worker inherits the parent's ZMQ/thread state and can hang a kernel
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {ch.slug: pool.submit(execute, ch) for ch in chs}
        for slug, fut in futures.items():
            try:
                _, wall = fut.result()
                print(f"{slug}: executed in {wall:.1f} s")
            except Exception as exc:  # report every failing chapter, then fail
                failed.append(slug)
                print(f"{slug}: FAILED\n{exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
