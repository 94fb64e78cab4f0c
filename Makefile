# Darkroom's entry points. `make demo` and `make test` are the README's two commands.
#
# PyTorch: a machine with an NVIDIA GPU (nvidia-smi works) gets the CUDA build, others
# the CPU build. Override with TORCH_SPEC / TORCH_INDEX_URL, e.g. on a CPU machine whose
# default index serves CUDA wheels: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_INDEX_URL ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export HF_HUB_OFFLINE ?= 1

.PHONY: venv dev demo test test-fast lint format check bench clean

venv: $(VENV)/.installed

# ruff, mypy, type stubs and pre-commit (the `dev` extra), on top of the test set-up.
dev: $(VENV)/.dev-installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing $(TORCH_SPEC), the CUDA build PyPI serves on Linux"; \
	else \
		echo "no NVIDIA GPU: installing $(TORCH_SPEC) for the CPU"; \
		echo "  (if your index serves the multi-GB CUDA wheel, rerun with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)"; \
	fi
	$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install -q -e '.[test]'
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -q -e '.[test,dev]'
	touch $@

demo: venv  ## run the daemon on the bundled example: drop images into examples/drop/
	@echo "Watching examples/drop/ -> examples/out/  (Ctrl-C to stop)"
	$(VENV)/bin/darkroom run --config examples/darkroom.yaml

test: venv  ## the whole suite, as CI runs it
	$(PY) -m pytest -q

test-fast: venv  ## skip every test that starts the daemon or a CLI subprocess (marked slow)
	$(PY) -m pytest -q -m "not slow"

lint: dev  ## what CI checks before the tests: lint rules, formatting, types (config: pyproject)
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

format: dev  ## rewrite the tree the way `make lint` wants it (safe fixes only)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every bench/*_bench.py with its defaults, one after another; each prints a table and writes
# JSON under bench/results/. Pick some with BENCHES="bench/sheet_bench.py bench/latency_bench.py".
BENCHES ?= $(sort $(wildcard bench/*_bench.py))
bench: venv  ## run the benchmarks (minutes; pool_bench builds a 4 GB random SD 1.5 once)
	@mkdir -p bench/results
	@set -e; for b in $(BENCHES); do echo "== $$b"; $(PY) $$b; done

check: venv
	$(VENV)/bin/darkroom check --config examples/darkroom.yaml

clean:
	rm -rf examples/out examples/.state .pytest_cache
