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
	@# --no-compile: pip would byte-compile all 18,000 files on one core (~65 s); the first
	@# processes of `make test` or `make demo` compile the ~6,000 they import, once (see below).
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	@touch $(STAMP)

# Python caches the bytecode of what it imports (in .venv and __pycache__ folders, both ignored by
# git): where PYTHONDONTWRITEBYTECODE is set, every process of the tests (~40) would compile torch
# and the rest again, ~11 s of CPU each.
unexport PYTHONDONTWRITEBYTECODE

# The demo: the headline of the study in benchmarks/kd_effect.py (its `side` arm, the same data,
# with the lighter resnet10t teacher so that ten seeds fit 15 minutes on 2 cores), seeds 1-10.
# Drone footage of RGB+IR pairs is cheap, labels are not: each seed draws its own split and keeps
# 60 labelled training pairs (--resample_split --n_labelled 60); the rest of the training split
# and 1,500 more pairs are unlabelled. A fire buried under smoke leaves only a faint trace in RGB
# (--rgb_cue 0.3) and is plain in IR. The teacher's backbone starts from
# weights learnt on a disjoint synthetic set's side variables (orange objects, haze: never fire or
# smoke; the offline stand-in for ImageNet weights), then learns the task from the seed's 60 labels,
# once with RGB+IR input and once with RGB only. Students: KD (kl_bce) from each teacher and the
# two no-teacher baselines, the `bce` control and `self_kd`. The report answers: KD against the
# best no-teacher baseline, and what IR adds. A re-run skips finished work; DEMO_SEEDS reseeds
# (e.g. DEMO_SEEDS="11 12 13 14 15 16 17 18 19 20"), DEMO_TEACHER picks the architecture (the
# study's is resnet18), DEMO_FIGURES= draws the figures, DEMO_FLAGS overrides any other flag
# (e.g. --compress).
DEMO_PRETRAIN ?= demo_pretrain
DEMO_SEEDS ?= 1 2 3 4 5 6 7 8 9 10
DEMO_TEACHER ?= resnet10t
DEMO_FLAGS ?=
DEMO_FIGURES ?= --no_figures --max_embed_points 0
DEMO_COMMON := --img_size 32 --no_pretrained --lr_teacher 1e-3 --batch_size 64 --num_workers 0 \
	--latency_runs 0 --save_every 10 $(DEMO_FIGURES) --no_compress
demo: $(STAMP)
	@test -f $(DEMO_DATA)/pretrain/data.csv || $(VENV)/bin/firekd synth --out $(DEMO_DATA)/pretrain --n 3000 \
		--size 32 --seed 99 --rgb_cue 0.3 --side_labels
	@test -f $(DEMO_DATA)/data.csv || $(VENV)/bin/firekd synth --out $(DEMO_DATA) --n 800 --unlabeled 1500 \
		--size 32 --seed 0 --rgb_cue 0.3
	$(VENV)/bin/firekd ablation --csv $(DEMO_DATA)/pretrain/data.csv --fire_col orange_object --smoke_col haze \
		--output $(DEMO_PRETRAIN) --teachers $(DEMO_TEACHER) --teacher_modalities rgb --teacher_only --seeds 0 \
		$(DEMO_COMMON) --epochs_teacher 20 --patience_teacher 5
	$(VENV)/bin/firekd ablation --csv $(DEMO_DATA)/data.csv --unlabeled_csv $(DEMO_DATA)/unlabeled.csv \
		--output $(DEMO_OUTPUT) --teachers $(DEMO_TEACHER) --teacher_modalities rgb+ir rgb \
		--variants kl_bce bce self_kd --seeds $(DEMO_SEEDS) --resample_split --split_ratios 0.25 0.075 0.675 \
		--n_labelled 60 --slice_col hidden_in_rgb \
		--teacher_weights $$(ls -t $(DEMO_PRETRAIN)/teachers/$(DEMO_TEACHER)/seed_0-*/teacher_best.pth | head -1) \
		$(DEMO_COMMON) --steps_teacher 150 --patience_teacher 30 --epochs_student 10 --patience_student 5 \
		--jobs 2 $(DEMO_FLAGS)
	$(VENV)/bin/firekd report $(DEMO_OUTPUT)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_DATA) $(DEMO_OUTPUT) $(DEMO_PRETRAIN) .pytest_cache .ruff_cache
