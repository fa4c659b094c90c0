"""The report's "where teacher and student disagree" section: per distilled run, the test images of
its first seed on which the RGB+IR teacher and the RGB student decide differently, counted per
label, and Grad-CAM maps of both on a few of them, side by side: does the student look where the
IR-seeing teacher does?"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from firekd import LABELS
from firekd.data.csv import ColumnNames, read_records
from firekd.data.images import IRSpec, decode_sample
from firekd.data.transforms import PairedTransform
from firekd.errors import FirekdError
from firekd.io import save_figure
from firekd.reporting import document as doc
from firekd.rundir import CHECKPOINTS, predictions_file

log = logging.getLogger(__name__)

SHOWN = 4  # images per run


def disagreements(teacher: pd.DataFrame, student: pd.DataFrame) -> pd.DataFrame:
    """Test rows (CSV line ``row``) with both models' probabilities and a ``<label>_differs`` flag."""
    both = teacher.merge(student, on="row", suffixes=("_teacher", "_student"))
    for label in LABELS:
        both[f"{label}_differs"] = both[f"{label}_pred_teacher"] != both[f"{label}_pred_student"]
    return both


def disagreement_section(output: Path, run, settings: dict, folder: Path, rel) -> list:
    """Blocks for ``run`` (a `compare.Run`); a paragraph saying why when it cannot be drawn."""
    seeds = run.results.get("seeds", [])
    if not seeds or "teacher" not in run.results:
        return []
    seed = seeds[0]
    metrics, models = (output / kind / run.name / f"seed_{seed}" for kind in ("metrics", "models"))
    paths = [metrics / predictions_file(m) for m in ("teacher", "student")]
    if not all(p.exists() for p in paths):
        return []
    both = disagreements(*(pd.read_csv(p) for p in paths))
    counts = {label: int(both[f"{label}_differs"].sum()) for label in LABELS}
    blocks: list = [doc.Heading(f"Where teacher and student disagree: {run.name}, seed {seed}", 3),
                    doc.Para(f"Of {len(both)} test images, the teacher and the student decide differently on "
                             + " and on ".join(f"{label} for {n}" for label, n in counts.items()) + ".")]
    label = max(counts, key=counts.get)
    chosen = both[both[f"{label}_differs"]].head(SHOWN)
    if chosen.empty:
        return blocks
    try:
        figure = _cam_figure(models, settings, chosen, label, f"{run.name}, seed {seed}")
    except (FirekdError, OSError) as exc:  # a moved dataset, a transformer teacher: say so, go on
        blocks.append(doc.Para(f"No class-activation maps: {exc}"))
        return blocks
    path = folder / f"disagreement_{run.name}.png"
    save_figure(path, figure)
    blocks.append(doc.Figure(rel(path), f"Grad-CAM for {label} on test images where teacher and student "
                                        f"disagree ({run.name}, seed {seed}); the teacher also sees IR"))
    return blocks


def _cam_figure(models: Path, settings: dict, chosen: pd.DataFrame, label: str, title: str):
    from firekd.checkpoints import load_model
    from firekd.deploy.cam import class_activation_maps
    from firekd.reporting.deploy_figures import cam_grid

    teacher, teacher_meta = load_model(models / CHECKPOINTS["teacher"], kind="teacher")
    student, _ = load_model(models / CHECKPOINTS["student"], kind="student")
    data = teacher_meta.get("data", {})
    size = int(data.get("img_size") or settings.get("img_size") or 224)
    spec = IRSpec(kind=data.get("ir_kind"), channels=int(data.get("ir_channels") or 0),
                  value_range=tuple(data["ir_range"]) if data.get("ir_range") else None)
    columns = ColumnNames(**(settings.get("columns") or {}))
    records = read_records(settings["csv"], base_path=settings.get("base_path"), columns=columns,
                           require_ir=spec.kind is not None).set_index("row")
    pairs = [decode_sample(records.at[r, "rgb_path"], records.at[r, "ir_path"], size, spec)
             for r in chosen["row"]]  # (rgb (3,S,S), ir (C,S,S)) each
    rgb_u8 = torch.from_numpy(np.stack([p[0] for p in pairs]))
    rgb, ir = PairedTransform(size, train=False, ir_max=spec.max_value)(
        rgb_u8, torch.from_numpy(np.stack([p[1] for p in pairs])))
    maps = {"teacher": list(class_activation_maps(teacher, rgb, ir if spec.kind else None, label)),
            "student": list(class_activation_maps(student, rgb, None, label))}
    probs = {"teacher": chosen[["fire_prob_teacher", "smoke_prob_teacher"]].to_numpy(),
             "student": chosen[["fire_prob_student", "smoke_prob_student"]].to_numpy()}
    names = [Path(records.at[r, "rgb_path"]).name for r in chosen["row"]]
    return cam_grid([p[0].transpose(1, 2, 0) for p in pairs], names, maps, probs, label,
                    f"Teacher and student disagree on {label}: {title}")
