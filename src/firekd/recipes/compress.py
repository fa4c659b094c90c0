"""Compression stage, per seed after the students: the int8 student (``student_quantized.pth``), the
pruned and fine-tuned student (``student_pruned.pth``) and, with ``--onnx``, the ONNX students.

Quantized: PT2E static int8 calibrated on ``--calibration_batches`` training batches (evaluation
transform), evaluated on the CPU through inductor with freezing, compiled for two batch shapes only
(``EVAL_BATCH`` for evaluation and latency, 1 for latency). Pruned: ``--prune_method`` at
``--prune_sparsity``, then ``--finetune_epochs`` of the same loss variant (same teacher, same
weights, the student's trained L2 projector, early stopping on validation) with the student's own
schedule and peak ``--lr_student`` (learning-rate rewinding: on the benchmark's student a tenth of
it recovered 0.03 less test F1). The pruned students of a seed fine-tune in lockstep, like their
students trained. Every model is evaluated like the student: thresholds from validation, metrics
on test.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import load_model, save_model
from firekd.compress.artifacts import save_quantized
from firekd.compress.compile import StaticBatch, runnable_int8
from firekd.compress.onnx_export import OnnxStudent, export_onnx, quantize_onnx_int8
from firekd.compress.prune import make_permanent, prune_model
from firekd.compress.quantize import quantize_int8
from firekd.compress.structure import structure_changes
from firekd.data.dataset import make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.engine.evaluation import evaluate_model
from firekd.engine.loop import Member
from firekd.engine.runtime import Runtime
from firekd.io import read_json
from firekd.keys import onnx_settings, pruned_settings, stable_hash
from firekd.models import create_student
from firekd.recipes.context import ModelResult, SeedRun, raise_failures
from firekd.recipes.data import DataBundle
from firekd.recipes.efficiency import EVAL_BATCH, LATENCY_BATCHES
from firekd.recipes.student import Source, StudentResult, fit_config, make_task
from firekd.recipes.teacher import TeacherResult, data_meta
from firekd.rundir import CHECKPOINTS, PRUNED_LOG
from firekd.store import Store

log = logging.getLogger(__name__)


def compress_students(run: SeedRun, students: dict[str, StudentResult],
                      teacher: TeacherResult | Source | None) -> dict[str, dict[str, ModelResult]]:
    """{variant: {"student_quantized": ..., "student_pruned": ... (and the ONNX students)}}, all
    saved in each variant's seed models folder."""
    out = {variant: {"student_quantized": quantize_stage(run, s)} for variant, s in students.items()}
    for variant, pruned in prune_stage(run, students, teacher).items():
        out[variant]["student_pruned"] = pruned
    if run.cfg.compress.onnx:
        for variant, s in students.items():
            store = compressed_store(run, s, "student_onnx", onnx_settings(run.cfg))
            done = store.done()
            if not done:
                store.invalidate()
            calibration = itertools.islice(calibration_batches(run), run.cfg.compress.calibration_batches)
            out[variant].update(onnx_stages(s.model, calibration, run.loaders.val, run.loaders.test,
                                            cpu_runtime(run.rt), s.dirs.models, "student_best",
                                            run.cfg.compress.latency_threads, run.data.config.img_size,
                                            run.writer.enabled and not done))
            if not done:  # a reused export keeps its build id
                store.publish()
    return out


def cpu_runtime(rt: Runtime) -> Runtime:
    """The int8 model runs on the CPU; batches still get the transform the device would apply."""
    return replace(rt, device=torch.device("cpu"), amp=False, channels_last=False)


def calibration_loader(data: DataBundle, batch_size: int, seed: int):
    """Shuffled training images (seeded) with the evaluation transform (no augmentation)."""
    transform = PairedTransform(data.config.img_size, train=False, ir_max=data.ir_spec.max_value)
    return make_loader(data.dataset("train"), batch_size=batch_size, train=True, transform=transform,
                       seed=seed, generator=torch.Generator().manual_seed(seed))


def calibration_batches(run: SeedRun) -> Iterator[torch.Tensor]:
    """Normalised RGB batches for int8 calibration."""
    for rgb, _, _, _ in calibration_loader(run.data, run.cfg.optim.batch_size, run.seed):
        yield rgb


def quantize_stage(run: SeedRun, student: StudentResult) -> ModelResult:
    cfg, size = run.cfg.compress, run.data.config.img_size
    quantized, used = quantize_int8(student.model, calibration_batches(run), cfg.calibration_batches)
    batches = LATENCY_BATCHES[::-1] if cfg.latency_runs else (EVAL_BATCH,)  # each shape compiles anew
    examples = [torch.randn(b, 3, size, size) for b in batches]
    forward, compile_s = runnable_int8(quantized, examples, cfg.quant_compile, cfg.latency_threads)
    evaluator = StaticBatch(forward, EVAL_BATCH) if compile_s is not None else forward
    evaluation = evaluate_model(evaluator, run.loaders.val, run.loaders.test, cpu_runtime(run.rt))
    path = student.dirs.models / CHECKPOINTS["student_quantized"]
    meta = {"model_config": student.model.model_config(), "data": data_meta(run.data),
            "input": {"shape": [None, 3, size, size], "normalised": "ImageNet mean/std, RGB in [0, 1]"},
            "calibration_batches": used, "thresholds": [float(t) for t in evaluation.thresholds]}
    if run.writer.enabled:
        save_quantized(path, quantized, examples[0], meta)
    # compiled_int8 (1/0) is numeric so that it survives aggregation: tables mark uncompiled int8
    evaluation.metrics.update(calibration_batches=used, compiled=compile_s is not None,
                              compiled_int8=float(compile_s is not None),
                              **({"compile_s": compile_s} if compile_s is not None else {}))
    log.info("student_quantized %s: int8 (calibrated on %d batches), f1_macro %.4f (student %.4f)",
             student.variant, used, evaluation.metrics["f1_macro"], student.evaluation.metrics["f1_macro"])
    return ModelResult(forward, evaluation, path, {"calibration_batches": used},
                       fp32_source=copy.deepcopy(student.model).cpu().eval(),
                       latency_runtime="inductor" if compile_s is not None else "eager")


def compressed_store(run: SeedRun, student: StudentResult, name: str, settings: dict) -> Store:
    """The store of the compressed form ``name`` of ``student``: keyed by the student's key and
    that form's settings alone, so other compression or figure settings reuse it."""
    key = stable_hash({"student": student.key, **settings})
    return Store(student.dirs.models, key, writer=run.writer, name=name)


def prune_stage(run: SeedRun, students: dict[str, StudentResult],
                teacher: TeacherResult | Source | None) -> dict[str, ModelResult]:
    """Prune every student not pruned before with these settings, fine-tune them together,
    evaluate and save each; reuse the others."""
    cfg, size = run.cfg.compress, run.data.config.img_size
    settings = pruned_settings(run.cfg)
    stores = {v: compressed_store(run, s, "student_pruned", settings) for v, s in students.items()}
    out = {v: _reuse_pruned(run, s) for v, s in students.items() if stores[v].done()}
    pruned, reports = {}, {}
    for variant, student in students.items():
        if variant in out:
            continue
        stores[variant].invalidate()
        model, reports[variant] = prune_model(student.model, cfg.prune_method, cfg.prune_sparsity,
                                              torch.randn(2, 3, size, size, device=run.rt.device))
        pruned[variant] = run.rt.prepare_model(model)  # pruning rebuilt layers: memory format again
        r = reports[variant]
        log.info("student_pruned %s: %s pruning removed %.1f%% of the %s (requested %.1f%%)", variant,
                 r.method, 100 * r.achieved, "parameters" if r.method == "structured" else "prunable weights",
                 100 * r.requested)
    results = finetune(run, {v: (pruned[v], students[v].projector) for v in pruned}, teacher)
    for v in pruned:
        if results[v].error is None:
            out[v] = _finish_pruned(run, students[v], pruned[v], reports[v], results[v])
            stores[v].publish()
    raise_failures(results, "pruned students")
    return {v: out[v] for v in students}


def _reuse_pruned(run: SeedRun, student: StudentResult) -> ModelResult:
    path = student.dirs.models / CHECKPOINTS["student_pruned"]
    model, _ = load_model(path, kind="student")
    model = run.rt.prepare_model(model)
    train_log = read_json(student.dirs.metrics / PRUNED_LOG)
    evaluation = evaluate_model(model, run.loaders.val, run.loaders.test, run.rt)
    report = train_log["pruning"]
    evaluation.metrics.update(prune_fraction=report["achieved"], params_nonzero=report["params_after"])
    log.info("student_pruned %s: reusing %s (pruned and fine-tuned earlier with the same settings)",
             student.variant, path)
    return ModelResult(model, evaluation, path, train_log)


def finetune(run: SeedRun, models: dict[str, tuple[nn.Module, nn.Module | None]],
             teacher: TeacherResult | Source | None) -> dict:
    """``--finetune_epochs`` of each variant's loss (with its trained projector), early stopping,
    best weights restored; all variants in one pass. Kept in memory: an interrupted fine-tuning
    starts over with its seed."""
    members = {}
    for variant, (model, projector) in models.items():
        torch.manual_seed(run.seed)
        t = teacher.model if teacher is not None else None
        task = make_task(run, model, variant, t, copy.deepcopy(projector)).to(run.rt.device)
        members[variant] = Member(task, fit_config(run, variant, kind="finetune",
                                                   epochs=run.cfg.compress.finetune_epochs))
    return run.fit_variants(members)


def _finish_pruned(run: SeedRun, student: StudentResult, model: nn.Module, report, result) -> ModelResult:
    make_permanent(model)
    evaluation = evaluate_model(model, run.loaders.val, run.loaders.test, run.rt)
    settings = pruned_settings(run.cfg)
    train_log = {"settings": settings, "pruning": report.to_dict(), "best_epoch": result.best_epoch,
                 "best_val_f1_macro": result.best_score, "stopped_early": result.stopped_early,
                 "epochs": result.history}
    run.writer.json(student.dirs.metrics / PRUNED_LOG, train_log)
    path = student.dirs.models / CHECKPOINTS["student_pruned"]
    if run.writer.enabled:
        reference = create_student(**model.model_config())
        save_model(path, model, kind="student", structure=structure_changes(model, reference),
                   meta={"settings": settings, "data": data_meta(run.data), "pruning": report.to_dict(),
                         "best_epoch": result.best_epoch,
                         "thresholds": [float(t) for t in evaluation.thresholds]})
    evaluation.metrics.update(prune_fraction=report.achieved, params_nonzero=report.params_after)
    log.info("student_pruned %s: f1_macro %.4f after fine-tuning (student %.4f)", student.variant,
             evaluation.metrics["f1_macro"], student.evaluation.metrics["f1_macro"])
    return ModelResult(model, evaluation, path, train_log)


def onnx_stages(model: nn.Module, calibration: Iterable[torch.Tensor], val_loader, test_loader,
                rt: Runtime, out_dir: Path, stem: str, threads: int, size: int,
                writes: bool = True) -> dict[str, ModelResult]:
    """Export ``model`` to ``{stem}.onnx`` and ``{stem}_int8.onnx`` (calibrated on ``calibration``
    batches) in ``out_dir`` and evaluate both with onnxruntime on the CPU (``rt``: a CPU runtime)
    with ``threads`` intra-op threads. ``writes``: this process writes the files (under torchrun,
    rank 0 alone; the others wait for them)."""
    fp32_path, int8_path = out_dir / f"{stem}.onnx", out_dir / f"{stem}_int8.onnx"
    if writes:
        export_onnx(model, fp32_path, torch.randn(2, 3, size, size))
        quantize_onnx_int8(fp32_path, int8_path, (batch.cpu().numpy() for batch in calibration))
    distributed.barrier()
    source = copy.deepcopy(model).cpu().eval()
    stages = {}
    for name, path in (("student_onnx", fp32_path), ("student_onnx_int8", int8_path)):
        runner = OnnxStudent(path, threads=threads)
        evaluation = evaluate_model(runner, val_loader, test_loader, rt)
        stages[name] = ModelResult(runner, evaluation, path, fp32_source=source,
                                   latency_runtime="onnxruntime")
        log.info("%s: %s, f1_macro %.4f", name, path.name, evaluation.metrics["f1_macro"])
    return stages
