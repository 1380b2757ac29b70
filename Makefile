# One entry point for the course. Every target creates the project-local environment (.venv,
# from uv.lock) on first use; nothing is installed outside this folder.
#
#   make book      build the course site (the quick-start command)   -> _build/html/index.html
#   make test      run every check CI runs (the other quick-start command)
#   make lab       JupyterLab on the course, widgets working
#   make sync      make every chapter .ipynb follow its .py (outputs kept)
#   make execute   re-run chapters in fresh kernels and keep their outputs (CHAPTERS="01 02" for some)
#   make bench     measure each chapter's wall time and peak memory (assets/runtimes.*) and time the
#                  library ops against torchvision and pycocotools (assets/ops_bench.*)
#   make lint      ruff check + format check;  make format  to fix
#   make clean     remove build outputs (keeps .venv);  make distclean  also removes .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced
CHAPTERS ?=
JOBS ?= 2
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export PYTHONDONTWRITEBYTECODE :=


.PHONY: env book test lab sync execute bench lint format clean distclean

env: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-extras --python $(PYTHON)
	@touch $@

book: env
	$(PY) tools/book.py build

test: env
	$(PY) -m pytest -n $(JOBS) --dist loadfile

# (--allow-root only where the user is root, e.g. in a container)
lab: env
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $(if $(filter 0,$(shell id -u)),--allow-root) README.md

sync: env
	$(PY) tools/manifest.py
	$(PY) tools/notebooks.py sync $(CHAPTERS)

execute: env
	$(PY) tools/notebooks.py -j $(JOBS) execute $(CHAPTERS)

bench: env
	$(PY) tools/bench.py $(CHAPTERS)

lint: env
	$(VENV)/bin/ruff check course_lib tests tools chapters
	$(VENV)/bin/ruff format --check course_lib tests tools chapters

format: env
	$(VENV)/bin/ruff format course_lib tests tools chapters
	$(VENV)/bin/ruff check --fix course_lib tests tools chapters

clean:
	rm -rf _build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -not -path './.tools/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(TOOLS)
