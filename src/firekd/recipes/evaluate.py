"""`firekd evaluate`: any saved model (teacher, student, int8, pruned) on any CSV."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from firekd import LABELS
from firekd.checkpoints import build_from_payload, load_payload, load_state
from firekd.compress.artifacts import is_quantized_file, load_quantized
from firekd.data.checks import check_files
from firekd.data.csv import ColumnNames, read_records, read_slices
from firekd.data.dataset import FileSource, PairedDataset, make_loader
from firekd.data.images import IRSpec
from firekd.data.splits import SPLITS, load_split, split_digest
from firekd.data.transforms import PairedTransform
from firekd.engine.evaluation import predictions_table
from firekd.engine.loop import predict
from firekd.engine.runtime import Runtime, resolve_device
from firekd.errors import ConfigError, DataError, ModelError
from firekd.metrics.classification import evaluation_scores
from firekd.recipes.slices import slice_metrics
from firekd.rundir import SPLIT

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    model: nn.Module
    meta: dict  # the checkpoint's meta: thresholds, data (img_size, IR decoding)
    kind: str


@dataclass(frozen=True)
class Loader:
    """One format of saved model: ``accepts(path)`` recognises it, ``load(path)`` rebuilds it;
    ``cpu_only`` for int8 kernels."""

    load: Callable[[Path], Loaded]
    accepts: Callable[[Path], bool] = lambda path: True
    cpu_only: bool = False


def _firekd_checkpoint(path: Path) -> Loaded:
    """A ``save_model`` checkpoint (teacher, student, pruned student): config + state dict."""
    payload = load_payload(path)
    model = build_from_payload(payload)
    load_state(model, payload["state_dict"], str(path))
    return Loaded(model, payload.get("meta", {}), str(payload.get("kind")))


# Tried in order, the first that accepts the file loads it. Another format of saved model (e.g. the
# int8 archive) needs one line here, before the catch-all firekd checkpoint.
CHECKPOINT_LOADERS: list[Loader] = [
    Loader(lambda p: Loaded(*load_quantized(p), "student_quantized"), is_quantized_file, cpu_only=True),
    Loader(_firekd_checkpoint),
]


@dataclass(frozen=True)
class EvalRequest:
    """What `firekd evaluate` was asked; None means 'from the checkpoint's meta'."""

    checkpoint: str
    csv: str
    base_path: str | None = None
    columns: ColumnNames = field(default_factory=ColumnNames)
    split: str = "all"  # all | train | val | test
    split_file: str | None = None
    skip_missing: bool = False
    img_size: int | None = None
    ir_channels: str | None = None
    ir_range: tuple[float, float] | None = None
    thresholds: tuple[float, float] | None = None
    batch_size: int = 64
    num_workers: int = 0
    device: str = "auto"
    slice_cols: tuple[str, ...] = ()  # categorical CSV columns: metrics per value


@dataclass
class CheckpointEvaluation:
    metrics: dict[str, float]
    predictions: pd.DataFrame
    info: dict  # what was evaluated, on what, with which settings


def load_checkpoint_model(path: str | Path) -> tuple[Loaded, Loader]:
    """The model (in eval mode), meta and kind of any saved model CHECKPOINT_LOADERS knows."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    loader = next(loader for loader in CHECKPOINT_LOADERS if loader.accepts(path))
    loaded = loader.load(path)
    loaded.model.eval()
    return loaded, loader


def evaluate_checkpoint(req: EvalRequest) -> CheckpointEvaluation:
    loaded, loader = load_checkpoint_model(req.checkpoint)
    model, meta = loaded.model, loaded.meta
    data = meta.get("data", {})
    img_size = req.img_size or data.get("img_size") or 224
    needs_ir = getattr(model, "modalities", "rgb") == "rgb+ir"
    records, spec = _records(req, data, needs_ir)
    slices = read_slices(req.csv, req.slice_cols) if req.slice_cols else None  # checked before the work
    positions, split_file = _positions(req, records, meta)
    device = torch.device("cpu") if loader.cpu_only else resolve_device(req.device)
    rt = Runtime(device, amp=False, seed=0)
    dataset = PairedDataset(records, positions, FileSource(records, img_size, spec))
    test_loader = make_loader(dataset, batch_size=req.batch_size, train=False, num_workers=req.num_workers,
                              transform=PairedTransform(img_size, train=False, ir_max=spec.max_value))
    pred = predict(rt.prepare_model(model), test_loader, rt)
    thresholds, source = _thresholds(req, meta)
    metrics = evaluation_scores(pred.labels, pred.probs, thresholds=thresholds)
    table = predictions_table(pred, dataset.rows, thresholds)
    metrics.update(slice_metrics(table, slices))
    info = {"checkpoint": str(req.checkpoint), "kind": loaded.kind, "csv": str(req.csv), "split": req.split,
            "split_file": split_file, "n": int(len(positions)), "thresholds": thresholds.tolist(),
            "thresholds_from": source, "img_size": img_size, "device": str(device),
            "ir": {"kind": spec.kind, "channels": spec.channels,
                   "range": list(spec.value_range) if spec.value_range else None}}
    return CheckpointEvaluation(metrics, table, info)


def _records(req: EvalRequest, data: dict, needs_ir: bool) -> tuple[pd.DataFrame, IRSpec]:
    """Validated records decoded the way the model was trained (IR settings from the meta)."""
    records = read_records(req.csv, base_path=req.base_path, columns=req.columns, require_ir=needs_ir)
    if not needs_ir:
        records["ir_path"] = None  # an RGB-only model: IR files are neither needed nor checked
    ir_range = req.ir_range or (tuple(data["ir_range"]) if data.get("ir_range") else None)
    channels = req.ir_channels or str(data.get("ir_channels") or "auto")
    records, report = check_files(records, csv_name=str(req.csv), skip_missing=req.skip_missing,
                                  ir_channels=channels, ir_range=ir_range)
    trained = data.get("ir_kind")
    if needs_ir and trained and report.ir.kind != trained:
        log.warning("%s: IR files are %s but the model was trained on %s IR; results may not transfer",
                    req.csv, report.ir.kind, trained)
    return records, report.ir


def _positions(req: EvalRequest, records: pd.DataFrame, meta: dict) -> tuple[np.ndarray, str | None]:
    """Rows of the requested split, and the split file they came from (None: all rows or the CSV's
    split column)."""
    if req.split == "all":
        return np.arange(len(records)), None
    split, source = _split_of(req, records, meta)
    positions = np.nonzero(split == req.split)[0]
    if not len(positions):
        raise DataError(f"--split {req.split}: no rows of {req.csv} are in the {req.split} split")
    return positions, source


def _split_of(req: EvalRequest, records: pd.DataFrame, meta: dict) -> tuple[np.ndarray, str | None]:
    """--split_file, else the split of the run the checkpoint belongs to (when it fits the CSV),
    else the CSV's split column."""
    if req.split_file:
        return load_split(req.split_file, records).to_numpy(), str(req.split_file)
    recorded = recorded_split(req.checkpoint)
    if recorded is not None:
        try:
            split = load_split(recorded, records).to_numpy()
        except DataError as exc:
            if "split" not in records:
                raise DataError(f"{exc} (the split of the checkpoint's run; name another with "
                                "--split_file, or use --split all)") from None
            log.info("%s does not fit %s (%s); using the CSV's split column", recorded, req.csv, exc)
        else:
            check_recorded_split(recorded, meta, req.checkpoint)
            log.info("evaluating the %s split recorded by the run: %s", req.split, recorded)
            return split, str(recorded)
    if "split" in records:
        return records["split"].to_numpy(), None
    raise ConfigError(f"--split {req.split}: {req.csv} has no split column and {req.checkpoint} is not in "
                      "a run's models folder; pass the run's split.csv with --split_file "
                      "(output/metrics/<run>/split.csv) or use --split all")


def recorded_split(checkpoint: str | Path) -> Path | None:
    """The split.csv of the run a checkpoint was saved in: OUTPUT/models/<run>/seed_<s>/<file> ->
    OUTPUT/metrics/<run>/seed_<s>/split.csv (a seed's own split, --resample_split), else
    OUTPUT/metrics/<run>/split.csv; None when the checkpoint lies elsewhere or the file is gone."""
    path = Path(checkpoint)
    for candidate in dict.fromkeys((path.absolute(), path.resolve())):
        seed_dir, run_dir = candidate.parent, candidate.parent.parent
        if seed_dir.name.startswith("seed_") and run_dir.parent.name == "models":
            metrics = run_dir.parent.parent / "metrics" / run_dir.name
            for split in (metrics / seed_dir.name / SPLIT, metrics / SPLIT):
                if split.is_file():
                    return split
    return None


def check_recorded_split(split_file: str | Path, meta: dict, checkpoint: str | Path) -> None:
    """When the checkpoint records the digest of its training split (``meta["data"]["split_digest"]``),
    the split file must be that split: a run folder overwritten later holds another one."""
    expected = meta.get("data", {}).get("split_digest")
    if not expected:
        return
    table = pd.read_csv(split_file)
    table = table[table["split"].isin(SPLITS)]  # rows moved to the unlabelled pool are not in the digest
    if split_digest(table["row"], table["split"]) != expected:
        raise DataError(f"{split_file} is not the split {checkpoint} was trained with (the run folder was "
                        "written again since); pass the right split.csv with --split_file")


def _thresholds(req: EvalRequest, meta: dict) -> tuple[np.ndarray, str]:
    if req.thresholds is not None:
        return np.asarray(req.thresholds, dtype=float), "--thresholds"
    if meta.get("thresholds") is not None:
        return np.asarray(meta["thresholds"], dtype=float), "checkpoint, validation-tuned"
    log.warning("%s records no validation thresholds; using 0.5 (set them with --thresholds)",
                req.checkpoint)
    return np.full(len(LABELS), 0.5), "default 0.5"
