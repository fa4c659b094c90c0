# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and reinstall only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DATA   ?= demo_data
DEMO_OUTPUT ?= demo_output

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/firekd synth --out $(DEMO_DATA) --n 2000 --size 64 --seed 0
	$(VENV)/bin/firekd validate --csv $(DEMO_DATA)/data.csv

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUTPUT) .pytest_cache .ruff_cache
