"""`firekd export --fastest`: which form of a student to ship, chosen by measurement on this CPU.

Every form (torch fp32, torch int8 compiled with inductor, the pruned student when there is one,
ONNX fp32 and ONNX int8) is evaluated on the validation split (F1 macro at its own max-F1
thresholds) and timed at the deployment size, batch and thread count. Forms whose validation F1
is more than ``tolerance`` below fp32's are dropped; the fastest of the rest is written as
``<stem>_fastest.<ext>`` with its model card, and every number goes to ``<stem>_fastest.json``.
Which form wins depends on the CPU, the size and the batch: it is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from firekd.compress.artifacts import save_quantized
from firekd.compress.compile import runnable_int8
from firekd.compress.quantize import quantize_int8
from firekd.config import DataConfig
from firekd.deploy.card import build_card, write_card
from firekd.engine.evaluation import evaluate_model
from firekd.engine.loop import predict
from firekd.engine.runtime import Runtime
from firekd.errors import ConfigError
from firekd.io import ensure_writable, write_json
from firekd.metrics.classification import classification_scores
from firekd.metrics.efficiency import cpu_threads, median_latency_ms
from firekd.recipes.cards import model_config, split_counts
from firekd.recipes.compress import onnx_stages
from firekd.recipes.context import ModelResult
from firekd.recipes.export import _load_data, eval_loaders, load_fp32_student, with_recorded_split
from firekd.recipes.teacher import data_meta

log = logging.getLogger(__name__)

REFERENCE = "student"


@dataclass(frozen=True)
class DeploySettings:
    size: int | None = None  # None: the size the student was trained at
    batch: int = 1
    threads: int = 1
    tolerance: float = 0.01  # largest validation F1-macro drop from fp32 a form may have
    runs: int = 20
    compile_int8: bool = True
    pruned: str | None = None  # default: student_pruned.pth beside the checkpoint, when present


def choose_fastest(measured: dict[str, dict], *, tolerance: float,
                   reference: str = REFERENCE) -> tuple[str, dict[str, str]]:
    """The fastest form (lowest ``latency_ms``) whose ``val_f1_macro`` is at most ``tolerance`` below
    the reference's, and a verdict per form. The reference itself always qualifies."""
    if reference not in measured:
        raise ConfigError(f"no {reference} measurement to compare the other forms with")
    base = measured[reference]["val_f1_macro"]
    verdicts, kept = {}, {}
    for name, m in measured.items():
        drop = base - m["val_f1_macro"]
        if name != reference and drop > tolerance + 1e-12:
            verdicts[name] = f"dropped: validation F1 {drop:.4f} below fp32 (tolerance {tolerance})"
        else:
            kept[name] = m["latency_ms"]
            verdicts[name] = "within tolerance"
    best = min(kept, key=kept.get)
    verdicts[best] = "fastest within tolerance"
    return best, verdicts


def latency_at(forward: Callable, size: int, batch: int, threads: int, runs: int) -> float:
    """Median ms of one forward pass of a random (batch,3,size,size) input on ``threads`` threads."""
    rgb = torch.randn(batch, 3, size, size)
    with cpu_threads(threads):
        return median_latency_ms(lambda: forward(rgb), runs=runs)


def _val_f1(model, val_loader, rt: Runtime, thresholds) -> float:
    pred = predict(model, val_loader, rt)
    return classification_scores(pred.labels, pred.probs, thresholds=thresholds)["f1_macro"]


def export_fastest(checkpoint: str | Path, data: DataConfig, out_dir: str | Path, settings: DeploySettings, *,
                   batch_size: int = 64, calibration_batches: int = 32, seed: int = 0) -> dict:
    """Measure every form, pick the fastest within tolerance, write it with its card; returns the
    record written to ``<stem>_fastest.json``."""
    checkpoint = Path(checkpoint)
    model, meta = load_fp32_student(checkpoint)
    size = settings.size or data.img_size or meta.get("data", {}).get("img_size") or 224
    data = dataclasses.replace(data, img_size=size)  # evaluated at the size it will be deployed at
    out_dir = ensure_writable(out_dir, "--out")
    bundle = _load_data(*with_recorded_split(data, checkpoint, meta))
    calib_loader, val, test = eval_loaders(bundle, batch_size, seed)
    rt = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    stem = checkpoint.stem

    def calibration():
        return (rgb for rgb, *_ in itertools.islice(calib_loader, calibration_batches))

    stages: dict[str, ModelResult] = {REFERENCE: ModelResult(model, evaluate_model(model, val, test, rt),
                                                             checkpoint)}
    forwards: dict[str, Callable] = {REFERENCE: model}
    runtimes = {REFERENCE: "torch fp32"}
    _int8_stage(stages, forwards, runtimes, model, calibration(), val, test, rt, out_dir, stem, bundle,
                settings)
    _pruned_stage(stages, forwards, runtimes, checkpoint, settings, val, test, rt)
    for name, stage in onnx_stages(model, calibration(), val, test, rt, out_dir, stem, settings.threads,
                                   size).items():
        stages[name], forwards[name] = stage, stage.model
        runtimes[name] = "onnxruntime " + ("int8 (QDQ)" if name.endswith("int8") else "fp32")
    measured = {}
    for name, stage in stages.items():
        ms = measure_latency(forwards[name], size, settings.batch, settings.threads, settings.runs)
        measured[name] = {"latency_ms": ms, "frames_per_s": 1e3 * settings.batch / ms,
                          "runtime": runtimes[name],
                          "val_f1_macro": _val_f1(stage.model, val, rt, stage.evaluation.thresholds),
                          "test_f1_macro": stage.evaluation.metrics["f1_macro"],
                          "artefact": str(stage.checkpoint)}
    best, verdicts = choose_fastest(measured, tolerance=settings.tolerance)
    for name in measured:
        measured[name]["verdict"] = verdicts[name]
    target = out_dir / f"{stem}_fastest{Path(stages[best].checkpoint).suffix}"
    shutil.copyfile(stages[best].checkpoint, target)
    latency = {"threads": settings.threads, "runtime": runtimes[best], "img_size": size,
               "batch": settings.batch, "ms_per_batch": measured[best]["latency_ms"],
               "frames_per_s": measured[best]["frames_per_s"]}
    write_card(target, build_card(target, kind=best, model_config=model_config(stages[best]),
                                  modalities="rgb", img_size=size,
                                  thresholds=stages[best].evaluation.thresholds,
                                  data=data_meta(bundle), metrics=stages[best].evaluation.metrics,
                                  split_counts=split_counts(bundle), latency=latency))
    record = {"fastest": best, "written": str(target), "checkpoint": str(checkpoint),
              "settings": {**dataclasses.asdict(settings), "size": size}, "forms": measured}
    write_json(out_dir / f"{stem}_fastest.json", record)
    return record


# Indirection so tests can inject latencies and check that the pick follows them.
measure_latency = latency_at


def _int8_stage(stages, forwards, runtimes, model, calibration, val, test, rt, out_dir: Path, stem: str,
                bundle, settings: DeploySettings) -> None:
    """Torch int8 (PT2E): evaluated eagerly, timed compiled at the deployment shape (or eagerly,
    marked uncompiled, when compiling is off or impossible); saved as <stem>_quantized.pth."""
    quantized, used = quantize_int8(model, calibration)
    evaluation = evaluate_model(quantized, val, test, rt)
    size = bundle.config.img_size
    example = torch.randn(settings.batch, 3, size, size)
    forward, compile_s = runnable_int8(quantized, [example], settings.compile_int8, settings.threads)
    path = out_dir / f"{stem}_quantized.pth"
    save_quantized(path, quantized, example, {
        "model_config": model.model_config(), "data": data_meta(bundle),
        "input": {"shape": [None, 3, size, size], "normalised": "ImageNet mean/std, RGB in [0, 1]"},
        "calibration_batches": used, "thresholds": [float(t) for t in evaluation.thresholds]})
    stages["student_quantized"] = ModelResult(quantized, evaluation, path, fp32_source=model)
    forwards["student_quantized"] = forward
    runtimes["student_quantized"] = ("torch int8 (inductor-compiled)" if compile_s is not None
                                     else "torch int8 (uncompiled)")


def _pruned_stage(stages, forwards, runtimes, checkpoint: Path, settings: DeploySettings, val, test,
                  rt) -> None:
    path = Path(settings.pruned) if settings.pruned else checkpoint.parent / "student_pruned.pth"
    if path.resolve() == checkpoint.resolve():
        return  # the checkpoint is the pruned student: it is the reference
    if not path.is_file():
        if settings.pruned:
            raise ConfigError(f"--pruned {path}: file not found")
        log.info("--fastest: no %s beside the checkpoint, so no pruned form is measured (train with "
                 "compression, or name one with --pruned)", path.name)
        return
    pruned, _ = load_fp32_student(path)
    stages["student_pruned"] = ModelResult(pruned, evaluate_model(pruned, val, test, rt), path)
    forwards["student_pruned"], runtimes["student_pruned"] = pruned, "torch fp32 (pruned)"
