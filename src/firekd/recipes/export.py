"""``firekd export``: a student checkpoint as ONNX fp32 and onnxruntime static int8 (QDQ), both
evaluated on the test split (thresholds from validation) next to the torch fp32 checkpoint, with
their efficiency numbers, written to ``{stem}_onnx_evaluation.json``."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import load_model
from firekd.compress.artifacts import is_quantized_file
from firekd.config import DataConfig
from firekd.data.dataset import make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine.evaluation import evaluate_model
from firekd.engine.runtime import Runtime
from firekd.errors import DataError, ModelError
from firekd.io import ensure_writable, write_json
from firekd.recipes.cards import write_cards
from firekd.recipes.compress import calibration_loader, onnx_stages
from firekd.recipes.context import ModelResult
from firekd.recipes.data import DataBundle, load_data
from firekd.recipes.efficiency import measure_model
from firekd.recipes.evaluate import check_recorded_split, recorded_split

log = logging.getLogger(__name__)


def load_fp32_student(path: str | Path) -> tuple[nn.Module, dict]:
    """An fp32 student checkpoint (student_best.pth, student_pruned.pth); clear errors otherwise."""
    path = Path(path)
    if is_quantized_file(path):
        raise ModelError(f"{path} is the int8 student; export takes an fp32 student checkpoint "
                         "(student_best.pth or student_pruned.pth)")
    model, meta = load_model(path, kind="student")
    model.eval()
    return model, meta


def with_recorded_split(data: DataConfig, checkpoint: Path, meta: dict) -> tuple[DataConfig, Path | None]:
    """The data settings with the split the checkpoint's run recorded (and its path), unless
    --split_file names one: the test images must be the ones the student never saw, whatever the
    --split flags say."""
    if data.split_file:
        return data, None
    recorded = recorded_split(checkpoint)
    if recorded is None:
        log.warning("%s is not in a run's models folder: the split is made from the --split flags, so "
                    "the test images may include training images; pass the run's split.csv with "
                    "--split_file", checkpoint)
        return data, None
    check_recorded_split(recorded, meta, checkpoint)
    log.info("export: test split recorded by the run: %s", recorded)
    return dataclasses.replace(data, split_file=str(recorded)), recorded


def _load_data(data: DataConfig, recorded: Path | None) -> DataBundle:
    try:
        return load_data(data)
    except DataError as exc:
        if recorded is None or not str(exc).startswith(str(recorded)):
            raise
        hint = "the split of the checkpoint's run; name another with --split_file"
        raise DataError(f"{exc} ({hint})") from None


def eval_loaders(bundle: DataBundle, batch_size: int, seed: int):
    """(calibration, val, test) loaders with the evaluation transform (calibration: shuffled train)."""
    transform = PairedTransform(bundle.config.img_size, train=False, ir_max=bundle.ir_spec.max_value)
    common = {"batch_size": batch_size, "transform": transform, "seed": seed}
    return (calibration_loader(bundle, batch_size, seed),
            make_loader(bundle.dataset("val"), train=False, **common),
            make_loader(bundle.dataset("test"), train=False, **common))


def export_checkpoint(checkpoint: str | Path, data: DataConfig, out_dir: str | Path, *,
                      batch_size: int = 64, calibration_batches: int = 32, latency_runs: int = 20,
                      latency_threads: int = 1, seed: int = 0) -> dict[str, dict]:
    """The checkpoint as torch fp32 (the reference), ONNX fp32 and ONNX int8: metrics on the test
    split and efficiency of each; returns and writes {model: metrics} plus a "run" entry."""
    checkpoint = Path(checkpoint)
    model, meta = load_fp32_student(checkpoint)
    if data.img_size is None:  # not given: the size the student was trained at
        data = dataclasses.replace(data, img_size=meta.get("data", {}).get("img_size") or 224)
    out_dir = ensure_writable(out_dir, "--out")
    bundle = _load_data(*with_recorded_split(data, checkpoint, meta))
    calib_loader, val, test = eval_loaders(bundle, batch_size, seed)
    calibration = (rgb for rgb, *_ in itertools.islice(calib_loader, calibration_batches))
    rt = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    size = bundle.config.img_size
    stages = {"student": ModelResult(model, evaluate_model(model, val, test, rt), checkpoint)}
    stages.update(onnx_stages(model, calibration, val, test, rt, out_dir, checkpoint.stem,
                              latency_threads, size))
    results = {}
    for name, stage in stages.items():
        efficiency = measure_model(stage, size=size,
                                   ir_channels=max(1, bundle.ir_spec.channels), runs=latency_runs,
                                   threads=latency_threads, rt=rt)
        results[name] = {**stage.evaluation.metrics, **efficiency}
    # cards beside the files written here; the checkpoint's own only when --out is its folder
    kinds = {"student": "student_pruned" if meta.get("pruning") else "student"}
    carded = {name: stage for name, stage in stages.items()
              if name != "student" or out_dir.resolve() == checkpoint.parent.resolve()}
    write_cards({kinds.get(name, name): stage for name, stage in carded.items()}, bundle,
                {kinds.get(name, name): results[name] for name in carded})
    results["run"] = {"checkpoint": str(checkpoint), "csv": str(data.csv), "img_size": size,
                      "calibration_batches": min(calibration_batches, len(calib_loader)),
                      "n_test": len(test.dataset)}
    write_json(out_dir / f"{checkpoint.stem}_onnx_evaluation.json", results)
    return results
