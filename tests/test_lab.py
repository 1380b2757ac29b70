"""JupyterLab as a learner uses it, in headless Chromium: open a chapter, run it, change a widget.

The chapter is copied to a temporary folder first, so JupyterLab's autosave cannot touch the
committed notebook. Skipped, with the reason, where no Chromium is installed (see tools/browser.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import manifest
import nbformat
import notebooks
import pytest

CHAPTER = manifest.chapters()[0]  # 00: its k-NN widget has L2 / L1 toggle buttons
TOKEN = "course-lab-test"
RUN_ALL_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import browser

    try:
        browser.find_chromium()
    except browser.BrowserUnavailable as exc:
        pytest.skip(f"JupyterLab browser check skipped: {exc}")
    root = tmp_path_factory.mktemp("lab")
    shutil.copy2(CHAPTER.ipynb, root / CHAPTER.ipynb.name)
    # every cell in the page (no windowing, so solutions at the end are in the DOM); no autosave
    settings = tmp_path_factory.mktemp("lab-settings")
    for plugin, values in {
        "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
        "@jupyterlab/docmanager-extension/plugin": '{"autosave": false}',
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values)
    port = _free_port()
    cmd = [
        str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False", f"--LabApp.user_settings_dir={settings}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # JupyterLab refuses root without it (containers, CI)
        cmd.append("--allow-root")
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("JupyterLab exited:\n" + (root / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in 60 s:\n" + (root / "lab.log").read_text()[-3000:])
        yield base, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.slow
def test_run_a_chapter_in_jupyterlab_and_change_its_widget(lab):
    import browser

    base, root = lab
    with browser.chromium() as chromium:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/lab/tree/{CHAPTER.ipynb.name}?token={TOKEN}")
        nb = nbformat.read(CHAPTER.ipynb, as_version=4)
        page.wait_for_function(
            f"document.querySelectorAll('.jp-Notebook .jp-Cell').length >= {len(nb.cells)}"
        )
        # solutions arrive collapsed (their metadata), as a learner opening the notebook sees them
        solutions = len(notebooks.solution_cells(nb))
        assert solutions >= 2 and page.locator(".jp-Cell .jp-InputPlaceholder").count() == solutions
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # wait until no cell is queued or running ([*]) and the kernel is idle again
        deadline, seen_busy = time.monotonic() + RUN_ALL_TIMEOUT_S, False
        while time.monotonic() < deadline:
            time.sleep(2)
            busy = page.locator(".jp-InputArea-prompt", has_text="[*]").count()
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
            seen_busy = seen_busy or busy > 0
            if seen_busy and not busy and idle:
                break
        else:
            pytest.fail(f"the chapter did not finish running in {RUN_ALL_TIMEOUT_S} s")
        assert (
            page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            .filter(has_text="Traceback")
            .count()
            == 0
        ), "a cell raised"
        widget = page.locator(".widget-interact").first
        widget.scroll_into_view_if_needed()
        image = widget.locator("img").first
        image.wait_for()
        before = image.get_attribute("src")
        widget.locator("button", has_text="L1").first.click()
        page.wait_for_function(
            "([el, old]) => el.querySelector('img') && el.querySelector('img').src !== old",
            arg=[widget.element_handle(), before],
            timeout=60_000,
        )
        assert image.get_attribute("src") != before, "changing the widget redraws its figure"
        assert not errors, f"page errors: {errors}"
        page.close()
