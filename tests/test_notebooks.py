"""Chapter notebooks: pairing with their .py, execution state, structure and the chapter rules.

nbval itself (re-running every notebook and comparing the cells marked NBVAL_CHECK_OUTPUT) runs on
``chapters/`` in the same pytest session; see ``addopts`` in pyproject.toml.
"""

from __future__ import annotations

import re

import jupytext
import manifest
import nbformat
import notebooks
import pytest

CHAPTERS = manifest.chapters()
ids = [c.slug for c in CHAPTERS]


def _nb(ch):
    return nbformat.read(ch.ipynb, as_version=4)


def _code(ch) -> list[str]:
    return [c.source for c in _nb(ch).cells if c.cell_type == "code"]


def _markdown(ch) -> list[str]:
    return [c.source for c in _nb(ch).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
def test_pair_in_sync_and_executed_in_order(ch):
    assert notebooks.check(ch) == []


def test_check_detects_drift_and_unexecuted_notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "chapters" / "00_demo"
    folder.mkdir(parents=True)
    monkeypatch.setattr(manifest, "ROOT", tmp_path)
    ch = manifest.Chapter("00_demo", "Demo")
    nb = jupytext.reads("# %%\nx = 1\n\n# %%\nprint(x)\n", fmt="py:percent")
    jupytext.write(nb, ch.ipynb, fmt="ipynb")
    ch.py.write_text(notebooks.py_text_of(nb))
    problems = notebooks.check(ch)
    assert any("not executed" in p for p in problems) and any("no outputs" in p for p in problems)
    ch.py.write_text(ch.py.read_text() + "\n# %%\nprint(2)\n")
    assert any("differ" in p for p in notebooks.check(ch))


def test_sync_keeps_outputs_through_reformatting_but_not_through_code_changes(tmp_path, monkeypatch):
    import os

    (tmp_path / "chapters" / "00_demo").mkdir(parents=True)
    monkeypatch.setattr(manifest, "ROOT", tmp_path)
    ch = manifest.Chapter("00_demo", "Demo")
    nb = jupytext.reads("# %%\nx = [1,2]  # a list\n\n# %%\nprint(x)\n", fmt="py:percent")
    for i, c in enumerate(nb.cells, 1):
        c.execution_count = i
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="[1, 2]\n")]
    jupytext.write(nb, ch.ipynb, fmt="ipynb")
    ch.py.write_text(notebooks.py_text_of(nb))

    def edit(py: str) -> str:
        ch.py.write_text(py)
        t = ch.ipynb.stat().st_mtime
        os.utime(ch.py, (t + 5, t + 5))
        return notebooks.sync(ch)

    assert (
        edit("# %%\nx = [1, 2]  # the same list, reformatted\n\n# %%\nprint(x)\n") == "synced (outputs kept)"
    )
    assert notebooks.check(ch) == []
    assert edit("# %%\nx = [1, 3]\n\n# %%\nprint(x)\n") == "synced (code changed: re-execute)"


# ------------------------------------------------------------------------------ chapter rules
RULES = {
    "the device comes from course_lib, never 'cuda'": re.compile(r"cuda", re.IGNORECASE),
    "no shell escapes or installs (!cmd, %pip, %conda, %%bash)": re.compile(
        r"^\s*(!|%pip|%conda|%%bash|%%sh|%system)", re.MULTILINE
    ),
    "no network access": re.compile(
        r"urllib|requests\.|https?://|\bfetch_\w+\(|torch\.hub|load_state_dict_from_url|download\s*=\s*True"
        r"|IMAGENET1K|\.DEFAULT\b|wget|curl"
    ),
    "no absolute paths": re.compile(r"""["'](/[A-Za-z_.]|[A-Za-z]:\\|~/)"""),
}


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
@pytest.mark.parametrize("rule", list(RULES))
def test_chapter_rules(ch, rule):
    hits = [line.strip() for src in _code(ch) for line in src.splitlines() if RULES[rule].search(line)]
    assert not hits, f"{ch.slug}: {rule}: {hits}"


@pytest.mark.parametrize(
    "line, rule",
    [
        ('x = x.to("cuda")', "the device comes from course_lib, never 'cuda'"),
        ("!pip install torch", "no shell escapes or installs (!cmd, %pip, %conda, %%bash)"),
        ("sklearn.datasets.fetch_openml('mnist')", "no network access"),
        ("open('/home/me/data.csv')", "no absolute paths"),
    ],
)
def test_rules_catch_violations(line, rule):
    assert RULES[rule].search(line)


# ------------------------------------------------------------------------------ chapter shape
def _headings(markdown_cells: list[str]) -> list[tuple[int, str]]:
    out = []
    for src in markdown_cells:
        fenced = False
        for line in src.splitlines():
            if line.startswith("```"):
                fenced = not fenced
            m = re.match(r"^(#{1,6})\s+(.*)", line)
            if m and not fenced:
                out.append((len(m.group(1)), m.group(2)))
    return out


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
def test_chapter_structure(ch):
    md, code = _markdown(ch), _code(ch)
    first = md[0]
    assert first.startswith(f"# {ch.number} · "), "first cell must be the title '# NN · ...'"
    for needle in ("**Learning objectives", "**Prerequisites", "**Measured runtime:**"):
        assert needle in first, f"{ch.slug}: the title cell lacks {needle}"
    for name in (f"{ch.slug}.ipynb", f"{ch.slug}.py"):
        assert f"[{name}]({name})" in first, f"{ch.slug}: the title cell's **Files:** line must link {name}"
    assert "runtime.setup(" in code[0], "the first code cell must call runtime.setup"
    heads = _headings(md)
    assert [lvl for lvl, _ in heads].count(1) == 1, "exactly one H1 (the title)"
    for (a, ta), (b, tb) in zip(heads, heads[1:], strict=False):
        assert b <= a + 1, f"{ch.slug}: heading level jumps from {ta!r} to {tb!r}"
    titles = [t for _, t in heads]
    assert "Exercises" in titles and "References" in titles and any(t.startswith("Summary") for t in titles)
    all_code = "\n".join(code)
    assert re.search(r"^\s*assert ", all_code, re.MULTILINE), "a chapter asserts its quality bar"
    assert "NBVAL_CHECK_OUTPUT" in all_code
    assert "ipywidgets" in all_code or "widgets." in all_code, "a chapter has an interactive control"


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
def test_exercise_solutions_are_folded(ch):
    nb = _nb(ch)
    idx = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    folded = [c for c in nb.cells[idx:] if "hide-cell" in c.metadata.get("tags", [])]
    assert 2 <= len(folded), f"{ch.slug}: exercises need solutions in cells tagged hide-cell"
    # collapsed in JupyterLab too, derived from the tag by tools/notebooks.py (`make sync` sets it)
    assert notebooks.solution_cells(nb) == folded
    collapsed = [c for c in nb.cells if c.metadata.get("jupyter", {}).get("source_hidden")]
    assert collapsed == folded, (
        f"{ch.slug}: exactly the solutions are collapsed in JupyterLab: run `make sync`"
    )


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
def test_exercises_check_the_learner_and_solutions_pass_the_same_check(ch):
    nb = _nb(ch)
    idx = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    solutions = [id(c) for c in notebooks.solution_cells(nb)]
    code = [c for c in nb.cells[idx:] if c.cell_type == "code"]
    checks = re.compile(r"exercises\.check_\w+\(")
    stubs = [c for c in code if id(c) not in solutions and checks.search(c.source)]
    checked = [c for c in code if id(c) in solutions and checks.search(c.source)]
    assert len(stubs) >= 2 and len(checked) >= 2, (
        f"{ch.slug}: at least two exercises give the learner a stub and a course_lib.exercises check"
    )
    for c in checked:
        assert ".assert_passed()" in c.source, (
            f"{ch.slug}: a solution must pass its own check:\n{c.source[:200]}"
        )
    for c in stubs:
        assert ".assert_passed()" not in c.source, f"{ch.slug}: the learner's check must not raise"
        outs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in c.outputs)
        assert "Not done yet" in outs, (
            f"{ch.slug}: an unfilled stub's check says it is not done yet:\n{outs[:300]}"
        )


@pytest.mark.parametrize("ch", CHAPTERS, ids=ids)
def test_widget_outputs_read_well_before_a_kernel_runs_them(ch):
    nb = _nb(ch)
    texts = [
        out["data"].get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for out in c.outputs
        if notebooks.WIDGET_VIEW in out.get("data", {})
    ]
    assert texts, f"{ch.slug}: no widget output"
    for t in texts:
        assert t == notebooks.INTERACTIVE_TEXT or re.search(r"\d+%", t), (
            f"{ch.slug}: a widget output shows {t[:80]!r} before a kernel runs it: run `make sync`"
        )


def test_present_collapses_solutions_and_names_widgets():
    nb = jupytext.reads(
        '# %% [markdown]\n# ## Work\n\n# %% tags=["hide-cell"]\nplot = 1\n\n'
        '# %% [markdown]\n# ## Exercises\n\n# %%\nstub = 0\n\n# %% tags=["hide-cell"]\nanswer = 1\n',
        fmt="py:percent",
    )
    nb.cells[0].metadata["jupyter"] = {"source_hidden": True}  # stale metadata goes away
    state = {
        "a": {
            "model_name": "HBoxModel",
            "state": {"children": ["IPY_MODEL_b", "IPY_MODEL_c", "IPY_MODEL_d"]},
        },
        "b": {"model_name": "HTMLModel", "state": {"value": "fit: 100%"}},
        "c": {"model_name": "FloatProgressModel", "state": {"value": 25, "max": 25}},
        "d": {"model_name": "HTMLModel", "state": {"value": " 25/25 [00:01&lt;00:00]"}},
        "e": {"model_name": "VBoxModel", "state": {}},
    }
    nb.metadata["widgets"] = {notebooks.WIDGET_STATE: {"state": state}}
    view = notebooks.WIDGET_VIEW
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", {view: {"model_id": "a"}, "text/plain": "  0%|  | 0/25"}),
        nbformat.v4.new_output(
            "display_data", {view: {"model_id": "e"}, "text/plain": "interactive(children="}
        ),
    ]
    notebooks.present(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.metadata.get("jupyter") for c in code] == [
        None,
        None,
        {"source_hidden": True, "outputs_hidden": True},
    ]
    assert [o["data"]["text/plain"] for o in code[0].outputs] == [
        "fit: 100% 25/25 [00:01<00:00]",
        notebooks.INTERACTIVE_TEXT,
    ]
