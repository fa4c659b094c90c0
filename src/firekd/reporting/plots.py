"""Figures: training curves (more in later modules). Every figure has a title and axis labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
