# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv and installs mithridate with everything it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-alibi clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mithridate demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# alibi-detect pins older numpy/pandas than the test environment: its comparison runs in a venv of its own
# (river too, for `--river`: all five peers on the same streams; river 0.23 accepts numpy 1.26)
bench-alibi:
	$(PYTHON) -m venv .venv-alibi
	.venv-alibi/bin/pip install --quiet --disable-pip-version-check -e . "alibi-detect==0.13.0" "torch==2.13.0" \
		"river==0.23.*" "numpy<2"
	.venv-alibi/bin/python -m benchmarks.monitor_alibi

clean:
	rm -rf $(VENV) .venv-alibi demo-out
