"""Figures of `firekd predict`: the contact sheet of frames, the video timeline with alarm
segments, and class-activation maps side by side. Functions return the figure; recipes save it."""

from __future__ import annotations

import numpy as np

from firekd import LABELS
from firekd.reporting.plots import plt

LABEL_COLOURS = {"fire": "tab:red", "smoke": "tab:gray"}


def contact_sheet(rows: list[tuple[str, list[dict]]], title: str):
    """One row of thumbnails per (row title, items); an item: thumb (h,w,3), name, probs (2,)."""
    rows = [(t, items) for t, items in rows if items]
    cols = max((len(items) for _, items in rows), default=1)
    fig, axes = plt.subplots(max(1, len(rows)), cols, figsize=(1.9 * cols, 2.3 * max(1, len(rows))),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (row_title, items) in enumerate(rows):
        for c, item in enumerate(items):
            ax = axes[r, c]
            ax.imshow(item["thumb"])
            fire, smoke = item["probs"]
            ax.set_title(f"{_short(item['name'])}\nfire {fire:.2f} smoke {smoke:.2f}", fontsize=7)
        axes[r, 0].text(-0.08, 0.5, row_title, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _short(name: str, limit: int = 22) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= limit else "..." + name[-(limit - 3):]


def timeline(time_s: np.ndarray, probs: np.ndarray, thresholds: np.ndarray,
             alarms: dict[str, list[tuple[float, float]]], title: str):
    """Both probabilities over video time, their thresholds (dashed) and alarm segments (shaded)."""
    fig, axes = plt.subplots(len(LABELS), 1, figsize=(11, 4.8), sharex=True)
    for k, (ax, label) in enumerate(zip(axes, LABELS, strict=True)):
        colour = LABEL_COLOURS[label]
        ax.plot(time_s, probs[:, k], color=colour, lw=1, label=f"P({label})")
        ax.axhline(thresholds[k], color="k", ls="--", lw=0.8, label=f"threshold {thresholds[k]:.2f}")
        for n, (start, end) in enumerate(alarms.get(label, [])):
            ax.axvspan(start, end, color=colour, alpha=0.2, label="alarm" if n == 0 else None)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"P({label})")
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("video time (s)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def cam_grid(images: list[np.ndarray], names: list[str], maps: dict[str, list[np.ndarray]],
             probs: dict[str, list[np.ndarray]], label: str, title: str):
    """Rows: frames; columns: the frame, then each model's CAM overlaid (maps (H,W) in [0, 1])."""
    models = list(maps)
    size = (2.6 * (1 + len(models)), 2.6 * len(images))
    fig, axes = plt.subplots(len(images), 1 + len(models), figsize=size, squeeze=False)
    k = LABELS.index(label)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(_short(names[r]), fontsize=8)
        for c, model in enumerate(models, start=1):
            axes[r, c].imshow(image)
            axes[r, c].imshow(maps[model][r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            flat = not np.any(maps[model][r] > 0)  # e.g. a 1x1 last map: stride 32 at 32 px
            axes[r, c].set_title(f"{model}: P({label}) {probs[model][r][k]:.2f}"
                                 + ("\n(flat map: too small an input)" if flat else ""), fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
