# Benchmarks (bench/README.md). `make bench` runs every issue's benchmark at the sizes the
# issues ask (about an hour on 2 cores, 1M chunks need ~9 GB of memory); `make bench-quick`
# runs small sizes in minutes; both write bench/REPORT.md and bench/plots/*.png.
RAG ?= .venv/bin/rag
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick bench-report

bench:
	$(RAG) bench

bench-quick:
	$(RAG) bench --quick

# Re-render the report from bench/results/report without measuring again.
bench-report:
	$(PYTHON) bench/bench_report.py
