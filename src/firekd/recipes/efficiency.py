"""Efficiency numbers of every model of a seed: params, GFLOPs, file size, CPU latency (and CUDA
throughput). The report shows params, GFLOPs, size, latency at batch 1 and 32.

A teacher's numbers depend on its architecture and input size alone, not on its seed or weights:
they are measured once, on a randomly initialised copy, before any training job starts (so no
job holds a GPU or the teacher's lock while the CPU times it), and stored under
``output/teachers/{teacher}/efficiency-{key}.json`` for every later seed and invocation.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from firekd.checkpoints import save_model
from firekd.config import RunConfig
from firekd.engine import distributed
from firekd.engine.runtime import Runtime, resolve_device
from firekd.io import Writer, read_json, write_json
from firekd.kd.distiller import model_outputs
from firekd.keys import stable_hash
from firekd.locks import waiting
from firekd.metrics.efficiency import (
    cpu_threads,
    cuda_throughput,
    file_size_mb,
    gflops,
    median_latency_ms,
    parameter_count,
)
from firekd.models import create_teacher
from firekd.recipes.context import ModelResult
from firekd.recipes.data import DataBundle

log = logging.getLogger(__name__)

EVAL_BATCH = 32  # the compiled int8 model's evaluation shape, also the larger latency batch
LATENCY_BATCHES = (1, EVAL_BATCH)
CUDA_BATCH = 128


def add_efficiency(models: dict[str, ModelResult], *, size: int, ir_channels: int, runs: int,
                   threads: int, rt: Runtime) -> None:
    """Measure every model that has no numbers yet and merge them into its metrics. Under torchrun
    rank 0 alone measures: it alone reports, and ranks timing at once would skew it."""
    if not distributed.info().is_main:
        return
    for result in models.values():
        if result.efficiency is None:
            result.efficiency = measure_model(result, size=size, ir_channels=ir_channels, runs=runs,
                                              threads=threads, rt=rt)
        result.evaluation.metrics.update(result.efficiency)


def teacher_efficiency(cfg: RunConfig, data: DataBundle, name: str, writer: Writer) -> dict:
    """The numbers of teacher ``name`` at this input size, measured once and stored."""
    rt = _runtime(cfg)
    key = {"teacher": name, "img_size": data.config.img_size, "ir_channels": max(1, data.ir_spec.channels),
           "modalities": cfg.teacher.modalities, "runs": cfg.compress.latency_runs,
           "threads": cfg.compress.latency_threads, "device": rt.device.type}
    path = Path(cfg.execution.output) / "teachers" / name / f"efficiency-{stable_hash(key)}.json"
    with waiting(path.with_suffix(".lock"), enabled=writer.enabled):
        if path.exists() and (stored := read_json(path)).get("key") == key:
            return stored["efficiency"]
        log.info("teacher %s: measuring params, GFLOPs, size and latency at %d px (once per architecture "
                 "and input size)", name, data.config.img_size)
        model = create_teacher(name, modalities=cfg.teacher.modalities, ir_channels=key["ir_channels"],
                               img_size=data.config.img_size, pretrained=False)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "teacher_best.pth"
            save_model(checkpoint, model, kind="teacher")  # the size of a saved teacher
            result = ModelResult(rt.prepare_model(model), None, checkpoint)
            efficiency = measure_model(result, size=data.config.img_size, ir_channels=key["ir_channels"],
                                       runs=cfg.compress.latency_runs, threads=cfg.compress.latency_threads,
                                       rt=rt)
        if writer.enabled:
            write_json(path, {"key": key, "efficiency": efficiency})
        return efficiency


def _runtime(cfg: RunConfig) -> Runtime:
    device = resolve_device(cfg.execution.device)
    if distributed.info().enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.info().local_rank)
    return Runtime(device, amp=cfg.optim.amp)


def measure_model(result: ModelResult, *, size: int, ir_channels: int, runs: int, threads: int,
                  rt: Runtime) -> dict:
    """Efficiency of one model. A deployed form (int8, ONNX) carries its fp32 source: parameters
    and GFLOPs are those of the source (the same multiply-adds, whatever the number format),
    latency that of the deployed form."""
    deployed = result.fp32_source is not None
    fp32 = result.fp32_source if deployed else copy.deepcopy(result.model).cpu().eval()
    out = {"params": parameter_count(fp32), "gflops": gflops(fp32, *model_inputs(fp32, 1, size, ir_channels)),
           "size_mb": file_size_mb(result.checkpoint), "latency_runtime": result.latency_runtime}
    if runs:
        forward = result.model if deployed else fp32
        out.update(cpu_latency(forward, lambda b: model_inputs(fp32, b, size, ir_channels), runs, threads))
    if rt.cuda and not deployed:
        out["throughput_cuda"] = throughput(result.model, size, ir_channels, rt)
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
