"""Lockstep students and the one reference run of the kill tests.

The variants of a seed train in one pass over the same batches and each gets exactly what it gets
trained alone, with 0 or 2 loader workers: here with unlabelled pairs (the KD students and the
control then train in two loader groups), a student that early-stops inside the run, and
compression with fine-tuning (the pruned students fine-tune in lockstep too). A run killed with
SIGKILL during teacher training, in the middle of a lockstep student epoch, during compression and
during fine-tuning, and run again after each kill, ends with exactly the uninterrupted run's models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import forked
import pandas as pd
import pytest
import torch
from cli_helpers import log_lines

from firekd.data.synthetic import SynthConfig
from firekd.engine.loop import FitConfig, Member, fit_many
from firekd.engine.runtime import Runtime
from firekd.recipes.synth import write_synthetic

pytestmark = pytest.mark.slow
VARIANTS = ("kl_bce", "kl_l2_bce", "bce")
STUDENT_EPOCHS, TEACHER_EPOCHS = 4, 2
ARGS = ["--teachers", "resnet18", "--variants", *VARIANTS, "--seeds", "1", "--epochs_teacher", str(TEACHER_EPOCHS),
        "--epochs_student", str(STUDENT_EPOCHS), "--patience_student", "1", "--no_pretrained", "--img_size", "32",
        "--batch_size", "16", "--lr_teacher", "1e-3", "--max_embed_points", "0", "--finetune_epochs", "2",
        "--calibration_batches", "1", "--no_quant_compile", "--latency_runs", "0", "--no_figures"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """An easy set (the students learn something: compression has F1 to lose) with unlabelled pairs."""
    out = tmp_path_factory.mktemp("lockstep_data")
    write_synthetic(SynthConfig(n=96, size=32, seed=4, unlabeled=32, hidden_fire_rate=0, small_fire_rate=0,
                                distractor_rate=0), out)
    return out / "data.csv", out / "unlabeled.csv"


def _args(data: tuple[Path, Path], output: Path, *extra: str) -> list[str]:
    return ["ablation", "--csv", str(data[0]), "--unlabeled_csv", str(data[1]), "--output", str(output), *ARGS,
            *extra]


def _models(output: Path) -> dict[str, dict]:
    """Every model's metrics per variant (wall-clock numbers left out)."""
    out = {}
    for variant in VARIANTS:
        final = json.loads((output / f"metrics/resnet18_{variant}/seed_1/final_evaluation.json").read_text())
        out[variant] = {model: {k: v for k, v in metrics.items() if not k.startswith(("latency", "throughput"))}
                        for model, metrics in final.items() if model != "run"}
    return out


def _ablation(data, output: Path, *extra: str) -> None:
    from firekd.cli import main

    assert main(_args(data, output, *extra)) == 0


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    """The seed's teacher, trained once and copied into the in-process runs below."""
    out = tmp_path_factory.mktemp("teacher")
    _ablation(data, out, "--teacher_only", "--num_workers", "0")
    return out / "teachers"


def _with_teacher(teacher: Path, output: Path) -> Path:
    shutil.copytree(teacher, output / "teachers")
    return output


@pytest.fixture(scope="module")
def lockstep(data, teacher, tmp_path_factory) -> Path:
    """The reference run: lockstep, no loader workers, never interrupted."""
    out = _with_teacher(teacher, tmp_path_factory.mktemp("lockstep"))
    _ablation(data, out, "--num_workers", "0")
    return out


def _student_log(output: Path, variant: str) -> dict:
    return json.loads((output / f"metrics/resnet18_{variant}/seed_1/student_train_log.json").read_text())


def test_the_reference_run_has_an_early_stop_and_compression(lockstep):
    logs = {v: _student_log(lockstep, v) for v in VARIANTS}
    # one student stops inside the run while the others still train: lockstep must drop it alone
    assert any(log["stopped_early"] for log in logs.values()), logs
    assert any(len(log["epochs"]) == STUDENT_EPOCHS for log in logs.values()), logs
    for variant, models in _models(lockstep).items():
        assert {"student", "student_quantized", "student_pruned"} <= set(models), variant


def _probabilities(output: Path, variant: str, model: str) -> pd.DataFrame:
    return pd.read_csv(output / f"metrics/resnet18_{variant}/seed_1/predictions_{model}.csv")


def test_compressed_students_stay_close_to_fp32(lockstep):
    """Post-training int8 moves each test probability by less than 0.02 (about 0.001 here), so
    its F1 stays within 0.1 of fp32's (14 test pairs: a sample near a threshold may flip). The
    pruned student (40% of the parameters removed, fine-tuned for 2 epochs with its variant's loss)
    keeps its F1 within 0.25 of the student's."""
    for variant, models in _models(lockstep).items():
        fp32 = _probabilities(lockstep, variant, "student")
        int8 = _probabilities(lockstep, variant, "student_quantized")
        assert (fp32["row"] == int8["row"]).all()
        for label in ("fire", "smoke"):
            assert (int8[f"{label}_prob"] - fp32[f"{label}_prob"]).abs().max() < 0.02, (variant, label)
        student = models["student"]["f1_macro"]
        assert abs(models["student_quantized"]["f1_macro"] - student) <= 0.1, (variant, models)
        assert models["student_pruned"]["f1_macro"] >= student - 0.25, (variant, models)
        log = json.loads((lockstep / f"metrics/resnet18_{variant}/seed_1/student_pruned_train_log.json").read_text())
        terms = {k for k in log["epochs"][0] if k.startswith("train_") and k != "train_loss"}
        expected = {"kl_bce": {"train_kl", "train_bce"}, "kl_l2_bce": {"train_kl", "train_l2", "train_bce"},
                    "bce": {"train_bce"}}[variant]
        assert terms == expected, (variant, terms)  # fine-tuned with the variant's own loss
        if variant == "kl_l2_bce":  # and its trained projector: a fresh one starts where training did
            trained = [e["train_l2"] for e in _student_log(lockstep, variant)["epochs"]]
            assert log["epochs"][0]["train_l2"] < (trained[0] + min(trained)) / 2, (trained, log["epochs"])


def test_lockstep_gives_each_variant_what_it_gets_alone(data, teacher, lockstep, tmp_path):
    alone = _with_teacher(teacher, tmp_path / "alone")
    _ablation(data, alone, "--lockstep", "off", "--num_workers", "0")
    assert _models(lockstep) == _models(alone)


def test_two_loader_workers_give_the_same_models(data, teacher, lockstep, tmp_path):
    workers = _with_teacher(teacher, tmp_path / "workers")
    _ablation(data, workers, "--num_workers", "2")
    assert _models(lockstep) == _models(workers)


def _run_until(argv: list, logs: Path, env: dict, line: str) -> str:
    """Start `firekd <argv>` in its own process, SIGKILL it as soon as it logs ``line``; returns
    what it logged."""
    child = forked.start(argv, logs=logs, env=env)
    seen = []
    for got in child.stderr_lines():
        seen.append(got)
        if line in got:
            os.kill(child.pid, signal.SIGKILL)
            break
    assert child.wait(timeout=60) == -signal.SIGKILL, f"never logged {line!r}:\n{''.join(seen)[-3000:]}"
    return "".join(seen)


def test_killed_at_every_stage_then_rerun_gives_the_uninterrupted_models(data, lockstep, tmp_path):
    output = tmp_path / "killed"
    # no loader workers: resuming is the claim here (test_two_loader_workers_give_the_same_models
    # covers the workers), and each of the five processes would start its own. The four killed
    # processes are forked from a server that imported firekd once (tests/forked.py).
    argv = _args(data, output, "--num_workers", "0")
    # as many threads as the in-process reference: another count sums in another order (1e-7 apart)
    env = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    final = output / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json"
    logs = iter(tmp_path / f"process_{k}" for k in range(1, 5))
    # 1. during teacher training: it has saved epoch 1 (an epoch is logged before it is saved)
    _run_until(argv, next(logs), env, f"[teacher resnet18 (seed 1)] epoch 2/{TEACHER_EPOCHS}")
    # 2. in the middle of a lockstep epoch: kl_bce has saved epoch 2, kl_l2_bce not
    log = _run_until(argv, next(logs), env, f"[student kl_l2_bce (seed 1)] epoch 2/{STUDENT_EPOCHS}")
    assert "[teacher resnet18 (seed 1)] resuming after epoch" in log
    assert "[teacher resnet18 (seed 1)] epoch 1/" not in log
    # 3. during compression: the first student's int8 model is evaluated, the others are not
    log = _run_until(argv, next(logs), env, "student_quantized kl_bce: int8")
    assert "[student kl_bce (seed 1)] resuming after epoch 2" in log
    assert "[student kl_bce (seed 1)] epoch 1/" not in log
    # 4. during fine-tuning of the pruned students (in memory: it starts over with its seed)
    log = _run_until(argv, next(logs), env, "[finetune kl_bce (seed 1)] epoch 1/2")
    assert "[student kl_bce (seed 1)] epoch" not in log  # the trained students are loaded, not retrained
    assert not final.exists()
    # the last run, here: what it resumes from is the claim, not its process (one start fewer)
    with log_lines(logging.INFO) as lines:
        _ablation(data, output, "--num_workers", "0")
    assert any(line.startswith("[finetune kl_bce (seed 1)] epoch 1/2") for line in lines)  # it ran
    assert not any(line.startswith("[student kl_bce (seed 1)] epoch") for line in lines)
    assert _models(output) == _models(lockstep)


class _Task(torch.nn.Module):
    """A tiny task that counts its training steps; ``frozen_score`` makes its validation F1 constant
    (its logits do not depend on what it learns), so it early-stops."""

    def __init__(self, frozen_score: bool) -> None:
        super().__init__()
        self.model = torch.nn.Linear(4, 2)
        self.frozen_score, self.steps = frozen_score, 0

    def trained_modules(self):
        return {"model": self.model}

    def forward(self, rgb, ir, labels, targets=None):
        self.steps += self.training
        logits = self.model(rgb)
        if self.frozen_score:
            logits = logits * 0 + torch.tensor([1.0, -1.0])
        return logits, {"bce": torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)}


def test_a_student_that_early_stops_drops_out_while_the_others_go_on():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    labels = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] > 0).float()], dim=1)
    batches = [(x[i:i + 16], torch.zeros(16, 0), labels[i:i + 16], torch.arange(i, i + 16))
               for i in range(0, 64, 16)]
    stops, learns = _Task(frozen_score=True), _Task(frozen_score=False)
    cfg = dict(epochs=6, lr=0.05, weight_decay=0.0, weights={"bce": 1.0}, seed=0)
    members = [Member(stops, FitConfig(kind="student", label="stops", patience=1, **cfg)),
               Member(learns, FitConfig(kind="student", label="learns", patience=100, **cfg))]
    results = fit_many(members, batches, batches, Runtime(torch.device("cpu")))
    assert results[0].stopped_early and len(results[0].history) == 2  # no better than epoch 1
    assert not results[1].stopped_early and len(results[1].history) == 6
    assert stops.steps == 2 * len(batches) and learns.steps == 6 * len(batches)
