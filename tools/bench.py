"""Measure every chapter: wall time and peak memory, each in a fresh kernel, one chapter at a time.

    python tools/bench.py [CHAPTER ...]        # measure (all chapters by default), then write
    python tools/bench.py --render             # only re-render the tables from assets/runtimes.json

Results go to ``assets/runtimes.json`` under a key for the kind of machine (``cpu``, or ``gpu`` when
a CUDA device is visible), so CPU and GPU rows live side by side. From that file the tool renders
``assets/runtimes.md`` (the book's runtime page), the table between the ``runtimes`` markers in
``README.md``, and the ``**Measured runtime:**`` line at the top of each chapter (then syncs the
notebooks; outputs are kept because only markdown changes).

Budgets: each chapter at most 90 s and the whole course at most 20 min on a CPU. The tool exits 1
when a measured CPU row breaks a budget.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest  # noqa: E402

ROOT = manifest.ROOT
RESULTS = ROOT / "assets" / "runtimes.json"
PAGE = ROOT / "assets" / "runtimes.md"
README = ROOT / "README.md"
CHAPTER_BUDGET_S = 90.0
COURSE_BUDGET_S = 20 * 60.0
RUNTIME_LINE = re.compile(r"^(# )?\*\*Measured runtime:\*\*.*$", re.MULTILINE)
README_START, README_END = "<!-- runtimes:start -->", "<!-- runtimes:end -->"


# ------------------------------------------------------------------------------------- measuring
def _measure_one(slug: str) -> dict:
    """Run one chapter in a fresh kernel (in this process); return wall time and the kernel's peak RSS."""
    import resource

    import jupytext
    from nbclient import NotebookClient

    ch = next(c for c in manifest.chapters() if c.slug == slug)
    nb = jupytext.read(ch.py)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ch.folder)}}
    )
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    # the kernel has exited: the children's max RSS is the kernel's peak (KiB on Linux, bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / 1024 if sys.platform != "darwin" else peak / 2**20
    return {"wall_s": round(wall, 1), "peak_mb": round(peak_mb)}


def machine() -> dict:
    import torch

    from course_lib import runtime

    info = {
        "cpu": runtime.cpu_name(),
        "cores": os.cpu_count(),
        "threads": int(os.environ.get("COURSE_NUM_THREADS", "1")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
    }
    if torch.cuda.is_available():
        info["gpu"] = runtime.device_name("cuda")
    return info


def measure(chapters: list[manifest.Chapter]) -> tuple[str, dict]:
    info = machine()
    kind = "gpu" if "gpu" in info else "cpu"
    rows = {}
    for ch in chapters:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", ch.slug], capture_output=True, text=True, cwd=ROOT
        )
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            raise SystemExit(f"{ch.slug}: execution failed")
        rows[ch.slug] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{ch.slug}: {rows[ch.slug]['wall_s']:.1f} s, peak {rows[ch.slug]['peak_mb']} MB", flush=True)
    return kind, {"machine": info, "chapters": rows}


# ------------------------------------------------------------------------------------- rendering
def load_results() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}


def _fmt(row: dict | None) -> str:
    return f"{row['wall_s']:.0f} s" if row else "–"


def _mem(row: dict | None) -> str:
    return f"{row['peak_mb']} MB" if row else "–"


def table(results: dict) -> str:
    """The runtime table in Markdown (one row per chapter, CPU and GPU columns)."""
    cpu = results.get("cpu", {}).get("chapters", {})
    gpu = results.get("gpu", {}).get("chapters", {})
    lines = [
        "| chapter | CPU wall | CPU peak memory | GPU wall | GPU peak memory |",
        "|---|---:|---:|---:|---:|",
    ]
    for ch in manifest.chapters():
        c, g = cpu.get(ch.slug), gpu.get(ch.slug)
        lines.append(f"| {ch.label} | {_fmt(c)} | {_mem(c)} | {_fmt(g)} | {_mem(g)} |")
    total_c = sum(r["wall_s"] for r in cpu.values())
    total_g = sum(r["wall_s"] for r in gpu.values())
    gpu_total = f"**{total_g / 60:.1f} min**" if gpu else "–"
    lines.append(f"| **whole course** | **{total_c / 60:.1f} min** | | {gpu_total} | |")
    notes = []
    for kind in ("cpu", "gpu"):
        m = results.get(kind, {}).get("machine")
        if m:
            where = m.get("gpu", m["cpu"])
            notes.append(
                f"{kind.upper()}: {where}, {m['cores']} cores, {m['threads']} torch thread(s), "
                f"Python {m['python']}, torch {m['torch']}, measured {m['date']}."
            )
    budget = (
        f"Budgets: each chapter at most {CHAPTER_BUDGET_S:.0f} s and the whole course at most "
        f"{COURSE_BUDGET_S / 60:.0f} min on a 2-core CPU. Each chapter runs in a fresh kernel, one at a "
        "time; peak memory is the kernel's maximum resident set size. Measured by `make bench`."
    )
    return "\n".join(lines) + "\n\n" + " ".join(notes) + ("\n\n" if notes else "") + budget + "\n"


def runtime_line(results: dict, slug: str) -> str:
    c = results.get("cpu", {}).get("chapters", {}).get(slug)
    g = results.get("gpu", {}).get("chapters", {}).get(slug)
    if not c and not g:
        return "**Measured runtime:** not measured yet."
    parts = []
    if c:
        m = results["cpu"]["machine"]
        parts.append(f"{c['wall_s']:.0f} s on a {m['cores']}-core CPU")
    if g:
        parts.append(f"{g['wall_s']:.0f} s on a GPU ({results['gpu']['machine'].get('gpu', 'CUDA')})")
    return (
        "**Measured runtime:** " + "; ".join(parts) + " (see the [runtime table](../../assets/runtimes.md))."
    )


def page(results: dict) -> str:
    return (
        "# Measured runtimes\n\n"
        "How long each chapter takes to run top to bottom in a fresh kernel, and how much memory it needs.\n\n"
        + table(results)
    )


def readme_with_table(text: str, results: dict) -> str:
    return manifest.replace_between(text, README_START, README_END, table(results))


def chapter_with_line(text: str, line: str) -> str:
    hits = RUNTIME_LINE.findall(text)
    if len(hits) != 1:
        raise ValueError(f"expected exactly one '**Measured runtime:**' line, found {len(hits)}")
    return RUNTIME_LINE.sub(lambda m: (m.group(1) or "") + line, text, count=1)


def render(results: dict) -> None:
    import notebooks

    PAGE.write_text(page(results), encoding="utf-8")
    README.write_text(readme_with_table(README.read_text(encoding="utf-8"), results), encoding="utf-8")
    for ch in manifest.chapters():
        if not ch.py.exists():
            continue
        text = ch.py.read_text(encoding="utf-8")
        new = chapter_with_line(text, runtime_line(results, ch.slug))
        if new != text:
            ch.py.write_text(new, encoding="utf-8")
            print(f"{ch.slug}: {notebooks.sync(ch)}")


def over_budget(results: dict) -> list[str]:
    cpu = results.get("cpu", {}).get("chapters", {})
    out = [
        f"{s}: {r['wall_s']} s > {CHAPTER_BUDGET_S:.0f} s"
        for s, r in cpu.items()
        if r["wall_s"] > CHAPTER_BUDGET_S
    ]
    total = sum(r["wall_s"] for r in cpu.values())
    if total > COURSE_BUDGET_S:
        out.append(f"whole course: {total:.0f} s > {COURSE_BUDGET_S:.0f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*")
    ap.add_argument("--render", action="store_true", help="only re-render tables from the stored results")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(args.one)))
        return 0
    results = load_results()
    if not args.render:
        kind, new = measure(manifest.select(args.chapters))
        entry = results.setdefault(kind, {"machine": new["machine"], "chapters": {}})
        entry["machine"] = new["machine"]
        entry["chapters"].update(new["chapters"])
        known = {c.slug for c in manifest.chapters()}
        entry["chapters"] = {s: r for s, r in entry["chapters"].items() if s in known}
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    render(results)
    print(table(results))
    problems = over_budget(results)
    for p in problems:
        print(f"over budget: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
