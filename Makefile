# Two commands for everything: `make lab` to learn, `make test` to check.
# Both create .venv on first use and install the kit into it; nothing is installed elsewhere.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lab test install html clean

# JupyterLab refuses to run as root unless told to (containers often run as root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --LabApp.default_url=/lab/tree/index.ipynb $(ROOT_FLAG)

test: $(STAMP)
	$(BIN)/ruff check wspatterns tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

install: $(STAMP)

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

clean:
	rm -rf $(VENV) build
