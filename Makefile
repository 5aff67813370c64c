# Entry points. `make run` and `make test` work on a fresh Debian 12 machine.
MAKEFLAGS += --no-print-directory
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
LISTEN ?= 127.0.0.1:8443
FUZZ_SECONDS ?= 60

.PHONY: all deps configure build test run certs fuzz bench format clean

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

bench: build certs
	@bash bench/run-bench.sh $(BUILD_DIR)

format:
	@git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	@rm -rf $(BUILD_DIR) build-fuzz
