"""`firekd report`: report.md and report.html over an output tree: the answer first (per teacher,
the best KD student against the `bce` control, and F1 against CPU latency for every model), then
data, configuration, results, statistical tests and the per-seed figures (linked relatively, or
embedded in the HTML)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from firekd import LABELS
from firekd.data.csv import ColumnNames, read_records
from firekd.data.splits import SplitDecision
from firekd.errors import FirekdError
from firekd.io import read_json, save_figure, write_text
from firekd.kd.variants import CONTROL, SELF_KD, uses_teacher
from firekd.metrics.slices import SLICE_METRICS, parse_slice_key
from firekd.recipes.checks import ADVICE, val_f1, weak_teacher
from firekd.recipes.compare import (
    IR_KIND,
    Comparison,
    Run,
    compare,
    mcnemar_summary,
    tests_display,
    write_comparison,
)
from firekd.recipes.data import split_summary
from firekd.recipes.disagreement import disagreement_section
from firekd.reporting import document as doc
from firekd.reporting import plots
from firekd.reporting.tables import best_against_control, display_table, shared_teacher_rows
from firekd.rundir import DATA_SUMMARY, SPLIT, STUDENT_LOG, TEACHER_LOG, RunDir

log = logging.getLogger(__name__)
# (file, caption) in reading order; a figure that a run lacks (no teacher in `bce`) is skipped
SEED_FIGURES = (
    ("teacher_training_curves.png", "Teacher training: loss terms and validation F1 per epoch"),
    ("student_training_curves.png", "Student training: loss terms and validation F1 per epoch"),
    ("pr_curves.png", "Precision-recall curves on test"),
    ("confusion_matrices.png", "Confusion matrices on test"),
    ("tsne_teacher.png", "t-SNE of the teacher's test embeddings"),
    ("tsne_student.png", "t-SNE of the student's test embeddings"),
    ("umap_teacher.png", "UMAP of the teacher's test embeddings"),
    ("umap_student.png", "UMAP of the student's test embeddings"),
)


def result_settings() -> tuple[str, ...]:
    """Every setting that changes a result (the KEY fields, and the DATA fields, which change the data
    a model sees, that have a flag; see `firekd.options`), by flag name, data settings first: the
    configuration table cannot omit one."""
    from dataclasses import fields

    from firekd.config import STAGES, DataConfig, flag_name
    from firekd.options import DATA, KEY, kind_of

    stages = (DataConfig, *(cls for name, cls in STAGES.items() if name != "execution"))
    return tuple(flag_name(f) for cls in stages for f in fields(cls)
                 if kind_of(f) in (KEY, DATA) and f.metadata.get("cli", True))


SHOWN_SETTINGS = result_settings()


def write_report(output: str | Path, teacher: str | None = None, *, embed: bool = False,
                 out_dir: str | Path | None = None, comparison: Comparison | None = None) -> dict[str, Path]:
    """Build the report (from ``comparison`` when the caller has one); returns the paths written
    (report.md, report.html and the comparison files)."""
    output = Path(output)
    cmp = comparison if comparison is not None else compare(output, teacher)
    folder = Path(out_dir) if out_dir else output / "report" / (cmp.runs[0].teacher if teacher else "all")
    files = write_comparison(cmp, folder)
    teachers = ", ".join(dict.fromkeys(r.teacher for r in cmp.runs))
    figure = plots.f1_latency(shared_teacher_rows(cmp.summary), f"F1 macro against CPU latency ({teachers})")
    if figure is not None:
        files["f1_latency"] = folder / "f1_latency.png"
        save_figure(files["f1_latency"], figure)
    blocks = build_blocks(output, cmp, folder, files)
    title = f"firekd report: {output.resolve().name}" + (f" ({teacher})" if teacher else "")
    files["markdown"] = folder / "report.md"
    files["html"] = folder / "report.html"
    write_text(files["markdown"], doc.to_markdown(blocks))
    write_text(files["html"], doc.to_html(blocks, title, base=folder if embed else None))
    return files


def build_blocks(output: Path, cmp: Comparison, folder: Path, files: dict[str, Path]) -> list:
    rel = lambda p: Path(os.path.relpath(p, folder)).as_posix()  # noqa: E731
    blocks: list = [doc.Heading(f"firekd report: {output.resolve().name}", 1), doc.Para(_overview(cmp))]
    blocks += _answer_section(cmp, rel(files["f1_latency"]) if "f1_latency" in files else None)
    blocks += _data_section(cmp.runs)
    blocks += _config_section(cmp.runs)
    blocks += _results_section(cmp, rel(files["bars"]), rel(files["table"]))
    if "slices" in files:
        blocks += _slices_section(cmp, rel(files["slices"]))
    blocks += _tests_section(cmp, rel(files["tests"]), rel(files["mcnemar"]))
    for run in cmp.runs:
        blocks += _run_section(output, run, rel)
        blocks += disagreement_section(output, run, _settings(run), folder, rel)
    blocks += _environment_section(cmp.runs)
    return blocks


def _overview(cmp: Comparison) -> str:
    seeds = sorted({s for r in cmp.runs for s in r.results.get("seeds", [])})
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Generated {when}. {len(cmp.runs)} run(s): teachers "
            f"{', '.join(dict.fromkeys(r.teacher for r in cmp.runs))}; loss variants "
            f"{', '.join(dict.fromkeys(r.variant for r in cmp.runs))}; seeds {', '.join(map(str, seeds))}. "
            "All metrics are on the test split, at per-label thresholds tuned on validation.")


# --- the answer ----------------------------------------------------------------------------------

def distillation_answer(cmp: Comparison) -> list[str]:
    """One sentence per teacher: its best KD student against the best no-teacher baseline (the
    `bce` control or `self_kd`), with the paired test."""
    return [_answer(row) for row in best_against_control(cmp.summary, cmp.tests).itertuples()]


def ir_lines(cmp: Comparison, model: str = "student") -> list[str]:
    """One line per (architecture, KD variant) of a study with RGB+IR and RGB-only teachers."""
    tests = cmp.tests
    if tests.empty or "kind" not in tests:
        return []
    ir = tests[(tests["kind"] == IR_KIND) & (tests["model"] == model)]
    if ir.empty:
        return []
    lines = []
    for (teacher, variant), rows in ir.groupby(["teacher", "variant"], sort=False):
        overall = rows[rows["metric"] == "f1_macro"]
        text = f"{teacher}, `{variant}`: F1 macro " + (_diff_p(overall.iloc[0]) if len(overall) else "n/a")
        parts = []
        for row in rows.to_dict("records"):
            key = parse_slice_key(row["metric"])
            if key and key[0].startswith("recall_"):
                parts.append(f"{key[0].replace('_', ' ')} [{key[1]} = {key[2]}] {_diff_p(row)}")
        if parts:
            text += "; per slice: " + "; ".join(parts)
        lines.append(text + ".")
    return lines


def _diff_p(row) -> str:
    """``+0.0123 [95% CI -0.01, +0.03], p 0.04 (Holm 0.08), 5 seeds`` from a tests row."""
    get = row.get if isinstance(row, dict) else row.__getitem__  # a dict or a frame row
    diff = get("mean_diff")
    if diff is None or pd.isna(diff):
        return "n/a (no seed with both)"
    text = f"{diff:+.4f}"
    low, high = get("diff_ci_low"), get("diff_ci_high")
    if low is not None and not pd.isna(low):
        text += f" [95% CI {low:+.4f}, {high:+.4f}]"
    p, holm = get("p_ttest"), get("p_ttest_holm")
    text += ", p n/a" if p is None or pd.isna(p) else f", p {p:.3g} (Holm {holm:.3g})"
    return text + f", {int(get('n'))} seed(s)"


def teacher_check_lines(cmp: Comparison) -> list[str]:
    """Per teacher: in how many seeds its validation F1 macro is not above the control's."""
    lines = []
    controls = {r.teacher: r for r in cmp.runs if r.variant == CONTROL}
    for teacher in dict.fromkeys(r.teacher for r in cmp.runs if uses_teacher(r.variant)):
        control = controls.get(teacher)
        kd = next(r for r in cmp.runs if r.teacher == teacher and uses_teacher(r.variant))
        if control is None:
            lines.append(f"{teacher}: no `{CONTROL}` control run, so the teacher's validation F1 has "
                         "nothing to be compared with.")
            continue
        pairs = {}
        for seed in kd.results.get("seeds", []):
            t = val_f1(_read(kd.folder / f"seed_{seed}" / TEACHER_LOG))
            c = val_f1(_read(control.folder / f"seed_{seed}" / STUDENT_LOG))
            if t is not None and c is not None:
                pairs[seed] = (t, c)
        if not pairs:
            lines.append(f"{teacher}: no seed records both validation F1s (an untrained teacher has none).")
            continue
        weak = [s for s, (t, c) in pairs.items() if weak_teacher(t, c)]
        numbers = "; ".join(f"seed {s}: {t:.4f} vs {c:.4f}" for s, (t, c) in pairs.items())
        if weak:
            lines.append(f"{teacher}: **the teacher is not better than the `{CONTROL}` control on validation "
                         f"in {len(weak)} of {len(pairs)} seed(s)** ({numbers}); distilling from it is "
                         f"unlikely to beat the control: {ADVICE}.")
        else:
            lines.append(f"{teacher}: the teacher is better than the `{CONTROL}` control on validation in "
                         f"every seed ({numbers}).")
    return lines


def _read(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _answer_section(cmp: Comparison, figure: str | None) -> list:
    best = best_against_control(cmp.summary, cmp.tests)
    blocks: list = [
        doc.Heading("What distillation buys"),
        doc.Para("Per teacher, the KD variant whose student has the best mean test F1 macro, against the "
                 f"best no-teacher baseline run: the `{CONTROL}` control (the same student trained on the "
                 f"labels alone) or `{SELF_KD}` (a fresh student distilled, like `kl_bce`, from that control "
                 "on the labelled + unlabelled pairs), whichever has the higher mean. The "
                 "difference is paired by seed (mean of the per-seed differences over the seeds both have) "
                 "with its 95% t-interval; p is the two-sided paired t-test's, Holm-adjusted over all "
                 "comparisons of that teacher, which also covers picking the best of several variants."
                 + (" The loss variants of a (teacher, seed) trained in lockstep on the same batches, one "
                    "teacher pass per batch, so paired by seed they differ only in their loss."
                    if all(_settings(r).get("lockstep") == "on" for r in cmp.runs) else "")),
        doc.Bullets(distillation_answer(cmp)),
    ]
    ir = ir_lines(cmp)
    if ir:
        blocks += [doc.Para("What IR adds: per architecture and KD variant, the student distilled from the "
                            "RGB+IR teacher minus the student distilled from the RGB-only teacher, paired by "
                            "seed (mean difference [95% t-interval], paired t-test p with Holm over the KD "
                            "variants in brackets); per slice the recall per label (all slice metrics are "
                            "in the tests table):"),
                   doc.Bullets(ir)]
    checks = teacher_check_lines(cmp)
    if checks:
        blocks += [doc.Para("Is each teacher worth distilling from? Its best validation F1 macro against "
                            f"the `{CONTROL}` control's, per seed (the same validation set):"),
                   doc.Bullets(checks)]
    if not best.empty:
        blocks.append(doc.Table(_answer_table(best), "best KD student against the best no-teacher baseline, "
                                                     "per teacher"))
    if figure is None:
        blocks.append(doc.Para("No figure of F1 against latency: no model has a CPU latency "
                               "(`latency_ms_b1`) in its results."))
    else:
        blocks.append(doc.Figure(figure, "Test F1 macro against CPU latency at batch 1 for every model "
                                         "(teacher once per teacher; student, quantized and pruned "
                                         "student per loss variant): the deployment trade-off"))
    return blocks


def _answer(row) -> str:
    head = f"{row.teacher}: "
    name = "control" if row.baseline == CONTROL else "baseline"
    if pd.isna(row.variant):  # pandas stores the missing name as NaN
        return head + f"no KD variant has student results (only the `{row.baseline}` {name})."
    best = f"best KD student `{row.variant}`, F1 macro {row.mean:.4f} (n = {row.n})"
    if row.control_n == 0:
        return head + best + f"; no `{CONTROL}` control run, so what distillation adds is not measured " \
                             f"(train the `{CONTROL}` variant too, and `{SELF_KD}`, the no-teacher " \
                             "semi-supervised baseline)."
    versus = f"{head}{best} against {row.control_mean:.4f} for the `{row.baseline}` {name}"
    if row.pairs == 0:
        return versus + ": no seed in common, no paired comparison."
    diff = f"difference {row.mean_diff:+.4f}"
    if pd.notna(row.diff_ci_low):
        diff += f" [95% CI {row.diff_ci_low:+.4f}, {row.diff_ci_high:+.4f}]"
    if pd.isna(row.p_ttest):
        return f"{versus}: {diff} over {row.pairs} seed(s); no t-test is possible ({row.note or 'n/a'})."
    test = f"paired t-test p = {row.p_ttest:.3g} (Holm {row.p_ttest_holm:.3g}), {row.pairs} seeds"
    if row.p_ttest_holm < 0.05:
        verdict = "distillation helps" if row.mean_diff > 0 else f"the `{row.baseline}` {name} is better"
        verdict += ", significant at 0.05 after Holm"
    else:
        verdict = "not significant at 0.05 after Holm (with few seeds a large p is no evidence of no effect)"
    return f"{versus}: {diff}, {test}: {verdict}."


def _answer_table(best: pd.DataFrame) -> pd.DataFrame:
    fmt = lambda v, spec: "n/a" if pd.isna(v) else format(v, spec)  # noqa: E731
    return pd.DataFrame({
        "teacher": best["teacher"], "best KD variant": best["variant"].fillna("none"),
        "F1 macro (best)": [fmt(v, ".4f") for v in best["mean"]],
        "F1 macro (baseline)": [fmt(v, ".4f") for v in best["control_mean"]],
        "difference [95% CI]": [
            "n/a" if pd.isna(d) else f"{d:+.4f}" + ("" if pd.isna(lo) else f" [{lo:+.4f}, {hi:+.4f}]")
            for d, lo, hi in zip(best["mean_diff"], best["diff_ci_low"], best["diff_ci_high"], strict=True)],
        "t-test p (Holm)": [fmt(p, ".3g") + ("" if pd.isna(h) else f" ({h:.3g})")
                            for p, h in zip(best["p_ttest"], best["p_ttest_holm"], strict=True)],
        "paired seeds": best["pairs"],
        "best no-teacher baseline": [b if n else "none" for b, n in zip(best["baseline"], best["control_n"],
                                                                         strict=True)],
    })


# --- data and configuration --------------------------------------------------------------------

def _data_section(runs: list[Run]) -> list:
    blocks: list = [doc.Heading("Data"), doc.Para(
        "Samples per split and label combination (none / fire only / smoke only / both).")]
    tables: dict[str, list[str]] = {}
    frames: dict[str, pd.DataFrame] = {}
    for run in runs:
        frame = data_summary(run)
        key = frame.to_csv(index=False) if frame is not None else ""
        tables.setdefault(key, []).append(run.name)
        frames[key] = frame
    for key, names in tables.items():
        caption = f"runs: {', '.join(names)}" if len(tables) > 1 else f"CSV: `{_csv_of(runs[0])}`"
        if frames[key] is None:
            blocks.append(doc.Para(f"No data summary for {', '.join(names)}: neither data_summary.csv "
                                   "nor the training CSV could be read."))
        else:
            blocks.append(doc.Table(counts_display(frames[key]), caption))
    blocks += _split_sentences(runs)
    blocks += _resampled_sentences(runs)
    return blocks


def counts_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers and "n/a" where a count does not apply (the label columns of the
    unlabelled pairs), not ``15.0`` and ``nan`` as a CSV read back gives them."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]):
            out[column] = [_count(v) for v in out[column]]
    return out


def _resampled_sentences(runs: list[Run]) -> list:
    """How the seeds' split and labels were drawn (--resample_split, --n_labelled/--label_fraction)."""
    by_text: dict[str, list[str]] = {}
    for run in runs:
        text = _config(run).get("resampled")
        if text:
            by_text.setdefault(text, []).append(run.name)
    if not by_text:
        return []
    if len(by_text) == 1:
        return [doc.Para(f"Split and labels per seed: {next(iter(by_text))}.")]
    return [doc.Para(f"Split and labels per seed: {t} (runs: {', '.join(n)}).") for t, n in by_text.items()]


def _split_sentences(runs: list[Run]) -> list:
    """How each run was split and why, one sentence per distinct decision (none for runs made
    before firekd recorded it)."""
    by_sentence: dict[str, list[str]] = {}
    for run in runs:
        recorded = _config(run).get("split")
        if isinstance(recorded, dict) and recorded.get("method"):
            by_sentence.setdefault(SplitDecision.from_dict(recorded).sentence(), []).append(run.name)
    if len(by_sentence) == 1:
        return [doc.Para(_capital(next(iter(by_sentence))) + ".")]
    return [doc.Para(f"{_capital(s)} (runs: {', '.join(names)}).") for s, names in by_sentence.items()]


def _capital(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def data_summary(run: Run) -> pd.DataFrame | None:
    """The run's recorded data_summary.csv, else counted from split.csv and the training CSV."""
    recorded = run.folder / DATA_SUMMARY
    if recorded.exists():
        return pd.read_csv(recorded)
    try:
        data = _config(run).get("resolved", {}).get("data", {})
        records = read_records(data["csv"], base_path=data.get("base_path"),
                               columns=ColumnNames(**data.get("columns", {})), require_ir=False)
        split = pd.read_csv(run.folder / SPLIT).set_index("row")["split"]
        records = records[records["row"].isin(split.index)]
        return split_summary(records["fire"], records["smoke"], split.loc[records["row"]]).reset_index()
    except (FirekdError, KeyError, OSError, TypeError, ValueError) as exc:
        log.warning("%s: no data summary (%s)", run.folder, exc)
        return None


def _config(run: Run) -> dict:
    path = run.folder / "config.json"
    return read_json(path) if path.exists() else {}


def _csv_of(run: Run) -> str:
    return str(_settings(run).get("csv", "unknown"))


def _settings(run: Run) -> dict:
    """The run's settings by flag name (config.json's "flags"; firekd < 0.2 recorded them flat,
    with the data settings under "data")."""
    config = _config(run)
    if "flags" in config:
        return config["flags"]
    old = dict(config.get("settings", {}))
    return {**old.pop("data", {}), **old}


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "loss_weights":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else "none" if v is None else json.dumps(v)
    return out


def _shown(flags: dict) -> dict:
    """A run's settings as the table shows them: a teacher started from --teacher_weights is not
    'pretrained: false'."""
    flags = dict(flags)
    if flags.get("teacher_weights") and "pretrained" in flags:
        flags["pretrained"] = f"from --teacher_weights ({Path(flags['teacher_weights']).name})"
    return flags


def _config_section(runs: list[Run]) -> list:
    settings = {r.name: _flat(_shown(_settings(r))) for r in runs}
    keys = [k for k in SHOWN_SETTINGS if any(k in s for s in settings.values())]
    # a setting a run does not record (the bce control has no teacher settings) is not a difference
    shared = [k for k in keys if len({s[k] for s in settings.values() if k in s}) == 1]
    differ = [k for k in keys if k not in shared]
    value = {k: next(s[k] for s in settings.values() if k in s) for k in shared}
    blocks: list = [doc.Heading("Configuration"),
                    doc.Table(pd.DataFrame({"setting": shared, "value": [value[k] for k in shared]}),
                              "settings shared by every run that has them (full settings: "
                              "metrics/<run>/config.json)")]
    if differ:
        frame = pd.DataFrame([{"run": n, **{k: s.get(k, "") for k in differ}} for n, s in settings.items()])
        blocks.append(doc.Table(frame, "settings that differ between runs"))
    return blocks


# --- results and tests ---------------------------------------------------------------------------

def _results_section(cmp: Comparison, bars: str, table_csv: str) -> list:
    return [
        doc.Heading("Results"),
        doc.Para("Mean ± sample standard deviation over seeds; 95% CI: t-interval over seeds (needs "
                 "n >= 2). Every variant of a seed distils from the same teacher, so the teacher has one "
                 "row per teacher (several only where its runs differ). Numbers behind the table, one "
                 f"row per run and model: [{table_csv}]({table_csv})."),
        doc.Table(display_table(cmp.summary)),
        doc.Figure(bars, "F1 on test per run and model: mean over seeds with 95% CI error bars"),
    ]


def _slices_section(cmp: Comparison, slices_csv: str) -> list:
    """Recall, precision and F1 per label on each value of every --slice_col column."""
    frame = cmp.slices
    cell = lambda r, m: _mean_ci(r.get(f"{m}_mean"), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high"))  # noqa: E731
    metrics = [f"{name}_{label}" for label in LABELS for name in SLICE_METRICS]
    table = pd.DataFrame([{
        "run": r["run"], "model": r["model"], "slice": f"{r['column']} = {r['value']}",
        "test samples": _count(r.get("samples")), "seeds": _count(r.get("n")),
        **{m.replace("_", " "): cell(r, m) for m in metrics}} for r in frame.to_dict("records")])
    return [
        doc.Heading("Slices"),
        doc.Para("Per value of each slice column (`--slice_col`): recall, precision and F1 per label on "
                 "the test samples of that value, mean over seeds [95% t-interval]; n/a where a slice has "
                 "no positives (recall) or no predicted positives (precision). The paired tests per slice "
                 "are in the tests table (metric `name[column=value]`). All rows: "
                 f"[{slices_csv}]({slices_csv})."),
        doc.Table(table),
    ]


def _mean_ci(mean, low, high) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    if low is None or pd.isna(low):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _count(value) -> str:
    """A count as an integer (a mean over seeds to one decimal when it is not whole); n/a if none."""
    if value is None or pd.isna(value):
        return "n/a"
    return f"{int(round(value))}" if float(value).is_integer() else f"{value:.1f}"


def _tests_section(cmp: Comparison, tests_csv: str, mcnemar_csv: str) -> list:
    table, notes = tests_display(cmp.tests)
    blocks: list = [
        doc.Heading("Statistical tests"),
        doc.Para("Across seeds, paired by seed: each KD variant (and `self_kd`) against the `bce` control "
                 "(the student trained alone), each KD variant against `self_kd` (when run), then the KD "
                 "variants against each other. Two-sided paired t-test "
                 "(`scipy.stats.ttest_rel`) and Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, exact "
                 "for small n); in brackets the Holm-adjusted p over the comparisons of one teacher, model "
                 "and metric. The difference a-b comes with its 95% t-interval. With few seeds these tests "
                 "have little power: a large p is not evidence of no effect. "
                 f"All rows: [{tests_csv}]({tests_csv})."),
        doc.Table(table),
    ]
    if notes:
        blocks.append(doc.Bullets([f"Note: {n}" for n in notes]))
    blocks += [
        doc.Heading("Teacher vs student, per sample (McNemar)", 3),
        doc.Para("Exact McNemar test per seed and label on the test decisions: a two-sided binomial test "
                 "(p = 0.5) on the discordant samples, b = only the teacher right, c = only the other model "
                 "right (`scipy.stats.binomtest`; exact rather than chi-square because b + c is often "
                 "small). "
                 f"Per seed, not adjusted for multiplicity. All rows: [{mcnemar_csv}]({mcnemar_csv})."),
        doc.Table(mcnemar_summary(cmp.mcnemar)),
    ]
    return blocks


# --- per run -------------------------------------------------------------------------------------

def _run_section(output: Path, run: Run, rel) -> list:
    seeds = run.results.get("seeds", [])
    blocks: list = [doc.Heading(f"Run {run.name}"), doc.Table(_seed_table(run))]
    if not seeds:
        return blocks
    graphs = output / "graphs" / run.name
    shown = seeds[0]
    figures = [(graphs / f"seed_{shown}" / name, caption) for name, caption in SEED_FIGURES]
    figures = [(p, c) for p, c in figures if p.exists()]
    if figures:
        blocks.append(doc.Para(f"Figures of seed {shown}." + (" Other seeds: " + ", ".join(
            f"[seed {s}]({rel(graphs / f'seed_{s}')})" for s in seeds[1:]) + "." if seeds[1:] else "")))
        blocks += [doc.Figure(rel(p), f"{c} ({run.name}, seed {shown})") for p, c in figures]
    return blocks


def _seed_table(run: Run) -> pd.DataFrame:
    rows = []
    folder = RunDir.open(run.folder)
    for seed in folder.matching_seeds()[0]:  # the seeds the aggregate is made of
        for model, m in folder.final_evaluation(seed).items():
            if model == "run" or not isinstance(m, dict):
                continue
            rows.append({"seed": seed, "model": model, "F1 macro": _f(m.get("f1_macro")),
                         "bootstrap 95% CI (test samples)": _ci(m),
                         "F1 fire": _f(m.get("f1_fire")), "F1 smoke": _f(m.get("f1_smoke")),
                         "F1 macro @0.5": _f(m.get("f1_macro@0.5")),
                         "thresholds fire / smoke": f"{_f(m.get('threshold_fire'), 3)} / "
                                                    f"{_f(m.get('threshold_smoke'), 3)}"})
    return pd.DataFrame(rows)


def _f(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(m: dict) -> str:
    low, high = m.get("f1_macro_boot_low"), m.get("f1_macro_boot_high")
    return "n/a" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def _environment_section(runs: list[Run]) -> list:
    path = runs[0].folder / "environment.json"
    if not path.exists():
        return []
    env = read_json(path)
    items = [f"python {env.get('python')}, {env.get('platform')}",
             f"device: {env['gpu']} (CUDA {env.get('cuda')})" if env.get("gpu") else "device: CPU",
             "packages: " + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()),
             f"git commit: `{env.get('git_commit')}`", f"command: `{env.get('command')}`"]
    return [doc.Heading("Environment"), doc.Para(f"Of run {runs[0].name} (each run folder has its own "
                                                  "environment.json)."), doc.Bullets(items)]
