# Two entry points for a fresh machine:
#   make demo   set up .venv and run the main job on the embedded default data
#   make test   set up .venv and run the default (fast) test suite
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed

.PHONY: demo test test-slow bench bench-all venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/whatifgan demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# minutes: planning and identification; bench-all: every benchmark (hours on 2 CPU cores)
bench: $(STAMP)
	$(BIN)/python scripts/bench_hgraph.py
	$(BIN)/python scripts/bench_identify.py

bench-all: bench
	$(BIN)/python scripts/bench_idgen.py
	$(BIN)/python scripts/bench_classifiers.py
	$(BIN)/python scripts/bench_dcm.py
	$(BIN)/python scripts/bench_diffscm.py
	$(BIN)/python scripts/bench_images.py
	$(BIN)/python scripts/bench_cage.py
	$(BIN)/python scripts/bench_compare.py

clean:
	rm -rf $(VENV) build *.egg-info
