# dots: the two commands a new user types are `make demo` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps build test test-tsan test-fuzz demo bench soak fuzz format check-format clean

deps:
	bash scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

check-format:
	bash scripts/check-format.sh

test: build check-format
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-tsan
	$(MAKE) test-fuzz

# clang-14 build in build-tsan/: thread-safety analysis as errors, then the concurrent tests
# under ThreadSanitizer (scripts/tsan.sh).
test-tsan: deps
	bash scripts/tsan.sh build-tsan

demo: build
	bash scripts/demo.sh $(BUILD_DIR)

bench: build
	bash scripts/bench.sh $(BUILD_DIR) $(BENCH_ARGS)

# Every libFuzzer target for 30 s (part of make test).
test-fuzz: deps
	FUZZ_SECONDS=30 bash scripts/fuzz.sh build-fuzz

# libFuzzer targets (fuzz/) under ASan + UBSan (clang-14, build-fuzz/), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 600
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh build-fuzz

# 64 trainer ranks against a real dots-server for SOAK_SECONDS (default 30 minutes).
SOAK_SECONDS ?= 1800
soak: build
	$(BUILD_DIR)/bin/dots-bench soak --server-bin $(BUILD_DIR)/bin/dots-server --seconds $(SOAK_SECONDS)

format:
	clang-format -i $$(git ls-files '*.h' '*.cc')

clean:
	rm -rf $(BUILD_DIR)
