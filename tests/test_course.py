"""The course manifest (book.yml) and everything generated from or checked against it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import bench
import book
import manifest
import pytest

ROOT = manifest.ROOT
CHAPTERS = manifest.chapters()


def test_manifest_lists_course_chapters_in_order():
    assert CHAPTERS, "book.yml lists no chapters"
    assert [c.number for c in CHAPTERS] == [f"{i:02d}" for i in range(len(CHAPTERS))]
    assert len({c.slug for c in CHAPTERS}) == len(CHAPTERS)


def test_every_chapter_folder_is_in_the_manifest_and_back():
    folders = sorted(
        p.name for p in (ROOT / "chapters").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    assert folders == [c.slug for c in CHAPTERS], "chapters/ and book.yml disagree"


@pytest.mark.parametrize(
    "bad, match",
    [
        ("title: t\nauthor: a\nchapters:\n  - slug: 01_x\n    title: X\n", "position 0"),
        ("title: t\nauthor: a\nchapters:\n  - slug: intro\n    title: X\n", "NN_name"),
        ("title: t\nauthor: a\nchapters:\n  - slug: 00_x\n", "exactly 'slug' and 'title'"),
        ("title: t\nchapters: []\n", "author"),
        ("- a list\n", "mapping"),
    ],
)
def test_malformed_manifest_is_rejected(tmp_path: Path, bad: str, match: str):
    path = tmp_path / "book.yml"
    path.write_text(bad)
    with pytest.raises(ValueError, match=match):
        manifest.chapters(path)


def test_book_toc_is_generated_from_the_manifest():
    toc = book.toc()
    assert toc["root"] == "README"
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    chapter_files = [f for f in files if f.startswith("chapters/")]
    assert chapter_files == [f"chapters/{c.slug}/{c.slug}" for c in CHAPTERS]
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), (
            f"TOC entry {f} has no page"
        )


def test_readme_chapter_table_matches_the_manifest():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert manifest.readme_with_table(readme) == readme, "README chapter table is stale: run `make sync`"
    for c in CHAPTERS:
        assert c.title in readme


def test_readme_quick_start_has_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make book" in quick and "make test" in quick
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.MULTILINE), ".ci/run must call the README's test command"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("book", "test", "lab", "sync", "execute", "bench"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile lacks `{target}`"


def test_environment_yml_installs_the_project_with_pip_only():
    env = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert "--editable .[course,dev]" in env
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:  # the package list lives in pyproject.toml only
        name = re.split(r"[<>=!~\[ ]", dep)[0]
        assert not re.search(rf"^\s*-\s*{re.escape(name)}\b", env, re.MULTILINE), f"{name} listed twice"


# ----------------------------------------------------------------------------- runtime benchmark
RESULTS = json.loads(bench.RESULTS.read_text(encoding="utf-8")) if bench.RESULTS.exists() else {}


def test_runtime_table_covers_every_chapter_on_cpu():
    measured = RESULTS.get("cpu", {}).get("chapters", {})
    missing = [c.slug for c in CHAPTERS if c.slug not in measured]
    assert not missing, f"no CPU measurement for {missing}: run `make bench`"


def test_measured_cpu_runtimes_are_within_budget():
    assert bench.over_budget(RESULTS) == []


def test_runtime_tables_are_rendered_from_the_measurements():
    assert (ROOT / "assets" / "runtimes.md").read_text(encoding="utf-8") == bench.page(RESULTS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert bench.readme_with_table(readme, RESULTS) == readme, "README runtime table is stale: `make bench`"
    for c in CHAPTERS:
        text = c.py.read_text(encoding="utf-8")
        assert bench.chapter_with_line(text, bench.runtime_line(RESULTS, c.slug)) == text, c.slug


def test_chapter_runtime_line_is_rewritten_in_place():
    text = "# %% [markdown]\n# # 00 · T\n#\n# **Measured runtime:** not measured yet.\n"
    results = {
        "cpu": {
            "machine": {"cores": 2, "cpu": "x", "threads": 1, "python": "3", "torch": "2", "date": "d"},
            "chapters": {"00_t": {"wall_s": 12.3, "peak_mb": 500}},
        }
    }
    new = bench.chapter_with_line(text, bench.runtime_line(results, "00_t"))
    assert "# **Measured runtime:** 12 s on a 2-core CPU" in new
    with pytest.raises(ValueError, match="exactly one"):
        bench.chapter_with_line(text + text, "x")
    assert bench.over_budget({"cpu": {"chapters": {"a": {"wall_s": 91.0, "peak_mb": 1}}}}) == [
        "a: 91.0 s > 90 s"
    ]


def test_generated_blocks_need_their_markers_once_and_in_order():
    assert manifest.replace_between("a\n<s>\nold\n<e>\nb", "<s>", "<e>", "new\n") == "a\n<s>\nnew\n<e>\nb"
    for bad in ("no markers", "<e>\n<s>\n", "<s>\n<s>\n<e>\n"):
        with pytest.raises(ValueError, match="markers"):
            manifest.replace_between(bad, "<s>", "<e>", "x")
