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


def test_library_speed_tables_are_rendered_from_the_measurements():
    ops = json.loads(bench.OPS_RESULTS.read_text(encoding="utf-8"))
    assert (ROOT / "assets" / "ops_bench.md").read_text(encoding="utf-8") == bench.ops_page(ops)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fresh = manifest.replace_between(readme, bench.OPS_START, bench.OPS_END, bench.ops_table(ops))
    assert fresh == readme, "README library-speed table is stale: `python tools/bench.py --ops --render`"
    assert {r["operation"] for r in ops["rows"]} >= {"box_iou", "nms", "batched_nms", "coco_map"}


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


# ------------------------------------------------------------------- publishing and launching
def test_coming_chapters_follow_the_written_ones_and_are_marked_in_the_readme():
    coming = manifest.coming()
    assert [c.number for c in coming] == [f"{len(CHAPTERS) + i:02d}" for i in range(len(coming))]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for c in coming:
        assert f"| {c.number} | {c.title} | *coming* | |" in readme


@pytest.mark.parametrize(
    "extra, match",
    [
        ('coming:\n  - number: "05"\n    title: X\n', "position 1"),
        ("coming:\n  - title: X\n", "exactly 'number' and 'title'"),
        ('repository:\n  url: "github.com/a/b"\n', "https://HOST/OWNER/REPO"),
        ("repository: [1]\n", "must be a mapping"),
    ],
)
def test_malformed_coming_or_repository_is_rejected(tmp_path: Path, extra: str, match: str):
    path = tmp_path / "book.yml"
    path.write_text("title: t\nauthor: a\nchapters:\n  - slug: 00_x\n    title: X\n" + extra)
    with pytest.raises(ValueError, match=match):
        manifest.coming(path)
        manifest.repository(path)


def test_launch_buttons_follow_the_repository_url(monkeypatch):
    monkeypatch.setattr(manifest, "repository", lambda path=None: ("", "main"))
    cfg = book.config()
    assert "repository" not in cfg and not cfg["html"]["use_repository_button"]
    assert not cfg["launch_buttons"]["binderhub_url"] and not cfg["launch_buttons"]["colab_url"]
    assert "git clone <repository-url>" in manifest.readme_clone()

    monkeypatch.setattr(manifest, "repository", lambda path=None: ("https://github.com/o/dlcv", "main"))
    cfg = book.config()
    assert cfg["repository"] == {"url": "https://github.com/o/dlcv", "branch": "main", "path_to_book": ""}
    assert cfg["html"]["use_repository_button"] and cfg["launch_buttons"]["binderhub_url"]
    assert "git clone https://github.com/o/dlcv.git" in manifest.readme_clone()


def test_publishing_workflow_runs_the_readme_commands_and_publishes_the_book():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "site.yml").read_text(encoding="utf-8"))
    build = wf["jobs"]["test-and-build"]
    runs = [s.get("run", "").strip() for s in build["steps"]]
    assert "bash .ci/run" in runs, "the workflow runs CI's entry point, i.e. the README's `make test`"
    assert "make book" in runs, "the workflow builds the site with the README's command"
    assert runs.index("bash .ci/run") < runs.index("make book")
    upload = next(
        s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")
    )
    assert upload["with"]["path"] == "_build/html", "it publishes what `make book` builds"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make book" in quick and "make test" in quick
    assert any(
        str(s.get("uses", "")).startswith("actions/deploy-pages") for s in wf["jobs"]["publish"]["steps"]
    )
