# geoloc_ros: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both create .venv (Python 3.11) on first use and install the package from this tree.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,ros

.PHONY: help venv demo test bench docs-images clean

help:
	@echo "make demo   - synthesize the default world and a drive, and run the pipeline on it"
	@echo "make test   - run the test suite"
	@echo "make bench  - run the benchmarks (tables + JSON in bench/results/)"
	@echo "make docs-images - regenerate the pictures in docs/img/"

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $@

demo: venv
	$(BIN)/geoloc demo

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python bench/run_all.py

docs-images: venv
	$(BIN)/geoloc demo --docs-images docs/img

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
