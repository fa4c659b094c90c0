"""`firekd compare` and `firekd report`: a fabricated output tree with known per-seed values gives
the right means, CIs and p-values (checked against scipy.stats), McNemar matches a hand count, the
spec's comparison snippet reads aggregated_results.json unchanged, and bad inputs fail in one line."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import SPEC_SNIPPET, assert_one_line_error, run_cli
from scipy import stats
from test_evaluation import assert_png_with_content

from firekd.io import write_json
from firekd.metrics.stats import aggregate_runs, holm, mcnemar_exact, paired_tests
from firekd.recipes.compare import compare
from firekd.recipes.report import write_report
from firekd.reporting import plots
from firekd.reporting.tables import best_against_control, display_table, shared_teacher_rows, summary_frame

SEEDS = (1, 2, 3, 4)
# student F1 macro per seed; fire/smoke are offsets of it
STUDENT = {"kl_bce": [0.80, 0.78, 0.83, 0.79], "kl_l2_bce": [0.82, 0.81, 0.84, 0.80],
           "bce": [0.74, 0.77, 0.75, 0.73]}
TEACHER = [0.90, 0.91, 0.89, 0.92]


def _metrics(f1: float) -> dict:
    return {"f1_macro": f1, "f1_fire": f1 - 0.02, "f1_smoke": f1 + 0.02, "accuracy": f1 - 0.1}


def _predictions(truth: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    pred = np.where(correct, truth, 1 - truth)
    return pd.DataFrame({"row": np.arange(2, 2 + len(truth)), "fire_true": truth, "fire_prob": 0.5,
                         "fire_pred": pred, "smoke_true": truth, "smoke_prob": 0.5, "smoke_pred": truth})


# CPU latency at batch 1 (ms) and F1 offset of every model, for the F1-latency figure
LATENCY = {"teacher": (40.0, 0.0), "student": (2.0, 0.0), "student_quantized": (1.0, -0.01),
           "student_pruned": (1.5, -0.02)}


def fabricate(root: Path, teacher: str = "resnet152", extra: dict | None = None, *,
              seeds: tuple[int, ...] = SEEDS, variants: tuple[str, ...] = tuple(STUDENT),
              latency: bool = False) -> Path:
    """output/metrics/{teacher}_{variant}/ with per-seed final_evaluation.json, predictions (teacher
    right on 0..9 only, student right on 5..14 only, of 20 samples) and aggregated_results.json;
    with ``latency`` also compressed students and every model's latency_ms_b1."""
    truth = np.arange(20) % 2
    for variant in variants:
        values = STUDENT[variant]
        folder = root / "metrics" / f"{teacher}_{variant}"
        per_seed = {}
        for seed in seeds:
            value = values[SEEDS.index(seed)]
            final = {"student": _metrics(value)}
            seed_dir = folder / f"seed_{seed}"
            seed_dir.mkdir(parents=True)
            _predictions(truth, (np.arange(20) >= 5) & (np.arange(20) < 15)).to_csv(
                seed_dir / "predictions_student.csv", index=False)
            if variant != "bce":
                final["teacher"] = _metrics(TEACHER[seed - 1])
                teacher_preds = _predictions(truth, np.arange(20) < 10)
                teacher_preds.to_csv(seed_dir / "predictions_teacher.csv", index=False)
            if latency:
                final.update({m: _metrics(value + offset) for m, (_, offset) in LATENCY.items()
                              if m.startswith("student_")})
                for model, (ms, _) in LATENCY.items():
                    if model in final:
                        final[model]["latency_ms_b1"] = ms
            final.update((extra or {}).get(variant, {}))
            per_seed[seed] = dict(final)
            write_json(seed_dir / "final_evaluation.json", {**final, "run": {"seed": seed}})
        write_json(folder / "aggregated_results.json", aggregate_runs(per_seed))
    return root


def test_means_and_cis_match_scipy(tmp_path: Path):
    cmp = compare(fabricate(tmp_path))
    row = cmp.summary.set_index(["variant", "model"]).loc[("kl_l2_bce", "student")]
    values = STUDENT["kl_l2_bce"]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert row["n"] == 4
    assert row["f1_macro_mean"] == pytest.approx(np.mean(values))
    assert row["f1_macro_std"] == pytest.approx(np.std(values, ddof=1))
    assert (row["f1_macro_ci_low"], row["f1_macro_ci_high"]) == pytest.approx((low, high))
    assert row["f1_fire_mean"] == pytest.approx(np.mean(values) - 0.02)
    assert list(dict.fromkeys(cmp.summary["variant"])) == ["kl_bce", "kl_l2_bce", "bce"]  # control last


def test_paired_tests_match_scipy_and_holm(tmp_path: Path):
    tests = compare(fabricate(tmp_path)).tests
    macro = tests[(tests["metric"] == "f1_macro") & (tests["model"] == "student")].set_index(["a", "b"])
    assert list(macro.index) == [("kl_bce", "bce"), ("kl_l2_bce", "bce"), ("kl_bce", "kl_l2_bce")]
    for a, b in macro.index:
        x, y = STUDENT[a], STUDENT[b]
        row = macro.loc[(a, b)]
        assert row["p_ttest"] == pytest.approx(stats.ttest_rel(x, y).pvalue)
        assert row["t"] == pytest.approx(stats.ttest_rel(x, y).statistic)
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
        assert row["mean_diff"] == pytest.approx(np.mean(np.subtract(x, y)))
        assert row["kind"] == ("vs control" if b == "bce" else "between variants")
    raw = macro["p_ttest"].tolist()
    assert macro["p_ttest_holm"].tolist() == pytest.approx(holm(raw))
    assert "Wilcoxon cannot reach p < 0.05 with n = 4" in macro["note"].iloc[0]
    assert set(tests["model"]) == {"student"}  # the shared teacher is not a variant's result


def _statsmodels_holm(p: np.ndarray) -> list[float]:
    """Holm by statsmodels (a dev dependency), without the gc.collect() it runs on every call: that
    frees memory and changes no result, but takes 0.2-0.6 s in a process holding torch's objects
    (24 s of CPU over this file's 40 calls)."""
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "collect", lambda *args: 0)
        return multitest.multipletests(p, method="holm")[1].tolist()


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_statsmodels_with_ties_and_missing_entries(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 12))
    p = rng.choice(rng.uniform(0, 0.2, size=max(1, m // 2)), size=m)  # about half the values tied
    if seed % 2:
        p = np.round(rng.uniform(0, 0.3, size=m), 2)  # ties from rounding, and p > 1 / m
    assert holm(p.tolist()) == pytest.approx(_statsmodels_holm(p), abs=1e-12)
    gaps = rng.random(m) < 0.3  # None entries (a test that could not run) are left out of m
    with_gaps = [None if gap else float(v) for v, gap in zip(p, gaps, strict=True)]
    got = holm(with_gaps)
    assert [g is None for g in got] == gaps.tolist()
    if not gaps.all():
        assert [g for g in got if g is not None] == pytest.approx(_statsmodels_holm(p[~gaps]), abs=1e-12)


def test_holm_by_hand():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_tests_say_when_n_is_too_small():
    one = paired_tests([0.8], [0.7])
    assert one["p_ttest"] is None and one["p_wilcoxon"] is None and "no test is possible" in one["note"]
    same = paired_tests([0.8, 0.7, 0.9], [0.7, 0.6, 0.8])  # identical differences: t undefined
    assert same["p_ttest"] is None and same["mean_diff"] == pytest.approx(0.1)
    assert same["p_wilcoxon"] == pytest.approx(stats.wilcoxon([0.1] * 3).pvalue)
    undefined = paired_tests([0.8, None, 0.6, float("nan")], [0.7, 0.5, 0.4, 0.3])
    assert undefined["n"] == 2


def test_mcnemar_by_hand(tmp_path: Path):
    rows = compare(fabricate(tmp_path)).mcnemar
    fire = rows[(rows["label"] == "fire") & (rows["variant"] == "kl_bce") & (rows["seed"] == 1)].iloc[0]
    # teacher right on 0..9, student on 5..14: b = 5 (0..4), c = 5 (10..14); two-sided exact p = 1
    assert (fire["b"], fire["c"], fire["p_mcnemar"]) == (5, 5, 1.0)
    smoke = rows[(rows["label"] == "smoke")].iloc[0]  # both always right: no discordant pair
    assert (smoke["b"], smoke["c"], smoke["p_mcnemar"]) == (0, 0, 1.0)
    assert set(rows["variant"]) == {"kl_bce", "kl_l2_bce"}  # bce has no teacher
    # b = 9, c = 1: p = 2 * P(X <= 1 | Bin(10, 0.5)) = 2 * 11 / 1024
    first = np.array([True] * 9 + [False] + [True] * 5)
    second = np.array([False] * 9 + [True] + [True] * 5)
    assert mcnemar_exact(first, second) == {"n": 15, "b": 9, "c": 1, "p_mcnemar": pytest.approx(22 / 1024)}


def test_compare_cli_prints_markdown_and_writes_csv_and_chart(tmp_path: Path, capsys):
    fabricate(tmp_path, teacher="swin_tiny")
    code, out, err = run_cli(["compare", tmp_path, "--teacher", "swin-tiny"], capsys)  # an alias
    assert code == 0, err
    assert "| swin_tiny | kl_l2_bce" in out and "0.8175 ± 0.0171" in out
    assert "kl_bce vs bce" in out and "note: Wilcoxon cannot reach" in out
    assert len(re.findall(r"\| teacher +\| 4 ", out)) == 1  # printed once, shared by both KD variants
    folder = tmp_path / "comparison" / "swin_tiny"
    assert f"written: {folder / 'comparison.csv'}" in out
    table = pd.read_csv(folder / "comparison.csv")
    assert len(table) == 5  # 2 KD variants x (teacher, student) + the bce student
    assert len(pd.read_csv(folder / "tests.csv")) == 9  # 3 pairs x 3 metrics
    assert_png_with_content(folder / "f1_ci_bars.png")


def test_compare_tolerates_compressed_models_and_efficiency(tmp_path: Path, capsys):
    extra = {v: {"student_quantized": {"f1_macro": 0.7, "params": 1.2e6, "size_mb": 1.3,
                                       "latency_ms_b1": 2.5}} for v in ("kl_bce", "bce")}
    fabricate(tmp_path, extra=extra)
    code, out, err = run_cli(["compare", tmp_path], capsys)
    assert code == 0, err
    assert "size (MB)" in out and "latency b1 (ms)" in out and "student_quantized" in out
    tests = pd.read_csv(tmp_path / "comparison" / "all" / "tests.csv")
    quantized = tests[tests["model"] == "student_quantized"]
    assert set(zip(quantized["a"], quantized["b"], strict=True)) == {("kl_bce", "bce")}
    assert quantized[quantized["metric"] == "f1_fire"]["n"].tolist() == [0]  # metric absent: no test


def test_the_specs_comparison_snippet_runs_unchanged(tmp_path: Path):
    output = fabricate(tmp_path / "output")
    v2 = output / "metrics" / "resnet152_kl_contrastive_l2_bce"  # the third variant, as the spec has it
    v2.mkdir(parents=True)
    (v2 / "aggregated_results.json").write_text((output / "metrics" / "resnet152_kl_bce" /
                                                 "aggregated_results.json").read_text())
    buffer, cwd = io.StringIO(), os.getcwd()
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(buffer):
            exec(compile(SPEC_SNIPPET, "spec-snippet", "exec"), {})
    finally:
        os.chdir(cwd)
    assert re.search(r"Variant 1 \(KL\+L2\+BCE\)\s*\|\s*0\.8175 ± 0\.0171\s*\|\s*0\.7975\s*\|\s*0\.8375",
                     buffer.getvalue())


def test_report_from_a_real_run_has_every_section_and_figure(tiny_run: Path, capsys):
    code, out, err = run_cli(["report", tiny_run], capsys)
    assert code == 0, err
    assert "What distillation buys" in out and "- resnet18: best KD student `kl_bce`" in out  # the answer first
    folder = tiny_run / "report" / "all"
    md = (folder / "report.md").read_text()
    for heading in ("## What distillation buys", "## Data", "## Configuration", "## Results",
                    "## Statistical tests",
                    "### Teacher vs student, per sample (McNemar)", "## Run resnet18_kl_bce",
                    "## Run resnet18_bce", "## Environment"):
        assert heading in md
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # where teacher and student disagree (kl_bce only: the control has no teacher), counted per label
    seed = tiny_run / "metrics" / "resnet18_kl_bce" / "seed_1"
    teacher, student = (pd.read_csv(seed / f"predictions_{m}.csv") for m in ("teacher", "student"))
    differ = {label: int((teacher[f"{label}_pred"] != student[f"{label}_pred"]).sum()) for label in ("fire", "smoke")}
    assert "### Where teacher and student disagree: resnet18_kl_bce, seed 1" in md
    assert f"decide differently on fire for {differ['fire']} and on smoke for {differ['smoke']}" in md
    assert "Where teacher and student disagree: resnet18_bce" not in md
    cams = 1 if any(differ.values()) else 0
    assert len(images) == 1 + 1 + 8 + 5 + cams  # F1-latency, bars, kl_bce's 8, bce's 5 (no teacher), CAMs
    assert "resnet18: best KD student `kl_bce`" in md and "f1_latency.png" in images[0]
    for rel in images:
        assert (folder / rel).is_file(), rel
    assert "| test " in md and "both" in md  # data summary: split x label combination
    html = (folder / "report.html").read_text()
    assert html.count("<img ") == len(images) and html.count("<table") >= 5
    assert "kd_temperature" in html and "n = 1: no test is possible" in html


def test_report_embeds_figures_and_counts_data_without_a_recorded_summary(
        tmp_path: Path, synth_small: Path, capsys):
    output = fabricate(tmp_path / "out")
    records = pd.read_csv(synth_small / "data.csv")
    position = np.arange(len(records))
    split = pd.DataFrame({"row": position + 2,
                          "split": np.where(position < 60, "train", np.where(position < 78, "val", "test"))})
    for run in (output / "metrics").iterdir():
        split.to_csv(run / "split.csv", index=False)
        write_json(run / "config.json", {"settings": {"teacher": "resnet152", "variant": run.name[10:],
                                                      "data": {"csv": str(synth_small / "data.csv")}},
                                         "resolved": {"data": {"csv": str(synth_small / "data.csv")}}})
    code, _, err = run_cli(["report", output, "--embed", "--out", tmp_path / "rep"], capsys)
    assert code == 0, err
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html
    md = (tmp_path / "rep" / "report.md").read_text()
    test_line = next(line for line in md.splitlines() if line.startswith("| test"))
    combos = (records["fire"] + 2 * records["smoke"])[78:]
    assert [int(c) for c in re.findall(r"\d+", test_line)] == [
        *(int((combos == k).sum()) for k in range(4)), len(combos)]


def test_bad_output_folders_end_in_one_line(tmp_path: Path, capsys):
    for command in ("compare", "report"):
        code, _, err = run_cli([command, tmp_path / "missing"], capsys)
        assert_one_line_error(code, err, "output folder not found")
        code, _, err = run_cli([command, tmp_path], capsys)
        assert_one_line_error(code, err, "no finished runs")
    fabricate(tmp_path)
    code, _, err = run_cli(["compare", tmp_path, "--teacher", "vit_b_16"], capsys)
    assert_one_line_error(code, err, r"--teacher vit_b_16: no runs .*teachers found: resnet152")



def test_report_lists_seeds_in_numeric_order(tmp_path: Path):
    from firekd.recipes.compare import Run
    from firekd.recipes.report import _seed_table

    for seed in (10, 2, 1024):
        write_json(tmp_path / f"seed_{seed}" / "final_evaluation.json",
                   {"run": {"seed": seed}, "student": {"f1_macro": 0.5}})
    table = _seed_table(Run("resnet18_bce", "resnet18", "bce", tmp_path, {}))
    assert table["seed"].tolist() == [2, 10, 1024]


def test_report_data_section_says_how_the_data_was_split(tmp_path: Path):
    from firekd.data.splits import SplitDecision
    from firekd.recipes.compare import Run
    from firekd.recipes.report import _data_section
    from firekd.reporting import document as doc

    decision = SplitDecision("frame_blocks", "because file names carry frame numbers; override with "
                             "--split random", block_size=50)
    runs = []
    for name, recorded in (("resnet18_kl_bce", decision.to_dict()), ("resnet18_bce", decision.to_dict()),
                           ("resnet18_kl_l2_bce", None)):  # a run from before splits were recorded
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"split": ["train"], "none": [1], "total": [1]}).to_csv(folder / "data_summary.csv",
                                                                               index=False)
        write_json(folder / "config.json", {"settings": {}, **({"split": recorded} if recorded else {})})
        runs.append(Run(name, "resnet18", name[9:], folder, {}))
    text = doc.to_markdown(_data_section(runs))
    assert ("Split: blocks of 50 consecutive frames, because file names carry frame numbers; override "
            "with --split random.") in text


def test_the_specs_snippet_runs_on_a_one_seed_output_and_prints_nan(tmp_path: Path):
    import json
    import subprocess
    import sys

    from firekd.io import write_text
    from firekd.metrics.stats import aggregates_json

    for variant, value in (("kl_bce", 0.80), ("kl_l2_bce", 0.82), ("kl_contrastive_l2_bce", 0.81)):
        aggregated = aggregate_runs({42: {"student": _metrics(value)}})
        write_text(tmp_path / "output" / "metrics" / f"resnet152_{variant}" / "aggregated_results.json",
                   aggregates_json(aggregated))
    saved = json.loads((tmp_path / "output/metrics/resnet152_kl_bce/aggregated_results.json").read_text())
    f1 = saved["student"]["f1_macro"]
    assert f1["n"] == 1 and f1["mean"] == 0.8 and np.isnan(f1["std"]) and np.isnan(f1["ci95_low"])
    proc = subprocess.run([sys.executable, "-c", SPEC_SNIPPET], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Baseline \(KL\+BCE\)\s*\|\s*0\.8000 ± nan\s*\|\s*0\.78\s*\|\s*0\.82\s", proc.stdout)
    table = display_table(summary_frame({"resnet152_kl_bce": saved}))  # firekd's own table: no ± for n = 1
    assert table["F1 macro (mean ± std)"].tolist() == ["0.8000"] and table["F1 macro 95% CI"].tolist() == ["n < 2"]


def _section(md: str, heading: str) -> str:
    """The text of a ``## heading`` section up to the next level-2 heading."""
    start = md.index(f"## {heading}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end if end > 0 else None]


def test_report_starts_with_the_best_kd_student_against_the_control(tmp_path: Path):
    output = fabricate(tmp_path / "out", latency=True)
    assert "in lockstep" not in _section(write_report(output)["markdown"].read_text(), "What distillation buys")
    for run in (output / "metrics").iterdir():  # runs made in lockstep record it
        teacher, variant = run.name.split("_", 1)
        write_json(run / "config.json", {"format": 2, "settings": {"teacher": teacher, "variant": variant},
                                         "flags": {"lockstep": "on"}})
    files = write_report(output)
    md = files["markdown"].read_text()
    assert re.findall(r"^## .*", md, flags=re.M)[0] == "## What distillation buys"
    answer = _section(md, "What distillation buys")
    # best by mean: kl_l2_bce (0.8175) over kl_bce (0.80); paired with bce per seed
    best, control = STUDENT["kl_l2_bce"], STUDENT["bce"]
    diffs = np.subtract(best, control)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    p = {pair: stats.ttest_rel(STUDENT[pair[0]], STUDENT[pair[1]]).pvalue
         for pair in (("kl_bce", "bce"), ("kl_l2_bce", "bce"), ("kl_bce", "kl_l2_bce"))}
    adjusted = dict(zip(p, holm(list(p.values())), strict=True))[("kl_l2_bce", "bce")]
    sentence = (f"resnet152: best KD student `kl_l2_bce`, F1 macro 0.8175 (n = 4) against 0.7475 for the "
                f"`bce` control: difference {diffs.mean():+.4f} [95% CI {low:+.4f}, {high:+.4f}], paired "
                f"t-test p = {p[('kl_l2_bce', 'bce')]:.3g} (Holm {adjusted:.3g}), 4 seeds: ")
    assert sentence in answer
    assert ("distillation helps, significant" if adjusted < 0.05 else "not significant") in answer
    assert "trained in lockstep on the same batches" in answer
    assert "![Test F1 macro against CPU latency" in answer
    assert_png_with_content(files["f1_latency"])
    # the results table: the shared teacher once, not once per KD variant; the CSV keeps every run's row
    results = _section(md, "Results")
    assert len(re.findall(r"^\| resnet152 +\| [^|]+\| teacher ", results, flags=re.M)) == 1
    assert re.search(r"^\| resnet152 +\| \(shared\) +\| teacher ", results, flags=re.M)
    table = pd.read_csv(files["table"])
    assert (table["model"] == "teacher").sum() == 2
    html = files["html"].read_text()
    assert html.index("What distillation buys") < html.index("<h2>Data</h2>")


def test_report_answer_without_the_control_run(tmp_path: Path):
    output = fabricate(tmp_path / "out", variants=("kl_bce", "kl_l2_bce"), latency=True)
    md = write_report(output)["markdown"].read_text()
    answer = _section(md, "What distillation buys")
    assert ("resnet152: best KD student `kl_l2_bce`, F1 macro 0.8175 (n = 4); no `bce` control run, so "
            "what distillation adds is not measured") in answer
    assert re.search(r"\| resnet152 +\| kl_l2_bce +\| 0\.8175 +\| n/a +\| n/a +\| n/a +\| 0 ", answer)


def test_report_answer_for_a_teacher_with_the_control_alone(tmp_path: Path):
    output = fabricate(tmp_path / "out")
    fabricate(output, teacher="swin_tiny", variants=("bce",))
    answer = _section(write_report(output)["markdown"].read_text(), "What distillation buys")
    assert "- resnet152: best KD student `kl_l2_bce`" in answer
    assert "- swin_tiny: no KD variant has student results (only the `bce` control)." in answer
    assert re.search(r"\| swin_tiny +\| none +\| n/a +\| 0\.7475 +\| n/a ", answer)


def test_report_answer_with_one_seed(tmp_path: Path):
    output = fabricate(tmp_path / "out", seeds=(2,), latency=True)
    md = write_report(output)["markdown"].read_text()
    answer = _section(md, "What distillation buys")
    # seed 2: kl_bce 0.78, kl_l2_bce 0.81, bce 0.77
    assert ("resnet152: best KD student `kl_l2_bce`, F1 macro 0.8100 (n = 1) against 0.7700 for the "
            "`bce` control: difference +0.0400 over 1 seed(s); no t-test is possible (n = 1: no test is "
            "possible") in answer
    assert "f1_latency.png" in answer


def test_report_says_so_when_no_latency_was_measured(tmp_path: Path):
    files = write_report(fabricate(tmp_path / "out"))
    assert "f1_latency" not in files
    assert "No figure of F1 against latency" in _section(files["markdown"].read_text(),
                                                          "What distillation buys")


def test_f1_latency_figure_has_a_panel_per_teacher_and_each_teacher_once(tmp_path: Path):
    output = fabricate(tmp_path, teacher="resnet152", latency=True)
    fabricate(output, teacher="swin_tiny", variants=("kl_bce", "bce"), latency=True)
    summary = shared_teacher_rows(compare(output).summary)
    fig = plots.f1_latency(summary, "test")
    assert [ax.get_title() for ax in fig.axes] == ["resnet152", "swin_tiny"]
    for ax, kd_variants in zip(fig.axes, (2, 1), strict=True):
        markers = [line.get_marker() for line in ax.lines]
        # one teacher star; student, quantized, pruned per variant (KD variants and the bce control)
        assert markers.count("*") == 1
        assert markers.count("o") == markers.count("s") == markers.count("^") == kd_variants + 1
        assert ax.get_xscale() == "log"  # 1 ms to 40 ms
        assert ax.get_xlabel().startswith("CPU latency, batch 1")
    star = next(line for line in fig.axes[0].lines if line.get_marker() == "*")
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx((40.0, np.mean(TEACHER)))
    assert plots.f1_latency(compare(fabricate(tmp_path / "plain")).summary, "none") is None


def test_shared_teacher_rows_keep_a_teacher_that_differs_between_runs(tmp_path: Path):
    output = fabricate(tmp_path)
    summary = compare(output).summary
    one = shared_teacher_rows(summary)
    assert one[one["model"] == "teacher"]["variant"].tolist() == ["(shared)"]
    students = one[one["model"] != "teacher"].reset_index(drop=True)
    assert students.equals(summary[summary["model"] != "teacher"].reset_index(drop=True))
    assert one["model"].tolist()[0] == "teacher"  # first in its teacher's block
    changed = summary.copy()
    changed.loc[(changed["variant"] == "kl_l2_bce") & (changed["model"] == "teacher"), "f1_macro_mean"] = 0.5
    teachers = shared_teacher_rows(changed).query("model == 'teacher'")
    assert teachers["variant"].tolist() == ["kl_bce", "kl_l2_bce"]
    assert len(display_table(summary, one_teacher_row=False)) == len(summary) == len(display_table(summary)) + 1
    single = shared_teacher_rows(compare(fabricate(tmp_path / "one", variants=("kl_bce",))).summary)
    assert single.query("model == 'teacher'")["variant"].tolist() == ["kl_bce"]  # a lone run keeps its name


def test_best_against_control_picks_the_highest_mean_and_reads_the_test_frame(tmp_path: Path):
    cmp = compare(fabricate(tmp_path))
    best = best_against_control(cmp.summary, cmp.tests).iloc[0]
    test = cmp.tests.query("a == 'kl_l2_bce' and b == 'bce' and model == 'student' and metric == 'f1_macro'")
    assert (best["variant"], best["pairs"], best["n"], best["control_n"]) == ("kl_l2_bce", 4, 4, 4)
    assert best["mean"] == pytest.approx(np.mean(STUDENT["kl_l2_bce"]))
    assert best["control_mean"] == pytest.approx(np.mean(STUDENT["bce"]))
    for key in ("mean_diff", "diff_ci_low", "diff_ci_high", "p_ttest", "p_ttest_holm"):
        assert best[key] == pytest.approx(test[key].iloc[0])
