# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.relreps-installed
EXTRAS  ?= dev,io,dist,docs,words,text,images,graphs

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml Makefile scripts/install_data.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	bash scripts/install_data.sh $(BIN)/python
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/relreps demo

test: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
