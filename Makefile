# Entry points. `make run` and `make test` work on a fresh Debian 12 machine.
MAKEFLAGS += --no-print-directory
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8443
FUZZ_SECONDS ?= 60

.PHONY: all deps configure build test run certs fuzz fuzz-smoke bench format clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

certs/dev/tls.crt: | deps
	@bash certs/gen-certs.sh --out certs/dev --service stateguard-webhook --namespace stateguard-system >/dev/null

certs: certs/dev/tls.crt

run: build certs
	@bash scripts/run-dev.sh $(BUILD_DIR) $(LISTEN)

fuzz: deps
	@bash tests/fuzz/run-fuzzers.sh $(FUZZ_SECONDS)

# Builds the fuzz targets with clang (ASan/UBSan) and replays every seed once: quick, deterministic.
fuzz-smoke: deps
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DSTATEGUARD_FUZZ=ON -DSTATEGUARD_BUILD_TESTS=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@cd build-fuzz && ctest --output-on-failure

bench: build certs
	@bash bench/run-bench.sh $(BUILD_DIR)

format:
	@git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	@rm -rf $(BUILD_DIR) build-fuzz
