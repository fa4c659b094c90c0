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

# The demo: the synthetic RGB+IR set, then the full ablation (one teacher, the three KD variants
# and the bce control, two seeds) at a small size, its comparison table, then the report. A re-run skips
# finished work. DEMO_FLAGS can override any training flag.
DEMO_FLAGS ?=
demo: $(STAMP)
	@test -f $(DEMO_DATA)/data.csv || $(VENV)/bin/firekd synth --out $(DEMO_DATA) --n 1500 --size 64 --seed 0
	$(VENV)/bin/firekd ablation --csv $(DEMO_DATA)/data.csv --output $(DEMO_OUTPUT) \
		--teachers resnet18 --seeds 1 2 --img_size 32 --no_pretrained --lr_teacher 1e-3 \
		--epochs_teacher 8 --epochs_student 8 --finetune_epochs 2 --num_workers 2 $(DEMO_FLAGS)
	$(VENV)/bin/firekd report $(DEMO_OUTPUT)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUTPUT) .pytest_cache .ruff_cache
