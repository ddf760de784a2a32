# geoloc_ros: `make demo` runs the main job on embedded defaults, `make test` runs the tests.
# Both create .venv (Python 3.11) on first use and install the package from this tree.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,ros

.PHONY: help venv demo lint test bench docs-images clean

help:
	@echo "make demo   - synthesize the default world and a drive, and run the pipeline on it"
	@echo "make lint   - ruff (pyflakes, import order, line length: ruff.toml)"
	@echo "make test   - lint, then run the test suite"
	@echo "make bench  - run the benchmarks (tables + JSON in bench/results/)"
	@echo "make docs-images - regenerate the pictures in docs/img/"

venv: $(STAMP)

# The install goes through uv (from PyPI, into the venv: parallel downloads, ~3x faster than pip on a
# fresh machine), with pip's own settings on this machine (find-links, constraints) passed on; pip
# itself installs when uv cannot be had or fails. Same packages, same versions either way. Bytecode is
# compiled at install, as pip does: the suite's processes (ROS nodes, Ray workers) then start faster.
pip_setting = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^[^=]*\.$(1)='\(.*\)'$$/\1/p" | tr ' ' '\n' | sort -u)
UV_ARGS = $(foreach d,$(call pip_setting,find-links),--find-links $(d)) $(foreach c,$(call pip_setting,constraint),--constraint $(c))

$(STAMP): setup.py setup.cfg package.xml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing geoloc_ros[$(EXTRAS)] into $(VENV)"
	@if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv 2>/dev/null && \
	    $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(UV_ARGS) -e '.[$(EXTRAS)]'; then :; else \
	    echo "uv unavailable or failed: installing with pip"; \
	    $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'; fi
	@touch $@

demo: venv
	$(BIN)/geoloc demo

# two workers (pytest-xdist) on the 2-core CI machine; `make test TEST_JOBS=0` runs in one process
TEST_JOBS ?= 2

lint: venv
	$(BIN)/ruff check .

# the shipped learned pair's ONNX export (engines/bevmatch/, ~20 s once, a no-op after): made here, before
# the workers start, not by whichever test first needs it while the other worker times a node over DDS
test: lint
	$(BIN)/python -c "from geoloc_ros.metric.learned import LearnedFeatures as L; print(L(backend='onnxruntime').describe())"
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder

bench: venv
	$(BIN)/python bench/run_all.py

docs-images: venv
	$(BIN)/geoloc demo --docs-images docs/img

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
