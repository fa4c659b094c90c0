"""Compression stage, per seed after the student: the int8 student (``student_quantized.pth``), the
pruned and fine-tuned student (``student_pruned.pth``), and efficiency numbers for every model.

Quantized: PT2E static int8 calibrated on ``--calibration_batches`` training batches (evaluation
transform), evaluated on the CPU through inductor with freezing, compiled for two batch shapes only
(``EVAL_BATCH`` for evaluation and latency, 1 for latency). Pruned: ``--prune_method`` at
``--prune_sparsity``, then ``--finetune_epochs`` of the same loss variant (same teacher, same
weights, early stopping on validation) with the student's own one-cycle schedule and peak
``--lr_student`` (learning-rate rewinding: on the benchmark's student a tenth of it recovered
0.03 less test F1).
Every model is evaluated like the student: thresholds from validation, metrics on test.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import save_model
from firekd.compress.artifacts import save_quantized
from firekd.compress.compile import CompileUnavailable, StaticBatch, compile_for_cpu
from firekd.compress.onnx_export import OnnxStudent, export_onnx, quantize_onnx_int8
from firekd.compress.prune import make_permanent, prune_model
from firekd.compress.quantize import quantize_int8
from firekd.compress.structure import structure_changes
from firekd.config import TrainConfig
from firekd.data.dataset import make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.engine.loop import FitConfig, fit
from firekd.engine.runtime import Runtime
from firekd.io import read_json, write_json
from firekd.kd.distiller import model_outputs
from firekd.kd.variants import variant_weights
from firekd.metrics.efficiency import (
    cpu_threads,
    cuda_throughput,
    file_size_mb,
    gflops,
    median_latency_ms,
    parameter_count,
)
from firekd.models import create_student
from firekd.recipes.common import Loaders
from firekd.recipes.data import DataBundle
from firekd.recipes.evaluate import evaluate_model
from firekd.recipes.train import StageResult, data_meta, make_task
from firekd.rundir import waiting

log = logging.getLogger(__name__)

EVAL_BATCH = 32  # the compiled int8 model's evaluation shape, also the larger latency batch
LATENCY_BATCHES = (1, EVAL_BATCH)
CUDA_BATCH = 128
CHECKPOINTS = {"teacher": "teacher_best.pth", "student": "student_best.pth",
               "student_quantized": "student_quantized.pth", "student_pruned": "student_pruned.pth"}


def compression_settings(cfg: TrainConfig) -> dict:
    """What the compressed students' results depend on (beyond the student's own settings)."""
    if not cfg.compress:
        return {"compress": False}
    return {"compress": True, "prune_method": cfg.prune_method, "prune_sparsity": cfg.prune_sparsity,
            "finetune_epochs": cfg.finetune_epochs,
            "calibration_batches": cfg.calibration_batches, "compile": cfg.quant_compile, "onnx": cfg.onnx}


def compress_student(cfg: TrainConfig, bundle: DataBundle, variant: str, teacher: nn.Module | None,
                     student: StageResult, seed: int, rt: Runtime, loaders: Loaders,
                     dirs: tuple[Path, Path, Path]) -> dict[str, StageResult]:
    """{"student_quantized": ..., "student_pruned": ...} (and the ONNX students with ``--onnx``),
    all saved in the seed's models folder."""
    stages = {"student_quantized": quantize_stage(cfg, bundle, student, seed, rt, loaders, dirs[1]),
              "student_pruned": prune_stage(cfg, bundle, variant, teacher, student, seed, rt, loaders, dirs)}
    if cfg.onnx:
        calibration = itertools.islice(calibration_batches(cfg, bundle, seed), cfg.calibration_batches)
        stages.update(onnx_stages(student.model, calibration, loaders.val, loaders.test, cpu_runtime(rt),
                                  dirs[1], "student_best", cfg.latency_threads, bundle.config.img_size))
    return stages


def cpu_runtime(rt: Runtime) -> Runtime:
    """The int8 model runs on the CPU; batches still get the transform the device would apply."""
    return replace(rt, device=torch.device("cpu"), amp=False, channels_last=False)


def calibration_loader(bundle: DataBundle, batch_size: int, seed: int):
    """Shuffled training images (seeded) with the evaluation transform (no augmentation)."""
    transform = PairedTransform(bundle.config.img_size, train=False, ir_max=bundle.ir_spec.max_value)
    return make_loader(bundle.dataset("train"), batch_size=batch_size, train=True, transform=transform,
                       seed=seed, generator=torch.Generator().manual_seed(seed))


def calibration_batches(cfg: TrainConfig, bundle: DataBundle, seed: int) -> Iterator[torch.Tensor]:
    """Normalised RGB batches for int8 calibration."""
    for rgb, _, _, _ in calibration_loader(bundle, cfg.batch_size, seed):
        yield rgb


def quantize_stage(cfg: TrainConfig, bundle: DataBundle, student: StageResult, seed: int, rt: Runtime,
                   loaders: Loaders, models_dir: Path) -> StageResult:
    size = bundle.config.img_size
    quantized, used = quantize_int8(student.model, calibration_batches(cfg, bundle, seed),
                                    cfg.calibration_batches)
    batches = LATENCY_BATCHES[::-1] if cfg.latency_runs else (EVAL_BATCH,)  # each shape compiles anew
    examples = [torch.randn(b, 3, size, size) for b in batches]
    forward, compile_s = runnable_int8(quantized, examples, cfg.quant_compile, cfg.latency_threads)
    evaluator = StaticBatch(forward, EVAL_BATCH) if compile_s is not None else forward
    evaluation = evaluate_model(evaluator, loaders.val, loaders.test, cpu_runtime(rt))
    meta = {"model_config": student.model.model_config(), "data": data_meta(bundle),
            "input": {"shape": [None, 3, size, size], "normalised": "ImageNet mean/std, RGB in [0, 1]"},
            "calibration_batches": used, "thresholds": [float(t) for t in evaluation.thresholds]}
    save_quantized(models_dir / CHECKPOINTS["student_quantized"], quantized, examples[0], meta)
    evaluation.metrics.update(calibration_batches=used, compiled=compile_s is not None,
                              **({"compile_s": compile_s} if compile_s is not None else {}))
    log.info("student_quantized: int8 (calibrated on %d batches), f1_macro %.4f (student %.4f)",
             used, evaluation.metrics["f1_macro"], student.evaluation.metrics["f1_macro"])
    source = copy.deepcopy(student.model).cpu().eval()
    runtime = "inductor" if compile_s is not None else "eager"
    return StageResult(forward, {"calibration_batches": used}, evaluation, models_dir,
                       extra={"fp32_source": source, "latency_runtime": runtime})


def runnable_int8(quantized: nn.Module, examples: list[torch.Tensor], compile_model: bool,
                  threads: int) -> tuple[nn.Module, float | None]:
    """The int8 module compiled for the shapes of ``examples``, or uncompiled with a warning when
    compilation is off or impossible. Returns (module, compile seconds or None).

    Inductor writes the thread count into its kernels, so it compiles with the ``threads`` the
    latency is measured with."""
    if not compile_model:
        log.info("student_quantized: --no_compile, evaluating the int8 model uncompiled (slower than fp32)")
        return quantized, None
    try:
        with cpu_threads(threads):
            compiled, seconds = compile_for_cpu(quantized, examples)
    except CompileUnavailable as exc:
        log.warning("student_quantized: torch.compile is unavailable here (%s); evaluating the int8 "
                    "model uncompiled, which is slower than fp32", exc)
        return quantized, None
    log.info("student_quantized: compiled with inductor (freezing) for batch %s in %.1fs",
             " and ".join(str(len(e)) for e in examples), seconds)
    return compiled, seconds


def prune_stage(cfg: TrainConfig, bundle: DataBundle, variant: str, teacher: nn.Module | None,
                student: StageResult, seed: int, rt: Runtime, loaders: Loaders,
                dirs: tuple[Path, Path, Path]) -> StageResult:
    metrics_dir, models_dir, _ = dirs
    size = bundle.config.img_size
    model, report = prune_model(student.model, cfg.prune_method, cfg.prune_sparsity,
                                torch.randn(2, 3, size, size, device=rt.device))
    log.info("student_pruned: %s pruning removed %.1f%% of the %s (requested %.1f%%)", report.method,
             100 * report.achieved, "parameters" if report.method == "structured" else "prunable weights",
             100 * report.requested)
    result = finetune(cfg, bundle, variant, teacher, model, seed, rt, loaders)
    make_permanent(model)
    evaluation = evaluate_model(model, loaders.val, loaders.test, rt)
    settings = compression_settings(cfg)
    train_log = {"settings": settings, "pruning": report.to_dict(), "best_epoch": result.best_epoch,
                 "best_val_f1_macro": result.best_score, "stopped_early": result.stopped_early,
                 "epochs": result.history}
    write_json(metrics_dir / "student_pruned_train_log.json", train_log)
    reference = create_student(**model.model_config())
    save_model(models_dir / CHECKPOINTS["student_pruned"], model, kind="student",
               structure=structure_changes(model, reference),
               meta={"settings": settings, "data": data_meta(bundle), "pruning": report.to_dict(),
                     "best_epoch": result.best_epoch,
                     "thresholds": [float(t) for t in evaluation.thresholds]})
    evaluation.metrics.update(prune_fraction=report.achieved, params_nonzero=report.params_after)
    log.info("student_pruned: f1_macro %.4f after fine-tuning (student %.4f)",
             evaluation.metrics["f1_macro"], student.evaluation.metrics["f1_macro"])
    return StageResult(model, train_log, evaluation, models_dir)


def finetune(cfg: TrainConfig, bundle: DataBundle, variant: str, teacher: nn.Module | None,
             model: nn.Module, seed: int, rt: Runtime, loaders: Loaders):
    """``--finetune_epochs`` of the variant's loss, early stopping, best weights restored. Kept in
    memory: an interrupted fine-tuning starts over with its seed."""
    torch.manual_seed(seed)
    task = make_task(cfg, bundle, model, variant, teacher).to(rt.device)
    fit_cfg = FitConfig(stage=f"finetune {variant} (seed {seed})", epochs=cfg.finetune_epochs,
                        lr=cfg.lr_student, weight_decay=cfg.weight_decay,
                        patience=cfg.patience_student,
                        weights=variant_weights(variant, cfg.loss_weights), seed=seed)
    return fit(task, model, loaders.train, loaders.val, fit_cfg, rt, None, loaders.generator)


def onnx_stages(model: nn.Module, calibration: Iterable[torch.Tensor], val_loader, test_loader,
                rt: Runtime, out_dir: Path, stem: str, threads: int, size: int) -> dict[str, StageResult]:
    """Export ``model`` to ``{stem}.onnx`` and ``{stem}_int8.onnx`` (calibrated on ``calibration``
    batches) in ``out_dir`` and evaluate both with onnxruntime on the CPU (``rt``: a CPU runtime)
    with ``threads`` intra-op threads."""
    fp32_path, int8_path = out_dir / f"{stem}.onnx", out_dir / f"{stem}_int8.onnx"
    export_onnx(model, fp32_path, torch.randn(2, 3, size, size))
    distributed.barrier()  # under torchrun rank 0 writes the files that every rank reads next
    quantize_onnx_int8(fp32_path, int8_path, (batch.cpu().numpy() for batch in calibration))
    distributed.barrier()
    source = copy.deepcopy(model).cpu().eval()
    stages = {}
    for name, path in (("student_onnx", fp32_path), ("student_onnx_int8", int8_path)):
        runner = OnnxStudent(path, threads=threads)
        evaluation = evaluate_model(runner, val_loader, test_loader, rt)
        stages[name] = StageResult(runner, {}, evaluation, out_dir, extra={
            "fp32_source": source, "latency_runtime": "onnxruntime", "checkpoint": path})
        log.info("%s: %s, f1_macro %.4f", name, path.name, evaluation.metrics["f1_macro"])
    return stages


def add_efficiency(cfg: TrainConfig, bundle: DataBundle, models: dict[str, StageResult],
                   models_dir: Path, rt: Runtime) -> None:
    """Merge params, GFLOPs, file size, CPU latency (and CUDA throughput) into every model's
    metrics. The teacher's numbers are measured once per seed and shared by the variants. Under
    torchrun rank 0 alone measures: it alone reports, and ranks timing at once would skew it."""
    if not distributed.info().is_main:
        return
    for name, stage in models.items():
        if "efficiency" not in stage.extra:
            folder = stage.folder if name == "teacher" else models_dir
            path = stage.extra.get("checkpoint", folder / CHECKPOINTS.get(name, ""))
            measure = functools.partial(
                measure_stage, stage, path, size=bundle.config.img_size,
                ir_channels=max(1, bundle.ir_spec.channels), runs=cfg.latency_runs,
                threads=cfg.latency_threads, rt=rt)
            if name == "teacher":  # stored with the teacher: variants in other processes reuse it
                key = {"runs": cfg.latency_runs, "threads": cfg.latency_threads, "device": rt.device.type}
                measure = functools.partial(_stored_efficiency, folder / "teacher_efficiency.json", key,
                                            measure)
            stage.extra["efficiency"] = measure()
        stage.evaluation.metrics.update(stage.extra["efficiency"])


def _stored_efficiency(path: Path, key: dict, measure: Callable[[], dict]) -> dict:
    with waiting(path.parent / ".lock"):  # the teacher's lock: one process measures, the others read
        if path.exists() and (stored := read_json(path)).get("key") == key:
            return stored["efficiency"]
        efficiency = measure()
        write_json(path, {"key": key, "efficiency": efficiency})
        return efficiency


def measure_stage(stage: StageResult, path: Path, *, size: int, ir_channels: int, runs: int,
                  threads: int, rt: Runtime) -> dict:
    """Efficiency of one model. A deployed form (int8, ONNX) carries its fp32 source in
    ``extra["fp32_source"]``: parameters and GFLOPs are those of the source (the same
    multiply-adds, whatever the number format), latency that of the deployed form."""
    deployed = "fp32_source" in stage.extra
    fp32 = stage.extra["fp32_source"] if deployed else copy.deepcopy(stage.model).cpu().eval()
    out = {"params": parameter_count(fp32), "gflops": gflops(fp32, *model_inputs(fp32, 1, size, ir_channels)),
           "size_mb": file_size_mb(path), "latency_runtime": stage.extra.get("latency_runtime", "eager")}
    if runs:
        forward = stage.model if deployed else fp32
        out.update(cpu_latency(forward, lambda b: model_inputs(fp32, b, size, ir_channels), runs, threads))
    if rt.cuda and not deployed:
        out["throughput_cuda"] = throughput(stage.model, size, ir_channels, rt)
    return out


def model_inputs(model: nn.Module, batch: int, size: int, ir_channels: int) -> tuple[torch.Tensor, ...]:
    """Random inputs of a teacher (rgb, ir) or a student (rgb,)."""
    rgb = torch.randn(batch, 3, size, size)
    if getattr(model, "modalities", "rgb") == "rgb+ir":
        return rgb, torch.randn(batch, ir_channels, size, size)
    return (rgb,)


def cpu_latency(forward: Callable, inputs_for: Callable[[int], tuple], runs: int, threads: int) -> dict:
    out = {}
    with cpu_threads(threads) as used:
        for batch in LATENCY_BATCHES:
            inputs = inputs_for(batch)
            out[f"latency_ms_b{batch}"] = median_latency_ms(lambda x=inputs: forward(*x), runs=runs)
    out["cpu_threads"] = used
    return out


def throughput(model: nn.Module, size: int, ir_channels: int, rt: Runtime) -> float:
    """Images/s of one forward pass on the GPU (bf16 autocast and channels_last when --amp)."""
    was_training = model.training
    model.eval()
    rgb, ir = (torch.randn(CUDA_BATCH, c, size, size, device=rt.device) for c in (3, ir_channels))
    if rt.channels_last:
        rgb, ir = (t.contiguous(memory_format=torch.channels_last) for t in (rgb, ir))

    def run():
        with rt.autocast():
            return model_outputs(model, rgb, ir)

    try:
        return cuda_throughput(run, CUDA_BATCH)
    finally:
        model.train(was_training)
