# Darkroom's entry points. `make demo` and `make test` are the README's two commands.
#
# PyTorch: a machine with an NVIDIA GPU (nvidia-smi works) gets PyPI's CUDA build. Others get
# the CPU build: from https://download.pytorch.org/whl/cpu when that answers within 5 s, else
# (offline, a proxy, a private mirror) from the index pip is configured with, as before. Set
# TORCH_INDEX_URL to choose the index yourself, TORCH_SPEC to choose the requirement.
# torchvision (only the qwen-edit-plus profile needs it) is installed at the version that
# matches the installed torch (2.13 -> 0.28) and kept only if it imports: PyPI's Linux
# torchvision is built for CUDA torch and does not load beside a CPU-only torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
TORCH_INDEX_URL ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
comma := ,
PIP := $(PY) -m pip --disable-pip-version-check
# Progress bars where there is a terminal; no .pyc compilation of every installed file at
# install time (a third of pip's CPU time on 2 cores): Python compiles what it imports, once.
PIP_INSTALL ?= --progress-bar on --no-compile
export HF_HUB_OFFLINE ?= 1

# $(call phase,WHAT,COMMAND): echo the phase, run COMMAND with a line every 10 s while it
# works (pip is quiet while it unpacks a large wheel), then say how long it took.
define phase
	@echo "==> $(1)"
	@start=$$(date +%s); \
	( last=$$start; while sleep 1; do now=$$(date +%s); [ $$((now - last)) -ge 10 ] || continue; last=$$now; \
	  echo "    ... still working ($$((now - start)) s; $$(du -sm $(VENV) 2>/dev/null | cut -f1) MB in $(VENV))"; done ) & ticker=$$!; \
	status=0; $(2) || status=$$?; kill $$ticker 2>/dev/null; \
	echo "    done in $$(( $$(date +%s) - start )) s"; exit $$status
endef

.PHONY: venv dev demo test test-fast lint format check bench clean pull torch-index torchvision

# The daemon and what it needs (`make demo`); the test tools come with `make test`.
venv: $(VENV)/.installed

# ruff, mypy, type stubs and pre-commit (the `dev` extra), on top of the test set-up.
dev: $(VENV)/.dev-installed

$(VENV)/.installed: pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python >= 3.11 (or run make PYTHON=python3.12)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "$(PYTHON) cannot make virtual environments: on Debian/Ubuntu, sudo apt install python3-venv"; exit 1; }
	$(call phase,creating $(VENV) with $(PYTHON) (about 5 s),$(PYTHON) -m venv $(VENV))
	@$(MAKE) --no-print-directory torch-index
	$(call phase,installing $(TORCH_SPEC) (CPU ~200 MB / CUDA ~4 GB download; ~0.8 / ~5 GB on disk),$(PIP) install $(PIP_INSTALL) "$(TORCH_SPEC)" $$(cat $(VENV)/.torch-index))
	$(call phase,installing the matching torchvision (~2-8 MB; only qwen-edit-plus needs it),$(MAKE) --no-print-directory torchvision)
	$(call phase,installing darkroom and its dependencies (diffusers transformers boto3 ...: ~150 MB download and ~0.7 GB on disk),$(PIP) install $(PIP_INSTALL) -e .)
	@echo "==> $(VENV) is ready: $$(du -sh $(VENV) | cut -f1) on disk"
	@touch $@

# Which index the torch wheel comes from, as pip arguments in $(VENV)/.torch-index (torchvision
# comes from the same one). A probe of 5 s decides whether the CPU index can be used: where it
# cannot (offline, a proxy, a mirror), the configured index is used, as pip would anyway.
torch-index:
	@mkdir -p $(VENV); if [ -n "$(TORCH_INDEX_URL)" ]; then \
		echo "PyTorch: $(TORCH_SPEC) from TORCH_INDEX_URL=$(TORCH_INDEX_URL)"; \
		echo "--index-url $(TORCH_INDEX_URL)" > $(VENV)/.torch-index; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "PyTorch: NVIDIA GPU found: $(TORCH_SPEC), the CUDA build PyPI serves on Linux (~900 MB, plus ~3 GB of CUDA libraries)"; \
		: > $(VENV)/.torch-index; \
	elif $(PYTHON) -c 'import urllib.request as u; u.urlopen("$(TORCH_CPU_INDEX)/torch/", timeout=5)' >/dev/null 2>&1; then \
		echo "PyTorch: no NVIDIA GPU: $(TORCH_SPEC), the CPU build from $(TORCH_CPU_INDEX) (~200 MB)"; \
		echo "--extra-index-url $(TORCH_CPU_INDEX)" > $(VENV)/.torch-index; \
	else \
		echo "PyTorch: no NVIDIA GPU, and $(TORCH_CPU_INDEX) did not answer within 5 s (offline, proxy or mirror):"; \
		echo "  installing $(TORCH_SPEC) from your configured index. If that index serves the multi-GB CUDA"; \
		echo "  wheel to CPU machines (PyPI does), rerun with TORCH_INDEX_URL=<a CPU wheel index or mirror>."; \
		: > $(VENV)/.torch-index; \
	fi

# The torchvision release that goes with the installed torch: torch 2.N.P <-> torchvision
# 0.(N+15).P (pytorch/vision's compatibility table: 2.11 -> 0.26, 2.13 -> 0.28). Installed
# without dependencies (its exact torch pin must never replace the torch chosen above), then
# kept only if its compiled operators load beside that torch. Run alone to retry later:
# `make torchvision TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`.
torchvision:
	@tv=$$($(PY) -c 'import torch; v = torch.__version__.split("+")[0].split("."); print(f"0.{int(v[1]) + 15}.{v[2]}")'); \
	torch=$$($(PY) -c 'import torch; print(torch.__version__, "(CUDA " + torch.version.cuda + ")" if torch.version.cuda else "(CPU build)")'); \
	if ! $(PIP) install $(PIP_INSTALL) --no-deps "torchvision==$$tv" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),$$(cat $(VENV)/.torch-index 2>/dev/null)); then \
		echo "torchvision $$tv (for torch $$torch) is not on this index: skipped. Only the qwen-edit-plus"; \
		echo "  profile needs it; get it with: make torchvision TORCH_INDEX_URL=<an index with that build>"; \
		echo "  ($(TORCH_CPU_INDEX) for a CPU torch; PyPI for PyPI's CUDA torch)."; \
	elif ! $(PY) -c 'import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)' >/dev/null 2>&1; then \
		$(PIP) uninstall -q -y torchvision; \
		echo "torchvision $$tv from this index does not load beside torch $$torch (PyPI's Linux"; \
		echo "  torchvision is built for CUDA torch): removed. Only the qwen-edit-plus profile needs it;"; \
		echo "  on a CPU machine get the CPU build with: make torchvision TORCH_INDEX_URL=$(TORCH_CPU_INDEX)"; \
	else \
		echo "torchvision $$tv installed for torch $$torch"; \
	fi

# pytest, moto, selenium, the hosted providers' SDKs (the `test` extra).
$(VENV)/.test-installed: $(VENV)/.installed
	$(call phase,installing the test tools (pytest moto selenium and the providers' SDKs: ~100 MB download and ~0.4 GB on disk),$(PIP) install $(PIP_INSTALL) -e '.[test]')
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.test-installed
	$(call phase,installing the dev tools (ruff mypy pre-commit: ~60 MB),$(PIP) install $(PIP_INSTALL) -e '.[test$(comma)dev]')
	@touch $@

# The example's model is `tiny`, random weights built offline into <state_dir>/models: built
# here, in a phase that says so, rather than silently inside the daemon's first start.
DEMO_MODELS := examples/.state/models
demo: venv  ## run the daemon on the bundled example: drop images into examples/drop/
	$(call phase,building the demo's tiny random-weight model offline (first time only: ~30-60 s on 2 cores),$(PY) -c 'from pathlib import Path; from backends.random_models import build_random_model as b; print("    " + str(b("sd-tiny"$(comma) Path("$(DEMO_MODELS)"))))')
	@echo "==> starting the daemon. Watching examples/drop/ -> examples/out/  (Ctrl-C to stop)"
	$(VENV)/bin/darkroom run --config examples/darkroom.yaml

test: $(VENV)/.test-installed  ## the whole suite, as CI runs it
	$(PY) -m pytest -q

test-fast: $(VENV)/.test-installed  ## skip every test that starts the daemon or a CLI subprocess (marked slow)
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

# Download profiles' weights into HF_HOME before their first job (the one online step; the
# rest of the Makefile runs with HF_HUB_OFFLINE=1). PROFILES="sd-turbo kontext", or the
# profiles the config's rules use. Gated ones (kontext, flux-fill, svd) need HF_TOKEN.
CONFIG ?= examples/darkroom.yaml
PROFILES ?=
pull: venv  ## fetch model weights: make pull PROFILES="sd-turbo sdxl-turbo"
	HF_HUB_OFFLINE=0 $(VENV)/bin/darkroom models pull --config $(CONFIG) $(if $(PROFILES),$(PROFILES),--all-used)

check: venv
	$(VENV)/bin/darkroom check --config examples/darkroom.yaml

clean:
	rm -rf examples/out examples/.state .pytest_cache
