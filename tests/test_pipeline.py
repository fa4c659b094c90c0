"""End to end on a tiny synthetic set: the ablation grid, the spec's scripts run concurrently as
in its "Parallel Execution" recipe, the output tree, the JSON schema and the aggregates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import forked
import numpy as np
import pytest
from cli_helpers import SPEC_SNIPPET, run_cli
from conftest import ROOT
from scipy import stats

from firekd.data.synthetic import SynthConfig
from firekd.kd.variants import SPEC_VARIANTS
from firekd.recipes.synth import write_synthetic

pytestmark = pytest.mark.slow
# embedding figures are tested on tiny_run (test_evaluation); here they would only cost time
# one optimizer step per epoch (84 training pairs), one calibration batch; latency is not looked at here
# (test_compress, and the spec scripts below)
TINY = ["--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained", "--img_size", "32",
        "--finetune_epochs", "1", "--no_quant_compile", "--latency_runs", "0", "--max_embed_points", "0",
        "--num_workers", "0", "--batch_size", "128", "--calibration_batches", "1", "--lr_teacher", "1e-3",
        "--no_figures"]
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline_data")
    write_synthetic(SynthConfig(n=120, size=32, seed=7), out)
    return out / "data.csv"


@pytest.fixture(scope="module")
def ablation(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    from firekd.cli import main  # in-process: capsys is function-scoped

    code = main(["ablation", "--csv", str(data), "--output", str(out), "--teachers", "resnet18",
                 "--seeds", "1", "2", *TINY])
    assert code == 0
    return out


def test_output_tree_for_every_variant_and_seed(ablation: Path):
    for variant in SPEC_VARIANTS:  # the default --variants
        name = f"resnet18_{variant}"
        run = ablation / "metrics" / name
        for f in ("config.json", "environment.json", "split.csv", "run.log", "aggregated_results.json"):
            assert (run / f).is_file(), f
        for seed in (1, 2):
            metrics = run / f"seed_{seed}"
            models = ablation / "models" / name / f"seed_{seed}"
            graphs = ablation / "graphs" / name / f"seed_{seed}"
            assert (metrics / "final_evaluation.json").is_file()
            assert (metrics / "student_train_log.json").is_file()
            assert (models / "student_best.pth").is_file()
            assert (models / "student_quantized.pth").is_file() and (models / "student_pruned.pth").is_file()
            has_teacher = variant != "bce"
            assert (metrics / "teacher_train_log.json").is_file() == has_teacher
            assert (models / "teacher_best.pth").is_file() == has_teacher
            # --no_figures: not even the training curves (the figures' tree: test_evaluation's tiny_run)
            assert not list(graphs.glob("*.png"))
            assert not list(models.glob("*_state.pt"))  # resume state removed when done


def test_final_evaluation_schema(ablation: Path):
    final = json.loads((ablation / "metrics/resnet18_kl_l2_bce/seed_1/final_evaluation.json").read_text())
    assert set(final) >= {"teacher", "student", "student_quantized", "student_pruned", "run"}
    for model in ("teacher", "student"):
        m = final[model]
        for key in ("f1_macro", "f1_fire", "f1_smoke", "precision_fire", "recall_smoke", "accuracy",
                    "auroc_fire", "ap_smoke", "f1_macro@0.5", "threshold_fire", "threshold_smoke"):
            assert key in m and (m[key] is None or 0 <= m[key] <= 1), key
    assert final["run"]["seed"] == 1 and final["run"]["variant"] == "kl_l2_bce"
    log = json.loads((ablation / "metrics/resnet18_kl_l2_bce/seed_1/student_train_log.json").read_text())
    epoch = log["epochs"][0]
    for key in ("train_loss", "train_kl", "train_l2", "train_bce", "val_loss", "val_f1_macro", "lr"):
        assert key in epoch, key
    assert log["params"]["projector"] > 0


def test_teacher_trained_once_per_seed_for_all_variants(ablation: Path):
    assert len(list((ablation / "teachers" / "resnet18").glob("seed_*"))) == 2
    log = (ablation / "metrics/resnet18_kl_bce/run.log").read_text()
    for seed in (1, 2):
        assert len(re.findall(rf"\[teacher resnet18 \(seed {seed}\)\] epoch 1/1", log)) == 1
    models = ablation / "models"
    a = models / "resnet18_kl_bce/seed_1/teacher_best.pth"
    b = models / "resnet18_kl_contrastive_l2_bce/seed_1/teacher_best.pth"
    assert a.read_bytes() == b.read_bytes()


def test_aggregates_equal_numpy_and_scipy_on_the_per_seed_values(ablation: Path):
    run = ablation / "metrics/resnet18_kl_contrastive_l2_bce"
    agg = json.loads((run / "aggregated_results.json").read_text())
    assert agg["seeds"] == [1, 2]
    for model in ("teacher", "student"):
        for metric in ("f1_macro", "f1_fire", "recall_smoke"):
            values = [json.loads((run / f"seed_{s}/final_evaluation.json").read_text())[model][metric]
                      for s in (1, 2)]
            got = agg[model][metric]
            assert got["values"] == pytest.approx(values)
            assert got["mean"] == pytest.approx(np.mean(values))
            assert got["std"] == pytest.approx(np.std(values, ddof=1))
            low, high = stats.t.interval(0.95, 1, loc=np.mean(values), scale=stats.sem(values))
            if np.std(values) > 0:
                assert (got["ci95_low"], got["ci95_high"]) == pytest.approx((low, high))
            assert got["n"] == 2


def test_rerun_skips_finished_seeds(ablation: Path, data: Path, capsys, caplog):
    before = (ablation / "metrics/resnet18_bce/seed_1/final_evaluation.json").read_bytes()
    code, out, _ = run_cli(["ablation", "--csv", data, "--output", ablation, "--teachers", "resnet18",
                            "--variants", "bce", "kl_bce", "--seeds", "1", *TINY], capsys)
    assert code == 0
    assert "resnet18_bce seed 1: already done, skipping" in caplog.text
    assert (ablation / "metrics/resnet18_bce/seed_1/final_evaluation.json").read_bytes() == before


def test_other_settings_into_the_same_run_folder_are_refused(ablation: Path, data: Path, capsys):
    code, _, err = run_cli(["train", "--csv", data, "--output", ablation, "--teacher", "resnet18",
                            "--variant", "bce", "--seeds", "1", *TINY, "--batch_size", "16",
                            "--lr_teacher", "0.5"], capsys)
    assert code != 0 and "holds finished seeds made with other settings (differs in: optim.batch_size)" in err


@pytest.fixture(scope="module")
def spec_runs(tmp_path_factory):
    """The spec's three variant scripts for ResNet-152, started at once into one --output: 48 pairs,
    one optimizer step per epoch, as the claims are about concurrency, not about the models. Each
    script runs in its own process, forked from one that imported firekd (tests/forked.py; the
    scripts' own start from another folder is test_spec_setup's)."""
    cwd = tmp_path_factory.mktemp("spec")
    write_synthetic(SynthConfig(n=48, size=32, seed=7), cwd / "data")
    args = ["--csv", "data/data.csv", "--output", "output", "--epochs_teacher", "1", "--epochs_student", "1",
            "--batch_size", "64", "--seeds", "42", "--no_pretrained", "--img_size", "32", "--num_workers", "0",
            "--lr_teacher", "1e-3", "--max_embed_points", "0", "--no_compress", "--latency_runs", "1", "--no_figures"]
    procs = [forked.start(args, script=ROOT / f"scripts/resnet-152/train_kd_{variant}.py", cwd=cwd,
                          env={"OMP_NUM_THREADS": "1"}, logs=cwd / "logs" / variant)
             for variant in ("kl_bce", "kl_l2_bce", "kl_contrastive_l2_bce")]
    results = [p.communicate(timeout=900) for p in procs]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    return cwd, [err for _, _, err in results]


def test_spec_scripts_in_parallel_train_each_teacher_once(spec_runs):
    cwd, logs = spec_runs
    # one seed: the ResNet-152 teacher makes this the costliest fixture of the suite
    assert len(list((cwd / "output/teachers/resnet152").glob("seed_*"))) == 1
    trained = sum(len(re.findall(r"\[teacher resnet152 \(seed 42\)\] epoch 1/1", log)) for log in logs)
    reused = sum("teacher resnet152 seed 42: reusing" in log for log in logs)
    assert (trained, reused) == (1, 2)
    # the teacher's latency is measured once per architecture, stored, and the same everywhere
    stored = json.loads(next((cwd / "output/teachers/resnet152").glob("efficiency-*.json"))
                        .read_text())["efficiency"]
    for variant in ("kl_bce", "kl_l2_bce", "kl_contrastive_l2_bce"):
        final = json.loads((cwd / f"output/metrics/resnet152_{variant}/seed_42/final_evaluation.json")
                           .read_text())
        assert final["teacher"]["latency_ms_b1"] == stored["latency_ms_b1"] > 0


def test_spec_comparison_snippet_runs_unchanged(spec_runs):
    cwd, _ = spec_runs
    proc = subprocess.run([sys.executable, "-c", SPEC_SNIPPET], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Baseline (KL+BCE)" in proc.stdout and " ± " in proc.stdout
