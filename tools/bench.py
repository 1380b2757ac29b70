"""Measure every chapter: wall time and peak memory, each in a fresh kernel, one chapter at a time.

    python tools/bench.py [CHAPTER ...]        # measure (all chapters by default), then write
    python tools/bench.py --render             # only re-render the tables from assets/runtimes.json
    python tools/bench.py --ops                # only time the library operations (below)

Results go to ``assets/runtimes.json`` under a key for the kind of machine (``cpu``, or ``gpu`` when
a CUDA device is visible), so CPU and GPU rows live side by side. From that file the tool renders
``assets/runtimes.md`` (the book's runtime page), the table between the ``runtimes`` markers in
``README.md``, and the ``**Measured runtime:**`` line at the top of each chapter (then syncs the
notebooks; outputs are kept because only markdown changes).

Each chapter runs with an empty ``torch.compile`` cache (a fresh ``TORCHINDUCTOR_CACHE_DIR``), as on a
fresh machine. Budgets: each chapter at most 90 s and the whole course at most 20 min on a CPU. The tool
exits 1 when a measured CPU row breaks a budget.

Library operations: with one torch thread, ``course_lib.ops`` (``box_iou``, ``nms``, ``batched_nms``)
against ``torchvision.ops`` on 1,000 and 5,000 clustered boxes and on a chain of 2,000 shifted boxes, and
``metrics.coco_map`` against pycocotools' ``COCOeval`` on 200 images, written to ``assets/ops_bench.md``
and ``assets/ops_bench.json`` (and between the ``ops-bench`` markers of README.md, where it has them).
Run with ``--ops`` alone (``--ops --render`` only re-renders), and by a full run (no chapters named).
The tool exits 1 when a ratio exceeds 1.5.
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
import tempfile
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
OPS_RESULTS = ROOT / "assets" / "ops_bench.json"
OPS_PAGE = ROOT / "assets" / "ops_bench.md"
OPS_RATIO_GOAL = 1.5
OPS_START, OPS_END = "<!-- ops-bench:start -->", "<!-- ops-bench:end -->"


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
        # a fresh torch.compile cache per chapter: measure what a fresh machine (CI, a learner's
        # first run) sees, not a cache warmed by an earlier run
        with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            proc = subprocess.run(
                [sys.executable, __file__, "--one", ch.slug],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
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


# ------------------------------------------------------------------------------------- library ops
def _clustered_boxes(n: int, seed: int):
    """``n`` boxes in 20 clusters on a 512 x 512 image (the output of a dense detector before NMS)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(20, 2, generator=g) * 448 + 32
    pick = torch.randint(0, 20, (n,), generator=g)
    cxcy = centres[pick] + torch.randn(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * 40 + 20
    boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g)


def _chain_boxes(n: int):
    """A chain of ``n`` 10 x 10 boxes, each shifted 2 px from the one before (IoU 0.67 with its neighbour,
    0.43 with the next but one), scores decreasing along the chain: greedy NMS keeps every other box."""
    import torch

    x = torch.arange(n, dtype=torch.float32) * 2
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)
    return boxes, torch.linspace(1, 0.1, n), torch.zeros(n, dtype=torch.int64)


def _detection_scene(num_images: int, seed: int, num_classes: int = 5):
    """Ground truth (about 5 objects per image) and about 20 scored detections per image: noisy copies
    of the objects (some twice) and false positives, torchvision's detection output format."""
    import numpy as np
    import torch

    g = np.random.default_rng(seed)
    predictions, targets = [], []
    for _ in range(num_images):
        n_gt = int(g.integers(2, 9))
        xy, wh = g.uniform(0, 200, (n_gt, 2)), g.uniform(10, 60, (n_gt, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        gt_labels = g.integers(0, num_classes, n_gt)
        copies = np.repeat(np.arange(n_gt), g.integers(1, 4, n_gt))
        det = gt[copies] + g.normal(0, 1, (len(copies), 4)) * np.repeat(wh[copies], 2, 1) * 0.1
        n_fp = 20 - len(copies) if len(copies) < 20 else 2
        fp_xy = g.uniform(0, 220, (n_fp, 2))
        det = np.concatenate([det, np.concatenate([fp_xy, fp_xy + g.uniform(10, 60, (n_fp, 2))], 1)])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
        labels = np.concatenate([gt_labels[copies], g.integers(0, num_classes, n_fp)])
        predictions.append(
            {
                "boxes": torch.tensor(det, dtype=torch.float32),
                "scores": torch.tensor(g.random(len(det)), dtype=torch.float32),
                "labels": torch.tensor(labels),
            }
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(gt_labels)})
    return predictions, targets


def pycocotools_evaluator(predictions, targets, num_classes: int, max_detections: int = 100):
    """pycocotools' COCOeval (bbox, area "all", ``maxDets=[max_detections]``) on course_lib-style detections.

    Returns a function that evaluates and accumulates and returns COCO's precision array
    ``[T, R, K, 1, 1]`` (-1 for classes without objects). The reference that ``tests/test_metrics.py``
    checks ``metrics.coco_map`` against, and that ``--ops`` times it against.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    anns, dets = [], []
    for k, (p, t) in enumerate(zip(predictions, targets, strict=True)):
        for b, c in zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True):
            box = xywh(b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": c + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                }
                | {"iscrowd": 0}
            )
        for b, s, c in zip(
            p["boxes"].double().tolist(), p["scores"].double().tolist(), p["labels"].tolist(), strict=True
        ):
            dets.append({"image_id": k + 1, "category_id": c + 1, "bbox": xywh(b), "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": k + 1} for k in range(len(targets))],
            "annotations": anns,
            "categories": [{"id": c + 1} for c in range(num_classes)],
        }
        gt.createIndex()
        dt = gt.loadRes(dets)

    def run():
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets, ev.params.areaRng, ev.params.areaRngLbl = [max_detections], [[0, 1e10]], ["all"]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        return ev.eval["precision"]

    return run


def _best_times(mine, theirs, min_total_s: float = 0.2, rounds: int = 15) -> tuple[float, float]:
    """Best mean seconds per call of ``mine`` and of ``theirs``, over ``rounds`` rounds that alternate the
    two (so a busy spell on a shared machine slows both); each round lasts about ``min_total_s``."""
    numbers = []
    for fn in (mine, theirs):
        fn()
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        numbers.append(max(1, int(min_total_s / max(once, 1e-6))))
        if once > 0.5:
            rounds = min(rounds, 5)  # seconds-long calls (box_iou on 5,000 boxes): fewer rounds
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for k, fn in enumerate((mine, theirs)):
            t0 = time.perf_counter()
            for _ in range(numbers[k]):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / numbers[k])
    return best[0], best[1]


def measure_ops() -> dict:
    """Time course_lib's box operations and COCO evaluation against torchvision and pycocotools, one thread."""
    import numpy as np
    import torch
    import torchvision.ops as tvops

    from course_lib import metrics, ops

    torch.set_num_threads(1)
    cases = []
    for n in (1000, 5000):
        boxes, scores, idxs = _clustered_boxes(n, seed=n)
        label = f"{n:,} clustered boxes"
        cases += [
            (
                "box_iou",
                f"{n:,} x {n:,} boxes",
                lambda b=boxes: ops.box_iou(b, b),
                lambda b=boxes: tvops.box_iou(b, b),
                "torchvision",
            ),
            (
                "nms",
                label,
                lambda b=boxes, s=scores: ops.nms(b, s, 0.5),
                lambda b=boxes, s=scores: tvops.nms(b, s, 0.5),
                "torchvision",
            ),
            (
                "batched_nms",
                label + ", 5 classes",
                lambda b=boxes, s=scores, i=idxs: ops.batched_nms(b, s, i, 0.5),
                lambda b=boxes, s=scores, i=idxs: tvops.batched_nms(b, s, i, 0.5),
                "torchvision",
            ),
        ]
        assert torch.equal(ops.nms(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))
    boxes, scores, idxs = _chain_boxes(2000)
    cases += [
        (
            "nms",
            "chain of 2,000 shifted boxes",
            lambda: ops.nms(boxes, scores, 0.5),
            lambda: tvops.nms(boxes, scores, 0.5),
            "torchvision",
        ),
        (
            "batched_nms",
            "chain of 2,000 shifted boxes",
            lambda: ops.batched_nms(boxes, scores, idxs, 0.5),
            lambda: tvops.batched_nms(boxes, scores, idxs, 0.5),
            "torchvision",
        ),
    ]
    assert ops.nms(boxes, scores, 0.5).numel() == 1000
    predictions, targets = _detection_scene(200, seed=0)
    per_image = np.mean([len(p["scores"]) for p in predictions])
    reference = pycocotools_evaluator(predictions, targets, 5)
    ours = metrics.coco_map(predictions, targets, 5)["precision"].numpy()
    want = reference()[:, :, :, 0, 0]
    agreement = float(np.nanmax(np.abs(ours - np.where(want > -1, want, np.nan))))
    cases.append(
        (
            "coco_map",
            f"200 images, {per_image:.0f} detections each, 5 classes",
            lambda: metrics.coco_map(predictions, targets, 5),
            reference,
            "pycocotools COCOeval",
        )
    )
    rows = []
    for name, what, mine, theirs, ref_name in cases:
        t_ours, t_ref = _best_times(mine, theirs)
        rows.append(
            {
                "operation": name,
                "input": what,
                "course_lib_s": t_ours,
                "reference_s": t_ref,
                "reference": ref_name,
                "ratio": t_ours / t_ref,
            }
        )
        print(
            f"{name:12s} {what:45s} {t_ours * 1e3:9.2f} ms {t_ref * 1e3:9.2f} ms  x{t_ours / t_ref:.2f}",
            flush=True,
        )
    return {"machine": machine() | {"threads": 1}, "rows": rows, "coco_max_abs_difference": agreement}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def ops_table(results: dict) -> str:
    """The course_lib vs reference timing table in Markdown."""
    lines = [
        "| operation | input | course_lib | reference | reference time | ratio |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| `{r['operation']}` | {r['input']} | {_ms(r['course_lib_s'])} | {r['reference']} | "
            f"{_ms(r['reference_s'])} | {r['ratio']:.2f} |"
        )
    m = results["machine"]
    return (
        "\n".join(lines)
        + "\n\n"
        + f"One torch thread on {m['cpu']} ({m['cores']} cores), Python {m['python']}, torch {m['torch']}, "
        + f"measured {m['date']}; best of 15 rounds (5 for calls over 0.5 s), alternating course_lib "
        + f"and reference. Ratio = course_lib / reference (goal: at most {OPS_RATIO_GOAL}). "
        + "`coco_map` agrees with pycocotools to "
        + f"{results['coco_max_abs_difference']:.1e} on every entry of COCO's precision array. "
        + "Measured by `python tools/bench.py --ops` (part of `make bench`).\n"
    )


def ops_page(results: dict) -> str:
    return (
        "# Speed of the library operations\n\n"
        "course_lib's box operations and COCO evaluation, timed against the libraries they reproduce.\n\n"
        + ops_table(results)
    )


def render_ops(results: dict) -> None:
    """Write ``assets/ops_bench.md`` and, where README.md has the ops-bench markers, the table there."""
    OPS_PAGE.write_text(ops_page(results), encoding="utf-8")
    text = README.read_text(encoding="utf-8")
    if OPS_START in text:
        README.write_text(
            manifest.replace_between(text, OPS_START, OPS_END, ops_table(results)), encoding="utf-8"
        )


def write_ops(results: dict) -> None:
    OPS_RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    render_ops(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chapters", nargs="*")
    ap.add_argument("--render", action="store_true", help="only re-render tables from the stored results")
    ap.add_argument(
        "--ops", action="store_true", help="only time the library operations (assets/ops_bench.*)"
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(args.one)))
        return 0
    if args.ops and args.render:
        render_ops(json.loads(OPS_RESULTS.read_text(encoding="utf-8")))
        return 0
    if args.ops:
        return run_ops()
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
    status = 1 if problems else 0
    if not args.render and not args.chapters:  # a full run also times the library operations
        status = max(status, run_ops())
    return status


def run_ops() -> int:
    results = measure_ops()
    write_ops(results)
    print(ops_table(results))
    slow = [r for r in results["rows"] if r["ratio"] > OPS_RATIO_GOAL]
    for r in slow:
        print(
            f"slower than {OPS_RATIO_GOAL}x the reference: {r['operation']} on {r['input']}", file=sys.stderr
        )
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
