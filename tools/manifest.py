"""Read and check ``book.yml``, the course manifest (the one place chapters are listed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SLUG_RE = re.compile(r"^(\d{2})_[a-z0-9_]+$")


@dataclass(frozen=True)
class Chapter:
    slug: str
    title: str

    @property
    def number(self) -> str:
        return self.slug[:2]

    @property
    def folder(self) -> Path:
        return ROOT / "chapters" / self.slug

    @property
    def py(self) -> Path:
        return self.folder / f"{self.slug}.py"

    @property
    def ipynb(self) -> Path:
        return self.folder / f"{self.slug}.ipynb"

    @property
    def label(self) -> str:
        return f"{self.number} · {self.title}"


def load(path: Path = ROOT / "book.yml") -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("chapters"), list):
        raise ValueError(f"{path}: expected a mapping with a 'chapters' list")
    for key in ("title", "author"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{path}: '{key}' must be a string")
    return data


def chapters(path: Path = ROOT / "book.yml") -> list[Chapter]:
    """The chapters in course order; raises ValueError on a malformed manifest."""
    out: list[Chapter] = []
    for i, entry in enumerate(load(path)["chapters"]):
        if not isinstance(entry, dict) or set(entry) != {"slug", "title"}:
            raise ValueError(f"{path}: chapter {i} must have exactly 'slug' and 'title', got {entry!r}")
        slug, title = entry["slug"], entry["title"]
        if not SLUG_RE.match(str(slug)):
            raise ValueError(f"{path}: chapter slug {slug!r} must look like 'NN_name'")
        if int(slug[:2]) != i:
            raise ValueError(
                f"{path}: chapter {slug!r} is listed at position {i}; numbers must follow the order"
            )
        out.append(Chapter(str(slug), str(title)))
    return out


@dataclass(frozen=True)
class Coming:
    number: str
    title: str


def coming(path: Path = ROOT / "book.yml") -> list[Coming]:
    """Chapters on the syllabus not written yet (``coming`` in book.yml), after the written ones."""
    written = chapters(path)
    out: list[Coming] = []
    for i, entry in enumerate(load(path).get("coming") or []):
        if not isinstance(entry, dict) or set(entry) != {"number", "title"}:
            raise ValueError(
                f"{path}: coming entry {i} must have exactly 'number' and 'title', got {entry!r}"
            )
        number = str(entry["number"])
        if number != f"{len(written) + i:02d}":
            raise ValueError(
                f"{path}: coming chapter {number!r} is listed at position {len(written) + i}; numbers must "
                "follow the written chapters in order"
            )
        out.append(Coming(number, str(entry["title"])))
    return out


def repository(path: Path = ROOT / "book.yml") -> tuple[str, str]:
    """``(url, branch)`` where the course is published; ``url`` is ``""`` when none is set."""
    repo = load(path).get("repository") or {}
    if not isinstance(repo, dict) or not set(repo) <= {"url", "branch"}:
        raise ValueError(f"{path}: 'repository' must be a mapping with 'url' and 'branch', got {repo!r}")
    url, branch = str(repo.get("url") or "").strip().rstrip("/"), str(repo.get("branch") or "main")
    if url and not re.match(r"^https://[^\s/]+/[^\s/]+/[^\s/]+$", url):
        raise ValueError(f"{path}: repository url must look like https://HOST/OWNER/REPO, got {url!r}")
    return url, branch


def select(names: list[str] | None) -> list[Chapter]:
    """Chapters matching ``names`` (slugs, or two-digit numbers); all when ``names`` is empty.

    A full slug that is not listed yet but has its ``chapters/<slug>/<slug>.py`` is selected too (a
    chapter being written: it can be synced and executed before it joins ``book.yml``).
    """
    chs = chapters()
    if not names:
        return chs
    picked = []
    for name in names:
        hit = [c for c in chs if name in (c.slug, c.number)]
        if not hit and SLUG_RE.match(name) and Chapter(name, name).py.exists():
            hit = [Chapter(name, coming_title(name[:2]) or name)]
        if not hit:
            raise SystemExit(f"unknown chapter {name!r}; known: {', '.join(c.slug for c in chs)}")
        picked += hit
    return picked


def coming_title(number: str) -> str | None:
    """The title ``book.yml`` gives a coming chapter, or ``None``."""
    return next((c.title for c in coming() if c.number == number), None)


README_START, README_END = "<!-- chapters:start -->", "<!-- chapters:end -->"


def readme_table() -> str:
    """The README's chapter table, generated from book.yml."""
    rows = ["| # | chapter | notebook | script |", "|---|---|---|---|"]
    for c in chapters():
        base = f"chapters/{c.slug}/{c.slug}"
        rows.append(f"| {c.number} | {c.title} | [{c.slug}.ipynb]({base}.ipynb) | [{c.slug}.py]({base}.py) |")
    for c in coming():
        rows.append(f"| {c.number} | {c.title} | *coming* | |")
    return "\n".join(rows) + "\n"


CLONE_START, CLONE_END = "<!-- clone:start -->", "<!-- clone:end -->"


def readme_clone() -> str:
    """The README's clone command, from the repository URL in book.yml."""
    url, _ = repository()
    target = url + ".git" if url else "<repository-url>"
    return f"```bash\ngit clone {target} dlcv && cd dlcv\n```\n"


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with everything between the marker lines ``start`` and ``end`` replaced by ``body``."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected the markers {start} ... {end} once each, in that order")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + body + end + tail


def readme_with_table(text: str) -> str:
    """``text`` (the README) with its generated blocks (chapter table, clone command) refreshed."""
    text = replace_between(text, README_START, README_END, readme_table())
    return replace_between(text, CLONE_START, CLONE_END, readme_clone())


if __name__ == "__main__":
    readme = ROOT / "README.md"
    old = readme.read_text(encoding="utf-8")
    new = readme_with_table(old)
    if new != old:
        readme.write_text(new, encoding="utf-8")
        print("README.md: chapter table updated from book.yml")
