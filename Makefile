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

.PHONY: venv demo test test-fast check bench clean

venv: $(VENV)/.installed

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

demo: venv  ## run the daemon on the bundled example: drop images into examples/drop/
	@echo "Watching examples/drop/ -> examples/out/  (Ctrl-C to stop)"
	$(VENV)/bin/darkroom run --config examples/darkroom.yaml

test: venv  ## the whole suite, as CI runs it
	$(PY) -m pytest -q

test-fast: venv  ## skip the end-to-end tests that start the daemon
	$(PY) -m pytest -q -m "not slow"

check: venv
	$(VENV)/bin/darkroom check --config examples/darkroom.yaml

clean:
	rm -rf examples/out examples/.state .pytest_cache
