# NormKit: the README's commands. `make test` and `make bench` install OpenBLAS
# and LAPACKE (Debian/Ubuntu) when their headers are missing.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SWIFT ?= swift
BENCH_ARGS ?=
# Open MPI refuses root without --allow-run-as-root; --oversubscribe lets the
# tests start more ranks than this machine has cores.
MPIRUN := mpirun --allow-run-as-root --oversubscribe

.PHONY: setup test test-long sanitize fuzz fuzz-merge fuzz-numpy fuzz-numpy-merge bench bench-mpi bench-quick lab docs example snippets clean

# OpenBLAS and LAPACKE for NormKit; Open MPI (headers, libraries and mpirun)
# for NormKitMPI and its mpirun tests; python3 extracts the snippets (make snippets).
setup:
	@if [ ! -f /usr/include/lapacke.h ] || ! pkg-config --exists openblas 2>/dev/null || ! pkg-config --exists lapacke 2>/dev/null \
		|| ! pkg-config --exists ompi-c 2>/dev/null || ! command -v mpirun >/dev/null || ! command -v python3 >/dev/null; then \
		echo "Installing libopenblas-dev, liblapacke-dev, libopenmpi-dev, openmpi-bin, pkg-config and python3 with apt-get"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libopenblas-dev liblapacke-dev \
			libopenmpi-dev openmpi-bin pkg-config python3; \
	fi

# Release mode: the allocation-free entry points are proved allocation-free in
# optimized code (Tests/NormKitTests/AllocationTests.swift), and it is faster.
# Built with `swift build --build-tests` and run with --skip-build: `swift test`
# alone builds with other settings, so it and a `swift build --build-tests`
# (CI's first step, the tools) recompiled everything for each other (6 minutes).
test: setup
	$(SWIFT) build -c release --build-tests
	$(SWIFT) test -c release --skip-build

# The property tests with 2000 iterations each (make test runs 40, from fixed
# seeds). NORMKIT_PROPERTY_RANDOM=1 draws fresh seeds and shrinks a failure.
test-long: setup
	NORMKIT_PROPERTY_COUNT=2000 $(SWIFT) test -c release --filter PropertyTests

# The test suite under AddressSanitizer (with LeakSanitizer) and
# ThreadSanitizer: debug builds in their own scratch folders. (Swift 6.3.1
# refuses -sanitize=undefined on Linux; a debug build already traps on Swift's
# undefined operations: overflow, out-of-bounds, force-unwraps.) Any report fails
# the run (halt_on_error), except the documented false positives in
# Tests/Sanitizers/*.supp. The malloc interposer compiles out and the
# allocation tests skip (they are for optimized builds anyway); the mpirun
# tests skip (NORMKIT_SKIP_MPI): Open MPI's own allocations and threads are
# not ours to chase, and SyncBatchNorm's code runs under the sanitizers through
# SingleProcess.
SANITIZER_ENV := NORMKIT_SKIP_MPI=1 ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Sanitizers/lsan.supp:print_suppressions=0 \
	TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/Tests/Sanitizers/tsan.supp:print_suppressions=0
# SANITIZE_ARGS go to both suites, ASAN_ARGS and TSAN_ARGS to one each (CI
# skips the fuzz corpus replay under ThreadSanitizer: the corpus exercises
# memory, which ASan replays).
SANITIZE_ARGS ?=
ASAN_ARGS ?=
TSAN_ARGS ?=
# Three test processes run at once, each writing its own log, printed one after
# another when all have ended: the ASan suite, the fuzz corpus replay under ASan
# (the longest test, alone), the TSan suite. One after another, each suite
# spends its last minutes in the serialized "Process-wide settings" tests on
# one core while the other idles (CI at 6f03bb5: ASan 446 s, TSan 410 s; at
# once 662 s for both). The test binaries run directly (the Swift Testing
# library, as swift test runs them; there are no XCTest cases): two swift test
# commands on one scratch folder wait for each other's lock.
SANITIZE_LOGS := .build-sanitize
REPLAY := FuzzCorpusTests/replay\(\)
SANITIZE_RUN = env $(SANITIZER_ENV) .build-$(1)/debug/NormKitPackageTests.xctest --testing-library swift-testing
sanitize: setup
	$(SWIFT) build --build-tests --scratch-path .build-asan --sanitize=address
	$(SWIFT) build --build-tests --scratch-path .build-tsan --sanitize=thread
	@rm -rf $(SANITIZE_LOGS) && mkdir -p $(SANITIZE_LOGS); \
	run() { name=$$1; shift; "$$@" > $(SANITIZE_LOGS)/$$name.log 2>&1; echo $$? > $(SANITIZE_LOGS)/$$name.status; }; \
	start=$$(date +%s); \
	run asan $(call SANITIZE_RUN,asan) --skip '$(REPLAY)' $(SANITIZE_ARGS) $(ASAN_ARGS) & \
	run asan-replay $(call SANITIZE_RUN,asan) --filter '$(REPLAY)' & \
	run tsan $(call SANITIZE_RUN,tsan) $(SANITIZE_ARGS) $(TSAN_ARGS) & \
	wait; failed=""; \
	for name in asan asan-replay tsan; do \
		echo "== make sanitize: $$name ($(SANITIZE_LOGS)/$$name.log)"; cat $(SANITIZE_LOGS)/$$name.log; \
		[ "$$(cat $(SANITIZE_LOGS)/$$name.status)" = 0 ] || failed="$$failed $$name"; \
	done; \
	echo "== make sanitize: the three runs took $$(( $$(date +%s) - start )) s"; \
	if [ -n "$$failed" ]; then echo "make sanitize: failed:$$failed"; exit 1; fi

# libFuzzer with AddressSanitizer over every layer, both APIs, odd shapes,
# parameters and values (Fuzz/Harness). New inputs go to .build-fuzz/corpus and
# a crash to .build-fuzz/artifacts/; `make fuzz-merge` keeps the inputs that add
# coverage in Fuzz/Corpus, which make test replays. (SwiftPM passes each
# --sanitize to the compiler as its own flag and the last one wins, so both
# sanitizers go in one -Xswiftc flag; --sanitize=fuzzer tells SwiftPM that
# libFuzzer provides main.)
# FUZZ_SEEDS: the corpus the fuzzer starts from besides .build-fuzz/corpus
# (empty: from nothing).
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_SEEDS ?= Fuzz/Corpus
FUZZ_BUILD := $(SWIFT) build -c release --scratch-path .build-fuzz --sanitize=fuzzer \
	-Xswiftc -sanitize=fuzzer,address -Xswiftc -DNORMKIT_FUZZ --product normfuzz
FUZZ_ENV := SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Sanitizers/lsan.supp:print_suppressions=0
fuzz: setup
	$(FUZZ_BUILD)
	mkdir -p .build-fuzz/corpus .build-fuzz/artifacts
	$(FUZZ_ENV) .build-fuzz/release/normfuzz -max_total_time=$(FUZZ_SECONDS) -max_len=512 \
		-print_final_stats=1 -artifact_prefix=.build-fuzz/artifacts/ $(FUZZ_ARGS) \
		.build-fuzz/corpus $(FUZZ_SEEDS)

fuzz-merge: setup
	$(FUZZ_BUILD)
	$(FUZZ_ENV) .build-fuzz/release/normfuzz -merge=1 -max_len=512 Fuzz/Corpus .build-fuzz/corpus

# The same binary on the file readers (Fuzz/Harness/NumPyFuzz.swift): the
# fuzzer's bytes straight into NumPyArray(npy:) and NumPyArchive(npz:), from
# the seeds in Fuzz/CorpusNumPy (make_numpy_seeds.py), which make test replays.
fuzz-numpy: setup
	$(FUZZ_BUILD)
	mkdir -p .build-fuzz/corpus-numpy .build-fuzz/artifacts
	NORMFUZZ_TARGET=numpy $(FUZZ_ENV) .build-fuzz/release/normfuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		-print_final_stats=1 -artifact_prefix=.build-fuzz/artifacts/ $(FUZZ_ARGS) \
		.build-fuzz/corpus-numpy Fuzz/CorpusNumPy

fuzz-numpy-merge: setup
	$(FUZZ_BUILD)
	NORMFUZZ_TARGET=numpy $(FUZZ_ENV) .build-fuzz/release/normfuzz -merge=1 -max_len=4096 \
		Fuzz/CorpusNumPy .build-fuzz/corpus-numpy

# normbench, then SyncBatchNorm's cost on 2 MPI ranks (normbench-mpi).
bench: setup
	$(SWIFT) run -c release normbench $(BENCH_ARGS)
	$(MAKE) bench-mpi

bench-mpi: setup
	$(SWIFT) build -c release --product normbench-mpi
	$(MPIRUN) -np 2 .build/release/normbench-mpi --dtypes float,double

bench-quick: setup
	$(SWIFT) run -c release normbench --quick $(BENCH_ARGS)

# cs231n's batch-normalization experiments on the embedded digits: CSV and SVG
# files in normlab-output/ (a few minutes on 2 cores), then the comparison
# split over 2 MPI ranks (SyncBatchNorm vs local BatchNorm vs one process).
lab: setup
	$(SWIFT) build -c release --product normlab
	.build/release/normlab all --output normlab-output
	$(MPIRUN) -np 2 .build/release/normlab compare --data-parallel --output normlab-output/data-parallel

# NormKit's DocC catalog (Sources/NormKit/NormKit.docc); any DocC warning fails.
docs: setup
	$(SWIFT) package --disable-sandbox generate-documentation --target NormKit --warnings-as-errors

# Examples/Consumer: a separate package that depends on NormKit by path, built
# in release (top-level code that once crashed the compiler) and run. (A debug
# build of a dependent package is make snippets' Examples/Snippets.)
example: setup
	cd Examples/Consumer && $(SWIFT) build -c release && .build/release/Consumer

# Every Swift snippet of the README, the DocC catalog and the doc comments,
# extracted (Examples/Snippets/extract.py), compiled with only its own imports
# as an app would, and run; a block starting with `// Package.swift` is a
# manifest excerpt and is skipped.
snippets: setup
	python3 Examples/Snippets/extract.py
	cd Examples/Snippets && $(SWIFT) build && .build/debug/Snippets

clean:
	rm -rf .build Examples/Consumer/.build Examples/Snippets/.build Examples/Snippets/Sources
