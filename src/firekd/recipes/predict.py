"""`firekd predict`: run any firekd artefact on an image folder, a CSV or a video, and write what a
deployment needs to see: per-frame probabilities and decisions, a contact sheet, and for video the
alarms of a temporal rule (events JSON and a timeline figure). Labelled input also gets the metrics
`firekd evaluate` computes.

Frames stream from the source in batches: memory holds one batch, the per-frame numbers and a
bounded set of thumbnails, whatever the length of the video.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from firekd import LABELS
from firekd.data.csv import ColumnNames
from firekd.data.transforms import PairedTransform
from firekd.deploy.alarms import AlarmEvent, AlarmRule, alarm_events, alarm_states
from firekd.deploy.artefact import Deployed, load_deployed
from firekd.deploy.frames import Frame, InputSource, Skipped, open_source, thumbnail
from firekd.errors import ConfigError, DataError, ModelError
from firekd.io import ensure_writable, save_figure, write_csv, write_json
from firekd.metrics.classification import evaluation_scores
from firekd.metrics.efficiency import cpu_threads

log = logging.getLogger(__name__)

SHOWN_WARNINGS = 10  # skipped frames warned about one by one; the rest are counted


@dataclass(frozen=True)
class PredictRequest:
    model: str
    input: str
    out: str | None = None  # default: predictions/<input stem>
    fps: float | None = None
    thresholds: tuple[float, float] | None = None
    img_size: int | None = None
    batch_size: int = 8
    threads: int | None = None
    rule: AlarmRule = field(default_factory=AlarmRule)
    base_path: str | None = None
    columns: ColumnNames = field(default_factory=ColumnNames)
    top: int = 6  # thumbnails per row of the contact sheet
    compile_int8: bool = True
    progress: bool = True
    cam: bool = False  # class-activation maps of the highest-scoring frames
    cam_label: str = "fire"
    cam_frames: int = 4
    cam_with: str | None = None  # a second model (e.g. the teacher) shown beside the first


@dataclass
class PredictResult:
    table: pd.DataFrame
    events: list[AlarmEvent]
    metrics: dict | None
    skipped: list[Skipped]
    throughput: dict
    files: dict[str, Path]
    deployed: Deployed
    source_kind: str


class Thumbnails:
    """The ``top`` highest-scoring frames per label and a uniform sample (reservoir) of ``top`` frames,
    as small thumbnails: bounded memory for any number of frames."""

    def __init__(self, top: int, seed: int = 0) -> None:
        self.top, self.rng = top, np.random.default_rng(seed)
        self.best: list[list] = [[] for _ in LABELS]  # min-heaps of (prob, position, item)
        self.sample: list[dict] = []
        self.seen = 0

    def add(self, frame: Frame, probs: np.ndarray) -> None:
        item = None
        for k in range(len(LABELS)):
            heap = self.best[k]
            if len(heap) < self.top or probs[k] > heap[0][0]:
                item = item or self._item(frame, probs)
                entry = (float(probs[k]), frame.position, item)
                heapq.heappush(heap, entry) if len(heap) < self.top else heapq.heapreplace(heap, entry)
        self.seen += 1
        slot = len(self.sample) if len(self.sample) < self.top else int(self.rng.integers(self.seen))
        if slot < self.top:
            item = item or self._item(frame, probs)
            if slot == len(self.sample):
                self.sample.append(item)
            else:
                self.sample[slot] = item

    @staticmethod
    def _item(frame: Frame, probs: np.ndarray) -> dict:
        name = f"frame {frame.index} ({frame.time_s:.1f}s)" if frame.index is not None else frame.name
        return {"thumb": thumbnail(frame.rgb), "name": name, "probs": probs.copy(),
                "position": frame.position, "rgb": frame.rgb, "ir": frame.ir}  # inputs: for CAMs

    def highest(self, label: str) -> list[dict]:
        """The kept frames of highest P(label), best first."""
        return [e[2] for e in sorted(self.best[LABELS.index(label)], key=lambda e: (-e[0], e[1]))]

    def rows(self, top: int | None = None) -> list[tuple[str, list[dict]]]:
        out = [(f"highest P({label})", self.highest(label)[:top]) for label in LABELS]
        shown = {item["position"] for _, items in out for item in items}
        rest = sorted((i for i in self.sample if i["position"] not in shown), key=lambda i: i["position"])
        return [*out, ("a sample of the rest", rest[:top])]


def _run_batch(deployed: Deployed, transform: PairedTransform, frames: list[Frame]) -> np.ndarray:
    """(B,2) probabilities of a batch of frames."""
    size = deployed.img_size
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames]))  # (B,3,S,S) uint8
    if deployed.needs_ir:
        ir = torch.from_numpy(np.stack([f.ir for f in frames]))
    else:
        ir = torch.zeros((len(frames), 0, size, size), dtype=torch.uint8)
    rgb, ir = transform(rgb, ir)
    logits = deployed.forward(rgb, ir if deployed.needs_ir else None)
    return torch.sigmoid(logits.float()).cpu().numpy()


def stream_predictions(deployed: Deployed, source: InputSource, *, batch_size: int, thumbs: Thumbnails,
                       progress: bool = True) -> tuple[pd.DataFrame, list[Skipped], dict]:
    """Probabilities of every readable frame; the skipped ones; decode and model seconds."""
    ir_max = deployed.ir.max_value if deployed.ir else 255.0
    transform = PairedTransform(deployed.img_size, train=False, ir_max=ir_max)
    rows, skipped, pending = [], [], []
    timing = {"decode_s": 0.0, "model_s": 0.0}

    def flush() -> None:
        start = time.perf_counter()
        probs = _run_batch(deployed, transform, pending)
        timing["model_s"] += time.perf_counter() - start
        for frame, p in zip(pending, probs, strict=True):
            thumbs.add(frame, p)
            rows.append({"name": frame.name, "index": frame.index, "time_s": frame.time_s,
                         "fire_prob": float(p[0]), "smoke_prob": float(p[1]),
                         "fire_true": frame.labels[0], "smoke_true": frame.labels[1]})
        bar.update(len(pending))
        pending.clear()

    frames = source.frames()
    with tqdm(total=source.total, unit="frame", disable=not progress, desc="predict") as bar:
        while True:
            start = time.perf_counter()
            item = next(frames, None)
            timing["decode_s"] += time.perf_counter() - start
            if item is None:
                break
            if isinstance(item, Skipped):
                skipped.append(item)
                if len(skipped) <= SHOWN_WARNINGS:
                    log.warning("skipped %s: %s", item.name, item.reason)
                continue
            pending.append(item)
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    return pd.DataFrame(rows), skipped, timing


def decisions(table: pd.DataFrame, thresholds: np.ndarray) -> None:
    """Adds <label>_pred (0/1) at ``thresholds``."""
    for k, label in enumerate(LABELS):
        table[f"{label}_pred"] = (table[f"{label}_prob"] >= thresholds[k]).astype(int)


def video_alarms(table: pd.DataFrame, thresholds: np.ndarray, rule: AlarmRule) -> list[AlarmEvent]:
    """Adds <label>_alarm (the rule's state per frame) and returns every alarm, per label."""
    events = []
    for k, label in enumerate(LABELS):
        probs = table[f"{label}_prob"].to_numpy()
        table[f"{label}_alarm"] = alarm_states(probs >= thresholds[k], rule).astype(int)
        events += alarm_events(probs, thresholds[k], rule, label)
    return events


def event_record(event: AlarmEvent, table: pd.DataFrame) -> dict:
    at = table.iloc
    return {"label": event.label, "start_frame": int(at[event.start]["index"]),
            "end_frame": int(at[event.end]["index"]), "start_s": float(at[event.start]["time_s"]),
            "end_s": float(at[event.end]["time_s"]), "onset_frame": int(at[event.onset]["index"]),
            "onset_s": float(at[event.onset]["time_s"]), "peak_prob": round(event.peak_prob, 6),
            "peak_frame": int(at[event.peak]["index"]), "peak_s": float(at[event.peak]["time_s"])}


def predict_input(req: PredictRequest) -> PredictResult:
    """Load the artefact, stream the input through it, write the outputs."""
    with cpu_threads(req.threads):
        deployed = load_deployed(req.model, img_size=req.img_size, thresholds=req.thresholds,
                                 threads=req.threads, batch=req.batch_size, compile_int8=req.compile_int8)
        other = _cam_models(req, deployed)
        needs_ir = deployed.needs_ir or (other is not None and other.needs_ir)
        source = open_source(req.input, deployed.img_size, needs_ir=needs_ir,
                             ir=deployed.ir or (other.ir if other else None), fps=req.fps,
                             base_path=req.base_path, columns=req.columns)
        out = ensure_writable(req.out or Path("predictions") / Path(req.input).stem, "--out")
        thumbs = Thumbnails(max(req.top, req.cam_frames if req.cam else 0))
        table, skipped, timing = stream_predictions(deployed, source, batch_size=req.batch_size,
                                                    thumbs=thumbs, progress=req.progress)
    if table.empty:
        raise DataError(f"--input {req.input}: no readable frame or image ({len(skipped)} skipped)")
    decisions(table, deployed.thresholds)
    video = source.kind == "video"
    events = video_alarms(table, deployed.thresholds, req.rule) if video else []
    metrics = _metrics(table, deployed.thresholds) if source.labelled else None
    n = len(table)
    throughput = {"frames": n, "skipped": len(skipped), "decode_s": timing["decode_s"],
                  "model_s": timing["model_s"], "decode_fps": n / max(timing["decode_s"], 1e-9),
                  "model_fps": n / max(timing["model_s"], 1e-9)}
    files = _write(out, req, deployed, source, table, events, metrics, skipped, throughput, thumbs)
    if req.cam:
        files["cam"] = out / f"cam_{req.cam_label}.png"
        chosen = thumbs.highest(req.cam_label)[:req.cam_frames]
        save_figure(files["cam"], cam_figure(req, deployed, other, chosen))
    return PredictResult(table, events, metrics, skipped, throughput, files, deployed, source.kind)


def _metrics(table: pd.DataFrame, thresholds: np.ndarray) -> dict | None:
    labels = table[["fire_true", "smoke_true"]].to_numpy(dtype=float)
    known = ~np.isnan(labels).any(axis=1)
    if not known.any():
        return None
    probs = table[["fire_prob", "smoke_prob"]].to_numpy()[known]
    scores = evaluation_scores(labels[known].astype(int), probs, thresholds=thresholds)
    return {**scores, "n": int(known.sum())}


def _output_table(table: pd.DataFrame, video: bool, labelled: bool) -> pd.DataFrame:
    columns = (["index", "time_s"] if video else ["name"])
    columns += [f"{label}_{part}" for part in ("prob", "pred") for label in LABELS]
    if video:
        columns += [f"{label}_alarm" for label in LABELS]
    if labelled:
        columns += [f"{label}_true" for label in LABELS]
    out = table[columns].rename(columns={"index": "frame", "name": "file"})
    if video:
        out["time_s"] = out["time_s"].round(4)
    return out


def _write(out: Path, req: PredictRequest, deployed: Deployed, source: InputSource, table: pd.DataFrame,
           events: list[AlarmEvent], metrics: dict | None, skipped: list[Skipped], throughput: dict,
           thumbs: Thumbnails) -> dict[str, Path]:
    from firekd.reporting.deploy_figures import contact_sheet, timeline

    video = source.kind == "video"
    files = {"predictions": out / "predictions.csv", "contact_sheet": out / "contact_sheet.png",
             "summary": out / "summary.json"}
    write_csv(files["predictions"], _output_table(table, video, source.labelled))
    title = f"{Path(req.input).name}: {deployed.path.name} ({deployed.kind})"
    save_figure(files["contact_sheet"], contact_sheet(thumbs.rows(req.top), title))
    if video:
        files["events"], files["timeline"] = out / "events.json", out / "timeline.png"
        records = [event_record(e, table) for e in events]
        thresholds = dict(zip(LABELS, deployed.thresholds.tolist(), strict=True))
        write_json(files["events"], {"rule": vars(req.rule), "thresholds": thresholds, "alarms": records})
        spans = {label: [(r["onset_s"], r["end_s"]) for r in records if r["label"] == label]
                 for label in LABELS}
        save_figure(files["timeline"], timeline(table["time_s"].to_numpy(),
                                                table[["fire_prob", "smoke_prob"]].to_numpy(),
                                                deployed.thresholds, spans,
                                                f"{title}; alarm rule {req.rule.k} of {req.rule.n}"))
    if metrics is not None:
        files["metrics"] = out / "metrics.json"
        write_json(files["metrics"], metrics)
    summary = {"model": str(deployed.path), "kind": deployed.kind, "runtime": deployed.runtime,
               "input": str(req.input), "input_kind": source.kind, "img_size": deployed.img_size,
               "thresholds": deployed.thresholds.tolist(), "thresholds_from": deployed.thresholds_from,
               "card": deployed.card is not None, "fps": req.fps, "throughput": throughput,
               "skipped": [{"name": s.name, "reason": s.reason} for s in skipped]}
    write_json(files["summary"], summary)
    return files


def _cam_models(req: PredictRequest, deployed: Deployed) -> Deployed | None:
    """Check that --cam can run: torch models of one input size; returns the --cam_with model."""
    if not req.cam:
        return None
    if req.cam_label not in LABELS:
        raise ConfigError(f"--cam_label must be one of {', '.join(LABELS)}, got {req.cam_label!r}")
    other = load_deployed(req.cam_with, threads=req.threads) if req.cam_with else None
    for model in (deployed, other):
        if model is not None and model.module is None:
            raise ModelError(f"--cam needs torch checkpoints (student_best.pth, student_pruned.pth, "
                             f"teacher_best.pth); {model.path} is {model.kind} ({model.runtime})")
    if other is not None and other.img_size != deployed.img_size:
        raise ModelError(f"--cam_with {other.path} takes {other.img_size} px images, --model "
                         f"{deployed.img_size} px: side by side they need one size")
    return other


def cam_figure(req: PredictRequest, deployed: Deployed, other: Deployed | None, items: list[dict]):
    """Grad-CAM of each model on the frames of highest P(label), side by side."""
    from firekd.deploy.cam import class_activation_maps
    from firekd.reporting.deploy_figures import cam_grid

    models = {f"{m.kind} ({m.path.name})": m for m in (deployed, other) if m is not None}
    maps, probs = {}, {}
    for name, model in models.items():
        ir_max = model.ir.max_value if model.ir else 255.0
        transform = PairedTransform(model.img_size, train=False, ir_max=ir_max)
        rgb = torch.from_numpy(np.stack([i["rgb"] for i in items]))
        ir = (torch.from_numpy(np.stack([i["ir"] for i in items])) if model.needs_ir
              else torch.zeros((len(items), 0, *rgb.shape[-2:]), dtype=torch.uint8))
        rgb, ir = transform(rgb, ir)
        ir = ir if model.needs_ir else None
        maps[name] = list(class_activation_maps(model.module, rgb, ir, req.cam_label))
        with torch.no_grad():
            probs[name] = list(torch.sigmoid(model.forward(rgb, ir)).numpy())
    images = [i["rgb"].transpose(1, 2, 0) for i in items]
    return cam_grid(images, [i["name"] for i in items], maps, probs, req.cam_label,
                    f"Grad-CAM for {req.cam_label}: {Path(req.input).name}, frames of highest "
                    f"P({req.cam_label})")
