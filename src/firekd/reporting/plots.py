"""Figures. Every figure has a title, axis labels and a legend where colours mean something;
functions return the figure and the caller saves it (recipes do the file I/O)."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: E402

from firekd import LABELS  # noqa: E402
from firekd.reporting.tables import model_label, model_labels  # noqa: E402

plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11,
                     "legend.fontsize": 9, "figure.dpi": 100})


def training_curves(history: list[dict], title: str):
    """Left: weighted train/val loss and every raw train term; right: validation F1."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss (weighted)")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="val loss (weighted)")
    terms = [k for k in history[0] if k.startswith("train_") and k != "train_loss"]
    for key in terms:
        ax_loss.plot(epochs, [r[key] for r in history], "--", alpha=0.8, label=f"{key[6:]} (raw, train)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Losses")
    ax_loss.legend()
    for key, style in (("val_f1_macro", "o-"), ("val_f1_fire", "^--"), ("val_f1_smoke", "v--")):
        ax_f1.plot(epochs, [r[key] for r in history], style, label=key[4:].replace("_", " "))
    best = max(history, key=lambda r: r["val_f1_macro"])
    ax_f1.axvline(best["epoch"], color="grey", ls=":", label=f"best (epoch {best['epoch']})")
    ax_f1.set(xlabel="epoch", ylabel="F1 (validation)", title="Validation F1", ylim=(0, 1.02))
    ax_f1.legend()
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# Label combinations (none / fire / smoke / both): colour-blind-safe, grey for "none".
COMBO_STYLE = {"none": ("#9e9e9e", "o"), "fire": ("#d55e00", "^"), "smoke": ("#0072b2", "s"),
               "both": ("#cc79a7", "D")}
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def embedding_scatter(points: np.ndarray, combos: list[str] | np.ndarray, title: str, method: str):
    """2-D projection coloured and shaped by label combination, with counts in the legend."""
    combos = np.asarray(combos)
    name = METHOD_NAMES.get(method, method)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for combo, (colour, marker) in COMBO_STYLE.items():
        mask = combos == combo
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=18, c=colour, marker=marker, alpha=0.75,
                       edgecolors="none", label=f"{combo} ({int(mask.sum())})")
    ax.set(xlabel=f"{name} 1", ylabel=f"{name} 2", title=title)
    ax.set_xticks([])
    ax.set_yticks([])  # projection coordinates carry no units
    ax.legend(title="label combination", loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig


def pr_curves(models: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str):
    """Precision-recall per label (one panel each) for ``{model: (y_true, y_score, thresholds)}``;
    the dot marks each model's operating point at its validation-tuned threshold."""
    fig, axes = plt.subplots(1, len(LABELS), figsize=(11, 5.4), squeeze=False, layout="constrained")
    for k, (ax, label) in enumerate(zip(axes[0], LABELS, strict=True)):
        prevalence = None
        for i, (model, (y_true, y_score, thr)) in enumerate(models.items()):
            t, s = np.asarray(y_true)[:, k], np.asarray(y_score)[:, k]
            prevalence = t.mean()
            if not t.any():
                continue
            precision, recall, _ = precision_recall_curve(t, s)
            colour = f"C{i}"
            ap = average_precision_score(t, s)
            ax.step(recall, precision, where="post", color=colour, label=f"{model} (AP {ap:.3f})")
            pred = s >= thr[k]
            tp = (pred & (t == 1)).sum()
            ax.plot(tp / max(t.sum(), 1), tp / max(pred.sum(), 1), "o", color=colour, ms=7,
                    markeredgecolor="black")
        if prevalence is not None:
            ax.axhline(prevalence, color="grey", ls=":", label=f"chance ({prevalence:.2f})")
        ax.set(xlabel="recall", ylabel="precision", title=f"{label}", xlim=(0, 1.01), ylim=(0, 1.03))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)  # below: curves stay visible
    fig.suptitle(f"{title}\n(dot: operating point at the validation-tuned threshold)")
    return fig


def confusion_matrices(counts: dict[str, dict[str, float]], title: str):
    """A 2x2 matrix per model (rows) and label (columns) from ``tn_/fp_/fn_/tp_<label>`` counts;
    cells show the count and the share of the true class."""
    models = list(counts)
    fig, axes = plt.subplots(len(models), len(LABELS), figsize=(4.2 * len(LABELS), 3.6 * len(models)),
                             squeeze=False, layout="constrained")
    for row, model in enumerate(models):
        for col, label in enumerate(LABELS):
            m = np.array([[counts[model][f"tn_{label}"], counts[model][f"fp_{label}"]],
                          [counts[model][f"fn_{label}"], counts[model][f"tp_{label}"]]], dtype=float)
            _matrix(axes[row][col], m, label, f"{model}: {label}")
    fig.suptitle(f"{title}\n(at the validation-tuned thresholds; % of the true class)")
    return fig


def _matrix(ax, m: np.ndarray, label: str, title: str) -> None:
    share = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(m[i, j])}\n{100 * share[i, j]:.0f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=11)
    ticks = [f"no {label}", label]
    ax.set_xticks([0, 1], ticks)
    ax.set_yticks([0, 1], ticks)
    ax.set(xlabel="predicted", ylabel="true", title=title)


def ci_bars(table, metrics: list[str], title: str):
    """Grouped bars: ``table`` rows (run, variant, model, <metric>_mean, <metric>_ci_low/high); one
    panel per metric, one group per run, one bar per model; error bars = 95% CI across seeds."""
    runs = list(dict.fromkeys(table["run"]))
    one_teacher = "teacher" in table and table["teacher"].nunique() == 1 and "variant" in table
    names = dict(zip(table["run"], table["variant"] if one_teacher else table["run"], strict=True))
    if "n" in table:  # seeds per run: the width of a t-interval depends on it
        seeds = table.groupby("run")["n"].max()
        names = {r: f"{name}\n(n={int(seeds[r])})" for r, name in names.items()}
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(models)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.0, 1.1 * len(runs) * len(metrics) + 3), 4.8),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, model in enumerate(models):
            rows = table[table["model"] == model].set_index("run").reindex(runs)
            x = np.arange(len(runs)) + (i - (len(models) - 1) / 2) * width
            _bars_with_ci(ax, x, rows, metric, width, model, f"C{i}")
        ax.set_xticks(np.arange(len(runs)), [names[r] for r in runs], rotation=25, ha="right")
        label = metric.replace("f1_", "F1 ")
        ax.set(ylabel=f"{label} (test)", title=label, ylim=(0, 1.05),
               xlabel="loss variant" if one_teacher else "run (teacher_variant)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="model", loc="upper left", bbox_to_anchor=(1.0, 0.9))
    fig.suptitle(f"{title}\n(bars: mean over seeds; error bars: 95% t-interval, none when n < 2)")
    fig.tight_layout()
    return fig


def _bars_with_ci(ax, x: np.ndarray, rows, metric: str, width: float, model: str, colour: str) -> None:
    mean = rows[f"{metric}_mean"].to_numpy(dtype=float)
    low = rows[f"{metric}_ci_low"].to_numpy(dtype=float)
    high = rows[f"{metric}_ci_high"].to_numpy(dtype=float)
    ax.bar(x, np.nan_to_num(mean), width, label=model, color=colour)
    has_ci = np.isfinite(low) & np.isfinite(high)  # no bar for n < 2 rather than a fake zero-width one
    ax.errorbar(x[has_ci], mean[has_ci], yerr=[mean[has_ci] - low[has_ci], high[has_ci] - mean[has_ci]],
                fmt="none", ecolor="black", capsize=4, lw=1.2)


# Model kind -> marker; the teacher is drawn once per teacher, in black.
MODEL_MARKERS = {"teacher": "*", "student": "o", "student_quantized": "s", "student_pruned": "^"}


def f1_latency(table, title: str, metric: str = "f1_macro"):
    """The deployment trade-off: ``metric`` (mean over seeds, 95% CI bars) against CPU latency at
    batch 1 (``latency_ms_b1``), one panel per teacher, a point per model and loss variant (marker:
    model, colour: variant). Rows without both numbers are left out; None when no row has them."""
    if "latency_ms_b1" not in table:
        return None
    rows = table[table[f"{metric}_mean"].notna() & table["latency_ms_b1"].notna()]
    if rows.empty:
        return None
    teachers = list(dict.fromkeys(rows["teacher"]))
    variants = list(dict.fromkeys(rows.loc[rows["model"] != "teacher", "variant"]))
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(teachers), figsize=(5.6 * len(teachers) + 2.2, 4.6), squeeze=False,
                             sharey=True)
    for ax, teacher in zip(axes[0], teachers, strict=True):
        for row in rows[rows["teacher"] == teacher].itertuples():
            _latency_point(ax, row, metric, "black" if row.model == "teacher" else colours[row.variant])
        span = rows["latency_ms_b1"]
        if span.max() > 10 * span.min():  # teachers are often 10-100x slower than the student
            ax.set_xscale("log")
        ax.set(xlabel="CPU latency, batch 1 (ms, median)", title=teacher)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"{metric.replace('f1_', 'F1 ')} (test)")
    labels = dict(zip(rows["model"], model_labels(rows), strict=True))  # marks uncompiled int8
    handles = [plt.Line2D([], [], ls="", marker=MODEL_MARKERS.get(m, "D"), color="grey", ms=8,
                          label=labels[m]) for m in dict.fromkeys(rows["model"])]
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, ms=8, label=v) for v, c in colours.items()]
    fig.legend(handles=handles, title="model / loss variant", loc="upper left", bbox_to_anchor=(1.0, 0.9))
    fig.suptitle(f"{title}\n(up and left is better; bars: 95% t-interval over seeds, none when n < 2)")
    fig.tight_layout()
    return fig


def _latency_point(ax, row, metric: str, colour: str) -> None:
    mean = getattr(row, f"{metric}_mean")
    low, high = getattr(row, f"{metric}_ci_low"), getattr(row, f"{metric}_ci_high")
    yerr = [[mean - low], [high - mean]] if np.isfinite(low) and np.isfinite(high) else None
    ax.errorbar(row.latency_ms_b1, mean, yerr=yerr, fmt=MODEL_MARKERS.get(row.model, "D"), color=colour,
                ms=12 if row.model == "teacher" else 8, capsize=3, markeredgecolor="black", lw=1)
    if model_label(row.model, getattr(row, "uncompiled_int8", None)) != row.model:
        ax.annotate("int8 uncompiled", (row.latency_ms_b1, mean), textcoords="offset points", xytext=(6, -12),
                    fontsize=8, color=colour)
