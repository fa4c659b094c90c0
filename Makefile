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

# The demo: the setting where distillation must help. Drone footage of RGB+IR pairs is cheap,
# labels are not: 51 labelled training pairs and 1,500 unlabelled pairs. The teachers see the
# labelled pairs only, the KD students learn from the teacher on every pair, the bce control from
# the labels alone. The teacher's backbone starts from weights learnt on a disjoint synthetic set
# (RGB only; the offline stand-in for ImageNet weights), as a real teacher starts from ImageNet.
# Then the full ablation (one teacher, three KD variants, the control, three seeds), its
# comparison table and the report. A re-run skips finished work; DEMO_FLAGS overrides any flag.
DEMO_PRETRAIN ?= demo_pretrain
DEMO_FLAGS ?=
DEMO_COMMON := --img_size 32 --no_pretrained --lr_teacher 1e-3 --batch_size 64 --num_workers 0
demo: $(STAMP)
	@test -f $(DEMO_DATA)/pretrain/data.csv || $(VENV)/bin/firekd synth --out $(DEMO_DATA)/pretrain --n 1000 --size 32 --seed 99
	@test -f $(DEMO_DATA)/data.csv || $(VENV)/bin/firekd synth --out $(DEMO_DATA) --n 500 --unlabeled 1500 --size 32 --seed 0
	$(VENV)/bin/firekd ablation --csv $(DEMO_DATA)/pretrain/data.csv --output $(DEMO_PRETRAIN) \
		--teachers resnet18 --teacher_modalities rgb --teacher_only --seeds 0 $(DEMO_COMMON) \
		--epochs_teacher 10 --max_embed_points 0 --latency_runs 0
	$(VENV)/bin/firekd ablation --csv $(DEMO_DATA)/data.csv --unlabeled_csv $(DEMO_DATA)/unlabeled.csv \
		--output $(DEMO_OUTPUT) --teachers resnet18 --seeds 1 2 3 --split_ratios 0.1 0.2 0.7 \
		--teacher_weights $$(ls $(DEMO_PRETRAIN)/teachers/resnet18/seed_0-*/teacher_best.pth) \
		$(DEMO_COMMON) --epochs_teacher 60 --patience_teacher 15 --epochs_student 10 \
		--finetune_epochs 1 --max_embed_points 0 --no_quant_compile $(DEMO_FLAGS)
	$(VENV)/bin/firekd report $(DEMO_OUTPUT)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUTPUT) $(DEMO_PRETRAIN) .pytest_cache .ruff_cache
