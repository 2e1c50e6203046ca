# Benchmarks (see docs/benchmarks.md). Measure on a quiet machine; nothing here is a test.
#   make bench        full run: criterion (Rust core) + Python side-by-side benchmarks
#   make bench-quick  smoke run of the same (seconds, numbers not meaningful)
# The Python benchmarks use the installed extension: rebuild it first with
# `pip install -e . --no-deps` (maturin builds the release profile).

PYTHON ?= python
CARGO ?= cargo
# RAM of the dump the criterion bench writes into $$TMPDIR (MiB).
NTDUMP_BENCH_MIB ?= 512

.PHONY: bench bench-rust bench-python bench-quick

bench: bench-rust bench-python

bench-rust:
	NTDUMP_BENCH_MIB=$(NTDUMP_BENCH_MIB) $(CARGO) bench -p ntdump-core --bench read
	$(PYTHON) benchmarks/criterion_summary.py

bench-python:
	$(PYTHON) benchmarks/bench_open.py
	$(PYTHON) benchmarks/bench_random_reads.py

bench-quick:
	NTDUMP_BENCH_MIB=160 $(CARGO) bench -p ntdump-core --bench read -- --quick
	$(PYTHON) benchmarks/criterion_summary.py
	$(PYTHON) benchmarks/bench_open.py --quick
	$(PYTHON) benchmarks/bench_random_reads.py --quick
