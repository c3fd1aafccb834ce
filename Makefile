# NormKit: the README's commands. `make test` and `make bench` install OpenBLAS
# and LAPACKE (Debian/Ubuntu) when their headers are missing.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SWIFT ?= swift
BENCH_ARGS ?=

.PHONY: setup test bench bench-quick lab clean

setup:
	@if [ ! -f /usr/include/lapacke.h ] || ! pkg-config --exists openblas 2>/dev/null || ! pkg-config --exists lapacke 2>/dev/null; then \
		echo "Installing libopenblas-dev, liblapacke-dev and pkg-config with apt-get"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libopenblas-dev liblapacke-dev pkg-config; \
	fi

# Release mode: the allocation-free entry points are proved allocation-free in
# optimized code (Tests/NormKitTests/AllocationTests.swift), and it is faster.
test: setup
	$(SWIFT) test -c release

bench: setup
	$(SWIFT) run -c release normbench $(BENCH_ARGS)

bench-quick: setup
	$(SWIFT) run -c release normbench --quick $(BENCH_ARGS)

# cs231n's batch-normalization experiments on the embedded digits: CSV and SVG
# files in normlab-output/ (a few minutes on 2 cores).
lab: setup
	$(SWIFT) run -c release normlab all --output normlab-output

clean:
	rm -rf .build
