"""Evaluation: confusion counts and the bootstrap CI against scikit-learn, the figures are real
images, and `firekd evaluate` on a tiny real run's checkpoints reproduces the run's test metrics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score

from firekd.io import save_figure
from firekd.metrics.classification import bootstrap_f1_macro, confusion_counts, evaluation_scores
from firekd.reporting import plots
from firekd.reporting.embeddings import project, subsample

FIGURES = ("teacher_training_curves.png", "student_training_curves.png", "pr_curves.png",
           "confusion_matrices.png", "tsne_teacher.png", "tsne_student.png", "umap_teacher.png",
           "umap_student.png")


def _labels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2))
    score = np.clip(0.3 * y + 0.7 * rng.random((n, 2)), 0, 1)
    return y, score


def assert_png_with_content(path: Path, min_colours: int = 4) -> None:
    """A decodable PNG that is not blank: pixel spread and several distinct colours."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10, f"{path} looks blank"
    colours = np.unique(pixels.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1]))
    assert len(colours) >= min_colours, f"{path}: only {len(colours)} colours"


def test_confusion_counts_match_sklearn():
    y, s = _labels()
    pred = (s >= 0.5).astype(int)
    for k, name in enumerate(("fire", "smoke")):
        tn, fp, fn, tp = confusion_matrix(y[:, k], pred[:, k]).ravel()
        assert confusion_counts(y[:, k], pred[:, k], name) == {
            f"tn_{name}": tn, f"fp_{name}": fp, f"fn_{name}": fn, f"tp_{name}": tp}
    assert confusion_counts(np.zeros(5), np.zeros(5), "fire") == {
        "tn_fire": 5, "fp_fire": 0, "fn_fire": 0, "tp_fire": 0}


@pytest.mark.parametrize("n_resamples", [50, 230])  # 230: two chunks of resamples
def test_bootstrap_ci_matches_resampling_with_sklearn(n_resamples: int):
    y, s = _labels(n=80, seed=1)
    pred = (s >= 0.5).astype(int)
    rng = np.random.default_rng(7)
    ref = [f1_score(y[i], pred[i], average="macro", zero_division=0)
           for i in (rng.integers(0, len(y), len(y)) for _ in range(n_resamples))]
    low, high = bootstrap_f1_macro(y, pred, n_resamples=n_resamples, seed=7)
    assert (low, high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])))


def test_evaluation_scores_add_confusion_and_bootstrap_at_tuned_thresholds():
    y, s = _labels(seed=2)
    thr = np.array([0.45, 0.6])
    out = evaluation_scores(y, s, thresholds=thr)
    pred = (s >= thr).astype(int)
    assert out["tp_smoke"] == ((pred[:, 1] == 1) & (y[:, 1] == 1)).sum()
    assert out["fp_fire@0.5"] == ((s[:, 0] >= 0.5) & (y[:, 0] == 0)).sum()
    assert (out["f1_macro_boot_low"], out["f1_macro_boot_high"]) == pytest.approx(
        bootstrap_f1_macro(y, pred))
    assert out["f1_macro_boot_low"] < out["f1_macro"] < out["f1_macro_boot_high"]
    assert all(isinstance(v, float) for v in out.values())  # flat scalars: seeds aggregate them


def test_subsample_is_capped_seeded_and_the_same_for_every_model():
    assert subsample(10, 20, seed=0).tolist() == list(range(10))
    picked = subsample(1000, 50, seed=3)
    assert len(picked) == 50 and len(set(picked)) == 50 and (np.diff(picked) > 0).all()
    assert (picked == subsample(1000, 50, seed=3)).all()
    assert not (picked == subsample(1000, 50, seed=4)).all()


def test_projection_needs_a_few_points():
    with pytest.raises(ValueError, match="at least"):
        project(np.zeros((3, 8)), "tsne")


def test_umap_leaves_torch_on_its_thread_count():
    """numba's first launch in a process (here UMAP's) set OpenMP, and so torch, to every core:
    after drawing figures, a run under OMP_NUM_THREADS=1 (or a pytest-xdist worker) went on with
    all of them."""
    import subprocess
    import sys

    code = ("import numpy as np, torch; from firekd.reporting.embeddings import project; "
            "project(np.random.rand(20, 4), 'umap'); print(torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]


def test_figures_are_pngs_with_content(tmp_path: Path):
    y, s = _labels(n=60, seed=4)
    emb = np.random.default_rng(0).normal(size=(60, 16)) + 3 * y[:, :1]
    combos = np.array(["none", "fire", "smoke", "both"])[y[:, 0] + 2 * y[:, 1]]
    thr = np.array([0.5, 0.5])
    counts = {m: evaluation_scores(y, s, thresholds=thr) for m in ("teacher", "student")}
    bars = pd.DataFrame({"run": ["r_kl_bce", "r_kl_bce", "r_bce"], "model": ["teacher", "student", "student"],
                         "f1_macro_mean": [0.8, 0.7, 0.6], "f1_macro_ci_low": [0.75, 0.6, np.nan],
                         "f1_macro_ci_high": [0.85, 0.8, np.nan]})
    figures = {
        "tsne.png": plots.embedding_scatter(emb[:, :2], combos, "t-SNE", "tsne"),  # real ones: tiny_run
        "pr.png": plots.pr_curves({m: (y, s, thr) for m in counts}, "PR"),
        "cm.png": plots.confusion_matrices(counts, "CM"),
        "bars.png": plots.ci_bars(bars, ["f1_macro"], "bars"),
    }
    for name, fig in figures.items():
        save_figure(tmp_path / name, fig)
        assert_png_with_content(tmp_path / name)


# --- on a real (tiny) run ------------------------------------------------------------------------

def test_a_seed_has_all_figures_and_every_model_its_predictions(tiny_run: Path):
    graphs = tiny_run / "graphs" / "resnet18_kl_bce" / "seed_1"
    for name in FIGURES:
        assert_png_with_content(graphs / name)
    metrics = tiny_run / "metrics" / "resnet18_kl_bce" / "seed_1"
    final = json.loads((metrics / "final_evaluation.json").read_text())
    for model in ("teacher", "student"):
        preds = pd.read_csv(metrics / f"predictions_{model}.csv")
        assert len(preds) == final["run"]["n_test"]
        assert final[model]["tp_fire"] == ((preds["fire_pred"] == 1) & (preds["fire_true"] == 1)).sum()
    control = tiny_run / "graphs" / "resnet18_bce" / "seed_1"
    assert sorted(p.name for p in control.glob("*.png")) == sorted(n for n in FIGURES if "teacher" not in n)


def _evaluate(tiny_run: Path, model: str, tmp_path: Path, capsys, *extra) -> dict:
    ckpt = tiny_run / "models" / "resnet18_kl_bce" / "seed_1" / f"{model}_best.pth"
    csv = json.loads((tiny_run / "metrics" / "resnet18_kl_bce" / "config.json").read_text())["flags"]["csv"]
    code, out, err = run_cli(["evaluate", "--checkpoint", ckpt, "--csv", csv,
                              "--out", tmp_path, "--batch_size", "32", *extra], capsys)
    assert code == 0, err
    assert "F1 macro" in out
    return json.loads(next(tmp_path.glob(f"{model}_best_*.json")).read_text())


@pytest.mark.parametrize("model,split_flag", [("teacher", True), ("student", True), ("student", False)])
def test_evaluate_reproduces_the_runs_test_metrics(tiny_run: Path, tmp_path: Path, capsys, model: str,
                                                   split_flag: bool):
    split = tiny_run / "metrics" / "resnet18_kl_bce" / "split.csv"  # without the flag: found from the checkpoint
    got = _evaluate(tiny_run, model, tmp_path, capsys, "--split", "test", *(["--split_file", split] * split_flag))
    assert got["evaluated"]["split_file"] == str(split)
    final = json.loads((tiny_run / "metrics" / "resnet18_kl_bce" / "seed_1" / "final_evaluation.json")
                       .read_text())[model]
    assert got["evaluated"]["thresholds_from"].startswith("checkpoint")
    efficiency = {"params", "gflops", "size_mb", "latency_ms_b1", "latency_ms_b32", "cpu_threads",
                  "latency_runtime", "throughput_cuda"}  # measured by the run, not by evaluate
    assert set(got["metrics"]) == set(final) - efficiency
    for key, value in got["metrics"].items():
        assert value == pytest.approx(final[key], abs=1e-6, nan_ok=True), key
    preds = pd.read_csv(next(tmp_path.glob("*_predictions.csv")))
    run_preds = pd.read_csv(tiny_run / "metrics" / "resnet18_kl_bce" / "seed_1" / f"predictions_{model}.csv")
    assert (preds["row"] == run_preds["row"]).all()
    assert (preds["fire_pred"] == run_preds["fire_pred"]).all()


def test_evaluate_all_rows_with_given_thresholds(tiny_run: Path, synth_small: Path, tmp_path: Path, capsys):
    got = _evaluate(tiny_run, "student", tmp_path, capsys, "--thresholds", "0.5", "0.5")
    assert got["evaluated"]["n"] == len(pd.read_csv(synth_small / "data.csv"))
    assert got["evaluated"]["thresholds"] == [0.5, 0.5]
    assert got["metrics"]["f1_macro"] == pytest.approx(got["metrics"]["f1_macro@0.5"])


def test_evaluate_bad_inputs_end_in_one_line(tiny_run: Path, synth_small: Path, tmp_path: Path, capsys):
    csv = synth_small / "data.csv"
    code, _, err = run_cli(["evaluate", "--checkpoint", tmp_path / "nope.pth", "--csv", csv], capsys)
    assert_one_line_error(code, err, "checkpoint not found")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    code, _, err = run_cli(["evaluate", "--checkpoint", tmp_path / "junk.pth", "--csv", csv], capsys)
    assert_one_line_error(code, err, "junk.pth")
    ckpt = tmp_path / "student_best.pth"  # outside its run folder: no recorded split to fall back on
    shutil.copy(tiny_run / "models" / "resnet18_bce" / "seed_1" / "student_best.pth", ckpt)
    code, _, err = run_cli(["evaluate", "--checkpoint", ckpt, "--csv", csv, "--split", "test",
                            "--out", tmp_path], capsys)
    assert_one_line_error(code, err, "--split test: .* no split column and .* pass the run's split.csv")
