# Two commands for everything: `make lab` to learn, `make test` to check.
# Both create .venv on first use and install the kit into it; nothing is installed elsewhere.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test install html clean hub browser-outputs

# The class hub's proxy (configurable-http-proxy, from npm) for deploy/ and tests/test_hub.py.
# Without npm, `make test` goes on and the hub test says how to get it.
PROXY := deploy/node_modules/.bin/configurable-http-proxy
NPM   := $(shell command -v npm 2>/dev/null)

# JupyterLab refuses to run as root unless told to (containers often run as root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --LabApp.default_url=/lab/tree/index.ipynb $(ROOT_FLAG)

test: $(STAMP) $(if $(NPM),$(PROXY))
	$(BIN)/ruff check wspatterns tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

install: $(STAMP)

# A class on one JupyterHub, as tests/test_hub.py starts it (read deploy/README.md first).
hub: $(STAMP) $(PROXY)
	cd deploy && ../$(BIN)/jupyterhub -f jupyterhub_config.py

$(PROXY): deploy/package.json deploy/package-lock.json
	npm ci --prefix deploy --no-audit --no-fund --loglevel=error
	touch $@

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wspatterns needs Python 3.11 or newer; found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m wspatterns setup
	touch $@

# Export every lesson, executed in a fresh kernel, to build/html/ to read as a learner would.
html: $(STAMP)
	mkdir -p build/html
	$(BIN)/jupyter nbconvert --to html --execute --output-dir build/html notebooks/*.ipynb

# What the lessons' cells that need a page (nbval skips them) showed in JupyterLab in
# Chromium, written back into notebooks/ for readers of the committed lessons.
browser-outputs: $(STAMP)
	WSPATTERNS_SAVE_OUTPUTS=1 $(BIN)/python -m pytest tests/test_browser.py -k test_lessons_in_a_browser

clean:
	rm -rf $(VENV) build deploy/node_modules
