# Benchmarks (bench/README.md). `make bench` runs every issue's benchmark at the sizes the
# issues ask (about an hour on 2 cores, 1M chunks need ~9 GB of memory); `make bench-quick`
# runs small sizes in minutes; both write bench/REPORT.md and bench/plots/*.png. The runner,
# bench/runner.py, needs a source checkout installed with the dev extra (scripts/test.sh or
# `EXTRAS=server,dev bash scripts/setup.sh`); it is not part of the installed package.
PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick bench-report

bench:
	$(PYTHON) bench/runner.py

bench-quick:
	$(PYTHON) bench/runner.py --quick

# Re-render the report from bench/results/report without measuring again.
bench-report:
	$(PYTHON) bench/bench_report.py
